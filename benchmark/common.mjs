// Shared helpers for the benchmark harness and the store adapters.
import fs from 'node:fs';
import path from 'node:path';

/** Marker for a workload a store cannot run (printed as "n/a" with the reason). */
export function na(reason) {
  return { na: true, reason };
}

/**
 * Run fn(0) .. fn(n - 1) with at most `concurrency` promises in flight
 * (a sliding window: a new operation starts as soon as one finishes).
 */
export async function windowed(n, concurrency, fn) {
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      await fn(i);
    }
  }
  const workers = [];
  for (let w = 0; w < Math.min(concurrency, n); w++) workers.push(worker());
  await Promise.all(workers);
}

/** Throw unless a read returned a value of the expected length. */
export function checkValue(v, data, what) {
  if (v == null) throw new Error(`${what}: key not found`);
  if (v.length !== data.valueSize) throw new Error(`${what}: value has ${v.length} bytes, expected ${data.valueSize}`);
}

/** Throw unless `got` === `want`. */
export function checkCount(got, want, what) {
  if (got !== want) throw new Error(`${what}: got ${got} entries, expected ${want}`);
}

/** Small deterministic PRNG (mulberry32) so every store sees the same order. */
export function prng(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The data set shared by every store in a process:
 *  keys[i]     16-byte Buffer "key" + 13-digit zero-padded i (ascending = key order)
 *  values[i]   `valueSize` pseudo-random (incompressible) bytes
 *  readOrder   a random permutation of 0..n-1 (Fisher-Yates)
 *  scanStarts  `scans` random start indexes in [0, n - scanLength]
 * Keys and values are views into two large slabs (no per-entry allocation).
 */
export function makeData({ n, valueSize, scans, scanLength, batchSize, concurrency, seed }) {
  const keySize = 16;
  const rnd = prng(seed);
  const keySlab = Buffer.alloc(n * keySize);
  const valueSlab = Buffer.alloc(n * valueSize);
  const keys = new Array(n);
  const values = new Array(n);
  for (let i = 0; i < n; i++) {
    keySlab.write('key' + String(i).padStart(keySize - 3, '0'), i * keySize, 'latin1');
    keys[i] = keySlab.subarray(i * keySize, (i + 1) * keySize);
  }
  for (let off = 0; off < valueSlab.length; off += 4) {
    valueSlab.writeUInt32LE((rnd() * 4294967296) >>> 0, off);
  }
  for (let i = 0; i < n; i++) values[i] = valueSlab.subarray(i * valueSize, (i + 1) * valueSize);

  const readOrder = new Uint32Array(n);
  for (let i = 0; i < n; i++) readOrder[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const t = readOrder[i];
    readOrder[i] = readOrder[j];
    readOrder[j] = t;
  }
  const scanLen = Math.min(scanLength, n);
  const scanStarts = new Uint32Array(scans);
  for (let i = 0; i < scans; i++) scanStarts[i] = Math.floor(rnd() * (n - scanLen + 1));

  return { n, keySize, valueSize, keys, values, readOrder, scans, scanLength: scanLen, scanStarts, batchSize, concurrency };
}

/**
 * Version of an installed package, found by walking up from its resolved entry
 * point (some packages, e.g. lmdb, do not export ./package.json).
 */
export function packageVersion(require, pkg) {
  let dir = path.dirname(require.resolve(pkg));
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const json = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (json.name === pkg) return json.version;
    }
    const up = path.dirname(dir);
    if (up === dir) return 'unknown';
    dir = up;
  }
}
