//! Wall-clock time as unix milliseconds, and its two text forms on the wire:
//! RFC 3339 (JSON bodies and log lines, written by hand without allocating:
//! it is on every audit and access line; read by `time`) and IMF-fixdate
//! (`Last-Modified`, by `httpdate`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch; every stored timestamp uses this.
pub fn now_ms() -> i64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    wall.saturating_add(test_clock::skew_ms())
}

/// The name of the test clock's variable: a file holding how many
/// milliseconds to add to the wall clock, which a test raises to move time
/// on (an expiry, a lifetime) without waiting for it.
pub const TEST_CLOCK: &str = "STRONGROOM_TEST_CLOCK";

/// A debug build honours the test clock; a release build never does, so no
/// deployment runs on a fake clock.
#[cfg(debug_assertions)]
mod test_clock {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    /// The file's offset, read at every call (a test build only).
    pub fn skew_ms() -> i64 {
        static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
        let Some(path) =
            FILE.get_or_init(|| std::env::var_os(super::TEST_CLOCK).map(PathBuf::from))
        else {
            return 0;
        };
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[cfg(not(debug_assertions))]
mod test_clock {
    #[inline(always)]
    pub fn skew_ms() -> i64 {
        0
    }
}

/// Says at start whether the test clock is in use, or set and ignored.
pub fn note_test_clock() {
    if std::env::var_os(TEST_CLOCK).is_none() {
        return;
    }
    if cfg!(debug_assertions) {
        tracing::warn!("{TEST_CLOCK} is set: this test build's clock is moved by its file");
    } else {
        tracing::warn!("{TEST_CLOCK} is ignored: a release build runs on the wall clock");
    }
}

/// The instant an RFC 3339 text names, as unix milliseconds (any offset;
/// finer digits are cut off), by `time`.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `2026-11-26T13:15:08.123Z`: RFC 3339, UTC, millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    let _ = write_rfc3339(&mut out, ms); // a String takes every write
    out
}

/// Writes `rfc3339(ms)` to `out`, without allocating (it is on every
/// request's audit and access-log line).
pub fn write_rfc3339(out: &mut impl std::fmt::Write, ms: i64) -> std::fmt::Result {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return write!(
            out,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
    }
    let mut text = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut text, 0, 4, y);
    put_digits(&mut text, 5, 2, i64::from(m));
    put_digits(&mut text, 8, 2, i64::from(d));
    put_digits(&mut text, 11, 2, rem / 3600);
    put_digits(&mut text, 14, 2, rem % 3600 / 60);
    put_digits(&mut text, 17, 2, rem % 60);
    put_digits(&mut text, 20, 3, millis);
    out.write_str(std::str::from_utf8(&text).expect("digits are ASCII"))
}

/// The last instant an IMF-fixdate can show (its year has four digits).
const LAST_HTTP_DATE_MS: i64 = 253_402_300_799_999;

/// `Thu, 26 Nov 2026 13:15:08 GMT` (IMF-fixdate, RFC 9110), for HTTP date
/// headers; instants before 1970 read as its start, and after 9999 as its
/// end (where `httpdate` would panic).
pub fn http_date(ms: i64) -> String {
    let ms = ms.clamp(0, LAST_HTTP_DATE_MS) as u64;
    httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// Writes `value` (non-negative) as `width` decimal digits, zero-padded, at
/// `text[at..]`.
fn put_digits(text: &mut [u8], at: usize, width: usize, mut value: i64) {
    for slot in text[at..at + width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_698_908_123), "2026-11-26T13:15:08.123Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            http_date(1_795_698_908_123),
            "Thu, 26 Nov 2026 13:15:08 GMT"
        );
        assert_eq!(http_date(-5), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn http_dates_match_httpdate_over_the_whole_range() {
        let reference = |ms: i64| {
            httpdate::HttpDate::from(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
        };
        // The last millisecond of every day of 1970..=2104 (so every leap
        // day and weekday), then a spread of instants up to the end of 9999.
        let mut instants: Vec<i64> = (0..49_000).map(|day| day * 86_400_000 - 1).collect();
        instants[0] = 0;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            instants.push((x % 253_402_300_800_000) as i64);
        }
        instants.push(LAST_HTTP_DATE_MS);
        for ms in instants {
            assert_eq!(http_date(ms), reference(ms), "{ms}");
        }
        for ms in [LAST_HTTP_DATE_MS + 1, i64::MAX] {
            assert_eq!(http_date(ms), "Fri, 31 Dec 9999 23:59:59 GMT");
        }
    }
}
