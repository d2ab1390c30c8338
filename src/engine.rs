//! The one public way to run a reconstruction, which every surface adapts (the command
//! line, the C ABI, the C++ API and the plugins over them): options by name or typed,
//! either engine, and the maps derived from the displacement (refraction angles, phase).
//!
//! ```
//! use espinnet::simulate::{Preset, simulate};
//! use espinnet::{Engine, Options};
//!
//! let case = simulate(&Preset::Lens.config(64, 5, 1))?;
//! let mut options = Options::default(); // the network engine with the shipped model
//! options.set("engine", "tracking")?;
//! options.set("max_shift", "4")?;
//! for (key, value) in [("energy_kev", "20"), ("distance_m", "0.5"), ("pixel_size_um", "6.5")] {
//!     options.set(key, value)?;
//! }
//! let engine = Engine::new(&options)?;
//! let maps = engine.reconstruct(case.reference.view(), case.sample.view())?;
//! assert_eq!(maps.dx.dim(), (64, 64));
//! assert!(maps.phase.is_some()); // the geometry is set
//! # Ok::<(), espinnet::Error>(())
//! ```

use ndarray::{Array2, ArrayView3, ArrayViewMut2, Zip};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::geometry::Geometry;
use crate::integrate::{Method, phase_from_displacement};
use crate::memory;
use crate::model::{self, Contrasts};
use crate::network::{self, Network, Provider};
use crate::progress::Progress;
use crate::tracking::{self, Params};

/// Which engine reconstructs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// ESPINNet through ONNX Runtime.
    #[default]
    Network,
    /// The correlation tracker.
    Tracking,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Network => "network",
            EngineKind::Tracking => "tracking",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "network" => Ok(EngineKind::Network),
            "tracking" => Ok(EngineKind::Tracking),
            _ => Err(Error::invalid(format!(
                "option 'engine' must be network or tracking, got '{s}'"
            ))),
        }
    }
}

/// Everything that sets up an [`Engine`]. Typed fields, or [`Options::set`] by name (the
/// vocabulary every surface shares: [`Options::KEYS`]).
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Options {
    pub engine: EngineKind,
    pub network: network::Options,
    pub tracking: Params,
    /// Turns displacements into refraction angles and phase; `None`: no derived maps.
    pub geometry: Option<Geometry>,
    /// How the phase is integrated from its gradient.
    pub integration: Method,
    /// Largest peak memory a reconstruction may need (bytes), as [`Engine::memory_bytes`]
    /// estimates it before starting; `None`: what the system provides.
    pub memory_limit_bytes: Option<u64>,
    /// Geometry given by name, piece by piece: keV, m, µm, and magnification.
    #[serde(skip)]
    pieces: [Option<f64>; 4],
    /// Test hook: [`Engine::new`] panics, to prove that the surfaces contain panics.
    #[cfg(feature = "test-hooks")]
    #[serde(skip)]
    panic_on_new: bool,
}

impl Options {
    /// The option names [`Options::set`] takes.
    pub const KEYS: &str = "engine, threads; network: model, ort_library, provider, scaling, \
        tile, overlap, batch, guard, image_px, device_id, fp16, gpu_mem_limit_mib, trt_cache, \
        conv_search; tracking: window, max_shift, mean_window, dark_field, hamming, reseed, \
        adaptive; geometry: energy_kev, distance_m, pixel_size_um (detector pixel), \
        magnification, integration; memory_limit_mib";

    /// Sets an option by name from its text form, as the C ABI, C++ and the plugins pass
    /// them. Flags take `true`/`false`/`1`/`0`; a failed call leaves the options as they
    /// were.
    ///
    /// - `engine`: `network` or `tracking`; `threads`: CPU threads of every step, inference
    ///   included (0 = one per core).
    /// - Network: `model` (path to an ONNX export), `ort_library` (path to libonnxruntime),
    ///   `provider` (`auto`, `cpu`, `cuda`, `tensorrt`), `scaling` (`nearest`, `linear`),
    ///   `tile` (px; 0 = 640 on the CPU, 1280 on a GPU), `overlap` (px), `batch`, `guard`
    ///   (the network's smooth bias taken off and pixels the signal model rejects solved
    ///   again, both by the tracker; on by default),
    ///   `device_id`, `fp16`, `gpu_mem_limit_mib` (MiB), `trt_cache` (directory),
    ///   `conv_search` (`exhaustive`, `heuristic` or `fixed`: CUDA's convolution algorithms).
    /// - Tracking: `window` (px, half-width), `max_shift` (px), `mean_window` (px),
    ///   `dark_field`, `hamming`, `reseed`, `adaptive`.
    /// - Geometry, for refraction and phase: `energy_kev` (keV), `distance_m` (sample to
    ///   detector, m), `pixel_size_um` (detector pixel, µm), `magnification` (default 1),
    ///   `integration` (`frankot-chellappa` or `least-squares`).
    /// - `memory_limit_mib`: the most memory (MiB) a reconstruction may need, checked
    ///   against its estimate before it starts; 0 = no limit but the system's.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let mut next = self.clone();
        next.apply(key, value)?;
        *self = next;
        Ok(())
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<()> {
        // Bounded far above any use, so that no size computed from an option can wrap.
        let at_most = |max: usize| match value.parse::<usize>() {
            Ok(v) if v <= max => Ok(v),
            _ => Err(Error::invalid(format!(
                "option '{key}' needs an integer from 0 to {max}, got '{value}'"
            ))),
        };
        let int = || at_most(1 << 16);
        let positive = || match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
            _ => Err(Error::invalid(format!(
                "option '{key}' needs a finite number > 0, got '{value}'"
            ))),
        };
        let flag = || match value {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(Error::invalid(format!(
                "option '{key}' needs true/false/1/0, got '{value}'"
            ))),
        };
        let path = || Some(std::path::PathBuf::from(value));
        let (p, n) = (&mut self.tracking, &mut self.network);
        match key {
            "engine" => self.engine = value.parse()?,
            "window" => p.window = int()?,
            "max_shift" => p.max_shift = int()?,
            "mean_window" => p.mean_window = int()?,
            "dark_field" => p.dark_field = flag()?,
            "hamming" => p.hamming = flag()?,
            "reseed" => p.reseed = flag()?,
            "adaptive" => p.adaptive = flag()?,
            "model" => n.model = path(),
            "ort_library" => n.library = path(),
            "provider" => n.provider = value.parse()?,
            "scaling" => n.scaling = value.parse()?,
            "tile" => n.tile_px = int()?,
            "overlap" => n.overlap_px = int()?,
            "batch" => n.batch = int()?,
            "guard" => n.guard = flag()?,
            "image_px" => {
                let px = |v: &str| v.parse().ok().filter(|n| (1..=1 << 20).contains(n));
                n.image_px = match value.split_once('x').map(|(h, w)| (px(h), px(w))) {
                    _ if value.is_empty() => None,
                    Some((Some(h), Some(w))) => Some((h, w)),
                    _ => {
                        return Err(Error::invalid(format!(
                            "option 'image_px' needs HEIGHTxWIDTH in px (each 1 to {}) or \
                             nothing, got '{value}'",
                            1 << 20
                        )));
                    }
                }
            }
            "threads" => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                n.threads = at_most(64.max(4 * cores))?
            }
            "device_id" => n.gpu.device_id = at_most(1024)? as i32,
            "fp16" => n.gpu.fp16 = flag()?,
            "gpu_mem_limit_mib" => n.gpu.memory_limit_bytes = Some(at_most(1 << 30)? << 20),
            "trt_cache" => n.gpu.engine_cache_dir = path(),
            "conv_search" => n.gpu.conv_search = value.parse()?,
            "energy_kev" => self.set_piece(0, positive()?)?,
            "distance_m" => self.set_piece(1, positive()?)?,
            "pixel_size_um" => self.set_piece(2, positive()?)?,
            "magnification" => self.set_piece(3, positive()?)?,
            "integration" => self.integration = value.parse()?,
            "memory_limit_mib" => {
                self.memory_limit_bytes =
                    Some(at_most(1 << 30)? as u64 * (1 << 20)).filter(|&b| b > 0)
            }
            #[cfg(feature = "test-hooks")]
            "debug_panic" => self.panic_on_new = flag()?,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown option '{key}' ({})",
                    Self::KEYS
                )));
            }
        }
        Ok(())
    }

    /// Sets one piece of the geometry (keV, m, µm, magnification); the geometry exists once
    /// energy, distance and pixel size are all known.
    fn set_piece(&mut self, index: usize, value: f64) -> Result<()> {
        if let Some(g) = &self.geometry {
            let known = [
                g.energy_ev / 1e3,
                g.distance_m,
                g.detector_pixel_m * 1e6,
                g.magnification,
            ];
            for (piece, v) in self.pieces.iter_mut().zip(known) {
                piece.get_or_insert(v);
            }
        }
        self.pieces[index] = Some(value);
        self.geometry = match self.pieces {
            [Some(e), Some(z), Some(p), m] => {
                Some(Geometry::from_kev_um(e, z, p, m.unwrap_or(1.0))?)
            }
            _ => None,
        };
        Ok(())
    }

    /// An error when the geometry was given by name only in part.
    fn check_geometry(&self) -> Result<()> {
        if self.geometry.is_none() && self.pieces[..3].iter().any(Option::is_some) {
            return Err(Error::invalid(
                "the geometry needs all of energy_kev, distance_m and pixel_size_um",
            ));
        }
        Ok(())
    }
}

/// Below this median share of the sample's variation explained by the model
/// ([`model::Fit::explained_share`]), the sample holds no trace of the reference's pattern.
/// Simulated scans (four presets, N = 3 to 20, down to 100 photons per pixel) gave 0.85 to
/// 0.997 with either engine; independent noise 0.01 to 0.04 (tracker, N = 3 to 20) and
/// below 0 (network); the sample of another scan (sandpaper against a mask) 0.38, the
/// tracker's search fitting what it can.
const MIN_EXPLAINED_SHARE: f32 = 0.5;

enum Kind {
    Tracking(Params),
    Network(Box<Network>),
}

/// A reconstruction engine, built once and used for many stacks, from several threads at
/// once if need be (the tracker holds no mutable state; network inference is serialised).
pub struct Engine {
    kind: Kind,
    options: Options,
    /// Its own worker threads when `threads` limits them; else rayon's global pool.
    pool: Option<rayon::ThreadPool>,
}

/// The maps of one reconstruction, `[H, W]` each like the input.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Maps {
    /// Pattern displacement along x (columns) and y (rows), px; NaN where not estimated.
    pub dx: Array2<f32>,
    pub dy: Array2<f32>,
    /// Transmission (1 = transparent).
    pub transmission: Array2<f32>,
    /// Dark-field (1 = no small-angle scattering).
    pub darkfield: Array2<f32>,
    /// The signal model's relative RMS residual at the estimate ([`model::residual`]).
    pub quality: Array2<f32>,
    /// The per-pixel [`tracking::Status`] as its number: the tracker's, or the network's
    /// (converged, resolved by its guard, beyond the reference's field of view).
    pub status: Array2<u8>,
    /// Refraction angles along x and y (rad); with the geometry only.
    pub refraction_x: Option<Array2<f32>>,
    pub refraction_y: Option<Array2<f32>>,
    /// Phase (rad, zero mean); with the geometry only.
    pub phase: Option<Array2<f32>>,
    /// What else the run did.
    pub report: Report,
}

/// What a reconstruction did beyond its maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// Pixels of the network's estimate that its guard solved again with the tracker (their
    /// status is [`tracking::Status::Resolved`]): those the signal model rejected and, from
    /// five frames, those of the areas dense with them or where the network's bias was
    /// large; 0 for the tracker.
    pub resolved_pixels: usize,
    /// Where the reconstruction's time went.
    pub stages: Stages,
}

/// Wall-clock seconds of a reconstruction's stages, which follow one another: behind a GPU
/// the network's inference is a small part of a run, and these tell what the rest is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Stages {
    /// The engine's estimate (s): the network's inference with its tiling, or the tracker.
    pub estimate_s: f64,
    /// The network's guard (s); 0 for the tracker or with the guard off.
    pub guard_s: f64,
    /// The phase integration (s); 0 without the geometry or a phase map to write.
    pub phase_s: f64,
    /// The rest (s): the check that the sample follows the reference's pattern, the
    /// quality and refraction maps, and the copies into the caller's maps.
    pub maps_s: f64,
}

/// A map's name, units (NeXus spelling; "" for ratios) and what it is.
pub type MapInfo = (&'static str, &'static str, &'static str);

/// What the numbers of the status map mean ([`tracking::Status`]), as files label it.
pub const STATUS_LONG_NAME: &str = "status: 0 measured, 1 the tracker's minimum at its \
     search edge, 2 ill-conditioned, 3 not measured, NaN (the tracker's border, the network's \
     pixels beyond the field of view), 4 solved again by the network's guard";

/// Every map [`Maps`] can hold, in its order. Files and previews name and label maps from
/// this one table.
pub const MAP_INFO: [MapInfo; 8] = [
    ("dx", "pixel", "pattern displacement along x (columns)"),
    ("dy", "pixel", "pattern displacement along y (rows)"),
    ("transmission", "", "transmission"),
    ("darkfield", "", "dark-field (visibility ratio)"),
    ("quality", "", "relative RMS residual of the signal model"),
    ("refraction_x", "rad", "refraction angle along x"),
    ("refraction_y", "rad", "refraction angle along y"),
    ("phase", "rad", "phase"),
];

impl Maps {
    /// The maps present, with their [`MAP_INFO`] entries, in that order.
    pub fn named(&self) -> Vec<(MapInfo, &Array2<f32>)> {
        let maps = [
            Some(&self.dx),
            Some(&self.dy),
            Some(&self.transmission),
            Some(&self.darkfield),
            Some(&self.quality),
            self.refraction_x.as_ref(),
            self.refraction_y.as_ref(),
            self.phase.as_ref(),
        ];
        MAP_INFO
            .into_iter()
            .zip(maps)
            .filter_map(|(info, map)| map.map(|m| (info, m)))
            .collect()
    }

    /// The four contrasts as views.
    pub fn contrasts(&self) -> Contrasts<'_> {
        Contrasts::new(&self.dx, &self.dy, &self.transmission, &self.darkfield)
    }
}

/// Caller-owned outputs for [`Engine::reconstruct_into`], `[H, W]` each; a `None` map is
/// not computed (quality, refraction and phase cost extra work).
#[derive(Default)]
#[non_exhaustive]
pub struct MapsMut<'a> {
    pub dx: Option<ArrayViewMut2<'a, f32>>,
    pub dy: Option<ArrayViewMut2<'a, f32>>,
    pub transmission: Option<ArrayViewMut2<'a, f32>>,
    pub darkfield: Option<ArrayViewMut2<'a, f32>>,
    pub quality: Option<ArrayViewMut2<'a, f32>>,
    /// [`tracking::Status`] numbers: the network's are converged, resolved by its guard or
    /// beyond the reference's field of view.
    pub status: Option<ArrayViewMut2<'a, u8>>,
    pub refraction_x: Option<ArrayViewMut2<'a, f32>>,
    pub refraction_y: Option<ArrayViewMut2<'a, f32>>,
    pub phase: Option<ArrayViewMut2<'a, f32>>,
}

impl MapsMut<'_> {
    fn wants_derived(&self) -> bool {
        self.refraction_x.is_some() || self.refraction_y.is_some() || self.phase.is_some()
    }
}

impl Engine {
    /// Builds the engine: for the network, loads ONNX Runtime and the model.
    pub fn new(options: &Options) -> Result<Self> {
        #[cfg(feature = "test-hooks")]
        if options.panic_on_new {
            panic!("deliberate panic requested by the 'debug_panic' option");
        }
        options.check_geometry()?;
        let kind = match options.engine {
            EngineKind::Tracking => Kind::Tracking(options.tracking),
            EngineKind::Network => Kind::Network(Box::new(Network::new(&options.network)?)),
        };
        // Rayon's threads (the global pool starts on first use): one with no room for its
        // thread-local storage aborts the process.
        let threads = options.network.resolved_threads();
        let bytes = (threads as u64).saturating_mul(memory::THREAD_BYTES);
        memory::ensure(bytes, None, &format!("starting {threads} threads"))?;
        let pool = match options.network.threads {
            0 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("espinnet-{i}"))
                    .build()
                    .map_err(|e| Error::Runtime(format!("cannot start {n} threads: {e}")))?,
            ),
        };
        Ok(Engine {
            kind,
            options: options.clone(),
            pool,
        })
    }

    /// The options the engine was built with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The loaded network, for the network engine.
    pub fn network(&self) -> Option<&Network> {
        match &self.kind {
            Kind::Network(n) => Some(n),
            Kind::Tracking(_) => None,
        }
    }

    /// What the engine computes on: `tracking-cpu`, or the network's execution provider
    /// (`cpu`, `cuda`, `tensorrt`).
    pub fn provider(&self) -> &'static str {
        match &self.kind {
            Kind::Tracking(_) => "tracking-cpu",
            Kind::Network(n) => match n.provider() {
                Provider::Cuda => "cuda",
                Provider::TensorRt => "tensorrt",
                _ => "cpu",
            },
        }
    }

    /// Reconstructs every map from a reference and a sample stack `[N, H, W]` (dark- and
    /// flat-corrected): refraction and phase when the options have the geometry.
    pub fn reconstruct(&self, reference: ArrayView3<f32>, sample: ArrayView3<f32>) -> Result<Maps> {
        self.reconstruct_with(reference, sample, crate::progress::NONE)
    }

    /// [`Engine::reconstruct`] with progress reports and cancellation.
    pub fn reconstruct_with(
        &self,
        reference: ArrayView3<f32>,
        sample: ArrayView3<f32>,
        progress: &dyn Progress,
    ) -> Result<Maps> {
        let (_, h, w) = reference.dim();
        let derived = self.options.geometry.is_some();
        let map = || zeros((h, w));
        let opt = |wanted: bool| wanted.then(map).transpose();
        let mut maps = Maps {
            dx: map()?,
            dy: map()?,
            transmission: map()?,
            darkfield: map()?,
            quality: map()?,
            status: zeros((h, w))?,
            refraction_x: opt(derived)?,
            refraction_y: opt(derived)?,
            phase: opt(derived)?,
            report: Report::default(),
        };
        let out = MapsMut {
            dx: Some(maps.dx.view_mut()),
            dy: Some(maps.dy.view_mut()),
            transmission: Some(maps.transmission.view_mut()),
            darkfield: Some(maps.darkfield.view_mut()),
            quality: Some(maps.quality.view_mut()),
            status: Some(maps.status.view_mut()),
            refraction_x: maps.refraction_x.as_mut().map(|a| a.view_mut()),
            refraction_y: maps.refraction_y.as_mut().map(|a| a.view_mut()),
            phase: maps.phase.as_mut().map(|a| a.view_mut()),
        };
        maps.report = self.reconstruct_into(reference, sample, out, progress)?;
        Ok(maps)
    }

    /// Reconstructs into the caller's arrays: only the maps `out` has are computed. Asking
    /// for refraction or phase without the geometry is an [`Error::InvalidArgument`].
    pub fn reconstruct_into(
        &self,
        reference: ArrayView3<f32>,
        sample: ArrayView3<f32>,
        out: MapsMut,
        progress: &dyn Progress,
    ) -> Result<Report> {
        match &self.pool {
            Some(pool) => pool.install(|| self.run(reference, sample, out, progress)),
            None => self.run(reference, sample, out, progress),
        }
    }

    /// Peak memory of reconstructing stacks `[n, h, w]` in standard layout (bytes, an upper
    /// bound) beyond the stacks and the caller's maps: the engine's, then the phase
    /// integration's (with the geometry) while the engine's maps are held.
    pub fn memory_bytes(&self, (n, h, w): (usize, usize, usize)) -> u64 {
        let threads = match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        };
        let engine = match &self.kind {
            Kind::Tracking(params) => params.memory_bytes((n, h, w), threads, false),
            Kind::Network(net) => {
                let network = net.memory_bytes(1, (h, w));
                let guard = match self.options.network.guard {
                    true => crate::guard::memory_bytes(
                        &self.options.tracking,
                        (n, h, w),
                        threads,
                        network,
                    ),
                    false => 0,
                };
                network.max(guard)
            }
        };
        let integration = match self.options.geometry {
            Some(_) => crate::integrate::memory_bytes((h, w), self.options.integration),
            None => 0,
        };
        let maps = crate::memory::product(&[6, h, w, 4]);
        engine.max(integration).saturating_add(maps)
    }

    fn run(
        &self,
        reference: ArrayView3<f32>,
        sample: ArrayView3<f32>,
        mut out: MapsMut,
        progress: &dyn Progress,
    ) -> Result<Report> {
        let geometry = match (out.wants_derived(), &self.options.geometry) {
            (true, None) => {
                return Err(Error::invalid(
                    "refraction and phase need the geometry: set energy_kev, distance_m and \
                     pixel_size_um (and magnification)",
                ));
            }
            (true, Some(g)) => Some(g),
            (false, _) => None,
        };
        // The engines validate the stacks themselves, before any map is written.
        let (n, h, w) = reference.dim();
        if let Kind::Tracking(params) = &self.kind {
            params.check_shape((n, h, w))?;
        }
        crate::memory::ensure(
            self.memory_bytes((n, h, w)),
            self.options.memory_limit_bytes,
            &format!("the {} engine on {n}x{h}x{w} stacks", self.options.engine),
        )?;
        for (name, shape) in [
            ("dx", out.dx.as_ref().map(|a| a.dim())),
            ("dy", out.dy.as_ref().map(|a| a.dim())),
            ("transmission", out.transmission.as_ref().map(|a| a.dim())),
            ("darkfield", out.darkfield.as_ref().map(|a| a.dim())),
            ("quality", out.quality.as_ref().map(|a| a.dim())),
            ("status", out.status.as_ref().map(|a| a.dim())),
            ("refraction_x", out.refraction_x.as_ref().map(|a| a.dim())),
            ("refraction_y", out.refraction_y.as_ref().map(|a| a.dim())),
            ("phase", out.phase.as_ref().map(|a| a.dim())),
        ] {
            if let Some(got) = shape.filter(|&d| d != (h, w)) {
                return Err(Error::ShapeMismatch {
                    what: format!("output '{name}' [H, W] must equal the stacks' frames"),
                    expected: vec![h, w],
                    got: vec![got.0, got.1],
                });
            }
        }
        let clock = std::time::Instant::now();
        let lap = |step: &str| {
            let s = clock.elapsed().as_secs_f64();
            log::debug!("{step}: {s:.3} s");
            s
        };
        let mut report = Report::default();
        // The guarded network brings its residual map, which is the quality map.
        // Each engine may bring the reference's illumination, which the model fit shares.
        let (dx, dy, transmission, darkfield, status, residual, light) = match &self.kind {
            Kind::Tracking(params) => {
                let (o, light) = tracking::track_lit(reference, sample, params, progress)?;
                report.stages.estimate_s = lap("tracking");
                let none = None::<Array2<f32>>;
                (
                    o.dx,
                    o.dy,
                    o.transmission,
                    o.darkfield,
                    o.status,
                    none,
                    Some(light),
                )
            }
            Kind::Network(net) => {
                let mut o = net.reconstruct_with(reference, sample, progress)?;
                report.stages.estimate_s = lap("network");
                let (mut residual, changed, light) = if self.options.network.guard {
                    let (residual, changed, light) = crate::guard::guard(
                        reference,
                        sample,
                        &self.options.tracking,
                        [&mut o.dx, &mut o.dy, &mut o.transmission, &mut o.darkfield],
                        net.memory_bytes(1, (h, w)),
                    );
                    report.stages.guard_s = lap("guard") - report.stages.estimate_s;
                    (Some(residual), changed, Some(light))
                } else {
                    (None, Vec::new(), None)
                };
                let outside = crate::network::field_of_view::clear_outside([
                    &mut o.dx,
                    &mut o.dy,
                    &mut o.transmission,
                    &mut o.darkfield,
                ]);
                // Beyond the field of view is not measured, whether resolved or not.
                let (resolved, beyond) = (tracking::Status::Resolved, tracking::Status::Border);
                let mut status = Array2::from_elem((h, w), tracking::Status::Converged as u8);
                changed.iter().for_each(|&at| status[at] = resolved as u8);
                for &at in &outside {
                    status[at] = beyond as u8;
                    if let Some(r) = residual.as_mut() {
                        r[at] = f32::NAN;
                    }
                }
                report.resolved_pixels = changed
                    .iter()
                    .filter(|&&at| status[at] == resolved as u8)
                    .count();
                (
                    o.dx,
                    o.dy,
                    o.transmission,
                    o.darkfield,
                    status,
                    residual,
                    light,
                )
            }
        };
        let engine_s = lap("engine");
        // A sample that does not hold the reference's pattern gives shifts made of noise,
        // which no map would tell from a measurement.
        let fit = model::Fit::with_illumination(
            reference,
            sample,
            Contrasts::new(&dx, &dy, &transmission, &darkfield),
            light.as_ref(),
        );
        let explained = fit.explained_share(4096);
        let checked_s = lap("model fit and explained share");
        if explained < MIN_EXPLAINED_SHARE {
            return Err(Error::invalid(format!(
                "the sample stack does not follow the reference stack's pattern: the model \
                 explains a median {:.0} % of its variation over the scan (scans of a pattern: \
                 over 85 %), so no displacement can be measured. Are both stacks of the same \
                 scan, with the modulator in the beam?",
                100.0 * explained.max(-1.0)
            )));
        }
        // The steps that can still fail come before any write to the caller's maps.
        let phase = match (geometry, out.phase.is_some()) {
            (Some(g), true) => Some(phase_from_displacement(
                dx.view(),
                dy.view(),
                g,
                self.options.integration,
            )?),
            _ => None,
        };
        report.stages.phase_s = lap("phase") - checked_s;
        if let (Some(mut dst), Some(phase)) = (out.phase.take(), phase) {
            dst.assign(&phase);
        }
        if let Some(g) = geometry {
            let angle = g.angle_rad(1.0) as f32;
            for (dst, d) in [
                (out.refraction_x.take(), &dx),
                (out.refraction_y.take(), &dy),
            ] {
                if let Some(mut dst) = dst {
                    Zip::from(&mut dst)
                        .and(d)
                        .par_for_each(|a, &d| *a = d * angle);
                }
            }
        }
        if let Some(mut q) = out.quality.take() {
            match &residual {
                Some(r) => q.assign(r),
                None => fit.residual_into(q),
            }
        }
        lap("quality map");
        if let Some(mut dst) = out.status.take() {
            dst.assign(&status);
        }
        for (dst, src) in [
            (out.dx.take(), &dx),
            (out.dy.take(), &dy),
            (out.transmission.take(), &transmission),
            (out.darkfield.take(), &darkfield),
        ] {
            if let Some(mut dst) = dst {
                dst.assign(src);
            }
        }
        report.stages.maps_s = clock.elapsed().as_secs_f64() - engine_s - report.stages.phase_s;
        Ok(report)
    }
}

/// A map of zeros, or [`Error::OutOfMemory`] instead of an abort.
fn zeros<T: Clone + Default>(shape: (usize, usize)) -> Result<Array2<T>> {
    let v = crate::memory::try_vec(shape.0 * shape.1, T::default(), "a result map")?;
    Ok(Array2::from_shape_vec(shape, v).expect("length matches the shape"))
}

// Engines are shared between threads by every surface.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Engine>();
};
