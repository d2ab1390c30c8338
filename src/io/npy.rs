//! NumPy `.npy`: read any common numeric dtype of rank 2 or 3, write float32.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use ndarray::{Array3, ArrayBase, ArrayD, Data, Dimension};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};

pub(super) fn read(path: &Path) -> Result<Array3<f32>> {
    // The dtype is in the header; try the types a detector or numpy commonly writes.
    fn try_read<T: ndarray_npy::ReadableElement + Copy>(
        path: &Path,
        cast: fn(T) -> f32,
    ) -> std::result::Result<ArrayD<f32>, ReadNpyError> {
        let file = File::open(path).map_err(ReadNpyError::Io)?;
        Ok(ArrayD::<T>::read_npy(file)?.mapv(cast))
    }
    type Reader = fn(&Path) -> std::result::Result<ArrayD<f32>, ReadNpyError>;
    let readers: [Reader; 8] = [
        |p| try_read::<f32>(p, |v| v),
        |p| try_read::<f64>(p, |v| v as f32),
        |p| try_read::<u16>(p, f32::from),
        |p| try_read::<u8>(p, f32::from),
        |p| try_read::<i16>(p, f32::from),
        |p| try_read::<i32>(p, |v| v as f32),
        |p| try_read::<u32>(p, |v| v as f32),
        |p| try_read::<i64>(p, |v| v as f32),
    ];
    let mut last = None;
    for r in readers {
        match r(path) {
            Ok(a) => return super::into_stack(path, a, "the array"),
            Err(ReadNpyError::WrongDescriptor(d)) => last = Some(format!("unsupported dtype {d}")),
            Err(ReadNpyError::Io(e)) => return Err(Error::io(path, e)),
            Err(e) => {
                return Err(Error::format(
                    path,
                    format!("not a readable .npy file: {e}"),
                ));
            }
        }
    }
    Err(Error::format(path, last.unwrap_or_default()))
}

pub(super) fn write<S: Data<Elem = f32>, D: Dimension>(
    path: &Path,
    data: ArrayBase<S, D>,
) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::new(file);
    data.write_npy(&mut w)
        .map_err(|e| Error::format(path, format!(".npy write failed: {e}")))?;
    use std::io::Write;
    w.flush().map_err(|e| Error::io(path, e))
}
