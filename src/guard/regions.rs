//! Where the guard solved many pixels again, or the network's bias is large, the
//! tracker's whole pipeline over the area.
//!
//! Why: a dense patch of re-solved pixels says the network does not hold there (a lens's
//! rim and its strong field, a wide constant shift), and its pixels that passed the tests
//! are a few hundredths to tenths of a pixel off as well. Where the bias the guard took
//! off was large ([`bias_limit_px`]), what it left is about the tracker's noise, and the
//! tracker's fit of every pixel is as good or better. The tracker's search, sub-pixel fit
//! and refits (`tracking::track`) over blocks of [`BLOCK_PX`] whose share of re-solved
//! pixels is at least [`MIN_SHARE`], or whose bias is large, replace the guarded estimate
//! where the tracker converged within [`MAX_CHANGE_PX`] of it: the guard's wider reach has
//! already taken the gross errors away, while the tracker's search, limited to the user's
//! range, can land on a repeat of the pattern beyond it.

use ndarray::{Array2, ArrayView3, s};

use super::bias::Bias;
use crate::tracking::{self, Params, Status};

/// Side of the square blocks whose re-solved share is judged (px).
const BLOCK_PX: usize = 16;
/// Blocks with at least this share of re-solved pixels are tracked: 1.8 % of the
/// 2048² × 20 paper case (0.24–0.30 s). Their neighbours too took three times the area on
/// the stress suite and met the RMSE target on as many cases (closer at N ≥ 10, further
/// at N = 5).
const MIN_SHARE: f64 = 0.05;
/// The tracker's estimate is taken where it is within this distance of the guarded one
/// (px). Taking it wherever it converged left 2.4 % of the pixels gross on the 10 px lens
/// of the stress suite (mask grid, N = 10, the default range of ±8 px), against none.
const MAX_CHANGE_PX: f32 = 1.0;
/// The most runs of dense blocks merged pair by pair.
const MAX_MERGED: usize = 1024;
/// The most rows tracked at once (the tracker's margin aside).
const MAX_ROWS: usize = 256;
/// Below this many frames the tracker is not the more precise: on the stress suite at
/// N = 2–3 it took the guarded estimate closer on lenses but further on blobs and smooth
/// fields (sandpaper, N = 3: 0.085 → 0.099 px), and the absorbing blobs' D at N = 2 from
/// 0.049 to 0.118.
const MIN_FRAMES: usize = 5;

/// Blocks where the network's bias on `n` frames is over this (px, on at least half the
/// bias's nodes) are tracked too. From ten frames the tracker's fits are as precise as the
/// guarded network, and 0.05 px (against 0.1 and 0.2) met the stress suite's RMSE target
/// on 49 of 84 cases (46, 46; none: 44): the paper mix at N = 10 and 20 0.022, 0.018 →
/// 0.020, 0.016 px; the wedge of 5 px on the mask, N = 20, 0.022 → 0.017 px and its phase
/// 0.0061 → 0.0009 waves. It tracks 7.3 % of the 2048² × 20 paper case (0.4 s more). From
/// five frames only where the network is far off (0.1 raised the inlier RMSE of four N = 5
/// cases by 3–6 %, 0.2 none).
fn bias_limit_px(n: usize) -> f32 {
    if n >= 10 { 0.05 } else { 0.2 }
}

/// The blocks where `bias`, on `n` frames of an image `(h, w)`, was large
/// ([`bias_limit_px`]), which [`track`] takes besides the dense ones.
pub(super) fn biased_blocks(bias: &Bias, (h, w): (usize, usize), n: usize) -> Array2<bool> {
    bias.blocks_over((h, w), BLOCK_PX, bias_limit_px(n))
}

/// A rectangle of pixels, `[y0, y1) × [x0, x1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rect {
    y: (usize, usize),
    x: (usize, usize),
}

impl Rect {
    fn union(&self, o: &Rect) -> Rect {
        Rect {
            y: (self.y.0.min(o.y.0), self.y.1.max(o.y.1)),
            x: (self.x.0.min(o.x.0), self.x.1.max(o.x.1)),
        }
    }

    /// The rectangle grown by `margin` px on every side, within an image `(h, w)`.
    fn grown(&self, margin: usize, (h, w): (usize, usize)) -> Rect {
        Rect {
            y: (self.y.0.saturating_sub(margin), (self.y.1 + margin).min(h)),
            x: (self.x.0.saturating_sub(margin), (self.x.1 + margin).min(w)),
        }
    }

    fn area(&self) -> usize {
        (self.y.1 - self.y.0) * (self.x.1 - self.x.0)
    }
}

/// Which blocks of an image `(h, w)` hold at least [`MIN_SHARE`] of `changed` pixels.
fn dense_blocks(changed: &[[usize; 2]], (h, w): (usize, usize)) -> Array2<bool> {
    let (bh, bw) = (h.div_ceil(BLOCK_PX), w.div_ceil(BLOCK_PX));
    let mut count = Array2::<usize>::zeros((bh, bw));
    for &[y, x] in changed {
        count[(y / BLOCK_PX, x / BLOCK_PX)] += 1;
    }
    Array2::from_shape_fn((bh, bw), |(j, i)| {
        let rows = (h - j * BLOCK_PX).min(BLOCK_PX);
        let columns = (w - i * BLOCK_PX).min(BLOCK_PX);
        count[(j, i)] as f64 >= MIN_SHARE * (rows * columns) as f64
    })
}

/// Rectangles covering the `dense` blocks, each tracked with `margin` px around it: the
/// runs of dense blocks along each block row, merged wherever tracking their union costs
/// no more than tracking both.
fn rectangles(dense: &Array2<bool>, margin: usize, (h, w): (usize, usize)) -> Vec<Rect> {
    let mut rects = Vec::new();
    for (j, row) in dense.outer_iter().enumerate() {
        let mut i = 0;
        while i < row.len() {
            if !row[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < row.len() && row[i] {
                i += 1;
            }
            rects.push(Rect {
                y: (j * BLOCK_PX, ((j + 1) * BLOCK_PX).min(h)),
                x: (start * BLOCK_PX, (i * BLOCK_PX).min(w)),
            });
        }
    }
    let cost = |r: &Rect| r.grown(margin, (h, w)).area();
    // Pairs are merged while there are few enough of them (each pass is quadratic); more
    // runs than that cover the image in so many places that their union is tracked.
    let mut merged = rects.len() <= MAX_MERGED;
    while merged {
        merged = false;
        let mut a = 0;
        while a < rects.len() {
            let mut b = a + 1;
            while b < rects.len() {
                let union = rects[a].union(&rects[b]);
                if cost(&union) <= cost(&rects[a]) + cost(&rects[b]) {
                    rects[a] = union;
                    rects.swap_remove(b);
                    merged = true;
                    b = a + 1;
                } else {
                    b += 1;
                }
            }
            a += 1;
        }
    }
    // Crops that overlap cost more than one of their union.
    let total: usize = rects.iter().map(cost).sum();
    if let Some(all) = rects.iter().copied().reduce(|a, b| a.union(&b))
        && (cost(&all) <= total || rects.len() > MAX_MERGED)
    {
        rects = vec![all];
    }
    // Bands of at most `MAX_ROWS`, so that the tracker's memory follows the band.
    rects
        .into_iter()
        .flat_map(|r| {
            (r.y.0..r.y.1).step_by(MAX_ROWS).map(move |top| Rect {
                y: (top, (top + MAX_ROWS).min(r.y.1)),
                x: r.x,
            })
        })
        .collect()
}

/// Peak memory of [`track`] on stacks `[n, h, w]` with `params` and `threads` workers
/// (bytes): the tracker's on the widest band and its copy of the stacks.
pub(super) fn memory_bytes(
    params: &Params,
    (n, h, w): (usize, usize, usize),
    threads: usize,
) -> u64 {
    let rows = MAX_ROWS
        .saturating_add(params.border().saturating_mul(2))
        .min(h);
    params.memory_bytes((n, rows, w), threads, true)
}

/// Tracks the dense blocks of `changed` pixels and the `biased` blocks with `params` and
/// takes the tracker's estimate into `[dx, dy, T, D]` where it converged within
/// [`MAX_CHANGE_PX`] of the estimate there. Returns the pixels taken.
pub(super) fn track(
    reference: ArrayView3<f32>,
    sample: ArrayView3<f32>,
    params: &Params,
    changed: &[[usize; 2]],
    biased: &Array2<bool>,
    [dx, dy, t, d]: [&mut Array2<f32>; 4],
) -> Vec<[usize; 2]> {
    let (n, h, w) = reference.dim();
    if n < MIN_FRAMES {
        return Vec::new();
    }
    let clock = std::time::Instant::now();
    let mut dense = dense_blocks(changed, (h, w));
    ndarray::Zip::from(&mut dense)
        .and(biased)
        .for_each(|a, &b| *a |= b);
    let margin = params.border();
    let rects = rectangles(&dense, margin, (h, w));
    let mut taken = Vec::new();
    let mut tracked_px = 0;
    for rect in &rects {
        let crop = rect.grown(margin, (h, w));
        if params
            .check_shape((n, crop.y.1 - crop.y.0, crop.x.1 - crop.x.0))
            .is_err()
        {
            continue;
        }
        let window = s![.., crop.y.0..crop.y.1, crop.x.0..crop.x.1];
        let out = match tracking::track(reference.slice(window), sample.slice(window), params) {
            Ok(out) => out,
            Err(e) => {
                log::debug!("guard: the tracker over {rect:?} failed: {e}");
                continue;
            }
        };
        tracked_px += crop.area();
        for y in rect.y.0..rect.y.1 {
            for x in rect.x.0..rect.x.1 {
                if !dense[(y / BLOCK_PX, x / BLOCK_PX)] {
                    continue;
                }
                let q = (y - crop.y.0, x - crop.x.0);
                let new = [out.dx[q], out.dy[q], out.transmission[q], out.darkfield[q]];
                let change = (new[0] - dx[(y, x)]).hypot(new[1] - dy[(y, x)]);
                // False for NaN: a pixel the tracker could not fit keeps the estimate.
                if out.status[q] == Status::Converged as u8 && change <= MAX_CHANGE_PX {
                    [dx[(y, x)], dy[(y, x)], t[(y, x)], d[(y, x)]] = new;
                    taken.push([y, x]);
                }
            }
        }
    }
    log::debug!(
        "guard: {} dense or biased block(s) in {} rectangle(s) tracked over {tracked_px} px ({:.1} % of \
         the image), {} pixel(s) taken, in {:.2} s",
        dense.iter().filter(|&&b| b).count(),
        rects.len(),
        100.0 * tracked_px as f64 / (h * w) as f64,
        taken.len(),
        clock.elapsed().as_secs_f64()
    );
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangles_merge_only_where_that_costs_less() {
        let mut dense = Array2::from_elem((8, 8), false);
        // Two blocks side by side in one row, and one far below.
        dense[(1, 1)] = true;
        dense[(1, 2)] = true;
        dense[(7, 7)] = true;
        // The tracker's margin at Nw = 1 and ±8 px.
        let margin = 11;
        let rects = rectangles(&dense, margin, (128, 128));
        assert_eq!(rects.len(), 2);
        assert!(rects.contains(&Rect {
            y: (16, 32),
            x: (16, 48)
        }));
        // A block under the pair: one rectangle of 54² px costs less than 38 × 54 and 38².
        dense[(2, 1)] = true;
        let rects = rectangles(&dense, margin, (128, 128));
        assert!(rects.contains(&Rect {
            y: (16, 48),
            x: (16, 48)
        }));
    }

    /// Every dense block lies in a rectangle, with few runs (merged pair by pair) and with
    /// many (a checkerboard of 8 192 blocks: their union, at once).
    #[test]
    fn rectangles_cover_every_dense_block() {
        for side in [16, 128] {
            let dense = Array2::from_shape_fn((side, side), |(j, i)| (j + i) % 2 == 0);
            let image = (side * BLOCK_PX, side * BLOCK_PX);
            let rects = rectangles(&dense, 11, image);
            for ((j, i), _) in dense.indexed_iter().filter(|(_, d)| **d) {
                let (y, x) = (j * BLOCK_PX, i * BLOCK_PX);
                assert!(
                    rects
                        .iter()
                        .any(|r| (r.y.0..r.y.1).contains(&y) && (r.x.0..r.x.1).contains(&x))
                );
            }
            assert!(rects.iter().all(|r| r.y.1 - r.y.0 <= MAX_ROWS));
        }
    }

    #[test]
    fn dense_blocks_count_partial_blocks_by_their_area() {
        // A 20×20 image: its corner block is 4×4, so one pixel in it is 1/16 ≥ 5 %.
        let dense = dense_blocks(&[[18, 18], [3, 3]], (20, 20));
        assert!(dense[(1, 1)]);
        assert!(!dense[(0, 0)]);
    }
}
