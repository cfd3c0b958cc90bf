//! Why a configuration could not be used: every problem names its field.

use std::fmt;

/// One invalid field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration field `{}`: {}", self.field, self.message)
    }
}

/// Why the configuration could not be used, or a template it holds could not be filled.
/// Every variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration field `{field}`: {message}")]
    Invalid { field: String, message: String },
    /// Validation found several problems; all of them are listed.
    #[error("the configuration has {} problems:\n{}", .0.len(), list(.0))]
    Many(Vec<Problem>),
    /// Filling a template: none has this name (field `templates.path`).
    #[error("there is no template `{name}`")]
    NoTemplate { name: String },
    /// Filling a template: these placeholders were given no value.
    #[error("template `{name}` needs a value for {}", .missing.join(", "))]
    MissingValues { name: String, missing: Vec<String> },
}

/// The message alone, as a client reads it (the gateway puts it in an error body).
fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n")
}

impl ConfigError {
    /// Every problem this error names.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Load(e) => vec![Problem {
                field: String::new(),
                message: e.to_string(),
            }],
            ConfigError::Invalid { field, message } => vec![Problem {
                field: field.clone(),
                message: message.clone(),
            }],
            ConfigError::Many(p) => p.clone(),
            ConfigError::NoTemplate { .. } | ConfigError::MissingValues { .. } => vec![Problem {
                field: "templates.path".into(),
                message: self.to_string(),
            }],
        }
    }
}
