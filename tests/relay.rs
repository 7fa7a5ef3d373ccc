//! Live relays and one publisher per channel, with real binaries on real sockets: a channel relayed
//! from node A to node B is byte-identical at identical offsets on both (followers on A and B read the
//! same bytes from the same offset, a relay that joins late jumps to the upstream's edge), a relay
//! reconnects from its head after the upstream restarts, a relayed channel refuses local publishers
//! naming its upstream; in a tier, a publisher on a node that is not the channel's owner is redirected
//! there (307, which `curl --location-trusted` follows with its body), a second publisher is refused
//! while the first is on, and the owner's window and offsets continue after its restart.

mod common;
use common::*;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AUTH: (&str, &str) = ("Authorization", "Bearer tok");
/// The RFC 8673 "live" last-byte-pos: 2^53 − 1.
const OPEN_END: u64 = 9_007_199_254_740_991;

fn curl() -> Option<PathBuf> {
    require_tool("curl")
}

/// `live_config` for a relay of `upstream`'s channel `ch`.
fn relay_config(capacity: u64, upstream: &Daemon) -> String {
    let up = format!("upstream = \"{}\"", upstream.url("/videos/ch"));
    live_config("ch", capacity, "", "", &up)
}

/// Publish `bytes` as one session with curl (chunked from stdin, like a live encoder); the answer.
fn publish(curl: &Path, url: &str, bytes: &[u8], extra: &[&str]) -> (u16, String) {
    let mut c = Command::new(curl)
        .args(["-sS", "-T", "-", "-H", "Authorization: Bearer tok"])
        .args(["-w", "\n%{http_code}", url])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("feed curl");
    let out = c.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}

/// A follower: curl with an RFC 8673 open range from `from`, writing the body and the head to files.
fn follow(curl: &Path, d: &Daemon, from: u64, out: &Path) -> Child {
    Command::new(curl)
        .args(["-sS", "-r", &format!("{from}-{OPEN_END}"), "-D"])
        .arg(out.with_extension("head"))
        .arg("-o")
        .arg(out)
        .arg(d.url("/videos/ch"))
        .spawn()
        .expect("spawn curl follower")
}

fn wait_exit(c: &mut Child, what: &str) {
    wait_until(what, Duration::from_secs(30), || {
        c.try_wait().expect("try_wait").is_some()
    });
}

fn live_header(d: &Daemon, name: &str) -> String {
    let r = request(d.addr(), "HEAD", "/videos/ch", &[], b"");
    assert_eq!(r.status, 200, "HEAD /videos/ch");
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers))
        .to_string()
}

fn wait_head(d: &Daemon, head: u64, what: &str) {
    wait_until(what, Duration::from_secs(20), || {
        live_header(d, "X-Live-Head") == head.to_string()
    });
}

/// The channel's whole window on `d`: (start, bytes).
fn window(d: &Daemon) -> (u64, Vec<u8>) {
    let w = live_header(d, "X-Live-Window");
    let (a, b) = w.split_once('-').expect("window");
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    let r = get_range(d, "ch", a, b - 1);
    assert_eq!(r.status, 206, "window {w}: {}", r.text());
    (a, r.body)
}

#[test]
fn a_relayed_channel_is_byte_identical_at_identical_offsets_on_two_nodes() {
    let Some(curl) = curl() else { return };
    let dir_a = TestDir::new("relay-a");
    let dir_b = TestDir::new("relay-b");
    let cap = 256 * 1024;
    let a = Daemon::start(&dir_a.path, &live_config("ch", cap, "", "", ""));
    let (src1, src2) = (source(600_000, 1), source(500_000, 2));
    // A's ring wraps before B exists: B's head (0) has left A's window, so B follows A's edge and its
    // head jumps to A's offset there.
    assert_eq!(publish(&curl, &a.url("/videos/ch"), &src1, &[]).0, 200);
    let b = Daemon::start(&dir_b.path, &relay_config(cap, &a));
    wait_until("B to follow A's edge", Duration::from_secs(20), || {
        b.log().contains("follows http://127.0.0.1:") && b.log().contains("from byte 600000")
    });
    let (fa, fb) = (dir_a.join("follow-a"), dir_b.join("follow-b"));
    let mut followers = [
        follow(&curl, &a, 600_000, &fa),
        follow(&curl, &b, 600_000, &fb),
    ];
    wait_until("both followers to join", Duration::from_secs(20), || {
        a.log().contains("follower of ch joined at byte 600000")
            && b.log().contains("follower of ch joined at byte 600000")
    });
    assert_eq!(publish(&curl, &a.url("/videos/ch"), &src2, &[]).0, 200);
    for (f, what) in followers.iter_mut().zip(["A's follower", "B's follower"]) {
        wait_exit(f, &format!("{what} to end with the session"));
    }
    for (out, node) in [(&fa, "A"), (&fb, "B")] {
        let head = std::fs::read_to_string(out.with_extension("head")).unwrap();
        assert!(head.starts_with("HTTP/1.1 206"), "{node}: {head}");
        assert!(
            head.contains(&format!("bytes 600000-{OPEN_END}/*")),
            "{node}: {head}"
        );
        assert_bytes(
            &std::fs::read(out).unwrap(),
            &src2,
            &format!("follower on {node}"),
        );
    }
    wait_head(&b, 1_100_000, "B's head at A's");
    for h in ["X-Live-Head", "X-Live-Window"] {
        assert_eq!(live_header(&a, h), live_header(&b, h), "{h}");
    }
    let ((wa, bytes_a), (wb, bytes_b)) = (window(&a), window(&b));
    assert_eq!(wa, 1_100_000 - cap);
    assert_eq!(wa, wb);
    assert_bytes(&bytes_b, &bytes_a, "B's window against A's");
    assert_bytes(&bytes_a, &src2[src2.len() - cap as usize..], "A's window");
    // B takes no publisher of its own: the channel is A's.
    let r = request(b.addr(), "PUT", "/videos/ch", &[AUTH], b"local bytes");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&a.url("/videos/ch")), "{}", r.text());
    assert_eq!(live_header(&b, "X-Vcache-Owner"), a.url(""));
    assert_eq!(live_header(&b, "X-Live-Head"), "1100000");
}

#[test]
fn the_relay_reconnects_from_its_head_after_the_upstream_restarts() {
    let Some(curl) = curl() else { return };
    let dir_a = TestDir::new("relay-up");
    let dir_b = TestDir::new("relay-down");
    let cap = 1 << 20;
    let mut a = Daemon::start(&dir_a.path, &live_config("ch", cap, "", "", ""));
    let b = Daemon::start(&dir_b.path, &relay_config(cap, &a));
    let src = source(250_000, 3);
    assert_eq!(
        publish(&curl, &a.url("/videos/ch"), &src[..100_000], &[]).0,
        200
    );
    wait_head(&b, 100_000, "B to relay the first session");
    // A restarts (its window persists); B loses the link, retries with a back-off, and follows again
    // from its own head.
    let (config, port) = (a.config_path.clone(), a.port);
    assert!(a.stop(Duration::from_secs(20)).success());
    wait_until("B to find A gone", Duration::from_secs(20), || {
        b.log().contains("cannot connect")
    });
    let a = Daemon::start_with_config(&dir_a.path, &config, port);
    assert_eq!(live_header(&a, "X-Live-Head"), "100000");
    wait_until("B to follow A again", Duration::from_secs(20), || {
        let log = b.log();
        let cut = log.find("cannot connect").expect("found above");
        log[cut..].contains("follows") && log[cut..].contains("from byte 100000")
    });
    let (code, body) = publish(&curl, &a.url("/videos/ch"), &src[100_000..], &[]);
    assert_eq!(code, 200, "{body}");
    wait_head(&b, 250_000, "B to relay the session after the restart");
    let ((wa, bytes_a), (wb, bytes_b)) = (window(&a), window(&b));
    assert_eq!((wa, wb), (0, 0));
    assert_bytes(&bytes_a, &src, "A after its restart");
    assert_bytes(&bytes_b, &src, "B across A's restart");
}

/// Two nodes of a tier on this machine, each with the live channel `ch`.
fn tier_of_two(name: &str) -> Vec<(TestDir, Daemon)> {
    let ports = [free_port(), free_port()];
    let peers = format!(
        "[\"http://127.0.0.1:{}\", \"http://127.0.0.1:{}\"]",
        ports[0], ports[1]
    );
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let dir = TestDir::new(&format!("{name}-{i}"));
            let text =
                live_config("ch", 1 << 20, "", "", "").replacen(
                    "[server]",
                    &format!("[server]\nlisten = \"127.0.0.1:{port}\""),
                    1,
                ) + &format!("\n[cluster]\nself = \"http://127.0.0.1:{port}\"\npeers = {peers}\n");
            let path = dir.join("vcache.toml");
            std::fs::write(&path, text).unwrap();
            let d = Daemon::start_with_config(&dir.path, &path, *port);
            (dir, d)
        })
        .collect()
}

/// A publisher that stays on: a chunked PUT with one chunk sent.
fn open_publisher(d: &Daemon, first: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(d.addr()).unwrap();
    let head = "PUT /videos/ch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(format!("{:x}\r\n", first.len()).as_bytes())
        .unwrap();
    s.write_all(first).unwrap();
    s.write_all(b"\r\n").unwrap();
    s
}

#[test]
fn a_publisher_on_another_node_than_the_owner_is_sent_there_and_never_splits_the_channel() {
    let Some(curl) = curl() else { return };
    let mut tier = tier_of_two("owner");
    let owners: Vec<String> = tier
        .iter()
        .map(|(_, d)| live_header(d, "X-Vcache-Owner"))
        .collect();
    assert_eq!(owners[0], owners[1], "every node names the same owner");
    let o = tier
        .iter()
        .position(|(_, d)| d.url("") == owners[0])
        .unwrap();
    let (owner, other) = (&tier[o].1, &tier[1 - o].1);
    let src = source(101_000, 4);
    // A plain PUT on the other node: 307 to the same path on the owner, named in the answer.
    let r = request(other.addr(), "PUT", "/videos/ch", &[AUTH], b"x");
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.header("Location"), Some(owner.url("/videos/ch").as_str()));
    assert_eq!(r.header("X-Vcache-Owner"), Some(owners[0].as_str()));
    assert!(r.text().contains(&owners[0]), "{}", r.text());
    // The first publisher is on at the owner; a second one, sent to the other node, follows the
    // redirect and is refused there: the channel has one publisher.
    let mut first = open_publisher(owner, &src[..1000]);
    wait_until("the first publisher", Duration::from_secs(20), || {
        live_header(owner, "X-Live-Publishing") == "true"
    });
    let (code, body) = publish(
        &curl,
        &other.url("/videos/ch"),
        b"second",
        &["--location-trusted"],
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("publisher"), "{body}");
    first.write_all(b"0\r\n\r\n").unwrap();
    let answer = read_response(&mut BufReader::new(first), false).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    // With the channel free, a publisher sent to the other node lands on the owner, after its bytes.
    let (code, body) = publish(
        &curl,
        &other.url("/videos/ch"),
        &src[1000..51_000],
        &["--location-trusted"],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"start\":1000,\"end\":51000"), "{body}");
    assert_eq!(live_header(other, "X-Live-Head"), "0", "nothing split off");
    // The owner restarts: its window and offsets continue where they were.
    let (config, port) = (owner.config_path.clone(), owner.port);
    let restarted = {
        let d = &mut tier[o].1;
        assert!(d.stop(Duration::from_secs(20)).success());
        Daemon::start_with_config(&tier[o].0.path, &config, port)
    };
    let other = &tier[1 - o].1;
    assert_eq!(live_header(&restarted, "X-Live-Window"), "0-51000");
    let (code, body) = publish(
        &curl,
        &other.url("/videos/ch"),
        &src[51_000..],
        &["--location-trusted"],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"start\":51000,\"end\":101000"), "{body}");
    let (start, bytes) = window(&restarted);
    assert_eq!(start, 0);
    assert_bytes(&bytes, &src, "the owner's window across its restart");
}

#[test]
fn a_relay_killed_mid_stream_recovers_and_fetches_again_what_its_checkpoint_lacked() {
    let Some(curl) = curl() else { return };
    let dir_a = TestDir::new("relay-src");
    let dir_b = TestDir::new("relay-kill9");
    let cap = 1 << 20;
    let a = Daemon::start(&dir_a.path, &live_config("ch", cap, "", "", ""));
    let mut b = Daemon::start(&dir_b.path, &relay_config(cap, &a));
    let src = source(500_000, 5);
    assert_eq!(
        publish(&curl, &a.url("/videos/ch"), &src[..300_000], &[]).0,
        200
    );
    wait_head(&b, 300_000, "B to relay the first session");
    // kill -9: B recovers its last record's window (honest, perhaps short of A's head), follows A
    // again from there and fetches what it lacked; its ring waits for a durable intent first.
    let (config, port) = (b.config_path.clone(), b.port);
    b.kill9();
    let b = Daemon::start_with_config(&dir_b.path, &config, port);
    wait_head(&b, 300_000, "B to catch up after its restart");
    for line in b.log().lines().filter(|l| l.contains("follows")) {
        eprintln!("after kill -9: {line}");
    }
    assert_eq!(
        publish(&curl, &a.url("/videos/ch"), &src[300_000..], &[]).0,
        200
    );
    wait_head(&b, 500_000, "B to relay the next session");
    let ((wa, bytes_a), (wb, bytes_b)) = (window(&a), window(&b));
    assert_eq!(wa, 0);
    assert_bytes(&bytes_a, &src, "A");
    // B's window may start later (recovery gives up at most an eighth of the ring), never with a
    // wrong byte.
    assert!(wb <= cap / 8, "B's window starts at {wb}");
    assert_bytes(&bytes_b, &src[wb as usize..], "B after kill -9");
}
