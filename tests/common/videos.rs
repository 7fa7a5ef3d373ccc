//! What the tests write and read back: source bytes, ranged reads, byte comparisons, live-channel
//! configs, and the `GET /videos` entry of a video.

use super::{Daemon, Response, pseudo_random_bytes};

/// Source bytes with no zero byte, so a hole (zeros of a fresh allocation) can never pass for content.
pub fn source(len: u64, seed: u64) -> Vec<u8> {
    let mut v = pseudo_random_bytes(len as usize, seed);
    for b in &mut v {
        if *b == 0 {
            *b = 0x5A;
        }
    }
    v
}

/// Panic unless `got == want`, saying where they first differ (not the bytes: they may be megabytes).
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} bytes, want {}; first difference at {first}",
            got.len(),
            want.len()
        );
    }
}

/// GET bytes `first..=last` (both inclusive, as in a Range header) of video `id`.
pub fn get_range(d: &Daemon, id: &str, first: u64, last: u64) -> Response {
    d.get(
        &format!("/videos/{id}"),
        &[("Range", &format!("bytes={first}-{last}"))],
    )
}

/// A config with one live channel `id` of `capacity` bytes (write token "tok"): `server_extra` goes
/// into `[server]`, `limits` (if any) into `[limits]`, `video_extra` into the channel's table.
pub fn live_config(
    id: &str,
    capacity: u64,
    server_extra: &str,
    limits: &str,
    video_extra: &str,
) -> String {
    let limits = if limits.is_empty() {
        String::new()
    } else {
        format!("[limits]\n{limits}\n\n")
    };
    format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"tok\"\n{server_extra}\n\n{limits}\
         [[video]]\nid = \"{id}\"\nkind = \"live\"\ncapacity = {capacity}\n{video_extra}\n"
    )
}

/// The `GET /videos` entry of one video: its JSON object as text, from `{"id":"ID"` to the next video.
pub fn video_entry(d: &Daemon, id: &str) -> String {
    let r = d.get("/videos", &[]);
    assert_eq!(r.status, 200, "GET /videos: {}", r.text());
    let json = r.text();
    let key = format!("{{\"id\":\"{id}\"");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("no entry for {id} in {json}"));
    let rest = &json[at + 1..];
    let end = rest.find("{\"id\":").unwrap_or(rest.len());
    json[at..at + 1 + end].to_string()
}

/// Every unsigned number that follows `key` in `text` (`"start":` → its values, in order).
pub fn numbers_after(text: &str, key: &str) -> Vec<u64> {
    text.match_indices(key)
        .map(|(i, _)| {
            let digits: String = text[i + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().expect("a number")
        })
        .collect()
}

/// Cached ranges of a video, half-open, as GET /videos lists them.
pub fn cached(d: &Daemon, id: &str) -> Vec<(u64, u64)> {
    let entry = video_entry(d, id);
    let at = entry
        .find("\"cached_ranges\":[")
        .unwrap_or_else(|| panic!("no cached_ranges in {entry}"));
    let list = &entry[at..];
    let list = &list[..list.find(']').expect("end of cached_ranges")];
    let starts = numbers_after(list, "\"start\":");
    let ends = numbers_after(list, "\"end\":");
    assert_eq!(starts.len(), ends.len(), "{entry}");
    starts.into_iter().zip(ends).collect()
}

/// Where `needle` first occurs in `hay` at or after `from`.
pub fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Encode `secs` seconds of ffmpeg's 320x240 test pattern at 25 fps into the file `out`, with
/// `encode`'s codec and container options; panics with ffmpeg's errors if it fails.
pub fn encode_test_clip(
    ffmpeg: &std::path::Path,
    out: &std::path::Path,
    secs: u32,
    encode: &[&str],
) {
    let run = std::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
        ])
        .args([
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            &secs.to_string(),
        ])
        .args(encode)
        .arg(out)
        .output()
        .expect("run ffmpeg");
    assert!(
        run.status.success(),
        "ffmpeg could not make {}: {}",
        out.display(),
        String::from_utf8_lossy(&run.stderr)
    );
}
