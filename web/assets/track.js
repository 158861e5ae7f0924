/* trackstream web: the buyer tracking page /t/{token}.
 * GET /api/v1/track/{token} → BuyerView; live updates per order over EventSource. */
(function () {
  'use strict';
  const I = window.TrackstreamI18n;
  const R = window.TrackstreamRender;
  const h = R.h;

  // Tests read this back to prove live updates never reload the page.
  if (!window.__trackstreamPageId) {
    const rnd = new Uint32Array(2);
    crypto.getRandomValues(rnd);
    window.__trackstreamPageId = rnd[0].toString(36) + rnd[1].toString(36);
  }

  const segments = location.pathname.split('/').filter(Boolean);
  const token = segments.length ? segments[segments.length - 1] : '';
  const apiBase = '/api/v1/track/' + encodeURIComponent(token);

  const state = {
    lang: null,
    view: null, // BuyerView
    error: null, // {kind: 'link', sub: 'expired'|'invalid'|'other'} | {kind: 'network'|'server'}
    sources: new Map(), // order_id → EventSource
    pending: new Map(), // order_id → Map(seq → UpdateView) received live, not yet in a fetched view
    generation: 0,
    refetchTimer: 0,
    retryTimer: 0,
    pollTimer: 0,
    retryDelay: 2000,
  };

  const $main = document.getElementById('main');
  const $shop = document.getElementById('shop');
  const $toggle = document.getElementById('lang-toggle');

  $toggle.addEventListener('click', () => {
    state.lang = I.other(state.lang || I.pickLang(''));
    render();
  });

  // ---- data ---------------------------------------------------------------

  async function load() {
    const gen = ++state.generation;
    clearTimeout(state.retryTimer);
    let res;
    try {
      res = await fetch(apiBase, { headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' });
    } catch (e) {
      if (gen !== state.generation) return;
      return failed('network');
    }
    if (gen !== state.generation) return;
    if (res.ok) {
      let view;
      try {
        view = await res.json();
      } catch (e) {
        return failed('server');
      }
      if (gen !== state.generation) return;
      mergePending(view);
      state.view = view;
      state.error = null;
      state.retryDelay = 2000;
      if (!state.lang) state.lang = I.pickLang(view.locale);
      render();
      connect();
      return;
    }
    if (res.status >= 400 && res.status < 500) {
      const body = await res.json().catch(() => ({}));
      const sub = body.error === 'link_expired' ? 'expired' : body.error === 'link_invalid' ? 'invalid' : 'other';
      // Nothing of the orders may remain once the link is refused.
      state.view = null;
      state.pending.clear();
      disconnectAll();
      state.error = { kind: 'link', sub };
      render();
      return;
    }
    failed('server');
  }

  function failed(kind) {
    // A refetch that fails while orders are shown keeps them (and retries quietly).
    if (!state.view) {
      state.error = { kind };
      render();
    }
    state.retryTimer = setTimeout(load, state.retryDelay);
    state.retryDelay = Math.min(state.retryDelay * 2, 60000);
  }

  function scheduleRefetch() {
    clearTimeout(state.refetchTimer);
    state.refetchTimer = setTimeout(load, 300);
  }

  // ---- live updates -------------------------------------------------------

  // A browser keeps at most 6 HTTP/1.1 connections per host: past a few open streams the
  // page's own fetches would queue forever. So at most MAX_STREAMS orders stream (those
  // still moving first); when some order has no stream, the view is re-fetched now and then.
  const MAX_STREAMS = 4;
  const POLL_MS = 30000;
  const TERMINAL = new Set(['DELIVERED', 'RETURNED', 'CANCELLED', 'EXPIRED']);
  const active = (o) => !(o.parcels || []).length || (o.parcels || []).some((p) => !TERMINAL.has(p.status));

  function streamed(orders) {
    if (orders.length <= MAX_STREAMS) return orders;
    const keep = orders.filter((o) => state.sources.has(o.order_id) && active(o)).slice(0, MAX_STREAMS);
    for (const o of orders.filter(active).concat(orders)) {
      if (keep.length >= MAX_STREAMS) break;
      if (!keep.includes(o)) keep.push(o);
    }
    return keep;
  }

  function connect() {
    const orders = state.view ? state.view.orders || [] : [];
    const chosen = streamed(orders);
    const wanted = new Set(chosen.map((o) => o.order_id));
    for (const [id, es] of state.sources) {
      if (!wanted.has(id)) {
        es.close();
        state.sources.delete(id);
      }
    }
    clearTimeout(state.pollTimer);
    if (chosen.length < orders.length) state.pollTimer = setTimeout(load, POLL_MS);
    for (const o of chosen) {
      if (state.sources.has(o.order_id)) continue;
      const url = apiBase + '/orders/' + encodeURIComponent(o.order_id) + '/events?after_seq=' + encodeURIComponent(o.last_seq || 0);
      const es = new EventSource(url);
      es.addEventListener('update', (e) => onUpdate(o.order_id, e));
      es.addEventListener('cutoff', () => { /* the stream ends; EventSource resumes with Last-Event-ID */ });
      es.addEventListener('error', () => {
        // CLOSED means the server refused the stream (e.g. the link expired): a refetch tells why.
        if (es.readyState === EventSource.CLOSED) {
          state.sources.delete(o.order_id);
          scheduleRefetch();
        }
      });
      state.sources.set(o.order_id, es);
    }
  }

  function disconnectAll() {
    clearTimeout(state.pollTimer);
    for (const es of state.sources.values()) es.close();
    state.sources.clear();
  }

  function onUpdate(orderId, e) {
    let u;
    try {
      u = JSON.parse(e.data);
    } catch (err) {
      return;
    }
    if (!u || typeof u !== 'object') return;
    const oid = u.order_id || orderId;
    if (!state.pending.has(oid)) state.pending.set(oid, new Map());
    state.pending.get(oid).set(Number(u.seq) || 0, u);
    if (state.view && applyUpdate(state.view, oid, u)) render();
    scheduleRefetch();
  }

  /** Puts one UpdateView into a view: the event in its parcel's timeline (once), the status. */
  function applyUpdate(view, orderId, u) {
    const order = (view.orders || []).find((o) => o.order_id === orderId);
    if (!order) return false;
    const parcel = (order.parcels || []).find((p) => p.waybill === u.waybill && (!u.carrier || !p.carrier || p.carrier === u.carrier));
    if (!parcel) return false;
    const events = parcel.events || [];
    // `event` may be null (a status change without a scan): then only the status moves.
    if (u.event && !events.some((ev) => ev.event_id === u.event.event_id)) {
      parcel.events = R.insertEvent(events, u.event);
    }
    if (u.status && u.status !== parcel.status) {
      parcel.status = u.status;
      if (u.event && u.event.at) parcel.status_at = u.event.at;
    }
    order.last_seq = Math.max(Number(order.last_seq) || 0, Number(u.seq) || 0);
    return true;
  }

  /** A fetched view may lag behind updates already shown: keep those on top of it. */
  function mergePending(view) {
    for (const [oid, updates] of state.pending) {
      const order = (view.orders || []).find((o) => o.order_id === oid);
      if (!order) {
        state.pending.delete(oid);
        continue;
      }
      const lastSeq = Number(order.last_seq) || 0;
      for (const [seq, u] of [...updates].sort((a, b) => a[0] - b[0])) {
        if (seq <= lastSeq) updates.delete(seq);
        else applyUpdate(view, oid, u);
      }
    }
  }

  // ---- rendering ----------------------------------------------------------

  function ctx() {
    return { lang: state.lang, tz: (state.view && state.view.time_zone) || '', audience: 'buyer' };
  }

  function render() {
    const L = state.lang || I.pickLang('');
    state.lang = L;
    I.applyLang(L);
    $toggle.textContent = I.t(L, 'toggle_to');
    $toggle.setAttribute('lang', I.other(L));
    $main.setAttribute('aria-busy', 'false');

    if (state.error && state.error.kind === 'link') {
      appBrand(L);
      document.title = I.t(L, 'app_name');
      $main.replaceChildren(linkError(L, state.error.sub));
      return;
    }
    if (!state.view) {
      appBrand(L);
      document.title = I.t(L, 'app_name');
      const msg = state.error && state.error.kind === 'network' ? 'net_error' : 'server_error';
      $main.replaceChildren(h('div', { class: 'notice notice-warn', role: 'alert', dataset: { testid: 'load-error', kind: state.error ? state.error.kind : 'server' } },
        h('p', { text: I.t(L, msg) }),
        h('button', { type: 'button', class: 'btn', text: I.t(L, 'retry'), onclick: () => { state.retryDelay = 2000; load(); } })));
      return;
    }

    const view = state.view;
    const shop = view.shop || {};
    renderShop(shop);
    document.title = (shop.name ? shop.name + ' · ' : '') + I.t(L, 'app_name');
    const orders = view.orders || [];
    const c = ctx();
    $main.replaceChildren(
      orders.length
        ? h('div', { class: 'orders' }, orders.map((o) => R.order(o, c)))
        : h('p', { class: 'notice', dataset: { testid: 'no-orders' }, text: I.t(L, 'no_orders') }));
  }

  /** No shop to show (the link was refused, or nothing loaded): the page's own name. */
  function appBrand(L) {
    $shop.replaceChildren(h('span', { class: 'shop-name muted', text: I.t(L, 'app_name') }));
  }

  function renderShop(shop) {
    const logo = R.safeUrl(shop.logo_url);
    const img = logo ? h('img', { class: 'logo', src: logo, alt: '', width: '40', height: '40', dataset: { testid: 'shop-logo' } }) : null;
    if (img) img.addEventListener('error', () => img.classList.add('is-broken'));
    $shop.replaceChildren(img || '', h('span', { class: 'shop-name', dataset: { testid: 'shop-name' }, text: shop.name || '' }));
  }

  /** The merchant id inside a (possibly expired) token, only to offer the lookup page. */
  function merchantOfToken() {
    try {
      const payload = token.split('.')[0].replace(/-/g, '+').replace(/_/g, '/');
      const text = atob(payload + '==='.slice((payload.length + 3) % 4));
      const parts = text.split('|');
      return parts[0] === 'v1' && /^[A-Za-z0-9._-]{1,64}$/.test(parts[1] || '') ? parts[1] : '';
    } catch (e) {
      return '';
    }
  }

  function linkError(L, sub) {
    const merchant = sub === 'expired' ? merchantOfToken() : '';
    return h('div', { class: 'notice notice-warn link-error', role: 'alert', dataset: { testid: 'link-error', kind: sub } },
      h('p', { class: 'notice-title', text: I.t(L, 'link_' + sub) }),
      merchant ? h('p', {}, h('a', { class: 'btn', href: '/s/' + encodeURIComponent(merchant) + '?lang=' + L, dataset: { testid: 'lookup-link' }, text: I.t(L, 'lookup_title') })) : null);
  }

  load();
})();
