//! Simulated cases on disk: the `simulate`, `demo` and `dataset` commands.

use std::path::Path;
use std::time::Duration;

use espinnet::io::OutputDir;
use espinnet::io::preview::{Panel, Scale, write_montage, write_png};
use espinnet::metrics::Accuracy;
use espinnet::model::Contrasts;
use espinnet::simulate::dataset::{self, ShardFile, ShardFormat};
use espinnet::simulate::{Case, Config, Preset, simulate};
use espinnet::{EngineKind, Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Axis};
use rayon::prelude::*;
use serde_json::json;

use crate::DatasetArgs;

const TRUTH: [&str; 5] = ["dx", "dy", "transmission", "darkfield", "phase"];

pub fn simulate_with_progress(config: &Config) -> Result<Case> {
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "simulating {} frames of {}x{}",
        config.scans, config.height, config.width
    ));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let case = simulate(config);
    spinner.finish_and_clear();
    case
}

/// Writes `DIR/{reference,sample}.tif`, `DIR/truth/*.tif`, `DIR/meta.json` and previews.
pub fn write(case: &Case, preset: &str, dir: &Path, force: bool) -> Result<()> {
    let previews: Vec<String> = ["reference", "sample"]
        .iter()
        .chain(&TRUTH)
        .map(|t| format!("preview/{t}.png"))
        .collect();
    let staged = OutputDir::create(dir, force, &[])?;
    let path = |rel: &str| staged.path(rel).map(|p| p.to_string_lossy().into_owned());

    espinnet::io::write_stack(&path("reference.tif")?, case.reference.view())?;
    espinnet::io::write_stack(&path("sample.tif")?, case.sample.view())?;
    let t = &case.truth;
    let maps: [(&Array2<f32>, Scale); 5] = [
        (&t.dx, Scale::Diverging),
        (&t.dy, Scale::Diverging),
        (&t.transmission, Scale::Sequential),
        (&t.darkfield, Scale::Sequential),
        (&t.phase, Scale::Sequential),
    ];
    let (r0, s0) = (
        case.reference.index_axis(Axis(0), 0).to_owned(),
        case.sample.index_axis(Axis(0), 0).to_owned(),
    );
    let mut panels = vec![(&r0, Scale::Grey), (&s0, Scale::Grey)];
    panels.extend(maps);
    for (name, (data, _)) in TRUTH.iter().zip(&maps) {
        espinnet::io::write_image(&path(&format!("truth/{name}.tif"))?, data)?;
    }
    for (rel, (data, scale)) in previews.iter().zip(&panels) {
        write_png(&staged.path(rel)?, data, *scale)?;
    }
    let titles = [
        "reference, frame 0",
        "sample, frame 0",
        "dx (px)",
        "dy (px)",
        "transmission",
        "darkfield",
        "phase (rad)",
    ];
    let labelled: Vec<Panel> = panels
        .iter()
        .zip(titles)
        .map(|(&(data, scale), title)| Panel {
            data,
            scale,
            title: title.into(),
        })
        .collect();
    let caption = format!(
        "simulated {preset}: N = {}, {}x{} px; truth",
        case.config.scans, case.config.height, case.config.width
    );
    let pixel_um = case.config.geometry.effective_pixel_m() * 1e6;
    write_montage(
        &staged.path("preview.png")?,
        &caption,
        &labelled,
        4,
        Some(pixel_um),
    )?;

    let c = &case.config;
    let g = &c.geometry;
    let pixel_um = g.effective_pixel_m() * 1e6; // positions are at the sample plane
    let mut meta = json!({
        "espinnet_version": env!("CARGO_PKG_VERSION"),
        "preset": preset,
        "seed": c.seed,
        "height": c.height,
        "width": c.width,
        "scans": c.scans,
        "mean_photons": case.mean_photons(),
        "scan_positions_um": case.positions_um.iter().map(|&(y, x)| [y, x]).collect::<Vec<_>>(),
        "scan_positions_px": case.positions_um.iter().map(|&(y, x)| [y / pixel_um, x / pixel_um]).collect::<Vec<_>>(),
        "conventions": "stacks [N, H, W] float32 photons; positions [y, x] (row, column), centred; \
                        dx along columns, dy along rows, px: S(r) = T·(M + D·(R(r − d) − M)); phase rad, zero mean",
        "preview_panels": ["reference frame 0", "sample frame 0", "dx", "dy", "transmission", "darkfield", "phase"],
        "config": c,
    });
    // The geometry under the names `reconstruct` takes (`--case DIR` reads them back).
    if let (Some(m), serde_json::Value::Object(geometry)) =
        (meta.as_object_mut(), crate::reconstruct::geometry_json(g))
    {
        m.extend(geometry);
    }
    let text = serde_json::to_string_pretty(&meta).expect("serialisable");
    let meta_path = staged.path("meta.json")?;
    std::fs::write(&meta_path, text).map_err(|e| Error::Io {
        path: meta_path,
        source: e,
    })?;
    staged.commit()
}

/// The README's main job: simulate the paper's set-up, reconstruct it with the tracker and
/// report the accuracy against the truth.
pub fn demo(dir: &Path, force: bool) -> Result<()> {
    let config = Preset::MaskDiagonal.config(512, 20, 1);
    let case = simulate_with_progress(&config)?;
    write(&case, Preset::MaskDiagonal.name(), dir, force)?;
    let g = &config.geometry;
    let file = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let engines = [EngineKind::Network, EngineKind::Tracking];
    let out = |e: EngineKind| dir.join(e.name());
    let mut args = Vec::new();
    for engine in engines {
        let a = crate::reconstruct::ReconstructArgs {
            inputs: crate::inspect::Inputs {
                reference: file("reference.tif"),
                sample: file("sample.tif"),
                case: None,
                dark: None,
                flat: None,
            },
            output: out(engine),
            settings: crate::reconstruct::EngineArgs {
                engine,
                network: crate::reconstruct::NetworkArgs::default(),
                window: 1,
                max_shift: 9,
                no_darkfield: false,
                energy_kev: Some(g.energy_ev / 1e3),
                distance_m: Some(g.distance_m),
                pixel_size_um: Some(g.detector_pixel_m * 1e6),
                magnification: g.magnification,
                memory_limit_mib: 0,
                integration: espinnet::integrate::Method::FrankotChellappa,
            },
            force,
        };
        crate::reconstruct::run(&a)?;
        args.push(a);
    }
    println!(
        "simulated {} (coded mask, diagonal scan, {} frames of 512x512); accuracy against the truth,",
        dir.display(),
        config.scans,
    );
    // The tracker leaves a border NaN; both engines are scored on the pixels it estimates.
    let border = args[1].settings.options()?.tracking.border();
    println!(
        "over the {0}x{0} interior (espinnet::metrics: RMSE, and the share of pixels over 1 px off):",
        512 - 2 * border
    );
    println!(
        "  {:<9} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "engine", "d (px)", "> 1 px", "T", "D", "missing"
    );
    let truth = case.truth.contrasts();
    for engine in engines {
        let read = |n: &str| espinnet::io::read_image(&out(engine).join(n).to_string_lossy());
        let (dx, dy, t, d) = (
            read("dx.tif")?,
            read("dy.tif")?,
            read("transmission.tif")?,
            read("darkfield.tif")?,
        );
        let mut acc = Accuracy::default();
        acc.add(&Contrasts::new(&dx, &dy, &t, &d), &truth, border)?;
        let e = acc.errors();
        println!(
            "  {:<9} {:>10.4} {:>9.3}% {:>10.4} {:>10.4} {:>10}",
            engine.name(),
            e.rmse_px,
            100.0 * e.gross_fraction,
            e.rmse_transmission,
            e.rmse_darkfield,
            e.missing
        );
    }
    println!(
        "previews: {}/preview.png (truth), {}/preview.png, {}/preview.png",
        dir.display(),
        out(engines[0]).display(),
        out(engines[1]).display()
    );
    Ok(())
}

/// Writes `count` random patches into shards (HDF5 or `.npz`).
pub fn dataset(a: &DatasetArgs) -> Result<()> {
    if a.count == 0 || a.shard_size == 0 || a.nnet == 0 || a.patch < 16 {
        return Err(Error::InvalidArgument(
            "need --count, --shard-size, --nnet >= 1 and --patch >= 16".into(),
        ));
    }
    std::fs::create_dir_all(&a.output).map_err(|e| Error::Io {
        path: a.output.clone(),
        source: e,
    })?;
    let shards = a.count.div_ceil(a.shard_size);
    let extension = a.format.unwrap_or(ShardFile::DEFAULT).extension();
    let name = |s: u64| a.output.join(format!("shard-{s:05}.{extension}"));
    if !a.force {
        (0..shards).try_for_each(|s| espinnet::io::refuse_existing(&name(s)))?;
    }
    let bar = ProgressBar::new(a.count).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} patches, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    for s in 0..shards {
        let indices: Vec<u64> = (s * a.shard_size..((s + 1) * a.shard_size).min(a.count)).collect();
        let cases: Vec<Case> = indices
            .par_iter()
            .map(|&i| {
                let mut config = dataset::config(a.mix, a.patch, a.seed, i);
                if let Some(range) = a.scans {
                    config.scans = range.draw(a.seed, i);
                }
                let case = simulate(&config);
                bar.inc(1);
                case
            })
            .collect::<Result<_>>()?;
        let about = json!({ "mix": a.mix, "seed": a.seed, "nnet": a.nnet, "scaling": a.scaling,
                            "first_index": indices[0], "espinnet_version": env!("CARGO_PKG_VERSION") });
        let format = ShardFormat {
            nnet: a.nnet,
            scaling: a.scaling,
        };
        dataset::write_shard(&name(s), &cases, format, &about)?;
    }
    bar.finish_and_clear();
    eprintln!(
        "wrote {} patches in {shards} shard(s) to {}",
        a.count,
        a.output.display()
    );
    Ok(())
}
