//! `vcache index` against real encoders: ffmpeg writes MPEG-TS files with a known GOP (H.264 with
//! and without B-frames and audio, MPEG-2, HEVC when libx265 is there), `vcache index` prints the
//! points table, and each point is checked on the bytes (a video-PID packet that starts a keyframe
//! PES) and against ffprobe's keyframe packets; the table is then pasted into a config and the
//! stream served from `?t=` must start with those bytes and decode with ffprobe.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TS: usize = 188;
const SECONDS: u32 = 8;
const FPS: u32 = 25;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Codec {
    H264,
    Hevc,
    Mpeg2,
}

struct Variant {
    name: &'static str,
    codec: Codec,
    gop: u32,
    /// Extra ffmpeg arguments (inputs first, then codec options).
    inputs: &'static [&'static str],
    options: &'static [&'static str],
}

fn run(program: &Path, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Where ffmpeg and ffprobe are.
struct Ff {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
}

/// ffmpeg and ffprobe, or None when the test is to be skipped (see `require_tool`).
fn ff() -> Option<Ff> {
    Some(Ff {
        ffmpeg: require_tool("ffmpeg")?,
        ffprobe: require_tool("ffprobe")?,
    })
}

fn has_encoder(ff: &Ff, name: &str) -> bool {
    let out = run(&ff.ffmpeg, &["-hide_banner", "-encoders"]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|w| w == name)
}

fn generate(ff: &Ff, dir: &TestDir, v: &Variant) -> PathBuf {
    let path = dir.join(&format!("{}.ts", v.name));
    let size_rate = format!("testsrc=size=320x240:rate={FPS}");
    let gop = v.gop.to_string();
    let seconds = SECONDS.to_string();
    let mut args: Vec<&str> = vec!["-v", "error", "-y", "-f", "lavfi", "-i", &size_rate];
    args.extend_from_slice(v.inputs);
    args.extend_from_slice(&["-t", &seconds, "-g", &gop]);
    args.extend_from_slice(v.options);
    args.extend_from_slice(&["-f", "mpegts", path.to_str().unwrap()]);
    run(&ff.ffmpeg, &args);
    path
}

/// `vcache index FILE` → (full text, fps, [(timecode, offset)]).
fn index(path: &Path) -> (String, u32, Vec<(String, u64)>) {
    let out = run(&vcache_bin(), &["index", path.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    let mut fps = None;
    let mut points = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("fps = ") {
            fps = Some(n.parse().expect("fps number"));
        } else if let Some(rest) = line.strip_prefix("[\"") {
            let (tc, rest) = rest.split_once("\", ").expect("point shape");
            let offset = rest.strip_suffix("],").expect("point end").parse().unwrap();
            points.push((tc.to_string(), offset));
        } else {
            assert!(
                line == "points = [" || line == "]",
                "unexpected line {line:?} in\n{text}"
            );
        }
    }
    (text, fps.expect("an fps line"), points)
}

/// `key=value|key=value` lines of `ffprobe -of compact=p=0`.
fn ffprobe_compact(ff: &Ff, args: &[&str]) -> Vec<BTreeMap<String, String>> {
    let mut full = vec!["-v", "error", "-of", "compact=p=0"];
    full.extend_from_slice(args);
    let out = run(&ff.ffprobe, &full);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            line.split('|')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

fn timecode_seconds(tc: &str, fps: u32) -> f64 {
    let f: Vec<f64> = tc.split(':').map(|x| x.parse().unwrap()).collect();
    f[0] * 3600.0 + f[1] * 60.0 + f[2] + f[3] / f64::from(fps)
}

fn pid_of(packet: &[u8]) -> u16 {
    (u16::from(packet[1] & 0x1F) << 8) | u16::from(packet[2])
}

/// The PMT PID of the first program in the file's first PAT.
fn pmt_pid(data: &[u8]) -> u16 {
    let pat = data
        .chunks_exact(TS)
        .find(|p| pid_of(p) == 0 && p[1] & 0x40 != 0)
        .expect("a PAT");
    let payload = ts_payload(pat);
    let section = &payload[1 + usize::from(payload[0])..];
    // Long section header (8 bytes), then (program_number, PID) pairs; program 0 is the NIT.
    section[8..]
        .chunks_exact(4)
        .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
        .map(|e| u16::from_be_bytes([e[2] & 0x1F, e[3]]))
        .expect("a program in the PAT")
}

/// The payload of one TS packet (after any adaptation field).
fn ts_payload(packet: &[u8]) -> &[u8] {
    let control = (packet[3] >> 4) & 0x3;
    match control {
        1 => &packet[4..],
        3 => {
            let skip = 5 + usize::from(packet[4]);
            packet.get(skip..).unwrap_or(&[])
        }
        _ => &[],
    }
}

/// The PES that starts in the packet at `offset`: its payload from that packet up to the next
/// packet on the same PID with payload_unit_start_indicator set.
fn pes_at(data: &[u8], offset: usize, pid: u16) -> Vec<u8> {
    let mut pes = ts_payload(&data[offset..offset + TS]).to_vec();
    let mut at = offset + TS;
    while at + TS <= data.len() {
        let packet = &data[at..at + TS];
        if packet[0] == 0x47 && pid_of(packet) == pid {
            if packet[1] & 0x40 != 0 {
                break;
            }
            pes.extend_from_slice(ts_payload(packet));
        }
        at += TS;
    }
    pes
}

/// Start-code positions (index of the byte after 00 00 01).
fn start_codes(es: &[u8]) -> Vec<usize> {
    (0..es.len().saturating_sub(3))
        .filter(|&i| es[i] == 0 && es[i + 1] == 0 && es[i + 2] == 1)
        .map(|i| i + 3)
        .collect()
}

/// Does this elementary-stream access unit hold a random access picture?
fn is_keyframe_access_unit(es: &[u8], codec: Codec) -> bool {
    let codes = start_codes(es);
    match codec {
        // An IDR slice (nal_unit_type 5).
        Codec::H264 => codes
            .iter()
            .any(|&i| es.get(i).is_some_and(|b| b & 0x1F == 5)),
        // An IRAP slice (nal_unit_type 16..=21).
        Codec::Hevc => codes.iter().any(|&i| {
            es.get(i)
                .is_some_and(|b| (16..=21).contains(&((b >> 1) & 0x3F)))
        }),
        // A sequence header (B3) and an I picture (picture_coding_type 1).
        Codec::Mpeg2 => {
            let sequence = codes.iter().any(|&i| es.get(i) == Some(&0xB3));
            let intra = codes.iter().any(|&i| {
                es.get(i) == Some(&0x00) && es.get(i + 2).is_some_and(|b| (b >> 3) & 0x7 == 1)
            });
            sequence && intra
        }
    }
}

fn check_variant(ff: &Ff, v: &Variant) {
    let dir = TestDir::new(&format!("index-{}", v.name));
    let path = generate(ff, &dir, v);
    let data = std::fs::read(&path).unwrap();
    let (text, fps, points) = index(&path);
    assert_eq!(fps, FPS, "{}: detected fps\n{text}", v.name);
    assert_eq!(
        points.len(),
        (SECONDS * FPS).div_ceil(v.gop) as usize,
        "{}: one point per GOP\n{text}",
        v.name
    );

    // ffprobe's view: the video PID, its start time and the keyframe packets.
    let streams = ffprobe_compact(
        ff,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=id,start_time",
            path.to_str().unwrap(),
        ],
    );
    let stream = &streams[0];
    let pid = u16::from_str_radix(stream["id"].trim_start_matches("0x"), 16).unwrap();
    let start: f64 = stream["start_time"].parse().unwrap();
    let packets = ffprobe_compact(
        ff,
        &[
            "-select_streams",
            "v:0",
            "-show_packets",
            "-show_entries",
            "packet=pts_time,pos,flags",
            path.to_str().unwrap(),
        ],
    );
    let keyframes: BTreeMap<u64, f64> = packets
        .iter()
        .filter(|p| p.get("flags").is_some_and(|f| f.contains('K')))
        .map(|p| (p["pos"].parse().unwrap(), p["pts_time"].parse().unwrap()))
        .collect();
    assert!(
        !keyframes.is_empty(),
        "{}: ffprobe saw no keyframes",
        v.name
    );

    // A point starts at the tables (SDT, PAT, PMT) ffmpeg writes right before each keyframe, so a
    // player starting there has them; the keyframe's own packet follows them.
    let tables = [0x0000, 0x0011, pmt_pid(&data)];
    let mut video_starts = Vec::new();
    for (tc, offset) in &points {
        let what = format!("{} point {tc} at {offset}", v.name);
        assert_eq!(*offset as usize % TS, 0, "{what}: not on a packet boundary");
        let mut at = *offset as usize;
        while tables.contains(&pid_of(&data[at..at + TS])) {
            at += TS;
        }
        assert!(
            at - *offset as usize <= 8 * TS,
            "{what}: more than 8 table packets before the keyframe"
        );
        if let Some(before) = (*offset as usize).checked_sub(TS) {
            let pid = pid_of(&data[before..before + TS]);
            assert!(
                !tables.contains(&pid),
                "{what}: a table packet right before the point"
            );
        }
        assert!(
            at > *offset as usize,
            "{what}: the point is not at the tables before the keyframe"
        );
        video_starts.push(at as u64);
        let packet = &data[at..at + TS];
        assert_eq!(packet[0], 0x47, "{what}: no sync byte");
        assert_eq!(pid_of(packet), pid, "{what}: not the video PID");
        assert_ne!(packet[1] & 0x40, 0, "{what}: payload_unit_start not set");
        let pes = pes_at(&data, at, pid);
        assert_eq!(&pes[..3], &[0, 0, 1], "{what}: no PES start code");
        let header_len = usize::from(pes[8]);
        let es = &pes[9 + header_len..];
        assert!(
            is_keyframe_access_unit(es, v.codec),
            "{what}: the PES is not a keyframe"
        );
        let pts = keyframes
            .get(&(at as u64))
            .unwrap_or_else(|| panic!("{what}: ffprobe has no keyframe packet there"));
        let seconds = timecode_seconds(tc, fps);
        assert!(
            (seconds - (pts - start)).abs() <= 1.0 / f64::from(fps) + 1e-6,
            "{what}: timecode is {seconds} s, ffprobe says {} s",
            pts - start
        );
    }
    // Every other video PES is not a keyframe (this also shows that the check above can fail).
    let mut other_pes = 0;
    for at in (0..data.len() / TS).map(|i| i * TS) {
        let packet = &data[at..at + TS];
        if pid_of(packet) != pid || packet[1] & 0x40 == 0 || video_starts.contains(&(at as u64)) {
            continue;
        }
        let pes = pes_at(&data, at, pid);
        let es = &pes[9 + usize::from(pes[8])..];
        assert!(
            !is_keyframe_access_unit(es, v.codec),
            "{}: the PES at {at} is a keyframe without a point\n{text}",
            v.name
        );
        other_pes += 1;
    }
    assert!(
        other_pes >= (SECONDS * FPS) as usize - points.len(),
        "{}",
        v.name
    );
    for pos in keyframes.keys() {
        assert!(
            video_starts.contains(pos),
            "{}: ffprobe keyframe at {pos} has no point\n{text}",
            v.name
        );
    }

    // The printed table pasted verbatim under [video.seek] serves from each point.
    let config = format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n[[video]]\nid = \"x\"\nkind = \"file\"\n\
         path = \"{}.ts\"\n[video.seek]\n{text}",
        v.name
    );
    let d = Daemon::start(&dir.path, &config);
    for (tc, offset) in &points {
        let at = *offset as usize;
        let r = d.get(&format!("/videos/x?t={tc}"), &[("Range", "bytes=0-375")]);
        assert_eq!(r.status, 206, "{} {tc}: {}", v.name, r.text());
        assert_eq!(r.body, &data[at..at + 2 * TS], "{} {tc}", v.name);
        let r = d.get(&format!("/videos/x/offset?t={tc}"), &[]);
        assert_eq!(
            r.text(),
            format!("{{\"id\":\"x\",\"timecode\":\"{tc}\",\"offset\":{offset}}}\n")
        );
    }

    // ffprobe decodes the stream served from the middle point: exactly the original's frames from
    // that keyframe on, the first one a keyframe, with no decoder errors.
    let (tc, offset) = &points[points.len() / 2];
    let r = d.get(&format!("/videos/x?t={tc}"), &[]);
    assert!(r.body == data[*offset as usize..], "{} {tc}", v.name);
    let key_pts = keyframes[&video_starts[points.len() / 2]];
    let frames = |input: &str| -> (Vec<(bool, String)>, String) {
        let out = Command::new(&ff.ffprobe)
            .args([
                "-v",
                "error",
                "-of",
                "compact=p=0",
                "-select_streams",
                "v:0",
                "-show_frames",
                "-show_entries",
                "frame=key_frame,pts_time",
                input,
            ])
            .output()
            .expect("run ffprobe");
        assert!(out.status.success(), "ffprobe {input}");
        let list = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let m: BTreeMap<&str, &str> = line
                    .split('|')
                    .filter_map(|kv| kv.split_once('='))
                    .collect();
                Some((m.get("key_frame")? == &"1", m.get("pts_time")?.to_string()))
            })
            .collect();
        (list, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let url = d.url(&format!("/videos/x?t={tc}"));
    let (served, errors) = frames(&url);
    assert!(
        errors.trim().is_empty(),
        "{}: ffprobe {url}: {errors}",
        v.name
    );
    let (original, _) = frames(path.to_str().unwrap());
    let expected: Vec<&String> = original
        .iter()
        .map(|(_, pts)| pts)
        .filter(|pts| pts.parse::<f64>().unwrap() >= key_pts - 1e-6)
        .collect();
    let got: Vec<&String> = served.iter().map(|(_, pts)| pts).collect();
    assert_eq!(got, expected, "{}: frames decoded from {url}", v.name);
    assert!(
        served[0].0,
        "{}: the first frame from {url} is a keyframe",
        v.name
    );
}

#[test]
fn h264_gop_25_without_b_frames() {
    let Some(ff) = ff() else {
        return;
    };
    check_variant(
        &ff,
        &Variant {
            name: "h264-g25",
            codec: Codec::H264,
            gop: 25,
            inputs: &[],
            options: &["-c:v", "libx264", "-bf", "0"],
        },
    );
}

#[test]
fn h264_gop_50_with_audio() {
    let Some(ff) = ff() else {
        return;
    };
    check_variant(
        &ff,
        &Variant {
            name: "h264-g50-audio",
            codec: Codec::H264,
            gop: 50,
            inputs: &["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"],
            options: &["-c:v", "libx264", "-bf", "0", "-c:a", "aac"],
        },
    );
}

#[test]
fn h264_gop_50_with_b_frames() {
    let Some(ff) = ff() else {
        return;
    };
    check_variant(
        &ff,
        &Variant {
            name: "h264-g50-bframes",
            codec: Codec::H264,
            gop: 50,
            inputs: &[],
            options: &["-c:v", "libx264", "-bf", "3"],
        },
    );
}

#[test]
fn mpeg2_gop_25() {
    let Some(ff) = ff() else {
        return;
    };
    check_variant(
        &ff,
        &Variant {
            name: "mpeg2-g25",
            codec: Codec::Mpeg2,
            gop: 25,
            inputs: &[],
            options: &["-c:v", "mpeg2video"],
        },
    );
}

#[test]
fn hevc_gop_25() {
    let Some(ff) = ff() else {
        return;
    };
    if !has_encoder(&ff, "libx265") {
        missing_tool("ffmpeg's libx265 encoder", "ffmpeg");
        return;
    }
    check_variant(
        &ff,
        &Variant {
            name: "hevc-g25",
            codec: Codec::Hevc,
            gop: 25,
            inputs: &[],
            options: &["-c:v", "libx265", "-x265-params", "log-level=error"],
        },
    );
}

#[test]
fn index_errors_name_the_file_once_and_exit_non_zero() {
    let dir = TestDir::new("index-errors");
    let missing = dir.join("missing.ts");
    let text = dir.join("text.ts");
    std::fs::write(&text, b"not a transport stream\n").unwrap();
    for (path, why) in [(&missing, "cannot open"), (&text, "not an MPEG-TS")] {
        let out = Command::new(vcache_bin())
            .arg("index")
            .arg(path)
            .output()
            .expect("run vcache index");
        assert!(!out.status.success(), "{path:?}");
        assert!(out.stdout.is_empty(), "{path:?}: nothing on stdout");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(why) && stderr.contains(path.to_str().unwrap()),
            "{path:?}: {stderr}"
        );
        assert_eq!(
            stderr.matches("vcache index:").count(),
            1,
            "{path:?}: one prefix: {stderr}"
        );
    }
}
