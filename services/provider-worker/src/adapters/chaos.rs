//! The built-in `chaos` provider: the `echo` provider with failures injected at configured
//! rates — latency, 500s, 429 with and without `Retry-After`, refused connections, hangs,
//! streams dropped after they started, malformed events. For rehearsing failover and for
//! the tests; it needs no network.

use futures_util::future::LocalBoxFuture;
use llmr_config::Chaos;
use llmr_protocol::now_ms;
use llmr_protocol::openai::ChatChunk;

use super::attempt::{Adapter, AttemptError, AttemptResult, Call};
use super::echo;

/// What one roll of the dice injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    None,
    Error,
    RateLimited,
    RateLimitedBare,
    Refused,
    Hang,
    Drop,
    Malformed,
}

/// Picks the failure for a roll in `[0, 1)`.
pub fn choose(c: &Chaos, roll: f64) -> Injected {
    let table = [
        (c.error_rate, Injected::Error),
        (c.rate_limit_rate, Injected::RateLimited),
        (c.rate_limit_bare_rate, Injected::RateLimitedBare),
        (c.refuse_rate, Injected::Refused),
        (c.hang_rate, Injected::Hang),
        (c.drop_rate, Injected::Drop),
        (c.malformed_rate, Injected::Malformed),
    ];
    let mut acc = 0.0;
    for (rate, kind) in table {
        acc += rate;
        if roll < acc {
            return kind;
        }
    }
    Injected::None
}

/// The `chaos` adapter: its failure rates.
pub struct ChaosAdapter {
    chaos: Chaos,
}

impl ChaosAdapter {
    pub fn new(chaos: Chaos) -> ChaosAdapter {
        ChaosAdapter { chaos }
    }
}

impl Adapter for ChaosAdapter {
    fn call<'a>(&'a self, c: Call<'a>) -> LocalBoxFuture<'a, AttemptResult> {
        Box::pin(inject(&self.chaos, c))
    }
}

async fn inject(chaos: &Chaos, c: Call<'_>) -> AttemptResult {
    if chaos.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(chaos.latency_ms)).await;
    }
    let stream = c.env.meta.stream;
    match choose(chaos, rand::random::<f64>()) {
        Injected::None => echo::answer(c).await,
        Injected::Error => Err(AttemptError::retryable("chaos: upstream answered 500")),
        Injected::RateLimited => Err(AttemptError::rate_limited(
            Some(now_ms() + chaos.retry_after_s * 1000),
            format!("chaos: 429 with Retry-After: {}", chaos.retry_after_s),
        )),
        Injected::RateLimitedBare => Err(AttemptError::rate_limited(None, "chaos: 429 without reset headers")),
        Injected::Refused => Err(AttemptError::retryable("chaos: connection refused")),
        Injected::Hang => std::future::pending().await,
        Injected::Malformed => Err(AttemptError::retryable(
            "chaos: the upstream sent a malformed stream event",
        )),
        Injected::Drop if stream => {
            let first = ChatChunk::text(&c.completion_id(), &c.env.meta.model, now_ms() / 1000, true, "");
            c.out
                .events(&[first.to_bytes()])
                .await
                .map_err(|e| AttemptError::local(e.into(), "could not reply"))?;
            Err(AttemptError::broken_after_start("chaos: the stream dropped mid-way"))
        }
        Injected::Drop => Err(AttemptError::retryable(
            "chaos: the connection dropped before the answer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_map_to_the_configured_rates() {
        let c = Chaos {
            error_rate: 0.3,
            rate_limit_rate: 0.2,
            hang_rate: 0.1,
            ..Chaos::default()
        };
        assert_eq!(choose(&c, 0.0), Injected::Error);
        assert_eq!(choose(&c, 0.29), Injected::Error);
        assert_eq!(choose(&c, 0.3), Injected::RateLimited);
        assert_eq!(choose(&c, 0.55), Injected::Hang);
        assert_eq!(choose(&c, 0.6), Injected::None);
        assert_eq!(choose(&Chaos::default(), 0.0), Injected::None);
    }
}
