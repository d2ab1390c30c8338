//! Input stacks `[N, H, W]` (scan, row, column): validation, dark/flat correction and
//! scan-count scaling to the network's fixed frame count.

use ndarray::{Array3, ArrayView2, ArrayView3, Axis, Zip, s};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a stack of N scans is brought to a fixed count Nnet when N < Nnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanScaling {
    /// Each output frame repeats the nearest input frame (best in the ESPINNet ablation).
    #[default]
    Nearest,
    /// Linear interpolation between the two neighbouring input frames.
    Linear,
}

impl std::fmt::Display for ScanScaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Nearest => "nearest",
            Self::Linear => "linear",
        })
    }
}

impl std::str::FromStr for ScanScaling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nearest" => Ok(Self::Nearest),
            "linear" => Ok(Self::Linear),
            _ => Err(Error::invalid(format!(
                "scan scaling must be 'nearest' or 'linear', got '{s}'"
            ))),
        }
    }
}

/// Checks one stack: at least one frame, non-empty frames, a size that fits in memory
/// arithmetic, only finite values. `name` is used in the error message.
pub fn validate_stack(name: &str, stack: ArrayView3<f32>) -> Result<()> {
    check_size(name, stack)?;
    check_finite(name, stack)
}

fn check_size(name: &str, stack: ArrayView3<f32>) -> Result<()> {
    let (n, h, w) = stack.dim();
    if n == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "{name} is empty: {n} frame(s) of {h}x{w} pixels (need at least 1 frame of 1x1)"
        )));
    }
    n.checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .and_then(|v| v.checked_mul(size_of::<f32>()))
        .filter(|&bytes| bytes <= isize::MAX as usize)
        .ok_or_else(|| Error::invalid(format!("{name} size {n}x{h}x{w} overflows")))?;
    Ok(())
}

/// Fails with [`Error::NonFinite`] naming the first offending index.
pub fn check_finite(name: &str, stack: ArrayView3<f32>) -> Result<()> {
    use ndarray::parallel::prelude::*;
    let count: usize = stack
        .axis_iter(Axis(0))
        .into_par_iter()
        .map(|frame| frame.iter().filter(|v| !v.is_finite()).count())
        .sum();
    if count == 0 {
        return Ok(());
    }
    let (first, _) = stack
        .indexed_iter()
        .find(|(_, v)| !v.is_finite())
        .expect("counted above");
    Err(Error::NonFinite {
        input: name.to_string(),
        count,
        first: vec![first.0, first.1, first.2],
    })
}

/// Checks both stacks and that they agree in N, H and W.
pub fn validate_pair(reference: ArrayView3<f32>, sample: ArrayView3<f32>) -> Result<()> {
    let names = ["reference stack", "sample stack"];
    let mut summaries = Vec::with_capacity(2);
    for (name, stack) in names.into_iter().zip([reference, sample]) {
        check_size(name, stack)?;
        let Some(summary) = Summary::of(stack) else {
            return check_finite(name, stack);
        };
        summaries.push(summary);
    }
    if reference.dim() != sample.dim() {
        let d = |a: ArrayView3<f32>| a.shape().to_vec();
        return Err(Error::ShapeMismatch {
            what: "sample stack [N, H, W] must equal the reference stack's".into(),
            expected: d(reference),
            got: d(sample),
        });
    }
    // Nothing to measure: an OK full of NaN, or shifts invented from noise, would mislead.
    for (name, Summary { lo, hi, mean, .. }) in names.into_iter().zip(summaries) {
        // Below this, 1/mean and the normalised sums leave the range of f32.
        if mean.abs() < 1e-30 {
            return Err(Error::invalid(format!(
                "the {name}'s mean intensity is {mean:e}: all zero or denormal, nothing to measure"
            )));
        }
        if f64::from(hi - lo) <= 1e-6 * mean.abs() {
            return Err(Error::invalid(format!(
                "the {name} is constant ({lo}): it holds no pattern to measure"
            )));
        }
    }
    Ok(())
}

/// What validation needs of a stack, in one pass (stacks are often most of the machine's
/// memory): the range and mean of its values.
struct Summary {
    lo: f32,
    hi: f32,
    mean: f64,
}

impl Summary {
    /// None where a value is not finite (finite values cannot overflow the f64 sum).
    fn of(stack: ArrayView3<f32>) -> Option<Self> {
        use ndarray::parallel::prelude::*;
        let frames: Vec<Lanes> = stack
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(Lanes::of)
            .collect();
        let sum: f64 = frames.iter().map(Lanes::sum).sum();
        if !sum.is_finite() {
            return None;
        }
        let fold = |f: fn(f32, f32) -> f32, pick: fn(&Lanes) -> &[f32; LANES], start| {
            frames.iter().flat_map(pick).fold(start, |a, &b| f(a, b))
        };
        Some(Summary {
            lo: fold(f32::min, |l| &l.lo, f32::INFINITY),
            hi: fold(f32::max, |l| &l.hi, f32::NEG_INFINITY),
            // Frames added in order, as [`mean_intensity`] adds them: the mean checked here
            // is then the one the engines divide by, even where large values cancel.
            mean: sum / stack.len() as f64,
        })
    }
}

/// Values a frame's sum, minimum and maximum are taken in side by side: one running sum
/// is a chain of dependent additions, which took 4× as long over a 2048² × 20 stack.
const LANES: usize = 8;

/// A frame's sum (f64), minimum and maximum over its values in [`LANES`] interleaved
/// parts (value i in part i mod [`LANES`]), whatever its memory layout. Non-finite values
/// make the sum non-finite.
struct Lanes {
    sum: [f64; LANES],
    lo: [f32; LANES],
    hi: [f32; LANES],
}

impl Lanes {
    fn of(frame: ArrayView2<f32>) -> Self {
        let (mut sum, mut lo, mut hi) = (
            [0.0f64; LANES],
            [f32::INFINITY; LANES],
            [f32::NEG_INFINITY; LANES],
        );
        let mut add = |values: &[f32]| {
            for (k, &v) in values.iter().enumerate() {
                sum[k] += f64::from(v);
                lo[k] = lo[k].min(v);
                hi[k] = hi[k].max(v);
            }
        };
        // A view's frame may not be one slice: its values are then copied, in order.
        let copy: Vec<f32>;
        let values = match frame.as_slice() {
            Some(values) => values,
            None => {
                copy = frame.iter().copied().collect();
                &copy
            }
        };
        let chunks = values.chunks_exact(LANES);
        let rest = chunks.remainder();
        chunks.for_each(&mut add);
        add(rest);
        Lanes { sum, lo, hi }
    }

    fn sum(&self) -> f64 {
        self.sum.iter().sum()
    }
}

/// Mean intensity of a stack, accumulated in f64. Both engines divide their inputs by the
/// reference's; an f32 sum over a few million pixels is already off by ~1e-3 (measured on
/// 256²×25: 2005.33 against 2002.65).
///
/// Frames are summed in parallel and their sums added in order, so the result does not
/// depend on the thread count.
pub fn mean_intensity(stack: ArrayView3<f32>) -> f64 {
    use ndarray::parallel::prelude::*;
    let frames: Vec<f64> = stack
        .axis_iter(Axis(0))
        .into_par_iter()
        .map(|frame| Lanes::of(frame).sum())
        .collect();
    frames.iter().sum::<f64>() / stack.len().max(1) as f64
}

/// Dark subtraction and flat division in place: `I ← (I − dark) / (flat − dark)`.
///
/// `dark` and `flat` are single `[H, W]` frames (averages of their own series); either may
/// be omitted. Flat pixels with `flat − dark ≤ 0` are an error: they would make the
/// corrected stack infinite.
pub fn correct(
    stack: &mut Array3<f32>,
    dark: Option<ArrayView2<f32>>,
    flat: Option<ArrayView2<f32>>,
) -> Result<()> {
    let (_, h, w) = stack.dim();
    for (name, frame) in [("dark frame", dark), ("flat frame", flat)] {
        if let Some(f) = frame {
            if f.dim() != (h, w) {
                return Err(Error::ShapeMismatch {
                    what: format!("{name} [H, W] must match the stack's frames"),
                    expected: vec![h, w],
                    got: f.shape().to_vec(),
                });
            }
            check_finite(name, f.insert_axis(Axis(0)))?;
        }
    }
    if dark.is_none() && flat.is_none() {
        return Ok(());
    }
    let zeros;
    let dark = match dark {
        Some(d) => d,
        None => {
            zeros = ndarray::Array2::<f32>::zeros((h, w));
            zeros.view()
        }
    };
    if let Some(flat) = flat {
        let gain = Zip::from(&flat).and(&dark).map_collect(|&f, &d| f - d);
        let bad = gain.iter().filter(|&&g| g <= 0.0).count();
        if bad > 0 {
            return Err(Error::invalid(format!(
                "flat frame minus dark is <= 0 at {bad} pixel(s): cannot divide by it"
            )));
        }
        for mut frame in stack.outer_iter_mut() {
            Zip::from(&mut frame)
                .and(&dark)
                .and(&gain)
                .for_each(|v, &d, &g| *v = (*v - d) / g);
        }
    } else {
        for mut frame in stack.outer_iter_mut() {
            frame -= &dark;
        }
    }
    Ok(())
}

/// How each of `n_target` output frames is made from a scan of `n` frames: output frame j
/// is `(1 − f)·frame[i0] + f·frame[i1]`, returned as `(i0, i1, f)`.
///
/// N ≥ n_target keeps the first `n_target` frames (the smallest scan steps). N < n_target
/// stretches along the scan axis only: output frame j sits at input position
/// `t = j·(N−1)/(n_target−1)`, so the first and last frames are kept, and takes the nearest
/// frame or interpolates linearly. A single frame is repeated.
pub fn scan_weights(
    n: usize,
    n_target: usize,
    scaling: ScanScaling,
) -> Result<Vec<(usize, usize, f32)>> {
    if n_target == 0 {
        return Err(Error::invalid("target scan count must be >= 1"));
    }
    if n == 0 {
        return Err(Error::invalid("cannot scale an empty stack"));
    }
    if n >= n_target {
        return Ok((0..n_target).map(|j| (j, j, 0.0)).collect());
    }
    Ok((0..n_target)
        .map(|j| {
            let t = if n_target == 1 {
                0.0
            } else {
                j as f64 * (n - 1) as f64 / (n_target - 1) as f64
            };
            match scaling {
                // Halves round away from the first frame: a tie goes to the later scan.
                ScanScaling::Nearest => {
                    let i = ((t + 0.5).floor() as usize).min(n - 1);
                    (i, i, 0.0)
                }
                ScanScaling::Linear => {
                    let i0 = (t.floor() as usize).min(n - 1);
                    (i0, (i0 + 1).min(n - 1), (t - i0 as f64) as f32)
                }
            }
        })
        .collect())
}

/// Brings a stack of N frames to exactly `n_target` frames, as [`scan_weights`] says.
pub fn scale_scans(
    stack: ArrayView3<f32>,
    n_target: usize,
    scaling: ScanScaling,
) -> Result<Array3<f32>> {
    let (n, h, w) = stack.dim();
    let weights = scan_weights(n, n_target, scaling)?;
    if n >= n_target {
        return Ok(stack.slice(s![..n_target, .., ..]).to_owned());
    }
    let mut out = Array3::<f32>::zeros((n_target, h, w));
    for (mut frame, &(i0, i1, f)) in out.outer_iter_mut().zip(&weights) {
        Zip::from(&mut frame)
            .and(&stack.index_axis(Axis(0), i0))
            .and(&stack.index_axis(Axis(0), i1))
            .for_each(|o, &a, &b| *o = a + f * (b - a));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    /// Frame i is filled with the value i.
    fn ramp(n: usize) -> Array3<f32> {
        Array3::from_shape_fn((n, 2, 3), |(i, _, _)| i as f32)
    }

    fn frame_values(a: &Array3<f32>) -> Vec<f32> {
        a.outer_iter().map(|f| f[[1, 2]]).collect()
    }

    #[test]
    fn truncates_to_first_frames() {
        let out = scale_scans(ramp(25).view(), 20, ScanScaling::Linear).unwrap();
        assert_eq!(
            frame_values(&out),
            (0..20).map(|i| i as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn stretches_nearest_and_linear() {
        // 3 frames to 5: positions 0, 0.5, 1, 1.5, 2.
        let near = scale_scans(ramp(3).view(), 5, ScanScaling::Nearest).unwrap();
        assert_eq!(frame_values(&near), vec![0.0, 1.0, 1.0, 2.0, 2.0]);
        let lin = scale_scans(ramp(3).view(), 5, ScanScaling::Linear).unwrap();
        assert_eq!(frame_values(&lin), vec![0.0, 0.5, 1.0, 1.5, 2.0]);
        // 2 frames to 20 keeps both ends.
        let lin = scale_scans(ramp(2).view(), 20, ScanScaling::Linear).unwrap();
        let v = frame_values(&lin);
        assert_eq!((v[0], v[19]), (0.0, 1.0));
        assert!((v[1] - 1.0 / 19.0).abs() < 1e-6);
        // one frame is repeated
        let one = scale_scans(ramp(1).view(), 4, ScanScaling::Nearest).unwrap();
        assert_eq!(frame_values(&one), vec![0.0; 4]);
    }

    #[test]
    fn validation_names_the_problem() {
        let r = ramp(3);
        let mut s = ramp(3);
        assert!(validate_pair(r.view(), s.view()).is_ok());
        s[[2, 1, 0]] = f32::NAN;
        let e = validate_pair(r.view(), s.view()).unwrap_err().to_string();
        assert!(e.contains("sample stack") && e.contains("[2, 1, 0]"), "{e}");
        let e = validate_pair(r.view(), ramp(4).view())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shape mismatch") && e.contains("[4, 2, 3]"),
            "{e}"
        );
        let empty = Array3::<f32>::zeros((0, 2, 3));
        let e = validate_stack("reference stack", empty.view())
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn dark_and_flat() {
        let mut st = Array3::from_elem((2, 1, 2), 10.0f32);
        let dark = array![[2.0f32, 4.0]];
        let flat = array![[6.0f32, 8.0]];
        correct(&mut st, Some(dark.view()), Some(flat.view())).unwrap();
        assert_eq!(st.index_axis(Axis(0), 1), array![[2.0f32, 1.5]]);
        let mut st = Array3::from_elem((1, 1, 2), 10.0f32);
        correct(&mut st, Some(dark.view()), None).unwrap();
        assert_eq!(st.index_axis(Axis(0), 0), array![[8.0f32, 6.0]]);
        let bad_flat = array![[6.0f32, 4.0]];
        let e = correct(&mut st, Some(dark.view()), Some(bad_flat.view())).unwrap_err();
        assert!(e.to_string().contains("1 pixel"), "{e}");
        let e = correct(&mut st, Some(Array2::zeros((2, 2)).view()), None).unwrap_err();
        assert!(e.to_string().contains("dark frame"), "{e}");
    }
}
