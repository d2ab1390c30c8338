//! Multi-page TIFF: read 8/16/32/64-bit integer and float greyscale pages (planar samples
//! as frames), within the file's [`super::Budget`]; write float32.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use ndarray::{Array3, ArrayView3};
use tiff::ColorType;
use tiff::decoder::{Decoder, DecodingResult, DecodingSampleType, Limits};
use tiff::encoder::{TiffEncoder, colortype::Gray32Float};
use tiff::tags::Tag;

use crate::error::{Error, Result};

pub(super) fn read(path: &Path) -> Result<Array3<f32>> {
    let fmt = |e: tiff::TiffError| Error::format(path, format!("not a readable TIFF: {e}"));
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut budget = super::Budget::new(path, file_len);
    let mut dec = Decoder::new(BufReader::new(file)).map_err(fmt)?;
    let (w, h) = dec.dimensions().map_err(fmt)?;
    let mut data = Vec::new();
    let mut buffer = DecodingResult::U8(Vec::new());
    let (mut page, mut frames) = (0usize, 0usize);
    loop {
        let dims = dec.dimensions().map_err(fmt)?;
        if dims != (w, h) {
            return Err(Error::format(
                path,
                format!(
                    "page {page} is {}x{}, page 0 is {w}x{h}: all pages must have one size",
                    dims.0, dims.1
                ),
            ));
        }
        // A page's samples are frames when stored planar (tifffile saves a (3, H, W) or
        // (4, H, W) stack as one such page); interleaved samples are a colour image.
        let tag = |dec: &mut Decoder<_>, t, default| {
            dec.find_tag_unsigned::<u64>(t)
                .map(|v| v.unwrap_or(default))
                .map_err(fmt)
        };
        let samples = tag(&mut dec, Tag::SamplesPerPixel, 1)?;
        if samples > 1 && tag(&mut dec, Tag::PlanarConfiguration, 1)? != 2 {
            return Err(Error::format(
                path,
                format!(
                    "page {page} interleaves {samples} samples per pixel (a colour image): \
                     save the frames as pages or planar samples (tifffile: \
                     photometric='minisblack')"
                ),
            ));
        }
        let bits = match dec.colortype().map_err(fmt)? {
            ColorType::Gray(b)
            | ColorType::GrayA(b)
            | ColorType::RGB(b)
            | ColorType::RGBA(b)
            | ColorType::CMYK(b)
            | ColorType::CMYKA(b)
            | ColorType::Lab(b)
            | ColorType::Multiband { bit_depth: b, .. } => b,
            other => {
                return Err(Error::format(
                    path,
                    format!("page {page} is a colour image ({other:?}), not greyscale frames"),
                ));
            }
        };
        let compressed = tag(&mut dec, Tag::Compression, 1)? != 1;
        let frame = u64::from(w) * u64::from(h);
        let claim = frame
            .checked_mul(samples)
            .and_then(|n| n.checked_mul(u64::from(bits).div_ceil(8)));
        let bytes = budget.claim(claim, compressed, &format!("page {page}"))?;
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        let mut limits = Limits::default();
        limits.decoding_buffer_size = bytes;
        limits.intermediate_buffer_size = limits.intermediate_buffer_size.max(bytes);
        dec = dec.with_limits(limits);
        // The page, as f32 at the end of the stack.
        let values = usize::try_from(frame * samples).unwrap_or(usize::MAX);
        crate::memory::ensure(bytes as u64, None, &format!("reading {}", path.display()))?;
        if data.capacity() - data.len() < values {
            // Uncompressed, the file bounds the page count: the whole stack in one
            // allocation. Grown page by page, two stacks read at once left 96 MiB of freed
            // buffers in glibc's per-thread heaps at 2 × 20 × 2048².
            let pages = (file_len / (bytes as u64).max(1)).max(1);
            let bound = usize::try_from(pages).map_or(usize::MAX, |p| p.saturating_mul(values));
            let whole = !compressed && data.try_reserve_exact(bound).is_ok();
            if !whole {
                data.try_reserve(values).map_err(|_| {
                    let bytes = (data.len() as u64)
                        .saturating_add(values as u64)
                        .saturating_mul(4);
                    crate::memory::refused(&format!("reading {}", path.display()), bytes)
                })?;
            }
        }
        let before = data.len();
        let layout = dec.image_buffer_layout().map_err(fmt)?;
        if layout.sample_type == Some(DecodingSampleType::F32) && layout.complete_len == values * 4
        {
            // Float pages are decoded straight into the stack.
            data.resize(before + values, 0.0);
            dec.read_image_bytes(bytemuck::cast_slice_mut(&mut data[before..]))
                .map_err(fmt)?;
        } else {
            dec.read_image_to_buffer(&mut buffer).map_err(fmt)?;
            match &buffer {
                DecodingResult::U8(v) => data.extend(v.iter().map(|&x| f32::from(x))),
                DecodingResult::U16(v) => data.extend(v.iter().map(|&x| f32::from(x))),
                DecodingResult::U32(v) => data.extend(v.iter().map(|&x| x as f32)),
                DecodingResult::I8(v) => data.extend(v.iter().map(|&x| f32::from(x))),
                DecodingResult::I16(v) => data.extend(v.iter().map(|&x| f32::from(x))),
                DecodingResult::I32(v) => data.extend(v.iter().map(|&x| x as f32)),
                DecodingResult::F32(v) => data.extend(v),
                DecodingResult::F64(v) => data.extend(v.iter().map(|&x| x as f32)),
                _ => {
                    return Err(Error::format(
                        path,
                        format!("page {page}: unsupported sample type"),
                    ));
                }
            }
        }
        if (data.len() - before) as u64 != frame * samples {
            return Err(Error::format(
                path,
                format!("page {page}: {samples} planes expected, not all could be read"),
            ));
        }
        page += 1;
        frames += samples as usize;
        if !dec.more_images() {
            break;
        }
        dec.next_image().map_err(fmt)?;
    }
    Array3::from_shape_vec((frames, h as usize, w as usize), data)
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
