//! The deployments a benchmark compares, started as real processes and stopped by PID,
//! with their CPU time and resident memory read from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmr_testkit::{Proc, ProcessCluster, TestConfig};

/// How the gateway is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No gateway: the load goes straight to the mock (the baseline).
    Direct,
    /// A bare nginx proxy hop in front of the mock: the floor of the in-process path.
    Nginx,
    /// LiteLLM's proxy (`--peers`): two workers, no database.
    LiteLlm,
    /// `llmrouter all`, in-memory bus and store.
    AllMemory,
    /// `llmrouter all` in memory at `log_level = "warn"`: what the default `info` costs, in
    /// the same run.
    AllMemoryWarn,
    /// `llmrouter all` over Redis.
    AllRedis,
    /// `llmrouter gateway`, `router` and `worker` processes over Redis.
    Cluster,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct (baseline)",
            Mode::Nginx => "nginx hop (floor)",
            Mode::LiteLlm => "LiteLLM proxy (2 workers)",
            Mode::AllMemory => "all, in-memory",
            Mode::AllMemoryWarn => "all, in-memory, warn",
            Mode::AllRedis => "all, Redis",
            Mode::Cluster => "cluster, Redis",
        }
    }
}

/// The mock upstream process.
pub struct Mock {
    pub proc: Proc,
    pub port: u16,
}

impl Mock {
    pub fn start(bin_dir: &Path, latency_ms: u64, chunks: usize) -> std::io::Result<Mock> {
        Mock::start_paced(bin_dir, latency_ms, chunks, 5)
    }

    /// A mock whose streams to model `bench-gap` send an event every `gap_ms` after the first.
    pub fn start_paced(bin_dir: &Path, latency_ms: u64, chunks: usize, gap_ms: u64) -> std::io::Result<Mock> {
        let mut child = Command::new(bin_dir.join("mock-upstream"))
            .args([
                "--port",
                "0",
                "--latency-ms",
                &latency_ms.to_string(),
                "--chunks",
                &chunks.to_string(),
                "--gap-ms",
                &gap_ms.to_string(),
                "--workers",
                "1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("mock said {line:?}")))?;
        Ok(Mock {
            proc: Proc::adopt("mock", child),
            port,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

/// TOML added to a deployment's configuration (llmrouter's modes only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra<'a> {
    /// Lines in `[server]`.
    pub server: &'a str,
    /// Lines in the mock's `[[providers]]` entry.
    pub provider: &'a str,
    /// Tables after the provider (`[[keys]]`, say).
    pub tail: &'a str,
}

/// One running deployment.
pub struct Deployment {
    pub mode: Mode,
    /// Where clients send chat completions.
    pub url: String,
    /// Its processes (none for the direct baseline).
    cluster: Option<ProcessCluster>,
    /// The nginx hop.
    nginx: Option<crate::floor::Nginx>,
    /// LiteLLM's proxy.
    litellm: Option<crate::peers::LiteLlm>,
}

impl Deployment {
    /// Starts `mode` in front of `mock`; `workers` worker processes in cluster mode, each
    /// running at most `max_in_flight` jobs; the gateway sheds new requests (503) once more
    /// than `max_queued` wait (`server.max_queued`).
    pub fn start(
        mode: Mode,
        bin_dir: &Path,
        mock: &Mock,
        workers: usize,
        max_in_flight: usize,
        max_queued: usize,
    ) -> std::io::Result<Deployment> {
        Deployment::start_with(
            mode,
            bin_dir,
            mock,
            workers,
            max_in_flight,
            max_queued,
            Extra::default(),
        )
    }

    /// [`Deployment::start`] with `extra` in llmrouter's configuration.
    pub fn start_with(
        mode: Mode,
        bin_dir: &Path,
        mock: &Mock,
        workers: usize,
        max_in_flight: usize,
        max_queued: usize,
        extra: Extra<'_>,
    ) -> std::io::Result<Deployment> {
        if mode == Mode::Direct {
            return Ok(Deployment {
                mode,
                url: format!("{}/chat/completions", mock.base_url()),
                cluster: None,
                nginx: None,
                litellm: None,
            });
        }
        if mode == Mode::Nginx {
            let binary = crate::floor::nginx_binary().ok_or_else(|| std::io::Error::other("nginx is not installed"))?;
            let nginx = crate::floor::Nginx::start(&binary, mock.port)?;
            return Ok(Deployment {
                mode,
                url: format!("http://127.0.0.1:{}/v1/chat/completions", nginx.port),
                cluster: None,
                nginx: Some(nginx),
                litellm: None,
            });
        }
        if mode == Mode::LiteLlm {
            let litellm = crate::peers::venv(&bin_dir.join("bench"))?;
            let peer = crate::peers::LiteLlm::start(&litellm, &mock.base_url())?;
            return Ok(Deployment {
                mode,
                url: format!("http://127.0.0.1:{}/v1/chat/completions", peer.port),
                cluster: None,
                nginx: None,
                litellm: Some(peer),
            });
        }
        let mut cfg = TestConfig::new(config_toml(&mock.base_url(), max_in_flight, max_queued, extra));
        if mode == Mode::AllMemoryWarn {
            cfg = cfg.env("LLMR__TELEMETRY__LOG_LEVEL", "warn");
        }
        let in_memory = matches!(mode, Mode::AllMemory | Mode::AllMemoryWarn);
        let mut c = ProcessCluster::new(&bin_dir.join("llmrouter"), cfg, !in_memory);
        match mode {
            Mode::AllMemory | Mode::AllMemoryWarn | Mode::AllRedis => {
                c.spawn("llmrouter all", &["all"]);
            }
            Mode::Cluster => {
                c.spawn("router", &["router"]);
                for i in 0..workers {
                    c.spawn(&format!("worker {}", i + 1), &["worker"]);
                }
                c.spawn("gateway", &["gateway"]);
            }
            Mode::Direct | Mode::Nginx | Mode::LiteLlm => {}
        }
        if !c.listening(Duration::from_secs(30)) {
            return Err(std::io::Error::other(format!("{} did not listen", mode.name())));
        }
        Ok(Deployment {
            mode,
            url: c.url("/v1/chat/completions"),
            cluster: Some(c),
            nginx: None,
            litellm: None,
        })
    }

    fn procs(&self) -> &[Proc] {
        match (&self.cluster, &self.nginx, &self.litellm) {
            (Some(c), _, _) => c.procs.as_slice(),
            (None, Some(n), _) => std::slice::from_ref(&n.proc),
            (None, None, Some(l)) => std::slice::from_ref(&l.proc),
            (None, None, None) => &[],
        }
    }

    /// CPU time (ms) the deployment's Redis has used so far (0 in memory).
    pub fn redis_cpu_ms(&self) -> f64 {
        let pid = self
            .cluster
            .as_ref()
            .and_then(|c| c.redis.as_ref())
            .and_then(|r| r.pid());
        pid.map_or(0.0, cpu_ms)
    }

    /// The URL of the deployment's Redis (None in memory).
    pub fn redis_url(&self) -> Option<String> {
        self.cluster.as_ref()?.redis.as_ref().map(|r| r.url())
    }

    /// CPU time (ms) used so far by the deployment's own processes.
    pub fn cpu_ms(&self) -> f64 {
        self.procs().iter().map(|p| cpu_ms(p.pid())).sum()
    }

    /// Resident memory of each process, in MB.
    pub fn rss_mb(&self) -> Vec<(String, f64)> {
        self.procs().iter().map(|p| (p.name.clone(), rss_mb(p.pid()))).collect()
    }

    /// Waits until a request succeeds (bounded).
    pub fn wait_ready(&self, body: &bytes::Bytes) -> bool {
        self.wait_ready_as(body, None)
    }

    /// [`Deployment::wait_ready`] presenting `token`.
    pub fn wait_ready_as(&self, body: &bytes::Bytes, token: Option<&str>) -> bool {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let s = crate::load::run_as(&self.url, body.clone(), crate::load::Shape::Serial { n: 1 }, 1, token);
            if s.ok == 1 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// The log level every deployment runs at when the bench is told one (`--log-level`); the
/// built-in default (`info`) otherwise, as `just run` and the image run.
pub static LOG_LEVEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `[telemetry]` with [`LOG_LEVEL`] when the bench was told one, else nothing.
pub fn telemetry_toml() -> String {
    LOG_LEVEL
        .get()
        .map_or(String::new(), |l| format!("[telemetry]\nlog_level = \"{l}\"\n"))
}

/// llmrouter's configuration in the benchmark: the mock (models `bench` and `bench-gap`) at
/// `base_url`, [`LOG_LEVEL`] when set, and `extra`; everything else the built-in default.
pub fn config_toml(base_url: &str, max_in_flight: usize, max_queued: usize, extra: Extra<'_>) -> String {
    let telemetry = telemetry_toml();
    format!(
        "[server]\nrequest_timeout_ms = 60000\nmax_queued = {max_queued}\n{}{telemetry}[worker]\nmax_in_flight = {max_in_flight}\n[[providers]]\nname = \"mock\"\ntype = \"openai\"\nbase_url = \"{base_url}\"\nmodels = [\"bench\", \"bench-gap\"]\n{}{}",
        extra.server, extra.provider, extra.tail
    )
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process, in ms.
pub fn cpu_ms(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks * 1000.0 / clock_ticks()
}

/// VmRSS of a process, in MB.
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
