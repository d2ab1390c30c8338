//! HDF5 datasets: read any numeric dataset of rank 2 or 3 as f32, write float32 datasets
//! (parents created), replacing the file atomically.

use std::path::Path;

use hdf5_metno::types::VarLenUnicode;
use ndarray::{Array3, ArrayViewD};

use super::atomic::write_atomically;
use crate::error::{Error, Result};

fn h5err(path: &Path, what: &str) -> impl Fn(hdf5_metno::Error) -> Error {
    let (path, what) = (path.to_path_buf(), what.to_string());
    move |e| Error::format(&path, format!("{what}: {e}"))
}

pub(super) fn read(path: &Path, dataset: &str) -> Result<Array3<f32>> {
    let file = hdf5_metno::File::open(path).map_err(h5err(path, "not a readable HDF5 file"))?;
    let ds = file
        .dataset(dataset)
        .map_err(|_| Error::format(path, format!("no dataset '{dataset}' in this file")))?;
    // What the dataspace claims against what is stored, before anything is allocated.
    let shape = ds.shape();
    if !(2..=3).contains(&shape.len()) {
        return Err(Error::format(
            path,
            format!(
                "dataset '{dataset}' has rank {}, expected [N, H, W] or [H, W]",
                shape.len()
            ),
        ));
    }
    let item = ds.dtype().map(|t| t.size() as u64).unwrap_or(8);
    let claim = shape.iter().try_fold(item, |n, &d| n.checked_mul(d as u64));
    let bytes = super::Budget::new(path, ds.storage_size()).claim(
        claim,
        true,
        &format!("dataset '{dataset}' of shape {shape:?}"),
    )?;
    // The data as f32, and the library's buffer of them as stored.
    let values = bytes / item.max(1);
    crate::memory::ensure(
        values.saturating_mul(4).saturating_add(bytes),
        None,
        &format!("reading '{dataset}' of {}", path.display()),
    )?;
    let a = ds
        .read_dyn::<f32>()
        .map_err(h5err(path, &format!("cannot read '{dataset}' as numbers")))?;
    super::into_stack(path, a, &format!("dataset '{dataset}'"))
}

/// Writes the named float32 datasets (parents created) and string attributes on the root
/// into a new file at `path`; an existing file is replaced as a whole, atomically.
pub(crate) fn write_many(
    path: &Path,
    datasets: &[(&str, ArrayViewD<f32>)],
    attributes: &[(&str, &str)],
) -> Result<()> {
    write_atomically(path, |tmp| {
        let file = hdf5_metno::File::create(tmp).map_err(h5err(path, "cannot create HDF5 file"))?;
        for (name, data) in datasets {
            let data = data.as_standard_layout();
            file.new_dataset_builder()
                .with_data(&data)
                .create(*name)
                .map_err(h5err(path, &format!("cannot write dataset '{name}'")))?;
        }
        for (name, value) in attributes {
            let value: VarLenUnicode = value
                .parse()
                .map_err(|e| Error::format(path, format!("attribute '{name}': {e}")))?;
            file.new_attr::<VarLenUnicode>()
                .create(*name)
                .and_then(|a| a.write_scalar(&value))
                .map_err(h5err(path, &format!("cannot write attribute '{name}'")))?;
        }
        file.close().map_err(h5err(path, "cannot close HDF5 file"))
    })
}
