// app: the glovebox web view. Signs in with an API token (typed in, or "#token=..." in the
// address, which is then kept in this browser and removed from the address), routes by
// location.hash (#/board, #/device/SERIAL, #/handover/SERIAL, #/timings, #/planner), and keeps
// one store of the fleet, fed by the live stream, for every page.

import { h, fill, setText } from './js/dom.js';
import { api, getToken, setToken, takeTokenFromHash, onUnauthorized, ApiError } from './js/api.js';
import { Store } from './js/store.js';
import { mountBoard } from './js/board.js';

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const live = document.getElementById('live');
const who = document.getElementById('who');
const signout = document.getElementById('signout');
const banner = document.getElementById('banner');

// The board comes with the page; the other pages load on first visit, so the first screen
// waits for as little script as possible.
const ROUTES = {
  board: { load: async () => mountBoard, title: 'Board' },
  device: { load: async () => (await import('./js/device.js')).mountDevice, title: 'Device', params: 1 },
  handover: { load: async () => (await import('./js/handover.js')).mountHandover, title: 'Handover record', params: 1 },
  timings: { load: async () => (await import('./js/timings.js')).mountTimings, title: 'ESP durations' },
  planner: { load: async () => (await import('./js/planner.js')).mountPlanner, title: 'Planner' },
};

const LIVE_TEXT = {
  idle: '',
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  closed: 'Live updates stopped',
};

let store = null;
let me = null;
let unmount = null;
let firstRoute = true;

function showBanner(text, action) {
  if (!text) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  fill(banner, h('span', { text }), action ? h('button', { type: 'button', class: 'secondary', text: action.label, on: { click: action.run } }) : null);
  banner.hidden = false;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const query = q >= 0 ? raw.slice(q + 1) : '';
  const parts = path.split('/').filter((s) => s !== '').map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  return { name: parts[0] || 'board', params: parts.slice(1), query };
}

function navigate(hash) {
  location.hash = hash;
}

let routeSeq = 0;

async function route() {
  if (!me) return;
  const seq = ++routeSeq;
  const { name, params, query } = parseHash();
  const r = ROUTES[name];
  if (unmount) {
    unmount();
    unmount = null;
  }
  view.replaceChildren();
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.route === name || (name === 'device' || name === 'handover') && a.dataset.route === 'board') a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.body.dataset.route = name;
  if (!r || (r.params && params.length < r.params)) {
    document.title = 'Not found · glovebox';
    view.append(h('section', { class: 'notfound' }, h('h1', { text: 'Nothing here' }),
      h('p', null, 'This address names no page of the web view. ', h('a', { href: '#/board', text: 'Back to the board' }))));
    return;
  }
  document.title = `${params[0] ? `${params[0]} · ` : ''}${r.title} · glovebox`;
  let mount;
  try {
    mount = await r.load();
  } catch (e) {
    if (seq === routeSeq) view.append(h('p', { class: 'page-msg error', text: `This page could not be loaded: ${e.message}` }));
    return;
  }
  if (seq !== routeSeq || !me) return; // another route was asked for meanwhile
  unmount = mount(view, { store, me, params, query, navigate }) || null;
  if (!firstRoute) view.focus({ preventScroll: true });
  window.scrollTo(0, 0);
  firstRoute = false;
}

function showSignIn(message) {
  me = null;
  if (store) {
    store.stop();
    store = null;
  }
  if (unmount) {
    unmount();
    unmount = null;
  }
  nav.hidden = true;
  signout.hidden = true;
  setText(who, '');
  live.dataset.state = 'idle';
  setText(live, '');
  document.title = 'Sign in · glovebox';
  document.body.dataset.route = 'signin';
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  const err = h('p', { class: 'error', id: 'signin-error', role: 'alert', text: message || '' });
  const health = h('dd', { text: 'checking…' });
  const ready = h('dd', { text: 'checking…' });
  const form = h('form', { class: 'signin-form', on: { submit: (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) {
      setText(err, 'Paste a token first.');
      return;
    }
    setToken(token);
    input.value = '';
    start();
  } } }, h('label', { for: 'token', text: 'API token' }), input, h('button', { type: 'submit', text: 'Sign in' }));
  view.replaceChildren(h('section', { class: 'signin', 'aria-labelledby': 'signin-h' },
    h('h1', { id: 'signin-h', text: 'Sign in' }),
    h('p', null, 'The staging room’s board needs an API token. An administrator makes one with ',
      h('code', { text: 'gloveboxd token create --role technician --name YOUR-NAME' }),
      '; a link that ends in ', h('code', { text: '#token=…' }), ' signs in by itself. The token is kept in this browser until you sign out.'),
    form, err,
    h('dl', { class: 'facts server' }, h('dt', { text: 'Server process' }), health, h('dt', { text: 'Database' }), ready)));
  check('/healthz', health);
  check('/readyz', ready);
  input.focus();
}

async function check(path, el) {
  try {
    const r = await fetch(path, { cache: 'no-store' });
    setText(el, r.ok ? 'up' : `down (HTTP ${r.status})`);
    el.className = r.ok ? 'ok' : 'bad';
  } catch (e) {
    setText(el, `unreachable (${e.message})`);
    el.className = 'bad';
  }
}

// The store starts loading the fleet while the server is asked who the token belongs to: the
// board's data is on its way by the time the answer comes. A refused token stops it again.
async function start() {
  showBanner('');
  if (store) {
    store.stop();
    store = null;
  }
  if (!getToken()) {
    showSignIn();
    return;
  }
  const mine = new Store();
  store = mine;
  mine.onConnection((state) => {
    if (store !== mine) return;
    live.dataset.state = state;
    setText(live, LIVE_TEXT[state] || state);
  });
  mine.start();
  let answer;
  try {
    answer = await api('/api/v1/whoami');
  } catch (e) {
    if (store !== mine) return; // signed out or started again meanwhile
    mine.stop();
    store = null;
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      setToken('');
      showSignIn(e.status === 401 ? `That token was not accepted: ${e.message}.` : `That token may not read the board: ${e.message}.`);
    } else {
      view.replaceChildren();
      live.dataset.state = 'idle';
      setText(live, '');
      showBanner(`The server could not be asked who you are: ${e.text || e.message}`, { label: 'Try again', run: start });
    }
    return;
  }
  if (store !== mine) return;
  me = answer;
  setText(who, `${me.name} · ${me.role}`);
  nav.hidden = false;
  signout.hidden = false;
  route();
}

signout.addEventListener('click', () => {
  setToken('');
  showSignIn('Signed out.');
});

document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  view.focus();
});

onUnauthorized(() => {
  if (me) {
    setToken('');
    showSignIn('The server no longer accepts this token. Sign in again.');
  }
});

window.addEventListener('hashchange', () => {
  if (takeTokenFromHash()) {
    start();
    return;
  }
  route();
});

takeTokenFromHash();
start();
