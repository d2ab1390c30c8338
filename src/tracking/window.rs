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
/// fits; elsewhere 0. Inlined (closures are not), so that the integer search's AVX2
/// version has it in AVX2.
#[inline(always)]
pub(crate) fn filter(
    src: &[f32],
    h: usize,
    w: usize,
    kernel: &[f32],
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    let r = kernel.len() / 2;
    let (inner_h, inner_w) = (h.saturating_sub(2 * r), w.saturating_sub(2 * r));
    if inner_h == 0 || inner_w == 0 {
        // The window fits nowhere.
        dst[..h * w].fill(0.0);
        return;
    }
    // rows: tmp holds the columns [r, w − r) of every row
    tmp.resize(h * inner_w, 0.0);
    for y in 0..h {
        let (s, t) = (&src[y * w..(y + 1) * w], &mut tmp[y * inner_w..][..inner_w]);
        for (k, &g) in kernel.iter().enumerate() {
            tap(t, &s[k..k + inner_w], g, k == 0);
        }
    }
    // columns
    dst[..r * w].fill(0.0);
    dst[(r + inner_h) * w..h * w].fill(0.0);
    for y in r..r + inner_h {
        let out = &mut dst[y * w..(y + 1) * w];
        out[..r].fill(0.0);
        out[r + inner_w..].fill(0.0);
        for (k, &g) in kernel.iter().enumerate() {
            let row = &tmp[(y + k - r) * inner_w..][..inner_w];
            tap(&mut out[r..r + inner_w], row, g, k == 0);
        }
    }
}

/// `out` (+)= g·`row`: one tap of [`filter`], the first one written rather than added to
/// zero (the same sums in the same order, without zeroing the buffers first).
#[inline(always)]
fn tap(out: &mut [f32], row: &[f32], g: f32, first: bool) {
    match first {
        true => out.iter_mut().zip(row).for_each(|(o, &v)| *o = g * v),
        false => out.iter_mut().zip(row).for_each(|(o, &v)| *o += g * v),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The separable sums are the direct weighted sums where the window fits, zero
    /// elsewhere, and all zero in an image narrower or shorter than the window.
    #[test]
    fn filter_sums_the_window_where_it_fits() {
        let kernel = weights(1, true);
        for (h, w) in [(7, 9), (2, 9), (7, 1)] {
            let src: Vec<f32> = (0..h * w).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            let (mut dst, mut tmp) = (vec![f32::NAN; h * w], Vec::new());
            filter(&src, h, w, &kernel, &mut dst, &mut tmp);
            for y in 0..h {
                for x in 0..w {
                    let inside = (1..h.saturating_sub(1)).contains(&y)
                        && (1..w.saturating_sub(1)).contains(&x);
                    let direct: f32 = match inside {
                        false => 0.0,
                        true => (0..3)
                            .flat_map(|a| (0..3).map(move |b| (a, b)))
                            .map(|(a, b)| kernel[a] * kernel[b] * src[(y + a - 1) * w + x + b - 1])
                            .sum(),
                    };
                    let got = dst[y * w + x];
                    assert!(
                        (got - direct).abs() < 1e-5,
                        "({h}, {w}) at ({y}, {x}): {got} {direct}"
                    );
                }
            }
        }
    }
}
