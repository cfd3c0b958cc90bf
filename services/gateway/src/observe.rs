//! Metrics and probes of the gateway: the middleware that counts and times every HTTP
//! request, `/metrics` (Prometheus text; the store's and bus's state read at scrape time),
//! `/healthz` (the process is alive) and `/readyz` (the store answers and the gateway is not
//! draining). None of them needs the token, like `/health`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use llmr_store::Availability;
use llmr_telemetry::metrics::{metrics, render};
use serde_json::json;
use tracing::Instrument;

use crate::AppState;
use crate::trace::client_trace;

/// Paths any client (a probe, a scraper) may call without the token.
pub const OPEN_PATHS: [&str; 5] = ["/health", "/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Counts and times every request by its route pattern (never the raw path), method and
/// status; the duration runs until the response head, and `telemetry.access_log` writes it as
/// one line. Where spans are exported each request is one SERVER span (`{method} {route}`),
/// continuing the client's `traceparent`; the handlers' spans are its children.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some((open, bound)) = crate::files::over()
        && !OPEN_PATHS.contains(&req.path())
    {
        return Ok(too_many_connections(req, open, bound).map_into_right_body());
    }
    let started = Instant::now();
    let method = req.method().to_string();
    let span = if !llmr_telemetry::exported() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
        llmr_telemetry::HTTP_REQUEST_SPAN,
        otel.name = %format!("{method} {}", req.path()),
        otel.kind = "server",
        http.request.method = %method,
        url.path = %req.path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        )
    };
    llmr_telemetry::set_parent(&span, &client_trace(req.headers()));
    let res = next.call(req).instrument(span.clone()).await;
    let (route, status) = match &res {
        Ok(r) => (
            r.request().match_pattern().unwrap_or_else(|| "unmatched".into()),
            r.status().as_u16(),
        ),
        Err(e) => ("unmatched".to_owned(), e.as_response_error().status_code().as_u16()),
    };
    span.record("otel.name", format!("{method} {route}").as_str());
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", status);
    let took = started.elapsed();
    if llmr_telemetry::access_log() {
        tracing::info!(
            target: "llmrouter::access",
            // Rounded to µs: printed short, a number in JSON.
            ms = (took.as_secs_f64() * 1e6).round() / 1e3,
            "{method} {route} {status}"
        );
    }
    let m = metrics();
    m.http_requests
        .with_label_values(&[route.as_str(), method.as_str(), &status.to_string()])
        .inc();
    m.http_duration
        .with_label_values(&[route.as_str()])
        .observe(took.as_secs_f64());
    res.map(ServiceResponse::map_into_left_body)
}

/// 503 `overloaded` for a request over [`crate::files`]' bound; the connection is closed.
fn too_many_connections(req: ServiceRequest, open: usize, bound: usize) -> ServiceResponse {
    metrics().shed.with_label_values(&["connections"]).inc();
    let err = crate::HttpError(llmr_protocol::ApiError::Overloaded {
        message: format!(
            "This gateway holds {open} client connections, above its bound of {bound} (below its open-file limit; `server.max_connections`); retry later."
        ),
        retry_after_s: 1,
    });
    let mut res = req.error_response(err);
    res.response_mut()
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    res
}

/// `/healthz`: the process serves.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

/// `/readyz`: the store answers and the gateway is not draining.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"status": "unready", "error": e.to_string()})),
    }
}

/// `/metrics`: this process's metrics, with the cluster's routing state and stream backlog
/// read now.
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    let report = tokio::time::timeout(std::time::Duration::from_millis(900), crate::health::report(&state)).await;
    let features = match report {
        Ok(Ok(report)) => {
            routing_gauges(&report);
            report.features
        }
        _ => crate::health::all_unavailable("the store does not answer"),
    };
    for f in crate::health::FEATURES {
        let up = features.get(f).is_some_and(crate::health::FeatureState::is_up);
        metrics().feature_available.with_label_values(&[f]).set(i64::from(up));
    }
    backlog_gauges(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render())
}

/// Loads, circuits and cooldowns of every target and key, from the health report.
fn routing_gauges(report: &crate::health::Report) {
    let m = metrics();
    let now = llmr_protocol::now_ms();
    let set = |kind: &str, name: &str, v: &crate::health::HealthView| {
        let state = match v.available {
            Availability::Available => 0,
            Availability::Probe => 1,
            Availability::OpenUntil(_) => 2,
            Availability::CoolingUntil(_) => 3,
        };
        m.circuit_state.with_label_values(&[kind, name]).set(state);
        let until = v.open_until_ms.max(v.cooldown_until_ms).unwrap_or(0);
        m.unavailable_seconds
            .with_label_values(&[kind, name])
            .set(until.saturating_sub(now) as f64 / 1000.0);
    };
    for t in &report.targets {
        m.target_load
            .with_label_values(&[t.target.as_str()])
            .set(i64::try_from(t.load).unwrap_or(i64::MAX));
        set("target", &t.target, &t.health);
    }
    for k in report.providers.iter().flat_map(|p| &p.keys) {
        set("key", &k.key, &k.health);
    }
}

/// Length, pending entries and lag of every stream of the cluster.
async fn backlog_gauges(state: &AppState) {
    let streams = crate::shed::every_stream(&state.settings);
    let m = metrics();
    m.queue_wait.reset();
    for (pool, priority, ms) in state.shed.waits() {
        m.queue_wait
            .with_label_values(&[pool, priority.as_str()])
            .set(ms as f64 / 1000.0);
    }
    for (stream, group) in streams {
        if let Ok(b) = state.bus.backlog(&stream, group).await {
            m.stream_pending
                .with_label_values(&[stream.as_str(), group])
                .set(b.pending as i64);
            m.stream_length
                .with_label_values(&[stream.as_str()])
                .set(b.length as i64);
            if let Some(lag) = b.lag {
                m.stream_lag
                    .with_label_values(&[stream.as_str(), group])
                    .set(lag as i64);
            }
        }
    }
}
