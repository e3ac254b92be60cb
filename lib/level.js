'use strict'
// ToonLevel: an abstract-level 3 database over toondb-storage, so that
// sublevels, level-read-stream and the rest of the Level ecosystem work on
// it. abstract-level does the encodings, deferred open, hooks, events and
// argument checks; this file maps its private API onto index.js. No storage
// logic here.
//
// Keys. abstract-level allows the empty key; the engine does not (a key is
// 1 byte to 64 KiB). So keys are stored under an order-preserving escape:
// a key that is empty or starts with byte 0x00 is stored with one 0x00
// byte in front ('' -> 00, 00 xx -> 00 00 xx); every other key is stored
// as it is. Order is kept (so ranges, reverse and seek map one to one), the
// store needs no prefix, and a database written through ToonLevel reads the
// same through `Database` for keys that do not start with 0x00.

const {
  AbstractLevel,
  AbstractIterator,
  AbstractKeyIterator,
  AbstractValueIterator,
  AbstractChainedBatch,
  AbstractSnapshot,
} = require('abstract-level')
const { Database } = require('../index.js')

const ITERATE = Symbol.for('toondb.iterate')
const CLEAR_RANGE = Symbol.for('toondb.clearRange')
const ENTRIES = 0
const KEYS = 1
const VALUES = 2
const CLEAR_CHUNK = 1000
const ZERO = Buffer.from([0])

// Options of Database.open that ToonLevel passes through.
const OPEN_OPTIONS = ['sync', 'memtableSize', 'blockSize', 'maxImmutableMemtables']

/** The stored form of a (buffer-encoded) key; see the note at the top. */
function escapeKey(key) {
  if (key.length === 0 || key[0] === 0) return Buffer.concat([ZERO, key])
  return key
}

/** The key a stored key stands for (a view, no copy). */
function unescapeKey(stored) {
  return stored.length > 0 && stored[0] === 0 ? stored.subarray(1) : stored
}

// gte and lte take precedence over gt and lt (as in abstract-level's suite).
function rangeArgs(options) {
  const a = { reverse: options.reverse === true }
  if (options.gte !== undefined) a.gte = escapeKey(options.gte)
  else if (options.gt !== undefined) a.gt = escapeKey(options.gt)
  if (options.lte !== undefined) a.lte = escapeKey(options.lte)
  else if (options.lt !== undefined) a.lt = escapeKey(options.lt)
  if (Number.isInteger(options.limit) && options.limit >= 0) a.limit = options.limit
  return a
}

function writeOptions(options) {
  return options !== undefined && options !== null && options.sync !== undefined ? { sync: options.sync } : undefined
}

const kSnapshot = Symbol('snapshot')

class ToonLevel extends AbstractLevel {
  #location
  #openOptions
  #db = null

  /**
   * @param {string} location directory of the database
   * @param {object} [options] abstract-level options (keyEncoding,
   *   valueEncoding, createIfMissing, errorIfExists, passive) and
   *   Database.open options (sync, memtableSize, blockSize,
   *   maxImmutableMemtables)
   */
  constructor(location, options) {
    if (typeof location !== 'string' || location === '') {
      throw new TypeError("The first argument 'location' must be a non-empty string")
    }
    super(
      {
        encodings: { buffer: true },
        implicitSnapshots: true,
        explicitSnapshots: true,
        has: true,
        getSync: true,
        seek: true,
        permanence: true,
        createIfMissing: true,
        errorIfExists: true,
        additionalMethods: {},
      },
      options,
    )
    this.#location = location
    const o = {}
    for (const name of OPEN_OPTIONS) {
      if (options != null && options[name] !== undefined) o[name] = options[name]
    }
    this.#openOptions = o
  }

  get location() {
    return this.#location
  }

  /** The underlying toondb `Database` while open (for transactions, stats, flush), else null. */
  get database() {
    return this.status === 'open' ? this.#db : null
  }

  async _open(options) {
    const o = { ...this.#openOptions, createIfMissing: options.createIfMissing, errorIfExists: options.errorIfExists }
    try {
      this.#db = await Database.open(this.#location, o)
    } catch (err) {
      if (err.code === 'TOONDB_NOT_FOUND') {
        const e = new Error(`database ${this.#location} does not exist (createIfMissing is false): ${err.message}`)
        e.code = err.code
        e.cause = err
        throw e
      }
      if (err.code === 'TOONDB_INVALID_ARGUMENT' && options.errorIfExists) {
        const e = new Error(`database ${this.#location} exists (errorIfExists is true): ${err.message}`)
        e.code = err.code
        e.cause = err
        throw e
      }
      throw err
    }
  }

  async _close() {
    const db = this.#db
    this.#db = null
    if (db !== null) await db.close()
  }

  #source(options) {
    const snapshot = options.snapshot
    return snapshot != null ? snapshot[kSnapshot] : this.#db
  }

  // Iterators and clear() on an explicit snapshot: ref() throws
  // LEVEL_SNAPSHOT_NOT_OPEN once the snapshot is closed or closing.
  #checkSnapshot(options) {
    const snapshot = options.snapshot
    if (snapshot != null) {
      snapshot.ref()
      snapshot.unref()
    }
  }

  async _get(key, options) {
    return this._getSync(key, options)
  }

  _getSync(key, options) {
    const v = this.#source(options).getSync(escapeKey(key))
    return v === null ? undefined : v
  }

  // All keys from one snapshot: the explicit one, else the engine's getMany.
  async #many(keys, options) {
    const snapshot = options.snapshot
    if (snapshot == null) return this.#db.getMany(keys.map(escapeKey))
    const src = snapshot[kSnapshot]
    return keys.map((k) => src.getSync(escapeKey(k)))
  }

  async _getMany(keys, options) {
    const values = await this.#many(keys, options)
    for (let i = 0; i < values.length; i++) if (values[i] === null) values[i] = undefined
    return values
  }

  async _has(key, options) {
    return this.#source(options).getSync(escapeKey(key)) !== null
  }

  async _hasMany(keys, options) {
    return (await this.#many(keys, options)).map((v) => v != null)
  }

  async _put(key, value, options) {
    return this.#db.put(escapeKey(key), value, writeOptions(options))
  }

  async _del(key, options) {
    return this.#db.delete(escapeKey(key), writeOptions(options))
  }

  async _batch(operations, options) {
    const ops = new Array(operations.length)
    for (let i = 0; i < operations.length; i++) {
      const op = operations[i]
      ops[i] =
        op.type === 'put' ? { type: 'put', key: escapeKey(op.key), value: op.value } : { type: 'del', key: escapeKey(op.key) }
    }
    return this.#db.batch(ops, writeOptions(options))
  }

  _chainedBatch() {
    return new ToonChainedBatch(this, this.#db.batch())
  }

  // Deletes the keys of the range as of this call (from `options.snapshot`
  // when given), in atomic batches of CLEAR_CHUNK keys: the whole clear is
  // not atomic.
  async _clear(options) {
    // Without a limit or an explicit snapshot: one range delete, no key
    // read. (A snapshot's clear deletes only the keys that snapshot sees,
    // and a limit needs the keys counted: both read them.)
    const limited = Number.isInteger(options.limit) && options.limit >= 0
    if (!limited && options.snapshot == null) {
      const a = rangeArgs(options)
      delete a.limit
      return this.#db[CLEAR_RANGE](a, writeOptions(options)?.sync)
    }
    const it = this.#source(options)[ITERATE](rangeArgs(options), KEYS, false, null)
    try {
      for (;;) {
        const ops = []
        for (let k = it.nextSync(); k !== undefined; k = ops.length < CLEAR_CHUNK ? it.nextSync() : undefined) {
          ops.push({ type: 'del', key: k })
        }
        if (ops.length === 0) return
        await this.#db.batch(ops, writeOptions(options))
      }
    } finally {
      it.close()
    }
  }

  #iterate(options, mode, parts) {
    this.#checkSnapshot(options)
    return this.#source(options)[ITERATE](rangeArgs(options), mode, true, parts)
  }

  _iterator(options) {
    const parts = { keys: options.keys !== false, values: options.values !== false }
    return new ToonIterator(this, options, this.#iterate(options, ENTRIES, parts))
  }

  _keys(options) {
    return new ToonKeyIterator(this, options, this.#iterate(options, KEYS, null))
  }

  _values(options) {
    return new ToonValueIterator(this, options, this.#iterate(options, VALUES, null))
  }

  _snapshot(options) {
    return new ToonSnapshot(options, this.#db.snapshot())
  }
}

class ToonSnapshot extends AbstractSnapshot {
  constructor(options, snapshot) {
    super(options)
    this[kSnapshot] = snapshot
  }

  async _close() {
    this[kSnapshot].release()
  }
}

class ToonChainedBatch extends AbstractChainedBatch {
  #batch

  constructor(db, batch) {
    super(db)
    this.#batch = batch
  }

  _put(key, value) {
    this.#batch.put(escapeKey(key), value)
  }

  _del(key) {
    this.#batch.del(escapeKey(key))
  }

  _clear() {
    this.#batch.clear()
  }

  async _write(options) {
    return this.#batch.write(writeOptions(options))
  }
}

// The three iterator kinds share their stepping: `map` turns what the
// index.js iterator yields into what abstract-level expects.
function nextv(it, size, map) {
  const out = []
  while (out.length < size) {
    const e = it.nextSync()
    if (e === undefined) break
    out.push(map(e))
  }
  return out
}

function all(it, map) {
  const out = []
  for (let e = it.nextSync(); e !== undefined; e = it.nextSync()) out.push(map(e))
  return out
}

function mapEntry(e) {
  if (e[0] !== undefined) e[0] = unescapeKey(e[0])
  return e
}

function identity(v) {
  return v
}

function defineIterator(Base, map) {
  return class extends Base {
    #it

    constructor(db, options, it) {
      super(db, options)
      this.#it = it
    }

    async _next() {
      const e = this.#it.nextSync()
      return e === undefined ? undefined : map(e)
    }

    async _nextv(size) {
      return nextv(this.#it, size, map)
    }

    async _all() {
      return all(this.#it, map)
    }

    _seek(target) {
      this.#it.seek(escapeKey(target))
    }

    async _close() {
      this.#it.close()
    }
  }
}

const ToonIterator = defineIterator(AbstractIterator, mapEntry)
const ToonKeyIterator = defineIterator(AbstractKeyIterator, unescapeKey)
const ToonValueIterator = defineIterator(AbstractValueIterator, identity)

module.exports = { ToonLevel, escapeKey, unescapeKey }
