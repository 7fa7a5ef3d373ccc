//! A node of a tier: which other nodes to ask for an origin video's block before its origin. The
//! nodes of `[cluster] peers` are ranked per video id by rendezvous hashing (highest random weight),
//! so every node tries them in the same order for a video and a membership change moves only the ids
//! whose top node changed. A peer request carries `X-Vcache-Peer: 1` and is answered from the peer's
//! cache only (504 otherwise) — never forwarded, never fetched from the origin for the asker — so a
//! block is never fetched twice through the tier and copies do not pile up on the way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::ClusterConfig;

/// Marks a request from another node (answered from the cache only).
pub const PEER_HEADER: &str = "X-Vcache-Peer";
/// A peer's answer names the origin's validator of its copy (its ETag or Last-Modified) in this
/// header, so the asker stores exactly what the origin would have told it.
pub const VALIDATOR_HEADER: &str = "X-Vcache-Validator";
/// A peer that refused a connection or broke an answer is not asked again for this long.
const PEER_REST: Duration = Duration::from_secs(5);

/// Rendezvous weight of `node` for `video`: FNV-1a over both, then a 64-bit finaliser (splitmix) so
/// that near-equal inputs spread. Stable across builds and machines.
fn weight(node: &SocketAddr, video: &str) -> u64 {
    let text = format!("{node}/{video}");
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every node of the tier ranked for `video`, best first (ties, practically impossible, by address).
pub fn rank(peers: &[SocketAddr], video: &str) -> Vec<SocketAddr> {
    let mut ranked: Vec<(u64, SocketAddr)> = peers.iter().map(|p| (weight(p, video), *p)).collect();
    ranked.sort_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, p)| p).collect()
}

/// A live channel's owner in a tier (its publisher's node): the highest-ranked node for its id.
pub fn owner(cfg: &ClusterConfig, channel: &str) -> Option<SocketAddr> {
    cfg.self_addr?;
    rank(&cfg.peers, channel).first().copied()
}

/// Where a live channel is published: its owner, the highest-ranked node of the tier for its id, so
/// that a channel never has publishers on two nodes. `Some(owner)` when that is another node (this node
/// refuses the publisher and names the owner); `None` on the owner or a node on its own.
pub fn publish_elsewhere(cfg: &ClusterConfig, channel: &str) -> Option<SocketAddr> {
    let me = cfg.self_addr?;
    let owner = owner(cfg, channel)?;
    assert!(
        cfg.peers.contains(&me),
        "`self` is one of the peers (config)"
    );
    (owner != me).then_some(owner)
}

/// The tier as the fetcher sees it: the other nodes, and which of them rest after a failure.
#[derive(Default)]
pub struct Peers {
    me: Option<SocketAddr>,
    all: Vec<SocketAddr>,
    resting: HashMap<SocketAddr, Instant>,
    /// `[server] read_token`, sent to peers (the nodes of a tier share their tokens).
    pub read_token: Option<String>,
}

impl Peers {
    /// Take the (re)loaded `[cluster]` table.
    pub fn configure(&mut self, cfg: &ClusterConfig, read_token: Option<&str>) {
        self.read_token = read_token.map(str::to_string);
        self.me = cfg.self_addr;
        self.all = cfg.peers.clone();
        self.resting.retain(|p, _| cfg.peers.contains(p));
    }

    /// The other nodes to ask for a block of `video`, in rank order, without those resting.
    pub fn to_ask(&self, video: &str, now: Instant) -> Vec<SocketAddr> {
        let asked: Vec<SocketAddr> = rank(&self.all, video)
            .into_iter()
            .filter(|p| Some(*p) != self.me)
            .filter(|p| self.resting.get(p).is_none_or(|until| now >= *until))
            .collect();
        assert!(
            asked.len() < self.all.len().max(1),
            "a node never asks itself"
        );
        asked
    }

    /// `peer` refused, timed out or broke an answer: skip it for a while.
    pub fn rest(&mut self, peer: SocketAddr, now: Instant) {
        self.resting.insert(peer, now + PEER_REST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    #[test]
    fn ranks_are_stable_and_a_joining_node_moves_only_its_share() {
        let (three, four) = (nodes(3), nodes(4));
        let ids: Vec<String> = (0..2000).map(|i| format!("video-{i}")).collect();
        let mut moved = 0;
        for id in &ids {
            let before = rank(&three, id);
            assert_eq!(before, rank(&three, id), "deterministic");
            let after = rank(&four, id);
            // The relative order of the old nodes never changes: ids move only to the new node.
            let old_order: Vec<_> = after
                .iter()
                .filter(|p| three.contains(p))
                .copied()
                .collect();
            assert_eq!(old_order, before);
            if after[0] != before[0] {
                assert_eq!(after[0], four[3]);
                moved += 1;
            }
        }
        // About a quarter moves (binomial: 500 ± 3 sigma of ~19).
        assert!((430..=570).contains(&moved), "{moved} of 2000 moved");
    }

    #[test]
    fn every_node_names_the_same_owner_of_a_channel() {
        let tier = nodes(3);
        for ch in ["ch", "news", "sport-1"] {
            let owner = rank(&tier, ch)[0];
            for me in &tier {
                let cfg = ClusterConfig {
                    self_addr: Some(*me),
                    peers: tier.clone(),
                    drain_ms: 0,
                };
                let want = (owner != *me).then_some(owner);
                assert_eq!(publish_elsewhere(&cfg, ch), want, "{me} for {ch}");
            }
        }
        assert_eq!(publish_elsewhere(&ClusterConfig::default(), "ch"), None);
    }

    #[test]
    fn a_node_asks_the_others_in_rank_order_and_skips_resting_ones() {
        let cfg = ClusterConfig {
            self_addr: Some(nodes(3)[0]),
            peers: nodes(3),
            drain_ms: 0,
        };
        let mut p = Peers::default();
        p.configure(&cfg, None);
        let now = Instant::now();
        let expect: Vec<_> = rank(&cfg.peers, "v")
            .into_iter()
            .filter(|a| *a != nodes(3)[0])
            .collect();
        assert_eq!(p.to_ask("v", now), expect);
        p.rest(expect[0], now);
        assert_eq!(p.to_ask("v", now), expect[1..]);
        assert_eq!(p.to_ask("v", now + PEER_REST), expect);
        assert!(Peers::default().to_ask("v", now).is_empty());
    }
}
