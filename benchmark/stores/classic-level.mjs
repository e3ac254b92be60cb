// classic-level adapter (LevelDB via abstract-level).
import { createRequire } from 'node:module';
import { na, windowed, windowedLatency, serialLatency, checkValue, checkCount, packageVersion, runGetMany } from '../common.mjs';

const require = createRequire(import.meta.url);
let ClassicLevel;

export const id = 'classic-level';
export const name = 'classic-level';
export const aliases = ['classic-level', 'level', 'leveldb'];

export async function init() {
  ({ ClassicLevel } = await import('classic-level'));
  const version = packageVersion(require, 'classic-level');
  return {
    version,
    settings: [
      "new ClassicLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' }), LevelDB defaults (4 MiB write buffer, 8 MiB cache, snappy)",
      'writes with the default sync: false (no fsync per write)',
      'fillsync64 / fillsync1: db.put(k, v, { sync: true }) — LevelDB fsyncs its log before the put resolves',
    ],
  };
}

export async function open(dir) {
  const db = new ClassicLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  return db;
}

export async function close(db) {
  await db.close();
}

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

const SYNC = { sync: true };

export const workloads = {
  fillseq: [
    {
      variant: 'put',
      api: 'await db.put(k, v), 64 in flight',
      run: (db, { n, keys, values, concurrency }) => windowed(n, concurrency, (i) => db.put(keys[i], values[i])),
    },
  ],
  fillsync64: [
    {
      variant: 'put',
      api: 'await db.put(k, v, { sync: true }), 64 in flight',
      run: async (db, { syncPuts, keys, values, concurrency }) => ({
        latenciesMs: await windowedLatency(syncPuts, concurrency, (i) => db.put(keys[i], values[i], SYNC)),
      }),
    },
  ],
  fillsync1: [
    {
      variant: 'put',
      api: 'await db.put(k, v, { sync: true }), one at a time',
      run: async (db, { sync1Puts, keys, values }) => ({
        latenciesMs: await serialLatency(sync1Puts, (i) => db.put(keys[i], values[i], SYNC)),
      }),
    },
  ],
  txn1: na('classic-level has no transactions (only atomic batches)'),
  txn64: na('classic-level has no transactions (only atomic batches)'),
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
  getmany100: [
    {
      variant: 'getMany',
      api: 'await db.getMany(keys), 100 keys per call',
      run: (db, data) => runGetMany(data, (keys) => db.getMany(keys), 'getMany'),
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
    {
      variant: 'nextv',
      api: 'it = db.iterator(); await it.nextv(1000) until empty',
      run: async (db, data) => {
        let count = 0;
        const it = db.iterator();
        try {
          for (let entries; (entries = await it.nextv(1000)).length; ) {
            for (const [k, v] of entries) {
              if (k.length !== data.keySize || v.length !== data.valueSize) throw new Error('bad entry');
            }
            count += entries.length;
          }
        } finally {
          await it.close();
        }
        checkCount(count, data.n, 'nextv');
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
    {
      variant: 'all',
      api: 'await db.iterator({ gte: k, limit: 100 }).all()',
      run: async (db, data) => {
        const { keys, scans, scanStarts, scanLength } = data;
        for (let s = 0; s < scans; s++) {
          const entries = await db.iterator({ gte: keys[scanStarts[s]], limit: scanLength }).all();
          for (const [, v] of entries) if (v.length !== data.valueSize) throw new Error('bad entry');
          checkCount(entries.length, scanLength, 'scan');
        }
      },
    },
  ],
};
