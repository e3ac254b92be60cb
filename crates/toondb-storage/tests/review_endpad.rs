//! Review of the end pad (tables end on a 2 MiB boundary through a `pad`
//! meta block) and of compaction's aligned output cut
//! (`compaction/job.rs` `output_full`, `TableBuilder::ends_near_boundary`).
//!
//! The table files are parsed here directly (footer, metaindex), so the
//! checks see what is on disk: each file's length, its `pad` block, and
//! whether the manifest's sizes (`stats().table_bytes`) match the files.

mod support;

use std::ops::Bound;
use std::path::Path;

use support::Rng;
use toondb_storage::{Compression, Database, Options, ScanOptions};

const ALIGN: u64 = 2 << 20;
/// The most pad the docs promise for a compaction output cut where the
/// builder said so (compaction.md: "at most ~72 KiB": the 64 KiB window,
/// the 8 KiB margin).
const PROMISED_PAD: u64 = 72 << 10;

fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The meta blocks a version-2 table file lists: (name, stored length).
fn meta_blocks(file: &[u8]) -> Vec<(String, u64)> {
    let footer = &file[file.len() - 64..];
    assert_eq!(&footer[56..], b"TOONSST2");
    let (mi_off, mi_len) = (u64_at(footer, 16) as usize, u64_at(footer, 24) as usize);
    // Stored: contents | type | crc; contents: entries | offsets | count.
    let contents = &file[mi_off..mi_off + mi_len - 5];
    let count = u32::from_le_bytes(contents[contents.len() - 4..].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut pos = 0;
    for _ in 0..count {
        let klen = varint(contents, &mut pos) as usize;
        let vlen = varint(contents, &mut pos) as usize;
        let mlen = varint(contents, &mut pos) as usize;
        let name = String::from_utf8_lossy(&contents[pos..pos + klen]).into_owned();
        let value = &contents[pos + klen..pos + klen + vlen];
        let len = u64::from(u32::from_le_bytes(value[8..12].try_into().unwrap()));
        out.push((name, len));
        pos += klen + vlen + mlen;
    }
    out
}

#[derive(Debug, Clone)]
struct TableInfo {
    name: String,
    len: u64,
    /// Stored length of the `pad` block (zeros and trailer), if any.
    pad: Option<u64>,
}

fn tables(dir: &Path) -> Vec<TableInfo> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sst") {
            continue;
        }
        let file = std::fs::read(entry.path()).unwrap();
        let pad = meta_blocks(&file)
            .into_iter()
            .find_map(|(n, len)| (n == "pad").then_some(len));
        out.push(TableInfo {
            name,
            len: file.len() as u64,
            pad,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every table: a pad exactly when it ends on a boundary (and is at least
/// 2 MiB long), never more than an eighth; the manifest's sizes are the
/// files' lengths.
fn check_pads(db: &Database, dir: &Path) -> Vec<TableInfo> {
    let infos = tables(dir);
    for t in &infos {
        if let Some(pad) = t.pad {
            assert_eq!(t.len % ALIGN, 0, "{t:?}");
            assert!(pad * 8 <= t.len, "{t:?}");
        }
    }
    let s = db.stats();
    assert_eq!(s.tables, infos.len() as u64, "{infos:?}");
    assert_eq!(
        s.table_bytes,
        infos.iter().map(|t| t.len).sum::<u64>(),
        "{infos:?}"
    );
    infos
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:012}").into_bytes()
}

fn value(i: u64, len: usize) -> Vec<u8> {
    // Reproducible from `i`; the first half random, the rest one byte, so
    // compressed tables compress to about half (tables are uncompressed
    // by default).
    let mut rng = Rng(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len)
        .map(|j| match j < len / 2 {
            true => rng.next() as u8,
            false => i as u8,
        })
        .collect()
}

fn fill(db: &Database, n: u64, len: usize) {
    for i in 0..n {
        db.put(key(i), value(i, len)).unwrap();
    }
}

/// Reads everything back through gets, get_many, both scan directions, a
/// snapshot and a transaction.
fn check_reads(db: &Database, n: u64, len: usize) {
    for i in (0..n).step_by(997) {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, len)), "get {i}");
    }
    let keys: Vec<Vec<u8>> = (0..n).step_by(1311).map(key).collect();
    let many = db.get_many(&keys).unwrap();
    for (k, v) in keys.iter().zip(many) {
        let i: u64 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
        assert_eq!(v, Some(value(i, len)));
    }
    let fwd: Vec<_> = db
        .iter(ScanOptions::default())
        .unwrap()
        .collect::<toondb_storage::Result<Vec<_>>>()
        .unwrap();
    assert_eq!(fwd.len() as u64, n);
    for (i, (k, v)) in fwd.iter().enumerate().step_by(503) {
        assert_eq!(k, &key(i as u64));
        assert_eq!(v, &value(i as u64, len));
    }
    let back: Vec<_> = db
        .iter({
            let mut o = ScanOptions::default();
            o.reverse = true;
            o.lower = Bound::Included(key(n / 3));
            o
        })
        .unwrap()
        .collect::<toondb_storage::Result<Vec<_>>>()
        .unwrap();
    assert_eq!(back.len() as u64, n - n / 3);
    assert_eq!(back[0].0, key(n - 1));
    let snap = db.snapshot().unwrap();
    assert_eq!(snap.get(key(n / 2)).unwrap(), Some(value(n / 2, len)));
    let txn = db.transaction().unwrap();
    assert_eq!(txn.get(key(n / 5)).unwrap(), Some(value(n / 5, len)));
    drop(txn);
    drop(snap);
    let report = db.verify().unwrap();
    assert!(report.ok(), "{report:?}");
}

fn options(target: u64) -> Options {
    Options::default()
        .memtable_size(8 << 20)
        .target_file_size(target)
}

/// Loads `n` keys with `len`-byte values, compacts, and checks every
/// table and every read path, before and after a reopen. Returns the
/// tables after compaction.
fn load_and_compact(opts: Options, n: u64, len: usize) -> (tempfile::TempDir, Vec<TableInfo>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    fill(&db, n, len);
    db.flush().unwrap();
    support::wait_idle(&db);
    check_pads(&db, dir.path());
    db.compact().unwrap();
    support::wait_idle(&db);
    let infos = check_pads(&db, dir.path());
    // "Exact after compact() with no snapshot held".
    let s = db.stats();
    assert_eq!(s.live_bytes_estimate, s.table_bytes, "{infos:?}");
    check_reads(&db, n, len);
    db.close().unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), opts).unwrap();
    check_pads(&db, dir.path());
    check_reads(&db, n, len);
    // A backup (hard links) opens, verifies and reads the same.
    let dest = tempfile::tempdir().unwrap();
    let copy = dest.path().join("copy");
    db.backup(&copy).unwrap();
    db.close().unwrap();
    let db = Database::open(&copy).unwrap();
    check_pads(&db, &copy);
    check_reads(&db, n, len);
    db.close().unwrap();
    (dir, infos)
}

fn describe(infos: &[TableInfo]) -> String {
    infos
        .iter()
        .map(|t| {
            format!(
                "{}: {:.3} MiB pad {}",
                t.name,
                t.len as f64 / ALIGN as f64 * 2.0,
                t.pad
                    .map_or("-".to_string(), |p| format!("{} KiB", p >> 10))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The documented promise for targets of 4 MiB and more: every output but
/// the last is cut where its pad is small (aligned, pad <= ~72 KiB), and
/// holds target..target*1.25 of keys and values.
fn assert_aligned_cuts(target: u64, infos: &[TableInfo]) {
    let shown = describe(infos);
    eprintln!("target {} MiB:\n{shown}", target >> 20);
    assert!(infos.len() >= 2, "{shown}");
    // All but the last (largest-numbered is not necessarily last in key
    // order; check every table, allowing one that is short).
    let short = infos.iter().filter(|t| t.len < target).count();
    assert!(short <= 1, "{shown}");
    for t in infos.iter().filter(|t| t.len >= target) {
        assert!(
            t.pad.is_some_and(|p| p <= PROMISED_PAD),
            "target {} MiB: an output cut for size was not cut near a boundary: {t:?}\n{shown}",
            target >> 20
        );
    }
}

#[test]
fn endpad_outputs_300k_x_100b_target_16_mib() {
    let (_dir, infos) = load_and_compact(options(16 << 20), 300_000, 100);
    assert_aligned_cuts(16 << 20, &infos);
}

/// At a 4 MiB target the window near the 4 MiB boundary is passed before
/// the output holds its target (the file is ~1.1x the key and value
/// bytes) and the next one (6 MiB) lies past the quarter overshoot: the
/// aligned cut held every output to 1.25x its target (5.5 MiB files) and
/// then padded each by 520 KiB to 6 MiB (8% of the table bytes). Outputs
/// must be cut at the target (as before the change) or near a boundary.
#[test]
fn endpad_outputs_300k_x_100b_target_4_mib() {
    let target = 4u64 << 20;
    let (_dir, infos) = load_and_compact(options(target), 300_000, 100);
    let shown = describe(&infos);
    eprintln!("target 4 MiB:\n{shown}");
    for t in &infos {
        let near_boundary = t.pad.is_some_and(|p| p <= PROMISED_PAD);
        assert!(
            near_boundary || t.len <= target + target / 8,
            "an output held past its target for a boundary it never reached: {t:?}\n{shown}"
        );
    }
    assert!(pad_share(&infos) <= 0.01, "{shown}");
}

#[test]
fn endpad_outputs_300k_x_100b_target_8_mib() {
    let (_dir, infos) = load_and_compact(options(8 << 20), 300_000, 100);
    assert_aligned_cuts(8 << 20, &infos);
}

/// Pad bytes as a share of all table bytes.
fn pad_share(infos: &[TableInfo]) -> f64 {
    let pads: u64 = infos.iter().filter_map(|t| t.pad).sum();
    let total: u64 = infos.iter().map(|t| t.len).sum();
    pads as f64 / total as f64
}

/// After `compact()` the pads must cost about nothing (the change's claim:
/// within ~1% of the table bytes before it).
#[test]
fn endpad_space_after_compact_is_within_one_percent() {
    let mut over = Vec::new();
    for target in [4u64 << 20, 16 << 20] {
        let (_dir, infos) = load_and_compact(options(target), 300_000, 100);
        let share = pad_share(&infos);
        eprintln!("target {} MiB: pads {:.2}%", target >> 20, share * 100.0);
        if share > 0.01 {
            over.push(format!(
                "target {} MiB: pads are {:.2}% of the table bytes after compact():\n{}",
                target >> 20,
                share * 100.0,
                describe(&infos)
            ));
        }
    }
    assert!(over.is_empty(), "{}", over.join("\n"));
}

/// Range tombstones that survive a compaction are added to each output at
/// `finish` (job.rs `RangeDels::add_share`), after the cut was decided by
/// `ends_near_boundary`, whose projection never saw them: the rangedel
/// block then pushes the table past the boundary it was cut 8-64 KiB short
/// of, and the pad is nearly 2 MiB instead of <= ~72 KiB.
#[test]
fn endpad_range_tombstones_in_outputs_keep_the_pad_small() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(16 << 20);
    let db = Database::open_with(dir.path(), opts).unwrap();
    let n = 300_000u64;
    fill(&db, n, 100);
    // Held across the compaction: every tombstone newer than it survives.
    let snap = db.snapshot().unwrap();
    // Tombstones over gaps between keys (they delete nothing): 1 per 25.
    for i in (0..n).step_by(25) {
        let mut start = key(i);
        start.push(b'a');
        let mut end = key(i);
        end.push(b'b');
        db.delete_range(start, end).unwrap();
    }
    db.flush().unwrap();
    support::wait_idle(&db);
    db.compact().unwrap();
    support::wait_idle(&db);
    let infos = check_pads(&db, dir.path());
    let shown = describe(&infos);
    eprintln!("{shown}");
    check_reads(&db, n, 100);
    drop(snap);
    for t in infos.iter().filter(|t| t.len >= 16 << 20) {
        assert!(
            t.pad.is_some_and(|p| p <= PROMISED_PAD),
            "an output cut for size got a large pad (or none) once its range tombstones were added: {t:?}\n{shown}"
        );
    }
    db.close().unwrap();
}

/// Values much larger than the 56 KiB cut window: every entry steps over
/// it, so outputs are cut at the quarter overshoot; still bounded.
#[test]
fn endpad_large_values_bound_output_size() {
    let target = 4u64 << 20;
    let (_dir, infos) = load_and_compact(options(target), 300, 200_000);
    eprintln!("{}", describe(&infos));
    for t in &infos {
        assert!(
            t.len <= target + target / 4 + (1 << 20) + 2 * 200_000,
            "{t:?}"
        );
    }
    let target = 16u64 << 20;
    let (_dir, infos) = load_and_compact(options(target), 400, 200_000);
    eprintln!("{}", describe(&infos));
    for t in &infos {
        assert!(
            t.len <= target + target / 4 + (2 << 20) + 2 * 200_000,
            "{t:?}"
        );
    }
}

/// Compressed tables (LZ4, zstd) and tables without a filter or a hash
/// index: padded where the rules say, every read path, reopen, backup.
#[test]
fn endpad_compressed_and_filterless_tables() {
    for (name, opts) in [
        ("lz4", options(16 << 20).compression(Compression::Lz4)),
        ("zstd", options(16 << 20).compression(Compression::Zstd)),
        (
            "no filter, no hash index",
            options(16 << 20).bloom_bits_per_key(0).hash_index(false),
        ),
        ("lz4 64 KiB blocks", {
            options(8 << 20)
                .compression(Compression::Lz4)
                .block_size(64 << 10)
        }),
    ] {
        let (_dir, infos) = load_and_compact(opts, 300_000, 100);
        let shown = describe(&infos);
        eprintln!("{name}:\n{shown}");
        assert!(pad_share(&infos) <= 0.01, "{name}:\n{shown}");
        for t in &infos {
            assert!(t.pad.is_none_or(|p| p <= PROMISED_PAD), "{name}: {t:?}");
        }
    }
}

/// Columnar tables: compaction cuts their outputs at key partitions (one
/// per column's chunks) as well as for size; the aligned cut must neither
/// starve the partition cuts nor leave a large pad, and every row reads
/// back, before and after a reopen.
#[test]
fn endpad_columnar_partitions() {
    use toondb_storage::{ColumnDef, ColumnType, Schema, TableScanOptions, Value};
    let dir = tempfile::tempdir().unwrap();
    let opts = options(8 << 20);
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    let schema = Schema::new(
        vec![
            ColumnDef::new("id", ColumnType::I64),
            ColumnDef::new("n", ColumnType::I64),
            ColumnDef::new("payload", ColumnType::Bytes),
        ],
        "id",
    );
    let t = db.create_table("t", schema).unwrap();
    let rows = 120_000i64;
    let row = |i: i64| {
        vec![
            Value::I64(i),
            Value::I64(i * 3),
            Value::Bytes(value(i as u64, 150)),
        ]
    };
    for start in (0..rows).step_by(5_000) {
        let batch: Vec<Vec<Value>> = (start..start + 5_000).map(row).collect();
        t.insert(&db, &batch).unwrap();
    }
    db.compact().unwrap();
    support::wait_idle(&db);
    let infos = check_pads(&db, dir.path());
    eprintln!("{}", describe(&infos));
    for t in &infos {
        assert!(t.pad.is_none_or(|p| p <= PROMISED_PAD), "{t:?}");
    }
    let check = |db: &Database| {
        let t = db.table("t").unwrap();
        let mut scan = t.scan(db, TableScanOptions::default()).unwrap();
        let mut next = 0i64;
        loop {
            let b = scan.next_batch(1000).unwrap();
            if b.is_empty() {
                break;
            }
            for r in 0..b.len() {
                let got: Vec<Value> = b.columns.iter().map(|c| c[r].clone()).collect();
                assert_eq!(got, row(next), "row {next}");
                next += 1;
            }
        }
        assert_eq!(next, rows);
        let report = db.verify().unwrap();
        assert!(report.ok(), "{report:?}");
    };
    check(&db);
    db.close().unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), opts).unwrap();
    check_pads(&db, dir.path());
    check(&db);
    db.close().unwrap();
}
