//! Whether whoever waits for a job's answer is still there. A gateway (or router, responses
//! or mcp-tools instance) that dies without a word — SIGKILL, a lost node — cancels nothing;
//! its heartbeats stop. One task per worker reads the live instances every second; a running
//! job whose caller was seen alive and has been missing for 3 s (longer than a heartbeat
//! period, so a Redis restart that lost the heartbeats declares nobody dead) aborts its
//! upstream call.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use llmr_store::Store;

/// How often the live instances are read.
const EVERY: Duration = Duration::from_secs(1);

/// How long a caller must stay missing before it counts as gone: longer than a heartbeat
/// period (2 s), so that after a Redis restart that lost the heartbeats every live caller has
/// beaten again before anyone is declared dead.
const GRACE: Duration = Duration::from_secs(3);

/// The reply streams' suffixes of callers other than gateways (their heartbeat has none).
const SUFFIXES: [&str; 3] = ["-loop", "-responses", "-mcp"];

#[derive(Default)]
struct State {
    alive: HashSet<String>,
    /// Every instance seen alive: only those can be known to have died.
    seen: HashSet<String>,
    /// Seen instances missing from the live ones, since when.
    missing_since: HashMap<String, Instant>,
}

impl State {
    fn update(&mut self, alive: HashSet<String>, now: Instant) {
        self.seen.extend(alive.iter().cloned());
        self.missing_since.retain(|who, _| !alive.contains(who));
        for who in self.seen.iter().filter(|w| !alive.contains(*w)) {
            self.missing_since.entry(who.clone()).or_insert(now);
        }
        self.alive = alive;
    }
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
                    let alive = list.into_iter().map(|a| a.instance).collect();
                    state.borrow_mut().update(alive, Instant::now());
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        (callers, task)
    }

    /// Whether the owner of `reply_to` was seen alive and has been missing for `GRACE`.
    pub fn gone(&self, reply_to: &str) -> bool {
        self.0
            .borrow()
            .missing_since
            .get(instance(reply_to))
            .is_some_and(|t| t.elapsed() >= GRACE)
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
        let long_ago = Instant::now() - GRACE;
        c.0.borrow_mut().update(HashSet::from(["gw-1".to_owned()]), long_ago);
        assert!(!c.gone("gw-1"), "alive");
        c.0.borrow_mut().update(HashSet::new(), long_ago);
        assert!(c.gone("gw-1"), "seen, then missing for the grace period");
        assert!(!c.gone("never-seen"), "unknown callers are not declared dead");
        c.0.borrow_mut().update(HashSet::new(), Instant::now());
        assert!(c.gone("gw-1"), "missing since the first time, not the last");
        c.0.borrow_mut()
            .update(HashSet::from(["gw-1".to_owned()]), Instant::now());
        c.0.borrow_mut().update(HashSet::new(), Instant::now());
        assert!(!c.gone("gw-1"), "back, then missing only briefly (a Redis restart)");
    }
}
