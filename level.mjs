// `import { ToonLevel } from 'toondb-storage/level'` (see lib/level.js).
import level from './level.js'

export const { ToonLevel } = level
export default level
