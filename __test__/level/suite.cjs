'use strict'
// abstract-level's compliance suite against ToonLevel, run under tape:
// `node __test__/level/suite.cjs` (part of `npm test` as test:level).
// Each database lives in a fresh directory under one temporary root,
// removed when the process exits.

const test = require('tape')
const suite = require('abstract-level/test')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ToonLevel } = require('../../level.js')

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'toondb-level-suite-'))
let n = 0
process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }))

suite({
  test,
  factory(options) {
    return new ToonLevel(path.join(root, String(n++)), options)
  },
})
