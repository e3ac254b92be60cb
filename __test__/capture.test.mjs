// A call captures what it was given: once put/delete/batch/chained-batch
// calls return, the caller may reuse, mutate or detach its buffers and every
// acknowledged write still holds exactly as issued. Also: one caller's input
// never fails another caller's write in the same write group, and each
// handle's own `sync` option governs its writes.
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import { Database, tempRoot } from './helpers.mjs'

const TIMEOUT = 60000
const tmp = tempRoot('capture')
after(() => tmp.cleanup())

async function entries(db) {
  const out = []
  for await (const [k, v] of db.iterator()) out.push([k.toString('latin1'), v.toString('latin1')])
  return out
}

// Detaches the ArrayBuffer behind `u8` (what transferring it to a worker does).
function detach(u8) {
  structuredClone(u8.buffer, { transfer: [u8.buffer] })
  assert.equal(u8.byteLength, 0, 'the test could not detach the buffer')
}

describe('writes capture their bytes during the call', { timeout: TIMEOUT }, () => {
  test('a reused key buffer gives one key per put', async () => {
    const db = await Database.open(tmp.dir())
    const key = Buffer.from('key\0\0\0')
    const ps = []
    for (let i = 0; i < 10; i++) {
      key.writeUInt16BE(i, 4)
      ps.push(db.put(key, 'value' + i))
    }
    await Promise.all(ps)
    const got = await entries(db)
    assert.equal(got.length, 10)
    for (let i = 0; i < 10; i++) {
      const k = Buffer.from('key\0\0\0')
      k.writeUInt16BE(i, 4)
      assert.equal(String(await db.get(k)), 'value' + i)
    }
    await db.close()
  })

  test('mutating a value after put, delete or batch changes nothing', async () => {
    const db = await Database.open(tmp.dir())
    const v = Buffer.from('original')
    const k = Buffer.from('k1')
    const p1 = db.put(k, v)
    v.write('MUTATED!')
    k.write('zz')
    const del = Buffer.from('gone')
    await db.put('gone', 'x')
    const p2 = db.delete(del)
    del.write('keep')
    await db.put('keep', 'kept')
    const bk = Buffer.from('b1')
    const bv = new Uint8Array([1, 2, 3])
    const p3 = db.batch([
      { type: 'put', key: bk, value: bv },
      { type: 'del', key: 'keep' },
    ])
    bk.write('b9')
    bv[0] = 99
    await Promise.all([p1, p2, p3])
    assert.equal(String(await db.get('k1')), 'original')
    assert.equal(await db.get('zz'), null)
    assert.equal(await db.get('gone'), null)
    assert.equal(await db.get('keep'), null)
    assert.deepEqual([...(await db.get('b1'))], [1, 2, 3])
    assert.equal(await db.get('b9'), null)
    await db.close()
  })

  test('a chained batch holds what was added, not what the buffer became', async () => {
    const db = await Database.open(tmp.dir())
    const b = db.batch()
    const v = Buffer.from('original')
    const k = Buffer.from('chained')
    b.put(k, v)
    v.write('MUTATED!')
    k.write('CHAINED')
    b.del(Buffer.from('nothing'))
    await b.write()
    assert.equal(String(await db.get('chained')), 'original')
    assert.equal(await db.get('CHAINED'), null)
    await db.close()
  })

  test('a batch reads each operation field once', async () => {
    const db = await Database.open(tmp.dir())
    let reads = 0
    const op = {
      type: 'put',
      get key() {
        reads++
        return reads === 1 ? 'first' : ''
      },
      value: 'v',
    }
    await db.batch([op])
    assert.equal(reads, 1)
    assert.equal(String(await db.get('first')), 'v')
    await db.close()
  })

  test('a buffer detached after put fails nobody', async () => {
    const db = await Database.open(tmp.dir())
    const key = new Uint8Array(new ArrayBuffer(4))
    key.set([0x6b, 0x65, 0x79, 0x31]) // "key1"
    const value = new Uint8Array(new ArrayBuffer(3))
    value.set([0x61, 0x62, 0x63])
    const p1 = db.put(key, value)
    detach(key)
    detach(value)
    const p2 = db.put('unrelated', 'x')
    const results = await Promise.allSettled([p1, p2])
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled'],
    )
    assert.equal(String(await db.get('key1')), 'abc')
    assert.equal(String(await db.get('unrelated')), 'x')
    await db.close()
  })

  test('a bad batch in a group leaves the other writes of the group alone', async () => {
    const db = await Database.open(tmp.dir())
    const p1 = db.put('a', '1')
    const bad = db.batch([{ type: 'put', key: 'b', value: '2' }, { type: 'put', key: '', value: '3' }])
    const p3 = db.put('c', '3')
    const [r1, r2, r3] = await Promise.allSettled([p1, bad, p3])
    assert.equal(r1.status, 'fulfilled')
    assert.equal(r2.status, 'rejected')
    assert.equal(r2.reason.code, 'TOONDB_INVALID_ARGUMENT')
    assert.equal(r3.status, 'fulfilled')
    assert.deepEqual(await entries(db), [
      ['a', '1'],
      ['c', '3'],
    ])
    await db.close()
  })
})

describe('each handle keeps its own options', { timeout: TIMEOUT }, () => {
  test("a second handle's sync: true makes its writes durable", async () => {
    const dir = tmp.dir()
    const relaxed = await Database.open(dir)
    const durable = await Database.open(dir, { sync: true })
    const before = durable.stats().walSyncs
    await durable.put('k', 'v')
    const afterDurable = durable.stats().walSyncs
    assert.ok(afterDurable > before, `a sync: true handle's put did no fdatasync (${before} -> ${afterDurable})`)
    // The first handle still writes without syncing by default.
    for (let i = 0; i < 5; i++) await relaxed.put('r' + i, 'v')
    assert.equal(relaxed.stats().walSyncs, afterDurable)
    // And the other way round: a sync: false handle on a sync: true engine.
    await relaxed.close()
    await durable.close()
    const first = await Database.open(dir, { sync: true })
    const second = await Database.open(dir, { sync: false })
    const s0 = first.stats().walSyncs
    for (let i = 0; i < 5; i++) await second.put('s' + i, 'v')
    assert.equal(second.stats().walSyncs, s0)
    await first.put('f', 'v')
    assert.ok(first.stats().walSyncs > s0)
    await first.close()
    await second.close()
  })
})

describe('range deletes and packed column writes capture their inputs', { timeout: TIMEOUT }, () => {
  test('clear(range) uses the bounds as they were at the call', async () => {
    const db = await Database.open(tmp.dir())
    await db.batch([...'abcdef'].map((k) => ({ type: 'put', key: k, value: 'v' })))
    const lo = Buffer.from('b')
    const hi = Buffer.from('d')
    const cleared = db.clear({ gte: lo, lt: hi })
    lo.write('a')
    hi.write('f')
    await cleared
    assert.deepEqual(
      (await entries(db)).map(([k]) => k),
      ['a', 'd', 'e', 'f'],
    )
    await db.close()
  })

  test('upsertColumns copies the typed arrays before it returns', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('t', { columns: { id: 'i64', x: 'f64' }, primaryKey: 'id' })
    const id = new BigInt64Array([1n, 2n])
    const x = new Float64Array([1.5, 2.5])
    const written = t.upsertColumns({ id, x })
    id[0] = 9n
    x[0] = 99
    x[1] = 99
    await written
    assert.deepEqual(await t.get(1n), { id: 1n, x: 1.5 })
    assert.deepEqual(await t.get(2n), { id: 2n, x: 2.5 })
    assert.equal(await t.get(9n), null)
    await db.close()
  })
})
