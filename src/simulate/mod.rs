//! Forward simulator: seeded, deterministic cases with ground truth, for tests, benchmarks
//! and training data (ESPINNet paper §2.4, `docs/design.md` §1).
//!
//! The modulator's complex transmission is propagated to the detector by the Fresnel
//! transfer function (angular spectrum), blurred by the detector and integrated over the
//! pixel area, on a canvas oversampled `oversampling`× that covers the image, the scan and
//! the largest displacement. Each reference frame samples that pattern at `r − s_i` (scan
//! position s_i), each sample frame at `r − s_i − d(r)`, with third-order (Keys) cubic
//! interpolation, and applies `S = T·(M + D·(R(r − d) − M))` with M the mean pattern
//! intensity. Then Poisson noise at `flux_photons` per pixel. The model is the parallel-beam
//! one: all lengths are at the sample plane (effective pixel).

pub mod ct;
pub mod dataset;
mod filter;
mod forward;
mod modulator;
mod sample;
pub mod stress;
mod trajectory;

use ndarray::{Array2, Array3};
use serde::{Deserialize, Serialize};

pub use modulator::Modulator;
pub use sample::Sample;
pub use trajectory::Trajectory;

use crate::error::{Error, Result, require_positive};
use crate::geometry::Geometry;

/// Everything that defines a simulated case. Serialisable: written next to the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Image height and width (px).
    pub height: usize,
    pub width: usize,
    /// Number of scan positions N.
    pub scans: usize,
    /// Seed of every random choice: the same config and seed give the same case.
    pub seed: u64,
    pub geometry: Geometry,
    pub modulator: Modulator,
    /// Modulator-to-detector propagation distance (m).
    pub modulator_distance_m: f64,
    pub trajectory: Trajectory,
    pub sample: Sample,
    /// Detector point-spread function, Gaussian σ (px).
    pub detector_blur_px: f64,
    /// Mean photons per pixel in the patterned beam without sample.
    pub flux_photons: f64,
    /// Draw Poisson noise (false: expected counts).
    pub poisson_noise: bool,
    /// Canvas samples per pixel for propagation and interpolation.
    pub oversampling: usize,
}

/// Named starting points for common set-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The paper's training set-up: 5 µm coded mask, 0.65 µm pixels, diagonal scan of 3 µm
    /// steps ±0.5 step jitter, random Bézier objects, displacements up to 8 px.
    MaskDiagonal,
    /// Sandpaper speckle, random trajectory, spheres.
    SandpaperRandom,
    /// Checkerboard grating of 8 µm period on an XY grid scan, gentle objects (a periodic
    /// pattern is ambiguous beyond half a period).
    GratingGrid,
    /// Coded mask, diagonal scan, a bi-concave beryllium lens: analytic phase.
    Lens,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::MaskDiagonal,
        Preset::SandpaperRandom,
        Preset::GratingGrid,
        Preset::Lens,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::MaskDiagonal => "mask-diagonal",
            Preset::SandpaperRandom => "sandpaper-random",
            Preset::GratingGrid => "grating-grid",
            Preset::Lens => "lens",
        }
    }

    /// The preset's configuration for a `size`² image with `scans` frames.
    pub fn config(self, size: usize, scans: usize, seed: u64) -> Config {
        let geometry = Geometry {
            energy_ev: 20e3,
            distance_m: 0.5,
            detector_pixel_m: 6.5e-6,
            magnification: 10.0,
        };
        let mask = Modulator::CodedMask {
            pitch_um: 5.0,
            fill: 0.5,
            transmission: 0.6,
            phase_rad: -1.0,
        };
        let diagonal = Trajectory::Diagonal {
            step_um: 3.0,
            jitter: 0.5,
        };
        let blobs = |max_d: f64| Sample::Blobs {
            count: 4,
            radius_frac: (0.1, 0.25),
            edge_px: 3.0,
            max_displacement_px: max_d,
            transmission_min: 0.6,
            darkfield_min: 0.6,
        };
        let (modulator, trajectory, sample) = match self {
            Preset::MaskDiagonal => (mask, diagonal, blobs(8.0)),
            Preset::SandpaperRandom => (
                Modulator::Sandpaper {
                    grain_um: 4.0,
                    phase_rms_rad: 0.6,
                    transmission: 0.8,
                },
                Trajectory::Random { extent_um: 20.0 },
                Sample::Spheres {
                    count: 6,
                    radius_um: (15.0, 40.0),
                    delta: 8.5e-7,
                    beta: 1e-9,
                    darkfield_min: 0.6,
                    edge_px: 2.0,
                },
            ),
            Preset::GratingGrid => (
                Modulator::Checkerboard {
                    period_um: 8.0,
                    transmission: 0.5,
                    phase_rad: std::f64::consts::FRAC_PI_2,
                },
                Trajectory::Grid { step_um: 1.3 },
                blobs(3.0),
            ),
            Preset::Lens => (
                mask,
                diagonal,
                // Be at 20 keV: δ ≈ 8.5e-7; aperture radius 40 % of the field.
                Sample::Lens {
                    apex_radius_um: 50.0,
                    aperture_um: 0.4 * size as f64 * geometry.effective_pixel_m() * 1e6,
                    delta: 8.5e-7,
                    beta: 2e-10,
                },
            ),
        };
        Config {
            height: size,
            width: size,
            scans,
            seed,
            geometry,
            modulator,
            modulator_distance_m: 0.5,
            trajectory,
            sample,
            detector_blur_px: 0.7,
            flux_photons: 2000.0,
            poisson_noise: true,
            oversampling: 2,
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Preset::ALL.iter().map(|p| p.name()).collect();
                Error::invalid(format!(
                    "unknown preset '{s}' (one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Ground truth of a case, `[H, W]` each.
#[derive(Debug, Clone)]
pub struct Truth {
    /// Pattern displacement along x (columns) and y (rows), px.
    pub dx: Array2<f32>,
    pub dy: Array2<f32>,
    pub transmission: Array2<f32>,
    pub darkfield: Array2<f32>,
    /// Phase (rad), zero mean.
    pub phase: Array2<f32>,
}

impl Truth {
    /// The four contrasts, as an estimate is scored against them.
    pub fn contrasts(&self) -> crate::model::Contrasts<'_> {
        crate::model::Contrasts::new(&self.dx, &self.dy, &self.transmission, &self.darkfield)
    }
}

/// A simulated case.
#[derive(Debug, Clone)]
pub struct Case {
    pub config: Config,
    /// `[N, H, W]`, photons per pixel.
    pub reference: Array3<f32>,
    pub sample: Array3<f32>,
    pub truth: Truth,
    /// Scan positions (y, x) in µm at the sample plane, centred.
    pub positions_um: Vec<(f64, f64)>,
}

impl Case {
    /// M of the model (photons per pixel): the mean pattern intensity, which the simulator
    /// normalises to the configured flux.
    pub fn mean_photons(&self) -> f64 {
        self.config.flux_photons
    }
}

impl Config {
    /// The seed of random stream `k`: independent streams for independent choices, so
    /// that changing one part keeps the others.
    fn stream(&self, k: u64) -> u64 {
        self.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(k)
    }

    /// The config with its sample scaled (δ, or the displacement) so that the largest
    /// displacement magnitude over the image is `max_px`; a sample that displaces nothing
    /// is returned as it is.
    pub fn with_max_displacement(mut self, max_px: f64) -> Config {
        let m = self
            .sample
            .maps(self.height, self.width, &self.geometry, self.stream(1));
        let now = ndarray::Zip::from(&m.dx)
            .and(&m.dy)
            .fold(0.0f64, |a, &x, &y| a.max(x.hypot(y)));
        if now > 0.0 {
            self.sample = self.sample.scaled(max_px / now);
        }
        self
    }

    /// Checks every parameter; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.height < 2 || self.width < 2 || self.scans == 0 {
            return Err(Error::invalid(format!(
                "need at least 2x2 pixels and 1 scan, got {}x{} and {}",
                self.height, self.width, self.scans
            )));
        }
        if self
            .height
            .saturating_mul(self.width)
            .saturating_mul(self.scans)
            > 1 << 31
        {
            return Err(Error::invalid("case too large: N·H·W must stay below 2^31"));
        }
        if !(1..=8).contains(&self.oversampling) {
            return Err(Error::invalid(format!(
                "oversampling must be 1..=8, got {}",
                self.oversampling
            )));
        }
        self.geometry.validate()?;
        require_positive("modulator distance (m)", self.modulator_distance_m)?;
        require_positive("flux (photons)", self.flux_photons)?;
        if !(self.detector_blur_px >= 0.0 && self.detector_blur_px.is_finite()) {
            return Err(Error::invalid("detector blur must be finite and >= 0"));
        }
        self.modulator.validate()?;
        self.trajectory.validate()?;
        self.sample.validate()
    }
}

/// Simulates the case described by `config`.
pub fn simulate(config: &Config) -> Result<Case> {
    config.validate()?;
    let (h, w) = (config.height, config.width);
    let stream = |k: u64| config.stream(k);
    // Both stacks, and the sample's maps in f64 with their f32 copies.
    crate::memory::ensure(
        crate::memory::product(&[2 * config.scans * 4 + 8 * 8 + 5 * 4, h, w]),
        None,
        &format!("simulating {}x{h}x{w}", config.scans),
    )?;
    let clock = std::time::Instant::now();
    let lap = |stage: &str| {
        log::debug!(
            "simulate: {stage} done at {:.3} s",
            clock.elapsed().as_secs_f64()
        )
    };
    let maps = config.sample.maps(h, w, &config.geometry, stream(1));
    lap("sample maps");
    let dmax = |a: &Array2<f64>| a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let (pattern, shifts, positions_um) = scan_pattern(
        config,
        (dmax(&maps.dy), dmax(&maps.dx)),
        stream(2),
        stream(3),
    )?;
    lap("pattern");
    let noise = config.poisson_noise.then(|| stream(4));
    let (reference, sample) = forward::render(&pattern, &shifts, &maps, config.flux_photons, noise);
    lap("frames");
    let phase_mean = maps.phase.mean().unwrap_or(0.0);
    let f32map = |a: &Array2<f64>| a.mapv(|v| v as f32);
    Ok(Case {
        config: config.clone(),
        reference,
        sample,
        truth: Truth {
            dx: f32map(&maps.dx),
            dy: f32map(&maps.dy),
            transmission: f32map(&maps.transmission),
            darkfield: f32map(&maps.darkfield),
            phase: maps.phase.mapv(|v| (v - phase_mean) as f32),
        },
        positions_um,
    })
}

/// The scan positions (µm, and px as shifts) and the detector pattern over the image, the
/// scan and displacements up to `reach_px` (y, x).
#[allow(clippy::type_complexity)]
fn scan_pattern(
    config: &Config,
    reach_px: (f64, f64),
    trajectory_seed: u64,
    modulator_seed: u64,
) -> Result<(forward::Pattern, Vec<(f64, f64)>, Vec<(f64, f64)>)> {
    let (h, w) = (config.height, config.width);
    let pixel_um = config.geometry.effective_pixel_m() * 1e6;
    let positions_um = config
        .trajectory
        .positions_um(config.scans, trajectory_seed);
    let shifts: Vec<(f64, f64)> = positions_um
        .iter()
        .map(|&(y, x)| (y / pixel_um, x / pixel_um))
        .collect();
    let (dy_max, dx_max) = reach_px;
    let (smin, smax) = shifts.iter().fold(
        ((f64::MAX, f64::MAX), (f64::MIN, f64::MIN)),
        |(lo, hi), &(y, x)| ((lo.0.min(y), lo.1.min(x)), (hi.0.max(y), hi.1.max(x))),
    );
    let optics = forward::Optics {
        pixel_um,
        wavelength_m: config.geometry.wavelength_m(),
        propagation_m: config.modulator_distance_m,
        blur_px: config.detector_blur_px,
        oversampling: config.oversampling,
    };
    let pattern = forward::Pattern::new(
        (-smax.0 - dy_max, -smax.1 - dx_max),
        (
            h as f64 - 1.0 - smin.0 + dy_max,
            w as f64 - 1.0 - smin.1 + dx_max,
        ),
        &optics,
        |fh, fw, sample_um| {
            config
                .modulator
                .wavefield(fh, fw, sample_um, modulator_seed)
        },
    )?;
    Ok((pattern, shifts, positions_um))
}
