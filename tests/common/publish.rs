//! ffmpeg publishing a 640x360 25 fps test picture in real time (`-re`) to a live channel with
//! `-method PUT` and the tests' write token (`tok`): the one command line behind the publishers of the
//! tests and of the latency bench, each giving its own encoder and muxer options.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `ffmpeg … -t SECS OPTIONS -method PUT … URL`, started; `options` are the output's (encoder,
/// filters, muxer).
pub fn publish_test_picture(ffmpeg: &Path, url: &str, secs: u32, options: &[&str]) -> Child {
    Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=25"])
        .args(["-t", &secs.to_string()])
        .args(options)
        .args([
            "-method",
            "PUT",
            "-headers",
            "Authorization: Bearer tok\r\n",
        ])
        .arg(url)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg publisher")
}

/// Muxer options for a fragmented MP4 channel whose fragments last at most 0.2 s, so its playlist has
/// LL-HLS parts.
pub const FMP4_LOW_LATENCY: [&str; 6] = [
    "-f",
    "mp4",
    "-movflags",
    "frag_keyframe+empty_moov+default_base_moof",
    "-frag_duration",
    "200000",
];
