// ToonLevel beyond abstract-level's own suite (__test__/level/suite.cjs):
// the key escape as the plain Database sees it, the package entry points,
// sublevels with encodings, explicit snapshots with seek, and the
// underlying Database for transactions.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { after, test } from 'node:test'

import { ToonLevel } from 'toondb-storage/level'
import { Database, tempRoot } from './helpers.mjs'

const require = createRequire(import.meta.url)
const tmp = tempRoot('level')
after(() => tmp.cleanup())

test('ESM import and CommonJS require give the same class', () => {
  assert.equal(require('toondb-storage/level').ToonLevel, ToonLevel)
  assert.equal(require('toondb-storage').Database, Database)
})

test('keys are stored as they are, except empty keys and keys starting with 0x00 (one 0x00 in front)', async () => {
  const location = tmp.dir()
  const db = new ToonLevel(location, { keyEncoding: 'buffer', valueEncoding: 'utf8' })
  const keys = [Buffer.alloc(0), Buffer.from([0]), Buffer.from([0, 0, 7]), Buffer.from([1]), Buffer.from('abc')]
  await db.batch(keys.map((key, i) => ({ type: 'put', key, value: String(i) })))
  assert.deepEqual(
    (await db.iterator().all()).map(([k, v]) => [k.toString('hex'), v]),
    keys.map((k, i) => [k.toString('hex'), String(i)]),
    'Level order is the byte order of the keys',
  )
  assert.equal(await db.get(Buffer.alloc(0)), '0')
  await db.close()

  const raw = await Database.open(location)
  const stored = (await raw.keys().all()).map((k) => k.toString('hex'))
  assert.deepEqual(stored, ['00', '0000', '00000007', '01', Buffer.from('abc').toString('hex')])
  assert.equal(raw.getSync('abc').toString(), '4', 'an ordinary key reads the same through Database')
  await raw.close()
})

test('sublevels with json values, explicit snapshots with seek, and database transactions', async () => {
  const db = new ToonLevel(tmp.dir())
  const users = db.sublevel('users', { valueEncoding: 'json' })
  await users.put('alice', { age: 30 })
  await users.batch([
    { type: 'put', key: 'bob', value: { age: 40 } },
    { type: 'put', key: 'carol', value: { age: 50 } },
  ])
  assert.deepEqual(await users.get('bob'), { age: 40 })
  assert.deepEqual(users.getSync('carol'), { age: 50 })

  const snapshot = db.snapshot()
  await users.put('bob', { age: 41 })
  await users.del('carol')
  const it = users.iterator({ snapshot })
  it.seek('bob')
  assert.deepEqual(await it.next(), ['bob', { age: 40 }])
  assert.deepEqual(await it.next(), ['carol', { age: 50 }])
  it.seek('a')
  assert.deepEqual(await it.next(), ['alice', { age: 30 }])
  await it.close()
  assert.deepEqual(await users.get('carol', { snapshot }), { age: 50 })
  assert.equal(await users.get('carol'), undefined)
  await snapshot.close()

  // The underlying Database: transactions over the same data.
  const inner = db.database
  assert.ok(inner instanceof Database)
  await inner.transact(async (txn) => {
    txn.put('!users!dave', JSON.stringify({ age: 60 }))
  })
  assert.deepEqual(await users.keys().all(), ['alice', 'bob', 'dave'])
  await users.clear({ gt: 'alice' })
  assert.deepEqual(await users.keys().all(), ['alice'])
  assert.equal(inner.stats().liveSnapshots, 0)
  await db.close()
  assert.equal(db.database, null)
})

test('errorIfExists on an existing database fails with the engine error as cause', async () => {
  const location = tmp.dir()
  const a = new ToonLevel(location)
  await a.open()
  const b = new ToonLevel(location, { errorIfExists: true })
  await assert.rejects(b.open(), (err) => err.code === 'LEVEL_DATABASE_NOT_OPEN' && /exists/.test(err.cause.message))
  await a.close()
})
