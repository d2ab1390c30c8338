//! Output directories that appear whole or not at all. Every file of a run is written into
//! a hidden staging directory beside the target, and the staging directory then takes the
//! target's place in one step (an atomic exchange on Linux), so a reader, or a run killed
//! at any moment, sees the previous complete set or the new one, never a mix. Replacing a
//! directory replaces all of it: no file of an earlier run survives beside the new ones.
//!
//! A directory is only ever replaced when it is empty or was written this way before (it
//! holds the [`MARKER`] file), so that nothing a user put there is deleted.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The file that marks a directory as a complete espinnet output.
pub const MARKER: &str = ".espinnet-output";

/// An output directory being written.
pub struct OutputDir {
    target: PathBuf,
    staging: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn exists_error(path: &Path, what: &str) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, what.to_string()),
    )
}

impl OutputDir {
    /// Prepares to write into `target`, failing at once, before any work, when it may not
    /// be replaced: it exists and is not empty and `replace` is false; it holds files of
    /// other origin; or it contains one of `inputs`.
    pub fn create(target: &Path, replace: bool, inputs: &[&Path]) -> Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| {
                Error::invalid(format!("'{}' is not a directory name", target.display()))
            })?
            .to_owned();
        if target.exists() {
            if !target.is_dir() {
                return Err(Error::invalid(format!(
                    "{} exists and is not a directory",
                    target.display()
                )));
            }
            let mut entries = std::fs::read_dir(target).map_err(io(target))?;
            if entries.next().is_some() {
                if !replace {
                    return Err(exists_error(target, "already exists and is not empty"));
                }
                if !target.join(MARKER).is_file() {
                    return Err(exists_error(
                        target,
                        "holds files that espinnet did not write; refusing to replace it",
                    ));
                }
                let dir = target.canonicalize().map_err(io(target))?;
                for input in inputs {
                    if input.canonicalize().is_ok_and(|p| p.starts_with(&dir)) {
                        return Err(Error::invalid(format!(
                            "{} is inside the output directory {}, which would be replaced",
                            input.display(),
                            target.display()
                        )));
                    }
                }
            }
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        remove_abandoned(&parent, &name);
        let staging = parent.join(hidden(&name, "staging", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        Ok(OutputDir {
            target: target.to_path_buf(),
            staging,
        })
    }

    /// Where to write the file `rel` (a relative path) now; parent directories are made.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.staging.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        Ok(p)
    }

    /// Puts the staged set in the target's place, replacing whatever was there.
    pub fn commit(self) -> Result<()> {
        let marker = self.staging.join(MARKER);
        std::fs::write(
            &marker,
            concat!("espinnet ", env!("CARGO_PKG_VERSION"), "\n"),
        )
        .map_err(io(&marker))?;
        if !self.target.exists() {
            return std::fs::rename(&self.staging, &self.target).map_err(io(&self.target));
        }
        if exchange(&self.staging, &self.target).is_err() {
            // No atomic exchange here: move the old set aside first. A kill between the
            // two renames leaves the old set in a hidden sibling, never a mixed directory.
            let name = self.target.file_name().expect("checked in create");
            let aside = self
                .target
                .with_file_name(hidden(name, "old", std::process::id()));
            std::fs::rename(&self.target, &aside).map_err(io(&self.target))?;
            std::fs::rename(&self.staging, &self.target).map_err(io(&self.target))?;
            let _ = std::fs::remove_dir_all(&aside);
        }
        // After the exchange the staging path holds the old set; Drop removes it.
        Ok(())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// `.NAME.KIND-PID`
fn hidden(name: &std::ffi::OsStr, kind: &str, pid: u32) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!(".{kind}-{pid}"));
    s
}

/// Removes staging and set-aside directories for `name` left by processes that no longer
/// run (killed before they could clean up). Only where /proc tells which processes run.
fn remove_abandoned(parent: &Path, name: &std::ffi::OsStr) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let target = parent.join(name);
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let (kind, pid) = match rest.split_once('-') {
            Some((k @ ("staging" | "old"), pid)) => match pid.parse::<u32>() {
                Ok(pid) => (k, pid),
                Err(_) => continue,
            },
            _ => continue,
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if kind == "old" && !target.exists() {
            // Killed between the two renames of the fallback: the old set goes back.
            log::info!("restoring {} from {}", target.display(), e.path().display());
            let _ = std::fs::rename(e.path(), &target);
        } else {
            log::info!(
                "removing {}, abandoned by process {pid}",
                e.path().display()
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Swaps two directories atomically.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths, relative to the working directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_replaced_set_leaves_nothing_of_the_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        let o = OutputDir::create(&target, false, &[]).unwrap();
        std::fs::write(o.path("a.txt").unwrap(), "1").unwrap();
        std::fs::write(o.path("old.txt").unwrap(), "1").unwrap();
        o.commit().unwrap();
        assert!(
            OutputDir::create(&target, false, &[]).is_err(),
            "needs replace"
        );
        let o = OutputDir::create(&target, true, &[]).unwrap();
        std::fs::write(o.path("a.txt").unwrap(), "2").unwrap();
        o.commit().unwrap();
        assert_eq!(files(&target), [MARKER, "a.txt"]);
        assert_eq!(std::fs::read_to_string(target.join("a.txt")).unwrap(), "2");
        assert_eq!(files(tmp.path()), ["out"], "no staging left beside it");
    }

    #[test]
    fn foreign_files_and_inputs_are_never_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let mine = tmp.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("thesis.tex"), "").unwrap();
        let e = OutputDir::create(&mine, true, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("did not write"), "{e}");
        let out = tmp.path().join("out");
        OutputDir::create(&out, false, &[])
            .unwrap()
            .commit()
            .unwrap();
        std::fs::write(out.join("reference.tif"), "").unwrap();
        let input = out.join("reference.tif");
        let e = OutputDir::create(&out, true, &[&input])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("inside the output directory"), "{e}");
        assert!(input.exists());
    }
}
