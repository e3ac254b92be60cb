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
