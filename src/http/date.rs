//! HTTP-date (RFC 9110 §5.6.7) without any crate: formatting as IMF-fixdate, parsing the three
//! formats recipients must accept (IMF-fixdate, RFC 850, asctime), and a per-second cache of
//! the current date for response heads. Calendar arithmetic is proleptic Gregorian, UTC.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: i64 = 86_400;
const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const LONG_DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// RFC 9110: an rfc850-date more than this many years in the future means the previous century.
const RFC850_FUTURE_YEARS: i64 = 50;

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31). Howard Hinnant's civil_from_days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month 1..=12, day 1..=31) → days since 1970-01-01. Howard Hinnant's days_from_civil.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Whole seconds relative to the epoch (negative before it), truncated toward the past.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            // 1.5 s before the epoch is in second -2.
            let partial = i64::from(before.subsec_nanos() > 0);
            whole.saturating_add(partial).saturating_neg()
        }
    }
}

/// `t` truncated to whole seconds (HTTP-dates have second precision).
pub fn truncate_to_second(t: SystemTime) -> SystemTime {
    system_time_from_seconds(unix_seconds(t)).unwrap_or(t)
}

fn system_time_from_seconds(seconds: i64) -> Option<SystemTime> {
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(seconds.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))
    }
}

/// "Jan" for month 1 … "Dec" for 12.
fn month_name(month: u32) -> &'static str {
    MONTH_NAMES
        .get((month as usize).saturating_sub(1))
        .copied()
        .unwrap_or("Jan")
}

/// "2023-11-14T22:13:20.123Z": ISO 8601 / RFC 3339 in UTC with milliseconds (HLS
/// `#EXT-X-PROGRAM-DATE-TIME`), from milliseconds since the epoch.
pub fn format_iso8601_ms(unix_ms: u64) -> String {
    let seconds = (unix_ms / 1000) as i64;
    let millis = unix_ms % 1000;
    let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

thread_local! {
    /// (unix second, its formatted date) of the last `format_http_date` call on this thread: a video's
    /// Last-Modified is the same on every response, so it is formatted once, not per request.
    static CACHED_DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate). Sub-second parts are dropped.
pub fn format_http_date(t: SystemTime) -> String {
    let second = unix_seconds(t);
    CACHED_DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, format_date_uncached(second));
        }
        cached.1.clone()
    })
}

fn format_date_uncached(seconds: i64) -> String {
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 4).
    let weekday = (days + 4).rem_euclid(7) as usize;
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAY_NAMES.get(weekday).copied().unwrap_or("Sun"),
        day,
        month_name(month),
        year,
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// "14/Nov/2023:22:13:20.123 +0000": nginx's `$time_local` in UTC, with milliseconds (access logs).
pub fn format_log_time(t: SystemTime) -> String {
    let seconds = unix_seconds(t);
    let millis = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02}.{millis:03} +0000",
        day,
        month_name(month),
        year,
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

thread_local! {
    /// (unix second, its formatted date) of the last `with_http_date_now` call on this thread.
    static CACHED_NOW: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// Call `f` with the current time as an HTTP-date (formatted at most once per second per thread,
/// and not copied).
pub fn with_http_date_now<T>(f: impl FnOnce(&str) -> T) -> T {
    let second = unix_seconds(SystemTime::now());
    CACHED_NOW.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, format_date_uncached(second));
        }
        f(&cached.1)
    })
}

/// Parse an HTTP-date in any of the three formats (IMF-fixdate, RFC 850, asctime).
/// None when it is not a valid date. A leap second (:60) is read as :59.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim_matches([' ', '\t']);
    let (year, month, day, hms) = parse_imf_fixdate(s)
        .or_else(|| parse_rfc850(s))
        .or_else(|| parse_asctime(s))?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (hour, minute, second) = hms;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let second = second.min(59);
    let days = days_from_civil(year, month, day);
    let seconds = days
        .checked_mul(SECONDS_PER_DAY)?
        .checked_add(i64::from(hour * 3600 + minute * 60 + second))?;
    system_time_from_seconds(seconds)
}

type DateParts = (i64, u32, u32, (u32, u32, u32));

/// "Sun, 06 Nov 1994 08:49:37 GMT"
fn parse_imf_fixdate(s: &str) -> Option<DateParts> {
    let (day_name, rest) = s.split_once(", ")?;
    check_day_name(day_name, &DAY_NAMES)?;
    let mut fields = rest.split(' ');
    let day = fixed_digits(fields.next()?, 2)?;
    let month = month_number(fields.next()?)?;
    let year = fixed_digits(fields.next()?, 4)?;
    let hms = parse_time_of_day(fields.next()?)?;
    if fields.next()? != "GMT" || fields.next().is_some() {
        return None;
    }
    Some((i64::from(year), month, day, hms))
}

/// "Sunday, 06-Nov-94 08:49:37 GMT"
fn parse_rfc850(s: &str) -> Option<DateParts> {
    let (day_name, rest) = s.split_once(", ")?;
    check_day_name(day_name, &LONG_DAY_NAMES)?;
    let mut fields = rest.split(' ');
    let mut date = fields.next()?.split('-');
    let day = fixed_digits(date.next()?, 2)?;
    let month = month_number(date.next()?)?;
    let two_digit_year = fixed_digits(date.next()?, 2)?;
    if date.next().is_some() {
        return None;
    }
    let hms = parse_time_of_day(fields.next()?)?;
    if fields.next()? != "GMT" || fields.next().is_some() {
        return None;
    }
    Some((expand_two_digit_year(two_digit_year), month, day, hms))
}

/// The most recent year ending in `yy` that is not more than 50 years in the future.
fn expand_two_digit_year(yy: u32) -> i64 {
    let now_days = unix_seconds(SystemTime::now()).div_euclid(SECONDS_PER_DAY);
    let (now_year, _, _) = civil_from_days(now_days);
    let mut year = now_year - now_year.rem_euclid(100) + i64::from(yy);
    if year > now_year + RFC850_FUTURE_YEARS {
        year -= 100;
    } else if year <= now_year + RFC850_FUTURE_YEARS - 100 {
        year += 100;
    }
    year
}

/// "Sun Nov  6 08:49:37 1994" (day space-padded to two characters)
fn parse_asctime(s: &str) -> Option<DateParts> {
    let day_name = s.get(0..3)?;
    check_day_name(day_name, &DAY_NAMES)?;
    let rest = s.get(3..)?.strip_prefix(' ')?;
    let month = month_number(rest.get(0..3)?)?;
    let rest = rest.get(3..)?.strip_prefix(' ')?;
    let day_field = rest.get(0..2)?;
    let day = match day_field.strip_prefix(' ') {
        Some(single) => fixed_digits(single, 1)?,
        None => fixed_digits(day_field, 2)?,
    };
    let rest = rest.get(2..)?.strip_prefix(' ')?;
    let mut fields = rest.split(' ');
    let hms = parse_time_of_day(fields.next()?)?;
    let year = fixed_digits(fields.next()?, 4)?;
    if fields.next().is_some() {
        return None;
    }
    Some((i64::from(year), month, day, hms))
}

fn check_day_name(name: &str, names: &[&str]) -> Option<()> {
    names.contains(&name).then_some(())
}

fn month_number(name: &str) -> Option<u32> {
    let index = MONTH_NAMES.iter().position(|m| *m == name)?;
    u32::try_from(index + 1).ok()
}

/// Exactly `width` ASCII digits.
fn fixed_digits(s: &str, width: usize) -> Option<u32> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// "HH:MM:SS" with two digits each (ranges are checked by the caller).
fn parse_time_of_day(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s.split(':');
    let hour = fixed_digits(parts.next()?, 2)?;
    let minute = fixed_digits(parts.next()?, 2)?;
    let second = fixed_digits(parts.next()?, 2)?;
    if parts.next().is_some() {
        return None;
    }
    Some((hour, minute, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_with_millis() {
        assert_eq!(format_iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_iso8601_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    const RFC_EXAMPLE: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn formats_known_dates() {
        assert_eq!(
            format_http_date(at(RFC_EXAMPLE)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            format_http_date(UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            format_http_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            format_http_date(at(4_102_444_799)),
            "Thu, 31 Dec 2099 23:59:59 GMT"
        );
        assert_eq!(
            format_http_date(at(RFC_EXAMPLE) + Duration::from_millis(999)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            format_http_date(UNIX_EPOCH - Duration::from_millis(500)),
            "Wed, 31 Dec 1969 23:59:59 GMT"
        );
    }

    #[test]
    fn parses_the_three_formats() {
        let expected = Some(at(RFC_EXAMPLE));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
        assert_eq!(
            parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT "),
            expected
        );
        assert_eq!(
            parse_http_date("Thu Nov 24 08:49:37 1994"),
            Some(at(RFC_EXAMPLE + 18 * 86_400))
        );
    }

    #[test]
    fn round_trips() {
        let mut t = 0u64;
        while t < 5_000_000_000 {
            let time = at(t);
            assert_eq!(parse_http_date(&format_http_date(time)), Some(time), "{t}");
            t += 7_777_777;
        }
        for t in [
            0,
            59,
            86_399,
            86_400,
            951_868_799,
            951_868_800,
            253_402_300_799,
        ] {
            assert_eq!(
                parse_http_date(&format_http_date(at(t))),
                Some(at(t)),
                "{t}"
            );
        }
    }

    #[test]
    fn rfc850_two_digit_years() {
        let year_of = |s: &str| {
            let t = parse_http_date(s).unwrap();
            format_http_date(t)[12..16].to_string()
        };
        assert_eq!(year_of("Sunday, 06-Nov-94 08:49:37 GMT"), "1994");
        assert_eq!(year_of("Saturday, 01-Jan-00 00:00:00 GMT"), "2000");
        // Up to 50 years ahead stays in the future; further means the previous century.
        let this_year: i64 = format_http_date(SystemTime::now())[12..16].parse().unwrap();
        let ahead = |years: i64| {
            format!(
                "Monday, 01-Jan-{:02} 00:00:00 GMT",
                (this_year + years) % 100
            )
        };
        assert_eq!(year_of(&ahead(1)), (this_year + 1).to_string());
        assert_eq!(year_of(&ahead(50)), (this_year + 50).to_string());
        assert_eq!(year_of(&ahead(51)), (this_year + 51 - 100).to_string());
        assert_eq!(year_of(&ahead(0)), this_year.to_string());
    }

    #[test]
    fn rejects_invalid_dates() {
        for s in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 GMT x",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 32 Jan 1994 08:49:37 GMT",
            "Sun, 00 Jan 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 30 Feb 2000 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-94-1 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov 06 08:49:37 1994 GMT",
            "Sun Nov  6 08:49:37",
            "Sun",
            "é",
            "Sun, 06 Nov 1994 08:49:37 GMTé",
        ] {
            assert_eq!(parse_http_date(s), None, "{s:?}");
        }
        // asctime with a two-digit day is fine.
        assert_eq!(
            parse_http_date("Sun Nov 06 08:49:37 1994"),
            Some(at(RFC_EXAMPLE))
        );
    }

    #[test]
    fn leap_second_reads_as_59() {
        assert_eq!(
            parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT"),
            parse_http_date("Sat, 31 Dec 2016 23:59:59 GMT")
        );
    }

    #[test]
    fn dates_before_the_epoch() {
        let t = parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT").unwrap();
        assert_eq!(t, UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(format_http_date(t), "Wed, 31 Dec 1969 23:59:59 GMT");
    }

    #[test]
    fn truncation_to_seconds() {
        let t = at(100) + Duration::from_millis(750);
        assert_eq!(truncate_to_second(t), at(100));
        assert_eq!(truncate_to_second(at(100)), at(100));
        let before = UNIX_EPOCH - Duration::from_millis(250);
        assert_eq!(
            truncate_to_second(before),
            UNIX_EPOCH - Duration::from_secs(1)
        );
    }

    #[test]
    fn now_is_cached_and_current() {
        let a = with_http_date_now(str::to_string);
        let b = with_http_date_now(str::to_string);
        let parsed = parse_http_date(&b).unwrap();
        let drift = SystemTime::now().duration_since(parsed).unwrap();
        assert!(drift < Duration::from_secs(3));
        assert!(a == b || parse_http_date(&a).unwrap() < parsed);
    }
}
