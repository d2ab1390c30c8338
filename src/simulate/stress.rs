//! The stress suite: what the paper's training distribution lacks and real samples have —
//! refractive lenses whose displacement grows smoothly over most of the field, spheres,
//! fibres, wedges, smooth phase without edges, soft-edged objects, strong absorption and
//! strong scattering — under coded masks, sandpaper and gratings, diagonal, grid, random and
//! large-step scans, N = 2…20.
//!
//! [`suite`] is the fixed table of `espinnet validate --mix stress`; [`draw`] gives the same
//! families at random, for training (`--mix stress`).

use rand::RngExt;
use rand_pcg::Pcg64Mcg;

use super::{Config, Modulator, Preset, Sample, Trajectory};

/// What is in the beam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Bi-concave parabolic lens (a CRL): displacement linear in the radius.
    Lens,
    Spheres,
    /// Fibres across the field.
    Cylinders,
    /// Constant displacement: a phase ramp.
    Wedge,
    /// Smooth random phase over the whole field, no edges.
    Smooth,
    /// Random objects with edges softened over 10 px: the displacement is inside them.
    SoftBlobs,
    /// Objects with T down to 0.05.
    Absorbing,
    /// Objects with D down to 0.2.
    Scattering,
}

impl Family {
    pub const ALL: [Family; 8] = [
        Family::Lens,
        Family::Spheres,
        Family::Cylinders,
        Family::Wedge,
        Family::Smooth,
        Family::SoftBlobs,
        Family::Absorbing,
        Family::Scattering,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Lens => "lens",
            Family::Spheres => "spheres",
            Family::Cylinders => "cylinders",
            Family::Wedge => "wedge",
            Family::Smooth => "smooth",
            Family::SoftBlobs => "soft-blobs",
            Family::Absorbing => "absorbing",
            Family::Scattering => "scattering",
        }
    }

    /// The family's sample in a `size`² field of `pixel_um` pixels; its displacement is set
    /// afterwards ([`Config::with_max_displacement`]). `random`: parameters drawn from `rng`
    /// (training); otherwise the suite's fixed ones (positions still come from the seed).
    fn sample(self, size: usize, pixel_um: f64, random: bool, rng: &mut Pcg64Mcg) -> Sample {
        let field_um = size as f64 * pixel_um;
        let mut pick = |fixed: f64, lo: f64, hi: f64| {
            if random {
                rng.random_range(lo..=hi)
            } else {
                fixed
            }
        };
        let blobs = |t: f64, d: f64, edge: f64, radius: (f64, f64)| Sample::Blobs {
            count: 4,
            radius_frac: radius,
            edge_px: edge,
            max_displacement_px: 1.0,
            transmission_min: t,
            darkfield_min: d,
        };
        match self {
            Family::Lens => Sample::Lens {
                apex_radius_um: 50.0,
                aperture_um: pick(0.4, 0.25, 0.8) * field_um,
                delta: 8.5e-7,
                beta: 2e-10,
            },
            Family::Spheres => Sample::Spheres {
                count: pick(4.0, 2.0, 8.0) as usize,
                radius_um: (0.06 * field_um, 0.15 * field_um),
                delta: 8.5e-7,
                beta: 1e-9,
                darkfield_min: pick(0.6, 0.4, 1.0),
                edge_px: pick(2.0, 1.0, 4.0),
            },
            Family::Cylinders => Sample::Cylinders {
                count: pick(3.0, 1.0, 5.0) as usize,
                radius_um: (0.03 * field_um, 0.08 * field_um),
                delta: 8.5e-7,
                beta: 1e-9,
                darkfield_min: pick(0.7, 0.4, 1.0),
                edge_px: pick(2.0, 1.0, 4.0),
            },
            Family::Wedge => {
                let angle = pick(0.6, 0.0, std::f64::consts::TAU);
                Sample::Uniform {
                    dx_px: angle.cos(),
                    dy_px: angle.sin(),
                    transmission: pick(0.85, 0.3, 1.0),
                    darkfield: pick(0.9, 0.4, 1.0),
                }
            }
            Family::Smooth => Sample::Smooth {
                correlation_px: size as f64 * pick(0.1, 0.04, 0.25),
                max_displacement_px: 1.0,
                transmission_min: pick(0.6, 0.3, 1.0),
                darkfield_min: pick(0.6, 0.3, 1.0),
            },
            Family::SoftBlobs => blobs(
                pick(0.6, 0.4, 1.0),
                pick(0.6, 0.4, 1.0),
                pick(10.0, 6.0, 16.0),
                (0.15, 0.35),
            ),
            Family::Absorbing => blobs(pick(0.05, 0.05, 0.5), 0.8, 3.0, (0.1, 0.25)),
            Family::Scattering => blobs(0.8, pick(0.2, 0.2, 0.5), 3.0, (0.1, 0.25)),
        }
    }
}

/// Modulator and scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// The paper's: 5 µm coded mask, diagonal steps of 3 µm ± ½ step.
    MaskDiagonal,
    MaskGrid,
    MaskRandom,
    SandpaperRandom,
    /// Sandpaper moved about 30 px between frames (several speckles), as on the real
    /// perspex-cylinder scan.
    SandpaperLargeSteps,
    /// 8 µm checkerboard on an XY grid: displacements capped at a quarter period.
    GratingGrid,
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::MaskDiagonal => "mask diagonal",
            Setup::MaskGrid => "mask grid",
            Setup::MaskRandom => "mask random",
            Setup::SandpaperRandom => "sandpaper random",
            Setup::SandpaperLargeSteps => "sandpaper large steps",
            Setup::GratingGrid => "grating grid",
        }
    }

    fn apply(self, c: &mut Config) {
        let sandpaper = Modulator::Sandpaper {
            grain_um: 4.0,
            phase_rms_rad: 0.6,
            transmission: 0.8,
        };
        match self {
            Setup::MaskDiagonal => {}
            Setup::MaskGrid => c.trajectory = Trajectory::Grid { step_um: 1.3 },
            Setup::MaskRandom => c.trajectory = Trajectory::Random { extent_um: 20.0 },
            Setup::SandpaperRandom => {
                c.modulator = sandpaper;
                c.trajectory = Trajectory::Random { extent_um: 20.0 };
            }
            Setup::SandpaperLargeSteps => {
                c.modulator = sandpaper;
                c.trajectory = Trajectory::Diagonal {
                    step_um: 20.0,
                    jitter: 0.5,
                };
            }
            Setup::GratingGrid => {
                c.modulator = Preset::GratingGrid.config(2, 1, 0).modulator;
                c.trajectory = Trajectory::Grid { step_um: 1.3 };
            }
        }
    }
}

/// The largest displacement (px) a periodic modulator leaves unambiguous: a quarter period
/// (a checkerboard also repeats under half a period along its diagonal); unbounded otherwise.
pub fn unambiguous_px(c: &Config) -> f64 {
    match c.modulator {
        Modulator::Checkerboard { period_um, .. } => {
            0.25 * period_um * 1e-6 / c.geometry.effective_pixel_m()
        }
        _ => f64::INFINITY,
    }
}

/// One case of the suite.
#[derive(Debug, Clone)]
pub struct StressCase {
    /// e.g. "lens 7 px, mask diagonal, N 20".
    pub name: String,
    pub family: Family,
    /// The largest displacement magnitude in the field (px).
    pub max_displacement_px: f64,
    pub config: Config,
}

/// Samples and their strengths (max |d|, px) in the suite.
const SAMPLES: [(Family, f64); 12] = [
    (Family::Lens, 2.0),
    (Family::Lens, 4.0),
    (Family::Lens, 7.0),
    (Family::Lens, 10.0),
    (Family::Lens, 12.0),
    (Family::Spheres, 4.0),
    (Family::Cylinders, 4.0),
    (Family::Wedge, 5.0),
    (Family::Smooth, 6.0),
    (Family::SoftBlobs, 6.0),
    (Family::Absorbing, 3.0),
    (Family::Scattering, 3.0),
];

/// Set-ups and scan counts in the suite.
const SETUPS: [(Setup, usize); 7] = [
    (Setup::MaskDiagonal, 20),
    (Setup::MaskDiagonal, 5),
    (Setup::MaskGrid, 10),
    (Setup::MaskRandom, 2),
    (Setup::SandpaperRandom, 3),
    (Setup::SandpaperLargeSteps, 13),
    (Setup::GratingGrid, 20),
];

/// The suite's case called `name` (as [`suite`] names it and `espinnet validate --mix
/// stress` prints it) at `size`² with `seed`; `None` where there is none.
pub fn named(size: usize, seed: u64, name: &str) -> Option<StressCase> {
    suite(size, seed).into_iter().find(|c| c.name == name)
}

/// [`named`]'s case, simulated.
pub fn case(size: usize, seed: u64, name: &str) -> Option<crate::Result<super::Case>> {
    Some(super::simulate(&named(size, seed, name)?.config))
}

/// The fixed suite at `size`² (every sample under every set-up), seeded by `seed`.
pub fn suite(size: usize, seed: u64) -> Vec<StressCase> {
    let mut out = Vec::new();
    for (i, &(family, strength)) in SAMPLES.iter().enumerate() {
        for (j, &(setup, n)) in SETUPS.iter().enumerate() {
            let case_seed = seed ^ ((i * SETUPS.len() + j) as u64).wrapping_mul(0x9E37_79B9);
            let mut rng = <Pcg64Mcg as rand::SeedableRng>::seed_from_u64(case_seed);
            let mut c = Preset::MaskDiagonal.config(size, n, case_seed);
            setup.apply(&mut c);
            let pixel_um = c.geometry.effective_pixel_m() * 1e6;
            c.sample = family.sample(size, pixel_um, false, &mut rng);
            let max_d = strength.min(unambiguous_px(&c));
            out.push(StressCase {
                name: format!("{} {max_d:.1} px, {}, N {n}", family.name(), setup.name()),
                family,
                max_displacement_px: max_d,
                config: c.with_max_displacement(max_d),
            });
        }
    }
    out
}

/// A training case of the stress families on `c` (whose modulator, scan, N and flux the
/// caller has drawn): a random family with random parameters, max |d| up to 12 px (within
/// the modulator's unambiguous range), and a large-step scan one time in five.
pub fn draw(mut c: Config, rng: &mut Pcg64Mcg) -> Config {
    if rng.random_range(0..5) == 0 {
        c.trajectory = if rng.random_bool(0.5) {
            Trajectory::Diagonal {
                step_um: rng.random_range(6.0..=25.0),
                jitter: 0.5,
            }
        } else {
            Trajectory::Random {
                extent_um: rng.random_range(60.0..=200.0),
            }
        };
    }
    let family = Family::ALL[rng.random_range(0..Family::ALL.len())];
    let pixel_um = c.geometry.effective_pixel_m() * 1e6;
    c.sample = family.sample(c.height.min(c.width), pixel_um, true, rng);
    let max_d = rng.random_range(0.3..=12.0f64).min(unambiguous_px(&c));
    c.with_max_displacement(max_d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_cases_reach_their_stated_displacement() {
        let cases = suite(64, 1);
        assert_eq!(cases.len(), SAMPLES.len() * SETUPS.len());
        for case in cases
            .iter()
            .filter(|c| c.name.contains("mask diagonal, N 20"))
        {
            let maps =
                case.config
                    .sample
                    .maps(64, 64, &case.config.geometry, case.config.stream(1));
            let max = ndarray::Zip::from(&maps.dx)
                .and(&maps.dy)
                .fold(0.0f64, |a, &x, &y| a.max(x.hypot(y)));
            assert!(
                (max - case.max_displacement_px).abs() < 1e-6 * case.max_displacement_px,
                "{}: {max}",
                case.name
            );
        }
        let grating = cases
            .iter()
            .find(|c| c.name.starts_with("lens 3.1 px, grating"));
        assert!(grating.is_some(), "gratings are capped at a quarter period");
    }
}
