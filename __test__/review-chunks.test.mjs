// Review of column chunks from Node: close() while the automatic chunker
// runs (no hang, no error, nothing lost); stats() per column count what
// reads of chunked rows read; `where` on an f64 with NaN, -0 and nulls over
// chunks (min/max skipping) matches a model.
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import { Database, tempRoot } from './helpers.mjs'

const tmp = tempRoot('review-chunks')
after(() => tmp.cleanup())

const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} hung`)), ms).unref())])

describe('review: column chunks', () => {
  test('close() while the automatic chunker runs loses nothing', async () => {
    const dir = tmp.dir()
    const N = 270_000
    const want = new Map()
    for (let round = 0; round < 2; round++) {
      const db = await Database.open(dir)
      const t = round === 0 ? await db.createTable('m', { columns: { id: 'i64', v: 'f64' }, primaryKey: 'id' }) : db.table('m')
      // Enough rows through upserts to start the background chunker.
      for (let start = 0; start < N; start += 45_000) {
        const n = Math.min(45_000, N - start)
        const id = new BigInt64Array(n)
        const v = new Float64Array(n)
        for (let i = 0; i < n; i++) {
          id[i] = BigInt(start + i)
          v[i] = (start + i) * 2 + round
          want.set(start + i, v[i])
        }
        await t.upsertColumns({ id, v })
      }
      for (let k = round; k < N; k += 1001) {
        if (k % 2 === 0) {
          await t.delete(BigInt(k))
          want.delete(k)
        } else {
          await t.upsert([{ id: BigInt(k), v: -k }])
          want.set(k, -k)
        }
      }
      await withTimeout(db.close(), 60_000, 'close')
    }
    const db = await Database.open(dir)
    const t = db.table('m')
    const check = async (what) => {
      const cols = await t.scanColumns()
      assert.equal(cols.id.length, want.size, what)
      const keys = [...want.keys()].sort((a, b) => a - b)
      for (let i = 0; i < keys.length; i += 1) {
        if (Number(cols.id[i]) !== keys[i] || cols.v[i] !== want.get(keys[i])) {
          assert.fail(`${what}: row ${i}: got ${cols.id[i]}=${cols.v[i]}, want ${keys[i]}=${want.get(keys[i])}`)
        }
      }
    }
    await check('reopened')
    await db.compact()
    await check('compacted')
    await db.close()
  })

  test('stats: a get and a merged scan count the chunk and cells they read', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('s', { columns: { id: 'string', v: 'i64' }, primaryKey: 'id' })
    await t.upsert(Array.from({ length: 1000 }, (_, i) => ({ id: `key-${String(i).padStart(6, '0')}-${'x'.repeat(20)}`, v: BigInt(i) })))
    await db.compact()
    const pkBytes = () => db.stats().tableReads.find((x) => x.name === 's').columns.find((c) => c.name === 'id').bytesRead
    let before = pkBytes()
    const ids = await t.scanColumns({ columns: ['id'] })
    assert.equal(ids.id.length, 1000)
    const chunkBytes = pkBytes() - before
    before = pkBytes()
    assert.deepEqual(await t.get(`key-000500-${'x'.repeat(20)}`, { columns: ['v'] }), { v: 500n })
    assert.ok(pkBytes() - before >= chunkBytes, `get counted ${pkBytes() - before} of a ${chunkBytes}-byte pk chunk`)
    // Rows written after the chunking are merged from their cells.
    await t.upsert(Array.from({ length: 500 }, (_, i) => ({ id: `later-${i}`, v: 1n })))
    before = pkBytes()
    assert.equal((await t.scanColumns({ columns: ['v'] })).v.length, 1500)
    assert.ok(pkBytes() - before >= 500 * 'later-0'.length, `merged scan counted ${pkBytes() - before}`)
    await db.close()
  })

  test('where on an f64 with NaN, -0 and nulls over chunks matches a model', async () => {
    const db = await Database.open(tmp.dir())
    const t = await db.createTable('f', { columns: { id: 'i64', x: 'f64' }, primaryKey: 'id', nullable: ['x'] })
    const special = [NaN, -0, 0, null, -Infinity, Infinity, 1.5, -1.5]
    const rows = Array.from({ length: 6000 }, (_, i) => ({
      id: BigInt(i),
      // Whole chunks of one kind (all null, all NaN, all -0) and mixed ones.
      x: i < 2048 ? null : i < 4096 ? (i % 2 ? NaN : -0) : special[i % special.length],
    }))
    await t.upsert(rows)
    await db.compact()
    // Newer cells over chunked rows.
    await t.upsert([{ id: 10n, x: 0 }, { id: 3000n, x: null }, { id: 5000n, x: -0 }])
    rows[10].x = 0
    rows[3000].x = null
    rows[5000].x = -0
    // IEEE total order (the documented order): -Inf < ... < -0 < 0 < ... < Inf < NaN.
    const cmp = (a, b) => {
      if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) - Number.isNaN(b)
      if (a === b) return (Object.is(b, -0) ? 1 : 0) - (Object.is(a, -0) ? 1 : 0)
      return a < b ? -1 : 1
    }
    const ops = {
      eq: (a, b) => cmp(a, b) === 0,
      gt: (a, b) => cmp(a, b) > 0,
      gte: (a, b) => cmp(a, b) >= 0,
      lt: (a, b) => cmp(a, b) < 0,
      lte: (a, b) => cmp(a, b) <= 0,
    }
    for (const [op, b] of [
      ['eq', NaN],
      ['eq', -0],
      ['eq', 0],
      ['gte', 0],
      ['gt', -0],
      ['lt', 0],
      ['lte', -0],
      ['gt', Infinity],
      ['lt', -Infinity],
      ['gte', 1],
    ]) {
      const got = await t.scanColumns({ columns: ['id'], where: { x: { [op]: b } } })
      const want = rows.filter((r) => r.x !== null && ops[op](r.x, b)).map((r) => r.id)
      assert.deepEqual([...got.id], want, `where x ${op} ${Object.is(b, -0) ? '-0' : b}`)
    }
    await db.close()
  })
})
