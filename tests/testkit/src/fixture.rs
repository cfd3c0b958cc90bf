//! The fixtures every suite and the benchmark start llmrouter with, each once:
//! - [`TestConfig`]: TOML layered over the built-in default, plus environment; provider
//!   entries for mock upstreams ([`mock_provider`], [`ECHO`]).
//! - [`InProcess`]: `llmrouter all` in this process (its own thread and actix System), on
//!   the in-memory backend or a throw-away redis-server with a unique key prefix.
//! - [`ProcessCluster`]: `llmrouter` processes (`all`, or `gateway` / `router` / `worker` /
//!   `mcp-tools`) sharing one config file, a gateway port, and a redis-server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use llmr_config::Settings;
use llmrouter::{Role, Running};

use crate::{Proc, RedisServer, free_port, unique_prefix, wait_for_port};

/// The built-in `echo` provider serving model `echo`.
pub const ECHO: &str = "[[providers]]\nname = \"echo\"\ntype = \"echo\"\nmodels = [\"echo\"]\n";

/// A TOML provider entry for a mock upstream, with two keys (`sk-{name}-1`, `sk-{name}-2`);
/// no models means they are listed from the mock's `/models`.
pub fn mock_provider(name: &str, base_url: &str, models: &[&str]) -> String {
    provider_entry(
        name,
        base_url,
        models,
        &[&format!("sk-{name}-1"), &format!("sk-{name}-2")],
    )
}

/// A TOML `openai` provider entry with these models and keys.
pub fn provider_entry(name: &str, base_url: &str, models: &[&str], keys: &[&str]) -> String {
    let list = |xs: &[&str]| xs.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
    let models = if models.is_empty() {
        String::new()
    } else {
        format!("models = [{}]\n", list(models))
    };
    format!(
        "[[providers]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{base_url}\"\napi_keys = [{}]\n{models}\n",
        list(keys)
    )
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A test deployment's configuration: TOML over the default, and `LLMR__…` environment.
#[derive(Debug, Clone, Default)]
pub struct TestConfig {
    pub toml: String,
    pub env: Vec<(String, String)>,
}

impl TestConfig {
    pub fn new(toml: impl Into<String>) -> TestConfig {
        TestConfig {
            toml: toml.into(),
            env: Vec::new(),
        }
    }

    /// Sets one environment variable (later settings win).
    pub fn env(mut self, key: &str, value: impl ToString) -> TestConfig {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// Sets several.
    pub fn envs(mut self, pairs: &[(&str, String)]) -> TestConfig {
        self.env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())));
        self
    }

    /// The TOML written to a fresh temporary file.
    pub fn write(&self, tag: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("llmr-{tag}-{}-{}.toml", std::process::id(), free_port()));
        std::fs::write(&path, &self.toml).expect("write test config");
        TempFile(path)
    }

    /// The settings a process started with this configuration would load.
    pub fn settings(&self) -> Settings {
        let file = self.write("cfg");
        llmr_config::load_from(Some(&file.0), self.env.iter().cloned().collect()).expect("test config loads")
    }
}

/// `llmrouter all` running in this process.
pub struct InProcess {
    pub app: Running,
    pub redis: Option<RedisServer>,
}

impl InProcess {
    /// Starts `all` on a free port; with `redis`, over a fresh redis-server and a unique
    /// key prefix (reclaim after 1 s, so tests of it stay short).
    pub fn start(redis: bool, cfg: TestConfig) -> InProcess {
        let redis = redis.then(RedisServer::start);
        let mut cfg = cfg.env("LLMR__SERVER__PORT", 0);
        if let Some(r) = &redis {
            cfg = cfg
                .env("LLMR__REDIS__URL", r.url())
                .env("LLMR__REDIS__PREFIX", unique_prefix("inproc"));
        }
        let app = llmrouter::spawn(Role::All, cfg.settings()).expect("llmrouter all starts");
        InProcess { app, redis }
    }

    /// `http://127.0.0.1:PORT{path}` of the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.url())
    }
}

/// `llmrouter` processes sharing one configuration and (when asked) one redis-server.
pub struct ProcessCluster {
    pub redis: Option<RedisServer>,
    /// The gateway's port.
    pub port: u16,
    bin: PathBuf,
    config: TempFile,
    env: Vec<(String, String)>,
    /// Every process started, in order, named by role.
    pub procs: Vec<Proc>,
}

impl ProcessCluster {
    /// Prepares a cluster of the `llmrouter` binary at `bin`; starts nothing yet. With
    /// `redis`, a fresh redis-server, a unique key prefix and reclaim after 1 s.
    pub fn new(bin: &Path, cfg: TestConfig, redis: bool) -> ProcessCluster {
        ProcessCluster::with_redis(bin, cfg, redis.then(RedisServer::start))
    }

    /// [`ProcessCluster::new`] over a redis-server started by the caller (one with an
    /// append-only file, say).
    pub fn with_redis(bin: &Path, cfg: TestConfig, redis: Option<RedisServer>) -> ProcessCluster {
        let port = free_port();
        let mut cfg = cfg.env("LLMR__SERVER__PORT", port);
        if let Some(r) = &redis {
            cfg = TestConfig {
                env: [
                    ("LLMR__REDIS__URL".to_owned(), r.url()),
                    ("LLMR__REDIS__PREFIX".to_owned(), unique_prefix("cluster")),
                    ("LLMR__REDIS__CLAIM_IDLE_MS".to_owned(), "1000".to_owned()),
                ]
                .into_iter()
                .chain(cfg.env)
                .collect(),
                ..cfg
            };
        }
        ProcessCluster {
            redis,
            port,
            bin: bin.to_owned(),
            config: cfg.write("cluster"),
            env: cfg.env,
            procs: Vec::new(),
        }
    }

    /// The key prefix of the cluster's Redis (None in memory).
    pub fn prefix(&self) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == "LLMR__REDIS__PREFIX")
            .map(|(_, v)| v.as_str())
    }

    /// Starts one process: `llmrouter --config FILE ARGS…`, named `name`.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> &mut Proc {
        self.spawn_with(name, args, &[])
    }

    /// [`ProcessCluster::spawn`] with environment for this process only (e.g. its admin port).
    pub fn spawn_with(&mut self, name: &str, args: &[&str], extra: &[(&str, String)]) -> &mut Proc {
        let config = self.config.0.display().to_string();
        let mut a = vec!["--config", config.as_str()];
        a.extend_from_slice(args);
        let mut env: Vec<(&str, String)> = self.env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        self.procs.push(Proc::spawn(name, &self.bin, &a, &env));
        let last = self.procs.len() - 1;
        &mut self.procs[last]
    }

    /// Waits until the gateway accepts connections.
    pub fn listening(&self, timeout: Duration) -> bool {
        wait_for_port(self.port, timeout)
    }

    /// `http://127.0.0.1:PORT{path}` of the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The processes started under `name`, in order.
    pub fn named(&self, name: &str) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(move |p| p.name == name)
    }

    /// The `i`-th process started under `name`.
    pub fn nth(&mut self, name: &str, i: usize) -> Option<&mut Proc> {
        self.procs.iter_mut().filter(|p| p.name == name).nth(i)
    }

    /// The config file every process reads.
    pub fn config_path(&self) -> &Path {
        &self.config.0
    }
}
