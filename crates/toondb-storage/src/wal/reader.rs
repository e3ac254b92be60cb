//! Recovery: replaying segments and deciding which damage is a torn tail
//! (a crash mid-append, or unsynced writes a power cut lost, safe to drop)
//! and which is corruption (must fail). Version-2 segments carry sync
//! points that tell the two apart (entry.rs); version-1 segments keep the
//! stricter rule they were written under. Version-4 segments also record
//! when an older segment's background sync finished, which makes damage
//! in that segment corruption again.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::record::{read_frame, Frame, FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD};

use super::entry::{self, highest_claim_after, highest_segment_synced, Entry, Predecessor};

use super::{
    check_header, segment_file_name, WalWriter, SEGMENT_HEADER_LEN, SEGMENT_VERSION,
    SEGMENT_VERSION_V1, SEGMENT_VERSION_V3,
};

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Segments replayed.
    pub segments: usize,
    /// Records passed to `apply`.
    pub records: u64,
    /// Framed size (8-byte frame header + payload) of those records; segment
    /// headers, sync points and zero padding are not counted.
    pub bytes: u64,
    /// The torn end of the last segment, if there was one; it has been cut off
    /// (or, for a torn segment header, the header rewritten).
    pub dropped_tail: Option<DroppedTail>,
    /// Where the records of the last segment replayed end (after any cut):
    /// the `end` a segment created after it names in its predecessor
    /// record ([`replay_deferring_sync`]).
    pub records_end: u64,
    /// The format version of the last segment replayed.
    pub last_version: u32,
    /// Each segment replayed, with where its records end (after any cut).
    pub segment_ends: Vec<(u64, u64)>,
    /// Where the last segment's final durable mark ends (a sync point
    /// claiming every byte before it, which the writer syncs too: a clean
    /// close), 0 if it has none.
    pub marked_end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedTail {
    pub segment: u64,
    /// File offset (counting the segment header) where the dropped bytes began.
    pub offset: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// Replays segments `numbers` (ascending) from `dir`, calling
/// `apply(payload)` for every valid record in order, and makes each
/// replayed segment durable before the next is read. If `apply` returns
/// Err, stop and return that error.
pub fn replay(
    fs: &dyn FileSystem,
    dir: &Path,
    numbers: &[u64],
    how: SegmentRead,
    mut apply: impl FnMut(&[u8]) -> Result<()>,
) -> Result<ReplayReport> {
    replay_inner(fs, dir, numbers, how, |p, _| apply(p), true, &|| Ok(())).map(|(report, _)| report)
}

/// [`replay`] for an open, which must not wait for the device: the
/// replayed segments are not synced here. The segments are mapped
/// ([`SegmentRead::Map`]), and `apply` is lent, with each payload, the
/// mapped segment it lies in, so the open can build its memtable's
/// versions over the segment's bytes instead of copying them
/// (`Memtable::replay_record`): the open holds the directory lock, and
/// nothing rewrites a replayed segment's records while it is mapped
/// (replay cuts a torn tail only after the last record it passed on; the
/// open then appends to a new segment). Returns, with the report, what
/// the segment the open creates next must name as its predecessor: the
/// last replayed segment and where its records end, so that a power cut
/// before that segment is synced reads as a lost tail of an unsynced
/// segment (docs/format-wal.md, *Replay*, *Open*). The caller syncs the
/// segments, oldest first, before anything newer is synced.
///
/// `None` when there is nothing to name, and every replayed segment is
/// then durable on return: no segment replayed; the last one is older
/// than version 3 or a torn segment that was not the last made replay
/// drop the later ones (rare paths that sync every segment here as
/// [`replay`] does); or the last one ends in a close's durable mark
/// (synced here: the mark itself may not be durable yet).
///
/// `before_repair` runs before replay changes any file (cuts a torn
/// tail, rewrites a torn header, empties segments); its error stops
/// replay there. The open waits there for its tables: a failed open
/// changes no file.
pub(crate) fn replay_deferring_sync(
    fs: &dyn FileSystem,
    dir: &Path,
    numbers: &[u64],
    apply: impl FnMut(&[u8], Option<&MappedSegment>) -> Result<()>,
    before_repair: &dyn Fn() -> Result<()>,
) -> Result<(ReplayReport, Option<Predecessor>)> {
    replay_inner(
        fs,
        dir,
        numbers,
        SegmentRead::Map,
        apply,
        false,
        before_repair,
    )
}

/// A segment's mapped bytes, shared with what replay built over them.
pub(crate) type MappedSegment = std::sync::Arc<dyn crate::io::FileBytes>;

fn replay_inner(
    fs: &dyn FileSystem,
    dir: &Path,
    numbers: &[u64],
    how: SegmentRead,
    mut apply: impl FnMut(&[u8], Option<&MappedSegment>) -> Result<()>,
    sync_each: bool,
    before_repair: &dyn Fn() -> Result<()>,
) -> Result<(ReplayReport, Option<Predecessor>)> {
    if numbers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::invalid_argument(format!(
            "WAL segments to replay must be strictly ascending, got {numbers:?}"
        )));
    }
    let mut report = ReplayReport::default();
    for (i, &number) in numbers.iter().enumerate() {
        let later = &numbers[i + 1..];
        let ended = replay_segment(
            fs,
            dir,
            &numbers[i..],
            how,
            &mut apply,
            &mut report,
            before_repair,
        )?;
        report.segment_ends.push((number, report.records_end));
        if sync_each {
            sync_segment(fs, dir, number)?;
        }
        report.segments += 1;
        if ended == Ended::TornBeforeLater {
            if !sync_each {
                for &m in &numbers[..=i] {
                    sync_segment(fs, dir, m)?;
                }
            }
            // The later segments were written after this one's lost bytes
            // and never synced: nothing in them may be replayed (it would
            // leave a hole in commit order). Emptied, not deleted: the
            // manifest's checkpoint may name one of them.
            for &m in later {
                WalWriter::create(fs, dir, m)?;
                report.segments += 1;
            }
            return Ok((report, None));
        }
    }
    let tail = match numbers.last() {
        // Only a version-3 segment may be followed by a newer one before
        // it is synced (older readers assume it was synced whole).
        //
        // Nor may the segments be left unsynced when one after the first
        // holds no record (an open killed before its first write, a crash
        // inside a seal after the new segment's header, or a torn first
        // group cut): the segment before it then
        // has no successor recording where it ended, so a power cut could
        // shorten it cleanly while the open's segment's records, written
        // after all of its, survive: a hole in commit order
        // (tests/review_revwal.rs). Rare; synced here as [`replay`] does.
        Some(_)
            if !sync_each
                && (report.last_version < SEGMENT_VERSION_V3
                    || report.segment_ends[1..]
                        .iter()
                        .any(|&(_, end)| end <= SEGMENT_HEADER_LEN as u64)) =>
        {
            for &m in numbers {
                sync_segment(fs, dir, m)?;
            }
            None
        }
        // Closed cleanly: durable up to the mark (`sync_and_mark` appends
        // it only after an fdatasync covering every byte before it, which
        // ran after every older segment's sync), and nothing was cut off.
        // The mark itself may still be only in the page cache (a process
        // killed between its append and its fdatasync, or that fdatasync
        // failed): synced here, so a power cut cannot tear it once a newer
        // segment says this one was durable whole. Little or nothing is
        // left to write.
        Some(&segment)
            if report.records_end == report.marked_end && report.dropped_tail.is_none() =>
        {
            if !sync_each {
                sync_segment(fs, dir, segment)?;
            }
            None
        }
        Some(&segment) if !sync_each => Some(Predecessor {
            segment,
            end: report.records_end,
        }),
        _ => None,
    };
    Ok((report, tail))
}

/// How a replayed segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Every record was applied, or the last segment's torn tail was cut.
    Complete,
    /// A segment that is not the last lost bytes it held when the next one
    /// was created (version 3: it may not have been synced yet); it was cut
    /// there, and every later segment must be dropped.
    TornBeforeLater,
}

/// What replay may assume about a segment, from the segment after it
/// (docs/format-wal.md, *Replay*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Successor {
    /// None: this is the last segment.
    Last,
    /// This segment was durable whole before the next one was created.
    SyncedBefore,
    /// The next segment was created before this one was synced (version
    /// 3); `end` is where this one ended then, when the next one says so.
    MaybeUnsynced { next: u64, end: Option<u64> },
}

/// What a segment starts with, after its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// A version-3 predecessor record.
    Predecessor(Predecessor),
    /// Another valid record: written without one (not by a version-3
    /// writer after an unsynced segment).
    OtherRecord,
    /// No valid record (empty, torn, damaged, or no valid header): nothing
    /// of the segment can be replayed.
    Nothing,
}

/// How segment `number` starts (see [`Head`]).
fn head_of(fs: &dyn FileSystem, dir: &Path, number: u64, how: SegmentRead) -> Result<Head> {
    let path = dir.join(segment_file_name(number));
    if !fs.exists(&path) {
        return Ok(Head::Nothing); // reported when that segment is replayed
    }
    let loaded = SegmentBytes::load_head(fs, &path, how)?;
    let data = loaded.bytes();
    if check_header(data).is_err() {
        return Ok(Head::Nothing);
    }
    Ok(match read_frame(&data[SEGMENT_HEADER_LEN..]) {
        Frame::Record { payload, .. } => match entry::decode(payload) {
            Ok(Entry::Predecessor(p)) => Head::Predecessor(p),
            _ => Head::OtherRecord,
        },
        _ => Head::Nothing,
    })
}

/// Makes a replayed segment durable. A process that was killed may have
/// left `sync: false` records in the OS page cache only; what replay read
/// is about to be served and built upon (a newer segment follows it), so a
/// power cut must not tear it afterwards unless the newer segment says it
/// may (its predecessor record): a torn segment that is not the last is
/// corruption otherwise, and losing it under later durable commits would
/// leave a hole in commit order (tests/model_powerloss.rs,
/// `kill_then_power_cut_tears_a_replayed_segment`). [`replay`] syncs each
/// segment before the next; an open uses [`replay_deferring_sync`] and
/// syncs them in the background instead.
pub(crate) fn sync_segment(fs: &dyn FileSystem, dir: &Path, number: u64) -> Result<()> {
    let path = dir.join(segment_file_name(number));
    fs.open_append(&path)
        .and_then(|mut file| file.sync_data())
        .map_err(|e| e.context(format_args!("syncing replayed WAL segment {number}")))
}

/// How replay gets a segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentRead {
    /// One `read` into a new buffer: for a segment a live writer may still
    /// extend (`Database::verify`).
    Copy,
    /// A memory map, advised will-need (the kernel reads it ahead in large
    /// requests): for an open, which holds the directory lock, so nothing
    /// else writes the segment. Replay cuts a torn tail off the file only
    /// after its last look at the mapped bytes. It saves copying the whole
    /// segment into fresh memory, whose page faults cost about as much as
    /// the copy (docs/performance.md, "Reopen").
    Map,
}

/// Readahead request size for a mapped segment: at most what the kernel
/// reads for one will-need request (its default readahead window).
const WILL_NEED_CHUNK: usize = 128 << 10;

/// A segment's bytes, read or mapped.
enum SegmentBytes {
    Read(Vec<u8>),
    Mapped(MappedSegment),
}

impl SegmentBytes {
    fn load(fs: &dyn FileSystem, path: &Path, how: SegmentRead) -> Result<SegmentBytes> {
        Ok(match how {
            SegmentRead::Copy => SegmentBytes::Read(fs.read(path)?),
            SegmentRead::Map => {
                let map = fs.map(path)?;
                // The whole segment is asked for up front, in chunks: the
                // kernel caps one will-need request at its readahead window
                // (128 KiB by default), and the map is advised random (no
                // readahead on page faults), so one request for the whole
                // segment left the rest to be read 4 KiB per fault: a cold
                // open after a 1 GiB load took 0.8-1.6 s instead of 0.2 s.
                // Table maps are advised random (no fault-around), which
                // made replay take one page fault per 4 KiB of the segment:
                // ~2,000 for 8 MB, a third of a warm replay's time
                // (docs/performance.md, "Reopen").
                map.advise_sequential();
                let len = map.bytes().len();
                for start in (0..len).step_by(WILL_NEED_CHUNK) {
                    map.will_need(start..len.min(start + WILL_NEED_CHUNK));
                }
                SegmentBytes::Mapped(map)
            }
        })
    }

    /// Enough of a segment for its header and predecessor record (a map
    /// is not read ahead; a copy reads the whole file).
    fn load_head(fs: &dyn FileSystem, path: &Path, how: SegmentRead) -> Result<SegmentBytes> {
        Ok(match how {
            SegmentRead::Copy => SegmentBytes::Read(fs.read(path)?),
            SegmentRead::Map => SegmentBytes::Mapped(fs.map(path)?),
        })
    }

    fn bytes(&self) -> &[u8] {
        match self {
            SegmentBytes::Read(v) => v,
            SegmentBytes::Mapped(m) => m.bytes(),
        }
    }

    fn mapped(&self) -> Option<&MappedSegment> {
        match self {
            SegmentBytes::Read(_) => None,
            SegmentBytes::Mapped(m) => Some(m),
        }
    }
}

fn replay_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    this_and_later: &[u64],
    how: SegmentRead,
    apply: &mut impl FnMut(&[u8], Option<&MappedSegment>) -> Result<()>,
    report: &mut ReplayReport,
    before_repair: &dyn Fn() -> Result<()>,
) -> Result<Ended> {
    let Some((&number, later)) = this_and_later.split_first() else {
        return Err(Error::internal("replay_segment was given no segment"));
    };
    let is_last = later.is_empty();
    let path = dir.join(segment_file_name(number));
    if !fs.exists(&path) {
        return Err(Error::corruption(format!(
            "WAL segment {number} ({}) is missing",
            path.display()
        )));
    }
    let loaded = SegmentBytes::load(fs, &path, how)?;
    let data = loaded.bytes();

    if is_last && is_torn_creation(data) {
        // The writer syncs the header before appending anything, so a short
        // last segment is a crash during its creation and holds no records.
        // So is a last segment whose header is damaged but which holds
        // nothing after it: a power cut can persist the file's size before
        // its data, leaving the header's sector garbage or zeros.
        // Rewriting the header (rather than leaving the stub, or truncating it
        // to zero bytes) matters: the engine opens a newer segment after
        // recovery, and a headerless file that is no longer last would be
        // corruption on the next replay.
        before_repair()?;
        WalWriter::create(fs, dir, number)?;
        report.records_end = SEGMENT_HEADER_LEN as u64;
        report.last_version = SEGMENT_VERSION;
        report.dropped_tail = Some(DroppedTail {
            segment: number,
            offset: 0,
            dropped_bytes: data.len() as u64,
            reason: "torn segment header".to_owned(),
        });
        return Ok(Ended::Complete);
    }
    let version = check_header(data).map_err(|why| {
        Error::corruption(format!(
            "WAL segment {number}: bad header at offset 0: {why}"
        ))
    })?;
    report.last_version = version;
    report.marked_end = 0;
    let successor = match later.first() {
        None => Successor::Last,
        // Older writers synced a segment whole before creating the next.
        Some(_) if version < SEGMENT_VERSION_V3 => Successor::SyncedBefore,
        Some(&next) => match head_of(fs, dir, next, how)? {
            Head::Predecessor(p) if p.segment == 0 => Successor::SyncedBefore,
            Head::Predecessor(p) if p.segment == number => Successor::MaybeUnsynced {
                next,
                end: Some(p.end),
            },
            Head::Predecessor(p) => {
                return Err(Error::corruption(format!(
                    "WAL segment {next} names segment {} as the one before it, not {number}",
                    p.segment
                )))
            }
            Head::OtherRecord => Successor::SyncedBefore,
            // The next segment holds no valid record (the engine's first
            // group in it starts with the predecessor record), so none of
            // it can be replayed after a gap in this one: it may have been
            // created before this one was synced.
            Head::Nothing => Successor::MaybeUnsynced { next, end: None },
        },
    };
    let segment = Segment {
        fs,
        dir,
        path: &path,
        number,
        version,
        successor,
        later,
        how,
        data,
        mapped: loaded.mapped(),
        before_repair,
    };
    if version == SEGMENT_VERSION_V1 {
        segment.replay_v1(apply, report)?;
        Ok(Ended::Complete)
    } else {
        segment.replay_v2(apply, report)
    }
}

/// One segment's bytes being replayed.
struct Segment<'a> {
    fs: &'a dyn FileSystem,
    dir: &'a Path,
    path: &'a Path,
    number: u64,
    version: u32,
    successor: Successor,
    /// The segments after this one.
    later: &'a [u64],
    how: SegmentRead,
    data: &'a [u8],
    /// `data`'s mapping, when it is one (lent to `apply` with each payload).
    mapped: Option<&'a MappedSegment>,
    /// Runs before this segment is cut ([`replay_deferring_sync`]).
    before_repair: &'a dyn Fn() -> Result<()>,
}

impl Segment<'_> {
    fn is_last(&self) -> bool {
        self.successor == Successor::Last
    }

    /// Version 1: a payload is a bare batch, and damage followed by any
    /// valid record is corruption: without sync points, the reader cannot
    /// tell whether the damaged bytes were ever synced.
    fn replay_v1(
        &self,
        apply: &mut impl FnMut(&[u8], Option<&MappedSegment>) -> Result<()>,
        report: &mut ReplayReport,
    ) -> Result<()> {
        let mut pos = SEGMENT_HEADER_LEN;
        loop {
            let reason = match read_frame(&self.data[pos..]) {
                Frame::Record { payload, consumed } => {
                    apply(payload, self.mapped)?;
                    report.records += 1;
                    report.bytes += consumed as u64;
                    pos += consumed;
                    continue;
                }
                Frame::End => {
                    report.records_end = pos as u64;
                    return Ok(());
                }
                Frame::Truncated => "truncated record",
                Frame::Bad(why) => why,
            };
            let later = find_record_after(self.data, pos);
            if self.is_last() && later == Later::Nothing {
                // Nothing valid follows, so these bytes are the unfinished last
                // append. Cut them off so segments written after recovery do not
                // leave this damage in the middle of the log.
                return self.drop_tail(pos, reason.to_owned(), report);
            }
            let why_fatal = match later {
                Later::RecordAt(at) => format!("a valid record follows at offset {at}"),
                Later::Unknown => {
                    "too much data follows it to rule out a valid record after it".to_owned()
                }
                Later::Nothing => "it is not the last segment".to_owned(),
            };
            return Err(self.corruption(reason, pos, &why_fatal));
        }
    }

    /// Versions 2 and 3: payloads are batches or sync points (and, in
    /// version 3, a predecessor record first). Damage in the last segment,
    /// or in a version-3 segment the next one was created before it was
    /// synced, is a torn tail unless a sync point after it shows that the
    /// damaged bytes had been synced (docs/format-wal.md, *Replay*).
    fn replay_v2(
        &self,
        apply: &mut impl FnMut(&[u8], Option<&MappedSegment>) -> Result<()>,
        report: &mut ReplayReport,
    ) -> Result<Ended> {
        let mut pos = SEGMENT_HEADER_LEN;
        loop {
            let reason = match read_frame(&self.data[pos..]) {
                Frame::Record { payload, consumed } => {
                    match entry::decode(payload) {
                        Ok(Entry::Batch(batch)) => {
                            apply(batch, self.mapped)?;
                            report.records += 1;
                            report.bytes += consumed as u64;
                        }
                        Ok(Entry::SyncPoint(point)) => {
                            // Written by this segment's writer, at the end
                            // of the log: anything else is not damage a
                            // crash leaves but a wrong file or a bug.
                            if point.segment != self.number || point.synced_upto > pos as u64 {
                                return Err(Error::corruption(format!(
                                    "WAL segment {}: the sync point at offset {pos} names \
                                     segment {} and offset {}",
                                    self.number, point.segment, point.synced_upto
                                )));
                            }
                            if point.synced_upto == pos as u64 {
                                report.marked_end = (pos + consumed) as u64;
                            }
                        }
                        Ok(Entry::Predecessor(_))
                            if self.version >= SEGMENT_VERSION_V3 && pos == SEGMENT_HEADER_LEN => {}
                        Ok(Entry::Predecessor(_)) => {
                            return Err(Error::corruption(format!(
                                "WAL segment {}: a predecessor record at offset {pos}, \
                                 where none may be",
                                self.number
                            )))
                        }
                        Ok(Entry::SegmentSynced(synced))
                            if self.version >= SEGMENT_VERSION
                                && synced.segment < self.number
                                && synced.end > SEGMENT_HEADER_LEN as u64 => {}
                        Ok(Entry::SegmentSynced(synced)) => {
                            return Err(Error::corruption(format!(
                                "WAL segment {} (format version {}): a segment-synced record \
                                 at offset {pos} names segment {} and offset {}",
                                self.number, self.version, synced.segment, synced.end
                            )))
                        }
                        Err(why) => {
                            return Err(Error::corruption(format!(
                                "WAL segment {}: malformed record at offset {pos}: {why}",
                                self.number
                            )))
                        }
                    }
                    pos += consumed;
                    continue;
                }
                Frame::End => return self.clean_end(pos, report),
                Frame::Truncated => "truncated record",
                Frame::Bad(why) => why,
            };
            if self.successor == Successor::SyncedBefore {
                // Synced whole before a newer segment was created (at
                // rotation by writers before version 3, and by replay
                // before the open creates one), so no power cut can
                // damage it.
                return Err(self.corruption(reason, pos, "it is not the last segment"));
            }
            if let Some(synced) = self.recorded_synced()? {
                // At or before the end its sync covered: bytes that were
                // durable, which a power cut does not damage.
                if pos as u64 <= synced.end {
                    return Err(self.corruption(reason, pos, &synced.why()));
                }
            }
            let later = highest_claim_after(self.data, pos, self.number);
            if let Some((at, upto)) = later {
                if upto > pos as u64 {
                    let why = format!(
                        "the sync point at offset {at} shows that every byte before offset \
                         {upto} had been synced"
                    );
                    return Err(self.corruption(reason, pos, &why));
                }
            }
            // No sync point covers the damage, but that alone does not make
            // it unsynced: the last durable group's own sync point was
            // written before its sync. What a power cut leaves is lost
            // writes, and a lost write reads back as what the sector held
            // before it: for an append-only log, zeros from the first lost
            // byte to the sector's end. So valid records after the damage
            // are only allowed beyond such a zero run; a garbled frame
            // followed by valid ones is a media error, refused as version 1
            // refused it (docs/format-wal.md, *Replay*).
            let lost_from = lost_write_start(self.data, pos);
            let search_end = lost_from.unwrap_or(self.data.len());
            match find_record_between(self.data, pos, search_end) {
                Later::Nothing => {}
                Later::RecordAt(at) => {
                    let why = format!(
                        "a valid record follows at offset {at}, and no lost write (a zero-filled \
                         sector) explains the damage"
                    );
                    return Err(self.corruption(reason, pos, &why));
                }
                Later::Unknown => {
                    let why = "too much data follows it to rule out a valid record after it";
                    return Err(self.corruption(reason, pos, why));
                }
            }
            // Damage no sync point covers, shaped like a lost write: the
            // bytes from here on were written without a completed sync, and
            // a power cut may lose such pages in any order. Dropping them
            // with everything after them keeps the survivors a prefix in
            // commit order. (Every group starts with a sync point, so
            // finding one says that later writes survived and are dropped
            // too.)
            let reason = match later {
                None => reason.to_owned(),
                Some(_) => format!(
                    "{reason}, with unsynced records after it (dropped with it: a power \
                     cut can persist unsynced pages out of order)"
                ),
            };
            return self.cut_here(pos, reason, report);
        }
    }

    /// The records ended cleanly at `pos`. In a segment whose successor
    /// says it ended further on, the bytes in between were lost: a power
    /// cut before the (background) sync of this segment.
    fn clean_end(&self, pos: usize, report: &mut ReplayReport) -> Result<Ended> {
        report.records_end = pos as u64;
        let Successor::MaybeUnsynced {
            next,
            end: Some(end),
        } = self.successor
        else {
            return Ok(Ended::Complete);
        };
        let pos64 = pos as u64;
        if pos64 > end {
            return Err(self.corruption(
                "records past the end its successor recorded",
                pos,
                &format!("segment {next} says this segment ended at offset {end}"),
            ));
        }
        if pos64 == end {
            return Ok(Ended::Complete);
        }
        if let Some(synced) = self.recorded_synced()? {
            if pos64 < synced.end {
                let reason = format!(
                    "records end early (segment {next} says this segment ended at offset {end})"
                );
                return Err(self.corruption(&reason, pos, &synced.why()));
            }
        }
        let reason = format!(
            "lost write: segment {next} says this segment ended at offset {end}, \
             and it holds records only up to here"
        );
        self.cut_here(pos, reason, report)
    }

    /// The highest end through which a later segment records that this
    /// segment's background sync had finished (segment-synced records,
    /// version 4), if any does. Only asked on the damage path of a segment
    /// that may be unsynced, so an intact log is not scanned for it.
    fn recorded_synced(&self) -> Result<Option<RecordedSync>> {
        let mut best: Option<RecordedSync> = None;
        for &m in self.later {
            let path = self.dir.join(segment_file_name(m));
            if !self.fs.exists(&path) {
                continue;
            }
            let loaded = SegmentBytes::load(self.fs, &path, self.how)?;
            if let Some((at, end)) = highest_segment_synced(loaded.bytes(), self.number) {
                if best.is_none_or(|b| end > b.end) {
                    best = Some(RecordedSync {
                        segment: m,
                        at,
                        end,
                    });
                }
            }
        }
        Ok(best)
    }

    /// Drops everything from `pos` on: the tail of this segment and, when
    /// it is not the last, every later segment (whose records were written
    /// after the lost ones, and are dropped so the survivors stay a prefix
    /// in commit order). Refused when a later segment shows a completed
    /// sync: the writer syncs a segment only once every earlier one was
    /// synced, so this one's bytes were durable and a power cut cannot
    /// have lost them.
    fn cut_here(&self, pos: usize, reason: String, report: &mut ReplayReport) -> Result<Ended> {
        if self.is_last() {
            self.drop_tail(pos, reason, report)?;
            return Ok(Ended::Complete);
        }
        let mut later_bytes = 0u64;
        for &m in self.later {
            let path = self.dir.join(segment_file_name(m));
            if !self.fs.exists(&path) {
                continue;
            }
            let loaded = SegmentBytes::load(self.fs, &path, self.how)?;
            let data = loaded.bytes();
            later_bytes += data.len().saturating_sub(SEGMENT_HEADER_LEN) as u64;
            if let Some((at, upto)) = highest_claim_after(data, SEGMENT_HEADER_LEN - 1, m) {
                if upto > SEGMENT_HEADER_LEN as u64 {
                    let why = format!(
                        "segment {m} was synced (its sync point at offset {at} claims \
                         offset {upto}), and segments are synced in order"
                    );
                    return Err(self.corruption(&reason, pos, &why));
                }
            }
        }
        let reason = format!(
            "{reason}; the {} newer segment(s) after it were written before it was \
             synced and are dropped with it ({later_bytes} bytes)",
            self.later.len()
        );
        self.drop_tail(pos, reason, report)?;
        Ok(Ended::TornBeforeLater)
    }

    /// Cuts the segment at `pos` (so segments written after recovery do not
    /// leave this damage in the middle of the log) and reports the drop.
    fn drop_tail(&self, pos: usize, reason: String, report: &mut ReplayReport) -> Result<()> {
        (self.before_repair)()?;
        self.fs.truncate(self.path, pos as u64)?;
        report.records_end = pos as u64;
        report.dropped_tail = Some(DroppedTail {
            segment: self.number,
            offset: pos as u64,
            dropped_bytes: (self.data.len() - pos) as u64,
            reason,
        });
        Ok(())
    }

    fn corruption(&self, reason: &str, pos: usize, why_fatal: &str) -> Error {
        Error::corruption(format!(
            "WAL segment {}: {reason} at offset {pos} ({why_fatal})",
            self.number
        ))
    }
}

/// A later segment's record that this segment was synced (see
/// [`Segment::recorded_synced`]).
#[derive(Debug, Clone, Copy)]
struct RecordedSync {
    /// The later segment holding the record, and the record's offset.
    segment: u64,
    at: usize,
    /// Every byte before it was durable.
    end: u64,
}

impl RecordedSync {
    fn why(&self) -> String {
        format!(
            "segment {} records at offset {} that this segment had been synced through \
             offset {}: the damage is not a lost unsynced write but damage to durable bytes",
            self.segment, self.at, self.end
        )
    }
}

/// Whether a segment's bytes are what a crash during its creation leaves:
/// shorter than a header, or an invalid header followed only by zeros (so
/// no record was ever appended: records follow a durable, valid header).
fn is_torn_creation(data: &[u8]) -> bool {
    match data.get(SEGMENT_HEADER_LEN..) {
        None => true,
        Some(rest) => check_header(data).is_err() && rest.iter().all(|&b| b == 0),
    }
}

/// Devices write whole sectors atomically (docs/format-wal.md, *Limits*):
/// the unit in which a power cut loses writes.
const SECTOR: usize = 512;

/// The first offset at or after `bad` from which the rest of its sector
/// (or of the file, if that ends first) holds only zero bytes: where a
/// write a power cut lost can begin. A lost write leaves what the sector
/// held before it, and an append-only segment holds zeros (never written,
/// or preallocated) past the bytes written so far. `None` if there is none.
fn lost_write_start(data: &[u8], bad: usize) -> Option<usize> {
    let mut at = bad;
    while at < data.len() {
        let end = ((at / SECTOR + 1) * SECTOR).min(data.len());
        if data[at..end].iter().all(|&b| b == 0) {
            return Some(at);
        }
        at = end;
    }
    None
}

/// The first offset after `bad` at which a valid record starts, if any.
fn find_record_after(data: &[u8], bad: usize) -> Later {
    find_record_between(data, bad, data.len())
}

/// The first offset in `bad + 1 .. until` at which a valid record starts
/// (it may run past `until`), if any.
///
/// Probes every byte offset, so that damage anywhere (a flipped length, a
/// zeroed block) cannot hide a committed record behind it. Only runs on the
/// error path. The length pre-check skips offsets that cannot hold a record
/// without calling `read_frame`, whose all-zero scan would make long zero runs
/// quadratic.
fn find_record_between(data: &[u8], bad: usize, until: usize) -> Later {
    let Some(start) = bad.checked_add(1) else {
        return Later::Nothing;
    };
    let Some(last_start) = data.len().checked_sub(FRAME_HEADER_LEN + 1) else {
        return Later::Nothing;
    };
    let last_start = last_start.min(until.saturating_sub(1));
    let mut budget = SCAN_CHECKSUM_BUDGET;
    for at in start..=last_start {
        let len_bytes = [data[at + 4], data[at + 5], data[at + 6], data[at + 7]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let fits = len <= data.len() - at - FRAME_HEADER_LEN;
        if len == 0 || len > MAX_FRAME_PAYLOAD || !fits {
            continue;
        }
        // Random bytes after damage early in a large segment look like
        // plausible lengths at many offsets; checksumming each could take
        // hours. Past the budget the answer is "cannot tell", which is
        // treated as corruption, never as a droppable tail.
        budget = match budget.checked_sub(len) {
            Some(left) => left,
            None => return Later::Unknown,
        };
        if matches!(read_frame(&data[at..]), Frame::Record { .. }) {
            return Later::RecordAt(at);
        }
    }
    Later::Nothing
}

/// What follows a bad record in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Later {
    Nothing,
    RecordAt(usize),
    /// The scan gave up (see `SCAN_CHECKSUM_BUDGET`).
    Unknown,
}

/// Bytes the search for a record after damage may checksum in total.
const SCAN_CHECKSUM_BUDGET: usize = 4 << 30;

#[cfg(test)]
mod tests_v3;
#[cfg(test)]
mod tests_v4;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::error::ErrorKind;
    use crate::io::OsFileSystem;
    use crate::record::encode_frame;
    use crate::wal::entry::{SyncPoint, SYNC_POINT_FRAME_LEN};

    const FS: &OsFileSystem = &OsFileSystem;

    fn payload(segment: u64, i: usize) -> Vec<u8> {
        // Varying lengths, including ones long enough to hold small
        // little-endian integers that look like plausible frame lengths.
        let mut p = format!("seg{segment}-rec{i}-").into_bytes();
        p.extend((0..(i * 7) % 300).map(|j| (j % 251) as u8));
        p
    }

    /// How a test log is written.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Format {
        /// Version 1, by hand: bare batch payloads, no sync points.
        V1,
        /// Version 2 by `WalWriter`, one commit group per record (sync
        /// point, batch); `sync_each` syncs after every group, so each
        /// group's sync point claims every record before it.
        V2 { sync_each: bool },
    }
    use Format::V1;
    const V2_SYNCED: Format = Format::V2 { sync_each: true };
    const V2_UNSYNCED: Format = Format::V2 { sync_each: false };
    const ALL_FORMATS: [Format; 3] = [V1, V2_SYNCED, V2_UNSYNCED];

    fn v1_header() -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = super::super::encode_header();
        h[8..12].copy_from_slice(&SEGMENT_VERSION_V1.to_le_bytes());
        let crc = crc32fast::hash(&h[..12]);
        h[12..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Writes segments with the given record counts in version 1 (the
    /// tests of the strict rule); see [`write_log_as`].
    fn write_log(dir: &Path, segments: &[(u64, usize)]) -> (Vec<Vec<u8>>, Vec<Vec<u64>>) {
        write_log_as(dir, segments, V1)
    }

    /// Writes segments with the given record counts, each segment synced
    /// at its end; returns all payloads in order and, per segment, the
    /// file offset where each record's frame starts (in version 2, the
    /// batch frame after its group's sync point).
    fn write_log_as(
        dir: &Path,
        segments: &[(u64, usize)],
        format: Format,
    ) -> (Vec<Vec<u8>>, Vec<Vec<u64>>) {
        let mut all = Vec::new();
        let mut offsets = Vec::new();
        for &(number, count) in segments {
            let mut starts = Vec::new();
            match format {
                V1 => {
                    let mut bytes = v1_header().to_vec();
                    for i in 0..count {
                        let p = payload(number, i);
                        starts.push(bytes.len() as u64);
                        encode_frame(&p, &mut bytes);
                        all.push(p);
                    }
                    std::fs::write(path(dir, number), bytes).unwrap();
                }
                Format::V2 { sync_each } => {
                    let mut w = WalWriter::create(FS, dir, number).unwrap();
                    for i in 0..count {
                        let p = payload(number, i);
                        let mut group = Vec::new();
                        w.begin_group(&mut group);
                        starts.push(w.len() + group.len() as u64);
                        let start = entry::begin_batch_frame(&mut group);
                        group.extend_from_slice(&p);
                        entry::finish_batch_frame(&mut group, start);
                        w.append(&group).unwrap();
                        if sync_each {
                            w.sync().unwrap();
                        }
                        all.push(p);
                    }
                    w.sync().unwrap();
                }
            }
            offsets.push(starts);
        }
        (all, offsets)
    }

    fn collect(dir: &Path, numbers: &[u64]) -> Result<(Vec<Vec<u8>>, ReplayReport)> {
        let mut got = Vec::new();
        let report = replay(FS, dir, numbers, SegmentRead::Map, |p| {
            got.push(p.to_vec());
            Ok(())
        })?;
        Ok((got, report))
    }

    fn path(dir: &Path, number: u64) -> PathBuf {
        dir.join(segment_file_name(number))
    }

    fn flip_byte(dir: &Path, number: u64, offset: u64) {
        let p = path(dir, number);
        let mut data = std::fs::read(&p).unwrap();
        data[offset as usize] ^= 0x10;
        std::fs::write(&p, data).unwrap();
    }

    fn file_len(dir: &Path, number: u64) -> u64 {
        std::fs::metadata(path(dir, number)).unwrap().len()
    }

    #[test]
    fn empty_segment_list_gives_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let (got, report) = collect(dir.path(), &[]).unwrap();
        assert!(got.is_empty());
        assert_eq!(report, ReplayReport::default());
    }

    #[test]
    fn round_trip_many_records_over_several_segments() {
        for format in ALL_FORMATS {
            let dir = tempfile::tempdir().unwrap();
            let layout = [(3, 200), (4, 0), (7, 1), (12, 500)];
            let (written, _) = write_log_as(dir.path(), &layout, format);
            let (got, report) = collect(dir.path(), &[3, 4, 7, 12]).unwrap();
            assert_eq!(got, written, "{format:?}");
            assert_eq!(report.segments, 4);
            assert_eq!(report.records, 701);
            // Version 2 frames carry a kind byte; sync points are not counted.
            let kind_byte = usize::from(format != V1);
            let framed: u64 = written
                .iter()
                .map(|p| (p.len() + FRAME_HEADER_LEN + kind_byte) as u64)
                .sum();
            assert_eq!(report.bytes, framed, "{format:?}");
            assert_eq!(report.dropped_tail, None);
        }
    }

    /// A database written before version 2 is reopened by the new code:
    /// its version-1 segments replay, then the new segment is version 2.
    #[test]
    fn version_1_segments_followed_by_version_2_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut written, _) = write_log_as(dir.path(), &[(1, 30), (2, 5)], V1);
        let (newer, _) = write_log_as(dir.path(), &[(3, 20)], V2_UNSYNCED);
        written.extend(newer);
        let (got, report) = collect(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(got, written);
        assert_eq!((report.segments, report.records), (3, 55));
        assert_eq!(report.dropped_tail, None);
    }

    #[test]
    fn segments_must_be_strictly_ascending() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 1), (2, 1)]);
        for bad in [&[2u64, 1][..], &[1, 1]] {
            let err = collect(dir.path(), bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn truncated_last_record_at_every_cut_is_dropped() {
        for format in ALL_FORMATS {
            truncated_last_record_at_every_cut_is_dropped_in(format);
        }
    }

    fn truncated_last_record_at_every_cut_is_dropped_in(format: Format) {
        let dir = tempfile::tempdir().unwrap();
        let (written, offsets) = write_log_as(dir.path(), &[(1, 5), (2, 40)], format);
        let full = file_len(dir.path(), 2);
        let last_start = *offsets[1].last().unwrap();
        let pristine = std::fs::read(path(dir.path(), 2)).unwrap();
        for cut in last_start + 1..full {
            std::fs::write(path(dir.path(), 2), &pristine[..cut as usize]).unwrap();
            let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
            assert_eq!(got, written[..written.len() - 1], "cut {cut}");
            assert_eq!(
                report.dropped_tail,
                Some(DroppedTail {
                    segment: 2,
                    offset: last_start,
                    dropped_bytes: cut - last_start,
                    reason: "truncated record".to_owned(),
                }),
                "cut {cut}"
            );
            assert_eq!(file_len(dir.path(), 2), last_start, "cut {cut}");

            let (again, report) = collect(dir.path(), &[1, 2]).unwrap();
            assert_eq!(again, got, "cut {cut}");
            assert_eq!(report.dropped_tail, None, "cut {cut}");
        }
    }

    #[test]
    fn bit_flip_in_last_record_is_dropped() {
        for format in ALL_FORMATS {
            bit_flip_in_last_record_is_dropped_in(format);
        }
    }

    fn bit_flip_in_last_record_is_dropped_in(format: Format) {
        let dir = tempfile::tempdir().unwrap();
        let (written, offsets) = write_log_as(dir.path(), &[(5, 10)], format);
        let last_start = offsets[0][9];
        let full = file_len(dir.path(), 5);
        // A payload byte: the checksum catches it.
        flip_byte(dir.path(), 5, full - 1);
        let (got, report) = collect(dir.path(), &[5]).unwrap();
        assert_eq!(got, written[..9]);
        let tail = report.dropped_tail.unwrap();
        assert_eq!((tail.segment, tail.offset), (5, last_start));
        assert_eq!(tail.dropped_bytes, full - last_start);
        assert_eq!(tail.reason, "checksum mismatch");
        assert_eq!(file_len(dir.path(), 5), last_start);
        assert_eq!(collect(dir.path(), &[5]).unwrap().1.dropped_tail, None);
    }

    /// Version 1 cannot tell synced from unsynced damage and refuses both;
    /// version 2 refuses damage that a later sync point shows was synced.
    #[test]
    fn bit_flip_in_middle_record_is_corruption() {
        for format in [V1, V2_SYNCED] {
            bit_flip_in_middle_record_is_corruption_in(format);
        }
    }

    fn bit_flip_in_middle_record_is_corruption_in(format: Format) {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log_as(dir.path(), &[(1, 3), (2, 10)], format);
        let victim = offsets[1][4];
        let before = file_len(dir.path(), 2);
        // Payload, checksum and length-field damage must all be caught.
        for at in [victim + FRAME_HEADER_LEN as u64, victim, victim + 6] {
            flip_byte(dir.path(), 2, at);
            let mut applied = 0;
            let err = replay(FS, dir.path(), &[1, 2], SegmentRead::Map, |_| {
                applied += 1;
                Ok(())
            })
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
            assert!(err.message().contains("segment 2"), "{err}");
            assert!(err.message().contains(&format!("offset {victim}")), "{err}");
            assert_eq!(applied, 3 + 4);
            assert_eq!(file_len(dir.path(), 2), before, "must not truncate");
            flip_byte(dir.path(), 2, at);
        }
    }

    #[test]
    fn valid_record_after_zeroed_gap_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log(dir.path(), &[(1, 6)]);
        let p = path(dir.path(), 1);
        let mut data = std::fs::read(&p).unwrap();
        // A lost block: records 2..4 read back as zeros, record 5 survives.
        let (from, to) = (offsets[0][2] as usize, offsets[0][5] as usize);
        data[from..to].fill(0);
        std::fs::write(&p, data).unwrap();
        let err = collect(dir.path(), &[1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains(&format!("offset {to}")), "{err}");
    }

    #[test]
    fn damage_in_non_last_segment_is_corruption() {
        for format in ALL_FORMATS {
            damage_in_non_last_segment_is_corruption_in(format);
        }
    }

    fn damage_in_non_last_segment_is_corruption_in(format: Format) {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log_as(dir.path(), &[(1, 4), (2, 4), (3, 4)], format);
        let pristine = std::fs::read(path(dir.path(), 2)).unwrap();

        // Torn end of segment 2: fine if it were last, fatal when it is not.
        let cut = offsets[1][3] as usize + 3;
        std::fs::write(path(dir.path(), 2), &pristine[..cut]).unwrap();
        let err = collect(dir.path(), &[1, 2, 3]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("segment 2"), "{err}");
        assert_eq!(file_len(dir.path(), 2), cut as u64, "must not truncate");

        std::fs::write(path(dir.path(), 2), &pristine).unwrap();
        flip_byte(dir.path(), 2, offsets[1][3] + 9);
        let err = collect(dir.path(), &[1, 2, 3]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn zero_filled_tail_is_clean() {
        for format in ALL_FORMATS {
            zero_filled_tail_is_clean_in(format);
        }
    }

    fn zero_filled_tail_is_clean_in(format: Format) {
        let dir = tempfile::tempdir().unwrap();
        let (written, _) = write_log_as(dir.path(), &[(1, 3), (2, 3)], format);
        for number in [1, 2] {
            let p = path(dir.path(), number);
            let mut data = std::fs::read(&p).unwrap();
            data.resize(data.len() + 4096, 0);
            std::fs::write(&p, data).unwrap();
        }
        let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
        assert_eq!(got, written);
        assert_eq!(report.dropped_tail, None);
    }

    #[test]
    fn header_only_segment_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 0)]);
        let (got, report) = collect(dir.path(), &[1]).unwrap();
        assert!(got.is_empty());
        assert_eq!(report.segments, 1);
        assert_eq!(report.dropped_tail, None);
    }

    #[test]
    fn bad_header_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 2), (2, 2)]);
        // Magic, version (checksum then fails too) and checksum bytes.
        for (number, at) in [(1, 0), (2, 0), (2, 9), (2, 14)] {
            flip_byte(dir.path(), number, at);
            let err = collect(dir.path(), &[1, 2]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
            assert!(
                err.message().contains(&format!("segment {number}")),
                "{err}"
            );
            assert!(err.message().contains("header"), "{err}");
            flip_byte(dir.path(), number, at);
        }
        assert!(collect(dir.path(), &[1, 2]).is_ok());
    }

    /// A power cut can persist a new segment's size before its header:
    /// garbage or zeros where the header should be, nothing after it.
    #[test]
    fn damaged_header_with_nothing_after_in_last_segment_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (written, _) = write_log(dir.path(), &[(1, 3), (2, 0)]);
        let garbage: Vec<u8> = (0..SEGMENT_HEADER_LEN as u8)
            .map(|b| b.wrapping_mul(37))
            .collect();
        for (bytes, zeros_after) in [(garbage.clone(), 0), (vec![0; 16], 4080), (garbage, 100)] {
            let mut file = bytes.clone();
            file.resize(file.len() + zeros_after, 0);
            std::fs::write(path(dir.path(), 2), &file).unwrap();
            let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
            assert_eq!(got, written);
            let tail = report.dropped_tail.unwrap();
            assert_eq!((tail.segment, tail.offset), (2, 0));
            assert_eq!(tail.reason, "torn segment header");
            assert_eq!(file_len(dir.path(), 2), SEGMENT_HEADER_LEN as u64);
        }
        // Not last, or with a byte after the header: corruption.
        let mut file = vec![0xEEu8; SEGMENT_HEADER_LEN];
        std::fs::write(path(dir.path(), 1), &file).unwrap();
        assert!(collect(dir.path(), &[1, 2]).is_err());
        write_log(dir.path(), &[(1, 3), (2, 0)]);
        file.push(1);
        std::fs::write(path(dir.path(), 2), &file).unwrap();
        assert!(collect(dir.path(), &[1, 2]).is_err());
    }

    #[test]
    fn short_header_in_non_last_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 0), (2, 2)]);
        std::fs::write(path(dir.path(), 1), b"TOONWAL").unwrap();
        let err = collect(dir.path(), &[1, 2]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
    }

    #[test]
    fn torn_header_in_last_segment_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (written, _) = write_log(dir.path(), &[(1, 3)]);
        // Rewritten in the current version, whatever the log before it.
        write_log_as(dir.path(), &[(2, 0)], V2_UNSYNCED);
        let header = std::fs::read(path(dir.path(), 2)).unwrap();
        assert_eq!(header, super::super::encode_header());
        for cut in 0..SEGMENT_HEADER_LEN {
            std::fs::write(path(dir.path(), 2), &header[..cut]).unwrap();
            let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
            assert_eq!(got, written);
            let tail = report.dropped_tail.unwrap();
            assert_eq!((tail.segment, tail.offset), (2, 0));
            assert_eq!(tail.dropped_bytes, cut as u64);
            assert_eq!(tail.reason, "torn segment header");
            assert_eq!(std::fs::read(path(dir.path(), 2)).unwrap(), header);
            // No longer last once the engine opens a new segment: still clean.
            write_log(dir.path(), &[(3, 1)]);
            let (_, report) = collect(dir.path(), &[1, 2, 3]).unwrap();
            assert_eq!(report.dropped_tail, None);
        }
    }

    #[test]
    fn missing_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 2), (3, 2)]);
        for numbers in [&[1u64, 2, 3][..], &[1, 3, 4]] {
            let err = collect(dir.path(), numbers).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption);
            assert!(err.message().contains("missing"), "{err}");
        }
    }

    #[test]
    fn apply_error_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 10)]);
        let mut calls = 0;
        let err = replay(FS, dir.path(), &[1], SegmentRead::Map, |_| {
            calls += 1;
            if calls == 4 {
                return Err(Error::internal("memtable full"));
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(calls, 4);
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert_eq!(err.message(), "memtable full");
    }

    #[test]
    fn find_record_after_probes_every_offset() {
        let mut data = vec![0xEEu8; 37];
        assert_eq!(find_record_after(&data, 0), Later::Nothing);
        encode_frame(b"x", &mut data);
        assert_eq!(find_record_after(&data, 0), Later::RecordAt(37));
        assert_eq!(find_record_after(&data, 37), Later::Nothing);
        assert_eq!(find_record_after(&[], 0), Later::Nothing);
        // Long zero runs stay cheap (no quadratic all-zero scans).
        let zeros = vec![0u8; 8 << 20];
        assert_eq!(find_record_after(&zeros, 0), Later::Nothing);
    }

    #[test]
    fn find_record_after_gives_up_on_huge_plausible_garbage() {
        // Every offset claims a 1 MiB record that fits: checksumming them
        // all would cost terabytes; the scan must stop and say "unknown".
        let mut data = Vec::new();
        while data.len() < (64 << 20) {
            data.extend_from_slice(&[0x55, 0x55, 0x55, 0x55, 0x00, 0x00, 0x10, 0x00]);
        }
        assert_eq!(find_record_after(&data, 0), Later::Unknown);
    }

    /// Writes one version-2 commit group holding `p` and returns where its
    /// batch frame starts.
    fn append_group(w: &mut WalWriter, p: &[u8], sync: bool) -> u64 {
        let mut group = Vec::new();
        w.begin_group(&mut group);
        let at = w.len() + group.len() as u64;
        let start = entry::begin_batch_frame(&mut group);
        group.extend_from_slice(p);
        entry::finish_batch_frame(&mut group, start);
        if sync {
            w.append_durable(&group).unwrap();
        } else {
            w.append(&group).unwrap();
        }
        at
    }

    fn zero_range(dir: &Path, number: u64, from: u64, to: u64) {
        let p = path(dir, number);
        let mut data = std::fs::read(&p).unwrap();
        data[from as usize..to as usize].fill(0);
        std::fs::write(&p, data).unwrap();
    }

    /// The defect version 2 fixes: unsynced pages written back out of
    /// order leave a hole with valid records after it. A lost write reads
    /// back as what its sectors held before it: zeros from its first byte
    /// to the sector's end. Nothing there was synced, so it is a torn tail:
    /// the hole and everything after it are dropped, and a second replay
    /// is clean.
    #[test]
    fn unsynced_damage_with_valid_records_after_it_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (written, offsets) = write_log_as(dir.path(), &[(1, 3), (2, 12)], V2_UNSYNCED);
        let group = offsets[1][4] - SYNC_POINT_FRAME_LEN as u64;
        let sector_end = (group / 512 + 1) * 512;
        assert!(sector_end < offsets[1][11], "valid records follow the hole");
        zero_range(dir.path(), 2, group, sector_end);
        let full = file_len(dir.path(), 2);
        let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
        assert_eq!(got, written[..3 + 4]);
        let tail = report.dropped_tail.unwrap();
        assert_eq!((tail.segment, tail.offset), (2, group));
        assert_eq!(tail.dropped_bytes, full - group);
        assert!(
            tail.reason.contains("unsynced records after it"),
            "{tail:?}"
        );
        assert_eq!(file_len(dir.path(), 2), group);
        let (again, report) = collect(dir.path(), &[1, 2]).unwrap();
        assert_eq!((again, report.dropped_tail), (got, None));
    }

    /// A lost write can also begin at a sector boundary inside a frame
    /// (the frame's first sector survived): a torn tail too.
    #[test]
    fn a_lost_sector_inside_a_frame_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log_as(dir.path(), &[(3, 40)], V2_UNSYNCED);
        // The first record whose frame crosses a sector boundary.
        let (i, boundary) = (1..39)
            .find_map(|i| {
                let boundary = (offsets[0][i] / 512 + 1) * 512;
                let next_group = offsets[0][i + 1] - SYNC_POINT_FRAME_LEN as u64;
                (boundary < next_group).then_some((i, boundary))
            })
            .unwrap();
        assert!(boundary + 512 < offsets[0][39], "valid records follow");
        zero_range(dir.path(), 3, boundary, boundary + 512);
        let (got, report) = collect(dir.path(), &[3]).unwrap();
        assert_eq!(got.len(), i);
        assert_eq!(report.dropped_tail.unwrap().offset, offsets[0][i]);
    }

    /// A garbled byte with valid records after it is not what a lost write
    /// leaves: corruption, as in version 1, and nothing is cut. The reader
    /// cannot tell unsynced records from records that a last `sync: true`
    /// group made durable (its own sync point predates its sync).
    #[test]
    fn garbled_unsynced_record_with_valid_records_after_it_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log_as(dir.path(), &[(1, 3), (2, 12)], V2_UNSYNCED);
        let victim = offsets[1][4];
        flip_byte(dir.path(), 2, victim + 12);
        let before = file_len(dir.path(), 2);
        let err = collect(dir.path(), &[1, 2]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        let msg = err.message();
        assert!(msg.contains(&format!("offset {victim}")), "{msg}");
        assert!(msg.contains("a valid record follows"), "{msg}");
        assert_eq!(file_len(dir.path(), 2), before, "must not truncate");
    }

    /// Damage before a sync point is damage to durable data: refused, and
    /// nothing is cut, even though the records after it were never
    /// synced and the first bytes after the damage are lost too.
    #[test]
    fn damage_before_a_sync_point_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(FS, dir.path(), 4).unwrap();
        let mut starts = Vec::new();
        for i in 0..12 {
            starts.push(append_group(&mut w, &payload(4, i), i < 3));
        }
        let synced_end = starts[3] - SYNC_POINT_FRAME_LEN as u64;
        // Record 1 (synced) damaged, record 3's group (whose sync point
        // claims records 0..3) intact, record 4's group lost (zeros to the
        // end of its sector), later ones intact.
        let group_4 = starts[4] - SYNC_POINT_FRAME_LEN as u64;
        let sector_end = (group_4 / 512 + 1) * 512;
        assert!(sector_end < starts[11], "valid records follow the hole");
        flip_byte(dir.path(), 4, starts[1] + 10);
        zero_range(dir.path(), 4, group_4, sector_end);
        let before = std::fs::read(path(dir.path(), 4)).unwrap();
        let err = collect(dir.path(), &[4]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        let msg = err.message();
        assert!(msg.contains(&format!("offset {}", starts[1])), "{msg}");
        assert!(
            msg.contains(&format!("before offset {synced_end}")),
            "{msg}"
        );
        assert_eq!(std::fs::read(path(dir.path(), 4)).unwrap(), before);

        // The same hole alone lies past every claim: a torn tail.
        flip_byte(dir.path(), 4, starts[1] + 10);
        let (got, report) = collect(dir.path(), &[4]).unwrap();
        assert_eq!(got.len(), 4);
        let tail = report.dropped_tail.unwrap();
        // The hole begins inside record 4's sync point.
        assert_eq!(tail.offset, starts[4] - SYNC_POINT_FRAME_LEN as u64);
    }

    /// A clean close syncs and marks the segment: damage anywhere in it is
    /// corruption afterwards, although no write asked for a sync.
    #[test]
    fn damage_after_sync_and_mark_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(FS, dir.path(), 8).unwrap();
        let starts: Vec<u64> = (0..5)
            .map(|i| append_group(&mut w, &payload(8, i), false))
            .collect();
        w.sync_and_mark().unwrap();
        for victim in [starts[0], starts[4]] {
            flip_byte(dir.path(), 8, victim + 9);
            let err = collect(dir.path(), &[8]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
            flip_byte(dir.path(), 8, victim + 9);
        }
        // Damage to the mark itself: nothing claims it, so it is a tail.
        let end = w.len();
        flip_byte(dir.path(), 8, end - 1);
        let (got, report) = collect(dir.path(), &[8]).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(
            report.dropped_tail.unwrap().offset,
            end - SYNC_POINT_FRAME_LEN as u64
        );
    }

    /// Sync points that cannot be this segment's (another segment's, or
    /// claiming past their own offset: stale or copied bytes) do not turn
    /// unsynced damage into corruption.
    #[test]
    fn only_genuine_sync_points_make_damage_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log_as(dir.path(), &[(6, 8)], V2_UNSYNCED);
        let victim = offsets[0][2];
        let p = path(dir.path(), 6);
        let mut data = std::fs::read(&p).unwrap();
        // A lost write: the victim's group reads as zeros to the sector end.
        let group = victim as usize - SYNC_POINT_FRAME_LEN;
        let sector_end = (group / 512 + 1) * 512;
        assert!(sector_end < data.len(), "records follow the hole");
        data[group..sector_end].fill(0);
        let mut foreign = Vec::new();
        entry::encode_sync_point(
            SyncPoint {
                segment: 7,
                synced_upto: 64,
            },
            &mut foreign,
        );
        let at = data.len() as u64;
        entry::encode_sync_point(
            SyncPoint {
                segment: 6,
                synced_upto: at + 100,
            },
            &mut foreign,
        );
        data.extend_from_slice(&foreign);
        std::fs::write(&p, &data).unwrap();
        let (got, report) = collect(dir.path(), &[6]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(report.dropped_tail.unwrap().offset, group as u64);

        // A genuine one (this segment, claiming past the damage) after it.
        let mut data = std::fs::read(&p).unwrap();
        data.truncate(victim as usize);
        let mut rest = Vec::new();
        encode_frame(b"garbage standing in for damage", &mut rest);
        rest[0] ^= 1;
        data.extend_from_slice(&rest);
        entry::encode_sync_point(
            SyncPoint {
                segment: 6,
                synced_upto: victim + 1,
            },
            &mut data,
        );
        std::fs::write(&p, &data).unwrap();
        let err = collect(dir.path(), &[6]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    }

    /// Checksummed frames that break the version-2 rules are corruption,
    /// never a torn tail.
    #[test]
    fn malformed_version_2_records_are_corruption() {
        /// Appends a frame to a segment's bytes; gets its offset.
        type AddFrame = fn(&mut Vec<u8>, u64);
        let unknown_kind: AddFrame = |d, _| encode_frame(&[7, 1, 2, 3], d);
        let other_segment: AddFrame = |d, _| {
            let point = SyncPoint {
                segment: 99,
                synced_upto: 16,
            };
            entry::encode_sync_point(point, d)
        };
        let past_itself: AddFrame = |d, at| {
            let point = SyncPoint {
                segment: 3,
                synced_upto: at + 1,
            };
            entry::encode_sync_point(point, d)
        };
        let cases = [
            ("unknown record kind", unknown_kind),
            ("names segment 99", other_segment),
            ("names segment 3 and offset", past_itself),
        ];
        for (want, add) in cases {
            let dir = tempfile::tempdir().unwrap();
            write_log_as(dir.path(), &[(3, 2)], V2_UNSYNCED);
            let p = path(dir.path(), 3);
            let mut data = std::fs::read(&p).unwrap();
            let at = data.len() as u64;
            add(&mut data, at);
            data.extend_from_slice(&payload(3, 9)); // never reached
            std::fs::write(&p, &data).unwrap();
            let err = collect(dir.path(), &[3]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{want}: {err}");
            assert!(err.message().contains(want), "{want}: {err}");
        }
    }

    /// Version 1 keeps its rule: damage followed by a valid record in the
    /// last segment is corruption, with no sync points to say otherwise.
    #[test]
    fn version_1_unsynced_damage_is_still_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log(dir.path(), &[(1, 8)]);
        flip_byte(dir.path(), 1, offsets[0][3] + 9);
        let err = collect(dir.path(), &[1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("a valid record follows"), "{err}");
    }
}
