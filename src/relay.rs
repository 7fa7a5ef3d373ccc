//! Live relays: a `live` channel with `upstream = "http://IP:port/videos/ID"` follows that channel on
//! another node into its own ring, so a channel's followers can be spread over many nodes. The relay is
//! one outbound connection per channel on the event loop. It asks with an RFC 8673 open range from its
//! own head (`Range: bytes=HEAD-9007199254740991`), so that byte N here is byte N upstream, and reads
//! the chunked body from the socket straight into the ring's mapping through the publisher's path
//! (`LiveRing::write_target`/`claim`, under the durable write intent). When its head has left the
//! upstream's window (416), it follows from the upstream's live edge and the ring's head jumps there
//! (`LiveRing::jump_head`). A cut link is reconnected from the head with a back-off; the relay holds
//! the channel's one publish session while the upstream publishes, so local publishers are refused.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::config::{Config, Upstream, VideoKind};
use crate::http::chunked::{ChunkEvent, ChunkedDecoder, ChunkedLimits};
use crate::routes::LIVE_OPEN_END;
use crate::store::data_file::prefault_for_write;
use crate::store::{IngestBlock, Store};

/// Relay connections use tokens in [RELAY_TOKEN_BASE, ORIGIN_TOKEN_BASE).
pub const RELAY_TOKEN_BASE: usize = 1 << 39;
/// Largest upstream response head.
const MAX_HEAD: usize = 16 * 1024;
/// Most response headers parsed.
const MAX_HEADERS: usize = 64;
/// Framing (chunk-size lines) is read at most this many bytes at a time, so payload that arrives with
/// it and must be copied stays small (as for a publisher's body).
const FRAMING_READ: usize = 64;
/// Most body bytes one relay takes per loop turn before the others get theirs.
const BUDGET_PER_TURN: u64 = 4 << 20;
/// Pages faulted in ahead of the reads that fill them.
const PREFAULT_WINDOW: u64 = 1 << 20;
/// Back-off between reconnections: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(5);
/// A session survives a cut link this long; then the relay's followers are told the stream ended.
const SESSION_HOLD: Duration = Duration::from_secs(10);

/// Where a link is.
enum Phase {
    Connecting,
    Sending {
        req: Vec<u8>,
        pos: usize,
    },
    Head,
    /// `next`: the upstream's offset of the next payload byte (the answer's start, then onwards).
    Body {
        dec: ChunkedDecoder,
        next: u64,
    },
}

/// One connection to the upstream.
struct Link {
    stream: TcpStream,
    phase: Phase,
    /// Bytes read but not yet consumed: the head, then framing (and the payload that came with it).
    buf: Vec<u8>,
    used: usize,
    readable: bool,
    writable: bool,
    deadline: Instant,
    /// Asked without a Range (the live edge) after the head left the upstream's window.
    edge: bool,
    /// Mapping bytes faulted in up to this offset.
    populated: u64,
}

/// One relayed channel.
struct Relay {
    video: String,
    upstream: Upstream,
    link: Option<Link>,
    /// The ring's publish session this relay holds (while the upstream publishes).
    writer: Option<u64>,
    /// Ask the edge next (the head left the upstream's window).
    edge_next: bool,
    retry_at: Instant,
    backoff: Duration,
    /// Since when the link has been down with a session held.
    cut_since: Option<Instant>,
    /// Ran out of its turn's budget: drive it again at once.
    again: bool,
    /// The ring waits for its next durable write intent: try again each turn (a commit's completion
    /// wakes the loop).
    await_commit: bool,
}

/// What one step of a link did.
enum Step {
    Progress,
    Blocked,
    /// The upstream's session ended cleanly (last chunk): end ours too.
    Ended,
    /// Our head is outside the upstream's window: follow from its edge.
    Outside,
    /// The ring's next write intent is not durable yet.
    AwaitCommit,
    Failed(String),
}

/// Every relayed channel of this node.
#[derive(Default)]
pub struct Relays {
    relays: Vec<Relay>,
    /// Bearer token sent upstream (`[server] read_token`: a tier shares its tokens).
    read_token: Option<String>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Relays {
    pub fn owns(token: Token) -> bool {
        (RELAY_TOKEN_BASE..crate::origin::ORIGIN_TOKEN_BASE).contains(&token.0)
    }

    /// A relay needs another turn at once (the loop must not sleep).
    pub fn wants_turn(&self) -> bool {
        self.relays.iter().any(|r| r.again)
    }

    /// Take the (re)loaded config: start relays for channels that gained an upstream, stop those whose
    /// channel went away or changed upstream.
    pub fn configure(
        &mut self,
        cfg: &Config,
        store: &mut Store,
        registry: &Registry,
        now: Instant,
    ) {
        self.read_token = cfg.server.read_token.clone();
        self.connect_timeout = Duration::from_millis(cfg.server.origin_timeout_ms);
        self.idle_timeout = Duration::from_millis(cfg.server.limits.idle_timeout_ms);
        let wanted: Vec<(String, Upstream)> = cfg
            .videos
            .iter()
            .filter_map(|v| match &v.kind {
                VideoKind::Live {
                    upstream: Some(u), ..
                } => Some((v.id.clone(), u.clone())),
                _ => None,
            })
            .collect();
        let mut i = 0;
        while i < self.relays.len() {
            let r = &self.relays[i];
            if wanted
                .iter()
                .any(|(id, u)| *id == r.video && *u == r.upstream)
            {
                i += 1;
                continue;
            }
            log::info!("relay of {} from {} stopped", r.video, r.upstream.url);
            self.stop(i, store, registry);
            self.relays.remove(i);
            // Indexes (tokens) after it moved: re-register their links.
            for (j, r) in self.relays.iter_mut().enumerate().skip(i) {
                if let Some(l) = &mut r.link {
                    let _ = registry.reregister(&mut l.stream, token_of(j), interest());
                }
            }
        }
        for (id, upstream) in wanted {
            if !self.relays.iter().any(|r| r.video == id) {
                log::info!("channel {id} relays {}", upstream.url);
                self.relays.push(Relay {
                    video: id,
                    upstream,
                    link: None,
                    writer: None,
                    edge_next: false,
                    retry_at: now,
                    backoff: BACKOFF_FIRST,
                    cut_since: None,
                    again: false,
                    await_commit: false,
                });
            }
        }
    }

    /// Close relay `i`'s link and end its session (the channel keeps what it received).
    fn stop(&mut self, i: usize, store: &mut Store, registry: &Registry) {
        let r = &mut self.relays[i];
        if let Some(mut l) = r.link.take() {
            let _ = registry.deregister(&mut l.stream);
        }
        if let Some(w) = r.writer.take() {
            let v = store
                .videos
                .get_mut(&r.video)
                .or_else(|| store.retired.get_mut(&r.video));
            if let Some(v) = v {
                v.ingest_release(w);
            }
        }
    }

    /// At shutdown: every link closes and every session ends, before the final commits.
    pub fn close_all(&mut self, store: &mut Store, registry: &Registry, wake: &mut Vec<Token>) {
        for i in 0..self.relays.len() {
            self.stop(i, store, registry);
            if let Some(v) = store.videos.get_mut(&self.relays[i].video) {
                v.byte_waiters.wake_all(wake);
            }
        }
        self.relays.clear();
    }

    pub fn on_event(&mut self, token: Token, readable: bool, writable: bool, ctx: &mut Turn<'_>) {
        let i = token.0 - RELAY_TOKEN_BASE;
        let Some(l) = self.relays.get_mut(i).and_then(|r| r.link.as_mut()) else {
            return;
        };
        l.readable |= readable;
        l.writable |= writable;
        self.drive(i, ctx);
    }

    /// Every loop turn: connect relays that are due, drive those that want another turn, and cut
    /// links past their deadline.
    pub fn pump(&mut self, ctx: &mut Turn<'_>) {
        for i in 0..self.relays.len() {
            let r = &mut self.relays[i];
            if r.link.is_none() && ctx.now >= r.retry_at {
                self.open(i, ctx);
            } else if r.again || r.await_commit {
                r.again = false;
                r.await_commit = false;
                self.drive(i, ctx);
            } else if r.link.as_ref().is_some_and(|l| ctx.now >= l.deadline) {
                let why = match &r.link.as_ref().map(|l| &l.phase) {
                    Some(Phase::Body { .. }) => {
                        "no bytes from the upstream for limits.idle_timeout_ms"
                    }
                    _ => "the upstream did not answer within origin_timeout_ms",
                };
                self.cut(i, why.to_string(), ctx);
            }
        }
    }

    fn open(&mut self, i: usize, ctx: &mut Turn<'_>) {
        let r = &mut self.relays[i];
        if ctx.store.get(&r.video).and_then(|v| v.ring()).is_none() {
            // Not open yet (start-up, a reload) or not openable: its head is not known yet.
            r.retry_at = ctx.now + BACKOFF_FIRST;
            return;
        }
        if r.writer.is_none()
            && let Some(v) = ctx.store.videos.get(&r.video)
            && v.ring().is_some_and(|ring| ring.publisher.is_some())
        {
            // A publisher from before the upstream was configured: wait for it to end.
            r.retry_at = ctx.now + BACKOFF_LAST;
            return;
        }
        let mut stream = match TcpStream::connect(r.upstream.addr) {
            Ok(s) => s,
            Err(e) => return self.cut(i, format!("cannot connect: {e}"), ctx),
        };
        if let Err(e) = ctx.registry.register(&mut stream, token_of(i), interest()) {
            return self.cut(i, format!("cannot register the connection: {e}"), ctx);
        }
        let _ = stream.set_nodelay(true);
        r.link = Some(Link {
            stream,
            phase: Phase::Connecting,
            buf: Vec::new(),
            used: 0,
            readable: false,
            writable: false,
            deadline: ctx.now + self.connect_timeout,
            edge: r.edge_next,
            populated: 0,
        });
    }

    /// The link failed or was cut: close it, keep the session for a while, reconnect after the
    /// back-off.
    fn cut(&mut self, i: usize, why: String, ctx: &mut Turn<'_>) {
        let r = &mut self.relays[i];
        log::warn!(
            "relay of {} from {}: {why}; again in {} ms",
            r.video,
            r.upstream.url,
            r.backoff.as_millis()
        );
        if let Some(mut l) = r.link.take() {
            let _ = ctx.registry.deregister(&mut l.stream);
        }
        r.again = false;
        r.retry_at = ctx.now + r.backoff;
        r.backoff = (r.backoff * 2).min(BACKOFF_LAST);
        let since = *r.cut_since.get_or_insert(ctx.now);
        if r.writer.is_some() && ctx.now.duration_since(since) >= SESSION_HOLD {
            log::warn!(
                "relay of {}: the upstream is gone; the session ends",
                r.video
            );
            self.end_session(i, ctx);
        }
    }

    /// Our session ends like the upstream's: followers finish once they have caught up.
    fn end_session(&mut self, i: usize, ctx: &mut Turn<'_>) {
        let r = &mut self.relays[i];
        if let Some(v) = ctx.store.videos.get_mut(&r.video) {
            if let Some(w) = r.writer.take() {
                v.ingest_release(w);
            }
            v.byte_waiters.wake_all(ctx.wake);
        }
        r.writer = None;
    }

    fn drive(&mut self, i: usize, ctx: &mut Turn<'_>) {
        let mut taken = 0u64;
        loop {
            let step = self.step(i, &mut taken, ctx);
            match step {
                Step::Progress if taken >= BUDGET_PER_TURN => {
                    self.relays[i].again = true;
                    return;
                }
                Step::Progress => {}
                Step::Blocked => return,
                Step::AwaitCommit => {
                    self.relays[i].await_commit = true;
                    return;
                }
                Step::Ended => {
                    log::info!(
                        "relay of {}: the upstream session ended",
                        self.relays[i].video
                    );
                    self.end_session(i, ctx);
                    let r = &mut self.relays[i];
                    if let Some(mut l) = r.link.take() {
                        let _ = ctx.registry.deregister(&mut l.stream);
                    }
                    r.retry_at = ctx.now + BACKOFF_FIRST;
                    return;
                }
                Step::Outside => {
                    let r = &mut self.relays[i];
                    log::info!(
                        "relay of {}: byte {} has left the upstream's window; following its edge",
                        r.video,
                        head_of(ctx.store, &r.video)
                    );
                    if let Some(mut l) = r.link.take() {
                        let _ = ctx.registry.deregister(&mut l.stream);
                    }
                    r.edge_next = true;
                    r.retry_at = ctx.now;
                    return;
                }
                Step::Failed(why) => return self.cut(i, why, ctx),
            }
        }
    }

    fn step(&mut self, i: usize, taken: &mut u64, ctx: &mut Turn<'_>) -> Step {
        let token = self.read_token.clone();
        let idle = self.idle_timeout;
        let timeout = self.connect_timeout;
        let r = &mut self.relays[i];
        let Some(l) = r.link.as_mut() else {
            return Step::Blocked;
        };
        match l.phase {
            Phase::Connecting => step_connect(l, &r.upstream, &r.video, token, ctx.store),
            Phase::Sending { .. } => step_send(l, ctx.now, timeout),
            Phase::Head => step_head(r, ctx, idle),
            Phase::Body { .. } => step_body(r, taken, ctx, idle),
        }
    }
}

/// What the event loop lends a relay for one turn.
pub struct Turn<'a> {
    pub store: &'a mut Store,
    pub registry: &'a Registry,
    pub wake: &'a mut Vec<Token>,
    pub now: Instant,
}

fn token_of(i: usize) -> Token {
    Token(RELAY_TOKEN_BASE + i)
}

fn interest() -> Interest {
    Interest::READABLE | Interest::WRITABLE
}

fn head_of(store: &Store, video: &str) -> u64 {
    store
        .get(video)
        .and_then(|v| v.ring())
        .map_or(0, |r| r.state.head)
}

fn step_connect(
    l: &mut Link,
    up: &Upstream,
    video: &str,
    token: Option<String>,
    store: &Store,
) -> Step {
    if !l.writable {
        return Step::Blocked;
    }
    match l.stream.take_error() {
        Ok(Some(e)) | Err(e) => return Step::Failed(format!("cannot connect: {e}")),
        Ok(None) => {}
    }
    match l.stream.peer_addr() {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            l.writable = false;
            return Step::Blocked;
        }
        Err(e) => return Step::Failed(format!("cannot connect: {e}")),
    }
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vcache-relay\r\n",
        up.path, up.addr
    );
    if !l.edge {
        // RFC 8673: an open range from our head; the answer's Content-Range starts there.
        let head = head_of(store, video);
        req.push_str(&format!("Range: bytes={head}-{LIVE_OPEN_END}\r\n"));
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    l.phase = Phase::Sending {
        req: req.into_bytes(),
        pos: 0,
    };
    Step::Progress
}

fn step_send(l: &mut Link, now: Instant, timeout: Duration) -> Step {
    let Phase::Sending { req, pos } = &mut l.phase else {
        unreachable!("step_send in another phase");
    };
    if !l.writable {
        return Step::Blocked;
    }
    match l.stream.write(&req[*pos..]) {
        Ok(0) => Step::Failed("the upstream closed the connection".into()),
        Ok(n) => {
            *pos += n;
            if *pos == req.len() {
                l.phase = Phase::Head;
                l.deadline = now + timeout;
            }
            Step::Progress
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            l.writable = false;
            Step::Blocked
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Progress,
        Err(e) => Step::Failed(format!("cannot send the request: {e}")),
    }
}

/// Read more bytes into the link's buffer (at most `max`).
fn read_more(l: &mut Link, max: usize) -> Result<usize, Step> {
    if !l.readable {
        return Err(Step::Blocked);
    }
    if l.used == l.buf.len() {
        l.buf.clear();
        l.used = 0;
    }
    let old = l.buf.len();
    l.buf.resize(old + max, 0);
    let got = l.stream.read(&mut l.buf[old..]);
    l.buf.truncate(old + got.as_ref().map_or(0, |n| *n));
    match got {
        Ok(0) => Err(Step::Failed("the upstream closed the connection".into())),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            l.readable = false;
            Err(Step::Blocked)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(Step::Progress),
        Err(e) => Err(Step::Failed(format!("cannot read the answer: {e}"))),
    }
}

/// The parts of the upstream's answer the relay uses.
struct Answer {
    status: u16,
    chunked: bool,
    /// The first offset of a 206 (`Content-Range: bytes A-B/*`), or `X-Live-Start` of a 200.
    start: Option<u64>,
}

fn parse_answer(buf: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed answer head: {e}")),
    };
    let mut a = Answer {
        status: resp.code.unwrap_or(0),
        chunked: false,
        start: None,
    };
    for h in resp.headers.iter() {
        let v = String::from_utf8_lossy(h.value).trim().to_string();
        match h.name.to_ascii_lowercase().as_str() {
            "transfer-encoding" => a.chunked = v.eq_ignore_ascii_case("chunked"),
            "content-range" if a.status == 206 => {
                let first = v
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|f| f.parse().ok());
                a.start = Some(first.ok_or_else(|| format!("bad Content-Range `{v}`"))?);
            }
            "x-live-start" if a.status == 200 => {
                a.start = Some(v.parse().map_err(|_| format!("bad X-Live-Start `{v}`"))?);
            }
            _ => {}
        }
    }
    Ok(Some((a, used)))
}

fn step_head(r: &mut Relay, ctx: &mut Turn<'_>, idle: Duration) -> Step {
    let Some(l) = r.link.as_mut() else {
        return Step::Blocked;
    };
    let parsed = match parse_answer(&l.buf[l.used..]) {
        Ok(p) => p,
        Err(why) => return Step::Failed(why),
    };
    let Some((a, used)) = parsed else {
        if l.buf.len() - l.used >= MAX_HEAD {
            return Step::Failed(format!("answer head longer than {MAX_HEAD} bytes"));
        }
        return match read_more(l, 4096) {
            Ok(_) => Step::Progress,
            Err(s) => s,
        };
    };
    l.used += used;
    let head = head_of(ctx.store, &r.video);
    match (a.status, a.start) {
        (416, _) if !l.edge => return Step::Outside,
        (206, Some(s)) if !l.edge && s == head => {}
        (200, Some(s)) if l.edge && s >= head => {}
        (200, Some(s)) if l.edge => {
            r.edge_next = false;
            return Step::Failed(format!(
                "the upstream's edge {s} is below our head {head}: its offsets went back (was its channel forgotten?)"
            ));
        }
        (status, start) => {
            return Step::Failed(format!(
                "unexpected answer {status} (start {start:?}) to a follow from {head}"
            ));
        }
    }
    if !a.chunked {
        return Step::Failed("the answer is not chunked (an HTTP/1.1 follower's is)".into());
    }
    log::info!(
        "relay of {} follows {} from byte {}",
        r.video,
        r.upstream.url,
        a.start.unwrap_or(head)
    );
    l.phase = Phase::Body {
        dec: ChunkedDecoder::new(ChunkedLimits::default()),
        next: a.start.unwrap_or(head),
    };
    l.deadline = ctx.now + idle;
    l.edge = false;
    r.edge_next = false;
    r.backoff = BACKOFF_FIRST;
    r.cut_since = None;
    Step::Progress
}

/// Take the ring's publish session (at the first byte of the upstream's session) and move the head to
/// where the upstream's bytes start.
fn ensure_session(r: &mut Relay, start: u64, store: &mut Store) -> Result<(), String> {
    let Some(ring) = store.get_mut(&r.video).and_then(|v| v.ring_mut()) else {
        return Err("the channel is not open".into());
    };
    let w = match r.writer {
        Some(w) if ring.publisher == Some(w) => w,
        stale => {
            // No session yet, or the ring was replaced by a reload (the old one is retired).
            if let Some(old) = stale
                && let Some(v) = store.retired.get_mut(&r.video)
            {
                v.ingest_release(old);
            }
            r.writer = None;
            let ring = store
                .get_mut(&r.video)
                .and_then(|v| v.ring_mut())
                .ok_or("the channel is not open")?;
            let w = ring
                .begin_publish()
                .map_err(|e| format!("cannot take the channel: {e}"))?;
            r.writer = Some(w);
            w
        }
    };
    let Some(ring) = store.get_mut(&r.video).and_then(|v| v.ring_mut()) else {
        return Err("the channel is not open".into());
    };
    if start < ring.state.head {
        return Err(format!(
            "the answer starts at {start}, below the ring's head {} (the channel changed): asking again",
            ring.state.head
        ));
    }
    if start > ring.state.head {
        ring.jump_head(w, start);
    }
    assert_eq!(
        ring.state.head, start,
        "relayed byte N is the upstream's byte N"
    );
    Ok(())
}

fn step_body(r: &mut Relay, taken: &mut u64, ctx: &mut Turn<'_>, idle: Duration) -> Step {
    let Some(l) = r.link.as_mut() else {
        return Step::Blocked;
    };
    let Phase::Body { dec, next } = &mut l.phase else {
        unreachable!("step_body in another phase");
    };
    let start = *next;
    let want = match dec.feed(&l.buf[l.used..]) {
        Err(e) => return Step::Failed(format!("bad chunked framing: {}", e.message)),
        Ok((n, ev)) => {
            l.used += n;
            match ev {
                ChunkEvent::End => return Step::Ended,
                ChunkEvent::Data(want) => want,
                ChunkEvent::NeedMore => {
                    return match read_more(l, FRAMING_READ) {
                        Ok(_) => Step::Progress,
                        Err(s) => s,
                    };
                }
            }
        }
    };
    // The head is at the upstream's offset of this byte (a 200's edge: after a jump).
    if let Err(why) = ensure_session(r, start, ctx.store) {
        return Step::Failed(why);
    }
    let Some(l) = r.link.as_mut() else {
        return Step::Blocked;
    };
    let w = r.writer.expect("a session was just ensured");
    let got = match read_payload(l, w, &r.video, want, ctx) {
        Ok(k) => k,
        Err(s) => return s,
    };
    let Phase::Body { dec, next } = &mut l.phase else {
        unreachable!("step_body in another phase");
    };
    dec.consume_payload(got);
    *next += got;
    let head = start;
    l.deadline = ctx.now + idle;
    *taken += got;
    let Some(v) = ctx.store.get_mut(&r.video) else {
        return Step::Failed("the channel went away".into());
    };
    v.ingest_claim(w, head, head + got);
    v.byte_waiters.wake_all(ctx.wake);
    Step::Progress
}

/// Up to `want` payload bytes into the ring at its head: first what is buffered (arrived with
/// framing), else one read(2) from the socket straight into the mapping.
fn read_payload(
    l: &mut Link,
    writer: u64,
    video: &str,
    want: u64,
    ctx: &mut Turn<'_>,
) -> Result<u64, Step> {
    let Some(v) = ctx.store.get_mut(video) else {
        return Err(Step::Failed("the channel went away".into()));
    };
    let head = v.ring().map_or(0, |r| r.state.head);
    let n = want.min(PREFAULT_WINDOW);
    let target = match v.ingest_target(writer, head, n) {
        Ok(t) => t,
        Err(IngestBlock::AwaitCommit) => return Err(Step::AwaitCommit),
        Err(IngestBlock::Refused(why)) => return Err(Step::Failed(why)),
    };
    let buffered = l.buf.len() - l.used;
    if buffered > 0 {
        let k = buffered.min(target.len());
        target[..k].copy_from_slice(&l.buf[l.used..l.used + k]);
        l.used += k;
        return Ok(k as u64);
    }
    if !l.readable {
        return Err(Step::Blocked);
    }
    if l.populated < head + target.len() as u64 {
        prefault_for_write(target);
        l.populated = head + target.len() as u64;
    }
    match l.stream.read(target) {
        Ok(0) => Err(Step::Failed(
            "the upstream closed the connection mid-stream".into(),
        )),
        Ok(k) => Ok(k as u64),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            l.readable = false;
            Err(Step::Blocked)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(Step::Progress),
        Err(e) => Err(Step::Failed(format!("cannot read the stream: {e}"))),
    }
}
