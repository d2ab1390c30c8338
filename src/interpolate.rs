//! Keys cubic convolution (a = −½): third-order accurate, reproduces linear functions,
//! exact at the samples. Shared by the simulator and the tracker's re-evaluation.

/// Weights of the samples at offsets −1, 0, 1, 2 for a fraction `t` ∈ [0, 1).
pub(crate) fn keys(t: f64) -> [f32; 4] {
    let t = t as f32;
    let near = |s: f32| (1.5 * s - 2.5) * s * s + 1.0;
    let far = |s: f32| ((-0.5 * s + 2.5) * s - 4.0) * s + 2.0;
    [far(1.0 + t), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Value of `img` (row-major, `w` columns, `h` rows) at (y, x); indices clamped at edges.
pub(crate) fn bicubic(img: &[f32], h: usize, w: usize, y: f64, x: f64) -> f32 {
    let (iy, ix) = (y.floor(), x.floor());
    let (wy, wx) = (keys(y - iy), keys(x - ix));
    let mut acc = 0.0f32;
    for (j, wy) in wy.iter().enumerate() {
        let yy = (iy as isize + j as isize - 1).clamp(0, h as isize - 1) as usize;
        let row = &img[yy * w..(yy + 1) * w];
        let mut r = 0.0f32;
        for (i, wx) in wx.iter().enumerate() {
            r += wx * row[(ix as isize + i as isize - 1).clamp(0, w as isize - 1) as usize];
        }
        acc += wy * r;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_weights_partition_unity_and_interpolate() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let w = keys(t);
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            let ramp: f32 = w
                .iter()
                .enumerate()
                .map(|(i, w)| w * (i as f32 - 1.0))
                .sum();
            assert!((ramp - t as f32).abs() < 1e-6);
        }
        assert_eq!(keys(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn bicubic_is_exact_on_a_plane() {
        let (h, w) = (6, 7);
        let img: Vec<f32> = (0..h * w)
            .map(|k| (k / w) as f32 * 2.0 + (k % w) as f32 * 0.5)
            .collect();
        let v = bicubic(&img, h, w, 2.3, 3.6);
        assert!((v - (2.3 * 2.0 + 3.6 * 0.5)).abs() < 1e-5);
    }
}
