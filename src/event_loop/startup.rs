//! Opening the configured videos at start-up, off the event loop, so that the loop serves at once and
//! the time to the first response does not grow with the catalogue. A `vcache-open` thread opens the
//! videos in config order — a video a request waits for goes first (`Startup::want`) — and a video
//! whose data file must be synced before its record is trusted (log entries to replay after a process
//! crash, or a failed data sync) is handed to a `vcache-recover` thread, so that only that video waits
//! for its sync. Each result reaches the loop through the waker as soon as it is ready.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::config::VideoConfig;
use crate::store::StorePaths;
use crate::store::commit::Opened;

/// What the start-up threads report to the loop.
pub enum Event {
    /// The video needs a data sync before it is trusted: the recovery thread has it.
    Recovering(String),
    Opened(Opened),
}

/// Results waiting for the loop (appended by the threads, taken by the loop after a wake-up).
type Outbox = Arc<Mutex<Vec<Event>>>;

fn put(out: &Outbox, event: Event, waker: &mio::Waker) {
    // A panic while holding the lock leaves a Vec that is still whole: keep using it.
    out.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(event);
    if let Err(e) = waker.wake() {
        log::error!("the start-up opener could not wake the event loop: {e}");
    }
}

/// The start-up threads, while any video is still being opened.
pub struct Startup {
    want_tx: Option<Sender<String>>,
    out: Outbox,
    opener: Option<JoinHandle<()>>,
}

impl Startup {
    /// Start opening `videos` (in this order, wanted ones first).
    pub fn start(
        videos: Vec<VideoConfig>,
        paths: StorePaths,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Startup> {
        let out: Outbox = Arc::new(Mutex::new(Vec::new()));
        let (want_tx, want_rx) = mpsc::channel();
        let thread_out = out.clone();
        let opener = std::thread::Builder::new()
            .name("vcache-open".into())
            .spawn(move || open_all(videos.into(), paths, want_rx, thread_out, waker))?;
        Ok(Startup {
            want_tx: Some(want_tx),
            out,
            opener: Some(opener),
        })
    }

    /// A request waits for this video: open it next (if it is not opened already).
    pub fn want(&self, id: &str) {
        if let Some(tx) = &self.want_tx {
            let _ = tx.send(id.to_string());
        }
    }

    /// Everything reported since the last call.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(
            &mut *self
                .out
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Stop opening (shutdown): the video being opened is finished, the rest are not opened. Waits for
    /// the threads, so that no file is opened or written after this returns.
    pub fn stop(mut self) -> Vec<Event> {
        self.want_tx = None;
        if let Some(h) = self.opener.take() {
            let _ = h.join();
        }
        self.take()
    }
}

/// The `vcache-open` thread: open each video, a wanted one first; hand the ones that need a data sync
/// to the recovery thread. Ends when every video is handled or the loop stops it.
fn open_all(
    mut queue: VecDeque<VideoConfig>,
    paths: StorePaths,
    want: Receiver<String>,
    out: Outbox,
    waker: Arc<mio::Waker>,
) {
    let (recover_tx, recover_rx) = mpsc::channel::<VideoConfig>();
    let (r_paths, r_out, r_waker) = (paths.clone(), out.clone(), waker.clone());
    let recovery = std::thread::Builder::new()
        .name("vcache-recover".into())
        .spawn(move || {
            for v in recover_rx {
                let result = r_paths.open_video(&v, None).map(Box::new);
                let opened = Opened {
                    video: v.id,
                    result,
                };
                put(&r_out, Event::Opened(opened), &r_waker);
            }
        });
    let mut recover_tx = match recovery {
        Ok(handle) => Some((recover_tx, handle)),
        Err(e) => {
            log::warn!("cannot start the recovery thread ({e}); recovering videos open in turn");
            None
        }
    };
    loop {
        let wanted = match want.try_recv() {
            Ok(id) => Some(id),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        let next = match wanted {
            Some(id) => match queue.iter().position(|v| v.id == id) {
                Some(at) => queue.remove(at),
                None => continue,
            },
            None => queue.pop_front(),
        };
        let Some(v) = next else { break };
        if let Some((tx, _)) = &recover_tx
            && paths.needs_recovery(&v)
        {
            put(&out, Event::Recovering(v.id.clone()), &waker);
            let _ = tx.send(v);
            continue;
        }
        let result = paths.open_video(&v, None).map(Box::new);
        put(
            &out,
            Event::Opened(Opened {
                video: v.id,
                result,
            }),
            &waker,
        );
    }
    if let Some((tx, handle)) = recover_tx.take() {
        drop(tx);
        let _ = handle.join();
    }
}
