//! Exhaustive integer search over ±max_shift, in tiles of rows and columns small enough
//! for L2, one row of shifts at a time, then a quadratic fit of the 3×3 costs around each
//! minimum.
//!
//! Cost of shift u at pixel p, from weighted window sums over all frames (Σw = N·Σ window):
//! `var_S − cov(S, R_u)² / var(R_u)` for the dark-field model (the residual of the best
//! `S ≈ a + K·R_u`). Only `Σ S·R_u` depends on u; the other sums are filtered once and
//! read at p or p − u. Stacks are normalised by the reference mean and centred
//! (x/mean − 1), which leaves the dark-field fit unchanged and keeps the f32 sums well
//! conditioned. The seeded searches ([`local_search`]) fit the background ramp too where
//! the fits have one ([`super::window::fits_ramp`]); this search does not.

use std::sync::Arc;

use ndarray::{Array2, ArrayView3};
use rayon::prelude::*;

use super::window::{filter, fits_ramp, moment2, weights};
use super::{Params, Status};
use crate::model::Illumination;

/// Rows of output per task (the search's and the refinement's): a unit of progress.
pub(super) const BAND: usize = 16;

/// The caller's stacks, read normalised and centred (value / mean(reference) − 1) on the
/// fly, so that memory follows the bands and not the image; and the window sums.
pub(super) struct Stacks<'a> {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    raw_r: &'a [f32],
    raw_s: &'a [f32],
    /// `light.scale()`, kept for the hot loops that normalise as they read.
    scale: f32,
    /// The reference's mean and M, its local mean (normalised), frames and a `mean_window`
    /// box. Shared with the stacks of other windows ([`Stacks::with_kernel`]).
    pub light: Illumination,
    pub kernel: Vec<f32>,
    /// The reference frames' cubic B-spline coefficients (as given, not normalised), which
    /// the sub-pixel refinement interpolates, frames innermost (each pixel's N values are
    /// contiguous, so its taps serve every frame in one vector pass), of one band of rows
    /// ([`super::bands`]).
    coefficients: Arc<Vec<f32>>,
    /// The image row of the coefficients' first row.
    first_row: usize,
    /// The reference's noise variance per unit of normalised intensity (σ² = noise·v for a
    /// normalised value v, Poisson-like), which the sub-pixel refinement allows for; 0
    /// until [`super::refine::noise_gain`] has estimated it.
    pub noise: f64,
    /// Σw over the window and all frames.
    pub sw: f32,
    /// Window sums over frames of R, R², S, S² (valid where the window fits).
    r1: Vec<f32>,
    r2: Vec<f32>,
    s1: Vec<f32>,
    s2: Vec<f32>,
    /// Whether the fits and the seeded searches include a background ramp
    /// ([`fits_ramp`]): the tracker's own; not the guard's.
    pub ramp: bool,
    /// Σw·o² over the window and all frames: the ramp columns' norm.
    pub m2: f32,
}

impl<'a> Stacks<'a> {
    /// Stacks `[N, H, W]` in standard layout, and the reference's illumination where it is
    /// known already.
    pub fn new(
        reference: ArrayView3<'a, f32>,
        sample: ArrayView3<'a, f32>,
        p: &Params,
        light: Option<&Illumination>,
    ) -> Self {
        let stacks = Self::without_sums(reference, sample, p, light, 0..0, Vec::new());
        Stacks {
            ramp: fits_ramp(p.dark_field, stacks.n, p.window),
            ..stacks
        }
        .with_sums()
    }

    /// Stacks without the image-wide window sums and with the B-spline coefficients of
    /// `rows` only ([`super::bands`]), for the fits of the pixels those rows serve
    /// ([`local_search`] sums its own windows). [`Stacks::new`] has none: the integer
    /// search reads the reference as given.
    pub fn without_sums(
        reference: ArrayView3<'a, f32>,
        sample: ArrayView3<'a, f32>,
        p: &Params,
        light: Option<&Illumination>,
        rows: std::ops::Range<usize>,
        spare: Vec<f32>,
    ) -> Self {
        let (n, h, w) = reference.dim();
        let light = Illumination::reuse(light, reference, p.mean_window);
        let scale = light.scale();
        let slice = |a: ArrayView3<'a, f32>| a.to_slice().expect("standard layout");
        let raw_r = slice(reference);
        let first_row = rows.start;
        let coefficients = crate::interpolate::bspline_coefficients(raw_r, n, w, rows, spare);
        let kernel = weights(p.window, p.hamming);
        Stacks {
            n,
            h,
            w,
            first_row,
            raw_r,
            raw_s: slice(sample),
            scale,
            light,
            coefficients: Arc::new(coefficients),
            noise: 0.0,
            sw: n as f32 * kernel.iter().sum::<f32>().powi(2),
            m2: n as f32 * moment2(&kernel),
            kernel,
            r1: Vec::new(),
            r2: Vec::new(),
            s1: Vec::new(),
            s2: Vec::new(),
            ramp: false,
        }
    }

    /// Normalised reference at flat index `i` (frame-major, row-major).
    #[inline]
    pub fn r(&self, i: usize) -> f32 {
        self.raw_r[i] * self.scale - 1.0
    }

    /// Normalised sample at flat index `i`.
    #[inline]
    pub fn s(&self, i: usize) -> f32 {
        self.raw_s[i] * self.scale - 1.0
    }

    /// The B-spline coefficients of the reference at pixel (y, x), one per frame.
    #[inline]
    pub fn coefficients_at(&self, y: usize, x: usize) -> &[f32] {
        debug_assert!(
            y >= self.first_row,
            "row {y} is before the coefficients' band"
        );
        &self.coefficients[((y - self.first_row) * self.w + x) * self.n..][..self.n]
    }

    /// The coefficients of `count` pixels from (y, x) along the row, each one's frames
    /// together.
    #[inline]
    pub fn coefficients_run(&self, y: usize, x: usize, count: usize) -> &[f32] {
        debug_assert!(y >= self.first_row && x + count <= self.w);
        &self.coefficients[((y - self.first_row) * self.w + x) * self.n..][..count * self.n]
    }

    /// The image rows whose coefficients these stacks hold.
    pub fn coefficient_rows(&self) -> std::ops::Range<usize> {
        let rows = self.coefficients.len() / (self.w * self.n).max(1);
        self.first_row..self.first_row + rows
    }

    /// The factor that normalises the reference (1 / its mean).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The same data with the B-spline coefficients of `rows` (and no window sums), written
    /// over `spare` ([`Stacks::into_spare`] of the previous band's).
    pub fn with_rows(&self, rows: std::ops::Range<usize>, spare: Vec<f32>) -> Self {
        let coefficients = crate::interpolate::bspline_coefficients(
            self.raw_r,
            self.n,
            self.w,
            rows.clone(),
            spare,
        );
        Stacks {
            first_row: rows.start,
            coefficients: Arc::new(coefficients),
            ..self.with_kernel_of(self.kernel.clone())
        }
    }

    /// The coefficients' memory, for the next band's, where no other stacks share it.
    pub fn into_spare(self) -> Vec<f32> {
        Arc::into_inner(self.coefficients).unwrap_or_default()
    }

    /// The same data with the window of `p.window`, without the image-wide window sums
    /// (the work of [`local_search`] and the sub-pixel fits needs none).
    pub fn with_kernel(&self, p: &Params) -> Self {
        Stacks {
            ramp: self.ramp && fits_ramp(p.dark_field, self.n, p.window),
            ..self.with_kernel_of(weights(p.window, p.hamming))
        }
    }

    fn with_kernel_of(&self, kernel: Vec<f32>) -> Self {
        Stacks {
            sw: self.n as f32 * kernel.iter().sum::<f32>().powi(2),
            m2: self.n as f32 * moment2(&kernel),
            kernel,
            light: self.light.clone(),
            coefficients: self.coefficients.clone(),
            r1: Vec::new(),
            r2: Vec::new(),
            s1: Vec::new(),
            s2: Vec::new(),
            ..*self
        }
    }

    /// The same data with the window sums that the integer search reads.
    fn with_sums(self) -> Self {
        let (h, w) = (self.h, self.w);
        // Frames added in turn for each row (contiguous reads), the four sums side by side.
        let frame_sum = |&(raw, sq): &(&[f32], bool)| {
            let mut acc = crate::memory::written_zeros::<f32>(h * w);
            acc.chunks_exact_mut(w).enumerate().for_each(|(y, row)| {
                for frame in raw.chunks_exact(h * w) {
                    let src = &frame[y * w..(y + 1) * w];
                    row.iter_mut().zip(src).for_each(|(o, &v)| {
                        let v = v * self.scale - 1.0;
                        *o += if sq { v * v } else { v }
                    });
                }
            });
            let (mut out, mut tmp) = (vec![0.0; h * w], Vec::new());
            filter(&acc, h, w, &self.kernel, &mut out, &mut tmp);
            out
        };
        let (r, s) = (self.raw_r, self.raw_s);
        let sums = [(r, false), (r, true), (s, false), (s, true)];
        let [r1, r2, s1, s2]: [Vec<f32>; 4] = sums
            .par_iter()
            .map(frame_sum)
            .collect::<Vec<_>>()
            .try_into()
            .expect("four sums");
        Stacks {
            r1,
            r2,
            s1,
            s2,
            ..self
        }
    }

    /// Frees the window sums, which only the integer search reads (67 MB at 2048²), so that
    /// the refinement's maps take their place.
    pub fn release_sums(&mut self) {
        for sums in [&mut self.r1, &mut self.r2, &mut self.s1, &mut self.s2] {
            *sums = Vec::new();
        }
    }

    /// Costs of the fits at the pixel indices from `p`, for the reference pixel indices
    /// from `q = p − u`, given `c = Σw S·R_u` for each: one row of a tile, sliced first so
    /// that the loop has no bounds checks and is vectorised (a function inlined, not a
    /// closure, so that it is compiled for AVX2 in [`tile`]'s AVX2 version).
    #[inline(always)]
    fn costs<const DARK_FIELD: bool>(&self, p: usize, q: usize, c: &[f32], out: &mut [f32]) {
        let n = out.len();
        let (s1, s2, r1, r2) = (
            &self.s1[p..][..n],
            &self.s2[p..][..n],
            &self.r1[q..][..n],
            &self.r2[q..][..n],
        );
        let c = &c[..n];
        for i in 0..n {
            out[i] = cost(
                DARK_FIELD,
                self.sw,
                [s1[i], s2[i], r1[i], r2[i]],
                c[i],
                None,
            );
        }
    }
}

/// Cost of the fit from the window sums `[Σw S, Σw S², Σw R_u, Σw R_u²]`, `c = Σw S·R_u`
/// and `sw = Σw`; where the fit has the background ramp, its first moments
/// `[Σw·o_y·S, Σw·o_x·S, Σw·o_y·R_u, Σw·o_x·R_u]` and their norm Σw·o² (the constant and
/// the two offsets are orthogonal under a symmetric window: each is projected out alone).
#[inline(always)]
fn cost(
    dark_field: bool,
    sw: f32,
    [s1, s2, r1, r2]: [f32; 4],
    c: f32,
    moments: Option<([f32; 4], f32)>,
) -> f32 {
    if dark_field {
        let (mut var_r, mut cov, mut var_s) =
            (r2 - r1 * r1 / sw, c - s1 * r1 / sw, s2 - s1 * s1 / sw);
        if let Some(([sy, sx, ry, rx], m2)) = moments {
            var_r -= (ry * ry + rx * rx) / m2;
            cov -= (sy * ry + sx * rx) / m2;
            var_s -= (sy * sy + sx * sx) / m2;
        }
        if var_r > 1e-12 * sw {
            var_s - cov * cov / var_r
        } else {
            f32::INFINITY
        }
    } else {
        // Uncentred sums for S ≈ t·R (centring is not neutral for this model).
        let (sr, rr, ss) = (c + s1 + r1 + sw, r2 + 2.0 * r1 + sw, s2 + 2.0 * s1 + sw);
        if rr > 0.0 {
            ss - sr * sr / rr
        } else {
            f32::INFINITY
        }
    }
}

/// The first rows of [`exhaustive`]'s bands of [`BAND`] rows, on an image `h` rows high.
fn band_starts(h: usize, p: &Params) -> std::iter::StepBy<std::ops::Range<usize>> {
    (p.border()..h - p.border()).step_by(BAND)
}

/// The progress units of [`exhaustive`]: one per band.
pub(super) fn units(h: usize, p: &Params) -> usize {
    band_starts(h, p).len()
}

/// Sub-pixel shifts (dy, dx) and status of every pixel; one of `units` per band.
pub(super) fn exhaustive(
    st: &Stacks,
    p: &Params,
    units: &crate::progress::Units,
) -> crate::Result<(Array2<[f32; 2]>, Array2<u8>)> {
    let (h, w, b) = (st.h, st.w, p.border());
    let bands: Vec<usize> = band_starts(h, p).collect();
    let results: Vec<Vec<([f32; 2], u8)>> = bands
        .par_iter()
        .map(|&y0| {
            if !units.go_on() {
                return Vec::new();
            }
            let r = band(st, p, y0, (y0 + BAND).min(h - b));
            units.finish_one();
            r
        })
        .collect();
    units.check()?;
    let mut shift = Array2::from_elem((h, w), [f32::NAN; 2]);
    let mut status = Array2::from_elem((h, w), Status::Border as u8);
    for (&y0, rows) in bands.iter().zip(results) {
        let cols = w - 2 * b;
        for (k, (d, s)) in rows.into_iter().enumerate() {
            let (y, x) = (y0 + k / cols, b + k % cols);
            shift[[y, x]] = d;
            status[[y, x]] = s;
        }
    }
    Ok((shift, status))
}

/// Output rows [y0, y1), columns [b, w − b), in tiles of [`TILE`] columns.
fn band(st: &Stacks, p: &Params, y0: usize, y1: usize) -> Vec<([f32; 2], u8)> {
    let b = p.border();
    let cols = st.w - 2 * b;
    let mut out = vec![([f32::NAN; 2], Status::IllConditioned as u8); (y1 - y0) * cols];
    for c0 in (b..st.w - b).step_by(TILE) {
        let c1 = (c0 + TILE).min(st.w - b);
        let found = tile(st, p, y0..y1, c0..c1);
        for (k, row) in found.chunks_exact(c1 - c0).enumerate() {
            out[k * cols + c0 - b..][..c1 - c0].copy_from_slice(row);
        }
    }
    out
}

/// Output pixels of one tile: [`BAND`] rows by this many columns, so that its rows of
/// both stacks (about 320 kB at N = 20, ±8 px), read once per row of shifts, stay in L2.
pub(super) const TILE: usize = 64;

/// Output rows `ys`, columns `xs` (row-major). One row of shifts (uy) at a time: the
/// products for all of its ux, register-blocked so that each frame's values are loaded
/// once for several shifts; their costs; and, one row of shifts behind, each pixel's
/// running minimum with the 3×3 of costs around it (three rows of costs kept, not the
/// whole volume, which bound the search to memory). Compiled for AVX2 too, taken where
/// the CPU has it; the same sums in the same order, so the same results.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn tile(
    st: &Stacks,
    p: &Params,
    ys: std::ops::Range<usize>,
    xs: std::ops::Range<usize>,
) -> Vec<([f32; 2], u8)> {
    let (n, w, nw, m) = (st.n, st.w, p.window, p.max_shift);
    let (rows, cols) = (ys.len(), xs.len());
    let npix = rows * cols;
    // Products on the window around the output pixels: rows [py0, py0 + ph), columns
    // [px0, px0 + pw); the reference ±m beyond.
    // Their columns are padded to whole lanes (zeros past the image), so that the
    // products have no scalar tail (at Nw = 1, the 65th and 66th columns of a 64-column
    // tile took a sixth of the search's instructions); the padding's sums are not read.
    let (py0, px0) = (ys.start - nw, xs.start - nw);
    let (ph, pw) = (rows + 2 * nw, (cols + 2 * nw).next_multiple_of(LANES));
    let (rh, rw) = (ph + 2 * m, pw + 2 * m);
    let side = 2 * m + 1;
    let frames = Frames {
        s: normalised(st, st.raw_s, [py0, px0], [ph, pw]),
        r: normalised(st, st.raw_r, [py0 - m, px0 - m], [rh, rw]),
        n,
        ph,
        pw,
        rh,
        rw,
    };
    let mut prod = vec![0.0f32; side * ph * pw];
    let (mut filt, mut tmp) = (vec![0.0f32; ph * pw], Vec::new());
    // Costs of three rows of shifts, row iy in slot iy % 3: plane ix holds shift (iy, ix).
    let mut costs = vec![0.0f32; 3 * side * npix];
    let slot = |iy: usize, ix: usize| ((iy % 3) * side + ix) * npix;
    // Per pixel: the lowest cost so far and its index iy·side + ix (the first of equals),
    // and the 3×3 of costs around it; the lowest of row iy of shifts and its first ix, in
    // slot iy % 2 (kept as the costs are written, while they are in L1).
    let mut best = vec![(f32::INFINITY, 0usize); npix];
    let mut around = vec![[0.0f32; 9]; npix];
    let mut row_best = [vec![0.0f32; npix], vec![0.0f32; npix]];
    // Two buffers each for the index, plane ix reading one and writing the other: a
    // select stored over the value it read became a masked store (slow on AMD).
    let mut row_arg = [
        [vec![0u32; npix], vec![0u32; npix]],
        [vec![0u32; npix], vec![0u32; npix]],
    ];
    for iy in 0..=side {
        if iy < side {
            let uy = iy as isize - m as isize;
            products(&frames, m, iy, &mut prod);
            let (lowest, arg) = (&mut row_best[iy % 2], &mut row_arg[iy % 2]);
            lowest.fill(f32::INFINITY);
            for ix in 0..side {
                let ux = ix as isize - m as isize;
                let plane = &prod[ix * ph * pw..][..ph * pw];
                filter(plane, ph, pw, &st.kernel, &mut filt, &mut tmp);
                let out = &mut costs[slot(iy, ix)..][..npix];
                for (k, y) in ys.clone().enumerate() {
                    let filt = &filt[(k + nw) * pw + nw..][..cols];
                    let out = &mut out[k * cols..][..cols];
                    let pi = y * w + xs.start;
                    let qi = ((y as isize - uy) * w as isize + xs.start as isize - ux) as usize;
                    match p.dark_field {
                        true => st.costs::<true>(pi, qi, filt, out),
                        false => st.costs::<false>(pi, qi, filt, out),
                    }
                    let row = k * cols..(k + 1) * cols;
                    let [even, odd] = arg;
                    let (from, to) = match ix % 2 {
                        0 => (&even[row.clone()], &mut odd[row.clone()]),
                        _ => (&odd[row.clone()], &mut even[row.clone()]),
                    };
                    lowest_of(&mut lowest[row], from, to, out, ix as u32);
                }
            }
        }
        // Row iy − 1 of shifts, now that the rows on both sides of it are done: where its
        // lowest cost is lower than the running minimum, its first shift and the 3×3.
        let Some(jy) = iy.checked_sub(1) else {
            continue;
        };
        let inner = |i: usize| (1..side - 1).contains(&i);
        let (lowest, arg) = (&row_best[jy % 2], &row_arg[jy % 2][side % 2]);
        for (pix, (&lowest, &ix)) in lowest.iter().zip(arg).enumerate() {
            if lowest < best[pix].0 {
                let ix = ix as usize;
                best[pix] = (lowest, jy * side + ix);
                if inner(jy) && inner(ix) {
                    around[pix] =
                        std::array::from_fn(|j| costs[slot(jy + j / 3 - 1, ix + j % 3 - 1) + pix]);
                }
            }
        }
    }
    best.iter()
        .zip(&around)
        .map(|(&(c, k), around)| {
            if !c.is_finite() {
                return ([f32::NAN; 2], Status::IllConditioned as u8);
            }
            let (iy, ix) = (k / side, k % side);
            let int = [iy as f32 - m as f32, ix as f32 - m as f32];
            if iy == 0 || ix == 0 || iy == side - 1 || ix == side - 1 {
                return (int, Status::SearchEdge as u8);
            }
            let c = |dy: isize, dx: isize| around[((dy + 1) * 3 + dx + 1) as usize];
            match quadratic_minimum(c) {
                Some([dy, dx]) => ([int[0] + dy, int[1] + dx], Status::Converged as u8),
                None => (int, Status::IllConditioned as u8),
            }
        })
        .collect()
}

/// Where plane `ix`'s cost is lower than `lowest` (NaN never is), it, and `ix` into `to`
/// (else `from`'s index): over the planes in order, each pixel's lowest cost and the
/// first plane that has it. Branch-free (vectorised), on costs just written (a pass over
/// the row's planes afterwards, and the search for the index in them, read them from L2:
/// a seventh of the tile's time in `perf`).
#[inline(always)]
fn lowest_of(lowest: &mut [f32], from: &[u32], to: &mut [u32], plane: &[f32], ix: u32) {
    let pixels = lowest.iter_mut().zip(from).zip(to.iter_mut()).zip(plane);
    for (((b, &a), to), &c) in pixels {
        *to = if c < *b { ix } else { a };
        *b = b.min(c);
    }
}

/// The `rows` × `cols` values from (y0, x0) of each frame of `raw`, normalised, zeros past
/// the image's right edge: a tile's [`Frames`]. A function, not a closure, so that it is
/// compiled for AVX2 in [`tile`]'s AVX2 version.
#[inline(always)]
fn normalised(
    st: &Stacks,
    raw: &[f32],
    [y0, x0]: [usize; 2],
    [rows, cols]: [usize; 2],
) -> Vec<f32> {
    let (h, w) = (st.h, st.w);
    let mut out = Vec::with_capacity(st.n * rows * cols);
    for frame in raw.chunks_exact(h * w) {
        for y in y0..y0 + rows {
            let row = &frame[y * w + x0..][..cols.min(w - x0)];
            out.extend(row.iter().map(|&v| v * st.scale - 1.0));
            out.resize(out.len() + cols - row.len(), 0.0);
        }
    }
    out
}

/// A tile's normalised values, frame after frame: S (`ph` × `pw`) and R (`rh` × `rw`, the
/// same region ±m px).
struct Frames {
    s: Vec<f32>,
    r: Vec<f32>,
    n: usize,
    ph: usize,
    pw: usize,
    rh: usize,
    rw: usize,
}

/// Shifts whose products are summed side by side: one accumulator register each.
const GROUP: usize = 8;
/// Pixels per accumulator: one AVX2 register of f32.
const LANES: usize = 8;

/// `prod[ix]` (plane ix, `ph` × `pw`) = Σ over frames of S(y, x)·R(y − uy, x − ux) for
/// uy = iy − m, ux = ix − m. Each pixel's sum runs in frame order, as a plain loop over
/// frames would.
#[inline(always)]
fn products(f: &Frames, m: usize, iy: usize, prod: &mut [f32]) {
    let side = 2 * m + 1;
    #[cfg(target_arch = "x86_64")]
    let avx = std::is_x86_feature_detected!("avx");
    // Pixels outermost: a chunk's values of every frame stay in L1 for all its shifts.
    for py in 0..f.ph {
        // R's row for S's row py: py − uy + m.
        let ry = py + 2 * m - iy;
        let mut x = 0;
        while x + LANES <= f.pw {
            let mut ix = 0;
            while ix + GROUP <= side {
                #[cfg(target_arch = "x86_64")]
                if avx {
                    // SAFETY: the CPU has AVX, checked above.
                    unsafe { accumulate_avx(f, [py, ry], x, m, ix, prod) };
                    ix += GROUP;
                    continue;
                }
                accumulate::<GROUP, LANES>(f, [py, ry], x, m, ix, prod);
                ix += GROUP;
            }
            for ix in ix..side {
                accumulate::<1, LANES>(f, [py, ry], x, m, ix, prod);
            }
            x += LANES;
        }
        for x in x..f.pw {
            for ix in 0..side {
                accumulate::<1, 1>(f, [py, ry], x, m, ix, prod);
            }
        }
    }
}

/// [`accumulate`] for [`GROUP`] shifts and [`LANES`] pixels in AVX registers: left to the
/// compiler, the eight overlapping loads of R became one wide load and shuffles, and the
/// accumulators spilled. The same products and sums in the same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn accumulate_avx(
    f: &Frames,
    [py, ry]: [usize; 2],
    x: usize,
    m: usize,
    ix0: usize,
    prod: &mut [f32],
) {
    use std::arch::x86_64::{__m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps};
    use std::arch::x86_64::{_mm256_setzero_ps, _mm256_storeu_ps};
    let (ph, pw) = (f.ph, f.pw);
    let mut acc: [__m256; GROUP] = [_mm256_setzero_ps(); GROUP];
    let r0 = ry * f.rw + x + 2 * m - ix0 - (GROUP - 1);
    let frames = f.s.chunks_exact(ph * pw).zip(f.r.chunks_exact(f.rh * f.rw));
    for (s, r) in frames.take(f.n) {
        let s = &s[py * pw + x..][..LANES];
        let r = &r[r0..][..GROUP - 1 + LANES];
        // SAFETY: each load reads LANES values inside the slices just bounded.
        let s = unsafe { _mm256_loadu_ps(s.as_ptr()) };
        for (g, acc) in acc.iter_mut().enumerate() {
            let r = unsafe { _mm256_loadu_ps(r[GROUP - 1 - g..][..LANES].as_ptr()) };
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(s, r));
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        let out = &mut prod[((ix0 + g) * ph + py) * pw + x..][..LANES];
        // SAFETY: LANES values inside the slice just bounded.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), *acc) };
    }
}

/// [`products`] for the `L` pixels from (py, x) and the `G` shifts from plane `ix0`, in
/// `G`·`L` accumulators (registers, when `G` and `L` are the constants above).
#[inline(always)]
fn accumulate<const G: usize, const L: usize>(
    f: &Frames,
    [py, ry]: [usize; 2],
    x: usize,
    m: usize,
    ix0: usize,
    prod: &mut [f32],
) {
    let (ph, pw) = (f.ph, f.pw);
    let mut acc = [[0.0f32; L]; G];
    // R's columns for S's column x and shifts ix0 + G − 1 down to ix0: x − ux + m.
    let r0 = ry * f.rw + x + 2 * m - ix0 - (G - 1);
    let frames = f.s.chunks_exact(ph * pw).zip(f.r.chunks_exact(f.rh * f.rw));
    for (s, r) in frames.take(f.n) {
        let s: &[f32; L] = s[py * pw + x..][..L].try_into().expect("L");
        // One slice of known length for all G shifts: no bounds checks in the loop.
        let r = &r[r0..][..G - 1 + L];
        for (g, acc) in acc.iter_mut().enumerate() {
            let r: &[f32; L] = r[G - 1 - g..][..L].try_into().expect("L");
            for l in 0..L {
                acc[l] += s[l] * r[l];
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        prod[((ix0 + g) * ph + py) * pw + x..][..L].copy_from_slice(acc);
    }
}

/// The sub-pixel minimum of the 3×3 costs `c(dy, dx)` around the integer one, bounded to
/// ±1 px: per axis, the vertex of the parabola through the minimum and its two neighbours
/// along that axis; where one has none, the vertex of the least-squares quadratic through
/// all nine. `None` where that has none either.
///
/// Why per axis: the cost is not a quadratic over ±1 px (it follows the pattern's
/// autocorrelation, a few pixels wide), and a least-squares fit over all nine flattens its
/// curvature towards the corners, so that its vertex lies closer to the whole pixel. The
/// refinement's Gauss–Newton step starts there and leaves a remainder that grows with the
/// distance it has to go: from the per-axis vertex, a third shorter on a weak lens at
/// N = 3–20. The corners' cross term, added, costs more in noise at N ≤ 5 than it gains.
pub(super) fn quadratic_minimum(c: impl Fn(isize, isize) -> f32) -> Option<[f32; 2]> {
    let axis = |minus: f32, zero: f32, plus: f32| {
        let (minus, zero, plus) = (minus as f64, zero as f64, plus as f64);
        vertex(
            [0.0, (plus - minus) / 2.0],
            [1.0, minus - 2.0 * zero + plus, 0.0],
        )
    };
    match (
        axis(c(-1, 0), c(0, 0), c(1, 0)),
        axis(c(0, -1), c(0, 0), c(0, 1)),
    ) {
        (Some([_, dy]), Some([_, dx])) => Some([dy, dx]),
        _ => least_squares_minimum(&c),
    }
}

/// The minimum of the quadratic with gradient `[gy, gx]` and Hessian `[hyy, hxx, hxy]` at
/// 0, bounded to ±1; `None` where it has none (or a cost is not finite).
fn vertex([gy, gx]: [f64; 2], [hyy, hxx, hxy]: [f64; 3]) -> Option<[f32; 2]> {
    let det = hxx * hyy - hxy * hxy;
    if !(hxx > 0.0 && det > 0.0 && gx.is_finite() && gy.is_finite()) {
        return None;
    }
    let dx = -(hyy * gx - hxy * gy) / det;
    let dy = -(hxx * gy - hxy * gx) / det;
    Some([dy.clamp(-1.0, 1.0) as f32, dx.clamp(-1.0, 1.0) as f32])
}

/// Vertex of the least-squares quadratic through the 3×3 costs `c(dy, dx)`, bounded to ±1.
fn least_squares_minimum(c: &impl Fn(isize, isize) -> f32) -> Option<[f32; 2]> {
    let (mut gx, mut gy, mut axx, mut ayy, mut axy) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for dy in -1..=1isize {
        for dx in -1..=1isize {
            let v = c(dy, dx) as f64;
            if !v.is_finite() {
                return None;
            }
            let (x, y) = (dx as f64, dy as f64);
            gx += v * x / 6.0;
            gy += v * y / 6.0;
            axx += v * (x * x - 2.0 / 3.0) / 2.0;
            ayy += v * (y * y - 2.0 / 3.0) / 2.0;
            axy += v * x * y / 4.0;
        }
    }
    // c ≈ … + gx·x + gy·y + axx·x² + ayy·y² + axy·x·y; minimum where the gradient vanishes.
    vertex([gy, gx], [2.0 * ayy, 2.0 * axx, axy])
}

/// The best integer shift within ±`reach` px of `centre` (each axis, clamped to the search
/// range and to shifts whose window stays in the image) at pixel (y, x), whose own window
/// must lie in the image, and its sub-pixel refinement when the quadratic fit has one.
/// Each cost of the grid is evaluated once; the fit's 3×3 may reach one step beyond.
pub(super) fn local_search(
    st: &Stacks,
    p: &Params,
    y: usize,
    x: usize,
    centre: [isize; 2],
    reach: isize,
) -> ([isize; 2], Option<[f32; 2]>) {
    let (m, nw) = (p.max_shift as isize, p.window as isize);
    let (n, h, w) = (st.n, st.h as isize, st.w as isize);
    // The window of S, and the reference under it at every shift within reach + 1 of
    // `centre`, normalised once with the frames innermost: each cost is then a few
    // contiguous dot products (reading the stacks per shift took 5× longer).
    let win = 2 * nw + 1;
    let span = win + 2 * (reach + 1);
    let (oy, ox) = (
        y as isize - centre[0] - reach - 1 - nw,
        x as isize - centre[1] - reach - 1 - nw,
    );
    // Each position's offset in a frame, computed once for all frames (index arithmetic
    // per value was most of this function's time). Patch positions outside the image
    // (clamped) belong to shifts refused below; the pixel's window lies inside.
    let offsets = |(top, left): (isize, isize), side: isize| -> Vec<usize> {
        (top..top + side)
            .map(|ry| ry.clamp(0, h - 1) * w)
            .flat_map(|row| (left..left + side).map(move |rx| (row + rx.clamp(0, w - 1)) as usize))
            .collect()
    };
    let s_at = offsets((y as isize - nw, x as isize - nw), win);
    let r_at = offsets((oy, ox), span);
    let mut s = vec![0.0f32; s_at.len() * n];
    let mut r = vec![0.0f32; r_at.len() * n];
    for i in 0..n {
        let frame = i * st.h * st.w;
        for (k, &at) in s_at.iter().enumerate() {
            s[k * n + i] = st.s(frame + at);
        }
        for (k, &at) in r_at.iter().enumerate() {
            r[k * n + i] = st.r(frame + at);
        }
    }
    // Σ over frames of R and R² at each position of the patch, and the window's S sums.
    let sum = |v: &[f32]| v.iter().sum::<f32>();
    let r1: Vec<f32> = r.chunks_exact(n).map(sum).collect();
    let r2: Vec<f32> = r.chunks_exact(n).map(|v| dot(v, v)).collect();
    let weights: Vec<f32> = (st.kernel.iter())
        .flat_map(|&a| st.kernel.iter().map(move |&b| a * b))
        .collect();
    // Each window position's offsets from the pixel `[o_y, o_x]` (px).
    let offset = |k: isize| [(k / win - nw) as f32, (k % win - nw) as f32];
    let (mut s1, mut s2, mut sm) = (0.0f32, 0.0f32, [0.0f32; 2]);
    for (k, (v, &wq)) in s.chunks_exact(n).zip(&weights).enumerate() {
        s1 += wq * sum(v);
        s2 += wq * dot(v, v);
        for (m, o) in sm.iter_mut().zip(offset(k as isize)) {
            *m += wq * o * sum(v);
        }
    }
    // S weighted by its position's weight, and each weight times its offset along x (px):
    // a window row's terms of a cost are then dot products over the patch row's contiguous
    // values (one per position, of N = 3 values each, made these searches 1.4× as long).
    let sw: Vec<f32> = (s.chunks_exact(n).zip(&weights))
        .flat_map(|(v, &wq)| v.iter().map(move |&v| wq * v))
        .collect();
    let wox: Vec<f32> = (weights.iter().enumerate())
        .map(|(k, &wq)| wq * offset(k as isize)[1])
        .collect();
    let (win, row) = (win as usize, win as usize * n);
    // The windows at the pixel and at the reference position must lie in the image.
    let inside = |c: isize, n: isize| c - nw >= 0 && c + nw < n;
    let cost = |uy: isize, ux: isize| {
        if uy.abs() > m
            || ux.abs() > m
            || !inside(y as isize - uy, h)
            || !inside(x as isize - ux, w)
        {
            return f32::INFINITY;
        }
        // Where the moved window starts in the patch.
        let (by, bx) = (centre[0] + reach + 1 - uy, centre[1] + reach + 1 - ux);
        let (mut c, mut sr1, mut sr2, mut rm) = (0.0f32, 0.0f32, 0.0f32, [0.0f32; 2]);
        for qy in 0..win {
            // The patch position under the window row's first value.
            let at = (by as usize + qy) * span as usize + bx as usize;
            let (weights, r1) = (&weights[qy * win..][..win], &r1[at..][..win]);
            c += dot(&sw[qy * row..][..row], &r[at * n..][..row]);
            let weighted = dot(weights, r1);
            sr1 += weighted;
            sr2 += dot(weights, &r2[at..][..win]);
            if st.ramp {
                rm[0] += (qy as isize - nw) as f32 * weighted;
                rm[1] += dot(&wox[qy * win..][..win], r1);
            }
        }
        let moments = st.ramp.then_some(([sm[0], sm[1], rm[0], rm[1]], st.m2));
        cost(p.dark_field, st.sw, [s1, s2, sr1, sr2], c, moments)
    };
    let side = 2 * reach + 1;
    let at = |k: isize| [centre[0] + k / side - reach, centre[1] + k % side - reach];
    let grid: Vec<f32> = (0..side * side).map(|k| cost(at(k)[0], at(k)[1])).collect();
    let best = (0..side * side)
        .min_by(|&a, &b| grid[a as usize].total_cmp(&grid[b as usize]))
        .expect("candidates");
    let [by, bx] = at(best);
    let cached = |uy: isize, ux: isize| {
        let (gy, gx) = (uy - centre[0] + reach, ux - centre[1] + reach);
        if (0..side).contains(&gy) && (0..side).contains(&gx) {
            grid[(gy * side + gx) as usize]
        } else {
            cost(uy, ux)
        }
    };
    let fine = quadratic_minimum(|dy, dx| cached(by + dy, bx + dx))
        .map(|[dy, dx]| [by as f32 + dy, bx as f32 + dx]);
    ([by, bx], fine)
}

/// Outliers, whose integer shift is more than 1 px from the median of their 5×5
/// neighbourhood, take the best shift within ±1 px of that median instead.
pub(super) fn reseed_outliers(
    st: &Stacks,
    p: &Params,
    shift: &mut Array2<[f32; 2]>,
    status: &mut Array2<u8>,
) {
    let (h, w, m) = (st.h, st.w, p.max_shift as isize);
    let int = shift.mapv(|d| [d[0].round(), d[1].round()]);
    let side = 2 * p.max_shift + 1;
    let updates: Vec<(usize, usize, [f32; 2], u8)> = (0..h)
        .into_par_iter()
        .flat_map_iter(|y| {
            let int = &int;
            // Shifts are integers in [−m, m]: the median by counting, exact and cheap.
            let mut counts = vec![[0u16; 2]; side];
            (0..w).filter_map(move |x| {
                let u = int[[y, x]];
                if !u[0].is_finite() {
                    return None;
                }
                counts.iter_mut().for_each(|c| *c = [0, 0]);
                let mut n = 0;
                for yy in y.saturating_sub(2)..(y + 3).min(h) {
                    for xx in x.saturating_sub(2)..(x + 3).min(w) {
                        let v = int[[yy, xx]];
                        if v[0].is_finite() {
                            for a in 0..2 {
                                counts[(v[a] as isize + m).clamp(0, 2 * m) as usize][a] += 1;
                            }
                            n += 1;
                        }
                    }
                }
                let median = |a: usize| {
                    let mut seen = 0;
                    let k = counts.iter().position(|c| {
                        seen += c[a] as usize;
                        2 * seen > n
                    });
                    k.expect("at least the pixel itself") as isize - m
                };
                let med = [median(0), median(1)];
                if (u[0] as isize - med[0]).abs() <= 1 && (u[1] as isize - med[1]).abs() <= 1 {
                    return None;
                }
                let (base, fine) = local_search(st, p, y, x, med, 1);
                let base = [base[0] as f32, base[1] as f32];
                Some(match fine {
                    Some(d) => (y, x, d, Status::Converged as u8),
                    None => (y, x, base, Status::IllConditioned as u8),
                })
            })
        })
        .collect();
    log::debug!(
        "tracking: {} outlier(s) re-searched around their neighbours' median",
        updates.len()
    );
    for (y, x, d, s) in updates {
        shift[[y, x]] = d;
        status[[y, x]] = s;
    }
}

/// Σ a·b in eight lanes (which the compiler vectorises; one running sum would not be).
/// Inlined always: called for a few values at a time, a call cost as much as the sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() < 8 {
        // Fewer frames than lanes (N < 8): the tail alone, without the lanes' set-up.
        return a.iter().zip(b).map(|(x, y)| x * y).sum();
    }
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0.0f32; 8];
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX product block gives the portable one's sums, bit for bit (the search's
    /// results must not depend on the CPU).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx_products_are_the_portable_ones() {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        let (n, m, ph, pw) = (5, 8, 3, 24);
        let (rh, rw) = (ph + 2 * m, pw + 2 * m);
        let value = |k: usize| ((k * 7919) % 211) as f32 / 211.0 - 0.5;
        let f = Frames {
            s: (0..n * ph * pw).map(value).collect(),
            r: (0..n * rh * rw).map(|k| value(k + 13)).collect(),
            n,
            ph,
            pw,
            rh,
            rw,
        };
        let side = 2 * m + 1;
        let (mut portable, mut avx) = (vec![0.0; side * ph * pw], vec![0.0; side * ph * pw]);
        for (py, ry, x, ix) in [(0, 0, 0, 0), (1, 9, 8, 4), (2, 18, 16, 9)] {
            accumulate::<GROUP, LANES>(&f, [py, ry], x, m, ix, &mut portable);
            // SAFETY: AVX checked above.
            unsafe { accumulate_avx(&f, [py, ry], x, m, ix, &mut avx) };
        }
        assert!(portable.iter().any(|&v| v != 0.0));
        assert!(
            portable
                .iter()
                .zip(&avx)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn quadratic_vertex_is_found() {
        let (y0, x0) = (0.3f32, -0.2f32);
        let quadratic = |cross: f32| {
            move |dy: isize, dx: isize| {
                let (y, x) = (dy as f32 - y0, dx as f32 - x0);
                2.0 * x * x + 3.0 * y * y + cross * x * y + 5.0
            }
        };
        // Exact without a cross term (the per-axis parabolas), and so is the fallback.
        for [dy, dx] in [
            quadratic_minimum(quadratic(0.0)).unwrap(),
            least_squares_minimum(&quadratic(1.0)).unwrap(),
        ] {
            assert!(
                (dy - y0).abs() < 1e-5 && (dx - x0).abs() < 1e-5,
                "{dy} {dx}"
            );
        }
        // Where an axis has no minimum, the least-squares quadratic's vertex.
        let dip = |dy: isize, dx: isize| match (dy, dx) {
            (1, 0) | (-1, 0) => 4.0,
            _ => quadratic(1.0)(dy, dx),
        };
        assert_eq!(quadratic_minimum(dip), least_squares_minimum(&dip));
        assert!(quadratic_minimum(dip).is_some());
        assert!(quadratic_minimum(|dy, dx| -((dy * dy + dx * dx) as f32)).is_none());
    }
}
