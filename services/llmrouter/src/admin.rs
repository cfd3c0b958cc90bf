//! The admin listener of a process without the gateway (`router`, `worker`, `mcp-tools`):
//! `/healthz` (alive), `/readyz` (the store answers and the process is not draining) and
//! `/metrics` (this process's metrics), on `telemetry.admin_host:admin_port`.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use llmr_config::Settings;
use llmr_store::Store;
use serde_json::json;

struct Probe {
    store: Store,
    draining: Arc<AtomicBool>,
}

/// A running admin listener.
pub struct Admin {
    pub port: u16,
    pub handle: ServerHandle,
}

/// Starts the listener when `telemetry.admin_port` is set. Call inside an actix System.
pub fn start(settings: &Settings, store: Store, draining: Arc<AtomicBool>) -> std::io::Result<Option<Admin>> {
    let t = &settings.telemetry;
    if t.admin_port == 0 {
        return Ok(None);
    }
    let listener = TcpListener::bind((t.admin_host.as_str(), t.admin_port))?;
    let port = listener.local_addr()?.port();
    let probe = web::Data::new(Probe { store, draining });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(probe.clone())
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "alive"})) }),
            )
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Some(Admin { port, handle }))
}

async fn readyz(p: web::Data<Probe>) -> HttpResponse {
    if p.draining.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
    match p.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"status": "unready", "error": e.to_string()})),
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(llmr_telemetry::metrics::render())
}
