// Two builds' random `getSync` compared in one process: each build opens
// its own database holding the same keys (16 B, 100 B values, loaded in
// random order; flushed, compacted and reopened unless --state loaded),
// then rounds alternate between the builds over every key once in a fresh
// random order. Prints CPU ns per read (process.cpuUsage) and wall-clock
// rate, min and median per build. Within one process both builds see the
// same VM minute, so their ratio means more than two separate runs.
//   node benchmark/abget.mjs A/index.js B/index.js [--keys 1000000]
//        [--rounds 9] [--state compacted|loaded] [--absent]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { permutation } from './common.mjs';

const require = createRequire(import.meta.url);
const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    keys: { type: 'string', default: '1000000' },
    rounds: { type: 'string', default: '9' },
    state: { type: 'string', default: 'compacted' },
    absent: { type: 'boolean', default: false },
  },
});
if (positionals.length < 1) throw new Error('usage: abget.mjs A/index.js [B/index.js ...]');
const N = Number(opt.keys);
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const perm = permutation;
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'abget-'));
const load = perm(N, 1);
// The probe keys are made in load order and read in other orders, so each
// read's key Buffer is as cold as an application's would be.
const probe = Array.from({ length: N }, (_, i) => keyOf(2 * load[i] + (opt.absent ? 1 : 0)));
const value = Buffer.alloc(100, 1);
const builds = [];
for (const [n, entry] of positionals.entries()) {
  const { Database } = require(path.resolve(entry));
  const dir = path.join(base, String(n));
  let db = await Database.open(dir);
  for (let i = 0; i < N; i += 1000) {
    const ops = [];
    for (let m = i; m < Math.min(N, i + 1000); m++) ops.push({ type: 'put', key: keyOf(2 * load[m]), value });
    await db.batch(ops);
  }
  if (opt.state === 'compacted') {
    await db.flush();
    await db.compact();
  }
  await db.close();
  db = await Database.open(dir);
  // Both builds read a settled tree: automatic compaction finished.
  for (let idle = 0; idle < 3; ) {
    const st = db.stats();
    idle = st.maintenanceBusy || st.immutableMemtables > 0 ? 0 : idle + 1;
    await new Promise((r) => setTimeout(r, 50));
  }
  builds.push({ entry, db, ns: [], rate: [] });
}
for (const b of builds) console.log(`${b.entry}: levels ${JSON.stringify(b.db.stats().levels.map((l) => l.tables))}`);
for (let r = 0; r < Number(opt.rounds); r++) {
  const order = perm(N, 100 + r);
  for (const b of r % 2 ? [...builds].reverse() : builds) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let found = 0;
    for (let i = 0; i < N; i++) if (b.db.getSync(probe[order[i]]) != null) found++;
    const wall = performance.now() - t0;
    const c = process.cpuUsage(c0);
    if (found !== (opt.absent ? 0 : N)) throw new Error(`${b.entry}: found ${found} of ${N}`);
    b.ns.push(((c.user + c.system) * 1000) / N);
    b.rate.push(N / wall * 1000);
  }
}
const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
for (const b of builds) {
  const ns = [...b.ns].sort((x, y) => x - y);
  console.log(`${b.entry}: CPU ns/read min ${ns[0].toFixed(0)} median ${med(ns).toFixed(0)}; rate median ${(med(b.rate) / 1000).toFixed(0)}K/s`);
  await b.db.close();
}
if (builds.length === 2) {
  console.log(`B ÷ A CPU ns: min ${(Math.min(...builds[1].ns) / Math.min(...builds[0].ns)).toFixed(3)}, median ${(med(builds[1].ns) / med(builds[0].ns)).toFixed(3)}`);
}
fs.rmSync(base, { recursive: true, force: true });
