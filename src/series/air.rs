//! Phase referenced to air: the phase integrated from a gradient is known up to a constant,
//! and a tilt creeps in from any bias of the gradient. Both differ from projection to
//! projection, and back-projection smears such offsets into rings and shading. Columns at
//! the field's edges that the sample never enters carry no phase: a plane fitted to them
//! and subtracted sets every projection's phase to zero in air.

use ndarray::ArrayViewMut2;

use crate::error::{Error, Result};

/// Subtracts from `phase` (rad) the least-squares plane `a + b·x + c·y` of its first and
/// last `columns` columns that hold any finite value (px each; 0 leaves it as it is): the
/// tracker's border of NaN is not air. Non-finite pixels are ignored.
pub fn reference_to_air(mut phase: ArrayViewMut2<f32>, columns: usize) -> Result<()> {
    let (h, w) = phase.dim();
    if columns == 0 {
        return Ok(());
    }
    if 2 * columns >= w {
        return Err(Error::invalid(format!(
            "{columns} air columns on each side leave nothing of a {w} px wide field"
        )));
    }
    let finite = |x: &usize| phase.column(*x).iter().any(|v| v.is_finite());
    let (Some(first), Some(last)) = ((0..w).find(finite), (0..w).rfind(finite)) else {
        return Ok(()); // nothing estimated
    };
    let inner = (first + columns).min(last + 1);
    let outer = (last + 1).saturating_sub(columns).max(inner);
    // Normal equations of the plane, centred coordinates for conditioning.
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for y in 0..h {
        for x in (first..inner).chain(outer..=last) {
            let p = f64::from(phase[[y, x]]);
            if !p.is_finite() {
                continue;
            }
            let basis = [1.0, x as f64 - cx, y as f64 - cy];
            for i in 0..3 {
                v[i] += basis[i] * p;
                for j in 0..3 {
                    m[i][j] += basis[i] * basis[j];
                }
            }
        }
    }
    let [a, b, c] = solve3(m, v).ok_or_else(|| {
        Error::invalid("the air columns hold too few finite pixels to fit a plane")
    })?;
    for ((y, x), p) in phase.indexed_iter_mut() {
        *p -= (a + b * (x as f64 - cx) + c * (y as f64 - cy)) as f32;
    }
    Ok(())
}

/// Solves a 3×3 system by Cramer's rule; `None` if singular.
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-9 * m[0][0].powi(3).max(1.0) {
        return None;
    }
    Some([0, 1, 2].map(|k| {
        let mut mk = m;
        for (row, &vi) in mk.iter_mut().zip(&v) {
            row[k] = vi;
        }
        det(&mk) / d
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn removes_a_plane_fitted_to_air_and_keeps_the_object() {
        let (h, w) = (20, 40);
        let object = |y: usize, x: usize| {
            if (15..25).contains(&x) && y > 5 {
                2.0
            } else {
                0.0
            }
        };
        let mut phase = Array2::from_shape_fn((h, w), |(y, x)| {
            object(y, x) + 0.7 - 0.01 * x as f32 + 0.02 * y as f32
        });
        reference_to_air(phase.view_mut(), 4).unwrap();
        for ((y, x), p) in phase.indexed_iter() {
            assert!((p - object(y, x)).abs() < 1e-4, "{y},{x}: {p}");
        }
    }

    #[test]
    fn skips_a_border_of_nan() {
        let mut phase = Array2::from_shape_fn((10, 30), |(_, x)| match x {
            0..3 | 27.. => f32::NAN,
            _ => 1.5,
        });
        reference_to_air(phase.view_mut(), 3).unwrap();
        assert!(phase.iter().all(|p| p.is_nan() || p.abs() < 1e-5));
    }

    #[test]
    fn refuses_air_columns_that_cover_the_field() {
        let mut phase = Array2::<f32>::zeros((4, 8));
        assert!(reference_to_air(phase.view_mut(), 4).is_err());
        assert!(reference_to_air(phase.view_mut(), 0).is_ok());
    }
}
