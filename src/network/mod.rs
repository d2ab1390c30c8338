//! The network engine: ESPINNet through ONNX Runtime.
//!
//! Around the graph, in this order: scan-count scaling to the model's Nnet
//! ([`crate::stack::scan_weights`]), division of both stacks by the mean of the reference
//! stack, mirror padding to the model's size multiple, tiling with overlap, inference in
//! batches of tiles, blending, cropping back to H×W, and clipping of T and D to
//! [0, [`TD_CLIP`]] as in the reference post-processing. The image is never resized, so
//! displacements keep their pixel units.

pub(crate) mod field_of_view;
mod model;
mod provider;
mod runtime;
mod tiling;

use std::path::PathBuf;
use std::sync::Mutex;

use ndarray::{Array2, Array4, ArrayView3, s};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;
use ort::value::ValueType;
use serde::Serialize;

pub use model::{ModelInfo, SHIPPED_NAME};
pub use provider::{ConvSearch, GpuOptions, Provider};
pub use runtime::{PATH_VARIABLES, TELEMETRY_VARIABLE, disable_telemetry, wheel_library};

use crate::error::{Error, Result};
use crate::stack::{ScanScaling, scan_weights, validate_pair};

/// T and D above this are clipped (the reference implementation's post-processing).
pub const TD_CLIP: f32 = 1.5;

/// ONNX Runtime's working memory on the CPU per pixel of a tile (bytes): measured at about
/// 250 B/px (peak RSS at tiles of 256² and 1024²), with margin.
const ORT_BYTES_PER_TILE_PX: u64 = 512;

/// The tile size (px) that `tile_px = 0` gives on the CPU. Measured at 2048² × 20 on two
/// cores (`--tile`, whole run): tiles of 464²–560² infer as fast as 1056² ones despite
/// their overlap (ONNX Runtime's time per pixel grows with the tile: 0.54 s/Mpx at 384²,
/// 0.69 at 1056²) and peak at 0.9 GB less.
const CPU_TILE_PX: usize = 640;
/// The tile size (px) that `tile_px = 0` gives on a GPU: fewer, larger calls.
const GPU_TILE_PX: usize = 1280;

/// How the network engine is set up.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Options {
    /// ONNX model; `None`: the shipped one, built into the library.
    pub model: Option<PathBuf>,
    /// ONNX Runtime library; `None`: see [`runtime`'s search order](PATH_VARIABLES).
    pub library: Option<PathBuf>,
    pub provider: Provider,
    pub gpu: GpuOptions,
    /// Intra-op threads; 0: one per core. Through [`crate::Options::set`], `threads` also
    /// bounds the engine's other steps.
    pub threads: usize,
    /// How a scan of N ≠ Nnet frames is brought to Nnet.
    pub scaling: ScanScaling,
    /// Largest tile height and width (px); bounds memory (about 1.5 GB at 1280², CPU).
    /// Larger images are cut into the fewest equal tiles that fit. 0: chosen for the
    /// provider (640 px on the CPU, 1280 on a GPU).
    pub tile_px: usize,
    /// Overlap of neighbouring tiles (px); must cover the network's edge effects.
    pub overlap_px: usize,
    /// Tiles per inference call.
    pub batch: usize,
    /// The guard: the network's smooth bias, measured by the tracker's fits on a grid of
    /// pixels, is taken off, then pixels whose estimate the signal model rejects are solved
    /// again by the tracker, starting from it (`crate::guard`). On by default: on two cores
    /// it adds about a half to the whole run at 2048² × 20 and at 2048² × 3, three quarters
    /// at 512² × 20; behind a GPU network, whose inference is far faster, it can be most of
    /// the run.
    pub guard: bool,
    /// The image size (height, width in px) this engine will run, where it is known before
    /// the engine is made: ONNX Runtime then plans its session for that size's tiles, which
    /// starts it in about a third of the time (the shipped model on two cores: 0.26–0.29
    /// against 0.75–0.78 s for tiles of 512²). Other sizes still run, through a session for
    /// any size made on their first use.
    pub image_px: Option<(usize, usize)>,
}

impl Options {
    /// The number of threads `threads` asks for (0: one per core).
    pub fn resolved_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            model: None,
            library: None,
            provider: Provider::Auto,
            gpu: GpuOptions::default(),
            threads: 0,
            scaling: ScanScaling::Nearest,
            tile_px: 0,
            overlap_px: 64,
            batch: 1,
            guard: true,
            image_px: None,
        }
    }
}

/// The network's maps, H×W like the input; T and D clipped to [0, [`TD_CLIP`]].
pub type Output = crate::model::ContrastMaps;

/// A loaded model, ready to run; one engine may be shared by threads (runs are serialised).
pub struct Network {
    sessions: Mutex<Sessions>,
    info: ModelInfo,
    provider: Provider,
    library: PathBuf,
    options: Options,
}

/// ONNX Runtime's sessions of one model: one planned for a tile shape, one for any shape.
struct Sessions {
    /// Tiles of (height, width) px: the shape of [`Options::image_px`]'s tiles.
    planned: Option<((usize, usize), Session)>,
    /// Made with the engine when no image size was given, else on the first other shape.
    any: Option<Session>,
}

impl Network {
    pub fn new(options: &Options) -> Result<Self> {
        if options.batch == 0 {
            return Err(Error::invalid("batch must be >= 1"));
        }
        if let Some(path) = &options.model
            && !path.is_file()
        {
            return Err(Error::model(path, "no such file"));
        }
        let (_, library) = runtime::environment(options.library.as_deref())?;
        // ONNX Runtime never returns from a thread pool it failed to start (a deadlock seen
        // under `ulimit -v`): make sure its threads and set-up have room first.
        let model_bytes = match &options.model {
            Some(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
            None => model::SHIPPED.len() as u64,
        };
        let threads = options.resolved_threads();
        let setup = (threads as u64)
            .saturating_mul(crate::memory::THREAD_BYTES)
            .saturating_add(model_bytes.saturating_mul(4));
        crate::memory::ensure(setup, None, "starting ONNX Runtime")?;
        let (builder, provider) = session_builder(options, options.provider)?;
        let options = Options {
            tile_px: match options.tile_px {
                0 if provider.is_gpu() => GPU_TILE_PX,
                0 => CPU_TILE_PX,
                px => px,
            },
            ..options.clone()
        };
        if 2 * options.overlap_px >= options.tile_px {
            return Err(Error::invalid(format!(
                "tile overlap {} px must be less than half the tile ({} px)",
                options.overlap_px, options.tile_px
            )));
        }
        // The tile shape to plan for, from the size multiple the model's bytes state.
        let tile = options.image_px.and_then(|image| {
            let multiple = match &options.model {
                None => model::size_multiple(model::SHIPPED),
                Some(path) => model::size_multiple(&std::fs::read(path).ok()?),
            }?;
            let (_, (_, th), (_, tw)) = tile_layout(&options, multiple, image);
            Some((th, tw))
        });
        let clock = std::time::Instant::now();
        let session = commit(builder, &options, provider, tile)?;
        let source = source(&options);
        let info = model::inspect(&session, &source)?;
        if options.tile_px < info.size_multiple {
            return Err(Error::invalid(format!(
                "tile {} px is smaller than the model's size multiple {} px",
                options.tile_px, info.size_multiple
            )));
        }
        // A model whose inputs name their height and width otherwise keeps them free.
        let planned = tile.filter(|_| {
            session.inputs().iter().all(|input| {
                matches!(input.dtype(), ValueType::Tensor { shape, .. } if shape[2] > 0 && shape[3] > 0)
            })
        });
        log::info!(
            "network {} (variant {}, Nnet {}) on {provider} with {threads} thread(s); session \
             {}made in {:.3} s",
            source.display(),
            info.variant,
            info.nnet,
            planned.map_or(String::new(), |(th, tw)| format!("for tiles of {th}x{tw} ")),
            clock.elapsed().as_secs_f64()
        );
        let sessions = match planned {
            Some(tile) => Sessions {
                planned: Some((tile, session)),
                any: None,
            },
            None => Sessions {
                planned: None,
                any: Some(session),
            },
        };
        Ok(Network {
            sessions: Mutex::new(sessions),
            info,
            provider,
            library,
            options,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The execution provider in use (never `Auto`).
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The largest tile (px) this network runs: `Options::tile_px`, or the provider's
    /// default for 0.
    pub fn tile_px(&self) -> usize {
        self.options.tile_px
    }

    /// The tile shape (height, width in px) ONNX Runtime planned a session for, from
    /// [`Options::image_px`]; `None` if only the session for any size exists.
    pub fn planned_tile_px(&self) -> Option<(usize, usize)> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.planned.as_ref().map(|(tile, _)| *tile)
    }

    /// The ONNX Runtime library this process loaded.
    pub fn library(&self) -> &std::path::Path {
        &self.library
    }

    /// Reconstructs one pair of stacks `[N, H, W]` (dark- and flat-corrected).
    pub fn reconstruct(
        &self,
        reference: ArrayView3<f32>,
        sample: ArrayView3<f32>,
    ) -> Result<Output> {
        self.reconstruct_with(reference, sample, crate::progress::NONE)
    }

    /// [`Network::reconstruct`] with progress reports and cancellation.
    pub fn reconstruct_with(
        &self,
        reference: ArrayView3<f32>,
        sample: ArrayView3<f32>,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Output> {
        Ok(self
            .reconstruct_many_with(&[(reference, sample)], progress)?
            .pop()
            .expect("one pair in, one out"))
    }

    /// Reconstructs pairs of one shape, batching their tiles together (`Options::batch`
    /// tiles per inference call): the way to fill a GPU with small images.
    pub fn reconstruct_many(
        &self,
        pairs: &[(ArrayView3<f32>, ArrayView3<f32>)],
    ) -> Result<Vec<Output>> {
        self.reconstruct_many_with(pairs, crate::progress::NONE)
    }

    /// [`Network::reconstruct_many`] with progress reports (one per batch of tiles) and
    /// cancellation.
    pub fn reconstruct_many_with(
        &self,
        pairs: &[(ArrayView3<f32>, ArrayView3<f32>)],
        progress: &dyn crate::progress::Progress,
    ) -> Result<Vec<Output>> {
        let Some(&(first, _)) = pairs.first() else {
            return Ok(Vec::new());
        };
        let (n, h, w) = first.dim();
        let clock = std::time::Instant::now();
        let mut gains = Vec::with_capacity(pairs.len());
        for (i, &(reference, sample)) in pairs.iter().enumerate() {
            validate_pair(reference, sample)?;
            if reference.dim() != (n, h, w) {
                return Err(Error::ShapeMismatch {
                    what: format!("pair {i} of a batch must have the first pair's [N, H, W]"),
                    expected: vec![n, h, w],
                    got: reference.shape().to_vec(),
                });
            }
            let mean = crate::stack::mean_intensity(reference) as f32;
            if !(mean.is_finite() && mean > 0.0) {
                return Err(Error::invalid(format!(
                    "the reference stack's mean intensity must be > 0, got {mean}"
                )));
            }
            gains.push(1.0 / mean);
        }
        let m = self.info.size_multiple;
        if h < m || w < m {
            return Err(Error::invalid(format!(
                "image {h}x{w} is smaller than the model's size multiple {m} px"
            )));
        }
        let weights = scan_weights(n, self.info.nnet, self.options.scaling)?;
        let (padded, (ys, th), (xs, tw)) = self.layout(h, w);
        crate::memory::ensure(
            self.memory_bytes(pairs.len(), (h, w)),
            None,
            &format!("the network on {} pair(s) of {n}x{h}x{w}", pairs.len()),
        )?;
        let overlap = self.options.overlap_px;
        let origins: Vec<(usize, usize)> = ys
            .iter()
            .flat_map(|&y| xs.iter().map(move |&x| (y, x)))
            .collect();
        log::debug!(
            "{} tile(s) of {th}x{tw} per {h}x{w} image; checks {:.3} s",
            origins.len(),
            clock.elapsed().as_secs_f64()
        );
        let (mut extract_s, mut blend_s) = (0.0, 0.0);
        let jobs: Vec<(usize, (usize, usize))> = (0..pairs.len())
            .flat_map(|p| origins.iter().map(move |&o| (p, o)))
            .collect();

        let nnet = self.info.nnet;
        let mut blends: Vec<tiling::Blend> = pairs
            .iter()
            .map(|_| tiling::Blend::new(4, (h, w), padded, overlap))
            .collect();
        let units = crate::progress::Units::new(progress, jobs.len().div_ceil(self.options.batch));
        // The inputs' buffers serve every batch of their size (extraction writes every
        // value): fresh ones cost page faults, 50 MB a tile at 560² × 20.
        let (mut r, mut smp) = (
            Array4::<f32>::zeros((0, 0, 0, 0)),
            Array4::zeros((0, 0, 0, 0)),
        );
        let batches = jobs.len().div_ceil(self.options.batch);
        for (call, chunk) in jobs.chunks(self.options.batch).enumerate() {
            units.check()?;
            let b = chunk.len();
            let clock = std::time::Instant::now();
            if r.dim().0 != b {
                r = Array4::zeros((b, nnet, th, tw));
                smp = Array4::zeros((b, nnet, th, tw));
            }
            for (k, &(p, origin)) in chunk.iter().enumerate() {
                let (reference, sample) = pairs[p];
                tiling::extract(
                    reference,
                    &weights,
                    gains[p],
                    origin,
                    r.slice_mut(s![k, .., .., ..]),
                );
                tiling::extract(
                    sample,
                    &weights,
                    gains[p],
                    origin,
                    smp.slice_mut(s![k, .., .., ..]),
                );
            }
            extract_s += clock.elapsed().as_secs_f64();
            let maps = self.run(&r, &smp, batches > 1 && call + 1 == batches)?;
            let clock = std::time::Instant::now();
            for (k, &(p, origin)) in chunk.iter().enumerate() {
                blends[p].add(maps.slice(s![k, .., .., ..]), origin);
            }
            blend_s += clock.elapsed().as_secs_f64();
            units.finish_one();
        }
        units.check()?;
        log::debug!("tile extraction {extract_s:.3} s, blending {blend_s:.3} s");
        let clip = |a: Array2<f32>| a.mapv(|v| v.clamp(0.0, TD_CLIP));
        Ok(blends
            .into_iter()
            .map(|b| {
                let [dx, dy, t, d]: [Array2<f32>; 4] =
                    b.finish().try_into().expect("four channels");
                Output {
                    dx,
                    dy,
                    transmission: clip(t),
                    darkfield: clip(d),
                }
            })
            .collect())
    }

    /// The padded image, and the tile origins and size along y and along x.
    #[allow(clippy::type_complexity)]
    fn layout(
        &self,
        h: usize,
        w: usize,
    ) -> ((usize, usize), (Vec<usize>, usize), (Vec<usize>, usize)) {
        tile_layout(&self.options, self.info.size_multiple, (h, w))
    }

    /// Peak memory of reconstructing `pairs` pairs of frames `[h, w]` on the CPU (bytes,
    /// an upper bound): this library's buffers and ONNX Runtime's working memory.
    pub fn memory_bytes(&self, pairs: usize, (h, w): (usize, usize)) -> u64 {
        use crate::memory::product;
        let ((ph, pw), (_, th), (_, tw)) = self.layout(h, w);
        let tiles = product(&[self.options.batch.max(1), th, tw]);
        // Per pair: the blended sums and weight (5 maps, padded) and the outputs with their
        // clipped copies (6). Per batch of tiles: both inputs (2·Nnet), the outputs as ONNX
        // Runtime returns them and as copied (8), and its own activations.
        let pair = product(&[5, ph, pw, 4]).saturating_add(product(&[6, h, w, 4]));
        // On a GPU the activations live in device memory.
        let runtime = match self.provider.is_gpu() {
            true => 0,
            false => ORT_BYTES_PER_TILE_PX,
        };
        let batch = tiles.saturating_mul((2 * self.info.nnet as u64 + 8) * 4 + runtime);
        pair.saturating_mul(pairs as u64).saturating_add(batch)
    }

    /// One inference call: `[B, Nnet, h, w]` twice in, `[B, 4, h, w]` (dx, dy, T, D) out.
    /// After the `last` call of a reconstruction in several, ONNX Runtime's CPU arena gives
    /// back what it can (at 560² tiles, about 70 of its 150 MiB), which the guard and the
    /// phase integration then use; after every call (an image in one tile: a series of
    /// them) it would cost 15 % of the inference time.
    fn run(
        &self,
        reference: &Array4<f32>,
        sample: &Array4<f32>,
        last: bool,
    ) -> Result<Array4<f32>> {
        let ort_err = |e: ort::Error| {
            out_of_memory(&e, "inference")
                .unwrap_or_else(|| Error::Runtime(format!("inference failed: {e}")))
        };
        let r = TensorRef::from_array_view(reference.view()).map_err(ort_err)?;
        let s = TensorRef::from_array_view(sample.view()).map_err(ort_err)?;
        let (_, _, th, tw) = reference.dim();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let session = match &mut *sessions {
            Sessions {
                planned: Some((tile, session)),
                ..
            } if *tile == (th, tw) => session,
            Sessions { any, .. } => match any {
                Some(session) => session,
                None => {
                    let clock = std::time::Instant::now();
                    let (builder, _) = session_builder(&self.options, self.provider)?;
                    let session = any.insert(commit(builder, &self.options, self.provider, None)?);
                    log::info!(
                        "network: session for tiles of any size made in {:.3} s",
                        clock.elapsed().as_secs_f64()
                    );
                    session
                }
            },
        };
        let clock = std::time::Instant::now();
        let mut options = RunOptions::new().map_err(ort_err)?;
        if last && !self.provider.is_gpu() {
            options
                .set("memory.enable_memory_arena_shrinkage", "cpu:0")
                .map_err(ort_err)?;
        }
        let outputs = session
            .run_with_options(ort::inputs!["reference" => r, "sample" => s], &options)
            .map_err(ort_err)?;
        let (b, _, h, w) = reference.dim();
        log::debug!(
            "inference of {b}x{h}x{w}: {:.3} s",
            clock.elapsed().as_secs_f64()
        );
        let mut out = Array4::<f32>::zeros((b, 4, h, w));
        for (name, channels) in [
            ("displacement", 0..2),
            ("transmission", 2..3),
            ("darkfield", 3..4),
        ] {
            let a = outputs[name].try_extract_array::<f32>().map_err(ort_err)?;
            let want = [b, channels.len(), h, w];
            if a.shape() != want {
                return Err(Error::model(
                    &self.info.source,
                    format!(
                        "output `{name}` has shape {:?}, expected {want:?}",
                        a.shape()
                    ),
                ));
            }
            out.slice_mut(s![.., channels, .., ..]).assign(
                &a.into_dimensionality::<ndarray::Ix4>()
                    .expect("rank checked"),
            );
        }
        Ok(out)
    }
}

/// The padded image (px), and the tile origins and size along y and along x, of an image of
/// (h, w) px for a model of size multiple `multiple`.
#[allow(clippy::type_complexity)]
fn tile_layout(
    options: &Options,
    multiple: usize,
    (h, w): (usize, usize),
) -> ((usize, usize), (Vec<usize>, usize), (Vec<usize>, usize)) {
    let padded = (
        h.div_ceil(multiple) * multiple,
        w.div_ceil(multiple) * multiple,
    );
    let (tile, overlap) = (options.tile_px, options.overlap_px);
    (
        padded,
        tiling::layout(padded.0, tile, overlap, multiple),
        tiling::layout(padded.1, tile, overlap, multiple),
    )
}

/// The model's name in messages.
fn source(options: &Options) -> PathBuf {
    options
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(SHIPPED_NAME))
}

/// ONNX Runtime's graph optimisation on the CPU (`models/espinnet-light.cpu.onnx` was made
/// at the same level). Its last level rewrites the convolutions into its blocked NCHWc
/// layout, with reorders around them (18 % of the time at 512²) that cost more than the
/// layout saves here: without it a 512² tile ran in 0.17–0.27 s against 0.22–0.36 s, with
/// 52 MiB less memory, and the session started faster (model card, Speed).
const CPU_OPTIMIZATION: GraphOptimizationLevel = GraphOptimizationLevel::Level2;

/// A session builder with the provider registered (`requested`, resolved if `Auto`) and the
/// options' threads; the provider in use.
fn session_builder(options: &Options, requested: Provider) -> Result<(SessionBuilder, Provider)> {
    let (env, _) = runtime::environment(options.library.as_deref())?;
    let ort_err = |e: ort::Error| Error::Runtime(e.to_string());
    let mut builder = Session::builder(&env).map_err(ort_err)?;
    let provider = provider::register(&mut builder, requested, &options.gpu)?;
    let set_err = |e: ort::Error<SessionBuilder>| Error::Runtime(e.to_string());
    let builder = builder
        .with_intra_threads(options.resolved_threads())
        .map_err(set_err)?
        .with_log_level(runtime::session_log_level())
        .map_err(set_err)?
        // Without the memory pattern (one block planned for every intermediate tensor of a
        // tile shape) the CPU arena reuses freed blocks: measured at tiles of 560², 260 MiB
        // at the peak instead of 360–400, and no slower. (Not measured on a GPU.)
        .with_memory_pattern(provider.is_gpu())
        .map_err(set_err)?;
    let builder = match provider.is_gpu() {
        true => builder,
        // The environment's arena (`runtime::register_cpu_arena`) serves every CPU session.
        // Its threads wait without spinning: between tiles, spinning ones took the cores
        // from the tiles' extraction and blending (2048² × 20 on two cores, four
        // alternated whole runs: 7.26–9.10 s against 7.42–9.92 s; model card, Speed).
        false => builder
            .with_optimization_level(CPU_OPTIMIZATION)
            .map_err(set_err)?
            .with_intra_op_spinning(false)
            .map_err(set_err)?
            .with_env_allocators()
            .map_err(set_err)?,
    };
    Ok((builder, provider))
}

/// The model's session on `provider`, planned for tiles of `tile` (height, width) px if
/// given (the exporter names those dimensions `height` and `width`), else for any size.
/// On the CPU the shipped model comes optimised already ([`model::SHIPPED_CPU`]).
fn commit(
    mut builder: SessionBuilder,
    options: &Options,
    provider: Provider,
    tile: Option<(usize, usize)>,
) -> Result<Session> {
    let set_err = |e: ort::Error<SessionBuilder>| Error::Runtime(e.to_string());
    if let Some((th, tw)) = tile {
        builder = builder
            .with_dimension_override("height", th as i64)
            .map_err(set_err)?
            .with_dimension_override("width", tw as i64)
            .map_err(set_err)?;
    }
    match &options.model {
        Some(path) => builder.commit_from_file(path),
        None if provider.is_gpu() => builder.commit_from_memory(model::SHIPPED),
        None => {
            builder = builder
                .with_optimization_level(GraphOptimizationLevel::Disable)
                .map_err(set_err)?;
            match builder.commit_from_memory(model::SHIPPED_CPU) {
                Ok(session) => Ok(session),
                // A library without one of its fused operators: optimise the plain model.
                Err(e) => {
                    log::warn!(
                        "the shipped model's CPU optimisation did not load ({e}); optimising \
                         it at load instead"
                    );
                    builder = builder
                        .with_optimization_level(CPU_OPTIMIZATION)
                        .map_err(set_err)?;
                    builder.commit_from_memory(model::SHIPPED)
                }
            }
        }
    }
    .map_err(|e| {
        out_of_memory(&e, "loading the model").unwrap_or_else(|| Error::model(source(options), e))
    })
}

/// ONNX Runtime reports a failed allocation (its arena's, or a thread's) as any other
/// failure: this tells it apart, as [`Error::OutOfMemory`].
fn out_of_memory(e: &ort::Error, what: &str) -> Option<Error> {
    let e = e.to_string();
    let arena = e
        .split("Failed to allocate memory for requested buffer of size ")
        .nth(1);
    if arena.is_none() && !e.contains("Cannot allocate memory") && !e.contains("std::bad_alloc") {
        return None;
    }
    let bytes = arena
        .and_then(|size| size.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok());
    Some(Error::OutOfMemory {
        what: format!("ONNX Runtime ({what})"),
        need_mib: bytes.map_or(0, |n| n.div_ceil(1 << 20)),
        available: "more than the system could provide".into(),
    })
}

/// The execution providers the ONNX Runtime library offers, best first (loading it if
/// needed).
pub fn available_providers(library: Option<&std::path::Path>) -> Result<Vec<Provider>> {
    runtime::environment(library)?;
    provider::available()
}
