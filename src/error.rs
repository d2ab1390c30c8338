//! The one error type of the library: every fallible public function returns [`Result`].
//!
//! Variants are coarse on purpose (they map one-to-one onto the C ABI status codes later);
//! the message says which input was wrong and how.

use std::path::PathBuf;

/// Errors of the espinnet library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter is out of its valid range (the message names it and the range).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Two inputs that must agree in shape do not.
    #[error("shape mismatch: {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        what: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// An input holds NaN or infinite values.
    #[error("{input} holds {count} non-finite value(s), first at index {first:?}")]
    NonFinite {
        input: String,
        count: usize,
        first: Vec<usize>,
    },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its content cannot be used (wrong format, type, dataset, rank).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },

    /// The network model is missing, unreadable or does not match the runtime's contract.
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },

    /// The ONNX Runtime library cannot be found, loaded or used.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),

    /// The memory a call needs is more than the system can provide or the caller allowed
    /// (`memory_limit_mib`); found before the work starts (see `memory.rs`).
    #[error("out of memory: {what}{}, {available}", needs(*.need_mib))]
    OutOfMemory {
        what: String,
        /// What it needs at its peak (MiB); 0 if not known.
        need_mib: u64,
        available: String,
    },

    /// The caller's progress callback asked to stop.
    #[error("cancelled")]
    Cancelled,

    /// An execution provider that was asked for explicitly cannot be registered.
    #[error("execution provider {provider} unavailable: {reason}")]
    ProviderUnavailable { provider: String, reason: String },
}

fn needs(mib: u64) -> String {
    match mib {
        0 => String::new(),
        n => format!(" needs about {n} MiB"),
    }
}

/// Result with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Format {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn model(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Model {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Fails with [`Error::InvalidArgument`] unless `value` is finite and > 0.
pub(crate) fn require_positive(name: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{name} must be finite and > 0, got {value}"
        )))
    }
}

/// The message a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
