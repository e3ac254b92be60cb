/// <reference types="node" />
// The public TypeScript contract of toondb-storage. index.js implements it
// over the napi-rs classes in native.js.

/**
 * A key or value: strings are stored as their UTF-8 bytes.
 *
 * Every call copies the bytes it is given before it returns (`put`,
 * `delete`, `batch`, a chained batch's `put`/`del`, a transaction's
 * `put`/`delete`): once the call returns, the caller may reuse, mutate or
 * transfer (detach) its buffers without changing what is written.
 */
export type Bytes = string | Buffer | Uint8Array

/** Stable error codes, found on `err.code` of every error the library raises. */
export type ErrorCode =
  /** A transaction's commit lost to a concurrent writer (first committer wins); nothing of it was applied. Retry it (see {@link Database.transact}). */
  | 'TOONDB_CONFLICT'
  /** The database (handle) is closed. */
  | 'TOONDB_CLOSED'
  /** Something that must exist does not (e.g. opening with `createIfMissing: false`). */
  | 'TOONDB_NOT_FOUND'
  /** A wrong type, an empty or oversized key, a bad option. */
  | 'TOONDB_INVALID_ARGUMENT'
  /** A file failed its checksum or structure checks; no data was guessed. */
  | 'TOONDB_CORRUPTION'
  /** Another process has the database directory open. */
  | 'TOONDB_LOCKED'
  /** The operating system reported an I/O failure. After a failed WAL write or fsync the database stops accepting writes until reopened. */
  | 'TOONDB_IO'
  /** A bug in toondb-storage (a Rust panic is caught and reported as this; the process keeps running). */
  | 'TOONDB_INTERNAL'

/** The errors toondb-storage raises: plain `Error`s with a stable `code`. */
export interface ToondbError extends Error {
  code: ErrorCode
}

export interface OpenOptions {
  /**
   * Default durability of writes (each write may override it).
   * - `true`: a write resolves after the WAL is fdatasynced. Survives a
   *   process crash and a power cut.
   * - `false` (default): a write resolves once the WAL write reached the
   *   operating system. Survives a process crash (SIGKILL, uncaught
   *   exception), not a power cut or kernel crash.
   *
   * Each handle keeps its own `sync`: opening a path that is already open
   * in this process (another handle, another worker thread) shares the
   * engine, but the writes and transactions of each handle follow the
   * option that handle was opened with.
   */
  sync?: boolean
  /** Create the directory and an empty database if none exists. Default `true`. */
  createIfMissing?: boolean
  /** Fail with TOONDB_INVALID_ARGUMENT if a database already exists (or is open in this process). Default `false`. */
  errorIfExists?: boolean
  /**
   * Bytes a memtable holds before it is written to a table file (or less:
   * see `walSizeLimit`). It also bounds the WAL replayed by the next open.
   * Default 32 MiB.
   */
  memtableSize?: number
  /**
   * WAL bytes after which the memtable is written to a table file even if
   * it is not full: a reopen after a crash replays at most about this much
   * per memtable not yet flushed, however large `memtableSize` is. Default:
   * no limit (`memtableSize` bounds the WAL). 4 MiB made a warm reopen after
   * a 1 GiB load ~19 ms instead of ~25-80 ms, and cost ~35% of write
   * throughput (a new WAL segment and ~3 fsyncs per 4 MiB); see
   * docs/performance.md, "Reopen".
   */
  walSizeLimit?: number
  /** Target size of a table file's data blocks. Default 4096. */
  blockSize?: number
  /** Full memtables that may wait for flushing before writes stall (with one fewer, writes are slowed). Default 3. */
  maxImmutableMemtables?: number
  /**
   * Compression of table data blocks written from now on. Default `'none'`:
   * there is no block cache yet, so a compressed block is decompressed on
   * every read (see docs/performance.md, "Table compression").
   */
  compression?: 'none' | 'lz4' | 'zstd'
  /** Bloom filter bits per key in each table (0 turns filters off, at most 32). Default 10. */
  bloomBitsPerKey?: number
  /** Run leveled compaction in the background. Default `true` (see docs/compaction.md). */
  autoCompaction?: boolean
  /** Size at which compaction cuts its output tables. Default 16 MiB. */
  targetFileSize?: number
  /** Target size of level 1; each deeper level is 10 times larger. Default 64 MiB. */
  levelBaseBytes?: number
  /** Level-0 tables that trigger a compaction into level 1. Default 4. */
  l0CompactionTrigger?: number
  /** Level-0 tables at which writes are slowed down. Default 20. */
  l0SlowdownWrites?: number
  /** Level-0 tables at which writes stop until compaction catches up. Default 36. */
  l0StopWrites?: number
}

/** Bounds of a key range (at most one lower and one upper bound). */
export interface KeyRange {
  gt?: Bytes
  gte?: Bytes
  lt?: Bytes
  lte?: Bytes
}

/** One LSM level in {@link DatabaseStats.levels}. */
export interface LevelStats {
  tables: number
  bytes: number
  /** Bytes compacted into this level since open (inputs of its compactions). */
  compactedIn: number
  /** Bytes compactions wrote into this level since open. */
  compactionBytesWritten: number
}

export interface WriteOptions {
  /** Overrides the database's `sync` option for this write (see {@link OpenOptions.sync}). */
  sync?: boolean
}

export type BatchOperation =
  | { type: 'put'; key: Bytes; value: Bytes }
  | { type: 'del' | 'delete'; key: Bytes }

export interface IteratorOptions {
  /** Only keys greater than this. */
  gt?: Bytes
  /** Only keys greater than or equal to this. */
  gte?: Bytes
  /** Only keys less than this. */
  lt?: Bytes
  /** Only keys less than or equal to this. */
  lte?: Bytes
  /** Only keys that start with these bytes (combines with the bounds above). */
  prefix?: Bytes
  /** Descending key order. Default `false`. */
  reverse?: boolean
  /** At most this many entries (`-1` or absent: no limit). */
  limit?: number
}

/** Counters and sizes of the engine (shared by all handles on one path). */
export interface DatabaseStats {
  /** Newest commit timestamp visible to readers. */
  visibleTs: number
  /** Estimated bytes in the active memtable. */
  memtableBytes: number
  /** Full memtables waiting to be written to table files. */
  immutableMemtables: number
  /** Live table files and their total size in bytes. */
  tables: number
  tableBytes: number
  /** Bytes of table data blocks read by gets and scans since open. */
  tableBytesRead: number
  /** Commits applied since open. */
  commits: number
  /** WAL writes those commits were grouped into (group commit). */
  commitGroups: number
  walBytesWritten: number
  /** fdatasync calls on the WAL; `walSyncs / commits` is fsyncs per commit. */
  walSyncs: number
  /** Write groups delayed by 1 ms because the flush backlog was one memtable short of a stall. */
  writeSlowdowns: number
  /** Times writes waited for a memtable flush, and the total wait. */
  writeStalls: number
  writeStallMicros: number
  /** Memtables written to table files since open, and their bytes. */
  flushes: number
  flushBytesWritten: number
  /** Records and WAL segments replayed by the last open. */
  recoveredRecords: number
  recoveredSegments: number
  /** Bytes of a torn or corrupt WAL tail that the last open dropped (0: none), and why. */
  droppedTailBytes: number
  droppedTailReason?: string
  /** The failure that stopped writes, if any (reopen to recover). */
  backgroundError?: string
  /** Writes of this handle whose promises have not settled yet. */
  pendingWrites: number
  /** Transaction commits rejected with TOONDB_CONFLICT since open. */
  conflicts: number
  /**
   * Live snapshots, transactions and open iterator scans (each pins the
   * versions it reads against compaction); a number that only grows is a
   * leak. An iterator counts until it ends, is closed or is collected.
   */
  liveSnapshots: number
  /** Read timestamp of the oldest live snapshot or transaction, if any. */
  oldestSnapshotTs?: number
  /** Tables and bytes per level, level 0 first. */
  levels: LevelStats[]
  /** Estimated bytes compaction must rewrite to bring every level under its target. */
  pendingCompactionBytes: number
  /** Compactions installed since open, of which trivial moves (a table moved down a level without rewriting). */
  compactions: number
  trivialMoves: number
  /** Compactions that failed (and were retried) since open, and the last failure while it is unresolved. */
  compactionErrors: number
  compactionError?: string
  /** Table bytes compactions read and wrote since open. */
  compactionBytesRead: number
  compactionBytesWritten: number
  /** Estimated bytes of the newest version of every live key (exact after a full compact()). */
  liveBytesEstimate: number
  /** (flush + compaction bytes written) / flush bytes written since open: table bytes written per byte flushed. */
  writeAmplification: number
  /** tableBytes / liveBytesEstimate. */
  spaceAmplification: number
  /** Data blocks loaded, and point lookups that consulted a bloom filter and that it answered "absent" (over the live tables). */
  dataBlocksRead: number
  bloomChecked: number
  bloomUseful: number
}

export interface TransactionOptions {
  /**
   * - `'snapshot'` (default): snapshot isolation. Reads see the database as
   *   of `db.transaction()`; the commit fails with TOONDB_CONFLICT if
   *   another writer committed one of the same keys after that (first
   *   committer wins). Two transactions that read overlapping data and
   *   write different keys can both commit (write skew).
   * - `'serializable'`: also fails the commit if any key or range the
   *   transaction read was written after its snapshot (optimistic
   *   concurrency control), which rules out write skew.
   */
  isolation?: 'snapshot' | 'serializable'
  /** Durability of the commit; defaults to the database's `sync` option. */
  sync?: boolean
}

export interface TransactOptions extends TransactionOptions {
  /** How many times to retry `fn` after TOONDB_CONFLICT. Default 10. */
  retries?: number
}

/**
 * A transaction: reads from the snapshot taken at `db.transaction()` plus
 * its own buffered writes; writes are invisible to others until `commit()`,
 * which applies all of them or none. Using it after commit or rollback
 * throws TOONDB_CLOSED. An abandoned transaction is released when
 * garbage-collected (watch `stats().liveSnapshots`).
 */
export declare class Transaction {
  private constructor()
  /** The snapshot timestamp this transaction reads at. */
  readonly readTs: number
  /** False once committed (or committing) or rolled back. */
  readonly active: boolean
  getSync(key: Bytes): Buffer | null
  /** Own writes first, then the snapshot. Resolves at once (no thread-pool hop). */
  get(key: Bytes): Promise<Buffer | null>
  /** Buffers a write (validated now, applied at commit). */
  put(key: Bytes, value: Bytes): void
  delete(key: Bytes): void
  del(key: Bytes): void
  /** The snapshot merged with this transaction's writes as of this call. */
  iterator(options?: IteratorOptions): Iterator
  /** Keys only (see {@link Transaction.iterator}). */
  keys(options?: IteratorOptions): Iterator<Buffer>
  /** Values only (see {@link Transaction.iterator}). */
  values(options?: IteratorOptions): Iterator<Buffer>
  /**
   * Resolves when all writes are applied (and durable with `sync`);
   * rejects with TOONDB_CONFLICT, applying nothing, if a concurrent commit
   * won. Read-only transactions always succeed. Calling it again returns
   * the same promise.
   */
  commit(): Promise<void>
  /** Discards the buffered writes and ends the transaction. */
  rollback(): void
}

/** A consistent read-only view at one moment, outside a transaction. */
export declare class Snapshot {
  private constructor()
  /** The commit timestamp this snapshot reads at. */
  readonly ts: number
  getSync(key: Bytes): Buffer | null
  get(key: Bytes): Promise<Buffer | null>
  iterator(options?: IteratorOptions): Iterator
  keys(options?: IteratorOptions): Iterator<Buffer>
  values(options?: IteratorOptions): Iterator<Buffer>
  /** Ends the snapshot; later reads throw TOONDB_CLOSED. Released on garbage collection too. */
  release(): void
}

/** An atomic batch built step by step; nothing is written until `write()`. */
export declare class ChainedBatch {
  private constructor()
  put(key: Bytes, value: Bytes): this
  del(key: Bytes): this
  delete(key: Bytes): this
  /** Drops the operations added so far. */
  clear(): this
  /** Operations added so far. */
  readonly length: number
  /** Applies every operation atomically. A batch can be written once. */
  write(options?: WriteOptions): Promise<void>
}

/**
 * Entries of a range, in key order (or reverse), as `[key, value]` Buffers
 * (keys or values alone from `keys()` / `values()`), from a consistent
 * snapshot taken when the iterator was created: writes made afterwards are
 * not seen, also after `seek()`. Usable with `for await` and plain `for`.
 *
 * A database iterator holds its snapshot (counted in
 * `stats().liveSnapshots`) until `close()`, a `break` out of `for await`
 * (`return()`) or `for...of`, the end of `for await`, `for...of` or
 * `all()`, or garbage collection; `nextSync()` and `nextv()` reaching the end keep it, so the
 * iterator can `seek()` again.
 */
export declare class Iterator<T = [Buffer, Buffer]> implements AsyncIterableIterator<T>, Iterable<T> {
  private constructor()
  next(): Promise<IteratorResult<T>>
  /** The next entry, or `undefined` at the end. */
  nextSync(): T | undefined
  /** Up to `n` entries; an empty array at the end. */
  nextv(n: number): Promise<Array<T>>
  /** All remaining entries. */
  all(): Promise<Array<T>>
  /**
   * Moves to the first key at or after `target` (at or before it in
   * reverse) that is inside the iterator's range, reading from the same
   * snapshot. A `limit` counts the entries of all seeks together. Throws
   * TOONDB_CLOSED once the snapshot is released (see above). A
   * transaction's iterator re-reads the transaction's own writes as they
   * are at the time of the seek.
   */
  seek(target: Bytes): void
  /** Ends the iteration early (called by `break` in `for await`). */
  return(): Promise<IteratorResult<T>>
  close(): Promise<void>
  [Symbol.asyncIterator](): this
  [Symbol.iterator](): Generator<T>
}

/** Which keys {@link Database.clear} deletes: the options of an iterator over them. */
export type ClearOptions = IteratorOptions

/**
 * An open database. All handles opened on one path in one process (also
 * from worker threads) share one engine; the engine closes with the last
 * handle. Another process gets TOONDB_LOCKED.
 */
export declare class Database {
  private constructor()
  /** Opens (by default creating) the database in directory `path`; recovery runs on the thread pool. */
  static open(path: string, options?: OpenOptions): Promise<Database>
  /** Like {@link Database.open}, on the calling thread. */
  static openSync(path: string, options?: OpenOptions): Database
  /** The path this handle was opened with. */
  readonly path: string
  /** Whether this handle (or the engine) is closed. */
  readonly closed: boolean
  /** The value of `key`, or `null`. Runs on the calling thread (reads are in memory or memory-mapped). */
  getSync(key: Bytes): Buffer | null
  /** The value of `key`, or `null`. Resolves at once: reads do not hop to the thread pool. */
  get(key: Bytes): Promise<Buffer | null>
  /** Values of several keys, in order (`null` where absent), all read from one snapshot. */
  getMany(keys: Bytes[]): Promise<Array<Buffer | null>>
  /**
   * Writes `value` under `key`. Resolves when the write is committed and
   * visible to readers (and durable, per `sync`); the engine's commit
   * thread groups concurrent writes into one WAL write and one fsync.
   */
  put(key: Bytes, value: Bytes, options?: WriteOptions): Promise<void>
  /** Deletes `key` (a no-op if absent); same durability as `put`. */
  delete(key: Bytes, options?: WriteOptions): Promise<void>
  /** Alias of {@link Database.delete}. */
  del(key: Bytes, options?: WriteOptions): Promise<void>
  /** Applies all operations atomically: after a crash, all or none of them are present. Later operations on the same key win. */
  batch(operations: BatchOperation[], options?: WriteOptions): Promise<void>
  /** A chained batch: `db.batch().put(k, v).del(k2).write()`. */
  batch(): ChainedBatch
  /** Iterates a range; see {@link IteratorOptions}. */
  iterator(options?: IteratorOptions): Iterator
  /** The keys of a range; values are not copied out of the engine. */
  keys(options?: IteratorOptions): Iterator<Buffer>
  /** The values of a range; keys are not copied out of the engine. */
  values(options?: IteratorOptions): Iterator<Buffer>
  /**
   * Deletes every key in a range (every key without options) that exists
   * when `clear` is called, and resolves with how many were deleted. The
   * keys are read from a snapshot taken at the call (keys only, no values)
   * and deleted in atomic batches of 1000: each batch is all-or-nothing,
   * the clear as a whole is not (a crash midway leaves a prefix of the
   * range deleted), and a key written again while the clear runs may still
   * be deleted if it existed when the clear began. `reverse` and `limit`
   * choose which keys go first and how many.
   */
  clear(options?: ClearOptions, writeOptions?: WriteOptions): Promise<number>
  /** Begins a transaction (snapshot taken now). */
  transaction(options?: TransactionOptions): Transaction
  /**
   * Runs `fn` in a new transaction and commits it; on TOONDB_CONFLICT
   * retries `fn` with a fresh transaction up to `retries` times. If `fn`
   * throws, the transaction is rolled back and the error rethrown.
   */
  transact<T>(fn: (txn: Transaction) => Promise<T> | T, options?: TransactOptions): Promise<T>
  /** A consistent read-only view as of now. */
  snapshot(): Snapshot
  /** Writes all memtables to table files and waits for it. */
  flush(): Promise<void>
  /**
   * Compacts the tables holding keys in `range` (everything without one)
   * down to the bottom level: overwritten and deleted versions that no live
   * snapshot, transaction or iterator can see are dropped. Resolves when
   * done.
   */
  compact(range?: KeyRange): Promise<void>
  /** Engine counters; see {@link DatabaseStats}. */
  stats(): DatabaseStats
  /**
   * Waits for this handle's pending writes, then closes it. The engine
   * syncs its WAL and stops when the last handle on the path closes.
   * Closing twice is harmless. Rejects (TOONDB_IO) when the final WAL sync
   * failed or the engine had an earlier background failure: a resolved
   * close means every acknowledged write is on disk.
   */
  close(): Promise<void>
}
