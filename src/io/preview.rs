//! PNG previews for people: robust (percentile) scaling, perceptual colormaps and, in
//! montages, a title, a colour bar and its range under every panel.

use std::borrow::Cow;
use std::path::Path;

use image::{Rgb, RgbImage};
use ndarray::{Array2, s};
use rayon::prelude::*;

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
    /// The per-pixel status, 0–4, one colour each (Okabe and Ito's, told apart with any
    /// colour vision): measured light grey, the tracker's search edge orange and
    /// ill-conditioned fits purple, not measured black, re-solved by the guard blue.
    /// Reduced by the largest status in a block, so that a few pixels still show.
    Status,
}

/// The colours of [`Scale::Status`], by status.
const STATUS_COLOURS: [[u8; 3]; 5] = [
    [235, 235, 235],
    [230, 159, 0],
    [204, 121, 167],
    [0, 0, 0],
    [0, 114, 178],
];

/// Longest side of a preview image (px). A preview is for looking at; the full-resolution
/// maps are the files beside it. Larger images are reduced by an integer factor.
pub const PREVIEW_PX: usize = 512;

/// `data` reduced to at most [`PREVIEW_PX`] a side by means over square blocks (of their
/// finite values; NaN where a block has none; the largest for [`Scale::Status`]), and the
/// block side (px).
fn reduced(data: &Array2<f32>, scale: Scale) -> (Cow<'_, Array2<f32>>, usize) {
    let (h, w) = data.dim();
    let f = h.max(w).div_ceil(PREVIEW_PX).max(1);
    if f == 1 {
        return (Cow::Borrowed(data), 1);
    }
    let (rh, rw) = (h.div_ceil(f), w.div_ceil(f));
    let mut out = Array2::from_elem((rh, rw), f32::NAN);
    out.axis_iter_mut(ndarray::Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(y, mut row)| {
            for (x, v) in row.iter_mut().enumerate() {
                let block =
                    data.slice(s![y * f..((y + 1) * f).min(h), x * f..((x + 1) * f).min(w)]);
                if scale == Scale::Status {
                    *v = block.iter().copied().fold(f32::NAN, f32::max);
                    continue;
                }
                let (sum, n) = block
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold((0.0f64, 0usize), |(s, n), &v| (s + f64::from(v), n + 1));
                if n > 0 {
                    *v = (sum / n as f64) as f32;
                }
            }
        });
    (Cow::Owned(out), f)
}

/// The `q`-quantile (0..1) of `values` (finite), or `None` if there are none; reorders
/// them.
fn quantile(values: &mut [f32], q: f64) -> Option<f32> {
    let i = ((values.len().checked_sub(1)?) as f64 * q).round() as usize;
    Some(*values.select_nth_unstable_by(i, f32::total_cmp).1)
}

/// The value range a scale maps onto its colours: percentiles, symmetric for diverging.
fn range(data: &Array2<f32>, scale: Scale) -> (f32, f32) {
    let finite = data.iter().copied().filter(|v| v.is_finite());
    match scale {
        Scale::Status => (0.0, (STATUS_COLOURS.len() - 1) as f32),
        Scale::Diverging => {
            let mut abs: Vec<f32> = finite.map(f32::abs).collect();
            let m = quantile(&mut abs, 0.99)
                .unwrap_or(1.0)
                .max(f32::MIN_POSITIVE);
            (-m, m)
        }
        _ => {
            let mut finite: Vec<f32> = finite.collect();
            (
                quantile(&mut finite, 0.01).unwrap_or(0.0),
                quantile(&mut finite, 0.99).unwrap_or(1.0),
            )
        }
    }
}

/// The colour of `t` (0..1 along the scale).
fn colour(scale: Scale, t: f64) -> Rgb<u8> {
    let c = match scale {
        Scale::Sequential => colorous::VIRIDIS.eval_continuous(t),
        // RdBu runs red → blue; flip so that positive is red.
        Scale::Diverging => colorous::RED_BLUE.eval_continuous(1.0 - t),
        Scale::Grey => colorous::GREYS.eval_continuous(1.0 - t),
        Scale::Status => {
            // Five equal segments of the bar, status k at t = k/4.
            let n = STATUS_COLOURS.len();
            return Rgb(STATUS_COLOURS[((t * n as f64) as usize).min(n - 1)]);
        }
    };
    Rgb([c.r, c.g, c.b])
}

/// Colours an image. Non-finite pixels are black.
pub fn render(data: &Array2<f32>, scale: Scale) -> RgbImage {
    render_in(data, scale, range(data, scale))
}

fn render_in(data: &Array2<f32>, scale: Scale, (lo, hi): (f32, f32)) -> RgbImage {
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (h, w) = data.dim();
    let palette = Palette::new(scale);
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let v = data[[y as usize, x as usize]];
        if !v.is_finite() {
            return Rgb([0, 0, 0]);
        }
        palette.at((v - lo) / span)
    })
}

/// A scale's colours at [`LEVELS`] evenly spaced points: evaluating the colormap's spline
/// for every pixel was most of a montage's time (eight panels of 512²: 0.09 core-s).
/// Each colour is within one unit of a channel of the colormap's own.
struct Palette(Vec<Rgb<u8>>);

/// Levels of a [`Palette`].
const LEVELS: usize = 1024;

impl Palette {
    fn new(scale: Scale) -> Self {
        Palette(
            (0..LEVELS)
                .map(|i| colour(scale, i as f64 / (LEVELS - 1) as f64))
                .collect(),
        )
    }

    /// The colour of `t` (0..1 along the scale; clamped).
    fn at(&self, t: f32) -> Rgb<u8> {
        self.0[(t.clamp(0.0, 1.0) * (LEVELS - 1) as f32).round() as usize]
    }
}

/// Writes one preview PNG, reduced to at most [`PREVIEW_PX`] a side.
pub fn write_png(path: &Path, data: &Array2<f32>, scale: Scale) -> Result<()> {
    save(path, &render(&reduced(data, scale).0, scale))
}

/// One panel of a montage: an image, its colouring, and its title (with units).
pub struct Panel<'a> {
    pub data: &'a Array2<f32>,
    pub scale: Scale,
    pub title: String,
}

/// Montage geometry, px: glyphs are 8 × `text` px; under each image, its colour bar and
/// the bar's range.
struct Layout {
    text: u32,
    gap: u32,
    title: u32,
    bar: u32,
    caption: u32,
}

impl Layout {
    fn new(width: u32) -> Self {
        // Large glyphs where a title such as "refraction_x (rad)" still fits.
        let text = if width < 300 { 1 } else { 2 };
        Layout {
            text,
            gap: 8,
            title: 8 * text + 4,
            bar: 8 + 8 * text + 6,
            caption: 8 * text + 8,
        }
    }
}

/// Writes a montage: `caption` on top, then the panels (reduced to at most [`PREVIEW_PX`] a
/// side) left to right, `columns` per row, each titled, with a colour bar and its range (non-finite pixels are black); with the
/// pixel size at the sample (µm), a scale bar on the first panel.
pub fn write_montage(
    path: &Path,
    caption: &str,
    panels: &[Panel],
    columns: usize,
    pixel_um: Option<f64>,
) -> Result<()> {
    let first = panels
        .first()
        .ok_or_else(|| Error::invalid("montage needs at least one panel"))?;
    if panels.iter().any(|p| p.data.dim() != first.data.dim()) {
        return Err(Error::invalid("montage panels must have one size"));
    }
    let images: Vec<(Cow<Array2<f32>>, usize)> = panels
        .par_iter()
        .map(|p| reduced(p.data, p.scale))
        .collect();
    let (h, w) = images[0].0.dim();
    let (h, w) = (h as u32, w as u32);
    let pixel_um = pixel_um.map(|p| p * images[0].1 as f64);
    let l = Layout::new(w);
    let cols = columns.clamp(1, panels.len()) as u32;
    let rows = (panels.len() as u32).div_ceil(cols);
    let cell = l.title + h + l.bar;
    let mut canvas = RgbImage::from_pixel(
        cols * (w + l.gap) - l.gap,
        l.caption + rows * (cell + l.gap) - l.gap,
        Rgb([255, 255, 255]),
    );
    let width = canvas.width();
    let black = Rgb([0, 0, 0]);
    text(&mut canvas, caption, 0, 2, l.text, width, black);
    // Each panel's range and colours in parallel; then the canvas, in turn.
    let tiles: Vec<((f32, f32), RgbImage)> = panels
        .par_iter()
        .zip(&images)
        .map(|(p, (data, _))| {
            let range = range(data, p.scale);
            (range, render_in(data, p.scale, range))
        })
        .collect();
    for (i, (p, ((lo, hi), tile))) in panels.iter().zip(&tiles).enumerate() {
        let (ox, oy) = (
            (i as u32 % cols) * (w + l.gap),
            l.caption + (i as u32 / cols) * (cell + l.gap),
        );
        text(&mut canvas, &p.title, ox, oy, l.text, w, black);
        image::imageops::replace(&mut canvas, tile, ox as i64, (oy + l.title) as i64);
        let bar_y = oy + l.title + h + 2;
        let palette = Palette::new(p.scale);
        for x in 0..w {
            let c = palette.at(x as f32 / (w.max(2) - 1) as f32);
            for y in bar_y..bar_y + 8 {
                canvas.put_pixel(ox + x, y, c);
            }
        }
        if let (0, Some(p)) = (i, pixel_um.filter(|p| p.is_finite() && *p > 0.0)) {
            scale_bar(&mut canvas, p, (ox, oy + l.title), (w, h), l.text);
        }
        let (lo, hi) = (number(*lo), number(*hi));
        text(&mut canvas, &lo, ox, bar_y + 10, l.text, w / 2, black);
        let right = (hi.len() as u32 * 8 * l.text).min(w / 2);
        text(
            &mut canvas,
            &hi,
            ox + w - right,
            bar_y + 10,
            l.text,
            w / 2,
            black,
        );
    }
    save(path, &canvas)
}

/// A white bar of a round length (1, 2 or 5 × 10^k µm, about a fifth of the image) with
/// its length, in the lower left corner of the image at `origin`.
fn scale_bar(
    img: &mut RgbImage,
    pixel_um: f64,
    origin: (u32, u32),
    (w, h): (u32, u32),
    text_px: u32,
) {
    let target = f64::from(w) / 5.0 * pixel_um;
    let decade = 10f64.powf(target.log10().floor());
    let length_um = [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&l| l <= target)
        .unwrap_or(decade);
    let px = (length_um / pixel_um).round() as u32;
    let label = format!("{} um", number(length_um as f32));
    let (x0, y0) = (origin.0 + 6, origin.1 + h.saturating_sub(8 * text_px + 14));
    let label_w = label.len() as u32 * 8 * text_px;
    if px < 2 || px.max(label_w) + 12 > w || h < 8 * text_px + 14 {
        return;
    }
    for y in y0..y0 + 8 * text_px + 10 {
        for x in x0 - 3..x0 + px.max(label_w) + 3 {
            img.put_pixel(x, y, Rgb([0, 0, 0])); // a black backing, whatever the image
        }
    }
    for y in y0 + 8 * text_px + 3..y0 + 8 * text_px + 7 {
        for x in x0..x0 + px {
            img.put_pixel(x, y, Rgb([255, 255, 255]));
        }
    }
    text(
        img,
        &label,
        x0,
        y0 + 1,
        text_px,
        label_w,
        Rgb([255, 255, 255]),
    );
}

/// A bar end as short text: 0.123, 12.3, 1.23e-7.
fn number(v: f32) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-2..1e4).contains(&a) {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// Draws ASCII `s` at (x, y), glyphs 8 × `scale` px, cut to `max_width` px.
fn text(img: &mut RgbImage, s: &str, x: u32, y: u32, scale: u32, max_width: u32, ink: Rgb<u8>) {
    let fits = (max_width / (8 * scale)) as usize;
    for (k, ch) in s.chars().take(fits).enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY[if ch.is_ascii() {
            ch as usize
        } else {
            b'?' as usize
        }];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    for (dy, dx) in (0..scale).flat_map(|a| (0..scale).map(move |b| (a, b))) {
                        let (px, py) = (
                            x + (k as u32 * 8 + col) * scale + dx,
                            y + row as u32 * scale + dy,
                        );
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, ink);
                        }
                    }
                }
            }
        }
    }
}

fn save(path: &Path, img: &RgbImage) -> Result<()> {
    write_atomically(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::format(path, format!("PNG write failed: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_palette_is_within_one_unit_of_the_colormap() {
        for scale in [Scale::Sequential, Scale::Diverging, Scale::Grey] {
            let palette = Palette::new(scale);
            for i in 0..=10_000 {
                let t = i as f64 / 10_000.0;
                let (a, b) = (palette.at(t as f32), colour(scale, t));
                let off = (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap();
                assert!(off <= 1, "{scale:?} at {t}: {a:?} against {b:?}");
            }
            assert_eq!(palette.at(-1.0), colour(scale, 0.0));
            assert_eq!(palette.at(2.0), colour(scale, 1.0));
        }
    }

    /// Each status has its colour, also where a reduced image keeps a block's largest.
    #[test]
    fn every_status_has_its_colour() {
        let status = Array2::from_shape_fn((4, 1100), |(_, x)| (x % 5) as f32);
        let tile = render(&status, Scale::Status);
        for x in 0..5 {
            assert_eq!(
                tile.get_pixel(x, 0).0,
                STATUS_COLOURS[x as usize],
                "status {x}"
            );
        }
        // 1100 px wide: blocks of 3, whose largest status shows.
        let (small, f) = reduced(&status, Scale::Status);
        assert_eq!(f, 3);
        assert_eq!(small[(0, 0)], 2.0);
        assert_eq!(small[(0, 1)], 4.0);
    }
}
