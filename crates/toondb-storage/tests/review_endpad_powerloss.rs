//! Review of the end pad under crashes: a power cut or kill after every
//! file-system step of a flush and of a compaction whose tables carry a
//! `pad` block (tables of ~4 MiB, so the pad is written), then reopen:
//! every synced write is there, no torn table is in the manifest (open
//! maps and checks every table, and `verify()` reads every block), and no
//! orphaned table file is left.

mod powerloss_support;

use std::path::Path;

use toondb_storage::io::{Crash, FileSystem, PowerCut, PowerLossFs};
use toondb_storage::{Database, Options, WriteBatch, WriteOptions};

use powerloss_support::{
    check_no_orphans, fresh_disk, options, reopen_after_crash, unique_dir, wait_idle, Model,
    Tolerate,
};

const ALIGN: usize = 2 << 20;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:09}").into_bytes()
}

fn val(i: u32, gen: u32) -> Vec<u8> {
    let mut v = format!("{i}-{gen}-").into_bytes();
    v.resize(100, (i % 251) as u8);
    v
}

/// Whether the table file holds a `pad` meta block (parsed by hand).
fn has_pad(file: &[u8]) -> bool {
    let footer = &file[file.len() - 64..];
    let mi_off = u64::from_le_bytes(footer[16..24].try_into().unwrap()) as usize;
    let mi_len = u64::from_le_bytes(footer[24..32].try_into().unwrap()) as usize;
    let meta = &file[mi_off..mi_off + mi_len];
    meta.windows(3).any(|w| w == b"pad")
}

/// An 8 MiB target: compaction cuts its first output near a 2 MiB
/// boundary, where it is padded (only such outputs are, besides flushes).
fn opts(fs: &PowerLossFs) -> Options {
    options(fs, 256 << 20)
        .block_size(4096)
        .target_file_size(8 << 20)
        .auto_compaction(false)
}

/// Keys per generation: a ~3.9 MiB flush (padded to 4 MiB), or ~12 MiB
/// for a compaction whose first output is cut near 10 MiB.
fn keys(flush_only: bool) -> u32 {
    if flush_only {
        29_000
    } else {
        90_000
    }
}

/// Writes `n` keys of generation `gen` (the last one synced).
fn load(db: &Database, model: &mut Model, gen: u32, n: u32) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut b = WriteBatch::new();
        let mut commit = Vec::new();
        for &i in chunk {
            b.put(key(i), val(i, gen)).unwrap();
            commit.push((key(i), Some(val(i, gen))));
        }
        let last = *chunk.last().unwrap() == n - 1;
        db.write_with(b, WriteOptions::sync(last)).unwrap();
        model.commit(commit, last);
    }
}

fn padded_tables(fs: &PowerLossFs, dir: &Path) -> usize {
    fs.list(dir)
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".sst"))
        .filter(|n| {
            let file = fs.read(&dir.join(n)).unwrap();
            file.len().is_multiple_of(ALIGN) && has_pad(&file)
        })
        .count()
}

/// `flush_only`: crash in the second flush; else in the compaction of the
/// two level-0 tables.
fn build(fs: &PowerLossFs, dir: &Path, flush_only: bool) -> (Database, Model) {
    let db = Database::open_with(dir, opts(fs)).unwrap();
    let mut model = Model::default();
    let n = keys(flush_only);
    load(&db, &mut model, 1, n);
    db.flush().unwrap();
    model.all_durable();
    load(&db, &mut model, 2, n);
    if !flush_only {
        db.flush().unwrap();
        model.all_durable();
    }
    (db, model)
}

fn step(db: &Database, flush_only: bool) {
    let _ = if flush_only { db.flush() } else { db.compact() };
}

fn run(flush_only: bool) {
    let name = if flush_only {
        "endpad-flush"
    } else {
        "endpad-compact"
    };
    let dir = unique_dir(name);
    let fs = fresh_disk(&dir);
    let (db, _) = build(&fs, &dir, flush_only);
    let before = fs.mutations();
    step(&db, flush_only);
    let steps = fs.mutations() - before;
    assert!(
        padded_tables(&fs, &dir) >= 1,
        "the workload must write padded tables"
    );
    db.close().unwrap();
    drop(db);
    let mut failures = Vec::new();
    for i in 1..=steps {
        for crash in [
            Crash::Kill,
            Crash::PowerCut(PowerCut::drop_unsynced()),
            Crash::PowerCut(PowerCut::random(i * 7 + 1, true)),
            Crash::PowerCut(PowerCut::pages(i * 7 + 2)),
        ] {
            let dir = unique_dir(name);
            let fs = fresh_disk(&dir);
            let (db, mut model) = build(&fs, &dir, flush_only);
            fs.crash_after(i, crash);
            step(&db, flush_only);
            let db = match reopen_after_crash(&fs, db, &dir, &opts(&fs)) {
                Ok(db) => db,
                Err(e) => {
                    failures.push(format!("step {i} {crash:?}: {e}"));
                    continue;
                }
            };
            if let Err(e) = model.check_all(&db) {
                failures.push(format!("step {i} {crash:?}: {e}"));
            }
            match db.verify() {
                Ok(r) if r.ok() => {}
                other => failures.push(format!("step {i} {crash:?}: verify {other:?}")),
            }
            // The reopen flushes what it replayed in the background: a
            // table written before its manifest edit is not an orphan yet.
            wait_idle(&db);
            if let Err(e) = check_no_orphans(&fs, &dir, Tolerate::default()) {
                failures.push(format!("step {i} {crash:?}: {e}"));
            }
            db.close().unwrap();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn endpad_power_cut_at_every_step_of_a_padded_flush() {
    run(true);
}

#[test]
fn endpad_power_cut_at_every_step_of_a_padded_compaction() {
    run(false);
}
