//! The routing plan: an ordered list of attempts a provider worker runs until one succeeds.

use serde::{Deserialize, Serialize};

/// One attempt: which provider to call and the model name the upstream knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
}

impl Attempt {
    /// The target id used for leases, health and load: `provider/model`.
    pub fn target(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// What the router hands to a worker pool: the attempts in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub pool: String,
    pub attempts: Vec<Attempt>,
}
