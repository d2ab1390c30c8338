//! Frankot–Chellappa on the mirror extension, by real-to-real transforms.
//!
//! Extended to 2H×2W by half-sample mirroring (φ even about each border), the field is
//! periodic and continuous, so the Fourier integrator sees no artificial edge (Bon et al.,
//! Opt. Express 20, 2012). On that extension φ is a cosine series in x and y, ∂φ/∂x a
//! sine series in x and cosine series in y, and ∂φ/∂y the converse: the Fourier integrator
//! is a DCT-II/DST-II of the image's own size, in f32, instead of complex FFTs of four times
//! its area.
//!
//! With u_p = πp/W and v_q = πq/H (rad/px), unnormalised transforms G = DCT_y DST_x (∂φ/∂x),
//! Γ = DST_y DCT_x (∂φ/∂y) and Φ = DCT_y DCT_x (φ), the least-squares fit of each mode is
//! Φ[q, p] = −(u_p·G[q, p−1] + v_q·Γ[q−1, p]) / (u_p² + v_q²), a term dropped where its index
//! is 0. The sine series' last term (the Nyquist mode, p = W) has no cosine partner and
//! carries no derivative, as in the FFT form.

use ndarray::{Array2, Axis, Zip};
use rayon::prelude::*;
use rustdct::DctPlanner;

use crate::transform2d::separable;

pub(super) fn integrate(mut gx: Array2<f32>, mut gy: Array2<f32>) -> Array2<f32> {
    let (h, w) = gx.dim();
    let mut planner = DctPlanner::<f32>::new();
    let (dct_w, dst_w) = (planner.plan_dct2(w), planner.plan_dst2(w));
    let (dct_h, dst_h) = (planner.plan_dct2(h), planner.plan_dst2(h));
    separable(
        &mut gx,
        |r| dst_w.process_dst2(r),
        |c| dct_h.process_dct2(c),
    );
    separable(
        &mut gy,
        |r| dct_w.process_dct2(r),
        |c| dst_h.process_dst2(c),
    );
    let pi = std::f32::consts::PI;
    let u: Vec<f32> = (0..w).map(|p| pi * p as f32 / w as f32).collect();
    let v: Vec<f32> = (0..h).map(|q| pi * q as f32 / h as f32).collect();
    // Φ into gx's storage, each row from its last column down, so that G[q, p−1] is read
    // before it is overwritten.
    let mut phi = gx;
    phi.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(q, mut row)| {
            for p in (0..w).rev() {
                let mut num = 0.0;
                if p > 0 {
                    num += u[p] * row[p - 1];
                }
                if q > 0 {
                    num += v[q] * gy[[q - 1, p]];
                }
                let k2 = u[p] * u[p] + v[q] * v[q];
                row[p] = if k2 == 0.0 { 0.0 } else { -num / k2 };
            }
        });
    drop(gy);
    let (idct_w, idct_h) = (planner.plan_dct3(w), planner.plan_dct3(h));
    separable(
        &mut phi,
        |r| idct_w.process_dct3(r),
        |c| idct_h.process_dct3(c),
    );
    // DCT-III(DCT-II(x)) = x·N/2 per axis in rustdct's unnormalised convention.
    let scale = 4.0 / (h * w) as f32;
    Zip::from(&mut phi).par_for_each(|p| *p *= scale);
    phi
}
