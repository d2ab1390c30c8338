//! The network engine's guard: pixels the signal model rejects are solved again by the
//! tracker. On a lens (a smooth field of several px, which the paper's training data lacks)
//! it must catch the network's gross errors; on the paper's own cases it must not make the
//! estimate worse. Needs ONNX Runtime, as `tests/network.rs`.

use espinnet::metrics::{Accuracy, Errors};
use espinnet::simulate::dataset::{self, Mix};
use espinnet::simulate::{Case, simulate, stress};
use espinnet::tracking::Status;
use espinnet::{Engine, Maps, Options};

/// `espinnet validate`'s scoring border (max shift 9 + window 3 + 2).
const BORDER: usize = 14;

fn engine(guard: bool) -> Engine {
    let mut o = Options::default();
    o.set("guard", if guard { "true" } else { "false" })
        .unwrap();
    Engine::new(&o).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(maps: &Maps, case: &Case) -> Errors {
    let mut acc = Accuracy::default();
    acc.add(&maps.contrasts(), &case.truth.contrasts(), BORDER)
        .unwrap();
    acc.errors()
}

fn stress_case(name: &str) -> Case {
    stress::case(256, 2026, name)
        .unwrap_or_else(|| panic!("no stress case '{name}'"))
        .unwrap()
}

/// The guarded network on stress cases `names`: at most `bound` of the pixels gross.
fn at_most_gross(names: &[&str], bound: f64) {
    let guarded = engine(true);
    for name in names {
        let case = stress_case(name);
        let maps = guarded
            .reconstruct(case.reference.view(), case.sample.view())
            .unwrap();
        let e = errors(&maps, &case);
        eprintln!("{name}: {e}");
        assert!(e.gross_fraction <= bound, "{name}: {e}");
    }
}

#[test]
fn catches_the_networks_gross_errors_on_a_lens() {
    let case = stress_case("lens 7.0 px, mask diagonal, N 20");
    let (r, s) = (case.reference.view(), case.sample.view());
    let raw = engine(false).reconstruct(r, s).unwrap();
    let guarded = engine(true).reconstruct(r, s).unwrap();
    let (before, after) = (errors(&raw, &case), errors(&guarded, &case));
    eprintln!("without guard: {before}\nwith guard:    {after}");
    eprintln!("re-solved pixels: {}", guarded.report.resolved_pixels);
    assert_eq!(raw.report.resolved_pixels, 0);
    // The guard's time is reported apart from the network's.
    assert_eq!(raw.report.stages.guard_s, 0.0);
    assert!(guarded.report.stages.guard_s > 0.0 && guarded.report.stages.estimate_s > 0.0);
    // Measured: 7.35 % -> 0.00 % gross, inlier RMSE 0.185 -> 0.088 px (shipped model; 0.27 %
    // and 0.098 px before the guard took neighbours' estimates at the rim).
    assert!(
        before.gross_fraction > 0.02,
        "the case must challenge the network: {before}"
    );
    assert!(after.gross_fraction <= 0.005, "{after}");
    assert!(
        after.inlier_rmse_px < before.inlier_rmse_px,
        "{after} vs {before}"
    );
    let marked = guarded
        .status
        .iter()
        .filter(|&&v| v == Status::Resolved as u8)
        .count();
    assert_eq!(marked, guarded.report.resolved_pixels);
    assert!(marked > 0);
    // The quality map is the residual of the maps returned.
    let q = espinnet::model::residual(r, s, &guarded.contrasts());
    ndarray::Zip::from(&q)
        .and(&guarded.quality)
        .for_each(|a, b| {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0) || (a.is_nan() && b.is_nan()))
        });
}

/// Next to a lens's rim (the displacement jumps from 4–7 px to 0) the network smooths over
/// the jump and the tracker's window straddles it: the guard's neighbours on each side must
/// take over, at N = 3 too. Measured before that: 0.98, 1.34 and 2.32 % of the pixels more
/// than 1 px off.
#[test]
fn a_lens_rim_is_not_left_smoothed() {
    at_most_gross(
        &[
            "lens 4.0 px, mask diagonal, N 20",
            "lens 7.0 px, mask grid, N 10",
            "lens 4.0 px, sandpaper random, N 3",
        ],
        0.002,
    );
}

/// A lens stronger than the network reaches (10–12 px at the rim): the network leaves a
/// quarter of the pixels gross, and the searches from its estimates stop in local minima a
/// few px off near the rim; neighbours' right estimates must spread outward from the
/// centre. Measured before they did (stress suite): 2.78, 5.70 and 9.52 % gross with the
/// guard; after: 0.22, 0.00 and 0.00 %.
#[test]
fn a_lens_beyond_the_networks_reach_is_recovered() {
    at_most_gross(
        &[
            "lens 10.0 px, mask grid, N 10",
            "lens 12.0 px, mask diagonal, N 20",
            "lens 12.0 px, sandpaper large steps, N 13",
        ],
        0.005,
    );
}

/// At N = 2–3 a pixel's own values fit a wrong shift often enough that its residual
/// passes; the residuals of its window do not. Measured with the pixel's test alone (stress
/// suite): 2.40 and 1.74 % gross; with the window's: 0.06 and 0.02 %.
#[test]
fn few_frames_on_a_lens_are_judged_by_the_window() {
    at_most_gross(
        &[
            "lens 10.0 px, mask random, N 2",
            "lens 10.0 px, sandpaper random, N 3",
        ],
        0.005,
    );
}

/// Below five frames, next to a strong absorption edge (T down to 0.05), a wrong shift can
/// explain the window better with one T across it than the true one; the guard then
/// searches again with T as a plane across the window. Measured without the plane (stress
/// suite, 17 px border): 1.19 and 0.31 % gross; with it: 0.44 and 0.05 %. The bound is the
/// issue's target.
#[test]
fn an_absorption_edge_at_few_frames_is_fitted_with_t_as_a_plane() {
    at_most_gross(
        &[
            "absorbing 3.0 px, mask random, N 2",
            "absorbing 3.0 px, sandpaper random, N 3",
        ],
        0.005,
    );
}

/// From N = 5, where the network is a pixel or two off over a wide smooth area (a wedge of
/// 5 px, constant), each pixel's residual is only a little raised and passes; its window's
/// does not (at a looser level than below N = 5). Measured with the pixel's test alone at
/// these N (stress suite, 17 px border): 0.92 and 0.29 % gross; with the window's: 0.40 and
/// 0.02 %.
#[test]
fn a_wide_area_slightly_off_is_judged_by_the_window() {
    at_most_gross(
        &[
            "wedge 5.0 px, mask grid, N 10",
            "wedge 5.0 px, sandpaper large steps, N 13",
        ],
        0.005,
    );
}

/// Where the network is off by a fraction of a pixel nearly everywhere (the same wedge: 59 %
/// of the pixels over 0.25 px off on sandpaper at N = 3), the medians both tests compare
/// with rise with it and its gross pixels passed; the tracker's median residual on a grid
/// is their base where lower. Measured with the network's median alone (stress suite, 17
/// px border): 0.61 % gross; with the tracker's: 0.01 %. The bound is the target.
#[test]
fn a_network_off_nearly_everywhere_is_judged_against_the_tracker() {
    at_most_gross(&["wedge 5.0 px, sandpaper random, N 3"], 0.005);
}

/// The guarded network on stress cases `(name, rmse_px, phase_waves)`: an inlier RMSE of
/// at most `rmse_px` px and a phase error of at most `phase_waves` waves each (over the
/// stress suite's 17 px border; `f64::INFINITY` bounds nothing).
fn at_most(cases: &[(&str, f64, f64)]) {
    for &(name, rmse_px, phase_waves) in cases {
        let (e, waves) = guarded_with_phase(name);
        eprintln!("{name}: {e}, phase {waves:.4} waves");
        assert!(e.inlier_rmse_px <= rmse_px, "{name}: {e}");
        assert!(waves <= phase_waves, "{name}: phase {waves:.4} waves");
    }
}

/// The guarded network on stress case `name` with its geometry: its errors and its phase's
/// (waves), over the stress suite's 17 px border.
fn guarded_with_phase(name: &str) -> (Errors, f64) {
    let case = stress_case(name);
    let mut o = Options::default();
    o.geometry = Some(case.config.geometry);
    let maps = Engine::new(&o)
        .unwrap()
        .reconstruct(case.reference.view(), case.sample.view())
        .unwrap();
    let mut acc = Accuracy::default();
    acc.add(&maps.contrasts(), &case.truth.contrasts(), 17)
        .unwrap();
    let phase = maps.phase.as_ref().expect("the geometry gives the phase");
    acc.add_phase(phase.view(), case.truth.phase.view(), 17)
        .unwrap();
    let e = acc.errors();
    let waves = e.phase_rms_waves.unwrap();
    (e, waves)
}

/// The network's estimate is off by a few hundredths of a pixel in patterns that vary
/// slowly across a lens, which integrate into its phase; the tracker's fits on a grid of
/// pixels measure that bias and the guard takes it off (`guard/bias.rs`). Measured on these
/// cases (stress suite, 17 px border) with the guard before it: 0.0109 and 0.0235 waves;
/// with it: 0.0031 and 0.0027. Issue 15's target is 0.02 waves.
#[test]
fn the_networks_smooth_bias_leaves_the_phase() {
    at_most(&[
        ("lens 2.0 px, mask diagonal, N 20", f64::INFINITY, 0.005),
        ("lens 2.0 px, grating grid, N 20", f64::INFINITY, 0.005),
    ]);
}

/// Across a sphere's or a fibre's edge the displacement changes by 0.3–1 px/px, which the
/// network smooths over; the guard's square window straddles the change as well, so its
/// search there hardly moves the estimate. The tracker's affine window (the shift and its
/// gradient) fits it (`tracking/resolve.rs`, `affine_windows`). Measured on these cases
/// (stress suite, 17 px border): inlier RMSE 0.097 and 0.084 px before, 0.082 and 0.077
/// with it (the tracker at its best window: 0.081 and 0.081). The bounds lie about halfway
/// between, so that the step's loss fails the test and the spread between machines' ONNX
/// Runtime builds (last digits) does not.
#[test]
fn steep_edges_are_fitted_with_the_affine_window() {
    at_most(&[
        ("spheres 4.0 px, mask random, N 2", 0.088, f64::INFINITY),
        (
            "cylinders 4.0 px, sandpaper random, N 3",
            0.080,
            f64::INFINITY,
        ),
    ]);
}

/// Where the guard solved many pixels again (a lens's rim and its strong field), the pixels
/// around them that passed its tests are off by a few hundredths of a pixel too; from five
/// frames the tracker's whole pipeline takes such areas (`guard/regions.rs`). Measured on
/// these cases (stress suite, 17 px border): inlier RMSE 0.035 and 0.032 px before, 0.018
/// and 0.022 with it (the tracker at its best window: 0.012 and 0.016). The bounds lie
/// about halfway between.
#[test]
fn dense_patches_of_resolved_pixels_are_tracked_whole() {
    at_most(&[
        ("lens 2.0 px, mask diagonal, N 20", 0.026, f64::INFINITY),
        (
            "lens 4.0 px, sandpaper large steps, N 13",
            0.027,
            f64::INFINITY,
        ),
    ]);
}

/// On a wedge (a constant 5 px) the network is off by tenths of a pixel everywhere, in a
/// pattern that varies over a few px. Each bias node's own change is added where it stands
/// above its fit's noise (`guard/bias.rs`, `with_detail`), the fits allow for the noise as
/// the tracker's do (`tracking/resolve.rs`, `set_noise`): inlier RMSE 0.048 → 0.026 px,
/// phase 0.0225 → 0.0109 waves. What that leaves where the bias was large (over 0.05 px from
/// ten frames) is about the tracker's noise, patterned like the network's error, and the
/// tracker's whole pipeline takes such areas too (`guard/regions.rs`): 0.022 → 0.017 px and
/// 0.0061 → 0.0009 waves (the wedge's edges left out, below; the first step's figures are
/// from before that). The tracker at its best window: 0.008 px, 0.0007 waves (stress
/// suite, 17 px border). The bounds lie about halfway between the last two steps; with the
/// areas this case no longer tells whether the bias's detail holds, which the next test
/// does at five frames.
#[test]
fn a_wide_bias_is_taken_off_and_its_areas_tracked_whole() {
    at_most(&[("wedge 5.0 px, mask diagonal, N 20", 0.0195, 0.003)]);
}

/// Below ten frames only a bias over 0.2 px sends an area to the tracker's pipeline, so
/// the bias's detail (`guard/bias.rs`, `with_detail`: each node's own change where it
/// stands above its fit's noise) is what follows the network's error where it varies over
/// a few px. Measured on these cases (stress suite, 17 px border): inlier RMSE 0.041 and
/// 0.059 px with the smooth correction alone, 0.0345 and 0.049 with the detail (the tracker
/// at its best window: 0.024 and 0.045). The bounds lie about halfway between.
#[test]
fn the_bias_detail_follows_the_networks_error_at_five_frames() {
    at_most(&[
        ("lens 4.0 px, mask diagonal, N 5", 0.0375, f64::INFINITY),
        ("smooth 6.0 px, mask diagonal, N 5", 0.054, f64::INFINITY),
    ]);
}

/// Weak smooth refraction keeps its scale: the real scan (a perspex cylinder
/// behind sandpaper stepped by many grains, N = 13) showed the network recovering under
/// half of a refraction of a few hundredths of a pixel. Here a smooth field and cylinders
/// scaled to a largest |d| of 0.3 px, under the stress suite's large-step sandpaper: the
/// least-squares slope of the estimate against the truth per axis (stress border, 17 px).
/// Measured: the network alone 0.85–0.87 and 0.75–0.77; guarded 0.991–0.992 and
/// 0.965–0.974 (0.964–0.973 and 0.947–0.955 while the bias's correction was shrunk whole,
/// `guard/bias.rs`, `smoothed`); the tracker (Nw 1) 0.996–1.011. The bounds lie about
/// halfway between, on either side of 1.
#[test]
fn weak_smooth_refraction_keeps_its_scale() {
    let (network, guarded) = (engine(false), engine(true));
    for (name, within) in [
        ("smooth 6.0 px, sandpaper large steps, N 13", 0.018),
        ("cylinders 4.0 px, sandpaper large steps, N 13", 0.04),
    ] {
        let mut config = stress::named(256, 2026, name).unwrap().config;
        let largest =
            |c: &Case| (c.truth.dx.iter().chain(&c.truth.dy)).fold(0.0f32, |m, v| m.max(v.abs()));
        // The displacement is linear in the sample's strength.
        let full = largest(&simulate(&config).unwrap());
        config.sample = config.sample.scaled(0.3 / full as f64);
        let case = simulate(&config).unwrap();
        assert!((largest(&case) - 0.3).abs() < 0.01, "{}", largest(&case));
        let slopes = |engine: &Engine| {
            let maps = engine
                .reconstruct(case.reference.view(), case.sample.view())
                .unwrap();
            [(&maps.dx, &case.truth.dx), (&maps.dy, &case.truth.dy)].map(|(e, t)| slope(e, t, 17))
        };
        let (raw, kept) = (slopes(&network), slopes(&guarded));
        eprintln!("{name}: slopes x, y: network {raw:.3?}, guarded {kept:.3?}");
        assert!(
            raw.iter().all(|&s| s < 0.9),
            "the case must challenge the network: {raw:?}"
        );
        assert!(
            kept.iter().all(|&s| (s - 1.0).abs() <= within),
            "{name}: {kept:?}"
        );
    }
}

/// The least-squares slope of `estimate` against `truth` over the finite pixels more than
/// `border` px inside.
fn slope(estimate: &ndarray::Array2<f32>, truth: &ndarray::Array2<f32>, border: usize) -> f64 {
    let (h, w) = truth.dim();
    let inner = ndarray::s![border..h - border, border..w - border];
    let pairs: Vec<(f64, f64)> = (truth.slice(inner).iter().zip(estimate.slice(inner)))
        .filter(|(_, e)| e.is_finite())
        .map(|(&t, &e)| (t as f64, e as f64))
        .collect();
    let n = pairs.len() as f64;
    let (mt, me) = (pairs.iter()).fold((0.0, 0.0), |(a, b), (t, e)| (a + t / n, b + e / n));
    let (cov, var) = (pairs.iter()).fold((0.0, 0.0), |(c, v), (t, e)| {
        (c + (t - mt) * (e - me), v + (t - mt) * (t - mt))
    });
    cov / var
}

/// A pixel whose displacement points out of the image by more than half a pixel sees the
/// pattern from beyond the reference's field of view: NaN and status 3 in the network's
/// maps, as the tracker's border (`network/field_of_view.rs`), and the phase integrates
/// around it. On the smooth field (6 px), whose displacement points out at some edges, the
/// phase error was 0.0065 waves with those pixels' estimates, 0.0012 without (the tracker:
/// 0.0013); on the wedge (5 px along x and 3 px along y, pointing out of the left and top
/// edges) the outer 3–4 px were 1.4–4.5 px off.
#[test]
fn pixels_beyond_the_field_of_view_are_not_measured() {
    at_most(&[("smooth 6.0 px, mask diagonal, N 20", f64::INFINITY, 0.003)]);
    let case = stress_case("wedge 5.0 px, mask diagonal, N 20");
    // Beyond or inside by the truth, with a margin for the estimate that judges (the
    // network alone is off by up to a pixel on this case).
    for (guard, margin) in [(true, 1.0), (false, 2.0)] {
        let maps = engine(guard)
            .reconstruct(case.reference.view(), case.sample.view())
            .unwrap();
        let status = &maps.status;
        let (h, w) = maps.dx.dim();
        for y in 0..h {
            for x in 0..w {
                let (rx, ry) = (
                    x as f32 - case.truth.dx[(y, x)],
                    y as f32 - case.truth.dy[(y, x)],
                );
                let beyond = rx < -margin || ry < -margin;
                let inside = rx > margin && ry > margin;
                let unmeasured = status[(y, x)] == Status::Border as u8;
                assert!(
                    !beyond || (unmeasured && maps.dx[(y, x)].is_nan()),
                    "guard {guard}: ({y}, {x}) is beyond"
                );
                assert!(
                    !inside || !unmeasured,
                    "guard {guard}: ({y}, {x}) is inside"
                );
            }
        }
    }
}

#[test]
fn keeps_the_networks_good_estimates() {
    // The model card's cases (paper mix, seed 2026) at N = 3 and 20.
    let (raw, guarded) = (engine(false), engine(true));
    for (scans, index) in [(3, 0), (3, 1), (20, 0), (20, 1)] {
        let mut config = dataset::config(Mix::Paper, 256, 2026, index);
        config.scans = scans;
        let case = simulate(&config).unwrap();
        let (r, s) = (case.reference.view(), case.sample.view());
        let before = errors(&raw.reconstruct(r, s).unwrap(), &case);
        let after = errors(&guarded.reconstruct(r, s).unwrap(), &case);
        eprintln!("N = {scans}, case {index}: {before}\n                 {after}");
        if std::env::var_os("NOASSERT").is_some() {
            continue;
        }
        assert!(
            after.rmse_px <= 1.02 * before.rmse_px,
            "{after} vs {before}"
        );
        assert!(
            after.gross_fraction <= before.gross_fraction + 2e-4,
            "{after} vs {before}"
        );
    }
}

/// `tracking::resolve` on every pixel, the image's edges included, from estimates off by
/// whole pixels and jumping between neighbours (so that neighbours' windows are tried
/// everywhere): no panic, and every fit it returns is finite.
#[test]
fn resolving_every_pixel_up_to_the_edges_is_safe() {
    let mut config = espinnet::simulate::Preset::MaskDiagonal.config(48, 3, 5);
    config.scans = 3;
    let case = simulate(&config).unwrap();
    let (r, s) = (case.reference.view(), case.sample.view());
    let mut dx = case.truth.dx.clone();
    let dy = case.truth.dy.clone();
    dx.indexed_iter_mut()
        .for_each(|((y, x), v)| *v += if (y + x) % 2 == 0 { 3.0 } else { -2.0 });
    let estimate =
        espinnet::model::Contrasts::new(&dx, &dy, &case.truth.transmission, &case.truth.darkfield);
    let fit = espinnet::model::Fit::new(r, s, estimate);
    let pixels: Vec<(usize, usize)> = (0..48).flat_map(|y| (0..48).map(move |x| (y, x))).collect();
    for window in [1, 2] {
        let mut params = espinnet::tracking::Params::default();
        params.window = window;
        let solved = espinnet::tracking::resolve(r, s, &params, &fit, &estimate, &pixels);
        assert!(!solved.is_empty());
        for p in &solved {
            assert!(
                p.estimate[..2].iter().all(|v| v.is_finite()),
                "({}, {})",
                p.y,
                p.x
            );
        }
    }
}

/// Where the estimate is wrong over most of a band (here 3 px off over 60 % of the image),
/// the level under which a suspect's window counts as explained, a lower quartile over a
/// grid of the band, still comes from the right part: the wrong pixels are searched, and
/// found (all 3 840 of them; 1 451 with the median as the level). The 1 % allowed is for a
/// search trapped by the sample's own steep edges, not seen on this case.
#[test]
fn a_mostly_wrong_estimate_is_still_searched() {
    let case = simulate(&espinnet::simulate::Preset::MaskDiagonal.config(96, 20, 7)).unwrap();
    let (r, s) = (case.reference.view(), case.sample.view());
    let mut dx = case.truth.dx.clone();
    dx.indexed_iter_mut()
        .filter(|((_, x), _)| *x >= 38)
        .for_each(|(_, v)| *v += 3.0);
    let (dy, t, d) = (
        &case.truth.dy,
        &case.truth.transmission,
        &case.truth.darkfield,
    );
    let estimate = espinnet::model::Contrasts::new(&dx, dy, t, d);
    let fit = espinnet::model::Fit::new(r, s, estimate);
    let wrong: Vec<(usize, usize)> = (8..88)
        .flat_map(|y| (40..88).map(move |x| (y, x)))
        .collect();
    let params = espinnet::tracking::Params::default();
    let solved = espinnet::tracking::resolve(r, s, &params, &fit, &estimate, &wrong);
    let found = (solved.iter())
        .filter(|p| (p.estimate[0] - case.truth.dx[[p.y, p.x]]).abs() < 0.5)
        .count();
    eprintln!("{found} of {} found", wrong.len());
    assert!(
        found as f64 >= 0.99 * wrong.len() as f64,
        "{found} of {} found",
        wrong.len()
    );
}
