//! The network's guard: the tracker takes off the network's smooth bias ([`bias`]), then,
//! where the signal model says the estimate is wrong, solves the pixel again
//! ([`tracking::resolve`]).
//!
//! A pixel is suspect where its residual is over [`SUSPECT`]× the median residual: a good
//! fit's residual is the local noise, which varies little across an image once it is in
//! units of the photon noise (the relative residual × √S̄), while a fit a pixel or more
//! off leaves the pattern unexplained (on the stress suite, gross errors sit at 2–20× the
//! median, 90 % of them above 2.3×). A network off by a fraction of a pixel nearly
//! everywhere raises that median with it, so where the tracker's fits on a grid leave a
//! lower one, theirs is the base ([`reference_scale`]).
//!
//! Where the network is several px off over a wide area (a lens beyond its reach), the
//! search from its estimate can stop in a local minimum; neighbours' estimates are then
//! tried as starts, so right ones spread across the area (`tracking/resolve.rs`).
//!
//! A pixel's own values can fit a wrong shift (by chance below five frames; where the
//! network is a little off over a wide area from five), so the residuals of its window are
//! a second test ([`FEW_FRAMES`]).
//!
//! Where the network smoothed over a jump (a lens's rim), the tracker's window straddles
//! the jump too: a suspect takes the fit of a neighbour's window on its side where that
//! window fits twice as well and explains the pixel's own values better, or the tracker's
//! affine window where the estimates are steep (`tracking/resolve.rs`); from N = 5, pixels
//! still unexplained then take the estimate of an explained neighbour that explains their
//! own values, in passes that reach further into a smoothed band ([`borrow`]).
//!
//! Next to a strong absorption edge, below five frames, one T across the window lets a
//! wrong shift explain it best; such suspects are searched again with T as a plane
//! (`tracking/resolve.rs`).
//!
//! From five frames, where many pixels were solved again or the network's bias was large,
//! the tracker's whole pipeline takes the area ([`regions`]).

mod bias;
mod regions;

use foldhash::HashMap;

use ndarray::{Array2, ArrayView3};
use rayon::prelude::*;

use crate::model::{Contrasts, Fit, Illumination};
use crate::tracking::{self, Coefficients, Params};

/// Residual (in units of the photon noise) over this many times the median marks a suspect
/// pixel.
const SUSPECT: f32 = 2.0;
/// Shifts (px, per axis) the guard may reach: beyond the tracker's default search, as the
/// network's estimate is its start.
const MAX_SHIFT_PX: usize = 24;

/// The tracker's settings for the guard's fits on `n` frames: a window of at least 45
/// values (Nw = 1 from N = 5, 2 below), as the fit that judges the network's estimate and
/// the new one needs enough of them; and a reach beyond the tracker's default search, as
/// the network's estimate is the start.
fn params(tracking: &Params, n: usize) -> Params {
    let window = (1..)
        .find(|&k| n * (2 * k + 1) * (2 * k + 1) >= 45)
        .unwrap_or(1);
    Params {
        max_shift: tracking.max_shift.max(MAX_SHIFT_PX),
        window: tracking.window.max(window),
        ..*tracking
    }
}

/// The tracker's settings over the guard's regions: the guard's window, the user's
/// search range (the tracker's own search starts from no estimate).
fn region_params(tracking: &Params, n: usize) -> Params {
    Params {
        max_shift: tracking.max_shift,
        ..params(tracking, n)
    }
}

/// Peak memory of [`guard`] on stacks `[n, h, w]` (bytes) with `threads` workers, given
/// `budget`, the memory the engine's step before it needed: its residual and noise maps,
/// and the tracker's re-solving or, after it, its regions.
pub(crate) fn memory_bytes(
    tracking: &Params,
    (n, h, w): (usize, usize, usize),
    threads: usize,
    budget: u64,
) -> u64 {
    let coefficients = match whole_coefficients((n, h, w), budget) {
        true => Coefficients::whole_bytes((n, h, w)),
        false => tracking::resolve_memory_bytes(&params(tracking, n), (n, h, w)),
    };
    let regions = regions::memory_bytes(&region_params(tracking, n), (n, h, w), threads);
    maps_bytes((h, w)).saturating_add(coefficients.max(regions))
}

/// Bytes of the guard's own maps: the residuals and means, their squares, window means and
/// the filter's rows.
fn maps_bytes((h, w): (usize, usize)) -> u64 {
    crate::memory::product(&[5, h, w, 4])
}

/// Whether the guard computes the reference's B-spline coefficients once for the whole
/// image, for its three steps, rather than band by band for each: where its memory then
/// stays within `budget`, so that the run's peak does not rise. At 2048² × 3 frames and
/// 512² × 20 it does; at 2048² × 20 it would not (419 MB against the network's 405; a
/// whole run's peak 1.38 GB against 1.15) and each step computes its bands (0.36 s).
fn whole_coefficients((n, h, w): (usize, usize, usize), budget: u64) -> bool {
    maps_bytes((h, w)).saturating_add(Coefficients::whole_bytes((n, h, w))) <= budget
}

/// Passes of [`borrow`] at most: each reaches one pixel further into a band the network
/// smoothed across a jump.
const PASSES: usize = 4;
/// [`borrow`] judges by a pixel's own values alone, so only from this many frames: on the
/// stress suite at N = 2 and 3 a neighbour's estimate explained a pixel's values by chance
/// often enough to add gross errors (0.00 → 0.27 % on soft-edged blobs, sandpaper, N = 3),
/// while from N = 5 it took none away from a case without a jump (within ±0.04 %). Below
/// that, the shifted windows of `tracking::resolve`, which the window's fit judges too,
/// serve alone.
const BORROW_MIN_FRAMES: usize = 5;

/// A pixel is also suspect where the mean square of the residuals around it (over the
/// guard's window, in units of the photon noise) is over `k²` × its median, `k` =
/// [`WINDOW_SUSPECT_FEW`] below [`FEW_FRAMES`] frames, else [`WINDOW_SUSPECT`]: a pixel's
/// own values can fit a wrong shift well enough to pass the pixel's test, a window of them
/// seldom. Below five frames that happens by chance: on the stress suite at N = 2–3 the
/// window test took the gross pixels the guard left on lenses of 7–10 px from 0.4–2.4 % to
/// 0.01–0.06 %. From five frames it happens where the network is off by a pixel or two
/// over a wide smooth area, each pixel's residual only a little raised (the wedge on the
/// grid scan at N = 10: 0.92 → 0.40 % gross with the guard). There the looser level keeps
/// the cost down: on the 2048² × 20 paper case 1.3 made 4.5× the suspects and the guard
/// about 0.5 s slower, 1.8 made 1.5× and about 0.15 s (a fifth of the guard's own time).
const FEW_FRAMES: usize = 5;
const WINDOW_SUSPECT_FEW: f32 = 1.3;
const WINDOW_SUSPECT: f32 = 1.8;

/// The mean square over each pixel's window (half-width `nw`) of the residuals in units of
/// the photon noise (0 where the window leaves the image), and the level over which a
/// pixel is suspect ([`FEW_FRAMES`]) with `n` frames, its median scaled by `scale`²
/// ([`reference_scale`]).
fn window_residuals(
    residual: &Array2<f32>,
    mean: &Array2<f32>,
    nw: usize,
    n: usize,
    scale: f32,
) -> (Array2<f32>, f32) {
    let k = if n < FEW_FRAMES {
        WINDOW_SUSPECT_FEW
    } else {
        WINDOW_SUSPECT
    };
    let (h, w) = residual.dim();
    let squares: Vec<f32> = (residual.iter().zip(mean))
        .map(|(&r, &m)| units(r, m))
        .map(|u| if u.is_finite() { u * u } else { 0.0 })
        .collect();
    let kernel = vec![1.0 / (2 * nw + 1) as f32; 2 * nw + 1];
    let mut windows = vec![0.0f32; h * w];
    tracking::window_filter(&squares, h, w, &kernel, &mut windows, &mut Vec::new());
    let mut inside: Vec<f32> = windows.iter().copied().filter(|&v| v > 0.0).collect();
    let limit = match inside.len() / 2 {
        mid if mid > 0 => {
            (k * scale).powi(2) * *inside.select_nth_unstable_by(mid, f32::total_cmp).1
        }
        _ => f32::INFINITY,
    };
    let windows = Array2::from_shape_vec((h, w), windows).expect("h × w values");
    (windows, limit)
}

/// An estimate `[dx, dy, T, D]` and its residual.
type Estimate = ([f32; 4], f32);

/// The maps as the guard has changed them so far.
struct Maps<'a> {
    /// The network's estimate and its residual map.
    network: &'a Contrasts<'a>,
    residual: &'a Array2<f32>,
    /// The sample's mean over the scan, for residuals in units of the photon noise.
    mean: &'a Array2<f32>,
    /// A residual over this, in those units, is not explained by the noise.
    threshold: f32,
    /// The estimates the guard has changed, by pixel.
    changed: HashMap<(usize, usize), Estimate>,
}

impl Maps<'_> {
    fn at(&self, q: (usize, usize)) -> Estimate {
        self.changed.get(&q).copied().unwrap_or_else(|| {
            let e = self.network;
            let value = [e.dx[q], e.dy[q], e.transmission[q], e.darkfield[q]];
            (value, self.residual[q])
        })
    }

    /// Whether residual `r` at pixel `q` is within the noise: relative noise grows as 1/√S
    /// where the sample absorbs, which alone put whole absorbing regions over a threshold
    /// on the relative residual.
    fn explained(&self, r: f32, q: (usize, usize)) -> bool {
        units(r, self.mean[q]) <= self.threshold
    }
}

/// Rows and columns of [`reference_scale`]'s grid: 1 024 pixels in four strips of eight
/// rows, as the tracker's B-spline coefficients are computed for bands of rows.
const GRID_STRIPS: usize = 4;
const GRID_ROWS: usize = 8;
const GRID_COLUMNS: usize = 32;

/// The ratio, at most 1, of the median residual (in units of the photon noise) of the
/// tracker's fits searched from the network's estimate on a grid of pixels to `median`, the
/// network's; both tests' levels scale with it. Where the network is right it is close to
/// 1 (0.93 on the 2048² × 20 paper case; 0.8 at N = 2, where the window's fit takes its T
/// and D too); where it is off over most of the image, far less: 0.49 on the stress
/// suite's wedge (a constant 5 px) on sandpaper at N = 3, where 59 % of the network's
/// pixels are over 0.25 px off and its gross ones had passed both tests (0.61 → 0.01 %
/// gross), 0.40 on the smooth field on the mask's grid scan at N = 10.
fn reference_scale(
    coefficients: &Coefficients,
    fit: &Fit,
    params: &Params,
    mean: &Array2<f32>,
    median: f32,
) -> f32 {
    let (h, w) = mean.dim();
    let mut grid: Vec<(usize, usize)> = (0..GRID_STRIPS)
        .flat_map(|b| {
            let top = (h * (2 * b + 1) / (2 * GRID_STRIPS)).saturating_sub(GRID_ROWS / 2);
            let columns = (0..GRID_COLUMNS).map(move |i| (2 * i + 1) * w / (2 * GRID_COLUMNS));
            (top..(top + GRID_ROWS).min(h)).flat_map(move |y| columns.clone().map(move |x| (y, x)))
        })
        .collect();
    // Sorted by row, as the bands of coefficients need; strips overlap in small images.
    grid.sort_unstable();
    grid.dedup();
    let residuals = tracking::residuals_searched_from(coefficients, params, fit, &grid);
    let mut tracked: Vec<f32> = (residuals.iter().zip(&grid))
        .map(|(&r, &q)| units(r, mean[q]))
        .filter(|r| r.is_finite())
        .collect();
    let scale = match tracked.len() / 2 {
        0 => 1.0,
        mid => *tracked.select_nth_unstable_by(mid, f32::total_cmp).1 / median,
    };
    log::debug!(
        "guard: the tracker's median residual on {} grid pixels {scale:.3} × the network's",
        tracked.len()
    );
    scale.min(1.0)
}

/// Residual `r` in units of the photon noise at a mean intensity `mean`.
fn units(r: f32, mean: f32) -> f32 {
    r * mean.max(0.0).sqrt()
}

/// Re-solves the suspect pixels of `maps` (`[dx, dy, T, D]`) in place and returns their
/// residual map, the pixels changed, `[y, x]`, and the reference's illumination. `budget`
/// (bytes): the memory its work may take without raising the run's peak, the network's.
pub(crate) fn guard(
    reference: ArrayView3<f32>,
    sample: ArrayView3<f32>,
    tracking: &Params,
    [dx, dy, t, d]: [&mut Array2<f32>; 4],
    budget: u64,
) -> (Array2<f32>, Vec<[usize; 2]>, Illumination) {
    let mut residual = Array2::<f32>::zeros(dx.dim());
    let clock = std::time::Instant::now();
    let n = reference.dim().0;
    let params = params(tracking, n);
    let (reference, sample) = (reference.as_standard_layout(), sample.as_standard_layout());
    let (reference, sample) = (reference.view(), sample.view());
    let light = Illumination::new(reference, crate::model::MEAN_WINDOW_PX);
    let whole = whole_coefficients(reference.dim(), budget);
    log::debug!(
        "guard: the reference's coefficients {} ({} MB to spend)",
        if whole {
            "for the whole image"
        } else {
            "band by band"
        },
        budget / 1_000_000
    );
    let mut coefficients = Coefficients::new(reference, sample, &params, &light, whole);
    // The bias first: the guard then judges the corrected estimate, whose residuals need
    // fewer pixels solved again (on the 2048² × 20 simulated case 8 500 suspects against
    // 117 000).
    // Of the bias's nodes only the blocks where it was large are kept, for the regions.
    let biased = {
        let bias = {
            let estimate = Contrasts::new(dx, dy, t, d);
            let fit = Fit::with_illumination(reference, sample, estimate, Some(&light));
            tracking::set_noise(&mut coefficients, &params, &fit);
            log::debug!(
                "guard: the reference's noise level at {:.2} s",
                clock.elapsed().as_secs_f64()
            );
            bias::Bias::measure(&fit, &params, &coefficients)
        };
        bias.apply([&mut *dx, &mut *dy, &mut *t, &mut *d]);
        regions::biased_blocks(&bias, dx.dim(), n)
    };
    log::debug!(
        "guard: the network's bias taken off at {:.2} s",
        clock.elapsed().as_secs_f64()
    );
    let changed = {
        let estimate = Contrasts::new(dx, dy, t, d);
        let fit = Fit::with_illumination(reference, sample, estimate, Some(&light));
        let mut mean = Array2::<f32>::zeros(dx.dim());
        fit.residual_and_mean_into(residual.view_mut(), mean.view_mut());
        log::debug!(
            "guard: residual map at {:.2} s",
            clock.elapsed().as_secs_f64()
        );
        let mut finite: Vec<f32> = (residual.iter().zip(&mean))
            .map(|(&r, &m)| units(r, m))
            .filter(|r| r.is_finite())
            .collect();
        if finite.is_empty() {
            return (residual, Vec::new(), light);
        }
        let mid = finite.len() / 2;
        let median = *finite.select_nth_unstable_by(mid, f32::total_cmp).1;
        drop(finite);
        let scale = reference_scale(&coefficients, &fit, &params, &mean, median);
        let mut maps = Maps {
            network: &estimate,
            residual: &residual,
            mean: &mean,
            threshold: SUSPECT * scale * median,
            changed: HashMap::default(),
        };
        let suspects: Vec<(usize, usize)> = {
            let (windows, limit) = window_residuals(&residual, &mean, params.window, n, scale);
            (residual.indexed_iter())
                .filter(|&(q, &r)| !maps.explained(r, q) || windows[q] > limit)
                .map(|(q, _)| q)
                .collect()
        };
        let solved = tracking::resolve_with(&coefficients, &params, &fit, &estimate, &suspects);
        log::debug!(
            "guard: {} suspect pixel(s) over {:.4}, {} solved again",
            suspects.len(),
            maps.threshold,
            solved.len()
        );
        maps.changed = solved
            .into_iter()
            .map(|s| ((s.y, s.x), (s.estimate, s.residual)))
            .collect();
        if reference.dim().0 >= BORROW_MIN_FRAMES {
            let mut total = 0;
            for _ in 0..PASSES {
                let borrowed = borrow(&fit, &maps, &suspects, params.window);
                if borrowed.is_empty() {
                    break;
                }
                total += borrowed.len();
                maps.changed.extend(borrowed);
            }
            log::debug!(
                "guard: {total} time(s) a pixel took a neighbour's estimate; done at {:.2} s",
                clock.elapsed().as_secs_f64()
            );
        }
        maps.changed
    };
    drop(coefficients);
    let mut changed: Vec<_> = changed.into_iter().collect();
    changed.sort_unstable_by_key(|&(q, _)| q);
    let mut changed: Vec<[usize; 2]> = changed
        .into_iter()
        .map(|((y, x), (estimate, r))| {
            let at = [y, x];
            [dx[at], dy[at], t[at], d[at]] = estimate;
            residual[at] = r;
            at
        })
        .collect();
    let taken = regions::track(
        reference,
        sample,
        &region_params(tracking, n),
        &changed,
        &biased,
        [&mut *dx, &mut *dy, &mut *t, &mut *d],
    );
    if !taken.is_empty() {
        let fit = Fit::with_illumination(
            reference,
            sample,
            Contrasts::new(dx, dy, t, d),
            Some(&light),
        );
        let residuals: Vec<f32> = (taken.par_iter())
            .map(|&q| fit.residual_at(q[0], q[1], [dx[q], dy[q], t[q], d[q]]))
            .collect();
        for (&q, r) in taken.iter().zip(residuals) {
            residual[q] = r;
        }
        changed.extend(taken);
        changed.sort_unstable();
        changed.dedup();
    }
    (residual, changed, light)
}

/// One pass over the suspects that are still unexplained (next to a jump the network
/// smoothed over, such as a lens's rim, where the tracker's window straddles the jump too):
/// each takes the estimate of a neighbour within `nw` px (Chebyshev) that is explained
/// itself, differs from the pixel's by over half a pixel, and explains the pixel's own
/// values; of those, the one that explains them best (the tracker's shiftable windows,
/// `tracking/adaptive.rs`, on the network's maps).
fn borrow(
    fit: &Fit,
    maps: &Maps,
    suspects: &[(usize, usize)],
    nw: usize,
) -> Vec<((usize, usize), Estimate)> {
    let (h, w) = maps.residual.dim();
    suspects
        .par_iter()
        .filter(|&&p| !maps.explained(maps.at(p).1, p))
        .filter_map(|&(y, x)| {
            let own = maps.at((y, x)).0;
            let moved =
                |e: &[f32; 4]| (0..2).any(|a| own[a].is_nan() || (e[a] - own[a]).abs() > 0.5);
            tracking::neighbours((y, x), nw, (h, w), 0)
                .map(|q| (q, maps.at(q)))
                .filter(|&(q, (e, r))| maps.explained(r, q) && moved(&e))
                .map(|(_, (e, _))| (e, fit.residual_at(y, x, e)))
                .filter(|&(_, r)| maps.explained(r, (y, x)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|found| ((y, x), found))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{Preset, simulate};

    /// The reference's coefficients computed once for the whole image or band by band give
    /// the same maps, over an image of three bands (rows 0–511, 512–1023, 1024–1099) and
    /// with gross errors to re-solve in each: at N = 5, and at N = 2 next to strong
    /// absorption edges, where suspects are searched with T as a plane too.
    #[test]
    fn whole_coefficients_and_bands_give_the_same_maps() {
        let absorbing = crate::simulate::stress::named(48, 3, "absorbing 3.0 px, mask random, N 2")
            .expect("the stress suite has it")
            .config;
        for config in [Preset::MaskDiagonal.config(48, 5, 3), absorbing] {
            same_maps_whole_and_banded(config);
        }
    }

    fn same_maps_whole_and_banded(mut config: crate::simulate::Config) {
        config.height = 1100;
        let case = simulate(&config).unwrap();
        let (r, s) = (case.reference.view(), case.sample.view());
        let guarded = |budget: u64| {
            let mut maps = [
                case.truth.dx.clone(),
                case.truth.dy.clone(),
                case.truth.transmission.clone(),
                case.truth.darkfield.clone(),
            ];
            maps[0]
                .indexed_iter_mut()
                .filter(|((y, x), _)| (y + 3 * x) % 97 == 0)
                .for_each(|(_, v)| *v += 3.0);
            let [dx, dy, t, d] = &mut maps;
            let (residual, changed, _) = guard(r, s, &Params::default(), [dx, dy, t, d], budget);
            (maps, residual, changed)
        };
        let n = config.scans;
        assert!(!whole_coefficients((n, 1100, 48), 0));
        assert!(whole_coefficients((n, 1100, 48), u64::MAX));
        let (banded, whole) = (guarded(0), guarded(u64::MAX));
        assert!(banded.2.len() > 100, "{} changed", banded.2.len());
        assert_eq!(banded.2, whole.2);
        assert_eq!(banded.1, whole.1);
        for (a, b) in banded.0.iter().zip(&whole.0) {
            assert_eq!(a, b);
        }
    }
}
