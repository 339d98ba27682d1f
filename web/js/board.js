// board: the fleet board, one tile per device. The grid is windowed: every device has a record
// (its last state, sort key and filter match), but only the tiles in and near the viewport exist
// in the DOM, each absolutely placed by its index, so the cost of a render or of a burst of
// updates depends on the screen, not on the fleet. A change repaints only the visible tiles whose
// device changed, and only the parts whose text or state differ; order and filtering are a sort
// of the records (keys are precomputed strings), never a rebuild of the DOM.
// Keyboard: the grid is one tab stop (roving tabindex); arrows, Home/End and PageUp/PageDown move
// between tiles (scrolling hidden ones into view), Enter opens a device.
// Filters live in the address (#/board?status=red&q=...), so a filtered board can be linked.

import { h, icon, setText } from './dom.js';
import { STATUSES, STATUS_LABEL, STATUS_HINT, STAGES, stageName, progress, shortTime, naturalSort } from './format.js';

// Lower ranks first in the "needs attention" order: red screens, stalled devices, green screens
// waiting for Reseal, then the flow in progress, then the finished ones.
const ATTENTION = { red: 0, green: 2, provisioning: 3, registered: 4, handover: 5, resealed: 6, delivered: 7 };

// Rows of tiles kept ready above and below the viewport.
const OVERSCAN = 2;

const SORTS = [
  ['attention', 'Needs attention first'],
  ['serial', 'Serial'],
  ['slot', 'Slot'],
  ['progress', 'Progress'],
  ['last_seen', 'Last seen (newest first)'],
];

// "A-2" -> "A-0000000002": plain string order then matches natural order.
function natural(s) {
  return s.replace(/\d+/g, (d) => d.padStart(10, '0'));
}

function sortKey(sort, d) {
  switch (sort) {
    case 'serial':
      return d.serial;
    case 'slot':
      return d.slot ? `0${natural(d.slot)}|${d.serial}` : `1|${d.serial}`;
    case 'progress': {
      const p = progress(d);
      const frac = d.status === 'provisioning' || d.status === 'handover' ? (p ? p.fraction : 0) : -1;
      return `${String(1000 - Math.round(frac * 999)).padStart(4, '0')}|${d.serial}`;
    }
    case 'last_seen': {
      const t = d.last_seen ? Date.parse(d.last_seen) : 0;
      return `${String(9e15 - t).padStart(16, '0')}|${d.serial}`;
    }
    default: {
      const rank = d.stalled ? 1 : ATTENTION[d.status] ?? 9;
      return `${rank}|${d.serial}`;
    }
  }
}

// The second line of a tile: what a technician needs to know at a glance.
function infoText(d) {
  const p = progress(d);
  let s;
  switch (d.status) {
    case 'provisioning':
    case 'handover':
      s = p ? `${stageName(d.stage)} · ${p.step}/${p.of}` : stageName(d.stage);
      break;
    case 'red':
      s = d.diagnosis ? d.diagnosis.code : `failed at ${stageName(d.stage)}`;
      break;
    case 'green':
      s = 'Ready to reseal';
      break;
    case 'resealed': {
      const ready = d.ready_for_user_at ? Date.parse(d.ready_for_user_at) : 0;
      s = ready > Date.now() ? `User from ${shortTime(ready)}` : 'Ready for the user';
      break;
    }
    case 'delivered':
      s = 'At the desktop';
      break;
    default:
      s = 'Not started';
  }
  return d.attempt > 1 ? `${s} · try ${d.attempt}` : s;
}

function titleText(d) {
  const parts = [`${d.serial}: ${STATUS_LABEL[d.status] || d.status} (${STATUS_HINT[d.status] || ''})`];
  if (d.stage) parts.push(`stage ${stageName(d.stage)} ${d.stage_state || ''}`.trim());
  if (d.diagnosis) parts.push(`diagnosis ${d.diagnosis.code}`);
  if (d.stalled) parts.push('stalled: no message for a while');
  if (d.slot) parts.push(`slot ${d.slot}`);
  if (d.warnings && d.warnings.length) parts.push(`warnings: ${d.warnings.join(', ')}`);
  return parts.join('\n');
}

function parseFilters(query) {
  const p = new URLSearchParams(query || '');
  const statuses = new Set((p.get('status') || '').split(',').filter((s) => STATUSES.includes(s)));
  const sort = SORTS.some(([id]) => id === p.get('sort')) ? p.get('sort') : 'attention';
  return {
    statuses,
    stage: p.get('stage') || '',
    slot: p.get('slot') || '',
    q: p.get('q') || '',
    stalled: p.get('stalled') === '1',
    sort,
  };
}

function filtersQuery(f) {
  const p = new URLSearchParams();
  if (f.statuses.size) p.set('status', STATUSES.filter((s) => f.statuses.has(s)).join(','));
  if (f.stage) p.set('stage', f.stage);
  if (f.slot) p.set('slot', f.slot);
  if (f.q) p.set('q', f.q);
  if (f.stalled) p.set('stalled', '1');
  if (f.sort !== 'attention') p.set('sort', f.sort);
  const s = p.toString();
  return s ? `?${s}` : '';
}

export function mountBoard(root, { store, query }) {
  const f = parseFilters(query);
  const recs = new Map(); // serial -> {serial, dev, key, match, index (in visible, or -1)}
  let visible = [];
  let slots = [];
  let firstRendered = false;
  let measured = false;

  // Counts bar: each count is also the status filter's toggle.
  const countEls = {};
  const countButtons = STATUSES.map((s) => {
    const n = h('span', { class: 'n', text: '0' });
    countEls[s] = n;
    return h('button', {
      type: 'button', class: 'count', dataset: { status: s }, 'aria-pressed': String(f.statuses.has(s)),
      title: `${STATUS_LABEL[s]}: ${STATUS_HINT[s]}. Press to show only these (or add them to the filter).`,
      on: { click: () => toggleStatus(s) },
    }, icon(s), h('span', { class: 'label', text: STATUS_LABEL[s] }), n);
  });
  const stalledN = h('span', { class: 'n', text: '0' });
  const stalledBtn = h('button', {
    type: 'button', class: 'count', dataset: { status: 'stalled' }, 'aria-pressed': String(f.stalled),
    title: 'Devices silent longer than the stall timeout. Press to show only these.',
    on: { click: () => { f.stalled = !f.stalled; stalledBox.checked = f.stalled; changedFilters(); } },
  }, icon('stalled'), h('span', { class: 'label', text: 'Stalled' }), stalledN);
  const totalN = h('span', { class: 'n', text: '0' });
  const counts = h('div', { class: 'counts', role: 'group', 'aria-label': 'Devices by status (each button filters the board)' },
    countButtons, stalledBtn, h('span', { class: 'total' }, totalN, ' devices'));

  // Filter controls.
  const search = h('input', {
    type: 'search', id: 'board-q', placeholder: 'Search serial  ( / )', autocomplete: 'off', spellcheck: 'false', value: f.q,
  });
  const stageSel = h('select', { id: 'board-stage' },
    h('option', { value: '', text: 'Any stage' }),
    STAGES.map(([id, name]) => h('option', { value: id, text: name, selected: f.stage === id })));
  const slotSel = h('select', { id: 'board-slot' }, h('option', { value: '', text: 'Any slot' }));
  const stalledBox = h('input', { type: 'checkbox', id: 'board-stalled', checked: f.stalled });
  const sortSel = h('select', { id: 'board-sort' },
    SORTS.map(([id, name]) => h('option', { value: id, text: name, selected: f.sort === id })));
  const shown = h('output', { class: 'shown', 'aria-live': 'off', for: 'board-q' });
  const clearBtn = h('button', { type: 'button', class: 'secondary', text: 'Clear filters', on: { click: clearFilters } });
  const controls = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the board', on: { submit: (e) => e.preventDefault() } },
    h('label', { class: 'field grow' }, h('span', { text: 'Serial' }), search),
    h('label', { class: 'field' }, h('span', { text: 'Stage' }), stageSel),
    h('label', { class: 'field' }, h('span', { text: 'Slot' }), slotSel),
    h('label', { class: 'check' }, stalledBox, h('span', { text: 'Stalled only' })),
    h('label', { class: 'field' }, h('span', { text: 'Sort' }), sortSel),
    clearBtn, shown);

  const msg = h('p', { class: 'board-msg', role: 'status' });
  const grid = h('div', { class: 'tiles', id: 'tiles', role: 'group', 'aria-label': 'Devices (arrow keys move between them)', on: { keydown: onGridKey, focusin: onGridFocus } });
  const section = h('section', { class: 'board', 'aria-labelledby': 'board-h', dataset: { boardState: 'loading' } },
    h('h1', { id: 'board-h', class: 'visually-hidden', text: 'Fleet board' }), counts, controls, msg, grid);
  // Until the fleet is in, the page shows the loading message alone: laying out the counts and
  // the filters first would cost a frame that the first complete one redoes.
  const waiting = !store.loaded && !store.error;
  counts.hidden = waiting;
  controls.hidden = waiting;
  root.append(section);

  let searchTimer = 0;
  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { f.q = search.value.trim(); changedFilters(); }, 120);
  });
  stageSel.addEventListener('change', () => { f.stage = stageSel.value; changedFilters(); });
  slotSel.addEventListener('change', () => { f.slot = slotSel.value; changedFilters(); });
  stalledBox.addEventListener('change', () => { f.stalled = stalledBox.checked; changedFilters(); });
  sortSel.addEventListener('change', () => { f.sort = sortSel.value; changedFilters(); });
  const onSlash = (e) => {
    if (e.key === '/' && !(e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLSelectElement)) {
      e.preventDefault();
      search.focus();
    }
  };
  document.addEventListener('keydown', onSlash);

  function toggleStatus(s) {
    if (f.statuses.has(s)) f.statuses.delete(s);
    else f.statuses.add(s);
    changedFilters();
  }

  function clearFilters() {
    f.statuses.clear();
    f.stage = ''; f.slot = ''; f.q = ''; f.stalled = false;
    search.value = ''; stageSel.value = ''; slotSel.value = ''; stalledBox.checked = false;
    changedFilters();
  }

  function matches(d) {
    if (f.statuses.size && !f.statuses.has(d.status)) return false;
    if (f.stage && d.stage !== f.stage) return false;
    if (f.slot === '-' ? d.slot : f.slot && d.slot !== f.slot) return false;
    if (f.stalled && !d.stalled) return false;
    if (f.q && !d.serial.toLowerCase().includes(f.q.toLowerCase())) return false;
    return true;
  }

  // Tiles are clones of one skeleton: <a> with status, slot, serial and info spans and the
  // progress bar. The icon is a pseudo-element; the "Stalled" badge is made when first needed.
  // Texts change as the data of their text nodes, and the progress is a custom property of the
  // bar alone, so the common update (a device's next stage) restyles no element but the bar.
  // A view is a tile element bound to one device while it is on screen, then reused.
  const skeleton = h('a', { class: 'tile', tabindex: '-1' }, icon('registered', 't-ico'),
    h('span', { class: 't-st' }, ''), h('span', { class: 't-slot' }, ''), h('span', { class: 't-sn' }, ''), h('span', { class: 't-info' }, ''),
    h('span', { class: 't-bar' }));
  const pool = [];
  const bound = new Map(); // serial -> view
  let active = 0;          // index of the tile that takes the tab stop
  let geo = { cols: 1, rowH: 80, tileW: 180, gap: 6, top: 0 };

  function takeView() {
    const v = pool.pop();
    if (v) return v;
    const el = skeleton.cloneNode(true);
    const [ico, st, slot, sn, info, bar] = el.children;
    return { el, use: ico.firstChild, st: st.firstChild, slot: slot.firstChild, sn: sn.firstChild, info: info.firstChild, bar, stall: null, serial: null, dev: null, idx: -1, text: {} };
  }

  function bind(v, rec) {
    v.serial = rec.serial;
    v.dev = null;
    v.idx = -1;
    v.text = {};
    v.el.href = `#/device/${encodeURIComponent(rec.serial)}`;
    v.sn.data = rec.serial;
    v.el.dataset.serial = rec.serial;
  }

  // Writes what differs between the tile and the device.
  function paint(v, d) {
    const old = v.dev;
    const el = v.el;
    if (!old || old.status !== d.status) {
      el.dataset.status = d.status;
      v.use.setAttribute('href', `#i-${d.status}`);
    }
    if (!old || old.stalled !== d.stalled) {
      el.classList.toggle('stalled', d.stalled);
      if (d.stalled && !v.stall) v.stall = el.appendChild(h('span', { class: 't-stall', text: 'Stalled' }));
      if (v.stall) v.stall.hidden = !d.stalled;
    }
    const t = v.text;
    const st = STATUS_LABEL[d.status] || d.status;
    if (t.st !== st) v.st.data = t.st = st;
    const slot = d.slot || '';
    if (t.slot !== slot) v.slot.data = t.slot = slot;
    const info = infoText(d);
    if (t.info !== info) v.info.data = t.info = info;
    const p = progress(d);
    const frac = p ? p.fraction.toFixed(3) : '0';
    if (t.p !== frac) v.bar.style.setProperty('--p', (t.p = frac));
    const title = titleText(d);
    if (t.title !== title) el.title = t.title = title;
    v.dev = d;
  }

  function place(v, i) {
    if (v.idx === i) return;
    v.idx = i;
    const col = i % geo.cols;
    const row = (i - col) / geo.cols;
    v.el.style.transform = `translate(${Math.round(col * (geo.tileW + geo.gap))}px, ${row * geo.rowH}px)`;
    v.el.tabIndex = i === active ? 0 : -1;
  }

  // Column count, tile width and row height from the grid's width and the style sheet's sizes.
  function measure() {
    const cs = getComputedStyle(grid);
    const px = (name, fallback) => {
      const probe = parseFloat(cs.getPropertyValue(name));
      return Number.isFinite(probe) ? probe * parseFloat(getComputedStyle(document.documentElement).fontSize) : fallback;
    };
    const minW = px('--tile-min', 176);
    const tileH = px('--tile-h', 74);
    const gap = px('--tile-gap', 6);
    const width = grid.clientWidth || 1;
    const cols = Math.max(1, Math.floor((width + gap) / (minW + gap)));
    const tileW = (width - gap * (cols - 1)) / cols;
    const changed = cols !== geo.cols || Math.abs(tileW - geo.tileW) > 0.5 || tileH + gap !== geo.rowH;
    geo = { cols, tileW, gap, rowH: tileH + gap, tileH };
    if (changed) {
      grid.style.setProperty('--tw', `${tileW}px`);
      for (const v of bound.values()) v.idx = -1; // placed again below
    }
  }

  // Binds tiles to the rows in and near the viewport (`overscan` rows above and below it),
  // releases the others, and keeps the DOM order equal to the visual order (what screen readers
  // and Tab follow).
  function renderWindow(overscan = OVERSCAN) {
    const rows = Math.ceil(visible.length / geo.cols);
    const height = Math.max(0, rows * geo.rowH - geo.gap);
    if (grid.style.height !== `${height}px`) grid.style.height = `${height}px`;
    const top = grid.getBoundingClientRect().top;
    const viewH = window.innerHeight || 800;
    const first = Math.max(0, Math.floor(-top / geo.rowH) - overscan);
    const last = Math.min(rows - 1, Math.ceil((viewH - top) / geo.rowH) + overscan);
    const a = first * geo.cols;
    const b = Math.min(visible.length - 1, (last + 1) * geo.cols - 1);
    if (active >= visible.length) active = Math.max(0, visible.length - 1);
    const want = new Set();
    for (let i = a; i <= b; i++) want.add(visible[i].serial);
    // The tile holding the tab stop or the focus stays, even when scrolled away.
    if (visible[active]) want.add(visible[active].serial);
    const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest('.tile') : null;
    if (focused && focused.dataset.serial && recs.get(focused.dataset.serial) && recs.get(focused.dataset.serial).match) want.add(focused.dataset.serial);
    for (const [serial, v] of bound) {
      if (!want.has(serial)) {
        bound.delete(serial);
        v.el.remove();
        v.serial = null;
        pool.push(v);
      }
    }
    let reorder = false;
    const order = [];
    const add = (i) => {
      const rec = visible[i];
      let v = bound.get(rec.serial);
      if (!v) {
        v = takeView();
        bind(v, rec);
        bound.set(rec.serial, v);
        reorder = true;
      }
      if (v.dev !== rec.dev) paint(v, rec.dev);
      if (v.idx !== i) reorder = true;
      place(v, i);
      order.push(v);
    };
    const extra = [];
    for (const serial of want) {
      const rec = recs.get(serial);
      const i = rec ? rec.index : -1;
      if (i >= 0 && (i < a || i > b)) extra.push(i);
    }
    for (const i of extra.filter((x) => x < a).sort((x, y) => x - y)) add(i);
    for (let i = a; i <= b; i++) add(i);
    for (const i of extra.filter((x) => x > b).sort((x, y) => x - y)) add(i);
    for (const v of order) v.el.tabIndex = v.idx === active ? 0 : -1;
    if (reorder) sortChildren(order, focused);
  }

  // Puts the grid's children in the order of `order` (views sorted by index) with the fewest
  // moves: the children already in order (the longest increasing run of indices, found in
  // O(n log n)) stay; only the others are inserted where they belong. Moving few nodes keeps the
  // browser's style and layout work small, and leaves the focused tile in place.
  function sortChildren(order, focused) {
    const cur = [];
    for (let c = grid.firstElementChild; c; c = c.nextElementSibling) {
      const v = bound.get(c.dataset.serial);
      if (v && v.el === c) cur.push(v);
    }
    const tails = [];
    const prev = new Array(cur.length);
    for (let i = 0; i < cur.length; i++) {
      let lo = 0;
      let hi = tails.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cur[tails[mid]].idx < cur[i].idx) lo = mid + 1;
        else hi = mid;
      }
      prev[i] = lo > 0 ? tails[lo - 1] : -1;
      tails[lo] = i;
    }
    const keep = new Set();
    for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = prev[i]) keep.add(cur[i]);
    if (keep.size === order.length && grid.childElementCount === order.length) return;
    let next = null;
    for (let i = order.length - 1; i >= 0; i--) {
      const v = order[i];
      if (!keep.has(v)) grid.insertBefore(v.el, next);
      next = v.el;
    }
    if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
  }

  let scrollFrame = 0;
  const onScroll = () => {
    if (!scrollFrame) scrollFrame = requestAnimationFrame(() => { scrollFrame = 0; renderWindow(); });
  };
  window.addEventListener('scroll', onScroll, { passive: true });
  // Only a change of width moves tiles (the height is the board's own doing).
  let gridWidth = -1;
  const resizer = new ResizeObserver((entries) => {
    const width = entries[entries.length - 1].contentRect.width;
    if (width === gridWidth) return;
    gridWidth = width;
    measure();
    renderWindow();
  });
  resizer.observe(grid);

  function updateCounts() {
    const n = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    let stalled = 0;
    for (const d of store.devices.values()) {
      if (n[d.status] !== undefined) n[d.status]++;
      if (d.stalled) stalled++;
    }
    for (const s of STATUSES) setText(countEls[s], n[s]);
    setText(stalledN, stalled);
    setText(totalN, store.devices.size);
    stalledBtn.classList.toggle('has', stalled > 0);
  }

  // The slot filter's choices; `all` when a device may have changed its slot (the common update,
  // a device's next stage, does not: it costs no walk through the fleet).
  function updateSlots(all) {
    if (!all) return;
    const set = new Set();
    for (const d of store.devices.values()) if (d.slot) set.add(d.slot);
    if (f.slot && f.slot !== '-') set.add(f.slot);
    if (set.size === slots.length && slots.every((s) => set.has(s))) return;
    slots = naturalSort([...set]);
    const frag = document.createDocumentFragment();
    frag.append(new Option('Any slot', ''), new Option('No slot', '-'));
    for (const s of slots) frag.append(new Option(s, s));
    slotSel.replaceChildren(frag);
    slotSel.value = f.slot;
  }

  function updateShown() {
    const total = store.devices.size;
    setText(shown, visible.length === total ? `${total} shown` : `${visible.length} of ${total} shown`);
    const filtered = f.statuses.size || f.stage || f.slot || f.q || f.stalled;
    clearBtn.disabled = !filtered;
    for (const b of countButtons) b.setAttribute('aria-pressed', String(f.statuses.has(b.dataset.status)));
    stalledBtn.setAttribute('aria-pressed', String(f.stalled));
    if (!store.loaded) return;
    if (total === 0) setText(msg, 'No devices yet: import an Autopilot CSV or start the agents, and they appear here as they report.');
    else if (visible.length === 0) setText(msg, 'No device matches these filters.');
    else setText(msg, '');
  }

  // Brings the records and the order in line with the filters after `changed` devices changed
  // (with `full`, the filters or the sort changed: every key and match is computed again). After
  // a few changes the order is mended rather than made again: the records whose key or match
  // changed leave it, and return sorted among themselves by one merge with the rest.
  function reconcile(changed, full, overscan = OVERSCAN) {
    const moved = [];
    let gone = false;
    for (const serial of changed) {
      const d = store.get(serial);
      let rec = recs.get(serial);
      if (!d) {
        if (rec) {
          recs.delete(serial);
          if (rec.index >= 0) gone = true;
          rec.match = false;
        }
        continue;
      }
      if (!rec) {
        rec = { serial, dev: d, key: '', match: false, index: -1 };
        recs.set(serial, rec);
      }
      rec.dev = d;
      if (full) continue;
      const key = sortKey(f.sort, d);
      const match = matches(d);
      if (key !== rec.key || match !== rec.match) moved.push(rec);
      rec.key = key;
      rec.match = match;
    }
    if (full) {
      const vis = [];
      for (const rec of recs.values()) {
        rec.key = sortKey(f.sort, rec.dev);
        rec.match = matches(rec.dev);
        rec.index = -1;
        if (rec.match) vis.push(rec);
      }
      vis.sort(byKey);
      setVisible(vis);
    } else if (moved.length || gone) {
      const out = new Set(moved);
      const stay = visible.filter((rec) => !out.has(rec) && rec.match);
      const come = moved.filter((rec) => rec.match).sort(byKey);
      for (const rec of visible) rec.index = -1;
      for (const rec of moved) rec.index = -1;
      const vis = new Array(stay.length + come.length);
      let i = 0;
      let j = 0;
      for (let k = 0; k < vis.length; k++) vis[k] = j >= come.length || (i < stay.length && byKey(stay[i], come[j]) <= 0) ? stay[i++] : come[j++];
      setVisible(vis);
    }
    renderWindow(overscan);
  }

  function byKey(x, y) {
    return x.key < y.key ? -1 : x.key > y.key ? 1 : 0;
  }

  function setVisible(vis) {
    for (let i = 0; i < vis.length; i++) vis[i].index = i;
    visible = vis;
  }

  function changedFilters() {
    const q = filtersQuery(f);
    history.replaceState(null, '', `#/board${q}`);
    active = 0;
    reconcile([], true);
    updateShown();
  }

  function onChange({ reset, changed }) {
    const t0 = performance.now();
    if (reset) {
      // Devices gone from a fresh list lose their records.
      for (const serial of recs.keys()) if (!store.devices.has(serial)) changed.add(serial);
    }
    if (counts.hidden && (store.loaded || store.error)) {
      counts.hidden = false;
      controls.hidden = false;
    }
    if (!measured) { measure(); measured = true; }
    let slotsMoved = reset;
    for (const serial of changed) {
      if (slotsMoved) break;
      const rec = recs.get(serial);
      const d = store.get(serial);
      slotsMoved = !rec || !d || (rec.dev.slot || '') !== (d.slot || '');
    }
    // The first screen is drawn with the rows in view only; the rows around them follow right
    // after it, ready for scrolling.
    const first = store.loaded && !firstRendered;
    reconcile(changed, reset, first ? 0 : OVERSCAN);
    updateCounts();
    updateSlots(slotsMoved);
    updateShown();
    if (store.error) setText(msg, `The device list could not be loaded: ${store.error.text}`);
    performance.measure('board:apply', { start: t0, detail: { updates: changed.size, reset } });
    if (first) {
      firstRendered = true;
      // Marked once the frame holding the tiles has been produced.
      requestAnimationFrame(() => setTimeout(() => {
        performance.mark('board:first-render');
        section.dataset.boardState = 'ready';
        renderWindow();
      }, 0));
    }
  }

  // The grid is one tab stop: arrows, Home/End and PageUp/PageDown move the focus between tiles,
  // scrolling a tile that is not on screen into view first.
  function onGridKey(e) {
    const cur = e.target.closest && e.target.closest('.tile');
    if (!cur || !recs.get(cur.dataset.serial)) return;
    const i = recs.get(cur.dataset.serial).index;
    const page = Math.max(1, Math.floor((window.innerHeight || 800) / geo.rowH) - 1) * geo.cols;
    const moves = {
      ArrowRight: i + 1, ArrowLeft: i - 1, ArrowDown: i + geo.cols, ArrowUp: i - geo.cols,
      Home: 0, End: visible.length - 1, PageDown: i + page, PageUp: i - page,
    };
    if (!(e.key in moves)) return;
    e.preventDefault();
    focusIndex(Math.max(0, Math.min(visible.length - 1, moves[e.key])));
  }

  function focusIndex(i) {
    if (!visible[i]) return;
    active = i;
    const row = Math.floor(i / geo.cols);
    const top = grid.getBoundingClientRect().top + row * geo.rowH;
    const header = document.querySelector('.top');
    const minTop = header ? header.getBoundingClientRect().bottom + 4 : 0;
    if (top < minTop) window.scrollBy(0, top - minTop);
    else if (top + geo.rowH > window.innerHeight) window.scrollBy(0, top + geo.rowH - window.innerHeight + 4);
    renderWindow();
    const v = bound.get(visible[i].serial);
    if (v) v.el.focus({ preventScroll: true });
  }

  function onGridFocus(e) {
    const cur = e.target.closest && e.target.closest('.tile');
    const rec = cur && recs.get(cur.dataset.serial);
    if (rec && rec.index >= 0 && rec.index !== active) {
      active = rec.index;
      for (const v of bound.values()) v.el.tabIndex = v.idx === active ? 0 : -1;
    }
  }

  // For scripts and tests: the serials the board shows, in its order (the DOM holds only the
  // tiles near the viewport).
  section.gbShown = () => visible.map((r) => r.serial);

  // Time moves "User from 14:05" to "Ready for the user" without any message: redraw those.
  const clock = setInterval(() => {
    for (const v of bound.values()) if (v.dev && v.dev.status === 'resealed') { v.text.info = null; paint(v, v.dev); }
  }, 60000);

  const unsubscribe = store.subscribe(onChange);
  if (store.loaded || store.error) {
    onChange({ reset: true, changed: new Set(store.devices.keys()) });
  } else {
    setText(msg, 'Loading the devices…');
    updateShown();
  }

  return () => {
    unsubscribe();
    window.removeEventListener('scroll', onScroll);
    resizer.disconnect();
    cancelAnimationFrame(scrollFrame);
    clearInterval(clock);
    clearTimeout(searchTimer);
    document.removeEventListener('keydown', onSlash);
  };
}
