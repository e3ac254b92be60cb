// The tables' hash index (docs/format-table.md, "Hash index") seen from
// Node: the `hashIndex` option, answers with and without it, the counters
// that show absent keys read no data block, and a database written with
// it read back with it turned off.
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import { Database, assertCode, tempRoot } from './helpers.mjs'

const tmp = tempRoot('hashindex')
after(() => tmp.cleanup())

const key = (i) => `key${String(i).padStart(8, '0')}`

async function fill(db, n) {
  for (let i = 0; i < n; i += 1000) {
    const ops = []
    for (let j = i; j < Math.min(n, i + 1000); j++) ops.push({ type: 'put', key: key(2 * j), value: `v${j}` })
    await db.batch(ops)
  }
  // Older versions and tombstones in the same tables.
  await db.put(key(0), 'newer')
  await db.delete(key(2))
  await db.flush()
  await db.compact()
}

function readAll(db, n) {
  for (let j = 0; j < n; j++) {
    const want = j === 0 ? 'newer' : j === 1 ? null : `v${j}`
    const got = db.getSync(key(2 * j))
    assert.equal(got === null ? null : got.toString(), want, key(2 * j))
    assert.equal(db.getSync(key(2 * j + 1)), null)
  }
}

describe('hash index', () => {
  test('absent keys read no data block: the bloom filter, then the hash index', async () => {
    const n = 20000
    const db = await Database.open(tmp.dir())
    try {
      await fill(db, n)
      const before = db.stats()
      for (let j = 0; j < n; j++) assert.equal(db.getSync(key(2 * j + 1)), null)
      const s = db.stats()
      const d = (k) => s[k] - before[k]
      // The last absent key lies past every table's key range: no probe.
      assert.ok(d('bloomChecked') >= n - 1, `bloomChecked ${d('bloomChecked')}`)
      // The filter's false positives (~1%) go on to the hash index, which
      // rules out nearly all of them.
      assert.equal(d('hashIndexChecked'), d('bloomChecked') - d('bloomUseful'))
      assert.ok(d('hashIndexChecked') > 0)
      assert.ok(d('hashIndexUseful') >= d('hashIndexChecked') * 0.98, `${d('hashIndexUseful')} of ${d('hashIndexChecked')}`)
      assert.ok(d('dataBlocksRead') <= n * 0.001, `${d('dataBlocksRead')} data blocks for ${n} absent keys`)
      const mid = db.stats()
      readAll(db, n)
      assert.ok(db.stats().hashIndexChecked - mid.hashIndexChecked >= n - 1)
    } finally {
      await db.close()
    }
  })

  test('hashIndex: false writes tables without it; either setting reads both', async () => {
    const n = 5000
    const dir = tmp.dir()
    let db = await Database.open(dir, { hashIndex: false })
    await fill(db, n)
    let before = db.stats()
    readAll(db, n)
    let s = db.stats()
    assert.equal(s.hashIndexChecked - before.hashIndexChecked, 0)
    assert.ok(s.bloomChecked - before.bloomChecked > 0)
    await db.close()
    // Reopened with the index on: the old tables still read through the
    // bloom filter; new ones get a hash index.
    db = await Database.open(dir, { hashIndex: true })
    readAll(db, n)
    await db.put(key(1), 'odd')
    await db.flush()
    before = db.stats()
    assert.equal(db.getSync(key(1)).toString(), 'odd')
    s = db.stats()
    assert.ok(s.hashIndexChecked - before.hashIndexChecked >= 1)
    await db.compact()
    // Rewritten with a hash index, and read with it off again.
    await db.close()
    db = await Database.open(dir, { hashIndex: false })
    before = db.stats()
    assert.equal(db.getSync(key(1)).toString(), 'odd')
    assert.equal(db.getSync(key(4)).toString(), 'v2')
    s = db.stats()
    assert.ok(s.hashIndexChecked - before.hashIndexChecked >= 2, 'reads use the tables\' hash index whatever the option')
    await db.close()
  })

  test('the option is checked', async () => {
    await assert.rejects(Database.open(tmp.dir(), { hashIndex: 'yes' }), (err) => (assertCode(err, 'TOONDB_INVALID_ARGUMENT'), true))
  })
})
