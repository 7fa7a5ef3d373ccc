//! The send path for operator-owned `file` videos: payload leaves by write(2) from a slice of the
//! mapping. An operator who truncates the file in place under a reader must not crash the daemon (a
//! kernel copy from a page past EOF fails with EFAULT; only a user-space touch would raise SIGBUS): the
//! response in flight is cut, every byte it carried is the original, and the daemon goes on serving.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const LEN: usize = 64 << 20;

fn file_daemon(dir: &TestDir, data: &[u8]) -> Daemon {
    std::fs::write(dir.join("big.ts"), data).unwrap();
    Daemon::start(
        &dir.path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n[[video]]\nid = \"big\"\nkind = \"file\"\npath = \"big.ts\"\n",
    )
}

/// Send a GET for the whole video and read its head and the first `first` body bytes.
fn start_get(d: &Daemon, first: usize) -> (BufReader<TcpStream>, Vec<u8>) {
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /videos/big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("HTTP/1.1 200"),
        "status line {line:?}; log: {}",
        d.log()
    );
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; first];
    r.read_exact(&mut body).unwrap();
    (r, body)
}

#[test]
fn truncating_a_file_video_under_a_reader_cuts_that_response_and_the_daemon_survives() {
    let dir = TestDir::new("truncate");
    let data = pseudo_random_bytes(LEN, 42);
    let mut d = file_daemon(&dir, &data);
    let (mut reader, mut body) = start_get(&d, 1 << 20);
    // The operator truncates the file in place while the response is in flight.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("big.ts"))
        .unwrap()
        .set_len(4096)
        .unwrap();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest); // EOF or a reset: the response is cut.
    body.extend_from_slice(&rest);
    assert!(
        body.len() < LEN,
        "the response was cut ({} bytes)",
        body.len()
    );
    assert_eq!(
        body[..],
        data[..body.len()],
        "every byte sent is the original"
    );
    // The daemon is alive and serves: its health, and a new request (cut at once, never a crash).
    assert_eq!(d.get("/healthz", &[]).status, 200);
    let mut again = TcpStream::connect(d.addr()).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    again
        .write_all(b"GET /videos/big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = again.read_to_end(&mut got); // closed: nothing, or a head and what was still mapped
    assert!(got.len() < LEN, "a later response is cut too");
    assert_eq!(d.get("/healthz", &[]).status, 200);
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_file_video_is_served_byte_exact_by_the_default_path() {
    let dir = TestDir::new("file-ranges");
    let data = pseudo_random_bytes(LEN, 7);
    let d = file_daemon(&dir, &data);
    let (_, body) = start_get(&d, LEN);
    assert!(body == data, "whole body byte-exact");
    for (a, b) in [
        (0usize, 0usize),
        (4095, 4096),
        (LEN - 10, LEN - 1),
        (123_457, 5_000_000),
    ] {
        let r = d.get("/videos/big", &[("Range", &format!("bytes={a}-{b}"))]);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &data[a..=b], "range {a}-{b}");
    }
}
