// store: every device of the fleet, kept current from the live stream. The list is loaded page by
// page (GET /api/v1/devices, 1,000 a page); the stream (GET /api/v1/stream) is opened first and
// its events are held while a load runs, then applied, so nothing that changes during the load is
// lost. A dedicated worker (js/stream-worker.js) reads the stream, so that a burst of events costs
// the page one message per frame or so rather than a parse and a dispatch per event; without
// workers (or EventSource in them) the page reads it itself. Changes are coalesced by serial and
// applied once per animation frame: listeners get one call per frame with the set of serials that
// changed, never one call per event.
// After the stream breaks and comes back, the list is loaded again (events sent while it was down
// are gone). Stalled is a matter of time passing, not of a message, so the stalled devices are
// asked for every STALL_POLL_MS.

import { api, streamUrl, ApiError } from './api.js';

const PAGE = 1000;
// The members of a Device the board reads: the list and the stream are asked for these alone,
// less than half the whole object's bytes.
const FIELDS = 'serial,status,stage,stage_state,attempt,stalled,slot,diagnosis,warnings,last_seen,ready_for_user_at';
const STALL_POLL_MS = 30000;
// '"next_cursor":"..."}' or '"next_cursor":null}' at the very end of a page's JSON text.
const TAIL_CURSOR = /"next_cursor"\s*:\s*("(?:[^"\\]|\\.)*"|null)\s*\}\s*$/;

export class Store {
  // Whether the stream may be read by a worker; false once one could not (for every store).
  static workers = true;

  constructor() {
    this.devices = new Map();   // serial -> Device (at least the FIELDS members)
    this.loaded = false;        // a complete list has arrived at least once
    this.loading = false;
    this.error = null;          // the last load's ApiError, cleared by a good load
    this.connection = 'idle';   // idle | connecting | live | reconnecting | closed
    this.listeners = new Set(); // fn({reset, changed: Set<serial>})
    this.connListeners = new Set();
    this.pending = new Map();   // stream events not yet applied, by serial
    this.frame = 0;
    this.es = null;
    this.streamBroke = false;
    this.stallTimer = 0;
    this.generation = 0;        // bumped by stop(): late answers of an old load are dropped
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onConnection(fn) {
    this.connListeners.add(fn);
    fn(this.connection);
    return () => this.connListeners.delete(fn);
  }

  get(serial) {
    return this.devices.get(serial);
  }

  start() {
    this.openStream();
    this.load();
    this.stallTimer = setInterval(() => this.pollStalled(), STALL_POLL_MS);
  }

  stop() {
    this.generation++;
    if (this.es) this.es.close();
    this.es = null;
    clearInterval(this.stallTimer);
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.pending.clear();
    this.devices.clear();
    this.loaded = false;
    this.setConnection('idle');
  }

  setConnection(state) {
    if (this.connection === state) return;
    this.connection = state;
    for (const fn of this.connListeners) fn(state);
  }

  // The stream is read by a worker (js/stream-worker.js), which hands over the changes once per
  // frame or so; where the browser cannot run it, it is read here, event by event. this.es is
  // the current link ({close}); handlers of an older link do nothing.
  openStream() {
    this.setConnection('connecting');
    const url = streamUrl({ fields: FIELDS });
    const link = { close() {} };
    this.es = link;
    const current = () => this.es === link;
    const onOpen = () => {
      if (!current()) return;
      this.setConnection('live');
      if (this.streamBroke) {
        // Changes made while the stream was down were never sent: load the list again.
        this.streamBroke = false;
        this.load();
      }
    };
    const onError = (closed) => {
      if (!current()) return;
      this.streamBroke = true;
      if (closed) {
        // The server refused the stream (a revoked token, too many subscribers): EventSource
        // gives up; try again later, from scratch.
        link.close();
        this.setConnection('closed');
        setTimeout(() => {
          if (current()) this.openStream();
        }, 10000);
      } else {
        this.setConnection('reconnecting');
      }
    };
    const onDevices = (devices) => {
      if (!current()) return;
      for (const dev of devices) this.pending.set(dev.serial, dev);
      this.schedule();
    };
    const direct = () => {
      if (!current()) return;
      const es = new EventSource(url);
      link.close = () => es.close();
      es.addEventListener('open', onOpen);
      es.addEventListener('error', () => onError(es.readyState === EventSource.CLOSED));
      es.addEventListener('device', (ev) => {
        let dev;
        try {
          dev = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (dev && typeof dev.serial === 'string') onDevices([dev]);
      });
    };
    let worker = null;
    if (Store.workers && typeof Worker !== 'undefined') {
      try {
        worker = new Worker(new URL('./stream-worker.js', import.meta.url));
      } catch {
        worker = null;
      }
    }
    if (!worker) {
      direct();
      return;
    }
    let opened = false;
    const giveUp = () => {
      // No stream in a worker here: read it on this thread from now on. Had the worker's stream
      // been open, what changed meanwhile is loaded again once this one opens.
      worker.terminate();
      Store.workers = false;
      if (opened && current()) this.streamBroke = true;
      direct();
    };
    link.close = () => worker.terminate();
    worker.addEventListener('message', (e) => {
      const m = e.data;
      if (m.type === 'devices') onDevices(m.devices);
      else if (m.type === 'open') {
        opened = true;
        onOpen();
      }
      else if (m.type === 'error') onError(m.closed);
      else if (m.type === 'unsupported') giveUp();
    });
    worker.addEventListener('error', (e) => {
      e.preventDefault();
      giveUp();
    });
    worker.postMessage({ type: 'open', url });
  }

  schedule() {
    if (!this.frame && !this.loading) this.frame = requestAnimationFrame(() => this.flush());
  }

  // Applies held stream events; called once per frame.
  flush() {
    this.frame = 0;
    if (this.loading || this.pending.size === 0) return;
    const changed = new Set();
    for (const [serial, dev] of this.pending) {
      if (this.accept(dev)) {
        this.devices.set(serial, dev);
        changed.add(serial);
      }
    }
    this.pending.clear();
    if (changed.size > 0) this.emit({ reset: false, changed });
  }

  // A held event may be older than what a load just brought; the device's own clock decides.
  accept(dev) {
    const old = this.devices.get(dev.serial);
    if (!old || !old.last_seen || !dev.last_seen) return true;
    return dev.last_seen >= old.last_seen;
  }

  emit(change) {
    for (const fn of this.listeners) {
      try {
        fn(change);
      } catch (e) {
        // One broken view must not stop the others; the error still reaches the console.
        setTimeout(() => { throw e; });
      }
    }
  }

  // Every device of a query, page by page. The next page is asked for as soon as its cursor is
  // known: it is read from the end of a page's text (the server writes "next_cursor" last) before
  // the page is parsed, so the next request is under way while this one is parsed. The cursor
  // stays opaque; when the end of the text does not hold it, the parsed page gives it.
  async fetchAll(query) {
    const get = (cursor) => api('/api/v1/devices', { query: { ...query, fields: FIELDS, limit: PAGE, cursor }, raw: true });
    const out = [];
    let t0 = performance.now();
    let next = get(null);
    while (next) {
      const text = await next;
      next = null;
      const tail = TAIL_CURSOR.exec(text.length > 1024 ? text.slice(-1024) : text);
      const early = tail ? JSON.parse(tail[1]) : undefined;
      const t1 = performance.now();
      if (early) next = get(early);
      let page;
      try {
        page = JSON.parse(text);
      } catch {
        if (next) next.catch(() => {});
        throw new ApiError(200, 'bad_response', 'The server answered /api/v1/devices with something other than JSON.');
      }
      performance.measure('store:page', { start: t0, detail: { devices: page.devices.length } });
      t0 = t1;
      for (const d of page.devices) out.push(d);
      if (page.next_cursor !== early) {
        // The tail said something else (it cannot, with this server): trust the parsed page.
        if (next) next.catch(() => {});
        next = page.next_cursor ? get(page.next_cursor) : null;
      }
    }
    return out;
  }

  async load() {
    if (this.loading) {
      this.reloadAgain = true;
      return;
    }
    const gen = this.generation;
    this.loading = true;
    try {
      const list = await this.fetchAll({});
      if (gen !== this.generation) return;
      const map = new Map();
      for (const d of list) map.set(d.serial, d);
      this.devices = map;
      this.loaded = true;
      this.error = null;
    } catch (e) {
      if (gen !== this.generation) return;
      this.error = e instanceof ApiError ? e : new ApiError(0, 'client', String(e));
    } finally {
      if (gen === this.generation) this.loading = false;
    }
    if (gen !== this.generation) return;
    // Events that came in during the load, newer than what it brought.
    for (const [serial, dev] of this.pending) {
      if (this.accept(dev)) this.devices.set(serial, dev);
    }
    this.pending.clear();
    this.emit({ reset: true, changed: new Set(this.devices.keys()) });
    if (this.reloadAgain) {
      this.reloadAgain = false;
      this.load();
    }
  }

  async pollStalled() {
    if (!this.loaded || this.loading || document.hidden) return;
    let list;
    try {
      list = await this.fetchAll({ stalled: 'true' });
    } catch {
      return; // the next poll tries again; the stream's state is shown elsewhere
    }
    const now = new Map(list.map((d) => [d.serial, d]));
    const changed = new Set();
    for (const [serial, dev] of this.devices) {
      const fresh = now.get(serial);
      if (fresh && !dev.stalled && this.accept(fresh)) {
        this.devices.set(serial, fresh);
        changed.add(serial);
      } else if (!fresh && dev.stalled) {
        this.devices.set(serial, { ...dev, stalled: false });
        changed.add(serial);
      }
    }
    if (changed.size > 0) this.emit({ reset: false, changed });
  }
}
