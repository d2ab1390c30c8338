//! Multi-page TIFF: read 8/16/32/64-bit integer and float greyscale pages, write float32.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use ndarray::{Array3, ArrayView3};
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::encoder::{TiffEncoder, colortype::Gray32Float};

use crate::error::{Error, Result};

pub(super) fn read(path: &Path) -> Result<Array3<f32>> {
    let fmt = |e: tiff::TiffError| Error::format(path, format!("not a readable TIFF: {e}"));
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut dec = Decoder::new(BufReader::new(file))
        .map_err(fmt)?
        .with_limits(Limits::unlimited());
    let (w, h) = dec.dimensions().map_err(fmt)?;
    let mut data = Vec::new();
    let mut pages = 0usize;
    loop {
        let dims = dec.dimensions().map_err(fmt)?;
        if dims != (w, h) {
            return Err(Error::format(
                path,
                format!(
                    "page {pages} is {}x{}, page 0 is {w}x{h}: all pages must have one size",
                    dims.0, dims.1
                ),
            ));
        }
        let page = dec.read_image().map_err(fmt)?;
        let before = data.len();
        match page {
            DecodingResult::U8(v) => data.extend(v.into_iter().map(f32::from)),
            DecodingResult::U16(v) => data.extend(v.into_iter().map(f32::from)),
            DecodingResult::U32(v) => data.extend(v.into_iter().map(|x| x as f32)),
            DecodingResult::I8(v) => data.extend(v.into_iter().map(f32::from)),
            DecodingResult::I16(v) => data.extend(v.into_iter().map(f32::from)),
            DecodingResult::I32(v) => data.extend(v.into_iter().map(|x| x as f32)),
            DecodingResult::F32(v) => data.extend(v),
            DecodingResult::F64(v) => data.extend(v.into_iter().map(|x| x as f32)),
            _ => {
                return Err(Error::format(
                    path,
                    format!("page {pages}: unsupported sample type"),
                ));
            }
        }
        if data.len() - before != w as usize * h as usize {
            return Err(Error::format(
                path,
                format!("page {pages} is not single-channel greyscale"),
            ));
        }
        pages += 1;
        if !dec.more_images() {
            break;
        }
        dec.next_image().map_err(fmt)?;
    }
    Array3::from_shape_vec((pages, h as usize, w as usize), data)
        .map_err(|e| Error::format(path, e))
}

pub(super) fn write(path: &Path, data: ArrayView3<f32>) -> Result<()> {
    let (n, h, w) = data.dim();
    let err = |e: tiff::TiffError| Error::format(path, format!("TIFF write failed: {e}"));
    let to_u32 =
        |v: usize| u32::try_from(v).map_err(|_| Error::invalid("image too large for TIFF"));
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    // BigTIFF past 4 GB; classic TIFF otherwise, which every reader knows.
    let big = n * h * w * 4 > (u32::MAX as usize) - (1 << 20);
    let mut writer = BufWriter::new(file);
    macro_rules! pages {
        ($enc:expr) => {{
            let mut enc = $enc.map_err(err)?;
            for frame in data.outer_iter() {
                let frame = frame.as_standard_layout();
                enc.write_image::<Gray32Float>(
                    to_u32(w)?,
                    to_u32(h)?,
                    frame.as_slice().expect("contiguous"),
                )
                .map_err(err)?;
            }
        }};
    }
    if big {
        pages!(TiffEncoder::new_big(&mut writer))
    } else {
        pages!(TiffEncoder::new(&mut writer))
    }
    use std::io::Write;
    writer.flush().map_err(|e| Error::io(path, e))
}
