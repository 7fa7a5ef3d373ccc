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
use crate::tsindex::{
    Keyframe, MAX_TABLE_RUN_PACKETS, PTS_CLOCK_HZ, PTS_MODULUS, TS_PACKET_SIZE, TsIndexer,
};

/// `MetaRecord::video_kind` of a live ring.
pub const KIND_CODE_LIVE: u8 = 3;
/// Version 1 records hold no segment numbering (read as `SegmentNumbering::default()`).
const RING_PAYLOAD_V1: u8 = 1;
const RING_PAYLOAD_V1_LEN: usize = 1 + 6 * 8;
const RING_PAYLOAD_V2: u8 = 2;
const RING_PAYLOAD_V2_LEN: usize = 1 + 12 * 8;
/// Version 3 adds the fMP4 init segment: offset u64, length u32, bytes.
const RING_PAYLOAD_VERSION: u8 = 3;
/// `SegmentNumbering::open_offset` when the current session has no keyframe yet.
pub const NO_OPEN_SEGMENT: u64 = u64::MAX;

/// How the HLS segments of a channel are numbered, persisted in every ring record so that media
/// sequence numbers, discontinuity numbers and program date-times continue across restarts and ring
/// wraps (they are never derived from process memory). A segment is one keyframe interval (GOP) of a
/// publish session; it gets its number when the next keyframe of the same session closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentNumbering {
    /// The media sequence number the open segment will get when it closes.
    pub next_seq: u64,
    /// Offset of the keyframe that starts the open segment (`NO_OPEN_SEGMENT` if none).
    pub open_offset: u64,
    /// Discontinuity number of the current session's segments.
    pub disc: u64,
    /// Whether a segment has been numbered in `disc` (the next session then takes `disc + 1`).
    pub disc_used: bool,
    /// PTS (90 kHz) of the open segment's keyframe and its program date-time (ms since the epoch);
    /// `clock_ms == 0`: the session has no clock yet.
    pub clock_pts: u64,
    pub clock_ms: u64,
}

impl Default for SegmentNumbering {
    fn default() -> Self {
        SegmentNumbering {
            next_seq: 0,
            open_offset: NO_OPEN_SEGMENT,
            disc: 0,
            disc_used: false,
            clock_pts: 0,
            clock_ms: 0,
        }
    }
}

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
    /// HLS segment numbering (media sequence, discontinuities, date-times).
    pub numbering: SegmentNumbering,
    /// The fMP4 init segment (`ftyp` + `moov`) of the latest session that sent one, and where it
    /// started; kept in the record because the ring overwrites it (at most `fmp4::MAX_INIT_BYTES`).
    pub init_offset: u64,
    pub init: Vec<u8>,
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
            numbering: SegmentNumbering::default(),
            init_offset: 0,
            init: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(RING_PAYLOAD_V2_LEN + 12 + self.init.len());
        p.push(RING_PAYLOAD_VERSION);
        for v in [
            self.generation,
            unix_secs(self.modified),
            self.head,
            self.intent,
            self.floor,
            self.session_start,
            self.numbering.next_seq,
            self.numbering.open_offset,
            self.numbering.disc,
            u64::from(self.numbering.disc_used),
            self.numbering.clock_pts,
            self.numbering.clock_ms,
        ] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(p.len(), RING_PAYLOAD_V2_LEN);
        assert!(
            self.init.len() <= crate::fmp4::MAX_INIT_BYTES,
            "an init segment over its bound"
        );
        p.extend_from_slice(&self.init_offset.to_le_bytes());
        p.extend_from_slice(&(self.init.len() as u32).to_le_bytes());
        p.extend_from_slice(&self.init);
        p
    }

    /// The init segment of a version 3 payload.
    fn decode_init(p: &[u8]) -> Result<(u64, Vec<u8>), String> {
        let at = RING_PAYLOAD_V2_LEN;
        let (Some(off), Some(len)) = (p.get(at..at + 8), p.get(at + 8..at + 12)) else {
            return Err(format!(
                "live payload is {} bytes, too short for version 3",
                p.len()
            ));
        };
        let offset = u64::from_le_bytes(off.try_into().map_err(|_| "init offset")?);
        let len = u32::from_le_bytes(len.try_into().map_err(|_| "init length")?) as usize;
        if len > crate::fmp4::MAX_INIT_BYTES {
            return Err(format!(
                "live record's init segment is {len} bytes, over the bound"
            ));
        }
        let bytes = p
            .get(at + 12..at + 12 + len)
            .ok_or("live record's init segment is cut")?;
        Ok((offset, bytes.to_vec()))
    }

    pub fn decode(p: &[u8], capacity: u64) -> Result<RingState, String> {
        let (init_offset, init) = match p.first() {
            Some(&RING_PAYLOAD_VERSION) => Self::decode_init(p)?,
            _ => (0, Vec::new()),
        };
        let want = match p.first() {
            Some(&RING_PAYLOAD_V1) => RING_PAYLOAD_V1_LEN,
            Some(&RING_PAYLOAD_V2) => RING_PAYLOAD_V2_LEN,
            Some(&RING_PAYLOAD_VERSION) => RING_PAYLOAD_V2_LEN + 12 + init.len(),
            Some(&other) => return Err(format!("unknown live payload version {other}")),
            None => return Err("live payload is empty".into()),
        };
        if p.len() != want {
            return Err(format!(
                "live payload is {} bytes, expected {want}",
                p.len()
            ));
        }
        let mut v = [0u64; 12];
        for (i, x) in v
            .iter_mut()
            .enumerate()
            .take((want.min(RING_PAYLOAD_V2_LEN) - 1) / 8)
        {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[1 + 8 * i..9 + 8 * i]);
            *x = u64::from_le_bytes(b);
        }
        let numbering = if want == RING_PAYLOAD_V1_LEN {
            SegmentNumbering::default()
        } else {
            SegmentNumbering {
                next_seq: v[6],
                open_offset: v[7],
                disc: v[8],
                disc_used: v[9] != 0,
                clock_pts: v[10],
                clock_ms: v[11],
            }
        };
        let st = RingState {
            generation: v[0],
            modified: UNIX_EPOCH + Duration::from_secs(v[1]),
            head: v[2],
            intent: v[3],
            floor: v[4],
            session_start: v[5],
            numbering,
            init_offset,
            init,
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

/// Most keyframes (and segments) a live index keeps (older ones also leave with the window).
const MAX_LIVE_KEYFRAMES: usize = 100_000;
/// A keyframe interval longer than this (a PTS jump) does not make a segment: the bytes before the
/// jump are left out of the playlist and a discontinuity follows.
pub const MAX_SEGMENT_TICKS: u64 = 60 * PTS_CLOCK_HZ;

/// The part target of LL-HLS partial segments: a part is as many whole frames as fit in it.
pub const PART_TARGET_MS: u64 = 200;
/// Closed segments whose frame starts are kept for their parts (LL-HLS lists the parts of the last
/// few segments only).
const PARTS_KEPT_SEGMENTS: usize = 4;
/// Most frame starts kept per segment (a longer GOP lists no parts past them).
const MAX_FRAMES_PER_SEGMENT: usize = 4096;

/// An LL-HLS partial segment: bytes [offset, end) from one frame start to a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpan {
    pub offset: u64,
    pub end: u64,
    pub ticks: u64,
}

/// The complete parts of a segment whose frames start at `frames` (the first is its keyframe), each
/// `per_part` frames of `frame_ticks`; the last one ends at `end` if the segment is closed.
fn parts_of(frames: &[u64], end: Option<u64>, per_part: usize, frame_ticks: u64) -> Vec<PartSpan> {
    assert!(per_part > 0, "a part holds at least one frame");
    let mut parts = Vec::with_capacity(frames.len() / per_part + 1);
    for (i, chunk) in frames.chunks(per_part).enumerate() {
        let part_end = frames.get((i + 1) * per_part).copied().or(end);
        let Some(part_end) = part_end else {
            break; // the open part: not complete yet
        };
        let ticks = chunk.len() as u64 * frame_ticks;
        parts.push(PartSpan {
            offset: chunk[0],
            end: part_end,
            ticks,
        });
    }
    parts
}

/// One HLS media segment of a channel: the bytes of one keyframe interval of one publish session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the keyframe's TS packet; the segment is [offset, end).
    pub offset: u64,
    pub end: u64,
    /// Duration in 90 kHz ticks (keyframe to next keyframe).
    pub ticks: u64,
    pub seq: u64,
    pub disc: u64,
    /// Program date-time of its first frame, ms since the epoch.
    pub pdt_ms: u64,
}

/// The keyframes of the current publish session of an MPEG-TS channel and the closed segments of every
/// session still in the window, kept as bytes arrive; rebuilt from the window after a restart
/// (`LiveRing::rebuild_index`), numbered by the ring's persisted `SegmentNumbering`.
pub struct LiveIndex {
    indexer: TsIndexer,
    /// In offset order; only keyframes of the current session inside the window.
    pub keyframes: VecDeque<Keyframe>,
    /// Closed segments inside the window, in offset order, numbered consecutively within a run.
    pub segments: VecDeque<Segment>,
    /// The longest segment seen since start, in ticks (a playlist's target duration never shrinks).
    pub max_ticks: u64,
    /// Frame starts of the open segment (its keyframe first), for LL-HLS parts.
    open_frames: Vec<u64>,
    /// (seq, frame starts) of the last closed segments.
    recent_frames: VecDeque<(u64, Vec<u64>)>,
    /// A frame's duration, from the last closed segment (0 until one has closed).
    frame_ticks: u64,
}

/// Which of the keyframes `found` again after a restart is the open segment's: the one at its
/// offset, or the one with its PTS within a run of tables (`tsindex::MAX_TABLE_RUN_PACKETS`) of it —
/// a record written before keyframes started at the tables in front of them, or a window that now
/// starts inside those tables.
fn open_keyframe_in(found: &[Keyframe], n: &SegmentNumbering) -> Option<usize> {
    let run = MAX_TABLE_RUN_PACKETS * TS_PACKET_SIZE as u64;
    found
        .iter()
        .position(|k| k.offset == n.open_offset)
        .or_else(|| {
            found
                .iter()
                .position(|k| k.pts == n.clock_pts && k.offset.abs_diff(n.open_offset) <= run)
        })
}

/// PTS ticks from `a` forward to `b`, modulo the 33-bit wrap.
pub fn ticks_between(a: u64, b: u64) -> u64 {
    (b % PTS_MODULUS + PTS_MODULUS - a % PTS_MODULUS) % PTS_MODULUS
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1)
}

impl LiveIndex {
    fn new(base: u64) -> LiveIndex {
        LiveIndex {
            indexer: TsIndexer::tracking_frames(base),
            keyframes: VecDeque::new(),
            segments: VecDeque::new(),
            max_ticks: 0,
            open_frames: Vec::new(),
            recent_frames: VecDeque::with_capacity(PARTS_KEPT_SEGMENTS + 1),
            frame_ticks: 0,
        }
    }

    /// Frames per LL-HLS part, once a frame's duration is known.
    fn frames_per_part(&self) -> Option<usize> {
        let per = (PART_TARGET_MS * (PTS_CLOCK_HZ / 1000)).checked_div(self.frame_ticks)?;
        Some(per.max(1) as usize)
    }

    /// Whether a part (whole frames, or whole fragments of an fMP4 channel) lasts at most the part
    /// target: a fragmented MP4 publisher's fragments may be longer (one per keyframe interval).
    pub fn parts_fit_target(&self) -> bool {
        self.frame_ticks > 0 && self.frame_ticks <= PART_TARGET_MS * (PTS_CLOCK_HZ / 1000)
    }

    /// The complete parts of the open segment.
    pub fn open_parts(&self) -> Vec<PartSpan> {
        match self.frames_per_part() {
            Some(per) => parts_of(&self.open_frames, None, per, self.frame_ticks),
            None => Vec::new(),
        }
    }

    /// The parts of closed segment `seg`, if its frames are still kept.
    pub fn closed_parts(&self, seg: &Segment) -> Option<Vec<PartSpan>> {
        let per = self.frames_per_part()?;
        let (_, frames) = self.recent_frames.iter().find(|(seq, _)| *seq == seg.seq)?;
        Some(parts_of(frames, Some(seg.end), per, self.frame_ticks))
    }

    /// Where the complete LL-HLS parts of the open segment end: the start of its first part still
    /// being published (the segment's start while parts are not known). None without an open segment.
    pub fn complete_parts_end(&self, n: &SegmentNumbering) -> Option<u64> {
        if n.open_offset == NO_OPEN_SEGMENT {
            return None;
        }
        let complete_frames = match (self.frames_per_part(), self.open_frames.len()) {
            (Some(per), frames @ 1..) => (frames - 1) / per * per,
            _ => 0,
        };
        let end = self.open_frames.get(complete_frames).copied();
        Some(end.unwrap_or(n.open_offset).max(n.open_offset))
    }

    /// Whether segment `msn` (and its part `part`) is in the playlist: what a blocking playlist
    /// reload (`_HLS_msn`, `_HLS_part`) waits for.
    pub fn part_available(&self, n: &SegmentNumbering, msn: u64, part: Option<u64>) -> bool {
        let open_seq = n.next_seq;
        if msn < open_seq {
            return true;
        }
        match part {
            Some(p) if msn == open_seq && n.open_offset != NO_OPEN_SEGMENT => {
                self.open_parts().len() as u64 > p
            }
            _ => false,
        }
    }

    /// Frame starts arrived (any order against keyframes: a keyframe splits them by offset).
    fn add_frames(&mut self, frames: &[Keyframe]) {
        for f in frames {
            if self.open_frames.len() < MAX_FRAMES_PER_SEGMENT
                && self.open_frames.last().is_none_or(|&last| last < f.offset)
            {
                self.open_frames.push(f.offset);
            }
        }
    }

    /// The frames before `at` leave the open segment (they belonged to the one just closed, `seq`).
    fn split_frames(&mut self, at: u64, closed: Option<u64>) {
        let keep = self.open_frames.partition_point(|&o| o < at);
        let before: Vec<u64> = self.open_frames.drain(..keep).collect();
        if let Some(seq) = closed
            && !before.is_empty()
        {
            if self.recent_frames.len() == PARTS_KEPT_SEGMENTS {
                self.recent_frames.pop_front();
            }
            self.recent_frames.push_back((seq, before));
        }
    }

    /// The offset of the last keyframe at least `secs_back` seconds before the newest keyframe.
    pub fn seconds_behind_edge(&self, secs_back: u64) -> Option<u64> {
        let newest = self.keyframes.back()?;
        let want = secs_back.checked_mul(PTS_CLOCK_HZ)?;
        self.keyframes
            .iter()
            .rev()
            .find(|k| ticks_between(k.pts, newest.pts) >= want)
            .map(|k| k.offset)
    }

    /// The offset of the last keyframe at or before `secs` seconds (and `frac` of a second, in
    /// 90 kHz ticks) after the session's first keyframe still in the window.
    pub fn at_stream_time(&self, ticks: u64) -> Option<u64> {
        let first = self.keyframes.front()?;
        self.keyframes
            .iter()
            .rev()
            .find(|k| ticks_between(first.pts, k.pts) <= ticks)
            .map(|k| k.offset)
    }

    /// A keyframe of the current session arrived: it closes the open segment (numbered `next_seq`)
    /// and opens the next one.
    fn add_keyframe(&mut self, n: &mut SegmentNumbering, k: Keyframe) {
        if self.keyframes.back().is_some_and(|b| b.offset >= k.offset) {
            return; // the indexer reports in offset order; a repeat is ignored
        }
        if n.open_offset != NO_OPEN_SEGMENT {
            assert!(n.open_offset < k.offset, "segments advance");
            let ticks = ticks_between(n.clock_pts, k.pts);
            if ticks == 0 {
                self.keyframes.push_back(k);
                return; // same time: the open segment goes on
            }
            if ticks > MAX_SEGMENT_TICKS {
                n.disc += u64::from(n.disc_used);
                n.disc_used = false;
                n.clock_ms = unix_ms_now();
                self.split_frames(k.offset, None);
            } else {
                let seq = n.next_seq;
                let frames = self.open_frames.partition_point(|&o| o < k.offset) as u64;
                self.close_segment(n, k.offset, ticks);
                if let Some(per_frame) = ticks.checked_div(frames) {
                    self.frame_ticks = per_frame;
                }
                self.split_frames(k.offset, Some(seq));
            }
        } else {
            if n.clock_ms == 0 {
                n.clock_ms = unix_ms_now();
            }
            self.split_frames(k.offset, None);
        }
        n.open_offset = k.offset;
        n.clock_pts = k.pts;
        self.keyframes.push_back(k);
    }

    fn close_segment(&mut self, n: &mut SegmentNumbering, end: u64, ticks: u64) {
        let seg = Segment {
            offset: n.open_offset,
            end,
            ticks,
            seq: n.next_seq,
            disc: n.disc,
            pdt_ms: n.clock_ms,
        };
        assert!(
            self.segments
                .back()
                .is_none_or(|b| b.end <= seg.offset && b.seq < seg.seq),
            "segments are numbered in offset order"
        );
        self.segments.push_back(seg);
        self.max_ticks = self.max_ticks.max(ticks);
        n.next_seq += 1;
        n.disc_used = true;
        n.clock_ms += ticks / (PTS_CLOCK_HZ / 1000);
    }

    /// Drop what left the window (or exceeds the bounds).
    fn trim(&mut self, window_start: u64) {
        while self
            .keyframes
            .front()
            .is_some_and(|k| k.offset < window_start)
            || self.keyframes.len() > MAX_LIVE_KEYFRAMES
        {
            self.keyframes.pop_front();
        }
        while self
            .segments
            .front()
            .is_some_and(|s| s.offset < window_start)
            || self.segments.len() > MAX_LIVE_KEYFRAMES
        {
            self.segments.pop_front();
        }
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
    /// Parse fragmented MP4 (video/mp4 channels): the init segment and sync fragments.
    pub mp4_index: bool,
    fmp4: Option<crate::fmp4::Fmp4Indexer>,
    /// The newest `moof` of a sync sample in the window, of the current (or last) session.
    latest_sync_moof: Option<u64>,
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
            mp4_index: false,
            fmp4: None,
            latest_sync_moof: None,
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

    /// What a follower of the HLS resource (`stream.ts`, `stream.mp4`) may send from `offset`: the
    /// bytes of whole parts only (RFC 8216bis §6.2.6: a part in progress is held back until all its
    /// bytes can go), so an open range at a `#EXT-X-PRELOAD-HINT` gets each part whole, once complete.
    /// With no publisher every byte is final.
    pub fn whole_parts_availability(&self, offset: u64) -> Availability {
        let avail = self.availability(offset);
        let edge = match (&self.index, self.publisher) {
            (Some(ix), Some(_)) => ix.complete_parts_end(&self.state.numbering),
            _ => None,
        };
        match (avail, edge) {
            (Availability::Present(end), Some(edge)) if edge > offset => {
                Availability::Present(end.min(edge))
            }
            (Availability::Present(_), Some(_)) => Availability::Pending,
            (avail, _) => avail,
        }
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
        self.start_session_at_head();
        self.commit.bump();
        self.assert_invariants();
        Ok(id)
    }

    /// A session's bytes start at the head (a publisher begins, or a relay's head jumps): the
    /// session's indexes start afresh there.
    fn start_session_at_head(&mut self) {
        self.state.session_start = self.state.head;
        if self.mp4_index {
            self.fmp4 = Some(crate::fmp4::Fmp4Indexer::new(self.state.head));
            self.latest_sync_moof = None;
        }
        if self.ts_index || self.mp4_index {
            let n = &mut self.state.numbering;
            n.disc += u64::from(n.disc_used);
            n.disc_used = false;
            n.open_offset = NO_OPEN_SEGMENT;
            n.clock_ms = 0;
            let fresh = LiveIndex::new(self.state.head);
            let ix = self.index.get_or_insert(fresh);
            ix.indexer = TsIndexer::tracking_frames(self.state.head);
            ix.keyframes.clear();
            ix.open_frames.clear();
        }
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

    /// The offset of the newest keyframe inside the window (of the current or last session), if any.
    pub fn latest_keyframe(&self) -> Option<u64> {
        if let Some(m) = self.latest_sync_moof {
            assert!(m <= self.state.head, "a moof past the head");
            return (m >= self.window_start()).then_some(m);
        }
        let k = self.index.as_ref()?.keyframes.back()?;
        assert!(k.offset <= self.state.head, "a keyframe past the head");
        (k.offset >= self.window_start()).then_some(k.offset)
    }

    /// Where a follower that names no start begins: the newest keyframe in the window (so a player
    /// starts decoding at once), else the live edge, on a TS packet boundary of the session if `ts_aligned`
    /// (followers of a video/mp2t channel start on a packet).
    pub fn follow_start(&self, ts_aligned: bool) -> u64 {
        let head = self.state.head;
        if let Some(k) = self.latest_keyframe() {
            return k;
        }
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
        self.state.intent = self.state.intent.max(to + intent_step(self.capacity()));
        self.state.modified = SystemTime::now();
        // Nothing is written at or past it: with `to` past the durable intent, nothing at all until
        // the new intent lands (commit_done raises it).
        self.durable_intent = self.durable_intent.max(to);
        self.start_session_at_head();
        self.commit.bump();
        assert_eq!(self.window_start(), to, "a jumped window starts empty");
        self.assert_invariants();
    }

    /// Feed newly published bytes [start, end) (contiguous in the mapping) to the fMP4 parser.
    fn index_fmp4(&mut self, start: u64, end: u64) {
        let pos = self.position(start) as usize;
        let len = (end - start) as usize;
        let (Some(parser), Some(bytes)) = (self.fmp4.as_mut(), self.data.map.get(pos..pos + len))
        else {
            return;
        };
        for event in parser.feed(bytes) {
            match event {
                crate::fmp4::Fmp4Event::Init { offset, bytes } => {
                    self.state.init_offset = offset;
                    self.state.init = bytes;
                }
                crate::fmp4::Fmp4Event::Fragment { offset, sync, time } => {
                    if sync {
                        self.latest_sync_moof = Some(offset);
                    }
                    if let (Some(ix), Some(pts)) = (self.index.as_mut(), time) {
                        // HLS segments: a fragment is a frame (a part's unit), a sync one a keyframe.
                        let k = Keyframe { offset, pts };
                        ix.add_frames(&[k]);
                        if sync {
                            ix.add_keyframe(&mut self.state.numbering, k);
                        }
                    }
                }
            }
        }
        let window_start = self.window_start();
        if let Some(ix) = self.index.as_mut() {
            ix.trim(window_start);
        }
    }

    /// After a restart: find the newest sync `moof` of the window again (from the session's start
    /// if it is still in the window, else from the first `moof` found in it).
    pub fn rebuild_fmp4(&mut self) {
        if !self.mp4_index {
            return;
        }
        let window_start = self.window_start();
        let runs = self.mapped_runs(window_start, self.state.head);
        let session = self.state.session_start;
        let mut parser: Option<crate::fmp4::Fmp4Indexer> = None;
        let mut found = Vec::new();
        let mut at = window_start;
        for (a, b) in runs {
            let Some(bytes) = self.data.map.get(a..b) else {
                return;
            };
            let mut from = 0usize;
            if parser.is_none() {
                let start = if session >= at && session < at + bytes.len() as u64 {
                    Some(session)
                } else {
                    crate::fmp4::find_moof(bytes, at)
                };
                let Some(start) = start else {
                    at += bytes.len() as u64;
                    continue;
                };
                from = (start - at) as usize;
                parser = Some(self.fmp4_rescanner(start));
            }
            if let Some(p) = parser.as_mut() {
                for event in p.feed(&bytes[from..]) {
                    if let crate::fmp4::Fmp4Event::Fragment {
                        offset,
                        sync: true,
                        time,
                    } = event
                    {
                        self.latest_sync_moof = Some(offset);
                        found.extend(time.map(|pts| Keyframe { offset, pts }));
                    }
                }
            }
            at += bytes.len() as u64;
        }
        // Segments after the last session's start only, as for MPEG-TS channels.
        found.retain(|k| k.offset >= session);
        self.renumber_found(&found);
    }

    /// The fMP4 parser of a rescan from `start`: primed with the kept init segment when it belongs
    /// to the session and `start` is past it (the window lost it).
    fn fmp4_rescanner(&self, start: u64) -> crate::fmp4::Fmp4Indexer {
        let st = &self.state;
        if !st.init.is_empty() && st.init_offset >= st.session_start && start > st.init_offset {
            crate::fmp4::Fmp4Indexer::primed(start, &st.init)
        } else {
            crate::fmp4::Fmp4Indexer::new(start)
        }
    }

    /// The init segment a follower starting at `from` needs first: the channel's, when `from` is past
    /// it inside the session it belongs to (a follower from the session's start reads it in place).
    pub fn init_prefix(&self, from: u64) -> Option<&[u8]> {
        let st = &self.state;
        let same_session = st.init_offset >= st.session_start;
        (self.mp4_index && !st.init.is_empty() && same_session && from > st.init_offset)
            .then_some(st.init.as_slice())
    }

    /// Feed newly published bytes [start, end) (contiguous in the mapping) to the keyframe index.
    fn index_bytes(&mut self, start: u64, end: u64) {
        self.index_fmp4(start, end);
        let window_start = self.window_start();
        let pos = self.position(start) as usize;
        let len = (end - start) as usize;
        let Some(ix) = self.index.as_mut().filter(|_| self.ts_index) else {
            return;
        };
        let Some(bytes) = self.data.map.get(pos..pos + len) else {
            return;
        };
        let keyframes = ix.indexer.feed(bytes);
        let frames = ix.indexer.take_frame_starts();
        ix.add_frames(&frames);
        for k in keyframes {
            ix.add_keyframe(&mut self.state.numbering, k);
        }
        ix.trim(window_start);
    }

    /// After a restart: index the current session's bytes still in the window again, and number its
    /// segments from the persisted numbering — the segment that was open when the record was written
    /// keeps `next_seq`, the ones before it count down from there — so that media sequence numbers,
    /// discontinuities and date-times continue. Earlier sessions' segments are not listed again.
    pub fn rebuild_index(&mut self) {
        if !self.ts_index {
            return;
        }
        let start = self.window_start().max(self.state.session_start);
        let mut indexer = TsIndexer::new(start);
        let mut found = Vec::new();
        for (a, b) in self.mapped_runs(start, self.state.head) {
            if let Some(bytes) = self.data.map.get(a..b) {
                found.extend(indexer.feed(bytes));
            }
        }
        found.extend(indexer.finish());
        self.renumber_found(&found);
    }

    /// Index the keyframes `found` in the window again (a restart), numbered from the persisted
    /// numbering.
    fn renumber_found(&mut self, found: &[Keyframe]) {
        let mut ix = LiveIndex::new(self.state.head);
        let n = &mut self.state.numbering;
        let open = open_keyframe_in(found, n);
        match open {
            Some(j) => {
                n.open_offset = found[j].offset;
                Self::renumber_before(&mut ix, n, &found[..=j]);
            }
            None => {
                // The open segment was not found again: what is found is numbered as new.
                n.open_offset = NO_OPEN_SEGMENT;
                n.clock_ms = 0;
            }
        }
        for k in &found[open.map_or(0, |j| j + 1)..] {
            ix.add_keyframe(n, *k);
        }
        ix.trim(self.state.window_start(self.data.len));
        self.index = Some(ix);
    }

    /// Segments between the keyframes `ks` (the last is the open segment's), numbered back from it.
    fn renumber_before(ix: &mut LiveIndex, n: &SegmentNumbering, ks: &[Keyframe]) {
        let Some((open, before)) = ks.split_last() else {
            return;
        };
        let mut ends_ms = n.clock_ms;
        let mut segs = Vec::with_capacity(before.len());
        for (i, pair) in ks.windows(2).enumerate().rev() {
            let ticks = ticks_between(pair[0].pts, pair[1].pts);
            let back = (before.len() - i) as u64;
            if ticks == 0 || ticks > MAX_SEGMENT_TICKS || n.next_seq < back {
                break;
            }
            let pdt_ms = ends_ms.saturating_sub(ticks / (PTS_CLOCK_HZ / 1000));
            segs.push(Segment {
                offset: pair[0].offset,
                end: pair[1].offset,
                ticks,
                seq: n.next_seq - back,
                disc: n.disc,
                pdt_ms,
            });
            ends_ms = pdt_ms;
        }
        segs.reverse();
        for s in &segs {
            ix.max_ticks = ix.max_ticks.max(s.ticks);
        }
        ix.segments.extend(segs);
        ix.keyframes.extend(before.iter().copied());
        ix.keyframes.push_back(*open);
    }

    /// The mapping's byte ranges holding logical [start, end) (two when it crosses the wrap point).
    fn mapped_runs(&self, start: u64, end: u64) -> Vec<(usize, usize)> {
        let mut runs = Vec::with_capacity(2);
        let mut at = start;
        while at < end {
            let pos = self.position(at);
            let n = (end - at).min(self.capacity() - pos);
            runs.push((pos as usize, (pos + n) as usize));
            at += n;
        }
        runs
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
            numbering: SegmentNumbering {
                next_seq: 77,
                open_offset: 4512,
                disc: 3,
                disc_used: true,
                clock_pts: 123_456,
                clock_ms: 1_700_000_000_123,
            },
            init_offset: 4000,
            init: b"ftyp and moov".to_vec(),
        };
        assert_eq!(RingState::decode(&st.encode(), 4096), Ok(st.clone()));
        // A version 2 record (no init segment) still reads.
        let mut v2 = st.encode()[..RING_PAYLOAD_V2_LEN].to_vec();
        v2[0] = RING_PAYLOAD_V2;
        let older = RingState::decode(&v2, 4096).expect("v2 payload");
        assert_eq!((older.numbering, older.init.len()), (st.numbering, 0));
        let mut cut = st.encode();
        cut.pop();
        assert!(RingState::decode(&cut, 4096).is_err(), "a cut init segment");
        // A version 1 record (no numbering) still reads, numbered from scratch.
        let mut v1 = st.encode()[..RING_PAYLOAD_V1_LEN].to_vec();
        v1[0] = RING_PAYLOAD_V1;
        let old = RingState::decode(&v1, 4096).expect("v1 payload");
        assert_eq!(old.numbering, SegmentNumbering::default());
        assert_eq!(old.head, st.head);
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
    fn the_open_keyframe_is_found_at_its_offset_or_behind_its_tables_in_an_older_record() {
        let k = |offset, pts| Keyframe { offset, pts };
        let found = [k(0, 100), k(18_800, 190), k(37_600, 280)];
        let numbering = |open_offset, clock_pts| SegmentNumbering {
            open_offset,
            clock_pts,
            ..SegmentNumbering::default()
        };
        assert_eq!(open_keyframe_in(&found, &numbering(18_800, 190)), Some(1));
        // An older record named the keyframe's own packet, after three table packets.
        assert_eq!(
            open_keyframe_in(&found, &numbering(18_800 + 3 * 188, 190)),
            Some(1)
        );
        // The window now starts inside its tables: found a few packets later.
        assert_eq!(
            open_keyframe_in(&found, &numbering(18_800 - 2 * 188, 190)),
            Some(1)
        );
        // Not its PTS, or too far past the tables: not found.
        assert_eq!(
            open_keyframe_in(&found, &numbering(18_800 + 3 * 188, 280)),
            None
        );
        assert_eq!(
            open_keyframe_in(&found, &numbering(18_800 + 9 * 188, 190)),
            None
        );
    }

    #[test]
    fn intent_step_is_an_eighth() {
        assert_eq!(intent_step(8 << 20), 1 << 20);
        assert_eq!(intent_step(4), 1);
    }
}
