//! Affine-window fits: the window's displacement as a shift and its gradient.
//!
//! Where the displacement changes by a pixel or more across the window (gradients of
//! 0.3–1 px/px at a sphere's rim or a blob's edge), the sample's window holds the
//! reference's pattern stretched or sheared, and no single shift fits it: the shift-only
//! fit lands on a compromise, often a neighbour's displacement more than 1 px off. Here
//! the reference is read at `q − u − J·o` for each window offset o (px), and the shift u
//! and its gradient J are fitted together by Gauss–Newton, with a, K (and the background
//! ramp) eliminated (variable projection), starting from the shift-only estimate and the
//! gradient of the estimates around it. The fit is kept where it explains the window
//! clearly better ([`GAIN`]).

use ndarray::Array2;
use rayon::prelude::*;

use super::adaptive::set;
use super::bands;
use super::refine::illumination_at;
use super::search::Stacks;
use super::{Output, Params, Status};
use crate::interpolate::{bspline, bspline_derivative, mirror};
use crate::model::from_affine;

/// The fit's values per pixel at least: it has eight parameters (a, K, the shift's two,
/// J's four), four more than the shift-only fit; with fewer values (N = 3 in 3×3 windows)
/// it fitted noise and made a wedge's estimates worse.
const MIN_VALUES: usize = 40;
/// Pixels where the estimates around change faster than this (px/px, any component of J)
/// are fitted again.
const STEEP: f32 = 0.2;
/// The affine fit replaces the shift-only one where its relative RMS residual is under
/// this share of it: a model error the shift-only fit left, not the noise that four more
/// parameters absorb (about 6 % of the residual with 40 values, less with more).
const GAIN: f64 = 0.8;
/// Gauss–Newton iterations at most (three are typical); they stop once no parameter
/// would move by [`TOLERANCE`] (px, px/px).
const ITERATIONS: usize = 8;
const TOLERANCE: f64 = 1e-3;
/// A step longer than this (px along a shift axis, px/px on J) is scaled down to it.
const MAX_STEP: f64 = 0.5;
/// Bounds of J's components (px/px) and of the shift's distance from its start (px, per
/// axis): beyond them the fit is refused (and the coefficients' band read stays bounded).
const MAX_GRADIENT: f64 = 1.2;
const MAX_DETOUR_PX: f64 = 1.5;

/// The nonlinear parameters: u (`[dy, dx]`, px) and J (`[[∂dy/∂oy, ∂dy/∂ox], [∂dx/∂oy,
/// ∂dx/∂ox]]`, px/px), flattened as `[uy, ux, Jyy, Jyx, Jxy, Jxx]`.
type Theta = [f64; 6];

/// Refits the converged pixels of `out` where the estimates around them are steep with
/// the affine window, keeping the fits that explain the window clearly better ([`GAIN`]).
/// `spare`: memory for the reference's coefficients.
pub(super) fn refit(stacks: &Stacks, p: &Params, out: &mut Output, mut spare: Vec<f32>) {
    let clock = std::time::Instant::now();
    if stacks.n * stacks.kernel.len().pow(2) < MIN_VALUES {
        return;
    }
    let pixels: Vec<(usize, usize)> = (out.status.indexed_iter())
        .filter(|&(q, &s)| s == Status::Converged as u8 && steep_gradient(out, q).is_some())
        .map(|(q, _)| q)
        .collect();
    // Applied at the end, so that every start is from the estimates before.
    let mut fits: Vec<((usize, usize), [f32; 5])> = Vec::new();
    for run in bands::runs(&pixels, p) {
        let rows = bands::coefficient_rows(bands::rows_of(run), p, stacks.h);
        let st = stacks.with_rows(rows, spare);
        let out = &*out;
        fits.par_extend(run.par_iter().filter_map(|&(y, x)| {
            let j = steep_gradient(out, (y, x))?;
            let [jyy, jyx, jxy, jxx] = j.map(|v| (v as f64).clamp(-MAX_GRADIENT, MAX_GRADIENT));
            let start = [out.dy[[y, x]], out.dx[[y, x]]].map(f64::from);
            let f = affine_fit(
                &st,
                p.dark_field,
                (y, x),
                [start[0], start[1], jyy, jyx, jxy, jxx],
            )?;
            // (NaN refused.)
            (f.residual < GAIN * out.residual[[y, x]] as f64).then_some(())?;
            let shift = [f.theta[0] as f32, f.theta[1] as f32];
            let (t, d) = match p.dark_field {
                true => from_affine(f.a, f.k, illumination_at(&st, y, x, shift)),
                false => (f.k, f64::NAN),
            };
            let [dy, dx] = shift;
            Some(((y, x), [dx, dy, t as f32, d as f32, f.residual as f32]))
        }));
        spare = st.into_spare();
    }
    for &(q, fit) in &fits {
        set(out, q, fit);
    }
    log::debug!(
        "tracking: {} of {} pixel(s) at steep gradients refitted with an affine window in {:.2} s",
        fits.len(),
        pixels.len(),
        clock.elapsed().as_secs_f64()
    );
}

/// The gradient J (px/px, as in [`Theta`]) of the estimates at pixel (y, x), by central
/// differences, where it is steep (any component over [`STEEP`]).
fn steep_gradient(out: &Output, (y, x): (usize, usize)) -> Option<[f32; 4]> {
    let (h, w) = out.dx.dim();
    if y == 0 || x == 0 || y + 1 >= h || x + 1 >= w {
        return None;
    }
    let diff = |m: &Array2<f32>| {
        [
            0.5 * (m[[y + 1, x]] - m[[y - 1, x]]),
            0.5 * (m[[y, x + 1]] - m[[y, x - 1]]),
        ]
    };
    let ([a, b], [c, d]) = (diff(&out.dy), diff(&out.dx));
    let j = [a, b, c, d];
    (j.iter().all(|v| v.is_finite()) && j.iter().any(|v| v.abs() > STEEP)).then_some(j)
}

/// One value of the window: weight, sample, reference at the warped position, its gradient
/// (`[∂y, ∂x]`, px⁻¹) and the offset from the pixel (`[y, x]`, px).
struct Value {
    w: f64,
    s: f64,
    r: f64,
    g: [f64; 2],
    o: [f64; 2],
}

/// An affine fit's outcome.
struct AffineFit {
    theta: Theta,
    /// a and K of `S ≈ a + K·R` (normalised units), K the transmission without dark-field.
    a: f64,
    k: f64,
    /// Relative RMS residual, as [`super::refine::Fit::residual`].
    residual: f64,
}

/// The sample's window at pixel (y, x), window pixels in rows, frames innermost.
fn samples(st: &Stacks, (y, x): (usize, usize)) -> Vec<f64> {
    let (n, h, w) = (st.n, st.h, st.w);
    let nw = st.kernel.len() / 2;
    let mut out = Vec::with_capacity(st.kernel.len().pow(2) * n);
    for qy in y - nw..=y + nw {
        for qx in x - nw..=x + nw {
            out.extend((0..n).map(|i| 1.0 + st.s(i * h * w + qy * w + qx) as f64));
        }
    }
    out
}

/// The window's values at pixel (y, x) under `theta`, with the sample's `samples`; `None`
/// where a tap falls outside the coefficients' rows.
fn values(
    st: &Stacks,
    (y, x): (usize, usize),
    theta: &Theta,
    samples: &[f64],
    out: &mut Vec<Value>,
) -> Option<()> {
    let (n, h, w) = (st.n, st.h, st.w);
    let side = st.kernel.len();
    let nw = (side / 2) as isize;
    let rows = st.coefficient_rows();
    let scale = st.scale() as f64;
    // The interpolated value and its two derivatives, every frame at once (f32: a window
    // of values near the reference's mean).
    let mut taps = vec![0.0f32; 3 * n];
    out.clear();
    for (ky, &wy) in st.kernel.iter().enumerate() {
        for (kx, &wx) in st.kernel.iter().enumerate() {
            let o = [(ky as isize - nw) as f64, (kx as isize - nw) as f64];
            let (qy, qx) = (y as isize + ky as isize - nw, x as isize + kx as isize - nw);
            let fy = qy as f64 - theta[0] - theta[2] * o[0] - theta[3] * o[1];
            let fx = qx as f64 - theta[1] - theta[4] * o[0] - theta[5] * o[1];
            let (iy, ix) = (fy.floor(), fx.floor());
            let (by, bx) = (bspline(fy - iy), bspline(fx - ix));
            let (dy, dx) = (bspline_derivative(fy - iy), bspline_derivative(fx - ix));
            let (iy, ix) = (iy as isize, ix as isize);
            taps.fill(0.0);
            let (value, gradient) = taps.split_at_mut(n);
            let (gy, gx) = gradient.split_at_mut(n);
            for ty in 0..4 {
                let yy = mirror(iy - 1 + ty as isize, h);
                if !rows.contains(&yy) {
                    return None;
                }
                for tx in 0..4 {
                    let c = st.coefficients_at(yy, mirror(ix - 1 + tx as isize, w));
                    let k = [by[ty] * bx[tx], dy[ty] * bx[tx], by[ty] * dx[tx]];
                    for (((v, gy), gx), &c) in value.iter_mut().zip(&mut *gy).zip(&mut *gx).zip(c) {
                        *v += k[0] * c;
                        *gy += k[1] * c;
                        *gx += k[2] * c;
                    }
                }
            }
            out.extend((0..n).map(|i| Value {
                w: (wy * wx) as f64,
                s: samples[(ky * side + kx) * n + i],
                r: value[i] as f64 * scale,
                g: [gy[i] as f64 * scale, gx[i] as f64 * scale],
                o,
            }));
        }
    }
    Some(())
}

/// The linear columns at one value: 1, R, and the background ramp's offsets where the
/// fit has one (`m` = 4); R alone without dark-field (`m` = 1).
fn columns(v: &Value, dark_field: bool) -> [f64; 4] {
    match dark_field {
        true => [1.0, v.r, v.o[0], v.o[1]],
        false => [v.r, 0.0, 0.0, 0.0],
    }
}

/// The linear fit of `vals` over its first `m` [`columns`] (its coefficients and residual
/// sum) and the Gauss–Newton step on theta: the model's Jacobian in theta, −K·G·(1 or o),
/// projected off the linear columns (variable projection).
fn linear_fit(vals: &[Value], dark_field: bool, m: usize) -> Option<([f64; 4], f64, Theta)> {
    let mut ll = [[0.0f64; 4]; 4];
    let mut ls = [0.0f64; 4];
    let mut ss = 0.0;
    for v in vals {
        let l = columns(v, dark_field);
        for i in 0..m {
            for j in 0..m {
                ll[i][j] += v.w * l[i] * l[j];
            }
            ls[i] += v.w * l[i] * v.s;
        }
        ss += v.w * v.s * v.s;
    }
    let beta = solve(ll, ls, m)?;
    let rss = ss - (0..m).map(|i| beta[i] * ls[i]).sum::<f64>();
    let k = beta[usize::from(dark_field)];
    let jacobian = |v: &Value| -> Theta {
        let [gy, gx] = v.g.map(|g| -k * g);
        [gy, gx, gy * v.o[0], gy * v.o[1], gx * v.o[0], gx * v.o[1]]
    };
    // Each Jacobian column's coefficients on the linear columns.
    let mut ld = [[0.0f64; 4]; 6];
    for v in vals {
        let (l, d) = (columns(v, dark_field), jacobian(v));
        for (ld, d) in ld.iter_mut().zip(d) {
            for i in 0..m {
                ld[i] += v.w * l[i] * d;
            }
        }
    }
    let mut proj = [[0.0f64; 4]; 6];
    for (p, ld) in proj.iter_mut().zip(ld) {
        *p = solve(ll, ld, m)?;
    }
    // Its upper triangle.
    let mut hess = [[0.0f64; 6]; 6];
    let mut grad = [0.0f64; 6];
    for v in vals {
        let (l, mut d) = (columns(v, dark_field), jacobian(v));
        let res = v.s - (0..m).map(|i| beta[i] * l[i]).sum::<f64>();
        for (d, proj) in d.iter_mut().zip(&proj) {
            *d -= (0..m).map(|i| proj[i] * l[i]).sum::<f64>();
        }
        for (p, &dp) in d.iter().enumerate() {
            grad[p] += v.w * dp * res;
            for (h, &dq) in hess[p][p..].iter_mut().zip(&d[p..]) {
                *h += v.w * dp * dq;
            }
        }
    }
    let hess = std::array::from_fn(|p| std::array::from_fn(|q| hess[p.min(q)][p.max(q)]));
    Some((beta, rss, solve(hess, grad, 6)?))
}

/// Solves `a·x = b` over its first `m` rows and columns (Gauss–Jordan, partial pivoting),
/// `None` where it is singular.
fn solve<const M: usize>(mut a: [[f64; M]; M], mut b: [f64; M], m: usize) -> Option<[f64; M]> {
    let scale = (0..m).fold(0.0f64, |s, i| s.max(a[i][i].abs()));
    for c in 0..m {
        let pivot = (c..m).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        a.swap(c, pivot);
        b.swap(c, pivot);
        let diagonal = a[c][c];
        // Also refuses NaN.
        if diagonal.abs().partial_cmp(&(1e-12 * scale)) != Some(std::cmp::Ordering::Greater) {
            return None;
        }
        let (row, bc) = (a[c], b[c]);
        for r in (0..m).filter(|&r| r != c) {
            let f = a[r][c] / diagonal;
            a[r].iter_mut()
                .zip(&row)
                .skip(c)
                .for_each(|(v, &p)| *v -= f * p);
            b[r] -= f * bc;
        }
    }
    let mut x = [0.0; M];
    for i in 0..m {
        x[i] = b[i] / a[i][i];
    }
    Some(x)
}

/// Gauss–Newton from `theta0`, at most [`ITERATIONS`] steps of at most [`MAX_STEP`], until
/// one would be under [`TOLERANCE`]; `None` where the fit is degenerate or leaves
/// [`MAX_GRADIENT`] or [`MAX_DETOUR_PX`].
fn affine_fit(
    st: &Stacks,
    dark_field: bool,
    (y, x): (usize, usize),
    theta0: Theta,
) -> Option<AffineFit> {
    let m = match (dark_field, st.ramp) {
        (false, _) => 1,
        (true, false) => 2,
        (true, true) => 4,
    };
    let mut theta = theta0;
    let mut vals = Vec::new();
    let samples = samples(st, (y, x));
    for iteration in 0..=ITERATIONS {
        values(st, (y, x), &theta, &samples, &mut vals)?;
        let (beta, rss, step) = linear_fit(&vals, dark_field, m)?;
        let longest = step.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if longest < TOLERANCE || iteration == ITERATIONS {
            let (sw, ssum) = (vals.iter()).fold((0.0, 0.0), |(a, b), v| (a + v.w, b + v.w * v.s));
            let (a, k) = match dark_field {
                true => (beta[0], beta[1]),
                false => (0.0, beta[0]),
            };
            return Some(AffineFit {
                theta,
                a,
                k,
                residual: (rss.max(0.0) / sw).sqrt() / (ssum / sw),
            });
        }
        let clamp = (MAX_STEP / longest).min(1.0);
        theta
            .iter_mut()
            .zip(step)
            .for_each(|(t, s)| *t += s * clamp);
        let out_of_bounds = theta[2..].iter().any(|j| j.abs() > MAX_GRADIENT)
            || (0..2).any(|a| (theta[a] - theta0[a]).abs() > MAX_DETOUR_PX);
        if out_of_bounds {
            return None;
        }
    }
    unreachable!("the last iteration returns")
}
