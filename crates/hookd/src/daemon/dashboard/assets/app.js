// The hookd dashboard: a plain ES module, no build step, no dependencies.
//
// Everything shown comes from the admin API (/v1/...). Rendering only ever builds DOM nodes
// and sets textContent: no string from the API is ever parsed as markup.
//
// Pages (hash routing):
//   #/endpoints                     endpoints and their health
//   #/deliveries?state=failed&...   the delivery log, filtered and paged
//   #/deliveries/123                one delivery with its attempts and payload

const TOKEN_KEY = 'hookd.adminToken';
const LOG_LIMIT = 50;
const HEALTH_SAMPLE = 100;
const main = document.getElementById('main');

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
// The admin token: asked for once on a 401, kept only in sessionStorage

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (a locked-down browser): the token cannot be kept; it is asked again.
  }
  document.getElementById('forget-token').hidden = !storedToken();
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

async function api(method, path, body) {
  for (;;) {
    const token = storedToken();
    const headers = { Accept: 'application/json' };
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
    return data;
  }
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

function endpointName(endpoint) {
  return endpoint.description || endpoint.url;
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
// Page: endpoints and their health

async function renderEndpoints(view, isCurrent) {
  document.title = 'Endpoints · hookd';
  append(view, pageHeader('Endpoints', refreshButton()));
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading endpoints…'));
  view.append(body);
  let cache;
  try {
    cache = await loadEndpoints(true);
  } catch (err) {
    if (isCurrent()) fill(body, errorNotice(err, () => route()));
    return;
  }
  if (!isCurrent()) return;
  if (cache.list.length === 0) {
    fill(body, h('p', { class: 'empty' },
      'No endpoints yet. Register one with ', h('code', {}, 'POST /v1/endpoints'), ' (see docs/api.md).'));
    return;
  }
  const statCells = new Map();
  const tbody = h('tbody', {}, cache.list.map((e) => {
    const rate = h('td', { class: 'num' }, h('span', { class: 'muted' }, '…'));
    const pending = h('td', { class: 'num' }, h('span', { class: 'muted' }, '…'));
    statCells.set(e.id, { rate, pending });
    return h('tr', { 'data-endpoint-id': e.id },
      h('td', { class: 'endpoint-cell' },
        h('div', { class: 'endpoint-name' }, endpointName(e)),
        e.description ? h('div', { class: 'url' }, e.url) : null,
        h('div', { class: 'meta' },
          h('span', { class: 'mono' }, e.id),
          ' · events: ', e.event_types.join(', '),
          e.ordered ? [' · ', h('span', { class: 'badge neutral' }, 'ordered')] : null)),
      h('td', {}, healthCell(e)),
      h('td', {}, timeEl(e.last_success_at, 'never')),
      h('td', {}, e.failing_since ? timeEl(e.failing_since) : h('span', { class: 'muted' }, '—')),
      rate,
      pending,
      h('td', { class: 'actions' },
        h('a', { href: `#/deliveries?endpoint_id=${enc(e.id)}`, 'aria-label': `Deliveries to ${endpointName(e)}` }, 'Deliveries'),
        h('a', { href: `#/deliveries?endpoint_id=${enc(e.id)}&state=failed`, 'aria-label': `Failed deliveries to ${endpointName(e)}` }, 'Failed')));
  }));
  fill(body,
    h('p', { class: 'hint' },
      `Success rate and pending count are computed in your browser from each endpoint's ${HEALTH_SAMPLE} most recent deliveries.`),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'data' },
        h('caption', { class: 'visually-hidden' }, 'Endpoints and their health'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Endpoint'),
          h('th', { scope: 'col' }, 'Status'),
          h('th', { scope: 'col' }, 'Last success'),
          h('th', { scope: 'col' }, 'Failing since'),
          h('th', { scope: 'col', class: 'num' }, 'Success rate'),
          h('th', { scope: 'col', class: 'num' }, 'Pending'),
          h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Links')))),
        tbody)));
  await eachLimited(cache.list, 4, async (e) => {
    const cells = statCells.get(e.id);
    let page;
    try {
      page = await api('GET', `/v1/deliveries?endpoint_id=${enc(e.id)}&limit=${HEALTH_SAMPLE}`);
    } catch (err) {
      fill(cells.rate, h('span', { class: 'muted', title: err.message }, 'unavailable'));
      fill(cells.pending, h('span', { class: 'muted' }, '—'));
      return;
    }
    const count = (state) => page.data.filter((d) => d.state === state).length;
    const ok = count('succeeded');
    const finished = ok + count('failed');
    const open = count('pending') + count('in_flight');
    if (finished === 0) {
      fill(cells.rate, h('span', { class: 'muted' }, page.data.length ? 'none finished' : 'no deliveries'));
    } else {
      const pct = Math.round((100 * ok) / finished);
      const tone = pct >= 99 ? 'good' : pct >= 90 ? 'warn' : 'bad';
      fill(cells.rate,
        h('span', { class: `rate ${tone}` }, `${pct}%`),
        h('div', { class: 'meta' }, `${ok} of ${finished} finished`));
    }
    fill(cells.pending, open > 0
      ? h('a', { href: `#/deliveries?endpoint_id=${enc(e.id)}&state=pending` }, String(open))
      : '0');
  });
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
  document.title = 'Deliveries · hookd';
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
  if (!text) warnings.push('No filter is set: this resends every delivery hookd has, succeeded ones included.');
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
  document.title = `Delivery ${id} · hookd`;
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
  renderDeliveries.rows = null;
  const { path, params } = parseHash();
  const section = path.startsWith('/deliveries') ? 'deliveries' : path.startsWith('/endpoints') ? 'endpoints' : '';
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
  else if (path === '/deliveries') rendering = renderDeliveries(view, isCurrent, params);
  else if ((m = path.match(/^\/deliveries\/([^/]+)$/))) rendering = renderDelivery(view, isCurrent, decodeURIComponent(m[1]));
  else {
    document.title = 'Not found · hookd';
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
  if (location.hash.startsWith('#/') || location.hash === '') route();
});

document.getElementById('skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  (document.getElementById('page-title') || main).focus();
});

document.getElementById('forget-token').addEventListener('click', () => {
  setToken(null);
  route();
});

setToken(storedToken());
route();
