// The hookd dashboard: a plain ES module, no build step, no dependencies.
//
// Everything shown comes from the API (/v1/...). Rendering only ever builds DOM nodes and
// sets textContent: no string from the API is ever parsed as markup.
//
// Two modes, the same files:
//   /         the operator's dashboard: the admin token, when hookd has one, is asked for on
//             a 401 and kept in sessionStorage
//   /portal   a tenant's portal, opened from a link whose fragment carries a tenant token
//             (#token=...): the token moves to sessionStorage and out of the address bar, goes
//             with every call, and a 401 shows that the link has expired (no token prompt)
//
// Pages (hash routing):
//   #/endpoints                     the last 24 hours per endpoint, and every endpoint's health
//   #/endpoints/new                 register an endpoint (its generated secret is shown once)
//   #/endpoints/ep_...              one endpoint: change it, disable or enable it, rotate its
//                                   secret, delete it (each change sent with its ETag in If-Match)
//   #/deliveries?state=failed&...   the delivery log, filtered and paged
//   #/deliveries/123                one delivery with its attempts and payload
//   #/event-types                   the event-type catalog: names, descriptions, schemas

const PORTAL = /^\/portal\/?$/.test(location.pathname);
const APP_NAME = PORTAL ? 'Webhooks' : 'hookd';
const TOKEN_KEY = PORTAL ? 'hookd.portalToken' : 'hookd.adminToken';
const LOG_LIMIT = 50;
const SUMMARY_WINDOW = '24h';
const main = document.getElementById('main');

function setTitle(text) {
  document.title = `${text} · ${APP_NAME}`;
}

// ---------------------------------------------------------------------------------------
// DOM building

/** Creates an element. Strings and numbers among the children become text nodes. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'on') for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (key.startsWith('on') || key === 'style') throw new Error(`h(): no ${key} attribute`);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs fn over items with at most `limit` calls in flight. */
async function eachLimited(items, limit, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// ---------------------------------------------------------------------------------------
// Times: relative text, the exact time in the viewer's time zone in the tooltip

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
// (dateStyle/timeStyle cannot be combined with timeZoneName, hence the fields.)
const exactFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: 'numeric',
  minute: '2-digit',
  second: '2-digit',
  timeZoneName: 'short',
});
const UNITS = [
  ['year', 365 * 86400],
  ['month', 30 * 86400],
  ['week', 7 * 86400],
  ['day', 86400],
  ['hour', 3600],
  ['minute', 60],
];

function relativeText(date) {
  const seconds = (date.getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 5) return 'just now';
  for (const [unit, size] of UNITS) {
    if (abs >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return relativeFormat.format(Math.round(seconds), 'second');
}

/** A <time> with relative text and the exact local time as its tooltip; `missing` if null. */
function timeEl(iso, missing = '—') {
  if (!iso) return h('span', { class: 'muted' }, missing);
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h('span', {}, iso);
  return h('time', { datetime: iso, title: exactFormat.format(date), 'data-relative': '' }, relativeText(date));
}

/** A <time> showing the exact local time, with the relative one as its tooltip. */
function exactTimeEl(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h('span', {}, iso);
  return h('time', { datetime: iso, title: relativeText(date) }, exactFormat.format(date));
}

setInterval(() => {
  for (const el of document.querySelectorAll('time[data-relative]')) {
    el.textContent = relativeText(new Date(el.getAttribute('datetime')));
  }
}, 15000);

/**
 * `since`/`until` as the API takes them: a duration ago (`90m`, `2d`) or an RFC 3339 time
 * pass as they are; a date or date-time without a zone is read in the viewer's time zone.
 */
function toApiInstant(text) {
  const value = text.trim();
  const local = value.match(/^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$/);
  if (!local) return value;
  const [, y, mo, d, hh = '0', mi = '0', ss = '0'] = local;
  const date = new Date(+y, +mo - 1, +d, +hh, +mi, +ss);
  return Number.isNaN(date.getTime()) ? value : date.toISOString();
}

// ---------------------------------------------------------------------------------------
// The token: the admin token asked for once on a 401, or the portal's tenant token taken from
// its link; kept only in sessionStorage (in memory where storage is refused), never in
// local storage or a cookie

let memoryToken = null;

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? memoryToken;
  } catch {
    return memoryToken;
  }
}

function setToken(token) {
  memoryToken = token || null;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (a locked-down browser): the token lives in this page's memory only.
  }
  document.getElementById('forget-token').hidden = PORTAL || !storedToken();
  document.getElementById('sign-out').hidden = !PORTAL || !storedToken() || portalClosed !== null;
}

// Portal: null while the link works; 'expired' after a 401 with a token, 'missing' after a 401
// without one, 'signed-out' after Sign out. Set, every page shows why instead of calling the API.
let portalClosed = null;

/**
 * Portal: a link's `#token=...` goes to sessionStorage and leaves the address bar (and this
 * history entry) at once. Returns whether the fragment held one.
 */
function takeTokenFromFragment() {
  if (!PORTAL || !location.hash.startsWith('#token=')) return false;
  let token = location.hash.slice('#token='.length).split('&')[0];
  try {
    token = decodeURIComponent(token);
  } catch {
    // Not percent-encoded after all: taken as it is.
  }
  history.replaceState(null, '', `${location.pathname}${location.search}#/endpoints`);
  token = token.trim();
  if (token) {
    portalClosed = null;
    setToken(token);
  }
  return true;
}

/** Portal: the API refused the link's token (or there is none): say so, on every page. */
function closePortal(why) {
  portalClosed = why;
  setToken(null);
  routeSeq++; // whatever page was being built is not shown
  stopWatching();
  renderPortalClosed();
}

function renderPortalClosed() {
  document.getElementById('main-nav').hidden = true;
  document.getElementById('sign-out').hidden = true;
  const texts = {
    expired: ['This link has expired or was revoked',
      'Ask the service that sent it to you for a new one, then open the new link.'],
    missing: ['This page opens from your link',
      'Open the link you were sent. If it no longer works, it has expired or was revoked: ask the service that sent it to you for a new one.'],
    'signed-out': ['You are signed out',
      'To come back, open your link again. If it no longer works, ask the service that sent it to you for a new one.'],
  };
  const [title, text] = texts[portalClosed] || texts.expired;
  setTitle(title);
  const heading = h('h1', { tabindex: '-1', id: 'page-title' }, title);
  main.replaceChildren(h('div', { class: 'view closed', 'data-closed': portalClosed }, h('div', { class: 'page-header' }, heading), h('p', {}, text)));
  heading.focus();
}

let tokenPrompt = null;

/** Shows the token dialog (one at a time, shared by concurrent requests). */
function askToken(message) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const cancel = document.getElementById('token-cancel');
  document.getElementById('token-message').textContent =
    message || 'This hookd needs its admin token (HOOKD_ADMIN_TOKEN) for the API.';
  input.value = '';
  tokenPrompt = new Promise((resolve, reject) => {
    const done = (token) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('close', onClose);
      if (dialog.open) dialog.close();
      tokenPrompt = null;
      if (token) {
        setToken(token);
        resolve(token);
      } else {
        reject(new ApiError(401, 'unauthorized', 'The admin token is needed to show this.'));
      }
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (token) done(token);
    };
    const onCancel = () => done(null);
    const onClose = () => done(null); // Escape
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('close', onClose);
  });
  dialog.showModal();
  input.focus();
  return tokenPrompt;
}

// ---------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * One call to the API: `{ data, etag }`. `headers` adds request headers (`If-Match`). A 401
 * asks for the admin token and tries again, or closes the portal.
 */
async function request(method, path, { body, headers: extra } = {}) {
  for (;;) {
    const token = storedToken();
    const headers = { Accept: 'application/json', ...extra };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new ApiError(0, 'network', `hookd did not answer (${e.message}).`);
    }
    if (res.status === 401 && PORTAL) {
      const current = storedToken();
      if (current && current !== token) continue; // a new link was opened meanwhile
      if (!portalClosed) closePortal(token ? 'expired' : 'missing');
      throw new ApiError(401, 'link_closed', 'This link has expired or was revoked.');
    }
    if (res.status === 401) {
      const current = storedToken();
      if (current && current !== token) continue; // a new token was entered meanwhile
      if (token) setToken(null);
      await askToken(
        token
          ? 'That token was refused. Enter the admin token (HOOKD_ADMIN_TOKEN) again.'
          : 'This hookd needs its admin token (HOOKD_ADMIN_TOKEN) for the API.',
      );
      continue;
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = data && data.error;
      throw new ApiError(
        res.status,
        (err && err.code) || 'http_error',
        (err && err.message) || `hookd answered ${res.status} ${res.statusText}.`,
      );
    }
    return { data, etag: res.headers.get('ETag') };
  }
}

async function api(method, path, body) {
  return (await request(method, path, { body })).data;
}

const enc = encodeURIComponent;

function withQuery(path, params) {
  const query = params.toString();
  return query ? `${path}?${query}` : path;
}

// ---------------------------------------------------------------------------------------
// Shared pieces

let endpointCache = null;

/** Every endpoint (all pages), cached for a few seconds. */
async function loadEndpoints(force = false) {
  if (!force && endpointCache && Date.now() - endpointCache.at < 10000) return endpointCache;
  const list = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: '1000' });
    if (cursor) query.set('cursor', cursor);
    const page = await api('GET', `/v1/endpoints?${query}`);
    list.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  endpointCache = { at: Date.now(), list, byId: new Map(list.map((e) => [e.id, e])) };
  return endpointCache;
}

/** Per endpoint, its figures over the last 24 hours (GET /v1/endpoints/summary, all pages). */
async function loadSummary() {
  const byId = new Map();
  let cursor = null;
  let since = null;
  do {
    const query = new URLSearchParams({ window: SUMMARY_WINDOW, limit: '1000' });
    if (cursor) query.set('cursor', cursor);
    const page = await api('GET', `/v1/endpoints/summary?${query}`);
    since = since || page.since;
    for (const s of page.data) byId.set(s.endpoint_id, s);
    cursor = page.next_cursor;
  } while (cursor);
  return { since, byId };
}

let catalogCache = null;

/** The event-type catalog (GET /v1/event-types, all pages), cached for a few seconds. */
async function loadCatalog(force = false) {
  if (!force && catalogCache && Date.now() - catalogCache.at < 10000) return catalogCache.list;
  const list = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: '1000' });
    if (cursor) query.set('cursor', cursor);
    const page = await api('GET', `/v1/event-types?${query}`);
    list.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  catalogCache = { at: Date.now(), list };
  return list;
}

function endpointName(endpoint) {
  return endpoint.description || endpoint.url;
}

// A message for the next page (after a delete, the endpoint's page is gone).
let carried = null;

/** A live region for the outcome of a button press, holding the message carried here, if any. */
function noticeRegion() {
  const region = h('div', { class: 'flash', role: 'status', 'aria-live': 'polite' });
  if (carried) {
    flash(region, carried.text, carried.tone);
    carried = null;
  }
  return region;
}

const STATE_LABELS = { pending: 'pending', in_flight: 'in flight', succeeded: 'succeeded', failed: 'failed' };

function stateBadge(state) {
  return h('span', { class: `badge state-${state}` }, STATE_LABELS[state] || state);
}

function outcomeBadge(outcome) {
  const tone = outcome === 'success' ? 'good' : outcome === 'lost' ? 'warn' : 'bad';
  return h('span', { class: `badge ${tone}` }, outcome.replace('_', ' '));
}

function errorNotice(err, retry) {
  const box = h('div', { class: 'notice error', role: 'alert' }, h('p', {}, err.message || String(err)));
  if (err instanceof ApiError && err.code === 'unauthorized') {
    box.append(
      h('button', {
        type: 'button',
        class: 'button',
        on: { click: () => askToken().then(retry, () => {}) },
      }, 'Enter admin token'),
    );
  } else if (retry) {
    box.append(h('button', { type: 'button', class: 'button secondary', on: { click: retry } }, 'Try again'));
  }
  return box;
}

/** A small live region for the outcome of a button press. */
function flash(region, text, tone = 'info') {
  region.className = `flash ${tone}`;
  region.textContent = text;
}

function pageHeader(title, ...tools) {
  return h('div', { class: 'page-header' },
    h('h1', { tabindex: '-1', id: 'page-title' }, title),
    h('div', { class: 'tools' }, tools));
}

function refreshButton() {
  return h('button', { type: 'button', class: 'button secondary', on: { click: () => route() } }, 'Refresh');
}

function lastResult(d) {
  if (d.last_error) return d.last_error;
  if (d.last_status_code != null) return `HTTP ${d.last_status_code}`;
  return null;
}

// ---------------------------------------------------------------------------------------
// Watching deliveries until their attempts finish (after a resend, or while due soon)

const watcher = { seq: 0, ids: new Map(), onUpdate: null, running: false };

function dueSoon(d) {
  if (d.state === 'in_flight') return true;
  if (d.state !== 'pending' || !d.next_attempt_at) return false;
  return new Date(d.next_attempt_at).getTime() - Date.now() < 60000;
}

/** Polls delivery `id` about once a second while it is in flight or due within a minute. */
function watch(id) {
  watcher.ids.set(String(id), { until: Date.now() + 5 * 60000 });
  if (!watcher.running) runWatcher(watcher.seq);
}

async function runWatcher(seq) {
  watcher.running = true;
  try {
    while (watcher.seq === seq && watcher.ids.size > 0) {
      await sleep(1000);
      if (watcher.seq !== seq) return;
      await eachLimited([...watcher.ids.keys()], 4, async (id) => {
        const entry = watcher.ids.get(id);
        if (!entry) return;
        let d;
        try {
          d = await api('GET', `/v1/deliveries/${enc(id)}`);
        } catch {
          if (Date.now() > entry.until) watcher.ids.delete(id);
          return;
        }
        if (watcher.seq !== seq) return;
        if (Date.now() > entry.until || !dueSoon(d)) watcher.ids.delete(id);
        if (watcher.onUpdate) watcher.onUpdate(d);
      });
    }
  } finally {
    if (watcher.seq === seq) watcher.running = false;
  }
}

function stopWatching() {
  watcher.seq++;
  watcher.ids.clear();
  watcher.onUpdate = null;
  watcher.running = false;
}

// ---------------------------------------------------------------------------------------
// Page: endpoints, the last 24 hours first

async function renderEndpoints(view, isCurrent) {
  setTitle('Endpoints');
  append(view, pageHeader('Endpoints', newEndpointLink(), refreshButton()), noticeRegion());
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading endpoints…'));
  view.append(body);
  let cache;
  let summary = null;
  let summaryError = null;
  try {
    [cache, summary] = await Promise.all([
      loadEndpoints(true),
      loadSummary().catch((err) => {
        summaryError = err;
        return null;
      }),
    ]);
  } catch (err) {
    if (isCurrent()) fill(body, errorNotice(err, () => route()));
    return;
  }
  if (!isCurrent()) return;
  if (cache.list.length === 0) {
    fill(body, h('div', { class: 'empty-state' },
      h('p', { class: 'empty' }, 'No endpoints yet.'),
      h('p', {}, PORTAL
        ? 'Add the URL where you want to receive webhooks: New endpoint.'
        : ['Add one with New endpoint, or ', h('code', {}, 'POST /v1/endpoints'), ' (see docs/api.md).'])));
    return;
  }
  const figures = (e) => summary && summary.byId.get(e.id);
  const tbody = h('tbody', {}, cache.list.map((e) => {
    const s = figures(e);
    return h('tr', { 'data-endpoint-id': e.id },
      h('td', { class: 'endpoint-cell' },
        h('a', { class: 'endpoint-name', href: `#/endpoints/${enc(e.id)}` }, endpointName(e)),
        e.description ? h('div', { class: 'url' }, e.url) : null,
        h('div', { class: 'meta' },
          h('span', { class: 'mono' }, e.id),
          ' · events: ', e.event_types.join(', '),
          e.ordered ? [' · ', h('span', { class: 'badge neutral' }, 'ordered')] : null,
          e.rate_limit != null ? [' · ', h('span', { class: 'badge neutral', title: 'Rate limit' }, `at most ${e.rate_limit}/s`)] : null)),
      h('td', {}, healthCell(e)),
      h('td', {}, timeEl(e.last_success_at, 'never')),
      h('td', {}, e.failing_since ? timeEl(e.failing_since) : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'num' }, rateCell(e, s, summaryError)),
      h('td', { class: 'num' }, s
        ? (s.pending > 0 ? h('a', { href: `#/deliveries?endpoint_id=${enc(e.id)}&state=pending`, 'aria-label': `${s.pending} pending deliveries to ${endpointName(e)}` }, String(s.pending)) : '0')
        : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'actions' },
        h('a', { href: `#/endpoints/${enc(e.id)}`, 'aria-label': `Manage ${endpointName(e)}` }, 'Manage'),
        h('a', { href: `#/deliveries?endpoint_id=${enc(e.id)}`, 'aria-label': `Deliveries to ${endpointName(e)}` }, 'Deliveries')));
  }));
  fill(body,
    overview(cache.list, summary, summaryError),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'data endpoints' },
        h('caption', { class: 'visually-hidden' }, 'Endpoints and their health'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Endpoint'),
          h('th', { scope: 'col' }, 'Status'),
          h('th', { scope: 'col' }, 'Last success'),
          h('th', { scope: 'col' }, 'Failing since'),
          h('th', { scope: 'col', class: 'num' }, 'Success, 24 h'),
          h('th', { scope: 'col', class: 'num' }, 'Pending'),
          h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Links')))),
        tbody)));
}

/** The last 24 hours over every endpoint, and the endpoints that are disabled and why. */
function overview(list, summary, summaryError) {
  const section = h('section', { class: 'overview', 'aria-labelledby': 'overview-title' },
    h('h2', { id: 'overview-title' }, 'Last 24 hours'));
  if (!summary) {
    section.append(h('p', { class: 'notice warn' }, `The figures are unavailable: ${summaryError ? summaryError.message : 'no answer'}`));
  } else {
    const total = { deliveries: 0, succeeded: 0, failed: 0, retrying: 0, pending: 0 };
    for (const s of summary.byId.values()) for (const key of Object.keys(total)) total[key] += s[key];
    const finished = total.succeeded + total.failed;
    const stat = (label, value, href, tone) => h('div', { class: `stat${tone ? ` ${tone}` : ''}`, 'data-stat': label },
      h('dt', {}, label),
      h('dd', {}, href && value !== '0' ? h('a', { href }, value) : value));
    section.append(h('dl', { class: 'stats' },
      stat('Deliveries', String(total.deliveries), '#/deliveries?since=24h'),
      stat('Succeeded', finished ? percent(total.succeeded, finished) : '—', null,
        finished ? rateTone(total.succeeded, finished) : null),
      stat('Failed', String(total.failed), '#/deliveries?state=failed&since=24h', total.failed ? 'bad' : null),
      stat('Retrying', String(total.retrying), '#/deliveries?state=pending&since=24h', total.retrying ? 'warn' : null),
      stat('Pending now', String(total.pending), '#/deliveries?state=pending')));
  }
  const disabled = list.filter((e) => !e.enabled);
  if (disabled.length) {
    section.append(h('div', { class: 'notice warn disabled-list' },
      h('p', {}, disabled.length === 1 ? 'One endpoint is disabled: it gets no new deliveries.' : `${disabled.length} endpoints are disabled: they get no new deliveries.`),
      h('ul', {}, disabled.map((e) => h('li', {},
        h('a', { href: `#/endpoints/${enc(e.id)}` }, endpointName(e)), ': ',
        disabledWhy(e.disabled_reason),
        e.disabled_at ? [' (', timeEl(e.disabled_at), ')'] : null)))));
  }
  return section;
}

/** A disabling reason in words (the API's reasons start `gone:` or `failing:`). */
function disabledWhy(reason) {
  if (!reason) return 'no reason given';
  if (reason.startsWith('gone:')) return `hookd disabled it: ${reason.slice(5).trim()}`;
  if (reason.startsWith('failing:')) return `hookd disabled it: ${reason.slice(8).trim()}`;
  return reason;
}

/** `ok` of `n` as a percentage, floored to a tenth: 99.96% shows 99.9%, never 100%. */
function percent(ok, n) {
  return `${Math.floor((1000 * ok) / n) / 10}%`;
}

function rateTone(ok, n) {
  const rate = ok / n;
  return rate >= 0.99 ? 'good' : rate >= 0.9 ? 'warn' : 'bad';
}

function rateCell(e, s, summaryError) {
  if (!s) return h('span', { class: 'muted', title: summaryError ? summaryError.message : '' }, summaryError ? 'unavailable' : '…');
  const finished = s.succeeded + s.failed;
  if (finished === 0) {
    return [
      h('span', { class: 'muted' }, s.deliveries ? 'none finished' : 'no deliveries'),
      s.retrying ? h('div', { class: 'meta' }, `${s.retrying} retrying`) : null,
    ];
  }
  const since = `&since=${SUMMARY_WINDOW}`;
  return [
    h('span', { class: `rate ${rateTone(s.succeeded, finished)}` }, percent(s.succeeded, finished)),
    h('div', { class: 'meta' }, `${s.succeeded} of ${finished} finished`),
    s.failed ? h('div', { class: 'meta' }, h('a', { href: `#/deliveries?endpoint_id=${enc(e.id)}&state=failed${since}`, 'aria-label': `${s.failed} failed deliveries to ${endpointName(e)} in 24 hours` }, `${s.failed} failed`)) : null,
    s.retrying ? h('div', { class: 'meta' }, `${s.retrying} retrying`) : null,
  ];
}

function healthCell(e) {
  if (!e.enabled) {
    return [
      h('span', { class: 'badge bad' }, 'disabled'),
      h('div', { class: 'reason' }, e.disabled_reason || 'no reason given'),
      e.disabled_at ? h('div', { class: 'meta' }, 'since ', timeEl(e.disabled_at)) : null,
    ];
  }
  if (e.unreadable) {
    return [
      h('span', { class: 'badge bad' }, 'secrets unreadable'),
      h('div', { class: 'reason' }, e.unreadable),
    ];
  }
  if (e.failing_since) {
    return [h('span', { class: 'badge warn' }, 'enabled, failing')];
  }
  if (!e.last_success_at) return [h('span', { class: 'badge neutral' }, 'enabled')];
  return [h('span', { class: 'badge good' }, 'enabled, healthy')];
}

function newEndpointLink() {
  return h('a', { class: 'button', href: '#/endpoints/new', id: 'new-endpoint' }, 'New endpoint');
}

// ---------------------------------------------------------------------------------------
// The endpoint form: the fields of POST /v1/endpoints and PATCH /v1/endpoints/{id}

const SCHEMES = [
  ['standard', 'Standard Webhooks'],
  ['toss', 'Toss Payments'],
  ['none', 'none (unsigned)'],
];

class FormError extends Error {}

/**
 * The form's fields, filled from endpoint `e` (null: a new one). `read()` returns what the
 * fields say, or throws a FormError for text that cannot be sent as it is.
 */
function endpointFields(e) {
  const creating = !e;
  const field = (id, label, control, hint, wide) => h('div', { class: `field${wide ? ' wide' : ''}` },
    h('label', { for: id }, label), control, hint ? h('div', { class: 'hint', id: `${id}-hint` }, hint) : null);
  const text = (id, value, more = {}) => h('input', {
    id, type: 'text', value: value ?? '', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': `${id}-hint`, ...more,
  });
  const url = text('ep-url', e && e.url, { type: 'url', required: true });
  const description = text('ep-description', e && e.description, { maxlength: '1024' });
  const types = text('ep-event-types', e ? e.event_types.join(', ') : '*');
  const picks = catalogPicks(types);
  const scheme = h('select', { id: 'ep-scheme', 'aria-describedby': 'ep-scheme-hint' },
    SCHEMES.map(([value, label]) => h('option', { value, selected: value === (e ? e.signature_scheme : 'standard') }, label)));
  const secret = creating ? text('ep-secret', '', { type: 'password', autocomplete: 'new-password' }) : null;
  const timeout = text('ep-timeout', e && e.timeout, { placeholder: "hookd's default" });
  const schedule = e && e.retry_schedule;
  const retryMode = h('select', { id: 'ep-retry-mode', 'aria-describedby': 'ep-retry-mode-hint' },
    h('option', { value: 'default', selected: schedule == null }, "hookd's schedule"),
    h('option', { value: 'custom', selected: schedule != null && schedule.length > 0 }, 'this schedule:'),
    h('option', { value: 'none', selected: schedule != null && schedule.length === 0 }, 'no automatic retry'));
  const retry = text('ep-retry', schedule && schedule.length ? schedule.join(', ') : '', { placeholder: 'e.g. 1m, 5m, 30m, 2h' });
  const syncRetry = () => {
    retry.disabled = retryMode.value !== 'custom';
  };
  retryMode.addEventListener('change', () => {
    syncRetry();
    if (!retry.disabled) retry.focus();
  });
  syncRetry();
  const headers = h('textarea', { id: 'ep-headers', rows: '3', spellcheck: 'false', 'aria-describedby': 'ep-headers-hint', placeholder: 'X-Team: billing' });
  headers.value = e ? Object.entries(e.headers || {}).map(([k, v]) => `${k}: ${v}`).join('\n') : '';
  const bearer = text('ep-bearer', '', { type: 'password', autocomplete: 'new-password' });
  const bearerRemove = e && e.has_bearer_token ? h('input', { type: 'checkbox', id: 'ep-bearer-remove' }) : null;
  const ordered = h('input', { type: 'checkbox', id: 'ep-ordered', checked: Boolean(e && e.ordered) });
  const rateLimit = text('ep-rate-limit', e && e.rate_limit != null ? String(e.rate_limit) : '', {
    type: 'number', min: '0', step: 'any', inputmode: 'decimal', placeholder: 'unlimited',
  });

  const el = h('div', { class: 'endpoint-fields' },
    h('div', { class: 'field-grid' },
      field('ep-url', 'URL', url, 'Where events are sent, with POST: http or https.', true),
      field('ep-description', 'Description', description, 'Optional: a name for it here.'),
      field('ep-event-types', 'Event types', types, 'Separated by commas: exact names (order.paid), prefixes (payment.*), or * for every event.', true),
      picks,
      field('ep-scheme', 'Signature scheme', scheme, 'How each request is signed.'),
      creating ? field('ep-secret', 'Signing secret', secret, 'Leave empty to have one generated (shown once). For Toss Payments: your secret key.') : null,
      field('ep-timeout', 'Timeout', timeout, 'Per attempt, at most 1m (e.g. 5s). Empty: hookd\u2019s default.'),
      field('ep-rate-limit', 'Rate limit (per second)', rateLimit, 'At most this many deliveries a second (e.g. 20, or 0.5); the rest wait their turn. Empty: unlimited.'),
      field('ep-retry-mode', 'Retries', retryMode, 'When an attempt fails.'),
      field('ep-retry', 'Retry schedule', retry, 'The delay before each retry, separated by commas.'),
      field('ep-headers', 'Static headers', headers, 'Added to every request, one per line: Name: value.', true),
      field('ep-bearer', 'Bearer token for the receiver', bearer,
        creating ? 'Optional: sent as Authorization: Bearer ….'
          : e.has_bearer_token ? 'One is set: leave empty to keep it, or type a new one.' : 'None is set: optional.'),
      bearerRemove ? h('div', { class: 'field check' }, bearerRemove, h('label', { for: 'ep-bearer-remove' }, 'Remove the bearer token')) : null,
      h('div', { class: 'field check wide' }, ordered,
        h('label', { for: 'ep-ordered' }, 'Ordered: send its deliveries strictly in order, one at a time'))));

  const read = () => {
    const headerMap = {};
    headers.value.split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      const colon = line.indexOf(':');
      if (colon <= 0) throw new FormError(`Static headers, line ${i + 1}: write it as Name: value.`);
      headerMap[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
    });
    let retrySchedule = null;
    if (retryMode.value === 'none') retrySchedule = [];
    if (retryMode.value === 'custom') {
      retrySchedule = retry.value.split(',').map((d) => d.trim()).filter(Boolean);
      if (!retrySchedule.length) throw new FormError('Retry schedule: write at least one delay (e.g. 1m, 5m), or choose another kind of retries.');
    }
    let limit = null;
    if (rateLimit.value.trim() !== '') {
      limit = Number(rateLimit.value);
      if (!Number.isFinite(limit) || limit <= 0) throw new FormError('Rate limit: a number of deliveries per second above 0 (e.g. 20), or empty for unlimited.');
    } else if (rateLimit.validity && rateLimit.validity.badInput) {
      throw new FormError('Rate limit: a number of deliveries per second above 0 (e.g. 20), or empty for unlimited.');
    }
    return {
      url: url.value.trim(),
      description: description.value.trim() || null,
      event_types: types.value.split(/[\s,]+/).filter(Boolean),
      signature_scheme: scheme.value,
      secret: secret ? secret.value.trim() : '',
      timeout: timeout.value.trim() || null,
      retry_schedule: retrySchedule,
      headers: headerMap,
      bearer_token: bearer.value.trim(),
      remove_bearer: Boolean(bearerRemove && bearerRemove.checked),
      ordered: ordered.checked,
      rate_limit: limit,
    };
  };
  return { el, read };
}

/**
 * The catalog's event types as a pick-list beside the event types field (hidden while the
 * catalog is empty or cannot be read): ticking one adds its name to the field, unticking
 * removes it; typing in the field ticks what it names. The field stays what is sent, so a
 * type not in the catalog or a prefix can still be typed.
 */
function catalogPicks(types) {
  const list = h('ul', { class: 'catalog-picks' });
  const box = h('fieldset', { class: 'field wide catalog', id: 'ep-catalog', hidden: true },
    h('legend', {}, 'From the event-type catalog'), list);
  const named = () => types.value.split(/[\s,]+/).filter(Boolean);
  const sync = () => {
    const now = named();
    for (const input of list.querySelectorAll('input[data-type]')) input.checked = now.includes(input.dataset.type);
  };
  types.addEventListener('input', sync);
  loadCatalog().then((catalog) => {
    if (!catalog.length) return;
    catalog.forEach((t, i) => {
      const id = `ep-type-${i}`;
      const input = h('input', { type: 'checkbox', id, 'data-type': t.name });
      input.addEventListener('change', () => {
        // Ticking a type narrows "every event" to the types ticked.
        let now = named().filter((n) => n !== t.name && !(input.checked && n === '*'));
        if (input.checked) now.push(t.name);
        types.value = now.join(', ');
      });
      list.append(h('li', {}, input,
        h('label', { for: id }, h('span', { class: 'mono' }, t.name),
          t.description ? h('span', { class: 'hint' }, t.description) : null)));
    });
    sync();
    box.hidden = false;
  }, () => {
    // Without the catalog the field alone still works.
  });
  return box;
}

/** The body of POST /v1/endpoints: what the form says, defaults left out. */
function createBody(v) {
  const body = { url: v.url, signature_scheme: v.signature_scheme };
  if (v.description) body.description = v.description;
  if (v.event_types.length) body.event_types = v.event_types;
  if (v.secret) body.secret = v.secret;
  if (v.timeout) body.timeout = v.timeout;
  if (v.retry_schedule) body.retry_schedule = v.retry_schedule;
  if (Object.keys(v.headers).length) body.headers = v.headers;
  if (v.bearer_token) body.bearer_token = v.bearer_token;
  if (v.ordered) body.ordered = true;
  if (v.rate_limit != null) body.rate_limit = v.rate_limit;
  return body;
}

/** The body of PATCH /v1/endpoints/{id}: only what the form changed on endpoint `e`. */
function patchBody(e, v) {
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const sorted = (o) => Object.fromEntries(Object.entries(o || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const body = {};
  if (v.url !== e.url) body.url = v.url;
  if (v.description !== (e.description || null)) body.description = v.description;
  if (!same(v.event_types, e.event_types)) body.event_types = v.event_types;
  if (v.signature_scheme !== e.signature_scheme) body.signature_scheme = v.signature_scheme;
  if (v.timeout !== (e.timeout || null)) body.timeout = v.timeout;
  if (!same(v.retry_schedule, e.retry_schedule ?? null)) body.retry_schedule = v.retry_schedule;
  if (!same(sorted(v.headers), sorted(e.headers))) body.headers = v.headers;
  if (v.remove_bearer) body.bearer_token = null;
  else if (v.bearer_token) body.bearer_token = v.bearer_token;
  if (v.ordered !== e.ordered) body.ordered = v.ordered;
  if (v.rate_limit !== (e.rate_limit ?? null)) body.rate_limit = v.rate_limit;
  return body;
}

/** A secret shown once, with a Copy button. */
function secretPanel(title, secret, ...notes) {
  const input = h('input', {
    type: 'text', id: 'secret-value', class: 'secret', readonly: true, value: secret,
    spellcheck: 'false', autocomplete: 'off', 'aria-label': title, 'aria-describedby': 'secret-once',
  });
  const status = h('span', { class: 'copy-status', id: 'copy-status', role: 'status', 'aria-live': 'polite' });
  const copy = h('button', {
    type: 'button', class: 'button', id: 'copy-secret',
    on: {
      click: async () => {
        status.textContent = (await copyText(input)) ? 'Copied.' : 'Could not copy: select it and copy it by hand.';
      },
    },
  }, 'Copy');
  input.addEventListener('focus', () => input.select());
  return h('section', { class: 'panel secret-panel', id: 'secret-panel', 'aria-labelledby': 'secret-title' },
    h('h2', { id: 'secret-title', tabindex: '-1' }, title),
    h('p', { id: 'secret-once' }, 'Shown this once: copy it now into your receiver\u2019s configuration. This page does not show it again.'),
    h('div', { class: 'secret-row' }, input, copy, status),
    notes.filter(Boolean).map((note) => h('p', { class: 'hint' }, note)));
}

async function copyText(input) {
  try {
    await navigator.clipboard.writeText(input.value);
    return true;
  } catch {
    input.select();
    try {
      return document.execCommand('copy');
    } catch {
      return false;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Page: a new endpoint

async function renderNewEndpoint(view, isCurrent) {
  setTitle('New endpoint');
  const notices = noticeRegion();
  const fields = endpointFields(null);
  const submit = h('button', { type: 'submit', class: 'button', id: 'create-endpoint' }, 'Create endpoint');
  const form = h('form', { class: 'form-panel', 'aria-labelledby': 'page-title', novalidate: true },
    fields.el,
    h('div', { class: 'actions' }, submit, h('a', { class: 'button secondary', href: '#/endpoints' }, 'Cancel')));
  append(view, h('a', { class: 'back', href: '#/endpoints' }, '‹ Endpoints'), pageHeader('New endpoint'), notices, form);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let v;
    try {
      v = fields.read();
    } catch (err) {
      flash(notices, err.message, 'error');
      return;
    }
    if (!v.url) {
      flash(notices, 'URL: where should events be sent?', 'error');
      document.getElementById('ep-url').focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Creating…';
    let created;
    try {
      created = await api('POST', '/v1/endpoints', createBody(v));
    } catch (err) {
      flash(notices, `Not created: ${err.message}`, 'error');
      submit.disabled = false;
      submit.textContent = 'Create endpoint';
      return;
    }
    endpointCache = null;
    if (!isCurrent()) return;
    // The page becomes the receipt, secret included; the address does not change, so a
    // reload or a later visit cannot show the secret again.
    setTitle('Endpoint created');
    fill(view,
      h('a', { class: 'back', href: '#/endpoints' }, '‹ Endpoints'),
      pageHeader(`Created: ${endpointName(created)}`),
      h('p', {}, 'Events of ', h('strong', {}, created.event_types.join(', ')), ' go to ', h('span', { class: 'url' }, created.url), '.'),
      v.secret
        ? h('p', { class: 'notice' }, 'It signs with the secret you gave.')
        : secretPanel('Signing secret', created.secret,
          created.signature_scheme === 'none' ? 'This endpoint is not signed (scheme none): the secret is kept for a later change of scheme.' : null),
      h('div', { class: 'actions' },
        h('a', { class: 'button', href: `#/endpoints/${enc(created.id)}`, id: 'created-done' }, 'Done'),
        h('a', { class: 'button secondary', href: '#/endpoints/new' }, 'Add another')));
    (document.getElementById('secret-title') || document.getElementById('page-title'))?.focus();
  });
}

// ---------------------------------------------------------------------------------------
// Page: one endpoint. Every change carries the ETag of the version shown (If-Match): a change
// made by someone else (or hookd disabling it) since is refused with 412, and the page reloads.

async function renderEndpoint(view, isCurrent, id) {
  setTitle('Endpoint');
  const notices = noticeRegion();
  const header = h('div', {}, pageHeader('Endpoint'));
  const content = h('div', {}, h('p', { class: 'loading' }, 'Loading endpoint…'));
  append(view, h('a', { class: 'back', href: '#/endpoints' }, '‹ Endpoints'), header, notices, content);

  let shown; // { e, etag }: the version on screen
  const load = async () => {
    const { data, etag } = await request('GET', `/v1/endpoints/${enc(id)}`);
    shown = { e: data, etag };
  };
  try {
    await load();
  } catch (err) {
    if (isCurrent()) fill(content, errorNotice(err, () => route()));
    return;
  }
  if (!isCurrent()) return;

  const actionArea = h('div', { id: 'endpoint-action-area' });
  let fields;
  const draw = () => {
    const e = shown.e;
    setTitle(endpointName(e));
    fill(header, pageHeader(endpointName(e),
      h('a', { class: 'button secondary', href: `#/deliveries?endpoint_id=${enc(e.id)}` }, 'Deliveries'),
      refreshButton()));
    fields = endpointFields(e);
    const toggle = h('button', {
      type: 'button', class: `button${e.enabled ? ' secondary' : ''}`, id: 'toggle-enabled',
      on: { click: () => setEnabled(!e.enabled) },
    }, e.enabled ? 'Disable' : 'Enable');
    fill(actionArea);
    fill(content,
      endpointFacts(e),
      h('section', { 'aria-labelledby': 'actions-title' },
        h('h2', { id: 'actions-title' }, 'Actions'),
        h('div', { class: 'actions' },
          toggle,
          h('button', { type: 'button', class: 'button secondary', id: 'rotate-open', on: { click: openRotate } }, 'Rotate secret…'),
          h('button', { type: 'button', class: 'button secondary', id: 'delete-open', on: { click: openDelete } }, 'Delete…')),
        h('p', { class: 'hint' }, e.enabled
          ? 'Disabling keeps its pending deliveries without sending them, and gives it no new ones, until it is enabled again.'
          : 'Enabling sends its kept deliveries at once, and gives it new ones again.'),
        actionArea),
      h('section', { 'aria-labelledby': 'settings-title' },
        h('h2', { id: 'settings-title' }, 'Settings'),
        settingsForm()));
  };

  const settingsForm = () => {
    const save = h('button', { type: 'submit', class: 'button', id: 'save-endpoint' }, 'Save changes');
    const form = h('form', { class: 'form-panel', 'aria-labelledby': 'settings-title', novalidate: true },
      fields.el,
      h('div', { class: 'actions' },
        save,
        h('button', { type: 'button', class: 'button secondary', on: { click: () => { draw(); flash(notices, 'Changes discarded.'); } } }, 'Discard changes')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      let body;
      try {
        body = patchBody(shown.e, fields.read());
      } catch (err) {
        flash(notices, err.message, 'error');
        return;
      }
      if (Object.keys(body).length === 0) {
        flash(notices, 'Nothing to save: no setting was changed.');
        return;
      }
      save.disabled = true;
      save.textContent = 'Saving…';
      if (await change('PATCH', `/v1/endpoints/${enc(id)}`, body)) {
        flash(notices, `Saved: ${Object.keys(body).join(', ').replaceAll('_', ' ')}.`);
        document.getElementById('save-endpoint')?.focus();
      } else {
        save.disabled = false;
        save.textContent = 'Save changes';
      }
    });
    return form;
  };

  /**
   * Sends a change with the shown version's ETag. On success the page shows the endpoint as
   * it answered; on 412 it reloads and says why. Returns the answer, or null.
   */
  const change = async (method, path, body) => {
    try {
      const answer = await request(method, path, { body, headers: shown.etag ? { 'If-Match': shown.etag } : {} });
      endpointCache = null;
      if (answer.data) {
        shown = { e: answer.data, etag: answer.etag };
        if (isCurrent()) draw();
      }
      return answer;
    } catch (err) {
      if (!isCurrent()) return null;
      if (err.status === 412) {
        try {
          await load();
        } catch (reloadErr) {
          flash(notices, `This endpoint changed since you opened it, and could not be read again: ${reloadErr.message}`, 'error');
          return null;
        }
        if (!isCurrent()) return null;
        draw();
        flash(notices, 'This endpoint changed since you opened it (someone else changed it, or hookd disabled it), so nothing was changed. The page now shows it as it is: check it and make your change again.', 'error');
        document.getElementById('page-title')?.focus();
      } else if (err.status === 404) {
        fill(content, h('p', { class: 'notice error' }, 'This endpoint no longer exists: it was deleted. ', h('a', { href: '#/endpoints' }, 'Back to the endpoints.')));
      } else {
        flash(notices, err.message, 'error');
      }
      return null;
    }
  };

  const setEnabled = async (enabled) => {
    const button = document.getElementById('toggle-enabled');
    button.disabled = true;
    if (await change('PATCH', `/v1/endpoints/${enc(id)}`, { enabled })) {
      flash(notices, enabled
        ? 'Enabled: it gets new deliveries again, and its kept ones are sent now.'
        : 'Disabled: its pending deliveries are kept, not sent, and it gets no new ones.');
      document.getElementById('toggle-enabled')?.focus();
    } else if (button.isConnected) {
      button.disabled = false;
    }
  };

  function openRotate() {
    const e = shown.e;
    const grace = h('select', { id: 'rotate-grace' },
      h('option', { value: '24h', selected: true }, '24 hours'),
      h('option', { value: '1h' }, '1 hour'),
      h('option', { value: '7d' }, '7 days'),
      h('option', { value: '0s' }, 'none: retire it now'));
    const confirm = h('button', { type: 'button', class: 'button', id: 'rotate-confirm', on: { click: () => rotate(grace.value) } }, 'Rotate secret');
    fill(actionArea, h('section', { class: 'panel', 'aria-labelledby': 'rotate-title' },
      h('h2', { id: 'rotate-title' }, 'Rotate the signing secret?'),
      h('p', {}, 'A new secret is generated and signs from now on.'),
      e.signature_scheme === 'standard'
        ? h('div', { class: 'field inline' }, h('label', { for: 'rotate-grace' }, 'The current secret keeps signing beside it for'), grace)
        : h('p', { class: 'notice warn' }, `With ${e.signature_scheme === 'toss' ? 'Toss Payments signatures' : 'no signature'}, only one secret can sign: the new one signs from now on.`),
      h('div', { class: 'actions' },
        confirm,
        h('button', { type: 'button', class: 'button secondary', on: { click: () => { fill(actionArea); document.getElementById('rotate-open')?.focus(); } } }, 'Cancel'))));
    confirm.focus();
  }

  async function rotate(graceValue) {
    const e = shown.e;
    const body = e.signature_scheme === 'standard' ? { grace: graceValue } : { grace: '0s' };
    const confirm = document.getElementById('rotate-confirm');
    if (confirm) confirm.disabled = true;
    const answer = await change('POST', `/v1/endpoints/${enc(id)}/rotate-secret`, body);
    if (!answer) {
      if (confirm && confirm.isConnected) confirm.disabled = false;
      return;
    }
    const rotated = answer.data;
    fill(actionArea, secretPanel('New signing secret', rotated.secret,
      rotated.previous_secret_expires_at
        ? ['The previous secret keeps signing beside it until ', exactTimeEl(rotated.previous_secret_expires_at), ': give the new one to your receiver before then.']
        : 'The previous secret no longer signs.'));
    flash(notices, 'Secret rotated.');
    document.getElementById('secret-title')?.focus();
  }

  function openDelete() {
    const e = shown.e;
    const confirm = h('button', { type: 'button', class: 'button danger', id: 'delete-confirm', on: { click: remove } }, 'Delete endpoint');
    fill(actionArea, h('section', { class: 'panel danger-panel', 'aria-labelledby': 'delete-title' },
      h('h2', { id: 'delete-title' }, `Delete ${endpointName(e)}?`),
      h('p', {}, 'It gets no more events, and its pending deliveries fail. Its delivery log stays readable. This cannot be undone.'),
      h('div', { class: 'actions' },
        confirm,
        h('button', { type: 'button', class: 'button secondary', on: { click: () => { fill(actionArea); document.getElementById('delete-open')?.focus(); } } }, 'Cancel'))));
    confirm.focus();
  }

  async function remove() {
    const name = endpointName(shown.e);
    const confirm = document.getElementById('delete-confirm');
    if (confirm) confirm.disabled = true;
    if (await change('DELETE', `/v1/endpoints/${enc(id)}`)) {
      carried = { text: `Deleted ${name}. Its delivery log stays readable.`, tone: 'info' };
      location.hash = '#/endpoints';
    } else if (confirm && confirm.isConnected) {
      confirm.disabled = false;
    }
  }

  draw();
}

/** What an endpoint is, beside its settings: health, identity, rotation. */
function endpointFacts(e) {
  const row = (label, ...value) => [h('dt', {}, label), h('dd', {}, value)];
  const schemeLabel = (SCHEMES.find(([v]) => v === e.signature_scheme) || [null, e.signature_scheme])[1];
  return h('dl', { class: 'summary', id: 'endpoint-facts' },
    row('Status', healthCell(e)),
    row('ID', h('span', { class: 'mono' }, e.id)),
    row('Last success', timeEl(e.last_success_at, 'never')),
    row('Failing since', timeEl(e.failing_since)),
    row('Rate limit', e.rate_limit != null ? `at most ${e.rate_limit} deliveries/s` : h('span', { class: 'muted' }, 'unlimited')),
    row('Signature', schemeLabel,
      e.previous_secret_expires_at ? h('div', { class: 'meta' }, 'the previous secret signs too until ', exactTimeEl(e.previous_secret_expires_at)) : null),
    row('Created', timeEl(e.created_at)));
}

// ---------------------------------------------------------------------------------------
// Page: the delivery log

const FILTERS = ['state', 'endpoint_id', 'event_id', 'event_type', 'since', 'until'];
let bulkJob = null; // { id, matched, resent, state, filterText, error }
let lastLogHash = '#/deliveries';

function filterFrom(params) {
  const filter = {};
  for (const key of FILTERS) {
    const value = (params.get(key) || '').trim();
    if (value) filter[key] = key === 'since' || key === 'until' ? toApiInstant(value) : value;
  }
  return filter;
}

function describeFilter(filter, cache) {
  const parts = [];
  if (filter.state) parts.push(`state is ${STATE_LABELS[filter.state] || filter.state}`);
  if (filter.endpoint_id) {
    const e = cache && cache.byId.get(filter.endpoint_id);
    parts.push(`endpoint is ${e ? endpointName(e) : filter.endpoint_id}`);
  }
  if (filter.event_id) parts.push(`event ID is ${filter.event_id}`);
  if (filter.event_type) parts.push(`event type is ${filter.event_type}`);
  if (filter.since) parts.push(`created since ${filter.since}`);
  if (filter.until) parts.push(`created before ${filter.until}`);
  return parts.join(', ');
}

async function renderDeliveries(view, isCurrent, params) {
  setTitle('Deliveries');
  lastLogHash = location.hash || '#/deliveries';
  const filter = filterFrom(params);
  const cursor = params.get('cursor');
  const limit = params.get('limit') || String(LOG_LIMIT);

  const notices = h('div', { class: 'flash', role: 'status', 'aria-live': 'polite' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter deliveries' });
  const bulkArea = h('div', { id: 'bulk-area' });
  const results = h('div', {}, h('p', { class: 'loading' }, 'Loading deliveries…'));
  append(view, pageHeader('Deliveries', refreshButton()), form, bulkArea, notices, results);

  let cache = null;
  try {
    cache = await loadEndpoints();
  } catch (err) {
    if (!isCurrent()) return;
    if (err.code === 'unauthorized' || err.status === 0) {
      fill(results, errorNotice(err, () => route()));
      return;
    }
  }
  if (!isCurrent()) return;
  buildFilterForm(form, params, cache);
  renderBulkArea(bulkArea, filter, cache);

  const query = new URLSearchParams(filter);
  query.set('limit', limit);
  if (cursor) query.set('cursor', cursor);
  let page;
  try {
    page = await api('GET', `/v1/deliveries?${query}`);
  } catch (err) {
    if (isCurrent()) fill(results, errorNotice(err, () => route()));
    return;
  }
  if (!isCurrent()) return;

  const rows = new Map();
  const onUpdate = (d) => {
    const row = rows.get(String(d.id));
    if (row) row.update(d);
  };
  watcher.onUpdate = onUpdate;

  if (page.data.length === 0) {
    fill(results, h('p', { class: 'empty' },
      cursor ? 'No older deliveries match this filter.' : 'No deliveries match this filter.'),
    cursor ? pager(params, null) : null);
    return;
  }
  const tbody = h('tbody');
  for (const d of page.data) {
    const row = deliveryRow(d, cache, notices);
    rows.set(String(d.id), row);
    tbody.append(row.tr);
    if (dueSoon(d)) watch(d.id);
  }
  fill(results,
    h('div', { class: 'table-wrap' },
      h('table', { class: 'data deliveries' },
        h('caption', { class: 'visually-hidden' }, 'Deliveries, newest first'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', class: 'num' }, 'ID'),
          h('th', { scope: 'col' }, 'Event'),
          h('th', { scope: 'col' }, 'Endpoint'),
          h('th', { scope: 'col' }, 'State'),
          h('th', { scope: 'col', class: 'num' }, 'Attempts'),
          h('th', { scope: 'col' }, 'Last result'),
          h('th', { scope: 'col' }, 'Created'),
          h('th', { scope: 'col' }, 'Next / finished'),
          h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
        tbody)),
    pager(params, page.next_cursor, page.data.length));
  // A bulk resend that finished while this page was built: follow its rows too.
  if (bulkJob && bulkJob.state === 'done' && bulkJob.followRows) {
    bulkJob.followRows = false;
    for (const id of rows.keys()) watch(id);
  }
  renderDeliveries.rows = rows;
}

function buildFilterForm(form, params, cache) {
  const field = (id, label, control, hint) => h('div', { class: 'field' },
    h('label', { for: id }, label), control, hint ? h('div', { class: 'hint', id: `${id}-hint` }, hint) : null);
  const text = (id, name, placeholder, described) => h('input', {
    id, name, type: 'text', value: params.get(name) || '', placeholder, autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': described ? `${id}-hint` : null,
  });
  const current = params.get('state') || '';
  const stateSelect = h('select', { id: 'f-state', name: 'state' },
    h('option', { value: '' }, 'any'),
    Object.entries(STATE_LABELS).map(([value, label]) => h('option', { value, selected: value === current }, label)));
  const currentEndpoint = params.get('endpoint_id') || '';
  const endpoints = cache ? cache.list : [];
  const endpointSelect = h('select', { id: 'f-endpoint', name: 'endpoint_id' },
    h('option', { value: '' }, 'any'),
    endpoints.map((e) => h('option', { value: e.id, selected: e.id === currentEndpoint }, endpointName(e))),
    currentEndpoint && !endpoints.some((e) => e.id === currentEndpoint)
      ? h('option', { value: currentEndpoint, selected: true }, currentEndpoint)
      : null);
  fill(form,
    h('div', { class: 'field-grid' },
      field('f-state', 'State', stateSelect),
      field('f-endpoint', 'Endpoint', endpointSelect),
      field('f-event-id', 'Event ID', text('f-event-id', 'event_id', 'e.g. order-o-1')),
      field('f-event-type', 'Event type', text('f-event-type', 'event_type', 'e.g. purchase')),
      field('f-since', 'Created since', text('f-since', 'since', 'e.g. 1h', true), 'a duration ago (90m, 2d) or a local date and time (2026-11-22 07:00)'),
      field('f-until', 'Created before', text('f-until', 'until', '', true), 'same forms as “since”')),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'button' }, 'Apply filter'),
      h('a', { class: 'button secondary', href: '#/deliveries' }, 'Clear'),
      h('span', { class: 'spacer' }),
      h('button', {
        type: 'button', class: 'button secondary', id: 'bulk-open', 'aria-controls': 'bulk-area',
        on: { click: () => openBulkConfirm() },
      }, 'Resend all that match…')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const key of FILTERS) {
      const value = String(data.get(key) || '').trim();
      if (value) next.set(key, value);
    }
    if (params.get('limit')) next.set('limit', params.get('limit'));
    const hash = withQuery('#/deliveries', next);
    if (hash === location.hash) route();
    else location.hash = hash;
  });
}

function pager(params, nextCursor, shown) {
  const links = [];
  if (params.get('cursor')) {
    const first = new URLSearchParams(params);
    first.delete('cursor');
    links.push(h('a', { class: 'button secondary', href: withQuery('#/deliveries', first) }, '« Newest'));
  }
  if (nextCursor) {
    const older = new URLSearchParams(params);
    older.set('cursor', nextCursor);
    links.push(h('a', { class: 'button secondary', href: `#/deliveries?${older}`, rel: 'next' }, 'Older »'));
  }
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    shown ? h('span', { class: 'muted' }, `${shown} shown, newest first`) : null, links);
}

/** One row of the log; `update(d)` refreshes it in place (the Resend button stays, with its focus). */
function deliveryRow(d, cache, notices) {
  const cells = Array.from({ length: 8 }, () => h('td'));
  cells[0].className = 'num';
  cells[4].className = 'num';
  cells[5].className = 'result';
  cells[6].className = 'when';
  cells[7].className = 'when';
  let current = d;
  const button = h('button', {
    type: 'button', class: 'button small secondary', 'aria-label': `Resend delivery ${d.id}`,
    on: {
      click: async () => {
        button.disabled = true;
        button.textContent = 'Resending…';
        try {
          const after = await api('POST', `/v1/deliveries/${enc(current.id)}/resend`);
          update(after);
          flash(notices, `Delivery ${current.id} resent: a new attempt is due now.`);
          watch(current.id);
        } catch (err) {
          flash(notices, `Delivery ${current.id} could not be resent: ${err.message}`, 'error');
        } finally {
          button.disabled = false;
          button.textContent = 'Resend';
        }
      },
    },
  }, 'Resend');
  const tr = h('tr', { 'data-delivery-id': d.id }, cells, h('td', { class: 'actions' }, button));
  const update = (next) => {
    current = next;
    const e = cache && cache.byId.get(next.endpoint_id);
    fill(cells[0], h('a', { href: `#/deliveries/${enc(next.id)}`, 'aria-label': `Delivery ${next.id}` }, String(next.id)));
    fill(cells[1],
      h('div', {}, next.event_type),
      h('a', { class: 'mono meta', href: `#/deliveries?event_id=${enc(next.event_id)}`, title: 'All deliveries of this event' }, next.event_id));
    fill(cells[2], h('a', { href: `#/deliveries?endpoint_id=${enc(next.endpoint_id)}`, title: next.endpoint_id },
      e ? endpointName(e) : next.endpoint_id));
    fill(cells[3], stateBadge(next.state));
    fill(cells[4], String(next.attempts));
    const result = lastResult(next);
    fill(cells[5], result ? h('span', { class: next.last_error ? 'error-text' : '' }, result) : h('span', { class: 'muted' }, '—'));
    fill(cells[6], timeEl(next.created_at));
    fill(cells[7], nextOrFinished(next));
    tr.dataset.state = next.state;
  };
  update(d);
  return { tr, update };
}

function nextOrFinished(d) {
  if (d.finished_at) return ['finished ', timeEl(d.finished_at)];
  if (d.state === 'in_flight') return 'sending now';
  if (d.state === 'pending' && !d.next_attempt_at) return h('span', { title: 'The endpoint is disabled' }, 'parked');
  if (d.state === 'pending') return ['due ', timeEl(d.next_attempt_at)];
  return h('span', { class: 'muted' }, '—');
}

// Bulk resend: confirm, start the job, poll its progress until done.

function renderBulkArea(area, filter, cache) {
  area.filter = filter;
  area.cache = cache;
  fill(area);
  if (bulkJob) area.append(jobPanel());
}

function openBulkConfirm() {
  const area = document.getElementById('bulk-area');
  if (!area) return;
  const filter = area.filter || {};
  const text = describeFilter(filter, area.cache);
  const warnings = [];
  if (!text) {
    warnings.push(PORTAL
      ? 'No filter is set: this resends every delivery to your endpoints, succeeded ones included.'
      : 'No filter is set: this resends every delivery hookd has, succeeded ones included.');
  }
  else if (!filter.state) warnings.push('No state is chosen: succeeded deliveries that match are sent again too.');
  const confirmButton = h('button', {
    type: 'button', class: 'button danger', id: 'bulk-confirm',
    on: { click: () => startBulk(filter, text || 'every delivery') },
  }, 'Resend all that match');
  const panel = h('section', { class: 'panel', 'aria-labelledby': 'bulk-title' },
    h('h2', { id: 'bulk-title' }, 'Resend all that match this filter?'),
    h('p', {}, text ? `Every delivery where ${text} gets one new manual attempt, on every page of the log.` : 'Every delivery gets one new manual attempt.'),
    warnings.map((w) => h('p', { class: 'notice warn' }, w)),
    h('div', { class: 'actions' },
      confirmButton,
      h('button', { type: 'button', class: 'button secondary', on: { click: () => { renderBulkArea(area, area.filter, area.cache); document.getElementById('bulk-open')?.focus(); } } }, 'Cancel')));
  fill(area, panel);
  confirmButton.focus();
}

async function startBulk(filter, filterText) {
  const area = document.getElementById('bulk-area');
  const button = document.getElementById('bulk-confirm');
  if (button) button.disabled = true;
  let started;
  try {
    started = await api('POST', '/v1/deliveries/resend', filter);
  } catch (err) {
    if (area) fill(area, errorNotice(err));
    return;
  }
  bulkJob = { id: started.job_id, matched: started.matched, resent: 0, state: 'running', filterText, followRows: false };
  if (area) {
    fill(area, jobPanel());
    document.getElementById('bulk-status')?.focus();
  }
  pollJob(bulkJob);
}

async function pollJob(job) {
  while (bulkJob === job && job.state === 'running') {
    await sleep(700);
    try {
      const now = await api('GET', `/v1/resend-jobs/${enc(job.id)}`);
      job.matched = now.matched;
      job.resent = now.resent;
      job.state = now.state;
      job.error = null;
    } catch (err) {
      job.error = err.message;
      if (err.status === 404) job.state = 'gone';
    }
    updateJobPanel();
  }
  if (bulkJob === job && job.state === 'done') {
    const rows = renderDeliveries.rows;
    if (document.getElementById('bulk-area') && rows) {
      for (const id of rows.keys()) watch(id);
    } else {
      job.followRows = true;
    }
  }
}

function jobPanel() {
  const panel = h('section', { class: 'panel job', id: 'bulk-job', 'aria-labelledby': 'bulk-job-title' });
  panel.append(
    h('h2', { id: 'bulk-job-title' }, 'Bulk resend'),
    h('p', { class: 'meta' }, `Job `, h('span', { class: 'mono' }, bulkJob.id), ` · ${bulkJob.filterText}`),
    h('progress', { id: 'bulk-progress', max: Math.max(bulkJob.matched, 1), value: 0, 'aria-labelledby': 'bulk-status' }),
    h('p', { id: 'bulk-status', role: 'status', 'aria-live': 'polite', tabindex: '-1' }),
    h('p', { class: 'error-text', id: 'bulk-error' }),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'button secondary', id: 'bulk-dismiss', on: { click: () => { bulkJob = null; document.getElementById('bulk-job')?.remove(); } } }, 'Dismiss')));
  queueMicrotask(updateJobPanel);
  return panel;
}

function updateJobPanel() {
  const job = bulkJob;
  const status = document.getElementById('bulk-status');
  if (!job || !status) return;
  const progress = document.getElementById('bulk-progress');
  progress.max = Math.max(job.matched, 1);
  progress.value = job.state === 'done' && job.matched === 0 ? 1 : job.resent;
  const dismiss = document.getElementById('bulk-dismiss');
  dismiss.hidden = job.state === 'running';
  document.getElementById('bulk-job').dataset.state = job.state;
  if (job.state === 'done') {
    status.textContent = job.matched === 0
      ? 'Done: no delivery matched, nothing was resent.'
      : `Done: resent ${job.resent} of ${job.matched}. The rows below follow their new attempts; Refresh re-applies the filter.`;
  } else if (job.state === 'gone') {
    status.textContent = 'This job is no longer known to hookd.';
  } else {
    status.textContent = `Resending… ${job.resent} of ${job.matched} resent so far.`;
  }
  document.getElementById('bulk-error').textContent = job.error ? `Last check failed: ${job.error}` : '';
}

// ---------------------------------------------------------------------------------------
// Page: one delivery, its attempts and its payload

async function renderDelivery(view, isCurrent, id) {
  setTitle(`Delivery ${id}`);
  const back = h('a', { class: 'back', href: lastLogHash }, '‹ Delivery log');
  const notices = h('div', { class: 'flash', role: 'status', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', class: 'button', id: 'resend-one' }, 'Resend');
  const content = h('div', {}, h('p', { class: 'loading' }, 'Loading delivery…'));
  append(view, back, pageHeader(`Delivery ${id}`, button, refreshButton()), notices, content);
  button.hidden = true;

  let cache = null;
  let d;
  try {
    [d, cache] = await Promise.all([api('GET', `/v1/deliveries/${enc(id)}`), loadEndpoints().catch(() => null)]);
  } catch (err) {
    if (isCurrent()) fill(content, errorNotice(err, () => route()));
    return;
  }
  if (!isCurrent()) return;
  let shown = null;
  const show = (next) => {
    if (shown && shown.updated_at === next.updated_at && shown.attempt_log.length === next.attempt_log.length) return;
    shown = next;
    fill(content, deliveryDetail(next, cache));
  };
  show(d);
  button.hidden = false;
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.textContent = 'Resending…';
    try {
      await api('POST', `/v1/deliveries/${enc(id)}/resend`);
      flash(notices, 'Resent: a new manual attempt is due now. This page follows it.');
      show(await api('GET', `/v1/deliveries/${enc(id)}`));
      watch(id);
    } catch (err) {
      flash(notices, `Could not resend: ${err.message}`, 'error');
    } finally {
      button.disabled = false;
      button.textContent = 'Resend';
    }
  });
  watcher.onUpdate = (next) => {
    if (String(next.id) === String(id)) show(next);
  };
  if (dueSoon(d)) watch(id);
}

function deliveryDetail(d, cache) {
  const e = cache && cache.byId.get(d.endpoint_id);
  const row = (label, ...value) => [h('dt', {}, label), h('dd', {}, value)];
  const summary = h('dl', { class: 'summary' },
    row('State', stateBadge(d.state)),
    row('Event type', d.event_type),
    row('Event ID', h('a', { class: 'mono', href: `#/deliveries?event_id=${enc(d.event_id)}` }, d.event_id)),
    row('Endpoint', h('a', { href: `#/deliveries?endpoint_id=${enc(d.endpoint_id)}` }, e ? endpointName(e) : d.endpoint_id),
      e ? h('div', { class: 'meta mono' }, d.endpoint_id) : null),
    row('Attempts', String(d.attempts)),
    row('Last result', lastResult(d) || h('span', { class: 'muted' }, '—')),
    row('Created', timeEl(d.created_at)),
    row('Next attempt', d.state === 'pending' ? nextOrFinished(d) : h('span', { class: 'muted' }, '—')),
    row('Finished', timeEl(d.finished_at)));

  const attempts = d.attempt_log.length === 0
    ? h('p', { class: 'empty' }, 'No attempts yet.')
    : h('div', { class: 'table-wrap' },
      h('table', { class: 'data attempts' },
        h('caption', { class: 'visually-hidden' }, 'Attempts, oldest first'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', class: 'num' }, '#'),
          h('th', { scope: 'col' }, 'Started'),
          h('th', { scope: 'col' }, 'Trigger'),
          h('th', { scope: 'col', class: 'num' }, 'Status'),
          h('th', { scope: 'col', class: 'num' }, 'Latency'),
          h('th', { scope: 'col' }, 'Outcome'),
          h('th', { scope: 'col' }, 'Error'),
          h('th', { scope: 'col' }, 'Response body'))),
        h('tbody', {}, d.attempt_log.map((a) => h('tr', { 'data-attempt': a.attempt, 'data-outcome': a.outcome },
          h('td', { class: 'num' }, String(a.attempt)),
          h('td', {}, timeEl(a.started_at)),
          h('td', {}, a.trigger),
          h('td', { class: 'num' }, a.status_code == null ? h('span', { class: 'muted' }, '—') : String(a.status_code)),
          h('td', { class: 'num' }, `${a.duration_ms} ms`),
          h('td', {}, outcomeBadge(a.outcome)),
          h('td', { class: 'result' }, a.error ? h('span', { class: 'error-text' }, a.error) : h('span', { class: 'muted' }, '—')),
          h('td', { class: 'body-cell' }, a.response_body == null
            ? h('span', { class: 'muted' }, 'empty')
            : h('pre', { class: 'response', tabindex: '0', 'aria-label': `Response body of attempt ${a.attempt}` }, a.response_body)))))));

  let payload;
  if (d.payload === null || d.payload === undefined) {
    payload = h('p', { class: 'empty' }, 'The event is no longer stored.');
  } else {
    const pretty = typeof d.payload === 'string' ? d.payload : JSON.stringify(d.payload, null, 2);
    payload = h('pre', { class: 'payload', tabindex: '0', 'aria-label': 'Event payload' }, pretty);
  }
  return [
    summary,
    h('section', { 'aria-labelledby': 'attempts-title' }, h('h2', { id: 'attempts-title' }, `Attempts (${d.attempt_log.length})`), attempts),
    h('section', { 'aria-labelledby': 'payload-title' },
      h('h2', { id: 'payload-title' }, 'Payload'),
      typeof d.payload === 'string' ? h('p', { class: 'hint' }, 'Stored as a string: the producer’s payload was not valid JSON.') : null,
      payload),
  ];
}

// ---------------------------------------------------------------------------------------
// The event-type catalog: read here; the admin changes it through /v1/event-types

async function renderEventTypes(view, isCurrent) {
  setTitle('Event types');
  append(view, pageHeader('Event types', refreshButton()));
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading event types…'));
  view.append(body);
  let list;
  try {
    list = await loadCatalog(true);
  } catch (err) {
    if (isCurrent()) fill(body, errorNotice(err, () => route()));
    return;
  }
  if (!isCurrent()) return;
  if (list.length === 0) {
    fill(body, h('div', { class: 'empty-state' },
      h('p', { class: 'empty' }, 'No event types in the catalog.'),
      PORTAL ? null : h('p', {}, 'Add them with ', h('code', {}, 'POST /v1/event-types'), ' (see docs/api.md).')));
    return;
  }
  fill(body,
    h('p', { class: 'muted' }, 'The events that may be sent. Endpoints subscribe to them by name.'),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'data event-types' },
        h('caption', { class: 'visually-hidden' }, 'Event types'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Event type'),
          h('th', { scope: 'col' }, 'Description'),
          h('th', { scope: 'col' }, 'Payload schema'))),
        h('tbody', {}, list.map((t) => h('tr', { 'data-event-type': t.name },
          h('td', { class: 'mono' }, t.name),
          h('td', {}, t.description || h('span', { class: 'muted' }, '—')),
          h('td', {}, t.schema
            ? h('details', {}, h('summary', {}, 'JSON Schema'), h('pre', { class: 'payload' }, JSON.stringify(t.schema, null, 2)))
            : h('span', { class: 'muted' }, 'none: not checked'))))))));
}

// ---------------------------------------------------------------------------------------
// Routing

let routeSeq = 0;
let lastPath = null;

function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(1) : '/endpoints';
  const q = raw.indexOf('?');
  return {
    path: q < 0 ? raw : raw.slice(0, q),
    params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)),
  };
}

async function route() {
  const seq = ++routeSeq;
  const isCurrent = () => seq === routeSeq;
  stopWatching();
  if (portalClosed) {
    renderPortalClosed();
    return;
  }
  document.getElementById('main-nav').hidden = false;
  renderDeliveries.rows = null;
  const { path, params } = parseHash();
  const section = path.startsWith('/deliveries') ? 'deliveries' : path.startsWith('/endpoints') ? 'endpoints'
    : path.startsWith('/event-types') ? 'event-types' : '';
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const view = h('div', { class: 'view' });
  main.replaceChildren(view);
  const moveFocus = lastPath !== null && lastPath !== path;
  lastPath = path;

  let m;
  let rendering;
  if (path === '/' || path === '/endpoints') rendering = renderEndpoints(view, isCurrent);
  else if (path === '/endpoints/new') rendering = renderNewEndpoint(view, isCurrent);
  else if ((m = path.match(/^\/endpoints\/([^/]+)$/))) rendering = renderEndpoint(view, isCurrent, decodeURIComponent(m[1]));
  else if (path === '/deliveries') rendering = renderDeliveries(view, isCurrent, params);
  else if ((m = path.match(/^\/deliveries\/([^/]+)$/))) rendering = renderDelivery(view, isCurrent, decodeURIComponent(m[1]));
  else if (path === '/event-types') rendering = renderEventTypes(view, isCurrent);
  else {
    setTitle('Not found');
    append(view, pageHeader('Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/endpoints' }, 'Go to the endpoints.')));
  }
  if (moveFocus) document.getElementById('page-title')?.focus();
  try {
    await rendering;
  } catch (err) {
    if (isCurrent()) view.append(errorNotice(err, () => route()));
  }
}

window.addEventListener('hashchange', () => {
  if (takeTokenFromFragment()) route(); // a portal link opened in this tab
  else if (location.hash.startsWith('#/') || location.hash === '') route();
});

document.getElementById('skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  (document.getElementById('page-title') || main).focus();
});

document.getElementById('forget-token').addEventListener('click', () => {
  setToken(null);
  route();
});

document.getElementById('sign-out').addEventListener('click', () => {
  closePortal('signed-out');
});

if (PORTAL) {
  document.body.classList.add('portal');
  document.querySelector('.brand').textContent = APP_NAME;
  takeTokenFromFragment();
}
setToken(storedToken());
route();
