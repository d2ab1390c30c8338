//! `espinnet reconstruct`: stacks in, contrasts out.

use std::path::PathBuf;
use std::time::Instant;

use espinnet::integrate::{Method, phase_from_displacement};
use espinnet::io::preview::{Scale, write_montage};
use espinnet::tracking::{Params, track};
use espinnet::{Error, Geometry, Result};
use indicatif::ProgressBar;
use ndarray::Array2;
use serde_json::json;

use crate::inspect::Inputs;
use crate::output::Staged;

#[derive(clap::Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Output directory.
    #[arg(long)]
    pub output: PathBuf,
    /// Engine (the network engine is not built yet).
    #[arg(long, default_value = "tracking", value_parser = ["tracking"])]
    pub engine: String,
    /// Tracking window half-width Nw (px): the window is (2·Nw+1)².
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Largest displacement searched along each axis (px).
    #[arg(long, default_value_t = 8)]
    pub max_shift: usize,
    /// Fit transmission only (no dark-field).
    #[arg(long)]
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

pub fn run(a: &ReconstructArgs) -> Result<()> {
    let geometry = match (a.energy_kev, a.distance_m, a.pixel_size_um) {
        (Some(e), Some(z), Some(p)) => Some(Geometry::new(e * 1e3, z, p * 1e-6, a.magnification)?),
        _ => None,
    };
    let mut files = vec![
        "dx.tif",
        "dy.tif",
        "transmission.tif",
        "darkfield.tif",
        "quality.tif",
        "status.tif",
    ];
    if geometry.is_some() {
        files.extend(["refraction_x.tif", "refraction_y.tif", "phase.tif"]);
    }
    files.extend(["summary.json", "preview.png"]);
    let staged = Staged::new(&a.output, &files, a.force)?;

    let clock = Instant::now();
    let (reference, sample) = a.inputs.read()?;
    let read_s = clock.elapsed().as_secs_f64();

    let params = Params {
        window: a.window,
        max_shift: a.max_shift,
        dark_field: !a.no_darkfield,
        ..Default::default()
    };
    let (n, h, w) = reference.dim();
    let spinner =
        ProgressBar::new_spinner().with_message(format!("tracking {n} frames of {h}x{w}"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let clock = Instant::now();
    let out = track(reference.view(), sample.view(), &params);
    spinner.finish_and_clear();
    let out = out?;
    let track_s = clock.elapsed().as_secs_f64();

    let path = |rel: &str| staged.path(rel).map(|p| p.to_string_lossy().into_owned());
    let status = out.status.mapv(f32::from);
    // Maps derived from the displacement first; then the tracker's own maps move in.
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
        ("quality", out.residual, Scale::Sequential),
    ];
    maps.extend(derived);
    for (name, data, _) in &maps {
        espinnet::io::write_image(&path(&format!("{name}.tif"))?, data)?;
    }
    espinnet::io::write_image(&path("status.tif")?, &status)?;
    let panels: Vec<(&Array2<f32>, Scale)> = maps.iter().map(|(_, d, s)| (d, *s)).collect();
    write_montage(&staged.path("preview.png")?, &panels, 4)?;

    let count =
        |s: espinnet::tracking::Status| out.status.iter().filter(|&&v| v == s as u8).count();
    use espinnet::tracking::Status::*;
    let summary = json!({
        "espinnet_version": env!("CARGO_PKG_VERSION"),
        "engine": a.engine,
        "inputs": { "reference": a.inputs.reference, "sample": a.inputs.sample, "dark": a.inputs.dark, "flat": a.inputs.flat,
                    "scans": n, "height": h, "width": w },
        "parameters": params,
        "geometry": geometry,
        "integration": a.integration,
        "timings_s": { "read": read_s, "track": track_s, "phase": phase_s },
        "pixels": { "converged": count(Converged), "search_edge": count(SearchEdge),
                    "ill_conditioned": count(IllConditioned), "border_nan": count(Border) },
        "preview_panels": maps.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
        "status_codes": { "0": "converged", "1": "minimum at the search edge", "2": "ill-conditioned", "3": "border (NaN)" },
    });
    let p = staged.path("summary.json")?;
    std::fs::write(
        &p,
        serde_json::to_string_pretty(&summary).expect("serialisable"),
    )
    .map_err(|e| Error::Io { path: p, source: e })?;
    staged.commit()?;
    eprintln!(
        "tracked {n} frames of {h}x{w} in {track_s:.2} s; wrote {}",
        a.output.display()
    );
    Ok(())
}
