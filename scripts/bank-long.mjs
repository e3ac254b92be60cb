#!/usr/bin/env node
// The long run of the Node bank test (__test__/transactions.test.mjs):
// worker threads move money between accounts with db.transact while the
// main thread sums all balances, over and over, in snapshots, read-only
// transactions and iterators. Every sum must be exact, and at the end every
// balance must equal its initial value plus the net of the transfers the
// workers committed. Prints progress, then a summary; exits 1 on a failure.
//
// usage: node scripts/bank-long.mjs [seconds=60] [--workers 3] [--accounts 32]
//          [--in-flight 32] [--isolation snapshot|serializable]
//          [--memtable-kb 64] [--seed N] [--dir PATH]
//
// Uses the addon at the repository root (build it first; a release build,
// `npm run build`, runs many times faster than a debug one).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { runBank } from '../__test__/fixtures/bank-worker.mjs'

function parseArgs(argv) {
  const o = {
    seconds: 60,
    workers: 3,
    accounts: 32,
    inFlight: 32,
    isolation: 'snapshot',
    memtableKb: 64,
    seed: undefined,
    dir: undefined,
  }
  const names = {
    '--workers': 'workers',
    '--accounts': 'accounts',
    '--in-flight': 'inFlight',
    '--isolation': 'isolation',
    '--memtable-kb': 'memtableKb',
    '--seed': 'seed',
    '--dir': 'dir',
  }
  const rest = [...argv]
  while (rest.length > 0) {
    const a = rest.shift()
    if (a === '-h' || a === '--help') {
      console.log(fs.readFileSync(new URL(import.meta.url), 'utf8').split('\n').slice(1, 15).join('\n'))
      process.exit(0)
    }
    if (names[a]) {
      const v = rest.shift()
      if (v === undefined) throw new Error(`${a} needs a value`)
      o[names[a]] = ['isolation', 'dir'].includes(names[a]) ? v : Number(v)
    } else if (/^\d+(\.\d+)?$/.test(a)) {
      o.seconds = Number(a)
    } else {
      throw new Error(`unknown argument ${a} (try --help)`)
    }
  }
  for (const k of ['seconds', 'workers', 'accounts', 'inFlight', 'memtableKb']) {
    if (!(o[k] > 0)) throw new Error(`${k} must be a positive number`)
  }
  if (o.accounts < 2) throw new Error('accounts must be at least 2')
  if (!['snapshot', 'serializable'].includes(o.isolation)) throw new Error('isolation is snapshot or serializable')
  return o
}

let o
try {
  o = parseArgs(process.argv.slice(2))
} catch (err) {
  console.error(`bank-long: ${err.message}`)
  process.exit(2)
}
const root = o.dir ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'toondb-bank-long-'))
const dir = o.dir ?? path.join(root, 'db')
const seed = o.seed ?? (Date.now() * 2654435761) >>> 0
console.log(
  `bank-long: ${o.seconds}s, ${o.workers} workers x ${o.inFlight} in flight, ${o.accounts} accounts, ` +
    `isolation ${o.isolation}, memtable ${o.memtableKb} KiB, seed ${seed}, dir ${dir}`,
)

const started = Date.now()
let lastPrint = started
let lastCommitted = 0
try {
  const summary = await runBank({
    dir,
    workers: o.workers,
    accounts: o.accounts,
    durationMs: o.seconds * 1000,
    inFlight: o.inFlight,
    isolation: o.isolation,
    seed,
    memtableSize: o.memtableKb * 1024,
    progressMs: 1000,
    onProgress({ committed, conflicts, sums, stats }) {
      const now = Date.now()
      if (now - lastPrint < 5000) return
      const rate = ((committed - lastCommitted) * 1000) / Math.max(1, now - lastPrint)
      lastPrint = now
      lastCommitted = committed
      const checked = Object.values(sums).reduce((a, b) => a + b, 0)
      console.log(
        `${String(Math.round((now - started) / 1000)).padStart(6)}s  ` +
          `~${committed} transfers (${rate.toFixed(0)}/s)  ${conflicts} conflicts  ` +
          `${checked} exact sums  ${stats.flushes} flushes  ${stats.tables} tables  ` +
          `${stats.liveSnapshots} live snapshots`,
      )
    },
  })
  const secs = summary.elapsedMs / 1000
  const s = summary.stats
  console.log(
    [
      `OK after ${secs.toFixed(1)}s`,
      `  transfers committed: ${summary.committed} (${(summary.committed / secs).toFixed(0)}/s; per worker ${summary.perWorker.join(', ')})`,
      `  money moved:         ${summary.moved}`,
      `  refused (no funds):  ${summary.refused}`,
      `  conflicts retried:   ${summary.conflicts} (stats().conflicts ${s.conflicts})`,
      `  exact sums checked:  ${JSON.stringify(summary.sums)}`,
      `  engine:              ${s.commits} commits in ${s.commitGroups} groups, ${s.flushes} flushes, ` +
        `${s.tables} tables, ${s.writeStalls} write stalls`,
      `  final balances equal initial balances plus the committed transfers`,
    ].join('\n'),
  )
} catch (err) {
  console.error(`FAILED after ${((Date.now() - started) / 1000).toFixed(1)}s (seed ${seed}):`)
  console.error(err)
  process.exitCode = 1
} finally {
  if (root) fs.rmSync(root, { recursive: true, force: true })
}
