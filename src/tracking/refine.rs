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
//! B-spline's by a few thousandths. Where the step is not defined (no pattern gradient, a
//! degenerate fit) the parabola estimate stays.

use ndarray::Array2;
use rayon::prelude::*;

use super::search::Stacks;
use super::{Output, Params, Status};
use crate::interpolate::{bspline, bspline_derivative, mirror};
use crate::model::from_affine;

/// A step longer than this (px, per axis) means the parabola estimate was not near a
/// minimum of the continuous residual: the step is refused.
const MAX_STEP_PX: f64 = 0.5;

pub(super) fn refine(
    st: &Stacks,
    p: &Params,
    shift: &Array2<[f32; 2]>,
    status: Array2<u8>,
) -> Output {
    let (h, w) = (st.h, st.w);
    let nan = || Array2::<f32>::from_elem((h, w), f32::NAN);
    let mut out = Output {
        dx: nan(),
        dy: nan(),
        transmission: nan(),
        darkfield: nan(),
        residual: nan(),
        status,
    };
    let rows: Vec<Vec<(usize, Fit)>> = (0..h)
        .into_par_iter()
        .map(|y| {
            let mut scratch = Vec::new();
            (0..w)
                .filter(|&x| shift[[y, x]].iter().all(|v| v.is_finite()))
                .map(|x| {
                    // Only a converged search has a parabola near the minimum to start from.
                    let step = out.status[[y, x]] == Status::Converged as u8;
                    (x, fit_at(st, p, y, x, shift[[y, x]], step, &mut scratch))
                })
                .collect()
        })
        .collect();
    for (y, row) in rows.into_iter().enumerate() {
        for (x, fit) in row {
            [out.dy[[y, x]], out.dx[[y, x]]] = fit.shift;
            out.transmission[[y, x]] = fit.transmission;
            out.darkfield[[y, x]] = fit.darkfield;
            out.residual[[y, x]] = fit.residual;
        }
    }
    out
}

/// The fit at one pixel.
pub(super) struct Fit {
    /// `[dy, dx]` (px): refined, or the starting shift where the step was refused.
    pub shift: [f32; 2],
    pub transmission: f32,
    pub darkfield: f32,
    /// Relative RMS residual.
    pub residual: f32,
}

/// Weighted sums over the window and the frames of S, R (the reference at the shift) and
/// G = ∇R (px⁻¹, `[∂y, ∂x]`), in units of the reference mean: f64 totals of per-frame f32
/// sums (a window of values near 1 each).
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
}

impl Sums {
    fn add(&mut self, f: &Sums<f32>) {
        let pairs = [
            (&mut self.w, f.w),
            (&mut self.r, f.r),
            (&mut self.s, f.s),
            (&mut self.rr, f.rr),
            (&mut self.ss, f.ss),
            (&mut self.sr, f.sr),
        ];
        for (total, v) in pairs {
            *total += v as f64;
        }
        for a in 0..2 {
            self.g[a] += f.g[a] as f64;
            self.rg[a] += f.rg[a] as f64;
            self.sg[a] += f.sg[a] as f64;
        }
        for a in 0..3 {
            self.gg[a] += f.gg[a] as f64;
        }
    }
}

/// The fit of pixel (y, x) starting from the sub-pixel shift `[dy, dx]` (px): one
/// Gauss–Newton step when `step`, then T, D and the residual. `scratch` is reused between
/// calls.
pub(super) fn fit_at(
    st: &Stacks,
    p: &Params,
    y: usize,
    x: usize,
    d0: [f32; 2],
    step: bool,
    scratch: &mut Vec<f32>,
) -> Fit {
    let mut sums = window_sums(st, p, y, x, d0, step, scratch);
    let mut shift = d0;
    let delta = if step {
        gauss_newton_step(&sums, p.dark_field)
    } else {
        None
    };
    if let Some(delta) = delta {
        // The sums at the new shift from R(q − d − δ) ≈ R − G·δ (so R² to second order).
        let dot = |v: [f64; 2]| v[0] * delta[0] + v[1] * delta[1];
        let quad = sums.gg[0] * delta[0] * delta[0]
            + 2.0 * sums.gg[2] * delta[0] * delta[1]
            + sums.gg[1] * delta[1] * delta[1];
        sums.rr += quad - 2.0 * dot(sums.rg);
        sums.r -= dot(sums.g);
        sums.sr -= dot(sums.sg);
        shift = [d0[0] + delta[0] as f32, d0[1] + delta[1] as f32];
    }
    let (t, d, res) = if p.dark_field {
        let (k, a, var_s) = affine(&sums);
        let cov = k * (sums.rr - sums.r * sums.r / sums.w);
        // M at the reference position the pixel maps to.
        let (h, w) = (st.h, st.w);
        let (my, mx) = (
            (y as f32 - shift[0]).round().clamp(0.0, (h - 1) as f32) as usize,
            (x as f32 - shift[1]).round().clamp(0.0, (w - 1) as f32) as usize,
        );
        let (t, d) = from_affine(a, k, st.light.m[my * w + mx] as f64);
        (t, d, var_s - cov * k)
    } else {
        let t = sums.sr / sums.rr;
        (t, f64::NAN, sums.ss - sums.sr * t)
    };
    Fit {
        shift,
        transmission: t as f32,
        darkfield: d as f32,
        residual: ((res.max(0.0) / sums.w).sqrt() / (sums.s / sums.w)) as f32,
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
/// alone without dark-field). `None` where the step is not defined or too long.
fn gauss_newton_step(s: &Sums, dark_field: bool) -> Option<[f64; 2]> {
    let (k, gradient, hessian) = if dark_field {
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
    };
    // H·δ = −Jᵀr with H = k²·hessian and Jᵀr = k·gradient.
    let [hyy, hxx, hyx] = hessian;
    let det = hyy * hxx - hyx * hyx;
    if !(hyy > 0.0 && det > 1e-12 * hyy * hxx && k.abs() > 1e-6) {
        return None;
    }
    let [gy, gx] = gradient;
    let delta = [
        -(hxx * gy - hyx * gx) / (det * k),
        -(hyy * gx - hyx * gy) / (det * k),
    ];
    delta
        .iter()
        .all(|v| v.abs() <= MAX_STEP_PX)
        .then_some(delta)
}

/// The window sums at pixel (y, x) with the reference at `[dy, dx]`; the gradient sums only
/// when `gradients`.
fn window_sums(
    st: &Stacks,
    p: &Params,
    y: usize,
    x: usize,
    [dy, dx]: [f32; 2],
    gradients: bool,
    scratch: &mut Vec<f32>,
) -> Sums {
    let (n, h, w, nw) = (st.n, st.h, st.w, p.window as isize);
    let side = 2 * nw as usize + 1;
    let rows = side + 3;
    scratch.clear();
    scratch.resize(2 * rows * side * n, 0.0);
    let (horiz, horiz_dx) = scratch.split_at_mut(rows * side * n);
    // The window shares one fractional shift: the weights once, then a separable 4-tap
    // interpolation of the coefficients (and of their x derivative), every frame at once.
    let (fy, fx) = (y as f64 - dy as f64, x as f64 - dx as f64);
    let (iy, ix) = (fy.floor() as isize, fx.floor() as isize);
    let (ky, kx) = (bspline(fy - iy as f64), bspline(fx - ix as f64));
    let (dky, dkx) = (
        bspline_derivative(fy - iy as f64),
        bspline_derivative(fx - ix as f64),
    );
    // Horizontal pass over the rows the vertical taps need, on the data as given (the
    // sums are in f64, so no centring is needed); frames innermost.
    for j in 0..rows {
        let yy = mirror(iy - nw - 1 + j as isize, h);
        for q in 0..side {
            let at = (j * side + q) * n;
            let x0 = ix - nw - 1 + q as isize;
            for t in 0..4 {
                let c = st.coefficients_at(yy, mirror(x0 + t as isize, w));
                let out = &mut horiz[at..at + n];
                out.iter_mut().zip(c).for_each(|(o, &v)| *o += kx[t] * v);
                if gradients {
                    let out = &mut horiz_dx[at..at + n];
                    out.iter_mut().zip(c).for_each(|(o, &v)| *o += dkx[t] * v);
                }
            }
        }
    }
    let scale = st.scale();
    let mut s = Sums::default();
    for i in 0..n {
        // This frame's sums in f32 (a window of values near 1), added to the f64 totals.
        let mut f = Sums::<f32>::default();
        for qy in 0..side {
            let sy = y + qy - nw as usize;
            for qx in 0..side {
                let base = (qy * side + qx) * n + i;
                let column = |rows: &[f32], k: &[f32; 4]| {
                    k[0] * rows[base]
                        + k[1] * rows[base + side * n]
                        + k[2] * rows[base + 2 * side * n]
                        + k[3] * rows[base + 3 * side * n]
                };
                let r = scale * column(horiz, &ky);
                let sx = x + qx - nw as usize;
                let sv = 1.0 + st.s(i * h * w + sy * w + sx);
                let wq = st.kernel[qy] * st.kernel[qx];
                f.w += wq;
                f.r += wq * r;
                f.s += wq * sv;
                f.rr += wq * r * r;
                f.ss += wq * sv * sv;
                f.sr += wq * sv * r;
                if gradients {
                    let g = [scale * column(horiz, &dky), scale * column(horiz_dx, &ky)];
                    for (a, &ga) in g.iter().enumerate() {
                        f.g[a] += wq * ga;
                        f.rg[a] += wq * r * ga;
                        f.sg[a] += wq * sv * ga;
                    }
                    f.gg[0] += wq * g[0] * g[0];
                    f.gg[1] += wq * g[1] * g[1];
                    f.gg[2] += wq * g[0] * g[1];
                }
            }
        }
        s.add(&f);
    }
    s
}
