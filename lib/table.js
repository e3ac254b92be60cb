'use strict'

// Columnar tables over the native table calls (src/table.rs). A Table is
// bound to a context: the database (writes are promises committed on the
// libuv pool, ordered after earlier writes), a transaction (writes go into
// the transaction) or a snapshot (read-only).

const TYPES = new Set(['i64', 'f64', 'bool', 'string', 'bytes'])
const FILTER_OPS = ['eq', 'gt', 'gte', 'lt', 'lte']
const ROW_BATCH = 1024
const COLUMN_BATCH = 65536

function makeTables({ invalid, normalizeError, callNative }) {
  function checkName(name) {
    if (typeof name !== 'string' || name.length === 0) throw invalid('table name must be a non-empty string')
  }

  /** { columns: { name: type }, primaryKey, nullable } -> native arguments */
  function schemaArgs(spec) {
    if (spec === null || typeof spec !== 'object') throw invalid('createTable needs { columns, primaryKey }')
    const { columns, primaryKey, nullable = [] } = spec
    if (columns === null || typeof columns !== 'object') throw invalid('columns must be an object of name: type')
    if (!Array.isArray(nullable)) throw invalid('nullable must be an array of column names')
    const names = Object.keys(columns)
    for (const n of nullable) {
      if (!names.includes(n)) throw invalid(`nullable column ${JSON.stringify(n)} is not a column`)
    }
    const cols = names.map((name) => {
      const type = columns[name]
      if (!TYPES.has(type)) {
        throw invalid(`column ${JSON.stringify(name)}: type must be one of ${[...TYPES].join(', ')}, got ${JSON.stringify(type)}`)
      }
      return { name, type, nullable: nullable.includes(name) }
    })
    if (typeof primaryKey !== 'string') throw invalid('primaryKey must be a column name')
    return [cols, primaryKey]
  }

  function schemaOf(info) {
    const columns = {}
    for (const c of info.columns) columns[c.name] = c.type
    return {
      columns,
      primaryKey: info.primaryKey,
      nullable: info.columns.filter((c) => c.nullable).map((c) => c.name),
    }
  }

  /** Row objects -> arrays in schema order; missing / extra columns named. */
  function rowArrays(info, rows) {
    if (!Array.isArray(rows)) rows = [rows]
    const cols = info.columns
    const out = new Array(rows.length)
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]
      if (row === null || typeof row !== 'object') throw invalid(`row ${i}: must be an object`)
      const arr = new Array(cols.length)
      for (let c = 0; c < cols.length; c++) {
        const v = row[cols[c].name]
        if (v === undefined) throw invalid(`row ${i}, column ${JSON.stringify(cols[c].name)}: missing`)
        arr[c] = v
      }
      const keys = Object.keys(row)
      if (keys.length !== cols.length) {
        const extra = keys.find((k) => !cols.some((c) => c.name === k))
        throw invalid(`row ${i}, column ${JSON.stringify(extra)}: no such column`)
      }
      out[i] = arr
    }
    return out
  }

  // Whole columns in schema order, checked for names; types and lengths are
  // checked natively (typed arrays cross without a conversion per value).
  function columnArrays(info, columns) {
    if (columns === null || typeof columns !== 'object') throw invalid('columns must be an object of arrays')
    const cols = info.columns
    for (const name of Object.keys(columns)) {
      if (!cols.some((c) => c.name === name)) throw invalid(`column ${JSON.stringify(name)}: no such column`)
    }
    return cols.map((c) => {
      const v = columns[c.name]
      if (v === undefined) throw invalid(`column ${JSON.stringify(c.name)}: missing`)
      if (!Array.isArray(v) && !(ArrayBuffer.isView(v) && !(v instanceof DataView))) {
        throw invalid(`column ${JSON.stringify(c.name)}: must be an array or a typed array`)
      }
      return v
    })
  }

  function scanArgs(info, options = {}) {
    if (options === null || typeof options !== 'object') throw invalid('scan options must be an object')
    const a = {}
    if (options.columns !== undefined) {
      if (!Array.isArray(options.columns) || options.columns.length === 0) {
        throw invalid('columns must be a non-empty array of column names')
      }
      a.columns = options.columns
    }
    for (const b of ['gt', 'gte', 'lt', 'lte']) if (options[b] !== undefined) a[b] = options[b]
    if (options.reverse !== undefined) a.reverse = !!options.reverse
    if (options.limit !== undefined && options.limit !== Infinity && options.limit !== -1) {
      if (!Number.isInteger(options.limit) || options.limit < 0) throw invalid('limit must be a non-negative integer')
      a.limit = options.limit
    }
    if (options.where !== undefined) {
      const w = options.where
      const cols = w && typeof w === 'object' ? Object.keys(w) : []
      if (cols.length !== 1) throw invalid('where must name exactly one column: { column: { gte: value } }')
      const cond = w[cols[0]]
      if (cond === null || typeof cond !== 'object' || Object.keys(cond).length === 0) {
        throw invalid('where condition must be an object of eq, gt, gte, lt, lte')
      }
      a.whereColumn = cols[0]
      for (const op of Object.keys(cond)) {
        if (!FILTER_OPS.includes(op)) throw invalid(`where: unknown operator ${JSON.stringify(op)}`)
        a['where' + op[0].toUpperCase() + op.slice(1)] = cond[op]
      }
    }
    return a
  }

  function concat(parts) {
    if (parts.length === 1) return parts[0]
    if (parts.length === 0) return []
    if (Array.isArray(parts[0])) return [].concat(...parts)
    const total = parts.reduce((n, p) => n + p.length, 0)
    const out = new parts[0].constructor(total)
    let at = 0
    for (const p of parts) {
      out.set(p, at)
      at += p.length
    }
    return out
  }

  class Table {
    #ctx
    #info

    /** @internal use db.table(name) */
    constructor(ctx, info) {
      this.#ctx = ctx
      this.#info = info
    }

    get name() {
      return this.#info.name
    }

    get schema() {
      return schemaOf(this.#info)
    }

    #write(op, rows) {
      const ctx = this.#ctx
      if (!ctx.write) return Promise.reject(invalid('a snapshot is read-only'))
      try {
        const arrays = rowArrays(this.#info, rows)
        return ctx.write((native) => native.tableWrite(this.#info.name, op, arrays))
      } catch (err) {
        return Promise.reject(normalizeError(err))
      }
    }

    /** Inserts rows; rejects (applying nothing) if a primary key exists. */
    insert(rows) {
      return this.#write('insert', rows)
    }

    /** Inserts or replaces whole rows. */
    upsert(rows) {
      return this.#write('upsert', rows)
    }

    #writeColumns(op, columns) {
      const ctx = this.#ctx
      if (!ctx.write) return Promise.reject(invalid('a snapshot is read-only'))
      try {
        const arrays = columnArrays(this.#info, columns)
        return ctx.write((native) => native.tableWriteColumns(this.#info.name, op, arrays))
      } catch (err) {
        return Promise.reject(normalizeError(err))
      }
    }

    /** `insert` of rows given as whole columns (`{ id: BigInt64Array, amount: Float64Array, ... }`). */
    insertColumns(columns) {
      return this.#writeColumns('insert', columns)
    }

    /** `upsert` of rows given as whole columns (`{ id: BigInt64Array, amount: Float64Array, ... }`). */
    upsertColumns(columns) {
      return this.#writeColumns('upsert', columns)
    }

    /** Deletes the rows with these primary keys (one key or an array). */
    delete(pk) {
      const ctx = this.#ctx
      if (!ctx.write) return Promise.reject(invalid('a snapshot is read-only'))
      const pks = Array.isArray(pk) ? pk : [pk]
      try {
        return ctx.write((native) => native.tableDelete(this.#info.name, pks))
      } catch (err) {
        return Promise.reject(normalizeError(err))
      }
    }

    /** The row (only `columns`, if given) or null, on the calling thread. */
    getSync(pk, options = {}) {
      const columns = options && options.columns
      const names = columns || this.#info.columns.map((c) => c.name)
      const cells = callNative(() => this.#ctx.read().tableGet(this.#info.name, pk, columns))
      if (cells === null) return null
      const row = {}
      for (let i = 0; i < names.length; i++) row[names[i]] = cells[i]
      return row
    }

    get(pk, options) {
      try {
        return Promise.resolve(this.getSync(pk, options))
      } catch (err) {
        return Promise.reject(err)
      }
    }

    #open(options) {
      const args = scanArgs(this.#info, options)
      return callNative(() => this.#ctx.read().tableScan(this.#info.name, args))
    }

    /** Rows holding only the asked columns, as an async iterator. */
    scan(options) {
      const scan = this.#open(options)
      const names = scan.columns
      return (async function* () {
        for (;;) {
          const cols = callNative(() => scan.next(ROW_BATCH))
          const n = cols[0].length
          if (n === 0) return
          for (let r = 0; r < n; r++) {
            const row = {}
            for (let c = 0; c < names.length; c++) row[names[c]] = cols[c][r]
            yield row
          }
        }
      })()
    }

    /**
     * { column: values }: Float64Array (f64), BigInt64Array (i64),
     * Uint8Array (bool) for non-nullable columns; arrays otherwise.
     */
    scanColumns(options) {
      try {
        const scan = this.#open(options)
        const names = scan.columns
        const parts = names.map(() => [])
        for (;;) {
          const cols = callNative(() => scan.next(COLUMN_BATCH))
          if (cols[0].length === 0) break
          cols.forEach((c, i) => parts[i].push(c))
        }
        const out = {}
        names.forEach((n, i) => {
          out[n] = parts[i].length === 0 ? emptyColumn(this.#info, n) : concat(parts[i])
        })
        return Promise.resolve(out)
      } catch (err) {
        return Promise.reject(normalizeError(err))
      }
    }
  }

  function emptyColumn(info, name) {
    const c = info.columns.find((x) => x.name === name)
    if (c && !c.nullable) {
      if (c.type === 'f64') return new Float64Array(0)
      if (c.type === 'i64') return new BigInt64Array(0)
      if (c.type === 'bool') return new Uint8Array(0)
    }
    return []
  }

  return { Table, schemaArgs, checkName }
}

module.exports = { makeTables }
