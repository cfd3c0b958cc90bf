//! Cross-field rules serde cannot express, one function per section. Validation never
//! stops at the first problem: every problem is collected, each naming its field.

use std::collections::HashSet;

use crate::error::{ConfigError, Problem};
use crate::settings::{Chaos, Provider, ProviderType, Settings};

/// Problems found so far.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem with `field` unless `ok`.
    fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.0.push(Problem {
                field: field.into(),
                message: message.into(),
            });
        }
    }

    fn into_result(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => {
                let p = self.0.remove(0);
                Err(ConfigError::Invalid {
                    field: p.field,
                    message: p.message,
                })
            }
            _ => Err(ConfigError::Many(self.0)),
        }
    }
}

fn http_url(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

impl Settings {
    /// Checks every section; reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.check_server(&mut p);
        self.check_governance(&mut p);
        self.check_redis(&mut p);
        self.check_routing(&mut p);
        self.check_scripting(&mut p);
        self.check_mcp(&mut p);
        p.check(self.responses.ttl_ms > 0, "responses.ttl_ms", "must be greater than 0");
        p.check(
            !(self.server.cors_credentials && self.server.cors_origins.iter().any(|o| o == "*")),
            "server.cors_credentials",
            "cannot be true with the origin `*` (browsers refuse it); list the origins",
        );
        p.check(self.cache.ttl_ms > 0, "cache.ttl_ms", "must be greater than 0");
        p.check(
            self.responses.max_in_flight > 0,
            "responses.max_in_flight",
            "must be greater than 0",
        );
        self.check_providers(&mut p);
        self.check_models(&mut p);
        p.into_result()
    }

    fn check_server(&self, p: &mut Problems) {
        let s = &self.server;
        p.check(!s.host.is_empty(), "server.host", "must not be empty");
        p.check(s.max_body_bytes > 0, "server.max_body_bytes", "must be greater than 0");
        p.check(
            s.request_timeout_ms > 0,
            "server.request_timeout_ms",
            "must be greater than 0",
        );
    }

    /// `[[keys]]`, `[[teams]]` and `[log]`.
    fn check_governance(&self, p: &mut Problems) {
        let limits = |p: &mut Problems, at: &str, l: &llmr_protocol::limits::Limits| {
            p.check(
                l.budget_usd.is_none_or(|b| b >= 0.0 && b.is_finite()),
                format!("{at}.budget_usd"),
                "must be a number of dollars, 0 or more",
            );
        };
        let mut ids = HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            let secret = !secrecy::ExposeSecret::expose_secret(&k.key).is_empty();
            p.check(
                secret == k.hash.is_empty(),
                format!("{at}.key"),
                "set `key` (the secret) or `hash`, not both",
            );
            p.check(
                k.hash.is_empty() || (k.hash.len() == 64 && k.hash.bytes().all(|b| b.is_ascii_hexdigit())),
                format!("{at}.hash"),
                "must be the secret's SHA-256 in hex (64 characters)",
            );
            p.check(
                ids.insert(k.key_id().to_owned()),
                format!("{at}.id"),
                "two keys have this id",
            );
            p.check(
                k.key_id() != "default",
                format!("{at}.id"),
                "`default` is server.token's",
            );
            p.check(
                k.expires_at.as_deref().is_none_or(|t| crate::rfc3339_ms(t).is_some()),
                format!("{at}.expires_at"),
                "must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z",
            );
            limits(p, &at, &k.limits);
        }
        let mut teams = HashSet::new();
        for (i, t) in self.teams.iter().enumerate() {
            let at = format!("teams[{i}]");
            p.check(
                teams.insert(t.team_id().to_owned()),
                format!("{at}.id"),
                "two teams have this id",
            );
            limits(p, &at, &t.limits);
        }
        p.check(self.log.max_records > 0, "log.max_records", "must be greater than 0");
        p.check(self.log.max_age_ms > 0, "log.max_age_ms", "must be greater than 0");
    }

    fn check_redis(&self, p: &mut Problems) {
        let r = &self.redis;
        if let Some(url) = r.url() {
            p.check(
                url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"),
                "redis.url",
                "must start with redis://, rediss:// or unix:// (or be empty for in-memory)",
            );
        }
        p.check(!r.prefix.is_empty(), "redis.prefix", "must not be empty");
        p.check(r.claim_idle_ms >= 100, "redis.claim_idle_ms", "must be at least 100");
        p.check(r.pool_size > 0, "redis.pool_size", "must be greater than 0");
    }

    /// Router, worker and health: how requests are routed and run.
    fn check_routing(&self, p: &mut Problems) {
        p.check(self.router.batch > 0, "router.batch", "must be greater than 0");
        p.check(
            self.router.models_refresh_ms >= 1000,
            "router.models_refresh_ms",
            "must be at least 1000",
        );
        p.check(
            self.router.max_attempts > 0,
            "router.max_attempts",
            "must be at least 1",
        );
        p.check(
            self.worker.max_in_flight > 0,
            "worker.max_in_flight",
            "must be greater than 0",
        );
        p.check(
            self.worker.max_response_bytes > 0,
            "worker.max_response_bytes",
            "must be greater than 0",
        );
        p.check(
            self.health.failure_threshold > 0,
            "health.failure_threshold",
            "must be at least 1",
        );
        p.check(
            self.routing.script.is_empty() || self.routing.wall_ms > 0,
            "routing.wall_ms",
            "must be greater than 0 when a routing script is set",
        );
    }

    fn check_scripting(&self, p: &mut Problems) {
        let sc = &self.scripting;
        p.check(
            sc.wall_ms > 0 && sc.hosts > 0 && sc.memory_mb >= 32 && sc.max_result_bytes > 0,
            "scripting",
            "wall_ms, hosts and max_result_bytes must be > 0 and memory_mb at least 32",
        );
    }

    fn check_mcp(&self, p: &mut Problems) {
        p.check(self.mcp.page_size > 0, "mcp.page_size", "must be greater than 0");
        let mut namespaces = HashSet::new();
        for (i, r) in self.mcp.remote_servers.iter().enumerate() {
            let f = |k: &str| format!("mcp.remote_servers[{i}].{k}");
            p.check(
                !r.namespace.is_empty() && r.namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                f("namespace"),
                "must be non-empty letters, digits or `-`",
            );
            p.check(
                namespaces.insert(r.namespace.as_str()),
                f("namespace"),
                "is used by another remote server",
            );
            p.check(http_url(&r.url), f("url"), "must be an http:// or https:// URL");
        }
    }

    fn check_providers(&self, p: &mut Problems) {
        let mut seen = HashSet::new();
        for (i, pr) in self.providers.iter().enumerate() {
            let f = |k: &str| format!("providers[{i}].{k}");
            p.check(
                !pr.name.is_empty() && !pr.name.contains('/') && !pr.name.contains(char::is_whitespace),
                f("name"),
                "must be non-empty, without `/` or spaces",
            );
            p.check(
                seen.insert(pr.name.as_str()),
                f("name"),
                format!("`{}` is used by another provider", pr.name),
            );
            p.check(!pr.pool.is_empty(), f("pool"), "must not be empty");
            check_provider_type(pr, &f, p);
            p.check(pr.weight > 0, f("weight"), "must be at least 1");
            p.check(
                pr.cost_input_per_mtok >= 0.0 && pr.cost_output_per_mtok >= 0.0,
                f("cost_input_per_mtok"),
                "prices must not be negative",
            );
            for k in pr.extra_headers.keys() {
                p.check(
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    f(&format!("extra_headers.{k}")),
                    "is not a valid header name",
                );
            }
        }
    }

    fn check_models(&self, p: &mut Problems) {
        let mut groups = HashSet::new();
        for (i, g) in self.models.iter().enumerate() {
            let f = |k: &str| format!("models[{i}].{k}");
            p.check(
                !g.name.is_empty() && groups.insert(g.name.as_str()),
                f("name"),
                format!("`{}` is empty or names another group too", g.name),
            );
            p.check(!g.targets.is_empty(), f("targets"), "a group needs at least one target");
            for (t, target) in g.targets.iter().enumerate() {
                p.check(
                    self.providers.iter().any(|pr| pr.name == target.provider),
                    f(&format!("targets[{t}].provider")),
                    format!("no provider is named `{}`", target.provider),
                );
                p.check(
                    target.weight != Some(0),
                    f(&format!("targets[{t}].weight")),
                    "must be at least 1",
                );
            }
        }
        for (i, g) in self.models.iter().enumerate() {
            for (k, fb) in g.fallbacks.iter().enumerate() {
                p.check(
                    groups.contains(fb.as_str()) && *fb != g.name,
                    format!("models[{i}].fallbacks[{k}]"),
                    format!("`{fb}` is not another model group"),
                );
            }
        }
    }
}

/// What each provider type needs (and refuses).
fn check_provider_type(pr: &Provider, f: &dyn Fn(&str) -> String, p: &mut Problems) {
    match pr.kind {
        ProviderType::Openai => p.check(
            http_url(&pr.base_url),
            f("base_url"),
            "an `openai` provider needs an http:// or https:// base_url",
        ),
        ProviderType::Gemini | ProviderType::Anthropic | ProviderType::Ollama => p.check(
            pr.base_url.is_empty() || http_url(&pr.base_url),
            f("base_url"),
            "its base_url must be http:// or https:// (or empty for the vendor's own)",
        ),
        ProviderType::Azure => {
            p.check(
                http_url(&pr.base_url),
                f("base_url"),
                "an `azure` provider needs its resource URL, e.g. https://NAME.openai.azure.com",
            );
            p.check(
                !pr.api_version.is_empty(),
                f("api_version"),
                "an `azure` provider needs an api_version",
            );
            p.check(
                !pr.models.is_empty(),
                f("models"),
                "an `azure` provider needs its model list (Azure lists deployments elsewhere)",
            );
        }
        ProviderType::Echo | ProviderType::Chaos => p.check(
            !pr.models.is_empty(),
            f("models"),
            "a built-in provider needs a static model list",
        ),
    }
    p.check(
        !pr.responses || pr.kind == ProviderType::Openai,
        f("responses"),
        "only an `openai` provider can take Responses natively",
    );
    match (&pr.chaos, pr.kind) {
        (Some(c), ProviderType::Chaos) => check_chaos(c, f, p),
        (Some(_), _) => {
            p.check(false, f("chaos"), "only a `chaos` provider takes failure rates");
        }
        (None, _) => {}
    }
}

fn check_chaos(c: &Chaos, f: &dyn Fn(&str) -> String, p: &mut Problems) {
    let rates = [
        ("error_rate", c.error_rate),
        ("rate_limit_rate", c.rate_limit_rate),
        ("rate_limit_bare_rate", c.rate_limit_bare_rate),
        ("refuse_rate", c.refuse_rate),
        ("hang_rate", c.hang_rate),
        ("drop_rate", c.drop_rate),
        ("malformed_rate", c.malformed_rate),
    ];
    for (name, r) in rates {
        p.check(
            (0.0..=1.0).contains(&r),
            f(&format!("chaos.{name}")),
            "must be between 0 and 1",
        );
    }
    p.check(
        rates.iter().map(|(_, r)| r).sum::<f64>() <= 1.0,
        f("chaos"),
        "the rates add up to more than 1",
    );
}

#[cfg(test)]
mod tests {
    use crate::load_from;
    use std::collections::HashMap;

    #[test]
    fn reports_every_problem_at_once_each_naming_its_field() {
        let env: HashMap<String, String> = [
            ("LLMR__SERVER__MAX_BODY_BYTES", "0"),
            ("LLMR__REDIS__CLAIM_IDLE_MS", "5"),
            ("LLMR__ROUTER__BATCH", "0"),
            ("LLMR__MCP__PAGE_SIZE", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = load_from(None, env).unwrap_err();
        let fields: Vec<String> = e.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "server.max_body_bytes",
                "redis.claim_idle_ms",
                "router.batch",
                "mcp.page_size"
            ]
        );
        let text = e.to_string();
        assert!(text.starts_with("the configuration has 4 problems"), "{text}");
        assert!(
            text.contains("configuration field `router.batch`: must be greater than 0"),
            "{text}"
        );
    }

    #[test]
    fn azure_needs_its_version_and_models_and_only_openai_takes_responses() {
        let path = std::env::temp_dir().join(format!("llmr-validate-azure-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[[providers]]\nname = 'az'\ntype = 'azure'\nbase_url = 'https://x.openai.azure.com'\n\
             [[providers]]\nname = 'gm'\ntype = 'gemini'\nresponses = true\n",
        )
        .unwrap();
        let e = load_from(Some(&path), HashMap::new()).unwrap_err();
        let _ = std::fs::remove_file(&path);
        let fields: Vec<String> = e.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "providers[0].api_version",
                "providers[0].models",
                "providers[1].responses"
            ],
            "{e}"
        );
    }
}
