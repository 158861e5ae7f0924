// Merchant console checks, in headless Chromium on a desktop-sized page.
//
// env: BASE_URL, MERCHANT_TOKEN, WRONG_TOKEN, ALERT_REQUEST, ALERT_EXPECT, PHONE,
//      PHONE_ORDER_ID, FORBIDDEN_TEXT, ARTIFACTS.
// Exit 0 only when every check passed; one "ok - …" line per check.
import {
  launch, newDesktopPage, screenshot, fire, waitFor, fail, pass, env, jsonEnv, sel, close, checkPageErrors, showsPhone,
} from './lib.mjs';

const BASE_URL = env('BASE_URL').replace(/\/+$/, '');
const MERCHANT_TOKEN = env('MERCHANT_TOKEN');
const WRONG_TOKEN = env('WRONG_TOKEN');
const ALERT_REQUEST = env('ALERT_REQUEST');
const ALERT_EXPECT = jsonEnv('ALERT_EXPECT');
const PHONE = env('PHONE');
const PHONE_ORDER_ID = env('PHONE_ORDER_ID');
const FORBIDDEN_TEXT = jsonEnv('FORBIDDEN_TEXT', []);

const visible = (page, s) => page.locator(s).first().isVisible();

/** Neither the raw phone (in any spacing) nor FORBIDDEN_TEXT in the page's text or HTML.
 * Input values are not part of either, so the search box itself does not count. */
async function checkPrivacy(page, where) {
  const text = await page.evaluate(() => document.body.innerText);
  const html = await page.content();
  if (showsPhone(text, PHONE)) return fail(`${where}: the raw phone number appears in the page text`);
  if (showsPhone(html, PHONE)) return fail(`${where}: the raw phone number appears in the page HTML`);
  for (const f of FORBIDDEN_TEXT) {
    if (f && (text.includes(f) || html.includes(f))) return fail(`${where}: forbidden text ${JSON.stringify(f)} appears in the page`);
  }
  pass(`${where}: no raw phone, none of ${FORBIDDEN_TEXT.length} forbidden strings`);
}

async function signIn(page, token) {
  await page.fill(sel('signin-token'), token);
  await page.click(sel('signin-submit'));
}

async function main() {
  await launch();
  const page = await newDesktopPage();
  await page.goto(BASE_URL + '/console', { waitUntil: 'domcontentloaded' });
  await waitFor(() => visible(page, sel('signin-token')), 'the sign-in form', 15000);

  // sign-in: a wrong token is refused, the right one signs in
  await signIn(page, WRONG_TOKEN);
  await waitFor(() => visible(page, sel('signin-error')), 'signin-error after a wrong token', 15000);
  if (await visible(page, sel('merchant-name'))) return fail('a wrong token shows a merchant name');
  pass('wrong token: signin-error');
  await signIn(page, MERCHANT_TOKEN);
  await waitFor(async () => (await visible(page, sel('merchant-name'))) && (await page.locator(sel('merchant-name')).innerText()).trim(), 'the merchant name after signing in', 15000);
  pass(`right token: signed in as ${(await page.locator(sel('merchant-name')).innerText()).trim()}`);
  if (await visible(page, sel('signin-error'))) return fail('signin-error still shown after signing in');
  const stored = await page.evaluate((t) => ({
    session: Object.keys(sessionStorage).some((k) => sessionStorage.getItem(k) === t),
    local: Object.keys(localStorage).some((k) => (localStorage.getItem(k) || '').includes(t)),
    cookie: document.cookie.includes(t),
  }), MERCHANT_TOKEN);
  if (!stored.session || stored.local || stored.cookie) return fail(`the token must be in sessionStorage only (${JSON.stringify(stored)})`);
  pass('token kept in sessionStorage only');

  // alert board: live, and a new alert shows up without a reload
  await waitFor(() => visible(page, sel('alert-board')), 'the alert board', 15000);
  await waitFor(() => page.locator(sel('live-status', { state: 'live' })).count(), 'live-status "live"', 30000);
  pass('alert board open, live-status live');
  await checkPrivacy(page, 'alert board');
  const rowSel = sel('alert-row', { waybill: ALERT_EXPECT.waybill });
  const before = await page.locator(rowSel).count();
  await fire(ALERT_REQUEST);
  await waitFor(() => visible(page, rowSel), `an alert row for waybill ${ALERT_EXPECT.waybill}`, 30000);
  const row = await page.locator(rowSel).first().evaluate((r) => ({ ...r.dataset }));
  if (!row.alertId || !['INFO', 'WARNING', 'CRITICAL'].includes(row.severity) || !row.state) return fail(`alert row lacks its attributes: ${JSON.stringify(row)}`);
  pass(`live alert: ${row.alertId} (${row.severity}, ${row.state}) for ${ALERT_EXPECT.waybill}` + (before ? ' (note: a row for it was on the board before the request)' : ''));
  await screenshot(page, 'console-board.png');

  // severity filter: CRITICAL keeps only critical rows, and the board goes live again
  await page.selectOption(sel('severity-filter'), 'CRITICAL');
  await waitFor(() => page.evaluate(() => [...document.querySelectorAll('[data-testid="alert-row"]')].every((r) => r.dataset.severity === 'CRITICAL' || r.dataset.state === 'RESOLVED')),
    'only CRITICAL rows after filtering', 15000);
  await waitFor(() => page.locator(sel('live-status', { state: 'live' })).count(), 'live-status "live" after changing the filter', 30000);
  pass('severity filter CRITICAL: only critical rows, live again');
  await page.selectOption(sel('severity-filter'), 'INFO');
  await waitFor(() => visible(page, rowSel), async () => {
    // Say what the API answered, to tell a page bug from a server one.
    const listed = await page.evaluate(async () => {
      const token = sessionStorage.getItem('trackstream.merchantToken');
      const r = await fetch('/api/v1/merchant/alerts?min_severity=INFO', { headers: { Authorization: 'Bearer ' + token } });
      const asked = performance.getEntriesByType('resource')
        .filter((e) => e.name.includes('/api/v1/merchant/alerts'))
        .map((e) => `${e.name.split('/api/v1/merchant/')[1]} @${Math.round(e.startTime)}→${Math.round(e.responseEnd)} ${e.responseStatus}`);
      return r.status + ' ' + (await r.text()).slice(0, 120) + ' | requests: ' + asked.join('; ');
    });
    return `the alert row for ${ALERT_EXPECT.waybill} back at minimum severity INFO (the API lists: ${listed})`;
  }, 15000);
  await waitFor(() => page.locator(sel('live-status', { state: 'live' })).count(), 'live-status "live" at INFO', 30000);
  pass('severity filter INFO: the alert is back');

  // search by the buyer's phone
  await page.fill(sel('search-input'), PHONE);
  await page.click(sel('search-submit'));
  const resultSel = sel('search-result', { orderId: PHONE_ORDER_ID });
  await waitFor(async () => (await visible(page, resultSel)) || ((await visible(page, sel('search-empty'))) && 'empty'), `a search result for order ${PHONE_ORDER_ID}`, 15000);
  if (!(await visible(page, resultSel))) return fail(`searching the phone found nothing (search-empty shown), expected order ${PHONE_ORDER_ID}`);
  pass(`phone search finds order ${PHONE_ORDER_ID}`);
  await checkPrivacy(page, 'search results');
  await screenshot(page, 'console-search.png');

  // order detail
  await page.locator(resultSel).first().click();
  const detailSel = sel('order-detail', { orderId: PHONE_ORDER_ID });
  await waitFor(async () => (await visible(page, detailSel)) && page.locator(`${detailSel} ${sel('order', { orderId: PHONE_ORDER_ID })}`).count(),
    `the order detail of ${PHONE_ORDER_ID}`, 15000);
  const parcels = await page.locator(`${detailSel} ${sel('parcel')}`).count();
  pass(`order detail of ${PHONE_ORDER_ID} (${parcels} parcel(s))`);
  await checkPrivacy(page, 'order detail');
  await page.locator(detailSel).scrollIntoViewIfNeeded();
  await screenshot(page, 'console-order.png');

  // sign out forgets the token
  await page.click(sel('signout'));
  await waitFor(() => visible(page, sel('signin-token')), 'the sign-in form after signing out', 5000);
  const left = await page.evaluate((t) => Object.keys(sessionStorage).some((k) => sessionStorage.getItem(k) === t), MERCHANT_TOKEN);
  if (left) return fail('the token is still in sessionStorage after signing out');
  pass('sign-out forgets the token');

  checkPageErrors('console');
  console.log('all console checks passed');
  await close();
}

process.on('unhandledRejection', (e) => fail('unexpected error: ' + (e && e.stack ? e.stack : e)));
main().catch((e) => fail('unexpected error: ' + (e && e.stack ? e.stack : e)));
