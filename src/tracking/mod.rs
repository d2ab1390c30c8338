//! The correlation engine: a speckle tracker of the UMPA class (Zdora et al., PRL 118,
//! 203903, 2017; De Marco et al., Opt. Express 2023), the accuracy reference and CPU
//! fallback.
//!
//! For each pixel p and integer shift u within ±`max_shift`, the sample is fitted to the
//! reference displaced by u over a (2·Nw+1)² window and all N frames, in weighted least
//! squares: `S ≈ a + K·R(·−u)`, which is the multi-contrast model `S ≈ T·(M + D·(R − M))`
//! with M the local mean of the reference (over `mean_window`), so `T = a/M + K` and
//! `D = K/T`. Without dark-field,
//! `S ≈ t·R(·−u)`. The search is exhaustive, so it finds the global minimum and cannot be
//! trapped by shifts larger than the speckle size. The minimum is refined to sub-pixel by a
//! Gauss–Newton step on the interpolated reference from the quadratic fit of the 3×3 costs
//! around it (`refine.rs`), less the interpolator's bias for this pattern
//! (`spline_bias.rs`); T, D and the residual are those of the refined shift. Where the
//! window holds enough values, that fit (and the seeded searches below) carries a
//! background ramp beside `a`, a plane across the window, so that a transmission edge does
//! not pull the shift ([`window::fits_ramp`]). Optionally,
//! isolated outliers are searched again around their neighbours' median shift (seeded
//! search), which halves the RMSE at N ≤ 5; pixels the model fits badly, at steep
//! displacement gradients, are fitted again with a smaller window, or next to a
//! displacement jump given a neighbour's window on their side (`adaptive.rs`); and where
//! the estimates around change steeply, with an affine window, a shift and its gradient
//! (`affine.rs`); below five frames, misfits are searched again with T as a plane across
//! the window, next to strong absorption edges (`plane.rs`).
//!
//! Pixels closer than `max_shift + Nw + 2` to the border cannot see every candidate shift:
//! they come back NaN with status [`Status::Border`].

mod adaptive;
mod affine;
mod bands;
mod linalg;
mod plane;
mod refine;
mod resolve;
mod search;
mod spline_bias;
mod window;

use ndarray::{Array2, ArrayView3};
use serde::{Deserialize, Serialize};

pub(crate) use bands::Coefficients;
pub(crate) use resolve::memory_bytes as resolve_memory_bytes;
pub use resolve::{Solved, resolve};
pub(crate) use resolve::{refined_from, residuals_searched_from, resolve_with, set_noise};
pub(crate) use window::filter as window_filter;
pub(crate) use window::neighbours;

use crate::error::{Error, Result};
use crate::stack::validate_pair;

/// Tracker parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Params {
    /// Window half-width Nw (px): the window is (2·Nw+1)²; 0 is a single pixel.
    pub window: usize,
    /// Largest shift searched along each axis (px).
    pub max_shift: usize,
    /// Fit the dark-field model (true) or transmission only.
    pub dark_field: bool,
    /// Hamming-weighted window (true) or flat.
    pub hamming: bool,
    /// Half-width (px) of the box over which M, the local mean of the reference, is
    /// estimated for T and D: several pattern cells wide, so that M is the illumination and
    /// not the pattern (a 3×3 window's mean is off by ~10 % on a 7.7 px coded mask).
    pub mean_window: usize,
    /// Re-search outliers (integer shift > 1 px from their 5×5 neighbours' median) within
    /// ±1 px of that median: a mild smoothness prior against false matches at low N.
    pub reseed: bool,
    /// Refit pixels whose residual is over 3× the median with a window of half the size
    /// (when that still pools ≥ 20 values), keeping the refit where it fits twice as well:
    /// steep displacement gradients at object edges stretch the pattern in the window.
    /// Those still over it take the fit of a neighbour within the window (a window on
    /// their side of a displacement jump) where that fits twice as well and explains their
    /// own values better. Then pixels where the estimates change by over 0.2 px/px are
    /// fitted with an affine window (the shift and its gradient), kept where that fits
    /// clearly better.
    pub adaptive: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            window: 1,
            max_shift: 8,
            dark_field: true,
            hamming: true,
            mean_window: crate::model::MEAN_WINDOW_PX,
            reseed: true,
            adaptive: true,
        }
    }
}

/// What happened at a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Status {
    /// Interior minimum, sub-pixel refined.
    Converged = 0,
    /// The minimum lies on the edge of the search range: the true shift may be larger.
    SearchEdge = 1,
    /// The fit is degenerate (no pattern contrast in the window, or a flat cost).
    IllConditioned = 2,
    /// Too close to the image border to search every shift (the tracker), or seeing the
    /// pattern from beyond the reference's field of view (the network): outputs are NaN.
    Border = 3,
    /// The network's estimate, rejected by the signal model or in an area dense with such
    /// pixels or of a large bias, solved again by the tracker (the network engine's guard).
    Resolved = 4,
}

/// Per-pixel results, `[H, W]` each.
#[derive(Debug, Clone)]
pub struct Output {
    /// Pattern displacement along x (columns) and y (rows), px.
    pub dx: Array2<f32>,
    pub dy: Array2<f32>,
    pub transmission: Array2<f32>,
    pub darkfield: Array2<f32>,
    /// RMS fit residual relative to the mean sample intensity in the window.
    pub residual: Array2<f32>,
    /// [`Status`] as its number.
    pub status: Array2<u8>,
}

impl Params {
    /// The width of the border where no estimate is possible (px).
    pub fn border(&self) -> usize {
        // Saturating: a caller's absurd value is refused by `track`, not wrapped.
        self.max_shift.saturating_add(self.window).saturating_add(2)
    }

    /// Fails unless stacks `[n, h, w]` leave room for the search and enough values per fit.
    pub fn check_shape(&self, (n, h, w): (usize, usize, usize)) -> Result<()> {
        let border = self.border();
        if border.saturating_mul(2) >= h.min(w) {
            return Err(Error::invalid(format!(
                "image {h}x{w} too small for max shift {} and window {}: needs more than {} px per side",
                self.max_shift,
                self.window,
                border.saturating_mul(2)
            )));
        }
        // Below the border check, so the window is smaller than the image: no overflow.
        let pixels_per_fit = n * (2 * self.window + 1).pow(2);
        if pixels_per_fit < 3 {
            return Err(Error::invalid(format!(
                "{n} frame(s) with window {} give {pixels_per_fit} value(s) per pixel: the fit needs at least 3 \
                 (use a window of 1 or more for a single frame)",
                self.window
            )));
        }
        Ok(())
    }

    /// Peak heap of [`track`] on stacks `[n, h, w]` (bytes, an upper bound) with `threads`
    /// workers; `copies`: the stacks are not in standard layout and are copied first.
    pub fn memory_bytes(
        &self,
        (n, h, w): (usize, usize, usize),
        threads: usize,
        copies: bool,
    ) -> u64 {
        use crate::memory::product;
        // Per pixel, in f32: the stacks' copies (2n) where they are not in standard layout,
        // the local mean and its summed-area table (3), window sums with their scratch (8),
        // the search's shifts, status and band results (6), the refinement's five maps and
        // the misfits' lists (9); and one band of the reference's B-spline coefficients.
        // The affine window's candidates and fits (14, where every pixel is steep) take
        // the window sums' place and 6 more.
        let image = product(&[n, h, w, if copies { 8 } else { 0 }])
            .saturating_add(product(&[32, h, w, 4]))
            .saturating_add(bands::memory_bytes(self, (n, h, w)));
        // Per worker, in f32: a search tile's normalised values of both stacks and the
        // products of one row of shifts, three rows of costs and the running minima (12);
        // the refinement's sample rows; a band's results (3).
        // Saturating: the estimate may be asked before the shape check.
        let side = self.max_shift.saturating_mul(2).saturating_add(1);
        let reach = self.window.saturating_add(self.max_shift).saturating_mul(2);
        let tile = product(&[
            n.saturating_mul(2).saturating_add(side),
            reach.saturating_add(search::BAND),
            reach.saturating_add(search::TILE),
            4,
        ])
        .saturating_add(product(&[
            side.saturating_mul(3).saturating_add(12),
            search::BAND,
            search::TILE,
            4,
        ]));
        let rows = search::BAND.saturating_add(self.window.saturating_mul(2));
        let band = tile
            .saturating_add(product(&[n, rows, w, 4]))
            .saturating_add(product(&[3, search::BAND, w, 4]));
        image.saturating_add(band.saturating_mul(threads.max(1) as u64))
    }
}

/// Tracks the sample stack against the reference stack, both `[N, H, W]`.
pub fn track(
    reference: ArrayView3<f32>,
    sample: ArrayView3<f32>,
    params: &Params,
) -> Result<Output> {
    track_with(reference, sample, params, crate::progress::NONE)
}

/// [`track`] with progress reports (one per band of 16 rows of the search, then of the
/// sub-pixel refinement) and cancellation.
pub fn track_with(
    reference: ArrayView3<f32>,
    sample: ArrayView3<f32>,
    params: &Params,
    progress: &dyn crate::progress::Progress,
) -> Result<Output> {
    Ok(track_lit(reference, sample, params, progress)?.0)
}

/// [`track_with`], and the reference's illumination it computed, for the quality map.
pub(crate) fn track_lit(
    reference: ArrayView3<f32>,
    sample: ArrayView3<f32>,
    params: &Params,
    progress: &dyn crate::progress::Progress,
) -> Result<(Output, crate::model::Illumination)> {
    validate_pair(reference, sample)?;
    let (n, h, w) = reference.dim();
    params.check_shape((n, h, w))?;
    let threads = rayon::current_num_threads();
    let copies = !(reference.is_standard_layout() && sample.is_standard_layout());
    crate::memory::ensure(
        params.memory_bytes((n, h, w), threads, copies),
        None,
        &format!("tracking {n}x{h}x{w}"),
    )?;
    let reference = reference.as_standard_layout();
    let sample = sample.as_standard_layout();
    let clock = std::time::Instant::now();
    let mut stacks = search::Stacks::new(reference.view(), sample.view(), params, None);
    let prepared = clock.elapsed();
    // Progress: the search's bands, then the refinement's (each about half of the time),
    // then one unit for each step of refits; a cancellation is honoured after the unit in
    // flight.
    let refit_units = if params.adaptive { 2 } else { 0 };
    let units = crate::progress::Units::new(
        progress,
        search::units(h, params) + bands::all(h).map(refine::units).sum::<usize>() + refit_units,
    );
    let (mut shift, mut status) = search::exhaustive(&stacks, params, &units)?;
    if params.reseed {
        search::reseed_outliers(&stacks, params, &mut shift, &mut status);
    }
    let searched = clock.elapsed();
    stacks.release_sums();
    let (noise, median_residual) = refine::noise_gain(&stacks, params, &shift, &status);
    stacks.noise = noise;
    let mut out = refine::unfitted(status);
    let mut refits = median_residual
        .filter(|_| params.adaptive)
        .and_then(|r| adaptive::Refits::new(params, n, r));
    // One band of the reference's B-spline coefficients at a time: memory follows the
    // band, not the image.
    let mut spare = Vec::new();
    for rows in bands::all(h) {
        let band = stacks.with_rows(bands::coefficient_rows(rows.clone(), params, h), spare);
        refine::refine(&band, params, &shift, &mut out, rows.clone(), &units);
        units.check()?;
        if let Some(refits) = refits.as_mut() {
            refits.band(&band, rows, &mut out);
        }
        spare = band.into_spare();
    }
    if let Some(refits) = refits {
        refits.finish(&mut out);
    }
    if params.adaptive {
        units.finish_one();
        units.check()?;
        spare = affine::refit(&stacks, params, &mut out, spare);
        if let Some(median) = median_residual {
            plane::refit(&stacks, params, &mut out, median, spare);
        }
        units.finish_one();
        units.check()?;
    }
    let refined = clock.elapsed();
    let bias = spline_bias::SplineBias::estimate(reference.view(), stacks.scale(), noise);
    for ((dy, dx), _) in out
        .dy
        .iter_mut()
        .zip(out.dx.iter_mut())
        .zip(&out.status)
        .filter(|(_, s)| **s == Status::Converged as u8)
    {
        [*dy, *dx] = bias.correct([*dy, *dx]);
    }
    log::debug!(
        "tracking: window sums {:.2} s, integer search {:.2} s, sub-pixel refinement and \
         refits {:.2} s, the spline's bias {:.3} s",
        prepared.as_secs_f64(),
        (searched - prepared).as_secs_f64(),
        (refined - searched).as_secs_f64(),
        (clock.elapsed() - refined).as_secs_f64()
    );
    Ok((out, stacks.light))
}
