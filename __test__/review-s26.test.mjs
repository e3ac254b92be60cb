// Review s26: getSync/get copying small values into a pooled ArrayBuffer
// (index.js readPool / takeFromPool, src/fastget.rs readInto's offset).
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { MessageChannel, Worker } from 'node:worker_threads'

import { Database, INDEX_JS, assertCode, assertRejectsCode, assertThrowsCode, tempRoot } from './helpers.mjs'

const tmp = tempRoot('review-s26')
after(() => tmp.cleanup())

const TIMEOUT = 120000

describe('read pool', () => {
  test('values around the 4 KiB reserve, many pool turns, getSync and get mixed: each Buffer its own, none overlapping, none changing', { timeout: TIMEOUT }, async () => {
    const db = await Database.open(tmp.dir(), { autoCompaction: false })
    try {
      const sizes = []
      for (let i = 0; i < 400; i++) sizes.push([0, 1, 4088, 4094, 4095, 4096, 4097, 3, 2047, 8][i % 10] + ((i * 7) % 3) - 1)
      for (let i = 0; i < sizes.length; i++) sizes[i] = Math.max(0, sizes[i])
      const value = (i) => {
        const b = Buffer.alloc(sizes[i])
        for (let j = 0; j < b.length; j++) b[j] = (i * 131 + j * 7) & 0xff
        return b
      }
      for (let i = 0; i < sizes.length; i++) await db.put(`k${i}`, value(i))
      for (const round of ['memtable', 'tables']) {
        const got = []
        for (let i = 0; i < sizes.length; i++) got.push((i * 5) % 3 === 0 ? await db.get(`k${i}`) : db.getSync(`k${i}`))
        // Interleave misses: they must not advance or disturb the pool.
        assert.equal(db.getSync('missing'), null)
        assert.equal(await db.get('missing'), null)
        // No two Buffers sharing an ArrayBuffer overlap.
        const byAb = new Map()
        for (const b of got) {
          if (b.length === 0) continue
          if (!byAb.has(b.buffer)) byAb.set(b.buffer, [])
          byAb.get(b.buffer).push([b.byteOffset, b.byteOffset + b.length])
        }
        for (const spans of byAb.values()) {
          spans.sort((x, y) => x[0] - y[0])
          for (let j = 1; j < spans.length; j++) assert.ok(spans[j][0] >= spans[j - 1][1], `${round}: overlapping values`)
        }
        for (let i = 0; i < got.length; i++) assert.deepEqual(got[i], value(i), `${round} ${i} (${sizes[i]} bytes)`)
        // Writing into each in turn leaves every other one alone.
        for (let i = 0; i < got.length; i++) got[i].fill(0xee)
        for (let i = 0; i < got.length; i++) assert.ok(got[i].every((x) => x === 0xee), `${round} ${i} overwritten by another`)
        for (let i = 0; i < sizes.length; i++) assert.deepEqual(db.getSync(`k${i}`), value(i), `${round} stored ${i}`)
        await db.flush()
      }
    } finally {
      await db.close()
    }
  })

  test('a returned value used as a key (a view of the pool) reads correctly, sync and async', { timeout: TIMEOUT }, async () => {
    const db = await Database.open(tmp.dir())
    try {
      for (let i = 0; i < 300; i++) {
        await db.put(`p${i}`, `t${i}`)
        await db.put(`t${i}`, `v${i}`.repeat(i % 50))
      }
      for (const phase of ['memtable', 'tables']) {
        for (let i = 0; i < 300; i++) {
          const ptr = i % 2 ? db.getSync(`p${i}`) : await db.get(`p${i}`)
          const v = i % 3 ? db.getSync(ptr) : await db.get(ptr)
          assert.equal(v.toString(), `v${i}`.repeat(i % 50), `${phase} ${i}`)
          assert.equal(ptr.toString(), `t${i}`, `${phase} key ${i} unchanged`)
        }
        await db.flush()
      }
    } finally {
      await db.close()
    }
  })

  test('bad keys: getSync throws and get rejects with TOONDB_INVALID_ARGUMENT, as before the JS check was dropped', async () => {
    const db = await Database.open(tmp.dir())
    try {
      await db.put('k', 'v')
      const bad = [
        undefined,
        null,
        5,
        {},
        [],
        '',
        Buffer.alloc(0),
        new Uint8Array(0),
        new Uint16Array(2),
        new Uint8ClampedArray(2),
        new DataView(new ArrayBuffer(2)),
        new Proxy(Buffer.from('k'), {}),
        'x'.repeat(64 * 1024 + 1),
        'é'.repeat(32 * 1024 + 1),
        Buffer.alloc(64 * 1024 + 1, 1),
      ]
      for (const key of bad) {
        assertThrowsCode(() => db.getSync(key), 'TOONDB_INVALID_ARGUMENT')
        await assertRejectsCode(() => db.get(key), 'TOONDB_INVALID_ARGUMENT')
      }
      // The limit itself is fine.
      assert.equal(db.getSync('x'.repeat(64 * 1024)), null)
      assert.equal(await db.get(Buffer.alloc(64 * 1024, 1)), null)
      // And a good key still reads after all of that.
      assert.equal(db.getSync('k').toString(), 'v')
    } finally {
      await db.close()
    }
  })

  test('worker threads each read through their own pool, alongside the main thread', { timeout: TIMEOUT }, async () => {
    const dirs = [tmp.dir(), tmp.dir(), tmp.dir()]
    for (const dir of dirs) {
      const db = await Database.open(dir)
      for (let i = 0; i < 500; i++) await db.put(`w${i}`, Buffer.alloc(i * 9, i & 0xff))
      await db.close()
    }
    const src = `
      const { parentPort, workerData } = require('node:worker_threads')
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      ;(async () => {
        const db = await Database.open(workerData.dir)
        const kept = []
        let bad = 0
        for (let round = 0; round < 6; round++) {
          for (let i = 0; i < 500; i++) {
            const v = (i + round) % 2 ? db.getSync('w' + i) : await db.get('w' + i)
            kept.push([i, v])
          }
        }
        for (const [i, v] of kept) if (v.length !== i * 9 || !v.every((x) => x === (i & 0xff))) bad++
        await db.close()
        parentPort.postMessage(bad)
      })().catch((e) => parentPort.postMessage(String((e && e.stack) || e)))
    `
    const workers = dirs.slice(0, 2).map((dir) => new Worker(src, { eval: true, workerData: { dir } }))
    const results = workers.map(
      (worker) =>
        new Promise((resolve, reject) => {
          worker.once('message', resolve)
          worker.once('error', reject)
        }),
    )
    const db = await Database.open(dirs[2])
    try {
      const kept = []
      for (let round = 0; round < 6; round++) {
        for (let i = 0; i < 500; i++) kept.push([i, round % 2 ? db.getSync(`w${i}`) : await db.get(`w${i}`)])
      }
      for (const [i, v] of kept) assert.deepEqual(v, Buffer.alloc(i * 9, i & 0xff), `main ${i}`)
    } finally {
      await db.close()
    }
    assert.deepEqual(await Promise.all(results), [0, 0])
    await Promise.all(workers.map((w) => w.terminate()))
  })
})

describe('readInto offset', () => {
  test('offsets at and near the end of out, zero-length values, and values that no longer fit', async () => {
    const { createRequire } = await import('node:module')
    const require = createRequire(import.meta.url)
    const native = require('../native.js')
    const dir = tmp.dir()
    {
      const db = await Database.open(dir)
      await db.put('e', Buffer.alloc(0))
      await db.put('s', 'xyz')
      await db.put('m', Buffer.alloc(4095, 7))
      await db.close()
    }
    const nd = native.NativeDatabase.openSync(dir, {}, () => {})
    try {
      const h = nd.readHandle()
      const out = Buffer.alloc(16, 0xaa)
      assert.equal(native.readInto(h, 'e', out, 16), 0, 'an empty value fits at the very end')
      assert.equal(native.readInto(h, 's', out, 13), 3)
      assert.deepEqual([...out.subarray(12)], [0xaa, 0x78, 0x79, 0x7a])
      // Does not fit after the offset: a Buffer of its own, out untouched.
      const before = Buffer.from(out)
      assert.deepEqual(native.readInto(h, 's', out, 14), Buffer.from('xyz'))
      assert.deepEqual(out, before)
      // Offsets that are not uint32 values.
      for (const off of [-1, 1.5, 2 ** 32, NaN, '1', null]) {
        let r
        try {
          r = native.readInto(h, 's', out, off)
        } catch (err) {
          assertCode(err, 'TOONDB_INVALID_ARGUMENT')
          continue
        }
        // napi_get_value_uint32 truncates numbers; whatever it picked, the
        // value went into `out` within bounds or came back on its own.
        assert.ok(typeof r === 'number' ? r === 3 : Buffer.from('xyz').equals(r), `offset ${off}`)
      }
      const big = Buffer.alloc(8192, 0)
      assert.equal(native.readInto(h, 'm', big, 4097), 4095)
      assert.ok(big.subarray(4097, 8192).every((x) => x === 7))
      assert.ok(big.subarray(0, 4097).every((x) => x === 0))
      // 4096 bytes of room but 4095 needed at offset 4098: own Buffer.
      const r = native.readInto(h, 'm', big, 4098)
      assert.ok(Buffer.isBuffer(r) && r.length === 4095)
    } finally {
      nd.closeSync()
    }
  })
})

describe('close while reads run', { skip: process.platform !== 'linux' && 'dd iflag=nocache is Linux-only here' }, () => {
  test('cold get()s on the libuv pool and a close: each read is the right value or TOONDB_CLOSED', { timeout: TIMEOUT }, async () => {
    const dir = tmp.dir()
    const value = (i) => Buffer.alloc(100 + (i % 50), i % 251)
    {
      const db = await Database.open(dir, { autoCompaction: false })
      for (let i = 0; i < 3000; i++) await db.put(`key${String(i).padStart(6, '0')}`, value(i))
      await db.flush()
      await db.close()
    }
    const counts = []
    for (let round = 0; round < 3; round++) {
      const db = await Database.open(dir, { autoCompaction: false })
      for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.sst'))) {
        execFileSync('dd', [`if=${path.join(dir, f)}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' })
      }
      const reads = []
      for (let i = round; i < 3000; i += 7) reads.push([i, db.get(`key${String(i).padStart(6, '0')}`)])
      const closing = db.close()
      assertThrowsCode(() => db.getSync('key000001'), 'TOONDB_CLOSED')
      let ok = 0
      for (const [i, p] of reads) {
        try {
          assert.deepEqual(await p, value(i), `round ${round} key ${i}`)
          ok++
        } catch (err) {
          if (err instanceof assert.AssertionError) throw err
          assertCode(err, 'TOONDB_CLOSED')
        }
      }
      await closing
      counts.push(ok)
    }
    // (How many finished before the close depends on timing; here, with
    // close waiting for queued reads, usually all.)
    assert.equal(counts.length, 3)
  })
})

// Last: before the fix, a transfer broke this thread's reads for good.
describe('read pool transfer', () => {
  test('transferring a returned value (postMessage, structuredClone) neither empties other values nor breaks later reads', { timeout: TIMEOUT }, async () => {
    const db = await Database.open(tmp.dir())
    try {
      await db.put('a', 'alpha')
      await db.put('b', 'beta')
      for (const how of ['postMessage', 'structuredClone']) {
        for (const read of ['getSync', 'get']) {
          const a = read === 'getSync' ? db.getSync('a') : await db.get('a')
          const b = read === 'getSync' ? db.getSync('b') : await db.get('b')
          if (how === 'postMessage') {
            const { port1, port2 } = new MessageChannel()
            try {
              port1.postMessage(b, [b.buffer])
            } catch {
              // Refusing the transfer is fine too; detaching the pool is not.
            }
            port1.close()
            port2.close()
          } else {
            try {
              structuredClone(b, { transfer: [b.buffer] })
            } catch {
              // As above.
            }
          }
          assert.equal(a.toString(), 'alpha', `${how}/${read}: a value read before is intact`)
          assert.equal(db.getSync('a').toString(), 'alpha', `${how}/${read}: getSync after`)
          assert.equal((await db.get('b')).toString(), 'beta', `${how}/${read}: get after`)
        }
      }
    } finally {
      await db.close()
    }
  })
})
