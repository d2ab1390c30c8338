//! Second searches with T as a plane across the window, below [`FEW_FRAMES`] frames.
//!
//! Next to a strong absorption edge (T from 1 to 0.05 within a few px) one T per window
//! cannot hold. The usual fit's background ramp (`a + ramp + K·R`) models the part of the
//! change that does not carry the pattern, not the pattern's contrast falling across the
//! window, and with two or three frames a wrong shift can then explain the window better
//! than the true one: the integer search's estimate was more than 1 px off at 274 of the
//! 301 gross pixels of the absorbing blobs at N = 2 (stress suite, mask random, Nw 3).
//! Here the model is `S ≈ (1 + g·o)·(a + K·R(q − u))`: T a plane across the window, of
//! relative gradient g (px⁻¹) at the window offset o (px). It has as many parameters as
//! the usual fit with its ramp (g's two for the ramp's two), so the better of the two fits
//! is taken without a margin for the extra freedom; and only where it explains the window
//! as well as a good fit does (under the misfit level): at a displacement jump, where
//! neither model holds, the plane's better fit of a bad window was a chance minimum (the
//! paper mix at N = 3: tracker RMSE 0.088 → 0.093 px without that rule, 0.087 with it).
//!
//! The misfits are searched again over the whole range at whole pixels with that model
//! (g fitted at each shift), then refined by Gauss–Newton on u and g, a and K eliminated
//! (variable projection). From [`FEW_FRAMES`] frames the usual search has no gross errors
//! at those edges (0.00 % on the stress suite's absorbing blobs at N = 5–20): there the
//! second search gained little (their inlier RMSE at N = 5 0.052 → 0.050 px, the paper mix
//! unchanged) for 0.35–0.53 s on a 256² image of them at N = 20 (1 044 misfits with a
//! 7×7 window), where the default simulated case at 2048² × 20 has none.
//!
//! The network's guard searches the same way, near its estimate, at the suspects next to
//! such an edge that its usual search left unexplained ([`fit_near`], `resolve.rs`).

use super::adaptive::{MISFIT, contrasts, refit_by_bands};
use super::affine::{Gram, ITERATIONS, MAX_DETOUR_PX, MAX_STEP, TOLERANCE, gram, samples};
use super::linalg::solve;
use super::search::Stacks;
use super::{Output, Params, Status};

/// The second search runs below this many frames.
pub(super) const FEW_FRAMES: usize = 5;
/// Gauss–Newton iterations at most in g alone, at each whole-pixel shift of the search (the
/// refinement in u and g takes the affine fit's limits: [`ITERATIONS`], [`TOLERANCE`],
/// [`MAX_STEP`], [`MAX_DETOUR_PX`]; g's steps in px⁻¹ × the window's half-width, T's
/// relative change at the window's edge).
const SEARCH_ITERATIONS: usize = 5;

/// The Gram matrix's columns, as `affine::COLUMNS`: a per-frame part (0–4: 1, R, Gy, Gx,
/// S) times a per-offset part (0–2: 1, oy, ox). The first [`SEARCHED`] are the search's,
/// which needs no G.
const COLUMNS: [(usize, usize); 13] = [
    (0, 0),
    (0, 1),
    (0, 2),
    (1, 0),
    (1, 1),
    (1, 2),
    (4, 0),
    (2, 0),
    (2, 1),
    (2, 2),
    (3, 0),
    (3, 1),
    (3, 2),
];
const ONE: usize = 0;
const R: usize = 3;
const S: usize = 6;
const SEARCHED: usize = 7;
const GY: usize = 7;
const GX: usize = 10;

/// A column of the model: its coefficients on the first `C` of [`COLUMNS`].
type Column<const C: usize> = [f64; C];

/// uᵀ·G·v.
fn product<const C: usize>(g: &Gram<C>, u: &Column<C>, v: &Column<C>) -> f64 {
    (0..C)
        .filter(|&i| u[i] != 0.0)
        .map(|i| u[i] * (0..C).map(|j| g[i][j] * v[j]).sum::<f64>())
        .sum()
}

/// Column `base` times the plane `1 + g·o` (`base`'s oy and ox columns follow it).
fn times_plane<const C: usize>(base: usize, g: [f64; 2]) -> Column<C> {
    let mut c = [0.0; C];
    c[base] = 1.0;
    c[base + 1] = g[0];
    c[base + 2] = g[1];
    c
}

/// The linear fit at some g and the Gauss–Newton step from there.
struct Step {
    /// a and K.
    linear: [f64; 2],
    /// The residual sum.
    rss: f64,
    /// On `[uy, ux, gy, gx]`, or `[gy, gx]` in its first two where the shift is fixed.
    delta: [f64; 4],
    len: usize,
}

impl Step {
    fn delta(&self) -> &[f64] {
        &self.delta[..self.len]
    }
}

/// The linear fit at g on the Gram `gm` and the Gauss–Newton step on g, and on the shift
/// too where `shift` (`gm` then has the G columns); `None` where the fit is degenerate.
fn step<const C: usize>(gm: &Gram<C>, g: [f64; 2], dark_field: bool, shift: bool) -> Option<Step> {
    let sample: Column<C> = std::array::from_fn(|i| f64::from(u8::from(i == S)));
    // The linear columns (1 + g·o) and (1 + g·o)·R, or the latter alone without dark-field.
    let (linear, m) = match dark_field {
        true => ([times_plane(ONE, g), times_plane(R, g)], 2),
        false => ([times_plane(R, g), [0.0; C]], 1),
    };
    let mut ll = [[0.0f64; 2]; 2];
    let mut ls = [0.0f64; 2];
    for i in 0..m {
        ls[i] = product(gm, &linear[i], &sample);
        for j in 0..m {
            ll[i][j] = product(gm, &linear[i], &linear[j]);
        }
    }
    let beta = solve(ll, ls, m)?;
    let (a, k) = match dark_field {
        true => (beta[0], beta[1]),
        false => (0.0, beta[0]),
    };
    let rss = gm[S][S] - (0..m).map(|i| beta[i] * ls[i]).sum::<f64>();
    // The prediction's derivatives: in u, −K·(1 + g·o)·G; in g, o·(a + K·R).
    let mut jacobian = [[0.0; C]; 4];
    let first = if shift {
        jacobian[0] = times_plane::<C>(GY, g).map(|v| -k * v);
        jacobian[1] = times_plane::<C>(GX, g).map(|v| -k * v);
        2
    } else {
        0
    };
    for axis in 0..2 {
        jacobian[first + axis][ONE + 1 + axis] = a;
        jacobian[first + axis][R + 1 + axis] = k;
    }
    let p = first + 2;
    // Variable projection: Dᵀ·W·r with r = S − Lβ, and DᵀWD less its part in L's span.
    let mut dl = [[0.0f64; 2]; 4];
    for (d, column) in dl.iter_mut().zip(&jacobian).take(p) {
        for i in 0..m {
            d[i] = product(gm, column, &linear[i]);
        }
    }
    let mut hess = [[0.0f64; 4]; 4];
    let mut grad = [0.0f64; 4];
    for i in 0..p {
        grad[i] =
            product(gm, &jacobian[i], &sample) - (0..m).map(|l| dl[i][l] * beta[l]).sum::<f64>();
        let proj = solve(ll, dl[i], m)?;
        for j in i..p {
            hess[i][j] = product(gm, &jacobian[i], &jacobian[j])
                - (0..m).map(|l| proj[l] * dl[j][l]).sum::<f64>();
            hess[j][i] = hess[i][j];
        }
    }
    Some(Step {
        linear: [a, k],
        rss,
        delta: solve(hess, grad, p)?,
        len: p,
    })
}

/// The longest move of `step` (`[…, gy, gx]`, after any shift's two): px for the shift, T's
/// relative change at the window's edge (half-width `nw`) for g.
fn longest(step: &[f64], nw: f64) -> f64 {
    let shift = step.len() - 2;
    (step.iter().enumerate()).fold(0.0f64, |m, (i, &v)| {
        m.max(v.abs() * if i < shift { 1.0 } else { nw })
    })
}

/// Adds `step`, scaled to at most [`MAX_STEP`]; `None` where the plane then reaches zero
/// within the window.
fn take(step: &[f64], nw: f64, u: &mut [f64; 2], g: &mut [f64; 2]) -> Option<()> {
    let clamp = (MAX_STEP / longest(step, nw)).min(1.0);
    let (du, dg) = step.split_at(step.len() - 2);
    u.iter_mut().zip(du).for_each(|(u, d)| *u += d * clamp);
    g.iter_mut().zip(dg).for_each(|(g, d)| *g += d * clamp);
    (nw * (g[0].abs() + g[1].abs()) < 1.0).then_some(())
}

/// The residual sum at a whole-pixel shift, its Gram `gm` without G, with g fitted.
fn search_cost(gm: &Gram<SEARCHED>, dark_field: bool, nw: f64) -> Option<f64> {
    let mut g = [0.0f64; 2];
    for iteration in 0..=SEARCH_ITERATIONS {
        let s = step(gm, g, dark_field, false)?;
        if longest(s.delta(), nw) < TOLERANCE || iteration == SEARCH_ITERATIONS {
            return Some(s.rss);
        }
        take(s.delta(), nw, &mut [0.0; 2], &mut g)?;
    }
    unreachable!("the last iteration returns")
}

/// A lower bound of [`search_cost`]: the residual sum of the linear fit on the columns 1,
/// o, R and o·R (R and o·R without dark-field), whose span holds `(1 + g·o)·(a + K·R)`
/// for every g. One linear solve, not a Gauss–Newton fit: it skips the shifts that cannot
/// beat the best so far.
fn bound(gm: &Gram<SEARCHED>, dark_field: bool) -> Option<f64> {
    // The columns before S: 1, oy, ox, R, oy·R, ox·R; from R without dark-field.
    let first = if dark_field { ONE } else { R };
    let m = S - first;
    let a: [[f64; 6]; 6] = std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            if i.max(j) < m {
                gm[first + i][first + j]
            } else {
                0.0
            }
        })
    });
    let b: [f64; 6] = std::array::from_fn(|i| if i < m { gm[first + i][S] } else { 0.0 });
    let beta = solve(a, b, m)?;
    Some(gm[S][S] - (0..m).map(|i| beta[i] * b[i]).sum::<f64>())
}

/// Adds v·pᵢ·pⱼ to `gm[row + i][col + j]` for the plane's parts p = (1, oy, ox) at offset
/// `o` (px), j < `width`: the products of a column and its oy and ox columns with another
/// and its own (`width` 3) or with a column alone (`width` 1).
fn add_products(
    gm: &mut Gram<SEARCHED>,
    (row, col): (usize, usize),
    width: usize,
    o: [f64; 2],
    v: f64,
) {
    let p = [1.0, o[0], o[1]];
    for (i, pi) in p.iter().enumerate() {
        for (j, pj) in p.iter().enumerate().take(width) {
            gm[row + i][col + j] += v * (pi * pj);
        }
    }
}

/// The whole-pixel shift within ±`reach` px of `centre` (`[dy, dx]`) of least residual with
/// T as a plane at pixel (y, x), whose window is `samples`, trying `first` first (a low cost
/// found early skips more shifts); `None` where none has a relative residual under
/// `ceiling` (as [`PlaneFit::residual`]; the ceiling skips the shifts whose bound is over
/// it). At whole pixels the reference is its values as given: the Gram from the frames'
/// sums of R, R² and R·S at each window pixel.
fn search(
    st: &Stacks,
    dark_field: bool,
    (y, x): (usize, usize),
    samples: &[f32],
    (centre, reach): ([i64; 2], i64),
    first: [i64; 2],
    ceiling: f64,
) -> Option<[f64; 2]> {
    let (n, h, w) = (st.n, st.h, st.w);
    let side = st.kernel.len();
    let nw = (side / 2) as i64;
    let window = || {
        (0..side * side).map(move |k| {
            let (ky, kx) = (k / side, k % side);
            let wq = (st.kernel[ky] * st.kernel[kx]) as f64;
            (k, wq, [(ky as i64 - nw) as f64, (kx as i64 - nw) as f64])
        })
    };
    // The products that do not depend on the shift.
    let mut fixed: Gram<SEARCHED> = [[0.0; SEARCHED]; SEARCHED];
    for (k, wq, o) in window() {
        let values = &samples[k * n..][..n];
        let s1: f64 = values.iter().map(|&v| v as f64).sum();
        let s2: f64 = values.iter().map(|&v| (v as f64).powi(2)).sum();
        add_products(&mut fixed, (ONE, ONE), 3, o, wq * n as f64);
        add_products(&mut fixed, (ONE, S), 1, o, wq * s1);
        fixed[S][S] += wq * s2;
    }
    // The ceiling as a residual sum: (residual × mean)² × Σw.
    let (sw, ssum) = (fixed[ONE][ONE], fixed[ONE][S]);
    let mut best: (f64, Option<[f64; 2]>) = ((ceiling * ssum / sw).powi(2) * sw, None);
    let range = |a: usize| centre[a] - reach..=centre[a] + reach;
    let first: [i64; 2] =
        std::array::from_fn(|a| first[a].clamp(centre[a] - reach, centre[a] + reach));
    let shifts = range(0)
        .flat_map(|uy| range(1).map(move |ux| [uy, ux]))
        .filter(|&u| u != first);
    for u in std::iter::once(first).chain(shifts) {
        let mut gm = fixed;
        for (k, wq, o) in window() {
            let (ry, rx) = (y as i64 + o[0] as i64 - u[0], x as i64 + o[1] as i64 - u[1]);
            if ry < 0 || rx < 0 || ry >= h as i64 || rx >= w as i64 {
                return None;
            }
            let at = ry as usize * w + rx as usize;
            let (mut r1, mut r2, mut rs) = (0.0f32, 0.0f32, 0.0f32);
            for (i, &s) in samples[k * n..][..n].iter().enumerate() {
                let r = 1.0 + st.r(i * h * w + at);
                r1 += r;
                r2 += r * r;
                rs += r * s;
            }
            let (r1, r2, rs) = (wq * r1 as f64, wq * r2 as f64, wq * rs as f64);
            add_products(&mut gm, (ONE, R), 3, o, r1);
            add_products(&mut gm, (R, R), 3, o, r2);
            add_products(&mut gm, (R, S), 1, o, rs);
        }
        let gm: Gram<SEARCHED> =
            std::array::from_fn(|a| std::array::from_fn(|b| gm[a.min(b)][a.max(b)]));
        if bound(&gm, dark_field).map_or(best.1.is_some(), |l| l >= best.0) {
            continue;
        }
        if let Some(rss) = search_cost(&gm, dark_field, nw as f64) {
            if rss < best.0 {
                best = (rss, Some(u.map(|v| v as f64)));
            }
        }
    }
    best.1
}

/// A refined fit: `[dy, dx]` (px), a and K at the window's centre, and the relative RMS
/// residual (as `refine::Fit::residual`).
struct PlaneFit {
    shift: [f64; 2],
    a: f64,
    k: f64,
    residual: f64,
}

/// Gauss–Newton on u and g from the shift `u0` (`[dy, dx]`, px) and g = 0, on the window
/// `samples`; `None` where
/// the fit is degenerate, leaves [`MAX_DETOUR_PX`] or the plane reaches zero in the window.
fn refine(
    st: &Stacks,
    dark_field: bool,
    (y, x): (usize, usize),
    samples: &[f32],
    u0: [f64; 2],
) -> Option<PlaneFit> {
    let nw = (st.kernel.len() / 2) as f64;
    let (mut u, mut g) = (u0, [0.0f64; 2]);
    for iteration in 0..=ITERATIONS {
        let gm = gram(
            st,
            (y, x),
            &[u[0], u[1], 0.0, 0.0, 0.0, 0.0],
            samples,
            &COLUMNS,
        )?;
        let s = step(&gm, g, dark_field, true)?;
        let ([a, k], rss) = (s.linear, s.rss);
        if longest(s.delta(), nw) < TOLERANCE || iteration == ITERATIONS {
            let (sw, ssum) = (gm[ONE][ONE], gm[ONE][S]);
            return Some(PlaneFit {
                shift: u,
                a,
                k,
                residual: (rss.max(0.0) / sw).sqrt() / (ssum / sw),
            });
        }
        take(s.delta(), nw, &mut u, &mut g)?;
        if (0..2).any(|a| (u[a] - u0[a]).abs() > MAX_DETOUR_PX) {
            return None;
        }
    }
    unreachable!("the last iteration returns")
}

/// Searches the converged misfits of `out` (relative residual over [`MISFIT`] ×
/// `median_residual`) again with T as a plane, below [`FEW_FRAMES`] frames and where the
/// usual fit has its ramp; keeps the fits that explain the window better and under the
/// misfit level. `spare`: memory for the reference's coefficients, handed back.
pub(super) fn refit(
    stacks: &Stacks,
    p: &Params,
    out: &mut Output,
    median_residual: f32,
    spare: Vec<f32>,
) -> Vec<f32> {
    if !stacks.ramp || stacks.n >= FEW_FRAMES {
        return spare;
    }
    let clock = std::time::Instant::now();
    let misfit = MISFIT * median_residual;
    let pixels: Vec<(usize, usize)> = (out.status.indexed_iter())
        .filter(|&(q, &s)| s == Status::Converged as u8 && out.residual[q] > misfit)
        .map(|(q, _)| q)
        .collect();
    let reach = p.max_shift as i64;
    let (kept, spare) = refit_by_bands(stacks, p, out, &pixels, spare, |st, out, (y, x)| {
        let first = [out.dy[[y, x]], out.dx[[y, x]]].map(|v| v.round() as i64);
        let samples = samples(st, (y, x));
        let start = search(
            st,
            p.dark_field,
            (y, x),
            &samples,
            ([0, 0], reach),
            first,
            f64::INFINITY,
        )?;
        let f = refine(st, p.dark_field, (y, x), &samples, start)?;
        // Under the misfit level, so better than the usual fit too (NaN refused).
        (f.residual < misfit as f64).then_some(())?;
        let shift = f.shift.map(|v| v as f32);
        Some(contrasts(
            st,
            p.dark_field,
            (y, x),
            shift,
            (f.a, f.k),
            f.residual,
        ))
    });
    log::debug!(
        "tracking: {} of {} misfit(s) refitted with T as a plane in {:.2} s",
        kept,
        pixels.len(),
        clock.elapsed().as_secs_f64()
    );
    spare
}

/// For the guard ([`super::resolve`]): pixel (y, x) searched with T as a plane within
/// ±`reach` px of `start` (`[dy, dx]`, px), then refined, where a whole-pixel shift other
/// than `start`'s nearest fits the window with a relative residual under `2 × ceiling` (as
/// a whole-pixel fit of the right shift can leave twice its refined residual) and the
/// refined fit under `ceiling`: `[dx, dy, T, D]` and the relative residual.
pub(super) fn fit_near(
    st: &Stacks,
    dark_field: bool,
    (y, x): (usize, usize),
    start: [f32; 2],
    reach: i64,
    ceiling: f32,
) -> Option<([f32; 4], f32)> {
    let centre = start.map(|v| v.round() as i64);
    let samples = samples(st, (y, x));
    let ceiling = f64::from(ceiling);
    let u = search(
        st,
        dark_field,
        (y, x),
        &samples,
        (centre, reach),
        centre,
        2.0 * ceiling,
    )?;
    if u == centre.map(|v| v as f64) {
        return None;
    }
    let f = refine(st, dark_field, (y, x), &samples, u)?;
    (f.residual < ceiling).then_some(())?;
    let [dx, dy, t, d, residual] = contrasts(
        st,
        dark_field,
        (y, x),
        f.shift.map(|v| v as f32),
        (f.a, f.k),
        f.residual,
    );
    Some(([dx, dy, t, d], residual))
}
