//! Tool names shared by mcp-tools (which serves them) and the router's tool loop (which
//! offers them to models as OpenAI functions): the built-ins, and the one rule that turns
//! a remote server's `{namespace}_{name}` into a valid OpenAI function name.

/// Searches the visible tools by name, keywords and description.
pub const TOOL_SEARCH: &str = "tool_search";
/// Calls any tool (hidden or on demand included) by name.
pub const EXECUTE_TOOL: &str = "execute_tool";
/// Runs a JavaScript snippet in the sandbox.
pub const EXECUTE_CODE: &str = "execute_code";
/// Every built-in tool.
pub const BUILTINS: [&str; 3] = [TOOL_SEARCH, EXECUTE_TOOL, EXECUTE_CODE];

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
