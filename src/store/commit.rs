//! The commit worker: the one thread that syncs. It takes durable-commit jobs from the event loop,
//! syncs every data file of a batch first, then writes each job's metadata record into its durable slot
//! and syncs the metadata files, and reports back through a `mio::Waker`. Jobs that arrive while a batch
//! is being synced form the next batch, so writes that finish close together share one sync (group commit).

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::meta::{MetaFile, MetaRecord};

/// One durable commit: sync `data`, then write `record` into durable `slot` of `meta` and sync it.
pub struct CommitJob {
    pub video: String,
    pub data: Arc<File>,
    pub meta: Arc<MetaFile>,
    pub slot: usize,
    pub record: MetaRecord,
    /// The claim sequence number the record covers: every claim up to it is durable once this is done.
    pub claim_seq: u64,
}

/// The outcome of one job, reported to the event loop.
#[derive(Debug)]
pub struct CommitDone {
    pub video: String,
    pub claim_seq: u64,
    pub slot: usize,
    pub result: Result<(), String>,
}

pub struct CommitWorker {
    tx: Option<Sender<CommitJob>>,
    done: Arc<Mutex<Vec<CommitDone>>>,
    handle: Option<JoinHandle<()>>,
}

impl CommitWorker {
    pub fn start(waker: Arc<mio::Waker>) -> std::io::Result<CommitWorker> {
        let (tx, rx) = mpsc::channel();
        let done = Arc::new(Mutex::new(Vec::new()));
        let done2 = done.clone();
        let handle = std::thread::Builder::new()
            .name("vcache-commit".into())
            .spawn(move || run(rx, done2, waker))?;
        Ok(CommitWorker {
            tx: Some(tx),
            done,
            handle: Some(handle),
        })
    }

    /// Queue a job. Returns false if the worker is gone (it never exits while the sender lives).
    pub fn submit(&self, job: CommitJob) -> bool {
        match &self.tx {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    /// Everything finished since the last call.
    pub fn take_done(&self) -> Vec<CommitDone> {
        match self.done.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
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

fn run(rx: Receiver<CommitJob>, done: Arc<Mutex<Vec<CommitDone>>>, waker: Arc<mio::Waker>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let results = commit_batch(&batch);
        {
            let mut d = match done.lock() {
                Ok(d) => d,
                Err(p) => p.into_inner(),
            };
            for (job, result) in batch.into_iter().zip(results) {
                d.push(CommitDone {
                    video: job.video,
                    claim_seq: job.claim_seq,
                    slot: job.slot,
                    result,
                });
            }
        }
        if let Err(e) = waker.wake() {
            log::error!("commit worker could not wake the event loop: {e}");
        }
    }
}

/// The commit protocol for a batch: (1) sync every data file, (2) write each record into its durable
/// slot, (3) sync every metadata file. A job whose data sync failed writes no metadata.
fn commit_batch(batch: &[CommitJob]) -> Vec<Result<(), String>> {
    let mut data_failed: HashSet<i32> = HashSet::new();
    let mut seen: HashSet<i32> = HashSet::new();
    for job in batch {
        let fd = job.data.as_raw_fd();
        if seen.insert(fd)
            && let Err(e) = fdatasync(&job.data)
        {
            log::error!("video {}: syncing its data file failed: {e}", job.video);
            data_failed.insert(fd);
        }
    }
    let mut results: Vec<Result<(), String>> = Vec::with_capacity(batch.len());
    for job in batch {
        if data_failed.contains(&job.data.as_raw_fd()) {
            results.push(Err("syncing the data file failed".into()));
            continue;
        }
        results.push(
            job.meta
                .write_slot(job.slot, &job.record)
                .map_err(|e| format!("writing the metadata record failed: {e}")),
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
            *result = Err(format!("syncing the metadata file failed: {e}"));
        }
    }
    results
}
