//! The routing plan: an ordered list of attempts a provider worker runs until one succeeds.

use serde::{Deserialize, Serialize};

/// One attempt: which provider to call, the model name the upstream knows, and which key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// Index of the provider's key to use (none: keyless provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
    /// The target's circuit is open but recovered: the worker must win the probe first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub probe: bool,
    /// Likewise for the key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub probe_key: bool,
    /// The model has no native tools (`supports_tools = false`): tools go in its prompt and
    /// its `<tool_call>` blocks come back as tool calls (`xmltools`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub xml_tools: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Attempt {
    /// The target id used for leases, health and load: `provider/model`.
    pub fn target(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }

    /// An attempt on `provider`/`model` with no key choice and no probe.
    pub fn new(provider: &str, model: &str) -> Attempt {
        Attempt {
            provider: provider.to_owned(),
            model: model.to_owned(),
            key: None,
            probe: false,
            probe_key: false,
            xml_tools: false,
        }
    }
}

/// What the router hands to a worker pool: the attempts in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub pool: String,
    pub attempts: Vec<Attempt>,
    /// How long an attempt may wait for a free slot or lock before moving on (ms).
    #[serde(default)]
    pub wait_ms: u64,
    /// The response cache's verdict for this request, when the cache is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePlan>,
}

/// What the worker does with the answer for the response cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePlan {
    /// `miss` (looked up, not found) or `bypass` (not cacheable).
    pub status: crate::CacheStatus,
    /// Store a successful answer under `cache:{key}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default)]
    pub store: bool,
    #[serde(default)]
    pub ttl_ms: u64,
}
