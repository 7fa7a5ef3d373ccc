//! The event loop: one mio thread that owns every socket. It accepts connections (refusing cleanly past
//! `limits.max_connections`), drives each connection's state machine on readiness, wakes connections that
//! wait for bytes or commits, writes fast metadata records, hands durable commits to the commit worker and
//! takes its answers through a `mio::Waker`, runs the checkpoint timer and timeouts, reloads the config on
//! SIGHUP and shuts down gracefully on SIGTERM/SIGINT.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{self, Config, SyncMode};
use crate::conn::{Conn, Ctx, Next, SendPath};
use crate::metrics::Metrics;
use crate::service::{self, SignalPipes};
use crate::store::commit::CommitWorker;
use crate::store::{Store, VideoProblem};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIG_STOP: Token = Token(2);
const SIG_RELOAD: Token = Token(3);
const FIRST_CONN: usize = 16;
/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Rounds of wake-ups processed per loop iteration (each round drives the connections woken by the last).
const MAX_WAKE_ROUNDS: usize = 8;

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    store: Store,
    cfg: Config,
    config_path: Option<PathBuf>,
    problems: Vec<VideoProblem>,
    worker: Option<CommitWorker>,
    signals: SignalPipes,
    metrics: Metrics,
    boundary: String,
    send_path: SendPath,
    wake: Vec<Token>,
    shutdown_deadline: Option<Instant>,
    last_checkpoint: Instant,
    last_sweep: Instant,
    watchdog: Option<(Duration, Instant)>,
}

impl Server {
    pub fn new(
        cfg: Config,
        config_path: Option<PathBuf>,
        store: Store,
        problems: Vec<VideoProblem>,
        listener: std::net::TcpListener,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut signals = service::install_signal_pipes()?;
        poll.registry()
            .register(&mut signals.stop, SIG_STOP, Interest::READABLE)?;
        poll.registry()
            .register(&mut signals.reload, SIG_RELOAD, Interest::READABLE)?;
        let worker = CommitWorker::start(waker)?;
        let send_path = match std::env::var("VCACHE_SEND_PATH").as_deref() {
            Ok("mmap") => SendPath::MapSlice,
            _ => SendPath::Sendfile,
        };
        let now = Instant::now();
        Ok(Server {
            poll,
            listener: Some(listener),
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            store,
            cfg,
            config_path,
            problems,
            worker: Some(worker),
            signals,
            metrics: Metrics::default(),
            boundary: crate::http::range::multipart_boundary(),
            send_path,
            wake: Vec::new(),
            shutdown_deadline: None,
            last_checkpoint: now,
            last_sweep: now,
            watchdog: service::watchdog_interval().map(|d| (d, now)),
        })
    }

    /// Serve until SIGTERM/SIGINT, then commit everything received and return.
    pub fn run(mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        service::sd_notify("READY=1\nSTATUS=serving");
        loop {
            match self.poll.poll(&mut events, Some(SWEEP_EVERY)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    WAKER => self.collect_commits(),
                    SIG_STOP => {
                        if service::drain_signal_pipe(&mut self.signals.stop) {
                            self.begin_shutdown(now);
                        }
                    }
                    SIG_RELOAD => {
                        if service::drain_signal_pipe(&mut self.signals.reload) {
                            self.reload();
                        }
                    }
                    token => {
                        if let Some(Some(c)) = self.conns.get_mut(token.0.wrapping_sub(FIRST_CONN))
                        {
                            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                                c.readable = true;
                            }
                            if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                                c.writable = true;
                            }
                            self.drive(token, now);
                        }
                    }
                }
            }
            self.after_events(now);
            if let Some(deadline) = self.shutdown_deadline {
                self.close_idle(now);
                if self.open == 0 || now >= deadline {
                    if self.open > 0 {
                        log::warn!(
                            "shutdown: cutting {} connections after limits.shutdown_timeout_ms",
                            self.open
                        );
                    }
                    break;
                }
            }
        }
        self.finish()
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        log::info!(
            "shutting down: no new connections, {} open ones get {} ms to finish",
            self.open,
            self.cfg.server.limits.shutdown_timeout_ms
        );
        service::sd_notify("STOPPING=1");
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.shutdown_deadline =
            Some(now + Duration::from_millis(self.cfg.server.limits.shutdown_timeout_ms));
    }

    fn close_idle(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let idle = matches!(&self.conns[i], Some(c) if c.is_idle());
            if idle {
                self.close(Token(i + FIRST_CONN), now);
            }
        }
    }

    /// Commit everything received, wait for it, and stop the worker.
    fn finish(mut self) -> Result<(), String> {
        let now = Instant::now();
        for i in 0..self.conns.len() {
            if self.conns[i].is_some() {
                self.close(Token(i + FIRST_CONN), now);
            }
        }
        self.collect_commits();
        let Some(worker) = self.worker.take() else {
            return Ok(());
        };
        // One more commit per video once any in-flight commit is done.
        loop {
            let mut pending = false;
            for (id, v) in self.store.videos.iter_mut() {
                if let Some(slot) = v.slot_mut() {
                    if slot.commit_in_flight {
                        pending = true;
                    } else if let Some(job) = slot.commit_job(id) {
                        worker.submit(job);
                        pending = true;
                    }
                }
            }
            if !pending {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            for done in worker.take_done() {
                self.apply_commit(done);
            }
        }
        let mut failures = 0;
        for done in worker.finish() {
            if done.result.is_err() {
                failures += 1;
            }
            self.apply_commit(done);
        }
        if failures > 0 {
            return Err(format!(
                "{failures} final commits failed; see the log above"
            ));
        }
        log::info!("shutdown complete: everything received is committed");
        Ok(())
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.open >= self.cfg.server.limits.max_connections {
                        self.metrics.connections_refused += 1;
                        let msg = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 61\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503: too many connections (limits.max_connections); try again\n";
                        let _ = stream.write(msg);
                        log::warn!("refused {peer}: limits.max_connections reached");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let index = match self.free.pop() {
                        Some(i) => i,
                        None => {
                            self.conns.push(None);
                            self.conns.len() - 1
                        }
                    };
                    let token = Token(index + FIRST_CONN);
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::error!("cannot register {peer}: {e}");
                        self.free.push(index);
                        continue;
                    }
                    self.conns[index] =
                        Some(Conn::new(stream, token, peer, now, &self.cfg.server.limits));
                    self.open += 1;
                    self.metrics.connections_accepted += 1;
                    self.drive(token, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the queue; try again next round.
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn drive(&mut self, token: Token, now: Instant) {
        self.with_conn(token, now, |c, ctx| c.drive(ctx));
    }

    /// Run `f` on one connection with a context over the rest of the server; close it if it says so.
    fn with_conn(
        &mut self,
        token: Token,
        now: Instant,
        f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> Next,
    ) {
        let index = token.0.wrapping_sub(FIRST_CONN);
        let Some(slot) = self.conns.get_mut(index) else {
            return;
        };
        let Some(mut conn) = slot.take() else { return };
        // /metrics needs the open count; everything else goes through the context.
        let mut ctx = Ctx {
            store: &mut self.store,
            cfg: &self.cfg,
            problems: &self.problems,
            now,
            boundary: &self.boundary,
            send_path: self.send_path,
            shutting_down: self.shutdown_deadline.is_some(),
            metrics: &mut self.metrics,
            wake: &mut self.wake,
            open_connections: self.open,
        };
        let next = f(&mut conn, &mut ctx);
        match next {
            Next::Keep => self.conns[index] = Some(conn),
            Next::Close => {
                conn.release(&mut self.store);
                let _ = self.poll.registry().deregister(&mut conn.stream);
                self.free.push(index);
                self.open -= 1;
            }
        }
    }

    fn close(&mut self, token: Token, _now: Instant) {
        let index = token.0.wrapping_sub(FIRST_CONN);
        if let Some(Some(mut conn)) = self.conns.get_mut(index).map(Option::take) {
            conn.release(&mut self.store);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.free.push(index);
            self.open -= 1;
        }
    }

    fn process_wakes(&mut self, now: Instant) {
        for _ in 0..MAX_WAKE_ROUNDS {
            if self.wake.is_empty() {
                return;
            }
            let mut tokens = std::mem::take(&mut self.wake);
            tokens.sort_unstable();
            tokens.dedup();
            for t in tokens {
                self.drive(t, now);
            }
        }
    }

    fn after_events(&mut self, now: Instant) {
        self.process_wakes(now);
        let interval_mode = self.cfg.server.sync == SyncMode::Interval;
        // Writes waiting for their acknowledgement: one fast record per video covers them all (interval
        // mode); durable waiters get a commit job (always mode, DELETE).
        let mut jobs = Vec::new();
        for (id, v) in self.store.videos.iter_mut() {
            if v.commit_waiters.is_empty() {
                continue;
            }
            let Some(slot) = v.slot_mut() else { continue };
            if interval_mode && !slot.delete_pending && slot.fast_record_due() {
                match slot.write_fast_record() {
                    Ok(()) => self.metrics.fast_records += 1,
                    Err(e) => {
                        log::error!("video {id}: {e}");
                        slot.last_commit_error = Some(e);
                    }
                }
                self.wake.append(&mut v.commit_waiters);
                continue;
            }
            if let Some(job) = slot.commit_job(id) {
                jobs.push(job);
            }
        }
        // The checkpoint timer: every dirty video gets a durable commit at least this often.
        let interval = Duration::from_millis(self.cfg.server.checkpoint_interval_ms);
        if now.duration_since(self.last_checkpoint) >= interval {
            self.last_checkpoint = now;
            for (id, v) in self.store.videos.iter_mut() {
                if let Some(slot) = v.slot_mut() {
                    if let Some(job) = slot.commit_job(id) {
                        jobs.push(job);
                    }
                }
            }
        }
        if let Some(worker) = &self.worker {
            for job in jobs {
                if !worker.submit(job) {
                    log::error!("the commit worker is gone");
                }
            }
        }
        self.process_wakes(now);
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep_timeouts(now);
        }
        if let Some((every, last)) = &mut self.watchdog {
            if now.duration_since(*last) >= *every {
                *last = now;
                service::sd_notify("WATCHDOG=1");
            }
        }
    }

    fn sweep_timeouts(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let expired = matches!(&self.conns[i], Some(c) if c.deadline <= now);
            if expired {
                self.with_conn(Token(i + FIRST_CONN), now, |c, ctx| c.on_timeout(ctx));
            }
        }
    }

    fn collect_commits(&mut self) {
        let Some(worker) = &self.worker else { return };
        for done in worker.take_done() {
            self.apply_commit(done);
        }
    }

    fn apply_commit(&mut self, done: crate::store::commit::CommitDone) {
        match &done.result {
            Ok(()) => self.metrics.commits += 1,
            Err(e) => {
                self.metrics.commit_failures += 1;
                log::error!("video {}: durable commit failed: {e}", done.video);
            }
        }
        if let Some(v) = self.store.get_mut(&done.video) {
            if let Some(slot) = v.slot_mut() {
                slot.commit_done(&done);
            }
            self.wake.append(&mut v.commit_waiters);
        }
    }

    /// SIGHUP: load the config again and apply it as a diff. A config that fails to load changes nothing.
    fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            log::warn!("SIGHUP: running on the embedded default config; nothing to reload");
            return;
        };
        service::sd_notify("RELOADING=1");
        match config::load(&path) {
            Err(e) => log::error!("reload refused, the running config stays: {e}"),
            Ok(new) => self.apply_config(new),
        }
        service::sd_notify("READY=1");
    }

    fn apply_config(&mut self, new: Config) {
        if new.server.listen != self.cfg.server.listen {
            log::warn!("reload: a new listen address takes effect only after a restart");
        }
        if new.server.data_dir != self.cfg.server.data_dir {
            log::warn!("reload: a new data_dir takes effect only after a restart");
        }
        let mut added = 0;
        let mut removed = 0;
        let mut changed = 0;
        // Removed videos, and videos whose kind or size changed (they are reopened).
        let keep: Vec<String> = self.store.videos.keys().cloned().collect();
        for id in keep {
            let same = new.videos.iter().find(|v| v.id == id).is_some_and(|nv| {
                self.store
                    .videos
                    .get(&id)
                    .is_some_and(|old| old.cfg.kind == nv.kind)
            });
            if !same {
                if let Some(v) = self.store.videos.get(&id) {
                    if v.slot()
                        .is_some_and(|s| s.commit_in_flight || s.checkpoint_due())
                    {
                        log::warn!(
                            "reload: video {id} has uncommitted changes; it stays until they are committed"
                        );
                        continue;
                    }
                }
                self.store.videos.remove(&id);
                removed += 1;
            }
        }
        let mut problems = Vec::new();
        for nv in &new.videos {
            match self.store.videos.get_mut(&nv.id) {
                Some(v) => {
                    if v.cfg != *nv {
                        changed += 1;
                        let ct = nv
                            .content_type
                            .clone()
                            .unwrap_or_else(|| v.content_type.clone());
                        v.content_type = ct;
                        v.cfg = nv.clone();
                    }
                }
                None => match self.store.open_video(nv) {
                    Ok(v) => {
                        self.store.videos.insert(nv.id.clone(), v);
                        added += 1;
                    }
                    Err(message) => {
                        log::error!("reload: video {}: {message}", nv.id);
                        problems.push(VideoProblem {
                            id: nv.id.clone(),
                            message,
                        });
                    }
                },
            }
        }
        self.problems = problems;
        // Listen address and data_dir stay as they were (above); everything else applies to new requests.
        let listen = self.cfg.server.listen;
        let data_dir = self.cfg.server.data_dir.clone();
        self.cfg = new;
        self.cfg.server.listen = listen;
        self.cfg.server.data_dir = data_dir;
        log::info!("reloaded config: {added} videos added, {removed} removed, {changed} changed");
    }
}
