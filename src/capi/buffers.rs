//! Caller-owned buffers made into array views, after checking everything a pointer and a
//! length can be checked for: NULL, alignment, dimensions, overflow and length.

use ndarray::{ArrayView3, ArrayViewMut2, ShapeBuilder};

use super::guard::Failure;
use super::{EspStack, invalid, null};

/// Product of dimensions, all ≥ 1, that fits in memory arithmetic.
pub(crate) fn checked_len(dims: &[usize]) -> Result<usize, Failure> {
    if dims.contains(&0) {
        return Err(invalid(format!("dimensions must be >= 1, got {dims:?}")));
    }
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&l| l <= isize::MAX as usize / size_of::<f32>())
        .ok_or_else(|| invalid(format!("dimensions {dims:?} overflow")))
}

fn aligned<T>(p: *const T, name: &str) -> Result<(), Failure> {
    if p.align_offset(align_of::<T>()) != 0 {
        return Err(invalid(format!(
            "'{name}' is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    Ok(())
}

/// Checks that `len` values of `T` (floats, or bytes for a status map) hold `need`.
fn holds<T>(len: usize, need: usize, name: &str) -> Result<(), Failure> {
    if len < need {
        let unit = if size_of::<T>() == 1 {
            "bytes"
        } else {
            "floats"
        };
        return Err(invalid(format!(
            "'{name}' holds {len} {unit}, needs {need}"
        )));
    }
    Ok(())
}

/// The stack a descriptor points to, `[n, height, width]`.
///
/// # Safety
/// `stack` is NULL or valid; its `data` points to `len` readable floats.
pub(crate) unsafe fn stack_view<'a>(
    stack: *const EspStack,
    name: &str,
) -> Result<ArrayView3<'a, f32>, Failure> {
    let st = unsafe { stack.as_ref() }.ok_or_else(|| null(name))?;
    if st.data.is_null() {
        return Err(Failure(
            super::EspStatus::NullArgument,
            format!("argument '{name}' has NULL data"),
        ));
    }
    aligned(st.data, name)?;
    let (n, h, w) = (st.n, st.height, st.width);
    let stride = if st.row_stride == 0 { w } else { st.row_stride };
    if stride < w {
        return Err(invalid(format!(
            "'{name}': row stride {stride} is smaller than the width {w}"
        )));
    }
    checked_len(&[n, h, stride])?;
    // The last pixel is at ((n·h − 1)·stride + w − 1).
    holds::<f32>(st.len, (n * h - 1) * stride + w, name)?;
    // SAFETY: the caller promises `len` readable floats at `data`, and every index of the
    // view is below the bound checked above.
    Ok(unsafe { ArrayView3::from_shape_ptr((n, h, w).strides((h * stride, stride, 1)), st.data) })
}

/// An `h × w` output view of `p`, or `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to `len` writable values that nothing else accesses during the
/// call.
pub(crate) unsafe fn out_view<'a, T>(
    p: *mut T,
    len: usize,
    (h, w): (usize, usize),
    name: &str,
) -> Result<Option<ArrayViewMut2<'a, T>>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    aligned(p, name)?;
    holds::<T>(len, h * w, name)?;
    // SAFETY: h·w ≤ len elements, checked above; the caller owns them for the call.
    Ok(Some(unsafe { ArrayViewMut2::from_shape_ptr((h, w), p) }))
}

/// An `h × w` read-only view of `p` (not NULL).
///
/// # Safety
/// `p` is NULL or points to `len` readable floats.
pub(crate) unsafe fn in_view<'a>(
    p: *const f32,
    len: usize,
    (h, w): (usize, usize),
    name: &str,
) -> Result<ndarray::ArrayView2<'a, f32>, Failure> {
    if p.is_null() {
        return Err(null(name));
    }
    aligned(p, name)?;
    holds::<f32>(len, h * w, name)?;
    // SAFETY: h·w ≤ len readable elements, checked above.
    Ok(unsafe { ndarray::ArrayView2::from_shape_ptr((h, w), p) })
}
