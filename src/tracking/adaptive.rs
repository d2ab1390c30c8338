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

use std::ops::Range;

use ndarray::s;
use rayon::prelude::*;

use super::refine::{Workspace, fit_at, pixel_error};
use super::search::{Stacks, local_search};
use super::window::neighbours;
use super::{Output, Params, Status};

/// A residual this many times the median marks a fit dominated by model error (a good
/// fit's residual is the local noise, which varies little across the image).
pub(super) const MISFIT: f32 = 3.0;
/// The smaller window needs at least this many values per pixel (the single-pixel fit of
/// the paper's N = 20): with fewer, its residual is lowered by overfitting.
const MIN_VALUES: usize = 20;
/// The second search covers ±this many px around the first estimate.
const REACH: isize = 2;

/// The misfits' second fits, one band of rows at a time ([`Refits::band`]): the image is
/// refined and its misfits refitted over one band of the reference's coefficients.
pub(super) struct Refits {
    p: Params,
    /// The smaller window's parameters, where it pools enough values.
    small: Option<Params>,
    threshold: f32,
    /// The last rows of the band before, whose misfits take their neighbours' windows once
    /// the next band is refitted (their neighbours within the window are then final).
    deferred: Option<Range<usize>>,
    /// Estimates borrowed, applied at the end so that none is borrowed twice.
    borrowed: Vec<((usize, usize), [f32; 5])>,
    misfits: usize,
    refitted: usize,
}

impl Refits {
    /// For the fit with `p` of `n` frames whose typical relative residual is
    /// `median_residual`; `None` where a single pixel's fit has no window to shrink or shift.
    pub(super) fn new(p: &Params, n: usize, median_residual: f32) -> Option<Self> {
        let small = Params {
            window: p.window / 2,
            ..*p
        };
        (p.window > 0).then(|| Refits {
            p: *p,
            small: (n * (2 * small.window + 1).pow(2) >= MIN_VALUES).then_some(small),
            threshold: MISFIT * median_residual,
            deferred: None,
            borrowed: Vec::new(),
            misfits: 0,
            refitted: 0,
        })
    }

    /// Refits the misfits of `rows`, just refined over `st`'s coefficients, and gives them
    /// their neighbours' windows, but for the last `window` rows before the image's end,
    /// whose turn comes with the next band's.
    pub(super) fn band(&mut self, st: &Stacks, rows: Range<usize>, out: &mut Output) {
        let misfits = misfits(out, rows.clone(), self.threshold);
        self.misfits += misfits.len();
        if let Some(small) = &self.small {
            self.refitted += refit_smaller(st, small, out, &misfits);
        }
        let first = self.deferred.take().map_or(rows.start, |d| d.start);
        let last = match rows.end == st.h {
            true => rows.end,
            false => rows.end.saturating_sub(self.p.window).max(rows.start),
        };
        self.borrow(st, first..last, out);
        self.deferred = (last < rows.end).then_some(last..rows.end);
    }

    /// Every borrowed estimate applied.
    pub(super) fn finish(self, out: &mut Output) {
        debug_assert!(
            self.deferred.is_none(),
            "the last band borrows all its rows"
        );
        for &(q, fit) in &self.borrowed {
            set(out, q, fit);
        }
        if let Some(small) = &self.small {
            log::debug!(
                "tracking: {} of {} misfit pixel(s) refitted with window {}",
                self.refitted,
                self.misfits,
                small.window
            );
        }
        log::debug!(
            "tracking: {} misfit pixel(s) given a neighbour's window",
            self.borrowed.len()
        );
    }

    fn borrow(&mut self, st: &Stacks, rows: Range<usize>, out: &Output) {
        let misfits = misfits(out, rows, self.threshold);
        let borrowed = borrow_shifted_windows(st, &self.p, out, &misfits);
        self.borrowed.extend(borrowed);
    }
}

/// The pixels of `rows` whose residual is over `threshold`.
fn misfits(out: &Output, rows: Range<usize>, threshold: f32) -> Vec<(usize, usize)> {
    let y0 = rows.start;
    out.residual
        .slice(s![rows, ..])
        .indexed_iter()
        .filter(|&(_, &r)| r > threshold)
        .map(|((y, x), _)| (y0 + y, x))
        .collect()
}

/// Refits `misfits` with the window of `small`, where that fits at least twice as well:
/// how many.
fn refit_smaller(
    st: &Stacks,
    small: &Params,
    out: &mut Output,
    misfits: &[(usize, usize)],
) -> usize {
    let st_small = st.with_kernel(small);
    let refits: Vec<_> = misfits
        .par_iter()
        .filter_map(|&(y, x)| {
            let start = [
                out.dy[[y, x]].round() as isize,
                out.dx[[y, x]].round() as isize,
            ];
            let d = local_search(&st_small, small, y, x, start, REACH).1?;
            let fit = fit_at(&st_small, small, y, x, d, true, &mut Workspace::default());
            (fit.residual < 0.5 * out.residual[[y, x]]).then_some((y, x, fit))
        })
        .collect();
    for &(y, x, ref f) in &refits {
        let [dy, dx] = f.shift;
        set(
            out,
            (y, x),
            [dx, dy, f.transmission, f.darkfield, f.residual],
        );
    }
    refits.len()
}

/// The fits `fit` returns for `pixels` (`[dx, dy, T, D, residual]`, from the band's stacks
/// and the estimates before any is applied), computed one band of the reference's
/// coefficients at a time and then applied to `out`. Their count, and `spare` (memory for
/// the coefficients) handed back.
pub(super) fn refit_by_bands(
    stacks: &Stacks,
    p: &Params,
    out: &mut Output,
    pixels: &[(usize, usize)],
    mut spare: Vec<f32>,
    fit: impl Fn(&Stacks, &Output, (usize, usize)) -> Option<[f32; 5]> + Sync,
) -> (usize, Vec<f32>) {
    let mut fits: Vec<((usize, usize), [f32; 5])> = Vec::new();
    for run in super::bands::runs(pixels, p) {
        let rows = super::bands::coefficient_rows(super::bands::rows_of(run), p, stacks.h);
        let st = stacks.with_rows(rows, spare);
        let out = &*out;
        fits.par_extend(
            run.par_iter()
                .filter_map(|&q| fit(&st, out, q).map(|f| (q, f))),
        );
        spare = st.into_spare();
    }
    for &(q, f) in &fits {
        set(out, q, f);
    }
    (fits.len(), spare)
}

/// `[dx, dy, T, D, residual]` of a fit at pixel (y, x) with shift `[dy, dx]` (px), `a` and
/// `k` of `S ≈ a + K·R` (K the transmission without dark-field) and its relative residual.
pub(super) fn contrasts(
    st: &Stacks,
    dark_field: bool,
    (y, x): (usize, usize),
    shift: [f32; 2],
    (a, k): (f64, f64),
    residual: f64,
) -> [f32; 5] {
    let (t, d) = match dark_field {
        true => crate::model::from_affine(a, k, super::refine::illumination_at(st, y, x, shift)),
        false => (k, f64::NAN),
    };
    let [dy, dx] = shift;
    [dx, dy, t as f32, d as f32, residual as f32]
}

/// Pixel `q`'s `[dx, dy, T, D, residual]`, a fit that converged.
pub(super) fn set(out: &mut Output, q: (usize, usize), fit: [f32; 5]) {
    let maps = [
        &mut out.dx,
        &mut out.dy,
        &mut out.transmission,
        &mut out.darkfield,
        &mut out.residual,
    ];
    for (m, v) in maps.into_iter().zip(fit) {
        m[q] = v;
    }
    out.status[q] = Status::Converged as u8;
}

/// The fit of a neighbour within `nw` px (Chebyshev) for each of `misfits`, whose window
/// fits at least twice as well and explains the pixel's own values best, where it explains
/// them better than the pixel's own fit: `[dx, dy, T, D, residual]`.
fn borrow_shifted_windows(
    st: &Stacks,
    p: &Params,
    out: &Output,
    misfits: &[(usize, usize)],
) -> Vec<((usize, usize), [f32; 5])> {
    let (h, w, nw) = (st.h, st.w, p.window);
    let converged = Status::Converged as u8;
    let maps = [
        &out.dx,
        &out.dy,
        &out.transmission,
        &out.darkfield,
        &out.residual,
    ];
    misfits
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
        .collect()
}
