// Review of issue 16 (writes copy their bytes during the call): a write
// whose copy fails part-way must leave nothing behind in the write group.
import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import { Database, tempRoot } from './helpers.mjs'

const TIMEOUT = 60000
const tmp = tempRoot('review16')
after(() => tmp.cleanup())

async function entries(db) {
  const out = []
  for await (const [k, v] of db.iterator()) out.push([k.toString('latin1'), v.toString('latin1')])
  return out
}

// A value whose ArrayBuffer was transferred before the call: it reads as
// empty (length 0), so validation passes, but copying it throws.
function detachedValue() {
  const u8 = new Uint8Array(8)
  structuredClone(u8.buffer, { transfer: [u8.buffer] })
  assert.equal(u8.byteLength, 0)
  return u8
}

describe('a write that fails while being copied leaves no trace', { timeout: TIMEOUT }, () => {
  test('a rejected put is not committed', async () => {
    const db = await Database.open(tmp.dir())
    const p = db.put('rejected', detachedValue())
    const outcome = await p.then(() => 'resolved', (e) => e.code)
    await db.put('later', 'x')
    const got = await entries(db)
    if (outcome === 'resolved') {
      // Acceptable only if it really was written (as an empty value).
      assert.deepEqual(got, [['later', 'x'], ['rejected', '']])
    } else {
      assert.deepEqual(got, [['later', 'x']], `put rejected with ${outcome} but was committed`)
    }
    await db.close()
  })

  test("another caller's write in the same group is not failed or corrupted", async () => {
    const db = await Database.open(tmp.dir())
    // Leave a non-zero value length in the handle's reused operation log.
    await db.put('a', 'xyz')
    const bad = db.put('k', detachedValue()).then(() => 'resolved', (e) => e.code)
    const good1 = db.put('p', 'q').then(() => 'resolved', (e) => `${e.code}: ${e.message}`)
    const good2 = db.put('rrrr', 'ssss').then(() => 'resolved', (e) => `${e.code}: ${e.message}`)
    const outcomes = [await bad, await good1, await good2]
    assert.equal(outcomes[1], 'resolved', `an unrelated put failed: ${outcomes[1]}`)
    assert.equal(outcomes[2], 'resolved', `an unrelated put failed: ${outcomes[2]}`)
    const got = await entries(db)
    const want = [['a', 'xyz'], ['p', 'q'], ['rrrr', 'ssss']]
    if (outcomes[0] === 'resolved') want.splice(1, 0, ['k', ''])
    assert.deepEqual(got, want)
    await db.close()
  })

  test('a chained batch put that threw is not written', async () => {
    const db = await Database.open(tmp.dir())
    const b = db.batch()
    let threw = false
    try {
      b.put('threw', detachedValue())
    } catch {
      threw = true
    }
    b.put('ok', 'v')
    await b.write()
    const got = await entries(db)
    if (threw) assert.deepEqual(got, [['ok', 'v']], 'the put that threw was written')
    else assert.deepEqual(got, [['ok', 'v'], ['threw', '']])
    await db.close()
  })
})

describe('a write issued while another is being copied', { timeout: TIMEOUT }, () => {
  // A Proxy over a Uint8Array passes `instanceof Uint8Array`, and copying it
  // runs its traps: user code that issues another write in the middle of the
  // first one's copy into the shared operation log.
  test('both are stored with the bytes they were given', async () => {
    const db = await Database.open(tmp.dir())
    const real = new Uint8Array([118, 118, 118]) // 'vvv'
    let nested = null
    const value = new Proxy(real, {
      get(t, p) {
        if (p === '0' && nested === null) nested = db.put('nested', 'NNNNNN')
        const v = Reflect.get(t, p)
        return typeof v === 'function' ? v.bind(t) : v
      },
    })
    const outer = db.put('outer', value).then(() => 'resolved', (e) => e.code)
    const outcomes = [await outer, nested === null ? 'not issued' : await nested.then(() => 'resolved', (e) => e.code)]
    const got = await entries(db)
    const want = []
    if (outcomes[1] === 'resolved') want.push(['nested', 'NNNNNN'])
    if (outcomes[0] === 'resolved') want.push(['outer', 'vvv'])
    assert.deepEqual(got, want, `outcomes ${outcomes}`)
    await db.close()
  })
})

describe('close() of a handle that is not the last one', { timeout: TIMEOUT }, () => {
  // index.d.ts: "a resolved close means every acknowledged write is on
  // disk". Another handle on the path (a worker's, the main thread's) keeps
  // the engine open, but this close still has to sync the WAL.
  test('syncs the WAL before it resolves', async () => {
    const dir = tmp.dir()
    const main = await Database.open(dir)
    const worker = await Database.open(dir)
    for (let i = 0; i < 10; i++) await worker.put('w' + i, 'v')
    const before = main.stats().walSyncs
    await worker.close()
    assert.ok(main.stats().walSyncs > before, 'close() resolved without syncing the WAL')
    await main.close()
  })
})
