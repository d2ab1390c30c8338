//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! The library is not linked: `ort`'s `load-dynamic` opens it at run time, so a build never
//! downloads anything and one binary serves CPU and GPU installs alike. Where it is looked
//! for, first match wins: the caller's explicit path, `ESPINNET_ORT_PATH`, `ORT_DYLIB_PATH`,
//! then the PyPI `onnxruntime` wheel of the active Python environment (`VIRTUAL_ENV`). A
//! missing or unusable library is an [`Error::Runtime`], never a panic (plain `ort::init()`
//! panics).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::logging::LogLevel;

use crate::error::{Error, Result};

/// Environment variables naming the library, in the order they are consulted.
pub const PATH_VARIABLES: [&str; 2] = ["ESPINNET_ORT_PATH", "ORT_DYLIB_PATH"];

/// Set to `1` before the library loads, this turns ONNX Runtime's own telemetry off (on
/// Linux from 1.29, on by default in the PyPI wheel). Without it the library keeps a device
/// identifier and a database of events to upload to Microsoft (the program's path among
/// them) under `~/.cache/Microsoft`, synced to disk at exit; turning telemetry off on the
/// environment (`with_telemetry(false)`) comes too late to stop either. Beamline software
/// reports nothing of its users' work.
pub const TELEMETRY_VARIABLE: &str = "ORT_DISABLE_TELEMETRY";

/// Sets [`TELEMETRY_VARIABLE`] to `1` where it is not set (a value the user gave stays),
/// before ONNX Runtime loads. Hosts call this first thing in `main`, while they have one
/// thread, as the command-line tool does: the library sets it itself when it first loads
/// ONNX Runtime otherwise, which is only sound where no other thread is reading or
/// changing the environment at that moment.
pub fn disable_telemetry() {
    if std::env::var_os(TELEMETRY_VARIABLE).is_none() {
        // SAFETY: as the doc says; each caller states why no other thread touches the
        // environment now.
        unsafe { std::env::set_var(TELEMETRY_VARIABLE, "1") };
    }
}

/// The environment of the library loaded in this process, and where it came from.
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Where the library is taken from, and why (for messages and summaries).
pub fn locate(explicit: Option<&Path>) -> Result<(PathBuf, &'static str)> {
    if let Some(p) = explicit {
        return Ok((p.to_path_buf(), "explicit option"));
    }
    for var in PATH_VARIABLES {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Ok((PathBuf::from(v), var));
        }
    }
    if let Some(p) = std::env::var_os("VIRTUAL_ENV").and_then(|v| wheel_library(Path::new(&v))) {
        return Ok((p, "VIRTUAL_ENV"));
    }
    Err(Error::Runtime(
        "library not found: set ESPINNET_ORT_PATH to libonnxruntime.so.1.* (for example from \
         `pip install onnxruntime`: site-packages/onnxruntime/capi/), or activate the Python \
         environment it is installed in"
            .into(),
    ))
}

/// `libonnxruntime.so.<version>` inside a Python environment's `onnxruntime` wheel.
pub fn wheel_library(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let mut found: Vec<PathBuf> = lib
        .flatten()
        .map(|python| python.path().join("site-packages/onnxruntime/capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|dir| dir.flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so.") || n == "libonnxruntime.so")
        })
        .collect();
    found.sort();
    found.pop()
}

/// The process's ONNX Runtime environment, loading the library on first use.
///
/// One library per process: asking for a different path once one is loaded is an error.
pub fn environment(explicit: Option<&Path>) -> Result<(Environment, PathBuf)> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, env)) = loaded.as_ref() {
        if let Some(p) = explicit
            && p != path
        {
            return Err(Error::Runtime(format!(
                "already loaded from {} in this process; cannot also load {}",
                path.display(),
                p.display()
            )));
        }
        return Ok((env.clone(), path.clone()));
    }
    let (path, source) = locate(explicit)?;
    if !path.is_file() {
        return Err(Error::Runtime(format!(
            "{} (from {source}) is not a file",
            path.display()
        )));
    }
    // A damaged file would kill the process inside dlopen (SIGBUS): look at it first.
    check_library(&path)
        .map_err(|e| Error::Runtime(format!("{} (from {source}): {e}", path.display())))?;
    // Where the host has not (the Python package, the Tango server and the command-line
    // tool have, before their first thread): once per process, under `LOADED`'s lock.
    disable_telemetry();
    let build = || -> std::result::Result<Environment, String> {
        ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("espinnet")
            // The later events too, should the user have set TELEMETRY_VARIABLE otherwise.
            .with_telemetry(false)
            .with_logger(std::sync::Arc::new(forward_log))
            .build()
            .map_err(|e| e.to_string())
    };
    // `ort` asserts on some malformed libraries; keep that a clear error too.
    let clock = std::time::Instant::now();
    let env = std::panic::catch_unwind(build)
        .map_err(|p| crate::error::panic_message(p.as_ref()))
        .and_then(|r| r)
        .map_err(|e| Error::Runtime(format!("{} (from {source}): {e}", path.display())))?;
    // Without it the sessions use arenas of their own.
    if let Err(e) = register_cpu_arena(&env) {
        log::warn!("ONNX Runtime: {e}");
    }
    log::info!(
        "ONNX Runtime loaded from {} ({source}) in {:.3} s",
        path.display(),
        clock.elapsed().as_secs_f64()
    );
    *loaded = Some((path.clone(), env.clone()));
    Ok((env, path))
}

/// Registers the environment's CPU arena, which the CPU sessions share
/// ([`ort::session::builder::SessionBuilder::with_env_allocators`]), growing by what each
/// allocation asks rather than by powers of two (the sessions' own arenas). Measured with
/// ONNX Runtime 1.31 on tiles of 560² × 20: 43 MiB less at its peak, and 74 MiB less once
/// shrunk after a reconstruction's last call, when the guard and the phase integration
/// run; no slower.
fn register_cpu_arena(env: &Environment) -> std::result::Result<(), String> {
    use ort::AsPointer;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    let info = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )
    .map_err(|e| e.to_string())?;
    let api = ort::api();
    let check = |status: ort::sys::OrtStatusPtr| match status.0.is_null() {
        true => Ok(()),
        // SAFETY: a non-null status from this API, read once and released.
        false => unsafe {
            let message = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0));
            let message = message.to_string_lossy().into_owned();
            (api.ReleaseStatus)(status.0);
            Err(format!("could not register its CPU arena: {message}"))
        },
    };
    let (keys, values) = ([c"arena_extend_strategy".as_ptr()], [1usize]); // kSameAsRequested
    let mut config = std::ptr::null_mut();
    // SAFETY: one key and one value, as counted; the configuration is released after use
    // (ONNX Runtime copies it), and the memory info outlives the call.
    unsafe {
        check((api.CreateArenaCfgV2)(
            keys.as_ptr(),
            values.as_ptr(),
            1,
            &mut config,
        ))?;
        let status = (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), config);
        (api.ReleaseArenaCfg)(config);
        check(status)
    }
}

/// ONNX Runtime's messages go to `log` (target `onnxruntime`) rather than its own stderr
/// writer, which would break a host's output and a one-line error.
///
/// Its errors are logged at info: ONNX Runtime also returns each one, and that returned
/// error, in full, is what the caller gets. Its warnings are about performance.
fn forward_log(level: LogLevel, _category: &str, _id: &str, location: &str, message: &str) {
    log::log!(target: "onnxruntime", log_level(level), "{message} ({location})");
}

fn log_level(level: LogLevel) -> log::Level {
    match level {
        LogLevel::Verbose => log::Level::Trace,
        LogLevel::Info => log::Level::Debug,
        LogLevel::Warning | LogLevel::Error => log::Level::Info,
        LogLevel::Fatal => log::Level::Error,
    }
}

/// The least severe level a session should produce: ONNX Runtime formats every message at
/// or above it, so messages nobody will see are not made.
pub fn session_log_level() -> LogLevel {
    [LogLevel::Verbose, LogLevel::Info, LogLevel::Warning]
        .into_iter()
        .find(|&l| log::log_enabled!(target: "onnxruntime", log_level(l)))
        .unwrap_or(LogLevel::Fatal)
}

/// Checks that an ELF shared library's headers and loadable segments lie inside the file,
/// so that a truncated or damaged file is an error rather than a signal in `dlopen`.
/// Other platforms' formats pass unchecked.
pub fn check_library(path: &Path) -> std::result::Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut header = [0u8; 64];
    if file.read_exact(&mut header).is_err() || &header[..4] != b"\x7fELF" {
        return Err("not an ELF shared library".into());
    }
    if header[4] != 2 || header[5] != 1 {
        return Err("not a 64-bit little-endian library".into());
    }
    let u16_at = |b: &[u8], i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let (ph_off, sh_off) = (u64_at(&header, 32), u64_at(&header, 40));
    let (ph_size, ph_num) = (u16_at(&header, 54), u16_at(&header, 56));
    let (sh_size, sh_num) = (u16_at(&header, 58), u16_at(&header, 60));
    let truncated = |end: u64, what: &str| {
        format!("truncated or damaged: its {what} end at byte {end}, the file has {len}")
    };
    for (offset, size, num, what) in [
        (ph_off, ph_size, ph_num, "program headers"),
        (sh_off, sh_size, sh_num, "section headers"),
    ] {
        let end = offset.saturating_add(size * num);
        if num > 0 && (end > len || size < 56) {
            return Err(truncated(end, what));
        }
    }
    let mut table = vec![0u8; (ph_size * ph_num) as usize];
    file.seek(SeekFrom::Start(ph_off))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(|e| e.to_string())?;
    for entry in table.chunks_exact(ph_size as usize) {
        const PT_LOAD: u32 = 1;
        let kind = u32::from_le_bytes(entry[..4].try_into().unwrap());
        let end = u64_at(entry, 8).saturating_add(u64_at(entry, 32));
        if kind == PT_LOAD && end > len {
            return Err(truncated(end, "loadable segments"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_libraries_are_refused_before_dlopen() {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv");
        let Some(good) = wheel_library(&venv) else {
            panic!(
                "no ONNX Runtime in {}: run scripts/setup.sh",
                venv.display()
            );
        };
        assert_eq!(check_library(&good), Ok(()));
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(&good).unwrap();
        for (name, data) in [
            ("half.so", &bytes[..bytes.len() / 2]),
            ("header.so", &bytes[..64]),
            ("text.so", &b"not a library at all"[..]),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            let e = check_library(&path).unwrap_err();
            assert!(
                e.contains("truncated") || e.contains("not an ELF"),
                "{name}: {e}"
            );
        }
    }
}
