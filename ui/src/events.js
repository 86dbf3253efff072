// Live state: the tenant's CloudEvents from GET /api/v1/stream/events.
// Pages watch type prefixes; every event carries a streamid, and a
// reconnect asks for what came after the last one, so nothing is missed
// across a dropped connection. While the stream cannot be had, pages are
// refreshed by polling instead, and the header says so.

import { authorization } from './api.js';

const watchers = new Set();
const statusListeners = new Set();
let status = 'off';
let running = false;
let after = '';
let ctrl = null;
let timer = 0;
let pollTimer = 0;

// watch calls onEvent with each event whose type starts with one of
// prefixes, and refresh (which reloads the page's data) whenever events may
// have been missed: on (re)connecting, and every few seconds while polling.
export function watch(prefixes, onEvent, refresh) {
  const w = { prefixes, onEvent, refresh };
  watchers.add(w);
  return () => watchers.delete(w);
}

export const onStatus = (fn) => { statusListeners.add(fn); fn(status); return () => statusListeners.delete(fn); };

function setStatus(s, detail) {
  status = s;
  for (const fn of statusListeners) fn(s, detail);
}

function dispatch(ev) {
  if (ev.streamid) after = ev.streamid;
  // The server could not replay everything that was missed: reload.
  if (ev.type?.startsWith('io.machineserver.stream.gap')) refreshAll();
  for (const w of watchers) {
    if (w.prefixes.some((p) => ev.type?.startsWith(p))) {
      try { w.onEvent(ev); } catch (e) { console.error('event handler', e); }
    }
  }
}

function refreshAll() {
  for (const w of watchers) w.refresh?.();
}

// A page the browser keeps after the user navigated away (the back/forward
// cache) would keep its stream open, holding one of the browser's six
// connections to this host: a few navigations later a page load waits a
// minute for one. So the stream ends when the page is hidden, and starts
// again if it comes back.
addEventListener('pagehide', () => ctrl?.abort());
addEventListener('pageshow', (e) => { if (e.persisted && running) connect(); });

export function start() {
  if (running) return;
  running = true;
  connect();
}

export function stop() {
  running = false;
  ctrl?.abort();
  ctrl = null;
  clearTimeout(timer);
  clearInterval(pollTimer);
  pollTimer = 0;
  after = '';
  setStatus('off');
}

function retry(delay, why) {
  clearTimeout(timer);
  if (!running) return;
  if (!pollTimer) pollTimer = setInterval(refreshAll, 3000);
  setStatus('polling', why);
  timer = setTimeout(connect, delay);
}

async function connect() {
  ctrl = new AbortController();
  const mine = ctrl;
  setStatus('connecting');
  const url = '/api/v1/stream/events' + (after ? `?after=${encodeURIComponent(after)}` : '');
  const headers = { Authorization: authorization(), Accept: 'text/event-stream' };
  if (after) headers['Last-Event-ID'] = after;
  let resp;
  try {
    resp = await fetch(url, { headers, signal: mine.signal, cache: 'no-store' });
  } catch {
    if (!mine.signal.aborted) retry(2000, 'the event stream is unreachable');
    return;
  }
  if (!resp.ok || !(resp.headers.get('Content-Type') || '').startsWith('text/event-stream')) {
    resp.body?.cancel();
    // A server without the stream (404) is asked again rarely; one that
    // failed now, soon.
    retry(resp.status === 404 ? 30000 : 3000, `the event stream answered ${resp.status}`);
    return;
  }
  clearInterval(pollTimer);
  pollTimer = 0;
  setStatus('live');
  refreshAll();
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf = (buf + value).replace(/\r\n?/g, '\n');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        sse(block);
      }
    }
  } catch {
    // aborted or dropped: see below
  }
  if (!mine.signal.aborted) retry(1000, 'the event stream closed');
}

// sse handles one Server-Sent Events block: its data is a CloudEvent.
function sse(block) {
  const data = [];
  let id = '';
  for (const line of block.split('\n')) {
    if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    else if (line.startsWith('id:')) id = line.slice(3).trim();
  }
  if (!data.length) return;
  let ev;
  try { ev = JSON.parse(data.join('\n')); } catch { return; }
  if (id && !ev.streamid) ev.streamid = id;
  dispatch(ev);
}
