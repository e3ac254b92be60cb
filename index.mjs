// The ES module entry of toondb-storage: the same classes as the CommonJS
// entry (index.js), so both module systems share one loaded addon.
import toondb from './index.js'

export const { Database, Iterator, ChainedBatch, Transaction, Snapshot, Table } = toondb
export default toondb
