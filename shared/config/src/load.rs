//! Layering (default → file → environment), expansion and validation.

use std::collections::HashMap;
use std::path::Path;

use config::{Config, Environment, File, FileFormat, Map, Source, Value};

use secrecy::{ExposeSecret, SecretString};

use crate::error::ConfigError;
use crate::expand::expand_map;
use crate::settings::Settings;

/// Loads settings from the built-in default, `file` and the process environment.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_from(file, std::env::vars().collect())
}

/// Like [`load`], with the environment given (tests use this).
pub fn load_from(file: Option<&Path>, env: HashMap<String, String>) -> Result<Settings, ConfigError> {
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
    layered(b, env)
}

/// Like [`load_from`], with the file's TOML text given instead of its path (the fuzz target
/// uses this; relative paths in it are relative to the working directory).
pub fn load_toml(text: &str, env: HashMap<String, String>) -> Result<Settings, ConfigError> {
    let b = Config::builder()
        .add_source(File::from_str(crate::DEFAULT_TOML, FileFormat::Toml))
        .add_source(File::from_str(text, FileFormat::Toml));
    layered(b, env)
}

/// The environment on top of `b`, then expansion, keys, files and validation.
fn layered(
    mut b: config::ConfigBuilder<config::builder::DefaultState>,
    env: HashMap<String, String>,
) -> Result<Settings, ConfigError> {
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
    let mut settings: Settings = Config::builder().add_source(expanded).build()?.try_deserialize()?;
    settings.resolve_keys(&env)?;
    crate::files::load_files(&mut settings)?;
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
    /// Gathers every provider's keys (`api_keys`, `api_key_env`, `keys`) into `resolved_keys`.
    fn resolve_keys(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for (i, p) in self.providers.iter_mut().enumerate() {
            let mut keys: Vec<SecretString> = p.api_keys.clone();
            let from_env = |var: &str, field: String| {
                env.get(var)
                    .filter(|v| !v.is_empty())
                    .map(|v| SecretString::from(v.clone()))
                    .ok_or_else(|| invalid(field, format!("environment variable `{var}` is not set")))
            };
            if !p.api_key_env.is_empty() {
                keys.push(from_env(&p.api_key_env, format!("providers[{i}].api_key_env"))?);
            }
            for (k, entry) in p.keys.iter().enumerate() {
                match (entry.key.expose_secret().is_empty(), entry.key_env.is_empty()) {
                    (false, true) => keys.push(entry.key.clone()),
                    (true, false) => keys.push(from_env(&entry.key_env, format!("providers[{i}].keys[{k}].key_env"))?),
                    _ => {
                        return Err(invalid(
                            format!("providers[{i}].keys[{k}]"),
                            "needs exactly one of `key` and `key_env`",
                        ));
                    }
                }
            }
            keys.retain(|k| !k.expose_secret().is_empty());
            p.resolved_keys = keys;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ProviderType;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
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
            "[[providers]]\nname = \"a\"\ntype = \"echo\"\nmodels = [\"m\"]\nkees = []\n",
        );
        let e = load_from(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("kees") && e.contains("providers[0]"), "{e}");
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
    fn gathers_keys_from_every_source() {
        let f = file(
            "toml",
            "[[providers]]\nname='up'\ntype='openai'\nbase_url='http://x'\napi_keys=['a']\napi_key_env='K2'\n[[providers.keys]]\nkey='c'\n[[providers.keys]]\nkey_env='K4'\n",
        );
        let s = load_from(Some(&f.0), env(&[("K2", "b"), ("K4", "d")])).unwrap();
        let keys: Vec<&str> = s.providers[0].resolved_keys.iter().map(|k| k.expose_secret()).collect();
        assert_eq!(keys, vec!["a", "b", "c", "d"]);
        let e = load_from(Some(&f.0), env(&[("K2", "b")])).unwrap_err().to_string();
        assert!(e.contains("providers[0].keys[1].key_env") && e.contains("K4"), "{e}");
    }

    #[test]
    fn validates_model_groups() {
        let base = "[[providers]]\nname='a'\ntype='echo'\nmodels=['m']\n";
        let ok = file(
            "toml",
            &format!(
                "{base}[[models]]\nname='g'\nstrategy='weighted'\ntargets=[{{provider='a',model='m',weight=3}}]\nfallbacks=['h']\n[[models]]\nname='h'\ntargets=[{{provider='a',model='m'}}]\n"
            ),
        );
        let s = load_from(Some(&ok.0), env(&[])).unwrap();
        assert_eq!(s.models[0].strategy, Some(crate::Strategy::Weighted));
        assert_eq!(s.models[0].targets[0].weight, Some(3));
        let bad = file(
            "toml",
            &format!("{base}[[models]]\nname='g'\ntargets=[{{provider='nope',model='m'}}]\n"),
        );
        let e = load_from(Some(&bad.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("models[0].targets[0].provider"), "{e}");
        let bad = file(
            "toml",
            &format!("{base}[[models]]\nname='g'\ntargets=[{{provider='a',model='m'}}]\nfallbacks=['zz']\n"),
        );
        let e = load_from(Some(&bad.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("models[0].fallbacks[0]"), "{e}");
        let bad = file(
            "toml",
            &format!("{base}[[models]]\nname='g'\nstrategy='fastest'\ntargets=[{{provider='a',model='m'}}]\n"),
        );
        let e = load_from(Some(&bad.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("fastest"), "{e}");
    }

    #[test]
    fn validates_chaos_rates() {
        let f = file(
            "toml",
            "[[providers]]\nname='c'\ntype='chaos'\nmodels=['m']\n[providers.chaos]\nerror_rate=0.3\nrate_limit_rate=0.2\nretry_after_s=2\n",
        );
        let s = load_from(Some(&f.0), env(&[])).unwrap();
        assert_eq!(s.providers[0].chaos.as_ref().unwrap().retry_after_s, 2);
        let f = file(
            "toml",
            "[[providers]]\nname='c'\ntype='chaos'\nmodels=['m']\n[providers.chaos]\nerror_rate=1.5\n",
        );
        let e = load_from(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("providers[0].chaos.error_rate"), "{e}");
        let f = file(
            "toml",
            "[[providers]]\nname='c'\ntype='echo'\nmodels=['m']\n[providers.chaos]\nerror_rate=0.1\n",
        );
        assert!(
            load_from(Some(&f.0), env(&[]))
                .unwrap_err()
                .to_string()
                .contains("providers[0].chaos")
        );
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

#[cfg(test)]
mod examples {
    /// Every shipped example configuration loads and validates.
    #[test]
    fn example_configurations_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|e| e == "toml" || e == "yaml" || e == "json")
            {
                super::load_from(Some(&path), Default::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no example in {}", dir.display());
    }
}
