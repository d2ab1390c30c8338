//! `espinnet reconstruct`: stacks in, contrasts out, through `espinnet::Engine`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use espinnet::integrate::Method;
use espinnet::io::OutputDir;
use espinnet::io::preview::{Panel, Scale, write_montage};
use espinnet::network::{self, ConvSearch, Provider};
use espinnet::tracking::{Params, Status};
use espinnet::{Engine, EngineKind, Error, Geometry, Maps, Options, Result, ScanScaling};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::inspect::Inputs;

fn tracking() -> Params {
    Params::default()
}

fn net() -> network::Options {
    network::Options::default()
}

#[derive(clap::Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Output directory (made, or replaced whole with --force), or one NeXus/HDF5 file
    /// `result.h5` (.h5, .hdf5, .nxs) holding every map and the settings.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub settings: EngineArgs,
    /// Replace an earlier output directory (all of it).
    #[arg(long)]
    pub force: bool,
}

/// The engine and its settings, as `reconstruct` and `series` take them.
#[derive(clap::Args)]
pub struct EngineArgs {
    /// Engine: network (ESPINNet through ONNX Runtime) or tracking (correlation).
    #[arg(long, default_value_t = EngineKind::default())]
    pub engine: EngineKind,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Tracking: window half-width Nw (px); the window is (2·Nw+1)².
    #[arg(long, default_value_t = tracking().window, help_heading = "Tracking engine")]
    pub window: usize,
    /// Tracking: largest displacement searched along each axis (px).
    #[arg(long, default_value_t = tracking().max_shift, help_heading = "Tracking engine")]
    pub max_shift: usize,
    /// Tracking: fit transmission only (no dark-field).
    #[arg(long, help_heading = "Tracking engine")]
    pub no_darkfield: bool,
    /// Photon energy (keV); with --distance-m and --pixel-size-um gives refraction and phase.
    #[arg(long, requires_all = ["distance_m", "pixel_size_um"])]
    pub energy_kev: Option<f64>,
    /// Sample-to-detector distance (m).
    #[arg(long, requires = "energy_kev")]
    pub distance_m: Option<f64>,
    /// Detector pixel size (µm).
    #[arg(long, requires = "energy_kev")]
    pub pixel_size_um: Option<f64>,
    /// Geometric magnification.
    #[arg(long, default_value_t = 1.0)]
    pub magnification: f64,
    /// The most memory (MiB) the reconstruction may need, checked against its estimate
    /// before it starts (0: no limit but the system's).
    #[arg(long, default_value_t = 0)]
    pub memory_limit_mib: u64,
    /// Phase integration: frankot-chellappa or least-squares.
    #[arg(long, default_value_t = Method::default())]
    pub integration: Method,
}

/// Network engine options (shared with `bench` and `validate`); defaults are the library's.
#[derive(clap::Args, Clone)]
#[command(next_help_heading = "Network engine")]
pub struct NetworkArgs {
    /// ONNX model (default: the shipped one, built into the library).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// ONNX Runtime library (default: $ESPINNET_ORT_PATH, $ORT_DYLIB_PATH, the active
    /// Python environment's onnxruntime, then the one scripts/setup.sh installed).
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Execution provider: auto, cpu, cuda or tensorrt.
    #[arg(long, default_value_t = net().provider)]
    pub provider: Provider,
    /// How N ≠ Nnet scans are brought to the network's Nnet: nearest or linear.
    #[arg(long, default_value_t = net().scaling)]
    pub scaling: ScanScaling,
    /// Tile size (px): bounds memory; images up to this size run whole (0: 640 on the CPU,
    /// 1280 on a GPU).
    #[arg(long, default_value_t = net().tile_px)]
    pub tile: usize,
    /// Tiles per inference call.
    #[arg(long, default_value_t = net().batch)]
    pub batch: usize,
    /// CPU threads of every step, inference included (0: one per core).
    #[arg(long, default_value_t = net().threads)]
    pub threads: usize,
    /// GPU device ordinal.
    #[arg(long, default_value_t = net().gpu.device_id)]
    pub device_id: i32,
    /// TensorRT fp16 engines.
    #[arg(long)]
    pub fp16: bool,
    /// CUDA memory limit (MiB).
    #[arg(long)]
    pub gpu_mem_limit_mib: Option<usize>,
    /// TensorRT engine cache directory.
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
    /// How CUDA picks each convolution's algorithm: exhaustive (time them all, once per
    /// shape), heuristic or fixed.
    #[arg(long, default_value_t = net().gpu.conv_search)]
    pub conv_search: ConvSearch,
    /// The guard: the network's smooth bias, measured by the tracker on a grid of pixels, is
    /// taken off; pixels whose estimate the signal model rejects are solved again by the
    /// tracker, starting from the network's, and from five frames the tracker takes the
    /// areas dense with them or of a large bias (status 4). Catches the network's gross errors
    /// on lenses and wide smooth fields and most of its phase error; adds about a half to a
    /// run on two cores at 2048² × 20 and 2048² × 3, three quarters at 512² × 20.
    /// `--guard=false` turns it off.
    #[arg(long, default_value_t = net().guard, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub guard: bool,
}

impl Default for NetworkArgs {
    /// The library's defaults (what the command line gives when no option is set).
    fn default() -> Self {
        let o = net();
        NetworkArgs {
            model: o.model,
            ort_library: o.library,
            provider: o.provider,
            scaling: o.scaling,
            tile: o.tile_px,
            batch: o.batch,
            threads: o.threads,
            device_id: o.gpu.device_id,
            fp16: o.gpu.fp16,
            gpu_mem_limit_mib: None,
            trt_cache: None,
            conv_search: o.gpu.conv_search,
            guard: o.guard,
        }
    }
}

impl NetworkArgs {
    pub fn options(&self) -> network::Options {
        let mut o = net();
        o.model = self.model.clone();
        o.library = self.ort_library.clone().or_else(crate::setup_ort_library);
        o.provider = self.provider;
        o.gpu.device_id = self.device_id;
        o.gpu.fp16 = self.fp16;
        o.gpu.memory_limit_bytes = self.gpu_mem_limit_mib.map(|m| m << 20);
        o.gpu.engine_cache_dir = self.trt_cache.clone();
        o.gpu.conv_search = self.conv_search;
        o.threads = self.threads;
        o.scaling = self.scaling;
        o.tile_px = self.tile;
        o.batch = self.batch;
        o.guard = self.guard;
        o
    }
}

impl NetworkArgs {
    /// The flags that give these settings, for a child `espinnet` process.
    pub fn to_flags(&self) -> Vec<String> {
        let mut f = vec![
            format!("--provider={}", self.provider),
            format!("--scaling={}", self.scaling),
            format!("--tile={}", self.tile),
            format!("--batch={}", self.batch),
            format!("--threads={}", self.threads),
            format!("--device-id={}", self.device_id),
            format!("--conv-search={}", self.conv_search),
        ];
        let path = |flag: &str, p: &Option<PathBuf>| {
            p.as_ref().map(|p| format!("--{flag}={}", p.display()))
        };
        f.extend(path("model", &self.model));
        f.extend(path("ort-library", &self.ort_library));
        f.extend(path("trt-cache", &self.trt_cache));
        f.extend(
            self.gpu_mem_limit_mib
                .map(|m| format!("--gpu-mem-limit-mib={m}")),
        );
        if self.fp16 {
            f.push("--fp16".into());
        }
        f.push(format!("--guard={}", self.guard));
        f
    }
}

impl EngineArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> Result<Options> {
        let mut o = Options::default();
        o.engine = self.engine;
        o.network = self.network.options();
        o.tracking.window = self.window;
        o.tracking.max_shift = self.max_shift;
        o.tracking.dark_field = !self.no_darkfield;
        o.geometry = match (self.energy_kev, self.distance_m, self.pixel_size_um) {
            (Some(e), Some(z), Some(p)) => {
                Some(Geometry::from_kev_um(e, z, p, self.magnification)?)
            }
            _ => None,
        };
        o.integration = self.integration;
        // Through the library's names, so that its bounds apply to the command line too.
        for (key, value) in [
            ("window", self.window as u64),
            ("max_shift", self.max_shift as u64),
            ("tile", self.network.tile as u64),
            ("batch", self.network.batch as u64),
            ("threads", self.network.threads as u64),
            ("memory_limit_mib", self.memory_limit_mib),
        ] {
            o.set(key, &value.to_string())?;
        }
        Ok(o)
    }
}

/// What a user checks before opening the images: per map the share of finite pixels and
/// the 1st, 50th and 99th percentiles, min and max; the share of T and D at the network's
/// clipping bounds. The tracker's status shares are in [`engine_summary`].
fn statistics(maps: &espinnet::Maps) -> Value {
    let describe = |a: &Array2<f32>| {
        let mut v: Vec<f32> = a.iter().copied().filter(|x| x.is_finite()).collect();
        let share = v.len() as f64 / a.len().max(1) as f64;
        if v.is_empty() {
            return json!({ "finite_share": 0.0 });
        }
        let rank = |q: f64| ((v.len() - 1) as f64 * q).round() as usize;
        let (i1, i50, i99) = (rank(0.01), rank(0.5), rank(0.99));
        let min = v.iter().copied().min_by(f32::total_cmp);
        let max = v.iter().copied().max_by(f32::total_cmp);
        // The median splits the values; the percentiles are then found in their halves.
        let (low, &mut p50, high) = v.select_nth_unstable_by(i50, f32::total_cmp);
        let p1 = match i1 < i50 {
            true => *low.select_nth_unstable_by(i1, f32::total_cmp).1,
            false => p50,
        };
        let p99 = match i99 > i50 {
            true => *high.select_nth_unstable_by(i99 - i50 - 1, f32::total_cmp).1,
            false => p50,
        };
        json!({ "finite_share": share, "min": min, "p1": p1, "median": p50, "p99": p99, "max": max })
    };
    let clipped = |a: &Array2<f32>| {
        a.iter()
            .filter(|&&x| x <= 0.0 || x >= network::TD_CLIP)
            .count() as f64
            / a.len().max(1) as f64
    };
    let described: Vec<(String, Value)> = [
        ("dx_px", &maps.dx),
        ("dy_px", &maps.dy),
        ("transmission", &maps.transmission),
        ("darkfield", &maps.darkfield),
        ("quality", &maps.quality),
    ]
    .par_iter()
    .map(|&(name, a)| (name.to_string(), describe(a)))
    .collect();
    let mut out: serde_json::Map<String, Value> = described.into_iter().collect();
    out.insert(
        "share_at_clip_bounds".into(),
        json!({ "transmission": clipped(&maps.transmission), "darkfield": clipped(&maps.darkfield) }),
    );
    Value::Object(out)
}

/// What the engine was and did, for `summary.json`.
fn engine_summary(engine: &Engine, maps: &Maps) -> Value {
    let o = engine.options();
    match engine.network() {
        Some(net) => json!({
            "model": net.info(),
            "provider": net.provider(),
            "ort_library": net.library(),
            "options": o.network,
            "tile_px": net.tile_px(),
            "clipping": format!("transmission and darkfield clipped to [0, {}]", network::TD_CLIP),
            "beyond_field_of_view_pixels": maps.status.iter()
                .filter(|&&s| s == Status::Border as u8).count(),
            "guard": {
                "resolved_pixels": maps.report.resolved_pixels,
                "resolved_share": maps.report.resolved_pixels as f64 / maps.dx.len().max(1) as f64,
                "what": "pixels the signal model rejected, solved again by the tracker from the network's estimate, and from five frames the tracker's estimates over the areas dense with them or where the bias taken off was large",
            },
        }),
        None => {
            let mut counts = [0usize; 4];
            for &v in &maps.status {
                counts[usize::from(v).min(3)] += 1;
            }
            let total = counts.iter().sum::<usize>().max(1) as f64;
            let names = ["converged", "search_edge", "ill_conditioned", "border_nan"];
            let by_name = |f: &dyn Fn(usize) -> Value| -> Value {
                names
                    .iter()
                    .zip(counts)
                    .map(|(n, c)| (n.to_string(), f(c)))
                    .collect()
            };
            json!({
                "parameters": o.tracking,
                "pixels": by_name(&|c| json!(c)),
                "pixel_shares": by_name(&|c| json!(c as f64 / total)),
                "status_codes": { "0": "converged", "1": "minimum at the search edge", "2": "ill-conditioned", "3": "border (NaN)" },
            })
        }
    }
}

impl ReconstructArgs {
    /// `--case DIR`: its stacks, and its geometry unless flags give one.
    pub fn apply_case(&mut self) -> Result<()> {
        let Some(meta) = self.inputs.apply_case()? else {
            return Ok(());
        };
        self.settings.geometry_from(&meta)
    }
}

impl EngineArgs {
    /// The geometry from a case's or scan's metadata, unless flags give one.
    pub fn geometry_from(&mut self, meta: &Value) -> Result<()> {
        if self.energy_kev.is_some() {
            return Ok(());
        }
        let get = |key: &str| {
            meta[key].as_f64().ok_or_else(|| {
                Error::InvalidArgument(format!("the metadata has no number '{key}'"))
            })
        };
        self.energy_kev = Some(get("energy_kev")?);
        self.distance_m = Some(get("distance_m")?);
        self.pixel_size_um = Some(get("pixel_size_um")?);
        self.magnification = get("magnification")?;
        Ok(())
    }
}

/// The geometry as the flags, `meta.json` and `summary.json` name it: `pixel_size_um` is
/// the detector pixel; the pixel at the sample is `effective_pixel_um`.
pub fn geometry_json(g: &espinnet::geometry::Geometry) -> Value {
    json!({
        "energy_kev": g.energy_ev / 1e3,
        "distance_m": g.distance_m,
        "pixel_size_um": g.detector_pixel_m * 1e6,
        "magnification": g.magnification,
        "effective_pixel_um": g.effective_pixel_m() * 1e6,
    })
}

pub fn run(a: &ReconstructArgs) -> Result<()> {
    let mut options = a.settings.options()?;
    let inputs = a.inputs.paths();
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    // `result.h5` (also .hdf5, .nxs): one NeXus file; anything else: a directory of TIFFs.
    let nexus = a
        .output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["h5", "hdf5", "nxs"].contains(&e.to_ascii_lowercase().as_str()));
    let staged = if nexus {
        if inputs.contains(&a.output.as_path()) {
            return Err(Error::InvalidArgument(format!(
                "{} is an input of this run: choose another output",
                a.output.display()
            )));
        }
        if !a.force {
            espinnet::io::refuse_existing(&a.output)?;
        }
        None
    } else {
        Some(OutputDir::create(&a.output, a.force, &inputs)?)
    };

    let clock = Instant::now();
    let (reference, sample) = a.inputs.read()?;
    let read_s = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let (n, h, w) = reference.dim();
    options.network.image_px = Some((h, w));
    let engine = Engine::new(&options)?;
    let setup_s = clock.elapsed().as_secs_f64();
    let name = options.engine.name();
    let bar = ProgressBar::new(1000)
        .with_style(
            ProgressStyle::with_template("{msg} {bar:40} {percent}% eta {eta}")
                .expect("valid template"),
        )
        .with_message(format!("{name} engine: {n} frames of {h}x{w}"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = |fraction: f64| {
        bar.set_position((fraction * 1000.0) as u64);
        true
    };
    let clock = Instant::now();
    let result = engine.reconstruct_with(reference.view(), sample.view(), &report);
    bar.finish_and_clear();
    let maps = result?;
    let engine_s = clock.elapsed().as_secs_f64();
    // The stacks are most of the run's memory and are not needed for writing: freed on
    // another thread, as handing 670 MB back (2048² × 20) takes 0.07 s.
    let freeing = std::thread::spawn(move || drop((reference, sample)));

    let clock = Instant::now();
    let images = maps.named();
    let stages = maps.report.stages;
    let mut summary = json!({
        "espinnet_version": env!("CARGO_PKG_VERSION"),
        "engine": name,
        "inputs": { "reference": a.inputs.reference, "sample": a.inputs.sample, "dark": a.inputs.dark, "flat": a.inputs.flat,
                    "scans": n, "height": h, "width": w },
        name: engine_summary(&engine, &maps),
        "statistics": statistics(&maps),
        "quality": "RMS over the scan of S - T(M + D(R(r-d) - M)) relative to the scan mean of S \
                    (R Keys-interpolated, M the reference's local mean)",
        "geometry": options.geometry.as_ref().map(geometry_json),
        "integration": options.integration,
        "timings_s": { "read": read_s, "setup": setup_s, "engine": engine_s },
        "engine_stages_s": { "estimate": stages.estimate_s, "guard": stages.guard_s,
                             "phase": stages.phase_s, "maps": stages.maps_s },
        "preview_panels": images.iter().map(|((n, ..), _)| *n).chain(["status"]).collect::<Vec<_>>(),
    });
    let text = |s: &Value| serde_json::to_string_pretty(s).expect("serialisable");
    match staged {
        None => espinnet::io::nexus::write_result(&a.output, &maps, &text(&summary))?,
        Some(staged) => {
            let path = |rel: &str| staged.path(rel).map(|p| p.to_string_lossy().into_owned());
            let status = maps.status.mapv(f32::from);
            let files: Vec<(String, &Array2<f32>)> = images
                .iter()
                .map(|((name, ..), data)| (format!("{name}.tif"), *data))
                .chain([("status.tif".to_string(), &status)])
                .collect();
            let panels: Vec<Panel> = images
                .iter()
                .map(|&((name, units, _), data)| Panel {
                    data,
                    // Signed maps (displacements, angles) diverge about zero.
                    scale: match name {
                        "dx" | "dy" | "refraction_x" | "refraction_y" => Scale::Diverging,
                        _ => Scale::Sequential,
                    },
                    title: match units {
                        "" => name.into(),
                        "pixel" => format!("{name} (px)"),
                        u => format!("{name} ({u})"),
                    },
                })
                .chain([Panel {
                    data: &status,
                    scale: Scale::Status,
                    title: "status 3:NaN 4:guard".into(),
                }])
                .collect();
            let caption = format!("{name} engine, N = {n}, {h}x{w} px");
            let pixel_um = options.geometry.map(|g| g.effective_pixel_m() * 1e6);
            // The files and the preview in parallel: each is mostly encoding and writing.
            let (written, preview) = rayon::join(
                || {
                    files
                        .par_iter()
                        .try_for_each(|(rel, data)| espinnet::io::write_image(&path(rel)?, data))
                },
                || {
                    let columns = panels.len().div_ceil(2);
                    write_montage(
                        &staged.path("preview.png")?,
                        &caption,
                        &panels,
                        columns,
                        pixel_um,
                    )
                },
            );
            written.and(preview)?;
            // Written last, so that it can say what the writing took.
            summary["timings_s"]["write"] = json!(clock.elapsed().as_secs_f64());
            summary["peak_rss_mib"] = json!(crate::peak_rss_mib());
            let p = staged.path("summary.json")?;
            std::fs::write(&p, text(&summary)).map_err(|e| Error::Io { path: p, source: e })?;
            staged.commit()?;
        }
    }
    eprintln!(
        "{name} engine: {n} frames of {h}x{w} in {engine_s:.2} s; wrote {}",
        a.output.display()
    );
    freeing.join().expect("freeing the stacks does not panic");
    Ok(())
}
