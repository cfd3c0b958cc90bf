//! The operator console: `/ui/`, its files embedded in the binary, and its sessions.
//!
//! The page is plain HTML, CSS and JavaScript (`services/gateway/ui/`), served with a
//! Content-Security-Policy that allows no inline script or style; it reads the JSON of
//! `/admin/…`. Signing in with `server.admin_token` (`POST /ui/login`) sets a session cookie
//! (HttpOnly, SameSite=Strict, Secure under TLS, `[ui] session_ttl_ms`) that `/admin/…`
//! takes in place of the Bearer token; any change made with it also needs the session's
//! CSRF token in `x-csrf-token`. Sessions are stateless — an expiry and a nonce, signed with
//! HMAC-SHA-256 under a key derived from the admin token — so every gateway replica with the
//! same admin token accepts the session any of them made, nothing is stored, and changing
//! the admin token ends every session. Nothing here runs unless a page asks.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use llmr_protocol::{ApiError, now_ms};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{AppState, HttpError};

/// The session cookie's name.
pub const COOKIE: &str = "llmr_console";

/// The header that carries the session's CSRF token on every change.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The policy of every console answer: scripts, styles and data from the gateway only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's files: (path under `/ui/`, content type, bytes).
const FILES: [(&str, &str, &str); 4] = [
    ("", "text/html; charset=utf-8", include_str!("../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../ui/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../ui/app.css")),
    ("icon.svg", "image/svg+xml", include_str!("../ui/icon.svg")),
];

type HmacSha256 = Hmac<Sha256>;

/// Registers the console's routes (when `[ui] enabled`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(redirect))
        .route("/ui/session", web::get().to(session))
        .route("/ui/login", web::post().to(login))
        .route("/ui/logout", web::post().to(logout))
        .route("/ui/{file:.*}", web::get().to(file));
}

/// A signed-in session, as its cookie carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub expires_ms: u64,
    nonce: String,
}

/// The signing key: the admin token's digest under the console's own label.
fn signing_key(admin_token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"llmr-console-session-v1\0");
    h.update(admin_token.as_bytes());
    h.finalize().into()
}

fn mac(admin_token: &str, what: &str) -> String {
    // An HMAC takes a key of any length.
    #[allow(clippy::expect_used)]
    let mut m = HmacSha256::new_from_slice(&signing_key(admin_token)).expect("HMAC takes any key");
    m.update(what.as_bytes());
    B64.encode(m.finalize().into_bytes())
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Session {
    fn new(ttl_ms: u64) -> Session {
        let nonce: [u8; 18] = rand::random();
        Session {
            expires_ms: now_ms() + ttl_ms,
            nonce: B64.encode(nonce),
        }
    }

    /// The cookie's value: `v1.{expires}.{nonce}.{mac}`.
    fn seal(&self, admin_token: &str) -> String {
        let body = format!("v1.{}.{}", self.expires_ms, self.nonce);
        let sig = mac(admin_token, &body);
        format!("{body}.{sig}")
    }

    /// The session a cookie value carries, when its signature holds and it has not expired.
    fn open(value: &str, admin_token: &str, now: u64) -> Option<Session> {
        let (body, sig) = value.rsplit_once('.')?;
        if !equal(sig, &mac(admin_token, body)) {
            return None;
        }
        let mut parts = body.split('.');
        let (Some("v1"), Some(exp), Some(nonce), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expires_ms = exp.parse::<u64>().ok().filter(|e| *e > now)?;
        Some(Session {
            expires_ms,
            nonce: nonce.to_owned(),
        })
    }

    /// The session's CSRF token (bound to its nonce).
    pub fn csrf(&self, admin_token: &str) -> String {
        mac(admin_token, &format!("csrf.{}", self.nonce))
    }
}

/// The live session of `req`'s cookie, if any (none when the admin token is not set).
pub fn session_of(req: &HttpRequest, state: &AppState) -> Option<Session> {
    let admin = state.settings.server.admin_token()?;
    let cookie = req.cookie(COOKIE)?;
    Session::open(cookie.value(), admin, now_ms())
}

/// Whether `req`, made with the session `s`, may change something: it carries the session's
/// CSRF token, and an `Origin` (when sent) that is this host's.
pub fn may_change(req: &HttpRequest, state: &AppState, s: &Session) -> bool {
    let Some(admin) = state.settings.server.admin_token() else {
        return false;
    };
    let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    given.is_some_and(|g| equal(g, &s.csrf(admin))) && same_origin(req)
}

/// An `Origin` header, when present, names the host the request was sent to.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req.connection_info().host().to_owned();
    origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .is_some_and(|(_, h)| h.eq_ignore_ascii_case(&host))
}

/// Whether the session cookie must be `Secure`: the gateway serves TLS, or a proxy in front
/// of it says the client used https.
fn secure(req: &HttpRequest, state: &AppState) -> bool {
    !state.settings.server.tls_cert.is_empty() || req.connection_info().scheme() == "https"
}

/// The console's security headers, on every answer it makes.
fn guarded(mut resp: HttpResponse) -> HttpResponse {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn redirect() -> HttpResponse {
    guarded(
        HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, "/ui/"))
            .finish(),
    )
}

/// `GET /ui/{file}`: one of the embedded files (`/ui/` is the page).
async fn file(path: web::Path<String>) -> Result<HttpResponse, HttpError> {
    let name = path.into_inner();
    let Some((_, ctype, body)) = FILES.iter().find(|(p, ..)| *p == name) else {
        return Err(HttpError(ApiError::NotFound {
            message: format!("The console has no file `{name}`."),
        }));
    };
    Ok(guarded(HttpResponse::Ok().content_type(*ctype).body(*body)))
}

/// The session's state as the page reads it.
fn session_json(state: &AppState, s: Option<&Session>) -> serde_json::Value {
    let admin = state.settings.server.admin_token();
    serde_json::json!({
        "configured": admin.is_some(),
        "signed_in": s.is_some(),
        "csrf": s.zip(admin).map(|(s, a)| s.csrf(a)),
        "expires_ms": s.map(|s| s.expires_ms),
        "instance": state.instance,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /ui/session`.
async fn session(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = session_of(&req, &state);
    guarded(HttpResponse::Ok().json(session_json(&state, s.as_ref())))
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

/// `POST /ui/login` with `{"token": admin token}` (JSON only, so a cross-site form cannot
/// post it).
async fn login(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let Some(admin) = state.settings.server.admin_token() else {
        return Err(HttpError(ApiError::Forbidden {
            message: "The console is off: set server.admin_token (LLMR__SERVER__ADMIN_TOKEN) to sign in.".into(),
        }));
    };
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json || !same_origin(&req) {
        return Err(HttpError(ApiError::Forbidden {
            message: "Sign in from the console's own page (a JSON body, from the same origin).".into(),
        }));
    }
    let given: Login = serde_json::from_slice(&body).map_err(|e| {
        HttpError(ApiError::invalid(
            format!("The body must be {{\"token\": …}}: {e}"),
            Some("token"),
        ))
    })?;
    let digest = |t: &str| Sha256::digest(t.as_bytes());
    if !bool::from(digest(&given.token).ct_eq(&digest(admin))) {
        tracing::warn!("console sign-in refused: wrong admin token");
        return Err(HttpError(ApiError::Unauthorized {
            message: "That is not the admin token (server.admin_token).".into(),
        }));
    }
    let s = Session::new(state.settings.ui.session_ttl_ms);
    let ttl_s = i64::try_from(state.settings.ui.session_ttl_ms / 1000).unwrap_or(i64::MAX);
    let cookie = Cookie::build(COOKIE, s.seal(admin))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(&req, &state))
        .max_age(CookieDuration::seconds(ttl_s))
        .finish();
    Ok(guarded(
        HttpResponse::Ok().cookie(cookie).json(session_json(&state, Some(&s))),
    ))
}

/// `POST /ui/logout` (with the session's CSRF token): the cookie is cleared.
async fn logout(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    if let Some(s) = session_of(&req, &state)
        && !may_change(&req, &state, &s)
    {
        return Err(HttpError(csrf_refusal()));
    }
    let mut gone = Cookie::build(COOKIE, "")
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    gone.make_removal();
    Ok(guarded(
        HttpResponse::Ok().cookie(gone).json(session_json(&state, None)),
    ))
}

/// The refusal of a change made with a session but without its CSRF token.
pub fn csrf_refusal() -> ApiError {
    ApiError::Forbidden {
        message: format!(
            "A change made with a console session needs its CSRF token in `{CSRF_HEADER}` (from /ui/session)."
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_with_its_signature_under_the_same_token_before_it_expires() {
        let s = Session::new(60_000);
        let sealed = s.seal("admin-a");
        let now = now_ms();
        assert_eq!(Session::open(&sealed, "admin-a", now), Some(s.clone()));
        assert_eq!(Session::open(&sealed, "admin-b", now), None, "another admin token");
        assert_eq!(Session::open(&sealed, "admin-a", s.expires_ms), None, "expired");
        let forged = sealed.replacen(&s.expires_ms.to_string(), &(s.expires_ms + 1).to_string(), 1);
        assert_eq!(Session::open(&forged, "admin-a", now), None, "a changed expiry");
        assert_eq!(Session::open("v1.1.2", "admin-a", now), None);
        assert_ne!(
            s.csrf("admin-a"),
            Session::new(60_000).csrf("admin-a"),
            "CSRF tokens are per session"
        );
    }
}
