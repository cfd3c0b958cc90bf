//! Test support for llmrouter (a dev-dependency only; panics are its way of failing a test).
//!
//! # Layout
//! - [`redis`]: a throw-away `redis-server` on a free port, killed by PID on drop.
//! - [`mock`]: a programmable mock OpenAI upstream on a free port, in its own thread.
//! - [`process`]: child processes (the `llmrouter` binary) killed by PID on drop.
//! - [`fixture`]: the in-process and process-cluster fixtures every suite and the benchmark
//!   (crate `llmr-bench`) start llmrouter with.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod fixture;
pub mod mock;
pub mod process;
pub mod redis;

pub use fixture::{ECHO, InProcess, ProcessCluster, TestConfig, mock_provider, provider_entry};
pub use mock::{Behavior, MockUpstream};
pub use process::Proc;
pub use redis::RedisServer;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Waits until something accepts TCP connections on `port`, up to `timeout`.
pub fn wait_for_port(port: u16, timeout: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// A unique key prefix for one test, so tests can share a Redis server.
pub fn unique_prefix(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}-{}:",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
