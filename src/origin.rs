//! Outbound origin fetches: non-blocking HTTP/1.1 connections on the event loop that fill origin videos
//! block by block. Each fetch asks for the missing part of one aligned `fill_block` with `Range` (and
//! `If-Range` carrying the stored validator) and reads the response body from the origin socket straight
//! into the video's mapping — the same zero-copy path as a PUT — claiming bytes as they land, so readers
//! stream at the origin's pace. Connections are bounded by `[server] origin_connections`, kept alive and
//! reused; connect, first byte and stalls are bounded by `origin_timeout_ms`. What to fetch is decided in
//! `store::origin`; a changed origin object is forgotten, never mixed with the old bytes.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::cluster::{PEER_HEADER, Peers, VALIDATOR_HEADER};
use crate::http::date::parse_http_date;
use crate::http::range::parse_content_range;
use crate::store::Store;
use crate::store::data_file::prefault_for_write;
use crate::store::origin::{BlockFetch, Phase, REVALIDATION_BLOCK};

/// Origin connections use tokens from here on (client connections use small ones).
pub const ORIGIN_TOKEN_BASE: usize = 1 << 40;
/// Largest origin response head.
const MAX_ORIGIN_HEAD: usize = 16 * 1024;
/// Most response headers parsed.
const MAX_ORIGIN_HEADERS: usize = 64;
/// How long an idle origin connection is kept for reuse.
const ORIGIN_IDLE_KEEP: Duration = Duration::from_secs(30);
/// Most bytes read into the mapping per read(2).
const ORIGIN_READ: u64 = 1 << 20;
/// A fetch faults its block's pages in this far ahead of what has arrived: the first bytes can go to a
/// reader after a quarter of a 1 MiB block is faulted in, not all of it (zero-filling fresh page
/// cache is most of a cold block's cost here).
const PREFAULT_STEP: u64 = 256 << 10;

/// One block fetch.
#[derive(Debug, Clone)]
struct Job {
    video: String,
    block: u64,
    /// The requested bytes, inclusive.
    first: u64,
    last: u64,
    /// Sent as If-Range ("" = none).
    validator: String,
    /// On a reused connection: a close before any answer is retried, not a failure.
    reused: bool,
    /// The peer asked (`[cluster]`), None for the origin; then the peers to ask after it, in order.
    via: Option<SocketAddr>,
    then: Vec<SocketAddr>,
    /// For a peer: `Authorization: Bearer` with the tier's read token, when one is set.
    peer_token: Option<String>,
}

enum OState {
    Connecting(Job),
    Sending {
        job: Job,
        req: Vec<u8>,
        pos: usize,
    },
    Head {
        job: Job,
        buf: Vec<u8>,
    },
    /// A learning fetch waits for the commit worker to create the video's files.
    AwaitSlot {
        job: Job,
        answer: Answer,
        extra: Vec<u8>,
    },
    Body {
        job: Job,
        reservation: u64,
        cursor: u64,
        /// Bytes [cursor, populated) of the target are faulted in for writing.
        populated: u64,
        end: u64,
        keep_alive: bool,
    },
    Idle,
}

struct OriginConn {
    stream: TcpStream,
    addr: SocketAddr,
    state: OState,
    deadline: Instant,
    readable: bool,
    writable: bool,
}

impl OriginConn {
    fn job(&self) -> Option<&Job> {
        match &self.state {
            OState::Connecting(job)
            | OState::Sending { job, .. }
            | OState::Head { job, .. }
            | OState::AwaitSlot { job, .. }
            | OState::Body { job, .. } => Some(job),
            OState::Idle => None,
        }
    }
}

/// What an origin's answer means for a fetch.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Read `[start, end)` of an object of `total` bytes with this validator.
    Body {
        start: u64,
        end: u64,
        total: u64,
        validator: String,
    },
    /// The object is not the one cached: forget the old copy (and its length if `new_length`).
    Changed {
        why: String,
        new_length: bool,
    },
    Fail {
        status: u16,
        why: String,
    },
}

/// A judged answer's body: bytes [start, end) with this validator; `close` if the origin closes after.
#[derive(Debug)]
struct Answer {
    start: u64,
    end: u64,
    validator: String,
    /// The origin's Last-Modified: an origin video answers with it (every node of a tier the same).
    last_modified: Option<SystemTime>,
    close: bool,
}

/// The parts of an origin response head that decide a fetch.
#[derive(Debug, Default)]
struct OriginHead {
    status: u16,
    content_length: Option<u64>,
    content_range: Option<String>,
    chunked: bool,
    validator: String,
    last_modified: Option<SystemTime>,
    /// A peer's `X-Vcache-Validator`: the origin's validator of its copy.
    peer_validator: String,
    close: bool,
}

/// Judge an origin's answer to `job` for an object cached as `known_len` bytes with `known_validator`.
fn judge(job: &Job, h: &OriginHead, known_len: Option<u64>, known_validator: &str) -> Verdict {
    let fail = |why: String| Verdict::Fail { status: 502, why };
    let verdict = judge_answer(job, h, known_len, known_validator);
    match verdict {
        // An empty object has nothing to cache (and a data file cannot be empty).
        Verdict::Body { total: 0, .. } => {
            fail("the origin object is empty; vcache does not cache empty objects".into())
        }
        v => v,
    }
}

fn judge_answer(
    job: &Job,
    h: &OriginHead,
    known_len: Option<u64>,
    known_validator: &str,
) -> Verdict {
    let fail = |why: String| Verdict::Fail { status: 502, why };
    if h.chunked {
        return fail("the origin sent a chunked body; vcache needs Content-Length".into());
    }
    let validator_changed =
        !known_validator.is_empty() && !h.validator.is_empty() && h.validator != known_validator;
    match h.status {
        206 => judge_partial(job, h, known_len, known_validator, validator_changed),
        200 => {
            if !job.validator.is_empty() || validator_changed {
                return Verdict::Changed {
                    why: "the origin answered 200 to If-Range: a new object".into(),
                    new_length: true,
                };
            }
            match (known_len, h.content_length) {
                // A whole object answers a learning fetch of block 0 only: vcache fetches blocks
                // with Range and cannot take another block out of a whole body.
                (None, Some(_)) if job.first > 0 => {
                    fail("the origin ignored the Range request (vcache needs Range support)".into())
                }
                (None, Some(total)) => Verdict::Body {
                    start: 0,
                    end: total,
                    total,
                    validator: h.validator.clone(),
                },
                (None, None) => fail("the origin's 200 has no Content-Length".into()),
                (Some(_), _) => fail("the origin ignored the Range request".into()),
            }
        }
        // The origin has no such object: readers get its 404 (remembered for a while).
        404 | 410 if known_len.is_none() => Verdict::Fail {
            status: 404,
            why: format!("the origin has no such object (it answered {})", h.status),
        },
        // With nothing cached there is nothing to forget: the answer is a failure (no retry loop).
        412 | 416 if known_len.is_none() => fail(format!(
            "the origin answered {} to the first range request (an empty or unavailable object)",
            h.status
        )),
        412 => Verdict::Changed {
            why: "the origin answered 412: the object changed".into(),
            new_length: true,
        },
        416 => Verdict::Changed {
            why: "the origin answered 416: the object is shorter now".into(),
            new_length: true,
        },
        s => fail(format!("the origin answered {s}")),
    }
}

/// A 206: the range asked for (or its start, at the object's end) of the same object.
fn judge_partial(
    job: &Job,
    h: &OriginHead,
    known_len: Option<u64>,
    known_validator: &str,
    validator_changed: bool,
) -> Verdict {
    let fail = |why: String| Verdict::Fail { status: 502, why };
    let Some(cr) = h
        .content_range
        .as_deref()
        .and_then(|v| parse_content_range(v).ok())
    else {
        return fail("the origin's 206 has no usable Content-Range".into());
    };
    let Some(total) = cr.complete_length else {
        return fail("the origin does not say the object's length (Content-Range */*)".into());
    };
    if let Some(n) = known_len
        && n != total
    {
        return Verdict::Changed {
            why: format!("its length changed from {n} to {total} bytes"),
            new_length: true,
        };
    }
    if validator_changed {
        return Verdict::Changed {
            why: format!(
                "its validator changed from {known_validator} to {}",
                h.validator
            ),
            new_length: false,
        };
    }
    if cr.first != job.first || cr.last > job.last.max(cr.first) || cr.last >= total {
        return fail(format!(
            "the origin answered bytes {}-{} for {}-{}",
            cr.first, cr.last, job.first, job.last
        ));
    }
    if h.content_length
        .is_some_and(|n| n != cr.last - cr.first + 1)
    {
        return fail("the origin's Content-Length disagrees with its Content-Range".into());
    }
    Verdict::Body {
        start: cr.first,
        end: cr.last + 1,
        total,
        validator: h.validator.clone(),
    }
}

fn parse_origin_head(buf: &[u8]) -> Result<Option<(OriginHead, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_ORIGIN_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed origin response head: {e}")),
    };
    let mut h = OriginHead {
        status: resp.code.unwrap_or(0),
        close: resp.version == Some(0),
        ..OriginHead::default()
    };
    let mut etag = None;
    let mut last_modified = None;
    for hd in resp.headers.iter() {
        let v = String::from_utf8_lossy(hd.value).trim().to_string();
        let name = hd.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                h.content_length = Some(v.parse().map_err(|_| "bad origin Content-Length")?);
            }
            "content-range" => h.content_range = Some(v),
            "transfer-encoding" => h.chunked = !v.eq_ignore_ascii_case("identity"),
            "etag" => etag = Some(v),
            "x-vcache-validator" => h.peer_validator = v,
            "last-modified" => {
                h.last_modified = parse_http_date(&v);
                last_modified = Some(v);
            }
            "connection" => {
                let l = v.to_ascii_lowercase();
                if l.contains("close") {
                    h.close = true;
                } else if l.contains("keep-alive") {
                    h.close = false;
                }
            }
            _ => {}
        }
    }
    // A weak ETag cannot validate byte ranges (RFC 9110 §13.1.5): fall back to Last-Modified.
    h.validator = match etag {
        Some(e) if !e.starts_with("W/") => e,
        _ => last_modified.unwrap_or_default(),
    };
    Ok(Some((h, used)))
}

fn host_header(host: &str, port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 { h } else { format!("{h}:{port}") }
}

/// The outbound connections and their fetches.
pub struct Fetcher {
    conns: Vec<Option<OriginConn>>,
    free: Vec<usize>,
    limit: usize,
    timeout: Duration,
    /// The other nodes of the tier, asked for a block before its origin (`cluster.rs`).
    pub peers: Peers,
    /// Connections that stopped reading so that the readers their bytes woke go first; driven again
    /// in the next `pump`.
    yielded: Vec<usize>,
}

impl Fetcher {
    pub fn new(limit: usize, timeout_ms: u64) -> Fetcher {
        Fetcher {
            conns: Vec::new(),
            free: Vec::new(),
            limit: limit.max(1),
            timeout: Duration::from_millis(timeout_ms),
            peers: Peers::default(),
            yielded: Vec::new(),
        }
    }

    /// A connection yielded to the readers it woke and waits for its next turn (the loop must not
    /// sleep in poll meanwhile: its socket may hold bytes that bring no new event).
    pub fn wants_turn(&self) -> bool {
        !self.yielded.is_empty()
    }

    /// New bounds from a reload: they apply to the next fetches (fetches in flight finish as they are).
    pub fn set_limits(&mut self, limit: usize, timeout_ms: u64) {
        self.limit = limit.max(1);
        self.timeout = Duration::from_millis(timeout_ms);
    }

    pub fn owns(token: Token) -> bool {
        token.0 >= ORIGIN_TOKEN_BASE
    }

    fn open_count(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// Start fetches for wanted blocks while connections are free.
    pub fn pump(
        &mut self,
        registry: &Registry,
        store: &mut Store,
        wake: &mut Vec<Token>,
        now: Instant,
    ) {
        for index in std::mem::take(&mut self.yielded) {
            self.drive(index, registry, store, wake, now);
        }
        self.relearn(store, wake);
        loop {
            let busy = self
                .conns
                .iter()
                .flatten()
                .filter(|c| c.job().is_some())
                .count();
            if busy >= self.limit {
                return;
            }
            let Some((job, addr)) = pick_job(store) else {
                return;
            };
            let (job, addr) = self.peers_first(job, addr, now);
            if !self.start(job, addr, registry, store, wake, now) {
                return;
            }
        }
    }

    /// With `[cluster] peers`, a block is asked of the other nodes (in rank order) before its origin.
    fn peers_first(&self, mut job: Job, origin: SocketAddr, now: Instant) -> (Job, SocketAddr) {
        if job.block == REVALIDATION_BLOCK {
            return (job, origin); // only the origin says whether its object changed
        }
        let mut peers = self.peers.to_ask(&job.video, now).into_iter();
        match peers.next() {
            Some(first) => {
                job.via = Some(first);
                job.then = peers.collect();
                job.peer_token = self.peers.read_token.clone();
                (job, first)
            }
            None => (job, origin),
        }
    }

    /// Run `job` on a connection to `addr`; false when every connection is busy (it waits).
    fn start(
        &mut self,
        mut job: Job,
        addr: SocketAddr,
        registry: &Registry,
        store: &mut Store,
        wake: &mut Vec<Token>,
        now: Instant,
    ) -> bool {
        let index = match self.conn_for(&mut job, addr, registry, now) {
            Ok(i) => i,
            Err(NoConn::Full) => {
                requeue(store, &job, false);
                return false;
            }
            Err(NoConn::Failed(why)) => {
                let failure = Failure::bad_gateway(job, None, why);
                self.failed(failure, registry, store, wake, now);
                return true;
            }
        };
        if let Some(Some(c)) = self.conns.get_mut(index) {
            c.deadline = now + self.timeout;
            c.state = if job.reused {
                let req = request_bytes(store, &job);
                OState::Sending { job, req, pos: 0 }
            } else {
                OState::Connecting(job)
            };
        }
        self.drive(index, registry, store, wake, now);
        true
    }

    /// A fetch failed. One from a peer that had sent nothing yet goes on to the next peer, then the
    /// origin (a peer that broke the connection rests a while); any other fails its readers.
    fn failed(
        &mut self,
        f: Failure,
        registry: &Registry,
        store: &mut Store,
        wake: &mut Vec<Token>,
        now: Instant,
    ) {
        let Some(peer) = f.job.via else {
            return fail_job(store, wake, f);
        };
        if f.status != 504 || f.reservation.is_some() {
            self.peers.rest(peer, now);
        }
        if f.reservation.is_some() {
            return fail_job(store, wake, f);
        }
        let origin = store.get(&f.job.video).and_then(|v| v.origin()?.addr());
        let Some(origin) = origin else {
            return fail_job(store, wake, f);
        };
        log::debug!(
            "video {}: peer {peer} did not give bytes {}-{}: {}",
            f.job.video,
            f.job.first,
            f.job.last,
            f.why
        );
        let mut job = f.job;
        job.reused = false;
        let addr = if job.then.is_empty() {
            job.via = None;
            origin
        } else {
            let next = job.then.remove(0);
            job.via = Some(next);
            next
        };
        self.start(job, addr, registry, store, wake, now);
    }

    /// A connection for `job`: an idle one to the same origin (the job is then `reused`), else a new
    /// one; at the limit, an idle one to another origin is closed to make room.
    fn conn_for(
        &mut self,
        job: &mut Job,
        addr: SocketAddr,
        registry: &Registry,
        now: Instant,
    ) -> Result<usize, NoConn> {
        let idle = |c: &Option<OriginConn>, same_origin: bool| {
            c.as_ref().is_some_and(|c| {
                matches!(c.state, OState::Idle) && (!same_origin || c.addr == addr)
            })
        };
        if let Some(i) = self.conns.iter().position(|c| idle(c, true)) {
            job.reused = true;
            return Ok(i);
        }
        if self.open_count() >= self.limit {
            match self.conns.iter().position(|c| idle(c, false)) {
                Some(i) => self.close(i, registry),
                None => return Err(NoConn::Full),
            }
        }
        self.connect(addr, registry, now)
            .map_err(|e| NoConn::Failed(format!("cannot connect to the origin {addr}: {e}")))
    }

    /// Origin videos whose object changed length: once the forgetting record is durable, close and
    /// remove their files; the next fetch learns the new length and creates them anew.
    fn relearn(&mut self, store: &mut Store, wake: &mut Vec<Token>) {
        let ids: Vec<String> = store
            .videos
            .iter()
            .filter(|(_, v)| {
                v.origin().is_some_and(|o| o.phase() == Phase::Forgetting)
                    && !v.delete_pending()
                    && v.commit().is_none_or(|c| c.is_settled())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Some(v) = store.get_mut(&id) else {
                continue;
            };
            // The commit worker removes the closed files (unlink and a directory sync are not for the
            // loop); learning the new object waits for it.
            let gone = v.origin_mut().map(|o| {
                let fb = o.fill_block();
                let len = o.len().unwrap_or(0);
                (o.drop_files(), fb, len)
            });
            // Readers waiting for the old object route again: they learn the new one.
            v.byte_waiters.wake_all(wake);
            if let Some((space, fb, len)) = gone {
                store.unregister_space(&id, &space, fb, len, false);
            }
        }
    }

    fn connect(
        &mut self,
        addr: SocketAddr,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<usize> {
        let mut stream = TcpStream::connect(addr)?;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = registry.register(
            &mut stream,
            Token(ORIGIN_TOKEN_BASE + index),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(index);
            return Err(e);
        }
        let _ = stream.set_nodelay(true);
        self.conns[index] = Some(OriginConn {
            stream,
            addr,
            state: OState::Idle,
            deadline: now + self.timeout,
            readable: false,
            writable: false,
        });
        Ok(index)
    }

    fn close(&mut self, index: usize, registry: &Registry) {
        if let Some(Some(mut c)) = self.conns.get_mut(index).map(Option::take) {
            let _ = registry.deregister(&mut c.stream);
            self.free.push(index);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn on_event(
        &mut self,
        token: Token,
        readable: bool,
        writable: bool,
        registry: &Registry,
        store: &mut Store,
        wake: &mut Vec<Token>,
        now: Instant,
    ) {
        let index = token.0 - ORIGIN_TOKEN_BASE;
        if let Some(Some(c)) = self.conns.get_mut(index) {
            c.readable |= readable;
            c.writable |= writable;
        }
        self.drive(index, registry, store, wake, now);
    }

    /// Time out stalled fetches (504 to their readers) and drop idle connections kept too long.
    pub fn sweep(
        &mut self,
        registry: &Registry,
        store: &mut Store,
        wake: &mut Vec<Token>,
        now: Instant,
    ) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            if c.deadline > now {
                continue;
            }
            match c.job().cloned() {
                None => self.close(i, registry),
                Some(job) => {
                    if let Some(peer) = job.via {
                        self.peers.rest(peer, now);
                    }
                    let failure = Failure {
                        job,
                        reservation: reservation_of(&c.state),
                        status: 504,
                        why: format!(
                            "the origin {} did not answer in time (origin_timeout_ms)",
                            c.addr
                        ),
                    };
                    // The connection goes first: a peer's job moves on to the next source.
                    self.close(i, registry);
                    self.failed(failure, registry, store, wake, now);
                }
            }
        }
    }

    /// The commit worker created (or failed to create) an origin video's files: install the slot and
    /// let the fetches that waited for it read their bodies.
    pub fn slot_created(
        &mut self,
        video: &str,
        result: Result<crate::store::Slot, String>,
        registry: &Registry,
        store: &mut Store,
        wake: &mut Vec<Token>,
        now: Instant,
    ) {
        let failed = install_slot(store, video, result);
        for i in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get_mut(i) else {
                continue;
            };
            if !matches!(&c.state, OState::AwaitSlot { job, .. } if job.video == video) {
                continue;
            }
            let OState::AwaitSlot { job, answer, extra } =
                std::mem::replace(&mut c.state, OState::Idle)
            else {
                continue;
            };
            if let Some(why) = &failed {
                fail_job(store, wake, Failure::bad_gateway(job, None, why.clone()));
                self.close(i, registry);
                continue;
            }
            match begin_body(c, store, wake, job, answer, &extra) {
                OStep::Fail(failure) => {
                    fail_job(store, wake, failure);
                    self.close(i, registry);
                }
                _ => self.drive(i, registry, store, wake, now),
            }
        }
    }

    /// Close every connection (shutdown); what arrived stays claimed.
    pub fn close_all(&mut self, registry: &Registry, store: &mut Store) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            if let (Some(job), Some(res)) = (c.job(), reservation_of(&c.state))
                && let Some(s) = store
                    .get_mut(&job.video)
                    .and_then(|v| v.origin_mut())
                    .and_then(|o| o.slot_mut())
            {
                s.release(res);
            }
            self.close(i, registry);
        }
    }

    /// Abort the fetches of one video (its object changed): their blocks are wanted again.
    fn abort_video(&mut self, video: &str, registry: &Registry, store: &mut Store) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            let Some(block) = c.job().filter(|j| j.video == video).map(|j| j.block) else {
                continue;
            };
            let res = reservation_of(&c.state);
            if let Some(o) = store.get_mut(video).and_then(|v| v.origin_mut()) {
                o.fetch_again(block, res, false);
            }
            self.close(i, registry);
        }
    }

    fn drive(
        &mut self,
        index: usize,
        registry: &Registry,
        store: &mut Store,
        wake: &mut Vec<Token>,
        now: Instant,
    ) {
        loop {
            let step = match self.conns.get_mut(index) {
                Some(Some(c)) => step(c, store, wake, now, self.timeout),
                _ => return,
            };
            match step {
                OStep::Progress => continue,
                OStep::Blocked => return,
                OStep::Yield => {
                    self.yielded.push(index);
                    return;
                }
                OStep::Close => {
                    self.close(index, registry);
                    return;
                }
                OStep::Retry(job) => {
                    // A reused connection the origin had closed: try again on a fresh one.
                    self.close(index, registry);
                    requeue(store, &job, true);
                    return;
                }
                OStep::Fail(failure) => {
                    self.close(index, registry);
                    self.failed(failure, registry, store, wake, now);
                    return;
                }
                // A peer's copy of another object proves nothing: the origin decides.
                OStep::Changed { job, why, .. } if job.via.is_some() => {
                    self.close(index, registry);
                    let failure = Failure::bad_gateway(job, None, why);
                    self.failed(failure, registry, store, wake, now);
                    return;
                }
                OStep::Changed {
                    job,
                    why,
                    new_length,
                } => {
                    self.close(index, registry);
                    object_changed(store, wake, &job, &why, new_length);
                    self.abort_video(&job.video, registry, store);
                    return;
                }
            }
        }
    }
}

/// Why no connection could be had for a job.
enum NoConn {
    /// Every connection is busy: the job waits.
    Full,
    /// Connecting failed at once.
    Failed(String),
}

/// What one step of an origin connection did.
enum OStep {
    Progress,
    Blocked,
    /// Bytes woke readers: drive them first, then this connection again (`Fetcher::yielded`).
    Yield,
    Close,
    /// A reused connection the origin had closed before answering: the job goes first on a fresh one.
    Retry(Job),
    Fail(Failure),
    /// The answer shows another object than the cached one.
    Changed {
        job: Job,
        why: String,
        new_length: bool,
    },
}

/// A fetch that failed: its waiting readers get `status` (502 or 504) and `why`; its reservation, if
/// it had one, ends (the bytes that arrived stay claimed).
struct Failure {
    job: Job,
    reservation: Option<u64>,
    status: u16,
    why: String,
}

impl Failure {
    fn bad_gateway(job: Job, reservation: Option<u64>, why: impl Into<String>) -> Failure {
        let why = why.into();
        Failure {
            job,
            reservation,
            status: 502,
            why,
        }
    }
}

/// A 502 step for `job`.
fn fail(job: &Job, reservation: Option<u64>, why: impl Into<String>) -> OStep {
    OStep::Fail(Failure::bad_gateway(job.clone(), reservation, why))
}

fn reservation_of(state: &OState) -> Option<u64> {
    match state {
        OState::Body { reservation, .. } => Some(*reservation),
        _ => None,
    }
}

/// The next wanted block of any origin video (readers' before warm-ups', across videos), as a job
/// and the address to fetch it from.
fn pick_job(store: &mut Store) -> Option<(Job, SocketAddr)> {
    for warm_pass in [false, true] {
        for (id, v) in store.videos.iter_mut() {
            if v.delete_pending() {
                continue;
            }
            let Some(o) = v.origin_mut() else { continue };
            if !warm_pass && !o.has_client_work() {
                continue;
            }
            let Some(addr) = o.addr() else {
                continue;
            };
            // A due revalidation goes before the video's blocks (its readers wait for it).
            let fetch = if o.start_revalidation() {
                BlockFetch {
                    block: REVALIDATION_BLOCK,
                    first: 0,
                    last: 0,
                }
            } else if let Some(fetch) = o.start_fetch() {
                fetch
            } else {
                continue;
            };
            let job = Job {
                video: id.clone(),
                block: fetch.block,
                first: fetch.first,
                last: fetch.last,
                validator: o.validator().to_string(),
                reused: false,
                via: None,
                then: Vec::new(),
                peer_token: None,
            };
            return Some((job, addr));
        }
    }
    None
}

fn request_bytes(store: &Store, job: &Job) -> Vec<u8> {
    let Some(o) = store.get(&job.video).and_then(|v| v.origin()) else {
        return Vec::new();
    };
    let (host, port, path) = o.target();
    let (host, path) = match job.via {
        Some(peer) => (
            format!("{peer}\r\n{PEER_HEADER}: 1"),
            format!("/videos/{}", job.video),
        ),
        None => (host_header(host, port), path.to_string()),
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={}-{}\r\nUser-Agent: vcache/{}\r\nAccept-Encoding: identity\r\n",
        job.first,
        job.last,
        env!("CARGO_PKG_VERSION")
    );
    if job.block == REVALIDATION_BLOCK {
        // Has the object changed? A 304 says no; an ETag is asked by If-None-Match, a date by
        // If-Modified-Since.
        let v = &job.validator;
        let header = if v.starts_with('"') || v.starts_with("W/") {
            "If-None-Match"
        } else {
            "If-Modified-Since"
        };
        req.push_str(&format!("{header}: {v}\r\n"));
    } else if !job.validator.is_empty() {
        req.push_str(&format!("If-Range: {}\r\n", job.validator));
    }
    if let (Some(token), Some(_)) = (&job.peer_token, job.via) {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// The job did not run (or must run again): its block is wanted again, `first` for a retry.
fn requeue(store: &mut Store, job: &Job, first: bool) {
    if let Some(o) = store.get_mut(&job.video).and_then(|v| v.origin_mut()) {
        o.fetch_again(job.block, None, first);
    }
}

/// A fetch failed: its readers get the status; bytes that arrived stay claimed.
fn fail_job(store: &mut Store, wake: &mut Vec<Token>, f: Failure) {
    log::warn!(
        "video {}: origin fetch of bytes {}-{} failed: {}",
        f.job.video,
        f.job.first,
        f.job.last,
        f.why
    );
    if let Some(v) = store.get_mut(&f.job.video) {
        if let Some(o) = v.origin_mut() {
            o.fetch_failed(f.job.block, f.reservation, f.status, f.why);
        }
        v.byte_waiters.wake_all(wake);
    }
    store.origin_totals.failures += 1;
}

/// The commit worker's answer for a video's files: the slot goes in (None), or why the fetches that
/// waited for it fail.
fn install_slot(
    store: &mut Store,
    video: &str,
    result: Result<crate::store::Slot, String>,
) -> Option<String> {
    let origin = store.get_mut(video).and_then(|v| v.origin_mut());
    let creating = origin
        .as_ref()
        .is_some_and(|o| o.phase() == Phase::Creating);
    match (result, origin) {
        (Ok(slot), Some(o)) if creating => {
            o.files_created(slot);
            log::info!(
                "video {video}: origin object is {} bytes (validator {:?})",
                o.len().unwrap_or(0),
                o.validator()
            );
            None
        }
        (Ok(_), None) => None,
        (Ok(_), Some(_)) => {
            // A reload replaced the video while the files were created: they are not its.
            log::warn!("video {video}: files created for a video that no longer waits for them");
            Some("the video changed while its data file was created".into())
        }
        (Err(e), o) => {
            if let Some(o) = o.filter(|_| creating) {
                o.files_failed();
            }
            Some(format!("cannot create the data file: {e}"))
        }
    }
}

/// The origin object is not the cached one: forget the old copy (its files too if the length changed)
/// and fetch again; readers of the old generation are cut, none gets bytes of two versions.
fn object_changed(
    store: &mut Store,
    wake: &mut Vec<Token>,
    job: &Job,
    why: &str,
    new_length: bool,
) {
    log::warn!(
        "video {}: the origin object changed ({why}); forgetting the cached copy",
        job.video
    );
    let Some(v) = store.get_mut(&job.video) else {
        return;
    };
    if let Some(o) = v.origin_mut() {
        o.object_changed(job.block, new_length);
    }
    v.byte_waiters.wake_all(wake);
}

/// One step of an origin connection's state machine: connect, send the request, read the head and
/// judge it, read the body into the mapping, finish (idle for reuse, or close).
fn step(
    c: &mut OriginConn,
    store: &mut Store,
    wake: &mut Vec<Token>,
    now: Instant,
    timeout: Duration,
) -> OStep {
    match c.state {
        OState::Idle => step_idle(c),
        OState::Connecting(_) => step_connect(c, store),
        OState::Sending { .. } => step_send(c, now, timeout),
        OState::Head { .. } => step_head(c, store, wake, now, timeout),
        OState::AwaitSlot { .. } => OStep::Blocked,
        OState::Body { .. } => step_body(c, store, wake, now, timeout),
    }
}

/// An idle connection that turns readable was closed (or sent garbage): drop it.
fn step_idle(c: &mut OriginConn) -> OStep {
    if !c.readable {
        return OStep::Blocked;
    }
    let mut b = [0u8; 256];
    match c.stream.read(&mut b) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            c.readable = false;
            OStep::Blocked
        }
        _ => OStep::Close,
    }
}

/// Connecting: once writable, the socket's error and its peer tell whether it connected.
fn step_connect(c: &mut OriginConn, store: &Store) -> OStep {
    let OState::Connecting(job) = &c.state else {
        unreachable!("step_connect on another state");
    };
    if !c.writable {
        return OStep::Blocked;
    }
    let refused = |e: io::Error| {
        fail(
            job,
            None,
            format!("cannot connect to the origin {}: {e}", c.addr),
        )
    };
    match c.stream.take_error() {
        Ok(Some(e)) | Err(e) => return refused(e),
        Ok(None) => {}
    }
    match c.stream.peer_addr() {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            c.writable = false;
            return OStep::Blocked;
        }
        Err(e) => return refused(e),
    }
    let job = job.clone();
    let req = request_bytes(store, &job);
    c.state = OState::Sending { job, req, pos: 0 };
    OStep::Progress
}

/// Send the request; then wait for the head (the deadline restarts: it bounds the first byte).
fn step_send(c: &mut OriginConn, now: Instant, timeout: Duration) -> OStep {
    let OState::Sending { job, req, pos } = &mut c.state else {
        unreachable!("step_send on another state");
    };
    if *pos >= req.len() {
        let job = job.clone();
        c.state = OState::Head {
            job,
            buf: Vec::new(),
        };
        c.deadline = now + timeout;
        return OStep::Progress;
    }
    if !c.writable {
        return OStep::Blocked;
    }
    match c.stream.write(&req[*pos..]) {
        Ok(n) => {
            *pos += n;
            OStep::Progress
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            c.writable = false;
            OStep::Blocked
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => OStep::Progress,
        Err(e) if job.reused => {
            log::debug!("reused origin connection failed ({e}); retrying");
            OStep::Retry(job.clone())
        }
        Err(e) => fail(job, None, format!("sending to the origin failed: {e}")),
    }
}

/// Read the response head in small steps (body bytes that share a read with it are copied once),
/// then judge it.
fn step_head(
    c: &mut OriginConn,
    store: &mut Store,
    wake: &mut Vec<Token>,
    now: Instant,
    timeout: Duration,
) -> OStep {
    let OState::Head { job, buf } = &mut c.state else {
        unreachable!("step_head on another state");
    };
    if !c.readable {
        return OStep::Blocked;
    }
    let old = buf.len();
    if old >= MAX_ORIGIN_HEAD {
        return fail(job, None, "the origin's response head is too large");
    }
    buf.resize(old + 1024.min(MAX_ORIGIN_HEAD - old), 0);
    let read = c.stream.read(&mut buf[old..]);
    buf.truncate(old + *read.as_ref().unwrap_or(&0));
    // A reused connection the origin closed before answering anything is retried on a fresh one.
    let unanswered = job.reused && old == 0;
    match read {
        Ok(0) if unanswered => return OStep::Retry(job.clone()),
        Ok(0) => {
            return fail(
                job,
                None,
                "the origin closed the connection without an answer",
            );
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            c.readable = false;
            return OStep::Blocked;
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return OStep::Progress,
        Err(_) if unanswered => return OStep::Retry(job.clone()),
        Err(e) => return fail(job, None, format!("reading from the origin failed: {e}")),
    }
    c.deadline = now + timeout;
    let (h, used) = match parse_origin_head(buf) {
        Ok(Some(x)) => x,
        Ok(None) => return OStep::Progress,
        Err(why) => return fail(job, None, why),
    };
    let (job, extra) = (job.clone(), buf[used..].to_vec());
    start_body(c, store, wake, job, &h, &extra)
}

/// The head is in: judge it. A fetch that taught the object's length waits for its files (the
/// commit worker creates them, fully allocated, off the loop) without reading the origin meanwhile;
/// any other takes its body.
fn start_body(
    c: &mut OriginConn,
    store: &mut Store,
    wake: &mut Vec<Token>,
    job: Job,
    h: &OriginHead,
    extra: &[u8],
) -> OStep {
    let (known_len, known_validator) = match store.get(&job.video).and_then(|v| v.origin()) {
        Some(o) => (o.len(), o.validator().to_string()),
        None => return fail(&job, None, "the video went away"),
    };
    if job.block == REVALIDATION_BLOCK {
        return revalidation_answer(c, store, wake, job, h, known_len, &known_validator);
    }
    let peer_head;
    let h = match job.via {
        None => h,
        // A peer without these bytes: not a failure of the peer; the next source is asked.
        Some(peer) if h.status == 504 => {
            return OStep::Fail(Failure {
                job,
                reservation: None,
                status: 504,
                why: format!("the peer {peer} does not hold them"),
            });
        }
        Some(peer) if h.status == 206 && h.peer_validator.is_empty() => {
            return fail(
                &job,
                None,
                format!("the peer {peer} sent no {VALIDATOR_HEADER}"),
            );
        }
        Some(_) => {
            peer_head = OriginHead {
                validator: h.peer_validator.clone(),
                peer_validator: String::new(),
                content_range: h.content_range.clone(),
                ..*h
            };
            &peer_head
        }
    };
    let (answer, total) = match judge(&job, h, known_len, &known_validator) {
        Verdict::Body {
            start,
            end,
            total,
            validator,
        } => {
            // An origin that ignores Range sends the whole object: only the block asked for is taken
            // (it is what the budget granted); the rest goes with the connection.
            let asked_end = job.last.saturating_add(1);
            let close = h.close || end > asked_end;
            let answer = Answer {
                start,
                end: end.min(asked_end),
                validator,
                last_modified: h.last_modified,
                close,
            };
            (answer, total)
        }
        Verdict::Changed { why, new_length } => {
            return OStep::Changed {
                job,
                why,
                new_length,
            };
        }
        Verdict::Fail { status, why } => {
            let reservation = None;
            return OStep::Fail(Failure {
                job,
                reservation,
                status,
                why,
            });
        }
    };
    if known_len.is_some() {
        return begin_body(c, store, wake, job, answer, extra);
    }
    match store.get_mut(&job.video).and_then(|v| v.origin_mut()) {
        Some(o) if o.phase() == Phase::Unknown => o.learned(total, answer.validator.clone()),
        _ => return fail(&job, None, "the video changed while its length was learned"),
    }
    let extra = extra.to_vec();
    c.state = OState::AwaitSlot { job, answer, extra };
    OStep::Blocked
}

/// The origin's answer to a revalidation: 304 (or the same object) keeps the cached blocks; another
/// object replaces them (`OStep::Changed`, never mixed); a failure serves the cached object.
fn revalidation_answer(
    c: &mut OriginConn,
    store: &mut Store,
    wake: &mut Vec<Token>,
    job: Job,
    h: &OriginHead,
    known_len: Option<u64>,
    known_validator: &str,
) -> OStep {
    let video = job.video.clone();
    let verdict = match h.status {
        304 => None,
        // An origin that ignores conditionals (and Range) sends the object: compare it.
        200 if h.validator == known_validator && h.content_length == known_len => None,
        200 => Some(Verdict::Changed {
            why: format!("the origin's validator is now {}", h.validator),
            new_length: h.content_length != known_len,
        }),
        _ => Some(judge(&job, h, known_len, known_validator)),
    };
    let step = match verdict {
        None | Some(Verdict::Body { .. }) => {
            let validated = match &verdict {
                None => "not modified (304)",
                Some(_) => "unchanged",
            };
            log::info!("video {}: revalidated: {validated}", job.video);
            finish_fetch(store, &job, 0);
            // A 304 has no body; the byte of a 206 is not wanted.
            match h.status == 304 && !h.close {
                true => {
                    c.state = OState::Idle;
                    c.deadline = Instant::now() + ORIGIN_IDLE_KEEP;
                    OStep::Blocked
                }
                false => OStep::Close,
            }
        }
        Some(Verdict::Changed { why, new_length }) => {
            return OStep::Changed {
                job,
                why,
                new_length,
            };
        }
        Some(Verdict::Fail { status, why }) => OStep::Fail(Failure {
            job,
            reservation: None,
            status,
            why,
        }),
    };
    if let Some(v) = store.get_mut(&video) {
        v.byte_waiters.wake_all(wake);
    }
    step
}

/// Take the body of a judged answer into the slot: record a newly learned validator, reserve the
/// bytes, move those that came with the head, and read the rest from the socket.
fn begin_body(
    c: &mut OriginConn,
    store: &mut Store,
    wake: &mut Vec<Token>,
    job: Job,
    answer: Answer,
    extra: &[u8],
) -> OStep {
    let Some(v) = store.get_mut(&job.video) else {
        return fail(&job, None, "the video went away");
    };
    let Some(slot) = v.origin_mut().and_then(|o| o.slot_mut()) else {
        return fail(&job, None, "the video's data file is gone");
    };
    let Answer {
        start,
        end,
        validator,
        last_modified,
        close,
    } = answer;
    if slot.validator.as_deref().is_none_or(str::is_empty) && !validator.is_empty() {
        slot.validator = Some(validator);
        slot.commit.bump();
    }
    // Readers see the origin's Last-Modified (second precision, as stored), not the fill's time.
    if let Some(lm) = last_modified
        && slot.modified != lm
    {
        slot.modified = lm;
        slot.commit.bump();
    }
    if start >= end {
        finish_fetch(store, &job, 0);
        c.state = OState::Idle;
        return OStep::Blocked;
    }
    // Only bytes still missing are reserved; bytes present already (a learning fetch of block 0 that
    // raced nothing, in practice) would be refused as overlap.
    let reservation = match slot.reserve(start, end) {
        Ok(r) => r,
        Err(e) => return fail(&job, None, format!("cannot take the origin's bytes: {e}")),
    };
    let mut cursor = start;
    if !extra.is_empty() {
        let n = (extra.len() as u64).min(end - start);
        if let Some(t) = slot.write_target(reservation, start, n) {
            t.copy_from_slice(&extra[..n as usize]);
            slot.claim(reservation, start, start + n);
            cursor += n;
        }
        if let Some(o) = v.origin_mut() {
            o.add_fetched(n);
        }
        v.byte_waiters.wake_all(wake);
        store.origin_totals.bytes += n;
    } else {
        // Readers of these bytes, and readers waiting to learn the length, route again now.
        v.byte_waiters.wake_all(wake);
    }
    c.state = OState::Body {
        job,
        reservation,
        cursor,
        populated: cursor,
        end,
        keep_alive: !close,
    };
    OStep::Progress
}

/// Read body bytes from the origin socket straight into the mapping, claiming them as they land.
fn step_body(
    c: &mut OriginConn,
    store: &mut Store,
    wake: &mut Vec<Token>,
    now: Instant,
    timeout: Duration,
) -> OStep {
    let OState::Body {
        job,
        reservation,
        cursor,
        populated,
        end,
        keep_alive,
    } = &mut c.state
    else {
        unreachable!("step_body on another state");
    };
    if *cursor >= *end {
        let (job, res, keep_alive) = (job.clone(), *reservation, *keep_alive);
        return finish(c, store, &job, res, keep_alive, now);
    }
    if !c.readable {
        return OStep::Blocked;
    }
    let res = Some(*reservation);
    let Some(v) = store.get_mut(&job.video) else {
        return fail(job, res, "the video went away");
    };
    let Some(slot) = v.origin_mut().and_then(|o| o.slot_mut()) else {
        return fail(job, res, "the video's data file is gone");
    };
    if *populated <= *cursor {
        // Fault the next pages in with one call before the socket is read into them.
        let step = (*end - *cursor).min(PREFAULT_STEP);
        if let Some(t) = slot.write_target(*reservation, *cursor, step) {
            prefault_for_write(t);
        }
        *populated = *cursor + step;
    }
    let want = (*populated - *cursor).min(ORIGIN_READ);
    let Some(target) = slot.write_target(*reservation, *cursor, want) else {
        return fail(job, res, "write outside the fetch's reservation");
    };
    match c.stream.read(target) {
        Ok(0) => {
            let (got, asked) = (*cursor - job.first, *end - job.first);
            fail(
                job,
                res,
                format!("the origin closed after {got} of {asked} bytes"),
            )
        }
        Ok(n) => {
            let n = n as u64;
            slot.claim(*reservation, *cursor, *cursor + n);
            *cursor += n;
            if let Some(o) = v.origin_mut() {
                o.add_fetched(n);
            }
            v.byte_waiters.wake_all(wake);
            store.origin_totals.bytes += n;
            c.deadline = now + timeout;
            // Readers woken (by these bytes or earlier ones) go out before this fetch reads on.
            if !wake.is_empty() {
                OStep::Yield
            } else {
                OStep::Progress
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            c.readable = false;
            OStep::Blocked
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => OStep::Progress,
        Err(e) => fail(job, res, format!("reading from the origin failed: {e}")),
    }
}

/// The body is in: the connection is kept for reuse, or closed.
fn finish(
    c: &mut OriginConn,
    store: &mut Store,
    job: &Job,
    reservation: u64,
    keep_alive: bool,
    now: Instant,
) -> OStep {
    finish_fetch(store, job, reservation);
    if !keep_alive {
        return OStep::Close;
    }
    c.state = OState::Idle;
    c.deadline = now + ORIGIN_IDLE_KEEP;
    OStep::Blocked
}

fn finish_fetch(store: &mut Store, job: &Job, reservation: u64) {
    if let Some(o) = store.get_mut(&job.video).and_then(|v| v.origin_mut()) {
        o.fetch_done(job.block, reservation);
    }
    store.origin_totals.fetches += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(first: u64, last: u64, validator: &str) -> Job {
        Job {
            video: "v".into(),
            block: 0,
            first,
            last,
            validator: validator.into(),
            reused: false,
            via: None,
            then: Vec::new(),
            peer_token: None,
        }
    }

    fn head(status: u16, cr: Option<&str>, cl: Option<u64>, validator: &str) -> OriginHead {
        OriginHead {
            status,
            content_length: cl,
            content_range: cr.map(str::to_string),
            chunked: false,
            validator: validator.into(),
            close: false,
            last_modified: None,
            peer_validator: String::new(),
        }
    }

    #[test]
    fn a_matching_206_is_read() {
        let v = judge(
            &job(0, 99, "\"a\""),
            &head(206, Some("bytes 0-99/1000"), Some(100), "\"a\""),
            Some(1000),
            "\"a\"",
        );
        assert_eq!(
            v,
            Verdict::Body {
                start: 0,
                end: 100,
                total: 1000,
                validator: "\"a\"".into()
            }
        );
        // A shorter answer at the end of the object.
        let v = judge(
            &job(900, 999, ""),
            &head(206, Some("bytes 900-949/950"), Some(50), ""),
            None,
            "",
        );
        assert!(matches!(
            v,
            Verdict::Body {
                end: 950,
                total: 950,
                ..
            }
        ));
    }

    #[test]
    fn changes_are_detected() {
        assert!(matches!(
            judge(
                &job(0, 99, "\"a\""),
                &head(206, Some("bytes 0-99/1000"), Some(100), "\"b\""),
                Some(1000),
                "\"a\""
            ),
            Verdict::Changed {
                new_length: false,
                ..
            }
        ));
        assert!(matches!(
            judge(
                &job(0, 99, ""),
                &head(206, Some("bytes 0-99/2000"), Some(100), ""),
                Some(1000),
                ""
            ),
            Verdict::Changed {
                new_length: true,
                ..
            }
        ));
        assert!(matches!(
            judge(
                &job(0, 99, "\"a\""),
                &head(200, None, Some(5000), "\"b\""),
                Some(1000),
                "\"a\""
            ),
            Verdict::Changed { .. }
        ));
        assert!(matches!(
            judge(
                &job(0, 99, "\"a\""),
                &head(412, None, None, ""),
                Some(1000),
                "\"a\""
            ),
            Verdict::Changed { .. }
        ));
        assert!(matches!(
            judge(&job(0, 99, ""), &head(416, None, None, ""), Some(1000), ""),
            Verdict::Changed { .. }
        ));
    }

    #[test]
    fn bad_answers_fail_with_502() {
        let bad = [
            head(206, None, Some(100), ""),
            head(206, Some("bytes 0-99/*"), Some(100), ""),
            head(206, Some("bytes 5-99/1000"), Some(95), ""),
            head(206, Some("bytes 0-99/1000"), Some(7), ""),
            head(500, None, None, ""),
            head(404, None, None, ""),
        ];
        for h in bad {
            assert!(
                matches!(
                    judge(&job(0, 99, ""), &h, Some(1000), ""),
                    Verdict::Fail { status: 502, .. }
                ),
                "{h:?}"
            );
        }
        let mut chunked = head(206, Some("bytes 0-99/1000"), None, "");
        chunked.chunked = true;
        assert!(matches!(
            judge(&job(0, 99, ""), &chunked, None, ""),
            Verdict::Fail { .. }
        ));
        // An origin that ignores Range on an object we already hold part of.
        assert!(matches!(
            judge(
                &job(0, 99, ""),
                &head(200, None, Some(1000), ""),
                Some(1000),
                ""
            ),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn empty_objects_are_not_cached() {
        assert!(matches!(
            judge(&job(0, 99, ""), &head(200, None, Some(0), ""), None, ""),
            Verdict::Fail { status: 502, .. }
        ));
    }

    #[test]
    fn a_200_teaches_a_whole_object_when_nothing_is_known() {
        assert_eq!(
            judge(
                &job(0, 99, ""),
                &head(200, None, Some(42), "\"x\""),
                None,
                ""
            ),
            Verdict::Body {
                start: 0,
                end: 42,
                total: 42,
                validator: "\"x\"".into()
            }
        );
    }

    #[test]
    fn a_first_answer_that_tells_nothing_usable_fails_and_forgets_nothing() {
        // With nothing cached, 412 and 416 are failures (there is nothing to forget, no retry loop).
        for status in [412, 416] {
            assert!(matches!(
                judge(&job(0, 99, ""), &head(status, None, None, ""), None, ""),
                Verdict::Fail { status: 502, .. }
            ));
        }
        // A 200 without a length, and a 206 past the object's end or beyond the bytes asked for.
        let bad = [
            head(200, None, None, "\"x\""),
            head(206, Some("bytes 0-99/50"), Some(100), ""),
            head(206, Some("bytes 0-199/1000"), Some(200), ""),
        ];
        for h in bad {
            assert!(
                matches!(
                    judge(&job(0, 99, ""), &h, None, ""),
                    Verdict::Fail { status: 502, .. }
                ),
                "{h:?}"
            );
        }
    }

    #[test]
    fn validators_change_only_when_both_are_known() {
        // The first validator is learned, not compared; an answer without one changes nothing.
        for (known, answered) in [("", "\"new\""), ("\"old\"", "")] {
            assert!(matches!(
                judge(
                    &job(100, 199, known),
                    &head(206, Some("bytes 100-199/1000"), Some(100), answered),
                    Some(1000),
                    known
                ),
                Verdict::Body {
                    start: 100,
                    end: 200,
                    ..
                }
            ));
        }
        // A 200 with another validator is a new object even without If-Range.
        assert!(matches!(
            judge(
                &job(0, 99, ""),
                &head(200, None, Some(1000), "\"b\""),
                Some(1000),
                "\"a\""
            ),
            Verdict::Changed {
                new_length: true,
                ..
            }
        ));
        // A length change wins over a validator change: the files must be recreated.
        assert!(matches!(
            judge(
                &job(0, 99, "\"a\""),
                &head(206, Some("bytes 0-99/2000"), Some(100), "\"b\""),
                Some(1000),
                "\"a\""
            ),
            Verdict::Changed {
                new_length: true,
                ..
            }
        ));
    }

    #[test]
    fn heads_parse_and_weak_etags_fall_back_to_last_modified() {
        let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/20\r\nContent-Length: 10\r\nETag: W/\"weak\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nBODY";
        let (h, used) = parse_origin_head(raw).unwrap().unwrap();
        assert_eq!(h.status, 206);
        assert_eq!(h.content_length, Some(10));
        assert_eq!(h.validator, "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&raw[used..], b"BODY");
        assert!(parse_origin_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
        assert!(parse_origin_head(b"garbage\r\n\r\n").is_err());
        let (h, _) =
            parse_origin_head(b"HTTP/1.1 200 OK\r\nETag: \"s\"\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.validator, "\"s\"");
        assert!(h.close);
    }

    #[test]
    fn host_headers() {
        assert_eq!(host_header("a.example", 80), "a.example");
        assert_eq!(host_header("a.example", 8000), "a.example:8000");
        assert_eq!(host_header("::1", 8080), "[::1]:8080");
    }
}
