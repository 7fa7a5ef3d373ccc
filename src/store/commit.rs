//! The commit worker: the one thread that syncs. It takes durable-commit jobs from the event loop,
//! syncs every data file of a batch first, then writes each job's metadata record into its durable record slot
//! and syncs the metadata files, and reports back through a `mio::Waker`. Jobs that arrive while a batch
//! is being synced form the next batch, so writes that finish close together share one sync (group commit).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::meta::{MetaFile, MetaRecord, RecordSlot};
use crate::config::VideoConfig;

/// One durable commit: sync `data`, then write `record` into durable record slot `record_slot` of `meta` and sync it.
pub struct CommitJob {
    pub video: String,
    pub data: Arc<File>,
    pub meta: Arc<MetaFile>,
    pub record_slot: RecordSlot,
    pub record: MetaRecord,
    /// The claim sequence number the record covers: every claim up to it is durable once this is done.
    pub claim_seq: u64,
}

/// The outcome of one job, reported to the event loop.
#[derive(Debug)]
pub struct CommitDone {
    pub video: String,
    pub claim_seq: u64,
    pub record_slot: RecordSlot,
    pub result: Result<(), CommitFailure>,
}

/// Why a durable commit failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitFailure {
    /// fdatasync of the data file failed. The kernel may have dropped the dirty pages and a retried
    /// sync can succeed without them ("fsyncgate"): the video is poisoned (`CommitState::poisoned`),
    /// never retried.
    DataSync(String),
    /// Writing or syncing the metadata record failed; the data is synced, the record is retried.
    Metadata(String),
}

impl std::fmt::Display for CommitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitFailure::DataSync(why) => write!(f, "syncing the data file failed: {why}"),
            CommitFailure::Metadata(why) => f.write_str(why),
        }
    }
}

/// How the worker syncs a data file: `fdatasync` in production; tests inject failures.
pub type SyncData = fn(&File) -> std::io::Result<()>;

/// Create an origin video's files once its length is known (a fallocate and metadata syncs: off the
/// event loop).
pub struct CreateJob {
    pub video: String,
    pub paths: super::StorePaths,
    pub len: u64,
    pub validator: String,
    /// Bytes [offset, offset + len) of the (sparse) data file to allocate at once: the block the
    /// learning fetch writes into. The budget granted them before the job was sent.
    pub allocate: (u64, u64),
}

/// The outcome of a `CreateJob`.
pub struct Created {
    pub video: String,
    pub result: Result<super::Slot, String>,
}

/// Remove a video's files (an origin object changed length; the files are closed already).
pub struct RemoveJob {
    pub video: String,
    pub paths: super::StorePaths,
}

/// The outcome of a `RemoveJob`.
pub struct Removed {
    pub video: String,
    pub result: Result<(), String>,
}

/// Open (or create: fallocate, metadata syncs) a video that a reload added, off the event loop.
pub struct OpenJob {
    pub config: VideoConfig,
    pub paths: super::StorePaths,
    /// The origin's addresses, resolved by the reload thread (origin videos only).
    pub resolved: Option<Result<Vec<SocketAddr>, String>>,
}

/// The outcome of an `OpenJob`: the opened video, for the loop to insert, or why it cannot be served.
pub struct Opened {
    pub video: String,
    pub result: Result<Box<super::Video>, String>,
}

enum Work {
    Commit(CommitJob),
    Create(CreateJob),
    Remove(RemoveJob),
    Open(OpenJob),
}

/// Results the worker hands to the event loop: it appends and wakes the loop, the loop takes them.
struct Outbox<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox(self.0.clone())
    }
}

impl<T> Outbox<T> {
    fn new() -> Self {
        Outbox(Arc::new(Mutex::new(Vec::new())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A panic while holding the lock leaves a Vec that is still whole: keep using it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything put since the last call.
    fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.lock())
    }

    /// Hand results to the loop and wake it.
    fn put(&self, results: impl IntoIterator<Item = T>, waker: &mio::Waker) {
        self.lock().extend(results);
        if let Err(e) = waker.wake() {
            log::error!("commit worker could not wake the event loop: {e}");
        }
    }
}

/// Where the worker puts each kind of result.
#[derive(Clone)]
struct Outboxes {
    done: Outbox<CommitDone>,
    created: Outbox<Created>,
    removed: Outbox<Removed>,
    opened: Outbox<Opened>,
}

pub struct CommitWorker {
    tx: Option<Sender<Work>>,
    out: Outboxes,
    handle: Option<JoinHandle<()>>,
}

impl CommitWorker {
    pub fn start(waker: Arc<mio::Waker>) -> std::io::Result<CommitWorker> {
        Self::start_with_sync(waker, fdatasync)
    }

    /// A worker that syncs data files with `sync_data` (tests inject failures with it).
    pub fn start_with_sync(
        waker: Arc<mio::Waker>,
        sync_data: SyncData,
    ) -> std::io::Result<CommitWorker> {
        let (tx, rx) = mpsc::channel();
        let out = Outboxes {
            done: Outbox::new(),
            created: Outbox::new(),
            removed: Outbox::new(),
            opened: Outbox::new(),
        };
        let worker_out = out.clone();
        let handle = std::thread::Builder::new()
            .name("vcache-commit".into())
            .spawn(move || run(rx, worker_out, waker, sync_data))?;
        Ok(CommitWorker {
            tx: Some(tx),
            out,
            handle: Some(handle),
        })
    }

    /// Queue work. Returns false if the worker is gone (it never exits while the sender lives).
    fn send(&self, work: Work) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(work).is_ok())
    }

    /// Queue a durable commit.
    pub fn submit(&self, job: CommitJob) -> bool {
        self.send(Work::Commit(job))
    }

    /// Queue the creation of an origin video's files.
    pub fn submit_create(&self, job: CreateJob) -> bool {
        self.send(Work::Create(job))
    }

    /// Queue the removal of a video's (closed) files.
    pub fn submit_remove(&self, job: RemoveJob) -> bool {
        self.send(Work::Remove(job))
    }

    /// Queue the opening of a video a reload added.
    pub fn submit_open(&self, job: OpenJob) -> bool {
        self.send(Work::Open(job))
    }

    /// Removals finished since the last call.
    pub fn take_removed(&self) -> Vec<Removed> {
        self.out.removed.take()
    }

    /// Creations finished since the last call.
    pub fn take_created(&self) -> Vec<Created> {
        self.out.created.take()
    }

    /// Videos opened for a reload since the last call.
    pub fn take_opened(&self) -> Vec<Opened> {
        self.out.opened.take()
    }

    /// Commits finished since the last call.
    pub fn take_done(&self) -> Vec<CommitDone> {
        self.out.done.take()
    }

    /// Finish every queued job and stop the thread.
    pub fn finish(mut self) -> Vec<CommitDone> {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.take_done()
    }
}

fn fdatasync(file: &File) -> std::io::Result<()> {
    // SAFETY: fdatasync on a descriptor that `file` keeps open for the duration of the call.
    let rc = unsafe { libc::fdatasync(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn run(rx: Receiver<Work>, out: Outboxes, waker: Arc<mio::Waker>, sync_data: SyncData) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut creates = Vec::new();
        let mut removes = Vec::new();
        let mut opens = Vec::new();
        for work in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match work {
                Work::Commit(job) => batch.push(job),
                Work::Create(job) => creates.push(job),
                Work::Remove(job) => removes.push(job),
                Work::Open(job) => opens.push(job),
            }
        }
        if !removes.is_empty() {
            let results = removes.into_iter().map(|r| Removed {
                result: r.paths.remove_files(&r.video).map_err(|e| e.to_string()),
                video: r.video,
            });
            out.removed.put(results, &waker);
        }
        if !creates.is_empty() {
            let results = creates.into_iter().map(|c| Created {
                result: create_origin(&c),
                video: c.video,
            });
            out.created.put(results, &waker);
        }
        if !batch.is_empty() {
            let results = commit_batch(&batch, sync_data);
            let done = batch
                .into_iter()
                .zip(results)
                .map(|(job, result)| CommitDone {
                    video: job.video,
                    claim_seq: job.claim_seq,
                    record_slot: job.record_slot,
                    result,
                });
            out.done.put(done, &waker);
        }
        // After the batch's commits (a publisher may wait for one), one at a time: each opened video
        // reaches the loop as soon as it is ready.
        for o in opens {
            let result = o.paths.open_video(&o.config, o.resolved.as_ref());
            let opened = Opened {
                video: o.config.id,
                result: result.map(Box::new),
            };
            out.opened.put([opened], &waker);
        }
    }
}

/// An origin video's files, with the learning fetch's block allocated.
fn create_origin(c: &CreateJob) -> Result<super::Slot, String> {
    let slot = c.paths.open_slot_of_kind(
        &c.video,
        c.len,
        super::KIND_CODE_ORIGIN,
        "origin",
        Some(c.validator.clone()),
    )?;
    let (offset, n) = c.allocate;
    let n = n.min(c.len.saturating_sub(offset));
    super::data_file::allocate_range(&slot.data.file, offset, n)
        .map_err(|e| format!("cannot allocate the learning fetch's block: {e}"))?;
    Ok(slot)
}

/// The commit protocol for a batch: (1) sync every data file, (2) write each record into its durable
/// record slot, (3) sync every metadata file. A job whose data sync failed writes no metadata: its
/// video is poisoned, and the failure is recorded on disk (`meta::mark_sync_failed`) so that a restart
/// trusts only its durable records.
fn commit_batch(batch: &[CommitJob], sync_data: SyncData) -> Vec<Result<(), CommitFailure>> {
    let mut data_failed: HashMap<i32, String> = HashMap::new();
    let mut seen: HashSet<i32> = HashSet::new();
    for job in batch {
        let fd = job.data.as_raw_fd();
        if seen.insert(fd)
            && let Err(e) = sync_data(&job.data)
        {
            log::error!(
                "video {}: syncing its data file failed: {e}; the video is poisoned: no write is \
                 acknowledged and no record is written for it until vcache restarts and reopens it \
                 from its last durable record",
                job.video
            );
            if let Err(m) = super::meta::mark_sync_failed(job.meta.path(), &e.to_string()) {
                log::error!(
                    "video {}: recording the failed sync failed too ({m}); a restart in this boot \
                     may trust its newest fast record",
                    job.video
                );
            }
            data_failed.insert(fd, e.to_string());
        }
    }
    let mut results: Vec<Result<(), CommitFailure>> = Vec::with_capacity(batch.len());
    for job in batch {
        if let Some(why) = data_failed.get(&job.data.as_raw_fd()) {
            results.push(Err(CommitFailure::DataSync(why.clone())));
            continue;
        }
        results.push(
            job.meta
                .write_record_slot(job.record_slot, &job.record)
                .map_err(|e| {
                    CommitFailure::Metadata(format!("writing the metadata record failed: {e}"))
                }),
        );
    }
    let mut meta_seen: HashSet<*const MetaFile> = HashSet::new();
    for (job, result) in batch.iter().zip(results.iter_mut()) {
        if result.is_err() {
            continue;
        }
        let key = Arc::as_ptr(&job.meta);
        if meta_seen.insert(key)
            && let Err(e) = job.meta.sync()
        {
            log::error!("video {}: syncing its metadata failed: {e}", job.video);
            *result = Err(CommitFailure::Metadata(format!(
                "syncing the metadata file failed: {e}"
            )));
        }
    }
    results
}

/// The commit bookkeeping of one writable video (upload slot or live ring): which claims the metadata
/// on disk covers (fast record, durable record), which record slot is written next, and whether a durable
/// commit is in flight. The payload (what is claimed) is the caller's; this type only knows sequence
/// numbers, record slots and the protocol's order.
pub struct CommitState {
    meta: Arc<MetaFile>,
    boot_id: super::meta::BootId,
    kind_code: u8,
    data_len: u64,
    /// The sequence number of the newest record written (fast or durable).
    record_seq: u64,
    /// Bumped on every change of what the metadata claims.
    pub claim_seq: u64,
    /// The claim_seq covered by the newest durable record / fast record.
    pub durable_claim_seq: u64,
    pub fast_claim_seq: u64,
    next_durable_record_slot: RecordSlot,
    /// The log region (a fast record slot) entries are appended to, and where the next one goes.
    log_region: RecordSlot,
    log_pos: u64,
    /// The last durable job landed: the next one may switch log regions (the other region holds only
    /// entries that record covers).
    log_switch_allowed: bool,
    /// The current log region has no room for the next entry: acknowledgements wait for a durable
    /// commit, which switches regions.
    log_full: bool,
    pub commit_in_flight: bool,
    pub last_commit_error: Option<String>,
    /// When the last commit failed: the next attempt waits COMMIT_RETRY_BACKOFF.
    failed_at: Option<std::time::Instant>,
    /// Set when a data sync failed: why. From then on nothing is acknowledged and no record (fast or
    /// durable) is written; the video is reopened from its last durable record on the next start.
    poisoned: Option<String>,
    /// When the oldest acknowledgement (fast record) not yet covered by a durable record was given.
    unsynced_ack_since: Option<std::time::Instant>,
    /// The first acknowledgement given after the snapshot of the durable commit in flight (that commit
    /// does not cover it).
    acked_after_job: Option<std::time::Instant>,
}

/// How long after a failed durable commit the next one is attempted (a failing disk is not hammered
/// from every loop turn).
pub const COMMIT_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

/// Where a recovered video's metadata stands, for `CommitState::new`.
pub struct Recovered {
    pub record_seq: u64,
    /// The winning record came from a fast record slot: the first checkpoint must make it durable.
    pub from_fast: bool,
    pub next_durable_record_slot: RecordSlot,
}

impl CommitState {
    pub fn new(
        meta: Arc<MetaFile>,
        boot_id: super::meta::BootId,
        kind_code: u8,
        data_len: u64,
        r: Recovered,
    ) -> CommitState {
        CommitState {
            meta,
            boot_id,
            kind_code,
            data_len,
            record_seq: r.record_seq,
            claim_seq: 1,
            // A state recovered from a fast record is in the page cache but maybe not on the disk.
            durable_claim_seq: if r.from_fast { 0 } else { 1 },
            fast_claim_seq: 1,
            next_durable_record_slot: r.next_durable_record_slot,
            // Opening leaves nothing to replay in either region (`StorePaths::open_writable` makes a
            // replayed state durable), so the first one is written from its start.
            log_region: super::meta::FAST_RECORD_SLOTS[0],
            log_pos: 0,
            log_switch_allowed: true,
            log_full: false,
            commit_in_flight: false,
            last_commit_error: None,
            failed_at: None,
            poisoned: None,
            unsynced_ack_since: None,
            acked_after_job: None,
        }
    }

    /// When the oldest acknowledged write that no durable record covers yet was acknowledged.
    pub fn oldest_unsynced_ack(&self) -> Option<std::time::Instant> {
        self.unsynced_ack_since
    }

    /// Why the video is poisoned (a data sync failed), if it is.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Something the metadata claims changed.
    pub fn bump(&mut self) {
        self.claim_seq += 1;
    }

    fn record(&mut self, payload: Vec<u8>) -> MetaRecord {
        self.record_seq += 1;
        MetaRecord {
            seq: self.record_seq,
            boot_id: self.boot_id,
            video_kind: self.kind_code,
            data_len: self.data_len,
            payload,
        }
    }

    /// Does the metadata (durable or fast) lag what is claimed in memory?
    pub fn fast_record_due(&self) -> bool {
        self.poisoned.is_none()
            && !self.log_full
            && self.claim_seq > self.fast_claim_seq.max(self.durable_claim_seq)
    }

    /// Append a fast (process-crash) entry to the log region: a plain pwrite into the page cache, no
    /// sync. `delta`: the payload is what changed since the last entry (upload slots); otherwise the
    /// whole state (live rings). Ok(false) if the region is full: the claims are then acknowledged by
    /// the next durable commit, which switches regions.
    pub fn write_fast_record(&mut self, payload: Vec<u8>, delta: bool) -> Result<bool, String> {
        if let Some(why) = &self.poisoned {
            return Err(format!("no fast record is written: {why}"));
        }
        let claim = self.claim_seq;
        let rec = self.record(payload);
        let bytes = if delta {
            super::meta::encode_delta(&rec)
        } else {
            super::meta::encode_record(&rec)
        }
        .map_err(|e| format!("encoding the fast record failed: {e}"))?;
        let end = self.log_pos + bytes.len() as u64;
        if end > self.meta.layout().log_region_len() {
            self.log_full = true;
            return Ok(false);
        }
        self.meta
            .write_log_entry(self.log_region, self.log_pos, &bytes)
            .map_err(|e| format!("writing the fast metadata record failed: {e}"))?;
        self.log_pos = end;
        self.fast_claim_seq = claim;
        let now = std::time::Instant::now();
        self.unsynced_ack_since.get_or_insert(now);
        if self.commit_in_flight {
            self.acked_after_job.get_or_insert(now);
        }
        Ok(true)
    }

    pub fn checkpoint_due(&self) -> bool {
        self.poisoned.is_none()
            && !self.commit_in_flight
            && self.claim_seq > self.durable_claim_seq
            && self
                .failed_at
                .is_none_or(|t| t.elapsed() >= COMMIT_RETRY_BACKOFF)
    }

    /// A durable commit job for `payload` (the current state), or None if one is in flight or
    /// nothing changed.
    pub fn commit_job(
        &mut self,
        id: &str,
        data: &Arc<File>,
        payload: Vec<u8>,
    ) -> Option<CommitJob> {
        if !self.checkpoint_due() {
            return None;
        }
        let claim = self.claim_seq;
        let rec = self.record(payload);
        // A record that outgrew its durable pair goes to a larger one (allocated by the worker).
        let record_slot = self.meta.layout().durable_slot_for(
            self.next_durable_record_slot,
            super::meta::HEADER_LEN + rec.payload.len(),
        );
        self.commit_in_flight = true;
        self.acked_after_job = None;
        if self.log_switch_allowed {
            // Every entry of the other region is older than the durable record that landed last.
            self.log_region = if self.log_region == super::meta::FAST_RECORD_SLOTS[0] {
                super::meta::FAST_RECORD_SLOTS[1]
            } else {
                super::meta::FAST_RECORD_SLOTS[0]
            };
            self.log_pos = 0;
            self.log_full = false;
            self.log_switch_allowed = false;
        }
        Some(CommitJob {
            video: id.to_string(),
            data: data.clone(),
            meta: self.meta.clone(),
            record_slot,
            record: rec,
            claim_seq: claim,
        })
    }

    /// Apply a finished job; true if it succeeded.
    pub fn commit_done(&mut self, done: &CommitDone) -> bool {
        self.commit_in_flight = false;
        match &done.result {
            Ok(()) => {
                self.durable_claim_seq = self.durable_claim_seq.max(done.claim_seq);
                self.next_durable_record_slot =
                    super::meta::next_durable_record_slot(Some(done.record_slot));
                self.last_commit_error = None;
                self.failed_at = None;
                self.log_switch_allowed = true;
                // What was acknowledged after the job's snapshot is still not durable.
                self.unsynced_ack_since = self.acked_after_job.take();
                true
            }
            Err(e) => {
                // The record slot that failed may be torn: the next attempt goes to the same one, so the
                // other durable record slot (the newest good record) is never overwritten.
                self.failed_at = Some(std::time::Instant::now());
                if let CommitFailure::DataSync(why) = e {
                    let why = format!(
                        "syncing its data file failed ({why}); it is unavailable for writes until \
                         vcache restarts and reopens it from its last durable record"
                    );
                    self.last_commit_error = Some(why.clone());
                    self.poisoned = Some(why);
                } else {
                    self.last_commit_error = Some(e.to_string());
                }
                false
            }
        }
    }

    /// Is the claim `claim_seq` covered as the given sync mode promises?
    pub fn claim_is_committed(&self, claim_seq: u64, durable: bool) -> bool {
        if durable {
            self.durable_claim_seq >= claim_seq
        } else {
            self.durable_claim_seq.max(self.fast_claim_seq) >= claim_seq
        }
    }

    /// Nothing claimed is waiting for a durable commit.
    /// (A poisoned video never settles: its claims since the last durable record are lost.)
    pub fn is_settled(&self) -> bool {
        !self.commit_in_flight && self.claim_seq <= self.durable_claim_seq
    }
}

#[cfg(test)]
mod tests {
    use super::super::meta::{self, BootId, MetaFile, RecordSlotState};
    use super::*;
    use std::time::Duration;

    const BOOT: BootId = [7; 16];

    fn eio(_: &File) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EIO))
    }

    /// A directory removed when dropped.
    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record(seq: u64) -> MetaRecord {
        MetaRecord {
            seq,
            boot_id: BOOT,
            video_kind: 2,
            data_len: 4096,
            payload: b"claims".to_vec(),
        }
    }

    /// Run one job through a worker that syncs data with `sync` and return its outcome.
    fn run_one(job: CommitJob, sync: SyncData) -> CommitDone {
        let mut poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let worker = CommitWorker::start_with_sync(waker, sync).expect("worker");
        assert!(worker.submit(job));
        let mut events = mio::Events::with_capacity(4);
        for _ in 0..100 {
            let mut done = worker.take_done();
            if let Some(d) = done.pop() {
                assert!(done.is_empty());
                return d;
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
        }
        panic!("the worker never reported the job");
    }

    #[test]
    fn a_failed_data_sync_poisons_the_video_and_writes_no_record() {
        let dir = Dir(std::env::temp_dir().join(format!("vcache-commit-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("dir");
        let mpath = dir.0.join("v.meta");
        let meta = Arc::new(MetaFile::open(&mpath, Some(1 << 30)).expect("meta"));
        meta.write_record_slot_synced(0, &record(1))
            .expect("first record");
        let data = Arc::new(File::create(dir.0.join("v.data")).expect("data"));
        let recovered = Recovered {
            record_seq: 1,
            from_fast: false,
            next_durable_record_slot: 1,
        };
        let mut state = CommitState::new(meta.clone(), BOOT, 2, 4096, recovered);
        state.bump();
        state
            .write_fast_record(b"fast".to_vec(), false)
            .expect("fast record");
        let job = state
            .commit_job("v", &data, b"durable".to_vec())
            .expect("job");
        let claim = job.claim_seq;
        let done = run_one(job, eio);
        assert!(
            matches!(&done.result, Err(CommitFailure::DataSync(_))),
            "{done:?}"
        );
        assert!(!state.commit_done(&done));
        let why = state.poisoned().expect("poisoned").to_string();
        assert!(why.contains("syncing its data file failed"), "{why}");
        // Nothing is acknowledged and no record is written from now on.
        assert!(!state.claim_is_committed(claim, true));
        state.bump();
        assert!(!state.fast_record_due());
        assert!(state.write_fast_record(b"later".to_vec(), false).is_err());
        assert!(!state.checkpoint_due());
        assert!(state.commit_job("v", &data, b"again".to_vec()).is_none());
        let scan = meta.scan(&BOOT).expect("scan");
        assert_eq!(scan.states[1], RecordSlotState::Empty, "no durable record");
        assert_eq!(
            scan.max_seq,
            Some(2),
            "only the first record and the fast one"
        );
        // The failure is on disk, for a restart and for `vcache check`.
        let marker = meta::read_sync_failed(&mpath).expect("marker");
        assert!(marker.contains("Input/output error"), "{marker}");
    }

    #[test]
    fn the_oldest_unsynced_acknowledgement_is_tracked_until_a_record_covers_it() {
        let dir =
            Dir(std::env::temp_dir().join(format!("vcache-commit-age-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("dir");
        let meta = Arc::new(MetaFile::open(&dir.0.join("v.meta"), Some(1 << 30)).expect("meta"));
        let data = Arc::new(File::create(dir.0.join("v.data")).expect("data"));
        let recovered = Recovered {
            record_seq: 1,
            from_fast: false,
            next_durable_record_slot: 1,
        };
        let mut state = CommitState::new(meta, BOOT, 2, 4096, recovered);
        let done = |job: CommitJob| CommitDone {
            video: job.video,
            claim_seq: job.claim_seq,
            record_slot: job.record_slot,
            result: Ok(()),
        };
        assert!(state.oldest_unsynced_ack().is_none());
        state.bump();
        assert!(state.write_fast_record(b"a".to_vec(), true).expect("fast"));
        let first = state.oldest_unsynced_ack().expect("an unsynced ack");
        let job = state
            .commit_job("v", &data, b"snapshot".to_vec())
            .expect("job");
        // Acknowledged while the commit runs: that commit does not cover it.
        state.bump();
        assert!(state.write_fast_record(b"b".to_vec(), true).expect("fast"));
        assert_eq!(state.oldest_unsynced_ack(), Some(first));
        assert!(state.commit_done(&done(job)));
        let second = state.oldest_unsynced_ack().expect("still one");
        assert!(second >= first);
        let job = state.commit_job("v", &data, b"all".to_vec()).expect("job");
        assert!(state.commit_done(&done(job)));
        assert!(state.oldest_unsynced_ack().is_none());
    }

    #[test]
    fn a_successful_commit_writes_its_record() {
        let dir =
            Dir(std::env::temp_dir().join(format!("vcache-commit-ok-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("dir");
        let mpath = dir.0.join("v.meta");
        let meta = Arc::new(MetaFile::open(&mpath, Some(1 << 30)).expect("meta"));
        let data = Arc::new(File::create(dir.0.join("v.data")).expect("data"));
        let job = CommitJob {
            video: "v".into(),
            data,
            meta: meta.clone(),
            record_slot: 1,
            record: record(3),
            claim_seq: 2,
        };
        let done = run_one(job, fdatasync);
        assert_eq!(done.result, Ok(()));
        assert_eq!(
            meta.load(&BOOT).expect("load").map(|(s, r)| (s, r.seq)),
            Some((1, 3))
        );
        assert!(meta::read_sync_failed(&mpath).is_none());
    }

    #[test]
    fn a_record_that_outgrows_its_durable_pair_is_committed_to_a_larger_one() {
        let dir =
            Dir(std::env::temp_dir().join(format!("vcache-commit-grow-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).expect("dir");
        let meta = Arc::new(MetaFile::open(&dir.0.join("v.meta"), Some(1 << 20)).expect("meta"));
        meta.write_record_slot_synced(0, &record(1)).expect("first");
        let data = Arc::new(File::create(dir.0.join("v.data")).expect("data"));
        let recovered = Recovered {
            record_seq: 1,
            from_fast: false,
            next_durable_record_slot: 1,
        };
        let mut state = CommitState::new(meta.clone(), BOOT, 2, 4096, recovered);
        let commit = |state: &mut CommitState, payload: Vec<u8>| {
            state.bump();
            let job = state.commit_job("v", &data, payload).expect("job");
            let slot = job.record_slot;
            let done = run_one(job, fdatasync);
            assert!(state.commit_done(&done), "{done:?}");
            slot
        };
        assert_eq!(commit(&mut state, vec![1; 100]), 1, "fits the first pair");
        let big = commit(&mut state, vec![2; 10_000]);
        assert_eq!(big, 4, "to the second pair, 16 KiB slots");
        assert_eq!(
            commit(&mut state, vec![3; 100]),
            5,
            "the other slot of that pair"
        );
        assert_eq!(
            commit(&mut state, vec![4; 100]),
            4,
            "never back to the first pair"
        );
        let (slot, rec) = meta.load(&BOOT).expect("load").expect("a record");
        assert_eq!((slot, rec.payload), (4, vec![4; 100]));
    }
}
