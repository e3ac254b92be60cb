// Columnar tables: projection pushdown measured. N rows of an i64 key and
// 5 f64 columns (equal stored width) are loaded, flushed and compacted;
// then, each in a fresh child process with the page cache dropped (as root:
// sync; echo 3 > /proc/sys/vm/drop_caches), a scan of 1 column and of all
// 5: the engine's table-file bytes read, the process's device reads
// (/proc/self/io read_bytes) and the time. Side by side: the same rows as
// one JSON value per key (what a user writes today with the KV API) and,
// when @duckdb/node-api is installed, DuckDB.
//
// Also, for the plain key-value API, a cold range scan of a tenth of the JSON
// rows (the middle tenth, by key): readahead must stay within the range.
//
//   npm run bench:columnar -- [--rows 1000000] [--dir /tmp/x] [--keep]
//                             [--repeat 3] [--reuse] [--no-packed]
//
// The toondb load is also timed through upsertColumns (typed arrays per
// column, 10K rows a call) into a second database, deleted afterwards.
// --repeat N runs every cold measurement N times (min / median / max are
// printed); --reuse measures the databases already in --dir (written by an
// earlier --keep run) instead of loading new ones, so two builds can be
// compared on the same files.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { Database } = require('../index.js')
const SELF = fileURLToPath(import.meta.url)
const COLS = ['c0', 'c1', 'c2', 'c3', 'c4']
const CHUNK = 10000

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`)
  return i < 0 ? def : process.argv[i + 1]
}

function readBytes() {
  try {
    const m = /read_bytes: (\d+)/.exec(fs.readFileSync('/proc/self/io', 'utf8'))
    return m ? Number(m[1]) : NaN
  } catch {
    return NaN
  }
}

function dirBytes(dir) {
  let n = 0
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    n += e.isDirectory() ? dirBytes(p) : fs.statSync(p).size
  }
  return n
}

function dropCaches() {
  try {
    execFileSync('sync')
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
    return true
  } catch {
    return false
  }
}

const value = (i, c) => ((i * 2654435761) % 1000003) / 7 + c

async function loadToondb(dir, rows) {
  const db = await Database.open(dir)
  const t = await db.createTable('wide', {
    columns: { id: 'i64', c0: 'f64', c1: 'f64', c2: 'f64', c3: 'f64', c4: 'f64' },
    primaryKey: 'id',
  })
  const t0 = performance.now()
  for (let i = 0; i < rows; i += CHUNK) {
    const batch = []
    for (let j = i; j < Math.min(rows, i + CHUNK); j++) {
      batch.push({ id: j, c0: value(j, 0), c1: value(j, 1), c2: value(j, 2), c3: value(j, 3), c4: value(j, 4) })
    }
    await t.upsert(batch)
  }
  const load = performance.now() - t0
  await db.flush()
  await db.compact()
  const total = performance.now() - t0
  await db.close()
  return { loadMs: load, loadFlushCompactMs: total, diskBytes: dirBytes(dir) }
}

// The same load through the packed path: whole columns as typed arrays.
async function loadToondbPacked(dir, rows) {
  const db = await Database.open(dir)
  const t = await db.createTable('wide', {
    columns: { id: 'i64', c0: 'f64', c1: 'f64', c2: 'f64', c3: 'f64', c4: 'f64' },
    primaryKey: 'id',
  })
  const t0 = performance.now()
  for (let i = 0; i < rows; i += CHUNK) {
    const n = Math.min(rows, i + CHUNK) - i
    const cols = { id: new BigInt64Array(n) }
    COLS.forEach((c) => (cols[c] = new Float64Array(n)))
    for (let j = 0; j < n; j++) {
      cols.id[j] = BigInt(i + j)
      COLS.forEach((c, k) => (cols[c][j] = value(i + j, k)))
    }
    await t.upsertColumns(cols)
  }
  const load = performance.now() - t0
  await db.flush()
  await db.compact()
  const total = performance.now() - t0
  await db.close()
  return { loadMs: load, loadFlushCompactMs: total, diskBytes: dirBytes(dir) }
}

const jsonKey = (i) => `row/${String(i).padStart(10, '0')}`

async function loadJson(dir, rows) {
  const db = await Database.open(dir)
  const t0 = performance.now()
  for (let i = 0; i < rows; i += CHUNK) {
    const ops = []
    for (let j = i; j < Math.min(rows, i + CHUNK); j++) {
      const v = { id: j }
      COLS.forEach((c, k) => (v[c] = value(j, k)))
      ops.push({ type: 'put', key: jsonKey(j), value: JSON.stringify(v) })
    }
    await db.batch(ops)
  }
  const load = performance.now() - t0
  await db.flush()
  await db.compact()
  const total = performance.now() - t0
  await db.close()
  return { loadMs: load, loadFlushCompactMs: total, diskBytes: dirBytes(dir) }
}

async function loadDuck(dir, rows) {
  let duck
  try {
    duck = await import('@duckdb/node-api')
  } catch {
    return null
  }
  const file = path.join(dir, 'duck.db')
  fs.mkdirSync(dir, { recursive: true })
  const inst = await duck.DuckDBInstance.create(file)
  const con = await inst.connect()
  await con.run('CREATE TABLE wide (id BIGINT PRIMARY KEY, c0 DOUBLE, c1 DOUBLE, c2 DOUBLE, c3 DOUBLE, c4 DOUBLE)')
  const t0 = performance.now()
  const app = await con.createAppender('wide')
  for (let j = 0; j < rows; j++) {
    app.appendBigInt(BigInt(j))
    for (let k = 0; k < 5; k++) app.appendDouble(value(j, k))
    app.endRow()
  }
  app.closeSync()
  await con.run('CHECKPOINT')
  const load = performance.now() - t0
  con.closeSync()
  inst.closeSync?.()
  return { loadMs: load, loadFlushCompactMs: load, diskBytes: dirBytes(dir) }
}

// ---- child: one measurement in a fresh process ----------------------------

async function child(kind, dir, what) {
  if (kind === 'duck') return childDuck(dir, what)
  const db = await Database.open(dir)
  // The table handle is looked up (a catalog read) before the counters
  // start: the measurement is of the scan, which an application runs on a
  // handle it already holds.
  const table = kind === 'toondb' && (what === 'scan1' || what === 'scan5') ? db.table('wide') : null
  const io0 = readBytes()
  const eng0 = db.stats().tableBytesRead
  const t0 = performance.now()
  let rows = 0
  let sum = 0
  if (what === 'range') {
    // A cold key-value range scan of the middle tenth of the rows.
    const n = Number(arg('rows', 1000000))
    const gte = jsonKey(Math.floor(n * 0.45))
    const lt = jsonKey(Math.floor(n * 0.55))
    for await (const v of db.values({ gte, lt })) {
      sum += JSON.parse(v).c0
      rows++
    }
  } else if (what === 'scan1' || what === 'scan5') {
    const columns = what === 'scan1' ? ['c0'] : COLS
    if (kind === 'toondb') {
      const out = await table.scanColumns({ columns })
      rows = out.c0.length
      for (const c of columns) for (const x of out[c]) sum += x
    } else {
      // JSON baseline: every value is read and parsed whatever is asked.
      for await (const v of db.values({ prefix: 'row/' })) {
        const o = JSON.parse(v)
        for (const c of columns) sum += o[c]
        rows++
      }
    }
  } else if (what === 'point') {
    const N = 2000
    const n = await countRows(db, kind)
    const table = kind === 'toondb' ? db.table('wide') : null
    const tg = performance.now()
    for (let i = 0; i < N; i++) {
      const id = (i * 7919) % n
      if (kind === 'toondb') sum += table.getSync(id).c0
      else sum += JSON.parse(db.getSync(jsonKey(id))).c0
    }
    const getUs = ((performance.now() - tg) * 1000) / N
    const tu = performance.now()
    for (let i = 0; i < N; i++) {
      const id = (i * 104729) % n
      const row = { id, c0: i, c1: i, c2: i, c3: i, c4: i }
      if (kind === 'toondb') await table.upsert(row)
      else await db.put(jsonKey(id), JSON.stringify(row))
    }
    const upsertUs = ((performance.now() - tu) * 1000) / N
    await db.close()
    return { getUs, upsertUs }
  }
  const ms = performance.now() - t0
  const out = {
    ms,
    rows,
    checksum: sum,
    engineBytesRead: db.stats().tableBytesRead - eng0,
    deviceReadBytes: readBytes() - io0,
    tableReads: db.stats().tableReads.map((t) => ({ name: t.name, bytesRead: t.bytesRead })),
  }
  await db.close()
  return out
}

async function countRows(db, kind) {
  if (kind === 'toondb') return (await db.table('wide').scanColumns({ columns: ['id'] })).id.length
  let n = 0
  for await (const _ of db.keys({ prefix: 'row/' })) n++
  return n
}

async function childDuck(dir, what) {
  const duck = await import('@duckdb/node-api')
  const inst = await duck.DuckDBInstance.create(path.join(dir, 'duck.db'))
  const con = await inst.connect()
  const io0 = readBytes()
  const t0 = performance.now()
  if (what === 'point') {
    const N = 2000
    const n = Number((await con.runAndReadAll('SELECT count(*) FROM wide')).getRows()[0][0])
    const get = await con.prepare('SELECT * FROM wide WHERE id = $1')
    const tg = performance.now()
    let sum = 0
    for (let i = 0; i < N; i++) {
      get.bindBigInt(1, BigInt((i * 7919) % n))
      sum += (await get.runAndReadAll()).getRows()[0][1]
    }
    const getUs = ((performance.now() - tg) * 1000) / N
    const up = await con.prepare('INSERT OR REPLACE INTO wide VALUES ($1, $2, $2, $2, $2, $2)')
    const tu = performance.now()
    for (let i = 0; i < N; i++) {
      up.bindBigInt(1, BigInt((i * 104729) % n))
      up.bindDouble(2, i)
      await up.run()
    }
    const upsertUs = ((performance.now() - tu) * 1000) / N
    return { getUs, upsertUs, checksum: sum }
  }
  const columns = what === 'scan1' ? ['c0'] : COLS
  const reader = await con.runAndReadAll(`SELECT ${columns.join(', ')} FROM wide ORDER BY id`)
  let sum = 0
  let rows = 0
  columns.forEach((c, i) => {
    const col = reader.getColumns()[i]
    rows = col.length
    for (const x of col) sum += x
  })
  const ms = performance.now() - t0
  return { ms, rows, checksum: sum, deviceReadBytes: readBytes() - io0 }
}

function runChild(kind, dir, what, rows) {
  const dropped = what === 'point' ? false : dropCaches()
  const r = spawnSync(process.execPath, [SELF, '--child', kind, '--dir', dir, '--what', what, '--rows', String(rows)], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  })
  if (r.status !== 0) throw new Error(`child ${kind} ${what} failed: ${r.stderr}`)
  return { ...JSON.parse(r.stdout.trim().split('\n').pop()), cacheDropped: dropped }
}

async function main() {
  if (process.argv.includes('--child')) {
    const res = await child(arg('child'), arg('dir'), arg('what'))
    process.stdout.write(JSON.stringify(res) + '\n')
    return
  }
  const rows = Number(arg('rows', 1000000))
  const root = arg('dir', fs.mkdtempSync(path.join(os.tmpdir(), 'toondb-columnar-')))
  const dirs = { toondb: path.join(root, 'toondb'), json: path.join(root, 'json'), duck: path.join(root, 'duck') }
  const results = {}
  console.log(`rows: ${rows}, dir: ${root}, cpus: ${os.cpus().length}`)
  const repeat = Number(arg('repeat', 1))
  const reuse = process.argv.includes('--reuse')
  const unloaded = { loadMs: NaN, loadFlushCompactMs: NaN, diskBytes: NaN }
  const load = async (kind, fn) => {
    if (!reuse) return fn(dirs[kind], rows)
    return fs.existsSync(dirs[kind]) ? { ...unloaded, diskBytes: dirBytes(dirs[kind]) } : null
  }
  results.toondb = { load: await load('toondb', loadToondb) }
  if (!reuse && !process.argv.includes('--no-packed')) {
    // Loaded, timed and deleted: the scans read the row-loaded database.
    const packedDir = `${dirs.toondb}-packed`
    results.toondb.loadPacked = await loadToondbPacked(packedDir, rows)
    fs.rmSync(packedDir, { recursive: true, force: true })
  }
  results.json = { load: await load('json', loadJson) }
  const duckLoad = await load('duck', loadDuck).catch((e) => ({ error: String(e) }))
  if (duckLoad && !duckLoad.error) results.duck = { load: duckLoad }
  else console.log(`duckdb: ${duckLoad ? duckLoad.error : 'not installed (@duckdb/node-api)'}`)
  // Round-robin, so a disturbance on the shared machine spreads over all;
  // the point reads and upserts last, so every scan reads the same data.
  const runs = {}
  for (const phase of ['scans', 'point']) {
    for (let i = 0; i < repeat; i++) {
      for (const kind of Object.keys(results)) {
        const scans = kind === 'json' ? ['scan1', 'scan5', 'range'] : ['scan1', 'scan5']
        for (const what of phase === 'point' ? ['point'] : scans) {
          const key = `${kind}/${what}`
          ;(runs[key] ??= []).push(runChild(kind, dirs[kind], what, rows))
        }
      }
    }
  }
  // One result per measurement: the run with the median time (or get
  // latency), with every run's figures kept under `runs`.
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]
  for (const [key, rs] of Object.entries(runs)) {
    const [kind, what] = key.split('/')
    const time = (r) => r.ms ?? r.getUs
    const m = med(rs.map(time))
    results[kind][what] = { ...rs.find((r) => time(r) === m), runs: rs }
  }
  const mb = (b) => (b / 1048576).toFixed(1)
  const spread = (rs, f, d = 0) => {
    const xs = rs.map(f).sort((a, b) => a - b)
    return `${med(xs).toFixed(d)} (${xs[0].toFixed(d)}..${xs[xs.length - 1].toFixed(d)})`
  }
  console.log(`\nmedian (min..max) over ${repeat} run(s)`)
  for (const [kind, r] of Object.entries(results)) {
    console.log(`\n${kind}: load ${(r.load.loadMs / 1000).toFixed(2)} s (with flush+compact ${(r.load.loadFlushCompactMs / 1000).toFixed(2)} s), on disk ${mb(r.load.diskBytes)} MiB`)
    if (r.loadPacked) {
      console.log(`  load with upsertColumns (typed arrays): ${(r.loadPacked.loadMs / 1000).toFixed(2)} s (with flush+compact ${(r.loadPacked.loadFlushCompactMs / 1000).toFixed(2)} s)`)
    }
    for (const w of ['scan1', 'scan5', 'range']) {
      const s = r[w]
      if (!s) continue
      const eng = s.engineBytesRead === undefined ? 'n/a' : spread(s.runs, (x) => x.engineBytesRead / 1048576, 1) + ' MiB'
      console.log(
        `  ${w}: ${spread(s.runs, (x) => x.ms)} ms, ${s.rows} rows, engine bytes read ${eng}, device read_bytes ${spread(s.runs, (x) => x.deviceReadBytes / 1048576, 1)} MiB, cache dropped: ${s.cacheDropped}`,
      )
    }
    const p = r.point.runs
    console.log(`  point: get ${spread(p, (x) => x.getUs, 1)} µs, upsert ${spread(p, (x) => x.upsertUs, 1)} µs (one at a time, awaited)`)
  }
  const t = results.toondb
  const pct = (a, b) => (100 * (1 - a / b)).toFixed(1)
  console.log(
    `\ntoondb 1 vs 5 columns (medians): engine bytes -${pct(t.scan1.engineBytesRead, t.scan5.engineBytesRead)}%, device bytes -${pct(t.scan1.deviceReadBytes, t.scan5.deviceReadBytes)}%, ${(t.scan5.ms / t.scan1.ms).toFixed(2)}x faster`,
  )
  if (results.duck) {
    const d = results.duck
    console.log(`toondb / duckdb time (medians): 1 column ${(t.scan1.ms / d.scan1.ms).toFixed(2)}x, 5 columns ${(t.scan5.ms / d.scan5.ms).toFixed(2)}x`)
  }
  const j = results.json
  console.log(`json / toondb time (medians): 1 column ${(j.scan1.ms / t.scan1.ms).toFixed(2)}x, 5 columns ${(j.scan5.ms / t.scan5.ms).toFixed(2)}x`)
  console.log('\n' + JSON.stringify(results))
  if (!process.argv.includes('--keep')) fs.rmSync(root, { recursive: true, force: true })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
