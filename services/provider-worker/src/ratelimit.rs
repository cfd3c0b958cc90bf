//! When a rate-limited (429) upstream may be called again.
//!
//! Read in order: `retry-after-ms`; `Retry-After` (seconds or an HTTP date); the later of
//! `x-ratelimit-reset-requests` and `x-ratelimit-reset-tokens` (durations such as `1s`,
//! `20ms`, `1m30s`, `6m0s`, or bare seconds); the later of Anthropic's
//! `anthropic-ratelimit-{requests,tokens}-reset` (RFC 3339 times). None of them: the caller
//! uses its default.

use std::time::{Duration, SystemTime};

/// The time (ms since the epoch) the upstream named, if any.
pub fn reset_at(header: impl Fn(&str) -> Option<String>, now_ms: u64) -> Option<u64> {
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(now_ms + ms.max(0.0) as u64);
    }
    if let Some(v) = header("retry-after") {
        let v = v.trim();
        if let Ok(secs) = v.parse::<f64>() {
            return Some(now_ms + (secs.max(0.0) * 1000.0) as u64);
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            let ms = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            return Some(ms.max(now_ms));
        }
    }
    let openai = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| header(h).and_then(|v| duration(&v)))
        .max()
        .map(|d| now_ms + d.as_millis() as u64);
    let anthropic = ["anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset"]
        .iter()
        .filter_map(|h| header(h))
        .filter_map(|v| time::OffsetDateTime::parse(v.trim(), &time::format_description::well_known::Rfc3339).ok())
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
        .max()
        .map(|ms| ms.max(now_ms));
    openai.or(anthropic)
}

/// Parses `1m30s`, `6m0s`, `20ms`, `1.5s`, `2h`, or bare seconds (`12`, `0.5`).
pub fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        total += value
            * match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pairs: &[(&str, &str)]) -> Option<u64> {
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        reset_at(
            |h| owned.iter().find(|(k, _)| k == h).map(|(_, v)| v.clone()),
            1_000_000,
        )
    }

    #[test]
    fn reads_seconds_milliseconds_and_dates() {
        assert_eq!(at(&[("retry-after", "2")]), Some(1_002_000));
        assert_eq!(at(&[("retry-after-ms", "250"), ("retry-after", "9")]), Some(1_000_250));
        // 1970-01-01T00:16:50Z = 1_010_000 ms
        assert_eq!(at(&[("retry-after", "Thu, 01 Jan 1970 00:16:50 GMT")]), Some(1_010_000));
        assert_eq!(
            at(&[("retry-after", "Thu, 01 Jan 1970 00:00:01 GMT")]),
            Some(1_000_000),
            "a past date is now"
        );
    }

    #[test]
    fn reads_openai_reset_durations() {
        assert_eq!(at(&[("x-ratelimit-reset-requests", "1m30s")]), Some(1_090_000));
        assert_eq!(
            at(&[
                ("x-ratelimit-reset-requests", "20ms"),
                ("x-ratelimit-reset-tokens", "6m0s")
            ]),
            Some(1_360_000)
        );
        assert_eq!(at(&[]), None);
        assert_eq!(at(&[("retry-after", "soon")]), None);
    }

    #[test]
    fn parses_durations() {
        assert_eq!(duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(duration("12"), Some(Duration::from_secs(12)));
        assert_eq!(duration("5x"), None);
        assert_eq!(duration(""), None);
    }

    #[test]
    fn anthropic_reset_times_are_rfc3339() {
        let now = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let h = |n: &str| (n == "anthropic-ratelimit-requests-reset").then(|| "2026-01-01T00:00:07Z".to_string());
        assert_eq!(reset_at(h, now), Some(now + 7000));
    }
}
