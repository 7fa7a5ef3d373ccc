//! The smallest end-to-end check: the daemon starts on a config, serves a file video whole and in a
//! range, and stops cleanly on SIGTERM.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn serves_a_file_video_and_stops_on_sigterm() {
    let dir = TestDir::new("smoke");
    let data = pseudo_random_bytes(100_000, 1);
    std::fs::write(dir.join("m.ts"), &data).unwrap();
    let mut d = Daemon::start(
        &dir.path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.ts\"\n",
    );
    let r = d.get("/videos/m", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    let r = d.get("/videos/m", &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(r.header("Content-Range"), Some("bytes 10-19/100000"));
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
}
