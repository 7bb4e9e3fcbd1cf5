// End-to-end test of the hookd dashboard in headless Chromium (playwright-core, the
// system's /usr/bin/chromium: no browser download). Run by scripts/check-dashboard, which
// starts hookd and the switchable receiver (receiver.py) and seeds them:
//
//   endpoint "Orders & payments"  -> the receiver (answers 500 until switched to ok)
//   endpoint "Invoice archive"    -> the receiver's /always-ok path
//   endpoint "Legacy CRM"         -> disabled by an operator
//   event ORDER_EVENT (order.paid) and BULK_COUNT events of BULK_EVENT_TYPE to "Orders",
//   all failed (HOOKD_RETRY_SCHEDULE= : failures are final)
//
// Then the event-type catalog (two types added through the API): its page, and the
// pick-list with descriptions in the new-endpoint form.
// Then it manages an endpoint in the page (create and see its secret once, edit, a stale
// edit refused with 412, disable and enable, rotate, delete) and opens the portal
// (/portal#token=...): the token leaves the address bar, the summary shows; a tenant's
// portal link (POST /v1/tenants/{id}/tokens) shows only that tenant's endpoints and
// deliveries, resends one, and shows the catalog and its pick-list; with a token, /portal#token=wrong shows the expired page.
//
// Environment: HOOKD_URL, RECEIVER_URL, ORDER_EVENT, BULK_EVENT_TYPE, BULK_COUNT,
// SCREENSHOT_DIR, PASS_NAME; ADMIN_TOKEN when hookd runs with HOOKD_ADMIN_TOKEN (the page
// must ask for it); CHROMIUM (default /usr/bin/chromium).
//
// Exits non-zero on the first failure, after saving failure-PASS_NAME.png.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env('HOOKD_URL');
const RECEIVER = env('RECEIVER_URL');
const ORDER_EVENT = env('ORDER_EVENT');
const BULK_EVENT_TYPE = env('BULK_EVENT_TYPE');
const BULK_COUNT = Number(env('BULK_COUNT'));
const SHOTS = env('SCREENSHOT_DIR');
const PASS = env('PASS_NAME', 'open');
const TOKEN = env('ADMIN_TOKEN', '');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const TIMEOUT = 20_000;
const TIME_ZONE = 'Asia/Seoul'; // not the machine's: times must follow the viewer's zone

// --- helpers -------------------------------------------------------------------------

async function api(path, init = {}) {
  const headers = { ...(init.headers || {}) };
  if (TOKEN) headers.authorization = `Bearer ${TOKEN}`;
  const res = await fetch(BASE + path, { ...init, headers });
  const body = await res.json();
  assert.ok(res.ok, `${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

async function receiver(mode) {
  const res = await fetch(`${RECEIVER}/_control/${mode}`, { method: 'POST' });
  assert.equal(await res.text(), mode);
}

// The pages' screenshots come from the pass without a token (the other pass adds token-prompt).
async function pageShot(name) {
  if (!TOKEN) await shot(page, name);
}

let passed = 0;
async function step(name, fn) {
  const started = Date.now();
  await fn();
  passed++;
  console.log(`ok ${passed} - [${PASS}] ${name} (${Date.now() - started} ms)`);
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`   screenshot: ${path}`);
}

// --- the browser ---------------------------------------------------------------------

const profile = mkdtempSync(join(tmpdir(), 'hookd-dashboard-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1366, height: 768 }, // a laptop screen
  locale: 'en-US',
  timezoneId: TIME_ZONE,
});
context.setDefaultTimeout(TIMEOUT);
const page = context.pages()[0] || (await context.newPage());

const problems = [];
const origin = new URL(BASE).origin;
// A status the current step provokes on purpose (the browser logs every non-2xx fetch).
let expectedStatus = null;
function watchProblems(p) {
  p.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  p.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const url = msg.location().url || '';
    // The 401s of the token pass are expected.
    if (TOKEN && /status of 401/.test(msg.text())) return;
    if (expectedStatus && msg.text().includes(`status of ${expectedStatus}`)) return;
    if (url.endsWith('/favicon.ico')) return;
    problems.push(`console error: ${msg.text()} (${url})`);
  });
  p.on('request', (req) => {
    const url = req.url();
    if (!url.startsWith(`${origin}/`)) problems.push(`request outside hookd: ${url}`);
  });
}
watchProblems(page);

const rowOf = (text) => page.locator('tbody tr').filter({ hasText: text });

try {
  // --- the page and its headers ------------------------------------------------------
  await step('GET / serves the page with its policy, no token needed', async () => {
    const res = await page.goto(`${BASE}/`);
    assert.equal(res.status(), 200);
    const headers = res.headers();
    assert.match(headers['content-type'], /^text\/html/);
    assert.equal(headers['content-security-policy'], "default-src 'self'");
    for (const [path, type] of [['/dashboard/app.js', /^text\/javascript/], ['/dashboard/app.css', /^text\/css/]]) {
      const asset = await fetch(BASE + path);
      assert.equal(asset.status, 200, path);
      assert.match(asset.headers.get('content-type'), type, path);
      assert.equal(asset.headers.get('content-security-policy'), "default-src 'self'", path);
    }
  });

  if (TOKEN) {
    await step('asks for the admin token on a 401, once, and keeps it in sessionStorage', async () => {
      const dialog = page.getByRole('dialog', { name: 'Admin token' });
      await dialog.waitFor();
      await shot(page, 'token-prompt');
      await page.getByLabel('Token', { exact: true }).fill('not-the-token');
      await page.getByRole('button', { name: 'Continue' }).click();
      await dialog.getByText('That token was refused').waitFor();
      await page.getByLabel('Token', { exact: true }).fill(TOKEN);
      await page.keyboard.press('Enter');
      await dialog.waitFor({ state: 'hidden' });
      await rowOf('Orders & payments').waitFor();
      const stored = await page.evaluate(() => ({
        session: sessionStorage.getItem('hookd.adminToken'),
        local: localStorage.length,
        cookies: document.cookie,
      }));
      assert.deepEqual(stored, { session: TOKEN, local: 0, cookies: '' });
      // A reload in the same tab keeps it: no second question.
      await page.reload();
      await rowOf('Orders & payments').waitFor();
      assert.equal(await dialog.isVisible(), false);
      assert.equal(await page.getByRole('button', { name: 'Forget admin token' }).isVisible(), true);
    });
  }

  // --- endpoints and their health ----------------------------------------------------
  await step('endpoints page: enabled/disabled and why, failing since, last success, rate, pending', async () => {
    await page.getByRole('heading', { name: 'Endpoints', level: 1 }).waitFor();
    const orders = rowOf('Orders & payments');
    const archive = rowOf('Invoice archive');
    const crm = rowOf('Legacy CRM');
    await orders.getByText('0%').waitFor();
    await archive.getByText('100%').waitFor();
    await crm.getByText('no deliveries').or(crm.getByText('none finished')).waitFor();
    await orders.getByText('enabled, failing').waitFor();
    // The last 24 hours first, with the disabled endpoint and why.
    const overview = page.getByRole('region', { name: 'Last 24 hours' });
    assert.equal(await overview.locator('[data-stat="Failed"] dd').innerText(), String(BULK_COUNT + 1));
    await overview.locator('.disabled-list').getByText('Legacy CRM').waitFor();
    await overview.locator('.disabled-list').getByText('disabled by an operator').waitFor();
    await orders.getByRole('link', { name: `${BULK_COUNT + 1} failed` }).waitFor();
    await orders.getByText(`0 of ${BULK_COUNT + 1} finished`).waitFor();
    await archive.getByText('enabled, healthy').waitFor();
    await crm.getByText('disabled', { exact: true }).waitFor();
    await crm.getByText('disabled by an operator').waitFor();
    // The parked delivery of the disabled endpoint counts as pending.
    assert.equal((await crm.locator('td').nth(5).innerText()).trim(), '1');
    assert.equal((await orders.locator('td').nth(5).innerText()).trim(), '0');
    assert.equal((await orders.locator('td').nth(2).innerText()).trim(), 'never');
    // Failing since: relative text, exact time in the viewer's time zone as the tooltip.
    const failing = orders.locator('td').nth(3).locator('time');
    assert.match(await failing.innerText(), /just now|seconds? ago|minutes? ago/);
    const title = await failing.getAttribute('title');
    const iso = await failing.getAttribute('datetime');
    const expected = new Intl.DateTimeFormat('en-US', {
      year: 'numeric', month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit', second: '2-digit',
      timeZoneName: 'short', timeZone: TIME_ZONE,
    }).format(new Date(iso));
    assert.equal(title, expected);
    assert.match(title, /GMT\+9/);
    await pageShot('endpoints');
  });

  // --- the delivery log ---------------------------------------------------------------
  let orderId;
  await step('delivery log: filter by state, the failed delivery is listed', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Deliveries' }).click();
    await page.getByRole('heading', { name: 'Deliveries', level: 1 }).waitFor();
    await page.getByLabel('State').selectOption('failed');
    await page.getByRole('button', { name: 'Apply filter' }).click();
    await page.waitForFunction(() => location.hash === '#/deliveries?state=failed');
    const row = rowOf(ORDER_EVENT);
    await row.waitFor();
    assert.equal(await row.getAttribute('data-state'), 'failed');
    await row.getByText('HTTP 500').waitFor();
    orderId = await row.getAttribute('data-delivery-id');
    assert.equal(await page.locator('tbody tr').count(), BULK_COUNT + 1);
    await pageShot('deliveries');
  });

  await step('resend one delivery (keyboard): the new attempt succeeds on the page', async () => {
    await receiver('ok');
    const row = rowOf(ORDER_EVENT);
    const button = row.getByRole('button', { name: `Resend delivery ${orderId}` });
    await button.focus();
    await page.keyboard.press('Enter');
    await page.locator(`tr[data-delivery-id="${orderId}"][data-state="succeeded"]`).waitFor();
    await row.getByText('succeeded').waitFor();
    const d = await api(`/v1/deliveries/${orderId}`);
    assert.equal(d.state, 'succeeded');
    assert.deepEqual(d.attempt_log.map((a) => [a.trigger, a.status_code]), [['auto', 500], ['manual', 200]]);
  });

  await step('one delivery: its attempts (time, trigger, status, latency, outcome, error, body) and payload', async () => {
    await page.getByRole('link', { name: `Delivery ${orderId}`, exact: true }).click();
    await page.getByRole('heading', { name: `Delivery ${orderId}`, level: 1 }).waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.id), 'page-title');
    const attempts = page.locator('table.attempts tbody tr');
    await page.getByRole('heading', { name: 'Attempts (2)' }).waitFor();
    const first = await attempts.nth(0).locator('td').allInnerTexts();
    const second = await attempts.nth(1).locator('td').allInnerTexts();
    assert.equal(first[0], '1');
    assert.match(first[1], /ago|just now/);
    assert.deepEqual(first.slice(2, 4), ['auto', '500']);
    assert.match(first[4], /^\d+ ms$/);
    assert.equal(first[5], 'http error');
    assert.equal(first[6], 'HTTP 500 Internal Server Error');
    assert.equal(first[7], 'upstream exploded');
    assert.deepEqual([second[0], ...second.slice(2, 4), second[5], second[6], second[7]],
      ['2', 'manual', '200', 'success', '—', '{"received": true}']);
    assert.ok(await attempts.nth(0).locator('time').getAttribute('title'));
    // The payload, with markup in it shown as text and never run.
    const payload = await page.getByLabel('Event payload').innerText();
    assert.deepEqual(JSON.parse(payload), {
      orderId: 'o-1001', amount: 9900, note: '<b>bold</b> <img src=x onerror="window.__xss=1">',
    });
    assert.ok(payload.includes('"note": "<b>bold</b> <img'), payload);
    assert.equal(await page.locator('main img, main b').count(), 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    await pageShot('delivery');
  });

  await step('resend from the delivery page: a third attempt appears', async () => {
    await page.getByRole('button', { name: 'Resend', exact: true }).click();
    await page.getByRole('heading', { name: 'Attempts (3)' }).waitFor();
    await page.locator('table.attempts tbody tr[data-attempt="3"][data-outcome="success"]').waitFor();
  });

  // --- bulk resend --------------------------------------------------------------------
  await step('resend all that match: progress until done, every row succeeds', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Deliveries' }).click();
    await page.getByRole('heading', { name: 'Deliveries', level: 1 }).waitFor();
    await page.getByLabel('State').selectOption('failed');
    await page.getByLabel('Event type').fill(BULK_EVENT_TYPE);
    await page.getByLabel('Event type').press('Enter'); // submits the filter form
    await page.waitForFunction((t) => location.hash === `#/deliveries?state=failed&event_type=${t}`, BULK_EVENT_TYPE);
    // The filtered list replaces the unfiltered one: wait for its rows, not for any four.
    await page.waitForFunction(
      ([t, n]) => {
        const rows = [...document.querySelectorAll('tbody tr')];
        return rows.length === n && rows.every((r) => r.dataset.state === 'failed' && r.textContent.includes(t));
      },
      [BULK_EVENT_TYPE, BULK_COUNT],
    );
    assert.equal(await page.locator('tbody tr').count(), BULK_COUNT);
    const ids = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.deliveryId));

    await page.getByRole('button', { name: 'Resend all that match…' }).click();
    const confirm = page.getByRole('region', { name: 'Resend all that match this filter?' });
    await confirm.getByText(`state is failed, event type is ${BULK_EVENT_TYPE}`).waitFor();
    await page.getByRole('button', { name: 'Resend all that match', exact: true }).click();

    const progress = page.locator('#bulk-progress');
    await progress.waitFor();
    assert.equal(await progress.getAttribute('max'), String(BULK_COUNT));
    const seen = new Set();
    const status = page.locator('#bulk-status');
    const deadline = Date.now() + TIMEOUT;
    for (;;) {
      const text = await status.innerText();
      seen.add(text);
      if (text.startsWith('Done:')) break;
      assert.ok(Date.now() < deadline, `bulk resend not done: ${[...seen].join(' | ')}`);
      await page.waitForTimeout(100);
    }
    console.log(`   progress seen: ${[...seen].join(' | ')}`);
    assert.match(await status.innerText(), new RegExp(`^Done: resent ${BULK_COUNT} of ${BULK_COUNT}\\.`));
    assert.equal(await progress.evaluate((p) => p.value), BULK_COUNT);
    // The rows follow their new attempts in place, though they no longer match "failed".
    await page.locator('tbody tr[data-state="succeeded"]').nth(BULK_COUNT - 1).waitFor();
    assert.equal(await page.locator('tbody tr[data-state="succeeded"]').count(), BULK_COUNT);
    for (const id of ids) assert.equal((await api(`/v1/deliveries/${id}`)).state, 'succeeded', id);
    await pageShot('bulk-resend-done');
  });

  await step('paging with next_cursor: older, then newest again', async () => {
    await page.goto(`${BASE}/#/deliveries?limit=3`);
    await page.getByRole('heading', { name: 'Deliveries', level: 1 }).waitFor();
    await page.locator('tbody tr').nth(2).waitFor();
    const firstPage = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.deliveryId)));
    assert.equal(firstPage.length, 3);
    await page.getByRole('link', { name: 'Older »' }).click();
    await page.waitForFunction(() => location.hash.includes('cursor='));
    await page.locator('tbody tr').first().waitFor();
    const secondPage = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.deliveryId)));
    assert.ok(Math.max(...secondPage) < Math.min(...firstPage), `${secondPage} after ${firstPage}`);
    await page.getByRole('link', { name: '« Newest' }).click();
    await page.waitForFunction(() => !location.hash.includes('cursor='));
    await page.locator(`tbody tr[data-delivery-id="${firstPage[0]}"]`).waitFor();
  });

  await step('keyboard: a focused control shows a focus ring', async () => {
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    const outline = await page.evaluate(() => {
      const el = document.activeElement;
      return el && el !== document.body ? getComputedStyle(el).outlineStyle : 'none';
    });
    assert.notEqual(outline, 'none');
  });

  if (TOKEN) {
    await step('another tab asks again; Cancel and Escape leave a way back to the token', async () => {
      const tab = await context.newPage();
      watchProblems(tab);
      await tab.goto(`${BASE}/#/deliveries`);
      const dialog = tab.getByRole('dialog', { name: 'Admin token' });
      await dialog.waitFor();
      await tab.getByRole('button', { name: 'Cancel' }).click();
      await dialog.waitFor({ state: 'hidden' });
      const again = tab.getByRole('button', { name: 'Enter admin token' });
      await again.waitFor();
      await again.click();
      await dialog.waitFor();
      await tab.keyboard.press('Escape');
      await dialog.waitFor({ state: 'hidden' });
      await again.click();
      await tab.getByLabel('Token', { exact: true }).fill(TOKEN);
      await tab.getByRole('button', { name: 'Continue' }).click();
      await tab.locator('tbody tr').first().waitFor();
      assert.equal(await tab.locator('tbody tr').count(), BULK_COUNT + 5);
      // Forgetting it: the next call asks again.
      await tab.getByRole('button', { name: 'Forget admin token' }).click();
      await dialog.waitFor();
      assert.equal(await tab.evaluate(() => sessionStorage.getItem('hookd.adminToken')), null);
      await tab.close();
    });
  }

  await step('a 1280-px window shows every column: long ids, URLs and event types wrap', async () => {
    // Real ids are long (evt_ + 32 hex digits), an endpoint without a description is named
    // by its URL, and event types can be long: none may push the last column out of view.
    const endpoint = await api('/v1/endpoints', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ url: `${RECEIVER}/always-ok/${'a-rather-long-path/'.repeat(4)}webhooks` }),
    });
    let eventId;
    for (const type of ['customer.subscription.trial_will_end', 'invoice.payment_action_required']) {
      ({ event_id: eventId } = await api('/v1/events', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ event_type: type, endpoint_id: endpoint.id, payload: { wide: true } }),
      }));
    }
    await page.setViewportSize({ width: 1280, height: 800 });
    for (const [hash, ready] of [
      ['#/deliveries', () => rowOf(eventId).and(page.locator('[data-state="succeeded"]'))],
      // The health columns fill in after the table is drawn: wait for them.
      ['#/endpoints', () => rowOf(endpoint.url.slice(-20)).getByText('100%')],
    ]) {
      await page.goto(`${BASE}/${hash}`);
      await ready().waitFor();
      const fit = await page.evaluate(() => {
        const wrap = document.querySelector('.table-wrap');
        const box = (el) => el.getBoundingClientRect();
        return {
          window: window.innerWidth,
          page: document.documentElement.scrollWidth,
          wrapScroll: wrap.scrollWidth,
          wrapClient: wrap.clientWidth,
          wrapRight: box(wrap).right,
          lastColumnRight: box(wrap.querySelector('thead th:last-child')).right,
          lastCellRight: box(wrap.querySelector('tbody tr td:last-child')).right,
        };
      });
      const what = `${hash} at 1280 px: ${JSON.stringify(fit)}`;
      assert.ok(fit.wrapScroll <= fit.wrapClient, `the table scrolls sideways: ${what}`);
      assert.ok(fit.page <= fit.window, `the page scrolls sideways: ${what}`);
      assert.ok(fit.lastColumnRight <= fit.wrapRight && fit.lastCellRight <= fit.wrapRight, `last column cut off: ${what}`);
      assert.ok(fit.wrapRight <= fit.window, `the table ends past the window: ${what}`);
      await pageShot(`${hash.slice(2)}-1280`);
    }
    await page.setViewportSize({ width: 1366, height: 768 });
  });

  // --- managing an endpoint ------------------------------------------------------------
  const apiJson = { 'content-type': 'application/json' };
  const created = { url: `${RECEIVER}/always-ok/created`, id: null, secret: null };
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });

  // --- the event-type catalog ----------------------------------------------------------
  const catalog = [
    { name: 'order.paid', description: 'An order was paid in full' },
    { name: 'refund.created', description: 'A refund was issued', schema: { type: 'object', required: ['refund_id'] } },
  ];

  await step('the event-type catalog: its page, and a pick-list with descriptions in the endpoint form', async () => {
    for (const t of catalog) await api('/v1/event-types', { method: 'POST', headers: apiJson, body: JSON.stringify(t) });
    await page.goto(`${BASE}/#/endpoints`);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Event types' }).click();
    await page.getByRole('heading', { name: 'Event types', level: 1 }).waitFor();
    for (const t of catalog) {
      const row = page.locator(`tr[data-event-type="${t.name}"]`);
      await row.getByText(t.description).waitFor();
      await row.getByText(t.schema ? 'JSON Schema' : 'none: not checked').waitFor();
    }
    await page.locator('tr[data-event-type="refund.created"] summary').click();
    assert.deepEqual(JSON.parse(await page.locator('tr[data-event-type="refund.created"] pre').innerText()), catalog[1].schema);
    await pageShot('event-types');

    await page.goto(`${BASE}/#/endpoints/new`);
    await page.getByRole('heading', { name: 'New endpoint', level: 1 }).waitFor();
    const picks = page.getByRole('group', { name: 'From the event-type catalog' });
    await picks.waitFor();
    for (const t of catalog) await picks.getByText(t.description).waitFor();
    const types = page.getByLabel('Event types');
    const pick = (name) => picks.getByRole('checkbox', { name });
    assert.equal(await types.inputValue(), '*');
    await pick('order.paid').check();
    assert.equal(await types.inputValue(), 'order.paid', 'ticking a type narrows "*" to it');
    await pick('refund.created').check();
    assert.equal(await types.inputValue(), 'order.paid, refund.created');
    await pick('order.paid').uncheck();
    assert.equal(await types.inputValue(), 'refund.created');
    // Typing ticks what the field names; a prefix or a type not in the catalog can be typed.
    await types.fill('order.paid, payment.*');
    assert.equal(await pick('order.paid').isChecked(), true);
    assert.equal(await pick('refund.created').isChecked(), false);
    await pageShot('endpoint-new-catalog');
  });

  await step('create an endpoint: its generated secret is shown once, with a copy button', async () => {
    await page.goto(`${BASE}/#/endpoints`);
    await page.getByRole('link', { name: 'New endpoint' }).click();
    await page.getByRole('heading', { name: 'New endpoint', level: 1 }).waitFor();
    await page.getByLabel('URL', { exact: true }).fill(created.url);
    await page.getByLabel('Description').fill('Created in the browser');
    await page.getByLabel('Event types').fill('order.*, refund.created');
    await page.getByLabel('Signature scheme').selectOption('standard');
    await page.getByLabel('Timeout').fill('5s');
    await page.getByLabel('Rate limit (per second)').fill('20');
    await pageShot('endpoint-new');
    await page.getByRole('button', { name: 'Create endpoint' }).click();
    await page.getByRole('heading', { name: 'Created: Created in the browser', level: 1 }).waitFor();
    const secretBox = page.getByRole('textbox', { name: 'Signing secret' });
    created.secret = await secretBox.inputValue();
    assert.match(created.secret, /^whsec_/);
    created.id = await page.getByRole('link', { name: 'Done' }).getAttribute('href').then((href) => decodeURIComponent(href.split('/').pop()));
    const stored = await api(`/v1/endpoints/${created.id}`);
    assert.equal(stored.secret, created.secret);
    assert.deepEqual([stored.url, stored.event_types, stored.timeout, stored.signature_scheme, stored.rate_limit],
      [created.url, ['order.*', 'refund.created'], '5s', 'standard', 20]);
    await page.getByRole('button', { name: 'Copy' }).click();
    await page.getByText('Copied.').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), created.secret);
    await pageShot('endpoint-created');
    // Once: the endpoint's own page, and the same page reloaded, never show it.
    await page.getByRole('link', { name: 'Done' }).click();
    await page.getByRole('heading', { name: 'Created in the browser', level: 1 }).waitFor();
    await page.getByText('at most 20 deliveries/s').waitFor();
    const shown = async () => page.evaluate((secret) => document.body.innerText.includes(secret)
      || [...document.querySelectorAll('input')].some((i) => i.value === secret), created.secret);
    assert.equal(await shown(), false);
    await page.reload();
    await page.getByRole('heading', { name: 'Created in the browser', level: 1 }).waitFor();
    assert.equal(await shown(), false);
  });

  await step('edit it: event types, timeout, retry schedule, headers, rate limit; sent with If-Match', async () => {
    await page.getByLabel('Description').fill('Created, then edited');
    assert.equal(await page.getByLabel('Rate limit (per second)').inputValue(), '20');
    await page.getByLabel('Rate limit (per second)').fill('');
    await page.getByLabel('Event types').fill('order.*');
    await page.getByLabel('Timeout').fill('3s');
    await page.getByLabel('Retries').selectOption('custom');
    await page.getByLabel('Retry schedule').fill('1s, 5s');
    await page.getByLabel('Static headers').fill('X-Team: web');
    const patch = page.waitForRequest((req) => req.method() === 'PATCH' && req.url().endsWith(`/v1/endpoints/${created.id}`));
    await page.getByRole('button', { name: 'Save changes' }).click();
    const sent = await patch;
    assert.equal(sent.headers()['if-match'], '"v1"');
    assert.match(sent.headers()['content-type'], /^application\/json/);
    assert.deepEqual(JSON.parse(sent.postData()), {
      description: 'Created, then edited', event_types: ['order.*'], timeout: '3s', retry_schedule: ['1s', '5s'], headers: { 'X-Team': 'web' }, rate_limit: null,
    });
    await page.getByText('Saved:').waitFor();
    await page.getByRole('heading', { name: 'Created, then edited', level: 1 }).waitFor();
    const e = await api(`/v1/endpoints/${created.id}`);
    assert.deepEqual([e.description, e.event_types, e.timeout, e.retry_schedule, e.headers, e.url, e.rate_limit],
      ['Created, then edited', ['order.*'], '3s', ['1s', '5s'], { 'X-Team': 'web' }, created.url, null]);
    // Nothing changed: nothing is sent.
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.getByText('Nothing to save').waitFor();
    await pageShot('endpoint');
  });

  await step('a stale edit: 412, the page says it changed since it was opened, and reloads', async () => {
    // Someone else changes it meanwhile (curl, the CLI, another tab).
    await api(`/v1/endpoints/${created.id}`, { method: 'PATCH', headers: apiJson, body: JSON.stringify({ description: 'Changed elsewhere' }) });
    expectedStatus = 412;
    await page.getByLabel('Timeout').fill('4s');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.getByText('This endpoint changed since you opened it').waitFor();
    expectedStatus = null;
    await page.getByRole('heading', { name: 'Changed elsewhere', level: 1 }).waitFor();
    assert.equal(await page.getByLabel('Description').inputValue(), 'Changed elsewhere');
    assert.equal(await page.getByLabel('Timeout').inputValue(), '3s');
    assert.equal((await api(`/v1/endpoints/${created.id}`)).timeout, '3s', 'the stale change was not applied');
    await pageShot('endpoint-conflict');
  });

  await step('disable, then enable it', async () => {
    await page.getByRole('button', { name: 'Disable', exact: true }).click();
    await page.getByText('Disabled: its pending deliveries are kept').waitFor();
    await page.locator('#endpoint-facts').getByText('disabled by an operator').waitFor();
    let e = await api(`/v1/endpoints/${created.id}`);
    assert.deepEqual([e.enabled, e.disabled_reason], [false, 'disabled by an operator']);
    await page.getByRole('button', { name: 'Enable', exact: true }).click();
    await page.getByText('Enabled: it gets new deliveries again').waitFor();
    e = await api(`/v1/endpoints/${created.id}`);
    assert.deepEqual([e.enabled, e.disabled_reason], [true, null]);
  });

  await step('rotate its secret: the new one is shown once, the old one signs for 24 h', async () => {
    const before = (await api(`/v1/endpoints/${created.id}`)).secret;
    await page.getByRole('button', { name: 'Rotate secret…' }).click();
    assert.equal(await page.getByLabel('The current secret keeps signing beside it for').inputValue(), '24h');
    const rotation = page.waitForRequest((req) => req.method() === 'POST' && req.url().endsWith('/rotate-secret'));
    await page.getByRole('button', { name: 'Rotate secret', exact: true }).click();
    const sent = await rotation;
    assert.match(sent.headers()['if-match'], /^"v\d+"$/);
    const secretBox = page.getByRole('textbox', { name: 'New signing secret' });
    await secretBox.waitFor();
    const rotated = await secretBox.inputValue();
    const e = await api(`/v1/endpoints/${created.id}`);
    assert.notEqual(rotated, before);
    assert.equal(rotated, e.secret);
    assert.ok(e.previous_secret_expires_at);
    await page.getByText('The previous secret keeps signing beside it until').waitFor();
    await pageShot('endpoint-rotated');
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.locator('#endpoint-facts').waitFor();
    assert.equal(await page.getByRole('textbox', { name: 'New signing secret' }).count(), 0);
  });

  await step('delete it, after a confirmation', async () => {
    await page.getByRole('button', { name: 'Delete…' }).click();
    await page.getByRole('heading', { name: 'Delete Changed elsewhere?' }).waitFor();
    await page.getByRole('button', { name: 'Delete endpoint' }).click();
    await page.waitForFunction(() => location.hash === '#/endpoints');
    await page.getByText('Deleted Changed elsewhere.').waitFor();
    await rowOf('Orders & payments').waitFor();
    assert.equal(await rowOf('Changed elsewhere').count(), 0);
    const gone = await fetch(`${BASE}/v1/endpoints/${created.id}`, { headers: TOKEN ? { authorization: `Bearer ${TOKEN}` } : {} });
    assert.equal(gone.status, 404);
  });

  // --- the portal ------------------------------------------------------------------------
  await step('the portal: /portal#token=... keeps the token in sessionStorage, out of the address bar', async () => {
    const token = TOKEN || 'any-token-an-open-api-ignores';
    const portal = await context.newPage();
    watchProblems(portal);
    const calls = [];
    portal.on('request', (req) => {
      if (new URL(req.url()).pathname.startsWith('/v1/')) calls.push({ url: req.url(), auth: req.headers().authorization });
    });
    const res = await portal.goto(`${BASE}/portal#token=${encodeURIComponent(token)}`);
    assert.equal(res.headers()['content-security-policy'], "default-src 'self'");
    await portal.getByRole('heading', { name: 'Endpoints', level: 1 }).waitFor();
    assert.equal(portal.url(), `${BASE}/portal#/endpoints`);
    const kept = await portal.evaluate(() => ({
      session: sessionStorage.getItem('hookd.portalToken'),
      admin: sessionStorage.getItem('hookd.adminToken'),
      local: localStorage.length,
      cookies: document.cookie,
      title: document.title,
    }));
    assert.deepEqual(kept, { session: token, admin: null, local: 0, cookies: '', title: 'Endpoints · Webhooks' });
    // The summary first: the last 24 hours, and why an endpoint is disabled.
    const overview = portal.getByRole('region', { name: 'Last 24 hours' });
    await overview.getByText('Legacy CRM').waitFor();
    await overview.getByText('disabled by an operator').waitFor();
    assert.match(await overview.locator('[data-stat="Deliveries"] dd').innerText(), /^\d+$/);
    assert.match(await overview.locator('[data-stat="Succeeded"] dd').innerText(), /^\d+(\.\d)?%$/);
    await portal.locator('tbody tr').filter({ hasText: 'Invoice archive' }).getByText('100%').waitFor();
    // No admin-only controls: no token prompt, no "Forget admin token".
    assert.equal(await portal.getByRole('dialog', { name: 'Admin token' }).isVisible(), false);
    assert.equal(await portal.getByRole('button', { name: 'Forget admin token' }).isVisible(), false);
    assert.equal(await portal.getByRole('button', { name: 'Sign out' }).isVisible(), true);
    assert.equal(await portal.locator('.brand').innerText(), 'Webhooks');
    if (!TOKEN) await shot(portal, 'portal');

    // Its delivery log, with a resend.
    await portal.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Deliveries' }).click();
    await portal.getByRole('heading', { name: 'Deliveries', level: 1 }).waitFor();
    const first = portal.locator('tbody tr').first();
    await first.waitFor();
    const id = await first.getAttribute('data-delivery-id');
    const attempts = (await api(`/v1/deliveries/${id}`)).attempts;
    await first.getByRole('button', { name: `Resend delivery ${id}` }).click();
    await portal.waitForFunction(
      ([i, n]) => {
        const row = document.querySelector(`tr[data-delivery-id="${i}"]`);
        return row && row.dataset.state === 'succeeded' && Number(row.querySelectorAll('td')[4].textContent) === n;
      },
      [id, attempts + 1],
    );
    if (!TOKEN) await shot(portal, 'portal-deliveries');

    // A reload keeps working from sessionStorage; every call carried the token.
    await portal.reload();
    await portal.getByRole('heading', { name: 'Deliveries', level: 1 }).waitFor();
    await portal.locator('tbody tr').first().waitFor();
    assert.ok(calls.length > 3, `${calls.length} calls`);
    for (const call of calls) {
      assert.equal(call.auth, `Bearer ${token}`, call.url);
      assert.ok(!call.url.includes(encodeURIComponent(token)), `the token in a request line: ${call.url}`);
    }

    // Sign out: the token is gone and the page says how to come back.
    await portal.getByRole('button', { name: 'Sign out' }).click();
    await portal.getByRole('heading', { name: 'You are signed out', level: 1 }).waitFor();
    assert.equal(await portal.evaluate(() => sessionStorage.getItem('hookd.portalToken')), null);
    await portal.close();
  });

  await step("a tenant's portal link shows only that tenant's endpoints and deliveries", async () => {
    const json = { 'content-type': 'application/json' };
    const post = (path, body) => api(path, { method: 'POST', headers: json, body: JSON.stringify(body) });
    const shop = await post('/v1/endpoints', { url: `${RECEIVER}/always-ok/m42`, description: 'Merchant 42 shop', tenant_id: 'merchant_42' });
    await post('/v1/endpoints', { url: `${RECEIVER}/always-ok/m43`, description: 'Merchant 43 shop', tenant_id: 'merchant_43' });
    for (const [tenant, n] of [['merchant_42', 2], ['merchant_43', 1]]) {
      for (let i = 1; i <= n; i++) {
        await post('/v1/events', { event_type: 'order.paid', event_id: `${PASS}-${tenant}-${i}`, tenant_id: tenant, payload: { tenant, i } });
      }
    }
    const mine = async () => (await api('/v1/deliveries?tenant_id=merchant_42&limit=100')).data;
    const deadline = Date.now() + TIMEOUT;
    while ((await mine()).filter((d) => d.state === 'succeeded').length < 2) {
      assert.ok(Date.now() < deadline, 'merchant 42 deliveries did not succeed');
      await new Promise((r) => setTimeout(r, 100));
    }
    const ids = (await mine()).map((d) => String(d.id)).sort();
    const link = await post('/v1/tenants/merchant_42/tokens', { expires_in: '1h' });
    assert.ok(link.portal_url.endsWith(`/portal#token=${link.token}`), link.portal_url);

    const portal = await context.newPage();
    watchProblems(portal);
    await portal.goto(link.portal_url.replace(/^https?:\/\/[^/]+/, BASE));
    await portal.getByRole('heading', { name: 'Endpoints', level: 1 }).waitFor();
    await portal.locator('tbody tr').filter({ hasText: 'Merchant 42 shop' }).first().waitFor();
    for (const other of ['Merchant 43 shop', 'Orders & payments', 'Invoice archive', 'Legacy CRM']) {
      assert.equal(await portal.getByText(other).count(), 0, `${other} in merchant 42's portal`);
    }
    if (!TOKEN) await shot(portal, 'portal-tenant');

    await portal.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Deliveries' }).click();
    await portal.getByRole('heading', { name: 'Deliveries', level: 1 }).waitFor();
    await portal.locator('tbody tr').first().waitFor();
    const shown = (await portal.locator('tbody tr[data-delivery-id]').evaluateAll((rows) => rows.map((r) => r.dataset.deliveryId))).sort();
    assert.deepEqual(shown, ids);
    // Resend one, and see its new attempt.
    const id = ids[0];
    const before = (await api(`/v1/deliveries/${id}`)).attempts;
    await portal.locator(`tr[data-delivery-id="${id}"]`).getByRole('button', { name: `Resend delivery ${id}` }).click();
    await portal.waitForFunction(
      ([i, n]) => {
        const row = document.querySelector(`tr[data-delivery-id="${i}"]`);
        return row && row.dataset.state === 'succeeded' && Number(row.querySelectorAll('td')[4].textContent) === n;
      },
      [id, before + 1],
    );
    if (!TOKEN) await shot(portal, 'portal-tenant-deliveries');
    assert.equal(shop.tenant_id, 'merchant_42');

    // The catalog: read in the portal too, and offered when adding an endpoint.
    await portal.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Event types' }).click();
    await portal.getByRole('heading', { name: 'Event types', level: 1 }).waitFor();
    for (const t of catalog) await portal.locator(`tr[data-event-type="${t.name}"]`).getByText(t.description).waitFor();
    await portal.goto(`${BASE}/portal#/endpoints/new`);
    const picks = portal.getByRole('group', { name: 'From the event-type catalog' });
    await picks.getByRole('checkbox', { name: 'order.paid' }).check();
    assert.equal(await portal.getByLabel('Event types').inputValue(), 'order.paid');
    for (const t of catalog) await picks.getByText(t.description).waitFor();
    if (!TOKEN) await shot(portal, 'portal-tenant-catalog');
    await portal.close();
  });

  if (TOKEN) {
    await step('/portal#token=wrong shows the expired page, never a token prompt', async () => {
      const portal = await context.newPage();
      watchProblems(portal);
      await portal.goto(`${BASE}/portal#token=wrong`);
      await portal.getByRole('heading', { name: 'This link has expired or was revoked', level: 1 }).waitFor();
      await portal.getByText('Ask the service that sent it to you for a new one').waitFor();
      assert.equal(portal.url(), `${BASE}/portal#/endpoints`);
      assert.equal(await portal.getByRole('dialog', { name: 'Admin token' }).isVisible(), false);
      assert.equal(await portal.getByRole('navigation', { name: 'Main' }).isVisible(), false);
      assert.equal(await portal.evaluate(() => sessionStorage.getItem('hookd.portalToken')), null);
      // Going elsewhere in it shows the same page, without calling the API again.
      await portal.evaluate(() => { location.hash = '#/deliveries'; });
      await portal.getByRole('heading', { name: 'This link has expired or was revoked', level: 1 }).waitFor();
      await shot(portal, 'portal-expired');
      // A new link in the same tab works.
      await portal.goto(`${BASE}/portal#token=${encodeURIComponent(TOKEN)}`);
      await portal.getByRole('heading', { name: 'Endpoints', level: 1 }).waitFor();
      await portal.locator('tbody tr').first().waitFor();
      await portal.close();
    });
  }

  await step('no console error, no script error, no request outside hookd', async () => {
    assert.deepEqual(problems, []);
  });
} catch (err) {
  console.error(`not ok - [${PASS}] ${err.stack || err}`);
  try {
    await shot(page, `failure-${PASS}`);
    console.error('--- page text ---');
    console.error((await page.locator('body').innerText()).slice(0, 4000));
    if (problems.length) console.error(`--- problems ---\n${problems.join('\n')}`);
  } catch (e) {
    console.error(`(could not capture the page: ${e.message})`);
  }
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
if (!process.exitCode) console.log(`dashboard [${PASS}]: ${passed} steps passed`);
