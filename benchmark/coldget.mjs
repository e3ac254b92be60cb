// Cold point reads and the event loop: a database larger than what the
// reads will find in memory, the page cache dropped before each run
// (needs root: /proc/sys/vm/drop_caches), then random reads of present
// keys, while a 1 ms setInterval measures how late the event loop runs
// its timers (lag). Per run:
//   getSync  one at a time, inline (always reads on the JS thread)
//   get1     await db.get one at a time
//   get64    db.get, 64 in flight
// and the same three warm (right after a cold run, same keys).
//
//   flock /work/bench.lock node benchmark/coldget.mjs --keys 400000 --reads 2000
//   TOONDB_BENCH_ENTRY=/other/worktree/index.js node benchmark/coldget.mjs   (another build)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    keys: { type: 'string', default: '400000' },
    'value-size': { type: 'string', default: '1000' },
    reads: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '3' },
    dir: { type: 'string', default: os.tmpdir() },
    // Internal: run one workload on the database in --db (a child process,
    // so no mapping of an earlier run keeps pages in the page cache).
    run: { type: 'string' },
    db: { type: 'string' },
    seed: { type: 'string', default: '1' },
  },
});
const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { Database } = require(ENTRY);
const N = Number(opt.keys);
const VSIZE = Number(opt['value-size']);
const READS = Number(opt.reads);
const log = (...a) => console.error(...a);
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));

let seed = Number(opt.seed);
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
let db;
let dir;
if (!opt.run) {
  dir = fs.mkdtempSync(path.join(opt.dir, 'coldget-'));
  db = await Database.open(dir, {});
  for (let i = 0; i < N; i += 1000) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 1000); j++) {
      const v = Buffer.alloc(VSIZE, j % 251);
      batch.push({ type: 'put', key: keyOf(j), value: v });
    }
    await db.batch(batch);
  }
  await db.flush();
  await db.compact();
  await db.close();
  log(`# ${N} keys x ${VSIZE} B (${((N * VSIZE) / 2 ** 20).toFixed(0)} MiB), ${READS} random reads per run, from ${ENTRY}`);
}

function dropCaches() {
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

// Event-loop lag probe: the worst and the 99th percentile delay of a 1 ms timer.
function lagProbe() {
  const lags = [];
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    lags.push(now - last - 1);
    last = now;
  }, 1);
  return () => {
    clearInterval(t);
    lags.sort((a, b) => a - b);
    const at = (q) => (lags.length ? lags[Math.min(lags.length - 1, Math.floor(q * lags.length))] : NaN);
    return { ticks: lags.length, p99: at(0.99), max: lags.length ? lags[lags.length - 1] : NaN };
  };
}

const check = (v, i) => { if (!v || v.length !== VSIZE || v[0] !== i % 251) throw new Error(`bad read of ${i}`); };
const W = {
  getSync: async (ids) => { for (const i of ids) check(db.getSync(keyOf(i)), i); },
  get1: async (ids) => { for (const i of ids) check(await db.get(keyOf(i)), i); },
  get64: async (ids) => {
    let next = 0;
    const lane = async () => { while (next < ids.length) { const i = ids[next++]; check(await db.get(keyOf(i)), i); } };
    await Promise.all(Array.from({ length: 64 }, lane));
  },
};
async function child(w, where) {
  const ids = Array.from({ length: READS }, () => Math.floor(rand() * N));
  db = await Database.open(where, {});
  const out = [];
  for (const temp of ['cold', 'warm']) {
    if (temp === 'cold') dropCaches();
    // Let the probe's first tick settle before timing.
    await new Promise((r) => setTimeout(r, 20));
    const stop = lagProbe();
    const t = performance.now();
    await W[w](ids);
    const ms = performance.now() - t;
    await new Promise((r) => setTimeout(r, 2));
    const lag = stop();
    out.push({ w, temp, rate: READS / (ms / 1000), p99: lag.p99, max: lag.max, ticks: lag.ticks, ms });
  }
  await db.close();
  console.log(JSON.stringify(out));
}

if (opt.run) {
  await child(opt.run, opt.db);
  process.exit(0);
}
const rows = [];
for (let round = 0; round < Number(opt.rounds); round++) {
  for (const w of Object.keys(W)) {
    const args = [fileURLToPath(import.meta.url), '--run', w, '--db', dir, '--keys', String(N), '--value-size', String(VSIZE), '--reads', String(READS), '--seed', String(round * 10 + Object.keys(W).indexOf(w) + 1)];
    const res = JSON.parse(execFileSync(process.execPath, args, { env: process.env, encoding: 'utf8' }).trim().split('\n').pop());
    for (const r of res) {
      rows.push(r);
      log(`[round ${round + 1}] ${w.padEnd(7)} ${r.temp} ${r.rate.toFixed(0).padStart(8)} reads/s  lag p99 ${r.p99.toFixed(1)} ms max ${r.max.toFixed(1)} ms (${r.ticks} ticks in ${r.ms.toFixed(0)} ms)`);
    }
  }
}
const stat = (a) => { const s = [...a].sort((x, y) => x - y); return `${s[Math.floor(s.length / 2)].toFixed(1)} (${s[0].toFixed(1)}-${s[s.length - 1].toFixed(1)})`; };
console.log(`\n${N} keys x ${VSIZE} B, ${READS} random reads per run, ${opt.rounds} rounds: median (min-max)`);
console.log('| workload | cache | reads/s | event-loop lag p99 ms | lag max ms |');
console.log('|---|---|---|---|---|');
for (const w of Object.keys(W)) {
  for (const temp of ['cold', 'warm']) {
    const r = rows.filter((x) => x.w === w && x.temp === temp);
    console.log(`| ${w} | ${temp} | ${stat(r.map((x) => x.rate))} | ${stat(r.map((x) => x.p99))} | ${stat(r.map((x) => x.max))} |`);
  }
}
fs.rmSync(dir, { recursive: true, force: true });
