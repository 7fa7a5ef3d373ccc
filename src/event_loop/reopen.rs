//! Configured videos that could not be opened, and when to try again. A video whose data file is
//! locked by another process — an old vcache still shutting down during a restart — is retried every
//! `LOCKED_RETRY` for up to `limits.shutdown_timeout_ms + LOCK_WAIT_MARGIN`, then less often; any other
//! failure is retried with a doubling back-off up to `MAX_BACKOFF`. The opens run on the commit worker
//! (`OpenJob`), never on the loop; this module only keeps the schedule and says what to log.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::routes::{UnavailableReason, unavailable_reason};

/// How often a video whose files are locked is tried while an old process may still be shutting down.
pub const LOCKED_RETRY: Duration = Duration::from_millis(100);
/// Added to `limits.shutdown_timeout_ms` (the old process's own bound) before a lock is reported as
/// held for good: the old process still commits and closes its files after its grace ends.
pub const LOCK_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// First and last back-off for a video that fails to open for another reason (and for a lock held past
/// the wait).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One video waiting to be opened again.
#[derive(Debug)]
struct Pending {
    /// When it was first found unavailable.
    since: Instant,
    next_try: Instant,
    /// An `OpenJob` for it is on the commit worker.
    in_flight: bool,
    /// Failed attempts so far.
    failures: u32,
    /// The message last logged (a repeated failure is not logged again).
    last_message: String,
    /// The lock wait ran out and was reported.
    lock_wait_reported: bool,
}

/// What the loop should log after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// Nothing new.
    Quiet,
    /// Its files are locked: waiting for the old process (`wait` at most).
    WaitingForLock { wait: Duration },
    /// Still locked after the wait: something else holds them.
    LockHeldTooLong { waited: Duration },
    /// Another failure, or a new message.
    Failed,
}

/// The schedule of every configured video that is not open.
#[derive(Debug, Default)]
pub struct Reopen {
    videos: BTreeMap<String, Pending>,
    /// How long a lock is waited for at the fast pace.
    lock_wait: Duration,
}

impl Reopen {
    pub fn new(shutdown_timeout: Duration) -> Reopen {
        Reopen {
            videos: BTreeMap::new(),
            lock_wait: shutdown_timeout + LOCK_WAIT_MARGIN,
        }
    }

    /// A video failed to open (first time, or again) with `message`: schedule its next attempt and say
    /// what to log.
    pub fn failed(&mut self, id: &str, message: &str, now: Instant) -> Report {
        let lock_wait = self.lock_wait;
        let p = self.videos.entry(id.to_string()).or_insert(Pending {
            since: now,
            next_try: now,
            in_flight: false,
            failures: 0,
            last_message: String::new(),
            lock_wait_reported: false,
        });
        p.in_flight = false;
        p.failures = p.failures.saturating_add(1);
        let first = p.failures == 1;
        let new_message = p.last_message != message;
        p.last_message = message.to_string();
        let waited = now.duration_since(p.since);
        if unavailable_reason(message) == UnavailableReason::Locked {
            if waited < lock_wait {
                p.next_try = now + LOCKED_RETRY;
                return match first || new_message {
                    true => Report::WaitingForLock { wait: lock_wait },
                    false => Report::Quiet,
                };
            }
            p.next_try = now + FIRST_BACKOFF;
            if !std::mem::replace(&mut p.lock_wait_reported, true) {
                return Report::LockHeldTooLong { waited };
            }
            return Report::Quiet;
        }
        let shift = p.failures.saturating_sub(1).min(6);
        p.next_try = now + (FIRST_BACKOFF * (1 << shift)).min(MAX_BACKOFF);
        if first || new_message {
            Report::Failed
        } else {
            Report::Quiet
        }
    }

    /// It opened (or is no longer configured): forget its schedule. Returns how long it had waited and
    /// after how many failed attempts, if it was waiting.
    pub fn done(&mut self, id: &str, now: Instant) -> Option<(Duration, u32)> {
        self.videos
            .remove(id)
            .map(|p| (now.duration_since(p.since), p.failures))
    }

    /// Is an attempt for it on the commit worker?
    pub fn in_flight(&self, id: &str) -> bool {
        self.videos.get(id).is_some_and(|p| p.in_flight)
    }

    /// The videos due for another attempt now; they are marked in flight.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for (id, p) in self.videos.iter_mut() {
            if !p.in_flight && p.next_try <= now {
                p.in_flight = true;
                due.push(id.clone());
            }
        }
        due
    }

    /// An attempt could not be submitted (or its video is gone from the config): not in flight.
    pub fn not_submitted(&mut self, id: &str) {
        if let Some(p) = self.videos.get_mut(id) {
            p.in_flight = false;
        }
    }

    /// Keep only the videos `keep` says are still configured (a reload removed the others); an attempt
    /// in flight stays, its result is dropped (`done`) when it comes.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.videos.retain(|id, p| p.in_flight || keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKED: &str =
        "the data file is locked by another process (is another vcache using this data_dir?)";

    #[test]
    fn a_locked_video_is_tried_every_100ms_during_the_wait_then_every_second() {
        let mut r = Reopen::new(Duration::from_millis(300));
        let t0 = Instant::now();
        let wait = Duration::from_millis(300) + LOCK_WAIT_MARGIN;
        assert_eq!(r.failed("a", LOCKED, t0), Report::WaitingForLock { wait });
        assert!(r.take_due(t0).is_empty());
        assert_eq!(r.take_due(t0 + LOCKED_RETRY), vec!["a".to_string()]);
        assert!(r.in_flight("a"));
        assert!(
            r.take_due(t0 + LOCKED_RETRY).is_empty(),
            "one attempt at a time"
        );
        assert_eq!(r.failed("a", LOCKED, t0 + LOCKED_RETRY), Report::Quiet);
        let late = t0 + wait;
        assert_eq!(
            r.failed("a", LOCKED, late),
            Report::LockHeldTooLong { waited: wait }
        );
        assert!(r.take_due(late + LOCKED_RETRY).is_empty());
        assert_eq!(r.take_due(late + FIRST_BACKOFF).len(), 1);
        assert_eq!(r.failed("a", LOCKED, late + FIRST_BACKOFF), Report::Quiet);
        assert_eq!(r.done("a", late + FIRST_BACKOFF).map(|d| d.1), Some(4));
    }

    #[test]
    fn other_failures_back_off_to_a_minute_and_are_logged_when_they_change() {
        let mut r = Reopen::new(Duration::from_secs(10));
        let mut now = Instant::now();
        assert_eq!(r.failed("b", "missing file", now), Report::Failed);
        let mut gaps = Vec::new();
        for _ in 0..9 {
            let due = (1..=120)
                .map(|s| now + Duration::from_secs(s))
                .find(|t| !r.take_due(*t).is_empty())
                .expect("due within two minutes");
            gaps.push(due.duration_since(now).as_secs());
            now = due;
            assert_eq!(r.failed("b", "missing file", now), Report::Quiet);
        }
        assert_eq!(gaps, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(r.failed("b", "another problem", now), Report::Failed);
    }

    #[test]
    fn a_removed_video_is_forgotten_unless_an_attempt_is_in_flight() {
        let mut r = Reopen::new(Duration::ZERO);
        let now = Instant::now();
        r.failed("x", "e", now);
        r.failed("y", "e", now);
        assert_eq!(r.take_due(now + MAX_BACKOFF).len(), 2);
        r.not_submitted("x");
        r.retain(|_| false);
        assert!(!r.in_flight("x") && r.done("x", now).is_none());
        assert!(r.in_flight("y"));
    }
}
