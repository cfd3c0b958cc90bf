//! CORS for browser clients, from `[server] cors_*` (actix-cors): preflight requests are
//! answered here, before authentication. With no configured origin the middleware is not
//! installed at all (requests with an `Origin` are served as before, without CORS headers).

use actix_cors::Cors;
use llmr_config::Server;

/// The CORS middleware for the configured origins, methods and headers (installed only when
/// `cors_origins` is not empty).
pub fn cors(s: &Server) -> Cors {
    let mut c = Cors::default()
        .allowed_methods(s.cors_methods.iter().map(String::as_str))
        .max_age(s.cors_max_age_s)
        .expose_headers(["x-llmr-cache", "mcp-session-id", "retry-after"]);
    c = if s.cors_origins.iter().any(|o| o == "*") {
        c.allow_any_origin().send_wildcard()
    } else {
        s.cors_origins.iter().fold(c, |c, o| c.allowed_origin(o))
    };
    c = if s.cors_headers.is_empty() {
        c.allow_any_header()
    } else {
        c.allowed_headers(s.cors_headers.iter().map(String::as_str))
    };
    if s.cors_credentials {
        c = c.supports_credentials();
    }
    c
}
