//! The continuous sub-pixel refinement. From the integer search's parabola estimate, one
//! Gauss–Newton step on the shift minimises the signal model's residual with the reference
//! interpolated at the shift (cubic B-spline, analytic gradient), T and D solved in closed
//! form (variable projection); T, D and the residual are those of the refined shift.
//!
//! Why: the parabola through the 3×3 integer-shift costs is biased towards whole pixels
//! (pixel locking, up to 0.04 px at N = 3–5), which shrinks small displacements by 11–22 %
//! and the phase of weak objects with them. The parabola starts within a few hundredths of
//! a pixel, so one step suffices (with Keys interpolation, a second moved the bias curves of
//! `tests/tracking.rs` by about 0.001 px). The interpolator matters as much: Keys' phase
//! error moves the continuous minimum by up to 0.03 px away from whole pixels; the
//! B-spline's by a few thousandths, which `spline_bias.rs` predicts and takes off. Where
//! the step is not defined (no pattern gradient, a degenerate fit) the parabola estimate
//! stays.
//!
//! Two more sources of bias are removed. The reference's noise, interpolated, has a
//! variance that falls by a quarter from whole to half-pixel shifts
//! ([`bspline_noise_gain`]), so a fit against it is pulled towards half-pixel shifts: by
//! 3–5 % of a weak smooth field's displacement at 2000 photons/px. The step minimises the
//! residual less that expected noise term, with the noise level estimated from the data
//! ([`noise_gain`]). And at low N a noisy 3×3 of integer costs can put the parabola's vertex
//! far from the continuous minimum; the step there is continued in clamped steps rather
//! than refused (refused, the vertex stayed pixel-locked).

use std::ops::Range;

use ndarray::iter::AxisChunksIterMut;
use ndarray::{Array2, ArrayViewMut2, Axis, Ix2, s};
use rayon::prelude::*;

use super::bands;
use super::linalg::solve;
use super::search::{BAND, Stacks};
use super::window::moment2;
use super::{Output, Params, Status};
use crate::interpolate::{bspline, bspline_derivative, bspline_noise_gain, mirror};
use crate::model::from_affine;

/// A step longer than this (px, per axis) means the parabola estimate was not near a
/// minimum of the continuous residual: the step is clamped to it and continued.
const MAX_STEP_PX: f64 = 0.5;
/// Clamped steps at most; the parabola estimate stays where none ends with a step under
/// [`MAX_STEP_PX`].
const MAX_CLAMPED_STEPS: usize = 6;
/// How far (px, per axis) the clamped steps may lead from the parabola estimate.
const MAX_DETOUR_PX: f32 = 1.5;
/// Pixels whose fits estimate the noise level: a grid of about this many, on
/// [`NOISE_ROWS`] rows spread over the image, each of whose fits read a strip of the
/// reference's coefficients (at 2048² a fifth of the image).
const NOISE_SAMPLES: usize = 2048;
const NOISE_ROWS: usize = 8;

/// Maps of no fit yet (NaN), with the search's `status`.
pub(super) fn unfitted(status: Array2<u8>) -> Output {
    let nan = || Array2::<f32>::from_elem(status.dim(), f32::NAN);
    Output {
        dx: nan(),
        dy: nan(),
        transmission: nan(),
        darkfield: nan(),
        residual: nan(),
        status,
    }
}

/// The progress units of [`refine`] over `rows`: one per task of [`BAND`] rows.
pub(super) fn units(rows: Range<usize>) -> usize {
    rows.len().div_ceil(BAND)
}

/// Refines the pixels of `rows` into `out`, from the search's `shift`, with `st` holding the
/// coefficients those rows need ([`bands::coefficient_rows`]); one of `units` per task,
/// none after a cancellation.
pub(super) fn refine(
    st: &Stacks,
    p: &Params,
    shift: &Array2<[f32; 2]>,
    out: &mut Output,
    rows: Range<usize>,
    units: &crate::progress::Units,
) {
    // Tasks of BAND rows, each with its sample rows read once with the frames innermost
    // (gathered per pixel from N frames apart, they took a third of the refinement), its
    // fits written straight into the maps.
    fn tasks<'a>(a: &'a mut ArrayViewMut2<'_, f32>) -> AxisChunksIterMut<'a, f32, Ix2> {
        a.axis_chunks_iter_mut(Axis(0), BAND)
    }
    let Output {
        dx,
        dy,
        transmission,
        darkfield,
        residual,
        status,
    } = out;
    let mut maps =
        [dx, dy, transmission, darkfield, residual].map(|a| a.slice_mut(s![rows.clone(), ..]));
    let [dx, dy, t, d, res] = &mut maps;
    tasks(dx)
        .into_par_iter()
        .zip(tasks(dy))
        .zip(tasks(t))
        .zip(tasks(d))
        .zip(tasks(res))
        .enumerate()
        .for_each(|(b, ((((mut dx, mut dy), mut t), mut d), mut res))| {
            if !units.go_on() {
                return;
            }
            let y0 = rows.start + b * BAND;
            let mut ws = Workspace::reading(st, y0..y0 + dx.nrows(), p.window);
            for ((k, x), dx) in dx.indexed_iter_mut() {
                let y = y0 + k;
                let start = shift[[y, x]];
                if !start.iter().all(|v| v.is_finite()) {
                    continue;
                }
                // Only a converged search has a parabola near the minimum to start from.
                let step = status[[y, x]] == Status::Converged as u8;
                let fit = fit_at(st, p, y, x, start, step, &mut ws);
                [dy[[k, x]], *dx] = fit.shift;
                t[[k, x]] = fit.transmission;
                d[[k, x]] = fit.darkfield;
                res[[k, x]] = fit.residual;
            }
            units.finish_one();
        });
}

/// The fit at one pixel.
pub(super) struct Fit {
    /// `[dy, dx]` (px): refined, or the starting shift where the step was refused.
    pub shift: [f32; 2],
    pub transmission: f32,
    pub darkfield: f32,
    /// Relative RMS residual.
    pub residual: f32,
    /// The shift's standard error (px, `[dy, dx]`) from the residual ([`shift_sd`]); NaN
    /// for a fit without a step.
    pub shift_sd: [f32; 2],
}

/// Weighted sums over the window and the frames of S, R (the reference at the shift) and
/// G = ∇R (px⁻¹, `[∂y, ∂x]`), in units of the reference mean: f64 totals of vector lanes'
/// f32 sums (of at most [`F32_RUN`] values near 1 each).
#[derive(Default)]
struct Sums<T = f64> {
    w: T,
    r: T,
    s: T,
    rr: T,
    ss: T,
    sr: T,
    g: [T; 2],
    rg: [T; 2],
    sg: [T; 2],
    /// Σw G·Gᵀ: yy, xx, yx.
    gg: [T; 3],
    /// First moments Σw·o·X (o: the offset from the pixel, px, `[y, x]`) of S, R and G
    /// (`[o][axis of G]`): the background ramp's products, where the fit has one.
    ms: [T; 2],
    mr: [T; 2],
    mg: [[T; 2]; 2],
}

impl<T> Sums<T> {
    /// Every sum but Σw (the same in every frame).
    #[inline(always)]
    fn products(&mut self) -> [&mut T; 22] {
        let Sums {
            w: _,
            r,
            s,
            rr,
            ss,
            sr,
            g: [g0, g1],
            rg: [rg0, rg1],
            sg: [sg0, sg1],
            gg: [gg0, gg1, gg2],
            ms: [ms0, ms1],
            mr: [mr0, mr1],
            mg: [[mg00, mg01], [mg10, mg11]],
        } = self;
        [
            r, s, rr, ss, sr, g0, g1, rg0, rg1, sg0, sg1, gg0, gg1, gg2, ms0, ms1, mr0, mr1, mg00,
            mg01, mg10, mg11,
        ]
    }
}

impl Sums {
    /// Adds the lanes' f32 sums (of at most [`F32_RUN`] values each) in f64 and clears them.
    #[inline(always)]
    fn add_lanes(&mut self, f: &mut Sums<[f32; LANES]>) {
        for (total, lanes) in self.products().into_iter().zip(f.products()) {
            *total += lanes.iter().map(|&v| v as f64).sum::<f64>();
            *lanes = [0.0; LANES];
        }
    }
}

impl Sums {
    /// Takes the background ramp out of the products (Σ X·Y less Σw·o·X · Σw·o·Y / m2 along
    /// each offset; `m2` = Σw·o² over all frames): the ramp's columns are orthogonal to the
    /// constant and to each other under a symmetric window, so every fit on these sums is
    /// then one of `a + ramp + k·R`, with the ramp eliminated.
    fn without_ramp(&mut self, m2: f64) {
        let g = |a: usize| [self.mg[0][a], self.mg[1][a]];
        let along = |u: [f64; 2], v: [f64; 2]| (u[0] * v[0] + u[1] * v[1]) / m2;
        self.rr -= along(self.mr, self.mr);
        self.ss -= along(self.ms, self.ms);
        self.sr -= along(self.ms, self.mr);
        for a in 0..2 {
            self.rg[a] -= along(self.mr, g(a));
            self.sg[a] -= along(self.ms, g(a));
        }
        self.gg[0] -= along(g(0), g(0));
        self.gg[1] -= along(g(1), g(1));
        self.gg[2] -= along(g(0), g(1));
    }
}

/// The fit of pixel (y, x) starting from the sub-pixel shift `[dy, dx]` (px): when `step`,
/// one Gauss–Newton step that allows for the reference's noise ([`noise_pull`]), reached
/// through clamped steps where the first is longer than [`MAX_STEP_PX`]; then T, D and the
/// residual. `scratch` is reused between calls.
pub(super) fn fit_at(
    st: &Stacks,
    p: &Params,
    y: usize,
    x: usize,
    d0: [f32; 2],
    step: bool,
    ws: &mut Workspace,
) -> Fit {
    let mut start = d0;
    let mut sums = fit_sums(st, y, x, start, step, ws);
    let mut delta = None;
    if step {
        let step_at = |sums: &Sums, at: [f32; 2]| {
            gauss_newton_step(sums, p.dark_field, noise_pull(st.noise, sums, y, x, at))
        };
        let long = |d: &[f64; 2]| d.iter().any(|v| v.abs() > MAX_STEP_PX);
        delta = step_at(&sums, start);
        if let Some(mut walk) = delta.filter(long) {
            delta = None;
            let mut at = start;
            for _ in 0..MAX_CLAMPED_STEPS {
                // `walk` is longer than MAX_STEP_PX here: scaled down to it.
                let clamp = MAX_STEP_PX / walk.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                at = [0, 1].map(|a| at[a] + (walk[a] * clamp) as f32);
                if (0..2).any(|a| (at[a] - d0[a]).abs() > MAX_DETOUR_PX) {
                    break;
                }
                let here = fit_sums(st, y, x, at, true, ws);
                match step_at(&here, at) {
                    Some(d) if !long(&d) => {
                        (sums, start, delta) = (here, at, Some(d));
                        break;
                    }
                    Some(d) => walk = d,
                    None => break,
                }
            }
        }
    }
    let mut shift = start;
    if let Some(delta) = delta {
        // The sums at the new shift from R(q − d − δ) ≈ R − G·δ (so R² to second order).
        let dot = |v: [f64; 2]| v[0] * delta[0] + v[1] * delta[1];
        let quad = sums.gg[0] * delta[0] * delta[0]
            + 2.0 * sums.gg[2] * delta[0] * delta[1]
            + sums.gg[1] * delta[1] * delta[1];
        sums.rr += quad - 2.0 * dot(sums.rg);
        sums.r -= dot(sums.g);
        sums.sr -= dot(sums.sg);
        shift = [start[0] + delta[0] as f32, start[1] + delta[1] as f32];
    }
    let (k, a, res) = linear_fit(&sums, p.dark_field);
    // Only where the gradient sums were taken (a step): the fits that judge a shift
    // (`step` false) have no use for it.
    let shift_sd = match step {
        true => {
            let parameters = [2, 1 + p.dark_field as usize, 2 * st.ramp as usize];
            shift_sd(
                &sums,
                p.dark_field,
                res,
                st.n as f64 * effective_values(&st.kernel),
                parameters.iter().sum::<usize>() as f64,
            )
        }
        false => [f32::NAN; 2],
    };
    let (t, d) = if p.dark_field {
        from_affine(a, k, illumination_at(st, y, x, shift))
    } else {
        (k, f64::NAN)
    };
    Fit {
        shift,
        transmission: t as f32,
        darkfield: d as f32,
        residual: ((res.max(0.0) / sums.w).sqrt() / (sums.s / sums.w)) as f32,
        shift_sd,
    }
}

/// The number of equally weighted values a window of weights `kernel` (along each axis)
/// counts as per frame, (Σw)² / Σw².
fn effective_values(kernel: &[f32]) -> f64 {
    let (s1, s2) = kernel.iter().fold((0.0f64, 0.0f64), |(a, b), &k| {
        (a + k as f64, b + (k * k) as f64)
    });
    (s1 * s1 / s2).powi(2)
}

/// M at the reference position that pixel (y, x) maps to under `[dy, dx]` (px).
pub(super) fn illumination_at(st: &Stacks, y: usize, x: usize, [dy, dx]: [f32; 2]) -> f64 {
    let (h, w) = (st.h, st.w);
    let (my, mx) = (
        (y as f32 - dy).round().clamp(0.0, (h - 1) as f32) as usize,
        (x as f32 - dx).round().clamp(0.0, (w - 1) as f32) as usize,
    );
    st.light.m[my * w + mx] as f64
}

/// How well the fit of pixel `at`'s window (`[dy, dx, T, D]`) explains pixel (y, x)'s own
/// values: Σ over the frames of (S − a − k·R(· − d))², its model's a and k from T, D and
/// the M that fit used, in units of the reference mean squared.
pub(super) fn pixel_error(
    st: &Stacks,
    dark_field: bool,
    (y, x): (usize, usize),
    at: (usize, usize),
    [dy, dx, t, d]: [f32; 4],
    ws: &mut Workspace,
) -> f64 {
    let s = window_sums(st, &[1.0], y, x, [dy, dx], false, ws);
    let (t, d) = (t as f64, d as f64);
    let (a, k) = if dark_field {
        (
            t * (1.0 - d) * illumination_at(st, at.0, at.1, [dy, dx]),
            t * d,
        )
    } else {
        (0.0, t)
    };
    s.ss + a * a * s.w + k * k * s.rr - 2.0 * (a * s.s + k * s.sr - a * k * s.r)
}

/// The model's linear fit at the sums' shift: (k, a, the weighted residual sum) of the best
/// `S ≈ a + k·R`, or (T, 0, residual) of `S ≈ T·R` without dark-field.
fn linear_fit(s: &Sums, dark_field: bool) -> (f64, f64, f64) {
    if dark_field {
        let (k, a, var_s) = affine(s);
        (k, a, var_s - k * k * (s.rr - s.r * s.r / s.w))
    } else {
        let t = s.sr / s.rr;
        (t, 0.0, s.ss - s.sr * t)
    }
}

/// The best `S ≈ a + k·R`: (k, a, the weighted variance sum of S).
fn affine(s: &Sums) -> (f64, f64, f64) {
    let var_r = s.rr - s.r * s.r / s.w;
    let cov = s.sr - s.s * s.r / s.w;
    let k = cov / var_r;
    (k, (s.s - k * s.r) / s.w, s.ss - s.s * s.s / s.w)
}

/// The Gauss–Newton step `[δy, δx]` (px) on the shift, with the model's linear parameters
/// eliminated (Kaufman's variable projection): for the residual r = S − a − k·R(q − d),
/// ∂r/∂d = k·G, projected off the span of the linear parameters' columns (1 and R, or R
/// alone without dark-field). `pull` is the gradient of a term subtracted from the
/// residual sum, in units of 2k² ([`noise_pull`]). `None` where the step is not defined.
fn gauss_newton_step(s: &Sums, dark_field: bool, pull: [f64; 2]) -> Option<[f64; 2]> {
    let (k, gradient, [hyy, hxx, hyx]) = projected(s, dark_field);
    // H·δ = −Jᵀr + pull·k² with H = k²·hessian and Jᵀr = k·gradient.
    let det = hyy * hxx - hyx * hyx;
    if !(hyy > 0.0 && det > 1e-12 * hyy * hxx && k.abs() > 1e-6) {
        return None;
    }
    let [gy, gx] = [0, 1].map(|a| gradient[a] - k * pull[a]);
    Some([
        -(hxx * gy - hyx * gx) / (det * k),
        -(hyy * gx - hyx * gy) / (det * k),
    ])
}

/// The model's scale k, Jᵀr / k and the shift's JᵀJ / k² (`[yy, xx, yx]`), with the
/// linear parameters eliminated ([`gauss_newton_step`]).
fn projected(s: &Sums, dark_field: bool) -> (f64, [f64; 2], [f64; 3]) {
    if dark_field {
        let (k, a, _) = affine(s);
        // Jᵀr / k and (the projected JᵀJ) / k², with M = [[w, r], [r, rr]] and
        // B = [Σw G; Σw R·G] the columns' products with G.
        let jr = [0, 1].map(|i| s.sg[i] - a * s.g[i] - k * s.rg[i]);
        let det_m = s.w * s.rr - s.r * s.r;
        let proj = |i: usize, j: usize| {
            (s.rr * s.g[i] * s.g[j] - s.r * (s.g[i] * s.rg[j] + s.rg[i] * s.g[j])
                + s.w * s.rg[i] * s.rg[j])
                / det_m
        };
        (
            k,
            jr,
            [
                s.gg[0] - proj(0, 0),
                s.gg[1] - proj(1, 1),
                s.gg[2] - proj(0, 1),
            ],
        )
    } else {
        let t = s.sr / s.rr;
        let jr = [0, 1].map(|i| s.sg[i] - t * s.rg[i]);
        let proj = |i: usize, j: usize| s.rg[i] * s.rg[j] / s.rr;
        (
            t,
            jr,
            [
                s.gg[0] - proj(0, 0),
                s.gg[1] - proj(1, 1),
                s.gg[2] - proj(0, 1),
            ],
        )
    }
}

/// The standard error (px, `[dy, dx]`) of the shift fitted from sums `s` whose residual sum
/// is `res`: σ²·(k²·JᵀJ)⁻¹ with σ² the residual sum over its degrees of freedom, the
/// window's values (`values`, weighted as effective ones) less the fit's parameters
/// (`parameters`). NaN where the shift is not defined.
fn shift_sd(s: &Sums, dark_field: bool, res: f64, values: f64, parameters: f64) -> [f32; 2] {
    let (k, _, [hyy, hxx, hyx]) = projected(s, dark_field);
    let det = (hyy * hxx - hyx * hyx) * k * k;
    let var = res.max(0.0) / (values - parameters).max(1.0) / det;
    match det > 0.0 {
        true => [hxx * var, hyy * var].map(|v| v.sqrt() as f32),
        false => [f32::NAN; 2],
    }
}

/// The gradient with respect to the shift `[dy, dx]` (px) of the reference noise's expected
/// share of the residual sum at pixel (y, x), `k²·noise·Σw R·V(ty)·V(tx)` with V the
/// interpolated noise's variance at the shift's fractions ([`bspline_noise_gain`]), in
/// units of 2k² (the Hessian's scale).
fn noise_pull(noise: f64, s: &Sums, y: usize, x: usize, [dy, dx]: [f32; 2]) -> [f64; 2] {
    if noise == 0.0 {
        return [0.0; 2];
    }
    // The fractions fall as the shift grows: ∂t/∂d = −1.
    let [vy, dvy] = bspline_noise_gain(y as f64 - dy as f64);
    let [vx, dvx] = bspline_noise_gain(x as f64 - dx as f64);
    let scale = -noise * s.r / 2.0;
    [scale * dvy * vx, scale * vy * dvx]
}

/// The reference's noise variance per unit of normalised intensity ([`Stacks::noise`]),
/// from the converged fits of a grid of pixels: the median over them of the residual sum
/// over what one unit would give, `dof·(S̄ + k²·V·R̄)` (S's and the interpolated R's
/// Poisson-like noise; dof = Σw − tr((XᵀWX)⁻¹XᵀW²X), the weighted least squares' residual
/// degrees of freedom for the columns X = [1, R, Gy, Gx]). The median keeps misfits at
/// object edges out; with few degrees of freedom it lies below the mean, which the window's
/// many lightly weighted values keep small (within 2.4 % at N = 3, Nw = 1: the unit test).
/// 0 where no pixel could tell. With it, the median relative residual of those fits (the
/// image's typical residual, which marks misfits: [`super::adaptive`]), `None` where none
/// has one.
pub(super) fn noise_gain(
    st: &Stacks,
    p: &Params,
    shift: &Array2<[f32; 2]>,
    status: &Array2<u8>,
) -> (f64, Option<f32>) {
    let pixels: Vec<(usize, usize)> = noise_pixels(p, (st.h, st.w))
        .filter(|&q| status[q] == Status::Converged as u8)
        .collect();
    let squared = squared(&st.kernel);
    let mut fits: Vec<(f32, Option<f64>)> = Vec::with_capacity(pixels.len());
    let mut spare = Vec::new();
    for run in bands::runs(&pixels, p) {
        let st = st.with_rows(bands::coefficient_rows(bands::rows_of(run), p, st.h), spare);
        fits.par_extend(run.par_iter().map(|&(y, x)| {
            noise_fit(
                &st,
                p,
                &squared,
                (y, x),
                shift[[y, x]],
                &mut Workspace::default(),
            )
        }));
        spare = st.into_spare();
    }
    let mut residuals: Vec<f32> = fits.iter().map(|f| f.0).filter(|r| r.is_finite()).collect();
    let median_residual = (!residuals.is_empty()).then(|| {
        let mid = residuals.len() / 2;
        *residuals.select_nth_unstable_by(mid, f32::total_cmp).1
    });
    let gain = median_gain(fits.into_iter().filter_map(|f| f.1).collect());
    (gain, median_residual)
}

/// The pixels of [`noise_gain`]'s grid on an `h` × `w` image, by row: [`NOISE_ROWS`] rows
/// spread over the image within the search's border, about [`NOISE_SAMPLES`] in all.
pub(super) fn noise_pixels(
    p: &Params,
    (h, w): (usize, usize),
) -> impl Iterator<Item = (usize, usize)> {
    let border = p.border().min(h / 2);
    let inner = h - 2 * border;
    let rows = NOISE_ROWS.min(inner);
    let step = (w * rows / NOISE_SAMPLES).max(1);
    (0..rows)
        .map(move |j| border + (2 * j + 1) * inner / (2 * rows))
        .flat_map(move |y| (0..w).step_by(step).map(move |x| (y, x)))
}

/// The window's weights squared, as [`noise_fit`] takes them.
pub(super) fn squared(kernel: &[f32]) -> Vec<f32> {
    kernel.iter().map(|k| k * k).collect()
}

/// The fit of pixel `q` from `start` (`[dy, dx]`, px): its relative residual, and its
/// [`noise_ratio`].
pub(super) fn noise_fit(
    st: &Stacks,
    p: &Params,
    squared: &[f32],
    q: (usize, usize),
    start: [f32; 2],
    ws: &mut Workspace,
) -> (f32, Option<f64>) {
    let fit = fit_at(st, p, q.0, q.1, start, true, ws);
    (fit.residual, noise_ratio(st, p, squared, q, &fit, ws))
}

/// The noise variance per unit of normalised intensity from pixels' [`noise_ratio`]s, their
/// median; 0 where none could tell.
pub(super) fn median_gain(mut ratios: Vec<f64>) -> f64 {
    if ratios.is_empty() {
        return 0.0;
    }
    let mid = ratios.len() / 2;
    let gain = *ratios.select_nth_unstable_by(mid, f64::total_cmp).1;
    log::debug!(
        "tracking: noise variance {gain:.3e} per unit intensity (normalised) from {} pixels",
        ratios.len()
    );
    gain.max(0.0)
}

/// The residual sum of pixel (y, x)'s `fit` over what one unit of noise variance would
/// give ([`noise_gain`]); `squared`: the window's weights squared.
fn noise_ratio(
    st: &Stacks,
    p: &Params,
    squared: &[f32],
    (y, x): (usize, usize),
    fit: &Fit,
    ws: &mut Workspace,
) -> Option<f64> {
    let sums = fit_sums(st, y, x, fit.shift, true, ws);
    let squares = window_sums(st, squared, y, x, fit.shift, true, ws);
    let (k, _, res) = linear_fit(&sums, p.dark_field);
    // The ramp's columns are orthogonal to the others: their leverage adds, Σw²·o² / Σw·o²
    // each.
    let ramp = match st.ramp {
        true => 2.0 * (moment2(squared) / moment2(&st.kernel)) as f64,
        false => 0.0,
    };
    let dof = sums.w - leverage(&sums, &squares, p.dark_field)? - ramp;
    let [vy, _] = bspline_noise_gain(y as f64 - fit.shift[0] as f64);
    let [vx, _] = bspline_noise_gain(x as f64 - fit.shift[1] as f64);
    let unit = dof * (sums.s + k * k * vy * vx * sums.r) / sums.w;
    (dof > 0.0 && unit > 0.0 && res.is_finite()).then_some(res / unit)
}

/// tr((XᵀWX)⁻¹·XᵀW²X) for the columns [1, R, Gy, Gx] (without dark-field [R, Gy, Gx]),
/// from the sums with weights w and w²: what the fit's parameters take of Σw·noise².
fn leverage(s: &Sums, s2: &Sums, dark_field: bool) -> Option<f64> {
    let gram = |s: &Sums| {
        [
            [s.w, s.r, s.g[0], s.g[1]],
            [s.r, s.rr, s.rg[0], s.rg[1]],
            [s.g[0], s.rg[0], s.gg[0], s.gg[2]],
            [s.g[1], s.rg[1], s.gg[2], s.gg[1]],
        ]
    };
    // Without dark-field the columns start at R.
    let skip = usize::from(!dark_field);
    let n = 4 - skip;
    let pick = |m: [[f64; 4]; 4]| -> [[f64; 4]; 4] {
        std::array::from_fn(|i| std::array::from_fn(|j| m[(i + skip) % 4][(j + skip) % 4]))
    };
    let (a, b) = (pick(gram(s)), pick(gram(s2)));
    // The trace of A⁻¹B, one column of B at a time.
    (0..n)
        .map(|j| solve(a, b.map(|row| row[j]), n).map(|x| x[j]))
        .sum()
}

/// What a worker's fits reuse: where a band of the sample's rows is read, those rows
/// (else [`window_sums`] gathers each window from the frames); scratch.
#[derive(Default)]
pub(super) struct Workspace {
    band: Option<SampleBand>,
    scratch: Vec<f32>,
    /// The window's side and the frames that `scratch` is laid out for: its padding lanes
    /// are zero for that layout.
    layout: (usize, usize),
}

impl Workspace {
    /// A workspace whose fits, of pixels in `rows` with windows of half-width `nw`, read the
    /// sample's rows from one copy with the frames innermost ([`SampleBand`]): for many fits
    /// in few rows.
    pub(super) fn reading(st: &Stacks, rows: Range<usize>, nw: usize) -> Self {
        let rows = rows.start.saturating_sub(nw)..(rows.end + nw).min(st.h);
        Workspace {
            band: Some(SampleBand::new(st, rows)),
            ..Workspace::default()
        }
    }
}

/// The sample's rows [y0, y1) as [`window_sums`] reads them (1 + the normalised value,
/// frames innermost).
struct SampleBand {
    y0: usize,
    w: usize,
    n: usize,
    values: Vec<f32>,
}

impl SampleBand {
    fn new(st: &Stacks, rows: std::ops::Range<usize>) -> Self {
        let (n, h, w, y0) = (st.n, st.h, st.w, rows.start);
        let mut values = vec![0.0f32; rows.len() * w * n];
        // Block by block of pixels, which stays in the first-level cache while each
        // frame's run is written into it (frame by frame over the whole band, each pass
        // touched every cache line of it).
        const PIXELS: usize = 64;
        for (c, block) in values.chunks_mut(n * PIXELS).enumerate() {
            let first = y0 * w + c * PIXELS;
            for i in 0..n {
                for (k, v) in block.iter_mut().skip(i).step_by(n).enumerate() {
                    *v = 1.0 + st.s(i * h * w + first + k);
                }
            }
        }
        SampleBand { y0, w, n, values }
    }

    /// The frames' values at `count` pixels from (y, x) along the row.
    fn run(&self, y: usize, x: usize, count: usize) -> &[f32] {
        &self.values[((y - self.y0) * self.w + x) * self.n..][..count * self.n]
    }
}

/// `Σₜ c[t]·v[at + t·stride + l]` for [`LANES`] values l side by side: the interpolation's
/// four taps along either axis. A function, not a closure, so that it is compiled for AVX2
/// in [`window_sums`]'s AVX2 version.
#[inline(always)]
fn taps(v: &[f32], at: usize, stride: usize, c: &[f32; 4]) -> [f32; LANES] {
    let tap =
        |t: usize| -> &[f32; LANES] { v[at + t * stride..][..LANES].try_into().expect("a lane") };
    let (t0, t1, t2, t3) = (tap(0), tap(1), tap(2), tap(3));
    std::array::from_fn(|l| c[0] * t0[l] + c[1] * t1[l] + c[2] * t2[l] + c[3] * t3[l])
}

/// Values summed side by side in [`window_sums`]: one AVX2 vector of f32.
const LANES: usize = 8;

/// The window sums at pixel (y, x) with the reference at `[dy, dx]`, weighted by `kernel`
/// (the window's weights along one axis); the gradient sums only when `gradients`.
///
/// A window row's values lie side by side in lanes, each position's frames together (as
/// the coefficients and the sample's band hold them), the row padded to whole vectors by
/// lanes of zero weight: with a lane per frame, five of eight lanes idled at N = 3.
/// Compiled for AVX2 too (eight values per instruction), taken where the CPU has it; the
/// same operations in the same order, so the same results.
#[allow(clippy::needless_range_loop)] // lanes side by side read clearest by index
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn window_sums(
    st: &Stacks,
    kernel: &[f32],
    y: usize,
    x: usize,
    [dy, dx]: [f32; 2],
    gradients: bool,
    ws: &mut Workspace,
) -> Sums {
    let Workspace {
        band,
        scratch,
        layout,
    } = ws;
    let (n, h, w) = (st.n, st.h, st.w);
    let side = kernel.len();
    let nw = side / 2;
    // The rows (and columns) of coefficients the window's four-tap interpolation reads.
    let rows = side + 3;
    // Values in a window row, and in its lanes.
    let (len, padded) = (side * n, (side * n).div_ceil(LANES) * LANES);
    // The scratch: a row of coefficients (its zero tail read by the padding lanes' taps),
    // the horizontal pass and its x derivative, the sample's window, each lane's weight
    // along x and its first moment. Zeroed for each layout only: every value read is
    // written first, except in the zero tails and padding lanes, which are never written.
    let sizes = [
        3 * n + padded,
        rows * padded,
        rows * padded,
        side * padded,
        padded,
        padded,
    ];
    let total = sizes.iter().sum::<usize>();
    if *layout != (side, n) {
        scratch.clear();
        scratch.resize(total, 0.0);
        *layout = (side, n);
    }
    let (source, rest) = scratch[..total].split_at_mut(sizes[0]);
    let (horiz, rest) = rest.split_at_mut(sizes[1]);
    let (horiz_dx, rest) = rest.split_at_mut(sizes[2]);
    let (window, rest) = rest.split_at_mut(sizes[3]);
    let (along, moment) = rest.split_at_mut(sizes[4]);
    let positions = along.chunks_exact_mut(n).zip(moment.chunks_exact_mut(n));
    for (q, (a, o)) in positions.take(side).enumerate() {
        a.fill(kernel[q]);
        o.fill(kernel[q] * (q as f32 - nw as f32));
    }
    // The window shares one fractional shift: the weights once, then a separable 4-tap
    // interpolation of the coefficients (and of their x derivative).
    let (fy, fx) = (y as f64 - dy as f64, x as f64 - dx as f64);
    let (iy, ix) = (fy.floor() as isize, fx.floor() as isize);
    let (ky, kx) = (bspline(fy - iy as f64), bspline(fx - ix as f64));
    let (dky, dkx) = (
        bspline_derivative(fy - iy as f64),
        bspline_derivative(fx - ix as f64),
    );
    // Horizontal pass over the rows the vertical taps need, on the data as given (the
    // sums are in f64, so no centring is needed).
    let x0 = ix - nw as isize - 1;
    for j in 0..rows {
        let yy = mirror(iy - nw as isize - 1 + j as isize, h);
        if x0 >= 0 && x0 as usize + rows <= w {
            source[..rows * n].copy_from_slice(st.coefficients_run(yy, x0 as usize, rows));
        } else {
            for (q, values) in source.chunks_exact_mut(n).take(rows).enumerate() {
                values.copy_from_slice(st.coefficients_at(yy, mirror(x0 + q as isize, w)));
            }
        }
        for c in (0..padded).step_by(LANES) {
            let at = j * padded + c;
            horiz[at..at + LANES].copy_from_slice(&taps(source, c, n, &kx));
            if gradients {
                horiz_dx[at..at + LANES].copy_from_slice(&taps(source, c, n, &dkx));
            }
        }
    }
    // The sample's window, row by row.
    for (r, values) in window.chunks_exact_mut(padded).enumerate() {
        let (sy, sx) = (y + r - nw, x - nw);
        let values = &mut values[..len];
        match band {
            Some(band) => values.copy_from_slice(band.run(sy, sx, side)),
            None => {
                for (q, frames) in values.chunks_exact_mut(n).enumerate() {
                    for (i, v) in frames.iter_mut().enumerate() {
                        *v = 1.0 + st.s(i * h * w + sy * w + sx + q);
                    }
                }
            }
        }
    }
    // The reference in units of its mean: the vertical taps scaled once.
    let scaled = |c: [f32; 4]| c.map(|c| c * st.scale());
    let (ky, dky) = (scaled(ky), scaled(dky));
    // Σw: the same in every frame.
    let w_frame = (0..side * side).fold(0.0f32, |acc, k| acc + kernel[k / side] * kernel[k % side]);
    // The first moments, for the fits' ramp ([`fit_sums`]).
    let ramp = st.ramp && side > 1;
    let mut totals = Sums {
        w: n as f64 * w_frame as f64,
        ..Sums::default()
    };
    // Each lane's sums in f32 over at most F32_RUN window values near 1, then added to the
    // f64 totals: adding them after every value was a quarter of this function's time.
    let mut f = Sums::<[f32; LANES]>::default();
    let mut held = 0;
    for c in (0..padded).step_by(LANES) {
        let lanes = |v: &[f32]| -> [f32; LANES] { v[c..c + LANES].try_into().expect("a lane") };
        let (a, o) = (lanes(along), lanes(moment));
        for r in 0..side {
            if held == F32_RUN {
                totals.add_lanes(&mut f);
                held = 0;
            }
            held += 1;
            let at = r * padded + c;
            let wq: [f32; LANES] = std::array::from_fn(|l| kernel[r] * a[l]);
            let rv = taps(horiz, at, padded, &ky);
            let sv: [f32; LANES] = window[at..at + LANES].try_into().expect("a lane");
            for l in 0..LANES {
                f.r[l] += wq[l] * rv[l];
                f.s[l] += wq[l] * sv[l];
                f.rr[l] += wq[l] * rv[l] * rv[l];
                f.ss[l] += wq[l] * sv[l] * sv[l];
                f.sr[l] += wq[l] * sv[l] * rv[l];
            }
            // Each lane's weight times its offset from the pixel (px), `[y, x]`.
            let oy = r as f32 - nw as f32;
            let wo: [[f32; LANES]; 2] = [
                std::array::from_fn(|l| wq[l] * oy),
                std::array::from_fn(|l| kernel[r] * o[l]),
            ];
            if ramp {
                for o in 0..2 {
                    for l in 0..LANES {
                        f.ms[o][l] += wo[o][l] * sv[l];
                        f.mr[o][l] += wo[o][l] * rv[l];
                    }
                }
            }
            if gradients {
                let g = [
                    taps(horiz, at, padded, &dky),
                    taps(horiz_dx, at, padded, &ky),
                ];
                for (a, ga) in g.iter().enumerate() {
                    for l in 0..LANES {
                        f.g[a][l] += wq[l] * ga[l];
                        f.rg[a][l] += wq[l] * rv[l] * ga[l];
                        f.sg[a][l] += wq[l] * sv[l] * ga[l];
                    }
                    if ramp {
                        for o in 0..2 {
                            for l in 0..LANES {
                                f.mg[o][a][l] += wo[o][l] * ga[l];
                            }
                        }
                    }
                }
                for l in 0..LANES {
                    f.gg[0][l] += wq[l] * g[0][l] * g[0][l];
                    f.gg[1][l] += wq[l] * g[1][l] * g[1][l];
                    f.gg[2][l] += wq[l] * g[0][l] * g[1][l];
                }
            }
        }
    }
    totals.add_lanes(&mut f);
    totals
}

/// Window values a lane of [`window_sums`] sums in f32 before they go to the f64 totals.
const F32_RUN: usize = 64;

/// [`window_sums`] over the stacks' window, less the background ramp where the fit has one
/// ([`Sums::without_ramp`]): the sums every fit of the shift, T and D reads.
fn fit_sums(
    st: &Stacks,
    y: usize,
    x: usize,
    at: [f32; 2],
    gradients: bool,
    ws: &mut Workspace,
) -> Sums {
    let mut sums = window_sums(st, &st.kernel, y, x, at, gradients, ws);
    if st.ramp {
        sums.without_ramp(st.m2 as f64);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Units;
    use crate::simulate::{Preset, simulate};

    /// The shift's standard error ([`shift_sd`]) is the scatter of the fitted shifts: on a
    /// uniform field with Poisson noise, the RMS error of fits started at the true shift
    /// over the RMS of their standard errors, per axis. Measured 1.10–1.21: the model takes
    /// the reference as exact, whose noise also moves the fit (mean errors 0.002–0.008 px
    /// against standard errors of 0.014–0.035 px, so not a bias).
    #[test]
    fn shift_sd_is_the_shifts_scatter() {
        for (scans, window, hamming) in [(20, 1, false), (5, 1, false), (3, 2, false), (5, 2, true)]
        {
            let mut c = Preset::MaskDiagonal.config(128, scans, 5);
            c.flux_photons = 2000.0;
            let truth = [-0.4f32, 1.3];
            c.sample = crate::simulate::Sample::Uniform {
                dx_px: truth[1] as f64,
                dy_px: truth[0] as f64,
                transmission: 0.7,
                darkfield: 0.8,
            };
            let case = simulate(&c).unwrap();
            let p = Params {
                window,
                hamming,
                ..Params::default()
            };
            let (r, s) = (case.reference.view(), case.sample.view());
            let st = Stacks::without_sums(r, s, &p, None, 0..128, Vec::new());
            let mut ws = Workspace::default();
            let (mut error2, mut sd2) = ([0.0f64; 2], [0.0f64; 2]);
            for y in 12..116 {
                for x in 12..116 {
                    let fit = fit_at(&st, &p, y, x, truth, true, &mut ws);
                    for a in 0..2 {
                        error2[a] += ((fit.shift[a] - truth[a]) as f64).powi(2);
                        sd2[a] += (fit.shift_sd[a] as f64).powi(2);
                    }
                }
            }
            for a in 0..2 {
                let ratio = (error2[a] / sd2[a]).sqrt();
                eprintln!("N {scans}, Nw {window}, Hamming {hamming}, axis {a}: {ratio:.3}");
                assert!(
                    (1.0..1.3).contains(&ratio),
                    "N {scans}, Nw {window}: {ratio:.3}"
                );
            }
        }
    }

    /// [`window_sums`] against the same sums taken value by value in f64, each value's 4×4
    /// B-spline taps read from the coefficients one by one: for window rows that fill their
    /// vectors or not (N = 3, 5, 20; Nw = 1, 2), with and without the sample's band, and for
    /// windows whose taps reach past the image's edge (mirrored). The f32 sums of up to 64
    /// values near 1 each hold about 6 digits: measured within 3e-7 × Σw.
    #[test]
    fn window_sums_are_the_values_sums() {
        let size = 40;
        for (scans, window) in [(3, 1), (3, 2), (5, 1), (20, 1), (20, 2)] {
            let case = simulate(&Preset::SandpaperRandom.config(size, scans, 5)).unwrap();
            let p = Params {
                window,
                ..Params::default()
            };
            let (r, s) = (case.reference.view(), case.sample.view());
            let mut st = Stacks::without_sums(r, s, &p, None, 0..size, Vec::new());
            st.ramp = true;
            let (n, nw) = (scans, window as isize);
            let at = |y: isize, x: isize, i: usize| {
                st.coefficients_at(mirror(y, size), mirror(x, size))[i] as f64
            };
            let naive = |(y, x): (usize, usize), [dy, dx]: [f32; 2]| {
                let mut sums = Sums::<f64>::default();
                for (oy, ox) in (-nw..=nw).flat_map(|oy| (-nw..=nw).map(move |ox| (oy, ox))) {
                    let wq = (st.kernel[(oy + nw) as usize] * st.kernel[(ox + nw) as usize]) as f64;
                    let (py, px) = (y as isize + oy, x as isize + ox);
                    let (fy, fx) = (py as f64 - dy as f64, px as f64 - dx as f64);
                    let (iy, ix) = (fy.floor() as isize, fx.floor() as isize);
                    let (ky, kx) = (bspline(fy - iy as f64), bspline(fx - ix as f64));
                    let (gy, gx) = (
                        bspline_derivative(fy - iy as f64),
                        bspline_derivative(fx - ix as f64),
                    );
                    for i in 0..n {
                        let tap = |a: &[f32; 4], b: &[f32; 4]| {
                            let mut v = 0.0;
                            for (j, &ka) in a.iter().enumerate() {
                                for (k, &kb) in b.iter().enumerate() {
                                    let c = at(iy - 1 + j as isize, ix - 1 + k as isize, i);
                                    v += ka as f64 * kb as f64 * c;
                                }
                            }
                            v * st.scale() as f64
                        };
                        let (rv, g) = (tap(&ky, &kx), [tap(&gy, &kx), tap(&ky, &gx)]);
                        let sv =
                            1.0 + st.s(i * size * size + py as usize * size + px as usize) as f64;
                        let o = [oy as f64, ox as f64];
                        sums.w += wq;
                        sums.r += wq * rv;
                        sums.s += wq * sv;
                        sums.rr += wq * rv * rv;
                        sums.ss += wq * sv * sv;
                        sums.sr += wq * sv * rv;
                        for a in 0..2 {
                            sums.g[a] += wq * g[a];
                            sums.rg[a] += wq * rv * g[a];
                            sums.sg[a] += wq * sv * g[a];
                            sums.ms[a] += wq * o[a] * sv;
                            sums.mr[a] += wq * o[a] * rv;
                            for (mg, gb) in sums.mg[a].iter_mut().zip(g) {
                                *mg += wq * o[a] * gb;
                            }
                        }
                        sums.gg[0] += wq * g[0] * g[0];
                        sums.gg[1] += wq * g[1] * g[1];
                        sums.gg[2] += wq * g[0] * g[1];
                    }
                }
                sums
            };
            let last = size - 1 - window;
            let cases = [
                ((20, 17), [0.3, -1.6]),
                ((window, window), [1.3, 2.7]),
                ((last, last), [-2.2, -0.4]),
                ((window, last), [0.9, -3.5]),
            ];
            for ((q, d), band) in cases.into_iter().zip([false, true, false, true]) {
                let mut ws = match band {
                    true => Workspace::reading(&st, 0..size, window),
                    false => Workspace::default(),
                };
                let mut fast = window_sums(&st, &st.kernel, q.0, q.1, d, true, &mut ws);
                let mut slow = naive(q, d);
                let w = slow.w;
                assert!((fast.w - w).abs() < 1e-6 * w, "{} against {w}", fast.w);
                for (k, (a, b)) in fast.products().into_iter().zip(slow.products()).enumerate() {
                    assert!(
                        (*a - *b).abs() < 1e-6 * w,
                        "N {n}, Nw {nw}, pixel {q:?}, product {k}: {a} against {b}"
                    );
                }
            }
        }
    }

    /// The estimate matches the simulator's Poisson noise: photon counts have variance
    /// equal to their mean, so one unit of normalised intensity has variance 1/mean
    /// (measured: within 2.4 %, N = 3–20, Nw = 1–3, 300–2000 photons). The bound, 5 %, is
    /// where the error would move a weak field's slope by 0.15 % (5 % of the 3 % the
    /// correction removes), well under what the slope test resolves. On a uniform field:
    /// where objects' edges are misfit, the median rises (+6–14 % on the crowded 96² blob
    /// preset, +1 % at 512²).
    #[test]
    fn noise_level_is_the_photon_noise() {
        for (flux, scans, window) in [
            (300.0, 20, 1),
            (2000.0, 20, 1),
            (2000.0, 10, 2),
            (500.0, 5, 2),
            (2000.0, 5, 1),
            (2000.0, 3, 1),
            (2000.0, 3, 3),
        ] {
            let mut c = Preset::MaskDiagonal.config(96, scans, 3);
            c.flux_photons = flux;
            c.sample = crate::simulate::Sample::Uniform {
                dx_px: 1.3,
                dy_px: -0.4,
                transmission: 0.7,
                darkfield: 0.8,
            };
            let case = simulate(&c).unwrap();
            let p = Params {
                window,
                max_shift: 9,
                ..Params::default()
            };
            let st = Stacks::new(case.reference.view(), case.sample.view(), &p, None);
            let (shift, status) =
                super::super::search::exhaustive(&st, &p, &Units::new(crate::progress::NONE, 1))
                    .unwrap();
            let (gain, _) = noise_gain(&st, &p, &shift, &status);
            let expected = st.scale() as f64;
            assert!(
                (gain / expected - 1.0).abs() < 0.05,
                "flux {flux}, N {scans}, Nw {window}: {gain:.3e} against {expected:.3e}"
            );
        }
        let mut c = Preset::MaskDiagonal.config(96, 20, 3);
        c.poisson_noise = false;
        let case = simulate(&c).unwrap();
        let p = Params::default();
        let st = Stacks::new(case.reference.view(), case.sample.view(), &p, None);
        let (shift, status) =
            super::super::search::exhaustive(&st, &p, &Units::new(crate::progress::NONE, 1))
                .unwrap();
        let (gain, _) = noise_gain(&st, &p, &shift, &status);
        assert!(gain < 0.01 * st.scale() as f64, "noise-free: {gain:.3e}");
    }
}
