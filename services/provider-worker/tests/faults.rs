//! Golden snapshot (insta) of every upstream adapter's fault mapping, against a mock that
//! speaks each provider's wire format: auth (401), rate limit (429 with `retry-after`),
//! overload (529 for Anthropic, 503 for the others), bad request (400) and a malformed answer
//! — each mapped to the fault that decides failover, circuits and cooldowns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use llmr_bus::{Bus, Replier};
use llmr_protocol::{Attempt, Envelope, Kind, Meta, now_ms};
use llmr_testkit::{Behavior, MockUpstream};
use llmr_worker::adapters::{self, Call, Fault};
use llmr_worker::outbox::Outbox;

fn providers(mock: &MockUpstream) -> Vec<llmr_config::Provider> {
    let v1 = mock.base_url();
    let root = v1.trim_end_matches("/v1").to_owned();
    let toml = format!(
        "[[providers]]\nname = \"openai\"\ntype = \"openai\"\nbase_url = \"{v1}\"\napi_keys = [\"k\"]\nmodels = [\"m\"]\n\
         [[providers]]\nname = \"gemini\"\ntype = \"gemini\"\nbase_url = \"{v1}\"\napi_keys = [\"k\"]\nmodels = [\"m\"]\n\
         [[providers]]\nname = \"azure\"\ntype = \"azure\"\nbase_url = \"{root}\"\napi_version = \"2024-10-21\"\napi_keys = [\"k\"]\nmodels = [\"m\"]\n\
         [[providers]]\nname = \"anthropic\"\ntype = \"anthropic\"\nbase_url = \"{v1}\"\napi_keys = [\"k\"]\nmodels = [\"m\"]\n\
         [[providers]]\nname = \"ollama\"\ntype = \"ollama\"\nbase_url = \"{root}\"\nmodels = [\"m\"]\n"
    );
    let path = std::env::temp_dir().join(format!("llmr-faults-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let s = llmr_config::load_from(Some(&path), Default::default()).unwrap();
    let _ = std::fs::remove_file(path);
    s.providers
}

/// One attempt of `p` against the mock's next behavior; its fault in one line.
async fn attempt(p: &llmr_config::Provider, client: &awc::Client) -> String {
    let body = Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    let meta = Meta {
        model: "m".into(),
        ..Meta::default()
    };
    let env = Envelope::new(Kind::Job, "r", now_ms() + 10_000, Default::default(), body, meta);
    let attempt = Attempt::new(&p.name, "m");
    let mut out = Outbox::from(Replier::new(Bus::memory(), "r", env.id, false));
    let key = p
        .resolved_keys
        .first()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).to_owned());
    let call = Call {
        env: &env,
        attempt: &attempt,
        provider: p,
        key: key.as_deref(),
        trace: &Default::default(),
        timeout: Duration::from_secs(5),
        client,
        max_response_bytes: 1 << 20,
        out: &mut out,
    };
    match adapters::for_provider(p).call(call).await {
        Ok(_) => "answered".into(),
        Err(e) => {
            let fault = match e.fault {
                Fault::RateLimited { until_ms } => format!("RateLimited(until set: {})", until_ms.is_some()),
                f => format!("{f:?}"),
            };
            format!("{fault}, retryable {}, client gets {}", e.retryable, e.error.status())
        }
    }
}

#[actix_rt::test]
async fn each_error_kind_maps_to_the_fault_that_drives_failover() {
    let mock = MockUpstream::start(&["m"]);
    let client = awc::Client::builder().timeout(Duration::from_secs(5)).finish();
    let mut lines = Vec::new();
    for p in providers(&mock) {
        let overload = if p.name == "anthropic" { 529 } else { 503 };
        let kinds: [(&str, Behavior); 5] = [
            ("auth", Behavior::status(401)),
            (
                "rate limit",
                Behavior {
                    retry_after: Some("7".into()),
                    ..Behavior::status(429)
                },
            ),
            ("overload", Behavior::status(overload)),
            ("bad request", Behavior::status(400)),
            (
                "malformed answer",
                Behavior {
                    malformed: true,
                    ..Behavior::default()
                },
            ),
        ];
        for (kind, behavior) in kinds {
            mock.push(behavior);
            lines.push(format!("{:9} {:16} → {}", p.name, kind, attempt(&p, &client).await));
        }
    }
    insta::assert_snapshot!(lines.join("\n"));
}
