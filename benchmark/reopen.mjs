// Reopen after SIGKILL: a child process loads a store in batches of 1000
// puts and reports every acknowledged batch; the parent kills it with
// SIGKILL once --mib MiB of keys and values were acknowledged, then times,
// in a fresh process, `open` up to the first read of the last acknowledged
// key. Cold = page cache dropped first (`echo 3 > /proc/sys/vm/drop_caches`,
// needs root), warm = right after a cold try (the files are cached). Best
// of --tries for each. Stores: toondb, lmdb, in that order, same data.
//
//   node benchmark/reopen.mjs --mib 256 --tries 2
//   TOONDB_BENCH_ENTRY=/other/index.js node benchmark/reopen.mjs --only toondb
//   ... --json out.json   also write the figures as JSON
//
// Without the right to write /proc/sys/vm/drop_caches (not root, or a
// read-only /proc/sys) the cold figures are n/a, with the reason.
//
// Keys: "key" + 13-digit index in random order (16 bytes); values
// --value-size random bytes (default 1000: 1 GiB is ~1M puts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);
const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { values: opt } = parseArgs({
  options: {
    role: { type: 'string', default: 'main' },
    store: { type: 'string' },
    dir: { type: 'string' },
    key: { type: 'string' },
    mib: { type: 'string', default: '256' },
    tries: { type: 'string', default: '2' },
    'value-size': { type: 'string', default: '1000' },
    only: { type: 'string', default: 'toondb,lmdb' },
    base: { type: 'string', default: os.tmpdir() },
    'toondb-options': { type: 'string', default: '{}' },
    // Also write the figures as JSON to this file (benchmark/reads.mjs reads it).
    json: { type: 'string' },
  },
});
const VSIZE = Number(opt['value-size']);
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));

// Loads the store's module (not timed: a reopen is measured from `open`).
async function loadStore(store) {
  if (store === 'toondb') return require(ENTRY);
  return import('lmdb');
}

async function openStore(store, dir, mod) {
  if (store === 'toondb') {
    const { Database } = mod;
    const db = await Database.open(dir, JSON.parse(opt['toondb-options']));
    return { stats: () => db.stats(), get: (k) => db.getSync(k), batch: (ops) => db.batch(ops.map(([key, value]) => ({ type: 'put', key, value }))) };
  }
  const { open } = mod;
  const db = open({ path: dir, keyEncoding: 'binary', encoding: 'binary', noSync: true });
  return {
    get: (k) => db.getBinary(k),
    batch: (ops) => db.transaction(() => { for (const [k, v] of ops) db.put(k, v); }),
  };
}

if (opt.role === 'writer') {
  // Random key order from a multiplicative permutation of 0..2^32.
  const db = await openStore(opt.store, opt.dir, await loadStore(opt.store));
  const v = Buffer.alloc(VSIZE);
  for (let b = 0; ; b++) {
    const ops = [];
    for (let j = 0; j < 1000; j++) {
      const i = ((b * 1000 + j) * 2654435761) >>> 0;
      for (let q = 0; q < VSIZE; q += 4) v.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, q);
      ops.push([keyOf(i), Buffer.from(v)]);
    }
    await db.batch(ops);
    process.stdout.write(`${b}\n`);
  }
} else if (opt.role === 'reader') {
  const key = keyOf(Number(opt.key));
  const mod = await loadStore(opt.store);
  const t0 = performance.now();
  const db = await openStore(opt.store, opt.dir, mod);
  const v = db.get(key);
  const ms = performance.now() - t0;
  if (!v || v.length !== VSIZE) throw new Error(`last acknowledged key missing after reopen (${opt.store})`);
  process.stdout.write(JSON.stringify({ ms }) + '\n');
  if (opt.store === 'toondb') {
    const s = db.stats?.();
    if (s) process.stderr.write(`  replayed ${s.recoveredRecords} records from ${s.recoveredSegments} WAL segments\n`);
  }
  process.exit(0); // like a crash-free app start: no close timing
} else {
  const target = Number(opt.mib) * 2 ** 20;
  const perBatch = 1000 * (16 + VSIZE);
  const rows = [];
  // Can this process drop the page cache? (Writing "1" drops clean page cache only.)
  let coldUnavailable = null;
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
  } catch (e) {
    coldUnavailable = `cannot drop the page cache (write /proc/sys/vm/drop_caches: ${e.code ?? e.message}; needs root)`;
    console.error(`cold reopen: n/a, ${coldUnavailable}`);
  }
  for (const store of opt.only.split(',')) {
    const dir = fs.mkdtempSync(path.join(opt.base, `reopen-${store}-`));
    const t0 = performance.now();
    const child = spawn(process.execPath, [self, '--role', 'writer', '--store', store, '--dir', dir, '--value-size', String(VSIZE), '--toondb-options', opt['toondb-options']], { stdio: ['ignore', 'pipe', 'inherit'], env: process.env });
    let last = -1;
    let buf = '';
    await new Promise((resolve) => {
      child.stdout.on('data', (d) => {
        buf += d;
        const lines = buf.split('\n');
        buf = lines.pop();
        if (lines.length) last = Number(lines[lines.length - 1]);
        if ((last + 1) * perBatch >= target && !child.killed) { child.kill('SIGKILL'); }
      });
      child.on('exit', resolve);
    });
    const lastKey = ((last * 1000 + 999) * 2654435761) >>> 0;
    const du = spawnSync('du', ['-sm', dir]).stdout.toString().split('\t')[0];
    console.error(`${store}: killed after ${last + 1} batches (${(((last + 1) * perBatch) / 2 ** 20).toFixed(0)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${du} MiB on disk`);
    const measure = (cold) => {
      if (cold) {
        spawnSync('sync');
        fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
      }
      const r = spawnSync(process.execPath, [self, '--role', 'reader', '--store', store, '--dir', dir, '--key', String(lastKey), '--value-size', String(VSIZE), '--toondb-options', opt['toondb-options']], { env: process.env });
      if (r.status !== 0) throw new Error(r.stderr.toString());
      if (r.stderr.length) process.stderr.write(r.stderr);
      return JSON.parse(r.stdout.toString()).ms;
    };
    const cold = [];
    const warm = [];
    for (let t = 0; t < Number(opt.tries); t++) {
      if (!coldUnavailable) cold.push(measure(true));
      warm.push(measure(false));
    }
    console.error(`${store}: cold ${coldUnavailable ? 'n/a' : cold.map((x) => x.toFixed(1)).join(', ')} ms; warm ${warm.map((x) => x.toFixed(1)).join(', ')} ms`);
    rows.push({ store, mib: ((last + 1) * perBatch) / 2 ** 20, cold: cold.length ? Math.min(...cold) : null, warm: Math.min(...warm), coldTries: cold, warmTries: warm, diskMiB: Number(du) });
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\nreopen after SIGKILL, ${opt.mib} MiB target, ${VSIZE} B values, best of ${opt.tries}`);
  console.log('| store | written MiB | cold ms | warm ms |');
  console.log('|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.store} | ${r.mib.toFixed(0)} | ${r.cold === null ? 'n/a' : r.cold.toFixed(1)} | ${r.warm.toFixed(1)} |`);
  if (coldUnavailable) console.log(`\ncold: n/a, ${coldUnavailable}`);
  if (opt.json) {
    fs.writeFileSync(opt.json, JSON.stringify({ script: 'reopen.mjs', argv: process.argv.slice(2), targetMiB: Number(opt.mib), valueSize: VSIZE, tries: Number(opt.tries), coldUnavailable, stores: rows }, null, 2) + '\n');
  }
}
