// CPU time of 1M random-key puts (16 B keys, 100 B values) in batches of
// 1000 into a 256 MiB memtable (no flush or compaction runs, so the figure
// is the write path alone: JS, binding, WAL append, memtable inserts).
// Compares builds by CPU time rather than wall time, which on a shared VM
// moves with other tenants:
//   node benchmark/fillcpu.mjs /path/to/build/index.js
import { createRequire } from 'node:module';
import fs from 'node:fs'; import os from 'node:os'; import path from 'node:path';
const require = createRequire(import.meta.url);
const { Database } = require(process.argv[2] ?? new URL("../index.js", import.meta.url).pathname);
const N = 1000000;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fill-'));
const db = await Database.open(dir, { memtableSize: 256 * 1024 * 1024 });
let a = 7; const rnd = () => ((a = (a * 1103515245 + 12345) >>> 0) / 2 ** 32);
const val = Buffer.alloc(100, 7);
const keys = Array.from({ length: N }, (_, i) => Buffer.from('key' + String(Math.floor(rnd() * 1e12)).padStart(13, '0')));
const c0 = process.cpuUsage();
for (let i = 0; i < N; i += 1000) { const b = db.batch(); for (let j = i; j < i + 1000; j++) b.put(keys[j], val); await b.write(); }
const c = process.cpuUsage(c0);
console.log(`cpu ${((c.user + c.system) / 1000).toFixed(0)} ms for ${N} puts`);
await db.close(); fs.rmSync(dir, { recursive: true, force: true });
