//! The `espinnet` command: outputs where promised, one-line errors and non-zero exits on bad
//! input, nothing overwritten or half-written.

use std::process::{Command, Output};

use tempfile::tempdir;

fn espinnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_espinnet"))
        .args(args)
        .output()
        .unwrap()
}

/// The presets' geometry, as `reconstruct` takes it.
const GEOMETRY: [&str; 8] = [
    "--energy-kev",
    "20",
    "--distance-m",
    "0.5",
    "--pixel-size-um",
    "6.5",
    "--magnification",
    "10",
];

/// Standard output as JSON lines.
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Simulates a case into `dir/case` (`extra`: further `simulate` arguments) and returns a
/// function that gives the path of one of its files.
fn simulated(dir: &std::path::Path, extra: &[&str]) -> impl Fn(&str) -> String + use<> {
    let case = dir.join("case");
    let mut args = vec!["simulate", "--output", case.to_str().unwrap()];
    args.extend(extra);
    let o = espinnet(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    move |n: &str| case.join(n).to_string_lossy().into_owned()
}

/// A failure prints exactly one line starting with "espinnet: error:" naming `needle`.
fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure");
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "one line, got: {e}");
    assert!(
        e.starts_with("espinnet: error:") && e.contains(needle),
        "{e}"
    );
}

#[test]
fn simulate_writes_a_complete_case() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("case");
    let o = espinnet(&[
        "simulate",
        "--output",
        out.to_str().unwrap(),
        "--size",
        "64",
        "--scans",
        "5",
        "--seed",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "reference.tif",
        "sample.tif",
        "meta.json",
        "preview.png",
        "truth/dx.tif",
        "truth/dy.tif",
        "truth/transmission.tif",
        "truth/darkfield.tif",
        "truth/phase.tif",
        "preview/dx.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let r = espinnet::io::read_stack(out.join("reference.tif").to_str().unwrap()).unwrap();
    assert_eq!(r.dim(), (5, 64, 64));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["seed"], 3);
    assert_eq!(meta["energy_kev"], 20.0);
    // `pixel_size_um` is the detector pixel, as `reconstruct --pixel-size-um` takes it.
    assert_eq!(meta["pixel_size_um"], 6.5);
    assert_eq!(meta["magnification"], 10.0);
    assert!((meta["effective_pixel_um"].as_f64().unwrap() - 0.65).abs() < 1e-12);
    assert_eq!(meta["scan_positions_um"].as_array().unwrap().len(), 5);
    // No staging directory is left beside the output.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // Existing results are not replaced silently...
    let before = std::fs::read(out.join("reference.tif")).unwrap();
    let args = [
        "simulate",
        "--output",
        out.to_str().unwrap(),
        "--size",
        "64",
        "--scans",
        "5",
        "--seed",
        "4",
    ];
    fails_with(&espinnet(&args), "already exists");
    assert_eq!(std::fs::read(out.join("reference.tif")).unwrap(), before);
    // ...but are with --force.
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(espinnet(&forced).status.success());
    assert_ne!(std::fs::read(out.join("reference.tif")).unwrap(), before);
}

/// A stress-suite row, reproduced as a case directory to reconstruct and look at.
#[test]
fn a_stress_case_is_simulated_by_name() {
    let dir = tempdir().unwrap();
    let name = "absorbing 3.0 px, mask random, N 2";
    let at = simulated(dir.path(), &["--stress", name, "--size", "64"]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(at("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["scans"], 2);
    assert_eq!(meta["height"], 64);
    assert_eq!(meta["preset"], format!("stress case {name}"));
    let o = dir.path().join("other");
    fails_with(
        &espinnet(&[
            "simulate",
            "--output",
            o.to_str().unwrap(),
            "--stress",
            "nonsense",
        ]),
        "no stress case",
    );
    assert!(!o.exists(), "a failed run must not create its output");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("x");
    let o = out.to_str().unwrap();
    fails_with(
        &espinnet(&["simulate", "--output", o, "--size", "0"]),
        "2x2",
    );
    fails_with(
        &espinnet(&["simulate", "--output", o, "--scans", "0"]),
        "1 scan",
    );
    fails_with(&espinnet(&["simulate", "--output", o, "--flux=-5"]), "flux");
    assert!(!out.exists(), "a failed run must not create its output");
    let o2 = espinnet(&["simulate", "--output", o, "--preset", "nonsense"]);
    assert!(
        !o2.status.success() && stderr(&o2).contains("unknown preset"),
        "{}",
        stderr(&o2)
    );
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    fails_with(
        &espinnet(&[
            "simulate",
            "--output",
            file.to_str().unwrap(),
            "--size",
            "32",
        ]),
        "not a directory",
    );
}

#[test]
fn dataset_writes_readable_shards() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("ds");
    let o = espinnet(&[
        "dataset",
        "--output",
        out.to_str().unwrap(),
        "--count",
        "5",
        "--shard-size",
        "3",
        "--patch",
        "32",
        "--nnet",
        "8",
        "--seed",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = hdf5_metno::File::open(out.join("shard-00001.h5")).unwrap();
    let r: ndarray::Array4<f32> = f.dataset("reference").unwrap().read().unwrap();
    assert_eq!(r.dim(), (2, 8, 32, 32));
    let dx: ndarray::Array3<f32> = f.dataset("dx").unwrap().read().unwrap();
    assert_eq!(dx.dim(), (2, 32, 32));
    let n: ndarray::Array1<f32> = f.dataset("n_scans").unwrap().read().unwrap();
    assert!(n.iter().all(|&v| (2.0..=20.0).contains(&v)));
    // Patch i is the same whatever the sharding.
    let one = dir.path().join("one");
    let o = espinnet(&[
        "dataset",
        "--output",
        one.to_str().unwrap(),
        "--count",
        "5",
        "--shard-size",
        "5",
        "--patch",
        "32",
        "--nnet",
        "8",
        "--seed",
        "2",
    ]);
    assert!(o.status.success());
    let all: ndarray::Array4<f32> = hdf5_metno::File::open(one.join("shard-00000.h5"))
        .unwrap()
        .dataset("reference")
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(all.slice(ndarray::s![3..5, .., .., ..]), r);
    fails_with(
        &espinnet(&[
            "dataset",
            "--output",
            out.to_str().unwrap(),
            "--count",
            "5",
            "--shard-size",
            "3",
            "--patch",
            "32",
        ]),
        "already exists",
    );
}

#[test]
fn dataset_draws_scan_counts_from_the_range_asked_for() {
    let dir = tempdir().unwrap();
    let out = dir.path().join("ds");
    let args = |range: &str| {
        espinnet(&[
            "dataset",
            "--output",
            out.to_str().unwrap(),
            "--count",
            "12",
            "--patch",
            "32",
            "--mix",
            "paper",
            "--scans",
            range,
        ])
    };
    let o = args("3-5");
    assert!(o.status.success(), "{}", stderr(&o));
    let n: ndarray::Array1<f32> = hdf5_metno::File::open(out.join("shard-00000.h5"))
        .unwrap()
        .dataset("n_scans")
        .unwrap()
        .read()
        .unwrap();
    assert!(n.iter().all(|&v| (3.0..=5.0).contains(&v)), "{n}");
    let o = args("5-3");
    assert!(!o.status.success() && stderr(&o).contains("scan range must be N or MIN-MAX"));
}

#[test]
fn inspect_reads_good_pairs_and_names_bad_ones() {
    let dir = tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let good =
        ndarray::Array3::<f32>::from_shape_fn((3, 8, 8), |(n, y, x)| 100.0 + (n + y * x) as f32);
    espinnet::io::write_stack(&p("r.tif"), good.view()).unwrap();
    espinnet::io::write_stack(&p("s.h5:/entry/data"), good.view()).unwrap();
    let o = espinnet(&[
        "inspect",
        "--reference",
        &p("r.tif"),
        "--sample",
        &format!("{}:/entry/data", p("s.h5")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 scan(s) of 8x8"));

    let inspect = |r: &str, s: &str| espinnet(&["inspect", "--reference", r, "--sample", s]);
    fails_with(&inspect(&p("missing.tif"), &p("r.tif")), "no such file");
    fails_with(
        &inspect(&p("r.tif"), &format!("{}:/entry/nope", p("s.h5"))),
        "no dataset '/entry/nope'",
    );
    espinnet::io::write_stack(
        &p("four.npy"),
        ndarray::Array3::<f32>::ones((4, 8, 8)).view(),
    )
    .unwrap();
    fails_with(&inspect(&p("r.tif"), &p("four.npy")), "shape mismatch");
    let mut nan = good.clone();
    nan[[1, 2, 3]] = f32::NAN;
    espinnet::io::write_stack(&p("nan.tif"), nan.view()).unwrap();
    fails_with(
        &inspect(&p("nan.tif"), &p("r.tif")),
        "reference stack holds 1 non-finite value(s), first at index [1, 2, 3]",
    );
    espinnet::io::write_stack(
        &p("empty.npy"),
        ndarray::Array3::<f32>::zeros((0, 8, 8)).view(),
    )
    .unwrap();
    fails_with(&inspect(&p("empty.npy"), &p("r.tif")), "empty");
    let zero_flat = ndarray::Array2::<f32>::zeros((8, 8));
    espinnet::io::write_image(&p("flat.tif"), &zero_flat).unwrap();
    let o = espinnet(&[
        "inspect",
        "--reference",
        &p("r.tif"),
        "--sample",
        &p("r.tif"),
        "--flat",
        &p("flat.tif"),
    ]);
    fails_with(&o, "flat frame minus dark is <= 0 at 64 pixel(s)");
}

#[test]
fn reconstruct_writes_every_contrast_and_recovers_the_truth() {
    let dir = tempdir().unwrap();
    let f = simulated(
        dir.path(),
        &["--size", "96", "--scans", "10", "--preset", "lens"],
    );
    let rec = dir.path().join("rec");
    let (reference, sample) = (f("reference.tif"), f("sample.tif"));
    let args = [
        &[
            "reconstruct",
            "--reference",
            &reference,
            "--sample",
            &sample,
            "--output",
            rec.to_str().unwrap(),
            "--engine",
            "tracking",
            "--max-shift",
            "4",
        ][..],
        &GEOMETRY[..],
    ]
    .concat();
    let o = espinnet(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    for n in [
        "dx",
        "dy",
        "transmission",
        "darkfield",
        "quality",
        "status",
        "refraction_x",
        "refraction_y",
        "phase",
    ] {
        let a = espinnet::io::read_image(&rec.join(format!("{n}.tif")).to_string_lossy()).unwrap();
        assert_eq!(
            a.dim(),
            (96, 96),
            "{n}: same size as the input, not cropped"
        );
    }
    let dx = espinnet::io::read_image(&rec.join("dx.tif").to_string_lossy()).unwrap();
    let truth = espinnet::io::read_image(&f("truth/dx.tif")).unwrap();
    assert!(dx[[0, 0]].is_nan(), "border pixels are NaN");
    // The lens's linear displacement, recovered in the interior (well inside the aperture).
    for (y, x) in [(48, 30), (48, 66), (40, 48)] {
        assert!(
            (dx[[y, x]] - truth[[y, x]]).abs() < 0.2,
            "dx at {y},{x}: {} vs {}",
            dx[[y, x]],
            truth[[y, x]]
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["engine"], "tracking");
    assert_eq!(summary["tracking"]["parameters"]["max_shift"], 4);
    for stage in ["read", "setup", "engine", "write"] {
        assert!(
            summary["timings_s"][stage].as_f64().unwrap() > 0.0,
            "{stage}"
        );
    }
    // The engine's stages: the tracker's estimate, no guard, the phase (geometry given).
    let stages = &summary["engine_stages_s"];
    let stage = |k: &str| {
        stages[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {stages}"))
    };
    assert!(stage("estimate") > 0.0 && stage("phase") > 0.0, "{stages}");
    assert_eq!(stage("guard"), 0.0);
    let total: f64 = ["estimate", "guard", "phase", "maps"]
        .map(stage)
        .iter()
        .sum();
    assert!(total <= summary["timings_s"]["engine"].as_f64().unwrap());
    assert!(summary["peak_rss_mib"].as_f64().unwrap() > 1.0);
    fails_with(&espinnet(&args), "already exists");
    // Geometry is all or nothing.
    let o = espinnet(&[
        "reconstruct",
        "--reference",
        &f("reference.tif"),
        "--sample",
        &f("sample.tif"),
        "--output",
        dir.path().join("r2").to_str().unwrap(),
        "--energy-kev",
        "20",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("--distance-m"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn reconstruct_with_the_network_by_default_and_clear_errors_for_its_inputs() {
    let dir = tempdir().unwrap();
    let f = simulated(dir.path(), &["--size", "72", "--scans", "6"]);
    let out = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (r, s) = (f("reference.tif"), f("sample.tif"));
    let base = ["reconstruct", "--reference", &r, "--sample", &s];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        espinnet(&a)
    };

    let rec = out("net");
    // The guard is on by default; `--guard` alone says so too.
    let o = with(&["--output", &rec, "--guard"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for n in ["dx", "dy", "transmission", "darkfield", "quality"] {
        let a = espinnet::io::read_image(&format!("{rec}/{n}.tif")).unwrap();
        assert_eq!(
            a.dim(),
            (72, 72),
            "{n}: the input's size (72 is not a multiple of 16)"
        );
    }
    // The network's status map: 0 kept, 4 solved again by the guard, 3 beyond the field of
    // view (a blob at the left edge refracts out of it here); as many 3s and 4s as the
    // summary counts, and every other pixel estimated.
    let status = espinnet::io::read_image(&format!("{rec}/status.tif")).unwrap();
    assert!(status.iter().all(|&v| v == 0.0 || v == 3.0 || v == 4.0));
    for n in ["dx", "dy", "transmission", "darkfield"] {
        let a = espinnet::io::read_image(&format!("{rec}/{n}.tif")).unwrap();
        for (v, s) in a.iter().zip(&status) {
            assert_eq!(v.is_finite(), *s != 3.0, "{n}");
        }
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{rec}/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["engine"], "network");
    assert_eq!(summary["network"]["provider"], "cpu");
    assert_eq!(summary["network"]["model"]["nnet"], 20);
    let beyond = status.iter().filter(|&&v| v == 3.0).count();
    assert!(beyond > 0);
    assert_eq!(summary["network"]["beyond_field_of_view_pixels"], beyond);
    assert_eq!(
        summary["network"]["guard"]["resolved_pixels"]
            .as_u64()
            .unwrap() as usize,
        status.iter().filter(|&&v| v == 4.0).count()
    );
    let unguarded = out("raw");
    let o = with(&["--output", &unguarded, "--guard=false"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let status = espinnet::io::read_image(&format!("{unguarded}/status.tif")).unwrap();
    assert!(status.iter().all(|&v| v == 0.0 || v == 3.0));

    fails_with(
        &with(&["--output", &out("a"), "--model", &out("missing.onnx")]),
        "no such file",
    );
    std::fs::write(out("garbage.onnx"), b"not a model").unwrap();
    fails_with(
        &with(&["--output", &out("b"), "--model", &out("garbage.onnx")]),
        "garbage.onnx",
    );
    fails_with(
        &with(&["--output", &out("c"), "--ort-library", &out("missing.so")]),
        "ONNX Runtime",
    );
    fails_with(
        &with(&["--output", &out("d"), "--ort-library", &out("garbage.onnx")]),
        "ONNX Runtime",
    );
    fails_with(
        &with(&["--output", &out("e"), "--provider", "cuda"]),
        "provider cuda unavailable",
    );
    fails_with(&with(&["--output", &out("f"), "--batch", "0"]), "batch");
    for d in ["a", "b", "c", "d", "e", "f"] {
        assert!(
            !dir.path().join(d).exists(),
            "no output directory {d} after a failure"
        );
    }
}

/// The files in `dir`, sorted (hidden ones included).
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A 96² lens case in `dir/case` and the arguments that reconstruct it into `dir/rec`:
/// with the tracker and the geometry (phase, refraction, status) or with the network alone.
fn forced_runs(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let f = simulated(dir, &["--size", "96", "--scans", "5", "--preset", "lens"]);
    let base: Vec<String> = [
        "reconstruct",
        "--reference",
        &f("reference.tif"),
        "--sample",
        &f("sample.tif"),
        "--output",
        dir.join("rec").to_str().unwrap(),
        "--force",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut tracking = base.clone();
    tracking.extend(
        ["--engine", "tracking", "--max-shift", "4"]
            .into_iter()
            .chain(GEOMETRY)
            .map(String::from),
    );
    let mut network = base;
    network.extend(["--engine", "network"].map(String::from));
    (tracking, network)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn force_replaces_the_whole_earlier_output_and_never_an_input() {
    let dir = tempdir().unwrap();
    let (tracking, network) = forced_runs(dir.path());
    let rec = dir.path().join("rec");
    assert!(espinnet(&strs(&tracking)).status.success());
    let first = listing(&rec);
    for f in [
        "phase.tif",
        "refraction_x.tif",
        "status.tif",
        espinnet::io::MARKER,
    ] {
        assert!(first.iter().any(|n| n == f), "{f} in {first:?}");
    }
    // The network without geometry writes fewer maps: none of the tracker's may remain.
    let o = espinnet(&strs(&network));
    assert!(o.status.success(), "{}", stderr(&o));
    let second = listing(&rec);
    let want = [
        espinnet::io::MARKER,
        "darkfield.tif",
        "dx.tif",
        "dy.tif",
        "preview.png",
        "quality.tif",
        "status.tif",
        "summary.json",
        "transmission.tif",
    ];
    assert_eq!(second, want);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["engine"], "network");
    assert_eq!(
        listing(dir.path()),
        ["case", "rec"],
        "no staging directory left"
    );

    // An input inside the directory to be replaced, or a directory espinnet did not write,
    // is refused before any work.
    let case = dir.path().join("case");
    let f = |n: &str| case.join(n).to_string_lossy().into_owned();
    let into_case = [
        "reconstruct",
        "--reference",
        &f("reference.tif"),
        "--sample",
        &f("sample.tif"),
        "--output",
        case.to_str().unwrap(),
        "--force",
    ];
    fails_with(&espinnet(&into_case), "inside the output directory");
    assert!(case.join("reference.tif").is_file());
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    let mut into_mine = strs(&network);
    into_mine[6] = mine.to_str().unwrap();
    fails_with(&espinnet(&into_mine), "did not write");
    assert_eq!(listing(&mine), ["notes.txt"]);
}

#[test]
fn a_run_killed_at_any_moment_leaves_the_old_set_or_the_new_one() {
    let dir = tempdir().unwrap();
    let (tracking, network) = forced_runs(dir.path());
    let rec = dir.path().join("rec");
    assert!(espinnet(&strs(&tracking)).status.success());
    let old = listing(&rec);
    let clock = std::time::Instant::now();
    assert!(espinnet(&strs(&network)).status.success());
    let whole = clock.elapsed();
    let new = listing(&rec);
    assert_ne!(old, new);
    // Kill (SIGKILL) runs that alternate between the two sets at moments spread over a
    // whole run, the last ones late enough to land in the write and the commit.
    let mut seen = std::collections::BTreeSet::new();
    for k in 0..24u32 {
        let args = if k % 2 == 0 { &tracking } else { &network };
        let mut child = Command::new(env!("CARGO_BIN_EXE_espinnet"))
            .args(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(whole.mul_f64(0.5 + f64::from(k) / 24.0));
        let _ = child.kill();
        let finished = child.wait().unwrap().success();
        let now = listing(&rec);
        assert!(
            now == old || now == new,
            "after a kill at step {k} (finished: {finished}): {now:?}"
        );
        for f in now.iter().filter(|f| f.ends_with(".tif")) {
            espinnet::io::read_image(&rec.join(f).to_string_lossy())
                .unwrap_or_else(|e| panic!("{f} after a kill at step {k}: {e}"));
        }
        seen.insert(now == new);
    }
    eprintln!("sets seen after kills: {seen:?}");
    // A later run cleans up what the killed ones left beside the target.
    assert!(espinnet(&strs(&network)).status.success());
    assert_eq!(listing(dir.path()), ["case", "rec"]);
}

#[test]
fn a_case_metadata_passed_back_gives_the_true_phase() {
    let dir = tempdir().unwrap();
    let case = simulated(
        dir.path(),
        &["--preset", "lens", "--size", "96", "--scans", "10"],
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case("meta.json")).unwrap()).unwrap();
    let flag = |key: &str| meta[key].as_f64().unwrap().to_string();
    let (energy, distance, pixel, magnification) = (
        flag("energy_kev"),
        flag("distance_m"),
        flag("pixel_size_um"),
        flag("magnification"),
    );
    let by_flags = dir.path().join("flags");
    let o = espinnet(&[
        "reconstruct",
        "--reference",
        &case("reference.tif"),
        "--sample",
        &case("sample.tif"),
        "--output",
        by_flags.to_str().unwrap(),
        "--engine",
        "tracking",
        "--energy-kev",
        &energy,
        "--distance-m",
        &distance,
        "--pixel-size-um",
        &pixel,
        "--magnification",
        &magnification,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let by_case = dir.path().join("case-out");
    let case_dir = dir.path().join("case");
    let o = espinnet(&[
        "reconstruct",
        "--case",
        case_dir.to_str().unwrap(),
        "--output",
        by_case.to_str().unwrap(),
        "--engine",
        "tracking",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let read = |p: std::path::PathBuf| espinnet::io::read_image(p.to_str().unwrap()).unwrap();
    let truth = read(case_dir.join("truth/phase.tif"));
    for out in [&by_flags, &by_case] {
        let phase = read(out.join("phase.tif"));
        // Interior (the tracker's border is NaN), both zero-mean there.
        let b = 16;
        let (p, t) = (
            phase.slice(ndarray::s![b..96 - b, b..96 - b]),
            truth.slice(ndarray::s![b..96 - b, b..96 - b]),
        );
        let d = &p - &t;
        let mean = d.mean().unwrap();
        let rms = (d.mapv(|v| (v - mean).powi(2)).mean().unwrap()).sqrt();
        let range =
            t.iter().cloned().fold(f32::MIN, f32::max) - t.iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            rms < 0.05 * range,
            "{}: phase RMS error {rms} rad of {range}",
            out.display()
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["geometry"]["pixel_size_um"], meta["pixel_size_um"]);
        assert_eq!(
            summary["geometry"]["effective_pixel_um"],
            meta["effective_pixel_um"]
        );
        // Statistics to judge a run by: ordered percentiles, shares that add up.
        let stats = &summary["statistics"];
        let dx = |k: &str| stats["dx_px"][k].as_f64().unwrap();
        assert!(dx("min") <= dx("p1") && dx("p1") <= dx("median") && dx("median") <= dx("p99"));
        assert!(dx("p99") <= dx("max") && dx("max") > 0.5, "{stats}");
        assert!(
            dx("finite_share") > 0.5 && dx("finite_share") < 1.0,
            "tracker border is NaN"
        );
        let shares: f64 = ["converged", "search_edge", "ill_conditioned", "border_nan"]
            .iter()
            .map(|k| summary["tracking"]["pixel_shares"][k].as_f64().unwrap())
            .sum();
        assert!((shares - 1.0).abs() < 1e-9, "{stats}");
        assert!(
            summary["tracking"]["pixel_shares"]["converged"]
                .as_f64()
                .unwrap()
                > 0.5,
            "{summary}"
        );
    }
    let o = espinnet(&[
        "reconstruct",
        "--case",
        case_dir.to_str().unwrap(),
        "--reference",
        &case("reference.tif"),
        "--output",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("cannot be used with"),
        "{}",
        stderr(&o)
    );
}

/// Runs `espinnet args` with its address space limited to `mib` MiB (`ulimit -v`).
fn espinnet_within(mib: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        // A hang (ONNX Runtime's, seen once) ends as exit 124 instead of holding the suite.
        .arg(r#"ulimit -v "$0" && exec timeout 120 "$@""#)
        .arg((mib * 1024).to_string())
        .arg(env!("CARGO_BIN_EXE_espinnet"))
        .args(args)
        .output()
        .unwrap()
}

/// Under any address-space limit, from one that leaves no room for the input to one that
/// leaves enough for everything, every step ends with its result or a one-line error and
/// exit 1: never an abort, never a partial output. Out of memory is named as such
/// wherever the library reaches the step (loading ONNX Runtime's own library is dlopen's).
#[test]
fn every_memory_limit_gives_a_result_or_a_one_line_error() {
    let dir = tempdir().unwrap();
    let f = simulated(dir.path(), &["--size", "384", "--scans", "6"]);
    let (r, s) = (f("reference.tif"), f("sample.tif"));
    let mut outcomes = Vec::new();
    for engine in ["tracking", "network"] {
        for mib in (150..=1500).step_by(75) {
            let out = dir.path().join(format!("{engine}-{mib}"));
            let out = out.to_str().unwrap();
            let mut args = vec!["reconstruct", "--reference", &r, "--sample", &s];
            // A fixed thread count: each thread takes address space (its stack and malloc
            // arena), so the default, one per core, would move the limits with the machine.
            args.extend(["--output", out, "--engine", engine, "--threads", "4"]);
            args.extend(GEOMETRY);
            let o = espinnet_within(mib, &args);
            let what = format!("{engine} within {mib} MiB: {:?} {}", o.status, stderr(&o));
            match o.status.code() {
                Some(0) => assert!(
                    std::path::Path::new(out).join("phase.tif").exists(),
                    "{what}"
                ),
                Some(1) => {
                    fails_with(&o, "");
                    let e = stderr(&o);
                    assert!(
                        e.contains("out of memory") || e.contains("ONNX Runtime"),
                        "{what}"
                    );
                    assert!(
                        !std::path::Path::new(out).exists(),
                        "{what}: partial output"
                    );
                }
                _ => panic!("{what}: killed or crashed"),
            }
            outcomes.push((engine, mib, o.status.success()));
        }
    }
    // The sweep spans both outcomes for each engine, so both paths were exercised.
    for engine in ["tracking", "network"] {
        let ok: Vec<bool> = outcomes
            .iter()
            .filter(|o| o.0 == engine)
            .map(|o| o.2)
            .collect();
        assert!(
            ok.contains(&true) && ok.contains(&false),
            "{engine}: {outcomes:?}"
        );
    }
    // The simulator too, at a size that needs several GiB.
    let out = dir.path().join("big");
    let o = espinnet_within(
        600,
        &[
            "simulate",
            "--output",
            out.to_str().unwrap(),
            "--size",
            "8192",
            "--scans",
            "10",
        ],
    );
    fails_with(&o, "out of memory: simulating 10x8192x8192");
    assert!(!out.exists());
}

#[test]
fn a_memory_limit_and_absurd_sizes_are_one_line_errors() {
    let dir = tempdir().unwrap();
    let f = simulated(dir.path(), &["--size", "128", "--scans", "5"]);
    let (r, s) = (f("reference.tif"), f("sample.tif"));
    let out = dir.path().join("o");
    let out = out.to_str().unwrap();
    let with = |extra: [&str; 2]| {
        let mut args = vec!["reconstruct", "--reference", &r, "--sample", &s];
        args.extend(["--output", out, "--engine", "tracking"]);
        args.extend(extra);
        espinnet(&args)
    };
    fails_with(
        &with(["--memory-limit-mib", "2"]),
        "over the memory limit of 2 MiB",
    );
    for (flag, value, option) in [
        ("--max-shift", "18446744073709551615", "max_shift"),
        ("--window", "9223372036854775807", "window"),
        ("--threads", "4096", "threads"),
    ] {
        fails_with(&with([flag, value]), &format!("option '{option}'"));
    }
    assert!(!std::path::Path::new(out).exists());
}

/// The bench times whole `reconstruct` processes of both engines beside their engines, with
/// each process's own peak memory and stages.
#[test]
fn validate_scores_the_stress_suite_for_every_engine() {
    let o = espinnet(&[
        "validate",
        "--mix",
        "stress",
        "--size",
        "64",
        "--windows",
        "1",
        "--max-shift",
        "6",
        "--only",
        "spheres",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 7, "one row per set-up");
    for l in &lines {
        assert!(l["case"].as_str().unwrap().starts_with("spheres"));
        for errors in [
            &l["network"],
            &l["guarded"]["errors"],
            &l["tracking"]["errors"],
        ] {
            let phase = errors["phase_rms_waves"].as_f64().unwrap();
            let inlier = errors["inlier_rmse_px"].as_f64().unwrap();
            assert!(phase.is_finite() && inlier <= errors["rmse_px"].as_f64().unwrap());
        }
        let share = l["guarded"]["resolved_share"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&share));
        // The target as the row's own figures say (N = 2, 3, 5: at or below; else 1.2×).
        let n: f64 = l["case"]
            .as_str()
            .unwrap()
            .rsplit("N ")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let rmse = |e: &serde_json::Value| e["inlier_rmse_px"].as_f64().unwrap();
        let bound = if n <= 5.0 { 1.0 } else { 1.2 } * rmse(&l["tracking"]["errors"]);
        assert_eq!(
            l["rmse_target_met"]["guarded"].as_bool().unwrap(),
            rmse(&l["guarded"]["errors"]) <= bound
        );
    }
}

#[test]
fn bench_reports_whole_runs_with_their_stages() {
    let o = espinnet(&[
        "bench",
        "--sizes",
        "64",
        "--scans",
        "5",
        "--windows",
        "1",
        "--repeat",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    for engine in ["tracking", "network"] {
        let case = format!("process {engine} 64²×5");
        let row = lines
            .iter()
            .find(|l| l["case"] == case.as_str())
            .expect(&case);
        let seconds = row["seconds"].as_f64().unwrap();
        let stages: f64 = ["read", "setup", "engine", "write"]
            .iter()
            .map(|k| row["stages_s"][k].as_f64().unwrap())
            .sum();
        assert!(
            stages > 0.0 && stages < seconds,
            "{case}: stages {stages} s of {seconds} s"
        );
        assert!(row["peak_mib"].as_f64().unwrap() > 1.0, "{case}");
    }
}
