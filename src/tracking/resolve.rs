//! The network's guard: pixels whose estimate the signal model does not explain are solved
//! again by the tracker's cost, starting from the estimate.
//!
//! Why: a network can be wrong over wide areas where its training data had nothing alike
//! (a lens's smooth field of several px), and its maps do not say so; the model residual
//! does. A pixel whose window the estimate already fits is left alone
//! ([`explained_level`]). From the others' whole-pixel shift, a ±2 px search moves downhill
//! (recentred on its minimum while that lies on its edge, so a few px of error are
//! recovered), then the tracker's sub-pixel refinement. The new fit replaces the old one
//! only where it explains the data clearly better over the tracker's window (T and D
//! fitted to both shifts alike): a single pixel's residual cannot judge, as at N = 2 its
//! two values fit almost any shift.
//! Where that search stopped in a local minimum (the network several px off near a strong
//! lens's rim), neighbours' estimates are tried as starts, spreading right ones outward
//! ([`propagate`]). Where the window straddles a jump the network smoothed over (a lens's
//! rim), a suspect then takes a neighbour's window on its side ([`shifted_windows`]), or the
//! tracker's affine window, the shift and its gradient ([`affine_windows`]). Below
//! five frames, next to a strong absorption edge, T as a plane across the window
//! ([`planes`]).

// A fast hasher: the maps are looked up for every neighbour of every suspect, where
// SipHash's lookups were 3 % of a 2048² × 3 network run's samples (`perf`), foldhash's
// half that.
use foldhash::{HashMap, HashSet};

use rayon::prelude::*;

use super::Params;
use super::adaptive::MISFIT;
use super::affine;
use super::bands::{self, Coefficients};
use super::plane;
use super::refine::{self, Workspace, fit_at, pixel_error};
use super::search::{BAND, Stacks, local_search};
use super::window::neighbours;
use crate::model::Fit;
use crate::network::TD_CLIP;

/// Half-width (px) of each local search.
const REACH: isize = 2;
/// Recentred searches at most, after the first: a path of up to 10 px.
const MOVES: usize = 4;
/// A new fit within a pixel of the estimate replaces it where the estimate's window
/// residual is over this many times the new one's: the tracker's shift minimises that
/// residual by construction, so a smaller margin would trade good estimates for the
/// tracker's noise. A fit over a pixel away from the network's estimate replaces it
/// wherever its residual is lower.
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
/// border are left alone. The fits allow for the reference's noise and the spline's bias
/// as the tracker's do ([`set_noise`]). In no particular order.
pub fn resolve(
    reference: ndarray::ArrayView3<f32>,
    sample: ndarray::ArrayView3<f32>,
    params: &Params,
    fit: &Fit,
    estimate: &crate::model::Contrasts,
    pixels: &[(usize, usize)],
) -> Vec<Solved> {
    let (reference, sample) = (reference.as_standard_layout(), sample.as_standard_layout());
    let light = fit.illumination();
    let mut coefficients = Coefficients::new(reference.view(), sample.view(), params, light, false);
    set_noise(&mut coefficients, params, fit);
    resolve_with(&coefficients, params, fit, estimate, pixels)
}

/// [`resolve`] with the reference's `coefficients`.
pub(crate) fn resolve_with(
    coefficients: &Coefficients,
    params: &Params,
    fit: &Fit,
    estimate: &crate::model::Contrasts,
    pixels: &[(usize, usize)],
) -> Vec<Solved> {
    let (_, h, w) = coefficients.dim();
    let nw = params.window;
    let mut pixels: Vec<(usize, usize)> = pixels
        .iter()
        .copied()
        .filter(|&q| window_inside(q, nw, (h, w)))
        .collect();
    pixels.sort_unstable();
    let (mut solved, mut passes, mut searched, mut stretched, mut planar) =
        (HashMap::default(), 0, 0, 0, 0);
    // Seconds spent on the coefficients, the first searches, the neighbours' starts, the
    // shifted and affine windows and the fits with T as a plane.
    let mut laps = [0.0f64; 5];
    for band in bands::runs(&pixels, params) {
        let rows = bands::coefficient_rows(bands::rows_of(band), params, h);
        let mut clock = std::time::Instant::now();
        let mut lap = |k: usize| {
            laps[k] += clock.elapsed().as_secs_f64();
            clock = std::time::Instant::now();
        };
        let st = coefficients.stacks(params, rows);
        lap(0);
        let level = explained_level(&st, params, estimate, bands::rows_of(band));
        let outcomes: Vec<((usize, usize), Option<Solved>)> = band
            .par_iter()
            .map_init(Workspace::default, |ws, &q| {
                let own = current(estimate, &solved, q);
                let old = judged(&st, params, q, own, ws);
                if old <= level {
                    return None;
                }
                let (new, window) = search_from(&st, params, own, q, ws);
                let moved = (new[0] - own[0]).hypot(new[1] - own[1]) > 1.0;
                let factor = if moved { 1.0 } else { BETTER };
                Some((
                    q,
                    better(window, factor, old).then(|| solved_at(fit, q, new)),
                ))
            })
            .flatten()
            .collect();
        let unexplained: Vec<(usize, usize)> = outcomes.iter().map(|&(q, _)| q).collect();
        searched += unexplained.len();
        let fits = outcomes.into_iter().filter_map(|(_, s)| s);
        solved.extend(fits.map(|s| ((s.y, s.x), s)));
        lap(1);
        let front = (&unexplained[..], bands::rows_of(band), level);
        passes += propagate(&st, params, fit, estimate, front, &mut solved);
        lap(2);
        let shifted = shifted_windows(&st, params, fit, estimate, &unexplained, &solved);
        solved.extend(shifted.into_iter().map(|s| ((s.y, s.x), s)));
        let affine = affine_windows(&st, params, fit, estimate, &unexplained, &solved);
        stretched += affine.len();
        solved.extend(affine.into_iter().map(|s| ((s.y, s.x), s)));
        lap(3);
        let planes = planes(&st, params, fit, estimate, (&unexplained, level), &solved);
        planar += planes.len();
        solved.extend(planes.into_iter().map(|s| ((s.y, s.x), s)));
        lap(4);
    }
    let [band_coefficients, first, neighbours, shifted, plane] = laps;
    log::debug!(
        "resolve: B-spline coefficients {band_coefficients:.2} s, first searches ({searched} of \
         {} pixels, the others' windows explained) {first:.2} s, \
         {passes} pass(es) of neighbours' starts {neighbours:.2} s, shifted windows and \
         {stretched} affine one(s) {shifted:.2} s, {planar} fit(s) with T as a plane \
         {plane:.2} s",
        pixels.len()
    );
    // The spline's bias taken off the new shifts, as the tracker does; their residuals at
    // the shifts returned.
    (solved.into_values())
        .map(|s| {
            let [dx, dy, t, d] = s.estimate;
            let [dy, dx] = coefficients.unbiased([dy, dx]);
            solved_at(fit, (s.y, s.x), [dx, dy, t, d])
        })
        .collect()
}

/// The pixel residual ([`Fit::residual_at`]) of the tracker's fit searched from `fit`'s
/// estimate ([`search_from`]: downhill from its whole-pixel shift, then refined) at each of
/// `pixels`, sorted by row; NaN within `params.window` of the border.
pub(crate) fn residuals_searched_from(
    coefficients: &Coefficients,
    params: &Params,
    fit: &Fit,
    pixels: &[(usize, usize)],
) -> Vec<f32> {
    let (_, _, estimate) = fit.parts();
    let none = HashMap::default();
    per_pixel(coefficients, params, pixels, |st, q, ws| {
        if !window_inside(q, params.window, (st.h, st.w)) {
            return f32::NAN;
        }
        let (new, _) = search_from(st, params, current(estimate, &none, q), q, ws);
        fit.residual_at(q.0, q.1, new)
    })
}

/// Sets the reference's noise level on `coefficients` ([`Coefficients::set_noise`]) from the
/// tracker's fits searched from `fit`'s estimate ([`search_from`]) on the tracker's grid
/// for it ([`refine::noise_gain`]): the fits that follow then allow for it as the tracker's
/// do. Without it, the fits of the network's bias leaned towards half pixels (on the stress
/// suite's wedge, a constant 2.8 px on the mask's grid scan at N = 10: a mean error of
/// −0.009 px where the network was within 0.1 px, −0.001 px with it). Searched, as fits at
/// an estimate that is wrong at most of the grid would tell its misfit, not the noise.
pub(crate) fn set_noise(coefficients: &mut Coefficients, params: &Params, fit: &Fit) {
    let (_, h, w) = coefficients.dim();
    let (_, _, estimate) = fit.parts();
    let pixels: Vec<(usize, usize)> = refine::noise_pixels(params, (h, w))
        .filter(|&q| window_inside(q, params.window, (h, w)))
        .collect();
    let none = HashMap::default();
    // The stacks' window weights, squared once.
    let squared = refine::squared(&super::window::weights(params.window, params.hamming));
    let ratios = per_pixel(coefficients, params, &pixels, |st, q, ws| {
        let (found, _) = search_from(st, params, current(estimate, &none, q), q, ws);
        refine::noise_fit(st, params, &squared, q, [found[1], found[0]], ws).1
    });
    let noise = refine::median_gain(ratios.into_iter().flatten().collect());
    coefficients.set_noise(noise);
}

/// The tracker's fit at each of `pixels` (sorted by row) by its sub-pixel step from
/// `fit`'s estimate there, `[dx, dy, T, D]`, and its shift's standard error (px, `[dx,
/// dy]`); NaN where the window leaves the image or the estimate is not finite or beyond the
/// reach.
pub(crate) fn refined_from(
    coefficients: &Coefficients,
    params: &Params,
    fit: &Fit,
    pixels: &[(usize, usize)],
) -> Vec<([f32; 4], [f32; 2])> {
    let (_, _, estimate) = fit.parts();
    let reach = bands::reach(params) as f32;
    per_pixel(coefficients, params, pixels, |st, q, ws| {
        let [dx, dy] = [estimate.dx[q], estimate.dy[q]];
        let within = dx.abs() <= reach && dy.abs() <= reach; // false for NaN
        if !within || !window_inside(q, params.window, (st.h, st.w)) {
            return ([f32::NAN; 4], [f32::NAN; 2]);
        }
        let f = fit_at(st, params, q.0, q.1, [dy, dx], true, ws);
        let [sy, sx] = f.shift_sd;
        let shift = coefficients.unbiased(f.shift);
        ([shift[1], shift[0], f.transmission, f.darkfield], [sx, sy])
    })
}

/// `each` at every one of `pixels` (sorted by row), in their order, with stacks holding the
/// coefficients that their fits read.
fn per_pixel<T: Send>(
    coefficients: &Coefficients,
    params: &Params,
    pixels: &[(usize, usize)],
    each: impl Fn(&Stacks, (usize, usize), &mut Workspace) -> T + Sync,
) -> Vec<T> {
    debug_assert!(pixels.is_sorted());
    let h = coefficients.dim().1;
    let mut out = Vec::with_capacity(pixels.len());
    let each = &each;
    for run in bands::runs(pixels, params) {
        let rows = bands::coefficient_rows(bands::rows_of(run), params, h);
        let st = coefficients.stacks(params, rows);
        let shared = &st;
        out.par_extend(
            run.par_chunk_by(|a, b| a.0 / BAND == b.0 / BAND)
                .flat_map_iter(|task| {
                    let mut ws = workspace(shared, params, task);
                    task.iter().map(move |&q| each(shared, q, &mut ws))
                }),
        );
    }
    out
}

/// A workspace for the fits of `pixels` (sorted, within [`BAND`] rows): reading the sample's
/// rows once, frames innermost, where they are dense enough (a guard's grid), as gathering
/// each window's values from frames a whole image apart was a quarter of the fits' time
/// there; else gathering them, for a few suspects.
fn workspace(st: &Stacks, params: &Params, pixels: &[(usize, usize)]) -> Workspace {
    let rows = bands::rows_of(pixels);
    match pixels.len() * DENSE >= rows.len() * st.w {
        true => Workspace::reading(st, rows, params.window),
        false => Workspace::default(),
    }
}

/// Pixels one in this many of their rows' or more: [`workspace`] reads those rows once.
const DENSE: usize = 8;

/// Whether the window (half-width `nw`) of pixel (y, x) lies inside an `h`×`w` image.
fn window_inside((y, x): (usize, usize), nw: usize, (h, w): (usize, usize)) -> bool {
    y >= nw && x >= nw && y + nw < h && x + nw < w
}

/// A suspect's window residual at its estimate at or under this many times the lower
/// quartile of a grid's ([`explained_level`]) says the window fits the estimate: the pixel
/// was suspect for its own values (often the network's T and D, which the window's fit
/// refits), and a search can only move it within the noise. On the 2048² × 20 paper case
/// that is 59 % of the suspects, of which the search changed 6, each by under a pixel.
const EXPLAINED: f32 = 1.25;

/// [`EXPLAINED`] × the lower quartile of the window residuals at the estimates over a grid
/// of about 1 000 pixels in `rows` (−∞ without any): the level of a window the estimate
/// fits. A quartile, not the median, so that the level holds where the network is wrong
/// over up to three quarters of the band.
fn explained_level(
    st: &Stacks,
    params: &Params,
    estimate: &crate::model::Contrasts,
    rows: std::ops::Range<usize>,
) -> f32 {
    let (h, w, nw) = (st.h, st.w, params.window);
    let step = ((rows.len() * w / 1000) as f64).sqrt().max(1.0) as usize;
    let grid: Vec<(usize, usize)> = (rows.step_by(step))
        .flat_map(|y| (0..w).step_by(step).map(move |x| (y, x)))
        .filter(|&q| window_inside(q, nw, (h, w)))
        .collect();
    let none = HashMap::default();
    let mut residuals: Vec<f32> = grid
        .par_iter()
        .map_init(Workspace::default, |ws, &q| {
            judged(st, params, q, current(estimate, &none, q), ws)
        })
        .filter(|r| r.is_finite())
        .collect();
    match residuals.len() / 4 {
        _ if residuals.is_empty() => f32::NEG_INFINITY,
        k => EXPLAINED * *residuals.select_nth_unstable_by(k, f32::total_cmp).1,
    }
}

/// The estimate `[dx, dy, T, D]` at pixel `q`: `solved`'s where it has one, else the
/// network's.
fn current(
    estimate: &crate::model::Contrasts,
    solved: &HashMap<(usize, usize), Solved>,
    q: (usize, usize),
) -> [f32; 4] {
    solved.get(&q).map_or(
        [
            estimate.dx[q],
            estimate.dy[q],
            estimate.transmission[q],
            estimate.darkfield[q],
        ],
        |s| s.estimate,
    )
}

/// The window residual ([`fit_at`]) of pixel `(y, x)` at its estimate `e`, `[dx, dy, …]`;
/// NaN where it is not judged: not finite, or beyond the reach (its rows are not in the
/// band).
fn judged(
    st: &Stacks,
    params: &Params,
    (y, x): (usize, usize),
    e: [f32; 4],
    ws: &mut Workspace,
) -> f32 {
    let known = e[0].is_finite() && e[1].is_finite();
    match known && e[1].abs() <= bands::reach(params) as f32 {
        true => fit_at(st, params, y, x, [e[1], e[0]], false, ws).residual,
        false => f32::NAN,
    }
}

/// Pixel (y, x) searched again from the whole-pixel shift nearest `start` (`[dx, dy, …]`,
/// px; none: 0): the fit found, `[dx, dy, T, D]`, and its window residual.
fn search_from(
    st: &Stacks,
    params: &Params,
    start: [f32; 4],
    (y, x): (usize, usize),
    ws: &mut Workspace,
) -> ([f32; 4], f32) {
    let mut centre = match start[0].is_finite() && start[1].is_finite() {
        true => [start[1].round() as isize, start[0].round() as isize],
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
    (
        [f.shift[1], f.shift[0], f.transmission, f.darkfield],
        f.residual,
    )
}

/// Whether a window residual `new` explains the window better than `old` by `factor`
/// (`old` NaN: any finite one does).
fn better(new: f32, factor: f32, old: f32) -> bool {
    new * factor < old || (old.is_nan() && new.is_finite())
}

/// Pixel (y, x) with its new `estimate` and that estimate's pixel residual.
fn solved_at(fit: &Fit, (y, x): (usize, usize), estimate: [f32; 4]) -> Solved {
    Solved {
        y,
        x,
        estimate,
        residual: fit.residual_at(y, x, estimate),
    }
}

/// Passes of [`propagate`] at most: each carries an estimate one pixel further.
const PASSES: usize = 64;

/// Where the network was wrong over a wide area (a strong lens's field beyond its reach),
/// the search from its estimate can stop in a local minimum a few px off, while a
/// neighbour's right estimate is a start within reach. Each pixel of `front` whose
/// estimate does not explain its window (`level`, [`explained_level`]) and differs from a
/// 4-neighbour's by over half a pixel searches again from that neighbour's, keeping the fit
/// that explains its window best where it explains it [`BETTER`] than its own (a margin
/// that keeps chance fits at N = 2 out: on the stress suite, 0.11 % more gross pixels on an
/// absorbing sample without it). The changed pixels and their neighbours in `rows`, suspect
/// or not, try again in the next pass, so right estimates spread across a wrong region, as
/// in reliability-guided digital image correlation. A neighbour whose window the network's
/// estimate did not explain, and which no search has changed, offers no start (on the
/// 2048² × 20 paper case that halved this stage's time; the stress suite changed in the
/// fifth digit). Returns the passes made.
fn propagate(
    st: &Stacks,
    params: &Params,
    fit: &Fit,
    estimate: &crate::model::Contrasts,
    (front, rows, level): (&[(usize, usize)], std::ops::Range<usize>, f32),
    solved: &mut HashMap<(usize, usize), Solved>,
) -> usize {
    let (h, w, nw) = (st.h, st.w, params.window);
    let four = move |q: (usize, usize)| crate::neighbourhood::four(q, (h, w));
    // Pixels of the rows the band's coefficients serve, whose window lies in the image.
    let member = |&q: &(usize, usize)| rows.contains(&q.0) && window_inside(q, nw, (h, w));
    // The front's pixels: their estimate is the network's until `solved` has one.
    let unexplained: HashSet<(usize, usize)> = front.iter().copied().collect();
    let mut front = front.to_vec();
    for pass in 0..PASSES {
        let state = &*solved;
        let found: Vec<Solved> = front
            .par_iter()
            .map_init(Workspace::default, |ws, &p| {
                let own = current(estimate, state, p);
                let lost = own[0].is_nan() || own[1].is_nan();
                let mut old = None;
                let mut best: Option<([f32; 4], f32)> = None;
                let mut tried = Vec::with_capacity(4);
                for q in four(p) {
                    if unexplained.contains(&q) && !state.contains_key(&q) {
                        continue;
                    }
                    let e = current(estimate, state, q);
                    let centre = [e[0].round(), e[1].round()];
                    let differs = lost || (0..2).any(|a| (e[a] - own[a]).abs() > 0.5);
                    let known = e[0].is_finite() && e[1].is_finite();
                    if !differs || !known || tried.contains(&centre) {
                        continue;
                    }
                    tried.push(centre);
                    let old = *old.get_or_insert_with(|| judged(st, params, p, own, ws));
                    if old <= level {
                        break;
                    }
                    let (new, window) = search_from(st, params, e, p, ws);
                    if better(window, BETTER, old) && best.is_none_or(|b| window < b.1) {
                        best = Some((new, window));
                    }
                }
                best.map(|(new, _)| solved_at(fit, p, new))
            })
            .flatten()
            .collect();
        if found.is_empty() {
            return pass;
        }
        let mut next: Vec<(usize, usize)> = found
            .iter()
            .flat_map(|s| std::iter::once((s.y, s.x)).chain(four((s.y, s.x))))
            .filter(member)
            .collect();
        next.sort_unstable();
        next.dedup();
        front = next;
        solved.extend(found.into_iter().map(|s| ((s.y, s.x), s)));
    }
    PASSES
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
    let at = |q: (usize, usize)| current(estimate, solved, q);
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
            best.map(|(_, new)| solved_at(fit, (y, x), new))
        })
        .flatten()
        .collect()
}

/// The suspects of `band` (each unexplained at its estimate) not re-solved yet whose
/// estimates around them change by over 0.2 px/px (a lens's rim the network smoothed over,
/// where the tracker's square window straddles the jump too): the tracker's affine window
/// (`affine.rs`) from the estimate and its gradient, kept where it explains the window
/// clearly better than the estimate.
fn affine_windows(
    st: &Stacks,
    params: &Params,
    fit: &Fit,
    estimate: &crate::model::Contrasts,
    band: &[(usize, usize)],
    solved: &HashMap<(usize, usize), Solved>,
) -> Vec<Solved> {
    let at = |q: (usize, usize)| current(estimate, solved, q);
    band.par_iter()
        .filter(|q| !solved.contains_key(q))
        .map_init(Workspace::default, |ws, &q| {
            let j = affine::steep((st.h, st.w), q, |q| {
                let e = at(q);
                [e[1], e[0]]
            })?;
            // Not re-solved: still the estimate the first search judged unexplained.
            let own = at(q);
            let old = judged(st, params, q, own, ws);
            let [dx, dy, t, d, _] = affine::fit_from(st, params, q, [own[1], own[0]], j, old)?;
            // T and D where the network's can be: with eight parameters on a few frames'
            // window a fit can explain it with a D of 30 (the absorbing blobs at N = 2).
            let plausible = |v: f32| (0.0..=TD_CLIP).contains(&v);
            (plausible(t) && (plausible(d) || !params.dark_field)).then_some(())?;
            // Within a pixel of the estimate: a correction of the smoothing, not a search.
            ((dx - own[0]).abs() <= 1.0 && (dy - own[1]).abs() <= 1.0).then_some(())?;
            Some(solved_at(fit, q, [dx, dy, t, d]))
        })
        .flatten()
        .collect()
}

/// A suspect is searched with T as a plane ([`planes`]) where the estimate's T over its
/// window varies by over this factor (max/min: a relative gradient of about 0.05 px⁻¹
/// across a 5 px window; where T is near uniform the plane has nothing to explain) and its
/// window residual is at the tracker's misfit level ([`MISFIT`] × that of an explained
/// window); the fit found must be under it. Without it the searches took 1.4 s at 2048² × 3
/// (`espinnet simulate`), with it 0.35 s, for the same accuracy there.
const PLANE_CONTRAST: f32 = 1.2;
/// Half-width (px) of [`planes`]' search around the estimate.
const PLANE_REACH: i64 = 3;

/// Below [`plane::FEW_FRAMES`] frames, next to a strong absorption edge (T from 1 to 0.05
/// within a few px), a wrong shift can explain the window better than the true one with one
/// T across it, and the search from the estimate keeps it: on the stress suite's absorbing
/// blobs at N = 2 (mask, random scan) the guard left 1.1 % of the pixels gross, each with a
/// window residual 3–9× the level of an explained one (`level`, [`explained_level`]). Each
/// pixel of `band` next to such an edge ([`PLANE_CONTRAST`]) whose window residual is over
/// [`MISFIT`] × `level` is searched again with T as a plane across the window (the
/// tracker's second search, `plane.rs`) within ±[`PLANE_REACH`] px of its estimate; the fit
/// replaces the estimate where it moves it by over half a pixel and explains the window
/// [`BETTER`] and under that level. The level keeps out chance fits where the window
/// straddles a displacement jump, which neither model explains (a lens's rim: their
/// residuals a median 7.5× `level`, against 1.6× for the fits that put the absorbing blobs
/// right).
fn planes(
    st: &Stacks,
    params: &Params,
    fit: &Fit,
    estimate: &crate::model::Contrasts,
    (band, level): (&[(usize, usize)], f32),
    solved: &HashMap<(usize, usize), Solved>,
) -> Vec<Solved> {
    if st.n >= plane::FEW_FRAMES {
        return Vec::new();
    }
    let ceiling = MISFIT * level;
    band.par_iter()
        .map_init(Workspace::default, |ws, &q| {
            (contrast(&estimate.transmission, q, params.window) > PLANE_CONTRAST).then_some(())?;
            let own = current(estimate, solved, q);
            let old = judged(st, params, q, own, ws);
            (old > ceiling).then_some(())?; // NaN: not judged
            let start = [own[1], own[0]];
            let (new, window) =
                plane::fit_near(st, params.dark_field, q, start, PLANE_REACH, ceiling)?;
            let moved = (new[0] - own[0]).hypot(new[1] - own[1]) > 0.5;
            (moved && better(window, BETTER, old)).then(|| solved_at(fit, q, new))
        })
        .flatten()
        .collect()
}

/// The ratio of the largest to the smallest of `t` over the window (half-width `nw`) of
/// pixel (y, x), which lies inside the image; NaNs left out, T clamped at 10⁻³.
fn contrast(t: &ndarray::ArrayView2<f32>, (y, x): (usize, usize), nw: usize) -> f32 {
    let window = t.slice(ndarray::s![y - nw..=y + nw, x - nw..=x + nw]);
    let values = window.iter().filter(|v| !v.is_nan()).map(|&v| v.max(1e-3));
    let (lo, hi) = values.fold((f32::INFINITY, 0.0f32), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    hi / lo
}
