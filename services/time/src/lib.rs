//! UTC calendar dates from milliseconds since the epoch and back: what the audit timeline and the
//! endpoint's seed-style log lines print. Always UTC, so the output never depends on the
//! machine's time zone.
#![forbid(unsafe_code)]

/// `2026-11-23 16:40:01.123` (UTC), with `frac_sep` between seconds and milliseconds (`.` for
/// the audit, `,` for the seed's log lines).
pub fn format_utc(ms: i64, frac_sep: char) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac_sep}{milli:03}")
}

/// Parses `2026-11-23`, `2026-11-23T16:40:00Z` (or with a space, optional `.mmm`, optional `Z`,
/// always UTC) or milliseconds since the epoch.
pub fn parse_utc(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00:00"));
    let mut dp = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (dp.next()??, dp.next()??, dp.next()??);
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut tp = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi) = (tp.next()??, tp.next()??);
    let sec = tp.next().unwrap_or(Some(0))?;
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let milli = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
    Some(days_from_civil(y, m, d) * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + milli)
}

/// Milliseconds since the epoch now, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The same time of day `months` calendar months later (UTC), on the same day of the month or,
/// when that month is shorter, on its last day (31 October + 4 months = 28 or 29 February).
pub fn add_months(ms: i64, months: u32) -> i64 {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + i64::from(months);
    let (y2, m2) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let last =
        days_from_civil(y2 + i64::from(m2 == 12), m2 % 12 + 1, 1) - days_from_civil(y2, m2, 1);
    days_from_civil(y2, m2, d.min(last)) * 86_400_000 + rem
}

/// Howard Hinnant's algorithm: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc() {
        assert_eq!(format_utc(0, '.'), "1970-01-01 00:00:00.000");
        assert_eq!(format_utc(1_583_525_241_985, ','), "2020-03-06 20:07:21,985");
        let t = parse_utc("2026-11-23T16:40:01.5Z").unwrap();
        assert_eq!(format_utc(t, '.'), "2026-11-23 16:40:01.500");
        assert_eq!(parse_utc("2026-11-23"), parse_utc("2026-11-23 00:00:00"));
        assert_eq!(
            parse_utc("2024-02-29").map(|t| format_utc(t, '.')).as_deref(),
            Some("2024-02-29 00:00:00.000")
        );
        assert_eq!(parse_utc("1700000000000"), Some(1_700_000_000_000));
        for bad in ["", "2026-13-01", "2026-11-23T25:00", "yesterday", "2026-11"] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn adds_calendar_months_clamping_to_the_month_end() {
        let plus = |date: &str, n| format_utc(add_months(parse_utc(date).unwrap(), n), '.');
        assert_eq!(plus("2026-12-02T10:30:00Z", 4), "2027-04-02 10:30:00.000");
        assert_eq!(plus("2026-10-31", 4), "2027-02-28 00:00:00.000");
        assert_eq!(plus("2027-10-31", 4), "2028-02-29 00:00:00.000");
        assert_eq!(plus("2026-08-31", 4), "2026-12-31 00:00:00.000");
        assert_eq!(plus("2026-01-15", 0), "2026-01-15 00:00:00.000");
    }
}
