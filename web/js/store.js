// store: every device of the fleet, kept current from the live stream. The list is loaded page by
// page (GET /api/v1/devices, 1,000 a page); the stream (GET /api/v1/stream) is opened first and
// its events are held while a load runs, then applied, so nothing that changes during the load is
// lost. Stream events are coalesced by serial and applied once per animation frame: listeners get
// one call per frame with the set of serials that changed, never one call per event.
// After the stream breaks and comes back, the list is loaded again (events sent while it was down
// are gone). Stalled is a matter of time passing, not of a message, so the stalled devices are
// asked for every STALL_POLL_MS.

import { api, streamUrl, ApiError } from './api.js';

const PAGE = 1000;
const STALL_POLL_MS = 30000;

export class Store {
  constructor() {
    this.devices = new Map();   // serial -> Device (as the API shows it)
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

  openStream() {
    this.setConnection('connecting');
    const es = new EventSource(streamUrl());
    this.es = es;
    es.addEventListener('open', () => {
      this.setConnection('live');
      if (this.streamBroke) {
        // Changes made while the stream was down were never sent: load the list again.
        this.streamBroke = false;
        this.load();
      }
    });
    es.addEventListener('error', () => {
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (a revoked token, too many subscribers): EventSource
        // gives up; try again later, from scratch.
        this.setConnection('closed');
        this.streamBroke = true;
        setTimeout(() => {
          if (this.es === es) this.openStream();
        }, 10000);
      } else {
        this.setConnection('reconnecting');
        this.streamBroke = true;
      }
    });
    es.addEventListener('device', (ev) => {
      let dev;
      try {
        dev = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!dev || typeof dev.serial !== 'string') return;
      this.pending.set(dev.serial, dev);
      this.schedule();
    });
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

  async fetchAll(query) {
    const out = [];
    let cursor = null;
    do {
      const t0 = performance.now();
      const page = await api('/api/v1/devices', { query: { ...query, limit: PAGE, cursor } });
      performance.measure('store:page', { start: t0, detail: { devices: page.devices.length } });
      for (const d of page.devices) out.push(d);
      cursor = page.next_cursor;
    } while (cursor);
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
