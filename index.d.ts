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
   * Bytes a memtable holds before it is written to a table file. Default
   * 32 MiB.
   */
  memtableSize?: number
  /**
   * WAL segment size at which the engine starts a new segment and, in the
   * background, writes the old one out as a table file and deletes it: a
   * reopen after a crash replays about this much (plus one write, and a
   * segment still being written out), however large `memtableSize` is and
   * also while a full memtable waits for its flush, as long as the
   * background thread keeps up with the load. The memtable stays in
   * memory and serves reads as before; those tables are read only by the
   * next open (see `stats().checkpoints`). Default 4 MiB; at least 4096;
   * `2 ** 50` or more (`Infinity` too) turns it off, and `memtableSize` then bounds the
   * WAL (docs/performance.md, "Reopen: WAL checkpoints").
   */
  walSizeLimit?: number
  /** Target size of a table file's data blocks. Default 4096. */
  blockSize?: number
  /** Full memtables that may wait for flushing before writes stall (with one fewer, writes are slowed). Default 3. */
  maxImmutableMemtables?: number
  /**
   * Compression of table data blocks written from now on. Default `'none'`.
   * A compressed block is decompressed once into the block cache
   * (`cacheSize`) and read from there while it stays cached; see
   * docs/performance.md, "Table compression" and "Block cache".
   */
  compression?: 'none' | 'lz4' | 'zstd'
  /** Bloom filter bits per key in each table (0 turns filters off, at most 32). Default 10. */
  bloomBitsPerKey?: number
  /**
   * Give each table written from now on a hash index, which takes a point
   * read from the key's hash straight to its entry and rules out the
   * absent keys the bloom filter lets through (~10 bytes per key). Default
   * `true`; every setting reads all tables. See docs/format-table.md,
   * "Hash index".
   */
  hashIndex?: boolean
  /** Run leveled compaction in the background. Default `true` (see docs/compaction.md). */
  autoCompaction?: boolean
  /**
   * Size the levels from the last one up (default `true`): the last level
   * holds most of the data, each level above it a tenth of the next, and
   * level 0 compacts into the shallowest level needed. `false`: level 1
   * targets `levelBaseBytes` and each deeper level 10 times more, which
   * writes less at the cost of more space and of reads that probe more
   * levels (docs/compaction.md, "Level targets"; docs/performance.md).
   */
  dynamicLevelBytes?: boolean
  /** Size at which compaction cuts its output tables. Default 16 MiB. */
  targetFileSize?: number
  /**
   * The most the base level (where level 0 compacts to) targets. Levels are
   * sized from the last one up: the last level holds most of the data and
   * each level above it a tenth of the next; the base moves up a level
   * when its target would exceed this. Default 64 MiB (docs/compaction.md,
   * "Level targets").
   */
  levelBaseBytes?: number
  /** Level-0 tables that trigger a compaction into the base level. Default 4. */
  l0CompactionTrigger?: number
  /** Level-0 tables at which writes are slowed down. Default 20. */
  l0SlowdownWrites?: number
  /** Level-0 tables at which writes stop until compaction catches up. Default 36. */
  l0StopWrites?: number
  /**
   * Bytes of decoded table data kept in memory (the block cache): the
   * decompressed data blocks of compressed tables, and the decoded index and
   * filter of each open table (charged while the table is open; up to 7/8 of
   * the cache). Uncompressed data blocks are read from the memory-mapped
   * files (the OS page cache) and use none of it. The policy for data blocks
   * is scan resistant (S3-FIFO): a scan reading cold blocks once does not
   * evict the hot ones. 0 turns the cache off. Default 32 MiB.
   */
  cacheSize?: number
  /**
   * Table files kept open (memory-mapped) at once; others are opened when a
   * read needs them and the least recently used is closed. A read or iterator
   * in progress keeps its table open. 0: no limit. Default 1000.
   */
  maxOpenFiles?: number
  /**
   * Values of at least this many bytes that sit uncompressed in a table file
   * are returned by `getSync`/`get`/`getMany` without copying: the Buffer
   * points into a private copy-on-write mapping of the value's file pages,
   * valid until it is garbage-collected (also after compaction deleted the
   * file). Writing into it changes neither the database nor other reads.
   * From `getSync`/`get` the Buffer is a view of one ArrayBuffer over the
   * table's whole mapping (like a Buffer from Node's pool, its `.buffer` is
   * larger than the value): `structuredClone`/`postMessage` of it copies
   * that whole ArrayBuffer, so send `Buffer.from(value)` (a copy of the
   * value alone) to another thread. Smaller values, and values in the memtable or in compressed tables, are
   * copied. `Infinity`: always copy. Default 16384 (docs/performance.md,
   * "Read path"). Runtimes that refuse external buffers (Electron) always
   * get copies.
   */
  zeroCopyThreshold?: number
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
  /** Table files in this level. */
  tables: number
  /** Their total size in bytes. */
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
  /**
   * Address space the memtables' point indexes map (the active one and
   * those waiting to be written): 8 bytes per 64 bytes of `memtableSize`
   * each, 4 MiB at the default 32 MiB. Memory is committed page by page as
   * keys are written, so it becomes resident as a memtable fills.
   */
  memtableIndexBytes: number
  /** Live table files (all levels). */
  tables: number
  /** Total size in bytes of the live table files. */
  tableBytes: number
  /** Bytes of table data blocks read since open: by gets, scans, transaction conflict checks and compaction inputs. */
  tableBytesRead: number
  /** Commits applied since open. */
  commits: number
  /** WAL writes those commits were grouped into (group commit). */
  commitGroups: number
  /** Bytes appended to the WAL since open (record frames included). */
  walBytesWritten: number
  /** fdatasync calls on the WAL; `walSyncs / commits` is fsyncs per commit. */
  walSyncs: number
  /** Write groups delayed by 1 ms because the flush backlog was one memtable short of a stall. */
  writeSlowdowns: number
  /** Times writes stopped until a flush or compaction caught up (see {@link OpenOptions.maxImmutableMemtables}, `l0StopWrites`). */
  writeStalls: number
  /** Total time writes spent stopped, in microseconds. */
  writeStallMicros: number
  /** Memtables written to level-0 table files since open. */
  flushes: number
  /** Bytes of the table files those flushes wrote. */
  flushBytesWritten: number
  /**
   * WAL segments checkpointed into table files since open: once the live
   * segment reaches `walSizeLimit` it is rotated, written out as a table
   * and deleted, so a reopen after a crash replays little (a full
   * memtable's last segment is written out too). The memtable is not
   * flushed for it, and reads never consult these tables.
   */
  checkpoints: number
  /** Bytes of the table files those checkpoints wrote. */
  checkpointBytesWritten: number
  /** Checkpoints that failed before changing anything (the WAL segment stays until the memtable's flush; nothing is lost). */
  checkpointErrors: number
  /** Checkpoint tables on disk now (removed by the flush of the memtable they hold writes of). */
  checkpointTables: number
  /** WAL records replayed by the open of this engine. */
  recoveredRecords: number
  /** WAL segments replayed by the open of this engine. */
  recoveredSegments: number
  /** Bytes of the WAL records replayed by that open (bounded by `walSizeLimit`). */
  recoveredBytes: number
  /** Bytes of a torn or corrupt WAL tail that the open dropped (0: none). */
  droppedTailBytes: number
  /** Why that tail was dropped (e.g. "truncated record"); absent when nothing was. */
  droppedTailReason?: string
  /** The failure that stopped writes, if any (reopen to recover). */
  backgroundError?: string
  /** Writes of this handle whose promises have not settled yet. */
  pendingWrites: number
  /** Bytes read through the table API since open, per table and column. */
  tableReads: TableReadStats[]
  /** Transaction commits rejected with TOONDB_CONFLICT since open. */
  conflicts: number
  /**
   * Range tombstones reads apply now (the memtables' and the tables'; from
   * `clear(range)`), and the nodes of the tree that indexes them: about one
   * per tombstone when each new one covers the older ones, more when they
   * cut each other. What range deletes cost reads and memory until
   * compaction drops them.
   */
  rangeTombstones: number
  rangeDelTreeNodes: number
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
  /**
   * The maintenance thread is flushing or compacting, or has such work due
   * (false only while it has nothing to do; point reads can make a
   * compaction of level 0 due, docs/compaction.md). With
   * `immutableMemtables` 0 and this false, every table file in the
   * directory is a live one. Background syncs of WAL segments are not
   * maintenance work: see `pendingWalSyncs`.
   */
  maintenanceBusy: boolean
  /**
   * WAL segments whose fdatasync runs in the background and has not
   * returned yet: one the engine moved on from (a memtable seal or a WAL
   * rotation), or those an open replayed (synced after the open resolved).
   * Counted until the sync returned, whether it succeeded or not (a failed
   * one makes the next durable write, or the close, fail, and stops
   * writes: `backgroundError`). With this 0, `maintenanceBusy` false and
   * `immutableMemtables` 0, no background work that writes or syncs files
   * is left.
   */
  pendingWalSyncs: number
  /** Compactions installed since open (trivial moves included). */
  compactions: number
  /** Of those, trivial moves: a table moved down a level without rewriting it. */
  trivialMoves: number
  /** Compactions that failed (and were retried) since open. */
  compactionErrors: number
  /** The last compaction failure, while it is unresolved (absent once a compaction succeeds). */
  compactionError?: string
  /** Table bytes compactions read since open. */
  compactionBytesRead: number
  /** Table bytes compactions wrote since open. */
  compactionBytesWritten: number
  /** Estimated bytes of the newest version of every live key (exact after a full compact()). */
  liveBytesEstimate: number
  /** (flush + compaction bytes written) / flush bytes written since open: table bytes written per byte flushed. */
  writeAmplification: number
  /** tableBytes / liveBytesEstimate. */
  spaceAmplification: number
  /** Data blocks loaded by gets and scans (summed over the live tables, so it can drop when compaction replaces tables). */
  dataBlocksRead: number
  /** Point lookups that consulted a table's bloom filter (over the live tables). */
  bloomChecked: number
  /** Of those, lookups the filter answered "absent", saving a data block read. */
  bloomUseful: number
  /** Point lookups that consulted a table's hash index (those its bloom filter let through; over the live tables). */
  hashIndexChecked: number
  /** Of those, lookups the hash index answered "absent" without reading a data block. */
  hashIndexUseful: number
  /** Reads of a compressed data block served decompressed from the block cache, since open. */
  blockCacheHits: number
  /** Reads of a compressed data block that had to decompress it (then cached), since open. */
  blockCacheMisses: number
  /** Data blocks the block cache evicted to stay within `cacheSize`, since open. */
  blockCacheEvictions: number
  /**
   * Bytes charged to the block cache now: cached data blocks (plus a fixed
   * overhead each) and `blockCacheMetaBytes`; never above `blockCacheCapacity`.
   */
  blockCacheBytes: number
  /** The block cache's bound: the `cacheSize` option (0: no cache). */
  blockCacheCapacity: number
  /** Data blocks in the block cache now. */
  blockCacheEntries: number
  /**
   * Bytes of the open tables' decoded indexes and filters charged to the
   * cache (they stay in memory while their table is open and shrink the room
   * for data blocks; at most 7/8 of `cacheSize`).
   */
  blockCacheMetaBytes: number
  /** Decoded indexes and filters of open tables that did not fit in the cache and are held outside it (bounded by `maxOpenFiles`). */
  blockCacheMetaOverflowBytes: number
  /** Table files open (memory-mapped) now; at most `maxOpenFiles` plus reads in progress. */
  openTables: number
  /** Reads of a table that found it open, since open. */
  tableCacheHits: number
  /** Reads of a table that had to open it (closed earlier by `maxOpenFiles`), since open. */
  tableCacheMisses: number
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
  /** The table `name` in this transaction: its writes commit (or roll back) with it. */
  table(name: string): Table
}

/** A column type of a columnar table. */
export type ColumnType = 'i64' | 'f64' | 'bool' | 'string' | 'bytes'

/** A cell value: i64 as bigint (a safe-integer number is accepted on write). */
export type CellValue = bigint | number | boolean | string | Buffer | Uint8Array | null

/** A primary key: i64 (bigint or safe integer) or string. */
export type PrimaryKey = bigint | number | string

/** A table's schema, as given to `createTable`. */
export interface TableSchema {
  /** Column name to type, in storage order. */
  columns: Record<string, ColumnType>
  /** The primary key column: an i64 or string column, never nullable. */
  primaryKey: string
  /** Columns that may hold null. */
  nullable?: string[]
}

/** A row: column name to value. */
export type Row = Record<string, CellValue>

/** A one-column condition evaluated in the engine before other columns are read. */
export interface ColumnCondition {
  eq?: CellValue
  gt?: CellValue
  gte?: CellValue
  lt?: CellValue
  lte?: CellValue
}

/** Which rows and columns a table scan reads. Bounds are on the primary key. */
export interface TableScanOptions {
  /** Columns to read, in output order (all columns when absent). */
  columns?: string[]
  gt?: PrimaryKey
  gte?: PrimaryKey
  lt?: PrimaryKey
  lte?: PrimaryKey
  reverse?: boolean
  limit?: number
  /** One column's condition, e.g. `{ amount: { gte: 100 } }`. */
  where?: Record<string, ColumnCondition>
}

/**
 * Columns from `scanColumns`: Float64Array (f64), BigInt64Array (i64),
 * Uint8Array (bool, 0/1) for non-nullable columns; arrays with nulls for
 * nullable ones; arrays of strings or Buffers.
 */
export type ColumnArray =
  | Float64Array
  | BigInt64Array
  | Uint8Array
  | Array<number | bigint | boolean | string | Buffer | null>

export interface GetRowOptions {
  /** Columns to read (all when absent). */
  columns?: string[]
}

/** Bytes read through the table API for one column. */
export interface ColumnReadStats {
  name: string
  bytesRead: number
  cellsRead: number
}

/** Bytes read through the table API for one table. */
export interface TableReadStats {
  name: string
  bytesRead: number
  /**
   * Rows written into column chunks since open (by `db.compact()` and by
   * the automatic chunking after enough table writes; docs/columnar.md).
   */
  chunkedRows: number
  columns: ColumnReadStats[]
}

/**
 * A columnar table: each column stored apart, ordered by primary key, so a
 * scan reads only the asked columns. From `db.table()` (writes commit on
 * their own), `txn.table()` (writes commit with the transaction) or
 * `snapshot.table()` (read-only).
 */
export declare class Table {
  private constructor()
  readonly name: string
  readonly schema: Required<TableSchema>
  /**
   * Inserts rows; rejects with TOONDB_INVALID_ARGUMENT (naming the row and
   * column) on a bad row or an existing primary key, applying nothing.
   */
  insert(rows: Row | Row[]): Promise<void>
  /** Inserts or replaces whole rows, atomically. */
  upsert(rows: Row | Row[]): Promise<void>
  /**
   * `insert` of rows given as whole columns, every column (all of the
   * schema's, same length) a typed array (`Float64Array` for f64,
   * `BigInt64Array` for i64, `Uint8Array` of 0/1 for bool), read without a
   * conversion per value, or an array of values (any type, `null` in a
   * nullable column). Errors name the column (and row).
   */
  insertColumns(columns: Record<string, ColumnArray | ArrayLike<unknown>>): Promise<void>
  /** `upsert` of rows given as whole columns (see {@link Table.insertColumns}). */
  upsertColumns(columns: Record<string, ColumnArray | ArrayLike<unknown>>): Promise<void>
  /** Deletes the rows with these primary keys. */
  delete(pk: PrimaryKey | PrimaryKey[]): Promise<void>
  getSync(pk: PrimaryKey, options?: GetRowOptions): Row | null
  get(pk: PrimaryKey, options?: GetRowOptions): Promise<Row | null>
  /** Rows holding only the asked columns, in primary-key order. */
  scan(options?: TableScanOptions): AsyncIterableIterator<Row>
  /** The asked columns, whole. */
  scanColumns(options?: TableScanOptions): Promise<Record<string, ColumnArray>>
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
  /** The table `name` as of this snapshot (read-only). */
  table(name: string): Table
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

/** What {@link Database.backup} resolves with. */
export interface BackupReport {
  /** The commit timestamp the copy holds exactly: every commit at or below it, nothing newer. Reopening the copy gives `stats().visibleTs === ts`. */
  ts: number
  /** Table files hard-linked into the destination (they share the source's immutable bytes). */
  tablesLinked: number
  /** Their total size (no bytes were written for them). */
  bytesLinked: number
  /** Table files copied because the file system could not link them (another device, no link support). */
  tablesCopied: number
  /** Bytes copied for them. */
  bytesCopied: number
  /** Table files written: memtable contents at `ts`, and tables that held versions newer than `ts`, rewritten without them. */
  tablesWritten: number
  /** Bytes of those new table files. */
  bytesWritten: number
}

/** What {@link Database.verify} resolves with. */
export interface VerifyReport {
  /** True when every check passed (`problems` is empty). */
  ok: boolean
  /** Table files checked (footer, index, filter and every data block's checksum). */
  tables: number
  /** Data blocks read and checked. */
  blocks: number
  /** Total size of the table files checked. */
  tableBytes: number
  /** WAL segments read through replay's framing and checksum rules. */
  walSegments: number
  /** Valid WAL records in them. */
  walRecords: number
  /** An unfinished record at the end of the newest WAL segment (normal while writes are in flight; not a problem). */
  walTornTail?: string | null
  /** One line per failed check (the file and what failed). */
  problems: string[]
}

/** Events of {@link Database.on}. */
export type DatabaseEvent = 'flush' | 'compaction' | 'stall' | 'error'

/** Argument of a `'flush'` listener: flushes since the previous event. */
export interface FlushEvent {
  /** Memtables flushed since the previous event (usually 1). */
  count: number
  /** Bytes of table files they wrote. */
  bytes: number
  /** `stats().flushes` now. */
  flushes: number
  /** The stats the event was derived from. */
  stats: DatabaseStats
}

/** Argument of a `'compaction'` listener: compactions since the previous event. */
export interface CompactionEvent {
  /** Compactions installed since the previous event. */
  count: number
  /** Of those, trivial moves (a table moved down a level, not rewritten). */
  trivialMoves: number
  /** Table bytes they read. */
  bytesRead: number
  /** Table bytes they wrote. */
  bytesWritten: number
  /** `stats().compactions` now. */
  compactions: number
  /** The stats the event was derived from. */
  stats: DatabaseStats
}

/** Argument of a `'stall'` listener: write stalls and slowdowns since the previous event. */
export interface StallEvent {
  /** Times writes stopped since the previous event (`stats().writeStalls`). */
  stalls: number
  /** Write groups delayed by 1 ms since the previous event (`stats().writeSlowdowns`). */
  slowdowns: number
  /** Microseconds writes spent stopped since the previous event. */
  stallMicros: number
  /** The stats the event was derived from. */
  stats: DatabaseStats
}

/** Argument of an `'error'` listener. */
export interface BackgroundError extends ToondbError {
  /** `'background'`: writes stopped (a failed WAL write or fsync, a failed flush; reopen to recover). `'compaction'`: a compaction failed and will be retried; the database keeps working. */
  source: 'background' | 'compaction'
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
  /**
   * The value of `key`, or `null`. Always runs on the calling thread, even
   * when it has to wait for the device (a cold table page). Large values
   * may be zero-copy (see `zeroCopyThreshold`).
   */
  getSync(key: Bytes): Buffer | null
  /**
   * The value of `key`, or `null`. Resolves at once (no thread-pool hop)
   * when everything the read needs is in memory (memtable, block cache,
   * table pages in the page cache); a read that would wait for the device
   * runs on the libuv thread pool, so the event loop never blocks on it.
   */
  get(key: Bytes): Promise<Buffer | null>
  /**
   * Values of several keys, in order (`null` where absent), all read from one
   * snapshot; like `get`, at once when all of it is in memory, else on the
   * thread pool.
   */
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
   * Deletes every key in a range (every key without options).
   *
   * Without `limit` it is one range delete (a range tombstone in the
   * engine, `Database::delete_range`): no key is read, so it takes the same
   * time for ten keys or ten million; it is one atomic, durable commit
   * ordered with the writes issued around it (a write issued before
   * `clear` is deleted, one issued after survives), snapshots and
   * iterators opened before it keep seeing the keys, and compaction
   * reclaims the space later. It resolves with `undefined`: counting the
   * keys would mean reading them. Transactions that wrote (or, when
   * serializable, read) a key in the range after their snapshot fail to
   * commit with TOONDB_CONFLICT. `reverse` has no effect then.
   *
   * With `limit` the keys are read from a snapshot taken at the call (keys
   * only) and deleted in atomic batches of 1000, `reverse` choosing which
   * go first; it resolves with how many were deleted. Each batch is
   * all-or-nothing, the clear as a whole is not.
   */
  clear(options: ClearOptions & { limit: number }, writeOptions?: WriteOptions): Promise<number>
  clear(options?: ClearOptions, writeOptions?: WriteOptions): Promise<number | undefined>
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
  /** Creates a columnar table; TOONDB_INVALID_ARGUMENT if the name is taken or the schema is bad. */
  createTable(name: string, schema: TableSchema): Promise<Table>
  /** The table `name`; throws TOONDB_NOT_FOUND if there is none. */
  table(name: string): Table
  /** Every table. */
  tables(): Table[]
  /** Drops a table and deletes its data. */
  dropTable(name: string): Promise<void>
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
   * Writes a consistent copy of the database into `dest` while writes
   * continue (on the thread pool) and resolves with what it did. The copy
   * holds exactly the commits at or below one commit timestamp
   * (`report.ts`): every write that resolved before the call, none that
   * was issued after it resolved, and any in flight either whole or not at
   * all. Table files are hard-linked where the file system allows (they
   * are immutable, so the copy and the source share bytes nobody changes;
   * a later compaction in either only unlinks its own names), copied
   * otherwise; memtable contents are written as new table files. `dest`
   * must not exist or be an empty directory (TOONDB_INVALID_ARGUMENT
   * otherwise, and while another backup writes there: the destination is
   * claimed with an exclusively created `BACKUP-PENDING` file, removed when
   * the copy is complete). Open the copy with {@link Database.open}.
   */
  backup(dest: string): Promise<BackupReport>
  /**
   * Reads every block of every live table file and every WAL record
   * through its checksum, changing nothing (on the thread pool). Resolves
   * with a report; `ok` is false and `problems` names each damaged file
   * when a check failed.
   */
  verify(): Promise<VerifyReport>
  /**
   * Listens for engine events:
   * - `'flush'`: memtables were written to table files ({@link FlushEvent});
   * - `'compaction'`: compactions were installed ({@link CompactionEvent});
   * - `'stall'`: writes were slowed down or stopped by backpressure ({@link StallEvent});
   * - `'error'`: a background failure ({@link BackgroundError}); reported once per distinct failure.
   *
   * Events are derived from {@link Database.stats} polled every 100 ms on an
   * unref'd timer that runs only while this handle has listeners (it never
   * keeps the process alive, and stops at `close()`): an event reports what
   * changed since the previous poll (several flushes may arrive as one event
   * with `count > 1`), up to 100 ms after it happened. Counters are the
   * engine's, so a handle sees events caused by every handle on the path.
   * A failure that happened before the first `'error'` listener was added is
   * reported to it. Unlike EventEmitter, an `'error'` without listeners is
   * not thrown (`close()` rejects with it instead).
   */
  on(event: 'flush', listener: (event: FlushEvent) => void): this
  on(event: 'compaction', listener: (event: CompactionEvent) => void): this
  on(event: 'stall', listener: (event: StallEvent) => void): this
  on(event: 'error', listener: (error: BackgroundError) => void): this
  /** Alias of {@link Database.on}. */
  addListener(event: DatabaseEvent, listener: (arg: any) => void): this
  /** Like {@link Database.on}, removed after its first call. */
  once(event: 'flush', listener: (event: FlushEvent) => void): this
  once(event: 'compaction', listener: (event: CompactionEvent) => void): this
  once(event: 'stall', listener: (event: StallEvent) => void): this
  once(event: 'error', listener: (error: BackgroundError) => void): this
  /** Removes a listener added with `on`/`once`; the timer stops with the last one. */
  off(event: DatabaseEvent, listener: (arg: any) => void): this
  /** Alias of {@link Database.off}. */
  removeListener(event: DatabaseEvent, listener: (arg: any) => void): this
  /** Removes every listener of `event` (of every event without it). */
  removeAllListeners(event?: DatabaseEvent): this
  /** How many listeners `event` has. */
  listenerCount(event: DatabaseEvent): number
  /**
   * Waits for this handle's pending writes, then closes it. The engine
   * syncs its WAL and stops when the last handle on the path closes.
   * Closing twice is harmless (the same promise). Rejects with the
   * background failure (`err.code` TOONDB_IO, the message of the failed WAL
   * write, fsync or flush) when the engine had one, or when the final WAL
   * sync failed: a resolved close means every acknowledged write is on
   * disk. The handle is closed either way. Event polling stops.
   */
  close(): Promise<void>
}
