//! `just bench --peers`: LiteLLM's proxy (PyPI, the pinned version below, two workers, no
//! database) on the same mock upstream, so the performance page's comparison with it can be
//! reproduced. Its virtualenv is made once under the bench's output directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use llmr_testkit::Proc;

/// The LiteLLM release the comparison is made with.
pub const LITELLM: &str = "litellm[proxy]==1.108.0";

/// A running LiteLLM proxy; stopped (its process group) when dropped.
pub struct LiteLlm {
    pub proc: Proc,
    pub port: u16,
    dir: PathBuf,
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        // Its workers are children of the proxy, in its process group: ask the group to stop,
        // then kill what is left of it. A negative pid after `--` (`kill -TERM -PGID` reads
        // the group as an option and signals nothing: two workers and the resource tracker
        // outlived every `--peers` run).
        let group = format!("-{}", self.proc.pid());
        let _ = Command::new("kill").args(["-s", "TERM", "--", &group]).status();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while self.proc.alive() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The virtualenv with LiteLLM in `under`, made when missing.
pub fn venv(under: &Path) -> std::io::Result<PathBuf> {
    let dir = under.join("litellm-venv");
    let litellm = dir.join("bin/litellm");
    if litellm.exists() {
        return Ok(litellm);
    }
    let ok = |s: std::process::ExitStatus, what: &str| {
        if s.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("{what} failed ({s})")))
        }
    };
    ok(
        Command::new("python3").arg("-m").arg("venv").arg(&dir).status()?,
        "python3 -m venv",
    )?;
    ok(
        Command::new(dir.join("bin/pip"))
            .args(["install", "-q", LITELLM])
            .status()?,
        "pip install litellm",
    )?;
    Ok(litellm)
}

impl LiteLlm {
    /// LiteLLM's proxy with two workers in front of the mock at `mock_base` (`…/v1`),
    /// serving the bench's models.
    pub fn start(litellm: &Path, mock_base: &str) -> std::io::Result<LiteLlm> {
        let port = llmr_testkit::free_port();
        let dir = std::env::temp_dir().join(format!("llmr-bench-litellm-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut models = String::from("model_list:\n");
        for m in ["bench", "bench-gap"] {
            models.push_str(&format!(
                "  - model_name: {m}\n    litellm_params:\n      model: openai/{m}\n      api_base: {mock_base}\n      api_key: sk-bench\n"
            ));
        }
        let config = dir.join("config.yaml");
        std::fs::write(&config, format!("{models}litellm_settings:\n  set_verbose: false\n"))?;
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(litellm)
                .args(["--config", &config.display().to_string(), "--host", "127.0.0.1"])
                .args(["--port", &port.to_string(), "--num_workers", "2"])
                .env("LITELLM_LOG", "ERROR")
                .env("LITELLM_TELEMETRY", "False")
                .env("DISABLE_SCHEMA_UPDATE", "true")
                // No master key: the bench sends no credentials (a local comparison only).
                .env("LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY", "true")
                .current_dir(&dir)
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?
        };
        let proc = Proc::adopt("litellm", child);
        let peer = LiteLlm { proc, port, dir };
        if !llmr_testkit::wait_for_port(port, Duration::from_secs(120)) {
            return Err(std::io::Error::other("LiteLLM did not listen within 120 s"));
        }
        Ok(peer)
    }
}
