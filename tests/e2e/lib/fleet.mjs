// fleet: a throwaway glovebox for the browser tests and the web benchmark. It makes a database in
// the test PostgreSQL cluster (scripts/lib/pg-cluster, the cluster of ctest's "db" fixture),
// migrates it and creates tokens with `gloveboxd migrate` / `gloveboxd token create`, starts
// `gloveboxd serve` on a free loopback port (read from its "listening on ... port=" log line, as
// tests/support/harness.c does), and drives devices through the agent protocol with glovebox-sim
// or with hand-made messages. Every process started here is stopped by stop(), and killed if the
// test process exits first.
//
// Paths come from the environment (tests/e2e/e2e.cmake sets them):
//   GB_GLOVEBOXD, GB_SIM          the gloveboxd and glovebox-sim binaries
//   GB_PG_CLUSTER, GB_PGDIR       the cluster script and the cluster's directory
//   GB_WEB_DIR                    the web view served by gloveboxd
//   GB_E2E_OUT                    where logs and screenshots go (in the build tree)

import { spawn, execFile } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export function settings(need = ['GB_GLOVEBOXD', 'GB_SIM', 'GB_PG_CLUSTER', 'GB_PGDIR', 'GB_WEB_DIR', 'GB_E2E_OUT']) {
  const missing = need.filter((k) => !process.env[k]);
  if (missing.length) throw new Error(`environment not set: ${missing.join(', ')} (tests/e2e/e2e.cmake sets them)`);
  const s = Object.fromEntries(need.map((k) => [k, process.env[k]]));
  if (s.GB_E2E_OUT) mkdirSync(s.GB_E2E_OUT, { recursive: true });
  return s;
}

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

async function sh(file, args, opts = {}) {
  try {
    const { stdout } = await run(file, args, { maxBuffer: 64 << 20, ...opts });
    return stdout;
  } catch (e) {
    throw new Error(`${file} ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

// A new, empty database in the cluster; returns its libpq URL.
export async function createDatabase(s, prefix = 'e2e') {
  const name = `${prefix}_${process.pid}_${Date.now() % 1e8}`;
  const admin = (await sh(s.GB_PG_CLUSTER, ['url', s.GB_PGDIR, 'postgres'])).trim();
  await sh('psql', ['-q', '-X', admin, '-c', `CREATE DATABASE ${name}`]);
  const url = (await sh(s.GB_PG_CLUSTER, ['url', s.GB_PGDIR, name])).trim();
  return { name, url, admin };
}

export async function dropDatabase(db) {
  await sh('psql', ['-q', '-X', db.admin, '-c', `DROP DATABASE IF EXISTS ${db.name} WITH (FORCE)`]).catch(() => {});
}

// Runs the work PostgreSQL would otherwise start by itself after a large ingest (vacuum and
// statistics, a checkpoint), so that a measurement that follows does not share the CPUs with it.
export async function settle(db) {
  await sh('psql', ['-q', '-X', '-v', 'ON_ERROR_STOP=1', db.url, '-c', 'VACUUM ANALYZE', '-c', 'CHECKPOINT']);
}

export async function migrate(s, dbUrl) {
  await sh(s.GB_GLOVEBOXD, ['migrate', '--database-url', dbUrl]);
}

// Creates a token; gloveboxd prints it alone on the last line.
export async function createToken(s, dbUrl, role, name) {
  const out = await sh(s.GB_GLOVEBOXD, ['token', 'create', '--role', role, '--name', name, '--database-url', dbUrl]);
  const lines = out.split('\n').map((l) => l.trim()).filter(Boolean);
  if (!lines.length) throw new Error(`token create --role ${role} printed no token`);
  return lines[lines.length - 1];
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Starts gloveboxd; resolves to {url, port, log, stop()} once it listens.
export async function startServer(s, dbUrl, { name = 'gloveboxd', args = [] } = {}) {
  const log = join(s.GB_E2E_OUT, `${name}.log`);
  const fd = openSync(log, 'w');
  const proc = spawn(s.GB_GLOVEBOXD, ['serve', '--listen', '127.0.0.1:0', '--database-url', dbUrl,
    '--web-dir', s.GB_WEB_DIR, ...args], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  children.add(proc);
  let exited = null;
  proc.on('exit', (code, signal) => { exited = { code, signal }; children.delete(proc); });
  for (let i = 0; i < 300; i++) {
    const text = readFileSync(log, 'utf8');
    const m = /listening on [^\n]*port=(\d+)/.exec(text);
    if (m) {
      const port = Number(m[1]);
      return {
        port,
        url: `http://127.0.0.1:${port}`,
        log,
        async stop() {
          if (exited) return;
          const done = new Promise((r) => proc.once('exit', r));
          proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
          await done;
          clearTimeout(t);
        },
      };
    }
    if (exited) break;
    await sleep(50);
  }
  proc.kill('SIGKILL');
  throw new Error(`gloveboxd did not start; its log (${log}):\n${readFileSync(log, 'utf8').slice(-3000)}`);
}

// Runs glovebox-sim to the end (--speed 0 by default); returns its printed summary.
export async function runSim(s, { server, token, devices, seed = 1, args = [], csv } = {}) {
  const common = ['--devices', String(devices), '--seed', String(seed)];
  if (csv) {
    return sh(s.GB_SIM, [...common, '--csv', csv]);
  }
  return sh(s.GB_SIM, ['--server', server, '--token', token, ...common, '--speed', '0', ...args], { timeout: 240000 });
}

export async function request(server, token, method, path, body, type = 'application/json') {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = type;
  const r = await fetch(`${server}${path}`, {
    method, headers, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: r.status, json, text };
}

export async function getJson(server, token, path) {
  const r = await request(server, token, 'GET', path);
  if (r.status !== 200) throw new Error(`GET ${path}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  return r.json;
}

// Every device the list endpoint returns for a query (all pages).
export async function listAll(server, token, query = {}) {
  const out = [];
  let cursor = null;
  do {
    const q = new URLSearchParams({ ...query, limit: '1000', ...(cursor ? { cursor } : {}) });
    const page = await getJson(server, token, `/api/v1/devices?${q}`);
    out.push(...page.devices);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

// Whether the server documents an operation (its OpenAPI file).
export async function documents(server, method, path) {
  const doc = await getJson(server, null, '/api/v1/openapi.json');
  return Boolean(doc.paths && doc.paths[path] && doc.paths[path][method.toLowerCase()]);
}

// Sends agent messages for one device; seq and at must be given by the caller.
export async function agentPost(server, token, serial, messages) {
  const r = await request(server, token, 'POST', '/api/v1/agent/messages', { protocol: 1, device: { serial }, messages });
  if (r.status !== 200) throw new Error(`agent post for ${serial}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  return r.json;
}

export function hello(seq, at, slot) {
  return {
    seq, at, type: 'hello', agent: 'glovebox-e2e/1.0', os_build: '10.0.22631',
    hardware: { manufacturer: 'HP', model: 'EliteBook 840 G8', tpm_version: '2.0', tpm_attestation: true, virtual_machine: false },
    network: { medium: 'ethernet', link_mbps: 1000 }, ...(slot ? { slot } : {}),
  };
}

export const TECH_FLOW = ['oobe', 'enterprise_provisioning', 'profile_download', 'zdp_update', 'component_update',
  'device_rename', 'landing', 'securing_hardware', 'joining_network', 'registering_mdm', 'preparing_mdm', 'device_setup'];

// Messages that take a device through the first `stages` stages of the technician flow, the
// last one left running, and a heartbeat at time `end` (ms); one stage per `step` ms.
export function flowMessages(stages, end, { slot, step = 60000, firstSeq = 1 } = {}) {
  const msgs = [];
  let seq = firstSeq;
  let t = end - stages * step;
  const iso = (ms) => new Date(ms).toISOString();
  msgs.push(hello(seq++, iso(t), slot));
  for (let i = 0; i < stages; i++) {
    const stage = TECH_FLOW[i];
    msgs.push({ seq: seq++, at: iso(t), type: 'stage', stage, state: 'started' });
    t += step;
    if (i < stages - 1) msgs.push({ seq: seq++, at: iso(t), type: 'stage', stage, state: 'succeeded' });
  }
  msgs.push({ seq: seq++, at: iso(end), type: 'heartbeat' });
  return msgs;
}

export function writeJson(path, value) {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}
