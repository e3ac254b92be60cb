// THE crash test. A child process (fixtures/crash-writer.mjs) writes with
// { sync: true } (some single writes override it with { sync: false }, which
// is documented to survive a process crash too; a separate test runs the
// whole writer with { sync: false }) with 64 writes in flight, batches, deletes,
// overwrites, explicit flush() calls and a 64 KiB memtable (so memtable
// rotation, WAL segment rotation and table flushes happen all the time),
// printing every acknowledged write. The parent SIGKILLs it at a random
// moment, reopens the directory and checks:
//   - every acknowledged put is present with its exact value;
//   - every acknowledged delete is still a delete;
//   - every batch (acknowledged or not) is wholly present or wholly absent,
//     including the delete it may carry;
//   - every overwritten key holds its last acknowledged version or a later one;
//   - nothing else is in the database (no garbage values, no unknown keys).
//
// How we know the check can fail: the "negative control" test below feeds
// the checker the real recovered state of a crashed run with one acked key
// removed, one key of an acked batch removed, an overwrite rolled back and a
// garbage value, and requires it to report each of them. (It was also
// checked by hand by temporarily adding a fake `ack` line for a key that was
// never written, which made the main test fail with "acked put lost".)
//
// Reproduce a run: TOONDB_CRASH_SEED=<seed printed in the diagnostics>.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { after, test } from 'node:test'

import {
  batchExtra,
  batchKey,
  prng,
  sha16,
  slotExtra,
  slotKey,
  valueFor,
} from './fixtures/crash-model.mjs'
import { Database, tempRoot, waitIdle } from './helpers.mjs'

const WRITER = fileURLToPath(new URL('./fixtures/crash-writer.mjs', import.meta.url))
const FRESH_ITERATIONS = 12
const REUSE_ROUNDS = 4
const NOSYNC_ITERATIONS = 4
const SLOTS = 8

// Generous per-test limit: a hang fails the test instead of the run.
const TIMEOUT = 150000
const tmp = tempRoot('crash')
after(() => tmp.cleanup())

const BASE_SEED = Number(process.env.TOONDB_CRASH_SEED) || (Date.now() % 0x7fffffff)
const rnd = prng(BASE_SEED)

/** Parses the child's stdout; a torn last line (no newline) is ignored. */
function parseOutput(stdout) {
  const lines = stdout.split('\n')
  lines.pop() // '' after the last newline, or a torn line
  const out = {
    ready: false,
    acks: new Map(), // key -> hash
    bints: new Map(), // batch id -> { n, target }
    backs: new Map(), // batch id -> { n, hash }
    oacks: new Map(), // slot -> highest acked seq
    dints: new Set(),
    dacks: new Set(),
    flushes: 0,
  }
  for (const line of lines) {
    const [kind, a, b, c] = line.split(' ')
    switch (kind) {
      case 'ready':
        out.ready = true
        break
      case 'ack':
        out.acks.set(a, b)
        break
      case 'bint':
        out.bints.set(Number(a), { n: Number(b), target: c === '-' ? null : c })
        break
      case 'back':
        out.backs.set(Number(a), { n: Number(b), hash: c })
        break
      case 'oack':
        out.oacks.set(Number(a), Math.max(out.oacks.get(Number(a)) ?? 0, Number(b)))
        break
      case 'dint':
        out.dints.add(a)
        break
      case 'dack':
        out.dacks.add(a)
        break
      case 'flushed':
        out.flushes = Math.max(out.flushes, Number(a))
        break
      case 'compacted':
        out.compactions = Math.max(out.compactions ?? 0, Number(a))
        break
      default:
        throw new Error(`unexpected line from the crash writer: ${JSON.stringify(line)}`)
    }
  }
  return out
}

/**
 * Checks the recovered `state` (Map of key -> Buffer, the whole database)
 * against what the rounds acknowledged. Returns a list of problems.
 */
function check(state, rounds) {
  const problems = []
  const claimed = new Set() // keys of `state` explained by some rule
  const eq = (key, want) => {
    const got = state.get(key)
    return got !== undefined && got.equals(want)
  }
  for (const { prefix: P, out } of rounds) {
    const targets = new Set([...out.bints.values()].map((b) => b.target).filter(Boolean))

    // Single puts (and the puts of put-then-delete keys).
    for (const [key, hash] of out.acks) {
      const want = valueFor(key, '')
      if (sha16(want) !== hash) problems.push(`${key}: the writer acked a value with another hash (${hash})`)
      if (targets.has(key)) continue // decided by its batch below
      if (out.dacks.has(key)) {
        if (state.has(key)) problems.push(`${key}: acked delete lost (key is present)`)
      } else if (out.dints.has(key)) {
        if (state.has(key) && !eq(key, want)) problems.push(`${key}: wrong value (delete in flight)`)
      } else if (!state.has(key)) {
        problems.push(`${key}: acked put lost`)
      } else if (!eq(key, want)) {
        problems.push(`${key}: acked put has a wrong value`)
      }
    }

    // Batches: all or nothing, acked or not.
    const found = new Map() // batch id -> number of its keys present
    for (const key of state.keys()) {
      const m = key.startsWith(P) && /^b(\d{6})-(\d{2})$/.exec(key.slice(P.length))
      if (m) found.set(Number(m[1]), (found.get(Number(m[1])) ?? 0) + 1)
    }
    for (const [b, count] of found) {
      const intent = out.bints.get(b)
      if (!intent) {
        problems.push(`${P}batch ${b}: present (${count} keys) but never submitted`)
        continue
      }
      if (count !== intent.n) problems.push(`${P}batch ${b}: partially applied (${count} of ${intent.n} keys)`)
      const values = []
      for (let i = 0; i < intent.n; i++) {
        const key = batchKey(P, b, i)
        const want = valueFor(key, batchExtra(b, i, intent.n, intent.target))
        values.push(want)
        if (state.has(key)) {
          claimed.add(key)
          if (!eq(key, want)) problems.push(`${key}: wrong value in batch ${b}`)
        }
      }
      if (intent.target && state.has(intent.target)) {
        problems.push(`${P}batch ${b}: puts applied but its delete of ${intent.target} was not`)
      }
      const acked = out.backs.get(b)
      if (acked && acked.hash !== sha16(Buffer.concat(values))) problems.push(`${P}batch ${b}: acked hash mismatch`)
    }
    for (const [b, intent] of out.bints) {
      if (found.has(b)) continue
      if (out.backs.has(b)) problems.push(`${P}batch ${b}: acked batch lost (0 of ${intent.n} keys)`)
      // Not applied: its delete must not have been applied either. The target
      // was an acked single put that nothing else deletes.
      if (intent.target && !eq(intent.target, valueFor(intent.target, ''))) {
        problems.push(`${P}batch ${b}: absent, but its delete of ${intent.target} was applied`)
      }
    }

    // Overwritten slots: the last acked version or a later one.
    for (let slot = 0; slot < SLOTS; slot++) {
      const key = slotKey(P, slot)
      const acked = out.oacks.get(slot) ?? 0
      const v = state.get(key)
      if (v === undefined) {
        if (acked > 0) problems.push(`${key}: acked overwrite lost (slot empty, acked seq ${acked})`)
        continue
      }
      claimed.add(key)
      const m = new RegExp(`^${key}\\|o\\|${slot}\\|(\\d+)\\|`).exec(v.toString('latin1'))
      if (!m || !v.equals(valueFor(key, slotExtra(slot, Number(m[1]))))) {
        problems.push(`${key}: garbage value`)
      } else if (Number(m[1]) < acked) {
        problems.push(`${key}: rolled back to seq ${m[1]} (acked seq ${acked})`)
      }
    }

    // Everything else under this prefix must be an s/d key with its value.
    for (const [key, v] of state) {
      if (!key.startsWith(P) || claimed.has(key)) continue
      const rest = key.slice(P.length)
      if (/^[sd]\d{8}$/.test(rest)) {
        claimed.add(key)
        if (!v.equals(valueFor(key, ''))) problems.push(`${key}: garbage value`)
      }
    }
  }
  for (const key of state.keys()) {
    if (!claimed.has(key) && !rounds.some((r) => r.out.acks.has(key))) problems.push(`${key}: unexpected key`)
  }
  return problems
}

/**
 * Runs the writer on `dir`, SIGKILLs it `delayMs` after it is ready (or,
 * with `duringOpen`, `delayMs` after it was spawned: possibly while it is
 * still recovering the database).
 */
function crashOnce(dir, prefix, seed, delayMs, { duringOpen = false, sync = true } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, dir, prefix, String(seed), '64', '20000', String(sync)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let killedAt = null
    const watchdog = setTimeout(() => child.kill('SIGKILL'), 15000)
    let timer = null
    if (duringOpen) {
      timer = setTimeout(() => {
        killedAt = Date.now()
        child.kill('SIGKILL')
      }, delayMs)
    }
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d
      if (timer === null && /^ready$/m.test(stdout)) {
        timer = setTimeout(() => {
          killedAt = Date.now()
          child.kill('SIGKILL')
        }, delayMs)
      }
    })
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(watchdog)
      clearTimeout(timer)
      if (killedAt === null || signal !== 'SIGKILL') {
        reject(new Error(`crash writer ended on its own (code ${code}, signal ${signal}): ${stderr || stdout.slice(-500)}`))
        return
      }
      resolve(parseOutput(stdout))
    })
  })
}

/** Opens `dir`, reads everything, checks it, closes. */
async function recoverAndCheck(dir, rounds) {
  // No background compaction while the files are counted below.
  const db = await Database.open(dir, { autoCompaction: false })
  try {
    const stats = db.stats()
    const state = new Map()
    for (const [k, v] of db.iterator()) state.set(k.toString('latin1'), v)
    // Point reads agree with the scan (a sample, both present and absent keys).
    const keys = [...state.keys()]
    for (let i = 0; i < keys.length; i += Math.max(1, Math.floor(keys.length / 300))) {
      assert.ok(db.getSync(keys[i]).equals(state.get(keys[i])), `getSync(${keys[i]}) disagrees with the scan`)
    }
    for (const { out } of rounds) {
      for (const key of out.dacks) assert.equal(db.getSync(key), null, `getSync(${key}) after acked delete`)
    }
    // No orphans: once open has made its manifest durable it deletes every
    // table file the manifest does not list (a flush or compaction the kill
    // cut short, or inputs of an installed compaction).
    // Open flushes the recovered writes in the background: its table file
    // exists before it is installed, so count once that work is done.
    await waitIdle(db)
    const live = db.stats().tables
    const onDisk = fs.readdirSync(dir).filter((n) => /^\d{6}\.sst$/.test(n)).length
    assert.equal(onDisk, live, `${onDisk} table files on disk, ${live} live`)
    return { stats, state, problems: check(state, rounds) }
  } finally {
    await db.close()
  }
}

const summary = (out) =>
  `acks ${out.acks.size} single, ${out.backs.size}/${out.bints.size} batches, ` +
  `${[...out.oacks.values()].reduce((a, b) => a + b, 0)} overwrites, ${out.dacks.size} deletes, ${out.flushes} flushes, ${out.compactions ?? 0} compactions`
const recoverySummary = (s) =>
  `recovered ${s.recoveredRecords} records from ${s.recoveredSegments} WAL segments, ` +
  `dropped tail ${s.droppedTailBytes} B${s.droppedTailReason ? ` (${s.droppedTailReason})` : ''}, tables ${s.tables}`

function assertNoProblems(problems, label) {
  assert.deepEqual(problems.slice(0, 20), [], `${label}: ${problems.length} problems`)
}

let lastFresh = null // for the negative control

test(`acknowledged writes survive SIGKILL at random moments (${FRESH_ITERATIONS} fresh directories)`, { timeout: TIMEOUT }, async (t) => {
  t.diagnostic(`seed ${BASE_SEED}`)
  let totalAcks = 0
  let totalTables = 0
  let totalCompactions = 0
  for (let i = 0; i < FRESH_ITERATIONS; i++) {
    const dir = tmp.dir('fresh')
    const seed = Math.floor(rnd() * 0x7fffffff)
    const delay = Math.round(50 + rnd() * 550)
    const out = await crashOnce(dir, 'r0/', seed, delay)
    assert.ok(out.ready)
    const rounds = [{ prefix: 'r0/', out }]
    const { stats, state, problems } = await recoverAndCheck(dir, rounds)
    t.diagnostic(`iteration ${i}: kill after ${delay} ms; ${summary(out)}; ${recoverySummary(stats)}; ${state.size} keys`)
    assertNoProblems(problems, `iteration ${i} (seed ${seed}, delay ${delay})`)
    totalAcks += out.acks.size + out.backs.size
    totalTables += stats.tables
    totalCompactions += out.compactions ?? 0
    // The negative control works on the richest run (a kill right after
    // open may leave too little to tamper with).
    if (lastFresh === null || out.acks.size > lastFresh.rounds[0].out.acks.size) lastFresh = { dir, rounds, state }
  }
  assert.ok(totalAcks > 0, 'the writers acknowledged nothing at all')
  assert.ok(totalCompactions > 0, 'no compact() call finished: the test did not exercise compaction')
  assert.ok(totalTables > 0, 'no memtable was ever flushed: the test did not exercise table files')
})

// { sync: false } (the default): a write is acknowledged once the WAL write
// reached the OS, which index.d.ts documents as surviving a process crash
// (SIGKILL). Fewer iterations: the same checks, a different commit path.
test(`with { sync: false }, acknowledged writes survive SIGKILL too (${NOSYNC_ITERATIONS} fresh directories)`, { timeout: TIMEOUT }, async (t) => {
  let totalAcks = 0
  for (let i = 0; i < NOSYNC_ITERATIONS; i++) {
    const dir = tmp.dir('nosync')
    const seed = Math.floor(rnd() * 0x7fffffff)
    const delay = Math.round(50 + rnd() * 550)
    const out = await crashOnce(dir, 'r0/', seed, delay, { sync: false })
    const rounds = [{ prefix: 'r0/', out }]
    const { stats, state, problems } = await recoverAndCheck(dir, rounds)
    t.diagnostic(`iteration ${i}: kill after ${delay} ms; ${summary(out)}; ${recoverySummary(stats)}; ${state.size} keys`)
    assertNoProblems(problems, `sync:false iteration ${i} (seed ${seed}, delay ${delay})`)
    totalAcks += out.acks.size + out.backs.size
  }
  assert.ok(totalAcks > 0, 'the writers acknowledged nothing at all')
})

test(`recovery of a recovered database: ${REUSE_ROUNDS * 2} SIGKILLs on the same directory, some during open`, { timeout: TIMEOUT }, async (t) => {
  const dir = tmp.dir('reuse')
  const rounds = []
  for (let r = 0; r < REUSE_ROUNDS; r++) {
    const prefix = `r${r}/`
    const seed = Math.floor(rnd() * 0x7fffffff)
    const delay = Math.round(50 + rnd() * 550)
    const out = await crashOnce(dir, prefix, seed, delay)
    rounds.push({ prefix, out })
    // Everything acknowledged in EVERY earlier round must still be there.
    const { stats, state, problems } = await recoverAndCheck(dir, rounds)
    t.diagnostic(`round ${r}: kill after ${delay} ms; ${summary(out)}; ${recoverySummary(stats)}; ${state.size} keys total`)
    assertNoProblems(problems, `round ${r} (seed ${seed}, delay ${delay})`)

    // Then a crash while the next process is still loading or recovering
    // the database (or just after): a half-done recovery must not cost
    // anything either.
    const early = `r${r}x/`
    const earlyDelay = Math.round(rnd() * 120)
    const earlyOut = await crashOnce(dir, early, seed + 1, earlyDelay, { duringOpen: true })
    rounds.push({ prefix: early, out: earlyOut })
    const after = await recoverAndCheck(dir, rounds)
    t.diagnostic(
      `round ${r}x: kill ${earlyDelay} ms after spawn (${earlyOut.ready ? 'after' : 'before'} open finished); ` +
        `${summary(earlyOut)}; ${recoverySummary(after.stats)}`,
    )
    assertNoProblems(after.problems, `round ${r}x (seed ${seed + 1}, delay ${earlyDelay} from spawn)`)
  }
  // A clean reopen after all the crashes is clean and unchanged.
  const again = await recoverAndCheck(dir, rounds)
  assert.equal(again.stats.droppedTailBytes, 0, 'a cleanly closed database has no torn tail')
  assertNoProblems(again.problems, 'clean reopen')
})

test('negative control: the checker reports lost, partial, rolled-back and garbage writes', { timeout: TIMEOUT }, () => {
  assert.ok(lastFresh, 'needs the fresh-directory test to have run')
  const { rounds, state } = lastFresh
  const out = rounds[0].out
  assert.deepEqual(check(state, rounds), [], 'the unmodified state passes')
  const targets = new Set([...out.bints.values()].map((b) => b.target))

  // 1. One acked put treated as missing.
  const acked = [...out.acks.keys()].find((k) => !targets.has(k) && !out.dints.has(k) && state.has(k))
  assert.ok(acked, 'the run acknowledged at least one plain put')
  const lost = new Map(state)
  lost.delete(acked)
  assert.ok(check(lost, rounds).some((p) => p.startsWith(`${acked}: acked put lost`)))

  // 2. An acked put with a flipped byte.
  const flipped = new Map(state)
  const bad = Buffer.from(state.get(acked))
  bad[bad.length - 1] ^= 1
  flipped.set(acked, bad)
  assert.ok(check(flipped, rounds).some((p) => p.startsWith(`${acked}: acked put has a wrong value`)))

  // 3. One key of an acked batch missing: partial batch.
  const [b, intent] = [...out.backs].find(([id]) => state.has(batchKey('r0/', id, 0)))
  const partial = new Map(state)
  partial.delete(batchKey('r0/', b, intent.n - 1))
  assert.ok(check(partial, rounds).some((p) => p.includes(`batch ${b}: partially applied`)))

  // 4. A whole acked batch missing.
  const gone = new Map(state)
  for (let i = 0; i < intent.n; i++) gone.delete(batchKey('r0/', b, i))
  assert.ok(check(gone, rounds).some((p) => p.includes(`batch ${b}: acked batch lost`)))

  // 5. A batch whose delete did not apply (its target resurrected).
  const withTarget = [...out.bints].find(([id, it]) => it.target && state.has(batchKey('r0/', id, 0)))
  if (withTarget) {
    const resurrected = new Map(state)
    resurrected.set(withTarget[1].target, valueFor(withTarget[1].target, ''))
    assert.ok(check(resurrected, rounds).some((p) => p.includes(`batch ${withTarget[0]}: puts applied but its delete`)))
  }

  // 6. An overwrite rolled back below the acked version.
  const slot = [...out.oacks].find(([, seq]) => seq >= 2)
  if (slot) {
    const rolled = new Map(state)
    rolled.set(slotKey('r0/', slot[0]), valueFor(slotKey('r0/', slot[0]), slotExtra(slot[0], slot[1] - 1)))
    assert.ok(check(rolled, rounds).some((p) => p.includes('rolled back')))
  }

  // 7. An unknown key.
  const extra = new Map(state)
  extra.set('r0/zzz', Buffer.from('?'))
  assert.ok(check(extra, rounds).some((p) => p.startsWith('r0/zzz: unexpected key')))
})
