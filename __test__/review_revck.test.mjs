// Review of the WAL checkpoint branch: `walSizeLimit` is on (4 MiB) by
// default now, and index.d.ts says "`2 ** 50` (or more) turns it off". A
// larger value (or Infinity, the natural "no limit") must therefore open
// a database with the limit off, not be refused.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'

import { Database, tempRoot } from './helpers.mjs'

const tmp = tempRoot('revck')
after(() => tmp.cleanup())

for (const limit of [2 ** 50, 2 ** 53, Infinity]) {
  test(`walSizeLimit ${limit} turns the limit off`, async () => {
    const db = await Database.open(tmp.dir('off'), { walSizeLimit: limit, memtableSize: 64 << 20 })
    const value = Buffer.alloc(1000, 7)
    for (let b = 0; b < 6; b++) {
      const ops = []
      for (let i = 0; i < 1000; i++) ops.push({ type: 'put', key: `k${b}-${i}`, value })
      await db.batch(ops)
    }
    // ~6 MB of WAL: past the default limit, so a checkpoint would show.
    assert.ok(db.stats().walBytesWritten > 5 << 20)
    assert.equal(db.stats().checkpoints, 0)
    await db.close()
  })
}

test('walSizeLimit that is not a whole number is still refused', async () => {
  await assert.rejects(Database.open(tmp.dir('frac'), { walSizeLimit: 5000.5 }), { code: 'TOONDB_INVALID_ARGUMENT' })
  await assert.rejects(Database.open(tmp.dir('nan'), { walSizeLimit: NaN }), { code: 'TOONDB_INVALID_ARGUMENT' })
})
