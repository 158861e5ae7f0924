/* trackstream web: DOM helpers and the order/parcel rendering shared by the buyer
 * page (track.js) and the merchant console's order detail (console.js).
 * Classic script; needs i18n.js first; exposes window.TrackstreamRender.
 * Everything is built with createElement/textContent: no HTML strings, no inline styles. */
(function () {
  'use strict';
  const I = window.TrackstreamI18n;

  /** h('div', {class: 'x', dataset: {testid: 'y'}}, child, 'text', [more]) */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
        else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) { if (dv !== undefined && dv !== null) el.dataset[dk] = String(dv); }
        else if (k === 'text') el.textContent = v;
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else if (k in el && typeof v !== 'string') el[k] = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false || c === '') continue;
      if (Array.isArray(c)) append(el, c);
      else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
    for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  /** Only http(s) and same-origin paths become links or images (never javascript:). */
  function safeUrl(u) {
    if (!u) return '';
    try {
      const url = new URL(u, location.href);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : '';
    } catch (e) {
      return '';
    }
  }

  /** carrier_name is `{"zh-CN": …, "en": …}` (or a plain string); the code as a fallback. */
  function carrierName(p, lang) {
    const n = p.carrier_name;
    if (n && typeof n === 'object') return n[lang] || n.en || n['zh-CN'] || String(p.carrier || '').toUpperCase();
    return n || String(p.carrier || '').toUpperCase();
  }

  function statusClass(s) {
    switch (s) {
      case 'DELIVERED': return 'tone-ok';
      case 'EXCEPTION': case 'DELIVERY_ATTEMPT_FAILED': case 'RETURNING': case 'RETURNED':
      case 'CANCELLED': case 'EXPIRED': return 'tone-bad';
      case 'OUT_FOR_DELIVERY': case 'AVAILABLE_FOR_PICKUP': return 'tone-near';
      default: return 'tone-move';
    }
  }

  /** `events` (newest first) with `ev` put in its place by `at`: before the first event
   * that is not newer than it (so at an equal instant the arrival goes first). */
  function insertEvent(events, ev) {
    const at = I.parse(ev.at);
    if (!at) return [ev].concat(events);
    const i = events.findIndex((e) => { const d = I.parse(e.at); return !d || d.getTime() <= at.getTime(); });
    return i < 0 ? events.concat([ev]) : events.slice(0, i).concat([ev], events.slice(i));
  }

  /** ctx: {lang, tz, audience: 'buyer'|'merchant'} */
  function steps(parcel, ctx) {
    const byKey = new Map((parcel.steps || []).map((s) => [s.key, s]));
    const list = h('ol', { class: 'steps', dataset: { testid: 'steps' } });
    I.STEPS.forEach((key) => {
      const s = byKey.get(key) || { key, reached: false, current: false, at: null };
      list.append(h('li', {
        class: ['step', s.reached && 'is-reached', s.current && 'is-current'],
        dataset: { testid: 'step', step: key, reached: s.reached ? 'true' : 'false', current: s.current ? 'true' : 'false' },
        'aria-current': s.current ? 'step' : null,
      },
      h('span', { class: 'step-dot', 'aria-hidden': 'true' }),
      h('span', { class: 'step-label', text: I.step(ctx.lang, key) }),
      s.at ? h('time', { class: 'step-time', datetime: s.at, text: I.time(ctx.lang, ctx.tz, s.at) }) : null));
    });
    return list;
  }

  function exceptionBox(ex, ctx) {
    const L = ctx.lang;
    const reasonWords = I.reason(L, ex.reason);
    return h('div', { class: 'notice notice-bad', role: 'status', dataset: { testid: 'exception', reason: ex.reason || '', incidentId: ex.incident_id || undefined } },
      h('p', { class: 'notice-title', text: I.t(L, 'exception_title') + (reasonWords ? (L === 'zh-CN' ? '：' : ': ') + reasonWords : '') }),
      ex.text ? h('p', { class: 'carrier-text', text: I.t(L, 'carrier_says', { text: ex.text }) }) : null,
      ex.since ? h('p', { class: 'muted', text: I.t(L, 'exception_since', { time: I.time(L, ctx.tz, ex.since) }) }) : null,
      ex.expected_clear_at ? h('p', { dataset: { testid: 'expected-clear' }, text: I.t(L, 'expected_clear', { time: I.time(L, ctx.tz, ex.expected_clear_at) }) }) : null,
      ex.incident_id ? h('p', { class: 'incident-note', dataset: { testid: 'incident-note' }, text: I.t(L, 'incident_note') }) : null);
  }

  function predictionBox(p, ctx) {
    const L = ctx.lang;
    // A LOW-confidence prediction is for merchants only, never promised to buyers.
    if (ctx.audience === 'buyer' && String(p.confidence || '').replace(/^PREDICTION_CONFIDENCE_/, '') === 'LOW') return null;
    if (!p.most_likely_at) return null;
    return h('div', { class: 'prediction', dataset: { testid: 'prediction', confidence: p.confidence || '' } },
      h('span', { class: 'label', text: I.t(L, 'prediction_title') }),
      h('strong', { class: 'prediction-date', text: I.date(L, ctx.tz, p.most_likely_at) }),
      p.earliest_at && p.latest_at
        ? h('span', { class: 'muted', text: I.t(L, 'prediction_window', { earliest: I.date(L, ctx.tz, p.earliest_at), latest: I.date(L, ctx.tz, p.latest_at) }) })
        : null,
      ctx.audience === 'merchant' && p.confidence ? h('span', { class: 'chip', text: I.enumWord(L, 'confidence', p.confidence) }) : null);
  }

  function deliveredBox(d, ctx) {
    const L = ctx.lang;
    const photo = safeUrl(d.photo_url);
    return h('div', { class: 'notice notice-ok', dataset: { testid: 'delivered' } },
      h('p', { class: 'notice-title', text: I.t(L, 'delivered_title') }),
      d.at ? h('p', { text: I.t(L, 'delivered_at', { time: I.time(L, ctx.tz, d.at) }) }) : null,
      d.signer ? h('p', { text: I.t(L, 'signer', { name: d.signer }) }) : null,
      photo ? h('p', {}, h('a', { href: photo, target: '_blank', rel: 'noopener noreferrer', dataset: { testid: 'delivery-photo' }, text: I.t(L, 'photo') })) : null);
  }

  function eventItem(ev, ctx) {
    const L = ctx.lang;
    const reasonWords = I.reason(L, ev.reason);
    return h('li', { class: ['event', statusClass(ev.status)], dataset: { testid: 'event', status: ev.status || '', eventId: ev.event_id } },
      h('span', { class: 'event-dot', 'aria-hidden': 'true' }),
      h('div', { class: 'event-body' },
        h('div', { class: 'event-head' },
          h('strong', { class: 'event-status', text: I.status(L, ev.status) }),
          reasonWords ? h('span', { class: 'chip', text: reasonWords }) : null,
          ev.late ? h('span', { class: 'chip chip-muted', text: I.t(L, 'late_scan') }) : null),
        h('time', { class: 'event-time', datetime: ev.at || '', text: I.time(L, ctx.tz, ev.at) }),
        ev.location ? h('div', { class: 'event-location', text: ev.location }) : null,
        ev.text ? h('div', { class: 'event-text', text: ev.text }) : null));
  }

  /** The timeline in the order given: the API's events are newest first already. */
  function timeline(parcel, ctx) {
    const events = parcel.events || [];
    return h('section', { class: 'timeline' },
      h('h4', { text: I.t(ctx.lang, 'timeline') }),
      events.length
        ? h('ol', { class: 'events', dataset: { testid: 'timeline' } }, events.map((e) => eventItem(e, ctx)))
        : h('p', { class: 'muted', text: I.t(ctx.lang, 'no_events') }));
  }

  function parcel(p, ctx) {
    const L = ctx.lang;
    return h('article', { class: ['parcel', statusClass(p.status)], dataset: { testid: 'parcel', waybill: p.waybill, carrier: p.carrier, status: p.status || '' } },
      h('header', { class: 'parcel-head' },
        h('div', { class: 'parcel-id' },
          h('span', { class: 'carrier', text: carrierName(p, ctx.lang) }),
          h('span', { class: 'waybill' }, h('span', { class: 'sr-label', text: I.t(L, 'waybill') + ' ' }), p.waybill),
          p.is_return ? h('span', { class: 'badge badge-return', dataset: { testid: 'return-badge' }, text: I.t(L, 'return_badge') }) : null),
        h('p', { class: 'parcel-status', dataset: { testid: 'parcel-status' } },
          h('strong', { text: I.status(L, p.status) }),
          p.status_at ? h('span', { class: 'muted', text: ' · ' + I.t(L, 'updated_at', { time: I.time(L, ctx.tz, p.status_at) }) }) : null)),
      steps(p, ctx),
      p.exception ? exceptionBox(p.exception, ctx) : null,
      p.delivered ? deliveredBox(p.delivered, ctx) : null,
      !p.delivered && p.prediction ? predictionBox(p.prediction, ctx) : null,
      !p.delivered && p.promised_at ? h('p', { class: 'promised', dataset: { testid: 'promised' }, text: I.t(L, 'promised', { time: I.date(L, ctx.tz, p.promised_at) }) }) : null,
      timeline(p, ctx));
  }

  /** One OrderView; `extra` elements (e.g. the console's alerts) are appended. */
  function order(o, ctx, extra) {
    const L = ctx.lang;
    return h('section', { class: 'order card', dataset: { testid: 'order', orderId: o.order_id } },
      h('header', { class: 'order-head' },
        h('h3', {}, h('span', { class: 'muted', text: I.t(L, 'order') + ' ' }), h('span', { class: 'order-id', text: o.order_id })),
        o.contact_masked ? h('span', { class: 'contact muted', dataset: { testid: 'contact' }, text: I.t(L, 'contact') + ' ' + o.contact_masked }) : null),
      (o.parcels || []).map((p) => parcel(p, ctx)),
      extra || null);
  }

  window.TrackstreamRender = { h, svg, append, clear, safeUrl, insertEvent, statusClass, carrierName, steps, parcel, order, eventItem };
})();
