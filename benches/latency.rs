//! Live latency benchmark, glass to glass: ffmpeg publishes a 25 fps test picture in real time (`-re`)
//! with `-method PUT`; a viewer's position in the media (`currentTime`, or ffmpeg's `out_time`) is
//! compared with the wall clock since the publisher started — media time t was published at start + t,
//! so latency = now − start − t (ffmpeg's start-up counts against every viewer alike). Measured, in
//! interleaved rounds, with medians:
//! - `hls6`: plain HLS with 6 s segments (a 150-frame GOP), read by ffmpeg from `index.m3u8` — the
//!   baseline (MediaMTX, whose LL-HLS would be the natural one, is not packaged in Debian);
//! - `hls1`: the same channel kind with 1 s segments — the LL-HLS playlist as ffmpeg reads it (ffmpeg
//!   ignores `#EXT-X-PART`, so this is the fallback the issue names);
//! - `browser`: chromium (headless, playwright-core) playing a fragmented MP4 channel on the console
//!   page — MSE fed from the follower stream, which joins at the newest sync fragment.
//!
//! Run: `cargo bench --bench latency`. Environment: BENCH_ROUNDS (default 3), BENCH_WARMUP_S (publish
//! time before a viewer starts, default 20 — three 6 s segments), BENCH_SAMPLE_S (default 8).
//! Needs ffmpeg; the browser row needs /usr/bin/chromium, node and `npm install` in tests/browser.

mod common;
use common::*;

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
        &[
            "-f",
            "mp4",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
        ]
    } else {
        &["-f", "mpegts"]
    };
    let child = Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=25"])
        .args([
            "-t",
            &secs.to_string(),
            "-c:v",
            "libx264",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", &gop.to_string(), "-pix_fmt", "yuv420p", "-b:v", "2M"])
        .args(fmt)
        .args([
            "-method",
            "PUT",
            "-headers",
            "Authorization: Bearer tok\r\n",
        ])
        .arg(format!("http://127.0.0.1:{port}/videos/{id}"))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg publisher");
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

fn browser_latency(port: u16, epoch_ms: u128) -> Option<f64> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !Path::new("/usr/bin/chromium").exists()
        || !dir.join("node_modules/playwright-core").is_dir()
    {
        return None;
    }
    let out = Command::new("node")
        .arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .env("BASE", format!("http://127.0.0.1:{port}"))
        .env("ONLY", "mp4Live")
        .env("MP4_LIVE", "live.mp4")
        .env("PUBLISH_START_MS", epoch_ms.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let k = "\"glassToGlassMedianS\":";
    let at = text.find(k)? + k.len();
    let num: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e'))
        .collect();
    num.parse().ok()
}

fn main() {
    let ffmpeg = require(&["/usr/bin/ffmpeg"], "ffmpeg");
    let ffprobe = require(&["/usr/bin/ffprobe"], "ffmpeg");
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let warmup: u64 = env_or("BENCH_WARMUP_S", 20);
    let sample: u64 = env_or("BENCH_SAMPLE_S", 8);
    let dir = std::env::temp_dir().join(format!("vcache-bench-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let d = start_daemon(&dir);
    let secs = (warmup + sample + 5) as u32;
    let (mut hls6, mut hls1, mut browser) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (id, gop, out) in [("hls6.ts", 150, &mut hls6), ("hls1.ts", 25, &mut hls1)] {
            let (mut p, start, _) = publish(&ffmpeg, d.port, id, gop, secs);
            std::thread::sleep(Duration::from_secs(warmup));
            let pts0 = first_pts(&ffprobe, &dir, d.port, id);
            let l = ffmpeg_latency(&ffmpeg, d.port, id, start, pts0, sample);
            println!("round {round}: {id:<9} ffmpeg from index.m3u8   {l:6.2} s");
            out.push(l);
            let _ = p.kill();
            let _ = p.wait();
        }
        let (mut p, _, epoch_ms) = publish(&ffmpeg, d.port, "live.mp4", 25, secs);
        std::thread::sleep(Duration::from_secs(3));
        match browser_latency(d.port, epoch_ms) {
            Some(l) => {
                println!("round {round}: live.mp4  chromium (MSE, follower) {l:6.2} s");
                browser.push(l);
            }
            None => {
                println!("round {round}: browser row skipped (no chromium/node/playwright-core)")
            }
        }
        let _ = p.kill();
        let _ = p.wait();
    }
    let (m6, m1) = (median(&hls6), median(&hls1));
    println!("\nglass-to-glass latency, medians of {rounds} interleaved rounds:");
    println!("  plain HLS, 6 s segments (ffmpeg)        {m6:6.2} s   (baseline)");
    println!(
        "  HLS, 1 s segments (ffmpeg; LL playlist) {m1:6.2} s   {:.1}x lower",
        m6 / m1
    );
    if !browser.is_empty() {
        let mb = median(&browser);
        println!(
            "  chromium, fMP4 follower via MSE        {mb:6.2} s   {:.1}x lower",
            m6 / mb
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
