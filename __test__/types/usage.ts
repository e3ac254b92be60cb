// Type-checked by `npm run test:types` (tsc --noEmit): a TypeScript user's
// view of the API. It must compile against index.d.ts, and the @ts-expect-error
// lines prove that misuse is rejected by the types.
import { Database, type ToondbError, type BatchOperation, type DatabaseStats } from '../../index.js'

export async function quickStart(dir: string): Promise<void> {
  const db: Database = await Database.open(dir, { sync: true, memtableSize: 8 << 20 })
  await db.put('users/1', 'Alice')
  await db.put(Buffer.from('users/2'), new Uint8Array([66, 111, 98]), { sync: false })
  const v: Buffer | null = await db.get('users/1')
  const s: Buffer | null = db.getSync('users/2')
  const many: Array<Buffer | null> = await db.getMany(['users/1', 'users/2'])
  const ops: BatchOperation[] = [
    { type: 'put', key: 'a', value: '1' },
    { type: 'del', key: 'users/1' },
  ]
  await db.batch(ops)
  await db.batch().put('b', '2').del('a').write({ sync: true })
  for await (const [key, value] of db.iterator({ prefix: 'users/', reverse: true, limit: 10 })) {
    const k: Buffer = key
    const val: Buffer = value
    void k, val
  }
  for (const [key] of db.iterator({ gte: 'a', lt: 'z' })) void key
  const all: Array<[Buffer, Buffer]> = await db.iterator().all()
  await db.flush()
  const stats: DatabaseStats = db.stats()
  const fsyncsPerCommit: number = stats.walSyncs / Math.max(1, stats.commits)
  try {
    await db.put('', 'x')
  } catch (e) {
    const err = e as ToondbError
    if (err.code === 'TOONDB_INVALID_ARGUMENT') void err.message
  }
  const txn = db.transaction({ isolation: 'serializable' })
  const balance: Buffer | null = await txn.get('acct/a')
  txn.put('acct/a', String(Number(balance) - 1))
  await txn.commit()
  const total: number = await db.transact(async (t) => {
    t.delete('x')
    return 1
  }, { retries: 3 })
  const snap = db.snapshot()
  const old: Buffer | null = snap.getSync('acct/a')
  snap.release()
  await db.close()
  void v, s, many, all, fsyncsPerCommit, total, old
  // @ts-expect-error isolation is 'snapshot' or 'serializable'
  db.transaction({ isolation: 'repeatable-read' })

  // @ts-expect-error keys must be bytes or strings
  await db.put(42, 'x')
  // @ts-expect-error unknown batch operation type
  await db.batch([{ type: 'merge', key: 'a', value: 'b' }])
  // @ts-expect-error the constructor is private: use Database.open
  new Database()
  // @ts-expect-error sync is a boolean
  await Database.open(dir, { sync: 'yes' })
}

export function syncOpen(dir: string): Database {
  return Database.openSync(dir, { createIfMissing: false })
}

export async function iteration(db: Database): Promise<number> {
  const it = db.iterator({ gte: 'a' })
  it.seek('m')
  const entry: [Buffer, Buffer] | undefined = it.nextSync()
  void entry
  const keys: Buffer[] = await db.keys({ prefix: 'users/' }).all()
  for await (const value of db.values({ limit: 3 })) {
    const v: Buffer = value
    void v
  }
  // @ts-expect-error keys() yields Buffers, not pairs
  const wrong: Array<[Buffer, Buffer]> = await db.keys().all()
  void wrong
  const snap = db.snapshot()
  const first: Buffer | undefined = snap.keys().nextSync()
  void first
  snap.release()
  const cleared: undefined | number = await db.clear({ gte: 'a', lt: 'b' }, { sync: true })
  void cleared
  // @ts-expect-error without `limit`, clear() may resolve with undefined
  const notCounted: number = await db.clear({ gte: 'a' })
  void notCounted
  const deleted: number = await db.clear({ gte: 'a', lt: 'b', limit: 10 }, { sync: true })
  return deleted + keys.length
}

export async function operations(db: Database): Promise<void> {
  const report = await db.backup('/tmp/copy')
  const ts: number = report.ts
  const linked: number = report.tablesLinked + report.tablesCopied + report.tablesWritten
  const v = await db.verify()
  const ok: boolean = v.ok
  const problems: string[] = v.problems
  db.on('flush', (e) => {
    const n: number = e.count + e.bytes + e.stats.flushes
  })
    .on('compaction', (e) => {
      const n: number = e.bytesWritten + e.trivialMoves
    })
    .on('stall', (e) => {
      const n: number = e.stalls + e.slowdowns + e.stallMicros
    })
    .on('error', (err) => {
      const source: 'background' | 'compaction' = err.source
      const code: string = err.code
    })
  db.once('flush', () => {})
  const count: number = db.listenerCount('error')
  db.removeAllListeners('flush').removeAllListeners()
  // @ts-expect-error: not an event
  db.on('write', () => {})
  // @ts-expect-error: the destination is a path
  await db.backup()
  void [ts, linked, ok, problems, count]
}
