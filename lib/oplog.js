'use strict'
// A packed log of write operations, filled as each operation is issued: the
// key and value bytes are copied in during the call, so a caller may reuse
// or mutate its buffers as soon as the call returns (and detaching one later
// cannot affect the write). The layout is what NativeDatabase.writeFlat
// reads: `kinds[i]` is 1 for a put, 0 for a delete; `lens[2i]` and
// `lens[2i+1]` are the key and value lengths; `data` holds the bytes back to
// back.

const MIN_BYTES = 16 * 1024

// The length of a genuine typed array, read from its internal slot: no
// getter a subclass or a Proxy defines runs while an operation is copied
// (user code there could issue another write into this same log half-way
// through the copy). Throws a TypeError for anything else (a Proxy).
const typedArrayLength = Object.getOwnPropertyDescriptor(
  Object.getPrototypeOf(Uint8Array.prototype),
  'length',
).get

function lengthOf(v) {
  return typeof v === 'string' ? v.length : typedArrayLength.call(v)
}
// A log that grew past this for one big batch is not kept for the next.
const KEEP_BYTES = 1024 * 1024

class OpLog {
  constructor() {
    this.data = Buffer.allocUnsafe(MIN_BYTES)
    this.kinds = new Uint8Array(64)
    this.lens = new Uint32Array(128)
    this.count = 0
    this.bytes = 0
  }

  // Upper bound of the bytes `v` takes once encoded.
  static bound(v) {
    return typeof v === 'string' ? v.length * 3 : typedArrayLength.call(v)
  }

  #reserve(ops, bytes) {
    if (this.count + ops > this.kinds.length) {
      let n = this.kinds.length * 2
      while (n < this.count + ops) n *= 2
      const kinds = new Uint8Array(n)
      kinds.set(this.kinds.subarray(0, this.count))
      const lens = new Uint32Array(2 * n)
      lens.set(this.lens.subarray(0, 2 * this.count))
      this.kinds = kinds
      this.lens = lens
    }
    if (this.bytes + bytes > this.data.length) {
      let n = this.data.length * 2
      while (n < this.bytes + bytes) n *= 2
      const data = Buffer.allocUnsafe(n)
      this.data.copy(data, 0, 0, this.bytes)
      this.data = data
    }
  }

  // Copies `v` into `data` at `at` and returns its length. Nothing of the
  // log changes until the whole operation was copied (see #commit), so an
  // operation whose copy throws (a detached buffer) leaves no trace.
  static #copy(data, v, at) {
    if (typeof v === 'string') return data.utf8Write(v, at)
    const n = typedArrayLength.call(v)
    // A view of a detached buffer has length 0 (and `set` would throw):
    // what it held at the time of the call is nothing.
    if (n !== 0) data.set(v, at)
    return n
  }

  #commit(kind, keyLen, valueLen) {
    const i = this.count
    this.kinds[i] = kind
    this.lens[2 * i] = keyLen
    this.lens[2 * i + 1] = valueLen
    this.count = i + 1
    this.bytes += keyLen + valueLen
  }

  put(key, value) {
    this.#reserve(1, OpLog.bound(key) + OpLog.bound(value))
    const at = this.bytes
    const k = OpLog.#copy(this.data, key, at)
    const v = OpLog.#copy(this.data, value, at + k)
    this.#commit(1, k, v)
  }

  del(key) {
    this.#reserve(1, OpLog.bound(key))
    this.#commit(0, OpLog.#copy(this.data, key, this.bytes), 0)
  }

  /** A range delete of `[start, end)` (kind 2; see batch.rs). */
  delRange(start, end) {
    this.#reserve(1, OpLog.bound(start) + OpLog.bound(end))
    const at = this.bytes
    const s = OpLog.#copy(this.data, start, at)
    const e = OpLog.#copy(this.data, end, at + s)
    this.#commit(2, s, e)
  }

  /** Appends every operation of `other` (already encoded). */
  append(other) {
    this.#reserve(other.count, other.bytes)
    this.kinds.set(other.kinds.subarray(0, other.count), this.count)
    this.lens.set(other.lens.subarray(0, 2 * other.count), 2 * this.count)
    other.data.copy(this.data, this.bytes, 0, other.bytes)
    this.count += other.count
    this.bytes += other.bytes
  }

  /** Where the log ends now, to undo a half-appended batch with `truncate`. */
  mark() {
    return { count: this.count, bytes: this.bytes }
  }

  truncate(mark) {
    this.count = mark.count
    this.bytes = mark.bytes
  }

  /** Empties the log, keeping its memory unless one batch made it huge. */
  reset() {
    this.count = 0
    this.bytes = 0
    if (this.data.length > KEEP_BYTES) this.data = Buffer.allocUnsafe(MIN_BYTES)
  }
}

module.exports = { OpLog, lengthOf }
