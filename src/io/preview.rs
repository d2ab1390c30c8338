//! PNG previews for people: robust (percentile) scaling and perceptual colormaps.

use std::path::Path;

use image::{Rgb, RgbImage};
use ndarray::Array2;

use super::atomic::write_atomically;
use crate::error::{Error, Result};

/// How values map to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Viridis between the 1st and 99th percentile: intensities, T, D, phase.
    Sequential,
    /// Red–blue, symmetric about zero (±99th percentile of |v|): displacements, angles.
    Diverging,
    /// Grey between the 1st and 99th percentile: raw frames.
    Grey,
}

/// The `q`-quantile (0..1) of the finite values, or `None` if there are none.
fn quantile(sorted: &[f32], q: f64) -> Option<f32> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

/// Colours an image. Non-finite pixels are black.
pub fn render(data: &Array2<f32>, scale: Scale) -> RgbImage {
    let mut finite: Vec<f32> = data.iter().cloned().filter(|v| v.is_finite()).collect();
    finite.sort_unstable_by(f32::total_cmp);
    let (lo, hi) = match scale {
        Scale::Diverging => {
            let mut abs: Vec<f32> = finite.iter().map(|v| v.abs()).collect();
            abs.sort_unstable_by(f32::total_cmp);
            let m = quantile(&abs, 0.99).unwrap_or(1.0).max(f32::MIN_POSITIVE);
            (-m, m)
        }
        _ => (
            quantile(&finite, 0.01).unwrap_or(0.0),
            quantile(&finite, 0.99).unwrap_or(1.0),
        ),
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (h, w) = data.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let v = data[[y as usize, x as usize]];
        if !v.is_finite() {
            return Rgb([0, 0, 0]);
        }
        let t = ((v - lo) / span).clamp(0.0, 1.0) as f64;
        let c = match scale {
            Scale::Sequential => colorous::VIRIDIS.eval_continuous(t),
            // RdBu runs red → blue; flip so that positive is red.
            Scale::Diverging => colorous::RED_BLUE.eval_continuous(1.0 - t),
            Scale::Grey => colorous::GREYS.eval_continuous(1.0 - t),
        };
        Rgb([c.r, c.g, c.b])
    })
}

/// Writes one preview PNG.
pub fn write_png(path: &Path, data: &Array2<f32>, scale: Scale) -> Result<()> {
    save(path, &render(data, scale))
}

/// Writes a montage: panels left to right, `columns` per row, 4-pixel white gutters.
pub fn write_montage(path: &Path, panels: &[(&Array2<f32>, Scale)], columns: usize) -> Result<()> {
    let first = panels
        .first()
        .ok_or_else(|| Error::invalid("montage needs at least one panel"))?
        .0;
    let (h, w) = first.dim();
    if panels.iter().any(|(p, _)| p.dim() != (h, w)) {
        return Err(Error::invalid("montage panels must have one size"));
    }
    let cols = columns.clamp(1, panels.len());
    let rows = panels.len().div_ceil(cols);
    let gap = 4;
    let mut canvas = RgbImage::from_pixel(
        (cols * (w + gap) - gap) as u32,
        (rows * (h + gap) - gap) as u32,
        Rgb([255, 255, 255]),
    );
    for (i, (data, scale)) in panels.iter().enumerate() {
        let tile = render(data, *scale);
        let (ox, oy) = ((i % cols) * (w + gap), (i / cols) * (h + gap));
        image::imageops::replace(&mut canvas, &tile, ox as i64, oy as i64);
    }
    save(path, &canvas)
}

fn save(path: &Path, img: &RgbImage) -> Result<()> {
    write_atomically(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::format(path, format!("PNG write failed: {e}")))
    })
}
