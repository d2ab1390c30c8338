//! The network's guard: pixels whose estimate the signal model does not explain are solved
//! again by the tracker's cost, starting from the estimate.
//!
//! Why: a network can be wrong over wide areas where its training data had nothing alike
//! (a lens's smooth field of several px), and its maps do not say so; the model residual
//! does. From the estimate's whole-pixel shift, a ±2 px search moves downhill (recentred
//! on its minimum while that lies on its edge, so a few px of error are recovered), then
//! the tracker's sub-pixel refinement. The new fit replaces the old one only where it
//! explains the data clearly better over the tracker's window (T and D fitted to both
//! shifts alike):
//! a single pixel's residual cannot judge, as at N = 2 its two values fit almost any shift.

use rayon::prelude::*;

use super::Params;
use super::refine::{Workspace, fit_at};
use super::search::{Stacks, local_search};
use crate::model::Fit;

/// Half-width (px) of each local search.
const REACH: isize = 2;
/// Recentred searches at most, after the first: a path of up to 10 px.
const MOVES: usize = 4;
/// A new fit within a pixel of the estimate replaces it where the estimate's window
/// residual is over this many times the new one's: the tracker's shift minimises that
/// residual by construction, so a smaller margin would trade good estimates for the
/// tracker's noise. A fit over a pixel away replaces it wherever its residual is lower.
const BETTER: f32 = 1.25;

/// A pixel solved again: where, its `[dx, dy, T, D]` and its residual ([`Fit::residual_at`]).
pub struct Solved {
    pub y: usize,
    pub x: usize,
    pub estimate: [f32; 4],
    pub residual: f32,
}

/// Solves `pixels` (y, x) again from their `estimate`, keeping the fits that explain the
/// window better than it. `params.max_shift` bounds the shifts searched; pixels within
/// `params.window` of the border are left alone.
pub fn resolve(
    reference: ndarray::ArrayView3<f32>,
    sample: ndarray::ArrayView3<f32>,
    params: &Params,
    fit: &Fit,
    estimate: &crate::model::Contrasts,
    pixels: &[(usize, usize)],
) -> Vec<Solved> {
    let (_, h, w) = reference.dim();
    let reference = reference.as_standard_layout();
    let sample = sample.as_standard_layout();
    let clock = std::time::Instant::now();
    let light = Some(fit.illumination());
    // Its noise level stays 0 (no noise correction): the few pixels solved here have no
    // grid of converged fits to estimate it from, and their errors are gross, not biases.
    let st = Stacks::without_sums(reference.view(), sample.view(), params, light);
    log::debug!(
        "resolve: B-spline coefficients in {:.2} s",
        clock.elapsed().as_secs_f64()
    );
    let nw = params.window;
    pixels
        .par_iter()
        .filter(|&&(y, x)| y >= nw && x >= nw && y + nw < h && x + nw < w)
        .map_init(Workspace::default, |ws, &(y, x)| {
            let (dx, dy) = (estimate.dx[[y, x]], estimate.dy[[y, x]]);
            let known = dx.is_finite() && dy.is_finite();
            let mut centre = match known {
                true => [dy.round() as isize, dx.round() as isize],
                false => [0, 0],
            };
            let mut found = local_search(&st, params, y, x, centre, REACH);
            for _ in 0..MOVES {
                let [by, bx] = found.0;
                if (by - centre[0]).abs() < REACH && (bx - centre[1]).abs() < REACH {
                    break;
                }
                centre = found.0;
                found = local_search(&st, params, y, x, centre, REACH);
            }
            let (base, fine) = found;
            let start = fine.unwrap_or([base[0] as f32, base[1] as f32]);
            let f = fit_at(&st, params, y, x, start, fine.is_some(), ws);
            let old = match known {
                true => fit_at(&st, params, y, x, [dy, dx], false, ws).residual,
                false => f32::NAN,
            };
            let new = [f.shift[1], f.shift[0], f.transmission, f.darkfield];
            let moved = (new[0] - dx).hypot(new[1] - dy) > 1.0;
            let margin = if moved { 1.0 } else { BETTER };
            let better = f.residual * margin < old || (old.is_nan() && f.residual.is_finite());
            better.then(|| Solved {
                y,
                x,
                estimate: new,
                residual: fit.residual_at(y, x, new),
            })
        })
        .flatten()
        .collect()
}
