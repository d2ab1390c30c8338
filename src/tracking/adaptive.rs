//! A second fit, with a smaller window, where the first fits badly.
//!
//! Where the displacement varies steeply (gradients near 1 px/px at object edges) the
//! pattern inside the window is stretched, so no single shift fits the whole window: the
//! window's compromise can be a whole pixel off the centre pixel's shift, and its residual
//! is then several times the noise. A window of half the size follows the centre pixel.
//! Its estimate replaces the first where it explains the data at least twice as well:
//! between windows of 3×3 and 1 px over 20 frames, fitting fewer values lowers the
//! expected noise residual by under 5 %, so a factor 2 comes from the model, not chance.

use rayon::prelude::*;

use super::refine::{Workspace, fit_at};
use super::search::{Stacks, local_search};
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
    let small = Params {
        window: p.window / 2,
        ..*p
    };
    if p.window == 0 || st.n * (2 * small.window + 1).pow(2) < MIN_VALUES {
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
    let misfits: Vec<(usize, usize)> = out
        .residual
        .indexed_iter()
        .filter(|&(_, &r)| r > threshold)
        .map(|(yx, _)| yx)
        .collect();
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
