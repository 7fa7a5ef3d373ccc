//! Origin videos' fill state: where a video is in its lifecycle (`Lifecycle`: learning the object's
//! length, creating its files, ready, dropping the files of an object that changed length), which
//! aligned `fill_block`s readers and warm-ups want (`BlockQueue`s, bounded), which are being fetched,
//! and which failed (and the status their readers get). The network side is `crate::origin`; this
//! module decides nothing about sockets, only what is wanted and what a reader may be told. Every
//! change of state is a method here: no other module sets a flag.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::space::BlockSpace;
use super::{Availability, Slot};

/// A reader of an origin video (its connection's token): what it holds is given back when it goes.
pub type ReaderId = usize;

/// The "block" of a revalidation: a conditional request about the whole object, not a fetch.
pub const REVALIDATION_BLOCK: u64 = u64::MAX;

/// Where a revalidation (`revalidate_after`) stands. While one is wanted or in flight, cached bytes
/// read as pending: readers wait for the origin's answer (a 304, or the new object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revalidation {
    Idle,
    Wanted,
    InFlight,
}

/// Most blocks queued per video for readers. The rest of a longer range waits as a pending span and
/// is queued as room appears, so a reader past the cap is never stalled.
pub const MAX_CLIENT_BLOCKS: usize = 65_536;
/// Most blocks queued per video for warm-ups (`POST /fill`); they are fetched only when no reader's
/// block is queued, and never take a reader's room.
pub const MAX_WARM_BLOCKS: usize = 65_536;
/// Most ranges per queue waiting for room (one per range of a request; a request's ranges are merged).
/// Beyond it a range is queued only when its request routes again.
pub const MAX_PENDING_SPANS: usize = 1_024;

/// Where an origin video is in its life. Transitions (each a method of `OriginVideo`, asserted):
/// `Unknown → CreateWanted` (`learned`), `CreateWanted → Creating` (`take_create_wanted`),
/// `Creating → Ready` (`files_created`) or `→ Unknown` (`files_failed`), `Ready → Forgetting`
/// (`object_changed` with a new length), `Forgetting → RemoveWanted` (`drop_files`),
/// `RemoveWanted → Removing` (`take_remove_wanted`), `Removing → Unknown` (`files_removed`).
/// A video opened with files on disk starts `Ready`; blocks are fetched only `Unknown` (block 0, to
/// learn the length) or `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Unknown,
    CreateWanted,
    Creating,
    Ready,
    Forgetting,
    RemoveWanted,
    Removing,
}

enum Lifecycle {
    /// The object's length is not known: a fetch of block 0 learns it.
    Unknown,
    /// A fetch learned the length and validator; the event loop hands them to the commit worker.
    CreateWanted { len: u64, validator: String },
    /// The commit worker creates the files; the learning fetch waits for them.
    Creating,
    /// The files exist: blocks are fetched into the slot.
    Ready(Box<Slot>),
    /// The object changed length: the record forgetting the old bytes becomes durable, then the
    /// files go. Nothing is fetched.
    Forgetting(Box<Slot>),
    /// The old files are closed and wait for the event loop to hand them to the commit worker.
    RemoveWanted,
    /// The commit worker removes the old files; then the length is learned anew.
    Removing,
}

impl Lifecycle {
    fn phase(&self) -> Phase {
        match self {
            Lifecycle::Unknown => Phase::Unknown,
            Lifecycle::CreateWanted { .. } => Phase::CreateWanted,
            Lifecycle::Creating => Phase::Creating,
            Lifecycle::Ready(_) => Phase::Ready,
            Lifecycle::Forgetting(_) => Phase::Forgetting,
            Lifecycle::RemoveWanted => Phase::RemoveWanted,
            Lifecycle::Removing => Phase::Removing,
        }
    }
}

/// Blocks waiting for a fetch, each at most once, first come first served (a retried block goes
/// first): adding, finding, removing and popping a block are O(log n). New demand is taken only
/// below `cap`; what did not fit waits in `pending` as byte ranges and is queued as room appears. A
/// block that returns from a fetch (retry, the rest of a block) is queued even at the cap: it was
/// counted when it was first queued, so the queue passes the cap by at most the fetches in flight.
struct BlockQueue {
    cap: usize,
    /// ticket → block, in fetch order.
    order: BTreeMap<u64, u64>,
    /// block → its ticket.
    ticket: BTreeMap<u64, u64>,
    next_back: u64,
    next_front: u64,
    next_ready: u64,
    /// (the request's start, first byte) → last byte: ranges waiting for room, oldest request first.
    pending: BTreeMap<(Instant, u64), u64>,
}

impl BlockQueue {
    fn new(cap: usize) -> BlockQueue {
        BlockQueue {
            cap,
            order: BTreeMap::new(),
            ticket: BTreeMap::new(),
            // Tickets: retries count down from 2^62, blocks back from their allocation count up
            // from 2^62 (first come first served among them), new blocks count up from 2^63; 2^62
            // pushes of any kind cannot happen.
            next_back: 1 << 63,
            next_front: (1 << 62) - 1,
            next_ready: 1 << 62,
            pending: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn has_room(&self) -> bool {
        self.len() < self.cap
    }

    fn contains(&self, block: u64) -> bool {
        self.ticket.contains_key(&block)
    }

    fn push_back(&mut self, block: u64) {
        assert!(!self.contains(block), "block {block} queued twice");
        self.order.insert(self.next_back, block);
        self.ticket.insert(block, self.next_back);
        self.next_back += 1;
    }

    fn push_front(&mut self, block: u64) {
        self.remove(block);
        self.order.insert(self.next_front, block);
        self.ticket.insert(block, self.next_front);
        self.next_front -= 1;
    }

    /// Queue `block` after the retries and before the blocks never tried, behind those queued this
    /// way before it: blocks whose space was just allocated keep the order they were asked in.
    fn push_ready(&mut self, block: u64) {
        self.remove(block);
        self.order.insert(self.next_ready, block);
        self.ticket.insert(block, self.next_ready);
        self.next_ready += 1;
    }

    fn remove(&mut self, block: u64) -> bool {
        match self.ticket.remove(&block) {
            Some(t) => {
                let removed = self.order.remove(&t);
                assert_eq!(removed, Some(block), "block queue index out of step");
                true
            }
            None => false,
        }
    }

    fn pop(&mut self) -> Option<u64> {
        let (t, block) = self.order.pop_first()?;
        let removed = self.ticket.remove(&block);
        assert_eq!(removed, Some(t), "block queue index out of step");
        Some(block)
    }

    fn clear(&mut self) {
        self.order.clear();
        self.ticket.clear();
        self.pending.clear();
    }

    /// Remember bytes [first, last] of a request that started at `since` until there is room; its
    /// overlapping or adjacent ranges merge. False if too many ranges wait already.
    fn remember(&mut self, since: Instant, first: u64, last: u64) -> bool {
        let (mut first, mut last) = (first, last);
        let touching: Vec<(u64, u64)> = self
            .pending
            .range((since, 0)..=(since, u64::MAX))
            .filter(|&(&(_, f), &l)| f <= last.saturating_add(1) && l.saturating_add(1) >= first)
            .map(|(&(_, f), &l)| (f, l))
            .collect();
        for (f, l) in touching {
            self.pending.remove(&(since, f));
            first = first.min(f);
            last = last.max(l);
        }
        if self.pending.len() >= MAX_PENDING_SPANS {
            return false;
        }
        self.pending.insert((since, first), last);
        true
    }

    /// The oldest request's first waiting range.
    fn take_pending(&mut self) -> Option<(Instant, u64, u64)> {
        let ((since, first), last) = self.pending.pop_first()?;
        Some((since, first, last))
    }
}

/// A fetch failed: when, the status (502/504) and the reason readers get.
struct FetchFailure {
    at: Instant,
    status: u16,
    why: String,
}

/// One block to fetch: the block and the bytes of it to ask for (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockFetch {
    pub block: u64,
    pub first: u64,
    pub last: u64,
}

pub struct OriginVideo {
    url: String,
    host: String,
    port: u16,
    path: String,
    fill_block: u64,
    /// Resolved when the config was loaded (never on the event loop).
    addrs: Vec<SocketAddr>,
    state: Lifecycle,
    /// A warm-up of the whole object was asked for before its length was known.
    warm_all_when_known: bool,
    /// Blocks being fetched now (block 0 while learning the length). A block is in flight, in one
    /// queue, or in neither.
    inflight: BTreeSet<u64>,
    /// Blocks readers wait for, fetched before `warm`: blocks a warm-up asked for.
    client: BlockQueue,
    warm: BlockQueue,
    /// Blocks whose last fetch failed.
    failures: BTreeMap<u64, FetchFailure>,
    /// Bytes received from the origin and fetches started (metrics, tests).
    fetched_bytes: u64,
    fetches: u64,
    /// The lowest generation a recreated data file may take: above the forgotten object's (its files
    /// were removed when its length changed), so ETags and running responses never confuse the two.
    generation_floor: u64,
    /// Which blocks are allocated on disk (the data file is sparse).
    pub space: BlockSpace,
    /// Blocks fetched ahead of the one a reader is sending.
    read_ahead: u64,
    /// Each reader's window of blocks [first, last]: the block it sends from and those ahead.
    interests: HashMap<ReaderId, (u64, u64)>,
    /// The last block each reader sent from (counted as a use once per reader and block).
    sent_from: HashMap<ReaderId, u64>,
    /// How many readers' windows hold each block: a reader's block with none is not fetched (its
    /// reader went), and a block with some is never evicted.
    demand: BTreeMap<u64, u32>,
    /// Warm-up blocks waiting for space (they go back to the warm-up queue, not the readers').
    parked_warm: BTreeSet<u64>,
    /// How long an origin 404 is remembered.
    negative_ttl: std::time::Duration,
    /// The block the last learning fetch asked for.
    learn_block: Option<u64>,
    /// `revalidate_after`, and when the cached object's validator was last confirmed (None: not
    /// since start).
    revalidate_after: Option<std::time::Duration>,
    validated_at: Option<Instant>,
    revalidation: Revalidation,
}

impl OriginVideo {
    pub fn new(
        url: String,
        host: String,
        port: u16,
        path: String,
        fill_block: u64,
        addrs: Vec<SocketAddr>,
        slot: Option<Box<Slot>>,
    ) -> OriginVideo {
        OriginVideo {
            url,
            host,
            port,
            path,
            fill_block: fill_block.max(1),
            addrs,
            state: slot.map_or(Lifecycle::Unknown, Lifecycle::Ready),
            warm_all_when_known: false,
            inflight: BTreeSet::new(),
            client: BlockQueue::new(MAX_CLIENT_BLOCKS),
            warm: BlockQueue::new(MAX_WARM_BLOCKS),
            failures: BTreeMap::new(),
            fetched_bytes: 0,
            fetches: 0,
            generation_floor: 0,
            space: BlockSpace::default(),
            read_ahead: crate::config::CacheConfig::default().read_ahead_blocks,
            interests: HashMap::new(),
            sent_from: HashMap::new(),
            demand: BTreeMap::new(),
            parked_warm: BTreeSet::new(),
            negative_ttl: std::time::Duration::from_secs(crate::config::DEFAULT_NEGATIVE_TTL_SECS),
            learn_block: None,
            revalidate_after: None,
            validated_at: None,
            revalidation: Revalidation::Idle,
        }
    }

    /// Blocks fetched ahead of a reader's (`[cache] read_ahead_blocks`).
    pub fn set_read_ahead(&mut self, blocks: u64) {
        self.read_ahead = blocks;
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The origin's host, port and request target.
    pub fn target(&self) -> (&str, u16, &str) {
        (&self.host, self.port, &self.path)
    }

    /// Where to connect: the first resolved address.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addrs.first().copied()
    }

    pub fn fill_block(&self) -> u64 {
        self.fill_block
    }

    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// The fetched bytes: a slot once the files exist (`Ready`, or `Forgetting` a changed object).
    pub fn slot(&self) -> Option<&Slot> {
        match &self.state {
            Lifecycle::Ready(s) | Lifecycle::Forgetting(s) => Some(s),
            _ => None,
        }
    }

    pub fn slot_mut(&mut self) -> Option<&mut Slot> {
        match &mut self.state {
            Lifecycle::Ready(s) | Lifecycle::Forgetting(s) => Some(s),
            _ => None,
        }
    }

    pub fn len(&self) -> Option<u64> {
        self.slot().map(|s| s.data.len)
    }

    pub fn validator(&self) -> &str {
        self.slot()
            .and_then(|s| s.validator.as_deref())
            .unwrap_or("")
    }

    /// Blocks being fetched now.
    pub fn fetching_blocks(&self) -> usize {
        self.inflight.len()
    }

    /// Blocks queued for a fetch (readers' and warm-ups'; ranges waiting for room are not counted).
    pub fn queued_blocks(&self) -> usize {
        self.client.len() + self.warm.len()
    }

    pub fn fetches(&self) -> u64 {
        self.fetches
    }

    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes
    }

    /// `n` bytes of a fetch landed in the slot.
    pub fn add_fetched(&mut self, n: u64) {
        self.fetched_bytes += n;
    }

    /// The byte span [start, end) of block `b`.
    pub fn block_span(&self, b: u64) -> (u64, u64) {
        let start = b.saturating_mul(self.fill_block);
        let end = start.saturating_add(self.fill_block);
        match self.len() {
            Some(len) => (start.min(len), end.min(len)),
            None => (start, end),
        }
    }

    fn block_missing(&self, b: u64) -> bool {
        match self.slot() {
            None => true,
            Some(s) => {
                let (a, e) = self.block_span(b);
                s.presence.first_missing_from(a).is_some_and(|m| m < e)
            }
        }
    }

    /// Block `b` failed while a request that started at `since` was waiting for it — or the origin
    /// said 404 lately (remembered for `negative_ttl`, so a missing object is not asked for again
    /// by every request).
    fn failed_before(&self, b: u64, since: Instant) -> bool {
        self.failures.get(&b).is_some_and(|f| {
            f.at >= since || (f.status == 404 && f.at.elapsed() < self.negative_ttl)
        })
    }

    /// How long an origin 404 is remembered.
    pub fn set_negative_ttl(&mut self, ttl: std::time::Duration) {
        self.negative_ttl = ttl;
    }

    /// Nothing learned, wanted or remembered: a mounted object in this state can leave the store.
    pub fn is_unused_and_unknown(&self) -> bool {
        self.phase() == Phase::Unknown
            && self.interests.is_empty()
            && self.inflight.is_empty()
            && self.client.len() == 0
            && self.warm.len() == 0
            && !self.warm_all_when_known
            && self
                .failures
                .values()
                .all(|f| f.status != 404 || f.at.elapsed() >= self.negative_ttl)
    }
}

/// Wanting blocks and taking them for fetches.
impl OriginVideo {
    /// A reader (or a warm-up) that started at `since` wants bytes [first, last]: queue every block
    /// with missing bytes among them that is neither fetched nor queued, as far as the queue has room;
    /// the rest waits as a pending span. A request that started after a block failed retries it; one
    /// that was already waiting gets the failure. Work: O(log n) per block with missing bytes that is
    /// looked at; present runs are skipped whole, and the walk stops at the cap.
    pub fn want(&mut self, first: u64, last: u64, warm: bool, since: Instant) {
        let Some(len) = self.len() else {
            self.want_length(first / self.fill_block, warm, since);
            return;
        };
        if len == 0 || first >= len {
            return;
        }
        let last = last.min(len - 1);
        // Ranges that waited for room go first.
        self.refill();
        if let Some(rest) = self.queue_range(first, last, warm, since) {
            let queue = if warm {
                &mut self.warm
            } else {
                &mut self.client
            };
            if !queue.remember(since, rest, last) {
                log::debug!(
                    "origin {}: {MAX_PENDING_SPANS} ranges wait for room; bytes {rest}-{last} are queued when their request routes again",
                    self.url
                );
            }
        }
    }

    /// Learning the length comes first: a fetch of `block` (the first a reader wants) tells it. One
    /// learning fetch at a time; readers of other blocks want theirs once the length is known.
    fn want_length(&mut self, block: u64, warm: bool, since: Instant) {
        if self.failed_before(block, since) {
            return;
        }
        self.failures.remove(&block);
        if warm {
            self.warm_all_when_known = true;
        }
        if self.inflight.is_empty() && self.client.len() == 0 {
            self.client.push_back(block);
        }
    }

    /// The block the learning fetch brings (allocated with the files).
    pub fn learn_block(&self) -> Option<u64> {
        self.learn_block
    }

    /// Queue the blocks with missing bytes in [first, last] in order until the queue is full; the first
    /// byte left over, if any.
    fn queue_range(&mut self, first: u64, last: u64, warm: bool, since: Instant) -> Option<u64> {
        let mut at = first;
        while at <= last {
            // Only blocks with missing bytes inside the wanted range (a read of cached bytes fetches
            // nothing); a fetch then fills the whole block.
            let missing = self.slot()?.presence.first_missing_from(at)?;
            if missing > last {
                return None;
            }
            let b = missing / self.fill_block;
            if !self.offer(b, warm, since) {
                return Some(missing);
            }
            at = (b + 1).saturating_mul(self.fill_block);
        }
        None
    }

    /// Offer block `b` to the client or warm-up queue; false if it needed room and there was none.
    fn offer(&mut self, b: u64, warm: bool, since: Instant) -> bool {
        if self.inflight.contains(&b) || self.space.is_parked(b) || self.failed_before(b, since) {
            return true;
        }
        let queued = self.client.contains(b) || (warm && self.warm.contains(b));
        let room = if warm {
            self.warm.has_room()
        } else {
            self.client.has_room()
        };
        if !queued && !room {
            return false;
        }
        self.failures.remove(&b);
        if !queued {
            if warm {
                self.warm.push_back(b);
            } else {
                // A reader's block leaves the warm-up queue for the readers' one.
                self.warm.remove(b);
                self.client.push_back(b);
            }
        }
        true
    }

    /// Queue ranges that waited for room while there is room, readers' first.
    fn refill(&mut self) {
        for warm in [false, true] {
            loop {
                let queue = if warm {
                    &mut self.warm
                } else {
                    &mut self.client
                };
                if !queue.has_room() {
                    break;
                }
                let Some((since, first, last)) = queue.take_pending() else {
                    break;
                };
                if let Some(rest) = self.queue_range(first, last, warm, since) {
                    let queue = if warm {
                        &mut self.warm
                    } else {
                        &mut self.client
                    };
                    let kept = queue.remember(since, rest, last);
                    assert!(kept, "a range taken from the pending ones fits back");
                    break;
                }
            }
        }
    }

    /// Whether a reader's block waits (a fetcher serves these videos before warm-ups).
    pub fn has_client_work(&self) -> bool {
        !self.client.order.is_empty()
            || !self.client.pending.is_empty()
            || self.revalidation == Revalidation::Wanted
    }

    /// The next block to fetch (readers' before warm-ups'), skipping blocks that meanwhile arrived, and
    /// the bytes of it to ask for; it is in flight from now on. None unless the video is `Unknown`
    /// (learning the length) or `Ready`.
    pub fn start_fetch(&mut self) -> Option<BlockFetch> {
        if !matches!(self.state, Lifecycle::Unknown | Lifecycle::Ready(_)) {
            return None;
        }
        let block = loop {
            self.refill();
            let (b, warm) = match self.client.pop() {
                Some(b) => (b, false),
                None => (self.warm.pop()?, true),
            };
            assert!(
                !self.inflight.contains(&b),
                "block {b} queued while in flight"
            );
            if !self.block_missing(b) {
                continue;
            }
            let Some(_) = self.slot() else {
                break b; // learning the length: block 0, into files not created yet
            };
            // A reader's block whose readers all went is not fetched.
            if !warm && !self.demanded(b) {
                continue;
            }
            // Fetched bytes land only in allocated blocks: this one waits for space.
            if !self.space.is_allocated(b) || self.space.is_evicting(b) {
                self.space.want_alloc(b);
                if warm {
                    self.parked_warm.insert(b);
                }
                continue;
            }
            break b;
        };
        let (first, last) = match self.slot() {
            None => {
                self.learn_block = Some(block);
                let first = block.saturating_mul(self.fill_block);
                (first, first.saturating_add(self.fill_block - 1))
            }
            Some(s) => {
                let (a, e) = self.block_span(block);
                let &(ms, me) = s.presence.missing_in(a, e).first()?;
                (ms, me - 1)
            }
        };
        self.inflight.insert(block);
        self.fetches += 1;
        Some(BlockFetch { block, first, last })
    }

    /// Block `b` goes back to the readers' queue: first (a retry), or last unless queued.
    fn requeue(&mut self, b: u64, first: bool) {
        assert!(
            !self.inflight.contains(&b),
            "block {b} requeued while in flight"
        );
        // A block is in one queue at most.
        self.warm.remove(b);
        if first {
            self.client.push_front(b);
        } else if !self.client.contains(b) {
            self.client.push_back(b);
        }
    }

    /// End the fetch of `block`, releasing its reservation in the slot if it had one.
    fn end_fetch(&mut self, block: u64, reservation: Option<u64>) {
        if let (Some(r), Some(s)) = (reservation, self.slot_mut()) {
            s.release(r);
        }
        self.inflight.remove(&block);
    }

    /// The fetch of `block` read its answer; the rest of a block that was asked for in part (a hole
    /// after present bytes) is wanted again.
    pub fn fetch_done(&mut self, block: u64, reservation: u64) {
        if block == REVALIDATION_BLOCK {
            return self.revalidated();
        }
        self.end_fetch(block, Some(reservation));
        if self.slot().is_some() && self.block_missing(block) {
            self.requeue(block, false);
        }
    }

    /// The fetch of `block` failed: the readers waiting now get `status`; bytes that arrived stay.
    pub fn fetch_failed(&mut self, block: u64, reservation: Option<u64>, status: u16, why: String) {
        if block == REVALIDATION_BLOCK {
            // The origin could not say: the cached object is served (nginx's
            // `proxy_cache_use_stale error`), and asked about again after another period.
            log::warn!(
                "{}: revalidation failed ({why}); serving the cached object",
                self.url
            );
            return self.revalidated();
        }
        self.end_fetch(block, reservation);
        let at = Instant::now();
        self.failures
            .insert(block, FetchFailure { at, status, why });
    }

    /// The fetch of `block` did not happen or was aborted: fetch it again, `first` for a retry.
    pub fn fetch_again(&mut self, block: u64, reservation: Option<u64>, first: bool) {
        if block == REVALIDATION_BLOCK {
            self.revalidation = Revalidation::Wanted;
            return;
        }
        self.end_fetch(block, reservation);
        self.requeue(block, first);
    }
}

/// Readers' windows: what is fetched ahead of a reader, and what no eviction may take.
impl OriginVideo {
    fn demanded(&self, b: u64) -> bool {
        self.demand.get(&b).is_some_and(|&n| n > 0)
    }

    fn add_demand(&mut self, (first, last): (u64, u64), by: i64) {
        for b in first..=last {
            let n = self.demand.entry(b).or_insert(0);
            let next = i64::from(*n) + by;
            assert!(next >= 0, "demand of block {b} below zero");
            *n = u32::try_from(next).unwrap_or(u32::MAX);
            if *n == 0 {
                self.demand.remove(&b);
            }
        }
    }

    /// Reader `reader` (a request that started at `since`) sends from byte `pos` on, up to byte
    /// `last`: its window becomes the block of `pos` and `read_ahead` blocks after it (within
    /// `last`), whose missing blocks are wanted. Returns the window's first block when it moved (the
    /// caller counts it as an access).
    pub fn read_window(&mut self, reader: ReaderId, pos: u64, last: u64, since: Instant) -> bool {
        self.note_read();
        let window = self.window_at(pos, last);
        let old = self.interests.insert(reader, window);
        let moved = old != Some(window);
        if moved {
            if let Some(old) = old {
                self.add_demand(old, -1);
            }
            self.add_demand(window, 1);
        }
        let wanted_last = last.min((window.1 + 1).saturating_mul(self.fill_block) - 1);
        self.want(pos, wanted_last, false, since);
        moved
    }

    /// The same, as a sender moves on: nothing is done unless the window moved.
    pub fn move_window(&mut self, reader: ReaderId, pos: u64, last: u64, since: Instant) -> bool {
        if self.interests.get(&reader) == Some(&self.window_at(pos, last)) {
            return false;
        }
        self.read_window(reader, pos, last, since)
    }

    /// The window of a reader at `pos` whose response ends at byte `last`: the block of `pos` and
    /// `read_ahead` blocks after it, within `last`.
    fn window_at(&self, pos: u64, last: u64) -> (u64, u64) {
        let first = pos / self.fill_block;
        let last_block = (last / self.fill_block).min(first.saturating_add(self.read_ahead));
        (first, last_block.max(first))
    }

    /// Reader `reader` sent bytes [first, last]: the blocks they came from that it had not sent from
    /// just before, each counted once (a send may cross several small blocks).
    pub fn blocks_reached(
        &mut self,
        reader: ReaderId,
        first: u64,
        last: u64,
    ) -> std::ops::Range<u64> {
        let (a, b) = (first / self.fill_block, last / self.fill_block);
        let from = match self.sent_from.insert(reader, b) {
            Some(prev) if (a..=b).contains(&prev) => prev + 1,
            _ => a,
        };
        from..b + 1
    }

    /// Reader `reader` went (or its response ended): its window no longer holds blocks.
    pub fn drop_reader(&mut self, reader: ReaderId) {
        self.sent_from.remove(&reader);
        if let Some(old) = self.interests.remove(&reader) {
            self.add_demand(old, -1);
        }
    }
}

/// Revalidation: once the validator is older than `revalidate_after`, the next read asks the origin
/// whether the object changed before any cached byte is served again.
impl OriginVideo {
    pub fn set_revalidate_after(&mut self, secs: Option<u64>) {
        self.revalidate_after = secs.map(std::time::Duration::from_secs);
    }

    fn revalidation_due(&self) -> bool {
        self.phase() == Phase::Ready
            && self
                .revalidate_after
                .is_some_and(|after| self.validated_at.is_none_or(|t| t.elapsed() >= after))
    }

    /// A read arrived: if the validator is due, a conditional request is wanted first.
    fn note_read(&mut self) {
        if self.revalidation == Revalidation::Idle && self.revalidation_due() {
            self.revalidation = Revalidation::Wanted;
        }
    }

    /// Take a wanted revalidation for a connection (once).
    pub fn start_revalidation(&mut self) -> bool {
        let wanted = self.revalidation == Revalidation::Wanted;
        if wanted {
            self.revalidation = Revalidation::InFlight;
            self.fetches += 1;
        }
        wanted
    }

    /// The origin confirmed the cached object (a 304, or the same validator and length).
    fn revalidated(&mut self) {
        self.revalidation = Revalidation::Idle;
        self.validated_at = Some(Instant::now());
    }

    fn revalidating(&self) -> bool {
        self.revalidation != Revalidation::Idle
    }

    /// A read now would wait for a revalidation (one is due, wanted or in flight).
    pub fn revalidation_pending(&self) -> bool {
        self.revalidating() || self.revalidation_due()
    }
}

/// Disk space: allocation before a fetch, eviction, punch.
impl OriginVideo {
    /// The space thread allocated block `b` (`ok`) or could not (`why`): it is fetched now, or its
    /// waiting readers get 507.
    pub fn allocation_done(&mut self, b: u64, result: Result<(), String>) {
        let ok = result.is_ok();
        self.space.allocation_done(b, ok);
        let warm = self.parked_warm.remove(&b);
        match result {
            Ok(()) if warm => {
                if !self.client.contains(b) && !self.warm.contains(b) {
                    self.warm.push_back(b);
                }
            }
            Ok(()) => {
                assert!(
                    !self.inflight.contains(&b),
                    "block {b} allocated while in flight"
                );
                self.warm.remove(b);
                self.client.push_ready(b);
            }
            Err(why) => {
                let why = format!("no disk space for block {b} of the cache: {why}");
                self.fetch_failed(b, None, 507, why);
            }
        }
    }

    /// The budget dropped block `b`'s request: nobody waits for it any more (its readers went).
    pub fn allocation_dropped(&mut self, b: u64) {
        self.space.dropped(b);
        self.parked_warm.remove(&b);
    }

    /// Whether a parked block is still wanted (a reader's window holds it, or a warm-up).
    pub fn still_wanted(&self, b: u64) -> bool {
        self.demanded(b) || self.parked_warm.contains(&b)
    }

    /// Whether block `b` must stay: a reader's window holds it, a fetch writes it, or it waits
    /// for or is in the space thread's hands.
    pub fn pinned(&self, b: u64) -> bool {
        self.demanded(b)
            || self.inflight.contains(&b)
            || self.space.is_parked(b)
            || self.space.is_evicting(b)
            || !matches!(self.state, Lifecycle::Ready(_))
    }

    /// Evict block `b`: withdraw its bytes from presence (readers no longer see them); it is
    /// punched once a durable record without them has landed (`space.take_punches`). Refused when
    /// the block is pinned or the presence map cannot split (then another block goes).
    pub fn evict(&mut self, b: u64) -> Result<(), String> {
        if self.pinned(b) || !self.space.is_allocated(b) {
            return Err(format!("block {b} is in use"));
        }
        let (start, end) = self.block_span(b);
        let Some(slot) = self.slot_mut() else {
            return Err("no files".into());
        };
        slot.withdraw(start, end).map_err(|e| e.to_string())?;
        let seq = slot.commit.claim_seq;
        self.space.evicting(b, seq);
        Ok(())
    }

    /// Bytes its allocated blocks occupy on disk (what counts against `[cache] max_size`).
    pub fn disk_bytes(&self) -> u64 {
        self.space
            .allocated()
            .iter()
            .map(|&b| self.block_bytes(b))
            .sum()
    }

    /// Bytes block `b` occupies on disk once allocated (its share of the budget).
    pub fn block_bytes(&self, b: u64) -> u64 {
        let (a, e) = self.block_span(b);
        super::space::on_disk(e - a)
    }

    /// Evicted blocks whose withdrawal is durable now: the space thread punches them.
    pub fn take_punches(&mut self) -> Vec<u64> {
        let Some(durable) = self.slot().map(|s| s.commit.durable_claim_seq) else {
            return Vec::new();
        };
        self.space.take_punches(durable)
    }

    /// Every block is gone and nothing is in flight: the files can go (`give_back_files`).
    pub fn is_idle_and_empty(&self) -> bool {
        matches!(self.state, Lifecycle::Ready(_))
            && self.space.is_empty()
            && self.inflight.is_empty()
            && self.interests.is_empty()
            && self.client.len() == 0
            && self.warm.len() == 0
            && self
                .slot()
                .is_some_and(|s| s.presence.present_bytes() == 0 && s.commit.is_settled())
    }

    /// Give the files of an empty video back (their removal follows, as for a changed object); the
    /// next read learns the object again.
    pub fn give_back_files(&mut self) {
        assert!(
            self.is_idle_and_empty(),
            "{}: giving back files in use",
            self.url
        );
        let Lifecycle::Ready(slot) = std::mem::replace(&mut self.state, Lifecycle::RemoveWanted)
        else {
            unreachable!("checked Ready above");
        };
        self.generation_floor = self.generation_floor.max(slot.generation + 1);
        self.client.clear();
        self.warm.clear();
        self.space = BlockSpace::default();
    }
}

/// The lifecycle's transitions. Each asserts the state it leaves: a call from another state is a bug.
/// Results that arrive from the commit worker are checked against `phase()` by the caller first.
impl OriginVideo {
    /// The first answer told the object's length and validator: its files are to be created.
    pub fn learned(&mut self, len: u64, validator: String) {
        assert_eq!(self.phase(), Phase::Unknown, "{}: learned twice", self.url);
        self.state = Lifecycle::CreateWanted { len, validator };
    }

    /// The length and validator to create the files with, once: the commit worker creates them now.
    pub fn take_create_wanted(&mut self) -> Option<(u64, String)> {
        match std::mem::replace(&mut self.state, Lifecycle::Creating) {
            Lifecycle::CreateWanted { len, validator } => Some((len, validator)),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The commit worker created the files: install the slot, and queue a whole-object warm-up that
    /// was asked for before the length was known.
    pub fn files_created(&mut self, mut slot: Slot) {
        assert_eq!(
            self.phase(),
            Phase::Creating,
            "{}: files not asked for",
            self.url
        );
        // A new object's generation is never one an earlier object of this video had: above the
        // floor, and seeded from the clock so that a restart between removing the old files and
        // creating these cannot reuse an old generation (and ETag).
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let generation = self.generation_floor.max(seed);
        if slot.generation < generation {
            slot.generation = generation;
            slot.commit.bump();
        }
        let total = slot.data.len;
        self.validated_at = Some(Instant::now());
        // The commit worker allocated the learning fetch's block with the files (`CreateJob::allocate`).
        let learned = self
            .learn_block
            .filter(|&b| b.saturating_mul(self.fill_block) < total);
        self.space = BlockSpace::with_allocated(learned.into_iter().collect());
        self.state = Lifecycle::Ready(Box::new(slot));
        if total > 0 && std::mem::take(&mut self.warm_all_when_known) {
            self.want(0, total - 1, true, Instant::now());
        }
    }

    /// The commit worker could not create the files: the length is learned again.
    pub fn files_failed(&mut self) {
        assert_eq!(
            self.phase(),
            Phase::Creating,
            "{}: files not asked for",
            self.url
        );
        self.state = Lifecycle::Unknown;
    }

    /// The fetch of `block` showed another object: forget every byte (the durable record that claims
    /// nothing follows), let the next fetch learn the new validator, and fetch `block` again. A new
    /// length also means new files: the video is `Forgetting` until that record is durable.
    pub fn object_changed(&mut self, block: u64, new_length: bool) {
        let revalidation = block == REVALIDATION_BLOCK;
        if revalidation {
            self.revalidated();
        }
        self.inflight.remove(&block);
        if let Some(s) = self.slot_mut() {
            // Reservations of other fetches end here (the fetcher aborts them right after).
            s.release_all();
            let _ = s.forget_all();
            s.validator = Some(String::new());
        }
        if new_length {
            self.state = match std::mem::replace(&mut self.state, Lifecycle::Unknown) {
                Lifecycle::Ready(slot) => Lifecycle::Forgetting(slot),
                other => other,
            };
        }
        if !revalidation {
            self.requeue(block, false);
        }
    }

    /// The record forgetting the old object is durable: close its files (the commit worker removes
    /// them) and drop what was wanted of it; the next fetch learns the new object.
    pub fn drop_files(&mut self) -> BlockSpace {
        let Lifecycle::Forgetting(slot) =
            std::mem::replace(&mut self.state, Lifecycle::RemoveWanted)
        else {
            panic!("{}: files dropped while not forgetting an object", self.url);
        };
        // The new object's generation follows the old one's, so its ETag differs and responses begun
        // on the old object are cut rather than continued with the new bytes.
        self.generation_floor = self.generation_floor.max(slot.generation + 1);
        self.inflight.clear();
        self.client.clear();
        self.warm.clear();
        self.parked_warm.clear();
        // The files go: so does every block they held (the caller takes them off the budget).
        std::mem::take(&mut self.space)
    }

    /// Whether the old files are to be removed now (once: the commit worker removes them).
    pub fn take_remove_wanted(&mut self) -> bool {
        let wanted = self.phase() == Phase::RemoveWanted;
        if wanted {
            self.state = Lifecycle::Removing;
        }
        wanted
    }

    /// The commit worker removed the old files (or tried): the length is learned anew.
    pub fn files_removed(&mut self) {
        assert_eq!(
            self.phase(),
            Phase::Removing,
            "{}: no removal asked for",
            self.url
        );
        self.state = Lifecycle::Unknown;
    }
}

/// What readers may be told.
impl OriginVideo {
    /// What a reader at `offset` may be told: present bytes, wait (a fetch will bring them), or the
    /// failure of the block's last fetch.
    pub fn availability(&self, offset: u64) -> Availability {
        let block = offset / self.fill_block;
        if let Some(s) = self.slot() {
            if offset >= s.data.len {
                return Availability::Absent;
            }
            if self.revalidating() {
                return Availability::Pending;
            }
            if let Some(end) = s.presence.run_end(offset) {
                return Availability::Present(end);
            }
        }
        match self.failures.get(&block) {
            Some(f) => Availability::Failed(f.status),
            None => Availability::Pending,
        }
    }

    /// Why the block of `offset` failed, if it did: the status and the reason.
    pub fn failure_of(&self, offset: u64) -> Option<(u16, String)> {
        self.failures
            .get(&(offset / self.fill_block))
            .map(|f| (f.status, f.why.clone()))
    }

    /// The same, if the failure came while a request that started at `since` waited.
    pub fn failure_since(&self, offset: u64, since: Instant) -> Option<(u16, String)> {
        self.failure_of(offset)
            .filter(|_| self.failed_before(offset / self.fill_block, since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KIND_CODE_ORIGIN, StorePaths};
    use std::path::PathBuf;

    /// A data directory removed when the test ends.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn slot(name: &str, len: u64) -> (TempDir, Slot) {
        let dir = std::env::temp_dir().join(format!("vcache-ov-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let paths = StorePaths {
            data_dir: dir.clone(),
            boot_id: [7; 16],
            max_presence_ranges: 1024,
        };
        let slot = paths
            .open_slot_of_kind("v", len, KIND_CODE_ORIGIN, "origin", Some(String::new()))
            .unwrap();
        (TempDir(dir), slot)
    }

    fn video(fill_block: u64, slot: Option<Slot>) -> OriginVideo {
        let mut o = OriginVideo::new(
            "http://o/v".into(),
            "o".into(),
            80,
            "/v".into(),
            fill_block,
            Vec::new(),
            slot.map(Box::new),
        );
        o.space = BlockSpace::all_allocated();
        o.set_read_ahead(u64::MAX);
        o
    }

    /// A new reader (each call its own) wants bytes [first, last]: its window covers them all.
    fn read(o: &mut OriginVideo, first: u64, last: u64, since: Instant) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let reader = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        o.read_window(reader, first, last, since);
    }

    /// Take every fetch there is, in order.
    fn drain(o: &mut OriginVideo) -> Vec<u64> {
        std::iter::from_fn(|| o.start_fetch().map(|f| f.block)).collect()
    }

    #[test]
    fn the_lifecycle_learns_creates_forgets_and_relearns() {
        let (_dir, s) = slot("life", 10_000);
        let mut o = video(1000, None);
        let t0 = Instant::now();
        assert_eq!(o.phase(), Phase::Unknown);
        assert_eq!(o.len(), None);
        read(&mut o, 5000, 5999, t0);
        // The block the reader wants teaches the length (block 0 is not fetched for it).
        let learn = o.start_fetch().unwrap();
        assert_eq!(
            learn,
            BlockFetch {
                block: 5,
                first: 5000,
                last: 5999
            }
        );
        assert_eq!(o.learn_block(), Some(5));
        o.learned(10_000, "\"a\"".into());
        assert_eq!(o.phase(), Phase::CreateWanted);
        assert_eq!(o.take_create_wanted(), Some((10_000, "\"a\"".into())));
        assert_eq!(o.take_create_wanted(), None);
        assert_eq!(o.phase(), Phase::Creating);
        o.files_created(s);
        assert_eq!(o.phase(), Phase::Ready);
        assert_eq!(o.len(), Some(10_000));
        let generation = o.slot().unwrap().generation;
        assert!(
            generation > 1,
            "a created object's generation is seeded from the clock"
        );
        // The files come with the learning block allocated: an aborted learning fetch is redone.
        assert!(o.space.is_allocated(5) && !o.space.is_allocated(0));
        o.fetch_again(5, None, false);
        assert_eq!(drain(&mut o), [5]);
        // Another length: nothing is fetched until the files are dropped, then the length is learned.
        o.object_changed(5, true);
        assert_eq!(o.phase(), Phase::Forgetting);
        assert!(o.slot().unwrap().delete_pending);
        assert_eq!(o.start_fetch(), None);
        o.drop_files();
        assert_eq!(
            (o.phase(), o.len(), o.queued_blocks()),
            (Phase::RemoveWanted, None, 0)
        );
        assert!(o.generation_floor > generation);
        assert!(o.take_remove_wanted());
        assert!(!o.take_remove_wanted());
        assert_eq!(o.start_fetch(), None);
        o.files_removed();
        assert_eq!(o.phase(), Phase::Unknown);
        read(&mut o, 0, 0, Instant::now());
        assert_eq!(drain(&mut o), [0]);
    }

    #[test]
    fn a_failed_creation_learns_again_and_a_changed_validator_keeps_the_files() {
        let mut o = video(1000, None);
        read(&mut o, 0, 0, Instant::now());
        assert_eq!(drain(&mut o), [0]);
        o.learned(10, String::new());
        assert!(o.take_create_wanted().is_some());
        o.files_failed();
        assert_eq!(o.phase(), Phase::Unknown);

        let (_dir, s) = slot("same-len", 4000);
        let mut o = video(1000, Some(s));
        read(&mut o, 0, 3999, Instant::now());
        let first = o.start_fetch().unwrap().block;
        o.object_changed(first, false);
        assert_eq!(o.phase(), Phase::Ready);
        assert_eq!(drain(&mut o), [1, 2, 3, 0]);
    }

    #[test]
    #[should_panic(expected = "learned twice")]
    fn learning_twice_is_a_bug() {
        let mut o = video(1000, None);
        o.learned(10, String::new());
        o.learned(10, String::new());
    }

    #[test]
    #[should_panic(expected = "no removal asked for")]
    fn a_removal_that_was_not_asked_for_is_a_bug() {
        video(1000, None).files_removed();
    }

    #[test]
    #[should_panic(expected = "not forgetting")]
    fn dropping_the_files_of_a_ready_video_is_a_bug() {
        let (_dir, s) = slot("drop-ready", 100);
        video(10, Some(s)).drop_files();
    }

    #[test]
    #[should_panic(expected = "files not asked for")]
    fn files_nobody_asked_for_are_a_bug() {
        let (_dir, s) = slot("unasked", 100);
        video(10, None).files_created(s);
    }

    #[test]
    fn a_warm_up_before_the_length_is_known_warms_the_whole_object() {
        let (_dir, s) = slot("warm-all", 3500);
        let mut o = video(1000, None);
        o.want(0, 0, true, Instant::now());
        assert_eq!(drain(&mut o), [0]);
        o.learned(3500, String::new());
        o.take_create_wanted();
        o.files_created(s);
        // Block 0 is in flight (the learning fetch) and allocated with the files.
        assert_eq!(o.queued_blocks(), 3);
        assert!(!o.has_client_work());
        assert!(o.space.is_allocated(0));
        // The others wait for space: none is fetched before the budget grants and the space thread
        // allocates it; then they go back to the warm-up queue.
        assert_eq!(drain(&mut o), []);
        assert_eq!(o.space.take_alloc_wanted(), [1, 2, 3]);
        assert_eq!(drain(&mut o), [], "a parked block is not queued again");
        for b in [1, 2, 3] {
            assert!(o.still_wanted(b));
            o.space.granted(b);
            o.allocation_done(b, Ok(()));
        }
        assert!(!o.has_client_work());
        assert_eq!(drain(&mut o), [1, 2, 3]);
    }

    #[test]
    fn a_reader_that_goes_takes_its_blocks_with_it_and_pins_its_window() {
        let (_dir, s) = slot("window", 10_000);
        let mut o = video(1000, Some(s));
        o.set_read_ahead(2);
        let t = Instant::now();
        assert!(o.read_window(1, 0, 9999, t));
        assert_eq!(o.queued_blocks(), 3, "the block sent from and two ahead");
        assert!(o.pinned(0) && o.pinned(2) && !o.pinned(3));
        assert!(!o.move_window(1, 500, 9999, t), "still in block 0");
        assert!(o.move_window(1, 1000, 9999, t));
        assert!(!o.pinned(0) && o.pinned(3));
        o.drop_reader(1);
        assert!(!o.pinned(1));
        // Nobody wants the queued blocks any more: none is fetched.
        assert_eq!(drain(&mut o), []);
    }

    #[test]
    fn readers_go_before_warm_ups_and_take_their_blocks() {
        let (_dir, s) = slot("client-first", 10_000);
        let mut o = video(1000, Some(s));
        let t = Instant::now();
        o.want(0, 9999, true, t);
        assert!(!o.has_client_work());
        read(&mut o, 7500, 8200, t);
        assert!(o.has_client_work());
        assert_eq!(o.queued_blocks(), 10);
        assert_eq!(drain(&mut o), [7, 8, 0, 1, 2, 3, 4, 5, 6, 9]);
    }

    #[test]
    fn cached_bytes_are_not_fetched_and_in_flight_blocks_not_queued() {
        let (_dir, mut s) = slot("dedup", 10_000);
        s.presence.insert(0, 2500).unwrap();
        let mut o = video(1000, Some(s));
        let t = Instant::now();
        read(&mut o, 0, 1999, t);
        assert_eq!(o.queued_blocks(), 0);
        read(&mut o, 0, 3999, t);
        // Block 2 is asked for from its first missing byte.
        let f = o.start_fetch().unwrap();
        assert_eq!(
            f,
            BlockFetch {
                block: 2,
                first: 2500,
                last: 2999
            }
        );
        read(&mut o, 2000, 3999, t);
        o.want(2000, 3999, true, t);
        assert_eq!((o.fetching_blocks(), o.queued_blocks()), (1, 1));
        // A retry goes first; a block fetched in part is wanted again.
        o.fetch_again(2, None, true);
        assert_eq!(drain(&mut o), [2, 3]);
        o.fetch_done(3, 0);
        assert_eq!(drain(&mut o), [3]);
    }

    #[test]
    fn a_failure_goes_to_the_waiting_readers_and_later_requests_retry() {
        let (_dir, s) = slot("failure", 4000);
        let mut o = video(1000, Some(s));
        let waiting = Instant::now();
        read(&mut o, 1000, 1999, waiting);
        assert_eq!(drain(&mut o), [1]);
        o.fetch_failed(1, None, 504, "slow".into());
        assert_eq!(o.availability(1500), Availability::Failed(504));
        assert_eq!(o.failure_since(1500, waiting), Some((504, "slow".into())));
        read(&mut o, 1000, 1999, waiting);
        assert_eq!(o.queued_blocks(), 0);
        let later = Instant::now() + std::time::Duration::from_millis(1);
        assert_eq!(o.failure_since(1500, later), None);
        read(&mut o, 1000, 1999, later);
        assert_eq!(o.availability(1500), Availability::Pending);
        assert_eq!(drain(&mut o), [1]);
    }

    #[test]
    fn queues_are_capped_apart_and_ranges_past_the_cap_are_queued_as_room_appears() {
        let blocks = (MAX_CLIENT_BLOCKS + MAX_WARM_BLOCKS) as u64 + 5_000;
        let (_dir, s) = slot("caps", blocks);
        let mut o = video(1, Some(s));
        let t = Instant::now();
        read(&mut o, 0, blocks - 1, t);
        assert_eq!(o.queued_blocks(), MAX_CLIENT_BLOCKS);
        // A warm-up has its own room: readers' blocks do not keep it out, nor does it take theirs.
        o.want(0, blocks - 1, true, t + std::time::Duration::from_millis(1));
        assert_eq!(o.queued_blocks(), MAX_CLIENT_BLOCKS + MAX_WARM_BLOCKS);
        assert_eq!(o.client.len(), MAX_CLIENT_BLOCKS);
        // The same request routing again adds nothing (its waiting range merges).
        read(&mut o, 0, blocks - 1, t);
        assert_eq!((o.client.pending.len(), o.warm.pending.len()), (1, 1));
        // Every block is fetched once, readers' in order first; none past the cap is forgotten.
        let order = drain(&mut o);
        assert_eq!(order, (0..blocks).collect::<Vec<_>>());
        assert_eq!(o.queued_blocks(), 0);
        assert!(o.client.pending.is_empty() && o.warm.pending.is_empty());
    }

    #[test]
    fn present_runs_are_skipped_whole() {
        // 16 Mi one-byte blocks, all present but two: a walk per block would take minutes.
        let len = 16 << 20;
        let (_dir, mut s) = slot("skip", len);
        s.presence.insert(0, 1000).unwrap();
        s.presence.insert(1001, len - 1).unwrap();
        let mut o = video(1, Some(s));
        let t = Instant::now();
        for _ in 0..1000 {
            o.want(0, len - 1, true, t);
        }
        assert_eq!(drain(&mut o), [1000, len - 1]);
    }

    #[test]
    fn block_queues_are_fifo_with_retries_first_and_bounded_waiting_ranges() {
        let mut q = BlockQueue::new(3);
        for b in [9, 4, 7] {
            q.push_back(b);
        }
        assert!(!q.has_room());
        q.push_front(7);
        assert!(q.remove(4) && !q.remove(4));
        q.push_back(1);
        assert_eq!(
            std::iter::from_fn(|| q.pop()).collect::<Vec<_>>(),
            [7, 9, 1]
        );
        // Allocated blocks go after retries and before new ones, in the order they came back.
        for b in [5, 6] {
            q.push_back(b);
        }
        q.push_ready(39);
        q.push_ready(40);
        q.push_front(2);
        q.push_ready(6);
        assert_eq!(
            std::iter::from_fn(|| q.pop()).collect::<Vec<_>>(),
            [2, 39, 40, 6, 5]
        );
        assert!(q.order.is_empty() && q.ticket.is_empty());
        let t = Instant::now();
        assert!(q.remember(t, 10, 19));
        assert!(q.remember(t, 20, 29));
        assert!(q.remember(t, 5, 12));
        assert_eq!(q.pending.len(), 1);
        for i in 1..MAX_PENDING_SPANS as u64 {
            assert!(q.remember(t, i * 100, i * 100));
        }
        assert!(!q.remember(t, 1 << 40, 1 << 40));
        assert_eq!(q.take_pending(), Some((t, 5, 29)));
    }
}
