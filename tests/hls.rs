//! HLS over the ring and keyframe joins, with the real binary, real ffmpeg publishing (`-method PUT`)
//! and real ffmpeg reading `/videos/{id}/index.m3u8`: the playlist keeps Apple's rules that can be
//! checked offline (target duration, contiguous byte ranges, consecutive media sequence numbers,
//! discontinuities counted), decodes without errors across a ring wrap, and keeps its numbering across
//! a kill -9 restart and a new publish session. Followers that name no start (no Range, `bytes=0-`)
//! begin at a keyframe and decode from their first byte; an explicit start is honoured exactly.

mod common;
use common::*;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

const ID: &str = "cam.ts";

/// ffmpeg publishing `secs` seconds of a 640x360 25 fps test picture at a constant 2 Mbit/s (so a
/// 2 MiB ring wraps in about 8 s), one keyframe a second.
fn publish(ffmpeg: &Path, d: &Daemon, secs: u32) -> Child {
    let mut options = vec!["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p"];
    options.extend(CBR_2M);
    options.extend(["-f", "mpegts"]);
    publish_test_picture(ffmpeg, &d.url(&format!("/videos/{ID}")), secs, &options)
}

/// x264 at a constant 2 Mbit/s.
const CBR_2M: [&str; 10] = [
    "-b:v",
    "2M",
    "-minrate",
    "2M",
    "-maxrate",
    "2M",
    "-bufsize",
    "1M",
    "-x264-params",
    "nal-hrd=cbr",
];

#[derive(Debug, Clone, PartialEq)]
struct Seg {
    seq: u64,
    disc: u64,
    offset: u64,
    len: u64,
    extinf: String,
    pdt: String,
}

#[derive(Debug)]
struct Parsed {
    target: u64,
    segs: Vec<Seg>,
}

fn tag<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.strip_prefix(name)?.strip_prefix(':')
}

/// Parse a media playlist, checking the rules as it goes.
fn parse(text: &str) -> Parsed {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"#EXTM3U"), "{text}");
    let num = |name: &str| -> u64 {
        let v = lines.iter().find_map(|l| tag(l, name));
        v.unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .expect(name)
    };
    let target = num("#EXT-X-TARGETDURATION");
    let (mut seq, mut disc) = (
        num("#EXT-X-MEDIA-SEQUENCE"),
        num("#EXT-X-DISCONTINUITY-SEQUENCE"),
    );
    assert!(
        !text.contains("#EXT-X-ENDLIST"),
        "a live playlist has no end"
    );
    let (mut segs, mut extinf, mut pdt, mut range) = (Vec::new(), None, None, None);
    for l in &lines {
        if *l == "#EXT-X-DISCONTINUITY" {
            disc += 1;
        } else if let Some(v) = tag(l, "#EXTINF") {
            extinf = Some(v.trim_end_matches(',').to_string());
        } else if let Some(v) = tag(l, "#EXT-X-PROGRAM-DATE-TIME") {
            pdt = Some(v.to_string());
        } else if let Some(v) = tag(l, "#EXT-X-BYTERANGE") {
            let (n, at) = v.split_once('@').expect("len@offset");
            range = Some((at.parse::<u64>().unwrap(), n.parse::<u64>().unwrap()));
        } else if !l.starts_with('#') {
            assert!(
                *l == "stream.ts" || *l == "stream.mp4",
                "segment URI (/videos/{{id}}/stream.ts or stream.mp4): {l}"
            );
            let (offset, len) = range.take().expect("a BYTERANGE before each URI");
            let extinf = extinf.take().expect("an EXTINF before each URI");
            let secs: f64 = extinf.parse().expect("EXTINF seconds");
            assert!(
                secs.round() as u64 <= target,
                "EXTINF {secs} > target {target}\n{text}"
            );
            let pdt = pdt.take().expect("a PROGRAM-DATE-TIME for each segment");
            segs.push(Seg {
                seq,
                disc,
                offset,
                len,
                extinf,
                pdt,
            });
            seq += 1;
        }
    }
    for w in segs.windows(2) {
        if w[0].disc == w[1].disc {
            assert_eq!(
                w[0].offset + w[0].len,
                w[1].offset,
                "contiguous within a session\n{text}"
            );
        } else {
            assert!(
                w[0].offset + w[0].len <= w[1].offset,
                "sessions in order\n{text}"
            );
        }
    }
    Parsed { target, segs }
}

fn playlist(d: &Daemon) -> Parsed {
    parse(&playlist_text(d, ID))
}

fn playlist_text(d: &Daemon, id: &str) -> String {
    let r = d.get(&format!("/videos/{id}/index.m3u8"), &[]);
    assert_eq!(r.status, 200, "playlist: {}\nlog:\n{}", r.text(), d.log());
    assert_eq!(
        r.header("Content-Type"),
        Some("application/vnd.apple.mpegurl")
    );
    r.text()
}

fn window_start(d: &Daemon) -> u64 {
    let e = video_entry(d, ID);
    let k = "\"window_start\":";
    let at = e.find(k).expect("window_start") + k.len();
    let digits: String = e[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("window_start number")
}

/// ffmpeg reads `secs` seconds of the live playlist and decodes them; any error fails the test.
fn ffmpeg_reads_playlist(ffmpeg: &Path, d: &Daemon, secs: u32) {
    ffmpeg_reads_playlist_of(ffmpeg, d, ID, secs, false)
}

/// The same for channel `id`; `from_first`: from the window's first segment (a channel without a
/// publisher has no segments after the last, where ffmpeg would start by default).
fn ffmpeg_reads_playlist_of(ffmpeg: &Path, d: &Daemon, id: &str, secs: u32, from_first: bool) {
    let start = if from_first { "0" } else { "-3" };
    let out = Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-live_start_index", start])
        .args(["-i", &d.url(&format!("/videos/{id}/index.m3u8"))])
        .args(["-t", &secs.to_string(), "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "ffmpeg reading HLS: {err}\nlog:\n{}",
        d.log()
    );
}

#[test]
fn playlist_decodes_across_a_ring_wrap_and_keeps_numbering_across_a_restart() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let dir = TestDir::new("hls-wrap");
    let mut d = Daemon::start(&dir.path, &live_config(ID, 2 << 20, "", "", ""));
    let mut publisher = publish(&ffmpeg, &d, 16);
    wait_until("the ring to wrap", Duration::from_secs(30), || {
        window_start(&d) > 0
    });
    let before = playlist(&d);
    assert!(before.segs.len() >= 3, "{before:?}");
    assert!(
        before.segs[0].offset >= window_start(&d) - 1,
        "segments stay inside the window"
    );
    ffmpeg_reads_playlist(&ffmpeg, &d, 4);
    let after = playlist(&d);
    let first = after.segs[0].seq;
    assert!(
        first > before.segs[0].seq,
        "the window slid: {} → {first}",
        before.segs[0].seq
    );
    for s in after
        .segs
        .iter()
        .filter(|s| s.seq <= before.segs.last().unwrap().seq)
    {
        let old = before
            .segs
            .iter()
            .find(|o| o.seq == s.seq)
            .expect("same numbers");
        assert_eq!(
            old, s,
            "a segment keeps its number, bytes, duration and date"
        );
    }
    assert!(publisher.wait().expect("ffmpeg").success());
    let ended = playlist(&d);
    d.kill9();
    let mut d = Daemon::start_with_config(&dir.path, &d.config_path.clone(), d.port);
    let restarted = playlist(&d);
    assert!(
        !restarted.segs.is_empty(),
        "segments are rebuilt from the window"
    );
    assert_eq!(restarted.target, ended.target);
    assert_eq!(
        restarted.segs.last(),
        ended.segs.last(),
        "the newest segment survives kill -9"
    );
    for s in &restarted.segs {
        assert!(
            ended.segs.contains(s),
            "{s:?} was listed before the restart with that number"
        );
    }
    // A new session continues the numbering after a discontinuity.
    let last = ended.segs.last().unwrap().clone();
    let mut publisher = publish(&ffmpeg, &d, 8);
    wait_until(
        "the new session's segments",
        Duration::from_secs(30),
        || {
            playlist(&d)
                .segs
                .iter()
                .filter(|s| s.seq > last.seq)
                .count()
                >= 3
        },
    );
    let next = playlist(&d);
    let new = next
        .segs
        .iter()
        .find(|s| s.seq == last.seq + 1)
        .expect("numbering continues");
    assert_eq!(new.disc, last.disc + 1, "a new session is a discontinuity");
    assert!(new.offset >= last.offset + last.len);
    ffmpeg_reads_playlist(&ffmpeg, &d, 3);
    assert!(publisher.wait().expect("ffmpeg").success());
    d.stop(Duration::from_secs(10));
}

/// The first bytes a follower gets decode without an error (a stream cut mid-GOP does not).
fn decodes_from_first_byte(ffmpeg: &Path, dir: &TestDir, body: &[u8], name: &str) {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write");
    let out = Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "{name} from its first byte: {err}"
    );
}

/// Read `n` bytes of a follower (chunked) with `range`, returning (status, X-Live-Start, bytes).
fn follow(d: &Daemon, range: Option<&str>, n: usize) -> (u16, u64, Vec<u8>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(d.addr()).expect("connect");
    let range = range.map_or(String::new(), |r| format!("Range: {r}\r\n"));
    write!(s, "GET /videos/{ID} HTTP/1.1\r\nHost: x\r\n{range}\r\n").unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_response_head(&mut r).expect("head");
    let start = header_in(&headers, "X-Live-Start")
        .expect("X-Live-Start")
        .parse()
        .unwrap();
    let mut body = Vec::new();
    while body.len() < n {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
        assert!(size > 0, "the follower ended early");
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).unwrap();
        body.extend_from_slice(&chunk[..size]);
    }
    (status, start, body)
}

#[test]
fn followers_without_a_start_join_at_the_newest_keyframe() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let dir = TestDir::new("hls-join");
    let mut d = Daemon::start(&dir.path, &live_config(ID, 64 << 20, "", "", ""));
    let mut publisher = publish(&ffmpeg, &d, 8);
    wait_until("two segments", Duration::from_secs(30), || {
        d.get(&format!("/videos/{ID}/index.m3u8"), &[])
            .text()
            .matches("#EXTINF")
            .count()
            >= 2
    });
    for (range, name) in [(None, "plain.ts"), (Some("bytes=0-"), "zero.ts")] {
        let (status, start, body) = follow(&d, range, 600_000);
        assert_eq!(status, 200);
        assert!(start > 0, "{name}: not the oldest byte of the window");
        let segs = playlist(&d).segs;
        assert!(
            segs.iter().any(|s| s.offset + s.len == start),
            "{name} starts at a keyframe (a segment boundary), got {start}: {segs:?}"
        );
        decodes_from_first_byte(&ffmpeg, &dir, &body, name);
    }
    // An explicit start is honoured exactly, keyframe or not.
    let (status, start, _) = follow(&d, Some("bytes=1880-"), 188);
    assert_eq!((status, start), (206, 1880));
    assert!(publisher.wait().expect("ffmpeg").success());
    d.stop(Duration::from_secs(10));
}

#[test]
fn playlist_refusals_are_clear() {
    let dir = TestDir::new("hls-refuse");
    let cfg = format!(
        "{}\n[[video]]\nid = \"raw\"\nkind = \"live\"\ncapacity = 65536\n\n[[video]]\nid = \"up\"\nkind = \"upload\"\nsize = 1000\ncontent_type = \"video/mp2t\"\n",
        live_config(ID, 1 << 20, "", "", "")
    );
    let d = Daemon::start(&dir.path, &cfg);
    let r = d.get("/videos/raw/index.m3u8", &[]);
    assert_eq!(r.status, 409, "not video/mp2t: {}", r.text());
    let r = d.get("/videos/up/index.m3u8", &[]);
    assert_eq!(r.status, 409, "an upload slot: {}", r.text());
    // No publisher and nothing published: 503 at once, with Retry-After.
    let r = d.get(&format!("/videos/{ID}/index.m3u8"), &[]);
    assert_eq!(
        (r.status, r.header("Retry-After")),
        (503, Some("1")),
        "{}",
        r.text()
    );
    let r = request(
        d.addr(),
        "POST",
        &format!("/videos/{ID}/index.m3u8"),
        &[],
        b"",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn a_file_with_a_seek_table_gets_a_vod_playlist_that_ffmpeg_decodes_whole() {
    let (Some(ffmpeg), Some(ffprobe)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let dir = TestDir::new("hls-vod");
    let movie = dir.join("movie.ts");
    encode_test_clip(
        &ffmpeg,
        &movie,
        10,
        &[
            "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p", "-f", "mpegts",
        ],
    );
    let index = Command::new(vcache_bin())
        .arg("index")
        .arg(&movie)
        .output()
        .expect("vcache index");
    assert!(
        index.status.success(),
        "{}",
        String::from_utf8_lossy(&index.stderr)
    );
    let table = String::from_utf8_lossy(&index.stdout).to_string();
    let cfg = format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"tok\"\n\n[[video]]\nid = \"movie\"\nkind = \"file\"\npath = \"movie.ts\"\n[video.seek]\n{table}"
    );
    let d = Daemon::start(&dir.path, &cfg);
    let r = d.get("/videos/movie/index.m3u8", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.ends_with("#EXT-X-ENDLIST\n"),
        "{text}"
    );
    assert_eq!(
        text.matches("#EXTINF:2.000,").count(),
        4,
        "five 2 s GOPs, the last estimated:\n{text}"
    );
    let len = std::fs::metadata(&movie).unwrap().len();
    let mut next = 0;
    for l in text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-BYTERANGE:"))
    {
        let (n, at) = l.split_once('@').unwrap();
        assert_eq!(at.parse::<u64>().unwrap(), next, "contiguous from byte 0");
        next += n.parse::<u64>().unwrap();
    }
    assert_eq!(next, len, "the segments cover the file");
    let probe = Command::new(&ffprobe)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(d.url("/videos/movie/index.m3u8"))
        .output()
        .expect("run ffprobe");
    let frames = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success() && probe.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert_eq!(
        frames.lines().find(|l| !l.trim().is_empty()).map(str::trim),
        Some("250"),
        "{frames}"
    );
}

/// A chunked publisher on a raw socket, so a test decides when each byte lands.
struct RawPublisher(std::net::TcpStream);

impl RawPublisher {
    fn open(d: &Daemon) -> RawPublisher {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(d.addr()).expect("connect");
        write!(
            s,
            "PUT /videos/{ID} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        RawPublisher(s)
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        write!(self.0, "{:x}\r\n", bytes.len()).unwrap();
        self.0.write_all(bytes).unwrap();
        self.0.write_all(b"\r\n").unwrap();
    }
}

/// A GET sent now whose answer is read later.
fn send_get(d: &Daemon, path: &str) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(d.addr()).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    std::io::BufReader::new(s)
}

/// (EXT-X-PART DURATION seconds, offset, len, independent) of a playlist's part lines, grouped by the
/// segment they precede (the last group: the open segment's).
fn parts(text: &str) -> Vec<Vec<(f64, u64, u64, bool)>> {
    let mut groups = vec![Vec::new()];
    for l in text.lines() {
        if let Some(attrs) = tag(l, "#EXT-X-PART") {
            let attr = |k: &str| {
                let at = attrs
                    .find(&format!("{k}="))
                    .unwrap_or_else(|| panic!("{k} in {l}"))
                    + k.len()
                    + 1;
                attrs[at..]
                    .split(',')
                    .next()
                    .unwrap()
                    .trim_matches('"')
                    .to_string()
            };
            let range = attr("BYTERANGE");
            let (n, at) = range.split_once('@').unwrap();
            let uri = attr("URI");
            assert!(uri == "stream.ts" || uri == "stream.mp4", "{uri}");
            let d: f64 = attr("DURATION").parse().unwrap();
            groups.last_mut().unwrap().push((
                d,
                at.parse().unwrap(),
                n.parse().unwrap(),
                l.ends_with(",INDEPENDENT=YES"),
            ));
        } else if !l.starts_with('#') && !l.is_empty() {
            groups.push(Vec::new());
        }
    }
    groups
}

/// Where the raw publishers of the LL-HLS tests cut their clip: at `tenths` of it, 100 bytes into a
/// packet (so the publisher is inside a part).
fn cut(ts: &[u8], tenths: usize) -> usize {
    ts.len() * tenths / 10 / 188 * 188 + 100
}

/// A 10 s MPEG-TS clip (a keyframe a second, no B-frames) sent by a raw publisher up to `cut(4)`,
/// once the channel's playlist has two closed segments.
fn ll_channel(ffmpeg: &Path, name: &str, limits: &str) -> (TestDir, Vec<u8>, Daemon, RawPublisher) {
    let dir = TestDir::new(name);
    let src = dir.join("src.ts");
    encode_test_clip(
        ffmpeg,
        &src,
        10,
        &[
            "-c:v", "libx264", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "mpegts",
        ],
    );
    let ts = std::fs::read(&src).unwrap();
    let cfg = live_config(ID, 64 << 20, "", limits, "");
    let d = Daemon::start(&dir.path, &cfg);
    let mut p = RawPublisher::open(&d);
    p.send(&ts[..cut(&ts, 4)]);
    let url = format!("/videos/{ID}/index.m3u8");
    wait_until("two closed segments", Duration::from_secs(10), || {
        d.get(&url, &[]).text().matches("#EXTINF").count() >= 2
    });
    (dir, ts, d, p)
}

#[test]
fn ll_hls_parts_cover_segments_and_blocking_reloads_answer_when_the_part_lands() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let (_dir, ts, d, mut p) = ll_channel(&ffmpeg, "hls-ll", "read_wait_ms = 1500");
    let cut = |tenths| cut(&ts, tenths);
    let url = format!("/videos/{ID}/index.m3u8");
    let text = d.get(&url, &[]).text();
    let pl = parse(&text);
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200"), "{text}");
    let groups = parts(&text);
    assert_eq!(groups.len(), pl.segs.len() + 1);
    for (seg, group) in pl.segs.iter().zip(&groups) {
        if group.is_empty() {
            continue; // the first segment: no frame duration known while it was open
        }
        assert!(
            group[0].3 && group.iter().skip(1).all(|g| !g.3),
            "only the keyframe part is independent"
        );
        assert_eq!(group[0].1, seg.offset, "parts start at their segment");
        let mut at = seg.offset;
        for &(secs, offset, len, _) in group {
            assert!(
                secs <= 0.2 && secs > 0.0,
                "part duration {secs} within PART-TARGET"
            );
            assert_eq!(offset, at, "parts are contiguous");
            at += len;
        }
        assert_eq!(at, seg.offset + seg.len, "parts cover their segment");
    }
    let open = groups.last().unwrap();
    assert!(
        !open.is_empty(),
        "the open segment's complete parts are listed: {text}"
    );
    let open_msn = pl.segs.last().unwrap().seq + 1;
    // The next part is not there yet: the reload blocks until its bytes land.
    let next_part = open.len();
    let mut r = send_get(
        &d,
        &format!("{url}?_HLS_msn={open_msn}&_HLS_part={next_part}"),
    );
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut probe = [0u8; 1];
    let early = std::io::Read::read(&mut r, &mut probe);
    assert!(early.is_err(), "answered before the part landed");
    r.get_ref().set_read_timeout(None).unwrap();
    p.send(&ts[cut(4)..cut(6)]);
    let (status, _) = read_response_head(&mut r).expect("blocked answer");
    assert_eq!(status, 200);
    let mut body = String::new();
    std::io::Read::read_to_string(&mut r, &mut body).unwrap();
    let after = parts(&body);
    let listed = parse(&body);
    assert!(
        listed.segs.last().unwrap().seq >= open_msn || after.last().unwrap().len() > next_part,
        "the answer holds the part it waited for:\n{body}"
    );
    // Malformed or too far ahead: 400. A part that does not come in time: 503.
    let last = listed.segs.last().unwrap().seq;
    assert_eq!(
        d.get(&format!("{url}?_HLS_msn={}", last + 3), &[]).status,
        400
    );
    assert_eq!(d.get(&format!("{url}?_HLS_part=1"), &[]).status, 400);
    assert_eq!(d.get(&format!("{url}?_HLS_msn=x"), &[]).status, 400);
    let r = d.get(&format!("{url}?_HLS_msn={}", last + 2), &[]);
    assert_eq!(
        (r.status, r.header("Retry-After")),
        (503, Some("1")),
        "{}",
        r.text()
    );
    p.send(&ts[cut(6)..]);
    p.send(b"");
    wait_until("the publisher's answer", Duration::from_secs(10), || {
        video_entry(&d, ID).contains("\"publishing\":false")
    });
}

/// ffmpeg publishing fragmented MP4 (one fragment per keyframe, a keyframe a second) at 2 Mbit/s.
fn publish_fmp4(ffmpeg: &Path, d: &Daemon, id: &str, secs: u32) -> Child {
    publish_fmp4_with(ffmpeg, d, id, secs, &[])
}

/// The same with more muxer options (`extra`).
fn publish_fmp4_with(ffmpeg: &Path, d: &Daemon, id: &str, secs: u32, extra: &[&str]) -> Child {
    let mut options = vec!["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p"];
    options.extend(CBR_2M);
    options.extend(["-f", "mp4"]);
    options.extend(["-movflags", "frag_keyframe+empty_moov+default_base_moof"]);
    options.extend(extra);
    publish_test_picture(ffmpeg, &d.url(&format!("/videos/{id}")), secs, &options)
}

/// A follower's whole body (the channel has no publisher: it replays to the head and ends), or its
/// first `n` bytes.
fn follow_path(d: &Daemon, path: &str, n: usize) -> Vec<u8> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(d.addr()).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let (status, _) = read_response_head(&mut r).expect("head");
    assert_eq!(status, 200);
    let mut body = Vec::new();
    while body.len() < n {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).unwrap();
        body.extend_from_slice(&chunk[..size]);
    }
    body
}

/// `body` up to the end of its last complete fragment (`mdat`; a follower read is cut anywhere).
fn whole_boxes(body: &[u8]) -> &[u8] {
    let (mut at, mut end) = (0usize, 0usize);
    while let Some(size) = body.get(at..at + 4) {
        let size = u32::from_be_bytes(size.try_into().unwrap()) as usize;
        if size < 8 || at + size > body.len() {
            break;
        }
        if &body[at + 4..at + 8] == b"mdat" {
            end = at + size;
        }
        at += size;
    }
    &body[..end]
}

/// ffprobe decodes every video frame of `body` (its complete boxes) without an error; returns how
/// many.
fn fmp4_frames(ffprobe: &Path, dir: &TestDir, body: &[u8], name: &str) -> u64 {
    assert_eq!(
        body.get(4..8),
        Some(&b"ftyp"[..]),
        "{name} starts with the init segment"
    );
    let body = whole_boxes(body);
    let moof = body
        .windows(4)
        .position(|w| w == b"moof")
        .unwrap_or_else(|| panic!("{name}: no whole fragment in {} bytes", body.len()));
    assert!(
        body[moof + 4..].windows(4).any(|w| w == b"mdat"),
        "{name}: a whole fragment"
    );
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    let out = Command::new(ffprobe)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("run ffprobe");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "{name}: {err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}: frames {text:?}"))
}

#[test]
fn fmp4_joiners_get_the_init_segment_and_a_sync_fragment_after_a_wrap_and_a_restart() {
    let (Some(ffmpeg), Some(ffprobe)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let dir = TestDir::new("hls-fmp4");
    let id = "cam.mp4";
    let mut d = Daemon::start(&dir.path, &live_config(id, 1 << 20, "", "", ""));
    let mut publisher = publish_fmp4(&ffmpeg, &d, id, 8);
    let window = |d: &Daemon| {
        let e = video_entry(d, id);
        let at = e.find("\"window_start\":").unwrap() + 15;
        e[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u64>()
            .unwrap()
    };
    wait_until(
        "the ring to wrap past the init segment",
        Duration::from_secs(30),
        || window(&d) > 0,
    );
    // Up to 800 kB (three 1 s fragments at 2 Mbit/s), or what comes before the publisher ends.
    let live = follow_path(&d, &format!("/videos/{id}"), 800_000);
    assert!(fmp4_frames(&ffprobe, &dir, &live, "live.mp4") > 0);
    assert!(publisher.wait().expect("ffmpeg").success());
    // kill -9, restart: the init segment comes back from the ring's record, the sync fragment from a
    // scan of the window.
    d.kill9();
    let d = Daemon::start_with_config(&dir.path, &d.config_path.clone(), d.port);
    assert!(window(&d) > 0);
    let replay = follow_path(&d, &format!("/videos/{id}"), usize::MAX);
    let frames = fmp4_frames(&ffprobe, &dir, &replay, "replay.mp4");
    assert!(frames >= 1, "the last GOP replays: {frames} frames");
    // An explicit start is exactly that byte, no init in front.
    let start = window(&d) + 1000;
    let r = d.get(
        &format!("/videos/{id}"),
        &[("Range", &format!("bytes={start}-{}", start + 99))],
    );
    assert_eq!(r.status, 206);
    assert_ne!(r.body.get(4..8), Some(&b"ftyp"[..]));
}

fn head_of(entry: &str) -> u64 {
    let at = entry.find("\"head\":").expect("head") + 7;
    let digits: String = entry[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("head number")
}

/// The `#EXT-X-MAP` URI of an fMP4 playlist (`init.mp4?at=OFFSET`), checked against the version.
fn map_uri(text: &str) -> String {
    assert!(
        text.contains("#EXT-X-VERSION:6\n"),
        "MAP needs version 6\n{text}"
    );
    let line = text
        .lines()
        .find_map(|l| tag(l, "#EXT-X-MAP"))
        .unwrap_or_else(|| panic!("no EXT-X-MAP in\n{text}"));
    let (uri, range) = line.split_once(",BYTERANGE=").expect("MAP with BYTERANGE");
    let uri = uri.strip_prefix("URI=\"").and_then(|u| u.strip_suffix('"'));
    let uri = uri.unwrap_or_else(|| panic!("MAP {line}"));
    assert!(
        range.ends_with("@0\""),
        "MAP is the whole init resource: {range}"
    );
    assert!(uri.starts_with("init.mp4?at="), "{uri}");
    uri.to_string()
}

#[test]
fn fmp4_playlist_maps_the_init_segment_and_decodes_across_a_wrap_and_a_restart() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let dir = TestDir::new("hls-fmp4-playlist");
    let id = "cam.mp4";
    let mut d = Daemon::start(&dir.path, &live_config(id, 2 << 20, "", "", ""));
    let mut publisher = publish_fmp4(&ffmpeg, &d, id, 16);
    let window = |d: &Daemon| {
        let e = video_entry(d, id);
        let at = e.find("\"window_start\":").unwrap() + 15;
        let digits: String = e[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().unwrap()
    };
    wait_until(
        "the ring to wrap past the init segment",
        Duration::from_secs(30),
        || window(&d) > 0 && parse(&playlist_text(&d, id)).segs.len() >= 3,
    );
    let text = playlist_text(&d, id);
    let before = parse(&text);
    let map = map_uri(&text);
    assert!(
        before.segs[0].offset >= window(&d),
        "segments stay inside the window"
    );
    let init = d.get(&format!("/videos/{id}/{map}"), &[]);
    assert_eq!(init.status, 200, "{}", init.text());
    assert_eq!(init.header("Content-Type"), Some("video/mp4"));
    assert_eq!(init.body.get(4..8), Some(&b"ftyp"[..]), "the init segment");
    assert!(init.body.windows(4).any(|w| w == b"moov"));
    // Every segment is a whole fragment run starting at a moof, served by byte range.
    let s = &before.segs[0];
    let r = d.get(
        &format!("/videos/{id}/stream.mp4"),
        &[(
            "Range",
            &format!("bytes={}-{}", s.offset, s.offset + s.len - 1),
        )],
    );
    assert_eq!((r.status, r.body.len() as u64), (206, s.len));
    assert_eq!(
        r.body.get(4..8),
        Some(&b"moof"[..]),
        "a segment starts at a moof"
    );
    ffmpeg_reads_playlist_of(&ffmpeg, &d, id, 4, false);
    assert!(publisher.wait().expect("ffmpeg").success());
    let ended_text = playlist_text(&d, id);
    let ended = parse(&ended_text);
    let head_before = head_of(&video_entry(&d, id));
    d.kill9();
    let mut d = Daemon::start_with_config(&dir.path, &d.config_path.clone(), d.port);
    assert_eq!(
        head_of(&video_entry(&d, id)),
        head_before,
        "kill -9 keeps the head"
    );
    let text = playlist_text(&d, id);
    eprintln!("before:\n{ended_text}\nafter:\n{text}");
    let restarted = parse(&text);
    assert_eq!(
        map_uri(&text),
        map,
        "the init segment is kept in the ring's record"
    );
    assert_eq!(
        restarted.segs.last(),
        ended.segs.last(),
        "the newest segment survives kill -9 with its number"
    );
    for s in &restarted.segs {
        assert!(
            ended.segs.contains(s),
            "{s:?} was listed before the restart"
        );
    }
    ffmpeg_reads_playlist_of(&ffmpeg, &d, id, 3, true);
    // A new session: numbering continues after a discontinuity, under the new init segment.
    let last = ended.segs.last().unwrap().clone();
    let mut publisher = publish_fmp4(&ffmpeg, &d, id, 8);
    wait_until(
        "the new session's segments",
        Duration::from_secs(30),
        || {
            let p = parse(&playlist_text(&d, id));
            p.segs.iter().filter(|s| s.seq > last.seq).count() >= 3
        },
    );
    let text = playlist_text(&d, id);
    let next = parse(&text);
    assert_ne!(map_uri(&text), map, "a new session's init gets a new URI");
    let old = d.get(&format!("/videos/{id}/{map}"), &[]);
    assert_eq!(old.status, 410, "the replaced init segment is gone");
    let new = next
        .segs
        .iter()
        .find(|s| s.seq == last.seq + 1)
        .expect("numbering continues");
    assert_eq!(new.disc, last.disc + 1, "a new session is a discontinuity");
    assert!(
        next.segs.iter().all(|s| s.seq > last.seq),
        "only the session of the kept init"
    );
    ffmpeg_reads_playlist_of(&ffmpeg, &d, id, 3, false);
    assert!(publisher.wait().expect("ffmpeg").success());
    d.stop(Duration::from_secs(10));
}

#[test]
fn fmp4_fragments_within_the_part_target_are_ll_hls_parts_and_blocking_reloads_wait_for_them() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let dir = TestDir::new("hls-fmp4-ll");
    let id = "cam.mp4";
    let mut d = Daemon::start(&dir.path, &live_config(id, 8 << 20, "", "", ""));
    let frag = ["-frag_duration", "200000"];
    let mut publisher = publish_fmp4_with(&ffmpeg, &d, id, 8, &frag);
    wait_until("two closed segments", Duration::from_secs(30), || {
        let r = d.get(&format!("/videos/{id}/index.m3u8"), &[]);
        r.status == 200 && parse(&r.text()).segs.len() >= 2
    });
    let text = playlist_text(&d, id);
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n"),
        "{text}"
    );
    let listed = parse(&text);
    let groups = parts(&text);
    for (seg, group) in listed.segs.iter().zip(&groups) {
        assert!(
            group.len() >= 2,
            "a 1 s segment of 0.2 s fragments has parts\n{text}"
        );
        assert_eq!(group[0].1, seg.offset, "the first part starts the segment");
        assert!(group[0].3, "the segment's first part is independent");
        for w in group.windows(2) {
            assert_eq!(w[0].1 + w[0].2, w[1].1, "parts tile their segment");
        }
        let last = group.last().unwrap();
        assert_eq!(
            last.1 + last.2,
            seg.offset + seg.len,
            "the last part ends it"
        );
        for p in group {
            assert!(p.0 <= 0.2, "a part's duration fits the target");
            let r = d.get(
                &format!("/videos/{id}/stream.mp4"),
                &[("Range", &format!("bytes={}-{}", p.1, p.1 + 3 + 4))],
            );
            assert_eq!(
                r.body.get(4..8),
                Some(&b"moof"[..]),
                "a part is whole fragments"
            );
        }
    }
    // A blocking reload for the next segment's first part is answered once it is listed.
    let next = listed.segs.last().unwrap().seq + 2;
    let r = d.get(
        &format!("/videos/{id}/index.m3u8?_HLS_msn={next}&_HLS_part=0"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let later = r.text();
    let open = parts(&later).pop().unwrap_or_default();
    let closed = parse(&later).segs.last().unwrap().seq;
    assert!(
        closed + 1 > next || (closed + 1 == next && !open.is_empty()),
        "segment {next} part 0 is in the answer\n{later}"
    );
    assert!(publisher.wait().expect("ffmpeg").success());
    ffmpeg_reads_playlist_of(&ffmpeg, &d, id, 3, true);
    d.stop(Duration::from_secs(10));
}

/// The `BYTERANGE-START` of a playlist's `#EXT-X-PRELOAD-HINT`.
fn preload_hint(text: &str) -> Option<u64> {
    let attrs = tag(
        text.lines()
            .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))?,
        "#EXT-X-PRELOAD-HINT",
    )?;
    assert!(
        attrs.starts_with("TYPE=PART,URI=\"stream.ts\",BYTERANGE-START="),
        "{attrs}"
    );
    attrs.rsplit('=').next()?.parse().ok()
}

/// Reads one chunk of a chunked body: Some(bytes), Some(empty) at the last chunk, None on a timeout.
fn read_chunk<R: std::io::BufRead>(r: &mut R) -> Option<Vec<u8>> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => return Some(Vec::new()),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            assert!(line.is_empty(), "timed out inside a chunk-size line");
            return None;
        }
        Err(e) => panic!("reading a chunk: {e}"),
    }
    let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
    let mut bytes = vec![0; size + 2];
    r.read_exact(&mut bytes).expect("a whole chunk");
    assert_eq!(&bytes[size..], b"\r\n");
    bytes.truncate(size);
    Some(bytes)
}

/// The end of the segment of `text` that holds byte `at`, once it is closed.
fn segment_end_holding(text: &str, at: u64) -> Option<u64> {
    parse(text)
        .segs
        .iter()
        .find(|s| s.offset <= at && at < s.offset + s.len)
        .map(|s| s.offset + s.len)
}

/// Reads chunks until the last one; the bytes before it.
fn read_to_last_chunk<R: std::io::BufRead>(r: &mut R) -> Vec<u8> {
    let mut got = Vec::new();
    loop {
        let chunk = read_chunk(r).expect("the rest of the answer");
        if chunk.is_empty() {
            return got;
        }
        got.extend(chunk);
    }
}

#[test]
fn a_preload_hint_range_gets_each_part_whole_once_it_is_complete() {
    use std::io::Write;
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let (_dir, ts, d, mut p) = ll_channel(&ffmpeg, "hls-hint", "");
    let url = format!("/videos/{ID}/index.m3u8");
    // Publish in small steps until a segment has just closed: the hint is then the first part of
    // the open segment, whose completion is inside that segment.
    let step = 10 * 188;
    let mut at = cut(&ts, 4);
    let hint = loop {
        let text = d.get(&url, &[]).text();
        let hint = preload_hint(&text).expect("a preload hint while publishing");
        let last_end = parse(&text).segs.last().map(|s| s.offset + s.len);
        if Some(hint) == last_end && parts(&text).last().is_some_and(Vec::is_empty) {
            break hint;
        }
        assert!(at + step < ts.len(), "no segment closed");
        p.send(&ts[at..at + step]);
        at += step;
        wait_until("the step landed", Duration::from_secs(10), || {
            head_of(&video_entry(&d, ID)) >= at as u64
        });
    };

    // The hinted open range: its head at once, no byte of the part in progress.
    let mut s = std::net::TcpStream::connect(d.addr()).expect("connect");
    write!(
        s,
        "GET /videos/{ID}/stream.ts HTTP/1.1\r\nHost: x\r\nRange: bytes={hint}-\r\n\r\n"
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let (status, headers) = read_response_head(&mut r).expect("the head");
    assert_eq!(status, 206);
    assert_eq!(
        header_in(&headers, "Content-Range"),
        Some(format!("bytes {hint}-9007199254740991/*").as_str())
    );
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    assert_eq!(
        read_chunk(&mut r),
        None,
        "a byte of an incomplete part was sent"
    );

    // Bytes land until the first part is complete: exactly that part comes, and nothing of the next.
    let mut edge = hint;
    while edge == hint {
        assert!(at + step < ts.len(), "the part never completed");
        p.send(&ts[at..at + step]);
        at += step;
        wait_until("the step landed", Duration::from_secs(10), || {
            head_of(&video_entry(&d, ID)) >= at as u64
        });
        edge = preload_hint(&d.get(&url, &[]).text()).unwrap_or(hint);
    }
    assert!(
        segment_end_holding(&d.get(&url, &[]).text(), hint).is_none(),
        "the hinted part's segment is still open"
    );
    let mut got = Vec::new();
    while (got.len() as u64) < edge - hint {
        got.extend(read_chunk(&mut r).expect("the complete part"));
    }
    assert!(
        got == ts[hint as usize..edge as usize],
        "exactly the part's bytes"
    );
    assert!(at as u64 > edge, "bytes of the next part are in the ring");
    assert_eq!(
        read_chunk(&mut r),
        None,
        "the part in progress is held back"
    );

    // The segment closes and the next one's parts complete: the answer goes on with them, byte-exact.
    p.send(&ts[at..cut(&ts, 6)]);
    let mut next = hint;
    wait_until(
        "the hinted segment to close",
        Duration::from_secs(10),
        || {
            let text = d.get(&url, &[]).text();
            next = preload_hint(&text).unwrap_or(hint);
            segment_end_holding(&text, hint).is_some_and(|end| next > end)
        },
    );
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while (got.len() as u64) < next - hint {
        got.extend(read_chunk(&mut r).expect("the parts that completed"));
    }
    assert!(
        got == ts[hint as usize..next as usize],
        "across the segment's end, once"
    );

    // The publisher ends: every byte is final; the answer runs to the end, then ends.
    p.send(&ts[cut(&ts, 6)..]);
    p.send(b"");
    got.extend(read_to_last_chunk(&mut r));
    assert!(
        got == ts[hint as usize..],
        "the whole rest of the stream, once"
    );

    // On the HLS resource `bytes=0-` is byte 0 (on /videos/{id} it would join at a keyframe).
    let r = d.get(&format!("/videos/{ID}/stream.ts"), &[("Range", "bytes=0-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("X-Live-Start"), Some("0"));
    assert!(r.body == ts, "the whole channel from byte 0");
}
