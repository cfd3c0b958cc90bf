//! Creating a response: the request is answered by a chat completion through the router
//! (groups, strategies, failover and usage as for any chat), its stream translated into
//! Responses events, and the response stored before its final event is sent — so a
//! `previous_response_id` chain can continue the moment a client sees `response.completed`.
//!
//! A background response is stored as `queued` and answered at once; it then runs here,
//! its events logged for clients that resume the stream, checking for a cancel every
//! 250 ms. Its id comes from the envelope's, so a peer that reclaims the entry of an
//! instance that died reruns the same response (or skips it when it already ended).

use std::time::Duration;

use bytes::Bytes;
use llmr_bus::{Call, Caller, Replier};
use llmr_protocol::openai::ChatCompletion;
use llmr_protocol::responses::{EventWriter, ResponseEvent, StreamEvent, sse};
use llmr_protocol::{ApiError, Envelope, FrameKind, Kind, Meta, NativeApi, NativeBody, now_ms, streams};
use serde_json::{Map, Value, json};

use crate::convert::{self, Request};
use crate::stored::{Stored, document, is_terminal};
use crate::translate::{Translator, output_messages, usage};

/// What a run needs from its service.
pub struct Ctx {
    pub caller: Caller,
    pub stored: Stored,
}

/// How the chat behind a response ended.
enum Outcome {
    Completed {
        output: Vec<Value>,
        usage: Value,
        finish: Option<String>,
    },
    Failed(ApiError),
    Cancelled,
}

/// One response being created.
struct Run<'a> {
    ctx: &'a Ctx,
    env: &'a Envelope,
    req: Request,
    body: Value,
    id: String,
    created_at: u64,
    context: Vec<Value>,
    writer: EventWriter,
    /// Events went (or go) to the client.
    streaming: bool,
    /// The upstream response this one continues natively (`{"provider", "id"}`), if any.
    prev_native: Option<Value>,
    /// Set when a `responses = true` provider answers natively (its head says so):
    /// `{"provider", "id"}`.
    native: Option<Value>,
    /// The native answer's final event, kept until the response is stored.
    native_end: Option<Value>,
}

/// Answers `POST /v1/responses`.
pub async fn create(ctx: &Ctx, env: &Envelope, body: Value, out: &mut Replier) {
    let req = match convert::parse(&body) {
        Ok(r) => r,
        Err(e) => return send(out.error(&e).await),
    };
    let id = format!("resp_{}", env.id.simple());
    let mut run = match Run::prepare(ctx, env, req, body, id).await {
        Ok(Some(run)) => run,
        Ok(None) => return,
        Err(e) => return send(out.error(&e).await),
    };
    if run.req.background
        && let Err(e) = run.queue(out).await
    {
        return send(out.error(&e).await);
    }
    let outcome = run.execute(out).await;
    run.finish(out, outcome).await;
}

/// A lifecycle event (`response.created`, `.in_progress`, `.completed`…) carrying `response`.
fn lifecycle(event: fn(ResponseEvent) -> StreamEvent, response: Value) -> Value {
    event(ResponseEvent {
        response,
        extra: Map::new(),
    })
    .to_value()
}

fn send(r: Result<(), llmr_bus::BusError>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not answer a responses request");
    }
}

impl<'a> Run<'a> {
    /// The run of `req`, with the context of its chain; None when a reclaimed run had ended.
    async fn prepare(
        ctx: &'a Ctx,
        env: &'a Envelope,
        req: Request,
        body: Value,
        id: String,
    ) -> Result<Option<Run<'a>>, ApiError> {
        // Whether this is a rerun of a run that had started (or ended). A foreground response
        // under `degraded.stored_responses = "open"` goes on when that cannot be read.
        let prior = match ctx.stored.doc(&id).await {
            Err(e) if ctx.stored.policy.is_open() && !req.background => {
                tracing::warn!(response_id = %id, error = %e, "response store unreadable; run as new (degraded.stored_responses = open)");
                None
            }
            other => other?,
        };
        if let Some(doc) = prior {
            if is_terminal(&doc["response"]) {
                return Ok(None);
            }
            ctx.stored.clear_events(&id).await?;
        }
        let mut context = Vec::new();
        let mut prev_native = None;
        if let Some(instructions) = &req.instructions {
            context.push(json!({"role": "system", "content": instructions}));
        }
        if let Some(conv) = &req.conversation {
            let items = crate::conversations::items(&ctx.stored, conv).await?;
            context.extend(convert::messages(&items));
        }
        if let Some(prev) = &req.previous_response_id {
            let doc = ctx.stored.doc(prev).await?.ok_or_else(|| ApiError::NotFound {
                message: format!("Previous response with id '{prev}' not found."),
            })?;
            prev_native = doc.get("native").cloned();
            let history = doc["context"].as_array().cloned().unwrap_or_default();
            // The previous instructions do not carry over (OpenAI's rule): drop its system turns.
            context.extend(history.into_iter().filter(|m| m["role"] != "system"));
        }
        context.extend(convert::messages(&req.input));
        let streaming = req.stream;
        Ok(Some(Run {
            ctx,
            env,
            req,
            body,
            id,
            created_at: now_ms() / 1000,
            context,
            writer: EventWriter::default(),
            streaming,
            prev_native,
            native: None,
            native_end: None,
        }))
    }

    /// The response object in its current state.
    fn object(&self, status: &str, output: &[Value], usage: Value, error: Value, incomplete: Value) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), Value::from(self.id.as_str()));
        o.insert("object".into(), Value::from("response"));
        o.insert("created_at".into(), Value::from(self.created_at));
        o.insert("status".into(), Value::from(status));
        o.insert("error".into(), error);
        o.insert("incomplete_details".into(), incomplete);
        o.insert("model".into(), Value::from(self.req.model.as_str()));
        o.insert("output".into(), Value::from(output.to_vec()));
        o.insert("usage".into(), usage);
        o.insert("reasoning".into(), json!({"effort": null, "summary": null}));
        o.insert("truncation".into(), Value::from("disabled"));
        o.insert("user".into(), Value::Null);
        for (k, v) in &self.req.echo {
            o.insert(k.clone(), v.clone());
        }
        Value::Object(o)
    }

    /// Numbers `events`, logs them (background) and sends them (streaming).
    async fn emit(&mut self, out: &mut Replier, events: Vec<Value>) -> Result<(), ApiError> {
        if events.is_empty() {
            return Ok(());
        }
        let numbered: Vec<String> = events.into_iter().map(|e| self.writer.number(e)).collect();
        if self.req.background {
            self.ctx.stored.append_events(&self.id, &numbered).await?;
        }
        if self.streaming {
            out.raw(sse(&numbered)).await.map_err(ApiError::from)?;
        }
        Ok(())
    }

    /// A background response: stored as queued and answered at once (or its stream begun).
    async fn queue(&mut self, out: &mut Replier) -> Result<(), ApiError> {
        let queued = self.object("queued", &[], Value::Null, Value::Null, Value::Null);
        self.ctx
            .stored
            .put(&self.id, &document(&queued, &self.context, Some(&self.body)))
            .await?;
        self.ctx.stored.put_input(&self.id, &self.req.input).await?;
        self.emit(out, vec![lifecycle(StreamEvent::Created, queued.clone())])
            .await?;
        if !self.streaming {
            out.complete(200, Bytes::from(queued.to_string()))
                .await
                .map_err(ApiError::from)?;
        }
        Ok(())
    }

    /// The chat request behind this response, through the router.
    async fn chat(&self) -> Result<Call, ApiError> {
        let mut chat = self.req.chat.clone();
        chat.insert("model".into(), json!(self.req.model));
        chat.insert("messages".into(), Value::from(self.context.clone()));
        chat.insert("stream".into(), json!(true));
        chat.insert("stream_options".into(), json!({"include_usage": true}));
        let mut meta = Meta {
            model: self.req.model.clone(),
            stream: true,
            include_usage: true,
            cache: self.env.meta.cache.clone(),
            scope: self.env.meta.scope.clone(),
            tools: self.env.meta.tools.clone(),
            ..Meta::default()
        };
        meta.native = self.native_body().map(NativeBody::Responses);
        let body = Bytes::from(Value::Object(chat).to_string());
        let env = self.env.on_behalf(Kind::Chat, self.ctx.caller.instance(), body, meta);
        self.ctx.caller.send(streams::REQUESTS, &env).await
    }

    /// The body a `responses = true` provider gets instead of the chat: the client's request
    /// with only the new input (the chain lives upstream, `llmr_previous` names it). None when
    /// the response cannot go natively: a conversation, server-side mcp tools, or a chain
    /// that was emulated.
    fn native_body(&self) -> Option<Bytes> {
        let has_mcp = self
            .req
            .chat
            .get("tools")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|t| t["type"] == "mcp"));
        let chained_elsewhere = self.req.previous_response_id.is_some() && self.prev_native.is_none();
        if self.req.conversation.is_some() || has_mcp || chained_elsewhere {
            return None;
        }
        let mut body = self.body.as_object().cloned().unwrap_or_default();
        for k in [
            "conversation",
            "background",
            "stream",
            "previous_response_id",
            "include",
            "store",
        ] {
            body.remove(k);
        }
        let input: Vec<Value> = self
            .req
            .input
            .iter()
            .map(|item| {
                let mut item = item.clone();
                if let Value::Object(m) = &mut item {
                    m.remove("id");
                    m.remove("status");
                }
                item
            })
            .collect();
        body.insert("input".into(), Value::from(input));
        body.insert("store".into(), json!(self.req.store));
        if let Some(prev) = &self.prev_native {
            body.insert("llmr_previous".into(), prev.clone());
        }
        Some(Bytes::from(Value::Object(body).to_string()))
    }

    /// One event of a native answer: ours take the place of the upstream's created and
    /// in-progress events and of its final one (sent once stored); the rest pass with our id.
    fn native_event(&mut self, mut event: Value, out: &mut Vec<Value>) {
        match event["type"].as_str().unwrap_or_default() {
            "response.created" | "response.in_progress" => {}
            "response.completed" | "response.failed" | "response.incomplete" => self.native_end = Some(event),
            _ => {
                if event["response"].is_object() {
                    event["response"]["id"] = json!(self.id);
                }
                out.push(event);
            }
        }
    }

    /// How a native answer ended, from its final event.
    fn native_outcome(&mut self) -> Option<Outcome> {
        let end = self.native_end.take()?;
        let r = &end["response"];
        if let (Some(n), Some(id)) = (&mut self.native, r["id"].as_str()) {
            n["id"] = json!(id);
        }
        Some(match r["status"].as_str() {
            Some("failed") => Outcome::Failed(ApiError::Upstream {
                message: r["error"]["message"]
                    .as_str()
                    .unwrap_or("the upstream response failed")
                    .to_owned(),
            }),
            status => Outcome::Completed {
                output: r["output"].as_array().cloned().unwrap_or_default(),
                usage: r["usage"].clone(),
                finish: (status == Some("incomplete")).then(|| "length".to_owned()),
            },
        })
    }

    /// Runs the chat and streams its translation; how it ended.
    async fn execute(&mut self, out: &mut Replier) -> Outcome {
        let mut call = match self.chat().await {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e),
        };
        let head = match call.head().await {
            Ok(h) => h,
            Err(e) => return Outcome::Failed(e),
        };
        if head.status >= 400 {
            let body = call.body().await.unwrap_or_default();
            return Outcome::Failed(ApiError::UpstreamRejected {
                status: head.status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        out.set_cache(head.cache);
        let in_progress = self.object("in_progress", &[], Value::Null, Value::Null, Value::Null);
        let mut start = Vec::new();
        if !self.req.background {
            start.push(lifecycle(StreamEvent::Created, in_progress.clone()));
        }
        start.push(lifecycle(StreamEvent::InProgress, in_progress));
        if let Err(e) = self.emit(out, start).await {
            return Outcome::Failed(e);
        }
        let mut t = Translator::default();
        let native = head.native == Some(NativeApi::Responses);
        let ended = if head.stream {
            self.relay(&mut call, &mut t, native, out).await
        } else {
            self.replay(&mut call, &mut t, out).await
        };
        // A native answer: its provider (the end frame names it) holds the chain.
        if native && let Some(o) = call.outcome() {
            self.native = Some(json!({"provider": o.provider}));
        }
        // The response's end frame reports what its chat cost (the gateway settles from it).
        out.set_outcome(call.outcome().cloned());
        if let Some(outcome) = ended {
            return outcome;
        }
        if let Some(outcome) = self.native_outcome() {
            return outcome;
        }
        let mut closing = Vec::new();
        let output = t.finish(&mut closing);
        if let Err(e) = self.emit(out, closing).await {
            return Outcome::Failed(e);
        }
        Outcome::Completed {
            output,
            usage: t.usage.as_ref().map_or(Value::Null, usage),
            finish: t.finish_reason.clone(),
        }
    }

    /// Translates a streamed chat (or, `native`, passes a native answer's events on); Some
    /// when it ended otherwise than completing.
    async fn relay(&mut self, call: &mut Call, t: &mut Translator, native: bool, out: &mut Replier) -> Option<Outcome> {
        let check = Duration::from_millis(250);
        loop {
            let frame = tokio::select! {
                f = call.next() => f,
                () = tokio::time::sleep(check), if self.req.background => {
                    if self.ctx.stored.cancel_requested(&self.id).await {
                        return Some(Outcome::Cancelled);
                    }
                    continue;
                }
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return Some(Outcome::Failed(e)),
            };
            match frame.kind {
                FrameKind::Head => {}
                FrameKind::End => return None,
                FrameKind::Error => return Some(Outcome::Failed(frame.as_error())),
                FrameKind::Chunk => {
                    let mut events = Vec::new();
                    for data in llmr_protocol::openai::sse_payloads(&frame.data) {
                        let Ok(v) = serde_json::from_slice::<Value>(data) else {
                            continue;
                        };
                        if native {
                            self.native_event(v, &mut events);
                        } else {
                            t.chunk(&v, &mut events);
                        }
                    }
                    if let Err(e) = self.emit(out, events).await {
                        return Some(Outcome::Failed(e));
                    }
                }
            }
        }
    }

    /// Translates a whole (non-streamed) chat answer as if it had streamed.
    async fn replay(&mut self, call: &mut Call, t: &mut Translator, out: &mut Replier) -> Option<Outcome> {
        let body = match call.body().await {
            Ok(b) => b,
            Err(e) => return Some(Outcome::Failed(e)),
        };
        let completion: ChatCompletion = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => {
                return Some(Outcome::Failed(ApiError::Upstream {
                    message: format!("unreadable completion: {e}"),
                }));
            }
        };
        let mut events = Vec::new();
        for chunk in completion.to_chunks(true) {
            t.chunk(&serde_json::to_value(&chunk).unwrap_or_default(), &mut events);
        }
        self.emit(out, events).await.err().map(Outcome::Failed)
    }

    /// Stores the outcome, then sends the final event or the response.
    async fn finish(&mut self, out: &mut Replier, outcome: Outcome) {
        let result = match outcome {
            Outcome::Completed { output, usage, finish } => self.completed(out, output, usage, finish).await,
            Outcome::Failed(e) => self.failed(out, e).await,
            Outcome::Cancelled => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(response = %self.id, error = %e, "could not finish a response");
            if !out.started() {
                send(out.error(&e).await);
            }
        }
        if self.streaming {
            send(out.end().await);
        }
    }

    async fn completed(
        &mut self,
        out: &mut Replier,
        output: Vec<Value>,
        usage: Value,
        finish: Option<String>,
    ) -> Result<(), ApiError> {
        let incomplete = |reason: &str| json!({"reason": reason});
        let (status, incomplete, event): (_, _, fn(ResponseEvent) -> StreamEvent) = match finish.as_deref() {
            Some("length") => ("incomplete", incomplete("max_output_tokens"), StreamEvent::Incomplete),
            Some("content_filter") => ("incomplete", incomplete("content_filter"), StreamEvent::Incomplete),
            _ => ("completed", Value::Null, StreamEvent::Completed),
        };
        let mut response = self.object(status, &output, usage, Value::Null, incomplete);
        if let Some(conv) = &self.req.conversation {
            let mut items = self.req.input.clone();
            items.extend(output.iter().cloned());
            crate::conversations::append(&self.ctx.stored, conv, &items).await?;
        }
        if self.req.store {
            self.context.extend(output_messages(&output));
            let request = self.req.background.then_some(&self.body);
            let mut doc = document(&response, &self.context, request);
            if let Some(n) = &self.native {
                doc["native"] = n.clone();
            }
            let (input, background) = (&self.req.input, self.req.background);
            if !self.ctx.stored.put_finished(&self.id, &doc, input, background).await? {
                response["store"] = Value::Bool(false);
            }
            if self.req.background && self.ctx.stored.cancel_requested(&self.id).await {
                // Cancelled while finishing: the cancel wins (it may have answered already).
                let cancelled = self.object("cancelled", &output, Value::Null, Value::Null, Value::Null);
                self.ctx
                    .stored
                    .put(&self.id, &document(&cancelled, &self.context, None))
                    .await?;
                return Ok(());
            }
        }
        self.emit(out, vec![lifecycle(event, response.clone())]).await?;
        if !self.streaming && !self.req.background {
            out.complete(200, Bytes::from(response.to_string())).await?;
        }
        Ok(())
    }

    async fn failed(&mut self, out: &mut Replier, e: ApiError) -> Result<(), ApiError> {
        let error = json!({"code": e.code().unwrap_or("server_error"), "message": e.to_string()});
        let response = self.object("failed", &[], Value::Null, error, Value::Null);
        if self.req.background {
            if self.ctx.stored.cancel_requested(&self.id).await {
                return Ok(());
            }
            self.ctx
                .stored
                .put(&self.id, &document(&response, &self.context, None))
                .await?;
        }
        if !out.started() && !self.req.background {
            // Nothing reached the client yet: an ordinary HTTP error.
            out.error(&e).await?;
            return Ok(());
        }
        self.emit(out, vec![lifecycle(StreamEvent::Failed, response)]).await
    }
}

/// A whole (non-streamed) chat answer's text and usage, through the router, and what it
/// cost: the model behind `compact`.
pub async fn chat_text(
    ctx: &Ctx,
    env: &Envelope,
    model: &str,
    messages: Vec<Value>,
) -> Result<(String, Value, Option<llmr_protocol::Outcome>), ApiError> {
    let body = json!({"model": model, "messages": messages, "stream": false});
    let meta = Meta {
        model: model.to_owned(),
        scope: env.meta.scope.clone(),
        tools: env.meta.tools.clone(),
        ..Meta::default()
    };
    let chat = env.on_behalf(Kind::Chat, ctx.caller.instance(), Bytes::from(body.to_string()), meta);
    let answer = ctx.caller.call(streams::REQUESTS, &chat).await?;
    if answer.status >= 400 {
        return Err(ApiError::UpstreamRejected {
            status: answer.status,
            body: String::from_utf8_lossy(&answer.body).into_owned(),
        });
    }
    let completion: Value = serde_json::from_slice(&answer.body).map_err(|e| ApiError::Upstream {
        message: format!("unreadable completion: {e}"),
    })?;
    let text = completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((text, usage(&completion["usage"]), answer.outcome))
}
