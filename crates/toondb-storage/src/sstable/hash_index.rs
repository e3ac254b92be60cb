//! The per-table hash index for point reads, stored in the `index.hash`
//! meta block (docs/format-table.md, "Hash index").
//!
//! A point read hashes the user key (the bloom filter's [`bloom_hash`]) to
//! one 64-byte bucket of 8 slots and compares 16-bit fingerprints; a match
//! names the data block of the key's newest version in the table and where
//! in the block it starts, so the read goes straight to that entry: no index
//! search and no binary search inside the block. An empty slot before any
//! match means the key is not in the table, which makes the index a filter
//! as well (~0.01% false positives, against the bloom filter's ~1%).
//!
//! Contents: `pad[p] | bucket[n] | n u32 LE | version u8` with `p < 64`
//! chosen by the writer so the buckets start on a 64-byte file offset (one
//! cache line each when the block is read in place from the memory map).
//! Each bucket is 8 slots of 8 bytes, read as one u64 LE: bits 0..16
//! fingerprint (0 = empty), then
//! - version 1: bits 16..32 entry number, 32..64 data block number;
//! - version 2 (written now): bits 16..40 the entry's byte offset in the
//!   block's contents ([`OFFSET_UNKNOWN`]: search the block), 40..64 data
//!   block number. A read of an uncompressed block it has checked before
//!   then touches only the entry's own bytes: not the block trailer, the
//!   entry count or the offsets array (one to two cache misses less).
//!
//! A key's home bucket is `((h >> 32) * n) >> 32` and its fingerprint
//! `h & 0xffff` (0 becomes 1); the writer puts each key in the first empty
//! slot from its home bucket's slot 0 on (wrapping from the last bucket to
//! the first), so a reader scans from there up to the first empty slot.
//!
//! [`bloom_hash`]: super::bloom::bloom_hash

use std::ops::Range;

use crate::coding::Reader;

/// The encoding this build writes. It reads versions 1 and 2; a block with
/// another version is ignored by readers (the table is read as if it had no
/// hash index).
pub(crate) const HASH_INDEX_VERSION: u8 = 2;
/// Version 2's byte offset for an entry that starts at or past 2^24 - 1
/// bytes into its block (only blocks that big, i.e. huge values, have one):
/// the reader searches that block for the key.
pub(crate) const OFFSET_UNKNOWN: u32 = (1 << 24) - 1;
/// Version 2 block numbers are 24 bits; a table with more blocks (> 64 GiB
/// at the default block size) is written without a hash index.
const MAX_BLOCKS_V2: usize = 1 << 24;
/// One bucket: 8 slots of 8 bytes, one cache line.
pub(crate) const BUCKET_BYTES: usize = 64;
const SLOTS_PER_BUCKET: usize = 8;
const SLOT_BYTES: usize = 8;
/// After the buckets: the bucket count (u32) and the version byte.
const TAIL_LEN: usize = 5;
/// Slots per key: 5/4, a load factor of 0.8 (a miss scans ~1.5 buckets'
/// worth of slots on average, nearly always within the home bucket's line
/// and the next).
const SLOTS_PER_KEY_NUM: u64 = 5;
const SLOTS_PER_KEY_DEN: u64 = 4;

/// A key's fingerprint: the low 16 bits of its hash, never 0 (empty).
fn fingerprint(hash: u64) -> u16 {
    (hash as u16).max(1)
}

/// A key's home bucket: the high half of its hash scaled to the bucket
/// count (multiply-shift, as the bloom filter picks its block).
fn home_bucket(hash: u64, buckets: usize) -> usize {
    (((hash >> 32) * buckets as u64) >> 32) as usize
}

/// Collects (hash, block, entry number, byte offset) for each user key
/// while a table is written. Gives up (no hash index for this table) when a
/// block number does not fit its slot field.
#[derive(Debug)]
pub(crate) struct HashIndexBuilder {
    keys: Vec<(u64, u32, u32)>,
    unfit: bool,
    /// The slot encoding to write: [`HASH_INDEX_VERSION`], or 1 in tests of
    /// tables written by older builds.
    version: u8,
}

impl Default for HashIndexBuilder {
    fn default() -> Self {
        HashIndexBuilder {
            keys: Vec::new(),
            unfit: false,
            version: HASH_INDEX_VERSION,
        }
    }
}

impl HashIndexBuilder {
    /// A builder writing version-1 slots (entry numbers), as builds before
    /// version 2 did.
    #[cfg(test)]
    pub(crate) fn version_1() -> Self {
        HashIndexBuilder {
            version: 1,
            ..Self::default()
        }
    }

    /// Adds a user key's newest version: entry number `entry` of data block
    /// `block`, starting `offset` bytes into the block's contents. Callers
    /// skip older versions of the previous key.
    pub(crate) fn add(&mut self, hash: u64, block: usize, entry: usize, offset: usize) {
        if self.unfit {
            return;
        }
        let at = if self.version == 1 {
            u16::try_from(entry).ok().map(u32::from)
        } else {
            Some(u32::try_from(offset).map_or(OFFSET_UNKNOWN, |o| o.min(OFFSET_UNKNOWN)))
        };
        let max_blocks = if self.version == 1 {
            1 << 32
        } else {
            MAX_BLOCKS_V2
        };
        match (u32::try_from(block).ok().filter(|_| block < max_blocks), at) {
            (Some(b), Some(at)) => self.keys.push((hash, b, at)),
            _ => {
                self.unfit = true;
                self.keys = Vec::new();
            }
        }
    }

    /// Buckets of the index [`HashIndexBuilder::finish`] would make now.
    fn buckets(&self) -> u64 {
        let slots = (self.keys.len() as u64 * SLOTS_PER_KEY_NUM).div_ceil(SLOTS_PER_KEY_DEN);
        slots.div_ceil(SLOTS_PER_BUCKET as u64).max(1)
    }

    /// The most the block [`HashIndexBuilder::finish`] would make now can
    /// take, stored (pad, buckets, tail and block trailer); 0 when it would
    /// write none.
    pub(crate) fn finished_len(&self) -> usize {
        if self.unfit {
            return 0;
        }
        (BUCKET_BYTES - 1)
            + self.buckets() as usize * BUCKET_BYTES
            + TAIL_LEN
            + super::block::V2_TRAILER_LEN
    }

    /// The block contents for a block whose payload starts at file offset
    /// `at`, or `None` when some key did not fit a slot.
    pub(crate) fn finish(&self, at: u64) -> Option<Vec<u8>> {
        if self.unfit {
            return None;
        }
        let bucket_count = u32::try_from(self.buckets()).ok()?;
        let buckets = bucket_count as usize;
        let pad = ((BUCKET_BYTES as u64 - at % BUCKET_BYTES as u64) % BUCKET_BYTES as u64) as usize;
        let mut out = vec![0u8; pad + buckets * BUCKET_BYTES + TAIL_LEN];
        let table = &mut out[pad..pad + buckets * BUCKET_BYTES];
        let total = buckets * SLOTS_PER_BUCKET;
        for &(hash, block, at) in &self.keys {
            // The load factor keeps a quarter of the slots empty, so the
            // scan finds one within `total` steps.
            let mut slot = home_bucket(hash, buckets) * SLOTS_PER_BUCKET;
            for _ in 0..total {
                let pos = slot * SLOT_BYTES;
                let cell = &mut table[pos..pos + SLOT_BYTES];
                if cell[..2] == [0, 0] {
                    let word = if self.version == 1 {
                        u64::from(fingerprint(hash)) | u64::from(at) << 16 | u64::from(block) << 32
                    } else {
                        u64::from(fingerprint(hash)) | u64::from(at) << 16 | u64::from(block) << 40
                    };
                    cell.copy_from_slice(&word.to_le_bytes());
                    break;
                }
                slot = (slot + 1) % total;
            }
        }
        let tail = pad + buckets * BUCKET_BYTES;
        out[tail..tail + 4].copy_from_slice(&bucket_count.to_le_bytes());
        out[tail + 4] = self.version;
        Some(out)
    }
}

/// Where the buckets lie within a hash index block's contents, once its
/// framing was checked.
#[derive(Debug, Clone)]
pub(crate) struct HashLayout {
    /// Byte range of the buckets within the contents.
    pub(crate) buckets: Range<usize>,
    /// The slot encoding (1 or 2).
    pub(crate) version: u8,
}

/// Checks the framing of `contents`: `Ok(None)` for a version this build
/// does not know (the table is read without its hash index), an error for
/// a known version whose sizes do not add up.
pub(crate) fn parse(contents: &[u8]) -> Result<Option<HashLayout>, String> {
    let tail_at = contents
        .len()
        .checked_sub(TAIL_LEN)
        .ok_or("hash index shorter than its tail")?;
    let mut tail = Reader::new(contents.get(tail_at..).unwrap_or_default());
    let (Some(count), Some(version)) = (tail.u32_le(), tail.u8()) else {
        return Err("hash index shorter than its tail".into());
    };
    if version != 1 && version != 2 {
        return Ok(None);
    }
    let bytes = (count as usize)
        .checked_mul(BUCKET_BYTES)
        .filter(|&b| count > 0 && b <= tail_at && tail_at - b < BUCKET_BYTES)
        .ok_or_else(|| {
            format!(
                "hash index of {count} buckets does not fit its {} bytes",
                contents.len()
            )
        })?;
    let pad = tail_at - bytes;
    Ok(Some(HashLayout {
        buckets: pad..tail_at,
        version,
    }))
}

/// The candidate slots for a key with hash `hash`, in the order the writer
/// placed them, ending at the first empty slot. `buckets` is the bucket
/// array of a `version` block (a multiple of 64 bytes, at least one bucket:
/// [`parse`] checked it).
pub(crate) fn probe(buckets: &[u8], version: u8, hash: u64) -> Probe<'_> {
    let count = buckets.len() / BUCKET_BYTES;
    let total = count * SLOTS_PER_BUCKET;
    Probe {
        buckets,
        v1: version == 1,
        fp: fingerprint(hash),
        slot: home_bucket(hash, count.max(1)) * SLOTS_PER_BUCKET,
        total,
        left: total,
    }
}

/// See [`probe`].
#[derive(Debug)]
pub(crate) struct Probe<'a> {
    buckets: &'a [u8],
    v1: bool,
    fp: u16,
    slot: usize,
    total: usize,
    /// Slots not yet looked at: a table whose every slot is full (only a
    /// damaged or foreign writer makes one) still ends the scan.
    left: usize,
}

/// What a slot says about the key: its data block, and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) block: u32,
    pub(crate) at: SlotAt,
}

/// Where in its block a slot's entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotAt {
    /// Entry number (version 1).
    Entry(u16),
    /// Byte offset in the block's contents (version 2).
    Offset(u32),
    /// Somewhere in the block (version 2, [`OFFSET_UNKNOWN`]).
    Search,
}

impl Iterator for Probe<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        while self.left > 0 {
            let at = self.slot * SLOT_BYTES;
            let word = self
                .buckets
                .get(at..at + SLOT_BYTES)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)?;
            self.left -= 1;
            self.slot = if self.slot + 1 == self.total {
                0
            } else {
                self.slot + 1
            };
            let fp = word as u16;
            if fp == 0 {
                self.left = 0;
                return None;
            }
            if fp == self.fp {
                return Some(if self.v1 {
                    Slot {
                        block: (word >> 32) as u32,
                        at: SlotAt::Entry((word >> 16) as u16),
                    }
                } else {
                    let offset = ((word >> 16) & 0xff_ffff) as u32;
                    Slot {
                        block: (word >> 40) as u32,
                        at: if offset == OFFSET_UNKNOWN {
                            SlotAt::Search
                        } else {
                            SlotAt::Offset(offset)
                        },
                    }
                });
            }
        }
        None
    }
}

/// The bytes of a bucket array of `len` bytes that a probe for `hash`
/// nearly always stays within: its home bucket and the next one (a probe
/// goes further only past two full buckets). For residency checks, which
/// must not touch the buckets before knowing their pages are in memory.
pub(crate) fn probe_span(len: usize, hash: u64) -> Range<usize> {
    let count = (len / BUCKET_BYTES).max(1);
    let home = home_bucket(hash, count);
    home * BUCKET_BYTES..((home + 2).min(count) * BUCKET_BYTES).min(len)
}

#[cfg(test)]
mod tests {
    use super::super::bloom::bloom_hash;
    use super::*;

    /// A version-2 block for (key, block, byte offset) triples.
    fn build(keys: &[(&[u8], u32, u32)], at: u64) -> Vec<u8> {
        let mut b = HashIndexBuilder::default();
        for (k, block, offset) in keys {
            b.add(bloom_hash(k), *block as usize, 0, *offset as usize);
        }
        b.finish(at).unwrap()
    }

    fn probe_all(contents: &[u8], hash: u64) -> Vec<Slot> {
        let l = parse(contents).unwrap().unwrap();
        probe(&contents[l.buckets], l.version, hash).collect()
    }

    #[test]
    fn every_key_is_found_and_absent_keys_rarely_match() {
        let keys: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| format!("key{i}").into_bytes())
            .collect();
        for version in [1u8, 2] {
            let mut b = if version == 1 {
                HashIndexBuilder::version_1()
            } else {
                HashIndexBuilder::default()
            };
            for (i, k) in keys.iter().enumerate() {
                b.add(bloom_hash(k), i / 100, i % 100, (i % 100) * 40);
            }
            for at in [0u64, 1, 63, 64, 4097] {
                let contents = b.finish(at).unwrap();
                let layout = parse(&contents).unwrap().unwrap();
                assert_eq!(layout.version, version);
                assert_eq!(
                    (at + layout.buckets.start as u64) % 64,
                    0,
                    "aligned at {at}"
                );
                let buckets = &contents[layout.buckets.clone()];
                // 20,000 keys × 5/4 slots = 25,000 slots = 3,125 buckets.
                assert_eq!(buckets.len(), 3_125 * 64);
                for (i, k) in keys.iter().enumerate() {
                    let want = Slot {
                        block: (i / 100) as u32,
                        at: if version == 1 {
                            SlotAt::Entry((i % 100) as u16)
                        } else {
                            SlotAt::Offset((i % 100) as u32 * 40)
                        },
                    };
                    assert!(
                        probe(buckets, version, bloom_hash(k)).any(|s| s == want),
                        "{i}"
                    );
                    let span = probe_span(buckets.len(), bloom_hash(k));
                    assert!(span.start.is_multiple_of(64) && span.end <= buckets.len());
                    assert!(span.len() == 64 || span.len() == 128);
                }
                let false_matches: usize = (0..100_000u32)
                    .map(|i| {
                        probe(buckets, version, bloom_hash(format!("other{i}").as_bytes())).count()
                    })
                    .sum();
                // ~8 slots looked at per miss, 1/65535 each: ~12 expected.
                assert!(false_matches < 60, "{false_matches}");
            }
        }
    }

    #[test]
    fn layout_follows_the_spec() {
        // One key: 2 slots -> 1 bucket. "key/0001" hashes to
        // 0x3ded6935abe8ec9d (docs/format-table.md): fingerprint 0xec9d,
        // home bucket 0 of 1. Payload at file offset 10: 54 bytes of padding.
        // Version 2: its newest version starts 0x0123 bytes into block 7.
        let c = build(&[(b"key/0001", 7, 0x0123)], 10);
        assert_eq!(c.len(), 54 + 64 + 5);
        assert!(c[..54].iter().all(|&b| b == 0));
        assert_eq!(&c[54..62], &[0x9d, 0xec, 0x23, 0x01, 0, 7, 0, 0]);
        assert!(c[62..118].iter().all(|&b| b == 0));
        assert_eq!(&c[118..], &[1, 0, 0, 0, 2]);
        // Version 1 (older builds): entry 3 of block 7.
        let mut b = HashIndexBuilder::version_1();
        b.add(bloom_hash(b"key/0001"), 7, 3, 0x0123);
        let c = b.finish(10).unwrap();
        assert_eq!(&c[54..62], &[0x9d, 0xec, 3, 0, 7, 0, 0, 0]);
        assert_eq!(&c[118..], &[1, 0, 0, 0, 1]);
        assert_eq!(
            probe_all(&c, bloom_hash(b"key/0001")),
            [Slot {
                block: 7,
                at: SlotAt::Entry(3)
            }]
        );
        // An empty table: one empty bucket answers "absent" for everything.
        let c = HashIndexBuilder::default().finish(0).unwrap();
        assert!(probe_all(&c, bloom_hash(b"k")).is_empty());
    }

    #[test]
    fn unknown_versions_are_ignored_and_bad_sizes_refused() {
        let mut c = build(&[(b"a", 0, 0)], 0);
        let last = c.len() - 1;
        for unknown in [0u8, 3, 255] {
            c[last] = unknown;
            assert!(parse(&c).unwrap().is_none(), "{unknown}");
        }
        for known in [1u8, 2] {
            c[last] = known;
            assert_eq!(parse(&c).unwrap().unwrap().version, known);
        }
        // Bucket count larger than the block, zero, or leaving >= 64 bytes
        // of padding.
        for count in [0u32, 2, u32::MAX] {
            let mut bad = c.clone();
            bad[last - 4..last].copy_from_slice(&count.to_le_bytes());
            assert!(parse(&bad).is_err(), "{count}");
        }
        let mut padded = vec![0u8; 64];
        padded.extend_from_slice(&c);
        assert!(parse(&padded).is_err());
        assert!(parse(&[1, 0, 0, 0]).is_err());
    }

    #[test]
    fn far_offsets_say_search_and_too_many_blocks_give_up() {
        let key = b"key/0001";
        for (offset, want) in [
            (0usize, SlotAt::Offset(0)),
            (
                OFFSET_UNKNOWN as usize - 1,
                SlotAt::Offset(OFFSET_UNKNOWN - 1),
            ),
            (OFFSET_UNKNOWN as usize, SlotAt::Search),
            (usize::MAX, SlotAt::Search),
        ] {
            let mut b = HashIndexBuilder::default();
            b.add(bloom_hash(key), MAX_BLOCKS_V2 - 1, 70_000, offset);
            let c = b.finish(0).unwrap();
            let block = (MAX_BLOCKS_V2 - 1) as u32;
            assert_eq!(
                probe_all(&c, bloom_hash(key)),
                [Slot { block, at: want }],
                "{offset}"
            );
        }
        let mut b = HashIndexBuilder::default();
        b.add(1, MAX_BLOCKS_V2, 0, 0);
        assert!(b.finish(0).is_none());
        // Version 1: entry numbers are 16 bits, blocks 32.
        let mut b = HashIndexBuilder::version_1();
        b.add(1, 0, 65_535, 0);
        assert!(b.finish(0).is_some());
        b.add(2, 0, 65_536, 0);
        assert!(b.finish(0).is_none());
        let mut b = HashIndexBuilder::version_1();
        b.add(1, u32::MAX as usize + 1, 0, 0);
        assert!(b.finish(0).is_none());
    }

    #[test]
    fn a_full_table_ends_the_probe() {
        // Every slot holding the same fingerprint (only damage or another
        // writer makes this): the probe stops after one pass.
        let mut c = vec![0u8; 64];
        for s in c.chunks_exact_mut(8) {
            s.copy_from_slice(&(0xec9du64 | 5 << 40).to_le_bytes());
        }
        assert_eq!(probe(&c, 2, bloom_hash(b"key/0001")).count(), 8);
        assert_eq!(probe(&c, 1, bloom_hash(b"key/0001")).count(), 8);
        assert_eq!(probe_span(c.len(), bloom_hash(b"key/0001")), 0..64);
    }
}
