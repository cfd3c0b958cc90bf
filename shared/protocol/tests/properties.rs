//! Property tests: decoding what arrives from the bus or a client never panics, and what we
//! encode decodes back to the same value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bytes::Bytes;
use llmr_protocol::{
    Attempt, CallerId, Endpoint, Envelope, Kind, Meta, NativeBody, Plan, Priority, ToolMode, TraceContext, chat,
};
use proptest::prelude::*;
use uuid::Uuid;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Chat),
        Just(Kind::Job),
        Just(Kind::Mcp),
        Just(Kind::Tool),
        Just(Kind::Responses),
        Just(Kind::ToolInventory)
    ]
}

fn caller() -> impl Strategy<Value = CallerId> {
    prop_oneof![
        Just(CallerId::None),
        "[a-z0-9-]{1,12}".prop_map(CallerId::Gateway),
        "[a-f0-9]{1,32}".prop_map(CallerId::Session),
        any::<u128>().prop_map(|n| CallerId::Router(Uuid::from_u128(n))),
        "[a-z_]{1,12}".prop_map(CallerId::Tool),
    ]
}

fn plan() -> impl Strategy<Value = Option<Plan>> {
    proptest::option::of(
        ("[a-z]{1,8}", "[a-z0-9/.-]{1,20}", any::<u64>()).prop_map(|(p, m, w)| Plan {
            pool: "default".into(),
            attempts: vec![Attempt::new(&p, &m)],
            wait_ms: w,
            cache: None,
        }),
    )
}

prop_compose! {
    fn envelope()(kind in kind(), reply_to in ".{0,16}", deadline in any::<u64>(), tp in "[0-9a-f-]{0,55}", ts in "[a-z0-9=,]{0,30}",
                  body in proptest::collection::vec(any::<u8>(), 0..200), model in ".{0,20}", stream in any::<bool>(),
                  usage in any::<bool>(), caller in caller(), attempt in any::<u32>(), plan in plan(),
                  discovery in any::<bool>(), id in any::<u128>(), cache in "[a-z=0-9,-]{0,12}",
                  native in proptest::collection::vec(any::<u8>(), 0..40), scope in "(team|key)/[a-z0-9_]{0,12}|") -> Envelope {
        Envelope {
            id: Uuid::from_u128(id),
            kind,
            reply_to,
            deadline_ms: deadline,
            trace: TraceContext { traceparent: tp, tracestate: ts },
            body: Bytes::from(body),
            meta: Meta {
                model,
                stream,
                include_usage: usage,
                caller,
                attempt,
                plan,
                mode: if discovery { ToolMode::Discovery } else { ToolMode::Standard },
                cache,
                native: match (native.is_empty(), id % 2) {
                    (true, 0) => None,
                    (_, 1) => Some(NativeBody::Anthropic(Bytes::from(native))),
                    _ => Some(NativeBody::Responses(Bytes::from(native))),
                },
                endpoint: [Endpoint::Chat, Endpoint::Embeddings, Endpoint::Completions][(id % 3) as usize],
                priority: if id % 5 == 0 { Priority::Batch } else { Priority::Interactive },
                scope,
                tools: if id % 7 == 0 { vec![vec!["a*".into()], vec![]] } else { Vec::new() },
            },
        }
    }
}

proptest! {
    #[test]
    fn envelopes_round_trip_through_stream_fields(env in envelope()) {
        let fields: HashMap<&str, Bytes> = env.to_fields().into_iter().collect();
        let back = Envelope::from_fields(|k| fields.get(k).map(|b| b.as_ref())).unwrap();
        prop_assert_eq!(back, env);
    }

    #[test]
    fn decoding_arbitrary_fields_never_panics(fields in proptest::collection::hash_map(
        prop_oneof![Just("id"), Just("kind"), Just("reply_to"), Just("deadline_ms"), Just("traceparent"), Just("tracestate"),
                    Just("model"), Just("stream"), Just("include_usage"), Just("caller"), Just("attempt"),
                    Just("body"), Just("mode"), Just("plan"), Just("cache"), Just("native"), Just("endpoint")],
        proptest::collection::vec(any::<u8>(), 0..40), 0..17)) {
        let _ = Envelope::from_fields(|k| fields.get(k).map(|b| b.as_slice()));
    }

    #[test]
    fn chat_parsing_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = chat::parse(&body);
    }

    #[test]
    fn chat_parsing_never_panics_on_near_valid_json(model in ".{0,10}", role in "(user|system|assistant|tool|x)",
                                                    content in ".{0,20}", stream in any::<bool>(), extra in ".{0,10}") {
        let body = serde_json::json!({"model": model, "stream": stream,
            "messages": [{"role": role, "content": content}], "x": extra}).to_string();
        if let Ok(req) = chat::parse(body.as_bytes()) {
            prop_assert_eq!(req.model.as_ref(), model.as_str());
            prop_assert_eq!(req.stream, stream);
        }
    }
}
