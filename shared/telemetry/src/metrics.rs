//! Prometheus metrics of one process, in one registry: every service records into the
//! handles of [`metrics()`], and [`render`] writes the text exposition format for
//! `/metrics` (the gateway's, and the admin listener of every other role).
//!
//! Names follow the OpenTelemetry GenAI conventions where they exist (as Envoy AI Gateway
//! and agentgateway export them: `gen_ai_client_token_usage` by `gen_ai_token_type`,
//! `gen_ai_server_time_to_first_token`), and `llmr_` otherwise. State that lives in the
//! store or the bus (loads, circuits, cooldowns, stream backlog) is read when scraped, into the
//! gauges of [`Metrics`] marked as such.

use std::sync::OnceLock;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests answered, by route (the matched pattern), method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request duration until the response head, by route.
    pub http_duration: HistogramVec,
    /// Time from a streamed request's arrival to its first byte, by requested model.
    pub time_to_first_token: HistogramVec,
    /// Tokens per request, by type (`input`, `output`), provider and model.
    pub token_usage: HistogramVec,
    /// Upstream attempts by provider, model and outcome (`ok`, `failed`, `rate_limited`,
    /// `rejected`, `local`).
    pub attempts: IntCounterVec,
    /// Upstream attempt duration by provider, model and outcome.
    pub attempt_duration: HistogramVec,
    /// Attempts that failed over to the plan's next target, by reason.
    pub failovers: IntCounterVec,
    pub reclaimed: IntCounterVec,
    /// Work in flight in this process's consumer loops, by stream.
    pub in_flight: IntGaugeVec,
    /// MCP tool calls by tool and outcome (`ok`, `error`).
    pub tool_calls: IntCounterVec,
    /// MCP tool call duration by tool.
    pub tool_duration: HistogramVec,
    /// Script hosts killed, by reason (`timeout`, `crashed`, `abandoned`).
    pub sandbox_kills: IntCounterVec,
    /// Script calls answered, by the context they ran in (`reused`: one an earlier tool call
    /// left as it was made; `fresh`).
    pub sandbox_calls: IntCounterVec,
    /// Scraped: live leases (load) per target.
    pub target_load: IntGaugeVec,
    /// Scraped: circuit state per target or key (0 closed, 1 probing, 2 open, 3 cooling).
    pub circuit_state: IntGaugeVec,
    /// Scraped: seconds until a cooling or open target or key may be used again.
    pub unavailable_seconds: GaugeVec,
    /// Scraped: entries delivered and not acked, per stream and consumer group.
    pub stream_pending: IntGaugeVec,
    /// Scraped: entries not yet delivered to the group (the autoscaling signal).
    pub stream_lag: IntGaugeVec,
    /// Scraped: entries in the stream.
    pub stream_length: IntGaugeVec,
    /// Scraped: 1 when a feature can serve (its services alive, the store answering), else 0.
    pub feature_available: IntGaugeVec,
    /// Requests refused 503 `overloaded` by the gateway, by reason.
    pub shed: IntCounterVec,
    /// Scraped: the wait a new request would face in each pool, per priority.
    pub queue_wait: GaugeVec,
}

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const TOKENS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0];

/// Creates metrics and registers them in one registry.
struct Registrar {
    registry: Registry,
}

// Names and labels are static and distinct: creating and registering cannot fail.
#[allow(clippy::expect_used)]
impl Registrar {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
        self.registry.register(Box::new(c.clone())).expect("unique counter");
        c
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
        self.registry.register(Box::new(g.clone())).expect("unique gauge");
        g
    }

    /// A gauge of fractional values.
    fn float_gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
        self.registry.register(Box::new(g.clone())).expect("unique gauge");
        g
    }

    fn histogram(&self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
            .expect("valid histogram");
        self.registry.register(Box::new(h.clone())).expect("unique histogram");
        h
    }
}

impl Metrics {
    // Long: one flat table of metric registrations (name, help, labels); split into parts,
    // it would be harder to scan for a name.
    fn new() -> Metrics {
        let r = Registrar {
            registry: Registry::new(),
        };
        Metrics {
            http_requests: r.counter(
                "llmr_http_requests_total",
                "HTTP requests answered, by route, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: r.histogram(
                "llmr_http_request_duration_seconds",
                "HTTP request duration until the response head, by route.",
                &["route"],
                SECONDS,
            ),
            time_to_first_token: r.histogram(
                "gen_ai_server_time_to_first_token_seconds",
                "Time from a streamed request's arrival to its first byte, by requested model.",
                &["gen_ai_request_model"],
                SECONDS,
            ),
            token_usage: r.histogram(
                "gen_ai_client_token_usage",
                "Tokens per request by type (input, output), provider and model.",
                &["gen_ai_token_type", "gen_ai_provider_name", "gen_ai_request_model"],
                TOKENS,
            ),
            attempts: r.counter(
                "llmr_upstream_attempts_total",
                "Upstream attempts by provider, model and outcome.",
                &["provider", "model", "outcome"],
            ),
            attempt_duration: r.histogram(
                "llmr_upstream_attempt_duration_seconds",
                "Upstream attempt duration by provider, model and outcome.",
                &["provider", "model", "outcome"],
                SECONDS,
            ),
            failovers: r.counter(
                "llmr_failovers_total",
                "Attempts that failed over to the plan's next target, by reason.",
                &["reason"],
            ),
            reclaimed: r.counter(
                "llmr_stream_reclaimed_total",
                "Stream entries this process took over after they sat unacked past claim_idle, by stream.",
                &["stream"],
            ),
            in_flight: r.gauge(
                "llmr_consumer_in_flight",
                "Work in flight in this process's consumer loops, by stream.",
                &["stream"],
            ),
            tool_calls: r.counter(
                "llmr_mcp_tool_calls_total",
                "MCP tool calls by tool and outcome.",
                &["tool", "outcome"],
            ),
            tool_duration: r.histogram(
                "llmr_mcp_tool_duration_seconds",
                "MCP tool call duration by tool.",
                &["tool"],
                SECONDS,
            ),
            sandbox_kills: r.counter(
                "llmr_sandbox_kills_total",
                "Script hosts killed, by reason (timeout, crashed, abandoned).",
                &["reason"],
            ),
            sandbox_calls: r.counter(
                "llmr_sandbox_calls_total",
                "Script calls answered, by the context they ran in (reused, fresh).",
                &["context"],
            ),
            target_load: r.gauge(
                "llmr_target_load",
                "Live leases (requests in flight) per target, cluster-wide.",
                &["target"],
            ),
            circuit_state: r.gauge(
                "llmr_circuit_state",
                "Circuit state per target or key: 0 closed, 1 probing, 2 open, 3 cooling.",
                &["kind", "target"],
            ),
            unavailable_seconds: r.float_gauge(
                "llmr_unavailable_seconds",
                "Seconds until a cooling or open target or key may be used again.",
                &["kind", "target"],
            ),
            stream_pending: r.gauge(
                "llmr_stream_pending",
                "Stream entries delivered and not acked, per stream and consumer group.",
                &["stream", "group"],
            ),
            stream_lag: r.gauge(
                "llmr_stream_lag",
                "Stream entries not yet delivered to the consumer group (its lag).",
                &["stream", "group"],
            ),
            stream_length: r.gauge("llmr_stream_length", "Entries in the stream.", &["stream"]),
            feature_available: r.gauge(
                "llmr_feature_available",
                "1 when a feature (chat, responses, mcp, server_side_tools, routing_state, usage, cache) can serve now, else 0.",
                &["feature"],
            ),
            shed: r.counter(
                "llmr_shed_total",
                "Requests refused 503 overloaded by the gateway: queue_wait (the estimated wait for its pool above the bound), queue_length (server.max_queued), connections (server.max_connections).",
                &["reason"],
            ),
            queue_wait: r.float_gauge(
                "llmr_queue_wait_seconds",
                "The estimated wait of a new request for each pool and priority (work ahead over the pool's completion rate); absent while the rate is unknown.",
                &["pool", "priority"],
            ),
            registry: r.registry,
        }
    }
}

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Every metric in the Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail on I/O; a broken metric family is skipped silently.
    let _ = TextEncoder::new().encode(&metrics().registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_values_in_the_text_format() {
        metrics().attempts.with_label_values(&["p", "m", "ok"]).inc();
        metrics()
            .token_usage
            .with_label_values(&["input", "p", "m"])
            .observe(12.0);
        let text = render();
        assert!(
            text.contains(r#"llmr_upstream_attempts_total{model="m",outcome="ok",provider="p"} 1"#),
            "{text}"
        );
        assert!(text.contains("# TYPE gen_ai_client_token_usage histogram"), "{text}");
    }

    /// The names of every metric family this process exports.
    fn exported() -> Vec<String> {
        let m = metrics();
        // Touch every vector so its family is rendered.
        m.http_requests.with_label_values(&["r", "GET", "200"]);
        m.http_duration.with_label_values(&["r"]);
        m.time_to_first_token.with_label_values(&["m"]);
        m.token_usage.with_label_values(&["input", "p", "m"]);
        m.attempts.with_label_values(&["p", "m", "ok"]);
        m.attempt_duration.with_label_values(&["p", "m", "ok"]);
        m.failovers.with_label_values(&["failed"]);
        m.in_flight.with_label_values(&["s"]);
        m.tool_calls.with_label_values(&["t", "ok"]);
        m.tool_duration.with_label_values(&["t"]);
        m.sandbox_kills.with_label_values(&["timeout"]);
        m.sandbox_calls.with_label_values(&["reused"]);
        m.target_load.with_label_values(&["t"]);
        m.circuit_state.with_label_values(&["target", "t"]);
        m.unavailable_seconds.with_label_values(&["target", "t"]);
        m.stream_pending.with_label_values(&["s", "g"]);
        m.stream_lag.with_label_values(&["s", "g"]);
        m.stream_length.with_label_values(&["s"]);
        m.feature_available.with_label_values(&["chat"]);
        m.shed.with_label_values(&["queue_wait"]);
        m.queue_wait.with_label_values(&["default", "interactive"]);
        render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    fn repo_file(path: &str) -> String {
        std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_docs_list_every_metric() {
        let page = repo_file("docs/observability.md");
        for name in exported() {
            assert!(
                page.contains(&format!("`{name}`")),
                "docs/observability.md does not list `{name}`"
            );
        }
    }

    #[test]
    fn the_dashboard_uses_only_exported_metrics() {
        let names = exported();
        // Label names (gen_ai_request_model…) are not metrics.
        let text = render();
        let labels: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                l.split_once('{')
                    .and_then(|(_, r)| r.split_once('}'))
                    .map(|(inner, _)| inner)
            })
            .flat_map(|inner| inner.split(',').filter_map(|kv| kv.split_once('=').map(|(k, _)| k)))
            .collect();
        let dashboard = repo_file("deploy/grafana/llmrouter.json");
        let used: Vec<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| (w.starts_with("llmr_") || w.starts_with("gen_ai_")) && !labels.contains(w))
            .collect();
        assert!(!used.is_empty());
        for w in used {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w);
            assert!(
                names.iter().any(|n| n == w || n == base),
                "the dashboard uses `{w}`, which is not exported"
            );
        }
    }
}
