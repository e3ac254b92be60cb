// Reopen after a kill: `walSizeLimit` bounds the WAL the next open replays
// (stats().recoveredBytes), whatever memtableSize is (the segment is
// checkpointed into a table, the memtable not flushed), and every
// acknowledged write is there after the reopen. A child process loads
// batches, prints "done" once they are all acknowledged and the engine is
// idle, and is SIGKILLed; the parent reopens the directory. The control run
// turns the limit off and replays everything, so the bound is the option's.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { after, test } from 'node:test'

import { Database, INDEX_JS, tempRoot } from './helpers.mjs'

const tmp = tempRoot('reopen')
after(() => tmp.cleanup())

const BATCHES = 30
const PER_BATCH = 100
const VALUE_LEN = 1000
const LIMIT = 256 << 10
const keyOf = (i) => `key${String(i).padStart(13, '0')}`
const valueOf = (i) => Buffer.alloc(VALUE_LEN, i % 251)

const CHILD = `
const { Database } = require(${JSON.stringify(INDEX_JS)})
const [dir, options] = [process.argv[1], JSON.parse(process.argv[2])]
const VALUE_LEN = ${VALUE_LEN}
const keyOf = ${keyOf.toString()}
const valueOf = ${valueOf.toString()}
;(async () => {
  const db = await Database.open(dir, options)
  for (let b = 0; b < ${BATCHES}; b++) {
    const ops = []
    for (let i = b * ${PER_BATCH}; i < (b + 1) * ${PER_BATCH}; i++) ops.push({ type: 'put', key: keyOf(i), value: valueOf(i) })
    await db.batch(ops)
  }
  for (;;) {
    const s = db.stats()
    if (s.immutableMemtables === 0 && !s.maintenanceBusy) break
    await new Promise((r) => setTimeout(r, 10))
  }
  const s = db.stats()
  process.stdout.write('done ' + JSON.stringify({ flushes: s.flushes, checkpoints: s.checkpoints, checkpointTables: s.checkpointTables }) + '\\n')
  setInterval(() => {}, 1000) // wait for the kill
})()
`

/** Loads in a child, SIGKILLs it, reopens: [the child's last stats, reopened db]. */
async function loadKillReopen(dir, options) {
  const child = spawn(process.execPath, ['-e', CHILD, dir, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const stats = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d
      const m = /done (.*)\n/.exec(out)
      if (m) {
        child.kill('SIGKILL')
        resolve(JSON.parse(m[1]))
      }
    })
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`child exited with ${code}`))
    })
  })
  await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.on('exit', r)))
  const db = await Database.open(dir)
  for (let i = 0; i < BATCHES * PER_BATCH; i++) {
    assert.deepEqual(db.getSync(keyOf(i)), valueOf(i), keyOf(i))
  }
  return [stats, db]
}

test('walSizeLimit bounds the WAL replayed after a kill', async () => {
  const dir = tmp.dir('bounded')
  const [child, db] = await loadKillReopen(dir, { walSizeLimit: LIMIT, memtableSize: 64 << 20 })
  const s = db.stats()
  const oneBatch = PER_BATCH * (VALUE_LEN + 64)
  // Checkpointed, not flushed: the memtable was never sealed.
  assert.ok(child.checkpoints >= 5, `${child.checkpoints} checkpoints: the WAL limit should have rotated the segment`)
  assert.equal(child.checkpointTables, child.checkpoints)
  assert.equal(child.flushes, 0)
  assert.ok(s.recoveredBytes <= LIMIT + oneBatch, `replayed ${s.recoveredBytes} bytes`)
  await db.close()
})

test('without walSizeLimit the memtable bounds the replay (control)', async () => {
  const dir = tmp.dir('control')
  const [child, db] = await loadKillReopen(dir, { walSizeLimit: 2 ** 50, memtableSize: 64 << 20 })
  const s = db.stats()
  assert.equal(child.flushes, 0)
  assert.equal(child.checkpoints, 0)
  assert.ok(s.recoveredBytes >= BATCHES * PER_BATCH * VALUE_LEN, `replayed ${s.recoveredBytes} bytes`)
  await db.close()
})

test('walSizeLimit below 4 KiB is refused', async () => {
  await assert.rejects(Database.open(tmp.dir('small'), { walSizeLimit: 100 }), { code: 'TOONDB_INVALID_ARGUMENT' })
})
