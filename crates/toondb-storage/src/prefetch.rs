//! A cache-line prefetch hint for data a loop is about to reach out of
//! order: issued a few iterations ahead, the misses overlap instead of
//! coming one after another.

/// Asks the CPU to start loading the cache lines that hold `value`'s
/// first and last bytes (all of it, for a value of up to 64 bytes however
/// it straddles lines). A hint only: it never faults and changes no data.
#[inline]
pub(crate) fn prefetch_value<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let first = std::ptr::from_ref(value).cast::<i8>();
        // SAFETY: `_mm_prefetch` never faults and reads nothing the program
        // sees; both pointers lie inside the live value `value` refers to
        // (the last byte is `size_of::<T>() - 1` past the first).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(first.add(std::mem::size_of::<T>().saturating_sub(1)));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
