//! The `echo` provider's embeddings and legacy completions, so both endpoints work with no
//! upstream: embeddings are deterministic vectors derived from each input (SHA-256 of the
//! text and the dimension, `dimensions` honoured, default 8; `encoding_format: "base64"` as
//! little-endian f32), and a text completion echoes its prompt (streamed word by word when
//! asked, with a usage chunk when `stream_options.include_usage` is set).

use base64::Engine;
use bytes::Bytes;
use llmr_protocol::{Usage, now_ms};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::attempt::{AttemptError, AttemptResult, Call, Outcome};

/// The texts of an embeddings `input` or a completions `prompt` (token arrays named by size).
fn texts(v: &Value) -> Vec<String> {
    let one = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Array(t) => format!("<{} tokens>", t.len()),
        other => other.to_string(),
    };
    match v {
        Value::Array(items) if items.iter().all(|i| i.is_u64()) => vec![one(v)],
        Value::Array(items) => items.iter().map(one).collect(),
        other => vec![one(other)],
    }
}

fn words(texts: &[String]) -> u64 {
    texts.iter().map(|t| t.split_whitespace().count().max(1) as u64).sum()
}

/// A deterministic unit-range vector for `text`.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|i| {
            let h = Sha256::new()
                .chain_update(text.as_bytes())
                .chain_update(i.to_le_bytes())
                .finalize();
            f32::from(u16::from_le_bytes([h[0], h[1]])) / 32767.5 - 1.0
        })
        .collect()
}

fn reply_err(e: llmr_bus::BusError) -> AttemptError {
    AttemptError::local(e.into(), "could not reply")
}

/// An embedding as OpenAI's `encoding_format: "base64"` sends it: little-endian f32s.
pub fn to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Answers an embeddings request.
pub async fn embeddings(c: Call<'_>, req: &Value) -> AttemptResult {
    let inputs = texts(&req["input"]);
    let dims = req["dimensions"].as_u64().map_or(8, |d| d.min(4096) as usize);
    let base64 = req["encoding_format"] == "base64";
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = vector(t, dims);
            let embedding = if base64 { json!(to_base64(&v)) } else { json!(v) };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens = words(&inputs);
    let model = c.env.meta.model.clone();
    let body = json!({"object": "list", "data": data, "model": model,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    c.out.set_usage(Some(Usage {
        prompt_tokens: tokens,
        completion_tokens: 0,
        total_tokens: tokens,
    }));
    c.out
        .complete(200, Bytes::from(body.to_string()))
        .await
        .map_err(reply_err)?;
    Ok(Outcome {
        usage: Some(Usage {
            prompt_tokens: tokens,
            completion_tokens: 0,
            total_tokens: tokens,
        }),
        relayed_bytes: 0,
        response_id: None,
        response_model: Some(model),
        finish_reasons: Vec::new(),
    })
}

/// Answers a legacy completions request by echoing its (first) prompt.
pub async fn completions(c: Call<'_>, req: &Value) -> AttemptResult {
    let prompts = texts(&req["prompt"]);
    let text = prompts.first().cloned().unwrap_or_default();
    let (prompt_tokens, completion_tokens) = (words(&prompts), text.split_whitespace().count() as u64);
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };
    let env = c.env;
    let (id, model, created) = (
        format!("cmpl-{}", env.id.simple()),
        env.meta.model.as_str(),
        now_ms() / 1000,
    );
    let choice =
        |text: &str, finish: Option<&str>| json!({"text": text, "index": 0, "logprobs": null, "finish_reason": finish});
    let chunk = |choices: Value, usage: Option<Usage>| {
        let mut v =
            json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = json!(u);
        }
        Bytes::from(v.to_string())
    };
    c.out.set_usage(Some(usage));
    if env.meta.stream {
        let mut events: Vec<Bytes> = text
            .split_inclusive(' ')
            .map(|w| chunk(json!([choice(w, None)]), None))
            .collect();
        events.push(chunk(json!([choice("", Some("stop"))]), None));
        if env.meta.include_usage {
            events.push(chunk(json!([]), Some(usage)));
        }
        c.out.stream_all(&events).await.map_err(reply_err)?;
    } else {
        c.out
            .complete(200, chunk(json!([choice(&text, Some("stop"))]), Some(usage)))
            .await
            .map_err(reply_err)?;
    }
    Ok(Outcome {
        usage: Some(usage),
        relayed_bytes: 0,
        response_id: Some(id.clone()),
        response_model: Some(model.to_owned()),
        finish_reasons: vec!["stop".into()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_and_sized() {
        assert_eq!(vector("a", 8), vector("a", 8));
        assert_ne!(vector("a", 8), vector("b", 8));
        assert_eq!(vector("a", 3).len(), 3);
        assert!(vector("a", 64).iter().all(|x| (-1.0..=1.0).contains(x)));
        assert_eq!(texts(&json!([1, 2, 3])), vec!["<3 tokens>"]);
        assert_eq!(texts(&json!(["x", "y"])), vec!["x", "y"]);
    }
}
