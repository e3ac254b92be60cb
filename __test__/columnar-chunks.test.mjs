// Column chunks from Node: db.compact() folds a table's cells into column
// chunks; every type still round-trips, scans (bounds, reverse, limit,
// where), scanColumns, get and transactions merge chunks with newer cells,
// and a chunked table with later writes survives SIGKILL.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { after, describe, test } from 'node:test'

import { Database, INDEX_JS, tempRoot } from './helpers.mjs'

const tmp = tempRoot('columnar-chunks')
after(() => tmp.cleanup())

const SPEC = {
  columns: { id: 'i64', ts: 'i64', user: 'string', amount: 'f64', ok: 'bool', payload: 'bytes' },
  primaryKey: 'id',
  nullable: ['payload'],
}

const row = (i) => ({
  id: BigInt(i),
  ts: 2n ** 60n + BigInt(i),
  user: `u${i % 3}`,
  amount: i % 11 === 0 ? NaN : i % 13 === 0 ? -0 : i * 1.5,
  ok: i % 2 === 0,
  payload: i % 4 === 0 ? null : Buffer.from([i & 255, 1, 2]),
})

async function rows(iter) {
  const out = []
  for await (const r of iter) out.push(r)
  return out
}

describe('column chunks', () => {
  test('compact chunks a table; reads merge chunks with newer cells', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('events', SPEC)
    const N = 6000
    const model = new Map()
    for (let i = 0; i < N; i += 2000) {
      const batch = Array.from({ length: 2000 }, (_, j) => row(i + j))
      await t.upsert(batch)
      for (const r of batch) model.set(r.id, r)
    }
    await db.flush()
    const before = db.stats().tableBytes
    await db.compact()
    assert.ok(db.stats().tableBytes < before, `${before} -> ${db.stats().tableBytes}`)
    assert.equal(db.stats().tableReads.find((x) => x.name === 'events').chunkedRows, N)
    // Newer cells over the chunks: an update, deletes, an insert.
    await t.upsert([{ ...row(5), user: 'changed', payload: null }])
    model.set(5n, { ...row(5), user: 'changed', payload: null })
    await t.delete([6n, 2048n])
    model.delete(6n)
    model.delete(2048n)
    await assert.rejects(t.insert([row(7)]), { code: 'TOONDB_INVALID_ARGUMENT' })
    await t.insert([row(N + 10)])
    model.set(BigInt(N + 10), row(N + 10))
    const want = [...model.values()].sort((a, b) => (a.id < b.id ? -1 : 1))

    const all = await rows(t.scan())
    assert.equal(all.length, want.length)
    // Row scans give a non-nullable bool as 0/1 (the column batch's
    // Uint8Array; as before chunks), get gives a boolean.
    assert.deepEqual(all, want.map((r) => ({ ...r, ok: Number(r.ok) })))
    const cols = await t.scanColumns({ columns: ['amount', 'id'] })
    assert.ok(cols.amount instanceof Float64Array && cols.id instanceof BigInt64Array)
    assert.deepEqual([...cols.id], want.map((r) => r.id))
    assert.ok(Object.is(cols.amount[want.findIndex((r) => r.id === 13n)], -0))
    assert.ok(Number.isNaN(cols.amount[want.findIndex((r) => r.id === 11n)]))
    const rev = await rows(t.scan({ columns: ['id', 'user'], gte: 3n, lt: 2050n, reverse: true, limit: 5 }))
    assert.deepEqual(rev.map((r) => r.id), [2049n, 2047n, 2046n, 2045n, 2044n])
    assert.deepEqual(Object.keys(rev[0]), ['id', 'user'])
    const where = await t.scanColumns({ columns: ['id'], where: { amount: { gte: 8000 } } })
    // f64 compares by IEEE total order: NaN is above every number.
    const matches = (r) => r.amount >= 8000 || Number.isNaN(r.amount)
    assert.deepEqual([...where.id], want.filter(matches).map((r) => r.id))
    assert.deepEqual(await t.get(5n, { columns: ['user', 'payload'] }), { user: 'changed', payload: null })
    assert.equal(await t.get(6n), null)
    assert.deepEqual(await t.get(4000n), row(4000))

    // A transaction: its own writes over chunks, rolled back whole.
    const txn = db.transaction()
    txn.table('events').delete([100n])
    txn.put(Buffer.from('k'), Buffer.from('v'))
    assert.equal(await txn.table('events').get(100n), null)
    txn.rollback()
    assert.deepEqual(await t.get(100n), row(100))
    assert.equal(db.getSync(Buffer.from('k')), null)
    assert.ok(db.stats().tableReads.find((x) => x.name === 'events').bytesRead > 0)
    await db.close()
  })

  test('a chunked table with later writes survives SIGKILL and reopen', async () => {
    const dir = tmp.dir()
    const script = `
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      ;(async () => {
        const db = await Database.open(${JSON.stringify(dir)}, { sync: true })
        const t = await db.createTable('events', { columns: { id: 'i64', v: 'f64' }, primaryKey: 'id' })
        await t.upsert(Array.from({ length: 5000 }, (_, i) => ({ id: i, v: i / 2 })))
        await db.compact()
        await t.upsert([{ id: 1, v: -1 }])
        await t.delete([2])
        process.kill(process.pid, 'SIGKILL')
      })()`
    const r = spawnSync(process.execPath, ['-e', script])
    assert.equal(r.signal, 'SIGKILL', r.stderr.toString())
    const db = await Database.open(dir)
    const cols = await db.table('events').scanColumns()
    assert.equal(cols.id.length, 4999)
    assert.deepEqual([...cols.v.slice(0, 3)], [0, -1, 1.5])
    assert.equal(cols.v[4998], 2499.5)
    await db.close()
  })
})
