//! The effective configuration as operators may see it (the console's config page, the admin
//! API): every section serialised as loaded, with every secret replaced by `[redacted]`.
//!
//! What counts as a secret is said by the types and attributes in [`crate::settings`], not by
//! a list of paths: every [`SecretString`] is serialised through [`secret`] (so a new secret
//! field cannot be forgotten: `SecretString` has no `Serialize` of its own); URLs lose their
//! credentials and query values ([`redact_url`]); provider header values are redacted whole;
//! a config key's hash too. An unset secret shows as `""`, so "not set" stays visible.
//!
//! [`mask_secret`] is the other view of a secret: enough to tell two keys apart
//! (`sk-…abcd`), never enough to use one.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

use crate::Settings;

/// What a secret is shown as.
pub const REDACTED: &str = "[redacted]";

impl Settings {
    /// The effective configuration as JSON, every secret redacted.
    pub fn redacted(&self) -> serde_json::Value {
        // Serialising plain data into a JSON value cannot fail; a failure would be a bug in a
        // serializer above, shown rather than hidden.
        serde_json::to_value(self)
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("the configuration could not be shown: {e}") }))
    }
}

fn shown(set: bool) -> &'static str {
    if set { REDACTED } else { "" }
}

/// A secret: `[redacted]`, or `""` when unset.
pub(crate) fn secret<S: Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(shown(!s.expose_secret().is_empty()))
}

/// A list of secrets, each as [`secret`] shows it.
pub(crate) fn secrets<S: Serializer>(v: &[SecretString], ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(v.iter().map(|s| shown(!s.expose_secret().is_empty())))
}

/// A plain string that is secret all the same (a key's hash): as [`secret`].
pub(crate) fn text<S: Serializer>(s: &str, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(shown(!s.is_empty()))
}

/// A URL held as a secret (`redis.url`): its credentials and query values redacted.
pub(crate) fn secret_url<S: Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&redact_url(s.expose_secret()))
}

/// A URL: its credentials and query values redacted.
pub(crate) fn url<S: Serializer>(s: &str, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&redact_url(s))
}

/// A map whose values may be credentials (headers): names kept, values redacted.
pub(crate) fn values<S: Serializer>(m: &BTreeMap<String, String>, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_map(m.iter().map(|(k, v)| (k, shown(!v.is_empty()))))
}

/// `url` with what may be a credential redacted: the user information before `@`
/// (`redis://[redacted]@host:6379/0`) and every query value (`?key=[redacted]`). Anything
/// else — scheme, host, port, path — is kept, so operators still see where it points.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
            let pairs: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) => format!("{k}={REDACTED}"),
                    None => p.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", pairs.join("&"))
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// A secret as a hint that tells keys apart: its prefix up to the first `-` (when short,
/// like `sk-`), `…`, and its last four characters — only for secrets of 20 characters or
/// more, so at most a fifth of one shows; a shorter one shows its prefix alone.
pub fn mask_secret(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    let prefix: String = match chars.iter().position(|c| *c == '-') {
        Some(i) if i <= 3 && chars.len() >= 12 => chars[..=i].iter().collect(),
        _ => String::new(),
    };
    let tail: String = if chars.len() >= 20 {
        chars[chars.len() - 4..].iter().collect()
    } else {
        String::new()
    };
    format!("{prefix}…{tail}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_query_values_only() {
        assert_eq!(
            redact_url("redis://user:pa55@redis.internal:6379/0"),
            "redis://[redacted]@redis.internal:6379/0"
        );
        assert_eq!(redact_url("redis://:pa55@10.0.0.1"), "redis://[redacted]@10.0.0.1");
        assert_eq!(
            redact_url("https://api.example.com/v1?key=abc&x=1#frag"),
            "https://api.example.com/v1?key=[redacted]&x=[redacted]#frag"
        );
        assert_eq!(redact_url("http://127.0.0.1:9000/v1"), "http://127.0.0.1:9000/v1");
        assert_eq!(redact_url("https://tok@host/p@th"), "https://[redacted]@host/p@th");
        assert_eq!(redact_url(""), "");
    }

    #[test]
    fn masks_show_a_fifth_at_most() {
        assert_eq!(mask_secret("sk-abcdefghijklmnopqrstuvwxyz"), "sk-…wxyz");
        assert_eq!(mask_secret("sk-short-key-1"), "sk-…");
        assert_eq!(mask_secret("sk-up-1"), "…");
        assert_eq!(mask_secret("AIzaSyA-0123456789abcdefghij"), "…ghij");
        assert_eq!(mask_secret(""), "");
    }

    #[test]
    fn the_effective_configuration_never_shows_a_secret() {
        let toml = r#"
[server]
token = "main-token-123"
admin_token = "admin-token-456"
[redis]
url = "redis://app:redis-pass-789@127.0.0.1:6379/0"
[telemetry]
otlp_headers = "authorization=otlp-secret"
otlp_endpoint = "https://collector:otlp-pass@otel.example.com:4317"
[[providers]]
name = "up"
type = "openai"
base_url = "https://user:base-pass@api.example.com/v1"
api_keys = ["sk-provider-key-abcdefghijkl"]
keys = [{ key = "sk-entry-key-abcdefghijkl" }]
extra_headers = { "x-api-token" = "header-secret" }
models = ["m"]
[[mcp.remote_servers]]
namespace = "docs"
url = "http://remote.example.com/mcp?token=remote-query-secret"
token = "remote-token-secret"
[[keys]]
name = "ci"
key = "sk-llmr-config-key-secret"
"#;
        let s = crate::load_toml(toml, Default::default()).unwrap();
        let shown = s.redacted().to_string();
        for secret in [
            "main-token-123",
            "admin-token-456",
            "redis-pass-789",
            "otlp-secret",
            "otlp-pass",
            "base-pass",
            "sk-provider-key",
            "sk-entry-key",
            "header-secret",
            "remote-query-secret",
            "remote-token-secret",
            "sk-llmr-config-key-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} shows in {shown}");
        }
        let v = s.redacted();
        assert_eq!(v["server"]["token"], REDACTED);
        assert_eq!(v["redis"]["url"], "redis://[redacted]@127.0.0.1:6379/0");
        assert_eq!(v["providers"][0]["api_keys"][0], REDACTED);
        assert_eq!(v["providers"][0]["type"], "openai");
        assert_eq!(v["providers"][0]["extra_headers"]["x-api-token"], REDACTED);
        assert_eq!(v["mcp"]["remote_servers"][0]["token"], REDACTED);
        assert_eq!(v["keys"][0]["key"], REDACTED);
        assert!(
            [REDACTED, ""].contains(&v["keys"][0]["hash"].as_str().unwrap()),
            "{}",
            v["keys"][0]
        );
        assert_eq!(v["ui"]["enabled"], true);
        assert_eq!(v["router"]["strategy"], "least_load");
        assert_eq!(v["degraded"]["cache"], "closed");
        assert_eq!(v["server"]["max_body_bytes"], s.server.max_body_bytes);
    }
}
