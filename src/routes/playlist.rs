//! `GET /videos/{id}/index.m3u8`: which HLS playlist a video gets — a live MPEG-TS channel's sliding
//! window of closed keyframe segments, or a VOD playlist from an MPEG-TS video's seek table. The text
//! is rendered by `crate::hls`; the segments are byte ranges of `/videos/{id}` itself.

use super::{Action, Decision, Plan, RouteCtx, WaitFor, error_plan, error_plan_with};
use crate::config::VideoKind;
use crate::hls::{self, MediaSegment, PLAYLIST_TYPE, Playlist};
use crate::http::request::{Method, RequestHead};
use crate::http::response::simple_parts;
use crate::store::Video;

/// The playlist of video `id` (configured, reads allowed).
pub(super) fn playlist(head: &RequestHead, id: &str, ctx: &RouteCtx<'_>) -> Decision {
    let keep_alive = head.keep_alive;
    let head_only = head.method == Method::Head;
    let Some(video) = ctx.store.get(id) else {
        return Decision::respond(error_plan(
            404,
            &format!("no video with id {id}"),
            head_only,
            keep_alive,
        ));
    };
    if !video.content_type.starts_with("video/mp2t") {
        let why = format!(
            "video {id} is {}; HLS playlists are made for video/mp2t videos (set content_type)",
            video.content_type
        );
        return Decision::respond(error_plan(409, &why, head_only, keep_alive));
    }
    let uri = hls::SEGMENT_URI;
    match &video.cfg.kind {
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
    let window_start = ring.window_start();
    let (segments, max_ticks) = match ring.index.as_ref() {
        Some(ix) => (
            hls::live_segments(
                ix.segments
                    .iter()
                    .copied()
                    .filter(|s| s.offset >= window_start),
            ),
            ix.max_ticks,
        ),
        None => (Vec::new(), 0),
    };
    let Some(first) = ring.index.as_ref().and_then(|ix| {
        ix.segments
            .iter()
            .find(|s| s.offset >= window_start)
            .copied()
    }) else {
        if ring.publisher.is_some() && !ctx.wait_expired {
            return Decision::act(Action::WaitForBytes(WaitFor {
                video: id.to_string(),
                offset: ring.state.head,
                generation: ring.state.generation,
                phase: None,
            }));
        }
        let why = format!(
            "channel {id} has no complete segment in its window yet (a segment ends at the next keyframe)"
        );
        let extra = [("Retry-After", "1".to_string())];
        return Decision::respond(error_plan_with(503, &why, head_only, keep_alive, &extra));
    };
    let text = hls::render(&Playlist {
        uri,
        media_sequence: first.seq,
        segments: &segments,
        vod: false,
        independent: true,
        min_target_secs: max_ticks.div_ceil(crate::tsindex::PTS_CLOCK_HZ),
    });
    Decision::respond(playlist_plan(head, &text, "no-cache"))
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
        media_sequence: 0,
        segments,
        vod: true,
        independent,
        min_target_secs: 1,
    });
    playlist_plan(head, &text, "max-age=60")
}
