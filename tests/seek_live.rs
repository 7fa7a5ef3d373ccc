//! Seeking inside a live MPEG-TS channel's DVR window: the daemon indexes keyframes as the publisher's
//! bytes arrive, so `?t=-Ns` (N seconds behind the newest keyframe) and `?t=HH:MM:SS:00` (time since the
//! session's first keyframe) land on keyframes that `vcache index` finds in the same stream.

mod common;
use common::*;
use std::process::Command;

fn index_points(file: &std::path::Path) -> Vec<(String, u64)> {
    let out = Command::new(vcache_bin())
        .arg("index")
        .arg(file)
        .output()
        .expect("run vcache index");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            let inner = l.strip_prefix("[\"")?.strip_suffix(']')?;
            let (tc, off) = inner.split_once("\", ")?;
            Some((tc.to_string(), off.trim().parse().ok()?))
        })
        .collect()
}

fn offset_of(d: &Daemon, t: &str) -> Response {
    d.get(&format!("/videos/ch/offset?t={t}"), &[])
}

fn json_offset(r: &Response) -> u64 {
    let text = r.text();
    let at = text.find("\"offset\":").expect("offset field") + 9;
    text[at..]
        .trim_end_matches(['}', '\n'])
        .parse()
        .expect("offset number")
}

#[test]
fn timecodes_seek_to_indexed_keyframes_inside_the_live_window() {
    let (Some(ffmpeg), Some(ffprobe)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let dir = TestDir::new("seek-live");
    let src = dir.join("src.ts");
    let status = Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=25")
        .args([
            "-t", "8", "-c:v", "libx264", "-g", "25", "-bf", "0", "-f", "mpegts",
        ])
        .arg(&src)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
    let bytes = std::fs::read(&src).unwrap();
    let points = index_points(&src);
    assert!(points.len() >= 8, "one keyframe a second: {points:?}");

    let d = Daemon::start(
        &dir.path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"tok\"\n\n[[video]]\nid = \"ch\"\nkind = \"live\"\ncapacity = \"8MiB\"\ncontent_type = \"video/mp2t\"\n",
    );
    // Before any publish session there is nothing to seek to.
    let r = offset_of(&d, "-1s");
    assert_eq!(r.status, 416, "{}", r.text());

    let r = request(
        d.addr(),
        "PUT",
        "/videos/ch",
        &[
            ("Authorization", "Bearer tok"),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked(&bytes, 7777),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // HH:MM:SS:00 from the session's first keyframe: exactly the points vcache index prints.
    for (tc, off) in &points {
        let r = offset_of(&d, tc);
        assert_eq!(r.status, 200, "{tc}: {}", r.text());
        assert_eq!(json_offset(&r), *off, "timecode {tc}");
    }
    // -Ns: the last keyframe at least N s before the newest one.
    let newest = points.last().unwrap().1;
    assert_eq!(json_offset(&offset_of(&d, "-0s")), newest);
    let three_back = points[points.len() - 4].1;
    assert_eq!(json_offset(&offset_of(&d, "-3s")), three_back);
    assert_eq!(json_offset(&offset_of(&d, "-3")), three_back);
    // Too far back, malformed, or frames without a configured fps: clear statuses.
    assert_eq!(offset_of(&d, "-100s").status, 416);
    for bad in ["-", "-x", "-3m", "--3s", "00:00:01:05"] {
        let r = offset_of(&d, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }

    // A GET with ?t= is a follower from that keyframe: its bytes are the stream's from there, and
    // ffprobe decodes them starting on a keyframe.
    let r = d.get("/videos/ch?t=-3s", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, &bytes[three_back as usize..]);
    let tail = dir.join("tail.ts");
    std::fs::write(&tail, &r.body).unwrap();
    let probe = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=key_frame",
            "-of",
            "csv=p=0",
        ])
        .arg(&tail)
        .output()
        .expect("run ffprobe");
    let frames: Vec<String> = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(frames.len() >= 75, "decoded {} frames", frames.len());
    assert_eq!(frames[0], "1", "the first decoded frame is a keyframe");
}

/// Encode `body` with the chunked transfer coding in chunks of `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
