//! Training data: random case configurations and the shard files they are written to.
//! Sample `i` of a dataset with seed `s` is a pure function of (mix, patch size, s, i):
//! shards can be made in any order, in parallel or again, and hold the same data.
//!
//! A shard (HDF5, or an `.npz` archive: [`ShardFile`], the default without HDF5; read by
//! `models/train/espinnet_train/data.py`) holds float32 datasets
//! `reference` and `sample` `[K, Nnet, P, P]` (photons, brought to Nnet frames by
//! [`crate::stack::scale_scans`]), the truth maps `dx`, `dy`, `transmission`, `darkfield`,
//! `phase` `[K, P, P]` and `n_scans` `[K]` (the scan count before scaling), with the
//! root attributes (in an `.npz`, uint8 arrays of UTF-8) `dataset` (JSON: how the shard was
//! made) and `configs` (JSON: each patch's [`Config`]).

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use super::{Config, Modulator, Preset, Sample, Trajectory};
use crate::error::{Error, Result};

/// Which distribution the cases are drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// The ESPINNet paper's: 5 µm coded mask, diagonal 3 µm ± ½ step, N = 20, Bézier
    /// objects, displacements up to 8 px.
    Paper,
    /// Also sandpaper and checkerboard modulators, XY-grid and random trajectories, N from 2
    /// to 20, displacements up to 10 px (a quarter period for checkerboards, beyond which
    /// the match is ambiguous), T and D down to 0.5, flux 300–10 000 photons.
    Broad,
    /// The broad mix's modulators, scans and flux with the stress families
    /// ([`super::stress`]): lenses, spheres, fibres, wedges, smooth fields, soft-edged,
    /// strongly absorbing and scattering objects, max |d| up to 12 px, large-step scans.
    /// For validation, `espinnet validate --mix stress` runs the fixed [`super::stress::suite`].
    Stress,
}

impl std::str::FromStr for Mix {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "paper" => Ok(Mix::Paper),
            "broad" => Ok(Mix::Broad),
            "stress" => Ok(Mix::Stress),
            _ => Err(Error::invalid(format!(
                "dataset mix must be 'paper', 'broad' or 'stress', got '{s}'"
            ))),
        }
    }
}

/// Largest scan count drawn (the network's Nnet in the paper).
pub const MAX_SCANS: usize = 20;

/// The configuration of sample `index` of a dataset.
pub fn config(mix: Mix, patch: usize, seed: u64, index: u64) -> Config {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
    let mut c = Preset::MaskDiagonal.config(patch, MAX_SCANS, rng.random());
    let blobs = |rng: &mut Pcg64Mcg, max_d: f64, t_min: f64, d_min: f64| Sample::Blobs {
        count: rng.random_range(1..=6),
        radius_frac: (0.1, 0.35),
        edge_px: rng.random_range(2.0..=5.0),
        max_displacement_px: rng.random_range(0.0..=max_d),
        transmission_min: rng.random_range(t_min..=1.0),
        darkfield_min: rng.random_range(d_min..=1.0),
    };
    match mix {
        Mix::Paper => c.sample = blobs(&mut rng, 8.0, 0.6, 0.6),
        Mix::Broad | Mix::Stress => {
            c.scans = rng.random_range(2..=MAX_SCANS);
            c.modulator = match rng.random_range(0..10) {
                0..=4 => Modulator::CodedMask {
                    pitch_um: rng.random_range(3.0..=8.0),
                    fill: 0.5,
                    transmission: rng.random_range(0.4..=0.8),
                    phase_rad: -rng.random_range(0.3..=1.5),
                },
                5..=7 => Modulator::Sandpaper {
                    grain_um: rng.random_range(2.5..=6.0),
                    phase_rms_rad: rng.random_range(0.3..=1.0),
                    transmission: rng.random_range(0.7..=0.95),
                },
                _ => Modulator::Checkerboard {
                    period_um: rng.random_range(6.0..=12.0),
                    transmission: rng.random_range(0.3..=0.7),
                    phase_rad: std::f64::consts::FRAC_PI_2,
                },
            };
            c.trajectory = match rng.random_range(0..3) {
                0 => Trajectory::Diagonal {
                    step_um: rng.random_range(1.0..=4.0),
                    jitter: 0.5,
                },
                1 => Trajectory::Grid {
                    step_um: rng.random_range(0.8..=3.0),
                },
                _ => Trajectory::Random {
                    extent_um: rng.random_range(10.0..=40.0),
                },
            };
            let max_d = super::stress::unambiguous_px(&c).min(10.0);
            c.sample = blobs(&mut rng, max_d, 0.5, 0.5);
            c.flux_photons = (rng.random_range(300f64.ln()..=10_000f64.ln())).exp();
            c.detector_blur_px = rng.random_range(0.5..=1.0);
            if mix == Mix::Stress {
                return super::stress::draw(c, &mut rng);
            }
        }
    }
    c
}

/// Scan counts drawn uniformly from `min..=max` for every patch, in place of the mix's own
/// (`--scans 2-20` gives the paper's distribution at the scan counts the network meets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanRange {
    pub min: usize,
    pub max: usize,
}

impl std::str::FromStr for ScanRange {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "scan range must be N or MIN-MAX with 1 <= MIN <= MAX, got '{s}'"
            ))
        };
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (min, max): (usize, usize) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if min == 0 || min > max {
            return Err(bad());
        }
        Ok(ScanRange { min, max })
    }
}

impl ScanRange {
    /// The scan count of patch `index`: like its configuration, a pure function of
    /// (seed, index), drawn from a stream of its own so the rest of the case is unchanged.
    pub fn draw(&self, seed: u64, index: u64) -> usize {
        let mut rng =
            Pcg64Mcg::seed_from_u64(seed ^ index.wrapping_mul(0xE703_7ED1_A0B4_28DB) ^ 0x5CA7_5CA7);
        rng.random_range(self.min..=self.max)
    }
}

/// The file format of a dataset's shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardFile {
    Hdf5,
    /// NumPy's archive: for a build without HDF5 (the GPU machine's, `scripts/gpu-train.sh`).
    Npz,
}

impl ShardFile {
    /// HDF5 where this build reads and writes it.
    pub const DEFAULT: ShardFile = match cfg!(feature = "hdf5") {
        true => ShardFile::Hdf5,
        false => ShardFile::Npz,
    };

    /// The file name extension, which [`write_shard`] goes by.
    pub fn extension(self) -> &'static str {
        match self {
            ShardFile::Hdf5 => "h5",
            ShardFile::Npz => "npz",
        }
    }
}

impl std::str::FromStr for ShardFile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hdf5" | "h5" => Ok(ShardFile::Hdf5),
            "npz" => Ok(ShardFile::Npz),
            _ => Err(Error::invalid(format!("shard format '{s}': hdf5 or npz"))),
        }
    }
}

/// How the patches of a shard are brought to the network's frame count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShardFormat {
    pub nnet: usize,
    pub scaling: crate::ScanScaling,
}

/// Writes simulated `cases` (equal shapes) as one shard at `path` (replaced atomically),
/// with `about` (JSON) as its `dataset` attribute: an `.npz` archive where `path` ends so,
/// else HDF5.
pub fn write_shard(
    path: &std::path::Path,
    cases: &[super::Case],
    format: ShardFormat,
    about: &serde_json::Value,
) -> Result<()> {
    use ndarray::{Array1, Axis, stack};
    if cases.is_empty() {
        return Err(Error::invalid("a shard needs at least one case"));
    }
    let shape_error = |_| Error::invalid("the cases of a shard must have equal shapes");
    let scaled = |get: fn(&super::Case) -> &ndarray::Array3<f32>| -> Result<ndarray::Array4<f32>> {
        let v = cases
            .iter()
            .map(|c| crate::stack::scale_scans(get(c).view(), format.nnet, format.scaling))
            .collect::<Result<Vec<_>>>()?;
        stack(Axis(0), &v.iter().map(|x| x.view()).collect::<Vec<_>>()).map_err(shape_error)
    };
    let maps = |get: fn(&super::Truth) -> &ndarray::Array2<f32>| {
        stack(
            Axis(0),
            &cases
                .iter()
                .map(|c| get(&c.truth).view())
                .collect::<Vec<_>>(),
        )
        .map_err(shape_error)
    };
    let (reference, sample) = (scaled(|c| &c.reference)?, scaled(|c| &c.sample)?);
    let truth = [
        ("dx", maps(|t| &t.dx)?),
        ("dy", maps(|t| &t.dy)?),
        ("transmission", maps(|t| &t.transmission)?),
        ("darkfield", maps(|t| &t.darkfield)?),
        ("phase", maps(|t| &t.phase)?),
    ];
    let n_scans = Array1::from_iter(cases.iter().map(|c| c.config.scans as f32));
    let mut datasets = vec![
        ("reference", reference.view().into_dyn()),
        ("sample", sample.view().into_dyn()),
    ];
    datasets.extend(truth.iter().map(|(n, a)| (*n, a.view().into_dyn())));
    datasets.push(("n_scans", n_scans.view().into_dyn()));
    let configs: Vec<&Config> = cases.iter().map(|c| &c.config).collect();
    let configs = serde_json::to_string(&configs).expect("serialisable");
    let texts = [("dataset", about.to_string()), ("configs", configs)];
    let texts = texts.each_ref().map(|(n, t)| (*n, t.as_str()));
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => crate::io::write_npz(path, &datasets, &texts),
        _ => crate::io::write_hdf5(path, &datasets, &texts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `.npz` shard holds what the trainer reads (`data.py`): the stacks brought to
    /// Nnet frames, the truth maps, the scan counts, and the texts as UTF-8 bytes.
    #[test]
    fn an_npz_shard_holds_the_cases() {
        use ndarray::{Array1, Array3, Array4, Ix1};
        use ndarray_npy::NpzReader;
        let cases: Vec<_> = (0..2)
            .map(|i| {
                let mut c = config(Mix::Stress, 24, 5, i);
                c.scans = 3 + i as usize;
                super::super::simulate(&c).unwrap()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-00000.npz");
        let format = ShardFormat {
            nnet: 4,
            scaling: crate::ScanScaling::Nearest,
        };
        let about = serde_json::json!({ "mix": Mix::Stress, "seed": 5 });
        write_shard(&path, &cases, format, &about).unwrap();
        let mut npz = NpzReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let reference: Array4<f32> = npz.by_name("reference").unwrap();
        assert_eq!(reference.dim(), (2, 4, 24, 24));
        let scaled = crate::stack::scale_scans(cases[1].reference.view(), 4, format.scaling);
        assert_eq!(reference.index_axis(ndarray::Axis(0), 1), scaled.unwrap());
        let dx: Array3<f32> = npz.by_name("dx").unwrap();
        assert_eq!(dx.index_axis(ndarray::Axis(0), 0), cases[0].truth.dx);
        let n: Array1<f32> = npz.by_name("n_scans").unwrap();
        assert_eq!(n.to_vec(), [3.0, 4.0]);
        let text: ndarray::Array<u8, Ix1> = npz.by_name("dataset").unwrap();
        assert_eq!(String::from_utf8(text.to_vec()).unwrap(), about.to_string());
        let configs: ndarray::Array<u8, Ix1> = npz.by_name("configs").unwrap();
        let configs: Vec<Config> = serde_json::from_slice(configs.as_slice().unwrap()).unwrap();
        assert_eq!(configs.len(), 2);
    }

    #[test]
    fn scan_range_parses_and_draws_within_bounds() {
        let r: ScanRange = "3-7".parse().unwrap();
        assert_eq!(r, ScanRange { min: 3, max: 7 });
        assert_eq!(
            "5".parse::<ScanRange>().unwrap(),
            ScanRange { min: 5, max: 5 }
        );
        for bad in ["0-4", "7-3", "x", "2-", ""] {
            assert!(bad.parse::<ScanRange>().is_err(), "{bad}");
        }
        let drawn: Vec<usize> = (0..200).map(|i| r.draw(9, i)).collect();
        assert!(drawn.iter().all(|n| (3..=7).contains(n)));
        assert!((3..=7).all(|n| drawn.contains(&n)), "every count is drawn");
        assert_eq!(drawn, (0..200).map(|i| r.draw(9, i)).collect::<Vec<_>>());
    }
}
