//! The manifest log file and the `CURRENT` pointer (docs/format-manifest.md).
//!
//! `MANIFEST-{number:06}`: a 16-byte header (`b"TOONMANI"`, format version
//! u32 LE, CRC-32 of the first 12 bytes u32 LE), then framed records
//! ([`crate::record`]), each holding one encoded [`VersionEdit`]. The first
//! record of a manifest written by [`Manifest::create`] snapshots the whole
//! state. `CURRENT` holds the live manifest's file name followed by `"\n"`
//! and is only ever replaced by rename.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::edit::VersionEdit;
use super::state::ManifestState;
use crate::coding::Reader;
use crate::error::{Error, ErrorKind, Result};
use crate::io::{FileSystem, WritableFile};
use crate::record::{encode_frame, read_frame, Frame, FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD};

/// First eight bytes of every manifest file.
pub const MANIFEST_MAGIC: [u8; 8] = *b"TOONMANI";
/// The format version this code writes and the only one it reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Magic, version, header CRC.
pub const MANIFEST_HEADER_LEN: usize = 16;
pub const CURRENT_FILE_NAME: &str = "CURRENT";
pub const CURRENT_TMP_FILE_NAME: &str = "CURRENT.tmp";

const MANIFEST_PREFIX: &str = "MANIFEST-";

/// `"MANIFEST-000007"`.
pub fn manifest_file_name(number: u64) -> String {
    format!("{MANIFEST_PREFIX}{number:06}")
}

/// The number of a manifest file name, accepting only the exact form
/// [`manifest_file_name`] produces (so one number has one name).
pub fn parse_manifest_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(MANIFEST_PREFIX)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    (manifest_file_name(number) == name).then_some(number)
}

fn encode_header() -> [u8; MANIFEST_HEADER_LEN] {
    let mut h = [0u8; MANIFEST_HEADER_LEN];
    h[..8].copy_from_slice(&MANIFEST_MAGIC);
    h[8..12].copy_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn check_header(bytes: &[u8]) -> Result<()> {
    let mut r = Reader::new(bytes);
    let (Some(magic), Some(version), Some(crc)) = (r.bytes(8), r.u32_le(), r.u32_le()) else {
        return Err(Error::corruption(format!(
            "file is {} bytes, shorter than the {MANIFEST_HEADER_LEN}-byte manifest header",
            bytes.len()
        )));
    };
    if magic != MANIFEST_MAGIC {
        return Err(Error::corruption("not a manifest file (bad magic)"));
    }
    if crc32fast::hash(&bytes[..12]) != crc {
        return Err(Error::corruption("manifest header checksum mismatch"));
    }
    if version != MANIFEST_FORMAT_VERSION {
        return Err(Error::corruption(format!(
            "manifest format version {version} is not supported (this build reads version {MANIFEST_FORMAT_VERSION})"
        )));
    }
    Ok(())
}

/// Replays a whole manifest file.
fn replay(bytes: &[u8]) -> Result<ManifestState> {
    check_header(bytes)?;
    let mut state = ManifestState::default();
    let mut pos = MANIFEST_HEADER_LEN;
    let mut records = 0u64;
    loop {
        let rest = bytes.get(pos..).unwrap_or(&[]);
        match read_frame(rest) {
            Frame::Record { payload, consumed } => {
                let edit = VersionEdit::decode(payload)
                    .and_then(|edit| state.apply(&edit))
                    .map_err(|e| e.context(format_args!("record at offset {pos}")));
                edit?;
                records += 1;
                pos += consumed;
            }
            // The rest is empty or zero bytes (never written).
            Frame::End => break,
            // The record runs past the end of the file: the last append was
            // cut short by a crash and never acknowledged, so it is dropped.
            // Unless a valid record follows: then this record's length field
            // is damaged, and ignoring the rest would drop acknowledged edits.
            Frame::Truncated => match valid_record_after(bytes, pos + 1) {
                None => break,
                Some(next) => {
                    return Err(Error::corruption(format!(
                        "record at offset {pos} runs past the end of the file, \
                         but a valid record follows at offset {next} (damaged length?)"
                    )));
                }
            },
            // A damaged final record is an append that a power cut tore:
            // the file's length can reach the disk before the payload pages
            // do, so a complete-length record may hold old or zeroed bytes.
            // Its edit was never acknowledged (`apply` returns after the
            // sync), so it is dropped like a short one. Damage followed by
            // a valid record is corruption. Recovery's check that the WAL
            // checkpoint segment exists catches an acknowledged final edit
            // that was damaged later (see docs/format-manifest.md).
            Frame::Bad(why) => match valid_record_after(bytes, damaged_extent_end(bytes, pos)) {
                None => break,
                Some(next) => {
                    return Err(Error::corruption(format!(
                        "record at offset {pos}: {why}, and a valid record follows at offset {next}"
                    )));
                }
            },
        }
    }
    if records == 0 {
        return Err(Error::corruption("manifest holds no complete edit"));
    }
    Ok(state)
}

/// Where to look for valid records after a damaged frame at `pos`. When
/// its length field is plausible and its extent fits in the file, that
/// whole extent is the torn append: its payload may hold stale bytes,
/// including valid frames of an older, deleted manifest, which prove
/// nothing. Otherwise the search starts just after `pos`.
fn damaged_extent_end(bytes: &[u8], pos: usize) -> usize {
    let mut r = Reader::new(bytes.get(pos..).unwrap_or(&[]));
    match (r.u32_le(), r.u32_le()) {
        (Some(_crc), Some(len))
            if len != 0 && len as usize <= MAX_FRAME_PAYLOAD && len as usize <= r.remaining() =>
        {
            pos + FRAME_HEADER_LEN + len as usize
        }
        _ => pos + 1,
    }
}

/// The offset of the first record at or after `from` that proves an edit
/// was appended after the damage: a complete, checksummed frame that
/// decodes as an edit and from which valid frames run on to the end of the
/// log. Only used on damage, which is rare. A torn final append has no such
/// record after it (stale bytes inside it may hold old frames, but their
/// chain does not end exactly at the end of the log); damage in an earlier
/// record is followed by the real records, which do.
fn valid_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&q| {
        let rest = bytes.get(q..).unwrap_or(&[]);
        let mut r = Reader::new(rest);
        // Cheap filter before checksumming: the length must fit.
        let (Some(_crc), Some(len)) = (r.u32_le(), r.u32_le()) else {
            return false;
        };
        if len == 0 || len as usize > r.remaining() {
            return false;
        }
        valid_frames_to_end(rest)
    })
}

/// True when `log` is one or more valid edit frames and then the end of
/// the log (nothing, or zeros).
fn valid_frames_to_end(mut log: &[u8]) -> bool {
    let mut records = 0;
    loop {
        match read_frame(log) {
            Frame::Record { payload, consumed } if VersionEdit::decode(payload).is_ok() => {
                records += 1;
                log = log.get(consumed..).unwrap_or(&[]);
            }
            Frame::End => return records > 0,
            _ => return false,
        }
    }
}

/// The manifest number named by `CURRENT`, or `None` when there is no `CURRENT`.
fn read_current(fs: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(CURRENT_FILE_NAME);
    if !fs.exists(&path) {
        return Ok(None);
    }
    let bytes = fs.read(&path)?;
    let ctx = |what: &str| Error::corruption(format!("{}: {what}", path.display()));
    let Some(name) = bytes.strip_suffix(b"\n") else {
        return Err(ctx("does not end with a newline (torn or foreign write)"));
    };
    let name = std::str::from_utf8(name).map_err(|_| ctx("is not UTF-8"))?;
    parse_manifest_name(name).map(Some).ok_or_else(|| {
        ctx(&format!(
            "names {name:?}, which is not a manifest file name"
        ))
    })
}

/// Points `CURRENT` at manifest `number`: write `CURRENT.tmp`, sync it,
/// rename it over `CURRENT`, sync the directory.
fn set_current(fs: &dyn FileSystem, dir: &Path, number: u64) -> Result<()> {
    let tmp = dir.join(CURRENT_TMP_FILE_NAME);
    let mut file = fs.create(&tmp)?;
    file.append(format!("{}\n", manifest_file_name(number)).as_bytes())?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, &dir.join(CURRENT_FILE_NAME))?;
    fs.sync_dir(dir)
}

/// The live manifest: an open log file plus the state it describes.
pub struct Manifest {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    number: u64,
    path: PathBuf,
    file: Box<dyn WritableFile>,
    state: ManifestState,
    /// Set after an append or sync failed: the file's tail is then unknown,
    /// so nothing more may be appended to it.
    failed: Option<String>,
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("path", &self.path)
            .field("file_size", &self.file.len())
            .field("failed", &self.failed)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Manifest {
    /// Reads CURRENT and replays the manifest it names. `Ok(None)` when there
    /// is no CURRENT (a new database). A torn last record (power cut
    /// mid-append) is ignored: the edit was never acknowledged, because
    /// [`apply`](Self::apply) syncs before returning. Any other damage, a
    /// missing manifest file, or a CURRENT without trailing newline is
    /// corruption.
    pub fn load(fs: &dyn FileSystem, dir: &Path) -> Result<Option<ManifestState>> {
        Ok(Self::load_numbered(fs, dir)?.map(|(_, state)| state))
    }

    /// [`load`](Self::load), with the number of the manifest CURRENT named.
    pub fn load_numbered(fs: &dyn FileSystem, dir: &Path) -> Result<Option<(u64, ManifestState)>> {
        let Some(number) = read_current(fs, dir)? else {
            return Ok(None);
        };
        let path = dir.join(manifest_file_name(number));
        if !fs.exists(&path) {
            return Err(Error::corruption(format!(
                "{} names {}, which does not exist",
                dir.join(CURRENT_FILE_NAME).display(),
                path.display()
            )));
        }
        let bytes = fs.read(&path)?;
        replay(&bytes)
            .map(|state| Some((number, state)))
            .map_err(|e| e.context(format_args!("replaying {}", path.display())))
    }

    /// Writes `MANIFEST-{number}` containing one edit that snapshots `state`,
    /// syncs it, atomically switches CURRENT to it, then removes the previous
    /// manifest file (if CURRENT named one; errors removing it are ignored).
    ///
    /// The caller allocates `number` like any file number (from
    /// `state.next_file_number`, which the state passed in should already be
    /// past). Refuses (InvalidArgument) to overwrite the manifest CURRENT names, or
    /// a state listing one table number twice.
    pub fn create(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        number: u64,
        state: ManifestState,
    ) -> Result<Manifest> {
        // A damaged CURRENT is left for the switch below to replace; only the
        // clean-up of the old manifest depends on reading it.
        let previous = read_current(&*fs, dir).ok().flatten();
        if previous == Some(number) {
            return Err(Error::invalid_argument(format!(
                "manifest {} is live; a new manifest needs a new number",
                manifest_file_name(number)
            )));
        }
        let edit = state.snapshot_edit();
        ManifestState::default().check(&edit).map_err(|e| {
            Error::invalid_argument(format!("cannot snapshot manifest state: {}", e.message()))
        })?;
        let payload = edit.encoded();
        check_payload_len(&payload)?;
        let mut buf = Vec::with_capacity(MANIFEST_HEADER_LEN + FRAME_HEADER_LEN + payload.len());
        buf.extend_from_slice(&encode_header());
        encode_frame(&payload, &mut buf);

        let path = dir.join(manifest_file_name(number));
        let written = (|| {
            let mut file = fs.create(&path)?;
            file.append(&buf)?;
            file.sync_data()?;
            // No directory sync for the new name here: the one after the
            // rename in `set_current` makes it durable together with the
            // rename, and directory operations reach the disk in the order
            // they were issued, so no crash keeps the rename without this
            // name (docs/format-manifest.md, "The CURRENT protocol"). One
            // fsync less per open.
            Ok::<_, Error>(file)
        })();
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                // CURRENT still names the old manifest; the new file is junk.
                let _ = fs.remove(&path);
                return Err(e.context(format_args!("writing {}", path.display())));
            }
        };
        // From here the new manifest may be live (the rename may have
        // happened), so it is never removed on error.
        set_current(&*fs, dir, number)
            .map_err(|e| e.context(format_args!("switching CURRENT to {}", path.display())))?;
        if let Some(old) = previous {
            let _ = fs.remove(&dir.join(manifest_file_name(old)));
        }
        Ok(Manifest {
            fs,
            dir: dir.to_path_buf(),
            number,
            path,
            file,
            state,
            failed: None,
        })
    }

    /// Appends one edit, fdatasyncs it, then applies it to the in-memory
    /// state. On return the edit is durable.
    ///
    /// An edit that does not apply to the current state is refused before
    /// anything is written ([`ErrorKind::Internal`]: a caller bug). An empty
    /// edit is a no-op. If the append or sync fails, the in-memory state is
    /// unchanged, but the edit may or may not be on disk (a later `load` can
    /// see either), so the caller must keep every file the edit mentions;
    /// this manifest then refuses further edits, and the caller continues
    /// with a new one from [`create`](Self::create).
    ///
    /// Also refused (`Io`, nothing written) once CURRENT no longer names
    /// this manifest, e.g. after a [`create`](Self::create) that renamed
    /// CURRENT but then failed: edits appended here would be lost.
    pub fn apply(&mut self, edit: &VersionEdit) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} is unusable after an earlier write failure ({why}); start a new manifest",
                    self.path.display()
                ),
            ));
        }
        self.state.check(edit).map_err(|e| {
            Error::internal(format!(
                "refusing to log a version edit that does not apply: {}",
                e.message()
            ))
        })?;
        if edit.is_empty() {
            return Ok(());
        }
        match read_current(&*self.fs, &self.dir) {
            Ok(Some(n)) if n == self.number => {}
            Ok(current) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{} is no longer live (CURRENT names {}); start a new manifest",
                        self.path.display(),
                        current.map_or_else(|| "nothing".to_owned(), manifest_file_name)
                    ),
                ));
            }
            Err(e) => return Err(e.context("checking that the manifest is still live")),
        }
        let payload = edit.encoded();
        check_payload_len(&payload)?;
        let mut buf = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        encode_frame(&payload, &mut buf);
        let file = &mut self.file;
        if let Err(e) = file.append(&buf).and_then(|()| file.sync_data()) {
            self.failed = Some(e.message().to_owned());
            return Err(e.context(format_args!("appending to {}", self.path.display())));
        }
        self.state.apply_checked(edit);
        Ok(())
    }

    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    #[allow(dead_code)] // API for the db; not called yet
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Bytes in the current manifest file (the db rewrites the manifest via
    /// [`create`](Self::create) when this grows past a limit).
    pub fn file_size(&self) -> u64 {
        self.file.len()
    }
}

fn check_payload_len(payload: &[u8]) -> Result<()> {
    if payload.len() > MAX_FRAME_PAYLOAD {
        return Err(Error::internal(format!(
            "version edit encodes to {} bytes; a manifest record holds at most {MAX_FRAME_PAYLOAD}",
            payload.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::io::{OsFileSystem, WrappedFs, WriteHook};
    use crate::version::TableMeta;

    fn table(number: u64) -> TableMeta {
        TableMeta {
            number,
            level: (number % 3) as u32,
            file_size: 1000 + number,
            entries: number * 2,
            smallest: format!("key{number:04}").into_bytes(),
            largest: format!("key{number:04}~").into_bytes(),
            min_ts: number,
            max_ts: number + 10,
        }
    }

    fn os() -> Arc<dyn FileSystem> {
        OsFileSystem::shared()
    }

    fn initial() -> ManifestState {
        ManifestState {
            tables: vec![table(2)],
            log_number: 3,
            next_file_number: 5,
            last_ts: 40,
        }
    }

    fn edits() -> Vec<VersionEdit> {
        vec![
            VersionEdit {
                add_tables: vec![table(5)],
                log_number: Some(6),
                next_file_number: Some(7),
                last_ts: Some(50),
                ..Default::default()
            },
            VersionEdit {
                add_tables: vec![table(8)],
                remove_tables: vec![2, 5],
                next_file_number: Some(9),
                ..Default::default()
            },
            VersionEdit {
                add_tables: vec![TableMeta {
                    smallest: Vec::new(),
                    largest: Vec::new(),
                    ..table(9)
                }],
                log_number: Some(10),
                next_file_number: Some(11),
                last_ts: Some(u64::MAX),
                ..Default::default()
            },
        ]
    }

    fn manifest_path(dir: &Path, number: u64) -> PathBuf {
        dir.join(manifest_file_name(number))
    }

    fn load(dir: &Path) -> Result<Option<ManifestState>> {
        Manifest::load(&OsFileSystem, dir)
    }

    /// Creates manifest 4 from `initial()` and applies `edits()`; returns the
    /// file offset at which each record starts.
    fn build(dir: &Path) -> (Manifest, Vec<usize>) {
        let mut m = Manifest::create(os(), dir, 4, initial()).unwrap();
        let mut offsets = vec![MANIFEST_HEADER_LEN];
        for edit in edits() {
            offsets.push(m.file_size() as usize);
            m.apply(&edit).unwrap();
        }
        (m, offsets)
    }

    #[test]
    fn manifest_file_names() {
        assert_eq!(manifest_file_name(7), "MANIFEST-000007");
        assert_eq!(manifest_file_name(1_234_567), "MANIFEST-1234567");
        assert_eq!(parse_manifest_name("MANIFEST-000007"), Some(7));
        assert_eq!(parse_manifest_name("MANIFEST-1234567"), Some(1_234_567));
        assert_eq!(
            parse_manifest_name(&manifest_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "MANIFEST-7",
            "MANIFEST-0000007",
            "MANIFEST-",
            "MANIFEST-00000a",
            "MANIFEST-+00007",
            "manifest-000007",
            "MANIFEST-000007.tmp",
            "CURRENT",
            "MANIFEST-99999999999999999999999",
        ] {
            assert_eq!(parse_manifest_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn manifest_golden_bytes() {
        // The examples in docs/format-manifest.md.
        assert_eq!(
            encode_header(),
            [
                0x54, 0x4f, 0x4f, 0x4e, 0x4d, 0x41, 0x4e, 0x49, 0x01, 0x00, 0x00, 0x00, 0x3d, 0x51,
                0x10, 0xf0
            ]
        );
        let edit = VersionEdit {
            remove_tables: vec![5],
            log_number: Some(6),
            ..Default::default()
        };
        let mut framed = Vec::new();
        encode_frame(&edit.encoded(), &mut framed);
        assert_eq!(
            framed,
            [0x05, 0x2d, 0xe4, 0x8f, 0x04, 0x00, 0x00, 0x00, 0x02, 0x05, 0x03, 0x06]
        );
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn manifest_create_apply_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = build(dir.path());
        let mut expected = initial();
        for edit in edits() {
            expected.apply(&edit).unwrap();
        }
        assert_eq!(m.state(), &expected);
        assert_eq!(m.number(), 4);
        assert_eq!(
            m.file_size(),
            std::fs::metadata(manifest_path(dir.path(), 4))
                .unwrap()
                .len()
        );
        assert_eq!(
            std::fs::read(dir.path().join(CURRENT_FILE_NAME)).unwrap(),
            b"MANIFEST-000004\n"
        );
        drop(m);
        assert_eq!(load(dir.path()).unwrap(), Some(expected));
    }

    #[test]
    fn manifest_create_snapshot_of_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::create(os(), dir.path(), 1, ManifestState::default()).unwrap();
        assert_eq!(m.state(), &ManifestState::default());
        assert_eq!(load(dir.path()).unwrap().as_ref(), Some(m.state()));
    }

    #[test]
    fn manifest_rewrite_switches_current_and_removes_old() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = build(dir.path());
        let state = m.state().clone();
        drop(m);
        let mut m2 = Manifest::create(os(), dir.path(), 12, state.clone()).unwrap();
        assert_eq!(m2.number(), 12);
        assert_eq!(m2.state(), &state);
        assert_eq!(
            std::fs::read(dir.path().join(CURRENT_FILE_NAME)).unwrap(),
            b"MANIFEST-000012\n"
        );
        assert!(!manifest_path(dir.path(), 4).exists());
        assert!(!dir.path().join(CURRENT_TMP_FILE_NAME).exists());
        assert_eq!(load(dir.path()).unwrap().as_ref(), Some(&state));

        // The rewritten manifest keeps accepting edits.
        let edit = VersionEdit {
            remove_tables: vec![8],
            ..Default::default()
        };
        m2.apply(&edit).unwrap();
        let mut expected = state;
        expected.apply(&edit).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(expected));
    }

    #[test]
    fn manifest_create_refuses_to_overwrite_live_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = build(dir.path());
        let state = m.state().clone();
        let err = Manifest::create(os(), dir.path(), 4, ManifestState::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(load(dir.path()).unwrap(), Some(state));

        let dup = ManifestState {
            tables: vec![table(1), table(1)],
            ..Default::default()
        };
        let err = Manifest::create(os(), dir.path(), 20, dup).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(!manifest_path(dir.path(), 20).exists());
    }

    #[test]
    fn manifest_torn_last_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (m, offsets) = build(dir.path());
        let full = std::fs::read(manifest_path(dir.path(), 4)).unwrap();
        let last = *offsets.last().unwrap();
        drop(m);
        let mut without_last = initial();
        for edit in &edits()[..edits().len() - 1] {
            without_last.apply(edit).unwrap();
        }
        // Cut inside the last record's header and inside its payload.
        for cut in [last + 1, last + FRAME_HEADER_LEN - 1, full.len() - 1] {
            std::fs::write(manifest_path(dir.path(), 4), &full[..cut]).unwrap();
            assert_eq!(
                load(dir.path()).unwrap().as_ref(),
                Some(&without_last),
                "cut at {cut}"
            );
        }
        // Zeros after the last record (space the file system extended but
        // never wrote) are the end of the log.
        let mut zero_tail = full[..last].to_vec();
        zero_tail.extend_from_slice(&[0; 100]);
        std::fs::write(manifest_path(dir.path(), 4), &zero_tail).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(without_last));
    }

    #[test]
    fn manifest_torn_record_with_large_keys_is_ignored() {
        // Long zero runs and key bytes inside a torn record are not mistaken
        // for damage (and scanning them for later records stays cheap).
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::create(os(), dir.path(), 4, initial()).unwrap();
        let before = m.state().clone();
        let start = m.file_size() as usize;
        m.apply(&VersionEdit {
            add_tables: vec![TableMeta {
                smallest: vec![0; 64 * 1024],
                largest: vec![0x01; 64 * 1024],
                ..table(6)
            }],
            ..Default::default()
        })
        .unwrap();
        drop(m);
        let full = std::fs::read(manifest_path(dir.path(), 4)).unwrap();
        for cut in [start + 40_000, start + 100_000] {
            std::fs::write(manifest_path(dir.path(), 4), &full[..cut]).unwrap();
            assert_eq!(load(dir.path()).unwrap().as_ref(), Some(&before));
        }
    }

    #[test]
    fn manifest_bit_flip_in_earlier_record_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (m, offsets) = build(dir.path());
        drop(m);
        let full = std::fs::read(manifest_path(dir.path(), 4)).unwrap();
        for start in &offsets[..offsets.len() - 1] {
            for at in [*start, start + 5, start + FRAME_HEADER_LEN + 1] {
                let mut damaged = full.clone();
                damaged[at] ^= 0x10;
                std::fs::write(manifest_path(dir.path(), 4), &damaged).unwrap();
                let err = load(dir.path()).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Corruption, "flip at {at}");
                assert!(err.message().contains("MANIFEST-000004"), "{err}");
            }
        }
    }

    #[test]
    fn manifest_damaged_length_is_not_mistaken_for_torn_tail() {
        // A length field damaged to run past the end of the file looks like a
        // torn write, but the valid records after it give it away.
        let dir = tempfile::tempdir().unwrap();
        let (m, offsets) = build(dir.path());
        drop(m);
        let mut bytes = std::fs::read(manifest_path(dir.path(), 4)).unwrap();
        bytes[offsets[1] + 6] ^= 0x01; // + 64 KiB
        std::fs::write(manifest_path(dir.path(), 4), &bytes).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("runs past the end"), "{err}");
    }

    #[test]
    fn manifest_damaged_last_record_is_a_torn_append() {
        // A complete-length last record whose bytes never all reached the
        // disk (a power cut during its append) was never acknowledged: it is
        // dropped, whether its payload is zeroed, garbage or bit-flipped.
        let dir = tempfile::tempdir().unwrap();
        let (m, offsets) = build(dir.path());
        drop(m);
        let full = std::fs::read(manifest_path(dir.path(), 4)).unwrap();
        let last = *offsets.last().unwrap();
        let mut without_last = initial();
        for edit in &edits()[..edits().len() - 1] {
            without_last.apply(edit).unwrap();
        }
        let n = full.len();
        let mut flipped = full.clone();
        flipped[n - 1] ^= 1;
        let mut zeroed_payload = full.clone();
        zeroed_payload[last + FRAME_HEADER_LEN..].fill(0);
        let mut garbage = full.clone();
        for (i, b) in garbage[last..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(97).wrapping_add(13);
        }
        for (name, bytes) in [
            ("flipped", flipped),
            ("zeroed payload", zeroed_payload),
            ("garbage", garbage),
        ] {
            std::fs::write(manifest_path(dir.path(), 4), &bytes).unwrap();
            assert_eq!(
                load(dir.path()).unwrap().as_ref(),
                Some(&without_last),
                "{name}"
            );
        }
    }

    #[test]
    fn manifest_damaged_record_before_a_valid_one_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (m, offsets) = build(dir.path());
        drop(m);
        let mut bytes = std::fs::read(manifest_path(dir.path(), 4)).unwrap();
        let second_last = offsets[offsets.len() - 2];
        bytes[second_last + FRAME_HEADER_LEN] ^= 1;
        std::fs::write(manifest_path(dir.path(), 4), &bytes).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("a valid record follows"), "{err}");
    }

    #[test]
    fn manifest_bad_header_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = build(dir.path());
        drop(m);
        let full = std::fs::read(manifest_path(dir.path(), 4)).unwrap();

        let mut newer = full.clone();
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&newer[..12]);
        newer[12..16].copy_from_slice(&crc.to_le_bytes());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (full[..10].to_vec(), "shorter than"),
            (full[..MANIFEST_HEADER_LEN].to_vec(), "no complete edit"),
            ([b"XOONMANI".as_slice(), &full[8..]].concat(), "bad magic"),
            (
                {
                    let mut b = full.clone();
                    b[9] ^= 1;
                    b
                },
                "header checksum",
            ),
            (newer, "version 2 is not supported"),
        ];
        for (bytes, want) in cases {
            std::fs::write(manifest_path(dir.path(), 4), &bytes).unwrap();
            let err = load(dir.path()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption);
            assert!(err.message().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn manifest_missing_current_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        // A manifest without CURRENT (crash during the very first create)
        // is still a new database.
        std::fs::write(manifest_path(dir.path(), 1), encode_header()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
    }

    #[test]
    fn manifest_current_naming_missing_file_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CURRENT_FILE_NAME), b"MANIFEST-000009\n").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("MANIFEST-000009"), "{err}");
        assert!(err.message().contains("does not exist"), "{err}");
    }

    #[test]
    fn manifest_bad_current_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = build(dir.path());
        drop(m);
        for bad in [
            &b"MANIFEST-000004"[..],
            b"",
            b"\n",
            b"MANIFEST-000004\n\n",
            b"MANIFEST-4\n",
            b"TABLE-000004\n",
            b"MANIFEST-00000\xff\n",
        ] {
            std::fs::write(dir.path().join(CURRENT_FILE_NAME), bad).unwrap();
            let err = load(dir.path()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{bad:?}");
            assert!(err.message().contains("CURRENT"), "{err}");
        }
    }

    #[test]
    fn manifest_refuses_edits_once_no_longer_current() {
        let dir = tempfile::tempdir().unwrap();
        let (mut old, _) = build(dir.path());
        let state = old.state().clone();
        let mut new = Manifest::create(os(), dir.path(), 12, state.clone()).unwrap();
        let edit = VersionEdit {
            remove_tables: vec![8],
            ..Default::default()
        };
        let err = old.apply(&edit).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains("no longer live"), "{err}");
        assert_eq!(old.state(), &state);
        new.apply(&edit).unwrap();
        assert_eq!(load(dir.path()).unwrap().as_ref(), Some(new.state()));
    }

    #[test]
    fn manifest_refuses_edit_that_does_not_apply() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = build(dir.path());
        let (state, size) = (m.state().clone(), m.file_size());
        for edit in [
            VersionEdit {
                remove_tables: vec![77],
                ..Default::default()
            },
            VersionEdit {
                add_tables: vec![table(8)],
                ..Default::default()
            },
        ] {
            let err = m.apply(&edit).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Internal);
        }
        m.apply(&VersionEdit::default()).unwrap();
        assert_eq!((m.state(), m.file_size()), (&state, size));
        // Nothing was written, and the manifest still works.
        m.apply(&VersionEdit {
            last_ts: Some(7),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap().last_ts, 7);
    }

    /// Delegates to [`OsFileSystem`]; writable files fail `append` (after
    /// writing half the data) or `sync_data` while the flags are set.
    struct FailingFs {
        fail_append: Arc<AtomicBool>,
        fail_sync: Arc<AtomicBool>,
    }

    struct FailingFile {
        inner: Box<dyn WritableFile>,
        fail_append: Arc<AtomicBool>,
        fail_sync: Arc<AtomicBool>,
    }

    fn injected(what: &str) -> Error {
        Error::io(std::io::Error::other("injected failure"), what)
    }

    impl WritableFile for FailingFile {
        fn append(&mut self, data: &[u8]) -> Result<()> {
            if self.fail_append.load(Ordering::SeqCst) {
                self.inner.append(&data[..data.len() / 2])?;
                return Err(injected("append"));
            }
            self.inner.append(data)
        }
        fn sync_data(&mut self) -> Result<()> {
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(injected("sync_data"));
            }
            self.inner.sync_data()
        }
        fn len(&self) -> u64 {
            self.inner.len()
        }
    }

    impl WriteHook for FailingFs {
        fn wrap(&self, _path: &Path, inner: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
            Box::new(FailingFile {
                inner,
                fail_append: self.fail_append.clone(),
                fail_sync: self.fail_sync.clone(),
            })
        }
    }

    #[test]
    fn manifest_apply_io_failure_leaves_state_unchanged() {
        let fail_append = Arc::new(AtomicBool::new(false));
        let fail_sync = Arc::new(AtomicBool::new(false));
        let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::os(FailingFs {
            fail_append: fail_append.clone(),
            fail_sync: fail_sync.clone(),
        }));
        let edit = VersionEdit {
            add_tables: vec![table(6)],
            log_number: Some(6),
            ..Default::default()
        };

        for flag in [&fail_append, &fail_sync] {
            let dir = tempfile::tempdir().unwrap();
            let mut m = Manifest::create(fs.clone(), dir.path(), 4, initial()).unwrap();
            let before = m.state().clone();
            flag.store(true, Ordering::SeqCst);
            let err = m.apply(&edit).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io);
            assert!(err.message().contains("injected failure"), "{err}");
            assert_eq!(m.state(), &before);

            // Even once the fault clears, the manifest's tail is unknown, so
            // it takes no more edits.
            flag.store(false, Ordering::SeqCst);
            let err = m.apply(&edit).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io);
            assert_eq!(m.state(), &before);

            // On disk the failed edit may or may not have landed.
            let mut with_edit = before.clone();
            with_edit.apply(&edit).unwrap();
            let loaded = load(dir.path()).unwrap().unwrap();
            assert!(loaded == before || loaded == with_edit, "{loaded:?}");

            // The caller recovers by starting a new manifest from memory.
            let mut m2 = Manifest::create(fs.clone(), dir.path(), 7, before.clone()).unwrap();
            m2.apply(&edit).unwrap();
            assert_eq!(load(dir.path()).unwrap(), Some(with_edit));
        }
    }

    #[test]
    fn manifest_create_failure_keeps_old_manifest() {
        let fail_sync = Arc::new(AtomicBool::new(false));
        let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::os(FailingFs {
            fail_append: Arc::new(AtomicBool::new(false)),
            fail_sync: fail_sync.clone(),
        }));
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::create(fs.clone(), dir.path(), 4, initial()).unwrap();
        let state = m.state().clone();
        fail_sync.store(true, Ordering::SeqCst);
        let err = Manifest::create(fs.clone(), dir.path(), 9, state.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(!manifest_path(dir.path(), 9).exists());
        assert!(manifest_path(dir.path(), 4).exists());
        assert_eq!(load(dir.path()).unwrap(), Some(state));
    }
}
