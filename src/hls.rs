//! HLS media playlists (RFC 8216) over byte ranges of a video, without transcoding: a live channel's
//! closed keyframe-interval segments (`store::ring::Segment`, numbered by the ring's persisted
//! `SegmentNumbering`), or a VOD MPEG-TS video's seek table. Pure text rendering; routing decides
//! which playlist a request gets.

use std::fmt::Write as _;

use crate::http::date::format_iso8601_ms;
use crate::seek::{SeekMap, SeekTable};
use crate::store::ring::Segment;
use crate::tsindex::PTS_CLOCK_HZ;

/// The URI of every segment, relative to `/videos/{id}/index.m3u8`: `/videos/{id}/stream.ts`, the
/// video's bytes under a name with a media extension.
pub const SEGMENT_URI: &str = "stream.ts";
/// The segment URI of a fragmented MP4 channel: `/videos/{id}/stream.mp4`, the same bytes.
pub const SEGMENT_URI_MP4: &str = "stream.mp4";
/// The init segment of a fragmented MP4 channel's session: `/videos/{id}/init.mp4?at=OFFSET`, the
/// offset naming the session's init (a new session's init gets a new URI, so players fetch it again).
pub const INIT_URI_MP4: &str = "init.mp4";
/// The media type of a playlist.
pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Segment length of a VOD playlist built from a constant byte rate (Apple's recommended 6 s).
pub const VOD_SEGMENT_SECS: u64 = 6;
/// Most segments a VOD playlist lists (a seek table longer than that is cut into larger segments).
pub const MAX_VOD_SEGMENTS: usize = 20_000;

/// One media segment: bytes [offset, offset + len) of the video.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaSegment {
    pub offset: u64,
    pub len: u64,
    /// Duration in milliseconds.
    pub millis: u64,
    pub disc: u64,
    pub pdt_ms: Option<u64>,
}

/// An LL-HLS partial segment: bytes [offset, offset + len).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartView {
    pub offset: u64,
    pub len: u64,
    pub millis: u64,
    /// Starts with a keyframe.
    pub independent: bool,
}

/// The low-latency part of a live playlist (LL-HLS: `#EXT-X-PART`, blocking reloads).
pub struct LowLatency<'a> {
    pub part_target_ms: u64,
    /// The parts of each listed segment, by index (empty where they are no longer kept).
    pub segment_parts: &'a [Vec<PartView>],
    /// The complete parts of the segment being published.
    pub open_parts: &'a [PartView],
    /// Where the part being published starts, while a publisher is on: `#EXT-X-PRELOAD-HINT` with
    /// `BYTERANGE-START` and no length — an open range there is answered with each part whole as
    /// it completes (byte-range addressing, as Akamai's LL-HLS does).
    pub preload_hint: Option<u64>,
}

/// What a media playlist shows.
pub struct Playlist<'a> {
    /// The URI every segment's byte range refers to.
    pub uri: &'a str,
    /// `#EXT-X-MAP` (fragmented MP4): the init segment's URI and length. The length is given as
    /// the whole resource's `BYTERANGE` so that a player reusing a connection sends a bounded request.
    pub map: Option<(&'a str, u64)>,
    pub media_sequence: u64,
    pub segments: &'a [MediaSegment],
    /// VOD: `#EXT-X-PLAYLIST-TYPE:VOD` and `#EXT-X-ENDLIST`.
    pub vod: bool,
    /// Every segment starts with a keyframe (`#EXT-X-INDEPENDENT-SEGMENTS`).
    pub independent: bool,
    /// At least this target duration (a live playlist's never shrinks while the process runs).
    pub min_target_secs: u64,
    pub low_latency: Option<LowLatency<'a>>,
}

fn millis_text(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn write_parts(out: &mut String, uri: &str, parts: &[PartView]) {
    for p in parts {
        assert!(p.len > 0, "an empty part");
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={},URI=\"{uri}\",BYTERANGE=\"{}@{}\"{}",
            millis_text(p.millis),
            p.len,
            p.offset,
            if p.independent {
                ",INDEPENDENT=YES"
            } else {
                ""
            }
        );
    }
}

/// A segment's duration rounded up to whole seconds: the target duration must be at least every
/// segment's duration rounded to the nearest integer (RFC 8216 §4.3.3.1), so rounding up is safe.
fn ceil_secs(millis: u64) -> u64 {
    millis.div_ceil(1000).max(1)
}

/// The playlist text. Segments must be consecutive in media sequence (the caller's invariant).
pub fn render(p: &Playlist<'_>) -> String {
    let target = p
        .segments
        .iter()
        .map(|s| ceil_secs(s.millis))
        .fold(p.min_target_secs.max(1), u64::max);
    let mut out = String::with_capacity(128 + p.segments.len() * 120);
    // Version 6: EXT-X-MAP without I-frames only, and LL-HLS; version 4: byte ranges.
    let version = if p.low_latency.is_some() || p.map.is_some() {
        6
    } else {
        4
    };
    let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:{version}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    if let Some(ll) = &p.low_latency {
        // PART-HOLD-BACK: at least three part targets (RFC 8216bis §4.4.3.8).
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}\n#EXT-X-PART-INF:PART-TARGET={}",
            millis_text(3 * ll.part_target_ms),
            millis_text(ll.part_target_ms)
        );
    }
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", p.media_sequence);
    if let Some(first) = p.segments.first() {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", first.disc);
    }
    if p.vod {
        out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    if p.independent {
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    if let Some((uri, len)) = p.map {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{uri}\",BYTERANGE=\"{len}@0\"");
    }
    let mut prev_disc = p.segments.first().map(|s| s.disc);
    for (i, s) in p.segments.iter().enumerate() {
        assert!(s.len > 0, "an empty media segment");
        if prev_disc != Some(s.disc) {
            assert_eq!(
                prev_disc.map(|d| d + 1),
                Some(s.disc),
                "discontinuities count by one"
            );
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        prev_disc = Some(s.disc);
        if let Some(ms) = s.pdt_ms {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_iso8601_ms(ms));
        }
        if let Some(parts) = p
            .low_latency
            .as_ref()
            .and_then(|ll| ll.segment_parts.get(i))
        {
            write_parts(&mut out, p.uri, parts);
        }
        let _ = writeln!(
            out,
            "#EXTINF:{}.{:03},\n#EXT-X-BYTERANGE:{}@{}\n{}",
            s.millis / 1000,
            s.millis % 1000,
            s.len,
            s.offset,
            p.uri
        );
    }
    if let Some(ll) = &p.low_latency {
        write_parts(&mut out, p.uri, ll.open_parts);
        if let Some(start) = ll.preload_hint {
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\",BYTERANGE-START={start}",
                p.uri
            );
        }
    }
    if p.vod {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// A live channel's closed segments as media segments.
pub fn live_segments(segments: impl Iterator<Item = Segment>) -> Vec<MediaSegment> {
    segments
        .map(|s| MediaSegment {
            offset: s.offset,
            len: s.end - s.offset,
            millis: s.ticks * 1000 / PTS_CLOCK_HZ,
            disc: s.disc,
            pdt_ms: Some(s.pdt_ms),
        })
        .collect()
}

/// The milliseconds of `frames` frames at `fps`.
fn frames_ms(frames: u64, fps: u32) -> u64 {
    (u128::from(frames) * 1000 / u128::from(fps.max(1))) as u64
}

/// A VOD playlist's segments from a seek table over a video of `len` bytes: keyframe points make
/// keyframe-aligned segments (the last one's duration is estimated from the average byte rate of the
/// others); a constant byte rate makes `VOD_SEGMENT_SECS` segments. Returns whether every segment
/// starts on a keyframe. None if the table gives nothing usable for this length.
pub fn vod_segments(table: &SeekTable, len: u64) -> Option<(Vec<MediaSegment>, bool)> {
    match &table.map {
        SeekMap::ByteRate(rate) => {
            let rate = (*rate).max(1);
            let step = rate
                .checked_mul(VOD_SEGMENT_SECS)?
                .max(len / MAX_VOD_SEGMENTS as u64 + 1);
            let segs = (0..len)
                .step_by(usize::try_from(step).ok()?)
                .map(|offset| {
                    let n = step.min(len - offset);
                    let millis = (u128::from(n) * 1000 / u128::from(rate)).max(1) as u64;
                    MediaSegment {
                        offset,
                        len: n,
                        millis,
                        disc: 0,
                        pdt_ms: None,
                    }
                })
                .collect();
            Some((segs, false))
        }
        SeekMap::Points(points) => {
            let inside: Vec<(u64, u64)> = points
                .iter()
                .copied()
                .filter(|&(_, off)| off < len)
                .collect();
            let every = inside.len().div_ceil(MAX_VOD_SEGMENTS).max(1);
            let mut starts: Vec<(u64, u64)> = inside.into_iter().step_by(every).collect();
            let &(first_frame, first_off) = starts.first()?;
            let &(last_frame, last_off) = starts.last()?;
            // The tail's duration: the average byte rate of what the table covers, else one frame.
            let covered_ms = frames_ms(last_frame - first_frame, table.fps);
            let tail_ms = if last_off > first_off && covered_ms > 0 {
                let bytes = u128::from(last_off - first_off);
                (u128::from(len - last_off) * u128::from(covered_ms) / bytes) as u64
            } else {
                frames_ms(1, table.fps)
            };
            // The bytes before the first keyframe (tables, headers) go with the first segment.
            starts[0].1 = 0;
            let mut segs = Vec::with_capacity(starts.len());
            for pair in starts.windows(2) {
                let millis = frames_ms(pair[1].0 - pair[0].0, table.fps).max(1);
                let (offset, n) = (pair[0].1, pair[1].1 - pair[0].1);
                segs.push(MediaSegment {
                    offset,
                    len: n,
                    millis,
                    disc: 0,
                    pdt_ms: None,
                });
            }
            let tail_off = starts.last()?.1;
            let millis = tail_ms.max(1);
            segs.push(MediaSegment {
                offset: tail_off,
                len: len - tail_off,
                millis,
                disc: 0,
                pdt_ms: None,
            });
            Some((segs, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u64, len: u64, millis: u64, disc: u64) -> MediaSegment {
        MediaSegment {
            offset,
            len,
            millis,
            disc,
            pdt_ms: Some(1_700_000_000_000 + offset),
        }
    }

    #[test]
    fn live_playlist_has_target_sequence_and_discontinuities() {
        let segs = [
            seg(188, 1000, 1000, 4),
            seg(1188, 940, 2400, 4),
            seg(5000, 376, 1000, 5),
        ];
        let text = render(&Playlist {
            uri: "stream.ts",
            map: None,
            media_sequence: 41,
            segments: &segs,
            vod: false,
            independent: true,
            min_target_secs: 1,
            low_latency: None,
        });
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:3\n"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:41\n#EXT-X-DISCONTINUITY-SEQUENCE:4\n"));
        assert!(text.contains("#EXTINF:2.400,\n#EXT-X-BYTERANGE:940@1188\nstream.ts\n"));
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.188Z"));
        assert!(!text.contains("ENDLIST"));
    }

    #[test]
    fn low_latency_lists_parts_before_their_segment_and_the_open_ones_last() {
        let segs = [seg(0, 3000, 1000, 0)];
        let part = |offset, len, independent| PartView {
            offset,
            len,
            millis: 200,
            independent,
        };
        let closed = [vec![part(0, 1000, true), part(1000, 2000, false)]];
        let open = [part(3000, 500, true)];
        let text = render(&Playlist {
            uri: "stream.ts",
            map: None,
            media_sequence: 7,
            segments: &segs,
            vod: false,
            independent: true,
            min_target_secs: 1,
            low_latency: Some(LowLatency {
                part_target_ms: 200,
                segment_parts: &closed,
                open_parts: &open,
                preload_hint: Some(3500),
            }),
        });
        assert!(text.contains("#EXT-X-VERSION:6\n"));
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600\n#EXT-X-PART-INF:PART-TARGET=0.200\n"));
        let first = text
            .find("BYTERANGE=\"1000@0\",INDEPENDENT=YES")
            .expect("first part");
        let extinf = text.find("#EXTINF:1.000,").expect("segment");
        let last = text
            .find("BYTERANGE=\"500@3000\",INDEPENDENT=YES")
            .expect("open part");
        assert!(first < extinf && extinf < last, "{text}");
        assert!(
            text.ends_with(
                "BYTERANGE=\"500@3000\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"stream.ts\",BYTERANGE-START=3500\n"
            ),
            "the hint comes last, where the open parts end: {text}"
        );
    }

    #[test]
    fn fmp4_playlist_maps_its_init_segment_at_version_6() {
        let segs = [seg(900, 1000, 1000, 2)];
        let text = render(&Playlist {
            uri: SEGMENT_URI_MP4,
            map: Some(("init.mp4?at=0", 810)),
            media_sequence: 3,
            segments: &segs,
            vod: false,
            independent: true,
            min_target_secs: 1,
            low_latency: None,
        });
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n"), "{text}");
        let map = text
            .find("#EXT-X-MAP:URI=\"init.mp4?at=0\",BYTERANGE=\"810@0\"\n")
            .expect("map");
        let first = text.find("#EXTINF").expect("segment");
        assert!(
            map < first,
            "the map comes before the segments it applies to"
        );
        assert!(text.contains("#EXT-X-BYTERANGE:1000@900\nstream.mp4\n"));
    }

    #[test]
    fn vod_from_points_and_byte_rate() {
        let table = SeekTable {
            fps: 25,
            map: SeekMap::Points(vec![(0, 0), (50, 1000), (100, 3000)]),
        };
        let (segs, independent) = vod_segments(&table, 4000).expect("segments");
        assert!(independent);
        assert_eq!(
            segs.iter()
                .map(|s| (s.offset, s.len, s.millis))
                .collect::<Vec<_>>(),
            vec![(0, 1000, 2000), (1000, 2000, 2000), (3000, 1000, 1333)]
        );
        let rate = SeekTable {
            fps: 25,
            map: SeekMap::ByteRate(100),
        };
        let (segs, independent) = vod_segments(&rate, 1300).expect("segments");
        assert!(!independent);
        assert_eq!(
            segs.iter()
                .map(|s| (s.offset, s.len, s.millis))
                .collect::<Vec<_>>(),
            vec![(0, 600, 6000), (600, 600, 6000), (1200, 100, 1000)]
        );
        let text = render(&Playlist {
            uri: "stream.ts",
            map: None,
            media_sequence: 0,
            segments: &segs,
            vod: true,
            independent,
            min_target_secs: 1,
            low_latency: None,
        });
        assert!(text.contains("#EXT-X-TARGETDURATION:6\n") && text.ends_with("#EXT-X-ENDLIST\n"));
        let empty = SeekTable {
            fps: 25,
            map: SeekMap::Points(vec![(0, 5000)]),
        };
        let late = SeekTable {
            fps: 25,
            map: SeekMap::Points(vec![(0, 376), (25, 1376)]),
        };
        let (segs, _) = vod_segments(&late, 2376).expect("segments");
        assert_eq!(
            segs.iter()
                .map(|s| (s.offset, s.len, s.millis))
                .collect::<Vec<_>>(),
            vec![(0, 1376, 1000), (1376, 1000, 1000)]
        );
        assert!(vod_segments(&empty, 4000).is_none());
    }
}
