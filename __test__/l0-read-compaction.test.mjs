// Read-triggered compaction of level 0 (docs/compaction.md) through the
// Node read paths: getSync, get (the resident-only read) and getMany each
// count the level-0 tables they probe in vain, and once reads have paid for
// it level 0 is compacted into level 1 with every value intact.
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import { Database, tempRoot } from './helpers.mjs'

const tmp = tempRoot('l0read')
after(() => tmp.cleanup())

const key = (i) => `key${String(i).padStart(7, '0')}`
const value = (i) => `value-${i}-${'v'.repeat(i % 13)}`

async function settled(db) {
  for (let idle = 0; idle < 3;) {
    const s = db.stats()
    idle = s.maintenanceBusy || s.immutableMemtables > 0 ? 0 : idle + 1
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return db.stats()
}

// Three flushes of interleaved keys: three level-0 tables (below the
// trigger of 4), each over the whole key range.
async function threeLevel0Tables() {
  const db = await Database.open(tmp.dir(), { l0CompactionTrigger: 4 })
  for (let t = 0; t < 3; t++) {
    const ops = []
    for (let i = t; i < 3000; i += 3) ops.push({ type: 'put', key: key(i), value: value(i) })
    await db.batch(ops)
    await db.flush()
  }
  assert.equal((await settled(db)).levels[0].tables, 3)
  return db
}

async function waitForLevel0Empty(db) {
  const deadline = Date.now() + 30_000
  while (db.stats().levels[0].tables !== 0) {
    assert.ok(Date.now() < deadline, `level 0 still ${JSON.stringify(db.stats().levels.map((l) => l.tables))}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return settled(db)
}

function checkAll(db) {
  for (let i = 0; i < 3000; i++) assert.equal(db.getSync(key(i))?.toString(), value(i))
}

describe('level 0 compacted once reads have paid for it', () => {
  // At least 4096 vain probes for a level 0 this small: 1400 reads of
  // absent keys probe all three tables.
  const absent = (i) => `${key(i % 3000)}x`
  for (const [name, read] of [
    ['getSync', async (db) => { for (let i = 0; i < 1400; i++) assert.equal(db.getSync(absent(i)), null) }],
    ['get', async (db) => { for (let i = 0; i < 1400; i++) assert.equal(await db.get(absent(i)), null) }],
    ['getMany', async (db) => {
      for (let b = 0; b < 14; b++) {
        const values = await db.getMany(Array.from({ length: 100 }, (_, j) => absent(b * 100 + j)))
        assert.ok(values.every((v) => v === null || v === undefined))
      }
    }],
  ]) {
    test(`through ${name}`, async () => {
      const db = await threeLevel0Tables()
      try {
        await read(db)
        const s = await waitForLevel0Empty(db)
        // Into the base level (the bottom, for a tree this small).
        assert.ok(s.levels.slice(1).some((l) => l.tables > 0), JSON.stringify(s.levels))
        checkAll(db)
      } finally {
        await db.close()
      }
    })
  }

  test('reads the memtable answers, or none at all, leave level 0 alone', async () => {
    const db = await threeLevel0Tables()
    try {
      for (let i = 0; i < 3000; i++) await db.put(`m${i}`, 'x')
      for (let r = 0; r < 3; r++) for (let i = 0; i < 3000; i++) assert.equal(db.getSync(`m${i}`)?.toString(), 'x')
      await new Promise((resolve) => setTimeout(resolve, 1200))
      assert.equal((await settled(db)).levels[0].tables, 3)
      checkAll(db)
    } finally {
      await db.close()
    }
  })
})
