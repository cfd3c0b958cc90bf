//! Limits of a virtual key or team (rates, parallel requests, a budget per period) and the
//! UTC calendar they count in: shared by the config file's `[[keys]]`, the admin API and the
//! store's admission.

use serde::{Deserialize, Serialize};

/// A budget's period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
    #[default]
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            "total" => Some(Period::Total),
            _ => None,
        }
    }

    /// The period holding `now_ms` (UTC): its label (part of the spend key), its start, and
    /// its end (none for `total`). Weeks start on Monday.
    pub fn window(self, now_ms: u64) -> (String, u64, Option<u64>) {
        const DAY: u64 = 86_400_000;
        let day_start = now_ms - now_ms % DAY;
        match self {
            Period::Total => ("total".into(), 0, None),
            Period::Day => (format!("d{}", utc_day(now_ms)), day_start, Some(day_start + DAY)),
            Period::Week => {
                // 1970-01-01 was a Thursday: days since the last Monday.
                let days = now_ms / DAY;
                let start = (days - (days + 3) % 7) * DAY;
                (format!("w{}", utc_day(start)), start, Some(start + 7 * DAY))
            }
            Period::Month => {
                let day = utc_day(now_ms);
                let (y, m) = (
                    day[..4].parse::<i64>().unwrap_or(1970),
                    day[5..7].parse::<i64>().unwrap_or(1),
                );
                let start = days_from_civil(y, m, 1) as u64 * DAY;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1) as u64 * DAY;
                (format!("m{}", &day[..7]), start, Some(end))
            }
        }
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Today's date (UTC) as `YYYY-MM-DD`, the day of usage counters.
pub fn utc_day(now_ms: u64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one format.
    let days = (now_ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What a key or a team may do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    #[serde(default)]
    pub budget_period: Period,
    /// The output cap reserved for — and sent with — a request that names none, when a
    /// budget or tpm counts its tokens (else the gateway's default of 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// The longest a request of this key or team may be expected to wait for its pool before
    /// it is refused with 503 `overloaded` (the tighter of key, team and
    /// `server.max_queue_wait_ms` applies; 0 is no bound of its own). Not an admission limit:
    /// the gateway checks it before admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_wait_ms: Option<u64>,
}

impl Limits {
    /// Whether any limit is set (else admission has nothing to check for it).
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.max_parallel.is_some() || self.budget_usd.is_some()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_days() {
        assert_eq!(super::utc_day(0), "1970-01-01");
        assert_eq!(super::utc_day(1_795_000_000_000), "2026-11-18");
        assert_eq!(super::utc_day(951_782_400_000), "2000-02-29");
    }
}
