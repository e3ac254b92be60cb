// Types of the ES module entry (index.mjs): the same as index.d.ts.
export * from './index.js'
import * as toondb from './index.js'
export default toondb
