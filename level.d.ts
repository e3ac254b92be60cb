/// <reference types="node" />
// Types of `toondb-storage/level`: an abstract-level 3 database over
// toondb-storage (see lib/level.js and README.md).
import { AbstractLevel, AbstractDatabaseOptions } from 'abstract-level'
import type { Database, OpenOptions } from './index.js'

/** abstract-level's database options plus the Database.open options that apply. */
export interface ToonLevelOptions<K, V>
  extends AbstractDatabaseOptions<K, V>,
    Pick<OpenOptions, 'sync' | 'memtableSize' | 'blockSize' | 'maxImmutableMemtables'> {}

/**
 * A Level database (abstract-level 3) stored in toondb-storage: encodings,
 * sublevels, hooks, events, explicit snapshots, `getSync`, `has`, iterator
 * `seek` and `clear(range)` as abstract-level documents them. Keys that are
 * empty or start with byte 0x00 are stored with one 0x00 byte in front
 * (order-preserving); every other key is stored as it is.
 */
export declare class ToonLevel<KDefault = string, VDefault = string> extends AbstractLevel<
  string | Buffer | Uint8Array,
  KDefault,
  VDefault
> {
  constructor(location: string, options?: ToonLevelOptions<KDefault, VDefault>)
  /** The directory of the database. */
  readonly location: string
  /** The underlying toondb `Database` while open (transactions, stats, flush), else `null`. */
  readonly database: Database | null
}
