//! Request routing: turns one parsed request head into an `Action` for the connection — a response to
//! send (head bytes plus payload parts that point into a video's mapping), a body to ingest into a slot,
//! a wait for bytes not yet written, or a wait for a commit. Pure decisions over the store; no socket I/O.

mod playlist;

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use mio::Token;

use crate::config::{Config, VideoKind, is_valid_video_id};
use crate::http::conditional::{Precondition, evaluate_preconditions, if_range_allows};
use crate::http::date::format_http_date;
use crate::http::range::{
    ByteSpan, RangeSpec, multipart_body_len, multipart_part_header, multipart_trailer,
    parse_content_range, parse_range_header, resolve_ranges,
};
use crate::http::request::{Method, RequestHead, query_param};
use crate::http::response::{PROBLEM_JSON, ResponseHead, json_string, problem_body, simple_parts};
use crate::metrics::Metrics;
use crate::store::origin::{Phase, ReaderId};
use crate::store::{Availability, LiveRing, Store, Video, VideoProblem, WriteRefusal};

/// One piece of a response body.
#[derive(Debug)]
pub enum Part {
    /// Small framing bytes (multipart part headers).
    Bytes(Vec<u8>),
    /// Bytes [pos, end) of a video, sent from its file or mapping, while the video is still at
    /// `generation` (else the response is cut: it never mixes two versions).
    Payload {
        video: String,
        pos: u64,
        end: u64,
        generation: u64,
    },
    /// A live follower: bytes from `pos` on, as the publisher pushes them, in chunks of the chunked
    /// transfer coding (or raw for an HTTP/1.0 client, closed at the end), until the publisher of a
    /// session newer than `sessions_seen` ends and the follower has caught up.
    Follow {
        video: String,
        pos: u64,
        /// Bytes of the current announced chunk still to send.
        chunk_left: u64,
        chunked: bool,
        sessions_seen: u64,
        /// Started behind the head while no publisher was on: a replay of the window that ends once
        /// caught up (a follower at the edge waits for the next session instead).
        replay: bool,
        /// A follower of the HLS resource: sends whole LL-HLS parts only
        /// (`LiveRing::whole_parts_availability`). Like any follower it runs until the publish
        /// session ends (Chromium's native HLS reads `stream.ts` through such open ranges and stops
        /// playing when one ends early, at a segment's end).
        whole_parts: bool,
    },
}

/// RFC 8673: a last-byte-pos at or above 2^53 − 1 asks for a live range that grows with the channel.
pub const LIVE_OPEN_END: u64 = 9_007_199_254_740_991;

/// A response ready to go: its head (kept structured until it is sent), a small body, then payload
/// parts.
#[derive(Debug)]
pub struct Plan {
    pub head: ResponseHead,
    /// A small body (error text, JSON, HTML) sent right after the head; payload goes in `parts`.
    pub body: Vec<u8>,
    pub parts: VecDeque<Part>,
    pub keep_alive: bool,
}

impl Plan {
    /// A head and its small body (no payload parts).
    fn small((head, body): (ResponseHead, Vec<u8>), keep_alive: bool) -> Plan {
        Plan {
            head,
            body,
            parts: VecDeque::new(),
            keep_alive,
        }
    }

    /// Make the response close its connection: `Connection: close` in its head, and no keep-alive.
    pub fn force_close(&mut self) {
        self.keep_alive = false;
        self.head.set_connection(false);
    }

    /// Append the bytes that precede the payload parts: the serialized head and the small body.
    pub fn write_head(&self, out: &mut Vec<u8>) {
        self.head.write_to(out);
        out.extend_from_slice(&self.body);
    }
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A body to read straight into a slot's mapping. `reservation`, `start` and `end` are the store's
/// answer to the write's effect, filled in by `apply`.
#[derive(Debug)]
pub struct IngestPlan {
    pub video: String,
    pub reservation: u64,
    pub start: u64,
    pub end: u64,
    pub framing: Framing,
    pub expect_continue: bool,
    pub keep_alive: bool,
    /// Content-Range writes must fill their range exactly; appends may end early.
    pub exact: bool,
}

/// A ranged PUT of bytes that are all present already: its body is read and compared with them, never
/// written; 200 as for a write if every byte matches, else 409.
#[derive(Debug)]
pub struct VerifyPlan {
    pub video: String,
    pub start: u64,
    pub end: u64,
    pub framing: Framing,
    pub expect_continue: bool,
    pub keep_alive: bool,
}

/// What a request does to the store, as data: `route` decides it without changing anything, `apply`
/// makes it happen once, and `release` undoes what a connection still holds when it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A live follower takes a place (counted against limits.max_followers; `Held::Follower`).
    FollowerJoin { video: String },
    /// An origin video's bytes [first, last] are wanted by a reader (or a warm-up, `warm`) whose
    /// request started at `since`: their missing blocks are queued (`OriginVideo::want`).
    WantBlocks {
        video: String,
        first: u64,
        last: u64,
        warm: bool,
        since: Instant,
        /// A reader (not a warm-up): only its window — the block of `first` and
        /// `[cache] read_ahead_blocks` after it — is wanted now; the window moves as it sends
        /// (`read_ahead`), and goes when it does (`Held::Reader`).
        reader: Option<ReaderId>,
    },
    /// Reserve bytes [start, end) of an upload slot for one write (`Held::Write`); an append's range
    /// is chosen by routing (`Slot::append_range`).
    Reserve { video: String, start: u64, end: u64 },
    /// Take a live channel for one publisher, who appends at the head at most `max` bytes
    /// (`Held::Write`).
    BeginPublish { video: String, max: Option<u64> },
    /// DELETE: forget every byte of the video (acknowledged after its durable commit).
    Forget { video: String },
}

/// What an applied effect gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Done,
    Reserved {
        reservation: u64,
        start: u64,
        end: u64,
    },
    Forgotten {
        claim_seq: u64,
    },
}

/// What a connection holds in the store after `apply`, until `release` gives it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Follower {
        video: String,
    },
    Write {
        video: String,
        reservation: u64,
    },
    /// An origin reader's window of blocks (fetched ahead, never evicted while held).
    Reader {
        video: String,
        reader: ReaderId,
    },
}

/// What a waiting request waits for: the byte at `offset` of `video` to stop being pending — or
/// anything its routing rested on to change (the video is removed or replaced, another version, an
/// origin video's lifecycle moved on). Then the request is routed again, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitFor {
    pub video: String,
    pub offset: u64,
    generation: u64,
    phase: Option<Phase>,
    /// A blocking HLS playlist reload waits for this part of a live channel instead of a byte.
    part: Option<playlist::PartWait>,
    /// Waiting for the video to be opened at start-up (`Store::opening`), not for bytes.
    pub opening: bool,
}

impl WaitFor {
    fn new(id: &str, video: &Video, offset: u64) -> WaitFor {
        WaitFor {
            video: id.to_string(),
            offset,
            generation: video.generation(),
            phase: video.origin().map(|o| o.phase()),
            part: None,
            opening: false,
        }
    }

    /// Wait until a video being opened at start-up is opened (or fails to open).
    fn opened(id: &str) -> WaitFor {
        WaitFor {
            video: id.to_string(),
            offset: 0,
            generation: 0,
            phase: None,
            part: None,
            opening: true,
        }
    }

    /// Is the wait over (route the request again)?
    pub fn met(&self, store: &Store) -> bool {
        if self.opening {
            return !store.opening.contains_key(&self.video);
        }
        // Only configured videos are routable (as in `route_head`).
        let Some(v) = store.videos.get(&self.video) else {
            return true;
        };
        if let Some(part) = &self.part {
            return v.generation() != self.generation || part.met(v);
        }
        v.generation() != self.generation
            || v.origin().map(|o| o.phase()) != self.phase
            || v.availability(self.offset) != Availability::Pending
    }
}

/// The connection's next step once the decision's effects are applied.
#[derive(Debug)]
pub enum Action {
    Respond(Plan),
    Ingest(IngestPlan),
    /// A repeat of present bytes: compare its body with them (nothing is reserved or written).
    Verify(VerifyPlan),
    /// The bytes the request needs are being written or fetched: wait, then route it again.
    WaitForBytes(WaitFor),
    /// Respond with `ok` once the claim is committed as the sync mode promises (or `durable` forces).
    AwaitCommit {
        video: String,
        claim_seq: u64,
        durable: bool,
        ok: Plan,
    },
}

/// What `route` decided: the effects on the store (applied once, by `apply`) and what follows them.
#[derive(Debug)]
pub struct Decision {
    pub effects: Vec<Effect>,
    then: Then,
}

/// What follows a decision's effects; some answers need what the store gave back.
#[derive(Debug)]
enum Then {
    Act(Action),
    /// A write, once its reservation is made.
    Ingest(IngestPlan),
    /// A DELETE, answered `ok` once the forgetting is durable.
    Delete {
        video: String,
        ok: Plan,
        keep_alive: bool,
    },
    /// A warm-up of bytes [first, last]: 202 with the queue it left.
    Fill {
        video: String,
        first: u64,
        last: u64,
        keep_alive: bool,
    },
}

impl Decision {
    fn act(action: Action) -> Decision {
        Decision {
            effects: Vec::new(),
            then: Then::Act(action),
        }
    }

    fn respond(plan: Plan) -> Decision {
        Decision::act(Action::Respond(plan))
    }

    fn with(effects: Vec<Effect>, action: Action) -> Decision {
        Decision {
            effects,
            then: Then::Act(action),
        }
    }
}

/// Everything routing needs to see. Routing only reads.
pub struct RouteCtx<'a> {
    pub store: &'a Store,
    pub cfg: &'a Config,
    pub problems: &'a [VideoProblem],
    pub boundary: &'a str,
    /// True once the request has waited for bytes and the wait ran out.
    pub wait_expired: bool,
    /// The request has waited for bytes (an origin response that waited is a cache MISS).
    pub waited: bool,
    /// When the request's head arrived (a failure after it is reported, one before it is retried).
    pub request_started: Instant,
    /// The origin blocks this request wants were queued just before this routing (the first check of
    /// its wait found the bytes no longer pending): decide without wanting them again.
    pub wants_applied: bool,
    /// For `/metrics`: the counters and the number of open connections.
    pub metrics: &'a Metrics,
    pub open_connections: usize,
    /// The connection asking (an origin reader's window is kept under it).
    pub reader: ReaderId,
    /// SIGTERM's drain (`cluster.drain_ms`) or the shutdown has begun: not ready for new traffic.
    pub draining: bool,
}

/// 404 for a video id that is not configured.
fn no_such_video(id: &str, head_only: bool, keep_alive: bool) -> Plan {
    error_plan(
        404,
        &format!("no video with id {id}"),
        head_only,
        keep_alive,
    )
}

/// A small complete error response: an RFC 9457 problem details body (`application/problem+json`)
/// whose `detail` is `message` (HEAD: the head only).
pub fn error_plan(status: u16, message: &str, head_only: bool, keep_alive: bool) -> Plan {
    error_plan_with(status, message, head_only, keep_alive, &[])
}

fn error_plan_with(
    status: u16,
    message: &str,
    head_only: bool,
    keep_alive: bool,
    extra: &[(&'static str, String)],
) -> Plan {
    let body = problem_body(status, message);
    Plan::small(
        simple_parts(
            status,
            PROBLEM_JSON,
            body.as_bytes(),
            head_only,
            keep_alive,
            extra,
        ),
        keep_alive,
    )
}

fn json_plan(status: u16, body: &str, head_only: bool, keep_alive: bool) -> Plan {
    json_plan_with(status, body, head_only, keep_alive, &[])
}

fn json_plan_with(
    status: u16,
    body: &str,
    head_only: bool,
    keep_alive: bool,
    extra: &[(&'static str, String)],
) -> Plan {
    Plan::small(
        simple_parts(
            status,
            "application/json",
            body.as_bytes(),
            head_only,
            keep_alive,
            extra,
        ),
        keep_alive,
    )
}

/// Constant-time comparison of a presented token with a configured one.
fn token_matches(presented: &[u8], configured: &[u8]) -> bool {
    let mut diff =
        (presented.len() ^ configured.len()) as u8 | ((presented.len() != configured.len()) as u8);
    for (i, c) in configured.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= p ^ c;
    }
    diff == 0
}

/// The bearer token of an Authorization header, if it is one.
fn bearer(head: &RequestHead) -> Option<&str> {
    let v = head.authorization.as_deref()?;
    let (scheme, rest) = v.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.trim())
    } else {
        None
    }
}

/// May this request read (no read token configured, or it carries the read or write token)?
pub fn read_allowed(head: &RequestHead, cfg: &Config) -> bool {
    cfg.server.read_token.is_none()
        || authorized(
            head,
            &[
                cfg.server.read_token.as_deref(),
                cfg.server.write_token.as_deref(),
            ],
        )
}

/// Does the request carry one of the accepted tokens? Every candidate is compared in full.
fn authorized(head: &RequestHead, tokens: &[Option<&str>]) -> bool {
    let presented = bearer(head).unwrap_or("").as_bytes();
    let mut ok = false;
    for t in tokens.iter().flatten() {
        ok |= token_matches(presented, t.as_bytes());
    }
    ok && !presented.is_empty()
}

fn unauthorized(head_only: bool, keep_alive: bool, what: &str) -> Plan {
    error_plan_with(
        401,
        &format!("{what} needs `Authorization: Bearer <token>` with a configured token"),
        head_only,
        keep_alive,
        &[("WWW-Authenticate", "Bearer realm=\"vcache\"".to_string())],
    )
}

/// Decide what one request head means. Pure: the store is only read; what the request changes in it
/// is returned as effects, for `apply`.
pub fn route(head: &RequestHead, ctx: &RouteCtx<'_>) -> Decision {
    let mut decision = route_head(head, ctx);
    // Only an ingest reads a request body. Any other answer to a request with a body closes the
    // connection after it, so that the unread body is never parsed as a next request (a smuggling
    // shape behind a proxy).
    if let Then::Act(Action::Respond(plan)) = &mut decision.then
        && plan.keep_alive
        && head.has_body()
    {
        plan.force_close();
    }
    decision
}

/// Apply a decision's effects to the store, once, and return the connection's next step with what
/// the store gave back (a reservation, a commit sequence). An effect the store refuses — only a
/// reservation or a DELETE, whose last checks need the slot's in-flight writes — is answered with the
/// refusal; such an effect is the decision's only one, so nothing is half applied.
pub fn apply(decision: Decision, store: &mut Store) -> Action {
    let Decision { effects, then } = decision;
    let mut answer = Applied::Done;
    for effect in &effects {
        match apply_effect(effect, store) {
            Ok(Applied::Done) => {}
            Ok(a) => answer = a,
            Err(refusal) => {
                assert_eq!(effects.len(), 1, "a refusable effect comes alone");
                let keep_alive = match &then {
                    Then::Delete { keep_alive, .. } => *keep_alive,
                    _ => false, // a refused write closes: its body is not read
                };
                let status = refusal_status(&refusal);
                return Action::Respond(error_plan(
                    status,
                    &refusal.to_string(),
                    false,
                    keep_alive,
                ));
            }
        }
    }
    match (then, answer) {
        (Then::Act(action), Applied::Done) => action,
        (
            Then::Ingest(mut plan),
            Applied::Reserved {
                reservation,
                start,
                end,
            },
        ) => {
            (plan.reservation, plan.start, plan.end) = (reservation, start, end);
            Action::Ingest(plan)
        }
        (Then::Delete { video, ok, .. }, Applied::Forgotten { claim_seq }) => Action::AwaitCommit {
            video,
            claim_seq,
            durable: true,
            ok,
        },
        (
            Then::Fill {
                video,
                first,
                last,
                keep_alive,
            },
            Applied::Done,
        ) => Action::Respond(fill_accepted(store, &video, first, last, keep_alive)),
        (then, answer) => {
            panic!("BUG: {then:?} does not follow from the effects' answer {answer:?}")
        }
    }
}

/// The video a decision was made about: `route` saw it in the same loop turn, so it is there.
fn routed<'a>(store: &'a mut Store, id: &str) -> &'a mut Video {
    match store.get_mut(id) {
        Some(v) => v,
        None => panic!("BUG: video {id} vanished between route and apply"),
    }
}

/// The one place where effects change the store.
fn apply_effect(effect: &Effect, store: &mut Store) -> Result<Applied, WriteRefusal> {
    let kind_bug =
        |id: &str| -> ! { panic!("BUG: video {id} changed kind between route and apply") };
    match effect {
        Effect::FollowerJoin { video } => {
            let Some(ring) = routed(store, video).ring_mut() else {
                kind_bug(video)
            };
            ring.followers += 1;
            Ok(Applied::Done)
        }
        Effect::WantBlocks {
            video,
            first,
            last,
            warm,
            since,
            reader,
        } => {
            let Some(o) = routed(store, video).origin_mut() else {
                kind_bug(video)
            };
            // A reader's blocks count as used when it sends from them (`read_ahead`).
            match reader {
                Some(r) => {
                    o.read_window(*r, *first, *last, *since);
                }
                None => o.want(*first, *last, *warm, *since),
            }
            Ok(Applied::Done)
        }
        Effect::Reserve { video, start, end } => {
            let Some(slot) = routed(store, video).upload_slot_mut() else {
                kind_bug(video)
            };
            // Routing checked this reservation (`Slot::check_reserve`) in the same loop turn.
            let reservation = match slot.reserve(*start, *end) {
                Ok(r) => r,
                Err(e) => panic!(
                    "BUG: reservation {start}..{end} of {video} refused after routing allowed it: {e}"
                ),
            };
            let (start, end) = (*start, *end);
            Ok(Applied::Reserved {
                reservation,
                start,
                end,
            })
        }
        Effect::BeginPublish { video, max } => {
            let Some(ring) = routed(store, video).ring_mut() else {
                kind_bug(video)
            };
            let start = ring.state.head;
            // A live stream is as long as the publisher keeps sending: the ring bounds the disk.
            let end = max.map_or(u64::MAX, |n| start.saturating_add(n));
            // `ingest` refused a second publisher; nothing else refuses one.
            let reservation = match ring.begin_publish() {
                Ok(r) => r,
                Err(e) => panic!("BUG: publish to {video} refused after routing allowed it: {e}"),
            };
            Ok(Applied::Reserved {
                reservation,
                start,
                end,
            })
        }
        Effect::Forget { video } => match forget(routed(store, video)) {
            Ok(a) => Ok(a),
            Err(e) => panic!("BUG: DELETE of {video} refused after routing allowed it: {e}"),
        },
    }
}

/// Whether DELETE may forget this video's bytes now (`forget` then cannot be refused).
fn check_forget(video: &Video) -> Result<(), WriteRefusal> {
    match &video.body {
        crate::store::Body::Upload(slot) => slot.check_forget(),
        crate::store::Body::Origin(o) => match o.slot() {
            Some(_) if o.fetching_blocks() > 0 => Err(WriteRefusal::Busy(
                "origin fetches of this video are in progress".into(),
            )),
            Some(slot) => slot.check_forget(),
            None => Ok(()),
        },
        crate::store::Body::Live(ring) => ring.check_forget(),
        crate::store::Body::File { .. } => {
            Err(WriteRefusal::Busy("this video cannot be deleted".into()))
        }
    }
}

/// DELETE's effect: forget every byte (the durable commit that follows acknowledges it).
fn forget(video: &mut Video) -> Result<Applied, WriteRefusal> {
    match &mut video.body {
        crate::store::Body::Upload(slot) => slot.forget_all(),
        crate::store::Body::Origin(o) => {
            let fetching = o.fetching_blocks() > 0;
            match o.slot_mut() {
                Some(slot) if !fetching => slot.forget_all(),
                Some(_) => Err(WriteRefusal::Busy(
                    "origin fetches of this video are in progress".into(),
                )),
                None => Ok(()),
            }
        }
        crate::store::Body::Live(ring) => ring.forget_all(),
        crate::store::Body::File { .. } => {
            Err(WriteRefusal::Busy("this video cannot be deleted".into()))
        }
    }?;
    let claim_seq = video.commit().map_or(0, |c| c.claim_seq);
    Ok(Applied::Forgotten { claim_seq })
}

/// Give back what a connection holds: a follower's place, or a write's reservation (what it claimed
/// stays claimed; readers waiting on the video are woken — followers finish once caught up).
pub fn release(held: &Held, store: &mut Store, wake: &mut Vec<Token>) {
    match held {
        Held::Follower { video } => {
            // A reload may have replaced the channel meanwhile: its count starts afresh.
            if let Some(r) = store.get_mut(video).and_then(|v| v.ring_mut()) {
                r.followers = r.followers.saturating_sub(1);
            }
        }
        Held::Reader { video, reader } => {
            if let Some(o) = store.get_mut(video).and_then(|v| v.origin_mut()) {
                o.drop_reader(*reader);
            }
        }
        Held::Write { video, reservation } => {
            if let Some(v) = store.get_mut(video) {
                v.ingest_release(*reservation);
                v.byte_waiters.wake_all(wake);
            }
        }
    }
}

fn route_head(head: &RequestHead, ctx: &RouteCtx<'_>) -> Decision {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let path = head.path.as_str();
    let read_ok = read_allowed(head, ctx.cfg);
    let page = |render: &dyn Fn() -> Plan| match head.method {
        Method::Get | Method::Head if !read_ok => unauthorized(head_only, keep_alive, "reading"),
        Method::Get | Method::Head => render(),
        _ => method_not_allowed("GET, HEAD", head_only, keep_alive),
    };
    match path {
        "/metrics" => return Decision::respond(metrics_page(head, ctx)),
        "/readyz" => return Decision::respond(readiness(head, ctx)),
        "/healthz" => {
            return Decision::respond(match head.method {
                Method::Get | Method::Head => Plan::small(
                    simple_parts(
                        200,
                        "text/plain; charset=utf-8",
                        b"ok\n",
                        head_only,
                        keep_alive,
                        &[],
                    ),
                    keep_alive,
                ),
                _ => method_not_allowed("GET, HEAD", head_only, keep_alive),
            });
        }
        "/" => {
            return Decision::respond(page(&|| {
                let html = CONSOLE_PAGE;
                let extra = [("Cache-Control", "no-store".to_string())];
                let parts = simple_parts(
                    200,
                    "text/html; charset=utf-8",
                    html.as_bytes(),
                    head_only,
                    keep_alive,
                    &extra,
                );
                Plan::small(parts, keep_alive)
            }));
        }
        "/videos" | "/videos/" => {
            return Decision::respond(page(&|| {
                json_plan(200, &videos_json(ctx), head_only, keep_alive)
            }));
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/videos/") else {
        let msg = format!("no resource at {path}");
        return Decision::respond(error_plan(404, &msg, head_only, keep_alive));
    };
    let (id, sub) = match rest.split_once('/') {
        Some((id, sub)) => (id, Some(sub)),
        None => (rest, None),
    };
    if let Some(sub) = sub
        && ctx.store.mounts.get(id).is_some()
    {
        return route_mounted(head, id, sub, read_ok, ctx);
    }
    if !is_valid_video_id(id) {
        return Decision::respond(error_plan(400, "malformed video id", head_only, keep_alive));
    }
    // Only configured videos are routable; a retired one (removed by a reload) is still reachable
    // through `store.get` for the connections that were using it.
    if !ctx.store.videos.contains_key(id) {
        // Being opened at start-up: the request waits for it (limits.read_wait_ms), then 503.
        if let Some(o) = ctx.store.opening.get(id) {
            if !ctx.wait_expired {
                return Decision::act(Action::WaitForBytes(WaitFor::opened(id)));
            }
            let why = format!(
                "video {id} is {}",
                crate::store::opening_message(o.recovering)
            );
            let extra = [("Retry-After", "1".to_string())];
            return Decision::respond(error_plan_with(503, &why, head_only, keep_alive, &extra));
        }
        let Some(p) = ctx.problems.iter().find(|p| p.id == id) else {
            return Decision::respond(no_such_video(id, head_only, keep_alive));
        };
        let why = format!("video {id} is configured but not servable: {}", p.message);
        // Every unavailable video is retried (event_loop::reopen); a locked or opening one soon.
        let retry = match unavailable_reason(&p.message) {
            UnavailableReason::Locked | UnavailableReason::Opening => "1",
            UnavailableReason::Failed | UnavailableReason::SyncFailed => "10",
        };
        let extra = [("Retry-After", retry.to_string())];
        return Decision::respond(error_plan_with(503, &why, head_only, keep_alive, &extra));
    }
    route_video(head, id, sub, read_ok, ctx)
}

/// `/videos/{prefix}/{name}` and what is under it, for an object of an origin mount: it behaves as
/// an origin video with the id `{prefix}/{name}` (`materialize_mount` put it in the store).
fn route_mounted(
    head: &RequestHead,
    prefix: &str,
    sub: &str,
    read_ok: bool,
    ctx: &RouteCtx<'_>,
) -> Decision {
    let (head_only, keep_alive) = (head.method == Method::Head, head.keep_alive);
    let (name, rest) = match sub.split_once('/') {
        Some((name, rest)) => (name, Some(rest)),
        None => (sub, None),
    };
    if !is_valid_video_id(name) {
        let why = format!("malformed object name under mount {prefix}");
        return Decision::respond(error_plan(400, &why, head_only, keep_alive));
    }
    let id = format!("{prefix}/{name}");
    if !ctx.store.videos.contains_key(&id) {
        // Only reads and warm-ups create a mounted object; nothing else has one to act on.
        let why = format!("no cached object {name} under mount {prefix}");
        return Decision::respond(match head.method {
            Method::Get | Method::Head | Method::Post => {
                error_plan(404, &why, head_only, keep_alive)
            }
            _ => method_not_allowed("GET, HEAD, OPTIONS", head_only, keep_alive),
        });
    }
    route_video(head, &id, rest, read_ok, ctx)
}

/// A read (or warm-up) of a mounted object puts the object in the store first, as an origin video
/// with no files yet; routing then treats it like any origin video. The error for a name that cannot
/// be mounted.
pub fn materialize_mount(head: &RequestHead, cfg: &Config, store: &mut Store) -> Option<Plan> {
    if store.mounts.is_empty() || !matches!(head.method, Method::Get | Method::Head | Method::Post)
    {
        return None;
    }
    let (prefix, sub) = head.path.strip_prefix("/videos/")?.split_once('/')?;
    store.mounts.get(prefix)?;
    if !read_allowed(head, cfg) {
        return None; // routing answers 401
    }
    let name = sub.split('/').next().unwrap_or(sub);
    match store.mount(prefix, name) {
        Ok(_) => None,
        Err((status, why)) => Some(error_plan(
            status,
            &why,
            head.method == Method::Head,
            head.keep_alive,
        )),
    }
}

/// `/videos/{id}` and what is under it, for a configured video.
fn route_video(
    head: &RequestHead,
    id: &str,
    sub: Option<&str>,
    read_ok: bool,
    ctx: &RouteCtx<'_>,
) -> Decision {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let respond = Decision::respond;
    let allow = ctx.store.get(id).map_or(ALL_METHODS, video_allow);
    match (sub, head.method) {
        (
            None | Some("offset" | "index.m3u8" | "stream.ts" | "stream.mp4" | "init.mp4"),
            Method::Get | Method::Head,
        ) if !read_ok => respond(unauthorized(head_only, keep_alive, "reading")),
        (None, Method::Get | Method::Head) => serve_video(head, id, Resource::Video, ctx),
        (None, Method::Put | Method::Post) => ingest(head, id, ctx),
        (None, Method::Delete) => delete(head, id, ctx),
        (None, Method::Options) => respond(options(allow, keep_alive)),
        (None, _) => respond(method_not_allowed(allow, head_only, keep_alive)),
        (Some("offset"), Method::Get | Method::Head) => respond(offset_query(head, id, ctx)),
        (Some("offset"), _) => respond(method_not_allowed("GET, HEAD", head_only, keep_alive)),
        (Some("index.m3u8"), Method::Get | Method::Head) => playlist::playlist(head, id, ctx),
        // The same bytes under a name with a media extension: HLS segments' URI (ffmpeg's HLS
        // reader refuses segment URLs without one).
        (Some("stream.ts" | "stream.mp4"), Method::Get | Method::Head) => {
            serve_video(head, id, Resource::HlsStream, ctx)
        }
        (Some("init.mp4"), Method::Get | Method::Head) => {
            respond(playlist::init_segment(head, id, ctx))
        }
        (Some("stream.ts" | "stream.mp4" | "init.mp4"), _) => {
            respond(method_not_allowed("GET, HEAD", head_only, keep_alive))
        }
        (Some("index.m3u8"), _) => respond(method_not_allowed("GET, HEAD", head_only, keep_alive)),
        (Some("fill"), Method::Post) => fill(head, id, ctx),
        (Some("fill"), _) => {
            let allow = ctx.store.get(id).map_or("POST", fill_allow);
            respond(method_not_allowed(allow, head_only, keep_alive))
        }
        (Some(other), _) => respond(error_plan(
            404,
            &format!("no resource {other} under video {id}"),
            head_only,
            keep_alive,
        )),
    }
}

/// What a video being opened after a reload answers meanwhile (503, like any configured video that
/// cannot be served).
pub const OPENING_MESSAGE: &str = "being opened after a reload (its files are checked or created off the event loop); retry shortly";

/// Why a configured video cannot be served now (a label of `vcache_video_unavailable` and `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableReason {
    /// Its data file is flock'ed by another process (an old vcache still shutting down in a restart).
    Locked,
    /// A reload added it and the commit worker is opening it.
    Opening,
    /// Opening it failed for another reason (its message says which); it is retried with a back-off.
    Failed,
    /// A data sync failed: it takes no writes until a restart reopens it from its last durable record
    /// (reads go on).
    SyncFailed,
}

impl UnavailableReason {
    pub fn label(self) -> &'static str {
        match self {
            UnavailableReason::Locked => "locked",
            UnavailableReason::Opening => "opening",
            UnavailableReason::Failed => "open_failed",
            UnavailableReason::SyncFailed => "sync_failed",
        }
    }
}

/// Classify a `VideoProblem` message (the store reports problems as text).
pub fn unavailable_reason(message: &str) -> UnavailableReason {
    if message == OPENING_MESSAGE {
        UnavailableReason::Opening
    } else if message.contains(&crate::store::data_file::DataFileError::Locked.to_string()) {
        UnavailableReason::Locked
    } else {
        UnavailableReason::Failed
    }
}

/// Configured videos that cannot be served now, with why: (id, reason, message). Bounded by the
/// config's videos.
pub fn unavailable_videos<'a>(ctx: &RouteCtx<'a>) -> Vec<(&'a str, UnavailableReason, &'a str)> {
    ctx.cfg
        .videos
        .iter()
        .filter_map(|v| match ctx.store.videos.get(&v.id) {
            Some(open) => open
                .poisoned()
                .map(|why| (v.id.as_str(), UnavailableReason::SyncFailed, why)),
            None => Some(match ctx.problems.iter().find(|p| p.id == v.id) {
                Some(p) => (
                    v.id.as_str(),
                    unavailable_reason(&p.message),
                    p.message.as_str(),
                ),
                None => {
                    let message = match ctx.store.opening.get(&v.id) {
                        Some(o) => crate::store::opening_message(o.recovering),
                        None => OPENING_MESSAGE,
                    };
                    (v.id.as_str(), UnavailableReason::Opening, message)
                }
            }),
        })
        .collect()
}

/// `GET /readyz`: 200 when every configured video can be served and the node is not draining (SIGTERM
/// with `cluster.drain_ms`), else 503 listing the videos that cannot be served and why. `/healthz`
/// stays liveness (the loop answers).
fn readiness(head: &RequestHead, ctx: &RouteCtx<'_>) -> Plan {
    let keep_alive = head.keep_alive && !head.has_body();
    let head_only = head.method == Method::Head;
    if !matches!(head.method, Method::Get | Method::Head) {
        return method_not_allowed("GET, HEAD", head_only, keep_alive);
    }
    let down = unavailable_videos(ctx);
    let list: Vec<String> = down
        .iter()
        .map(|(id, reason, message)| {
            format!(
                "{{\"id\":{},\"reason\":{},\"detail\":{}}}",
                json_string(id),
                json_string(reason.label()),
                json_string(message)
            )
        })
        .collect();
    let ready = down.is_empty() && !ctx.draining;
    let status = if ready { 200 } else { 503 };
    let body = format!(
        "{{\"ready\":{ready},\"draining\":{},\"videos\":{},\"unavailable\":[{}]}}\n",
        ctx.draining,
        ctx.cfg.videos.len(),
        list.join(",")
    );
    let extra = [("Cache-Control", "no-store".to_string())];
    json_plan_with(status, &body, head_only, keep_alive, &extra)
}

/// `GET /metrics` (Prometheus text): the event loop's counters, behind the read token.
fn metrics_page(head: &RequestHead, ctx: &RouteCtx<'_>) -> Plan {
    let keep_alive = head.keep_alive && !head.has_body();
    let head_only = head.method == Method::Head;
    if !matches!(head.method, Method::Get | Method::Head) {
        return method_not_allowed("GET, HEAD", head_only, keep_alive);
    }
    if !read_allowed(head, ctx.cfg) {
        let why = "reading needs `Authorization: Bearer <token>`";
        return error_plan(401, why, head_only, keep_alive);
    }
    let videos: Vec<(String, u64, u64)> = ctx
        .store
        .videos
        .iter()
        .map(|(id, v)| {
            let present = v.cached_ranges().iter().map(|(s, e)| e - s).sum();
            (id.clone(), v.len(), present)
        })
        .collect();
    let unavailable: Vec<(&str, &str)> = unavailable_videos(ctx)
        .into_iter()
        .map(|(id, reason, _)| (id, reason.label()))
        .collect();
    let (mut live_publishers, mut live_followers) = (0, 0);
    for r in ctx.store.videos.values().filter_map(|v| v.ring()) {
        live_publishers += u64::from(r.publisher.is_some());
        live_followers += r.followers as u64;
    }
    let text = ctx.metrics.render(&crate::metrics::Gauges {
        origin: ctx.store.origin_totals,
        cache_space: (
            ctx.store.space.allocated,
            ctx.store.space.max_size,
            ctx.store.space.evicted_total,
            ctx.store.space.evicted_blocks,
        ),
        open_connections: ctx.open_connections,
        videos: &videos,
        unavailable: &unavailable,
        live_publishers,
        live_followers,
    });
    let parts = simple_parts(
        200,
        "text/plain; version=0.0.4",
        text.as_bytes(),
        head_only,
        keep_alive,
        &[],
    );
    Plan::small(parts, keep_alive)
}

/// Every method `/videos/{id}` takes.
const ALL_METHODS: &str = "GET, HEAD, PUT, POST, DELETE, OPTIONS";

/// The methods `/videos/{id}` takes for this video: `file` videos are read-only, `origin` videos are
/// written by their origin only (DELETE forgets what they hold).
fn video_allow(video: &Video) -> &'static str {
    match &video.body {
        crate::store::Body::File { .. } => "GET, HEAD, OPTIONS",
        crate::store::Body::Origin(_) => "GET, HEAD, DELETE, OPTIONS",
        crate::store::Body::Upload(_) | crate::store::Body::Live(_) => ALL_METHODS,
    }
}

/// The methods `/videos/{id}/fill` takes for this video: POST for an `origin` video, none otherwise
/// (an empty `Allow`, RFC 9110 §10.2.1).
fn fill_allow(video: &Video) -> &'static str {
    match video.origin() {
        Some(_) => "POST",
        None => "",
    }
}

fn options(allow: &str, keep_alive: bool) -> Plan {
    let allow = [("Allow", allow.to_string())];
    Plan::small(
        simple_parts(204, "text/plain", b"", true, keep_alive, &allow),
        keep_alive,
    )
}

fn method_not_allowed(allow: &str, head_only: bool, keep_alive: bool) -> Plan {
    let why = match allow {
        "" => "no method is allowed here for this video".to_string(),
        _ => format!("allowed methods here: {allow}"),
    };
    error_plan_with(
        405,
        &why,
        head_only,
        keep_alive,
        &[("Allow", allow.to_string())],
    )
}

fn videos_json(ctx: &RouteCtx<'_>) -> String {
    let mut out = String::from("{\"videos\":[");
    let mut first = true;
    for (id, v) in &ctx.store.videos {
        // A mounted object is listed while it is cached (its length known and files present).
        if crate::store::mounts::is_mounted_id(id) && v.origin().is_some_and(|o| o.len().is_none())
        {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        let ranges: Vec<String> = v
            .cached_ranges()
            .iter()
            .map(|(s, e)| format!("{{\"start\":{s},\"end\":{e}}}"))
            .collect();
        let present: u64 = v.cached_ranges().iter().map(|(s, e)| e - s).sum();
        out.push_str(&format!(
            "{{\"id\":{},\"kind\":{},\"size\":{},\"content_type\":{},\"etag\":{},\"present_bytes\":{present},\"complete\":{},\"cached_ranges\":[{}]}}",
            json_string(id),
            json_string(v.cfg.kind_name()),
            v.len(),
            json_string(&v.content_type),
            json_string(&v.etag()),
            v.is_complete(),
            ranges.join(",")
        ));
        if let Some(o) = v.origin() {
            out.pop();
            out.push_str(&format!(
                ",\"url\":{},\"length\":{},\"validator\":{},\"fill_block\":{},\"fetching_blocks\":{},\"queued_blocks\":{},\"origin_fetches\":{},\"origin_bytes\":{},\"disk_bytes\":{}}}",
                json_string(o.url()),
                o.len().map_or_else(|| "null".to_string(), |n| n.to_string()),
                json_string(o.validator()),
                o.fill_block(),
                o.fetching_blocks(),
                o.queued_blocks(),
                o.fetches(),
                o.fetched_bytes(),
                o.disk_bytes()
            ));
        }
        if let Some(ms) = playlist::duration_ms(v) {
            out.pop();
            out.push_str(&format!(",\"duration_ms\":{ms}}}"));
        }
        if let Some(r) = v.ring() {
            // Insert the live fields before the closing brace of this video's object.
            out.pop();
            out.push_str(&format!(
                ",\"capacity\":{},\"window_start\":{},\"head\":{},\"publishing\":{},\"followers\":{}}}",
                r.capacity(),
                r.window_start(),
                r.state.head,
                r.publisher.is_some(),
                r.followers
            ));
        }
    }
    for (id, o) in &ctx.store.opening {
        if !first {
            out.push(',');
        }
        first = false;
        let kind = ctx.cfg.videos.iter().find(|v| &v.id == id);
        out.push_str(&format!(
            "{{\"id\":{},\"kind\":{},\"opening\":{}}}",
            json_string(id),
            json_string(kind.map_or("unknown", |v| v.kind_name())),
            json_string(crate::store::opening_message(o.recovering))
        ));
    }
    for p in ctx.problems {
        if ctx.store.videos.contains_key(&p.id) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        let kind = ctx
            .cfg
            .videos
            .iter()
            .find(|v| v.id == p.id)
            .map(|v| v.kind_name())
            .unwrap_or("unknown");
        out.push_str(&format!(
            "{{\"id\":{},\"kind\":{},\"error\":{}}}",
            json_string(&p.id),
            json_string(kind),
            json_string(&p.message)
        ));
    }
    out.push_str("]}\n");
    out
}

/// `GET /`: the console page — self-contained (no external scripts, styles or fonts); it renders the
/// videos from `GET /videos` in the browser and refreshes them every second.
const CONSOLE_PAGE: &str = include_str!("console/index.html");

/// The byte offset a `?t=` timecode selects, or the response that refuses it.
fn seek_base(head: &RequestHead, video: &Video, keep_alive: bool) -> Result<u64, Plan> {
    let head_only = head.method == Method::Head;
    let Some(t) = head.query.as_deref().and_then(|q| query_param(q, "t")) else {
        return Ok(0);
    };
    let Some(table) = &video.cfg.seek else {
        return Err(error_plan(
            400,
            &format!(
                "video {} has no seek table ([video.seek] in the config)",
                video.cfg.id
            ),
            head_only,
            keep_alive,
        ));
    };
    match table.offset_of_str(&t, Some(video.len())) {
        Ok(off) => Ok(off),
        Err(crate::seek::SeekError::PastEnd { offset, len }) => Err(error_plan_with(
            416,
            &format!("timecode {t} maps to byte {offset}, past the end of the video ({len} bytes)"),
            head_only,
            keep_alive,
            &[("Content-Range", format!("bytes */{len}"))],
        )),
        Err(e) => Err(error_plan(
            400,
            &format!("timecode {t}: {e}"),
            head_only,
            keep_alive,
        )),
    }
}

fn offset_query(head: &RequestHead, id: &str, ctx: &RouteCtx<'_>) -> Plan {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let Some(video) = ctx.store.get(id) else {
        return no_such_video(id, head_only, keep_alive);
    };
    let Some(t) = head.query.as_deref().and_then(|q| query_param(q, "t")) else {
        return error_plan(
            400,
            "missing query parameter t=HH:MM:SS:FF",
            head_only,
            keep_alive,
        );
    };
    let offset = match video.ring() {
        Some(ring) => live_seek(ring, video.cfg.seek.as_ref(), &t)
            .map_err(|(status, msg)| error_plan(status, &msg, head_only, keep_alive)),
        None => seek_base(head, video, keep_alive),
    };
    match offset {
        Ok(offset) => json_plan(
            200,
            &format!(
                "{{\"id\":{},\"timecode\":{},\"offset\":{offset}}}\n",
                json_string(id),
                json_string(&t)
            ),
            head_only,
            keep_alive,
        ),
        Err(plan) => plan,
    }
}

/// A response head carrying the representation's validators, `Accept-Ranges` and, when the
/// connection ends, `Connection: close`.
fn validated_head(
    status: u16,
    validators: [(&'static str, String); 2],
    keep_alive: bool,
) -> ResponseHead {
    let mut rh = ResponseHead::new(status);
    for (k, v) in validators {
        rh.header(k, v);
    }
    rh.header("Accept-Ranges", "bytes");
    // Explicit both ways: HTTP/1.0 clients keep a connection only when told.
    rh.header(
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
    );
    rh
}

/// The representation selected by `?t=`: bytes [base, len) of the video, with its own validator.
struct Repr {
    base: u64,
    len: u64,
    etag: String,
    modified: SystemTime,
}

impl Repr {
    fn validators(&self) -> [(&'static str, String); 2] {
        [
            ("ETag", self.etag.clone()),
            ("Last-Modified", format_http_date(self.modified)),
        ]
    }
}

/// Which name a video's bytes are asked for under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    /// `/videos/{id}`: a player opening the video itself.
    Video,
    /// `/videos/{id}/stream.ts` or `stream.mp4`: the resource an HLS playlist's byte ranges name.
    /// Its ranges are exact (`bytes=0-` is byte 0, not "the newest keyframe") and a live follower
    /// of it sends whole LL-HLS parts only.
    HlsStream,
}

fn serve_video(head: &RequestHead, id: &str, resource: Resource, ctx: &RouteCtx<'_>) -> Decision {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let Some(video) = ctx.store.get(id) else {
        return Decision::respond(no_such_video(id, head_only, keep_alive));
    };
    if video.ring().is_some() {
        return serve_live(head, id, video, resource, ctx);
    }
    if head.peer && video.origin().is_some_and(|o| o.len().is_none()) {
        return Decision::respond(not_here(head, id));
    }
    if video.origin().is_some_and(|o| o.len().is_none()) {
        return origin_learn(head, id, video, ctx);
    }
    let repr = match representation(head, video) {
        Ok(r) => r,
        Err(plan) => return Decision::respond(plan),
    };
    let range_allowed = match head.if_range.as_deref() {
        Some(ir) => if_range_allows(ir, &repr.etag, repr.modified),
        None => true,
    };
    let specs = match (head.range.as_deref(), range_allowed) {
        // An invalid or non-bytes Range is ignored (RFC 9110 §14.2); more ranges than the limit
        // are served whole, as nginx's max_ranges does.
        (Some(r), true) => parse_range_header(r, ctx.cfg.server.limits.max_ranges).ok(),
        _ => None,
    };
    if head.peer && video.origin().is_some() {
        return Decision::respond(peer_spans(
            head,
            id,
            video,
            specs,
            &repr,
            range_allowed,
            ctx,
        ));
    }
    let Some(specs) = specs else {
        if video.origin().is_some() {
            let spans = whole_span(repr.len);
            return origin_spans(head, id, video, spans, &repr, true, ctx);
        }
        return Decision::respond(whole(head, id, video, &repr, ctx));
    };
    let spans = match resolve_ranges(&specs, repr.len) {
        Ok(s) => s,
        Err(()) => {
            let why = format!(
                "no requested range is inside the {} bytes of the video",
                repr.len
            );
            let extra = [("Content-Range", format!("bytes */{}", repr.len))];
            return Decision::respond(error_plan_with(416, &why, head_only, keep_alive, &extra));
        }
    };
    if video.origin().is_some() {
        return origin_spans(head, id, video, spans, &repr, false, ctx);
    }
    slot_spans(head, id, video, spans, &repr, ctx)
}

/// Another node asks for an origin video's bytes (`X-Vcache-Peer`): answered from the cache only — a
/// 206 with the origin's validator in `X-Vcache-Validator` when every asked byte is here and the
/// asker's If-Range matches, else 504 — never forwarded and never fetched from the origin.
fn peer_spans(
    head: &RequestHead,
    id: &str,
    video: &Video,
    specs: Option<Vec<RangeSpec>>,
    repr: &Repr,
    range_allowed: bool,
    ctx: &RouteCtx<'_>,
) -> Plan {
    let validator = video.origin().map_or("", |o| o.validator());
    let spans = match specs.map(|s| resolve_ranges(&s, repr.len)) {
        Some(Ok(spans)) if range_allowed && !validator.is_empty() => spans,
        _ => return not_here(head, id),
    };
    if cache_status(video, repr.base, &spans, false) != "HIT" {
        return not_here(head, id);
    }
    let mut plan = span_plan(head, id, video, repr, &spans, false, ctx.boundary);
    plan.head.header("X-Cache", "HIT");
    plan.head
        .header(crate::cluster::VALIDATOR_HEADER, validator.to_string());
    plan
}

/// 504 to a peer: the bytes (or the same object) are not here.
fn not_here(head: &RequestHead, id: &str) -> Plan {
    let why =
        format!("a peer request is answered from the cache only: these bytes of {id} are not here");
    error_plan(504, &why, head.method == Method::Head, head.keep_alive)
}

/// The representation a GET selects (`?t=`), or the response that ends the request early: a refused
/// timecode, 304 or 412 (RFC 9110 §13).
fn representation(head: &RequestHead, video: &Video) -> Result<Repr, Plan> {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let base = seek_base(head, video, keep_alive)?;
    let etag = if base == 0 {
        video.etag()
    } else {
        let e = video.etag();
        format!("{}-t{base:x}\"", e.trim_end_matches('"'))
    };
    let repr = Repr {
        base,
        len: video.len() - base,
        etag,
        modified: video.last_modified(),
    };
    match evaluate_preconditions(head, &repr.etag, repr.modified) {
        Precondition::Proceed => Ok(repr),
        Precondition::NotModified => Err(Plan {
            head: validated_head(304, repr.validators(), keep_alive),
            body: Vec::new(),
            parts: VecDeque::new(),
            keep_alive,
        }),
        Precondition::Failed => Err(error_plan(
            412,
            "precondition failed",
            head_only,
            keep_alive,
        )),
    }
}

/// Ranges of an upload or file video: each span is cut at the first byte that is not present; a span
/// that starts in a hole is dropped, or waited for when a writer is filling it.
fn slot_spans(
    head: &RequestHead,
    id: &str,
    video: &Video,
    spans: Vec<ByteSpan>,
    repr: &Repr,
    ctx: &RouteCtx<'_>,
) -> Decision {
    let mut served: Vec<ByteSpan> = Vec::new();
    let mut missing: Vec<ByteSpan> = Vec::new();
    for span in spans {
        match video.availability(repr.base + span.first) {
            Availability::Present(end) => {
                let last = span.last.min(end - repr.base - 1);
                served.push(ByteSpan {
                    first: span.first,
                    last,
                });
            }
            Availability::Pending if !ctx.wait_expired => {
                let wait = WaitFor::new(id, video, repr.base + span.first);
                return Decision::act(Action::WaitForBytes(wait));
            }
            Availability::Pending
            | Availability::Absent
            | Availability::Gone
            | Availability::Failed(_) => missing.push(span),
        }
    }
    if served.is_empty() {
        return Decision::respond(unserved(head, id, &missing, repr, ctx));
    }
    let plan = span_plan(head, id, video, repr, &served, false, ctx.boundary);
    Decision::respond(plan)
}

/// No requested byte can be served: 416 (never written), or 503 when the wait for a writer ran out.
fn unserved(
    head: &RequestHead,
    id: &str,
    missing: &[ByteSpan],
    repr: &Repr,
    ctx: &RouteCtx<'_>,
) -> Plan {
    let head_only = head.method == Method::Head;
    let status = if ctx.wait_expired { 503 } else { 416 };
    let what: Vec<String> = missing
        .iter()
        .map(|s| format!("{}-{}", s.first, s.last))
        .collect();
    let message = if ctx.wait_expired {
        format!(
            "bytes {} are still being written (waited {} ms, limits.read_wait_ms)",
            what.join(","),
            ctx.cfg.server.limits.read_wait_ms
        )
    } else {
        format!(
            "bytes {} of video {id} have not been written; GET /videos lists the cached ranges",
            what.join(",")
        )
    };
    let mut extra = vec![("Content-Range", format!("bytes */{}", repr.len))];
    if status == 503 {
        extra = vec![("Retry-After", "1".to_string())];
    }
    error_plan_with(status, &message, head_only, head.keep_alive, &extra)
}

/// The response for `spans` of a representation: 206 with one part or `multipart/byteranges`, or
/// (`whole`) 200 with everything. Payload parts carry the video's generation, so a response never
/// continues with bytes of another one (after a DELETE or a changed origin object).
fn span_plan(
    head: &RequestHead,
    id: &str,
    video: &Video,
    repr: &Repr,
    spans: &[ByteSpan],
    whole: bool,
    boundary: &str,
) -> Plan {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let generation = video.generation();
    let payload = |s: &ByteSpan| Part::Payload {
        video: id.to_string(),
        pos: repr.base + s.first,
        end: repr.base + s.last + 1,
        generation,
    };
    let mut rh = validated_head(if whole { 200 } else { 206 }, repr.validators(), keep_alive);
    let mut parts = VecDeque::new();
    if whole || spans.len() == 1 {
        rh.header("Content-Type", video.content_type.clone());
        match spans.first() {
            Some(s) if !whole => {
                rh.header("Content-Range", content_range(s.first, s.last, repr.len));
                rh.header("Content-Length", s.len().to_string());
            }
            _ => {
                rh.header("Content-Length", repr.len.to_string());
            }
        }
        if !head_only && let Some(s) = spans.first() {
            parts.push_back(payload(s));
        }
    } else {
        let total = multipart_body_len(boundary, &video.content_type, spans, repr.len);
        rh.header(
            "Content-Type",
            format!("multipart/byteranges; boundary={boundary}"),
        );
        rh.header("Content-Length", total.to_string());
        if !head_only {
            for s in spans {
                parts.push_back(Part::Bytes(
                    multipart_part_header(boundary, &video.content_type, *s, repr.len).into_bytes(),
                ));
                parts.push_back(payload(s));
            }
            parts.push_back(Part::Bytes(multipart_trailer(boundary).into_bytes()));
        }
    }
    Plan {
        head: rh,
        body: Vec::new(),
        parts,
        keep_alive,
    }
}

/// A request without a usable Range: 200 with the whole representation, when every byte is present or
/// being written (the response then streams as bytes arrive); 409 when bytes are missing for good.
fn whole(head: &RequestHead, id: &str, video: &Video, repr: &Repr, ctx: &RouteCtx<'_>) -> Plan {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    if let Some(slot) = video.upload_slot() {
        let missing = slot.presence.missing_in(repr.base, repr.base + repr.len);
        let absent: u64 = missing
            .iter()
            .filter(|(s, _)| slot.availability(*s) == Availability::Absent)
            .map(|(s, e)| e - s)
            .sum();
        if absent > 0 {
            return error_plan(
                409,
                &format!(
                    "video {id} is incomplete: {} of {} bytes are present; ask for a Range inside the cached ranges (GET /videos lists them)",
                    slot.presence.present_bytes(),
                    video.len()
                ),
                head_only,
                keep_alive,
            );
        }
    }
    let spans = whole_span(repr.len);
    span_plan(head, id, video, repr, &spans, true, ctx.boundary)
}

/// The one span of a whole representation of `len` bytes (none when it is empty).
fn whole_span(len: u64) -> Vec<ByteSpan> {
    if len == 0 {
        Vec::new()
    } else {
        vec![ByteSpan {
            first: 0,
            last: len - 1,
        }]
    }
}

/// An origin video whose length is not known yet: fetch the first block (it tells the length and the
/// validator) and route the request again when it lands.
fn origin_learn(head: &RequestHead, id: &str, video: &Video, ctx: &RouteCtx<'_>) -> Decision {
    let head_only = head.method == Method::Head;
    let (wait_expired, wait_ms) = (ctx.wait_expired, ctx.cfg.server.limits.read_wait_ms);
    let Some(o) = video.origin() else {
        return Decision::respond(error_plan(500, "not an origin video", head_only, false));
    };
    let since = ctx.request_started;
    // The block of the first byte asked for tells the length (a 206's Content-Range), so a read
    // in the middle of an object fetches no block it does not send.
    let at = learn_offset(head);
    if let Some((status, why)) = o.failure_since(at, since) {
        return Decision::respond(error_plan(status, &why, head_only, head.keep_alive));
    }
    if wait_expired {
        let why =
            format!("the origin of {id} did not answer within {wait_ms} ms (limits.read_wait_ms)");
        return Decision::respond(error_plan(504, &why, head_only, head.keep_alive));
    }
    let wait = Action::WaitForBytes(WaitFor::new(id, video, at));
    Decision::with(wants(id, &[(at, at)], false, ctx), wait)
}

/// The first byte a request asks for, as far as it can be told without the length: `bytes=a-…`
/// gives `a`; anything else (no range, a suffix range) starts at 0.
fn learn_offset(head: &RequestHead) -> u64 {
    head.range
        .as_deref()
        .and_then(|r| r.trim().strip_prefix("bytes="))
        .and_then(|specs| specs.split(',').next())
        .and_then(|spec| spec.trim().split_once('-'))
        .and_then(|(a, _)| a.trim().parse().ok())
        .unwrap_or(0)
}

/// The effects that want origin bytes [first, last] for each span — none when this request's wants
/// were just applied.
fn wants(id: &str, spans: &[(u64, u64)], warm: bool, ctx: &RouteCtx<'_>) -> Vec<Effect> {
    if ctx.wants_applied {
        return Vec::new();
    }
    let since = ctx.request_started;
    let want = |&(first, last): &(u64, u64)| Effect::WantBlocks {
        video: id.to_string(),
        first,
        last,
        warm,
        since,
        reader: (!warm).then_some(ctx.reader),
    };
    // A reader wants its first span's window now; later spans as its sending reaches them.
    let spans = if warm {
        spans
    } else {
        &spans[..spans.len().min(1)]
    };
    spans.iter().map(want).collect()
}

/// A reader reached byte `pos` of an origin video's response that ends at byte `last`: its window
/// moves there (its missing blocks are wanted) and the block counts as used. Cheap when the window
/// did not move.
pub fn read_ahead(
    store: &mut Store,
    video: &str,
    reader: ReaderId,
    pos: u64,
    last: u64,
    since: Instant,
) {
    let Some(o) = store.get_mut(video).and_then(|v| v.origin_mut()) else {
        return;
    };
    o.move_window(reader, pos, last, since);
}

/// A reader sent bytes [first, last]: the blocks they came from count as used (each once) in the
/// eviction policy.
pub fn sent_through(store: &mut Store, video: &str, reader: ReaderId, first: u64, last: u64) {
    let Some(o) = store.get_mut(video).and_then(|v| v.origin_mut()) else {
        return;
    };
    for b in o.blocks_reached(reader, first, last) {
        store.space.policy.touch(&(video.to_string(), b));
    }
}

/// Serve spans of an origin video: every missing block of them is wanted (fetched once, however
/// many readers wait for it); the response starts once its first byte is here — so an origin that
/// fails before that gives its 502/504 — and then streams as the origin's bytes land.
fn origin_spans(
    head: &RequestHead,
    id: &str,
    video: &Video,
    spans: Vec<ByteSpan>,
    repr: &Repr,
    whole: bool,
    ctx: &RouteCtx<'_>,
) -> Decision {
    let head_only = head.method == Method::Head;
    let effects = match head_only {
        true => Vec::new(),
        false => {
            let wanted: Vec<(u64, u64)> = spans
                .iter()
                .map(|s| (repr.base + s.first, repr.base + s.last))
                .collect();
            wants(id, &wanted, false, ctx)
        }
    };
    let first = spans.first().filter(|_| !head_only);
    let refusal = first.and_then(|f| origin_first_byte(head, id, video, repr.base + f.first, ctx));
    let action = match refusal {
        Some(action) => action,
        None => {
            let mut plan = span_plan(head, id, video, repr, &spans, whole, ctx.boundary);
            if (200..300).contains(&plan.head.status) {
                let status = cache_status(video, repr.base, &spans, ctx.waited);
                plan.head.header("X-Cache", status);
            }
            Action::Respond(plan)
        }
    };
    Decision::with(effects, action)
}

/// An origin video's response as a cache sees it: HIT when every requested byte was here when it was
/// decided, MISS when it waited for the origin for its first byte, PARTIAL when it started from the
/// cache but later bytes are still to come from the origin.
fn cache_status(video: &Video, base: u64, spans: &[ByteSpan], waited: bool) -> &'static str {
    if waited {
        return "MISS";
    }
    let all_here = spans.iter().all(|s| {
        matches!(video.availability(base + s.first), Availability::Present(end) if end > base + s.last)
    });
    if all_here { "HIT" } else { "PARTIAL" }
}

/// Whether a response of an origin video can start at `offset`: None when the byte is here, else the
/// wait for it or the failure to answer. A block that failed before this request started is fetched
/// again (its wanting clears the failure), so it counts as pending — unless its want was just applied
/// and could not clear it.
fn origin_first_byte(
    head: &RequestHead,
    id: &str,
    video: &Video,
    offset: u64,
    ctx: &RouteCtx<'_>,
) -> Option<Action> {
    let head_only = head.method == Method::Head;
    let keep_alive = head.keep_alive;
    let wait_ms = ctx.cfg.server.limits.read_wait_ms;
    // A due revalidation is answered before any cached byte goes out (the wait ends when the origin
    // said 304, or that the object changed).
    if video.origin().is_some_and(|o| o.revalidation_pending()) && !ctx.wait_expired {
        return Some(Action::WaitForBytes(WaitFor::new(id, video, offset)));
    }
    let retried = !ctx.wants_applied
        && video
            .origin()
            .is_some_and(|o| o.failure_since(offset, ctx.request_started).is_none());
    let available = match video.availability(offset) {
        Availability::Failed(_) if retried => Availability::Pending,
        a => a,
    };
    let plan = match available {
        Availability::Present(_) => return None,
        Availability::Pending if !ctx.wait_expired => {
            return Some(Action::WaitForBytes(WaitFor::new(id, video, offset)));
        }
        Availability::Pending => {
            let why = format!(
                "the origin of {id} did not deliver within {wait_ms} ms (limits.read_wait_ms)"
            );
            error_plan(504, &why, head_only, keep_alive)
        }
        Availability::Failed(status) => {
            let why = video
                .origin()
                .and_then(|o| o.failure_of(offset))
                .map_or_else(|| "the origin fetch failed".to_string(), |(_, w)| w);
            error_plan(status, &why, head_only, keep_alive)
        }
        Availability::Absent | Availability::Gone => {
            error_plan(416, "outside the video", head_only, keep_alive)
        }
    };
    Some(Action::Respond(plan))
}

/// `POST /videos/{id}/fill` (+ optional Range): warm an origin video in the background, behind the
/// fills readers are waiting for; 202.
fn fill(head: &RequestHead, id: &str, ctx: &RouteCtx<'_>) -> Decision {
    let keep_alive = head.keep_alive && !head.has_body();
    let cfg = ctx.cfg;
    let video = match writable_video(head, id, cfg, ctx.store, keep_alive, "warming") {
        Ok(v) => v,
        Err(refusal) => return Decision::respond(refusal),
    };
    let Some(o) = video.origin() else {
        let why =
            format!("video {id} is not an origin video; only those are filled from an origin");
        let allow = [("Allow", fill_allow(video).to_string())];
        return Decision::respond(error_plan_with(405, &why, false, keep_alive, &allow));
    };
    let (first, last) = match (o.len(), head.range.as_deref()) {
        (None, _) => {
            // Learn the length first; the whole object is warmed after it.
            let body = format!(
                "{{\"id\":{},\"filling\":\"whole\",\"length\":null}}\n",
                json_string(id)
            );
            let accepted = Action::Respond(json_plan(202, &body, false, keep_alive));
            return Decision::with(wants(id, &[(0, 0)], true, ctx), accepted);
        }
        (Some(0), _) => (0, 0),
        (Some(len), None) => (0, len - 1),
        (Some(len), Some(r)) => {
            let spans = parse_range_header(r, cfg.server.limits.max_ranges)
                .ok()
                .and_then(|specs| resolve_ranges(&specs, len).ok());
            match spans.as_deref() {
                Some([s]) => (s.first, s.last),
                _ => {
                    let extra = [("Content-Range", format!("bytes */{len}"))];
                    let why = "fill takes one satisfiable byte range";
                    return Decision::respond(error_plan_with(416, why, false, keep_alive, &extra));
                }
            }
        }
    };
    Decision {
        effects: wants(id, &[(first, last)], true, ctx),
        then: Then::Fill {
            video: id.to_string(),
            first,
            last,
            keep_alive,
        },
    }
}

/// The 202 of a warm-up whose blocks were just wanted: what it fills and the queue it left.
fn fill_accepted(store: &Store, id: &str, first: u64, last: u64, keep_alive: bool) -> Plan {
    let queued = store
        .get(id)
        .and_then(|v| v.origin())
        .map_or(0, |o| o.queued_blocks());
    let body = format!(
        "{{\"id\":{},\"filling\":{{\"start\":{first},\"end\":{}}},\"queued_blocks\":{queued}}}\n",
        json_string(id),
        last + 1
    );
    json_plan(202, &body, false, keep_alive)
}

/// The byte offset a `t=` selects on a live channel: `-30s` is thirty seconds behind the newest
/// keyframe; `HH:MM:SS:FF` goes through the seek table when the channel has one, else through the
/// keyframe index of the current publish session (time from its first keyframe in the window; frames
/// must be 00 then, as no frame rate is configured).
fn live_seek(
    ring: &crate::store::LiveRing,
    table: Option<&crate::seek::SeekTable>,
    t: &str,
) -> Result<u64, (u16, String)> {
    let no_index = || {
        (
            416,
            "no keyframes are indexed in the window yet (the index covers the current publish session of a video/mp2t channel)".to_string(),
        )
    };
    let index = ring.index.as_ref().filter(|ix| !ix.keyframes.is_empty());
    if let Some(rest) = t.strip_prefix('-') {
        let digits = rest.strip_suffix('s').unwrap_or(rest);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 9 {
            return Err((
                400,
                format!("t={t} is malformed: use -<seconds>s, e.g. -30s"),
            ));
        }
        let secs: u64 = digits
            .parse()
            .map_err(|_| (400, format!("t={t} is malformed")))?;
        let ix = index.ok_or_else(no_index)?;
        return ix.seconds_behind_edge(secs).ok_or((
            416,
            format!("the live window holds less than {secs} s of keyframes"),
        ));
    }
    if let Some(table) = table {
        return table
            .offset_of_str(t, None)
            .map_err(|e| (400, format!("timecode {t}: {e}")));
    }
    let tc = crate::seek::Timecode::parse(t, crate::seek::MAX_FPS)
        .map_err(|e| (400, format!("timecode {t}: {e}")))?;
    if tc.frames != 0 {
        return Err((
            400,
            format!("timecode {t}: this channel has no [video.seek] fps, so frames must be 00"),
        ));
    }
    let secs = u64::from(tc.hours) * 3600 + u64::from(tc.minutes) * 60 + u64::from(tc.seconds);
    let ix = index.ok_or_else(no_index)?;
    ix.at_stream_time(secs * crate::tsindex::PTS_CLOCK_HZ)
        .ok_or((416, format!("timecode {t} is not inside the live window")))
}

/// What a response of a live channel shows of it: its window and the `X-Live-*` headers.
struct LiveView<'a> {
    id: &'a str,
    ring: &'a LiveRing,
    content_type: &'a str,
    window_start: u64,
    live_head: u64,
    info: [(&'static str, String); 5],
    /// Where the channel is published (`X-Vcache-Owner`): a relay's upstream node, or its owner in a
    /// tier.
    owner: Option<String>,
    /// Asked for as the HLS resource (`Resource::HlsStream`).
    hls_resource: bool,
}

impl LiveView<'_> {
    /// A head with the channel's content type and live headers.
    fn response_head(&self, status: u16) -> ResponseHead {
        let mut rh = ResponseHead::new(status);
        rh.header("Content-Type", self.content_type.to_string());
        for (k, v) in &self.info {
            rh.header(k, v.clone());
        }
        if let Some(o) = &self.owner {
            rh.header("X-Vcache-Owner", o.clone());
        }
        rh
    }

    /// 416 for a byte that is not in the window.
    fn outside(&self, first: u64, head_only: bool, keep_alive: bool) -> Decision {
        let (window_start, live_head) = (self.window_start, self.live_head);
        let why = format!(
            "byte {first} is outside the live window {window_start}-{live_head} (offsets below {window_start} have been overwritten)"
        );
        let extra = [("Content-Range", format!("bytes */{live_head}"))];
        Decision::respond(error_plan_with(416, &why, head_only, keep_alive, &extra))
    }
}

/// `bytes FIRST-LAST/LEN`, in a string allocated once at its final size (`format!` grows it twice,
/// on every range response).
fn content_range(first: u64, last: u64, len: u64) -> String {
    use std::fmt::Write as _;
    let mut value = String::with_capacity(6 + 3 * 20 + 2);
    let _ = write!(value, "bytes {first}-{last}/{len}");
    value
}

/// What a GET of a live channel asks for.
enum LiveAsk {
    /// A follower from this offset, with the requested last-byte-pos to echo in a 206.
    Follow { from: u64, echo: Option<u64> },
    /// A bounded range [first, last] inside the window.
    Bounded { first: u64, last: u64 },
}

/// GET/HEAD of a live channel: a follower (no Range, `bytes=a-`, or an RFC 8673 open range), or a
/// bounded range inside the window (waiting, bounded, for bytes not yet published).
fn serve_live(
    head: &RequestHead,
    id: &str,
    video: &Video,
    resource: Resource,
    ctx: &RouteCtx<'_>,
) -> Decision {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let Some(ring) = video.ring() else {
        return Decision::respond(error_plan(500, "not a live channel", head_only, keep_alive));
    };
    let (window_start, live_head) = (ring.window_start(), ring.state.head);
    let view = LiveView {
        id,
        ring,
        content_type: &video.content_type,
        window_start,
        live_head,
        info: [
            ("Accept-Ranges", "bytes".to_string()),
            ("Cache-Control", "no-store".to_string()),
            ("X-Live-Head", live_head.to_string()),
            ("X-Live-Window", format!("{window_start}-{live_head}")),
            ("X-Live-Publishing", ring.publisher.is_some().to_string()),
        ],
        owner: match &video.cfg.kind {
            VideoKind::Live {
                upstream: Some(up), ..
            } => Some(format!("http://{}", up.addr)),
            _ => crate::cluster::owner(&ctx.cfg.cluster, id).map(|o| format!("http://{o}")),
        },
        hls_resource: resource == Resource::HlsStream,
    };
    match live_ask(head, video, &view, ctx) {
        Ok(LiveAsk::Follow { from, echo }) => live_follow(head, &view, from, echo, ctx),
        Ok(LiveAsk::Bounded { first, last }) => live_bounded(head, &view, first, last, ctx),
        Err(refusal) => *refusal,
    }
}

/// Which live response a GET asks for (a timecode picks a follower's start), or the refusal.
fn live_ask(
    head: &RequestHead,
    video: &Video,
    view: &LiveView<'_>,
    ctx: &RouteCtx<'_>,
) -> Result<LiveAsk, Box<Decision>> {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let (ring, window_start, live_head) = (view.ring, view.window_start, view.live_head);
    let t_offset = match head.query.as_deref().and_then(|q| query_param(q, "t")) {
        None => None,
        Some(t) => match live_seek(ring, video.cfg.seek.as_ref(), &t) {
            Ok(off) => Some(off),
            Err((status, msg)) => {
                let refusal = error_plan(status, &msg, head_only, keep_alive);
                return Err(Box::new(Decision::respond(refusal)));
            }
        },
    };
    let ts_aligned = video.content_type.starts_with("video/mp2t");
    let edge = LiveAsk::Follow {
        from: t_offset.unwrap_or_else(|| ring.follow_start(ts_aligned)),
        echo: None,
    };
    let specs = head
        .range
        .as_deref()
        .and_then(|r| parse_range_header(r, ctx.cfg.server.limits.max_ranges).ok());
    Ok(match specs.as_deref() {
        None => edge,
        // `bytes=0-` is what ffmpeg, ffplay and VLC send for any URL: it names no start, so it is a
        // plain follower from the newest keyframe (offset 0 may be gone, or another session's). A
        // playlist's byte ranges are exact: on the HLS resource it is byte 0.
        Some([RangeSpec::From(0)]) if !view.hls_resource => edge,
        Some([RangeSpec::From(a)]) => LiveAsk::Follow {
            from: *a,
            echo: Some(LIVE_OPEN_END),
        },
        Some([RangeSpec::FromTo(a, b)]) if *b >= LIVE_OPEN_END => LiveAsk::Follow {
            from: *a,
            echo: Some(*b),
        },
        Some([RangeSpec::FromTo(a, b)]) => LiveAsk::Bounded {
            first: *a,
            last: *b,
        },
        Some([RangeSpec::Suffix(n)]) => {
            if live_head <= window_start || *n == 0 {
                return Err(Box::new(view.outside(live_head, head_only, keep_alive)));
            }
            LiveAsk::Bounded {
                first: live_head.saturating_sub(*n).max(window_start),
                last: live_head - 1,
            }
        }
        Some(_) => {
            let why = "a live channel serves one range per request";
            let refusal = error_plan(416, why, head_only, keep_alive);
            return Err(Box::new(Decision::respond(refusal)));
        }
    })
}

/// A live follower from `from`: chunked for HTTP/1.1 (raw and closed at the end for 1.0), counted
/// against limits.max_followers.
fn live_follow(
    head: &RequestHead,
    view: &LiveView<'_>,
    from: u64,
    echo: Option<u64>,
    ctx: &RouteCtx<'_>,
) -> Decision {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let (id, ring) = (view.id, view.ring);
    let max_followers = ctx.cfg.server.limits.max_followers;
    if from < view.window_start {
        return view.outside(from, head_only, keep_alive);
    }
    let mut rh = view.response_head(if echo.is_some() { 206 } else { 200 });
    rh.header("X-Live-Start", from.to_string());
    if let Some(last) = echo {
        rh.header("Content-Range", format!("bytes {from}-{last}/*"));
    }
    let chunked = head.minor_version >= 1;
    if head_only {
        rh.connection(keep_alive);
        return Decision::respond(Plan::small((rh, Vec::new()), keep_alive));
    }
    if ring.followers >= max_followers {
        let why = format!("channel {id} has {max_followers} followers (limits.max_followers)");
        let extra = [("Retry-After", "5".to_string())];
        return Decision::respond(error_plan_with(503, &why, false, keep_alive, &extra));
    }
    let keep = keep_alive && chunked;
    if chunked {
        rh.header("Transfer-Encoding", "chunked");
    }
    rh.connection(keep);
    let follow = Part::Follow {
        video: id.to_string(),
        pos: from,
        chunk_left: 0,
        chunked,
        sessions_seen: ring.sessions_ended,
        replay: ring.publisher.is_none() && from < view.live_head,
        whole_parts: view.hls_resource,
    };
    let mut parts = VecDeque::from([follow]);
    if let Some(init) = ring.init_prefix(from).filter(|_| echo.is_none()) {
        // A joiner of an fMP4 channel starts at a fragment: the session's init segment first.
        parts.push_front(Part::Bytes(framed_chunk(init, chunked)));
    }
    let plan = Plan {
        head: rh,
        body: Vec::new(),
        parts,
        keep_alive: keep,
    };
    let join = Effect::FollowerJoin {
        video: id.to_string(),
    };
    Decision::with(vec![join], Action::Respond(plan))
}

/// `bytes` as one chunk of the chunked transfer coding (or as they are, for a raw HTTP/1.0 body).
fn framed_chunk(bytes: &[u8], chunked: bool) -> Vec<u8> {
    if !chunked {
        return bytes.to_vec();
    }
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// A bounded range [first, last] of a live channel; bytes past the head are waited for (at most
/// limits.read_wait_ms), then the range is cut at the head.
fn live_bounded(
    head: &RequestHead,
    view: &LiveView<'_>,
    first: u64,
    mut last: u64,
    ctx: &RouteCtx<'_>,
) -> Decision {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let live_head = view.live_head;
    if first < view.window_start {
        return view.outside(first, head_only, keep_alive);
    }
    if last >= live_head {
        if !ctx.wait_expired {
            let wait = WaitFor {
                video: view.id.to_string(),
                offset: last,
                generation: view.ring.state.generation,
                phase: None,
                part: None,
                opening: false,
            };
            return Decision::act(Action::WaitForBytes(wait));
        }
        if first >= live_head {
            let why = format!(
                "bytes from {first} have not been published yet (waited {} ms, limits.read_wait_ms); the head is {live_head}",
                ctx.cfg.server.limits.read_wait_ms
            );
            let extra = [("Retry-After", "1".to_string())];
            return Decision::respond(error_plan_with(503, &why, head_only, keep_alive, &extra));
        }
        last = live_head - 1;
    }
    let mut rh = view.response_head(206);
    rh.header("Content-Range", format!("bytes {first}-{last}/*"));
    rh.header("Content-Length", (last - first + 1).to_string());
    rh.connection(keep_alive);
    let mut parts = VecDeque::new();
    if !head_only {
        parts.push_back(Part::Payload {
            video: view.id.to_string(),
            pos: first,
            end: last + 1,
            generation: view.ring.state.generation,
        });
    }
    Decision::respond(Plan {
        head: rh,
        body: Vec::new(),
        parts,
        keep_alive,
    })
}

fn write_tokens<'a>(cfg: &'a Config, video: &'a Video) -> [Option<&'a str>; 2] {
    [
        cfg.server.write_token.as_deref(),
        video.cfg.write_token.as_deref(),
    ]
}

fn refusal_status(r: &WriteRefusal) -> u16 {
    match r {
        WriteRefusal::OutOfBounds { .. } => 416,
        WriteRefusal::Overlap { .. } => 409,
        WriteRefusal::TooFragmented { .. } => 507,
        WriteRefusal::Busy(_) => 503,
        WriteRefusal::Full => 409,
        WriteRefusal::PublisherActive => 409,
    }
}

/// The video a write-like request (PUT, POST, DELETE, fill) may change, or the refusal: 404 for an
/// unknown id, 403 when no write token is configured, 401 without a valid one.
fn writable_video<'a>(
    head: &RequestHead,
    id: &str,
    cfg: &Config,
    store: &'a Store,
    keep_alive: bool,
    what: &str,
) -> Result<&'a Video, Plan> {
    let Some(video) = store.get(id) else {
        return Err(no_such_video(id, false, keep_alive));
    };
    let tokens = write_tokens(cfg, video);
    if tokens.iter().all(|t| t.is_none()) {
        let why = "writes are disabled: no write_token is configured";
        return Err(error_plan(403, why, false, keep_alive));
    }
    if !authorized(head, &tokens) {
        return Err(unauthorized(false, keep_alive, what));
    }
    Ok(video)
}

/// A refused write: the connection closes after the answer (its body, if any, is not read).
fn refuse_write(status: u16, why: &str) -> Decision {
    Decision::respond(error_plan(status, why, false, false))
}

fn refuse_write_boxed(status: u16, why: &str) -> Box<Decision> {
    Box::new(refuse_write(status, why))
}

/// PUT or POST of a body: a write into an upload slot (a Content-Range, or an append) or a live
/// channel's publish. Its effect reserves where the body goes.
fn ingest(head: &RequestHead, id: &str, ctx: &RouteCtx<'_>) -> Decision {
    let cfg = ctx.cfg;
    let video = match writable_video(head, id, cfg, ctx.store, false, "writing") {
        Ok(v) => v,
        Err(refusal) => return Decision::respond(refusal),
    };
    let allow = [("Allow", video_allow(video).to_string())];
    if !video.is_writable() {
        let why = format!("video {id} is a read-only file video");
        return Decision::respond(error_plan_with(405, &why, false, false, &allow));
    }
    let framing = match (head.chunked, head.content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => {
            let why = "a write needs Content-Length or Transfer-Encoding: chunked";
            return refuse_write(411, why);
        }
    };
    let max_body = cfg.server.limits.max_body_bytes;
    if let Framing::Length(n) = framing
        && n > max_body
    {
        let why = format!("body of {n} bytes exceeds limits.max_body_bytes = {max_body}");
        return refuse_write(413, &why);
    }
    let max = match framing {
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    let write = match (video.ring(), video.upload_slot()) {
        (Some(ring), _) => match publish_home(head, id, video, cfg) {
            Some(refusal) => Err(refusal),
            None => publish(head, id, ring, max),
        },
        (None, Some(slot)) => slot_write(head, id, slot, framing),
        (None, None) => Err(Box::new(Decision::respond(error_plan_with(
            405,
            &format!("video {id} does not take writes: its bytes come from its origin"),
            false,
            false,
            &allow,
        )))),
    };
    let (effect, exact) = match write {
        Ok(w) => w,
        Err(refusal) => return *refusal,
    };
    let plan = IngestPlan {
        video: id.to_string(),
        reservation: 0,
        start: 0,
        end: 0,
        framing,
        expect_continue: head.expect_continue,
        keep_alive: head.keep_alive,
        exact,
    };
    Decision {
        effects: vec![effect],
        then: Then::Ingest(plan),
    }
}

/// A channel published elsewhere refuses a local publisher, naming where: a relay its upstream (409),
/// a node of a tier that is not the channel's owner the owner (307 to the same path there, so that
/// `curl -L` and HAProxy users reach it; `X-Vcache-Owner` and the problem's detail name it too).
fn publish_home(
    head: &RequestHead,
    id: &str,
    video: &Video,
    cfg: &Config,
) -> Option<Box<Decision>> {
    if let VideoKind::Live {
        upstream: Some(up), ..
    } = &video.cfg.kind
    {
        let why = format!(
            "channel {id} relays {}: publish there, not to this node",
            up.url
        );
        return Some(refuse_write_boxed(409, &why));
    }
    let owner = crate::cluster::publish_elsewhere(&cfg.cluster, id)?;
    let url = format!("http://{owner}{}", head.target);
    let why = format!(
        "channel {id} is published on its owner http://{owner} (the tier's first node for it); publish to {url}"
    );
    let extra = [
        ("Location", url),
        ("X-Vcache-Owner", format!("http://{owner}")),
    ];
    Some(Box::new(Decision::respond(error_plan_with(
        307, &why, false, false, &extra,
    ))))
}

/// A publish to a live channel: appends at its head, one publisher at a time (409 for a second).
fn publish(
    head: &RequestHead,
    id: &str,
    ring: &LiveRing,
    max: Option<u64>,
) -> Result<(Effect, bool), Box<Decision>> {
    if head.content_range.is_some() {
        let why = "a live channel takes appends at its head: send the stream without Content-Range";
        return Err(refuse_write_boxed(400, why));
    }
    if ring.publisher.is_some() {
        let refusal = WriteRefusal::PublisherActive;
        return Err(refuse_write_boxed(
            refusal_status(&refusal),
            &refusal.to_string(),
        ));
    }
    let video = id.to_string();
    Ok((Effect::BeginPublish { video, max }, false))
}

/// A write into an upload slot: bytes of a Content-Range (exactly), or an append. The reservation's
/// remaining checks (other writes in flight, room in the presence map) are the store's. `Err` is the
/// decision instead of a reservation: a refusal, or a `Verify` of a range that is all present.
fn slot_write(
    head: &RequestHead,
    id: &str,
    slot: &crate::store::Slot,
    framing: Framing,
) -> Result<(Effect, bool), Box<Decision>> {
    let video = id.to_string();
    let Some(cr) = head.content_range.as_deref() else {
        let max = match framing {
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        };
        if max == Some(0) {
            return Err(refuse_write_boxed(400, "an append needs a non-empty body"));
        }
        let (start, end) = match slot.append_range(max) {
            Ok(r) => r,
            Err(refusal) => {
                return Err(refuse_write_boxed(
                    refusal_status(&refusal),
                    &refusal.to_string(),
                ));
            }
        };
        return Ok((Effect::Reserve { video, start, end }, max.is_some()));
    };
    if head.method != Method::Put {
        return Err(refuse_write_boxed(400, "Content-Range is only for PUT"));
    }
    let cr = match parse_content_range(cr) {
        Ok(cr) => cr,
        Err(e) => {
            return Err(refuse_write_boxed(
                400,
                &format!("Content-Range: {}", e.message),
            ));
        }
    };
    if let Some(total) = cr.complete_length
        && total != slot.data.len
    {
        let why = format!(
            "Content-Range says the video is {total} bytes; slot {id} is {} bytes",
            slot.data.len
        );
        return Err(refuse_write_boxed(416, &why));
    }
    let Some(end) = cr.last.checked_add(1) else {
        return Err(refuse_write_boxed(400, "Content-Range overflows"));
    };
    let want = end - cr.first;
    if let Framing::Length(n) = framing
        && n != want
    {
        let why = format!("Content-Length {n} does not match Content-Range length {want}");
        return Err(refuse_write_boxed(400, &why));
    }
    let start = cr.first;
    if slot.holds(start, end) {
        // A client retrying a write whose answer it lost: not a reservation but a comparison.
        return Err(Box::new(Decision::act(Action::Verify(VerifyPlan {
            video,
            start,
            end,
            framing,
            expect_continue: head.expect_continue,
            keep_alive: head.keep_alive,
        }))));
    }
    if let Err(refusal) = slot.check_reserve(start, end) {
        return Err(refuse_write_boxed(
            refusal_status(&refusal),
            &refusal.to_string(),
        ));
    }
    Ok((Effect::Reserve { video, start, end }, true))
}

/// The response to a completed write, sent once the claim is committed.
pub fn write_done_plan(store: &Store, id: &str, start: u64, end: u64, keep_alive: bool) -> Plan {
    if let Some(r) = store.get(id).and_then(|v| v.ring()) {
        let body = format!(
            "{{\"id\":{},\"written\":{{\"start\":{start},\"end\":{end}}},\"head\":{},\"window_start\":{}}}\n",
            json_string(id),
            r.state.head,
            r.window_start()
        );
        return json_plan(200, &body, false, keep_alive);
    }
    let (present, complete, len) = match store.get(id).and_then(|v| v.upload_slot()) {
        Some(s) => (
            s.presence.present_bytes(),
            s.presence.is_complete(),
            s.data.len,
        ),
        None => (0, false, 0),
    };
    let body = format!(
        "{{\"id\":{},\"written\":{{\"start\":{start},\"end\":{end}}},\"present_bytes\":{present},\"size\":{len},\"complete\":{complete}}}\n",
        json_string(id)
    );
    json_plan(200, &body, false, keep_alive)
}

fn delete(head: &RequestHead, id: &str, ctx: &RouteCtx<'_>) -> Decision {
    let keep_alive = head.keep_alive && !head.has_body();
    let video = match writable_video(head, id, ctx.cfg, ctx.store, keep_alive, "deleting") {
        Ok(v) => v,
        Err(refusal) => return Decision::respond(refusal),
    };
    if matches!(video.cfg.kind, VideoKind::File { .. }) {
        let why = format!("video {id} is a read-only file video");
        let allow = [("Allow", video_allow(video).to_string())];
        return Decision::respond(error_plan_with(405, &why, false, keep_alive, &allow));
    }
    if let Err(refusal) = check_forget(video) {
        let status = refusal_status(&refusal);
        return Decision::respond(error_plan(status, &refusal.to_string(), false, keep_alive));
    }
    let body = format!("{{\"id\":{},\"deleted\":true}}\n", json_string(id));
    Decision {
        effects: vec![Effect::Forget {
            video: id.to_string(),
        }],
        then: Then::Delete {
            video: id.to_string(),
            ok: json_plan(200, &body, false, keep_alive),
            keep_alive,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{HeadLimits, parse_request_head};

    /// A store with one live channel, in a data directory removed at the end.
    struct Live {
        dir: std::path::PathBuf,
        cfg: Config,
        store: Store,
    }

    impl Drop for Live {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn live() -> Live {
        let dir = std::env::temp_dir().join(format!("vcache-routes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let text = "[server]\ndata_dir = \"data\"\n\n[[video]]\nid = \"ch\"\nkind = \"live\"\ncapacity = 4096\n";
        let cfg = crate::config::parse(text, "test.toml", &dir).expect("config");
        let (store, _) = Store::open(&cfg, [7; 16]).expect("store");
        Live { dir, cfg, store }
    }

    #[test]
    fn routing_is_pure_and_a_followers_place_is_taken_once_and_given_back() {
        let mut l = live();
        let limits = HeadLimits {
            max_request_line: 8192,
            max_head_bytes: 8192,
            max_headers: 64,
        };
        let raw = b"GET /videos/ch HTTP/1.1\r\nHost: x\r\n\r\n";
        let (head, _) = parse_request_head(raw, &limits)
            .expect("head")
            .expect("complete");
        let metrics = Metrics::default();
        let followers = |s: &Store| s.get("ch").and_then(|v| v.ring()).map(|r| r.followers);
        let decide = |store: &Store| {
            let ctx = RouteCtx {
                store,
                cfg: &l.cfg,
                problems: &[],
                boundary: "b",
                wait_expired: false,
                waited: false,
                request_started: Instant::now(),
                wants_applied: false,
                metrics: &metrics,
                open_connections: 1,
                reader: 7,
                draining: false,
            };
            route(&head, &ctx)
        };
        let first = decide(&l.store);
        let second = decide(&l.store);
        let join = [Effect::FollowerJoin {
            video: "ch".to_string(),
        }];
        assert_eq!(first.effects, join);
        assert_eq!(second.effects, join);
        assert_eq!(followers(&l.store), Some(0), "routing changed nothing");
        let Action::Respond(plan) = apply(first, &mut l.store) else {
            panic!("a follower is a response");
        };
        assert!(matches!(plan.parts.front(), Some(Part::Follow { .. })));
        assert_eq!(followers(&l.store), Some(1));
        let held = Held::Follower {
            video: "ch".to_string(),
        };
        release(&held, &mut l.store, &mut Vec::new());
        assert_eq!(followers(&l.store), Some(0));
    }

    #[test]
    fn a_video_being_opened_at_start_up_is_waited_for_then_refused_and_listed() {
        let dir = std::env::temp_dir().join(format!("vcache-routes-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let text = "[server]\ndata_dir = \"data\"\n\n[[video]]\nid = \"up\"\nkind = \"upload\"\nsize = 4096\n";
        let cfg = crate::config::parse(text, "test.toml", &dir).expect("config");
        let mut store = Store::open_empty(&cfg, [7; 16]).expect("store");
        let limits = HeadLimits {
            max_request_line: 8192,
            max_head_bytes: 8192,
            max_headers: 64,
        };
        let metrics = Metrics::default();
        let decide = |store: &Store, raw: &[u8], wait_expired: bool| {
            let (head, _) = parse_request_head(raw, &limits)
                .expect("head")
                .expect("complete");
            let ctx = RouteCtx {
                store,
                cfg: &cfg,
                problems: &[],
                boundary: "b",
                wait_expired,
                waited: wait_expired,
                request_started: Instant::now(),
                wants_applied: false,
                metrics: &metrics,
                open_connections: 1,
                reader: 7,
                draining: false,
            };
            route(&head, &ctx)
        };
        let get = b"GET /videos/up HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n";
        // The request waits for the video, and the wait is over once it is no longer being opened.
        let wait = match decide(&store, get, false).then {
            Then::Act(Action::WaitForBytes(w)) => w,
            _ => panic!("a request to a video being opened waits"),
        };
        assert!(wait.opening && !wait.met(&store));
        // Its wait ran out: 503 with Retry-After, saying so.
        let Then::Act(Action::Respond(plan)) = decide(&store, get, true).then else {
            panic!("a response");
        };
        assert_eq!(plan.head.status, 503);
        assert_eq!(plan.head.get("Retry-After"), Some("1"));
        store.opening.get_mut("up").expect("opening").recovering = true;
        let list = decide(&store, b"GET /videos HTTP/1.1\r\nHost: x\r\n\r\n", false);
        let Then::Act(Action::Respond(plan)) = list.then else {
            panic!("a response");
        };
        let body = String::from_utf8_lossy(&plan.body).into_owned();
        assert!(
            body.contains("\"id\":\"up\",\"kind\":\"upload\",\"opening\":\"being recovered"),
            "{body}"
        );
        store.opening.clear();
        assert!(wait.met(&store), "opened (or failed): route it again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secreT", b"secret"));
        assert!(!token_matches(b"secret1", b"secret"));
        assert!(!token_matches(b"secre", b"secret"));
        assert!(!token_matches(b"", b"secret"));
        // Lengths that differ by a multiple of 256 must not compare equal.
        let long = vec![b'a'; 256 + 3];
        assert!(!token_matches(&long, b"aaa"));
    }
}
