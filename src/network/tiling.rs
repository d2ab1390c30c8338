//! Tiles: the image cut into overlapping windows the network runs on, and blended back.
//!
//! Each tile is built straight from the caller's stacks (scan-count scaling, normalisation
//! and mirror padding to the size multiple applied on the fly), so memory grows with the
//! tile, not with the image. Tiles overlap by `overlap` px; the outputs are blended with
//! weights that are zero over the first quarter of an inner edge (where the network sees
//! the tile border, not the image) and ramp up linearly over the next half.

use ndarray::{Array2, ArrayView3, ArrayViewMut3, Zip, s};

/// Tiles along one axis of padded length `len`: their starts and their common size, the
/// smallest multiple of `multiple` that covers the axis in as few tiles of at most
/// `max_tile` px as possible with `overlap` px between neighbours (equal tiles waste less
/// than full-size tiles with a small last one).
pub(crate) fn layout(
    len: usize,
    max_tile: usize,
    overlap: usize,
    multiple: usize,
) -> (Vec<usize>, usize) {
    let max_tile = (max_tile / multiple * multiple).max(multiple);
    if len <= max_tile {
        return (vec![0], len);
    }
    let size = |k: usize| (len + (k - 1) * overlap).div_ceil(k).div_ceil(multiple) * multiple;
    let k = (2..)
        .find(|&k| size(k) <= max_tile || size(k) <= overlap + multiple)
        .expect("k grows");
    let tile = size(k).min(len);
    (starts(len, tile, overlap), tile)
}

/// Where tiles start along one axis of length `len` (already a multiple of the size
/// multiple), for tiles of `tile` px overlapping by at least `overlap` px.
pub(crate) fn starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if tile >= len {
        return vec![0];
    }
    let stride = (tile - overlap.min(tile - 1)).max(1);
    let k = (len - overlap.min(tile - 1)).div_ceil(stride).max(2);
    // Evenly spread: every overlap is at least `overlap`.
    (0..k).map(|i| i * (len - tile) / (k - 1)).collect()
}

/// Blending weight of position `i` of a tile starting at `start` of length `tile` on an
/// axis of length `len`; edges that are image edges keep full weight.
pub(crate) fn weight(i: usize, start: usize, tile: usize, len: usize, overlap: usize) -> f32 {
    let margin = overlap / 4;
    let width = overlap.saturating_sub(2 * margin).max(1) as f32;
    let ramp = |d: usize| ((d as f32 - margin as f32 + 0.5) / width).clamp(0.0, 1.0);
    let lead = if start == 0 { 1.0 } else { ramp(i) };
    let trail = if start + tile >= len {
        1.0
    } else {
        ramp(tile - 1 - i)
    };
    lead.min(trail)
}

/// Index `i` of an axis of length `n` mirrored (without repeating the edge) beyond its end.
fn mirror(i: usize, n: usize) -> usize {
    if i < n {
        i
    } else {
        (2 * n).saturating_sub(2 + i).min(n - 1)
    }
}

/// Fills `out` `[Nnet, th, tw]` with the window at (`y0`, `x0`) of `stack` brought to Nnet
/// frames by `weights` (see `stack::scan_weights`), multiplied by `gain`.
pub(crate) fn extract(
    stack: ArrayView3<f32>,
    weights: &[(usize, usize, f32)],
    gain: f32,
    (y0, x0): (usize, usize),
    mut out: ArrayViewMut3<f32>,
) {
    let (_, h, w) = stack.dim();
    let tw = out.dim().2;
    let cols: Vec<usize> = (x0..x0 + tw).map(|x| mirror(x, w)).collect();
    use rayon::prelude::*;
    let frames = out
        .axis_iter_mut(ndarray::Axis(0))
        .into_par_iter()
        .zip(weights.par_iter());
    // Within the image's columns, rows are read as slices (vectorised); beyond, mirrored.
    let inside = x0 + tw <= w;
    frames.for_each(|(mut frame, &(i0, i1, f))| {
        let (a, b) = (
            stack.index_axis(ndarray::Axis(0), i0),
            stack.index_axis(ndarray::Axis(0), i1),
        );
        for (ty, mut row) in frame.outer_iter_mut().enumerate() {
            let y = mirror(y0 + ty, h);
            let (ra, rb) = (a.row(y), b.row(y));
            match (inside, row.as_slice_mut(), ra.as_slice(), rb.as_slice()) {
                (true, Some(row), Some(ra), Some(rb)) => {
                    let (ra, rb) = (&ra[x0..x0 + tw], &rb[x0..x0 + tw]);
                    for ((o, &va), &vb) in row.iter_mut().zip(ra).zip(rb) {
                        *o = gain * (va + f * (vb - va));
                    }
                }
                _ => {
                    for (o, &x) in row.iter_mut().zip(&cols) {
                        *o = gain * (ra[x] + f * (rb[x] - ra[x]));
                    }
                }
            }
        }
    });
}

/// A plane of zeros that tiles are added into ([`crate::memory::written_zeros`]).
fn zeros((h, w): (usize, usize)) -> Array2<f32> {
    Array2::from_shape_vec((h, w), crate::memory::written_zeros(h * w)).expect("h × w values")
}

/// Weighted sums of tile outputs over the image.
pub(crate) struct Blend {
    pub sums: Vec<Array2<f32>>,
    pub weight: Array2<f32>,
    padded: (usize, usize),
    overlap: usize,
}

impl Blend {
    pub fn new(
        channels: usize,
        (h, w): (usize, usize),
        padded: (usize, usize),
        overlap: usize,
    ) -> Self {
        Blend {
            sums: (0..channels).map(|_| zeros((h, w))).collect(),
            weight: zeros((h, w)),
            padded,
            overlap,
        }
    }

    /// Adds one tile's outputs `[channels, th, tw]` placed at (`y0`, `x0`) of the padded image.
    pub fn add(&mut self, tile: ArrayView3<f32>, (y0, x0): (usize, usize)) {
        let (_, th, tw) = tile.dim();
        let (h, w) = self.weight.dim();
        let (ph, pw) = self.padded;
        let (ny, nx) = (th.min(h.saturating_sub(y0)), tw.min(w.saturating_sub(x0)));
        let wy: Vec<f32> = (0..ny)
            .map(|i| weight(i, y0, th, ph, self.overlap))
            .collect();
        let wx: Vec<f32> = (0..nx)
            .map(|i| weight(i, x0, tw, pw, self.overlap))
            .collect();
        let region = s![y0..y0 + ny, x0..x0 + nx];
        // The channels and the weight (the last plane) in parallel.
        let wx = ndarray::ArrayView1::from(&wx);
        let mut planes: Vec<_> = self
            .sums
            .iter_mut()
            .chain([&mut self.weight])
            .map(|p| p.slice_mut(region))
            .collect();
        let channels = tile.dim().0;
        use rayon::prelude::*;
        planes.par_iter_mut().enumerate().for_each(|(c, plane)| {
            for (i, row) in plane.outer_iter_mut().enumerate() {
                let row = Zip::from(row).and(wx);
                match c < channels {
                    true => row
                        .and(tile.slice(s![c, i, ..nx]))
                        .for_each(|o, &w, &v| *o += wy[i] * w * v),
                    false => row.for_each(|o, &w| *o += wy[i] * w),
                }
            }
        });
    }

    /// The blended maps, one per channel.
    pub fn finish(self) -> Vec<Array2<f32>> {
        let weight = self.weight;
        self.sums
            .into_iter()
            .map(|mut s| {
                s.zip_mut_with(&weight, |v, &w| *v /= w);
                s
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_uses_few_equal_tiles() {
        assert_eq!(layout(512, 1024, 64, 16), (vec![0], 512));
        let (st, tile) = layout(2048, 1024, 64, 16);
        assert_eq!(tile, 736);
        assert_eq!(st, vec![0, 656, 1312]);
        let (st, tile) = layout(2048, 1088, 64, 16);
        assert_eq!((st.len(), tile), (2, 1056));
    }

    #[test]
    fn tiles_cover_the_axis_with_the_overlap_asked_for() {
        assert_eq!(starts(256, 512, 32), vec![0]);
        assert_eq!(starts(512, 512, 32), vec![0]);
        assert_eq!(starts(1024, 512, 32), vec![0, 256, 512]);
        for len in [512, 528, 1000 / 16 * 16, 2048] {
            let st = starts(len, 256, 32);
            assert_eq!(st[0], 0);
            assert_eq!(*st.last().unwrap() + 256, len);
            for p in st.windows(2) {
                assert!(p[1] > p[0] && p[0] + 256 >= p[1] + 32, "{st:?}");
            }
        }
    }

    #[test]
    fn blend_weights_are_positive_everywhere_and_zero_at_inner_edges() {
        let (len, tile, ov) = (1024, 256, 32);
        let st = starts(len, tile, ov);
        for i in 0..len {
            let total: f32 = st
                .iter()
                .filter(|&&s| s <= i && i < s + tile)
                .map(|&s| weight(i - s, s, tile, len, ov))
                .sum();
            assert!(total > 0.0, "no weight at {i}");
        }
        assert_eq!(weight(0, 480, tile, len, ov), 0.0);
        assert_eq!(weight(tile - 1, 0, tile, len, ov), 0.0);
        assert_eq!(weight(0, 0, tile, len, ov), 1.0);
        assert_eq!(weight(tile - 1, len - tile, tile, len, ov), 1.0);
    }

    #[test]
    fn mirror_padding_reflects_without_repeating_the_edge() {
        assert_eq!(
            (0..7).map(|i| mirror(i, 4)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 2, 1, 0]
        );
        assert_eq!(mirror(3, 1), 0);
    }
}
