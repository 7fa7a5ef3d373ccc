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

#[test]
fn the_index_page_lists_every_video_with_a_player_and_a_cached_bar() {
    let dir = TestDir::new("index-page");
    std::fs::write(dir.join("clip.mp4"), pseudo_random_bytes(1000, 2)).unwrap();
    let d = Daemon::start(
        &dir.path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n[[video]]\nid = \"clip\"\nkind = \"file\"\npath = \"clip.mp4\"\n\n[[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = 1000\n\n[[video]]\nid = \"ch\"\nkind = \"live\"\ncapacity = 4096\ncontent_type = \"video/mp2t\"\n",
    );
    let r = request(
        d.addr(),
        "PUT",
        "/videos/slot",
        &[
            ("Authorization", "Bearer t"),
            ("Content-Range", "bytes 0-249/1000"),
        ],
        &[7u8; 250],
    );
    assert_eq!(r.status, 200);
    let page = d.get("/", &[]);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    // The console page is self-contained: it renders /videos itself (tests/browser.rs drives it in
    // chromium) and loads nothing from elsewhere.
    assert!(
        html.contains("<script>") && html.contains("fetch(\"/videos\""),
        "{html}"
    );
    for external in [
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
        "<script src",
        "stylesheet",
    ] {
        assert!(!html.contains(external), "the page loads {external}");
    }
    let list = d.get("/videos", &[]).text();
    for id in ["clip", "slot", "ch"] {
        assert!(list.contains(&format!("\"id\":\"{id}\"")), "{id} listed");
    }
    assert_eq!(d.get("/", &[("Range", "bytes=0-1")]).status, 200);
}
