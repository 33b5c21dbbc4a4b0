//! Turning a panic while handling one input (a manifest, a chart template) into an
//! error that names that input, so a bad revision is rejected like any invalid one
//! instead of taking the process and every supervised workload down with it. Code
//! that handles a file enters a [`scope`] naming it; [`catch`] runs a step and
//! reports the innermost file that was open when a panic began.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Files being handled on this thread, innermost last.
    static OPEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The innermost file open when the current panic began.
    static PANICKED_IN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks a file as being handled until dropped.
#[must_use = "the scope ends when dropped"]
pub struct Scope(());

/// Enters a scope naming `file`.
pub fn scope(file: &str) -> Scope {
    OPEN.with(|o| o.borrow_mut().push(file.to_string()));
    let scope = Scope(());
    #[cfg(test)]
    inject::check(file);
    scope
}

impl Drop for Scope {
    fn drop(&mut self) {
        let file = OPEN.with(|o| o.borrow_mut().pop());
        // Unwinding drops the innermost scope first: it names the file.
        if std::thread::panicking() {
            PANICKED_IN.with(|p| {
                let mut p = p.borrow_mut();
                if p.is_none() {
                    *p = file;
                }
            });
        }
    }
}

/// A caught panic: its message and the file being handled, if known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caught {
    /// The innermost file in scope when the panic began.
    pub file: Option<String>,
    /// The panic's message.
    pub message: String,
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `f`, turning a panic into [`Caught`]. The caller must not reuse state `f`
/// left half-changed (hence the `AssertUnwindSafe`: callers reset their caches).
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Caught> {
    PANICKED_IN.with(|p| p.borrow_mut().take());
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Caught {
        file: PANICKED_IN.with(|p| p.borrow_mut().take()),
        message: message(payload.as_ref()),
    })
}

/// Test-only: make entering the scope of a given file panic, to check that callers
/// survive panics in code that has none left to find.
#[cfg(test)]
pub mod inject {
    use std::sync::Mutex;

    static FILES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Panics whenever a scope for `file` is entered.
    pub fn panic_on(file: &str) {
        FILES.lock().unwrap().push(file.to_string());
    }

    pub(super) fn check(file: &str) {
        let hit = FILES.lock().unwrap().iter().any(|f| f == file);
        if hit {
            panic!("injected panic for {file}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_innermost_open_file() {
        let got = catch(|| {
            let _outer = scope("releases/web.yaml");
            let _inner = scope("web/templates/deploy.yaml");
            panic!("boom {}", 1);
        })
        .unwrap_err();
        assert_eq!(got.file.as_deref(), Some("web/templates/deploy.yaml"));
        assert_eq!(got.message, "boom 1");
        // Scopes closed by the unwind are gone; a later panic with no scope names none.
        let got = catch(|| panic!("plain")).unwrap_err();
        assert_eq!(got.file, None);
        assert_eq!(catch(|| 7), Ok(7));
    }
}
