// What the read benchmarks' own key Buffers cost: random `getSync` (toondb)
// and `getBinary` (lmdb) of N keys on EMPTY databases, so no table, memtable
// or B-tree page is touched. The keys are made as readpath.mjs makes them
// (16-byte Buffers, one per key, in load order) and read in another random
// order, so each read's key object and bytes are cache and TLB misses in a
// V8 heap that grows with N. Prints CPU ns per read, min and median of
// --rounds rounds, rounds alternating between the stores.
//   node --max-old-space-size=12000 benchmark/keycost.mjs --keys 10000000 [--json out.json]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { permutation } from './common.mjs';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    keys: { type: 'string', default: '1000000' },
    rounds: { type: 'string', default: '5' },
    json: { type: 'string' },
    dir: { type: 'string', default: os.tmpdir() },
  },
});
const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { Database } = require(ENTRY);
const { open: openLmdb } = await import('lmdb');
const N = Number(opt.keys);
const dir = fs.mkdtempSync(path.join(opt.dir, 'keycost-'));
const db = await Database.open(path.join(dir, 'toondb'));
const ldb = openLmdb({ path: path.join(dir, 'lmdb'), keyEncoding: 'binary', encoding: 'binary', noSync: true });
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const perm = permutation;
const load = perm(N, 1);
const probe = Array.from({ length: N }, (_, i) => keyOf(2 * load[i]));
const stores = [['toondb getSync', (k) => db.getSync(k)], ['lmdb getBinary', (k) => ldb.getBinary(k)]];
const ns = Object.fromEntries(stores.map(([n]) => [n, []]));
for (let r = 0; r < Number(opt.rounds); r++) {
  const order = perm(N, 100 + r);
  for (const [name, get] of r % 2 ? [...stores].reverse() : stores) {
    const c0 = process.cpuUsage();
    let found = 0;
    for (let i = 0; i < N; i++) if (get(probe[order[i]]) != null) found++;
    const c = process.cpuUsage(c0);
    if (found !== 0) throw new Error(`${name} found keys in an empty database`);
    ns[name].push(((c.user + c.system) * 1000) / N);
  }
}
const out = { keys: N, rounds: Number(opt.rounds), stores: {} };
for (const [name, a] of Object.entries(ns)) {
  a.sort((x, y) => x - y);
  out.stores[name] = { min: a[0], med: a[a.length >> 1], max: a[a.length - 1] };
  console.log(`${N} keys, empty database, ${name}: CPU ns per read min ${a[0].toFixed(0)}, median ${a[a.length >> 1].toFixed(0)}`);
}
if (opt.json) fs.writeFileSync(opt.json, JSON.stringify(out, null, 2));
await db.close();
await ldb.close();
fs.rmSync(dir, { recursive: true, force: true });
