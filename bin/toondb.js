#!/usr/bin/env node
'use strict'
// The toondb command-line tool: `npx toondb <command> <db> ...`. See usage()
// and README.md. It opens the database like any other process (a database
// another process has open is TOONDB_LOCKED) and holds no storage logic.

const fs = require('node:fs')
const readline = require('node:readline')
const { Database } = require('../index.js')

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 2
const EXIT_NOT_FOUND = 3

const DUMP_FORMAT = 'toondb-dump'
const DUMP_VERSION = 1
const LOAD_BATCH = 1000

function usage() {
  return `usage: toondb <command> <db> [arguments] [options]

commands:
  stats <db>                      engine counters (tables, WAL, commits, ...)
  get <db> <key>                  print the value of <key> (exit 3 if absent)
  put <db> <key> <value>          write <key> = <value> (durable: synced)
  del <db> <key>                  delete <key> (durable: synced)
  scan <db> [range] [--limit n] [--reverse] [--keys-only]
                                  list entries in key order
  dump <db> [range] [--encoding base64|utf8]
                                  write every entry as JSON lines to stdout
  load <db> [file]                read a dump (JSON lines) from file or stdin
                                  and write it in atomic batches of ${LOAD_BATCH}
  compact <db> [--gte k --lt k ...]
                                  compact the tables (of a key range) to the
                                  bottom level, reclaiming overwritten and
                                  deleted data
  backup <db> <dest>              write a consistent copy into <dest> (new or
                                  empty directory); table files are hard-linked
  verify <db>                     read every table block and WAL record through
                                  its checksum (exit 1 and a list of damaged
                                  files if any check fails)

range: --prefix p  --gt k  --gte k  --lt k  --lte k
options: --json (machine-readable output), --encoding base64|utf8 (how keys
and values are written in JSON: base64 is exact for any bytes, utf8 is
readable and refuses bytes that are not UTF-8), --help

Keys and values on the command line are UTF-8 strings.
exit status: 0 ok, 1 failure (I/O, corruption, locked, ...), 2 usage error,
3 key not found (get)`
}

class UsageError extends Error {}

const FLAGS = new Set(['json', 'reverse', 'keys-only', 'help'])
const VALUED = new Set(['prefix', 'gt', 'gte', 'lt', 'lte', 'limit', 'encoding'])

function parse(argv) {
  const positional = []
  const options = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--') {
      positional.push(...argv.slice(i + 1))
      break
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=')
      const name = eq === -1 ? a.slice(2) : a.slice(2, eq)
      if (FLAGS.has(name)) {
        if (eq !== -1) throw new UsageError(`--${name} takes no value`)
        options[name] = true
      } else if (VALUED.has(name)) {
        const value = eq !== -1 ? a.slice(eq + 1) : argv[++i]
        if (value === undefined) throw new UsageError(`--${name} needs a value`)
        options[name] = value
      } else {
        throw new UsageError(`unknown option ${a}`)
      }
    } else {
      positional.push(a)
    }
  }
  return { positional, options }
}

function rangeOf(options) {
  const range = {}
  for (const k of ['prefix', 'gt', 'gte', 'lt', 'lte']) if (options[k] !== undefined) range[k] = options[k]
  if (options.limit !== undefined) {
    const n = Number(options.limit)
    if (!Number.isInteger(n) || n < 0) throw new UsageError('--limit must be a non-negative integer')
    range.limit = n
  }
  if (options.reverse) range.reverse = true
  return range
}

function encodingOf(options, fallback) {
  const e = options.encoding === undefined ? fallback : options.encoding
  if (e !== 'base64' && e !== 'utf8') throw new UsageError('--encoding must be base64 or utf8')
  return e
}

const decoder = new TextDecoder('utf-8', { fatal: true })

function encode(bytes, encoding, what) {
  if (encoding === 'base64') return Buffer.from(bytes).toString('base64')
  try {
    return decoder.decode(bytes)
  } catch {
    const err = new Error(`a ${what} is not valid UTF-8 (${Buffer.from(bytes).subarray(0, 32).toString('hex')}...): use --encoding base64`)
    err.code = 'TOONDB_INVALID_ARGUMENT'
    throw err
  }
}

// Human output: UTF-8 text as it is when printable, else hex.
function show(bytes) {
  const b = Buffer.from(bytes)
  try {
    const s = decoder.decode(b)
    // eslint-disable-next-line no-control-regex
    if (!/[\u0000-\u001f\u007f]/.test(s)) return s
  } catch {}
  return `0x${b.toString('hex')}`
}

// Progress of long work on stderr: a live counter on a terminal, a line
// every 2 seconds otherwise (logs), and a final line either way.
function progress(verb) {
  const tty = process.stderr.isTTY === true
  const start = Date.now()
  let last = start
  let n = 0
  return {
    add(k) {
      n += k
      const now = Date.now()
      if (tty && now - last >= 100) {
        process.stderr.write(`\r${verb} ${n} entries`)
        last = now
      } else if (!tty && now - last >= 2000) {
        process.stderr.write(`${verb} ${n} entries (${((now - start) / 1000).toFixed(0)} s)\n`)
        last = now
      }
    },
    done() {
      const s = ((Date.now() - start) / 1000).toFixed(1)
      process.stderr.write(`${tty ? '\r' : ''}${verb} ${n} entries in ${s} s\n`)
      return n
    },
  }
}

// Progress of one long call (compact, backup, verify): elapsed time on a
// terminal, a line every 2 seconds otherwise, and a final line either way.
async function working(verb, promise) {
  const tty = process.stderr.isTTY === true
  const start = Date.now()
  const secs = () => ((Date.now() - start) / 1000).toFixed(1)
  const timer = setInterval(
    () => process.stderr.write(tty ? `\r${verb}... ${secs()} s` : `${verb}... ${secs()} s\n`),
    tty ? 100 : 2000,
  )
  try {
    return await promise
  } finally {
    clearInterval(timer)
    process.stderr.write(`${tty ? '\r' : ''}${verb}: ${secs()} s\n`)
  }
}

// Writes to stdout, waiting when the pipe is full. When the reader went
// away (`toondb scan db | head`), the command stops quietly.
class PipeClosed extends Error {}
let pipeClosed = false
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err
  pipeClosed = true
  process.stdout.emit('drain')
})

function out(line) {
  if (pipeClosed) throw new PipeClosed('stdout closed')
  if (!process.stdout.write(line)) return new Promise((resolve) => process.stdout.once('drain', resolve))
  return null
}

async function open(path, create) {
  return Database.open(path, { createIfMissing: create, sync: true })
}

const COMMANDS = {
  async stats(db, args, options) {
    const s = db.stats()
    delete s.pendingWrites // this process's own writes: always 0 here
    if (options.json) {
      await out(`${JSON.stringify(s)}\n`)
      return EXIT_OK
    }
    const width = Math.max(...Object.keys(s).map((k) => k.length))
    for (const [k, v] of Object.entries(s)) await out(`${k.padEnd(width)}  ${v}\n`)
    return EXIT_OK
  },

  async get(db, [key], options) {
    if (key === undefined) throw new UsageError('get needs a key')
    const v = db.getSync(key)
    if (options.json) {
      const enc = encodingOf(options, 'utf8')
      await out(`${JSON.stringify({ key, value: v === null ? null : encode(v, enc, 'value'), encoding: enc })}\n`)
    } else if (v !== null) {
      await out(`${show(v)}\n`)
    } else {
      process.stderr.write(`toondb: ${JSON.stringify(key)} not found\n`)
    }
    return v === null ? EXIT_NOT_FOUND : EXIT_OK
  },

  async put(db, [key, value], options) {
    if (key === undefined || value === undefined) throw new UsageError('put needs a key and a value')
    await db.put(key, value)
    if (options.json) await out(`${JSON.stringify({ ok: true })}\n`)
    return EXIT_OK
  },

  async del(db, [key], options) {
    if (key === undefined) throw new UsageError('del needs a key')
    await db.delete(key)
    if (options.json) await out(`${JSON.stringify({ ok: true })}\n`)
    return EXIT_OK
  },

  async scan(db, args, options) {
    const range = rangeOf(options)
    const keysOnly = options['keys-only'] === true
    const enc = options.json ? encodingOf(options, 'utf8') : null
    const it = keysOnly ? db.keys(range) : db.iterator(range)
    try {
      for (let e = it.nextSync(); e !== undefined; e = it.nextSync()) {
        const [k, v] = keysOnly ? [e, null] : e
        let line
        if (options.json) {
          const o = { key: encode(k, enc, 'key') }
          if (!keysOnly) o.value = encode(v, enc, 'value')
          line = `${JSON.stringify(o)}\n`
        } else {
          line = keysOnly ? `${show(k)}\n` : `${show(k)}\t${show(v)}\n`
        }
        const wait = out(line)
        if (wait) await wait
      }
    } finally {
      await it.close()
    }
    return EXIT_OK
  },

  async dump(db, args, options) {
    const range = rangeOf(options)
    const enc = encodingOf(options, 'base64')
    const p = progress('dumped')
    const it = db.iterator(range)
    try {
      await out(`${JSON.stringify({ format: DUMP_FORMAT, version: DUMP_VERSION, encoding: enc })}\n`)
      for (let e = it.nextSync(); e !== undefined; e = it.nextSync()) {
        const wait = out(`${JSON.stringify({ key: encode(e[0], enc, 'key'), value: encode(e[1], enc, 'value') })}\n`)
        p.add(1)
        if (wait) await wait
      }
    } finally {
      await it.close()
    }
    p.done()
    return EXIT_OK
  },

  async load(db, [file]) {
    const input = file === undefined || file === '-' ? process.stdin : fs.createReadStream(file)
    const lines = readline.createInterface({ input, crlfDelay: Infinity })
    const p = progress('loaded')
    let encoding = null
    let lineNo = 0
    let ops = []
    const flush = async () => {
      if (ops.length === 0) return
      await db.batch(ops)
      p.add(ops.length)
      ops = []
    }
    const bad = (message) => {
      const err = new Error(`line ${lineNo}: ${message}`)
      err.code = 'TOONDB_INVALID_ARGUMENT'
      return err
    }
    for await (const line of lines) {
      lineNo++
      if (line.trim() === '') continue
      let o
      try {
        o = JSON.parse(line)
      } catch (e) {
        throw bad(`not JSON (${e.message})`)
      }
      if (encoding === null) {
        if (o === null || o.format !== DUMP_FORMAT || o.version !== DUMP_VERSION) {
          throw bad(`not a toondb dump header (expected {"format":"${DUMP_FORMAT}","version":${DUMP_VERSION},...})`)
        }
        if (o.encoding !== 'base64' && o.encoding !== 'utf8') throw bad('the header encoding must be base64 or utf8')
        encoding = o.encoding
        continue
      }
      if (o === null || typeof o.key !== 'string' || typeof o.value !== 'string') throw bad('expected {"key": ..., "value": ...}')
      const key = encoding === 'base64' ? Buffer.from(o.key, 'base64') : o.key
      const value = encoding === 'base64' ? Buffer.from(o.value, 'base64') : o.value
      ops.push({ type: 'put', key, value })
      if (ops.length >= LOAD_BATCH) await flush()
    }
    if (encoding === null) throw bad('empty input: no dump header')
    await flush()
    p.done()
    return EXIT_OK
  },

  async compact(db, args, options) {
    const range = rangeOf(options)
    for (const k of ['prefix', 'limit', 'reverse']) {
      if (range[k] !== undefined) throw new UsageError(`compact takes --gt/--gte/--lt/--lte, not --${k}`)
    }
    const before = db.stats()
    await working('compacting', db.compact(Object.keys(range).length > 0 ? range : undefined))
    const after = db.stats()
    const result = {
      tablesBefore: before.tables,
      tablesAfter: after.tables,
      bytesBefore: before.tableBytes,
      bytesAfter: after.tableBytes,
      compactions: after.compactions - before.compactions,
    }
    if (options.json) await out(`${JSON.stringify(result)}\n`)
    else {
      await out(
        `compacted: ${result.tablesBefore} tables, ${result.bytesBefore} bytes -> ${result.tablesAfter} tables, ${result.bytesAfter} bytes\n`,
      )
    }
    return EXIT_OK
  },

  async backup(db, [dest], options) {
    if (dest === undefined) throw new UsageError('backup needs a destination directory')
    const r = await working('backing up', db.backup(dest))
    if (options.json) await out(`${JSON.stringify({ dest, ...r })}\n`)
    else {
      await out(
        `backup of commit ${r.ts} in ${dest}: ${r.tablesLinked} tables linked, ${r.tablesCopied} copied (${r.bytesCopied} bytes), ${r.tablesWritten} written (${r.bytesWritten} bytes)\n`,
      )
    }
    return EXIT_OK
  },

  async verify(db, args, options) {
    const r = await working('verifying', db.verify())
    if (options.json) await out(`${JSON.stringify(r)}\n`)
    else {
      await out(
        `${r.tables} tables (${r.blocks} blocks, ${r.tableBytes} bytes), ${r.walSegments} WAL segments (${r.walRecords} records): ${r.ok ? 'ok' : `${r.problems.length} problem(s)`}\n`,
      )
      if (r.walTornTail) await out(`note: unfinished WAL tail (a reopen drops it): ${r.walTornTail}\n`)
      for (const p of r.problems) await out(`DAMAGED: ${p}\n`)
    }
    return r.ok ? EXIT_OK : EXIT_FAILED
  },
}

// Commands that may create the database; the others need an existing one.
const CREATES = new Set(['put', 'del', 'load'])

async function main(argv) {
  let parsed
  try {
    parsed = parse(argv)
  } catch (err) {
    process.stderr.write(`toondb: ${err.message}\n${usage()}\n`)
    return EXIT_USAGE
  }
  const { positional, options } = parsed
  const [command, path, ...args] = positional
  if (options.help || command === 'help') {
    process.stdout.write(`${usage()}\n`)
    return EXIT_OK
  }
  if (command === undefined || !Object.hasOwn(COMMANDS, command)) {
    process.stderr.write(`toondb: ${command === undefined ? 'no command' : `unknown command ${command}`}\n${usage()}\n`)
    return EXIT_USAGE
  }
  if (path === undefined) {
    process.stderr.write(`toondb: ${command} needs a database path\n${usage()}\n`)
    return EXIT_USAGE
  }
  try {
    rangeOf(options) // option values are checked before the database is opened
    if (options.encoding !== undefined) encodingOf(options)
  } catch (err) {
    process.stderr.write(`toondb: ${err.message}\n${usage()}\n`)
    return EXIT_USAGE
  }
  let db
  try {
    db = await open(path, CREATES.has(command))
  } catch (err) {
    return failed(err, path)
  }
  let status
  try {
    status = await COMMANDS[command](db, args, options)
  } catch (err) {
    if (err instanceof PipeClosed) {
      status = EXIT_OK
    } else if (err instanceof UsageError) {
      process.stderr.write(`toondb: ${err.message}\n${usage()}\n`)
      status = EXIT_USAGE
    } else {
      status = failed(err, path)
    }
  }
  try {
    await db.close()
  } catch (err) {
    return failed(err, path)
  }
  return status
}

function failed(err, path) {
  const hints = {
    TOONDB_LOCKED: `${path} is open in another process; close it there first`,
    TOONDB_CORRUPTION: `${path} is damaged; nothing was guessed or changed`,
  }
  const hint = hints[err && err.code]
  process.stderr.write(`toondb: ${err && err.code ? `${err.code}: ` : ''}${err && err.message}${hint ? `\n  ${hint}` : ''}\n`)
  return EXIT_FAILED
}

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status
  },
  (err) => {
    process.stderr.write(`toondb: ${err && err.stack}\n`)
    process.exitCode = EXIT_FAILED
  },
)
