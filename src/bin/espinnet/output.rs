//! Output directories that appear complete or not at all: files are written into a hidden
//! staging directory beside the target and moved into place only when all succeeded.

use std::path::{Path, PathBuf};

use espinnet::{Error, Result};

pub struct Staged {
    target: PathBuf,
    staging: PathBuf,
    files: Vec<PathBuf>,
}

impl Staged {
    /// Prepares to write `files` (relative paths) into `target`. Fails at once, before any
    /// work, if one of them exists and `force` is not set.
    pub fn new(target: &Path, files: &[&str], force: bool) -> Result<Self> {
        if target.exists() && !target.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} exists and is not a directory",
                target.display()
            )));
        }
        if !force {
            for f in files {
                espinnet::io::refuse_existing(&target.join(f))?;
            }
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::Io {
            path: parent.into(),
            source: e,
        })?;
        let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| Error::Io {
            path: staging.clone(),
            source: e,
        })?;
        Ok(Staged {
            target: target.into(),
            staging,
            files: files.iter().map(PathBuf::from).collect(),
        })
    }

    /// Where to write relative file `rel` now (parent directories created).
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.staging.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::Io {
                path: d.into(),
                source: e,
            })?;
        }
        Ok(p)
    }

    /// Moves every file into the target directory.
    pub fn commit(self) -> Result<()> {
        for f in &self.files {
            let (from, to) = (self.staging.join(f), self.target.join(f));
            if let Some(d) = to.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::Io {
                    path: d.into(),
                    source: e,
                })?;
            }
            std::fs::rename(&from, &to).map_err(|e| Error::Io {
                path: to.clone(),
                source: e,
            })?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}
