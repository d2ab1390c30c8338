//! A CT phantom for the series path: a 3-D object of spheres, vertical fibres and a stack
//! of lenses, each with its δ, β and small-angle scattering, projected analytically at
//! each rotation angle and imaged through the simulator's modulator model (one reference
//! stack for the whole scan, one sample stack per angle).
//!
//! Parallel beam, rotation axis along the detector rows through the central column. In
//! the object's frame (X along columns, Y along rows, Z along the beam at angle 0) the ray
//! at angle θ through detector column s (px from the centre) is the line
//! `X cos θ − Z sin θ = s`: the usual parallel-beam Radon transform.

use std::path::Path;

use ndarray::{Array1, Array2, Array3, Axis, Zip};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;

use super::filter::{gaussian_clamped, gaussian_line};
use super::sample::{Maps, numeric};
use super::{Config, Preset, Sample, forward, scan_pattern};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// A CT scan to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct CtConfig {
    /// Image size, scans per angle, geometry, modulator, trajectory, flux and seed (its
    /// `sample` is not used).
    pub base: Config,
    /// Projections over 180° (endpoint excluded).
    pub angles: usize,
    /// δ is scaled so that the largest |d| over every angle is this (px).
    pub max_displacement_px: f64,
    /// Edges softened by a Gaussian of this σ (px), in the projections and in the true δ
    /// volume alike (a real edge has an unbounded slope).
    pub edge_px: f64,
    /// Write the true δ volume (`H·W²` values: leave it out for large benchmarks).
    pub delta_volume: bool,
}

impl CtConfig {
    /// The `mask-diagonal` set-up at `size`² with `scans` frames per angle.
    pub fn new(size: usize, scans: usize, angles: usize, seed: u64) -> Self {
        let mut base = Preset::MaskDiagonal.config(size, scans, seed);
        base.sample = Sample::Empty;
        CtConfig {
            base,
            angles,
            max_displacement_px: 3.0,
            edge_px: 2.0,
            delta_volume: true,
        }
    }

    /// Angles in degrees.
    pub fn angles_deg(&self) -> Vec<f64> {
        (0..self.angles)
            .map(|i| 180.0 * i as f64 / self.angles as f64)
            .collect()
    }

    fn validate(&self) -> Result<()> {
        self.base.validate()?;
        if self.angles == 0 {
            return Err(Error::invalid("a CT scan needs at least one angle"));
        }
        if !(self.max_displacement_px > 0.0 && self.max_displacement_px.is_finite()) {
            return Err(Error::invalid("max displacement must be finite and > 0"));
        }
        if !(self.edge_px >= 0.0 && self.edge_px <= 8.0) {
            return Err(Error::invalid("edge softening must be in [0, 8] px"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Axis-aligned ellipsoid: centre (X, Y, Z) and semi-axes (px).
    Ellipsoid { centre: [f64; 3], semi: [f64; 3] },
    /// Cylinder along Y: axis at (X, Z), radius, rows `y0..y1` (px).
    Fibre {
        axis: [f64; 2],
        radius: f64,
        rows: (f64, f64),
    },
}

/// One body: its shape and material (relative δ before scaling, β/δ, scattering).
#[derive(Debug, Clone, Copy)]
struct Body {
    shape: Shape,
    delta: f64,
    beta_per_delta: f64,
    /// Dark-field `exp(−σ·t)`, σ per px of path.
    scatter_per_px: f64,
}

impl Body {
    /// Path length (px) of the ray through detector (row y, column s from the centre).
    fn chord(&self, y: f64, s: f64, (sin, cos): (f64, f64)) -> f64 {
        match self.shape {
            Shape::Ellipsoid { centre, semi } => {
                let p = [s * cos - centre[0], y - centre[1], -s * sin - centre[2]];
                let u = [sin, 0.0, cos];
                let (mut a, mut b, mut c) = (0.0, 0.0, -1.0);
                for k in 0..3 {
                    let (q, v) = (p[k] / semi[k], u[k] / semi[k]);
                    a += v * v;
                    b += q * v;
                    c += q * q;
                }
                let disc = b * b - a * c;
                if disc > 0.0 {
                    2.0 * disc.sqrt() / a
                } else {
                    0.0
                }
            }
            Shape::Fibre { axis, radius, rows } => {
                let rho = axis[0] * cos - axis[1] * sin - s;
                if y < rows.0 || y >= rows.1 || rho.abs() >= radius {
                    0.0
                } else {
                    2.0 * (radius * radius - rho * rho).sqrt()
                }
            }
        }
    }

    fn contains(&self, [x, y, z]: [f64; 3]) -> bool {
        match self.shape {
            Shape::Ellipsoid { centre, semi } => {
                let q = |k: usize, v: f64| (v - centre[k]) / semi[k];
                q(0, x).powi(2) + q(1, y).powi(2) + q(2, z).powi(2) < 1.0
            }
            Shape::Fibre { axis, radius, rows } => {
                y >= rows.0
                    && y < rows.1
                    && (x - axis[0]).powi(2) + (z - axis[1]).powi(2) < radius * radius
            }
        }
    }
}

/// The phantom: everything inside a cylinder of radius 0.36·W about the axis, so that the
/// outer columns are air at every angle.
struct Phantom {
    bodies: Vec<Body>,
}

impl Phantom {
    fn new(h: usize, w: usize, seed: u64) -> Self {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let (hf, wf) = (h as f64, w as f64);
        let mut bodies = Vec::new();
        // Spheres that scatter (a powder-filled capsule, say).
        for _ in 0..3 {
            let r = wf * rng.random_range(0.06..0.11);
            let reach = 0.3 * wf - r;
            let (x, z) = (
                rng.random_range(-reach..reach),
                rng.random_range(-reach..reach),
            );
            let y = rng.random_range(-0.3 * hf..0.3 * hf);
            bodies.push(Body {
                shape: Shape::Ellipsoid {
                    centre: [x, y, z],
                    semi: [r; 3],
                },
                delta: 1.0,
                beta_per_delta: 2e-3,
                scatter_per_px: 0.4 / r,
            });
        }
        // Two fibres, one strongly absorbing (T near 0.3 through its centre).
        for (k, beta_per_delta) in [(0.0, 5e-3), (1.0, 2.0)] {
            let radius = wf * 0.04;
            let angle = std::f64::consts::PI * (0.25 + k) + rng.random_range(-0.3..0.3);
            let d = 0.22 * wf;
            bodies.push(Body {
                shape: Shape::Fibre {
                    axis: [d * angle.cos(), d * angle.sin()],
                    radius,
                    rows: (-0.45 * hf, 0.45 * hf),
                },
                delta: 0.8,
                beta_per_delta,
                scatter_per_px: 0.0,
            });
        }
        // A stack of three lenses (oblate ellipsoids: parabolic near their axis) along Z.
        for k in -1..=1 {
            bodies.push(Body {
                shape: Shape::Ellipsoid {
                    centre: [0.0, 0.0, k as f64 * 0.09 * wf],
                    semi: [0.14 * wf, 0.14 * wf, 0.03 * wf],
                },
                delta: 1.2,
                beta_per_delta: 2e-4,
                scatter_per_px: 0.0,
            });
        }
        Phantom { bodies }
    }

    /// Σ δ·t (relative δ × px), Σ β·t and Σ σ·t on the detector at `angle_rad`.
    fn project(&self, h: usize, w: usize, angle_rad: f64) -> [Array2<f64>; 3] {
        let sc = angle_rad.sin_cos();
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        let mut out = [(); 3].map(|_| Array2::<f64>::zeros((h, w)));
        let [d, b, s] = &mut out;
        Zip::indexed(d)
            .and(b)
            .and(s)
            .par_for_each(|(y, x), d, b, s| {
                for body in &self.bodies {
                    let t = body.chord(y as f64 - cy, x as f64 - cx, sc);
                    *d += body.delta * t;
                    *b += body.delta * body.beta_per_delta * t;
                    *s += body.scatter_per_px * t;
                }
            });
        out
    }

    /// Relative δ on the voxel grid `[rows, Z, X]` (the slices a reconstruction gives).
    fn volume(&self, h: usize, w: usize) -> Array3<f64> {
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        let mut v = Array3::<f64>::zeros((h, w, w));
        Zip::indexed(&mut v).par_for_each(|(y, z, x), v| {
            let p = [x as f64 - cx, y as f64 - cy, z as f64 - cx];
            *v = self
                .bodies
                .iter()
                .filter(|b| b.contains(p))
                .map(|b| b.delta)
                .sum();
        });
        v
    }
}

/// Smooths a volume by a Gaussian of `sigma` voxels along each axis, edges clamped.
fn smooth_volume(v: &mut Array3<f64>, sigma: f64) {
    if sigma <= 0.0 {
        return;
    }
    let line = gaussian_line(sigma);
    for axis in 0..3 {
        for mut lane in v.lanes_mut(Axis(axis)) {
            let mut buf = lane.to_vec();
            line(&mut buf);
            lane.assign(&Array1::from(buf));
        }
    }
}

/// Writes the scan and its ground truth into `dir` (made if need be):
///
/// - `scan.h5`, DXchange layout: `/exchange/data` `[angles, N, H, W]` (our extension of
///   DXchange to N pattern images per angle), `/exchange/data_white` `[N, H, W]` (the
///   reference stack), `/exchange/theta` (degrees), photons per pixel;
/// - `truth.h5`: `/phase` `[angles, H, W]` (rad, 0 in air), `/transmission`, `/darkfield`,
///   `/dx`, `/dy` (px), `/theta` (degrees) and, unless left out, `/delta` `[H, W, W]` (the
///   refractive index decrement on the voxel grid of a reconstruction: rows, then Z, then
///   X; voxel = pixel);
/// - `ct.json`: the configuration and the geometry as `espinnet series` takes it.
///
/// Each file appears whole or not at all.
pub fn write(config: &CtConfig, dir: &Path, progress: &dyn Progress) -> Result<()> {
    config.validate()?;
    let base = &config.base;
    let (h, w, n, k) = (base.height, base.width, base.scans, config.angles);
    let volume_bytes = if config.delta_volume {
        crate::memory::product(&[h, w, w, 12])
    } else {
        0
    };
    crate::memory::ensure(
        volume_bytes.saturating_add(crate::memory::product(&[n * 8 + 16 * 8, h, w])),
        None,
        &format!("simulating a {k}-angle CT scan of {n}x{h}x{w}"),
    )?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let geometry = &base.geometry;
    let kw = 2.0 * std::f64::consts::PI / geometry.wavelength_m();
    let p_m = geometry.effective_pixel_m();
    let d_per_grad = 1.0 / geometry.phase_gradient_per_px();
    let phantom = Phantom::new(h, w, base.stream(1));
    let angles = config.angles_deg();
    // The relative δ·t of every angle, smoothed, and the largest |∇(δ·t)| over the scan:
    // the scale that gives the asked largest displacement. Each angle is projected again
    // when it is rendered (cheap next to rendering): memory stays one angle's.
    let path_maps = |i: usize| {
        phantom
            .project(h, w, angles[i].to_radians())
            .map(|m| gaussian_clamped(&m, config.edge_px))
    };
    let mut steepest = 0.0f64;
    for i in 0..k {
        let [dt, ..] = path_maps(i);
        for g in super::sample::gradients(&dt) {
            steepest = g.iter().fold(steepest, |m, v| m.max(v.abs()));
        }
    }
    if steepest == 0.0 {
        return Err(Error::invalid("the phantom is empty at this size"));
    }
    // δ per unit of relative δ: d = d_per_grad · k · δ · p · ∇(δ_rel t_px).
    let delta_unit = config.max_displacement_px / (d_per_grad * kw * p_m * steepest);
    let maps_at = |i: usize| -> Maps {
        let [dt, bt, st] = path_maps(i);
        numeric(
            dt.mapv(|v| -kw * delta_unit * v * p_m),
            bt.mapv(|v| (-2.0 * kw * delta_unit * v * p_m).exp()),
            st.mapv(|v| (-v).exp()),
            d_per_grad,
        )
    };
    let reach = config.max_displacement_px;
    let (pattern, shifts, _) = scan_pattern(base, (reach, reach), base.stream(2), base.stream(3))?;
    let noise = |i: u64| base.poisson_noise.then(|| base.stream(4).wrapping_add(i));
    let flat = numeric(
        Array2::zeros((h, w)),
        Array2::ones((h, w)),
        Array2::ones((h, w)),
        d_per_grad,
    );
    let (reference, _) = forward::render(&pattern, &shifts, &flat, base.flux_photons, noise(0));
    let f32v = |a: &Array2<f64>| a.mapv(|v| v as f32).into_dyn();
    let theta = Array1::from(angles.iter().map(|&a| a as f32).collect::<Vec<_>>()).into_dyn();
    let delta = config.delta_volume.then(|| {
        let mut delta = phantom.volume(h, w);
        smooth_volume(&mut delta, config.edge_px);
        delta.mapv(|v| (v * delta_unit) as f32)
    });
    type Field = fn(&Maps) -> &Array2<f64>;
    let fields: [(&str, Field); 5] = [
        ("phase", |m| &m.phase),
        ("transmission", |m| &m.transmission),
        ("darkfield", |m| &m.darkfield),
        ("dx", |m| &m.dx),
        ("dy", |m| &m.dy),
    ];
    // Both files at once, one angle at a time: memory stays bounded.
    crate::io::write_streamed(&dir.join("truth.h5"), |truth| {
        truth.write("/theta", theta.view())?;
        if let Some(delta) = &delta {
            truth.write("/delta", delta.view().into_dyn())?;
        }
        for (name, _) in fields {
            truth.dataset::<f32>(&format!("/{name}"), &[k, h, w])?;
        }
        crate::io::write_streamed(&dir.join("scan.h5"), |scan| {
            scan.group("/exchange", "NXdata")?;
            scan.dataset::<f32>("/exchange/data", &[k, n, h, w])?;
            scan.write("/exchange/data_white", reference.view().into_dyn())?;
            scan.write("/exchange/theta", theta.view())?;
            scan.attr("/exchange/theta", "units", "degrees")?;
            for i in 0..k {
                let maps = maps_at(i);
                let (_, sample) = forward::render(
                    &pattern,
                    &shifts,
                    &maps,
                    base.flux_photons,
                    noise(1 + i as u64),
                );
                scan.write_entry("/exchange/data", i, sample.view().into_dyn())?;
                for (name, get) in fields {
                    truth.write_entry(&format!("/{name}"), i, f32v(get(&maps)).view())?;
                }
                if !progress.report((i + 1) as f64 / k as f64) {
                    return Err(Error::Cancelled);
                }
            }
            Ok(())
        })
    })?;
    let g = geometry;
    let meta = serde_json::json!({
        "energy_kev": g.energy_ev / 1e3,
        "distance_m": g.distance_m,
        "pixel_size_um": g.detector_pixel_m * 1e6,
        "magnification": g.magnification,
        "delta_scale": delta_unit,
        "config": config,
    });
    let text = serde_json::to_string_pretty(&meta).expect("serialisable");
    crate::io::write_atomically(&dir.join("ct.json"), |tmp| {
        std::fs::write(tmp, text).map_err(|e| Error::io(tmp, e))
    })
}
