//! Review of `TableBuilder::projected_len`, which compaction cuts by
//! (`ends_near_boundary`): the docs promise it is within `CUT_MARGIN`
//! (8 KiB) of the length finished, so a cut 8-64 KiB short of a 2 MiB
//! boundary gets a pad of at most ~72 KiB and never crosses the boundary
//! (which would make the pad nearly 2 MiB, or none).

use super::*;
use crate::sstable::builder::CUT_MARGIN;

fn projected_and_written(rows: &[Row], options: TableOptions) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let mut b = TableBuilder::with_options(OsFileSystem.create(&path).unwrap(), options);
    b.without_end_pad();
    for (k, ts, kind, v) in rows {
        b.add(k, *ts, *kind, v).unwrap();
    }
    let projected = b.projected_len();
    let written = b.finish().unwrap().file_size;
    (projected, written)
}

/// The properties block holds the largest key, which the projection does
/// not count (it counts the smallest twice): a long last key makes the
/// table longer than projected by about that key's length, past a cut
/// boundary.
#[test]
fn projected_length_counts_a_long_largest_key() {
    let mut rows: Vec<Row> = (0..9_000)
        .map(|i| put(format!("key{i:013}").as_bytes(), 5, &[i as u8; 100]))
        .collect();
    rows.push(put(&[b'z'; 32 << 10], 5, b"v"));
    // With 4 KiB blocks the long key closes its block at once and the
    // projection's allowance for the open block's index entry (its last
    // key) happens to cover the properties' copy; in a larger open block
    // it does not.
    let (projected, written) = projected_and_written(&rows, opts(4096, Compression::None));
    assert!(
        projected.abs_diff(written) < CUT_MARGIN,
        "4 KiB blocks: projected {projected}, written {written}"
    );
    let (projected, written) = projected_and_written(&rows, opts(64 << 10, Compression::None));
    assert!(
        projected.abs_diff(written) < CUT_MARGIN,
        "projected {projected}, written {written}"
    );
}

/// The open data block is counted uncompressed; with large blocks that
/// compress well the table comes out far shorter than projected.
#[test]
fn projected_length_with_large_compressed_blocks() {
    let mut worst = (0, 0, 0);
    for n in (9_000..9_600).step_by(40) {
        let rows: Vec<Row> = (0..n)
            .map(|i| put(format!("key{i:013}").as_bytes(), 5, &[i as u8; 100]))
            .collect();
        let (projected, written) = projected_and_written(&rows, opts(64 << 10, Compression::Lz4));
        if projected.abs_diff(written) > worst.0 {
            worst = (projected.abs_diff(written), projected, written);
        }
    }
    assert!(
        worst.0 < CUT_MARGIN,
        "projected {}, written {}",
        worst.1,
        worst.2
    );
}
