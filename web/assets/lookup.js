/* trackstream web: the order lookup page /s/{merchant_id}.
 * Order number + last 4 digits of the buyer's phone → a one-order tracking link. */
(function () {
  'use strict';
  const I = window.TrackstreamI18n;
  const R = window.TrackstreamRender;
  const h = R.h;

  const segments = location.pathname.split('/').filter(Boolean);
  const merchantId = segments.length ? decodeURIComponent(segments[segments.length - 1]) : '';
  const api = '/api/v1/shops/' + encodeURIComponent(merchantId);

  const state = {
    lang: I.pickLang(''),
    shop: null,
    shopMissing: false,
    message: null, // {kind: 'not_found'|'rate_limited'|'bad_request'|'network'|'server', wait?}
    busy: false,
    blockedUntil: 0,
    unblockTimer: 0,
  };

  const $ = (id) => document.getElementById(id);
  const $shop = $('shop');
  const $toggle = $('lang-toggle');
  const $form = $('lookup-form');
  const $order = $('order-id');
  const $last4 = $('last4');
  const $submit = $('lookup-submit');
  const $msg = $('lookup-message');

  $toggle.addEventListener('click', () => {
    state.lang = I.other(state.lang);
    render();
  });

  // Digits only in the last-4 box (a pasted "56 78" or full-width digits still work).
  $last4.addEventListener('input', () => {
    const v = $last4.value.replace(/[０-９]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xfee0)).replace(/\D/g, '').slice(0, 4);
    if (v !== $last4.value) $last4.value = v;
  });

  $form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });

  async function loadShop() {
    try {
      const res = await fetch(api, { headers: { Accept: 'application/json' }, cache: 'no-store' });
      if (res.ok) state.shop = await res.json();
      else if (res.status === 404) state.shopMissing = true;
    } catch (e) {
      /* the form still works; the shop name is cosmetic */
    }
    render();
  }

  async function submit() {
    if (state.busy || Date.now() < state.blockedUntil) return;
    const orderId = $order.value.trim();
    const last4 = $last4.value.trim();
    if (!orderId || !/^[0-9]{4}$/.test(last4)) {
      state.message = { kind: 'bad_request' };
      render();
      (orderId ? $last4 : $order).focus();
      return;
    }
    state.busy = true;
    state.message = null;
    render();
    let res;
    try {
      res = await fetch(api + '/lookup', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ order_id: orderId, phone_last4: last4 }),
        cache: 'no-store',
      });
    } catch (e) {
      state.busy = false;
      state.message = { kind: 'network' };
      render();
      return;
    }
    const body = await res.json().catch(() => ({}));
    if (res.ok && body && typeof body.url === 'string' && body.url) {
      // Keep the chosen language on the tracking page.
      const next = new URL(body.url, location.href);
      if (next.origin === location.origin) {
        next.searchParams.set('lang', state.lang);
        location.assign(next.pathname + next.search + next.hash);
      } else {
        location.assign(next.href);
      }
      return; // stay busy until the page changes
    }
    state.busy = false;
    if (res.status === 429 || body.error === 'too_many_requests') {
      const wait = retryAfter(res.headers.get('Retry-After'));
      state.message = { kind: 'rate_limited', wait };
      block(wait);
    } else if (res.status === 404 || body.error === 'not_found') {
      state.message = { kind: 'not_found' };
    } else if (res.status === 400 || body.error === 'bad_request') {
      state.message = { kind: 'bad_request' };
    } else {
      state.message = { kind: 'server' };
    }
    render();
  }

  /** Retry-After: delta seconds or an HTTP date; 60 s when absent. */
  function retryAfter(v) {
    if (!v) return 60;
    const n = Number(v);
    if (Number.isFinite(n) && n >= 0) return Math.ceil(n);
    const at = Date.parse(v);
    return Number.isFinite(at) ? Math.max(1, Math.ceil((at - Date.now()) / 1000)) : 60;
  }

  function block(seconds) {
    state.blockedUntil = Date.now() + seconds * 1000;
    clearTimeout(state.unblockTimer);
    state.unblockTimer = setTimeout(() => {
      state.blockedUntil = 0;
      if (state.message && state.message.kind === 'rate_limited') state.message = null;
      render();
    }, seconds * 1000);
  }

  function messageText(m) {
    const L = state.lang;
    switch (m.kind) {
      case 'not_found': return I.t(L, 'lookup_not_found');
      case 'rate_limited': return I.t(L, 'lookup_rate_limited', { wait: I.duration(L, m.wait) });
      case 'bad_request': return I.t(L, 'lookup_bad_request');
      case 'network': return I.t(L, 'net_error');
      default: return I.t(L, 'server_error');
    }
  }

  function render() {
    const L = state.lang;
    I.applyLang(L);
    $toggle.textContent = I.t(L, 'toggle_to');
    $toggle.setAttribute('lang', I.other(L));
    document.title = (state.shop && state.shop.name ? state.shop.name + ' · ' : '') + I.t(L, 'lookup_title');
    $('title').textContent = I.t(L, 'lookup_title');
    $('intro').textContent = I.t(L, 'lookup_intro');
    $('order-label').textContent = I.t(L, 'lookup_order');
    $('last4-label').textContent = I.t(L, 'lookup_last4');
    $submit.textContent = I.t(L, state.busy ? 'lookup_busy' : 'lookup_submit');
    $submit.disabled = state.busy || Date.now() < state.blockedUntil || state.shopMissing;

    if (state.shop) {
      const logo = R.safeUrl(state.shop.logo_url);
      const img = logo ? h('img', { class: 'logo', src: logo, alt: '', width: '40', height: '40', dataset: { testid: 'shop-logo' } }) : null;
      if (img) img.addEventListener('error', () => img.classList.add('is-broken'));
      $shop.replaceChildren(img || '', h('span', { class: 'shop-name', dataset: { testid: 'shop-name' }, text: state.shop.name || '' }));
    } else {
      R.clear($shop);
    }

    const m = state.shopMissing ? { kind: 'shop_missing' } : state.message;
    if (!m) {
      R.clear($msg);
    } else if (m.kind === 'shop_missing') {
      $msg.replaceChildren(h('p', { class: 'notice notice-warn', dataset: { testid: 'shop-error' }, text: I.t(L, 'shop_not_found') }));
    } else {
      $msg.replaceChildren(h('p', { class: 'notice ' + (m.kind === 'not_found' || m.kind === 'bad_request' ? 'notice-bad' : 'notice-warn'), role: 'alert', dataset: { testid: 'lookup-error', kind: m.kind }, text: messageText(m) }));
    }
  }

  render();
  loadShop();
})();
