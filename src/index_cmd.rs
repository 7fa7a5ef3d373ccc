//! `vcache index FILE [--fps N]`: reads an MPEG-TS file through the `tsindex` parser and prints the
//! `[video.seek]` table (fps and keyframe points) to paste into the config; the frame rate is detected
//! from the video timestamps unless given.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;

use crate::seek::{MAX_FPS, MAX_TIMECODE_HOURS};
use crate::tsindex::{Keyframe, PTS_CLOCK_HZ, PTS_MODULUS, TsIndexer};

/// Bytes read from the file per `feed` call in `run`.
const INDEX_READ_CHUNK_BYTES: usize = 1 << 20;
/// Bytes fed per call by `detect_fps`, so that it stops soon after enough samples.
#[cfg(test)]
const FPS_SCAN_CHUNK_BYTES: usize = 64 * 1024;

/// Follows PTS values (modulo 2^33) as a signed running count of ticks from the first one,
/// taking each step as the shorter way round the 2^33 circle.
struct PtsUnwrapper {
    previous: Option<(u64, i128)>,
}

impl PtsUnwrapper {
    fn new() -> Self {
        PtsUnwrapper { previous: None }
    }

    fn ticks_since_first(&mut self, pts: u64) -> i128 {
        let pts = pts % PTS_MODULUS;
        let ticks = match self.previous {
            None => 0,
            Some((previous_pts, previous_ticks)) => {
                let forward = (pts + PTS_MODULUS - previous_pts) % PTS_MODULUS;
                let step = if forward >= PTS_MODULUS / 2 {
                    i128::from(forward) - i128::from(PTS_MODULUS)
                } else {
                    i128::from(forward)
                };
                previous_ticks + step
            }
        };
        self.previous = Some((pts, ticks));
        ticks
    }
}

/// Turns keyframes into a seek `points` table: timecode = (pts - first pts) at `fps` as
/// HH:MM:SS:FF (frames rounded down), non-drop-frame. PTS wraparound at 2^33 is followed. A point
/// is left out when its timecode is not after the previous point's (equal, or earlier as with a
/// PTS jump backwards), when its offset is not after the previous point's, or when it is past
/// MAX_TIMECODE_HOURS — the table stays strictly increasing in both columns, as the config requires.
/// With `fps` 0 the points list is empty. Output is TOML for under `[video.seek]`:
/// ```text
/// fps = 25
/// points = [
///   ["00:00:00:00", 0],
///   ["00:00:02:00", 376000],
/// ]
/// ```
pub fn points_toml(keyframes: &[Keyframe], fps: u32) -> String {
    let mut text = format!("fps = {fps}\npoints = [\n");
    let mut unwrapper = PtsUnwrapper::new();
    let mut previous: Option<(u128, u64)> = None;
    for keyframe in keyframes {
        let ticks = unwrapper.ticks_since_first(keyframe.pts);
        if fps == 0 {
            break;
        }
        let Ok(ticks) = u128::try_from(ticks) else {
            continue;
        };
        let frame = ticks * u128::from(fps) / u128::from(PTS_CLOCK_HZ);
        if previous.is_some_and(|(frame_before, offset_before)| {
            frame <= frame_before || keyframe.offset <= offset_before
        }) {
            continue;
        }
        let fps_wide = u128::from(fps);
        let frames = frame % fps_wide;
        let seconds = frame / fps_wide;
        let hours = seconds / 3600;
        if hours > u128::from(MAX_TIMECODE_HOURS) {
            break;
        }
        let minutes = seconds / 60 % 60;
        let seconds = seconds % 60;
        text.push_str(&format!(
            "  [\"{hours:02}:{minutes:02}:{seconds:02}:{frames:02}\", {}],\n",
            keyframe.offset
        ));
        previous = Some((frame, keyframe.offset));
    }
    text.push_str("]\n");
    text
}

/// The frame rate from video PES timestamps: sorted and deduplicated (so B-frame reordering does
/// not matter), the most common step between neighbours (the smaller on a tie) → 90000/step
/// rounded. None with fewer than two distinct timestamps or a rate outside 1..=MAX_FPS.
fn fps_from_pts_samples(samples: &[u64]) -> Option<u32> {
    let mut unwrapper = PtsUnwrapper::new();
    let mut ticks: Vec<i128> = samples
        .iter()
        .map(|&pts| unwrapper.ticks_since_first(pts))
        .collect();
    ticks.sort_unstable();
    ticks.dedup();
    let mut step_counts: BTreeMap<i128, usize> = BTreeMap::new();
    for pair in ticks.windows(2) {
        if let [earlier, later] = pair {
            *step_counts.entry(later - earlier).or_default() += 1;
        }
    }
    let mut best: Option<(i128, usize)> = None;
    for (&step, &count) in &step_counts {
        if best.is_none_or(|(_, best_count)| count > best_count) {
            best = Some((step, count));
        }
    }
    let (step, _) = best?;
    let clock = i128::from(PTS_CLOCK_HZ);
    let fps = (clock + step / 2) / step;
    u32::try_from(fps)
        .ok()
        .filter(|fps| (1..=MAX_FPS).contains(fps))
}

/// Guesses the frame rate from the video PES PTS steps (see `fps_from_pts_samples`), looking
/// at the first MAX_FPS_SAMPLES video PES; None if there is no video or too little of it.
#[cfg(test)]
pub fn detect_fps(bytes: &[u8]) -> Option<u32> {
    let mut indexer = TsIndexer::sampling_pts(0);
    for chunk in bytes.chunks(FPS_SCAN_CHUNK_BYTES) {
        indexer.feed(chunk);
        if indexer.pts_samples().len() >= crate::tsindex::MAX_FPS_SAMPLES {
            break;
        }
    }
    indexer.finish();
    fps_from_pts_samples(indexer.pts_samples())
}

/// `--fps N` as the command line gives it: a whole number in `1..=MAX_FPS` (clap's value parser).
pub fn parse_fps_argument(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(fps) if (1..=MAX_FPS).contains(&fps) => Ok(fps),
        _ => Err(format!("must be a whole number from 1 to {MAX_FPS}")),
    }
}

/// `vcache index FILE [--fps N]` (the command line is parsed in `main`). Reads the file in chunks
/// through a `TsIndexer` and returns the `points_toml` text; without `fps` the frame rate is
/// detected. Errors start with "vcache index:" and name the file.
pub fn run(path: &Path, fps: Option<u32>) -> Result<String, String> {
    let name = path.display();
    let mut file =
        File::open(path).map_err(|e| format!("vcache index: cannot open {name}: {e}"))?;
    let mut indexer = TsIndexer::sampling_pts(0);
    let mut keyframes = Vec::new();
    let mut buffer = vec![0u8; INDEX_READ_CHUNK_BYTES];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("vcache index: cannot read {name}: {e}")),
        };
        keyframes.extend(indexer.feed(buffer.get(..read).unwrap_or(&[])));
    }
    keyframes.extend(indexer.finish());

    if indexer.packets_scanned() == 0 {
        return Err(format!(
            "vcache index: {name} is not an MPEG-TS file (no 0x47 sync bytes 188 bytes apart)"
        ));
    }
    if indexer.video_pid().is_none() {
        return Err(format!(
            "vcache index: {name}: no MPEG-1/2/4, H.264 or HEVC video stream found in the PAT/PMT"
        ));
    }
    if keyframes.is_empty() {
        return Err(format!(
            "vcache index: {name}: no keyframes found on video PID {} (no random access \
             indicators, IDR or IRAP pictures with a PTS)",
            indexer.video_pid().unwrap_or_default()
        ));
    }
    let fps = match fps {
        Some(fps) => fps,
        None => fps_from_pts_samples(indexer.pts_samples()).ok_or_else(|| {
            format!("vcache index: {name}: cannot detect the frame rate; pass --fps N")
        })?,
    };
    Ok(points_toml(&keyframes, fps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsindex::test_stream::*;

    #[test]
    fn points_toml_has_the_exact_pasteable_format() {
        let keyframes = [
            Keyframe {
                offset: 376,
                pts: 126_000,
            },
            Keyframe {
                offset: 376_000,
                pts: 126_000 + 2 * PTS_CLOCK_HZ,
            },
        ];
        assert_eq!(
            points_toml(&keyframes, 25),
            "fps = 25\npoints = [\n  [\"00:00:00:00\", 376],\n  [\"00:00:02:00\", 376000],\n]\n"
        );
        assert_eq!(points_toml(&[], 25), "fps = 25\npoints = [\n]\n");
        assert_eq!(points_toml(&keyframes, 0), "fps = 0\npoints = [\n]\n");
    }

    #[test]
    fn points_toml_rounds_frames_down_and_skips_repeated_timecodes() {
        let keyframes = [
            Keyframe { offset: 0, pts: 0 },
            Keyframe {
                offset: 188,
                pts: FRAME_TICKS_25 - 1,
            },
            Keyframe {
                offset: 376,
                pts: FRAME_TICKS_25,
            },
            Keyframe {
                offset: 564,
                pts: 2 * FRAME_TICKS_25 - 1,
            },
            Keyframe {
                offset: 752,
                pts: (3600 + 61) * PTS_CLOCK_HZ + 24 * FRAME_TICKS_25,
            },
        ];
        assert_eq!(
            points_toml(&keyframes, 25),
            "fps = 25\npoints = [\n  [\"00:00:00:00\", 0],\n  [\"00:00:00:01\", 376],\n  \
             [\"01:01:01:24\", 752],\n]\n"
        );
    }

    #[test]
    fn points_toml_skips_backward_pts_and_offsets() {
        let keyframes = [
            Keyframe {
                offset: 1000,
                pts: 10 * PTS_CLOCK_HZ,
            },
            Keyframe {
                offset: 2000,
                pts: 5 * PTS_CLOCK_HZ,
            }, // before the first: negative time
            Keyframe {
                offset: 3000,
                pts: 12 * PTS_CLOCK_HZ,
            },
            Keyframe {
                offset: 2500,
                pts: 14 * PTS_CLOCK_HZ,
            }, // offset going back
            Keyframe {
                offset: 4000,
                pts: 11 * PTS_CLOCK_HZ,
            }, // time going back
            Keyframe {
                offset: 5000,
                pts: 16 * PTS_CLOCK_HZ,
            },
        ];
        assert_eq!(
            points_toml(&keyframes, 1),
            "fps = 1\npoints = [\n  [\"00:00:00:00\", 1000],\n  [\"00:00:02:00\", 3000],\n  \
             [\"00:00:06:00\", 5000],\n]\n"
        );
    }

    #[test]
    fn points_toml_follows_the_pts_wrap() {
        let keyframes = [
            Keyframe {
                offset: 0,
                pts: PTS_MODULUS - PTS_CLOCK_HZ,
            },
            Keyframe {
                offset: 188,
                pts: PTS_CLOCK_HZ,
            },
        ];
        assert_eq!(
            points_toml(&keyframes, 30),
            "fps = 30\npoints = [\n  [\"00:00:00:00\", 0],\n  [\"00:00:02:00\", 188],\n]\n"
        );
    }

    #[test]
    fn points_toml_counts_hours_past_99_and_stops_after_the_maximum() {
        const TEN_HOURS: u64 = 10 * 3600 * PTS_CLOCK_HZ;
        let keyframes: Vec<Keyframe> = (0..=101)
            .map(|i| Keyframe {
                offset: i * 188,
                pts: (i * TEN_HOURS) % PTS_MODULUS,
            })
            .collect();
        let text = points_toml(&keyframes, 25);
        assert!(text.contains("  [\"100:00:00:00\", 1880],\n"));
        assert!(text.contains(&format!("  [\"990:00:00:00\", {}],\n", 99 * 188)));
        assert!(!text.contains("1000:00:00:00"));
        assert_eq!(text.lines().count(), 2 + 100 + 1);
    }

    #[test]
    fn detect_fps_from_pts_steps_with_b_frame_reordering() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        // Decode order I0 P3 B1 B2 P6 B4 B5 ...
        for group in 0..10u64 {
            for index in [0, 3, 1, 2] {
                let pts = 90_000 + (group * 3 + index) * FRAME_TICKS_25;
                writer.frame(pts, index == 0 && group % 4 == 0, &h264_non_idr());
            }
        }
        assert_eq!(detect_fps(&writer.bytes), Some(25));
    }

    #[test]
    fn detect_fps_rounds_ntsc_rates() {
        let rate = |steps: &[u64]| {
            let mut writer = TsWriter::default();
            writer.tables(STREAM_TYPE_H264);
            let mut pts = PTS_MODULUS - 10_000; // across the wrap too
            for i in 0..40 {
                writer.frame(pts % PTS_MODULUS, i == 0, &h264_non_idr());
                pts += steps[i % steps.len()];
            }
            detect_fps(&writer.bytes)
        };
        assert_eq!(rate(&[3003]), Some(30));
        assert_eq!(rate(&[3754, 3754, 3753, 3754]), Some(24));
        assert_eq!(rate(&[1500]), Some(60));
        assert_eq!(rate(&[90_000]), Some(1));
        assert_eq!(rate(&[45]), None); // 2000 fps: above MAX_FPS
    }

    #[test]
    fn detect_fps_needs_two_video_timestamps() {
        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        writer.frame(100, true, &h264_idr());
        assert_eq!(detect_fps(&writer.bytes), None);
        writer.frame(100, false, &h264_non_idr()); // same PTS again
        assert_eq!(detect_fps(&writer.bytes), None);
        assert_eq!(detect_fps(&[]), None);
        assert_eq!(fps_from_pts_samples(&[0, 3600]), Some(25));
    }

    fn temp_file(name: &str, bytes: &[u8]) -> String {
        let path = std::env::temp_dir().join(format!("tsindex-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn run_on(path: &str, fps: Option<u32>) -> Result<String, String> {
        run(Path::new(path), fps)
    }

    #[test]
    fn index_command_prints_points_with_detected_or_given_fps() {
        let (bytes, expected) = h264_stream(12, 126_000);
        let path = temp_file("ok.ts", &bytes);
        let detected = run_on(&path, None).unwrap();
        let want = |fps: u32| points_toml(&expected, fps);
        assert_eq!(detected, want(25));
        assert!(detected.contains(&format!("[\"00:00:00:05\", {}]", expected[1].offset)));
        assert_eq!(run_on(&path, Some(50)).unwrap(), want(50));
        assert_eq!(run_on(&path, Some(30)).unwrap(), want(30));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn fps_argument_is_a_whole_number_in_range() {
        assert_eq!(parse_fps_argument("25"), Ok(25));
        assert_eq!(parse_fps_argument("1000"), Ok(1000));
        for bad in ["0", "1001", "25fps", "-1", ""] {
            let error = parse_fps_argument(bad).unwrap_err();
            assert!(error.contains("from 1 to 1000"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn index_command_errors_name_the_file() {
        let missing = std::env::temp_dir().join("tsindex-no-such-file.ts");
        let missing = missing.to_string_lossy().into_owned();
        let error = run_on(&missing, None).unwrap_err();
        assert!(
            error.contains(&missing) && error.contains("cannot open"),
            "{error}"
        );

        let not_ts = temp_file("text.ts", b"hello, this is not a transport stream\n");
        let error = run_on(&not_ts, None).unwrap_err();
        assert!(
            error.contains(&not_ts) && error.contains("not an MPEG-TS"),
            "{error}"
        );

        let mut writer = TsWriter::default();
        writer.psi(0, &pat_section(&[(1, PMT_PID)]));
        writer.psi(PMT_PID, &pmt_section(&[(STREAM_TYPE_AAC, AUDIO_PID)], &[]));
        let audio = temp_file("audio.ts", &writer.bytes);
        let error = run_on(&audio, None).unwrap_err();
        assert!(
            error.contains(&audio) && error.contains("no MPEG-1/2/4"),
            "{error}"
        );

        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        writer.frame(0, false, &h264_non_idr());
        writer.frame(3600, false, &h264_non_idr());
        let no_keys = temp_file("nokeys.ts", &writer.bytes);
        let error = run_on(&no_keys, None).unwrap_err();
        assert!(
            error.contains(&no_keys) && error.contains("no keyframes"),
            "{error}"
        );

        let mut writer = TsWriter::default();
        writer.tables(STREAM_TYPE_H264);
        writer.frame(0, true, &h264_idr());
        let one_frame = temp_file("oneframe.ts", &writer.bytes);
        let error = run_on(&one_frame, None).unwrap_err();
        assert!(
            error.contains(&one_frame) && error.contains("--fps"),
            "{error}"
        );
        assert!(run_on(&one_frame, Some(25)).is_ok());

        for path in [not_ts, audio, no_keys, one_frame] {
            std::fs::remove_file(path).unwrap();
        }
    }
}
