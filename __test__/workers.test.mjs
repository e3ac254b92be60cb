// worker_threads share the process-wide engine; handles are independent;
// processes exit on their own when idle (even with handles never closed)
// and never before pending writes resolve.
import assert from 'node:assert/strict'
import { after, afterEach, test } from 'node:test'
import { Worker } from 'node:worker_threads'

import { Database, INDEX_JS, lastJson, runNode, tempRoot } from './helpers.mjs'

// Generous per-test limit: a hang fails the test instead of the run.
const TIMEOUT = 60000
const tmp = tempRoot('workers')
after(() => tmp.cleanup())

// Workers still running after a test (it failed half-way) are terminated,
// so a failure cannot leave this process hanging.
const live = new Set()
afterEach(async () => {
  for (const w of live) await w.terminate()
  live.clear()
})

// A worker that opens the database and then does what the main thread asks.
const WORKER_SOURCE = `
const { Database } = require(${JSON.stringify(INDEX_JS)})
const { parentPort, workerData } = require('node:worker_threads')
let db
let spinning = false
const handlers = {
  async open() { db = await Database.open(workerData.dir); return { closed: db.closed } },
  async write({ prefix, n }) {
    const writes = []
    for (let i = 0; i < n; i++) writes.push(db.put(prefix + String(i).padStart(4, '0'), workerData.name + ':' + i))
    await Promise.all(writes)
    return { written: n }
  },
  async batch({ ops }) { await db.batch(ops); return {} },
  async read({ keys }) { return keys.map((k) => { const v = db.getSync(k); return v === null ? null : v.toString() }) },
  async scan({ opts }) { return (await db.iterator(opts).all()).map(([k, v]) => [k.toString(), v.toString()]) },
  async stats() { return db.stats() },
  async flush() { await db.flush(); return {} },
  async close() { await db.close(); return { closed: db.closed } },
  // Keeps writing until the worker is terminated.
  async spin() {
    let i = 0
    const more = () => { for (let j = 0; j < 32; j++) db.put('spin' + (i++), 'x'.repeat(500), { sync: true }).catch(() => {}) }
    more()
    setInterval(more, 1)
    return {}
  },
  // Ends the worker without closing its handle.
  async leave() { setImmediate(() => parentPort.close()); return {} },
}
parentPort.on('message', async ({ id, cmd, args }) => {
  try {
    parentPort.postMessage({ id, ok: await handlers[cmd](args) })
  } catch (err) {
    parentPort.postMessage({ id, error: { code: err.code, message: err.message } })
  }
})
`

function startWorker(dir, name) {
  const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { dir, name } })
  live.add(w)
  let nextId = 1
  const waiting = new Map()
  const exited = new Promise((resolve) =>
    w.on('exit', (code) => {
      live.delete(w)
      for (const p of waiting.values()) p.reject(new Error(`worker ${name} exited (code ${code}) before answering`))
      waiting.clear()
      resolve(code)
    }),
  )
  w.on('message', ({ id, ok, error }) => {
    const p = waiting.get(id)
    waiting.delete(id)
    if (error) p.reject(Object.assign(new Error(error.message), { code: error.code }))
    else p.resolve(ok)
  })
  w.on('error', (err) => {
    for (const p of waiting.values()) p.reject(err)
  })
  return {
    worker: w,
    exited,
    call(cmd, args) {
      const id = nextId++
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject })
        w.postMessage({ id, cmd, args })
      })
    },
  }
}

const keys = (prefix, n) => Array.from({ length: n }, (_, i) => prefix + String(i).padStart(4, '0'))

test('worker threads opening the same path share one engine', { timeout: TIMEOUT }, async () => {
  const dir = tmp.dir()
  const main = await Database.open(dir)
  const a = startWorker(dir, 'A')
  const b = startWorker(dir, 'B')
  try {
    await Promise.all([a.call('open'), b.call('open')])

    // Both write at the same time; each sees the other's writes.
    await Promise.all([a.call('write', { prefix: 'a', n: 300 }), b.call('write', { prefix: 'b', n: 300 })])
    assert.deepEqual(await a.call('read', { keys: keys('b', 300) }), keys('b', 300).map((_, i) => `B:${i}`))
    assert.deepEqual(await b.call('read', { keys: keys('a', 300) }), keys('a', 300).map((_, i) => `A:${i}`))
    assert.deepEqual(main.getSync('a0299'), Buffer.from('A:299'))
    assert.deepEqual(main.getSync('b0000'), Buffer.from('B:0'))
    const scanned = await a.call('scan', { opts: { prefix: 'b', limit: 3 } })
    assert.deepEqual(scanned, [['b0000', 'B:0'], ['b0001', 'B:1'], ['b0002', 'B:2']])

    // One engine: the counters are the same from every thread. (Writes of
    // one event-loop turn may be coalesced, so commits is at most 600.)
    const commits = main.stats().commits
    assert.ok(commits >= 2 && commits <= 600, `commits ${commits}`)
    assert.equal((await a.call('stats')).commits, commits)
    assert.equal((await b.call('stats')).commits, commits)
    assert.equal((await b.call('stats')).visibleTs, main.stats().visibleTs)

    // A batch from B (deleting some of A's keys) and a write from main are
    // visible in A; a flush from A moves everything into a table for all.
    await b.call('batch', {
      ops: [
        { type: 'del', key: 'a0000' },
        { type: 'del', key: 'a0001' },
        { type: 'put', key: 'from-b-batch', value: 'yes' },
      ],
    })
    await main.put('from-main', 'hello')
    assert.deepEqual(await a.call('read', { keys: ['a0000', 'a0001', 'a0002', 'from-b-batch', 'from-main'] }), [
      null, null, 'A:2', 'yes', 'hello',
    ])
    await a.call('flush')
    assert.equal(main.stats().tables, 1)
    assert.equal(main.stats().memtableBytes, 0)

    // Worker A closes its handle: its own calls now fail, nobody else's do.
    assert.deepEqual(await a.call('close'), { closed: true })
    await assert.rejects(a.call('read', { keys: ['a0002'] }), { code: 'TOONDB_CLOSED' })
    assert.deepEqual(await b.call('read', { keys: ['a0002'] }), ['A:2'])
    await b.call('write', { prefix: 'late-b', n: 10 })
    assert.deepEqual(main.getSync('late-b0009'), Buffer.from('B:9'))

    assert.deepEqual(await b.call('close'), { closed: true })
    await Promise.all([a.call('leave'), b.call('leave')])
    assert.equal(await a.exited, 0)
    assert.equal(await b.exited, 0)

    // The main thread's handle still works after both workers closed theirs.
    assert.equal(main.closed, false)
    await main.put('after-workers', '1')
    assert.deepEqual(main.getSync('after-workers'), Buffer.from('1'))
    assert.equal((await main.iterator({ prefix: 'a' }).all()).length, 298 + 1) // a0002..a0299 + after-workers
    await main.flush()
    assert.equal(main.stats().tables, 2)
  } finally {
    await a.worker.terminate()
    await b.worker.terminate()
    await main.close()
  }

  // Everything is durable across a full close and reopen.
  const again = await Database.open(dir)
  try {
    assert.equal(again.stats().commits, 0, 'a fresh engine')
    assert.equal((await again.iterator({ prefix: 'b0' }).all()).length, 300)
    assert.equal(again.getSync('a0000'), null)
    assert.deepEqual(again.getSync('from-b-batch'), Buffer.from('yes'))
    assert.deepEqual(again.getSync('from-main'), Buffer.from('hello'))
  } finally {
    await again.close()
  }
})

test('a worker that exits without closing, or is terminated mid-write, gives its handle back', { timeout: TIMEOUT }, async () => {
  const dir = tmp.dir()
  const main = await Database.open(dir)
  try {
    // Exits on its own without calling close().
    const c = startWorker(dir, 'C')
    await c.call('open')
    await c.call('write', { prefix: 'c', n: 50 })
    await c.call('leave')
    assert.equal(await c.exited, 0)

    // Terminated while it has sync writes in flight, several times over.
    for (let i = 0; i < 3; i++) {
      const d = startWorker(dir, 'D')
      await d.call('open')
      await d.call('spin')
      await new Promise((resolve) => setTimeout(resolve, 30))
      await d.worker.terminate()
      await d.exited
    }

    // The main handle is unaffected.
    await main.put('main-after', 'ok')
    assert.deepEqual(main.getSync('main-after'), Buffer.from('ok'))
    assert.deepEqual(main.getSync('c0049'), Buffer.from('C:49'))
  } finally {
    await main.close()
  }
  // Once main closed, no handle is left: another process can take the lock.
  const r = await runNode(
    `require(${JSON.stringify(INDEX_JS)}).Database.open(${JSON.stringify(dir)}).then(
      async (db) => { const v = db.getSync('c0049'); await db.close(); console.log(JSON.stringify({ ok: true, v: String(v) })) },
      (e) => console.log(JSON.stringify({ ok: false, code: e.code, message: e.message })))`,
  )
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(lastJson(r.stdout), { ok: true, v: 'C:49' })
})

test('a process that opens, writes and never closes exits by itself', { timeout: TIMEOUT }, async () => {
  const dir = tmp.dir()
  // Main thread and a worker both leave their handles open; there is also
  // an unfinished iterator, an unwritten chained batch and a finished flush.
  const r = await runNode(
    `
    const { Database } = require(${JSON.stringify(INDEX_JS)})
    const { Worker } = require('node:worker_threads')
    const dir = ${JSON.stringify(dir)}
    ;(async () => {
      const db = await Database.open(dir, { sync: true })
      for (let i = 0; i < 100; i++) await db.put('k' + String(i).padStart(3, '0'), 'v' + i)
      await db.batch([{ type: 'put', key: 'batch', value: 'b' }])
      await db.flush()
      await db.put('after-flush', 'x', { sync: false })
      const it = db.iterator()
      it.nextSync()
      db.batch().put('never', 'written')
      const w = new Worker(
        "const { Database } = require(" + JSON.stringify(${JSON.stringify(INDEX_JS)}) + ");" +
        "Database.open(" + JSON.stringify(dir) + ").then(async (db) => { await db.put('from-worker', 'w'); require('node:worker_threads').parentPort.postMessage('done') })",
        { eval: true })
      await new Promise((resolve) => w.once('message', resolve))
      console.log('written ' + Date.now())
    })()
    `,
    { timeoutMs: 10000 },
  )
  assert.equal(r.timedOut, false, `the process did not exit by itself within 10 s (stdout ${r.stdout})`)
  assert.equal(r.code, 0, r.stderr)
  const [word, writtenAt] = r.stdout.trim().split(' ')
  assert.equal(word, 'written')
  // Timed from the end of its work, not from the spawn: starting node, the
  // addon and a worker and 100 fsyncs can take seconds on a loaded machine.
  const lingered = r.endedAt - Number(writtenAt)
  assert.ok(lingered < 5000, `exited ${lingered} ms after its last write`)

  // Acknowledged writes of the unclosed process are all there.
  const db = await Database.open(dir)
  try {
    assert.equal((await db.iterator({ prefix: 'k' }).all()).length, 100)
    assert.deepEqual(db.getSync('batch'), Buffer.from('b'))
    assert.deepEqual(db.getSync('after-flush'), Buffer.from('x'))
    assert.deepEqual(db.getSync('from-worker'), Buffer.from('w'))
    assert.equal(db.getSync('never'), null)
  } finally {
    await db.close()
  }
})

test('a process with pending writes does not exit before they resolve', { timeout: TIMEOUT }, async () => {
  for (const variant of ['writes only', 'writes then close()', 'openSync']) {
    const dir = tmp.dir()
    // Nothing but the pending promises keeps this process alive: the script
    // never awaits them; an 'exit' hook reports how many had resolved.
    const r = await runNode(
      `
      const fs = require('node:fs')
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      const variant = ${JSON.stringify(variant)}
      let resolved = 0
      let expected = 0
      let closed = false
      const count = (p) => { expected++; p.then(() => resolved++, (e) => fs.writeSync(2, 'write failed: ' + e.code + ' ' + e.message + '\\n')) }
      process.on('exit', () => fs.writeSync(1, JSON.stringify({ resolved, expected, closed }) + '\\n'))
      const run = (db) => {
        for (let i = 0; i < 300; i++) count(db.put('p' + String(i).padStart(3, '0'), 'v' + i))
        count(db.batch([{ type: 'put', key: 'pb1', value: '1' }, { type: 'put', key: 'pb2', value: '2' }]))
        count(db.batch().put('pc', 'c').del('p000').write())
        count(db.put('big', Buffer.alloc(4 << 20, 7), { sync: true }))
        count(db.del('p001', { sync: true }))
        if (variant === 'writes then close()') db.close().then(() => { closed = true })
      }
      if (variant === 'openSync') run(Database.openSync(${JSON.stringify(dir)}))
      else Database.open(${JSON.stringify(dir)}).then(run)
      `,
      { timeoutMs: 15000 },
    )
    assert.equal(r.timedOut, false, `${variant}: hung`)
    assert.equal(r.code, 0, `${variant}: ${r.stderr}`)
    assert.equal(r.stderr, '', variant)
    const out = lastJson(r.stdout)
    assert.equal(out.expected, 304, variant)
    assert.equal(out.resolved, out.expected, `${variant}: the process exited with writes still pending`)
    assert.equal(out.closed, variant === 'writes then close()', variant)

    const db = await Database.open(dir)
    try {
      const all = await db.iterator({ prefix: 'p' }).all()
      assert.equal(all.length, 300 - 2 + 3, variant) // p002..p299, pb1, pb2, pc
      assert.equal(db.getSync('big').length, 4 << 20, variant)
      assert.equal(db.getSync('p001'), null, variant)
    } finally {
      await db.close()
    }
  }
})
