// Error behaviour: argument validation (sync methods throw, promise methods
// reject, always TOONDB_INVALID_ARGUMENT), key limits, use after close,
// the cross-process directory lock, and corrupt databases.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'

import {
  Database,
  INDEX_JS,
  assertCode,
  assertRejectsCode,
  assertThrowsCode,
  lastJson,
  runNode,
  tempRoot,
} from './helpers.mjs'

// Generous per-test limit: a hang fails the test instead of the run.
const TIMEOUT = 60000
const tmp = tempRoot('errors')
after(() => tmp.cleanup())

const INVALID = 'TOONDB_INVALID_ARGUMENT'
const CLOSED = 'TOONDB_CLOSED'

// Values that are not keys/values: number, object, null, undefined, arrays,
// other typed arrays, boolean, symbol-free function, bigint.
const NOT_BYTES = [
  ['number', 42],
  ['object', { a: 1 }],
  ['null', null],
  ['undefined', undefined],
  ['array', ['a']],
  ['array of bytes', [1, 2, 3]],
  ['boolean', true],
  ['Int8Array', new Int8Array([1])],
  ['Uint16Array', new Uint16Array([1])],
  ['ArrayBuffer', new ArrayBuffer(2)],
  ['DataView', new DataView(new ArrayBuffer(2))],
  ['function', () => 'k'],
  ['bigint', 1n],
  ['String object', new String('k')], // eslint-disable-line no-new-wrappers
]

describe('argument validation', { timeout: TIMEOUT }, () => {
  let db
  before(async () => {
    db = await Database.open(tmp.dir())
    await db.put('present', 'yes')
  })
  after(async () => {
    await db.close()
  })

  test('keys of the wrong type: promise methods reject, sync methods throw', async () => {
    for (const [name, bad] of NOT_BYTES) {
      const msg = /key must be a string, Buffer or Uint8Array/
      await assertRejectsCode(() => db.get(bad), INVALID, msg)
      await assertRejectsCode(() => db.put(bad, 'v'), INVALID, msg)
      await assertRejectsCode(() => db.delete(bad), INVALID, msg)
      await assertRejectsCode(() => db.del(bad), INVALID, msg)
      await assertRejectsCode(() => db.getMany(['ok', bad]), INVALID, /keys\[1\] must be/)
      await assertRejectsCode(() => db.batch([{ type: 'put', key: bad, value: 'v' }]), INVALID, /batch\[0\]\.key/)
      await assertRejectsCode(() => db.batch([{ type: 'del', key: bad }]), INVALID, /batch\[0\]\.key/)
      assertThrowsCode(() => db.getSync(bad), INVALID, msg)
      assertThrowsCode(() => db.batch().put(bad, 'v'), INVALID, msg)
      assertThrowsCode(() => db.batch().del(bad), INVALID, msg)
      // Error messages say what was passed (for the types describe() knows).
      if (name === 'null' || name === 'number' || name === 'undefined') {
        await assertRejectsCode(() => db.put(bad, 'v'), INVALID, new RegExp(`got ${name}`))
      }
      if (name === 'array') await assertRejectsCode(() => db.put(bad, 'v'), INVALID, /got an array/)
    }
  })

  test('values of the wrong type', async () => {
    for (const [, bad] of NOT_BYTES) {
      const msg = /value must be a string, Buffer or Uint8Array/
      await assertRejectsCode(() => db.put('k', bad), INVALID, msg)
      await assertRejectsCode(() => db.batch([{ type: 'put', key: 'k', value: bad }]), INVALID, msg)
      assertThrowsCode(() => db.batch().put('k', bad), INVALID, msg)
    }
    // Nothing was written by any of the failed calls.
    assert.equal(db.getSync('k'), null)
  })

  test('missing arguments', async () => {
    await assertRejectsCode(() => db.get(), INVALID)
    await assertRejectsCode(() => db.put(), INVALID)
    await assertRejectsCode(() => db.put('only-key'), INVALID, /value/)
    await assertRejectsCode(() => db.delete(), INVALID)
    await assertRejectsCode(() => db.getMany(), INVALID, /keys must be an array, got undefined/)
    assertThrowsCode(() => db.getSync(), INVALID)
    assertThrowsCode(() => db.batch().put('k'), INVALID)
    assertThrowsCode(() => db.batch().put(), INVALID)
    assertThrowsCode(() => db.batch().del(), INVALID)
    await assertRejectsCode(() => Database.open(), INVALID, /path must be a non-empty string/)
    assertThrowsCode(() => Database.openSync(), INVALID, /path must be a non-empty string/)
    assert.equal(db.getSync('only-key'), null)
  })

  test('bad open arguments: Database.open rejects, Database.openSync throws', async () => {
    const dir = tmp.dir()
    const badPaths = [['empty', ''], ['number', 1], ['null', null], ['object', {}], ['Buffer', Buffer.from(dir)]]
    for (const [, p] of badPaths) {
      await assertRejectsCode(() => Database.open(p), INVALID, /path must be a non-empty string/)
      assertThrowsCode(() => Database.openSync(p), INVALID, /path must be a non-empty string/)
    }
    const badOptions = [
      ['options not an object', 'sync', /options must be an object/],
      ['options a number', 5, /options must be an object/],
      ['sync string', { sync: 'true' }, /sync must be a boolean/],
      ['createIfMissing number', { createIfMissing: 0 }, /createIfMissing must be a boolean/],
      ['errorIfExists null', { errorIfExists: null }, /errorIfExists must be a boolean/],
      ['memtableSize string', { memtableSize: '64k' }, /memtableSize must be a number/],
      ['memtableSize too small', { memtableSize: 10 }, /memtableSize/],
      ['memtableSize fraction', { memtableSize: 65536.5 }, /memtableSize/],
      ['memtableSize negative', { memtableSize: -65536 }, /memtableSize/],
      ['memtableSize NaN', { memtableSize: NaN }, /memtableSize/],
      ['memtableSize Infinity', { memtableSize: Infinity }, /memtableSize/],
      ['blockSize tiny', { blockSize: 1 }, /blockSize/],
      ['blockSize huge', { blockSize: 2 ** 40 }, /blockSize/],
      ['blockSize bool', { blockSize: true }, /blockSize must be a number/],
      ['maxImmutableMemtables 0', { maxImmutableMemtables: 0 }, /maxImmutableMemtables/],
      ['maxImmutableMemtables 65', { maxImmutableMemtables: 65 }, /maxImmutableMemtables/],
      ['maxImmutableMemtables string', { maxImmutableMemtables: '2' }, /maxImmutableMemtables must be a number/],
    ]
    for (const [name, o, re] of badOptions) {
      await assertRejectsCode(() => Database.open(dir, o), INVALID, re).catch((e) => {
        throw new Error(`${name}: ${e.message}`)
      })
      assertThrowsCode(() => Database.openSync(dir, o), INVALID, re)
    }
    assert.equal(fs.existsSync(dir), false, 'invalid options must not create anything')
    // A path that is a regular file (or below one) is an I/O error.
    const file = path.join(tmp.root, 'plain-file')
    fs.writeFileSync(file, 'x')
    await assertRejectsCode(() => Database.open(file), 'TOONDB_IO', /Not a directory/)
    await assertRejectsCode(() => Database.open(path.join(file, 'sub')), 'TOONDB_IO', /Not a directory/)
    assertThrowsCode(() => Database.openSync(file), 'TOONDB_IO')
    // null / undefined options are fine.
    const ok = await Database.open(dir, null)
    await ok.close()
    const ok2 = Database.openSync(dir, undefined)
    await ok2.close()
  })

  test('bad write options reject', async () => {
    const cases = [['string', 'sync'], ['number', 1], ['sync string', { sync: 'yes' }], ['sync number', { sync: 1 }], ['sync null', { sync: null }]]
    for (const [, o] of cases) {
      const re = /write options must be an object|sync must be a boolean/
      await assertRejectsCode(() => db.put('wo', 'v', o), INVALID, re)
      await assertRejectsCode(() => db.delete('present', o), INVALID, re)
      await assertRejectsCode(() => db.batch([{ type: 'put', key: 'wo', value: 'v' }], o), INVALID, re)
      await assertRejectsCode(() => db.batch().put('wo', 'v').write(o), INVALID, re)
    }
    assert.equal(db.getSync('wo'), null)
    assert.deepEqual(db.getSync('present'), Buffer.from('yes'))
  })

  test('bad batch operations reject the whole batch', async () => {
    const cases = [
      ['not an array (string)', 'put', /batch operations must be an array, got string/],
      ['not an array (object)', { type: 'put', key: 'k', value: 'v' }, /batch operations must be an array, got object/],
      ['null', null, /batch operations must be an array, got null/],
      ['number', 7, /must be an array/],
      ['null op', [null], /batch\[0\] must be an object/],
      ['string op', ['put'], /batch\[0\] must be an object/],
      ['number op', [{ type: 'put', key: 'a', value: 'b' }, 3], /batch\[1\] must be an object/],
      ['unknown type', [{ type: 'upsert', key: 'k', value: 'v' }], /batch\[0\]\.type must be 'put' or 'del'/],
      ['missing type', [{ key: 'k', value: 'v' }], /batch\[0\]\.type/],
      ['type wrong case', [{ type: 'PUT', key: 'k', value: 'v' }], /batch\[0\]\.type/],
      ['missing key', [{ type: 'del' }], /batch\[0\]\.key/],
      ['missing value', [{ type: 'put', key: 'k' }], /value must be/],
      ['null value', [{ type: 'put', key: 'k', value: null }], /value must be/],
      ['empty key', [{ type: 'put', key: '', value: 'v' }], /batch\[0\]\.key must not be empty/],
      ['bad op after good ones', [{ type: 'put', key: 'g1', value: 'v' }, { type: 'del', key: 'g2' }, { type: 'put', key: 5, value: 'v' }], /batch\[2\]\.key/],
    ]
    for (const [name, ops, re] of cases) {
      await assertRejectsCode(() => db.batch(ops), INVALID, re).catch((e) => {
        throw new Error(`${name}: ${e.message}`)
      })
    }
    assert.equal(db.getSync('g1'), null, 'no op of a rejected batch is applied')
    assert.equal(db.getSync('k'), null)
  })

  test('bad iterator options throw synchronously', () => {
    const cases = [
      ['options string', 'abc', /iterator options must be an object/],
      ['options number', 5, /iterator options must be an object/],
      ['gt number', { gt: 5 }, /gt must be a string, Buffer or Uint8Array/],
      ['gte null', { gte: null }, /gte must be/],
      ['lt object', { lt: {} }, /lt must be/],
      ['lte array', { lte: ['a'] }, /lte must be/],
      ['prefix number', { prefix: 1 }, /prefix must be/],
      ['reverse string', { reverse: 'yes' }, /reverse must be a boolean/],
      ['reverse number', { reverse: 1 }, /reverse must be a boolean/],
      ['limit string', { limit: '10' }, /limit must be a non-negative number/],
      ['limit negative', { limit: -2 }, /limit must be a non-negative number/],
      ['limit NaN', { limit: NaN }, /limit must be a non-negative number/],
      ['limit -Infinity', { limit: -Infinity }, /limit must be a non-negative number/],
      ['gt and gte', { gt: 'a', gte: 'b' }, /at most one of gt\/gte/],
      ['lt and lte', { lt: 'a', lte: 'b' }, /at most one/],
    ]
    for (const [name, o, re] of cases) {
      try {
        assertThrowsCode(() => db.iterator(o), INVALID, re)
      } catch (e) {
        throw new Error(`${name}: ${e.message}`)
      }
    }
  })

  test('empty keys are rejected everywhere', async () => {
    for (const empty of ['', Buffer.alloc(0), new Uint8Array(0), new Uint8Array(4).subarray(2, 2)]) {
      const re = /must not be empty/
      await assertRejectsCode(() => db.put(empty, 'v'), INVALID, re)
      await assertRejectsCode(() => db.get(empty), INVALID, re)
      await assertRejectsCode(() => db.delete(empty), INVALID, re)
      await assertRejectsCode(() => db.getMany([empty]), INVALID, re)
      await assertRejectsCode(() => db.batch([{ type: 'del', key: empty }]), INVALID, re)
      assertThrowsCode(() => db.getSync(empty), INVALID, re)
      assertThrowsCode(() => db.batch().put(empty, 'v'), INVALID, re)
    }
  })

  test('keys over 64 KiB are rejected; exactly 64 KiB is accepted', async () => {
    const limit = 64 * 1024
    const max = Buffer.alloc(limit, 0x61)
    const over = Buffer.alloc(limit + 1, 0x61)
    // A string whose UTF-16 length is under the limit but UTF-8 length over.
    const wide = 'é'.repeat(limit / 2 + 1)
    assert.ok(wide.length < limit && Buffer.byteLength(wide) > limit)
    for (const k of [over, over.toString(), wide, new Uint8Array(over)]) {
      const re = /65536/
      await assertRejectsCode(() => db.put(k, 'v'), INVALID, re)
      await assertRejectsCode(() => db.delete(k), INVALID, re)
      await assertRejectsCode(() => db.get(k), INVALID, re)
      await assertRejectsCode(() => db.getMany(['present', k]), INVALID, re)
      await assertRejectsCode(() => db.batch([{ type: 'put', key: k, value: 'v' }]), INVALID, re)
      // A chained batch may refuse the key in put() (synchronously) or
      // reject in write(); either way with INVALID_ARGUMENT.
      let chainedErr
      try {
        await db.batch().put(k, 'v').write()
      } catch (err) {
        chainedErr = err
      }
      assertCode(chainedErr, INVALID, re)
      assertThrowsCode(() => db.getSync(k), INVALID, re)
    }
    await db.put(max, 'max-key')
    assert.deepEqual(db.getSync(max), Buffer.from('max-key'))
    assert.deepEqual(db.getSync(max.toString()), Buffer.from('max-key'))
    await db.flush()
    assert.deepEqual(db.getSync(max), Buffer.from('max-key'))
    const [[k, v]] = await db.iterator({ prefix: 'aaaa' }).all()
    assert.ok(k.equals(max))
    assert.deepEqual(v, Buffer.from('max-key'))
    // The failed writes left the handle fully usable.
    await db.put('after-limits', 'ok')
    assert.deepEqual(db.getSync('after-limits'), Buffer.from('ok'))
  })

  // Regression test (fixed in efc7762 by checking key/value sizes in JS):
  // index.js coalesces the writes of one event-loop turn into one native
  // batch, and one write the engine rejected (a key over 64 KiB, then only
  // checked natively) failed the whole group, valid writes included.
  test('an invalid write does not fail valid writes issued in the same turn', async () => {
    const good = db.put('same-turn-good', 'v')
    const bad = db.put(Buffer.alloc(64 * 1024 + 1, 0x62), 'v')
    const goodBatch = db.batch([{ type: 'put', key: 'same-turn-batch', value: 'b' }])
    const goodDel = db.del('present-to-delete')
    const [g, b, gb, gd] = await Promise.allSettled([good, bad, goodBatch, goodDel])
    assert.equal(b.status, 'rejected')
    assertCode(b.reason, INVALID, /65536/)
    assert.deepEqual(
      [g, gb, gd].map((r) => (r.status === 'rejected' ? `${r.status}: ${r.reason.code} ${r.reason.message}` : r.status)),
      ['fulfilled', 'fulfilled', 'fulfilled'],
      'valid writes must not fail because of an unrelated invalid one',
    )
    assert.deepEqual(db.getSync('same-turn-good'), Buffer.from('v'))
    assert.deepEqual(db.getSync('same-turn-batch'), Buffer.from('b'))
  })

  // Regression test (fixed in 4dbadb0): ChainedBatch.write() set #done
  // before validating `options`, so a write rejected for bad options
  // (nothing written) consumed the batch and a retry said "already written".
  test('a chained batch whose write() was rejected for bad options can still be written', async () => {
    const b = db.batch().put('chained-retry', 'v')
    await assertRejectsCode(() => b.write({ sync: 'yes' }), INVALID, /sync must be a boolean/)
    assert.equal(db.getSync('chained-retry'), null)
    await b.write({ sync: true })
    assert.deepEqual(db.getSync('chained-retry'), Buffer.from('v'))
  })
})

describe('use after close', { timeout: TIMEOUT }, () => {
  test('every operation reports TOONDB_CLOSED; close twice is fine', async () => {
    const db = await Database.open(tmp.dir())
    await db.put('k', 'v')
    const chained = db.batch().put('c', '1')
    const itBefore = db.iterator() // created before close, never advanced
    const first = db.close()
    const second = db.close()
    assert.equal(db.closed, true, 'closed is true as soon as close() was called')
    await first
    await second
    await db.close() // a third time, after it finished
    assert.equal(db.closed, true)

    const re = /closed/
    await assertRejectsCode(() => db.get('k'), CLOSED, re)
    await assertRejectsCode(() => db.getMany(['k']), CLOSED, re)
    await assertRejectsCode(() => db.put('k', 'v'), CLOSED, re)
    await assertRejectsCode(() => db.delete('k'), CLOSED, re)
    await assertRejectsCode(() => db.del('k'), CLOSED, re)
    await assertRejectsCode(() => db.batch([{ type: 'put', key: 'k', value: 'v' }]), CLOSED, re)
    await assertRejectsCode(() => db.batch([]), CLOSED, re)
    await assertRejectsCode(() => db.batch().put('k', 'v').write(), CLOSED, re)
    await assertRejectsCode(() => chained.write(), CLOSED, re)
    await assertRejectsCode(() => db.flush(), CLOSED, re)
    assertThrowsCode(() => db.getSync('k'), CLOSED, re)
    assertThrowsCode(() => db.iterator(), CLOSED, re)
    assertThrowsCode(() => db.iterator({ prefix: 'k' }), CLOSED, re)
    assertThrowsCode(() => itBefore.nextSync(), CLOSED, re)
    // A bad argument on a closed handle is still an error of one of the two
    // kinds (which check runs first is not specified).
    for (const call of [() => db.getSync(1), () => db.put(1, 'v')]) {
      let err
      try {
        await call()
      } catch (e) {
        err = e
      }
      assert.ok(err && [INVALID, CLOSED].includes(err.code), `got ${err && err.code}`)
    }
    // stats() still answers after close.
    assert.equal(typeof db.stats().commits, 'number')
  })

  test('close waits for pending writes; writes issued after close() reject with TOONDB_CLOSED', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir)
    const pending = []
    for (let i = 0; i < 200; i++) pending.push(db.put(`p${String(i).padStart(3, '0')}`, 'v'.repeat(1000), { sync: i % 10 === 0 }))
    pending.push(db.batch([{ type: 'put', key: 'pb', value: '1' }]))
    const closing = db.close()
    await assertRejectsCode(() => db.put('late', 'v'), CLOSED)
    await assertRejectsCode(() => db.batch([{ type: 'put', key: 'late', value: 'v' }]), CLOSED)
    assertThrowsCode(() => db.getSync('p000'), CLOSED)
    const results = await Promise.allSettled(pending)
    assert.deepEqual(results.filter((r) => r.status !== 'fulfilled'), [], 'writes issued before close() succeed')
    await closing
    const again = await Database.open(dir)
    try {
      assert.equal((await again.iterator({ prefix: 'p' }).all()).length, 201)
      assert.equal(again.getSync('late'), null)
    } finally {
      await again.close()
    }
  })

  test('a closed handle does not close a second handle on the same path', async () => {
    const dir = tmp.dir()
    const a = await Database.open(dir)
    const b = await Database.open(dir)
    await a.close()
    await a.close() // closing twice must not drop b's reference to the engine
    await b.put('k', 'v')
    assert.deepEqual(b.getSync('k'), Buffer.from('v'))
    const c = await Database.open(dir)
    await b.close()
    assert.deepEqual(c.getSync('k'), Buffer.from('v'))
    await c.close()
    assertThrowsCode(() => c.getSync('k'), CLOSED)
  })
})

describe('cross-process lock', { timeout: TIMEOUT }, () => {
  // Opens `dir` in a child process and reports the outcome as JSON.
  const openInChild = (dir, { sync = false } = {}) =>
    runNode(
      `
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      const dir = ${JSON.stringify(dir)}
      const report = (o) => process.stdout.write(JSON.stringify(o) + '\\n')
      ;(async () => {
        let db
        try {
          db = ${sync ? 'Database.openSync(dir)' : 'await Database.open(dir)'}
        } catch (err) {
          report({ ok: false, code: err.code, message: err.message, isError: err instanceof Error })
          return
        }
        const value = db.getSync('parent')
        await db.put('child', 'was here')
        await db.close()
        report({ ok: true, value: value && value.toString() })
      })()
      `,
      { timeoutMs: 15000 },
    )

  test('a second process gets TOONDB_LOCKED while this process holds the directory, and succeeds after close', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir)
    await db.put('parent', 'hello')
    try {
      for (const sync of [false, true]) {
        const r = await openInChild(dir, { sync })
        assert.equal(r.code, 0, `child crashed: ${r.stderr}`)
        const out = lastJson(r.stdout)
        assert.equal(out.ok, false, 'the child must not open a locked database')
        assert.equal(out.isError, true)
        assert.equal(out.code, 'TOONDB_LOCKED')
        assert.match(out.message, /locked/)
      }
      // This process is unaffected.
      await db.put('parent2', 'still fine')
      assert.deepEqual(db.getSync('parent2'), Buffer.from('still fine'))
    } finally {
      await db.close()
    }
    const r = await openInChild(dir)
    assert.equal(r.code, 0, `child crashed: ${r.stderr}`)
    assert.deepEqual(lastJson(r.stdout), { ok: true, value: 'hello' })
    // And the child's write is visible here afterwards (its close released the lock).
    const back = await Database.open(dir)
    try {
      assert.deepEqual(back.getSync('child'), Buffer.from('was here'))
    } finally {
      await back.close()
    }
  })

  test('the lock is held until the LAST in-process handle closes', async () => {
    const dir = tmp.dir()
    const a = await Database.open(dir)
    const b = await Database.open(dir)
    await a.put('parent', 'shared')
    await a.close()
    try {
      const r = await openInChild(dir)
      assert.equal(lastJson(r.stdout).code, 'TOONDB_LOCKED')
    } finally {
      await b.close()
    }
    const r = await openInChild(dir)
    assert.deepEqual(lastJson(r.stdout), { ok: true, value: 'shared' })
  })
})

// ---------------------------------------------------------------------------
// Corruption

async function makeDb(dir, { flushed = true } = {}) {
  const db = await Database.open(dir)
  for (let i = 0; i < 500; i++) await db.put(`key${String(i).padStart(5, '0')}`, `value-${i}-${'-'.repeat(50)}`)
  if (flushed) await db.flush()
  await db.close()
  return dir
}

const filesIn = (dir, re) => fs.readdirSync(dir).filter((f) => re.test(f)).sort()

/**
 * Opens `dir` expecting TOONDB_CORRUPTION; then again (a failed open must
 * release the lock and leave no engine behind, so the second attempt fails
 * the same way rather than with TOONDB_LOCKED).
 */
async function expectCorruptOpen(dir, re) {
  await assertRejectsCode(() => Database.open(dir), 'TOONDB_CORRUPTION', re)
  assertThrowsCode(() => Database.openSync(dir), 'TOONDB_CORRUPTION', re)
  await assertRejectsCode(() => Database.open(dir), 'TOONDB_CORRUPTION', re)
}

describe('corrupt databases', { timeout: TIMEOUT }, () => {
  test('flipped bytes in a table data block: TOONDB_CORRUPTION on open or on read, never wrong data', async () => {
    const dir = await makeDb(tmp.dir())
    const [sst] = filesIn(dir, /\.sst$/)
    const file = path.join(dir, sst)
    const bytes = fs.readFileSync(file)
    for (let i = 100; i < 108; i++) bytes[i] ^= 0xff // inside data block 0
    fs.writeFileSync(file, bytes)

    let db
    try {
      db = await Database.open(dir)
    } catch (err) {
      // Eager verification would be fine too.
      assertCode(err, 'TOONDB_CORRUPTION')
      return
    }
    try {
      // Data blocks are verified lazily (docs/format-table.md): the first
      // read that touches the block must fail, and keep failing.
      assertThrowsCode(() => db.getSync('key00000'), 'TOONDB_CORRUPTION', /checksum/)
      assertThrowsCode(() => db.getSync('key00001'), 'TOONDB_CORRUPTION')
      await assertRejectsCode(() => db.get('key00000'), 'TOONDB_CORRUPTION')
      await assertRejectsCode(() => db.getMany(['key00000']), 'TOONDB_CORRUPTION')
      assertThrowsCode(() => [...db.iterator()], 'TOONDB_CORRUPTION')
      await assertRejectsCode(() => db.iterator().all(), 'TOONDB_CORRUPTION')
      // The damaged table does not stop writes; the engine stays usable.
      await db.put('new', 'ok')
      assert.deepEqual(db.getSync('new'), Buffer.from('ok'))
    } finally {
      await db.close()
    }
  })

  test('flipped bytes in a table footer, index or a truncated table: open fails with TOONDB_CORRUPTION', async () => {
    const mutations = [
      ['footer', (b) => { b[b.length - 10] ^= 0xff; return b }],
      ['last byte', (b) => { b[b.length - 1] ^= 0x01; return b }],
      ['truncated by 100 bytes', (b) => b.subarray(0, b.length - 100)],
      ['truncated to 10 bytes', (b) => b.subarray(0, 10)],
      ['emptied', () => Buffer.alloc(0)],
      ['zeroed tail', (b) => { b.fill(0, b.length - 200); return b }],
    ]
    for (const [name, mutate] of mutations) {
      const dir = await makeDb(tmp.dir(name.replace(/\W+/g, '-')))
      const [sst] = filesIn(dir, /\.sst$/)
      const file = path.join(dir, sst)
      fs.writeFileSync(file, mutate(fs.readFileSync(file)))
      await expectCorruptOpen(dir).catch((e) => {
        throw new Error(`${name}: ${e.message}`)
      })
    }
  })

  test('damaged MANIFEST or CURRENT: open fails with TOONDB_CORRUPTION', async () => {
    const mutations = [
      ['MANIFEST truncated into its header', (dir, m) => fs.truncateSync(path.join(dir, m), 10), /header/],
      ['MANIFEST emptied', (dir, m) => fs.truncateSync(path.join(dir, m), 0), /header/],
      ['MANIFEST truncated to just its header', (dir, m) => fs.truncateSync(path.join(dir, m), 16), /no complete (record|edit)/],
      ['MANIFEST bad magic', (dir, m) => {
        const p = path.join(dir, m)
        const b = fs.readFileSync(p)
        b[0] ^= 0xff
        fs.writeFileSync(p, b)
      }, /magic|header/],
      // A damaged final frame reads as a torn, unacknowledged append; this
      // one was acknowledged (the flush deleted the WAL segments it covered),
      // which the missing checkpoint segment gives away.
      ['MANIFEST last edit damaged after it was acknowledged', (dir, m) => {
        const p = path.join(dir, m)
        const b = fs.readFileSync(p)
        b[b.length - 1] ^= 0x01
        fs.writeFileSync(p, b)
      }, /checkpoint/i],
      ['MANIFEST deleted', (dir, m) => fs.unlinkSync(path.join(dir, m)), /does not exist/],
      ['CURRENT garbage', (dir) => fs.writeFileSync(path.join(dir, 'CURRENT'), Buffer.from([0xde, 0xad, 0xbe, 0xef, 0, 1])), /CURRENT/],
      ['CURRENT empty', (dir) => fs.writeFileSync(path.join(dir, 'CURRENT'), ''), /CURRENT/],
      ['CURRENT without newline', (dir, m) => fs.writeFileSync(path.join(dir, 'CURRENT'), m), /CURRENT/],
      ['CURRENT names a missing manifest', (dir) => fs.writeFileSync(path.join(dir, 'CURRENT'), 'MANIFEST-999999\n'), /MANIFEST-999999/],
      ['CURRENT names a non-manifest', (dir) => fs.writeFileSync(path.join(dir, 'CURRENT'), 'LOCK\n'), /CURRENT|manifest/i],
      ['CURRENT deleted while tables exist', (dir) => fs.unlinkSync(path.join(dir, 'CURRENT')), /no CURRENT/],
    ]
    for (const [name, mutate, re] of mutations) {
      const dir = await makeDb(tmp.dir('m'))
      const [manifest] = filesIn(dir, /^MANIFEST-\d+$/)
      assert.ok(manifest, 'a MANIFEST exists')
      mutate(dir, manifest)
      await expectCorruptOpen(dir, re).catch((e) => {
        throw new Error(`${name}: ${e.message}`)
      })
    }
  })

  test('damage in the middle of the WAL is TOONDB_CORRUPTION; a torn tail is dropped', async () => {
    // Unflushed: all 500 records are in one WAL segment.
    const dir = await makeDb(tmp.dir(), { flushed: false })
    const wals = filesIn(dir, /\.wal$/)
    const biggest = wals.map((w) => [fs.statSync(path.join(dir, w)).size, w]).sort((x, y) => y[0] - x[0])[0][1]
    const file = path.join(dir, biggest)
    const pristine = fs.readFileSync(file)
    assert.ok(pristine.length > 500 * 60)

    // A flipped byte with valid records after it.
    const flipped = Buffer.from(pristine)
    flipped[Math.floor(flipped.length / 2)] ^= 0x20
    fs.writeFileSync(file, flipped)
    await expectCorruptOpen(dir, /WAL segment/)

    // A torn final append (the file cut mid-record): the last record is
    // dropped, everything before it survives, and the cut is reported. The
    // clean close ended the segment with a 25-byte sync point saying it was
    // all synced (docs/format-wal.md); the cut removes it and 5 bytes of
    // the last record before it.
    const SYNC_POINT_BYTES = 25
    fs.writeFileSync(file, pristine.subarray(0, pristine.length - SYNC_POINT_BYTES - 5))
    const db = await Database.open(dir)
    try {
      const s = db.stats()
      assert.ok(s.droppedTailBytes > 0, 'the torn tail is reported')
      assert.equal(typeof s.droppedTailReason, 'string')
      assert.equal(s.recoveredRecords, 499)
      assert.deepEqual(db.getSync('key00498'), Buffer.from(`value-498-${'-'.repeat(50)}`))
      assert.equal(db.getSync('key00499'), null)
      await db.put('after-tail', 'ok')
    } finally {
      await db.close()
    }
    // Recovering the recovered database is clean (the tail was cut off).
    const db2 = await Database.open(dir)
    try {
      assert.equal(db2.stats().droppedTailBytes, 0)
      assert.deepEqual(db2.getSync('after-tail'), Buffer.from('ok'))
      assert.equal((await db2.iterator({ prefix: 'key' }).all()).length, 499)
    } finally {
      await db2.close()
    }
  })

  test('after all that, this process still opens and uses databases', async () => {
    const db = await Database.open(tmp.dir())
    await db.put('alive', 'yes')
    assert.deepEqual(db.getSync('alive'), Buffer.from('yes'))
    await db.close()
  })
})
