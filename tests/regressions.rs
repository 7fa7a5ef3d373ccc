//! Regression tests for defects found in review: each names the defect it guards against and fails if
//! it comes back.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const AUTH: (&str, &str) = ("Authorization", "Bearer tok");

/// A live TS channel `ch` of 64 KiB and an upload slot `slot` of 100000 bytes.
fn channel_and_slot(extra_limits: &str) -> String {
    live_config(
        "ch",
        65536,
        "",
        extra_limits,
        "content_type = \"video/mp2t\"\n\n[[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = 100000",
    )
}

fn followers(d: &Daemon) -> u64 {
    let text = d.get("/videos", &[]).text();
    let at = text.find("\"followers\":").expect("followers field") + 12;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("followers number")
}

#[test]
fn a_head_405_has_no_body_on_a_kept_connection() {
    let dir = TestDir::new("reg-head405");
    let d = Daemon::start(&dir.path, &channel_and_slot(""));
    let out = raw_exchange(
        d.addr(),
        b"HEAD /videos/ch/fill HTTP/1.1\r\nHost: h\r\n\r\nGET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&out);
    let second = text.find("HTTP/1.1 200").expect("second response");
    let first_head_end = text.find("\r\n\r\n").expect("first head") + 4;
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert_eq!(
        first_head_end, second,
        "nothing between the HEAD's head and the next response: {text}"
    );
}

#[test]
fn a_follower_request_with_a_body_does_not_leak_its_place() {
    let dir = TestDir::new("reg-follow-body");
    let d = Daemon::start(&dir.path, &channel_and_slot("max_followers = 3"));
    for _ in 0..5 {
        let mut s = TcpStream::connect(d.addr()).unwrap();
        s.write_all(b"GET /videos/ch HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 512];
        let _ = s.read(&mut b);
        drop(s);
    }
    // Every place comes back once the connections are gone (a hang-up is noticed while waiting).
    wait_until(
        "every follower place to come back",
        Duration::from_secs(5),
        || followers(&d) == 0,
    );
    assert_eq!(followers(&d), 0);
    // All three places are free again: three followers are accepted.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(d.addr()).unwrap();
        s.write_all(b"GET /videos/ch HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 512];
        let n = s.read(&mut b).unwrap();
        assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
}

#[test]
fn ffmpeg_style_open_range_from_zero_follows_a_wrapped_channel() {
    let dir = TestDir::new("reg-live-zero");
    let d = Daemon::start(&dir.path, &channel_and_slot(""));
    let data = pseudo_random_bytes(200_000, 5);
    let r = request(d.addr(), "PUT", "/videos/ch", &[AUTH], &data);
    assert_eq!(r.status, 200, "{}", r.text());
    // Offset 0 left the 64 KiB window long ago; ffmpeg asks `bytes=0-` anyway.
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.write_all(b"GET /videos/ch HTTP/1.1\r\nHost: h\r\nRange: bytes=0-\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 1024];
    let n = s.read(&mut b).unwrap();
    let head = String::from_utf8_lossy(&b[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // An explicit offset below the window is still refused.
    let r = d.get("/videos/ch", &[("Range", "bytes=100-")]);
    assert_eq!(r.status, 416);
}

#[test]
fn metrics_need_the_read_token_and_a_read_method() {
    let dir = TestDir::new("reg-metrics");
    let d = Daemon::start(
        &dir.path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"w\"\nread_token = \"r\"\n",
    );
    assert_eq!(d.get("/metrics", &[]).status, 401);
    assert_eq!(
        d.get("/metrics", &[("Authorization", "Bearer r")]).status,
        200
    );
    let r = request(
        d.addr(),
        "POST",
        "/metrics",
        &[("Authorization", "Bearer r")],
        b"",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn concurrent_writes_never_get_200_without_being_recorded() {
    let dir = TestDir::new("reg-fragment");
    let d = Daemon::start(&dir.path, &channel_and_slot("max_presence_ranges = 2"));
    let put = |range: &str, body: &[u8]| {
        request(
            d.addr(),
            "PUT",
            "/videos/slot",
            &[AUTH, ("Content-Range", range)],
            body,
        )
    };
    assert_eq!(put("bytes 0-9/100000", &[1; 10]).status, 200);
    // Two writes in flight at once that would each add a range: the second must be refused up front.
    let mut a = TcpStream::connect(d.addr()).unwrap();
    a.write_all(b"PUT /videos/slot HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer tok\r\nContent-Range: bytes 100-109/100000\r\nContent-Length: 10\r\n\r\n12345").unwrap();
    // In flight: its first five bytes are received (and claimed).
    wait_until(
        "the first write's first bytes",
        Duration::from_secs(10),
        || cached(&d, "slot").contains(&(100, 105)),
    );
    let second = put("bytes 200-209/100000", &[2; 10]);
    a.write_all(b"67890").unwrap();
    let mut out = Vec::new();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 4096];
    let n = a.read(&mut b).unwrap();
    out.extend_from_slice(&b[..n]);
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert_eq!(second.status, 507, "{}", second.text());
    // Whatever was acknowledged reads back.
    let r = d.get("/videos/slot", &[("Range", "bytes=100-109")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"1234567890");
}
