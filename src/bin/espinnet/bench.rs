//! `espinnet bench`: seconds, Mpix/s and peak memory of the simulator, both engines and the
//! phase integrators, and of whole `espinnet reconstruct` processes (what a user waits for:
//! start, reading, engine, phase, writing), all cases in one run so they can be compared as
//! ratios.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use espinnet::integrate::{Method, integrate};
use espinnet::network::Network;
use espinnet::simulate::{Preset, simulate};
use espinnet::tracking::{Params, track};
use espinnet::{Error, Result};
use ndarray::Array2;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Image sizes (px, square).
    #[arg(long, value_delimiter = ',', default_values_t = [512, 2048])]
    sizes: Vec<usize>,
    /// Scan counts for the simulator.
    #[arg(long, value_delimiter = ',', default_values_t = [20])]
    scans: Vec<usize>,
    /// Tracker window half-widths Nw (tracked at every scan count, max shift 8 px).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3])]
    windows: Vec<usize>,
    /// Engines to time: tracking, network.
    #[arg(long, value_delimiter = ',', default_values_t = ["tracking".to_string(), "network".to_string()])]
    engines: Vec<String>,
    /// Network: pairs per batch (the seconds reported are per pair).
    #[arg(long, value_delimiter = ',', default_values_t = [1])]
    batches: Vec<usize>,
    #[command(flatten)]
    network: crate::reconstruct::NetworkArgs,
    /// Runs per case; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Leave out the whole-process runs (they write a case of TIFF stacks to a temporary
    /// directory first).
    #[arg(long)]
    no_whole_run: bool,
}

/// Resets the kernel's peak-RSS counter (Linux); the peak is read back from VmHWM.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median_seconds(repeat: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut t = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    let engine = |e: &str| a.engines.iter().any(|x| x == e);
    let net = if engine("network") {
        Some(Network::new(&a.network.options())?)
    } else {
        None
    };
    if !a.json {
        println!(
            "espinnet {} bench, {threads} threads, median of {}",
            env!("CARGO_PKG_VERSION"),
            a.repeat
        );
        println!("{}", cpu());
        println!(
            "{:<34} {:>10} {:>10} {:>12}",
            "case", "seconds", "Mpix/s", "peak MiB"
        );
    }
    // `stages`: a whole run's own timings (read, engine, write; seconds), the engine's
    // stages under `engine_stages`.
    let report_with = |case: String, pixels: usize, s: f64, peak: Option<f64>, stages: &Value| {
        let mpix = pixels as f64 / s / 1e6;
        if a.json {
            println!(
                "{}",
                json!({ "case": case, "seconds": s, "mpix_per_s": mpix, "peak_mib": peak, "threads": threads, "stages_s": stages })
            );
        } else {
            let peak = peak
                .map(|p| format!("{p:.0}"))
                .unwrap_or_else(|| "n/a".into());
            println!("{case:<34} {s:>10.3} {mpix:>10.2} {peak:>12}");
            if let Some(stages) = stages.as_object() {
                let list: Vec<String> = stages
                    .iter()
                    .filter_map(|(k, v)| {
                        let parts = match k.as_str() {
                            "engine" => engine_parts(&stages["engine_stages"]),
                            _ => String::new(),
                        };
                        Some(format!("{k} {:.2} s{parts}", v.as_f64()?))
                    })
                    .collect();
                println!("  of which {}", list.join(", "));
            }
        }
    };
    let report = |case: String, pixels: usize, s: f64| {
        report_with(case, pixels, s, crate::peak_rss_mib(), &Value::Null)
    };
    for &size in &a.sizes {
        for &n in &a.scans {
            reset_peak();
            let config = Preset::MaskDiagonal.config(size, n, 1);
            let s = median_seconds(a.repeat, || simulate(&config).map(drop))?;
            // Pixels produced: two stacks of N frames.
            report(
                format!("simulate mask-diagonal {size}²×{n}"),
                2 * n * size * size,
                s,
            );
            let case = simulate(&config)?;
            if let Some(net) = &net {
                for &b in &a.batches {
                    let pairs = vec![(case.reference.view(), case.sample.view()); b.max(1)];
                    reset_peak();
                    let s = median_seconds(a.repeat, || net.reconstruct_many(&pairs).map(drop))?;
                    let name = format!("network {size}²×{n} batch {b} {}", net.provider());
                    report(name, size * size, s / b.max(1) as f64);
                }
            }
            if !a.no_whole_run {
                let dir =
                    std::env::temp_dir().join(format!("espinnet-bench-{}", std::process::id()));
                let result = whole_runs(a, &dir, size, n, &|e, s, peak, stages| {
                    report_with(
                        format!("process {e} {size}²×{n}"),
                        size * size,
                        s,
                        peak,
                        stages,
                    )
                });
                let _ = std::fs::remove_dir_all(&dir);
                result?;
            }
            for &nw in a.windows.iter().filter(|_| engine("tracking")) {
                let p = {
                    let mut o = Params::default();
                    o.window = nw;
                    o.max_shift = 8;
                    o
                };
                reset_peak();
                let s = median_seconds(a.repeat, || {
                    track(case.reference.view(), case.sample.view(), &p).map(drop)
                })?;
                report(format!("track {size}²×{n} Nw={nw} ±8"), size * size, s);
            }
        }
        let (gx, gy) = test_gradients(size);
        for (name, m) in [
            ("frankot-chellappa", Method::FrankotChellappa),
            ("least-squares", Method::LeastSquares),
        ] {
            reset_peak();
            let s = median_seconds(a.repeat, || integrate(gx.view(), gy.view(), m).map(drop))?;
            report(format!("integrate {name} {size}²"), size * size, s);
        }
    }
    Ok(())
}

/// The engine's own stages (`summary.json`'s `engine_stages_s`) as " (estimate 3.81, …)";
/// empty without them.
fn engine_parts(parts: &Value) -> String {
    let Some(parts) = parts.as_object() else {
        return String::new();
    };
    let list: Vec<String> = (parts.iter())
        .filter_map(|(k, v)| Some(format!("{k} {:.2}", v.as_f64()?)))
        .collect();
    format!(" ({})", list.join(", "))
}

/// Reports one whole run: engine, median seconds, peak RSS (MiB) and stages.
type Report<'a> = dyn Fn(&str, f64, Option<f64>, &Value) + 'a;

/// Times `espinnet reconstruct` processes of each engine on a simulated case (TIFF stacks,
/// its geometry; every output written): the median seconds, and the last run's peak RSS
/// and stages as its `summary.json` gives them.
fn whole_runs(a: &BenchArgs, dir: &Path, size: usize, n: usize, report: &Report<'_>) -> Result<()> {
    let case = dir.join("case");
    let (size_s, n_s) = (size.to_string(), n.to_string());
    let case_s = case.to_string_lossy();
    child(
        dir,
        &[
            "simulate", "--force", "--output", &case_s, "--size", &size_s, "--scans", &n_s,
        ],
    )?;
    for e in &a.engines {
        let out = dir.join(format!("out-{e}"));
        let mut args: Vec<String> = ["reconstruct", "--force", "--engine", e, "--case", &case_s]
            .map(String::from)
            .to_vec();
        args.extend(["--output".into(), out.to_string_lossy().into_owned()]);
        args.extend(a.network.to_flags());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let s = median_seconds(a.repeat, || child(dir, &args))?;
        let summary = out.join("summary.json");
        let summary: Value = std::fs::read_to_string(&summary)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut stages = summary["timings_s"].clone();
        if let Some(st) = stages.as_object_mut() {
            st.insert("engine_stages".into(), summary["engine_stages_s"].clone());
        }
        report(e, s, summary["peak_rss_mib"].as_f64(), &stages);
    }
    Ok(())
}

/// Runs `espinnet args` to its end.
fn child(dir: &Path, args: &[&str]) -> Result<()> {
    let log = dir.join("child.log");
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.into(),
        source,
    })?;
    let stderr = std::fs::File::create(&log).map_err(|source| Error::Io {
        path: log.clone(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(|e| Error::Runtime(e.to_string()))?;
    let status = Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .map_err(|e| Error::Runtime(format!("cannot start espinnet: {e}")))?;
    if !status.success() {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(Error::Runtime(format!(
            "espinnet {} failed: {}",
            args.join(" "),
            said.trim()
        )));
    }
    Ok(())
}

/// The CPU's model and the vector extensions the engines can use (Linux).
fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    format!("CPU: {model} ({} cores; {})", num_cores(), have.join(" "))
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn test_gradients(size: usize) -> (Array2<f32>, Array2<f32>) {
    let c = size as f32 / 2.0;
    let g = |v: f32| (v - c) / size as f32;
    (
        Array2::from_shape_fn((size, size), |(_, x)| g(x as f32)),
        Array2::from_shape_fn((size, size), |(y, _)| g(y as f32)),
    )
}
