// Compaction from Node: db.compact(range?) reclaims the space of
// overwritten and deleted keys, snapshots, transactions and iterators keep
// their exact view through compactions, and stats() reports the levels.
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { after, describe, test } from 'node:test'

import { Database, assertCode, assertRejectsCode, tempRoot, waitIdle } from './helpers.mjs'

const TIMEOUT = 120000
const tmp = tempRoot('compaction')
after(() => tmp.cleanup())

// Small tables and levels, so a few thousand keys span several levels.
const SMALL = {
  memtableSize: 32 * 1024,
  blockSize: 1024,
  targetFileSize: 16 * 1024,
  levelBaseBytes: 64 * 1024,
  l0CompactionTrigger: 2,
}

const key = (i) => `key${String(i).padStart(6, '0')}`
const value = (i, pass) => `v${pass}-${i}-`.padEnd(80, 'x')

async function fill(db, n, pass) {
  for (let lo = 0; lo < n; lo += 500) {
    const ops = []
    for (let i = lo; i < Math.min(n, lo + 500); i++) ops.push({ type: 'put', key: key(i), value: value(i, pass) })
    await db.batch(ops)
  }
}

function tableFiles(dir) {
  return fs.readdirSync(dir).filter((n) => n.endsWith('.sst'))
}

describe('db.compact()', { timeout: TIMEOUT }, () => {
  test('reclaims overwritten and deleted space, down to nothing', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, SMALL)
    const n = 4000
    for (let pass = 0; pass < 4; pass++) await fill(db, n, pass)
    await db.flush()
    const before = db.stats().tableBytes
    await db.compact()
    let s = db.stats()
    assert.ok(s.tableBytes < before, `compact() did not shrink the tables (${before} -> ${s.tableBytes})`)
    assert.ok(s.compactions > 0)
    assert.equal(s.levels.length >= 2, true)
    assert.equal(s.levels[0].tables, 0, 'level 0 is empty after a full compaction')
    const live = n * (9 + 80)
    assert.ok(s.tableBytes < live * 1.6, `tables ${s.tableBytes} B for ${live} live bytes`)
    for (let i = 0; i < n; i += 97) assert.equal(String(db.getSync(key(i))), value(i, 3))

    const dels = []
    for (let i = 0; i < n; i++) dels.push({ type: 'del', key: key(i) })
    await db.batch(dels)
    await db.compact()
    s = db.stats()
    assert.equal(s.tables, 0, 'deleting everything and compacting leaves no table')
    assert.equal(tableFiles(dir).length, 0, 'table files left on disk')
    assert.equal((await db.iterator().all()).length, 0)
    await db.close()
  })

  test('levels sized from the bottom by default; dynamicLevelBytes: false keeps level 1 first', async () => {
    const tables = (db) => db.stats().levels.map((l) => l.tables)
    for (const [dynamicLevelBytes, deepest] of [[undefined, 6], [true, 6], [false, 1]]) {
      const dir = tmp.dir()
      const db = await Database.open(dir, { ...SMALL, levelBaseBytes: 1 << 20, dynamicLevelBytes })
      try {
        await fill(db, 3000, 0)
        await db.flush()
        await db.compact()
        const levels = tables(db)
        // compact() writes one level: the bottom (level 6) with the
        // dynamic targets; with the static ones the bottom level in use
        // (at least level 1), which for data this small is level 1.
        assert.deepEqual(levels.map((n, i) => (n > 0 ? i : -1)).filter((i) => i >= 0), [deepest], JSON.stringify(levels))
        assert.equal(db.getSync(key(2999)).toString(), value(2999, 0))
      } finally {
        await db.close()
      }
    }
    await assert.rejects(Database.open(tmp.dir(), { dynamicLevelBytes: 1 }), (e) => e.code === 'TOONDB_INVALID_ARGUMENT')
  })

  test('a range compaction leaves other data alone and stays correct', async () => {
    const db = await Database.open(tmp.dir(), SMALL)
    await fill(db, 3000, 0)
    await fill(db, 3000, 1)
    await db.compact({ gte: key(1000), lt: key(2000) })
    await db.compact({ gt: key(2500) })
    await db.compact({ lte: key(10) })
    for (let i = 0; i < 3000; i += 7) assert.equal(String(db.getSync(key(i))), value(i, 1))
    assert.equal((await db.iterator().all()).length, 3000)
    await db.close()
  })

  test('snapshots, transactions and iterators keep their view through compactions', async () => {
    const db = await Database.open(tmp.dir(), SMALL)
    const n = 2000
    await fill(db, n, 0)
    const snap = db.snapshot()
    const txn = db.transaction()
    const it = db.iterator()
    const firstFew = [it.nextSync(), it.nextSync()]
    assert.equal(String(firstFew[0][1]), value(0, 0))
    for (let pass = 1; pass <= 3; pass++) {
      await fill(db, n, pass)
      await db.compact()
    }
    const dels = []
    for (let i = 0; i < n; i += 2) dels.push({ type: 'del', key: key(i) })
    await db.batch(dels)
    await db.compact()
    for (let i = 0; i < n; i += 13) {
      assert.equal(String(await snap.get(key(i))), value(i, 0), `snapshot ${key(i)}`)
      assert.equal(String(await txn.get(key(i))), value(i, 0), `transaction ${key(i)}`)
      assert.equal(db.getSync(key(i)) === null, i % 2 === 0)
    }
    const rest = [...it]
    assert.equal(rest.length, n - 2, 'an iterator opened before the compactions lost entries')
    rest.forEach(([k, v], j) => assert.equal(String(v), value(j + 2, 0), String(k)))
    const snapAll = await snap.iterator().all()
    assert.equal(snapAll.length, n)
    txn.rollback()
    snap.release()
    await db.compact()
    assert.equal((await db.iterator().all()).length, n / 2)
    await db.close()
  })

  test('reopen after compactions reads the same data; no orphan table files', async () => {
    const dir = tmp.dir()
    let db = await Database.open(dir, SMALL)
    await fill(db, 3000, 0)
    await fill(db, 3000, 1)
    await db.compact()
    await fill(db, 1500, 2)
    await db.close()
    // No background compaction while the files are counted.
    db = await Database.open(dir, { ...SMALL, autoCompaction: false })
    for (let i = 0; i < 3000; i += 11) assert.equal(String(db.getSync(key(i))), value(i, i < 1500 ? 2 : 1))
    // Open flushes the recovered writes in the background: its table file
    // exists before it is installed, so count once that work is done.
    await waitIdle(db)
    assert.equal(tableFiles(dir).length, db.stats().tables)
    await db.close()
  })

  test('bad ranges and closed databases are clear errors', async () => {
    const db = await Database.open(tmp.dir(), SMALL)
    await assertRejectsCode(() => db.compact(5), 'TOONDB_INVALID_ARGUMENT')
    await assertRejectsCode(() => db.compact({ gt: 1 }), 'TOONDB_INVALID_ARGUMENT')
    await assertRejectsCode(() => db.compact({ gt: 'a', gte: 'b' }), 'TOONDB_INVALID_ARGUMENT')
    await db.compact({ gt: 'z', lt: 'a' }) // an empty range is a no-op
    await db.close()
    await assertRejectsCode(() => db.compact(), 'TOONDB_CLOSED')
    try {
      await Database.open(tmp.dir(), { compression: 'snappy' })
      assert.fail('opened with an unknown compression')
    } catch (err) {
      assertCode(err, 'TOONDB_INVALID_ARGUMENT', /compression/)
    }
  })

  test('every compression setting reads back', async () => {
    const dir = tmp.dir()
    for (const compression of ['lz4', 'zstd', 'none']) {
      const db = await Database.open(dir, { ...SMALL, compression })
      await fill(db, 1000, compression.length)
      await db.flush()
      for (let i = 0; i < 1000; i += 31) assert.equal(String(db.getSync(key(i))), value(i, compression.length))
      await db.close()
    }
    const db = await Database.open(dir, SMALL)
    await db.compact()
    for (let i = 0; i < 1000; i += 31) assert.equal(String(db.getSync(key(i))), value(i, 4))
    assert.equal(path.basename(dir).length > 0, true)
    await db.close()
  })

  test('stats() counts the range tombstones reads apply, until compaction drops them', async () => {
    const db = await Database.open(tmp.dir(), SMALL)
    await fill(db, 1000, 1)
    assert.equal(db.stats().rangeTombstones, 0)
    await db.clear({ gte: key(100), lt: key(200) })
    await db.clear({ gte: key(150), lt: key(300) })
    const s = db.stats()
    assert.equal(s.rangeTombstones, 2)
    assert.ok(s.rangeDelTreeNodes >= 2, `tree nodes ${s.rangeDelTreeNodes}`)
    assert.equal(db.getSync(key(250)), null)
    await db.compact()
    // Every table is rewritten, so the deleted keys and their tombstones go.
    assert.equal(db.stats().rangeTombstones, 0)
    assert.equal(db.getSync(key(250)), null)
    assert.equal(String(db.getSync(key(300))), value(300, 1))
    await db.close()
  })
})
