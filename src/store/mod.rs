//! The store: every configured video and the bytes it holds. `file` videos are read-only mappings of the
//! operator's files; `upload` slots are fully allocated, shared, writable mappings in the data directory
//! with a presence map of the byte ranges that have arrived and a two-plus-two slot metadata file (see
//! ARCHITECTURE.md, "Durability protocol"). Everything here runs on the event-loop thread except the
//! syncs, which go to the commit worker (`commit`).

pub mod commit;
pub mod data_file;
pub mod meta;
pub mod mounts;
pub mod origin;
pub mod presence;
pub mod ring;
pub mod space;

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::Token;

use crate::config::{Config, VideoConfig, VideoKind};
use commit::{CommitDone, CommitJob, CommitState, Recovered};
use data_file::{DataFileError, ReadOnlyFile, WritableFile, WritePattern};
use meta::{BootId, MetaFile, MetaRecord};
pub use origin::OriginVideo;
use presence::PresenceMap;
pub use ring::{KIND_CODE_LIVE, LiveRing, RingState};

/// `MetaRecord::video_kind` codes: a metadata file of one kind is never opened as another.
pub const KIND_CODE_UPLOAD: u8 = 2;

/// Version of the upload-slot payload layout inside a metadata record.
const UPLOAD_PAYLOAD_VERSION: u8 = 1;
/// The same with an origin validator after the modification time.
const ORIGIN_PAYLOAD_VERSION: u8 = 2;
/// Longest origin validator kept.
pub const MAX_VALIDATOR_LEN: usize = 1024;
/// Version of a fast record's delta payload (`Slot::delta_payload`).
const DELTA_PAYLOAD_VERSION: u8 = 1;
/// Bytes of a delta payload before its ranges, with the longest validator.
const DELTA_FIXED_LEN: usize = 1 + 8 + 8 + 2 + MAX_VALIDATOR_LEN + 4;
/// Bytes of a slot payload before its presence map, with the longest validator.
const UPLOAD_FIXED_LEN: usize = 1 + 8 + 8 + 2 + MAX_VALIDATOR_LEN + presence::ENCODED_COUNT_LEN;
/// The most ranges a presence map may hold: what one durable record slot can store.
/// `limits.max_presence_ranges` is checked against it when the config is loaded.
pub const MAX_PRESENCE_RANGES: usize =
    (meta::MAX_PAYLOAD_LEN - UPLOAD_FIXED_LEN) / presence::ENCODED_RANGE_LEN;
/// `MetaRecord::video_kind` of an origin video.
pub const KIND_CODE_ORIGIN: u8 = 4;

/// Content type by file extension, as nginx's mime.types does for the formats players fetch.
pub fn content_type_for(path_or_id: &str) -> &'static str {
    let ext = path_or_id
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "ts" | "m2ts" | "mts" => "video/mp2t",
        "mp4" | "m4v" => "video/mp4",
        "m4a" => "audio/mp4",
        "m4s" => "video/iso.segment",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "avi" => "video/x-msvideo",
        "flv" => "video/x-flv",
        "ogv" | "ogg" => "video/ogg",
        "mp3" => "audio/mpeg",
        "aac" => "audio/aac",
        "m3u8" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// Whether the bytes at an offset can be sent now, will be (a writer holds them), or will not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Present from the offset up to this end (exclusive).
    Present(u64),
    /// Not present, but an in-flight write covers it.
    Pending,
    /// Not present and nobody is writing it.
    Absent,
    /// A live channel's bytes that have left its window (overwritten).
    Gone,
    /// An origin video's bytes whose fetch failed: readers get this status (502 or 504).
    Failed(u16),
}

/// Why a write was refused before any byte was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRefusal {
    OutOfBounds {
        start: u64,
        end: u64,
        len: u64,
    },
    /// Some of these bytes are present already, or another request is writing them.
    Overlap {
        start: u64,
        end: u64,
        in_flight: bool,
    },
    TooFragmented {
        max_ranges: usize,
    },
    /// A DELETE is being committed, or the last commit failed: retry later.
    Busy(String),
    /// The video is complete: nothing left to append to.
    Full,
    /// A live channel already has its one publisher.
    PublisherActive,
}

impl std::fmt::Display for WriteRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteRefusal::OutOfBounds { start, end, len } => write!(
                f,
                "bytes {start}-{} are outside the slot of {len} bytes",
                end.saturating_sub(1)
            ),
            WriteRefusal::Overlap {
                start,
                end,
                in_flight: false,
            } => write!(
                f,
                "bytes {start}-{} are already present; present bytes are never overwritten (DELETE the video to start again)",
                end.saturating_sub(1)
            ),
            WriteRefusal::Overlap {
                start,
                end,
                in_flight: true,
            } => write!(
                f,
                "bytes {start}-{} are being written by another request",
                end.saturating_sub(1)
            ),
            WriteRefusal::TooFragmented { max_ranges } => write!(
                f,
                "the presence map would exceed {max_ranges} separate ranges (limits.max_presence_ranges); write adjacent ranges"
            ),
            WriteRefusal::Busy(why) => write!(f, "{why}; retry shortly"),
            WriteRefusal::PublisherActive => write!(
                f,
                "the channel already has a publisher; one publisher at a time"
            ),
            WriteRefusal::Full => {
                write!(f, "the slot is complete; nothing is missing to append to")
            }
        }
    }
}

/// An in-flight write into a slot: [start, end) reserved, [start, claimed) already claimed. Claims
/// advance from `start` in order, so [claimed, end) never holds present bytes.
#[derive(Debug, Clone, Copy)]
struct Reservation {
    id: u64,
    start: u64,
    end: u64,
    claimed: u64,
}

/// An `upload` slot: a writable mapping, its presence map and its commit state.
pub struct Slot {
    pub data: WritableFile,
    pub presence: PresenceMap,
    reservations: Vec<Reservation>,
    next_reservation_id: u64,
    /// Bumped by DELETE: part of the ETag, so a client never mixes two generations.
    pub generation: u64,
    pub modified: SystemTime,
    pub commit: CommitState,
    /// A DELETE waits for its durable commit; no write is accepted until then.
    pub delete_pending: bool,
    max_presence_ranges: usize,
    /// An origin video's validator (ETag or Last-Modified) of the bytes held; None for uploads.
    pub validator: Option<String>,
    /// Ranges claimed since the last fast record (delta) was written, in claim order.
    unlogged: Vec<(u64, u64)>,
}

/// What a video holds.
pub enum Body {
    File {
        data: ReadOnlyFile,
        etag: String,
        modified: SystemTime,
    },
    Upload(Box<Slot>),
    Live(Box<LiveRing>),
    Origin(Box<OriginVideo>),
}

impl Body {
    /// The slot holding an upload's or an origin video's bytes (`Video::upload_slot` for uploads only).
    fn slot(&self) -> Option<&Slot> {
        match self {
            Body::Upload(s) => Some(s),
            Body::Origin(o) => o.slot(),
            _ => None,
        }
    }

    fn slot_mut(&mut self) -> Option<&mut Slot> {
        match self {
            Body::Upload(s) => Some(s),
            Body::Origin(o) => o.slot_mut(),
            _ => None,
        }
    }
}

/// Connections waiting for bytes of one video: each at most once (adding is O(1), so a thousand
/// followers re-registering after every chunk cost a thousand inserts, not half a million compares),
/// woken in the order they came.
#[derive(Default)]
pub struct Waiters {
    order: Vec<Token>,
    present: HashSet<Token>,
}

impl Waiters {
    /// Wait for the next wake-up (a connection already waiting stays where it is).
    pub fn add(&mut self, token: Token) {
        if self.present.insert(token) {
            self.order.push(token);
        }
        assert_eq!(self.order.len(), self.present.len(), "each waiter once");
    }

    /// Hand every waiter to `wake` (in arrival order) and forget them.
    pub fn wake_all(&mut self, wake: &mut Vec<Token>) {
        wake.append(&mut self.order);
        self.present.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// One configured video as the event loop sees it.
pub struct Video {
    pub cfg: VideoConfig,
    pub content_type: String,
    pub body: Body,
    /// Connections waiting for bytes of this video to arrive.
    pub byte_waiters: Waiters,
    /// Connections waiting for a commit of this video (their 2xx depends on it).
    pub commit_waiters: Vec<Token>,
}

/// An origin video's ETag, the same on every node that holds the same object: the origin's strong
/// ETag itself; with only a Last-Modified from the origin, a weak tag derived from it and the length
/// (If-Range then works by the date, which equals the origin's); with no validator, vcache's own.
fn origin_etag(o: &OriginVideo) -> String {
    let len = o.len().unwrap_or(0);
    match o.validator() {
        v if v.starts_with('"') => v.to_string(),
        "" => format!("\"o{:x}-{len:x}\"", o.slot().map_or(0, |s| s.generation)),
        date => {
            // FNV-1a: stable across builds and machines (std's hasher is not).
            let h = date.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            format!("W/\"o{h:x}-{len:x}\"")
        }
    }
}

/// Why an in-flight write cannot take bytes right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestBlock {
    /// A live ring must commit a new write intent first (see ARCHITECTURE.md); wait for the commit.
    AwaitCommit,
    /// The write is not allowed (a bug or a vanished reservation): fail it.
    Refused(String),
}

impl Video {
    pub fn len(&self) -> u64 {
        match &self.body {
            Body::File { data, .. } => data.len,
            Body::Upload(s) => s.data.len,
            Body::Live(r) => r.capacity(),
            Body::Origin(o) => o.len().unwrap_or(0),
        }
    }

    /// Bumped whenever bytes once served may be replaced (DELETE, a changed origin object): a
    /// response started under one generation never continues under another.
    pub fn generation(&self) -> u64 {
        match &self.body {
            Body::File { .. } => 0,
            Body::Live(r) => r.state.generation,
            body => body.slot().map_or(0, |s| s.generation),
        }
    }

    pub fn origin(&self) -> Option<&OriginVideo> {
        match &self.body {
            Body::Origin(o) => Some(o),
            _ => None,
        }
    }

    pub fn origin_mut(&mut self) -> Option<&mut OriginVideo> {
        match &mut self.body {
            Body::Origin(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_writable(&self) -> bool {
        !matches!(self.body, Body::File { .. })
    }

    pub fn etag(&self) -> String {
        match &self.body {
            Body::File { etag, .. } => etag.clone(),
            Body::Upload(s) => format!("\"u{:x}-{:x}\"", s.generation, s.data.len),
            Body::Live(r) => format!("\"l{:x}-{:x}\"", r.state.generation, r.capacity()),
            Body::Origin(o) => origin_etag(o),
        }
    }

    pub fn last_modified(&self) -> SystemTime {
        match &self.body {
            Body::File { modified, .. } => *modified,
            Body::Upload(s) => s.modified,
            Body::Live(r) => r.state.modified,
            Body::Origin(o) => o.slot().map_or(UNIX_EPOCH, |s| s.modified),
        }
    }

    /// Whether every byte is present (a live channel never is: it grows).
    pub fn is_complete(&self) -> bool {
        match &self.body {
            Body::File { .. } => true,
            Body::Upload(s) => s.presence.is_complete(),
            Body::Live(_) => false,
            Body::Origin(o) => o.slot().is_some_and(|s| s.presence.is_complete()),
        }
    }

    pub fn availability(&self, offset: u64) -> Availability {
        match &self.body {
            Body::File { data, .. } => {
                if offset < data.len {
                    Availability::Present(data.len)
                } else {
                    Availability::Absent
                }
            }
            Body::Upload(s) => s.availability(offset),
            Body::Live(r) => r.availability(offset),
            Body::Origin(o) => o.availability(offset),
        }
    }

    /// The bytes [pos, end) as a slice of the mapping, if they are mapped contiguously (a live
    /// ring's availability never spans its wrap point).
    pub fn payload_slice(&self, pos: u64, end: u64) -> Option<&[u8]> {
        let (map, a): (&[u8], u64) = match &self.body {
            Body::File { data, .. } => (data.map.as_deref()?, pos),
            Body::Upload(s) => (&s.data.map[..], pos),
            Body::Live(r) => (&r.data.map[..], r.position(pos)),
            Body::Origin(o) => (&o.slot()?.data.map[..], pos),
        };
        let b = a.checked_add(end.checked_sub(pos)?)?;
        map.get(usize::try_from(a).ok()?..usize::try_from(b).ok()?)
    }

    /// The file to sendfile(2) payload from, where logical offsets are file offsets and the bytes
    /// never change once present (not a live ring: its pages are rewritten in place).
    pub fn sendfile_source(&self) -> Option<&File> {
        match &self.body {
            Body::File { data, .. } => Some(&data.file),
            Body::Upload(s) => Some(&s.data.file),
            Body::Origin(o) => o.slot().map(|s| &*s.data.file),
            Body::Live(_) => None,
        }
    }

    /// An `upload` video's slot (None for every other kind, origin videos included: their slot is
    /// `OriginVideo::slot`, and any writable slot is `Body::slot`).
    pub fn upload_slot(&self) -> Option<&Slot> {
        match &self.body {
            Body::Upload(s) => Some(s),
            _ => None,
        }
    }

    pub fn upload_slot_mut(&mut self) -> Option<&mut Slot> {
        match &mut self.body {
            Body::Upload(s) => Some(s),
            _ => None,
        }
    }

    pub fn ring(&self) -> Option<&LiveRing> {
        match &self.body {
            Body::Live(r) => Some(r),
            _ => None,
        }
    }

    pub fn ring_mut(&mut self) -> Option<&mut LiveRing> {
        match &mut self.body {
            Body::Live(r) => Some(r),
            _ => None,
        }
    }

    /// Cached ranges as half-open pairs (a file video is wholly cached; a live channel holds its
    /// window).
    pub fn cached_ranges(&self) -> Vec<(u64, u64)> {
        match &self.body {
            Body::File { data, .. } if data.len > 0 => vec![(0, data.len)],
            Body::File { .. } => Vec::new(),
            Body::Upload(s) => s.presence.ranges().to_vec(),
            Body::Origin(o) => o
                .slot()
                .map_or_else(Vec::new, |s| s.presence.ranges().to_vec()),
            Body::Live(r) => {
                let (start, head) = (r.window_start(), r.state.head);
                if start < head {
                    vec![(start, head)]
                } else {
                    Vec::new()
                }
            }
        }
    }

    pub fn commit(&self) -> Option<&CommitState> {
        match &self.body {
            Body::Live(r) => Some(&r.commit),
            body => body.slot().map(|s| &s.commit),
        }
    }

    pub fn commit_mut(&mut self) -> Option<&mut CommitState> {
        match &mut self.body {
            Body::Live(r) => Some(&mut r.commit),
            body => body.slot_mut().map(|s| &mut s.commit),
        }
    }

    /// Why the video takes no writes and acknowledges nothing (a data sync failed), if so.
    pub fn poisoned(&self) -> Option<&str> {
        self.commit().and_then(CommitState::poisoned)
    }

    /// A DELETE (or a changed origin object) is waiting for its durable commit.
    pub fn delete_pending(&self) -> bool {
        self.body.slot().is_some_and(|s| s.delete_pending)
    }

    /// A writer is blocked until a durable commit lands (a live ring's write intent, an origin
    /// video's forgetting of a changed object).
    pub fn commit_urgent(&self) -> bool {
        match &self.body {
            Body::Live(r) => r.intent_commit_wanted(),
            Body::Origin(_) => self.delete_pending(),
            _ => false,
        }
    }

    /// Write the fast (process-crash) record: a live ring's whole state, an upload slot's delta (what
    /// it claimed since its last one), appended to the log region. A full region writes nothing: the
    /// next durable commit acknowledges instead (`CommitState::fast_record_due` is false until then).
    pub fn write_fast_record(&mut self) -> Result<(), String> {
        match &mut self.body {
            Body::Live(r) => {
                let p = r.state.encode();
                r.commit.write_fast_record(p, false).map(drop)
            }
            body => match body.slot_mut() {
                Some(s) => {
                    let p = s.delta_payload();
                    if s.commit.write_fast_record(p, true)? {
                        s.unlogged.clear();
                    }
                    Ok(())
                }
                None => Ok(()),
            },
        }
    }

    /// A durable commit job for the current state, if one is due and none is in flight.
    pub fn commit_job(&mut self, id: &str) -> Option<CommitJob> {
        match &mut self.body {
            Body::Live(r) => r.commit_job(id),
            body => {
                let s = body.slot_mut()?;
                if !s.commit.checkpoint_due() {
                    return None;
                }
                let p = s.payload();
                s.commit.commit_job(id, &s.data.file, p)
            }
        }
    }

    pub fn commit_done(&mut self, done: &CommitDone) {
        match &mut self.body {
            Body::Live(r) => r.commit_done(done),
            body => {
                if let Some(s) = body.slot_mut()
                    && s.commit.commit_done(done)
                    && s.delete_pending
                    && s.commit.is_settled()
                {
                    s.delete_pending = false;
                }
            }
        }
    }

    /// The mutable bytes an in-flight write may fill next at `offset`, at most `max` of them.
    pub fn ingest_target(
        &mut self,
        writer: u64,
        offset: u64,
        max: u64,
    ) -> Result<&mut [u8], IngestBlock> {
        match &mut self.body {
            Body::Upload(s) => s
                .write_target(writer, offset, max)
                .ok_or_else(|| IngestBlock::Refused("write target outside the reservation".into())),
            Body::Live(r) => r.write_target(writer, offset, max),
            Body::File { .. } | Body::Origin(_) => Err(IngestBlock::Refused(
                "this video takes no client writes".into(),
            )),
        }
    }

    /// Claim [start, end) of an in-flight write; returns exactly how far the write is now recorded
    /// (`end`; `start` for a video that takes no client writes).
    pub fn ingest_claim(&mut self, writer: u64, start: u64, end: u64) -> u64 {
        match &mut self.body {
            Body::Upload(s) => s.claim(writer, start, end),
            Body::Live(r) => r.claim(writer, start, end),
            Body::File { .. } | Body::Origin(_) => start,
        }
    }

    /// The write ended (finished or cut); what was claimed stays claimed.
    pub fn ingest_release(&mut self, writer: u64) {
        match &mut self.body {
            Body::Upload(s) => s.release(writer),
            Body::Live(r) => r.end_publish(writer),
            Body::File { .. } | Body::Origin(_) => {}
        }
    }
}

/// The content type a video's config gives it: `content_type`, or a guess from the path or id.
pub fn configured_content_type(v: &VideoConfig) -> String {
    v.content_type.clone().unwrap_or_else(|| {
        match &v.kind {
            VideoKind::File { path } => content_type_for(&path.to_string_lossy()),
            VideoKind::Origin { path, .. } => {
                content_type_for(path.split(['?', '#']).next().unwrap_or(path))
            }
            _ => content_type_for(&v.id),
        }
        .to_string()
    })
}

/// Whole seconds since the epoch, as metadata payloads store modification times (0 before 1970).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Slot {
    pub fn availability(&self, offset: u64) -> Availability {
        if let Some(end) = self.presence.run_end(offset) {
            return Availability::Present(end);
        }
        if self
            .reservations
            .iter()
            .any(|r| r.start <= offset && offset < r.end)
        {
            Availability::Pending
        } else {
            Availability::Absent
        }
    }

    /// Reserve [start, end) for one write. Refused if any byte is present, being written, or outside.
    pub fn reserve(&mut self, start: u64, end: u64) -> Result<u64, WriteRefusal> {
        self.check_reserve(start, end)?;
        let len = self.data.len;
        // Checked above as input; what follows relies on it.
        assert!(
            start < end && end <= len,
            "reservation {start}..{end} outside 0..{len}"
        );
        assert!(
            !self.presence.overlaps(start, end),
            "reservation {start}..{end} overlaps present bytes"
        );
        let id = self.next_reservation_id;
        self.next_reservation_id += 1;
        self.reservations.push(Reservation {
            id,
            start,
            end,
            claimed: start,
        });
        Ok(id)
    }

    /// Is all of [start, end) present, in a video that takes writes now? A write of such a range is a
    /// repeat, compared with these bytes rather than written (`routes::Action::Verify`).
    pub fn holds(&self, start: u64, end: u64) -> bool {
        self.commit.poisoned().is_none()
            && !self.delete_pending
            && start < end
            && end <= self.data.len
            && self.presence.run_end(start).is_some_and(|e| e >= end)
    }

    /// Whether `reserve(start, end)` would be accepted, without reserving (routing decides with it).
    pub fn check_reserve(&self, start: u64, end: u64) -> Result<(), WriteRefusal> {
        if let Some(why) = self.commit.poisoned() {
            return Err(WriteRefusal::Busy(format!(
                "this video is unavailable: {why}"
            )));
        }
        if self.delete_pending {
            return Err(WriteRefusal::Busy(
                "a DELETE of this video is being committed".into(),
            ));
        }
        let len = self.data.len;
        if start >= end || end > len {
            return Err(WriteRefusal::OutOfBounds { start, end, len });
        }
        if self.presence.overlaps(start, end) {
            return Err(WriteRefusal::Overlap {
                start,
                end,
                in_flight: false,
            });
        }
        if self
            .reservations
            .iter()
            .any(|r| r.start < end && start < r.end)
        {
            return Err(WriteRefusal::Overlap {
                start,
                end,
                in_flight: true,
            });
        }
        // Every write in flight may add a range of its own when it is claimed: count them too, so a
        // write that is accepted can always be recorded.
        let worst_case = self.presence.ranges().len() + self.reservations.len() + 1;
        if self.presence.would_fragment(start, end) || worst_case > self.presence_max_ranges() {
            return Err(WriteRefusal::TooFragmented {
                max_ranges: self.presence_max_ranges(),
            });
        }
        Ok(())
    }

    /// Where an append goes: from the first missing byte up to the next present byte (or `max_len`),
    /// if that range may be reserved.
    pub fn append_range(&self, max_len: Option<u64>) -> Result<(u64, u64), WriteRefusal> {
        let start = match self.presence.first_missing_from(0) {
            Some(s) => s,
            None => return Err(WriteRefusal::Full),
        };
        let mut end = self.data.len;
        for &(s, _) in self.presence.ranges() {
            if s > start {
                end = s;
                break;
            }
        }
        if let Some(n) = max_len {
            let want = start.checked_add(n).ok_or(WriteRefusal::OutOfBounds {
                start,
                end: u64::MAX,
                len: self.data.len,
            })?;
            if want > end {
                return Err(WriteRefusal::OutOfBounds {
                    start,
                    end: want,
                    len: end,
                });
            }
            end = want;
        }
        self.check_reserve(start, end)?;
        Ok((start, end))
    }

    fn presence_max_ranges(&self) -> usize {
        self.max_presence_ranges
    }

    /// The mutable bytes [offset, offset+len) of the mapping for an in-flight write; None if the
    /// reservation is gone (an origin object changed and its fetches were released). A write outside
    /// its reservation, or onto present bytes, is a bug and panics.
    pub fn write_target(&mut self, reservation: u64, offset: u64, len: u64) -> Option<&mut [u8]> {
        let r = self.reservations.iter().find(|r| r.id == reservation)?;
        let end = offset.checked_add(len);
        assert!(
            r.claimed <= offset && end.is_some_and(|end| end <= r.end),
            "write of {len} bytes at {offset} outside its reservation {}..{} (claimed to {})",
            r.start,
            r.end,
            r.claimed
        );
        let end = end.unwrap_or(r.end);
        assert!(
            !self.presence.overlaps(offset, end),
            "write {offset}..{end} onto present bytes"
        );
        let (a, b) = (usize::try_from(offset).ok()?, usize::try_from(end).ok()?);
        // A reservation is inside the data file (`reserve`), and the mapping is the whole file.
        assert!(
            b <= self.data.write_map.len(),
            "reservation past the mapping"
        );
        Some(&mut self.data.write_map[a..b])
    }

    /// Record that [start, end) of a reservation has arrived in the mapping; returns how far the
    /// reservation is now claimed (`end`). Claims advance in order from the reservation's start; a
    /// claim of bytes outside its reservation or not yet written (out of order), or one the presence
    /// map cannot take, is a bug and panics.
    pub fn claim(&mut self, reservation: u64, start: u64, end: u64) -> u64 {
        let Some(r) = self.reservations.iter_mut().find(|r| r.id == reservation) else {
            panic!("claim {start}..{end} of reservation {reservation}, which does not exist");
        };
        assert!(
            start == r.claimed && start <= end && end <= r.end,
            "claim {start}..{end} out of order or outside its reservation {}..{} (claimed to {})",
            r.start,
            r.end,
            r.claimed
        );
        if start == end {
            return end;
        }
        // `reserve` counted one range for every write in flight, and a reservation's claims form one
        // run: the map always has room for it.
        if let Err(e) = self.presence.insert(start, end) {
            panic!("claim {start}..{end} could not be recorded: {e}");
        }
        r.claimed = end;
        match self.unlogged.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.unlogged.push((start, end)),
        }
        self.commit.bump();
        // What stays reserved and unclaimed holds no present byte.
        assert!(!self.presence.overlaps(r.claimed, r.end));
        end
    }

    /// Evict [start, end) of an origin slot: its bytes are no longer present (nor in the next fast
    /// record). The caller punches them out only after a durable record without them has landed.
    pub fn withdraw(&mut self, start: u64, end: u64) -> Result<(), presence::PresenceError> {
        assert!(
            !self
                .reservations
                .iter()
                .any(|r| r.start < end && start < r.end),
            "withdrawing {start}..{end} while a fetch writes into it"
        );
        self.presence.remove(start, end)?;
        let mut kept = Vec::with_capacity(self.unlogged.len() + 1);
        for &(a, b) in &self.unlogged {
            if a < start {
                kept.push((a, b.min(start)));
            }
            if b > end {
                kept.push((a.max(end), b));
            }
        }
        self.unlogged = kept;
        self.commit.bump();
        Ok(())
    }

    /// End a reservation (the write finished or was cut); what was claimed stays claimed.
    pub fn release(&mut self, reservation: u64) {
        self.reservations.retain(|r| r.id != reservation);
    }

    /// End every reservation (an origin object changed: its fetches are aborted).
    pub fn release_all(&mut self) {
        self.reservations.clear();
    }

    /// DELETE: forget every present byte. The caller must wait for the durable commit before
    /// acknowledging, and no write is accepted meanwhile (`delete_pending`).
    pub fn forget_all(&mut self) -> Result<(), WriteRefusal> {
        self.check_forget()?;
        self.presence.clear();
        self.unlogged.clear();
        self.generation += 1;
        self.modified = SystemTime::now();
        self.commit.bump();
        self.delete_pending = true;
        Ok(())
    }

    /// Whether `forget_all` would be accepted (no write in flight, the video not poisoned).
    pub fn check_forget(&self) -> Result<(), WriteRefusal> {
        if let Some(why) = self.commit.poisoned() {
            return Err(WriteRefusal::Busy(format!(
                "this video is unavailable: {why}"
            )));
        }
        if self.reservations.is_empty() {
            Ok(())
        } else {
            Err(WriteRefusal::Busy(
                "writes to this video are in progress".into(),
            ))
        }
    }

    /// A fast record's delta: generation, modification time, validator and the ranges claimed since
    /// the last delta (replayed over the durable record by `replay_upload`).
    fn delta_payload(&self) -> Vec<u8> {
        let mut p =
            Vec::with_capacity(DELTA_FIXED_LEN + self.unlogged.len() * presence::ENCODED_RANGE_LEN);
        p.push(DELTA_PAYLOAD_VERSION);
        p.extend_from_slice(&self.generation.to_le_bytes());
        p.extend_from_slice(&unix_secs(self.modified).to_le_bytes());
        let v = self
            .validator
            .as_deref()
            .filter(|v| v.len() <= MAX_VALIDATOR_LEN)
            .unwrap_or("");
        p.extend_from_slice(&(v.len() as u16).to_le_bytes());
        p.extend_from_slice(v.as_bytes());
        p.extend_from_slice(&(self.unlogged.len() as u32).to_le_bytes());
        for &(a, b) in &self.unlogged {
            p.extend_from_slice(&a.to_le_bytes());
            p.extend_from_slice(&b.to_le_bytes());
        }
        p
    }

    pub fn payload(&self) -> Vec<u8> {
        encode_upload_payload(
            self.generation,
            self.modified,
            &self.presence,
            self.validator.as_deref(),
        )
    }
}

/// Resolved origin addresses by video id (a reload resolves them off the event loop).
pub type ResolvedOrigins =
    std::collections::HashMap<String, Result<Vec<std::net::SocketAddr>, String>>;

/// Resolve an origin's host (blocking: at start-up, or on the reload thread — never on the loop).
pub fn resolve_origin(
    host: &str,
    port: u16,
    url: &str,
) -> Result<Vec<std::net::SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the origin host {host} of {url}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("the origin host {host} of {url} has no address"));
    }
    Ok(addrs)
}

/// Resolve every origin video of a config.
pub fn resolve_origins(cfg: &Config) -> ResolvedOrigins {
    cfg.videos
        .iter()
        .filter_map(|v| match &v.kind {
            VideoKind::Origin {
                url, host, port, ..
            } => Some((v.id.clone(), resolve_origin(host, *port, url))),
            _ => None,
        })
        .collect()
}

/// An origin video's settings, as its config gives them.
struct OriginSpec<'a> {
    url: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    fill_block: u64,
    size: Option<u64>,
}

/// A `file` video: the operator's file mapped read-only, its ETag from mtime and length at open.
fn open_file_body(path: &Path) -> Result<Body, String> {
    let data = ReadOnlyFile::open(path)
        .map_err(|e| format!("cannot open file {}: {e}", path.display()))?;
    let md = data
        .file
        .metadata()
        .map_err(|e| format!("cannot stat file {}: {e}", path.display()))?;
    let modified = md.modified().unwrap_or(UNIX_EPOCH);
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let etag = format!("\"{:x}-{:x}\"", nanos, data.len);
    Ok(Body::File {
        data,
        etag,
        modified,
    })
}

/// Where and how writable videos' files are opened: the data directory, the boot id that stamps fast
/// records, and the presence-map bound.
#[derive(Debug, Clone)]
pub struct StorePaths {
    pub data_dir: PathBuf,
    pub boot_id: BootId,
    pub max_presence_ranges: usize,
}

impl StorePaths {
    /// Open (or create) one video's files, taking its origin's addresses from `resolved` when given
    /// (resolved off the loop) and resolving them here otherwise.
    pub fn open_video(
        &self,
        v: &VideoConfig,
        resolved: Option<&Result<Vec<std::net::SocketAddr>, String>>,
    ) -> Result<Video, String> {
        let body = match &v.kind {
            VideoKind::File { path } => open_file_body(path)?,
            VideoKind::Upload { size } => Body::Upload(Box::new(self.open_slot_of_kind(
                &v.id,
                *size,
                KIND_CODE_UPLOAD,
                "upload",
                None,
            )?)),
            VideoKind::Live { capacity, .. } => {
                let mut ring = self.open_ring(&v.id, *capacity)?;
                ring.ts_index = configured_content_type(v).starts_with("video/mp2t");
                ring.rebuild_index();
                ring.mp4_index = configured_content_type(v).starts_with("video/mp4");
                ring.rebuild_fmp4();
                Body::Live(Box::new(ring))
            }
            VideoKind::Origin {
                url,
                host,
                port,
                path,
                fill_block,
                size,
                revalidate_after,
            } => {
                let spec = OriginSpec {
                    url,
                    host,
                    port: *port,
                    path,
                    fill_block: *fill_block,
                    size: *size,
                };
                let mut o = self.open_origin(&v.id, spec, resolved)?;
                o.set_revalidate_after(*revalidate_after);
                Body::Origin(Box::new(o))
            }
        };
        Ok(Video {
            cfg: v.clone(),
            content_type: configured_content_type(v),
            body,
            byte_waiters: Waiters::default(),
            commit_waiters: Vec::new(),
        })
    }

    fn open_ring(&self, id: &str, capacity: u64) -> Result<LiveRing, String> {
        let fresh = RingState::fresh(capacity);
        let (data, commit, payload) = self.open_writable(
            id,
            capacity,
            KIND_CODE_LIVE,
            "live",
            fresh.encode(),
            |p, log| {
                let st = replay_ring(p, log, capacity)?;
                Ok((st.encode(), st.head > 0))
            },
        )?;
        let state = match payload {
            None => fresh,
            Some(p) => RingState::decode(&p, capacity)?,
        };
        Ok(LiveRing::new(data, commit, state))
    }

    /// Open or create the data and metadata files of a writable video of `len` bytes, following the
    /// creation order of the durability protocol. Returns the mapped data file, its commit state and
    /// the payload of the winning record (None for a new video, created with `fresh_payload`).
    fn open_writable(
        &self,
        id: &str,
        len: u64,
        kind_code: u8,
        kind_name: &str,
        fresh_payload: Vec<u8>,
        recover: impl Fn(&[u8], &[meta::LogEntry]) -> Result<(Vec<u8>, bool), String>,
    ) -> Result<(WritableFile, CommitState, Option<Vec<u8>>), String> {
        let dpath = data_path(&self.data_dir, id);
        let mpath = meta_path(&self.data_dir, id);
        let data_exists = dpath.exists();
        if data_exists && !mpath.exists() {
            return Err(format!(
                "data file {} exists but its metadata {} is missing; both are left untouched \
                 (move the data file away to start afresh)",
                dpath.display(),
                mpath.display()
            ));
        }
        let pattern = if kind_code == KIND_CODE_ORIGIN {
            WritePattern::Blocks
        } else {
            WritePattern::Runs
        };
        // An existing data file is locked before its metadata is read: in a restart the old process
        // writes its last records while it still holds the lock, so reading first could trust a record
        // the old process is about to supersede.
        let existing = if data_exists {
            let d = data_file::open_existing(&dpath, len, pattern)
                .map_err(|e| format!("data file {}: {e}", dpath.display()))?;
            Some(d)
        } else {
            None
        };
        let meta = MetaFile::open(&mpath, Some(len))
            .map_err(|e| format!("cannot open metadata {}: {e}", mpath.display()))?;
        // After a failed data sync, fast records may claim bytes the kernel dropped: trust none.
        let sync_failed = meta::read_sync_failed(&mpath);
        let trusted_boot = match sync_failed {
            Some(_) => meta::UNKNOWN_BOOT,
            None => self.boot_id,
        };
        let scan = meta.scan(&trusted_boot).map_err(|e| {
            format!(
                "metadata {} cannot be read ({e}); the video is left out and its files untouched",
                mpath.display()
            )
        })?;
        if scan.winner.is_none() && scan.has_invalid() {
            return Err(format!(
                "metadata {} holds no valid record ({}); the video is left out and its files untouched",
                mpath.display(),
                scan.describe()
            ));
        }
        let (payload, _winner_slot, seq) = match scan.winner.clone() {
            None => {
                if data_exists {
                    return Err(format!(
                        "metadata {} holds no valid record but data file {} exists; both are left untouched",
                        mpath.display(),
                        dpath.display()
                    ));
                }
                // Creation, step 1: the metadata's first durable record, synced, before the data file
                // exists. A crash between the steps leaves a record that claims nothing.
                let rec = MetaRecord {
                    seq: scan.max_seq.unwrap_or(0) + 1,
                    boot_id: self.boot_id,
                    video_kind: kind_code,
                    data_len: len,
                    payload: fresh_payload,
                };
                meta.write_record_slot_synced(meta::DURABLE_RECORD_SLOTS[0], &rec)
                    .map_err(|e| format!("cannot write metadata {}: {e}", mpath.display()))?;
                (None, meta::DURABLE_RECORD_SLOTS[0], rec.seq)
            }
            Some((slot, rec)) => {
                if rec.video_kind != kind_code {
                    return Err(format!(
                        "metadata {} belongs to a video of another kind (code {}), the config says {kind_name}; left untouched",
                        mpath.display(),
                        rec.video_kind
                    ));
                }
                if rec.data_len != len {
                    return Err(format!(
                        "metadata {} describes {} bytes but the config says {len}; left untouched \
                         (restore the old size, or move both files away to start afresh)",
                        mpath.display(),
                        rec.data_len
                    ));
                }
                // The durable record, with the log entries written after it replayed over it.
                let (recovered, claims) = recover(&rec.payload, &scan.log)
                    .map_err(|e| format!("metadata {}: {e}; left untouched", mpath.display()))?;
                if !data_exists && claims {
                    return Err(format!(
                        "data file {} is missing but its metadata claims bytes; left untouched",
                        dpath.display(),
                    ));
                }
                let seq = scan.max_seq.unwrap_or(rec.seq).max(rec.seq);
                (Some(recovered), slot, seq)
            }
        };
        let data = if let Some(d) = existing {
            Ok(d)
        } else {
            // Creation, step 2: the data file, fully allocated.
            let r = data_file::create(&dpath, len, pattern);
            if r.is_ok() {
                let _ = data_file::sync_dir(&self.data_dir);
            }
            r
        }
        .map_err(|e| {
            if payload.is_none() {
                // The metadata was created just now and claims nothing: remove it with the failed
                // data file, so that nothing is left that would refuse a later attempt.
                let _ = std::fs::remove_file(&mpath);
                let _ = data_file::sync_dir(&self.data_dir);
            }
            match e {
                DataFileError::NoSpace { .. } => format!("cannot create {}: {e}", dpath.display()),
                _ => format!("data file {}: {e}", dpath.display()),
            }
        })?;
        let replayed = !scan.log.is_empty() && payload.is_some();
        if payload.is_some() {
            // After a process crash the page cache may hold a durable-slot record that never reached
            // the disk: sync the metadata before trusting the scan's idea of the newest durable record,
            // which decides which slot the next commit may overwrite. That record's data was synced
            // before it was written; the data file is synced only when the log claimed more (a
            // replay, made durable below) or a data sync failed — what may take long (`needs_recovery`).
            let data_synced = match replayed || sync_failed.is_some() {
                true => data.file.sync_data(),
                false => Ok(()),
            };
            let synced = data_synced.and_then(|()| meta.sync());
            if let Err(e) = synced {
                return Err(format!(
                    "cannot sync the files of {id} before opening them: {e}"
                ));
            }
        }
        // Overwrite the older durable slot next, so the newest durable record survives a torn write.
        let mut newest_durable = if payload.is_none() {
            Some(meta::DURABLE_RECORD_SLOTS[0])
        } else {
            scan.newest_durable
        };
        let mut seq = seq;
        if let (true, Some(p)) = (sync_failed.is_some() || replayed, &payload) {
            // The recovered state is made durable now (the data file was just synced): no log entry
            // is needed any more, and no later open in this boot trusts the old ones.
            let rec = MetaRecord {
                seq: seq + 1,
                boot_id: self.boot_id,
                video_kind: kind_code,
                data_len: len,
                payload: p.clone(),
            };
            newest_durable = Some(write_recovered_record(
                &meta,
                newest_durable,
                &rec,
                id,
                sync_failed.as_deref(),
            )?);
            seq = rec.seq;
        } else if sync_failed.is_some() {
            // Created afresh just now: the synced creation record is newer than any fast record.
            meta::clear_sync_failed(&mpath)
                .map_err(|e| format!("cannot remove the failed-sync marker of {id}: {e}"))?;
        }
        let commit = CommitState::new(
            Arc::new(meta),
            self.boot_id,
            kind_code,
            len,
            Recovered {
                record_seq: seq,
                from_fast: false,
                next_durable_record_slot: meta::next_durable_record_slot(newest_durable),
            },
        );
        Ok((data, commit, payload))
    }

    /// Open or create an upload slot's files, or an origin video's once its length is known (then
    /// `validator` is Some: what the new files start with).
    pub fn open_slot_of_kind(
        &self,
        id: &str,
        size: u64,
        kind_code: u8,
        kind_name: &str,
        validator: Option<String>,
    ) -> Result<Slot, String> {
        let max = self.max_presence_ranges;
        let fresh = UploadState {
            generation: 1,
            modified: SystemTime::now(),
            presence: PresenceMap::new(size, max),
            validator,
        };
        let fresh_payload = encode_upload_payload(
            fresh.generation,
            fresh.modified,
            &fresh.presence,
            fresh.validator.as_deref(),
        );
        let (data, commit, payload) =
            self.open_writable(id, size, kind_code, kind_name, fresh_payload, |p, log| {
                let st = replay_upload(p, log, size, max)?;
                let claims = st.presence.present_bytes() > 0;
                Ok((st.encode(), claims))
            })?;
        let state = match payload {
            None => fresh,
            Some(p) => decode_upload_payload(&p, size, max)?,
        };
        Ok(Slot {
            data,
            presence: state.presence,
            reservations: Vec::new(),
            next_reservation_id: 1,
            generation: state.generation,
            modified: state.modified,
            commit,
            delete_pending: false,
            max_presence_ranges: max,
            validator: state.validator,
            unlogged: Vec::new(),
        })
    }

    /// An origin video: its host resolved (`resolved`: at config load or reload, off the loop; else
    /// now) and its files opened if they exist — or created when the config gives the size; otherwise
    /// they are created when the origin first tells the length.
    fn open_origin(
        &self,
        id: &str,
        spec: OriginSpec<'_>,
        resolved: Option<&Result<Vec<std::net::SocketAddr>, String>>,
    ) -> Result<OriginVideo, String> {
        let addrs = match resolved {
            Some(r) => r.clone()?,
            None => resolve_origin(spec.host, spec.port, spec.url)?,
        };
        let recorded = self.recorded_len(id)?;
        let len = match (recorded, spec.size) {
            (Some(n), Some(s)) if n != s => {
                return Err(format!(
                    "metadata records {n} bytes but the config says size = {s}; left untouched \
                     (remove `size` to take the origin's length, or move the files away)"
                ));
            }
            (Some(n), _) | (None, Some(n)) => Some(n),
            (None, None) => None,
        };
        let slot = match len {
            Some(n) => Some(Box::new(self.open_slot_of_kind(
                id,
                n,
                KIND_CODE_ORIGIN,
                "origin",
                Some(String::new()),
            )?)),
            None => None,
        };
        let allocated = match &slot {
            Some(s) => space::reclaim_unclaimed(s, spec.fill_block)?,
            None => Default::default(),
        };
        let mut o = OriginVideo::new(
            spec.url.to_string(),
            spec.host.to_string(),
            spec.port,
            spec.path.to_string(),
            spec.fill_block,
            addrs,
            slot,
        );
        o.space = space::BlockSpace::with_allocated(allocated);
        Ok(o)
    }

    /// The data length an existing video's metadata records, if its metadata file exists and reads.
    pub fn recorded_len(&self, id: &str) -> Result<Option<u64>, String> {
        let mpath = meta_path(&self.data_dir, id);
        if !mpath.exists() {
            return Ok(None);
        }
        let meta = MetaFile::open(&mpath, None)
            .map_err(|e| format!("cannot open metadata {}: {e}", mpath.display()))?;
        match meta.load(&self.boot_id) {
            Ok(Some((_, rec))) => Ok(Some(rec.data_len)),
            Ok(None) => Ok(None),
            Err(e) => Err(format!(
                "metadata {} cannot be read ({e}); the video is left out and its files untouched",
                mpath.display()
            )),
        }
    }

    /// Must opening this video sync its data file before its record is trusted (log entries to replay
    /// after a process crash, or a recorded failed data sync)? That sync may take seconds with much dirty
    /// data, so the start-up opener gives such a video to its own thread. Read without a lock: a wrong
    /// answer only changes which thread opens it.
    pub fn needs_recovery(&self, v: &VideoConfig) -> bool {
        if matches!(v.kind, VideoKind::File { .. }) {
            return false;
        }
        let mpath = meta_path(&self.data_dir, &v.id);
        if !mpath.exists() {
            return false;
        }
        if meta::read_sync_failed(&mpath).is_some() {
            return true;
        }
        MetaFile::open(&mpath, None)
            .ok()
            .and_then(|m| m.scan(&self.boot_id).ok())
            .is_some_and(|scan| scan.winner.is_some() && !scan.log.is_empty())
    }

    /// Remove a video's data and metadata files (an origin object changed length). The caller has
    /// closed them (dropped the slot) and made a record that claims nothing durable first.
    pub fn remove_files(&self, id: &str) -> std::io::Result<()> {
        std::fs::remove_file(data_path(&self.data_dir, id))?;
        std::fs::remove_file(meta_path(&self.data_dir, id))?;
        data_file::sync_dir(&self.data_dir)
    }
}

/// Make a recovered state durable at open (the data file was synced just before): the durable record
/// replayed with the log entries written after it, or — after a failed data sync
/// (`meta::mark_sync_failed`, then `sync_failed` is its text) — the last durable record alone, which
/// claims only bytes synced before the failure. Its seq is above every log entry, so no later open in
/// this boot replays those again; then the failed-sync marker is removed. Returns the slot written.
fn write_recovered_record(
    meta: &MetaFile,
    newest_durable: Option<meta::RecordSlot>,
    rec: &MetaRecord,
    id: &str,
    sync_failed: Option<&str>,
) -> Result<meta::RecordSlot, String> {
    let record_len = meta::HEADER_LEN + rec.payload.len();
    let slot = meta
        .layout()
        .durable_slot_for(meta::next_durable_record_slot(newest_durable), record_len);
    assert!(
        meta::Layout::pair_of(slot).is_some(),
        "a durable record outside the durable slots"
    );
    let failed = |e: String| {
        format!(
            "video {id}: cannot make its recovered state durable: {e}; left out, files untouched \
             but for the record slot being written"
        )
    };
    meta.write_record_slot_synced(slot, rec)
        .map_err(|e| failed(e.to_string()))?;
    if let Some(why) = sync_failed {
        meta::clear_sync_failed(meta.path()).map_err(|e| failed(e.to_string()))?;
        log::warn!(
            "video {id}: reopened from its last durable record after a failed data sync ({why}); \
             writes acknowledged after that record are lost and must be sent again"
        );
    }
    Ok(slot)
}

/// A video the store could not open: it is left out and its files are left untouched.
#[derive(Debug, Clone)]
pub struct VideoProblem {
    pub id: String,
    pub message: String,
}

/// Every servable video, by id.
pub struct Store {
    /// The videos of the running config: what new requests are routed to.
    pub videos: BTreeMap<String, Video>,
    /// Videos a reload removed while connections still used them: reachable through `get`/`get_mut`
    /// for those connections (payload, writes, commits) but not routable (routes.rs checks `videos`).
    /// Their files stay open (and flock'ed) until the event loop drops them once unused and committed;
    /// a reload that adds the id back with the same kind moves the entry back (`unretire`).
    pub retired: BTreeMap<String, Video>,
    pub data_dir: PathBuf,
    pub boot_id: BootId,
    pub max_presence_ranges: usize,
    /// Origin fetches since start, over every origin video (counters for /metrics: a video a reload
    /// removes does not take its share with it).
    pub origin_totals: OriginTotals,
    /// The disk budget of origin content and the eviction policy.
    pub space: space::CacheSpace,
    /// `[cache] read_ahead_blocks`.
    pub read_ahead_blocks: u64,
    /// `[[mount]]`s, as the daemon started with them.
    pub mounts: mounts::Mounts,
    /// Configured videos the start-up threads are still opening (`event_loop/startup.rs`), with the
    /// requests waiting for them.
    pub opening: BTreeMap<String, Opening>,
    /// Videos a request started waiting for since the loop last looked: opened first.
    pub open_wanted: Vec<String>,
}

/// A video being opened at start-up.
#[derive(Default)]
pub struct Opening {
    /// Its data file is being synced before its record is trusted (after a crash).
    pub recovering: bool,
    pub waiters: Waiters,
}

/// What a request to a video still being opened at start-up answers once its wait ran out.
pub fn opening_message(recovering: bool) -> &'static str {
    match recovering {
        true => {
            "being recovered at start-up (its data file is synced before its record is trusted); retry shortly"
        }
        false => "being opened at start-up; retry shortly",
    }
}

/// Counters of the origin fetches since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OriginTotals {
    /// Block fetches whose body arrived whole.
    pub fetches: u64,
    /// Block fetches that failed (refused, reset, 5xx, malformed, short, timed out).
    pub failures: u64,
    /// Body bytes read from origins into the cache.
    pub bytes: u64,
}

fn data_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{}.data", mounts::file_stem(id)))
}

fn meta_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{}.meta", mounts::file_stem(id)))
}

/// What a metadata record says about an upload slot.
struct UploadState {
    generation: u64,
    modified: SystemTime,
    presence: PresenceMap,
    /// Origin videos only (payload version 2): "" while unknown.
    validator: Option<String>,
}

fn decode_upload_payload(
    payload: &[u8],
    len: u64,
    max_ranges: usize,
) -> Result<UploadState, String> {
    let version = *payload.first().ok_or("metadata payload is empty")?;
    if version != UPLOAD_PAYLOAD_VERSION && version != ORIGIN_PAYLOAD_VERSION {
        return Err(format!("unknown payload version {version}"));
    }
    let word = |at: usize| -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(
            payload
                .get(at..at + 8)
                .ok_or("metadata payload is truncated")?,
        );
        Ok(u64::from_le_bytes(b))
    };
    let generation = word(1)?;
    let modified = UNIX_EPOCH + Duration::from_secs(word(9)?);
    let mut at = 17;
    let mut validator = None;
    if version == ORIGIN_PAYLOAD_VERSION {
        let n = payload
            .get(17..19)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or("metadata payload is truncated")?;
        let v = payload
            .get(19..19 + n)
            .ok_or("metadata payload is truncated")?;
        validator = Some(String::from_utf8(v.to_vec()).map_err(|_| "validator is not UTF-8")?);
        at = 19 + n;
    }
    let presence = PresenceMap::decode(&payload[at..], len, max_ranges)
        .map_err(|e| format!("presence map: {e}"))?;
    Ok(UploadState {
        generation,
        modified,
        presence,
        validator,
    })
}

impl Store {
    /// Open every video of the config on the calling thread (tests; the daemon opens them off the
    /// loop). Videos that cannot be opened are reported and left out; the others are served.
    #[cfg(test)]
    pub fn open(cfg: &Config, boot_id: BootId) -> Result<(Store, Vec<VideoProblem>), String> {
        let mut store = Store::open_empty(cfg, boot_id)?;
        store.opening.clear();
        let mut problems = Vec::new();
        for v in &cfg.videos {
            match store.paths().open_video(v, None) {
                Ok(video) => store.insert_video(v.id.clone(), video),
                Err(message) => problems.push(VideoProblem {
                    id: v.id.clone(),
                    message,
                }),
            }
        }
        problems.extend(store.open_mounted_files());
        Ok((store, problems))
    }

    /// The store of a config with no video opened yet: the data directory exists, every configured
    /// video is `opening` (the daemon opens them off the loop, `event_loop/startup.rs`).
    pub fn open_empty(cfg: &Config, boot_id: BootId) -> Result<Store, String> {
        let data_dir = cfg.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            format!(
                "cannot create data_dir {}: {e} (set [server] data_dir to a writable directory)",
                data_dir.display()
            )
        })?;
        let mut store = Store {
            videos: BTreeMap::new(),
            retired: BTreeMap::new(),
            data_dir,
            boot_id,
            // Checked against MAX_PRESENCE_RANGES when the config was loaded: never lowered here.
            max_presence_ranges: cfg.server.limits.max_presence_ranges,
            origin_totals: OriginTotals::default(),
            space: space::CacheSpace::new(cfg.cache.max_size, cfg.cache.min_free),
            read_ahead_blocks: cfg.cache.read_ahead_blocks,
            mounts: mounts::Mounts::resolve(cfg),
            opening: cfg
                .videos
                .iter()
                .map(|v| (v.id.clone(), Opening::default()))
                .collect(),
            open_wanted: Vec::new(),
        };
        store.space.saved_recency = space::load_recency(&store.data_dir);
        assert!(
            store.max_presence_ranges <= MAX_PRESENCE_RANGES,
            "limits.max_presence_ranges passed the config check but does not fit a record"
        );
        Ok(store)
    }

    /// Add an opened video: an origin video's allocated blocks join the budget and the policy.
    pub fn insert_video(&mut self, id: String, mut video: Video) {
        if let Some(o) = video.origin_mut() {
            o.set_read_ahead(self.read_ahead_blocks);
        }
        self.register_space(&id, &video);
        self.videos.insert(id, video);
    }

    /// Count an origin video's allocated blocks against the budget and give them to the policy
    /// (oldest persisted access first, so a restart does not evict the hot set first).
    pub fn register_space(&mut self, id: &str, video: &Video) {
        let Some(o) = video.origin() else { return };
        let mut blocks: Vec<(u32, u64)> = o
            .space
            .allocated()
            .iter()
            .map(|&b| {
                let key = (id.to_string(), b);
                (self.space.saved_recency.get(&key).copied().unwrap_or(0), b)
            })
            .collect();
        blocks.sort_unstable();
        for (epoch, b) in blocks {
            self.space.grant(o.block_bytes(b));
            self.space.policy.insert((id.to_string(), b), epoch);
        }
    }

    /// A video leaves the store for good (a reload removed it): an origin video's blocks leave the
    /// budget and the policy — unless a reload redefined it: the new video's blocks (same keys) stay
    /// in the policy.
    pub fn forget_video_space(&mut self, id: &str, video: &Video) {
        let Some(o) = video.origin() else { return };
        let keep_policy = self.videos.contains_key(id);
        let (fb, len) = (o.fill_block(), o.len().unwrap_or(0));
        self.unregister_space(id, &o.space, fb, len, keep_policy);
    }

    /// An origin video's files (`fill_block`s of a `len`-byte file) went or are going: its blocks
    /// leave the budget, and the policy unless `keep_policy`.
    pub fn unregister_space(
        &mut self,
        id: &str,
        gone: &space::BlockSpace,
        fill_block: u64,
        len: u64,
        keep_policy: bool,
    ) {
        for b in gone.counted() {
            let bytes = space::block_bytes(b, fill_block, len);
            if gone.is_evicting(b) {
                self.space.evicting = self.space.evicting.saturating_sub(bytes);
            }
            self.space.release(bytes);
            if !keep_policy {
                self.space.policy.remove(&(id.to_string(), b));
            }
        }
    }

    /// What opening a writable video needs, detached from the store (the commit worker opens and
    /// creates files with it, off the event loop).
    pub fn paths(&self) -> StorePaths {
        StorePaths {
            data_dir: self.data_dir.clone(),
            boot_id: self.boot_id,
            max_presence_ranges: self.max_presence_ranges,
        }
    }

    /// A video by id, configured or retired (a connection that started on it keeps it). Whether a new
    /// request may use the id is decided on `videos` alone.
    pub fn get(&self, id: &str) -> Option<&Video> {
        self.videos.get(id).or_else(|| self.retired.get(id))
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Video> {
        match self.videos.get_mut(id) {
            Some(v) => Some(v),
            None => self.retired.get_mut(id),
        }
    }

    /// Every video with open files, configured and retired (for checkpoints and the final commit).
    pub fn all_mut(&mut self) -> impl Iterator<Item = (&String, &mut Video)> {
        self.videos.iter_mut().chain(self.retired.iter_mut())
    }

    /// Stop routing new requests to a video; its files stay open for the connections using it.
    pub fn retire(&mut self, id: &str) -> bool {
        match self.videos.remove(id) {
            Some(v) => {
                self.retired.insert(id.to_string(), v);
                true
            }
            None => false,
        }
    }

    /// Route a retired video again (a reload added it back with the same kind): its open files and
    /// cached data are reused, as opening them a second time would fail on the data file's lock.
    pub fn unretire(&mut self, id: &str) -> bool {
        match self.retired.remove(id) {
            Some(v) => {
                self.videos.insert(id.to_string(), v);
                true
            }
            None => false,
        }
    }
}

/// A ring's state: its durable record, or the newest whole state its log holds after it.
fn replay_ring(payload: &[u8], log: &[meta::LogEntry], capacity: u64) -> Result<RingState, String> {
    let newest = log.iter().rev().find(|e| !e.delta);
    RingState::decode(newest.map_or(payload, |e| &e.record.payload), capacity)
}

/// An upload slot's state: its durable record with the log written after it replayed, in seq order
/// (a whole record replaces the state — an older vcache wrote those —, a delta of the same generation
/// adds its ranges). A delta that does not decode or fit ends the replay there.
fn replay_upload(
    payload: &[u8],
    log: &[meta::LogEntry],
    len: u64,
    max_ranges: usize,
) -> Result<UploadState, String> {
    let mut st = decode_upload_payload(payload, len, max_ranges)?;
    for e in log {
        if !e.delta {
            st = decode_upload_payload(&e.record.payload, len, max_ranges)?;
            continue;
        }
        if let Err(why) = apply_delta(&mut st, &e.record.payload) {
            log::warn!(
                "a fast record (seq {}) is not replayed: {why}",
                e.record.seq
            );
            break;
        }
    }
    Ok(st)
}

/// Add one delta (`Slot::delta_payload`) to a recovered state.
fn apply_delta(st: &mut UploadState, delta: &[u8]) -> Result<(), String> {
    let truncated = || "delta is truncated".to_string();
    let word = |at: usize| -> Result<u64, String> {
        let b = delta.get(at..at + 8).ok_or_else(truncated)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| truncated())?))
    };
    if delta.first() != Some(&DELTA_PAYLOAD_VERSION) {
        return Err("unknown delta version".into());
    }
    let generation = word(1)?;
    if generation < st.generation {
        // Written before a DELETE whose record is the durable one: nothing to add.
        return Ok(());
    }
    // A newer generation without a durable record: an origin video's fresh files raised theirs
    // (`OriginVideo`, after creation). A DELETE's cannot be: no fast record is written until the
    // DELETE's durable record has landed.
    st.generation = generation;
    let modified = UNIX_EPOCH + Duration::from_secs(word(9)?);
    let vlen = delta.get(17..19).ok_or_else(truncated)?;
    let vlen = usize::from(u16::from_le_bytes([vlen[0], vlen[1]]));
    let validator = delta.get(19..19 + vlen).ok_or_else(truncated)?;
    let at = 19 + vlen;
    let count = delta.get(at..at + 4).ok_or_else(truncated)?;
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    if delta.len() != at + 4 + count * presence::ENCODED_RANGE_LEN {
        return Err(format!("{count} ranges do not match its length"));
    }
    for i in 0..count {
        let (a, b) = (word(at + 4 + 16 * i)?, word(at + 12 + 16 * i)?);
        st.presence
            .insert(a, b)
            .map_err(|e| format!("range {a}..{b}: {e}"))?;
    }
    // Deltas are replayed in seq order: the last one's time is the newest (an origin video's time is
    // its origin's Last-Modified, which may be older than the record's).
    st.modified = modified;
    if !validator.is_empty() {
        st.validator = Some(String::from_utf8_lossy(validator).into_owned());
    }
    Ok(())
}

impl UploadState {
    fn encode(&self) -> Vec<u8> {
        encode_upload_payload(
            self.generation,
            self.modified,
            &self.presence,
            self.validator.as_deref(),
        )
    }
}

fn encode_upload_payload(
    generation: u64,
    modified: SystemTime,
    presence: &PresenceMap,
    validator: Option<&str>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(19 + presence.encoded_len());
    p.push(if validator.is_some() {
        ORIGIN_PAYLOAD_VERSION
    } else {
        UPLOAD_PAYLOAD_VERSION
    });
    p.extend_from_slice(&generation.to_le_bytes());
    p.extend_from_slice(&unix_secs(modified).to_le_bytes());
    if let Some(v) = validator {
        // Validators longer than this are not kept (the origin's object is then always re-validated
        // by length only); real ETags are far shorter.
        let v = if v.len() <= MAX_VALIDATOR_LEN { v } else { "" };
        p.extend_from_slice(&(v.len() as u16).to_le_bytes());
        p.extend_from_slice(v.as_bytes());
    }
    presence.encode(&mut p);
    p
}

/// A read-only description of what is cached for each video, for `vcache check`. Takes no lock and
/// creates nothing.
pub fn describe_cached(cfg: &Config, v: &VideoConfig, boot: &BootId) -> String {
    let mpath = meta_path(&cfg.server.data_dir, &v.id);
    let sync_failed = meta::read_sync_failed(&mpath);
    // What the next start recovers: after a failed data sync, durable records only.
    let boot = match sync_failed {
        Some(_) => &meta::UNKNOWN_BOOT,
        None => boot,
    };
    let described = match &v.kind {
        VideoKind::File { path } => Ok(match std::fs::metadata(path) {
            Ok(m) => format!("file {} ({} bytes), complete", path.display(), m.len()),
            Err(e) => format!("file {}: {e}", path.display()),
        }),
        VideoKind::Upload { size } => describe_upload(&mpath, *size, boot),
        VideoKind::Live { capacity, .. } => describe_live(&mpath, *capacity, boot),
        VideoKind::Origin { url, size, .. } => describe_origin(&mpath, url, *size, boot),
    };
    // Err carries the whole line: what is wrong with the metadata file.
    let described = described.unwrap_or_else(|problem| problem);
    match sync_failed {
        Some(why) => format!(
            "PROBLEM: a data sync failed ({why}; {}): writes acknowledged after its last durable \
             record may be lost, and the next start reopens it from that record: {described}",
            meta::sync_failed_marker(&mpath).display()
        ),
        None => described,
    }
}

/// The winning durable record of an existing metadata file and the log entries after it, read
/// without a lock (None: nothing recorded).
fn read_record(
    mpath: &Path,
    boot: &BootId,
) -> Result<Option<(MetaRecord, Vec<meta::LogEntry>)>, String> {
    let unreadable =
        |e: String| format!("PROBLEM: metadata {} cannot be read: {e}", mpath.display());
    let meta = MetaFile::open(mpath, None).map_err(|e| unreadable(e.to_string()))?;
    let loaded = meta.load(boot).map_err(|e| unreadable(e.to_string()))?;
    match loaded {
        None => Ok(None),
        Some((_, rec)) => {
            let log = meta.scan(boot).map_err(|e| unreadable(e.to_string()))?.log;
            Ok(Some((rec, log)))
        }
    }
}

/// A payload that does not decode, as `vcache check` reports it.
fn undecodable(mpath: &Path) -> impl Fn(String) -> String + '_ {
    move |e| format!("PROBLEM: metadata {}: {e}", mpath.display())
}

fn describe_upload(mpath: &Path, size: u64, boot: &BootId) -> Result<String, String> {
    if !mpath.exists() {
        return Ok(format!("upload slot of {size} bytes, not created yet"));
    }
    let Some((rec, log)) = read_record(mpath, boot)? else {
        return Ok(format!("upload slot of {size} bytes, nothing recorded"));
    };
    if rec.video_kind != KIND_CODE_UPLOAD || rec.data_len != size {
        return Ok(format!(
            "PROBLEM: metadata describes kind code {} of {} bytes, config says upload of {size}",
            rec.video_kind, rec.data_len
        ));
    }
    let st = replay_upload(&rec.payload, &log, size, usize::MAX).map_err(undecodable(mpath))?;
    let complete = if st.presence.is_complete() {
        " (complete)"
    } else {
        ""
    };
    Ok(format!(
        "upload slot of {size} bytes, {} bytes present in {} ranges{complete}",
        st.presence.present_bytes(),
        st.presence.ranges().len(),
    ))
}

fn describe_live(mpath: &Path, capacity: u64, boot: &BootId) -> Result<String, String> {
    if !mpath.exists() {
        return Ok(format!("live channel of {capacity} bytes, not created yet"));
    }
    let Some((rec, log)) = read_record(mpath, boot)? else {
        return Ok(format!(
            "live channel of {capacity} bytes, nothing recorded"
        ));
    };
    if rec.video_kind != KIND_CODE_LIVE || rec.data_len != capacity {
        return Ok(format!(
            "PROBLEM: metadata describes kind code {} of {} bytes, config says live of {capacity}",
            rec.video_kind, rec.data_len
        ));
    }
    let st = replay_ring(&rec.payload, &log, capacity)
        .map_err(undecodable(mpath))?
        .recovered(capacity);
    let (start, head) = (st.window_start(capacity), st.head);
    Ok(format!(
        "live channel of {capacity} bytes, head {head}, window {start}-{head} ({} bytes)",
        head - start
    ))
}

fn describe_origin(
    mpath: &Path,
    url: &str,
    size: Option<u64>,
    boot: &BootId,
) -> Result<String, String> {
    if !mpath.exists() {
        return Ok(match size {
            Some(n) => format!("origin video at {url}, {n} bytes, nothing cached yet"),
            None => format!("origin video at {url}, length not learned yet, nothing cached"),
        });
    }
    let Some((rec, log)) = read_record(mpath, boot)? else {
        return Ok(format!("origin video at {url}, nothing recorded"));
    };
    if rec.video_kind != KIND_CODE_ORIGIN {
        return Ok(format!(
            "PROBLEM: metadata describes kind code {}, config says origin",
            rec.video_kind
        ));
    }
    let st =
        replay_upload(&rec.payload, &log, rec.data_len, usize::MAX).map_err(undecodable(mpath))?;
    let validator = match st.validator.unwrap_or_default() {
        v if v.is_empty() => "unknown".to_string(),
        v => format!("known ({v})"),
    };
    // Disk use of the (sparse) data file: what it occupies, as the file system counts it.
    let dpath = mpath.with_extension("data");
    let disk = std::fs::metadata(&dpath)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{} on disk", m.blocks() * 512)
        })
        .unwrap_or_else(|_| "no data file".to_string());
    Ok(format!(
        "origin video at {url}, {} bytes, {} cached in {} ranges ({disk}), validator {validator}",
        rec.data_len,
        st.presence.present_bytes(),
        st.presence.ranges().len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_woken_once_each_in_arrival_order() {
        let mut w = Waiters::default();
        for t in [3, 1, 3, 2, 1] {
            w.add(Token(t));
        }
        let mut wake = vec![Token(9)];
        w.wake_all(&mut wake);
        assert_eq!(wake, [Token(9), Token(3), Token(1), Token(2)]);
        assert!(w.is_empty());
        w.add(Token(3));
        let mut again = Vec::new();
        w.wake_all(&mut again);
        assert_eq!(again, [Token(3)], "a woken waiter may wait again");
    }

    /// A data directory for one test, removed when dropped (also when the test panics).
    struct TestPaths(StorePaths);

    impl TestPaths {
        fn new(name: &str, max_presence_ranges: usize) -> TestPaths {
            let dir =
                std::env::temp_dir().join(format!("vcache-store-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("test dir");
            TestPaths(StorePaths {
                data_dir: dir,
                boot_id: [9; 16],
                max_presence_ranges,
            })
        }

        fn slot(&self, len: u64) -> Slot {
            self.0
                .open_slot_of_kind("up", len, KIND_CODE_UPLOAD, "upload", None)
                .expect("slot")
        }

        fn ring(&self, capacity: u64) -> LiveRing {
            self.0.open_ring("live", capacity).expect("ring")
        }
    }

    impl Drop for TestPaths {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0.data_dir);
        }
    }

    /// A ring whose first write intent is durable, as after its first commit.
    fn publishing_ring(r: &mut LiveRing) -> u64 {
        let w = r.begin_publish().expect("publisher");
        let _ = r.write_target(w, 0, 1);
        let job = r.commit_job("live").expect("an intent commit");
        r.commit_done(&CommitDone {
            video: job.video,
            claim_seq: job.claim_seq,
            record_slot: job.record_slot,
            result: Ok(()),
        });
        w
    }

    #[test]
    fn a_relay_head_jump_writes_only_under_a_durable_intent() {
        let t = TestPaths::new("jump", 16);
        let mut r = t.ring(4096);
        let w = publishing_ring(&mut r);
        r.write_target(w, 0, 100).expect("target").fill(1);
        r.claim(w, 0, 100);
        // Below the durable intent (512): the writes may go on at once; the window starts afresh.
        r.jump_head(w, 300);
        assert_eq!((r.window_start(), r.state.head), (300, 300));
        assert_eq!(r.availability(299), Availability::Gone);
        assert_eq!(r.write_target(w, 300, 1000).expect("target").len(), 212);
        // Past it: nothing is written until an intent past the new head is durable.
        r.jump_head(w, 10_000);
        assert_eq!(r.write_target(w, 10_000, 10), Err(IngestBlock::AwaitCommit));
        assert_eq!(r.availability(10_000), Availability::Pending);
        {
            // (The job holds the data file, and with it the lock, until it is dropped.)
            let job = r.commit_job("live").expect("the jump's intent commit");
            r.commit_done(&CommitDone {
                video: job.video,
                claim_seq: job.claim_seq,
                record_slot: job.record_slot,
                result: Ok(()),
            });
        }
        r.write_target(w, 10_000, 10).expect("target").fill(2);
        assert_eq!(r.claim(w, 10_000, 10_010), 10_010);
        assert_eq!(r.availability(10_000), Availability::Present(10_010));
        // A (process-crash) record of this state: a reopened ring's window starts at the jump.
        let p = r.state.encode();
        r.commit.write_fast_record(p, false).expect("fast record");
        drop(r);
        let r = t.ring(4096);
        assert_eq!((r.window_start(), r.state.head), (10_000, 10_010));
    }

    #[test]
    fn claims_advance_in_order_and_report_what_is_recorded() {
        let t = TestPaths::new("claims", 16);
        let mut s = t.slot(1000);
        let r = s.reserve(100, 200).expect("reserve");
        s.write_target(r, 100, 50).expect("target").fill(1);
        assert_eq!(s.claim(r, 100, 150), 150);
        assert_eq!(s.claim(r, 150, 150), 150, "an empty claim records nothing");
        assert_eq!(s.availability(120), Availability::Present(150));
        assert_eq!(s.availability(160), Availability::Pending);
        assert!(
            s.reserve(140, 160).is_err(),
            "present and reserved bytes stay apart"
        );
        s.release(r);
        assert!(
            s.write_target(r, 150, 1).is_none(),
            "a released reservation has no target"
        );
    }

    #[test]
    fn a_slot_at_its_range_bound_refuses_writes_it_could_not_record() {
        let t = TestPaths::new("bound", 2);
        let mut s = t.slot(1000);
        let a = s.reserve(0, 10).expect("reserve");
        // Two writes in flight may leave two ranges: a third is refused before it takes a byte.
        let b = s.reserve(20, 30).expect("reserve");
        assert!(matches!(
            s.reserve(40, 50),
            Err(WriteRefusal::TooFragmented { max_ranges: 2 })
        ));
        assert_eq!(s.claim(a, 0, 5), 5);
        assert_eq!(s.claim(a, 5, 10), 10, "a reservation's claims form one run");
        assert_eq!(s.claim(b, 20, 30), 30);
        assert_eq!(s.presence.ranges(), &[(0, 10), (20, 30)]);
    }

    #[test]
    fn a_video_whose_data_sync_failed_reopens_from_its_last_durable_record() {
        let t = TestPaths::new("sync-failed", 16);
        let mpath = meta_path(&t.0.data_dir, "up");
        {
            let mut s = t.slot(1000);
            let r = s.reserve(0, 100).expect("reserve");
            s.write_target(r, 0, 100).expect("target").fill(7);
            s.claim(r, 0, 100);
            let p = s.delta_payload();
            assert!(s.commit.write_fast_record(p, true).expect("fast record"));
        }
        // Without a failed sync, the fast record of this boot would be replayed.
        let meta = MetaFile::open(&mpath, None).expect("meta");
        assert_eq!(meta.scan(&t.0.boot_id).expect("scan").log.len(), 1);
        // What the commit worker records when the data sync fails.
        meta::mark_sync_failed(&mpath, "Input/output error").expect("marker");
        let s = t.slot(1000);
        assert_eq!(
            s.presence.present_bytes(),
            0,
            "the fast record is not trusted"
        );
        assert!(
            meta::read_sync_failed(&mpath).is_none(),
            "the marker is cleared"
        );
        drop(s);
        // The marker is gone, and the fast record stays outdated by the new durable record.
        let s = t.slot(1000);
        assert_eq!(s.presence.present_bytes(), 0);
    }

    #[test]
    fn fast_deltas_are_replayed_after_a_crash_for_uploads_and_origins() {
        let t = TestPaths::new("replay", 16);
        for (id, kind, validator) in [
            ("up", KIND_CODE_UPLOAD, None),
            ("or", KIND_CODE_ORIGIN, Some(String::new())),
        ] {
            let open = || {
                t.0.open_slot_of_kind(id, 1000, kind, "k", validator.clone())
                    .expect("slot")
            };
            let mut s = open();
            // An origin video raises a fresh slot's generation without a durable record.
            s.generation = 5;
            for (a, b) in [(0, 100), (200, 300), (100, 150)] {
                let r = s.reserve(a, b).expect("reserve");
                s.write_target(r, a, b - a).expect("target").fill(1);
                s.claim(r, a, b);
                s.release(r);
                let p = s.delta_payload();
                assert!(s.commit.write_fast_record(p, true).expect("fast record"));
                s.unlogged.clear();
            }
            drop(s);
            let s = open();
            assert_eq!(s.presence.ranges(), &[(0, 150), (200, 300)], "{id}");
            assert_eq!(s.generation, 5);
        }
    }

    #[test]
    #[should_panic(expected = "outside its reservation")]
    fn a_write_outside_its_reservation_panics() {
        let t = TestPaths::new("write-outside", 16);
        let mut s = t.slot(1000);
        let r = s.reserve(100, 200).expect("reserve");
        let _ = s.write_target(r, 150, 51);
    }

    #[test]
    #[should_panic(expected = "out of order or outside its reservation")]
    fn a_claim_of_unwritten_bytes_panics() {
        let t = TestPaths::new("claim-ahead", 16);
        let mut s = t.slot(1000);
        let r = s.reserve(100, 200).expect("reserve");
        // Bytes 100..150 were never claimed: 150..160 cannot have arrived in order.
        s.claim(r, 150, 160);
    }

    #[test]
    #[should_panic(expected = "does not exist")]
    fn a_claim_without_a_reservation_panics() {
        let t = TestPaths::new("claim-none", 16);
        let mut s = t.slot(1000);
        s.claim(7, 0, 10);
    }

    #[test]
    fn a_live_claim_is_recorded_and_stays_under_the_durable_intent() {
        let t = TestPaths::new("live-claim", 16);
        let mut r = t.ring(8 << 10);
        let w = publishing_ring(&mut r);
        let n = r.write_target(w, 0, 4096).expect("target").len() as u64;
        assert!(n > 0 && n <= 4096);
        assert_eq!(r.claim(w, 0, n), n);
        assert_eq!(r.availability(0), Availability::Present(n));
    }

    #[test]
    #[should_panic(expected = "refused")]
    fn a_live_claim_past_the_durable_intent_panics() {
        let t = TestPaths::new("live-intent", 16);
        let mut r = t.ring(8 << 10);
        let w = publishing_ring(&mut r);
        // The durable intent is an eighth of the ring: the whole ring is past it.
        r.claim(w, 0, 8 << 10);
    }

    #[test]
    #[should_panic(expected = "refused")]
    fn a_live_claim_not_at_the_head_panics() {
        let t = TestPaths::new("live-head", 16);
        let mut r = t.ring(8 << 10);
        let w = publishing_ring(&mut r);
        r.claim(w, 10, 20);
    }

    #[test]
    #[should_panic(expected = "stale publisher")]
    fn a_write_by_an_ended_publisher_panics() {
        let t = TestPaths::new("live-stale", 16);
        let mut r = t.ring(8 << 10);
        let w = publishing_ring(&mut r);
        r.end_publish(w);
        let _ = r.write_target(w, 0, 10);
    }
}
