//! Memory a call will need, checked before it is taken.
//!
//! Rust aborts the process when an allocation fails, which no caller of a library can
//! handle. So every call whose sizes come from the caller or from a file first estimates its
//! peak heap (an upper bound, checked against a counting allocator in `tests/memory.rs`)
//! and asks the system for that much at once: a refusal, or an estimate over the caller's
//! `memory_limit_mib`, is an [`Error::OutOfMemory`] before any work starts. Under an address
//! space limit (`ulimit -v`, `RLIMIT_AS`) or a size no machine has, that is what the caller
//! gets instead of an abort. The trial mapping is never written, so it costs no RAM.

use crate::error::{Error, Result};

/// Address space kept free beyond an estimate (bytes): threads' stacks and malloc arenas,
/// the small buffers no estimate lists, and what the caller's process does meanwhile.
const HEADROOM_BYTES: u64 = 128 << 20;

/// Address space a thread takes (bytes): its stack (glibc's default, 8 MiB) and the malloc
/// arena glibc reserves for it where there is room (64 MiB on 64-bit; an engine of 8
/// threads grows the process by 508 MiB). Counting the stack alone is not enough: under
/// `ulimit -v`, arenas taken by the first threads leave no room for the stacks of the
/// next ones (measured: ONNX Runtime deadlocked, glibc aborted).
pub(crate) const THREAD_BYTES: u64 = 72 << 20;

/// Fails with [`Error::OutOfMemory`] unless `bytes` (what `what` needs at its peak) fit
/// under `limit_bytes` and the system can provide them now, with headroom.
pub(crate) fn ensure(bytes: u64, limit_bytes: Option<u64>, what: &str) -> Result<()> {
    let refuse = |available: String| Error::OutOfMemory {
        what: what.to_string(),
        need_mib: bytes.div_ceil(1 << 20),
        available,
    };
    if let Some(limit) = limit_bytes.filter(|&l| bytes > l) {
        return Err(refuse(format!(
            "over the memory limit of {} MiB",
            limit >> 20
        )));
    }
    let trial = usize::try_from(bytes.saturating_add(HEADROOM_BYTES)).unwrap_or(usize::MAX);
    if available(trial) {
        Ok(())
    } else {
        Err(refused(what, bytes))
    }
}

/// The system refused `bytes` for `what`.
pub(crate) fn refused(what: &str, bytes: u64) -> Error {
    Error::OutOfMemory {
        what: what.to_string(),
        need_mib: bytes.div_ceil(1 << 20),
        available: "more than the system can provide now".into(),
    }
}

/// Whether `bytes` of address space can be mapped now, asked of the kernel directly (the
/// allocator would count it as an allocation), and given back at once.
#[cfg(unix)]
fn available(bytes: usize) -> bool {
    if bytes > isize::MAX as usize {
        return false;
    }
    // SAFETY: a fresh private anonymous mapping, never touched, unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        libc::munmap(p, bytes);
    }
    true
}

#[cfg(not(unix))]
fn available(bytes: usize) -> bool {
    Vec::<u8>::new().try_reserve_exact(bytes).is_ok()
}

/// A vector of `len` copies of `value`, or [`Error::OutOfMemory`] instead of an abort.
pub(crate) fn try_vec<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| refused(what, (len as u64).saturating_mul(size_of::<T>() as u64)))?;
    v.resize(len, value);
    Ok(v)
}

/// `a × b × …` bytes, saturating: an estimate that overflows is simply refused.
pub(crate) fn product(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(1u64, |p, &f| p.saturating_mul(f as u64))
}

/// `len` zeros, written rather than only allocated, for sums that are added into. The
/// allocator's zeroed pages are mapped on first touch, and where that touch is the read of
/// a `+=` each page faults twice (the shared zero page, then its copy on the write). On
/// this machine (a VM) at 2048² × 20: the reference's frame sum took 0.10–0.13 s so,
/// 0.04 s with its 32 MB written first; the network's tiles were blended in 0.13–0.30 s,
/// then in 0.02 s.
pub(crate) fn written_zeros<T: Copy + Default + Send>(len: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = vec![T::default(); len];
    v.par_chunks_mut(1 << 16).for_each(|c| c.fill(T::default()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_and_how_much() {
        let e = ensure(3 << 30, Some(1 << 30), "tracking 3x4").unwrap_err();
        assert_eq!(
            e.to_string(),
            "out of memory: tracking 3x4 needs about 3072 MiB, over the memory limit of 1024 MiB"
        );
        let e = ensure(u64::MAX, None, "x").unwrap_err();
        assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
        assert!(ensure(1 << 20, Some(1 << 30), "x").is_ok());
        assert!(try_vec(usize::MAX / 8, 0u32, "v").is_err());
        assert_eq!(try_vec(3, 1u8, "v").unwrap(), vec![1, 1, 1]);
    }
}
