// Baseline, not a store: the rate of the disk's durable small writes as seen
// from Node — fs.writeSync of one 116-byte record (a 16-byte key + 100-byte
// value) followed by fs.fdatasyncSync, in a loop. A store that makes every put
// durable one at a time cannot beat this by much, so fillsync1 compares toondb
// with it. Two variants: [append] (the file grows with every write: the target's
// baseline) and [prezeroed] (overwrite a zero-filled file in place, as a WAL
// with preallocated space does, which makes fdatasync cheaper).
// Runs with fillsync1 only; the harness always includes it (--only does not drop it).
import fs from 'node:fs';
import path from 'node:path';
import { syncLatency } from '../common.mjs';

export const id = 'fdatasync';
export const name = 'raw fdatasync';
export const aliases = ['fdatasync', 'raw-fdatasync'];
/** Baselines get no n/a rows for the workloads they do not define. */
export const baseline = true;

const RECORD = 116;

export async function init() {
  return {
    version: `(node ${process.version} fs)`,
    settings: [
      `fs.openSync(dir/raw.log, 'w'), then per op fs.writeSync(fd, ${RECORD} bytes) + fs.fdatasyncSync(fd); runs with fillsync1 only`,
      '[append]: each write extends the file (the fdatasync must also commit the new file size); this is the baseline of the >= 85% target',
      '[prezeroed]: the file is first filled with zeros and fsynced (untimed), then each write overwrites zeros in place (no size change), like a preallocated WAL',
    ],
  };
}

export async function open(dir) {
  return { fd: fs.openSync(path.join(dir, 'raw.log'), 'w'), record: Buffer.alloc(RECORD) };
}

export async function close(h) {
  if (h.fd != null) fs.closeSync(h.fd);
  h.fd = null;
}

export async function load() {
  throw new Error('raw fdatasync has no preload');
}

function writeAndSync(h, { sync1Puts, keys, values }, positioned) {
  return {
    latenciesMs: syncLatency(sync1Puts, (i) => {
      keys[i].copy(h.record, 0);
      values[i].copy(h.record, keys[i].length);
      if (positioned) fs.writeSync(h.fd, h.record, 0, RECORD, i * RECORD);
      else fs.writeSync(h.fd, h.record);
      fs.fdatasyncSync(h.fd);
    }),
  };
}

export const workloads = {
  fillsync1: [
    {
      variant: 'append',
      api: `fs.writeSync(fd, ${RECORD} B) appending + fs.fdatasyncSync(fd), one at a time`,
      run: (h, data) => writeAndSync(h, data, false),
    },
    {
      variant: 'prezeroed',
      api: `pre-zeroed file; fs.writeSync(fd, ${RECORD} B, at i × ${RECORD}) + fs.fdatasyncSync(fd), one at a time`,
      before: (h, { sync1Puts }) => {
        const zeros = Buffer.alloc(1 << 20);
        for (let off = 0, end = sync1Puts * RECORD; off < end; off += zeros.length) {
          fs.writeSync(h.fd, zeros, 0, Math.min(zeros.length, end - off), off);
        }
        fs.fsyncSync(h.fd);
      },
      run: (h, data) => writeAndSync(h, data, true),
    },
  ],
};
