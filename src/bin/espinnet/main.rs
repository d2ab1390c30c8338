//! `espinnet`: the command-line tool. Thin: parses arguments, shows progress, calls the
//! library, and turns any error into one line on stderr and a non-zero exit.

mod bench;
mod case;
mod inspect;
mod reconstruct;
mod series;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use espinnet::simulate::Preset;
use espinnet::simulate::dataset::{Mix, ScanRange, ShardFile};

#[derive(Parser)]
#[command(
    name = "espinnet",
    version,
    about = "X-ray multi-contrast imaging from scanned modulated patterns"
)]
#[command(after_help = "Logs: set RUST_LOG=info (or debug) to see what the library does.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a case: reference and sample stacks with ground truth and previews.
    Simulate(SimulateArgs),
    /// Recover dx, dy, T, D (and refraction and phase, given the geometry) from a pair of stacks.
    Reconstruct(Box<reconstruct::ReconstructArgs>),
    /// The main job on an embedded default: simulate a case and write its previews.
    Demo {
        /// Output directory.
        #[arg(long, default_value = "out/demo")]
        output: PathBuf,
        /// Replace an earlier demo directory (all of it).
        #[arg(long)]
        force: bool,
    },
    /// Write a training dataset: HDF5 shards of random simulated patches.
    Dataset(DatasetArgs),
    /// Read and check a reference/sample pair (and dark/flat), and summarise it.
    Inspect(inspect::Inputs),
    /// Benchmark the simulator, the tracker and the phase integrators: seconds, Mpix/s, peak memory.
    Bench(bench::BenchArgs),
    /// Both engines against simulated truth on a fixed case set (the model card's table).
    Validate(validate::ValidateArgs),
    /// Reconstruct every projection of a CT scan into one NeXus file; resumable.
    Series(Box<series::SeriesArgs>),
    /// Simulate a CT scan of a phantom (DXchange file) with its true phase and δ volume.
    SimulateCt(series::SimulateCtArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Output directory: made, or replaced whole with --force.
    #[arg(long)]
    output: PathBuf,
    /// Set-up: mask-diagonal, sandpaper-random, grating-grid or lens.
    #[arg(long, default_value = "mask-diagonal")]
    preset: Preset,
    /// Image height and width (px).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Number of scan positions N.
    #[arg(long, default_value_t = 20)]
    scans: usize,
    /// Random seed: the same seed gives the same case [default: 1; with --stress, 2026,
    /// the seed of `espinnet validate`'s table].
    #[arg(long)]
    seed: Option<u64>,
    /// Mean photons per pixel (Poisson noise); 0 for noise-free expected counts.
    #[arg(long)]
    flux: Option<f64>,
    /// A case of the stress suite instead of a preset, named as `espinnet validate --mix
    /// stress` prints it (e.g. "lens 7.0 px, mask diagonal, N 20"); --size applies, --preset
    /// and --scans do not.
    #[arg(long, conflicts_with_all = ["preset", "scans"])]
    stress: Option<String>,
    /// Replace an earlier output directory (all of it).
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct DatasetArgs {
    /// Output directory for shard-NNNNN.h5 (or .npz) files.
    #[arg(long)]
    output: PathBuf,
    /// Shard file format: hdf5, or npz (NumPy's archive, for builds without HDF5). Default:
    /// hdf5 where this build has it.
    #[arg(long)]
    format: Option<ShardFile>,
    /// Number of patches.
    #[arg(long)]
    count: u64,
    /// Patch height and width (px).
    #[arg(long, default_value_t = 128)]
    patch: usize,
    /// Patches per shard file.
    #[arg(long, default_value_t = 256)]
    shard_size: u64,
    /// Distribution: paper, broad or stress.
    #[arg(long, default_value = "broad")]
    mix: Mix,
    /// Scan counts drawn uniformly per patch, N or MIN-MAX (default: the mix's own).
    #[arg(long)]
    scans: Option<ScanRange>,
    /// Scan count every patch is brought to (the network's Nnet).
    #[arg(long, default_value_t = 20)]
    nnet: usize,
    /// Scan-count scaling for N < nnet: nearest or linear.
    #[arg(long, default_value = "nearest")]
    scaling: espinnet::ScanScaling,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replace existing shards.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    // Before any thread starts (see its doc).
    espinnet::network::disable_telemetry();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(a) => simulate(a),
        Command::Demo { output, force } => case::demo(&output, force),
        Command::Dataset(a) => case::dataset(&a),
        Command::Reconstruct(mut a) => a.apply_case().and_then(|()| reconstruct::run(&a)),
        Command::Inspect(mut a) => a.apply_case().and_then(|_| inspect::run(&a)),
        Command::Bench(a) => bench::run(&a),
        Command::Validate(a) => validate::run(&a),
        Command::Series(a) => series::run(*a),
        Command::SimulateCt(a) => series::simulate_ct(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let hint = match &e {
                espinnet::Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    " (--force replaces an earlier output)"
                }
                _ => "",
            };
            eprintln!("espinnet: error: {e}{hint}");
            ExitCode::FAILURE
        }
    }
}

/// The ONNX Runtime that `scripts/setup.sh` installed beside this tool's sources, when no
/// other is named (option, `ESPINNET_ORT_PATH`, `ORT_DYLIB_PATH`, `VIRTUAL_ENV`): what makes
/// `make demo` work with nothing set. The library itself knows no such path.
pub fn setup_ort_library() -> Option<PathBuf> {
    let named = espinnet::network::PATH_VARIABLES
        .iter()
        .chain(&["VIRTUAL_ENV"])
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv");
    (!named)
        .then(|| espinnet::network::wheel_library(&venv))
        .flatten()
}

fn simulate(a: SimulateArgs) -> espinnet::Result<()> {
    let (mut config, name) = match &a.stress {
        Some(name) => {
            let seed = a.seed.unwrap_or(validate::SEED);
            let found = espinnet::simulate::stress::named(a.size, seed, name).ok_or_else(|| {
                espinnet::Error::InvalidArgument(format!(
                    "no stress case is called {name:?}; `espinnet validate --mix stress` lists them"
                ))
            })?;
            (found.config, format!("stress case {name}"))
        }
        None => (
            a.preset.config(a.size, a.scans, a.seed.unwrap_or(1)),
            a.preset.name().to_string(),
        ),
    };
    match a.flux {
        Some(0.0) => config.poisson_noise = false,
        Some(f) => config.flux_photons = f,
        None => {}
    }
    let case = case::simulate_with_progress(&config)?;
    case::write(&case, &name, &a.output, a.force)?;
    eprintln!(
        "wrote {} ({} frames of {}x{})",
        a.output.display(),
        config.scans,
        a.size,
        a.size
    );
    Ok(())
}

/// The process's peak resident memory so far (MiB; Linux, else null).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
