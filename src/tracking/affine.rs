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

use super::adaptive::{contrasts, refit_by_bands};
use super::linalg::solve;
use super::search::Stacks;
use super::{Output, Params, Status};
use crate::interpolate::{bspline, bspline_derivative, mirror};

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
/// would move by [`TOLERANCE`] (px, px/px). Shared with `plane.rs`.
pub(super) const ITERATIONS: usize = 8;
pub(super) const TOLERANCE: f64 = 1e-3;
/// A step longer than this (px along a shift axis, px/px on J) is scaled down to it.
pub(super) const MAX_STEP: f64 = 0.5;
/// Bounds of J's components (px/px) and of the shift's distance from its start (px, per
/// axis): beyond them the fit is refused (and the coefficients' band read stays bounded).
const MAX_GRADIENT: f64 = 1.2;
pub(super) const MAX_DETOUR_PX: f64 = 1.5;

/// The nonlinear parameters: u (`[dy, dx]`, px) and J (`[[∂dy/∂oy, ∂dy/∂ox], [∂dx/∂oy,
/// ∂dx/∂ox]]`, px/px), flattened as `[uy, ux, Jyy, Jyx, Jxy, Jxx]`.
pub(super) type Theta = [f64; 6];

/// Refits the converged pixels of `out` where the estimates around them are steep with
/// the affine window, keeping the fits that explain the window clearly better ([`GAIN`]).
/// `spare`: memory for the reference's coefficients, handed back.
pub(super) fn refit(stacks: &Stacks, p: &Params, out: &mut Output, spare: Vec<f32>) -> Vec<f32> {
    let clock = std::time::Instant::now();
    if stacks.n * stacks.kernel.len().pow(2) < MIN_VALUES {
        return spare;
    }
    let pixels: Vec<(usize, usize)> = (out.status.indexed_iter())
        .filter(|&(q, &s)| s == Status::Converged as u8 && steep_gradient(out, q).is_some())
        .map(|(q, _)| q)
        .collect();
    // Applied at the end, so that every start is from the estimates before.
    let (kept, spare) = refit_by_bands(stacks, p, out, &pixels, spare, |st, out, q| {
        let start = [out.dy[q], out.dx[q]];
        fit_from(st, p, q, start, steep_gradient(out, q)?, out.residual[q])
    });
    log::debug!(
        "tracking: {} of {} pixel(s) at steep gradients refitted with an affine window in {:.2} s",
        kept,
        pixels.len(),
        clock.elapsed().as_secs_f64()
    );
    spare
}

/// The gradient J (px/px, as in [`Theta`]) of the estimates at pixel (y, x), by central
/// differences, where it is steep (any component over [`STEEP`]).
fn steep_gradient(out: &Output, q: (usize, usize)) -> Option<[f32; 4]> {
    steep(out.dx.dim(), q, |q| [out.dy[q], out.dx[q]])
}

/// [`steep_gradient`] of the estimates `at` gives (`[dy, dx]`, px) on an image of `(h, w)`
/// px.
pub(super) fn steep(
    (h, w): (usize, usize),
    (y, x): (usize, usize),
    at: impl Fn((usize, usize)) -> [f32; 2],
) -> Option<[f32; 4]> {
    if y == 0 || x == 0 || y + 1 >= h || x + 1 >= w {
        return None;
    }
    let diff = |a: usize| {
        [
            0.5 * (at((y + 1, x))[a] - at((y - 1, x))[a]),
            0.5 * (at((y, x + 1))[a] - at((y, x - 1))[a]),
        ]
    };
    let ([a, b], [c, d]) = (diff(0), diff(1));
    let j = [a, b, c, d];
    (j.iter().all(|v| v.is_finite()) && j.iter().any(|v| v.abs() > STEEP)).then_some(j)
}

/// The affine window's fit at pixel `q` from the shift `start` (`[dy, dx]`, px) and the
/// gradient `j` ([`steep`]), as `[dx, dy, T, D, residual]`, where its residual is under
/// [`GAIN`] × `residual` (a shift-only fit's window residual there).
pub(super) fn fit_from(
    st: &Stacks,
    p: &Params,
    q: (usize, usize),
    start: [f32; 2],
    j: [f32; 4],
    residual: f32,
) -> Option<[f32; 5]> {
    if st.n * st.kernel.len().pow(2) < MIN_VALUES {
        return None;
    }
    let [jyy, jyx, jxy, jxx] = j.map(|v| (v as f64).clamp(-MAX_GRADIENT, MAX_GRADIENT));
    let [sy, sx] = start.map(f64::from);
    let f = affine_fit(st, p.dark_field, q, [sy, sx, jyy, jyx, jxy, jxx])?;
    // (NaN refused.)
    (f.residual < GAIN * residual as f64).then_some(())?;
    let shift = [f.theta[0] as f32, f.theta[1] as f32];
    Some(contrasts(
        st,
        p.dark_field,
        q,
        shift,
        (f.a, f.k),
        f.residual,
    ))
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

/// The columns of the fit, each a per-frame part (0–4: 1, R, Gy, Gx, S; their products
/// are summed over the frames first, [`gram`]) times a per-offset part (0–2: 1, oy, ox):
/// the linear ones 1, R, oy, ox (the ramp), the Jacobian's in u and J over −K (Gy, Gx,
/// Gy·oy, Gy·ox, Gx·oy, Gx·ox), and S.
const COLUMNS: [(usize, usize); 11] = [
    (0, 0),
    (1, 0),
    (0, 1),
    (0, 2),
    (2, 0),
    (3, 0),
    (2, 1),
    (2, 2),
    (3, 1),
    (3, 2),
    (4, 0),
];
/// [`COLUMNS`]' first Jacobian column, and S.
const JACOBIAN: usize = 4;
const SAMPLE: usize = 10;

/// Σw over the window and the frames of the products of every two of `C` columns.
pub(super) type Gram<const C: usize> = [[f64; C]; C];

/// The sample's window at pixel (y, x), window pixels in rows, frames innermost.
pub(super) fn samples(st: &Stacks, (y, x): (usize, usize)) -> Vec<f32> {
    let (n, h, w) = (st.n, st.h, st.w);
    let nw = st.kernel.len() / 2;
    let mut out = Vec::with_capacity(st.kernel.len().pow(2) * n);
    for qy in y - nw..=y + nw {
        for qx in x - nw..=x + nw {
            out.extend((0..n).map(|i| 1.0 + st.s(i * h * w + qy * w + qx)));
        }
    }
    out
}

/// The [`Gram`] matrix of `columns` (as [`COLUMNS`]) on pixel (y, x)'s window under
/// `theta`, with the sample's `samples`; `None` where a tap falls outside the
/// coefficients' rows. Each window pixel's frames are summed first (f32, every frame at
/// once), then weighted by its offsets.
pub(super) fn gram<const C: usize>(
    st: &Stacks,
    (y, x): (usize, usize),
    theta: &Theta,
    samples: &[f32],
    columns: &[(usize, usize); C],
) -> Option<Gram<C>> {
    let (n, h, w) = (st.n, st.h, st.w);
    let side = st.kernel.len();
    let nw = (side / 2) as isize;
    let rows = st.coefficient_rows();
    let scale = st.scale();
    // The interpolated value and its two derivatives of every frame.
    let mut taps = vec![0.0f32; 3 * n];
    let mut g: Gram<C> = [[0.0; C]; C];
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
            let (r, gradient) = taps.split_at_mut(n);
            let (gy, gx) = gradient.split_at_mut(n);
            for ty in 0..4 {
                let yy = mirror(iy - 1 + ty as isize, h);
                if !rows.contains(&yy) {
                    return None;
                }
                for tx in 0..4 {
                    let c = st.coefficients_at(yy, mirror(ix - 1 + tx as isize, w));
                    let k = [by[ty] * bx[tx], dy[ty] * bx[tx], by[ty] * dx[tx]].map(|k| k * scale);
                    for (((r, gy), gx), &c) in r.iter_mut().zip(&mut *gy).zip(&mut *gx).zip(c) {
                        *r += k[0] * c;
                        *gy += k[1] * c;
                        *gx += k[2] * c;
                    }
                }
            }
            // The frames' sums of the products of 1, R, Gy, Gx and S.
            let s = &samples[(ky * side + kx) * n..][..n];
            let parts = [&r[..], &gy[..], &gx[..], s];
            let mut frames = [[0.0f64; 5]; 5];
            frames[0][0] = n as f64;
            for a in 0..4 {
                frames[0][a + 1] = parts[a].iter().sum::<f32>() as f64;
                for b in a..4 {
                    let dot: f32 = parts[a].iter().zip(parts[b]).map(|(u, v)| u * v).sum();
                    frames[a + 1][b + 1] = dot as f64;
                }
            }
            let wq = (wy * wx) as f64;
            let offset = [1.0, o[0], o[1]];
            for (a, &(fa, oa)) in columns.iter().enumerate() {
                for (b, &(fb, ob)) in columns.iter().enumerate().skip(a) {
                    g[a][b] += wq * offset[oa] * offset[ob] * frames[fa.min(fb)][fa.max(fb)];
                }
            }
        }
    }
    Some(std::array::from_fn(|a| {
        std::array::from_fn(|b| g[a.min(b)][a.max(b)])
    }))
}

/// The linear fit on the columns `linear` of `g` (its coefficients, in that order, and
/// residual sum) and the Gauss–Newton step on theta: the Jacobian in theta, −K·G·(1 or o),
/// projected off the linear columns (variable projection), from `g` alone.
fn step(g: &Gram<11>, linear: &[usize], k_at: usize) -> Option<([f64; 4], f64, Theta)> {
    let m = linear.len();
    let pick = |rows: &[usize], col: usize| -> [f64; 4] {
        std::array::from_fn(|i| rows.get(i).map_or(0.0, |&r| g[r][col]))
    };
    let ll: [[f64; 4]; 4] =
        std::array::from_fn(|i| pick(linear, linear.get(i).copied().unwrap_or(0)));
    let ls = pick(linear, SAMPLE);
    let beta = solve(ll, ls, m)?;
    let rss = g[SAMPLE][SAMPLE] - (0..m).map(|i| beta[i] * ls[i]).sum::<f64>();
    let k = beta[k_at];
    // The Jacobian's columns are −K times the Gram's: their products with the linear
    // columns and S (−K), and with each other (K²).
    let ld: [[f64; 4]; 6] = std::array::from_fn(|p| pick(linear, JACOBIAN + p).map(|v| -k * v));
    let mut hess = [[0.0f64; 6]; 6];
    let mut grad = [0.0f64; 6];
    for p in 0..6 {
        let proj_p = solve(ll, ld[p], m)?;
        // Dᵀ·W·r with r = S − Lβ: Dᵀ·W·S − (DᵀWL)·β.
        grad[p] = -k * g[JACOBIAN + p][SAMPLE] - (0..m).map(|i| ld[p][i] * beta[i]).sum::<f64>();
        for q in 0..6 {
            hess[p][q] = k * k * g[JACOBIAN + p][JACOBIAN + q]
                - (0..m).map(|i| proj_p[i] * ld[q][i]).sum::<f64>();
        }
    }
    Some((beta, rss, solve(hess, grad, 6)?))
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
    // The linear columns (indices into COLUMNS) and where K is among them.
    let (linear, k_at): (&[usize], usize) = match (dark_field, st.ramp) {
        (false, _) => (&[1], 0),
        (true, false) => (&[0, 1], 1),
        (true, true) => (&[0, 1, 2, 3], 1),
    };
    let mut theta = theta0;
    let samples = samples(st, (y, x));
    for iteration in 0..=ITERATIONS {
        let g = gram(st, (y, x), &theta, &samples, &COLUMNS)?;
        let (beta, rss, step) = step(&g, linear, k_at)?;
        let longest = step.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if longest < TOLERANCE || iteration == ITERATIONS {
            let (sw, ssum) = (g[0][0], g[0][SAMPLE]);
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
