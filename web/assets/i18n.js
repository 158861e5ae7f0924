/* trackstream web: zh-CN / en dictionaries, language choice and time formatting.
 * Classic script (no modules, no build step); exposes window.TrackstreamI18n. */
(function () {
  'use strict';

  const DICT = {
    'zh-CN': {
      lang_name: '中文',
      toggle_to: 'English',
      app_name: '包裹追踪',
      loading: '正在加载…',
      retry: '重试',
      net_error: '网络连接出现问题，请检查网络后重试。',
      server_error: '服务暂时不可用，请稍后重试。',
      link_expired: '此链接已过期——请向商家索取新链接，或使用订单号查询您的订单。',
      link_invalid: '此链接无效——请向商家索取新链接，或使用订单号查询您的订单。',
      link_other: '无法打开此链接——请向商家索取新链接，或使用订单号查询您的订单。',
      no_orders: '暂无订单。',
      order: '订单',
      contact: '联系方式',
      waybill: '运单号',
      return_badge: '退货',
      updated_at: '更新于 {time}',
      current_status: '当前状态',
      exception_title: '包裹遇到问题',
      exception_since: '开始于 {time}',
      carrier_says: '快递公司说明：{text}',
      expected_clear: '预计在 {time} 前恢复',
      incident_note: '这是一次影响较多包裹的快递网络异常，我们正在持续跟进。',
      prediction_title: '预计送达',
      prediction_window: '最早 {earliest}，最晚 {latest}',
      promised: '承诺送达：{time}',
      delivered_title: '已签收',
      delivered_at: '签收时间：{time}',
      signer: '签收人：{name}',
      photo: '查看签收照片',
      timeline: '物流详情',
      no_events: '暂无物流记录。',
      late_scan: '补录',
      live_on: '实时更新中',
      // lookup page
      lookup_title: '查询订单',
      lookup_intro: '输入订单号和收货手机号后 4 位即可查看物流。',
      lookup_order: '订单号',
      lookup_last4: '手机号后 4 位',
      lookup_submit: '查询',
      lookup_busy: '查询中…',
      lookup_not_found: '没有找到与该订单号和手机号后 4 位匹配的订单。',
      lookup_rate_limited: '尝试次数过多，请在 {wait} 后重试。',
      lookup_bad_request: '请输入订单号和 4 位数字。',
      shop_not_found: '未找到该商家。',
      seconds: '{n} 秒',
      minutes: '{n} 分钟',
      // console
      console_title: '商家控制台',
      signin_title: '登录',
      signin_intro: '请输入商家 API 令牌。令牌只保存在本浏览器标签页中。',
      signin_token: 'API 令牌',
      signin_submit: '登录',
      signin_error: '令牌无效，请检查后重试。',
      signout: '退出登录',
      alerts_title: '告警看板',
      min_severity: '最低级别',
      live: '实时',
      reconnecting: '正在重新连接…',
      connecting: '正在连接…',
      no_alerts: '当前没有未处理的告警。',
      alert_opened: '开始于 {time}',
      alert_effective: '触发于 {time}',
      search_title: '查找订单',
      search_placeholder: '订单号、运单号或买家手机号',
      search_submit: '查找',
      search_empty: '没有匹配的订单。',
      search_bad_request: '请输入订单号、运单号或手机号。',
      query_kind: '匹配方式：{kind}',
      order_detail: '订单详情',
      close: '关闭',
      order_alerts: '未处理告警',
      order_not_found: '未找到该订单。',
      deadletters_title: '死信（近 7 天）',
      deadletters_total: '共 {n} 条',
      incidents_title: '网络异常事件（近 7 天）',
      incident_affected: '影响本店 {n} 个包裹（全平台 {total} 个）',
      incident_delay: '预计延误 {n} 小时',
      scorecards_title: '快递准时率（近 14 天）',
      delivered_n: '{n} 件已签收',
      p50_p90: '中位 {p50} 小时 · P90 {p90} 小时',
      no_data: '暂无数据。',
      platform_rate: '全平台 {pct}%',
      platform_legend: '竖线：全平台同一快递的准时率',
      load_failed: '加载失败。',
      stage: '阶段',
      cause: '原因',
      count: '数量',
    },
    en: {
      lang_name: 'English',
      toggle_to: '中文',
      app_name: 'Parcel tracking',
      loading: 'Loading…',
      retry: 'Try again',
      net_error: 'We could not reach the server. Check your connection and try again.',
      server_error: 'The service is temporarily unavailable. Please try again shortly.',
      link_expired: 'This link has expired — ask the shop for a new one or look up your order with its number.',
      link_invalid: 'This link is not valid — ask the shop for a new one or look up your order with its number.',
      link_other: 'This link cannot be opened — ask the shop for a new one or look up your order with its number.',
      no_orders: 'No orders yet.',
      order: 'Order',
      contact: 'Contact',
      waybill: 'Waybill',
      return_badge: 'Return',
      updated_at: 'Updated {time}',
      current_status: 'Current status',
      exception_title: 'There is a problem with this parcel',
      exception_since: 'Since {time}',
      carrier_says: 'The carrier says: {text}',
      expected_clear: 'Expected to clear by {time}',
      incident_note: 'This is a wider disruption in the carrier network affecting many parcels; we are following it closely.',
      prediction_title: 'Expected delivery',
      prediction_window: 'Between {earliest} and {latest}',
      promised: 'Promised by {time}',
      delivered_title: 'Delivered',
      delivered_at: 'Delivered {time}',
      signer: 'Signed by {name}',
      photo: 'See the delivery photo',
      timeline: 'Tracking history',
      no_events: 'No tracking events yet.',
      late_scan: 'reported late',
      live_on: 'Live updates on',
      lookup_title: 'Find your order',
      lookup_intro: 'Enter the order number and the last 4 digits of the phone number on the order.',
      lookup_order: 'Order number',
      lookup_last4: 'Last 4 digits of phone',
      lookup_submit: 'Find my order',
      lookup_busy: 'Looking…',
      lookup_not_found: 'No order matches that number and those digits.',
      lookup_rate_limited: 'Too many tries. Please wait {wait} and try again.',
      lookup_bad_request: 'Enter an order number and 4 digits.',
      shop_not_found: 'This shop could not be found.',
      seconds: '{n} s',
      minutes: '{n} min',
      console_title: 'Merchant console',
      signin_title: 'Sign in',
      signin_intro: 'Enter your merchant API token. It is kept in this browser tab only.',
      signin_token: 'API token',
      signin_submit: 'Sign in',
      signin_error: 'That token was not accepted. Check it and try again.',
      signout: 'Sign out',
      alerts_title: 'Alert board',
      min_severity: 'Minimum severity',
      live: 'Live',
      reconnecting: 'Reconnecting…',
      connecting: 'Connecting…',
      no_alerts: 'No open alerts.',
      alert_opened: 'Opened {time}',
      alert_effective: 'Fired {time}',
      search_title: 'Find an order',
      search_placeholder: 'Order number, waybill or buyer phone',
      search_submit: 'Search',
      search_empty: 'No order matches.',
      search_bad_request: 'Enter an order number, a waybill or a phone number.',
      query_kind: 'Matched by {kind}',
      order_detail: 'Order detail',
      close: 'Close',
      order_alerts: 'Open alerts',
      order_not_found: 'Order not found.',
      deadletters_title: 'Dead letters (last 7 days)',
      deadletters_total: '{n} in total',
      incidents_title: 'Incidents (last 7 days)',
      incident_affected: '{n} of your parcels affected ({total} platform-wide)',
      incident_delay: 'Expected delay {n} h',
      scorecards_title: 'On-time rate by carrier (last 14 days)',
      delivered_n: '{n} delivered',
      p50_p90: 'median {p50} h · p90 {p90} h',
      no_data: 'No data yet.',
      platform_rate: 'platform {pct}%',
      platform_legend: 'Tick: the whole platform’s on-time rate for that carrier',
      load_failed: 'Could not load.',
      stage: 'Stage',
      cause: 'Cause',
      count: 'Count',
    },
  };

  const STATUS = {
    'zh-CN': {
      PENDING: '暂无物流信息', INFO_RECEIVED: '商家已下单，等待揽收', PICKED_UP: '已揽收',
      IN_TRANSIT: '运输中', CUSTOMS: '清关中', OUT_FOR_DELIVERY: '派送中',
      AVAILABLE_FOR_PICKUP: '待取件', DELIVERY_ATTEMPT_FAILED: '派送未成功',
      DELIVERED: '已签收', EXCEPTION: '派送异常', RETURNING: '退回中', RETURNED: '已退回',
      CANCELLED: '已取消', EXPIRED: '追踪已过期', UNSPECIFIED: '状态未知',
    },
    en: {
      PENDING: 'Awaiting tracking info', INFO_RECEIVED: 'Label created, awaiting pickup',
      PICKED_UP: 'Picked up', IN_TRANSIT: 'In transit', CUSTOMS: 'In customs',
      OUT_FOR_DELIVERY: 'Out for delivery', AVAILABLE_FOR_PICKUP: 'Ready for pickup',
      DELIVERY_ATTEMPT_FAILED: 'Delivery attempt failed', DELIVERED: 'Delivered',
      EXCEPTION: 'Delivery problem', RETURNING: 'Returning to sender',
      RETURNED: 'Returned to sender', CANCELLED: 'Cancelled', EXPIRED: 'Tracking expired',
      UNSPECIFIED: 'Status unknown',
    },
  };

  const REASON = {
    'zh-CN': {
      UNKNOWN: '其他原因', ADDRESS: '地址问题', REFUSED: '收件人拒收',
      RECIPIENT_UNREACHABLE: '联系不上收件人', DAMAGED: '包裹破损', LOST: '包裹丢失',
      CUSTOMS_DOCUMENTS: '清关需要补充资料', CUSTOMS_DUTIES: '需要缴纳关税',
      WEATHER: '天气原因', CARRIER_DELAY: '快递公司延误', MISSORTED: '分拣错误',
      INTERCEPTED: '包裹被拦截', OUT_OF_SERVICE_AREA: '超出派送范围', NO_TRACE: '长时间无物流更新',
      CANCELLED: '已取消', HELD_AT_LOCKER: '已存入快递柜', SIGNED_BY_PROXY: '他人代签',
      RETURN_TO_SENDER: '退回寄件人', CUSTOMS_HOLD: '海关扣留', DELIVERY_ATTEMPT_FAILED: '派送未成功',
      // incident reasons
      EPIDEMIC_CONTROL: '防疫管控', HUB_CONGESTION: '转运中心拥堵', CARRIER_OUTAGE: '快递公司系统故障',
    },
    en: {
      UNKNOWN: 'Other reason', ADDRESS: 'Address problem', REFUSED: 'Refused by the recipient',
      RECIPIENT_UNREACHABLE: 'Recipient could not be reached', DAMAGED: 'Parcel damaged',
      LOST: 'Parcel lost', CUSTOMS_DOCUMENTS: 'Customs needs documents',
      CUSTOMS_DUTIES: 'Customs duties to pay', WEATHER: 'Weather', CARRIER_DELAY: 'Carrier delay',
      MISSORTED: 'Sent to the wrong depot', INTERCEPTED: 'Intercepted',
      OUT_OF_SERVICE_AREA: 'Outside the delivery area', NO_TRACE: 'No tracking update for a long time',
      CANCELLED: 'Cancelled', HELD_AT_LOCKER: 'Held at a parcel locker',
      SIGNED_BY_PROXY: 'Signed for by someone else', RETURN_TO_SENDER: 'Returned to sender',
      CUSTOMS_HOLD: 'Held by customs', DELIVERY_ATTEMPT_FAILED: 'Delivery attempt failed',
      EPIDEMIC_CONTROL: 'Epidemic control', HUB_CONGESTION: 'Hub congestion',
      CARRIER_OUTAGE: 'Carrier outage',
    },
  };

  // The five milestone steps of ParcelView.steps, in order.
  const STEPS = ['packed', 'collected', 'in_transit', 'out_for_delivery', 'delivered'];
  const STEP = {
    'zh-CN': { packed: '商家拣货', collected: '快递揽收', in_transit: '中转', out_for_delivery: '派送', delivered: '签收' },
    en: { packed: 'Packed by shop', collected: 'Picked up by carrier', in_transit: 'In transit', out_for_delivery: 'Out for delivery', delivered: 'Delivered' },
  };

  const ENUMS = {
    'zh-CN': {
      severity: { INFO: '提示', WARNING: '警告', CRITICAL: '严重' },
      alert_state: { OPENED: '新告警', ESCALATED: '已升级', RESOLVED: '已解决' },
      incident_state: { OPENED: '进行中', ESCALATED: '扩大中', UPDATED: '进行中', RESOLVED: '已结束' },
      query_kind: { order: '订单号', waybill: '运单号', phone: '手机号', none: '无' },
      confidence: { LOW: '参考', MEDIUM: '较可靠', HIGH: '可靠' },
    },
    en: {
      severity: { INFO: 'Info', WARNING: 'Warning', CRITICAL: 'Critical' },
      alert_state: { OPENED: 'Opened', ESCALATED: 'Escalated', RESOLVED: 'Resolved' },
      incident_state: { OPENED: 'Open', ESCALATED: 'Growing', UPDATED: 'Open', RESOLVED: 'Resolved' },
      query_kind: { order: 'order number', waybill: 'waybill', phone: 'phone', none: 'nothing' },
      confidence: { LOW: 'rough', MEDIUM: 'fair', HIGH: 'good' },
    },
  };

  const LANGS = ['zh-CN', 'en'];

  /** "zh", "zh-TW", "ZH-cn" → "zh-CN"; "en-GB" → "en"; others → "". */
  function normalize(tag) {
    const l = String(tag || '').trim().toLowerCase();
    if (l.startsWith('zh')) return 'zh-CN';
    if (l.startsWith('en')) return 'en';
    return '';
  }

  /** `?lang=` wins, then the view's locale, then the browser's language. */
  function pickLang(viewLocale) {
    const q = normalize(new URLSearchParams(location.search).get('lang'));
    if (q) return q;
    const v = normalize(viewLocale);
    if (v) return v;
    return normalize(navigator.language) === 'zh-CN' ? 'zh-CN' : 'en';
  }

  /** Applies a language to the document: `<html lang>` and `?lang=` (no reload). */
  function applyLang(lang) {
    document.documentElement.lang = lang;
    const url = new URL(location.href);
    if (url.searchParams.get('lang') !== lang) {
      url.searchParams.set('lang', lang);
      history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    }
  }

  function other(lang) {
    return lang === 'zh-CN' ? 'en' : 'zh-CN';
  }

  function fill(s, vars) {
    if (!vars) return s;
    return s.replace(/\{(\w+)\}/g, (m, k) => (k in vars && vars[k] != null ? String(vars[k]) : m));
  }

  /** UI string `key` in `lang`, `{placeholders}` filled from `vars`. */
  function t(lang, key, vars) {
    const d = DICT[lang] || DICT.en;
    const s = key in d ? d[key] : key in DICT.en ? DICT.en[key] : key;
    return fill(s, vars);
  }

  function lookup(table, lang, key, fallback) {
    const k = String(key || '').replace(/^(STATUS|REASON|SEVERITY|ALERT_STATE|INCIDENT_STATE|INCIDENT_REASON)_/, '');
    const d = table[lang] || table.en;
    if (k in d) return d[k];
    return fallback !== undefined ? fallback : k;
  }

  const status = (lang, s) => lookup(STATUS, lang, s || 'UNSPECIFIED', lookup(STATUS, lang, 'UNSPECIFIED'));
  const reason = (lang, r) => (r && r !== 'UNSPECIFIED' ? lookup(REASON, lang, r) : '');
  const step = (lang, key) => lookup(STEP, lang, key);
  const enumWord = (lang, kind, v) => {
    const d = (ENUMS[lang] || ENUMS.en)[kind] || {};
    const k = String(v || '').replace(/^(SEVERITY|ALERT_STATE|INCIDENT_STATE|PREDICTION_CONFIDENCE)_/, '');
    return k in d ? d[k] : k;
  };

  const fmtCache = new Map();
  function formatter(lang, tz, kind) {
    const key = lang + '|' + (tz || '') + '|' + kind;
    let f = fmtCache.get(key);
    if (f) return f;
    const opts = kind === 'date'
      ? { year: 'numeric', month: 'short', day: 'numeric', weekday: 'short' }
      : { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
    if (kind === 'datetime-y') opts.year = 'numeric';
    try {
      f = new Intl.DateTimeFormat(lang, tz ? Object.assign({ timeZone: tz }, opts) : opts);
    } catch (e) {
      // An unknown zone name: fall back to the browser's zone.
      f = new Intl.DateTimeFormat(lang, opts);
    }
    fmtCache.set(key, f);
    return f;
  }

  function parse(iso) {
    if (!iso) return null;
    const d = new Date(iso);
    return isNaN(d.getTime()) ? null : d;
  }

  /** Date and time of an RFC 3339 instant in `tz` (or the browser's zone); "" for null. */
  function time(lang, tz, iso) {
    const d = parse(iso);
    if (!d) return '';
    const sameYear = d.getFullYear() === new Date().getFullYear();
    return formatter(lang, tz, sameYear ? 'datetime' : 'datetime-y').format(d);
  }

  /** The calendar day of an instant in `tz`. */
  function date(lang, tz, iso) {
    const d = parse(iso);
    return d ? formatter(lang, tz, 'date').format(d) : '';
  }

  function duration(lang, seconds) {
    const n = Math.max(1, Math.ceil(Number(seconds) || 0));
    return n >= 120 ? t(lang, 'minutes', { n: Math.ceil(n / 60) }) : t(lang, 'seconds', { n });
  }

  window.TrackstreamI18n = {
    LANGS, STEPS, DICT, STATUS, REASON, STEP, ENUMS,
    normalize, pickLang, applyLang, other, t, status, reason, step, enumWord, time, date, duration, parse,
  };
})();
