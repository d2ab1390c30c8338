//! Random case configurations for training data. Sample `i` of a dataset with seed `s` is
//! a pure function of (mix, patch size, s, i): shards can be made in any order, in parallel
//! or again, and hold the same data.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use super::{Config, Modulator, Preset, Sample, Trajectory};
use crate::error::{Error, Result};

/// Which distribution the cases are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// The ESPINNet paper's: 5 µm coded mask, diagonal 3 µm ± ½ step, N = 20, Bézier
    /// objects, displacements up to 8 px.
    Paper,
    /// Also sandpaper and checkerboard modulators, XY-grid and random trajectories, N from 2
    /// to 20, displacements up to 10 px (a quarter period for checkerboards, beyond which
    /// the match is ambiguous), T and D down to 0.5, flux 300–10 000 photons.
    Broad,
}

impl std::str::FromStr for Mix {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "paper" => Ok(Mix::Paper),
            "broad" => Ok(Mix::Broad),
            _ => Err(Error::invalid(format!(
                "dataset mix must be 'paper' or 'broad', got '{s}'"
            ))),
        }
    }
}

/// Largest scan count drawn (the network's Nnet in the paper).
pub const MAX_SCANS: usize = 20;

/// The configuration of sample `index` of a dataset.
pub fn config(mix: Mix, patch: usize, seed: u64, index: u64) -> Config {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
    let mut c = Preset::MaskDiagonal.config(patch, MAX_SCANS, rng.random());
    let blobs = |rng: &mut Pcg64Mcg, max_d: f64, t_min: f64, d_min: f64| Sample::Blobs {
        count: rng.random_range(1..=6),
        radius_frac: (0.1, 0.35),
        edge_px: rng.random_range(2.0..=5.0),
        max_displacement_px: rng.random_range(0.0..=max_d),
        transmission_min: rng.random_range(t_min..=1.0),
        darkfield_min: rng.random_range(d_min..=1.0),
    };
    match mix {
        Mix::Paper => c.sample = blobs(&mut rng, 8.0, 0.6, 0.6),
        Mix::Broad => {
            c.scans = rng.random_range(2..=MAX_SCANS);
            c.modulator = match rng.random_range(0..10) {
                0..=4 => Modulator::CodedMask {
                    pitch_um: rng.random_range(3.0..=8.0),
                    fill: 0.5,
                    transmission: rng.random_range(0.4..=0.8),
                    phase_rad: -rng.random_range(0.3..=1.5),
                },
                5..=7 => Modulator::Sandpaper {
                    grain_um: rng.random_range(2.5..=6.0),
                    phase_rms_rad: rng.random_range(0.3..=1.0),
                    transmission: rng.random_range(0.7..=0.95),
                },
                _ => Modulator::Checkerboard {
                    period_um: rng.random_range(6.0..=12.0),
                    transmission: rng.random_range(0.3..=0.7),
                    phase_rad: std::f64::consts::FRAC_PI_2,
                },
            };
            c.trajectory = match rng.random_range(0..3) {
                0 => Trajectory::Diagonal {
                    step_um: rng.random_range(1.0..=4.0),
                    jitter: 0.5,
                },
                1 => Trajectory::Grid {
                    step_um: rng.random_range(0.8..=3.0),
                },
                _ => Trajectory::Random {
                    extent_um: rng.random_range(10.0..=40.0),
                },
            };
            // A periodic pattern repeats under shifts of a period (a checkerboard also under
            // half a period along the diagonal): larger displacements are ambiguous for
            // any matcher, so they are kept within a quarter period.
            let max_d = match c.modulator {
                Modulator::Checkerboard { period_um, .. } => {
                    (0.25 * period_um * 1e-6 / c.geometry.effective_pixel_m()).min(10.0)
                }
                _ => 10.0,
            };
            c.sample = blobs(&mut rng, max_d, 0.5, 0.5);
            c.flux_photons = (rng.random_range(300f64.ln()..=10_000f64.ln())).exp();
            c.detector_blur_px = rng.random_range(0.5..=1.0);
        }
    }
    c
}
