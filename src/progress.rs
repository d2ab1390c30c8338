//! Progress reports and cancellation for long calls.
//!
//! An engine calls [`Progress::report`] with the fraction done (0 to 1) as work units finish
//! (tracker bands, network tiles), possibly from several threads; returning `false` asks it
//! to stop, and the call then returns [`Error::Cancelled`] at the next unit boundary.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Receives progress; `false` cancels the call.
pub trait Progress: Sync {
    fn report(&self, fraction_done: f64) -> bool;
}

impl<F: Fn(f64) -> bool + Sync> Progress for F {
    fn report(&self, fraction_done: f64) -> bool {
        self(fraction_done)
    }
}

/// No reports, never cancels.
pub const NONE: &dyn Progress = &|_: f64| true;

/// Counts finished units of a call and remembers a cancellation.
pub(crate) struct Units<'a> {
    progress: &'a dyn Progress,
    total: usize,
    done: AtomicUsize,
    cancelled: AtomicBool,
}

impl<'a> Units<'a> {
    pub fn new(progress: &'a dyn Progress, total: usize) -> Self {
        Units {
            progress,
            total: total.max(1),
            done: AtomicUsize::new(0),
            cancelled: AtomicBool::new(false),
        }
    }

    /// Whether work should go on (checked before each unit).
    pub fn go_on(&self) -> bool {
        !self.cancelled.load(Ordering::Relaxed)
    }

    /// One unit finished.
    pub fn finish_one(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.progress.report(done as f64 / self.total as f64) {
            self.cancelled.store(true, Ordering::Relaxed);
        }
    }

    /// [`Error::Cancelled`] if any report asked to stop.
    pub fn check(&self) -> Result<()> {
        if self.go_on() {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    }
}
