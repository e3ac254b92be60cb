// The packed package as a user installs it: scripts/check-package.mjs packs
// the tarball, installs it into a fresh temporary project and runs an ES
// module script, a CommonJS script and a TypeScript check (ESM and CJS)
// there, and fails if the install compiled anything although the tarball
// ships a prebuilt addon. (The from-source install is the same script with
// --from-source; it takes minutes, see README.)
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

test('the packed tarball installs in a fresh project and works from ESM, CommonJS and TypeScript', { timeout: 180000 }, () => {
  const script = fileURLToPath(new URL('../scripts/check-package.mjs', import.meta.url))
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8' })
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`)
  for (const line of ['the prebuilt addon was used; nothing compiled', 'esm ok', 'cjs ok', 'type checks pass']) {
    assert.match(r.stdout, new RegExp(line.replace(/[()]/g, '\\$&')))
  }
})
