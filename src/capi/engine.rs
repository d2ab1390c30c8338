//! What the C and the C++ surfaces share: options set by name, the engine they build, and
//! a run that returns every map the caller asks for. Only the public Rust API is called.

use ndarray::{Array2, ArrayView3};

use super::EspStatus;
use super::guard::Failure;
use crate::Geometry;
use crate::integrate::{Method, phase_from_displacement};
use crate::network::{self, Network, Provider};
use crate::tracking::{self, Params};

/// Options by name, so that new options never change either ABI.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    tracking: bool,
    params: Params,
    network: network::Options,
    energy_kev: Option<f64>,
    distance_m: Option<f64>,
    pixel_size_um: Option<f64>,
    magnification: Option<f64>,
    integration: Option<Method>,
    /// Test hook: engine creation panics, to prove the boundary contains it.
    panic_on_new: bool,
}

pub(crate) const KEYS: &str = "engine; network: model, ort_library, provider, scaling, tile, \
    overlap, batch, threads, device_id, fp16, gpu_mem_limit_mib, trt_cache; tracking: window, \
    max_shift, mean_window, dark_field, hamming, reseed, adaptive; geometry: energy_kev, \
    distance_m, pixel_size_um, magnification, integration";

impl Settings {
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<(), Failure> {
        let int = || {
            value.parse::<usize>().map_err(|_| {
                invalid(format!(
                    "option '{key}' needs a non-negative integer, got '{value}'"
                ))
            })
        };
        let positive = || match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
            _ => Err(invalid(format!(
                "option '{key}' needs a finite number > 0, got '{value}'"
            ))),
        };
        let flag = || match value {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(invalid(format!(
                "option '{key}' needs true/false/1/0, got '{value}'"
            ))),
        };
        let path = || Some(std::path::PathBuf::from(value));
        let (p, n) = (&mut self.params, &mut self.network);
        match key {
            "engine" => {
                self.tracking = match value {
                    "tracking" => true,
                    "network" => false,
                    _ => {
                        return Err(invalid(format!(
                            "option 'engine' must be network or tracking, got '{value}'"
                        )));
                    }
                }
            }
            "window" => p.window = int()?,
            "max_shift" => p.max_shift = int()?,
            "mean_window" => p.mean_window = int()?,
            "dark_field" => p.dark_field = flag()?,
            "hamming" => p.hamming = flag()?,
            "reseed" => p.reseed = flag()?,
            "adaptive" => p.adaptive = flag()?,
            "model" => n.model = path(),
            "ort_library" => n.library = path(),
            "provider" => n.provider = value.parse()?,
            "scaling" => n.scaling = value.parse()?,
            "tile" => n.tile_px = int()?,
            "overlap" => n.overlap_px = int()?,
            "batch" => n.batch = int()?,
            "threads" => n.threads = int()?,
            "device_id" => {
                n.gpu.device_id = i32::try_from(int()?)
                    .map_err(|_| invalid(format!("device_id {value} is too large")))?
            }
            "fp16" => n.gpu.fp16 = flag()?,
            "gpu_mem_limit_mib" => {
                n.gpu.memory_limit_bytes =
                    Some(int()?.checked_mul(1 << 20).ok_or_else(|| {
                        invalid(format!("gpu_mem_limit_mib {value} is too large"))
                    })?)
            }
            "trt_cache" => n.gpu.engine_cache_dir = path(),
            "energy_kev" => self.energy_kev = positive()?,
            "distance_m" => self.distance_m = positive()?,
            "pixel_size_um" => self.pixel_size_um = positive()?,
            "magnification" => self.magnification = positive()?,
            "integration" => self.integration = Some(value.parse()?),
            "debug_panic" => self.panic_on_new = flag()?,
            _ => return Err(invalid(format!("unknown option '{key}' ({KEYS})"))),
        }
        Ok(())
    }

    /// The geometry when energy, distance and pixel size are all set; an error when only
    /// some are.
    fn geometry(&self) -> Result<Option<Geometry>, Failure> {
        match (self.energy_kev, self.distance_m, self.pixel_size_um) {
            (None, None, None) => Ok(None),
            (Some(e), Some(z), Some(p)) => Ok(Some(Geometry::new(
                e * 1e3,
                z,
                p * 1e-6,
                self.magnification.unwrap_or(1.0),
            )?)),
            _ => Err(invalid(
                "the geometry needs all of energy_kev, distance_m and pixel_size_um".into(),
            )),
        }
    }
}

enum Kind {
    Tracking(Params),
    Network(Box<Network>),
}

/// A built engine with the geometry that turns its displacements into refraction and phase.
pub(crate) struct Engine {
    kind: Kind,
    geometry: Option<Geometry>,
    integration: Method,
}

/// Which of the optional maps a run computes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted {
    pub quality: bool,
    /// Refraction angles and phase (needs the geometry).
    pub derived: bool,
}

/// The maps of one run, H×W each.
pub(crate) struct Maps {
    pub dx: Array2<f32>,
    pub dy: Array2<f32>,
    pub transmission: Array2<f32>,
    pub darkfield: Array2<f32>,
    pub quality: Option<Array2<f32>>,
    pub derived: Option<Derived>,
}

pub(crate) struct Derived {
    /// Refraction angles (rad).
    pub refraction_x: Array2<f32>,
    pub refraction_y: Array2<f32>,
    /// Phase (rad), zero mean.
    pub phase: Array2<f32>,
}

impl Engine {
    pub(crate) fn new(settings: &Settings) -> Result<Self, Failure> {
        if settings.panic_on_new {
            panic!("deliberate panic requested by the 'debug_panic' option");
        }
        let geometry = settings.geometry()?;
        let kind = if settings.tracking {
            Kind::Tracking(settings.params)
        } else {
            Kind::Network(Box::new(Network::new(&settings.network)?))
        };
        Ok(Engine {
            kind,
            geometry,
            integration: settings.integration.unwrap_or(Method::FrankotChellappa),
        })
    }

    #[cfg(feature = "cpp")]
    pub(crate) fn has_geometry(&self) -> bool {
        self.geometry.is_some()
    }

    /// `tracking-cpu`, or the network's execution provider.
    pub(crate) fn provider(&self) -> &'static std::ffi::CStr {
        match &self.kind {
            Kind::Tracking(_) => c"tracking-cpu",
            Kind::Network(n) => match n.provider() {
                Provider::Cuda => c"cuda",
                Provider::TensorRt => c"tensorrt",
                _ => c"cpu",
            },
        }
    }

    pub(crate) fn run(
        &self,
        reference: ArrayView3<f32>,
        sample: ArrayView3<f32>,
        wanted: Wanted,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Maps, Failure> {
        let geometry = match (wanted.derived, &self.geometry) {
            (true, None) => {
                return Err(invalid(
                    "refraction and phase need the geometry: set energy_kev, distance_m and \
                     pixel_size_um (and magnification)"
                        .into(),
                ));
            }
            (true, Some(g)) => Some(g),
            (false, _) => None,
        };
        let mut maps = match &self.kind {
            Kind::Tracking(params) => {
                let o = tracking::track_with(reference, sample, params, progress)?;
                let quality = wanted.quality.then_some(o.residual);
                Maps {
                    dx: o.dx,
                    dy: o.dy,
                    transmission: o.transmission,
                    darkfield: o.darkfield,
                    quality,
                    derived: None,
                }
            }
            Kind::Network(net) => {
                let o = net.reconstruct_with(reference, sample, progress)?;
                let quality = wanted
                    .quality
                    .then(|| network::model_residual(reference, sample, &o));
                Maps {
                    dx: o.dx,
                    dy: o.dy,
                    transmission: o.transmission,
                    darkfield: o.darkfield,
                    quality,
                    derived: None,
                }
            }
        };
        if let Some(g) = geometry {
            let angle = |d: &f32| g.angle_rad(*d as f64) as f32;
            maps.derived = Some(Derived {
                phase: phase_from_displacement(
                    maps.dx.view(),
                    maps.dy.view(),
                    g,
                    self.integration,
                )?,
                refraction_x: maps.dx.map(angle),
                refraction_y: maps.dy.map(angle),
            });
        }
        Ok(maps)
    }
}

pub(crate) fn invalid(message: String) -> Failure {
    Failure(EspStatus::InvalidArgument, message)
}
