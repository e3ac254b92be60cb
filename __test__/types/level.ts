// Type-checked by `npm run test:types`: the Level adapter as a TypeScript
// user sees it, through the package's own `exports` (ESM resolution).
import { ToonLevel } from 'toondb-storage/level'
import { Database } from 'toondb-storage'

export async function level(dir: string): Promise<void> {
  const db = new ToonLevel<string, { age: number }>(dir, { valueEncoding: 'json', sync: true })
  await db.put('alice', { age: 30 })
  const v: { age: number } | undefined = await db.get('alice')
  const s: { age: number } | undefined = db.getSync('alice')
  void v
  void s
  const it = db.iterator({ gte: 'a' })
  it.seek('b')
  await it.close()
  const inner: Database | null = db.database
  void inner
  await db.clear({ gt: 'a' })
  // @ts-expect-error the location is a string
  void new ToonLevel(42)
  await db.close()
}
