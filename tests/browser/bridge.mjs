// Remote control of a headless Debian chromium for the Python tests (tests/browser_driver.py).
//
// One JSON request per stdin line, one JSON answer per stdout line: {"id", "ok", "value"|"error"}.
// The Python test decides what to do and asserts; this file only performs browser actions.
// Every request the page makes is recorded, and any that would leave 127.0.0.1 is blocked.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Playwright gives each launch a new, empty profile directory of its own (--user-data-dir).
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

let context = null;
let page = null;
let requests = [];
let problems = [];

const LOCAL = new Set(['127.0.0.1']);

async function newPage({ width = 1280, height = 900 }) {
  if (context) await context.close();
  requests = [];
  problems = [];
  context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    const local = LOCAL.has(url.hostname) || url.protocol === 'data:' || url.protocol === 'blob:';
    requests.push({ url: route.request().url(), method: route.request().method(), blocked: !local });
    return local ? route.continue() : route.abort('blockedbyclient');
  });
  context.setDefaultTimeout(15000);
  page = await context.newPage();
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console: ${msg.text()}`); });
  return true;
}

const ops = {
  new_page: newPage,
  goto: async ({ url }) => { const r = await page.goto(url, { waitUntil: 'load' }); return r ? r.status() : null; },
  url: async () => page.url(),
  fill: async ({ sel, value }) => { await page.locator(sel).fill(value); return true; },
  click: async ({ sel }) => { await page.locator(sel).click(); return true; },
  select: async ({ sel, value }) => { await page.locator(sel).selectOption(value); return true; },
  text: async ({ sel }) => page.locator(sel).innerText(),
  texts: async ({ sel }) => page.locator(sel).allInnerTexts(),
  count: async ({ sel }) => page.locator(sel).count(),
  visible: async ({ sel }) => page.locator(sel).isVisible(),
  wait_visible: async ({ sel, timeout_ms = 15000 }) => {
    await page.locator(sel).waitFor({ state: 'visible', timeout: timeout_ms }); return true;
  },
  wait_text: async ({ sel, pattern, timeout_ms = 15000 }) => {
    const re = new RegExp(pattern);
    const handle = await page.waitForFunction(([s, p]) => {
      const el = document.querySelector(s);
      return el && new RegExp(p).test(el.innerText) ? el.innerText : false;
    }, [sel, re.source], { timeout: timeout_ms, polling: 100 });
    return handle.jsonValue();
  },
  wait_js: async ({ expr, timeout_ms = 15000 }) => {
    // Polled from here: waitForFunction(string) evaluates the string inside the page, which the
    // dashboard's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
    const deadline = Date.now() + timeout_ms;
    for (;;) {
      const value = await page.evaluate(expr).catch(() => null);  // a navigation may be under way
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeout_ms} ms waiting for: ${expr}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  },
  eval: async ({ expr }) => page.evaluate(expr),
  screenshot: async ({ path, full_page = true }) => {
    await page.evaluate(() => window.scrollTo(0, 0));  // the sticky header belongs at the top of the picture
    await page.screenshot({ path, fullPage: full_page });
    return path;
  },
  requests: async () => requests,
  problems: async () => problems,
  cookies: async () => context.cookies(),
  clipboard: async () => page.evaluate(() => navigator.clipboard.readText()),
};

const lines = createInterface({ input: process.stdin });
console.log(JSON.stringify({ ready: true, version: browser.version() }));
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, op, ...args } = JSON.parse(line);
  try {
    if (!(op in ops)) throw new Error(`unknown op ${op}`);
    const value = await ops[op](args);
    console.log(JSON.stringify({ id, ok: true, value: value === undefined ? null : value }));
  } catch (err) {
    console.log(JSON.stringify({ id, ok: false, error: String(err && err.message || err) }));
  }
}
await browser.close();
