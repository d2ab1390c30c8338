//! CT series through the C ABI: a scan described by name/value settings, opened once, then
//! run — whole, or a share of its projections per call, so that several processes (the
//! workers of a Dask cluster) fill one journal and the last call writes the file.

use std::ffi::{c_char, c_void};

use super::guard::{self, ffi};
use super::{Callback, EspEngine, EspProgressFn, EspStatus, cstr, null};
use crate::series::{Plan, Series, Spec};

/// A scan's description. Create with [`esp_series_spec_new`], free with
/// [`esp_series_spec_free`].
pub struct EspSeriesSpec(Spec);

/// An opened scan (its reference stacks, dark frame and angles read and checked).
pub struct EspSeries(Series);

/// What [`esp_series_run`] did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EspSeriesReport {
    /// Projections in the scan.
    pub projections: usize,
    /// Of those this call was to do, found already in the journal.
    pub resumed: usize,
    pub computed: usize,
    /// 1 if the output file holds the whole scan (written by this call, or by an earlier
    /// run of the same scan and settings), else 0.
    pub written: i32,
}

/// A new, empty scan description; NULL only if memory ran out.
#[unsafe(no_mangle)]
pub extern "C" fn esp_series_spec_new() -> *mut EspSeriesSpec {
    guard::quiet(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(EspSeriesSpec(Spec::new(""))))
    })
}

/// Frees a scan description; NULL is accepted.
///
/// # Safety
/// `spec` is NULL or came from [`esp_series_spec_new`] and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn esp_series_spec_free(spec: *mut EspSeriesSpec) {
    if !spec.is_null() {
        // SAFETY: from Box::into_raw in esp_series_spec_new (caller's promise).
        guard::quiet((), || drop(unsafe { Box::from_raw(spec) }));
    }
}

/// Sets a field of the scan's description by name ("" restores an optional one's default):
///
/// - `projections`: `scan.h5:/exchange/data` (`[angles, N, H, W]`), or a directory of one
///   stack file per angle (`.tif`, `.tiff`, `.npy`, in name order);
/// - `reference` (default `/exchange/data_white` of the projections' file), `reference_end`
///   (a second reference taken after the scan, interpolated by angle), `dark` (default
///   `/exchange/data_dark` when present): stacks as files or `file.h5:/dataset`;
/// - `angles`: degrees, a dataset or file of one value per projection or `start:stop`
///   (default `/exchange/theta`);
/// - `air_columns`: px at each side where each projection's phase is set to zero (default
///   a sixteenth of the width; 0: zero-mean phase).
///
/// # Safety
/// `spec` came from [`esp_series_spec_new`]; `key` and `value` are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn esp_series_spec_set(
    spec: *mut EspSeriesSpec,
    key: *const c_char,
    value: *const c_char,
) -> EspStatus {
    ffi(|| {
        // SAFETY: the caller's promises above.
        let (spec, key, value) = unsafe {
            (
                spec.as_mut().ok_or_else(|| null("spec"))?,
                cstr(key, "key")?,
                cstr(value, "value")?,
            )
        };
        Ok(spec.0.set(key, value)?)
    })
}

/// Opens the scan `spec` describes into `*series` (set to NULL first): reads the reference
/// stack(s), the dark frame and the angles, and checks the projections' shape against them.
///
/// # Safety
/// `spec` came from [`esp_series_spec_new`]; `series` points to writable storage.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn esp_series_open(
    spec: *const EspSeriesSpec,
    series: *mut *mut EspSeries,
) -> EspStatus {
    ffi(|| {
        if series.is_null() {
            return Err(null("series"));
        }
        // SAFETY: writable and not NULL (caller's promise).
        unsafe { *series = std::ptr::null_mut() };
        // SAFETY: NULL or valid (caller's promise).
        let spec = unsafe { spec.as_ref() }.ok_or_else(|| null("spec"))?;
        let opened = EspSeries(Series::open(&spec.0)?);
        // SAFETY: as above.
        unsafe { *series = Box::into_raw(Box::new(opened)) };
        Ok(())
    })
}

/// The scan's dimensions into `dims`: angles, N, H, W.
///
/// # Safety
/// `series` came from [`esp_series_open`]; `dims` points to 4 writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn esp_series_dims(series: *const EspSeries, dims: *mut usize) -> EspStatus {
    ffi(|| {
        // SAFETY: the caller's promises above.
        let series = unsafe { series.as_ref() }.ok_or_else(|| null("series"))?;
        if dims.is_null() {
            return Err(null("dims"));
        }
        let (k, n, h, w) = series.0.dims();
        // SAFETY: 4 writable values (caller's promise).
        unsafe { std::ptr::copy_nonoverlapping([k, n, h, w].as_ptr(), dims, 4) };
        Ok(())
    })
}

/// Frees an opened scan; NULL is accepted.
///
/// # Safety
/// `series` is NULL or came from [`esp_series_open`] and is no longer in use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn esp_series_free(series: *mut EspSeries) {
    if !series.is_null() {
        // SAFETY: from Box::into_raw in esp_series_open (caller's promise).
        guard::quiet((), || drop(unsafe { Box::from_raw(series) }));
    }
}

/// Reconstructs projections `first .. first + count` (clamped to the scan; `count` =
/// `SIZE_MAX` for all from `first`) with `engine` into the journal of the NeXus file
/// `output` (`OUTPUT.journal/`), skipping those already there, then — unless
/// `journal_only` — writes `output` if the journal holds every projection, and removes
/// the journal. Interrupted (cancelled, killed), the same call resumes; finished, the same
/// call does nothing. Another existing `output` with no journal beside it is
/// `ESP_STATUS_IO` unless `overwrite`. `report`
/// (may be NULL) receives what the call did.
///
/// # Safety
/// `series` came from [`esp_series_open`], `engine` from `esp_engine_new`; `output` is a
/// NUL-terminated string; `progress`, if not NULL, is callable with `user_data` until this
/// call returns; `report` is NULL or writable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn esp_series_run(
    series: *const EspSeries,
    engine: *const EspEngine,
    output: *const c_char,
    first: usize,
    count: usize,
    journal_only: i32,
    overwrite: i32,
    progress: EspProgressFn,
    user_data: *mut c_void,
    report: *mut EspSeriesReport,
) -> EspStatus {
    ffi(|| {
        // SAFETY: the caller's promises above.
        let (series, engine, output) = unsafe {
            (
                series.as_ref().ok_or_else(|| null("series"))?,
                engine.as_ref().ok_or_else(|| null("engine"))?,
                cstr(output, "output")?,
            )
        };
        let k = series.0.dims().0;
        let start = first.min(k);
        let plan = Plan {
            only: Some(start..start.saturating_add(count).min(k)),
            journal_only: journal_only != 0,
            overwrite: overwrite != 0,
        };
        let callback = Callback::new(progress, user_data);
        let done = crate::series::run(
            &engine.0,
            &series.0,
            std::path::Path::new(output),
            &plan,
            &|f: f64| callback.report(f),
        )?;
        // SAFETY: NULL or writable (caller's promise).
        if let Some(r) = unsafe { report.as_mut() } {
            *r = EspSeriesReport {
                projections: done.projections,
                resumed: done.resumed,
                computed: done.computed,
                written: i32::from(done.written),
            };
        }
        Ok(())
    })
}
