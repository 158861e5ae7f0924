// Buyer tracking page checks, in headless Chromium on a zh-CN phone.
//
// env: BASE_URL, BUYER_LINK, EXPECT_ORDERS, SCAN_REQUEST, SCAN_EXPECT, BAD_LINKS,
//      FORBIDDEN_TEXT, ARTIFACTS; optional LOOKUP_URL + LOOKUP_ORDER_ID + LOOKUP_LAST4.
// Exit 0 only when every check passed; one "ok - …" line per check.
import {
  launch, newPhonePage, screenshot, fire, waitFor, fail, pass, env, jsonEnv, sel, close, checkPageErrors,
} from './lib.mjs';

const BASE_URL = env('BASE_URL').replace(/\/+$/, '');
const BUYER_LINK = env('BUYER_LINK');
const EXPECT_ORDERS = jsonEnv('EXPECT_ORDERS');
const SCAN_REQUEST = env('SCAN_REQUEST');
const SCAN_EXPECT = jsonEnv('SCAN_EXPECT');
const BAD_LINKS = jsonEnv('BAD_LINKS', []);
const FORBIDDEN_TEXT = jsonEnv('FORBIDDEN_TEXT', []);
const LOOKUP_URL = process.env.LOOKUP_URL || '';
const LOOKUP_ORDER_ID = process.env.LOOKUP_ORDER_ID || '';
const LOOKUP_LAST4 = process.env.LOOKUP_LAST4 || '';

const abs = (u) => new URL(u, BASE_URL + '/').href;
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** What the page shows: order ids, and per waybill the timeline's statuses. */
function snapshot(page) {
  return page.evaluate(() => {
    const orders = [...document.querySelectorAll('[data-testid="order"]')].map((o) => ({
      order_id: o.dataset.orderId,
      parcels: [...o.querySelectorAll('[data-testid="parcel"]')].map((p) => ({
        waybill: p.dataset.waybill,
        status: p.dataset.status,
        statuses: [...p.querySelectorAll('[data-testid="event"]')].map((e) => e.dataset.status),
      })),
    }));
    return { orders, lang: document.documentElement.lang, shop: (document.querySelector('[data-testid="shop-name"]') || {}).textContent || '' };
  });
}

/** None of FORBIDDEN_TEXT in the page's HTML or text. */
async function checkForbidden(page, where) {
  const html = await page.content();
  const text = await page.evaluate(() => document.body.innerText);
  for (const f of FORBIDDEN_TEXT) {
    if (!f) continue;
    if (html.includes(f) || text.includes(f)) return fail(`${where}: forbidden text ${JSON.stringify(f)} appears in the page`);
  }
  pass(`${where}: none of ${FORBIDDEN_TEXT.length} forbidden strings in the page`);
}

/** The expected orders, exactly, with each parcel's timeline exactly (newest first). */
function diff(snap) {
  const want = EXPECT_ORDERS.map((o) => o.order_id).slice().sort();
  const got = snap.orders.map((o) => o.order_id).slice().sort();
  if (!same(want, got)) return `orders ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`;
  for (const o of EXPECT_ORDERS) {
    const shown = snap.orders.find((x) => x.order_id === o.order_id);
    for (const p of o.parcels || []) {
      const sp = shown.parcels.find((x) => x.waybill === p.waybill);
      if (!sp) return `order ${o.order_id}: no parcel ${p.waybill} (shown: ${shown.parcels.map((x) => x.waybill).join(', ')})`;
      if (!same(sp.statuses, p.statuses)) return `order ${o.order_id} parcel ${p.waybill}: timeline ${JSON.stringify(sp.statuses)}, expected ${JSON.stringify(p.statuses)}`;
    }
    if (o.parcels && shown.parcels.length !== o.parcels.length) return `order ${o.order_id}: ${shown.parcels.length} parcels shown, expected ${o.parcels.length}`;
  }
  return '';
}

async function main() {
  await launch();
  const page = await newPhonePage();

  // (a) the link opens the buyer's orders, in zh-CN
  await page.goto(abs(BUYER_LINK), { waitUntil: 'domcontentloaded' });
  let lastDiff = 'nothing rendered';
  await waitFor(async () => {
    const snap = await snapshot(page);
    lastDiff = snap.shop ? diff(snap) : 'no shop name';
    return !lastDiff;
  }, () => `the expected orders and timelines (${lastDiff})`, 15000);
  const snap = await snapshot(page);
  if (!snap.shop.trim()) return fail('shop name is empty');
  pass(`shop name shown: ${snap.shop.trim()}`);
  pass(`exactly the expected orders: ${EXPECT_ORDERS.map((o) => o.order_id).join(', ')}`);
  pass(`every parcel's timeline matches, newest first (${EXPECT_ORDERS.reduce((n, o) => n + (o.parcels || []).length, 0)} parcels)`);
  if (snap.lang !== 'zh-CN') return fail(`<html lang> is ${JSON.stringify(snap.lang)}, expected zh-CN`);
  pass('html lang is zh-CN');
  await checkForbidden(page, 'buyer page');
  await screenshot(page, 'buyer-zh.png');

  // (b) a scan arrives live, without a reload
  const pageId = await page.evaluate(() => window.__trackstreamPageId);
  if (!pageId) return fail('window.__trackstreamPageId is not set');
  await fire(SCAN_REQUEST);
  const parcelSel = sel('parcel', { waybill: SCAN_EXPECT.waybill });
  let newest = '';
  await waitFor(async () => {
    newest = await page.evaluate((s) => {
      const p = document.querySelector(s);
      const e = p && p.querySelector('[data-testid="event"]');
      return e ? e.dataset.status : '';
    }, parcelSel);
    return newest === SCAN_EXPECT.status;
  }, () => `parcel ${SCAN_EXPECT.waybill}'s newest event to be ${SCAN_EXPECT.status} (it is ${newest || 'none'})`, 30000);
  pass(`live update: ${SCAN_EXPECT.waybill} now shows ${SCAN_EXPECT.status} first`);
  const pageIdAfter = await page.evaluate(() => window.__trackstreamPageId);
  if (pageIdAfter !== pageId) return fail(`the page reloaded (page id ${pageId} → ${pageIdAfter})`);
  pass('no reload (page id unchanged)');
  await checkForbidden(page, 'buyer page after the live update');
  await screenshot(page, 'buyer-live.png');

  // (c) the language toggle switches to English in place
  await page.click(sel('lang-toggle'));
  await waitFor(() => page.evaluate(() => document.documentElement.lang === 'en'), 'html lang "en" after the toggle', 5000);
  pass('html lang is en after the toggle');
  const word = await page.evaluate((s) => window.TrackstreamI18n && window.TrackstreamI18n.status('en', s), SCAN_EXPECT.status);
  if (!word) return fail(`no English word for ${SCAN_EXPECT.status} in i18n.js`);
  await waitFor(() => page.evaluate((w) => document.body.innerText.includes(w), word), `the English status "${word}" on the page`, 5000);
  pass(`English status "${word}" shown`);
  if (!new URL(page.url()).searchParams.get('lang')) return fail(`?lang= not set after the toggle (${page.url()})`);
  if ((await page.evaluate(() => window.__trackstreamPageId)) !== pageId) return fail('the toggle reloaded the page');
  pass('toggle kept the page (no reload) and set ?lang=');
  await screenshot(page, 'buyer-en.png');

  // (d) expired and invalid links: a friendly message, no order at all
  const orderIds = EXPECT_ORDERS.map((o) => o.order_id);
  const shots = new Map();
  for (const bad of BAD_LINKS) {
    await page.goto(abs(bad.url), { waitUntil: 'domcontentloaded' });
    const errSel = sel('link-error', { kind: bad.kind });
    try {
      await page.locator(errSel).waitFor({ state: 'visible', timeout: 15000 });
    } catch (e) {
      const shown = await page.evaluate(() => [...document.querySelectorAll('[data-testid="link-error"]')].map((x) => x.dataset.kind).join(',') || 'none');
      return fail(`${bad.url}: no visible link-error of kind ${bad.kind} (link-error kinds shown: ${shown})`);
    }
    const orders = await page.locator(sel('order')).count();
    if (orders) return fail(`${bad.url}: ${orders} order element(s) shown beside the link error`);
    const html = await page.content();
    const leaked = orderIds.filter((id) => html.includes(id));
    if (leaked.length) return fail(`${bad.url}: order id(s) ${leaked.join(', ')} in the page`);
    pass(`${bad.kind} link: link-error shown, no order markup, no order id`);
    const n = (shots.get(bad.kind) || 0) + 1;
    shots.set(bad.kind, n);
    await screenshot(page, n === 1 ? `link-${bad.kind}.png` : `link-${bad.kind}-${n}.png`);
  }

  // optional: the lookup page
  if (LOOKUP_URL && LOOKUP_ORDER_ID && LOOKUP_LAST4) await lookup(page);

  checkPageErrors('buyer pages');
  console.log('all buyer checks passed');
  await close();
}

async function lookup(page) {
  await page.goto(abs(LOOKUP_URL), { waitUntil: 'domcontentloaded' });
  await waitFor(() => page.locator(sel('shop-name')).isVisible(), 'the shop name on the lookup page', 15000);
  pass('lookup page shows the shop');
  const wrong = String((Number(LOOKUP_LAST4) + 1111) % 10000).padStart(4, '0');
  await page.fill(sel('lookup-order'), LOOKUP_ORDER_ID);
  await page.fill(sel('lookup-last4'), wrong);
  await page.click(sel('lookup-submit'));
  await waitFor(() => page.locator(sel('lookup-error', { kind: 'not_found' })).isVisible(), 'lookup-error not_found for wrong digits', 15000);
  if (!/\/s\//.test(page.url())) return fail(`wrong digits left the lookup page (${page.url()})`);
  pass('wrong digits: not_found');
  await screenshot(page, 'lookup-not-found.png');
  await page.fill(sel('lookup-last4'), LOOKUP_LAST4);
  await page.click(sel('lookup-submit'));
  try {
    await page.waitForURL(/\/t\/[^/]+/, { timeout: 15000 });
  } catch (e) {
    const err = await page.evaluate(() => (document.querySelector('[data-testid="lookup-error"]') || {}).textContent || 'none');
    return fail(`right digits did not lead to a /t/ page (still ${page.url()}, message: ${err})`);
  }
  try {
    await page.locator(sel('order', { orderId: LOOKUP_ORDER_ID })).waitFor({ state: 'visible', timeout: 15000 });
  } catch (e) {
    return fail(`the /t/ page after the lookup does not show order ${LOOKUP_ORDER_ID}`);
  }
  pass(`right digits: tracking page of order ${LOOKUP_ORDER_ID}`);
  await checkForbidden(page, 'tracking page after the lookup');
  await screenshot(page, 'lookup.png');
}

process.on('unhandledRejection', (e) => fail('unexpected error: ' + (e && e.stack ? e.stack : e)));
main().catch((e) => fail('unexpected error: ' + (e && e.stack ? e.stack : e)));
