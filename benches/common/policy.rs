//! Block-cache eviction policies for the simulations of `--bench eviction` (the policy study) and the
//! simulated reference of `--bench cache`: LRU, FIFO, CLOCK, 2Q and S3-FIFO over u64 block keys, a capacity
//! in blocks, and `simulate`, which plays a trace of reads through one and counts hits and origin bytes.

use super::MIB;
use super::trace::Read;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-xor hasher for u64 block keys (SipHash would dominate the simulation's time).
#[derive(Default)]
struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<KeyHash>>;

/// A block-cache eviction policy with a capacity in blocks. `access` answers whether `key` was
/// resident and, on a miss, admits it (evicting first when full).
pub trait Policy {
    fn access(&mut self, key: u64) -> bool;
    fn len(&self) -> usize;
}

const NIL: u32 = u32::MAX;

/// A recency list over a slab: front = most recent, back = least recent.
#[derive(Default)]
struct List {
    map: Map<u32>,
    keys: Vec<u64>,
    prev: Vec<u32>,
    next: Vec<u32>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
}

impl List {
    fn new() -> List {
        List {
            head: NIL,
            tail: NIL,
            ..Default::default()
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = (self.prev[i as usize], self.next[i as usize]);
        match p {
            NIL => self.head = n,
            p => self.next[p as usize] = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.prev[n as usize] = p,
        }
    }

    fn link_front(&mut self, i: u32) {
        self.prev[i as usize] = NIL;
        self.next[i as usize] = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.prev[h as usize] = i,
        }
        self.head = i;
    }

    /// Move `key` to the front if present.
    fn touch(&mut self, key: u64) -> bool {
        let Some(&i) = self.map.get(&key) else {
            return false;
        };
        self.unlink(i);
        self.link_front(i);
        true
    }

    fn push_front(&mut self, key: u64) {
        assert!(!self.map.contains_key(&key), "key {key:#x} already listed");
        let i = match self.free.pop() {
            Some(i) => {
                self.keys[i as usize] = key;
                i
            }
            None => {
                self.keys.push(key);
                self.prev.push(NIL);
                self.next.push(NIL);
                (self.keys.len() - 1) as u32
            }
        };
        self.map.insert(key, i);
        self.link_front(i);
    }

    fn pop_back(&mut self) -> Option<u64> {
        let i = self.tail;
        if i == NIL {
            return None;
        }
        self.unlink(i);
        self.free.push(i);
        let key = self.keys[i as usize];
        self.map.remove(&key);
        Some(key)
    }
}

struct Lru {
    cap: usize,
    list: List,
}

impl Policy for Lru {
    fn access(&mut self, key: u64) -> bool {
        if self.list.touch(key) {
            return true;
        }
        if self.list.len() >= self.cap {
            self.list.pop_back();
        }
        self.list.push_front(key);
        false
    }
    fn len(&self) -> usize {
        self.list.len()
    }
}

/// FIFO: blocks leave in the order they came, hits change nothing (the floor: CLOCK that never
/// records a hit degenerates to this).
struct Fifo {
    cap: usize,
    queue: VecDeque<u64>,
    resident: Map<()>,
}

impl Policy for Fifo {
    fn access(&mut self, key: u64) -> bool {
        if self.resident.contains_key(&key) {
            return true;
        }
        if self.queue.len() >= self.cap {
            let old = self.queue.pop_front().expect("FIFO: full but empty");
            self.resident.remove(&old);
        }
        self.queue.push_back(key);
        self.resident.insert(key, ());
        false
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
}

/// CLOCK (second chance): one reference bit per slot, set by a hit, cleared as the hand passes;
/// a new block starts with its bit clear (as libCacheSim's Clock).
struct Clock {
    cap: usize,
    keys: Vec<u64>,
    referenced: Vec<bool>,
    map: Map<u32>,
    hand: usize,
}

impl Policy for Clock {
    fn access(&mut self, key: u64) -> bool {
        if let Some(&i) = self.map.get(&key) {
            self.referenced[i as usize] = true;
            return true;
        }
        if self.keys.len() < self.cap {
            self.map.insert(key, self.keys.len() as u32);
            self.keys.push(key);
            self.referenced.push(false);
            return false;
        }
        while self.referenced[self.hand] {
            self.referenced[self.hand] = false;
            self.hand = (self.hand + 1) % self.cap;
        }
        self.map.remove(&self.keys[self.hand]);
        self.keys[self.hand] = key;
        self.map.insert(key, self.hand as u32);
        self.hand = (self.hand + 1) % self.cap;
        false
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Keys of recently evicted blocks (no data), FIFO, at most `cap`.
struct Ghost {
    cap: usize,
    queue: VecDeque<(u64, u64)>,
    map: Map<u64>,
    seq: u64,
}

impl Ghost {
    fn new(cap: usize) -> Ghost {
        Ghost {
            cap: cap.max(1),
            queue: VecDeque::new(),
            map: Map::default(),
            seq: 0,
        }
    }

    fn push(&mut self, key: u64) {
        self.seq += 1;
        self.map.insert(key, self.seq);
        self.queue.push_back((key, self.seq));
        // Entries taken out (or pushed again) leave stale queue slots; drop them as they reach the front.
        while self.map.len() > self.cap || self.queue.len() > 2 * self.cap {
            let Some((k, s)) = self.queue.pop_front() else {
                break;
            };
            if self.map.get(&k) == Some(&s) {
                self.map.remove(&k);
            }
        }
    }

    /// Whether `key` was a ghost (it no longer is).
    fn take(&mut self, key: u64) -> bool {
        self.map.remove(&key).is_some()
    }
}

/// 2Q, the full version (Johnson & Shasha 1994): new blocks enter the FIFO A1in (Kin = 25 % of the
/// capacity); blocks pushed out of A1in are remembered in the ghost A1out (Kout = 50 %); a miss on a
/// ghost enters the LRU Am. Hits in A1in change nothing.
struct TwoQ {
    cap: usize,
    kin: usize,
    a1in: VecDeque<u64>,
    in_a1in: Map<()>,
    a1out: Ghost,
    am: List,
}

impl TwoQ {
    fn new(cap: usize) -> TwoQ {
        TwoQ {
            cap,
            kin: (cap / 4).max(1),
            a1in: VecDeque::new(),
            in_a1in: Map::default(),
            a1out: Ghost::new(cap / 2),
            am: List::new(),
        }
    }

    fn reclaim(&mut self) {
        if self.a1in.len() > self.kin || self.am.len() == 0 {
            let y = self.a1in.pop_front().expect("2Q: A1in empty while full");
            self.in_a1in.remove(&y);
            self.a1out.push(y);
        } else {
            self.am.pop_back();
        }
    }
}

impl Policy for TwoQ {
    fn access(&mut self, key: u64) -> bool {
        if self.am.touch(key) || self.in_a1in.contains_key(&key) {
            return true;
        }
        if self.len() >= self.cap {
            self.reclaim();
        }
        if self.a1out.take(key) {
            self.am.push_front(key);
        } else {
            self.a1in.push_back(key);
            self.in_a1in.insert(key, ());
        }
        false
    }
    fn len(&self) -> usize {
        self.a1in.len() + self.am.len()
    }
}

/// S3-FIFO (Yang et al., SOSP 2023): a small FIFO S (10 %), a main FIFO M and a ghost G as large as M.
/// Hits bump a 2-bit counter. A block leaving S moves to M if it was hit since it entered, else it
/// goes (to G). M reinserts a hit block with its counter decremented, else evicts it. A miss on a
/// ghost enters M directly.
struct S3Fifo {
    cap: usize,
    small_cap: usize,
    small: VecDeque<u64>,
    main: VecDeque<u64>,
    freq: Map<u8>,
    ghost: Ghost,
}

impl S3Fifo {
    fn new(cap: usize) -> S3Fifo {
        let small_cap = (cap / 10).max(1);
        S3Fifo {
            cap,
            small_cap,
            small: VecDeque::new(),
            main: VecDeque::new(),
            freq: Map::default(),
            ghost: Ghost::new(cap - small_cap),
        }
    }

    /// Evict one block from S (moving hit ones to M); false if S emptied without evicting.
    fn evict_small(&mut self) -> bool {
        while let Some(t) = self.small.pop_front() {
            let f = self
                .freq
                .get_mut(&t)
                .expect("S3-FIFO: S block without a counter");
            if *f > 0 {
                *f = 0;
                self.main.push_back(t);
            } else {
                self.freq.remove(&t);
                self.ghost.push(t);
                return true;
            }
        }
        false
    }

    fn evict_main(&mut self) {
        while let Some(t) = self.main.pop_front() {
            let f = self
                .freq
                .get_mut(&t)
                .expect("S3-FIFO: M block without a counter");
            if *f > 0 {
                *f -= 1;
                self.main.push_back(t);
            } else {
                self.freq.remove(&t);
                return;
            }
        }
    }
}

impl Policy for S3Fifo {
    fn access(&mut self, key: u64) -> bool {
        if let Some(f) = self.freq.get_mut(&key) {
            *f = (*f + 1).min(3);
            return true;
        }
        while self.len() >= self.cap {
            let from_small = self.small.len() >= self.small_cap || self.main.is_empty();
            if !(from_small && self.evict_small()) {
                self.evict_main();
            }
        }
        if self.ghost.take(key) {
            self.main.push_back(key);
        } else {
            self.small.push_back(key);
        }
        self.freq.insert(key, 0);
        false
    }
    fn len(&self) -> usize {
        self.small.len() + self.main.len()
    }
}

pub const POLICIES: [&str; 5] = ["LRU", "FIFO", "CLOCK", "2Q", "S3-FIFO"];

pub fn policy(name: &str, cap: usize) -> Box<dyn Policy> {
    match name {
        "LRU" => Box::new(Lru {
            cap,
            list: List::new(),
        }),
        "FIFO" => Box::new(Fifo {
            cap,
            queue: VecDeque::new(),
            resident: Map::default(),
        }),
        "CLOCK" => Box::new(Clock {
            cap,
            keys: Vec::new(),
            referenced: Vec::new(),
            map: Map::default(),
            hand: 0,
        }),
        "2Q" => Box::new(TwoQ::new(cap)),
        "S3-FIFO" => Box::new(S3Fifo::new(cap)),
        other => panic!("unknown policy {other}"),
    }
}

/// Counts over the measured reads: blocks touched and hit, client bytes and those served from hit
/// blocks, origin bytes (a missed block is fetched whole, or up to the object's end).
#[derive(Default, Clone, Copy)]
pub struct Tally {
    pub blocks: u64,
    pub block_hits: u64,
    pub bytes: u64,
    pub byte_hits: u64,
    pub origin: u64,
}

impl Tally {
    pub fn block_hit(&self) -> f64 {
        self.block_hits as f64 / self.blocks.max(1) as f64
    }
    pub fn byte_hit(&self) -> f64 {
        self.byte_hits as f64 / self.bytes.max(1) as f64
    }
    pub fn origin_per_client(&self) -> f64 {
        self.origin as f64 / self.bytes.max(1) as f64
    }
}

pub fn simulate(
    p: &mut dyn Policy,
    cap: usize,
    sizes: &[u64],
    trace: &[Read],
    warm: usize,
) -> Tally {
    const BLOCK: u64 = MIB;
    let mut t = Tally::default();
    for (i, r) in trace.iter().enumerate() {
        let end = r.start + r.len;
        for b in r.start / BLOCK..=(end - 1) / BLOCK {
            let hit = p.access(((r.obj as u64) << 32) | b);
            assert!(p.len() <= cap, "a policy passed its capacity");
            if i < warm {
                continue;
            }
            let bytes = end.min((b + 1) * BLOCK) - r.start.max(b * BLOCK);
            t.blocks += 1;
            t.bytes += bytes;
            if hit {
                t.block_hits += 1;
                t.byte_hits += bytes;
            } else {
                t.origin += BLOCK.min(sizes[r.obj] - b * BLOCK);
            }
        }
    }
    t
}
