//! The waiting-time estimator, as pure functions: how fast a pool completes work (what it
//! was seen to consume while it had a backlog, or what its capacity over its latency
//! allows, whichever is larger), and how long a request with `ahead` jobs in front of it
//! would wait at that rate. The watch feeds it samples; admission only divides.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the consumption rate looks.
pub const WINDOW: Duration = Duration::from_millis(2000);

/// The least time with a backlog over which a consumption rate is believed: below it a
/// pool of few slots and slow jobs shows lumps, not a rate.
pub const MIN_BUSY: Duration = Duration::from_millis(500);

/// One reading of a pool's job streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Instant,
    /// Jobs ever delivered to the workers (the streams' read counters summed); None when a
    /// stream could not tell.
    pub read: Option<u64>,
    /// Jobs not yet delivered.
    pub lag: u64,
    /// Jobs delivered and not finished: in flight.
    pub pending: u64,
}

/// The recent samples of one pool.
#[derive(Debug, Default, Clone)]
pub struct Window {
    samples: VecDeque<Sample>,
}

impl Window {
    /// Adds a reading, forgetting those older than [`WINDOW`].
    pub fn push(&mut self, s: Sample) {
        while self
            .samples
            .front()
            .is_some_and(|f| s.at.saturating_duration_since(f.at) > WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// Jobs per second the workers took while work waited for them: the read counter's
    /// growth over the intervals that began with a backlog. None until those intervals add
    /// up to [`MIN_BUSY`] (a pool without a backlog shows its demand, not its speed).
    pub fn observed_rate(&self) -> Option<f64> {
        let (mut taken, mut busy) = (0u64, Duration::ZERO);
        for pair in self.samples.iter().zip(self.samples.iter().skip(1)) {
            let (a, b) = pair;
            if let (true, Some(ra), Some(rb)) = (a.lag > 0, a.read, b.read) {
                taken += rb.saturating_sub(ra);
                busy += b.at.saturating_duration_since(a.at);
            }
        }
        (busy >= MIN_BUSY).then(|| taken as f64 / busy.as_secs_f64())
    }

    /// The most jobs seen in flight at once: while work waits, the pool's whole capacity.
    pub fn peak_in_flight(&self) -> u64 {
        self.samples.iter().map(|s| s.pending).max().unwrap_or(0)
    }
}

/// A pool's completion rate (jobs per second): the larger of what it was seen to consume
/// and its capacity (`slots` in flight at once) over a job's latency; None when neither is
/// known (then nothing is refused by waiting time).
pub fn completion_rate(observed: Option<f64>, slots: u64, latency_ms: Option<f64>) -> Option<f64> {
    let prior = latency_ms
        .filter(|l| *l > 0.0 && slots > 0)
        .map(|l| slots as f64 * 1000.0 / l);
    let best = match (observed, prior) {
        (Some(o), Some(p)) => Some(o.max(p)),
        (o, p) => o.or(p),
    };
    best.filter(|r| r.is_finite() && *r > 0.0)
}

/// A rate in thousandths of a job per second, as the gauges keep it (0 = unknown).
pub fn to_milli(rate: Option<f64>) -> u64 {
    rate.map_or(0, |r| (r * 1000.0).round().max(1.0) as u64)
}

/// How long (ms) a request waits behind `ahead` jobs at `rate_milli` (thousandths of a job
/// per second); None when the rate is unknown.
pub fn wait_ms(ahead: u64, rate_milli: u64) -> Option<u64> {
    (rate_milli > 0).then(|| ahead.saturating_mul(1_000_000) / rate_milli)
}

/// The bound that applies to a caller: the tightest of the server's, its key's and its
/// team's (0 or none: no bound from that one); 0 when none applies.
pub fn bound_ms(server: u64, key: Option<u64>, team: Option<u64>) -> u64 {
    [Some(server), key, team]
        .into_iter()
        .flatten()
        .filter(|b| *b > 0)
        .min()
        .unwrap_or(0)
}

/// `Retry-After` for an estimated wait: whole seconds, rounded up, at least 1.
pub fn retry_after_s(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(t0: Instant, ms: u64, read: u64, lag: u64, pending: u64) -> Sample {
        Sample {
            at: t0 + Duration::from_millis(ms),
            read: Some(read),
            lag,
            pending,
        }
    }

    #[test]
    fn measures_the_rate_only_while_work_waits() {
        let t0 = Instant::now();
        let mut w = Window::default();
        // No backlog: 50 jobs a second read, but that is demand, not speed.
        for i in 0..10 {
            w.push(sample(t0, i * 100, i * 5, 0, 4));
        }
        assert_eq!(w.observed_rate(), None);
        // A backlog from 1 s on: 2 jobs every 100 ms = 20 per second.
        for i in 10..20 {
            w.push(sample(t0, i * 100, 50 + (i - 10) * 2, 30, 4));
        }
        let r = w.observed_rate().unwrap();
        assert!((r - 20.0).abs() < 1e-9, "{r}");
        assert_eq!(w.peak_in_flight(), 4);
    }

    #[test]
    fn a_short_backlog_gives_no_rate_yet() {
        let t0 = Instant::now();
        let mut w = Window::default();
        for i in 0..4 {
            w.push(sample(t0, i * 100, i * 4, 10, 4));
        }
        assert_eq!(w.observed_rate(), None, "300 ms of backlog is below MIN_BUSY");
    }

    #[test]
    fn forgets_samples_older_than_the_window() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.push(sample(t0, 0, 0, 5, 9));
        w.push(sample(t0, 3000, 0, 0, 1));
        assert_eq!(w.peak_in_flight(), 1);
    }

    #[test]
    fn an_unknown_read_counter_breaks_no_interval_into_a_rate() {
        let t0 = Instant::now();
        let mut w = Window::default();
        for i in 0..10 {
            let mut s = sample(t0, i * 100, i, 5, 4);
            s.read = None;
            w.push(s);
        }
        assert_eq!(w.observed_rate(), None);
    }

    #[test]
    fn the_rate_is_the_larger_of_observed_and_capacity() {
        // 4 slots, 200 ms a job: 20 per second.
        assert_eq!(completion_rate(None, 4, Some(200.0)), Some(20.0));
        assert_eq!(completion_rate(Some(35.0), 4, Some(200.0)), Some(35.0));
        assert_eq!(completion_rate(Some(5.0), 4, Some(200.0)), Some(20.0));
        assert_eq!(completion_rate(Some(5.0), 4, None), Some(5.0));
        assert_eq!(completion_rate(None, 4, None), None, "unknown: no shedding by time");
        assert_eq!(completion_rate(Some(0.0), 0, Some(200.0)), None);
    }

    #[test]
    fn waits_are_the_queue_over_the_rate() {
        let r = to_milli(Some(20.0));
        assert_eq!(r, 20_000);
        assert_eq!(wait_ms(0, r), Some(0));
        assert_eq!(wait_ms(100, r), Some(5000));
        assert_eq!(wait_ms(101, r), Some(5050));
        assert_eq!(wait_ms(100, 0), None);
        assert_eq!(to_milli(None), 0);
        assert_eq!(to_milli(Some(0.0001)), 1, "a known rate never reads as unknown");
    }

    #[test]
    fn the_tightest_bound_applies() {
        assert_eq!(bound_ms(5000, None, None), 5000);
        assert_eq!(bound_ms(5000, Some(1000), None), 1000);
        assert_eq!(bound_ms(5000, Some(3000), Some(2000)), 2000);
        assert_eq!(bound_ms(5000, Some(0), Some(9000)), 5000);
        assert_eq!(bound_ms(0, None, None), 0, "off");
        assert_eq!(
            bound_ms(0, Some(1500), None),
            1500,
            "a key's own bound holds with the server's off"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_s(0), 1);
        assert_eq!(retry_after_s(5001), 6);
        assert_eq!(retry_after_s(7000), 7);
    }
}
