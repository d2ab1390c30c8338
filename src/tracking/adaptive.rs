//! Second fits where the first fits badly.
//!
//! Where the displacement varies steeply (gradients near 1 px/px at object edges) or jumps
//! (a lens's rim, an object's edge), no single shift fits the whole window: the window's
//! compromise can be pixels off the centre pixel's shift, and its residual is then several
//! times the noise. Two remedies, each kept only where it explains the data at least twice
//! as well:
//! - a window of half the size, which follows the centre pixel (when it still pools enough
//!   values): between windows of 3×3 and 1 px over 20 frames, fitting fewer values lowers
//!   the expected noise residual by under 5 %, so a factor 2 comes from the model, not
//!   chance;
//! - the windows that contain the pixel but are centred on a neighbour ("shiftable
//!   windows", Bobick & Intille, IJCV 33, 181–200, 1999): near a jump one of them lies on
//!   the pixel's own side, and its fit is the neighbour's. The estimate is the neighbour's
//!   (off by the displacement's gradient times at most Nw px), not a mixture of both sides.
//!   At N = 5 with a 3×3 window this removes the gross errors at a 4 px lens rim (0.82 % of
//!   the pixels more than 1 px off, all within 2 px of the rim).

use rayon::prelude::*;

use super::refine::{Workspace, fit_at, pixel_error};
use super::search::{Stacks, local_search};
use super::window::neighbours;
use super::{Output, Params, Status};

/// A residual this many times the median marks a fit dominated by model error (a good
/// fit's residual is the local noise, which varies little across the image).
const MISFIT: f32 = 3.0;
/// The smaller window needs at least this many values per pixel (the single-pixel fit of
/// the paper's N = 20): with fewer, its residual is lowered by overfitting.
const MIN_VALUES: usize = 20;
/// The second search covers ±this many px around the first estimate.
const REACH: isize = 2;

/// Refits the misfits of `out`, the fit of `st` with `p.window`.
pub(super) fn refit_misfits(st: &Stacks, p: &Params, out: &mut Output) {
    // A single pixel's fit has no window to shrink or shift.
    if p.window == 0 {
        return;
    }
    let mut residuals: Vec<f32> = out
        .residual
        .iter()
        .copied()
        .filter(|r| r.is_finite())
        .collect();
    if residuals.is_empty() {
        return;
    }
    let mid = residuals.len() / 2;
    let threshold = MISFIT * *residuals.select_nth_unstable_by(mid, f32::total_cmp).1;
    refit_smaller(st, p, out, threshold);
    borrow_shifted_windows(st, p, out, threshold);
}

/// The pixels whose residual is over `threshold`.
fn misfits(out: &Output, threshold: f32) -> Vec<(usize, usize)> {
    out.residual
        .indexed_iter()
        .filter(|&(_, &r)| r > threshold)
        .map(|(yx, _)| yx)
        .collect()
}

/// Refits the misfits with a window of half the size.
fn refit_smaller(st: &Stacks, p: &Params, out: &mut Output, threshold: f32) {
    let small = Params {
        window: p.window / 2,
        ..*p
    };
    if st.n * (2 * small.window + 1).pow(2) < MIN_VALUES {
        return;
    }
    let misfits = misfits(out, threshold);
    if misfits.is_empty() {
        return;
    }
    let st_small = st.with_window(&small);
    let refits: Vec<_> = misfits
        .par_iter()
        .filter_map(|&(y, x)| {
            let start = [
                out.dy[[y, x]].round() as isize,
                out.dx[[y, x]].round() as isize,
            ];
            let d = local_search(&st_small, &small, y, x, start, REACH).1?;
            let fit = fit_at(&st_small, &small, y, x, d, true, &mut Workspace::default());
            (fit.residual < 0.5 * out.residual[[y, x]]).then_some((y, x, fit))
        })
        .collect();
    for (y, x, fit) in &refits {
        let (y, x) = (*y, *x);
        [out.dy[[y, x]], out.dx[[y, x]]] = fit.shift;
        out.transmission[[y, x]] = fit.transmission;
        out.darkfield[[y, x]] = fit.darkfield;
        out.residual[[y, x]] = fit.residual;
        out.status[[y, x]] = Status::Converged as u8;
    }
    log::debug!(
        "tracking: {} of {} misfit pixel(s) refitted with window {}",
        refits.len(),
        misfits.len(),
        small.window
    );
}

/// Gives each misfit the fit of a neighbour within `nw` px (Chebyshev) whose window fits
/// at least twice as well and explains the pixel's own values best, where it explains them
/// better than the pixel's own fit. All choices are made on the fits as they stand, so that
/// no estimate is borrowed twice.
fn borrow_shifted_windows(st: &Stacks, p: &Params, out: &mut Output, threshold: f32) {
    let (h, w, nw) = (st.h, st.w, p.window);
    let misfits = misfits(out, threshold);
    let converged = Status::Converged as u8;
    let maps = [
        &out.dx,
        &out.dy,
        &out.transmission,
        &out.darkfield,
        &out.residual,
    ];
    // All read before any is written.
    let borrowed: Vec<((usize, usize), [f32; 5])> = misfits
        .par_iter()
        .map_init(Workspace::default, |ws, &(y, x)| {
            let limit = 0.5 * out.residual[[y, x]];
            let mut error = |q: (usize, usize)| {
                let [dx, dy, t, d, _] = maps.map(|m| m[q]);
                pixel_error(st, p.dark_field, (y, x), q, [dy, dx, t, d], ws)
            };
            let own = error((y, x));
            neighbours((y, x), nw, (h, w), 0)
                .filter(|&q| out.status[q] == converged && out.residual[q] < limit)
                .map(|q| (error(q), q))
                .filter(|&(e, _)| e < own)
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, q)| ((y, x), maps.map(|m| m[q])))
        })
        .flatten()
        .collect();
    for &(p, fit) in &borrowed {
        let maps = [
            &mut out.dx,
            &mut out.dy,
            &mut out.transmission,
            &mut out.darkfield,
            &mut out.residual,
        ];
        for (m, v) in maps.into_iter().zip(fit) {
            m[p] = v;
        }
        out.status[p] = converged;
    }
    log::debug!(
        "tracking: {} of {} misfit pixel(s) given a neighbour's window",
        borrowed.len(),
        misfits.len()
    );
}
