// better-sqlite3 adapter (SQLite, one WITHOUT ROWID table as a key-value store).
import path from 'node:path';
import { createRequire } from 'node:module';
import { na, checkValue, checkCount, packageVersion, syncLatency, incremented, checkTxnCounters } from '../common.mjs';

const require = createRequire(import.meta.url);
let Database;

export const id = 'sqlite';
export const name = 'better-sqlite3';
export const aliases = ['sqlite', 'better-sqlite3', 'sqlite3'];

export async function init() {
  Database = require('better-sqlite3');
  const version = packageVersion(require, 'better-sqlite3');
  const probe = new Database(':memory:');
  const sqliteVersion = probe.prepare('select sqlite_version()').pluck().get();
  probe.close();
  return {
    version: `${version} (SQLite ${sqliteVersion})`,
    settings: [
      'CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID',
      'pragma journal_mode = WAL, synchronous = NORMAL (no fsync per commit; fsync at WAL checkpoints)',
      'writes are INSERT OR REPLACE (put = upsert)',
      'fillsync64 / fillsync1: pragma synchronous = FULL (WAL fsynced at every commit), one autocommit INSERT per put',
    ],
  };
}

export async function open(dir, { durable = false } = {}) {
  const db = new Database(path.join(dir, 'kv.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma(durable ? 'synchronous = FULL' : 'synchronous = NORMAL');
  db.exec('CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID');
  return {
    db,
    insert: db.prepare('INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)'),
    get: db.prepare('SELECT v FROM kv WHERE k = ?').pluck(),
    update: db.prepare('UPDATE kv SET v = ? WHERE k = ?'),
    all: db.prepare('SELECT k, v FROM kv ORDER BY k').raw(),
    scan: db.prepare('SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?').raw(),
  };
}

export async function close(h) {
  h.db.close();
}

export async function load(h, data) {
  fillBatch(h, data);
}

function fillBatch(h, { n, keys, values, batchSize }) {
  const tx = h.db.transaction((lo, hi) => {
    for (let i = lo; i < hi; i++) h.insert.run(keys[i], values[i]);
  });
  for (let lo = 0; lo < n; lo += batchSize) tx(lo, Math.min(lo + batchSize, n));
}

/** A transaction function running one read-modify-write transaction of the txn plan. */
function rmwTxn(h, data) {
  const { keys, txnStart, txnKeyIdx } = data;
  return h.db.transaction((t) => {
    for (let j = txnStart[t]; j < txnStart[t + 1]; j++) {
      const k = keys[txnKeyIdx[j]];
      const v = h.get.get(k);
      checkValue(v, data, 'SELECT in txn');
      h.update.run(incremented(v), k);
    }
  });
}

function putOne(h, { keys, values }) {
  return (i) => h.insert.run(keys[i], values[i]);
}

export const workloads = {
  fillseq: [
    {
      variant: 'insert',
      api: 'prepared INSERT .run(k, v), autocommit (1 txn per put), WAL + synchronous=NORMAL',
      run: (h, { n, keys, values }) => {
        for (let i = 0; i < n; i++) h.insert.run(keys[i], values[i]);
      },
    },
  ],
  fillsync64: [
    {
      variant: 'insert',
      api: 'INSERT .run(k, v), autocommit, WAL + synchronous=FULL; synchronous API: one at a time, not 64 in flight',
      run: (h, data) => ({ latenciesMs: syncLatency(data.syncPuts, putOne(h, data)) }),
    },
  ],
  fillsync1: [
    {
      variant: 'insert',
      api: 'INSERT .run(k, v), autocommit, WAL + synchronous=FULL',
      run: (h, data) => ({ latenciesMs: syncLatency(data.sync1Puts, putOne(h, data)) }),
    },
  ],
  txn1: [
    {
      variant: 'transaction',
      api: 'db.transaction(() => { SELECT v; UPDATE kv SET v }) per txn, WAL + synchronous=NORMAL',
      run: (h, data) => {
        const tx = rmwTxn(h, data);
        for (let t = 0; t < data.txns; t++) tx(t);
      },
      after: (h, data) => checkTxnCounters(data, (k) => h.get.get(k)),
    },
  ],
  txn64: na('better-sqlite3 is synchronous: one transaction at a time (see txn1)'),
  fillbatch: [{ variant: 'transaction', api: 'db.transaction(1000× INSERT .run)', run: fillBatch }],
  'readrandom-sync': [
    {
      variant: 'get',
      api: 'prepared SELECT v WHERE k = ? .pluck().get(k)',
      run: (h, data) => {
        const { n, keys, readOrder } = data;
        for (let i = 0; i < n; i++) checkValue(h.get.get(keys[readOrder[i]]), data, 'get');
      },
    },
  ],
  'readrandom-async': na('better-sqlite3 has no asynchronous API'),
  getmany100: na('better-sqlite3 has no multi-get (one prepared SELECT per key is readrandom-sync)'),
  readseq: [
    {
      variant: 'iterate',
      api: 'SELECT k, v ORDER BY k .raw().iterate()',
      run: (h, data) => {
        let count = 0;
        for (const [k, v] of h.all.iterate()) {
          if (k.length !== data.keySize || v.length !== data.valueSize) throw new Error('bad entry');
          count++;
        }
        checkCount(count, data.n, 'iterate');
      },
    },
  ],
  scan100: [
    {
      variant: 'all',
      api: 'SELECT k, v WHERE k >= ? ORDER BY k LIMIT 100 .raw().all()',
      run: (h, data) => {
        const { keys, scans, scanStarts, scanLength } = data;
        for (let s = 0; s < scans; s++) {
          const rows = h.scan.all(keys[scanStarts[s]], scanLength);
          for (const [, v] of rows) if (v.length !== data.valueSize) throw new Error('bad entry');
          checkCount(rows.length, scanLength, 'scan');
        }
      },
    },
  ],
};
