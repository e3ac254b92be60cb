// lmdb-js adapter (lmdb package, LMDB B+tree over mmap).
import { createRequire } from 'node:module';
import { windowed, windowedLatency, serialLatency, checkValue, checkCount, packageVersion, incremented, checkTxnCounters, runGetMany } from '../common.mjs';

const require = createRequire(import.meta.url);
let openLmdb;
let useDefaultDurability = false;

export const id = 'lmdb';
export const name = 'lmdb';
export const aliases = ['lmdb', 'lmdb-js'];

export async function init(opts = {}) {
  ({ open: openLmdb } = await import('lmdb'));
  useDefaultDurability = !!opts.lmdbSync;
  const version = packageVersion(require, 'lmdb');
  return {
    version,
    settings: [
      "open({ path, keyEncoding: 'binary', encoding: 'binary' }) — raw Buffer keys/values, no msgpack",
      useDefaultDurability
        ? 'lmdb default durability (--lmdb-sync): every commit is fsynced (overlappingSync on Linux)'
        : 'noSync: true — no fsync per commit (lmdb default would fsync every commit; see --lmdb-sync)',
      'fillsync64 / fillsync1: lmdb default durability whatever --lmdb-sync says (no noSync; overlappingSync on Linux: a write promise resolves after its txn is flushed)',
    ],
  };
}

export async function open(dir, { durable = false } = {}) {
  const options = { path: dir, keyEncoding: 'binary', encoding: 'binary' };
  if (!useDefaultDurability && !durable) options.noSync = true;
  return openLmdb(options);
}

export async function close(db) {
  await db.close();
}

export async function load(db, data) {
  fillBatchSync(db, data);
  await db.committed;
}

function fillBatchSync(db, { n, keys, values, batchSize }) {
  for (let lo = 0; lo < n; lo += batchSize) {
    const hi = Math.min(lo + batchSize, n);
    db.transactionSync(() => {
      for (let i = lo; i < hi; i++) db.put(keys[i], values[i]);
    });
  }
}

/** One read-modify-write transaction of the txn plan, inside an lmdb write txn. */
function rmw(db, data, t) {
  const { keys, txnStart, txnKeyIdx } = data;
  for (let j = txnStart[t]; j < txnStart[t + 1]; j++) {
    const k = keys[txnKeyIdx[j]];
    const v = db.get(k);
    checkValue(v, data, 'get in txn');
    db.put(k, incremented(v));
  }
}

function txnAfter(db, data) {
  checkTxnCounters(data, (k) => db.get(k));
}

export const workloads = {
  fillseq: [
    {
      variant: 'putSync',
      api: 'db.putSync(k, v) (one write txn per put)',
      run: (db, { n, keys, values }) => {
        for (let i = 0; i < n; i++) db.putSync(keys[i], values[i]);
      },
    },
    {
      variant: 'put',
      api: 'await db.put(k, v), 64 in flight (lmdb groups them into txns)',
      run: (db, { n, keys, values, concurrency }) => windowed(n, concurrency, (i) => db.put(keys[i], values[i])),
    },
  ],
  fillsync64: [
    {
      variant: 'put',
      api: 'durable default; await db.put(k, v), 64 in flight (lmdb groups them into txns)',
      run: async (db, { syncPuts, keys, values, concurrency }) => ({
        latenciesMs: await windowedLatency(syncPuts, concurrency, (i) => db.put(keys[i], values[i])),
      }),
    },
  ],
  fillsync1: [
    {
      variant: 'put',
      api: 'durable default; await db.put(k, v), one at a time',
      run: async (db, { sync1Puts, keys, values }) => ({
        latenciesMs: await serialLatency(sync1Puts, (i) => db.put(keys[i], values[i])),
      }),
    },
  ],
  txn1: [
    {
      variant: 'transactionSync',
      api: 'db.transactionSync(() => { db.get; db.put }), one at a time',
      run: (db, data) => {
        for (let t = 0; t < data.txns; t++) db.transactionSync(() => rmw(db, data, t));
      },
      after: txnAfter,
    },
  ],
  txn64: [
    {
      variant: 'transaction',
      api: 'await db.transaction(() => { db.get; db.put }), 64 in flight (callbacks of one event turn share an LMDB txn)',
      run: (db, data) => windowed(data.txns, data.concurrency, (t) => db.transaction(() => rmw(db, data, t))),
      after: txnAfter,
    },
  ],
  fillbatch: [
    {
      variant: 'transactionSync',
      api: 'db.transactionSync(() => 1000× db.put)',
      run: fillBatchSync,
    },
    {
      variant: 'batch',
      api: 'await db.batch(() => 1000× db.put)',
      run: async (db, { n, keys, values, batchSize }) => {
        for (let lo = 0; lo < n; lo += batchSize) {
          const hi = Math.min(lo + batchSize, n);
          await db.batch(() => {
            for (let i = lo; i < hi; i++) db.put(keys[i], values[i]);
          });
        }
      },
    },
  ],
  'readrandom-sync': [
    {
      variant: 'get',
      api: 'db.get(k) (synchronous)',
      run: (db, data) => {
        const { n, keys, readOrder } = data;
        for (let i = 0; i < n; i++) checkValue(db.get(keys[readOrder[i]]), data, 'get');
      },
    },
  ],
  'readrandom-async': [
    {
      variant: 'getAsync',
      api: 'await db.getAsync(k), 64 in flight (experimental API)',
      run: (db, data) => {
        const { n, keys, readOrder, concurrency } = data;
        return windowed(n, concurrency, async (i) => checkValue(await db.getAsync(keys[readOrder[i]]), data, 'getAsync'));
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
      variant: 'getRange',
      api: 'for (const { key, value } of db.getRange())',
      run: (db, data) => {
        let count = 0;
        for (const { key, value } of db.getRange()) {
          if (key.length !== data.keySize || value.length !== data.valueSize) throw new Error('bad entry');
          count++;
        }
        checkCount(count, data.n, 'getRange');
      },
    },
  ],
  scan100: [
    {
      variant: 'getRange',
      api: 'db.getRange({ start: k, limit: 100 })',
      run: (db, data) => {
        const { keys, scans, scanStarts, scanLength } = data;
        for (let s = 0; s < scans; s++) {
          let count = 0;
          for (const { value } of db.getRange({ start: keys[scanStarts[s]], limit: scanLength })) {
            if (value.length !== data.valueSize) throw new Error('bad entry');
            count++;
          }
          checkCount(count, scanLength, 'scan');
        }
      },
    },
  ],
};
