//! Open client connections against the open-file limit. Every client connection holds a file
//! (and in `all`, while its request runs, an upstream connection beside it); a process that
//! runs out fails wherever the next file is needed — an accept, an upstream connect, a Redis
//! reconnect. Instead, past a bound kept below the limit, a new request is answered 503
//! `overloaded` at once (its connection closed): a clear refusal before the limit rather than
//! a failure at it. Connections are counted as they open and close (a guard in each
//! connection's data), so the check on the request path is one atomic load.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::dev::Extensions;

/// Client connections open in this process.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Connections beyond which new requests are refused.
static BOUND: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Decrements [`OPEN`] when its connection closes.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `HttpServer::on_connect`: counts the connection for as long as it lives.
pub fn on_connect(_: &dyn Any, data: &mut Extensions) {
    OPEN.fetch_add(1, Ordering::Relaxed);
    data.insert(Counted);
}

/// The bound for an open-file limit of `limit`, each connection holding `per_connection`
/// files: the limit less a reserve (max(64, 5%): listeners, Redis, logs, pooled and idle
/// connections), divided among connections.
pub fn derived_bound(limit: u64, per_connection: u64) -> usize {
    let reserve = (limit / 20).max(64);
    let bound = limit.saturating_sub(reserve) / per_connection.max(1);
    usize::try_from(bound).unwrap_or(usize::MAX).max(1)
}

/// Sets the bound: `configured` when non-zero, else derived from the soft open-file limit now
/// in force. Returns it.
pub fn set_bound(configured: usize, per_connection: u64) -> usize {
    let bound = if configured > 0 {
        configured
    } else {
        match rlimit::Resource::NOFILE.get() {
            Ok((soft, _)) => derived_bound(soft, per_connection),
            Err(_) => usize::MAX,
        }
    };
    BOUND.store(bound, Ordering::Relaxed);
    bound
}

/// Sets and logs the bound of this gateway; `worker_beside` in `all`, where a connection's
/// request may hold an upstream connection too.
pub fn limit(configured: usize, worker_beside: bool) {
    let connections = set_bound(configured, if worker_beside { 2 } else { 1 });
    tracing::info!(
        connections,
        "new requests are refused (503) beyond this many client connections"
    );
}

/// When more connections are open than the bound: how many, and the bound.
pub fn over() -> Option<(usize, usize)> {
    let (open, bound) = (OPEN.load(Ordering::Relaxed), BOUND.load(Ordering::Relaxed));
    (open > bound).then_some((open, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_leaves_a_reserve_and_counts_upstream_files() {
        assert_eq!(derived_bound(20_000, 2), 9_500);
        assert_eq!(derived_bound(20_000, 1), 19_000);
        assert_eq!(derived_bound(1024, 2), 480);
        assert_eq!(derived_bound(10, 2), 1, "never zero");
    }
}
