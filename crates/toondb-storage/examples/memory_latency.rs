//! Latency of a dependent random load by working-set size, to read a
//! benchmark run against the machine it ran on: `cargo run --release
//! --example memory_latency`. A read of a large database is a few such
//! loads (a filter word, a hash bucket, an entry), so where this machine's
//! curve steps up from cache to DRAM, and how high, decides most of row 3
//! of docs/performance.md's targets.
//!
//! Each size is a random cycle through its 64-byte lines (every load's
//! address comes from the previous load, so no two overlap), in anonymous
//! memory advised `MADV_HUGEPAGE` so that page walks stay out of the
//! figure as they do for the tables' 2 MiB-aligned maps. Prints the best of
//! three passes per size, in ns per load. `-- small` advises
//! `MADV_NOHUGEPAGE` instead (4 KiB pages, as a table map cold from the
//! device gets): on a VM whose share of the L3 is small, physically
//! contiguous huge pages can also shrink what of it a working set gets, so
//! the two curves differ below the DRAM sizes too.

use std::time::Instant;

const LINE: usize = 64;
const LOADS: usize = 4_000_000;
const HUGE_PAGE: usize = 2 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let small_pages = std::env::args().nth(1).as_deref() == Some("small");
    let sizes_kib = [256usize, 1024, 4096, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for kib in sizes_kib {
        let lines = kib * 1024 / LINE;
        // 2 MiB more than needed, used from its first 2 MiB boundary on, so
        // that huge pages can back all of it.
        let mut map = memmap2::MmapMut::map_anon(lines * LINE + HUGE_PAGE)?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(match small_pages {
            true => memmap2::Advice::NoHugePage,
            false => memmap2::Advice::HugePage,
        }); // advisory: the figure then shows what the kernel gave
        let skip = (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
        let map = &mut map[skip..skip + lines * LINE];
        // The cycle: line order[i] holds the index of line order[i + 1].
        let mut order: Vec<usize> = (0..lines).collect();
        for i in (1..lines).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for (i, &line) in order.iter().enumerate() {
            let next = order[(i + 1) % lines] as u64;
            map[line * LINE..line * LINE + 8].copy_from_slice(&next.to_le_bytes());
        }
        let load = |line: usize| {
            let at = line * LINE;
            let bytes: [u8; 8] = map[at..at + 8].try_into().unwrap_or_default();
            u64::from_le_bytes(bytes) as usize
        };
        let mut line = order[0];
        for _ in 0..LOADS / 4 {
            line = load(line); // warm the caches and the TLB
        }
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            for _ in 0..LOADS {
                line = load(line);
            }
            best = best.min(start.elapsed().as_nanos() as f64 / LOADS as f64);
        }
        let pages = if small_pages {
            "4 KiB pages"
        } else {
            "huge pages"
        };
        println!("{kib:>8} KiB: {best:6.1} ns per dependent load, {pages} (ends at line {line})");
    }
    Ok(())
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
