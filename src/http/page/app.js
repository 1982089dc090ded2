// The evlog viewer: every list is paged through the API's cursors
// (`next_after`), so the page stays light whatever the log's size.
'use strict';

const $ = (id) => document.getElementById(id);
const PAGE_EVENTS = 50;
const LIVE_ROWS_MAX = 200;
const COLORS = ['#60a5fa', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#ec4899', '#14b8a6', '#9ca3af'];

// A token given as #token=... is kept for this tab and sent as a bearer token.
const token = (() => {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) sessionStorage.setItem('evlog-token', decodeURIComponent(m[1]));
  return sessionStorage.getItem('evlog-token');
})();

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== '') query.set(k, v);
  const qs = query.toString();
  const response = await fetch(path + (qs ? '?' + qs : ''), {
    headers: token ? { Authorization: 'Bearer ' + token } : {},
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function link(text, onclick, attrs) {
  const a = el('a', text, attrs);
  a.addEventListener('click', (e) => { e.preventDefault(); onclick(); });
  return a;
}

function entityName(e) { return e.entity ? e.entity.type + '/' + e.entity.id : ''; }
// Milliseconds kept: events of one second are told apart.
function shortTime(t) { return t ? t.replace('T', ' ').replace(/(\.\d{3})\d*Z$/, '$1Z') : ''; }
function fail(target, error) { target.textContent = error.message; target.classList.add('error'); }

// ---- info ----
let info = null;
async function loadInfo() {
  info = await api('/api/info');
  $('info').textContent = `${info.dir} · events ${info.first_seq ?? '-'}..${info.last_seq ?? '-'} · ` +
    (info.index_available ? `indexed through ${info.indexed_through}` : 'no index (queries scan)') +
    (info.read_only ? ' · read-only' : '');
}

// ---- timeline ----
function autoBucket(sinceUs, untilUs) {
  const minutes = (untilUs - sinceUs) / 60e6;
  if (minutes <= 1440) return 'minute';
  if (minutes / 60 <= 1440) return 'hour';
  return 'day';
}

async function loadTimeline() {
  const box = $('timeline');
  box.textContent = '';
  try {
    let bucket = $('t-bucket').value;
    const since = $('t-since').value, until = $('t-until').value;
    if (bucket === 'auto') {
      const s = since ? Date.parse(since) * 1000 : Date.parse(info.first_timestamp || 0) * 1000;
      const u = until ? Date.parse(until) * 1000 : Date.parse(info.last_timestamp || 0) * 1000;
      bucket = autoBucket(s, u);
    }
    const data = await api('/api/timeline', { since, until, bucket });
    drawTimeline(data);
  } catch (e) { fail(box, e); }
}

function drawTimeline(data) {
  const totals = {};
  for (const b of data.buckets) for (const [t, n] of Object.entries(b.by_type)) totals[t] = (totals[t] || 0) + n;
  const top = Object.entries(totals).sort((a, b) => b[1] - a[1]).slice(0, COLORS.length - 1).map((x) => x[0]);
  const max = Math.max(1, ...data.buckets.map((b) => b.total));
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  const n = Math.max(1, data.buckets.length);
  svg.setAttribute('viewBox', `0 0 ${n * 10} 100`);
  svg.setAttribute('preserveAspectRatio', 'none');
  data.buckets.forEach((b, i) => {
    let y = 100;
    const parts = top.map((t) => [t, b.by_type[t] || 0]);
    parts.push(['other', b.total - parts.reduce((s, p) => s + p[1], 0)]);
    parts.forEach(([t, count], k) => {
      if (count <= 0) return;
      const h = (count / max) * 100;
      y -= h;
      const r = document.createElementNS(ns, 'rect');
      r.setAttribute('x', i * 10 + 1); r.setAttribute('width', 8);
      r.setAttribute('y', y); r.setAttribute('height', h);
      r.setAttribute('fill', COLORS[Math.min(k, COLORS.length - 1)]);
      const title = document.createElementNS(ns, 'title');
      title.textContent = `${b.start} ${t}: ${count}`;
      r.appendChild(title);
      svg.appendChild(r);
    });
  });
  $('timeline').appendChild(svg);
  const legend = $('timeline-legend');
  legend.textContent = '';
  [...top, 'other'].forEach((t, k) => {
    const s = el('span', t);
    const i = el('i'); i.style.background = COLORS[Math.min(k, COLORS.length - 1)];
    s.prepend(i); legend.appendChild(s);
  });
  legend.appendChild(el('span', `${data.buckets.length} ${data.bucket}s, max ${max} per ${data.bucket}`));
}

// ---- search ----
let searchRoute = null, searchParams = null;

function searchRequest() {
  const v = (id) => $(id).value.trim();
  const params = { type: v('q-type'), entity: v('q-entity'), correlation: v('q-correlation'), actor: v('q-actor'),
    session: v('q-session'), since: v('q-since'), until: v('q-until'), limit: PAGE_EVENTS };
  const enc = encodeURIComponent;
  // The most selective key goes in the path; the rest are filters.
  let path = '/api/events';
  if (params.correlation) { path = '/api/events/correlation/' + enc(params.correlation); delete params.correlation; }
  else if (params.entity && params.entity.includes('/')) {
    const [t, ...id] = params.entity.split('/');
    path = '/api/events/entity/' + enc(t) + '/' + enc(id.join('/')); delete params.entity;
  } else if (params.session) { path = '/api/events/session/' + enc(params.session); delete params.session; }
  else if (params.actor) { path = '/api/events/actor/' + enc(params.actor); delete params.actor; }
  else if (params.type) { path = '/api/events/type/' + enc(params.type); delete params.type; }
  else if (!params.since && !params.until && info && info.last_seq) {
    // No filter: the latest events.
    params.from = Math.max(info.first_seq || 1, info.last_seq - PAGE_EVENTS + 1);
  }
  return [path, params];
}

async function search(more) {
  const status = $('search-status');
  status.classList.remove('error');
  if (!more) {
    [searchRoute, searchParams] = searchRequest();
    $('results').tBodies[0].textContent = '';
  }
  status.textContent = 'searching…';
  try {
    const page = await api(searchRoute, searchParams);
    const body = $('results').tBodies[0];
    for (const e of page.events) body.appendChild(eventRow(e));
    status.textContent = `${body.rows.length} events` + (page.next_after ? ' (more)' : '');
    $('more-btn').hidden = !page.next_after;
    searchParams = { ...searchParams, after: page.next_after };
    delete searchParams.from;
  } catch (e) { fail(status, e); $('more-btn').hidden = true; }
}

function eventRow(e) {
  const tr = el('tr', null, { 'data-seq': e.seq });
  for (const text of [e.seq, shortTime(e.timestamp), e.type, entityName(e), e.actor || '', e.priority, e.correlation_id || '']) {
    tr.appendChild(el('td', text, { title: String(text) }));
  }
  tr.addEventListener('click', () => {
    for (const r of document.querySelectorAll('tr.selected')) r.classList.remove('selected');
    tr.classList.add('selected');
    showEvent(e.seq);
  });
  return tr;
}

// ---- event detail, chain, tree ----
async function showEvent(seq) {
  const detail = $('detail');
  detail.classList.remove('error');
  try {
    const e = await api('/api/events/' + seq);
    $('detail-title').textContent = `#${e.seq} ${e.type}`;
    detail.textContent = JSON.stringify(e, null, 2);
    const links = $('detail-links');
    links.textContent = '';
    if (e.correlation_id) links.appendChild(link('whole correlation', () => { clearSearch(); $('q-correlation').value = e.correlation_id; search(false); }, { id: 'correlation-link' }));
    if (e.entity) links.appendChild(link('entity ' + entityName(e), () => showEntity(e.entity.type, e.entity.id, e.timestamp), { id: 'entity-link' }));
    await Promise.all([showChain(e.seq), showTree(e.seq)]);
  } catch (err) { fail(detail, err); }
}

async function showChain(seq) {
  const list = $('chain');
  list.textContent = '';
  const chain = await api('/api/events/' + seq + '/chain');
  if (chain.truncated) list.appendChild(el('li', '… earlier causes left out'));
  for (const e of chain.events) {
    const li = el('li');
    li.appendChild(link(`#${e.seq} ${e.type}`, () => showEvent(e.seq)));
    li.appendChild(document.createTextNode(` ${shortTime(e.timestamp)} ${entityName(e)}`));
    list.appendChild(li);
  }
}

async function showTree(seq) {
  const box = $('tree');
  box.textContent = '';
  const tree = await api('/api/events/' + seq + '/descendants', { limit: 500 });
  // Nodes come depth first with their depth: nest a list per level.
  const root = el('ul');
  const stack = [root];
  for (const node of tree.nodes) {
    stack.length = node.depth + 1;
    const li = el('li', null, { 'data-seq': node.event.seq });
    li.appendChild(link(`#${node.event.seq} ${node.event.type}`, () => showEvent(node.event.seq)));
    li.appendChild(document.createTextNode(` ${entityName(node.event)} ${node.event.actor || ''}`));
    const ul = el('ul');
    li.appendChild(ul);
    stack[node.depth].appendChild(li);
    stack.push(ul);
  }
  box.appendChild(root);
  box.appendChild(el('div', `${tree.total} events` + (tree.truncated ? ` (first ${tree.nodes.length} shown)` : ''), { class: 'status' }));
}

// ---- entity ----
let entity = null, historyAfter = null;

async function showEntity(type, id, at) {
  entity = { type, id };
  $('entity-title').textContent = `${type}/${id}`;
  $('at-input').value = at || '';
  $('history').tBodies[0].textContent = '';
  historyAfter = null;
  await Promise.all([loadHistory(), at ? showState() : null]);
}

async function loadHistory() {
  if (!entity) return;
  const enc = encodeURIComponent;
  const page = await api(`/api/events/entity/${enc(entity.type)}/${enc(entity.id)}/history`, { limit: PAGE_EVENTS, after: historyAfter });
  const body = $('history').tBodies[0];
  for (const c of page.changes) {
    const tr = el('tr', null, { 'data-seq': c.seq });
    for (const text of [c.seq, shortTime(c.timestamp), c.field, JSON.stringify(c.before), JSON.stringify(c.after), c.actor || '']) tr.appendChild(el('td', text));
    tr.addEventListener('click', () => { $('at-input').value = c.timestamp; showState(); });
    body.appendChild(tr);
  }
  historyAfter = page.next_after;
  $('history-more').hidden = !page.next_after;
}

async function showState() {
  const out = $('state');
  out.classList.remove('error');
  if (!entity) { out.textContent = 'Open an entity from an event first.'; return; }
  try {
    const enc = encodeURIComponent;
    const at = $('at-input').value.trim();
    const s = await api(`/api/events/entity/${enc(entity.type)}/${enc(entity.id)}`, { at });
    out.textContent = `at ${s.at}\n` + JSON.stringify(s.state, null, 2);
  } catch (e) { fail(out, e); }
}

// ---- stats ----
async function loadStats() {
  try {
    const s = await api('/api/stats', { top: 10 });
    drawBars($('stats-type'), s.by_type, s.types);
    drawBars($('stats-actor'), s.by_actor, s.actors);
    drawBars($('stats-priority'), s.by_priority);
  } catch (e) { fail($('stats-type'), e); }
}

function drawBars(box, counts, distinct) {
  box.textContent = '';
  const max = Math.max(1, ...counts.map((c) => c.count));
  for (const c of counts) {
    const row = el('div');
    row.appendChild(el('span', c.key, { title: c.key }));
    const bar = el('b'); bar.style.width = (c.count / max) * 20 + 'em';
    row.appendChild(bar);
    row.appendChild(el('small', String(c.count)));
    box.appendChild(row);
  }
  if (distinct && distinct > counts.length) box.appendChild(el('div', `… ${distinct - counts.length} more`, { class: 'status' }));
}

// ---- live tail ----
let source = null;
function startLive() {
  stopLive();
  const params = new URLSearchParams();
  if (token) params.set('access_token', token);
  source = new EventSource('/api/stream' + (params.toString() ? '?' + params : ''));
  source.onopen = () => { $('live-status').textContent = 'connected'; };
  source.onerror = () => { $('live-status').textContent = 'reconnecting…'; };
  source.onmessage = (m) => {
    const e = JSON.parse(m.data);
    const li = el('li', null, { 'data-seq': e.seq, class: 'new' });
    li.appendChild(link(`#${e.seq} ${e.type}`, () => showEvent(e.seq)));
    li.appendChild(document.createTextNode(` ${shortTime(e.timestamp)} ${entityName(e)} ${e.actor || ''}`));
    const list = $('live');
    list.prepend(li);
    while (list.children.length > LIVE_ROWS_MAX) list.lastChild.remove();
  };
}
function stopLive() { if (source) { source.close(); source = null; $('live-status').textContent = 'off'; } }

function clearSearch() { for (const id of ['q-type', 'q-entity', 'q-correlation', 'q-actor', 'q-session', 'q-since', 'q-until']) $(id).value = ''; }

// ---- wiring ----
$('search-form').addEventListener('submit', (e) => { e.preventDefault(); search(false); });
$('more-btn').addEventListener('click', () => search(true));
$('timeline-form').addEventListener('submit', (e) => { e.preventDefault(); loadTimeline(); });
$('at-form').addEventListener('submit', (e) => { e.preventDefault(); showState(); });
$('history-more').addEventListener('click', loadHistory);
$('live-on').addEventListener('change', (e) => (e.target.checked ? startLive() : stopLive()));

(async () => {
  try { await loadInfo(); } catch (e) { fail($('info'), e); return; }
  startLive();
  await Promise.all([loadTimeline(), search(false), loadStats()]);
  // When the first screen was drawn (read by the benchmark).
  window.evlogReadyMs = performance.now();
  document.body.setAttribute('data-ready', '1');
})();
