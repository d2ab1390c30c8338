//! NumPy `.npy`: read any common numeric dtype of rank 2 or 3, write float32; `.npz`
//! archives of several float32 arrays and texts (the training shards of a build without
//! HDF5).

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::Path;

use ndarray::{Array3, ArrayBase, ArrayD, Data, Dimension};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};

/// Checks what the header claims against the file before the array is allocated: a shape
/// whose data the file does not hold is an error, not an allocation.
fn check_header(path: &Path) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::format(
            path,
            format!("not a readable .npy file: {why}"),
        ))
    };
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut prefix = [0u8; 12];
    if file.read_exact(&mut prefix[..10]).is_err() || &prefix[..6] != b"\x93NUMPY" {
        return bad("no .npy magic");
    }
    let (header_len, start) = match prefix[6] {
        1 => (u64::from(u16::from_le_bytes([prefix[8], prefix[9]])), 10),
        2 | 3 => {
            file.read_exact(&mut prefix[10..])
                .map_err(|e| Error::io(path, e))?;
            let n = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            (u64::from(n), 12)
        }
        v => return bad(&format!("format version {v} is unknown")),
    };
    if start + header_len > file_len || header_len > 1 << 20 {
        return bad(&format!("its header length {header_len} exceeds the file"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let header = String::from_utf8_lossy(&header);
    // {'descr': '<f4', 'fortran_order': False, 'shape': (3, 64, 64), }
    let item = header
        .split("'descr':")
        .nth(1)
        .and_then(|d| d.split('\'').nth(1))
        .and_then(|d| d.trim_start_matches(['<', '>', '|', '=']).get(1..))
        .and_then(|n| n.parse::<u64>().ok());
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .map(|dims| {
            dims.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| d.parse::<u64>().ok())
                .collect::<Option<Vec<_>>>()
        });
    // Headers this cannot parse are left to the full reader's own errors.
    if let (Some(item), Some(Some(shape))) = (item, shape) {
        let data = file_len - start - header_len;
        let claim = shape
            .iter()
            .try_fold(item, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= data);
        let Some(claim) = claim else {
            return bad(&format!(
                "its header claims shape {shape:?} of {item}-byte items, more than the \
                 {data} bytes of data the file holds"
            ));
        };
        // The array as stored, and as f32.
        let values = claim / item.max(1);
        crate::memory::ensure(
            claim.saturating_add(values.saturating_mul(4)),
            None,
            &format!("reading {}", path.display()),
        )?;
    }
    Ok(())
}

pub(super) fn read(path: &Path) -> Result<Array3<f32>> {
    check_header(path)?;
    // The dtype is in the header; try the types a detector or numpy commonly writes.
    fn try_read<T: ndarray_npy::ReadableElement>(
        path: &Path,
    ) -> std::result::Result<ArrayD<T>, ReadNpyError> {
        let file = File::open(path).map_err(ReadNpyError::Io)?;
        ArrayD::<T>::read_npy(file)
    }
    type Reader = fn(&Path) -> std::result::Result<ArrayD<f32>, ReadNpyError>;
    let readers: [Reader; 8] = [
        // As read: a copy would double the stack's memory while it is made.
        try_read::<f32>,
        |p| Ok(try_read::<f64>(p)?.mapv(|v| v as f32)),
        |p| Ok(try_read::<u16>(p)?.mapv(f32::from)),
        |p| Ok(try_read::<u8>(p)?.mapv(f32::from)),
        |p| Ok(try_read::<i16>(p)?.mapv(f32::from)),
        |p| Ok(try_read::<i32>(p)?.mapv(|v| v as f32)),
        |p| Ok(try_read::<u32>(p)?.mapv(|v| v as f32)),
        |p| Ok(try_read::<i64>(p)?.mapv(|v| v as f32)),
    ];
    let mut last = None;
    for r in readers {
        match r(path) {
            Ok(a) => return super::into_stack(path, a, "the array"),
            Err(ReadNpyError::WrongDescriptor(d)) => last = Some(format!("unsupported dtype {d}")),
            Err(ReadNpyError::Io(e)) => return Err(Error::io(path, e)),
            Err(e) => {
                // One line: the header parser's errors draw a diagram over several.
                let e = e.to_string();
                let e = e.split_whitespace().collect::<Vec<_>>().join(" ");
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

/// Writes float32 `arrays` and UTF-8 `texts` (as uint8 arrays: `bytes(a).decode()` in
/// NumPy) into one uncompressed `.npz` archive (`numpy.load` reads it), replacing `path`
/// atomically.
pub(super) fn write_npz(
    path: &Path,
    arrays: &[(&str, ndarray::ArrayViewD<f32>)],
    texts: &[(&str, &str)],
) -> Result<()> {
    super::atomic::write_atomically(path, |tmp| {
        let failed =
            |e: ndarray_npy::WriteNpzError| Error::format(path, format!(".npz write failed: {e}"));
        let file = File::create(tmp).map_err(|e| Error::io(path, e))?;
        let mut npz = ndarray_npy::NpzWriter::new(file);
        for (name, data) in arrays {
            npz.add_array(*name, data).map_err(failed)?;
        }
        for (name, text) in texts {
            npz.add_array(*name, &ndarray::aview1(text.as_bytes()))
                .map_err(failed)?;
        }
        npz.finish().map(drop).map_err(failed)
    })
}
