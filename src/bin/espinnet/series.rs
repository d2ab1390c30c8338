//! `espinnet series` and `espinnet simulate-ct`: a CT scan, projection by projection,
//! resumable, into one NeXus file; and a phantom scan to try it on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use espinnet::series::{Plan, Series, Spec};
use espinnet::simulate::ct::CtConfig;
use espinnet::{Engine, Error, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::reconstruct::EngineArgs;

#[derive(clap::Args)]
pub struct SeriesArgs {
    /// Projections `[angles, N, H, W]`: SCAN.h5 (DXchange: /exchange/data), SCAN.h5:/path,
    /// or a directory of one stack file per angle (.tif, .tiff, .npy; name order).
    #[arg(long)]
    pub projections: String,
    /// Reference stack [N, H, W] (default: /exchange/data_white of the projections' file).
    #[arg(long)]
    pub reference: Option<String>,
    /// A second reference stack taken after the scan, interpolated by angle against drift.
    #[arg(long)]
    pub reference_end: Option<String>,
    /// Dark frame(s), averaged and subtracted (default: /exchange/data_dark when present).
    #[arg(long)]
    pub dark: Option<String>,
    /// Angles in degrees: a dataset or file of one value per projection, or START:STOP
    /// (evenly spaced, STOP excluded); default: /exchange/theta.
    #[arg(long)]
    pub angles: Option<String>,
    /// Air columns (px) at each side: each projection's phase is set to zero there
    /// (default: a sixteenth of the width; 0: zero-mean phase).
    #[arg(long)]
    pub air_columns: Option<usize>,
    /// Geometry from a JSON file with energy_kev, distance_m, pixel_size_um and
    /// magnification (as `simulate-ct` writes in ct.json), unless the flags give one.
    #[arg(long, value_name = "FILE")]
    pub geometry_json: Option<PathBuf>,
    /// Output NeXus file (.h5, .hdf5, .nxs); its journal is OUTPUT.journal until done.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub settings: EngineArgs,
    /// Replace an existing output file that has no journal beside it.
    #[arg(long)]
    pub force: bool,
}

pub fn run(mut a: SeriesArgs) -> Result<()> {
    if let Some(path) = &a.geometry_json {
        let text = std::fs::read(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let meta: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Format {
            message: format!("not JSON: {e}"),
            path: path.clone(),
        })?;
        a.settings.geometry_from(&meta)?;
    }
    let mut spec = Spec::new(a.projections.clone());
    spec.reference = a.reference.clone();
    spec.reference_end = a.reference_end.clone();
    spec.dark = a.dark.clone();
    spec.angles = a.angles.clone();
    spec.air_columns = a.air_columns;
    let series = Series::open(&spec)?;
    let (k, n, h, w) = series.dims();
    let mut options = a.settings.options()?;
    options.network.image_px = Some((h, w));
    let engine = Engine::new(&options)?;

    // Ctrl-C (and SIGTERM) stop after the projection being computed.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| Error::Runtime(format!("cannot catch Ctrl-C: {e}")))?;
    let bar = ProgressBar::new(k as u64 * 1000)
        .with_style(
            ProgressStyle::with_template("{msg} {bar:40} {percent}% eta {eta}").expect("valid"),
        )
        .with_message(format!(
            "{} engine: {k} projections of {n}x{h}x{w}",
            engine.options().engine
        ));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = |fraction: f64| {
        bar.set_position((fraction * (k * 1000) as f64) as u64);
        !stop.load(Ordering::SeqCst)
    };
    let mut plan = Plan::default();
    plan.overwrite = a.force;
    let result = espinnet::series::run(&engine, &series, &a.output, &plan, &report);
    bar.finish_and_clear();
    match result {
        Ok(r) if r.unchanged => {
            eprintln!(
                "series: {} already holds this scan: nothing to do (--force computes it again)",
                a.output.display()
            );
            Ok(())
        }
        Ok(r) => {
            eprintln!(
                "series: {} projections ({} resumed, {} computed) in {:.1} s ({:.2} s each); wrote {}",
                r.projections,
                r.resumed,
                r.computed,
                r.seconds,
                r.seconds / r.computed.max(1) as f64,
                a.output.display()
            );
            Ok(())
        }
        Err(Error::Cancelled) => {
            eprintln!(
                "series: stopped; finished projections are kept in {}: the same command resumes",
                espinnet::series::journal_path(&a.output).display()
            );
            std::process::exit(130);
        }
        Err(e) => Err(e),
    }
}

#[derive(clap::Args)]
pub struct SimulateCtArgs {
    /// Directory for scan.h5 (DXchange), truth.h5 and ct.json.
    #[arg(long)]
    pub output: PathBuf,
    /// Projections over 180°.
    #[arg(long, default_value_t = 90)]
    pub angles: usize,
    /// Pattern images per angle.
    #[arg(long, default_value_t = 3)]
    pub scans: usize,
    /// Image size (px).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Largest displacement over the scan (px).
    #[arg(long, default_value_t = 3.0)]
    pub max_displacement_px: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Leave out the true δ volume (H·W² values), e.g. for 2048² benchmarks.
    #[arg(long)]
    pub no_delta: bool,
    /// Replace earlier files in the directory.
    #[arg(long)]
    pub force: bool,
}

pub fn simulate_ct(a: &SimulateCtArgs) -> Result<()> {
    let mut config = CtConfig::new(a.size, a.scans, a.angles, a.seed);
    config.max_displacement_px = a.max_displacement_px;
    config.delta_volume = !a.no_delta;
    if !a.force {
        for name in ["scan.h5", "truth.h5", "ct.json"] {
            espinnet::io::refuse_existing(&a.output.join(name))?;
        }
    }
    let bar = ProgressBar::new(1000).with_style(
        ProgressStyle::with_template("simulating {bar:40} {percent}% eta {eta}").expect("valid"),
    );
    let report = |f: f64| {
        bar.set_position((f * 1000.0) as u64);
        true
    };
    let result = espinnet::simulate::ct::write(&config, &a.output, &report);
    bar.finish_and_clear();
    result?;
    eprintln!(
        "wrote {} ({} angles of {} frames of {}x{})",
        a.output.display(),
        a.angles,
        a.scans,
        a.size,
        a.size
    );
    Ok(())
}
