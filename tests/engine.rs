//! `espinnet::Engine`, the public Rust API every surface adapts, alone: both engines, the
//! derived maps (refraction, phase), the quality map with one meaning for both, writing
//! into caller-provided arrays, and the option vocabulary.

use espinnet::metrics::Accuracy;
use espinnet::model::residual;
use espinnet::network::ConvSearch;
use espinnet::simulate::{Case, Preset, Sample, simulate};
use espinnet::{Engine, EngineKind, Error, MapsMut, Options};
use ndarray::{Array2, s};

/// A lens (up to ~2 px of displacement, analytic phase) with the presets' geometry.
fn lens_case() -> Case {
    let mut config = Preset::Lens.config(128, 10, 5);
    if let Sample::Lens { apex_radius_um, .. } = &mut config.sample {
        *apex_radius_um = 25.0;
    }
    simulate(&config).unwrap()
}

fn options(engine: EngineKind, case: &Case) -> Options {
    let mut o = Options::default();
    o.engine = engine;
    o.tracking.max_shift = 5;
    o.geometry = Some(case.config.geometry);
    // The network's own maps, which the facade must pass on bit for bit; its guard is
    // tests/guard.rs's.
    o.network.guard = false;
    o
}

fn median(a: &Array2<f32>) -> f32 {
    let mut v: Vec<f32> = a.iter().copied().filter(|v| v.is_finite()).collect();
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

#[test]
fn both_engines_and_the_derived_maps_through_one_api() {
    let case = lens_case();
    let g = case.config.geometry;
    let border = 10; // the tracker's NaN border: max shift 5 + window 1 + 2, and margin
    let inner = s![border..128 - border, border..128 - border];
    // The truth explains the data to the noise level: the scale of a good quality map.
    let truth_quality = median(&residual(
        case.reference.view(),
        case.sample.view(),
        &case.truth.contrasts(),
    ));
    for engine in [EngineKind::Tracking, EngineKind::Network] {
        let e = Engine::new(&options(engine, &case)).unwrap_or_else(|e| panic!("{e}"));
        let clock = std::time::Instant::now();
        let maps = e
            .reconstruct(case.reference.view(), case.sample.view())
            .unwrap();
        // The stages follow one another within the call: each took some time (no guard
        // here), and together no more than the call.
        let st = maps.report.stages;
        let wall_s = clock.elapsed().as_secs_f64();
        assert!(
            st.estimate_s > 0.0 && st.phase_s > 0.0 && st.maps_s > 0.0,
            "{st:?}"
        );
        assert_eq!(st.guard_s, 0.0);
        let total = st.estimate_s + st.guard_s + st.phase_s + st.maps_s;
        assert!(total <= wall_s, "{st:?}: {total} s of a {wall_s} s call");
        // The facade runs the engine it was asked for with the options it was given: its
        // maps are the engine's own, bit for bit (their accuracy is tests/tracking.rs's and
        // tests/network.rs's).
        let o = options(engine, &case);
        let (r, smp) = (case.reference.view(), case.sample.view());
        let direct = match engine {
            EngineKind::Tracking => {
                let t = espinnet::tracking::track(r, smp, &o.tracking).unwrap();
                [t.dx, t.dy, t.transmission, t.darkfield]
            }
            EngineKind::Network => {
                let n = espinnet::network::Network::new(&o.network).unwrap();
                let n = n.reconstruct(r, smp).unwrap();
                [n.dx, n.dy, n.transmission, n.darkfield]
            }
        };
        let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (ours, theirs) in [&maps.dx, &maps.dy, &maps.transmission, &maps.darkfield]
            .into_iter()
            .zip(&direct)
        {
            assert_eq!(bits(ours), bits(theirs), "{engine:?}");
        }
        let mut acc = Accuracy::default();
        acc.add(&maps.contrasts(), &case.truth.contrasts(), border)
            .unwrap();
        let err = acc.errors();
        eprintln!("{engine:?}: {err}");
        // The gross-error ceiling; every interior pixel estimated.
        assert!(err.gross_fraction < 0.005, "{engine:?}: {err}");
        assert_eq!(err.missing, 0, "{engine:?}: the interior is estimated");

        // Refraction is d·p/z exactly.
        let k = (g.effective_pixel_m() / g.distance_m) as f32;
        let rx = maps.refraction_x.as_ref().unwrap();
        for (a, d) in rx.iter().zip(&maps.dx).filter(|(_, d)| d.is_finite()) {
            assert!(
                (a - d * k).abs() <= 1e-6 * k * d.abs().max(1.0),
                "{a} vs {}",
                d * k
            );
        }
        // The phase matches the lens's up to a constant, over the interior. Measured 0.5 %
        // (tracker) and 1.0 % (network) of the range; a unit slip (µm for m, keV for eV,
        // the magnification twice) is off by a factor of 10 or more, far above 3 %.
        let phase = maps.phase.as_ref().unwrap().slice(inner).to_owned();
        let want = case.truth.phase.slice(inner).to_owned();
        let diff = &phase - &want;
        let offset = diff.mean().unwrap();
        let rms = diff.mapv(|v| (v - offset).powi(2)).mean().unwrap().sqrt();
        let range = want.fold(f32::MIN, |a, &b| a.max(b)) - want.fold(f32::MAX, |a, &b| a.min(b));
        eprintln!("{engine:?}: phase range {range:.2} rad, RMS error {rms:.3} rad");
        assert!(
            range > 1.0 && rms < 0.03 * range,
            "{engine:?}: {rms} of {range}"
        );

        // Quality means the same for both engines: near the truth's own residual, which is
        // the noise floor. A fit can dip slightly below it (it absorbs some noise: 0.9×);
        // model error at the lens's aperture edge lifts the median a little (up to 1.5×).
        let q = median(&maps.quality.slice(inner).to_owned());
        eprintln!("{engine:?}: median quality {q:.4}, truth's {truth_quality:.4}");
        assert!(
            q >= 0.9 * truth_quality && q <= 1.5 * truth_quality,
            "{engine:?}: median quality {q} against the truth's {truth_quality}"
        );
    }
}

#[test]
fn into_caller_arrays_only_what_is_asked() {
    let case = lens_case();
    let e = Engine::new(&options(EngineKind::Tracking, &case)).unwrap();
    let (r, smp) = (case.reference.view(), case.sample.view());
    let all = e.reconstruct(r, smp).unwrap();
    let mut dx = Array2::<f32>::from_elem((128, 128), 7.0);
    let mut phase = Array2::<f32>::zeros((128, 128));
    let mut out = MapsMut::default();
    out.dx = Some(dx.view_mut());
    out.phase = Some(phase.view_mut());
    e.reconstruct_into(r, smp, out, espinnet::progress::NONE)
        .unwrap();
    let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&dx), bits(&all.dx));
    assert_eq!(bits(&phase), bits(all.phase.as_ref().unwrap()));

    // A wrong shape is refused before anything is written.
    let mut small = Array2::<f32>::from_elem((64, 128), 7.0);
    let mut out = MapsMut::default();
    out.dy = Some(small.view_mut());
    let err = e
        .reconstruct_into(r, smp, out, espinnet::progress::NONE)
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(small.iter().all(|&v| v == 7.0));

    // Phase without the geometry is an error, not a silent omission.
    let mut o = options(EngineKind::Tracking, &case);
    o.geometry = None;
    let e = Engine::new(&o).unwrap();
    let all = e.reconstruct(r, smp).unwrap();
    assert!(all.phase.is_none() && all.refraction_x.is_none());
    let mut out = MapsMut::default();
    out.phase = Some(phase.view_mut());
    let err = e
        .reconstruct_into(r, smp, out, espinnet::progress::NONE)
        .unwrap_err();
    assert!(err.to_string().contains("geometry"), "{err}");
}

#[test]
fn options_by_name_are_the_typed_options() {
    let mut o = Options::default();
    o.set("engine", "tracking").unwrap();
    o.set("window", "3").unwrap();
    o.set("magnification", "10").unwrap();
    o.set("pixel_size_um", "6.5").unwrap();
    o.set("distance_m", "0.5").unwrap();
    assert!(o.geometry.is_none(), "not until the energy is known");
    let e = Engine::new(&o).err().unwrap().to_string();
    assert!(e.contains("energy_kev"), "{e}");
    o.set("energy_kev", "20").unwrap();
    let g = o.geometry.unwrap();
    assert_eq!(
        (g.energy_ev, g.distance_m, g.magnification),
        (20e3, 0.5, 10.0)
    );
    assert!((g.detector_pixel_m - 6.5e-6).abs() < 1e-18);
    assert_eq!(o.engine, EngineKind::Tracking);
    assert_eq!(o.tracking.window, 3);
    // A failed call changes nothing; unknown keys name the vocabulary.
    let before = format!("{o:?}");
    assert!(o.set("window", "-1").is_err());
    assert!(o.set("magnification", "0").is_err());
    assert_eq!(format!("{o:?}"), before);
    let e = o.set("colour", "blue").unwrap_err().to_string();
    assert!(
        e.contains("unknown option 'colour'") && e.contains("max_shift"),
        "{e}"
    );
    let e = o.set("debug_panic", "1");
    assert_eq!(e.is_ok(), cfg!(feature = "test-hooks"));
    o.set("image_px", "2048x1024").unwrap();
    assert_eq!(o.network.image_px, Some((2048, 1024)));
    for bad in [
        "2048",
        "0x64",
        "64x",
        "x64",
        "-1x64",
        "1048577x1",
        "64x64x64",
        " 64x64",
    ] {
        let e = o.set("image_px", bad).unwrap_err().to_string();
        assert!(
            e.contains("option 'image_px' needs HEIGHTxWIDTH"),
            "{bad}: {e}"
        );
    }
    o.set("image_px", "").unwrap();
    assert_eq!(o.network.image_px, None);
    o.set("conv_search", "heuristic").unwrap();
    assert_eq!(o.network.gpu.conv_search, ConvSearch::Heuristic);
    let e = o.set("conv_search", "fast").unwrap_err().to_string();
    assert!(
        e.contains("conv_search must be exhaustive, heuristic or fixed"),
        "{e}"
    );
    assert_eq!(o.network.gpu.conv_search, ConvSearch::Heuristic);
    // Sizes that would wrap (2⁶³ − 1, 2⁶⁴ − 1) and absurd thread counts are refused.
    for (key, value) in [
        ("window", "9223372036854775807"),
        ("max_shift", "18446744073709551615"),
        ("overlap", "9223372036854775808"),
        ("tile", "4294967296"),
        ("threads", "2147483648"),
        ("threads", "100000"),
        ("gpu_mem_limit_mib", "18446744073709551615"),
        ("device_id", "2147483648"),
    ] {
        let e = o.set(key, value).unwrap_err().to_string();
        assert!(
            e.contains(&format!("option '{key}' needs an integer from 0 to")),
            "{e}"
        );
    }
    let case = lens_case();
    let mut o = options(EngineKind::Tracking, &case);
    o.set("max_shift", "65536").unwrap();
    let e = Engine::new(&o)
        .unwrap()
        .reconstruct(case.reference.view(), case.sample.view());
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
}

#[test]
fn threads_bound_every_step_and_change_no_result() {
    let case = lens_case();
    let (r, smp) = (case.reference.view(), case.sample.view());
    let mut o = options(EngineKind::Tracking, &case);
    let all_cores = Engine::new(&o).unwrap().reconstruct(r, smp).unwrap();
    o.set("threads", "1").unwrap();
    let one = Engine::new(&o).unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |_: f64| {
        seen.lock().unwrap().push(rayon::current_num_threads());
        true
    };
    let maps = one.reconstruct_with(r, smp, &progress).unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(!seen.is_empty() && seen.iter().all(|&n| n == 1), "{seen:?}");
    let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (a, b) in [
        (&maps.dx, &all_cores.dx),
        (&maps.darkfield, &all_cores.darkfield),
        (&maps.quality, &all_cores.quality),
        (
            maps.phase.as_ref().unwrap(),
            all_cores.phase.as_ref().unwrap(),
        ),
    ] {
        assert_eq!(bits(a), bits(b));
    }
}

#[test]
fn inputs_with_nothing_to_measure_are_errors_not_nan_maps() {
    let case = lens_case();
    let (r, smp) = (case.reference.view(), case.sample.view());
    let constant = ndarray::Array3::<f32>::from_elem(r.dim(), 1000.0);
    let zero = ndarray::Array3::<f32>::zeros(r.dim());
    let denormal = ndarray::Array3::<f32>::from_elem(r.dim(), 1e-40);
    for engine in [EngineKind::Tracking, EngineKind::Network] {
        let e = Engine::new(&options(engine, &case)).unwrap();
        for (reference, sample, says) in [
            (constant.view(), smp, "reference stack is constant"),
            (r, zero.view(), "all zero or denormal"),
            (denormal.view(), denormal.view(), "all zero or denormal"),
        ] {
            let err = e.reconstruct(reference, sample).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(_)) && err.to_string().contains(says),
                "{engine}: {err}"
            );
        }
    }
}

/// The signal model is linear in intensity: counts scaled by 1e30 or 1e-30 (a detector
/// in other units) give the same displacements, T and D, and a finite quality map.
#[test]
fn results_do_not_depend_on_the_intensity_scale() {
    let case = lens_case();
    for engine in [EngineKind::Tracking, EngineKind::Network] {
        let e = Engine::new(&options(engine, &case)).unwrap();
        let base = e
            .reconstruct(case.reference.view(), case.sample.view())
            .unwrap();
        for scale in [1e30f32, 1e-30] {
            let (r, s) = (&case.reference * scale, &case.sample * scale);
            let m = e.reconstruct(r.view(), s.view()).unwrap();
            for (name, a, b) in [
                ("dx", &m.dx, &base.dx),
                ("dy", &m.dy, &base.dy),
                ("transmission", &m.transmission, &base.transmission),
                ("darkfield", &m.darkfield, &base.darkfield),
                ("quality", &m.quality, &base.quality),
            ] {
                let worst = a
                    .iter()
                    .zip(b)
                    .filter(|(_, b)| b.is_finite())
                    .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                    .fold(
                        0f32,
                        |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
                    );
                // f32 rounding of the scaled counts: measured up to 3e-6.
                assert!(worst < 1e-4, "{engine:?} x{scale:e} {name}: {worst}");
            }
        }
    }
}

/// A sample stack that holds no trace of the reference's pattern (independent noise, or
/// the sample of another scan) gives no displacement at all: both engines would make one
/// up from noise.
#[test]
fn a_sample_without_the_reference_pattern_is_refused() {
    let case = lens_case();
    let other = simulate(&Preset::SandpaperRandom.config(128, 10, 9)).unwrap();
    let mut seed = 7u64;
    let mut noise = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        1000.0 + 60.0 * ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
    };
    let flat = ndarray::Array3::from_shape_simple_fn(case.reference.dim(), &mut noise);
    let flat2 = ndarray::Array3::from_shape_simple_fn(case.reference.dim(), &mut noise);
    for engine in [EngineKind::Tracking, EngineKind::Network] {
        let e = Engine::new(&options(engine, &case)).unwrap();
        for (what, r, s) in [
            ("noise", flat.view(), flat2.view()),
            ("another scan", case.reference.view(), other.sample.view()),
        ] {
            let err = e.reconstruct(r, s).unwrap_err().to_string();
            assert!(
                err.contains("does not follow the reference stack's pattern"),
                "{engine:?}, {what}: {err}"
            );
        }
    }
}
