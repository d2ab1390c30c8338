//! Keys cubic convolution (a = −½): third-order accurate, reproduces linear functions,
//! exact at the samples. Shared by the simulator and the quality map.
//!
//! And cubic B-spline interpolation (Unser, IEEE Signal Process. Mag. 16(6), 22–38, 1999):
//! a recursive prefilter turns the samples into coefficients, which four B-spline weights
//! per axis interpolate. Its frequency response is much flatter than Keys', so a feature
//! interpolated between samples stays where it is: the tracker's sub-pixel refinement
//! matches against it, where Keys' phase error would move its estimates by up to 0.03 px.

/// Weights of the samples at offsets −1, 0, 1, 2 for a fraction `t` ∈ [0, 1).
pub(crate) fn keys(t: f64) -> [f32; 4] {
    let t = t as f32;
    let near = |s: f32| (1.5 * s - 2.5) * s * s + 1.0;
    let far = |s: f32| ((-0.5 * s + 2.5) * s - 4.0) * s + 2.0;
    [far(1.0 + t), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Cubic B-spline weights of the coefficients at offsets −1, 0, 1, 2 for a fraction
/// `t` ∈ [0, 1).
pub(crate) fn bspline(t: f64) -> [f32; 4] {
    let (t, u) = (t as f32, 1.0 - t as f32);
    [
        u * u * u / 6.0,
        (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0,
        (-3.0 * t * t * t + 3.0 * t * t + 3.0 * t + 1.0) / 6.0,
        t * t * t / 6.0,
    ]
}

/// Derivatives of [`bspline`]'s weights with respect to the position (per px).
pub(crate) fn bspline_derivative(t: f64) -> [f32; 4] {
    let (t, u) = (t as f32, 1.0 - t as f32);
    [
        -u * u / 2.0,
        1.5 * t * t - 2.0 * t,
        -1.5 * t * t + t + 0.5,
        t * t / 2.0,
    ]
}

/// The variance of white noise of unit variance after cubic B-spline interpolation (the
/// prefilter, then [`bspline`]) at fraction `t` ∈ [0, 1) along one axis, and its
/// derivative with respect to `t`: 1 at the samples, 0.756 halfway between. The noise of an
/// interpolated image is lowest halfway, which pulls a fit against it towards half-pixel
/// shifts unless the fit allows for it.
pub(crate) fn bspline_noise_gain(t: f64) -> [f64; 2] {
    const STEPS: usize = 256;
    static TABLE: std::sync::OnceLock<Vec<[f64; 2]>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        // The cardinal spline η = Σ_k √3·z^|k|·β₃(· − k) (the prefilter's impulse response
        // through the B-spline), z = √3 − 2; V(t) = Σ_j η(t − j)², both sums truncated
        // where z^|k| < 1e-9.
        let z = 3f64.sqrt() - 2.0;
        let beta = |x: f64| match x.abs() {
            a if a < 1.0 => 2.0 / 3.0 - a * a + a * a * a / 2.0,
            a if a < 2.0 => (2.0 - a).powi(3) / 6.0,
            _ => 0.0,
        };
        let eta = |x: f64| -> f64 {
            (-16..=16i32)
                .map(|k| 3f64.sqrt() * z.powi(k.abs()) * beta(x - k as f64))
                .sum()
        };
        let v = |t: f64| -> f64 { (-18..=18).map(|j| eta(t - j as f64).powi(2)).sum() };
        (0..=STEPS)
            .map(|i| {
                let (t, dt) = (i as f64 / STEPS as f64, 1e-5);
                [v(t), (v(t + dt) - v(t - dt)) / (2.0 * dt)]
            })
            .collect()
    });
    let x = t.rem_euclid(1.0) * STEPS as f64;
    let i = (x as usize).min(STEPS - 1);
    let a = x - i as f64;
    [0, 1].map(|k| table[i][k] * (1.0 - a) + table[i + 1][k] * a)
}

/// The cubic B-spline coefficients of the `rows` of the `n` frames (each `w` wide) of
/// `frames`, with the frames innermost: frame i's coefficient of pixel p at p·n + i, so that
/// one pixel's taps serve every frame in one vector pass. The recursive prefilter along
/// rows, then columns (mirror boundaries), in place on that layout: the frames are the lines
/// filtered side by side, and no frame-major copy of the coefficients is ever made (at
/// 2048² × 20 it was 335 MB more at the peak).
///
/// A band of rows is prefiltered as if it were the whole image: rows d px inside a band
/// edge that is not an image edge differ from the whole image's by about 0.27^d of the
/// signal (under f32 precision from d = 12).
///
/// The coefficients are written over `spare` (a previous band's): memory the process
/// already holds takes no page faults, which were most of a band's copy at 2048² × 20.
pub(crate) fn bspline_coefficients(
    frames: &[f32],
    n: usize,
    w: usize,
    rows: std::ops::Range<usize>,
    spare: Vec<f32>,
) -> Vec<f32> {
    use ndarray::{ArrayViewMut3, Axis};
    use rayon::prelude::*;
    let h = rows.len();
    if h == 0 {
        return Vec::new();
    }
    let mut out = pixel_major(frames, n, (rows.start * w, h * w), spare);
    // Lines filtered side by side are vector operations; one line's recursion is a chain
    // of dependent steps. Rows: sample x of frame i's row at x·n + i.
    out.par_chunks_exact_mut(w * n)
        .for_each(|row| prefilter(row, n));
    // Columns, in strips of columns whose every row is one contiguous segment.
    let mut image = ArrayViewMut3::from_shape((h, w, n), &mut out).expect("n·h·w values");
    image
        .axis_chunks_iter_mut(Axis(1), (LANES / n).max(1))
        .into_par_iter()
        .for_each_init(Vec::new, |buf: &mut Vec<f32>, mut strip| {
            let lanes = strip.len() / h;
            buf.clear();
            for row in strip.outer_iter() {
                buf.extend_from_slice(row.to_slice().expect("a row of a strip is contiguous"));
            }
            prefilter(buf, lanes);
            for (line, mut row) in buf.chunks_exact(lanes).zip(strip.outer_iter_mut()) {
                let row = row.as_slice_mut().expect("a row of a strip is contiguous");
                row.copy_from_slice(line);
            }
        });
    out
}

/// Values `start..start + count` of each of the `n` frames of `frames` with the frames
/// innermost (frame i's value of pixel start + p at p·n + i), written over `out`.
fn pixel_major(
    frames: &[f32],
    n: usize,
    (start, count): (usize, usize),
    mut out: Vec<f32>,
) -> Vec<f32> {
    use rayon::prelude::*;
    // Each block reads its pixels' run of every frame (contiguous) and writes them, frame
    // by frame, into a block that stays in cache.
    const PIXELS: usize = 64;
    let len = frames.len() / n;
    // Every value is written below: only memory beyond `out`'s is zeroed first.
    out.resize(n * count, 0.0);
    out.par_chunks_mut(n * PIXELS)
        .enumerate()
        .for_each(|(c, block)| {
            let first = start + c * PIXELS;
            for (i, frame) in frames.chunks_exact(len).enumerate() {
                let run = &frame[first..][..block.len() / n];
                for (values, &v) in block.chunks_exact_mut(n).zip(run) {
                    values[i] = v;
                }
            }
        });
    out
}

/// Lines prefiltered together in a strip of columns (at least one column's frames). Wide
/// strips, as each row of a strip is read from its own page: a column pass over a band of
/// 600 rows × 2048 × 20 frames took 0.02 s with 256 lanes (12 columns) against 0.04 s with
/// 32 (one column); from 1 024 lanes it is slower again (0.03 s), the strips leaving the
/// cache.
const LANES: usize = 256;

/// Index `i` of a line of `n` samples extended by mirror symmetry (…, 1, 0, 1, …, n − 2,
/// n − 1, n − 2, …), as the coefficients of [`bspline_coefficients`] assume.
#[inline]
pub(crate) fn mirror(i: isize, n: usize) -> usize {
    // Inside, as nearly every index is: no division.
    if (0..n as isize).contains(&i) {
        return i as usize;
    }
    let n = n as isize;
    let period = (2 * n - 2).max(1);
    let i = i.rem_euclid(period);
    (if i < n { i } else { period - i }) as usize
}

/// The cubic B-spline prefilter in place of `lanes` interleaved lines, sample k of line j
/// at `c[k·lanes + j]`: a causal and an anti-causal first-order recursion with pole
/// z = √3 − 2, mirror-symmetric ends. In f32: each step's rounding is damped by |z| = 0.27
/// at the next, so the result is within a few f32 units of an f64 recursion's.
fn prefilter(c: &mut [f32], lanes: usize) {
    let n = c.len() / lanes;
    if n < 2 {
        return;
    }
    let z = 3f32.sqrt() - 2.0;
    let line = |k: usize| k * lanes..(k + 1) * lanes;
    // Causal start: the mirrored sum Σ z^k c[k], truncated where z^k < 1e-10.
    let mut zk = 1.0;
    for k in 1..n.min(18) {
        zk *= z;
        let (head, tail) = c.split_at_mut(k * lanes);
        head[..lanes]
            .iter_mut()
            .zip(&tail[..lanes])
            .for_each(|(s, &v)| *s += zk * v);
    }
    // The gain 6 applied on the way in: the filter is linear.
    c[line(0)].iter_mut().for_each(|v| *v *= 6.0);
    for k in 1..n {
        let (done, rest) = c.split_at_mut(k * lanes);
        rest[..lanes]
            .iter_mut()
            .zip(&done[line(k - 1)])
            .for_each(|(v, &p)| *v = 6.0 * *v + z * p);
    }
    let (head, last) = c.split_at_mut((n - 1) * lanes);
    last[..lanes]
        .iter_mut()
        .zip(&head[line(n - 2)])
        .for_each(|(v, &b)| *v = z / (z * z - 1.0) * (*v + z * b));
    for k in (0..n - 1).rev() {
        let (head, tail) = c.split_at_mut((k + 1) * lanes);
        head[line(k)]
            .iter_mut()
            .zip(&tail[..lanes])
            .for_each(|(v, &next)| *v = z * (next - *v));
    }
}

/// Value of `img` (row-major, `w` columns, `h` rows) at (y, x); indices clamped at edges.
pub(crate) fn bicubic(img: &[f32], h: usize, w: usize, y: f64, x: f64) -> f32 {
    Taps::new(h, w, y, x).apply(img)
}

/// The 4×4 Keys taps of one point: where they fall (clamped at the edges) and their
/// weights, computed once for every frame of a stack sampled there.
pub(crate) struct Taps {
    /// The four rows' offsets and the first of the four columns (clamped to the image).
    rows: [usize; 4],
    columns: [usize; 4],
    weights: [f32; 16],
}

impl Taps {
    pub(crate) fn new(h: usize, w: usize, y: f64, x: f64) -> Self {
        let (iy, ix) = (y.floor(), x.floor());
        let (wy, wx) = (keys(y - iy), keys(x - ix));
        let clamp = |base: f64, k: usize, n: usize| {
            (base as isize + k as isize - 1).clamp(0, n as isize - 1) as usize
        };
        Taps {
            rows: std::array::from_fn(|j| clamp(iy, j, h) * w),
            columns: std::array::from_fn(|i| clamp(ix, i, w)),
            weights: std::array::from_fn(|k| wy[k / 4] * wx[k % 4]),
        }
    }

    /// The interpolated value in `img`, one frame of the size the taps were made for. Away
    /// from the image's sides a row's four columns are one slice (one bounds check, not
    /// four); the products are summed in the same order either way.
    #[inline]
    pub(crate) fn apply(&self, img: &[f32]) -> f32 {
        let c = self.columns;
        let products: [f32; 16] = if c[3] == c[0] + 3 {
            let row = |j: usize| &img[self.rows[j] + c[0]..][..4];
            let rows = [row(0), row(1), row(2), row(3)];
            std::array::from_fn(|k| self.weights[k] * rows[k / 4][k % 4])
        } else {
            std::array::from_fn(|k| self.weights[k] * img[self.rows[k / 4] + c[k % 4]])
        };
        // Summed as a tree, not in sequence: 4 dependent additions instead of 16 (the
        // quality map's whole cost was this chain's latency).
        let rows: [f32; 4] = std::array::from_fn(|i| {
            (products[i] + products[4 + i]) + (products[8 + i] + products[12 + i])
        });
        (rows[0] + rows[1]) + (rows[2] + rows[3])
    }

    /// The interpolated value of every frame of `block` into `out` (one per frame): the
    /// same products summed in the same order as [`Taps::apply`], so the same values, but
    /// a frame per vector lane. False, `out` untouched, where the taps fall outside the
    /// block.
    pub(crate) fn apply_frames(&self, block: &FrameBlock, out: &mut [f32]) -> bool {
        let rows = self.rows.map(|offset| offset / block.w);
        let inside = block.rows.contains(&rows[0])
            && block.rows.contains(&rows[3])
            && block.columns.contains(&self.columns[0])
            && block.columns.contains(&self.columns[3]);
        if !inside {
            return false;
        }
        let (n, cols) = (block.n, block.columns.len());
        let offsets: [usize; 16] = std::array::from_fn(|k| {
            let (row, column) = (rows[k / 4], self.columns[k % 4]);
            ((row - block.rows.start) * cols + column - block.columns.start) * n
        });
        interpolate_frames(&block.values, &offsets, &self.weights, &mut out[..n]);
        true
    }
}

/// [`Taps::apply_frames`]'s sums: tap k's frames at `values[offsets[k]..]`. Compiled for
/// AVX2 too (eight frames per instruction), taken where the CPU has it; the same
/// operations in the same order, so the same results.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn interpolate_frames(values: &[f32], offsets: &[usize; 16], weights: &[f32; 16], out: &mut [f32]) {
    let n = out.len();
    let taps: [&[f32]; 16] = std::array::from_fn(|k| &values[offsets[k]..][..n]);
    for (f, out) in out.iter_mut().enumerate() {
        let products: [f32; 16] = std::array::from_fn(|k| weights[k] * taps[k][f]);
        let rows: [f32; 4] = std::array::from_fn(|i| {
            (products[i] + products[4 + i]) + (products[8 + i] + products[12 + i])
        });
        *out = (rows[0] + rows[1]) + (rows[2] + rows[3]);
    }
}

/// A block of pixels of a stack `[N, H, W]` with the frames innermost (frame f of pixel
/// (y, x) at `((y − rows.start)·columns.len() + x − columns.start)·N + f`): what
/// [`Taps::apply_frames`] reads, one pixel's frames side by side. Its memory is reused
/// from block to block.
#[derive(Default)]
pub(crate) struct FrameBlock {
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    /// The stack's width and frames.
    w: usize,
    n: usize,
    values: Vec<f32>,
}

impl FrameBlock {
    /// Copies pixels `rows × columns` of `frames` (`[n, h, w]`, row-major) into the block.
    pub(crate) fn copy(
        &mut self,
        frames: &[f32],
        (n, h, w): (usize, usize, usize),
        rows: std::ops::Range<usize>,
        columns: std::ops::Range<usize>,
    ) {
        let cols = columns.len();
        self.values.resize(rows.len() * cols * n, 0.0);
        for (r, y) in rows.clone().enumerate() {
            let out = &mut self.values[r * cols * n..][..cols * n];
            for i in 0..n {
                let run = &frames[(i * h + y) * w + columns.start..][..cols];
                for (values, &v) in out.chunks_exact_mut(n).zip(run) {
                    values[i] = v;
                }
            }
        }
        (self.rows, self.columns, self.w, self.n) = (rows, columns, w, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_weights_partition_unity_and_interpolate() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let w = keys(t);
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            let ramp: f32 = w
                .iter()
                .enumerate()
                .map(|(i, w)| w * (i as f32 - 1.0))
                .sum();
            assert!((ramp - t as f32).abs() < 1e-6);
        }
        assert_eq!(keys(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn bspline_noise_gain_matches_interpolated_noise() {
        let [v0, d0] = bspline_noise_gain(0.0);
        assert!((v0 - 1.0).abs() < 1e-9 && d0.abs() < 1e-6, "{v0} {d0}");
        let [v_half, d_half] = bspline_noise_gain(0.5);
        assert!((v_half - 0.7561).abs() < 1e-3 && d_half.abs() < 1e-4);
        let [v, dv] = bspline_noise_gain(0.3);
        assert!((v - bspline_noise_gain(0.7)[0]).abs() < 1e-9 && dv < 0.0);
        // White noise interpolated halfway along x: its variance over the unit input's.
        let (h, w) = (200, 200);
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
        let img: Vec<f32> = (0..h * w).map(|_| rng.random::<f32>() - 0.5).collect();
        let coef = bspline_coefficients(&img, 1, w, 0..h, Vec::new());
        let (wy, wx) = (bspline(0.0), bspline(0.5));
        let (mut sum, mut sq, mut count) = (0.0f64, 0.0f64, 0.0f64);
        for y in 10..h - 10 {
            for x in 10..w - 10 {
                let tap = |j: usize, i: usize| wy[j] * wx[i] * coef[(y + j - 1) * w + x + i - 1];
                let v: f32 = (0..16).map(|k| tap(k / 4, k % 4)).sum();
                sum += v as f64;
                sq += (v as f64).powi(2);
                count += 1.0;
            }
        }
        let var = sq / count - (sum / count).powi(2);
        let ratio = var * 12.0; // uniform noise on [−½, ½): variance 1/12
        assert!((ratio - v_half).abs() < 0.02, "{ratio} vs {v_half}");
    }

    #[test]
    fn coefficients_of_several_frames_are_each_frames_own() {
        let (h, w) = (17, 23);
        // Fewer frames than a strip's lanes, and more.
        for n in [3, 40] {
            let frames: Vec<f32> = (0..n * h * w)
                .map(|k| ((k * 7919) % 101) as f32 * 0.1)
                .collect();
            let all = bspline_coefficients(&frames, n, w, 0..h, Vec::new());
            for (i, frame) in frames.chunks_exact(h * w).enumerate() {
                let own = bspline_coefficients(frame, 1, w, 0..h, Vec::new());
                assert!(
                    (0..h * w).all(|p| all[p * n + i] == own[p]),
                    "n {n} frame {i}"
                );
            }
        }
    }

    #[test]
    fn a_band_of_rows_has_the_whole_images_coefficients_12_rows_inside_its_edges() {
        let (n, h, w) = (3, 90, 21);
        let frames: Vec<f32> = (0..n * h * w)
            .map(|k| ((k * 7919) % 101) as f32 * 0.1)
            .collect();
        let all = bspline_coefficients(&frames, n, w, 0..h, Vec::new());
        // A band inside the image, and one that ends at its last row.
        for rows in [30..70, 50..90] {
            let band = bspline_coefficients(&frames, n, w, rows.clone(), Vec::new());
            let inner = rows.start + 12..if rows.end == h { h } else { rows.end - 12 };
            for y in inner {
                for k in 0..w * n {
                    let (a, b) = (all[y * w * n + k], band[(y - rows.start) * w * n + k]);
                    assert!(
                        (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                        "{rows:?} row {y}: {a} {b}"
                    );
                }
            }
            // And the band's own edge rows are not (the test can fail).
            let edge = rows.start;
            assert!((0..w * n).any(|k| all[edge * w * n + k] != band[k]));
        }
    }

    #[test]
    fn bspline_interpolation_is_exact_at_the_samples_and_on_a_ramp() {
        let (h, w) = (31, 40);
        let img: Vec<f32> = (0..h * w)
            .map(|k| ((k % w) as f32 * 0.7).sin() + 0.3 * (k / w) as f32)
            .collect();
        let coef = bspline_coefficients(&img, 1, w, 0..h, Vec::new());
        let at = |y: f64, x: f64, dy: bool, dx: bool| {
            let (iy, ix) = (y.floor(), x.floor());
            let wy = if dy {
                bspline_derivative(y - iy)
            } else {
                bspline(y - iy)
            };
            let wx = if dx {
                bspline_derivative(x - ix)
            } else {
                bspline(x - ix)
            };
            let mut acc = 0.0f32;
            for (j, wy) in wy.iter().enumerate() {
                let yy = mirror(iy as isize + j as isize - 1, h);
                for (i, wx) in wx.iter().enumerate() {
                    let xx = mirror(ix as isize + i as isize - 1, w);
                    acc += wy * wx * coef[yy * w + xx];
                }
            }
            acc
        };
        for (y, x) in [(0, 10), (15, 20), (30, 39)] {
            let v = at(y as f64, x as f64, false, false);
            assert!(
                (v - img[y * w + x]).abs() < 1e-4,
                "({y}, {x}): {v} vs {}",
                img[y * w + x]
            );
        }
        // Between the samples, away from the ends: the gradient of the ramp along y.
        assert!((at(15.3, 20.6, true, false) - 0.3).abs() < 1e-3);
        for t in [0.0, 0.3, 0.8] {
            assert!((bspline(t).iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(bspline_derivative(t).iter().sum::<f32>().abs() < 1e-6);
        }
    }

    #[test]
    fn bicubic_is_exact_on_a_plane() {
        let (h, w) = (6, 7);
        let img: Vec<f32> = (0..h * w)
            .map(|k| (k / w) as f32 * 2.0 + (k % w) as f32 * 0.5)
            .collect();
        let v = bicubic(&img, h, w, 2.3, 3.6);
        assert!((v - (2.3 * 2.0 + 3.6 * 0.5)).abs() < 1e-5);
    }
}
