/* trackstream web: the merchant console's side panels — incidents, carrier
 * scorecards (inline SVG bar chart) and dead letters. Classic script; needs
 * i18n.js and render.js; exposes window.TrackstreamConsolePanels. */
(function () {
  'use strict';
  const I = window.TrackstreamI18n;
  const R = window.TrackstreamRender;
  const h = R.h;
  const svg = R.svg;
  // replaceChildren would print a null child as the text "null"; append skips it.
  const put = (el, ...children) => R.append(R.clear(el), children);

  // name → {status: 'loading'|'ok'|'none'|'failed', body}
  const data = { incidents: null, scorecards: null, deadletters: null };
  const SOURCES = {
    incidents: '/api/v1/merchant/incidents?days=7',
    scorecards: '/api/v1/merchant/scorecards?days=14',
    deadletters: '/api/v1/merchant/deadletters',
  };

  /** `api(path)` resolves to {ok, status, body}; status 0 = network error. */
  function load(api, onChange) {
    for (const [name, path] of Object.entries(SOURCES)) {
      data[name] = { status: 'loading' };
      api(path).then((r) => {
        if (r.ok) data[name] = { status: 'ok', body: r.body || {} };
        // Not there yet (404/501) or not answering: "no data yet", never an error page.
        else if (r.status === 404 || r.status === 501 || r.status === 503) data[name] = { status: 'none' };
        else data[name] = { status: 'failed' };
        onChange();
      });
    }
  }

  function reset() {
    for (const k of Object.keys(data)) data[k] = null;
  }

  function placeholder(L, d) {
    if (!d || d.status === 'loading') return h('p', { class: 'loading' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), I.t(L, 'loading'));
    if (d.status === 'failed') return h('p', { class: 'muted', dataset: { testid: 'load-failed' }, text: I.t(L, 'load_failed') });
    return h('p', { class: 'muted', dataset: { testid: 'no-data' }, text: I.t(L, 'no_data') });
  }

  function renderIncidents(el, L) {
    const d = data.incidents;
    const list = d && d.status === 'ok' ? d.body.incidents || [] : null;
    put(el, h('h2', { text: I.t(L, 'incidents_title') }),
      !list ? placeholder(L, d)
        : !list.length ? placeholder(L, { status: 'none' })
          : h('ul', { class: 'incidents' }, list.map((x) => h('li', { dataset: { testid: 'incident', incidentId: x.incident_id, state: x.state } },
            h('div', { class: 'alert-line' },
              h('strong', { text: I.reason(L, x.reason) || I.reason(L, 'UNKNOWN') }),
              h('span', { class: 'chip', text: I.enumWord(L, 'incident_state', x.state) }),
              h('span', { text: [x.carrier, x.place].filter(Boolean).join(' · ') })),
            h('div', { class: 'alert-meta' },
              I.t(L, 'alert_opened', { time: I.time(L, '', x.opened_at) }),
              x.resolved_at ? ' → ' + I.time(L, '', x.resolved_at) : '',
              x.expected_delay_hours ? ' · ' + I.t(L, 'incident_delay', { n: x.expected_delay_hours }) : ''),
            h('div', { class: 'alert-meta', text: I.t(L, 'incident_affected', { n: x.affected || 0, total: x.platform_affected || 0 }) })))));
  }

  /** Rates per carrier from `cards`: carrier-level cards (lane ""), else lane cards
   * pooled by deliveries. Rates are 0..1 (a percentage is tolerated). */
  function pool(cards) {
    const direct = cards.filter((c) => !c.lane);
    const src = direct.length ? direct : cards;
    const by = new Map();
    for (const c of src) {
      let rate = Number(c.on_time_rate);
      if (!Number.isFinite(rate)) continue;
      if (rate > 1) rate /= 100;
      const n = Math.max(0, Number(c.delivered) || 0);
      const key = c.carrier || '?';
      const acc = by.get(key) || { carrier: key, weighted: 0, delivered: 0, count: 0, sum: 0, card: c };
      acc.weighted += rate * n;
      acc.delivered += n;
      acc.sum += rate;
      acc.count += 1;
      by.set(key, acc);
    }
    return new Map([...by.values()].map((a) => [a.carrier, {
      carrier: a.carrier,
      delivered: a.delivered,
      rate: a.delivered ? a.weighted / a.delivered : a.sum / a.count,
      card: a.count === 1 ? a.card : null,
    }]));
  }

  /** One bar per carrier of the merchant's own cards; the platform's rate as a tick. */
  function carrierRates(cards) {
    const own = pool(cards.filter((c) => c.scope !== 'platform'));
    const platform = pool(cards.filter((c) => c.scope === 'platform'));
    return [...own.values()]
      .map((r) => Object.assign(r, { platform: platform.has(r.carrier) ? platform.get(r.carrier).rate : null }))
      .sort((a, b) => b.rate - a.rate);
  }

  function renderScorecards(el, L) {
    const d = data.scorecards;
    const cards = d && d.status === 'ok' ? d.body.cards || [] : null;
    const rows = cards ? carrierRates(cards) : [];
    if (!cards || !rows.length) {
      put(el, h('h2', { text: I.t(L, 'scorecards_title') }), placeholder(L, cards ? { status: 'none' } : d));
      return;
    }
    const W = 420, rowH = 30, labelW = 70, valueW = 110, barW = W - labelW - valueW;
    const H = rows.length * rowH + 4;
    const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': I.t(L, 'scorecards_title') });
    const clamp = (r) => Math.min(1, Math.max(0, r));
    rows.forEach((r, i) => {
      const y = i * rowH + 4;
      const pct = Math.round(r.rate * 1000) / 10;
      const g = svg('g', { 'data-testid': 'scorecard-bar', 'data-carrier': r.carrier, 'data-rate': r.rate.toFixed(4) });
      R.append(g, [
        svg('text', { x: 0, y: y + 15 }, R.carrierName({ carrier: r.carrier }, L)),
        svg('rect', { class: 'track', x: labelW, y: y + 2, width: barW, height: 18, rx: 4 }),
        svg('rect', { class: 'bar' + (r.rate < 0.7 ? ' low' : r.rate < 0.9 ? ' mid' : ''), x: labelW, y: y + 2, width: Math.max(2, Math.round(barW * clamp(r.rate))), height: 18, rx: 4 }),
        r.platform !== null ? svg('rect', { class: 'baseline', x: labelW + Math.round(barW * clamp(r.platform)) - 1, y: y, width: 2, height: 22 }) : null,
        svg('text', { class: 'val', x: labelW + barW + 8, y: y + 15 }, pct + '% · ' + I.t(L, 'delivered_n', { n: r.delivered })),
        svg('title', {}, [
          r.card && r.card.p50_hours != null ? I.t(L, 'p50_p90', { p50: r.card.p50_hours, p90: r.card.p90_hours }) : '',
          r.platform !== null ? I.t(L, 'platform_rate', { pct: Math.round(r.platform * 1000) / 10 }) : '',
        ].filter(Boolean).join(' · ') || r.carrier)]);
      chart.append(g);
    });
    const hasBaseline = rows.some((r) => r.platform !== null);
    put(el, h('h2', { text: I.t(L, 'scorecards_title') }), chart,
      hasBaseline ? h('p', { class: 'muted legend' }, h('span', { class: 'legend-tick', 'aria-hidden': 'true' }), I.t(L, 'platform_legend')) : null);
  }

  function renderDeadletters(el, L) {
    const d = data.deadletters;
    const ok = d && d.status === 'ok';
    const total = ok ? Number(d.body.total) || 0 : null;
    const causes = ok ? d.body.by_cause || [] : [];
    el.dataset.total = ok ? String(total) : '';
    put(el, 
      h('h2', { text: I.t(L, 'deadletters_title') }),
      !ok ? placeholder(L, d) : h('p', {}, h('span', { class: 'big-number', dataset: { testid: 'deadletters-total' }, text: String(total) }), ' ', h('span', { class: 'muted', text: I.t(L, 'deadletters_total', { n: total }) })),
      ok && causes.length
        ? h('table', { class: 'simple' },
          h('thead', {}, h('tr', {}, h('th', { text: I.t(L, 'stage') }), h('th', { text: I.t(L, 'cause') }), h('th', { class: 'num', text: I.t(L, 'count') }))),
          h('tbody', {}, causes.map((c) => h('tr', {}, h('td', { text: c.stage || '' }), h('td', { text: c.cause || '' }), h('td', { class: 'num', text: String(c.count || 0) })))))
        : null);
  }

  function render(L) {
    renderIncidents(document.getElementById('incidents'), L);
    renderScorecards(document.getElementById('scorecards'), L);
    renderDeadletters(document.getElementById('deadletters'), L);
  }

  window.TrackstreamConsolePanels = { load, reset, render, carrierRates };
})();
