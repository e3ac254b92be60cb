// Shared helpers for the node:test suites (not a test file itself: the
// runner only picks up *.test.mjs).
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)

/** Absolute path of the package entry point (index.js). */
export const INDEX_JS = fileURLToPath(new URL('../index.js', import.meta.url))
export const { Database } = require(INDEX_JS)

/**
 * A temp root under os.tmpdir() for one test file; `dir(name)` makes a fresh
 * (not yet existing) database path inside it; `cleanup()` removes it all.
 */
export function tempRoot(tag) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `toondb-${tag}-`))
  let n = 0
  return {
    root,
    dir(name = 'db') {
      return path.join(root, `${name}-${++n}`)
    },
    cleanup() {
      fs.rmSync(root, { recursive: true, force: true })
    },
  }
}

/**
 * Resolves with `db.stats()` once the maintenance thread has nothing left
 * to do (no sealed memtable, `maintenanceBusy` false): background flushes
 * and compactions change tables and files at any time until then.
 */
export async function waitIdle(db, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const s = db.stats()
    if (s.immutableMemtables === 0 && !s.maintenanceBusy) return s
    assert.ok(Date.now() < deadline, `background work did not finish: ${JSON.stringify(s)}`)
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

export const buf = (x) => (typeof x === 'string' ? Buffer.from(x) : Buffer.from(x.buffer, x.byteOffset, x.byteLength))

/** Asserts `err` is a toondb error with `code` and a message matching `re`. */
export function assertCode(err, code, re) {
  assert.ok(err instanceof Error, `expected an Error, got ${err}`)
  assert.equal(err.code, code, `wrong code for error: ${err.message}`)
  assert.equal(typeof err.message, 'string')
  assert.ok(err.message.length > 0, 'error message is empty')
  if (re) assert.match(err.message, re)
}

/**
 * `fn()` must NOT throw synchronously; it must return a promise that
 * rejects with `code` (and a message matching `re`).
 */
export async function assertRejectsCode(fn, code, re) {
  let p
  try {
    p = fn()
  } catch (err) {
    assert.fail(`expected a rejected promise, but the call threw synchronously: ${err && err.code} ${err && err.message}`)
  }
  assert.ok(p && typeof p.then === 'function', `expected a promise, got ${p}`)
  let rejected = false
  try {
    await p
  } catch (err) {
    rejected = true
    assertCode(err, code, re)
  }
  assert.ok(rejected, `expected rejection with ${code}, but the promise resolved`)
}

/** `fn()` must throw synchronously with `code`. */
export function assertThrowsCode(fn, code, re) {
  let threw = false
  let ret
  try {
    ret = fn()
  } catch (err) {
    threw = true
    assertCode(err, code, re)
  }
  if (!threw && ret && typeof ret.catch === 'function') ret.catch(() => {})
  assert.ok(threw, `expected a synchronous throw with ${code}, got ${ret}`)
}

/**
 * Runs `node -e script` (CommonJS) and resolves with { code, signal, stdout,
 * stderr, ms, endedAt (Date.now() at exit) }; kills it (SIGKILL) after
 * `timeoutMs` and reports timedOut.
 */
export function runNode(script, { timeoutMs = 15000, args = [], env } = {}) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const child = spawn(process.execPath, ['-e', script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: env ?? process.env,
    })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const endedAt = Date.now()
      resolve({ code, signal, stdout, stderr, timedOut, ms: endedAt - started, endedAt })
    })
  })
}

/** Parses the last JSON line a child printed. */
export function lastJson(stdout) {
  const lines = stdout.trim().split('\n').filter(Boolean)
  assert.ok(lines.length > 0, 'child printed nothing')
  return JSON.parse(lines[lines.length - 1])
}
