//! The journal that makes a series resumable and crash-safe: HDF5 is not (a process killed
//! while writing can leave the file unreadable), so each finished projection is kept as
//! its own small file, written to a temporary name and renamed into place — it is there
//! whole or not at all. The output file is built from the journal once every projection
//! is in it; a run killed at any moment and started again finds the journal and carries
//! on from what is there.
//!
//! Layout of `OUTPUT.journal/`: `manifest.json` (what the run is: inputs, shapes, angles
//! and engine settings; a journal of another run is refused, never mixed in) and one
//! `p000123.npy` per finished projection, `[maps, H, W]` float32.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3};

use crate::error::{Error, Result};
use crate::io::write_atomically;

pub struct Journal {
    dir: PathBuf,
    /// Maps per entry and their size.
    shape: (usize, usize, usize),
}

const MANIFEST: &str = "manifest.json";

impl Journal {
    /// The journal for `output`: `OUTPUT.journal` beside it.
    pub fn path(output: &Path) -> PathBuf {
        let mut name = output.file_name().unwrap_or_default().to_os_string();
        name.push(".journal");
        output.with_file_name(name)
    }

    /// Opens the journal of `output` for the run described by `manifest`, or starts one.
    /// A journal left by a different run is an error that names it.
    pub fn open(output: &Path, manifest: &str, shape: (usize, usize, usize)) -> Result<Self> {
        let dir = Self::path(output);
        let file = dir.join(MANIFEST);
        if file.is_file() {
            let found = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
            if found != manifest {
                return Err(Error::invalid(format!(
                    "{} holds the journal of a different run (other inputs or settings): \
                     finish that run with its own command, or remove the journal to start \
                     this one",
                    dir.display()
                )));
            }
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            write_atomically(&file, |tmp| {
                std::fs::write(tmp, manifest).map_err(|e| Error::io(tmp, e))
            })?;
        }
        Ok(Journal { dir, shape })
    }

    fn entry(&self, index: usize) -> PathBuf {
        self.dir.join(format!("p{index:06}.npy"))
    }

    /// The projections already in the journal.
    pub fn done(&self) -> Result<BTreeSet<usize>> {
        let mut done = BTreeSet::new();
        for e in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let e = e.map_err(|e| Error::io(&self.dir, e))?;
            let name = e.file_name();
            let index = name.to_str().and_then(|n| {
                n.strip_prefix('p')?
                    .strip_suffix(".npy")?
                    .parse::<usize>()
                    .ok()
            });
            done.extend(index);
        }
        Ok(done)
    }

    /// Records projection `index`'s maps.
    pub fn write(&self, index: usize, maps: ArrayView3<f32>) -> Result<()> {
        debug_assert_eq!(maps.dim(), self.shape);
        // Written to a hidden name and renamed: whole or absent.
        crate::io::write_stack(&self.entry(index).to_string_lossy(), maps)
    }

    /// Projection `index`'s maps. An entry of the wrong shape (another build's, or a
    /// damaged disk's) is removed and reported as missing.
    pub fn read(&self, index: usize) -> Result<Option<Array3<f32>>> {
        let path = self.entry(index);
        match crate::io::read_stack(&path.to_string_lossy()) {
            Ok(a) if a.dim() == self.shape => Ok(Some(a)),
            Ok(_) | Err(Error::Format { .. }) => {
                log::warn!("{} is damaged: computed again", path.display());
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the journal (once the output holds everything). The manifest goes last:
    /// a run killed meanwhile leaves a journal that still says whose entries it holds.
    pub fn remove(self) -> Result<()> {
        let io = |e| Error::io(&self.dir, e);
        for e in std::fs::read_dir(&self.dir).map_err(io)? {
            let path = e.map_err(io)?.path();
            if path.file_name() != Some(MANIFEST.as_ref()) {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        std::fs::remove_dir_all(&self.dir).map_err(io)
    }
}
