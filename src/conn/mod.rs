//! One client connection as an explicit state machine: reading a head → (reading a body straight into a
//! slot's mapping → waiting for its commit) or (waiting for bytes) → writing a head and payload → keep-alive
//! or a lingering close. `drive` is the one place that decides the next state; every state carries its
//! deadline. Payload never passes through a connection buffer: it leaves with sendfile(2) or a write from
//! the mapping, and arrives with read(2) into `&mut map[a..b]`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::Token;
use mio::net::TcpStream;

use crate::config::{Config, Limits, SyncMode};
use crate::http::HttpError;
use crate::http::request::{HeadLimits, RequestHead};
use crate::metrics::Metrics;
use crate::routes::{self, Action, Held, IngestPlan, Part, Plan, RouteCtx, WaitFor};
use crate::store::data_file::{PREFAULT_WINDOW, prefault_for_write};
use writer::{Stop, Writer, Wrote};

pub mod access_log;
mod reader;
mod verify;
mod writer;
use crate::store::{Availability, IngestBlock, Store, VideoProblem};
use access_log::{AccessLog, RequestRecord};
use reader::{BodyNext, Got, Reader};

/// Most bytes read per read(2) of framing (heads, chunk-size lines). Small on purpose: payload that
/// shares a read with framing is copied once from this buffer, so the less of it the better.
const FRAMING_READ: usize = 4096;
/// Framing reads inside a chunked body are smaller still: a chunk-size line is a few bytes.
const CHUNK_LINE_READ: usize = 64;
/// How long a lingering close drains the client's unread bytes, and how many it drains at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 1 << 20;
/// A lingering close during shutdown.
const SHUTDOWN_LINGER_TIME: Duration = Duration::from_millis(200);
/// Most payload bytes sent per send call.
const SEND_CHUNK: u64 = 1 << 20;
/// Most payload bytes one connection sends per turn before it yields to the others (it queues itself
/// to be driven again in the same loop iteration), so one fast reader cannot starve the rest.
const SEND_BUDGET_PER_TURN: u64 = 2 << 20;
/// Most body bytes one connection ingests per turn before it yields (a fast uploader or publisher
/// must not hold the loop: followers and other clients are served between its turns).
const INGEST_BUDGET_PER_TURN: u64 = 4 << 20;

/// How payload leaves: sendfile(2) from the file, or write(2) from a slice of the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPath {
    /// The default: a map slice (measured faster, benches/RESULTS.md) for vcache's own data files,
    /// sendfile for operator-owned `file` videos (it cannot SIGBUS if such a file is truncated).
    Auto,
    Sendfile,
    MapSlice,
}

/// What the loop gives a connection to work with.
pub struct Ctx<'a> {
    pub store: &'a mut Store,
    pub cfg: &'a Config,
    pub problems: &'a [VideoProblem],
    pub now: Instant,
    pub boundary: &'a str,
    pub send_path: SendPath,
    pub shutting_down: bool,
    /// Draining or shutting down: `/readyz` answers 503.
    pub draining: bool,
    pub metrics: &'a mut Metrics,
    /// Connections to drive again in this loop iteration (woken by this one's progress).
    pub wake: &'a mut Vec<Token>,
    pub open_connections: usize,
    pub access_log: &'a mut AccessLog,
}

struct Ingest {
    plan: IngestPlan,
    /// Next offset to write.
    cursor: u64,
    /// Bytes [plan.start, claimed) are claimed in the presence map.
    claimed: u64,
    /// Bytes [cursor, populated) of the target are already faulted in for writing.
    populated: u64,
}

enum State {
    Head,
    Body(Box<Ingest>),
    /// Reading a repeat of present bytes and comparing it with them.
    Verify(Box<verify::Verify>),
    /// Waiting until a claim is committed; then `ok` (or a 500) is sent.
    Commit {
        video: String,
        claim_seq: u64,
        durable: bool,
        ok: Option<Plan>,
    },
    /// A read waits for bytes a writer is delivering (`wait` says which); the head is routed again,
    /// once, when they arrive.
    WaitBytes {
        head: Box<RequestHead>,
        wait: WaitFor,
        until: Instant,
        started: Instant,
        /// Entered just now: the first check follows the decision's effects (origin wants).
        fresh: bool,
        /// The routing that entered it had just applied this request's wants.
        after_wants: bool,
    },
    Send {
        parts: VecDeque<Part>,
        keep_alive: bool,
    },
    /// Response sent, write side shut: discard what the client still sends, then close.
    Linger {
        drained: u64,
    },
    Closed,
}

pub struct Conn {
    pub stream: TcpStream,
    pub token: Token,
    pub peer: SocketAddr,
    /// The read half: framing bytes not yet parsed, and the body's framing decoder.
    reader: Reader,
    /// The write half: head and framing bytes waiting to go out with the next payload send.
    writer: Writer,
    state: State,
    /// When the current state gives up.
    pub deadline: Instant,
    requests: u64,
    /// Wait for readiness: payload is blocked on bytes that are not there yet.
    waiting_bytes_until: Option<Instant>,
    /// Body bytes ingested in the current turn (see INGEST_BUDGET_PER_TURN).
    received_this_turn: u64,
    /// The live channel this connection follows (its place counts against limits.max_followers).
    following: Option<Held>,
    /// An origin reader's window (`Held::Reader`): moved as payload goes, given back at the end.
    reading: Option<Held>,
    /// Payload bytes sent to this connection as a live follower (for its leave line).
    follow_sent: u64,
    /// The request being answered, for the access log (None while the log is off).
    record: Option<Box<RequestRecord>>,
    /// The status of the response being sent and when its request's head arrived (for metrics).
    answering: Option<(u16, Instant)>,
    /// When the current request's head arrived.
    request_started: Instant,
}

/// The framing buffers the loop lends to the connection it is driving: a connection keeps one only
/// while bytes are buffered in it (a partial head, pipelined requests, a response head not yet
/// sent), so an idle keep-alive connection holds no buffer.
#[derive(Default)]
pub struct Spare {
    read: Vec<u8>,
    write: Vec<u8>,
}

/// What the loop should do with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Keep,
    Close,
}

fn head_limits(l: &Limits) -> HeadLimits {
    HeadLimits {
        max_request_line: l.max_request_line,
        max_head_bytes: l.max_header_bytes,
        max_headers: l.max_headers,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        token: Token,
        peer: SocketAddr,
        now: Instant,
        limits: &Limits,
    ) -> Conn {
        Conn {
            stream,
            token,
            peer,
            reader: Reader::new(),
            writer: Writer::new(),
            state: State::Head,
            deadline: now + ms(limits.header_timeout_ms),
            requests: 0,
            waiting_bytes_until: None,
            received_this_turn: 0,
            following: None,
            reading: None,
            follow_sent: 0,
            record: None,
            answering: None,
            request_started: now,
        }
    }

    /// Idle between requests with nothing buffered: safe to close at shutdown. A connection that has
    /// not sent its first request yet is not idle: it was accepted (maybe just before SIGTERM, as in a
    /// restart) and its request is answered, within limits.shutdown_timeout_ms.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head)
            && self.requests > 0
            && self.reader.is_empty()
            && self.writer.is_flushed()
    }

    /// Does this connection hold on to a video (a write, a commit wait, or payload still to send)? A
    /// video a reload removed stays open until no connection does.
    pub fn uses_video(&self, id: &str) -> bool {
        match &self.state {
            State::Body(ing) => ing.plan.video == id,
            State::Verify(ver) => ver.video() == id,
            State::Commit { video, .. } => video == id,
            State::Send { parts, .. } => parts
                .iter()
                .any(|p| matches!(p, Part::Payload { video, .. } | Part::Follow { video, .. } if video == id)),
            State::WaitBytes { wait, .. } => wait.video == id,
            _ => false,
        }
    }

    /// Release what the connection holds in the store (a follower's place, an in-flight write's
    /// reservation). What it wrote and claimed stays claimed.
    pub fn release(&mut self, store: &mut Store, wake: &mut Vec<Token>) {
        self.stop_following(store);
        self.stop_reading(store);
        self.reader.end_body();
        if let State::Body(ing) = &self.state {
            let held = Held::Write {
                video: ing.plan.video.clone(),
                reservation: ing.plan.reservation,
            };
            // Followers of a live channel finish once they have caught up.
            routes::release(&held, store, wake);
            let got = ing.cursor - ing.plan.start;
            if ing.plan.end == u64::MAX {
                // A live publish has no fixed length: only what arrived is meaningful.
                log::info!(
                    "{}: publish to {} cut after {got} bytes",
                    self.peer,
                    ing.plan.video
                );
            } else {
                log::info!(
                    "{}: write to {} cut after {got} of {} bytes",
                    self.peer,
                    ing.plan.video,
                    ing.plan.end - ing.plan.start
                );
            }
        }
        self.state = State::Closed;
    }

    /// This connection no longer reads an origin video: its window of blocks goes.
    fn stop_reading(&mut self, store: &mut Store) {
        if let Some(held) = self.reading.take() {
            routes::release(&held, store, &mut Vec::new());
        }
    }

    /// This connection no longer follows a live channel: give its follower place back.
    fn stop_following(&mut self, store: &mut Store) {
        if let Some(held) = self.following.take() {
            if let Held::Follower { video } = &held {
                log::info!(
                    "{}: follower of {video} left after {} bytes",
                    self.peer,
                    std::mem::take(&mut self.follow_sent)
                );
            }
            routes::release(&held, store, &mut Vec::new());
        }
    }

    /// The connection closes: a request it was answering is logged with what it got so far (status 0
    /// when no response had started).
    pub fn log_unfinished(&mut self, log: &mut AccessLog, metrics: &mut Metrics, now: Instant) {
        if let Some(r) = self.record.take() {
            r.write(log, self.peer, now);
        }
        // A response cut short (a follower that left, a client gone) still counts with its status.
        if let Some((status, started)) = self.answering.take() {
            metrics.response(status, now.saturating_duration_since(started));
        }
    }

    /// A deadline passed. Returns Close if the connection should go.
    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_>) -> Next {
        match &self.state {
            State::WaitBytes { .. } => {
                // Route again once more with the wait marked as expired: it answers with a status.
                self.drive_with_expired_wait(ctx)
            }
            State::Commit { .. } => {
                // Commits are not timed out: the data is being synced and its answer will come.
                self.deadline = ctx.now + ms(ctx.cfg.server.limits.send_timeout_ms);
                Next::Keep
            }
            State::Head if self.reader.is_empty() && self.writer.is_flushed() => Next::Close,
            State::Linger { .. } => Next::Close,
            State::Head => {
                ctx.metrics.timeouts += 1;
                self.respond_error(
                    &HttpError::new(408, "request head not received in time"),
                    false,
                );
                self.drive(ctx)
            }
            _ => {
                ctx.metrics.timeouts += 1;
                log::info!("{}: timed out", self.peer);
                Next::Close
            }
        }
    }

    fn drive_with_expired_wait(&mut self, ctx: &mut Ctx<'_>) -> Next {
        if let State::WaitBytes { head, started, .. } =
            std::mem::replace(&mut self.state, State::Head)
        {
            let routing = Routing {
                started,
                wait_expired: true,
                waited: true,
                wants_applied: false,
            };
            self.dispatch(head, ctx, routing);
        }
        self.drive(ctx)
    }

    fn respond_error(&mut self, e: &HttpError, keep_alive: bool) {
        let plan = routes::error_plan(e.status, &e.message, false, keep_alive);
        self.start_plan(plan);
    }

    fn start_plan(&mut self, plan: Plan) {
        if let Some(Part::Follow { video, pos, .. }) = plan.parts.back() {
            // `routes::apply` counted this follower in; it is counted out when the part ends or the
            // connection closes.
            log::info!("{}: follower of {video} joined at byte {pos}", self.peer);
            let video = video.clone();
            self.follow_sent = 0;
            self.following = Some(Held::Follower { video });
        }
        self.answering = Some((plan.head.status, self.request_started));
        if let Some(r) = &mut self.record {
            r.status = plan.head.status;
            r.cache = plan.head.get("X-Cache").map(str::to_string);
        }
        plan.write_head(self.writer.queue_in_place());
        self.state = State::Send {
            parts: plan.parts,
            keep_alive: plan.keep_alive,
        };
    }

    /// The loop saw the socket writable.
    pub fn set_writable(&mut self) {
        self.writer.writable = true;
    }

    /// Borrow the loop's spare buffers for this drive (`Spare`); `return_buffers` gives them back
    /// unless bytes are still buffered in them.
    pub fn borrow_buffers(&mut self, spare: &mut Spare) {
        self.reader.borrow_buffer(&mut spare.read);
        self.writer.borrow_buffer(&mut spare.write);
    }

    pub fn return_buffers(&mut self, spare: &mut Spare) {
        self.reader.return_buffer(&mut spare.read);
        self.writer.return_buffer(&mut spare.write);
    }

    /// The loop saw the socket readable (or closed, or failed: a read tells which).
    pub fn set_readable(&mut self) {
        self.reader.readable = true;
    }

    /// Make as much progress as readiness allows.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Next {
        self.writer.sent_this_turn = 0;
        self.received_this_turn = 0;
        loop {
            // Queued head bytes go first (e.g. a 100 Continue before a body) — except while sending a
            // response, where they leave in the same writev as the payload.
            if !matches!(self.state, State::Send { .. })
                && let Some(step) = self.flush_writer(ctx)
            {
                match step {
                    Step::Progress => continue,
                    Step::Blocked => return Next::Keep,
                    Step::Close => return Next::Close,
                }
            }
            let step = match &mut self.state {
                State::Closed => return Next::Close,
                State::Head => self.step_head(ctx),
                State::Body(_) => self.step_body(ctx),
                State::Verify(_) => self.step_verify(ctx),
                State::Commit { .. } => self.step_commit(ctx),
                State::WaitBytes { .. } => self.step_wait_bytes(ctx),
                State::Send { .. } => self.step_send(ctx),
                State::Linger { .. } => self.step_linger(ctx),
            };
            match step {
                Step::Progress => continue,
                Step::Blocked => return Next::Keep,
                Step::Close => return Next::Close,
            }
        }
    }

    fn step_head(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let limits = &ctx.cfg.server.limits;
        if self.reader.is_empty() && ctx.shutting_down && self.requests > 0 {
            return Step::Close;
        }
        match self.reader.take_head(&head_limits(limits)) {
            Ok(Some(head)) => {
                self.requests += 1;
                ctx.metrics.requests += 1;
                let mut head = Box::new(head);
                // At shutdown, finish this request but close after it.
                head.keep_alive &= !ctx.shutting_down;
                self.dispatch(head, ctx, Routing::new(ctx.now));
                return Step::Progress;
            }
            Ok(None) => {}
            Err(e) => {
                ctx.metrics.bad_requests += 1;
                log::info!(
                    "{}: bad request head: {} {}",
                    self.peer,
                    e.status,
                    e.message
                );
                self.reader.clear();
                self.request_started = ctx.now;
                if ctx.access_log.enabled() {
                    self.record = Some(Box::new(RequestRecord::unparsed(ctx.now)));
                }
                self.respond_error(&e, false);
                return Step::Progress;
            }
        }
        let old = self.reader.buffered();
        let cap = limits.max_header_bytes + FRAMING_READ;
        if old >= cap {
            // parse_request_head refuses an oversized head, so this is not reached; be safe anyway.
            self.respond_error(&HttpError::new(431, "request head too large"), false);
            return Step::Progress;
        }
        match self
            .reader
            .read_framing(&mut self.stream, FRAMING_READ.min(cap - old))
        {
            Got::Read(n) => {
                ctx.metrics.bytes_in += n as u64;
                if old == 0 {
                    self.deadline = ctx.now + ms(limits.header_timeout_ms);
                }
                Step::Progress
            }
            Got::Buffered(_) | Got::Retry => Step::Progress,
            Got::Blocked => Step::Blocked,
            Got::Closed => Step::Close,
        }
    }

    /// Route a parsed head, apply the decision's effects (once), and enter the state its action needs.
    fn dispatch(&mut self, head: Box<RequestHead>, ctx: &mut Ctx<'_>, routing: Routing) {
        self.request_started = routing.started;
        if ctx.access_log.enabled() && self.record.is_none() {
            self.record = Some(Box::new(RequestRecord::new(&head, routing.started)));
        }
        if let Some(plan) = routes::materialize_mount(&head, ctx.cfg, ctx.store) {
            self.deadline = ctx.now + ms(ctx.cfg.server.limits.send_timeout_ms);
            self.start_plan(plan);
            return;
        }
        let rctx = RouteCtx {
            store: ctx.store,
            cfg: ctx.cfg,
            problems: ctx.problems,
            boundary: ctx.boundary,
            wait_expired: routing.wait_expired,
            waited: routing.waited,
            request_started: routing.started,
            wants_applied: routing.wants_applied,
            metrics: ctx.metrics,
            open_connections: ctx.open_connections,
            reader: self.token.0,
            draining: ctx.draining,
        };
        let decision = routes::route(&head, &rctx);
        self.note_reading(&decision, ctx.store);
        let action = routes::apply(decision, ctx.store);
        let limits = &ctx.cfg.server.limits;
        match action {
            Action::Respond(plan) => {
                self.deadline = ctx.now + ms(limits.send_timeout_ms);
                ctx.metrics.note_cache_status(plan.head.get("X-Cache"));
                self.start_plan(plan);
            }
            Action::Ingest(plan) => self.start_ingest(plan, ctx),
            Action::Verify(plan) => self.start_verify(plan, ctx),
            Action::WaitForBytes(wait) => {
                let until = ctx.now + ms(limits.read_wait_ms);
                self.deadline = until;
                self.state = State::WaitBytes {
                    head,
                    wait,
                    until,
                    started: routing.started,
                    fresh: true,
                    after_wants: routing.wants_applied,
                };
            }
            Action::AwaitCommit {
                video,
                claim_seq,
                durable,
                ok,
            } => {
                self.state = State::Commit {
                    video,
                    claim_seq,
                    durable,
                    ok: Some(ok),
                };
            }
        }
    }

    /// A write was reserved: read its body next (after a 100 Continue if the client waits for one).
    /// A decision that opens an origin reader's window: the connection holds it from now on (a
    /// window it held for an earlier request goes first).
    fn note_reading(&mut self, decision: &routes::Decision, store: &mut Store) {
        let opened = decision.effects.iter().find_map(|e| match e {
            routes::Effect::WantBlocks {
                video,
                reader: Some(r),
                ..
            } => Some(Held::Reader {
                video: video.clone(),
                reader: *r,
            }),
            _ => None,
        });
        if let Some(held) = opened {
            if self.reading.as_ref() != Some(&held) {
                self.stop_reading(store);
            }
            self.reading = Some(held);
        }
    }

    fn start_ingest(&mut self, plan: IngestPlan, ctx: &mut Ctx<'_>) {
        let limits = &ctx.cfg.server.limits;
        if plan.expect_continue {
            self.writer.queue(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if ctx
            .store
            .get(&plan.video)
            .is_some_and(|v| v.ring().is_some())
        {
            log::info!(
                "{}: publisher of {} started at byte {}",
                self.peer,
                plan.video,
                plan.start
            );
        }
        self.reader
            .start_body(plan.framing, limits.max_header_bytes);
        self.deadline = ctx.now + ms(limits.body_timeout_ms);
        self.state = State::Body(Box::new(Ingest {
            cursor: plan.start,
            claimed: plan.start,
            populated: plan.start,
            plan,
        }));
    }

    /// A waiting read: when what it waits for happened, route it again (once); else wait on, within the
    /// deadline it started with.
    fn step_wait_bytes(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let State::WaitBytes {
            wait,
            until,
            fresh,
            after_wants,
            ..
        } = &mut self.state
        else {
            return Step::Blocked;
        };
        let until = *until;
        if ctx.now >= until {
            return Step::Blocked; // on_timeout answers
        }
        let wants_applied = std::mem::replace(fresh, false);
        if !wait.met(ctx.store) {
            if wait.opening {
                // Woken when the start-up opener hands the video over; asked for first.
                if let Some(o) = ctx.store.opening.get_mut(&wait.video) {
                    o.waiters.add(self.token);
                    ctx.store.open_wanted.push(wait.video.clone());
                }
            } else if let Some(v) = ctx.store.get_mut(&wait.video) {
                v.byte_waiters.add(self.token);
            }
            self.deadline = until;
            return Step::Blocked;
        }
        assert!(
            !(wants_applied && *after_wants),
            "BUG: a wait routed after its wants were applied holds at once"
        );
        let State::WaitBytes { head, started, .. } =
            std::mem::replace(&mut self.state, State::Head)
        else {
            return Step::Blocked;
        };
        let routing = Routing {
            started,
            wait_expired: false,
            waited: true,
            wants_applied,
        };
        self.dispatch(head, ctx, routing);
        if let State::WaitBytes { until: u, .. } = &mut self.state {
            // Keep the original deadline across re-routes.
            *u = until;
            self.deadline = until;
        }
        Step::Progress
    }

    fn step_commit(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let State::Commit {
            video,
            claim_seq,
            durable,
            ok,
        } = &mut self.state
        else {
            return Step::Blocked;
        };
        let Some(v) = ctx.store.get_mut(video) else {
            self.respond_error(
                &HttpError::new(500, "video removed during the write"),
                false,
            );
            return Step::Progress;
        };
        let Some(commit) = v.commit() else {
            self.respond_error(
                &HttpError::new(500, "video changed kind during the write"),
                false,
            );
            return Step::Progress;
        };
        if commit.claim_is_committed(*claim_seq, *durable) {
            let plan = ok.take();
            match plan {
                Some(p) => self.start_plan(p),
                None => self.state = State::Head,
            }
            return Step::Progress;
        }
        if let Some(err) = &commit.last_commit_error
            && !commit.commit_in_flight
        {
            let msg = format!("the write arrived but could not be committed: {err}");
            log::error!("video {video}: {msg}");
            self.respond_error(&HttpError::new(500, msg), false);
            return Step::Progress;
        }
        if !v.commit_waiters.contains(&self.token) {
            v.commit_waiters.push(self.token);
        }
        Step::Blocked
    }

    /// At shutdown a live publish has no end to wait for: what arrived is kept and committed, then
    /// the connection closes. True when this body is such a publish.
    fn publish_ended_by_shutdown(&mut self, ctx: &Ctx<'_>) -> bool {
        let State::Body(ing) = &mut self.state else {
            return false;
        };
        let live = ctx
            .store
            .get(&ing.plan.video)
            .is_some_and(|v| v.ring().is_some());
        if !(live && ctx.shutting_down) {
            return false;
        }
        ing.plan.keep_alive = false;
        log::info!(
            "{}: publish to {} ended by shutdown after {} bytes; they are committed",
            self.peer,
            ing.plan.video,
            ing.cursor - ing.plan.start
        );
        true
    }

    /// What a request body's framing says comes next: up to this many payload bytes, the end of the
    /// body (None), or the step to take first (framing to read or parsed, or a malformed body).
    fn body_payload_next(&mut self, ctx: &mut Ctx<'_>) -> Result<Option<u64>, Step> {
        match self.reader.body_next() {
            Ok(BodyNext::Payload(want)) => Ok(Some(want)),
            Ok(BodyNext::End) => Ok(None),
            Ok(BodyNext::Again) => Err(Step::Progress),
            Ok(BodyNext::NeedFraming) => Err(self.read_framing(ctx, CHUNK_LINE_READ)),
            Err(e) => Err(self.body_failed(ctx, e)),
        }
    }

    fn step_body(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if self.publish_ended_by_shutdown(ctx) {
            return self.finish_body(ctx);
        }
        // 1. Framing (chunk-size lines, trailers) is parsed by the read half.
        let want = match self.body_payload_next(ctx) {
            Ok(Some(want)) => want,
            Ok(None) => return self.finish_body(ctx),
            Err(step) => return step,
        };
        let State::Body(ing) = &mut self.state else {
            return Step::Blocked;
        };
        let room = ing.plan.end - ing.cursor;
        if room == 0 {
            let e = HttpError::new(
                413,
                format!(
                    "the body is longer than the {} bytes the write may take",
                    ing.plan.end - ing.plan.start
                ),
            );
            return self.body_failed(ctx, e);
        }
        let n = want.min(room).min(PREFAULT_WINDOW);
        let Some(video) = ctx.store.get_mut(&ing.plan.video) else {
            return self.body_failed(ctx, HttpError::new(500, "video removed during the write"));
        };
        let target = match video.ingest_target(ing.plan.reservation, ing.cursor, n) {
            Ok(t) => t,
            Err(IngestBlock::AwaitCommit) => {
                // A live ring waits for its next write intent to be durable; the socket is not read
                // meanwhile (backpressure on the publisher only).
                if !video.commit_waiters.contains(&self.token) {
                    video.commit_waiters.push(self.token);
                }
                return Step::Blocked;
            }
            Err(IngestBlock::Refused(why)) => {
                return self.body_failed(ctx, HttpError::new(500, why));
            }
        };
        // Fault the next window in with one call before the socket is read into it.
        let ahead = ing.populated.saturating_sub(ing.cursor);
        if ahead < PREFAULT_WINDOW / 2 {
            let from = usize::try_from(ahead)
                .unwrap_or(usize::MAX)
                .min(target.len());
            prefault_for_write(&mut target[from..]);
            ing.populated = ing.cursor + target.len() as u64;
        }
        // 2. Payload: bytes that arrived with framing are moved from the buffer once; the rest is read
        // from the socket straight into the mapping.
        let got = match self.reader.read_payload(&mut self.stream, target) {
            Got::Buffered(k) => k,
            Got::Read(k) => {
                ctx.metrics.bytes_in += k as u64;
                k
            }
            Got::Blocked => {
                self.claim_progress(ctx);
                return Step::Blocked;
            }
            Got::Retry => return Step::Progress,
            Got::Closed => {
                // The client went away mid-body (or the socket failed): keep what arrived, answer
                // nothing.
                self.claim_progress(ctx);
                return Step::Close;
            }
        };
        self.body_received(ctx, got as u64)
    }

    /// `k` body bytes are in the mapping: advance, claim them at once and yield when the turn's
    /// ingest budget is spent.
    fn body_received(&mut self, ctx: &mut Ctx<'_>, k: u64) -> Step {
        let State::Body(ing) = &mut self.state else {
            return Step::Blocked;
        };
        assert!(
            ing.cursor + k <= ing.plan.end,
            "a body read stays inside its reservation"
        );
        ing.cursor += k;
        ctx.metrics.bytes_ingested += k;
        self.reader.body_consumed(k);
        self.deadline = ctx.now + ms(ctx.cfg.server.limits.body_timeout_ms);
        // Claim at once: readers (live followers) see the bytes in this loop turn.
        self.claim_progress(ctx);
        self.received_this_turn += k;
        if self.received_this_turn >= INGEST_BUDGET_PER_TURN {
            // Yield; driven again in this loop iteration's wake rounds or the next one.
            ctx.wake.push(self.token);
            return Step::Blocked;
        }
        Step::Progress
    }

    fn read_framing(&mut self, ctx: &mut Ctx<'_>, max: usize) -> Step {
        if !self.reader.readable {
            return Step::Blocked;
        }
        if self.reader.buffered() > ctx.cfg.server.limits.max_header_bytes + 4096 {
            return self.body_failed(ctx, HttpError::new(400, "chunk framing too long"));
        }
        match self.reader.read_framing(&mut self.stream, max) {
            Got::Read(n) => {
                ctx.metrics.bytes_in += n as u64;
                self.deadline = ctx.now + ms(ctx.cfg.server.limits.body_timeout_ms);
                Step::Progress
            }
            Got::Buffered(_) | Got::Retry => Step::Progress,
            Got::Blocked => {
                self.claim_progress(ctx);
                Step::Blocked
            }
            Got::Closed => {
                self.claim_progress(ctx);
                Step::Close
            }
        }
    }

    /// Claim what has arrived so far and wake readers waiting for it.
    fn claim_progress(&mut self, ctx: &mut Ctx<'_>) {
        let State::Body(ing) = &mut self.state else {
            return;
        };
        if ing.cursor <= ing.claimed {
            return;
        }
        if let Some(v) = ctx.store.get_mut(&ing.plan.video) {
            ing.claimed = v.ingest_claim(ing.plan.reservation, ing.claimed, ing.cursor);
            v.byte_waiters.wake_all(ctx.wake);
        }
    }

    fn body_failed(&mut self, ctx: &mut Ctx<'_>, e: HttpError) -> Step {
        log::info!(
            "{}: write refused mid-body: {} {}",
            self.peer,
            e.status,
            e.message
        );
        self.claim_progress(ctx);
        self.release(ctx.store, ctx.wake);
        self.respond_error(&e, false);
        Step::Progress
    }

    fn finish_body(&mut self, ctx: &mut Ctx<'_>) -> Step {
        self.claim_progress(ctx);
        self.reader.end_body();
        let State::Body(ing) = &self.state else {
            return Step::Blocked;
        };
        let (video, start, cursor, end, exact, keep_alive) = (
            ing.plan.video.clone(),
            ing.plan.start,
            ing.cursor,
            ing.plan.end,
            ing.plan.exact,
            ing.plan.keep_alive,
        );
        if ctx.store.get(&video).is_some_and(|v| v.ring().is_some()) {
            log::info!(
                "{}: publisher of {video} ended after {} bytes (head {cursor})",
                self.peer,
                cursor - start
            );
        }
        // A write is acknowledged only if every byte it received is recorded as present.
        let unrecorded = ing.claimed < ing.cursor;
        let held = Held::Write {
            video: video.clone(),
            reservation: ing.plan.reservation,
        };
        // Followers finish once the publisher has ended and they have caught up.
        routes::release(&held, ctx.store, ctx.wake);
        if unrecorded {
            let e = HttpError::new(
                507,
                "the bytes arrived but could not be recorded (limits.max_presence_ranges); write adjacent ranges",
            );
            log::error!("{}: write to {video} could not be recorded", self.peer);
            self.state = State::Head;
            self.respond_error(&e, false);
            return Step::Progress;
        }
        if exact && cursor != end {
            // A chunked body shorter than its Content-Range: what arrived is kept and claimed.
            let e = HttpError::new(
                400,
                format!(
                    "the body ended after {} of {} bytes",
                    cursor - start,
                    end - start
                ),
            );
            self.state = State::Head;
            self.respond_error(&e, false);
            return Step::Progress;
        }
        self.await_write_commit(ctx, video, start, cursor, keep_alive)
    }

    /// A write of [start, end) is in: its 2xx goes out once the claims made so far are committed
    /// (the fast record in `interval` mode, the durable commit in `always` mode).
    fn await_write_commit(
        &mut self,
        ctx: &mut Ctx<'_>,
        video: String,
        start: u64,
        end: u64,
        keep_alive: bool,
    ) -> Step {
        let claim_seq = match ctx.store.get(&video).and_then(|v| v.commit()) {
            Some(c) => c.claim_seq,
            None => 0,
        };
        let ok = routes::write_done_plan(ctx.store, &video, start, end, keep_alive);
        self.state = State::Commit {
            video,
            claim_seq,
            durable: ctx.cfg.server.sync == SyncMode::Always,
            ok: Some(ok),
        };
        Step::Progress
    }

    fn step_send(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let State::Send { parts, .. } = &mut self.state else {
            return Step::Blocked;
        };
        match parts.front_mut() {
            None => self.finish_response(ctx),
            Some(Part::Bytes(b)) => {
                let bytes = std::mem::take(b);
                parts.pop_front();
                self.writer.queue(&bytes);
                Step::Progress
            }
            Some(Part::Payload { .. }) => self.send_payload(ctx),
            Some(Part::Follow { .. }) => self.send_follow(ctx),
        }
    }

    /// Send what is queued; None once nothing is, else the step to take.
    fn flush_writer(&mut self, ctx: &mut Ctx<'_>) -> Option<Step> {
        if self.writer.is_flushed() {
            return None;
        }
        match self.writer.flush(&mut self.stream) {
            Ok(n) => {
                ctx.metrics.bytes_out += n;
                if let Some(r) = &mut self.record {
                    r.sent += n;
                }
                self.deadline = ctx.now + ms(ctx.cfg.server.limits.send_timeout_ms);
                None
            }
            Err(stop) => Some(stop.into()),
        }
    }

    /// The last part went out: flush, then keep the connection for the next request or close it.
    fn finish_response(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if let Some(step) = self.flush_writer(ctx) {
            return step;
        }
        let State::Send { keep_alive, .. } = &self.state else {
            return Step::Blocked;
        };
        if let Some(r) = self.record.take() {
            r.write(ctx.access_log, self.peer, ctx.now);
        }
        if let Some((status, started)) = self.answering.take() {
            ctx.metrics
                .response(status, ctx.now.saturating_duration_since(started));
        }
        let keep = *keep_alive && !ctx.shutting_down;
        self.waiting_bytes_until = None;
        self.stop_reading(ctx.store);
        if keep {
            self.state = State::Head;
            self.deadline = ctx.now + ms(ctx.cfg.server.limits.idle_timeout_ms);
            return Step::Progress;
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.state = State::Linger { drained: 0 };
        // At shutdown a lingering close must not hold the exit for long.
        let linger = match ctx.shutting_down {
            true => SHUTDOWN_LINGER_TIME,
            false => LINGER_TIME,
        };
        self.deadline = ctx.now + linger;
        Step::Progress
    }

    /// Whether payload may go now: the socket takes more and this turn's budget is not spent (when it
    /// is, the connection queues itself to go on after the others).
    fn can_send(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if !self.writer.writable {
            return false;
        }
        if self.writer.sent_this_turn < SEND_BUDGET_PER_TURN {
            return true;
        }
        ctx.wake.push(self.token);
        false
    }

    /// Bytes [pos, end) of a video: one writev with the queued head, or MSG_MORE + sendfile.
    fn send_payload(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if !self.can_send(ctx) {
            return Step::Blocked;
        }
        let Conn {
            state,
            writer,
            stream,
            peer,
            reading,
            request_started,
            ..
        } = self;
        let State::Send { parts, .. } = state else {
            return Step::Blocked;
        };
        let Some(Part::Payload {
            video,
            pos,
            end,
            generation,
        }) = parts.front_mut()
        else {
            return Step::Blocked;
        };
        if *pos >= *end {
            parts.pop_front();
            return Step::Progress;
        }
        let Some(v) = ctx.store.get_mut(video) else {
            log::info!("{peer}: video {video} went away mid-response");
            return Step::Close;
        };
        if v.generation() != *generation {
            log::info!(
                "{peer}: video {video} changed (DELETE or a new origin object) mid-response; cutting it"
            );
            return Step::Close;
        }
        if let Some(Held::Reader { reader, .. }) = reading {
            // The window moves with what is sent (and to each part of a multipart response).
            routes::read_ahead(ctx.store, video, *reader, *pos, *end - 1, *request_started);
        }
        let Some(v) = ctx.store.get_mut(video) else {
            return Step::Close;
        };
        let avail_end = match v.availability(*pos) {
            Availability::Present(e) => e.min(*end),
            Availability::Pending => return self.wait_for_payload(ctx),
            Availability::Absent | Availability::Gone | Availability::Failed(_) => {
                log::info!(
                    "{peer}: byte {} of {video} is not present (left the live window, or its origin fetch failed); closing",
                    *pos
                );
                return Step::Close;
            }
        };
        let count = (avail_end - *pos).min(SEND_CHUNK);
        let file = v.sendfile_source();
        let use_map = match (ctx.send_path, file) {
            (_, None) | (SendPath::MapSlice | SendPath::Auto, _) => true,
            (SendPath::Sendfile, _) => false,
        };
        let result = match (use_map, file) {
            (false, Some(f)) => writer.send_file(stream, f, *pos, count),
            _ => match v.payload_slice(*pos, *pos + count) {
                Some(slice) => writer.send(stream, slice, b""),
                None => return Step::Close,
            },
        };
        let wrote = match result {
            Ok(w) => w,
            Err(Stop::Close) => {
                log::info!(
                    "{peer}: sending {video} failed (client gone, or the file was truncated)"
                );
                return Step::Close;
            }
            Err(stop) => return stop.into(),
        };
        *pos += wrote.payload;
        if let (Some(Held::Reader { reader, .. }), true) = (&self.reading, wrote.payload > 0) {
            // Every block the bytes just sent came from counts as used.
            routes::sent_through(ctx.store, video, *reader, *pos - wrote.payload, *pos - 1);
        }
        self.waiting_bytes_until = None;
        self.note_sent(ctx, &wrote);
        Step::Progress
    }

    /// The next payload byte is being written by an ingest or a fetch: flush the head and wait (the
    /// writer wakes this connection), at most limits.read_wait_ms.
    fn wait_for_payload(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let State::Send { parts, .. } = &self.state else {
            return Step::Blocked;
        };
        if let Some(Part::Payload { video, .. }) = parts.front()
            && let Some(v) = ctx.store.get_mut(video)
        {
            v.byte_waiters.add(self.token);
        }
        let until = *self
            .waiting_bytes_until
            .get_or_insert(ctx.now + ms(ctx.cfg.server.limits.read_wait_ms));
        if let Some(step) = self.flush_writer(ctx)
            && step != Step::Progress
        {
            return step;
        }
        self.deadline = until;
        Step::Blocked
    }

    /// Count a send in metrics, the turn's budget and the deadline.
    fn note_sent(&mut self, ctx: &mut Ctx<'_>, wrote: &Wrote) {
        ctx.metrics.bytes_out += wrote.framing + wrote.payload;
        ctx.metrics.payload_bytes_out += wrote.payload;
        if let Some(r) = &mut self.record {
            r.sent += wrote.framing + wrote.payload;
        }
        self.writer.sent_this_turn += wrote.payload;
        self.deadline = ctx.now + ms(ctx.cfg.server.limits.send_timeout_ms);
    }

    /// A live follower: announce a chunk of what is present, then send it with its size line and
    /// CRLF in one writev.
    fn send_follow(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if !self.can_send(ctx) {
            return Step::Blocked;
        }
        let Conn {
            state,
            writer,
            stream,
            ..
        } = self;
        let State::Send { parts, .. } = state else {
            return Step::Blocked;
        };
        let Some(Part::Follow {
            video,
            pos,
            chunk_left,
            chunked,
            whole_parts,
            ..
        }) = parts.front_mut()
        else {
            return Step::Blocked;
        };
        if ctx.shutting_down && *chunk_left == 0 {
            // A follow has no end to wait for: at shutdown it ends between chunks, cleanly.
            return self.end_follow(ctx);
        }
        let Some(v) = ctx.store.get(video) else {
            return Step::Close;
        };
        let Some(ring) = v.ring() else {
            return Step::Close;
        };
        let avail = ring.availability(*pos);
        if *chunk_left == 0 {
            let sendable = if *whole_parts {
                ring.whole_parts_availability(*pos)
            } else {
                avail
            };
            let Availability::Present(end) = sendable else {
                return self.follow_no_bytes(ctx, sendable);
            };
            *chunk_left = (end - *pos).min(SEND_CHUNK);
            if *chunked {
                writer.queue_chunk_size(*chunk_left);
            }
        }
        let end = *pos + *chunk_left;
        let slice = match avail {
            Availability::Present(e) if e >= end => v.payload_slice(*pos, end),
            _ => None,
        };
        let Some(slice) = slice else {
            // The window moved past a chunk already announced: cut the response.
            ctx.metrics.followers_dropped += 1;
            return Step::Close;
        };
        let suffix: &[u8] = if *chunked { b"\r\n" } else { b"" };
        let wrote = match writer.send(stream, slice, suffix) {
            Ok(w) => w,
            Err(stop) => return stop.into(),
        };
        if wrote.payload > 0
            && let Some(claimed) = ring.claimed_at(*pos)
        {
            ctx.metrics.follower_delay.observe(claimed.elapsed());
        }
        *pos += wrote.payload;
        *chunk_left -= wrote.payload;
        self.follow_sent += wrote.payload;
        self.note_sent(ctx, &wrote);
        Step::Progress
    }

    /// A follower with no bytes to send at its position: it ends (the publisher is done and it has
    /// caught up), waits for the publisher, or fell out of the window.
    fn follow_no_bytes(&mut self, ctx: &mut Ctx<'_>, avail: Availability) -> Step {
        let State::Send { parts, keep_alive } = &mut self.state else {
            return Step::Blocked;
        };
        let Some(Part::Follow {
            video,
            pos,
            chunked,
            sessions_seen,
            replay,
            ..
        }) = parts.front()
        else {
            return Step::Blocked;
        };
        let Some(v) = ctx.store.get_mut(video) else {
            return Step::Close;
        };
        let Some(ring) = v.ring() else {
            return Step::Close;
        };
        if avail == Availability::Gone {
            // Fell out of the ring's window: say so and close; never send overwritten bytes.
            log::info!(
                "{}: follower of {video} fell behind the live window at {pos}; closing",
                self.peer
            );
            ctx.metrics.followers_dropped += 1;
            if *chunked {
                self.writer
                    .queue(b"0\r\nX-Vcache-Error: fell behind the live window\r\n\r\n");
            }
            parts.clear();
            *keep_alive = false;
            self.stop_following(ctx.store);
            return Step::Progress;
        }
        if ring.publisher.is_none() && (*replay || ring.sessions_ended > *sessions_seen) {
            // The publisher ended and this follower has caught up: done.
            return self.end_follow(ctx);
        }
        v.byte_waiters.add(self.token);
        self.follow_wait(ctx)
    }

    /// End a follow between chunks: the chunked body's last chunk (an HTTP/1.0 follower is closed).
    fn end_follow(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let State::Send { parts, keep_alive } = &mut self.state else {
            return Step::Blocked;
        };
        if let Some(Part::Follow { chunked, .. }) = parts.front() {
            if *chunked {
                self.writer.queue(b"0\r\n\r\n");
            } else {
                *keep_alive = false;
            }
            parts.pop_front();
        }
        if ctx.shutting_down {
            *keep_alive = false;
        }
        self.stop_following(ctx.store);
        Step::Progress
    }

    /// A follower waits for the publisher: its head goes out now, a hang-up gives its place back, and
    /// with no publisher it waits at most the idle timeout.
    fn follow_wait(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if let Some(step) = self.flush_writer(ctx)
            && step != Step::Progress
        {
            return step;
        }
        if self.reader.peer_hung_up(&mut self.stream) {
            return Step::Close;
        }
        self.deadline = ctx.now + ms(ctx.cfg.server.limits.idle_timeout_ms);
        Step::Blocked
    }

    fn step_linger(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let State::Linger { drained } = &mut self.state else {
            return Step::Blocked;
        };
        if ctx.shutting_down {
            self.deadline = self.deadline.min(ctx.now + SHUTDOWN_LINGER_TIME);
        }
        match self.reader.discard(&mut self.stream) {
            Got::Read(n) | Got::Buffered(n) => {
                *drained += n as u64;
                if *drained > LINGER_BYTES {
                    Step::Close
                } else {
                    Step::Progress
                }
            }
            Got::Retry => Step::Progress,
            Got::Blocked => Step::Blocked,
            Got::Closed => Step::Close,
        }
    }
}

/// How a head is routed: when its request started, and what happened since.
#[derive(Debug, Clone, Copy)]
struct Routing {
    started: Instant,
    /// Its wait for bytes ran out.
    wait_expired: bool,
    /// It has waited for bytes.
    waited: bool,
    /// Its wants were applied just before (see `RouteCtx::wants_applied`).
    wants_applied: bool,
}

impl Routing {
    fn new(started: Instant) -> Routing {
        Routing {
            started,
            wait_expired: false,
            waited: false,
            wants_applied: false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Progress,
    Blocked,
    Close,
}

impl From<Stop> for Step {
    fn from(stop: Stop) -> Step {
        match stop {
            Stop::Blocked => Step::Blocked,
            Stop::Retry => Step::Progress,
            Stop::Close => Step::Close,
        }
    }
}

#[cfg(test)]
mod tests;
