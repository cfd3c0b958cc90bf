//! A programmable mock OpenAI upstream, on a free port in its own thread and actix System.
//!
//! It answers `POST /v1/chat/completions` (plain and streaming) with `mock: <last user
//! message>`, so every answer can be checked against its request, and `GET /v1/models`.
//! Behaviour comes from a default plus a queue of one-shot behaviours ([`MockUpstream::push`]):
//! latency, status codes, `Retry-After`, stream chunking and pacing, hang, drop mid-stream.
//! Every request is recorded (headers and body), and so is every client that went away
//! before its response was complete ([`MockUpstream::disconnects`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use llmr_protocol::Usage;
use llmr_protocol::openai::{ChatChunk, ChatCompletion, Delta};
use serde_json::{Value, json};

/// How the mock answers one request.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Wait before answering.
    pub latency: Duration,
    /// Answer with this status and an OpenAI error body (0 = 200 with a completion).
    pub status: u16,
    /// `Retry-After` header value on error answers.
    pub retry_after: Option<String>,
    /// Stream: split the content into this many chunks (0 = one per word).
    pub chunks: usize,
    /// Stream: wait between chunks.
    pub chunk_delay: Duration,
    /// Never finish answering (headers, then keep-alive comments only).
    pub hang: bool,
    /// Stream: close the connection after this many chunks.
    pub drop_after: Option<usize>,
    /// When > 0, `status` (500 if unset) is answered only with this probability.
    pub fail_rate: f64,
    /// Report no usage at all (plain or streamed).
    pub no_usage: bool,
    /// Answer (non-streamed) with these `tool_calls` instead of text.
    pub tool_calls: Option<Value>,
    /// Error answers quote the `Authorization` header they got (as careless upstreams do).
    pub echo_auth: bool,
    /// The `code` of error answers (e.g. Azure's `content_filter`).
    pub error_code: Option<String>,
    /// Answer 200 with a body that is not JSON.
    pub malformed: bool,
}

impl Behavior {
    pub fn ok() -> Behavior {
        Behavior::default()
    }
    pub fn status(code: u16) -> Behavior {
        Behavior {
            status: code,
            ..Behavior::default()
        }
    }
    pub fn latency(ms: u64) -> Behavior {
        Behavior {
            latency: Duration::from_millis(ms),
            ..Behavior::default()
        }
    }
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// The query string (`api-version=…` for Azure).
    pub query: String,
    pub authorization: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Every header (lowercase names).
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
    /// The status it was answered with.
    pub status: u16,
}

/// Usage the mock reported to one key (by `Authorization` header), successful answers only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Default)]
struct State {
    default: Behavior,
    queue: VecDeque<Behavior>,
    models: Vec<String>,
    log: Vec<Recorded>,
    reported: std::collections::HashMap<String, Reported>,
}

struct Shared {
    state: Mutex<State>,
    disconnects: tokio::sync::watch::Sender<usize>,
}

pub struct MockUpstream {
    pub port: u16,
    /// Served over HTTPS (as `localhost`).
    tls: bool,
    shared: Arc<Shared>,
    server: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts a mock serving `models`.
    pub fn start(models: &[&str]) -> MockUpstream {
        MockUpstream::start_with(models, None)
    }

    /// Starts a mock serving `models` over HTTPS with a PEM certificate chain and key (its
    /// base URL names `localhost`).
    pub fn start_tls(models: &[&str], cert: &std::path::Path, key: &std::path::Path) -> MockUpstream {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = llmr_gateway::server_tls(cert, key).unwrap_or_else(|e| panic!("mock TLS: {e}"));
        MockUpstream::start_with(models, Some(cfg))
    }

    fn start_with(models: &[&str], tls: Option<rustls::ServerConfig>) -> MockUpstream {
        let secure = tls.is_some();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                models: models.iter().map(|m| m.to_string()).collect(),
                ..State::default()
            }),
            disconnects: tokio::sync::watch::channel(0).0,
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = shared.clone();
        let thread = std::thread::spawn(move || {
            let sys = actix_rt::System::new();
            sys.block_on(async move {
                let data = web::Data::from(s2);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(64 << 20))
                        .route("/v1/chat/completions", web::post().to(chat))
                        .route(
                            "/openai/deployments/{deployment}/chat/completions",
                            web::post().to(chat),
                        )
                        .route("/v1/embeddings", web::post().to(other_endpoint))
                        .route("/v1/messages", web::post().to(anthropic_messages))
                        .route("/api/chat", web::post().to(ollama_chat))
                        .route("/api/embed", web::post().to(ollama_chat))
                        .route("/api/tags", web::get().to(ollama_tags))
                        .route("/v1/completions", web::post().to(other_endpoint))
                        .route("/v1/models", web::get().to(models_list))
                        .default_service(web::to(elsewhere))
                })
                .workers(2)
                .tcp_nodelay(true)
                .disable_signals();
                let server = match tls {
                    Some(cfg) => server.bind_rustls_0_23(("127.0.0.1", 0), cfg),
                    None => server.bind(("127.0.0.1", 0)),
                }
                .expect("bind mock");
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).expect("report mock port");
                let _ = server.await;
            });
        });
        let (port, server) = rx.recv().expect("mock started");
        MockUpstream {
            port,
            tls: secure,
            shared,
            server,
            thread: Some(thread),
        }
    }

    /// The base URL a provider config points at (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/v1", self.port)
        } else {
            format!("http://127.0.0.1:{}/v1", self.port)
        }
    }

    /// Sets how every request is answered unless a one-shot behaviour is queued.
    pub fn set_default(&self, b: Behavior) {
        self.shared.state.lock().unwrap().default = b;
    }

    /// Queues a behaviour for the next request only.
    pub fn push(&self, b: Behavior) {
        self.shared.state.lock().unwrap().queue.push_back(b);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state.lock().unwrap().log.clone()
    }

    /// Usage reported per `Authorization` header value.
    pub fn reported(&self) -> std::collections::HashMap<String, Reported> {
        self.shared.state.lock().unwrap().reported.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.state.lock().unwrap().log.len()
    }

    /// How many clients went away before their response was complete.
    pub fn disconnects(&self) -> usize {
        *self.shared.disconnects.borrow()
    }

    /// Waits until at least `n` disconnects were seen, up to `timeout`.
    pub async fn wait_for_disconnects(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.disconnects.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|v| *v >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        let h = self.server.clone();
        // Stop the server from its own System and wait for the thread.
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(h.stop(false));
        })
        .join()
        .ok();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn models_list(data: web::Data<Shared>) -> HttpResponse {
    let models = data.state.lock().unwrap().models.clone();
    let list: Vec<Value> = models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "mock"}))
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": list}))
}

/// Counts a disconnect when dropped before `done` was set.
struct DisconnectGuard {
    shared: Arc<Shared>,
    done: bool,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shared.disconnects.send_modify(|v| *v += 1);
        }
    }
}

/// The reply content for a request: `mock: <last user message text>`, or after a tool
/// result, `mock: tool said <its content>`.
pub fn answer_for(body: &Value) -> String {
    if let Some(last) = body["messages"].as_array().and_then(|ms| ms.last())
        && last["role"] == "tool"
    {
        return format!("mock: tool said {}", last["content"].as_str().unwrap_or(""));
    }
    let text = llmr_protocol::chat::last_user_text(body, " ");
    format!("mock: {text}")
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// `POST /v1/embeddings` (a two-dimension vector per input) and `/v1/completions` (`mock:
/// <prompt>`, plain only): recorded like chats, answering the queued behavior's status.
async fn other_endpoint(req: HttpRequest, body: web::Bytes, data: web::Data<Shared>) -> HttpResponse {
    let shared = data.into_inner();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let behavior = record(&shared, &req, &body);
    if behavior.status != 0 {
        return failure(&behavior).json(json!({"error": {"message": "mock error", "type": "mock_error"}}));
    }
    let model = body["model"].as_str().unwrap_or("mock");
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
    if req.path().ends_with("/embeddings") {
        let inputs = body["input"].as_array().map_or(1, Vec::len);
        let data: Vec<Value> = (0..inputs)
            .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.25, -0.5]}))
            .collect();
        return HttpResponse::Ok().json(json!({"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": 3, "total_tokens": 3}}));
    }
    let prompt = body["prompt"].as_str().unwrap_or_default();
    HttpResponse::Ok().json(
        json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
        "choices": [{"text": format!("mock: {prompt}"), "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": usage}),
    )
}

/// `POST /v1/messages` in Anthropic's wire format: `mock: <last user text>`, plain or streamed
/// (message_start, content_block_start, ping, one text_delta per word, content_block_stop,
/// message_delta, message_stop); errors in Anthropic's shape with the queued status and
/// `retry-after`.
async fn anthropic_messages(req: HttpRequest, body: web::Bytes, data: web::Data<Shared>) -> HttpResponse {
    let shared = data.into_inner();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let behavior = record(&shared, &req, &body);
    if behavior.malformed {
        return malformed();
    }
    if behavior.status != 0 {
        let mut r = failure(&behavior);
        let kind = if behavior.status == 529 {
            "overloaded_error"
        } else {
            "api_error"
        };
        return r.json(
            json!({"type": "error", "error": {"type": kind, "message": format!("mock error {}", behavior.status)}}),
        );
    }
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    let said = match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let text = format!("mock: {said}");
    let model = body["model"].as_str().unwrap_or("claude-mock");
    let (input, output) = (words(&said), words(&text));
    if body["stream"] != json!(true) {
        return HttpResponse::Ok().json(
            json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": input, "output_tokens": output}}),
        );
    }
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
               "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    for w in text.split_inclusive(' ') {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}}),
    );
    events.push(json!({"type": "message_stop"}));
    let sse: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("message")))
        .collect();
    HttpResponse::Ok().content_type("text/event-stream").body(sse)
}

/// A 200 whose body is not JSON (`Behavior::malformed`).
fn malformed() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body("{not json")
}

/// The head of a failure answer: the behavior's status and its `retry-after`.
fn failure(b: &Behavior) -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::build(actix_web::http::StatusCode::from_u16(b.status).unwrap());
    if let Some(ra) = &b.retry_after {
        r.insert_header(("retry-after", ra.as_str()));
    }
    r
}

/// Ollama's `/api/tags`: the mock's models.
async fn ollama_tags(data: web::Data<Shared>) -> HttpResponse {
    let models: Vec<Value> = data
        .state
        .lock()
        .unwrap()
        .models
        .iter()
        .map(|m| json!({"name": m, "model": m}))
        .collect();
    HttpResponse::Ok().json(json!({"models": models}))
}

/// Ollama's `/api/chat` (`mock: <last user text>`, one NDJSON line per word when streamed)
/// and `/api/embed` (a two-dimension vector per input).
async fn ollama_chat(req: HttpRequest, body: web::Bytes, data: web::Data<Shared>) -> HttpResponse {
    let shared = data.into_inner();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let behavior = record(&shared, &req, &body);
    if behavior.malformed {
        return malformed();
    }
    if behavior.status != 0 {
        return failure(&behavior).json(json!({"error": format!("mock error {}", behavior.status)}));
    }
    let model = body["model"].as_str().unwrap_or("llama");
    if req.path() == "/api/embed" {
        let n = body["input"].as_array().map_or(1, Vec::len);
        let embeddings: Vec<Value> = (0..n).map(|_| json!([0.5, -0.25])).collect();
        return HttpResponse::Ok().json(json!({"model": model, "embeddings": embeddings, "prompt_eval_count": 2}));
    }
    let said = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let text = format!("mock: {said}");
    let (input, output) = (words(said), words(&text));
    let done = json!({"model": model, "message": {"role": "assistant", "content": ""}, "done": true,
                      "done_reason": "stop", "prompt_eval_count": input, "eval_count": output});
    if body["stream"] == json!(false) {
        let mut whole = done;
        whole["message"]["content"] = json!(text);
        return HttpResponse::Ok().json(whole);
    }
    let mut lines: String = text
        .split_inclusive(' ')
        .map(|w| {
            format!(
                "{}\n",
                json!({"model": model, "message": {"role": "assistant", "content": w}, "done": false})
            )
        })
        .collect();
    lines.push_str(&format!("{done}\n"));
    HttpResponse::Ok().content_type("application/x-ndjson").body(lines)
}

async fn chat(req: HttpRequest, body: web::Bytes, data: web::Data<Shared>) -> HttpResponse {
    let shared = data.into_inner();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let behavior = record(&shared, &req, &body);
    if behavior.malformed {
        return malformed();
    }
    let mut guard = DisconnectGuard {
        shared: shared.clone(),
        done: false,
    };
    if behavior.hang {
        return hang(guard);
    }
    if !behavior.latency.is_zero() {
        tokio::time::sleep(behavior.latency).await;
    }
    if behavior.status != 0 {
        guard.done = true;
        return error_answer(&req, &behavior);
    }
    let model = body["model"].as_str().unwrap_or("mock").to_owned();
    let content = answer_for(&body);
    let usage = usage_of(&body, &content);
    let auth = authorization(&req).to_owned();
    if body["stream"] != Value::Bool(true) {
        guard.done = true;
        let answer = plain_answer(&behavior, &model, content, usage);
        if answer.usage.is_some() {
            report(&shared, auth, &usage);
        }
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(answer.to_bytes());
    }
    let include_usage = body["stream_options"]["include_usage"] == Value::Bool(true) && !behavior.no_usage;
    if include_usage && behavior.drop_after.is_none() {
        report(&shared, auth, &usage);
    }
    let events = stream_events(
        &model,
        &split(&content, behavior.chunks),
        include_usage.then_some(usage),
    );
    stream_answer(events, &behavior, guard)
}

/// Headers, then nothing but keep-alive comments, forever: the caller must give up.
/// (Writing is how a server notices the caller went away: the guard then counts it.)
fn hang(guard: DisconnectGuard) -> HttpResponse {
    let beats = futures_util::stream::unfold(guard, |guard| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b": waiting\n\n")), guard))
    });
    HttpResponse::Ok().content_type("text/event-stream").streaming(beats)
}

/// An OpenAI error body with the behavior's status (quoting the caller's `Authorization` when
/// the behavior says so).
fn error_answer(req: &HttpRequest, behavior: &Behavior) -> HttpResponse {
    let mut r = failure(behavior);
    let mut message = format!("mock error {}", behavior.status);
    if behavior.echo_auth {
        message.push_str(&format!(": you sent `{}`", authorization(req)));
    }
    r.json(json!({"error": {"message": message, "type": "mock_error", "param": null, "code": behavior.error_code}}))
}

/// The request's `Authorization` header, or "".
fn authorization(req: &HttpRequest) -> &str {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The usage of an answer: one token per word of the messages and of the content.
fn usage_of(body: &Value, content: &str) -> Usage {
    let prompt_tokens: u64 = body["messages"].as_array().map_or(0, |ms| {
        ms.iter().map(|m| words(m["content"].as_str().unwrap_or(""))).sum()
    });
    let completion_tokens = words(content);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}

/// Counts an answer's usage as reported to the caller with this `Authorization`.
fn report(shared: &Shared, auth: String, usage: &Usage) {
    let mut st = shared.state.lock().unwrap();
    let r = st.reported.entry(auth).or_default();
    r.requests += 1;
    r.prompt_tokens += usage.prompt_tokens;
    r.completion_tokens += usage.completion_tokens;
}

/// Any other path: recorded (so tests see what reached it and with which headers), 404.
async fn elsewhere(req: HttpRequest, body: web::Bytes, data: web::Data<Shared>) -> HttpResponse {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    data.state.lock().unwrap().log.push(recorded(&req, &body, 404));
    HttpResponse::NotFound().json(json!({"error": {"message": "not served by the mock", "type": "mock_error"}}))
}

/// Logs the request and picks the behavior that answers it (a failure only at its rate).
fn record(shared: &Shared, req: &HttpRequest, body: &Value) -> Behavior {
    let mut st = shared.state.lock().unwrap();
    let mut b = st.queue.pop_front().unwrap_or_else(|| st.default.clone());
    let wants_failure = b.status != 0 && b.status != 200;
    let failing = wants_failure && (b.fail_rate <= 0.0 || roll() < b.fail_rate);
    if !failing {
        b.status = 0;
    }
    st.log.push(recorded(req, body, if failing { b.status } else { 200 }));
    b
}

/// What the log keeps of one request.
fn recorded(req: &HttpRequest, body: &Value, status: u16) -> Recorded {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Recorded {
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        authorization: header("authorization"),
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.clone(),
        at: std::time::Instant::now(),
        status,
    }
}

/// A non-streamed answer: the text, or the behavior's tool calls; usage unless withheld.
fn plain_answer(behavior: &Behavior, model: &str, content: String, usage: Usage) -> ChatCompletion {
    let mut answer = ChatCompletion::text("chatcmpl-mock", model, 0, content, None);
    if let Some(calls) = &behavior.tool_calls {
        let message = &mut answer.choices[0].message;
        message.content = None;
        message.tool_calls =
            Some(serde_json::from_value(calls.clone()).expect("the mock's tool calls are OpenAI tool calls"));
        answer.choices[0].finish_reason = Some("tool_calls".into());
    }
    if !behavior.no_usage {
        answer.usage = Some(usage);
    }
    answer
}

/// The SSE events of a streamed answer, `[DONE]` included.
fn stream_events(model: &str, pieces: &[String], usage: Option<Usage>) -> Vec<Bytes> {
    let id = "chatcmpl-mock";
    let mut events = vec![sse(&ChatChunk::text(id, model, 0, true, ""))];
    for p in pieces {
        events.push(sse(&ChatChunk::text(id, model, 0, false, p)));
    }
    let stop = ChatChunk::delta(id, model, 0, Delta::default(), Some("stop".into()));
    events.push(sse(&stop));
    if let Some(u) = usage {
        events.push(sse(&ChatChunk::usage(id, model, 0, u)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// Sends `events` with the behavior's pacing, dropping the connection where it says.
fn stream_answer(events: Vec<Bytes>, behavior: &Behavior, guard: DisconnectGuard) -> HttpResponse {
    let delay = behavior.chunk_delay;
    let drop_after = behavior.drop_after;
    let stream = futures_util::stream::unfold(
        (events.into_iter().enumerate(), guard),
        move |(mut it, mut guard)| async move {
            let (i, ev) = it.next()?;
            if drop_after.is_some_and(|n| i > n) {
                guard.done = true;
                return Some((Err(std::io::Error::other("mock drops the stream")), (it, guard)));
            }
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if it.len() == 0 {
                guard.done = true;
            }
            Some((Ok::<_, std::io::Error>(ev), (it, guard)))
        },
    );
    HttpResponse::Ok().content_type("text/event-stream").streaming(stream)
}

/// A uniform number in [0, 1) (a mock needs no rand dependency for this).
fn roll() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn sse(c: &ChatChunk) -> Bytes {
    Bytes::from(llmr_protocol::openai::sse(&[c.to_bytes()]))
}

/// Splits `content` into `n` pieces by words (0 = one per word), keeping the spaces.
fn split(content: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = content.split_inclusive(' ').collect();
    if n == 0 || n >= words.len() {
        return words.into_iter().map(str::to_owned).collect();
    }
    let per = words.len().div_ceil(n);
    words.chunks(per).map(|c| c.concat()).collect()
}
