// bin/toondb.js on real databases, as a separate process: every command,
// dump then load giving identical contents (binary keys and values, memtable
// and table files), output formats, and the exit codes scripts rely on.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { after, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'

import { Database, tempRoot } from './helpers.mjs'

const CLI = fileURLToPath(new URL('../bin/toondb.js', import.meta.url))
const TIMEOUT = 120000
const tmp = tempRoot('cli')
after(() => tmp.cleanup())

function toondb(args, input) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input, maxBuffer: 256 << 20 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function ok(args, input) {
  const r = toondb(args, input)
  assert.equal(r.status, 0, `toondb ${args.join(' ')}: ${r.stderr}`)
  return r
}

async function contents(dir) {
  const db = await Database.open(dir, { createIfMissing: false })
  const entries = (await db.iterator().all()).map(([k, v]) => [Buffer.from(k).toString('hex'), Buffer.from(v).toString('hex')])
  await db.close()
  return entries
}

describe('toondb CLI', { timeout: TIMEOUT }, () => {
  test('put, get, del, scan and stats', () => {
    const dir = tmp.dir()
    for (const [k, v] of [['users/1', 'Alice'], ['users/2', 'Bob'], ['users/3', 'Carol'], ['zeta', 'z']]) ok(['put', dir, k, v])
    assert.equal(ok(['get', dir, 'users/2']).stdout, 'Bob\n')
    ok(['del', dir, 'users/2'])
    const missing = toondb(['get', dir, 'users/2'])
    assert.equal(missing.status, 3, 'a missing key exits 3')
    assert.match(missing.stderr, /not found/)

    assert.equal(ok(['scan', dir]).stdout, 'users/1\tAlice\nusers/3\tCarol\nzeta\tz\n')
    assert.equal(ok(['scan', dir, '--prefix', 'users/', '--keys-only']).stdout, 'users/1\nusers/3\n')
    assert.equal(ok(['scan', dir, '--gte', 'users/2', '--lt', 'zeta']).stdout, 'users/3\tCarol\n')
    assert.equal(ok(['scan', dir, '--reverse', '--limit', '1']).stdout, 'zeta\tz\n')
    const json = ok(['scan', dir, '--json', '--gt=users/1'])
      .stdout.trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    assert.deepEqual(json, [
      { key: 'users/3', value: 'Carol' },
      { key: 'zeta', value: 'z' },
    ])
    assert.deepEqual(JSON.parse(ok(['get', dir, 'zeta', '--json']).stdout), { key: 'zeta', value: 'z', encoding: 'utf8' })

    const stats = JSON.parse(ok(['stats', dir, '--json']).stdout)
    assert.equal(typeof stats.visibleTs, 'number')
    assert.ok(stats.commits >= 0)
    assert.match(ok(['stats', dir]).stdout, /^visibleTs\s+\d+$/m)
  })

  test('dump then load into a new database gives identical contents (binary data, memtable and tables)', async () => {
    const src = tmp.dir()
    const db = await Database.open(src)
    let seed = 7
    const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296
    const bytes = (n) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)))
    const ops = []
    for (let i = 0; i < 3000; i++) ops.push({ type: 'put', key: Buffer.concat([Buffer.from([i >> 8, i & 255]), bytes(1 + (i % 20))]), value: bytes(i % 300) })
    ops.push({ type: 'put', key: Buffer.from([0]), value: Buffer.alloc(0) }, { type: 'put', key: Buffer.from([0xff, 0xfe]), value: Buffer.from([0x80]) })
    await db.batch(ops.slice(0, 2000))
    await db.flush() // part of the data in table files
    await db.batch(ops.slice(2000))
    await db.close()
    const expected = await contents(src)
    assert.equal(expected.length, 3002)

    const dumpFile = path.join(tmp.root, 'dump.jsonl')
    const dumped = ok(['dump', src])
    fs.writeFileSync(dumpFile, dumped.stdout)
    assert.match(dumped.stderr, /dumped 3002 entries/, 'progress and a final count on stderr')
    const lines = dumped.stdout.trim().split('\n')
    assert.deepEqual(JSON.parse(lines[0]), { format: 'toondb-dump', version: 1, encoding: 'base64' })
    assert.equal(lines.length, 3003)

    const fromFile = tmp.dir()
    assert.match(ok(['load', fromFile, dumpFile]).stderr, /loaded 3002 entries/)
    assert.deepEqual(await contents(fromFile), expected)
    const fromStdin = tmp.dir()
    ok(['load', fromStdin], dumped.stdout)
    assert.deepEqual(await contents(fromStdin), expected)

    // A range of it, readable as UTF-8 where the data is text.
    const text = tmp.dir()
    ok(['put', text, 'a', 'x'])
    ok(['put', text, 'b', 'ÿ é'])
    const utf8 = ok(['dump', text, '--encoding', 'utf8', '--gte', 'b']).stdout
    assert.equal(utf8, '{"format":"toondb-dump","version":1,"encoding":"utf8"}\n{"key":"b","value":"ÿ é"}\n')
    const copy = tmp.dir()
    ok(['load', copy], utf8)
    assert.deepEqual(await contents(copy), [[Buffer.from('b').toString('hex'), Buffer.from('ÿ é').toString('hex')]])
  })

  test('exit codes and clear errors: usage, missing database, locked, not UTF-8, a bad dump', async () => {
    assert.equal(toondb([]).status, 2)
    assert.equal(toondb(['frobnicate', tmp.dir()]).status, 2)
    assert.equal(toondb(['scan', tmp.dir(), '--limit', '-1']).status, 2)
    assert.equal(toondb(['scan', tmp.dir(), '--bogus']).status, 2)
    assert.equal(toondb(['get']).status, 2)
    assert.equal(ok(['--help']).stdout.includes('usage: toondb'), true)

    const missing = toondb(['scan', path.join(tmp.root, 'nothing-here')])
    assert.equal(missing.status, 1)
    assert.match(missing.stderr, /TOONDB_NOT_FOUND/)
    assert.equal(fs.existsSync(path.join(tmp.root, 'nothing-here')), false, 'a read command creates nothing')

    const dir = tmp.dir()
    const db = await Database.open(dir)
    await db.put(Buffer.from([0xc3, 0x28]), 'not utf-8 key')
    const locked = toondb(['scan', dir])
    assert.equal(locked.status, 1)
    assert.match(locked.stderr, /TOONDB_LOCKED[\s\S]*open in another process/)
    await db.close()

    const notText = toondb(['dump', dir, '--encoding', 'utf8'])
    assert.equal(notText.status, 1)
    assert.match(notText.stderr, /not valid UTF-8.*--encoding base64/)
    assert.match(ok(['scan', dir]).stdout, /^0xc328\tnot utf-8 key$/m, 'human output shows non-text bytes as hex')

    const bad = toondb(['load', tmp.dir()], '{"format":"toondb-dump","version":1,"encoding":"base64"}\n{"key":"YQ=="}\n')
    assert.equal(bad.status, 1)
    assert.match(bad.stderr, /line 2: expected \{"key"/)
    const noHeader = toondb(['load', tmp.dir()], '{"key":"YQ==","value":"YQ=="}\n')
    assert.equal(noHeader.status, 1)
    assert.match(noHeader.stderr, /line 1: not a toondb dump header/)
  })

  test('compact, backup and verify (a flipped byte in a table file is caught)', async () => {
    const dir = tmp.dir()
    const db = await Database.open(dir, { memtableSize: 16 << 10, autoCompaction: false })
    for (let round = 0; round < 3; round++) {
      const ops = []
      for (let i = 0; i < 500; i++) ops.push({ type: 'put', key: `k${String(i).padStart(4, '0')}`, value: `r${round}-${'v'.repeat(40)}` })
      await db.batch(ops)
      await db.flush()
    }
    await db.close()
    const before = await contents(dir)

    const compacted = JSON.parse(ok(['compact', dir, '--json']).stdout)
    // (The CLI's open may start an automatic compaction before the command runs.)
    assert.ok(compacted.tablesAfter >= 1 && compacted.bytesAfter <= compacted.bytesBefore, JSON.stringify(compacted))
    assert.match(ok(['compact', dir, '--gte', 'k0100', '--lt', 'k0200']).stdout, /^compacted: /)
    assert.equal(toondb(['compact', dir, '--prefix', 'k']).status, 2)
    assert.deepEqual(await contents(dir), before)

    const dest = path.join(tmp.root, 'cli-backup')
    const human = ok(['backup', dir, dest])
    assert.match(human.stdout, /^backup of commit \d+ in .*: \d+ tables linked/)
    assert.match(human.stderr, /backing up: [\d.]+ s/)
    assert.deepEqual(await contents(dest), before)
    const again = toondb(['backup', dir, dest])
    assert.equal(again.status, 1)
    assert.match(again.stderr, /TOONDB_INVALID_ARGUMENT.*not empty/)
    assert.equal(toondb(['backup', dir]).status, 2)
    const json = JSON.parse(ok(['backup', dir, path.join(tmp.root, 'cli-backup-2'), '--json']).stdout)
    assert.equal(typeof json.ts, 'number')

    const healthy = ok(['verify', dir])
    assert.match(healthy.stdout, /^\d+ tables \(\d+ blocks, \d+ bytes\), \d+ WAL segments \(\d+ records\): ok$/m)
    assert.equal(JSON.parse(ok(['verify', dir, '--json']).stdout).ok, true)

    // Flip one byte inside the first data block of a table file of the backup.
    const sst = fs.readdirSync(dest).find((n) => n.endsWith('.sst'))
    const file = path.join(dest, sst)
    // A hard link shares bytes with the source: replace it with a copy first.
    const bytes = fs.readFileSync(file)
    fs.rmSync(file)
    bytes[20] ^= 0x01
    fs.writeFileSync(file, bytes)
    const damaged = toondb(['verify', dest])
    assert.equal(damaged.status, 1, damaged.stdout + damaged.stderr)
    assert.match(damaged.stdout, new RegExp(`DAMAGED: table ${sst.replace('.', '\\.')}: `))
    const damagedJson = JSON.parse(toondb(['verify', dest, '--json']).stdout)
    assert.equal(damagedJson.ok, false)
    assert.equal(damagedJson.problems.length, 1)
    // The source is untouched by all of this.
    assert.equal(JSON.parse(ok(['verify', dir, '--json']).stdout).ok, true)
  })
})
