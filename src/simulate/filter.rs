//! Gaussian smoothing for the simulator: periodic (FFT) on canvases, clamped-edge direct
//! convolution on sample maps that must not wrap.

use ndarray::Array2;
use rustfft::FftDirection;
use rustfft::num_complex::Complex32;

use crate::transform2d::{angular_frequency, fft2, separable};

/// Multiplies the spectrum of a periodic field by `transfer(ωy, ωx)` (rad per sample).
pub(crate) fn filter_periodic(
    a: &Array2<f32>,
    transfer: impl Fn(f64, f64) -> f64 + Sync,
) -> Array2<f32> {
    let (h, w) = a.dim();
    let mut c = a.mapv(|v| Complex32::new(v, 0.0));
    fft2(&mut c, FftDirection::Forward);
    let scale = 1.0 / (h * w) as f64;
    ndarray::Zip::indexed(&mut c).par_for_each(|(y, x), v| {
        *v *= (transfer(angular_frequency(y, h), angular_frequency(x, w)) * scale) as f32;
    });
    fft2(&mut c, FftDirection::Inverse);
    c.mapv(|v| v.re)
}

/// Gaussian of standard deviation `sigma` samples, periodic boundary.
pub(crate) fn gaussian_periodic(a: &Array2<f32>, sigma: f64) -> Array2<f32> {
    filter_periodic(a, |wy, wx| {
        (-(wx * wx + wy * wy) * sigma * sigma / 2.0).exp()
    })
}

/// Gaussian of standard deviation `sigma` samples, edges clamped (no wrap-around).
pub(crate) fn gaussian_clamped(a: &Array2<f64>, sigma: f64) -> Array2<f64> {
    if sigma <= 0.0 {
        return a.clone();
    }
    let conv = gaussian_line(sigma);
    let mut out = a.clone();
    separable(&mut out, &conv, &conv);
    out
}

/// Smooths one line in place by a Gaussian of `sigma` samples, edges clamped.
pub(crate) fn gaussian_line(sigma: f64) -> impl Fn(&mut [f64]) + Sync {
    let r = (4.0 * sigma).ceil() as isize;
    let kernel: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f64 = kernel.iter().sum();
    move |line: &mut [f64]| {
        let src = line.to_vec();
        let n = src.len() as isize;
        for (i, out) in line.iter_mut().enumerate() {
            *out = kernel
                .iter()
                .enumerate()
                .map(|(k, &g)| g * src[(i as isize + k as isize - r).clamp(0, n - 1) as usize])
                .sum::<f64>()
                / norm;
        }
    }
}
