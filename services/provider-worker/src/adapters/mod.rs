//! Provider adapters: the one boundary between the worker and a provider's wire format.
//!
//! An adapter runs one attempt: it sends the request, and turns the upstream's answer into
//! reply frames through a `Replier`. It reports failure with an [`AttemptError`] that says
//! whether another attempt may help; the job runner decides what to do with it.

pub mod echo;
pub mod openai;

use llmr_protocol::{ApiError, Usage};

/// Why one attempt failed, and whether the next attempt in the plan may be tried.
#[derive(Debug)]
pub struct AttemptError {
    /// What the client gets when no attempt is left (or retrying cannot help).
    pub error: ApiError,
    /// Connect errors, timeouts, 5xx, 429, broken or malformed answers: try the next one.
    pub retryable: bool,
    /// A short reason for the log.
    pub reason: String,
}

impl AttemptError {
    pub fn retryable(reason: impl Into<String>) -> AttemptError {
        let reason = reason.into();
        AttemptError {
            error: ApiError::Upstream {
                message: format!("Every upstream attempt failed; last: {reason}"),
            },
            retryable: true,
            reason,
        }
    }

    pub fn fatal(error: ApiError, reason: impl Into<String>) -> AttemptError {
        AttemptError {
            error,
            retryable: false,
            reason: reason.into(),
        }
    }
}

/// What an attempt produced when it succeeded.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Token counts the upstream reported (None: it reported none).
    pub usage: Option<Usage>,
}

/// The result of one attempt.
pub type AttemptResult = Result<Outcome, AttemptError>;
