// Shared helpers of the browser checks: Debian's Chromium through playwright-core
// (no browser download), screenshots into $ARTIFACTS, request files, polling waits.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const ARTIFACTS = process.env.ARTIFACTS || 'artifacts';
let browser = null;
let currentPage = null;
const pageErrors = [];

/** Headless Chromium (Debian's /usr/bin/chromium unless $CHROMIUM). */
export async function launch() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  return browser;
}

/** A phone-sized page (390x844, touch, zh-CN). */
export async function newPhonePage(b = browser, opts = {}) {
  return newPage(b, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, locale: 'zh-CN', ...opts });
}

/** A desktop page (1280x900, zh-CN unless told). */
export async function newDesktopPage(b = browser, opts = {}) {
  return newPage(b, { viewport: { width: 1280, height: 900 }, locale: 'zh-CN', ...opts });
}

async function newPage(b, contextOptions) {
  const context = await b.newContext(contextOptions);
  const page = await context.newPage();
  // CSP violations and uncaught errors are failures of the page, collected here.
  page.on('console', (msg) => {
    const text = msg.text();
    if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(text)) pageErrors.push('CSP: ' + text);
  });
  page.on('pageerror', (err) => pageErrors.push('page error: ' + (err && err.stack ? err.stack : String(err))));
  currentPage = page;
  return page;
}

/** Makes `page` the one fail() screenshots. */
export function setPage(page) {
  currentPage = page;
}

/** Fails when the pages logged a CSP violation or threw. */
export function checkPageErrors(what) {
  if (pageErrors.length) return fail(`${what}: the page reported errors:\n  ${pageErrors.join('\n  ')}`);
  pass(`${what}: no CSP violation, no uncaught error`);
}

export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  // From the top, so a sticky header is drawn once, at the top of the full-page image.
  await page.evaluate(() => window.scrollTo(0, 0)).catch(() => {});
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

export function pass(msg) {
  console.log('ok - ' + msg);
}

/** Failure: a screenshot of the current page, the message, exit 1. */
export async function fail(msg) {
  console.error('FAIL - ' + msg);
  if (currentPage && !currentPage.isClosed()) {
    try {
      const file = await screenshot(currentPage, 'failure-' + Date.now() + '.png');
      console.error('       screenshot: ' + file + ' (url ' + currentPage.url() + ')');
    } catch (e) {
      console.error('       (no screenshot: ' + e.message + ')');
    }
  }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

/** Polls `fn` (sync or async) until it returns a truthy value, or fails after `ms`;
 * `what` (a string, or a function giving one at failure time) says what was awaited. */
export async function waitFor(fn, what, ms = 10000, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const desc = typeof what === 'function' ? await what() : what;
      return fail(`timed out after ${ms} ms waiting for ${desc}` + (last ? ` (last error: ${last.message})` : ''));
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Sends the request described by a JSON file {url, method, headers, body}; asserts a 2xx. */
export async function fire(requestFile) {
  let req;
  try {
    req = JSON.parse(fs.readFileSync(requestFile, 'utf8'));
  } catch (e) {
    return fail(`cannot read request file ${requestFile}: ${e.message}`);
  }
  let res;
  try {
    res = await fetch(req.url, { method: req.method || 'POST', headers: req.headers || {}, body: req.body == null ? undefined : String(req.body) });
  } catch (e) {
    return fail(`request ${req.method || 'POST'} ${req.url} failed: ${e.message}`);
  }
  const text = await res.text().catch(() => '');
  if (res.status < 200 || res.status > 299) return fail(`request ${req.method || 'POST'} ${req.url} answered ${res.status}: ${text.slice(0, 300)}`);
  pass(`fired ${req.method || 'POST'} ${req.url} → ${res.status}`);
  return { status: res.status, text };
}

export function env(name) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    console.error(`FAIL - environment variable ${name} is required`);
    process.exit(1);
  }
  return v;
}

export function jsonEnv(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback;
    return env(name);
  }
  try {
    return JSON.parse(v);
  } catch (e) {
    console.error(`FAIL - ${name} is not valid JSON: ${e.message}`);
    process.exit(1);
  }
}

/** A CSS attribute selector: sel('alert-row', {waybill: 'SF1'}) → [data-testid="alert-row"][data-waybill="SF1"] */
export function sel(testid, attrs = {}) {
  let s = `[data-testid=${JSON.stringify(testid)}]`;
  for (const [k, v] of Object.entries(attrs)) s += `[data-${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}=${JSON.stringify(String(v))}]`;
  return s;
}

/** Digits only. */
export const digits = (s) => String(s).replace(/\D/g, '');

/** A phone's national digits: "+86 138 1234 5678" → "13812345678". */
export function phoneDigits(s) {
  const d = digits(s);
  return d.length === 13 && d.startsWith('86') ? d.slice(2) : d.length === 15 && d.startsWith('0086') ? d.slice(4) : d;
}

/** Whether `text` shows the phone: any run of digits (at most two spaces, dashes, dots
 * or brackets between two digits, no line breaks) whose digits contain the phone's
 * national digits. */
export function showsPhone(text, phone) {
  const want = phoneDigits(phone);
  if (want.length < 7) return false;
  const runs = String(text).match(/\+?\d(?:[ \-.()\u00a0]{0,2}\d)*/g) || [];
  return runs.some((r) => digits(r).includes(want));
}

export async function close() {
  if (browser) await browser.close().catch(() => {});
  browser = null;
}
