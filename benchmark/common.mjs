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

/**
 * Like `windowed`, but times every operation (start -> resolve) and returns the
 * latencies in milliseconds (Float64Array, indexed by operation).
 */
export async function windowedLatency(n, concurrency, fn) {
  const lat = new Float64Array(n);
  await windowed(n, concurrency, async (i) => {
    const t0 = performance.now();
    await fn(i);
    lat[i] = performance.now() - t0;
  });
  return lat;
}

/** Run fn(0) .. fn(n - 1) one after another (awaiting each), timing each. */
export async function serialLatency(n, fn) {
  const lat = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    lat[i] = performance.now() - t0;
  }
  return lat;
}

/** Synchronous version of `serialLatency` for synchronous APIs. */
export function syncLatency(n, fn) {
  const lat = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn(i);
    lat[i] = performance.now() - t0;
  }
  return lat;
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

/** A random permutation of 0..n-1 (Fisher-Yates over `prng(seed)`). */
export function permutation(n, seed) {
  const r = prng(seed);
  const p = Uint32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
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
 * The read-modify-write transaction plan of the txn workloads (same for every
 * store): transaction t touches the distinct key indexes
 * txnKeyIdx[txnStart[t] .. txnStart[t + 1]), 1 to 4 of them (uniform), drawn
 * uniformly from a hot set of `hotKeys` random keys out of the n preloaded ones.
 * Uses its own PRNG stream so the other workloads' data does not change.
 */
export function makeTxnPlan({ n, txns, hotKeys, seed }) {
  const rnd = prng(seed ^ 0x7a3c5e91);
  const hot = Math.min(hotKeys, n);
  // Hot set: the first `hot` entries of a partial Fisher-Yates shuffle of 0..n-1.
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = 0; i < hot; i++) {
    const j = i + Math.floor(rnd() * (n - i));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  const hotSet = perm.slice(0, hot);
  const txnStart = new Uint32Array(txns + 1);
  const idx = [];
  for (let t = 0; t < txns; t++) {
    txnStart[t] = idx.length;
    const count = Math.min(hot, 1 + Math.floor(rnd() * 4));
    const chosen = [];
    while (chosen.length < count) {
      const k = hotSet[Math.floor(rnd() * hot)];
      if (!chosen.includes(k)) chosen.push(k);
    }
    idx.push(...chosen);
  }
  txnStart[txns] = idx.length;
  return { txns, hotKeys: hot, txnStart, txnKeyIdx: Uint32Array.from(idx) };
}

/** A copy of `v` whose first 8 bytes (a little-endian u64 counter) are incremented. */
export function incremented(v) {
  const out = Buffer.allocUnsafe(v.length);
  v.copy(out);
  out.writeBigUInt64LE(BigInt.asUintN(64, v.readBigUInt64LE(0) + 1n), 0);
  return out;
}

/**
 * After a txn workload: every key the plan touched must hold its preloaded
 * counter plus the number of committed transactions that touched it (a lost
 * or doubled update fails the run). read(key) -> Buffer, synchronous.
 */
export function checkTxnCounters(data, read) {
  const { txnKeyIdx } = data;
  const times = new Map();
  for (const i of txnKeyIdx) times.set(i, (times.get(i) ?? 0) + 1);
  for (const [i, c] of times) {
    const v = read(data.keys[i]);
    checkValue(v, data, 'txn check');
    const want = BigInt.asUintN(64, data.values[i].readBigUInt64LE(0) + BigInt(c));
    const got = v.readBigUInt64LE(0);
    if (got !== want) throw new Error(`txn check: key ${data.keys[i].toString('latin1')} counter is ${got}, expected ${want} (lost or doubled update)`);
  }
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

/**
 * The keys of the getmany100 workload: `readOrder` cut into arrays of 100
 * keys, built once per data set (the warm-up run builds them untimed).
 */
export function manyBatches(data, size = 100) {
  if (!data.manyBatches) {
    const batches = [];
    for (let i = 0; i + size <= data.n; i += size) {
      batches.push(Array.from({ length: size }, (_, j) => data.keys[data.readOrder[i + j]]));
    }
    data.manyBatches = batches;
  }
  return data.manyBatches;
}

/** Runs getMany over every batch of `manyBatches`, checking each value. */
export async function runGetMany(data, getMany, what) {
  let n = 0;
  for (const batch of manyBatches(data)) {
    const values = await getMany(batch);
    for (const v of values) checkValue(v, data, what);
    n += values.length;
  }
  return n;
}
