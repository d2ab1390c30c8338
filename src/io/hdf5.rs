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

/// Reads a dataset of rank 1 to 3 as `[N, H, W]` (leading dimensions of 1 added), or with
/// `index` the `[N, H, W]` at that index of a rank-4 dataset (a CT scan's projection).
pub(super) fn read(path: &Path, dataset: &str, index: Option<u64>) -> Result<Array3<f32>> {
    match call(path, dataset, Query::Read(index))? {
        Reply::Data(a) => Ok(a),
        _ => unreachable!("a read is answered with data"),
    }
}

/// The dataset's dimensions, `None` if the file has no such dataset.
pub(super) fn shape(path: &Path, dataset: &str) -> Result<Option<Vec<u64>>> {
    match call(path, dataset, Query::Shape)? {
        Reply::Shape(s) => Ok(s),
        _ => unreachable!("a shape query is answered with a shape"),
    }
}

/// A one-element variable-length string dataset (a NeXus text field) as text.
pub(super) fn text(path: &Path, dataset: &str) -> Result<String> {
    match call(path, dataset, Query::Text)? {
        Reply::Text(t) => Ok(t),
        _ => unreachable!("a text query is answered with text"),
    }
}

#[derive(Clone, Copy)]
enum Query {
    Read(Option<u64>),
    Shape,
    Text,
}

enum Reply {
    Data(Array3<f32>),
    Shape(Option<Vec<u64>>),
    Text(String),
}

/// The longest text field read (bytes).
const MAX_TEXT: usize = 16 << 20;

fn call(path: &Path, dataset: &str, query: Query) -> Result<Reply> {
    #[cfg(unix)]
    return isolated::call(path, dataset, query);
    #[cfg(not(unix))]
    hdf5_metno::sync::sync(|| raw::call(path, dataset, query))
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

    use super::{Query, Reply};
    use crate::error::{Error, Result};

    /// [`super::raw::call`] in a child process; its result comes back through a pipe.
    pub(super) fn call(path: &Path, dataset: &str, query: Query) -> Result<Reply> {
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
                child(path, dataset, query, &rx, &tx);
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

    /// The child: reads, sends `O n h w data`, `S rank dims` (rank `u64::MAX`: no such
    /// dataset) or `E kind message`, and exits at once (no destructors or exit handlers of
    /// the host's run in it).
    fn child(path: &Path, dataset: &str, query: Query, rx: &File, tx: &File) -> ! {
        // SAFETY: this process's copies; the parent keeps its own.
        unsafe { libc::close(rx.as_raw_fd()) };
        let mut tx = unsafe { File::from_raw_fd(tx.as_raw_fd()) };
        close_inherited(tx.as_raw_fd());
        let result = std::panic::catch_unwind(|| super::raw::call(path, dataset, query));
        let mut message = Vec::new();
        match result {
            Ok(Ok(Reply::Shape(dims))) => {
                message.push(b'S');
                let dims = dims.unwrap_or_default();
                let rank = if dims.is_empty() {
                    u64::MAX
                } else {
                    dims.len() as u64
                };
                for d in std::iter::once(rank).chain(dims) {
                    message.extend(d.to_le_bytes());
                }
                let _ = tx.write_all(&message);
            }
            Ok(Ok(Reply::Text(t))) => {
                message.push(b'T');
                message.extend((t.len() as u64).to_le_bytes());
                message.extend(t.as_bytes());
                let _ = tx.write_all(&message);
            }
            Ok(Ok(Reply::Data(a))) => {
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
    fn receive(path: &Path, rx: &mut File) -> Result<Reply> {
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
        let mut word = || -> Result<u64> {
            let mut b = [0u8; 8];
            rx.read_exact(&mut b).map_err(io)?;
            Ok(u64::from_le_bytes(b))
        };
        if tag[0] == b'T' {
            let len = usize::try_from(word()?).unwrap_or(usize::MAX);
            if len > super::MAX_TEXT {
                return Err(Error::format(path, "the HDF5 reader sent a bad text"));
            }
            let mut bytes = vec![0u8; len];
            rx.read_exact(&mut bytes).map_err(io)?;
            return Ok(Reply::Text(String::from_utf8_lossy(&bytes).into_owned()));
        }
        if tag[0] == b'S' {
            let rank = word()?;
            if rank == u64::MAX {
                return Ok(Reply::Shape(None));
            }
            let dims = (0..rank.min(32)).map(|_| word()).collect::<Result<_>>()?;
            return Ok(Reply::Shape(Some(dims)));
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
        Ok(Reply::Data(
            Array3::from_shape_vec((n, h, w), data).expect("length matches the shape"),
        ))
    }
}

/// The reader over libhdf5's C API, without the wrapper's lock: alone in the child
/// process on Unix, under the lock elsewhere.
mod raw {
    use std::ffi::CString;
    use std::path::Path;

    use hdf5_metno_sys::{h5, h5d, h5e, h5f, h5i::hid_t, h5p, h5s, h5t};
    use ndarray::Array3;

    use super::{Query, Reply};
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

    pub(super) fn call(path: &Path, dataset: &str, query: Query) -> Result<Reply> {
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
            let ds = match open(
                h5d::H5Dopen2(file.0, ds_name.as_ptr(), h5p::H5P_DEFAULT),
                h5d::H5Dclose,
            ) {
                Some(ds) => ds,
                None if matches!(query, Query::Shape) => return Ok(Reply::Shape(None)),
                None => return Err(bad(format!("no dataset '{dataset}' in this file"))),
            };
            let space = open(h5d::H5Dget_space(ds.0), h5s::H5Sclose)
                .ok_or_else(|| bad(format!("dataset '{dataset}' has no dataspace")))?;
            let rank = h5s::H5Sget_simple_extent_ndims(space.0);
            if !(1..=4).contains(&rank) {
                return Err(bad(format!(
                    "dataset '{dataset}' has rank {rank}, expected 1 to 4"
                )));
            }
            let mut dims = [1u64; 4];
            let at = 4 - rank as usize;
            h5s::H5Sget_simple_extent_dims(space.0, dims[at..].as_mut_ptr(), std::ptr::null_mut());
            let index = match query {
                Query::Shape => return Ok(Reply::Shape(Some(dims[at..].to_vec()))),
                Query::Text => return text(ds.0, space.0, dataset).map_err(bad),
                Query::Read(index) => index,
            };
            // The selection: all of a rank-1 to 3 dataset, or `[index, ...]` of a rank-4 one.
            let start = match (rank, index) {
                (4, Some(i)) if i < dims[0] => i,
                (4, Some(i)) => {
                    return Err(bad(format!(
                        "dataset '{dataset}' has {} entries along its first axis, asked for {i}",
                        dims[0]
                    )));
                }
                (4, None) => {
                    return Err(bad(format!(
                        "dataset '{dataset}' has rank 4 {:?}: read it one entry at a time",
                        &dims
                    )));
                }
                (_, Some(_)) => {
                    return Err(bad(format!(
                        "dataset '{dataset}' has rank {rank}, expected [angles, N, H, W]"
                    )));
                }
                (_, None) => 0,
            };
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
            let shape = &dims[1..];
            let claim = shape.iter().try_fold(item, |n, &d| n.checked_mul(d));
            let bytes = crate::io::Budget::new(path, h5d::H5Dget_storage_size(ds.0)).claim(
                claim,
                true,
                &format!("dataset '{dataset}' of shape {:?}", &dims[at..]),
            )?;
            let values = bytes / item.max(1);
            crate::memory::ensure(
                values.saturating_mul(4).saturating_add(bytes),
                None,
                &format!("reading '{dataset}' of {}", path.display()),
            )?;
            let [_, n, h, w] = dims.map(|d| d as usize);
            if n == 0 || h == 0 || w == 0 {
                return Err(bad(format!(
                    "dataset '{dataset}' is empty: {:?}",
                    &dims[at..]
                )));
            }
            let mut data = crate::memory::try_vec(n * h * w, 0f32, "reading HDF5")?;
            // One entry of a rank-4 dataset: a hyperslab of the file's space, read into a
            // memory space of its own shape.
            let (file_space, memory) = if rank == 4 {
                let offset = [start, 0, 0, 0];
                let count = [1, dims[1], dims[2], dims[3]];
                if h5s::H5Sselect_hyperslab(
                    space.0,
                    h5s::H5S_seloper_t::H5S_SELECT_SET,
                    offset.as_ptr(),
                    std::ptr::null(),
                    count.as_ptr(),
                    std::ptr::null(),
                ) < 0
                {
                    return Err(bad(format!("cannot select entry {start} of '{dataset}'")));
                }
                let memory = open(
                    h5s::H5Screate_simple(3, dims[1..].as_ptr(), std::ptr::null()),
                    h5s::H5Sclose,
                )
                .ok_or_else(|| bad("cannot make a memory dataspace".into()))?;
                (space.0, Some(memory))
            } else {
                (h5s::H5S_ALL, None)
            };
            let status = h5d::H5Dread(
                ds.0,
                *h5t::H5T_NATIVE_FLOAT,
                memory.as_ref().map_or(h5s::H5S_ALL, |m| m.0),
                file_space,
                h5p::H5P_DEFAULT,
                data.as_mut_ptr().cast(),
            );
            if status < 0 {
                return Err(bad(format!("cannot read '{dataset}' as numbers")));
            }
            Ok(Reply::Data(
                Array3::from_shape_vec((n, h, w), data).expect("length matches the shape"),
            ))
        }
    }

    /// The one variable-length string of dataset `ds` (UTF-8 or ASCII).
    ///
    /// # Safety
    /// `ds` and `space` are open identifiers of the dataset and its dataspace.
    unsafe fn text(ds: hid_t, space: hid_t, name: &str) -> std::result::Result<Reply, String> {
        // SAFETY: libhdf5's C API on the caller's identifiers and one made here.
        unsafe {
            let stored = open(h5d::H5Dget_type(ds), h5t::H5Tclose)
                .ok_or_else(|| format!("dataset '{name}' has no type"))?;
            if h5t::H5Tis_variable_str(stored.0) <= 0
                || h5s::H5Sget_simple_extent_npoints(space) != 1
            {
                return Err(format!(
                    "dataset '{name}' is not one variable-length string"
                ));
            }
            let memory = open(h5t::H5Tcopy(*h5t::H5T_C_S1), h5t::H5Tclose)
                .ok_or_else(|| "cannot make a string type".to_string())?;
            h5t::H5Tset_size(memory.0, h5t::H5T_VARIABLE);
            h5t::H5Tset_cset(memory.0, h5t::H5T_cset_t::H5T_CSET_UTF8);
            let mut pointer: *mut std::ffi::c_char = std::ptr::null_mut();
            let status = h5d::H5Dread(
                ds,
                memory.0,
                h5s::H5S_ALL,
                h5s::H5S_ALL,
                h5p::H5P_DEFAULT,
                (&raw mut pointer).cast(),
            );
            if status < 0 || pointer.is_null() {
                return Err(format!("cannot read '{name}' as text"));
            }
            let bytes = std::ffi::CStr::from_ptr(pointer).to_bytes();
            let text = (bytes.len() <= super::MAX_TEXT)
                .then(|| String::from_utf8_lossy(bytes).into_owned());
            h5::H5free_memory(pointer.cast());
            text.map(Reply::Text)
                .ok_or_else(|| format!("'{name}' is longer than {} bytes", super::MAX_TEXT))
        }
    }
}

/// An HDF5 file written piece by piece: datasets made at their full shape, then filled one
/// entry (`[i, ...]`) at a time, so that a series of any length is written in bounded
/// memory. Made by [`write_streamed`].
pub struct Streamed {
    file: hdf5_metno::File,
    path: std::path::PathBuf,
}

/// Calls `fill` on a new file and moves it onto `path` if `fill` succeeds (atomically; a
/// failure leaves nothing).
pub fn write_streamed(path: &Path, fill: impl FnOnce(&Streamed) -> Result<()>) -> Result<()> {
    write_atomically(path, |tmp| {
        let file = hdf5_metno::File::create(tmp).map_err(h5err(path, "cannot create HDF5 file"))?;
        let w = Streamed {
            file,
            path: path.to_path_buf(),
        };
        fill(&w)?;
        w.file
            .close()
            .map_err(h5err(path, "cannot close HDF5 file"))
    })
}

impl Streamed {
    fn err(&self, what: &str) -> impl Fn(hdf5_metno::Error) -> Error {
        h5err(&self.path, what)
    }

    fn location(&self, object: &str) -> Result<hdf5_metno::Location> {
        if object == "/" {
            return Ok((**self.file).clone());
        }
        match self.file.dataset(object) {
            Ok(ds) => Ok((**ds).clone()),
            Err(_) => self
                .file
                .group(object)
                .map(|g| (*g).clone())
                .map_err(self.err(&format!("no object '{object}'"))),
        }
    }

    /// Makes a group (and its parents) with an `NX_class`.
    pub fn group(&self, name: &str, nx_class: &str) -> Result<()> {
        let g = self
            .file
            .create_group(name)
            .map_err(self.err(&format!("cannot create group '{name}'")))?;
        self.text(&g, "NX_class", nx_class)
    }

    /// Makes a dataset of `T` and `shape`, chunked one entry (`[1, ...]`) per chunk.
    pub fn dataset<T: hdf5_metno::H5Type>(&self, name: &str, shape: &[usize]) -> Result<()> {
        let mut chunk = shape.to_vec();
        if let Some(c) = chunk.first_mut() {
            *c = 1;
        }
        self.file
            .new_dataset::<T>()
            .shape(shape)
            .chunk(chunk)
            .create(name)
            .map(drop)
            .map_err(self.err(&format!("cannot create dataset '{name}'")))
    }

    /// Writes a whole float32 dataset.
    pub fn write(&self, name: &str, data: ndarray::ArrayViewD<f32>) -> Result<()> {
        self.file
            .new_dataset_builder()
            .with_data(&data.as_standard_layout())
            .create(name)
            .map(drop)
            .map_err(self.err(&format!("cannot write dataset '{name}'")))
    }

    /// Writes a one-element string dataset (a NeXus text field).
    pub fn write_text(&self, name: &str, value: &str) -> Result<()> {
        let value: VarLenUnicode = value
            .parse()
            .map_err(|e| Error::format(&self.path, format!("'{name}': {e}")))?;
        self.file
            .new_dataset_builder()
            .with_data(&[value])
            .create(name)
            .map(drop)
            .map_err(self.err(&format!("cannot write '{name}'")))
    }

    /// Writes entry `index` (`[index, ...]`) of a dataset made by [`Streamed::dataset`].
    pub fn write_entry<T: hdf5_metno::H5Type + Clone>(
        &self,
        name: &str,
        index: usize,
        data: ndarray::ArrayViewD<T>,
    ) -> Result<()> {
        use ndarray::s;
        let ds = self
            .file
            .dataset(name)
            .map_err(self.err(&format!("no dataset '{name}'")))?;
        let data = data.as_standard_layout();
        let written = match data.ndim() {
            1 => ds.write_slice(&data, s![index, ..]),
            2 => ds.write_slice(&data, s![index, .., ..]),
            3 => ds.write_slice(&data, s![index, .., .., ..]),
            n => {
                return Err(Error::invalid(format!(
                    "entries of rank {n} are not supported"
                )));
            }
        };
        written.map_err(self.err(&format!("cannot write entry {index} of '{name}'")))
    }

    /// A string attribute on an object (`/` is the root).
    pub fn attr(&self, object: &str, name: &str, value: &str) -> Result<()> {
        self.text(&self.location(object)?, name, value)
    }

    /// A string-array attribute (NeXus `auxiliary_signals`, `axes`).
    pub fn attr_list(&self, object: &str, name: &str, values: &[&str]) -> Result<()> {
        let values: Vec<VarLenUnicode> = values
            .iter()
            .map(|v| {
                v.parse()
                    .map_err(|e| Error::format(&self.path, format!("{e}")))
            })
            .collect::<Result<_>>()?;
        self.location(object)?
            .new_attr_builder()
            .with_data(values.as_slice())
            .create(name)
            .map(drop)
            .map_err(self.err(&format!("cannot write attribute '{name}'")))
    }

    /// A soft link `name` → `target`.
    pub fn link(&self, target: &str, name: &str) -> Result<()> {
        self.file
            .link_soft(target, name)
            .map_err(self.err(&format!("cannot link '{name}' to '{target}'")))
    }

    fn text(&self, loc: &hdf5_metno::Location, name: &str, value: &str) -> Result<()> {
        let value: VarLenUnicode = value
            .parse()
            .map_err(|e| Error::format(&self.path, format!("attribute '{name}': {e}")))?;
        loc.new_attr::<VarLenUnicode>()
            .create(name)
            .and_then(|a| a.write_scalar(&value))
            .map_err(self.err(&format!("cannot write attribute '{name}'")))
    }
}
