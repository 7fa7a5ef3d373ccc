//! The console page (GET /) in a real browser: Debian's chromium, headless, driven by playwright-core
//! (`tests/browser/run.mjs`, `npm install` in tests/browser). With the real binary, ffmpeg publishing a
//! fragmented MP4 channel (past a ring wrap) and an MPEG-TS channel, their pictures stamped with frame
//! numbers, it checks that the page loads with no console errors, a VOD plays and seeks, the TS channel
//! plays live through the page's low-latency HLS client (MSE) and through Chromium's native HLS, the
//! fMP4 channel through the page's client after its ring has wrapped — each with currentTime and the
//! stamped frames moving on, the distance behind the buffered edge and glass to glass printed — and an
//! upload through the page, cut once mid-way, resumes and lands byte-exact.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn ffmpeg_publish(ffmpeg: &Path, d: &Daemon, id: &str, format: &[&str], secs: u32) -> Child {
    let stamp = frame_stamp_filter();
    let mut options = vec![
        "-vf", &stamp, "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p",
    ];
    options.extend([
        "-tune",
        "zerolatency",
        "-b:v",
        "2M",
        "-maxrate",
        "2M",
        "-bufsize",
        "1M",
    ]);
    options.extend(format);
    publish_test_picture(ffmpeg, &d.url(&format!("/videos/{id}")), secs, &options)
}

/// The object of step `step` in run.mjs's report (steps hold no nested objects).
fn step_of<'a>(report: &'a str, step: &str) -> &'a str {
    let key = format!("\"{step}\":{{");
    let at = report
        .find(&key)
        .unwrap_or_else(|| panic!("no step {step} in {report}"));
    let rest = &report[at + key.len()..];
    &rest[..rest.find('}').unwrap_or(rest.len())]
}

fn number(json: &str, key: &str) -> f64 {
    let k = format!("\"{key}\":");
    let at = json
        .find(&k)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + k.len();
    let text: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
        .collect();
    text.parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

#[test]
fn console_page_plays_vod_and_live_ts_and_fmp4_and_uploads_in_chromium() {
    let (Some(ffmpeg), Some(node), Some(_)) = (
        require_tool("ffmpeg"),
        require_tool("node"),
        require_tool("chromium"),
    ) else {
        return;
    };
    if !browser_dir().join("node_modules/playwright-core").is_dir() {
        missing_tool("playwright-core (npm install in tests/browser)", "npm");
        return;
    }
    let dir = TestDir::new("browser");
    let clip = dir.join("clip.mp4");
    encode_test_clip(
        &ffmpeg,
        &clip,
        8,
        &[
            "-c:v",
            "libx264",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
        ],
    );
    let upload = pseudo_random_bytes(3 * (1 << 20) + 12_345, 17);
    let upload_path = dir.join("upload.bin");
    std::fs::write(&upload_path, &upload).unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"tok\"\n\n\
         [[video]]\nid = \"clip.mp4\"\nkind = \"file\"\npath = \"clip.mp4\"\n\n\
         [[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = {}\n\n\
         [[video]]\nid = \"cam.ts\"\nkind = \"live\"\ncapacity = 4194304\n\n\
         [[video]]\nid = \"live.mp4\"\nkind = \"live\"\ncapacity = 1048576\n",
        upload.len()
    );
    let mut d = Daemon::start(&dir.path, &cfg);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let mut fmp4 = ffmpeg_publish(&ffmpeg, &d, "live.mp4", &FMP4_LOW_LATENCY, 40);
    let mut ts = ffmpeg_publish(&ffmpeg, &d, "cam.ts", &["-f", "mpegts"], 40);
    wait_until("the fMP4 ring to wrap", Duration::from_secs(30), || {
        video_entry(&d, "live.mp4").contains("\"window_start\":")
            && !video_entry(&d, "live.mp4").contains("\"window_start\":0,")
    });
    let run = Command::new(node)
        .arg(browser_dir().join("run.mjs"))
        .current_dir(browser_dir())
        .env("BASE", format!("http://{}", d.addr()))
        .env("VOD", "clip.mp4")
        .env("TS_LIVE", "cam.ts")
        .env("MP4_LIVE", "live.mp4")
        .env("SLOT", "slot")
        .env("UPLOAD_FILE", &upload_path)
        .env("TOKEN", "tok")
        .env("PUBLISH_START_MS", started.to_string())
        .output()
        .expect("run node");
    let _ = (fmp4.kill(), ts.kill(), fmp4.wait(), ts.wait());
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    let report = stdout.lines().last().unwrap_or("").to_string();
    assert!(
        run.status.success(),
        "run.mjs failed: {report}\nstderr: {}\nlog:\n{}",
        String::from_utf8_lossy(&run.stderr),
        d.log()
    );
    assert!(
        report.contains("\"errorsBeforeUpload\":[]"),
        "console errors: {report}"
    );
    assert!(
        number(&report, "playedTo") > number(&report, "seekedTo"),
        "{report}"
    );
    for (step, how) in [
        ("tsLive", "page"),
        ("tsNative", "native"),
        ("mp4Live", "page"),
    ] {
        let live = step_of(&report, step);
        assert!(
            live.contains(&format!("\"how\":\"{how}\"")),
            "{step} played by {how}: {live}"
        );
        let (from, to) = (number(live, "startedAt"), number(live, "advancedTo"));
        assert!(to > from + 1.0, "{step}: currentTime advanced: {live}");
        let (first, last) = (number(live, "firstFrame"), number(live, "lastFrame"));
        assert!(
            first >= 0.0 && last >= first + 20.0,
            "{step}: the stamped frames shown moved on (12 samples 0.3 s apart): {live}"
        );
        println!(
            "browser: {step} ({how}): {:.2} s behind the buffered edge, glass-to-glass {:.2} s (medians of 12 samples)",
            number(live, "behindEdgeMedianS"),
            number(live, "glassToGlassMedianS")
        );
    }
    assert!(
        report.contains("\"cut\":true"),
        "the upload was cut once: {report}"
    );
    let r = d.get("/videos/slot", &[]);
    assert_eq!(r.status, 200, "the slot is complete");
    assert!(
        r.body == upload,
        "the upload through the page landed byte-exact"
    );
    d.stop(Duration::from_secs(10));
}
