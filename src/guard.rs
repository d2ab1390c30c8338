//! The network's guard: where the signal model says the network's estimate is wrong, the
//! tracker solves the pixel again ([`tracking::resolve`]).
//!
//! A pixel is suspect where its residual is over [`SUSPECT`]× the median residual: a good
//! fit's residual is the local noise, which varies little across an image once it is in
//! units of the photon noise (the relative residual × √S̄), while a fit a pixel or more
//! off leaves the pattern unexplained (on the stress suite, gross errors sit at 2–20× the
//! median, 90 % of them above 2.3×).

use ndarray::{Array2, ArrayView3, Zip};

use crate::model::{Contrasts, Fit, Illumination};
use crate::tracking::{self, Params};

/// Residual (in units of the photon noise) over this many times the median marks a suspect
/// pixel.
const SUSPECT: f32 = 2.0;
/// Shifts (px, per axis) the guard may reach: beyond the tracker's default search, as the
/// network's estimate is its start.
const MAX_SHIFT_PX: usize = 24;

/// The tracker's settings for the guard's fits on `n` frames: a window of at least 45
/// values (Nw = 1 from N = 5, 2 below), as the fit that judges the network's estimate and
/// the new one needs enough of them; and a reach beyond the tracker's default search, as
/// the network's estimate is the start.
fn params(tracking: &Params, n: usize) -> Params {
    let window = (1..)
        .find(|&k| n * (2 * k + 1) * (2 * k + 1) >= 45)
        .unwrap_or(1);
    Params {
        max_shift: tracking.max_shift.max(MAX_SHIFT_PX),
        window: tracking.window.max(window),
        ..*tracking
    }
}

/// Peak memory of [`guard`] on stacks `[n, h, w]` (bytes): its residual and noise maps and
/// the tracker's re-solving.
pub(crate) fn memory_bytes(tracking: &Params, (n, h, w): (usize, usize, usize)) -> u64 {
    crate::memory::product(&[2, h, w, 4]).saturating_add(tracking::resolve_memory_bytes(
        &params(tracking, n),
        (n, h, w),
    ))
}

/// Re-solves the suspect pixels of `maps` (`[dx, dy, T, D]`) in place and returns their
/// residual map, the pixels changed, `[y, x]`, and the reference's illumination.
pub(crate) fn guard(
    reference: ArrayView3<f32>,
    sample: ArrayView3<f32>,
    tracking: &Params,
    [dx, dy, t, d]: [&mut Array2<f32>; 4],
) -> (Array2<f32>, Vec<[usize; 2]>, Illumination) {
    let mut residual = Array2::<f32>::zeros(dx.dim());
    let clock = std::time::Instant::now();
    let (solved, light) = {
        let estimate = Contrasts::new(dx, dy, t, d);
        let fit = Fit::new(reference, sample, estimate);
        // The residual in units of the photon noise: relative noise grows as 1/√S where
        // the sample absorbs, which alone put whole absorbing regions over the threshold.
        let mut noise = Array2::<f32>::zeros(dx.dim());
        fit.residual_and_mean_into(residual.view_mut(), noise.view_mut());
        Zip::from(&mut noise)
            .and(&residual)
            .par_for_each(|s, &r| *s = r * s.max(0.0).sqrt());
        log::debug!(
            "guard: residual map at {:.2} s",
            clock.elapsed().as_secs_f64()
        );
        let mut finite: Vec<f32> = noise.iter().copied().filter(|r| r.is_finite()).collect();
        if finite.is_empty() {
            return (residual, Vec::new(), fit.illumination().clone());
        }
        let mid = finite.len() / 2;
        let threshold = SUSPECT * *finite.select_nth_unstable_by(mid, f32::total_cmp).1;
        let suspects: Vec<(usize, usize)> = noise
            .indexed_iter()
            .filter(|&(_, &r)| r.is_nan() || r > threshold)
            .map(|(yx, _)| yx)
            .collect();
        drop(noise);
        let params = params(tracking, reference.dim().0);
        let solved = tracking::resolve(reference, sample, &params, &fit, &estimate, &suspects);
        log::debug!(
            "guard: {} suspect pixel(s) over {threshold:.4}, {} solved again",
            suspects.len(),
            solved.len()
        );
        (solved, fit.illumination().clone())
    };
    let mut changed = Vec::with_capacity(solved.len());
    for s in &solved {
        let at = [s.y, s.x];
        [dx[at], dy[at], t[at], d[at]] = s.estimate;
        residual[at] = s.residual;
        changed.push(at);
    }
    (residual, changed, light)
}
