//! CT series: every projection of a tomography scan through one [`Engine`], streamed (the
//! next projection is read while the current one is computed; memory does not grow with
//! the number of angles) and resumable (a [`journal`] of finished projections survives a
//! crash or a kill; the same call again finishes the scan).
//!
//! Input follows DXchange, which tomopy and dxchange users have: projections
//! `/exchange/data` as `[angles, N, H, W]` (N pattern images per angle: our extension of
//! DXchange's one image per angle), the reference stack `/exchange/data_white` `[N, H, W]`,
//! `/exchange/theta` (degrees) and `/exchange/data_dark` when present. Output: one NeXus
//! file with `[angles, H, W]` maps ([`output`]).

mod air;
mod journal;
mod output;
mod source;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array2, Array3, Axis};
use serde::Serialize;

pub use air::reference_to_air;
pub use source::Series;

use crate::engine::{Engine, MapsMut};
use crate::error::{Error, Result};
use crate::progress::Progress;
use journal::Journal;

/// Where a scan's data are. Each path is as [`crate::io::read_stack`] takes it
/// (`file.h5:/dataset`, `.tif`, `.npy`).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Spec {
    /// `scan.h5:/exchange/data` (`[angles, N, H, W]`; a bare `scan.h5` means that
    /// dataset), or a directory of one stack file per angle (`.tif`, `.tiff` or `.npy`, in
    /// name order).
    pub projections: String,
    /// The reference stack `[N, H, W]`; default: `/exchange/data_white` of the projections'
    /// HDF5 file.
    pub reference: Option<String>,
    /// A second reference stack taken after the scan: each projection's reference is then
    /// interpolated linearly by angle between the two (against drift).
    pub reference_end: Option<String>,
    /// Dark frames (`[H, W]`, or a stack that is averaged), subtracted from every stack;
    /// default: `/exchange/data_dark` of the projections' HDF5 file when it has one.
    pub dark: Option<String>,
    /// Angles (degrees): a dataset or file of one value per projection, or `start:stop`
    /// for evenly spaced angles with the end excluded; default: `/exchange/theta` of the
    /// projections' HDF5 file.
    pub angles: Option<String>,
    /// Columns (px) at each side of the field that the sample never enters: each
    /// projection's phase is set to zero there (offset and tilt; 0: zero mean instead;
    /// `None`: a sixteenth of the width).
    pub air_columns: Option<usize>,
}

impl Spec {
    /// Projections at `projections`, everything else by default.
    pub fn new(projections: impl Into<String>) -> Self {
        Spec {
            projections: projections.into(),
            reference: None,
            reference_end: None,
            dark: None,
            angles: None,
            air_columns: None,
        }
    }

    /// The names [`Spec::set`] takes.
    pub const KEYS: &str = "projections, reference, reference_end, dark, angles, air_columns";

    /// Sets a field by name from its text form, as the C ABI and the plugins pass them;
    /// an empty value restores an optional field's default.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let optional = || (!value.is_empty()).then(|| value.to_string());
        match key {
            "projections" => self.projections = value.into(),
            "reference" => self.reference = optional(),
            "reference_end" => self.reference_end = optional(),
            "dark" => self.dark = optional(),
            "angles" => self.angles = optional(),
            "air_columns" => {
                self.air_columns = optional()
                    .map(|v| {
                        v.parse().map_err(|_| {
                            Error::invalid(format!(
                                "air_columns must be a whole number of pixels, got '{v}'"
                            ))
                        })
                    })
                    .transpose()?;
            }
            _ => {
                return Err(Error::invalid(format!(
                    "unknown series setting '{key}' (one of: {})",
                    Self::KEYS
                )));
            }
        }
        Ok(())
    }
}

/// How much of a scan one [`run`] call does: all of it by default; a share of it when
/// several processes (a Dask cluster's workers) fill one journal.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Plan {
    /// Compute only these projections (`None`: every one).
    pub only: Option<std::ops::Range<usize>>,
    /// Do not write the output file, even if the journal is complete.
    pub journal_only: bool,
    /// Replace an existing output file that has no journal beside it.
    pub overwrite: bool,
}

/// What a [`run`] did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Report {
    pub projections: usize,
    /// Of the projections this call was to do, those found in the journal (of an earlier,
    /// interrupted run, or another worker's).
    pub resumed: usize,
    pub computed: usize,
    /// Whether the output file holds the whole scan: written by this call (the journal
    /// held every projection), or found from an earlier run of the same scan and settings.
    pub written: bool,
    /// The output already held this scan: the call did nothing.
    pub unchanged: bool,
    /// Seconds of this call.
    pub seconds: f64,
}

/// Reconstructs every projection of `series` with `engine` into the NeXus file `output`.
///
/// Finished projections go to `OUTPUT.journal/` first; when all are there, `output` is
/// written from it (atomically) and the journal removed. Interrupted — by an error, a
/// cancelling `progress`, a crash or a kill — the same call again resumes where it
/// stopped; the result is the same as an uninterrupted run's, and once it is written the
/// same call again does nothing. Another existing `output` with no journal beside it is
/// refused unless `plan.overwrite`.
pub fn run(
    engine: &Engine,
    series: &Series,
    output: &Path,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<Report> {
    let clock = Instant::now();
    let (k, n, h, w) = series.dims();
    let journal_dir = Journal::path(output);
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if series.inputs().iter().any(|i| same(i, output)) {
        return Err(Error::invalid(format!(
            "{} is an input of this scan: choose another output",
            output.display()
        )));
    }
    let range = plan.only.clone().unwrap_or(0..k);
    if range.start > range.end || range.end > k {
        return Err(Error::invalid(format!(
            "projections {range:?} of a scan of {k}"
        )));
    }
    let with_phase = engine.options().geometry.is_some();
    let names = output::names(with_phase);
    let manifest = serde_json::to_string_pretty(&serde_json::json!({
        "espinnet_version": env!("CARGO_PKG_VERSION"),
        "series": series.describe(),
        "engine": engine.options(),
        "maps": names,
    }))
    .expect("serialisable");
    if output.exists() && !plan.overwrite {
        // The same run again, after it finished: nothing to do. The output is written
        // whole or not at all, so a journal still beside it is one whose removal a kill
        // interrupted.
        if output::settings(output).is_some_and(|s| s == manifest) {
            log::info!("series: {} already holds this scan", output.display());
            if journal_dir.exists() {
                Journal::open(output, &manifest, (names.len(), h, w))?.remove()?;
            }
            return Ok(Report {
                projections: k,
                resumed: range.len(),
                computed: 0,
                written: true,
                unchanged: true,
                seconds: clock.elapsed().as_secs_f64(),
            });
        }
        if !journal_dir.exists() {
            crate::io::refuse_existing(output)?;
        }
    }
    // The stacks being computed and read, the maps and the engine's own memory.
    crate::memory::ensure(
        crate::memory::product(&[2 * n + names.len() + 2, h, w, 4])
            .saturating_add(engine.memory_bytes((n, h, w))),
        engine.options().memory_limit_bytes,
        &format!("a series of {n}x{h}x{w} projections"),
    )?;
    let journal = Journal::open(output, &manifest, (names.len(), h, w))?;
    let done = journal.done()?;
    let todo: Vec<usize> = range.clone().filter(|i| !done.contains(i)).collect();
    let resumed = range.len() - todo.len();
    if resumed > 0 {
        log::info!(
            "series: {resumed} of {} projections found in {}",
            range.len(),
            journal_dir.display()
        );
    }
    let fraction =
        |finished: usize, part: f64| (finished as f64 + part) / range.len().max(1) as f64;
    if !progress.report(fraction(resumed, 0.0)) {
        return Err(Error::Cancelled);
    }
    // The reader runs one projection ahead of the engine.
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Result<Array3<f32>>)>(1);
        let todo_read = todo.clone();
        scope.spawn(move || {
            for i in todo_read {
                if tx.send((i, series.read(i))).is_err() {
                    break; // the engine stopped
                }
            }
        });
        let mut maps = Array3::<f32>::zeros((names.len(), h, w));
        for (finished, (i, sample)) in (resumed..).zip(rx) {
            let sample = sample?;
            let reference = series.reference_at(i);
            let report = |part: f64| progress.report(fraction(finished, part));
            compute(
                engine,
                reference.view(),
                sample.view(),
                &mut maps,
                with_phase,
                &report,
            )?;
            if with_phase {
                let phase = maps.index_axis_mut(Axis(0), names.len() - 1);
                reference_to_air(phase, series.air_columns())?;
            }
            journal.write(i, maps.view())?;
            log::debug!(
                "series: projection {i} done at {:.2} s",
                clock.elapsed().as_secs_f64()
            );
            if !progress.report(fraction(finished + 1, 0.0)) {
                return Err(Error::Cancelled);
            }
        }
        Ok(())
    })?;
    let written = !plan.journal_only && journal.done()?.len() == k;
    if written {
        output::write(output, series, &journal, &names, &manifest)?;
        journal.remove()?;
    }
    Ok(Report {
        projections: k,
        resumed,
        computed: todo.len(),
        written,
        unchanged: false,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// One projection's maps into `maps` (`[map, H, W]` in [`output::names`]' order).
fn compute(
    engine: &Engine,
    reference: ndarray::ArrayView3<f32>,
    sample: ndarray::ArrayView3<f32>,
    maps: &mut Array3<f32>,
    with_phase: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let (_, h, w) = maps.dim();
    let mut status = Array2::<u8>::zeros((h, w));
    let mut planes = maps.outer_iter_mut();
    let [dx, dy, transmission, darkfield, quality, status_plane] =
        std::array::from_fn(|_| planes.next().expect("a plane per map"));
    let out = MapsMut {
        dx: Some(dx),
        dy: Some(dy),
        transmission: Some(transmission),
        darkfield: Some(darkfield),
        quality: Some(quality),
        status: Some(status.view_mut()),
        phase: planes.next().filter(|_| with_phase),
        ..MapsMut::default()
    };
    engine.reconstruct_into(reference, sample, out, progress)?;
    ndarray::Zip::from(status_plane)
        .and(&status)
        .for_each(|p, &s| *p = f32::from(s));
    Ok(())
}

/// Where the journal of a run writing `output` lives.
pub fn journal_path(output: &Path) -> PathBuf {
    Journal::path(output)
}
