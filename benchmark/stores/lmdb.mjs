// lmdb-js adapter (lmdb package, LMDB B+tree over mmap).
import { createRequire } from 'node:module';
import { windowed, checkValue, checkCount, packageVersion } from '../common.mjs';

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
    ],
  };
}

export async function open(dir) {
  const options = { path: dir, keyEncoding: 'binary', encoding: 'binary' };
  if (!useDefaultDurability) options.noSync = true;
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
