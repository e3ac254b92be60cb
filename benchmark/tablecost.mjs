// What writing tables costs: 1M random-key puts (16 B keys, 100 B values)
// into one 256 MiB memtable, then the flush of that memtable to a table and
// a full compact(), each timed in wall and process CPU time (the work runs
// on the maintenance thread; the process total includes it), and the bytes
// of the tables that result. For A/B comparisons of table-format changes:
//   node benchmark/tablecost.mjs [/path/to/build/index.js] [--keys N]
import { createRequire } from 'node:module';
import fs from 'node:fs'; import os from 'node:os'; import path from 'node:path';
const require = createRequire(import.meta.url);
const args = process.argv.slice(2);
const entry = args.find((a) => a.endsWith('.js')) ?? new URL('../index.js', import.meta.url).pathname;
const ki = args.indexOf('--keys');
const N = ki >= 0 ? Number(args[ki + 1]) : 1000000;
const { Database } = require(entry);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tablecost-'));
const db = await Database.open(dir, { memtableSize: 256 * 1024 * 1024 });
// Distinct keys in a scrambled order: i * 2654435761 mod 2^32 is a
// bijection on 32-bit numbers.
const val = Buffer.alloc(100, 7);
for (let i = 0; i < N; i += 1000) {
  const b = db.batch();
  for (let j = i; j < i + 1000; j++) b.put(Buffer.from('key' + String(Math.imul(j, 2654435761) >>> 0).padStart(13, '0')), val);
  await b.write();
}
async function timed(fn) {
  const c0 = process.cpuUsage(); const t0 = process.hrtime.bigint();
  await fn();
  const c = process.cpuUsage(c0);
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, cpu: (c.user + c.system) / 1000 };
}
const flush = await timed(() => db.flush());
const flushed = db.stats().tableBytes;
const compact = await timed(() => db.compact());
const s = db.stats();
console.log(`flush ${flush.ms.toFixed(0)} ms (cpu ${flush.cpu.toFixed(0)} ms) ${flushed} bytes; compact ${compact.ms.toFixed(0)} ms (cpu ${compact.cpu.toFixed(0)} ms) ${s.tableBytes} bytes = ${(s.tableBytes / N).toFixed(1)} B/key`);
await db.close(); fs.rmSync(dir, { recursive: true, force: true });
