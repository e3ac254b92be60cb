//! The end pad: tables of 2 MiB and more end on a 2 MiB boundary (so the
//! page cache can hold their meta blocks in a huge page), read back as
//! before, and the projected length compaction cuts by is close to the
//! real one.

use super::*;
use crate::sstable::builder::{
    end_pad_len, CUT_MARGIN, CUT_WINDOW, MAX_PAD_FRACTION, WRITE_BUFFER,
};

const ALIGN: u64 = WRITE_BUFFER as u64;

/// `n` keys with 100-byte values (about 130 bytes of file each).
fn rows_100(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| put(format!("key{i:013}").as_bytes(), 5, &[i as u8; 100]))
        .collect()
}

/// The table's meta block handles by name, as its metaindex lists them.
fn meta_names(file: &[u8]) -> Vec<String> {
    let table = open_vec(file.to_vec()).unwrap();
    let mut names = table.meta_block_names();
    names.sort();
    names
}

#[test]
fn a_table_over_2_mib_ends_on_a_boundary_unless_the_pad_is_too_big() {
    let mut padded = 0;
    for n in [20_000, 29_000, 42_500, 47_000] {
        let rows = rows_100(n);
        let file = build_bytes_with(&rows, opts(4096, Compression::None));
        let len = file.len() as u64;
        assert!(len >= ALIGN, "{n} rows: {len} bytes");
        let table = open_vec(file).unwrap();
        match table.meta_block_len("pad") {
            Some(pad) => {
                padded += 1;
                assert_eq!(len % ALIGN, 0, "{n} rows: {len} bytes");
                assert!(
                    pad as u64 * MAX_PAD_FRACTION <= len,
                    "{n} rows: pad {pad} of {len}"
                );
            }
            // The pad it would have needed: over an eighth of the table.
            None => assert!(
                (ALIGN - len % ALIGN) * MAX_PAD_FRACTION > len,
                "{n} rows: {len}"
            ),
        }
        // Every key through the hash index and the iterator, as any table.
        for r in rows.iter().step_by(97) {
            assert_eq!(got(&table, &r.0, 10).unwrap().as_ref(), Some(r));
        }
        check_all_with(&rows, opts(4096, Compression::None), 2);
    }
    assert!(padded >= 1, "{padded} of 4 padded");
}

#[test]
fn compressed_tables_are_padded_too() {
    let rows = rows_100(40_000);
    for c in [Compression::Lz4, Compression::Zstd] {
        let file = build_bytes_with(&rows, opts(4096, c));
        if file.len() as u64 >= 2 * ALIGN {
            assert_eq!(file.len() as u64 % ALIGN, 0, "{c:?}");
        }
        check_all_with(&rows, opts(4096, c), 2);
    }
}

#[test]
fn small_tables_get_no_pad() {
    let rows = rows_100(2_000);
    let file = build_bytes_with(&rows, opts(4096, Compression::None));
    assert!((file.len() as u64) < ALIGN);
    assert!(!meta_names(&file).contains(&"pad".to_string()));
}

#[test]
fn the_pad_is_never_more_than_an_eighth() {
    // Just past a boundary: the pad would be nearly 2 MiB of a 2 MiB table.
    assert_eq!(end_pad_len(ALIGN - 10, 20), None);
    // Exactly on one, after the pad block's own 5-byte trailer.
    assert_eq!(end_pad_len(4 * ALIGN - 105, 100), Some(0));
    // Short of one by 1000 bytes: 995 zeros and the trailer.
    assert_eq!(end_pad_len(8 * ALIGN - 1100, 100), Some(995));
    // Below one boundary: no pad.
    assert_eq!(end_pad_len(1000, 100), None);
    for at in (ALIGN..20 * ALIGN).step_by(77_777) {
        if let Some(zeros) = end_pad_len(at, 4096) {
            let total = at + 4096 + zeros as u64 + 5;
            assert_eq!(total % ALIGN, 0);
            assert!((zeros as u64 + 5) * MAX_PAD_FRACTION <= total);
        }
    }
}

/// The builder's projected length (compaction's cut) is within
/// `CUT_MARGIN` of the length it then writes without a pad, at every size.
#[test]
fn projected_length_is_within_the_cut_margin() {
    for (c, bloom, hash) in [
        (Compression::None, 10, true),
        (Compression::Lz4, 10, true),
        (Compression::None, 0, true),
        (Compression::None, 10, false),
    ] {
        for n in [1, 500, 9_000, 31_000] {
            let rows = rows_100(n);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.sst");
            let options = TableOptions {
                bloom_bits_per_key: bloom,
                hash_index: hash,
                ..opts(4096, c)
            };
            let mut b = TableBuilder::with_options(OsFileSystem.create(&path).unwrap(), options);
            b.without_end_pad();
            for (k, ts, kind, v) in &rows {
                b.add(k, *ts, *kind, v).unwrap();
            }
            let projected = b.projected_len();
            let written = b.finish().unwrap().file_size;
            assert!(
                projected.abs_diff(written) < CUT_MARGIN,
                "{c:?} bloom {bloom} hash {hash} {n} rows: projected {projected}, written {written}"
            );
        }
    }
}

/// Cut where `ends_near_boundary` says, the pad is what the window allows.
#[test]
fn a_table_cut_near_a_boundary_gets_a_small_pad() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let mut b = TableBuilder::with_options(
        OsFileSystem.create(&path).unwrap(),
        opts(4096, Compression::None),
    );
    let mut i = 0u64;
    while i < 20_000 || !b.ends_near_boundary() {
        b.add(
            format!("key{i:013}").as_bytes(),
            5,
            ValueKind::Put,
            &[7; 100],
        )
        .unwrap();
        i += 1;
        assert!(i < 200_000, "never near a boundary");
    }
    let written = b.finish().unwrap().file_size;
    assert_eq!(written % ALIGN, 0);
    let file = OsFileSystem.read(&path).unwrap();
    let table = open_vec(file).unwrap();
    let pad = table.meta_block_len("pad").unwrap();
    assert!(pad as u64 <= CUT_WINDOW + CUT_MARGIN, "pad {pad}");
}

/// Range tombstones count toward the projection too.
#[test]
fn projected_length_counts_range_tombstones() {
    let rows = rows_100(9_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let mut b = TableBuilder::with_options(
        OsFileSystem.create(&path).unwrap(),
        opts(4096, Compression::None),
    );
    b.without_end_pad();
    for (k, ts, kind, v) in &rows {
        b.add(k, *ts, *kind, v).unwrap();
    }
    for i in 0..2_000u64 {
        b.add_range_tombstone(crate::range_del::RangeTombstone {
            start: format!("key{:013}", i * 4).into_bytes(),
            end: format!("key{:013}x{}", i * 4, "y".repeat(i as usize % 300)).into_bytes(),
            ts: 3 + i,
        });
    }
    let projected = b.projected_len();
    let written = b.finish().unwrap().file_size;
    assert!(
        projected.abs_diff(written) < CUT_MARGIN,
        "projected {projected}, written {written}"
    );
}
