//! Calendar dates of Unix times (proleptic Gregorian, UTC), as the formats write them: RFC 2822
//! for apt's Release and Debian changelogs, `YYYY-MM-DD` for messages. Civil-from-days and its
//! inverse follow H. Hinnant's published algorithms.

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 → (year, month 1–12, day 1–31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month 1–12, day) → days since 1970-01-01.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 2822 in UTC with the given zone spelling: `Thu, 01 Jan 1970 00:00:00 UTC` (apt) or
/// `… +0000` (Debian changelogs).
pub fn rfc2822(secs: u64, zone: &str) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} {zone}",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `YYYY-MM-DD` (UTC).
pub fn utc_date(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parse the RFC 2822 dates apt writes (`Fri, 04 Dec 2026 01:18:27 UTC` / `+0100`).
pub fn parse_rfc2822(s: &str) -> Option<i64> {
    let s = s.split_once(", ").map(|x| x.1).unwrap_or(s);
    let mut it = s.split_whitespace();
    let day: u32 = it.next()?.parse().ok()?;
    let mname = it.next()?;
    let mon = MONTHS.iter().position(|m| *m == mname)? as u32 + 1;
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let offset = match it.next() {
        None | Some("UTC") | Some("GMT") | Some("Z") => 0,
        Some(z) if z.len() == 5 && z.is_char_boundary(1) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(year, mon, day) * 86_400 + h * 3600 + m * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc2822(0, "UTC"), "Thu, 01 Jan 1970 00:00:00 UTC");
        assert_eq!(
            rfc2822(1_700_000_000, "UTC"),
            "Tue, 14 Nov 2023 22:13:20 UTC"
        );
        assert_eq!(
            rfc2822(951_782_400, "+0000"),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822(1_735_689_599, "+0000"),
            "Tue, 31 Dec 2024 23:59:59 +0000"
        );
        assert_eq!(
            rfc2822(1_767_225_600, "+0000"),
            "Thu, 01 Jan 2026 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822(4_107_542_399, "UTC"),
            "Sun, 28 Feb 2100 23:59:59 UTC"
        );
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14");
    }

    #[test]
    fn parse_is_the_inverse() {
        for t in [
            0u64,
            951_782_400,
            1_700_000_000,
            1_735_689_599,
            4_107_542_399,
        ] {
            assert_eq!(parse_rfc2822(&rfc2822(t, "UTC")), Some(t as i64));
            assert_eq!(parse_rfc2822(&rfc2822(t, "+0000")), Some(t as i64));
        }
        assert_eq!(
            parse_rfc2822("Tue, 14 Nov 2023 23:13:20 +0100"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc2822("yesterday"), None);
        for d in [-719_468i64, -1, 0, 59, 10_956, 47_541] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
