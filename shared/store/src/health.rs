//! Circuit breakers, rate-limit cooldowns and latency, per target (`provider/model`) and per
//! key (`provider#index`), shared by every router and worker through the store.
//!
//! A circuit is `closed` (calls flow) until `failure_threshold` failures fall inside
//! `failure_window_ms`; then `open` for `recovery_ms`; then the first caller to ask wins the
//! single probe (`half_open`) — its success closes the circuit, its failure opens it again.
//! A probe that never reports back frees the slot after `probe_ttl_ms`. Independently, a
//! cooldown (from a 429) makes the target or key unavailable until its time.

use serde::Serialize;

/// Circuit state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Circuit {
        match s {
            "open" => Circuit::Open,
            "half_open" => Circuit::HalfOpen,
            _ => Circuit::Closed,
        }
    }
}

/// The breaker's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    pub failure_threshold: u32,
    pub failure_window_ms: u64,
    pub recovery_ms: u64,
    /// How long a probe may run before another caller may probe.
    pub probe_ttl_ms: u64,
}

/// What the store knows of one target or key.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct HealthRecord {
    pub circuit: Circuit,
    pub failures: u32,
    pub window_start_ms: u64,
    pub open_until_ms: u64,
    pub probe_until_ms: u64,
    pub cooldown_until_ms: u64,
    /// Exponentially weighted moving average of successful call latency.
    pub latency_ms: Option<f64>,
}

/// Whether a target or key can take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Open but recovered: one probe may go (the caller must win `try_probe`).
    Probe,
    /// Not before this time (ms).
    CoolingUntil(u64),
    /// Circuit open (or a probe under way) until this time (ms).
    OpenUntil(u64),
}

impl Availability {
    /// How `/health` and the console name it: `available`, `probe`, `cooling` or `open`.
    pub fn label(self) -> &'static str {
        match self {
            Availability::Available => "available",
            Availability::Probe => "probe",
            Availability::CoolingUntil(_) => "cooling",
            Availability::OpenUntil(_) => "open",
        }
    }
}

impl HealthRecord {
    pub fn availability(&self, now: u64) -> Availability {
        if now < self.cooldown_until_ms {
            return Availability::CoolingUntil(self.cooldown_until_ms);
        }
        match self.circuit {
            Circuit::Closed => Availability::Available,
            Circuit::Open if now < self.open_until_ms => Availability::OpenUntil(self.open_until_ms),
            Circuit::HalfOpen if now < self.probe_until_ms => Availability::OpenUntil(self.probe_until_ms),
            Circuit::Open | Circuit::HalfOpen => Availability::Probe,
        }
    }

    /// A failure (memory backend; the Redis script does the same).
    pub(crate) fn fail(&mut self, now: u64, b: &Breaker) {
        if now.saturating_sub(self.window_start_ms) > b.failure_window_ms {
            self.failures = 0;
            self.window_start_ms = now;
        }
        self.failures += 1;
        if self.circuit == Circuit::HalfOpen || self.failures >= b.failure_threshold {
            self.circuit = Circuit::Open;
            self.open_until_ms = now + b.recovery_ms;
            self.failures = 0;
            self.window_start_ms = now;
        }
    }

    pub(crate) fn succeed(&mut self, latency_ms: Option<f64>) {
        if let Some(l) = latency_ms {
            self.latency_ms = Some(self.latency_ms.map_or(l, |old| old + LATENCY_ALPHA * (l - old)));
        }
        self.circuit = Circuit::Closed;
        self.failures = 0;
        self.probe_until_ms = 0;
    }

    /// Takes the probe when the circuit allows one; closed circuits always allow.
    pub(crate) fn probe(&mut self, now: u64, probe_ttl_ms: u64) -> bool {
        match self.circuit {
            Circuit::Closed => true,
            Circuit::Open if now >= self.open_until_ms => {
                self.circuit = Circuit::HalfOpen;
                self.probe_until_ms = now + probe_ttl_ms;
                true
            }
            Circuit::HalfOpen if now >= self.probe_until_ms => {
                self.probe_until_ms = now + probe_ttl_ms;
                true
            }
            Circuit::Open | Circuit::HalfOpen => false,
        }
    }
}

/// Weight of the newest sample in the latency average.
pub const LATENCY_ALPHA: f64 = 0.3;

#[cfg(test)]
mod tests {
    use super::*;

    const B: Breaker = Breaker {
        failure_threshold: 3,
        failure_window_ms: 1000,
        recovery_ms: 500,
        probe_ttl_ms: 200,
    };

    #[test]
    fn opens_after_threshold_failures_inside_the_window() {
        let mut h = HealthRecord::default();
        h.fail(100, &B);
        h.fail(200, &B);
        assert_eq!(h.availability(200), Availability::Available);
        h.fail(300, &B);
        assert_eq!(h.circuit, Circuit::Open);
        assert_eq!(h.availability(400), Availability::OpenUntil(800));
        assert_eq!(h.availability(800), Availability::Probe);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut h = HealthRecord::default();
        h.fail(0, &B);
        h.fail(10, &B);
        h.fail(2000, &B);
        assert_eq!(h.circuit, Circuit::Closed);
    }

    #[test]
    fn exactly_one_probe_then_success_closes() {
        let mut h = HealthRecord::default();
        for t in 0..3 {
            h.fail(t, &B);
        }
        assert!(!h.probe(100, 200), "not before recovery");
        assert!(h.probe(600, 200), "first caller probes");
        assert!(!h.probe(610, 200), "only one probe at a time");
        assert!(h.probe(900, 200), "a probe that never reported frees the slot");
        h.succeed(Some(10.0));
        assert_eq!(h.availability(901), Availability::Available);
    }

    #[test]
    fn a_failed_probe_reopens() {
        let mut h = HealthRecord::default();
        for t in 0..3 {
            h.fail(t, &B);
        }
        assert!(h.probe(600, 200));
        h.fail(650, &B);
        assert_eq!(h.availability(700), Availability::OpenUntil(1150));
    }

    #[test]
    fn cooldown_wins_over_everything() {
        let h = HealthRecord {
            cooldown_until_ms: 5000,
            ..HealthRecord::default()
        };
        assert_eq!(h.availability(1000), Availability::CoolingUntil(5000));
        assert_eq!(h.availability(5000), Availability::Available);
    }

    #[test]
    fn latency_is_a_moving_average() {
        let mut h = HealthRecord::default();
        h.succeed(Some(100.0));
        h.succeed(Some(200.0));
        assert!((h.latency_ms.unwrap() - 130.0).abs() < 1e-9);
    }
}
