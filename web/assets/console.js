/* trackstream web: the merchant console /console — sign-in, live alert board,
 * search, order detail. Side panels are in console-panels.js.
 * The merchant token lives in sessionStorage only (this tab), never in a cookie. */
(function () {
  'use strict';
  const I = window.TrackstreamI18n;
  const R = window.TrackstreamRender;
  // The side panels (console-panels.js); the console still works without them.
  const P = window.TrackstreamConsolePanels || { load() {}, reset() {}, render() {} };
  const h = R.h;

  const TOKEN_KEY = 'trackstream.merchantToken';
  const SEV = { INFO: 1, WARNING: 2, CRITICAL: 3 };
  // How long the alert list (an index) may lag behind the live stream.
  const INDEX_LAG_MS = 60000;
  const $ = (id) => document.getElementById(id);

  const state = {
    lang: I.pickLang(''),
    token: '',
    merchant: null,
    signinError: '',
    minSeverity: 'INFO',
    alerts: new Map(), // alert_id → AlertView
    fresh: new Map(), // alert_id → timer (highlight)
    // alert_id → {a, at}: what the stream last said of each alert and when. Kept
    // across filter changes: the list is an index the server writes a moment
    // after the stream tells (they are fed independently), so a list asked for
    // right after an alert went live may not hold it yet.
    streamSeen: new Map(),
    boardGen: 0,
    streamCtrl: null,
    backoff: 1000,
    live: 'reconnecting',
    search: null, // {query_kind, results} | {error}
    detail: null, // {id, status: 'loading'|'ok'|'missing'|'failed', order}
  };

  // ---- API ------------------------------------------------------------------

  async function api(path, opts) {
    const token = state.token;
    let res;
    try {
      res = await fetch(path, Object.assign({ cache: 'no-store', headers: { Accept: 'application/json', Authorization: 'Bearer ' + token } }, opts || {}));
    } catch (e) {
      return { ok: false, status: 0, body: null };
    }
    const body = await res.json().catch(() => null);
    if (res.status === 401 && token && token === state.token && state.merchant) signOut('signin_error');
    return { ok: res.ok, status: res.status, body };
  }

  // ---- session --------------------------------------------------------------

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = $('signin-token').value.trim();
    if (!token) return;
    await signIn(token);
  });

  $('signout').addEventListener('click', () => signOut(''));
  $('lang-toggle').addEventListener('click', () => {
    state.lang = I.other(state.lang);
    renderAll();
  });

  async function signIn(token) {
    $('signin-submit').disabled = true;
    state.token = token;
    const r = await api('/api/v1/merchant');
    $('signin-submit').disabled = false;
    if (!r.ok || !r.body) {
      state.token = '';
      sessionStorage.removeItem(TOKEN_KEY);
      state.signinError = r.status === 401 || r.status === 403 ? 'signin_error' : r.status === 0 ? 'net_error' : 'server_error';
      renderAll();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $('signin-token').value = '';
    state.merchant = r.body;
    state.signinError = '';
    renderAll();
    startBoard();
    P.load(api, () => P.render(state.lang));
  }

  function signOut(errorKey) {
    stopBoard();
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    state.merchant = null;
    state.signinError = errorKey || '';
    state.alerts.clear();
    state.streamSeen.clear();
    state.search = null;
    state.detail = null;
    P.reset();
    $('search-input').value = '';
    renderAll();
  }

  // ---- alert board: list + live stream over fetch (EventSource cannot send headers) ----

  function startBoard() {
    stopBoard();
    const gen = ++state.boardGen;
    state.alerts.clear();
    state.backoff = 1000;
    loadAlerts(gen);
    runStream(gen);
  }

  function stopBoard() {
    state.boardGen++;
    if (state.streamCtrl) state.streamCtrl.abort();
    state.streamCtrl = null;
    setLive('reconnecting');
  }

  async function loadAlerts(gen) {
    const askedAt = Date.now();
    const r = await api('/api/v1/merchant/alerts?min_severity=' + state.minSeverity);
    if (gen !== state.boardGen || !r.ok || !r.body) return;
    const next = new Map();
    for (const a of r.body.alerts || []) {
      if (a.state !== 'RESOLVED' && (SEV[a.severity] || 0) >= SEV[state.minSeverity]) next.set(a.alert_id, a);
    }
    // The stream is newer than the list for what it said within INDEX_LAG_MS
    // of the list being asked for: an alert it opened the list does not hold
    // yet stays, one it resolved goes.
    for (const [id, seen] of state.streamSeen) {
      if (askedAt - seen.at > INDEX_LAG_MS) continue;
      if (seen.a.state === 'RESOLVED') next.delete(id);
      else if (!next.has(id) && (SEV[seen.a.severity] || 0) >= SEV[state.minSeverity]) next.set(id, seen.a);
    }
    state.alerts = next;
    renderBoard();
  }

  async function runStream(gen) {
    const ctrl = new AbortController();
    state.streamCtrl = ctrl;
    let watchdog = 0;
    const kick = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => ctrl.abort(), 45000); // keep-alive comes every 15 s
    };
    try {
      const res = await fetch('/api/v1/merchant/alerts/events?min_severity=' + state.minSeverity, {
        headers: { Accept: 'text/event-stream', Authorization: 'Bearer ' + state.token },
        cache: 'no-store',
        signal: ctrl.signal,
      });
      if (gen !== state.boardGen) return;
      if (res.status === 401) {
        signOut('signin_error');
        return;
      }
      if (!res.ok || !res.body) throw new Error('alert stream: HTTP ' + res.status);
      kick();
      setLive('live');
      state.backoff = 1000;
      loadAlerts(gen); // resync: anything missed while disconnected
      const parse = sseParser((ev) => {
        if (gen === state.boardGen && ev.event === 'alert') onAlert(ev.data);
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== state.boardGen) break;
        kick();
        parse(value);
      }
    } catch (e) {
      /* network error, abort or watchdog: reconnect below */
    } finally {
      clearTimeout(watchdog);
    }
    if (gen !== state.boardGen) return;
    setLive('reconnecting');
    const wait = state.backoff + Math.floor(Math.random() * 300);
    state.backoff = Math.min(state.backoff * 2, 30000);
    setTimeout(() => { if (gen === state.boardGen) runStream(gen); }, wait);
  }

  /** A small text/event-stream parser: calls onEvent({event, data, id}) per dispatched event. */
  function sseParser(onEvent) {
    let buf = '';
    let data = [];
    let event = '';
    let id = '';
    function line(l) {
      if (l === '') {
        if (data.length) onEvent({ event: event || 'message', data: data.join('\n'), id });
        data = [];
        event = '';
        return;
      }
      if (l[0] === ':') return; // comment / keep-alive
      const i = l.indexOf(':');
      const field = i < 0 ? l : l.slice(0, i);
      let value = i < 0 ? '' : l.slice(i + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
      else if (field === 'id') id = value;
    }
    return function feed(chunk) {
      buf += chunk;
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m || (m[0] === '\r' && m.index === buf.length - 1)) break; // a CR may be half of CRLF
        line(buf.slice(0, m.index));
        buf = buf.slice(m.index + m[0].length);
      }
    };
  }

  function onAlert(text) {
    let a;
    try {
      a = JSON.parse(text);
    } catch (e) {
      return;
    }
    if (!a || !a.alert_id) return;
    state.streamSeen.set(a.alert_id, { a, at: Date.now() });
    if (a.state === 'RESOLVED' || (SEV[a.severity] || 0) < SEV[state.minSeverity]) {
      if (!state.alerts.has(a.alert_id)) return;
      // Grey it out, then take it off the board.
      const was = state.alerts.get(a.alert_id);
      state.alerts.set(a.alert_id, Object.assign({}, was, a, { state: 'RESOLVED', opened_at: was.opened_at || a.opened_at }));
      renderBoard();
      setTimeout(() => {
        const cur = state.alerts.get(a.alert_id);
        if (cur && cur.state === 'RESOLVED') {
          state.alerts.delete(a.alert_id);
          renderBoard();
        }
      }, 1500);
      return;
    }
    state.alerts.set(a.alert_id, a);
    clearTimeout(state.fresh.get(a.alert_id));
    state.fresh.set(a.alert_id, setTimeout(() => {
      state.fresh.delete(a.alert_id);
      const row = document.querySelector('[data-testid="alert-row"][data-alert-id="' + CSS.escape(a.alert_id) + '"]');
      if (row) row.classList.remove('is-new');
    }, 2500));
    renderBoard();
  }

  function setLive(s) {
    state.live = s;
    const el = $('live-status');
    el.dataset.state = s;
    el.textContent = I.t(state.lang, s === 'live' ? 'live' : 'reconnecting');
  }

  $('severity-filter').addEventListener('change', (e) => {
    state.minSeverity = SEV[e.target.value] ? e.target.value : 'INFO';
    renderBoard();
    startBoard();
  });

  function alertRow(a, testid) {
    const L = state.lang;
    const reason = I.reason(L, a.reason);
    return h('li', {
      class: ['alert-row', state.fresh.has(a.alert_id) && testid === 'alert-row' && 'is-new', a.state === 'RESOLVED' && 'is-resolved'],
      dataset: { testid, alertId: a.alert_id, severity: a.severity, state: a.state, waybill: a.waybill, orderId: a.order_id, carrier: a.carrier },
    },
    h('span', { class: 'sev sev-' + a.severity, text: I.enumWord(L, 'severity', a.severity) }),
    h('div', { class: 'alert-main' },
      h('div', { class: 'alert-line' },
        h('strong', { text: a.rule || '' }),
        h('span', { class: 'chip', text: I.enumWord(L, 'alert_state', a.state) }),
        h('span', { class: 'waybill', text: [a.carrier, a.waybill].filter(Boolean).join(' ') }),
        a.order_id ? h('button', { type: 'button', class: 'linklike', dataset: { testid: 'alert-order' }, text: I.t(L, 'order') + ' ' + a.order_id, onclick: () => openOrder(a.order_id) }) : null),
      h('div', { class: 'alert-meta' },
        [I.status(L, a.last_status), reason, a.incident_id ? '⚑ ' + a.incident_id : '', I.t(L, 'alert_opened', { time: I.time(L, '', a.opened_at) })].filter(Boolean).join(' · '))));
  }

  function sortAlerts(list) {
    const ms = (a) => (I.parse(a.opened_at) || new Date(0)).getTime();
    return list.sort((a, b) => ms(b) - ms(a));
  }

  function renderBoard() {
    const list = sortAlerts([...state.alerts.values()]);
    $('alerts').replaceChildren(...list.map((a) => alertRow(a, 'alert-row')));
    $('alerts-empty').hidden = list.length > 0;
    $('severity-filter').value = state.minSeverity;
  }

  // ---- search & order detail ------------------------------------------------

  $('search-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const q = $('search-input').value.trim();
    if (!q) {
      state.search = { error: 'search_bad_request' };
      renderSearch();
      return;
    }
    $('search-submit').disabled = true;
    const r = await api('/api/v1/merchant/search?q=' + encodeURIComponent(q));
    $('search-submit').disabled = false;
    if (!state.merchant) return;
    state.search = r.ok && r.body ? r.body
      : { error: r.status === 400 ? 'search_bad_request' : r.status === 404 ? 'search_empty' : r.status === 0 ? 'net_error' : 'load_failed' };
    renderSearch();
  });

  function renderSearch() {
    const L = state.lang;
    const s = state.search;
    const $r = $('search-results');
    if (!s) return R.clear($r);
    if (s.error) {
      const empty = s.error === 'search_empty';
      return $r.replaceChildren(h('p', { class: 'notice ' + (empty ? '' : 'notice-warn'), dataset: { testid: empty ? 'search-empty' : 'search-error' }, text: I.t(L, s.error) }));
    }
    const results = s.results || [];
    if (!results.length) return $r.replaceChildren(h('p', { class: 'notice', dataset: { testid: 'search-empty' }, text: I.t(L, 'search_empty') }));
    // The query itself is never echoed: it may be a buyer's phone number.
    $r.replaceChildren(
      h('p', { class: 'muted', dataset: { testid: 'query-kind', kind: s.query_kind }, text: I.t(L, 'query_kind', { kind: I.enumWord(L, 'query_kind', s.query_kind) }) }),
      h('ul', { class: 'results' }, results.map((x) => h('li', {},
        h('button', { type: 'button', class: 'search-result', dataset: { testid: 'search-result', orderId: x.order_id }, onclick: () => openOrder(x.order_id) },
          h('div', { class: 'alert-line' }, h('strong', { text: I.t(L, 'order') + ' ' + x.order_id }), x.contact_masked ? h('span', { class: 'muted', text: x.contact_masked }) : null),
          (x.parcels || []).map((p) => h('div', { class: 'parcels-line', text: [p.carrier, p.waybill, I.status(L, p.status)].filter(Boolean).join(' · ') })))))));
  }

  async function openOrder(id) {
    state.detail = { id, status: 'loading' };
    renderDetail();
    $('order-detail').scrollIntoView({ block: 'start', behavior: 'smooth' });
    const r = await api('/api/v1/merchant/orders/' + encodeURIComponent(id));
    if (!state.detail || state.detail.id !== id) return;
    state.detail = r.ok && r.body ? { id, status: 'ok', order: r.body } : { id, status: r.status === 404 ? 'missing' : 'failed' };
    renderDetail();
  }

  function renderDetail() {
    const L = state.lang;
    const d = state.detail;
    const $d = $('order-detail');
    $d.hidden = !d;
    if (!d) {
      delete $d.dataset.orderId;
      return R.clear($d);
    }
    $d.dataset.orderId = d.id;
    $d.dataset.status = d.status;
    const head = h('div', { class: 'section-head' },
      h('h2', { text: I.t(L, 'order_detail') }),
      h('button', { type: 'button', dataset: { testid: 'order-detail-close' }, text: I.t(L, 'close'), onclick: () => { state.detail = null; renderDetail(); } }));
    if (d.status !== 'ok') {
      const msg = d.status === 'loading' ? I.t(L, 'loading') : d.status === 'missing' ? I.t(L, 'order_not_found') : I.t(L, 'load_failed');
      return $d.replaceChildren(head, h('p', { class: 'muted', text: msg }));
    }
    const alerts = sortAlerts((d.order.alerts || []).slice());
    const extra = alerts.length
      ? h('section', { class: 'order-alerts' }, h('h4', { text: I.t(L, 'order_alerts') }), h('ul', { class: 'alerts' }, alerts.map((a) => alertRow(a, 'order-alert'))))
      : null;
    $d.replaceChildren(head, R.order(d.order, { lang: L, tz: '', audience: 'merchant' }, extra));
  }

  // ---- whole page -----------------------------------------------------------

  function renderAll() {
    const L = state.lang;
    I.applyLang(L);
    document.title = I.t(L, 'console_title');
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = I.t(L, el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = I.t(L, el.dataset.i18nPlaceholder);
    $('lang-toggle').textContent = I.t(L, 'toggle_to');
    $('lang-toggle').setAttribute('lang', I.other(L));
    for (const o of $('severity-filter').options) o.textContent = I.enumWord(L, 'severity', o.value) + ' (' + o.value + ')';

    const signedIn = !!state.merchant;
    $('signin').hidden = signedIn;
    $('app').hidden = !signedIn;
    $('signout').hidden = !signedIn;
    $('merchant-name').hidden = !signedIn;
    $('merchant-name').textContent = signedIn ? state.merchant.name || state.merchant.id || '' : '';
    const logo = signedIn ? R.safeUrl(state.merchant.logo_url) : '';
    if (logo) $('merchant-logo').src = logo;
    else $('merchant-logo').removeAttribute('src');
    $('merchant-logo').hidden = !logo;
    $('signin-message').replaceChildren(state.signinError
      ? h('p', { class: 'notice notice-bad', role: 'alert', dataset: { testid: 'signin-error' }, text: I.t(L, state.signinError) })
      : '');
    setLive(state.live);
    if (!signedIn) return;
    renderBoard();
    renderSearch();
    renderDetail();
    P.render(L);
  }

  $('merchant-logo').addEventListener('error', () => { $('merchant-logo').hidden = true; });

  renderAll();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else $('signin-token').focus();
})();
