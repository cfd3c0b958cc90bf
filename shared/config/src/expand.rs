//! `${VAR}` / `${VAR:-default}` expansion of every string value, before deserialization,
//! so a secret can live in the environment while the file names where it goes.

use std::collections::HashMap;

use config::{Map, Value, ValueKind};

use crate::error::ConfigError;

/// Expands every string in `map`, reporting the key path of a variable that is not set.
pub(crate) fn expand_map(
    map: Map<String, Value>,
    env: &HashMap<String, String>,
    path: &str,
) -> Result<Map<String, Value>, ConfigError> {
    map.into_iter()
        .map(|(k, v)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            Ok((k, expand_value(v, env, &p)?))
        })
        .collect()
}

fn expand_value(v: Value, env: &HashMap<String, String>, path: &str) -> Result<Value, ConfigError> {
    let kind = match v.kind {
        ValueKind::String(s) => ValueKind::String(expand_str(&s, env).map_err(|Unset(var)| ConfigError::Invalid {
            field: path.to_owned(),
            message: format!("environment variable `{var}` is not set (used as ${{{var}}})"),
        })?),
        ValueKind::Table(t) => ValueKind::Table(expand_map(t, env, path)?),
        ValueKind::Array(a) => ValueKind::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, x)| expand_value(x, env, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    };
    Ok(Value::new(None, kind))
}

/// A variable that is unset and has no default.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unset(pub String);

/// Expands `${VAR}` and `${VAR:-default}`; `$${` stands for a literal `${`.
/// Fails with the first variable that is unset and has no default.
pub(crate) fn expand_str(s: &str, env: &HashMap<String, String>) -> Result<String, Unset> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                out.push_str(after);
                rest = "";
                break;
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(Unset(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("KEY".to_string(), "sk-1".to_string())])
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(expand_str("Bearer ${KEY}", &env()).unwrap(), "Bearer sk-1");
        assert_eq!(expand_str("${NOPE:-x}/${KEY}", &env()).unwrap(), "x/sk-1");
        assert_eq!(expand_str("plain $ and $${KEY}", &env()).unwrap(), "plain $ and ${KEY}");
    }

    #[test]
    fn names_an_unset_variable() {
        assert_eq!(expand_str("${MISSING}", &env()).unwrap_err(), Unset("MISSING".into()));
    }
}
