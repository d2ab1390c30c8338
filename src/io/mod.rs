//! Reading input stacks and writing results: multi-page TIFF, `.npy` and HDF5
//! (`file.h5:/path/to/dataset`), plus PNG previews.
//!
//! Every write goes to a hidden temporary file beside the target and is renamed over it
//! only when complete: a failed or interrupted write leaves no half-written output.

mod atomic;
#[cfg(feature = "hdf5")]
mod hdf5;
#[cfg(feature = "hdf5")]
pub mod nexus;
/// NeXus results need HDF5: without it, the same call is an error.
#[cfg(not(feature = "hdf5"))]
pub mod nexus {
    use crate::error::{Error, Result};
    pub fn write_result(path: &std::path::Path, _: &crate::Maps, _: &str) -> Result<()> {
        Err(Error::format(
            path,
            "this build has no HDF5 support (feature 'hdf5')",
        ))
    }
}
mod npy;
mod output_dir;
pub mod preview;
mod tiff;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3, ArrayView3, Axis};

pub use atomic::write_atomically;
#[cfg(feature = "hdf5")]
pub use hdf5::{Streamed, write_streamed};
#[cfg(not(feature = "hdf5"))]
pub use no_hdf5::{Streamed, hdf5_shape, hdf5_text, read_entry, write_streamed};

/// Without HDF5 the same calls are errors (the streamed writer cannot even be made).
#[cfg(not(feature = "hdf5"))]
mod no_hdf5 {
    use std::path::Path;

    use ndarray::{Array3, ArrayViewD};

    use super::Location;
    use crate::error::{Error, Result};

    fn missing(path: &Path) -> Error {
        Error::format(path, "this build has no HDF5 support (feature 'hdf5')")
    }

    pub fn read_entry(loc: &Location, _: usize) -> Result<Array3<f32>> {
        Err(missing(&loc.path))
    }

    pub fn hdf5_shape(loc: &Location) -> Result<Option<Vec<u64>>> {
        Err(missing(&loc.path))
    }

    pub fn hdf5_text(loc: &Location) -> Result<String> {
        Err(missing(&loc.path))
    }

    pub fn write_streamed(path: &Path, _: impl FnOnce(&Streamed) -> Result<()>) -> Result<()> {
        Err(missing(path))
    }

    /// Never made: its methods cannot be called.
    pub enum Streamed {}

    #[allow(clippy::missing_errors_doc)]
    impl Streamed {
        pub fn group(&self, _: &str, _: &str) -> Result<()> {
            match *self {}
        }
        pub fn dataset<T>(&self, _: &str, _: &[usize]) -> Result<()> {
            match *self {}
        }
        pub fn write(&self, _: &str, _: ArrayViewD<f32>) -> Result<()> {
            match *self {}
        }
        pub fn write_text(&self, _: &str, _: &str) -> Result<()> {
            match *self {}
        }
        pub fn write_entry<T>(&self, _: &str, _: usize, _: ArrayViewD<T>) -> Result<()> {
            match *self {}
        }
        pub fn attr(&self, _: &str, _: &str, _: &str) -> Result<()> {
            match *self {}
        }
        pub fn attr_list(&self, _: &str, _: &str, _: &[&str]) -> Result<()> {
            match *self {}
        }
        pub fn link(&self, _: &str, _: &str) -> Result<()> {
            match *self {}
        }
    }
}
pub use output_dir::{MARKER, OutputDir};

use crate::error::{Error, Result};

/// A file format, chosen from the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tiff,
    Npy,
    Hdf5,
}

/// Where data lives: a path and, for HDF5, the dataset inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub format: Format,
    /// HDF5 dataset path (`/entry/data`); `None` for the other formats.
    pub dataset: Option<String>,
}

impl Location {
    /// Parses `file.tif`, `file.npy` or `file.h5:/path/to/dataset` (also `.hdf5`, `.nxs`).
    pub fn parse(spec: &str) -> Result<Self> {
        let lower = |p: &str| p.to_ascii_lowercase();
        let is_h5 = |p: &str| {
            [".h5", ".hdf5", ".hdf", ".nxs"]
                .iter()
                .any(|e| lower(p).ends_with(e))
        };
        if let Some((file, ds)) = spec.rsplit_once(':').filter(|(f, _)| is_h5(f)) {
            if !ds.starts_with('/') || ds.len() < 2 {
                return Err(Error::invalid(format!(
                    "'{spec}': the HDF5 dataset must be an absolute path such as {file}:/entry/data"
                )));
            }
            return Ok(Location {
                path: file.into(),
                format: Format::Hdf5,
                dataset: Some(ds.into()),
            });
        }
        let format = match lower(spec) {
            s if s.ends_with(".tif") || s.ends_with(".tiff") => Format::Tiff,
            s if s.ends_with(".npy") => Format::Npy,
            s if is_h5(&s) => {
                return Err(Error::invalid(format!(
                    "'{spec}': name the dataset inside the HDF5 file, e.g. {spec}:/entry/data"
                )));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "'{spec}': unknown format (use .tif/.tiff, .npy or file.h5:/dataset)"
                )));
            }
        };
        Ok(Location {
            path: spec.into(),
            format,
            dataset: None,
        })
    }
}

/// Reads a stack `[N, H, W]` as f32: multi-page TIFF (8/16/32-bit integer, 32/64-bit
/// float), `.npy` or an HDF5 dataset of rank 3 (rank 2 is read as one frame).
pub fn read_stack(spec: &str) -> Result<Array3<f32>> {
    let loc = Location::parse(spec)?;
    if !loc.path.is_file() {
        return Err(Error::io(
            &loc.path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    match loc.format {
        Format::Tiff => tiff::read(&loc.path),
        Format::Npy => npy::read(&loc.path),
        Format::Hdf5 => hdf5_read(&loc),
    }
}

/// Reads a single image `[H, W]` (a stack of exactly one frame).
pub fn read_image(spec: &str) -> Result<Array2<f32>> {
    let s = read_stack(spec)?;
    if s.len_of(Axis(0)) != 1 {
        return Err(Error::format(
            spec,
            format!("expected one image, found {} frames", s.len_of(Axis(0))),
        ));
    }
    Ok(s.index_axis_move(Axis(0), 0))
}

/// Reads a reference and a sample stack (each as [`read_stack`] takes it), checks that they
/// agree, and corrects both with the optional dark and flat frames (`[H, W]` each, see
/// [`crate::stack::correct`]): what every surface that starts from files does first.
pub fn read_pair(
    reference: &str,
    sample: &str,
    dark: Option<&str>,
    flat: Option<&str>,
) -> Result<(Array3<f32>, Array3<f32>)> {
    // Both at once: decoding is most of a read from the page cache.
    let (r, s) = rayon::join(|| read_stack(reference), || read_stack(sample));
    let (mut r, mut s) = (r?, s?);
    crate::stack::validate_pair(r.view(), s.view())?;
    let dark = dark.map(read_image).transpose()?;
    let flat = flat.map(read_image).transpose()?;
    for stack in [&mut r, &mut s] {
        crate::stack::correct(
            stack,
            dark.as_ref().map(|d| d.view()),
            flat.as_ref().map(|f| f.view()),
        )?;
    }
    Ok((r, s))
}

/// A rank-2 image or rank-3 stack as `[N, H, W]` in standard layout.
fn into_stack(path: &Path, a: ndarray::ArrayD<f32>, what: &str) -> Result<Array3<f32>> {
    let a = match a.ndim() {
        2 => a.insert_axis(Axis(0)),
        3 => a,
        n => {
            return Err(Error::format(
                path,
                format!("{what} has rank {n}, expected [N, H, W] or [H, W]"),
            ));
        }
    };
    let a = a
        .into_dimensionality::<ndarray::Ix3>()
        .expect("rank checked");
    // Not copied when it already is (`as_standard_layout` would borrow, then copy).
    Ok(if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    })
}

/// Writes a stack `[N, H, W]` as float32 (TIFF: N pages).
pub fn write_stack(spec: &str, data: ArrayView3<f32>) -> Result<()> {
    let loc = Location::parse(spec)?;
    match loc.format {
        Format::Tiff => write_atomically(&loc.path, |tmp| tiff::write(tmp, data)),
        Format::Npy => write_atomically(&loc.path, |tmp| npy::write(tmp, data)),
        Format::Hdf5 => hdf5_write(&loc, data),
    }
}

/// Writes one image `[H, W]` as float32.
pub fn write_image(spec: &str, data: &Array2<f32>) -> Result<()> {
    let loc = Location::parse(spec)?;
    let view = data.view().insert_axis(Axis(0));
    match loc.format {
        // One 2-D image, not a 1-frame stack, for .npy and HDF5 readers.
        Format::Npy => write_atomically(&loc.path, |tmp| npy::write(tmp, data.view())),
        Format::Hdf5 => hdf5_write(&loc, data.view()),
        Format::Tiff => write_atomically(&loc.path, |tmp| tiff::write(tmp, view)),
    }
}

#[cfg(feature = "hdf5")]
fn hdf5_read(loc: &Location) -> Result<Array3<f32>> {
    hdf5::read(&loc.path, loc.dataset.as_deref().unwrap_or_default(), None)
}

/// Entry `index` (`[N, H, W]`) of a rank-4 HDF5 dataset `[angles, N, H, W]`.
#[cfg(feature = "hdf5")]
pub fn read_entry(loc: &Location, index: usize) -> Result<Array3<f32>> {
    hdf5::read(
        &loc.path,
        loc.dataset.as_deref().unwrap_or_default(),
        Some(index as u64),
    )
}

/// A one-element string dataset of an HDF5 file (a NeXus text field).
#[cfg(feature = "hdf5")]
pub fn hdf5_text(loc: &Location) -> Result<String> {
    hdf5::text(&loc.path, loc.dataset.as_deref().unwrap_or_default())
}

/// An HDF5 dataset's dimensions; `None` if the file has no such dataset.
#[cfg(feature = "hdf5")]
pub fn hdf5_shape(loc: &Location) -> Result<Option<Vec<u64>>> {
    if !loc.path.is_file() {
        return Err(Error::io(
            &loc.path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    hdf5::shape(&loc.path, loc.dataset.as_deref().unwrap_or_default())
}

#[cfg(feature = "hdf5")]
fn hdf5_write<D: ndarray::Dimension>(
    loc: &Location,
    data: ndarray::ArrayView<f32, D>,
) -> Result<()> {
    hdf5::write_many(
        &loc.path,
        &[(loc.dataset.as_deref().unwrap_or_default(), data.into_dyn())],
        &[],
    )
}

/// Writes several float32 arrays and texts into one new `.npz` archive, replacing `path`
/// atomically.
pub fn write_npz(
    path: &Path,
    arrays: &[(&str, ndarray::ArrayViewD<f32>)],
    texts: &[(&str, &str)],
) -> Result<()> {
    npy::write_npz(path, arrays, texts)
}

/// Writes several float32 datasets and string attributes (on the root group) into one new
/// HDF5 file, replacing `path` atomically.
#[cfg(feature = "hdf5")]
pub fn write_hdf5(
    path: &Path,
    datasets: &[(&str, ndarray::ArrayViewD<f32>)],
    attributes: &[(&str, &str)],
) -> Result<()> {
    hdf5::write_many(path, datasets, attributes)
}

#[cfg(not(feature = "hdf5"))]
fn hdf5_read(loc: &Location) -> Result<Array3<f32>> {
    Err(Error::format(
        &loc.path,
        "this build has no HDF5 support (feature 'hdf5')",
    ))
}

#[cfg(not(feature = "hdf5"))]
pub fn write_hdf5(
    path: &Path,
    _: &[(&str, ndarray::ArrayViewD<f32>)],
    _: &[(&str, &str)],
) -> Result<()> {
    Err(Error::format(
        path,
        "this build has no HDF5 support (feature 'hdf5')",
    ))
}

#[cfg(not(feature = "hdf5"))]
fn hdf5_write<D: ndarray::Dimension>(loc: &Location, _: ndarray::ArrayView<f32, D>) -> Result<()> {
    Err(Error::format(
        &loc.path,
        "this build has no HDF5 support (feature 'hdf5')",
    ))
}

/// Bytes any file may decode to, whatever its size (small compressed images).
const MIN_BUDGET: u64 = 64 << 20;
/// How many times its size a file's compressed parts may expand: detector data compress a
/// few times; more is a decompression bomb or a header that lies.
pub const MAX_EXPANSION: u64 = 256;

/// What a file's headers may claim before anything is allocated: uncompressed pixel data
/// must lie inside the file, compressed data may expand [`MAX_EXPANSION`] times.
struct Budget<'a> {
    path: &'a Path,
    /// Bytes the file (or an HDF5 dataset) stores.
    file_len: u64,
    raw: u64,
    decoded: u64,
}

impl<'a> Budget<'a> {
    fn new(path: &'a Path, file_len: u64) -> Self {
        Budget {
            path,
            file_len,
            raw: 0,
            decoded: 0,
        }
    }

    /// Accepts `bytes` more (`None`: the header's size overflows) of `what`, or refuses them.
    fn claim(&mut self, bytes: Option<u64>, compressed: bool, what: &str) -> Result<u64> {
        let refuse = |why: String| Err(Error::format(self.path, format!("{what}: {why}")));
        let Some(bytes) = bytes else {
            return refuse("its size overflows (a damaged or hostile header)".into());
        };
        let (total, cap) = if compressed {
            let cap = self.file_len.saturating_mul(MAX_EXPANSION).max(MIN_BUDGET);
            (&mut self.decoded, cap)
        } else {
            (&mut self.raw, self.file_len)
        };
        *total = total.saturating_add(bytes);
        if *total > cap {
            return refuse(if compressed {
                format!(
                    "{} bytes stored would decompress to more than {MAX_EXPANSION} times \
                     that (a damaged file, unwritten data or a decompression bomb)",
                    self.file_len
                )
            } else {
                format!(
                    "the header claims {} bytes of data in all, more than the file holds \
                     ({} bytes): a truncated or damaged file",
                    *total, self.file_len
                )
            });
        }
        Ok(bytes)
    }
}

/// Fails if `path` exists, so that nothing the user has is overwritten silently.
pub fn refuse_existing(path: &Path) -> Result<()> {
    if path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
        ));
    }
    Ok(())
}
