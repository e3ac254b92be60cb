// Loop for profiling the read path: loads --keys keys (16 B, 100 B values)
// in random order into toondb-storage, optionally flushes and compacts and
// reopens (--state compacted), prints "ready <pid>" on stderr and then runs
// random getSync (or absent-key getSync with --absent) for --seconds.
// Profile with:  perf record -F 999 -g -p <pid> -- sleep 5  (node --perf-basic-prof)
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
    state: { type: 'string', default: 'memtable' },
    seconds: { type: 'string', default: '10' },
    absent: { type: 'boolean', default: false },
  },
});
const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { Database } = require(ENTRY);
const N = Number(opt.keys);
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const perm = (n, seed) => {
  let a = seed;
  const r = () => ((a = (a * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const p = Uint32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [p[i], p[j]] = [p[j], p[i]]; }
  return p;
};
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'readprofile-'));
let db = await Database.open(dir);
const load = perm(N, 1);
const v = Buffer.alloc(100, 1);
for (let n = 0; n < N; n += 1000) {
  const ops = [];
  for (let m = n; m < Math.min(N, n + 1000); m++) ops.push({ type: 'put', key: keyOf(2 * load[m]), value: v });
  await db.batch(ops);
}
if (opt.state === 'compacted') { await db.flush(); await db.compact(); await db.close(); db = await Database.open(dir); }
const reads = perm(N, 2);
const probe = Array.from({ length: N }, (_, i) => keyOf(2 * reads[i] + (opt.absent ? 1 : 0)));
console.error(`ready ${process.pid} levels ${JSON.stringify(db.stats().levels.map((l) => l.tables))}`);
const end = performance.now() + Number(opt.seconds) * 1000;
let ops = 0;
const t0 = performance.now();
while (performance.now() < end) {
  for (let i = 0; i < N; i++) db.getSync(probe[i]);
  ops += N;
}
console.error(`${((ops / (performance.now() - t0)) * 1000 / 1000).toFixed(0)}K/s`);
await db.close();
fs.rmSync(dir, { recursive: true, force: true });
