//! The loop's side of the disk budget (`store::space`): grant space to blocks waiting for it (and to
//! origin videos' first files), evict when a grant would pass the budget, have each eviction recorded
//! durably, then punched, and take the space thread's results. Crash order: a block's presence is
//! withdrawn in memory, a durable record without it lands (commit thread), and only then is it
//! punched (space thread) — so after any crash every claimed byte is intact.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::store::Store;
use crate::store::origin::Phase;
use crate::store::space::worker::{SpaceDone, SpaceJob, SpaceWorker};
use crate::store::space::{self, SpaceWant};

use super::Server;

/// How often the file system's free space is looked at (for `min_free`) and recency is saved.
const FS_FREE_EVERY: Duration = Duration::from_millis(500);
const RECENCY_EVERY: Duration = Duration::from_secs(60);
/// Evictions keep 1/32 of the budget free ahead of demand.
const HEADROOM_DIVISOR: u64 = 32;
/// Most victims tried per turn (a ring of pinned blocks is not walked without end).
const MAX_VICTIMS_PER_TURN: usize = 4096;

impl Server {
    /// One turn of the budget: new requests, grants, evictions, durable records and punches.
    pub(super) fn space_turn(&mut self, now: Instant) {
        let Some(space_worker) = self.space_worker.as_ref() else {
            return;
        };
        if now.duration_since(self.space_looked) >= FS_FREE_EVERY {
            self.space_looked = now;
            let dir = self.store.data_dir.clone();
            self.store.space.refresh_fs_free(&dir);
        }
        queue_wants(&mut self.store, &self.create_granted);
        let mut evicted = BTreeSet::new();
        grant(
            &mut self.store,
            space_worker,
            &mut self.create_granted,
            &mut evicted,
        );
        // Keep some room free ahead of demand (an eviction waits for a durable record before its
        // punch, so a fill that has to wait for one is slow); and come back under a lowered limit.
        let headroom = self.store.space.limit().map_or(0, |l| l / HEADROOM_DIVISOR);
        let over = self.store.space.shortfall(headroom);
        if over > 0 {
            evict(&mut self.store, over, &mut evicted);
        }
        for id in evicted {
            self.record_evictions(&id, now);
        }
        if now.duration_since(self.recency_saved) >= RECENCY_EVERY {
            self.recency_saved = now;
            self.save_recency();
        }
    }

    /// The space thread's results: allocated blocks are fetched now, punched ones leave the budget.
    pub(super) fn collect_space(&mut self) {
        let Some(w) = &self.space_worker else { return };
        for done in w.take_done() {
            apply_done(&mut self.store, done);
        }
    }

    /// An origin video's files were created (`slot`) with its learning block, or not: the grant
    /// made before the length was known (a whole fill block) becomes what the block really takes.
    pub(super) fn created_space(
        &mut self,
        id: &str,
        slot: Option<&crate::store::Slot>,
        granted: u64,
    ) {
        let learned = self
            .store
            .get(id)
            .and_then(|v| v.origin())
            .and_then(|o| Some((o.learn_block()?, o.fill_block())));
        let (Some(slot), Some((b, fb))) = (slot, learned) else {
            self.store.space.release(granted);
            return;
        };
        let takes = space::block_bytes(b, fb, slot.data.len);
        self.store.space.release(granted.saturating_sub(takes));
        if takes > 0 {
            self.store.space.policy.insert_new((id.to_string(), b));
        }
    }

    /// Video `id` evicted blocks, or a durable commit of it landed: the evictions that record covers
    /// are punched now, and those it does not get a durable commit (one at a time per video; a
    /// failed one is retried by the checkpoint). Called on those two events, never by a scan.
    pub(super) fn record_evictions(&mut self, id: &str, now: Instant) {
        let Some(w) = &self.space_worker else { return };
        let Some(v) = self.store.videos.get_mut(id) else {
            return;
        };
        let Some(o) = v.origin_mut().filter(|o| o.space.evictions_unrecorded()) else {
            return;
        };
        let file = o.slot().map(|s| s.data.file.clone());
        for block in o.take_punches() {
            let (Some(file), (offset, end)) = (file.clone(), o.block_span(block)) else {
                break;
            };
            let video = id.to_string();
            let len = end - offset;
            if !w.submit(SpaceJob::Punch {
                video,
                block,
                file,
                offset,
                len,
            }) {
                log::error!("the space thread is gone");
            }
        }
        if !o.space.evictions_unrecorded() {
            return;
        }
        let (Some(job), Some(worker)) = (v.commit_job(id), &self.worker) else {
            return;
        };
        self.commit_submitted.insert(job.video.clone(), now);
        if !worker.submit(job) {
            log::error!("the commit worker is gone");
        }
    }

    /// Write the policy's blocks and their coarse access times (a hint for the next start).
    pub(super) fn save_recency(&mut self) {
        let Some(w) = &self.space_worker else { return };
        let bytes = space::encode_recency(&self.store.space.policy.snapshot());
        let path = space::recency_path(&self.store.data_dir);
        w.submit(SpaceJob::Save { path, bytes });
    }

    /// Save recency once more and stop the space thread (at shutdown).
    pub(super) fn finish_space(&mut self) {
        self.save_recency();
        if let Some(w) = self.space_worker.take() {
            w.finish();
        }
    }
}

/// One pass over the origin videos: blocks parked for space, and videos that learned their length,
/// join the waiting line; a video whose every block went gives its files back (their removal follows,
/// on the commit thread; the next read learns the object again).
fn queue_wants(store: &mut Store, create_granted: &std::collections::HashMap<String, u64>) {
    let Store { videos, space, .. } = store;
    for (id, v) in videos.iter_mut() {
        let unwaited = v.byte_waiters.is_empty();
        let Some(o) = v.origin_mut() else { continue };
        if unwaited && o.is_idle_and_empty() {
            log::info!("origin video {id}: every cached block was evicted; its files go");
            o.give_back_files();
            continue;
        }
        for block in o.space.take_alloc_wanted() {
            space.waiting.push_back(SpaceWant {
                video: id.clone(),
                block,
                bytes: o.block_bytes(block),
                create: false,
            });
        }
        let create_queued = || {
            create_granted.contains_key(id)
                || space.waiting.iter().any(|w| w.create && w.video == *id)
        };
        if o.phase() == Phase::CreateWanted && !create_queued() {
            space.waiting.push_back(SpaceWant {
                video: id.clone(),
                block: 0,
                bytes: space::on_disk(o.fill_block()),
                create: true,
            });
        }
    }
}

/// Grant waiting requests in order while they fit; when the first does not, evict for it and wait.
fn grant(
    store: &mut Store,
    w: &SpaceWorker,
    create_granted: &mut std::collections::HashMap<String, u64>,
    evicted: &mut BTreeSet<String>,
) {
    while let Some(want) = store.space.waiting.front().cloned() {
        let Some(o) = store
            .videos
            .get_mut(&want.video)
            .and_then(|v| v.origin_mut())
        else {
            store.space.waiting.pop_front();
            continue;
        };
        if want.create {
            if o.phase() != Phase::CreateWanted {
                store.space.waiting.pop_front();
                continue;
            }
        } else if o.phase() != Phase::Ready || !o.still_wanted(want.block) {
            o.allocation_dropped(want.block);
            store.space.waiting.pop_front();
            continue;
        } else if o.space.is_evicting(want.block) {
            break; // allocated again once its punch is done
        }
        if !store.space.fits(want.bytes) {
            let need = store.space.shortfall(want.bytes);
            if need > 0 {
                evict(store, need, evicted);
            }
            break;
        }
        store.space.waiting.pop_front();
        store.space.grant(want.bytes);
        if want.create {
            create_granted.insert(want.video.clone(), want.bytes);
            continue;
        }
        let Some(file) = o.slot().map(|s| s.data.file.clone()) else {
            unreachable!("a Ready origin video has a slot");
        };
        o.space.granted(want.block);
        let (a, e) = o.block_span(want.block);
        let job = SpaceJob::Allocate {
            video: want.video,
            block: want.block,
            file,
            offset: a,
            len: e - a,
        };
        if !w.submit(job) {
            log::error!("the space thread is gone");
        }
    }
}

/// Withdraw blocks, S3-FIFO's victims first, until `need` bytes are on their way out; the videos
/// that lost blocks join `evicted` (their evictions are to be recorded).
fn evict(store: &mut Store, mut need: u64, evicted: &mut BTreeSet<String>) {
    let Store { videos, space, .. } = store;
    for _ in 0..MAX_VICTIMS_PER_TURN {
        if need == 0 {
            break;
        }
        let victim = space.policy.victim(|(id, b)| {
            videos
                .get(id)
                .and_then(|v| v.origin())
                .is_some_and(|o| o.pinned(*b))
        });
        let Some(key) = victim else {
            break; // every resident block is in use: the request waits
        };
        let Some(o) = videos.get_mut(&key.0).and_then(|v| v.origin_mut()) else {
            space.policy.remove(&key);
            continue;
        };
        if !o.space.is_allocated(key.1) {
            space.policy.remove(&key);
            continue;
        }
        match o.evict(key.1) {
            Ok(()) => {
                let bytes = o.block_bytes(key.1);
                space.policy.remove(&key);
                space.evicting += bytes;
                space.evicted_blocks += 1;
                need = need.saturating_sub(bytes);
                evicted.insert(key.0.clone());
            }
            Err(why) => log::debug!("video {}: block {} stays: {why}", key.0, key.1),
        }
    }
}

/// One result of the space thread.
fn apply_done(store: &mut Store, done: SpaceDone) {
    let Store { videos, space, .. } = store;
    let Some(o) = videos.get_mut(&done.video).and_then(|v| v.origin_mut()) else {
        return; // the files went meanwhile: their blocks left the budget with them
    };
    let bytes = o.block_bytes(done.block);
    let key = (done.video.clone(), done.block);
    if done.punch {
        if !o.space.expects_punch(done.block) {
            return;
        }
        let ok = done.result.is_ok();
        o.space.punch_done(done.block, ok);
        space.evicting = space.evicting.saturating_sub(bytes);
        match done.result {
            Ok(()) => {
                space.release(bytes);
                space.evicted_total += bytes;
            }
            Err(e) => {
                log::error!(
                    "video {}: punching evicted block {} out failed: {e}; it stays allocated",
                    done.video,
                    done.block
                );
                space.policy.insert_new(key);
            }
        }
        return;
    }
    if !o.space.expects_allocation(done.block) {
        return;
    }
    if done.result.is_ok() {
        space.policy.insert_new(key);
    } else {
        space.release(bytes);
    }
    o.allocation_done(done.block, done.result);
}
