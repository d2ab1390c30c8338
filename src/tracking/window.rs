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

/// The fits' values per window from which a background ramp is fitted too
/// ([`fits_ramp`]): ten per parameter (a, K, the shift's two, the ramp's two).
const RAMP_MIN_VALUES: usize = 60;

/// Whether the tracker's sub-pixel fits and seeded searches include a background ramp, a
/// plane across the window common to all frames, beside `a + K·R`: a transmission edge in
/// the window otherwise leaves a trend that the fit's shift follows (next to absorbing
/// blobs, T down to 0.05, the refinement walked correct integer shifts more than 1 px off).
/// Its two parameters cost more than they gain in small fits (measured with the ramp in the
/// integer search too: 3×3 at N ≤ 3 doubled the stress suite's gross errors, 5×5 at N = 2
/// raised most cases' a little); from [`RAMP_MIN_VALUES`] values (3×3 from N = 7, 5×5 from
/// N = 3, 7×7 from N = 2) they gain.
/// The exhaustive search keeps the plain model: with the ramp it halved the absorbing
/// blobs' gross errors at N = 2 but made the paper mix's rare wrong minima worse (tracker
/// RMSE at N = 3, 0.100 → 0.116 px).
pub(crate) fn fits_ramp(dark_field: bool, n: usize, nw: usize) -> bool {
    dark_field && n * (2 * nw + 1).pow(2) >= RAMP_MIN_VALUES
}

/// Σw·o² of the window (`kernel` along each axis) for the offset o (px) along one axis:
/// the ramp column's norm, per frame.
pub(crate) fn moment2(kernel: &[f32]) -> f32 {
    let r = (kernel.len() / 2) as f32;
    let along: f32 = (kernel.iter().enumerate())
        .map(|(k, &g)| g * (k as f32 - r).powi(2))
        .sum();
    along * kernel.iter().sum::<f32>()
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
