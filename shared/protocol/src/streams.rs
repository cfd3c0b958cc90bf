//! The names of every stream and consumer group on the bus, spelled once.
//!
//! Keys are given without the Redis prefix (`redis.prefix`); the Redis bus adds it.

/// Client requests for the routers.
pub const REQUESTS: &str = "requests";
/// MCP messages and tool calls for mcp-tools.
pub const MCP: &str = "mcp";
/// Responses API operations for the responses service.
pub const RESPONSES: &str = "responses";

/// Routed jobs for the workers of one pool.
pub fn jobs(pool: &str) -> String {
    format!("jobs:{pool}")
}

/// The jobs stream of `pool` for work of `priority`: batch work waits on `jobs:{pool}:batch`.
pub fn jobs_for(pool: &str, priority: crate::Priority) -> String {
    match priority {
        crate::Priority::Interactive => jobs(pool),
        crate::Priority::Batch => format!("jobs:{pool}:batch"),
    }
}

/// The reply stream of one caller instance.
pub fn replies(instance: &str) -> String {
    format!("replies:{instance}")
}

/// The service whose instances read `stream` (the name their heartbeats carry), for callers
/// that refuse work nobody would read.
pub fn served_by(stream: &str) -> Option<&'static str> {
    match stream {
        REQUESTS => Some("router"),
        MCP => Some("mcp-tools"),
        RESPONSES => Some("responses"),
        s if s.starts_with("jobs:") => Some("worker"),
        _ => None,
    }
}

/// Consumer groups: every instance of a service reads its stream in the same group.
pub mod groups {
    /// Routers, on [`REQUESTS`](super::REQUESTS).
    pub const ROUTERS: &str = "routers";
    /// Provider workers, on each [`jobs`](super::jobs) stream.
    pub const WORKERS: &str = "workers";
    /// mcp-tools instances, on [`MCP`](super::MCP).
    pub const MCP_TOOLS: &str = "mcp-tools";
    /// responses instances, on [`RESPONSES`](super::RESPONSES).
    pub const RESPONSES: &str = "responses";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_work_stream_names_its_service() {
        assert_eq!(served_by(REQUESTS), Some("router"));
        assert_eq!(served_by(&jobs("gpu")), Some("worker"));
        assert_eq!(served_by(&jobs_for("gpu", crate::Priority::Batch)), Some("worker"));
        assert_eq!(jobs_for("gpu", crate::Priority::Batch), "jobs:gpu:batch");
        assert_eq!(jobs_for("gpu", crate::Priority::Interactive), "jobs:gpu");
        assert_eq!(served_by(MCP), Some("mcp-tools"));
        assert_eq!(served_by(RESPONSES), Some("responses"));
        assert_eq!(served_by(&replies("g1")), None);
    }

    #[test]
    fn names_are_the_documented_keys() {
        assert_eq!(jobs("gpu"), "jobs:gpu");
        assert_eq!(replies("gw-1"), "replies:gw-1");
        assert_eq!(REQUESTS, "requests");
        assert_eq!(MCP, "mcp");
    }
}
