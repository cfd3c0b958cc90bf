//! Real faults at the socket level, from a raw TCP upstream the test controls, through the
//! real `openai` adapter and job runner: a refused connection, a reset after the headers,
//! invalid JSON, headers then silence, a body larger than the limit and a slow drip fail over
//! to the next target (nothing had reached the client); a reset or invalid SSE in the middle
//! of a stream ends the client's answer with an error frame. Each ends within its bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::rc::Rc;
use std::time::Duration;

use llmr_protocol::{Attempt, Frame, FrameKind};
use llmr_store::Store;
use llmr_testkit::MockUpstream;
use llmr_worker::job::JobCtx;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the raw upstream does once it has read a request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    ResetAfterHeaders,
    InvalidJson,
    HeadersThenSilence,
    HugeBody,
    SlowDrip,
    ResetMidStream,
    InvalidSse,
    InvalidSseFirst,
}

const HEAD_JSON: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
const HEAD_SSE: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// Closes with a TCP reset: a zero linger (which does not block on drop, unlike the
/// non-zero lingers the deprecation warns about).
#[allow(deprecated)]
fn reset(s: &tokio::net::TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

async fn misbehave(mut s: tokio::net::TcpStream, fault: Fault) {
    let mut buf = vec![0u8; 65536];
    let _ = s.read(&mut buf).await;
    let event = r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"par"},"finish_reason":null}]}"#;
    match fault {
        Fault::ResetAfterHeaders => {
            let _ = s
                .write_all(format!("{HEAD_JSON}content-length: 500\r\n\r\n").as_bytes())
                .await;
            reset(&s);
        }
        Fault::InvalidJson => {
            let body = "{\"id\": \"c\", \"choices\": [";
            let _ = s
                .write_all(format!("{HEAD_JSON}content-length: {}\r\n\r\n{body}", body.len()).as_bytes())
                .await;
        }
        Fault::HeadersThenSilence => {
            let _ = s
                .write_all(format!("{HEAD_JSON}content-length: 100\r\n\r\n").as_bytes())
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Fault::HugeBody => {
            let n = 50 << 20;
            let _ = s
                .write_all(format!("{HEAD_JSON}content-length: {n}\r\n\r\n").as_bytes())
                .await;
            let block = vec![b' '; 1 << 16];
            for _ in 0..(n / block.len()) {
                if s.write_all(&block).await.is_err() {
                    return;
                }
            }
        }
        Fault::SlowDrip => {
            let _ = s
                .write_all(format!("{HEAD_JSON}content-length: 60\r\n\r\n").as_bytes())
                .await;
            for _ in 0..60 {
                if s.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Fault::ResetMidStream => {
            let _ = s
                .write_all(format!("{HEAD_SSE}{}", chunk(&format!("{event}\n\n"))).as_bytes())
                .await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(&s);
        }
        Fault::InvalidSseFirst => {
            let _ = s
                .write_all(format!("{HEAD_SSE}{}", chunk("data: {not json\n\n")).as_bytes())
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Fault::InvalidSse => {
            let _ = s
                .write_all(format!("{HEAD_SSE}{}", chunk(&format!("{event}\n\n"))).as_bytes())
                .await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = s.write_all(chunk("data: {not json\n\n").as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
}

/// A raw upstream on a free port that does `fault` to every request.
async fn raw_upstream(fault: Fault) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::task::spawn_local(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::task::spawn_local(misbehave(s, fault));
        }
    });
    port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn ctx(bad_port: u16, good: &MockUpstream) -> Rc<JobCtx> {
    let toml = format!(
        "[[providers]]\nname = \"bad\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:{bad_port}/v1\"\nmodels = [\"m\"]\ntimeout_ms = 1500\n\
         [[providers]]\nname = \"good\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n",
        good.base_url()
    );
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(Duration::from_secs(2)))
        .timeout(Duration::from_secs(20))
        .finish();
    common::ctx(&toml, Store::memory(), 10_000, client)
}

/// Runs one job (bad target first, then good); its frames and duration.
async fn run(ctx: &Rc<JobCtx>, stream: bool) -> (Vec<Frame>, Duration) {
    common::run(ctx, vec![Attempt::new("bad", "m"), Attempt::new("good", "m")], stream).await
}

/// The data of every chunk frame, as text.
fn text(frames: &[Frame]) -> String {
    frames
        .iter()
        .filter(|f| f.kind == FrameKind::Chunk)
        .map(|f| String::from_utf8_lossy(&f.data).into_owned())
        .collect()
}

async fn fails_over(port: u16, stream: bool, what: &str) {
    let good = MockUpstream::start(&["m"]);
    let ctx = ctx(port, &good);
    let (frames, took) = run(&ctx, stream).await;
    let last = frames.last().unwrap_or_else(|| panic!("{what}: no answer"));
    assert_eq!(
        last.kind,
        FrameKind::End,
        "{what}: answered by the next target: {:?}",
        last.as_error()
    );
    assert_eq!(good.request_count(), 1, "{what}: the next target served it");
    assert!(text(&frames).contains("hello"), "{what}: the good answer");
    assert!(took < Duration::from_secs(5), "{what}: bounded, took {took:?}");
    eprintln!("{what}: failed over in {:.0} ms", took.as_secs_f64() * 1000.0);
}

#[actix_rt::test]
async fn faults_before_the_answer_starts_fail_over() {
    tokio::task::LocalSet::new()
        .run_until(async {
            fails_over(closed_port(), false, "connection refused").await;
            for fault in [
                Fault::ResetAfterHeaders,
                Fault::InvalidJson,
                Fault::HeadersThenSilence,
                Fault::HugeBody,
                Fault::SlowDrip,
            ] {
                let port = raw_upstream(fault).await;
                fails_over(port, false, &format!("{fault:?}")).await;
            }
            // A stream that fails before its first event reached the client also fails over.
            let port = raw_upstream(Fault::ResetAfterHeaders).await;
            fails_over(port, true, "stream reset after the headers").await;
            let port = raw_upstream(Fault::InvalidSseFirst).await;
            fails_over(port, true, "stream whose first event is malformed").await;
        })
        .await;
}

#[actix_rt::test]
async fn faults_in_the_middle_of_a_stream_end_it_with_an_error() {
    tokio::task::LocalSet::new()
        .run_until(async {
            for fault in [Fault::ResetMidStream, Fault::InvalidSse] {
                let good = MockUpstream::start(&["m"]);
                let ctx = ctx(raw_upstream(fault).await, &good);
                let (frames, took) = run(&ctx, true).await;
                let last = frames.last().unwrap();
                assert_eq!(last.kind, FrameKind::Error, "{fault:?}: ends with an error frame");
                assert!(
                    text(&frames).contains("par"),
                    "{fault:?}: what was sent before stays sent"
                );
                assert!(
                    !text(&frames).contains("not json"),
                    "{fault:?}: no malformed event reaches the client"
                );
                assert_eq!(
                    good.request_count(),
                    0,
                    "{fault:?}: no second answer after the first began"
                );
                assert!(took < Duration::from_secs(1), "{fault:?}: at once, took {took:?}");
                eprintln!(
                    "{fault:?}: ended with an error after {:.0} ms",
                    took.as_secs_f64() * 1000.0
                );
            }
        })
        .await;
}
