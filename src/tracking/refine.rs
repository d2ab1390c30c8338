//! T, D and the residual evaluated again at the refined sub-pixel shift, from the
//! reference interpolated there (Keys cubic), so that they carry no integer-shift bias.

use ndarray::{Array2, Axis, Zip};

use super::search::Stacks;
use super::{Output, Params};
use crate::interpolate::keys;
use crate::model::from_affine;

pub(super) fn refine(
    st: &Stacks,
    p: &Params,
    shift: &Array2<[f32; 2]>,
    status: Array2<u8>,
) -> Output {
    let (h, w) = (st.h, st.w);
    let nan = || Array2::<f32>::from_elem((h, w), f32::NAN);
    let mut out = Output {
        dx: shift.mapv(|d| d[1]),
        dy: shift.mapv(|d| d[0]),
        transmission: nan(),
        darkfield: nan(),
        residual: nan(),
        status,
    };
    Zip::indexed(out.transmission.axis_iter_mut(Axis(0)))
        .and(out.darkfield.axis_iter_mut(Axis(0)))
        .and(out.residual.axis_iter_mut(Axis(0)))
        .par_for_each(|y, mut t_row, mut d_row, mut res_row| {
            let mut scratch = Vec::new();
            for x in 0..w {
                let d = shift[[y, x]];
                if d[0].is_finite() && d[1].is_finite() {
                    [t_row[x], d_row[x], res_row[x]] = fit_at(st, p, y, x, d, &mut scratch);
                }
            }
        });
    out
}

/// T, D and the relative RMS residual of the fit at pixel (y, x) with the reference at
/// the sub-pixel shift `[dy, dx]` (px). `scratch` is reused between calls.
pub(super) fn fit_at(
    st: &Stacks,
    p: &Params,
    y: usize,
    x: usize,
    [dy, dx]: [f32; 2],
    scratch: &mut Vec<f32>,
) -> [f32; 3] {
    let (n, h, w, nw) = (st.n, st.h, st.w, p.window as isize);
    let side = 2 * nw as usize + 1;
    scratch.resize((side + 3) * side, 0.0);
    let horiz = scratch;
    // The window shares one fractional shift: Keys weights once, then a separable 4-tap
    // interpolation of each frame's patch.
    let (fy, fx) = (y as f64 - dy as f64, x as f64 - dx as f64);
    let (iy, ix) = (fy.floor() as isize, fx.floor() as isize);
    let (ky, kx) = (keys(fy - iy as f64), keys(fx - ix as f64));
    // Weighted sums over window and frames, in units of the reference mean.
    let (mut sw, mut sr, mut ss, mut srr, mut sss, mut ssr) = (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        // Horizontal pass over the rows the vertical taps need, on the data as given (the
        // sums below are in f64, so no centring is needed).
        let (frame, scale) = st.raw_reference_frame(i);
        for (j, row) in horiz.chunks_exact_mut(side).enumerate() {
            let yy = (iy - nw - 1 + j as isize).clamp(0, h as isize - 1) as usize;
            let src = &frame[yy * w..(yy + 1) * w];
            for (q, v) in row.iter_mut().enumerate() {
                let x0 = ix - nw - 1 + q as isize;
                *v = (0..4)
                    .map(|k| kx[k] * src[(x0 + k as isize).clamp(0, w as isize - 1) as usize])
                    .sum();
            }
        }
        for qy in 0..side {
            let sy = y + qy - nw as usize;
            for qx in 0..side {
                let r = scale as f64
                    * (0..4)
                        .map(|k| ky[k] * horiz[(qy + k) * side + qx])
                        .sum::<f32>() as f64;
                let sx = x + qx - nw as usize;
                let s = 1.0 + st.s(i * h * w + sy * w + sx) as f64;
                let wq = (st.kernel[qy] * st.kernel[qx]) as f64;
                sw += wq;
                sr += wq * r;
                ss += wq * s;
                srr += wq * r * r;
                sss += wq * s * s;
                ssr += wq * s * r;
            }
        }
    }
    let (t, d, res) = if p.dark_field {
        let var_r = srr - sr * sr / sw;
        let cov = ssr - ss * sr / sw;
        let k = cov / var_r;
        let a = (ss - k * sr) / sw;
        // M at the reference position the pixel maps to.
        let (my, mx) = (
            (y as f32 - dy).round() as usize,
            (x as f32 - dx).round() as usize,
        );
        let (t, d) = from_affine(a, k, st.m[my.min(h - 1) * w + mx.min(w - 1)] as f64);
        (t, d, (sss - ss * ss / sw) - cov * k)
    } else {
        let t = ssr / srr;
        (t, f64::NAN, sss - ssr * t)
    };
    [
        t as f32,
        d as f32,
        ((res.max(0.0) / sw).sqrt() / (ss / sw)) as f32,
    ]
}
