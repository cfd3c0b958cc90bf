//! The operator console's server side, on both backends: its page and files under a strict
//! Content-Security-Policy, sign-in with the admin token into a session cookie that
//! `/admin/…` takes (changes only with the session's CSRF token, from the same origin), a
//! session valid on every gateway with the same admin token, the console off or unconfigured,
//! and the overview read from the cluster's request log. The browser itself is driven by
//! tests/python/test_console.py.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "console-admin";

fn app(redis: bool, admin: Option<&str>, extra: &[(&str, &str)]) -> InProcess {
    let mut cfg = TestConfig::new(ECHO).env("LLMR__SERVER__TOKEN", "api-token");
    if let Some(a) = admin {
        cfg = cfg.env("LLMR__SERVER__ADMIN_TOKEN", a);
    }
    for (k, v) in extra {
        cfg = cfg.env(k, v);
    }
    InProcess::start(redis, cfg)
}

/// An answer: status, headers, body.
type Answer = (u16, awc::http::header::HeaderMap, Value);

async fn send(req: awc::ClientRequest, body: Option<Value>) -> Answer {
    let mut resp = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .unwrap();
    let b = resp.body().await.unwrap();
    (
        resp.status().as_u16(),
        resp.headers().clone(),
        serde_json::from_slice(&b).unwrap_or(Value::Null),
    )
}

/// Signs in: the cookie's `name=value` and the CSRF token.
async fn sign_in(a: &InProcess, token: &str) -> (u16, Option<String>, Value) {
    let (status, headers, body) = send(client().post(a.url("/ui/login")), Some(json!({"token": token}))).await;
    let cookie = headers.get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    (status, cookie, body)
}

fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn the_page_and_its_files_carry_a_strict_policy(redis: bool) {
    let a = app(redis, Some(ADMIN), &[]);
    // The page and each of its files: their type, under the policy.
    for (file, ctype) in [
        ("", "text/html"),
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let resp = client().get(a.url(&format!("/ui/{file}"))).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{file}");
        let h = |name: &str| resp.headers().get(name).unwrap().to_str().unwrap().to_owned();
        assert!(h("content-type").starts_with(ctype), "{file}");
        let csp = h("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h("x-content-type-options"), "nosniff");
    }
    let mut resp = client().get(a.url("/ui/")).send().await.unwrap();
    let page = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
    assert!(page.contains("app.js"), "the page loads its script");
    let resp = client().get(a.url("/ui/nothing.js")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let no_redirects = awc::Client::builder().max_redirects(0).finish();
    let resp = no_redirects.get(a.url("/ui")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 308);
    assert_eq!(resp.headers().get("location").unwrap(), "/ui/");
}
both!(the_page_and_its_files_carry_a_strict_policy);

async fn a_session_opens_the_admin_api_and_changes_need_its_csrf_token(redis: bool) {
    let a = app(redis, Some(ADMIN), &[]);
    let (status, cookie, body) = sign_in(&a, "wrong").await;
    assert_eq!(
        (status, cookie, body["error"]["code"].as_str()),
        (401, None, Some("invalid_api_key"))
    );
    let (status, cookie, body) = sign_in(&a, ADMIN).await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: not Secure");
    assert!(!body.to_string().contains(ADMIN), "the token is never sent back");
    let (c, csrf) = (pair(&cookie), body["csrf"].as_str().unwrap().to_owned());
    let (s, _, v) = send(
        client().get(a.url("/ui/session")).insert_header(("cookie", c.as_str())),
        None,
    )
    .await;
    assert_eq!((s, &v["signed_in"], &v["csrf"]), (200, &json!(true), &json!(csrf)));
    // Reads take the cookie; a change needs the CSRF token too, from the same origin.
    let (s, ..) = send(
        client().get(a.url("/admin/keys")).insert_header(("cookie", c.as_str())),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let new_key = || {
        client()
            .post(a.url("/admin/keys"))
            .insert_header(("cookie", c.as_str()))
    };
    let (s, _, v) = send(new_key(), Some(json!({"name": "k"}))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );
    let (s, ..) = send(
        new_key().insert_header(("x-csrf-token", "forged")),
        Some(json!({"name": "k"})),
    )
    .await;
    assert_eq!(s, 403);
    let foreign = new_key()
        .insert_header(("x-csrf-token", csrf.as_str()))
        .insert_header(("origin", "https://evil.example"));
    assert_eq!(send(foreign, Some(json!({"name": "k"}))).await.0, 403);
    let (s, _, v) = send(
        new_key().insert_header(("x-csrf-token", csrf.as_str())),
        Some(json!({"name": "k"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // The cookie is the console's: the API routes do not take it.
    let (s, ..) = send(
        client().get(a.url("/v1/models")).insert_header(("cookie", c.as_str())),
        None,
    )
    .await;
    assert_eq!(s, 401);
    // A form post (not JSON) cannot sign in.
    let mut resp = client()
        .post(a.url("/ui/login"))
        .content_type("application/x-www-form-urlencoded")
        .send_body(format!("token={ADMIN}"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403, "{:?}", resp.body().await);
    // Signing out clears the cookie.
    let out = client()
        .post(a.url("/ui/logout"))
        .insert_header(("cookie", c.as_str()))
        .insert_header(("x-csrf-token", csrf.as_str()));
    let (s, h, _) = send(out, None).await;
    assert_eq!(s, 200);
    assert!(h.get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
}
both!(a_session_opens_the_admin_api_and_changes_need_its_csrf_token);

async fn a_session_holds_on_every_gateway_with_the_same_admin_token(redis: bool) {
    let (a, b) = (app(redis, Some(ADMIN), &[]), app(redis, Some(ADMIN), &[]));
    let other = app(redis, Some("another-admin"), &[]);
    let (_, cookie, _) = sign_in(&a, ADMIN).await;
    let c = pair(&cookie.unwrap());
    let read = |x: &InProcess| client().get(x.url("/admin/keys")).insert_header(("cookie", c.clone()));
    assert_eq!(send(read(&b), None).await.0, 200, "another replica takes it");
    assert_eq!(send(read(&other), None).await.0, 401, "another admin token does not");
    let tampered = c.replacen("v1.", "v1.9", 1);
    let (s, ..) = send(
        client().get(a.url("/admin/keys")).insert_header(("cookie", tampered)),
        None,
    )
    .await;
    assert_eq!(s, 401);
}
both!(a_session_holds_on_every_gateway_with_the_same_admin_token);

async fn without_an_admin_token_the_console_says_how_to_set_it(redis: bool) {
    let a = app(redis, None, &[]);
    let (s, _, v) = send(client().get(a.url("/ui/session")), None).await;
    assert_eq!(
        (s, &v["configured"], &v["signed_in"]),
        (200, &json!(false), &json!(false))
    );
    let (status, cookie, body) = sign_in(&a, "anything").await;
    assert_eq!((status, cookie.is_none()), (403, true));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.admin_token")
    );
    assert_eq!(client().get(a.url("/ui/")).send().await.unwrap().status().as_u16(), 200);
    let off = app(redis, Some(ADMIN), &[("LLMR__UI__ENABLED", "false")]);
    // Off, /ui/ is an unknown route like any other: behind the API's auth, then 404.
    assert_eq!(
        client().get(off.url("/ui/")).send().await.unwrap().status().as_u16(),
        401
    );
    let with_token = client()
        .get(off.url("/ui/"))
        .insert_header(("authorization", "Bearer api-token"));
    assert_eq!(with_token.send().await.unwrap().status().as_u16(), 404);
}
both!(without_an_admin_token_the_console_says_how_to_set_it);

async fn the_overview_and_the_log_show_the_cluster_requests(redis: bool) {
    let a = app(redis, Some(ADMIN), &[]);
    let started = llmr_protocol::now_ms();
    for _ in 0..3 {
        let (s, _) = post_with(
            &a.url("/v1/chat/completions"),
            &chat_body("echo", "hi", false),
            &[("authorization", "Bearer api-token")],
        )
        .await;
        assert_eq!(s, 200);
    }
    let auth = format!("Bearer {ADMIN}");
    let h = [("authorization", auth.as_str())];
    let url = a.url("/admin/overview");
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            get(&url, &h).await.1["current"]["requests_today"].as_u64() >= Some(3)
        })
        .await
    );
    // A fresh answer (the last one is reused for 2 s).
    actix_rt::time::sleep(std::time::Duration::from_millis(2100)).await;
    let v = get(&url, &h).await.1;
    let rps = v["series"]["requests_per_s"].as_array().unwrap();
    assert_eq!(rps.len(), 30);
    // In the last step, or the one before when a step boundary passed meanwhile.
    assert!(rps[28..].iter().any(|x| x.as_f64().unwrap() > 0.0), "{v}");
    assert_eq!(v["current"]["error_rate"], json!(0.0));
    assert!(v["current"]["p50_ms"].is_number());
    // The log's time filter.
    let (_, since) = get(&a.url(&format!("/admin/requests?since_ms={started}")), &h).await;
    assert_eq!(since["data"].as_array().unwrap().len(), 3);
    let (_, until) = get(&a.url(&format!("/admin/requests?until_ms={started}")), &h).await;
    assert_eq!(until["data"].as_array().unwrap().len(), 0);
}
both!(the_overview_and_the_log_show_the_cluster_requests);
