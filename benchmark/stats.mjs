// Summary statistics for benchmark runs.

/** Median of a list of numbers (mean of the two middle values for an even count). */
export function median(xs) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** { n, min, median, max } of a list of numbers. */
export function summarize(xs) {
  if (xs.length === 0) return { n: 0, min: NaN, median: NaN, max: NaN };
  return { n: xs.length, min: Math.min(...xs), median: median(xs), max: Math.max(...xs) };
}

/**
 * Ratio of two throughputs: how many times faster `subject` is than `peer`.
 * > 1 means subject (toondb-storage) is faster. NaN when either is missing.
 */
export function ratio(subject, peer) {
  if (!Number.isFinite(subject) || !Number.isFinite(peer) || peer <= 0) return NaN;
  return subject / peer;
}

/** 1234567.8 -> "1,234,568" */
export function formatOps(x) {
  if (!Number.isFinite(x)) return 'n/a';
  return Math.round(x).toLocaleString('en-US');
}

/** 1.2345 -> "1.23x" */
export function formatRatio(x) {
  if (!Number.isFinite(x)) return '—';
  return `${x.toFixed(x >= 10 ? 1 : 2)}x`;
}

/**
 * { count, p50Ms, p99Ms, maxMs } of one run's per-operation latencies in ms
 * (nearest-rank percentiles: the smallest sample with >= p% of samples at or below it).
 */
export function latencySummary(latMs) {
  const s = Float64Array.from(latMs).sort();
  const at = (p) => s[Math.min(Math.max(1, Math.ceil((p / 100) * s.length)), s.length) - 1];
  return { count: s.length, p50Ms: at(50), p99Ms: at(99), maxMs: s[s.length - 1] };
}

/** 0.1234 -> "0.123", 12.345 -> "12.3" (ms with about 3 significant digits). */
export function formatMs(x) {
  if (!Number.isFinite(x)) return 'n/a';
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  if (x >= 1) return x.toFixed(2);
  return x.toFixed(3);
}
