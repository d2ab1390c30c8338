//! Modulator scan trajectories: N positions (µm), centred on the origin.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::error::{Result, require_positive};

/// How the modulator is moved between frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Trajectory {
    /// Along the diagonal in steps of `step_um` per axis, each position jittered by a
    /// uniform ±`jitter`·step per axis (the paper uses 0.5).
    Diagonal { step_um: f64, jitter: f64 },
    /// A raster of ⌈√N⌉ columns with `step_um` spacing, filled row by row.
    Grid { step_um: f64 },
    /// Uniformly random in a square of side `extent_um`.
    Random { extent_um: f64 },
}

impl Trajectory {
    pub(crate) fn validate(&self) -> Result<()> {
        match *self {
            Trajectory::Diagonal { step_um, jitter } => {
                require_positive("scan step (µm)", step_um)?;
                if !(0.0..=1.0).contains(&jitter) {
                    return Err(crate::Error::invalid(format!(
                        "jitter must be in [0, 1] steps, got {jitter}"
                    )));
                }
                Ok(())
            }
            Trajectory::Grid { step_um } => require_positive("scan step (µm)", step_um),
            Trajectory::Random { extent_um } => require_positive("scan extent (µm)", extent_um),
        }
    }

    /// `n` positions `(y, x)` in µm, centred so that their bounding box is symmetric.
    pub fn positions_um(&self, n: usize, seed: u64) -> Vec<(f64, f64)> {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let mut jit = |amp: f64| {
            if amp > 0.0 {
                rng.random_range(-amp..=amp)
            } else {
                0.0
            }
        };
        let mut p: Vec<(f64, f64)> = match *self {
            Trajectory::Diagonal { step_um, jitter } => (0..n)
                .map(|i| {
                    let base = i as f64 * step_um;
                    (base + jit(jitter * step_um), base + jit(jitter * step_um))
                })
                .collect(),
            Trajectory::Grid { step_um } => {
                let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
                (0..n)
                    .map(|i| ((i / cols) as f64 * step_um, (i % cols) as f64 * step_um))
                    .collect()
            }
            Trajectory::Random { extent_um } => (0..n)
                .map(|_| (jit(extent_um / 2.0), jit(extent_um / 2.0)))
                .collect(),
        };
        let centre = |f: fn(&(f64, f64)) -> f64| {
            let (lo, hi) = p
                .iter()
                .map(f)
                .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
            (lo + hi) / 2.0
        };
        let (cy, cx) = (centre(|q| q.0), centre(|q| q.1));
        p.iter_mut().for_each(|q| *q = (q.0 - cy, q.1 - cx));
        p
    }
}
