//! Request routing: turns one parsed request head into an `Action` for the connection — a response to
//! send (head bytes plus payload parts that point into a video's mapping), a body to ingest into a slot,
//! a wait for bytes not yet written, or a wait for a commit. Pure decisions over the store; no socket I/O.

use std::collections::VecDeque;
use std::time::SystemTime;

use crate::config::{Config, VideoKind};
use crate::http::conditional::{Precondition, evaluate_preconditions, if_range_allows};
use crate::http::date::format_http_date;
use crate::http::range::{
    ByteSpan, RangeSpec, multipart_body_len, multipart_part_header, multipart_trailer,
    parse_content_range, parse_range_header, resolve_ranges,
};
use crate::http::request::{Method, RequestHead, query_param};
use crate::http::response::{ResponseHead, json_string, simple_response};
use crate::store::{Availability, Store, Video, VideoProblem, WriteRefusal};

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
    },
}

/// RFC 8673: a last-byte-pos at or above 2^53 − 1 asks for a live range that grows with the channel.
pub const LIVE_OPEN_END: u64 = 9_007_199_254_740_991;

/// A response ready to go: its head (and small body) bytes, then payload parts.
#[derive(Debug)]
pub struct Plan {
    pub head: Vec<u8>,
    pub parts: VecDeque<Part>,
    pub keep_alive: bool,
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A body to read straight into a slot's mapping.
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

#[derive(Debug)]
pub enum Action {
    Respond(Plan),
    Ingest(IngestPlan),
    /// The bytes the request starts at are being written: route the request again when they arrive.
    WaitForBytes {
        video: String,
    },
    /// Respond with `ok` once the claim is committed as the sync mode promises (or `durable` forces).
    AwaitCommit {
        video: String,
        claim_seq: u64,
        durable: bool,
        ok: Plan,
    },
}

/// Everything routing needs to see.
pub struct RouteCtx<'a> {
    pub store: &'a mut Store,
    pub cfg: &'a Config,
    pub problems: &'a [VideoProblem],
    pub boundary: &'a str,
    /// True once the request has waited for bytes and the wait ran out.
    pub wait_expired: bool,
    /// When the request's head arrived (a failure after it is reported, one before it is retried).
    pub request_started: std::time::Instant,
}

/// A small complete response.
pub fn error_plan(status: u16, message: &str, head_only: bool, keep_alive: bool) -> Plan {
    error_plan_with(status, message, head_only, keep_alive, &[])
}

fn error_plan_with(
    status: u16,
    message: &str,
    head_only: bool,
    keep_alive: bool,
    extra: &[(&str, String)],
) -> Plan {
    let mut head = Vec::new();
    let body = format!(
        "{status} {}: {message}\n",
        crate::http::response::reason_phrase(status)
    );
    simple_response(
        &mut head,
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        head_only,
        keep_alive,
        extra,
    );
    Plan {
        head,
        parts: VecDeque::new(),
        keep_alive,
    }
}

fn json_plan(status: u16, body: &str, head_only: bool, keep_alive: bool) -> Plan {
    let mut head = Vec::new();
    simple_response(
        &mut head,
        status,
        "application/json",
        body.as_bytes(),
        head_only,
        keep_alive,
        &[],
    );
    Plan {
        head,
        parts: VecDeque::new(),
        keep_alive,
    }
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

pub fn route(head: &RequestHead, ctx: &mut RouteCtx<'_>) -> Action {
    match route_head(head, ctx) {
        // Only an ingest reads a request body. Any other answer to a request with a body closes the
        // connection after it, so that the unread body is never parsed as a next request (a
        // smuggling shape behind a proxy). The plan is changed, not routed again: routing has side
        // effects (a follower's place, an origin fetch).
        Action::Respond(mut plan) if plan.keep_alive && head.has_body() => {
            force_close(&mut plan);
            Action::Respond(plan)
        }
        action => action,
    }
}

/// Make a response close its connection: `Connection: close` in its head, and no keep-alive.
fn force_close(plan: &mut Plan) {
    plan.keep_alive = false;
    let Some(head_end) = plan.head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let (head, rest) = plan.head.split_at(head_end);
    let text = String::from_utf8_lossy(head)
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut out = text.into_bytes();
    out.extend_from_slice(b"\r\nConnection: close");
    out.extend_from_slice(rest);
    plan.head = out;
}

fn route_head(head: &RequestHead, ctx: &mut RouteCtx<'_>) -> Action {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let path = head.path.as_str();
    if path == "/healthz" {
        return match head.method {
            Method::Get | Method::Head => {
                let mut h = Vec::new();
                simple_response(
                    &mut h,
                    200,
                    "text/plain; charset=utf-8",
                    b"ok\n",
                    head_only,
                    keep_alive,
                    &[],
                );
                Action::Respond(Plan {
                    head: h,
                    parts: VecDeque::new(),
                    keep_alive,
                })
            }
            _ => Action::Respond(method_not_allowed("GET, HEAD", head_only, keep_alive)),
        };
    }
    let read_ok = ctx.cfg.server.read_token.is_none()
        || authorized(
            head,
            &[
                ctx.cfg.server.read_token.as_deref(),
                ctx.cfg.server.write_token.as_deref(),
            ],
        );
    if path == "/" {
        return match head.method {
            Method::Get | Method::Head => {
                if !read_ok {
                    return Action::Respond(unauthorized(head_only, keep_alive, "reading"));
                }
                let page = index_page(ctx);
                let mut h = Vec::new();
                simple_response(
                    &mut h,
                    200,
                    "text/html; charset=utf-8",
                    page.as_bytes(),
                    head_only,
                    keep_alive,
                    &[("Cache-Control", "no-store".to_string())],
                );
                Action::Respond(Plan {
                    head: h,
                    parts: VecDeque::new(),
                    keep_alive,
                })
            }
            _ => Action::Respond(method_not_allowed("GET, HEAD", head_only, keep_alive)),
        };
    }
    if path == "/videos" || path == "/videos/" {
        return match head.method {
            Method::Get | Method::Head => {
                if !read_ok {
                    return Action::Respond(unauthorized(head_only, keep_alive, "reading"));
                }
                Action::Respond(json_plan(200, &videos_json(ctx), head_only, keep_alive))
            }
            _ => Action::Respond(method_not_allowed("GET, HEAD", head_only, keep_alive)),
        };
    }
    let Some(rest) = path.strip_prefix("/videos/") else {
        return Action::Respond(error_plan(
            404,
            &format!("no resource at {path}"),
            head_only,
            keep_alive,
        ));
    };
    let (id, sub) = match rest.split_once('/') {
        Some((id, sub)) => (id, Some(sub)),
        None => (rest, None),
    };
    if !valid_id(id) {
        return Action::Respond(error_plan(400, "malformed video id", head_only, keep_alive));
    }
    // Only configured videos are routable; a retired one (removed by a reload) is still reachable
    // through `store.get` for the connections that were using it.
    if !ctx.store.videos.contains_key(id) {
        let why = match ctx.problems.iter().find(|p| p.id == id) {
            Some(p) => format!("video {id} is configured but not servable: {}", p.message),
            None => format!("no video with id {id}"),
        };
        let status = if ctx.problems.iter().any(|p| p.id == id) {
            503
        } else {
            404
        };
        return Action::Respond(error_plan(status, &why, head_only, keep_alive));
    }
    match (sub, head.method) {
        (None, Method::Get | Method::Head) => {
            if !read_ok {
                return Action::Respond(unauthorized(head_only, keep_alive, "reading"));
            }
            serve_video(head, id, ctx)
        }
        (None, Method::Put | Method::Post) => ingest(head, id, ctx),
        (None, Method::Delete) => delete(head, id, ctx),
        (None, Method::Options) => Action::Respond(options(keep_alive)),
        (None, _) => Action::Respond(method_not_allowed(
            "GET, HEAD, PUT, POST, DELETE, OPTIONS",
            head_only,
            keep_alive,
        )),
        (Some("offset"), Method::Get | Method::Head) => {
            if !read_ok {
                return Action::Respond(unauthorized(head_only, keep_alive, "reading"));
            }
            Action::Respond(offset_query(head, id, ctx))
        }
        (Some("offset"), _) => {
            Action::Respond(method_not_allowed("GET, HEAD", head_only, keep_alive))
        }
        (Some("fill"), Method::Post) => fill(head, id, ctx),
        (Some("fill"), _) => Action::Respond(method_not_allowed("POST", head_only, keep_alive)),
        (Some(other), _) => Action::Respond(error_plan(
            404,
            &format!("no resource {other} under video {id}"),
            head_only,
            keep_alive,
        )),
    }
}

fn options(keep_alive: bool) -> Plan {
    let mut h = Vec::new();
    simple_response(
        &mut h,
        204,
        "text/plain",
        b"",
        true,
        keep_alive,
        &[("Allow", "GET, HEAD, PUT, POST, DELETE, OPTIONS".to_string())],
    );
    Plan {
        head: h,
        parts: VecDeque::new(),
        keep_alive,
    }
}

fn method_not_allowed(allow: &str, head_only: bool, keep_alive: bool) -> Plan {
    error_plan_with(
        405,
        &format!("allowed methods here: {allow}"),
        head_only,
        keep_alive,
        &[("Allow", allow.to_string())],
    )
}

/// `[A-Za-z0-9._-]{1,128}`, not "." or "..".
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn videos_json(ctx: &RouteCtx<'_>) -> String {
    let mut out = String::from("{\"videos\":[");
    let mut first = true;
    for (id, v) in &ctx.store.videos {
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
                ",\"url\":{},\"length\":{},\"validator\":{},\"fill_block\":{},\"fetching_blocks\":{},\"queued_blocks\":{},\"origin_fetches\":{},\"origin_bytes\":{}}}",
                json_string(o.url()),
                o.len().map_or_else(|| "null".to_string(), |n| n.to_string()),
                json_string(o.validator()),
                o.fill_block(),
                o.fetching_blocks(),
                o.queued_blocks(),
                o.fetches(),
                o.fetched_bytes()
            ));
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

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `GET /`: every video with a player (where browsers can play its type) and a bar of what is cached.
fn index_page(ctx: &RouteCtx<'_>) -> String {
    let mut rows = String::new();
    for (id, v) in &ctx.store.videos {
        let id_html = html_escape(id);
        let ct = html_escape(&v.content_type);
        let len = v.len().max(1);
        let mut bar = String::new();
        for (s, e) in v.cached_ranges() {
            // For a live channel the window is shown within the ring's capacity.
            let (s, e) = match v.ring() {
                Some(r) => {
                    let base = r.state.head.saturating_sub(r.capacity());
                    (s - base.min(s), e - base.min(e))
                }
                None => (s, e),
            };
            let left = s as f64 * 100.0 / len as f64;
            let width = ((e - s) as f64 * 100.0 / len as f64).max(0.2);
            bar.push_str(&format!(
                "<span style=\"left:{left:.3}%;width:{width:.3}%\"></span>"
            ));
        }
        let playable = [
            "video/mp4",
            "video/webm",
            "video/ogg",
            "audio/mp4",
            "audio/mpeg",
        ]
        .iter()
        .any(|t| v.content_type.starts_with(t));
        let player = if playable {
            format!("<video controls preload=\"metadata\" src=\"/videos/{id_html}\"></video>")
        } else {
            format!(
                "<code>ffplay http://HOST/videos/{id_html}</code> <small>({ct} is not played by browsers)</small>"
            )
        };
        let extra = match (v.ring(), v.origin()) {
            (Some(r), _) => format!(
                "head {} · window {}–{} · {}",
                r.state.head,
                r.window_start(),
                r.state.head,
                if r.publisher.is_some() {
                    "publishing"
                } else {
                    "no publisher"
                }
            ),
            (_, Some(o)) => format!("from <code>{}</code>", html_escape(o.url())),
            _ => String::new(),
        };
        let present: u64 = v.cached_ranges().iter().map(|(s, e)| e - s).sum();
        rows.push_str(&format!(
            "<section><h2>{id_html} <small>{} · {} bytes · {present} cached · {ct}</small></h2><p>{extra}</p>\
             <div class=\"bar\" title=\"cached ranges\">{bar}</div>{player}</section>\n",
            v.cfg.kind_name(),
            v.len()
        ));
    }
    for p in ctx.problems {
        if !ctx.store.videos.contains_key(&p.id) {
            rows.push_str(&format!(
                "<section><h2>{} <small>not servable</small></h2><p class=\"err\">{}</p></section>\n",
                html_escape(&p.id),
                html_escape(&p.message)
            ));
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>vcache</title><style>\
         body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}\
         section{{border-top:1px solid #ccc;padding:.5em 0}} small{{color:#666;font-weight:normal}}\
         .bar{{position:relative;height:10px;background:#eee;margin:.5em 0}}\
         .bar span{{position:absolute;top:0;height:10px;background:#2a7}} video{{max-width:100%}} .err{{color:#b00}}\
         </style></head><body><h1>vcache</h1><p>{} videos · <a href=\"/videos\">/videos</a> · \
         <a href=\"/metrics\">/metrics</a></p>\n{rows}</body></html>\n",
        ctx.store.videos.len()
    )
}

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
        return error_plan(
            404,
            &format!("no video with id {id}"),
            head_only,
            keep_alive,
        );
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
fn validated_head(status: u16, validators: &[(&str, String); 2], keep_alive: bool) -> ResponseHead {
    let mut rh = ResponseHead::new(status);
    for (k, v) in validators {
        rh.header(k, v.clone());
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

fn serve_video(head: &RequestHead, id: &str, ctx: &mut RouteCtx<'_>) -> Action {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let Some(video) = ctx.store.get(id) else {
        return Action::Respond(error_plan(
            404,
            &format!("no video with id {id}"),
            head_only,
            keep_alive,
        ));
    };
    if video.ring().is_some() {
        return serve_live(head, id, ctx);
    }
    if video.origin().is_some_and(|o| o.len().is_none()) {
        return origin_learn(head, id, ctx);
    }
    let base = match seek_base(head, video, keep_alive) {
        Ok(b) => b,
        Err(plan) => return Action::Respond(plan),
    };
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
    let validators = [
        ("ETag", repr.etag.clone()),
        ("Last-Modified", format_http_date(repr.modified)),
    ];
    match evaluate_preconditions(head, &repr.etag, repr.modified) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            let rh = validated_head(304, &validators, keep_alive);
            let mut h = Vec::new();
            rh.write_to(&mut h);
            return Action::Respond(Plan {
                head: h,
                parts: VecDeque::new(),
                keep_alive,
            });
        }
        Precondition::Failed => {
            return Action::Respond(error_plan(
                412,
                "precondition failed",
                head_only,
                keep_alive,
            ));
        }
    }
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
    let Some(specs) = specs else {
        if video.origin().is_some() {
            let spans = whole_span(repr.len);
            return origin_spans(head, id, spans, &repr, &validators, true, ctx);
        }
        return whole(head, id, video, &repr, &validators, ctx);
    };
    let spans = match resolve_ranges(&specs, repr.len) {
        Ok(s) => s,
        Err(()) => {
            return Action::Respond(error_plan_with(
                416,
                &format!(
                    "no requested range is inside the {} bytes of the video",
                    repr.len
                ),
                head_only,
                keep_alive,
                &[("Content-Range", format!("bytes */{}", repr.len))],
            ));
        }
    };
    if video.origin().is_some() {
        return origin_spans(head, id, spans, &repr, &validators, false, ctx);
    }
    // Cut each span at the first byte that is not present; a span that starts in a hole is dropped,
    // or waited for when a writer is filling it.
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
                return Action::WaitForBytes {
                    video: id.to_string(),
                };
            }
            Availability::Pending
            | Availability::Absent
            | Availability::Gone
            | Availability::Failed(_) => missing.push(span),
        }
    }
    if served.is_empty() {
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
        return Action::Respond(error_plan_with(
            status, &message, head_only, keep_alive, &extra,
        ));
    }
    Action::Respond(span_plan(
        head,
        id,
        video,
        &repr,
        &validators,
        &served,
        false,
        ctx.boundary,
    ))
}

/// The response for `spans` of a representation: 206 with one part or `multipart/byteranges`, or
/// (`whole`) 200 with everything. Payload parts carry the video's generation, so a response never
/// continues with bytes of another one (after a DELETE or a changed origin object).
#[allow(clippy::too_many_arguments)]
fn span_plan(
    head: &RequestHead,
    id: &str,
    video: &Video,
    repr: &Repr,
    validators: &[(&str, String); 2],
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
    let mut rh = validated_head(if whole { 200 } else { 206 }, validators, keep_alive);
    let mut parts = VecDeque::new();
    if whole || spans.len() == 1 {
        rh.header("Content-Type", video.content_type.clone());
        match spans.first() {
            Some(s) if !whole => {
                rh.header(
                    "Content-Range",
                    format!("bytes {}-{}/{}", s.first, s.last, repr.len),
                );
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
    let mut h = Vec::new();
    rh.write_to(&mut h);
    Plan {
        head: h,
        parts,
        keep_alive,
    }
}

/// A request without a usable Range: 200 with the whole representation, when every byte is present or
/// being written (the response then streams as bytes arrive); 409 when bytes are missing for good.
fn whole(
    head: &RequestHead,
    id: &str,
    video: &Video,
    repr: &Repr,
    validators: &[(&str, String); 2],
    ctx: &RouteCtx<'_>,
) -> Action {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    if let Some(slot) = video.slot() {
        let missing = slot.presence.missing_in(repr.base, repr.base + repr.len);
        let absent: u64 = missing
            .iter()
            .filter(|(s, _)| slot.availability(*s) == Availability::Absent)
            .map(|(s, e)| e - s)
            .sum();
        if absent > 0 {
            return Action::Respond(error_plan(
                409,
                &format!(
                    "video {id} is incomplete: {} of {} bytes are present; ask for a Range inside the cached ranges (GET /videos lists them)",
                    slot.presence.present_bytes(),
                    video.len()
                ),
                head_only,
                keep_alive,
            ));
        }
    }
    let spans = whole_span(repr.len);
    Action::Respond(span_plan(
        head,
        id,
        video,
        repr,
        validators,
        &spans,
        true,
        ctx.boundary,
    ))
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
fn origin_learn(head: &RequestHead, id: &str, ctx: &mut RouteCtx<'_>) -> Action {
    let head_only = head.method == Method::Head;
    let (wait_expired, wait_ms) = (ctx.wait_expired, ctx.cfg.server.limits.read_wait_ms);
    let Some(o) = ctx.store.get_mut(id).and_then(|v| v.origin_mut()) else {
        return Action::Respond(error_plan(
            404,
            &format!("no video with id {id}"),
            head_only,
            head.keep_alive,
        ));
    };
    let since = ctx.request_started;
    if let Some((status, why)) = o.failure_since(0, since) {
        return Action::Respond(error_plan(status, &why, head_only, head.keep_alive));
    }
    if wait_expired {
        return Action::Respond(error_plan(
            504,
            &format!("the origin of {id} did not answer within {wait_ms} ms (limits.read_wait_ms)"),
            head_only,
            head.keep_alive,
        ));
    }
    o.want(0, 0, false, since);
    Action::WaitForBytes {
        video: id.to_string(),
    }
}

/// Serve spans of an origin video: every missing block of them is wanted (fetched once, however
/// many readers wait for it); the response starts once its first byte is here — so an origin that
/// fails before that gives its 502/504 — and then streams as the origin's bytes land.
fn origin_spans(
    head: &RequestHead,
    id: &str,
    spans: Vec<ByteSpan>,
    repr: &Repr,
    validators: &[(&str, String); 2],
    whole: bool,
    ctx: &mut RouteCtx<'_>,
) -> Action {
    let head_only = head.method == Method::Head;
    let keep_alive = head.keep_alive;
    let (wait_expired, wait_ms) = (ctx.wait_expired, ctx.cfg.server.limits.read_wait_ms);
    let since = ctx.request_started;
    if !head_only && let Some(o) = ctx.store.get_mut(id).and_then(|v| v.origin_mut()) {
        for s in &spans {
            o.want(repr.base + s.first, repr.base + s.last, false, since);
        }
    }
    let Some(video) = ctx.store.get(id) else {
        return Action::Respond(error_plan(
            404,
            &format!("no video with id {id}"),
            head_only,
            keep_alive,
        ));
    };
    if let Some(first) = spans.first().filter(|_| !head_only) {
        match video.availability(repr.base + first.first) {
            Availability::Present(_) => {}
            Availability::Pending if !wait_expired => {
                return Action::WaitForBytes {
                    video: id.to_string(),
                };
            }
            Availability::Pending => {
                return Action::Respond(error_plan(
                    504,
                    &format!(
                        "the origin of {id} did not deliver within {wait_ms} ms (limits.read_wait_ms)"
                    ),
                    head_only,
                    keep_alive,
                ));
            }
            Availability::Failed(status) => {
                let why = video
                    .origin()
                    .and_then(|o| o.failure_of(repr.base + first.first))
                    .map_or_else(|| "the origin fetch failed".to_string(), |(_, w)| w);
                return Action::Respond(error_plan(status, &why, head_only, keep_alive));
            }
            Availability::Absent | Availability::Gone => {
                return Action::Respond(error_plan(
                    416,
                    "outside the video",
                    head_only,
                    keep_alive,
                ));
            }
        }
    }
    Action::Respond(span_plan(
        head,
        id,
        video,
        repr,
        validators,
        &spans,
        whole,
        ctx.boundary,
    ))
}

/// `POST /videos/{id}/fill` (+ optional Range): warm an origin video in the background, behind the
/// fills readers are waiting for; 202.
fn fill(head: &RequestHead, id: &str, ctx: &mut RouteCtx<'_>) -> Action {
    let keep_alive = head.keep_alive && !head.has_body();
    let cfg = ctx.cfg;
    let since = ctx.request_started;
    let video = match writable_video(head, id, cfg, ctx.store, keep_alive, "warming") {
        Ok(v) => v,
        Err(refusal) => return refusal,
    };
    let Some(o) = video.origin_mut() else {
        return Action::Respond(error_plan(
            405,
            &format!("video {id} is not an origin video; only those are filled from an origin"),
            false,
            keep_alive,
        ));
    };
    let (first, last) = match (o.len(), head.range.as_deref()) {
        (None, _) => {
            // Learn the length first; the whole object is warmed after it.
            o.want(0, 0, true, since);
            let body = format!(
                "{{\"id\":{},\"filling\":\"whole\",\"length\":null}}\n",
                json_string(id)
            );
            return Action::Respond(json_plan(202, &body, false, keep_alive));
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
                    return Action::Respond(error_plan_with(
                        416,
                        "fill takes one satisfiable byte range",
                        false,
                        keep_alive,
                        &[("Content-Range", format!("bytes */{len}"))],
                    ));
                }
            }
        }
    };
    o.want(first, last, true, since);
    let queued = o.queued_blocks();
    let body = format!(
        "{{\"id\":{},\"filling\":{{\"start\":{first},\"end\":{}}},\"queued_blocks\":{queued}}}\n",
        json_string(id),
        last + 1
    );
    Action::Respond(json_plan(202, &body, false, keep_alive))
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

/// GET/HEAD of a live channel: a follower (no Range, `bytes=a-`, or an RFC 8673 open range), or a
/// bounded range inside the window (waiting, bounded, for bytes not yet published).
fn serve_live(head: &RequestHead, id: &str, ctx: &mut RouteCtx<'_>) -> Action {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let max_followers = ctx.cfg.server.limits.max_followers;
    let max_ranges = ctx.cfg.server.limits.max_ranges;
    let wait_expired = ctx.wait_expired;
    let read_wait_ms = ctx.cfg.server.limits.read_wait_ms;
    let Some(video) = ctx.store.get_mut(id) else {
        return Action::Respond(error_plan(
            404,
            &format!("no video with id {id}"),
            head_only,
            keep_alive,
        ));
    };
    let ts_aligned = video.content_type.starts_with("video/mp2t");
    let content_type = video.content_type.clone();
    let seek = video.cfg.seek.clone();
    let Some(ring) = video.ring_mut() else {
        return Action::Respond(error_plan(500, "not a live channel", head_only, keep_alive));
    };
    let (window_start, live_head) = (ring.window_start(), ring.state.head);
    let generation = ring.state.generation;
    let info = [
        ("Accept-Ranges", "bytes".to_string()),
        ("Cache-Control", "no-store".to_string()),
        ("X-Live-Head", live_head.to_string()),
        ("X-Live-Window", format!("{window_start}-{live_head}")),
        ("X-Live-Publishing", ring.publisher.is_some().to_string()),
    ];
    let outside = |first: u64| {
        Action::Respond(error_plan_with(
            416,
            &format!(
                "byte {first} is outside the live window {window_start}-{live_head} (offsets below {window_start} have been overwritten)"
            ),
            head_only,
            keep_alive,
            &[("Content-Range", format!("bytes */{live_head}"))],
        ))
    };
    // A timecode picks the follower's start (the channel's own byte offsets).
    let t_offset = match head.query.as_deref().and_then(|q| query_param(q, "t")) {
        None => None,
        Some(t) => match live_seek(ring, seek.as_ref(), &t) {
            Ok(off) => Some(off),
            Err((status, msg)) => {
                return Action::Respond(error_plan(status, &msg, head_only, keep_alive));
            }
        },
    };
    let specs = head
        .range
        .as_deref()
        .and_then(|r| parse_range_header(r, max_ranges).ok());
    // (follow from, 206 echo of the requested last-byte-pos) or a bounded span.
    type FollowFrom = Option<(u64, Option<u64>)>;
    let (follow, bounded): (FollowFrom, Option<(u64, u64)>) = match specs.as_deref() {
        None => (
            Some((
                t_offset.unwrap_or_else(|| ring.follow_start(ts_aligned)),
                None,
            )),
            None,
        ),
        // `bytes=0-` is what ffmpeg/ffprobe send for any URL: once the ring has wrapped, offset 0 is
        // gone, and the useful answer is a plain follower from the live edge.
        Some([RangeSpec::From(0)]) if window_start > 0 => (
            Some((
                t_offset.unwrap_or_else(|| ring.follow_start(ts_aligned)),
                None,
            )),
            None,
        ),
        Some([RangeSpec::From(a)]) => (Some((*a, Some(LIVE_OPEN_END))), None),
        Some([RangeSpec::FromTo(a, b)]) if *b >= LIVE_OPEN_END => (Some((*a, Some(*b))), None),
        Some([RangeSpec::FromTo(a, b)]) => (None, Some((*a, *b))),
        Some([RangeSpec::Suffix(n)]) => {
            if live_head <= window_start || *n == 0 {
                return outside(live_head);
            }
            (
                None,
                Some((
                    live_head.saturating_sub(*n).max(window_start),
                    live_head - 1,
                )),
            )
        }
        Some(_) => {
            return Action::Respond(error_plan(
                416,
                "a live channel serves one range per request",
                head_only,
                keep_alive,
            ));
        }
    };
    if let Some((from, echo)) = follow {
        if from < window_start {
            return outside(from);
        }
        let mut rh = ResponseHead::new(if echo.is_some() { 206 } else { 200 });
        rh.header("Content-Type", content_type);
        for (k, v) in &info {
            rh.header(k, v.clone());
        }
        rh.header("X-Live-Start", from.to_string());
        if let Some(last) = echo {
            rh.header("Content-Range", format!("bytes {from}-{last}/*"));
        }
        let chunked = head.minor_version >= 1;
        if head_only {
            rh.header(
                "Connection",
                if keep_alive { "keep-alive" } else { "close" },
            );
            let mut h = Vec::new();
            rh.write_to(&mut h);
            return Action::Respond(Plan {
                head: h,
                parts: VecDeque::new(),
                keep_alive,
            });
        }
        if ring.followers >= max_followers {
            return Action::Respond(error_plan_with(
                503,
                &format!("channel {id} has {max_followers} followers (limits.max_followers)"),
                false,
                keep_alive,
                &[("Retry-After", "5".to_string())],
            ));
        }
        ring.followers += 1;
        let keep = keep_alive && chunked;
        if chunked {
            rh.header("Transfer-Encoding", "chunked");
        }
        rh.header("Connection", if keep { "keep-alive" } else { "close" });
        let mut h = Vec::new();
        rh.write_to(&mut h);
        let mut parts = VecDeque::new();
        parts.push_back(Part::Follow {
            video: id.to_string(),
            pos: from,
            chunk_left: 0,
            chunked,
            sessions_seen: ring.sessions_ended,
            replay: ring.publisher.is_none() && from < live_head,
        });
        return Action::Respond(Plan {
            head: h,
            parts,
            keep_alive: keep,
        });
    }
    let Some((first, mut last)) = bounded else {
        return Action::Respond(error_plan(
            500,
            "no live range chosen",
            head_only,
            keep_alive,
        ));
    };
    if first < window_start {
        return outside(first);
    }
    if last >= live_head {
        if !wait_expired {
            return Action::WaitForBytes {
                video: id.to_string(),
            };
        }
        if first >= live_head {
            return Action::Respond(error_plan_with(
                503,
                &format!(
                    "bytes from {first} have not been published yet (waited {read_wait_ms} ms, limits.read_wait_ms); the head is {live_head}"
                ),
                head_only,
                keep_alive,
                &[("Retry-After", "1".to_string())],
            ));
        }
        last = live_head - 1;
    }
    let mut rh = ResponseHead::new(206);
    rh.header("Content-Type", content_type);
    for (k, v) in &info {
        rh.header(k, v.clone());
    }
    rh.header("Content-Range", format!("bytes {first}-{last}/*"));
    rh.header("Content-Length", (last - first + 1).to_string());
    rh.header(
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
    );
    let mut h = Vec::new();
    rh.write_to(&mut h);
    let mut parts = VecDeque::new();
    if !head_only {
        parts.push_back(Part::Payload {
            video: id.to_string(),
            pos: first,
            end: last + 1,
            generation,
        });
    }
    Action::Respond(Plan {
        head: h,
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
    store: &'a mut Store,
    keep_alive: bool,
    what: &str,
) -> Result<&'a mut Video, Action> {
    let Some(video) = store.get_mut(id) else {
        return Err(Action::Respond(error_plan(
            404,
            &format!("no video with id {id}"),
            false,
            keep_alive,
        )));
    };
    let tokens = write_tokens(cfg, video);
    if tokens.iter().all(|t| t.is_none()) {
        return Err(Action::Respond(error_plan(
            403,
            "writes are disabled: no write_token is configured",
            false,
            keep_alive,
        )));
    }
    if !authorized(head, &tokens) {
        return Err(Action::Respond(unauthorized(false, keep_alive, what)));
    }
    Ok(video)
}

fn ingest(head: &RequestHead, id: &str, ctx: &mut RouteCtx<'_>) -> Action {
    // A refused write closes the connection: its body (if any) is not read.
    let close = |status: u16, msg: &str| Action::Respond(error_plan(status, msg, false, false));
    let cfg = ctx.cfg;
    let video = match writable_video(head, id, cfg, ctx.store, false, "writing") {
        Ok(v) => v,
        Err(refusal) => return refusal,
    };
    if !video.is_writable() {
        return Action::Respond(error_plan_with(
            405,
            &format!("video {id} is a read-only file video"),
            false,
            false,
            &[("Allow", "GET, HEAD, OPTIONS".to_string())],
        ));
    }
    let framing = match (head.chunked, head.content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => {
            return close(
                411,
                "a write needs Content-Length or Transfer-Encoding: chunked",
            );
        }
    };
    if let Framing::Length(n) = framing
        && n > cfg.server.limits.max_body_bytes
    {
        return close(
            413,
            &format!(
                "body of {n} bytes exceeds limits.max_body_bytes = {}",
                cfg.server.limits.max_body_bytes
            ),
        );
    }
    if let Some(ring) = video.ring_mut() {
        if head.content_range.is_some() {
            return close(
                400,
                "a live channel takes appends at its head: send the stream without Content-Range",
            );
        }
        let start = ring.state.head;
        let end = match framing {
            Framing::Length(n) => start.saturating_add(n),
            // A live stream is as long as the publisher keeps sending: the ring bounds the disk.
            Framing::Chunked => u64::MAX,
        };
        return match ring.begin_publish() {
            Ok(reservation) => Action::Ingest(IngestPlan {
                video: id.to_string(),
                reservation,
                start,
                end,
                framing,
                expect_continue: head.expect_continue,
                keep_alive: head.keep_alive,
                exact: false,
            }),
            Err(e) => close(refusal_status(&e), &e.to_string()),
        };
    }
    let Some(slot) = video.slot_mut() else {
        return close(405, "this video does not take writes");
    };
    let (reservation, start, end, exact) = match head.content_range.as_deref() {
        Some(cr) => {
            if head.method != Method::Put {
                return close(400, "Content-Range is only for PUT");
            }
            let cr = match parse_content_range(cr) {
                Ok(cr) => cr,
                Err(e) => return close(400, &format!("Content-Range: {}", e.message)),
            };
            if let Some(total) = cr.complete_length
                && total != slot.data.len
            {
                return close(
                    416,
                    &format!(
                        "Content-Range says the video is {total} bytes; slot {id} is {} bytes",
                        slot.data.len
                    ),
                );
            }
            let Some(end) = cr.last.checked_add(1) else {
                return close(400, "Content-Range overflows");
            };
            let want = end - cr.first;
            match framing {
                Framing::Length(n) if n != want => {
                    return close(
                        400,
                        &format!("Content-Length {n} does not match Content-Range length {want}"),
                    );
                }
                _ => {}
            }
            match slot.reserve(cr.first, end) {
                Ok(r) => (r, cr.first, end, true),
                Err(e) => return close(refusal_status(&e), &e.to_string()),
            }
        }
        None => {
            let max = match framing {
                Framing::Length(n) => Some(n),
                Framing::Chunked => None,
            };
            if max == Some(0) {
                return close(400, "an append needs a non-empty body");
            }
            match slot.reserve_append(max) {
                Ok((r, s, e)) => (r, s, e, max.is_some()),
                Err(e) => return close(refusal_status(&e), &e.to_string()),
            }
        }
    };
    Action::Ingest(IngestPlan {
        video: id.to_string(),
        reservation,
        start,
        end,
        framing,
        expect_continue: head.expect_continue,
        keep_alive: head.keep_alive,
        exact,
    })
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
    let (present, complete, len) = match store.get(id).and_then(|v| v.slot()) {
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

fn delete(head: &RequestHead, id: &str, ctx: &mut RouteCtx<'_>) -> Action {
    let keep_alive = head.keep_alive && !head.has_body();
    let cfg = ctx.cfg;
    let video = match writable_video(head, id, cfg, ctx.store, keep_alive, "deleting") {
        Ok(v) => v,
        Err(refusal) => return refusal,
    };
    if matches!(video.cfg.kind, VideoKind::File { .. }) {
        return Action::Respond(error_plan_with(
            405,
            &format!("video {id} is a read-only file video"),
            false,
            keep_alive,
            &[("Allow", "GET, HEAD, OPTIONS".to_string())],
        ));
    }
    let forgotten = match (&mut video.body, video.cfg.kind_name()) {
        (crate::store::Body::Upload(slot), _) => slot.forget_all(),
        (crate::store::Body::Origin(o), _) => {
            let fetching = o.fetching_blocks() > 0;
            match o.slot_mut() {
                Some(slot) if !fetching => slot.forget_all(),
                Some(_) => Err(WriteRefusal::Busy(
                    "origin fetches of this video are in progress".into(),
                )),
                None => Ok(()),
            }
        }
        (crate::store::Body::Live(ring), _) => ring.forget_all(),
        _ => Err(WriteRefusal::Busy("this video cannot be deleted".into())),
    };
    if let Err(e) = forgotten {
        return Action::Respond(error_plan(
            refusal_status(&e),
            &e.to_string(),
            false,
            keep_alive,
        ));
    }
    let claim_seq = video.commit().map_or(0, |c| c.claim_seq);
    let body = format!("{{\"id\":{},\"deleted\":true}}\n", json_string(id));
    Action::AwaitCommit {
        video: id.to_string(),
        claim_seq,
        durable: true,
        ok: json_plan(200, &body, false, keep_alive),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ids() {
        assert!(valid_id("movie.ts"));
        assert!(valid_id("a-b_c.9"));
        assert!(!valid_id(""));
        assert!(!valid_id(".."));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a b"));
        assert!(!valid_id(&"x".repeat(129)));
    }
}
