//! `espinnet bench`: seconds, Mpix/s and peak memory of the simulator, both engines and the
//! phase integrators, all cases in one run so they can be compared as ratios.

use std::time::Instant;

use espinnet::Result;
use espinnet::integrate::{Method, integrate};
use espinnet::network::Network;
use espinnet::simulate::{Preset, simulate};
use espinnet::tracking::{Params, track};
use ndarray::Array2;
use serde_json::json;

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
}

/// Resets the kernel's peak-RSS counter (Linux); the peak is read back from VmHWM.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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
        println!(
            "{:<34} {:>10} {:>10} {:>12}",
            "case", "seconds", "Mpix/s", "peak MiB"
        );
    }
    let report = |case: String, pixels: usize, s: f64| {
        let peak = peak_mib();
        let mpix = pixels as f64 / s / 1e6;
        if a.json {
            println!(
                "{}",
                json!({ "case": case, "seconds": s, "mpix_per_s": mpix, "peak_mib": peak, "threads": threads })
            );
        } else {
            let peak = peak
                .map(|p| format!("{p:.0}"))
                .unwrap_or_else(|| "n/a".into());
            println!("{case:<34} {s:>10.3} {mpix:>10.2} {peak:>12}");
        }
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

fn test_gradients(size: usize) -> (Array2<f32>, Array2<f32>) {
    let c = size as f32 / 2.0;
    let g = |v: f32| (v - c) / size as f32;
    (
        Array2::from_shape_fn((size, size), |(_, x)| g(x as f32)),
        Array2::from_shape_fn((size, size), |(y, _)| g(y as f32)),
    )
}
