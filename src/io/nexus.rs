//! One HDF5 file per reconstruction, laid out as NeXus (`NXentry/NXdata`, `NXprocess`,
//! `NXnote`) so that h5py, silx and h5web open its plot: `/@default → entry → result`, the
//! signal (phase when there is one, else dx) with the other maps as auxiliary signals, each
//! with `units` and `long_name`; the run's settings as JSON in `entry/process/settings`.

use std::path::Path;

use hdf5_metno::types::VarLenUnicode;
use hdf5_metno::{Group, Location};

use super::atomic::write_atomically;
use crate::Maps;
use crate::error::{Error, Result};

/// Writes `maps` and `settings` (JSON text) to `path`, replacing it atomically.
pub fn write_result(path: &Path, maps: &Maps, settings: &str) -> Result<()> {
    let h5 = |what: &'static str| {
        let path = path.to_path_buf();
        move |e: hdf5_metno::Error| Error::format(&path, format!("{what}: {e}"))
    };
    let text = |s: &str| {
        s.parse::<VarLenUnicode>()
            .map_err(|e| Error::format(path, e))
    };
    let attr = |loc: &Location, name: &str, value: &str| -> Result<()> {
        let value = text(value)?;
        loc.new_attr::<VarLenUnicode>()
            .create(name)
            .and_then(|a| a.write_scalar(&value))
            .map_err(h5("cannot write an attribute"))
    };
    let group = |parent: &Group, name: &str, class: &str| -> Result<Group> {
        let g = parent
            .create_group(name)
            .map_err(h5("cannot create a group"))?;
        attr(&g, "NX_class", class)?;
        Ok(g)
    };
    let images = maps.named();
    let signal = if maps.phase.is_some() { "phase" } else { "dx" };
    write_atomically(path, |tmp| {
        let file = hdf5_metno::File::create(tmp).map_err(h5("cannot create the HDF5 file"))?;
        attr(&file, "default", "entry")?;
        attr(
            &file,
            "creator",
            concat!("espinnet ", env!("CARGO_PKG_VERSION")),
        )?;
        let entry = group(&file, "entry", "NXentry")?;
        attr(&entry, "default", "result")?;
        let data = group(&entry, "result", "NXdata")?;
        attr(&data, "signal", signal)?;
        let others: Vec<VarLenUnicode> = images
            .iter()
            .filter(|((n, ..), _)| *n != signal)
            .map(|((n, ..), _)| text(n))
            .collect::<Result<_>>()?;
        data.new_attr_builder()
            .with_data(others.as_slice())
            .create("auxiliary_signals")
            .map_err(h5("cannot write an attribute"))?;
        let axes = [text(".")?, text(".")?];
        data.new_attr_builder()
            .with_data(axes.as_slice())
            .create("axes")
            .map_err(h5("cannot write an attribute"))?;
        for ((name, units, long), map) in &images {
            let ds = data
                .new_dataset_builder()
                .with_data(&map.as_standard_layout())
                .create(*name)
                .map_err(h5("cannot write a map"))?;
            attr(&ds, "units", units)?;
            attr(&ds, "long_name", long)?;
        }
        let ds = data
            .new_dataset_builder()
            .with_data(&maps.status.as_standard_layout())
            .create("status")
            .map_err(h5("cannot write the status map"))?;
        attr(&ds, "long_name", crate::engine::STATUS_LONG_NAME)?;
        let process = group(&entry, "process", "NXprocess")?;
        for (name, value) in [
            ("program", "espinnet"),
            ("version", env!("CARGO_PKG_VERSION")),
        ] {
            process
                .new_dataset_builder()
                .with_data(&[text(value)?])
                .create(name)
                .map_err(h5("cannot write the process"))?;
        }
        let note = group(&process, "settings", "NXnote")?;
        for (name, value) in [("type", "application/json"), ("data", settings)] {
            note.new_dataset_builder()
                .with_data(&[text(value)?])
                .create(name)
                .map_err(h5("cannot write the settings"))?;
        }
        file.close().map_err(h5("cannot close the HDF5 file"))
    })
}
