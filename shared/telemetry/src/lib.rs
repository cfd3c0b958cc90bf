//! Logging, tracing and W3C trace-context propagation for every llmrouter service.
//!
//! [`init`] installs one `tracing` subscriber: an env filter (`RUST_LOG` wins over
//! `telemetry.log_level`), console or JSON logs, and — only when spans are exported
//! (`telemetry.otlp_endpoint` or the `OTEL_EXPORTER_OTLP_*` variables) — an OpenTelemetry
//! layer. Without an exporter no OpenTelemetry span is built: building one per tracing span
//! (ids, attributes, a sampling decision, an SDK span on close) cost more than a third of an
//! in-memory chat's instructions for spans nobody read (`just profile`).
//! [`Telemetry::shutdown`] flushes spans; call it at exit (off the actix thread).
//!
//! Propagation: [`set_parent`] continues a span from a W3C [`TraceContext`] (a client's
//! `traceparent` / `tracestate` headers or an envelope's fields); [`context`] renders a
//! span's context for the next hop, `tracestate` included. Without the OpenTelemetry layer
//! the context is carried, not re-parented: a span keeps the context it was given (in its
//! extensions, for the JSON log lines' `trace_id`), the next hop gets the inherited one as it
//! came, and where there is none a new trace is started (flags `00`, not sampled), so the
//! upstream still sees one `traceparent` per request. Without any subscriber (tests),
//! [`context`] falls back to the inherited value.

pub mod jsonlog;
pub mod metrics;
pub mod scrub;

use llmr_config::{LogFormat, Telemetry as Settings};
use llmr_protocol::TraceContext;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.log_level: {0}")]
    Filter(String),
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// The installed telemetry; shut it down at exit to flush spans.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Whether the gateway writes its per-request line (`telemetry.access_log`, read by [`init`]).
static ACCESS_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether to write one line per HTTP request served: `telemetry.access_log` and info enabled
/// for the `llmrouter::access` target.
pub fn access_log() -> bool {
    ACCESS_LOG.load(std::sync::atomic::Ordering::Relaxed)
        && tracing::enabled!(target: "llmrouter::access", tracing::Level::INFO)
}

/// Installs logging and tracing for `service` (e.g. `gateway`). Must run inside a tokio
/// runtime when an OTLP endpoint is set (the gRPC exporter is bound to it).
pub fn init(cfg: &Settings, service: &str) -> Result<Telemetry, TelemetryError> {
    ACCESS_LOG.store(cfg.access_log, std::sync::atomic::Ordering::Relaxed);
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&cfg.log_level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;

    let exporter = exporter(cfg)?;
    let exporting = exporter.is_some();
    let provider = tracer_provider(cfg, service, exporter);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let fmt = match cfg.log_format {
        // Colours only on a terminal: a log file or a container's log has no escape codes.
        LogFormat::Console => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(jsonlog::JsonLines)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .boxed(),
    };
    // Per-poll busy/idle timing and code-location/thread attributes cost more than they tell
    // on a request path: off.
    TRACED.store(exporting, std::sync::atomic::Ordering::Relaxed);
    let otel = exporting.then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("llmrouter"))
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(RequestSpansOnly(fmt))
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    Ok(Telemetry { provider })
}

/// The log layer, shown every event but, of the spans, only those that say which request a
/// line belongs to — the HTTP request and the spans that carry a `request_id` (a chat, a
/// route, a job, an MCP message). The spans a request passes on its way (publish, process,
/// an upstream attempt, a tool call) go to traces only: the log layer writes a span's fields
/// out as text when the span opens, whether a line is ever logged in it or not, which cost
/// more instructions per request than the request itself (`just profile`). A wrapper rather
/// than a per-layer filter: with one, every call site the level turns off (actix's `trace!`
/// on each request) is asked again each time it is reached.
struct RequestSpansOnly<L>(L);

/// The name of the gateway's span for each HTTP request it serves.
pub const HTTP_REQUEST_SPAN: &str = "HTTP request";

fn identifies_a_request(meta: &tracing::Metadata<'_>) -> bool {
    meta.fields().field("request_id").is_some() || meta.name() == HTTP_REQUEST_SPAN
}

impl<S, L> Layer<S> for RequestSpansOnly<L>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        self.0.register_callsite(meta)
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(meta, ctx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        if identifies_a_request(attrs.metadata()) {
            self.0.on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if ctx.metadata(id).is_some_and(identifies_a_request) {
            self.0.on_record(id, values, ctx);
        }
    }

    fn on_follows_from(&self, id: &tracing::span::Id, follows: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(id, follows, ctx);
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &tracing::span::Id, new: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }
}

/// Where and how spans are exported: `telemetry.otlp_endpoint` / `otlp_protocol`, else the
/// standard `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` / `OTEL_EXPORTER_OTLP_PROTOCOL` (headers from
/// `OTEL_EXPORTER_OTLP_HEADERS`, read by the exporter). No endpoint: no export.
fn exporter(cfg: &Settings) -> Result<Option<opentelemetry_otlp::SpanExporter>, TelemetryError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let from_env = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if cfg.otlp_endpoint.is_empty() && from_env.is_none() {
        return Ok(None);
    }
    let protocol = match cfg.otlp_protocol.as_str() {
        "" => env("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "grpc".into()),
        p => p.to_owned(),
    };
    let fail = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter(e.to_string());
    let headers = headers(secrecy::ExposeSecret::expose_secret(&cfg.otlp_headers))?;
    let exporter = if protocol == "http/protobuf" {
        let mut b = opentelemetry_otlp::SpanExporter::builder().with_http();
        if !headers.is_empty() {
            b = opentelemetry_otlp::WithHttpConfig::with_headers(b, headers.into_iter().collect());
        }
        if cfg.otlp_endpoint.is_empty() {
            b.build()
        } else {
            b.with_endpoint(cfg.otlp_endpoint.clone()).build()
        }
    } else {
        let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if !headers.is_empty() {
            let mut map = http::HeaderMap::new();
            for (k, v) in headers {
                let key = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| TelemetryError::Exporter(format!("telemetry.otlp_headers: invalid name `{k}`")))?;
                let value = http::HeaderValue::from_str(&v).map_err(|_| {
                    TelemetryError::Exporter(format!("telemetry.otlp_headers: invalid value for `{k}`"))
                })?;
                map.insert(key, value);
            }
            let metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map);
            b = opentelemetry_otlp::WithTonicConfig::with_metadata(b, metadata);
        }
        if cfg.otlp_endpoint.is_empty() {
            b.build()
        } else {
            b.with_endpoint(cfg.otlp_endpoint.clone()).build()
        }
    };
    exporter.map(Some).map_err(fail)
}

/// `telemetry.otlp_headers` (`key=value,key2=value2`, as `OTEL_EXPORTER_OTLP_HEADERS`, which
/// the exporter reads itself when this is empty).
fn headers(list: &str) -> Result<Vec<(String, String)>, TelemetryError> {
    list.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| TelemetryError::Exporter(format!("telemetry.otlp_headers: `{h}` is not key=value")))
        })
        .collect()
}

/// The tracer provider: resource `service.name` = `{service_name}-{role}` (unless
/// `OTEL_SERVICE_NAME` names it), `service.instance.id`, `service.version`, anything in
/// `OTEL_RESOURCE_ATTRIBUTES`; parent-based sampling at `telemetry.sampling_ratio` (unless
/// `OTEL_TRACES_SAMPLER` chooses); batched export.
fn tracer_provider(
    cfg: &Settings,
    service: &str,
    exporter: Option<opentelemetry_otlp::SpanExporter>,
) -> SdkTracerProvider {
    let mut resource = opentelemetry_sdk::Resource::builder().with_attributes([
        opentelemetry::KeyValue::new("service.instance.id", instance_id()),
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ]);
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.is_empty()) {
        resource = resource.with_service_name(format!("{}-{}", cfg.service_name, service));
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if std::env::var("OTEL_TRACES_SAMPLER").map_or(true, |v| v.is_empty()) {
        let ratio = cfg.sampling_ratio.clamp(0.0, 1.0);
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))));
    }
    if let Some(exporter) = exporter {
        builder = builder.with_batch_exporter(exporter);
    }
    builder.build()
}

/// This process's instance id: host name and process id.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

impl Telemetry {
    /// Flushes and stops span export. Blocking: run it off async threads
    /// (e.g. `std::thread::spawn(move || t.shutdown()).join()`).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "span export did not shut down cleanly");
        }
    }
}

/// `trace` as the propagator reads it: its two W3C headers, those that are set (no map).
struct Carrier<'a>(&'a TraceContext);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .headers()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers().map(|(k, _)| k).collect()
    }
}

/// What the propagator writes: the W3C headers of a trace context.
#[derive(Default)]
struct Injected(TraceContext);

impl Injector for Injected {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.0.traceparent = value,
            "tracestate" => self.0.tracestate = value,
            _ => {}
        }
    }
}

/// A span's W3C trace context where no OpenTelemetry layer builds one: what [`set_parent`] or
/// [`context`] gave it, in the span's extensions (read by the JSON log lines).
#[derive(Clone)]
pub(crate) struct Carried(pub(crate) TraceContext);

/// Whether [`init`] installed the OpenTelemetry layer (spans are exported).
static TRACED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported. A span made only for traces — not carrying a `request_id`
/// for the log lines (the HTTP request, a publish and a process, an upstream attempt, a tool
/// call) — is made only then: `if !exported() { return Span::none() }`. Only a hint to the
/// calls below: where it is wrong, they find no OpenTelemetry layer and use the carried
/// context.
pub fn exported() -> bool {
    TRACED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `f` on `span`'s registry entry, when a registry holds it.
fn with_entry<R>(
    span: &tracing::Span,
    f: impl FnOnce(tracing_subscriber::registry::SpanRef<'_, tracing_subscriber::Registry>) -> Option<R>,
) -> Option<R> {
    span.with_subscriber(|(id, d)| {
        d.downcast_ref::<tracing_subscriber::Registry>()
            .and_then(|r| tracing_subscriber::registry::LookupSpan::span(r, id))
            .and_then(f)
    })
    .flatten()
}

/// The context carried by `span` or the nearest of its parents.
fn carried(span: &tracing::Span) -> Option<TraceContext> {
    with_entry(span, |entry| {
        entry
            .scope()
            .find_map(|s| s.extensions().get::<Carried>().map(|c| c.0.clone()))
    })
}

/// Keeps `trace` as `span`'s context (no OpenTelemetry layer).
fn carry(span: &tracing::Span, trace: &TraceContext) {
    with_entry(span, |entry| {
        entry.extensions_mut().replace(Carried(trace.clone()));
        Some(())
    });
}

/// A new trace, not sampled: a random trace id and parent id, flags `00`.
pub fn new_trace() -> TraceContext {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    TraceContext {
        traceparent: format!("00-{}-{}-00", ids.new_trace_id(), ids.new_span_id()),
        tracestate: String::new(),
    }
}

/// Continues `span` from a W3C trace context (ignored when its `traceparent` is empty or
/// invalid); the `tracestate` rides along in the span context and so reaches every child.
pub fn set_parent(span: &tracing::Span, trace: &TraceContext) {
    if !valid_traceparent(&trace.traceparent) {
        return;
    }
    if exported() {
        let cx = TraceContextPropagator::new().extract(&Carrier(trace));
        if !matches!(
            span.set_parent(cx),
            Err(tracing_opentelemetry::SetParentError::LayerNotFound)
        ) {
            return;
        }
    }
    carry(span, trace);
}

/// Without an exporter, keeps `trace` as `span`'s context, for its log lines' `trace_id`: for
/// a span that says which request a line belongs to, whose trace-only parent (a process
/// span) is not made then. With an exporter its parent already continues the trace: nothing.
pub fn carry_for_logs(span: &tracing::Span, trace: &TraceContext) {
    if !exported() && valid_traceparent(&trace.traceparent) {
        carry(span, trace);
    }
}

/// Links `span` to the context in `trace` (ignored when empty or invalid, or when spans are
/// not exported): a batch consumer's span links every message it handles.
pub fn add_link(span: &tracing::Span, trace: &TraceContext) {
    if !valid_traceparent(&trace.traceparent) || !exported() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Carrier(trace));
    span.add_link(cx.span().span_context().clone());
}

/// The trace context of `span` for the next hop (its `traceparent` and the `tracestate` it
/// carries). Without an OpenTelemetry layer: `inherited` when valid, else the context `span`
/// or a parent carries, else a [`new_trace`] that `span` then carries (and without any
/// subscriber, the new trace is not kept). A span whose log lines should name an inherited
/// trace is given it by [`set_parent`] or [`carry_for_logs`], once.
pub fn context(span: &tracing::Span, inherited: &TraceContext) -> TraceContext {
    if exported() {
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            let mut injected = Injected::default();
            TraceContextPropagator::new().inject_context(&cx, &mut injected);
            if !injected.0.traceparent.is_empty() {
                return injected.0;
            }
        }
    }
    if valid_traceparent(&inherited.traceparent) {
        return inherited.clone();
    }
    if let Some(own) = carried(span) {
        return own;
    }
    let fresh = new_trace();
    carry(span, &fresh);
    fresh
}

/// Whether `s` is a well-formed version-00 `traceparent` with non-zero ids.
pub fn valid_traceparent(s: &str) -> bool {
    let hex =
        |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()) && p.bytes().any(|b| b != b'0');
    let mut parts = s.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    version == "00" && hex(trace, 32) && hex(parent, 16) && flags.len() == 2
}

/// The trace id of a `traceparent`, when it has one.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    valid_traceparent(traceparent).then(|| &traceparent[3..35])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_otlp_headers() {
        assert_eq!(
            headers("authorization=Bearer x, x-team = a").unwrap(),
            vec![
                ("authorization".into(), "Bearer x".into()),
                ("x-team".into(), "a".into())
            ]
        );
        assert!(headers("").unwrap().is_empty());
        assert!(headers("novalue").is_err());
    }

    #[test]
    fn validates_traceparent() {
        assert!(valid_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-b7ad6b7169203331-01"
        ));
        assert!(!valid_traceparent("garbage"));
        assert!(!valid_traceparent(""));
        assert_eq!(
            trace_id("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }

    #[test]
    fn without_a_subscriber_the_inherited_context_flows() {
        let span = tracing::info_span!("x");
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let trace = TraceContext::from_headers(Some(tp), Some("vendor=a"));
        set_parent(&span, &trace);
        assert_eq!(context(&span, &trace), trace);
        let fresh = context(&span, &TraceContext::from_headers(Some("bad"), Some("v=1")));
        assert!(valid_traceparent(&fresh.traceparent), "{fresh:?}");
        assert!(
            fresh.traceparent.ends_with("-00"),
            "a new trace is not sampled: {fresh:?}"
        );
        assert!(fresh.tracestate.is_empty());
    }

    #[test]
    fn without_an_exporter_a_span_carries_its_context_to_its_children() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let trace = TraceContext::from_headers(Some(tp), Some("vendor=a"));
            let parent = tracing::info_span!("parent");
            set_parent(&parent, &trace);
            let child = parent.in_scope(|| tracing::info_span!("child"));
            assert_eq!(
                context(&child, &TraceContext::default()),
                trace,
                "the parent's, as it came"
            );
            let other =
                TraceContext::from_headers(Some("00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"), None);
            assert_eq!(context(&child, &other), other, "an inherited context wins");

            let root = tracing::info_span!("root");
            let first = context(&root, &TraceContext::default());
            assert!(valid_traceparent(&first.traceparent));
            assert_eq!(
                context(&root, &TraceContext::default()),
                first,
                "a new trace is kept by its span"
            );
            let inner = root.in_scope(|| tracing::info_span!("inner"));
            assert_eq!(context(&inner, &TraceContext::default()), first);
            assert_ne!(
                trace_id(&first.traceparent),
                trace_id(&context(&tracing::info_span!("another"), &TraceContext::default()).traceparent)
            );
        });
    }

    #[test]
    fn a_child_span_continues_the_trace_and_carries_its_tracestate() {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        TRACED.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::subscriber::with_default(subscriber, || {
            let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let parent = tracing::info_span!("parent");
            set_parent(&parent, &TraceContext::from_headers(Some(tp), Some("vendor=a,other=b")));
            let child = parent.in_scope(|| tracing::info_span!("child"));
            let next = context(&child, &TraceContext::default());
            assert_eq!(trace_id(&next.traceparent), Some("0af7651916cd43dd8448eb211c80319c"));
            assert_ne!(next.traceparent, tp, "the next hop's parent is the child span");
            assert_eq!(next.tracestate, "vendor=a,other=b");
        });
    }
}
