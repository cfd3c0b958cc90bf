//! Typed configuration for every llmrouter service.
//!
//! Layers, later wins: the built-in `config/default.toml` → an optional `--config` file
//! (TOML, YAML or JSON, by extension) → `LLMR__SECTION__KEY` environment variables.
//! `${VAR}` (or `${VAR:-default}`) in any string value expands from the environment.
//! Unknown keys are rejected with their path; [`Settings::validate`] checks what serde
//! cannot (cross-field rules) and names the field too. Secrets are [`secrecy::SecretString`].
//!
//! # Layout
//! - [`settings`]: the sections and their defaults.
//! - [`load`]: layering and key resolution.
//! - `expand`: `${VAR}` expansion.
//! - [`files`]: prompt templates and the model catalog, read at load time.
//! - [`import`]: a LiteLLM `model_list` config turned into this configuration.
//! - [`redact`]: the effective configuration with every secret redacted; masked key hints.
//! - `validate`: cross-field rules, per section, every problem reported at once.
//! - `error`: [`ConfigError`] and [`Problem`].
//!
//! Imports run one way: load → {expand, files, validate} → error; import → settings.

mod error;
mod expand;
pub mod files;
pub mod import;
mod load;
pub mod redact;
mod settings;
mod validate;

pub use error::{ConfigError, Problem};
pub use load::{load, load_from, load_toml};
pub use redact::{mask_secret, redact_url};
pub use settings::*;

/// The built-in default configuration, embedded in the binary.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Unix milliseconds of an RFC 3339 time (`2027-01-31T00:00:00Z`), or None.
pub fn rfc3339_ms(t: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
