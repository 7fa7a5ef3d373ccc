//! Seek tables: map an SMPTE-style timecode `HH:MM:SS:FF` to a byte offset of a video.
//! A table is a frame rate plus either a constant byte rate or a sorted list of
//! (frame index, byte offset) points such as keyframes. Pure arithmetic, no I/O.

use std::fmt;

/// Largest hours field a timecode may carry.
pub const MAX_TIMECODE_HOURS: u32 = 999;
/// Largest frame rate a seek table may declare (frames per second).
pub const MAX_FPS: u32 = 1000;
/// Longest timecode text accepted, in bytes; longer input is rejected before parsing.
pub const MAX_TIMECODE_LEN: usize = 32;
/// Minutes and seconds are exactly this many digits.
const MINUTES_SECONDS_DIGITS: usize = 2;
/// Frames have at least this many digits (more when fps > 100).
const MIN_FRAME_DIGITS: usize = 2;

const SECONDS_PER_MINUTE: u64 = 60;
const SECONDS_PER_HOUR: u64 = 3600;

/// A position in a video as hours, minutes, seconds and frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timecode {
    pub hours: u32,
    pub minutes: u32,
    pub seconds: u32,
    pub frames: u32,
}

/// Why a timecode could not be turned into a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeekError {
    /// The text is not `HH:MM:SS:FF` with fields in range; the string says what is wrong.
    MalformedTimecode(String),
    /// The timecode lies before the first point of a points table.
    BeforeFirstPoint,
    /// The offset is at or after the end of the video (`len`). An offset too large
    /// for u64 is reported as `offset: u64::MAX`.
    PastEnd { offset: u64, len: u64 },
}

impl fmt::Display for SeekError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeekError::MalformedTimecode(why) => write!(f, "malformed timecode: {why}"),
            SeekError::BeforeFirstPoint => {
                write!(f, "timecode is before the first point of the seek table")
            }
            SeekError::PastEnd { offset, len } => write!(
                f,
                "timecode maps to byte offset {offset}, past the end of the video ({len} bytes)"
            ),
        }
    }
}

impl std::error::Error for SeekError {}

fn malformed(why: impl Into<String>) -> SeekError {
    SeekError::MalformedTimecode(why.into())
}

/// Parses an all-ASCII-digit field with checked arithmetic. No signs, no spaces.
fn parse_digits(field: &str, name: &str) -> Result<u32, SeekError> {
    if field.is_empty() {
        return Err(malformed(format!("{name} is empty")));
    }
    let mut value: u32 = 0;
    for byte in field.bytes() {
        if !byte.is_ascii_digit() {
            return Err(malformed(format!(
                "{name} `{field}` is not a decimal number"
            )));
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(byte - b'0')))
            .ok_or_else(|| malformed(format!("{name} `{field}` is too large")))?;
    }
    Ok(value)
}

fn check_fps(fps: u32) -> Result<(), SeekError> {
    if fps == 0 || fps > MAX_FPS {
        return Err(malformed(format!("fps {fps} is outside 1..={MAX_FPS}")));
    }
    Ok(())
}

impl Timecode {
    /// Parses `HH:MM:SS:FF`: hours 1+ digits up to [`MAX_TIMECODE_HOURS`], minutes and
    /// seconds exactly two digits below 60, frames two or more digits below `fps`.
    pub fn parse(s: &str, fps: u32) -> Result<Timecode, SeekError> {
        check_fps(fps)?;
        if s.len() > MAX_TIMECODE_LEN {
            return Err(malformed(format!("longer than {MAX_TIMECODE_LEN} bytes")));
        }
        let fields: Vec<&str> = s.split(':').collect();
        let [hours, minutes, seconds, frames] = fields.as_slice() else {
            return Err(malformed(format!(
                "`{s}` has {} field(s), expected HH:MM:SS:FF",
                fields.len()
            )));
        };
        let hours = parse_digits(hours, "hours")?;
        if hours > MAX_TIMECODE_HOURS {
            return Err(malformed(format!(
                "hours {hours} is above {MAX_TIMECODE_HOURS}"
            )));
        }
        let mut minutes_seconds = [0u32; 2];
        for (slot, (field, name)) in minutes_seconds
            .iter_mut()
            .zip([(minutes, "minutes"), (seconds, "seconds")])
        {
            if field.len() != MINUTES_SECONDS_DIGITS {
                return Err(malformed(format!(
                    "{name} `{field}` must be exactly {MINUTES_SECONDS_DIGITS} digits"
                )));
            }
            let value = parse_digits(field, name)?;
            if value > 59 {
                return Err(malformed(format!("{name} {value} is above 59")));
            }
            *slot = value;
        }
        if frames.len() < MIN_FRAME_DIGITS {
            return Err(malformed(format!(
                "frames `{frames}` must have at least {MIN_FRAME_DIGITS} digits"
            )));
        }
        let frames = parse_digits(frames, "frames")?;
        if frames >= fps {
            return Err(malformed(format!(
                "frames {frames} must be below the frame rate {fps}"
            )));
        }
        let [minutes, seconds] = minutes_seconds;
        Ok(Timecode {
            hours,
            minutes,
            seconds,
            frames,
        })
    }

    /// Total frames from `00:00:00:00`. Saturates at u64::MAX for field values that
    /// `parse` never produces (it cannot overflow for parsed timecodes).
    pub fn frame_index(&self, fps: u32) -> u64 {
        let whole_seconds = u64::from(self.hours)
            .saturating_mul(SECONDS_PER_HOUR)
            .saturating_add(u64::from(self.minutes).saturating_mul(SECONDS_PER_MINUTE))
            .saturating_add(u64::from(self.seconds));
        whole_seconds
            .saturating_mul(u64::from(fps))
            .saturating_add(u64::from(self.frames))
    }

    /// The timecode of a frame index. An `fps` of 0 is treated as 1; hours beyond
    /// u32 saturate (unreachable for frame indexes of parsed timecodes).
    pub fn from_frame_index(frames: u64, fps: u32) -> Timecode {
        let fps = u64::from(fps.max(1));
        let whole_seconds = frames / fps;
        let hours = whole_seconds / SECONDS_PER_HOUR;
        let remainder = whole_seconds % SECONDS_PER_HOUR;
        // Each of these is below 60, 60 and fps ≤ u32::MAX respectively, so they fit u32.
        Timecode {
            hours: u32::try_from(hours).unwrap_or(u32::MAX),
            minutes: u32::try_from(remainder / SECONDS_PER_MINUTE).unwrap_or(u32::MAX),
            seconds: u32::try_from(remainder % SECONDS_PER_MINUTE).unwrap_or(u32::MAX),
            frames: u32::try_from(frames % fps).unwrap_or(u32::MAX),
        }
    }

    /// Checks that the fields are in the ranges `parse` enforces, for timecodes built by hand.
    fn check_fields(&self, fps: u32) -> Result<(), SeekError> {
        check_fps(fps)?;
        if self.hours > MAX_TIMECODE_HOURS
            || self.minutes > 59
            || self.seconds > 59
            || self.frames >= fps
        {
            return Err(malformed(format!("{self} is out of range at {fps} fps")));
        }
        Ok(())
    }
}

impl fmt::Display for Timecode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}:{:02}:{:02}",
            self.hours, self.minutes, self.seconds, self.frames
        )
    }
}

/// How frame indexes map to byte offsets.
#[derive(Debug, Clone, PartialEq)]
pub enum SeekMap {
    /// Constant bytes per second of video.
    ByteRate(u64),
    /// (frame index, byte offset) pairs, strictly increasing in both columns.
    Points(Vec<(u64, u64)>),
}

/// A video's seek table: its frame rate and its map.
#[derive(Debug, Clone, PartialEq)]
pub struct SeekTable {
    pub fps: u32,
    pub map: SeekMap,
}

impl SeekTable {
    /// byte_rate: offset = floor(frame_index × byte_rate / fps), exact in u128.
    /// points: offset of the last point at or before the frame index
    /// (BeforeFirstPoint if the first point is after it, or there are none).
    /// If `len` is Some and the offset >= len → PastEnd. An offset beyond u64
    /// is PastEnd { offset: u64::MAX, len: len or u64::MAX }.
    pub fn offset_of(&self, tc: &Timecode, len: Option<u64>) -> Result<u64, SeekError> {
        tc.check_fields(self.fps)?;
        let frame_index = tc.frame_index(self.fps);
        let offset = match &self.map {
            SeekMap::ByteRate(byte_rate) => {
                let exact =
                    u128::from(frame_index) * u128::from(*byte_rate) / u128::from(self.fps.max(1));
                u64::try_from(exact).map_err(|_| SeekError::PastEnd {
                    offset: u64::MAX,
                    len: len.unwrap_or(u64::MAX),
                })?
            }
            SeekMap::Points(points) => {
                let after = points.partition_point(|&(frame, _)| frame <= frame_index);
                let last_at_or_before = after.checked_sub(1).and_then(|i| points.get(i));
                match last_at_or_before {
                    Some(&(_, offset)) => offset,
                    None => return Err(SeekError::BeforeFirstPoint),
                }
            }
        };
        match len {
            Some(len) if offset >= len => Err(SeekError::PastEnd { offset, len }),
            _ => Ok(offset),
        }
    }

    /// Convenience: parse `s` at this table's fps, then `offset_of`.
    pub fn offset_of_str(&self, s: &str, len: Option<u64>) -> Result<u64, SeekError> {
        let tc = Timecode::parse(s, self.fps)?;
        self.offset_of(&tc, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(hours: u32, minutes: u32, seconds: u32, frames: u32) -> Timecode {
        Timecode {
            hours,
            minutes,
            seconds,
            frames,
        }
    }

    fn assert_malformed(s: &str, fps: u32) {
        match Timecode::parse(s, fps) {
            Err(SeekError::MalformedTimecode(_)) => {}
            other => panic!("{s:?} at {fps} fps: expected MalformedTimecode, got {other:?}"),
        }
    }

    #[test]
    fn parses_well_formed_timecodes() {
        assert_eq!(Timecode::parse("00:00:00:00", 25).unwrap(), tc(0, 0, 0, 0));
        assert_eq!(Timecode::parse("01:02:03:04", 25).unwrap(), tc(1, 2, 3, 4));
        assert_eq!(Timecode::parse("1:02:03:04", 25).unwrap(), tc(1, 2, 3, 4));
        assert_eq!(
            Timecode::parse("999:59:59:24", 25).unwrap(),
            tc(999, 59, 59, 24)
        );
        assert_eq!(
            Timecode::parse("00:00:00:119", 120).unwrap(),
            tc(0, 0, 0, 119)
        );
        assert_eq!(
            Timecode::parse("00:00:00:024", 25).unwrap(),
            tc(0, 0, 0, 24)
        );
    }

    #[test]
    fn frame_equal_to_fps_minus_one_is_the_last_valid_frame() {
        assert_eq!(Timecode::parse("00:00:00:24", 25).unwrap().frames, 24);
        assert_malformed("00:00:00:25", 25);
        assert_eq!(Timecode::parse("00:00:00:00", 1).unwrap().frames, 0);
        assert_malformed("00:00:00:01", 1);
        assert_eq!(
            Timecode::parse("00:00:00:999", MAX_FPS).unwrap().frames,
            999
        );
    }

    #[test]
    fn rejects_every_malformed_form() {
        for bad in [
            "",
            "1:2:3",
            "00:00:00",
            "00:00:00:00:00",
            "00:60:00:00",
            "00:00:60:00",
            "00:00:00:25",
            "aa:00:00:00",
            "00:aa:00:00",
            "00:00:aa:00",
            "00:00:00:aa",
            "0x1:00:00:00",
            "+1:00:00:00",
            "-1:00:00:00",
            "00:+1:00:00",
            "00:00:00:+1",
            " 00:00:00:00",
            "00:00:00:00 ",
            "00: 00:00:00",
            "00:00:00:00\n",
            ":00:00:00",
            "00::00:00",
            "00:00:00:",
            "00:0:00:00",
            "00:000:00:00",
            "00:00:0:00",
            "00:00:00:0",
            "1000:00:00:00",
            "4294967296:00:00:00",
            "99999999999999999999:00:00:00",
            "00:00:00:4294967296",
            "00:00:00:000000000000000000000000000001",
            "０0:00:00:00",
            "00.00.00.00",
            "00;00;00;00",
        ] {
            assert_malformed(bad, 25);
        }
    }

    #[test]
    fn rejects_fps_out_of_range() {
        assert_malformed("00:00:00:00", 0);
        assert_malformed("00:00:00:00", MAX_FPS + 1);
    }

    #[test]
    fn frame_index_and_back() {
        assert_eq!(tc(0, 0, 0, 0).frame_index(25), 0);
        assert_eq!(tc(0, 0, 1, 0).frame_index(25), 25);
        assert_eq!(tc(1, 2, 3, 4).frame_index(25), (3600 + 120 + 3) * 25 + 4);
        let max = tc(MAX_TIMECODE_HOURS, 59, 59, MAX_FPS - 1);
        let index = max.frame_index(MAX_FPS);
        assert_eq!(index, (999 * 3600 + 59 * 60 + 59) * 1000 + 999);
        assert_eq!(Timecode::from_frame_index(index, MAX_FPS), max);
        for (index, fps) in [(0, 25), (24, 25), (25, 25), (90_061, 30), (1, 1)] {
            assert_eq!(
                Timecode::from_frame_index(index, fps).frame_index(fps),
                index
            );
        }
        assert_eq!(Timecode::from_frame_index(7, 0), tc(0, 0, 7, 0));
        assert_eq!(
            tc(u32::MAX, u32::MAX, u32::MAX, u32::MAX).frame_index(u32::MAX),
            u64::MAX
        );
    }

    #[test]
    fn displays_zero_padded() {
        assert_eq!(tc(0, 0, 0, 0).to_string(), "00:00:00:00");
        assert_eq!(tc(1, 2, 3, 4).to_string(), "01:02:03:04");
        assert_eq!(tc(123, 2, 3, 104).to_string(), "123:02:03:104");
        let parsed = Timecode::parse("7:08:09:10", 25).unwrap();
        assert_eq!(parsed.to_string(), "07:08:09:10");
    }

    fn points_table() -> SeekTable {
        SeekTable {
            fps: 25,
            map: SeekMap::Points(vec![(25, 1000), (250, 2_400_000), (500, 5_000_000)]),
        }
    }

    #[test]
    fn points_pick_the_last_point_at_or_before() {
        let table = points_table();
        assert_eq!(
            table.offset_of_str("00:00:00:24", None),
            Err(SeekError::BeforeFirstPoint)
        );
        assert_eq!(table.offset_of_str("00:00:01:00", None), Ok(1000));
        assert_eq!(table.offset_of_str("00:00:01:01", None), Ok(1000));
        assert_eq!(table.offset_of_str("00:00:09:24", None), Ok(1000));
        assert_eq!(table.offset_of_str("00:00:10:00", None), Ok(2_400_000));
        assert_eq!(table.offset_of_str("00:00:19:24", None), Ok(2_400_000));
        assert_eq!(table.offset_of_str("00:00:20:00", None), Ok(5_000_000));
        assert_eq!(table.offset_of_str("999:00:00:00", None), Ok(5_000_000));
    }

    #[test]
    fn points_without_any_point_is_before_first() {
        let table = SeekTable {
            fps: 25,
            map: SeekMap::Points(Vec::new()),
        };
        assert_eq!(
            table.offset_of_str("00:00:00:00", None),
            Err(SeekError::BeforeFirstPoint)
        );
    }

    #[test]
    fn past_end_when_offset_reaches_len() {
        let table = points_table();
        assert_eq!(
            table.offset_of_str("00:00:20:00", Some(5_000_001)),
            Ok(5_000_000)
        );
        assert_eq!(
            table.offset_of_str("00:00:20:00", Some(5_000_000)),
            Err(SeekError::PastEnd {
                offset: 5_000_000,
                len: 5_000_000
            })
        );
        let rate = SeekTable {
            fps: 25,
            map: SeekMap::ByteRate(100),
        };
        assert_eq!(
            rate.offset_of_str("00:00:00:00", Some(0)),
            Err(SeekError::PastEnd { offset: 0, len: 0 })
        );
    }

    #[test]
    fn byte_rate_is_exact_integer_arithmetic() {
        let table = SeekTable {
            fps: 30,
            map: SeekMap::ByteRate(1_000_000),
        };
        assert_eq!(table.offset_of_str("00:00:00:00", None), Ok(0));
        assert_eq!(table.offset_of_str("00:00:01:00", None), Ok(1_000_000));
        // 1 frame at 30 fps = 33333.33… bytes → floor.
        assert_eq!(table.offset_of_str("00:00:00:01", None), Ok(33_333));
        assert_eq!(table.offset_of_str("00:00:00:02", None), Ok(66_666));
        assert_eq!(
            table.offset_of_str("01:00:00:15", None),
            Ok(3600 * 1_000_000 + 500_000)
        );
    }

    #[test]
    fn byte_rate_with_large_numbers() {
        // Largest frame index × a byte rate that overflows u64 in the product but not the result.
        let byte_rate = 5_000_000_000_000u64;
        let table = SeekTable {
            fps: MAX_FPS,
            map: SeekMap::ByteRate(byte_rate),
        };
        let frames = (999u128 * 3600 + 59 * 60 + 59) * 1000 + 999;
        let expected = u64::try_from(frames * u128::from(byte_rate) / 1000).unwrap();
        assert_eq!(table.offset_of_str("999:59:59:999", None), Ok(expected));
        // A result beyond u64 is PastEnd, not a wrap or a panic.
        let huge = SeekTable {
            fps: 1,
            map: SeekMap::ByteRate(u64::MAX),
        };
        assert_eq!(
            huge.offset_of_str("00:00:02:00", None),
            Err(SeekError::PastEnd {
                offset: u64::MAX,
                len: u64::MAX
            })
        );
        assert_eq!(
            huge.offset_of_str("00:00:02:00", Some(10)),
            Err(SeekError::PastEnd {
                offset: u64::MAX,
                len: 10
            })
        );
        assert_eq!(huge.offset_of_str("00:00:01:00", None), Ok(u64::MAX));
    }

    #[test]
    fn offset_of_rejects_hand_built_out_of_range_timecodes() {
        let table = points_table();
        for bad in [
            tc(0, 0, 0, 25),
            tc(0, 60, 0, 0),
            tc(0, 0, 60, 0),
            tc(1000, 0, 0, 0),
        ] {
            assert!(matches!(
                table.offset_of(&bad, None),
                Err(SeekError::MalformedTimecode(_))
            ));
        }
        let no_fps = SeekTable {
            fps: 0,
            map: SeekMap::ByteRate(1),
        };
        assert!(matches!(
            no_fps.offset_of(&tc(0, 0, 0, 0), None),
            Err(SeekError::MalformedTimecode(_))
        ));
    }

    #[test]
    fn errors_display_what_went_wrong() {
        let err = Timecode::parse("00:61:00:00", 25).unwrap_err();
        assert!(err.to_string().contains("minutes 61"), "{err}");
        let past = SeekError::PastEnd { offset: 9, len: 5 };
        assert!(past.to_string().contains('9') && past.to_string().contains('5'));
    }
}
