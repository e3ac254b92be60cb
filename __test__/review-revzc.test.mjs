// Review of zero-copy values as views of one ArrayBuffer per mapping
// (branch zcopy: src/values.rs `chunk_view`, index.js `viewOfChunk`): the
// per-thread weak reference and generation bookkeeping, aliasing between
// reads of every kind, the header written into the read pool, worker
// threads and their teardown with live values, close and compaction.
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { after, describe, test } from 'node:test'
import v8 from 'node:v8'
import vm from 'node:vm'
import { Worker } from 'node:worker_threads'

import { Database, INDEX_JS, assertCode, tempRoot, waitIdle } from './helpers.mjs'

const require = createRequire(import.meta.url)
const native = require('../native.js')
const tmp = tempRoot('revzc')
after(() => tmp.cleanup())

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')
const turn = () => new Promise((r) => setImmediate(r))

// A value whose every byte depends on `seed`, so two values never match.
const big = (seed, n = 20 * 1024) => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff
  return b
}
const small = (seed, n) => Buffer.alloc(n, (seed * 13 + 1) & 0xff)

const tables = (dir) => fs.readdirSync(dir).filter((f) => f.endsWith('.sst')).sort()

async function settleMaps(want) {
  for (let i = 0; i < 50 && native.liveValueMaps() !== want; i++) {
    gc()
    await turn()
  }
  return native.liveValueMaps()
}

function evict(file) {
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' })
}

// Deterministic pseudo-random numbers.
function rng(seed) {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

describe('chunk views', { skip: !native.externalBuffers() && 'no external buffers here' }, () => {
  test('interleaved small and large reads (getSync, get, getMany) never change an earlier value', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    const expect = new Map()
    // Sizes around the pool's edges: DIRECT_COPY_MIN (4 KiB), the header (12
    // bytes), 8-byte alignment, and zero-copy values (>= 16 KiB).
    const sizes = [0, 1, 5, 7, 8, 11, 12, 13, 100, 1000, 3000, 4091, 4095, 4096, 5000, 16 * 1024, 20 * 1024, 70 * 1024]
    let seed = 0
    for (let t = 0; t < 3; t++) {
      for (const n of sizes) {
        const k = `t${t}-${n}`
        const v = n >= 16 * 1024 ? big(++seed, n) : small(++seed, n)
        expect.set(k, v)
        await db.put(k, v)
      }
      await db.flush()
    }
    // Memtable values too (copied, never mapped).
    for (const n of sizes) {
      const k = `m-${n}`
      const v = small(++seed, n)
      expect.set(k, v)
      await db.put(k, v)
    }
    const keys = [...expect.keys()]
    const rand = rng(7)
    const held = []
    for (let i = 0; i < 3000; i++) {
      const k = keys[Math.floor(rand() * keys.length)]
      const how = Math.floor(rand() * 3)
      let v
      if (how === 0) v = db.getSync(k)
      else if (how === 1) v = await db.get(k)
      else {
        const k2 = keys[Math.floor(rand() * keys.length)]
        const [a, b] = await db.getMany([k, k2])
        held.push([k2, b])
        v = a
      }
      held.push([k, v])
      if (i % 97 === 0) {
        for (const [hk, hv] of held) assert.deepEqual(hv, expect.get(hk), `${hk} changed after read ${i}`)
      }
      // Drop some, so GC and finalizers run between reads of one chunk.
      if (held.length > 400) held.splice(0, 200)
      if (i % 500 === 0) {
        gc()
        await turn()
      }
    }
    for (const [hk, hv] of held) assert.deepEqual(hv, expect.get(hk), `${hk} changed`)
    await db.close()
  })

  test('no two reads of any kind share bytes; a write into one reaches no other read', async () => {
    const dir = tmp.dir()
    let db = await Database.open(dir, { autoCompaction: false })
    const values = Array.from({ length: 6 }, (_, i) => big(100 + i, 24 * 1024))
    for (let i = 0; i < values.length; i++) await db.put(`k${i}`, values[i])
    await db.flush()
    await db.close()
    db = await Database.open(dir, { autoCompaction: false })
    // Cold: get() goes to the libuv pool (getAsync, an external Buffer of
    // its own over a range of the chunk this read made).
    for (const f of tables(dir)) evict(path.join(dir, f))
    const reads = []
    reads.push(['k0', await db.get('k0')])
    // The same chunk (k1 not yet handed out): a view of one ArrayBuffer
    // over the whole mapping, including k0's bytes.
    reads.push(['k1', db.getSync('k1')])
    reads.push(['k0', db.getSync('k0')])
    reads.push(['k0', await db.get('k0')])
    reads.push(['k1', (await db.getMany(['k1']))[0]])
    reads.push(['k2', db.getSync('k2')])
    reads.push(['k2', await db.get('k2')])
    reads.push(['k2', db.getSync('k2')])
    const [m3, m4] = await db.getMany(['k3', 'k4'])
    reads.push(['k3', m3], ['k4', m4])
    reads.push(['k3', db.getSync('k3')], ['k4', await db.get('k4')])
    for (const [k, v] of reads) assert.deepEqual(v, values[Number(k.slice(1))], `${k} read right`)
    // Every read gets its own fill byte: if any two shared a byte, one of
    // them would not read back as its own fill.
    reads.forEach(([, v], i) => v.fill(i + 1))
    reads.forEach(([k, v], i) => assert.ok(v.every((x) => x === i + 1), `read ${i} (${k}) kept its own bytes`))
    for (let i = 0; i < values.length; i++) {
      assert.deepEqual(db.getSync(`k${i}`), values[i], `k${i} reads as stored after the writes`)
      assert.deepEqual(await db.get(`k${i}`), values[i])
      assert.deepEqual((await db.getMany([`k${i}`]))[0], values[i])
    }
    await db.close()
  })

  test('an ArrayBuffer collected but not yet finalized: the next read of its chunk makes a new one, and the old finalizer leaves it alone', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    const values = Array.from({ length: 8 }, (_, i) => big(200 + i))
    for (let i = 0; i < values.length; i++) await db.put(`k${i}`, values[i])
    await db.flush()
    await settleMaps(0)
    const base = native.liveValueMaps()
    // In a function of its own, so nothing here holds the view.
    const readAndDrop = (k) => {
      const v = db.getSync(k)
      return v[0]
    }
    assert.equal(readAndDrop('k0'), values[0][0])
    assert.equal(native.liveValueMaps(), base + 1)
    // Collect the ArrayBuffer; its finalizer waits for a later turn, and
    // holds the chunk meanwhile, so the next read gets the same chunk.
    gc()
    const a = db.getSync('k1')
    assert.equal(native.liveValueMaps(), base + 1, 'the same mapping (the pending finalizer holds it)')
    const b = db.getSync('k2')
    assert.equal(b.buffer, a.buffer, 'one ArrayBuffer per chunk again')
    // The old ArrayBuffer's finalizer runs now: it must not forget the new one.
    await turn()
    await turn()
    const c = db.getSync('k3')
    assert.equal(c.buffer, a.buffer, 'the stale finalizer left the new ArrayBuffer remembered')
    assert.equal(native.liveValueMaps(), base + 1)
    assert.deepEqual([a, b, c], [values[1], values[2], values[3]])
    // Re-reads of values still held get new chunks, never these bytes.
    const again = db.getSync('k1')
    assert.notEqual(again.buffer, a.buffer)
    again.fill(9)
    assert.deepEqual(a, values[1])
  })

  test('finalizers in any order across many chunks; ids reused after a chunk is freed', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    const T = 6
    const N = 5
    const value = (t, i) => big(300 + t * N + i, 17 * 1024)
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < N; i++) await db.put(`t${t}k${i}`, value(t, i))
      await db.flush()
    }
    await settleMaps(0)
    const base = native.liveValueMaps()
    // In a function of its own, so no frame of this one still holds a view.
    const rounds = async () => {
      const rand = rng(42)
      let held = []
      for (let round = 0; round < 40; round++) {
        for (let n = 0; n < 12; n++) {
          const t = Math.floor(rand() * T)
          const i = Math.floor(rand() * N)
          const v = rand() < 0.5 ? db.getSync(`t${t}k${i}`) : await db.get(`t${t}k${i}`)
          assert.deepEqual(v, value(t, i))
          held.push([t, i, v])
        }
        // Drop a random half; collect sometimes with, sometimes without a
        // turn for the finalizers before the next reads.
        held = held.filter(() => rand() < 0.5)
        if (rand() < 0.7) gc()
        if (rand() < 0.5) await turn()
        for (const [t, i, v] of held) assert.deepEqual(v, value(t, i), `t${t}k${i} intact in round ${round}`)
        // Values of one table held at once: at most one per distinct
        // ArrayBuffer and range, never two views of the same bytes.
        const seen = new Map()
        for (const [, , v] of held) {
          const ranges = seen.get(v.buffer) ?? []
          for (const [s, e] of ranges) assert.ok(v.byteOffset >= e || v.byteOffset + v.length <= s, 'two held reads view the same bytes')
          ranges.push([v.byteOffset, v.byteOffset + v.length])
          seen.set(v.buffer, ranges)
        }
      }
    }
    await rounds()
    assert.equal(await settleMaps(base), base, 'every chunk was unmapped')
    // After every chunk is gone (ids free for reuse), reads still work and
    // still share one ArrayBuffer per table.
    const x = db.getSync('t0k0')
    const y = db.getSync('t0k1')
    assert.equal(x.buffer, y.buffer)
    assert.deepEqual([x, y], [value(0, 0), value(0, 1)])
    await db.close()
  })

  test('views live on after compaction deleted their table and after close; reads after close fail cleanly', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    const values = Array.from({ length: 4 }, (_, i) => big(400 + i, 40 * 1024))
    for (let i = 0; i < 4; i++) await db.put(`k${i}`, values[i])
    await db.flush()
    const held = [db.getSync('k0'), db.getSync('k1'), await db.get('k2')]
    const before = tables(dir)
    for (let i = 0; i < 4; i++) await db.put(`k${i}`, big(500 + i, 40 * 1024))
    await db.flush()
    await db.compact()
    await waitIdle(db)
    for (const f of before) assert.ok(!tables(dir).includes(f), `${f} deleted`)
    // A value of the deleted table read now... is not: the new table's.
    const late = db.getSync('k3')
    assert.deepEqual(late, big(503, 40 * 1024))
    assert.notEqual(late.buffer, held[0].buffer)
    await db.close()
    assert.throws(() => db.getSync('k0'), (err) => (assertCode(err, 'TOONDB_CLOSED'), true))
    await assert.rejects(db.get('k0'), (err) => (assertCode(err, 'TOONDB_CLOSED'), true))
    gc()
    await turn()
    gc()
    for (let i = 0; i < 3; i++) assert.deepEqual(held[i], values[i])
    assert.deepEqual(late, big(503, 40 * 1024))
  })

  // Node >= 22 has ArrayBuffer#transfer, which detaches a buffer whatever
  // markAsUntransferable says (V8 checks no detach key there); on Node 20
  // the same detach is reachable with --allow-natives-syntax. A detached
  // chunk ArrayBuffer is still referenced (by the emptied views), so the
  // weak reference still finds it: a read must not build its view on it.
  test('after a chunk ArrayBuffer is detached, reads of its table still return their values', async () => {
    v8.setFlagsFromString('--allow-natives-syntax')
    const natives = new Function('ab', '%ArrayBufferDetach(ab)')
    const detach = (ab) => {
      try {
        if (typeof ab.transfer === 'function') return void ab.transfer()
      } catch {}
      natives(ab)
    }
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    const values = Array.from({ length: 4 }, (_, i) => big(800 + i))
    for (let i = 0; i < 4; i++) await db.put(`k${i}`, values[i])
    await db.flush()
    const a = db.getSync('k0')
    try {
      detach(a.buffer)
    } catch {
      return // this runtime cannot detach it: nothing to prove
    }
    assert.equal(a.length, 0, 'the view is emptied, as a pooled Buffer would be')
    const b = db.getSync('k1')
    assert.deepEqual(b, values[1])
    assert.deepEqual(await db.get('k2'), values[2])
    b.fill(1)
    assert.deepEqual(db.getSync('k3'), values[3])
    assert.deepEqual(db.getSync('k1'), values[1])
    await db.close()
  })

  // The same for index.js's read pool (older than chunk views): a small
  // value is a view of it, so detaching a small value's .buffer detached the
  // pool every later small read is copied into.
  test('after the read pool is detached through a small value, later reads still work', async () => {
    v8.setFlagsFromString('--allow-natives-syntax')
    const natives = new Function('ab', '%ArrayBufferDetach(ab)')
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    await db.put('s1', 'one')
    await db.put('s2', 'two')
    await db.put('b', big(900))
    await db.flush()
    await db.put('m', 'memtable')
    const first = db.getSync('s1')
    assert.equal(first.toString(), 'one')
    try {
      if (typeof first.buffer.transfer === 'function') first.buffer.transfer()
      else natives(first.buffer)
    } catch {
      return // this runtime cannot detach it: nothing to prove
    }
    const got = []
    for (const read of [(k) => db.getSync(k), (k) => db.get(k)]) {
      for (const k of ['s2', 'm', 's1', 'b']) {
        try {
          got.push(String((await read(k)).length))
        } catch (err) {
          got.push(`${k}: ${err.code ?? err.name}`)
        }
      }
    }
    await db.close()
    assert.deepEqual(got, ['3', '8', '3', String(20 * 1024), '3', '8', '3', String(20 * 1024)])
  })

  // Like a Buffer from Node's pool, a view's whole ArrayBuffer goes with it
  // into postMessage and structuredClone (the serializer writes the buffer,
  // then the view). Node's pool is 8 KiB; a chunk is the whole table file.
  test('structuredClone / postMessage of a value copies about the value, not its whole table', { todo: 'design: the chunk ArrayBuffer is the whole table file; see the review report' }, async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    for (let i = 0; i < 64; i++) await db.put(`k${i}`, big(600 + i, 64 * 1024))
    await db.put('secret', Buffer.from('a deleted value no read returns'.repeat(1000)))
    await db.flush()
    await db.delete('secret')
    assert.equal(db.getSync('secret'), null)
    const v = db.getSync('k5')
    const clone = structuredClone(v)
    assert.deepEqual(Buffer.from(clone), v)
    const { port1, port2 } = new MessageChannel()
    const posted = new Promise((resolve) => port2.once('message', resolve))
    port1.postMessage(v)
    const got = await posted
    port1.close()
    port2.close()
    const problems = []
    if (clone.buffer.byteLength > 2 * v.length) problems.push(`structuredClone copied ${clone.buffer.byteLength} bytes for a ${v.length}-byte value`)
    if (got.buffer.byteLength > 2 * v.length) problems.push(`postMessage copied ${got.buffer.byteLength} bytes`)
    if (Buffer.from(got.buffer).includes('a deleted value no read returns')) problems.push('the posted copy carries a deleted value of its table')
    await db.close()
    assert.deepEqual(problems, [])
  })
})

// Workers open the same database (one engine, the same tables and so the
// same chunks as the main thread), read, and end with values still alive.
const WORKER = (dir, mode) => `
const { Database } = require(${JSON.stringify(INDEX_JS)})
const { parentPort } = require('node:worker_threads')
const big = ${big.toString()}
globalThis.keep = []
;(async () => {
  const db = await Database.open(${JSON.stringify(dir)})
  for (let r = 0; r < 3; r++) {
    for (let i = 0; i < 8; i++) {
      const v = r % 2 ? db.getSync('k' + i) : await db.get('k' + i)
      if (!v.equals(big(700 + i))) throw new Error('bad value k' + i)
      globalThis.keep.push(v)
    }
  }
  parentPort.postMessage({ sample: globalThis.keep[3] })
  if (${JSON.stringify(mode)} === 'exit') process.exit(0)
  if (${JSON.stringify(mode)} === 'close') await db.close()
  if (${JSON.stringify(mode)} === 'spin') { parentPort.postMessage('spinning'); setInterval(() => globalThis.keep.push(db.getSync('k1')), 1) }
})().catch((e) => { parentPort.postMessage({ error: String(e.stack) }) })
`

describe('worker threads', { skip: !native.externalBuffers() && 'no external buffers here' }, () => {
  test('workers reading the same tables, then ending with live values: no crash, no mapping left behind', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { autoCompaction: false })
    for (let i = 0; i < 8; i++) await db.put(`k${i}`, big(700 + i))
    await db.flush()
    await settleMaps(0)
    const base = native.liveValueMaps()
    // The main thread holds views of the same chunks the workers use.
    const mine = [db.getSync('k0'), db.getSync('k7')]
    for (const mode of ['end', 'exit', 'close', 'spin', 'end', 'exit']) {
      const workers = [0, 1, 2].map(() => new Worker(WORKER(dir, mode), { eval: true }))
      await Promise.all(
        workers.map(
          (w) =>
            new Promise((resolve, reject) => {
              w.on('error', reject)
              w.on('message', (m) => {
                if (m && m.error) reject(new Error(m.error))
                else if (m && m.sample) assert.deepEqual(Buffer.from(m.sample), big(703))
                else if (m === 'spinning') w.terminate()
              })
              w.on('exit', resolve)
            }),
        ),
      )
      assert.deepEqual(mine, [big(700), big(707)], `main thread's views intact after workers (${mode})`)
      assert.deepEqual(db.getSync('k3'), big(703))
    }
    mine.length = 0
    assert.equal(await settleMaps(base), base, 'the workers\' mappings were unmapped with their threads')
    await db.close()
  })

  test('under valgrind: a worker ending with live views, then GC in the main thread', { skip: !process.env.REVZC_VALGRIND && 'set REVZC_VALGRIND=1 (slow)' }, () => {
    const dir = tmp.dir()
    const script = `
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      const { Worker } = require('node:worker_threads')
      const big = ${big.toString()}
      ;(async () => {
        const db = await Database.open(${JSON.stringify(dir)}, { autoCompaction: false })
        for (let i = 0; i < 8; i++) await db.put('k' + i, big(700 + i))
        await db.flush()
        let keep = [db.getSync('k0'), await db.get('k1')]
        for (const mode of ['end', 'exit', 'spin']) {
          await new Promise((resolve, reject) => {
            const w = new Worker(${JSON.stringify(WORKER(dir, '@@'))}.replace(/"@@"/g, JSON.stringify(mode)), { eval: true })
            w.on('error', reject); w.on('exit', resolve)
            w.on('message', (m) => { if (m === 'spinning') setTimeout(() => w.terminate(), 50) })
          })
        }
        for (let i = 0; i < 50; i++) keep.push(db.getSync('k' + (i % 8)))
        keep = null
        globalThis.gc()
        await new Promise((r) => setImmediate(r))
        const v = db.getSync('k2')
        if (!v.equals(big(702))) throw new Error('bad')
        await db.close()
        console.log('valgrind ok')
      })().catch((e) => { console.error(e); process.exit(1) })`
    // V8's conservative stack scan reads uninitialised stack words by design.
    const supp = path.join(tmp.root, 'v8-stack-scan.supp')
    fs.writeFileSync(supp, '{\n  v8-conservative-stack-scan\n  Memcheck:Cond\n  ...\n  fun:*IteratePointersInStack*\n}\n')
    const r = spawnSync('valgrind', ['--error-exitcode=99', `--suppressions=${supp}`, '--trace-children=no', process.execPath, '--expose-gc', '-e', script], {
      encoding: 'utf8',
      timeout: 600000,
    })
    assert.equal(r.signal, null, r.stderr.slice(-4000))
    assert.equal(r.status, 0, r.stderr.slice(-4000))
    assert.match(r.stdout, /valgrind ok/)
    assert.match(r.stderr, /ERROR SUMMARY: 0 errors/)
  })
})
