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
    hdf5_metno::sync::sync(|| raw::read(path, dataset))
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
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    use std::path::Path;

    use ndarray::Array3;

    use crate::error::{Error, Result};

    /// [`super::raw::read`] in a child process; its result comes back through a pipe.
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
        // libhdf5 at that moment. The child never returns from here, so never releases the
        // lock: a release would wake the host's threads that waited for it, which do not
        // exist in the child (and whose wake-up can block it). It calls libhdf5 directly
        // (`raw`), alone in its process.
        // SAFETY: the child only reads the file, writes the pipe and leaves by _exit.
        let pid = hdf5_metno::sync::sync(|| {
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                child(path, dataset, &rx, &tx);
            }
            pid
        });
        if pid < 0 {
            return Err(io(std::io::Error::last_os_error()));
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
    fn child(path: &Path, dataset: &str, rx: &File, tx: &File) -> ! {
        // SAFETY: this process's copies; the parent keeps its own.
        unsafe { libc::close(rx.as_raw_fd()) };
        let mut tx = unsafe { File::from_raw_fd(tx.as_raw_fd()) };
        close_inherited(tx.as_raw_fd());
        let result = std::panic::catch_unwind(|| super::raw::read(path, dataset));
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

    /// Closes every descriptor but stdio and `keep`: the child's copies of the host's files
    /// would otherwise hold their locks (an HDF5 file another thread just wrote and closed
    /// stays locked while any copy is open).
    fn close_inherited(keep: RawFd) {
        let keep = keep as libc::c_uint;
        for (first, last) in [(3, keep.saturating_sub(1)), (keep + 1, libc::c_uint::MAX)] {
            if first > last {
                continue;
            }
            // SAFETY: closes descriptors of this (single-threaded) child only.
            let closed = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } == 0;
            if !closed {
                for fd in first..=last.min(1 << 16) {
                    // SAFETY: as above; closing a descriptor that is not open is harmless.
                    unsafe { libc::close(fd as RawFd) };
                }
            }
        }
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
                    crate::memory::refused(what, need.parse::<u64>().unwrap_or(0) << 20)
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

/// The reader over libhdf5's C API, without the wrapper's lock: alone in the child
/// process on Unix, under the lock elsewhere.
mod raw {
    use std::ffi::CString;
    use std::path::Path;

    use hdf5_metno_sys::{h5, h5d, h5e, h5f, h5i::hid_t, h5p, h5s, h5t};
    use ndarray::Array3;

    use crate::error::{Error, Result};

    /// Closes an HDF5 identifier when dropped.
    struct Id(hid_t, unsafe extern "C" fn(hid_t) -> h5::herr_t);

    impl Drop for Id {
        fn drop(&mut self) {
            // SAFETY: an identifier this reader opened, closed once.
            unsafe { (self.1)(self.0) };
        }
    }

    fn open(id: hid_t, close: unsafe extern "C" fn(hid_t) -> h5::herr_t) -> Option<Id> {
        (id >= 0).then_some(Id(id, close))
    }

    pub(super) fn read(path: &Path, dataset: &str) -> Result<Array3<f32>> {
        let bad = |m: String| Error::format(path, m);
        let name = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| bad("the path holds a NUL byte".into()))?;
        let ds_name =
            CString::new(dataset).map_err(|_| bad("the dataset name holds a NUL byte".into()))?;
        // SAFETY: libhdf5's C API on identifiers opened here; buffers sized below.
        unsafe {
            h5::H5open();
            h5e::H5Eset_auto2(h5e::H5E_DEFAULT, None, std::ptr::null_mut());
            // A reader needs no lock; a writer's descriptor that a child of another thread
            // holds for a moment after the writer closed would refuse one.
            let access = open(h5p::H5Pcreate(*h5p::H5P_CLS_FILE_ACCESS), h5p::H5Pclose)
                .ok_or_else(|| bad("cannot make HDF5 file access properties".into()))?;
            h5p::H5Pset_file_locking(access.0, 0, 1);
            let file = open(
                h5f::H5Fopen(name.as_ptr(), h5f::H5F_ACC_RDONLY, access.0),
                h5f::H5Fclose,
            )
            .ok_or_else(|| bad("not a readable HDF5 file".into()))?;
            let ds = open(
                h5d::H5Dopen2(file.0, ds_name.as_ptr(), h5p::H5P_DEFAULT),
                h5d::H5Dclose,
            )
            .ok_or_else(|| bad(format!("no dataset '{dataset}' in this file")))?;
            let space = open(h5d::H5Dget_space(ds.0), h5s::H5Sclose)
                .ok_or_else(|| bad(format!("dataset '{dataset}' has no dataspace")))?;
            let rank = h5s::H5Sget_simple_extent_ndims(space.0);
            if !(2..=3).contains(&rank) {
                return Err(bad(format!(
                    "dataset '{dataset}' has rank {rank}, expected [N, H, W] or [H, W]"
                )));
            }
            let mut dims = [1u64; 3];
            let at = 3 - rank as usize;
            h5s::H5Sget_simple_extent_dims(space.0, dims[at..].as_mut_ptr(), std::ptr::null_mut());
            let dtype = open(h5d::H5Dget_type(ds.0), h5t::H5Tclose)
                .ok_or_else(|| bad(format!("dataset '{dataset}' has no type")))?;
            if !matches!(
                h5t::H5Tget_class(dtype.0),
                h5t::H5T_class_t::H5T_INTEGER | h5t::H5T_class_t::H5T_FLOAT
            ) {
                return Err(bad(format!("cannot read '{dataset}' as numbers")));
            }
            // What the dataspace claims against what is stored, before allocating.
            let item = h5t::H5Tget_size(dtype.0) as u64;
            let shape = &dims[at..];
            let claim = shape.iter().try_fold(item, |n, &d| n.checked_mul(d));
            let bytes = crate::io::Budget::new(path, h5d::H5Dget_storage_size(ds.0)).claim(
                claim,
                true,
                &format!("dataset '{dataset}' of shape {shape:?}"),
            )?;
            let values = bytes / item.max(1);
            crate::memory::ensure(
                values.saturating_mul(4).saturating_add(bytes),
                None,
                &format!("reading '{dataset}' of {}", path.display()),
            )?;
            let [n, h, w] = dims.map(|d| d as usize);
            if n == 0 || h == 0 || w == 0 {
                return Err(bad(format!("dataset '{dataset}' is empty: {shape:?}")));
            }
            let mut data = crate::memory::try_vec(n * h * w, 0f32, "reading HDF5")?;
            let status = h5d::H5Dread(
                ds.0,
                *h5t::H5T_NATIVE_FLOAT,
                h5s::H5S_ALL,
                h5s::H5S_ALL,
                h5p::H5P_DEFAULT,
                data.as_mut_ptr().cast(),
            );
            if status < 0 {
                return Err(bad(format!("cannot read '{dataset}' as numbers")));
            }
            Ok(Array3::from_shape_vec((n, h, w), data).expect("length matches the shape"))
        }
    }
}
