//! The wall clock, in the units jobs are stored in.

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    now_ms() / 1000
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// A UTC date and time of day, from seconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

impl CivilTime {
    pub fn of(seconds: i64) -> CivilTime {
        let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_index + 2) / 5 + 1;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        };
        CivilTime {
            year: year_of_era + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: second_of_day / 3600,
            minute: second_of_day % 3600 / 60,
            second: second_of_day % 60,
        }
    }
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, e.g.
/// `2026-11-30T02:30:00.123Z`.
pub fn rfc3339_of_ms(ms: i64) -> String {
    let civil = CivilTime::of(ms.div_euclid(1000));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        civil.year,
        civil.month,
        civil.day,
        civil.hour,
        civil.minute,
        civil.second,
        ms.rem_euclid(1000)
    )
}

/// Unix seconds of a UTC RFC 3339 time, GitHub's `2026-11-30T02:30:00Z`
/// (a fraction is ignored; other offsets are not read).
pub fn unix_of_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', 't'])?;
    let time = time.strip_suffix(['Z', 'z'])?;
    let time = time.split_once('.').map_or(time, |(whole, _)| whole);
    let fields = |part: &str, separator: char| -> Option<[i64; 3]> {
        let mut numbers = part.split(separator).map(|field| match field.len() {
            2 | 4 if field.bytes().all(|b| b.is_ascii_digit()) => field.parse().ok(),
            _ => None,
        });
        let fields = [numbers.next()??, numbers.next()??, numbers.next()??];
        numbers.next().is_none().then_some(fields)
    };
    let [year, month, day] = fields(date, '-')?;
    let [hour, minute, second] = fields(time, ':')?;
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm, the
/// inverse of [`CivilTime::of`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_read_as_rfc_3339_utc() {
        assert_eq!(rfc3339_of_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_of_ms(1_796_005_800_123), "2026-11-30T02:30:00.123Z");
        assert_eq!(rfc3339_of_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_of_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn rfc3339_times_read_as_unix_seconds() {
        assert_eq!(unix_of_rfc3339("2016-07-11T22:14:10Z"), Some(1_468_275_250));
        for seconds in [0, 951_782_400, 1_796_005_800, -86_401] {
            let text = rfc3339_of_ms(seconds * 1000);
            assert_eq!(unix_of_rfc3339(&text), Some(seconds), "{text}");
        }
        let garbage = [
            "",
            "2016-07-11",
            "2016-13-11T22:14:10Z",
            "2016-07-11T22:14:10",
        ];
        for text in garbage.into_iter().chain(["2016-07-11T22:14:10+02:00"]) {
            assert_eq!(unix_of_rfc3339(text), None, "{text}");
        }
    }
}
