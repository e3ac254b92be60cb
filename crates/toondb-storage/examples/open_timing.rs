//! Times `Database::open` of an existing directory (a copy of a crash
//! image), for profiling recovery: `cargo run --release --example
//! open_timing -- DIR [KEY]`. With KEY, also times the first read of it.
//! `TOONDB_AUTO_COMPACTION=0` opens without automatic compaction.

use std::time::Instant;

/// CPU time of the calling thread so far (Linux: the first field of
/// /proc/thread-self/schedstat, in ns), to tell the open's own work from
/// waiting on the device or for a core on a busy machine.
fn thread_cpu() -> Option<std::time::Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(std::time::Duration::from_nanos(ns))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: open_timing DIR [KEY]")?;
    let key = args.next();
    // TOONDB_AUTO_COMPACTION=0: open without automatic compaction, to see
    // what a compaction started by the open costs the first read.
    let auto = std::env::var("TOONDB_AUTO_COMPACTION").map_or(true, |v| v != "0");
    let options = toondb_storage::Options::default().auto_compaction(auto);
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let db = toondb_storage::Database::open_with(&dir, options)?;
    let opened = t0.elapsed();
    if let (Some(a), Some(b)) = (cpu0, thread_cpu()) {
        eprintln!("open cpu: {:?}", b.saturating_sub(a));
    }
    if let Some(k) = key {
        let found = db.get(k.as_bytes())?.is_some();
        eprintln!("first read: found {found} at {:?}", t0.elapsed());
    }
    let r = db.stats().recovery;
    eprintln!(
        "open {:?}: replayed {} records ({} bytes) from {} segments",
        opened, r.records, r.bytes, r.segments
    );
    // Like a killed app: no close, so the recovered writes stay in the WAL.
    std::process::exit(0);
}
