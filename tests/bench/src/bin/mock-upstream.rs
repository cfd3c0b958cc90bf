//! A fast mock OpenAI upstream for benchmarks: canned answers, no logging, no JSON parsing
//! per request. `mock-upstream --port 0` prints `listening on PORT` and serves until killed.

use std::io::Write;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use llmr_protocol::Usage;
use llmr_protocol::openai::{ChatChunk, ChatCompletion, sse};

/// A fast mock OpenAI upstream (chat completions plain and streamed, and /v1/models).
#[derive(Parser, Clone)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Wait this long before every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Content chunks of a streamed answer.
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Server threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Pause between the events of a streamed answer to model `bench-gap` (the first is sent
    /// at once); model `bench` streams without pauses.
    #[arg(long, default_value_t = 5)]
    gap_ms: u64,
}

struct Canned {
    plain: Bytes,
    stream: Vec<Bytes>,
    latency: Duration,
    gap: Duration,
}

/// The canned answers, built once at start from the protocol's typed bodies.
fn canned(chunks: usize) -> (Bytes, Vec<Bytes>) {
    let (id, model) = ("chatcmpl-bench", "bench");
    let usage = |prompt_tokens, completion_tokens| Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };
    let plain = ChatCompletion::text(id, model, 0, "Hello from the benchmark upstream.", Some(usage(8, 6))).to_bytes();
    let mut events = vec![ChatChunk::text(id, model, 0, true, "").to_bytes()];
    for i in 0..chunks {
        events.push(ChatChunk::text(id, model, 0, false, &format!("tok{i} ")).to_bytes());
    }
    events.push(ChatChunk::usage(id, model, 0, usage(8, 20)).to_bytes());
    let mut stream: Vec<Bytes> = events
        .iter()
        .map(|e| Bytes::from(sse(std::slice::from_ref(e))))
        .collect();
    stream.push(Bytes::from_static(b"data: [DONE]\n\n"));
    (plain, stream)
}

async fn chat(body: web::Bytes, c: web::Data<Canned>) -> HttpResponse {
    if !c.latency.is_zero() {
        tokio::time::sleep(c.latency).await;
    }
    if memchr::memmem::find(&body, b"\"stream\":true").is_none() {
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(c.plain.clone());
    }
    let events = c.stream.clone();
    if c.gap.is_zero() || memchr::memmem::find(&body, b"bench-gap").is_none() {
        let s = futures_util::stream::iter(events.into_iter().map(Ok::<_, std::io::Error>));
        return HttpResponse::Ok().content_type("text/event-stream").streaming(s);
    }
    let gap = c.gap;
    let s = futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        Ok::<_, std::io::Error>(e)
    });
    HttpResponse::Ok().content_type("text/event-stream").streaming(s)
}

async fn models(_: HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"object":"list","data":[{"id":"bench","object":"model","created":0,"owned_by":"mock"},{"id":"bench-gap","object":"model","created":0,"owned_by":"mock"}]}"#)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    actix_rt::System::new().block_on(async move {
        let (plain, stream) = canned(args.chunks);
        let data = web::Data::new(Canned {
            plain,
            stream,
            latency: Duration::from_millis(args.latency_ms),
            gap: Duration::from_millis(args.gap_ms),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 << 20))
                .route("/v1/chat/completions", web::post().to(chat))
                .route("/v1/models", web::get().to(models))
        })
        .workers(args.workers)
        .tcp_nodelay(true)
        .backlog(4096)
        .max_connections(100_000)
        .bind(("127.0.0.1", args.port))?;
        let port = server.addrs()[0].port();
        let mut out = std::io::stdout();
        writeln!(out, "listening on {port}")?;
        out.flush()?;
        server.run().await
    })
}
