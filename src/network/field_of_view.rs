//! Pixels whose pattern comes from beyond the reference's field of view.
//!
//! Why: a sample pixel at `q` sees the pattern the reference holds at `q − d`. Where that
//! lies outside the image (a displacement pointing out of it at its edge: a wedge, a wide
//! smooth field), no engine can measure the pixel. The tracker leaves its whole border
//! unsearched; the network, which pads its inputs, still answers there, and its answers
//! were px off (on the stress suite's wedge of 5 px, mask diagonal, N = 20: 1.4–4.5 px RMS
//! in the outer 3 px on the two sides the shift points out of, against 0.02 px on the
//! others). Integrated, they bent the whole phase map: without them (and with the hole
//! filled from its neighbours' slope, `integrate`) the phase error of that case fell from
//! 0.0098 to 0.0061 waves, of the smooth field on the mask at N = 20 from 0.0065 to 0.0015
//! (the tracker: 0.0007, 0.0013; measured with the judging displacement read 4 px in,
//! which marked the wedge's edges as 2 px in does).
//!
//! A pixel's own estimate is no guide there, so each is judged by the displacement
//! [`LOOKAHEAD_PX`] further in (the median of 3×3 pixels there, against a stray error), and
//! every pixel between one so judged and the edge goes with it. Where the field grows
//! steeply inwards (a strong blob at the edge), that reading puts a few pixels beyond
//! whose pattern lies just inside (within 1.3 px on the simulated cases): a pattern read
//! that close to the reference's edge is half mirrored anyway. Extrapolating such a field
//! back to the pixel was tried: the network's estimates next to the edge it cannot see are
//! biased low, which reads as a field growing inwards, and a row of the wedge's edge kept
//! its estimates 3 px off (its phase error 0.0056 → 0.0098 waves).

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip, s};

use crate::neighbourhood::finite_median_3x3;

/// How far in (px) the displacement that judges a pixel is read: past the network's
/// estimates at the edge, which are no guide, while close enough that a field growing
/// inwards (a blob at the edge) is read near its value at the pixel. On the 2048² × 20
/// paper case, 4 px in put 13 pixels beyond wrongly (their pattern up to 1.1 px inside);
/// 2 px in, 3 (up to 0.5 px inside), with the wedge's edges as before.
const LOOKAHEAD_PX: usize = 2;
/// A pixel is beyond where its pattern comes from more than this (px) past the outermost
/// pixel. At 0, noise in the estimates at the edge (a few hundredths of a px) put 4 417
/// pixels of the 2048² × 20 paper case beyond, 3 506 of them wrongly; at 0.5, 76 (3).
const BEYOND_PX: f32 = 0.5;
/// Only pixels this close to an edge (px) are judged: the most a guarded network reaches
/// (`guard::MAX_SHIFT_PX`), so that a wrong estimate further in cannot take a band with it.
const REACH_PX: usize = 24;

/// Sets `[dx, dy, T, D]` to NaN at the pixels that see the pattern from beyond the
/// reference's field of view, and returns them, `[y, x]`.
pub(crate) fn clear_outside(maps: [&mut Array2<f32>; 4]) -> Vec<[usize; 2]> {
    let beyond = outside(maps[0].view(), maps[1].view());
    let pixels: Vec<[usize; 2]> = (beyond.indexed_iter())
        .filter(|&(_, &b)| b)
        .map(|((y, x), _)| [y, x])
        .collect();
    for map in maps {
        pixels.iter().for_each(|&q| map[q] = f32::NAN);
    }
    if !pixels.is_empty() {
        log::info!(
            "{} pixel(s) see the pattern from beyond the reference's field of view: NaN, status 3",
            pixels.len()
        );
    }
    pixels
}

/// Which pixels of the displacement maps `dx`, `dy` (px) see the pattern from beyond the
/// reference's field of view.
fn outside(dx: ArrayView2<f32>, dy: ArrayView2<f32>) -> Array2<bool> {
    let mut out = Array2::from_elem(dx.dim(), false);
    // Each edge as the left end of a row: the rows as given and reversed (the displacement's
    // sign turned with them), then the columns, as the rows of the transposed views.
    let flip = s![.., ..;-1];
    mark(dx, 1.0, out.view_mut());
    mark(dx.slice(flip), -1.0, out.slice_mut(flip));
    let (dy, mut out_t) = (dy.reversed_axes(), out.view_mut().reversed_axes());
    mark(dy, 1.0, out_t.view_mut());
    mark(dy.slice(flip), -1.0, out_t.slice_mut(flip));
    out
}

/// Marks, along each row of `sign` × `d` (the displacement along the rows, px), the pixels
/// within [`REACH_PX`] of its start whose position less the displacement read further in
/// lies before it by over [`BEYOND_PX`], and every pixel between them and the start.
fn mark(d: ArrayView2<f32>, sign: f32, mut out: ArrayViewMut2<bool>) {
    let w = d.dim().1;
    let reach = REACH_PX.min(w / 2);
    Zip::indexed(out.axis_iter_mut(Axis(0))).par_for_each(|y, mut row| {
        // From the reach towards the start: once beyond, every pixel nearer it too.
        let mut beyond = false;
        for x in (0..reach).rev() {
            // A median of 3×3 against a stray error; none where none is finite.
            let at = (y, (x + LOOKAHEAD_PX).min(w - 1));
            let near = finite_median_3x3(d, at).map(|v| sign * v);
            beyond |= near.is_some_and(|near| (x as f32) - near < -BEYOND_PX);
            row[x] |= beyond;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(dx: &Array2<f32>, dy: &Array2<f32>) -> Vec<(usize, usize)> {
        (outside(dx.view(), dy.view()).indexed_iter())
            .filter(|&(_, &b)| b)
            .map(|(q, _)| q)
            .collect()
    }

    #[test]
    fn a_constant_shift_leaves_the_edges_it_points_out_of() {
        // x − 3 < −0.5 for x ≤ 2; y + 2 > 63.5 for y ≥ 62.
        let (h, w) = (64, 80);
        let mut dx = Array2::from_elem((h, w), 3.0f32);
        let dy = Array2::from_elem((h, w), -2.0f32);
        // The network's estimates at the edge itself are no guide: judged from further in.
        dx.column_mut(0).fill(0.0);
        dx.column_mut(1).fill(f32::NAN);
        let got = marked(&dx, &dy);
        let expected: Vec<(usize, usize)> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (y, x)))
            .filter(|&(y, x)| x <= 2 || y >= 62)
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn small_shifts_noise_and_errors_further_in_leave_nothing() {
        let (h, w) = (64, 64);
        // Within half a pixel of the edge, both ways.
        let mut dx =
            Array2::from_shape_fn((h, w), |(y, x)| if (x + y) % 2 == 0 { 0.45 } else { -0.45 });
        let dy = dx.t().to_owned();
        // A gross error beyond the reach, and one alone within it.
        dx[(30, REACH_PX + 2)] = 40.0;
        dx[(10, 8)] = 20.0;
        assert!(marked(&dx, &dy).is_empty());
    }
}
