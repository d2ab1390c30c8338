//! The boundary: results become statuses, panics are caught, the cause is kept per thread.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::EspStatus;

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Failure(pub EspStatus, pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        // The whole cause chain, outermost first.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Failure(EspStatus::from(&e), message)
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn clear_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::default());
}

/// Runs `f`, turning a panic into a `Panic` failure with its message.
pub(crate) fn contain<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = crate::error::panic_message(panic.as_ref());
        Err(Failure(
            EspStatus::Panic,
            format!("internal error (please report): {what}"),
        ))
    })
}

/// Runs `f`, which cannot fail, at an entry point without a status: a panic gives
/// `fallback` (and its message as the thread's last error); otherwise the last error is
/// left as it was, so that freeing handles before reporting keeps the message.
pub(crate) fn quiet<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match contain(|| Ok(f())) {
        Ok(v) => v,
        Err(Failure(_, message)) => {
            set_error(&message);
            fallback
        }
    }
}

/// Runs `f`, mapping its error or panic to a status and the thread's last-error message.
pub(crate) fn ffi(f: impl FnOnce() -> Result<(), Failure>) -> EspStatus {
    match contain(f) {
        // Cleared after the call: a progress callback may have made a failing call on
        // this thread meanwhile.
        Ok(()) => {
            clear_error();
            EspStatus::Ok
        }
        Err(Failure(status, message)) => {
            set_error(&message);
            status
        }
    }
}

/// The message of the last failed call on this thread ("" after a successful call). Valid
/// until the next call on the same thread.
#[unsafe(no_mangle)]
pub extern "C" fn esp_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn a_panic_becomes_a_status_with_its_message() {
        let status = ffi(|| panic!("deliberate test panic"));
        assert_eq!(status, EspStatus::Panic);
        let msg = unsafe { CStr::from_ptr(esp_last_error()) }
            .to_str()
            .unwrap();
        assert!(msg.contains("deliberate test panic"), "{msg}");
        assert_eq!(ffi(|| Ok(())), EspStatus::Ok);
        assert_eq!(unsafe { CStr::from_ptr(esp_last_error()) }.to_bytes(), b"");
        // A failure inside a successful call (a callback's) leaves no stale message.
        let status = ffi(|| {
            ffi(|| Err(Failure(EspStatus::InvalidArgument, "inner".into())));
            Ok(())
        });
        assert_eq!(status, EspStatus::Ok);
        assert_eq!(unsafe { CStr::from_ptr(esp_last_error()) }.to_bytes(), b"");
    }
}
