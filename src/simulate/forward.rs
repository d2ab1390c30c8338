//! The forward model: the modulator's near-field pattern on the detector, then each frame
//! as that pattern shifted by the scan position (reference) and additionally by the
//! sample's displacement and dimmed and blurred by T and D (sample):
//! `S = T·(M + D·(R(r − d) − M))` ([`crate::model`]).

use ndarray::{Array2, Array3, Axis, Zip};
use rand::SeedableRng;
use rand_distr::{Distribution, Poisson};
use rand_pcg::Pcg64Mcg;
use rustfft::FftDirection;
use rustfft::num_complex::Complex32;

use super::filter::filter_periodic;
use super::sample::Maps;
use crate::interpolate::bicubic;
use crate::transform2d::{angular_frequency, fast_len, fft2};

/// The detector intensity of the unshifted pattern on a fine grid (`os` samples per pixel),
/// normalised to mean 1. Pixel coordinate (y, x) sits at fine index `os·(y − origin.0)`.
pub(crate) struct Pattern {
    fine: Array2<f32>,
    os: f64,
    origin: (f64, f64),
}

pub(crate) struct Optics {
    pub pixel_um: f64,
    pub wavelength_m: f64,
    pub propagation_m: f64,
    pub blur_px: f64,
    pub oversampling: usize,
}

impl Pattern {
    /// A pattern that covers pixel coordinates `[lo, hi]` (y, x) plus what the optics need
    /// around them, from a modulator rasteriser `field(h, w, sample_um)`.
    pub(crate) fn new(
        lo: (f64, f64),
        hi: (f64, f64),
        optics: &Optics,
        field: impl FnOnce(usize, usize, f64) -> Array2<Complex32>,
    ) -> crate::Result<Self> {
        let os = optics.oversampling.max(1) as f64;
        // Wrap-around of the periodic propagation reaches a few Fresnel zones in.
        let fresnel_px =
            (optics.wavelength_m * optics.propagation_m).sqrt() / (optics.pixel_um * 1e-6);
        let margin = 3.0 * fresnel_px + 3.0 * optics.blur_px + 4.0;
        let origin = (lo.0 - margin, lo.1 - margin);
        let len = |a: f64, b: f64| fast_len(((b - a + 2.0 * margin) * os).ceil() as usize + 1);
        let (fh, fw) = (len(lo.0, hi.0), len(lo.1, hi.1));
        // The wavefield and the filtered intensity (complex f32), each with a transposed
        // copy while it is transformed, and the intensity and result maps.
        crate::memory::ensure(
            crate::memory::product(&[fh, fw, 4 * 8 + 2 * 4]),
            None,
            &format!("the simulator's {fh}x{fw} pattern"),
        )?;
        let sample_m = optics.pixel_um * 1e-6 / os;
        let mut u = field(fh, fw, optics.pixel_um / os);
        // Fresnel transfer function exp(−iπλz f²), f in cycles per metre.
        fft2(&mut u, FftDirection::Forward);
        let c = std::f64::consts::PI * optics.wavelength_m * optics.propagation_m;
        Zip::indexed(&mut u).par_for_each(|(y, x), v| {
            let (fy, fx) = (
                angular_frequency(y, fh) / (std::f64::consts::TAU * sample_m),
                angular_frequency(x, fw) / (std::f64::consts::TAU * sample_m),
            );
            *v *= Complex32::from_polar(1.0, (-c * (fx * fx + fy * fy)) as f32);
        });
        fft2(&mut u, FftDirection::Inverse);
        let intensity = u.mapv(|v| v.norm_sqr());
        // Detector: Gaussian blur (σ in pixels) and integration over the pixel area.
        let (sigma, width) = (optics.blur_px * os, os);
        let sinc = |w: f64| {
            let a = w * width / 2.0;
            if a.abs() < 1e-9 { 1.0 } else { a.sin() / a }
        };
        let mut fine = filter_periodic(&intensity, |wy, wx| {
            (-(wx * wx + wy * wy) * sigma * sigma / 2.0).exp() * sinc(wx) * sinc(wy)
        });
        let mean = fine.mean().unwrap_or(1.0);
        fine.mapv_inplace(|v| v / mean);
        Ok(Pattern { fine, os, origin })
    }

    /// Intensity at pixel coordinate (y, x): Keys cubic convolution.
    pub(crate) fn at(&self, y: f64, x: f64) -> f32 {
        let (h, w) = self.fine.dim();
        let data = self.fine.as_slice().expect("standard layout");
        bicubic(
            data,
            h,
            w,
            (y - self.origin.0) * self.os,
            (x - self.origin.1) * self.os,
        )
    }
}

/// Renders both stacks. `shifts_px` are the scan positions (y, x) in pixels; the pattern
/// moves with the modulator. Intensities in photons per pixel; Poisson noise if asked.
pub(crate) fn render(
    pattern: &Pattern,
    shifts_px: &[(f64, f64)],
    maps: &Maps,
    flux: f64,
    noise_seed: Option<u64>,
) -> (Array3<f32>, Array3<f32>) {
    let (h, w) = maps.dx.dim();
    let n = shifts_px.len();
    let mut reference = Array3::<f32>::zeros((n, h, w));
    let mut sample = Array3::<f32>::zeros((n, h, w));
    let mean = 1.0f32; // the pattern is normalised to mean 1: M = 1 before scaling by flux
    for (i, ((mut r, mut s), &(sy, sx))) in reference
        .axis_iter_mut(Axis(0))
        .zip(sample.axis_iter_mut(Axis(0)))
        .zip(shifts_px)
        .enumerate()
    {
        Zip::indexed(r.rows_mut())
            .and(s.rows_mut())
            .par_for_each(|y, mut r, mut s| {
                let mut rng = noise_seed.map(|seed| Pcg64Mcg::seed_from_u64(mix(seed, i, y)));
                let mut emit = |v: f32| -> f32 {
                    let lambda = v.max(0.0) as f64 * flux;
                    match rng.as_mut() {
                        Some(rng) if lambda > 0.0 => Poisson::new(lambda)
                            .map(|p| p.sample(rng) as f32)
                            .unwrap_or(0.0),
                        _ => lambda as f32,
                    }
                };
                for x in 0..w {
                    let (yf, xf) = (y as f64 - sy, x as f64 - sx);
                    r[x] = emit(pattern.at(yf, xf));
                    let (dy, dx) = (maps.dy[[y, x]], maps.dx[[y, x]]);
                    let pat = pattern.at(yf - dy, xf - dx);
                    let (t, d) = (
                        maps.transmission[[y, x]] as f32,
                        maps.darkfield[[y, x]] as f32,
                    );
                    s[x] = emit(crate::model::predict(t, d, mean, pat));
                }
            });
    }
    (reference, sample)
}

/// A seed for frame `i`, row `y`: SplitMix64 finaliser over the three.
fn mix(seed: u64, i: usize, y: usize) -> u64 {
    let mut z = seed
        ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
