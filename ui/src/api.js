// The API client. The credential the user signed in with lives in
// sessionStorage (gone with the tab) and goes with every call.

const STORE = 'machineserver.credential';

export const credential = () => sessionStorage.getItem(STORE) || '';

export function setCredential(key) {
  if (key) sessionStorage.setItem(STORE, key);
  else sessionStorage.removeItem(STORE);
}

// API keys (ms_<id>_<secret>) are sent as "ApiKey"; anything else is taken
// for a JWT and sent as a bearer token.
export const authorization = (key = credential()) => (key.startsWith('ms_') ? 'ApiKey ' : 'Bearer ') + key;

export class APIError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let unauthorized = () => {};
// onUnauthorized is called when the server refuses the stored credential.
export const onUnauthorized = (fn) => { unauthorized = fn; };

export async function call(method, path, body, { raw = false, key } = {}) {
  const headers = { Authorization: authorization(key) };
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob) && typeof body !== 'string') {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: payload, cache: 'no-store' });
  } catch (e) {
    throw new APIError(0, 'network', `cannot reach the server (${e.message})`);
  }
  if (!resp.ok) {
    let code = `http_${resp.status}`, message = resp.statusText || `HTTP ${resp.status}`, details;
    try {
      const j = await resp.json();
      if (j.error) ({ code, message, details } = j.error);
    } catch { /* not the error JSON */ }
    const err = new APIError(resp.status, code, message, details);
    if (resp.status === 401 && key === undefined) unauthorized(err);
    throw err;
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return (resp.headers.get('Content-Type') || '').includes('json') ? resp.json() : resp.text();
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body, opts) => call('POST', path, body, opts);
export const del = (path) => call('DELETE', path);

// p builds an API path, escaping each id.
export const p = (strings, ...ids) => strings.reduce((s, part, i) => s + encodeURIComponent(ids[i - 1]) + part);

// wsURL turns an API path into the WebSocket URL of this origin.
export function wsURL(path, query) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== '') u.searchParams.set(k, v);
  return u.toString();
}

// download fetches path with the credential and hands it to the browser as
// a file (a plain link cannot carry the Authorization header).
export async function download(path, filename) {
  const resp = await call('GET', path, undefined, { raw: true });
  const url = URL.createObjectURL(await resp.blob());
  const a = Object.assign(document.createElement('a'), { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// Capabilities change only with the server's QEMU; they are read once per
// sign-in.
let caps;
export function capabilities() {
  caps ??= get('/api/v1/capabilities').catch((e) => { caps = undefined; throw e; });
  return caps;
}

export async function boards() {
  const c = await capabilities();
  return (c.backends || []).flatMap((b) => (b.boards || []).map((board) => ({ ...board, backend: b.name })));
}

export async function board(name) {
  return (await boards()).find((b) => b.name === name);
}

export function forget() { caps = undefined; }
