// db.clear(range): the range delete (no `limit`: one range tombstone, no
// key read) against the key-by-key path (`limit` given: the keys are read
// and deleted in batches of 1000), for ranges of 10K, 100K and 1M keys.
// Each run loads a fresh database with the keys (16-byte keys, 100-byte
// values, in batches of 1000), flushes it to tables, then times one clear
// of the whole range and, after it, a get of a cleared key and a scan of
// the cleared range (the range delete leaves versions for compaction to
// reclaim; the scan steps over them).
//
//   flock /work/bench.lock node --expose-gc benchmark/clear.mjs --runs 3
//
// Prints min/median/max per (keys, path) in milliseconds over --runs runs.
// With --expose-gc a full GC runs before each timed step, so the garbage
// of loading a million keys is not collected inside one of them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const { Database } = require(path.resolve(here, '../index.js'));
const { values: opt } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    sizes: { type: 'string', default: '10000,100000,1000000' },
    base: { type: 'string', default: os.tmpdir() },
  },
});
const RUNS = Number(opt.runs);
const SIZES = opt.sizes.split(',').map(Number);
const keyOf = (i) => Buffer.from('key' + String(i).padStart(13, '0'));
const value = Buffer.alloc(100, 7);

async function loaded(n) {
  const dir = fs.mkdtempSync(path.join(opt.base, 'toondb-clear-'));
  const db = await Database.open(dir);
  for (let i = 0; i < n; i += 1000) {
    const ops = [];
    for (let j = i; j < Math.min(n, i + 1000); j++) ops.push({ type: 'put', key: keyOf(j), value });
    await db.batch(ops);
  }
  await db.flush();
  return { db, dir };
}

const settle = () => globalThis.gc?.();
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
const stat = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return `${s[0].toFixed(2)} / ${s[Math.floor(s.length / 2)].toFixed(2)} / ${s[s.length - 1].toFixed(2)}`;
};

const rows = [];
for (const n of SIZES) {
  const times = { range: [], keyByKey: [], getAfter: [], scanAfter: [] };
  for (let r = 0; r < RUNS; r++) {
    for (const mode of ['range', 'keyByKey']) {
      const { db, dir } = await loaded(n);
      const range = { gte: keyOf(0), lt: keyOf(n) };
      settle();
      const t0 = process.hrtime.bigint();
      if (mode === 'range') await db.clear(range);
      else await db.clear({ ...range, limit: n });
      times[mode].push(ms(t0));
      if (mode === 'range') {
        settle();
        let t = process.hrtime.bigint();
        if (db.getSync(keyOf(n >> 1)) !== null) throw new Error('a cleared key is still there');
        times.getAfter.push(ms(t));
        settle();
        t = process.hrtime.bigint();
        const left = await db.keys(range).all();
        if (left.length !== 0) throw new Error(`${left.length} cleared keys still listed`);
        times.scanAfter.push(ms(t));
      }
      await db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  rows.push({ n, ...times });
  console.log(`${n} keys (ms, min / median / max over ${RUNS} runs)`);
  console.log(`  clear, range delete:        ${stat(times.range)}`);
  console.log(`  clear, key by key (limit):  ${stat(times.keyByKey)}`);
  console.log(`  after it: get of a cleared key ${stat(times.getAfter)}, scan of the range ${stat(times.scanAfter)}`);
}
