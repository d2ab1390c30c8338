//! Discrete least-squares integration with Neumann boundary, solved by DCT.
//!
//! Minimises Σ (φ[x+1] − φ[x] − ĝx)² + Σ (φ[y+1] − φ[y] − ĝy)² over the pixel grid, where
//! ĝ is the gradient at the half-pixel between the two samples (the mean of the two
//! measured pixel-centre gradients, second-order accurate). The normal equations are a
//! Poisson equation whose Neumann Laplacian is diagonal in the DCT-II basis.

use ndarray::Array2;
use rustdct::DctPlanner;

use crate::transform2d::separable;

/// In f64: the Poisson solve divides the lowest modes by eigenvalues near (π/W)², which
/// brings f32 rounding up to 1e-4 of a plane's range.
pub(super) fn integrate(gx: &Array2<f32>, gy: &Array2<f32>) -> Array2<f32> {
    let (gx, gy) = (gx.mapv(f64::from), gy.mapv(f64::from));
    let (h, w) = gx.dim();
    // Divergence of the half-pixel gradients; differences beyond the border do not exist.
    let half_x = |y: usize, x: usize| 0.5 * (gx[[y, x]] + gx[[y, x + 1]]);
    let half_y = |y: usize, x: usize| 0.5 * (gy[[y, x]] + gy[[y + 1, x]]);
    let mut rho = Array2::from_shape_fn((h, w), |(y, x)| {
        let mut d = 0.0;
        if x + 1 < w {
            d += half_x(y, x);
        }
        if x > 0 {
            d -= half_x(y, x - 1);
        }
        if y + 1 < h {
            d += half_y(y, x);
        }
        if y > 0 {
            d -= half_y(y - 1, x);
        }
        d
    });
    let mut planner = DctPlanner::<f64>::new();
    let (row, col) = (planner.plan_dct2(w), planner.plan_dct2(h));
    separable(&mut rho, |r| row.process_dct2(r), |c| col.process_dct2(c));
    // Eigenvalues of the Neumann Laplacian: 2cos(πk/W) + 2cos(πl/H) − 4.
    let pi = std::f64::consts::PI;
    ndarray::Zip::indexed(&mut rho).for_each(|(l, k), v| {
        let lambda =
            2.0 * (pi * k as f64 / w as f64).cos() + 2.0 * (pi * l as f64 / h as f64).cos() - 4.0;
        *v = if k == 0 && l == 0 { 0.0 } else { *v / lambda };
    });
    separable(&mut rho, |r| row.process_dct3(r), |c| col.process_dct3(c));
    // DCT-III(DCT-II(x)) = x·N/2 per axis in rustdct's unnormalised convention.
    let scale = 4.0 / (h * w) as f64;
    rho.mapv(|v| (v * scale) as f32)
}
