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
//! - `validate`: cross-field rules, per section, every problem reported at once.
//! - `error`: [`ConfigError`] and [`Problem`].
//!
//! Imports run one way: load → {expand, files, validate} → error; import → settings.

mod error;
mod expand;
pub mod files;
pub mod import;
mod load;
mod settings;
mod validate;

pub use error::{ConfigError, Problem};
pub use load::{load, load_from, load_toml};
pub use settings::*;

/// The built-in default configuration, embedded in the binary.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");
