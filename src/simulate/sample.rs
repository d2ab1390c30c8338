//! Samples: the phase φ (rad), transmission T and dark-field D maps on the output pixel
//! grid, and the displacement they cause, `d = z·λ/(2π·p²)·∇φ` (px).

use ndarray::{Array2, Zip};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use super::filter::{gaussian_clamped, gaussian_periodic};
use crate::Geometry;
use crate::error::{Error, Result, require_positive};

/// What is put in the beam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Sample {
    /// Nothing: d = 0, T = D = 1.
    Empty,
    /// A wedge: constant displacement (px) and constant T, D. The phase is a plane.
    Uniform {
        dx_px: f64,
        dy_px: f64,
        transmission: f64,
        darkfield: f64,
    },
    /// `count` objects with closed random Bézier outlines (mean radius a fraction
    /// `radius_frac` of the smaller image side), filled with Gaussian-smoothed random phase,
    /// transmission and dark-field, edges softened by `edge_px`. Scaled so that the largest
    /// |d| is `max_displacement_px`, min T is `transmission_min`, min D is `darkfield_min`.
    Blobs {
        count: usize,
        radius_frac: (f64, f64),
        edge_px: f64,
        max_displacement_px: f64,
        transmission_min: f64,
        darkfield_min: f64,
    },
    /// `count` spheres of radius `radius_um` range, refractive index decrement `delta`,
    /// absorption index `beta`, scattering down to D = `darkfield_min` at the centre; edges
    /// softened by `edge_px` (a real edge has an unbounded slope).
    Spheres {
        count: usize,
        radius_um: (f64, f64),
        delta: f64,
        beta: f64,
        darkfield_min: f64,
        edge_px: f64,
    },
    /// `count` cylinders (fibres) across the field at random angles and offsets, radius in
    /// `radius_um`; the material as for spheres.
    Cylinders {
        count: usize,
        radius_um: (f64, f64),
        delta: f64,
        beta: f64,
        darkfield_min: f64,
        edge_px: f64,
    },
    /// A smooth random phase over the whole field (no edges): Gaussian-filtered noise of
    /// correlation length `correlation_px`, scaled so that the largest |d| is
    /// `max_displacement_px`; T and D from independent fields of the same length, down to
    /// `transmission_min` and `darkfield_min`.
    Smooth {
        correlation_px: f64,
        max_displacement_px: f64,
        transmission_min: f64,
        darkfield_min: f64,
    },
    /// Bi-concave parabolic refractive lens centred in the field: thickness
    /// `min(ρ², a²)/R` (m) with apex radius R = `apex_radius_um` and aperture radius
    /// a = `aperture_um`. Focal length R/(2δ): the displacement is linear, `d = −2zδ·r/R`.
    Lens {
        apex_radius_um: f64,
        aperture_um: f64,
        delta: f64,
        beta: f64,
    },
}

/// Ground-truth maps, `[H, W]`.
#[derive(Debug, Clone)]
pub struct Maps {
    /// Phase (rad).
    pub phase: Array2<f64>,
    /// Pattern displacement along x (columns) and y (rows), px.
    pub dx: Array2<f64>,
    pub dy: Array2<f64>,
    /// Transmission and dark-field (1 = none).
    pub transmission: Array2<f64>,
    pub darkfield: Array2<f64>,
}

impl Sample {
    pub(crate) fn validate(&self) -> Result<()> {
        let in_unit = |n: &str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!("{n} must be in (0, 1], got {v}")))
            }
        };
        // A field scaled to a largest displacement, with T and D down to their minima.
        let scaled_field = |max_d: f64, t_min: f64, d_min: f64| {
            if !(max_d >= 0.0 && max_d.is_finite()) {
                return Err(Error::invalid("max displacement must be finite and >= 0"));
            }
            in_unit("transmission_min", t_min)?;
            in_unit("darkfield_min", d_min)
        };
        match *self {
            Sample::Empty => Ok(()),
            Sample::Uniform {
                dx_px,
                dy_px,
                transmission,
                darkfield,
            } => {
                if !(dx_px.is_finite() && dy_px.is_finite()) {
                    return Err(Error::invalid("uniform displacement must be finite"));
                }
                require_positive("transmission", transmission)?;
                require_positive("dark-field", darkfield)
            }
            Sample::Blobs {
                radius_frac,
                max_displacement_px,
                transmission_min,
                darkfield_min,
                ..
            } => {
                if !(radius_frac.0 > 0.0 && radius_frac.0 <= radius_frac.1) {
                    return Err(Error::invalid(format!(
                        "blob radius range {radius_frac:?} is empty"
                    )));
                }
                scaled_field(max_displacement_px, transmission_min, darkfield_min)
            }
            Sample::Spheres {
                radius_um,
                delta,
                darkfield_min,
                ..
            }
            | Sample::Cylinders {
                radius_um,
                delta,
                darkfield_min,
                ..
            } => {
                require_positive("sphere radius (µm)", radius_um.0)?;
                if radius_um.1 < radius_um.0 || !radius_um.1.is_finite() {
                    return Err(Error::invalid(format!(
                        "sphere radius range {radius_um:?} µm is empty"
                    )));
                }
                require_positive("delta", delta)?;
                in_unit("darkfield_min", darkfield_min)
            }
            Sample::Smooth {
                correlation_px,
                max_displacement_px,
                transmission_min,
                darkfield_min,
            } => {
                require_positive("correlation length (px)", correlation_px)?;
                scaled_field(max_displacement_px, transmission_min, darkfield_min)
            }
            Sample::Lens {
                apex_radius_um,
                aperture_um,
                delta,
                ..
            } => {
                require_positive("lens apex radius (µm)", apex_radius_um)?;
                require_positive("lens aperture (µm)", aperture_um)?;
                require_positive("delta", delta)
            }
        }
    }

    /// The same sample with its displacement (and phase) multiplied by `factor` > 0:
    /// δ for the physical samples, the displacement for the others; T and D unchanged.
    pub fn scaled(&self, factor: f64) -> Sample {
        let mut s = self.clone();
        match &mut s {
            Sample::Empty => {}
            Sample::Uniform { dx_px, dy_px, .. } => {
                *dx_px *= factor;
                *dy_px *= factor;
            }
            Sample::Blobs {
                max_displacement_px,
                ..
            }
            | Sample::Smooth {
                max_displacement_px,
                ..
            } => *max_displacement_px *= factor,
            Sample::Spheres { delta, .. }
            | Sample::Cylinders { delta, .. }
            | Sample::Lens { delta, .. } => *delta *= factor,
        }
        s
    }

    /// The maps on an `h`×`w` grid for `geometry`.
    pub(crate) fn maps(&self, h: usize, w: usize, geometry: &Geometry, seed: u64) -> Maps {
        let p_m = geometry.effective_pixel_m();
        let k = 2.0 * std::f64::consts::PI / geometry.wavelength_m();
        // d (px) per unit phase gradient (rad/px).
        let d_per_grad = 1.0 / geometry.phase_gradient_per_px();
        let ones = Array2::<f64>::ones((h, w));
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        match *self {
            Sample::Empty => numeric(ones.clone() - 1.0, ones.clone(), ones, d_per_grad),
            Sample::Uniform {
                dx_px,
                dy_px,
                transmission,
                darkfield,
            } => {
                let (gx, gy) = (dx_px / d_per_grad, dy_px / d_per_grad);
                Maps {
                    phase: Array2::from_shape_fn((h, w), |(y, x)| {
                        gx * (x as f64 - cx) + gy * (y as f64 - cy)
                    }),
                    dx: Array2::from_elem((h, w), dx_px),
                    dy: Array2::from_elem((h, w), dy_px),
                    transmission: ones.clone() * transmission,
                    darkfield: ones * darkfield,
                }
            }
            Sample::Lens {
                apex_radius_um,
                aperture_um,
                delta,
                beta,
            } => {
                let (r_m, a_m) = (apex_radius_um * 1e-6, aperture_um * 1e-6);
                let rho = |y: usize, x: usize| ((x as f64 - cx) * p_m, (y as f64 - cy) * p_m);
                let thick = Array2::from_shape_fn((h, w), |(y, x)| {
                    let (u, v) = rho(y, x);
                    (u * u + v * v).min(a_m * a_m) / r_m
                });
                // ∂t/∂x (per px) = 2u/R · p inside the aperture, 0 outside.
                let slope = |c: f64, (u, v): (f64, f64)| {
                    if u * u + v * v < a_m * a_m {
                        2.0 * c / r_m * p_m
                    } else {
                        0.0
                    }
                };
                Maps {
                    phase: thick.mapv(|t| -k * delta * t),
                    dx: Array2::from_shape_fn((h, w), |(y, x)| {
                        -k * delta * slope(rho(y, x).0, rho(y, x)) * d_per_grad
                    }),
                    dy: Array2::from_shape_fn((h, w), |(y, x)| {
                        -k * delta * slope(rho(y, x).1, rho(y, x)) * d_per_grad
                    }),
                    transmission: thick.mapv(|t| (-2.0 * k * beta * t).exp()),
                    darkfield: ones,
                }
            }
            Sample::Spheres {
                count,
                radius_um,
                delta,
                beta,
                darkfield_min,
                edge_px,
            }
            | Sample::Cylinders {
                count,
                radius_um,
                delta,
                beta,
                darkfield_min,
                edge_px,
            } => {
                let fibres = matches!(self, Sample::Cylinders { .. });
                let mut rng = Pcg64Mcg::seed_from_u64(seed);
                let mut thick = Array2::<f64>::zeros((h, w));
                let mut rel = Array2::<f64>::zeros((h, w));
                for _ in 0..count {
                    let r = rng.random_range(radius_um.0..=radius_um.1) * 1e-6 / p_m;
                    // A fibre's normal: the distance is to its axis, not to a centre.
                    let normal = fibres.then(|| {
                        let angle = rng.random_range(0.0..std::f64::consts::PI);
                        (angle.cos(), -angle.sin())
                    });
                    let (sy, sx) = (
                        rng.random_range(0.0..h as f64),
                        rng.random_range(0.0..w as f64),
                    );
                    Zip::indexed(&mut thick)
                        .and(&mut rel)
                        .for_each(|(y, x), t, q| {
                            let (u, v) = (y as f64 - sy, x as f64 - sx);
                            let rr = match normal {
                                Some((ny, nx)) => (u * ny + v * nx).powi(2),
                                None => u * u + v * v,
                            };
                            if rr < r * r {
                                *t += 2.0 * (r * r - rr).sqrt() * p_m;
                                *q += (1.0 - rr / (r * r)).sqrt();
                            }
                        });
                }
                material(
                    thick,
                    rel,
                    edge_px,
                    (k, delta, beta, darkfield_min),
                    d_per_grad,
                )
            }
            Sample::Smooth {
                correlation_px,
                max_displacement_px,
                transmission_min,
                darkfield_min,
            } => {
                let mut rng = Pcg64Mcg::seed_from_u64(seed);
                let [phase, t, d] = [(); 3].map(|_| {
                    let noise = Array2::from_shape_fn((h, w), |_| rng.random::<f32>() - 0.5);
                    let f = gaussian_periodic(&noise, correlation_px).mapv(f64::from);
                    let (lo, hi) = minmax(&f);
                    f.mapv(|v| (v - lo) / (hi - lo).max(1e-30))
                });
                numeric(
                    with_max_gradient(phase, max_displacement_px / d_per_grad),
                    t.mapv(|u| 1.0 - (1.0 - transmission_min) * u),
                    d.mapv(|u| 1.0 - (1.0 - darkfield_min) * u),
                    d_per_grad,
                )
            }
            Sample::Blobs {
                count,
                radius_frac,
                edge_px,
                max_displacement_px,
                transmission_min,
                darkfield_min,
            } => {
                let mut rng = Pcg64Mcg::seed_from_u64(seed);
                let side = h.min(w) as f64;
                // One smooth random fill per map (correlation length a twentieth of the
                // smaller side), shared by the objects, each with its own amplitude.
                // Periodic (FFT) smoothing: wrapping random noise is harmless and keeps
                // this O(N log N) at any correlation length.
                let fills = [(); 3].map(|_| {
                    let noise = Array2::from_shape_fn((h, w), |_| rng.random::<f32>());
                    let fill = gaussian_periodic(&noise, side / 20.0).mapv(f64::from);
                    let (lo, hi) = minmax(&fill);
                    fill.mapv(|v| 0.3 + 0.7 * (v - lo) / (hi - lo).max(1e-12))
                });
                let mut fields = [(); 3].map(|_| Array2::<f64>::zeros((h, w)));
                for _ in 0..count {
                    let inside = bezier_blob(
                        h,
                        w,
                        side * rng.random_range(radius_frac.0..=radius_frac.1),
                        &mut rng,
                    );
                    for (f, fill) in fields.iter_mut().zip(&fills) {
                        let amp = rng.random_range(0.2..=1.0);
                        Zip::from(f)
                            .and(&inside)
                            .and(fill)
                            .for_each(|f, &m, &v| *f += m * amp * v);
                    }
                }
                let [phase, t, d] = fields.map(|f| gaussian_clamped(&f, edge_px));
                let unit = |f: Array2<f64>| {
                    let hi = minmax(&f).1;
                    if hi > 0.0 { f / hi } else { f }
                };
                numeric(
                    with_max_gradient(unit(phase), max_displacement_px / d_per_grad),
                    unit(t).mapv(|u| 1.0 - (1.0 - transmission_min) * u),
                    unit(d).mapv(|u| 1.0 - (1.0 - darkfield_min) * u),
                    d_per_grad,
                )
            }
        }
    }
}

/// `phase` scaled so that its largest gradient component is `max` (per px); a flat phase
/// stays flat.
fn with_max_gradient(phase: Array2<f64>, max: f64) -> Array2<f64> {
    let now = gradients(&phase)
        .iter()
        .map(|g| g.iter().fold(0.0f64, |m, v| m.max(v.abs())))
        .fold(0.0, f64::max);
    if now > 0.0 {
        phase * (max / now)
    } else {
        phase * 0.0
    }
}

/// Maps of a material of index decrement `delta` and absorption index `beta` (at wave
/// number `k`, rad/m) over `thick` (m), scattering down to `darkfield_min` where `rel` (a
/// relative path length) peaks; both softened by `edge_px`.
fn material(
    thick: Array2<f64>,
    rel: Array2<f64>,
    edge_px: f64,
    (k, delta, beta, darkfield_min): (f64, f64, f64, f64),
    d_per_grad: f64,
) -> Maps {
    let thick = gaussian_clamped(&thick, edge_px);
    let rel = gaussian_clamped(&rel, edge_px);
    let max_rel = rel.iter().cloned().fold(1.0, f64::max);
    numeric(
        thick.mapv(|t| -k * delta * t),
        thick.mapv(|t| (-2.0 * k * beta * t).exp()),
        rel.mapv(|q| 1.0 - (1.0 - darkfield_min) * q / max_rel),
        d_per_grad,
    )
}

fn minmax(a: &Array2<f64>) -> (f64, f64) {
    a.iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)))
}

/// Maps whose displacement is the numerical gradient of the phase.
pub(crate) fn numeric(
    phase: Array2<f64>,
    transmission: Array2<f64>,
    darkfield: Array2<f64>,
    d_per_grad: f64,
) -> Maps {
    let [gx, gy] = gradients(&phase);
    Maps {
        dx: gx * d_per_grad,
        dy: gy * d_per_grad,
        phase,
        transmission,
        darkfield,
    }
}

/// ∂/∂x and ∂/∂y (per px): fourth-order central differences, lower order near the border.
pub(crate) fn gradients(f: &Array2<f64>) -> [Array2<f64>; 2] {
    let (h, w) = f.dim();
    let diff = |get: &dyn Fn(usize) -> f64, i: usize, n: usize| -> f64 {
        if n < 2 {
            0.0
        } else if i >= 2 && i + 2 < n {
            (8.0 * (get(i + 1) - get(i - 1)) - (get(i + 2) - get(i - 2))) / 12.0
        } else if i >= 1 && i + 1 < n {
            (get(i + 1) - get(i - 1)) / 2.0
        } else if i == 0 {
            get(1) - get(0)
        } else {
            get(i) - get(i - 1)
        }
    };
    [
        Array2::from_shape_fn((h, w), |(y, x)| diff(&|j| f[[y, j]], x, w)),
        Array2::from_shape_fn((h, w), |(y, x)| diff(&|j| f[[j, x]], y, h)),
    ]
}

/// 0/1 map of a closed random outline: 5–9 control points at random radii around a random
/// centre, joined by quadratic Bézier segments through their midpoints (a C¹ closed curve),
/// filled by the even–odd rule.
fn bezier_blob(h: usize, w: usize, radius: f64, rng: &mut Pcg64Mcg) -> Array2<f64> {
    let n = rng.random_range(5..=9);
    let (cy, cx) = (
        rng.random_range(0.0..h as f64),
        rng.random_range(0.0..w as f64),
    );
    let mut angles: Vec<f64> = (0..n)
        .map(|_| rng.random_range(0.0..std::f64::consts::TAU))
        .collect();
    angles.sort_by(f64::total_cmp);
    let ctrl: Vec<(f64, f64)> = angles
        .iter()
        .map(|&a| {
            let r = radius * rng.random_range(0.5..=1.2);
            (cy + r * a.sin(), cx + r * a.cos())
        })
        .collect();
    let mid = |a: (f64, f64), b: (f64, f64)| ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
    let mut poly = Vec::with_capacity(n * 16);
    for i in 0..n {
        let (p0, p1, p2) = (
            mid(ctrl[i], ctrl[(i + 1) % n]),
            ctrl[(i + 1) % n],
            mid(ctrl[(i + 1) % n], ctrl[(i + 2) % n]),
        );
        for s in 0..16 {
            let t = s as f64 / 16.0;
            let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
            poly.push((
                a * p0.0 + b * p1.0 + c * p2.0,
                a * p0.1 + b * p1.1 + c * p2.1,
            ));
        }
    }
    let mut out = Array2::<f64>::zeros((h, w));
    for (y, mut row) in out.outer_iter_mut().enumerate() {
        let yc = y as f64;
        let mut xs: Vec<f64> = (0..poly.len())
            .filter_map(|i| {
                let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
                ((a.0 <= yc) != (b.0 <= yc)).then(|| a.1 + (yc - a.0) / (b.0 - a.0) * (b.1 - a.1))
            })
            .collect();
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            let lo = pair[0].ceil().max(0.0) as usize;
            let hi = (pair[1].floor() + 1.0).clamp(0.0, w as f64) as usize;
            for v in row.iter_mut().take(hi).skip(lo) {
                *v = 1.0;
            }
        }
    }
    out
}
