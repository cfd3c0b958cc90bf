//! The admin API (`/admin/…`, `server.admin_token` only): virtual keys and teams (create,
//! list, show, change, revoke, rotate), spend grouped by key, team, model or day, and the
//! request log (newest first, filtered, or streamed as JSON lines for export).
//!
//! A secret is answered once, at creation and rotation; the store keeps its SHA-256 only.
//! Every change bumps the store's governance version, which every gateway polls, and this
//! gateway reloads at once.

use actix_web::{HttpResponse, web};
use llmr_protocol::{ApiError, now_ms};
use llmr_store::governance::{Limits, Period, RequestRecord, Team, VirtualKey, usd};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::keys::{hash_secret, hint, new_secret};
use crate::{AppState, HttpError};

fn invalid(message: impl Into<String>, param: &str) -> HttpError {
    HttpError(ApiError::invalid(message, Some(param)))
}

fn not_found(what: &str, id: &str) -> HttpError {
    HttpError(ApiError::NotFound {
        message: format!("No {what} with id `{id}`."),
    })
}

/// A JSON object body.
fn object(body: &[u8]) -> Result<Map<String, Value>, HttpError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(HttpError(ApiError::invalid("The body must be a JSON object.", None))),
        Err(e) => Err(HttpError(ApiError::invalid(format!("Malformed JSON: {e}"), None))),
    }
}

/// Applies the fields of `m` that a key and a team share (limits, lists, name).
fn apply_common(
    m: &Map<String, Value>,
    name: &mut String,
    models: &mut Vec<String>,
    tools: &mut Vec<String>,
    l: &mut Limits,
) -> Result<(), HttpError> {
    let num = |k: &str| -> Result<Option<u64>, HttpError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| invalid(format!("`{k}` must be a whole number."), k)),
        }
    };
    let list = |k: &str| -> Result<Vec<String>, HttpError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|_| invalid(format!("`{k}` must be a list of strings."), k))
            }
        }
    };
    if let Some(v) = m.get("name") {
        *name = v
            .as_str()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid("`name` must be a non-empty string.", "name"))?
            .to_owned();
    }
    if m.contains_key("models") {
        *models = list("models")?;
    }
    if m.contains_key("tools") {
        *tools = list("tools")?;
    }
    if m.contains_key("rpm") {
        l.rpm = num("rpm")?;
    }
    if m.contains_key("tpm") {
        l.tpm = num("tpm")?;
    }
    if m.contains_key("max_parallel") {
        l.max_parallel = num("max_parallel")?;
    }
    if m.contains_key("max_tokens") {
        l.max_tokens = num("max_tokens")?;
    }
    if m.contains_key("max_queue_wait_ms") {
        l.max_queue_wait_ms = num("max_queue_wait_ms")?;
    }
    match m.get("budget_usd") {
        None => {}
        Some(Value::Null) => l.budget_usd = None,
        Some(v) => {
            l.budget_usd = Some(
                v.as_f64()
                    .filter(|b| *b >= 0.0)
                    .ok_or_else(|| invalid("`budget_usd` must be a number of dollars, 0 or more.", "budget_usd"))?,
            )
        }
    }
    if let Some(v) = m.get("budget_period") {
        l.budget_period = v
            .as_str()
            .and_then(Period::parse)
            .ok_or_else(|| invalid("`budget_period` must be day, week, month or total.", "budget_period"))?;
    }
    Ok(())
}

/// Reads `expires_at`: an RFC 3339 time or unix seconds; null clears it.
fn expiry(m: &Map<String, Value>) -> Result<Option<Option<u64>>, HttpError> {
    let bad = || invalid("`expires_at` must be an RFC 3339 time or unix seconds.", "expires_at");
    match m.get("expires_at") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|s| s.checked_mul(1000))
            .map(|ms| Some(Some(ms)))
            .ok_or_else(bad),
        Some(Value::String(s)) => llmr_config::rfc3339_ms(s).map(|t| Some(Some(t))).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

const KEY_FIELDS: &[&str] = &[
    "name",
    "team",
    "models",
    "tools",
    "rpm",
    "tpm",
    "max_parallel",
    "max_tokens",
    "max_queue_wait_ms",
    "budget_usd",
    "budget_period",
    "expires_at",
    "metadata",
];

fn unknown_fields(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), HttpError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("Unknown field `{k}`."), k)),
        None => Ok(()),
    }
}

/// Applies a create or change body to `k`.
fn apply_key(state: &AppState, m: &Map<String, Value>, k: &mut VirtualKey) -> Result<(), HttpError> {
    unknown_fields(m, KEY_FIELDS)?;
    apply_common(m, &mut k.name, &mut k.models, &mut k.tools, &mut k.limits)?;
    match m.get("team") {
        None => {}
        Some(Value::Null) => k.team = None,
        Some(Value::String(t)) if state.keyring.snapshot().teams.contains_key(t) => k.team = Some(t.clone()),
        Some(Value::String(t)) => return Err(invalid(format!("No team with id `{t}`."), "team")),
        Some(_) => return Err(invalid("`team` must be a team id.", "team")),
    }
    if let Some(e) = expiry(m)? {
        k.expires_at_ms = e;
    }
    if let Some(md) = m.get("metadata") {
        k.metadata = md.clone();
    }
    // A budget needs prices for every model the key names outright (globs are checked at
    // request time).
    if k.limits.budget_usd.is_some()
        && let Some(m) = k
            .models
            .iter()
            .find(|m| !m.contains(['*', '?']) && crate::govern::worst_prices(&state.settings, m).is_none())
    {
        return Err(invalid(
            format!("The model `{m}` has no price, so a key with a budget cannot use it."),
            "models",
        ));
    }
    Ok(())
}

/// A key as the API shows it: no hash, its spend and reservations now.
async fn key_view(state: &AppState, k: &VirtualKey) -> Result<Value, HttpError> {
    let s = state
        .store
        .gov_standings(&k.subject(), k.limits.budget_period, now_ms())
        .await?;
    let mut v = serde_json::to_value(k).unwrap_or_default();
    if let Value::Object(o) = &mut v {
        o.remove("hash");
        o.insert("object".into(), json!("key"));
        o.insert("revoked".into(), json!(k.revoked_ms.is_some()));
        o.insert("spend_usd".into(), json!(usd(s.spend_micros)));
        o.insert("reserved_usd".into(), json!(usd(s.reserved_micros)));
        o.insert("in_flight".into(), json!(s.in_flight));
        o.insert("period_start_ms".into(), json!(s.period_start_ms));
    }
    Ok(v)
}

async fn save_key(state: &AppState, k: &VirtualKey) -> Result<(), HttpError> {
    state.store.gov_put_key(k).await?;
    state.keyring.reload(&state.store, true).await?;
    Ok(())
}

/// The key `id` as the store has it now (the keyring re-read when the store's version moved:
/// one made or changed a moment ago on another gateway is found, and a change is never made
/// over a stale copy).
async fn find_key(state: &AppState, id: &str) -> Result<VirtualKey, HttpError> {
    state.keyring.reload(&state.store, false).await?;
    state
        .keyring
        .snapshot()
        .keys
        .get(id)
        .cloned()
        .ok_or_else(|| not_found("key", id))
}

/// `POST /admin/keys`.
pub async fn create_key(body: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let m = object(&body)?;
    if !m.get("name").is_some_and(Value::is_string) {
        return Err(invalid("`name` is required.", "name"));
    }
    let secret = new_secret();
    let mut k = VirtualKey {
        id: format!("key_{}", &uuid::Uuid::now_v7().simple().to_string()[16..]),
        name: String::new(),
        hash: hash_secret(&secret),
        hint: hint(&secret),
        team: None,
        models: Vec::new(),
        tools: Vec::new(),
        limits: Limits::default(),
        expires_at_ms: None,
        metadata: Value::Null,
        created_ms: now_ms(),
        revoked_ms: None,
        from_config: false,
    };
    apply_key(&state, &m, &mut k)?;
    save_key(&state, &k).await?;
    let mut v = key_view(&state, &k).await?;
    v["key"] = json!(secret);
    Ok(HttpResponse::Created().json(v))
}

/// `GET /admin/keys`.
pub async fn list_keys(state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    state.keyring.reload(&state.store, false).await?;
    let mut data = Vec::new();
    for k in state.keyring.snapshot().keys.values() {
        data.push(key_view(&state, k).await?);
    }
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET|PATCH|DELETE /admin/keys/{id}`.
pub async fn key(
    req: actix_web::HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let id = path.into_inner();
    let mut k = find_key(&state, &id).await?;
    match *req.method() {
        actix_web::http::Method::PATCH => {
            apply_key(&state, &object(&body)?, &mut k)?;
            save_key(&state, &k).await?;
        }
        actix_web::http::Method::DELETE => {
            k.revoked_ms.get_or_insert(now_ms());
            save_key(&state, &k).await?;
        }
        _ => {}
    }
    Ok(HttpResponse::Ok().json(key_view(&state, &k).await?))
}

/// `POST /admin/keys/{id}/rotate`: a new secret; the old one is refused from now on.
pub async fn rotate_key(path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let mut k = find_key(&state, &path.into_inner()).await?;
    let secret = new_secret();
    k.hash = hash_secret(&secret);
    k.hint = hint(&secret);
    save_key(&state, &k).await?;
    let mut v = key_view(&state, &k).await?;
    v["key"] = json!(secret);
    Ok(HttpResponse::Ok().json(v))
}

const TEAM_FIELDS: &[&str] = &[
    "name",
    "models",
    "tools",
    "rpm",
    "tpm",
    "max_parallel",
    "max_tokens",
    "max_queue_wait_ms",
    "budget_usd",
    "budget_period",
    "metadata",
];

async fn team_view(state: &AppState, t: &Team) -> Result<Value, HttpError> {
    let s = state
        .store
        .gov_standings(&t.subject(), t.limits.budget_period, now_ms())
        .await?;
    let mut v = serde_json::to_value(t).unwrap_or_default();
    v["object"] = json!("team");
    v["spend_usd"] = json!(usd(s.spend_micros));
    v["reserved_usd"] = json!(usd(s.reserved_micros));
    v["in_flight"] = json!(s.in_flight);
    v["period_start_ms"] = json!(s.period_start_ms);
    Ok(v)
}

fn apply_team(m: &Map<String, Value>, t: &mut Team) -> Result<(), HttpError> {
    unknown_fields(m, TEAM_FIELDS)?;
    apply_common(m, &mut t.name, &mut t.models, &mut t.tools, &mut t.limits)?;
    if let Some(md) = m.get("metadata") {
        t.metadata = md.clone();
    }
    Ok(())
}

/// `POST /admin/teams`.
pub async fn create_team(body: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let m = object(&body)?;
    let Some(name) = m.get("name").and_then(Value::as_str) else {
        return Err(invalid("`name` is required.", "name"));
    };
    let mut t = Team {
        id: format!("team_{}", &uuid::Uuid::now_v7().simple().to_string()[16..]),
        name: name.to_owned(),
        models: Vec::new(),
        tools: Vec::new(),
        limits: Limits::default(),
        metadata: Value::Null,
        created_ms: now_ms(),
        from_config: false,
    };
    apply_team(&m, &mut t)?;
    state.store.gov_put_team(&t).await?;
    state.keyring.reload(&state.store, true).await?;
    Ok(HttpResponse::Created().json(team_view(&state, &t).await?))
}

/// `GET /admin/teams`.
pub async fn list_teams(state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    state.keyring.reload(&state.store, false).await?;
    let mut data = Vec::new();
    for t in state.keyring.snapshot().teams.values() {
        data.push(team_view(&state, t).await?);
    }
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET|PATCH|DELETE /admin/teams/{id}`.
pub async fn team(
    req: actix_web::HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let id = path.into_inner();
    state.keyring.reload(&state.store, false).await?;
    let mut t = state
        .keyring
        .snapshot()
        .teams
        .get(&id)
        .cloned()
        .ok_or_else(|| not_found("team", &id))?;
    match *req.method() {
        actix_web::http::Method::PATCH => {
            apply_team(&object(&body)?, &mut t)?;
            state.store.gov_put_team(&t).await?;
        }
        actix_web::http::Method::DELETE => {
            if t.from_config {
                return Err(invalid(
                    format!("The team `{id}` is declared in the config file: remove it there."),
                    "id",
                ));
            }
            let snapshot = state.keyring.snapshot();
            let members = snapshot
                .keys
                .values()
                .filter(|k| k.team.as_deref() == Some(id.as_str()) && k.revoked_ms.is_none())
                .count();
            if members > 0 {
                return Err(invalid(
                    format!("The team `{id}` still has {members} live key(s): move or revoke them first."),
                    "id",
                ));
            }
            state.store.gov_delete_team(&id).await?;
            state.keyring.reload(&state.store, true).await?;
            return Ok(HttpResponse::Ok().json(json!({"id": id, "object": "team", "deleted": true})));
        }
        _ => return Ok(HttpResponse::Ok().json(team_view(&state, &t).await?)),
    }
    state.keyring.reload(&state.store, true).await?;
    Ok(HttpResponse::Ok().json(team_view(&state, &t).await?))
}

/// Days one spend query may cover.
const MAX_SPEND_DAYS: usize = 400;

/// Whether `d` is a real day, `YYYY-MM-DD` (it round-trips through the calendar).
fn valid_day(d: &str) -> bool {
    llmr_store::governance::days_between(d, d, 1)
        .first()
        .is_some_and(|back| back == d)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendQuery {
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

/// `GET /admin/spend?group_by=key|team|model|day&from=&to=` (days, UTC; default: today).
pub async fn spend(q: web::Query<SpendQuery>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let today = llmr_store::utc_day(now_ms());
    let (from, to) = (
        q.from.clone().unwrap_or_else(|| today.clone()),
        q.to.clone().unwrap_or(today),
    );
    for (v, p) in [(&from, "from"), (&to, "to")] {
        if !valid_day(v) {
            return Err(invalid(format!("`{p}` must be a day, YYYY-MM-DD."), p));
        }
    }
    let days = llmr_store::governance::days_between(&from, &to, MAX_SPEND_DAYS + 1).len();
    if days > MAX_SPEND_DAYS {
        return Err(invalid(format!("At most {MAX_SPEND_DAYS} days at once."), "to"));
    }
    let by = q.group_by.as_deref().unwrap_or("key");
    if !matches!(by, "key" | "team" | "model" | "day") {
        return Err(invalid("`group_by` must be key, team, model or day.", "group_by"));
    }
    let rows = state.store.gov_spend(&from, &to).await?;
    let mut groups: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
    for r in rows {
        let g = match by {
            "key" => r.key,
            "team" => r.team,
            "model" => r.model,
            _ => r.day,
        };
        let e = groups.entry(g).or_default();
        for (i, n) in [r.requests, r.input_tokens, r.output_tokens, r.spend_micros]
            .into_iter()
            .enumerate()
        {
            e[i] += n;
        }
    }
    let data: Vec<Value> = groups
        .into_iter()
        .map(|(g, [requests, input, output, micros])| {
            json!({by: g, "spend_usd": usd(micros), "requests": requests, "input_tokens": input, "output_tokens": output})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "group_by": by, "from": from, "to": to, "data": data})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsQuery {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    /// Records that arrived at or after this (unix ms).
    #[serde(default)]
    since_ms: Option<u64>,
    /// Records that arrived before this (unix ms).
    #[serde(default)]
    until_ms: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

impl RequestsQuery {
    fn keeps(&self, r: &RequestRecord) -> bool {
        self.key.as_ref().is_none_or(|k| &r.key == k)
            && self.team.as_ref().is_none_or(|t| r.team.as_ref() == Some(t))
            && self.model.as_ref().is_none_or(|m| &r.model == m)
            && self.status.is_none_or(|s| r.status == s)
            && self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.until_ms.is_none_or(|t| r.time_ms < t)
    }
}

/// `GET /admin/requests?key=&team=&model=&status=&since_ms=&until_ms=&limit=&before=&format=jsonl`: the request
/// log, newest first; `before` takes a record's `cursor`. Filters scan at most 10,000 records.
pub async fn requests(q: web::Query<RequestsQuery>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let jsonl = match q.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(_) => return Err(invalid("`format` must be json or jsonl.", "format")),
    };
    let limit = q.limit.unwrap_or(if jsonl { 10_000 } else { 100 }).clamp(1, 10_000);
    let (mut out, mut before, mut scanned) = (Vec::new(), q.before.clone(), 0usize);
    while out.len() < limit && scanned < 10_000 {
        let page = state.store.gov_requests(before.as_deref(), 500).await?;
        let Some(last) = page.last() else { break };
        // Newest first: past `since_ms`, nothing older can match.
        let past = q.since_ms.is_some_and(|t| last.time_ms < t);
        before = Some(last.cursor.clone());
        scanned += page.len();
        out.extend(page.into_iter().filter(|r| q.keeps(r)));
        if past {
            break;
        }
    }
    out.truncate(limit);
    if jsonl {
        let mut body = String::new();
        for r in &out {
            body.push_str(&serde_json::to_string(r).unwrap_or_default());
            body.push('\n');
        }
        return Ok(HttpResponse::Ok().content_type("application/x-ndjson").body(body));
    }
    let next = out.last().map(|r| r.cursor.clone());
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": out, "next_before": next})))
}
