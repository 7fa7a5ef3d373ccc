//! Seeking by timecode over HTTP: `GET /videos/{id}/offset?t=HH:MM:SS:FF` answers the byte offset
//! as JSON, and `GET /videos/{id}?t=…` serves the video from that offset (a Range then counts from
//! it), for both kinds of seek table (`points` and `byte_rate`), with the 400 and 416 refusals for
//! a malformed timecode, a video without a seek table and a timecode past the end.

mod common;
use common::*;

/// Length of the two file videos.
const LEN: usize = 100_000;

/// The `points` table of video `pts` (25 fps): timecode → offset.
const POINTS: [(&str, u64); 4] = [
    ("00:00:01:00", 1000),
    ("00:00:10:00", 24_000),
    ("00:01:00:00", 60_000),
    ("01:00:00:24", 99_999),
];

/// `byte_rate` table of video `rate`: 30 fps, 1000 bytes per second of video.
const RATE_FPS: u64 = 30;
const BYTE_RATE: u64 = 1000;

struct Fixture {
    _dir: TestDir,
    daemon: Daemon,
    pts_data: Vec<u8>,
    rate_data: Vec<u8>,
}

fn start() -> Fixture {
    let dir = TestDir::new("seek");
    let pts_data = pseudo_random_bytes(LEN, 11);
    let rate_data = pseudo_random_bytes(LEN, 12);
    std::fs::write(dir.join("pts.ts"), &pts_data).unwrap();
    std::fs::write(dir.join("rate.ts"), &rate_data).unwrap();
    std::fs::write(dir.join("plain.ts"), &pts_data).unwrap();
    let points: Vec<String> = POINTS
        .iter()
        .map(|(tc, off)| format!("[\"{tc}\", {off}]"))
        .collect();
    let config = format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n\
         [[video]]\nid = \"pts\"\nkind = \"file\"\npath = \"pts.ts\"\n\
         [video.seek]\nfps = 25\npoints = [{}]\n\n\
         [[video]]\nid = \"rate\"\nkind = \"file\"\npath = \"rate.ts\"\n\
         [video.seek]\nfps = {RATE_FPS}\nbyte_rate = {BYTE_RATE}\n\n\
         [[video]]\nid = \"plain\"\nkind = \"file\"\npath = \"plain.ts\"\n\n\
         [[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = {LEN}\n\
         [video.seek]\nfps = {RATE_FPS}\nbyte_rate = {BYTE_RATE}\n",
        points.join(", ")
    );
    let daemon = Daemon::start(&dir.path, &config);
    Fixture {
        _dir: dir,
        daemon,
        pts_data,
        rate_data,
    }
}

/// The exact JSON body of a successful offset query.
fn offset_json(id: &str, tc: &str, offset: u64) -> String {
    format!("{{\"id\":\"{id}\",\"timecode\":\"{tc}\",\"offset\":{offset}}}\n")
}

fn assert_offset(d: &Daemon, id: &str, tc: &str, offset: u64) {
    let r = d.get(&format!("/videos/{id}/offset?t={tc}"), &[]);
    assert_eq!(r.status, 200, "{id} {tc}: {}", r.text());
    assert_eq!(r.text(), offset_json(id, tc, offset), "{id} {tc}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
}

/// Asserts a status and that the text body mentions `needle` (case-insensitive).
fn assert_refused(r: &Response, status: u16, needle: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert!(
        r.text().to_lowercase().contains(needle),
        "{what}: message {:?} should say {needle:?}",
        r.text()
    );
}

fn byte_rate_offset(frames: u64) -> u64 {
    frames * BYTE_RATE / RATE_FPS
}

#[test]
fn offset_of_a_points_table_at_its_boundaries() {
    let f = start();
    let d = &f.daemon;
    // First point exactly, one frame after it, the last frame (fps - 1) before the next point.
    assert_offset(d, "pts", "00:00:01:00", 1000);
    assert_offset(d, "pts", "00:00:01:01", 1000);
    assert_offset(d, "pts", "00:00:05:12", 1000);
    assert_offset(d, "pts", "00:00:09:24", 1000);
    // Exactly on the next points.
    assert_offset(d, "pts", "00:00:10:00", 24_000);
    assert_offset(d, "pts", "00:00:59:24", 24_000);
    assert_offset(d, "pts", "00:01:00:00", 60_000);
    assert_offset(d, "pts", "00:59:59:24", 60_000);
    // The last point is the last byte of the video; everything after it maps to it.
    assert_offset(d, "pts", "01:00:00:24", 99_999);
    assert_offset(d, "pts", "02:00:00:00", 99_999);
    assert_offset(d, "pts", "999:59:59:24", 99_999);
    // Before the first point there is no offset.
    let r = d.get("/videos/pts/offset?t=00:00:00:24", &[]);
    assert_refused(&r, 400, "before the first point", "before the first point");
    let r = d.get("/videos/pts/offset?t=00:00:00:00", &[]);
    assert_refused(&r, 400, "before the first point", "00:00:00:00");
}

#[test]
fn offset_of_a_byte_rate_table_is_exact_arithmetic() {
    let f = start();
    let d = &f.daemon;
    assert_offset(d, "rate", "00:00:00:00", 0);
    // One frame is 1000/30 = 33.3 bytes: rounded down.
    assert_offset(d, "rate", "00:00:00:01", byte_rate_offset(1));
    assert_eq!(byte_rate_offset(1), 33);
    assert_offset(d, "rate", "00:00:00:02", 66);
    assert_offset(d, "rate", "00:00:00:29", byte_rate_offset(29));
    assert_eq!(byte_rate_offset(29), 966);
    assert_offset(d, "rate", "00:00:01:00", 1000);
    assert_offset(d, "rate", "00:00:01:29", byte_rate_offset(59));
    assert_offset(d, "rate", "00:01:00:00", 60_000);
    // The last frame inside the 100 000 bytes: 99 s + 29 frames = 2999 frames → 99 966.
    assert_offset(d, "rate", "00:01:39:29", 99_966);
    assert_offset(d, "rate", "0:01:39:29", 99_966);
}

#[test]
fn get_with_t_serves_the_bytes_from_the_offset() {
    let f = start();
    let d = &f.daemon;
    let whole = d.get("/videos/pts", &[]);
    assert_eq!(whole.status, 200);
    let whole_etag = whole.header("ETag").expect("ETag").to_string();
    let mut etags = vec![whole_etag];
    for (tc, off) in [
        ("00:00:01:00", 1000usize),
        ("00:00:09:24", 1000),
        ("00:00:10:00", 24_000),
        ("00:01:00:00", 60_000),
        ("01:00:00:24", 99_999),
    ] {
        let r = d.get(&format!("/videos/pts?t={tc}"), &[]);
        assert_eq!(r.status, 200, "{tc}: {}", r.text());
        assert_eq!(r.body.len(), LEN - off, "{tc}");
        assert!(
            r.body == f.pts_data[off..],
            "{tc}: body differs from the file"
        );
        assert_eq!(
            r.header("Content-Length"),
            Some((LEN - off).to_string().as_str())
        );
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        let etag = r.header("ETag").expect("ETag").to_string();
        if !etags.contains(&etag) {
            etags.push(etag);
        }
    }
    // Each distinct offset is its own representation with its own validator.
    assert_eq!(etags.len(), 5, "{etags:?}");

    for (tc, frames) in [
        ("00:00:00:00", 0u64),
        ("00:00:00:01", 1),
        ("00:00:07:17", 7 * 30 + 17),
        ("00:01:39:29", 2999),
    ] {
        let off = byte_rate_offset(frames) as usize;
        let r = d.get(&format!("/videos/rate?t={tc}"), &[]);
        assert_eq!(r.status, 200, "{tc}: {}", r.text());
        assert!(
            r.body == f.rate_data[off..],
            "{tc}: body differs from the file"
        );
    }
    // t=00:00:00:00 on a byte_rate table is the whole video.
    let r = d.get("/videos/rate?t=00:00:00:00", &[]);
    assert_eq!(
        r.header("ETag"),
        d.get("/videos/rate", &[]).header("ETag"),
        "offset 0 is the whole representation"
    );
}

#[test]
fn a_range_with_t_counts_from_the_offset() {
    let f = start();
    let d = &f.daemon;
    let off = 24_000usize;
    let sub = LEN - off;
    let get = |range: &str| d.get("/videos/pts?t=00:00:10:00", &[("Range", range)]);

    let r = get("bytes=0-99");
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body, &f.pts_data[off..off + 100]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 0-99/{sub}").as_str())
    );

    let r = get("bytes=500-");
    assert_eq!(r.status, 206);
    assert!(r.body == f.pts_data[off + 500..]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 500-{}/{sub}", sub - 1).as_str())
    );

    let r = get("bytes=-10");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &f.pts_data[LEN - 10..]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes {}-{}/{sub}", sub - 10, sub - 1).as_str())
    );

    // The end of the range is clamped to the sub-representation, not the file.
    let r = get(&format!("bytes={}-{}", sub - 5, LEN + 1000));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &f.pts_data[LEN - 5..]);

    // A range beyond the sub-representation (though inside the file) is unsatisfiable.
    let r = get(&format!("bytes={sub}-{}", LEN - 1));
    assert_eq!(r.status, 416, "{}", r.text());
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes */{sub}").as_str())
    );

    // Two ranges: multipart/byteranges whose parts carry the relative Content-Range.
    let r = get("bytes=0-9,100-109");
    assert_eq!(r.status, 206);
    let ct = r.header("Content-Type").unwrap_or_default().to_string();
    assert!(ct.starts_with("multipart/byteranges"), "{ct}");
    let body = r.body.clone();
    for (first, last) in [(0usize, 9usize), (100, 109)] {
        let header = format!("Content-Range: bytes {first}-{last}/{sub}\r\n\r\n");
        let at = find(&body, header.as_bytes(), 0)
            .unwrap_or_else(|| panic!("part {first}-{last} in {}", String::from_utf8_lossy(&body)))
            + header.len();
        assert_eq!(
            &body[at..at + (last - first + 1)],
            &f.pts_data[off + first..=off + last]
        );
    }

    // byte_rate: t=00:00:02:15 is 75 frames → 2500 bytes.
    let off = 2500usize;
    let r = d.get("/videos/rate?t=00:00:02:15", &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &f.rate_data[off + 10..off + 20]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 10-19/{}", LEN - off).as_str())
    );
}

#[test]
fn validators_of_a_t_representation_work_for_if_none_match_and_if_range() {
    let f = start();
    let d = &f.daemon;
    let path = "/videos/pts?t=00:00:10:00";
    let r = d.get(path, &[]);
    let etag = r.header("ETag").expect("ETag").to_string();
    let r = d.get(path, &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    // The whole video's ETag is another representation's: If-Range with it gets the full sub-body.
    let whole_etag = d
        .get("/videos/pts", &[])
        .header("ETag")
        .unwrap()
        .to_string();
    assert_ne!(whole_etag, etag);
    let r = d.get(path, &[("Range", "bytes=0-9"), ("If-Range", &whole_etag)]);
    assert_eq!(r.status, 200);
    assert!(r.body == f.pts_data[24_000..]);
    let r = d.get(path, &[("Range", "bytes=0-9"), ("If-Range", &etag)]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &f.pts_data[24_000..24_010]);
}

#[test]
fn head_with_t_sends_the_head_of_the_sub_representation() {
    let f = start();
    let d = &f.daemon;
    let r = request(d.addr(), "HEAD", "/videos/pts?t=00:01:00:00", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("40000"));
    assert!(r.body.is_empty());
    let get_etag = d.get("/videos/pts?t=00:01:00:00", &[]);
    assert_eq!(r.header("ETag"), get_etag.header("ETag"));

    let r = request(
        d.addr(),
        "HEAD",
        "/videos/pts?t=00:01:00:00",
        &[("Range", "bytes=10-")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 10-39999/40000"));
    assert_eq!(r.header("Content-Length"), Some("39990"));

    // HEAD refusals carry the status without a body.
    let r = request(d.addr(), "HEAD", "/videos/rate?t=00:01:40:00", &[], b"");
    assert_eq!(r.status, 416);
    let r = request(d.addr(), "HEAD", "/videos/pts?t=00:00:00:25", &[], b"");
    assert_eq!(r.status, 400);

    // HEAD on the offset query answers like GET without the body.
    let r = request(
        d.addr(),
        "HEAD",
        "/videos/pts/offset?t=00:01:00:00",
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    let expected = offset_json("pts", "00:01:00:00", 60_000);
    assert_eq!(
        r.header("Content-Length"),
        Some(expected.len().to_string().as_str())
    );
}

#[test]
fn malformed_timecodes_get_400_saying_malformed() {
    let f = start();
    let d = &f.daemon;
    for t in [
        "00:00:10",
        "00:00:10:00:00",
        "00:60:00:00",
        "00:00:60:00",
        "1000:00:00:00",
        "aa:00:00:00",
        "00:00:10:0",
        "00:0:10:00",
        "-1:00:00:00",
        "00.00.10.00",
        "",
        "99999999999999999999999:00:00:00",
    ] {
        for id in ["pts", "rate"] {
            let what = format!("{id} t={t:?}");
            let r = d.get(&format!("/videos/{id}/offset?t={t}"), &[]);
            assert_refused(&r, 400, "malformed", &what);
            let r = d.get(&format!("/videos/{id}?t={t}"), &[]);
            assert_refused(&r, 400, "malformed", &what);
        }
    }
    // 25 fps: frame 24 is the last; 30 fps: frame 29 is fine, 30 is not.
    assert_offset(d, "pts", "00:00:59:24", 24_000);
    let r = d.get("/videos/pts/offset?t=00:00:10:25", &[]);
    assert_refused(&r, 400, "malformed", "frame 25 at 25 fps");
    assert_offset(d, "rate", "00:00:00:25", byte_rate_offset(25));
    assert_offset(d, "rate", "00:00:00:29", 966);
    let r = d.get("/videos/rate?t=00:00:00:30", &[]);
    assert_refused(&r, 400, "malformed", "frame 30 at 30 fps");
    // A space (encoded) inside the timecode is malformed, not ignored.
    let r = d.get("/videos/pts/offset?t=00:00:10:00%20", &[]);
    assert_refused(&r, 400, "malformed", "trailing space");
}

#[test]
fn a_video_without_a_seek_table_gets_400_saying_so() {
    let f = start();
    let d = &f.daemon;
    for path in [
        "/videos/plain/offset?t=00:00:01:00",
        "/videos/plain?t=00:00:01:00",
        "/videos/plain?t=garbage",
    ] {
        let r = d.get(path, &[]);
        assert_refused(&r, 400, "no seek table", path);
        assert!(r.text().contains("plain"), "{path}: names the video");
    }
    // Without t the video is served whole as usual.
    let r = d.get("/videos/plain", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == f.pts_data);
}

#[test]
fn a_timecode_past_the_end_gets_416_saying_so() {
    let f = start();
    let d = &f.daemon;
    // 100 s at 1000 B/s is offset 100 000 = the length: the first offset past the end.
    for t in ["00:01:40:00", "00:01:40:01", "01:00:00:00", "999:59:59:29"] {
        for path in [
            format!("/videos/rate/offset?t={t}"),
            format!("/videos/rate?t={t}"),
        ] {
            let r = d.get(&path, &[]);
            assert_refused(&r, 416, "past the end", &path);
            assert_eq!(
                r.header("Content-Range"),
                Some(format!("bytes */{LEN}").as_str()),
                "{path}"
            );
        }
    }
    // With a Range too: the timecode is refused before the range is looked at.
    let r = d.get("/videos/rate?t=00:01:40:00", &[("Range", "bytes=0-0")]);
    assert_refused(&r, 416, "past the end", "t past the end with a Range");
}

#[test]
fn the_offset_query_needs_t() {
    let f = start();
    let d = &f.daemon;
    for path in [
        "/videos/pts/offset",
        "/videos/pts/offset?",
        "/videos/pts/offset?x=00:00:10:00",
        "/videos/pts/offset?time=00:00:10:00",
    ] {
        let r = d.get(path, &[]);
        assert_refused(&r, 400, "missing", path);
    }
    let r = d.get("/videos/nope/offset?t=00:00:10:00", &[]);
    assert_eq!(r.status, 404);
    // t among other parameters is found.
    let r = d.get("/videos/pts/offset?x=1&t=00:00:10:00&y=2", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), offset_json("pts", "00:00:10:00", 24_000));
    // The offset query is read-only.
    let r = request(
        d.addr(),
        "POST",
        "/videos/pts/offset?t=00:00:10:00",
        &[("Authorization", "Bearer t")],
        b"",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn url_encoded_colons_work() {
    let f = start();
    let d = &f.daemon;
    let r = d.get("/videos/pts/offset?t=00%3A00%3A10%3A00", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), offset_json("pts", "00:00:10:00", 24_000));
    let r = d.get("/videos/rate/offset?t=00%3a00%3A02%3a15", &[]);
    assert_eq!(r.text(), offset_json("rate", "00:00:02:15", 2500));
    let r = d.get(
        "/videos/pts?t=00%3A01%3A00%3A00",
        &[("Range", "bytes=0-99")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &f.pts_data[60_000..60_100]);
    assert_eq!(r.header("Content-Range"), Some("bytes 0-99/40000"));
}

#[test]
fn t_on_an_upload_slot_serves_only_written_bytes() {
    let f = start();
    let d = &f.daemon;
    // Write bytes [2000, 6000) of the slot; 00:00:03:00 is 3000 at 1000 B/s.
    let data = pseudo_random_bytes(4000, 13);
    let r = request(
        d.addr(),
        "PUT",
        "/videos/slot",
        &[
            ("Authorization", "Bearer t"),
            ("Content-Range", &format!("bytes 2000-5999/{LEN}")),
        ],
        &data,
    );
    assert!(
        r.status == 200 || r.status == 201 || r.status == 204,
        "{r:?}"
    );
    assert_offset(d, "slot", "00:00:03:00", 3000);
    let sub = LEN - 3000;
    let r = d.get("/videos/slot?t=00:00:03:00", &[("Range", "bytes=0-999")]);
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body, &data[1000..2000]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 0-999/{sub}").as_str())
    );
    // A range that runs past the written bytes is cut at the first missing byte.
    let r = d.get(
        "/videos/slot?t=00:00:03:00",
        &[("Range", "bytes=2500-3999")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[3500..4000]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 2500-2999/{sub}").as_str())
    );
    // A range that starts in a hole is unsatisfiable; the whole sub-representation is incomplete.
    let r = d.get(
        "/videos/slot?t=00:00:03:00",
        &[("Range", "bytes=3000-3099")],
    );
    assert_eq!(r.status, 416, "{}", r.text());
    let r = d.get("/videos/slot?t=00:00:03:00", &[]);
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn pipelined_t_requests_on_one_connection() {
    let f = start();
    let d = &f.daemon;
    let mut c = Client::connect(d.addr());
    let mut wire = Vec::new();
    for t in ["00:00:10:00", "00:00:01:00", "00:01:00:00"] {
        wire.extend_from_slice(
            format!(
                "GET /videos/pts?t={t} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-63\r\n\r\n\
                 GET /videos/pts/offset?t={t} HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    c.send(&wire);
    for (t, off) in [
        ("00:00:10:00", 24_000usize),
        ("00:00:01:00", 1000),
        ("00:01:00:00", 60_000),
    ] {
        let r = c.read(false);
        assert_eq!(r.status, 206, "{t}");
        assert_eq!(r.body, &f.pts_data[off..off + 64], "{t}");
        let r = c.read(false);
        assert_eq!(r.text(), offset_json("pts", t, off as u64));
    }
}
