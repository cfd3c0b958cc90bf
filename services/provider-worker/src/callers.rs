//! Whether whoever waits for a job's answer is still there. A gateway (or router, responses
//! or mcp-tools instance) that dies without a word — SIGKILL, a lost node — cancels nothing;
//! its heartbeats stop. One task per worker reads the live instances every second; a running
//! job whose caller was seen alive and is no longer aborts its upstream call.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use llmr_store::Store;

/// How often the live instances are read.
const EVERY: Duration = Duration::from_secs(1);

/// The reply streams' suffixes of callers other than gateways (their heartbeat has none).
const SUFFIXES: [&str; 3] = ["-loop", "-responses", "-mcp"];

#[derive(Default)]
struct State {
    alive: HashSet<String>,
    /// Every instance seen alive: only those can be known to have died.
    seen: HashSet<String>,
}

/// The live callers, shared by a worker's jobs.
#[derive(Clone, Default)]
pub struct Callers(Rc<RefCell<State>>);

/// The heartbeat instance of a reply stream's owner.
fn instance(reply_to: &str) -> &str {
    SUFFIXES
        .iter()
        .find_map(|s| reply_to.strip_suffix(s))
        .unwrap_or(reply_to)
}

impl Callers {
    /// Starts watching `store`'s heartbeats (on the current local task set); stops with the
    /// returned handle.
    pub fn watch(store: Store) -> (Callers, tokio::task::JoinHandle<()>) {
        let callers = Callers::default();
        let state = callers.0.clone();
        let task = tokio::task::spawn_local(async move {
            loop {
                // A failed read (Redis away) leaves the last known state: nobody is declared dead.
                if let Ok(list) = store.alive().await {
                    let mut st = state.borrow_mut();
                    st.alive = list.into_iter().map(|a| a.instance).collect();
                    let alive: Vec<String> = st.alive.iter().cloned().collect();
                    st.seen.extend(alive);
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        (callers, task)
    }

    /// Whether the owner of `reply_to` was seen alive and is not any more.
    pub fn gone(&self, reply_to: &str) -> bool {
        let st = self.0.borrow();
        let who = instance(reply_to);
        st.seen.contains(who) && !st.alive.contains(who)
    }

    /// Resolves once the owner of `reply_to` is gone (never, while it lives).
    pub async fn until_gone(&self, reply_to: &str) {
        loop {
            tokio::time::sleep(EVERY).await;
            if self.gone(reply_to) {
                return;
            }
        }
    }
}

/// The watching task; stops when dropped.
pub struct Watching(pub tokio::task::JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_streams_map_to_their_owners_heartbeat() {
        assert_eq!(instance("gw-1"), "gw-1");
        assert_eq!(instance("r-7-loop"), "r-7");
        assert_eq!(instance("x-responses"), "x");
        let c = Callers::default();
        c.0.borrow_mut().seen.insert("gw-1".into());
        assert!(c.gone("gw-1"), "seen, then not alive");
        assert!(!c.gone("never-seen"), "unknown callers are not declared dead");
        c.0.borrow_mut().alive.insert("gw-1".into());
        assert!(!c.gone("gw-1"));
    }
}
