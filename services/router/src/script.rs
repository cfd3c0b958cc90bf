//! Scripted routing: `[routing] script` is a module whose default export receives
//! `{request, candidates, groups}` and returns the target (`"provider/model"` or
//! `{provider, model}`) or the group or model name (`"fast"` or `{group: "fast"}`) to use.
//! It runs in the same sandbox as tools (no host modules), is re-read when the file changes,
//! and any failure — an exception, a limit, an unknown answer — falls back to the default
//! strategy with a logged warning.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::SystemTime;

use llmr_script::{Call, ScriptPool};
use serde_json::{Value, json};

/// Why the routing script gave no usable answer (the router then routes by least load).
#[derive(Debug, thiserror::Error)]
pub enum ScriptFailure {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Run(#[from] llmr_script::ScriptError),
    #[error("the routing script returned {0}, not a target or group")]
    Unusable(Value),
}

/// What the script chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Target { provider: String, model: String },
    Route(String),
}

pub struct RoutingScript {
    path: PathBuf,
    pool: ScriptPool,
    source: RefCell<Option<((SystemTime, u64), String)>>,
}

impl RoutingScript {
    pub fn new(path: PathBuf, pool: ScriptPool) -> RoutingScript {
        RoutingScript {
            path,
            pool,
            source: RefCell::new(None),
        }
    }

    fn source(&self) -> Result<String, ScriptFailure> {
        let read = |source| ScriptFailure::Read {
            path: self.path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(read)?;
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        if let Some((s, text)) = self.source.borrow().as_ref()
            && *s == stamp
        {
            return Ok(text.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(read)?;
        self.source.replace(Some((stamp, text.clone())));
        Ok(text)
    }

    /// Runs the script on `args` (`{request, candidates, groups}`).
    pub async fn choose(&self, args: Value) -> Result<Choice, ScriptFailure> {
        let source = self.source()?;
        let out = self.pool.run(&Call::module(&source, "default", args)).await?;
        parse_choice(&out).ok_or(ScriptFailure::Unusable(out))
    }
}

/// Reads a script's answer.
pub fn parse_choice(v: &Value) -> Option<Choice> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match v {
        Value::String(text) => match text.split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => Some(Choice::Target {
                provider: p.into(),
                model: m.into(),
            }),
            _ if !text.is_empty() => Some(Choice::Route(text.clone())),
            _ => None,
        },
        Value::Object(_) => match (s("provider"), s("model"), s("group")) {
            (Some(provider), Some(model), _) => Some(Choice::Target { provider, model }),
            (None, _, Some(g)) => Some(Choice::Route(g)),
            (None, Some(m), None) => Some(Choice::Route(m)),
            _ => None,
        },
        _ => None,
    }
}

/// The summary of a request a routing script sees.
pub fn summary(model: &str, body: &[u8], stream: bool) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let messages = v.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let has_images = messages.iter().any(|m| {
        m.get("content").and_then(Value::as_array).is_some_and(|parts| {
            parts.iter().any(|p| {
                matches!(
                    p.get("type").and_then(Value::as_str),
                    Some("image_url" | "input_image" | "image")
                )
            })
        })
    });
    let last_user = llmr_protocol::chat::last_user_text(&v, "\n");
    json!({
        "model": model,
        "message_count": messages.len(),
        "estimated_tokens": body.len() / 4,
        "has_tools": v.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()),
        "has_images": has_images,
        "stream": stream,
        "last_user_message": last_user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_targets_and_groups() {
        assert_eq!(
            parse_choice(&json!("a/m1")),
            Some(Choice::Target {
                provider: "a".into(),
                model: "m1".into()
            })
        );
        assert_eq!(parse_choice(&json!("fast")), Some(Choice::Route("fast".into())));
        assert_eq!(
            parse_choice(&json!({"provider": "b", "model": "x"})),
            Some(Choice::Target {
                provider: "b".into(),
                model: "x".into()
            })
        );
        assert_eq!(parse_choice(&json!({"group": "g"})), Some(Choice::Route("g".into())));
        assert_eq!(parse_choice(&json!(null)), None);
        assert_eq!(parse_choice(&json!(3)), None);
    }

    #[test]
    fn summarizes_requests() {
        let body = br#"{"model":"auto","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}],"tools":[{"type":"function"}]}"#;
        let s = summary("auto", body, true);
        assert_eq!(s["message_count"], json!(2));
        assert_eq!(s["has_images"], json!(true));
        assert_eq!(s["has_tools"], json!(true));
        assert_eq!(s["last_user_message"], json!("hi"));
        assert_eq!(s["stream"], json!(true));
    }
}
