//! Tool names shared by mcp-tools (which serves them) and the router's tool loop (which
//! offers them to models as OpenAI functions): the built-ins, and the one rule that turns
//! a remote server's `{namespace}_{name}` into a valid OpenAI function name. And the tool
//! catalog as operators see it ([`Inventory`]), which mcp-tools answers the gateway's admin
//! API with.

use serde::{Deserialize, Serialize};

/// Searches the visible tools by name, keywords and description.
pub const TOOL_SEARCH: &str = "tool_search";
/// Calls any tool (hidden or on demand included) by name.
pub const EXECUTE_TOOL: &str = "execute_tool";
/// Runs a JavaScript snippet in the sandbox.
pub const EXECUTE_CODE: &str = "execute_code";
/// Every built-in tool.
pub const BUILTINS: [&str; 3] = [TOOL_SEARCH, EXECUTE_TOOL, EXECUTE_CODE];

/// Where a tool comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A JavaScript file of `scripting.tools_path`.
    File,
    /// Served by mcp-tools itself (`tool_search`, `execute_tool`, `execute_code`).
    Builtin,
    /// A remote MCP server's, under its namespace.
    Remote,
}

/// One tool of the catalog, whatever its visibility, or a tool file that did not load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolEntry {
    pub name: String,
    pub description: String,
    pub source: Source,
    /// The file's path (`file`), the server's namespace (`remote`); none for built-ins.
    pub origin: Option<String>,
    /// `visible`, `hidden` or `ondemand`.
    pub visibility: String,
    /// Why a tool file did not load (it is not served); none for a served tool.
    pub error: Option<String>,
}

/// What one instance of mcp-tools knows of a remote MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteState {
    pub namespace: String,
    /// Its URL, credentials and query values redacted.
    pub url: String,
    /// `ok` (its list was fetched), `error` (the last fetch failed: `error` says why), or
    /// `unknown` (not asked yet).
    pub state: String,
    pub error: Option<String>,
    /// Tools served from it (the last good list while it is down).
    pub tools: u64,
}

/// The tool catalog as operators see it: every tool with its source, tool files that did
/// not load, and the remote servers' state — as the mcp-tools instance that answered knows
/// them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub tools: Vec<ToolEntry>,
    pub remote_servers: Vec<RemoteState>,
}

/// The longest function name OpenAI accepts.
pub const MAX_FUNCTION_NAME: usize = 64;

/// Whether `name` is a built-in tool.
pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

/// The function name of tool `name` of the remote server `namespace`: `{namespace}_{name}`
/// with every character outside `[A-Za-z0-9_-]` replaced by `_`, cut to 64 characters.
/// A name that had to be cut ends in 8 hex digits of a hash of the whole name, so two long
/// names that share their first 64 characters stay apart.
pub fn function_name(namespace: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let full = format!("{}_{}", clean(namespace), clean(name));
    if full.len() <= MAX_FUNCTION_NAME {
        return full;
    }
    let tag = format!("_{:08x}", fnv1a(full.as_bytes()) as u32);
    let mut out = full;
    out.truncate(MAX_FUNCTION_NAME - tag.len());
    out.push_str(&tag);
    out
}

/// Whether `function` names a tool of remote server `namespace`.
pub fn in_namespace(function: &str, namespace: &str) -> bool {
    function.len() > namespace.len() && function.starts_with(namespace) && function.as_bytes()[namespace.len()] == b'_'
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_joined_and_cleaned() {
        assert_eq!(function_name("gh", "search.issues"), "gh_search_issues");
        assert_eq!(function_name("a b", "x/y"), "a_b_x_y");
    }

    #[test]
    fn long_names_are_cut_to_64_and_stay_distinct() {
        let long = "a".repeat(80);
        let a = function_name("ns", &format!("{long}_one"));
        let b = function_name("ns", &format!("{long}_two"));
        assert_eq!(a.len(), MAX_FUNCTION_NAME);
        assert_eq!(b.len(), MAX_FUNCTION_NAME);
        assert_ne!(a, b);
        assert!(in_namespace(&a, "ns"));
        assert_eq!(a, function_name("ns", &format!("{long}_one")), "stable");
    }

    #[test]
    fn namespaces_match_on_the_separator() {
        assert!(in_namespace("gh_x", "gh"));
        assert!(!in_namespace("ghx_y", "gh"));
        assert!(!in_namespace("gh", "gh"));
    }
}
