//! Frankot–Chellappa on the antisymmetric mirror extension.
//!
//! The field is extended to 2H×2W by half-sample mirroring (φ even about each border), so
//! the x-gradient is odd in x and even in y, and vice versa. The extended field is
//! periodic and continuous, so the Fourier integrator sees no artificial edge.

use ndarray::Array2;
use rustfft::FftDirection;
use rustfft::num_complex::Complex;

use crate::transform2d::{angular_frequency, fft2};

pub(super) fn integrate(gx: &Array2<f64>, gy: &Array2<f64>) -> Array2<f64> {
    let (h, w) = gx.dim();
    let (eh, ew) = (2 * h, 2 * w);
    // Source index and sign of the half-sample mirror extension.
    let mirror = |i: usize, n: usize| {
        if i < n {
            (i, 1.0)
        } else {
            (2 * n - 1 - i, -1.0)
        }
    };
    let mut gxe = Array2::from_shape_fn((eh, ew), |(y, x)| {
        let ((sy, _), (sx, sign)) = (mirror(y, h), mirror(x, w));
        Complex::new(sign * gx[[sy, sx]], 0.0)
    });
    let mut gye = Array2::from_shape_fn((eh, ew), |(y, x)| {
        let ((sy, sign), (sx, _)) = (mirror(y, h), mirror(x, w));
        Complex::new(sign * gy[[sy, sx]], 0.0)
    });
    fft2(&mut gxe, FftDirection::Forward);
    fft2(&mut gye, FftDirection::Forward);
    // φ̂ = −i (kx ĝx + ky ĝy) / (kx² + ky²); the Nyquist bins carry no derivative.
    let kx: Vec<f64> = (0..ew).map(|k| nyquist_free(k, ew)).collect();
    let ky: Vec<f64> = (0..eh).map(|k| nyquist_free(k, eh)).collect();
    let mut phi = gxe;
    ndarray::Zip::indexed(&mut phi)
        .and(&gye)
        .for_each(|(y, x), p, &gy_hat| {
            let (u, v) = (kx[x], ky[y]);
            let k2 = u * u + v * v;
            *p = if k2 == 0.0 {
                Complex::new(0.0, 0.0)
            } else {
                (*p * u + gy_hat * v) * Complex::new(0.0, -1.0) / k2
            };
        });
    fft2(&mut phi, FftDirection::Inverse);
    let scale = 1.0 / (eh * ew) as f64;
    Array2::from_shape_fn((h, w), |(y, x)| phi[[y, x]].re * scale)
}

fn nyquist_free(k: usize, n: usize) -> f64 {
    if 2 * k == n {
        0.0
    } else {
        angular_frequency(k, n)
    }
}
