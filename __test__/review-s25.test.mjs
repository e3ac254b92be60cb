// Review s25: raw N-API iterators (scanOpen/scanNext/scanSeek/scanClose,
// packed batches viewed as Buffers) and getMany's raw readMany, against a
// JS model and getSync.
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import { Database, INDEX_JS, assertCode, assertRejectsCode, lastJson, runNode, tempRoot } from './helpers.mjs'

const TIMEOUT = 120000
const tmp = tempRoot('review-s25')
after(() => tmp.cleanup())

const k = (i) => `k${String(i).padStart(4, '0')}`
const str = (b) => (b === undefined ? undefined : Buffer.from(b).toString('latin1'))

// xorshift, so a failure reproduces.
function rng(seed) {
  let s = seed >>> 0 || 1
  return (n) => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s % n
  }
}

function modelRange(model, o) {
  const inside = (key) =>
    (o.gt === undefined || key > o.gt) &&
    (o.gte === undefined || key >= o.gte) &&
    (o.lt === undefined || key < o.lt) &&
    (o.lte === undefined || key <= o.lte) &&
    (o.prefix === undefined || key.startsWith(o.prefix))
  let out = [...model.keys()].filter(inside).sort()
  if (o.reverse) out.reverse()
  if (o.limit !== undefined) out = out.slice(0, o.limit)
  return out.map((key) => [key, model.get(key)])
}

function randomOptions(r, n) {
  const o = {}
  const point = () => (r(3) === 0 ? `${k(r(n + 2))}5` : k(r(n + 2)))
  const lo = r(3)
  if (lo === 1) o.gte = point()
  if (lo === 2) o.gt = point()
  const hi = r(3)
  if (hi === 1) o.lte = point()
  if (hi === 2) o.lt = point()
  if (r(5) === 0) o.prefix = `k00${r(3)}`
  if (r(2) === 0) o.reverse = true
  if (r(3) === 0) o.limit = r(40)
  // Bounds given as Buffers or Uint8Arrays too.
  for (const b of ['gt', 'gte', 'lt', 'lte', 'prefix']) {
    if (o[b] !== undefined && r(3) === 0) o[b] = r(2) ? Buffer.from(o[b]) : new Uint8Array(Buffer.from(o[b]))
  }
  return o
}

const asStrings = (o) => Object.fromEntries(Object.entries(o).map(([a, b]) => [a, b instanceof Uint8Array ? str(b) : b]))

describe('iterators against a model', { timeout: TIMEOUT }, () => {
  test('bounds, reverse, limit, prefix, keys()/values(), seek with a limit across seeks, after flush/compact/clear', async () => {
    const db = await Database.open(tmp.dir(), { memtableSize: 16 << 10, targetFileSize: 8 << 10, blockSize: 512 })
    const r = rng(25)
    const n = 400
    const model = new Map()
    for (let round = 0; round < 25; round++) {
      const ops = []
      for (let j = 0; j < 80; j++) {
        const i = r(n)
        if (r(5) === 0) {
          ops.push({ type: 'del', key: k(i) })
          model.delete(k(i))
        } else {
          const v = `v${round}-${i}-${'x'.repeat(r(3) === 0 ? 300 : r(20))}`
          ops.push({ type: 'put', key: k(i), value: v })
          model.set(k(i), v)
        }
      }
      await db.batch(ops)
      if (r(4) === 0) {
        const a = r(n)
        const b = a + r(40)
        await db.clear({ gte: k(a), lt: k(b) })
        for (const key of [...model.keys()]) if (key >= k(a) && key < k(b)) model.delete(key)
      }
      if (round % 6 === 3) await db.flush()
      if (round % 8 === 7) await db.compact()
      for (let t = 0; t < 8; t++) {
        const o = randomOptions(r, n)
        const so = asStrings(o)
        const want = modelRange(model, so)
        const got = (await db.iterator(o).all()).map(([a, b]) => [str(a), str(b)])
        assert.deepEqual(got, want, JSON.stringify(so))
        const keys = []
        for (const key of db.keys(o)) keys.push(str(key))
        assert.deepEqual(keys, want.map((e) => e[0]), `keys ${JSON.stringify(so)}`)
        const values = []
        for await (const v of db.values(o)) values.push(str(v))
        assert.deepEqual(values, want.map((e) => e[1]), `values ${JSON.stringify(so)}`)
      }
      // Seeks: the data as of the iterator's creation, whatever happens
      // after; a limit counts across seeks.
      const o = randomOptions(r, n)
      const so = asStrings(o)
      const frozen = new Map(model)
      const it = db.iterator(o)
      const first = it.nextSync()
      let yielded = first === undefined ? 0 : 1
      await db.batch([
        { type: 'put', key: k(r(n)), value: 'later' },
        { type: 'del', key: k(r(n)) },
      ])
      await db.clear({ gte: k(r(n)), lt: k(n) })
      if (r(2) === 0) await db.flush()
      if (r(3) === 0) await db.compact()
      for (let s = 0; s < 3; s++) {
        const target = k(r(n))
        it.seek(target)
        const seekOpts = { ...so }
        if (so.reverse) {
          if (seekOpts.lt === undefined || target < seekOpts.lt) {
            if (seekOpts.lte === undefined || target < seekOpts.lte) {
              delete seekOpts.lt
              seekOpts.lte = target
            }
          }
        } else if (seekOpts.gt === undefined || target > seekOpts.gt) {
          if (seekOpts.gte === undefined || target > seekOpts.gte) {
            delete seekOpts.gt
            seekOpts.gte = target
          }
        }
        if (so.limit !== undefined) seekOpts.limit = Math.max(0, so.limit - yielded)
        const want = modelRange(frozen, seekOpts).slice(0, 5)
        const got = (await it.nextv(5)).map(([a, b]) => [str(a), str(b)])
        yielded += got.length
        assert.deepEqual(got, want, `seek ${target} in ${JSON.stringify(so)}`)
      }
      await it.close()
      // Bring the model up to date with what the seek round wrote.
      model.clear()
      for (const [a, b] of await db.iterator().all()) model.set(str(a), str(b))
    }
    assert.equal(db.stats().liveSnapshots, 0)
    await db.close()
  })
})

describe('iterator Buffers and lifetimes', { timeout: TIMEOUT }, () => {
  test('yielded Buffers are independent of each other, later batches and stored data', async () => {
    const db = await Database.open(tmp.dir())
    await db.batch(Array.from({ length: 300 }, (_, i) => ({ type: 'put', key: k(i), value: `value-${i}` })))
    const it = db.iterator()
    const all = []
    for (let e = it.nextSync(); e !== undefined; e = it.nextSync()) all.push(e)
    for (const [key, value] of all) {
      assert.ok(Buffer.isBuffer(key) && Buffer.isBuffer(value))
      key.fill(0x21)
      value.fill(0x22)
    }
    const again = await db.iterator().all()
    assert.equal(again.length, 300)
    again.forEach(([key, value], i) => {
      assert.equal(str(key), k(i))
      assert.equal(str(value), `value-${i}`)
    })
    assert.equal(db.getSync(k(7)).toString(), 'value-7')
    await db.close()
  })

  test('values near and past the 4 MiB batch budget, in memtables and tables', async () => {
    const db = await Database.open(tmp.dir())
    const sizes = [5, (4 << 20) - 7, 3, 6 << 20, 9 << 20, 1, 4 << 20]
    for (let i = 0; i < sizes.length; i++) await db.put(k(i), Buffer.alloc(sizes[i], i + 1))
    for (const flushed of [false, true]) {
      if (flushed) {
        await db.flush()
        await db.compact()
      }
      for (const reverse of [false, true]) {
        const got = await db.iterator({ reverse }).all()
        const want = sizes.map((s, i) => [k(i), s, i + 1])
        if (reverse) want.reverse()
        assert.deepEqual(got.map(([a, v]) => [str(a), v.length, v.length ? v[v.length - 1] : undefined]), want.map(([a, s, b]) => [a, s, b]))
      }
      const vals = await db.getMany(sizes.map((_, i) => k(i)))
      assert.deepEqual(vals.map((v) => v.length), sizes)
      vals.forEach((v, i) => assert.ok(v.every((b) => b === i + 1)))
    }
    await db.close()
  })

  test('an iterator read to its end (not closed) pins its timestamp only, not replaced table files', async () => {
    const fs = await import('node:fs')
    const dir = tmp.dir()
    const db = await Database.open(dir, { memtableSize: 64 << 10, autoCompaction: false })
    await db.batch(Array.from({ length: 2000 }, (_, i) => ({ type: 'put', key: k(i), value: `first-${i}` })))
    await db.flush()
    const it = db.iterator()
    let n = 0
    while (it.nextSync() !== undefined) n++
    assert.equal(n, 2000)
    for (let r = 0; r < 3; r++) {
      await db.batch(Array.from({ length: 2000 }, (_, i) => ({ type: 'put', key: k(i), value: `later-${r}` })))
      await db.flush()
      await db.compact()
    }
    const ssts = fs.readdirSync(dir).filter((f) => f.endsWith('.sst')).length
    assert.equal(ssts, db.stats().tables, 'replaced table files stay on disk while the ended iterator lives')
    assert.equal(db.stats().liveSnapshots, 1, 'the ended iterator keeps its snapshot (documented), for seek()')
    it.seek(k(7))
    assert.deepEqual((await it.nextv(2)).map(([a, b]) => [str(a), str(b)]), [[k(7), 'first-7'], [k(8), 'first-8']])
    await it.close()
    assert.equal(db.stats().liveSnapshots, 0)
    await db.close()
  })

  test('zero-copy values from get/getSync/getMany stay valid and writable after close unmapped the tables', async () => {
    const db = await Database.open(tmp.dir(), { compression: 'none' })
    for (let i = 0; i < 20; i++) await db.put(k(i), Buffer.alloc(40000 + i, i + 1))
    await db.flush()
    await db.compact()
    const held = [await db.get(k(1)), db.getSync(k(2)), ...(await db.getMany([k(3), k(4), k(3)]))]
    const it = db.values()
    held.push(it.nextSync())
    await db.close()
    const want = [2, 3, 4, 5, 4, 1]
    held.forEach((b, j) => {
      assert.ok(b.every((x) => x === want[j]), `value ${j}`)
      b.fill(0xee)
      assert.ok(b.every((x) => x === 0xee))
    })
    // The rest of the batch already read, then TOONDB_CLOSED.
    assert.throws(() => {
      while (it.nextSync() !== undefined);
    }, (err) => err.code === 'TOONDB_CLOSED')
    await it.close()
  })

  test('a database closed mid-iteration: TOONDB_CLOSED from next and seek, no crash', async () => {
    const db = await Database.open(tmp.dir())
    await db.batch(Array.from({ length: 500 }, (_, i) => ({ type: 'put', key: k(i), value: 'v' })))
    await db.flush()
    const it = db.iterator()
    const held = db.iterator({ reverse: true })
    assert.ok(it.nextSync())
    await db.close()
    let caught = null
    try {
      while (it.nextSync() !== undefined);
    } catch (err) {
      caught = err
    }
    assertCode(caught, 'TOONDB_CLOSED')
    try {
      held.seek(k(3))
      assert.fail('seek on a closed database')
    } catch (err) {
      assertCode(err, 'TOONDB_CLOSED')
    }
    await it.close()
    await held.close()
    try {
      it.seek(k(1))
      assert.fail('seek after close()')
    } catch (err) {
      assertCode(err, 'TOONDB_CLOSED')
    }
  })
})

describe('getMany (readMany)', { timeout: TIMEOUT }, () => {
  test('equals getSync for every key form, sizes around the pack limits, absent keys, duplicates', async () => {
    const db = await Database.open(tmp.dir(), { compression: 'none' })
    const long = 'L'.repeat(300)
    const nonAscii = 'ключ-🙂-é'
    const keyed = {
      a: 0,
      b: 1,
      [long]: 4095,
      [`${long}é`]: 4096,
      [nonAscii]: 20000,
      big1: 600 << 10,
      big2: 600 << 10,
      empty: 0,
    }
    for (const [key, size] of Object.entries(keyed)) await db.put(key, Buffer.alloc(size, size & 255 || 1))
    const forms = (key) => [key, Buffer.from(key), new Uint8Array(Buffer.from(key)), Buffer.from(`xx${key}`).subarray(2)]
    for (const flushed of [false, true]) {
      if (flushed) await db.flush()
      const all = Object.keys(keyed)
      for (const pick of [['a', 'b'], ['a', 'nope', 'b', 'a'], all, ['big1', 'big2', 'a'], [long, `${long}é`, nonAscii], [], ['nope']]) {
        for (let f = 0; f < 4; f++) {
          const keys = pick.map((key) => forms(key)[f])
          const got = await db.getMany(keys)
          assert.equal(got.length, keys.length)
          got.forEach((v, i) => assert.deepEqual(v, db.getSync(keys[i]), `key ${pick[i]} form ${f}`))
        }
      }
      // Values are independent Buffers.
      const [x, y] = await db.getMany(['a', 'b'])
      if (y) y.fill(9)
      assert.deepEqual(db.getSync('b'), Buffer.alloc(1, 1))
      assert.equal(x.length, 0)
    }
    // Keys captured at the call.
    const key = Buffer.from('a')
    const p = db.getMany([key, 'b'])
    key[0] = 0x62
    assert.deepEqual((await p).map((v) => v.length), [0, 1])
    // Bad keys mid-array and a closed database reject.
    await assertRejectsCode(() => db.getMany(['a', 5, 'b']), 'TOONDB_INVALID_ARGUMENT')
    await assertRejectsCode(() => db.getMany(['a', null]), 'TOONDB_INVALID_ARGUMENT')
    await db.close()
    await assertRejectsCode(() => db.getMany(['a']), 'TOONDB_CLOSED')
  })

  test('small values totalling more than the 1 MiB pack limit, mixed with absent and large ones', async () => {
    const db = await Database.open(tmp.dir(), { compression: 'none' })
    const keys = []
    const want = []
    for (let i = 0; i < 400; i++) {
      const size = i % 50 === 7 ? 40000 : 4000 - (i % 5)
      if (i % 9 !== 3) {
        await db.put(k(i), Buffer.alloc(size, i & 255))
        want.push(Buffer.alloc(size, i & 255))
      } else want.push(null)
      keys.push(k(i))
    }
    for (const flushed of [false, true]) {
      if (flushed) await db.flush()
      const got = await db.getMany(keys)
      assert.equal(got.length, want.length)
      got.forEach((v, i) => assert.deepEqual(v, want[i], `key ${i}`))
      got.forEach((v) => v && v.fill(1))
      assert.deepEqual(db.getSync(k(0)), want[0])
    }
    await db.close()
  })

  test('a key array whose accessor throws when the native side reads it: getMany rejects with that error', async () => {
    const db = await Database.open(tmp.dir())
    await db.put('a', 'A')
    const keys = ['a', 'b']
    let reads = 0
    Object.defineProperty(keys, 1, {
      enumerable: true,
      get() {
        if (++reads === 2) throw new Error('getter boom')
        return 'b'
      },
    })
    await assert.rejects(db.getMany(keys), /getter boom/)
    assert.deepEqual((await db.getMany(['a'])).map(String), ['A'])
    await db.close()
  })

  test('a key array whose accessor calls getMany again does not abort the process', async () => {
    const script = `
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      ;(async () => {
        const db = await Database.open(${JSON.stringify(tmp.dir())})
        await db.put('a', 'A')
        await db.put('b', 'B')
        const keys = ['a', 'b']
        let reads = 0
        let inner
        Object.defineProperty(keys, 1, {
          enumerable: true,
          get() {
            // index.js checks each key once; the native side reads it again.
            if (++reads === 2) inner = db.getMany(['b', 'a'])
            return 'b'
          },
        })
        const outer = await db.getMany(keys)
        const nested = await inner
        console.log(JSON.stringify({ outer: outer.map(String), nested: nested.map(String) }))
        await db.close()
      })()
    `
    const res = await runNode(script, { timeoutMs: 30000 })
    assert.equal(res.signal, null, `child died: ${res.stderr.slice(0, 400)}`)
    assert.equal(res.code, 0, res.stderr.slice(0, 400))
    assert.deepEqual(lastJson(res.stdout), { outer: ['A', 'B'], nested: ['B', 'A'] })
  })
})

describe('worker threads', { timeout: TIMEOUT }, () => {
  test('iterators and getMany on several JS threads at once (each its own pack buffers)', async () => {
    const { Worker } = await import('node:worker_threads')
    const dir = tmp.dir()
    const db = await Database.open(dir)
    await db.batch(Array.from({ length: 3000 }, (_, i) => ({ type: 'put', key: k(i), value: `v${k(i)}${'.'.repeat(i % 200)}` })))
    await db.flush()
    const source = `
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      const { parentPort, workerData } = require('node:worker_threads')
      const k = (i) => 'k' + String(i).padStart(4, '0')
      ;(async () => {
        const db = await Database.open(workerData.dir)
        let n = 0, bad = 0
        for (let r = 0; r < 150; r++) {
          const lo = (r * 37 + workerData.t * 11) % 2900
          for (const [key, v] of db.iterator({ gte: k(lo), limit: 100, reverse: r % 2 === 1 })) {
            n++
            if (!v.toString().startsWith('v' + key.toString())) bad++
          }
          const m = await db.getMany([k(lo), 'nope', k(lo + 1)])
          if (!m[0].toString().startsWith('v' + k(lo)) || m[1] !== null || !m[2].toString().startsWith('v' + k(lo + 1))) bad++
        }
        await db.close()
        parentPort.postMessage({ n, bad })
      })()
    `
    const workers = [1, 2, 3].map(
      (t) =>
        new Promise((resolve, reject) => {
          const w = new Worker(source, { eval: true, workerData: { dir, t } })
          w.on('message', resolve)
          w.on('error', reject)
        }),
    )
    let bad = 0
    for (let r = 0; r < 150; r++) {
      for (const [key, v] of db.iterator({ gte: k((r * 53) % 2900), limit: 100 })) {
        if (!v.toString().startsWith(`v${key}`)) bad++
      }
    }
    const results = await Promise.all(workers)
    assert.equal(bad, 0)
    for (const r of results) assert.deepEqual(r, { n: 15000, bad: 0 })
    assert.equal(db.stats().liveSnapshots, 0)
    await db.close()
  })
})
