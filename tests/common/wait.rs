//! Waiting for a condition instead of sleeping for a guessed time.

use std::time::{Duration, Instant};

/// Poll `done` (every 10 ms) until it holds; panic naming `what` if it does not within `timeout`.
/// `done` is called at least once, and once more after the deadline, so a slow machine that wakes
/// late does not fail a condition that holds.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        let late = start.elapsed() >= timeout;
        if done() {
            return;
        }
        if late {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
