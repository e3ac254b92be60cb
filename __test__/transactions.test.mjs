// Transactions and snapshots through the JS API: own writes, rollback,
// use after the end, first committer wins, read-only transactions,
// db.transact retries, write skew under snapshot vs serializable isolation,
// snapshots that hold still through overwrites and flushes, release on GC,
// and a bank workload across worker threads in which every sum is exact.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { after, test } from 'node:test'

import { runBank } from './fixtures/bank-worker.mjs'
import {
  assertCode,
  assertRejectsCode,
  assertThrowsCode,
  Database,
  INDEX_JS,
  lastJson,
  tempRoot,
} from './helpers.mjs'

const tmp = tempRoot('txn')
after(() => tmp.cleanup())

const str = (b) => (b === null ? null : b.toString())
const pairs = (entries) => entries.map(([k, v]) => [k.toString(), v.toString()])

async function open(options) {
  return Database.open(tmp.dir(), { memtableSize: 8192, ...options })
}

/** The rejection of `promise` (fails if it resolves). */
async function rejection(promise) {
  try {
    await promise
  } catch (err) {
    return err
  }
  assert.fail('expected the promise to reject')
}

test('own writes are visible in get and iterators, invisible to the db until commit', async () => {
  const db = await open()
  await db.batch([
    { type: 'put', key: 'a', value: '1' },
    { type: 'put', key: 'b', value: '1' },
    { type: 'put', key: 'p/1', value: 'one' },
    { type: 'put', key: 'p/2', value: 'two' },
    { type: 'put', key: 'p/3', value: 'three' },
    { type: 'put', key: 'q', value: 'q' },
  ])
  const txn = db.transaction()
  assert.equal(txn.readTs, db.stats().visibleTs)
  assert.equal(txn.active, true)
  await db.put('a', '2') // after the snapshot: not seen by txn
  txn.put('c', '3')
  txn.delete('b')
  txn.put('p/2', 'TWO')
  txn.put('p/4', 'four')
  txn.del('p/1')

  assert.equal(str(await txn.get('a')), '1')
  assert.equal(str(txn.getSync('c')), '3')
  assert.equal(await txn.get('b'), null)
  assert.equal(str(txn.getSync('p/2')), 'TWO')
  assert.equal(txn.getSync('p/1'), null)

  const all = [['a', '1'], ['c', '3'], ['p/2', 'TWO'], ['p/3', 'three'], ['p/4', 'four'], ['q', 'q']]
  assert.deepEqual(pairs(await txn.iterator().all()), all)
  assert.deepEqual(pairs(await txn.iterator({ reverse: true }).all()), [...all].reverse())
  assert.deepEqual(pairs(await txn.iterator({ limit: 2 }).all()), all.slice(0, 2))
  assert.deepEqual(pairs(await txn.iterator({ reverse: true, limit: 3 }).all()), [...all].reverse().slice(0, 3))
  assert.deepEqual(pairs(await txn.iterator({ prefix: 'p/' }).all()), [
    ['p/2', 'TWO'],
    ['p/3', 'three'],
    ['p/4', 'four'],
  ])
  assert.deepEqual(pairs(await txn.iterator({ prefix: 'p/', reverse: true, limit: 2 }).all()), [
    ['p/4', 'four'],
    ['p/3', 'three'],
  ])
  assert.deepEqual(pairs(await txn.iterator({ gt: 'b', lte: 'p/2' }).all()), [
    ['c', '3'],
    ['p/2', 'TWO'],
  ])
  const forAwait = []
  for await (const [k] of txn.iterator({ prefix: 'p/' })) forAwait.push(k.toString())
  assert.deepEqual(forAwait, ['p/2', 'p/3', 'p/4'])

  // An iterator sees the transaction's writes as of its creation.
  const early = txn.iterator({ prefix: 'p/' })
  txn.put('p/5', 'five')
  assert.deepEqual(pairs(await early.all()).map(([k]) => k), ['p/2', 'p/3', 'p/4'])
  assert.equal(str(txn.getSync('p/5')), 'five')

  // Nothing is visible outside before commit.
  assert.equal(db.getSync('c'), null)
  assert.equal(str(db.getSync('b')), '1')
  assert.equal(str(db.getSync('p/2')), 'two')
  assert.deepEqual(pairs(await db.iterator({ prefix: 'p/' }).all()).map(([k]) => k), ['p/1', 'p/2', 'p/3'])
  const snap = db.snapshot()

  await txn.commit()
  assert.equal(txn.active, false)
  assert.equal(str(db.getSync('c')), '3')
  assert.equal(db.getSync('b'), null)
  assert.equal(str(db.getSync('a')), '2')
  assert.deepEqual(pairs(await db.iterator({ prefix: 'p/' }).all()), [
    ['p/2', 'TWO'],
    ['p/3', 'three'],
    ['p/4', 'four'],
    ['p/5', 'five'],
  ])
  // A snapshot taken before the commit does not see it.
  assert.equal(snap.getSync('c'), null)
  snap.release()
  await db.close()
})

test('rollback discards the writes; a rolled-back transaction is closed', async () => {
  const db = await open()
  const txn = db.transaction()
  txn.put('k', 'v')
  txn.rollback()
  assert.equal(txn.active, false)
  assert.equal(db.getSync('k'), null)
  assertThrowsCode(() => txn.put('k', 'v'), 'TOONDB_CLOSED', /rolled back/)
  assertThrowsCode(() => txn.getSync('k'), 'TOONDB_CLOSED')
  await assertRejectsCode(() => txn.get('k'), 'TOONDB_CLOSED')
  assertThrowsCode(() => txn.iterator(), 'TOONDB_CLOSED')
  assertThrowsCode(() => txn.rollback(), 'TOONDB_CLOSED')
  await assertRejectsCode(() => txn.commit(), 'TOONDB_CLOSED')
  assert.equal(db.getSync('k'), null)
  assert.equal(db.stats().liveSnapshots, 0)
  await db.close()
})

test('a committed transaction is closed; commit twice returns the same promise', async () => {
  const db = await open()
  const txn = db.transaction()
  txn.put('k', 'v')
  const p1 = txn.commit()
  const p2 = txn.commit()
  assert.equal(p1, p2, 'commit() twice must return the same promise')
  assert.equal(txn.active, false, 'inactive once committing')
  await p1
  assert.equal(str(db.getSync('k')), 'v')
  assert.equal(txn.commit(), p1)
  assertThrowsCode(() => txn.put('k', 'w'), 'TOONDB_CLOSED', /committed/)
  assertThrowsCode(() => txn.delete('k'), 'TOONDB_CLOSED')
  assertThrowsCode(() => txn.getSync('k'), 'TOONDB_CLOSED')
  await assertRejectsCode(() => txn.get('k'), 'TOONDB_CLOSED')
  assertThrowsCode(() => txn.iterator(), 'TOONDB_CLOSED')
  assertThrowsCode(() => txn.rollback(), 'TOONDB_CLOSED', /committed/)
  assert.equal(str(db.getSync('k')), 'v')
  assert.equal(db.stats().liveSnapshots, 0)

  // The same for a read-only and an empty transaction.
  const ro = db.transaction()
  assert.equal(str(ro.getSync('k')), 'v')
  const p = ro.commit()
  assert.equal(ro.commit(), p)
  await p
  await db.transaction().commit()
  assert.equal(db.stats().liveSnapshots, 0)
  await db.close()
})

test('first committer wins: the loser gets TOONDB_CONFLICT and applies nothing', async () => {
  const db = await open()
  await db.put('x', '0')
  const conflictsBefore = db.stats().conflicts
  const t1 = db.transaction()
  const t2 = db.transaction()
  t1.put('x', '1')
  t2.put('x', '2')
  t2.put('y', '2')
  await t1.commit()
  const err = await rejection(t2.commit())
  assertCode(err, 'TOONDB_CONFLICT')
  assert.equal(str(db.getSync('x')), '1')
  assert.equal(db.getSync('y'), null, 'the loser applied nothing')
  assert.equal(t2.active, false)

  // Committed concurrently: still exactly one winner.
  const racers = Array.from({ length: 8 }, (_, i) => {
    const t = db.transaction()
    t.put('x', `r${i}`)
    t.put(`only/${i}`, 'x')
    return t
  })
  const outcomes = await Promise.allSettled(racers.map((t) => t.commit()))
  const won = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [i] : []))
  assert.equal(won.length, 1, 'exactly one racer commits')
  for (const o of outcomes) if (o.status === 'rejected') assertCode(o.reason, 'TOONDB_CONFLICT')
  assert.equal(str(db.getSync('x')), `r${won[0]}`)
  assert.deepEqual(pairs(await db.iterator({ prefix: 'only/' }).all()), [[`only/${won[0]}`, 'x']])

  // A plain put is a committed writer too.
  const t3 = db.transaction()
  t3.put('x', '3')
  await db.put('x', '4')
  assertCode(await rejection(t3.commit()), 'TOONDB_CONFLICT')
  assert.equal(str(db.getSync('x')), '4')
  assert.equal(db.stats().conflicts - conflictsBefore, 1 + 7 + 1)
  await db.close()
})

test('read-only transactions never conflict', async () => {
  const db = await open()
  await db.put('k', 'v')
  for (const isolation of ['snapshot', 'serializable']) {
    const t = db.transaction({ isolation })
    const seen = str(t.getSync('k'))
    const scanned = pairs(await t.iterator().all())
    await db.put('k', `changed-${isolation}`)
    await db.put(`new-${isolation}`, 'key')
    assert.equal(str(t.getSync('k')), seen, 'still reads its snapshot')
    assert.deepEqual(pairs(await t.iterator().all()), scanned, 'still scans its snapshot')
    await t.commit()
  }
  await db.close()
})

test('db.transact retries on conflict, rethrows other errors after rolling back', async () => {
  const db = await open()
  await db.put('counter', '0')

  // The first attempt loses to a put made while it runs; the retry wins.
  let attempts = 0
  const result = await db.transact(async (txn) => {
    attempts++
    const n = Number(str(await txn.get('counter')))
    if (attempts === 1) await db.put('counter', '100')
    txn.put('counter', String(n + 1))
    return `attempt ${attempts}`
  })
  assert.equal(attempts, 2)
  assert.equal(result, 'attempt 2')
  assert.equal(str(db.getSync('counter')), '101')

  // With retries: 0 the conflict is the caller's.
  attempts = 0
  const err = await rejection(
    db.transact(
      async (txn) => {
        attempts++
        txn.put('counter', 'lost')
        await db.put('counter', 'won')
      },
      { retries: 0 },
    ),
  )
  assertCode(err, 'TOONDB_CONFLICT')
  assert.equal(attempts, 1)
  assert.equal(str(db.getSync('counter')), 'won')

  // Retries run out.
  attempts = 0
  assertCode(
    await rejection(
      db.transact(
        async (txn) => {
          attempts++
          txn.put('counter', 'never')
          await db.put('counter', `won${attempts}`)
        },
        { retries: 3 },
      ),
    ),
    'TOONDB_CONFLICT',
  )
  assert.equal(attempts, 4)

  // Any other error: rolled back, rethrown as is, not retried.
  let seen = null
  attempts = 0
  const boom = new Error('boom')
  const thrown = await rejection(
    db.transact(async (txn) => {
      attempts++
      seen = txn
      txn.put('partial', 'write')
      throw boom
    }),
  )
  assert.equal(thrown, boom)
  assert.equal(attempts, 1)
  assert.equal(seen.active, false, 'the transaction was rolled back')
  assert.equal(db.getSync('partial'), null)

  // fn may commit itself; the result comes back.
  const own = await db.transact(async (txn) => {
    txn.put('self', 'committed')
    await txn.commit()
    return 42
  })
  assert.equal(own, 42)
  assert.equal(str(db.getSync('self')), 'committed')
  assert.equal(db.stats().liveSnapshots, 0)
  await db.close()
})

test('a bad isolation or retries value is TOONDB_INVALID_ARGUMENT', async () => {
  const db = await open()
  assertThrowsCode(() => db.transaction({ isolation: 'bogus' }), 'TOONDB_INVALID_ARGUMENT', /isolation/)
  assertThrowsCode(() => db.transaction({ isolation: 'SERIALIZABLE' }), 'TOONDB_INVALID_ARGUMENT')
  assertThrowsCode(() => db.transaction({ isolation: 1 }), 'TOONDB_INVALID_ARGUMENT')
  assertThrowsCode(() => db.transaction('serializable'), 'TOONDB_INVALID_ARGUMENT')
  assertThrowsCode(() => db.transaction({ sync: 'yes' }), 'TOONDB_INVALID_ARGUMENT')
  await assertRejectsCode(() => db.transact(() => {}, { isolation: 'read-committed' }), 'TOONDB_INVALID_ARGUMENT')
  await assertRejectsCode(() => db.transact(() => {}, { retries: -1 }), 'TOONDB_INVALID_ARGUMENT')
  await assertRejectsCode(() => db.transact(() => {}, { retries: 1.5 }), 'TOONDB_INVALID_ARGUMENT')
  await assertRejectsCode(() => db.transact('not a function'), 'TOONDB_INVALID_ARGUMENT')
  assert.equal(db.stats().liveSnapshots, 0, 'a rejected call leaves no transaction behind')
  await db.close()
})

// Two doctors on call; each goes off call if the other is still on.
async function writeSkew(isolation, read) {
  const db = await open()
  await db.batch([
    { type: 'put', key: 'oncall/alice', value: '1' },
    { type: 'put', key: 'oncall/bob', value: '1' },
  ])
  const a = db.transaction({ isolation })
  const b = db.transaction({ isolation })
  const onCall = async (t) =>
    read === 'scan'
      ? (await t.iterator({ prefix: 'oncall/' }).all()).filter(([, v]) => v.toString() === '1').length
      : [str(await t.get('oncall/alice')), str(await t.get('oncall/bob'))].filter((v) => v === '1').length
  assert.equal(await onCall(a), 2)
  assert.equal(await onCall(b), 2)
  a.put('oncall/alice', '0')
  b.put('oncall/bob', '0')
  const outcomes = await Promise.allSettled([a.commit(), b.commit()])
  const state = pairs(await db.iterator({ prefix: 'oncall/' }).all())
  await db.close()
  return { outcomes, state }
}

test('write skew: both commit under snapshot isolation (documented)', async () => {
  for (const read of ['get', 'scan']) {
    const { outcomes, state } = await writeSkew(undefined, read)
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'fulfilled'],
    )
    assert.deepEqual(state, [
      ['oncall/alice', '0'],
      ['oncall/bob', '0'],
    ])
    const explicit = await writeSkew('snapshot', read)
    assert.deepEqual(
      explicit.outcomes.map((o) => o.status),
      ['fulfilled', 'fulfilled'],
    )
  }
})

test("write skew: exactly one fails with TOONDB_CONFLICT under 'serializable'", async () => {
  for (const read of ['get', 'scan']) {
    const { outcomes, state } = await writeSkew('serializable', read)
    const failed = outcomes.filter((o) => o.status === 'rejected')
    assert.equal(failed.length, 1, `${read}: exactly one commit fails`)
    assertCode(failed[0].reason, 'TOONDB_CONFLICT')
    assert.equal(state.filter(([, v]) => v === '1').length, 1, `${read}: one doctor stays on call`)
  }
})

test('a snapshot holds still while writers overwrite and flush; stats show it until release', async () => {
  const db = await open()
  const k = (i) => `k${String(i).padStart(4, '0')}`
  await db.batch(Array.from({ length: 300 }, (_, i) => ({ type: 'put', key: k(i), value: `old${i}` })))
  const before = db.stats()
  assert.equal(before.liveSnapshots, 0)
  assert.equal(before.oldestSnapshotTs, undefined) // optional in index.d.ts
  const snap = db.snapshot()
  assert.equal(snap.ts, db.stats().visibleTs)
  let stats = db.stats()
  assert.equal(stats.liveSnapshots, 1)
  assert.equal(stats.oldestSnapshotTs, snap.ts)
  const expected = Array.from({ length: 300 }, (_, i) => [k(i), `old${i}`])

  for (let round = 0; round < 4; round++) {
    await Promise.all(Array.from({ length: 300 }, (_, i) => db.put(k(i), `new${round}-${i}`)))
    await db.del(k(7))
    await db.put('zzz-new', 'x')
    await db.flush()
    assert.deepEqual(pairs(await snap.iterator().all()), expected, `round ${round}`)
    assert.deepEqual(pairs(await snap.iterator({ reverse: true, limit: 5 }).all()), expected.slice(-5).reverse())
    assert.equal(str(snap.getSync(k(7))), 'old7')
    assert.equal(str(await snap.get(k(299))), 'old299')
    assert.equal(snap.getSync('zzz-new'), null)
    assert.equal(db.getSync(k(7)), null)
  }
  stats = db.stats()
  assert.ok(stats.flushes >= 4, `flushed to tables (${stats.flushes})`)
  assert.equal(stats.liveSnapshots, 1)
  assert.equal(stats.oldestSnapshotTs, snap.ts)

  // A newer snapshot and a transaction: the oldest stays the first one.
  const later = db.snapshot()
  const txn = db.transaction()
  stats = db.stats()
  assert.equal(stats.liveSnapshots, 3)
  assert.equal(stats.oldestSnapshotTs, snap.ts)
  snap.release()
  snap.release() // twice is harmless
  stats = db.stats()
  assert.equal(stats.liveSnapshots, 2)
  assert.equal(stats.oldestSnapshotTs, later.ts)
  assertThrowsCode(() => snap.getSync(k(1)), 'TOONDB_CLOSED')
  await assertRejectsCode(() => snap.get(k(1)), 'TOONDB_CLOSED')
  assertThrowsCode(() => snap.iterator(), 'TOONDB_CLOSED')
  later.release()
  txn.rollback()
  stats = db.stats()
  assert.equal(stats.liveSnapshots, 0)
  assert.equal(stats.oldestSnapshotTs, undefined)
  await db.close()
})

test('an abandoned transaction or snapshot is released after GC', async () => {
  // A child with --expose-gc, so only it runs with that flag.
  const dir = tmp.dir('gc')
  const script = `
    const { Database } = require(${JSON.stringify(INDEX_JS)})
    ;(async () => {
      const db = await Database.open(${JSON.stringify(dir)})
      await db.put('k', 'v')
      ;(() => {
        const t = db.transaction()
        t.put('abandoned', 'write')
        t.getSync('k')
        db.transaction({ isolation: 'serializable' })
        db.snapshot().getSync('k')
      })()
      const held = db.transaction() // stays referenced
      const before = db.stats().liveSnapshots
      let after = before
      for (let i = 0; i < 50 && after > 1; i++) {
        global.gc()
        await new Promise((r) => setTimeout(r, 10))
        after = db.stats().liveSnapshots
      }
      const heldStillWorks = held.getSync('k').toString()
      held.rollback()
      console.log(JSON.stringify({
        before, after, heldStillWorks,
        final: db.stats().liveSnapshots,
        abandonedWrite: db.getSync('abandoned'),
      }))
      await db.close()
    })().catch((e) => { console.error(e); process.exit(1) })
  `
  const child = spawn(process.execPath, ['--expose-gc', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), 20000)
  const code = await new Promise((resolve) => child.on('close', resolve))
  clearTimeout(timer)
  assert.equal(code, 0, stderr)
  const r = lastJson(stdout)
  assert.equal(r.before, 4, 'three abandoned + one held')
  assert.equal(r.after, 1, 'the abandoned ones were released after GC')
  assert.equal(r.heldStillWorks, 'v')
  assert.equal(r.final, 0)
  assert.equal(r.abandonedWrite, null, 'an abandoned transaction commits nothing')
})

test('bank: 3 worker threads transfer money; every sum is exact; final balances match', async (t) => {
  const dir = tmp.dir('bank')
  const summary = await runBank({ dir, workers: 3, accounts: 32, durationMs: 4000, inFlight: 32 })
  assert.ok(summary.committed > 0, 'no transfer committed')
  assert.ok(
    summary.perWorker.every((n) => n > 0),
    `every worker committed something: ${summary.perWorker}`,
  )
  assert.ok(summary.conflicts > 0, 'the workload never conflicted')
  const s = summary.sums
  assert.ok(s.snapshot > 0 && s.readOnlyTxn > 0 && s.serializableTxn > 0 && s.iterator > 0, JSON.stringify(s))
  assert.ok(summary.stats.flushes > 0, 'no memtable was flushed during the run')
  t.diagnostic(
    `bank: ${summary.committed} transfers (${summary.perWorker.join('/')}) in ${summary.elapsedMs} ms, ` +
      `${summary.conflicts} conflicts retried, ${summary.refused} refused, sums ${JSON.stringify(s)}, ` +
      `${summary.stats.flushes} flushes`,
  )
})

test('bank, serializable: every sum is exact; final balances match', async (t) => {
  const dir = tmp.dir('bank-ser')
  const summary = await runBank({
    dir,
    workers: 2,
    accounts: 16,
    durationMs: 2000,
    inFlight: 16,
    isolation: 'serializable',
  })
  assert.ok(summary.committed > 0)
  t.diagnostic(`bank serializable: ${summary.committed} transfers, ${summary.conflicts} conflicts retried`)
})
