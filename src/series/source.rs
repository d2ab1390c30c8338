//! A scan's inputs: projections read one at a time, the reference stack(s), dark frames
//! and angles, checked against each other when opened.

use std::borrow::Cow;
use std::path::PathBuf;

use ndarray::{Array2, Array3, ArrayView3, Axis};

use super::Spec;
use crate::error::{Error, Result};
use crate::io::{Format, Location, read_stack};

enum Projections {
    /// A rank-4 HDF5 dataset `[angles, N, H, W]`.
    Hdf5(Location),
    /// One stack file per angle.
    Files(Vec<PathBuf>),
}

/// An opened scan.
pub struct Series {
    spec: Spec,
    projections: Projections,
    reference: Array3<f32>,
    reference_end: Option<Array3<f32>>,
    dark: Option<Array2<f32>>,
    angles_deg: Vec<f64>,
    dims: (usize, usize, usize, usize),
}

impl Series {
    /// Opens a scan: reads the reference stack(s), dark frames and angles, and checks that
    /// the projections' shape agrees with them.
    pub fn open(spec: &Spec) -> Result<Self> {
        // A bare HDF5 file is a DXchange one: its projections are /exchange/data.
        let lower = spec.projections.to_ascii_lowercase();
        let loc = if [".h5", ".hdf5", ".nxs"].iter().any(|e| lower.ends_with(e)) {
            Location::parse(&format!("{}:/exchange/data", spec.projections))
        } else {
            Location::parse(&spec.projections)
        };
        let (projections, count, h5file, entry) = match loc {
            Ok(loc) if loc.format == Format::Hdf5 => {
                let shape = crate::io::hdf5_shape(&loc)?.ok_or_else(|| {
                    Error::format(&loc.path, format!("no dataset '{}'", spec.projections))
                })?;
                let [k, n, h, w] = shape[..] else {
                    return Err(Error::format(
                        &loc.path,
                        format!(
                            "projections {shape:?}: expected [angles, N, H, W] \
                             (N pattern images per angle)"
                        ),
                    ));
                };
                let file = loc.path.clone();
                let entry = [n, h, w].map(|d| d as usize);
                (Projections::Hdf5(loc), k as usize, Some(file), Some(entry))
            }
            _ => {
                let files = stack_files(&spec.projections)?;
                let k = files.len();
                (Projections::Files(files), k, None, None)
            }
        };
        // Defaults from the projections' HDF5 file, DXchange names.
        let in_file = |dataset: &str| {
            h5file
                .as_ref()
                .map(|f| format!("{}:{dataset}", f.display()))
        };
        let present = |spec: &str| -> Result<bool> {
            let loc = Location::parse(spec)?;
            Ok(crate::io::hdf5_shape(&loc)?.is_some())
        };
        let reference_spec = spec
            .reference
            .clone()
            .or_else(|| in_file("/exchange/data_white"))
            .ok_or_else(|| Error::invalid("a series needs a reference stack"))?;
        let reference = read_stack(&reference_spec)?;
        let reference_end = spec.reference_end.as_deref().map(read_stack).transpose()?;
        let dark_spec = match (&spec.dark, in_file("/exchange/data_dark")) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(d)) if present(&d)? => Some(d),
            _ => None,
        };
        let dark = dark_spec
            .as_deref()
            .map(|d| -> Result<Array2<f32>> {
                let frames = read_stack(d)?;
                Ok(frames.mean_axis(Axis(0)).expect("a stack has frames"))
            })
            .transpose()?;
        let angles_deg = match (&spec.angles, in_file("/exchange/theta")) {
            (Some(a), _) => angles(a, count)?,
            (None, Some(t)) if present(&t)? => angles(&t, count)?,
            _ => {
                return Err(Error::invalid(
                    "a series needs its angles (a dataset or file of degrees, or start:stop)",
                ));
            }
        };
        let (n, h, w) = reference.dim();
        let check = |name: &str, dim: (usize, usize)| {
            if dim == (h, w) {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} is {}x{}, the reference {h}x{w}",
                    dim.0, dim.1
                )))
            }
        };
        if let Some(end) = &reference_end {
            if end.dim() != (n, h, w) {
                return Err(Error::invalid(format!(
                    "the end reference is {:?}, the reference {:?}",
                    end.dim(),
                    (n, h, w)
                )));
            }
        }
        if let Some(d) = &dark {
            check("the dark frame", d.dim())?;
        }
        let mut series = Series {
            spec: spec.clone(),
            projections,
            reference,
            reference_end,
            dark,
            angles_deg,
            dims: (count, n, h, w),
        };
        if count == 0 {
            return Err(Error::invalid("the scan has no projections"));
        }
        let air = series.air_columns();
        if 2 * air >= w {
            return Err(Error::invalid(format!(
                "{air} air columns on each side leave nothing of a {w} px wide field"
            )));
        }
        // A dataset's entries are checked here from its shape; files, as each is read.
        if let Some(entry) = entry.filter(|&[en, eh, ew]| (en, eh, ew) != (n, h, w)) {
            return Err(Error::invalid(format!(
                "the projections are {entry:?} per angle, the reference {:?}",
                (n, h, w)
            )));
        }
        for stack in std::iter::once(&mut series.reference).chain(series.reference_end.as_mut()) {
            crate::stack::correct(stack, series.dark.as_ref().map(|d| d.view()), None)?;
        }
        Ok(series)
    }

    /// `(angles, N, H, W)`.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        self.dims
    }

    pub fn angles_deg(&self) -> &[f64] {
        &self.angles_deg
    }

    pub(super) fn air_columns(&self) -> usize {
        self.spec.air_columns.unwrap_or(self.dims.3 / 16)
    }

    /// Projection `index`'s sample stack, dark-corrected.
    pub fn read(&self, index: usize) -> Result<Array3<f32>> {
        let mut stack = match &self.projections {
            Projections::Hdf5(loc) => crate::io::read_entry(loc, index)?,
            Projections::Files(files) => read_stack(&files[index].to_string_lossy())?,
        };
        let (_, n, h, w) = self.dims;
        if stack.dim() != (n, h, w) {
            return Err(Error::invalid(format!(
                "projection {index} is {:?}, the reference {:?}",
                stack.dim(),
                (n, h, w)
            )));
        }
        crate::stack::correct(&mut stack, self.dark.as_ref().map(|d| d.view()), None)?;
        Ok(stack)
    }

    /// The reference stack for projection `index`: the one reference, or the two
    /// interpolated linearly by angle.
    pub fn reference_at(&self, index: usize) -> Cow<'_, Array3<f32>> {
        let Some(end) = &self.reference_end else {
            return Cow::Borrowed(&self.reference);
        };
        let (first, last) = (self.angles_deg[0], *self.angles_deg.last().expect("angles"));
        let t = if last == first {
            0.0
        } else {
            ((self.angles_deg[index] - first) / (last - first)).clamp(0.0, 1.0) as f32
        };
        let mut r = self.reference.clone();
        ndarray::Zip::from(&mut r)
            .and(end)
            .par_for_each(|a, &b| *a += t * (b - *a));
        Cow::Owned(r)
    }

    /// What the run reads, for its manifest and settings.
    pub(super) fn describe(&self) -> serde_json::Value {
        let (k, n, h, w) = self.dims;
        serde_json::json!({
            "spec": self.spec,
            "projections": k, "scans": n, "height": h, "width": w,
            "angles_deg": self.angles_deg,
        })
    }

    /// The files the scan is read from.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let file = |spec: &str| Location::parse(spec).ok().map(|l| l.path);
        let mut files: Vec<PathBuf> = match &self.projections {
            Projections::Hdf5(loc) => vec![loc.path.clone()],
            Projections::Files(files) => files.clone(),
        };
        let s = &self.spec;
        files.extend(
            [&s.reference, &s.reference_end, &s.dark, &s.angles]
                .into_iter()
                .flatten()
                .filter_map(|spec| file(spec)),
        );
        files
    }

    /// The reference stack (dark-corrected), for callers that check it.
    pub fn reference(&self) -> ArrayView3<'_, f32> {
        self.reference.view()
    }
}

/// The stack files of a directory, in name order.
fn stack_files(dir: &str) -> Result<Vec<PathBuf>> {
    let path = PathBuf::from(dir);
    if !path.is_dir() {
        return Err(Error::invalid(format!(
            "projections '{dir}': give file.h5:/dataset ([angles, N, H, W]) or a directory \
             of stack files"
        )));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
        .map_err(|e| Error::io(&path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with('.')
                && [".tif", ".tiff", ".npy"]
                    .iter()
                    .any(|e| name.to_ascii_lowercase().ends_with(e))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::invalid(format!(
            "no .tif, .tiff or .npy stacks in '{dir}'"
        )));
    }
    Ok(files)
}

/// `count` angles (degrees) from `start:stop` or a dataset/file of one value each.
fn angles(spec: &str, count: usize) -> Result<Vec<f64>> {
    let range = spec
        .split_once(':')
        .and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)));
    let values: Vec<f64> = match range {
        Some((start, stop)) if start.is_finite() && stop.is_finite() => (0..count)
            .map(|i| start + (stop - start) * i as f64 / count as f64)
            .collect(),
        _ => read_stack(spec)?.iter().map(|&v| f64::from(v)).collect(),
    };
    if values.len() != count {
        return Err(Error::invalid(format!(
            "{} angles in '{spec}' for {count} projections",
            values.len()
        )));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "angle {bad} in '{spec}' is not finite"
        )));
    }
    Ok(values)
}
