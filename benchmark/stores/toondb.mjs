// toondb-storage adapter (the napi-rs addon at the repo root, index.js).
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { windowed, windowedLatency, serialLatency, checkValue, checkCount, incremented, checkTxnCounters, runGetMany } from '../common.mjs';

const require = createRequire(import.meta.url);
// TOONDB_BENCH_ENTRY=/path/to/index.js benchmarks another build (e.g. a checkout of an older commit).
const ENTRY = process.env.TOONDB_BENCH_ENTRY
  ? path.resolve(process.env.TOONDB_BENCH_ENTRY)
  : path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../index.js');
// TOONDB_BENCH_OPTIONS='{"walSizeLimit":4194304}' adds open options (A/B of an option in one build).
const EXTRA_OPTIONS = JSON.parse(process.env.TOONDB_BENCH_OPTIONS || '{}');
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
      'fillsync64 / fillsync1: Database.open(dir, { sync: true }) — every put resolves after the WAL is fdatasynced',
      'txn1 / txn64: db.transact(fn) with its defaults (snapshot isolation, up to 10 retries on TOONDB_CONFLICT), sync: false',
      ...(process.env.TOONDB_BENCH_ENTRY ? [`binding loaded from TOONDB_BENCH_ENTRY=${ENTRY}`] : []),
      ...(process.env.TOONDB_BENCH_OPTIONS ? [`extra open options TOONDB_BENCH_OPTIONS=${JSON.stringify(EXTRA_OPTIONS)}`] : []),
    ],
  };
}

export async function open(dir, { durable = false } = {}) {
  return Database.open(dir, { ...EXTRA_OPTIONS, sync: durable });
}

/**
 * Group-commit counters at the end of a run (untimed): fsyncs per commit and
 * commits per WAL write group, from db.stats().
 */
function commitCounters(db) {
  const s = db.stats();
  return {
    counters: {
      commits: s.commits,
      commitGroups: s.commitGroups,
      walSyncs: s.walSyncs,
      fsyncsPerCommit: s.commits ? s.walSyncs / s.commits : NaN,
      commitsPerGroup: s.commitGroups ? s.commits / s.commitGroups : NaN,
    },
  };
}

/**
 * One read-modify-write transaction of the txn plan: read each key, write it
 * back with its counter incremented. transact() retries on TOONDB_CONFLICT (default: up to 10 times);
 * `attempts` counts every run of the callback (retries = attempts - txns).
 */
function rmwTxn(db, data, t, stats) {
  const { keys, txnStart, txnKeyIdx } = data;
  return db.transact(async (txn) => {
    stats.attempts++;
    for (let j = txnStart[t]; j < txnStart[t + 1]; j++) {
      const k = keys[txnKeyIdx[j]];
      const v = await txn.get(k);
      checkValue(v, data, 'txn.get');
      txn.put(k, incremented(v));
    }
  });
}

function txnAfter(db, data) {
  checkTxnCounters(data, (k) => db.getSync(k));
  return { counters: { conflicts: db.stats().conflicts } };
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
      after: commitCounters,
    },
  ],
  fillsync64: [
    {
      variant: 'put',
      api: 'open { sync: true }; await db.put(k, v), 64 in flight',
      run: async (db, { syncPuts, keys, values, concurrency }) => ({
        latenciesMs: await windowedLatency(syncPuts, concurrency, (i) => db.put(keys[i], values[i])),
      }),
      after: commitCounters,
    },
  ],
  fillsync1: [
    {
      variant: 'put',
      api: 'open { sync: true }; await db.put(k, v), one at a time',
      run: async (db, { sync1Puts, keys, values }) => ({
        latenciesMs: await serialLatency(sync1Puts, (i) => db.put(keys[i], values[i])),
      }),
      after: commitCounters,
    },
  ],
  txn1: [
    {
      variant: 'transact',
      api: 'await db.transact(async (txn) => { await txn.get; txn.put }), one at a time',
      run: async (db, data) => {
        const stats = { attempts: 0 };
        for (let t = 0; t < data.txns; t++) await rmwTxn(db, data, t, stats);
        return { counters: { retries: stats.attempts - data.txns } };
      },
      after: txnAfter,
    },
  ],
  txn64: [
    {
      variant: 'transact',
      api: 'await db.transact(async (txn) => { await txn.get; txn.put }), 64 in flight',
      run: async (db, data) => {
        const stats = { attempts: 0 };
        await windowed(data.txns, data.concurrency, (t) => rmwTxn(db, data, t, stats));
        return { counters: { retries: stats.attempts - data.txns } };
      },
      after: txnAfter,
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
  // The iterator supports both loops; `for...of` (synchronous, like lmdb's
  // getRange) comes first and is the baseline of the ratios.
  getmany100: [
    {
      variant: 'getMany',
      api: 'await db.getMany(keys), 100 keys per call',
      run: (db, data) => runGetMany(data, (keys) => db.getMany(keys), 'getMany'),
    },
  ],
  readseq: [
    {
      variant: 'for...of',
      api: 'for (const [k, v] of db.iterator())',
      run: (db, data) => {
        let count = 0;
        for (const [k, v] of db.iterator()) {
          if (k.length !== data.keySize || v.length !== data.valueSize) throw new Error('bad entry');
          count++;
        }
        checkCount(count, data.n, 'iterator');
      },
    },
    {
      variant: 'for await',
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
      variant: 'for...of',
      api: 'for (... of db.iterator({ gte: k, limit: 100 }))',
      run: (db, data) => {
        const { keys, scans, scanStarts, scanLength } = data;
        for (let s = 0; s < scans; s++) {
          let count = 0;
          for (const [, v] of db.iterator({ gte: keys[scanStarts[s]], limit: scanLength })) {
            if (v.length !== data.valueSize) throw new Error('bad entry');
            count++;
          }
          checkCount(count, scanLength, 'scan');
        }
      },
    },
    {
      variant: 'for await',
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
