// Large values: toondb getSync with zero-copy values (default threshold),
// toondb getSync copying (zeroCopyThreshold: Infinity, its own directory),
// and lmdb's getBinary, same keys and read order, same process, rounds
// alternating the order of the stores. Per value size: N keys loaded in
// random order (toondb flushed and compacted, so values sit in tables),
// then per round:
//   len    read the value, check its length (a zero-copy read touches no page)
//   touch  also read one byte of every 4 KiB page of it (a zero-copy read
//          takes its page faults here; a copy already touched everything)
// Reads run in bursts of 1000 with an event-loop turn in between (below).
//
//   flock /work/bench.lock node --expose-gc benchmark/largevalues.mjs --sizes 65536 --rounds 5
//   ... --threshold 1024 --sizes 4096,16384   (zero-copy below the default threshold)
//
//   ... --json out.json   also write the figures as JSON
//
// Prints per-round rates and a Markdown summary: median (min-max) and the
// ratios of medians, zero-copy ÷ copy and zero-copy ÷ lmdb.
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
    sizes: { type: 'string', default: '4096,16384,32768,65536,262144' },
    bytes: { type: 'string', default: String(128 << 20) },
    reads: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '3' },
    dir: { type: 'string', default: os.tmpdir() },
    // zeroCopyThreshold of the zero-copy store (default: the engine's).
    threshold: { type: 'string' },
    // Also write the figures as JSON to this file (benchmark/reads.mjs reads it).
    json: { type: 'string' },
  },
});
const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { Database } = require(ENTRY);
const { open: openLmdb } = await import('lmdb');
const log = (...a) => console.error(...a);

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
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const stat = (a) => { const s = [...a].sort((x, y) => x - y); return { min: s[0], med: s[Math.floor(s.length / 2)], max: s[s.length - 1] }; };
const k = (x) => (x >= 1e4 ? `${(x / 1000).toFixed(0)}K` : `${(x / 1000).toFixed(1)}K`);

const rows = [];
const jsonSizes = [];
for (const size of opt.sizes.split(',').map(Number)) {
  const n = Math.max(100, Math.min(20000, Math.floor(Number(opt.bytes) / size)));
  const reads = Number(opt.reads);
  const r = rng(size);
  const keys = Array.from({ length: n }, (_, i) => keyOf(i));
  const order = Array.from({ length: reads }, () => keys[Math.floor(r() * n)]);
  const value = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) value[i] = (r() * 256) | 0;
  const base = fs.mkdtempSync(path.join(opt.dir, 'largevalues-'));
  const open = async (name, o) => {
    const db = await Database.open(path.join(base, name), { autoCompaction: false, ...o });
    for (let i = 0; i < n; i += 100) {
      const batch = [];
      for (let j = i; j < Math.min(n, i + 100); j++) batch.push({ type: 'put', key: keys[j], value });
      await db.batch(batch);
    }
    await db.flush();
    await db.compact();
    return db;
  };
  const zc = await open('zerocopy', opt.threshold ? { zeroCopyThreshold: Number(opt.threshold) } : {});
  const cp = await open('copy', { zeroCopyThreshold: Infinity });
  const ldb = openLmdb({ path: path.join(base, 'lmdb'), keyEncoding: 'binary', encoding: 'binary', noSync: true });
  for (let i = 0; i < n; i += 100) {
    await ldb.transaction(() => { for (let j = i; j < Math.min(n, i + 100); j++) ldb.put(keys[j], value); });
  }
  const check = (v) => { if (!v || v.length !== size) throw new Error('bad read'); return v; };
  const touch = (v) => { let s = 0; for (let i = 0; i < v.length; i += 4096) s += v[i]; return s; };
  const stores = {
    'toondb zero-copy': (key) => zc.getSync(key),
    'toondb copy': (key) => cp.getSync(key),
    'lmdb getBinary': (key) => ldb.getBinary(key),
  };
  const results = {};
  // Reads in bursts of BURST, yielding to the event loop in between (as a
  // server does between requests): a zero-copy Buffer's mapping is released
  // by its finalizer on an event-loop turn after it is collected.
  const BURST = 1000;
  const run = async (name, mode) => {
    const get = stores[name];
    let sink = 0;
    globalThis.gc?.();
    await new Promise((res) => setImmediate(res));
    const t = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    for (let b = 0; b < reads; b += BURST) {
      const end = Math.min(reads, b + BURST);
      if (mode === 'len') for (let i = b; i < end; i++) sink += check(get(order[i])).length;
      else for (let i = b; i < end; i++) sink += touch(check(get(order[i])));
      await new Promise((res) => setImmediate(res));
    }
    const sec = Number(process.hrtime.bigint() - t) / 1e9;
    const cu = process.cpuUsage(cpu);
    if (sink < 0) throw new Error('unreachable');
    return [reads / sec, reads / ((cu.user + cu.system) / 1e6)];
  };
  for (const mode of ['len', 'touch']) for (const s of Object.keys(stores)) await run(s, mode); // warm-up
  const names = Object.keys(stores);
  for (let round = 0; round < Number(opt.rounds); round++) {
    const rot = names.slice(round % 3).concat(names.slice(0, round % 3));
    for (const mode of ['len', 'touch']) {
      for (const s of rot) {
        const [rate, perCpu] = await run(s, mode);
        (results[`${mode}|${s}`] ??= []).push(rate);
        (results[`${mode}|${s}|cpu`] ??= []).push(perCpu);
        log(`[${size} B, round ${round + 1}] ${mode.padEnd(5)} ${s.padEnd(17)} ${k(rate).padStart(7)}/s  ${k(perCpu).padStart(7)} per CPU-s`);
      }
    }
  }
  const bySize = { valueSize: size, keys: n, reads, modes: {} };
  for (const mode of ['len', 'touch']) {
    for (const unit of ['', '|cpu']) {
      bySize.modes[`${mode}${unit ? ' per CPU-s' : ' wall'}`] = Object.fromEntries(Object.keys(stores).map((s) => [s, stat(results[`${mode}|${s}${unit}`])]));
      const z = stat(results[`${mode}|toondb zero-copy${unit}`]);
      const c = stat(results[`${mode}|toondb copy${unit}`]);
      const l = stat(results[`${mode}|lmdb getBinary${unit}`]);
      const ratio = (a, b) => `${(a.med / b.med).toFixed(2)}x (${(a.min / b.max).toFixed(2)}-${(a.max / b.min).toFixed(2)})`;
      rows.push(`| ${size} | ${n} | ${mode} | ${unit ? 'per CPU-s' : 'wall'} | ${k(z.med)} (${k(z.min)}-${k(z.max)}) | ${k(c.med)} (${k(c.min)}-${k(c.max)}) | ${k(l.med)} (${k(l.min)}-${k(l.max)}) | ${ratio(z, c)} | ${ratio(z, l)} |`);
    }
  }
  jsonSizes.push(bySize);
  await zc.close();
  await cp.close();
  await ldb.close();
  fs.rmSync(base, { recursive: true, force: true });
}
console.log(`\n${opt.rounds} rounds, ${opt.reads} random getSync/getBinary per round; ratio of medians (min-max: worst and best pairing)`);
console.log('| value B | keys | mode | rate | toondb zero-copy /s | toondb copy /s | lmdb getBinary /s | zero-copy ÷ copy | zero-copy ÷ lmdb |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
if (opt.json) {
  fs.writeFileSync(opt.json, JSON.stringify({ script: 'largevalues.mjs', argv: process.argv.slice(2), rounds: Number(opt.rounds), sizes: jsonSizes }, null, 2) + '\n');
}
