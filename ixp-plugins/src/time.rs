//! Wall-clock times as RFC 3339 text, for log records and analytics events.
//!
//! `humantime` formats years 1970 to 9999 only (it panics before the epoch and fails
//! after 9999); a clock set outside that range must not make a log line or a tracked
//! event panic, so times are clamped into it first.

use std::time::{Duration, SystemTime};

/// The last millisecond `humantime` can format: 9999-12-31T23:59:59.999Z.
const LAST_FORMATTABLE: Duration = Duration::from_millis(253_402_300_800_000 - 1);

/// `at`, moved into the range `humantime` formats: a time before 1970 becomes the
/// epoch, one after 9999 the last millisecond of 9999.
pub(crate) fn clamped(at: SystemTime) -> SystemTime {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST_FORMATTABLE);
    SystemTime::UNIX_EPOCH + since_epoch
}

/// `at` as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`), clamped as by
/// [`clamped`].
pub(crate) fn rfc3339_millis(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(clamped(at)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_outside_what_humantime_formats_are_clamped() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            rfc3339_millis(epoch - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
        let year_10000 = epoch + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339_millis(year_10000), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339_millis(year_10000 + Duration::from_secs(86_400 * 365 * 1000)),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_millis(epoch + Duration::from_millis(1_738_324_800_123)),
            "2025-01-31T12:00:00.123Z"
        );
    }
}
