// Zero-copy values (getSync/get of large table values return a Buffer over
// a private mapping) and get() that never makes the event loop wait for
// the device (a cold read goes to the libuv pool).
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { after, describe, test } from 'node:test'
import v8 from 'node:v8'
import vm from 'node:vm'

import { Database, INDEX_JS, tempRoot, waitIdle } from './helpers.mjs'

const require = createRequire(import.meta.url)
const native = require('../native.js')
const tmp = tempRoot('zerocopy')
after(() => tmp.cleanup())

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')

const big = (seed, n = 64 * 1024) => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31) ^ seed
  return b
}

const tables = (dir) => fs.readdirSync(dir).filter((f) => f.endsWith('.sst')).sort()

// Collects garbage until the value maps are back to `want` (the Buffers'
// finalizers run on a later turn of the event loop).
async function settleMaps(want) {
  for (let i = 0; i < 50 && native.liveValueMaps() !== want; i++) {
    gc()
    await new Promise((r) => setImmediate(r))
  }
  return native.liveValueMaps()
}

describe('zero-copy values', { skip: !native.externalBuffers() && 'no external buffers here' }, () => {
  test('a large table value is mapped; writing into it changes no read and not the file', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    const original = big(1)
    await db.put('k', original)
    await db.put('small', 'tiny')
    await db.flush()
    const base = native.liveValueMaps()
    const v = db.getSync('k')
    assert.equal(native.liveValueMaps(), base + 1, 'the value is a mapping of its own')
    assert.deepEqual(v, original)
    assert.equal(db.getSync('small').toString(), 'tiny')
    assert.equal(native.liveValueMaps(), base + 1, 'small values are copied')
    v.fill(0xa5) // must neither crash nor reach the stored value
    assert.equal(v[100], 0xa5)
    assert.deepEqual(db.getSync('k'), original)
    assert.deepEqual(await db.get('k'), original)
    const [[, scanned]] = await db.iterator({ gte: 'k', lte: 'k' }).all()
    assert.deepEqual(scanned, original)
    const file = fs.readFileSync(path.join(dir, tables(dir)[0]))
    assert.ok(file.includes(original), 'the file still holds the value')
    assert.ok(!file.includes(Buffer.alloc(4096, 0xa5)), 'and not the write')
    await db.close()
    const again = await Database.open(dir)
    assert.deepEqual(again.getSync('k'), original)
    await again.close()
  })

  test('values of one table are views of one mapping; none shares bytes with another read', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    const values = Array.from({ length: 4 }, (_, i) => big(10 + i))
    for (let i = 0; i < 4; i++) await db.put(`k${i}`, values[i])
    await db.flush()
    await settleMaps(0)
    const base = native.liveValueMaps()
    const reads = [0, 1, 2, 3].map((i) => db.getSync(`k${i}`))
    assert.equal(native.liveValueMaps(), base + 1, 'one mapping serves every value of the table')
    for (let i = 1; i < 4; i++) assert.equal(reads[i].buffer, reads[0].buffer, 'views of one ArrayBuffer')
    // A second read of a value still held is another mapping: the two must
    // never alias, or a write into one would show in the other.
    const again = db.getSync('k1')
    assert.notEqual(again.buffer, reads[1].buffer)
    assert.equal(native.liveValueMaps(), base + 2)
    for (const v of reads) v.fill(0x5a)
    assert.deepEqual(again, values[1], 'a write into the first read does not reach the second')
    again.fill(0x3c)
    for (let i = 0; i < 4; i++) {
      assert.deepEqual(db.getSync(`k${i}`), values[i], `k${i} reads as stored after the writes`)
      assert.deepEqual(await db.get(`k${i}`), values[i])
    }
    for (const v of reads) assert.ok(v.every((x) => x === 0x5a), 'each write stayed in its own Buffer')
    // Transferring a view's ArrayBuffer must not empty the values viewing it.
    const kept = db.getSync('k2')
    const moved = db.getSync('k3')
    try {
      structuredClone(moved, { transfer: [moved.buffer] })
    } catch {
      // Refusing the transfer is fine; detaching the mapping is not.
    }
    assert.deepEqual(kept, values[2], 'a view of the same mapping is intact after a transfer')
    assert.deepEqual(moved, values[3])
    await db.close()
  })

  test('a mapped value stays intact after compaction deleted its file', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    const original = big(2, 200 * 1024)
    await db.put('k', original)
    await db.flush()
    const before = tables(dir)
    const held = [db.getSync('k'), await db.get('k'), (await db.getMany(['k']))[0]]
    await db.put('k', big(3, 200 * 1024))
    await db.flush()
    await db.compact()
    await waitIdle(db)
    const now = tables(dir)
    for (const f of before) assert.ok(!now.includes(f), `${f} was deleted`)
    for (const v of held) assert.deepEqual(v, original)
    assert.deepEqual(db.getSync('k'), big(3, 200 * 1024))
    await db.close()
    gc()
    for (const v of held) assert.deepEqual(v, original)
  })

  test('collected Buffers unmap their values (no mapping leaks)', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    for (let i = 0; i < 20; i++) await db.put(`k${i}`, big(i))
    await db.flush()
    // The earlier tests' Buffers are garbage too (one may stay reachable
    // from the runner's bookkeeping): count from what is left.
    await settleMaps(0)
    const base = native.liveValueMaps()
    assert.ok(base <= 1, `${base} maps still alive`)
    // In a function of its own, so no frame of this one still holds the
    // last Buffer.
    const readAll = async () => {
      let sum = 0
      for (let round = 0; round < 50; round++) {
        for (let i = 0; i < 20; i++) sum += db.getSync(`k${i}`)[7]
        for (const v of await db.getMany(['k1', 'k2'])) sum += v[7]
        sum += (await db.get('k3'))[7]
      }
      return sum
    }
    assert.ok((await readAll()) > 0)
    assert.ok(native.liveValueMaps() > base, 'reads made mappings')
    assert.equal(await settleMaps(base), base, 'every mapping was dropped after GC')
    await db.close()
  })
})

describe('mapping bound', { skip: !native.externalBuffers() && 'no external buffers here' }, () => {
  test('a synchronous loop of mapped reads past vm.max_map_count neither crashes nor leaks', () => {
    // Node frees external Buffers only on a later event-loop turn, so this
    // loop keeps every mapping it makes until it ends; before the bound it
    // ran the process out of mappings (SIGSEGV inside V8). In a child, so a
    // crash fails this test instead of the runner.
    const dir = tmp.dir()
    const limit = Number(fs.readFileSync('/proc/sys/vm/max_map_count', 'utf8'))
    const script = `
      const assert = require('node:assert/strict')
      const native = require(${JSON.stringify(path.join(path.dirname(INDEX_JS), 'native.js'))})
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      const v = Buffer.alloc(20000, 9)
      ;(async () => {
        const db = await Database.open(${JSON.stringify(dir)}, { autoCompaction: false })
        await db.put('hot', v); await db.flush()
        for (let i = 0; i < ${limit + 5000}; i++) {
          const got = db.getSync('hot')
          if (got.length !== 20000 || got[123] !== 9) throw new Error('bad value at ' + i)
        }
        assert.ok(native.liveValueMaps() <= ${Math.floor(limit / 4)}, String(native.liveValueMaps()))
        await db.close()
        console.log('bound ok')
      })().catch((e) => { console.error(e); process.exit(1) })`
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
    assert.equal(r.signal, null, `killed by ${r.signal}`)
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /bound ok/)
  })
})

describe('no external buffers (Electron memory cage)', () => {
  test('with TOONDB_NO_EXTERNAL_BUFFERS=1 every value is a correct, private copy', () => {
    const dir = tmp.dir()
    const script = `
      const assert = require('node:assert/strict')
      const native = require(${JSON.stringify(path.join(path.dirname(INDEX_JS), 'native.js'))})
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      assert.equal(native.externalBuffers(), false)
      const big = Buffer.alloc(100 * 1024); for (let i = 0; i < big.length; i++) big[i] = i * 7
      ;(async () => {
        const db = await Database.open(${JSON.stringify(dir)}, { autoCompaction: false })
        await db.put('k', big); await db.flush()
        const a = db.getSync('k'), b = await db.get('k'), [c] = await db.getMany(['k'])
        for (const v of [a, b, c]) assert.deepEqual(v, big)
        assert.equal(native.liveValueMaps(), 0, 'nothing was mapped')
        a.fill(1); b.fill(2)
        assert.deepEqual(db.getSync('k'), big)
        assert.deepEqual(c, big)
        await db.close()
        console.log('fallback ok')
      })().catch((e) => { console.error(e); process.exit(1) })`
    const r = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, TOONDB_NO_EXTERNAL_BUFFERS: '1' },
      encoding: 'utf8',
    })
    assert.equal(r.status, 0, r.stderr)
    assert.match(r.stdout, /fallback ok/)
  })
})

// Whether `p` settles within a few microtask turns (served at once) or
// only after the event loop turns (the libuv pool).
async function settlesAtOnce(p) {
  let done = false
  p.then(
    () => (done = true),
    () => (done = true),
  )
  for (let i = 0; i < 5; i++) await Promise.resolve()
  const atOnce = done
  await p
  return atOnce
}

// Drops a file's pages from the page cache (GNU dd: iflag=nocache count=0).
function evict(file) {
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' })
}

describe('get() and the device', { skip: process.platform !== 'linux' && 'mincore and dd are Linux-only here' }, () => {
  test('warm reads resolve at once; a cold table read goes to the pool and is correct', async () => {
    const dir = tmp.dir()
    let db = await Database.open(dir, { autoCompaction: false })
    const value = (i) => Buffer.alloc(1000, i % 251)
    for (let i = 0; i < 4000; i++) await db.put(`key${String(i).padStart(6, '0')}`, value(i))
    await db.flush()
    assert.ok(await settlesAtOnce(db.get('key001234')), 'warm table read')
    await db.put('fresh', 'in the memtable')
    assert.ok(await settlesAtOnce(db.get('fresh')), 'memtable read')
    await db.close()
    db = await Database.open(dir, { autoCompaction: false })
    // After the open: pages a mapping still holds are not dropped, and the
    // closed handle's engine may live until its handle is collected. The
    // open maps the table's end (footer, index, filter): the file is 4 MB,
    // written 2 MiB at a time, so the page cache may hold it as two 2 MiB
    // folios, and the one the open mapped stays. The cold keys below all
    // sit in the first 2 MiB.
    for (const f of tables(dir)) evict(path.join(dir, f))
    const cold = db.get('key000345')
    assert.equal(await settlesAtOnce(cold), false, 'a cold read waits for the pool')
    assert.deepEqual(await cold, value(345))
    assert.ok(await settlesAtOnce(db.get('key000345')), 'then it is warm')
    const many = db.getMany(['key001000', 'key000100', 'nope'])
    assert.equal(await settlesAtOnce(many), false, 'getMany of cold keys too')
    assert.deepEqual(await many, [value(1000), value(100), null])
    assert.equal(db.getSync('key003999').length, 1000, 'getSync reads inline')
    await db.close()
  })

  test('a cold get or getMany reads the keys it was given, whatever the caller does to them after the call', async () => {
    const dir = tmp.dir()
    let db = await Database.open(dir, { autoCompaction: false })
    const value = (i) => Buffer.alloc(1000, i % 251)
    for (let i = 0; i < 4000; i++) await db.put(`key${String(i).padStart(6, '0')}`, value(i))
    await db.flush()
    await db.close()
    db = await Database.open(dir, { autoCompaction: false })
    // Cold keys in the table's first 2 MiB (see the test above).
    for (const f of tables(dir)) evict(path.join(dir, f))
    const key = Buffer.from('key001345')
    const one = db.get(key)
    key.write('key000007')
    const keys = [Buffer.from('key001000'), Buffer.from('key000100')]
    const many = db.getMany(keys)
    keys[0].write('key000001')
    keys[1] = Buffer.from('nope')
    assert.equal(await settlesAtOnce(one), false, 'the read went to the pool')
    assert.deepEqual(await one, value(1345))
    assert.deepEqual(await many, [value(1000), value(100)])
    await db.close()
  })
})
