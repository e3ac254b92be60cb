// Space and read cost over a database's life (issue 17): load N keys in
// random order, overwrite them in several passes, then delete half and
// compact, then delete everything and compact. Reports the directory size
// against the live key+value bytes (space amplification) after and during
// each pass, table bytes written per user byte (write amplification), and
// random getSync rates right after the load and after the last pass. LevelDB
// (classic-level) runs the same load and overwrite passes in the same
// process for comparison.
//
//   node benchmark/space.mjs [--keys 1000000] [--passes 10] [--only toondb,level]
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? fallback : process.argv[i + 1]
}
const N = Number(arg('keys', 1000000))
const PASSES = Number(arg('passes', 10))
const ONLY = String(arg('only', 'toondb,level')).split(',')
const KEY_BYTES = 16
const VALUE_BYTES = 100
const BATCH = 1000
const LIVE = N * (KEY_BYTES + VALUE_BYTES)

// Deterministic PRNG (mulberry32).
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function shuffled(n, seed) {
  const rand = prng(seed)
  const order = new Uint32Array(n)
  for (let i = 0; i < n; i++) order[i] = i
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    const t = order[i]
    order[i] = order[j]
    order[j] = t
  }
  return order
}

function key(i) {
  const k = Buffer.alloc(KEY_BYTES)
  k.write('key:', 0)
  k.write(i.toString(16).padStart(12, '0'), 4)
  return k
}

// Values are random bytes (incompressible), different on every pass.
function valueSource(seed) {
  const rand = prng(seed)
  const pool = Buffer.alloc(1 << 20)
  for (let i = 0; i < pool.length; i += 4) pool.writeUInt32LE((rand() * 2 ** 32) >>> 0, i)
  let at = 0
  return () => {
    if (at + VALUE_BYTES > pool.length) at = (at * 7 + 13) % 1000
    const v = pool.subarray(at, at + VALUE_BYTES)
    at += VALUE_BYTES + 1
    return v
  }
}

function dirBytes(dir) {
  let total = 0
  for (const name of fs.readdirSync(dir)) {
    try {
      total += fs.statSync(path.join(dir, name)).size
    } catch {
      // A file removed between readdir and stat (compaction) counts as 0.
    }
  }
  return total
}

const MiB = (b) => (b / 1048576).toFixed(1)
const ratio = (b) => (b / LIVE).toFixed(2)

async function writePass(store, db, dir, seed, { del = false, fraction = 1 } = {}) {
  const order = shuffled(N, seed)
  const next = valueSource(seed + 1)
  const count = Math.floor(N * fraction)
  let peak = 0
  for (let lo = 0; lo < count; lo += BATCH) {
    const hi = Math.min(lo + BATCH, count)
    const ops = new Array(hi - lo)
    for (let i = lo; i < hi; i++) {
      ops[i - lo] = del ? { type: 'del', key: key(order[i]) } : { type: 'put', key: key(order[i]), value: next() }
    }
    await store.batch(db, ops)
    if ((lo / BATCH) % 50 === 0) peak = Math.max(peak, dirBytes(dir))
  }
  await store.settle(db)
  const final = dirBytes(dir)
  return { peak: Math.max(peak, final), final }
}

function readRate(store, db, seed) {
  const order = shuffled(N, seed)
  const probes = Math.min(N, 200000)
  const t0 = performance.now()
  let found = 0
  for (let i = 0; i < probes; i++) if (store.get(db, key(order[i])) !== null) found++
  const secs = (performance.now() - t0) / 1000
  if (found !== probes) throw new Error(`read ${found} of ${probes} keys`)
  return probes / secs
}

const stores = {
  toondb: {
    name: 'toondb',
    async open(dir) {
      const { Database } = require('../index.js')
      return Database.open(dir)
    },
    batch: (db, ops) => db.batch(ops),
    // Lets background flushes and compactions catch up, as a quiet moment
    // in a real service would; the pass's peak was sampled during writes.
    async settle(db) {
      await db.flush()
      for (let i = 0; i < 600; i++) {
        const s = db.stats()
        if (s.pendingCompactionBytes === 0 && s.levels[0].tables < 4) return
        await new Promise((r) => setTimeout(r, 50))
      }
    },
    get: (db, k) => db.getSync(k),
    compact: (db) => db.compact(),
    written: (db) => {
      const s = db.stats()
      return s.flushBytesWritten + s.compactionBytesWritten
    },
    close: (db) => db.close(),
  },
  level: {
    name: 'LevelDB (classic-level)',
    async open(dir) {
      const { ClassicLevel } = await import('classic-level')
      const db = new ClassicLevel(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
      await db.open()
      return db
    },
    batch: (db, ops) => db.batch(ops),
    settle: async () => {},
    get: null,
    compact: (db) => db.compactRange(Buffer.alloc(0), Buffer.alloc(KEY_BYTES, 0xff)),
    written: () => null,
    close: (db) => db.close(),
  },
}

async function run(id) {
  const store = stores[id]
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `toondb-space-${id}-`))
  const rows = []
  try {
    const db = await store.open(dir)
    const load = await writePass(store, db, dir, 1)
    rows.push(['load', load])
    const readAfterLoad = store.get ? readRate(store, db, 99) : null
    for (let p = 1; p <= PASSES; p++) rows.push([`overwrite ${p}`, await writePass(store, db, dir, 1 + 10 * p)])
    const readAfterPasses = store.get ? readRate(store, db, 99) : null
    const written = store.written(db)
    console.log(`\n## ${store.name}: ${N} keys (${KEY_BYTES} B keys, ${VALUE_BYTES} B values), live data ${MiB(LIVE)} MiB\n`)
    console.log('| step | peak MiB | peak ÷ live | final MiB | final ÷ live |')
    console.log('|---|---|---|---|---|')
    for (const [name, r] of rows) console.log(`| ${name} | ${MiB(r.peak)} | ${ratio(r.peak)} | ${MiB(r.final)} | ${ratio(r.final)} |`)
    if (written !== null) {
      const user = LIVE * (PASSES + 1)
      console.log(`\ntable bytes written ÷ user bytes written: ${(written / user).toFixed(2)} (${MiB(written)} MiB for ${MiB(user)} MiB)`)
    }
    if (readAfterLoad !== null) {
      console.log(
        `random getSync: ${Math.round(readAfterLoad)}/s after the load, ${Math.round(readAfterPasses)}/s after ${PASSES} passes ` +
          `(${(readAfterPasses / readAfterLoad).toFixed(2)}x; target >= 0.8x)`,
      )
    }
    if (id === 'toondb') {
      await writePass(store, db, dir, 5000, { del: true, fraction: 0.5 })
      await store.compact(db)
      const half = dirBytes(dir)
      const halfLive = LIVE - Math.floor(N * 0.5) * (KEY_BYTES + VALUE_BYTES)
      console.log(`half the keys deleted + compact(): ${MiB(half)} MiB for ${MiB(halfLive)} MiB live = ${(half / halfLive).toFixed(2)}x (target <= 1.3x)`)
      await writePass(store, db, dir, 6000, { del: true })
      await store.compact(db)
      const s = db.stats()
      console.log(`everything deleted + compact(): table bytes ${MiB(s.tableBytes)} MiB, directory ${MiB(dirBytes(dir))} MiB (target < 4 MiB)`)
    }
    await store.close(db)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

for (const id of ONLY) {
  if (!stores[id]) throw new Error(`unknown store ${id}`)
  await run(id)
}
