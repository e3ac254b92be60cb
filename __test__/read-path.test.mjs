// getSync's raw native read path (src/fastget.rs): every key form, long
// keys, values past the 64 KiB scratch buffer, absent keys, errors.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { after, describe, test } from 'node:test'

import { Database, assertCode, tempRoot } from './helpers.mjs'

const require = createRequire(import.meta.url)
const tmp = tempRoot('readpath')
after(() => tmp.cleanup())

describe('getSync fast path', () => {
  test('string, Buffer and Uint8Array keys, long and multi-byte keys, large values', async () => {
    const db = await Database.open(tmp.dir())
    try {
      const long = 'k'.repeat(255) + 'é' + 'x'.repeat(3000) // crosses the 256-byte stack buffer
      const edge = 'a'.repeat(256)
      const big = Buffer.alloc(200 * 1024, 7) // larger than the 64 KiB scratch buffer
      await db.put('plain', 'v1')
      await db.put('ключ🙂', 'v2')
      await db.put(long, 'v3')
      await db.put(edge, 'v4')
      await db.put('big', big)
      await db.put(Buffer.from([0, 1, 2]), 'v5')
      await db.put('empty-value', '')
      for (const round of ['memtable', 'tables']) {
        assert.equal(db.getSync('plain').toString(), 'v1', round)
        assert.equal(db.getSync(Buffer.from('plain')).toString(), 'v1', round)
        assert.equal(db.getSync(new Uint8Array(Buffer.from('plain'))).toString(), 'v1', round)
        assert.equal(db.getSync('ключ🙂').toString(), 'v2', round)
        assert.equal(db.getSync(long).toString(), 'v3', round)
        assert.equal(db.getSync(edge).toString(), 'v4', round)
        assert.equal(db.getSync('a'.repeat(255)), null, round)
        assert.deepEqual(db.getSync('big'), big, round)
        assert.equal(db.getSync(new Uint8Array([0, 1, 2])).toString(), 'v5', round)
        assert.equal(db.getSync('empty-value').length, 0, round)
        assert.equal(db.getSync('missing'), null, round)
        assert.equal((await db.get('plain')).toString(), 'v1', round)
        // The returned Buffer is the caller's: a later read does not change it.
        const v = db.getSync('plain')
        db.getSync('ключ🙂')
        assert.equal(v.toString(), 'v1', round)
        await db.flush()
      }
      await db.delete('plain')
      assert.equal(db.getSync('plain'), null)
    } finally {
      await db.close()
    }
  })

  test('values share a read pool: every one stays its own across pool turns, writes into one touch nothing else', async () => {
    const db = await Database.open(tmp.dir())
    try {
      // Sizes around the pool's 4 KiB reserve and 8-byte alignment, many
      // pools' worth, read twice: from the memtable and from a table.
      const sizes = []
      for (let i = 0; i < 600; i++) sizes.push([0, 1, 7, 8, 9, 100, 4095, 4096, 5000][i % 9] + (i % 13))
      const value = (i) => Buffer.alloc(sizes[i], (i * 31 + 7) & 0xff)
      for (let i = 0; i < sizes.length; i++) await db.put(`k${i}`, value(i))
      for (const round of ['memtable', 'tables']) {
        const got = []
        for (let i = 0; i < sizes.length; i++) got.push(i % 2 ? db.getSync(`k${i}`) : await db.get(`k${i}`))
        // Scribble over every returned Buffer's own bytes, one by one, and
        // check that no other value changed.
        for (let i = 0; i < got.length; i++) {
          assert.deepEqual(got[i], value(i), `${round} ${i}`)
          got[i].fill(0xee)
          if (i + 1 < got.length) assert.deepEqual(got[i + 1], value(i + 1), `${round} ${i + 1} after writing into ${i}`)
        }
        // The stored data did not change either.
        for (let i = 0; i < sizes.length; i += 37) assert.deepEqual(db.getSync(`k${i}`), value(i), `${round} reread ${i}`)
        await db.flush()
      }
    } finally {
      await db.close()
    }
  })

  test('errors keep their codes', async () => {
    const db = await Database.open(tmp.dir())
    await db.put('a', 'b')
    assert.throws(() => db.getSync(42), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
    assert.throws(() => db.getSync(''), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
    await db.close()
    assert.throws(() => db.getSync('a'), (err) => (assertCode(err, 'TOONDB_CLOSED'), true))
    // The raw entry point refuses anything but its own handle and a Uint8Array.
    const native = require('../native.js')
    assert.throws(() => native.readInto({}, 'a', Buffer.alloc(8)), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
    assert.throws(() => native.readInto(), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
    // An offset past the end of `out`, or not a number, is refused before any read.
    const dir = tmp.dir()
    const db2 = await Database.open(dir)
    await db2.put('a', 'b')
    await db2.close()
    const nd = native.NativeDatabase.openSync(dir, {}, () => {})
    try {
      const handle = nd.readHandle()
      assert.throws(() => native.readInto(handle, 'a', Buffer.alloc(8), 9), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      assert.throws(() => native.readInto(handle, 'a', Buffer.alloc(8), 'x'), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      const out = Buffer.alloc(8, 0)
      assert.equal(native.readInto(handle, 'a', out, 7), 1)
      assert.deepEqual([...out], [0, 0, 0, 0, 0, 0, 0, 0x62])
      // No room left at the offset: the value comes back as a Buffer of its own.
      assert.deepEqual(native.readInto(handle, 'a', out, 8), Buffer.from('b'))
      assert.equal(native.readInto(handle, 'zz', out, 8), -1)
      // `out` may be an ArrayBuffer (what index.js passes: its read pool's);
      // other views and values are refused.
      const ab = new ArrayBuffer(8)
      assert.equal(native.readInto(handle, 'a', ab, 6), 1)
      assert.deepEqual([...new Uint8Array(ab)], [0, 0, 0, 0, 0, 0, 0x62, 0])
      assert.deepEqual(native.readInto(handle, 'a', ab, 8), Buffer.from('b'))
      assert.throws(() => native.readInto(handle, 'a', ab, 9), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      for (const bad of [new Uint16Array(8), new DataView(new ArrayBuffer(8)), 42, 'out', null]) {
        assert.throws(() => native.readInto(handle, 'a', bad, 0), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      }
      // A detached ArrayBuffer has no room: the value comes back on its own.
      const gone = new ArrayBuffer(8)
      structuredClone(gone, { transfer: [gone] })
      assert.equal(gone.byteLength, 0)
      assert.deepEqual(native.readInto(handle, 'a', gone, 0), Buffer.from('b'))
      assert.throws(() => native.readInto(handle, 'a', gone, 1), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      // An external of the wrong kind is refused, not read as another type.
      const scan = native.scanOpen(handle, undefined, undefined, undefined, undefined, undefined, false, undefined, true, true)
      assert.throws(() => native.readInto(scan, 'a', out), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      assert.throws(() => native.readMany(scan, ['a']), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      assert.throws(() => native.scanNext(handle, 10), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      assert.throws(() => native.scanOpen(scan, undefined, undefined, undefined, undefined, undefined, false, undefined, true, true), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
      native.scanClose(scan)
    } finally {
      nd.closeSync()
    }
  })
})

describe('block cache and table cache options', () => {
  test('a compressed database with a tiny cache and maxOpenFiles 2 reads correctly, and the counters move', async () => {
    const dir = tmp.dir()
    const opts = { compression: 'lz4', cacheSize: 16 * 1024, maxOpenFiles: 2, memtableSize: 64 * 1024, autoCompaction: false }
    const db = await Database.open(dir, opts)
    const value = (i) => Buffer.from(`value-${i}-`.repeat(8))
    try {
      for (let t = 0; t < 4; t++) {
        const batch = []
        for (let i = t * 2000; i < (t + 1) * 2000; i++) batch.push({ type: 'put', key: `k${String(i).padStart(6, '0')}`, value: value(i) })
        await db.batch(batch)
        await db.flush()
      }
      for (let pass = 0; pass < 2; pass++) {
        for (let i = 0; i < 8000; i += 7) assert.deepEqual(db.getSync(`k${String(i).padStart(6, '0')}`), value(i))
      }
      let n = 0
      for await (const [k, v] of db.iterator()) {
        assert.deepEqual(v, value(Number(k.toString().slice(1))))
        n++
      }
      assert.equal(n, 8000)
      const s = db.stats()
      assert.ok(s.tables >= 4, `tables ${s.tables}`)
      assert.ok(s.openTables <= 2, `openTables ${s.openTables}`)
      assert.ok(s.tableCacheHits > 0 && s.tableCacheMisses > 0)
      assert.equal(s.blockCacheCapacity, 16 * 1024)
      assert.ok(s.blockCacheBytes <= s.blockCacheCapacity)
      assert.ok(s.blockCacheHits > 0 && s.blockCacheMisses > 0 && s.blockCacheEvictions > 0, JSON.stringify(s))
      assert.ok(s.blockCacheEntries > 0)
    } finally {
      await db.close()
    }
  })

  test('cacheSize 0 turns the cache off; bad values are TOONDB_INVALID_ARGUMENT', async () => {
    const db = await Database.open(tmp.dir(), { cacheSize: 0, maxOpenFiles: 0, compression: 'zstd' })
    try {
      await db.put('a', 'b')
      await db.flush()
      assert.equal(db.getSync('a').toString(), 'b')
      const s = db.stats()
      assert.equal(s.blockCacheCapacity, 0)
      assert.equal(s.blockCacheBytes, 0)
    } finally {
      await db.close()
    }
    for (const bad of [{ cacheSize: -1 }, { cacheSize: 1.5 }, { maxOpenFiles: -2 }, { cacheSize: '1' }]) {
      await assert.rejects(Database.open(tmp.dir(), bad), (e) => e.code === 'TOONDB_INVALID_ARGUMENT', JSON.stringify(bad))
    }
  })
})

test('getMany: packed and unpacked answers agree with getSync (absent keys, empty, 4 KiB and larger values, past the 1 MiB pack)', async () => {
  const db = await Database.open(tmp.dir())
  try {
    const sizes = [0, 1, 3, 5, 100, 4095, 4096, 70000, 3000]
    const model = new Map()
    for (let i = 0; i < 500; i++) {
      const v = Buffer.alloc(sizes[i % sizes.length], i & 0xff)
      model.set(`k${String(i).padStart(4, '0')}`, v)
    }
    const b = db.batch()
    for (const [k, v] of model) b.put(k, v)
    await b.write()
    const check = async (keys) => {
      const got = await db.getMany(keys)
      assert.equal(got.length, keys.length)
      keys.forEach((k, i) => {
        const want = db.getSync(k)
        if (want === null) assert.equal(got[i], null, `key ${k}`)
        else assert.deepStrictEqual(got[i], want, `key ${k}`)
      })
      return got
    }
    // Small values only (one packed Buffer), absent keys between them.
    const small = await check(['k0001', 'nope', 'k0002', 'k0000', 'k0003', 'k0004', 'zz', 'k0001'])
    // Writing into one returned value changes no other value and no stored data.
    small[0].fill(0xee)
    assert.deepStrictEqual(small[7], Buffer.alloc(1, 1))
    assert.deepStrictEqual(db.getSync('k0001'), Buffer.alloc(1, 1))
    // Mixed with 4 KiB+ values (the array answer), and all 500 keys (> 1 MiB).
    await check(['k0005', 'k0006', 'k0007', 'missing', 'k0008'])
    await check([...model.keys(), 'missing'])
    // After a flush the same reads come from a table.
    await db.flush()
    await check([...model.keys()].reverse())
  } finally {
    await db.close()
  }
})
