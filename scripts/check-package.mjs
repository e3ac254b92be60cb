#!/usr/bin/env node
// Checks the package as a user gets it: packs the tarball (`npm pack`),
// installs it into a fresh temporary project, and there runs an ES module
// script, a CommonJS script and a TypeScript type check (ESM and CJS)
// against it, through the package's `exports`.
//
//   node scripts/check-package.mjs                 prebuilt path (in `npm test`):
//       the tarball's prebuilt addon must load and no compiler may run.
//   node scripts/check-package.mjs --from-source   from-source path (minutes):
//       the install script must build the addon from the Rust sources in the
//       tarball with cargo (TOONDB_BUILD_FROM_SOURCE=1 ignores the prebuilt).
//
// Needs the addon built in this checkout (`npm install` / `npm run build`),
// since the tarball ships the prebuilt addon and native.js. Dependencies come
// from the npm cache when possible (--prefer-offline), else the registry.
// Exit status 0 when every check passed.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const fromSource = process.argv.includes('--from-source')
const keep = process.argv.includes('--keep')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'toondb-package-'))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

function step(message) {
  process.stdout.write(`# ${message}\n`)
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts })
  if (r.status !== 0) {
    const out = `${r.stdout || ''}\n${r.stderr || ''}`.trim().split('\n').slice(-40).join('\n')
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${out}`)
  }
  return r
}

function write(file, text) {
  fs.writeFileSync(path.join(tmp, 'project', file), text)
}

const ESM = `
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import toondb, { Database } from 'toondb-storage'
import { ToonLevel } from 'toondb-storage/level'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toondb-esm-'))
const db = await Database.open(path.join(dir, 'db'), { sync: true })
await db.put('users/1', 'Alice')
assert.equal(String(await db.get('users/1')), 'Alice')
assert.equal(toondb.Database, Database)
await db.close()
const level = new ToonLevel(path.join(dir, 'level'), { valueEncoding: 'json' })
await level.put('k', { a: 1 })
assert.deepEqual(await level.get('k'), { a: 1 })
const sub = level.sublevel('s')
await sub.put('x', 'y')
assert.deepEqual(await sub.keys().all(), ['x'])
await level.close()
fs.rmSync(dir, { recursive: true, force: true })
console.log('esm ok')
`

const CJS = `
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Database } = require('toondb-storage')
const { ToonLevel } = require('toondb-storage/level')

;(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toondb-cjs-'))
  const db = Database.openSync(path.join(dir, 'db'))
  await db.batch([{ type: 'put', key: 'a', value: '1' }, { type: 'put', key: 'b', value: '2' }])
  assert.deepEqual((await db.keys().all()).map(String), ['a', 'b'])
  await db.close()
  const level = new ToonLevel(path.join(dir, 'level'))
  await level.open() // a chained batch needs an open database
  await level.batch().put('a', '1').put('', 'empty').write()
  assert.deepEqual(await level.iterator().all(), [['', 'empty'], ['a', '1']])
  await level.close()
  fs.rmSync(dir, { recursive: true, force: true })
  console.log('cjs ok')
})().catch((err) => {
  console.error(err)
  process.exit(1)
})
`

const TS_ESM = `
import { Database, type ToondbError } from 'toondb-storage'
import { ToonLevel } from 'toondb-storage/level'

export async function esm(dir: string): Promise<number> {
  const db: Database = await Database.open(dir, { sync: true })
  const v: Buffer | null = await db.get('a')
  const keys: Buffer[] = await db.keys({ prefix: 'a' }).all()
  const level = new ToonLevel<string, { n: number }>(dir + '-level', { valueEncoding: 'json' })
  const n: { n: number } | undefined = await level.get('x')
  // @ts-expect-error put needs a value
  await db.put('a')
  const e: ToondbError | null = null
  void e
  return (v?.length ?? 0) + keys.length + (n?.n ?? 0)
}
`

const TS_CJS = `
import toondb = require('toondb-storage')
import level = require('toondb-storage/level')

export function cjs(dir: string): void {
  const db: toondb.Database = toondb.Database.openSync(dir)
  const s: Buffer | null = db.getSync('a')
  void s
  void new level.ToonLevel(dir + '-level')
  // @ts-expect-error the path is a string
  toondb.Database.openSync(1)
}
`

try {
  step(`packing ${repo}`)
  const packed = run(npm, ['pack', '--ignore-scripts', '--pack-destination', tmp, '--json'], { cwd: repo })
  const tarball = path.join(tmp, JSON.parse(packed.stdout)[0].filename)
  step(`packed ${path.basename(tarball)} (${fs.statSync(tarball).size} bytes)`)

  fs.mkdirSync(path.join(tmp, 'project'))
  write(
    'package.json',
    JSON.stringify({ name: 'toondb-package-check', version: '1.0.0', private: true, allowScripts: { 'toondb-storage': true } }),
  )
  step(`installing it into ${path.join(tmp, 'project')}${fromSource ? ' (building from source)' : ''}`)
  const env = { ...process.env }
  if (fromSource) env.TOONDB_BUILD_FROM_SOURCE = '1'
  else delete env.TOONDB_BUILD_FROM_SOURCE
  const t0 = Date.now()
  const installed = run(npm, ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'], {
    cwd: path.join(tmp, 'project'),
    env,
  })
  const log = `${installed.stdout}\n${installed.stderr}`
  const pkg = path.join(tmp, 'project', 'node_modules', 'toondb-storage')
  step(`installed in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  if (fromSource) {
    if (!/built toondb-storage\.[\w-]+\.node from source/.test(log)) throw new Error(`the install did not build from source:\n${log}`)
    step('the install script built the addon from the Rust sources in the tarball')
  } else {
    if (/cargo build|building from source/.test(log)) throw new Error(`the install compiled although a prebuilt addon was shipped:\n${log}`)
    if (fs.existsSync(path.join(pkg, 'target'))) throw new Error('a cargo target directory appeared: something compiled')
    step('the prebuilt addon was used; nothing compiled')
  }
  for (const f of ['Cargo.toml', 'Cargo.lock', 'build.rs', 'src/lib.rs', 'crates/toondb-storage/src/lib.rs']) {
    if (!fs.existsSync(path.join(pkg, f))) throw new Error(`the tarball lacks ${f}, needed to build from source`)
  }

  write('check.mjs', ESM)
  write('check.cjs', CJS)
  step(run(process.execPath, ['check.mjs'], { cwd: path.join(tmp, 'project') }).stdout.trim())
  step(run(process.execPath, ['check.cjs'], { cwd: path.join(tmp, 'project') }).stdout.trim())

  const project = path.join(tmp, 'project')
  run(path.join(project, 'node_modules', '.bin', 'toondb'), ['put', path.join(project, 'cli-db'), 'k', 'v'], { cwd: project })
  const got = run(path.join(project, 'node_modules', '.bin', 'toondb'), ['get', path.join(project, 'cli-db'), 'k'], { cwd: project })
  if (got.stdout !== 'v\n') throw new Error(`toondb get printed ${JSON.stringify(got.stdout)}`)
  step('the toondb command (node_modules/.bin/toondb) works')

  write('esm.mts', TS_ESM)
  write('cjs.cts', TS_CJS)
  write(
    'tsconfig.json',
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        types: ['node'],
        typeRoots: [path.join(repo, 'node_modules', '@types')],
      },
      files: ['esm.mts', 'cjs.cts'],
    }),
  )
  const tsc = path.join(repo, 'node_modules', 'typescript', 'bin', 'tsc')
  run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: path.join(tmp, 'project') })
  step('typescript: ESM (.mts) and CommonJS (.cts) type checks pass')
  console.log('package check ok')
} catch (err) {
  console.error(err.message)
  process.exitCode = 1
} finally {
  if (keep) console.log(`kept ${tmp}`)
  else fs.rmSync(tmp, { recursive: true, force: true })
}
