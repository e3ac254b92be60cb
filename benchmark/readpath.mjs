// Read-path benchmark: toondb-storage getSync / get / getMany against lmdb's
// getBinary on the same keys, in the same process, rounds alternating between
// the stores. The data set is built once per process (untimed): N keys loaded
// in batches of 1000 in random (or key) order, then, per --state:
//   memtable   toondb keeps everything in memory (no reopen, no flush; what
//              does not fit --memtable-size is still flushed to tables);
//   compacted  toondb flushes and compacts everything, then both stores reopen;
//   loaded     both stores reopen without a manual compaction (whatever the
//              background compaction left).
//
//   node benchmark/readpath.mjs --keys 1000000 --state compacted --rounds 3
//   TOONDB_BENCH_ENTRY=/other/worktree/index.js node benchmark/readpath.mjs ...
//   ... --json out.json   also write the figures (and per-read counters) as JSON
//
// Keys: "key" + 13-digit zero-padded 2*i (16 bytes); the absent probe reads
// "key" + 2*i+1, which fall between present keys (so a table's key range does
// not rule them out: only its filter can). Values: 100 random bytes.
// Workloads (--workloads): present, scattered (present keys, held the pre-
// session-33 way: see readKeys below), absent, async1, async64, getmany.
// Prints one line per round and store, then a summary (median/min/max and the
// toondb ÷ lmdb ratio of medians) as Markdown.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    keys: { type: 'string', default: '200000' },
    reads: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    state: { type: 'string', default: 'compacted' },
    order: { type: 'string', default: 'random' },
    'value-size': { type: 'string', default: '100' },
    workloads: { type: 'string', default: 'present,absent,async1,async64,getmany' },
    dir: { type: 'string', default: os.tmpdir() },
    'cache-size': { type: 'string' },
    'memtable-size': { type: 'string' },
    // none | lz4 | zstd: how toondb's tables are written.
    compression: { type: 'string' },
    // on | off: whether toondb's tables get a hash index (builds that know it).
    'hash-index': { type: 'string' },
    // Also write the results as JSON to this file (benchmark/reads.mjs reads it).
    json: { type: 'string' },
  },
});
const N = Number(opt.keys);
const READS = Number(opt.reads ?? Math.min(N, 1_000_000));
const ROUNDS = Number(opt.rounds);
const VSIZE = Number(opt['value-size']);
const workloads = opt.workloads.split(',');

const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { Database } = require(ENTRY);
const { open: openLmdb } = await import('lmdb');

// Seeded PRNG (mulberry32) so every run reads the same sequence.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function permutation(n, seed) {
  const r = rng(seed);
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const t = p[i]; p[i] = p[j]; p[j] = t;
  }
  return p;
}
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const r = rng(7);
const valueFor = (i) => { const v = Buffer.allocUnsafe(VSIZE); for (let j = 0; j < VSIZE; j++) v[j] = (r() * 256) | 0; v.writeUInt32LE(i, 0); return v; };
const loadOrder = opt.order === 'random' ? permutation(N, 1) : Uint32Array.from({ length: N }, (_, i) => i);
const readOrder = permutation(N, 2);
// The keys a loop reads are made in the order it reads them, as an
// application makes each key just before its get: consecutive Buffers, so
// fetching the next key costs the same at 200K keys as at 10M and what
// grows with N is the store's read path alone. (Until session 33 the loops
// read references into one N-long array of key Buffers made in key order:
// each read's key object and bytes were cache and TLB misses in a heap that
// grows with N, 0.62 µs per read at 1M keys and 1.20 µs at 10M on empty
// databases. That layout stays as the `scattered` workload, for comparison.)
const readKeys = Array.from({ length: READS }, (_, i) => keyOf(2 * readOrder[i % N]));
const absentKeys = workloads.includes('absent') ? Array.from({ length: READS }, (_, i) => keyOf(2 * readOrder[i % N] + 1)) : [];
let scatteredKeys = [];
if (workloads.includes('scattered')) {
  const all = Array.from({ length: N }, (_, i) => keyOf(2 * i));
  scatteredKeys = Array.from({ length: READS }, (_, i) => all[readOrder[i % N]]);
}
const log = (...a) => console.error(...a);

const base = fs.mkdtempSync(path.join(opt.dir, 'readpath-'));
const toondbDir = path.join(base, 'toondb');
const lmdbDir = path.join(base, 'lmdb');
const toondbOpts = opt['cache-size'] ? { cacheSize: Number(opt['cache-size']) } : {};
if (opt.compression) toondbOpts.compression = opt.compression;
if (opt['hash-index']) toondbOpts.hashIndex = opt['hash-index'] === 'on';
// --state memtable --memtable-size 268435456: every key stays in one memtable
// (the default 32 MiB rotates 200K 116-byte entries into a table).
if (opt['memtable-size']) toondbOpts.memtableSize = Number(opt['memtable-size']);

log(`# ${N} keys (${opt.order} order) x ${VSIZE} B values, state=${opt.state}, ${READS} reads per loop, toondb ${JSON.stringify(toondbOpts)} from ${ENTRY}`);
let t0 = performance.now();
let tdb = await Database.open(toondbDir, toondbOpts);
{
  let batch = [];
  for (let n = 0; n < N; n++) {
    const i = loadOrder[n];
    batch.push({ type: 'put', key: keyOf(2 * i), value: valueFor(i) });
    if (batch.length === 1000 || n === N - 1) { await tdb.batch(batch); batch = []; }
  }
}
if (opt.state === 'compacted') { await tdb.flush(); await tdb.compact(); }
if (opt.state !== 'memtable') { await tdb.close(); tdb = await Database.open(toondbDir, toondbOpts); }
const toondbLoadSec = (performance.now() - t0) / 1000;
const levelsAtReopen = tdb.stats().levels.map((l) => l.tables);
log(`toondb loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s; levels ${JSON.stringify(tdb.stats().levels.map((l) => l.tables))}`);
t0 = performance.now();
let ldb = openLmdb({ path: lmdbDir, keyEncoding: 'binary', encoding: 'binary', noSync: true });
{
  const r2 = rng(7);
  for (let n = 0; n < N; n += 1000) {
    await ldb.transaction(() => {
      for (let m = n; m < Math.min(N, n + 1000); m++) { const i = loadOrder[m]; ldb.put(keyOf(2 * i), valueFor(i)); }
    });
  }
  void r2;
}
await ldb.close();
ldb = openLmdb({ path: lmdbDir, keyEncoding: 'binary', encoding: 'binary', noSync: true });
const lmdbLoadSec = (performance.now() - t0) / 1000;
log(`lmdb loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

function check(v) { if (v === null || v === undefined || v.length !== VSIZE) throw new Error('bad read'); }
async function window64(n, op) {
  let next = 0;
  async function lane() { while (next < n) { const i = next++; check(await op(i)); } }
  await Promise.all(Array.from({ length: 64 }, lane));
}
const W = {
  present: {
    toondb: () => { for (let i = 0; i < READS; i++) check(tdb.getSync(readKeys[i])); return READS; },
    lmdb: () => { for (let i = 0; i < READS; i++) check(ldb.getBinary(readKeys[i])); return READS; },
  },
  scattered: {
    toondb: () => { for (let i = 0; i < READS; i++) check(tdb.getSync(scatteredKeys[i])); return READS; },
    lmdb: () => { for (let i = 0; i < READS; i++) check(ldb.getBinary(scatteredKeys[i])); return READS; },
  },
  absent: {
    toondb: () => { for (let i = 0; i < READS; i++) if (tdb.getSync(absentKeys[i]) !== null) throw new Error('found absent'); return READS; },
    lmdb: () => { for (let i = 0; i < READS; i++) if (ldb.getBinary(absentKeys[i]) !== undefined) throw new Error('found absent'); return READS; },
  },
  async1: {
    toondb: async () => { const n = Math.min(READS, 200000); for (let i = 0; i < n; i++) check(await tdb.get(readKeys[i])); return n; },
    lmdb: async () => { const n = Math.min(READS, 200000); for (let i = 0; i < n; i++) check(await ldb.get(readKeys[i])); return n; },
  },
  async64: {
    toondb: async () => { const n = Math.min(READS, 200000); await window64(n, (i) => tdb.get(readKeys[i])); return n; },
    lmdb: async () => { const n = Math.min(READS, 200000); await window64(n, (i) => ldb.getAsync(readKeys[i])); return n; },
  },
  getmany: {
    toondb: async () => { const n = Math.floor(Math.min(READS, 200000) / 100); for (let b = 0; b < n; b++) { const vs = await tdb.getMany(readKeys.slice(b * 100, b * 100 + 100)); vs.forEach(check); } return n * 100; },
    lmdb: async () => { const n = Math.floor(Math.min(READS, 200000) / 100); for (let b = 0; b < n; b++) { const vs = await ldb.getMany(readKeys.slice(b * 100, b * 100 + 100)); vs.forEach(check); } return n * 100; },
  },
};
// lmdb's getMany/async get return decoded values: with encoding 'binary' they are Buffers.

// The reads see the tree background compaction leaves once it is done
// (under --state loaded it is often still merging level 0 at the reopen):
// wait until it has been idle for three polls in a row, so neither store's
// rounds share the machine with a compaction and both sizes of the growth
// row read a settled tree.
async function settle() {
  const start = performance.now();
  for (let idle = 0; idle < 3;) {
    const st = tdb.stats();
    idle = st.maintenanceBusy || st.immutableMemtables > 0 ? 0 : idle + 1;
    await new Promise((res) => setTimeout(res, 200));
  }
  return (performance.now() - start) / 1000;
}
const settledSec = await settle();
const levelsAtReads = tdb.stats().levels.map((l) => l.tables);
log(`toondb levels when reads start ${JSON.stringify(levelsAtReads)} (at the reopen ${JSON.stringify(levelsAtReopen)}; settled ${settledSec.toFixed(1)} s after lmdb's load)`);
const results = {};
// Warm-up: one untimed pass of each workload per store (V8 compiles, pages fault in).
for (const w of workloads) for (const s of ['toondb', 'lmdb']) await W[w][s]();
// Reads may have made work due (level 0 compacted once reads have paid for
// it, docs/compaction.md): the rounds read what it leaves.
const settledAfterWarmupSec = await settle();
const toondbLevels = tdb.stats().levels.map((l) => l.tables);
log(`toondb levels for the rounds ${JSON.stringify(toondbLevels)} (settled ${settledAfterWarmupSec.toFixed(1)} s after the warm-up)`);
for (let round = 0; round < ROUNDS; round++) {
  for (const w of workloads) {
    const order = round % 2 === 0 ? ['toondb', 'lmdb'] : ['lmdb', 'toondb'];
    for (const s of order) {
      const before = s === 'toondb' ? tdb.stats() : null;
      globalThis.gc?.();
      const t = process.hrtime.bigint();
      const c = process.cpuUsage();
      const ops = await W[w][s]();
      const sec = Number(process.hrtime.bigint() - t) / 1e9;
      const cu = process.cpuUsage(c);
      const cpuSec = (cu.user + cu.system) / 1e6;
      const rate = ops / sec;
      (results[`${w}|${s}`] ??= []).push(rate);
      (results[`${w}|${s}|cpu`] ??= []).push(ops / cpuSec);
      let note = '';
      if (before) {
        const after = tdb.stats();
        const d = (k) => after[k] - before[k];
        for (const c of ['dataBlocksRead', 'bloomChecked', 'bloomUseful', 'hashIndexChecked', 'hashIndexUseful']) {
          if (Number.isFinite(d(c))) (results[`${w}|toondb|${c}`] ??= []).push(d(c) / ops);
        }
        note = ` dataBlocksRead/op=${(d('dataBlocksRead') / ops).toFixed(3)} bloomChecked/op=${(d('bloomChecked') / ops).toFixed(2)} bloomUseful/op=${(d('bloomUseful') / ops).toFixed(2)} hashChecked/op=${(d('hashIndexChecked') / ops).toFixed(2)} hashUseful/op=${(d('hashIndexUseful') / ops).toFixed(2)}`;
        if (after.blockCacheHits !== undefined) note += ` cacheHits=${d('blockCacheHits')} cacheMisses=${d('blockCacheMisses')}`;
      }
      log(`[round ${round + 1}] ${w.padEnd(8)} ${s.padEnd(6)} ${(rate / 1000).toFixed(0).padStart(6)}K/s (${(ops / cpuSec / 1000).toFixed(0)}K per CPU-s)${note}`);
    }
  }
}
const stat = (a) => { const s = [...a].sort((x, y) => x - y); return { min: s[0], med: s[Math.floor(s.length / 2)], max: s[s.length - 1] }; };
const k = (x) => `${(x / 1000).toFixed(0)}K`;
console.log(`\n${N} keys, ${opt.order} load, state=${opt.state}, ${VSIZE} B values, ${ROUNDS} rounds, toondb ${JSON.stringify(toondbOpts)}`);
// Wall-clock rates, and rates per CPU-second of this process (less exposed
// to the other tenants of a shared VM taking the CPU away mid-loop).
console.log('| workload | toondb med (min-max) | lmdb med (min-max) | toondb ÷ lmdb | per CPU-s: toondb | lmdb | ÷ |');
console.log('|---|---|---|---|---|---|---|');
for (const w of workloads) {
  const a = stat(results[`${w}|toondb`]);
  const b = stat(results[`${w}|lmdb`]);
  const ac = stat(results[`${w}|toondb|cpu`]);
  const bc = stat(results[`${w}|lmdb|cpu`]);
  console.log(`| ${w} | ${k(a.med)} (${k(a.min)}-${k(a.max)}) | ${k(b.med)} (${k(b.min)}-${k(b.max)}) | ${(a.med / b.med).toFixed(2)}x | ${k(ac.med)} | ${k(bc.med)} | ${(ac.med / bc.med).toFixed(2)}x |`);
}
if (opt.json) {
  const doc = {
    script: 'readpath.mjs',
    argv: process.argv.slice(2),
    keys: N, reads: READS, rounds: ROUNDS, state: opt.state, order: opt.order, valueSize: VSIZE,
    toondbOptions: toondbOpts, toondbLoadSec, lmdbLoadSec, toondbLevels, levelsAtReopen, levelsAtReads,
    // Per workload: ops/s (wall and per CPU-second of this process) over the rounds,
    // for toondb and lmdb; toondb's counters per read (over the rounds).
    workloads: Object.fromEntries(workloads.map((w) => [w, {
      toondb: stat(results[`${w}|toondb`]),
      lmdb: stat(results[`${w}|lmdb`]),
      toondbPerCpu: stat(results[`${w}|toondb|cpu`]),
      lmdbPerCpu: stat(results[`${w}|lmdb|cpu`]),
      toondbRounds: results[`${w}|toondb`],
      lmdbRounds: results[`${w}|lmdb`],
      toondbCountersPerRead: Object.fromEntries(['dataBlocksRead', 'bloomChecked', 'bloomUseful', 'hashIndexChecked', 'hashIndexUseful']
        .filter((c) => results[`${w}|toondb|${c}`]).map((c) => [c, stat(results[`${w}|toondb|${c}`])])),
    }])),
  };
  fs.writeFileSync(opt.json, JSON.stringify(doc, null, 2) + '\n');
}
await tdb.close();
await ldb.close();
fs.rmSync(base, { recursive: true, force: true });
