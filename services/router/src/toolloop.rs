//! Automatic tool calling. A chat completion that names server-side tools — entries
//! `{"type": "mcp", "server_label": …, "allowed_tools": [...]}` in `tools`, or a group's
//! tool set — is run here instead of being handed to a worker once: the tools are offered
//! to the model as functions; the calls the model makes to them are executed by mcp-tools
//! (over the bus) and their results fed back; this repeats up to `[mcp] max_tool_rounds`,
//! after which the model is asked to answer without tools. The final answer goes to the
//! client as one JSON body or, when it asked for a stream, as SSE events. Tool calls for the
//! client's own functions end the loop and are returned as usual. Usage adds up over rounds.
//!
//! Remote servers' tools are named by the one rule of `llmr_protocol::tools`, the same one
//! mcp-tools serves them under.

use llmr_protocol::Outcome;
use std::rc::Rc;

use bytes::Bytes;
use llmr_bus::{Caller, Replier};
use llmr_config::Settings;
use llmr_protocol::openai::{ChatCompletion, Message, ToolCall};
use llmr_protocol::{ApiError, CallerId, Envelope, Kind, Meta, Usage, now_ms, streams, tools};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::catalog::Route;
use crate::routing::Routing;

/// The label of this server's own tools in `{"type": "mcp"}` entries.
pub const LOCAL_LABEL: &str = "llmrouter";

/// Whether a request needs the loop: its route has a tool set, or its body names MCP tools.
pub fn needed(route: &Route, body: &[u8]) -> bool {
    if !route.tools.is_empty() {
        return true;
    }
    // Every request passes here: a SIMD substring search before any parse.
    if memchr::memmem::find(body, b"\"mcp\"").is_some() {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        return mcp_entries(&v).next().is_some();
    }
    false
}

fn mcp_entries(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("mcp"))
}

/// A tool as mcp-tools lists it.
#[derive(Debug, Clone, Deserialize)]
struct McpTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "inputSchema")]
    input_schema: Option<Value>,
}

/// One page of `tools/list`.
#[derive(Debug, Deserialize)]
struct ToolPage {
    #[serde(default)]
    tools: Vec<McpTool>,
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
}

/// A tool result as mcp-tools answers a call.
#[derive(Debug, Default, Deserialize)]
struct ToolResult {
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default, rename = "structuredContent")]
    structured: Option<Value>,
    #[serde(default, rename = "isError")]
    is_error: bool,
}

/// The tool loop of one router.
pub struct ToolLoop {
    routing: Rc<Routing>,
    /// Calls to workers and mcp-tools.
    caller: Caller,
    max_rounds: u32,
    /// Namespaces of remote MCP servers (their tools are `{namespace}_{name}`).
    namespaces: Vec<String>,
}

impl ToolLoop {
    pub fn new(settings: &Settings, routing: Rc<Routing>, caller: Caller) -> ToolLoop {
        ToolLoop {
            routing,
            caller,
            max_rounds: settings.mcp.max_tool_rounds,
            namespaces: settings
                .mcp
                .remote_servers
                .iter()
                .map(|r| r.namespace.clone())
                .collect(),
        }
    }

    /// Runs the loop for `env` and answers its caller.
    pub async fn run(&self, env: &Envelope, routes: &[Route]) {
        let mut out = Replier::to(self.caller.bus().clone(), env);
        let mut spent: Option<Outcome> = None;
        let driven = self.drive(env, routes, &mut spent).await;
        // The end frame reports what every round cost together.
        out.set_outcome(spent);
        let sent = match driven {
            Ok((status, c)) if status < 300 && env.meta.stream => {
                let events: Vec<Bytes> = c
                    .to_chunks(env.meta.include_usage)
                    .iter()
                    .map(|e| e.to_bytes())
                    .collect();
                out.stream_all(&events).await
            }
            Ok((status, c)) => out.complete(status, c.to_bytes()).await,
            Err(e) => {
                tracing::info!(request_id = %env.id, error = %e, "tool loop failed");
                out.error(&e).await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not answer a tool-loop request");
        }
    }

    /// One exchange with mcp-tools; refused (503) when no mcp-tools instance is alive within
    /// two seconds (one may be starting), instead of waiting for the request's deadline.
    async fn mcp(&self, env: &Envelope, kind: Kind, body: Value) -> Result<Value, ApiError> {
        self.routing.require("mcp-tools").await?;
        let meta = Meta {
            caller: CallerId::Router(env.id),
            // The caller's key lists and calls only its tools here too.
            tools: env.meta.tools.clone(),
            ..Meta::default()
        };
        let mut call = env.on_behalf(kind, self.caller.instance(), Bytes::from(body.to_string()), meta);
        call.trace = llmr_telemetry::context(&tracing::Span::current(), &env.trace);
        let answer = self.caller.call(streams::MCP, &call).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ApiError::Internal {
            message: format!("mcp-tools sent an unreadable answer: {e}"),
        })
    }

    /// Every tool mcp-tools lists (all pages).
    async fn list_tools(&self, env: &Envelope) -> Result<Vec<McpTool>, ApiError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..100 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let r = self
                .mcp(
                    env,
                    Kind::Mcp,
                    json!({"jsonrpc": "2.0", "id": page, "method": "tools/list", "params": params}),
                )
                .await?;
            if let Some(e) = r.get("error") {
                return Err(ApiError::Internal {
                    message: format!("mcp-tools could not list tools: {e}"),
                });
            }
            let page: ToolPage =
                serde_json::from_value(r.get("result").cloned().unwrap_or(Value::Null)).map_err(|e| {
                    ApiError::Internal {
                        message: format!("mcp-tools sent an unreadable tool list: {e}"),
                    }
                })?;
            all.extend(page.tools);
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        Ok(all)
    }
}

/// The names of the tools a request wants from `all` (remote namespaces: `namespaces`).
fn wanted(namespaces: &[String], all: &[McpTool], body: &Value, route: &Route) -> Vec<String> {
    let mut wanted: Vec<String> = route.tools.clone();
    for entry in mcp_entries(body) {
        let label = entry.get("server_label").and_then(Value::as_str).unwrap_or(LOCAL_LABEL);
        let local = label == LOCAL_LABEL;
        match entry.get("allowed_tools").and_then(Value::as_array) {
            Some(names) => wanted.extend(names.iter().filter_map(Value::as_str).map(|n| {
                if local || tools::in_namespace(n, label) {
                    n.to_owned()
                } else {
                    tools::function_name(label, n)
                }
            })),
            None => wanted.extend(
                all.iter()
                    .map(|t| t.name.as_str())
                    .filter(|n| {
                        if local {
                            !tools::is_builtin(n) && !namespaces.iter().any(|ns| tools::in_namespace(n, ns))
                        } else {
                            tools::in_namespace(n, label)
                        }
                    })
                    .map(str::to_owned),
            ),
        }
    }
    wanted.sort();
    wanted.dedup();
    wanted
}

impl ToolLoop {
    /// The tools offered: `(function definitions, names executed here)`.
    async fn server_tools(
        &self,
        env: &Envelope,
        body: &Value,
        route: &Route,
    ) -> Result<(Vec<Value>, Vec<String>), ApiError> {
        let all = self.list_tools(env).await?;
        let names = wanted(&self.namespaces, &all, body, route);
        if names.is_empty() {
            return Err(ApiError::invalid(
                "none of the requested MCP tools exist",
                Some("tools"),
            ));
        }
        let defs = names
            .iter()
            .map(|name| {
                // Tools not listed (hidden, on demand) are still offered by exact name.
                let def = all.iter().find(|t| &t.name == name);
                let description = def.and_then(|t| t.description.clone()).unwrap_or_default();
                let parameters = def
                    .and_then(|t| t.input_schema.clone())
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                json!({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}})
            })
            .collect();
        Ok((defs, names))
    }

    /// The loop; the final `(status, completion)`.
    async fn drive(
        &self,
        env: &Envelope,
        routes: &[Route],
        spent: &mut Option<Outcome>,
    ) -> Result<(u16, ChatCompletion), ApiError> {
        let original: Value = serde_json::from_slice(&env.body).map_err(|e| ApiError::invalid(e.to_string(), None))?;
        let (defs, names) = self.server_tools(env, &original, &routes[0]).await?;
        let mut body = offer(&original, defs);
        let mut usage = Usage::default();
        for round in 0..=self.max_rounds {
            if round == self.max_rounds {
                // Out of rounds: the model answers with what it has.
                body.insert("tool_choice".into(), json!("none"));
            }
            // Each round is a child span: its completion and its tool calls inside.
            let span = if llmr_telemetry::exported() {
                tracing::info_span!("tool_round", otel.name = %format!("tool_loop round {round}"), llmr.round = i64::from(round))
            } else {
                tracing::Span::none()
            };
            let (status, mut completion, outcome) = self.complete(env, routes, &body).instrument(span.clone()).await?;
            if let Some(o) = outcome {
                spent.get_or_insert_with(Outcome::default).add(&o);
            }
            if let Some(u) = completion.usage {
                usage.prompt_tokens += u.prompt_tokens;
                usage.completion_tokens += u.completion_tokens;
                usage.total_tokens += u.total_tokens;
            }
            let calls = completion.tool_calls().to_vec();
            let ours = |c: &ToolCall| names.contains(&c.function.name);
            if status >= 300 || calls.is_empty() || !calls.iter().all(ours) || round == self.max_rounds {
                if status < 300 && round > 0 {
                    completion.usage = Some(usage);
                }
                return Ok((status, completion));
            }
            let results = futures_util::future::join_all(calls.iter().map(|c| self.run_tool(env, c, round)))
                .instrument(span)
                .await;
            if let Some(Value::Array(msgs)) = body.get_mut("messages") {
                msgs.push(to_value(completion.message()));
                msgs.extend(results.iter().map(|m| to_value(Some(m))));
            }
        }
        Err(ApiError::Internal {
            message: "the tool loop ended without an answer".into(),
        })
    }

    /// Runs one tool call through mcp-tools; the result as a tool message.
    async fn run_tool(&self, env: &Envelope, call: &ToolCall, round: u32) -> Message {
        let name = call.function.name.as_str();
        let args: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
        let text = match self
            .mcp(env, Kind::Tool, json!({"name": name, "arguments": args}))
            .await
        {
            Ok(r) => result_text(&r),
            Err(e) => format!("Error: {e}"),
        };
        tracing::info!(request_id = %env.id, tool = name, round, "server-side tool called");
        Message::tool_result(call.id.clone(), text)
    }

    /// One round: plan, hand to a worker, collect.
    async fn complete(
        &self,
        env: &Envelope,
        routes: &[Route],
        body: &Map<String, Value>,
    ) -> Result<(u16, ChatCompletion, Option<Outcome>), ApiError> {
        let bytes = Bytes::from(Value::Object(body.clone()).to_string());
        let plan = self.routing.plan_one(routes, bytes.len(), now_ms()).await?;
        let stream = streams::jobs_for(&plan.pool, env.meta.priority);
        let meta = Meta {
            model: env.meta.model.clone(),
            caller: env.meta.caller.clone(),
            priority: env.meta.priority,
            plan: Some(plan),
            tools: env.meta.tools.clone(),
            ..Meta::default()
        };
        let mut job = env.on_behalf(Kind::Job, self.caller.instance(), bytes, meta);
        job.trace = llmr_telemetry::context(&tracing::Span::current(), &env.trace);
        let answer = self.caller.call(&stream, &job).await?;
        let c: ChatCompletion = serde_json::from_slice(&answer.body).map_err(|e| ApiError::Internal {
            message: format!("unreadable completion: {e}"),
        })?;
        Ok((answer.status, c, answer.outcome))
    }
}

/// The request as the loop sends it: MCP entries replaced by the offered functions, not
/// streamed (the loop streams the final answer itself).
fn offer(original: &Value, defs: Vec<Value>) -> Map<String, Value> {
    let mut body: Map<String, Value> = original.as_object().cloned().unwrap_or_default();
    let mut offered: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter(|x| x.get("type").and_then(Value::as_str) != Some("mcp"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    offered.extend(defs);
    body.insert("tools".into(), Value::Array(offered));
    body.insert("stream".into(), Value::Bool(false));
    body.remove("stream_options");
    body
}

fn to_value(m: Option<&Message>) -> Value {
    m.and_then(|m| serde_json::to_value(m).ok()).unwrap_or(Value::Null)
}

/// The text a model gets back from a tool.
fn result_text(r: &Value) -> String {
    let r: ToolResult = serde_json::from_value(r.clone()).unwrap_or_default();
    let text = match &r.structured {
        Some(s) => s.to_string(),
        None => llmr_protocol::mcp::content_text(&json!({"content": r.content})),
    };
    if r.is_error { format!("Error: {text}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(tools: Vec<String>) -> Route {
        Route {
            name: "m".into(),
            strategy: llmr_config::Strategy::LeastLoad,
            targets: vec![],
            fallbacks: vec![],
            tools,
            cache: None,
        }
    }

    #[test]
    fn finds_mcp_entries() {
        let r = route(vec![]);
        assert!(needed(&r, br#"{"tools":[{"type":"mcp","server_label":"llmrouter"}]}"#));
        assert!(!needed(
            &r,
            br#"{"tools":[{"type":"function","function":{"name":"mcp"}}]}"#
        ));
        assert!(!needed(&r, br#"{"messages":[]}"#));
        assert!(needed(&route(vec!["calculator".into()]), br#"{"messages":[]}"#));
    }

    #[test]
    fn long_remote_tool_names_match_what_mcp_tools_serves() {
        let long = "search_every_repository_issue_and_pull_request_by_label_and_author_name";
        // mcp-tools lists the tool under the shared rule.
        let served = tools::function_name("github", long);
        assert!(served.len() <= tools::MAX_FUNCTION_NAME);
        let all = vec![
            McpTool {
                name: served.clone(),
                description: None,
                input_schema: None,
            },
            McpTool {
                name: "calculator".into(),
                description: None,
                input_schema: None,
            },
        ];
        let ns = vec!["github".to_string()];
        let by_name = json!({"tools": [{"type": "mcp", "server_label": "github", "allowed_tools": [long]}]});
        assert_eq!(wanted(&ns, &all, &by_name, &route(vec![])), vec![served.clone()]);
        let whole_server = json!({"tools": [{"type": "mcp", "server_label": "github"}]});
        assert_eq!(wanted(&ns, &all, &whole_server, &route(vec![])), vec![served]);
        let local = json!({"tools": [{"type": "mcp", "server_label": "llmrouter"}]});
        assert_eq!(
            wanted(&ns, &all, &local, &route(vec![])),
            vec!["calculator".to_string()]
        );
    }

    #[test]
    fn tool_results_become_text() {
        assert_eq!(result_text(&json!({"content": [{"type": "text", "text": "a"}]})), "a");
        assert_eq!(
            result_text(&json!({"content": [], "structuredContent": {"v": 1}})),
            r#"{"v":1}"#
        );
        assert_eq!(
            result_text(&json!({"content": [{"type": "text", "text": "bad"}], "isError": true})),
            "Error: bad"
        );
    }
}
