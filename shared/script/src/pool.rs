//! The parent side: a pool of script host processes. One call at a time per child; a call
//! past the wall-clock limit kills its child, and a dead child is replaced before the next
//! call. Host-module calls the script makes are answered by a [`Host`]; the time they take
//! does not count against the script's wall-clock limit (they have their own timeouts).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;

use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;

use crate::host::{HostAnswer, HostCall, Response};
use crate::{Call, Limits, ScriptError};

/// Why a host-module call failed: any error; the script sees its message thrown.
pub type HostCallError = Box<dyn std::error::Error + Send + Sync>;

/// What a host-module call resolves to: a JSON value, or the error the script sees thrown.
pub type HostFuture<'a> = LocalBoxFuture<'a, Result<serde_json::Value, HostCallError>>;

/// Answers the host-module calls of a script (`mcp.call`, `ai.chat`, `http.fetch`, `kv.*`).
pub trait Host {
    fn call<'a>(&'a self, module: &'a str, function: &'a str, args: serde_json::Value) -> HostFuture<'a>;
}

enum Line {
    Done(Response),
    Host(HostCall),
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Calls served so far.
    calls: u32,
    /// The host that replaces this one, starting in the background.
    successor: Option<JoinHandle<Result<Proc, ScriptError>>>,
    /// It said its next context is made (a `{"ready": true}` line since its last call).
    ready: bool,
}

/// A host is replaced after this many calls, a bound on whatever a host might keep from
/// call to call (a context serves the next call only as it was made, and `host::export`
/// avoids the one leak known in boa 0.22; describing a tool still keeps its module, ~0.3 MB).
const CALLS_PER_HOST: u32 = 4096;
/// Its successor starts this many calls before, in the background, so no call waits for a
/// host to start.
const SUCCESSOR_LEAD: u32 = 16;
/// Past this many calls a host whose successor is still not ready waits for it.
/// How long a new host may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Script host processes started as `program args…`, each running [`crate::host_main`].
pub struct ScriptPool {
    program: PathBuf,
    args: Vec<String>,
    limits: Limits,
    slots: Vec<Mutex<Option<Proc>>>,
    next: AtomicU64,
    /// Calls a host serves before it is replaced.
    calls_per_host: u32,
    /// Host processes started so far.
    started: std::sync::Arc<AtomicU64>,
    /// Calls that ran in a context an earlier call had left as it was made.
    reused: AtomicU64,
}

impl ScriptPool {
    /// A pool of `size` hosts; they start on first use.
    pub fn new(program: PathBuf, args: Vec<String>, limits: Limits, size: usize) -> ScriptPool {
        ScriptPool {
            program,
            args,
            limits,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicU64::new(0),
            calls_per_host: CALLS_PER_HOST,
            started: Default::default(),
            reused: AtomicU64::new(0),
        }
    }

    /// Replaces each host after `calls` calls instead of [`CALLS_PER_HOST`].
    pub fn with_calls_per_host(mut self, calls: u32) -> ScriptPool {
        self.calls_per_host = calls.max(1);
        self
    }

    /// Host processes started so far (replacements included).
    pub fn hosts_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Calls that ran in a context an earlier call had left exactly as it was made (the
    /// rest ran in a fresh one).
    pub fn calls_in_reused_contexts(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn spawn(&self) -> Result<Proc, ScriptError> {
        self.started.fetch_add(1, Ordering::Relaxed);
        spawn(self.program.clone(), self.args.clone(), self.limits).await
    }

    /// Starts the successor of `proc` in the background once it is near its last call, and
    /// hands it over once it is past it and the successor is ready (or, far past it, waits).
    async fn succeed(&self, mut proc: Proc) -> Option<Proc> {
        let last = self.calls_per_host;
        if proc.calls + SUCCESSOR_LEAD.min(last / 2) >= last && proc.successor.is_none() {
            let (program, args, limits) = (self.program.clone(), self.args.clone(), self.limits);
            self.started.fetch_add(1, Ordering::Relaxed);
            proc.successor = Some(tokio::spawn(async move {
                let mut next = spawn(program, args, limits).await?;
                next.ready().await?;
                Ok(next)
            }));
        }
        let ready = proc.successor.as_ref().is_some_and(JoinHandle::is_finished);
        // Past four times its share, a host waits for its successor.
        if proc.calls < last || (!ready && proc.calls < last.saturating_mul(4)) {
            return Some(proc);
        }
        let next = match proc.successor.take() {
            Some(h) => h.await.ok().and_then(Result::ok),
            None => None,
        };
        let _ = proc.child.kill().await;
        match next {
            Some(next) => Some(next),
            None => self.spawn().await.ok(),
        }
    }

    /// Runs one call in a host, within the wall-clock limit, without host modules.
    pub async fn run(&self, call: &Call) -> Result<serde_json::Value, ScriptError> {
        self.run_with(call, None).await
    }

    /// Runs one call in a host, within the wall-clock limit; `host` answers its host-module
    /// calls (without one, they throw).
    pub async fn run_with(&self, call: &Call, host: Option<&dyn Host>) -> Result<serde_json::Value, ScriptError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.slot(id).await;
        if guard.is_none() {
            *guard = Some(self.spawn().await?);
        }
        // The host leaves its slot for the exchange: a call abandoned half-way (its caller
        // went away) drops it, which kills it, and the slot gets a fresh one next time.
        let Some(mut proc) = guard.take() else {
            return Err(ScriptError::Unavailable {
                message: "no script host".into(),
            });
        };
        let line = serde_json::to_string(&crate::host::RequestRef { id, call })
            .map_err(|e| ScriptError::Unavailable { message: e.to_string() })?;
        let budget = Duration::from_millis(self.limits.wall_ms);
        match exchange(&mut proc, id, &line, budget, host).await {
            Ok(Some(Response { result, reused, .. })) => {
                self.count_context(reused);
                proc.calls += 1;
                proc.ready = false;
                *guard = self.succeed(proc).await;
                result
            }
            Ok(None) => {
                // The host died mid-call: most likely the memory limit.
                let _ = proc.child.kill().await;
                killed("crashed");
                Err(ScriptError::Crashed {
                    memory_mb: self.limits.memory_mb,
                })
            }
            Err(_) => {
                let _ = proc.child.kill().await;
                killed("timeout");
                tracing::warn!(wall_ms = self.limits.wall_ms, function = %call.function, "script ran past its time; host replaced");
                Err(ScriptError::Timeout {
                    wall_ms: self.limits.wall_ms,
                })
            }
        }
    }

    /// The slot of the host that takes call `id`: a free one if there is one (a tool calling a
    /// tool needs a second host), one whose next context is made (it said so) first; else the
    /// next in turn, once it is free.
    async fn slot(&self, id: u64) -> MutexGuard<'_, Option<Proc>> {
        let n = self.slots.len();
        let start = (id % n as u64) as usize;
        let mut free: Vec<_> = (0..n)
            .filter_map(|i| self.slots[(start + i) % n].try_lock().ok())
            .collect();
        let pick = free
            .iter_mut()
            .position(|g| g.as_mut().is_some_and(Proc::poll_ready))
            .unwrap_or(0);
        match free.is_empty() {
            false => free.swap_remove(pick),
            true => self.slots[start].lock().await,
        }
    }

    /// Counts a call answered, by the context it ran in.
    fn count_context(&self, reused: bool) {
        if reused {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        let context = if reused { "reused" } else { "fresh" };
        llmr_telemetry::metrics::metrics()
            .sandbox_calls
            .with_label_values(&[context])
            .inc();
    }
}

/// Sends a call (its request `line`) and answers the host-module calls it makes until its
/// response comes: None when the host went away, Err when the script ran past `budget` (the
/// time host-module calls take is not counted).
async fn exchange(
    proc: &mut Proc,
    id: u64,
    line: &str,
    mut budget: Duration,
    host: Option<&dyn Host>,
) -> Result<Option<Response>, Elapsed> {
    if !proc.send(line).await {
        return Ok(None);
    }
    loop {
        let started = tokio::time::Instant::now();
        let got = tokio::time::timeout(budget, proc.next_for(id)).await?;
        budget = budget.saturating_sub(started.elapsed());
        match got {
            None => return Ok(None),
            Some(Line::Done(r)) => return Ok(Some(r)),
            Some(Line::Host(h)) => {
                let text = serde_json::to_string(&answer(host, h).await)
                    .unwrap_or_else(|_| r#"{"error":"unencodable answer"}"#.into());
                if !proc.send(&text).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// The answer to a host-module call: what `host` says, or an error without one.
async fn answer(host: Option<&dyn Host>, h: HostCall) -> HostAnswer {
    let Some(host) = host else {
        return HostAnswer::Error(format!("module `{}` is not available here", h.host.module));
    };
    match host.call(&h.host.module, &h.host.function, h.host.args).await {
        Ok(v) => HostAnswer::Ok(v),
        Err(e) => HostAnswer::Error(e.to_string()),
    }
}

/// Starts a host process and sends it its limits.
async fn spawn(program: PathBuf, args: Vec<String>, limits: Limits) -> Result<Proc, ScriptError> {
    let unavailable = |e: std::io::Error| ScriptError::Unavailable { message: e.to_string() };
    let mut child = Command::new(&program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(unavailable)?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ScriptError::Unavailable {
            message: "no pipes to the script host".into(),
        });
    };
    let limits = serde_json::to_string(&limits).map_err(|e| ScriptError::Unavailable { message: e.to_string() })?;
    stdin
        .write_all(format!("{limits}\n").as_bytes())
        .await
        .map_err(unavailable)?;
    Ok(Proc {
        child,
        stdin,
        stdout: BufReader::new(stdout).lines(),
        calls: 0,
        successor: None,
        ready: false,
    })
}

impl Proc {
    /// Writes one line to the host; false when it is gone.
    async fn send(&mut self, line: &str) -> bool {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await.is_ok() && self.stdin.flush().await.is_ok()
    }

    /// The next line for call `id`: its response or a host-module call (other lines are
    /// skipped); None when the host went away.
    async fn next_for(&mut self, id: u64) -> Option<Line> {
        loop {
            let l = self.stdout.next_line().await.ok()??;
            if let Ok(r) = serde_json::from_str::<Response>(&l)
                && r.id == id
            {
                return Some(Line::Done(r));
            }
            if let Ok(h) = serde_json::from_str::<HostCall>(&l) {
                return Some(Line::Host(h));
            }
        }
    }

    /// Whether the host has said its next context is made, reading only lines already there
    /// (`next_line` is cancel-safe, so a line not yet complete is left for the next read).
    fn poll_ready(&mut self) -> bool {
        while let Some(Ok(Some(line))) = self.stdout.next_line().now_or_never() {
            self.ready |= is_ready(&line);
        }
        self.ready
    }

    /// Waits for the host's `{"ready": true}` line (its first context is made).
    async fn ready(&mut self) -> Result<(), ScriptError> {
        let wait = async {
            while let Some(line) = self.stdout.next_line().await.ok()? {
                if is_ready(&line) {
                    return Some(());
                }
            }
            None
        };
        match tokio::time::timeout(READY_TIMEOUT, wait).await {
            Ok(Some(())) => {
                self.ready = true;
                Ok(())
            }
            _ => Err(ScriptError::Unavailable {
                message: "a new script host did not start".into(),
            }),
        }
    }
}

fn is_ready(line: &str) -> bool {
    serde_json::from_str::<crate::host::Ready>(line).is_ok_and(|r| r.ready)
}

/// Counts a script host killed for `reason`.
fn killed(reason: &str) {
    llmr_telemetry::metrics::metrics()
        .sandbox_kills
        .with_label_values(&[reason])
        .inc();
}
