'use strict'
// `require('toondb-storage/level')`: the abstract-level adapter (lib/level.js).
const { ToonLevel } = require('./lib/level.js')

module.exports = { ToonLevel }
