// CPU time per point read, one at a time, of 200K keys (16 B, 100 B values)
// loaded in random order and reopened: `getSync`, `await getSync` (what an
// await alone costs) and `await get`. Compares builds by this process's CPU
// time rather than wall time, which on a shared VM moves with other
// tenants; best and median of --rounds rounds, each over every key once in
// random order:
//   node benchmark/getcpu.mjs [/path/to/build/index.js ...]
// With several builds, each is measured in its own child process, in turn,
// twice (A B A B), so a quiet or busy minute falls on both.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const self = fileURLToPath(import.meta.url);
const builds = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (process.env.GETCPU_CHILD !== '1') {
  const list = builds.length ? builds : [path.resolve(path.dirname(self), '../index.js')];
  for (let pass = 0; pass < 2; pass++) {
    for (const b of list) {
      const r = spawnSync(process.execPath, [self, b], { env: { ...process.env, GETCPU_CHILD: '1' }, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(r.stderr);
      process.stdout.write(`${b}\n${r.stdout}`);
    }
  }
  process.exit(0);
}

const require = createRequire(import.meta.url);
const { Database } = require(builds[0]);
const N = 200000;
const ROUNDS = 7;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'getcpu-'));
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const keys = Array.from({ length: N }, (_, i) => keyOf(i));
const shuffled = (seed) => {
  let a = seed;
  const r = () => ((a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 4294967296);
  const p = keys.slice();
  for (let i = p.length - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [p[i], p[j]] = [p[j], p[i]]; }
  return p;
};
let db = await Database.open(dir);
const load = shuffled(1);
const value = Buffer.alloc(100, 7);
for (let i = 0; i < N; i += 1000) await db.batch(load.slice(i, i + 1000).map((key) => ({ type: 'put', key, value })));
await db.close();
db = await Database.open(dir);
const order = shuffled(2);
const modes = {
  getSync: async () => { let s = 0; for (let i = 0; i < N; i++) s += db.getSync(order[i]).length; return s; },
  'await getSync': async () => { let s = 0; for (let i = 0; i < N; i++) s += (await db.getSync(order[i])).length; return s; },
  'await get': async () => { let s = 0; for (let i = 0; i < N; i++) s += (await db.get(order[i])).length; return s; },
};
const ns = Object.fromEntries(Object.keys(modes).map((m) => [m, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const [m, run] of Object.entries(modes)) {
    const c0 = process.cpuUsage();
    if ((await run()) !== N * 100) throw new Error(`${m}: wrong values`);
    const c = process.cpuUsage(c0);
    ns[m].push(((c.user + c.system) * 1000) / N);
  }
}
await db.close();
fs.rmSync(dir, { recursive: true, force: true });
const best = {};
for (const [m, a] of Object.entries(ns)) {
  a.sort((x, y) => x - y);
  best[m] = a[0];
  console.log(`  ${m.padEnd(14)} best ${a[0].toFixed(0)} ns, median ${a[ROUNDS >> 1].toFixed(0)} ns per read (CPU)`);
}
console.log(`  await get ÷ getSync (best, as a rate): ${(best.getSync / best['await get']).toFixed(2)}x`);
