//! The contract of one attempt, the same for every adapter: what it is given ([`Call`]),
//! what it produces ([`Outcome`]) and how it fails ([`AttemptError`]: whether another attempt
//! may help, and whose fault it was, [`Fault`]). The job runner decides what to do with a
//! failure and feeds the circuit breakers and cooldowns from it.

use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use llmr_config::Provider;
use llmr_protocol::{ApiError, Attempt, Envelope, TraceContext, Usage};

use crate::outbox::Outbox;

/// Everything one attempt needs.
pub struct Call<'a> {
    /// The job: id, body as the client sent it, the model it asked for, stream flags.
    pub env: &'a Envelope,
    /// The target: provider and upstream model.
    pub attempt: &'a Attempt,
    pub provider: &'a Provider,
    /// The API key of this attempt, if the provider has keys.
    pub key: Option<&'a str>,
    /// W3C trace context for the upstream (`traceparent`, `tracestate`).
    pub trace: &'a TraceContext,
    /// How long this attempt may take (deadline and provider timeout applied).
    pub timeout: Duration,
    pub client: &'a awc::Client,
    pub max_response_bytes: usize,
    /// Where the answer goes.
    pub out: &'a mut Outbox,
}

impl Call<'_> {
    /// The completion id clients see ([`completion_id`]).
    pub fn completion_id(&self) -> String {
        completion_id(self.env)
    }
}

/// The completion id clients see for a job we answer: `chatcmpl-…` from the request id.
pub fn completion_id(env: &Envelope) -> String {
    format!("chatcmpl-{}", env.id.simple())
}

/// How a provider type runs an attempt: the driver of the HTTP providers
/// (`crate::relay::Upstream`, over their conversions) or a local one (`echo`, `chaos`).
pub trait Adapter {
    /// Runs one attempt.
    fn call<'a>(&'a self, call: Call<'a>) -> LocalBoxFuture<'a, AttemptResult>;
}

/// Whose fault a failed attempt was: this decides which circuit or cooldown it feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The target (connect error, timeout, 5xx, 404, broken or malformed answer).
    Target,
    /// The key (401, 403).
    Key,
    /// Rate-limited (429), until this time when the upstream said.
    RateLimited { until_ms: Option<u64> },
    /// The request itself (the upstream's 400/413/422): passed to the client, no retry.
    Client,
    /// Ours, not the upstream's (deadline, reply channel, this process out of open files or
    /// ports): feeds nothing.
    Local,
}

/// Why one attempt failed, and whether the next attempt in the plan may be tried.
#[derive(Debug)]
pub struct AttemptError {
    /// What the client gets when no attempt is left (or retrying cannot help).
    pub error: ApiError,
    /// Whether the next attempt may be tried (only while nothing reached the client).
    pub retryable: bool,
    pub fault: Fault,
    /// A short reason for the log.
    pub reason: String,
}

impl AttemptError {
    fn failed(reason: String) -> ApiError {
        ApiError::Upstream {
            message: format!("Every upstream attempt failed; last: {reason}"),
        }
    }

    /// A target failure before anything reached the client: try the next attempt.
    pub fn retryable(reason: impl Into<String>) -> AttemptError {
        let reason = reason.into();
        AttemptError {
            error: Self::failed(reason.clone()),
            retryable: true,
            fault: Fault::Target,
            reason,
        }
    }

    pub fn key_rejected(reason: impl Into<String>) -> AttemptError {
        let reason = reason.into();
        AttemptError {
            error: Self::failed(reason.clone()),
            retryable: true,
            fault: Fault::Key,
            reason,
        }
    }

    pub fn rate_limited(until_ms: Option<u64>, reason: impl Into<String>) -> AttemptError {
        let reason = reason.into();
        AttemptError {
            error: ApiError::RateLimited {
                message: format!("Every upstream is rate-limited; last: {reason}"),
                retry_after_s: until_ms.map(|u| u.saturating_sub(llmr_protocol::now_ms()).div_ceil(1000).max(1)),
            },
            retryable: true,
            fault: Fault::RateLimited { until_ms },
            reason,
        }
    }

    /// The upstream refused the request as the client's fault.
    pub fn client(error: ApiError, reason: impl Into<String>) -> AttemptError {
        AttemptError {
            error,
            retryable: false,
            fault: Fault::Client,
            reason: reason.into(),
        }
    }

    /// A failure of ours: end the request with `error`.
    pub fn local(error: ApiError, reason: impl Into<String>) -> AttemptError {
        AttemptError {
            error,
            retryable: false,
            fault: Fault::Local,
            reason: reason.into(),
        }
    }

    /// This process ran out of something of its own (open files, local ports, memory) before
    /// anything was sent: not the upstream's fault (it feeds no circuit or cooldown, so one
    /// burst cannot open every circuit the cluster shares), the next attempt may still go (on
    /// a pooled connection), and the client, when none is left, gets 503 `overloaded` with
    /// `Retry-After`.
    pub fn exhausted(reason: impl Into<String>) -> AttemptError {
        let reason = reason.into();
        AttemptError {
            error: ApiError::Overloaded {
                message: format!(
                    "The gateway cannot open another upstream connection right now ({reason}); retry later."
                ),
                retry_after_s: 1,
            },
            retryable: true,
            fault: Fault::Local,
            reason,
        }
    }

    /// A target that failed after the answer had started: no retry, but it counts.
    pub fn broken_after_start(reason: impl Into<String>) -> AttemptError {
        let reason = reason.into();
        AttemptError {
            error: ApiError::Upstream {
                message: format!("The upstream stream failed after it had started: {reason}"),
            },
            retryable: false,
            fault: Fault::Target,
            reason,
        }
    }
}

/// What an attempt produced when it succeeded.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Token counts the upstream reported (None: it reported none).
    pub usage: Option<Usage>,
    /// Bytes of answer relayed (for estimates when the upstream reports no usage).
    pub relayed_bytes: u64,
    /// The answer's `id` and `model`, when the adapter saw them (for the attempt's span).
    pub response_id: Option<String>,
    pub response_model: Option<String>,
    /// Why each choice ended (`stop`, `length`, `tool_calls`…), when the adapter saw it.
    pub finish_reasons: Vec<String>,
}

/// The result of one attempt.
pub type AttemptResult = Result<Outcome, AttemptError>;
