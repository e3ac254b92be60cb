// The floor of a point read: CPU ns per read of 1,000 keys read over and
// over (everything in cache), toondb `getSync` against lmdb-js
// `getBinary`, from the memtable (default) or from a compacted table
// (--table). What a read of a large database costs above this is cache and
// TLB misses (docs/performance.md, "Not done yet (issue 21)").
//   node benchmark/hotget.mjs [--table]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { Database } = require(ENTRY);
const { open: openLmdb } = await import('lmdb');
const table = process.argv.includes('--table');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotget-'));
const db = await Database.open(path.join(dir, 'toondb'));
const keys = Array.from({ length: 1000 }, (_, i) => Buffer.from('key' + String(i).padStart(13, '0')));
const value = Buffer.alloc(100, 1);
for (const k of keys) await db.put(k, value);
if (table) { await db.flush(); await db.compact(); }
const ldb = openLmdb({ path: path.join(dir, 'lmdb'), keyEncoding: 'binary', encoding: 'binary', noSync: true });
await ldb.transaction(() => { for (const k of keys) ldb.put(k, value); });
const N = 2_000_000;
const stores = [['toondb getSync', (k) => db.getSync(k)], ['lmdb getBinary', (k) => ldb.getBinary(k)]];
const ns = Object.fromEntries(stores.map(([n]) => [n, []]));
for (let r = 0; r < 7; r++) {
  for (const [name, get] of stores) {
    const c0 = process.cpuUsage();
    let s = 0;
    for (let i = 0; i < N; i++) s += get(keys[i % 1000]).length;
    const c = process.cpuUsage(c0);
    if (s !== N * 100) throw new Error('wrong values');
    if (r >= 2) ns[name].push(((c.user + c.system) * 1000) / N);
  }
}
for (const [name, a] of Object.entries(ns)) {
  a.sort((x, y) => x - y);
  console.log(`${name.padEnd(15)} ${table ? 'table' : 'memtable'}: best ${a[0].toFixed(0)} ns, median ${a[2].toFixed(0)} ns per read (CPU)`);
}
await db.close();
await ldb.close();
fs.rmSync(dir, { recursive: true, force: true });
