// Builds' write cost compared in one process: each round opens a fresh
// database per build and loads run.mjs's data set (16 B keys, 100 B
// values, key order) through `db.batch` of 1000 puts ("batch") or `db.put`
// with 64 in flight ("put"), builds alternating. Prints wall and CPU ns per
// put (medians; the first round is a warm-up) and each build's per-round
// ratio against the first build.
//   node benchmark/abfill.mjs KEYS ROUNDS batch|put BUILD_DIR... 
// (a build dir holds index.js: a copy of the repo root after `npm run build`)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { makeData } from './common.mjs';
const require = createRequire(import.meta.url);
const N = Number(process.argv[2]); const R = Number(process.argv[3]); const mode = process.argv[4]; const builds = process.argv.slice(5);
const data = makeData({ n: N, valueSize: 100, scans: 10, scanLength: 100, batchSize: 1000, concurrency: 64, seed: 42 });
const mods = builds.map((b) => require(path.resolve(b, 'index.js')));
const res = builds.map(() => []);
for (let r = 0; r < R; r++) for (let j = 0; j < builds.length; j++) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'abfill-'));
  const db = await mods[j].Database.open(dir, { sync: false });
  const t = process.hrtime.bigint(); const c0 = process.cpuUsage();
  if (mode === 'batch') {
    for (let lo = 0; lo < N; lo += 1000) { const ops = new Array(1000); for (let i = lo; i < lo + 1000; i++) ops[i - lo] = { type: 'put', key: data.keys[i], value: data.values[i] }; await db.batch(ops); }
  } else {
    let next = 0; const worker = async () => { while (next < N) { const i = next++; await db.put(data.keys[i], data.values[i]); } };
    await Promise.all(Array.from({ length: 64 }, worker));
  }
  const w = Number(process.hrtime.bigint() - t) / N; const c = process.cpuUsage(c0);
  await db.close(); fs.rmSync(dir, { recursive: true, force: true });
  if (r > 0) res[j].push([w, (c.user + c.system) * 1000 / N]);
}
const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
for (let j = 0; j < builds.length; j++) console.log(builds[j], mode, 'wall ns/op med', med(res[j].map((x) => x[0])).toFixed(0), '=>', (1e6 / med(res[j].map((x) => x[0]))).toFixed(0), 'K/s; cpu ns/op', med(res[j].map((x) => x[1])).toFixed(0));
for (let j = 1; j < builds.length; j++) console.log(builds[j], '/', builds[0], 'per-round wall ratio', med(res[j].map((v, i) => v[0] / res[0][i][0])).toFixed(3), 'cpu ratio', med(res[j].map((v, i) => v[1] / res[0][i][1])).toFixed(3));
