//! The multi-contrast signal model, `S(r) = T·(M + D·(R(r − d) − M))` (docs/design.md §1),
//! in one place: the simulator renders with it, the tracker inverts it, and both engines'
//! `quality` map is its residual, computed the same way for either engine.
//!
//! M is the illumination: the reference's local mean over a box several pattern cells wide,
//! so that it is not the pattern itself. R(r − d) is Keys-interpolated, as in the simulator.

use ndarray::{Array2, ArrayView2, ArrayView3, ArrayViewMut2, Axis};

use rayon::prelude::*;

use crate::interpolate::{FrameBlock, Taps};

/// Rows per task of the residual maps, and columns per block of them ([`Fit::rows`]).
const BLOCK_ROWS: usize = 64;
const BLOCK_COLUMNS: usize = 256;
/// Pixels beyond a block, on every side, whose reference values its copy holds: pixels
/// displaced by up to this less 2 px along either axis are interpolated from it.
const BLOCK_MARGIN: usize = 12;
/// Frames for which the residual maps read the reference in blocks ([`Fit::rows`]): below,
/// a pixel's frames fill too few vector lanes to pay for the copy; above, a block's copy
/// (at most 6.3 MB a thread) is not worth its memory.
const BLOCK_FRAMES: std::ops::RangeInclusive<usize> = 8..=64;

/// Half-width (px) of the box over which M is estimated: several cells of the usual
/// patterns (a 3×3 window's mean is off by ~10 % on a 7.7 px coded mask).
pub const MEAN_WINDOW_PX: usize = 16;

/// The intensity the model predicts for transmission `t`, dark-field `d`, illumination `m`
/// and displaced reference intensity `r` (same units as `m`).
#[inline]
pub fn predict(t: f32, d: f32, m: f32, r: f32) -> f32 {
    t * (m + d * (r - m))
}

/// T and D from the affine fit `S ≈ a + k·R` at illumination `m`: T·(1 − D)·M = a and
/// T·D = k.
#[inline]
pub(crate) fn from_affine(a: f64, k: f64, m: f64) -> (f64, f64) {
    let t = a / m + k;
    (t, k / t)
}

/// M: the mean of `raw` (`[N, H, W]`, row-major) over frames and a (2·`half_width`+1)² box
/// clipped at the borders, in units of `raw · scale`. Summed in f64 on `raw·scale − 1`, so
/// `scale` should be about 1/mean for precision.
pub(crate) fn local_mean(
    raw: &[f32],
    scale: f32,
    (n, h, w): (usize, usize, usize),
    half_width: usize,
) -> Vec<f32> {
    // The frame sum, frames added in turn (contiguous reads), rows in parallel; then its
    // summed-area table.
    let mut total = crate::memory::written_zeros::<f64>(h * w);
    total.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for i in 0..n {
            let frame = &raw[i * h * w + y * w..][..w];
            for (t, &v) in row.iter_mut().zip(frame) {
                *t += (v * scale - 1.0) as f64;
            }
        }
    });
    crate::neighbourhood::box_sums(total, (h, w), half_width, |sum, count| {
        (1.0 + sum / (n * count) as f64) as f32
    })
}

/// The reference's mean intensity and M, its local mean over frames and a box of
/// `half_width`, in units of that mean: computed once per run and shared by the quality
/// map, the guard and the tracker (each pass reads the whole reference stack).
#[derive(Clone)]
pub(crate) struct Illumination {
    pub mean: f32,
    pub half_width: usize,
    pub m: std::sync::Arc<Vec<f32>>,
}

impl Illumination {
    /// `reference` `[N, H, W]` in standard layout.
    pub fn new(reference: ArrayView3<f32>, half_width: usize) -> Self {
        let mut light = Illumination {
            mean: crate::stack::mean_intensity(reference) as f32,
            half_width,
            m: Default::default(),
        };
        let raw = reference.to_slice().expect("standard layout");
        light.m = std::sync::Arc::new(local_mean(raw, light.scale(), reference.dim(), half_width));
        light
    }

    /// 1 / the mean, which normalises the reference (1 for a zero mean).
    pub fn scale(&self) -> f32 {
        if self.mean.abs() > 0.0 {
            1.0 / self.mean
        } else {
            1.0
        }
    }

    /// `known` where it was computed over `half_width`, else M over that box.
    pub fn reuse(known: Option<&Self>, reference: ArrayView3<f32>, half_width: usize) -> Self {
        match known {
            Some(l) if l.half_width == half_width => l.clone(),
            _ => Illumination::new(reference, half_width),
        }
    }
}

/// The four contrasts, owned, `[H, W]` each.
#[derive(Debug, Clone)]
pub struct ContrastMaps {
    /// Displacement along x (columns) and y (rows), px.
    pub dx: Array2<f32>,
    pub dy: Array2<f32>,
    /// Transmission and dark-field (1 = none).
    pub transmission: Array2<f32>,
    pub darkfield: Array2<f32>,
}

impl ContrastMaps {
    pub fn view(&self) -> Contrasts<'_> {
        Contrasts::new(&self.dx, &self.dy, &self.transmission, &self.darkfield)
    }
}

/// Views of the four contrasts, `[H, W]` each: an estimate or a truth.
#[derive(Clone, Copy)]
pub struct Contrasts<'a> {
    /// Displacement along x (columns) and y (rows), px.
    pub dx: ArrayView2<'a, f32>,
    pub dy: ArrayView2<'a, f32>,
    /// Transmission and dark-field (1 = none).
    pub transmission: ArrayView2<'a, f32>,
    pub darkfield: ArrayView2<'a, f32>,
}

impl<'a> Contrasts<'a> {
    /// Views of dx, dy, T and D.
    pub fn new(
        dx: &'a Array2<f32>,
        dy: &'a Array2<f32>,
        transmission: &'a Array2<f32>,
        darkfield: &'a Array2<f32>,
    ) -> Self {
        Contrasts {
            dx: dx.view(),
            dy: dy.view(),
            transmission: transmission.view(),
            darkfield: darkfield.view(),
        }
    }
}

/// How well an estimate explains the data, per pixel: the RMS over the scan of
/// `S − T·(M + D·(R(r − d) − M))`, relative to the scan mean of S. NaN where the estimate
/// is not finite. Stacks `[N, H, W]` as validated by [`crate::stack::validate_pair`].
pub fn residual(
    reference: ArrayView3<f32>,
    sample: ArrayView3<f32>,
    estimate: &Contrasts,
) -> Array2<f32> {
    let mut out = Array2::zeros(estimate.dx.dim());
    residual_into(reference, sample, estimate, out.view_mut());
    out
}

/// [`residual`] into `out`.
pub fn residual_into(
    reference: ArrayView3<f32>,
    sample: ArrayView3<f32>,
    e: &Contrasts,
    out: ArrayViewMut2<f32>,
) {
    Fit::new(reference, sample, *e).residual_into(out);
}

/// The model at one pixel over the scan.
struct PixelFit {
    n: f64,
    /// Σ (S − prediction)², Σ S², and the mean of S.
    squared_error: f64,
    sum_of_squares: f64,
    mean: f64,
}

impl PixelFit {
    fn relative_rms(&self) -> f32 {
        ((self.squared_error / self.n).sqrt() / self.mean.abs().max(f64::MIN_POSITIVE)) as f32
    }
}

/// An estimate set against the data: the reference in standard layout and its
/// [`Illumination`], computed once for the quality map and the explained share.
pub struct Fit<'a, 'c> {
    raw: ndarray::CowArray<'a, f32, ndarray::Ix3>,
    sample: ArrayView3<'a, f32>,
    e: Contrasts<'c>,
    light: Illumination,
}

impl<'a, 'c> Fit<'a, 'c> {
    /// Stacks `[N, H, W]` as validated by [`crate::stack::validate_pair`].
    pub fn new(
        reference: ArrayView3<'a, f32>,
        sample: ArrayView3<'a, f32>,
        e: Contrasts<'c>,
    ) -> Self {
        Self::with_illumination(reference, sample, e, None)
    }

    /// [`Fit::new`] with the reference's illumination when it is known already (over
    /// [`MEAN_WINDOW_PX`]).
    pub(crate) fn with_illumination(
        reference: ArrayView3<'a, f32>,
        sample: ArrayView3<'a, f32>,
        e: Contrasts<'c>,
        light: Option<&Illumination>,
    ) -> Self {
        let raw = match reference.is_standard_layout() {
            true => ndarray::CowArray::from(reference),
            false => ndarray::CowArray::from(reference.as_standard_layout().into_owned()),
        };
        let light = Illumination::reuse(light, raw.view(), MEAN_WINDOW_PX);
        Fit {
            raw,
            sample,
            e,
            light,
        }
    }

    /// The reference's illumination this fit uses.
    pub(crate) fn illumination(&self) -> &Illumination {
        &self.light
    }

    /// The reference (standard layout) and sample stacks, and the estimate set against them.
    pub(crate) fn parts(&self) -> (ArrayView3<'_, f32>, ArrayView3<'a, f32>, &Contrasts<'c>) {
        (self.raw.view(), self.sample, &self.e)
    }

    /// [`residual`] into `out`.
    pub fn residual_into(&self, mut out: ArrayViewMut2<f32>) {
        let tasks = out
            .axis_chunks_iter_mut(Axis(0), BLOCK_ROWS)
            .into_par_iter();
        tasks.enumerate().for_each(|(k, mut rows)| {
            self.rows(k * BLOCK_ROWS, rows.nrows(), |q, f| {
                rows[q] = f.map_or(f32::NAN, |f| f.relative_rms());
            });
        });
    }

    /// [`residual`] into `out`, and the sample's mean over the scan into `mean` (NaN where
    /// the estimate is not finite).
    pub(crate) fn residual_and_mean_into(
        &self,
        mut out: ArrayViewMut2<f32>,
        mut mean: ArrayViewMut2<f32>,
    ) {
        let tasks = (out
            .axis_chunks_iter_mut(Axis(0), BLOCK_ROWS)
            .into_par_iter())
        .zip(mean.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS));
        tasks.enumerate().for_each(|(k, (mut rows, mut means))| {
            self.rows(k * BLOCK_ROWS, rows.nrows(), |q, f| {
                rows[q] = f.as_ref().map_or(f32::NAN, |f| f.relative_rms());
                means[q] = f.map_or(f32::NAN, |f| f.mean as f32);
            });
        });
    }

    /// The share of the sample's variation over the scan that the estimate explains
    /// (`1 − Σ residual² / Σ (S − mean S)²` per pixel), its median over a grid of about
    /// `pixels` pixels; NaN if no pixel has a finite estimate and varies over the scan.
    /// Simulated scans give 0.85–0.997; a sample that does not hold the reference's
    /// pattern, about 0 or less.
    pub fn explained_share(&self, pixels: usize) -> f32 {
        let (_, h, w) = self.raw.dim();
        let step = ((h * w / pixels.max(1)) as f64).sqrt().max(1.0) as usize;
        let mut shares: Vec<f32> = (0..h)
            .step_by(step)
            .flat_map(|y| (0..w).step_by(step).map(move |x| (y, x)))
            .collect::<Vec<_>>()
            .into_par_iter()
            .filter_map(|(y, x)| {
                let f = self.at(y, x)?;
                let variation = f.sum_of_squares - f.n * f.mean * f.mean;
                (variation > 0.0).then(|| (1.0 - f.squared_error / variation) as f32)
            })
            .collect();
        if shares.is_empty() {
            return f32::NAN;
        }
        let mid = shares.len() / 2;
        *shares.select_nth_unstable_by(mid, f32::total_cmp).1
    }

    /// The residual ([`residual`]'s value) at pixel (y, x) of another estimate
    /// `[dx, dy, T, D]` there.
    pub fn residual_at(&self, y: usize, x: usize, estimate: [f32; 4]) -> f32 {
        self.fit(y, x, estimate)
            .map_or(f32::NAN, |f| f.relative_rms())
    }

    fn at(&self, y: usize, x: usize) -> Option<PixelFit> {
        let e = &self.e;
        self.fit(
            y,
            x,
            [
                e.dx[[y, x]],
                e.dy[[y, x]],
                e.transmission[[y, x]],
                e.darkfield[[y, x]],
            ],
        )
    }

    fn fit(&self, y: usize, x: usize, estimate: [f32; 4]) -> Option<PixelFit> {
        Some(self.fit_model(y, x, &self.model(y, x, estimate)?))
    }

    /// The fit of pixel (y, x)'s `model`, frame by frame.
    fn fit_model(&self, y: usize, x: usize, model: &Model) -> PixelFit {
        let raw = self.raw.as_slice().expect("standard layout");
        let (n, h, w) = self.raw.dim();
        let mut sums = Sums::default();
        let values = self.sample.slice(ndarray::s![.., y, x]);
        for (frame, &s) in raw.chunks_exact(h * w).zip(values.iter()) {
            sums.add(model, frame, s);
        }
        sums.fit(n)
    }

    /// `each` with the fit of every pixel of `count` rows from row `y0` (its row from `y0`
    /// and column; None where the estimate is not finite). For [`BLOCK_FRAMES`]
    /// frames, block by block of [`BLOCK_COLUMNS`]: the block's reference values, and
    /// [`BLOCK_MARGIN`] px around, are copied once with the frames innermost, so that a
    /// pixel's interpolation serves all its frames in vector lanes; pixels displaced beyond
    /// the margin are fitted frame by frame. The same sums either way.
    fn rows(
        &self,
        y0: usize,
        count: usize,
        mut each: impl FnMut((usize, usize), Option<PixelFit>),
    ) {
        let (n, h, w) = self.raw.dim();
        let rows = y0..y0 + count;
        if !BLOCK_FRAMES.contains(&n) {
            for y in rows {
                for (x, f) in self.row(y).into_iter().enumerate() {
                    each((y - y0, x), f);
                }
            }
            return;
        }
        let raw = self.raw.as_slice().expect("standard layout");
        let e = &self.e;
        let mut block = FrameBlock::default();
        let mut r = vec![0.0f32; n];
        let around = |a: std::ops::Range<usize>, len: usize| {
            a.start.saturating_sub(BLOCK_MARGIN)..(a.end + BLOCK_MARGIN).min(len)
        };
        for x0 in (0..w).step_by(BLOCK_COLUMNS) {
            let columns = x0..(x0 + BLOCK_COLUMNS).min(w);
            block.copy(
                raw,
                (n, h, w),
                around(rows.clone(), h),
                around(columns.clone(), w),
            );
            for y in rows.clone() {
                for x in columns.clone() {
                    let estimate = [e.dx, e.dy, e.transmission, e.darkfield].map(|m| m[[y, x]]);
                    let fit = self.model(y, x, estimate).map(|model| {
                        if !model.taps.apply_frames(&block, &mut r) {
                            return self.fit_model(y, x, &model);
                        }
                        let mut sums = Sums::default();
                        for (i, &r) in r.iter().enumerate() {
                            sums.add_value(&model, r, self.sample[[i, y, x]]);
                        }
                        sums.fit(n)
                    });
                    each((y - y0, x), fit);
                }
            }
        }
    }

    /// The fits of row y's pixels, frame by frame (a frame's few rows stay in cache; a
    /// pixel at a time reads N frames far apart), each pixel's sums in frame order as
    /// [`Fit::fit`]'s.
    fn row(&self, y: usize) -> Vec<Option<PixelFit>> {
        let (n, h, w) = self.raw.dim();
        let e = &self.e;
        let models: Vec<Option<Model>> = (0..w)
            .map(|x| {
                let estimate = [e.dx, e.dy, e.transmission, e.darkfield].map(|m| m[[y, x]]);
                self.model(y, x, estimate)
            })
            .collect();
        let mut sums: Vec<Sums> = (0..w).map(|_| Sums::default()).collect();
        let raw = self.raw.as_slice().expect("standard layout");
        for (i, frame) in raw.chunks_exact(h * w).enumerate() {
            let values = self.sample.slice(ndarray::s![i, y, ..]);
            for ((sums, model), &s) in sums.iter_mut().zip(&models).zip(values) {
                if let Some(model) = model {
                    sums.add(model, frame, s);
                }
            }
        }
        models
            .iter()
            .zip(sums)
            .map(|(model, sums)| model.as_ref().map(|_| sums.fit(n)))
            .collect()
    }

    /// The model at pixel (y, x) for the estimate `[dx, dy, T, D]`: None where it is not
    /// finite.
    fn model(&self, y: usize, x: usize, [dx, dy, t, d]: [f32; 4]) -> Option<Model> {
        let (_, h, w) = self.raw.dim();
        if !(dx.is_finite() && dy.is_finite() && t.is_finite() && d.is_finite()) {
            return None;
        }
        let (sy, sx) = (y as f64 - dy as f64, x as f64 - dx as f64);
        let (my, mx) = (
            (sy.round().max(0.0) as usize).min(h - 1),
            (sx.round().max(0.0) as usize).min(w - 1),
        );
        Some(Model {
            taps: Taps::new(h, w, sy, sx),
            t,
            d,
            mk: self.light.m[my * w + mx] * self.light.mean,
        })
    }
}

/// The model at one pixel: the reference's taps at the displaced position, T, D and M.
struct Model {
    taps: Taps,
    t: f32,
    d: f32,
    mk: f32,
}

/// A pixel's sums over the frames so far.
#[derive(Default)]
struct Sums {
    squared_error: f64,
    sum_of_squares: f64,
    sum: f64,
}

impl Sums {
    fn add(&mut self, m: &Model, frame: &[f32], s: f32) {
        self.add_value(m, m.taps.apply(frame), s);
    }

    /// [`Sums::add`] of a frame whose reference value at the taps is `r`.
    fn add_value(&mut self, m: &Model, r: f32, s: f32) {
        self.squared_error += ((s - predict(m.t, m.d, m.mk, r)) as f64).powi(2);
        self.sum_of_squares += (s as f64).powi(2);
        self.sum += s as f64;
    }

    fn fit(&self, n: usize) -> PixelFit {
        PixelFit {
            n: n as f64,
            squared_error: self.squared_error,
            sum_of_squares: self.sum_of_squares,
            mean: self.sum / n as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn affine_fit_inverts_the_model() {
        let (t, d, m) = (0.8, 0.6, 2.0);
        // S = t·(1 − d)·m + t·d·R
        let (a, k) = (t * (1.0 - d) * m, t * d);
        let (t2, d2) = from_affine(a, k, m);
        assert!((t2 - t).abs() < 1e-12 && (d2 - d).abs() < 1e-12);
        assert_eq!(predict(1.0, 1.0, 5.0, 3.0), 3.0);
        assert_eq!(predict(0.5, 0.0, 4.0, 9.0), 2.0);
    }

    /// The residual map read in blocks with the frames innermost is the pixel-by-pixel one
    /// to the bit: over blocks cut at the image's sides and within it, for pixels displaced
    /// within the blocks' margin and beyond it (fitted frame by frame), and below
    /// [`BLOCK_FRAMES`] and above, where rows are read frame by frame.
    #[test]
    fn residuals_in_blocks_are_each_pixels_own() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(11);
        let (h, w) = (BLOCK_ROWS + 37, BLOCK_COLUMNS + 45);
        let (few, many) = (*BLOCK_FRAMES.start(), *BLOCK_FRAMES.end());
        for n in [few - 1, few, 20, many, many + 1] {
            let mut stack = || Array3::from_shape_fn((n, h, w), |_| rng.random_range(0.5f32..1.5));
            let (reference, sample) = (stack(), stack());
            let mut map =
                |range: f32| Array2::from_shape_fn((h, w), |_| rng.random_range(-range..range));
            // Within the margin along both axes for about a third of the pixels.
            let reach = 1.5 * BLOCK_MARGIN as f32;
            let (mut dx, dy) = (map(reach), map(reach));
            let (t, d) = (
                map(1.0).mapv(|v| 0.6 + 0.3 * v),
                map(1.0).mapv(|v| 0.5 + 0.4 * v),
            );
            dx[(5, 7)] = f32::NAN;
            let estimate = Contrasts::new(&dx, &dy, &t, &d);
            let fit = Fit::new(reference.view(), sample.view(), estimate);
            let residuals = residual(reference.view(), sample.view(), &estimate);
            let (mut both, mut means) = (Array2::zeros((h, w)), Array2::zeros((h, w)));
            fit.residual_and_mean_into(both.view_mut(), means.view_mut());
            for ((y, x), &r) in residuals.indexed_iter() {
                let e = [dx[(y, x)], dy[(y, x)], t[(y, x)], d[(y, x)]];
                let own = fit.fit(y, x, e);
                let expected = own.as_ref().map_or(f32::NAN, |f| f.relative_rms());
                let mean = own.map_or(f32::NAN, |f| f.mean as f32);
                for (got, want) in [
                    (r, expected),
                    (both[(y, x)], expected),
                    (means[(y, x)], mean),
                ] {
                    assert_eq!(got.to_bits(), want.to_bits(), "N {n}, pixel ({y}, {x})");
                }
            }
        }
    }
}
