// Types of `import ... from 'toondb-storage/level'`: the same as level.d.ts.
export * from './level.js'
import * as level from './level.js'
export default level
