//! The admin client verbs: `llmrouter keys create|list|show|revoke|rotate` and `llmrouter
//! spend`, calls to a running gateway's admin API (`/admin/keys`, `/admin/spend`) with
//! `Authorization: Bearer <server.admin_token>`. Not to be confused with [`crate::admin`], the
//! health and metrics listener of processes without the gateway.
//!
//! The command-line arguments are declared here (clap) so that turning them into request
//! bodies and query strings, and answers into tables, can be tested without a server. An
//! HTTP error answer (`{"error":{"message":…}}`) becomes [`CliError::Http`].

use llmr_protocol::limits::Period;
use std::time::Duration;

use awc::http::Method;
use serde_json::{Map, Value, json};

use crate::cli::CliError;

/// How long one admin call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the admin API is and its token (flattened into `keys` and `spend`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Admin API")]
pub struct AdminTarget {
    /// The gateway's URL.
    #[arg(long, global = true, env = "LLMR_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The admin API's bearer token (server.admin_token of the gateway).
    #[arg(long, global = true, env = "LLMR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// `llmrouter keys …`
// Parsed once per command line: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Creates a virtual key and prints it as JSON with its secret `key` (shown only once).
    Create(CreateArgs),
    /// Lists the keys as a table (id, name, team, spend, budget, rpm, revoked).
    List {
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints one key as JSON.
    Show { id: String },
    /// Revokes a key: it is refused from then on (its spend and log stay readable).
    Revoke { id: String },
    /// Gives a key a new secret, printed once in the JSON (`key`); the old one stops working.
    Rotate { id: String },
}

/// `llmrouter keys create`: every field but `--name` is left out of the request when unset.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CreateArgs {
    /// A name for people to recognise the key by.
    #[arg(long)]
    pub name: String,
    /// The team it belongs to (its limits apply too).
    #[arg(long)]
    pub team: Option<String>,
    /// Models and groups it may use (globs, comma-separated); none = all.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub models: Vec<String>,
    /// MCP tools it may list and call (globs, comma-separated); none = all.
    #[arg(long, value_delimiter = ',', value_name = "X,Y")]
    pub tools: Vec<String>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    pub max_parallel: Option<u64>,
    /// The longest its requests may be expected to wait for their pool before a 503
    /// `overloaded` (when tighter than the server's `max_queue_wait_ms`).
    #[arg(long, value_name = "MS")]
    pub max_queue_wait_ms: Option<u64>,
    /// Most it may spend per budget period, in US dollars.
    #[arg(long, value_parser = parse_usd, value_name = "USD")]
    pub budget_usd: Option<f64>,
    /// The period the budget is counted over (the gateway's default: total).
    #[arg(long, value_parser = parse_period, value_name = "day|week|month|total")]
    pub budget_period: Option<Period>,
    /// When it stops working (RFC 3339, e.g. 2026-01-31T00:00:00Z; the gateway checks it).
    #[arg(long, value_name = "RFC3339")]
    pub expires_at: Option<String>,
    /// Metadata kept with the key (string values; repeat or list several).
    #[arg(long, num_args = 1.., value_name = "K=V")]
    pub metadata: Vec<String>,
}

/// What spend rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    Key,
    Team,
    Model,
    Day,
}

impl GroupBy {
    const ALL: [GroupBy; 4] = [GroupBy::Key, GroupBy::Team, GroupBy::Model, GroupBy::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::Team => "team",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        }
    }
}

/// `llmrouter spend`
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SpendArgs {
    /// How to group the rows (the gateway's default when unset).
    #[arg(long, value_enum)]
    pub group_by: Option<GroupBy>,
    /// The first day counted (UTC).
    #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
    pub from: Option<String>,
    /// The last day counted (UTC).
    #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
    pub to: Option<String>,
    /// Print the admin API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A command-line value the parsers below refuse (clap prints it after the argument's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    #[error("`{0}` is not a date of the form YYYY-MM-DD")]
    Date(String),
    #[error("`{0}` is not day, week, month or total")]
    Period(String),
    #[error("`{0}` is not an amount of dollars (a number, 0 or more)")]
    Usd(String),
}

/// A `YYYY-MM-DD` date (month 1–12, day 1–31), as clap's value parser.
pub fn parse_date(s: &str) -> Result<String, BadValue> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let well_formed = b.len() == 10 && b[4] == b'-' && b[7] == b'-' && digits(0..4) && digits(5..7) && digits(8..10);
    let in_range =
        well_formed && matches!(s[5..7].parse::<u8>(), Ok(1..=12)) && matches!(s[8..10].parse::<u8>(), Ok(1..=31));
    if in_range {
        Ok(s.to_owned())
    } else {
        Err(BadValue::Date(s.to_owned()))
    }
}

/// A budget period, as the gateway names it.
pub fn parse_period(s: &str) -> Result<Period, BadValue> {
    Period::parse(s).ok_or_else(|| BadValue::Period(s.to_owned()))
}

/// An amount of dollars: a finite number, not negative.
pub fn parse_usd(s: &str) -> Result<f64, BadValue> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(BadValue::Usd(s.to_owned())),
    }
}

/// `--metadata k=v …` as a JSON object (a repeated key keeps its last value).
pub fn metadata(pairs: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut out = Map::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_owned(), Value::String(v.to_owned()));
            }
            _ => return Err(CliError::Usage(format!("--metadata takes KEY=VALUE, got `{pair}`"))),
        }
    }
    Ok(out)
}

/// The body of `POST /admin/keys`: the fields given, the others left out.
pub fn create_body(args: &CreateArgs) -> Result<Value, CliError> {
    if args.name.trim().is_empty() {
        return Err(CliError::Usage("--name must not be empty".into()));
    }
    let mut body = Map::new();
    body.insert("name".into(), json!(args.name));
    let mut put = |field: &str, value: Option<Value>| {
        if let Some(v) = value {
            body.insert(field.into(), v);
        }
    };
    let list = |l: &[String]| {
        let l: Vec<&str> = l.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        (!l.is_empty()).then(|| json!(l))
    };
    put("team", args.team.as_ref().map(|t| json!(t)));
    put("models", list(&args.models));
    put("tools", list(&args.tools));
    put("rpm", args.rpm.map(|v| json!(v)));
    put("tpm", args.tpm.map(|v| json!(v)));
    put("max_parallel", args.max_parallel.map(|v| json!(v)));
    put("max_queue_wait_ms", args.max_queue_wait_ms.map(|v| json!(v)));
    put("budget_usd", args.budget_usd.map(|v| json!(v)));
    put("budget_period", args.budget_period.map(|p| json!(p.as_str())));
    put("expires_at", args.expires_at.as_ref().map(|t| json!(t)));
    let meta = metadata(&args.metadata)?;
    put("metadata", (!meta.is_empty()).then_some(Value::Object(meta)));
    Ok(Value::Object(body))
}

/// The path and query of `GET /admin/spend` (dates are checked, so nothing needs escaping).
pub fn spend_path(args: &SpendArgs) -> String {
    let params: Vec<String> = [
        ("group_by", args.group_by.map(|g| g.as_str().to_owned())),
        ("from", args.from.clone()),
        ("to", args.to.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect();
    if params.is_empty() {
        "/admin/spend".into()
    } else {
        format!("/admin/spend?{}", params.join("&"))
    }
}

/// `/admin/keys/{id}` and what follows, the id percent-encoded.
pub fn key_path(id: &str, rest: &str) -> String {
    let mut seg = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            seg.push(char::from(b));
        } else {
            seg.push_str(&format!("%{b:02X}"));
        }
    }
    format!("/admin/keys/{seg}{rest}")
}

/// Columns aligned with two spaces between them, a header line first.
pub fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// A field of a row, at its top level or under `limits`.
fn field<'a>(row: &'a Value, name: &str) -> &'a Value {
    match row.get(name) {
        Some(v) if !v.is_null() => v,
        _ => row.get("limits").and_then(|l| l.get(name)).unwrap_or(&Value::Null),
    }
}

/// A cell: strings as they are, absent or null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Dollars with up to six decimals, trailing zeros dropped (`1.5`, `0.000012`, `3`).
pub fn usd_cell(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => {
            let s = format!("{x:.6}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        None => cell(v),
    }
}

/// Whether a key is revoked: `revoked: true`, or a `revoked_ms`/`revoked_at` time.
fn revoked(row: &Value) -> bool {
    row.get("revoked").and_then(Value::as_bool).unwrap_or(false)
        || ["revoked_ms", "revoked_at"]
            .iter()
            .any(|f| row.get(*f).is_some_and(|v| !v.is_null()))
}

/// The `data` rows of a list answer.
fn rows(answer: &Value) -> Result<&Vec<Value>, CliError> {
    answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| CliError::Rpc(format!("the admin API answered no `data` list: {answer}")))
}

/// `GET /admin/keys`'s answer as a table.
pub fn keys_table(answer: &Value) -> Result<String, CliError> {
    let header = ["id", "name", "team", "spend_usd", "budget_usd", "rpm", "revoked"];
    let table: Vec<Vec<String>> = rows(answer)?
        .iter()
        .map(|k| {
            vec![
                cell(field(k, "id")),
                cell(field(k, "name")),
                cell(field(k, "team")),
                usd_cell(field(k, "spend_usd")),
                usd_cell(field(k, "budget_usd")),
                cell(field(k, "rpm")),
                if revoked(k) { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    Ok(format_table(&header, &table))
}

/// `GET /admin/spend`'s answer as a table. Its first column is what the rows are grouped
/// by: `group_by`, else the first of key, team, model and day the rows have (none: no column).
pub fn spend_table(answer: &Value, group_by: Option<GroupBy>) -> Result<String, CliError> {
    let data = rows(answer)?;
    let group = group_by.or_else(|| {
        GroupBy::ALL
            .into_iter()
            .find(|g| data.iter().any(|r| r.get(g.as_str()).is_some()))
    });
    let numbers = ["spend_usd", "requests", "input_tokens", "output_tokens"];
    let header: Vec<&str> = group.map(GroupBy::as_str).into_iter().chain(numbers).collect();
    let table: Vec<Vec<String>> = data
        .iter()
        .map(|r| {
            let first = group.map(|g| cell(field(r, g.as_str())));
            let spend = usd_cell(field(r, "spend_usd"));
            let counts = numbers[1..].iter().map(|n| cell(field(r, n)));
            first.into_iter().chain(std::iter::once(spend)).chain(counts).collect()
        })
        .collect();
    Ok(format_table(&header, &table))
}

/// The error an HTTP error answer stands for: its `error.message` (or `error` when a
/// string, else the body, else the status).
pub fn http_error(status: u16, body: &[u8]) -> CliError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = match error {
        Some(Value::String(s)) => s.clone(),
        Some(e) => e
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| e.to_string(), str::to_owned),
        None => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let message = if message.is_empty() {
        "the admin API gave no message".to_owned()
    } else {
        message
    };
    CliError::Http { status, message }
}

/// JSON pretty-printed.
fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A client of one gateway's admin API.
struct Api {
    client: awc::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(target: &AdminTarget) -> Result<Api, CliError> {
        let token = target.admin_token.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(CliError::Usage(
                "the admin API needs its token: --admin-token or LLMR_ADMIN_TOKEN (server.admin_token of the gateway)"
                    .into(),
            ));
        };
        Ok(Api {
            client: awc::Client::builder().timeout(TIMEOUT).finish(),
            base: target.server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// One call: its JSON answer (null when the answer is empty) or the error it reports.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let connect = |e: &dyn std::fmt::Display| CliError::Connect {
            url: url.clone(),
            message: e.to_string(),
        };
        let req = self
            .client
            .request(method, &url)
            .insert_header(("authorization", format!("Bearer {}", self.token)))
            .insert_header(("accept", "application/json"));
        let sent = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| connect(&e))?;
        let status = resp.status();
        let bytes = resp.body().limit(64 << 20).await.map_err(|e| connect(&e))?;
        if !status.is_success() {
            return Err(http_error(status.as_u16(), &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|_| {
            CliError::Rpc(format!(
                "HTTP {status} from {url} is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            ))
        })
    }
}

/// Runs `llmrouter keys …` and returns what to print.
pub async fn keys(target: &AdminTarget, command: KeysCommand) -> Result<String, CliError> {
    let api = Api::new(target)?;
    match command {
        KeysCommand::Create(args) => {
            let body = create_body(&args)?;
            Ok(pretty(&api.call(Method::POST, "/admin/keys", Some(&body)).await?))
        }
        KeysCommand::List { json } => {
            let answer = api.call(Method::GET, "/admin/keys", None).await?;
            if json { Ok(pretty(&answer)) } else { keys_table(&answer) }
        }
        KeysCommand::Show { id } => Ok(pretty(&api.call(Method::GET, &key_path(&id, ""), None).await?)),
        KeysCommand::Revoke { id } => {
            let answer = api.call(Method::DELETE, &key_path(&id, ""), None).await?;
            Ok(if answer.is_null() {
                format!("revoked {id}")
            } else {
                pretty(&answer)
            })
        }
        KeysCommand::Rotate { id } => {
            let path = key_path(&id, "/rotate");
            Ok(pretty(&api.call(Method::POST, &path, None).await?))
        }
    }
}

/// Runs `llmrouter spend` and returns what to print.
pub async fn spend(target: &AdminTarget, args: &SpendArgs) -> Result<String, CliError> {
    let answer = Api::new(target)?.call(Method::GET, &spend_path(args), None).await?;
    if args.json {
        Ok(pretty(&answer))
    } else {
        spend_table(&answer, args.group_by)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The verbs as `main` declares them, to parse command lines in tests.
    #[derive(clap::Parser)]
    enum Verb {
        Keys {
            #[command(subcommand)]
            command: KeysCommand,
            #[command(flatten)]
            target: AdminTarget,
        },
        Spend {
            #[command(flatten)]
            args: SpendArgs,
            #[command(flatten)]
            target: AdminTarget,
        },
    }

    fn create(line: &str) -> Result<Value, CliError> {
        let words = std::iter::once("t").chain(line.split_whitespace());
        match Verb::try_parse_from(words).map_err(|e| CliError::Usage(e.to_string()))? {
            Verb::Keys {
                command: KeysCommand::Create(args),
                ..
            } => create_body(&args),
            _ => Err(CliError::Usage("not keys create".into())),
        }
    }

    #[test]
    fn create_sends_only_what_is_given() {
        assert_eq!(create("keys create --name ci").unwrap(), json!({"name": "ci"}));
        let full = "keys create --name ci --team ml --models gpt-4o,claude-* --tools calculator \
                    --rpm 60 --tpm 10000 --max-parallel 4 --max-queue-wait-ms 2000 --budget-usd 12.5 --budget-period month \
                    --expires-at 2026-01-31T00:00:00Z --metadata owner=ana env=prod --metadata note=a=b";
        assert_eq!(
            create(full).unwrap(),
            json!({"name": "ci", "team": "ml", "models": ["gpt-4o", "claude-*"], "tools": ["calculator"],
                   "rpm": 60, "tpm": 10000, "max_parallel": 4, "max_queue_wait_ms": 2000, "budget_usd": 12.5, "budget_period": "month",
                   "expires_at": "2026-01-31T00:00:00Z",
                   "metadata": {"owner": "ana", "env": "prod", "note": "a=b"}})
        );
    }

    #[test]
    fn create_refuses_bad_arguments() {
        assert!(create("keys create").is_err(), "--name is required");
        assert!(create("keys create --name ci --budget-usd -1").is_err());
        assert!(create("keys create --name ci --budget-usd NaN").is_err());
        assert!(create("keys create --name ci --budget-period year").is_err());
        assert!(create("keys create --name ci --rpm lots").is_err());
        let no_equals = create("keys create --name ci --metadata owner").unwrap_err();
        assert!(no_equals.to_string().contains("KEY=VALUE"), "{no_equals}");
        assert!(create("keys create --name ci --metadata =v").is_err());
        let blank = CreateArgs {
            name: " ".into(),
            ..CreateArgs::default()
        };
        assert!(create_body(&blank).is_err());
    }

    #[test]
    fn the_target_comes_from_options_on_either_side_of_the_subcommand() {
        let parse = |words: &[&str]| match Verb::try_parse_from(words).unwrap() {
            Verb::Keys { target, .. } | Verb::Spend { target, .. } => target,
        };
        let t = parse(&["t", "keys", "--server", "http://gw:9", "list", "--admin-token", "s3"]);
        assert_eq!(
            (t.server.as_str(), t.admin_token.as_deref()),
            ("http://gw:9", Some("s3"))
        );
        let t = parse(&["t", "spend", "--admin-token", "s3", "--json"]);
        assert_eq!(t.admin_token.as_deref(), Some("s3"));
        let missing = Api::new(&AdminTarget {
            server: "http://x".into(),
            admin_token: Some(" ".into()),
        });
        assert!(matches!(missing, Err(CliError::Usage(m)) if m.contains("LLMR_ADMIN_TOKEN")));
    }

    #[test]
    fn spend_query_and_dates() {
        assert_eq!(spend_path(&SpendArgs::default()), "/admin/spend");
        let args = SpendArgs {
            group_by: Some(GroupBy::Model),
            from: Some("2025-06-01".into()),
            to: Some("2025-06-30".into()),
            json: false,
        };
        assert_eq!(
            spend_path(&args),
            "/admin/spend?group_by=model&from=2025-06-01&to=2025-06-30"
        );
        let only_to = SpendArgs {
            to: Some("2025-06-30".into()),
            ..SpendArgs::default()
        };
        assert_eq!(spend_path(&only_to), "/admin/spend?to=2025-06-30");
        assert_eq!(parse_date("2025-12-31").unwrap(), "2025-12-31");
        for bad in [
            "2025-13-01",
            "2025-00-10",
            "2025-01-32",
            "2025-1-1",
            "20250101",
            "2025/01/01",
            "",
            "2025-01-01x",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert!(Verb::try_parse_from(["t", "spend", "--from", "yesterday"]).is_err());
        assert!(Verb::try_parse_from(["t", "spend", "--group-by", "provider"]).is_err());
    }

    #[test]
    fn key_ids_are_escaped_in_paths() {
        assert_eq!(key_path("key_01H-x.y~", ""), "/admin/keys/key_01H-x.y~");
        assert_eq!(key_path("a/b c?", "/rotate"), "/admin/keys/a%2Fb%20c%3F/rotate");
    }

    #[test]
    fn keys_are_listed_as_a_table() {
        let answer = json!({"object": "list", "data": [
            {"id": "k1", "name": "ci", "team": "ml", "spend_usd": 1.25, "budget_usd": 10.0, "rpm": 60},
            {"id": "k22", "name": "old", "spend_usd": 0.000012, "revoked_ms": 1_700_000_000_000u64},
            {"id": "k3", "name": "nested", "limits": {"rpm": 5, "budget_usd": 2}, "revoked": false},
        ]});
        let expected = "\
id   name    team  spend_usd  budget_usd  rpm  revoked
k1   ci      ml    1.25       10          60   no
k22  old     -     0.000012   -           -    yes
k3   nested  -     -          2           5    no";
        assert_eq!(keys_table(&answer).unwrap(), expected);
        let empty = keys_table(&json!({"object": "list", "data": []})).unwrap();
        assert_eq!(empty, "id  name  team  spend_usd  budget_usd  rpm  revoked");
        assert!(keys_table(&json!({"keys": []})).is_err());
    }

    #[test]
    fn spend_is_listed_as_a_table() {
        let answer = json!({"object": "list", "data": [
            {"team": "ml", "spend_usd": 3.5, "requests": 12, "input_tokens": 1000, "output_tokens": 250},
            {"team": null, "spend_usd": 0, "requests": 1, "input_tokens": 3, "output_tokens": 4},
        ]});
        let expected = "\
team  spend_usd  requests  input_tokens  output_tokens
ml    3.5        12        1000          250
-     0          1         3             4";
        assert_eq!(spend_table(&answer, None).unwrap(), expected);
        assert_eq!(spend_table(&answer, Some(GroupBy::Team)).unwrap(), expected);
        let totals = json!({"data": [{"spend_usd": 1, "requests": 2, "input_tokens": 3, "output_tokens": 4}]});
        let expected = "spend_usd  requests  input_tokens  output_tokens\n1          2         3             4";
        assert_eq!(spend_table(&totals, None).unwrap(), expected);
    }

    #[test]
    fn error_answers_become_their_message() {
        let e = http_error(
            403,
            br#"{"error":{"message":"The admin API is off.","type":"forbidden"}}"#,
        );
        assert!(matches!(&e, CliError::Http { status: 403, message } if message == "The admin API is off."));
        assert_eq!(e.to_string(), "The admin API is off. (HTTP 403)");
        let e = http_error(404, br#"{"error":"no such key"}"#);
        assert_eq!(e.to_string(), "no such key (HTTP 404)");
        assert_eq!(http_error(502, b"bad gateway\n").to_string(), "bad gateway (HTTP 502)");
        assert_eq!(
            http_error(500, b"").to_string(),
            "the admin API gave no message (HTTP 500)"
        );
    }

    /// A stand-in admin API: answers each request with what it saw (method, path and query,
    /// authorization, body), or an error for the key `gone`.
    async fn echo(req: actix_web::HttpRequest, body: actix_web::web::Bytes) -> actix_web::HttpResponse {
        if req.path().contains("gone") {
            return actix_web::HttpResponse::NotFound().json(json!({"error": {"message": "no key gone"}}));
        }
        if req.method() == Method::DELETE {
            return actix_web::HttpResponse::NoContent().finish();
        }
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok());
        let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let uri = req.uri().to_string();
        let row = json!({"id": uri, "name": req.method().as_str(), "team": auth, "sent": sent});
        actix_web::HttpResponse::Ok().json(json!({"object": "list", "data": [row], "sent": sent}))
    }

    #[actix_rt::test]
    async fn verbs_call_the_admin_api() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = || actix_web::App::new().default_service(actix_web::web::to(echo));
        let server = actix_web::HttpServer::new(app)
            .workers(1)
            .listen(listener)
            .unwrap()
            .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        let target = AdminTarget {
            server: format!("http://127.0.0.1:{port}/"),
            admin_token: Some("s3cret".into()),
        };
        let args = CreateArgs {
            name: "ci".into(),
            rpm: Some(5),
            ..CreateArgs::default()
        };
        let created: Value = serde_json::from_str(&keys(&target, KeysCommand::Create(args)).await.unwrap()).unwrap();
        assert_eq!(created["data"][0]["id"], "/admin/keys");
        assert_eq!(created["data"][0]["name"], "POST");
        assert_eq!(created["data"][0]["team"], "Bearer s3cret");
        assert_eq!(created["sent"], json!({"name": "ci", "rpm": 5}));
        let table = keys(&target, KeysCommand::List { json: false }).await.unwrap();
        assert!(
            table.starts_with("id  ") && table.contains("/admin/keys  GET"),
            "{table}"
        );
        let rotated = keys(&target, KeysCommand::Rotate { id: "k1".into() }).await.unwrap();
        assert!(rotated.contains(r#""id": "/admin/keys/k1/rotate""#), "{rotated}");
        let revoked = keys(&target, KeysCommand::Revoke { id: "k1".into() }).await.unwrap();
        assert_eq!(revoked, "revoked k1");
        let gone = keys(&target, KeysCommand::Show { id: "gone".into() })
            .await
            .unwrap_err();
        assert_eq!(gone.to_string(), "no key gone (HTTP 404)");
        let args = SpendArgs {
            group_by: Some(GroupBy::Day),
            json: true,
            ..SpendArgs::default()
        };
        let spent = spend(&target, &args).await.unwrap();
        assert!(spent.contains(r#""id": "/admin/spend?group_by=day""#), "{spent}");
        handle.stop(false).await;
        let refused = keys(&target, KeysCommand::List { json: true }).await.unwrap_err();
        assert!(matches!(refused, CliError::Connect { .. }), "{refused}");
    }
}
