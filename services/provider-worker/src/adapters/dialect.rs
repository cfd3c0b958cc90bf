//! The boundary between the worker and a provider's wire format: a [`Dialect`] is a set of
//! pure conversions — our request to theirs ([`UpstreamRequest`]: URL, headers, body, how
//! the answer is read), their whole answer to ours ([`Answer`]), their stream events to our
//! chunks and an outcome ([`Events`]), their refusals to a fault — and the worker's one
//! driver (`crate::relay`) does all the I/O around them: sending, limits, splitting SSE or
//! NDJSON, batching frames, broken streams, rewrites and the response cache.

use bytes::Bytes;
use llmr_config::Provider;
use llmr_protocol::{Attempt, Envelope, NativeApi, Usage};

use super::attempt::{AttemptError, Call, Outcome};
use super::faults::{self, Refusal};
pub use crate::sse::Event;

/// What the conversions of one attempt see: the job and its target, no I/O.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    /// The job: id, body as the client sent it, the model it asked for, stream flags.
    pub env: &'a Envelope,
    /// The target: provider and upstream model.
    pub attempt: &'a Attempt,
    pub provider: &'a Provider,
    /// The API key of this attempt, if the provider has keys.
    pub key: Option<&'a str>,
    /// The answer's `created` (seconds), for answers we write.
    pub created: u64,
}

impl<'a> Ask<'a> {
    /// The conversions' view of `c`, answered at `created`.
    pub fn of(c: &Call<'a>, created: u64) -> Ask<'a> {
        Ask {
            env: c.env,
            attempt: c.attempt,
            provider: c.provider,
            key: c.key,
            created,
        }
    }

    /// The completion id clients see (`chatcmpl-…` from the request id).
    pub fn completion_id(&self) -> String {
        super::attempt::completion_id(self.env)
    }
}

/// How an upstream answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// One JSON body, converted by [`Dialect::answer`].
    Whole,
    /// Server-sent events, converted by [`Dialect::events`].
    Sse,
    /// Newline-delimited JSON, converted by [`Dialect::events`].
    Ndjson,
}

/// The request to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// Where to POST it.
    pub url: String,
    /// The dialect's own headers (credentials, version); the driver adds the content type,
    /// trace context and the provider's extra headers (which may override these).
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    pub reading: Reading,
    /// Set when the answer is in this API rather than chat completions (the caller is told
    /// in the head frame).
    pub native: Option<NativeApi>,
}

/// Our whole answer, converted from theirs.
#[derive(Debug)]
pub struct Answer {
    /// The body the client gets (status 200).
    pub body: Bytes,
    /// What it says of itself (usage, id, model, finish reasons); `relayed_bytes` is the
    /// driver's.
    pub outcome: Outcome,
}

/// Why an upstream stream cannot be relayed further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the upstream sent a malformed stream event")]
    MalformedEvent,
    #[error("the upstream sent a malformed line")]
    MalformedLine,
    /// The upstream said in the stream that it failed.
    #[error("the upstream stream failed: {0}")]
    Failed(String),
}

/// The conversion of one attempt's stream: their events in, our stream events out.
pub trait Events {
    /// One upstream event: our events for it are appended to `out`; `Ok(true)` when it is
    /// the stream's last (the rest of the read is still converted).
    fn event(&mut self, event: Event, out: &mut Vec<Bytes>) -> Result<bool, StreamError>;
    /// After the last event: our closing events (appended to `out`) and the outcome.
    fn end(&mut self, out: &mut Vec<Bytes>) -> Outcome;
    /// Why a stream that stopped before its last event is broken.
    fn unfinished(&self) -> &'static str;
}

/// One provider type's wire format, as conversions.
pub trait Dialect: Sync {
    /// Our request to theirs (refusals here are the client's, or ours for a bad body).
    fn request(&self, ask: &Ask<'_>) -> Result<UpstreamRequest, AttemptError>;
    /// Their whole answer (a 2xx body) to ours.
    fn answer(&self, ask: &Ask<'_>, body: Bytes) -> Result<Answer, AttemptError>;
    /// The conversion of the stream answering `req`.
    fn events(&self, ask: &Ask<'_>, req: &UpstreamRequest) -> Box<dyn Events>;
    /// Their refusal (a non-2xx answer) as a fault; the shared mapping unless said.
    fn fault(&self, refusal: &Refusal) -> AttemptError {
        faults::of(refusal)
    }
}

/// A malformed whole answer: the target's.
pub fn malformed(e: serde_json::Error) -> AttemptError {
    AttemptError::retryable(format!("malformed answer: {e}"))
}

/// A body the client sent that cannot be read: ours to refuse (it was validated before).
pub fn invalid_body(e: serde_json::Error) -> AttemptError {
    AttemptError::local(
        llmr_protocol::ApiError::invalid(format!("invalid body: {e}"), None),
        "invalid body",
    )
}

/// The usage of an answer we wrote (its `usage` object), if any.
pub fn usage_of(v: &serde_json::Value) -> Option<Usage> {
    serde_json::from_value(v.clone()).ok()
}

/// What an answer we made (an OpenAI chat body, or embeddings) says of itself: its usage and
/// first choice's finish reason, with the upstream's `id` and `model` as the dialect read them.
pub fn outcome_of(answer: &serde_json::Value, id: Option<String>, model: Option<String>) -> Outcome {
    Outcome {
        usage: usage_of(&answer["usage"]),
        relayed_bytes: 0,
        response_id: id,
        response_model: model,
        finish_reasons: answer["choices"][0]["finish_reason"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect(),
    }
}

/// Headers carrying `key` as a bearer token (none without a key).
pub fn bearer(key: Option<&str>) -> Vec<(&'static str, String)> {
    key.map(|k| ("authorization", format!("Bearer {k}")))
        .into_iter()
        .collect()
}
