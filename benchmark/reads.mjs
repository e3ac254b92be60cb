#!/usr/bin/env node
// Issue 21 ("Reads as fast as memory allows") summary: runs every row's
// measurement as a child process of the existing benchmark scripts (each
// writes its figures with --json), then prints ONE Markdown table on stdout:
// row, what is measured, toondb figure, peer figure(s), ratio, target, met.
// The children's own output (per-round lines, their tables) goes to stderr.
//
//   node benchmark/reads.mjs                       # every row at the issue's sizes (~25-30 min here)
//   node benchmark/reads.mjs --skip 10m,memory     # leave out the long rows
//   node benchmark/reads.mjs --quick               # smoke test at small sizes (NOT the issue's sizes)
//   node benchmark/reads.mjs --run-from run        # run run.mjs's read workloads here instead of reading latest.json
//
// Steps (names for --skip / --only):
//   run     rows 1 (second line), 4 (64 in flight), 5: run.mjs's figures (200K keys, lmdb, classic-level,
//           better-sqlite3 in the same run). Default (--run-from auto): benchmark/results/latest.json when it
//           is a full (not --quick) run.mjs run of the last 3 hours with those workloads (`npm run bench` runs
//           run.mjs just before this script); otherwise run.mjs is run here on the read workloads only.
//   200k    rows 1 and 4 (one at a time): readpath.mjs --keys 200000 --state loaded --workloads present,async1
//   1m      row 2: readpath.mjs --keys 1000000 --reads 300000 --state compacted --workloads present,absent
//   10m     row 3: readpath.mjs --keys 10000000 --reads 1000000 --state loaded --workloads present,scattered, then
//           --keys 1000000 (scattered: the same reads with the pre-session-33 key layout, an info row)
//   large   row 6: largevalues.mjs --sizes 65536 --rounds 3
//   reopen  row 7: reopen.mjs --mib 1024 --tries 2, then --mib 256 --tries 2 (cold needs root)
//   memory  row 8: cachememory.mjs --mib 2048 (64 MiB cache)
//
// Writes benchmark/results/reads-<start time>.json and benchmark/results/reads-latest.json
// (every child's JSON, the rows, the steps' durations), unless --no-json.
// Run it under `flock /work/bench.lock` on the shared VM.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const STEPS = ['run', '200k', '1m', '10m', 'large', 'reopen', 'memory'];
const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    skip: { type: 'string', default: '' },
    only: { type: 'string' },
    'run-from': { type: 'string', default: 'auto' },
    rounds: { type: 'string' },
    dir: { type: 'string', default: os.tmpdir() },
    'no-json': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (opt.help) {
  process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\nimport ')[0].replace(/^#!.*\n/, '').replace(/^\/\/ ?/gm, '') + '\n');
  process.exit(0);
}
const list = (s) => s.split(',').map((x) => x.trim().toLowerCase()).filter(Boolean);
for (const s of [...list(opt.skip), ...list(opt.only ?? '')]) if (!STEPS.includes(s)) { console.error(`unknown step ${s} (steps: ${STEPS.join(', ')})`); process.exit(2); }
const steps = STEPS.filter((s) => (opt.only ? list(opt.only).includes(s) : true) && !list(opt.skip).includes(s));
const Q = opt.quick;
const ROUNDS = opt.rounds ?? (Q ? '1' : '3');

// Sizes: the issue's, or small ones for --quick.
const SZ = Q
  ? { k200: 20000, k1m: 50000, r1m: 50000, big: 200000, rbig: 100000, small: 20000, rsmall: 100000, lvBytes: 16 << 20, lvReads: 2000, reopenBig: 32, reopenSmall: 8, memMib: 64, memReads: 20000 }
  : { k200: 200000, k1m: 1000000, r1m: 300000, big: 10000000, rbig: 1000000, small: 1000000, rsmall: 1000000, lvBytes: 128 << 20, lvReads: 20000, reopenBig: 1024, reopenSmall: 256, memMib: 2048, memReads: 1000000 };

const log = (...a) => console.error(...a);
const startedAt = new Date();
const work = fs.mkdtempSync(path.join(opt.dir, 'reads-'));
let child = null;
const cleanup = () => { try { fs.rmSync(work, { recursive: true, force: true }); } catch {} };
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { if (child) try { process.kill(child.pid, 'SIGKILL'); } catch {} cleanup(); process.exit(130); });

// Runs `node [nodeArgs] script args --json <file>`; the child's stdout and stderr go to our stderr.
const durations = {};
async function runScript(label, nodeArgs, script, args, { jsonFlag = '--json' } = {}) {
  const out = path.join(work, `${label}.json`);
  const argv = [...nodeArgs, path.join(HERE, script), ...args, jsonFlag, out];
  log(`\n## [reads.mjs] ${label}: node ${argv.map((a) => path.relative(process.cwd(), a).startsWith('..') ? a : a.replace(HERE + '/', 'benchmark/')).join(' ')}`);
  const t0 = performance.now();
  const code = await new Promise((resolve) => {
    child = spawn(process.execPath, argv, { stdio: ['ignore', 2, 2], env: process.env });
    child.on('exit', (c, sig) => resolve(sig ? `signal ${sig}` : c));
  });
  child = null;
  const sec = (performance.now() - t0) / 1000;
  durations[label] = +sec.toFixed(1);
  log(`## [reads.mjs] ${label}: ${code === 0 ? 'done' : `FAILED (exit ${code})`} in ${sec.toFixed(0)} s; ${diskFree()}`);
  if (code !== 0) throw new Error(`${script} exited with ${code}`);
  return JSON.parse(fs.readFileSync(out, 'utf8'));
}
function diskFree() {
  try { return 'free disk ' + execFileSync('df', ['-h', '--output=avail', opt.dir]).toString().split('\n')[1].trim(); } catch { return ''; }
}

// ---- formatting ----
const fmtRate = (x) => (x == null || !Number.isFinite(x) ? 'n/a' : x >= 1e6 ? `${(x / 1e6).toFixed(2)}M/s` : x >= 1e4 ? `${(x / 1e3).toFixed(0)}K/s` : `${(x / 1e3).toFixed(1)}K/s`);
const fmtX = (x) => (x == null || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(2)}x`);
const fmtK = (n) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}K` : String(n));
const range = (s, f = fmtRate) => `${f(s.med)} (${f(s.min)}–${f(s.max)})`;

// ---- rows ----
const rows = [];
const raw = {};
const errors = {};
// met: true / false / null (not judged); figures are strings.
const row = (r) => rows.push({ source: '', ...r });
const missing = (id, what, target, reason) => row({ id, what, toondb: 'n/a', peer: 'n/a', ratio: 'n/a', target, met: null, note: reason });

// run.mjs figures
async function stepRun() {
  const needed = ['readrandom-sync', 'readrandom-async', 'getmany100', 'readseq', 'scan100'];
  let doc = null;
  let from = opt['run-from'];
  const latest = path.join(HERE, 'results', 'latest.json');
  if (from === 'auto' && !Q && fs.existsSync(latest)) {
    const d = JSON.parse(fs.readFileSync(latest, 'utf8'));
    const ageH = (Date.now() - Date.parse(d.startedAt)) / 3.6e6;
    const has = needed.every((w) => d.parameters?.workloads?.includes(w));
    if (!d.parameters?.quick && has && ageH < 3) { doc = d; from = `benchmark/results/latest.json (run.mjs started ${d.startedAt}, ${d.parameters.keys} keys, ${d.parameters.runs} runs)`; }
    else log(`[reads.mjs] not using ${latest}: ${d.parameters?.quick ? 'a --quick run' : !has ? 'lacks the read workloads' : `${ageH.toFixed(1)} h old`}`);
  } else if (from !== 'auto' && from !== 'run') {
    doc = JSON.parse(fs.readFileSync(from, 'utf8'));
    from = `${from} (run.mjs started ${doc.startedAt}, ${doc.parameters.keys} keys${doc.parameters.quick ? ', --quick' : ''})`;
  }
  if (!doc) {
    doc = await runScript('run', ['--expose-gc'], 'run.mjs', [...(Q ? ['--quick'] : []), '--workloads', needed.join(','), '--only', 'toondb,lmdb,classic-level,sqlite'], { jsonFlag: '--json-file' });
    from = `run.mjs run here (--workloads ${needed.join(',')}${Q ? ' --quick' : ''}; ${doc.parameters.keys} keys, ${doc.parameters.runs} runs)`;
  }
  raw.run = { from, startedAt: doc.startedAt, parameters: doc.parameters, results: doc.results.filter((r) => needed.includes(r.workload)) };
  const get = (w, store, variant) => doc.results.find((r) => r.workload === w && r.store === store && (!variant || r.variant === variant) && r.stats?.n);
  const n = fmtK(doc.parameters.keys);
  const src = `run.mjs (median of ${doc.parameters.runs} runs; peers in the same process)`;
  // Row 1 as run.mjs measures it (lmdb `db.get`, not getBinary).
  {
    const t = get('readrandom-sync', 'toondb'); const l = get('readrandom-sync', 'lmdb');
    if (t && l) {
      const ratio = t.stats.median / l.stats.median;
      row({ id: '1', what: `random \`getSync\`, ${n} keys (key-order load, reopened) vs lmdb \`get\``, toondb: fmtRate(t.stats.median), peer: `lmdb get ${fmtRate(l.stats.median)}`, ratio: fmtX(ratio), target: '≥ 1M/s and ≥ 2x lmdb', met: t.stats.median >= 1e6 && ratio >= 2, source: src });
    } else missing('1', `random getSync, ${n} keys (run.mjs)`, '≥ 1M/s and ≥ 2x lmdb', 'run.mjs figures missing');
  }
  {
    const t = get('readrandom-async', 'toondb');
    const peers = ['lmdb', 'classic-level'].map((s) => get('readrandom-async', s)).filter(Boolean);
    if (t && peers.length) {
      const best = peers.reduce((a, b) => (a.stats.median >= b.stats.median ? a : b));
      const ratio = t.stats.median / best.stats.median;
      row({ id: '4', what: `\`await db.get\`, 64 in flight, ${n} keys, vs the best peer`, toondb: fmtRate(t.stats.median), peer: peers.map((p) => `${p.store} ${p.variant} ${fmtRate(p.stats.median)}`).join('; '), ratio: `${fmtX(ratio)} (÷ ${best.store})`, target: '≥ 2x best peer', met: ratio >= 2, source: src });
    } else missing('4', '`await db.get`, 64 in flight', '≥ 2x best peer', 'run.mjs figures missing');
  }
  for (const [w, variant, peerVariant, what] of [
    ['getmany100', null, null, '`getMany` of 100 keys (keys/s)'],
    ['readseq', 'for...of', null, 'readseq: full iteration, `for...of db.iterator()` (entries/s)'],
    ['scan100', 'for...of', null, 'range scans of 100, `for...of db.iterator({ gte, limit: 100 })` (scans/s)'],
  ]) {
    const t = get(w, 'toondb', variant); const l = get(w, 'lmdb', peerVariant);
    if (t && l) {
      const ratio = t.stats.median / l.stats.median;
      row({ id: '5', what: `${what}, ${n} keys`, toondb: fmtRate(t.stats.median), peer: `lmdb ${l.variant} ${fmtRate(l.stats.median)}`, ratio: fmtX(ratio), target: '≥ 2x lmdb', met: ratio >= 2, source: src });
    } else missing('5', `${w} (run.mjs)`, '≥ 2x lmdb', 'run.mjs figures missing');
  }
}

function readpathArgs(keys, reads, state, workloads) {
  return ['--keys', String(keys), '--reads', String(reads), '--state', state, '--rounds', ROUNDS, '--workloads', workloads, '--dir', work];
}
const lmdbRatio = (w) => w.toondb.med / w.lmdb.med;

async function step200k() {
  const d = await runScript('200k', ['--expose-gc'], 'readpath.mjs', readpathArgs(SZ.k200, SZ.k200, 'loaded', 'present,async1'));
  raw['200k'] = d;
  const p = d.workloads.present; const a = d.workloads.async1;
  const n = fmtK(d.keys);
  const src = `readpath.mjs (${d.rounds} rounds, median (min–max))`;
  row({ id: '1', what: `random \`getSync\`, ${n} keys (random-order load, reopened) vs lmdb \`getBinary\``, toondb: range(p.toondb), peer: `lmdb getBinary ${range(p.lmdb)}`, ratio: fmtX(lmdbRatio(p)), target: '≥ 1M/s and ≥ 2x lmdb', met: p.toondb.med >= 1e6 && lmdbRatio(p) >= 2, source: src });
  const r = a.toondb.med / p.toondb.med;
  row({ id: '4', what: `\`await db.get\`, one at a time, ${n} keys, vs toondb \`getSync\` (same run)`, toondb: range(a.toondb), peer: `(toondb getSync ${fmtRate(p.toondb.med)}; lmdb await get ${fmtRate(a.lmdb.med)})`, ratio: `${fmtX(r)} of getSync`, target: '≥ 0.8x getSync', met: r >= 0.8, source: src });
}

async function step1m() {
  const d = await runScript('1m', ['--expose-gc'], 'readpath.mjs', readpathArgs(SZ.k1m, SZ.r1m, 'compacted', 'present,absent'));
  raw['1m'] = d;
  const p = d.workloads.present; const a = d.workloads.absent;
  const n = fmtK(d.keys);
  const src = `readpath.mjs (${d.rounds} rounds, median (min–max))`;
  row({ id: '2', what: `random \`getSync\`, ${n} keys, random-order load, compacted`, toondb: range(p.toondb), peer: `lmdb getBinary ${range(p.lmdb)}`, ratio: fmtX(lmdbRatio(p)), target: '≥ 2x lmdb', met: lmdbRatio(p) >= 2, source: src });
  row({ id: '2', what: `absent keys, \`getSync\`, same ${n}-key db`, toondb: range(a.toondb), peer: `lmdb getBinary ${range(a.lmdb)}`, ratio: fmtX(lmdbRatio(a)), target: '≥ 2x lmdb', met: lmdbRatio(a) >= 2, source: src });
  const blocks = a.toondbCountersPerRead?.dataBlocksRead;
  if (blocks) {
    // A mean of m data blocks per read means at most a fraction m of the reads read any.
    row({ id: '2', what: `absent keys: data blocks read per read (\`stats().dataBlocksRead\` delta ÷ reads), worst round`, toondb: `${blocks.max.toFixed(4)} blocks/read → ≥ ${((1 - Math.min(1, blocks.max)) * 100).toFixed(1)}% read none`, peer: '—', ratio: '—', target: '≥ 98% read no data block (≤ 0.02 blocks/read)', met: blocks.max <= 0.02, source: src });
  } else missing('2', 'absent keys: data blocks read per read', '≥ 98% read no data block', 'no dataBlocksRead counter in stats()');
}

async function step10m() {
  const big = await runScript('10m', ['--expose-gc', '--max-old-space-size=12000'], 'readpath.mjs', readpathArgs(SZ.big, SZ.rbig, 'loaded', 'present,scattered'));
  raw['10m'] = big;
  const small = await runScript('10m-base', ['--expose-gc'], 'readpath.mjs', readpathArgs(SZ.small, SZ.rsmall, 'loaded', 'present,scattered'));
  raw['10m-base'] = small;
  const b = big.workloads.present; const s = small.workloads.present;
  const src = `readpath.mjs, two processes (${big.rounds} rounds each)`;
  const growth = b.toondb.med / s.toondb.med;
  row({ id: '3', what: `cost growth: random \`getSync\`, ${fmtK(big.keys)} vs ${fmtK(small.keys)} keys, both random-order load, not compacted (levels ${JSON.stringify(big.toondbLevels)} / ${JSON.stringify(small.toondbLevels)} once background compaction was idle)`, toondb: `${fmtRate(b.toondb.med)} vs ${fmtRate(s.toondb.med)}`, peer: `(lmdb ${fmtRate(b.lmdb.med)} vs ${fmtRate(s.lmdb.med)}: ${fmtX(b.lmdb.med / s.lmdb.med)})`, ratio: `${fmtX(growth)} of the ${fmtK(small.keys)} rate`, target: '≥ 0.7x', met: growth >= 0.7, source: src });
  // The same reads with the key Buffers held as before session 33: one
  // N-long array made in key order, read at random, so the harness's own
  // cache and TLB misses grow with N (readpath.mjs, readKeys).
  const bs = big.workloads.scattered; const ss = small.workloads.scattered;
  row({ id: '3 (info)', what: `the same, with the key Buffers scattered over an N-long array (the harness until session 33)`, toondb: `${fmtRate(bs.toondb.med)} vs ${fmtRate(ss.toondb.med)}`, peer: `(lmdb ${fmtRate(bs.lmdb.med)} vs ${fmtRate(ss.lmdb.med)}: ${fmtX(bs.lmdb.med / ss.lmdb.med)}; at 10M toondb ÷ lmdb ${fmtX(lmdbRatio(bs))})`, ratio: `${fmtX(bs.toondb.med / ss.toondb.med)} of the ${fmtK(small.keys)} rate`, target: '—', met: null, source: src });
  row({ id: '3', what: `random \`getSync\`, ${fmtK(big.keys)} keys (same db) vs lmdb`, toondb: range(b.toondb), peer: `lmdb getBinary ${range(b.lmdb)}`, ratio: fmtX(lmdbRatio(b)), target: '≥ 2x lmdb', met: lmdbRatio(b) >= 2, source: `readpath.mjs (${big.rounds} rounds; load ${big.toondbLoadSec.toFixed(0)} s toondb, ${big.lmdbLoadSec.toFixed(0)} s lmdb)` });
}

async function stepLarge() {
  const d = await runScript('large', ['--expose-gc'], 'largevalues.mjs', ['--sizes', '65536', '--bytes', String(SZ.lvBytes), '--reads', String(SZ.lvReads), '--rounds', ROUNDS, '--dir', work]);
  raw.large = d;
  const s = d.sizes[0];
  const src = `largevalues.mjs (${d.rounds} rounds, ${s.keys} keys, ${s.reads} reads/round)`;
  for (const [mode, judged] of [['len wall', true], ['len per CPU-s', false], ['touch wall', false]]) {
    const m = s.modes[mode];
    const z = m['toondb zero-copy']; const c = m['toondb copy']; const l = m['lmdb getBinary'];
    const rc = z.med / c.med; const rl = z.med / l.med;
    const what = mode.startsWith('len') ? 'reads the length' : 'also reads 1 byte per 4 KiB page';
    row({ id: judged ? '6' : '6 (info)', what: `64 KiB values, random \`getSync\`, zero-copy vs copying (\`zeroCopyThreshold: Infinity\`); ${what}; ${mode.endsWith('CPU-s') ? 'per CPU-second' : 'wall clock'}`, toondb: `${fmtRate(z.med)} (copy ${fmtRate(c.med)})`, peer: `lmdb getBinary ${fmtRate(l.med)}`, ratio: `${fmtX(rc)} of copy; ${fmtX(rl)} of lmdb`, target: '≥ 5x copy and > 1x lmdb', met: judged ? rc >= 5 && rl > 1 : null, source: src });
  }
}

async function stepReopen() {
  for (const [mib, label] of [[SZ.reopenBig, 'reopen'], [SZ.reopenSmall, 'reopen-small']]) {
    const d = await runScript(label, [], 'reopen.mjs', ['--mib', String(mib), '--tries', Q ? '1' : '2', '--base', work]);
    raw[label] = d;
    const t = d.stores.find((x) => x.store === 'toondb'); const l = d.stores.find((x) => x.store === 'lmdb');
    const src = `reopen.mjs (best of ${d.tries}; ${t.mib.toFixed(0)} MiB acknowledged before SIGKILL)`;
    const sizeName = mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`;
    if (d.coldUnavailable) {
      row({ id: '7', what: `reopen after SIGKILL during a ${sizeName} load, cold (page cache dropped): open + first read`, toondb: 'n/a', peer: 'n/a', ratio: 'n/a', target: '≤ 25 ms and ≤ 2x lmdb', met: null, note: d.coldUnavailable, source: src });
    } else {
      const r = t.cold / l.cold;
      row({ id: '7', what: `reopen after SIGKILL during a ${sizeName} load, cold (page cache dropped): open + first read`, toondb: `${t.cold.toFixed(1)} ms`, peer: `lmdb ${l.cold.toFixed(1)} ms`, ratio: `${fmtX(r)} lmdb's time`, target: '≤ 25 ms and ≤ 2x lmdb', met: t.cold <= 25 && r <= 2, source: src });
    }
    row({ id: '7', what: `same, warm (files in the page cache)`, toondb: `${t.warm.toFixed(1)} ms`, peer: `lmdb ${l.warm.toFixed(1)} ms`, ratio: `${fmtX(t.warm / l.warm)} lmdb's time`, target: '≤ 10 ms', met: t.warm <= 10, source: src });
  }
}

async function stepMemory() {
  const d = await runScript('memory', [], 'cachememory.mjs', ['--mib', String(SZ.memMib), '--reads', String(SZ.memReads), '--dir', work]);
  raw.memory = d;
  row({ id: '8', what: `read all of a ${d.tableMiB} MiB LZ4 db (${fmtK(d.keys)} keys: full scan + ${fmtK(SZ.memReads)} random getSync) with a ${d.cacheMiB} MiB cache: peak RssAnon`, toondb: `${d.rssAnonPeakMiB.toFixed(0)} MiB (after open ${d.rssAnonAfterOpenMiB.toFixed(0)}, end ${d.rssAnonEndMiB.toFixed(0)})`, peer: '—', ratio: '—', target: '< 256 MiB', met: d.rssAnonPeakMiB < 256, source: 'cachememory.mjs (RssAnon from /proc/self/status, sampled every 50K reads)' });
}

const RUNNERS = { run: stepRun, '200k': step200k, '1m': step1m, '10m': step10m, large: stepLarge, reopen: stepReopen, memory: stepMemory };
// What each step measures, for the n/a lines of a skipped or failed step.
const WHAT = {
  run: [['1', 'random `getSync` vs lmdb `get` (run.mjs)'], ['4', '`await db.get`, 64 in flight, vs the best peer (run.mjs)'], ['5', '`getMany` of 100, readseq, range scans of 100 vs lmdb (run.mjs)']],
  '200k': [['1', 'random `getSync`, 200K keys, vs lmdb `getBinary` (readpath.mjs)'], ['4', '`await db.get` one at a time vs `getSync` (readpath.mjs)']],
  '1m': [['2', '1M keys compacted: present and absent keys vs lmdb, data blocks per absent read']],
  '10m': [['3', '10M keys: rate ÷ the 1M rate, and vs lmdb']],
  large: [['6', '64 KiB values: zero-copy vs copying `getSync` and lmdb']],
  reopen: [['7', 'reopen after SIGKILL during a 1 GiB / 256 MiB load, cold and warm']],
  memory: [['8', 'RssAnon reading a 2 GiB db with a 64 MiB cache']],
};
const t0 = performance.now();
log(`# [reads.mjs] steps: ${steps.join(', ')}${Q ? ' (--quick: small sizes, NOT the issue\'s)' : ''}; temp dir ${work}`);
for (const s of STEPS) {
  if (!steps.includes(s)) continue;
  try {
    await RUNNERS[s]();
  } catch (e) {
    errors[s] = (e?.message ?? String(e)).split('\n')[0];
    log(`[reads.mjs] step ${s} failed: ${e?.stack ?? e}`);
    for (const [id, what] of WHAT[s]) missing(id, `${what} (step \`${s}\`)`, '', `error: ${errors[s]}`);
  }
}
const totalSec = (performance.now() - t0) / 1000;
for (const s of STEPS) {
  if (steps.includes(s)) continue;
  for (const [id, what] of WHAT[s]) missing(id, `${what} (step \`${s}\`)`, '', 'skipped (--skip / --only)');
}

// ---- report ----
rows.sort((a, b) => parseInt(a.id) - parseInt(b.id));
const esc = (x) => String(x).replace(/\|/g, '\\|');
const out = [];
let commit = 'n/a';
try { commit = execFileSync('git', ['-C', HERE, 'rev-parse', '--short', 'HEAD']).toString().trim(); } catch {}
out.push('');
out.push(`# Issue 21 — reads: summary (${startedAt.toISOString()}, git ${commit})`);
out.push('');
if (Q) out.push('**--quick: small sizes for checking that the script works. NOT the issue\'s sizes; the met / not met column means nothing here.**\n');
out.push(`${os.cpus()[0]?.model ?? '?'} × ${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 20)} MiB RAM, node ${process.version}; toondb-storage vs lmdb (lmdb-js, \`noSync\`, binary encodings) and, in row 4, classic-level. Ratio = toondb ÷ peer for rates, toondb's time ÷ lmdb's for reopen. Rates are medians of the rounds (min–max).`);
out.push('');
out.push('| row | what is measured | toondb | peer(s) | ratio | target | met |');
out.push('|---|---|---|---|---|---|---|');
for (const r of rows) out.push(`| ${r.id} | ${esc(r.what)} | ${esc(r.toondb)} | ${esc(r.peer)} | ${esc(r.ratio)} | ${esc(r.target)} | ${r.met === true ? 'met' : r.met === false ? '**not met**' : esc(r.note ?? 'info')} |`);
out.push('');
out.push('Sources:');
for (const src of [...new Set(rows.filter((r) => r.source).map((r) => `row ${r.id.split(' ')[0]}: ${r.source}`))]) out.push(`- ${src}`);
if (raw.run) out.push(`- run.mjs figures from: ${raw.run.from}`);
out.push(`- steps' wall time (s): ${Object.entries(durations).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}; total ${totalSec.toFixed(0)} s`);
const judged = rows.filter((r) => r.met !== null);
out.push(`- ${judged.filter((r) => r.met).length} of ${judged.length} judged rows met${rows.some((r) => r.met === null && r.note && r.note !== 'info') ? `; not measured: ${rows.filter((r) => r.met === null && r.note).map((r) => `row ${r.id} ${r.what} (${r.note})`).join('; ')}` : ''}`);
out.push('- Shared 2-vCPU VM: timings swing from run to run; a single run is one sample, not a pass/fail test.');
process.stdout.write(out.join('\n') + '\n');

if (!opt['no-json']) {
  const dir = path.join(HERE, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const doc = { script: 'reads.mjs', startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), gitCommit: commit, quick: Q, steps, skipped: STEPS.filter((s) => !steps.includes(s)), durationsSec: durations, totalSec: +totalSec.toFixed(1), errors, rows, raw };
  const json = JSON.stringify(doc, null, 2) + '\n';
  const file = path.join(dir, `reads-${startedAt.toISOString().replace(/:/g, '-')}.json`);
  fs.writeFileSync(file, json);
  fs.writeFileSync(path.join(dir, 'reads-latest.json'), json);
  log(`# wrote ${path.relative(process.cwd(), file)} and benchmark/results/reads-latest.json`);
}
process.exit(Object.keys(errors).length ? 1 : 0);
