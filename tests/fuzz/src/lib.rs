//! The fuzz targets' bodies as plain functions, one per parser that reads bytes from
//! outside: client request bodies, bus envelopes and frames, upstream SSE streams, MCP
//! JSON-RPC messages, config files, and the XML tool-call parser that reads model output.
//!
//! Each function must not panic on any input, and checks what must hold whatever the input
//! (a stream split anywhere gives the same events; a decoded envelope survives re-encoding).
//! `just fuzz` runs them under libFuzzer (`fuzz/`, cargo fuzz, nightly); `tests/saved.rs`
//! runs every saved input — the seeds in `corpus/` and the crashes kept in `regressions/` —
//! on every `just test`.

use std::collections::HashMap;

use serde_json::Value;

/// One fuzz target: bytes in, a panic when something that must hold does not.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/` and the saved inputs' folders name them.
pub const TARGETS: [(&str, Target); 6] = [
    ("chat_request", chat_request),
    ("envelope", envelope),
    ("upstream_sse", upstream_sse),
    ("mcp_jsonrpc", mcp_jsonrpc),
    ("config", config),
    ("xml_tools", xml_tools),
];

/// A client's body, as every front door reads it: the UTF-8 and surrogate check, the chat
/// request parser, and the Anthropic and Ollama translations to a chat request.
pub fn chat_request(data: &[u8]) {
    use llmr_protocol::{anthropic, chat, ollama};
    let checked = chat::check_text(data);
    if let Ok(parsed) = chat::parse(data) {
        // What the parser accepted is valid UTF-8 JSON.
        assert!(std::str::from_utf8(data).is_ok() || checked.is_err());
        let _ = parsed.model;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        if let Ok(req) = anthropic::front::chat_request(&v) {
            assert!(req.is_object(), "{req}");
        }
        let _ = ollama::front::chat_request(&v);
        let _ = ollama::front::generate_request(&v);
        let _ = ollama::front::embed_request(&v);
        let _ = llmr_protocol::xmltools::request(&v);
        let _ = anthropic::request(&v, "m");
    }
}

/// Stream fields, one per line as `name=value`: an envelope, a reply frame and a reply entry
/// of several frames decoded from them; whatever decodes re-encodes to itself.
pub fn envelope(data: &[u8]) {
    let mut fields: HashMap<&[u8], &[u8]> = HashMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(&line[..eq], &line[eq + 1..]);
        }
    }
    let get = |name: &str| fields.get(name.as_bytes()).copied();
    if let Ok(env) = llmr_protocol::Envelope::from_fields(get) {
        let encoded = env.to_fields();
        let again =
            llmr_protocol::Envelope::from_fields(|n| encoded.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_ref()));
        assert_eq!(again.as_ref(), Ok(&env));
    }
    if let Ok(frame) = llmr_protocol::frame::Frame::from_fields(get) {
        let _ = frame.as_head();
        let _ = frame.as_error();
        let encoded = frame.to_fields();
        let again = llmr_protocol::frame::Frame::from_fields(|n| {
            encoded.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_ref())
        });
        assert_eq!(again.as_ref(), Ok(&frame));
    }
    if let Ok(frames) = llmr_protocol::frame::batch_from_fields(get) {
        let encoded = llmr_protocol::frame::batch_to_fields(&frames);
        let again =
            llmr_protocol::frame::batch_from_fields(|n| encoded.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_ref()));
        assert_eq!(again.as_ref(), Ok(&frames));
    }
}

/// An upstream's SSE bytes (the first byte sets the read size): split into events the same
/// way whatever the reads, and each event fed to the Anthropic stream translator.
pub fn upstream_sse(data: &[u8]) {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let size = usize::from(size % 64) + 1;
    let mut whole = llmr_worker::sse::Splitter::default();
    let expected = whole.push(body);
    let mut pieces = llmr_worker::sse::Splitter::default();
    let mut got = Vec::new();
    for chunk in body.chunks(size) {
        got.extend(pieces.push(chunk));
    }
    assert_eq!(got, expected, "the same events whatever the reads");
    assert_eq!(pieces.pending(), whole.pending());
    let mut stream = llmr_protocol::anthropic::Stream::new("m", 0);
    for e in &expected {
        if let llmr_worker::sse::Event::Data(d) = e
            && let Ok(v) = serde_json::from_slice::<Value>(d)
        {
            let _ = stream.event(&v);
        }
    }
    let _ = stream.usage_chunk();
}

/// One MCP message as the gateway's transport checks it (the first byte picks the
/// `MCP-Protocol-Version` header: none, a served one, or the rest of the input's first line).
pub fn mcp_jsonrpc(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let header = match pick % 3 {
        0 => None,
        1 => Some(llmr_protocol::mcp::PROTOCOL_VERSIONS[0]),
        _ => std::str::from_utf8(body).ok().and_then(|s| s.lines().next()),
    };
    match llmr_protocol::mcp::check(body, header) {
        Ok(m) => {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            // A request (a method and an id) is always answered.
            if m.method.is_some() && v.get("id").is_some() {
                assert!(!m.notification, "{v}");
            }
            let _ = llmr_protocol::mcp::content_text(&v);
            let _ = llmr_protocol::mcp::negotiate(v["params"]["protocolVersion"].as_str());
        }
        Err(r) => assert!(r.code < 0, "{r:?}"),
    }
}

/// A config file's text, loaded as `--config` would load it (no environment).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = llmr_config::load_toml(text, HashMap::new());
    }
}

/// A model's text (the first byte sets the size of the streamed pieces): the XML tool-call
/// parser shows the same text and finds the same calls whether it gets it whole or streamed.
pub fn xml_tools(data: &[u8]) {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let mut whole = llmr_protocol::xmltools::Parser::new("call");
    let (mut shown, calls) = whole.push(text);
    shown.push_str(&whole.flush());
    let mut pieces = llmr_protocol::xmltools::Parser::new("call");
    let (mut shown2, mut calls2) = (String::new(), Vec::new());
    let size = usize::from(size % 16) + 1;
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        let (s, c) = pieces.push(piece);
        shown2.push_str(&s);
        calls2.extend(c);
        rest = tail;
    }
    shown2.push_str(&pieces.flush());
    assert_eq!(shown2, shown, "the same text whatever the pieces");
    assert_eq!(calls2, calls, "the same calls whatever the pieces");
}
