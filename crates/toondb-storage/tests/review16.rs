//! Review of issue 16: what a resolved `close()` promises ("every
//! acknowledged write is on disk", index.d.ts; "a clean shutdown loses
//! nothing", README) must hold for every handle, not only the last one on
//! the path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, Result};

/// Remembers, per WAL segment, how many bytes were durable at its last
/// successful sync: what a power cut would leave of it.
#[derive(Clone, Default)]
struct Durable(Arc<Mutex<HashMap<PathBuf, u64>>>);

struct Tracked {
    path: PathBuf,
    inner: Box<dyn WritableFile>,
    durable: Durable,
}

impl WritableFile for Tracked {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> Result<()> {
        self.inner.sync_data()?;
        self.mark();
        Ok(())
    }
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.inner.append_durable(data)?;
        self.mark();
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> Result<()> {
        self.inner.preallocate(len)
    }
}

impl Tracked {
    fn mark(&self) {
        let len = self.inner.len();
        self.durable
            .0
            .lock()
            .unwrap()
            .insert(self.path.clone(), len);
    }
}

impl WriteHook for Durable {
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            Box::new(Tracked {
                path: path.to_path_buf(),
                inner: file,
                durable: self.clone(),
            })
        } else {
            file
        }
    }
}

/// Copies `dir` as a power cut right now would leave it: every WAL segment
/// cut back to its last synced length (other files are copied whole, which
/// only favours the database).
fn power_cut_image(dir: &Path, durable: &Durable) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let synced = durable.0.lock().unwrap().clone();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "LOCK" {
            continue;
        }
        let mut bytes = std::fs::read(entry.path()).unwrap();
        if entry.path().extension().is_some_and(|e| e == "wal") {
            let keep = synced
                .iter()
                .find(|(p, _)| p.file_name() == Some(name.as_os_str()))
                .map_or(0, |(_, n)| *n as usize);
            bytes.truncate(keep);
        }
        std::fs::write(out.path().join(&name), bytes).unwrap();
    }
    out
}

#[test]
fn a_closed_handle_s_acknowledged_writes_survive_a_power_cut_while_another_handle_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let durable = Durable::default();
    let options = Options::default().fs(Arc::new(WrappedFs::os(durable.clone())));
    // Say, the main thread's handle, open for the life of the process.
    let long_lived = Database::open_with(dir.path(), options.clone()).unwrap();
    // A worker's handle: writes, closes cleanly, reports "done".
    let worker = Database::open_with(dir.path(), options).unwrap();
    for i in 0..10 {
        worker.put(format!("w{i}"), "v").unwrap();
    }
    worker.close().expect("close reported success");
    // Power cut now: the worker's close resolved, so its writes must be there.
    let image = power_cut_image(dir.path(), &durable);
    let reopened = Database::open(image.path()).unwrap();
    let missing: Vec<String> = (0..10)
        .map(|i| format!("w{i}"))
        .filter(|k| reopened.get(k).unwrap().is_none())
        .collect();
    reopened.close().unwrap();
    long_lived.close().unwrap();
    assert!(
        missing.is_empty(),
        "close() of a non-last handle returned Ok, yet a power cut loses {missing:?}"
    );
}

/// The same check for the last handle (which passes): the image is sound.
#[test]
fn control_the_last_handle_s_close_makes_its_writes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let durable = Durable::default();
    let options = Options::default().fs(Arc::new(WrappedFs::os(durable.clone())));
    let db = Database::open_with(dir.path(), options).unwrap();
    for i in 0..10 {
        db.put(format!("w{i}"), "v").unwrap();
    }
    db.close().unwrap();
    let image = power_cut_image(dir.path(), &durable);
    let reopened = Database::open(image.path()).unwrap();
    for i in 0..10 {
        assert!(reopened.get(format!("w{i}")).unwrap().is_some());
    }
    reopened.close().unwrap();
}

fn current_manifest(dir: &Path) -> PathBuf {
    let current = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(current.trim_end())
}

/// The frames of a manifest file: (offset, whole frame bytes).
fn manifest_frames(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 16;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        out.push((pos, bytes[pos..pos + 8 + len].to_vec()));
        pos += 8 + len;
    }
    out
}

/// docs/format-manifest.md: a power cut during the final append can leave a
/// complete-length frame holding "stale, zero or garbage bytes", and that
/// frame was never acknowledged, so the database must open. Stale bytes are
/// what the file system's freed blocks held, and this engine deletes the
/// previous manifest at every open and every rewrite: the likeliest stale
/// bytes are an older manifest's, which are valid frames. A valid frame
/// inside the torn frame's own extent is not "a valid frame after it".
#[test]
fn torn_final_manifest_append_over_stale_manifest_bytes_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for i in 0..50 {
        db.put(format!("k{i:03}"), "v").unwrap();
    }
    db.flush().unwrap();
    for i in 50..100 {
        db.put(format!("k{i:03}"), "v").unwrap();
    }
    db.close().unwrap();

    let path = current_manifest(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let frames = manifest_frames(&bytes);
    let (_, old_frame) = frames.last().unwrap().clone();
    // The next flush's edit (a table with longer keys, say) was being
    // appended: its header reached the disk, its payload pages did not and
    // read back as the stale bytes of a deleted, older manifest.
    let payload_len = old_frame.len() + 64;
    let mut torn = Vec::new();
    torn.extend_from_slice(&0x1234_5678u32.to_le_bytes()); // the new edit's CRC
    torn.extend_from_slice(&(payload_len as u32).to_le_bytes());
    let mut stale = vec![0x5au8; 24];
    stale.extend_from_slice(&old_frame);
    stale.resize(payload_len, 0xa5);
    torn.extend_from_slice(&stale);
    bytes.extend_from_slice(&torn);
    std::fs::write(&path, &bytes).unwrap();

    let reopened = Database::open(dir.path())
        .expect("a torn, never-acknowledged final manifest append made the database unopenable");
    for i in 0..100 {
        assert!(reopened.get(format!("k{i:03}")).unwrap().is_some());
    }
    reopened.close().unwrap();
}
