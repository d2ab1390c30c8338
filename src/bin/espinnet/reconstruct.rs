//! `espinnet reconstruct`: stacks in, contrasts out.

use std::path::PathBuf;
use std::time::Instant;

use espinnet::integrate::{Method, phase_from_displacement};
use espinnet::io::preview::{Scale, write_montage};
use espinnet::network::{self, GpuOptions, Network, Provider};
use espinnet::progress::Progress;
use espinnet::tracking::{Params, track_with};
use espinnet::{Error, Geometry, Result, ScanScaling};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Array3};
use serde_json::{Value, json};

use crate::inspect::Inputs;
use crate::output::Staged;

#[derive(clap::Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Output directory.
    #[arg(long)]
    pub output: PathBuf,
    /// Engine: network (ESPINNet through ONNX Runtime) or tracking (correlation).
    #[arg(long, default_value = "network", value_parser = ["network", "tracking"])]
    pub engine: String,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Tracking: window half-width Nw (px); the window is (2·Nw+1)².
    #[arg(long, default_value_t = 1, help_heading = "Tracking engine")]
    pub window: usize,
    /// Tracking: largest displacement searched along each axis (px).
    #[arg(long, default_value_t = 8, help_heading = "Tracking engine")]
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
    /// Phase integration: frankot-chellappa or least-squares.
    #[arg(long, default_value = "frankot-chellappa")]
    pub integration: Method,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
}

/// The border (px) the tracker leaves NaN for window `nw` and maximum shift `max_shift`.
pub fn tracking_border(nw: usize, max_shift: usize) -> usize {
    Params {
        window: nw,
        max_shift,
        ..Default::default()
    }
    .border()
}

/// Network engine options (shared with `bench`).
#[derive(clap::Args, Clone)]
#[command(next_help_heading = "Network engine")]
pub struct NetworkArgs {
    /// ONNX model (default: the shipped one, built into the library).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// ONNX Runtime library (default: $ESPINNET_ORT_PATH, $ORT_DYLIB_PATH, then the one
    /// scripts/setup.sh installed).
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Execution provider: auto, cpu, cuda or tensorrt.
    #[arg(long, default_value = "auto")]
    pub provider: Provider,
    /// How N ≠ Nnet scans are brought to the network's Nnet: nearest or linear.
    #[arg(long, default_value = "nearest")]
    pub scaling: ScanScaling,
    /// Tile size (px): bounds memory; images up to this size run whole.
    #[arg(long, default_value_t = 1280)]
    pub tile: usize,
    /// Tiles per inference call.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Inference threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// GPU device ordinal.
    #[arg(long, default_value_t = 0)]
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
}

impl Default for NetworkArgs {
    /// The library's defaults (what the command line gives when no option is set).
    fn default() -> Self {
        let o = network::Options::default();
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
        }
    }
}

impl NetworkArgs {
    pub fn options(&self) -> network::Options {
        network::Options {
            model: self.model.clone(),
            library: self.ort_library.clone(),
            provider: self.provider,
            gpu: GpuOptions {
                device_id: self.device_id,
                fp16: self.fp16,
                memory_limit_bytes: self.gpu_mem_limit_mib.map(|m| m << 20),
                engine_cache_dir: self.trt_cache.clone(),
            },
            threads: self.threads,
            scaling: self.scaling,
            tile_px: self.tile,
            batch: self.batch,
            ..Default::default()
        }
    }
}

/// What an engine produced, in the order the files are written.
struct Maps {
    dx: Array2<f32>,
    dy: Array2<f32>,
    transmission: Array2<f32>,
    darkfield: Array2<f32>,
    quality: Array2<f32>,
    /// The tracker's per-pixel status; the network has none.
    status: Option<Array2<u8>>,
}

fn run_tracking(
    a: &ReconstructArgs,
    r: &Array3<f32>,
    s: &Array3<f32>,
    progress: &dyn Progress,
) -> Result<(Maps, Value)> {
    let params = Params {
        window: a.window,
        max_shift: a.max_shift,
        dark_field: !a.no_darkfield,
        ..Default::default()
    };
    let out = track_with(r.view(), s.view(), &params, progress)?;
    use espinnet::tracking::Status::{self, *};
    let count = |st: Status| out.status.iter().filter(|&&v| v == st as u8).count();
    let info = json!({
        "parameters": params,
        "pixels": { "converged": count(Converged), "search_edge": count(SearchEdge),
                    "ill_conditioned": count(IllConditioned), "border_nan": count(Border) },
        "status_codes": { "0": "converged", "1": "minimum at the search edge", "2": "ill-conditioned", "3": "border (NaN)" },
        "quality": "RMS fit residual relative to the mean sample intensity in the window",
    });
    let maps = Maps {
        dx: out.dx,
        dy: out.dy,
        transmission: out.transmission,
        darkfield: out.darkfield,
        quality: out.residual,
        status: Some(out.status),
    };
    Ok((maps, info))
}

fn run_network(
    a: &ReconstructArgs,
    r: &Array3<f32>,
    s: &Array3<f32>,
    progress: &dyn Progress,
) -> Result<(Maps, Value)> {
    let options = a.network.options();
    let net = Network::new(&options)?;
    let out = net.reconstruct_with(r.view(), s.view(), progress)?;
    let quality = network::model_residual(r.view(), s.view(), &out);
    let info = json!({
        "model": net.info(),
        "provider": net.provider(),
        "ort_library": net.library(),
        "options": options,
        "quality": "RMS over the scan of S - T(M + D(R(r-d) - M)) relative to the scan mean of S",
        "clipping": format!("transmission and darkfield clipped to [0, {}]", network::TD_CLIP),
    });
    let maps = Maps {
        dx: out.dx,
        dy: out.dy,
        transmission: out.transmission,
        darkfield: out.darkfield,
        quality,
        status: None,
    };
    Ok((maps, info))
}

pub fn run(a: &ReconstructArgs) -> Result<()> {
    let geometry = match (a.energy_kev, a.distance_m, a.pixel_size_um) {
        (Some(e), Some(z), Some(p)) => Some(Geometry::new(e * 1e3, z, p * 1e-6, a.magnification)?),
        _ => None,
    };
    let tracking = a.engine == "tracking";
    let mut files = vec![
        "dx.tif",
        "dy.tif",
        "transmission.tif",
        "darkfield.tif",
        "quality.tif",
    ];
    if tracking {
        files.push("status.tif");
    }
    if geometry.is_some() {
        files.extend(["refraction_x.tif", "refraction_y.tif", "phase.tif"]);
    }
    files.extend(["summary.json", "preview.png"]);
    let staged = Staged::new(&a.output, &files, a.force)?;

    let clock = Instant::now();
    let (reference, sample) = a.inputs.read()?;
    let read_s = clock.elapsed().as_secs_f64();

    let (n, h, w) = reference.dim();
    let bar = ProgressBar::new(1000)
        .with_style(
            ProgressStyle::with_template("{msg} {bar:40} {percent}% eta {eta}")
                .expect("valid template"),
        )
        .with_message(format!("{} engine: {n} frames of {h}x{w}", a.engine));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = |fraction: f64| {
        bar.set_position((fraction * 1000.0) as u64);
        true
    };
    let clock = Instant::now();
    let result = if tracking {
        run_tracking(a, &reference, &sample, &report)
    } else {
        run_network(a, &reference, &sample, &report)
    };
    bar.finish_and_clear();
    let (out, engine_info) = result?;
    let engine_s = clock.elapsed().as_secs_f64();

    let path = |rel: &str| staged.path(rel).map(|p| p.to_string_lossy().into_owned());
    // Maps derived from the displacement first; then the engine's own maps move in.
    let mut derived: Vec<(&str, Array2<f32>, Scale)> = Vec::new();
    let mut phase_s = None;
    if let Some(g) = &geometry {
        let clock = Instant::now();
        let phase = phase_from_displacement(out.dx.view(), out.dy.view(), g, a.integration)?;
        phase_s = Some(clock.elapsed().as_secs_f64());
        let angle = |d: &f32| g.angle_rad(*d as f64) as f32;
        derived.push(("refraction_x", out.dx.map(angle), Scale::Diverging));
        derived.push(("refraction_y", out.dy.map(angle), Scale::Diverging));
        derived.push(("phase", phase, Scale::Sequential));
    }
    let mut maps: Vec<(&str, Array2<f32>, Scale)> = vec![
        ("dx", out.dx, Scale::Diverging),
        ("dy", out.dy, Scale::Diverging),
        ("transmission", out.transmission, Scale::Sequential),
        ("darkfield", out.darkfield, Scale::Sequential),
        ("quality", out.quality, Scale::Sequential),
    ];
    maps.extend(derived);
    for (name, data, _) in &maps {
        espinnet::io::write_image(&path(&format!("{name}.tif"))?, data)?;
    }
    if let Some(status) = &out.status {
        espinnet::io::write_image(&path("status.tif")?, &status.mapv(f32::from))?;
    }
    let panels: Vec<(&Array2<f32>, Scale)> = maps.iter().map(|(_, d, s)| (d, *s)).collect();
    write_montage(&staged.path("preview.png")?, &panels, 4)?;

    let summary = json!({
        "espinnet_version": env!("CARGO_PKG_VERSION"),
        "engine": a.engine,
        "inputs": { "reference": a.inputs.reference, "sample": a.inputs.sample, "dark": a.inputs.dark, "flat": a.inputs.flat,
                    "scans": n, "height": h, "width": w },
        a.engine.as_str(): engine_info,
        "geometry": geometry,
        "integration": a.integration,
        "timings_s": { "read": read_s, "engine": engine_s, "phase": phase_s },
        "preview_panels": maps.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
    });
    let p = staged.path("summary.json")?;
    std::fs::write(
        &p,
        serde_json::to_string_pretty(&summary).expect("serialisable"),
    )
    .map_err(|e| Error::Io { path: p, source: e })?;
    staged.commit()?;
    eprintln!(
        "{} engine: {n} frames of {h}x{w} in {engine_s:.2} s; wrote {}",
        a.engine,
        a.output.display()
    );
    Ok(())
}
