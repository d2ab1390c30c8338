//! Window weights and separable window sums.

/// Weights of a (2·nw+1)-tap window: Hamming (0.54 + 0.46·cos) or flat.
pub(crate) fn weights(nw: usize, hamming: bool) -> Vec<f32> {
    (-(nw as isize)..=nw as isize)
        .map(|q| {
            if hamming {
                0.54 + 0.46 * (std::f32::consts::PI * q as f32 / (nw as f32 + 1.0)).cos()
            } else {
                1.0
            }
        })
        .collect()
}

/// Separable window sum of `src` (`h`×`w`, row-major) into `dst`, valid where the window
/// fits; elsewhere 0.
pub(crate) fn filter(
    src: &[f32],
    h: usize,
    w: usize,
    kernel: &[f32],
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    let r = kernel.len() / 2;
    tmp.clear();
    tmp.resize(h * w, 0.0);
    // rows
    for y in 0..h {
        let (s, t) = (&src[y * w..(y + 1) * w], &mut tmp[y * w..(y + 1) * w]);
        for (k, &g) in kernel.iter().enumerate() {
            for x in r..w.saturating_sub(r) {
                t[x] += g * s[x + k - r];
            }
        }
    }
    // columns
    dst[..h * w].iter_mut().for_each(|v| *v = 0.0);
    for y in r..h.saturating_sub(r) {
        let out = &mut dst[y * w..(y + 1) * w];
        for (k, &g) in kernel.iter().enumerate() {
            let row = &tmp[(y + k - r) * w..(y + k - r + 1) * w];
            for (o, &v) in out.iter_mut().zip(row) {
                *o += g * v;
            }
        }
    }
}

/// The pixels within `nw` px (Chebyshev) of (y, x), itself included, whose own window of
/// half-width `inset` lies inside an `h`×`w` image: the windows that contain the pixel.
pub(crate) fn neighbours(
    (y, x): (usize, usize),
    nw: usize,
    (h, w): (usize, usize),
    inset: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let rows = y.saturating_sub(nw).max(inset)..(y + nw + 1).min(h.saturating_sub(inset));
    let columns = x.saturating_sub(nw).max(inset)..(x + nw + 1).min(w.saturating_sub(inset));
    rows.flat_map(move |qy| columns.clone().map(move |qx| (qy, qx)))
}
