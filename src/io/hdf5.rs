//! HDF5 datasets: read any numeric dataset of rank 2 or 3 as f32, write float32 datasets
//! (parents created), replacing the file atomically.
//!
//! libhdf5 (C) crashes on some damaged files inside its own code (found by fuzzing:
//! `tests/fuzz/known-crashes`). So on Unix a file is read in a child process, which sends
//! the data back through a pipe: a crash there is an error for the caller, not the end of
//! the host (a beamline server, ImageJ, a Python session).

use std::path::Path;

use hdf5_metno::types::VarLenUnicode;
use ndarray::{Array3, ArrayViewD};

use super::atomic::write_atomically;
use crate::error::{Error, Result};

fn h5err(path: &Path, what: &str) -> impl Fn(hdf5_metno::Error) -> Error {
    let (path, what) = (path.to_path_buf(), what.to_string());
    move |e| Error::format(&path, format!("{what}: {e}"))
}

pub(super) fn read(path: &Path, dataset: &str) -> Result<Array3<f32>> {
    #[cfg(unix)]
    return isolated::read(path, dataset);
    #[cfg(not(unix))]
    read_here(path, dataset)
}

/// Reads in this process.
fn read_here(path: &Path, dataset: &str) -> Result<Array3<f32>> {
    let file = hdf5_metno::File::open(path).map_err(h5err(path, "not a readable HDF5 file"))?;
    let ds = file
        .dataset(dataset)
        .map_err(|_| Error::format(path, format!("no dataset '{dataset}' in this file")))?;
    // What the dataspace claims against what is stored, before anything is allocated.
    let shape = ds.shape();
    if !(2..=3).contains(&shape.len()) {
        return Err(Error::format(
            path,
            format!(
                "dataset '{dataset}' has rank {}, expected [N, H, W] or [H, W]",
                shape.len()
            ),
        ));
    }
    let item = ds.dtype().map(|t| t.size() as u64).unwrap_or(8);
    let claim = shape.iter().try_fold(item, |n, &d| n.checked_mul(d as u64));
    let bytes = super::Budget::new(path, ds.storage_size()).claim(
        claim,
        true,
        &format!("dataset '{dataset}' of shape {shape:?}"),
    )?;
    // The data as f32, and the library's buffer of them as stored.
    let values = bytes / item.max(1);
    crate::memory::ensure(
        values.saturating_mul(4).saturating_add(bytes),
        None,
        &format!("reading '{dataset}' of {}", path.display()),
    )?;
    let a = ds
        .read_dyn::<f32>()
        .map_err(h5err(path, &format!("cannot read '{dataset}' as numbers")))?;
    super::into_stack(path, a, &format!("dataset '{dataset}'"))
}

/// Writes the named float32 datasets (parents created) and string attributes on the root
/// into a new file at `path`; an existing file is replaced as a whole, atomically.
pub(crate) fn write_many(
    path: &Path,
    datasets: &[(&str, ArrayViewD<f32>)],
    attributes: &[(&str, &str)],
) -> Result<()> {
    write_atomically(path, |tmp| {
        let file = hdf5_metno::File::create(tmp).map_err(h5err(path, "cannot create HDF5 file"))?;
        for (name, data) in datasets {
            let data = data.as_standard_layout();
            file.new_dataset_builder()
                .with_data(&data)
                .create(*name)
                .map_err(h5err(path, &format!("cannot write dataset '{name}'")))?;
        }
        for (name, value) in attributes {
            let value: VarLenUnicode = value
                .parse()
                .map_err(|e| Error::format(path, format!("attribute '{name}': {e}")))?;
            file.new_attr::<VarLenUnicode>()
                .create(*name)
                .and_then(|a| a.write_scalar(&value))
                .map_err(h5err(path, &format!("cannot write attribute '{name}'")))?;
        }
        file.close().map_err(h5err(path, "cannot close HDF5 file"))
    })
}

#[cfg(unix)]
mod isolated {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::path::Path;

    use ndarray::Array3;

    use crate::error::{Error, Result};

    /// [`super::read_here`] in a child process; its result comes back through a pipe.
    pub(super) fn read(path: &Path, dataset: &str) -> Result<Array3<f32>> {
        let io = |e: std::io::Error| Error::io(path, e);
        let mut fds = [0; 2];
        // SAFETY: a two-element array for the two ends.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors are new and owned here.
        let (mut rx, tx) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        // Forked holding the HDF5 lock, so that no other thread of the host is inside
        // libhdf5 at that moment; the child, the lock's holder, can then use it.
        // SAFETY: the child only reads the file, writes the pipe and leaves by _exit.
        let pid = hdf5_metno::sync::sync(|| unsafe { libc::fork() });
        if pid < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(rx);
            child(path, dataset, tx);
        }
        drop(tx);
        let result = receive(path, &mut rx);
        drop(rx);
        let mut status = 0;
        // SAFETY: our own child; retried when a signal interrupts the wait.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io(e));
            }
        }
        if libc::WIFSIGNALED(status) {
            return Err(Error::format(
                path,
                format!(
                    "the HDF5 reader died of signal {} (libhdf5 crashes on some damaged files)",
                    libc::WTERMSIG(status)
                ),
            ));
        }
        result
    }

    /// The child: reads, sends `O n h w data` or `E kind message`, and exits at once (no
    /// destructors or exit handlers of the host's run in it).
    fn child(path: &Path, dataset: &str, mut tx: File) -> ! {
        let result = std::panic::catch_unwind(|| super::read_here(path, dataset));
        let mut message = Vec::new();
        match result {
            Ok(Ok(a)) => {
                let (n, h, w) = a.dim();
                message.push(b'O');
                for d in [n, h, w] {
                    message.extend((d as u64).to_le_bytes());
                }
                let _ = tx.write_all(&message);
                let data = a.as_slice().expect("standard layout");
                // SAFETY: the f32s' bytes, as many as the slice holds.
                let bytes = unsafe {
                    std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), size_of_val(data))
                };
                let _ = tx.write_all(bytes);
            }
            Ok(Err(e)) => {
                let (kind, text) = match e {
                    Error::Io { source, .. } => (b'I', source.to_string()),
                    Error::Format { message, .. } => (b'F', message),
                    Error::OutOfMemory { what, need_mib, .. } => {
                        (b'M', format!("{need_mib} {what}"))
                    }
                    other => (b'F', other.to_string()),
                };
                message.extend([b'E', kind]);
                message.extend(text.as_bytes());
                let _ = tx.write_all(&message);
            }
            Err(_) => {
                message.extend(b"EFthe HDF5 reader failed (a bug: please report)");
                let _ = tx.write_all(&message);
            }
        }
        drop(tx);
        // SAFETY: ends the child without running the host's exit handlers.
        unsafe { libc::_exit(0) }
    }

    /// The parent's side of the pipe; a short message means the child died first.
    fn receive(path: &Path, rx: &mut File) -> Result<Array3<f32>> {
        let io = |e: std::io::Error| Error::io(path, e);
        let mut tag = [0u8; 1];
        if rx.read(&mut tag).map_err(io)? == 0 {
            // The child ended without a word: waitpid says how.
            return Err(Error::format(
                path,
                "the HDF5 reader ended without a result",
            ));
        }
        if tag[0] == b'E' {
            let mut rest = Vec::new();
            rx.read_to_end(&mut rest).map_err(io)?;
            let text = String::from_utf8_lossy(rest.get(1..).unwrap_or_default()).into_owned();
            return Err(match rest.first() {
                Some(b'I') => Error::io(path, std::io::Error::other(text)),
                Some(b'M') => {
                    let (need, what) = text.split_once(' ').unwrap_or(("0", &text));
                    Error::OutOfMemory {
                        what: what.to_string(),
                        need_mib: need.parse().unwrap_or(0),
                        available: "more than the system can provide now".into(),
                    }
                }
                _ => Error::format(path, text),
            });
        }
        let mut dims = [0u8; 24];
        rx.read_exact(&mut dims).map_err(io)?;
        let dim = |i: usize| {
            u64::from_le_bytes(dims[8 * i..8 * i + 8].try_into().expect("8 bytes")) as usize
        };
        let (n, h, w) = (dim(0), dim(1), dim(2));
        let len = n
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| Error::format(path, "the HDF5 reader sent a bad shape"))?;
        let mut data = crate::memory::try_vec(len, 0f32, &format!("reading {}", path.display()))?;
        // SAFETY: the vector's f32s as bytes, which any bit pattern fills validly.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), size_of_val(&data[..]))
        };
        rx.read_exact(bytes).map_err(io)?;
        Ok(Array3::from_shape_vec((n, h, w), data).expect("length matches the shape"))
    }
}
