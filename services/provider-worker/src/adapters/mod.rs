//! Provider adapters: the one boundary between the worker and a provider's wire format.
//!
//! A provider type spoken over HTTP is a [`Dialect`]: pure conversions (our request to
//! theirs, their answer and stream events to ours, their refusals to a fault), run by the
//! worker's one driver (`crate::relay`). `echo` and `chaos` answer locally. Every attempt
//! keeps the same contract ([`attempt`]): given a [`Call`], an [`Outcome`] or an
//! [`AttemptError`] that says whether another attempt may help and whose fault it was.
//! [`for_provider`] is the one place that maps a configured `type` to its adapter; the job
//! runner never sees a provider type.
//!
//! # Layout
//! - [`attempt`]: the contract of one attempt (`Call`, `Outcome`, `AttemptError`, `Fault`).
//! - [`dialect`]: the `Dialect` and `Events` traits and what they exchange with the driver.
//! - [`faults`]: the shared mapping of an upstream's refusal to its fault.
//! - [`openai`], [`openai_responses`], [`anthropic`], [`ollama`]: the dialects.
//! - [`echo`], [`echo_endpoints`], [`chaos`]: the local providers.
//! - `golden` (tests): snapshots of each dialect's request, answer and stream conversions.
//!
//! Adding a provider type: see ADDING_A_PROVIDER.md (a dialect file here, a variant of
//! `llmr_config::ProviderType`, one arm in [`for_provider`], golden tests).

pub mod anthropic;
pub mod attempt;
pub mod chaos;
pub mod dialect;
pub mod echo;
pub mod echo_endpoints;
pub mod faults;
#[cfg(test)]
mod golden;
pub mod ollama;
pub mod openai;
pub mod openai_responses;

pub use attempt::{Adapter, AttemptError, AttemptResult, Call, Fault, Outcome};
pub use dialect::Dialect;

use llmr_config::{Provider, ProviderType};

use crate::relay::Upstream;

/// The adapter of a configured provider.
pub fn for_provider(p: &Provider) -> Box<dyn Adapter> {
    match p.kind {
        ProviderType::Echo => Box::new(echo::Echo),
        ProviderType::Chaos => Box::new(chaos::ChaosAdapter::new(p.chaos.clone().unwrap_or_default())),
        ProviderType::Openai | ProviderType::Gemini | ProviderType::Azure => Box::new(Upstream(&openai::OpenAi)),
        ProviderType::Anthropic => Box::new(Upstream(&anthropic::Anthropic)),
        ProviderType::Ollama => Box::new(Upstream(&ollama::Ollama)),
    }
}
