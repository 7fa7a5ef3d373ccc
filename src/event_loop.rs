//! The event loop: one mio thread that owns every socket. It accepts connections (refusing cleanly past
//! `limits.max_connections`), drives each connection's state machine on readiness, wakes connections that
//! wait for bytes or commits, writes fast metadata records, hands durable commits to the commit worker and
//! takes its answers through a `mio::Waker`, runs the checkpoint timer and timeouts, reloads the config on
//! SIGHUP and shuts down gracefully on SIGTERM/SIGINT.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{self, Config, SyncMode};
use crate::conn::access_log::AccessLog;
use crate::conn::{Conn, Ctx, Next, SendPath, Spare};
use crate::metrics::Metrics;
use crate::origin::Fetcher;
use crate::relay::{Relays, Turn};
use crate::service::{self, SignalPipes};
use std::sync::mpsc::Receiver;

use crate::store::ResolvedOrigins;
use crate::store::commit::CommitWorker;
use crate::store::origin::Phase;
use crate::store::{Store, VideoProblem};

mod reopen;
mod space;
mod startup;
use reopen::{Reopen, Report};
use startup::Startup;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIG_STOP: Token = Token(2);
const SIG_RELOAD: Token = Token(3);
const FIRST_CONN: usize = 16;
/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Attempts at each video's final commit during shutdown before giving up on it.
const FINAL_COMMIT_ATTEMPTS: usize = 3;
/// At most one "checkpoints are behind" warning this often.
const BEHIND_WARNING_EVERY: Duration = Duration::from_secs(10);
/// Rounds of wake-ups processed per loop iteration (each round drives the connections woken by the last).
const MAX_WAKE_ROUNDS: usize = 8;

/// The answer to a connection past `limits.max_connections`, written once without reading its request.
fn too_many_connections_response() -> String {
    let body = crate::http::response::problem_body(
        503,
        "too many connections (limits.max_connections); try again",
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\n\
         Retry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Framing buffers lent to the connection being driven (`Conn::borrow_buffers`).
    spare: Spare,
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
    /// SIGTERM with `cluster.drain_ms`: when the drain ends and the shutdown begins.
    drain_until: Option<Instant>,
    last_checkpoint: Instant,
    last_sweep: Instant,
    watchdog: Option<(Duration, Instant)>,
    fetcher: Fetcher,
    /// Channels that follow a channel on another node (`upstream`).
    relays: Relays,
    waker: Arc<Waker>,
    /// A reload being loaded (parsed, origins resolved) on its own thread.
    reload_rx: Option<Receiver<ReloadLoaded>>,
    /// A SIGHUP arrived while a reload was loading or being applied: load again after it.
    reload_again: bool,
    /// A reload applied but for the videos it added, which the commit worker is still opening.
    pending_reload: Option<PendingReload>,
    /// When the log last said that checkpoints fall behind (rate limit).
    last_behind_warning: Option<Instant>,
    /// Configured videos that could not be opened (locked by an old process, or failing): tried again.
    reopen: Reopen,
    access_log: AccessLog,
    /// When each video's durable commit in flight was submitted (for the commit-duration histogram).
    commit_submitted: std::collections::HashMap<String, Instant>,
    /// The space thread (allocations and punches of origin blocks, the recency file).
    space_worker: Option<crate::store::space::worker::SpaceWorker>,
    space_looked: Instant,
    recency_saved: Instant,
    /// Origin videos whose files (and first block) the budget granted: bytes, until created.
    create_granted: std::collections::HashMap<String, u64>,
    /// The threads opening the configured videos at start-up (`Store::opening`), and since when.
    startup: Option<(Startup, Instant)>,
}

/// A config loaded for a reload, with its origin hosts resolved and its access log opened, or why it
/// was refused.
type ReloadLoaded = Result<(Config, ResolvedOrigins, AccessLog), String>;

/// The access log a config names (a file is opened for appending).
fn open_access_log(cfg: &Config) -> Result<AccessLog, String> {
    AccessLog::open(&cfg.server.access_log, cfg.server.access_log_format).map_err(|e| {
        format!(
            "cannot open the access log {:?}: {e} ([server] access_log)",
            cfg.server.access_log
        )
    })
}

/// What a reload being applied is waiting for (videos it added, opened on the commit worker: creating a
/// data file is a fallocate and metadata syncs) and what its final log line reports.
#[derive(Default)]
struct PendingReload {
    opening: BTreeSet<String>,
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
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
        let worker = CommitWorker::start(waker.clone())?;
        let space_worker = crate::store::space::worker::SpaceWorker::start(waker.clone())?;
        let send_path = match std::env::var("VCACHE_SEND_PATH").as_deref() {
            Ok("mmap") => SendPath::MapSlice,
            Ok("sendfile") => SendPath::Sendfile,
            _ => SendPath::Auto,
        };
        let now = Instant::now();
        let mut fetcher = Fetcher::new(cfg.server.origin_connections, cfg.server.origin_timeout_ms);
        fetcher
            .peers
            .configure(&cfg.cluster, cfg.server.read_token.as_deref());
        let access_log = open_access_log(&cfg).map_err(io::Error::other)?;
        let mut reopen = Reopen::new(Duration::from_millis(cfg.server.limits.shutdown_timeout_ms));
        for p in &problems {
            log_reopen(&p.id, reopen.failed(&p.id, &p.message, now), &p.message);
        }
        let startup = match store.opening.is_empty() {
            true => None,
            false => {
                let videos = cfg
                    .videos
                    .iter()
                    .filter(|v| store.opening.contains_key(&v.id))
                    .cloned()
                    .collect();
                Some((Startup::start(videos, store.paths(), waker.clone())?, now))
            }
        };
        Ok(Server {
            poll,
            listener: Some(listener),
            conns: Vec::new(),
            free: Vec::new(),
            spare: Spare::default(),
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
            drain_until: None,
            last_checkpoint: now,
            last_sweep: now,
            watchdog: service::watchdog_interval().map(|d| (d, now)),
            fetcher,
            relays: Relays::default(),
            waker,
            reload_rx: None,
            reload_again: false,
            pending_reload: None,
            last_behind_warning: None,
            reopen,
            access_log,
            commit_submitted: std::collections::HashMap::new(),
            space_worker: Some(space_worker),
            space_looked: now,
            recency_saved: now,
            create_granted: std::collections::HashMap::new(),
            startup,
        })
    }

    /// Serve until SIGTERM/SIGINT, then commit everything received and return.
    pub fn run(mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        service::sd_notify("READY=1\nSTATUS=serving");
        if self.startup.is_none() {
            log::info!(
                "start-up: {} of {} configured videos opened",
                self.store.videos.len(),
                self.cfg.videos.len()
            );
        }
        let now = Instant::now();
        (self.relays).configure(&self.cfg, &mut self.store, self.poll.registry(), now);
        loop {
            // Connections queued to be driven again (a budget ran out) must not wait for a timeout.
            let timeout = if self.wake.is_empty()
                && !self.relays.wants_turn()
                && !self.fetcher.wants_turn()
            {
                SWEEP_EVERY
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    WAKER => {
                        self.collect_space();
                        self.collect_startup(now);
                        self.collect_commits();
                        self.collect_reload();
                        self.collect_opened();
                    }
                    SIG_STOP => {
                        if service::drain_signal_pipe(&mut self.signals.stop) {
                            self.stop_signal(now);
                        }
                    }
                    SIG_RELOAD => {
                        if service::drain_signal_pipe(&mut self.signals.reload) {
                            self.reload();
                        }
                    }
                    token if Relays::owns(token) => {
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                        let mut turn = Turn {
                            store: &mut self.store,
                            registry: self.poll.registry(),
                            wake: &mut self.wake,
                            now,
                        };
                        self.relays.on_event(token, readable, writable, &mut turn);
                    }
                    token if Fetcher::owns(token) => {
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                        self.fetcher.on_event(
                            token,
                            readable,
                            writable,
                            self.poll.registry(),
                            &mut self.store,
                            &mut self.wake,
                            now,
                        );
                    }
                    token => {
                        if let Some(Some(c)) = self.conns.get_mut(token.0.wrapping_sub(FIRST_CONN))
                        {
                            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                                c.set_readable();
                            }
                            if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                                c.set_writable();
                            }
                            self.drive(token, now);
                        }
                    }
                }
            }
            self.after_events(now);
            if self.drain_until.is_some_and(|t| now >= t) {
                self.begin_shutdown(now);
            }
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

    /// SIGTERM/SIGINT: with `[cluster] drain_ms`, first drain — `/readyz` answers 503 while everything
    /// is still served, so a balancer's health check moves traffic away before the listener closes; a
    /// second signal while draining stops at once. Without it, stop at once.
    fn stop_signal(&mut self, now: Instant) {
        let drain = self.cfg.cluster.drain_ms;
        if self.shutdown_deadline.is_some() {
            return;
        }
        if self.drain_until.is_some() || drain == 0 {
            self.begin_shutdown(now);
            return;
        }
        log::info!(
            "draining: /readyz answers 503 for {drain} ms (cluster.drain_ms), then shutting down"
        );
        service::sd_notify("STATUS=draining");
        self.drain_until = Some(now + Duration::from_millis(drain));
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
        self.drain_until = None;
        self.shutdown_deadline =
            Some(now + Duration::from_millis(self.cfg.server.limits.shutdown_timeout_ms));
        // Every connection sees the shutdown at once: live followers and publishers end now (streams
        // have no end to wait for), a lingering close is shortened.
        for (i, c) in self.conns.iter().enumerate() {
            if c.is_some() {
                self.wake.push(Token(i + FIRST_CONN));
            }
        }
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
        if let Some((startup, _)) = self.startup.take() {
            // Videos opened meanwhile were not served: nothing was written to them but their open.
            let left = self.store.opening.len();
            drop(startup.stop());
            log::info!("shutdown: {left} videos were still being opened; they are closed");
        }
        for i in 0..self.conns.len() {
            if self.conns[i].is_some() {
                self.close(Token(i + FIRST_CONN), now);
            }
        }
        self.access_log.flush();
        (self.relays).close_all(&mut self.store, self.poll.registry(), &mut self.wake);
        self.fetcher
            .close_all(self.poll.registry(), &mut self.store);
        self.collect_commits();
        self.finish_space();
        for (_, v) in self.store.all_mut() {
            if let Some(r) = v.ring_mut() {
                r.settle_for_shutdown();
            }
        }
        let Some(worker) = self.worker.take() else {
            return Ok(());
        };
        // One more commit per video once any in-flight commit is done.
        let mut attempts: std::collections::HashMap<String, usize> =
            std::collections::HashMap::new();
        loop {
            let mut pending = false;
            for (id, v) in self.store.all_mut() {
                if v.commit().is_some_and(|c| c.commit_in_flight) {
                    pending = true;
                } else if v.poisoned().is_some() {
                    // Nothing more can be committed for it; the exit status names it.
                    continue;
                } else if attempts.get(id).copied().unwrap_or(0) >= FINAL_COMMIT_ATTEMPTS {
                    // A commit that keeps failing at shutdown (a full or failing disk) is not
                    // retried forever: the exit status and the log say what could not be committed.
                    continue;
                } else if let Some(job) = v.commit_job(id) {
                    *attempts.entry(id.clone()).or_insert(0) += 1;
                    worker.submit(job);
                    pending = true;
                } else if v.commit().is_some_and(|c| !c.is_settled()) {
                    // Backing off after a failed attempt: try again shortly.
                    pending = true;
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
        for done in worker.finish() {
            self.apply_commit(done);
        }
        let unsettled: Vec<String> = self
            .store
            .all_mut()
            .filter(|(_, v)| v.commit().is_some_and(|c| !c.is_settled()))
            .map(|(id, _)| id.clone())
            .collect();
        if !unsettled.is_empty() {
            return Err(format!(
                "shutdown: could not commit what was received for {} (see the log above)",
                unsettled.join(", ")
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
                        let _ = stream.write(too_many_connections_response().as_bytes());
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
            draining: self.drain_until.is_some() || self.shutdown_deadline.is_some(),
            metrics: &mut self.metrics,
            wake: &mut self.wake,
            open_connections: self.open,
            access_log: &mut self.access_log,
        };
        conn.borrow_buffers(&mut self.spare);
        let next = f(&mut conn, &mut ctx);
        conn.return_buffers(&mut self.spare);
        match next {
            Next::Keep => self.conns[index] = Some(conn),
            Next::Close => {
                conn.log_unfinished(&mut self.access_log, &mut self.metrics, now);
                conn.release(&mut self.store, &mut self.wake);
                let _ = self.poll.registry().deregister(&mut conn.stream);
                self.free.push(index);
                self.open -= 1;
            }
        }
    }

    fn close(&mut self, token: Token, now: Instant) {
        let index = token.0.wrapping_sub(FIRST_CONN);
        if let Some(Some(mut conn)) = self.conns.get_mut(index).map(Option::take) {
            conn.log_unfinished(&mut self.access_log, &mut self.metrics, now);
            conn.release(&mut self.store, &mut self.wake);
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
        let wanted = std::mem::take(&mut self.store.open_wanted);
        if let Some((startup, _)) = &self.startup {
            let mut asked = BTreeSet::new();
            for id in wanted {
                if asked.insert(id.clone()) {
                    startup.want(&id);
                }
            }
        }
        // Blocks readers want from origins: fetch them while connections are free.
        self.fetcher
            .pump(self.poll.registry(), &mut self.store, &mut self.wake, now);
        self.relays.pump(&mut Turn {
            store: &mut self.store,
            registry: self.poll.registry(),
            wake: &mut self.wake,
            now,
        });
        self.space_turn(now);
        self.submit_creations();
        self.process_wakes(now);
        let interval_mode = self.cfg.server.sync == SyncMode::Interval;
        // Writes waiting for their acknowledgement: one fast record per video covers them all (interval
        // mode); durable waiters get a commit job (always mode, DELETE).
        let mut jobs = Vec::new();
        for (id, v) in self.store.all_mut() {
            // A poisoned video acknowledges nothing: its waiters learn why (conn answers 500).
            if v.poisoned().is_some() {
                self.wake.append(&mut v.commit_waiters);
                continue;
            }
            // A live publisher waiting for its next write intent gets a durable commit at once.
            if v.commit_urgent() {
                if let Some(job) = v.commit_job(id) {
                    jobs.push(job);
                }
                continue;
            }
            let fast_due = v.commit().is_some_and(|c| c.fast_record_due());
            // Origin bytes are recorded as soon as they land (a fast record, no sync), so a process
            // crash never makes vcache fetch them again.
            if v.origin().is_some() && fast_due && !v.delete_pending() {
                match v.write_fast_record() {
                    Ok(()) => self.metrics.fast_records += 1,
                    Err(e) => log::error!("video {id}: {e}"),
                }
                continue;
            }
            if v.commit_waiters.is_empty() {
                continue;
            }
            if interval_mode && !v.delete_pending() && fast_due {
                match v.write_fast_record() {
                    Ok(()) => self.metrics.fast_records += 1,
                    Err(e) => {
                        log::error!("video {id}: {e}");
                        if let Some(c) = v.commit_mut() {
                            c.last_commit_error = Some(e);
                        }
                    }
                }
                self.wake.append(&mut v.commit_waiters);
                continue;
            }
            if let Some(job) = v.commit_job(id) {
                jobs.push(job);
            }
        }
        // The checkpoint timer: every dirty video gets a durable commit at least this often.
        let interval = Duration::from_millis(self.cfg.server.checkpoint_interval_ms);
        if now.duration_since(self.last_checkpoint) >= interval {
            self.last_checkpoint = now;
            for (id, v) in self.store.all_mut() {
                if let Some(job) = v.commit_job(id) {
                    jobs.push(job);
                }
            }
        }
        if let Some(worker) = &self.worker {
            for job in jobs {
                self.commit_submitted.insert(job.video.clone(), now);
                if !worker.submit(job) {
                    log::error!("the commit worker is gone");
                }
            }
        }
        self.process_wakes(now);
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep_timeouts(now);
            self.refresh_durability_gauges(now);
            self.fetcher
                .sweep(self.poll.registry(), &mut self.store, &mut self.wake, now);
            self.drop_unused_retired();
            self.store.drop_unused_mounted();
            self.retry_opens(now);
        }
        self.access_log.flush();
        if let Some((every, last)) = &mut self.watchdog
            && now.duration_since(*last) >= *every
        {
            *last = now;
            service::sd_notify("WATCHDOG=1");
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
        let created = worker.take_created();
        let removed = worker.take_removed();
        for done in worker.take_done() {
            self.apply_commit(done);
        }
        for r in removed {
            match &r.result {
                Ok(()) => log::info!(
                    "video {}: its files are removed (a changed object, or every block evicted); it is fetched again on demand",
                    r.video
                ),
                Err(e) => log::error!(
                    "video {}: removing the files of the old origin object failed: {e}",
                    r.video
                ),
            }
            if let Some(v) = self.store.get_mut(&r.video) {
                if let Some(o) = v.origin_mut().filter(|o| o.phase() == Phase::Removing) {
                    o.files_removed();
                }
                // Readers waiting for the old object route again: they learn the new one.
                v.byte_waiters.wake_all(&mut self.wake);
            }
        }
        let now = Instant::now();
        for c in created {
            let granted = self.create_granted.remove(&c.video).unwrap_or(0);
            self.created_space(&c.video, c.result.as_ref().ok(), granted);
            self.fetcher.slot_created(
                &c.video,
                c.result,
                self.poll.registry(),
                &mut self.store,
                &mut self.wake,
                now,
            );
        }
    }

    /// Origin videos that just learned their object's length get their files created by the commit
    /// worker (a fallocate and metadata syncs do not belong on the loop).
    fn submit_creations(&mut self) {
        let Some(worker) = &self.worker else { return };
        let paths = self.store.paths();
        for (id, v) in self.store.videos.iter_mut() {
            let Some(o) = v.origin_mut() else { continue };
            if o.take_remove_wanted() {
                let job = crate::store::commit::RemoveJob {
                    video: id.clone(),
                    paths: paths.clone(),
                };
                if !worker.submit_remove(job) {
                    log::error!("the commit worker is gone");
                }
            }
            // Files are created once the budget granted their first block (`space_turn`).
            if !self.create_granted.contains_key(id) {
                continue;
            }
            let Some((len, validator)) = o.take_create_wanted() else {
                continue;
            };
            let job = crate::store::commit::CreateJob {
                video: id.clone(),
                paths: paths.clone(),
                len,
                validator,
                allocate: o.learn_block().map_or((0, 0), |b| {
                    let start = b.saturating_mul(o.fill_block());
                    (start, o.fill_block())
                }),
            };
            if !worker.submit_create(job) {
                log::error!("the commit worker is gone");
            }
        }
    }

    fn apply_commit(&mut self, done: crate::store::commit::CommitDone) {
        if let Some(t) = self.commit_submitted.remove(&done.video) {
            self.metrics.commit_duration.observe(t.elapsed());
        }
        match &done.result {
            Ok(()) => self.metrics.commits += 1,
            Err(e) => {
                self.metrics.commit_failures += 1;
                log::error!("video {}: durable commit failed: {e}", done.video);
            }
        }
        if let Some(v) = self.store.get_mut(&done.video) {
            v.commit_done(&done);
            self.wake.append(&mut v.commit_waiters);
            if let Some(why) = v.poisoned() {
                log::error!("video {}: poisoned: {why}", done.video);
            }
        }
        let now = Instant::now();
        self.record_evictions(&done.video, now);
        self.refresh_durability_gauges(now);
    }

    /// The /metrics gauges about durability, recomputed from the store (after commits and at every
    /// sweep).
    fn refresh_durability_gauges(&mut self, now: Instant) {
        let oldest = self
            .store
            .all_mut()
            .filter_map(|(id, v)| Some((v.commit()?.oldest_unsynced_ack()?, id)))
            .min()
            .map(|(t, id)| (t, id.clone()));
        let age = oldest
            .as_ref()
            .map_or(Duration::ZERO, |(t, _)| now.saturating_duration_since(*t));
        self.metrics.oldest_unsynced_ack_seconds = age.as_secs_f64();
        // A checkpoint should cover an acknowledgement within about one interval.
        let interval = Duration::from_millis(self.cfg.server.checkpoint_interval_ms);
        let quiet = self
            .last_behind_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= BEHIND_WARNING_EVERY);
        if let Some((_, id)) = oldest.filter(|_| age > 2 * interval && quiet) {
            self.last_behind_warning = Some(now);
            log::warn!(
                "checkpoints are behind: video {id} holds writes acknowledged {:.1} s ago that are \
                 not durable yet (checkpoint_interval_ms = {}; see vcache_oldest_unsynced_ack_seconds)",
                age.as_secs_f64(),
                self.cfg.server.checkpoint_interval_ms
            );
        }
    }

    /// Close the files of videos a reload removed, once no connection uses them and everything they
    /// received is committed (the checkpoint timer commits them like any other video).
    fn drop_unused_retired(&mut self) {
        if self.store.retired.is_empty() {
            return;
        }
        let unused: Vec<String> = self
            .store
            .retired
            .iter()
            .filter(|(id, v)| {
                // Waiter lists may hold tokens of connections that left without being woken: what
                // counts is whether a live connection still uses the video.
                let committed = v
                    .commit()
                    .is_none_or(|c| c.is_settled() || c.poisoned().is_some());
                committed && !self.conns.iter().flatten().any(|c| c.uses_video(id))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in unused {
            if let Some(v) = self.store.retired.remove(&id) {
                // Its blocks leave the budget with it (its files stay on disk, unclaimed by config).
                self.store.forget_video_space(&id, &v);
            }
            log::info!(
                "video {id}: removed by a reload and no longer in use; its files are closed"
            );
        }
    }

    /// SIGHUP: load the config again on a short-lived thread (parsing and resolving origin hosts do
    /// not belong on the loop); the loop applies it as a diff when it is ready. A config that fails to
    /// load changes nothing.
    fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            log::warn!("SIGHUP: running on the embedded default config; nothing to reload");
            return;
        };
        if self.shutdown_deadline.is_some() {
            log::info!("SIGHUP during shutdown: ignored");
            return;
        }
        if self.reload_rx.is_some() || self.pending_reload.is_some() || self.startup.is_some() {
            // After the reload in progress, or once every configured video is opened.
            self.reload_again = true;
            return;
        }
        service::sd_notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading {}",
            service::monotonic_usec(),
            path.display()
        ));
        let (tx, rx) = std::sync::mpsc::channel();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("vcache-reload".into())
            .spawn(move || {
                let refused = |e: String| {
                    format!(
                        "reload of {} refused, the running config stays: {e}",
                        path.display()
                    )
                };
                // The access log is opened anew on every reload (logrotate: move it, then SIGHUP).
                let loaded = config::load(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|cfg| {
                        let log = open_access_log(&cfg)?;
                        let resolved = crate::store::resolve_origins(&cfg);
                        Ok((cfg, resolved, log))
                    })
                    .map_err(refused);
                let _ = tx.send(loaded);
                let _ = waker.wake();
            });
        match spawned {
            Ok(_) => self.reload_rx = Some(rx),
            Err(e) => {
                log::error!("reload refused: cannot start the reload thread: {e}");
                service::sd_notify("READY=1\nSTATUS=serving");
            }
        }
    }

    /// Apply a reload that finished loading.
    fn collect_reload(&mut self) {
        let Some(rx) = &self.reload_rx else { return };
        let loaded = match rx.try_recv() {
            Ok(l) => l,
            Err(std::sync::mpsc::TryRecvError::Empty) => return,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Err("reload refused: the reload thread ended without a result".to_string())
            }
        };
        self.reload_rx = None;
        match loaded {
            Ok((new, resolved, log)) => {
                self.access_log.flush();
                self.access_log = log;
                self.apply_config(new, resolved);
            }
            Err(e) => {
                log::error!("{e}");
                self.reload_finished();
            }
        }
    }

    /// The reload is over (applied, or refused): tell the service manager, and start the next one if a
    /// SIGHUP came meanwhile.
    fn reload_finished(&mut self) {
        assert!(self.reload_rx.is_none() && self.pending_reload.is_none());
        service::sd_notify("READY=1\nSTATUS=serving");
        if std::mem::take(&mut self.reload_again) {
            self.reload();
        }
    }

    /// Apply a new config as a diff: removed ones are retired (no new request reaches them; connections
    /// using them finish), changed settings apply to new requests, and new videos are opened on the
    /// commit worker (answering 503 until then); the reload is logged once they are. Open connections and
    /// cached data are untouched. `listen` and `data_dir` need a restart.
    fn apply_config(&mut self, new: Config, mut resolved: ResolvedOrigins) {
        assert!(self.pending_reload.is_none(), "one reload at a time");
        if new.server.listen != self.cfg.server.listen {
            log::warn!("reload: a new listen address takes effect only after a restart");
        }
        if new.server.data_dir != self.cfg.server.data_dir {
            log::warn!("reload: a new data_dir takes effect only after a restart");
        }
        let mut pending = PendingReload {
            removed: self.retire_removed_and_changed(&new),
            ..PendingReload::default()
        };
        // A retired video whose kind changed can be replaced only once nothing uses it any more.
        self.drop_unused_retired();
        let mut problems = Vec::new();
        for nv in &new.videos {
            if let Err(message) = self.apply_video(nv, &mut resolved, &mut pending) {
                log::error!("reload: video {}: {message}", nv.id);
                problems.push(VideoProblem {
                    id: nv.id.clone(),
                    message,
                });
            }
        }
        self.problems = problems;
        self.reopen
            .retain(|id| new.videos.iter().any(|nv| nv.id == id));
        // Listen address and data_dir stay as they were (above); everything else applies to new requests.
        let listen = self.cfg.server.listen;
        let data_dir = self.cfg.server.data_dir.clone();
        self.cfg = new;
        self.cfg.server.listen = listen;
        self.cfg.server.data_dir = data_dir;
        self.fetcher.set_limits(
            self.cfg.server.origin_connections,
            self.cfg.server.origin_timeout_ms,
        );
        let read_token = self.cfg.server.read_token.as_deref();
        self.fetcher.peers.configure(&self.cfg.cluster, read_token);
        let now = Instant::now();
        (self.relays).configure(&self.cfg, &mut self.store, self.poll.registry(), now);
        self.pending_reload = Some(pending);
        self.finish_reload_once_opened();
    }

    /// Retire the videos a new config removes or redefines (another kind, path, size…); returns the ids
    /// it removes. A redefined one is opened again under its new definition by `apply_video`.
    fn retire_removed_and_changed(&mut self, new: &Config) -> Vec<String> {
        let mut removed = Vec::new();
        let current: Vec<String> = self.store.videos.keys().cloned().collect();
        for id in current {
            // Mounted objects are not in any config's [[video]] list: a reload keeps them.
            if crate::store::mounts::is_mounted_id(&id) {
                continue;
            }
            let same_kind = new.videos.iter().any(|nv| {
                nv.id == id
                    && self
                        .store
                        .videos
                        .get(&id)
                        .is_some_and(|old| old.cfg.kind == nv.kind)
            });
            if !same_kind {
                self.store.retire(&id);
                if !new.videos.iter().any(|nv| nv.id == id) {
                    removed.push(id);
                }
            }
        }
        removed
    }

    /// One video of a new config: settings changed in place, a retired one taken back, or a new one
    /// handed to the commit worker to open. Err: why it cannot be served (it answers 503).
    fn apply_video(
        &mut self,
        nv: &crate::config::VideoConfig,
        resolved: &mut ResolvedOrigins,
        pending: &mut PendingReload,
    ) -> Result<(), String> {
        if let Some(v) = self.store.videos.get_mut(&nv.id) {
            if v.cfg != *nv {
                v.content_type = crate::store::configured_content_type(nv);
                v.cfg = nv.clone();
                pending.changed.push(nv.id.clone());
            }
            return Ok(());
        }
        if let Some(old) = self.store.retired.get_mut(&nv.id) {
            if old.cfg.kind != nv.kind {
                return Err(format!(
                    "its old definition ({}) is still in use by open connections or being \
                     committed; reload again once they finish",
                    old.cfg.kind_name()
                ));
            }
            // Added back: the files are still open (and locked); reuse them.
            old.content_type = crate::store::configured_content_type(nv);
            old.cfg = nv.clone();
            self.store.unretire(&nv.id);
            pending.added.push(nv.id.clone());
            return Ok(());
        }
        // A retry of a failed open already on the commit worker answers for the reload too.
        let submitted = self.reopen.in_flight(&nv.id) || {
            let job = crate::store::commit::OpenJob {
                config: nv.clone(),
                paths: self.store.paths(),
                resolved: resolved.remove(&nv.id),
            };
            self.worker.as_ref().is_some_and(|w| w.submit_open(job))
        };
        if !submitted {
            return Err("the commit worker is gone; restart the daemon".into());
        }
        assert!(pending.opening.insert(nv.id.clone()), "video opened twice");
        Err(crate::routes::OPENING_MESSAGE.into())
    }

    /// What the start-up threads report: a video being recovered (its waiting requests are told so if
    /// their wait runs out), or opened — served from now on, its waiting requests routed again — or
    /// not (reported and retried like any video that failed to open).
    fn collect_startup(&mut self, now: Instant) {
        let Some((startup, began)) = &self.startup else {
            return;
        };
        let began = *began;
        for event in startup.take() {
            let o = match event {
                startup::Event::Recovering(id) => {
                    log::info!(
                        "video {id}: its data file is synced before its record is trusted (after a \
                         crash); its requests wait for it, the other videos do not"
                    );
                    if let Some(o) = self.store.opening.get_mut(&id) {
                        o.recovering = true;
                    }
                    continue;
                }
                startup::Event::Opened(o) => o,
            };
            if let Some(mut opening) = self.store.opening.remove(&o.video) {
                opening.waiters.wake_all(&mut self.wake);
            }
            match o.result {
                Ok(v) => {
                    self.store.insert_video(o.video, *v);
                }
                Err(message) => {
                    let report = self.reopen.failed(&o.video, &message, now);
                    log_reopen(&o.video, report, &message);
                    self.problems.push(VideoProblem {
                        id: o.video,
                        message,
                    });
                }
            }
        }
        if !self.store.opening.is_empty() {
            return;
        }
        if let Some((startup, _)) = self.startup.take() {
            drop(startup.stop());
        }
        log::info!(
            "start-up: {} of {} configured videos opened in {} ms",
            self.store.videos.len(),
            self.cfg.videos.len(),
            now.duration_since(began).as_millis()
        );
        if std::mem::take(&mut self.reload_again) {
            self.reload();
        }
    }

    /// Videos the commit worker opened — for the pending reload, or retried after a failed open: serve
    /// them (or report why they cannot be served and try again later), and finish the reload once none
    /// of its own is left.
    fn collect_opened(&mut self) {
        let Some(worker) = &self.worker else { return };
        let opened = worker.take_opened();
        if opened.is_empty() {
            return;
        }
        let now = Instant::now();
        for o in opened {
            let for_reload = self
                .pending_reload
                .as_mut()
                .is_some_and(|p| p.opening.remove(&o.video));
            let configured = self.cfg.videos.iter().any(|v| v.id == o.video);
            if !configured || self.store.videos.contains_key(&o.video) {
                // Removed by a reload while it was being opened: its files are closed again.
                assert!(
                    !for_reload,
                    "a reload's own video is configured and not open"
                );
                self.reopen.done(&o.video, now);
                continue;
            }
            self.problems.retain(|p| p.id != o.video);
            match o.result {
                Ok(v) => {
                    self.store.insert_video(o.video.clone(), *v);
                    if let Some((waited, failures)) = self.reopen.done(&o.video, now) {
                        log::info!(
                            "video {}: opened after {failures} failed attempts ({} ms); serving it",
                            o.video,
                            waited.as_millis()
                        );
                    }
                    if let Some(p) = self.pending_reload.as_mut().filter(|_| for_reload) {
                        p.added.push(o.video);
                    }
                }
                Err(message) => {
                    let report = self.reopen.failed(&o.video, &message, now);
                    if for_reload {
                        log::error!("reload: video {}: {message}", o.video);
                    } else {
                        log_reopen(&o.video, report, &message);
                    }
                    self.problems.push(VideoProblem {
                        id: o.video,
                        message,
                    });
                }
            }
        }
        self.finish_reload_once_opened();
    }

    /// Configured videos that could not be opened and are due for another attempt: open them on the
    /// commit worker (a video a reload is opening already is left to it).
    fn retry_opens(&mut self, now: Instant) {
        for id in self.reopen.take_due(now) {
            let opening = self
                .pending_reload
                .as_ref()
                .is_some_and(|p| p.opening.contains(&id));
            let config = self.cfg.videos.iter().find(|v| v.id == id).cloned();
            let Some(config) = config.filter(|_| !opening && !self.store.videos.contains_key(&id))
            else {
                self.reopen.not_submitted(&id);
                continue;
            };
            let job = crate::store::commit::OpenJob {
                config,
                paths: self.store.paths(),
                resolved: None,
            };
            if !self.worker.as_ref().is_some_and(|w| w.submit_open(job)) {
                self.reopen.not_submitted(&id);
            }
        }
    }

    /// Log the reload and end it, if no video it added is still being opened.
    fn finish_reload_once_opened(&mut self) {
        if self
            .pending_reload
            .as_ref()
            .is_none_or(|p| !p.opening.is_empty())
        {
            return;
        }
        let Some(p) = self.pending_reload.take() else {
            return;
        };
        log::info!(
            "reloaded config {}: {} videos added {:?}, {} removed {:?}, {} changed {:?}; {} serving, {} \
             removed ones still open for their connections",
            self.cfg.source,
            p.added.len(),
            p.added,
            p.removed.len(),
            p.removed,
            p.changed.len(),
            p.changed,
            self.store.videos.len(),
            self.store.retired.len()
        );
        self.reload_finished();
    }
}

/// Log what a failed open means for an operator (a repeated, unchanged failure is not logged again).
fn log_reopen(id: &str, report: Report, message: &str) {
    match report {
        Report::Quiet => {}
        Report::WaitingForLock { wait } => log::warn!(
            "video {id}: its files are locked by another process (an old vcache still shutting down?); \
             waiting up to {} ms for them, trying every {} ms; it answers 503 meanwhile",
            wait.as_millis(),
            reopen::LOCKED_RETRY.as_millis()
        ),
        Report::LockHeldTooLong { waited } => log::error!(
            "video {id}: its files are still locked after {} ms: another process holds them \
             (two vcache on one data_dir?); still trying every second",
            waited.as_millis()
        ),
        Report::Failed => {
            log::error!("video {id}: cannot be opened: {message}; trying again later")
        }
    }
}
