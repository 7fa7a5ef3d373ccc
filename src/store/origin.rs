//! Origin videos' fill state: which aligned `fill_block`s readers want, which are being fetched, which
//! failed (and the status their readers get), and the slot that holds the fetched bytes once the
//! object's length is known. The network side is `crate::origin`; this module decides nothing about
//! sockets, only what is wanted and what a reader may be told.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::{Availability, Slot};

/// Most blocks queued per video (a request for more queues the first ones; readers re-request as they
/// go, so a huge range still fills in order).
pub const MAX_QUEUED_BLOCKS: usize = 65_536;

pub struct OriginVideo {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub fill_block: u64,
    /// Resolved when the config was loaded (never on the event loop).
    pub addrs: Vec<SocketAddr>,
    /// The fetched bytes; None until the object's length is known.
    pub slot: Option<Box<Slot>>,
    /// Blocks being fetched now (block 0 while learning the length).
    pub inflight: BTreeSet<u64>,
    /// Blocks readers wait for, then blocks a warm-up asked for.
    pub wanted_client: VecDeque<u64>,
    pub wanted_warm: VecDeque<u64>,
    /// Blocks whose last fetch failed: when, the status (502/504) and the reason readers get.
    pub failures: BTreeMap<u64, (Instant, u16, String)>,
    /// The object changed length: once the forgetting record is durable, the files are recreated.
    pub relearn: bool,
    /// A warm-up of the whole object was asked for before its length was known.
    pub warm_all_after_learning: bool,
    /// The length and validator a fetch learned: the event loop asks the commit worker to create the
    /// files (`creating` while it does).
    pub create_wanted: Option<(u64, String)>,
    pub creating: bool,
    /// The old object's files are closed and wait for the commit worker to remove them.
    pub remove_wanted: bool,
    pub removing: bool,
    /// Bytes received from the origin (metrics, tests).
    pub fetched_bytes: u64,
    pub fetches: u64,
    /// The lowest generation a recreated data file may take: above the forgotten object's (its files
    /// were removed when its length changed), so ETags and running responses never confuse the two.
    pub generation_floor: u64,
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
            slot,
            inflight: BTreeSet::new(),
            wanted_client: VecDeque::new(),
            wanted_warm: VecDeque::new(),
            failures: BTreeMap::new(),
            relearn: false,
            warm_all_after_learning: false,
            create_wanted: None,
            creating: false,
            remove_wanted: false,
            removing: false,
            fetched_bytes: 0,
            fetches: 0,
            generation_floor: 0,
        }
    }

    pub fn len(&self) -> Option<u64> {
        self.slot.as_ref().map(|s| s.data.len)
    }

    pub fn validator(&self) -> &str {
        self.slot
            .as_ref()
            .and_then(|s| s.validator.as_deref())
            .unwrap_or("")
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
        match &self.slot {
            None => true,
            Some(s) => {
                let (a, e) = self.block_span(b);
                a < e && !s.presence.missing_in(a, e).is_empty()
            }
        }
    }

    /// A reader (or a warm-up) that started at `since` wants bytes [first, last]: queue every missing
    /// block of them that is not being fetched or queued. A request that started after a block failed
    /// retries it; one that was already waiting gets the failure.
    pub fn want(&mut self, first: u64, last: u64, warm: bool, since: Instant) {
        let Some(len) = self.len() else {
            // Learning the length comes first: block 0 tells it.
            if self.failed_before(0, since) {
                return;
            }
            self.failures.remove(&0);
            if warm {
                self.warm_all_after_learning = true;
            }
            if !self.inflight.contains(&0) && !self.wanted_client.contains(&0) {
                self.wanted_client.push_back(0);
            }
            return;
        };
        if len == 0 || first >= len {
            return;
        }
        let last = last.min(len - 1);
        let (fb, lb) = (first / self.fill_block, last / self.fill_block);
        for b in fb..=lb {
            if self.wanted_client.len() + self.wanted_warm.len() >= MAX_QUEUED_BLOCKS {
                break;
            }
            // Only blocks with missing bytes inside the wanted range (a read of cached bytes fetches
            // nothing); a fetch then fills the whole block.
            let (a, e) = self.block_span(b);
            let wanted_missing = self.slot.as_ref().is_none_or(|s| {
                !s.presence
                    .missing_in(a.max(first), e.min(last + 1))
                    .is_empty()
            });
            if !wanted_missing || self.inflight.contains(&b) || self.failed_before(b, since) {
                continue;
            }
            self.failures.remove(&b);
            if self.wanted_client.contains(&b) {
                continue;
            }
            if warm {
                if !self.wanted_warm.contains(&b) {
                    self.wanted_warm.push_back(b);
                }
            } else {
                self.wanted_warm.retain(|&x| x != b);
                self.wanted_client.push_back(b);
            }
        }
    }

    /// The next block to fetch (client-driven before warm-up), skipping blocks that meanwhile arrived.
    pub fn next_block(&mut self) -> Option<u64> {
        while let Some(b) = self
            .wanted_client
            .pop_front()
            .or_else(|| self.wanted_warm.pop_front())
        {
            if !self.inflight.contains(&b) && self.block_missing(b) {
                return Some(b);
            }
        }
        None
    }

    /// Block `b` failed while a request that started at `since` was waiting for it.
    fn failed_before(&self, b: u64, since: Instant) -> bool {
        self.failures.get(&b).is_some_and(|(at, _, _)| *at >= since)
    }

    /// What a reader at `offset` may be told: present bytes, wait (a fetch will bring them), or the
    /// failure of the block's last fetch.
    pub fn availability(&self, offset: u64) -> Availability {
        let block = offset / self.fill_block;
        if let Some(s) = &self.slot {
            if offset >= s.data.len {
                return Availability::Absent;
            }
            if let Some(end) = s.presence.run_end(offset) {
                return Availability::Present(end);
            }
        }
        match self.failures.get(&block) {
            Some((_, status, _)) => Availability::Failed(*status),
            None => Availability::Pending,
        }
    }

    /// Why the block of `offset` failed, if it did: the status and the reason.
    pub fn failure_of(&self, offset: u64) -> Option<(u16, String)> {
        self.failures
            .get(&(offset / self.fill_block))
            .map(|(_, status, why)| (*status, why.clone()))
    }
}
