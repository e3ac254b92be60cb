'use strict'
// A packed log of write operations, filled as each operation is issued: the
// key and value bytes are copied in during the call, so a caller may reuse
// or mutate its buffers as soon as the call returns (and detaching one later
// cannot affect the write). The layout is what NativeDatabase.writeFlat
// reads: `kinds[i]` is 1 for a put, 0 for a delete; `lens[2i]` and
// `lens[2i+1]` are the key and value lengths; `data` holds the bytes back to
// back.

const MIN_BYTES = 16 * 1024
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
    return typeof v === 'string' ? v.length * 3 : v.length
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

  #write(v) {
    if (typeof v === 'string') {
      const n = this.data.utf8Write(v, this.bytes)
      this.bytes += n
      return n
    }
    this.data.set(v, this.bytes)
    this.bytes += v.length
    return v.length
  }

  put(key, value) {
    this.#reserve(1, OpLog.bound(key) + OpLog.bound(value))
    const i = this.count++
    this.kinds[i] = 1
    this.lens[2 * i] = this.#write(key)
    this.lens[2 * i + 1] = this.#write(value)
  }

  del(key) {
    this.#reserve(1, OpLog.bound(key))
    const i = this.count++
    this.kinds[i] = 0
    this.lens[2 * i] = this.#write(key)
    this.lens[2 * i + 1] = 0
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

module.exports = { OpLog }
