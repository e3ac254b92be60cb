// Memory bound of the block cache: build an LZ4-compressed database of about
// --mib MiB of table files, then, in a fresh process, open it with a 64 MiB
// cache (--cache-mib) and read all of it (a full scan, then --reads random
// getSync point reads over every key), sampling the process's anonymous
// memory (RssAnon in /proc/self/status: heap, not file pages of the maps)
// as it goes. Prints the figures; the bound is 256 MiB.
//
//   node benchmark/cachememory.mjs --mib 512
//   node benchmark/cachememory.mjs --mib 2048 --dir /data/tmp
//   TOONDB_BENCH_ENTRY=/other/worktree/index.js node benchmark/cachememory.mjs ...
//   ... --json out.json   also write the figures as JSON
//
// Values: 1000 bytes, half random and half a repeated pattern, so LZ4 stores
// blocks at about 60% of their size (a compressed database whose blocks must
// be decompressed into memory to be read). Keys: "key" + 13 digits.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '512' },
    'cache-mib': { type: 'string', default: '64' },
    reads: { type: 'string', default: '1000000' },
    dir: { type: 'string', default: os.tmpdir() },
    phase: { type: 'string', default: 'all' },
    db: { type: 'string' },
    keep: { type: 'boolean', default: false },
    // Also write the figures as JSON to this file (benchmark/reads.mjs reads it).
    json: { type: 'string' },
  },
});
const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { Database } = require(ENTRY);
const VSIZE = 1000;
const MIB = 1 << 20;
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));

function rssAnonMiB() {
  const m = /RssAnon:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

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

async function build(dir) {
  const r = rng(1);
  const db = await Database.open(dir, { compression: 'lz4' });
  const target = Number(opt.mib) * MIB;
  let n = 0;
  const t0 = performance.now();
  for (;;) {
    const batch = [];
    for (let j = 0; j < 1000; j++, n++) {
      const v = Buffer.allocUnsafe(VSIZE);
      for (let b = 0; b < VSIZE / 2; b++) v[b] = (r() * 256) | 0;
      v.fill(n % 251, VSIZE / 2);
      v.writeUInt32LE(n, 0);
      batch.push({ type: 'put', key: keyOf(n), value: v });
    }
    await db.batch(batch);
    if (n % 100000 === 0) {
      const s = db.stats();
      if (s.tableBytes + s.memtableBytes * 0.6 >= target) break;
    }
  }
  await db.flush();
  await db.compact();
  const s = db.stats();
  console.error(`built ${n} keys, ${(s.tableBytes / MIB).toFixed(0)} MiB in ${s.tables} tables in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  await db.close();
  return n;
}

async function read(dir, n) {
  const before = rssAnonMiB();
  const db = await Database.open(dir, { cacheSize: Number(opt['cache-mib']) * MIB });
  const opened = rssAnonMiB();
  let peak = opened;
  const sample = () => { const m = rssAnonMiB(); if (m > peak) peak = m; };
  let seen = 0;
  const t0 = performance.now();
  for await (const [k, v] of db.iterator()) {
    if (v.length !== VSIZE) throw new Error('bad value');
    if (++seen % 50000 === 0) sample();
    void k;
  }
  if (seen !== n) throw new Error(`scanned ${seen} of ${n} keys`);
  const scanSec = (performance.now() - t0) / 1000;
  const afterScan = rssAnonMiB();
  const r = rng(2);
  const reads = Number(opt.reads);
  const t1 = performance.now();
  for (let i = 0; i < reads; i++) {
    const j = Math.floor(r() * n);
    const v = db.getSync(keyOf(j));
    if (v === null || v.readUInt32LE(0) !== j) throw new Error(`bad read of ${j}`);
    if (i % 50000 === 0) sample();
  }
  const readSec = (performance.now() - t1) / 1000;
  sample();
  const s = db.stats();
  globalThis.gc?.();
  const out = {
    tableMiB: +(s.tableBytes / MIB).toFixed(0),
    tables: s.tables,
    keys: n,
    cacheMiB: Number(opt['cache-mib']),
    rssAnonBeforeOpenMiB: +before.toFixed(1),
    rssAnonAfterOpenMiB: +opened.toFixed(1),
    rssAnonAfterScanMiB: +afterScan.toFixed(1),
    rssAnonPeakMiB: +peak.toFixed(1),
    rssAnonEndMiB: +rssAnonMiB().toFixed(1),
    blockCacheMiB: +((s.blockCacheBytes ?? 0) / MIB).toFixed(1),
    blockCacheCapacityMiB: +((s.blockCacheCapacity ?? 0) / MIB).toFixed(1),
    blockCacheMetaMiB: +((s.blockCacheMetaBytes ?? 0) / MIB).toFixed(1),
    blockCacheMetaOverflowMiB: +((s.blockCacheMetaOverflowBytes ?? 0) / MIB).toFixed(1),
    blockCacheHits: s.blockCacheHits,
    blockCacheMisses: s.blockCacheMisses,
    blockCacheEvictions: s.blockCacheEvictions,
    openTables: s.openTables,
    scanKeysPerSec: Math.round(seen / scanSec),
    getSyncPerSec: Math.round(reads / readSec),
  };
  await db.close();
  console.log(JSON.stringify(out));
  if (opt.json) fs.writeFileSync(opt.json, JSON.stringify({ script: 'cachememory.mjs', targetMiB: Number(opt.mib), ...out }, null, 2) + '\n');
  console.log(`RssAnon peak ${out.rssAnonPeakMiB} MiB reading ${out.tableMiB} MiB of LZ4 tables with a ${out.cacheMiB} MiB cache (bound: 256 MiB): ${out.rssAnonPeakMiB < 256 ? 'under' : 'OVER'}`);
}

if (opt.phase === 'build') {
  const n = await build(opt.db);
  fs.writeFileSync(path.join(opt.db, 'BENCH-KEYS'), String(n));
} else if (opt.phase === 'read') {
  await read(opt.db, Number(fs.readFileSync(path.join(opt.db, 'BENCH-KEYS'), 'utf8')));
} else {
  // Build and read in separate processes, so the reader's memory holds
  // nothing the load left behind.
  const dir = opt.db ?? fs.mkdtempSync(path.join(opt.dir, 'cachemem-'));
  const self = fileURLToPath(import.meta.url);
  const pass = ['--mib', opt.mib, '--cache-mib', opt['cache-mib'], '--reads', opt.reads, '--db', dir, ...(opt.json ? ['--json', opt.json] : [])];
  if (!fs.existsSync(path.join(dir, 'BENCH-KEYS'))) {
    execFileSync(process.execPath, [self, '--phase', 'build', ...pass], { stdio: 'inherit' });
  }
  execFileSync(process.execPath, ['--expose-gc', self, '--phase', 'read', ...pass], { stdio: 'inherit' });
  if (!opt.keep && !opt.db) fs.rmSync(dir, { recursive: true, force: true });
}
