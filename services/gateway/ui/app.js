/**
 * llmrouter operator console: the whole client, plain ES2020 with no library and no build.
 *
 * It reads /ui/session (signed in? the CSRF value), signs in with the admin token through
 * /ui/login (the token goes into a session cookie the page cannot read, and is never kept
 * here), then shows one of seven hash-routed pages (#/overview, #/providers, #/cluster,
 * #/keys, #/requests, #/tools, #/config) from the JSON under /admin/.
 *
 * Rules kept throughout:
 * - Every string from the server goes into the page with textContent / createTextNode
 *   (the el() helper below), never innerHTML.
 * - Every change (POST, PATCH, DELETE) carries the x-csrf-token header; a 401 from /admin/
 *   brings back the sign-in form.
 * - Only the visible page polls, every 5 s, and only while the tab is visible.
 * - A page's root gets data-loaded="1" once its first data has been rendered.
 *
 * Layout of this file: helpers (DOM, formatting, HTTP, status) → session and routing →
 * tables and charts → one section per page → start-up.
 */
'use strict';

const POLL_MS = 5000;
const FETCH_TIMEOUT_MS = 15000;
const DASH = '—';
const REQUESTS_PAGE_SIZE = 50;
const SAMPLES_KEPT = 180;

const state = {
  csrf: null,
  signedIn: false,
  page: null,
  gen: 0,
  pollTimer: null,
  tickTimer: null,
  expiryTimer: null,
  skewMs: 0,
  statusFromLoad: false,
  samples: {},
  keys: [],
  teams: [],
  directoryAt: 0,
  secretOf: null,
};

/* ------------------------------------------------------------------ DOM helpers */

function $(id) {
  return document.getElementById(id);
}

/** Makes an element. props: class, text, data (dataset), on<event>, other attributes. */
function el(tag, props, ...kids) {
  const n = document.createElement(tag);
  setProps(n, props);
  for (const k of kids.flat()) {
    if (k !== null && k !== undefined) n.append(k);
  }
  return n;
}

function setProps(n, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') n.setAttribute('class', v);
    else if (k === 'text') n.textContent = String(v);
    else if (k === 'data') Object.assign(n.dataset, v);
    else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : String(v));
  }
}

/** Makes an SVG element (charts). */
function svgEl(tag, attrs) {
  const n = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  return n;
}

/** Sets a node's text only when it changed (no needless repaint). */
function setText(n, s) {
  const t = String(s);
  if (n.textContent !== t) n.textContent = t;
}

/* ------------------------------------------------------------------ formatting */

function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

function str(v) {
  if (v === null || v === undefined || v === '') return DASH;
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function fmtNum(v, digits) {
  if (!isNum(v)) return DASH;
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function fmtInt(v) {
  return isNum(v) ? Math.round(v).toLocaleString('en-US') : DASH;
}

/** US dollars: 2 decimals from $1, up to 4 below it. */
function fmtUsd(v) {
  if (!isNum(v)) return DASH;
  const a = Math.abs(v);
  if (a > 0 && a < 0.0001) return '<$0.0001';
  return v.toLocaleString('en-US', {
    style: 'currency',
    currency: 'USD',
    minimumFractionDigits: 2,
    maximumFractionDigits: a < 1 ? 4 : 2,
  });
}

function fmtMs(v) {
  if (!isNum(v)) return DASH;
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(2)} s`;
  return `${(v / 60000).toFixed(1)} min`;
}

/** A ratio 0..1 as a percentage. */
function fmtPct(v) {
  if (!isNum(v)) return DASH;
  if (v > 0 && v < 0.001) return '<0.1%';
  return `${(v * 100).toFixed(1)}%`;
}

function pad2(n) {
  return String(n).padStart(2, '0');
}

function fmtClock(ms) {
  if (!isNum(ms)) return DASH;
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** Local date and time, YYYY-MM-DD HH:MM:SS. */
function fmtTime(ms) {
  if (!isNum(ms)) return DASH;
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(ms)}`;
}

/** A recent time: the clock alone today, else the date too. */
function fmtWhen(ms) {
  if (!isNum(ms)) return DASH;
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return fmtClock(ms);
  return `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(ms)}`;
}

function fmtSpan(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return s % 60 ? `${Math.floor(s / 60)} min ${pad2(s % 60)} s` : `${s / 60} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad2(Math.floor((s % 3600) / 60))} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function fmtAgo(ms) {
  if (!isNum(ms)) return DASH;
  return `${fmtSpan(serverNow() - ms)} ago`;
}

/** A list of strings; `none` says what an empty list means. */
function fmtList(v, none) {
  if (!Array.isArray(v) || v.length === 0) return none;
  return v.map(String).join(', ');
}

function serverNow() {
  return Date.now() + state.skewMs;
}

const TONES = {
  ok: ['available', 'closed', 'ok', 'active', 'healthy', 'up', 'ready', 'connected', 'running', 'live', 'yes'],
  warn: ['probe', 'probing', 'cooling', 'half_open', 'half-open', 'halfopen', 'degraded', 'starting',
    'expired', 'connecting', 'pending', 'draining', 'unknown'],
  bad: ['open', 'down', 'failed', 'error', 'unavailable', 'revoked', 'disconnected', 'unhealthy', 'no'],
};

/** A state word in a coloured pill; the word itself stays the element's text. */
function badge(text) {
  const t = str(text);
  const low = t.toLowerCase();
  const tone = Object.keys(TONES).find((k) => TONES[k].includes(low));
  return el('span', { class: tone ? `badge ${tone}` : 'badge', text: t });
}

function statusBadge(code) {
  const tone = !isNum(code) ? '' : code < 400 ? 'ok' : code < 500 ? 'warn' : 'bad';
  return el('span', { class: tone ? `badge ${tone}` : 'badge', text: str(code) });
}

/** An availability: a word from the server, or a boolean said as one. */
function avail(v) {
  if (v === true) return badge('available');
  if (v === false) return badge('unavailable');
  return badge(v);
}

/** A countdown to a server time, ticked every second while the providers page shows. */
function countdown(untilMs) {
  if (!isNum(untilMs)) return DASH;
  const n = el('span', { class: 'countdown num', data: { until: String(untilMs) } });
  tickOne(n);
  return n;
}

function tickOne(n) {
  const left = Number(n.dataset.until) - serverNow();
  setText(n, left > 0 ? fmtSpan(left) : DASH);
}

/* ------------------------------------------------------------------ HTTP */

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
    this.silent = false;
  }
}

async function readJson(res) {
  const t = await res.text();
  if (!t) return null;
  try {
    return JSON.parse(t);
  } catch (_) {
    return null;
  }
}

function errorOf(res, data) {
  const e = data && typeof data === 'object' ? data.error : null;
  const message = e && typeof e === 'object' && e.message ? String(e.message)
    : typeof e === 'string' ? e : `HTTP ${res.status} ${res.statusText || ''}`.trim();
  return new ApiError(res.status, e && e.code ? String(e.code) : '', message);
}

/** fetch with the session cookie, a timeout, and the CSRF header on changes. */
async function request(path, opts) {
  const o = opts || {};
  const method = o.method || 'GET';
  const headers = { accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') headers['x-csrf-token'] = state.csrf || '';
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (o.body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(o.body);
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  init.signal = ctl.signal;
  try {
    const res = await fetch(path, init);
    return { res, data: await readJson(res) };
  } catch (_) {
    throw new ApiError(0, 'network', 'Cannot reach the gateway.');
  } finally {
    clearTimeout(timer);
  }
}

/** An /admin/ call: its JSON, or an ApiError; a 401 ends the session in the page. */
async function api(path, opts) {
  const { res, data } = await request(path, opts);
  if (res.status === 401 && path.startsWith('/admin/')) {
    sessionEnded('Your session has ended: sign in again.');
    const e = new ApiError(401, 'signed_out', 'Signed out.');
    e.silent = true;
    throw e;
  }
  if (!res.ok) throw errorOf(res, data);
  return data || {};
}

/* ------------------------------------------------------------------ status area */

function setStatus(text, kind, fromLoad) {
  const s = $('status');
  setText(s, text || '');
  s.classList.toggle('is-error', kind === 'error');
  s.classList.toggle('is-ok', kind === 'ok');
  state.statusFromLoad = Boolean(fromLoad);
}

function clearLoadStatus() {
  if (state.statusFromLoad) setStatus('', '', false);
}

function reportError(what, e) {
  if (e && e.silent) return;
  const plain = e && e.message && !/^HTTP \d/.test(e.message);
  const status = e && e.status && plain ? ` (HTTP ${e.status})` : '';
  setStatus(`${what}: ${e && e.message ? e.message : 'failed'}${status}`, 'error', true);
}

/* ------------------------------------------------------------------ session */

function showView(name) {
  document.body.dataset.state = name;
  $('not-configured').hidden = name !== 'off';
  $('signin').hidden = name !== 'signin';
  $('nav').hidden = name !== 'console';
  $('logout').hidden = name !== 'console';
  for (const p of Object.keys(PAGES)) $(`page-${p}`).hidden = name !== 'console' || p !== state.page;
}

function showMeta(s) {
  const parts = [];
  if (s && s.instance) parts.push(`instance ${s.instance}`);
  if (s && s.version) parts.push(`v${s.version}`);
  setText($('instance-meta'), parts.join(' · '));
}

function showNotConfigured() {
  stopAll();
  state.signedIn = false;
  showView('off');
  setText($('page-title'), 'Console off');
  document.title = 'Console off · llmrouter';
}

function showSignIn(message) {
  stopAll();
  state.signedIn = false;
  state.csrf = null;
  showView('signin');
  setText($('page-title'), 'Sign in');
  setText($('updated'), '');
  document.title = 'Sign in · llmrouter';
  setText($('login-error'), message || '');
  $('login-token').focus();
}

function sessionEnded(message) {
  if (state.signedIn) showSignIn(message);
}

function enterConsole(csrf, expiresMs) {
  state.csrf = csrf;
  state.signedIn = true;
  state.page = null;
  setStatus('', '', false);
  watchExpiry(expiresMs);
  route();
}

/** At the session's end (by this clock, at least a minute on), ask the server again. */
function watchExpiry(expiresMs) {
  clearTimeout(state.expiryTimer);
  if (!isNum(expiresMs)) return;
  const wait = Math.min(Math.max(expiresMs - Date.now(), 60000), 0x7fffffff);
  state.expiryTimer = setTimeout(recheckSession, wait);
}

async function recheckSession() {
  try {
    const { data } = await request('/ui/session');
    if (data && data.signed_in) watchExpiry(data.expires_ms);
    else sessionEnded('Your session has ended: sign in again.');
  } catch (_) {
    state.expiryTimer = setTimeout(recheckSession, 60000);
  }
}

async function boot() {
  let s;
  try {
    s = (await request('/ui/session')).data || {};
  } catch (e) {
    setStatus('Cannot reach the gateway; trying again in 5 s.', 'error', true);
    setTimeout(boot, POLL_MS);
    return;
  }
  setStatus('', '', false);
  showMeta(s);
  if (!s.configured) showNotConfigured();
  else if (!s.signed_in) showSignIn('');
  else enterConsole(s.csrf, s.expires_ms);
}

async function onLogin(ev) {
  ev.preventDefault();
  const input = $('login-token');
  const token = input.value;
  if (!token) {
    setText($('login-error'), 'Enter the admin token.');
    input.focus();
    return;
  }
  $('login-submit').disabled = true;
  setText($('login-error'), '');
  try {
    await signIn(input, token);
  } finally {
    $('login-submit').disabled = false;
  }
}

async function signIn(input, token) {
  let out;
  try {
    out = await request('/ui/login', { method: 'POST', body: { token } });
  } catch (e) {
    setText($('login-error'), e.message);
    return;
  }
  input.value = '';
  const { res, data } = out;
  if (res.ok && data && data.csrf) {
    enterConsole(data.csrf, data.expires_ms);
    return;
  }
  const e = errorOf(res, data);
  if (e.code === 'console_not_configured') {
    showNotConfigured();
    return;
  }
  setText($('login-error'), res.status === 401 ? 'That is not the admin token.' : e.message);
  input.focus();
}

async function onLogout() {
  try {
    await request('/ui/logout', { method: 'POST' });
  } catch (_) {
    /* reloading asks the server anyway */
  }
  location.reload();
}

/* ------------------------------------------------------------------ routing and polling */

const PAGES = {
  overview: { title: 'Overview', load: loadOverview, poll: true },
  providers: { title: 'Providers & targets', load: loadProviders, poll: true, ticks: true },
  cluster: { title: 'Cluster', load: loadCluster, poll: true },
  keys: { title: 'Keys & teams', load: loadKeys, poll: true },
  requests: { title: 'Requests', load: loadRequests, poll: true },
  tools: { title: 'Tools', load: loadTools, poll: true },
  config: { title: 'Configuration', load: loadConfig, poll: false },
};

function pageOfHash() {
  const name = location.hash.replace(/^#\/?/, '').split(/[/?]/)[0];
  return Object.prototype.hasOwnProperty.call(PAGES, name) ? name : null;
}

function route() {
  if (!state.signedIn) return;
  let name = pageOfHash();
  if (!name) {
    name = 'overview';
    history.replaceState(null, '', '#/overview');
  }
  const moved = state.page !== null && state.page !== name;
  state.page = name;
  showView('console');
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  setText($('page-title'), PAGES[name].title);
  document.title = `${PAGES[name].title} · llmrouter`;
  setText($('updated'), '');
  clearLoadStatus();
  if (moved) focusTitle();
  refresh(false);
  syncTicker();
}

function focusTitle() {
  const h = $('page-title');
  h.setAttribute('tabindex', '-1');
  h.focus({ preventScroll: false });
}

function stopAll() {
  state.gen += 1;
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  clearInterval(state.tickTimer);
  state.tickTimer = null;
  clearTimeout(state.expiryTimer);
}

function visible() {
  return document.visibilityState === 'visible';
}

function schedule() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  const page = PAGES[state.page];
  if (!state.signedIn || !visible() || !page || !page.poll) return;
  state.pollTimer = setTimeout(() => refresh(true), POLL_MS);
}

/** Loads the current page; polls on if it still is the current page and the tab shows. */
async function refresh(isPoll) {
  const name = state.page;
  if (!name || !state.signedIn) return;
  const gen = ++state.gen;
  clearTimeout(state.pollTimer);
  try {
    const rendered = await PAGES[name].load(isPoll);
    if (rendered !== false && gen === state.gen) {
      $(`page-${name}`).dataset.loaded = '1';
      setText($('updated'), `Updated ${fmtClock(Date.now())}`);
      clearLoadStatus();
    }
  } catch (e) {
    if (gen === state.gen) reportError(`Could not load ${PAGES[name].title.toLowerCase()}`, e);
  }
  if (gen === state.gen) schedule();
}

function syncTicker() {
  const want = state.signedIn && visible() && PAGES[state.page] && PAGES[state.page].ticks;
  if (want && !state.tickTimer) {
    state.tickTimer = setInterval(tickCountdowns, 1000);
  } else if (!want && state.tickTimer) {
    clearInterval(state.tickTimer);
    state.tickTimer = null;
  }
}

function tickCountdowns() {
  for (const n of document.querySelectorAll(`#page-${state.page} .countdown`)) tickOne(n);
}

function onVisibility() {
  if (!state.signedIn) return;
  if (visible()) {
    refresh(true);
  } else {
    state.gen += 1;
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }
  syncTicker();
}

/* ------------------------------------------------------------------ tables */

/**
 * A table built once into a container: spec = {columns: [{label, cls, num, cell(item) →
 * string|Node, init(td, row)?, update(td, item)?}], key(item), attrs(item)?, empty, onRow?}.
 */
function makeTable(containerId, spec) {
  const head = el('tr', null, spec.columns.map((c) => el('th', {
    scope: 'col',
    class: c.num ? 'num' : null,
    text: c.label,
  })));
  const tbody = el('tbody');
  const table = el('table', null, spec.caption ? el('caption', { class: 'sr-only', text: spec.caption }) : null,
    el('thead', null, head), tbody);
  const box = $(containerId);
  // A scrolling box must be reachable by keyboard; a group may carry a name.
  setProps(box, { tabindex: '0', role: 'group', 'aria-label': spec.label || null });
  box.replaceChildren(table);
  const empty = el('tr', { class: 'empty-row' },
    el('td', { class: 'empty', colspan: spec.columns.length, text: spec.empty || 'Nothing here.' }));
  return { spec, tbody, rows: new Map(), empty };
}

function buildRow(t, item) {
  const row = el('tr', { data: t.spec.attrs ? t.spec.attrs(item) : null });
  for (const c of t.spec.columns) {
    const td = el('td', { class: [c.cls, c.num ? 'num' : ''].filter(Boolean).join(' ') || null });
    if (c.init) c.init(td, row);
    row.append(td);
  }
  if (t.spec.onRow) {
    row.classList.add('clickable');
    row.addEventListener('click', (ev) => t.spec.onRow(row.item, row, ev));
  }
  return row;
}

function fillRow(t, row, item) {
  row.item = item;
  t.spec.columns.forEach((c, i) => {
    const td = row.children[i];
    if (c.update) {
      c.update(td, item);
      return;
    }
    const v = c.cell(item);
    if (v instanceof Node) {
      if (td.childNodes.length !== 1 || !td.firstChild.isEqualNode(v)) td.replaceChildren(v);
    } else {
      setText(td, v === null || v === undefined ? DASH : v);
    }
  });
}

/** Shows `items` in order, reusing the row of each key (so focus and selection stay). */
function renderTable(t, items) {
  const list = Array.isArray(items) ? items : [];
  if (list.length > 0) t.empty.remove();
  const seen = new Set();
  list.forEach((item, i) => {
    let k = String(t.spec.key(item));
    if (seen.has(k)) k = `${k}\u0000${i}`;
    seen.add(k);
    let row = t.rows.get(k);
    if (!row) {
      row = buildRow(t, item);
      t.rows.set(k, row);
    }
    fillRow(t, row, item);
    const at = t.tbody.children[i];
    if (at !== row) t.tbody.insertBefore(row, at || null);
  });
  for (const [k, row] of t.rows) {
    if (!seen.has(k)) {
      row.remove();
      t.rows.delete(k);
    }
  }
  if (list.length === 0) t.tbody.append(t.empty);
}

/** A definition list from [label, value] pairs (value: string or Node). */
function fieldList(pairs, cls) {
  const dl = el('dl', { class: cls || 'fields' });
  for (const [k, v] of pairs) dl.append(el('dt', { text: k }), el('dd', null, v instanceof Node ? v : str(v)));
  return dl;
}


/* ------------------------------------------------------------------ charts */

const CHART_W = 300;
const CHART_H = 64;

/** An empty line chart; drawChart fills it. */
function makeChart(label) {
  const s = svgEl('svg', {
    viewBox: `0 0 ${CHART_W} ${CHART_H}`,
    preserveAspectRatio: 'none',
    role: 'img',
    'aria-label': `${label}: no data yet`,
    focusable: 'false',
  });
  s.append(
    svgEl('line', { class: 'chart-grid', x1: 0, y1: CHART_H - 1, x2: CHART_W, y2: CHART_H - 1 }),
    svgEl('path', { class: 'chart-area', d: '' }),
    svgEl('path', { class: 'chart-line', d: '' }),
  );
  return s;
}

function niceMax(v) {
  if (!isNum(v) || v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** Paths (line, area) of `values` (nulls leave gaps) scaled to the chart. */
function chartPaths(values, top) {
  const n = values.length;
  const x = (i) => (n > 1 ? (i * CHART_W) / (n - 1) : (i + 0.5) * CHART_W);
  const y = (v) => CHART_H - 3 - (Math.min(v, top) / top) * (CHART_H - 8);
  let line = '';
  let area = '';
  let seg = [];
  const flush = () => {
    if (seg.length === 0) return;
    if (seg.length === 1) {
      // A lone point: a short level stroke across its step, so that it can be seen.
      const [i, v] = seg[0];
      seg = [[i - 0.5, v], [i + 0.5, v]];
    }
    const pts = seg.map(([i, v]) => `${Math.min(CHART_W, Math.max(0, x(i))).toFixed(1)} ${y(v).toFixed(1)}`);
    line += `M${pts.join(' L')} `;
    const [x0, x1] = [seg[0][0], seg[seg.length - 1][0]].map((i) => Math.min(CHART_W, Math.max(0, x(i))).toFixed(1));
    area += `M${x0} ${CHART_H} L${pts.join(' L')} L${x1} ${CHART_H} Z `;
    seg = [];
  };
  values.forEach((v, i) => {
    if (isNum(v)) seg.push([i, v]);
    else flush();
  });
  flush();
  return { line: line.trim(), area: area.trim() };
}

function drawChart(svg, values, describe) {
  const nums = values.filter(isNum);
  const peak = nums.length ? Math.max(...nums) : null;
  const { line, area } = chartPaths(values, niceMax(peak));
  const [, areaPath, linePath] = svg.children;
  if (linePath.getAttribute('d') !== line) linePath.setAttribute('d', line);
  if (areaPath.getAttribute('d') !== area) areaPath.setAttribute('d', area);
  svg.setAttribute('aria-label', describe(peak, nums.length));
  return peak;
}

/* ------------------------------------------------------------------ overview */

const FIGURES = [
  { metric: 'requests_per_s', label: 'Requests / s', fmt: (v) => fmtNum(v, 2) },
  { metric: 'error_rate', label: 'Error rate', fmt: fmtPct },
  { metric: 'p50_ms', label: 'Latency p50', fmt: fmtMs },
  { metric: 'p99_ms', label: 'Latency p99', fmt: fmtMs },
  { metric: 'ttft_ms', label: 'Time to first token', fmt: fmtMs },
  { metric: 'tokens_per_s', label: 'Tokens / s', fmt: (v) => fmtNum(v, 1) },
  { metric: 'cache_hit_rate', label: 'Cache hit rate', fmt: fmtPct },
  { metric: 'spend_today_usd', label: 'Spend today', fmt: fmtUsd, sampled: true },
  { metric: 'requests_today', label: 'Requests today', fmt: fmtInt, sampled: true },
];

function buildFigures() {
  const box = $('overview-figures');
  for (const f of FIGURES) {
    const id = `fig-${f.metric}`;
    const chart = makeChart(f.label);
    const card = el('article', { class: 'figure', data: { metric: f.metric }, 'aria-labelledby': id },
      el('h2', { id, text: f.label }),
      el('p', { class: 'value', text: DASH }),
      chart,
      el('p', { class: 'chart-caption' },
        el('span', { class: 'cap-from', text: f.sampled ? 'since this page opened' : '15 min ago' }),
        el('span', { class: 'cap-peak', text: '' })));
    box.append(card);
  }
}

async function loadOverview() {
  const d = await api('/admin/overview');
  const current = d.current || {};
  const series = d.series || {};
  for (const f of FIGURES) {
    const v = current[f.metric];
    const values = f.sampled ? sampleOf(f.metric, v) : (Array.isArray(series[f.metric]) ? series[f.metric] : []);
    renderFigure(f, v, values, d.window_ms);
  }
  const src = d.source ? `, from the ${d.source}` : '';
  setText($('overview-source'), `Last ${fmtSpan(isNum(d.window_ms) ? d.window_ms : 900000)}${src}; numbers over the last 60 s.`);
}

/** The values of a figure the server keeps no line for, as this page sampled them. */
function sampleOf(metric, v) {
  const s = state.samples[metric] || (state.samples[metric] = []);
  s.push(isNum(v) ? v : null);
  if (s.length > SAMPLES_KEPT) s.splice(0, s.length - SAMPLES_KEPT);
  return s;
}

function renderFigure(f, v, values, windowMs) {
  const card = document.querySelector(`#overview-figures [data-metric="${f.metric}"]`);
  setText(card.querySelector('.value'), f.fmt(v));
  const span = f.sampled ? 'since this page opened' : `over the last ${fmtSpan(isNum(windowMs) ? windowMs : 900000)}`;
  const peak = drawChart(card.querySelector('svg'), values, (p, n) => (n === 0
    ? `${f.label} ${span}: no data`
    : `${f.label} ${span}: now ${f.fmt(v)}, peak ${f.fmt(p)}, ${n} point${n === 1 ? '' : 's'}`));
  setText(card.querySelector('.cap-peak'), isNum(peak) ? `peak ${f.fmt(peak)}` : 'no data');
}

/* ------------------------------------------------------------------ providers */

const tables = {};

function buildProviderTables() {
  tables.targets = makeTable('targets-table', {
    label: 'Targets',
    key: (t) => t.target,
    attrs: (t) => ({ target: str(t.target) }),
    empty: 'No targets.',
    columns: [
      { label: 'Target', cls: 'mono-cell', cell: (t) => str(t.target) },
      { label: 'Available', cell: (t) => avail(t.available) },
      { label: 'Circuit', cls: 'circuit', cell: (t) => badge(t.circuit) },
      { label: 'Failures', num: true, cell: (t) => fmtInt(t.failures) },
      { label: 'Cooldown', num: true, cell: (t) => countdown(t.cooldown_until_ms) },
      { label: 'Probe in', num: true, cell: (t) => countdown(t.open_until_ms) },
      { label: 'Load', num: true, cell: (t) => fmtNum(t.load, isNum(t.load) && t.load % 1 !== 0 ? 2 : 0) },
      { label: 'Latency', num: true, cell: (t) => fmtMs(t.latency_ms) },
    ],
  });
  tables.providers = makeTable('providers-table', {
    label: 'Providers',
    key: (p) => p.name,
    attrs: (p) => ({ provider: str(p.name) }),
    empty: 'No providers.',
    columns: [
      { label: 'Provider', cell: (p) => str(p.name) },
      { label: 'Type', cell: (p) => str(p.type) },
      { label: 'Health', cls: 'health', cell: (p) => badge(p.state) },
      { label: 'Models', cls: 'wrap', cell: (p) => fmtList(p.models, DASH) },
      { label: 'Keys available', num: true, cell: keysAvailable },
      { label: 'Load', num: true, cell: (p) => fmtNum(p.load, isNum(p.load) && p.load % 1 !== 0 ? 2 : 0) },
      { label: 'Latency', num: true, cell: (p) => fmtMs(p.latency_ms) },
      { label: 'Last error', cls: 'wrap', cell: (p) => str(p.error) },
    ],
  });
  tables.providerKeys = makeTable('provider-keys-table', {
    label: 'Upstream keys',
    key: (k) => `${k.provider}\u0000${k.key}`,
    attrs: (k) => ({ providerKey: str(k.key) }),
    empty: 'No upstream keys.',
    columns: [
      { label: 'Key', cell: (k) => str(k.key) },
      { label: 'Secret', cls: 'mono-cell', cell: (k) => str(k.masked) },
      { label: 'Available', cell: (k) => avail(k.available) },
      { label: 'Circuit', cls: 'circuit', cell: (k) => badge(k.circuit) },
      { label: 'Failures', num: true, cell: (k) => fmtInt(k.failures) },
      { label: 'Cooldown', num: true, cell: (k) => countdown(k.cooldown_until_ms) },
      { label: 'Probe in', num: true, cell: (k) => countdown(k.open_until_ms) },
      { label: 'Latency', num: true, cell: (k) => fmtMs(k.latency_ms) },
    ],
  });
}

function keysAvailable(p) {
  if (!Array.isArray(p.keys) || p.keys.length === 0) return DASH;
  const ok = p.keys.filter((k) => k.available === true || k.available === 'available').length;
  return `${ok} of ${p.keys.length}`;
}

async function loadProviders() {
  const d = await api('/admin/providers');
  if (isNum(d.now_ms)) state.skewMs = d.now_ms - Date.now();
  const providers = Array.isArray(d.providers) ? d.providers : [];
  renderTable(tables.targets, d.targets);
  renderTable(tables.providers, providers);
  const keys = providers.flatMap((p) => (Array.isArray(p.keys) ? p.keys : []).map((k) => ({ ...k, provider: p.name })));
  renderTable(tables.providerKeys, keys);
  fillDatalist('plan-models', [...new Set(providers.flatMap((p) => (Array.isArray(p.models) ? p.models : [])))]
    .map((m) => [m, null]));
}

function fillDatalist(id, entries) {
  const list = $(id);
  const opts = entries.map(([value, label]) => el('option', { value: str(value), label: label || null }));
  const same = list.children.length === opts.length
    && opts.every((o, i) => list.children[i].isEqualNode(o));
  if (!same) list.replaceChildren(...opts);
}

async function onPlan(ev) {
  ev.preventDefault();
  const model = $('plan-model').value.trim();
  const out = $('plan-result');
  if (!model) {
    out.replaceChildren(el('p', { class: 'form-error', text: 'Enter a model or group name.' }));
    return;
  }
  out.replaceChildren(el('p', { class: 'muted', text: 'Asking the router…' }));
  try {
    const d = await api(`/admin/plan?model=${encodeURIComponent(model)}`);
    renderPlan(out, d);
  } catch (e) {
    if (e.silent) return;
    const text = e.status === 404 ? `No model or group named “${model}”.` : `Could not get the plan: ${e.message}`;
    out.replaceChildren(el('p', { class: 'form-error', text }));
  }
}

function renderPlan(out, d) {
  const targets = Array.isArray(d.targets) ? d.targets : [];
  const head = el('tr', null, ['#', 'Target', 'Available', 'Upstream key', 'Load', 'Latency', 'Skipped because']
    .map((h) => el('th', { scope: 'col', text: h })));
  const rows = targets.map((t, i) => el('tr', { data: { planTarget: str(t.target) } },
    el('td', { class: 'num', text: String(i + 1) }),
    el('td', { class: 'mono-cell', text: str(t.target) }),
    el('td', null, avail(t.probe === true ? 'probe' : t.available)),
    el('td', { text: str(t.key) }),
    el('td', { class: 'num', text: fmtNum(t.load, isNum(t.load) && t.load % 1 !== 0 ? 2 : 0) }),
    el('td', { class: 'num', text: fmtMs(t.latency_ms) }),
    el('td', { text: str(t.skipped) })));
  if (rows.length === 0) rows.push(el('tr', null, el('td', { class: 'empty', colspan: 7, text: 'No target.' })));
  out.replaceChildren(
    fieldList([['Model', str(d.model)], ['Group', str(d.group)], ['Strategy', str(d.strategy)], ['Pool', str(d.pool)]]),
    el('p', { class: 'muted small', text: 'Targets in the order the router would try them now.' }),
    el('div', { class: 'table-wrap', tabindex: '0', role: 'group', 'aria-label': 'Routing plan' },
      el('table', null, el('thead', null, head), el('tbody', null, rows))),
  );
}

/* ------------------------------------------------------------------ cluster */

function buildClusterTables() {
  tables.instances = makeTable('instances-table', {
    label: 'Instances',
    key: (i) => `${i.service}\u0000${i.instance}`,
    attrs: (i) => ({ instance: str(i.instance), service: str(i.service) }),
    empty: 'No instance has reported.',
    columns: [
      { label: 'Role', cell: (i) => str(i.service) },
      { label: 'Instance', cls: 'mono-cell', cell: (i) => str(i.instance) },
      { label: 'Version', cell: (i) => str(i.version) },
      { label: 'Started', cls: 'nowrap', cell: (i) => fmtTime(i.started_ms) },
      { label: 'Up for', num: true, cell: (i) => (isNum(i.started_ms) ? fmtSpan(serverNow() - i.started_ms) : DASH) },
    ],
  });
  tables.streams = makeTable('streams-table', {
    label: 'Streams',
    key: (s) => `${s.stream}\u0000${s.group}`,
    attrs: (s) => ({ stream: str(s.stream), group: str(s.group) }),
    empty: 'No streams.',
    columns: [
      { label: 'Stream', cls: 'mono-cell', cell: (s) => str(s.stream) },
      { label: 'Consumer group', cell: (s) => str(s.group) },
      { label: 'Length', num: true, cell: (s) => fmtInt(s.length) },
      { label: 'Pending', num: true, cls: 'pending', cell: (s) => fmtInt(s.pending) },
      { label: 'Lag', num: true, cls: 'lag', cell: (s) => fmtInt(s.lag) },
    ],
  });
  tables.pools = makeTable('pools-table', {
    label: 'Worker pools',
    key: (p) => p.pool,
    attrs: (p) => ({ pool: str(p.pool) }),
    empty: 'No worker pools.',
    columns: [
      { label: 'Pool', cell: (p) => str(p.pool) },
      { label: 'Workers', num: true, cell: (p) => fmtInt(p.workers) },
    ],
  });
}

async function loadCluster() {
  const d = await api('/admin/cluster');
  renderClusterStatus(d);
  renderTable(tables.instances, d.instances);
  renderTable(tables.streams, d.streams);
  renderTable(tables.pools, d.pools);
}

function featureText(v) {
  if (v === true) return 'yes';
  if (v === false) return 'no';
  return str(v);
}

function renderClusterStatus(d) {
  const reasons = Array.isArray(d.reasons) ? d.reasons : [];
  const features = d.features && typeof d.features === 'object' ? Object.entries(d.features) : [];
  const reasonNode = reasons.length
    ? el('ul', { class: 'reasons' }, reasons.map((r) => el('li', { text: str(r) })))
    : 'nothing is degraded';
  const next = el('div', null,
    fieldList([
      ['Status', badge(d.status)],
      ['Shared state', str(d.backend)],
      ['Degraded because', reasonNode],
      ...features.map(([k, v]) => [k, featureText(v)]),
    ]));
  const box = $('cluster-status');
  if (!box.firstChild || !box.firstChild.isEqualNode(next)) box.replaceChildren(next);
}

/* ------------------------------------------------------------------ keys and teams */

function limitsText(o) {
  const parts = [];
  if (isNum(o.rpm)) parts.push(`${fmtInt(o.rpm)} rpm`);
  if (isNum(o.tpm)) parts.push(`${fmtInt(o.tpm)} tpm`);
  if (isNum(o.max_parallel)) parts.push(`${fmtInt(o.max_parallel)} in flight`);
  if (isNum(o.max_queue_wait_ms)) parts.push(`waits ≤ ${fmtInt(o.max_queue_wait_ms)} ms`);
  if (isNum(o.max_tokens)) parts.push(`${fmtInt(o.max_tokens)} max tokens`);
  return parts.length ? parts.join(' · ') : 'none';
}

/** Spend against budget: text and a bar (width set through CSSOM, allowed by the CSP). */
function spendCell(o) {
  const spent = isNum(o.spend_usd) ? o.spend_usd : null;
  if (!isNum(o.budget_usd)) {
    return el('span', null, el('span', { class: 'num', text: fmtUsd(spent) }), el('span', { class: 'muted', text: ' · no budget' }));
  }
  const ratio = o.budget_usd > 0 ? Math.min(1, (spent || 0) / o.budget_usd) : 1;
  const bar = el('span', { class: `spend-bar${ratio >= 1 ? ' bad' : ratio >= 0.8 ? ' warn' : ''}`, 'aria-hidden': 'true' },
    el('span'));
  bar.firstChild.style.width = `${(ratio * 100).toFixed(1)}%`;
  const period = o.budget_period ? ` / ${o.budget_period}` : '';
  return el('span', null,
    el('span', { class: 'num', text: `${fmtUsd(spent)} of ${fmtUsd(o.budget_usd)}${period}` }), bar);
}

function keyStatus(k) {
  if (k.revoked || isNum(k.revoked_ms)) return 'revoked';
  if (isNum(k.expires_at_ms) && k.expires_at_ms <= serverNow()) return 'expired';
  return 'active';
}

function teamName(id) {
  if (!id) return DASH;
  const t = state.teams.find((x) => x.id === id);
  return t ? `${t.name}` : id;
}

function actionButton(cls, label, onClick) {
  return el('button', { type: 'button', class: `btn btn-small ${cls}`, text: label, onclick: onClick });
}

function buildKeyTables() {
  tables.keys = makeTable('keys-table', {
    label: 'Keys',
    key: (k) => k.id,
    attrs: (k) => ({ keyId: str(k.id) }),
    empty: 'No keys yet: create one above.',
    columns: [
      { label: 'Name', cls: 'key-name', cell: (k) => str(k.name) },
      { label: 'Id · secret', cls: 'mono-cell', cell: (k) => `${str(k.id)} · ${str(k.hint)}` },
      { label: 'Team', cell: (k) => teamName(k.team) },
      { label: 'Models', cls: 'wrap', cell: (k) => fmtList(k.models, 'all') },
      { label: 'Limits', cell: limitsText },
      { label: 'Spend', cls: 'key-spend', cell: spendCell },
      { label: 'Status', cls: 'key-status', cell: (k) => badge(keyStatus(k)) },
      { label: 'Actions', cls: 'actions', init: keyActionsInit, update: keyActionsUpdate },
    ],
  });
  tables.teams = makeTable('teams-table', {
    label: 'Teams',
    key: (t) => t.id,
    attrs: (t) => ({ teamId: str(t.id) }),
    empty: 'No teams.',
    columns: [
      { label: 'Name', cls: 'team-name', cell: (t) => str(t.name) },
      { label: 'Id', cls: 'mono-cell', cell: (t) => str(t.id) },
      { label: 'Live keys', num: true, cell: (t) => fmtInt(liveMembers(t.id)) },
      { label: 'Models', cls: 'wrap', cell: (t) => fmtList(t.models, 'all') },
      { label: 'Limits', cell: limitsText },
      { label: 'Spend', cls: 'team-spend', cell: spendCell },
      { label: 'Actions', cls: 'actions', init: teamActionsInit, update: teamActionsUpdate },
    ],
  });
}

function liveMembers(teamId) {
  return state.keys.filter((k) => k.team === teamId && keyStatus(k) !== 'revoked').length;
}

function keyActionsInit(td, row) {
  td.append(
    actionButton('key-edit', 'Edit', () => openEdit('key', row.item)),
    actionButton('key-rotate', 'Rotate', () => rotateKey(row.item)),
    actionButton('key-revoke', 'Revoke', () => revokeKey(row.item)),
  );
}

function keyActionsUpdate(td, k) {
  const name = str(k.name);
  const revoked = keyStatus(k) === 'revoked';
  const [edit, rotate, revoke] = td.children;
  edit.setAttribute('aria-label', `Edit limits of key ${name}`);
  rotate.setAttribute('aria-label', `Rotate the secret of key ${name}`);
  revoke.setAttribute('aria-label', `Revoke key ${name}`);
  rotate.disabled = revoked;
  revoke.disabled = revoked;
}

function teamActionsInit(td, row) {
  td.append(
    actionButton('team-edit', 'Edit', () => openEdit('team', row.item)),
    actionButton('team-delete', 'Delete', () => deleteTeam(row.item)),
  );
}

function teamActionsUpdate(td, t) {
  const [edit, del] = td.children;
  edit.setAttribute('aria-label', `Edit limits of team ${str(t.name)}`);
  del.setAttribute('aria-label', `Delete team ${str(t.name)}`);
  del.disabled = Boolean(t.from_config);
}

function sortKeys(keys) {
  return keys.slice().sort((a, b) => {
    const ra = keyStatus(a) === 'revoked' ? 1 : 0;
    const rb = keyStatus(b) === 'revoked' ? 1 : 0;
    return ra - rb || (b.created_ms || 0) - (a.created_ms || 0) || String(a.id).localeCompare(String(b.id));
  });
}

/** Keys and teams, for the keys page and the requests page's name lookups. */
async function loadDirectory() {
  const [keys, teams] = await Promise.all([api('/admin/keys'), api('/admin/teams')]);
  state.keys = Array.isArray(keys.data) ? keys.data : [];
  state.teams = Array.isArray(teams.data) ? teams.data : [];
  state.directoryAt = Date.now();
  fillDatalist('team-list', state.teams.map((t) => [t.id, str(t.name)]));
  fillDatalist('key-list', state.keys.map((k) => [k.id, str(k.name)]));
}

async function loadKeys() {
  await loadDirectory();
  renderTable(tables.keys, sortKeys(state.keys));
  renderTable(tables.teams, state.teams.slice().sort((a, b) => String(a.name).localeCompare(String(b.name))));
}

/** A team id from what was typed: an id, or a team's exact name. */
function teamIdOf(typed) {
  if (!typed) return null;
  if (state.teams.some((t) => t.id === typed)) return typed;
  const byName = state.teams.find((t) => t.name === typed);
  return byName ? byName.id : typed;
}

function keyIdOf(typed) {
  if (!typed) return null;
  if (state.keys.some((k) => k.id === typed)) return typed;
  const byName = state.keys.find((k) => k.name === typed && keyStatus(k) !== 'revoked')
    || state.keys.find((k) => k.name === typed);
  return byName ? byName.id : typed;
}

/** A whole number from an input; null when empty; NaN when not a whole number ≥ 0. */
function wholeOf(input) {
  const v = input.value.trim();
  if (v === '') return null;
  return /^\d+$/.test(v) ? Number(v) : NaN;
}

function dollarsOf(input) {
  const v = input.value.trim();
  if (v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : NaN;
}

function keyBody() {
  const body = { name: $('key-name').value.trim() };
  const team = teamIdOf($('key-team').value.trim());
  if (team) body.team = team;
  const models = $('key-models').value.split(',').map((s) => s.trim()).filter(Boolean);
  if (models.length) body.models = models;
  const rpm = wholeOf($('key-rpm'));
  const tpm = wholeOf($('key-tpm'));
  const budget = dollarsOf($('key-budget'));
  if (rpm !== null) body.rpm = rpm;
  if (tpm !== null) body.tpm = tpm;
  if (budget !== null) {
    body.budget_usd = budget;
    body.budget_period = $('key-period').value;
  }
  return body;
}

function bodyProblem(body) {
  if (!body.name) return 'A name is required.';
  for (const [k, label] of [['rpm', 'Requests a minute'], ['tpm', 'Tokens a minute'], ['max_parallel', 'In flight at most'], ['max_queue_wait_ms', 'Longest queue wait']]) {
    if (Number.isNaN(body[k])) return `${label} must be a whole number.`;
  }
  if (Number.isNaN(body.budget_usd)) return 'The budget must be a number of dollars, 0 or more.';
  return null;
}

async function onCreateKey(ev) {
  ev.preventDefault();
  const body = keyBody();
  const problem = bodyProblem(body);
  setText($('key-form-error'), problem || '');
  if (problem) return;
  $('key-create').disabled = true;
  try {
    const k = await api('/admin/keys', { method: 'POST', body });
    $('key-form').reset();
    showSecret(`Key “${str(k.name)}” created.`, k.key, k.id);
    setStatus(`Created key ${str(k.name)} (${str(k.id)}).`, 'ok', false);
    await refreshKeysSoon();
  } catch (e) {
    if (!e.silent) setText($('key-form-error'), e.message);
  } finally {
    $('key-create').disabled = false;
  }
}

async function refreshKeysSoon() {
  if (state.page === 'keys') await refresh(false);
}

/** The secret, shown once, with a copy button; dismissed by Done, replaced by the next. */
function showSecret(title, secret, keyId) {
  state.secretOf = keyId;
  if (!$('key-secret')) {
    const panel = el('div', { class: 'secret', role: 'region', 'aria-labelledby': 'key-secret-title' },
      el('p', { id: 'key-secret-title' }, el('strong', { id: 'key-secret-what' }),
        ' Copy its secret now: it is shown this once and cannot be read again.'),
      el('div', { class: 'secret-row' }, el('code', { id: 'key-secret' }),
        el('button', { type: 'button', class: 'btn btn-primary', id: 'key-copy', onclick: copySecret }),
        el('button', { type: 'button', class: 'btn', id: 'key-secret-done', text: 'Done', onclick: hideSecret })));
    $('key-secret-slot').replaceChildren(panel);
  }
  setText($('key-secret-what'), title);
  setText($('key-secret'), str(secret));
  setText($('key-copy'), 'Copy');
  $('key-copy').focus();
}

function hideSecret() {
  state.secretOf = null;
  $('key-secret-slot').replaceChildren();
  $('key-name').focus();
}

function selectText(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}

async function copySecret() {
  const code = $('key-secret');
  const btn = $('key-copy');
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
    await navigator.clipboard.writeText(code.textContent);
    setText(btn, 'Copied');
    setStatus('The secret is on the clipboard.', 'ok', false);
  } catch (_) {
    selectText(code);
    setStatus('The secret is selected: press Ctrl+C (⌘C) to copy it.', '', false);
  }
}

async function revokeKey(k) {
  const name = str(k.name);
  const yes = await confirmDialog('Revoke this key?',
    `Revoke the key “${name}” (${str(k.id)})? Requests with its secret are refused from now on; its spend and log stay.`,
    'Revoke');
  if (!yes) return;
  try {
    await api(`/admin/keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' });
    if (state.secretOf === k.id) $('key-secret-slot').replaceChildren();
    setStatus(`Revoked key ${name}.`, 'ok', false);
    await refreshKeysSoon();
  } catch (e) {
    reportError(`Could not revoke ${name}`, e);
  }
}

async function rotateKey(k) {
  const name = str(k.name);
  try {
    const r = await api(`/admin/keys/${encodeURIComponent(k.id)}/rotate`, { method: 'POST' });
    showSecret(`Key “${name}” rotated: the old secret is refused from now on.`, r.key, k.id);
    setStatus(`Rotated key ${name}.`, 'ok', false);
    await refreshKeysSoon();
  } catch (e) {
    reportError(`Could not rotate ${name}`, e);
  }
}

async function deleteTeam(t) {
  const name = str(t.name);
  const yes = await confirmDialog('Delete this team?',
    `Delete the team “${name}” (${str(t.id)})? A team with live keys cannot be deleted.`, 'Delete');
  if (!yes) return;
  try {
    await api(`/admin/teams/${encodeURIComponent(t.id)}`, { method: 'DELETE' });
    setStatus(`Deleted team ${name}.`, 'ok', false);
    await refreshKeysSoon();
  } catch (e) {
    reportError(`Could not delete ${name}`, e);
  }
}

async function onCreateTeam(ev) {
  ev.preventDefault();
  const body = { name: $('team-name').value.trim() };
  const budget = dollarsOf($('team-budget'));
  if (budget !== null) {
    body.budget_usd = budget;
    body.budget_period = $('team-period').value;
  }
  const problem = bodyProblem(body);
  setText($('team-form-error'), problem || '');
  if (problem) return;
  try {
    const t = await api('/admin/teams', { method: 'POST', body });
    $('team-form').reset();
    setStatus(`Created team ${str(t.name)} (${str(t.id)}).`, 'ok', false);
    await refreshKeysSoon();
  } catch (e) {
    if (!e.silent) setText($('team-form-error'), e.message);
  }
}

/* ------------------------------------------------------------------ dialogs */

/** An in-page yes/no question (window.confirm is not used); resolves true on yes. */
function confirmDialog(title, message, yesLabel) {
  const d = $('confirm-dialog');
  setText($('confirm-title'), title);
  setText($('confirm-message'), message);
  setText($('confirm-yes'), yesLabel || 'Confirm');
  return new Promise((resolve) => {
    let settled = false;
    const done = (v) => {
      if (settled) return;
      settled = true;
      $('confirm-yes').removeEventListener('click', onYes);
      $('confirm-no').removeEventListener('click', onNo);
      d.removeEventListener('close', onNo);
      if (d.open) d.close();
      resolve(v);
    };
    const onYes = () => done(true);
    const onNo = () => done(false);
    $('confirm-yes').addEventListener('click', onYes);
    $('confirm-no').addEventListener('click', onNo);
    d.addEventListener('close', onNo);
    if (!d.open) d.showModal();
    $('confirm-no').focus();
  });
}

const editing = { kind: null, item: null };

function inputValue(v) {
  return isNum(v) ? String(v) : '';
}

function openEdit(kind, item) {
  editing.kind = kind;
  editing.item = item;
  setText($('edit-title'), `Limits of ${kind} “${str(item.name)}”`);
  $('edit-rpm').value = inputValue(item.rpm);
  $('edit-tpm').value = inputValue(item.tpm);
  $('edit-parallel').value = inputValue(item.max_parallel);
  $('edit-wait').value = inputValue(item.max_queue_wait_ms);
  $('edit-budget').value = inputValue(item.budget_usd);
  $('edit-period').value = item.budget_period || 'month';
  setText($('edit-error'), '');
  if (!$('edit-dialog').open) $('edit-dialog').showModal();
  $('edit-rpm').focus();
}

async function onSaveEdit(ev) {
  ev.preventDefault();
  const body = {
    rpm: wholeOf($('edit-rpm')),
    tpm: wholeOf($('edit-tpm')),
    max_parallel: wholeOf($('edit-parallel')),
    max_queue_wait_ms: wholeOf($('edit-wait')),
    budget_usd: dollarsOf($('edit-budget')),
    budget_period: $('edit-period').value,
  };
  const problem = bodyProblem({ ...body, name: 'x' });
  setText($('edit-error'), problem || '');
  if (problem || !editing.item) return;
  const { kind, item } = editing;
  $('edit-save').disabled = true;
  try {
    await api(`/admin/${kind}s/${encodeURIComponent(item.id)}`, { method: 'PATCH', body });
    $('edit-dialog').close();
    setStatus(`Saved the limits of ${kind} ${str(item.name)}.`, 'ok', false);
    await refreshKeysSoon();
  } catch (e) {
    if (!e.silent) setText($('edit-error'), e.message);
  } finally {
    $('edit-save').disabled = false;
  }
}

/* ------------------------------------------------------------------ requests */

const reqs = { filters: {}, stack: [null], selected: null };

function buildRequestsTable() {
  tables.requests = makeTable('requests-table', {
    label: 'Request log',
    key: (r) => r.id,
    attrs: (r) => ({ requestId: str(r.id) }),
    empty: 'No request matches.',
    onRow: (r, row) => openRequest(r, row),
    columns: [
      { label: 'Time', cls: 'nowrap', init: (td) => td.append(el('button', { type: 'button', class: 'link-button' })),
        update: (td, r) => {
          setText(td.firstChild, fmtWhen(r.time_ms));
          td.firstChild.setAttribute('aria-label', `Open request ${str(r.id)}`);
        } },
      { label: 'Key', cell: (r) => keyLabel(r.key) },
      { label: 'Team', cell: (r) => (r.team ? teamName(r.team) : DASH) },
      { label: 'Model', cell: (r) => str(r.model) },
      { label: 'Upstream', cls: 'mono-cell', cell: (r) => (r.provider ? `${r.provider}/${str(r.target_model)}` : DASH) },
      { label: 'Status', cls: 'req-status', cell: (r) => statusBadge(r.status) },
      { label: 'Latency', num: true, cell: (r) => fmtMs(r.latency_ms) },
      { label: 'TTFT', num: true, cell: (r) => fmtMs(r.ttft_ms) },
      { label: 'Tokens in / out', num: true, cell: (r) => `${fmtInt(r.input_tokens)} / ${fmtInt(r.output_tokens)}` },
      { label: 'Cost', num: true, cell: (r) => fmtUsd(r.cost_usd) },
      { label: 'Cache', cell: (r) => (r.cache_hit === true ? 'hit' : r.cache_hit === false ? 'miss' : DASH) },
    ],
  });
}

function keyLabel(id) {
  if (id === '' || id === null || id === undefined) return DASH;
  const k = state.keys.find((x) => x.id === id);
  return k ? str(k.name) : str(id);
}

/** The request log's query: filters, the time range, the page's cursor. */
function requestsQuery() {
  const f = reqs.filters;
  const q = new URLSearchParams();
  const key = keyIdOf(f.key);
  const team = teamIdOf(f.team);
  if (key) q.set('key', key);
  if (team) q.set('team', team);
  if (f.model) q.set('model', f.model);
  if (f.status) q.set('status', f.status);
  if (/^\d+$/.test(f.range || '')) q.set('since_ms', String(Math.floor(serverNow() - Number(f.range))));
  if (f.range === 'custom') {
    const since = Date.parse(f.since || '');
    const until = Date.parse(f.until || '');
    if (Number.isFinite(since)) q.set('since_ms', String(since));
    if (Number.isFinite(until)) q.set('until_ms', String(until));
  }
  q.set('limit', String(REQUESTS_PAGE_SIZE));
  const before = reqs.stack[reqs.stack.length - 1];
  if (before) q.set('before', before);
  return q.toString();
}

/** A poll only refreshes the newest page (older pages do not change). */
async function loadRequests(isPoll) {
  if (isPoll && reqs.stack.length > 1) return false;
  if (Date.now() - state.directoryAt > 60000) {
    await loadDirectory().catch((e) => {
      if (e.silent) throw e;
    });
  }
  const d = await api(`/admin/requests?${requestsQuery()}`);
  const data = Array.isArray(d.data) ? d.data : [];
  renderTable(tables.requests, data);
  if (!isPoll) $('requests-table').scrollTop = 0;
  reqs.next = data.length >= REQUESTS_PAGE_SIZE && d.next_before ? d.next_before : null;
  $('requests-older').disabled = !reqs.next;
  $('requests-newer').disabled = reqs.stack.length <= 1;
  $('requests-newest').disabled = reqs.stack.length <= 1;
  const page = reqs.stack.length;
  setText($('requests-page-info'), page > 1 ? `· page ${page}, newest first` : '· newest first');
  markSelected();
  return true;
}

function readFilters() {
  const status = $('filter-status').value.trim();
  if (status && !/^\d{3}$/.test(status)) {
    setStatus('The status filter takes an HTTP status such as 200 or 429.', 'error', false);
    $('filter-status').focus();
    return null;
  }
  return {
    key: $('filter-key').value.trim(),
    team: $('filter-team').value.trim(),
    model: $('filter-model').value.trim(),
    status,
    range: $('filter-range').value,
    since: $('filter-since').value,
    until: $('filter-until').value,
  };
}

function onFilter(ev) {
  ev.preventDefault();
  const f = readFilters();
  if (!f) return;
  setStatus('', '', false);
  reqs.filters = f;
  reqs.stack = [null];
  refresh(false);
}

function onFilterReset() {
  setTimeout(() => {
    syncRangeFields();
    reqs.filters = {};
    reqs.stack = [null];
    refresh(false);
  }, 0);
}

function syncRangeFields() {
  const custom = $('filter-range').value === 'custom';
  $('filter-since-field').hidden = !custom;
  $('filter-until-field').hidden = !custom;
}

function pageRequests(step) {
  if (step === 'older' && reqs.next) reqs.stack.push(reqs.next);
  else if (step === 'newer' && reqs.stack.length > 1) reqs.stack.pop();
  else if (step === 'newest') reqs.stack = [null];
  refresh(false);
}

const RECORD_FIELDS = [
  ['Request id', (r) => str(r.id)],
  ['Time', (r) => `${fmtTime(r.time_ms)} (${fmtAgo(r.time_ms)})`],
  ['Key', (r) => (r.key ? `${keyLabel(r.key)} (${r.key})` : DASH)],
  ['Team', (r) => (r.team ? `${teamName(r.team)} (${r.team})` : DASH)],
  ['Front door', (r) => str(r.route)],
  ['Model', (r) => str(r.model)],
  ['Group', (r) => str(r.group)],
  ['Provider', (r) => str(r.provider)],
  ['Upstream model', (r) => str(r.target_model)],
  ['Status', (r) => statusBadge(r.status)],
  ['Error', (r) => str(r.error_type)],
  ['Latency', (r) => fmtMs(r.latency_ms)],
  ['Time to first token', (r) => fmtMs(r.ttft_ms)],
  ['Input tokens', (r) => fmtInt(r.input_tokens)],
  ['Output tokens', (r) => fmtInt(r.output_tokens)],
  ['Cached tokens', (r) => fmtInt(r.cached_tokens)],
  ['Cost', (r) => fmtUsd(r.cost_usd)],
  ['Cache hit', (r) => featureText(r.cache_hit)],
  ['Attempts', (r) => fmtInt(r.attempts)],
  ['Streamed', (r) => featureText(r.stream)],
];

function openRequest(r, row) {
  reqs.selected = r.id;
  const box = $('request-detail');
  setText($('request-detail-title'), `Request ${str(r.id)}`);
  $('request-detail-fields').replaceChildren(...fieldList(RECORD_FIELDS.map(([k, f]) => [k, f(r)])).childNodes);
  setText($('request-detail-json'), JSON.stringify(r, null, 2));
  box.hidden = false;
  markSelected();
  box.focus({ preventScroll: true });
  box.scrollIntoView({ block: 'nearest' });
  if (row) row.classList.add('is-selected');
}

function closeRequest() {
  reqs.selected = null;
  $('request-detail').hidden = true;
  markSelected();
}

function markSelected() {
  for (const [, row] of tables.requests.rows) {
    row.classList.toggle('is-selected', Boolean(row.item && row.item.id === reqs.selected));
  }
}

/* ------------------------------------------------------------------ tools and config */

function buildToolTables() {
  tables.tools = makeTable('tools-table', {
    label: 'MCP tools',
    key: (t) => t.name,
    attrs: (t) => ({ tool: str(t.name) }),
    empty: 'No MCP tools.',
    columns: [
      { label: 'Tool', cls: 'mono-cell', cell: (t) => str(t.name) },
      { label: 'Source', cell: (t) => str(t.source) },
      { label: 'Origin', cls: 'wrap', cell: (t) => str(t.origin) },
      { label: 'Description', cls: 'wrap', cell: (t) => str(t.description) },
      { label: 'Last error', cls: 'wrap', cell: (t) => str(t.error) },
    ],
  });
  tables.remote = makeTable('remote-table', {
    label: 'Remote servers',
    key: (s) => s.namespace,
    attrs: (s) => ({ remote: str(s.namespace) }),
    empty: 'No remote MCP servers.',
    columns: [
      { label: 'Namespace', cell: (s) => str(s.namespace) },
      { label: 'URL', cls: 'wrap mono-cell', cell: (s) => str(s.url) },
      { label: 'State', cell: (s) => badge(s.state) },
      { label: 'Tools', num: true, cell: (s) => fmtInt(s.tools) },
      { label: 'Last error', cls: 'wrap', cell: (s) => str(s.error) },
    ],
  });
}

async function loadTools() {
  const d = await api('/admin/tools');
  const tools = Array.isArray(d.tools) ? d.tools.slice() : [];
  tools.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  renderTable(tables.tools, tools);
  renderTable(tables.remote, d.remote_servers);
}

async function loadConfig() {
  const d = await api('/admin/config');
  const cfg = d && Object.prototype.hasOwnProperty.call(d, 'config') ? d.config : d;
  setText($('config-json'), JSON.stringify(cfg, null, 2));
}

/* ------------------------------------------------------------------ start-up */

function wire() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  $('plan-form').addEventListener('submit', onPlan);
  $('key-form').addEventListener('submit', onCreateKey);
  $('team-form').addEventListener('submit', onCreateTeam);
  $('edit-form').addEventListener('submit', onSaveEdit);
  $('edit-cancel').addEventListener('click', () => $('edit-dialog').close());
  $('requests-form').addEventListener('submit', onFilter);
  $('requests-form').addEventListener('reset', onFilterReset);
  $('filter-range').addEventListener('change', syncRangeFields);
  $('requests-older').addEventListener('click', () => pageRequests('older'));
  $('requests-newer').addEventListener('click', () => pageRequests('newer'));
  $('requests-newest').addEventListener('click', () => pageRequests('newest'));
  $('request-detail-close').addEventListener('click', closeRequest);
  $('config-reload').addEventListener('click', () => refresh(false));
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', onVisibility);
}

function start() {
  buildFigures();
  buildProviderTables();
  buildClusterTables();
  buildKeyTables();
  buildRequestsTable();
  buildToolTables();
  wire();
  boot();
}

start();
