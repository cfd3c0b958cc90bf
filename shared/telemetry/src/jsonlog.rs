//! JSON log lines: one object per event with `timestamp`, `level`, `target`, the `trace_id` of
//! the event's span (and, when spans are exported, its OpenTelemetry `span_id`), the fields of every enclosing span (so
//! `request_id` and `model` of a request's span appear on each of its lines), the innermost
//! span's name, and the event's own fields (`message` included).

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter (pair it with `JsonFields`, so span fields are stored as JSON).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // The trace context first, before any span's extensions are borrowed below.
        let sc = tracing::Span::current().context().span().span_context().clone();
        let meta = event.metadata();
        let mut obj = Map::new();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        obj.insert("timestamp".into(), Value::String(ts));
        obj.insert("level".into(), Value::String(meta.level().to_string()));
        obj.insert("target".into(), Value::String(meta.target().to_owned()));
        if sc.is_valid() {
            obj.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
            obj.insert("span_id".into(), Value::String(sc.span_id().to_string()));
        }
        if let Some(scope) = ctx.event_scope() {
            let mut name = None;
            for span in scope.from_root() {
                name = Some(span.name());
                let ext = span.extensions();
                if !sc.is_valid()
                    && let Some(id) = ext
                        .get::<crate::Carried>()
                        .and_then(|c| crate::trace_id(&c.0.traceparent))
                {
                    // Without an exporter: the trace the request carries (the innermost wins).
                    obj.insert("trace_id".into(), Value::String(id.to_owned()));
                }
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&f.fields)
                {
                    obj.extend(fields);
                }
            }
            if let Some(n) = name {
                obj.insert("span".into(), Value::String(n.to_owned()));
            }
        }
        event.record(&mut Fields(&mut obj));
        writeln!(writer, "{}", Value::Object(obj))
    }
}

/// Collects an event's fields as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), Value::String(v.to_owned()));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), Value::from(v));
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), Value::Bool(v));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().into(), Value::String(format!("{v:?}")));
    }
}
