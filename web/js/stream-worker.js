// stream-worker: the live stream read off the page's main thread. A burst of changes arrives
// as hundreds of `device` events; reading, parsing and dispatching each one costs the thread that
// runs it, so this dedicated worker does that, keeps the newest Device of each serial, and posts
// them to the page at most once every FLUSH_MS as one message. Started by js/store.js, which
// reads the stream itself where a worker cannot (no EventSource in workers, or no workers).
//
// Page -> worker: {type: 'open', url}, once (the page ends the stream by terminating the worker)
// Worker -> page: {type: 'unsupported'} | {type: 'open'} | {type: 'error', closed: bool}
//                 | {type: 'devices', devices: [Device, ...]}

const FLUSH_MS = 16;

let held = new Map(); // serial -> Device, the newest of each since the last post
let timer = 0;

function flush() {
  timer = 0;
  if (held.size === 0) return;
  const devices = [...held.values()];
  held = new Map();
  self.postMessage({ type: 'devices', devices });
}

function open(url) {
  if (typeof EventSource === 'undefined') {
    self.postMessage({ type: 'unsupported' });
    return;
  }
  const source = new EventSource(url);
  source.addEventListener('open', () => self.postMessage({ type: 'open' }));
  source.addEventListener('error', () => {
    // Events held so far are still good: they go before the page hears of the break.
    flush();
    self.postMessage({ type: 'error', closed: source.readyState === EventSource.CLOSED });
  });
  source.addEventListener('device', (ev) => {
    let dev;
    try {
      dev = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!dev || typeof dev.serial !== 'string') return;
    held.set(dev.serial, dev);
    if (!timer) timer = setTimeout(flush, FLUSH_MS);
  });
}

self.addEventListener('message', (e) => {
  const m = e.data;
  if (!m) return;
  if (m.type === 'open') open(m.url);
});
