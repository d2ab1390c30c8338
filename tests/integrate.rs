//! Phase integration on analytic fields: the error bound is 1e-3 of the field's range (RMS,
//! piston removed) on 512², as the foundation issue asks; the fields are smooth, so both
//! methods should do far better, and each test states what it measured.

use espinnet::integrate::{Method, integrate};
use ndarray::Array2;

const N: usize = 512;

/// Field and its analytic gradient, sampled at pixel centres.
struct Field {
    phi: Array2<f64>,
    gx: Array2<f32>,
    gy: Array2<f32>,
}

fn field(f: impl Fn(f64, f64) -> (f64, f64, f64)) -> Field {
    let (h, w) = (N, N + 40); // not square: catches swapped axes
    let vals = Array2::from_shape_fn((h, w), |(y, x)| f(x as f64, y as f64));
    Field {
        phi: vals.mapv(|v| v.0),
        gx: vals.mapv(|v| v.1 as f32),
        gy: vals.mapv(|v| v.2 as f32),
    }
}

/// RMS error after removing the piston, relative to the field's range.
fn relative_rms(field: &Field, method: Method) -> f64 {
    let got = integrate(field.gx.view(), field.gy.view(), method).unwrap();
    let mean = field.phi.mean().unwrap();
    let err: f64 = got
        .iter()
        .zip(field.phi.iter())
        .map(|(&g, &t)| (g as f64 - (t - mean)).powi(2))
        .sum::<f64>()
        / got.len() as f64;
    let range = field.phi.iter().cloned().fold(f64::MIN, f64::max)
        - field.phi.iter().cloned().fold(f64::MAX, f64::min);
    err.sqrt() / range
}

fn check(name: &str, f: &Field, bound_fc: f64, bound_ls: f64) {
    let fc = relative_rms(f, Method::FrankotChellappa);
    let ls = relative_rms(f, Method::LeastSquares);
    eprintln!("{name}: relative RMS error FC {fc:.2e}, LS {ls:.2e}");
    assert!(
        fc <= bound_fc,
        "{name}: Frankot-Chellappa {fc:.3e} > {bound_fc:.0e}"
    );
    assert!(
        ls <= bound_ls,
        "{name}: least squares {ls:.3e} > {bound_ls:.0e}"
    );
}

#[test]
fn plane() {
    // Non-zero mean gradient: a periodic FFT integrator fails this one completely.
    let f = field(|x, y| (0.3 * x - 0.7 * y, 0.3, -0.7));
    check("plane", &f, 1e-3, 1e-6);
}

#[test]
fn paraboloid() {
    let (cx, cy, a) = (200.0, 300.0, 1e-3);
    let f = field(|x, y| {
        let (u, v) = (x - cx, y - cy);
        (a * (u * u + 2.0 * v * v), 2.0 * a * u, 4.0 * a * v)
    });
    check("paraboloid", &f, 1e-3, 1e-3);
}

#[test]
fn gaussian_bump() {
    let (cx, cy, s, amp) = (260.0, 240.0, 40.0, 50.0);
    let f = field(|x, y| {
        let (u, v) = (x - cx, y - cy);
        let g = amp * (-(u * u + v * v) / (2.0 * s * s)).exp();
        (g, -u / (s * s) * g, -v / (s * s) * g)
    });
    check("gaussian bump", &f, 1e-3, 1e-3);
}

#[test]
fn bump_on_a_tilt_touching_the_border() {
    // Mean gradient plus features cut by the image border: the hard case for Fourier methods.
    let f = field(|x, y| {
        let (u, v) = (x - 30.0, y - 500.0);
        let g = 20.0 * (-(u * u + v * v) / (2.0 * 60.0 * 60.0)).exp();
        let s = (x / 37.0).sin() * 5.0;
        (
            g + 0.05 * x + s,
            -u / 3600.0 * g + 0.05 + (x / 37.0).cos() * 5.0 / 37.0,
            -v / 3600.0 * g,
        )
    });
    check("bump on a tilt", &f, 1e-3, 1e-3);
}

#[test]
fn invalid_pixels_come_back_nan_and_do_not_spread() {
    let mut f = field(|x, y| (0.01 * x * y, 0.01 * y, 0.01 * x));
    f.gx[[100, 100]] = f32::NAN;
    let got = integrate(f.gx.view(), f.gy.view(), Method::LeastSquares).unwrap();
    assert!(got[[100, 100]].is_nan());
    assert_eq!(got.iter().filter(|v| v.is_nan()).count(), 1);
}

#[test]
fn a_nan_border_is_not_a_frame_of_zero_slope() {
    // The tracker's maps: NaN within 14 px of the edge. A tilt must stay a tilt inside;
    // as zero slope, the border bent it (0.47 waves RMS on a 256² wedge of 5 px).
    let mut f = field(|x, y| (0.3 * x - 0.7 * y, 0.3, -0.7));
    let (h, w) = f.gx.dim();
    let b = 14;
    for g in [&mut f.gx, &mut f.gy] {
        g.indexed_iter_mut()
            .filter(|((y, x), _)| *y < b || *x < b || *y >= h - b || *x >= w - b)
            .for_each(|(_, v)| *v = f32::NAN);
    }
    let inner = ndarray::s![b..h - b, b..w - b];
    let truth = f.phi.slice(inner).to_owned();
    let mean = truth.mean().unwrap();
    for method in [Method::FrankotChellappa, Method::LeastSquares] {
        let got = integrate(f.gx.view(), f.gy.view(), method).unwrap();
        assert!(got.iter().filter(|v| v.is_nan()).count() == h * w - truth.len());
        let rms = (got
            .slice(inner)
            .iter()
            .zip(&truth)
            .map(|(&g, &t)| (g as f64 - (t - mean)).powi(2))
            .sum::<f64>()
            / truth.len() as f64)
            .sqrt();
        assert!(rms < 1e-3 * 0.3 * w as f64, "{method}: RMS {rms}");
    }
}

#[test]
fn holes_take_their_neighbours_slope() {
    // The network's maps beyond the field of view: NaN in part of an edge's columns (here a
    // wedge pointing out of the left edge over the upper half) and a hole inside. A tilt
    // must stay a tilt: as zero slope, the holes bent it.
    let mut f = field(|x, y| (0.3 * x - 0.7 * y, 0.3, -0.7));
    let hole = |y: usize, x: usize| {
        (y < N / 2 && x < 4) || (200..210).contains(&y) && (300..320).contains(&x)
    };
    for g in [&mut f.gx, &mut f.gy] {
        g.indexed_iter_mut()
            .filter(|((y, x), _)| hole(*y, *x))
            .for_each(|(_, v)| *v = f32::NAN);
    }
    let (h, w) = f.gx.dim();
    let valid: Vec<(usize, usize)> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (y, x)))
        .filter(|&(y, x)| !hole(y, x))
        .collect();
    let mean = valid.iter().map(|&q| f.phi[q]).sum::<f64>() / valid.len() as f64;
    for method in [Method::FrankotChellappa, Method::LeastSquares] {
        let got = integrate(f.gx.view(), f.gy.view(), method).unwrap();
        assert_eq!(
            got.iter().filter(|v| v.is_nan()).count(),
            h * w - valid.len()
        );
        let rms = (valid
            .iter()
            .map(|&q| (got[q] as f64 - (f.phi[q] - mean)).powi(2))
            .sum::<f64>()
            / valid.len() as f64)
            .sqrt();
        assert!(rms < 1e-3 * 0.3 * w as f64, "{method}: RMS {rms}");
    }
}

#[test]
fn bad_input_is_an_error() {
    let a = Array2::<f32>::zeros((4, 4));
    let b = Array2::<f32>::zeros((4, 5));
    assert!(integrate(a.view(), b.view(), Method::FrankotChellappa).is_err());
    let one = Array2::<f32>::zeros((1, 5));
    assert!(integrate(one.view(), one.view(), Method::LeastSquares).is_err());
    let nan = Array2::<f32>::from_elem((4, 4), f32::NAN);
    assert!(integrate(nan.view(), nan.view(), Method::LeastSquares).is_err());
}
