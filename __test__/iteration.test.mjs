// Iteration additions of the native API: iterator.seek(), db.keys() and
// db.values(), and db.clear(range), checked against a sorted JS model, in
// memtables and table files.
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import { Database, assertCode, assertRejectsCode, tempRoot } from './helpers.mjs'

const TIMEOUT = 60000
const tmp = tempRoot('iteration')
after(() => tmp.cleanup())

const str = (b) => (b === undefined ? undefined : Buffer.from(b).toString())
const pairs = (entries) => entries.map(([k, v]) => [str(k), str(v)])
const k = (i) => `k${String(i).padStart(4, '0')}`

async function filled(n = 50, options) {
  const db = await Database.open(tmp.dir(), options)
  await db.batch(Array.from({ length: n }, (_, i) => ({ type: 'put', key: k(i), value: `v${i}` })))
  return db
}

describe('iterator.seek()', { timeout: TIMEOUT }, () => {
  test('moves forward and back within the range, forward and reverse', async () => {
    const db = await filled(50)
    for (const flushed of [false, true]) {
      if (flushed) await db.flush()
      const it = db.iterator({ gte: k(10), lt: k(40) })
      assert.deepEqual(pairs([it.nextSync()]), [[k(10), 'v10']])
      it.seek(k(30))
      assert.deepEqual(pairs(await it.nextv(2)), [[k(30), 'v30'], [k(31), 'v31']])
      it.seek(k(12)) // back again
      assert.deepEqual(str(it.nextSync()[0]), k(12))
      it.seek(k(5)) // before the range: the range's start
      assert.deepEqual(str(it.nextSync()[0]), k(10))
      it.seek(`${k(20)}x`) // between keys: the next one
      assert.deepEqual(str(it.nextSync()[0]), k(21))
      it.seek(k(45)) // past the range: the end
      assert.equal(it.nextSync(), undefined)
      await it.close()

      const rev = db.iterator({ gt: k(10), lte: k(40), reverse: true })
      assert.equal(str(rev.nextSync()[0]), k(40))
      rev.seek(k(20))
      assert.deepEqual(pairs(await rev.nextv(2)), [[k(20), 'v20'], [k(19), 'v19']])
      rev.seek(`${k(30)}x`)
      assert.equal(str(rev.nextSync()[0]), k(30))
      rev.seek(k(10)) // gt k(10): nothing at or below it
      assert.equal(rev.nextSync(), undefined)
      rev.seek('zzz') // above the range: its end (k(40))
      assert.equal(str(rev.nextSync()[0]), k(40))
      await rev.close()
    }
    await db.close()
  })

  test('keeps exclusive bounds exclusive and honours prefix', async () => {
    const db = await filled(50)
    const it = db.iterator({ gt: k(10) })
    it.seek(k(10))
    assert.equal(str(it.nextSync()[0]), k(11))
    await it.close()
    const p = db.iterator({ prefix: 'k002' })
    p.seek('k0000')
    assert.equal(str(p.nextSync()[0]), k(20))
    p.seek(k(25))
    assert.deepEqual((await p.all()).map(([key]) => str(key)), [k(25), k(26), k(27), k(28), k(29)])
    await db.close()
  })

  test('reads the snapshot the iterator started with, also after a flush', async () => {
    const db = await filled(20)
    const it = db.iterator()
    await db.put(k(5), 'changed')
    await db.del(k(6))
    await db.put('a-new', 'x')
    await db.flush()
    it.seek(k(5))
    assert.deepEqual(pairs(await it.nextv(2)), [[k(5), 'v5'], [k(6), 'v6']])
    it.seek('a')
    assert.equal(str(it.nextSync()[0]), k(0))
    await it.close()
    assert.equal(db.stats().liveSnapshots, 0, 'close() releases the iterator snapshot')
    await db.close()
  })

  test('seek uses the bounds as they were when the iterator was created', async () => {
    const db = await filled(20)
    const lower = Buffer.from(k(10))
    const it = db.iterator({ gte: lower })
    lower.write(k(0)) // the caller reuses its buffer
    it.seek(k(2))
    assert.equal(str(it.nextSync()[0]), k(10))
    await it.close()
    await db.close()
  })

  test('a limit counts the entries of all seeks together', async () => {
    const db = await filled(20)
    const it = db.iterator({ limit: 4 })
    assert.equal((await it.nextv(3)).length, 3)
    it.seek(k(10))
    assert.deepEqual((await it.nextv(10)).map(([key]) => str(key)), [k(10)])
    it.seek(k(0))
    assert.deepEqual(await it.nextv(10), [])
    await it.close()
    await db.close()
  })

  test('for await to the end, all(), break and close() release the snapshot; seek then throws TOONDB_CLOSED', async () => {
    const db = await filled(5)
    const it = db.iterator()
    // A database iterator's scan is its snapshot (seek restarts it on the
    // same data): one pin on the read timestamp.
    assert.equal(db.stats().liveSnapshots, 1)
    assert.equal((await it.nextv(10)).length, 5)
    assert.equal(it.nextSync(), undefined)
    assert.equal(db.stats().liveSnapshots, 1, 'nextSync/nextv at the end keep the snapshot, for seek()')
    it.seek(k(3))
    assert.equal(str(it.nextSync()[0]), k(3))
    assert.equal((await it.all()).length, 1)
    assert.equal(db.stats().liveSnapshots, 0)
    assertCode(catchSync(() => it.seek(k(0))), 'TOONDB_CLOSED', /create a new iterator/)
    let n = 0
    const loop = db.keys()
    for await (const _ of loop) n++
    assert.equal(n, 5)
    assert.equal(db.stats().liveSnapshots, 0)
    for (const _ of db.iterator()) n++ // plain for...of to the end
    for (const _ of db.iterator()) break
    assert.equal(n, 10)
    assert.equal(db.stats().liveSnapshots, 0)
    const early = db.iterator()
    early.nextSync()
    for await (const _ of early) break // return() releases
    assert.equal(db.stats().liveSnapshots, 0)
    assertCode(catchSync(() => early.seek(k(0))), 'TOONDB_CLOSED')
    assertCode(catchSync(() => db.iterator().seek('')), 'TOONDB_INVALID_ARGUMENT')
    assertCode(catchSync(() => db.iterator().seek(42)), 'TOONDB_INVALID_ARGUMENT')
    await db.close()
  })

  test('snapshot and transaction iterators seek too', async () => {
    const db = await filled(20)
    const snap = db.snapshot()
    await db.put(k(3), 'new')
    const it = snap.iterator()
    it.seek(k(3))
    assert.deepEqual(pairs([it.nextSync()]), [[k(3), 'v3']])
    it.nextSync()
    it.seek(k(3)) // after the snapshot iterator ran on: still the snapshot
    assert.deepEqual(pairs([it.nextSync()]), [[k(3), 'v3']])
    snap.release()

    const txn = db.transaction()
    txn.put(k(7), 'mine')
    const ti = txn.iterator()
    ti.seek(k(7))
    assert.deepEqual(pairs([ti.nextSync()]), [[k(7), 'mine']])
    txn.rollback()
    await db.close()
  })
})

describe('keys() and values()', { timeout: TIMEOUT }, () => {
  test('yield Buffers of keys or values with every range option', async () => {
    const db = await filled(30)
    await db.flush()
    await db.put(k(30), 'v30') // one entry in the memtable
    const keys = (await db.keys({ gte: k(25) }).all()).map(str)
    assert.deepEqual(keys, [k(25), k(26), k(27), k(28), k(29), k(30)])
    const values = (await db.values({ lt: k(3), reverse: true }).all()).map(str)
    assert.deepEqual(values, ['v2', 'v1', 'v0'])
    const limited = []
    for await (const key of db.keys({ prefix: 'k001', limit: 3 })) limited.push(str(key))
    assert.deepEqual(limited, [k(10), k(11), k(12)])
    const it = db.values()
    it.seek(k(29))
    assert.deepEqual((await it.all()).map(str), ['v29', 'v30'])
    assert.ok(Buffer.isBuffer(db.keys().nextSync()))

    const snap = db.snapshot()
    await db.del(k(0))
    assert.equal(str(snap.keys().nextSync()), k(0))
    assert.equal(str(db.keys().nextSync()), k(1))
    snap.release()
    const txn = db.transaction()
    txn.put('a', 'mine')
    assert.deepEqual((await txn.values({ limit: 2 }).all()).map(str), ['mine', 'v1'])
    txn.rollback()
    await db.close()
  })
})

describe('db.clear()', { timeout: TIMEOUT }, () => {
  test('deletes a range, in memtable and tables; a range delete resolves undefined, a limited clear with the count', async () => {
    const db = await filled(50)
    await db.flush()
    await db.batch([{ type: 'put', key: k(50), value: 'v50' }])
    assert.equal(await db.clear({ gte: k(10), lt: k(20) }), undefined)
    assert.equal(await db.clear({ prefix: 'k004' }), undefined)
    assert.equal(await db.clear({ gt: k(35), limit: 2 }), 2)
    assert.equal(await db.clear({ lte: k(4), reverse: true, limit: 2 }), 2)
    const left = (await db.keys().all()).map(str)
    const model = Array.from({ length: 51 }, (_, i) => i)
      .filter((i) => !(i >= 10 && i < 20) && !(i >= 40 && i < 50) && i !== 36 && i !== 37 && i !== 3 && i !== 4)
      .map(k)
    assert.deepEqual(left, model)
    assert.equal(await db.clear(), undefined)
    assert.deepEqual(await db.keys().all(), [])
    assert.equal(await db.clear({ limit: 5 }), 0)
    assert.equal(db.stats().liveSnapshots, 0)
    await db.close()
  })

  test('clears more keys than one chunk, and leaves keys written after it began', async () => {
    const db = await filled(2500)
    const cleared = db.clear({ sync: true }, { sync: true })
    await db.put('zz-after', 'kept') // issued after clear() took its snapshot
    assert.equal(await cleared, undefined)
    assert.deepEqual((await db.keys().all()).map(str), ['zz-after'])
    await db.close()
  })

  test('a range delete is ordered with writes around it and keeps older snapshots whole', async () => {
    const db = await filled(100)
    const snap = db.snapshot()
    const before = db.put(k(5), 'issued-before') // same tick, before clear(): deleted
    const cleared = db.clear({ lt: k(50) })
    const after = db.put(k(6), 'issued-after') // after clear(): survives
    await Promise.all([before, cleared, after])
    assert.equal(db.getSync(k(5)), null)
    assert.equal(str(db.getSync(k(6))), 'issued-after')
    assert.equal((await db.keys().all()).length, 51)
    assert.equal((await snap.keys().all()).length, 100, 'the snapshot predates the clear')
    snap.release()
    await db.flush()
    await db.compact()
    assert.equal((await db.keys({ reverse: true }).all()).length, 51)
    await db.close()
  })

  test('rejects bad arguments with TOONDB_INVALID_ARGUMENT and closed databases with TOONDB_CLOSED', async () => {
    const db = await filled(3)
    await assertRejectsCode(() => db.clear({ gt: 5 }), 'TOONDB_INVALID_ARGUMENT')
    await assertRejectsCode(() => db.clear({}, { sync: 'yes' }), 'TOONDB_INVALID_ARGUMENT')
    await assertRejectsCode(() => db.clear('a'), 'TOONDB_INVALID_ARGUMENT')
    assert.equal((await db.keys().all()).length, 3, 'a rejected clear deletes nothing')
    await db.close()
    await assertRejectsCode(() => db.clear(), 'TOONDB_CLOSED')
  })
})

function catchSync(fn) {
  try {
    fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a throw')
}

test('packed batches: entries, keys and values of mixed sizes (one larger than a batch) read back exactly', async () => {
  const db = await Database.open(tmp.dir())
  try {
    const model = new Map()
    const big = Buffer.alloc(9 << 20, 0xab) // past the 8 MiB a packed batch keeps between calls
    for (let i = 0; i < 300; i++) {
      const k = Buffer.from(`k${String(i).padStart(4, '0')}`)
      const v = i === 150 ? big : Buffer.from('v'.repeat(i % 7) + i) // includes lengths not a multiple of 4
      model.set(k.toString(), v)
    }
    const b = db.batch()
    for (const [k, v] of model) b.put(k, v)
    await b.write()
    const want = [...model.entries()]
    const got = []
    for (const [k, v] of db.iterator()) got.push([k.toString(), v])
    assert.equal(got.length, want.length)
    // Yielded views are Buffers in every way a caller can check.
    for (const v of [got[0][1], got[150][1]]) {
      assert.ok(Buffer.isBuffer(v) && v instanceof Buffer && v.constructor === Buffer)
      assert.equal(Object.getPrototypeOf(v), Buffer.prototype)
      assert.deepStrictEqual(v, Buffer.from(v))
      assert.equal(typeof v.readUInt8, 'function')
      assert.ok(Buffer.isBuffer(v.subarray(0, 1)) && Buffer.isBuffer(v.slice(0, 1)))
    }
    for (let i = 0; i < want.length; i++) {
      assert.equal(got[i][0], want[i][0])
      assert.ok(got[i][1].equals(want[i][1]), `value of ${want[i][0]}`)
    }
    const keys = []
    for await (const k of db.keys({ gte: 'k0100', limit: 120 })) keys.push(k.toString())
    assert.deepEqual(keys, want.slice(100, 220).map(([k]) => k))
    const values = []
    for (const v of db.values({ reverse: true, limit: 160 })) values.push(v)
    assert.equal(values.length, 160)
    values.forEach((v, i) => assert.ok(v.equals(want[want.length - 1 - i][1])))
    // The sync iterator follows the iterator protocol: return() and throw()
    // end it (and release its snapshot) like a generator's.
    const it = db.iterator()[Symbol.iterator]()
    assert.equal(it[Symbol.iterator](), it)
    assert.equal(it.next().value[0].toString(), 'k0000')
    assert.deepEqual(it.return(7), { done: true, value: 7 })
    const it2 = db.iterator()[Symbol.iterator]()
    assert.throws(() => it2.throw(new Error('stop')), /stop/)
  } finally {
    await db.close()
  }
})

test('a database iterator seeks within the data it started with (writes, deletes, flush and compaction after it was made stay unseen)', async () => {
  const db = await Database.open(tmp.dir())
  try {
    const key = (i) => `k${String(i).padStart(3, '0')}`
    for (let i = 0; i < 50; i++) await db.put(key(i), `v${i}`)
    const it = db.iterator({ gte: key(10), lt: key(40) })
    assert.equal(it.nextSync()[0].toString(), key(10))
    await db.put(key(20), 'changed')
    await db.del(key(21))
    await db.put(key(25) + 'x', 'new')
    await db.flush()
    await db.compact()
    it.seek(key(20))
    const seen = []
    for (let e = it.nextSync(); e !== undefined; e = it.nextSync()) seen.push(`${e[0]}=${e[1]}`)
    assert.deepEqual(seen, Array.from({ length: 20 }, (_, j) => `${key(20 + j)}=v${20 + j}`))
    // seek() before the iterator's own lower bound stays inside its range.
    it.seek(key(0))
    assert.equal(it.nextSync()[0].toString(), key(10))
    await it.close()
    assertCode(catchSync(() => it.seek(key(0))), 'TOONDB_CLOSED')
    // A new iterator sees the writes.
    const now = []
    for (const [k2, v] of db.iterator({ gte: key(20), lt: key(22) })) now.push(`${k2}=${v}`)
    assert.deepEqual(now, [`${key(20)}=changed`])
  } finally {
    await db.close()
  }
})
