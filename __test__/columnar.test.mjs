// Columnar tables from Node: every type round-trips, schema errors name the
// row and column and apply nothing, projection returns exactly the asked
// columns, transactions commit tables and keys together (or roll back
// whole), tables survive SIGKILL and reopen, compaction drops deleted rows,
// dropTable removes the data, plain iterators never see table keys.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { after, describe, test } from 'node:test'

import { Database, INDEX_JS, tempRoot } from './helpers.mjs'

const tmp = tempRoot('columnar')
const INVALID = 'TOONDB_INVALID_ARGUMENT'
after(() => tmp.cleanup())

const SPEC = {
  columns: { id: 'i64', ts: 'i64', user: 'string', amount: 'f64', ok: 'bool', payload: 'bytes' },
  primaryKey: 'id',
  nullable: ['payload'],
}

const row = (i) => ({
  id: BigInt(i),
  ts: BigInt(1000 + i),
  user: `u${i % 3}`,
  amount: i * 1.5,
  ok: i % 2 === 0,
  payload: i % 4 === 0 ? null : Buffer.from([i & 255, 1, 2]),
})

async function rejectsWith(p, code, pattern) {
  await assert.rejects(p, (err) => {
    assert.equal(err.code, code, err.message)
    if (pattern) assert.match(err.message, pattern)
    return true
  })
}

describe('columnar tables', () => {
  test('every type round-trips', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('events', SPEC)
    const big = 2n ** 62n + 1n
    await t.insert([
      { id: big, ts: -(2n ** 63n), user: '', amount: NaN, ok: true, payload: Buffer.alloc(0) },
      { id: -1n, ts: 2n ** 63n - 1n, user: 'ünï', amount: -0, ok: false, payload: null },
      { id: 7, ts: 9007199254740991, user: 'x', amount: Infinity, ok: true, payload: new Uint8Array([1, 2]) },
    ])
    const a = await t.get(big)
    assert.deepEqual(a, { id: big, ts: -(2n ** 63n), user: '', amount: NaN, ok: true, payload: Buffer.alloc(0) })
    const b = t.getSync(-1n)
    assert.ok(Object.is(b.amount, -0))
    assert.equal(b.payload, null)
    assert.equal(b.ts, 2n ** 63n - 1n)
    assert.deepEqual((await t.get(7n)).payload, Buffer.from([1, 2]))
    assert.equal(await t.get(12345n), null)
    const cols = await t.scanColumns()
    assert.deepEqual([...cols.id], [-1n, 7n, big])
    assert.ok(cols.amount instanceof Float64Array && cols.id instanceof BigInt64Array && cols.ok instanceof Uint8Array)
    assert.ok(Object.is(cols.amount[0], -0) && Number.isNaN(cols.amount[2]))
    assert.deepEqual([...cols.ok], [0, 1, 1])
    assert.deepEqual(cols.user, ['ünï', 'x', ''])
    assert.deepEqual(cols.payload, [null, Buffer.from([1, 2]), Buffer.alloc(0)])
    // String primary keys, in order.
    const s = await db.createTable('kv', { columns: { k: 'string', v: 'f64' }, primaryKey: 'k' })
    await s.upsert([{ k: 'b', v: 2 }, { k: 'a', v: 1 }, { k: '', v: 0 }])
    assert.deepEqual((await s.scanColumns({ columns: ['k'] })).k, ['', 'a', 'b'])
    await db.close()
  })

  test('schema errors name the row and column and apply nothing', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('events', SPEC)
    await rejectsWith(t.insert([row(1), { ...row(2), amount: 'x' }]), INVALID, /row 1, column "amount": expected f64/)
    await rejectsWith(t.upsert([row(1), { ...row(2), user: null }]), INVALID, /row 1, column "user": null/)
    const { ts, ...missing } = row(3)
    await rejectsWith(t.insert([row(1), missing]), INVALID, /row 1, column "ts": missing/)
    await rejectsWith(t.insert([row(1), { ...row(2), nope: 1 }]), INVALID, /row 1, column "nope": no such column/)
    await rejectsWith(t.insert([{ ...row(1), ts: 1.5 }]), INVALID, /row 0, column "ts"/)
    await rejectsWith(t.insert([{ ...row(1), ts: 2n ** 64n }]), INVALID, /row 0, column "ts"/)
    assert.deepEqual((await t.scanColumns({ columns: ['id'] })).id.length, 0)
    await t.insert(row(1))
    await rejectsWith(t.insert([row(2), row(1)]), INVALID, /row 1.*already exists/)
    assert.equal((await t.scanColumns({ columns: ['id'] })).id.length, 1)
    await rejectsWith(db.createTable('events', SPEC), INVALID, /already exists/)
    await rejectsWith(db.createTable('x', { columns: { a: 'f64' }, primaryKey: 'a' }), INVALID, /i64 or string/)
    await rejectsWith(db.createTable('x', { columns: { a: 'int' }, primaryKey: 'a' }), INVALID, /type must be/)
    assert.throws(() => db.table('missing'), { code: 'TOONDB_NOT_FOUND' })
    await rejectsWith(t.scanColumns({ columns: ['nope'] }), INVALID, /nope/)
    await db.close()
  })

  test('projection returns exactly the asked columns; bounds, reverse, limit, where', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('events', SPEC)
    await t.upsert(Array.from({ length: 100 }, (_, i) => row(i)))
    const rows = []
    for await (const r of t.scan({ columns: ['amount', 'id'], gt: 10n, lte: 20, reverse: true, limit: 3 })) rows.push(r)
    assert.deepEqual(rows, [
      { amount: 30, id: 20n },
      { amount: 28.5, id: 19n },
      { amount: 27, id: 18n },
    ])
    assert.deepEqual(Object.keys(rows[0]), ['amount', 'id'])
    assert.deepEqual(await t.get(7n, { columns: ['ok', 'ts'] }), { ok: false, ts: 1007n })
    const before = db.stats().tableReads[0].columns
    const got = await t.scanColumns({ columns: ['id', 'user'], where: { amount: { gte: 120 } } })
    assert.deepEqual(Object.keys(got), ['id', 'user'])
    assert.equal(got.id.length, 20)
    assert.equal(got.id[0], 80n)
    const afterStats = db.stats().tableReads[0]
    const delta = (name) =>
      afterStats.columns.find((c) => c.name === name).cellsRead - before.find((c) => c.name === name).cellsRead
    assert.equal(delta('amount'), 100) // the filter column: every row
    assert.equal(delta('user'), 20) // other columns: matching rows only
    assert.equal(delta('payload'), 0)
    assert.ok(afterStats.bytesRead > 0)
    await db.close()
  })

  test('a transaction writing a table and keys commits atomically or rolls back whole', async () => {
    const db = await Database.open(tmp.dir())
    await db.createTable('events', SPEC)
    let txn = db.transaction()
    await txn.table('events').insert([row(1), row(2)])
    txn.put('plain', 'v')
    assert.equal((await txn.table('events').scanColumns({ columns: ['id'] })).id.length, 2)
    assert.equal(await db.table('events').get(1n), null)
    txn.rollback()
    assert.equal(await db.table('events').get(1n), null)
    assert.equal(await db.get('plain'), null)

    txn = db.transaction()
    const tt = txn.table('events')
    await tt.insert(row(1))
    await tt.upsert(row(2))
    await tt.delete(1n)
    txn.put('plain', 'v')
    const snap = db.snapshot()
    await txn.commit()
    const t = db.table('events')
    assert.equal(await t.get(1n), null)
    assert.deepEqual(await t.get(2n), row(2))
    assert.deepEqual(await db.get('plain'), Buffer.from('v'))
    assert.equal(await snap.table('events').get(2n), null)
    await assert.rejects(snap.table('events').upsert(row(3)), { code: 'TOONDB_INVALID_ARGUMENT' })
    snap.release()

    // Concurrent inserts of one key: the second commit conflicts.
    const a = db.transaction()
    const b = db.transaction()
    await a.table('events').insert(row(9))
    await b.table('events').insert(row(9))
    await a.commit()
    await rejectsWith(b.commit(), 'TOONDB_CONFLICT')
    await db.close()
  })

  test('plain writes cannot use the reserved prefix and iterators skip it', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('events', SPEC)
    await t.upsert(row(1))
    await db.put(Buffer.from([0xff]), 'a')
    await db.put(Buffer.from([0xff, 0, 2]), 'b')
    await rejectsWith(db.put(Buffer.from([0xff, 0, 1, 5]), 'x'), 'TOONDB_INVALID_ARGUMENT', /reserved/)
    const keys = []
    for await (const [k] of db.iterator()) keys.push(k.toString('hex'))
    assert.deepEqual(keys, ['ff', 'ff0002'])
    const rev = []
    for await (const [k] of db.iterator({ reverse: true })) rev.push(k.toString('hex'))
    assert.deepEqual(rev, ['ff0002', 'ff'])
    await db.close()
  })

  test('packed column writes: typed arrays and arrays, validated, same rows as upsert', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('events', SPEC)
    const n = 50
    const rows = Array.from({ length: n }, (_, i) => row(i))
    const packed = {
      id: BigInt64Array.from(rows, (r) => r.id),
      ts: BigInt64Array.from(rows, (r) => r.ts),
      user: rows.map((r) => r.user),
      amount: Float64Array.from(rows, (r) => r.amount),
      ok: Uint8Array.from(rows, (r) => (r.ok ? 1 : 0)),
      payload: rows.map((r) => r.payload),
    }
    await t.insertColumns(packed)
    const viaRows = await db.createTable('rows', SPEC)
    await viaRows.upsert(rows)
    assert.deepEqual(await t.scanColumns(), await viaRows.scanColumns())
    await rejectsWith(t.insertColumns(packed), INVALID, /already exists/)
    // Upsert replaces; plain arrays work for every type (i64 as BigInt).
    await t.upsertColumns({ ...packed, id: [0n, 1n], ts: [5n, 6n], user: ['x', 'y'], amount: [NaN, -0], ok: [true, false], payload: [null, Buffer.alloc(0)] })
    const got = await t.get(1n)
    assert.equal(got.ts, 6n)
    assert.ok(Object.is(got.amount, -0))
    assert.deepEqual(got.payload, Buffer.alloc(0))
    // Errors name the column; nothing is applied.
    const before = await t.scanColumns()
    await rejectsWith(t.upsertColumns({ ...packed, amount: packed.amount.subarray(1) }), INVALID, /column "amount": 49 values/)
    await rejectsWith(t.upsertColumns({ ...packed, ts: Float64Array.from(rows, () => 1) }), INVALID, /column "ts": expected i64/)
    await rejectsWith(t.upsertColumns({ ...packed, ok: packed.ok.map(() => 2) }), INVALID, /row 0, column "ok": expected 0 or 1/)
    await rejectsWith(t.upsertColumns({ ...packed, user: rows.map(() => null) }), INVALID, /row 0, column "user"/)
    await rejectsWith(t.upsertColumns({ ...packed, nope: [] }), INVALID, /column "nope": no such column/)
    const { payload, ...missing } = packed
    await rejectsWith(t.upsertColumns(missing), INVALID, /column "payload": missing/)
    assert.deepEqual(await t.scanColumns(), before)
    // In a transaction, with the transaction.
    const txn = db.transaction()
    await txn.table('events').upsertColumns({ ...packed, id: BigInt64Array.of(1000n), ts: BigInt64Array.of(1n), user: ['t'], amount: Float64Array.of(1), ok: Uint8Array.of(1), payload: [null] })
    txn.rollback()
    assert.equal(await t.get(1000n), null)
    await db.close()
  })

  test('plain point reads of a reserved key fail like writes instead of returning a raw cell', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('events', SPEC)
    await t.upsert(row(1))
    await db.put(Buffer.from([0xff, 0, 2]), 'above')
    // The catalog entry of "events" lives under the reserved prefix.
    const catalog = Buffer.concat([Buffer.from([0xff, 0, 1]), Buffer.from('Cevents')])
    const throwsInvalid = (fn) =>
      assert.throws(fn, (err) => {
        assert.equal(err.code, 'TOONDB_INVALID_ARGUMENT', err.message)
        assert.match(err.message, /reserved/)
        return true
      })
    throwsInvalid(() => db.getSync(catalog))
    await rejectsWith(db.get(catalog), 'TOONDB_INVALID_ARGUMENT', /reserved/)
    await rejectsWith(db.getMany([Buffer.from([0xff, 0, 2]), catalog]), 'TOONDB_INVALID_ARGUMENT', /reserved/)
    const snap = db.snapshot()
    throwsInvalid(() => snap.getSync(catalog))
    await rejectsWith(snap.get(catalog), 'TOONDB_INVALID_ARGUMENT', /reserved/)
    snap.release?.()
    const txn = db.transaction()
    throwsInvalid(() => txn.getSync(catalog))
    await rejectsWith(txn.get(catalog), 'TOONDB_INVALID_ARGUMENT', /reserved/)
    txn.rollback()
    assert.equal(db.getSync(Buffer.from([0xff, 0, 2])).toString(), 'above')
    assert.equal((await t.get(1)).id, 1n)
    await db.close()
  })

  test('tables survive SIGKILL and reopen; dropTable removes the data', async () => {
    const dir = tmp.dir()
    const script = `
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      ;(async () => {
        const db = await Database.open(${JSON.stringify(dir)}, { sync: true })
        const t = await db.createTable('events', { columns: { id: 'i64', v: 'f64' }, primaryKey: 'id' })
        await t.upsert(Array.from({ length: 1000 }, (_, i) => ({ id: i, v: i / 2 })))
        process.kill(process.pid, 'SIGKILL')
      })()`
    const r = spawnSync(process.execPath, ['-e', script])
    assert.equal(r.signal, 'SIGKILL', r.stderr.toString())
    const db = await Database.open(dir)
    assert.deepEqual(db.tables().map((t) => t.name), ['events'])
    const cols = await db.table('events').scanColumns()
    assert.equal(cols.id.length, 1000)
    assert.equal(cols.v[999], 499.5)
    await db.dropTable('events')
    assert.throws(() => db.table('events'), { code: 'TOONDB_NOT_FOUND' })
    const again = await db.createTable('events', { columns: { id: 'i64', v: 'f64' }, primaryKey: 'id' })
    assert.equal((await again.scanColumns()).id.length, 0)
    await db.close()
  })

  test('compaction drops deleted rows', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('events', SPEC)
    const N = 20000
    for (let i = 0; i < N; i += 4000) await t.upsert(Array.from({ length: 4000 }, (_, j) => row(i + j)))
    await db.flush()
    await db.compact()
    const full = db.stats().tableBytes
    const gone = []
    for (let i = 0; i < N; i++) if (i % 10 !== 0) gone.push(BigInt(i))
    await t.delete(gone)
    await db.flush()
    await db.compact()
    const after = db.stats().tableBytes
    assert.ok(after * 4 < full, `table bytes ${full} -> ${after}`)
    assert.equal((await t.scanColumns({ columns: ['id'] })).id.length, N / 10)
    await db.close()
  })
})
