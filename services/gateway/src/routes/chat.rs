//! The routed OpenAI endpoints — `POST /v1/chat/completions`, `/v1/embeddings` and the legacy
//! `/v1/completions`: validate, publish on `requests`, answer from reply frames. A client that
//! goes away drops its call, which cancels the request.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use llmr_protocol::chat::ChatRequest;
use llmr_protocol::{CallerId, Endpoint, Envelope, Kind, Meta, NativeBody, chat, endpoints, now_ms, streams};

use crate::{AppState, HttpError};

/// `POST /v1/chat/completions`.
pub async fn completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = super::read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let parsed = chat::parse(&body)?.into_owned();
    serve(&req, &state, body, parsed, Endpoint::Chat).await
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = super::read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let parsed = endpoints::embeddings(&body)?;
    serve(&req, &state, body, parsed, Endpoint::Embeddings).await
}

/// `POST /v1/completions` (legacy text completions).
pub async fn text_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let body = super::read_body(&req, payload, state.settings.server.max_body_bytes).await?;
    let parsed = endpoints::completions(&body)?;
    serve(&req, &state, body, parsed, Endpoint::Completions).await
}

/// A request on its way: the call its frames arrive on, their head, and its span.
pub struct Published {
    pub call: llmr_bus::Call,
    pub head: llmr_protocol::Head,
    pub span: tracing::Span,
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    pub started: std::time::Instant,
    /// Its governance: settled when the answer is over (or when dropped).
    pub ticket: Option<crate::govern::Ticket>,
}

impl Published {
    /// Whether the answer streams (asked for, and the head says so).
    pub fn streams(&self) -> bool {
        self.stream && self.head.stream
    }

    /// Records the time to the first token (of a streamed answer).
    pub fn first_token(&mut self) {
        if let Some(t) = &mut self.ticket {
            t.first_token();
        }
        llmr_telemetry::metrics::metrics()
            .time_to_first_token
            .with_label_values(&[self.model.as_str()])
            .observe(self.started.elapsed().as_secs_f64());
    }

    /// The whole answer of a non-streamed request: the head's status and the body.
    pub async fn body(&mut self) -> Result<(u16, Bytes), HttpError> {
        let body = self.call.body().await;
        if let Some(t) = &mut self.ticket {
            match &body {
                Ok(_) => t.answered(
                    self.head.status,
                    self.call.outcome(),
                    self.head.cache == Some(llmr_protocol::CacheStatus::Hit),
                ),
                Err(e) => t.failed(e),
            }
        }
        Ok((self.head.status, body?))
    }

    /// Settles the request's governance (after its body was read) and adds its headers to
    /// the answer: the rate-limit headers of `wire`'s API and the cost.
    pub fn finish(&mut self, wire: crate::error::Wire, mut resp: HttpResponse) -> HttpResponse {
        if let Some(t) = self.ticket.take() {
            t.decorate(wire, &mut resp);
            t.settle();
        }
        resp
    }

    /// Relays a streamed answer in `dialect`; the rate-limit headers go with its head, and
    /// the governance is settled when the stream ends.
    pub fn relay(mut self, dialect: super::sse::Dialect, compress: bool, wire: crate::error::Wire) -> HttpResponse {
        self.first_token();
        super::sse::relay_settled(self.call, dialect, self.head.cache, compress, self.ticket.take(), wire)
    }

    /// The whole answer as JSON, for the routes that translate it: an error status is the
    /// upstream's refusal, an unreadable body the upstream's fault.
    pub async fn json(&mut self) -> Result<serde_json::Value, HttpError> {
        let (status, body) = self.body().await?;
        if status >= 400 {
            return Err(HttpError(llmr_protocol::ApiError::UpstreamRejected {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            }));
        }
        serde_json::from_slice(&body).map_err(|e| {
            HttpError(llmr_protocol::ApiError::Upstream {
                message: format!("unreadable answer: {e}"),
            })
        })
    }
}

/// Publishes a validated request on `requests` and waits for the head of its answer;
/// `native` is the client's own body when it spoke another API (see `Meta::native`).
pub async fn publish(
    req: &HttpRequest,
    state: &AppState,
    body: Bytes,
    parsed: ChatRequest<'static>,
    endpoint: Endpoint,
    native: Option<NativeBody>,
) -> Result<Published, HttpError> {
    let identity = super::models::identity(req);
    let priority = crate::shed::admit(req, &state.settings, &state.shed, &parsed.model, &identity)?;
    check_counts(&state.settings.server, &parsed)?;
    let mut native = native;
    let (mut body, mut parsed) = (body, parsed);
    if endpoint == Endpoint::Chat
        && let Some(b) = super::templates::apply(state, &body, &parsed.model)?
    {
        parsed = chat::parse(&b)?.into_owned();
        body = b;
        // The template is in the chat body only: Anthropic targets get that one.
        native = None;
    }
    let ask = crate::govern::Ask {
        route: endpoint_route(req.path()),
        model: &parsed.model,
        stream: parsed.stream,
        body_len: body.len(),
        max_tokens: parsed.max_tokens,
    };
    let ticket = crate::govern::admit(&state.settings, &state.store, &identity, &ask).await?;
    if let Some(cap) = ticket.cap_to_send() {
        body = with_field(&body, "max_tokens", cap)?;
    }
    let meta = Meta {
        model: parsed.model.into_owned(),
        stream: parsed.stream,
        include_usage: parsed.include_usage,
        caller: CallerId::Gateway(state.instance.clone()),
        cache: super::sse::cache_directives(req),
        endpoint,
        native,
        priority,
        scope: identity.cache_scope(state.settings.cache.scope),
        tools: identity.tool_lists(),
        ..Meta::default()
    };
    let deadline = now_ms() + state.settings.server.request_timeout_ms;
    let mut env = Envelope::new(Kind::Chat, &state.instance, deadline, Default::default(), body, meta);
    env.id = ticket.id;
    // A child of the request's SERVER span (which continued the client's trace).
    let span = tracing::info_span!("chat", request_id = %env.id, model = %env.meta.model, stream = env.meta.stream, endpoint = endpoint.as_str());
    env.trace = crate::trace::continue_client(&span, req.headers());
    log_prompt(state, &span, &env.body);
    let started = std::time::Instant::now();
    let mut ticket = ticket;
    let head = async {
        let mut call = state.send(streams::REQUESTS, &env).await?;
        tracing::debug!(parent: &span, "published");
        // The head (or an error) decides the response shape.
        let head = call.head().await?;
        Ok::<_, HttpError>((call, head))
    }
    .await;
    let (call, head) = match head {
        Ok(h) => h,
        Err(e) => {
            ticket.settle_failed(&e.0);
            return Err(e);
        }
    };
    Ok(Published {
        call,
        head,
        span,
        model: env.meta.model,
        stream: env.meta.stream,
        started,
        ticket: Some(ticket),
    })
}

/// Publishes a validated request and answers from its frames.
async fn serve(
    req: &HttpRequest,
    state: &AppState,
    body: Bytes,
    parsed: ChatRequest<'static>,
    endpoint: Endpoint,
) -> Result<HttpResponse, HttpError> {
    let mut p = publish(req, state, body, parsed, endpoint, None).await?;
    if p.streams() {
        let compress = super::sse::compress_stream(req);
        return Ok(p.relay(super::sse::Dialect::Chat, compress, crate::error::Wire::OpenAi));
    }
    let (status, body) = p.body().await?;
    if state.settings.telemetry.log_content {
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = answer
            .pointer("/choices/0/message/content")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        tracing::info!(parent: &p.span, answer = %content(state, text), "response content");
    }
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    let mut r = HttpResponse::build(status);
    if let Some(c) = p.head.cache {
        r.insert_header((super::sse::CACHE_HEADER, c.as_str()));
    }
    let resp = r.content_type("application/json").body(body);
    Ok(p.finish(crate::error::Wire::OpenAi, resp))
}

/// `body` (a JSON object) with `field` set to `value`.
pub fn with_field(body: &[u8], field: &str, value: u64) -> Result<Bytes, HttpError> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| HttpError(llmr_protocol::ApiError::invalid(format!("Malformed JSON: {e}"), None)))?;
    v.insert(field.to_owned(), serde_json::Value::from(value));
    Ok(Bytes::from(serde_json::Value::Object(v).to_string()))
}

/// Logs the prompt when `telemetry.log_content` is on.
fn log_prompt(state: &AppState, span: &tracing::Span, body: &[u8]) {
    if state.settings.telemetry.log_content {
        let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let prompt = chat::last_user_text(&request, "\n");
        tracing::info!(parent: span, prompt = %content(state, &prompt), "request content");
    }
}

/// Refuses more messages or tools than `[server]` allows.
fn check_counts(server: &llmr_config::Server, parsed: &ChatRequest<'_>) -> Result<(), HttpError> {
    for (count, max, field) in [
        (parsed.message_count, server.max_messages, "messages"),
        (parsed.tool_count, server.max_tools, "tools"),
    ] {
        if count > max {
            return Err(HttpError(llmr_protocol::ApiError::invalid(
                format!("Too many {field}: {count} (at most {max})."),
                Some(field),
            )));
        }
    }
    Ok(())
}

/// The front door a path belongs to, as the request log names it.
fn endpoint_route(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat",
        "/v1/embeddings" => "embeddings",
        "/v1/completions" => "completions",
        "/v1/messages" => "anthropic",
        "/api/chat" | "/api/generate" => "ollama",
        "/api/embed" => "ollama_embed",
        p if p.starts_with("/v1/text/") => "text",
        _ => "other",
    }
}

/// Content as it may be logged: scrubbed of personal data unless scrubbing is off.
fn content(state: &AppState, text: &str) -> String {
    if state.settings.telemetry.scrub_content {
        llmr_telemetry::scrub::scrub(text)
    } else {
        text.to_owned()
    }
}
