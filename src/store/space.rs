//! Disk space of origin content: which fill blocks of each origin video are allocated on disk
//! (`BlockSpace`, per video), the budget they share (`CacheSpace`: `[cache] max_size` and
//! `min_free`), and which block goes when a fill would pass the budget (`S3Fifo` over every resident
//! block). Origin data files are sparse: a block is allocated
//! (`fallocate`) on the space thread before bytes are fetched into it, and punched out after the
//! durable record that no longer claims it has landed. Upload slots and live rings are outside all
//! of this: fully allocated, never evicted.

pub mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

/// Space on disk is counted in whole file-system blocks.
pub const FS_BLOCK: u64 = 4096;

/// Bytes a span of `len` bytes occupies on disk.
pub fn on_disk(len: u64) -> u64 {
    len.div_ceil(FS_BLOCK) * FS_BLOCK
}

/// The space state of one origin video's fill blocks. A block is, on disk, a hole or allocated; an
/// allocated block may be being evicted (its presence withdrawn; punched once a durable record no
/// longer claims it). A block waiting for an allocation is `parked`: not fetched, not queued.
#[derive(Debug, Default)]
pub struct BlockSpace {
    /// Allocated blocks (fetched into, being fetched into, or being evicted).
    allocated: BTreeSet<u64>,
    /// Blocks that want an allocation: not yet handed to the budget (`alloc_wanted`), or granted
    /// and on the space thread.
    alloc_wanted: BTreeSet<u64>,
    alloc_queued: BTreeSet<u64>,
    allocating: BTreeSet<u64>,
    /// Blocks withdrawn from presence → the claim sequence number whose durable record no longer
    /// claims them.
    evicting: BTreeMap<u64, u64>,
    /// Evicted blocks handed to the space thread for the punch.
    punching: BTreeSet<u64>,
    /// Every block counts as allocated (unit tests of the fetch queues).
    #[cfg(test)]
    all: bool,
}

impl BlockSpace {
    /// Blocks on disk, as found at open (every block holding a claimed byte).
    pub fn with_allocated(blocks: BTreeSet<u64>) -> BlockSpace {
        BlockSpace {
            allocated: blocks,
            ..BlockSpace::default()
        }
    }

    pub fn is_allocated(&self, b: u64) -> bool {
        #[cfg(test)]
        if self.all {
            return true;
        }
        self.allocated.contains(&b)
    }

    /// A space whose every block counts as allocated (unit tests of the fetch queues).
    #[cfg(test)]
    pub fn all_allocated() -> BlockSpace {
        BlockSpace {
            all: true,
            ..BlockSpace::default()
        }
    }

    /// A block waiting for space (or for its punch to finish before it is allocated again).
    pub fn is_parked(&self, b: u64) -> bool {
        self.alloc_wanted.contains(&b)
            || self.alloc_queued.contains(&b)
            || self.allocating.contains(&b)
    }

    pub fn is_evicting(&self, b: u64) -> bool {
        self.evicting.contains_key(&b) || self.punching.contains(&b)
    }

    pub fn allocated(&self) -> &BTreeSet<u64> {
        &self.allocated
    }

    /// Block `b` needs an allocation before it is fetched.
    pub fn want_alloc(&mut self, b: u64) {
        if !self.is_parked(b) {
            self.alloc_wanted.insert(b);
        }
    }

    /// Blocks wanting an allocation, handed to the budget once.
    pub fn take_alloc_wanted(&mut self) -> Vec<u64> {
        let wanted = std::mem::take(&mut self.alloc_wanted);
        self.alloc_queued.extend(wanted.iter().copied());
        wanted.into_iter().collect()
    }

    /// The budget granted block `b`: it goes to the space thread.
    pub fn granted(&mut self, b: u64) {
        assert!(
            !self.allocated.contains(&b) && self.alloc_queued.remove(&b),
            "block {b} granted while allocated or not asked for"
        );
        self.allocating.insert(b);
    }

    /// The budget dropped block `b`'s request (nobody wants it any more).
    pub fn dropped(&mut self, b: u64) {
        self.alloc_wanted.remove(&b);
        self.alloc_queued.remove(&b);
    }

    /// Whether the space thread is allocating block `b` for this video (a result for a block it is
    /// not — files that went meanwhile — is ignored).
    pub fn expects_allocation(&self, b: u64) -> bool {
        self.allocating.contains(&b)
    }

    /// Whether the space thread is punching block `b` for this video.
    pub fn expects_punch(&self, b: u64) -> bool {
        self.punching.contains(&b)
    }

    /// The space thread allocated block `b` (or failed to: `ok` false).
    pub fn allocation_done(&mut self, b: u64, ok: bool) {
        let was = self.allocating.remove(&b);
        assert!(was, "allocation of block {b} that was not asked for");
        if ok {
            self.allocated.insert(b);
        }
    }

    /// Block `b` was withdrawn; it is punched once the durable record of `claim_seq` has landed.
    pub fn evicting(&mut self, b: u64, claim_seq: u64) {
        assert!(
            self.allocated.contains(&b),
            "evicting unallocated block {b}"
        );
        self.evicting.insert(b, claim_seq);
    }

    /// Blocks whose withdrawal is durable now (`durable_claim_seq`): they go to the space thread.
    pub fn take_punches(&mut self, durable_claim_seq: u64) -> Vec<u64> {
        let ready: Vec<u64> = self
            .evicting
            .iter()
            .filter(|&(_, &seq)| seq <= durable_claim_seq)
            .map(|(&b, _)| b)
            .collect();
        for b in &ready {
            self.evicting.remove(b);
            self.punching.insert(*b);
        }
        ready
    }

    /// Whether any eviction waits for a durable record.
    pub fn evictions_unrecorded(&self) -> bool {
        !self.evicting.is_empty()
    }

    /// The punch of `b` finished: it is a hole (`ok`), or stays allocated after a failure.
    pub fn punch_done(&mut self, b: u64, ok: bool) {
        let was = self.punching.remove(&b);
        assert!(was, "punch of block {b} that was not asked for");
        if ok {
            self.allocated.remove(&b);
        }
    }

    /// Nothing allocated, asked for, or in the space thread's hands.
    pub fn is_empty(&self) -> bool {
        self.allocated.is_empty()
            && self.alloc_wanted.is_empty()
            && self.alloc_queued.is_empty()
            && self.allocating.is_empty()
            && self.evicting.is_empty()
            && self.punching.is_empty()
    }

    /// Blocks that count against the budget: allocated or being allocated.
    pub fn counted(&self) -> impl Iterator<Item = u64> + '_ {
        self.allocated.union(&self.allocating).copied()
    }
}

/// A resident block: (video id, block number).
pub type BlockKey = (String, u64);

/// Minutes since the epoch: the coarse access time kept per block and persisted.
pub fn epoch_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs / 60).unwrap_or(u32::MAX) & EPOCH_MINUTES
}

/// A resident block's policy state.
struct Entry {
    /// Reads since it entered its queue (or since the hand last passed it), at most 3.
    freq: u8,
    /// Not sent from since it was allocated: the read that fetched it is not a re-read.
    unread: bool,
    /// In the main queue (else the small one).
    main: bool,
    /// Coarse last access (minutes since the epoch), persisted as a hint for restarts.
    epoch: u32,
}

/// S3-FIFO (Yang et al., SOSP 2023), chosen by `cargo bench --bench eviction` on Zipf traces of
/// seeking readers (0.81x LRU's origin bytes; CLOCK 0.97x, 2Q 0.87x): a new block enters a small
/// FIFO (10 % of the blocks); leaving it, a block read since it entered moves to the main FIFO,
/// one that was not is evicted and remembered in a ghost FIFO — a block that comes back while
/// remembered goes straight to main. Main is a FIFO with a 2-bit read counter: a block with reads
/// left goes round again with one less. Reads touch a counter only; no list moves on the read
/// path. Pinned blocks (a reader's window, a fetch) are passed over.
#[derive(Default)]
pub struct S3Fifo {
    small: VecDeque<BlockKey>,
    main: VecDeque<BlockKey>,
    ghost: VecDeque<BlockKey>,
    ghost_set: HashSet<BlockKey>,
    entries: HashMap<BlockKey, Entry>,
    /// Live entries in `small` (the queues may hold stale keys of removed blocks).
    small_live: usize,
}

impl S3Fifo {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A block became resident now (allocated for a fetch).
    pub fn insert_new(&mut self, key: BlockKey) {
        self.insert(key, 0);
    }

    /// A block became resident: new (`persisted` 0: allocated now, its first read does not count),
    /// or found at start-up with its persisted recency.
    pub fn insert(&mut self, key: BlockKey, persisted: u32) {
        if self.entries.contains_key(&key) {
            return;
        }
        let (epoch, freq, restored) = match persisted {
            0 => (epoch_now(), 0, false),
            p => (p, epoch_freq(p), true),
        };
        let main = self.ghost_set.remove(&key) || epoch & EPOCH_MAIN != 0 || freq > 0;
        self.entries.insert(
            key.clone(),
            Entry {
                freq,
                unread: !restored,
                main,
                epoch: epoch & EPOCH_MINUTES,
            },
        );
        if main {
            self.main.push_back(key);
        } else {
            self.small.push_back(key);
            self.small_live += 1;
        }
    }

    /// A reader used the block.
    pub fn touch(&mut self, key: &BlockKey) {
        if let Some(e) = self.entries.get_mut(key) {
            if !std::mem::take(&mut e.unread) {
                e.freq = (e.freq + 1).min(3);
            }
            e.epoch = epoch_now();
        }
    }

    /// The block left (evicted, or its video's files went). One evicted from the small queue is
    /// remembered in the ghost queue.
    pub fn remove(&mut self, key: &BlockKey) {
        let Some(e) = self.entries.remove(key) else {
            return;
        };
        if !e.main {
            self.small_live -= 1;
            if self.ghost_set.insert(key.clone()) {
                self.ghost.push_back(key.clone());
            }
            while self.ghost.len() > self.entries.len().max(16) {
                if let Some(old) = self.ghost.pop_front() {
                    self.ghost_set.remove(&old);
                }
            }
        }
        // Queue slots of removed keys are dropped when the hand reaches them; compact if they pile up.
        if self.small.len() + self.main.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.small
                .retain(|k| entries.get(k).is_some_and(|e| !e.main));
            self.main.retain(|k| entries.get(k).is_some_and(|e| e.main));
        }
    }

    /// The next block to evict (it stays resident until `remove`); None when every block is pinned.
    pub fn victim(&mut self, mut pinned: impl FnMut(&BlockKey) -> bool) -> Option<BlockKey> {
        let mut budget = 4 * (self.small.len() + self.main.len()) + 4;
        while budget > 0 {
            budget -= 1;
            let from_small = self.small_live * 10 >= self.entries.len() || self.main.is_empty();
            let key = if from_small {
                self.small.pop_front()
            } else {
                self.main.pop_front()
            }?;
            let Some(e) = self.entries.get_mut(&key) else {
                continue; // removed meanwhile
            };
            if e.main == from_small {
                continue; // a stale slot: the block moved queues
            }
            if from_small && e.freq > 0 {
                e.freq = 0;
                e.main = true;
                self.small_live -= 1;
                self.main.push_back(key);
                continue;
            }
            if !from_small && e.freq > 0 {
                e.freq -= 1;
                self.main.push_back(key);
                continue;
            }
            let queue = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            queue.push_back(key.clone());
            if pinned(&key) {
                continue;
            }
            return Some(key);
        }
        None
    }

    /// Every resident block with its coarse access time (`EPOCH_MAIN` set for main's), oldest
    /// first: what is persisted.
    pub fn snapshot(&self) -> Vec<(BlockKey, u32)> {
        let mut v: Vec<(BlockKey, u32)> = self
            .entries
            .iter()
            .map(|(k, e)| {
                let main = if e.main { EPOCH_MAIN } else { 0 };
                (
                    k.clone(),
                    e.epoch.max(1) | main | (u32::from(e.freq) << EPOCH_FREQ_SHIFT),
                )
            })
            .collect();
        v.sort_by_key(|(_, epoch)| *epoch & EPOCH_MINUTES);
        v
    }
}

/// A persisted epoch: minutes since the epoch in the low 29 bits, the read counter in bits 29-30,
/// and whether the block was in the main queue in bit 31.
pub const EPOCH_MAIN: u32 = 1 << 31;
const EPOCH_FREQ_SHIFT: u32 = 29;
const EPOCH_MINUTES: u32 = (1 << EPOCH_FREQ_SHIFT) - 1;

fn epoch_freq(epoch: u32) -> u8 {
    ((epoch >> EPOCH_FREQ_SHIFT) & 3) as u8
}

/// A request for space: block `block` of `video` (or, `create`, its files with block 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceWant {
    pub video: String,
    pub block: u64,
    pub bytes: u64,
    pub create: bool,
}

/// The shared budget of origin content.
pub struct CacheSpace {
    /// `[cache] max_size`.
    pub max_size: Option<u64>,
    /// `[cache] min_free`.
    pub min_free: u64,
    /// Bytes allocated or granted (resident, being fetched, being evicted, being allocated).
    pub allocated: u64,
    /// Of those, bytes withdrawn and waiting for their punch.
    pub evicting: u64,
    /// Bytes given back since start (metrics).
    pub evicted_total: u64,
    /// Blocks evicted since start (metrics).
    pub evicted_blocks: u64,
    pub policy: S3Fifo,
    /// Requests waiting for room, first come first served.
    pub waiting: VecDeque<SpaceWant>,
    /// The file system's free bytes when last looked at (statvfs), and the allocations since.
    pub fs_free: Option<u64>,
    /// Recency persisted at the last start: (video, block) → epoch, used when a video opens.
    pub saved_recency: HashMap<BlockKey, u32>,
}

impl CacheSpace {
    pub fn new(max_size: Option<u64>, min_free: u64) -> CacheSpace {
        CacheSpace {
            max_size,
            min_free,
            allocated: 0,
            evicting: 0,
            evicted_total: 0,
            evicted_blocks: 0,
            policy: S3Fifo::default(),
            waiting: VecDeque::new(),
            fs_free: None,
            saved_recency: HashMap::new(),
        }
    }

    /// The most bytes origin content may occupy now: `max_size`, and what keeps `min_free` free.
    pub fn limit(&self) -> Option<u64> {
        let by_free = match (self.min_free, self.fs_free) {
            (0, _) | (_, None) => None,
            (min_free, Some(free)) => Some((self.allocated + free).saturating_sub(min_free)),
        };
        match (self.max_size, by_free) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether `bytes` more fit now.
    pub fn fits(&self, bytes: u64) -> bool {
        self.limit()
            .is_none_or(|limit| self.allocated.saturating_add(bytes) <= limit)
    }

    /// Bytes to free (beyond what is being evicted already) before `bytes` more fit.
    pub fn shortfall(&self, bytes: u64) -> u64 {
        match self.limit() {
            None => 0,
            Some(limit) => (self.allocated + bytes)
                .saturating_sub(limit)
                .saturating_sub(self.evicting),
        }
    }

    /// `bytes` were granted (from now on they count).
    pub fn grant(&mut self, bytes: u64) {
        self.allocated += bytes;
        if let Some(free) = &mut self.fs_free {
            *free = free.saturating_sub(bytes);
        }
    }

    /// A grant whose allocation failed, or a punch that finished: `bytes` no longer count.
    pub fn release(&mut self, bytes: u64) {
        assert!(
            bytes <= self.allocated,
            "releasing {bytes} of {} allocated bytes",
            self.allocated
        );
        self.allocated -= bytes;
    }

    /// Look at the file system's free space again (statvfs: no disk I/O).
    pub fn refresh_fs_free(&mut self, data_dir: &std::path::Path) {
        if self.min_free == 0 {
            return;
        }
        self.fs_free = fs_free_bytes(data_dir);
    }
}

/// Free bytes for unprivileged users on the file system of `dir`.
pub fn fs_free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed is a valid statvfs (plain integers); statvfs writes into it and reads the
    // NUL-terminated path, which `c` keeps alive for the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail.saturating_mul(st.f_frsize))
}

/// At open: the blocks of an origin slot that hold a claimed byte stay allocated; every other part of
/// the file is punched out (bytes fetched but never claimed, blocks whose eviction was recorded but not
/// punched before a crash, or a file from before origin files were sparse). One punch per gap;
/// nothing of the data is read.
pub fn reclaim_unclaimed(slot: &super::Slot, fill_block: u64) -> Result<BTreeSet<u64>, String> {
    let blocks = blocks_of(slot.presence.ranges(), fill_block);
    let len = slot.data.len;
    let on_disk = super::data_file::allocated_bytes(&slot.data.file).unwrap_or(u64::MAX);
    let wanted: u64 = blocks
        .iter()
        .map(|&b| block_bytes(b, fill_block, len))
        .sum();
    if on_disk > wanted {
        for (offset, n) in gaps(&blocks, fill_block, len) {
            super::data_file::punch_range(&slot.data.file, offset, n)
                .map_err(|e| format!("cannot punch unclaimed bytes {offset}+{n} out: {e}"))?;
        }
    }
    Ok(blocks)
}

/// Bytes block `b` of a file of `len` bytes in `fill_block`s occupies on disk once allocated.
pub fn block_bytes(b: u64, fill_block: u64, len: u64) -> u64 {
    let start = b * fill_block;
    on_disk((start + fill_block).min(len) - start.min(len))
}

/// The recency file: `<data_dir>/cache.recency`.
pub fn recency_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("cache.recency")
}

const RECENCY_MAGIC: &[u8; 8] = b"VCRECNC1";

/// The recency file's bytes: magic, then per block `epoch u32 | block u64 | id len u16 | id`, then a
/// crc32c of all before it.
pub fn encode_recency(blocks: &[(BlockKey, u32)]) -> Vec<u8> {
    let mut out = RECENCY_MAGIC.to_vec();
    for ((id, b), epoch) in blocks {
        out.extend_from_slice(&epoch.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    let crc = super::meta::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The persisted recency (empty when the file is missing, torn or foreign: it is only a hint).
pub fn load_recency(data_dir: &std::path::Path) -> HashMap<BlockKey, u32> {
    let Ok(bytes) = std::fs::read(recency_path(data_dir)) else {
        return HashMap::new();
    };
    decode_recency(&bytes).unwrap_or_default()
}

fn decode_recency(bytes: &[u8]) -> Option<HashMap<BlockKey, u32>> {
    let body = bytes.get(..bytes.len().checked_sub(4)?)?;
    let crc = u32::from_le_bytes(bytes.get(body.len()..)?.try_into().ok()?);
    if !body.starts_with(RECENCY_MAGIC) || super::meta::crc32c(body) != crc {
        return None;
    }
    let mut map = HashMap::new();
    let mut at = RECENCY_MAGIC.len();
    while at < body.len() {
        let epoch = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?);
        let b = u64::from_le_bytes(body.get(at + 4..at + 12)?.try_into().ok()?);
        let n = u16::from_le_bytes(body.get(at + 12..at + 14)?.try_into().ok()?) as usize;
        let id = std::str::from_utf8(body.get(at + 14..at + 14 + n)?).ok()?;
        map.insert((id.to_string(), b), epoch);
        at += 14 + n;
    }
    Some(map)
}

/// The blocks of a `fill_block`-sized grid that hold a byte of `ranges` (claimed bytes).
pub fn blocks_of(ranges: &[(u64, u64)], fill_block: u64) -> BTreeSet<u64> {
    let mut blocks = BTreeSet::new();
    for &(a, b) in ranges {
        if a < b {
            blocks.extend(a / fill_block..=(b - 1) / fill_block);
        }
    }
    blocks
}

/// The block-aligned holes between `allocated` blocks of a file of `len` bytes: what to punch so
/// that only those blocks occupy disk (one call per gap, not per block).
pub fn gaps(allocated: &BTreeSet<u64>, fill_block: u64, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for &b in allocated {
        let start = b * fill_block;
        if start > at {
            out.push((at, start - at));
        }
        at = (start + fill_block).min(len);
    }
    if at < len {
        out.push((at, len - at));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u64) -> BlockKey {
        ("v".to_string(), b)
    }

    #[test]
    fn s3fifo_evicts_one_hit_wonders_first_and_keeps_reread_blocks() {
        let mut p = S3Fifo::default();
        for b in 0..20 {
            p.insert(key(b), 0);
        }
        // Every block is sent once (the read that fetched it: not a re-read); blocks 0..5 are read
        // again: leaving the small queue they go to main.
        for b in 0..20 {
            p.touch(&key(b));
        }
        for b in 0..5 {
            p.touch(&key(b));
        }
        let mut evicted = Vec::new();
        for _ in 0..15 {
            let v = p.victim(|_| false).unwrap();
            p.remove(&v);
            evicted.push(v.1);
        }
        assert_eq!(
            evicted,
            (5..20).collect::<Vec<_>>(),
            "one-hit wonders go first"
        );
        // An evicted block that comes back while remembered goes to main.
        p.insert(key(7), 0);
        assert!(p.entries[&key(7)].main);
        // Pinned blocks are passed over; all pinned: none.
        assert_eq!(p.victim(|k| k.1 != 3).map(|k| k.1), Some(3));
        assert_eq!(p.victim(|_| true), None);
        assert_eq!(p.len(), 6);
        // Persisted state restores main membership.
        let snap = p.snapshot();
        let mut q = S3Fifo::default();
        for (k, e) in snap {
            q.insert(k, e);
        }
        assert!(q.entries.values().all(|e| e.main));
    }

    #[test]
    fn budget_counts_grants_and_min_free() {
        let mut s = CacheSpace::new(Some(100), 0);
        assert!(s.fits(100) && !s.fits(101));
        s.grant(60);
        assert_eq!(s.shortfall(60), 20);
        s.evicting = 20;
        assert_eq!(s.shortfall(60), 0);
        s.release(60);
        let mut f = CacheSpace::new(None, 50);
        f.fs_free = Some(80);
        assert_eq!(f.limit(), Some(30));
        f.grant(30);
        assert_eq!(f.limit(), Some(30));
        assert!(!f.fits(1));
    }

    #[test]
    fn blocks_and_gaps_cover_the_file() {
        let blocks = blocks_of(&[(0, 10), (2500, 3001), (9000, 9500)], 1000);
        assert_eq!(blocks.into_iter().collect::<Vec<_>>(), [0, 2, 3, 9]);
        let allocated: BTreeSet<u64> = [0, 2, 3, 9].into();
        assert_eq!(gaps(&allocated, 1000, 9500), [(1000, 1000), (4000, 5000)]);
        assert_eq!(gaps(&BTreeSet::new(), 1000, 10), [(0, 10)]);
        assert_eq!(on_disk(1), 4096);
        assert_eq!(on_disk(8192), 8192);
    }

    #[test]
    fn recency_round_trips_and_a_torn_file_is_ignored() {
        let blocks = vec![(("a".to_string(), 3), 10), (("films/x".to_string(), 0), 12)];
        let bytes = encode_recency(&blocks);
        let map = decode_recency(&bytes).unwrap();
        assert_eq!(map.get(&("films/x".to_string(), 0)), Some(&12));
        assert_eq!(map.len(), 2);
        assert!(decode_recency(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_recency(b"").is_none());
    }

    #[test]
    fn block_space_walks_allocation_eviction_and_punch() {
        let mut s = BlockSpace::default();
        s.want_alloc(3);
        assert!(s.is_parked(3));
        assert_eq!(s.take_alloc_wanted(), [3]);
        s.granted(3);
        assert!(s.is_parked(3) && s.expects_allocation(3));
        s.allocation_done(3, true);
        assert!(s.is_allocated(3) && !s.is_parked(3));
        s.evicting(3, 7);
        assert!(s.take_punches(6).is_empty());
        assert_eq!(s.take_punches(7), [3]);
        assert!(s.is_evicting(3));
        s.punch_done(3, true);
        assert!(s.is_empty());
    }
}
