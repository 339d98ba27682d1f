// bench.mjs: the fleet board with 2,000 devices, measured inside Chromium with the Performance
// API. Started by tests/bench/web/run.sh, which builds gloveboxd and starts a private cluster.
//
// The fleet is made through the agent protocol: 2,000 devices spread over the flow (most of them
// provisioning, at every stage; some red, green, resealed, delivered); PostgreSQL's after-work
// (vacuum, statistics, a checkpoint) is done before anything is measured. Then, for each run:
//   first render  a fresh page (a new browser context: nothing cached) loads the board; the
//                 figure is the board's own
//                 "board:first-render" mark (set once the frame holding every tile has been
//                 produced), counted from the start of navigation; "board:apply" gives the part
//                 spent building and placing the tiles.
//   burst         1,000 provisioning devices report at once (each a stage that ends and the next
//                 that starts; one in ten fails, one in ten finishes device setup, so tiles change
//                 text, colour and place). The server coalesces them into a few stream flushes;
//                 the page applies them per animation frame. Measured: every frame's length
//                 (requestAnimationFrame deltas), long animation frames (PerformanceObserver
//                 'long-animation-frame'), and the board's own "board:apply" measures, from the
//                 first request of the burst until all 1,000 changes are on the board.
//   reference     what this browser on this machine needs for the same screen and the same
//                 load without the board's code, measured in the same run, right after each run:
//                 first render  the board's first screen as the first run drew it, saved as
//                               static HTML (the same document, style sheet and tiles, with
//                               no scripts: no modules, no API calls, no data), served to a
//                               fresh page in place of the board (by Playwright, so that its
//                               inline positions are not refused by the server's
//                               Content-Security-Policy) and timed the same way, by a mark set
//                               once the frame holding the tiles has been produced;
//                 burst         the frames of that static page while 1,000 provisioning devices
//                               report at once (a download sample each: the same requests, the
//                               same server work, but no page listens), so frames lost to the
//                               CPUs the server, PostgreSQL and the sender share show apart from
//                               the board's own work.
//   second load   after the reference, the board is opened again in the first page's browser
//                 context (its cache, and the token the first load kept): the same mark, for
//                 the technician who has had the board open before. Reported, with no goal.
// The page is waited for from inside (inPage): Playwright's own waiting would run its injected
// script on the page's main thread in the middle of the measurement.
// Goals: first render under 500 ms; no frame longer than 50 ms during the burst.

import { settings, createDatabase, dropDatabase, migrate, createToken, startServer, agentPost, settle, TECH_FLOW, hello } from '../../e2e/lib/fleet.mjs';
import { launch, open } from '../../e2e/lib/browser.mjs';
import { pathToFileURL } from 'node:url';
import { cpus, loadavg } from 'node:os';

const DEVICES = Number(process.env.GB_BENCH_WEB_DEVICES || 2000);
const BURST = Number(process.env.GB_BENCH_WEB_BURST || 1000);
const RUNS = Number(process.env.GB_BENCH_WEB_RUNS || 3);
const CONCURRENCY = 16;

const iso = (ms) => new Date(ms).toISOString();

// Runs fn over items with at most `n` in flight.
export async function pool(items, n, fn) {
  let next = 0;
  const workers = Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  });
  await Promise.all(workers);
}

// The fleet: serial -> {seq, stage index} for the devices the burst may move.
export function plan(now) {
  const devices = [];
  for (let i = 0; i < DEVICES; i++) {
    const serial = `BENCH${String(i).padStart(5, '0')}`;
    const slot = `${String.fromCharCode(65 + (i % 8))}-${1 + (i % 40)}`;
    const kind = i % 25; // 0-17 provisioning, 18 red, 19 green, 20-22 resealed, 23-24 delivered
    const msgs = [];
    let seq = 1;
    let t = now - 40 * 60000;
    msgs.push(hello(seq++, iso(t), slot));
    const stages = kind < 18 ? (i % 11) + 1 : 12;
    for (let k = 0; k < stages; k++) {
      msgs.push({ seq: seq++, at: iso(t), type: 'stage', stage: TECH_FLOW[k], state: 'started' });
      t += 30000;
      const last = k === stages - 1;
      if (last && kind < 18) break;
      if (last && kind === 18) {
        msgs.push({ seq: seq++, at: iso(t), type: 'stage', stage: TECH_FLOW[k], state: 'failed', hresult: '0x80070643' });
        break;
      }
      msgs.push({ seq: seq++, at: iso(t), type: 'stage', stage: TECH_FLOW[k], state: 'succeeded' });
    }
    if (kind >= 20) {
      msgs.push({ seq: seq++, at: iso(t), type: 'stage', stage: 'reseal', state: 'started' });
      msgs.push({ seq: seq++, at: iso(t + 10000), type: 'stage', stage: 'reseal', state: 'succeeded' });
      t += 10000;
    }
    if (kind >= 23) {
      for (const st of ['user_oobe', 'user_signin', 'account_setup', 'hello_provisioning', 'desktop']) {
        msgs.push({ seq: seq++, at: iso(t), type: 'stage', stage: st, state: 'started' });
        if (st !== 'desktop') msgs.push({ seq: seq++, at: iso(t + 20000), type: 'stage', stage: st, state: 'succeeded' });
        t += 20000;
      }
    }
    devices.push({ serial, msgs, seq, stage: kind < 18 ? stages - 1 : -1, t });
  }
  return devices;
}

// The burst's messages for one provisioning device: its stage ends and the next starts; one in
// twenty fails instead (red), one in twenty finishes device setup (green). A device still
// provisioning afterwards can move again in the next run.
export function burstMessages(d, i) {
  const at = iso(Date.now());
  const stage = TECH_FLOW[d.stage];
  const out = [];
  if (i % 20 === 0) {
    out.push({ seq: d.seq++, at, type: 'stage', stage, state: 'failed', hresult: '0x80004005' });
    d.stage = -1;
  } else if (i % 20 === 1 || d.stage + 1 >= TECH_FLOW.length) {
    out.push({ seq: d.seq++, at, type: 'stage', stage, state: 'succeeded' });
    if (stage !== 'device_setup') out.push({ seq: d.seq++, at, type: 'stage', stage: 'device_setup', state: 'started' });
    out.push({ seq: d.seq++, at, type: 'stage', stage: 'device_setup', state: 'succeeded' });
    d.stage = -1;
  } else {
    out.push({ seq: d.seq++, at, type: 'stage', stage, state: 'succeeded' });
    out.push({ seq: d.seq++, at, type: 'stage', stage: TECH_FLOW[d.stage + 1], state: 'started' });
    d.stage += 1;
  }
  return out;
}

// The reference burst's message for one device: a download sample, which moves no tile.
export function sampleMessage(d) {
  return [{ seq: d.seq++, at: iso(Date.now()), type: 'download', bytes: 52428800, ms: 10000, http_bytes: 41943040, lan_bytes: 10485760, cache_bytes: 0 }];
}

// The page as it stands, as static HTML: scripts and module preloads removed, and one script
// that marks 'reference:first-render' once the first frame has been produced (as the board
// marks its own).
// Tiles out of the viewport (drawn after the first frame, for scrolling) are left out.
export function staticSnapshot() {
  const off = [...document.querySelectorAll('#tiles .tile')].map((el) => {
    const r = el.getBoundingClientRect();
    return r.bottom < 0 || r.top > window.innerHeight;
  });
  const doc = document.documentElement.cloneNode(true);
  doc.querySelectorAll('#tiles .tile').forEach((el, i) => {
    if (off[i]) el.remove();
  });
  for (const el of doc.querySelectorAll('script, link[rel=modulepreload]')) el.remove();
  const mark = doc.ownerDocument.createElement('script');
  mark.textContent = "requestAnimationFrame(() => setTimeout(() => performance.mark('reference:first-render'), 0));";
  doc.querySelector('body').append(mark);
  return `<!doctype html>\n${doc.outerHTML}`;
}

// Resolves once the static reference has set its mark.
export function referenceReady() {
  return new Promise((resolve) => {
    const obs = new PerformanceObserver((list) => {
      if (list.getEntriesByName('reference:first-render').length > 0) {
        obs.disconnect();
        resolve();
      }
    });
    obs.observe({ type: 'mark', buffered: true });
  });
}

// Installed in the page before a burst: frame deltas and long animation frames.
export function startRecording() {
  const rec = { frames: [], loaf: [], t0: performance.now(), stop: false };
  window.__bench = rec;
  let last = performance.now();
  const tick = (t) => {
    rec.frames.push(t - last);
    last = t;
    if (!rec.stop) requestAnimationFrame(tick);
  };
  requestAnimationFrame((t) => { last = t; requestAnimationFrame(tick); });
  try {
    rec.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        // Where the frame's time went: scripts (by what invoked them) and rendering.
        const scripts = (e.scripts || []).map((x) => ({ invoker: x.invoker, duration: x.duration, source: (x.sourceURL || '').replace(location.origin, '') }));
        const render = e.renderStart ? e.startTime + e.duration - e.renderStart : 0;
        const style = e.styleAndLayoutStart ? e.startTime + e.duration - e.styleAndLayoutStart : 0;
        rec.loaf.push({ duration: e.duration, blocking: e.blockingDuration, render, style, scripts });
      }
    });
    rec.observer.observe({ type: 'long-animation-frame', buffered: false });
  } catch {
    rec.noLoaf = true;
  }
}

// Waiting happens inside the page, with an observer or a timer of its own: Playwright's
// waitForSelector and waitForFunction would first evaluate its injected script (tens of
// milliseconds of the page's main thread) in the middle of what is measured.
async function inPage(page, fn, arg, ms) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${fn.name}: not done after ${ms} ms`)), ms);
  });
  try {
    await Promise.race([page.evaluate(fn, arg), limit]);
  } finally {
    clearTimeout(timer);
  }
}

// Resolves once the board says it is ready (data-board-state, set with its first-render mark).
export function boardReady() {
  const ready = () => document.querySelector('[data-board-state=ready]');
  return new Promise((resolve) => {
    if (ready()) return resolve();
    const obs = new MutationObserver(() => {
      if (ready()) {
        obs.disconnect();
        resolve();
      }
    });
    obs.observe(document.documentElement, { subtree: true, childList: true, attributeFilter: ['data-board-state'] });
  });
}

// Resolves once the board has applied n updates since startRecording.
export function burstApplied(n) {
  const rec = window.__bench;
  return new Promise((resolve) => {
    const check = () => {
      const applied = performance.getEntriesByName('board:apply').filter((e) => e.startTime >= rec.t0)
        .reduce((sum, e) => sum + (e.detail ? e.detail.updates : 0), 0);
      if (applied >= n) resolve();
      else setTimeout(check, 100);
    };
    check();
  });
}

export function stopRecording() {
  const rec = window.__bench;
  rec.stop = true;
  if (rec.observer) rec.observer.disconnect();
  const applies = performance.getEntriesByName('board:apply').filter((e) => e.startTime >= rec.t0);
  return {
    frames: rec.frames,
    loaf: rec.loaf,
    noLoaf: Boolean(rec.noLoaf),
    applies: applies.map((e) => ({ duration: e.duration, updates: e.detail ? e.detail.updates : 0 })),
    elapsed: performance.now() - rec.t0,
  };
}

const median = (xs) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length ? a[Math.floor((a.length - 1) / 2)] : NaN;
};
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');

async function main() {
  const s = settings(['GB_GLOVEBOXD', 'GB_PG_CLUSTER', 'GB_PGDIR', 'GB_WEB_DIR', 'GB_E2E_OUT']);
  const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
  console.log(`machine: ${cpus().length} CPUs, load average ${load()} (PostgreSQL, gloveboxd, this script and Chromium share them)`);
  const db = await createDatabase(s, 'benchweb');
  let server;
  let chromium;
  try {
    await migrate(s, db.url);
    const admin = await createToken(s, db.url, 'admin', 'bench-admin');
    const agent = await createToken(s, db.url, 'agent', 'bench-agent');
    server = await startServer(s, db.url, { name: 'gloveboxd-bench' });

    const fleet = plan(Date.now());
    const t0 = Date.now();
    await pool(fleet, CONCURRENCY, (d) => agentPost(server.url, agent, d.serial, d.msgs));
    console.log(`fleet: ${DEVICES} devices, ${fleet.reduce((n, d) => n + d.msgs.length, 0)} messages ingested in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await settle(db);

    chromium = await launch();
    const firstRenders = [];
    const burstRuns = [];
    const refRuns = [];
    const secondLoads = [];
    let snapshot = null;
    for (let run = 1; run <= RUNS; run++) {
      const tab = await open(chromium.browser, { width: 1280, height: 800 });
      const page = tab.page;
      await page.goto(`${server.url}/#token=${encodeURIComponent(admin)}`);
      await inPage(page, boardReady, null, 60000);
      const fr = await page.evaluate(() => {
        const mark = performance.getEntriesByName('board:first-render')[0];
        const apply = performance.getEntriesByName('board:apply').find((e) => e.detail && e.detail.reset);
        const list = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/v1/devices?'));
        const who = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/v1/whoami'));
        const nav = performance.getEntriesByType('navigation')[0];
        return {
          dcl: nav ? nav.domContentLoadedEventEnd : NaN,
          whoami: who ? who.responseEnd : NaN,
          pages: performance.getEntriesByName('store:page').map((e) => e.duration),
          firstRender: mark.startTime,
          apply: apply ? apply.duration : NaN,
          listDone: list.length ? Math.max(...list.map((e) => e.responseEnd)) : NaN,
          listBytes: list.reduce((n, e) => n + e.decodedBodySize, 0),
          shown: document.querySelector('section.board').gbShown().length,
          dom: document.querySelectorAll('#tiles .tile').length,
        };
      });
      if (fr.shown !== DEVICES) throw new Error(`the board shows ${fr.shown} devices, not ${DEVICES}`);
      firstRenders.push(fr);
      if (!snapshot) snapshot = await page.evaluate(staticSnapshot);
      console.log(`run ${run}: first complete render ${f1(fr.firstRender)} ms (scripts loaded ${f1(fr.dcl)} ms, signed in ${f1(fr.whoami)} ms, `
        + `device list (${(fr.listBytes / 1000).toFixed(0)} kB) in ${fr.pages.length} pages of ${fr.pages.map(f1).join(' + ')} ms, in at ${f1(fr.listDone)} ms; records, order and the ${fr.dom} tiles near the viewport built in ${f1(fr.apply)} ms)`);

      // The burst: BURST provisioning devices that have not moved yet.
      await page.waitForTimeout(1000);
      // Taken from a different part of the fleet each run, so the stages spread.
      const movable = fleet.filter((d) => d.stage >= 0);
      const movers = [...movable.slice((run - 1) * 397), ...movable.slice(0, (run - 1) * 397)].slice(0, BURST);
      if (movers.length < BURST) throw new Error(`only ${movers.length} devices left to move; lower GB_BENCH_WEB_RUNS`);
      await page.evaluate(startRecording);
      await page.waitForTimeout(300);
      const tb = Date.now();
      await pool(movers.map((d, i) => [d, burstMessages(d, i)]), CONCURRENCY, ([d, msgs]) => agentPost(server.url, agent, d.serial, msgs));
      const sent = Date.now() - tb;
      await inPage(page, burstApplied, BURST, 60000);
      await page.waitForTimeout(300);
      const r = await page.evaluate(stopRecording);
      const frames = r.frames.slice(1);
      const longest = Math.max(...frames);
      const over50 = frames.filter((x) => x > 50).length;
      const loafMax = r.loaf.length ? Math.max(...r.loaf.map((e) => e.duration)) : 0;
      // Of the long frames, how much was the page's own work (scripts, then style, layout and paint): the
      // rest is the renderer waiting for a CPU that the server, PostgreSQL and the sender share.
      const loafWork = r.loaf.length ? Math.max(...r.loaf.map((e) => e.scripts.reduce((n, x) => n + x.duration, 0) + e.style)) : 0;
      const applyMax = Math.max(...r.applies.map((a) => a.duration));
      const applySum = r.applies.reduce((n, a) => n + a.duration, 0);
      burstRuns.push({ longest, over50, frames: frames.length, loafMax, loafWork, loafCount: r.loaf.length, applyMax, applySum, batches: r.applies.length, sent, noLoaf: r.noLoaf });
      console.log(`run ${run}: burst of ${BURST} updates (sent in ${sent} ms, applied in ${r.applies.length} batches): longest frame ${f1(longest)} ms, `
        + `${over50} of ${frames.length} frames over 50 ms; long animation frames: ${r.noLoaf ? 'not supported' : `${r.loaf.length}, longest ${f1(loafMax)} ms, of which scripts and rendering at most ${f1(loafWork)} ms`}; `
        + `board work ${f1(applySum)} ms in all, ${f1(applyMax)} ms at most per batch`);
      // The context stays, with its cache and the stored token, for the second load below.
      await page.close();

      // The reference: the first screen as static HTML, then the same load with no page listening.
      const ref = await open(chromium.browser, { width: 1280, height: 800 });
      const refUrl = `${server.url}/bench-reference.html`;
      await ref.page.route(refUrl, (route) => route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: snapshot }));
      await ref.page.goto(refUrl);
      await inPage(ref.page, referenceReady, null, 60000);
      const refFirst = await ref.page.evaluate(() => ({
        at: performance.getEntriesByName('reference:first-render')[0].startTime,
        tiles: document.querySelectorAll('#tiles .tile').length,
      }));
      await ref.page.waitForTimeout(1000);
      await ref.page.evaluate(startRecording);
      await ref.page.waitForTimeout(300);
      const samplers = fleet.filter((d) => d.stage >= 0).slice(0, BURST);
      const tr = Date.now();
      await pool(samplers, CONCURRENCY, (d) => agentPost(server.url, agent, d.serial, sampleMessage(d)));
      const refSent = Date.now() - tr;
      await ref.page.waitForTimeout(300);
      const rr = await ref.page.evaluate(stopRecording);
      const refFrames = rr.frames.slice(1);
      const refLongest = Math.max(...refFrames);
      refRuns.push({ first: refFirst.at, longest: refLongest });
      console.log(`run ${run}: reference: the first screen as static HTML (${refFirst.tiles} tiles, no scripts or data) drawn at ${f1(refFirst.at)} ms; `
        + `while ${samplers.length} devices report a download sample each (sent in ${refSent} ms, no page listening) its longest frame ${f1(refLongest)} ms, `
        + `${refFrames.filter((x) => x > 50).length} of ${refFrames.length} frames over 50 ms`);
      if (ref.errors.length) throw new Error(`the reference page: ${ref.errors.join('; ')}`);
      await ref.close();

      // A second load in the first page's browser context: its HTTP cache (every file revalidated,
      // as gloveboxd sends no-cache) and the token the first load kept. No goal: the first
      // render above, with nothing cached, is the one the goal is for.
      const again = await tab.context.newPage();
      await again.goto(`${server.url}/`);
      await inPage(again, boardReady, null, 60000);
      const warm = await again.evaluate(() => ({
        at: performance.getEntriesByName('board:first-render')[0].startTime,
        cached: performance.getEntriesByType('resource').filter((e) => /\.(js|css)$/.test(e.name) && e.transferSize < e.encodedBodySize).length,
      }));
      secondLoads.push(warm.at);
      console.log(`run ${run}: a second load in the same browser (stored token; ${warm.cached} scripts and style sheets answered from its cache after revalidation): first complete render ${f1(warm.at)} ms`);
      await tab.close();
    }

    const frMed = median(firstRenders.map((x) => x.firstRender));
    const frMax = Math.max(...firstRenders.map((x) => x.firstRender));
    const lfMax = Math.max(...burstRuns.map((x) => x.longest));
    const lfMed = median(burstRuns.map((x) => x.longest));
    const apMax = Math.max(...burstRuns.map((x) => x.applyMax));
    const workMax = Math.max(...burstRuns.map((x) => x.loafWork));
    console.log('');
    console.log(`load average at the end: ${load()}`);
    console.log(`first complete render (${DEVICES} devices): median ${f1(frMed)} ms, worst ${f1(frMax)} ms over ${RUNS} runs; goal < 500 ms: ${frMax < 500 ? 'met' : frMed < 500 ? 'met by the median' : 'NOT met'}`);
    console.log(`burst of ${BURST} updates: longest frame median ${f1(lfMed)} ms, worst ${f1(lfMax)} ms; board work per batch at most ${f1(apMax)} ms, `
      + `scripts and rendering in any long frame at most ${f1(workMax)} ms; goal no frame > 50 ms: ${lfMax <= 50 ? 'met' : 'NOT met'}`);
    console.log(`a second load in the same browser (no goal): first complete render median ${f1(median(secondLoads))} ms, worst ${f1(Math.max(...secondLoads))} ms`);
    console.log(`reference, the same first screen as static HTML: first render median ${f1(median(refRuns.map((x) => x.first)))} ms, `
      + `worst ${f1(Math.max(...refRuns.map((x) => x.first)))} ms; the static page while ${BURST} devices report: longest frame median `
      + `${f1(median(refRuns.map((x) => x.longest)))} ms, worst ${f1(Math.max(...refRuns.map((x) => x.longest)))} ms`);
  } finally {
    if (chromium) await chromium.close();
    if (server) await server.stop();
    await dropDatabase(db);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
