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
//   async open(dir)               open/create a database in the (empty or loaded) directory -> handle
//   async close(handle)
//   async load(handle, data)      untimed bulk load of all keys (used before read workloads)
//   workloads                     { <workload>: [{ variant, api, run(handle, data) }, ...] | na(reason) }

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeData } from './common.mjs';
import { summarize, ratio, formatOps, formatRatio } from './stats.mjs';

import * as toondb from './stores/toondb.mjs';
import * as lmdb from './stores/lmdb.mjs';
import * as classicLevel from './stores/classic-level.mjs';
import * as sqlite from './stores/sqlite.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ALL_STORES = [toondb, lmdb, classicLevel, sqlite];
const SUBJECT = toondb.id;

// ops(data) = number of operations one run performs (the numerator of ops/s).
const WORKLOADS = {
  fillseq: { preload: false, ops: (d) => d.n, unit: 'puts', describe: (d) => `${d.n} puts in key order into an empty db` },
  fillbatch: {
    preload: false,
    ops: (d) => d.n,
    unit: 'puts',
    describe: (d) => `${d.n} puts in key order, in batches of ${d.batchSize}, into an empty db`,
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
  readseq: { preload: true, ops: (d) => d.n, unit: 'entries', describe: (d) => `full forward iteration of ${d.n} entries` },
  scan100: {
    preload: true,
    ops: (d) => d.scans,
    unit: 'scans',
    describe: (d) => `${d.scans} range scans of ${d.scanLength} entries from random start keys`,
  },
};

const USAGE = `Usage: node benchmark/run.mjs [options]

  --runs N             runs per store × workload (default 3)
  --quick              smoke test: 20,000 keys and 1,000 scans (unless --keys/--scans given)
  --keys N             number of keys (default 200000)
  --scans N            number of range scans for scan100 (default keys / 20)
  --only LIST          comma-separated stores: ${ALL_STORES.map((s) => s.id).join(',')}
  --workloads LIST     comma-separated workloads: ${Object.keys(WORKLOADS).join(',')}
  --concurrency N      promises in flight for async workloads (default 64)
  --batch-size N       puts per batch in fillbatch / preload (default 1000)
  --seed N             PRNG seed for values and read order (default 42)
  --lmdb-sync          run lmdb with its default durability (fsync every commit) instead of noSync
  --no-json            do not write benchmark/results/*.json
  -h, --help           this text
`;

class UsageError extends Error {}

function parseCli() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      quick: { type: 'boolean', default: false },
      keys: { type: 'string' },
      scans: { type: 'string' },
      only: { type: 'string' },
      workloads: { type: 'string' },
      concurrency: { type: 'string', default: '64' },
      'batch-size': { type: 'string', default: '1000' },
      seed: { type: 'string', default: '42' },
      'lmdb-sync': { type: 'boolean', default: false },
      'no-json': { type: 'boolean', default: false },
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
  const list = (s) => s.split(',').map((x) => x.trim().toLowerCase()).filter(Boolean);

  let stores = ALL_STORES;
  if (values.only) {
    const wanted = list(values.only);
    for (const w of wanted) {
      if (!ALL_STORES.some((s) => s.id === w || s.aliases.includes(w))) throw new UsageError(`--only: unknown store "${w}"`);
    }
    stores = ALL_STORES.filter((s) => wanted.some((w) => s.id === w || s.aliases.includes(w)));
  }
  let workloads = Object.keys(WORKLOADS);
  if (values.workloads) {
    const wanted = list(values.workloads);
    for (const w of wanted) if (!WORKLOADS[w]) throw new UsageError(`--workloads: unknown workload "${w}"`);
    workloads = workloads.filter((w) => wanted.includes(w));
  }
  return {
    runs: int('runs', values.runs),
    quick: values.quick,
    keys,
    scans,
    concurrency: int('concurrency', values.concurrency),
    batchSize: int('batch-size', values['batch-size']),
    seed: int('seed', values.seed, 0),
    lmdbSync: values['lmdb-sync'],
    json: !values['no-json'],
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
  let handle = null;
  try {
    handle = await store.open(dir);
    if (WORKLOADS[workload].preload) {
      await store.load(handle, data);
      await store.close(handle);
      handle = null;
      handle = await store.open(dir);
    }
    gc();
    const t0 = process.hrtime.bigint();
    await variant.run(handle, data);
    const t1 = process.hrtime.bigint();
    const seconds = Number(t1 - t0) / 1e9;
    await store.close(handle);
    handle = null;
    const ops = WORKLOADS[workload].ops(data);
    return { ops, seconds, opsPerSec: ops / seconds };
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
    runs: opts.runs,
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
      if (!storeInfo[store.id].available) {
        entry(workload, store, null).na = 'not built';
        continue;
      }
      const w = store.workloads[workload];
      if (!w || w.na) entry(workload, store, null).na = w?.reason ?? 'not implemented';
      else for (const v of w) entry(workload, store, v);
    }
  }

  for (const workload of opts.workloads) {
    log(`\n## ${workload}: ${WORKLOADS[workload].describe(data)}`);
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
            e.runs.push(r);
            log(`[${workload} ${run + 1}/${opts.runs}] ${pad(label, 32)} ${formatOps(r.opsPerSec).padStart(11)} ${WORKLOADS[workload].unit}/s  (${r.seconds.toFixed(2)} s)`);
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
  for (const e of results.values()) e.stats = summarize(e.runs.map((r) => r.opsPerSec));
  for (const workload of opts.workloads) {
    const subject = [...results.values()].find((e) => e.workload === workload && e.store === SUBJECT && e.runs.length);
    for (const e of results.values()) {
      if (e.workload !== workload) continue;
      e.ratioSubjectOverThis = e.store === SUBJECT || !subject ? null : ratio(subject.stats.median, e.stats.median);
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
    `- data: ${data.n.toLocaleString('en-US')} keys × 16 B, values ${data.valueSize} B random; ${opts.runs} run${opts.runs === 1 ? '' : 's'} per cell, fresh temp dir per run; ` +
      `async workloads ${data.concurrency} in flight; batches of ${data.batchSize}; scan100 = ${data.scans.toLocaleString('en-US')} scans × ${data.scanLength}`,
  );
  out.push(`- figures are ops/s (scan100: scans/s; readseq: entries/s); "toondb ÷ store" = toondb-storage median ÷ that row's median (> 1: toondb faster)`);
  out.push('');
  const header = ['workload', 'store', 'API', 'median', 'min', 'max', 'toondb ÷ store'];
  const rows = [];
  for (const e of results.values()) {
    const storeLabel = e.variant && opts.stores.find((s) => s.id === e.store).workloads[e.workload]?.length > 1 ? `${e.storeName} [${e.variant}]` : e.storeName;
    if (e.na) {
      rows.push([e.workload, storeLabel, `n/a — ${e.na}`, 'n/a', '', '', '—']);
    } else if (!e.runs.length) {
      rows.push([e.workload, storeLabel, e.api, 'error', '', '', '—']);
    } else {
      const ratioText = e.store === SUBJECT ? '(baseline)' : formatRatio(e.ratioSubjectOverThis ?? NaN);
      rows.push([
        e.workload,
        storeLabel,
        e.api + (e.errors.length ? ` (${e.errors.length} failed runs)` : ''),
        formatOps(e.stats.median),
        formatOps(e.stats.min),
        formatOps(e.stats.max),
        ratioText,
      ]);
    }
  }
  out.push(renderTable(header, rows, [false, false, false, true, true, true, true]));
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
        ratioToondbOverThis: e.ratioSubjectOverThis ?? null,
      })),
    };
    const json = JSON.stringify(doc, null, 2) + '\n';
    const stamp = startedAt.toISOString().replace(/:/g, '-');
    const file = path.join(resultsDir, `${stamp}.json`);
    fs.writeFileSync(file, json);
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), json);
    log(`\n# wrote ${path.relative(process.cwd(), file)} and ${path.relative(process.cwd(), path.join(resultsDir, 'latest.json'))}`);
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
