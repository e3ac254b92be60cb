// db.backup(dest) under 64 writes in flight, db.verify(), events
// (db.on('flush' | 'compaction' | 'stall' | 'error')), and close()
// rejecting with the background error.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { after, describe, test } from 'node:test'

import { assertRejectsCode, Database, INDEX_JS, tempRoot } from './helpers.mjs'

const tmp = tempRoot('backup')
after(() => tmp.cleanup())

const KEYS = 300
const key = (n) => `k${String(n).padStart(4, '0')}`

/**
 * Operation `i` of the write sequence: a put, every 10th a delete, every
 * 7th an atomic batch of three puts. Values carry `i`.
 */
function op(i) {
  if (i % 10 === 9) return [{ type: 'del', key: key((i * 7) % KEYS) }]
  if (i % 7 === 0) {
    return [0, 1, 2].map((d) => ({ type: 'put', key: key((i + d * 101) % KEYS), value: `v${i}-${d}` }))
  }
  return [{ type: 'put', key: key(i % KEYS), value: `v${i}-${'x'.repeat(i % 50)}` }]
}

/** The database after operations 0..m-1, as sorted [key, value] strings. */
function prefixState(m) {
  const state = new Map()
  for (let i = 0; i < m; i++) {
    for (const o of op(i)) {
      if (o.type === 'put') state.set(o.key, o.value)
      else state.delete(o.key)
    }
  }
  return [...state.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
}

async function entries(db) {
  return (await db.iterator().all()).map(([k, v]) => [k.toString(), v.toString()])
}

describe('backup', { timeout: 180000 }, () => {
  test('a backup under 64 writes in flight holds exactly one commit timestamp', async () => {
    const dir = tmp.dir('src')
    const db = await Database.open(dir, { memtableSize: 64 << 10, l0CompactionTrigger: 2 })
    let next = 0
    let stop = false
    const total = 1000000 // the writers run until the last backup is done
    // 64 writers in flight, issued in sequence order (issue order is commit
    // order), so the copy must equal some prefix of the sequence.
    async function writer() {
      while (!stop && next < total) {
        const i = next++
        const ops = op(i)
        if (ops.length === 1 && ops[0].type === 'put') await db.put(ops[0].key, ops[0].value)
        else if (ops.length === 1) await db.del(ops[0].key)
        else await db.batch(ops)
      }
    }
    const writers = Array.from({ length: 64 }, writer)
    const backups = []
    for (let n = 0; n < 3; n++) {
      // Spaced by the writers' progress, not by time (a loaded machine may
      // issue few writes in 150 ms): enough for memtables to fill and flush.
      const target = (n + 1) * 5000
      const deadline = Date.now() + 60000
      while (next < target) {
        assert.ok(Date.now() < deadline, `writers stalled at ${next}`)
        await new Promise((r) => setTimeout(r, 5))
      }
      const dest = path.join(tmp.root, `copy-${n}`)
      const issuedBefore = next
      const report = await db.backup(dest)
      backups.push({ dest, report, issuedBefore, issuedAfter: next })
    }
    stop = true
    await Promise.all(writers)
    assert.ok(db.stats().flushes > 0, 'memtables were flushed while backing up')
    await db.close()

    // Every backup ran while writes were in flight.
    for (const b of backups) assert.ok(b.issuedAfter > b.issuedBefore, JSON.stringify(b))
    for (const { dest, report, issuedBefore, issuedAfter } of backups) {
      assert.equal(typeof report.ts, 'number')
      assert.ok(report.tablesLinked + report.tablesCopied + report.tablesWritten > 0, JSON.stringify(report))
      assert.ok(!fs.existsSync(path.join(dest, 'BACKUP-PENDING')))
      const copy = await Database.open(dest, { createIfMissing: false })
      assert.equal(copy.stats().visibleTs, report.ts)
      const got = await entries(copy)
      // The newest operation whose value is in the copy bounds the prefix;
      // deletes after it are found by trying the next few lengths.
      let newest = -1
      for (const [, v] of got) newest = Math.max(newest, Number(/^v(\d+)/.exec(v)[1]))
      let match = -1
      for (let m = newest + 1; m <= newest + 12 && match < 0; m++) {
        if (JSON.stringify(prefixState(m)) === JSON.stringify(got)) match = m
      }
      assert.ok(match >= 0, `backup at ts ${report.ts} is no prefix of the write sequence (newest value ${newest})`)
      // Writes issued before the backup started and resolved are in it; the
      // copy never holds a write issued after the backup resolved.
      assert.ok(match <= issuedAfter, `copy holds ${match} ops, only ${issuedAfter} were issued by the end`)
      assert.ok(match >= issuedBefore - 64, `copy holds ${match} ops, ${issuedBefore} were issued before`)
      const v = await copy.verify()
      assert.equal(v.ok, true, JSON.stringify(v))
      await copy.close()
    }
  })

  test('destination rules and argument errors', async () => {
    const dir = tmp.dir('src')
    const db = await Database.open(dir)
    await db.put('a', '1')
    const full = path.join(tmp.root, 'full')
    fs.mkdirSync(full)
    fs.writeFileSync(path.join(full, 'mine.txt'), 'keep')
    await assertRejectsCode(() => db.backup(full), 'TOONDB_INVALID_ARGUMENT', /not empty/)
    assert.deepEqual(fs.readdirSync(full), ['mine.txt'])
    await assertRejectsCode(() => db.backup(''), 'TOONDB_INVALID_ARGUMENT')
    await assertRejectsCode(() => db.backup(42), 'TOONDB_INVALID_ARGUMENT')
    await assertRejectsCode(() => db.backup(dir), 'TOONDB_INVALID_ARGUMENT')
    // Two backups at once into one destination: one wins, the copy is whole.
    const dest = path.join(tmp.root, 'raced')
    const results = await Promise.allSettled([db.backup(dest), db.backup(dest)])
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1)
    const loser = results.find((r) => r.status === 'rejected')
    assert.equal(loser.reason.code, 'TOONDB_INVALID_ARGUMENT')
    const copy = await Database.open(dest)
    assert.deepEqual(await entries(copy), [['a', '1']])
    await copy.close()
    await db.close()
    await assertRejectsCode(() => db.backup(path.join(tmp.root, 'after-close')), 'TOONDB_CLOSED')
    await assertRejectsCode(() => db.verify(), 'TOONDB_CLOSED')
  })
})

describe('verify', () => {
  test('passes on a healthy database and names a table with a flipped byte', async () => {
    const dir = tmp.dir('verify')
    const db = await Database.open(dir)
    for (let i = 0; i < 2000; i++) await db.put(key(i), `value-${i}-${'z'.repeat(30)}`)
    await db.compact()
    let r = await db.verify()
    assert.equal(r.ok, true, JSON.stringify(r))
    assert.ok(r.tables >= 1 && r.blocks > r.tables)
    const sst = fs.readdirSync(dir).find((n) => n.endsWith('.sst'))
    const fd = fs.openSync(path.join(dir, sst), 'r+')
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, 20)
    b[0] ^= 0x40
    fs.writeSync(fd, b, 0, 1, 20)
    fs.closeSync(fd)
    r = await db.verify()
    assert.equal(r.ok, false)
    assert.ok(r.problems.some((p) => p.includes(sst)), JSON.stringify(r.problems))
    await db.close()
  })
})

/** Resolves with the first argument of the next `event`, or rejects after `ms`. */
function next(db, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' event within ${ms} ms`)), ms)
    db.once(event, (info) => {
      clearTimeout(timer)
      resolve(info)
    })
  })
}

describe('events', { timeout: 60000 }, () => {
  test("'flush' and 'compaction' report what the engine did", async () => {
    const db = await Database.open(tmp.dir('events'), { autoCompaction: false })
    const flushed = next(db, 'flush')
    await db.put('a', '1')
    await db.flush()
    const f = await flushed
    assert.ok(f.count >= 1 && f.bytes > 0 && f.flushes === db.stats().flushes, JSON.stringify(f.count))
    const compacted = next(db, 'compaction')
    await db.put('a', '2')
    await db.compact()
    const c = await compacted
    assert.ok(c.count >= 1 && c.compactions >= 1)
    assert.equal(db.listenerCount('flush'), 0, 'once() listeners are removed')
    assert.throws(() => db.on('nope', () => {}), { code: 'TOONDB_INVALID_ARGUMENT' })
    assert.throws(() => db.on('flush', 42), { code: 'TOONDB_INVALID_ARGUMENT' })
    const fn = () => {}
    db.on('flush', fn).on('stall', fn)
    assert.equal(db.listenerCount('flush'), 1)
    db.off('flush', fn)
    db.removeAllListeners()
    assert.equal(db.listenerCount('stall'), 0)
    await db.close()
  })

  test("'stall' reports slowed-down writes", async () => {
    // Tiny memtables and a level-0 slowdown at 2 tables: flushes keep
    // level 0 at the threshold while compaction catches up.
    const db = await Database.open(tmp.dir('stall'), {
      memtableSize: 4096,
      maxImmutableMemtables: 2,
      l0CompactionTrigger: 2,
      l0SlowdownWrites: 2,
    })
    let stop = false
    const stalled = next(db, 'stall', 20000).finally(() => {
      stop = true
    })
    const value = 'v'.repeat(200)
    let i = 0
    const writer = async () => {
      while (!stop) await db.put(`k${i++ % 5000}`, value, { sync: i % 2 === 0 })
    }
    await Promise.all(Array.from({ length: 64 }, writer))
    const s = await stalled
    assert.ok(s.slowdowns + s.stalls > 0, JSON.stringify({ slowdowns: s.slowdowns, stalls: s.stalls }))
    assert.ok(s.stats.writeSlowdowns + s.stats.writeStalls > 0)
    await db.close()
  })

  test("a failed WAL write: 'error' event, then close() rejects with it", () => {
    // A child process whose file size limit (ulimit -f) makes the WAL
    // append fail with EFBIG (SIGXFSZ is ignored so the write returns the
    // error): a real background I/O failure.
    const dir = tmp.dir('efbig')
    const script = `
      const { Database } = require(${JSON.stringify(INDEX_JS)})
      process.on('SIGXFSZ', () => {})
      ;(async () => {
        const out = {}
        const db = await Database.open(${JSON.stringify(dir)}, { memtableSize: 64 << 20 })
        const errorEvent = new Promise((resolve) => db.on('error', resolve))
        const big = 'x'.repeat(64 << 10)
        try {
          for (let i = 0; i < 200; i++) await db.put('k' + i, big)
          out.writes = 'all succeeded'
        } catch (err) {
          out.writeError = err.code
        }
        // Events are polled every 100 ms; the bound only guards a hang.
        let timer
        const ev = await Promise.race([errorEvent, new Promise((r) => (timer = setTimeout(() => r(null), 30000)))])
        clearTimeout(timer)
        out.event = ev && { code: ev.code, source: ev.source, message: ev.message }
        out.backgroundError = db.stats().backgroundError
        try {
          await db.close()
          out.close = 'resolved'
        } catch (err) {
          out.close = { code: err.code, message: err.message, isError: err instanceof Error }
        }
        out.closed = db.closed
        console.log(JSON.stringify(out))
      })()
    `
    const r = spawnSync('bash', ['-c', 'ulimit -f 2048 && exec "$0" -e "$1"', process.execPath, script], {
      encoding: 'utf8',
      timeout: 60000,
    })
    assert.equal(r.status, 0, r.stderr)
    const out = JSON.parse(r.stdout.trim().split('\n').pop())
    assert.equal(out.writeError, 'TOONDB_IO', JSON.stringify(out))
    assert.ok(out.backgroundError, JSON.stringify(out))
    assert.equal(out.event && out.event.code, 'TOONDB_IO', JSON.stringify(out))
    assert.equal(out.event.source, 'background')
    assert.equal(out.close.code, 'TOONDB_IO', JSON.stringify(out))
    assert.equal(out.close.isError, true)
    assert.equal(out.close.message, out.event.message)
    assert.equal(out.closed, true)
  })
})
