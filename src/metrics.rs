//! Accuracy of an estimate against simulated truth, with one rule for every caller
//! (`espinnet validate`, the demo, the tests, the model card):
//!
//! - pixels within `border` px of the edge are not scored;
//! - a pixel is *missing* where any of dx, dy, T, D is not finite; it counts as a gross
//!   error and stays out of every RMSE;
//! - *gross*: missing, or a displacement error |e| = √(ex² + ey²) over 1 px;
//! - RMSEs over the pixels that are not missing; the displacement's is per axis,
//!   √(Σ(ex² + ey²) / 2n); the *inlier* RMSE the same over the pixels that are not gross;
//! - phase: each case's mean difference is removed (the phase is known up to a constant),
//!   then the RMS over the finite interior pixels, in waves (rad / 2π).
//!
//! Several cases pool by adding them to one [`Accuracy`]: every pixel weighs the same.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Contrasts;

/// Error sums over the pixels scored so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accuracy {
    pixels: usize,
    missing: usize,
    gross: usize,
    d2: f64,
    inlier_d2: f64,
    t2: f64,
    k2: f64,
    phase_pixels: usize,
    phase2: f64,
}

/// What [`Accuracy`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Errors {
    /// Displacement RMSE per axis (px).
    pub rmse_px: f64,
    /// The same over the pixels that are not gross errors (px).
    pub inlier_rmse_px: f64,
    /// Share of scored pixels that are gross errors (0 to 1).
    pub gross_fraction: f64,
    /// RMSE of T and of D.
    pub rmse_transmission: f64,
    pub rmse_darkfield: f64,
    /// Phase RMS error (waves), when phases were added.
    pub phase_rms_waves: Option<f64>,
    /// Pixels scored, and how many of them had no estimate.
    pub pixels: usize,
    pub missing: usize,
}

impl Accuracy {
    /// Scores `estimate` against `truth` over the interior, `border` px in from each edge.
    /// A pair whose maps differ in shape is refused and adds nothing.
    pub fn add(&mut self, estimate: &Contrasts, truth: &Contrasts, border: usize) -> Result<()> {
        let (h, w) = estimate.dx.dim();
        let dims = |c: &Contrasts| {
            [
                c.dx.dim(),
                c.dy.dim(),
                c.transmission.dim(),
                c.darkfield.dim(),
            ]
        };
        if let Some(&(gh, gw)) = dims(estimate)
            .iter()
            .chain(&dims(truth))
            .find(|&&d| d != (h, w))
        {
            return Err(Error::ShapeMismatch {
                what: "every map of an estimate and its truth must have one [H, W]".into(),
                expected: vec![h, w],
                got: vec![gh, gw],
            });
        }
        if 2 * border >= h.min(w) {
            return Ok(());
        }
        for y in border..h - border {
            for x in border..w - border {
                let at = |c: &Contrasts| {
                    let p = [y, x];
                    [c.dx[p], c.dy[p], c.transmission[p], c.darkfield[p]]
                };
                let ([dx, dy, t, d], [tdx, tdy, tt, td]) = (at(estimate), at(truth));
                self.pixels += 1;
                if ![dx, dy, t, d].iter().all(|v| v.is_finite()) {
                    self.missing += 1;
                    self.gross += 1;
                    continue;
                }
                let e2 = ((dx - tdx) as f64).powi(2) + ((dy - tdy) as f64).powi(2);
                self.gross += usize::from(e2 > 1.0);
                if e2 <= 1.0 {
                    self.inlier_d2 += e2;
                }
                self.d2 += e2;
                self.t2 += ((t - tt) as f64).powi(2);
                self.k2 += ((d - td) as f64).powi(2);
            }
        }
        Ok(())
    }

    /// Scores a phase map (rad) against the true one over the interior, after removing the
    /// mean difference of their finite pixels.
    pub fn add_phase(
        &mut self,
        estimate: ndarray::ArrayView2<f32>,
        truth: ndarray::ArrayView2<f32>,
        border: usize,
    ) -> Result<()> {
        let (h, w) = estimate.dim();
        if truth.dim() != (h, w) {
            return Err(Error::ShapeMismatch {
                what: "a phase and its truth must have one [H, W]".into(),
                expected: vec![h, w],
                got: vec![truth.dim().0, truth.dim().1],
            });
        }
        if 2 * border >= h.min(w) {
            return Ok(());
        }
        let inner = ndarray::s![border..h - border, border..w - border];
        let diffs: Vec<f64> = ndarray::Zip::from(estimate.slice(inner))
            .and(truth.slice(inner))
            .map_collect(|&e, &t| f64::from(e) - f64::from(t))
            .into_iter()
            .filter(|v| v.is_finite())
            .collect();
        let mean = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
        self.phase_pixels += diffs.len();
        self.phase2 += diffs.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        Ok(())
    }

    /// The errors of everything added so far.
    pub fn errors(&self) -> Errors {
        let n = (self.pixels - self.missing).max(1) as f64;
        Errors {
            rmse_px: (self.d2 / n / 2.0).sqrt(),
            inlier_rmse_px: (self.inlier_d2 / (self.pixels - self.gross).max(1) as f64 / 2.0)
                .sqrt(),
            gross_fraction: self.gross as f64 / self.pixels.max(1) as f64,
            rmse_transmission: (self.t2 / n).sqrt(),
            rmse_darkfield: (self.k2 / n).sqrt(),
            phase_rms_waves: (self.phase_pixels > 0)
                .then(|| (self.phase2 / self.phase_pixels as f64).sqrt() / std::f64::consts::TAU),
            pixels: self.pixels,
            missing: self.missing,
        }
    }
}

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RMSE {:.4} px/axis (inliers {:.4}), {:.3} % > 1 px, RMSE(T) {:.4}, RMSE(D) {:.4} ({} px, {} missing)",
            self.rmse_px,
            self.inlier_rmse_px,
            100.0 * self.gross_fraction,
            self.rmse_transmission,
            self.rmse_darkfield,
            self.pixels,
            self.missing
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn missing_pixels_are_gross_and_left_out_of_the_rmse() {
        let zero = Array2::<f32>::zeros((4, 4));
        let one = Array2::<f32>::ones((4, 4));
        let mut dx = Array2::<f32>::from_elem((4, 4), 0.5);
        dx[[1, 1]] = f32::NAN;
        dx[[2, 2]] = 2.0;
        let est = Contrasts {
            dx: dx.view(),
            dy: zero.view(),
            transmission: one.view(),
            darkfield: one.view(),
        };
        let truth = Contrasts {
            dx: zero.view(),
            ..est
        };
        let mut a = Accuracy::default();
        a.add(&est, &truth, 1).unwrap();
        let small = Array2::<f32>::zeros((3, 4));
        let wrong = Contrasts {
            dy: small.view(),
            ..truth
        };
        assert!(a.add(&est, &wrong, 1).is_err());
        assert_eq!(a.errors().pixels, 4, "a refused pair adds nothing");
        let e = a.errors();
        // Interior 2x2: one missing, one 2 px off, two 0.5 px off.
        assert_eq!((e.pixels, e.missing), (4, 1));
        assert_eq!(e.gross_fraction, 0.5);
        let rmse = ((2.0f64 * 0.25 + 4.0) / 3.0 / 2.0).sqrt();
        assert!((e.rmse_px - rmse).abs() < 1e-12, "{e}");
        assert!((e.inlier_rmse_px - (2.0f64 * 0.25 / 2.0 / 2.0).sqrt()).abs() < 1e-12);
        assert_eq!(e.phase_rms_waves, None);
        assert_eq!(e.rmse_transmission, 0.0);
    }

    #[test]
    fn phase_error_ignores_the_constant_and_counts_waves() {
        let truth = Array2::from_shape_fn((6, 6), |(y, x)| (y * x) as f32);
        let mut est = truth.mapv(|v| v + 3.0);
        est[[2, 2]] += std::f32::consts::TAU;
        est[[3, 3]] = f32::NAN;
        let mut a = Accuracy::default();
        a.add_phase(est.view(), truth.view(), 1).unwrap();
        // 15 finite interior pixels, one a wave off: mean shift 1/15 wave.
        let m = 1.0 / 15.0;
        let rms = ((14.0 * m * m + (1.0 - m) * (1.0 - m)) / 15.0f64).sqrt();
        let got = a.errors().phase_rms_waves.unwrap();
        assert!((got - rms).abs() < 1e-6, "{got} vs {rms}");
    }
}
