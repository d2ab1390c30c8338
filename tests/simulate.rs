//! The simulator against what it promises: determinism, self-consistent ground truth, the
//! multi-contrast model, Poisson statistics and the scan geometry.

use espinnet::integrate::{Method, integrate};
use espinnet::simulate::{Config, Modulator, Preset, Sample, Trajectory, simulate};
use ndarray::{Axis, s};

fn small(preset: Preset, size: usize, scans: usize) -> Config {
    preset.config(size, scans, 7)
}

#[test]
fn same_seed_same_case_other_seed_other_case() {
    let c = small(Preset::MaskDiagonal, 96, 4);
    let (a, b) = (simulate(&c).unwrap(), simulate(&c).unwrap());
    assert_eq!(a.reference, b.reference);
    assert_eq!(a.sample, b.sample);
    assert_eq!(a.truth.dx, b.truth.dx);
    let mut c2 = c.clone();
    c2.seed += 1;
    assert_ne!(simulate(&c2).unwrap().reference, a.reference);
}

#[test]
fn every_preset_makes_a_visible_pattern() {
    for p in Preset::ALL {
        let case = simulate(&small(p, 128, 5)).unwrap();
        assert!(
            case.reference
                .iter()
                .chain(case.sample.iter())
                .all(|v| v.is_finite() && *v >= 0.0)
        );
        let f = case.reference.index_axis(Axis(0), 0);
        let m = f.mean().unwrap();
        let visibility = f.mapv(|v| (v - m).powi(2)).mean().unwrap().sqrt() / m;
        // Poisson alone at 2000 photons gives 0.022; a usable pattern is several times that.
        assert!(visibility > 0.1, "{}: visibility {visibility}", p.name());
        assert!(
            (m / case.mean_photons() as f32 - 1.0).abs() < 0.1,
            "{}: mean {m}",
            p.name()
        );
    }
}

/// d = z·λ/(2π·p²)·∇φ: integrating the truth displacement (as phase gradient) must give the
/// truth phase back. The bound is the integrator's own (1e-3 of the range, tests/integrate.rs).
#[test]
fn truth_displacement_is_the_phase_gradient() {
    for p in [Preset::MaskDiagonal, Preset::SandpaperRandom] {
        let case = simulate(&small(p, 256, 2)).unwrap();
        let per_px = case.config.geometry.phase_gradient_per_px() as f32;
        let (gx, gy) = (
            case.truth.dx.mapv(|d| d * per_px),
            case.truth.dy.mapv(|d| d * per_px),
        );
        let phi = integrate(gx.view(), gy.view(), Method::LeastSquares).unwrap();
        let truth = &case.truth.phase;
        let range = truth.iter().cloned().fold(f32::MIN, f32::max)
            - truth.iter().cloned().fold(f32::MAX, f32::min);
        let rms = ((&phi - truth).mapv(|v| v * v).mean().unwrap()).sqrt();
        assert!(range > 0.1, "{}: phase range {range}", p.name());
        assert!(
            rms <= 1e-3 * range,
            "{}: rms {rms} of range {range}",
            p.name()
        );
    }
}

/// The lens: thickness min(ρ², a²)/R gives d = −2zδ·x/R inside the aperture, 0 outside.
#[test]
fn lens_displacement_is_analytic() {
    let c = small(Preset::Lens, 200, 2);
    let Sample::Lens {
        apex_radius_um,
        aperture_um,
        delta,
        ..
    } = c.sample
    else {
        unreachable!()
    };
    let case = simulate(&c).unwrap();
    let p = c.geometry.effective_pixel_m();
    let centre = 99.5;
    for (y, x) in [(100, 150), (60, 99), (20, 20), (99, 170), (150, 40)] {
        let (u, v) = ((x as f64 - centre) * p, (y as f64 - centre) * p);
        let inside = (u * u + v * v).sqrt() < aperture_um * 1e-6;
        let expect = |w: f64| {
            if inside {
                -2.0 * c.geometry.distance_m * delta * w / (apex_radius_um * 1e-6) / p
            } else {
                0.0
            }
        };
        assert!(
            (case.truth.dx[[y, x]] as f64 - expect(u)).abs() < 1e-5,
            "dx at {y},{x}"
        );
        assert!(
            (case.truth.dy[[y, x]] as f64 - expect(v)).abs() < 1e-5,
            "dy at {y},{x}"
        );
    }
    assert!(
        case.truth.dx[[100, 150]].abs() > 0.5,
        "the lens must refract visibly"
    );
}

fn wedge(dx: f64, dy: f64, noise: bool) -> Config {
    let mut c = small(Preset::MaskDiagonal, 96, 6);
    c.sample = Sample::Uniform {
        dx_px: dx,
        dy_px: dy,
        transmission: 0.8,
        darkfield: 0.7,
    };
    c.poisson_noise = noise;
    c
}

/// S(r) = T·(M + D·(R(r − d) − M)) with an integer d, frame by frame: exact without noise,
/// and with noise the residual has exactly the Poisson variance of both terms (χ²/dof = 1).
#[test]
fn sample_follows_the_multi_contrast_model() {
    let (t, d, shift) = (0.8f32, 0.7f32, (3usize, 2usize)); // dx = +3, dy = −2
    for noise in [false, true] {
        let case = simulate(&wedge(3.0, -2.0, noise)).unwrap();
        let m = case.mean_photons() as f32;
        let (n, h, w) = case.sample.dim();
        let (mut chi2, mut count, mut max_rel) = (0.0f64, 0usize, 0.0f32);
        for i in 0..n {
            for y in 0..h - 2 {
                for x in shift.0..w {
                    // R(r − d) at r = (y, x) with d = (dy, dx) = (−2, 3): R[y + 2, x − 3].
                    let r = case.reference[[i, y + shift.1, x - shift.0]];
                    let model = t * (m + d * (r - m));
                    let s = case.sample[[i, y, x]];
                    if noise {
                        // Var(S) = model, Var(model) = (T·D)²·R.
                        chi2 += ((s - model) as f64).powi(2) / (model + (t * d).powi(2) * r) as f64;
                        count += 1;
                    } else {
                        max_rel = max_rel.max((s - model).abs() / model);
                    }
                }
            }
        }
        if noise {
            let red = chi2 / count as f64;
            // ~45 000 terms: the standard error of χ²/dof is √(2/n) ≈ 0.007.
            assert!((red - 1.0).abs() < 0.05, "χ²/dof = {red}");
        } else {
            assert!(max_rel < 1e-5, "noise-free model mismatch {max_rel}");
        }
    }
}

#[test]
fn poisson_noise_has_poisson_statistics() {
    let clean = simulate(&wedge(0.0, 0.0, false)).unwrap();
    let noisy = simulate(&wedge(0.0, 0.0, true)).unwrap();
    let z: Vec<f64> = noisy
        .reference
        .iter()
        .zip(clean.reference.iter())
        .map(|(&n, &l)| (n - l) as f64 / (l as f64).sqrt())
        .collect();
    let mean = z.iter().sum::<f64>() / z.len() as f64;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / z.len() as f64;
    // 55 000 samples: standard errors 0.004 (mean) and 0.006 (variance).
    assert!(mean.abs() < 0.03, "mean {mean}");
    assert!((var - 1.0).abs() < 0.04, "variance {var}");
    assert!(
        noisy.reference.iter().all(|v| v.fract() == 0.0),
        "counts are integers"
    );
}

/// Frames of an integer-pixel grid scan are exact translates of each other.
#[test]
fn reference_frames_follow_the_scan() {
    let mut c = small(Preset::MaskDiagonal, 64, 4);
    c.trajectory = Trajectory::Grid {
        step_um: 2.0 * 0.65,
    }; // 2 px
    c.sample = Sample::Empty;
    c.poisson_noise = false;
    let case = simulate(&c).unwrap();
    // positions (y, x) px: (0,0), (0,2), (2,0), (2,2), centred — frame 3 = frame 0 moved by (2, 2).
    let pos: Vec<(f64, f64)> = case
        .positions_um
        .iter()
        .map(|&(y, x)| (y / 0.65, x / 0.65))
        .collect();
    assert!((pos[3].0 - pos[0].0 - 2.0).abs() < 1e-9 && (pos[3].1 - pos[0].1 - 2.0).abs() < 1e-9);
    let f0 = case.reference.slice(s![0, ..62, ..62]);
    let f3 = case.reference.slice(s![3, 2.., 2..]);
    let diff = (&f0 - &f3).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
    assert!(diff < 1e-2, "max difference {diff} photons");
}

#[test]
fn diagonal_jitter_stays_within_half_a_step() {
    let t = Trajectory::Diagonal {
        step_um: 3.0,
        jitter: 0.5,
    };
    let p = t.positions_um(20, 3);
    for w in p.windows(2) {
        for d in [w[1].0 - w[0].0, w[1].1 - w[0].1] {
            assert!((0.0..=6.0).contains(&d), "step {d}");
        }
    }
}

#[test]
fn bad_parameters_are_named() {
    let mut c = small(Preset::MaskDiagonal, 64, 4);
    c.modulator = Modulator::CodedMask {
        pitch_um: 0.0,
        fill: 0.5,
        transmission: 0.5,
        phase_rad: 0.0,
    };
    let e = simulate(&c).unwrap_err().to_string();
    assert!(e.contains("pitch"), "{e}");
    let mut c = small(Preset::MaskDiagonal, 64, 0);
    assert!(simulate(&c).unwrap_err().to_string().contains("1 scan"));
    c.scans = 2;
    c.height = 0;
    assert!(simulate(&c).is_err());
    let mut c = small(Preset::MaskDiagonal, 64, 2);
    c.geometry.energy_ev = f64::NAN;
    assert!(simulate(&c).unwrap_err().to_string().contains("energy"));
    // A reversed range is an error, not a panic inside the random draw.
    let mut c = small(Preset::SandpaperRandom, 64, 2);
    if let Sample::Spheres { radius_um, .. } = &mut c.sample {
        *radius_um = (30.0, 10.0);
    }
    assert!(
        simulate(&c)
            .unwrap_err()
            .to_string()
            .contains("radius range")
    );
    assert!(
        "nonsense"
            .parse::<Preset>()
            .unwrap_err()
            .to_string()
            .contains("mask-diagonal")
    );
}
