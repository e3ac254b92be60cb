// What a random-order load costs in background writes: loads --mib MiB of
// 16-byte keys (random order, the same generator as reopen.mjs) and
// --value-size byte values in batches of 1000, then waits until flushes and
// compactions are done, and prints the load time, the flushes, the bytes
// flushes, WAL checkpoints and compactions wrote, the level-0 tables left and the write
// stalls. Compare options in one run with --toondb-options:
//
//   flock /work/bench.lock node benchmark/loadwrites.mjs --mib 1024 \
//     --toondb-options '{"walSizeLimit":4194304}'
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const ENTRY = process.env.TOONDB_BENCH_ENTRY ? path.resolve(process.env.TOONDB_BENCH_ENTRY) : path.resolve(here, '../index.js');
const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    'value-size': { type: 'string', default: '1000' },
    base: { type: 'string', default: os.tmpdir() },
    'toondb-options': { type: 'string', default: '{}' },
  },
});
const { Database } = require(ENTRY);
const VSIZE = Number(opt['value-size']);
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const dir = fs.mkdtempSync(path.join(opt.base, 'loadwrites-'));
const options = JSON.parse(opt['toondb-options']);
const db = await Database.open(dir, options);
const batches = Math.ceil((Number(opt.mib) * 2 ** 20) / (1000 * (16 + VSIZE)));
const v = Buffer.alloc(VSIZE);
const t0 = performance.now();
for (let b = 0; b < batches; b++) {
  const ops = [];
  for (let j = 0; j < 1000; j++) {
    const i = ((b * 1000 + j) * 2654435761) >>> 0;
    for (let q = 0; q < VSIZE; q += 4) v.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, q);
    ops.push({ type: 'put', key: keyOf(i), value: Buffer.from(v) });
  }
  await db.batch(ops);
}
const loadMs = performance.now() - t0;
const l0AtEnd = db.stats().levels[0]?.tables ?? 0;
for (let idle = 0; idle < 2; ) {
  await new Promise((r) => setTimeout(r, 50));
  const s = db.stats();
  idle = !s.maintenanceBusy && s.immutableMemtables === 0 ? idle + 1 : 0;
}
const s = db.stats();
const mb = (x) => (x / 1e6).toFixed(0);
console.log(JSON.stringify({ options, mib: Number(opt.mib), loadMs: Math.round(loadMs), mbPerSec: +((batches * 1000 * (16 + VSIZE)) / 1e3 / loadMs).toFixed(1), flushes: s.flushes, flushMB: mb(s.flushBytesWritten), checkpoints: s.checkpoints ?? 0, checkpointMB: mb(s.checkpointBytesWritten ?? 0), compactionMB: mb(s.compactionBytesWritten), l0AtEndOfLoad: l0AtEnd, l0Idle: s.levels[0]?.tables ?? 0, tables: s.tables, writeStalls: s.writeStalls, writeStallMs: Math.round(s.writeStallMicros / 1000), writeSlowdowns: s.writeSlowdowns }));
await db.close();
fs.rmSync(dir, { recursive: true, force: true });
