//! Load shedding: when the cluster has more work queued than it can start — requests no
//! router has read yet plus jobs no worker has taken — a new request is refused at once with
//! 503 `overloaded` and `Retry-After`, instead of waiting in a queue until its deadline.
//! Each gateway reads the queues every 100 ms (one backlog read per stream). A request may say
//! `x-llmr-priority: batch` (the default is `interactive`): batch work is refused at the lower
//! bound `server.max_queued_batch`, so under load the room left goes to interactive work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::HttpRequest;
use llmr_bus::Bus;
use llmr_config::Settings;
use llmr_protocol::{ApiError, Priority, streams};

use crate::HttpError;

/// How often the queues are read.
const EVERY: Duration = Duration::from_millis(100);

/// The request header naming a request's priority.
pub const PRIORITY_HEADER: &str = "x-llmr-priority";

/// The streams whose unread entries are queued work: `requests` (routers) and every pool's
/// `jobs:{pool}` (workers).
pub fn work_streams(settings: &Settings) -> Vec<(String, &'static str)> {
    let mut pools: Vec<&str> = settings.providers().map(|p| p.pool.as_str()).collect();
    pools.push("default");
    pools.sort_unstable();
    pools.dedup();
    let mut out = vec![(streams::REQUESTS.to_owned(), streams::groups::ROUTERS)];
    for p in pools {
        for priority in [Priority::Interactive, Priority::Batch] {
            out.push((streams::jobs_for(p, priority), streams::groups::WORKERS));
        }
    }
    out
}

/// Every stream the cluster's services read, with their consumer group: the
/// [`work_streams`], `mcp` (mcp-tools) and `responses` (the responses service).
pub fn every_stream(settings: &Settings) -> Vec<(String, &'static str)> {
    let mut out = work_streams(settings);
    out.push((streams::MCP.to_owned(), streams::groups::MCP_TOOLS));
    out.push((streams::RESPONSES.to_owned(), streams::groups::RESPONSES));
    out
}

/// Keeps `queued` up to date (the sum of the streams' lag) until dropped.
pub struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reading the queues into `queued` (inside an actix System).
pub fn watch(bus: Bus, settings: &Settings, queued: Arc<AtomicU64>) -> Watch {
    let work = work_streams(settings);
    Watch(actix_rt::spawn(async move {
        loop {
            let mut total = 0;
            for (stream, group) in &work {
                if let Ok(b) = bus.backlog(stream, group).await {
                    // Redis before 7 reports no lag: what is in the stream and not delivered.
                    total += b.lag.unwrap_or_else(|| b.length.saturating_sub(b.pending));
                }
            }
            queued.store(total, Ordering::Relaxed);
            tokio::time::sleep(EVERY).await;
        }
    }))
}

/// Whether a request of its priority may be queued now; its priority when it may.
pub fn admit(req: &HttpRequest, settings: &Settings, queued: &AtomicU64) -> Result<Priority, HttpError> {
    let priority = match req
        .headers()
        .get(PRIORITY_HEADER)
        .map(|v| v.to_str().unwrap_or_default())
    {
        None => Priority::Interactive,
        Some(v) => Priority::parse(v).ok_or_else(|| {
            HttpError(ApiError::invalid(
                format!("`{PRIORITY_HEADER}` must be `interactive` or `batch`, not `{v}`."),
                None,
            ))
        })?,
    };
    let batch = priority == Priority::Batch;
    let s = &settings.server;
    let bound = if batch { s.max_queued_batch } else { s.max_queued };
    let now = queued.load(Ordering::Relaxed);
    if bound > 0 && now >= bound {
        return Err(HttpError(ApiError::Overloaded {
            message: format!(
                "The cluster is overloaded: {now} requests are queued and {} work is admitted below {bound}; retry later.",
                if batch { "batch" } else { "interactive" }
            ),
            retry_after_s: 1,
        }));
    }
    Ok(priority)
}
