//! Wall-clock time as unix milliseconds, and its two text forms on the wire:
//! RFC 3339 (JSON bodies) and IMF-fixdate (`Last-Modified`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch; every stored timestamp uses this.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
    let mut put = |at: usize, width: usize, mut value: i64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, i64::from(m));
    put(8, 2, i64::from(d));
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, millis);
    out.write_str(std::str::from_utf8(&text).expect("digits are ASCII"))
}

/// `Thu, 26 Nov 2026 13:15:08 GMT`, for HTTP date headers (its `Display`
/// writes that text).
pub fn http_date(ms: i64) -> httpdate::HttpDate {
    httpdate::HttpDate::from(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
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

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_698_908_123), "2026-11-26T13:15:08.123Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            http_date(1_795_698_908_123).to_string(),
            "Thu, 26 Nov 2026 13:15:08 GMT"
        );
    }
}
