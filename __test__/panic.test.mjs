// A Rust panic inside a native call must become a JS error with code
// TOONDB_INTERNAL (napi-rs catch_unwind plus index.js's error mapping),
// never abort the process, and leave open databases usable.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { Database } = require('../index.js')

test('a panic in native code is a TOONDB_INTERNAL error, not an abort', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'toondb-panic-'))
  try {
    const db = await Database.open(dir)
    await db.put('k', 'v')
    const hooks = Database[Symbol.for('toondb.testing')]
    assert.throws(
      () => hooks.panic('deliberate test panic'),
      (err) => err instanceof Error && err.code === 'TOONDB_INTERNAL' && /deliberate test panic/.test(err.message),
    )
    assert.deepEqual(db.getSync('k'), Buffer.from('v'), 'the database still works after the panic')
    await db.put('k2', 'v2')
    assert.deepEqual(await db.get('k2'), Buffer.from('v2'))
    await db.close()
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
