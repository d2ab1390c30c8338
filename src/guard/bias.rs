//! The network's smooth bias, measured by the tracker on a grid of pixels and taken off.
//!
//! Why: beside its gross errors, the network is off by a few hundredths of a pixel in
//! patterns that vary slowly across the image. They are small per pixel but integrate
//! into the phase: on the stress suite's lenses at N = 20 the guarded network was
//! 0.005–0.024 waves off, the tracker 0.001–0.004. The tracker's sub-pixel fit, started
//! from the network's estimate at every [`STEP`]th pixel of every [`STEP`]th row, tells
//! that bias; its median over 3×3 nodes (robust to a node at an edge or a failed fit),
//! less its noise ([`shrunk`]; for the displacements, the medians' broad mean and their
//! departure from it, each weighed against its noise, [`smoothed`]), bilinear between the
//! nodes, is added to dx, dy, T and D everywhere (0.003–0.006 waves since). The
//! displacements also take each node's own change beyond that smooth one, as far as it
//! stands above its fit's noise ([`with_detail`]). The guard then judges the corrected
//! estimate.

use ndarray::{Array2, Zip};
use rayon::prelude::*;

use crate::model::Fit;
use crate::tracking::{self, Coefficients, Params};

/// Nodes this many px apart along both axes: a quarter of the pixels. Against 4 px apart
/// (the paper mix, guarded): RMSE 0.075, 0.044, 0.036, 0.035 → 0.071, 0.038, 0.028, 0.025
/// px at N = 3, 5, 10, 20, for 0.5–0.7 s more at 2048² × 20 (whole runs 7.2–7.5 → 8.0 s).
/// Against 3 px apart (2026-12-05, with the areas tracked whole): the paper mix 0.065,
/// 0.030, 0.023, 0.020 → 0.064, 0.029, 0.022, 0.018 px, the stress suite's RMSE target on
/// 35 → 45 of 84 cases.
const STEP: usize = 2;
/// A node whose fit moved the estimate by more than this (px, along either axis) tells
/// the network's gross error or a wrong fit, not its bias: it is left out.
const MAX_CHANGE_PX: f32 = 0.5;

/// The correction of `[dx, dy, T, D]` at the nodes of a grid, smoothed.
pub(super) struct Bias {
    nodes: [Array2<f32>; 4],
}

impl Bias {
    /// The bias of `fit`'s estimate (the network's), from the tracker's fits with the
    /// guard's `params` on the reference's `coefficients`.
    pub fn measure(fit: &Fit, params: &Params, coefficients: &Coefficients) -> Self {
        let (reference, _, estimate) = fit.parts();
        let (_, h, w) = reference.dim();
        let (gh, gw) = (h / STEP, w / STEP);
        let grid: Vec<(usize, usize)> = (0..gh)
            .flat_map(|j| (0..gw).map(move |i| (node(j), node(i))))
            .collect();
        let refined = tracking::refined_from(coefficients, params, fit, &grid);
        let maps = [
            estimate.dx,
            estimate.dy,
            estimate.transmission,
            estimate.darkfield,
        ];
        let nan = || Array2::from_elem((gh, gw), f32::NAN);
        let mut change: [Array2<f32>; 4] = std::array::from_fn(|_| nan());
        let mut sd: [Array2<f32>; 2] = std::array::from_fn(|_| nan());
        for (k, ((new, error), &q)) in refined.iter().zip(&grid).enumerate() {
            // False for NaN: a node without a fit is left out too.
            let kept = (0..2).all(|a| (new[a] - maps[a][q]).abs() <= MAX_CHANGE_PX);
            if kept {
                let at = (k / gw, k % gw);
                for (a, c) in change.iter_mut().enumerate() {
                    c[at] = new[a] - maps[a][q];
                }
                for (a, s) in sd.iter_mut().enumerate() {
                    s[at] = error[a];
                }
            }
        }
        // The four maps side by side: each one's shrinking is serial. The displacements,
        // whose fits give their standard error, take their nodes' detail too.
        let nodes: Vec<Array2<f32>> = (change.par_iter().enumerate())
            .map(|(a, c)| match sd.get(a) {
                Some(sd) => with_detail(smoothed(c), c, sd),
                None => shrunk(median_3x3(c), c),
            })
            .collect();
        Bias {
            nodes: nodes.try_into().expect("four maps"),
        }
    }

    /// Which blocks of `block_px` (an image `(h, w)`) have at least half their nodes'
    /// correction of the displacement over `limit_px`: where the network is off by that
    /// much, what the correction leaves is about the tracker's own noise, and the tracker's
    /// pipeline is the better estimate ([`super::regions`]).
    pub fn blocks_over(
        &self,
        (h, w): (usize, usize),
        block_px: usize,
        limit_px: f32,
    ) -> Array2<bool> {
        let mut count =
            Array2::<[usize; 2]>::from_elem((h.div_ceil(block_px), w.div_ceil(block_px)), [0; 2]);
        let [dx, dy, ..] = &self.nodes;
        for ((j, i), &x) in dx.indexed_iter() {
            let c = &mut count[(node(j) / block_px, node(i) / block_px)];
            c[0] += (x.hypot(dy[(j, i)]) > limit_px) as usize;
            c[1] += 1;
        }
        count.mapv(|[over, all]| all > 0 && 2 * over >= all)
    }

    /// Adds the correction, bilinear between the nodes (constant beyond the outer ones), to
    /// `[dx, dy, T, D]`.
    pub fn apply(&self, maps: [&mut Array2<f32>; 4]) {
        let (gh, gw) = self.nodes[0].dim();
        if gh == 0 || gw == 0 {
            return;
        }
        let w = maps[0].dim().1;
        let columns: Vec<(usize, usize, f32)> = (0..w).map(|x| between(x, gw)).collect();
        let [dx, dy, t, d] = maps;
        Zip::indexed(dx.rows_mut())
            .and(dy.rows_mut())
            .and(t.rows_mut())
            .and(d.rows_mut())
            .par_for_each(|y, a, b, c, e| {
                let (j0, j1, fy) = between(y, gh);
                for (map, nodes) in [a, b, c, e].into_iter().zip(&self.nodes) {
                    let (r0, r1) = (nodes.row(j0), nodes.row(j1));
                    for (v, &(i0, i1, fx)) in map.into_iter().zip(&columns) {
                        let top = r0[i0] + fx * (r0[i1] - r0[i0]);
                        let bottom = r1[i0] + fx * (r1[i1] - r1[i0]);
                        *v += top + fy * (bottom - top);
                    }
                }
            });
    }
}

/// Position (px) of node `j` along an axis.
fn node(j: usize) -> usize {
    STEP / 2 + j * STEP
}

/// The nodes on either side of position `p` (px) along an axis of `n` nodes, and the
/// weight of the second.
fn between(p: usize, n: usize) -> (usize, usize, f32) {
    let f = ((p as f32 - node(0) as f32) / STEP as f32).clamp(0.0, (n - 1) as f32);
    let j = (f as usize).min(n - 1);
    (j, (j + 1).min(n - 1), f - j as f32)
}

/// The median of the finite values over each node's 3×3 neighbourhood; 0 where none is.
/// Rows in parallel: at 2048² it takes a million medians per map.
fn median_3x3(a: &Array2<f32>) -> Array2<f32> {
    let (h, w) = a.dim();
    let mut out = Array2::zeros((h, w));
    Zip::indexed(out.rows_mut()).par_for_each(|j, mut row| {
        let row = row.as_slice_mut().expect("a row of a standard array");
        let mut i = 0;
        while i < w {
            // Eight nodes at once inside the grid, where their 3×3 values are all finite.
            if (1..h - 1).contains(&j) && i >= 1 && i + LANES < w {
                let values: [[f32; LANES]; 9] = std::array::from_fn(|k| {
                    std::array::from_fn(|l| a[(j + k / 3 - 1, i + l + k % 3 - 1)])
                });
                if values.iter().flatten().all(|v| v.is_finite()) {
                    row[i..i + LANES].copy_from_slice(&medians_of_nine(values));
                    i += LANES;
                    continue;
                }
            }
            row[i] = median_at(a, (j, i));
            i += 1;
        }
    });
    out
}

/// Nodes whose medians [`medians_of_nine`] takes side by side.
const LANES: usize = 8;

/// The median of the finite values over node (j, i)'s 3×3 neighbourhood; 0 where none is.
fn median_at(a: &Array2<f32>, at: (usize, usize)) -> f32 {
    crate::neighbourhood::finite_median_3x3(a.view(), at).unwrap_or(0.0)
}

/// Paeth's exchanges (lower value first) that leave the median of nine at index 4.
#[rustfmt::skip]
const EXCHANGES: [(usize, usize); 19] = [
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8),
    (0, 3), (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
];

/// The medians of nine values each, in [`f32::total_cmp`]'s order, of [`LANES`] sets side
/// by side (value k of set l at `values[k][l]`): Paeth's network of 19 exchanges on the
/// values' integer keys, branch-free in vectors. A map of 1024² nodes (2048² images) took
/// 11–13 ms so against 46–47 ms sorting each node's nine, on two cores.
fn medians_of_nine(values: [[f32; LANES]; 9]) -> [f32; LANES] {
    // An integer in total_cmp's order (negative values' magnitudes reversed), from a
    // value's bits and back: the mapping is its own inverse.
    let key = |bits: i32| bits ^ (((bits >> 31) as u32) >> 1) as i32;
    let mut p = values.map(|set| set.map(|v| key(v.to_bits() as i32)));
    for (a, b) in EXCHANGES {
        let (x, y) = (p[a], p[b]);
        p[a] = std::array::from_fn(|l| x[l].min(y[l]));
        p[b] = std::array::from_fn(|l| x[l].max(y[l]));
    }
    p[4].map(|k| f32::from_bits(key(k) as u32))
}

/// The noise of a median of nine nodes `raw` (`smooth` their medians), or none without
/// finite nodes. About one node's, 1.4826 × the median distance of the nodes from their
/// medians, over 3 (a median of nine), but neighbouring nodes' windows overlap and share
/// their noise, so that distance understates it: twice it is the level.
fn median_noise(smooth: &Array2<f32>, raw: &Array2<f32>) -> Option<f32> {
    let mut distances: Vec<f32> = (raw.iter().zip(smooth))
        .map(|(&r, &m)| (r - m).abs())
        .filter(|d| d.is_finite())
        .collect();
    let mid = distances.len() / 2;
    (!distances.is_empty())
        .then(|| 2.0 * 1.4826 / 3.0 * *distances.select_nth_unstable_by(mid, f32::total_cmp).1)
}

/// `smooth`, the nodes' medians of `raw`, each brought towards 0 by their noise
/// ([`median_noise`], a soft threshold): a correction within that noise is none. Where the
/// network is more precise than the tracker's fits, their noise would otherwise replace its
/// precision. On a paper case at N = 3 whose network RMSE is 0.0134 px: 0.0155 with once
/// the nodes' median distance as the level, 0.0133 with twice it. A garrote, v·(1 −
/// (λ/v)²), which leaves a large correction nearly whole, lowered the wedges' phase error
/// but raised that case's RMSE (0.0131 → 0.0153 px, without [`with_detail`]). For T and D;
/// the displacements take [`smoothed`].
fn shrunk(smooth: Array2<f32>, raw: &Array2<f32>) -> Array2<f32> {
    match median_noise(&smooth, raw) {
        Some(noise) => smooth.mapv(|v| v.signum() * (v.abs() - noise).max(0.0)),
        None => smooth,
    }
}

/// Nodes on either side of a node (along each axis) over which [`smoothed`] takes its
/// broad mean: 9 × 9 nodes, 18 px.
const BROAD_REACH: usize = 4;
/// The noise of [`smoothed`]'s broad mean over a median's ([`median_noise`]): the nodes'
/// windows overlap, so 81 medians are worth far fewer independent ones. Chosen by the
/// measurements at [`smoothed`]: 0.33 and 0 raised the RMSE of a precise paper case at N = 3
/// (the network's 0.0134 px) to 0.0139 and 0.0143 px, 0.5 left it at 0.0135, 0.7 at 0.0131
/// with a lower slope on weak cylinders (0.959–0.968 against 0.965–0.974).
const BROAD_NOISE: f32 = 0.5;

/// The displacements' smooth correction from nodes `raw`: the broad mean of their 3×3
/// medians (over [`BROAD_REACH`]) and the medians' departure from it, each times a local
/// Wiener gain ([`wiener`]) against its noise ([`BROAD_NOISE`] × the medians', and the
/// medians' own, [`median_noise`]).
///
/// Why: [`shrunk`] takes its noise off every correction, however large, so the guarded
/// network kept part of the network's own underestimate of a smooth field. On weak
/// refraction (a smooth field and cylinders of max |d| 0.3 px on sandpaper with large
/// steps, N = 13, where the network's slope against the truth is 0.85–0.87 and 0.75–0.77;
/// `tests/guard.rs`) the guarded slope was 0.964–0.973 and 0.947–0.955, and is 0.991–0.992
/// and 0.965–0.974. A gain leaves a correction well above its noise nearly whole, and the
/// broad mean's noise is the lower. On the paper mix the RMSE is the same or 0.001 px lower
/// at every N; on the stress suite the wedges' phase at N = 2–5 fell from 0.012–0.023 to
/// 0.004–0.016 waves (`models/STRESS.md`). Tried: the broad mean whole (slopes 0.994–0.995
/// and 0.979, but that paper case 0.0128 → 0.0143 px); the soft threshold on the departure
/// (0.993–0.994 and 0.964–0.970); over 13 × 13 nodes (the suite's phase within 0.0004
/// waves of 9 × 9); for T and D too (D 3–7 % worse on the paper mix). Its cost is the
/// areas' it adds: more blocks' correction is over the areas' limit (`regions.rs`; at
/// 2048² × 20 700 blocks against 430, 0.16 s more; model card, *Speed*).
fn smoothed(raw: &Array2<f32>) -> Array2<f32> {
    let median = median_3x3(raw);
    let Some(noise) = median_noise(&median, raw) else {
        return median;
    };
    let broad = box_mean(&median, BROAD_REACH);
    let departure = median - &broad;
    let mut out = wiener(broad, BROAD_NOISE * noise);
    out += &wiener(departure, noise);
    out
}

/// `a` times a local Wiener gain, 1 − `noise`² / (`a`'s mean square over the nodes within
/// [`DETAIL_REACH`]), at least 0: what stands well above the noise is kept nearly whole,
/// what does not goes.
fn wiener(mut a: Array2<f32>, noise: f32) -> Array2<f32> {
    let power = box_mean(&a.mapv(|v| v * v), DETAIL_REACH);
    Zip::from(&mut a)
        .and(&power)
        .par_for_each(|v, &p| *v *= (1.0 - noise * noise / p).max(0.0));
    a
}

/// The mean of `a` over each node's (2·`reach` + 1)² neighbourhood within the grid.
fn box_mean(a: &Array2<f32>, reach: usize) -> Array2<f32> {
    let plane: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let means = crate::neighbourhood::box_sums(plane, a.dim(), reach, |sum, count| {
        (sum / count as f64) as f32
    });
    Array2::from_shape_vec(a.dim(), means).expect("one mean per node")
}

/// Nodes on either side of a node (along each axis) over which [`with_detail`] compares
/// the detail's power with its noise: 5 × 5 nodes, 10 px.
const DETAIL_REACH: usize = 2;
/// The fits' scatter over their standard error ([`tracking::refined_from`]'s): measured
/// 1.10–1.21 (`shift_sd_is_the_shifts_scatter` in `tracking/refine.rs`).
const SD_SCALE: f32 = 1.15;

/// `smooth` plus each node's own change `raw` beyond it (its detail), times a local Wiener
/// gain, 1 − (the noise's power)/(the detail's power) over the nodes within
/// [`DETAIL_REACH`], at least 0: detail that stands above the fits' noise (`sd`, their
/// standard errors, × [`SD_SCALE`]). The median of nodes 6 px across cannot follow the
/// network's error where it varies over a few px (on the stress suite's wedge of 5 px,
/// mask diagonal, N = 20, 85 % of the guarded error's power lay at wavelengths of 4–32
/// px). The displacements only, whose fits give their error. A soft threshold at one
/// standard error per node, tried first, added the fits' noise where the network was
/// precise (a paper case at N = 3 whose network RMSE is 0.0134 px: guarded 0.0150 px with
/// it, 0.0128 with this gain, 0.0131 without the detail).
fn with_detail(smooth: Array2<f32>, raw: &Array2<f32>, sd: &Array2<f32>) -> Array2<f32> {
    let (h, w) = smooth.dim();
    let detail = Zip::from(raw)
        .and(&smooth)
        .and(sd)
        .map_collect(|&r, &m, &s| match (r - m).is_finite() && s.is_finite() {
            true => [(r - m), (r - m).powi(2), (SD_SCALE * s).powi(2)],
            false => [f32::NAN; 3],
        });
    let mut out = smooth;
    Zip::indexed(out.rows_mut()).par_for_each(|j, mut row| {
        let rows = j.saturating_sub(DETAIL_REACH)..(j + DETAIL_REACH + 1).min(h);
        for (i, m) in row.iter_mut().enumerate() {
            let d = detail[(j, i)][0];
            if !d.is_finite() {
                continue;
            }
            let columns = i.saturating_sub(DETAIL_REACH)..(i + DETAIL_REACH + 1).min(w);
            let (power, noise) = (rows.clone())
                .flat_map(|y| columns.clone().map(move |x| (y, x)))
                .map(|q| detail[q])
                .filter(|v| v[0].is_finite())
                .fold((0.0f32, 0.0f32), |(p, n), v| (p + v[1], n + v[2]));
            *m += (1.0 - noise / power).max(0.0) * d;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_between_nodes_and_constant_beyond() {
        // Three nodes: node(0), node(1), node(2).
        assert_eq!(between(0, 3), (0, 1, 0.0));
        assert_eq!(between(node(0), 3), (0, 1, 0.0));
        assert_eq!(between(node(1), 3), (1, 2, 0.0));
        if STEP % 2 == 0 {
            assert_eq!(between(node(0) + STEP / 2, 3), (0, 1, 0.5));
        }
        assert_eq!(between(node(2), 3), (2, 2, 0.0));
        assert_eq!(between(node(2) + 3, 3), (2, 2, 0.0));
        assert_eq!(between(5, 1), (0, 0, 0.0));
    }

    #[test]
    fn the_median_leaves_out_a_wrong_node_and_missing_ones() {
        let mut a = Array2::from_elem((3, 3), 0.1f32);
        a[(1, 1)] = 0.45;
        a[(0, 0)] = f32::NAN;
        let m = median_3x3(&a);
        assert_eq!(m[(1, 1)], 0.1);
        assert_eq!(
            median_3x3(&Array2::from_elem((2, 2), f32::NAN))[(0, 0)],
            0.0
        );
    }

    #[test]
    fn the_medians_of_nine_are_the_sorted_fifth() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
        // Ties, signed zeros, infinities and wide magnitudes, as well as plain values.
        let pool = [
            -0.0f32,
            0.0,
            1.0,
            -1.0,
            0.5,
            -2.5,
            1e-30,
            -1e30,
            f32::INFINITY,
        ];
        for case in 0..200_000 {
            let values: [f32; 9] = std::array::from_fn(|_| match case % 2 {
                0 => pool[rng.random_range(0..pool.len())],
                _ => rng.random_range(-1.0f32..1.0),
            });
            let mut sorted = values;
            sorted.sort_unstable_by(f32::total_cmp);
            let m = medians_of_nine(values.map(|v| [v; LANES]));
            assert!(
                m.iter().all(|m| m.to_bits() == sorted[4].to_bits()),
                "{values:?}"
            );
        }
    }

    #[test]
    fn medians_side_by_side_are_each_nodes_own() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(3);
        // Nodes without a fit (NaN) here and there, as at a failed fit.
        let a = Array2::from_shape_fn((21, 45), |_| match rng.random_range(0..40) {
            0 => f32::NAN,
            _ => rng.random_range(-0.2f32..0.2),
        });
        let m = median_3x3(&a);
        for ((j, i), &v) in m.indexed_iter() {
            assert_eq!(
                v.to_bits(),
                median_at(&a, (j, i)).to_bits(),
                "node ({j}, {i})"
            );
        }
    }

    #[test]
    fn corrections_within_the_nodes_noise_are_none() {
        // Nodes scattered by ±0.03 around 0 (noise 2 × 1.4826 × 0.03 / 3 ≈ 0.0297) and
        // around 0.1: the first correction goes, the second keeps all but that noise.
        let raw =
            Array2::from_shape_fn((6, 6), |(j, i)| if (j + i) % 2 == 0 { 0.03 } else { -0.03 });
        let smooth = Array2::from_elem((6, 6), 0.0f32);
        assert!(shrunk(smooth, &raw).iter().all(|&v| v == 0.0));
        let smooth = Array2::from_elem((6, 6), 0.1f32);
        let raw = raw.mapv(|v| v + 0.1);
        let kept = shrunk(smooth, &raw);
        let expected = 0.1 - 2.0 * 1.4826 * 0.03 / 3.0;
        assert!(kept.iter().all(|&v| (v - expected).abs() < 1e-6), "{kept}");
    }

    #[test]
    fn a_broad_correction_is_kept_and_its_noise_is_not() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(11);
        // A correction of 0.1 px everywhere, the fits scattered by ±0.05 around it: the
        // soft threshold alone keeps 0.1 less the medians' noise (about 0.02 here).
        let raw = Array2::from_shape_fn((40, 40), |_| 0.1 + rng.random_range(-0.05f32..0.05));
        let mean = |a: &Array2<f32>| a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let spread = |a: &Array2<f32>| a.iter().fold(0.0f32, |m, &v| m.max((v - 0.1).abs()));
        let shrunk_whole = shrunk(median_3x3(&raw), &raw);
        assert!(mean(&shrunk_whole) < 0.09, "{}", mean(&shrunk_whole));
        let kept = smoothed(&raw);
        let medians = median_3x3(&raw);
        eprintln!(
            "means: shrunk {:.4}, smoothed {:.4}; farthest from 0.1: medians {:.4}, smoothed {:.4}",
            mean(&shrunk_whole),
            mean(&kept),
            spread(&medians),
            spread(&kept)
        );
        assert!((mean(&kept) - 0.1).abs() < 0.003, "{}", mean(&kept));
        assert!(spread(&kept) < 0.5 * spread(&medians), "{kept}");
    }

    #[test]
    fn detail_over_its_noise_is_added_and_noise_is_not() {
        // Detail of ±0.1 on every node: with errors of 0.01 nearly all of it is added (gain
        // 1 − 1.15² × 0.01² / 0.1²), with errors of 0.2 none; a node left out keeps
        // `smooth`.
        let smooth = Array2::from_elem((7, 7), 0.05f32);
        let mut raw =
            Array2::from_shape_fn((7, 7), |(j, i)| if (j + i) % 2 == 0 { 0.15 } else { -0.05 });
        raw[(3, 3)] = f32::NAN;
        for (error, gain) in [(0.01f32, 1.0 - (SD_SCALE * 0.01 / 0.1).powi(2)), (0.2, 0.0)] {
            let sd = Array2::from_elem((7, 7), error);
            let out = with_detail(smooth.clone(), &raw, &sd);
            for ((q, &v), &r) in out.indexed_iter().zip(&raw) {
                let expected = match r.is_finite() {
                    true => 0.05 + gain * (r - 0.05),
                    false => 0.05,
                };
                assert!(
                    (v - expected).abs() < 1e-6,
                    "error {error}, node {q:?}: {v}"
                );
            }
        }
    }

    #[test]
    fn a_constant_correction_is_added_everywhere() {
        let nodes = std::array::from_fn(|k| Array2::from_elem((2, 3), k as f32));
        let bias = Bias { nodes };
        let mut maps: [Array2<f32>; 4] = std::array::from_fn(|_| Array2::ones((9, 13)));
        let [a, b, c, d] = &mut maps;
        bias.apply([a, b, c, d]);
        for (k, m) in maps.iter().enumerate() {
            assert!(m.iter().all(|&v| v == 1.0 + k as f32), "map {k}");
        }
    }
}
