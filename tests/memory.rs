//! The memory estimates that guard every call against aborting on a failed allocation
//! (`src/memory.rs`) are upper bounds: the peak heap of each step, counted by a wrapping
//! global allocator (this test binary only), stays under its estimate, and not far under.
//! ONNX Runtime allocates outside Rust's allocator: its share is tested by running the
//! command line under address-space limits (`tests/cli.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use espinnet::integrate::{Method, integrate};
use espinnet::simulate::{Preset, simulate};
use espinnet::{Engine, EngineKind, Error, Options};
use ndarray::{Array2, ShapeBuilder};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = NOW.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        NOW.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Peak bytes allocated by `f` beyond what was allocated before. Every test of this binary
/// holds `peak_lock`, or they would count each other's allocations.
fn peak_of(f: impl FnOnce()) -> u64 {
    let base = NOW.load(Relaxed);
    PEAK.store(base, Relaxed);
    f();
    (PEAK.load(Relaxed) - base) as u64
}

static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
fn peak_lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The estimate bounds the measured peak from above, by at most `slack` times.
fn check(what: &str, measured: u64, estimate: u64, slack: f64) {
    eprintln!(
        "{what}: peak {:.1} MiB, estimate {:.1} MiB ({:.2}x)",
        measured as f64 / 1048576.0,
        estimate as f64 / 1048576.0,
        estimate as f64 / measured as f64
    );
    assert!(measured <= estimate, "{what}: the estimate is too low");
    assert!(
        estimate as f64 <= slack * measured as f64,
        "{what}: the estimate is more than {slack}x the peak"
    );
}

#[test]
fn engine_estimates_bound_the_peak_heap() {
    let _lock = peak_lock();
    // (size, N, window, max shift): the shapes that move each term of the estimates.
    for (size, n, nw, m) in [
        (128, 5, 1, 4),
        (256, 20, 1, 4),
        (256, 20, 3, 8),
        (384, 3, 2, 6),
    ] {
        let case = simulate(&Preset::MaskDiagonal.config(size, n, 1)).unwrap();
        let (r, s) = (case.reference.view(), case.sample.view());
        for (engine, geometry) in [
            (EngineKind::Tracking, false),
            (EngineKind::Tracking, true),
            (EngineKind::Network, false),
            (EngineKind::Network, true),
        ] {
            let mut o = Options::default();
            o.engine = engine;
            o.tracking.window = nw;
            o.tracking.max_shift = m;
            o.geometry = geometry.then_some(case.config.geometry);
            let e = Engine::new(&o).unwrap();
            // Once before measuring: one-time set-ups (thread pools, FFT plans) are not
            // the call's.
            e.reconstruct(r, s).unwrap();
            let measured = peak_of(|| {
                e.reconstruct(r, s).unwrap();
            });
            // reconstruct() also allocates the maps it returns: up to 10 of [H, W].
            let estimate = e.memory_bytes((n, size, size)) + 40 * (size * size) as u64;
            let what = format!("{engine} {n}x{size}² Nw {nw} max shift {m} geometry {geometry}");
            // The network's estimate holds ONNX Runtime's share too, which is not counted.
            let slack = if engine == EngineKind::Network {
                30.0
            } else {
                3.0
            };
            check(&what, measured, estimate, slack);
        }
    }
}

#[test]
fn integration_estimates_bound_the_peak_heap() {
    let _lock = peak_lock();
    // The second size with holes: every pixel inside a 1 px frame is filled.
    for (h, w, holes) in [(64, 200, false), (300, 256, false), (300, 256, true)] {
        let g = Array2::from_shape_fn((h, w), |(y, x)| {
            let inside = (1..h - 1).contains(&y) && (1..w - 1).contains(&x);
            match holes && inside {
                true => f32::NAN,
                false => ((x * 7 + y * 3) % 11) as f32 * 0.01,
            }
        });
        for method in [Method::FrankotChellappa, Method::LeastSquares] {
            integrate(g.view(), g.view(), method).unwrap();
            let measured = peak_of(|| {
                integrate(g.view(), g.view(), method).unwrap();
            });
            let estimate = espinnet::integrate::memory_bytes((h, w), method);
            check(
                &format!("{method} {h}x{w}, holes {holes}"),
                measured,
                estimate,
                3.0,
            );
        }
    }
}

#[test]
fn a_memory_limit_refuses_before_starting() {
    let _lock = peak_lock();
    let case = simulate(&Preset::MaskDiagonal.config(128, 5, 1)).unwrap();
    let mut o = Options::default();
    o.set("engine", "tracking").unwrap();
    o.set("memory_limit_mib", "1").unwrap();
    let e = Engine::new(&o).unwrap();
    let need = e.memory_bytes((5, 128, 128));
    match e.reconstruct(case.reference.view(), case.sample.view()) {
        Err(err @ Error::OutOfMemory { .. }) => {
            let text = err.to_string();
            assert!(text.contains("over the memory limit of 1 MiB"), "{text}");
            assert!(
                text.contains(&format!("{} MiB", need.div_ceil(1 << 20))),
                "{text}"
            );
        }
        other => panic!("expected out of memory, got {other:?}"),
    }
    // Raised to what the estimate asks, the same call runs.
    let mib = need.div_ceil(1 << 20) + (40 * 128 * 128u64).div_ceil(1 << 20) + 1;
    o.set("memory_limit_mib", &mib.to_string()).unwrap();
    let e = Engine::new(&o).unwrap();
    e.reconstruct(case.reference.view(), case.sample.view())
        .unwrap();
    // 0 is no limit; a limit is an integer.
    o.set("memory_limit_mib", "0").unwrap();
    assert!(o.memory_limit_bytes.is_none());
    assert!(o.set("memory_limit_mib", "-1").is_err());
}

#[test]
fn sizes_no_machine_has_are_refused_not_aborted() {
    let _lock = peak_lock();
    // Integration of 2^20 × 2^20 gradients needs tens of TiB: refused before any work,
    // without touching the (never allocated) input.
    let g = ndarray::ArrayView2::from_shape((1, 1), &[0.0f32]).unwrap();
    let huge = unsafe {
        ndarray::ArrayView2::from_shape_ptr((1 << 20, 1 << 20).strides((0, 0)), g.as_ptr())
    };
    let e = integrate(huge, huge, Method::LeastSquares).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
}
