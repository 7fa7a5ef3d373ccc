//! Live latency benchmark, glass to glass: ffmpeg publishes a 25 fps test picture in real time (`-re`)
//! with `-method PUT`; a viewer's position in the media (`currentTime`, or ffmpeg's `out_time`) is
//! compared with the wall clock since the publisher started — media time t was published at start + t,
//! so latency = now − start − t (ffmpeg's start-up counts against every viewer alike). Measured, in
//! interleaved rounds, with medians:
//! - `hls6`: plain HLS with 6 s segments (a 150-frame GOP), read by ffmpeg from `index.m3u8` — the
//!   baseline (MediaMTX, whose LL-HLS would be the natural one, is not packaged in Debian);
//! - `hls1`: the same channel kind with 1 s segments — the LL-HLS playlist as ffmpeg reads it (ffmpeg
//!   ignores `#EXT-X-PART`, so this is the fallback the issue names);
//! - chromium (headless, playwright-core) on the console page: an MPEG-TS channel through the page's
//!   low-latency HLS client (MSE; newest independent part, then one open range at the preload hint)
//!   and through Chromium's native HLS, and a fragmented MP4 channel (0.2 s fragments) through the
//!   page's client. The publisher stamps each frame's number into the picture
//!   (`tests/common/stamp.rs`) and the page reads it back from the shown frame: frame n was
//!   published at start + n/25 s.
//!
//! Run: `cargo bench --bench latency`. Environment: BENCH_ROUNDS (default 3), BENCH_WARMUP_S (publish
//! time before a viewer starts, default 20 — three 6 s segments), BENCH_SAMPLE_S (default 8).
//! Needs ffmpeg; the browser row needs /usr/bin/chromium, node and `npm install` in tests/browser.

mod common;
use common::*;
#[path = "../tests/common/publish.rs"]
mod publish;
#[path = "../tests/common/stamp.rs"]
mod stamp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Daemon {
    _proc: Proc,
    port: u16,
}

fn start_daemon(dir: &Path) -> Daemon {
    let port = free_port();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nwrite_token = \"tok\"\n\n\
         [[video]]\nid = \"hls6.ts\"\nkind = \"live\"\ncapacity = \"64MiB\"\n\n\
         [[video]]\nid = \"hls1.ts\"\nkind = \"live\"\ncapacity = \"64MiB\"\n\n\
         [[video]]\nid = \"ll.ts\"\nkind = \"live\"\ncapacity = \"64MiB\"\n\n\
         [[video]]\nid = \"live.mp4\"\nkind = \"live\"\ncapacity = \"64MiB\"\n"
    );
    std::fs::write(dir.join("vcache.toml"), cfg).expect("config");
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/vcache");
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--config"]).arg(dir.join("vcache.toml"));
    let proc = spawn(&mut cmd, &dir.join("vcache.log"), libc::SIGTERM).expect("start vcache");
    wait_port(port);
    Daemon { _proc: proc, port }
}

fn publish(ffmpeg: &Path, port: u16, id: &str, gop: u32, secs: u32) -> (Child, Instant, u128) {
    let fmt: &[&str] = if id.ends_with(".mp4") {
        &publish::FMP4_LOW_LATENCY
    } else {
        &["-f", "mpegts"]
    };
    let stamp = stamp::frame_stamp_filter();
    let gop = gop.to_string();
    let mut options = vec!["-vf", &stamp, "-c:v", "libx264", "-tune", "zerolatency"];
    options.extend(["-g", &gop, "-pix_fmt", "yuv420p", "-b:v", "2M"]);
    options.extend(fmt);
    let url = format!("http://127.0.0.1:{port}/videos/{id}");
    let child = publish::publish_test_picture(ffmpeg, &url, secs, &options);
    let epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    (child, Instant::now(), epoch_ms)
}

/// The PTS (seconds) of the channel's first video packet: the media time of the publisher's start
/// (ffmpeg's MPEG-TS muxer starts at about 1.4 s).
fn first_pts(ffprobe: &Path, dir: &Path, port: u16, id: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET /videos/{id} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-499999\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read");
    let body = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&all[..0], |at| &all[at + 4..]);
    let path = dir.join("first.ts");
    std::fs::write(&path, body).expect("write");
    let out = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
        ])
        .args(["-read_intervals", "%+#1", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no first PTS: {text}"))
}

/// ffmpeg reading `index.m3u8` for `sample` seconds with the stream's timestamps kept (`-copyts`; the
/// `showinfo` filter prints each decoded frame's `pts_time` — `-progress` would count from the reader's
/// first frame): the median of (now − start) − (pts_time − pts0) over the second half of the frames.
fn ffmpeg_latency(
    ffmpeg: &Path,
    port: u16,
    id: &str,
    start: Instant,
    pts0: f64,
    sample: u64,
) -> f64 {
    let mut reader = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "info",
            "-nostats",
            "-nostdin",
            "-copyts",
        ])
        .args([
            "-i",
            &format!("http://127.0.0.1:{port}/videos/{id}/index.m3u8"),
        ])
        .args(["-vf", "showinfo", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg reader");
    let out = reader.stderr.take().expect("stderr");
    let until = Instant::now() + Duration::from_secs(sample);
    let samples = std::thread::spawn(move || {
        let mut v = Vec::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let pts = line
                .split("pts_time:")
                .nth(1)
                .and_then(|x| x.split_whitespace().next());
            if let Some(t) = pts.and_then(|x| x.parse::<f64>().ok()) {
                v.push(start.elapsed().as_secs_f64() - (t - pts0));
            }
        }
        v
    });
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = reader.kill();
    let _ = reader.wait();
    let v = samples.join().unwrap_or_default();
    median(&v[v.len() / 2..])
}

/// Chromium watching channel `id` on the console page (`how`: "page", its LL-HLS client, or
/// "native"): the glass-to-glass median run.mjs reads from the frame stamps.
fn browser_latency(port: u16, id: &str, how: &str, epoch_ms: u128) -> f64 {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = Command::new("node")
        .arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .env("BASE", format!("http://127.0.0.1:{port}"))
        .env("ONLY", how)
        .env("LIVE", id)
        .env("PUBLISH_START_MS", epoch_ms.to_string())
        .output()
        .expect("run node tests/browser/run.mjs (npm install in tests/browser)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let k = "\"glassToGlassMedianS\":";
    let at = text
        .find(k)
        .unwrap_or_else(|| panic!("{id} {how}: no latency in {text}"))
        + k.len();
    let num: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e'))
        .collect();
    num.parse().unwrap_or_else(|_| panic!("{id} {how}: {text}"))
}

/// The rows measured in each round: (label, channel, GOP frames, how it is watched).
const ROWS: [(&str, &str, u32, &str); 5] = [
    ("plain HLS, 6 s segments (ffmpeg)", "hls6.ts", 150, "ffmpeg"),
    ("HLS, 1 s segments (ffmpeg)", "hls1.ts", 25, "ffmpeg"),
    ("chromium, TS, page LL-HLS (MSE)", "ll.ts", 25, "page"),
    ("chromium, TS, native HLS", "ll.ts", 25, "native"),
    ("chromium, fMP4, page LL-HLS (MSE)", "live.mp4", 25, "page"),
];

fn main() {
    let ffmpeg = require(&["/usr/bin/ffmpeg"], "ffmpeg");
    let ffprobe = require(&["/usr/bin/ffprobe"], "ffmpeg");
    require(&["/usr/bin/chromium"], "chromium");
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let warmup: u64 = env_or("BENCH_WARMUP_S", 20);
    let sample: u64 = env_or("BENCH_SAMPLE_S", 8);
    let dir = std::env::temp_dir().join(format!("vcache-bench-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let d = start_daemon(&dir);
    let mut results = vec![Vec::new(); ROWS.len()];
    for round in 1..=rounds {
        for (row, &(label, id, gop, how)) in ROWS.iter().enumerate() {
            let l = if how == "ffmpeg" {
                let secs = (warmup + sample + 5) as u32;
                let (mut p, start, _) = publish(&ffmpeg, d.port, id, gop, secs);
                std::thread::sleep(Duration::from_secs(warmup));
                let pts0 = first_pts(&ffprobe, &dir, d.port, id);
                let l = ffmpeg_latency(&ffmpeg, d.port, id, start, pts0, sample);
                let _ = (p.kill(), p.wait());
                l
            } else {
                let (mut p, _, epoch_ms) = publish(&ffmpeg, d.port, id, gop, 40);
                std::thread::sleep(Duration::from_secs(4));
                let l = browser_latency(d.port, id, how, epoch_ms);
                let _ = (p.kill(), p.wait());
                l
            };
            println!("round {round}: {label:<36} {l:6.2} s");
            results[row].push(l);
        }
    }
    let base = median(&results[0]);
    println!("\nglass-to-glass latency, medians of {rounds} interleaved rounds:");
    for (row, ((label, ..), r)) in ROWS.iter().zip(&results).enumerate() {
        let m = median(r);
        let vs = if row == 0 {
            "(baseline)".to_string()
        } else {
            format!("{:.1}x lower than the baseline", base / m)
        };
        println!("  {label:<36} {m:6.2} s   {vs}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
