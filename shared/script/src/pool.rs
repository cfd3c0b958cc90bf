//! The parent side: a pool of script host processes. One call at a time per child; a call
//! past the wall-clock limit kills its child, and a dead child is replaced before the next
//! call.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::host::Response;
use crate::{Call, Limits, ScriptError};

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Script host processes started as `program args…`, each running [`crate::host_main`].
pub struct ScriptPool {
    program: PathBuf,
    args: Vec<String>,
    limits: Limits,
    slots: Vec<Mutex<Option<Proc>>>,
    next: AtomicU64,
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
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn spawn(&self) -> Result<Proc, ScriptError> {
        let unavailable = |e: std::io::Error| ScriptError::Unavailable { message: e.to_string() };
        let mut child = Command::new(&self.program)
            .args(&self.args)
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
        let limits =
            serde_json::to_string(&self.limits).map_err(|e| ScriptError::Unavailable { message: e.to_string() })?;
        stdin
            .write_all(format!("{limits}\n").as_bytes())
            .await
            .map_err(unavailable)?;
        Ok(Proc {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        })
    }

    /// Runs one call in a host, within the wall-clock limit.
    pub async fn run(&self, call: &Call) -> Result<serde_json::Value, ScriptError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[(id % self.slots.len() as u64) as usize];
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(self.spawn().await?);
        }
        let Some(proc) = guard.as_mut() else {
            return Err(ScriptError::Unavailable {
                message: "no script host".into(),
            });
        };
        let line = serde_json::json!({"id": id, "call": call}).to_string();
        let exchange = async {
            proc.stdin.write_all(format!("{line}\n").as_bytes()).await.ok()?;
            proc.stdin.flush().await.ok()?;
            loop {
                let l = proc.stdout.next_line().await.ok()??;
                if let Ok(r) = serde_json::from_str::<Response>(&l)
                    && r.id == id
                {
                    return Some(r.result);
                }
            }
        };
        match tokio::time::timeout(Duration::from_millis(self.limits.wall_ms), exchange).await {
            Ok(Some(result)) => result,
            Ok(None) => {
                // The host died mid-call: most likely the memory limit.
                if let Some(mut p) = guard.take() {
                    let _ = p.child.kill().await;
                }
                Err(ScriptError::Crashed {
                    memory_mb: self.limits.memory_mb,
                })
            }
            Err(_) => {
                if let Some(mut p) = guard.take() {
                    let _ = p.child.kill().await;
                }
                tracing::warn!(wall_ms = self.limits.wall_ms, function = %call.function, "script ran past its time; host replaced");
                Err(ScriptError::Timeout {
                    wall_ms: self.limits.wall_ms,
                })
            }
        }
    }
}
