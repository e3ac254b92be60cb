// CPU per random getSync of two or more builds, each reading its own tree
// (benchmark/mktree.mjs; a copy per build, or a tree each build wrote
// itself), in one process, rounds alternating (reversed every other round):
//
//   node --expose-gc benchmark/abtree.mjs N ROUNDS buildA/index.js:/tmp/treeA buildB/index.js:/tmp/treeB ...
//   ABSENT=1 ...   read the absent keys between the present ones instead
//
// N is the tree's key count (it decides the keys and the read order, as in
// mktree.mjs); each round reads min(N, 1M) keys in a fixed random order,
// each key Buffer made in read order. Prints CPU ns per read (min and
// median over the rounds) per build and the median of the per-round ratios
// against the first build. For deciding a change, not part of `npm run bench`.
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const N = Number(process.argv[2]);
const ROUNDS = Number(process.argv[3]);
const specs = process.argv.slice(4).map((s) => s.split(':'));
if (!(N > 0) || !(ROUNDS > 0) || specs.length < 1) throw new Error('usage: node benchmark/abtree.mjs N ROUNDS entry:dir ...');

function rng(seed) { let a = seed >>> 0; return () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; }; }
function permutation(n, seed) { const r = rng(seed); const p = new Uint32Array(n); for (let i = 0; i < n; i++) p[i] = i; for (let i = n - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); const t = p[i]; p[i] = p[j]; p[j] = t; } return p; }
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const READS = Math.min(N, 1000000);
const readOrder = permutation(N, 2);
const absent = process.env.ABSENT === '1';
const keys = Array.from({ length: READS }, (_, i) => keyOf(2 * readOrder[i] + (absent ? 1 : 0)));

const dbs = [];
for (const [entry, dir] of specs) {
  const { Database } = require(path.resolve(entry));
  const db = await Database.open(dir);
  dbs.push(db);
  console.error(entry, dir, JSON.stringify(db.stats().levels.map((l) => l.tables)));
}
const readAll = (db) => { let found = 0; for (let i = 0; i < READS; i++) if (db.getSync(keys[i]) !== null) found++; return found; };
for (const db of dbs) readAll(db); // warm-up
const perRead = dbs.map(() => []);
const ratios = dbs.map(() => []);
for (let round = 0; round < ROUNDS; round++) {
  const order = dbs.map((_, i) => i);
  if (round % 2) order.reverse();
  const ns = [];
  for (const i of order) {
    globalThis.gc?.();
    const c0 = process.cpuUsage();
    const found = readAll(dbs[i]);
    const c = process.cpuUsage(c0);
    ns[i] = ((c.user + c.system) * 1000) / READS;
    perRead[i].push(ns[i]);
    if (found !== (absent ? 0 : READS)) throw new Error(`${specs[i].join(':')} found ${found} of ${READS}`);
  }
  for (let i = 1; i < dbs.length; i++) ratios[i].push(ns[i] / ns[0]);
  console.error(`round ${round}: ${ns.map((x) => x.toFixed(0)).join(' ')}`);
}
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
for (let i = 0; i < dbs.length; i++) {
  console.log(`${specs[i].join(':')}: min ${Math.min(...perRead[i]).toFixed(0)} med ${median(perRead[i]).toFixed(0)} ns/read${i ? `; per-round ratio median ${median(ratios[i]).toFixed(3)}` : ''}`);
}
for (const db of dbs) await db.close();
