//! The cubic B-spline's own bias on the refined shift, predicted from the reference's
//! spectrum and taken off.
//!
//! Why: the reference interpolated at a fraction t of a pixel has each of its frequencies
//! delayed by a phase error that depends on t and the frequency (none at whole and half
//! pixels, most near the Nyquist frequency), so the refinement's minimum lies off the true
//! shift by a weighted mean of those errors: 0.001–0.01 px, which makes a weak field's
//! displacement about 1 % too large on the simulator's patterns (7 % on a pattern with
//! much power near the Nyquist frequency). The weights are the pattern's power along the axis,
//! measured on the reference less the noise's flat floor. The error is the same for every
//! window and frame count; its size follows the pattern's spectrum, so no one interpolator
//! removes it for every modulator, and a table made for the data does. In a prototype (the
//! same fit, speckle, coded-mask and fine patterns, shifts 0.05–0.5 px) the prediction was
//! within 15 % of the measured bias; what is left is content above the Nyquist frequency,
//! which no interpolator can place.

use std::f64::consts::PI;

use ndarray::{Array2, ArrayView3, s};
use rayon::prelude::*;
use rustfft::FftDirection;
use rustfft::num_complex::Complex64;

use crate::transform2d::{angular_frequency, fft2};

/// Table steps per pixel of shift.
const STEPS: usize = 64;
/// The spectrum is measured on at most this many frames, over the central patch of at most
/// this side (px): a few tens of thousands of pattern values settle its shape.
const FRAMES: usize = 4;
const PATCH: usize = 256;

/// The bias (px) of the refined shift along each axis, at fractions `j/STEPS` of the true
/// shift, j = 0 ..= STEPS.
pub(super) struct SplineBias {
    y: Vec<f64>,
    x: Vec<f64>,
}

impl SplineBias {
    /// The bias for the pattern of `reference` (`[N, H, W]`, as given), normalised by
    /// `scale` (1 / its mean), whose noise variance is `noise` per unit of normalised
    /// intensity.
    pub fn estimate(reference: ArrayView3<f32>, scale: f32, noise: f64) -> Self {
        let (n, h, w) = reference.dim();
        let (ph, pw) = (h.min(PATCH), w.min(PATCH));
        let (y0, x0) = ((h - ph) / 2, (w - pw) / 2);
        // A Hann window keeps the patch's edges out of the spectrum.
        let hann = |len: usize| -> Vec<f64> {
            (0..len)
                .map(|i| (PI * (i as f64 + 0.5) / len as f64).sin().powi(2))
                .collect()
        };
        let (hy, hx) = (hann(ph), hann(pw));
        let (mut power_y, mut power_x) = (vec![0.0; ph], vec![0.0; pw]);
        let frames = n.min(FRAMES);
        for i in (0..frames).map(|k| k * n / frames) {
            let patch = reference.slice(s![i, y0..y0 + ph, x0..x0 + pw]);
            let mean = patch.iter().map(|&v| v as f64).sum::<f64>() / (ph * pw) as f64;
            let mut a = Array2::from_shape_fn((ph, pw), |(y, x)| {
                let v = (patch[[y, x]] as f64 - mean) * scale as f64;
                Complex64::new(v * hy[y] * hx[x], 0.0)
            });
            // White noise of variance noise·v adds Σ window²·noise·v to every frequency.
            let floor: f64 = patch
                .indexed_iter()
                .map(|((y, x), &v)| (hy[y] * hx[x]).powi(2) * noise * v as f64 * scale as f64)
                .sum();
            fft2(&mut a, FftDirection::Forward);
            for ((ky, kx), v) in a.indexed_iter() {
                let p = v.norm_sqr() - floor;
                power_y[ky] += p;
                power_x[kx] += p;
            }
        }
        SplineBias {
            y: table(&power_y),
            x: table(&power_x),
        }
    }

    /// `[dy, dx]` (px), an estimate of the refinement, less its bias.
    pub fn correct(&self, shift: [f32; 2]) -> [f32; 2] {
        let at = |t: &[f64], d: f32| {
            let f = (d as f64).rem_euclid(1.0) * STEPS as f64;
            let j = (f as usize).min(STEPS - 1);
            let e = t[j] + (f - j as f64) * (t[j + 1] - t[j]);
            d - e as f32
        };
        [at(&self.y, shift[0]), at(&self.x, shift[1])]
    }
}

/// The bias at fractions `j/STEPS` of the true shift for an axis whose pattern has `power`
/// at DFT bin k: the shift u that the fit of `S = R(· − d)` by `a + k·R̂(· − u)` finds, R̂
/// the spline through R's samples, less d. For a pattern of power P(ω), the fit maximises
/// `C(u)²/E(u)` with C = Σ P·Re(e^{iω(d−u)}·Q(ω, t)) and E = Σ P·|Q(ω, t)|², Q the
/// spline's response at fraction t = frac(−u) relative to the true delay: the weights
/// `bspline(t)` at offsets m = −1 … 2 on the prefiltered samples e^{iωm}/B(ω), B(ω) =
/// (4 + 2·cos ω)/6 the spline's sampled spectrum, times e^{−iωt}.
fn table(power: &[f64]) -> Vec<f64> {
    let len = power.len();
    // A real pattern's power is even in ω: the positive half, the two halves added. The
    // mean's bin is the fit's offset, not pattern; a negative power is noise.
    let bins: Vec<(f64, f64, [Complex64; 4])> = (1..=len / 2)
        .map(|k| {
            let omega = angular_frequency(k, len).abs();
            let p = if 2 * k == len {
                power[k]
            } else {
                power[k] + power[len - k]
            };
            let sampled = (4.0 + 2.0 * omega.cos()) / 6.0;
            let taps =
                [-1.0, 0.0, 1.0, 2.0].map(|m| Complex64::from_polar(1.0 / sampled, omega * m));
            (omega, p.max(0.0), taps)
        })
        .filter(|&(_, p, _)| p > 0.0)
        .collect();
    // The bias is odd about whole and half pixels: e(1 − d) = −e(d).
    let half: Vec<f64> = (0..=STEPS / 2)
        .into_par_iter()
        .map(|j| {
            if bins.is_empty() {
                return 0.0;
            }
            let d = j as f64 / STEPS as f64;
            let score = |u: f64| {
                let t = (-u).rem_euclid(1.0);
                let b = crate::interpolate::bspline(t);
                let (mut c, mut e) = (0.0, 0.0);
                for (omega, p, taps) in &bins {
                    let v: Complex64 = taps.iter().zip(b).map(|(tap, b)| tap * b as f64).sum();
                    c += p * (Complex64::from_polar(1.0, omega * (d - u - t)) * v).re;
                    e += p * v.norm_sqr();
                }
                c * c.abs() / e
            };
            golden_max(score, d - 0.1, d + 0.1) - d
        })
        .collect();
    (0..=STEPS)
        .map(|j| {
            if j <= STEPS / 2 {
                half[j]
            } else {
                -half[STEPS - j]
            }
        })
        .collect()
}

/// The maximum of `f` on [a, b] (unimodal there), to 1e-6.
fn golden_max(f: impl Fn(f64) -> f64, mut a: f64, mut b: f64) -> f64 {
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - r * (b - a), a + r * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > 1e-6 {
        if fc > fd {
            (b, d, fd) = (d, c, fc);
            c = b - r * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + r * (b - a);
            fd = f(d);
        }
    }
    (a + b) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At whole and half pixels the spline has no phase error; a pattern with power only
    /// at low frequencies has almost no bias; one with power near the Nyquist frequency a
    /// bias that makes small shifts larger (the sign the weak-lens slopes showed).
    #[test]
    fn the_bias_vanishes_at_whole_and_half_pixels_and_grows_with_frequency() {
        let spectrum = |cutoff: f64| -> Vec<f64> {
            (0..64)
                .map(|k| {
                    let w = angular_frequency(k, 64).abs();
                    if w <= cutoff { 1.0 } else { 0.0 }
                })
                .collect()
        };
        let coarse = table(&spectrum(0.5));
        let fine = table(&spectrum(2.5));
        for t in [&coarse, &fine] {
            for j in [0, STEPS / 2, STEPS] {
                assert!(t[j].abs() < 1e-5, "bias {} at {j}/{STEPS}", t[j]);
            }
        }
        let peak = |t: &[f64]| t.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(peak(&coarse) < 1e-4, "coarse: {}", peak(&coarse));
        assert!(
            fine[STEPS / 8] > 1e-3,
            "fine at 1/8 px: {}",
            fine[STEPS / 8]
        );
    }

    /// For a pattern of one frequency the fit's shift is where the interpolant's phase error
    /// is made up: ω·e = ψ(t). ψ here comes from the refinement's own interpolator (its
    /// prefilter and weights) on a sampled sinusoid, not from the formula the table uses.
    #[test]
    fn the_table_matches_the_refinements_interpolator_on_one_frequency() {
        let (len, k) = (64, 20);
        let omega = angular_frequency(k, len);
        let mut power = vec![0.0; len];
        (power[k], power[len - k]) = (1.0, 1.0);
        let bias = table(&power);
        // Frames cos ωx and sin ωx, 32 rows alike, 256 px wide.
        let (h, w) = (32, 256);
        let mut frames = vec![0.0f32; 2 * h * w];
        for y in 0..h {
            for x in 0..w {
                frames[y * w + x] = (omega * x as f64).cos() as f32;
                frames[h * w + y * w + x] = (omega * x as f64).sin() as f32;
            }
        }
        // The coefficients, frames innermost; along y the signal is constant, so one row's
        // coefficients are the interpolant.
        let c = crate::interpolate::bspline_coefficients(&frames, 2, w, 0..h, Vec::new());
        let (y, x0) = (h / 2, w / 2);
        for j in [4, 8, 16, 24, 40, 56] {
            let d = j as f64 / STEPS as f64;
            let t = (-(d + bias[j])).rem_euclid(1.0);
            let b = crate::interpolate::bspline(t);
            let at = |i: usize| -> f64 {
                (0..4)
                    .map(|m| b[m] as f64 * c[(y * w + x0 + m - 1) * 2 + i] as f64)
                    .sum()
            };
            let value = Complex64::new(at(0), at(1));
            let psi = (value * Complex64::from_polar(1.0, -omega * (x0 as f64 + t))).arg();
            assert!(
                (bias[j] - psi / omega).abs() < 2e-5,
                "d {d}: table {} against ψ/ω {}",
                bias[j],
                psi / omega
            );
        }
    }
}
