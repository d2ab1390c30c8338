//! Simulated cases on disk: the `simulate`, `demo` and `dataset` commands.

use std::path::Path;
use std::time::Duration;

use espinnet::io::preview::{Scale, write_montage, write_png};
use espinnet::simulate::{Case, Config, Preset, dataset, simulate};
use espinnet::stack::scale_scans;
use espinnet::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Axis, stack};
use rayon::prelude::*;
use serde_json::json;

use crate::DatasetArgs;
use crate::output::Staged;

const STACKS: [&str; 2] = ["reference.tif", "sample.tif"];
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
    let truth_files: Vec<String> = TRUTH.iter().map(|t| format!("truth/{t}.tif")).collect();
    let previews: Vec<String> = ["reference", "sample"]
        .iter()
        .chain(&TRUTH)
        .map(|t| format!("preview/{t}.png"))
        .collect();
    let mut files: Vec<&str> = STACKS.to_vec();
    files.extend(truth_files.iter().map(String::as_str));
    files.extend(previews.iter().map(String::as_str));
    files.extend(["preview.png", "meta.json"]);
    let staged = Staged::new(dir, &files, force)?;
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
    write_montage(&staged.path("preview.png")?, &panels, 4)?;

    let c = &case.config;
    let g = &c.geometry;
    let pixel_um = g.effective_pixel_m() * 1e6;
    let meta = json!({
        "espinnet_version": env!("CARGO_PKG_VERSION"),
        "preset": preset,
        "seed": c.seed,
        "height": c.height,
        "width": c.width,
        "scans": c.scans,
        "energy_kev": g.energy_ev / 1e3,
        "distance_m": g.distance_m,
        "pixel_size_um": pixel_um,
        "detector_pixel_um": g.detector_pixel_m * 1e6,
        "magnification": g.magnification,
        "mean_photons": case.mean_photons(),
        "scan_positions_um": case.positions_um.iter().map(|&(y, x)| [y, x]).collect::<Vec<_>>(),
        "scan_positions_px": case.positions_um.iter().map(|&(y, x)| [y / pixel_um, x / pixel_um]).collect::<Vec<_>>(),
        "conventions": "stacks [N, H, W] float32 photons; positions [y, x] (row, column), centred; \
                        dx along columns, dy along rows, px: S(r) = T·(M + D·(R(r − d) − M)); phase rad, zero mean",
        "preview_panels": ["reference frame 0", "sample frame 0", "dx", "dy", "transmission", "darkfield", "phase"],
        "config": c,
    });
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
    let engines = [
        ("network", dir.join("network")),
        ("tracking", dir.join("tracking")),
    ];
    for (engine, out) in &engines {
        crate::reconstruct::run(&crate::reconstruct::ReconstructArgs {
            inputs: crate::inspect::Inputs {
                reference: file("reference.tif"),
                sample: file("sample.tif"),
                dark: None,
                flat: None,
            },
            output: out.clone(),
            engine: engine.to_string(),
            network: crate::reconstruct::NetworkArgs::default(),
            window: 1,
            max_shift: 9,
            no_darkfield: false,
            energy_kev: Some(g.energy_ev / 1e3),
            distance_m: Some(g.distance_m),
            pixel_size_um: Some(g.detector_pixel_m * 1e6),
            magnification: g.magnification,
            integration: espinnet::integrate::Method::FrankotChellappa,
            force,
        })?;
    }
    println!(
        "simulated {} (coded mask, diagonal scan, {} frames of 512x512); accuracy against the truth,",
        dir.display(),
        config.scans,
    );
    // The tracker leaves a border NaN; both engines are scored on the pixels it estimates.
    let border = crate::reconstruct::tracking_border(1, 9);
    println!("over the {0}x{0} interior:", 512 - 2 * border);
    println!(
        "  {:<13} {:>10} {:>10} {:>12} {:>12}",
        "contrast", "network", "tracking", "net >1 px", "trk >1 px"
    );
    let t = &case.truth;
    for (name, truth, tif) in [
        ("dx (px)", &t.dx, "dx.tif"),
        ("dy (px)", &t.dy, "dy.tif"),
        ("transmission", &t.transmission, "transmission.tif"),
        ("darkfield", &t.darkfield, "darkfield.tif"),
    ] {
        let mut cols = Vec::new();
        for (_, out) in &engines {
            let got = espinnet::io::read_image(&out.join(tif).to_string_lossy())?;
            let (h, w) = got.dim();
            let (mut se, mut n, mut gross) = (0.0f64, 0usize, 0usize);
            for y in border..h - border {
                for x in border..w - border {
                    let e = (got[[y, x]] - truth[[y, x]]) as f64;
                    se += e * e;
                    n += 1;
                    gross += usize::from(e.is_nan() || e.abs() > 1.0);
                }
            }
            cols.push(((se / n.max(1) as f64).sqrt(), gross));
        }
        let gross = |g: usize| {
            if name.ends_with("(px)") {
                g.to_string()
            } else {
                "-".into()
            }
        };
        println!(
            "  {name:<13} {:>10.4} {:>10.4} {:>12} {:>12}",
            cols[0].0,
            cols[1].0,
            gross(cols[0].1),
            gross(cols[1].1)
        );
    }
    println!(
        "previews: {}/preview.png (truth), {}/preview.png, {}/preview.png",
        dir.display(),
        engines[0].1.display(),
        engines[1].1.display()
    );
    Ok(())
}

/// Writes `count` random patches into HDF5 shards.
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
    let name = |s: u64| a.output.join(format!("shard-{s:05}.h5"));
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
        let scaled = |get: fn(&Case) -> &ndarray::Array3<f32>| -> Result<ndarray::Array4<f32>> {
            let v: Vec<_> = cases
                .iter()
                .map(|c| scale_scans(get(c).view(), a.nnet, a.scaling))
                .collect::<Result<_>>()?;
            Ok(
                stack(Axis(0), &v.iter().map(|x| x.view()).collect::<Vec<_>>())
                    .expect("equal shapes"),
            )
        };
        let maps = |get: fn(&Case) -> &Array2<f32>| {
            stack(
                Axis(0),
                &cases.iter().map(|c| get(c).view()).collect::<Vec<_>>(),
            )
            .expect("equal shapes")
        };
        let (reference, sample) = (scaled(|c| &c.reference)?, scaled(|c| &c.sample)?);
        let truth = [
            maps(|c| &c.truth.dx),
            maps(|c| &c.truth.dy),
            maps(|c| &c.truth.transmission),
            maps(|c| &c.truth.darkfield),
            maps(|c| &c.truth.phase),
        ];
        let n_scans = ndarray::Array1::from_iter(cases.iter().map(|c| c.config.scans as f32));
        let configs: Vec<&Config> = cases.iter().map(|c| &c.config).collect();
        let mut datasets = vec![
            ("reference", reference.view().into_dyn()),
            ("sample", sample.view().into_dyn()),
        ];
        datasets.extend(
            TRUTH
                .iter()
                .zip(&truth)
                .map(|(n, a)| (*n, a.view().into_dyn())),
        );
        datasets.push(("n_scans", n_scans.view().into_dyn()));
        let meta = json!({ "mix": a.mix, "seed": a.seed, "nnet": a.nnet, "scaling": a.scaling, "first_index": indices[0],
                           "espinnet_version": env!("CARGO_PKG_VERSION") })
        .to_string();
        let configs = serde_json::to_string(&configs).expect("serialisable");
        espinnet::io::write_hdf5(
            &name(s),
            &datasets,
            &[("dataset", &meta), ("configs", &configs)],
        )?;
    }
    bar.finish_and_clear();
    eprintln!(
        "wrote {} patches in {shards} shard(s) to {}",
        a.count,
        a.output.display()
    );
    Ok(())
}
