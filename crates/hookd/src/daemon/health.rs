//! What `/readyz` reports: whether the dispatcher runs, whether hookd is draining, and the
//! first essential task that failed. Written by the supervisor and the dispatcher, read by
//! the API.

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

/// Process state behind `/readyz`.
#[derive(Default)]
pub struct Health {
    pub dispatching: AtomicBool,
    pub draining: AtomicBool,
    /// The first essential task that ended unexpectedly, and how (see `supervisor`).
    failure: OnceLock<String>,
}

impl Health {
    /// Marks the process failed, for good; the first reason stays.
    pub fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }
}
