// Builds' point reads of a memtable compared in one process: each build
// loads run.mjs's data set (key Buffers are subarrays of one slab, read in
// a random permutation) into a memtable that does not rotate
// (`memtableSize` 256 MiB), then rounds alternate between the builds:
// every key once (present), and as many absent keys. Prints wall ns per
// read (medians; the first round is a warm-up) and each build's per-round
// ratio against the first build.
//   node benchmark/abmem.mjs KEYS ROUNDS BUILD_DIR...
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { makeData } from './common.mjs';
const require = createRequire(import.meta.url);
const N = Number(process.argv[2]); const R = Number(process.argv[3]); const builds = process.argv.slice(4);
const data = makeData({ n: N, valueSize: 100, scans: 10, scanLength: 100, batchSize: 1000, concurrency: 64, seed: 42 });
const absent = Array.from({ length: N }, (_, i) => Buffer.from('kez' + String(data.readOrder[i]).padStart(13, '0')));
const dbs = [], dirs = [];
for (const b of builds) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'abmem-')); dirs.push(dir);
  const db = await require(path.resolve(b, 'index.js')).Database.open(dir, { sync: false, memtableSize: 256 << 20, walSizeLimit: 1 << 30 });
  for (let lo = 0; lo < N; lo += 1000) { const ops = []; for (let i = lo; i < Math.min(N, lo + 1000); i++) ops.push({ type: 'put', key: data.keys[i], value: data.values[i] }); await db.batch(ops); }
  dbs.push(db);
}
const res = builds.map(() => ({ present: [], absent: [] }));
for (let r = 0; r < R; r++) for (let j = 0; j < dbs.length; j++) {
  const db = dbs[j];
  let t = process.hrtime.bigint(); let f = 0;
  for (let i = 0; i < N; i++) if (db.getSync(data.keys[data.readOrder[i]]) !== null) f++;
  const p = Number(process.hrtime.bigint() - t) / N; if (f !== N) throw new Error('missing');
  t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) if (db.getSync(absent[i]) !== null) throw new Error('found absent');
  const a = Number(process.hrtime.bigint() - t) / N;
  if (r > 0) { res[j].present.push(p); res[j].absent.push(a); }
}
const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
for (let j = 0; j < dbs.length; j++) console.log(builds[j], 'mem', dbs[j].stats().memtableBytes, 'present ns med', med(res[j].present).toFixed(0), 'absent ns med', med(res[j].absent).toFixed(0));
for (let j = 1; j < dbs.length; j++) for (const w of ['present', 'absent']) { const q = res[j][w].map((v, i) => v / res[0][w][i]); console.log(builds[j], '/', builds[0], w, 'per-round ratio median', med(q).toFixed(3)); }
for (const db of dbs) await db.close();
for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
