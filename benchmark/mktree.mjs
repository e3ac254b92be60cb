// Builds a tree for benchmark/abtree.mjs: N keys with readpath.mjs's keys,
// values and random load order (batches of 1000), waits until background
// work is idle, reads 900K keys in three passes so level 0 is compacted
// once reads have paid for it (docs/compaction.md), waits again, closes.
//
//   node benchmark/mktree.mjs 10000000 /tmp/t10m
//   TOONDB_BENCH_ENTRY=/other/build/index.js node benchmark/mktree.mjs ...
//
// Copy a tree for another build with `dd bs=2M` per file: a copy written in
// 2 MiB writes is mapped in huge pages as the original is (docs/performance.md,
// "Tables in huge pages").
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const { Database } = require(process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js'));
const N = Number(process.argv[2]);
const dir = process.argv[3];
if (!(N > 0) || !dir) throw new Error('usage: node benchmark/mktree.mjs N dir');

function rng(seed) { let a = seed >>> 0; return () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; }; }
function permutation(n, seed) { const r = rng(seed); const p = new Uint32Array(n); for (let i = 0; i < n; i++) p[i] = i; for (let i = n - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); const t = p[i]; p[i] = p[j]; p[j] = t; } return p; }
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const r = rng(7);
const valueFor = (i) => { const v = Buffer.allocUnsafe(100); for (let j = 0; j < 100; j++) v[j] = (r() * 256) | 0; v.writeUInt32LE(i, 0); return v; };

async function idle(db) {
  for (let quiet = 0; quiet < 5;) {
    const st = db.stats();
    quiet = st.maintenanceBusy || st.immutableMemtables > 0 ? 0 : quiet + 1;
    await new Promise((res) => setTimeout(res, 300));
  }
}
const levels = (db) => JSON.stringify(db.stats().levels.map((l) => l.tables));

const loadOrder = permutation(N, 1);
const db = await Database.open(dir);
const t0 = performance.now();
let batch = [];
for (let n = 0; n < N; n++) {
  const i = loadOrder[n];
  batch.push({ type: 'put', key: keyOf(2 * i), value: valueFor(i) });
  if (batch.length === 1000 || n === N - 1) { await db.batch(batch); batch = []; }
}
console.log(`loaded ${N} keys in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
await idle(db);
console.log(`settled at ${((performance.now() - t0) / 1000).toFixed(1)} s, levels ${levels(db)}`);
for (let pass = 0; pass < 3; pass++) {
  for (let i = 0; i < 300000; i++) db.getSync(keyOf(2 * ((i * 7919 + pass) % N)));
  await idle(db);
}
console.log(`after reads, levels ${levels(db)}`);
await db.close();
