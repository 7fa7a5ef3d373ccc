//! `GET /videos/{id}/index.m3u8`: which HLS playlist a video gets — a live MPEG-TS channel's sliding
//! window of closed keyframe segments, or a VOD playlist from an MPEG-TS video's seek table. The text
//! is rendered by `crate::hls`; the segments are byte ranges of `/videos/{id}` itself.

use super::{
    Action, Decision, Plan, RouteCtx, WaitFor, error_plan, error_plan_with, no_such_video,
};
use crate::config::VideoKind;
use crate::hls::{self, LowLatency, MediaSegment, PLAYLIST_TYPE, PartView, Playlist};
use crate::http::request::{Method, RequestHead, query_param};
use crate::http::response::simple_parts;
use crate::store::ring::{PART_TARGET_MS, PartSpan, Segment};
use crate::store::{LiveRing, Video};
use crate::tsindex::PTS_CLOCK_HZ;

/// What a blocking playlist reload (`_HLS_msn`, `_HLS_part`) waits for: segment `msn` (and its part
/// `part`) to be in the playlist. Checked on each of the channel's wake-ups (`WaitFor::met`), so the
/// answer leaves in the loop turn that claims the bytes completing the part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartWait {
    msn: u64,
    part: Option<u64>,
}

impl PartWait {
    /// The part is there, or it will not come (no publisher any more, not a live channel).
    pub(super) fn met(&self, video: &Video) -> bool {
        let Some(ring) = video.ring() else {
            return true;
        };
        ring.publisher.is_none()
            || ring
                .index
                .as_ref()
                .is_none_or(|ix| ix.part_available(&ring.state.numbering, self.msn, self.part))
    }
}

/// How long a video plays, where it is known: a live MPEG-TS channel's window (its closed segments),
/// or a VOD MPEG-TS video's seek table over its length.
pub(super) fn duration_ms(video: &Video) -> Option<u64> {
    let live_mp4 = is_live_mp4(video);
    if !video.content_type.starts_with("video/mp2t") && !live_mp4 {
        return None;
    }
    if let Some(ring) = video.ring() {
        let ix = ring.index.as_ref()?;
        let start = ring.window_start();
        let ticks: u64 = ix
            .segments
            .iter()
            .filter(|s| s.offset >= start)
            .map(|s| s.ticks)
            .sum();
        return Some(ticks * 1000 / PTS_CLOCK_HZ);
    }
    let len = video.len();
    let (segs, _) = hls::vod_segments(video.cfg.seek.as_ref()?, len).filter(|_| len > 0)?;
    Some(segs.iter().map(|s| s.millis).sum())
}

/// The blocking reload a request asks for, if any.
fn blocking_request(head: &RequestHead) -> Result<Option<PartWait>, String> {
    let Some(q) = head.query.as_deref() else {
        return Ok(None);
    };
    let number = |name: &str| -> Result<Option<u64>, String> {
        match query_param(q, name) {
            None => Ok(None),
            Some(v) if v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}={v} is not a number")),
            Some(v) => Err(format!("{name}={v} is not a decimal integer")),
        }
    };
    match (number("_HLS_msn")?, number("_HLS_part")?) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err("_HLS_part needs _HLS_msn".into()),
        (Some(msn), part) => Ok(Some(PartWait { msn, part })),
    }
}

/// The playlist of video `id` (configured, reads allowed).
pub(super) fn playlist(head: &RequestHead, id: &str, ctx: &RouteCtx<'_>) -> Decision {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let Some(video) = ctx.store.get(id) else {
        return Decision::respond(no_such_video(id, head_only, keep_alive));
    };
    let live_mp4 = is_live_mp4(video);
    if !video.content_type.starts_with("video/mp2t") && !live_mp4 {
        let why = format!(
            "video {id} is {}; HLS playlists are made for video/mp2t videos and video/mp4 live channels (set content_type)",
            video.content_type
        );
        return Decision::respond(error_plan(409, &why, head_only, keep_alive));
    }
    let uri = hls::SEGMENT_URI;
    match &video.cfg.kind {
        VideoKind::Live { .. } if live_mp4 => live(head, hls::SEGMENT_URI_MP4, id, video, ctx),
        VideoKind::Live { .. } => live(head, uri, id, video, ctx),
        VideoKind::File { .. } | VideoKind::Origin { .. } => {
            Decision::respond(vod(head, uri, id, video))
        }
        VideoKind::Upload { .. } => {
            let why = format!(
                "video {id} is an upload slot; playlists are served for live, file and origin videos"
            );
            Decision::respond(error_plan(409, &why, head_only, keep_alive))
        }
    }
}

/// A live channel published as fragmented MP4.
fn is_live_mp4(video: &Video) -> bool {
    video.content_type.starts_with("video/mp4") && video.ring().is_some_and(|r| r.mp4_index)
}

/// `GET /videos/{id}/init.mp4?at=OFFSET`: the init segment (`ftyp` + `moov`) a fragmented MP4
/// channel's playlist names in `#EXT-X-MAP` — the one kept in the ring's record, which stays after
/// the ring has overwritten its bytes. `at` must name the kept one (410 once a new session replaced
/// it); without `at`, the kept one.
pub(super) fn init_segment(head: &RequestHead, id: &str, ctx: &RouteCtx<'_>) -> Plan {
    let (keep_alive, head_only) = (head.keep_alive, head.method == Method::Head);
    let Some(video) = ctx.store.get(id) else {
        return no_such_video(id, head_only, keep_alive);
    };
    let Some(ring) = video.ring().filter(|_| is_live_mp4(video)) else {
        let why = format!("video {id} is not a video/mp4 live channel; only those have init.mp4");
        return error_plan(404, &why, head_only, keep_alive);
    };
    let st = &ring.state;
    if st.init.is_empty() {
        let why = format!("channel {id} has no init segment (ftyp + moov) yet");
        let extra = [("Retry-After", "1".to_string())];
        return error_plan_with(503, &why, head_only, keep_alive, &extra);
    }
    let at = head.query.as_deref().and_then(|q| query_param(q, "at"));
    match at.as_deref().map(str::parse::<u64>) {
        None => {}
        Some(Ok(at)) if at == st.init_offset => {}
        Some(Ok(at)) => {
            let why = format!(
                "the init segment at {at} of channel {id} was replaced by the one at {} (a new publish session)",
                st.init_offset
            );
            return error_plan(410, &why, head_only, keep_alive);
        }
        Some(Err(_)) => {
            let why = format!("at={} is not a byte offset", at.unwrap_or_default());
            return error_plan(400, &why, head_only, keep_alive);
        }
    }
    let extra = [("Cache-Control", "no-cache".to_string())];
    let parts = simple_parts(200, "video/mp4", &st.init, head_only, keep_alive, &extra);
    Plan::small(parts, keep_alive)
}

fn playlist_plan(head: &RequestHead, text: &str, cache: &str) -> Plan {
    let extra = [("Cache-Control", cache.to_string())];
    let parts = simple_parts(
        200,
        PLAYLIST_TYPE,
        text.as_bytes(),
        head.method == Method::Head,
        head.keep_alive,
        &extra,
    );
    Plan::small(parts, head.keep_alive)
}

/// A live channel's sliding window. Before its first segment has closed, the request waits (bounded
/// by limits.read_wait_ms) for the channel's next bytes and is routed again — woken by ingest.
fn live(head: &RequestHead, uri: &str, id: &str, video: &Video, ctx: &RouteCtx<'_>) -> Decision {
    let (keep_alive, head_only) = (head.keep_alive, head.method == Method::Head);
    let Some(ring) = video.ring() else {
        return Decision::respond(error_plan(500, "not a live channel", head_only, keep_alive));
    };
    if let Some(answer) = blocking_wait(head, id, video, ring, ctx) {
        return answer;
    }
    let window_start = ring.window_start();
    let Some(ix) = ring.index.as_ref() else {
        return Decision::respond(error_plan(500, "no keyframe index", head_only, keep_alive));
    };
    // fMP4: only the segments after the kept init segment (an earlier session's init is gone).
    let mp4 = is_live_mp4(video);
    let (init_offset, has_init) = (ring.state.init_offset, !ring.state.init.is_empty());
    let listed: Vec<Segment> = ix
        .segments
        .iter()
        .copied()
        .filter(|s| s.offset >= window_start && (!mp4 || (has_init && s.offset > init_offset)))
        .collect();
    let Some(first) = listed.first().copied() else {
        if ring.publisher.is_some() && !ctx.wait_expired {
            return Decision::act(Action::WaitForBytes(WaitFor {
                video: id.to_string(),
                offset: ring.state.head,
                generation: ring.state.generation,
                phase: None,
                part: None,
                opening: false,
            }));
        }
        let why = format!(
            "channel {id} has no complete segment in its window yet (a segment ends at the next keyframe)"
        );
        let extra = [("Retry-After", "1".to_string())];
        return Decision::respond(error_plan_with(503, &why, head_only, keep_alive, &extra));
    };
    let segments = hls::live_segments(listed.iter().copied());
    let segment_parts: Vec<Vec<PartView>> = listed
        .iter()
        .map(|s| {
            ix.closed_parts(s)
                .map_or_else(Vec::new, |p| part_views(&p, s.offset))
        })
        .collect();
    let open_parts = match ix.keyframes.back() {
        Some(k) if ring.publisher.is_some() => part_views(&ix.open_parts(), k.offset),
        _ => Vec::new(),
    };
    let map_uri = format!("{}?at={init_offset}", hls::INIT_URI_MP4);
    // A part is whole fragments: LL-HLS when the publisher's fragments fit the part target.
    let low_latency = (!mp4 || ix.parts_fit_target()).then_some(LowLatency {
        part_target_ms: PART_TARGET_MS,
        segment_parts: &segment_parts,
        open_parts: &open_parts,
        preload_hint: ring
            .publisher
            .and_then(|_| ix.complete_parts_end(&ring.state.numbering))
            .filter(|&start| start >= window_start),
    });
    let text = hls::render(&Playlist {
        uri,
        map: mp4.then_some((map_uri.as_str(), ring.state.init.len() as u64)),
        media_sequence: first.seq,
        segments: &segments,
        vod: false,
        independent: true,
        min_target_secs: ix.max_ticks.div_ceil(PTS_CLOCK_HZ),
        low_latency,
    });
    Decision::respond(playlist_plan(head, &text, "no-cache"))
}

/// A segment's parts as a playlist lists them (the one at its keyframe is independent).
fn part_views(parts: &[PartSpan], keyframe: u64) -> Vec<PartView> {
    parts
        .iter()
        .map(|p| PartView {
            offset: p.offset,
            len: p.end - p.offset,
            millis: p.ticks * 1000 / PTS_CLOCK_HZ,
            independent: p.offset == keyframe,
        })
        .collect()
}

/// A blocking reload whose part is not there yet waits for it (bounded by limits.read_wait_ms; then
/// 503, as RFC 8216bis §6.2.5.2 asks); one too far ahead is 400. None: answer the playlist now.
fn blocking_wait(
    head: &RequestHead,
    id: &str,
    video: &Video,
    ring: &LiveRing,
    ctx: &RouteCtx<'_>,
) -> Option<Decision> {
    let (keep_alive, head_only) = (head.keep_alive, head.method == Method::Head);
    let wait = match blocking_request(head) {
        Ok(w) => w?,
        Err(why) => {
            return Some(Decision::respond(error_plan(
                400, &why, head_only, keep_alive,
            )));
        }
    };
    let open_seq = ring.state.numbering.next_seq;
    if wait.msn > open_seq + 1 {
        let why = format!(
            "_HLS_msn={} is more than two segments past the playlist's last ({})",
            wait.msn,
            open_seq.saturating_sub(1)
        );
        return Some(Decision::respond(error_plan(
            400, &why, head_only, keep_alive,
        )));
    }
    if wait.met(video) {
        return None;
    }
    if ctx.wait_expired {
        let why = format!(
            "segment {} part {:?} of {id} did not arrive in time (limits.read_wait_ms)",
            wait.msn, wait.part
        );
        let extra = [("Retry-After", "1".to_string())];
        return Some(Decision::respond(error_plan_with(
            503, &why, head_only, keep_alive, &extra,
        )));
    }
    Some(Decision::act(Action::WaitForBytes(WaitFor {
        video: id.to_string(),
        offset: ring.state.head,
        generation: ring.state.generation,
        phase: None,
        part: Some(wait),
        opening: false,
    })))
}

/// A VOD playlist from the video's seek table (its length must be known).
fn vod(head: &RequestHead, uri: &str, id: &str, video: &Video) -> Plan {
    let (keep_alive, head_only) = (head.keep_alive, head.method == Method::Head);
    let Some(table) = video.cfg.seek.as_ref() else {
        let why = format!(
            "video {id} has no [video.seek] table, so its segments are not known (`vcache index FILE` prints one)"
        );
        return error_plan(409, &why, head_only, keep_alive);
    };
    let len = video.len();
    if len == 0 {
        let why = format!(
            "the length of video {id} is not known yet (it is learned from the origin's first answer)"
        );
        let extra = [("Retry-After", "1".to_string())];
        return error_plan_with(503, &why, head_only, keep_alive, &extra);
    }
    let Some((segments, independent)) = hls::vod_segments(table, len) else {
        let why = format!("the seek table of video {id} has no point inside its {len} bytes");
        return error_plan(409, &why, head_only, keep_alive);
    };
    let segments: &[MediaSegment] = &segments;
    let text = hls::render(&Playlist {
        uri,
        map: None,
        media_sequence: 0,
        segments,
        vod: true,
        independent,
        min_target_secs: 1,
        low_latency: None,
    });
    playlist_plan(head, &text, "max-age=60")
}
