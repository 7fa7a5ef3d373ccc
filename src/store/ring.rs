//! Live rings: a `live` channel is a fully allocated, shared mapping of `capacity` bytes that one
//! publisher appends to. Offsets are logical and only grow; offset N lives at N mod capacity, and the
//! window [head − capacity, head) stays readable (a DVR window). The head and the *write intent* (how far
//! the publisher may write before the next durable commit) are persisted with the same commit protocol as
//! upload slots, so that after any crash the recovered window never includes bytes that a later write may
//! have overwritten on disk (ARCHITECTURE.md, "Live rings").

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::VecDeque;

use super::commit::{CommitDone, CommitJob, CommitState};
use super::data_file::WritableFile;
use super::{Availability, IngestBlock, WriteRefusal, unix_secs};
use crate::tsindex::{Keyframe, PTS_CLOCK_HZ, PTS_MODULUS, TS_PACKET_SIZE, TsIndexer};

/// `MetaRecord::video_kind` of a live ring.
pub const KIND_CODE_LIVE: u8 = 3;
const RING_PAYLOAD_VERSION: u8 = 1;
const RING_PAYLOAD_LEN: usize = 1 + 6 * 8;

/// What a ring's metadata records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingState {
    pub generation: u64,
    pub modified: SystemTime,
    /// Logical offset one past the last published byte.
    pub head: u64,
    /// The publisher may write up to here before a newer intent is durable. Bytes below
    /// `intent - capacity` may have been overwritten on disk, so they are never claimed after a crash.
    pub intent: u64,
    /// The lowest offset the window may start at (raised by recovery).
    pub floor: u64,
    /// Where the current (or last) publish session started: the alignment base for TS followers.
    pub session_start: u64,
}

/// How many recent claims keep their time, for the follower delay histogram (claim → send).
const CLAIM_TIMES: usize = 1024;

/// How far ahead of the durable intent the publisher asks for the next one (a fraction of the ring, so
/// a crash loses at most that fraction of the oldest window).
fn intent_step(capacity: u64) -> u64 {
    (capacity / 8).max(1)
}

impl RingState {
    /// The state as recovery trusts it: bytes below `intent - capacity` may have been overwritten by
    /// writes the record allowed, so the floor rises to there (never past the head).
    pub fn recovered(mut self, capacity: u64) -> RingState {
        self.floor = self
            .floor
            .max(self.intent.saturating_sub(capacity))
            .min(self.head);
        self
    }

    /// The first readable offset of a ring of `capacity` bytes in this state.
    pub fn window_start(&self, capacity: u64) -> u64 {
        self.floor.max(self.head.saturating_sub(capacity))
    }

    pub fn fresh(capacity: u64) -> RingState {
        RingState {
            generation: 1,
            modified: SystemTime::now(),
            head: 0,
            intent: intent_step(capacity),
            floor: 0,
            session_start: 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(RING_PAYLOAD_LEN);
        p.push(RING_PAYLOAD_VERSION);
        for v in [
            self.generation,
            unix_secs(self.modified),
            self.head,
            self.intent,
            self.floor,
            self.session_start,
        ] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    }

    pub fn decode(p: &[u8], capacity: u64) -> Result<RingState, String> {
        if p.len() != RING_PAYLOAD_LEN {
            return Err(format!(
                "live payload is {} bytes, expected {RING_PAYLOAD_LEN}",
                p.len()
            ));
        }
        if p[0] != RING_PAYLOAD_VERSION {
            return Err(format!("unknown live payload version {}", p[0]));
        }
        let mut v = [0u64; 6];
        for (i, x) in v.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[1 + 8 * i..9 + 8 * i]);
            *x = u64::from_le_bytes(b);
        }
        let st = RingState {
            generation: v[0],
            modified: UNIX_EPOCH + Duration::from_secs(v[1]),
            head: v[2],
            intent: v[3],
            floor: v[4],
            session_start: v[5],
        };
        if st.head > st.intent || st.floor > st.head || st.session_start > st.head || capacity == 0
        {
            return Err(format!(
                "live record is inconsistent (head {}, intent {}, floor {}, session start {})",
                st.head, st.intent, st.floor, st.session_start
            ));
        }
        Ok(st)
    }
}

/// Most keyframes a live index keeps (older ones also leave with the window).
const MAX_LIVE_KEYFRAMES: usize = 100_000;

/// The keyframes of the current publish session of an MPEG-TS channel, kept as bytes arrive, so that
/// timecodes seek inside the DVR window. Rebuilt from the next session after a restart (not persisted).
pub struct LiveIndex {
    indexer: TsIndexer,
    /// In offset order; only keyframes inside the window.
    pub keyframes: VecDeque<Keyframe>,
}

impl LiveIndex {
    /// PTS ticks from `a` forward to `b`, modulo the 33-bit wrap.
    fn ticks_between(a: u64, b: u64) -> u64 {
        (b + PTS_MODULUS - a % PTS_MODULUS) % PTS_MODULUS
    }

    /// The offset of the last keyframe at least `secs_back` seconds before the newest keyframe.
    pub fn seconds_behind_edge(&self, secs_back: u64) -> Option<u64> {
        let newest = self.keyframes.back()?;
        let want = secs_back.checked_mul(PTS_CLOCK_HZ)?;
        self.keyframes
            .iter()
            .rev()
            .find(|k| Self::ticks_between(k.pts, newest.pts) >= want)
            .map(|k| k.offset)
    }

    /// The offset of the last keyframe at or before `secs` seconds (and `frac` of a second, in
    /// 90 kHz ticks) after the session's first keyframe still in the window.
    pub fn at_stream_time(&self, ticks: u64) -> Option<u64> {
        let first = self.keyframes.front()?;
        self.keyframes
            .iter()
            .rev()
            .find(|k| Self::ticks_between(first.pts, k.pts) <= ticks)
            .map(|k| k.offset)
    }
}

/// A live channel's ring.
pub struct LiveRing {
    pub data: WritableFile,
    pub commit: CommitState,
    pub state: RingState,
    /// The intent of the newest durable record: no byte is written at or beyond it.
    durable_intent: u64,
    /// The intent carried by the durable commit in flight.
    inflight_intent: Option<u64>,
    /// The publish session holding the channel, if any.
    pub publisher: Option<u64>,
    next_publisher: u64,
    /// Publish sessions that have ended since start (followers finish once one has).
    pub sessions_ended: u64,
    /// Followers streaming from this channel now.
    pub followers: usize,
    /// Keep a keyframe index of each publish session (video/mp2t channels).
    pub ts_index: bool,
    pub index: Option<LiveIndex>,
    /// (start offset, when it was claimed) of the most recent claims, oldest first.
    claim_times: VecDeque<(u64, Instant)>,
}

impl LiveRing {
    pub fn new(data: WritableFile, commit: CommitState, state: RingState) -> LiveRing {
        let capacity = data.len;
        assert!(capacity > 0, "a live ring of 0 bytes");
        assert!(
            state.floor <= state.head && state.head <= state.intent,
            "ring state was not checked by RingState::decode"
        );
        let state = state.recovered(capacity);
        LiveRing {
            data,
            commit,
            // Until a new intent is durable nothing is written: the durable record on disk may be
            // older than the record recovered (a fast one) and allow less.
            durable_intent: state.head,
            inflight_intent: None,
            state,
            publisher: None,
            next_publisher: 1,
            sessions_ended: 0,
            followers: 0,
            ts_index: false,
            index: None,
            claim_times: VecDeque::with_capacity(CLAIM_TIMES),
        }
    }

    /// The invariants every method keeps: nothing is claimed at or past the durable intent (so every
    /// recovered window is honest), and the window starts at or before the head.
    fn assert_invariants(&self) {
        assert!(
            self.state.head <= self.durable_intent,
            "ring head {} past the durable intent {}",
            self.state.head,
            self.durable_intent
        );
        assert!(
            self.window_start() <= self.state.head,
            "ring window starts at {}, past the head {}",
            self.window_start(),
            self.state.head
        );
    }

    /// When the byte at `offset` was claimed, if that claim is among the recent ones.
    pub fn claimed_at(&self, offset: u64) -> Option<Instant> {
        if offset >= self.state.head {
            return None;
        }
        let i = self
            .claim_times
            .partition_point(|&(start, _)| start <= offset);
        i.checked_sub(1).map(|i| self.claim_times[i].1)
    }

    fn note_claim_time(&mut self, start: u64) {
        if self.claim_times.len() == CLAIM_TIMES {
            self.claim_times.pop_front();
        }
        assert!(
            self.claim_times.back().is_none_or(|&(s, _)| s < start),
            "claims advance"
        );
        self.claim_times.push_back((start, Instant::now()));
    }

    pub fn capacity(&self) -> u64 {
        self.data.len
    }

    /// Where logical offset `offset` lives in the mapping.
    pub fn position(&self, offset: u64) -> u64 {
        offset % self.capacity()
    }

    /// The first readable offset.
    pub fn window_start(&self) -> u64 {
        self.state.window_start(self.capacity())
    }

    /// Present bytes run up to the head or the ring's wrap point, whichever is first, so that every
    /// Present run is one contiguous slice of the mapping.
    pub fn availability(&self, offset: u64) -> Availability {
        if offset < self.window_start() {
            Availability::Gone
        } else if offset < self.state.head {
            let wrap = offset - self.position(offset) + self.capacity();
            Availability::Present(self.state.head.min(wrap))
        } else {
            Availability::Pending
        }
    }

    /// Take the channel for one publisher.
    pub fn begin_publish(&mut self) -> Result<u64, WriteRefusal> {
        if let Some(why) = self.commit.poisoned() {
            return Err(WriteRefusal::Busy(format!(
                "this channel is unavailable: {why}"
            )));
        }
        if self.publisher.is_some() {
            return Err(WriteRefusal::PublisherActive);
        }
        let id = self.next_publisher;
        self.next_publisher += 1;
        self.publisher = Some(id);
        self.state.session_start = self.state.head;
        if self.ts_index {
            self.index = Some(LiveIndex {
                indexer: TsIndexer::new(self.state.head),
                keyframes: VecDeque::new(),
            });
        }
        self.commit.bump();
        self.assert_invariants();
        Ok(id)
    }

    pub fn end_publish(&mut self, writer: u64) {
        if self.publisher == Some(writer) {
            self.publisher = None;
            self.sessions_ended += 1;
        }
    }

    /// A clean stop, after every connection is closed: nothing was written past the head and nothing
    /// will be, so the final record's intent is the head and recovery keeps the whole window.
    pub fn settle_for_shutdown(&mut self) {
        if self.publisher.is_none() && self.state.intent > self.state.head {
            self.state.intent = self.state.head;
            self.durable_intent = self.durable_intent.min(self.state.head);
            self.commit.bump();
        }
        self.assert_invariants();
    }

    /// Whether `forget_all` would be accepted (no publisher on, the channel not poisoned).
    pub fn check_forget(&self) -> Result<(), WriteRefusal> {
        if let Some(why) = self.commit.poisoned() {
            return Err(WriteRefusal::Busy(format!(
                "this channel is unavailable: {why}"
            )));
        }
        match self.publisher {
            None => Ok(()),
            Some(_) => Err(WriteRefusal::Busy(
                "the channel is being published to".into(),
            )),
        }
    }

    /// DELETE: forget the window (nothing is claimed any more; the data file stays allocated).
    pub fn forget_all(&mut self) -> Result<(), WriteRefusal> {
        self.check_forget()?;
        self.state.floor = self.state.head;
        self.state.generation += 1;
        self.state.modified = SystemTime::now();
        self.commit.bump();
        assert_eq!(
            self.window_start(),
            self.state.head,
            "a forgotten window is empty"
        );
        Ok(())
    }

    /// Where a follower starts: the live edge, on a TS packet boundary of the session if `ts_aligned`
    /// (followers of a video/mp2t channel start on a packet).
    pub fn follow_start(&self, ts_aligned: bool) -> u64 {
        let head = self.state.head;
        if !ts_aligned {
            return head;
        }
        let base = self.state.session_start;
        assert!(base <= head, "session start {base} past the head {head}");
        let packet = TS_PACKET_SIZE as u64;
        let aligned = base + (head - base) / packet * packet;
        aligned.max(self.window_start())
    }

    /// The writable bytes at the head for the publisher, at most `max`, never past the wrap point or
    /// the durable write intent. Raises the intent ahead of time so the publisher rarely waits. A write
    /// by anyone but the current publisher, or not at the head, is a bug and panics.
    pub fn write_target(
        &mut self,
        writer: u64,
        offset: u64,
        max: u64,
    ) -> Result<&mut [u8], IngestBlock> {
        assert_eq!(self.publisher, Some(writer), "a write by a stale publisher");
        assert_eq!(offset, self.state.head, "a live write not at the head");
        let step = intent_step(self.capacity());
        let head = self.state.head;
        if self.durable_intent.saturating_sub(head) < step / 2 + 1 {
            let want = head + step;
            if self.state.intent < want {
                self.state.intent = want;
                self.commit.bump();
            }
        }
        let allowed = self.durable_intent - head;
        if allowed == 0 {
            return Err(IngestBlock::AwaitCommit);
        }
        let pos = self.position(head);
        let n = max.min(allowed).min(self.capacity() - pos);
        // The target is inside the mapping and ends at or before the wrap point and the durable intent.
        assert!(pos + n <= self.capacity() && head + n <= self.durable_intent);
        let (a, b) = (pos as usize, (pos + n) as usize);
        assert!(
            b <= self.data.write_map.len(),
            "ring mapping shorter than its capacity"
        );
        Ok(&mut self.data.write_map[a..b])
    }

    /// The publisher's bytes [start, end) are in the mapping: advance the head. Returns `end`: a claim
    /// is always recorded. A claim by anyone but the publisher, not at the head, or past the durable
    /// intent (the invariant that keeps every recovered window honest) is a bug and panics.
    pub fn claim(&mut self, writer: u64, start: u64, end: u64) -> u64 {
        assert_eq!(
            self.publisher,
            Some(writer),
            "a live claim by a stale publisher"
        );
        assert!(
            start == self.state.head && start <= end && end <= self.durable_intent,
            "live claim {start}..{end} refused (head {}, durable intent {})",
            self.state.head,
            self.durable_intent
        );
        if end > start {
            self.state.head = end;
            self.state.modified = SystemTime::now();
            self.note_claim_time(start);
            self.commit.bump();
            self.index_bytes(start, end);
        }
        self.assert_invariants();
        end
    }

    /// A relay's upstream continues at `to`, at or past the head (its window moved on while the relay
    /// was away): the head jumps there so that offset N stays the upstream's byte N. The window starts
    /// afresh at `to` (the bytes between the old head and `to` never arrive, so the old window is not
    /// continued). Writes below the newest durable intent are safe at any offset (a window recovered
    /// from that record ends below it); a jump past it writes nothing until an intent past the new head
    /// is durable, so a crash before then recovers the old window untouched.
    pub fn jump_head(&mut self, writer: u64, to: u64) {
        assert_eq!(self.publisher, Some(writer), "a jump by a stale publisher");
        assert!(to >= self.state.head, "a ring head never moves back");
        if to == self.state.head {
            return;
        }
        self.state.head = to;
        self.state.floor = to;
        self.state.session_start = to;
        self.state.intent = self.state.intent.max(to + intent_step(self.capacity()));
        self.state.modified = SystemTime::now();
        // Nothing is written at or past it: with `to` past the durable intent, nothing at all until
        // the new intent lands (commit_done raises it).
        self.durable_intent = self.durable_intent.max(to);
        if self.ts_index {
            self.index = Some(LiveIndex {
                indexer: TsIndexer::new(to),
                keyframes: VecDeque::new(),
            });
        }
        self.commit.bump();
        assert_eq!(self.window_start(), to, "a jumped window starts empty");
        self.assert_invariants();
    }

    /// Feed newly published bytes [start, end) (contiguous in the mapping) to the keyframe index.
    fn index_bytes(&mut self, start: u64, end: u64) {
        let window_start = self.window_start();
        let pos = self.position(start) as usize;
        let len = (end - start) as usize;
        let Some(ix) = self.index.as_mut() else {
            return;
        };
        let Some(bytes) = self.data.map.get(pos..pos + len) else {
            return;
        };
        ix.keyframes.extend(ix.indexer.feed(bytes));
        while ix
            .keyframes
            .front()
            .is_some_and(|k| k.offset < window_start)
            || ix.keyframes.len() > MAX_LIVE_KEYFRAMES
        {
            ix.keyframes.pop_front();
        }
    }

    /// A new write intent is waiting to become durable.
    pub fn intent_commit_wanted(&self) -> bool {
        self.state.intent > self.durable_intent
    }

    pub fn commit_job(&mut self, id: &str) -> Option<CommitJob> {
        if !self.commit.checkpoint_due() {
            return None;
        }
        assert!(
            self.state.head <= self.state.intent,
            "a record whose head passes its intent"
        );
        let payload = self.state.encode();
        let job = self.commit.commit_job(id, &self.data.file, payload)?;
        self.inflight_intent = Some(self.state.intent);
        Some(job)
    }

    pub fn commit_done(&mut self, done: &CommitDone) {
        if self.commit.commit_done(done)
            && let Some(i) = self.inflight_intent
        {
            self.durable_intent = self.durable_intent.max(i);
        }
        self.inflight_intent = None;
        self.assert_invariants();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_checks() {
        let st = RingState {
            generation: 3,
            modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            head: 5000,
            intent: 6000,
            floor: 100,
            session_start: 4000,
        };
        assert_eq!(RingState::decode(&st.encode(), 4096), Ok(st.clone()));
        let mut bad = st.clone();
        bad.head = 7000; // past the intent
        assert!(RingState::decode(&bad.encode(), 4096).is_err());
        let mut short = st.encode();
        short.pop();
        assert!(RingState::decode(&short, 4096).is_err());
        let mut v = st.encode();
        v[0] = 9;
        assert!(RingState::decode(&v, 4096).is_err());
    }

    #[test]
    fn intent_step_is_an_eighth() {
        assert_eq!(intent_step(8 << 20), 1 << 20);
        assert_eq!(intent_step(4), 1);
    }
}
