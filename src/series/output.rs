//! The series' NeXus file, built from the journal one projection at a time:
//! `/entry/result` (`NXdata`) holds the maps as `[angles, H, W]` float32 with `units` and
//! `long_name` and the per-pixel status as uint8, the signal phase (or dx without a
//! geometry), `theta` (degrees) as the first axis; `/entry/process/settings` the run's
//! manifest as JSON; root-level links `/dx`, `/dy`, `/transmission`, `/darkfield`,
//! `/quality`, `/status`, `/phase` and `/theta` for scripts that expect DXchange-like flat
//! paths.

use std::path::Path;

use ndarray::{Array1, Axis};

use super::Series;
use super::journal::Journal;
use crate::engine::{MAP_INFO, STATUS_LONG_NAME};
use crate::error::{Error, Result};

/// The maps a series keeps, in journal order (the journal holds the status as float32).
pub(super) fn names(with_phase: bool) -> Vec<&'static str> {
    let mut names = vec!["dx", "dy", "transmission", "darkfield", "quality", STATUS];
    if with_phase {
        names.push("phase");
    }
    names
}

/// The settings (the run's manifest) a series file holds; `None` if it is not one.
pub(super) fn settings(path: &Path) -> Option<String> {
    let loc = crate::io::Location::parse(&format!("{}:{SETTINGS}", path.display())).ok()?;
    crate::io::hdf5_text(&loc).ok()
}

const SETTINGS: &str = "/entry/process/settings/data";
const STATUS: &str = "status";

pub(super) fn write(
    path: &Path,
    series: &Series,
    journal: &Journal,
    names: &[&str],
    manifest: &str,
) -> Result<()> {
    let (k, _, h, w) = series.dims();
    let theta = Array1::from_iter(series.angles_deg().iter().map(|&a| a as f32));
    let signal = *names.last().filter(|n| **n == "phase").unwrap_or(&"dx");
    crate::io::write_streamed(path, |f| {
        f.attr("/", "default", "entry")?;
        f.attr(
            "/",
            "creator",
            concat!("espinnet ", env!("CARGO_PKG_VERSION")),
        )?;
        f.group("/entry", "NXentry")?;
        f.attr("/entry", "default", "result")?;
        f.group("/entry/result", "NXdata")?;
        f.attr("/entry/result", "signal", signal)?;
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != signal).collect();
        f.attr_list("/entry/result", "auxiliary_signals", &others)?;
        f.attr_list("/entry/result", "axes", &["theta", ".", "."])?;
        f.write("/entry/result/theta", theta.view().into_dyn())?;
        f.attr("/entry/result/theta", "units", "degrees")?;
        f.attr("/entry/result/theta", "long_name", "rotation angle")?;
        for name in names {
            let ds = format!("/entry/result/{name}");
            if *name == STATUS {
                f.dataset::<u8>(&ds, &[k, h, w])?;
                f.attr(&ds, "long_name", STATUS_LONG_NAME)?;
                continue;
            }
            let (_, units, long) = MAP_INFO
                .iter()
                .find(|(n, ..)| n == name)
                .expect("every map is in MAP_INFO");
            f.dataset::<f32>(&ds, &[k, h, w])?;
            f.attr(&ds, "units", units)?;
            f.attr(&ds, "long_name", long)?;
        }
        for i in 0..k {
            let maps = journal.read(i)?.ok_or_else(|| {
                Error::Runtime(format!("projection {i} went missing from the journal"))
            })?;
            for (m, name) in maps.axis_iter(Axis(0)).zip(names) {
                let ds = format!("/entry/result/{name}");
                match *name == STATUS {
                    true => f.write_entry(&ds, i, m.mapv(|v| v as u8).view().into_dyn())?,
                    false => f.write_entry(&ds, i, m.into_dyn())?,
                }
            }
        }
        f.group("/entry/process", "NXprocess")?;
        f.group("/entry/process/settings", "NXnote")?;
        f.write_text("/entry/process/settings/type", "application/json")?;
        f.write_text(SETTINGS, manifest)?;
        for name in names.iter().chain(&["theta"]) {
            f.link(&format!("/entry/result/{name}"), &format!("/{name}"))?;
        }
        Ok(())
    })
}
