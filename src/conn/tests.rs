//! A connection driven by hand against a real loopback socket pair, as the event loop would drive it:
//! the test is the loop (readiness, fast records) and the client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::Token;

use super::{Conn, Ctx, Next, SendPath};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// A store with one upload slot of 1000 bytes (data directory removed at the end), and one
/// connection to it with the client's end.
struct Fixture {
    dir: PathBuf,
    cfg: Config,
    store: Store,
    metrics: Metrics,
    conn: Conn,
    client: StdStream,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(name: &str, limits: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("vcache-conn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let text = format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"tok\"\n\n[limits]\n{limits}\n\n\
         [[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = 1000\n"
    );
    let cfg = crate::config::parse(&text, "test.toml", &dir).expect("config");
    let (store, problems) = Store::open(&cfg, [7; 16]).expect("store");
    assert!(problems.is_empty(), "{problems:?}");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = StdStream::connect(listener.local_addr().expect("addr")).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let (server, peer) = listener.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    let stream = mio::net::TcpStream::from_std(server);
    let conn = Conn::new(stream, Token(16), peer, Instant::now(), &cfg.server.limits);
    Fixture {
        dir,
        cfg,
        store,
        metrics: Metrics::default(),
        conn,
        client,
    }
}

impl Fixture {
    /// One turn of the loop for this connection: it is readable and writable, then driven; claims
    /// waiting for an acknowledgement get their fast record, as the loop writes them.
    fn turn(&mut self) -> Next {
        let mut wake = Vec::new();
        let mut access_log = super::access_log::AccessLog::off();
        let mut ctx = Ctx {
            store: &mut self.store,
            cfg: &self.cfg,
            problems: &[],
            now: Instant::now(),
            boundary: "b0undary",
            send_path: SendPath::Auto,
            shutting_down: false,
            draining: false,
            metrics: &mut self.metrics,
            wake: &mut wake,
            open_connections: 1,
            access_log: &mut access_log,
        };
        self.conn.set_readable();
        self.conn.set_writable();
        let next = self.conn.drive(&mut ctx);
        for (_, v) in self.store.all_mut() {
            if !v.commit_waiters.is_empty() && v.commit().is_some_and(|c| c.fast_record_due()) {
                v.write_fast_record().expect("fast record");
                v.commit_waiters.clear();
            }
        }
        next
    }

    /// Drive the connection and read what the client gets until `done` says the bytes are complete
    /// (at most 5 s).
    fn exchange(&mut self, done: impl Fn(&str) -> bool) -> String {
        self.exchange_for(Duration::from_secs(5), done)
    }

    fn exchange_for(&mut self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let mut got = Vec::new();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.turn();
            let mut buf = [0u8; 4096];
            match self.client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {} // the read timeout: drive again
            }
            if done(&String::from_utf8_lossy(&got)) {
                break;
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// The status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

#[test]
fn a_chunked_put_lands_in_the_slot_then_pipelined_gets_are_answered_in_order() {
    let mut f = fixture("chunked", "");
    let put = "PUT /videos/slot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\
               Content-Range: bytes 0-9/1000\r\nTransfer-Encoding: chunked\r\n\r\n\
               4\r\n0123\r\n6\r\n456789\r\n0\r\n\r\n";
    f.client.write_all(put.as_bytes()).expect("send");
    let text = f.exchange(|t| t.contains("\"complete\""));
    assert_eq!(statuses(&text), [200], "{text}");
    assert!(
        text.contains("\"written\":{\"start\":0,\"end\":10}"),
        "{text}"
    );
    assert_eq!(
        f.store.get("slot").expect("slot").cached_ranges(),
        [(0, 10)]
    );

    let gets = "GET /videos/slot HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n\r\n\
                GET /videos/slot HTTP/1.1\r\nHost: x\r\nRange: bytes=6-9\r\n\r\n";
    f.client.write_all(gets.as_bytes()).expect("send");
    let text = f.exchange(|t| t.ends_with("6789"));
    assert_eq!(statuses(&text), [206, 206], "{text}");
    let first = text.find("\r\n\r\n0123").expect("first body");
    let second = text.find("\r\n\r\n6789").expect("second body");
    assert!(first < second, "{text}");
    assert!(text.contains("Content-Range: bytes 0-3/1000"), "{text}");
    assert!(text.contains("Content-Range: bytes 6-9/1000"), "{text}");
}

#[test]
fn a_request_head_over_the_limit_gets_431_and_the_connection_closes() {
    let mut f = fixture("431", "max_request_line = 512\nmax_header_bytes = 1024");
    let head = format!(
        "GET /videos/slot HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(2000)
    );
    f.client.write_all(head.as_bytes()).expect("send");
    let text = f.exchange(|t| t.contains("\r\n\r\n"));
    assert_eq!(statuses(&text), [431], "{text}");
    assert!(text.contains("Connection: close"), "{text}");
}

#[test]
fn a_get_with_a_body_is_answered_and_closed_so_the_body_is_never_a_request() {
    let mut f = fixture("smuggle", "");
    let req = "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /";
    f.client.write_all(req.as_bytes()).expect("send");
    let text = f.exchange(|t| t.ends_with("ok\n"));
    assert_eq!(statuses(&text), [200], "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(!text.contains("keep-alive"), "{text}");
}

#[test]
fn a_read_of_bytes_being_written_waits_and_resumes_when_they_arrive() {
    let mut f = fixture("wait", "read_wait_ms = 5000");
    // A write of bytes 0-9 whose body has not arrived yet holds them.
    let put = "PUT /videos/slot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n\
               Content-Range: bytes 0-9/1000\r\nContent-Length: 10\r\n\r\n";
    let mut writer = fixture_second_client(&mut f);
    writer.0.write_all(put.as_bytes()).expect("send");
    drive_other(&mut f, &mut writer.1);
    f.client
        .write_all(b"GET /videos/slot HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n")
        .expect("send");
    let early = f.exchange_for(Duration::from_millis(300), |t| !t.is_empty());
    assert_eq!(early, "", "the reader waits for the write");
    assert!(f.conn.uses_video("slot"));
    writer.0.write_all(b"0123456789").expect("body");
    drive_other(&mut f, &mut writer.1);
    let text = f.exchange(|t| t.ends_with("0123456789"));
    assert_eq!(statuses(&text), [206], "{text}");
}

/// A second connection to the fixture's store (the writer of the wait test).
fn fixture_second_client(f: &mut Fixture) -> (StdStream, Conn) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = StdStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, peer) = listener.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    let stream = mio::net::TcpStream::from_std(server);
    let conn = Conn::new(
        stream,
        Token(17),
        peer,
        Instant::now(),
        &f.cfg.server.limits,
    );
    (client, conn)
}

/// Drive another connection of the fixture's store a few turns.
fn drive_other(f: &mut Fixture, other: &mut Conn) {
    for _ in 0..20 {
        let mut wake = Vec::new();
        let mut access_log = super::access_log::AccessLog::off();
        let mut ctx = Ctx {
            store: &mut f.store,
            cfg: &f.cfg,
            problems: &[],
            now: Instant::now(),
            boundary: "b0undary",
            send_path: SendPath::Auto,
            shutting_down: false,
            draining: false,
            metrics: &mut f.metrics,
            wake: &mut wake,
            open_connections: 2,
            access_log: &mut access_log,
        };
        other.set_readable();
        other.set_writable();
        other.drive(&mut ctx);
        std::thread::sleep(Duration::from_millis(2));
    }
}
