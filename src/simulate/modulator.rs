//! Modulators: the complex transmission of the pattern-making object, sampled on the
//! simulation canvas.

use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rustfft::num_complex::Complex32;
use serde::{Deserialize, Serialize};

use super::filter::gaussian_periodic;
use crate::error::{Result, require_positive};

/// The pattern-making object in the beam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Modulator {
    /// Random binary coded mask: square cells of `pitch_um`, a fraction `fill` of them
    /// absorbing with intensity transmission `transmission` and phase shift `phase_rad`.
    CodedMask {
        pitch_um: f64,
        fill: f64,
        transmission: f64,
        phase_rad: f64,
    },
    /// Sandpaper-like random phase screen: Gaussian-correlated grains of `grain_um` (FWHM)
    /// with RMS phase `phase_rms_rad` and an absorption that follows the phase,
    /// `transmission` being the intensity transmission at +2 RMS.
    Sandpaper {
        grain_um: f64,
        phase_rms_rad: f64,
        transmission: f64,
    },
    /// Checkerboard grating of period `period_um` (one light and one dark square per
    /// period along each axis), squares alternating `transmission` / `phase_rad`.
    Checkerboard {
        period_um: f64,
        transmission: f64,
        phase_rad: f64,
    },
}

impl Modulator {
    pub(crate) fn validate(&self) -> Result<()> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(crate::Error::invalid(format!(
                    "{name} must be in [0, 1], got {v}"
                )))
            }
        };
        match *self {
            Modulator::CodedMask {
                pitch_um,
                fill,
                transmission,
                ..
            } => {
                require_positive("coded mask pitch (µm)", pitch_um)?;
                unit("coded mask fill", fill)?;
                unit("coded mask transmission", transmission)
            }
            Modulator::Sandpaper {
                grain_um,
                transmission,
                ..
            } => {
                require_positive("sandpaper grain (µm)", grain_um)?;
                unit("sandpaper transmission", transmission)
            }
            Modulator::Checkerboard {
                period_um,
                transmission,
                ..
            } => {
                require_positive("grating period (µm)", period_um)?;
                unit("grating transmission", transmission)
            }
        }
    }

    /// Complex transmission on an `h`×`w` canvas of `sample_um` spacing.
    pub(crate) fn wavefield(
        &self,
        h: usize,
        w: usize,
        sample_um: f64,
        seed: u64,
    ) -> Array2<Complex32> {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let from_polar = |t: f64, p: f64| Complex32::from_polar(t.sqrt() as f32, p as f32);
        match *self {
            Modulator::CodedMask {
                pitch_um,
                fill,
                transmission,
                phase_rad,
            } => {
                let cell = pitch_um / sample_um;
                let (ch, cw) = (
                    (h as f64 / cell).ceil() as usize + 1,
                    (w as f64 / cell).ceil() as usize + 1,
                );
                let cells = Array2::from_shape_fn((ch, cw), |_| rng.random::<f64>() < fill);
                let (dark, open) = (
                    from_polar(transmission, phase_rad),
                    Complex32::new(1.0, 0.0),
                );
                Array2::from_shape_fn((h, w), |(y, x)| {
                    let c = cells[[(y as f64 / cell) as usize, (x as f64 / cell) as usize]];
                    if c { dark } else { open }
                })
            }
            Modulator::Sandpaper {
                grain_um,
                phase_rms_rad,
                transmission,
            } => {
                let noise = Array2::from_shape_fn((h, w), |_| rng.random::<f32>() - 0.5);
                // FWHM → σ, in canvas samples.
                let sigma = grain_um / sample_um / 2.3548;
                let mut field = gaussian_periodic(&noise, sigma);
                let rms = (field.iter().map(|v| v * v).sum::<f32>() / field.len() as f32).sqrt();
                field.mapv_inplace(|v| v / rms.max(f32::MIN_POSITIVE));
                // Absorption ∝ thickness ∝ phase: intensity = transmission^(u/2) at u RMS.
                let mu = -(transmission.max(1e-6)).ln() / 2.0;
                field.mapv(|u| {
                    let t = (-(mu * (u as f64 + 2.0).max(0.0) / 2.0)).exp();
                    from_polar(t, phase_rms_rad * u as f64)
                })
            }
            Modulator::Checkerboard {
                period_um,
                transmission,
                phase_rad,
            } => {
                let half = period_um / sample_um / 2.0;
                let dark = from_polar(transmission, phase_rad);
                Array2::from_shape_fn((h, w), |(y, x)| {
                    let parity = ((y as f64 / half) as usize + (x as f64 / half) as usize) % 2;
                    if parity == 1 {
                        dark
                    } else {
                        Complex32::new(1.0, 0.0)
                    }
                })
            }
        }
    }
}
