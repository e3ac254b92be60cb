#!/usr/bin/env node
// Benchmark harness: runs the same workloads against toondb-storage and its
// peers (lmdb, classic-level, better-sqlite3) in one process, prints a
// Markdown table to stdout (progress goes to stderr) and writes the raw figures
// to benchmark/results/<date-time>.json and benchmark/results/latest.json.
//
//   node benchmark/run.mjs [--quick] [--runs N] [--only toondb,lmdb] [--workloads fillseq,readseq] ...
//
// See benchmark/README.md for what each workload does per store.
//
// Store adapter contract (benchmark/stores/*.mjs):
//   id, name, aliases             identifiers (--only matches id or any alias)
//   async init(options)           load the library; returns { version, settings: string[] };
//                                 throws when the store is unavailable (e.g. addon not built)
//   async open(dir, { durable })  open/create a database in the (empty or loaded) directory -> handle;
//                                 durable: true for the fsync-per-write workloads (fillsync64, fillsync1)
//   async close(handle)
//   async load(handle, data)      untimed bulk load of all keys (used before read workloads)
//   workloads                     { <workload>: [{ variant, api, run(handle, data), after? }, ...] | na(reason) }
//   baseline (optional)           true for a reference that is not a store (raw fdatasync): kept by --only,
//                                 and no n/a rows for the workloads it does not define
// run() is timed; it may return { latenciesMs: Float64Array (one per op), counters: { name: number } }.
// before(handle, data) runs untimed just before the timed loop (e.g. to pre-zero a file).
// after(handle, data) runs untimed before close (checks, db.stats()); it may return { counters }.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeData } from './common.mjs';
import { makeTxnPlan } from './common.mjs';
import { summarize, median, ratio, formatOps, formatRatio, latencySummary, formatMs } from './stats.mjs';

import * as toondb from './stores/toondb.mjs';
import * as lmdb from './stores/lmdb.mjs';
import * as classicLevel from './stores/classic-level.mjs';
import * as sqlite from './stores/sqlite.mjs';
import * as rawFdatasync from './stores/fdatasync.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ALL_STORES = [toondb, lmdb, classicLevel, sqlite, rawFdatasync];
const SUBJECT = toondb.id;

// ops(data) = number of operations one run performs (the numerator of ops/s).
// durable: stores are opened for fsync-per-write durability (open(dir, { durable: true })).
const WORKLOADS = {
  fillseq: { preload: false, ops: (d) => d.n, unit: 'puts', describe: (d) => `${d.n} puts in key order into an empty db` },
  fillbatch: {
    preload: false,
    ops: (d) => d.n,
    unit: 'puts',
    describe: (d) => `${d.n} puts in key order, in batches of ${d.batchSize}, into an empty db`,
  },
  fillsync64: {
    preload: false,
    durable: true,
    ops: (d) => d.syncPuts,
    unit: 'puts',
    describe: (d) => `${d.syncPuts} durable (fsynced) puts in key order into an empty db, ${d.concurrency} in flight (better-sqlite3: one at a time)`,
  },
  fillsync1: {
    preload: false,
    durable: true,
    ops: (d) => d.sync1Puts,
    unit: 'puts',
    describe: (d) => `${d.sync1Puts} durable (fsynced) puts in key order into an empty db, one at a time; baseline: raw write + fdatasync loop`,
  },
  'readrandom-sync': {
    preload: true,
    ops: (d) => d.n,
    unit: 'gets',
    describe: (d) => `${d.n} gets in random order through a synchronous API`,
  },
  'readrandom-async': {
    preload: true,
    ops: (d) => d.n,
    unit: 'gets',
    describe: (d) => `${d.n} gets in random order through an async API, ${d.concurrency} in flight`,
  },
  getmany100: {
    preload: true,
    ops: (d) => Math.floor(d.n / 100) * 100,
    unit: 'gets',
    describe: (d) => `${d.n} gets in random order as ${Math.floor(d.n / 100)} multi-gets of 100 keys, one at a time`,
  },
  readseq: { preload: true, ops: (d) => d.n, unit: 'entries', describe: (d) => `full forward iteration of ${d.n} entries` },
  scan100: {
    preload: true,
    ops: (d) => d.scans,
    unit: 'scans',
    describe: (d) => `${d.scans} range scans of ${d.scanLength} entries from random start keys`,
  },
  txn1: {
    preload: true,
    ops: (d) => d.txns,
    unit: 'txns',
    describe: (d) => `${d.txns} read-modify-write transactions of 1-4 keys from a hot set of ${d.hotKeys} keys, one at a time`,
  },
  txn64: {
    preload: true,
    ops: (d) => d.txns,
    unit: 'txns',
    describe: (d) => `${d.txns} read-modify-write transactions of 1-4 keys from a hot set of ${d.hotKeys} keys, ${d.concurrency} in flight`,
  },
};
// --workloads names that stand for several workloads.
const WORKLOAD_GROUPS = { txn: ['txn1', 'txn64'], fillsync: ['fillsync64', 'fillsync1'] };

// Counters shown in the notes column (median over runs, [min–max] when they differ); all are in the JSON.
const NOTE_COUNTERS = {
  fsyncsPerCommit: { label: 'fsyncs/commit', format: (x) => x.toFixed(3) },
  commitsPerGroup: { label: 'commits/group', format: (x) => x.toFixed(1) },
  opsPerCommit: { label: 'ops/commit', format: (x) => x.toFixed(1) },
  retries: { label: 'retries', format: (x) => String(Math.round(x)) },
  conflicts: { label: 'conflicts', format: (x) => String(Math.round(x)) },
};

const USAGE = `Usage: node benchmark/run.mjs [options]

  --runs N             runs per store × workload (default 3)
  --warmup N           untimed runs per store × workload before the timed ones, so every
                       store is measured with its JavaScript already optimized by V8 (default 1)
  --quick              smoke test: 20,000 keys, 1,000 scans, 2,000 / 200 durable puts, 1,000 txns
                       (unless the matching option is given)
  --keys N             number of keys (default 200000)
  --scans N            number of range scans for scan100 (default keys / 20)
  --sync-puts N        durable puts in fillsync64 (default 60000: at 20,000 a run of the fastest
                       store lasted ~0.1 s, short enough for warm-up to swing its result by 50%)
  --sync1-puts N       durable puts in fillsync1 (default 2000)
  --txns N             transactions per run in txn1 / txn64 (default 10000)
  --hot-keys N         keys the txn workloads pick from (default 10000, at most --keys)
  --only LIST          comma-separated stores: ${ALL_STORES.filter((s) => !s.baseline).map((s) => s.id).join(',')}
                       (the raw fdatasync baseline of fillsync1 always runs)
  --workloads LIST     comma-separated workloads: ${Object.keys(WORKLOADS).join(',')}
                       (txn = txn1,txn64; fillsync = fillsync64,fillsync1)
  --concurrency N      promises in flight for async workloads (default 64)
  --batch-size N       puts per batch in fillbatch / preload (default 1000)
  --seed N             PRNG seed for values and read order (default 42)
  --lmdb-sync          run lmdb with its default durability (fsync every commit) instead of noSync
  --no-json            do not write benchmark/results/*.json
  --json-file PATH     write the JSON there instead of benchmark/results/<time>.json and latest.json
  -h, --help           this text
`;

class UsageError extends Error {}

function parseCli() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '1' },
      quick: { type: 'boolean', default: false },
      keys: { type: 'string' },
      scans: { type: 'string' },
      'sync-puts': { type: 'string' },
      'sync1-puts': { type: 'string' },
      txns: { type: 'string' },
      'hot-keys': { type: 'string', default: '10000' },
      only: { type: 'string' },
      workloads: { type: 'string' },
      concurrency: { type: 'string', default: '64' },
      'batch-size': { type: 'string', default: '1000' },
      seed: { type: 'string', default: '42' },
      'lmdb-sync': { type: 'boolean', default: false },
      'no-json': { type: 'boolean', default: false },
      'json-file': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (name, v, min = 1) => {
    const x = Number(v);
    if (!Number.isInteger(x) || x < min) throw new UsageError(`--${name} must be an integer >= ${min} (got ${v})`);
    return x;
  };
  const keys = values.keys != null ? int('keys', values.keys, 100) : values.quick ? 20_000 : 200_000;
  const scans = values.scans != null ? int('scans', values.scans) : values.quick && values.keys == null ? 1_000 : Math.max(1, Math.floor(keys / 20));
  const quickOr = (name, quick, full) => (values[name] != null ? int(name, values[name]) : values.quick ? quick : full);
  const syncPuts = quickOr('sync-puts', 2_000, 60_000);
  const sync1Puts = quickOr('sync1-puts', 200, 2_000);
  const txns = quickOr('txns', 1_000, 10_000);
  const hotKeys = int('hot-keys', values['hot-keys']);
  const list = (s) => s.split(',').map((x) => x.trim().toLowerCase()).filter(Boolean);

  let stores = ALL_STORES;
  if (values.only) {
    const wanted = list(values.only);
    for (const w of wanted) {
      if (!ALL_STORES.some((s) => s.id === w || s.aliases.includes(w))) throw new UsageError(`--only: unknown store "${w}"`);
    }
    stores = ALL_STORES.filter((s) => s.baseline || wanted.some((w) => s.id === w || s.aliases.includes(w)));
  }
  let workloads = Object.keys(WORKLOADS);
  if (values.workloads) {
    const wanted = list(values.workloads).flatMap((w) => WORKLOAD_GROUPS[w] ?? [w]);
    for (const w of wanted) if (!WORKLOADS[w]) throw new UsageError(`--workloads: unknown workload "${w}"`);
    workloads = workloads.filter((w) => wanted.includes(w));
  }
  if (workloads.includes('fillsync64') && syncPuts > keys) throw new UsageError(`--sync-puts (${syncPuts}) must be <= --keys (${keys})`);
  if (workloads.includes('fillsync1') && sync1Puts > keys) throw new UsageError(`--sync1-puts (${sync1Puts}) must be <= --keys (${keys})`);
  // Baselines only when a selected workload uses them.
  stores = stores.filter((s) => !s.baseline || workloads.some((w) => s.workloads[w] && !s.workloads[w].na));
  return {
    runs: int('runs', values.runs),
    warmup: int('warmup', values.warmup, 0),
    quick: values.quick,
    keys,
    scans,
    syncPuts,
    sync1Puts,
    txns,
    hotKeys,
    concurrency: int('concurrency', values.concurrency),
    batchSize: int('batch-size', values['batch-size']),
    seed: int('seed', values.seed, 0),
    lmdbSync: values['lmdb-sync'],
    json: !values['no-json'],
    jsonFile: values['json-file'],
    stores,
    workloads,
  };
}

const log = (msg) => process.stderr.write(msg + '\n');

function exposeGc() {
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc');
  } catch {
    return () => {};
  }
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: HERE, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return null;
  }
}

const FS_TYPES = { 0xef53: 'ext2/3/4', 0x01021994: 'tmpfs', 0x9123683e: 'btrfs', 0x58465342: 'xfs', 0x794c7630: 'overlayfs', 0x2fc12fc1: 'zfs' };

function machineInfo() {
  const cpus = os.cpus();
  let tmpFs = null;
  try {
    const t = fs.statfsSync(os.tmpdir()).type;
    tmpFs = FS_TYPES[t] ?? `0x${t.toString(16)}`;
  } catch {}
  return {
    cpuModel: cpus[0]?.model?.trim() ?? 'unknown',
    cpuCount: cpus.length,
    totalMemMiB: Math.round(os.totalmem() / 2 ** 20),
    platform: os.platform(),
    release: os.release(),
    arch: os.arch(),
    node: process.version,
    v8: process.versions.v8,
    tmpdir: os.tmpdir(),
    tmpdirFs: tmpFs,
    gitCommit: gitCommit(),
  };
}

// Temp directories still present (removed on exit, even after Ctrl-C).
const liveDirs = new Set();
function cleanupDirs() {
  for (const d of liveDirs) {
    try {
      fs.rmSync(d, { recursive: true, force: true });
    } catch {}
  }
  liveDirs.clear();
}
process.on('exit', cleanupDirs);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanupDirs();
    process.exit(130);
  });
}

async function timedRun(store, variant, workload, data, gc) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `bench-${store.id}-`));
  liveDirs.add(dir);
  const openOptions = { durable: !!WORKLOADS[workload].durable };
  let handle = null;
  try {
    handle = await store.open(dir, openOptions);
    if (WORKLOADS[workload].preload) {
      await store.load(handle, data);
      await store.close(handle);
      handle = null;
      handle = await store.open(dir, openOptions);
    }
    if (variant.before) await variant.before(handle, data);
    gc();
    const t0 = process.hrtime.bigint();
    const out = await variant.run(handle, data);
    const t1 = process.hrtime.bigint();
    const seconds = Number(t1 - t0) / 1e9;
    const after = variant.after ? await variant.after(handle, data) : null;
    await store.close(handle);
    handle = null;
    const ops = WORKLOADS[workload].ops(data);
    const r = { ops, seconds, opsPerSec: ops / seconds };
    if (out?.latenciesMs) {
      if (out.latenciesMs.length !== ops) throw new Error(`adapter returned ${out.latenciesMs.length} latencies for ${ops} ops`);
      r.latency = latencySummary(out.latenciesMs);
    }
    const counters = { ...out?.counters, ...after?.counters };
    // The binding may group several puts into one engine commit: ops per commit relates the two.
    if (counters.commits > 0) counters.opsPerCommit = ops / counters.commits;
    if (Object.keys(counters).length) r.counters = counters;
    return r;
  } finally {
    if (handle) {
      try {
        await store.close(handle);
      } catch {}
    }
    fs.rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  }
}

function pad(s, n) {
  return String(s).padEnd(n);
}

function renderTable(header, rows, alignRight) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) =>
    '| ' + cells.map((c, i) => (alignRight[i] ? String(c).padStart(widths[i]) : pad(c, widths[i]))).join(' | ') + ' |';
  const sep = '|' + widths.map((w, i) => (alignRight[i] ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|';
  return [line(header), sep, ...rows.map(line)].join('\n');
}

async function main() {
  const opts = parseCli();
  const gc = exposeGc();
  const machine = machineInfo();
  const startedAt = new Date();
  const data = makeData({
    n: opts.keys,
    valueSize: 100,
    scans: opts.scans,
    scanLength: 100,
    batchSize: opts.batchSize,
    concurrency: opts.concurrency,
    seed: opts.seed,
  });
  data.syncPuts = opts.syncPuts;
  data.sync1Puts = opts.sync1Puts;
  if (opts.workloads.some((w) => w.startsWith('txn'))) {
    Object.assign(data, makeTxnPlan({ n: data.n, txns: opts.txns, hotKeys: opts.hotKeys, seed: opts.seed }));
  } else {
    Object.assign(data, { txns: opts.txns, hotKeys: Math.min(opts.hotKeys, data.n) });
  }
  const parameters = {
    keys: data.n,
    keySize: data.keySize,
    keyFormat: "'key' + 13-digit zero-padded index (16 bytes), passed as Buffer",
    valueSize: data.valueSize,
    valueFormat: 'pseudo-random bytes (incompressible), passed as Buffer',
    scans: data.scans,
    scanLength: data.scanLength,
    batchSize: data.batchSize,
    concurrency: data.concurrency,
    syncPuts: data.syncPuts,
    sync1Puts: data.sync1Puts,
    txns: data.txns,
    txnKeysPerTxn: '1-4 distinct keys, uniform',
    txnHotKeys: data.hotKeys,
    runs: opts.runs,
    warmupRuns: opts.warmup,
    seed: opts.seed,
    quick: opts.quick,
    lmdbSync: opts.lmdbSync,
    workloads: opts.workloads,
    stores: opts.stores.map((s) => s.id),
  };

  log(`# ${machine.cpuModel} × ${machine.cpuCount}, ${machine.totalMemMiB} MiB, node ${machine.node}, tmpdir ${machine.tmpdir} (${machine.tmpdirFs})`);
  log(`# ${data.n} keys × ${data.valueSize}-byte values, ${opts.runs} runs, workloads: ${opts.workloads.join(', ')}`);

  // Load the stores; an unavailable store (e.g. addon not built) is reported and skipped.
  const storeInfo = {};
  const available = [];
  for (const store of opts.stores) {
    try {
      const info = await store.init({ lmdbSync: opts.lmdbSync });
      storeInfo[store.id] = { name: store.name, available: true, ...info };
      available.push(store);
      log(`# ${store.name} ${info.version}`);
    } catch (e) {
      const msg = (e?.message ?? String(e)).split('\n')[0];
      storeInfo[store.id] = { name: store.name, available: false, error: msg };
      log(`${store.name}: not built (${msg})`);
    }
  }

  // results keyed by workload|store|variant, in display order.
  const results = new Map();
  const entry = (workload, store, variant) => {
    const key = `${workload}|${store.id}|${variant?.variant ?? ''}`;
    if (!results.has(key)) {
      results.set(key, {
        workload,
        store: store.id,
        storeName: store.name,
        variant: variant?.variant ?? null,
        api: variant?.api ?? null,
        na: null,
        runs: [],
        errors: [],
      });
    }
    return results.get(key);
  };
  // Fix the display order: workload, then store order, then variant order.
  for (const workload of opts.workloads) {
    for (const store of opts.stores) {
      const w = store.workloads[workload];
      if (store.baseline && (!w || w.na)) continue;
      if (!storeInfo[store.id].available) {
        entry(workload, store, null).na = 'not built';
        continue;
      }
      if (!w || w.na) entry(workload, store, null).na = w?.reason ?? 'not implemented';
      else for (const v of w) entry(workload, store, v);
    }
  }

  for (const workload of opts.workloads) {
    log(`\n## ${workload}: ${WORKLOADS[workload].describe(data)}`);
    // Untimed warm-up: the first runs in a process also measure V8 compiling
    // the store's JavaScript (in a cold 20,000-put fillsync64 run the JS side
    // of each write group took 100-140 µs, against ~70 µs once warm), which
    // would favour whichever store happened to run later.
    for (let w = 0; w < opts.warmup; w++) {
      for (const store of available) {
        for (const variant of store.workloads[workload] && !store.workloads[workload].na ? store.workloads[workload] : []) {
          try {
            await timedRun(store, variant, workload, data, gc);
          } catch {
            // A failing store fails its timed runs too, where it is reported.
          }
        }
      }
      log(`[${workload} warm-up ${w + 1}/${opts.warmup}] done`);
    }
    for (let run = 0; run < opts.runs; run++) {
      // Rotate the store order each run so no store always goes first (warm page cache, CPU boost, ...).
      const order = available.map((_, i) => available[(i + run) % available.length]);
      for (const store of order) {
        const w = store.workloads[workload];
        if (!w || w.na) continue;
        for (const variant of w) {
          const e = entry(workload, store, variant);
          const label = `${store.name}${w.length > 1 ? ` [${variant.variant}]` : ''}`;
          try {
            const r = await timedRun(store, variant, workload, data, gc);
            r.round = run + 1;
            e.runs.push(r);
            const lat = r.latency ? `  p50 ${formatMs(r.latency.p50Ms)} ms, p99 ${formatMs(r.latency.p99Ms)} ms` : '';
            const cnt = r.counters
              ? '  ' + Object.entries(NOTE_COUNTERS).filter(([k]) => r.counters[k] != null).map(([k, f]) => `${f.label} ${f.format(r.counters[k])}`).join(', ')
              : '';
            log(`[${workload} ${run + 1}/${opts.runs}] ${pad(label, 32)} ${formatOps(r.opsPerSec).padStart(11)} ${WORKLOADS[workload].unit}/s  (${r.seconds.toFixed(2)} s)${lat}${cnt}`);
          } catch (err) {
            const msg = (err?.message ?? String(err)).split('\n')[0];
            e.errors.push(msg);
            log(`[${workload} ${run + 1}/${opts.runs}] ${pad(label, 32)} ERROR: ${msg}`);
          }
        }
      }
    }
  }

  // Statistics and ratios (toondb-storage median ÷ each row's median, same run only).
  for (const e of results.values()) {
    e.stats = summarize(e.runs.map((r) => r.opsPerSec));
    // Latency: median over runs of each run's p50 / p99.
    const withLat = e.runs.filter((r) => r.latency);
    e.latency = withLat.length
      ? { p50Ms: summarize(withLat.map((r) => r.latency.p50Ms)), p99Ms: summarize(withLat.map((r) => r.latency.p99Ms)) }
      : null;
    const names = [...new Set(e.runs.flatMap((r) => Object.keys(r.counters ?? {})))];
    e.counters = names.length
      ? Object.fromEntries(names.map((k) => [k, summarize(e.runs.map((r) => r.counters?.[k]).filter((x) => Number.isFinite(x)))]))
      : null;
    e.notes = Object.entries(NOTE_COUNTERS)
      .filter(([k]) => e.counters?.[k]?.n)
      .map(([k, f]) => {
        const c = e.counters[k];
        return `${f.label} ${f.format(c.median)}` + (f.format(c.min) !== f.format(c.max) ? ` [${f.format(c.min)}–${f.format(c.max)}]` : '');
      })
      .join(', ');
  }
  for (const workload of opts.workloads) {
    const subject = [...results.values()].find((e) => e.workload === workload && e.store === SUBJECT && e.runs.length);
    for (const e of results.values()) {
      if (e.workload !== workload) continue;
      e.isBaseline = e === subject;
      e.ratioSubjectOverThis = e.isBaseline || !subject ? null : ratio(subject.stats.median, e.stats.median);
      if (Number.isNaN(e.ratioSubjectOverThis)) e.ratioSubjectOverThis = null;
    }
  }

  // ---- stdout report ----
  const out = [];
  out.push(`# toondb-storage benchmark — ${startedAt.toISOString()}`);
  out.push('');
  out.push(`- machine: ${machine.cpuModel} × ${machine.cpuCount} CPUs, ${machine.totalMemMiB} MiB RAM, ${machine.platform} ${machine.release}, node ${machine.node}`);
  out.push(`- tmpdir: ${machine.tmpdir} (${machine.tmpdirFs}); git ${machine.gitCommit ?? 'n/a'}`);
  out.push(
    `- data: ${data.n.toLocaleString('en-US')} keys × 16 B, values ${data.valueSize} B random; ${opts.runs} run${opts.runs === 1 ? '' : 's'} per cell after ${opts.warmup} untimed warm-up run${opts.warmup === 1 ? '' : 's'}, fresh temp dir per run; ` +
      `async workloads ${data.concurrency} in flight; batches of ${data.batchSize}; scan100 = ${data.scans.toLocaleString('en-US')} scans × ${data.scanLength}`,
  );
  const selected = new Set(opts.workloads);
  const durableRun = ['fillsync64', 'fillsync1'].some((w) => selected.has(w));
  if (durableRun) {
    out.push(
      `- durable: fillsync64 = ${data.syncPuts.toLocaleString('en-US')} puts, ${data.concurrency} in flight; fillsync1 = ${data.sync1Puts.toLocaleString('en-US')} puts, one at a time; ` +
        'every put fsynced before it resolves; these figures are bounded by this machine\'s fsync latency',
    );
  }
  if (selected.has('txn1') || selected.has('txn64')) {
    out.push(
      `- txn1 / txn64: ${data.txns.toLocaleString('en-US')} read-modify-write transactions per run, each 1-4 distinct keys (uniform) out of a hot set of ${data.hotKeys.toLocaleString('en-US')} of the ${data.n.toLocaleString('en-US')} preloaded keys; ` +
        'each key read and written back with its u64 counter (first 8 bytes) incremented; no fsync (same settings as the other non-durable workloads); counters checked after each run',
    );
  }
  out.push(`- figures are ops/s (scan100: scans/s; readseq: entries/s; txn*: transactions/s); "toondb ÷ store" = toondb-storage median ÷ that row's median (> 1: toondb faster)`);
  const showLatency = [...results.values()].some((e) => e.latency);
  const showNotes = [...results.values()].some((e) => e.notes);
  if (showLatency) out.push('- p50 / p99 ms: per-op latency (start → resolve), median over runs of each run\'s percentile');
  if (showNotes) {
    out.push(
      '- notes: toondb-storage db.stats() at the end of a run — fsyncs/commit = walSyncs / commits, commits/group = commits / commitGroups, ops/commit = timed ops / commits; ' +
        'retries = extra runs of the transact() callback after TOONDB_CONFLICT, conflicts = stats().conflicts (median over runs, [min–max])',
    );
  }
  out.push('');
  const header = ['workload', 'store', 'API', 'median', 'min', 'max', 'toondb ÷ store'];
  const align = [false, false, false, true, true, true, true];
  if (showLatency) {
    header.push('p50 ms', 'p99 ms');
    align.push(true, true);
  }
  if (showNotes) {
    header.push('notes');
    align.push(false);
  }
  const rows = [];
  for (const e of results.values()) {
    const storeLabel = e.variant && opts.stores.find((s) => s.id === e.store).workloads[e.workload]?.length > 1 ? `${e.storeName} [${e.variant}]` : e.storeName;
    let row;
    if (e.na) {
      row = [e.workload, storeLabel, `n/a — ${e.na}`, 'n/a', '', '', '—'];
    } else if (!e.runs.length) {
      row = [e.workload, storeLabel, e.api, 'error', '', '', '—'];
    } else {
      const ratioText = e.isBaseline ? '(baseline)' : formatRatio(e.ratioSubjectOverThis ?? NaN);
      row = [
        e.workload,
        storeLabel,
        e.api + (e.errors.length ? ` (${e.errors.length} failed runs)` : ''),
        formatOps(e.stats.median),
        formatOps(e.stats.min),
        formatOps(e.stats.max),
        ratioText,
      ];
    }
    if (showLatency) row.push(e.latency ? formatMs(e.latency.p50Ms.median) : '', e.latency ? formatMs(e.latency.p99Ms.median) : '');
    if (showNotes) row.push(e.notes ?? '');
    rows.push(row);
  }
  out.push(renderTable(header, rows, align));
  // fillsync1 requirement: toondb-storage one-at-a-time durable puts at >= 85% of the raw write + fdatasync rate.
  let fillsync1Summary = null;
  const raw = results.get(`fillsync1|${rawFdatasync.id}|${rawFdatasync.workloads.fillsync1[0].variant}`);
  const subj = [...results.values()].find((e) => e.workload === 'fillsync1' && e.store === SUBJECT && e.runs.length);
  if (raw?.runs.length && subj) {
    const frac = subj.stats.median / raw.stats.median;
    // The disk's speed drifts a lot between rounds, so also pair each toondb run with the raw run of the same round.
    const paired = subj.runs
      .map((r) => [r, raw.runs.find((x) => x.round === r.round)])
      .filter(([, x]) => x)
      .map(([r, x]) => r.opsPerSec / x.opsPerSec);
    fillsync1Summary = { toondbMedian: subj.stats.median, rawMedian: raw.stats.median, ratioOfMedians: frac, perRoundRatios: paired, target: 0.85 };
    out.push('');
    out.push(
      `fillsync1: toondb-storage median ${formatOps(subj.stats.median)} puts/s = ${(frac * 100).toFixed(1)}% of the raw write + fdatasync (appending) median ${formatOps(raw.stats.median)} ops/s ` +
        `(target >= 85%: ${frac >= 0.85 ? 'met' : 'NOT met'}); same-round ratios: ${paired.map((x) => `${(x * 100).toFixed(0)}%`).join(', ') || 'n/a'}` +
        (paired.length > 1 ? ` (median ${(median(paired) * 100).toFixed(1)}%)` : '') +
        '.',
    );
    const pre = results.get(`fillsync1|${rawFdatasync.id}|${rawFdatasync.workloads.fillsync1[1]?.variant}`);
    if (pre?.runs.length) {
      fillsync1Summary.prezeroedMedian = pre.stats.median;
      fillsync1Summary.ratioOfMediansPrezeroed = subj.stats.median / pre.stats.median;
      out.push(
        `           against the pre-zeroed file (overwriting zeros in place, like a preallocated WAL): ${(fillsync1Summary.ratioOfMediansPrezeroed * 100).toFixed(1)}% of ${formatOps(pre.stats.median)} ops/s.`,
      );
    }
  }
  out.push('');
  out.push('Store settings:');
  for (const store of opts.stores) {
    const info = storeInfo[store.id];
    if (!info.available) {
      out.push(`- ${info.name}: not built (${info.error})`);
      continue;
    }
    out.push(`- ${info.name} ${info.version}: ${info.settings.join('; ')}`);
  }
  const errored = [...results.values()].filter((e) => e.errors.length);
  if (errored.length) {
    out.push('');
    out.push('Errors:');
    for (const e of errored) out.push(`- ${e.workload} / ${e.storeName}${e.variant ? ` [${e.variant}]` : ''}: ${[...new Set(e.errors)].join('; ')}`);
  }
  out.push('');
  out.push('Noisy shared VM: compare ratios within one run, not absolute figures across runs or machines.');
  process.stdout.write(out.join('\n') + '\n');

  // ---- JSON ----
  if (opts.json) {
    const resultsDir = path.join(HERE, 'results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const doc = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine,
      parameters,
      stores: storeInfo,
      fillsync1VsRawFdatasync: fillsync1Summary,
      results: [...results.values()].map((e) => ({
        workload: e.workload,
        store: e.store,
        storeName: e.storeName,
        variant: e.variant,
        api: e.api,
        na: e.na,
        unit: WORKLOADS[e.workload].unit + '/s',
        runs: e.runs,
        errors: e.errors,
        stats: e.stats,
        latency: e.latency,
        counters: e.counters,
        ratioToondbOverThis: e.ratioSubjectOverThis ?? null,
      })),
    };
    const json = JSON.stringify(doc, null, 2) + '\n';
    if (opts.jsonFile) {
      fs.writeFileSync(opts.jsonFile, json);
      log(`\n# wrote ${opts.jsonFile}`);
    } else {
      const stamp = startedAt.toISOString().replace(/:/g, '-');
      const file = path.join(resultsDir, `${stamp}.json`);
      fs.writeFileSync(file, json);
      fs.writeFileSync(path.join(resultsDir, 'latest.json'), json);
      log(`\n# wrote ${path.relative(process.cwd(), file)} and ${path.relative(process.cwd(), path.join(resultsDir, 'latest.json'))}`);
    }
  }
}

main().catch((e) => {
  if (e instanceof UsageError || String(e?.code).startsWith('ERR_PARSE_ARGS')) {
    log(`error: ${e.message}\n(see node benchmark/run.mjs --help)`);
    process.exit(2);
  }
  log(e?.stack ?? String(e));
  process.exit(1);
});
