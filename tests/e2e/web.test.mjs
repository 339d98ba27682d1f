// The web view in a real browser against a real gloveboxd: a fleet of 500 simulated devices
// (glovebox-sim at --speed 0, with more faults than the default so the board has red screens of
// every kind), a few devices stopped mid-flow (some recent, some stalled), then Chromium through
// the board, a device page, the ESP durations, the planner and the handover record.
// Screenshots go to $GB_E2E_OUT/screenshots.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import {
  settings, createDatabase, dropDatabase, migrate, createToken, startServer, runSim, request, getJson, listAll,
  documents, agentPost, flowMessages, hello,
} from './lib/fleet.mjs';
import { launch, open } from './lib/browser.mjs';

const DEVICES = 500;
const SEED = 7;
const FAULTS = 'tpm_attestation=0.01,device_object_missing=0.03,multiple_mdm=0.02,profile_unavailable=0.02,'
  + 'no_wired_network=0.02,app_install_failed=0.03,certificate_failed=0.02,component_update_error=0.05';

const s = settings();
const shots = join(s.GB_E2E_OUT, 'screenshots');
let db;
let server;
let admin;
let agent;
let chromium;
let tab; // the main 1280x800 page
const pages = [];
let importNote = '';
const STALL_S = 30;
const live = new Map(); // serial -> last seq of the devices kept alive
let keepingAlive = true;

// Heartbeats for the devices in `live`, every 3 s until the tests end.
async function keepAlive() {
  while (keepingAlive) {
    await sleep(3000);
    if (!keepingAlive) break;
    for (const [serial, seq] of live) {
      await agentPost(server.url, agent, serial, [{ seq: seq + 1, at: new Date().toISOString(), type: 'heartbeat' }]).catch(() => {});
      live.set(serial, seq + 1);
    }
  }
}

async function api(path) {
  return getJson(server.url, admin, path);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// The counts bar as numbers: {registered: n, ..., stalled: n, total: n}.
async function boardCounts(page) {
  return page.evaluate(() => {
    const out = {};
    for (const b of document.querySelectorAll('.counts .count')) out[b.dataset.status] = Number(b.querySelector('.n').textContent);
    out.total = Number(document.querySelector('.counts .total .n').textContent);
    return out;
  });
}

// The serials the board shows, in its order (the grid is windowed: the DOM holds only the tiles
// near the viewport).
async function shown(page) {
  return page.evaluate(() => document.querySelector('section.board').gbShown());
}

// The tiles in the DOM, in DOM order.
async function tiles(page) {
  return page.$$eval('#tiles .tile', (els) => els.map((e) => ({
    serial: e.querySelector('.t-sn').textContent,
    status: e.dataset.status,
    label: e.querySelector('.t-st').textContent,
    info: e.querySelector('.t-info').textContent,
    stalled: e.classList.contains('stalled'),
  })));
}

// For each element of selector: its serial (tiles) or status (counts), and the symbol its status
// icon draws ("#i-red") or what is wrong with it: the symbol must be in the page's sprite and the
// icon must take room on screen.
async function icons(page, selector) {
  return page.$$eval(selector, (els) => els.map((e) => {
    const key = e.dataset.serial || e.dataset.status;
    const use = e.querySelector('svg.ico use');
    if (!use) return [key, 'no icon'];
    const href = use.getAttribute('href');
    const symbol = href && href.startsWith('#') ? document.getElementById(href.slice(1)) : null;
    if (!symbol || symbol.tagName !== 'symbol' || symbol.childElementCount === 0) return [key, `${href}: no such symbol`];
    const box = use.ownerSVGElement.getBoundingClientRect();
    return [key, box.width > 0 && box.height > 0 ? href : `${href}: not drawn`];
  }));
}

async function gotoBoard(page, query = '') {
  await page.evaluate((q) => { location.hash = `#/board${q}`; }, query);
  await page.waitForSelector('[data-board-state=ready]', { timeout: 15000 });
}

before(async () => {
  db = await createDatabase(s);
  await migrate(s, db.url);
  admin = await createToken(s, db.url, 'admin', 'e2e-admin');
  agent = await createToken(s, db.url, 'agent', 'e2e-agent');
  // A short stall timeout, so devices can go silent within the run.
  server = await startServer(s, db.url, { args: ['--stall-timeout', `${STALL_S}s`] });

  // Three devices that stop mid-flow now: they are stalled once the fleet has run.
  const t0 = Date.now();
  for (let i = 0; i < 3; i++) await agentPost(server.url, agent, `E2E-STALL-${i + 1}`, flowMessages(9 + i, t0, { slot: `D-${i + 1}` }));

  // The fleet's CSV, with 12 devices more than the simulator drives: they stay "registered".
  const csvPath = join(s.GB_E2E_OUT, 'fleet.csv');
  await runSim(s, { devices: DEVICES + 12, seed: SEED, csv: csvPath });
  if (await documents(server.url, 'POST', '/api/v1/devices/import')) {
    const r = await request(server.url, admin, 'POST', '/api/v1/devices/import', readFileSync(csvPath, 'utf8'), 'text/csv');
    importNote = r.status === 200 ? `imported: ${r.text.slice(0, 120)}` : `import answered HTTP ${r.status}; going on without it`;
  } else {
    importNote = 'the server has no import endpoint; going on without it';
  }
  await runSim(s, { server: server.url, token: agent, devices: DEVICES, seed: SEED, args: ['--max-attempts', '1', '--fault-rate', FAULTS] });

  // Six devices in the middle of the flow that keep reporting (a heartbeat every 3 s).
  const now = Date.now();
  for (let i = 0; i < 6; i++) {
    const serial = `E2E-PROV-${i + 1}`;
    const msgs = flowMessages(2 + 2 * i, now - 1000, { slot: `C-${i + 1}` });
    await agentPost(server.url, agent, serial, msgs);
    live.set(serial, msgs.length);
  }
  keepAlive();
  for (let i = 0; (await api('/api/v1/summary')).stalled < 3; i++) {
    assert.ok(i < 100, 'the silent devices became stalled');
    await sleep(500);
  }

  chromium = await launch();
  tab = await open(chromium.browser, { shots });
  pages.push(tab);
  await tab.page.goto(`${server.url}/#token=${encodeURIComponent(admin)}`);
  await tab.page.waitForSelector('[data-board-state=ready]', { timeout: 30000 });
}, { timeout: 240000 });

after(async () => {
  keepingAlive = false;
  for (const p of pages) await p.close().catch(() => {});
  if (chromium) await chromium.close();
  if (server) await server.stop();
  if (db) await dropDatabase(db);
});

test('the board counts equal /api/v1/summary', async (t) => {
  if (importNote) t.diagnostic(importNote);
  const page = tab.page;
  assert.equal(new URL(page.url()).hash, '#/board', 'the #token= is taken out of the address');
  const summary = await api('/api/v1/summary');
  const counts = await boardCounts(page);
  for (const [status, n] of Object.entries(summary.by_status)) {
    assert.equal(counts[status], n, `count of ${status}`);
  }
  assert.equal(counts.stalled, summary.stalled, 'stalled');
  assert.equal(counts.total, summary.devices, 'total');
  assert.ok(summary.stalled >= 3, 'the stalled devices are stalled');
  assert.ok(summary.by_status.red > 0 && summary.by_status.provisioning >= 9, 'the fleet has red and provisioning devices');
  assert.equal((await shown(page)).length, summary.devices, 'one tile per device');
  // The tiles on screen say their status in words, and red ones name their diagnosis.
  const onScreen = await tiles(page);
  assert.ok(onScreen.length >= 20 && onScreen.length < summary.devices, `the grid holds the tiles near the viewport (${onScreen.length})`);
  for (const tile of onScreen) assert.ok(tile.label.trim().length > 0, `${tile.serial} has a status label`);
  // ...and draw their status's icon, as the counts bar does.
  const tileIcons = new Map(await icons(page, '#tiles .tile'));
  for (const tile of onScreen) assert.equal(tileIcons.get(tile.serial), `#i-${tile.status}`, `${tile.serial}'s icon`);
  const countIcons = await icons(page, '.counts .count');
  assert.equal(countIcons.length, 8, 'a count per status, and the stalled one');
  for (const [status, icon] of countIcons) assert.equal(icon, `#i-${status}`, `the ${status} count's icon`);
  const reds = onScreen.filter((x) => x.status === 'red');
  assert.ok(reds.length > 0, 'red screens lead the board');
  for (const tile of reds) assert.match(tile.info, /^[a-z_]+/, `${tile.serial} shows its diagnosis`);
  await tab.shot('board');
});

test('a live update appears after an ingest, without a reload', async () => {
  const page = tab.page;
  await gotoBoard(page);
  await page.evaluate(() => { window.__sameDocument = true; });
  const serial = 'E2E-LIVE-1';
  // A search that matches nothing yet: the device must appear in it when it first reports.
  await page.fill('#board-q', 'e2e-live');
  await page.waitForFunction(() => document.querySelector('section.board').gbShown().length === 0);
  const t0 = Date.now();
  const iso = (ms) => new Date(ms).toISOString();
  await agentPost(server.url, agent, serial, [hello(1, iso(t0 - 5000), 'E-1'), { seq: 2, at: iso(t0 - 4000), type: 'stage', stage: 'oobe', state: 'started' }]);
  const tile = page.locator('#tiles .tile', { has: page.locator('.t-sn', { hasText: serial }) });
  await tile.waitFor({ timeout: 10000 });
  assert.equal(await tile.getAttribute('data-status'), 'provisioning');
  assert.match(await tile.locator('.t-info').textContent(), /Out-of-box experience · 1\/12/);
  // Its progress bar shows the stage under way as half a step of twelve.
  const bar = tile.locator('.t-bar');
  assert.equal(await bar.isVisible(), true, 'a provisioning tile shows its progress');
  assert.equal(await bar.evaluate((e) => e.style.getPropertyValue('--p')), (0.5 / 12).toFixed(3));
  await agentPost(server.url, agent, serial, [
    { seq: 3, at: iso(t0 - 3000), type: 'stage', stage: 'oobe', state: 'succeeded' },
    { seq: 4, at: iso(t0 - 3000), type: 'stage', stage: 'joining_network', state: 'started' },
    { seq: 5, at: iso(t0 - 1000), type: 'stage', stage: 'joining_network', state: 'failed', hresult: '0x801C03F3' },
  ]);
  await page.waitForFunction((sn) => {
    const el = [...document.querySelectorAll('#tiles .tile')].find((e) => e.querySelector('.t-sn').textContent === sn);
    return el && el.dataset.status === 'red';
  }, serial, { timeout: 10000 });
  assert.equal(await tile.locator('.t-info').textContent(), 'device_object_missing');
  assert.equal(await tile.locator('svg.ico use').getAttribute('href'), '#i-red', 'the icon follows the status');
  assert.equal(await bar.isVisible(), false, 'a red tile has no progress bar');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
  const summary = await api('/api/v1/summary');
  const counts = await boardCounts(page);
  assert.equal(counts.red, summary.by_status.red, 'the red count follows');
  assert.equal(counts.total, summary.devices, 'the total follows');
  await tab.shot('board-after-live-update');
  await page.click('button:has-text("Clear filters")');
});

test('the live stream is read by a worker, and a browser without workers reads it on the page', async () => {
  const loaded = (page) => page.evaluate(() => performance.getEntriesByType('resource').some((e) => new URL(e.name).pathname === '/js/stream-worker.js'));
  assert.equal(await loaded(tab.page), true, 'the board started js/stream-worker.js');
  const bare = await open(chromium.browser, { shots });
  pages.push(bare);
  await bare.page.addInitScript(() => { delete window.Worker; });
  await bare.page.goto(`${server.url}/#token=${encodeURIComponent(admin)}`);
  await bare.page.waitForSelector('[data-board-state=ready]', { timeout: 30000 });
  await bare.page.waitForSelector('#live[data-state=live]', { timeout: 10000 });
  assert.equal(await bare.page.evaluate(() => typeof Worker), 'undefined');
  const serial = 'E2E-NOWORKER-1';
  await bare.page.fill('#board-q', 'e2e-noworker');
  await bare.page.waitForFunction(() => document.querySelector('section.board').gbShown().length === 0);
  const t0 = Date.now();
  await agentPost(server.url, agent, serial, [hello(1, new Date(t0 - 2000).toISOString(), 'E-2'),
    { seq: 2, at: new Date(t0 - 1000).toISOString(), type: 'stage', stage: 'oobe', state: 'started' }]);
  live.set(serial, 2); // kept reporting, so it does not turn stalled under later tests
  const tile = bare.page.locator('#tiles .tile', { has: bare.page.locator('.t-sn', { hasText: serial }) });
  await tile.waitFor({ timeout: 10000 });
  assert.equal(await tile.getAttribute('data-status'), 'provisioning');
  assert.equal(await loaded(bare.page), false, 'no worker was started');
  await bare.close();
});

test('filters and search narrow the board to what the API lists', async () => {
  const page = tab.page;
  await gotoBoard(page);
  // Status: the counts bar's button.
  const sorted = (xs) => [...xs].sort();
  await page.click('.counts .count[data-status=red]');
  const red = await listAll(server.url, admin, { status: 'red' });
  assert.ok(red.length > 0);
  assert.deepEqual(sorted(await shown(page)), sorted(red.map((d) => d.serial)), 'red devices');
  assert.ok((await tiles(page)).every((x) => x.status === 'red'));
  assert.match(new URL(page.url()).hash, /status=red/, 'the filter is in the address');
  await tab.shot('board-red');

  // Search within red: a substring of a red serial, in another case.
  const needle = red[0].serial.slice(1, 4).toLowerCase();
  await page.fill('#board-q', needle);
  await page.waitForFunction((n) => document.querySelector('section.board').gbShown().every((sn) => sn.toLowerCase().includes(n)), needle);
  const redQ = await listAll(server.url, admin, { status: 'red', q: needle });
  assert.deepEqual(sorted(await shown(page)), sorted(redQ.map((d) => d.serial)), `red devices matching "${needle}"`);

  // Clear, then stage, slot and stalled filters, each against the API.
  await page.click('button:has-text("Clear filters")');
  assert.equal((await shown(page)).length, (await api('/api/v1/summary')).devices);
  await page.selectOption('#board-stage', 'device_setup');
  const atSetup = await listAll(server.url, admin, { stage: 'device_setup' });
  assert.ok(atSetup.length > 0);
  assert.deepEqual(sorted(await shown(page)), sorted(atSetup.map((d) => d.serial)), 'devices at device setup');
  await page.selectOption('#board-stage', '');
  await page.selectOption('#board-slot', 'C-3');
  assert.deepEqual(await shown(page), (await listAll(server.url, admin, { slot: 'C-3' })).map((d) => d.serial));
  assert.deepEqual(await shown(page), ['E2E-PROV-3']);
  await page.selectOption('#board-slot', '');
  await page.check('#board-stalled');
  const stalled = await listAll(server.url, admin, { stalled: 'true' });
  assert.deepEqual(sorted(await shown(page)), sorted(stalled.map((d) => d.serial)), 'stalled devices');
  const stalledTiles = await tiles(page);
  assert.equal(stalledTiles.length, stalled.length);
  assert.ok(stalledTiles.every((x) => x.stalled), 'stalled tiles are marked');
  assert.equal(await page.locator('#tiles .tile .t-stall:visible').count(), stalled.length, 'and say so in words');
  await tab.shot('board-stalled');
  await page.click('button:has-text("Clear filters")');
});

test('sorting puts red and stalled devices first', async () => {
  const page = tab.page;
  await gotoBoard(page, '?sort=serial');
  const bySerial = await shown(page);
  assert.deepEqual(bySerial, [...bySerial].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), 'serial order');
  await page.selectOption('#board-sort', 'attention');
  const order = await shown(page);
  const red = new Set((await listAll(server.url, admin, { status: 'red' })).map((d) => d.serial));
  const stalled = new Set((await listAll(server.url, admin, { stalled: 'true' })).map((d) => d.serial));
  assert.ok(order.slice(0, red.size).every((sn) => red.has(sn)), 'red screens lead');
  assert.ok(order.slice(red.size, red.size + stalled.size).every((sn) => stalled.has(sn)), 'stalled devices come next');
  // Scrolling to the end brings the last tiles into the DOM.
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await page.waitForFunction((last) => [...document.querySelectorAll('#tiles .t-sn')].some((e) => e.textContent === last), order[order.length - 1]);
  await page.evaluate(() => window.scrollTo(0, 0));
});

test("a red device's page shows its diagnosis and remedy", async () => {
  const page = tab.page;
  const red = (await listAll(server.url, admin, { status: 'red' })).find((d) => d.diagnosis && d.diagnosis.code !== 'tpm_attestation') ||
    (await listAll(server.url, admin, { status: 'red' }))[0];
  await page.evaluate((sn) => { location.hash = `#/device/${encodeURIComponent(sn)}`; }, red.serial);
  await page.waitForSelector('.diagnosis .diag-remedy', { timeout: 10000 });
  assert.equal(await page.textContent('.device h1 .serial'), red.serial);
  assert.equal(await page.textContent('.diagnosis .diag-code code'), red.diagnosis.code);
  assert.equal(await page.textContent('.diagnosis .diag-summary'), red.diagnosis.summary);
  assert.equal(await page.textContent('.diagnosis .diag-remedy'), red.diagnosis.remedy);
  // The timeline marks the failed stage, and the stored messages are listed.
  await page.waitForSelector('.g-row[data-state=failed]');
  assert.equal(await page.locator('.g-row[data-state=failed]').count() >= 1, true);
  await page.waitForSelector('.events-table tbody tr');
  const detail = await api(`/api/v1/devices/${encodeURIComponent(red.serial)}`);
  assert.equal(await page.locator('.g-row').count(), detail.timeline.length, 'one timeline row per stage run');
  await tab.fullShot('device-red');
});

test('technician actions: a note and a slot, with feedback', async () => {
  const page = tab.page;
  const serial = 'E2E-PROV-2';
  await page.evaluate((sn) => { location.hash = `#/device/${encodeURIComponent(sn)}`; }, serial);
  await page.waitForSelector('.device h1 .serial');
  await page.fill('#note-text', 'Reseated the network cable.');
  await page.click('button:has-text("Add note")');
  await page.waitForSelector('.feedback.ok', { timeout: 10000 });
  assert.equal(await page.textContent('.feedback'), 'Note added.');
  await page.waitForSelector('.action-list li:has-text("Reseated the network cable.")');
  await page.fill('#slot-input', 'Z-9');
  await page.click('button:has-text("Assign slot")');
  await page.waitForFunction(() => document.querySelector('.feedback.ok') && document.querySelector('.feedback').textContent === 'Slot Z-9 assigned.');
  assert.match(await page.textContent('.device .lede'), /slot Z-9/);
  // Retry is only for red devices: the button says so instead of failing.
  assert.equal(await page.isDisabled('button:has-text("Retry")'), true);
  const d = await api(`/api/v1/devices/${serial}`);
  assert.equal(d.slot, 'Z-9');
  await tab.shot('device-actions');
});

test('the ESP durations page shows the percentiles and the scatter', async () => {
  const page = tab.page;
  await page.evaluate(() => { location.hash = '#/timings'; });
  await page.waitForSelector('.percentiles tbody tr[data-phase=device_setup]');
  const summary = await api('/api/v1/summary');
  const cells = await page.$$eval('.percentiles tbody tr[data-phase=device_setup] td', (tds) => tds.map((td) => td.textContent));
  assert.equal(Number(cells[0].replace(/\D/g, '')), summary.esp_durations_s.device_setup.count);
  await page.waitForFunction(() => document.querySelector('.chart-note') && /devices with device setup/.test(document.querySelector('.chart-note').textContent), null, { timeout: 10000 });
  const points = await page.evaluate(() => window.Chart.getChart('scatter').data.datasets[0].data.length);
  const timings = await api('/api/v1/timings');
  assert.equal(points, timings.points.filter((p) => p.device_setup_s !== null && p.mean_mbps > 0).length);
  await tab.fullShot('timings');
});

test('the planner shows a prediction', async () => {
  const page = tab.page;
  await page.evaluate(() => { location.hash = '#/planner'; });
  await page.waitForSelector('.planner-form');
  assert.ok(await documents(server.url, 'GET', '/api/v1/capacity'), 'GET /api/v1/capacity is documented');
  await page.fill('#cap-devices', '500');
  await page.fill('#cap-slots', '40');
  await page.fill('#cap-uplink_mbps', '1000');
  // The answer the page itself got: the fleet may still be moving, so a later request could
  // be fitted on other timings.
  const answered = page.waitForResponse((r) => {
    const u = new URL(r.url());
    return u.pathname === '/api/v1/capacity' && u.searchParams.get('devices') === '500' && u.searchParams.get('slots') === '40';
  }, { timeout: 15000 });
  await page.click('button:has-text("Predict")');
  const response = await answered;
  assert.equal(response.status(), 200);
  const cap = await response.json();
  assert.equal(new URL(response.url()).searchParams.get('uplink_mbps'), '1000');
  await page.waitForSelector('.prediction .kpi-value', { timeout: 15000 });
  const text = await page.textContent('.prediction');
  assert.match(text, /Recommended slots/);
  const rec = await page.textContent('.prediction .kpi:has-text("Recommended slots") .kpi-value');
  assert.equal(rec, cap.recommended_slots === null ? 'none' : String(cap.recommended_slots), 'the recommended slots are shown');
  const perHour = await page.textContent('.prediction .kpi:has-text("Devices per hour") .kpi-value');
  assert.equal(Number(perHour.replace(/[^\d.]/g, '')), Math.round(cap.prediction.devices_per_hour * 10) / 10, 'the prediction is the server\'s');
  await page.waitForFunction(() => window.Chart && window.Chart.getChart('throughput'), null, { timeout: 15000 });
  await tab.fullShot('planner');
});

test('the handover record prints the device and says where the audit trail stands', async () => {
  const page = tab.page;
  const delivered = (await listAll(server.url, admin, { status: 'delivered' }))[0];
  await page.evaluate((sn) => { location.hash = `#/handover/${encodeURIComponent(sn)}`; }, delivered.serial);
  await page.waitForSelector('.handover .record-body dl');
  assert.match(await page.textContent('.handover .record-body'), new RegExp(delivered.serial));
  // The audit trail: every entry of the server's chain, and its verdict.
  const trail = await api(`/api/v1/devices/${encodeURIComponent(delivered.serial)}/audit`);
  assert.equal(trail.verified, true);
  await page.waitForSelector('.audit table');
  assert.equal(await page.locator('.audit tbody tr').count(), trail.entries.length);
  assert.equal(await page.textContent('.audit p.ok'), 'The hash chain verifies: no entry was changed or removed.');
  assert.equal(await page.textContent('.audit code.hash >> nth=0'), trail.head);
  await tab.shot('handover');
});

test('the keyboard reaches the board: / searches, arrows move between tiles, Enter opens one', async () => {
  const page = tab.page;
  await gotoBoard(page, '?sort=serial');
  await page.locator('body').press('/');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'board-q');
  await page.keyboard.press('Tab'); // from the search box along the filters to the grid
  const serials = await shown(page);
  for (let i = 0; i < 12 && !(await page.evaluate(() => Boolean(document.activeElement.closest('.tile')))); i++) await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.serial), serials[0], 'the grid is one tab stop, at its first tile');
  await page.keyboard.press('ArrowRight');
  const second = await page.evaluate(() => document.activeElement.querySelector('.t-sn').textContent);
  assert.equal(second, serials[1]);
  // End reaches the last tile, scrolling it into the DOM; Home comes back.
  await page.keyboard.press('End');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.serial), serials[serials.length - 1]);
  await page.keyboard.press('Home');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.serial), serials[1]);
  await page.keyboard.press('Enter');
  await page.waitForSelector('.device h1 .serial');
  assert.equal(await page.textContent('.device h1 .serial'), second);
  // Focus is visible: the focused tile draws an outline.
  await gotoBoard(page);
  await page.focus('#tiles .tile');
  await page.keyboard.press('ArrowRight');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none');
});

test('a tablet sees the board and a device page without sideways scrolling', async () => {
  const tablet = await open(chromium.browser, { width: 820, height: 1180, shots, isMobile: true, hasTouch: true });
  pages.push(tablet);
  const page = tablet.page;
  await page.goto(`${server.url}/#token=${encodeURIComponent(admin)}`);
  await page.waitForSelector('[data-board-state=ready]', { timeout: 30000 });
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(await overflow() <= 0, 'board fits');
  await tablet.shot('board-tablet');
  const red = (await listAll(server.url, admin, { status: 'red' }))[0];
  await page.evaluate((sn) => { location.hash = `#/device/${encodeURIComponent(sn)}`; }, red.serial);
  await page.waitForSelector('.diagnosis .diag-remedy');
  await sleep(200);
  assert.ok(await overflow() <= 0, 'device page fits');
  await tablet.shot('device-tablet');
});

test('a wrong token is refused plainly, and no page logged an error', async () => {
  const fresh = await open(chromium.browser, { shots });
  pages.push(fresh);
  await fresh.page.goto(`${server.url}/#token=not-a-token`);
  await fresh.page.waitForSelector('#signin-error:not(:empty)');
  assert.match(await fresh.page.textContent('#signin-error'), /not accepted/);
  await fresh.shot('signin-refused');
  // Once refused, nothing goes on with that token: no live stream.
  await fresh.page.waitForTimeout(500);
  assert.equal(await fresh.page.textContent('#live'), '', 'no live stream after a refused sign-in');
  // The refused sign-in is the one error this page was meant to cause: whoami, and the device list
  // and live stream that start loading alongside it, each answered 401.
  const expected = fresh.errors.filter((e) => /HTTP 401 for GET .*\/api\/v1\/(whoami|devices\?(?:fields=[^&]*&)?limit=1000|stream\?(?:fields=[^&]*&)?access_token=not-a-token)$/.test(e) || /status of 401/.test(e));
  assert.ok(expected.some((e) => /HTTP 401 for GET .*\/api\/v1\/whoami$/.test(e)), 'the refused whoami');
  const errors = pages.flatMap((p) => p.errors).filter((e) => !expected.includes(e));
  assert.deepEqual(errors, [], 'console errors, uncaught exceptions, CSP violations or failed requests');
});
