// api: the REST API as seen from the browser. The token lives in localStorage under
// 'glovebox.token'; every call sends it as a Bearer token. Failures become ApiError with the
// server's error code and message (or a plain description of a network failure), so every view
// can show them as they are.

const KEY = 'glovebox.token';

export function getToken() {
  try {
    return localStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  if (token) localStorage.setItem(KEY, token);
  else localStorage.removeItem(KEY);
}

// Takes "#token=..." from the address (first load or a pasted link), keeps it, and removes it
// from the address bar and the history. Returns true when a token was taken.
export function takeTokenFromHash() {
  const m = /(?:^#|[&?])token=([^&]+)/.exec(location.hash);
  if (!m) return false;
  let token;
  try {
    token = decodeURIComponent(m[1]);
  } catch {
    token = m[1];
  }
  setToken(token.trim());
  history.replaceState(null, '', `${location.pathname}${location.search}#/board`);
  return true;
}

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
  }

  // One line for people: "Forbidden: this role may not ... (HTTP 403)".
  get text() {
    if (this.status === 0) return this.message;
    return `${this.message} (HTTP ${this.status}${this.code ? `, ${this.code}` : ''})`;
  }
}

// Listeners told when the server says the token is not (or no longer) good.
const unauthorizedListeners = new Set();
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
  return () => unauthorizedListeners.delete(fn);
}

// api('/api/v1/devices', {query: {status: 'red'}, method, body, signal, raw}) -> parsed JSON
// (or, with raw: true, the JSON text).
export async function api(path, opts = {}) {
  const url = new URL(path, location.origin);
  if (opts.query) {
    for (const [k, v] of Object.entries(opts.query)) {
      if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
    }
  }
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let r;
  try {
    r = await fetch(url, { method: opts.method || 'GET', headers, body, signal: opts.signal, cache: 'no-store' });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `The server could not be reached (${e && e.message ? e.message : e}).`);
  }
  const type = r.headers.get('Content-Type') || '';
  // With `raw`, a good answer comes back as its JSON text, for callers that parse it themselves.
  if (opts.raw && r.ok && type.includes('json')) return r.text();
  let data = null;
  if (type.includes('json')) {
    try {
      data = await r.json();
    } catch {
      data = null;
    }
  }
  if (!r.ok) {
    const err = data && data.error ? data.error : {};
    const e = new ApiError(r.status, err.code || '', err.message || r.statusText || 'request failed', err.field);
    if (r.status === 401) for (const fn of unauthorizedListeners) fn(e);
    throw e;
  }
  if (data === null) throw new ApiError(r.status, 'bad_response', `The server answered ${path} with something other than JSON.`);
  return data;
}

// The operations the server documents (its OpenAPI file, served without a token). Views ask
// before calling an endpoint that a server may not have yet, so a missing one is explained
// instead of failing with a 404.
let openapi = null;
export async function hasEndpoint(method, path) {
  if (!openapi) {
    openapi = fetch('/api/v1/openapi.json', { headers: { Accept: 'application/json' } })
      .then((r) => (r.ok ? r.json() : { paths: {} }))
      .catch(() => { openapi = null; return { paths: {} }; });
  }
  const doc = await openapi;
  const item = doc && doc.paths ? doc.paths[path] : undefined;
  return Boolean(item && item[method.toLowerCase()]);
}

// The live stream's address; EventSource cannot send headers, so the token goes in the query.
// `query` adds parameters (fields).
export function streamUrl(query = {}) {
  const p = new URLSearchParams(query);
  p.set('access_token', getToken());
  return `/api/v1/stream?${p}`;
}

export const enc = encodeURIComponent;
