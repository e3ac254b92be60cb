// toondb-storage adapter (the napi-rs addon at the repo root, index.js).
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { windowed, checkValue, checkCount } from '../common.mjs';

const require = createRequire(import.meta.url);
// TOONDB_BENCH_ENTRY=/path/to/index.js benchmarks another build (e.g. a checkout of an older commit).
const ENTRY = process.env.TOONDB_BENCH_ENTRY
  ? path.resolve(process.env.TOONDB_BENCH_ENTRY)
  : path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../index.js');
let Database;

export const id = 'toondb';
export const name = 'toondb-storage';
export const aliases = ['toondb-storage', 'toondb'];

/** Load the binding; throws (with the loader's message) if it is not built yet. */
export async function init() {
  const mod = require(ENTRY);
  Database = mod.Database ?? mod.default?.Database;
  if (typeof Database?.open !== 'function') throw new Error('index.js loaded but exports no Database.open');
  const { version } = require(path.join(path.dirname(ENTRY), 'package.json'));
  return {
    version,
    settings: [
      'Database.open(dir, { sync: false }) — no fsync per write, default memtable size',
      ...(process.env.TOONDB_BENCH_ENTRY ? [`binding loaded from TOONDB_BENCH_ENTRY=${ENTRY}`] : []),
    ],
  };
}

export async function open(dir) {
  return Database.open(dir, { sync: false });
}

export async function close(db) {
  await db.close();
}

/** Untimed bulk load used before the read workloads. */
export async function load(db, data) {
  await fillBatch(db, data);
}

async function fillBatch(db, { n, keys, values, batchSize }) {
  for (let lo = 0; lo < n; lo += batchSize) {
    const hi = Math.min(lo + batchSize, n);
    const ops = new Array(hi - lo);
    for (let i = lo; i < hi; i++) ops[i - lo] = { type: 'put', key: keys[i], value: values[i] };
    await db.batch(ops);
  }
}

export const workloads = {
  fillseq: [
    {
      variant: 'put',
      api: 'await db.put(k, v), 64 in flight',
      run: (db, { n, keys, values, concurrency }) => windowed(n, concurrency, (i) => db.put(keys[i], values[i])),
    },
  ],
  fillbatch: [{ variant: 'batch', api: 'await db.batch(1000 put ops)', run: fillBatch }],
  'readrandom-sync': [
    {
      variant: 'getSync',
      api: 'db.getSync(k)',
      run: (db, data) => {
        const { n, keys, readOrder } = data;
        for (let i = 0; i < n; i++) checkValue(db.getSync(keys[readOrder[i]]), data, 'getSync');
      },
    },
  ],
  'readrandom-async': [
    {
      variant: 'get',
      api: 'await db.get(k), 64 in flight',
      run: (db, data) => {
        const { n, keys, readOrder, concurrency } = data;
        return windowed(n, concurrency, async (i) => checkValue(await db.get(keys[readOrder[i]]), data, 'get'));
      },
    },
  ],
  readseq: [
    {
      variant: 'iterator',
      api: 'for await (const [k, v] of db.iterator())',
      run: async (db, data) => {
        let count = 0;
        for await (const [k, v] of db.iterator()) {
          if (k.length !== data.keySize || v.length !== data.valueSize) throw new Error('bad entry');
          count++;
        }
        checkCount(count, data.n, 'iterator');
      },
    },
  ],
  scan100: [
    {
      variant: 'iterator',
      api: 'for await (... of db.iterator({ gte: k, limit: 100 }))',
      run: async (db, data) => {
        const { keys, scans, scanStarts, scanLength } = data;
        for (let s = 0; s < scans; s++) {
          let count = 0;
          for await (const [, v] of db.iterator({ gte: keys[scanStarts[s]], limit: scanLength })) {
            if (v.length !== data.valueSize) throw new Error('bad entry');
            count++;
          }
          checkCount(count, scanLength, 'scan');
        }
      },
    },
  ],
};
