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

use crate::error::{Error, Result};

/// Environment variables naming the library, in the order they are consulted.
pub const PATH_VARIABLES: [&str; 2] = ["ESPINNET_ORT_PATH", "ORT_DYLIB_PATH"];

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
    let build = || -> std::result::Result<Environment, String> {
        ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("espinnet")
            .build()
            .map_err(|e| e.to_string())
    };
    // `ort` asserts on some malformed libraries; keep that a clear error too.
    let env = std::panic::catch_unwind(build)
        .map_err(|p| crate::error::panic_message(p.as_ref()))
        .and_then(|r| r)
        .map_err(|e| Error::Runtime(format!("{} (from {source}): {e}", path.display())))?;
    log::info!("ONNX Runtime loaded from {} ({source})", path.display());
    *loaded = Some((path.clone(), env.clone()));
    Ok((env, path))
}
