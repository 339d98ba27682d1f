// The start page: server health, and sign-in with an API token. A "#token=..." in the URL signs
// in on first load (the token is then kept in this browser and removed from the address bar).
const KEY = 'glovebox.token';

function show(id, text, ok) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.className = ok === undefined ? '' : ok ? 'ok' : 'bad';
}

async function check(path, id) {
  try {
    const r = await fetch(path, { cache: 'no-store' });
    show(id, r.ok ? 'up' : `down (HTTP ${r.status})`, r.ok);
  } catch (e) {
    show(id, `unreachable (${e.message})`, false);
  }
}

async function whoami() {
  const token = localStorage.getItem(KEY);
  if (!token) {
    show('who', 'no token');
    return;
  }
  const r = await fetch('/api/v1/whoami', { headers: { Authorization: `Bearer ${token}` } });
  if (r.ok) {
    const me = await r.json();
    show('who', `${me.name} (${me.role})`, true);
    show('error', '');
  } else {
    const body = await r.json().catch(() => ({}));
    show('who', 'not signed in', false);
    show('error', body.error ? body.error.message : `HTTP ${r.status}`);
  }
}

function takeTokenFromUrl() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    localStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
}

document.getElementById('signin').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const value = document.getElementById('token').value.trim();
  if (value) {
    localStorage.setItem(KEY, value);
    document.getElementById('token').value = '';
    whoami();
  }
});
document.getElementById('signout').addEventListener('click', () => {
  localStorage.removeItem(KEY);
  whoami();
});

takeTokenFromUrl();
check('/healthz', 'health');
check('/readyz', 'ready');
whoami();
