//! The space thread: allocates fill blocks of sparse origin data files before they are fetched into,
//! punches evicted ones out, and writes the recency file — blocking file-system calls that must not
//! stall the event loop, nor wait behind a long `fdatasync` on the commit thread. Results go back
//! through a shared list and the loop's waker.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::store::data_file::{allocate_range, punch_range};

/// What the space thread does.
pub enum SpaceJob {
    /// Allocate bytes [offset, offset + len) of `file` (block `block` of `video`).
    Allocate {
        video: String,
        block: u64,
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// Punch bytes [offset, offset + len) of `file` out: no durable record claims them any more.
    Punch {
        video: String,
        block: u64,
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// Write `bytes` to `path` through a temporary file and a rename (not synced: it is a hint).
    Save { path: PathBuf, bytes: Vec<u8> },
}

/// The outcome of an `Allocate` or `Punch`.
#[derive(Debug)]
pub struct SpaceDone {
    pub video: String,
    pub block: u64,
    pub punch: bool,
    pub result: Result<(), String>,
}

pub struct SpaceWorker {
    tx: Option<Sender<SpaceJob>>,
    out: Arc<Mutex<Vec<SpaceDone>>>,
    handle: Option<JoinHandle<()>>,
}

impl SpaceWorker {
    pub fn start(waker: Arc<mio::Waker>) -> std::io::Result<SpaceWorker> {
        let (tx, rx) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let worker_out = out.clone();
        let handle = std::thread::Builder::new()
            .name("vcache-space".into())
            .spawn(move || run(rx, worker_out, waker))?;
        Ok(SpaceWorker {
            tx: Some(tx),
            out,
            handle: Some(handle),
        })
    }

    /// Queue a job; false if the thread is gone.
    pub fn submit(&self, job: SpaceJob) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Results since the last call.
    pub fn take_done(&self) -> Vec<SpaceDone> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *out)
    }

    /// Finish every queued job (a last recency save) and stop the thread.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(rx: Receiver<SpaceJob>, out: Arc<Mutex<Vec<SpaceDone>>>, waker: Arc<mio::Waker>) {
    while let Ok(job) = rx.recv() {
        let (video, block, punch, file, offset, len) = match job {
            SpaceJob::Allocate {
                video,
                block,
                file,
                offset,
                len,
            } => (video, block, false, file, offset, len),
            SpaceJob::Punch {
                video,
                block,
                file,
                offset,
                len,
            } => (video, block, true, file, offset, len),
            SpaceJob::Save { path, bytes } => {
                if let Err(e) = save(&path, &bytes) {
                    log::warn!("cannot write {}: {e}", path.display());
                }
                continue;
            }
        };
        let result = match punch {
            true => punch_range(&file, offset, len),
            false => allocate_range(&file, offset, len),
        };
        let done = SpaceDone {
            video,
            block,
            punch,
            result: result.map_err(|e| e.to_string()),
        };
        out.lock().unwrap_or_else(|p| p.into_inner()).push(done);
        if let Err(e) = waker.wake() {
            log::error!("the space thread could not wake the event loop: {e}");
        }
    }
}

fn save(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
