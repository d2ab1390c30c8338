//! Phase integration: the 2-D field φ whose gradient best matches measured (∂φ/∂x, ∂φ/∂y).
//!
//! Two methods, both free of the periodic-boundary artefacts of a plain FFT integrator:
//! - [`Method::FrankotChellappa`]: Fourier integration (Frankot & Chellappa, IEEE PAMI 10,
//!   439, 1988) of the antisymmetric mirror extension of the gradients (Bon et al., Opt.
//!   Express 20, 2012), spectrally exact for smooth fields;
//! - [`Method::LeastSquares`]: the discrete least-squares solution with Neumann boundary,
//!   solved exactly by DCT (Ghiglia & Romero, JOSA A 11, 107, 1994); robust to noise and
//!   to fields that are not smooth.
//!
//! Gradients are in units of φ per pixel (e.g. rad/px); the result is in units of φ with
//! zero mean (the piston is not measurable). Only the smallest rectangle holding every
//! finite gradient pixel is integrated (the tracker's NaN border would otherwise act as a
//! frame of zero slope and bend a field whose slope is not zero there); non-finite pixels
//! inside it take their finite neighbours' slope ([`Holes`]), and every non-finite pixel
//! comes back as NaN.

mod frankot_chellappa;
mod least_squares;

use ndarray::{Array2, ArrayView2, Zip};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::neighbourhood::four;

/// The integration method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Fourier integration of the mirror-extended gradient field.
    #[default]
    FrankotChellappa,
    /// DCT least squares, Neumann boundary.
    LeastSquares,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::FrankotChellappa => "frankot-chellappa",
            Self::LeastSquares => "least-squares",
        })
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "frankot-chellappa" | "fc" => Ok(Self::FrankotChellappa),
            "least-squares" | "dct" => Ok(Self::LeastSquares),
            _ => Err(Error::invalid(format!(
                "integration method must be 'frankot-chellappa' or 'least-squares', got '{s}'"
            ))),
        }
    }
}

/// Integrates the gradient field (`gx` = ∂φ/∂x along columns, `gy` = ∂φ/∂y along rows,
/// units of φ per pixel) into φ with zero mean.
pub fn integrate(gx: ArrayView2<f32>, gy: ArrayView2<f32>, method: Method) -> Result<Array2<f32>> {
    if gx.dim() != gy.dim() {
        return Err(Error::ShapeMismatch {
            what: "gradient y [H, W] must equal gradient x's".into(),
            expected: gx.shape().to_vec(),
            got: gy.shape().to_vec(),
        });
    }
    let (h, w) = gx.dim();
    if h < 2 || w < 2 {
        return Err(Error::invalid(format!(
            "gradient fields must be at least 2x2 pixels, got {h}x{w}"
        )));
    }
    crate::memory::ensure(
        memory_bytes((h, w), method),
        None,
        &format!("{method} integration of {h}x{w}"),
    )?;
    let valid = Zip::from(&gx)
        .and(&gy)
        .map_collect(|a, b| a.is_finite() && b.is_finite());
    let invalid = valid.iter().filter(|v| !**v).count();
    if invalid == h * w {
        return Err(Error::invalid("no finite gradient pixel to integrate"));
    }
    if invalid > 0 {
        log::info!(
            "integrate: {invalid} non-finite gradient pixel(s): given their neighbours' slope \
             inside the finite ones' rectangle, and NaN in the phase"
        );
    }
    // The bounding box of the finite pixels.
    let rows: Vec<usize> = (0..h)
        .filter(|&y| valid.row(y).iter().any(|&v| v))
        .collect();
    let cols: Vec<usize> = (0..w)
        .filter(|&x| valid.column(x).iter().any(|&v| v))
        .collect();
    let (y0, y1, x0, x1) = (
        rows[0],
        rows[rows.len() - 1] + 1,
        cols[0],
        cols[cols.len() - 1] + 1,
    );
    if y1 - y0 < 2 || x1 - x0 < 2 {
        return Err(Error::invalid(format!(
            "the finite gradient pixels span {}x{}: at least 2x2 are needed",
            y1 - y0,
            x1 - x0
        )));
    }
    let inner = ndarray::s![y0..y1, x0..x1];
    let (gx, gy) = {
        let holes = Holes::new(valid.slice(inner));
        let clean = |g: ArrayView2<f32>| {
            let mut g = Zip::from(g.slice(inner))
                .and(valid.slice(inner))
                .par_map_collect(|&v, &ok| if ok { v } else { 0.0 });
            holes.fill(&mut g);
            g
        };
        (clean(gx), clean(gy))
    };
    let inside = match method {
        Method::FrankotChellappa => frankot_chellappa::integrate(gx, gy),
        Method::LeastSquares => least_squares::integrate(&gx, &gy),
    };
    let mut phi = if (y1 - y0, x1 - x0) == (h, w) {
        inside
    } else {
        let mut full = Array2::from_elem((h, w), f32::NAN);
        full.slice_mut(inner).assign(&inside);
        full
    };
    let (sum, n) = Zip::from(&phi)
        .and(&valid)
        .fold((0.0, 0usize), |(s, n), &p, &ok| {
            if ok {
                (s + f64::from(p), n + 1)
            } else {
                (s, n)
            }
        });
    let mean = (sum / n as f64) as f32;
    Zip::from(&mut phi)
        .and(&valid)
        .par_for_each(|p, &ok| *p = if ok { *p - mean } else { f32::NAN });
    Ok(phi)
}

/// The non-finite pixels of a gradient field in the order they are filled: outwards from
/// the finite ones, each with the mean of its 4-neighbours filled before it (the finite
/// ones first). Zero slope there bent the field wherever it is not zero: with the pixels
/// the network cannot see at an edge left out (`network/field_of_view.rs`), the stress
/// suite's soft blobs on the mask at N = 20 had 0.0061 waves of phase error as zero slope,
/// 0.0013 as before them.
struct Holes {
    /// Each hole and the pass that fills it (finite pixels: pass 0).
    order: Vec<(usize, usize)>,
    pass: Array2<u32>,
}

impl Holes {
    fn new(valid: ArrayView2<bool>) -> Self {
        let (h, w) = valid.dim();
        let count = valid.iter().filter(|&&ok| !ok).count();
        if count == 0 {
            // The common case: no pass map, no scan for a front.
            return Holes {
                order: Vec::new(),
                pass: Array2::zeros((0, 0)),
            };
        }
        let mut pass = valid.mapv(|ok| if ok { 0 } else { u32::MAX });
        // Sized once: grown by doubling, it took up to twice the memory.
        let mut order = Vec::with_capacity(count);
        let mut front: Vec<(usize, usize)> = (pass.indexed_iter())
            .filter(|&(q, &p)| p == u32::MAX && four(q, (h, w)).any(|n| pass[n] == 0))
            .map(|(q, _)| q)
            .collect();
        let mut k = 1;
        while !front.is_empty() {
            for &q in &front {
                pass[q] = k;
            }
            order.extend_from_slice(&front);
            let mut next: Vec<(usize, usize)> = (front.iter())
                .flat_map(|&q| four(q, (h, w)))
                .filter(|&n| pass[n] == u32::MAX)
                .collect();
            next.sort_unstable();
            next.dedup();
            front = next;
            k += 1;
        }
        Holes { order, pass }
    }

    fn fill(&self, g: &mut Array2<f32>) {
        let dim = g.dim();
        for &q in &self.order {
            let (sum, n) = (four(q, dim))
                .filter(|&n| self.pass[n] < self.pass[q])
                .fold((0.0f32, 0u32), |(s, k), n| (s + g[n], k + 1));
            g[q] = sum / n as f32;
        }
    }
}

/// Peak heap of [`integrate`] on `[h, w]` gradients (bytes, an upper bound).
pub fn memory_bytes((h, w): (usize, usize), method: Method) -> u64 {
    // Per pixel: the caller's scaled gradients (8 B), their mask (1 B) and the cleaned
    // copies (8 B); while those are cleaned, the holes' passes and fill order (at most
    // 20 B); then the result embedded in the full frame when it was cropped (4 B) and for
    // Frankot–Chellappa two transient copies of one f32 array in a separable pass (8 B),
    // for least squares the gradients in f64 (16 B) and its right-hand side with two
    // transient copies (24 B).
    let cleaning = 20;
    let integrating = 4 + match method {
        Method::FrankotChellappa => 8,
        Method::LeastSquares => 40,
    };
    let per_px = 17 + integrating.max(cleaning);
    crate::memory::product(&[per_px, h, w])
}

/// Phase (rad, zero mean) from pattern displacements (px) and the geometry:
/// `∂φ/∂x = 2π·p²/(λ·z) · dx`, then [`integrate`].
pub fn phase_from_displacement(
    dx: ArrayView2<f32>,
    dy: ArrayView2<f32>,
    geometry: &crate::Geometry,
    method: Method,
) -> Result<Array2<f32>> {
    geometry.validate()?;
    let k = geometry.phase_gradient_per_px() as f32;
    integrate(dx.mapv(|d| d * k).view(), dy.mapv(|d| d * k).view(), method)
}
