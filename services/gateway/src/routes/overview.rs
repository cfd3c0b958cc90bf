//! `GET /admin/overview`: the console's overview of the last 15 minutes — requests/s, error
//! rate, p50/p99 latency, time to first token, tokens/s, cache hit rate — in 30 s steps and
//! over the last minute, with today's spend.
//!
//! It is read from the cluster's request log (and today's spend rows), so every gateway
//! replica shows the same figures, and nothing is kept or computed while nobody asks: one
//! answer is made per gateway at most every [`FRESH_MS`], however many pages poll. Each
//! gateway keeps the window's records in a compact form ([`Cache`]) and reads only the
//! records logged since its last answer — a page of [`FIRST_PAGE`] when nothing is new — so
//! a poll costs what arrived in between, not the whole log.

use actix_web::{HttpResponse, web};
use llmr_protocol::now_ms;
use llmr_store::governance::RequestRecord;
use serde_json::{Value, json};

use crate::{AppState, HttpError};

/// The window shown.
pub const WINDOW_MS: u64 = 15 * 60_000;
/// One point of each line.
pub const STEP_MS: u64 = 30_000;
/// The span of the "now" figures.
pub const CURRENT_MS: u64 = 60_000;
/// An answer is reused this long.
const FRESH_MS: u64 = 2_000;
/// Records kept at most (the log keeps 10,000 by default).
const MAX_SCAN: usize = 50_000;
/// The first page of a refresh; each next one is ten times larger, up to [`LAST_PAGE`].
const FIRST_PAGE: usize = 20;
const LAST_PAGE: usize = 2_000;

/// What the overview needs of a record.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    time_ms: u64,
    status: u16,
    latency_ms: u64,
    ttft_ms: Option<u64>,
    tokens: u64,
    cache_hit: bool,
}

impl From<&RequestRecord> for Seen {
    fn from(r: &RequestRecord) -> Seen {
        Seen {
            time_ms: r.time_ms,
            status: r.status,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            tokens: r.input_tokens + r.output_tokens,
            cache_hit: r.cache_hit,
        }
    }
}

/// One gateway's view of the window: the records seen (oldest first), the cursor of the
/// newest, and the last answer with when it was made.
#[derive(Debug, Default)]
pub struct Cache {
    seen: std::collections::VecDeque<Seen>,
    newest: Option<String>,
    answer: Option<(u64, Value)>,
}

/// The figures of one span of records.
#[derive(Debug, Default)]
struct Span {
    requests: u64,
    errors: u64,
    answered: u64,
    hits: u64,
    tokens: u64,
    latencies: Vec<u64>,
    ttfts: Vec<u64>,
}

impl Span {
    fn add(&mut self, r: &Seen) {
        self.requests += 1;
        if r.status >= 400 {
            self.errors += 1;
        } else {
            self.answered += 1;
            self.hits += u64::from(r.cache_hit);
            self.latencies.push(r.latency_ms);
        }
        self.tokens += r.tokens;
        if let Some(t) = r.ttft_ms {
            self.ttfts.push(t);
        }
    }

    /// The figures, as rates over `span_ms`; none where there is nothing to measure.
    fn figures(mut self, span_ms: u64) -> [Option<f64>; 7] {
        let secs = span_ms as f64 / 1000.0;
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        self.latencies.sort_unstable();
        self.ttfts.sort_unstable();
        [
            Some(self.requests as f64 / secs),
            ratio(self.errors, self.requests),
            percentile(&self.latencies, 0.50),
            percentile(&self.latencies, 0.99),
            percentile(&self.ttfts, 0.50),
            Some(self.tokens as f64 / secs),
            ratio(self.hits, self.answered),
        ]
    }
}

/// The names of [`Span::figures`], in order.
const NAMES: [&str; 7] = [
    "requests_per_s",
    "error_rate",
    "p50_ms",
    "p99_ms",
    "ttft_ms",
    "tokens_per_s",
    "cache_hit_rate",
];

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64)
}

/// Rounds for the wire (figures are shown, not summed).
fn round(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0))
}

/// The overview of `records` (any order) at `now`.
fn summarize<'a>(records: impl IntoIterator<Item = &'a Seen>, now: u64) -> Value {
    let points = (WINDOW_MS / STEP_MS) as usize;
    // The last point ends at the next step boundary, so points do not move between polls.
    let end = now.div_ceil(STEP_MS) * STEP_MS;
    let from = end - WINDOW_MS;
    let mut steps: Vec<Span> = (0..points).map(|_| Span::default()).collect();
    let mut current = Span::default();
    for r in records {
        if r.time_ms >= from && r.time_ms < end {
            steps[((r.time_ms - from) / STEP_MS) as usize].add(r);
        }
        if r.time_ms + CURRENT_MS > now && r.time_ms <= now {
            current.add(r);
        }
    }
    // The last step is still running: its rates are over the part that passed.
    let last_span = (now - (end - STEP_MS)).max(1000);
    let mut series = vec![Vec::with_capacity(points); NAMES.len()];
    for (i, s) in steps.into_iter().enumerate() {
        let span = if i + 1 == points { last_span } else { STEP_MS };
        for (j, v) in s.figures(span).into_iter().enumerate() {
            series[j].push(round(v));
        }
    }
    let mut cur = serde_json::Map::new();
    for (name, v) in NAMES.iter().zip(current.figures(CURRENT_MS)) {
        cur.insert((*name).into(), round(v));
    }
    json!({
        "window_ms": WINDOW_MS,
        "step_ms": STEP_MS,
        "from_ms": from,
        "source": "request log",
        "series": NAMES.iter().zip(series).map(|(n, s)| ((*n).to_owned(), Value::Array(s))).collect::<serde_json::Map<_, _>>(),
        "current": cur,
    })
}

impl Cache {
    /// Reads what was logged since the last refresh (newest first, in growing pages, until
    /// the newest record already seen or the window's start), and forgets what left the
    /// window.
    async fn refresh(&mut self, store: &llmr_store::Store, from: u64) -> Result<(), HttpError> {
        let mut fresh: Vec<Seen> = Vec::new();
        let (mut before, mut page_size, mut newest) = (None::<String>, FIRST_PAGE, None);
        'pages: while fresh.len() < MAX_SCAN {
            let page = store.gov_requests(before.as_deref(), page_size).await?;
            newest = newest.or_else(|| page.first().map(|r| r.cursor.clone()));
            for r in &page {
                if Some(&r.cursor) == self.newest.as_ref() || r.time_ms < from {
                    break 'pages;
                }
                fresh.push(Seen::from(r));
            }
            match page.last() {
                Some(last) if page.len() == page_size => before = Some(last.cursor.clone()),
                _ => break,
            }
            page_size = (page_size * 10).min(LAST_PAGE);
        }
        if newest.is_some() {
            self.newest = newest;
        }
        self.seen.extend(fresh.into_iter().rev());
        while self.seen.front().is_some_and(|r| r.time_ms < from) || self.seen.len() > MAX_SCAN {
            self.seen.pop_front();
        }
        Ok(())
    }
}

/// `GET /admin/overview`.
pub async fn overview(state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let mut cache = state.overview.lock().await;
    let now = now_ms();
    if let Some((at, v)) = &cache.answer
        && now.saturating_sub(*at) < FRESH_MS
    {
        return Ok(HttpResponse::Ok().json(v));
    }
    let from = now.div_ceil(STEP_MS) * STEP_MS - WINDOW_MS;
    cache.refresh(&state.store, from).await?;
    let mut v = summarize(&cache.seen, now);
    let today = llmr_store::utc_day(now);
    let rows = state.store.gov_spend(&today, &today).await?;
    v["current"]["spend_today_usd"] = json!(llmr_store::governance::usd(
        rows.iter().map(|r| r.spend_micros).sum::<u64>()
    ));
    v["current"]["requests_today"] = json!(rows.iter().map(|r| r.requests).sum::<u64>());
    cache.answer = Some((now, v.clone()));
    Ok(HttpResponse::Ok().json(v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(time_ms: u64, status: u16, latency_ms: u64, hit: bool) -> Seen {
        Seen {
            time_ms,
            status,
            latency_ms,
            cache_hit: hit,
            tokens: 15,
            ttft_ms: Some(latency_ms / 2),
        }
    }

    #[test]
    fn the_window_is_cut_in_steps_and_the_last_minute_is_summed() {
        let now = 10 * WINDOW_MS + 15_000; // 15 s into a step
        let recs = vec![
            rec(now - 1_000, 200, 10, false),
            rec(now - 2_000, 200, 30, true),
            rec(now - 3_000, 500, 99, false),
            rec(now - 5 * 60_000, 200, 20, false),
            rec(now - WINDOW_MS - 60_000, 200, 20, false), // before the window
        ];
        let v = summarize(&recs, now);
        let rps = v["series"]["requests_per_s"].as_array().unwrap();
        assert_eq!(rps.len(), 30);
        // The running step holds three requests over the 15 s that passed of it.
        assert_eq!(rps[29], json!(0.2));
        assert_eq!(v["series"]["error_rate"][29], json!(0.333));
        assert_eq!(v["series"]["p50_ms"][29], json!(10.0));
        assert_eq!(v["series"]["p99_ms"][29], json!(30.0));
        assert_eq!(v["series"]["cache_hit_rate"][29], json!(0.5));
        assert_eq!(v["series"]["p50_ms"][0], Value::Null, "an empty step has no latency");
        assert_eq!(rps.iter().map(|x| x.as_f64().unwrap()).filter(|x| *x > 0.0).count(), 2);
        assert_eq!(v["current"]["requests_per_s"], json!(0.05));
        assert_eq!(v["current"]["tokens_per_s"], json!(0.75));
    }
}
