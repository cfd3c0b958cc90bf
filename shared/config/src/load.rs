//! Layering (default → file → environment), expansion and validation.

use std::collections::HashMap;
use std::path::Path;

use config::{Config, Environment, File, FileFormat, Map, Source, Value};

use crate::expand::expand_map;
use crate::settings::{ProviderType, Settings};

/// Why the configuration could not be used. Every variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

/// Loads settings from the built-in default, `file` and the process environment.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_from(file, std::env::vars().collect())
}

/// Like [`load`], with the environment given (tests use this).
pub fn load_from(
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    let mut b = Config::builder().add_source(File::from_str(crate::DEFAULT_TOML, FileFormat::Toml));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Invalid {
                field: "--config".into(),
                message: format!("file {} does not exist", path.display()),
            });
        }
        b = b.add_source(File::from(path).required(true));
    }
    let vars: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("LLMR__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    b = b.add_source(
        Environment::with_prefix("LLMR")
            .prefix_separator("__")
            .separator("__")
            .source(Some(vars)),
    );
    let raw = b.build()?;
    let expanded = Expanded(expand_map(raw.collect()?, &env, "")?);
    let settings: Settings = Config::builder()
        .add_source(expanded)
        .build()?
        .try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

#[derive(Debug, Clone)]
struct Expanded(Map<String, Value>);

impl Source for Expanded {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl Settings {
    /// Cross-field rules serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.host.is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        if self.server.request_timeout_ms == 0 {
            return Err(invalid(
                "server.request_timeout_ms",
                "must be greater than 0",
            ));
        }
        if let Some(url) = self.redis.url()
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
        {
            return Err(invalid(
                "redis.url",
                "must start with redis://, rediss:// or unix:// (or be empty for in-memory)",
            ));
        }
        if self.redis.prefix.is_empty() {
            return Err(invalid("redis.prefix", "must not be empty"));
        }
        if self.redis.claim_idle_ms < 100 {
            return Err(invalid("redis.claim_idle_ms", "must be at least 100"));
        }
        if self.redis.pool_size == 0 {
            return Err(invalid("redis.pool_size", "must be greater than 0"));
        }
        if self.router.batch == 0 {
            return Err(invalid("router.batch", "must be greater than 0"));
        }
        if self.router.models_refresh_ms < 1000 {
            return Err(invalid("router.models_refresh_ms", "must be at least 1000"));
        }
        if self.worker.max_in_flight == 0 {
            return Err(invalid("worker.max_in_flight", "must be greater than 0"));
        }
        if self.worker.max_response_bytes == 0 {
            return Err(invalid(
                "worker.max_response_bytes",
                "must be greater than 0",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let f = |k: &str| format!("providers[{i}].{k}");
            if p.name.is_empty() || p.name.contains('/') || p.name.contains(char::is_whitespace) {
                return Err(invalid(
                    f("name"),
                    "must be non-empty, without `/` or spaces",
                ));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(invalid(
                    f("name"),
                    format!("`{}` is used by another provider", p.name),
                ));
            }
            if p.pool.is_empty() {
                return Err(invalid(f("pool"), "must not be empty"));
            }
            match p.kind {
                ProviderType::Openai => {
                    if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                        return Err(invalid(
                            f("base_url"),
                            "an `openai` provider needs an http:// or https:// base_url",
                        ));
                    }
                }
                ProviderType::Echo => {
                    if p.models.is_empty() {
                        return Err(invalid(
                            f("models"),
                            "an `echo` provider needs a static model list",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(ext: &str, text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::new(ext, text)
    }

    /// A tiny temp-file helper (std only).
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn new(ext: &str, text: &str) -> TempPath {
                let p = std::env::temp_dir().join(format!(
                    "llmr-cfg-{}.{ext}",
                    std::process::id() as u128 * 1000 + rand_suffix()
                ));
                let mut f = std::fs::File::create(&p).unwrap();
                super::Write::write_all(&mut f, text.as_bytes()).unwrap();
                TempPath(p)
            }
        }
        fn rand_suffix() -> u128 {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            N.fetch_add(1, Ordering::Relaxed) as u128
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn built_in_default_serves_echo_in_memory() {
        let s = load_from(None, env(&[])).unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.server.host, "127.0.0.1");
        assert!(s.server.token().is_none());
        assert!(s.redis.url().is_none());
        assert_eq!(s.redis.prefix, "llmr:");
        assert_eq!(s.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(s.providers.len(), 1);
        assert_eq!(s.providers[0].kind, ProviderType::Echo);
        assert_eq!(s.providers[0].models, vec!["echo"]);
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = file("toml", "[server]\nport = 9000\ntoken = \"file\"\n");
        let s = load_from(
            Some(&f.0),
            env(&[
                ("LLMR__SERVER__PORT", "9100"),
                ("LLMR__SERVER__HOST", "0.0.0.0"),
                ("LLMR__SERVER__TOKEN", "envtok"),
                ("LLMR__REDIS__URL", "redis://127.0.0.1:1/"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 9100);
        assert_eq!(s.server.host, "0.0.0.0");
        assert_eq!(s.server.token(), Some("envtok"));
        assert_eq!(s.redis.url(), Some("redis://127.0.0.1:1/"));
    }

    #[test]
    fn reads_yaml_and_json_files() {
        let y = file("yaml", "server:\n  port: 7001\n");
        assert_eq!(load_from(Some(&y.0), env(&[])).unwrap().server.port, 7001);
        let j = file("json", r#"{"server":{"port":7002}}"#);
        assert_eq!(load_from(Some(&j.0), env(&[])).unwrap().server.port, 7002);
    }

    #[test]
    fn rejects_unknown_keys_with_their_path() {
        let f = file("toml", "[server]\nprot = 1\n");
        let e = load_from(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("prot") && e.contains("server"), "{e}");
        let f = file(
            "toml",
            "[[providers]]\nname = \"a\"\ntype = \"echo\"\nmodels = [\"m\"]\nkeys = []\n",
        );
        let e = load_from(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("keys") && e.contains("providers[0]"), "{e}");
    }

    #[test]
    fn rejects_wrong_types_naming_the_field() {
        let e = load_from(None, env(&[("LLMR__SERVER__PORT", "eighty")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.port"), "{e}");
    }

    #[test]
    fn expands_environment_variables_in_strings() {
        let f = file(
            "toml",
            "[[providers]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"${UP_URL}\"\napi_keys = [\"${UP_KEY}\", \"lit\"]\n",
        );
        let s = load_from(
            Some(&f.0),
            env(&[("UP_URL", "http://127.0.0.1:9/v1"), ("UP_KEY", "sk-x")]),
        )
        .unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(s.providers[0].base_url, "http://127.0.0.1:9/v1");
        assert_eq!(s.providers[0].api_keys[0].expose_secret(), "sk-x");
        let e = load_from(Some(&f.0), env(&[("UP_URL", "http://x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("providers.api_keys[0]") || e.contains("providers[0].api_keys[0]"),
            "{e}"
        );
        assert!(e.contains("UP_KEY"), "{e}");
    }

    #[test]
    fn validates_cross_field_rules() {
        let f = file("toml", "[[providers]]\nname = \"up\"\ntype = \"openai\"\n");
        let e = load_from(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("providers[0].base_url"), "{e}");
        let f = file(
            "toml",
            "[[providers]]\nname = \"echo\"\ntype = \"echo\"\nmodels=[\"x\"]\n[[providers]]\nname = \"echo\"\ntype = \"echo\"\nmodels=[\"y\"]\n",
        );
        let e = load_from(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("providers[1].name"), "{e}");
        let e = load_from(None, env(&[("LLMR__REDIS__URL", "http://nope")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis.url"), "{e}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let e = load_from(Some(Path::new("/nonexistent/x.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }

    #[test]
    fn allowlist_and_denylist_filter_models() {
        let f = file(
            "toml",
            "[[providers]]\nname = \"up\"\ntype = \"openai\"\nbase_url=\"http://x\"\nallowlist=[\"a\",\"b\"]\ndenylist=[\"b\"]\n",
        );
        let s = load_from(Some(&f.0), env(&[])).unwrap();
        let p = &s.providers[0];
        let all = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(p.filter_models(&all), vec!["a"]);
    }

    #[test]
    fn summary_redacts_secrets() {
        let s = load_from(None, env(&[("LLMR__SERVER__TOKEN", "supersecret")])).unwrap();
        let sum = s.summary();
        assert!(!sum.contains("supersecret"));
        assert!(sum.contains("redacted"));
    }
}
