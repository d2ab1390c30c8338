//! The C++ API, through cxx: `espinnet::Options`, `espinnet::Engine` and `espinnet::Maps` in
//! the generated header `espinnet.hpp` (installed beside `espinnet.h` with cxx's
//! `rust/cxx.h`). An adapter of the public Rust API ([`crate::Engine`], [`crate::Options`]),
//! like the C ABI, so the two cannot drift; errors throw `rust::Error`, whose `what()` is
//! the message `esp_last_error()` would give, and panics are contained the same way.
//!
//! ```cpp
//! auto opts = espinnet::options();                // network engine, shipped model
//! opts->set("provider", "auto");
//! auto engine = espinnet::engine(*opts);          // rust::Box<espinnet::Engine>
//! espinnet::Maps m = engine->reconstruct({ref.data(), ref.size()}, {smp.data(), smp.size()}, n, h, w);
//! // m.dx, m.dy, m.transmission, m.darkfield, m.quality: rust::Vec<float>, h·w, row-major
//!
//! auto job = espinnet::progress();                // shared with, e.g., an Abort command
//! m = engine->reconstruct_with(ref_slice, smp_slice, n, h, w, *job);
//! // elsewhere: job->fraction_done(); job->cancel();  → reconstruct_with throws "cancelled"
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ndarray::ArrayView3;

use crate::capi::EspStatus;
use crate::capi::guard::{Failure, contain};

#[cxx::bridge(namespace = "espinnet")]
mod ffi {
    /// The maps of one reconstruction, each `height × width` floats, row-major.
    struct Maps {
        height: usize,
        width: usize,
        /// Displacement along x (columns) and y (rows), px; NaN where not estimated.
        dx: Vec<f32>,
        dy: Vec<f32>,
        /// Transmission (1 = transparent) and dark-field (1 = no small-angle scattering).
        transmission: Vec<f32>,
        darkfield: Vec<f32>,
        /// RMS residual of the multi-contrast model, relative to the local intensity.
        quality: Vec<f32>,
        /// Refraction angles (rad) and phase (rad, zero mean); empty without the geometry
        /// options `energy_kev`, `distance_m`, `pixel_size_um`.
        refraction_x: Vec<f32>,
        refraction_y: Vec<f32>,
        phase: Vec<f32>,
        /// Per-pixel status: the tracker's (0 converged, 1 search edge, 2 ill-conditioned,
        /// 3 border: not estimated), or the network's (0 kept, 4 solved again by its guard,
        /// 3 beyond the reference's field of view: not estimated).
        status: Vec<u8>,
        /// Pixels the network's guard solved again (its status 4); 0 for the tracker.
        resolved_pixels: usize,
    }

    /// A stack of `n` frames of `height × width` floats, frame-major, row-major.
    struct Stack {
        n: usize,
        height: usize,
        width: usize,
        data: Vec<f32>,
    }

    extern "Rust" {
        /// Options by name, as `esp_options_set` takes them.
        type Options;
        /// The defaults: network engine, shipped model, best available provider.
        fn options() -> Box<Options>;
        /// Sets an option by name; throws on an unknown key or a bad value.
        fn set(self: &mut Options, key: &str, value: &str) -> Result<()>;

        /// A reconstruction engine; one may be used from several threads at once.
        type Engine;
        /// Builds an engine (loads ONNX Runtime and the model for the network engine).
        fn engine(options: &Options) -> Result<Box<Engine>>;
        /// `tracking-cpu`, or the network's execution provider: `cpu`, `cuda`, `tensorrt`.
        fn provider(self: &Engine) -> &str;
        /// Reconstructs from reference and sample stacks of `n × height × width` floats
        /// (frame-major, row-major).
        fn reconstruct(
            self: &Engine,
            reference: &[f32],
            sample: &[f32],
            n: usize,
            height: usize,
            width: usize,
        ) -> Result<Maps>;

        /// `reconstruct`, reporting to `progress` and stopping when it is cancelled (it then
        /// throws "cancelled").
        fn reconstruct_with(
            self: &Engine,
            reference: &[f32],
            sample: &[f32],
            n: usize,
            height: usize,
            width: usize,
            progress: &Progress,
        ) -> Result<Maps>;

        /// Progress of a reconstruction, read and cancelled from any thread.
        type Progress;
        /// A new tracker of progress: nothing done, not cancelled.
        fn progress() -> Box<Progress>;
        /// The fraction of the call done, 0 to 1.
        fn fraction_done(self: &Progress) -> f64;
        /// Asks the call to stop at its next unit of work.
        fn cancel(self: &Progress);
        /// Whether `cancel` was called.
        fn cancelled(self: &Progress) -> bool;

        /// Reads a stack as the command-line tool does: a multi-page TIFF, a `.npy` or
        /// `file.h5:/dataset` (HDF5 when the library was built with it), as float32.
        fn read_stack(spec: &str) -> Result<Stack>;

        /// The library's version, "MAJOR.MINOR.PATCH".
        fn version() -> &'static str;
    }
}

pub struct Options(crate::Options);

pub struct Engine(crate::Engine);

/// The fraction done (f64 bits) and the cancel request of one call.
#[derive(Default)]
pub struct Progress {
    fraction_bits: AtomicU64,
    cancel: AtomicBool,
}

fn progress() -> Box<Progress> {
    Box::default()
}

impl Progress {
    fn fraction_done(&self) -> f64 {
        f64::from_bits(self.fraction_bits.load(Ordering::Relaxed))
    }

    fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

impl crate::progress::Progress for Progress {
    fn report(&self, fraction_done: f64) -> bool {
        // Units finish out of order on worker threads: keep the largest fraction.
        self.fraction_bits
            .fetch_max(fraction_done.to_bits(), Ordering::Relaxed); // ≥ 0: bits order as values
        !self.cancelled()
    }
}

fn options() -> Box<Options> {
    Box::new(Options(crate::Options::default()))
}

impl Options {
    fn set(&mut self, key: &str, value: &str) -> Result<(), Failure> {
        contain(|| Ok(self.0.set(key, value)?))
    }
}

fn engine(options: &Options) -> Result<Box<Engine>, Failure> {
    contain(|| Ok(Box::new(Engine(crate::Engine::new(&options.0)?))))
}

impl Engine {
    fn provider(&self) -> &str {
        self.0.provider()
    }

    fn reconstruct(
        &self,
        reference: &[f32],
        sample: &[f32],
        n: usize,
        height: usize,
        width: usize,
    ) -> Result<ffi::Maps, Failure> {
        self.run(reference, sample, n, height, width, crate::progress::NONE)
    }

    fn reconstruct_with(
        &self,
        reference: &[f32],
        sample: &[f32],
        n: usize,
        height: usize,
        width: usize,
        progress: &Progress,
    ) -> Result<ffi::Maps, Failure> {
        self.run(reference, sample, n, height, width, progress)
    }

    fn run(
        &self,
        reference: &[f32],
        sample: &[f32],
        n: usize,
        height: usize,
        width: usize,
        progress: &dyn crate::progress::Progress,
    ) -> Result<ffi::Maps, Failure> {
        contain(|| {
            if n == 0 || height == 0 || width == 0 {
                return Err(Failure(
                    EspStatus::InvalidArgument,
                    format!("dimensions must be >= 1, got [{n}, {height}, {width}]"),
                ));
            }
            let len = n.checked_mul(height).and_then(|v| v.checked_mul(width));
            let view = |data, name| {
                ArrayView3::from_shape((n, height, width), data).map_err(|_| {
                    Failure(
                        EspStatus::ShapeMismatch,
                        format!(
                            "{name} holds {} floats, but n × height × width = {n} × {height} × \
                             {width} = {}",
                            data.len(),
                            len.map_or("overflow".into(), |l| l.to_string())
                        ),
                    )
                })
            };
            let (r, s) = (view(reference, "reference")?, view(sample, "sample")?);
            let m = self.0.reconstruct_with(r, s, progress)?;
            let vec = |a: ndarray::Array2<f32>| a.into_iter().collect::<Vec<f32>>();
            let opt = |a: Option<ndarray::Array2<f32>>| a.map(vec).unwrap_or_default();
            Ok(ffi::Maps {
                height,
                width,
                dx: vec(m.dx),
                dy: vec(m.dy),
                transmission: vec(m.transmission),
                darkfield: vec(m.darkfield),
                quality: vec(m.quality),
                refraction_x: opt(m.refraction_x),
                refraction_y: opt(m.refraction_y),
                phase: opt(m.phase),
                status: m.status.into_iter().collect(),
                resolved_pixels: m.report.resolved_pixels,
            })
        })
    }
}

fn read_stack(spec: &str) -> Result<ffi::Stack, Failure> {
    contain(|| {
        let stack = crate::io::read_stack(spec)?;
        let (n, height, width) = stack.dim();
        // The readers return fresh standard-layout arrays: hand over their buffer as is.
        let data = match stack.is_standard_layout() {
            true => match stack.into_raw_vec_and_offset() {
                (data, None | Some(0)) if data.len() == n * height * width => data,
                (data, offset) => {
                    let offset = offset.unwrap_or(0);
                    data[offset..offset + n * height * width].to_vec()
                }
            },
            false => stack.iter().copied().collect(),
        };
        Ok(ffi::Stack {
            n,
            height,
            width,
            data,
        })
    })
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
