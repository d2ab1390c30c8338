//! Bands of rows over which the reference's B-spline coefficients are computed, so that
//! memory follows the band, not the image: at 2048² × 20 frames the whole reference's
//! coefficients take 320 MiB (as much as the reference), one band's 92 MiB.

use std::ops::Range;
use std::sync::Mutex;

use ndarray::ArrayView3;

use super::Params;
use super::search::Stacks;
use super::spline_bias::SplineBias;
use crate::model::Illumination;

/// Rows of pixels fitted over one band of coefficients.
pub(super) const ROWS: usize = 512;

/// The shifts (px, per axis) a fit may reach: the search's, 1 px of the quadratic's vertex
/// and 2 px of sub-pixel steps beyond it.
pub(super) fn reach(params: &Params) -> usize {
    params.max_shift.saturating_add(3)
}

/// Rows a band's coefficients extend beyond its pixels: the [`reach`], the window (four
/// times: the affine window's gradient stretches it, `affine.rs`) and the interpolation's
/// taps, and 12 rows where the band's prefilter settles (its pole, 0.268, to the 12th
/// power: 1.4·10⁻⁷).
fn margin(params: &Params) -> usize {
    reach(params)
        .saturating_add(params.window.saturating_mul(4))
        .saturating_add(14)
}

/// The rows of coefficients that the fits of the pixels in rows `pixels` read.
pub(super) fn coefficient_rows(pixels: Range<usize>, params: &Params, h: usize) -> Range<usize> {
    let margin = margin(params);
    pixels.start.saturating_sub(margin)..pixels.end.saturating_add(margin).min(h)
}

/// Bands of [`ROWS`] rows of an image `h` rows high.
pub(super) fn all(h: usize) -> impl Iterator<Item = Range<usize>> {
    (0..h).step_by(ROWS).map(move |y| y..(y + ROWS).min(h))
}

/// Pixels `(y, x)` sorted by row, in runs that one band of coefficients serves: within one
/// band of [`ROWS`] rows, and split where rows lie so far apart that their coefficients
/// would not overlap.
pub(super) fn runs<'a>(
    pixels: &'a [(usize, usize)],
    params: &Params,
) -> impl Iterator<Item = &'a [(usize, usize)]> {
    let gap = margin(params).saturating_mul(2);
    pixels.chunk_by(move |a, b| a.0 / ROWS == b.0 / ROWS && b.0 - a.0 <= gap)
}

/// The rows of the pixels of a run from [`runs`].
pub(super) fn rows_of(run: &[(usize, usize)]) -> Range<usize> {
    run.first().map_or(0, |p| p.0)..run.last().map_or(0, |p| p.0 + 1)
}

/// Bytes of one band's coefficients on stacks `[n, h, w]`.
pub(super) fn memory_bytes(params: &Params, (n, h, w): (usize, usize, usize)) -> u64 {
    let rows = h.min(ROWS.saturating_add(margin(params).saturating_mul(2)));
    crate::memory::product(&[n, rows, w, 4])
}

/// The reference's B-spline coefficients for a series of fits on the same stacks (the
/// guard's steps): the whole image's, computed once, where the caller has the memory
/// ([`Coefficients::whole_bytes`]); else each run's band, computed for it.
pub(crate) struct Coefficients<'a> {
    reference: ArrayView3<'a, f32>,
    sample: ArrayView3<'a, f32>,
    light: &'a Illumination,
    whole: Option<Stacks<'a>>,
    /// The reference's noise level ([`Stacks::noise`]) and the B-spline's bias on the fits'
    /// shifts for its pattern: none until [`Coefficients::set_noise`].
    noise: f64,
    spline: Option<SplineBias>,
    /// The last band's memory, which the next band (of this step or the next) is written
    /// over: a band is larger than the allocator ever reuses (98 MB at 2048² × 20), and
    /// fresh memory takes a page fault per page (about 0.05 s a band there).
    spare: Mutex<Vec<f32>>,
}

impl<'a> Coefficients<'a> {
    /// For fits with `params` on stacks in standard layout, whose reference's illumination
    /// is `light`; the whole image's at once when `whole`.
    pub fn new(
        reference: ArrayView3<'a, f32>,
        sample: ArrayView3<'a, f32>,
        params: &Params,
        light: &'a Illumination,
        whole: bool,
    ) -> Self {
        let h = reference.dim().1;
        let whole = whole.then(|| {
            Stacks::without_sums(reference, sample, params, Some(light), 0..h, Vec::new())
        });
        Coefficients {
            reference,
            sample,
            light,
            whole,
            noise: 0.0,
            spline: None,
            spare: Mutex::default(),
        }
    }

    /// The reference's noise variance per unit of normalised intensity, which the fits on
    /// these coefficients then allow for, as the tracker's own do (the noise's pull on the
    /// sub-pixel step, and the spline's bias taken off their shifts: [`Self::unbiased`]).
    pub(super) fn set_noise(&mut self, noise: f64) {
        self.noise = noise;
        self.spline = Some(SplineBias::estimate(
            self.reference,
            self.light.scale(),
            noise,
        ));
    }

    /// A fit's shift `[dy, dx]` (px) less the B-spline's bias, once the noise is set.
    pub(super) fn unbiased(&self, shift: [f32; 2]) -> [f32; 2] {
        match &self.spline {
            Some(spline) => spline.correct(shift),
            None => shift,
        }
    }

    /// The stacks' `[n, h, w]`.
    pub fn dim(&self) -> (usize, usize, usize) {
        self.reference.dim()
    }

    /// Bytes of the whole image's coefficients on stacks `[n, h, w]`.
    pub fn whole_bytes((n, h, w): (usize, usize, usize)) -> u64 {
        crate::memory::product(&[n, h, w, 4])
    }

    /// Stacks with the coefficients of `rows` at least, for fits with `params`: the whole
    /// image's where held, else `rows`', written over the last band's memory (which the
    /// band hands back when dropped).
    pub(super) fn stacks(&self, params: &Params, rows: Range<usize>) -> Band<'_, 'a> {
        let mut stacks = match &self.whole {
            Some(whole) => whole.with_kernel(params),
            None => Stacks::without_sums(
                self.reference,
                self.sample,
                params,
                Some(self.light),
                rows,
                std::mem::take(&mut self.spare.lock().expect("not poisoned")),
            ),
        };
        stacks.noise = self.noise;
        Band {
            stacks: Some(stacks),
            owner: self,
        }
    }
}

/// Stacks from [`Coefficients::stacks`]; their band's memory goes back to it when dropped.
pub(super) struct Band<'c, 'a> {
    stacks: Option<Stacks<'a>>,
    owner: &'c Coefficients<'a>,
}

impl<'a> std::ops::Deref for Band<'_, 'a> {
    type Target = Stacks<'a>;

    fn deref(&self) -> &Stacks<'a> {
        self.stacks.as_ref().expect("held until dropped")
    }
}

impl Drop for Band<'_, '_> {
    fn drop(&mut self) {
        if let (Some(stacks), None) = (self.stacks.take(), &self.owner.whole) {
            *self.owner.spare.lock().unwrap_or_else(|e| e.into_inner()) = stacks.into_spare();
        }
    }
}
