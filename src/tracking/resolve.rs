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
//! Where the window straddles a jump the network smoothed over (a lens's rim), a suspect
//! then takes a neighbour's window on its side ([`shifted_windows`]).

use std::collections::HashMap;

use rayon::prelude::*;

use super::refine::{Workspace, fit_at, pixel_error};
use super::search::{Stacks, local_search};
use super::window::neighbours;
use super::{Params, bands};
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
/// Peak memory of [`resolve`] on stacks `[n, h, w]` (bytes): one band of the reference's
/// B-spline coefficients.
pub(crate) fn memory_bytes(params: &Params, (n, h, w): (usize, usize, usize)) -> u64 {
    bands::memory_bytes(params, (n, h, w))
}

/// A pixel solved again: where, its `[dx, dy, T, D]` and its residual ([`Fit::residual_at`]).
pub struct Solved {
    pub y: usize,
    pub x: usize,
    pub estimate: [f32; 4],
    pub residual: f32,
}

/// Solves `pixels` (y, x) again from their `estimate`, keeping the fits that explain the
/// window better than it, or a neighbour's window next to a jump ([`shifted_windows`]).
/// `params.max_shift` bounds the shifts searched; pixels within `params.window` of the
/// border are left alone. In no particular order.
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
    let light = Some(fit.illumination());
    let nw = params.window;
    let mut pixels: Vec<(usize, usize)> = pixels
        .iter()
        .copied()
        .filter(|&(y, x)| y >= nw && x >= nw && y + nw < h && x + nw < w)
        .collect();
    pixels.sort_unstable();
    let (mut solved, mut coefficients_s) = (Vec::new(), 0.0);
    for band in bands::runs(&pixels, params) {
        let rows = bands::coefficient_rows(bands::rows_of(band), params, h);
        let clock = std::time::Instant::now();
        // Its noise level stays 0 (no noise correction): the few pixels solved here have
        // no grid of converged fits to estimate it from, and their errors are gross, not
        // biases.
        let st = Stacks::without_sums(reference.view(), sample.view(), params, light, rows);
        coefficients_s += clock.elapsed().as_secs_f64();
        let mut fits: HashMap<(usize, usize), Solved> = band
            .par_iter()
            .map_init(Workspace::default, |ws, &(y, x)| {
                solve(&st, params, fit, estimate, (y, x), ws)
            })
            .flatten()
            .map(|s| ((s.y, s.x), s))
            .collect();
        let shifted = shifted_windows(&st, params, fit, estimate, band, &fits);
        fits.extend(shifted.into_iter().map(|s| ((s.y, s.x), s)));
        solved.extend(fits.into_values());
    }
    log::debug!("resolve: B-spline coefficients in {coefficients_s:.2} s");
    solved
}

/// Pixel (y, x) solved again from its estimate: the new fit, where it explains the window
/// better.
fn solve(
    st: &Stacks,
    params: &Params,
    fit: &Fit,
    estimate: &crate::model::Contrasts,
    (y, x): (usize, usize),
    ws: &mut Workspace,
) -> Option<Solved> {
    let (dx, dy) = (estimate.dx[[y, x]], estimate.dy[[y, x]]);
    let known = dx.is_finite() && dy.is_finite();
    let mut centre = match known {
        true => [dy.round() as isize, dx.round() as isize],
        false => [0, 0],
    };
    let mut found = local_search(st, params, y, x, centre, REACH);
    for _ in 0..MOVES {
        let [by, bx] = found.0;
        if (by - centre[0]).abs() < REACH && (bx - centre[1]).abs() < REACH {
            break;
        }
        centre = found.0;
        found = local_search(st, params, y, x, centre, REACH);
    }
    let (base, fine) = found;
    let start = fine.unwrap_or([base[0] as f32, base[1] as f32]);
    let f = fit_at(st, params, y, x, start, fine.is_some(), ws);
    // An estimate beyond the reach is not judged (its rows are not in the band): any
    // finite fit replaces it.
    let old = match known && dy.abs() <= bands::reach(params) as f32 {
        true => fit_at(st, params, y, x, [dy, dx], false, ws).residual,
        false => f32::NAN,
    };
    let new = [f.shift[1], f.shift[0], f.transmission, f.darkfield];
    let moved = (new[0] - dx).hypot(new[1] - dy) > 1.0;
    let factor = if moved { 1.0 } else { BETTER };
    let better = f.residual * factor < old || (old.is_nan() && f.residual.is_finite());
    better.then(|| Solved {
        y,
        x,
        estimate: new,
        residual: fit.residual_at(y, x, new),
    })
}

/// The suspects of `band` whose window straddles a displacement jump (a lens's rim, which
/// the network smoothed over): each takes the fit of a neighbour's window, which contains
/// it, where that window fits at least twice as well as the pixel's own at its estimate and
/// the neighbour's model explains the pixel's own values better (the tracker's shiftable
/// windows, `adaptive.rs`). The estimates are the network's, or `solved`'s where it has one.
/// Without the window's evidence, a pixel's own two or three values at N = 2–3 preferred a
/// neighbour's estimate by chance often enough to add gross errors.
fn shifted_windows(
    st: &Stacks,
    params: &Params,
    fit: &Fit,
    estimate: &crate::model::Contrasts,
    band: &[(usize, usize)],
    solved: &HashMap<(usize, usize), Solved>,
) -> Vec<Solved> {
    let at = |q: (usize, usize)| {
        solved.get(&q).map_or(
            [
                estimate.dx[q],
                estimate.dy[q],
                estimate.transmission[q],
                estimate.darkfield[q],
            ],
            |s| s.estimate,
        )
    };
    let (h, w, nw) = (st.h, st.w, params.window);
    // Shifts whose rows lie in the band's coefficients (NaN is not).
    let reach = bands::reach(params) as f32;
    let within = |e: &[f32; 4]| e[0].abs() <= reach && e[1].abs() <= reach;
    band.par_iter()
        .map_init(Workspace::default, |ws, &(y, x)| {
            let own = at((y, x));
            if !within(&own) {
                return None;
            }
            let own_model = [own[1], own[0], own[2], own[3]];
            let own_error = pixel_error(st, params.dark_field, (y, x), (y, x), own_model, ws);
            // Neighbours whose window lies inside the image (as the pixels' do).
            // The pixel's own values first (one pixel's sums), the windows' fits only for
            // the neighbours that explain them better.
            let mut limit = None;
            let mut best: Option<(f64, [f32; 4])> = None;
            for q in neighbours((y, x), nw, (h, w), nw).filter(|&q| q != (y, x)) {
                let e = at(q);
                let moved = (e[0] - own[0]).abs() > 0.5 || (e[1] - own[1]).abs() > 0.5;
                if !moved || !within(&e) {
                    continue;
                }
                let model = [e[1], e[0], e[2], e[3]];
                let error = pixel_error(st, params.dark_field, (y, x), q, model, ws);
                let better = error < own_error && best.is_none_or(|b| error < b.0);
                if !better {
                    continue;
                }
                let limit = *limit.get_or_insert_with(|| {
                    0.5 * fit_at(st, params, y, x, [own[1], own[0]], false, ws).residual
                });
                let f = fit_at(st, params, q.0, q.1, [e[1], e[0]], false, ws);
                if f.residual < limit {
                    best = Some((error, [e[0], e[1], f.transmission, f.darkfield]));
                }
            }
            best.map(|(_, new)| Solved {
                y,
                x,
                estimate: new,
                residual: fit.residual_at(y, x, new),
            })
        })
        .flatten()
        .collect()
}
