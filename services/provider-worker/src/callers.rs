//! Whether whoever waits for a job's answer is still there. A gateway (or router tool loop,
//! responses or mcp-tools instance) that dies without a word — SIGKILL, a lost node —
//! cancels nothing; its heartbeats stop. One task per worker reads the live instances every
//! 500 ms; a running job whose caller was seen alive and is then missing from two reads in a
//! row aborts its upstream call at once (the jobs wait on the reads, not on a timer of their
//! own).
//!
//! # Death to abort, worst case: 2.5 s
//!
//! Every instance beats every 500 ms ([`llmr_store::HEARTBEAT_EVERY`]), and a beat lives
//! 1.5 s, on Redis's clock. A caller that dies just after a beat is in the live set for
//! 1.5 s more; the first read to miss it comes at most 0.5 s later (2.0 s), the second
//! 0.5 s after that (2.5 s), and the job then drops its upstream connection. So 2.5 s plus a
//! Redis round trip and the close; at best 1.5 s, 2.0 s on average (measured: 2.0–2.6 s until
//! the upstream saw the last of ten connections closed, `llmr-bench --dead-callers`). A live
//! caller is declared dead only when none of its beats got through for 2 s (four beats in a
//! row lost or late). The cost: one small write per instance and one read per worker every
//! 500 ms.
//!
//! # Missing heartbeats that mean nothing
//!
//! - Redis restarted without its data (or failed over to a replica that never had it): every
//!   heartbeat is gone at once. The store's heartbeat epoch changed with them
//!   ([`llmr_store::Live::epoch`]); on a new epoch nobody is declared dead for 10 s, time for
//!   every live caller to reconnect and beat again. A caller that died meanwhile is declared
//!   dead once those 10 s are over (it stays missing).
//! - Redis stalled (`CLIENT PAUSE`, a long fork) or this worker's own reads were late: the
//!   worker heartbeats too, so a read that misses the worker's own beat is not trusted, and
//!   judges nobody (a worker whose own beats keep failing declares nobody dead: it fails
//!   safe, and jobs then end with their upstream call or their deadline).
//! - A read that fails (Redis away) changes nothing.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use llmr_store::{Alive, Live, Store};
use tokio::sync::Notify;

/// How often the live instances are read.
const EVERY: Duration = Duration::from_millis(500);

/// How many reads in a row must miss a caller seen alive before it counts as gone.
const MISSED_READS: u32 = 2;

/// After the store lost its heartbeats (a new epoch), nobody is declared dead for this long.
const AFTER_RESTART: Duration = Duration::from_secs(10);

/// The reply streams' suffixes of callers other than gateways (their heartbeat has none).
const SUFFIXES: [&str; 3] = ["-loop", "-responses", "-mcp"];

#[derive(Default)]
struct State {
    /// Every instance seen alive: only those can be known to have died.
    seen: HashSet<String>,
    /// Seen instances missing from the live ones, and from how many reads in a row.
    missed: HashMap<String, u32>,
    /// The heartbeats' epoch at the last read.
    epoch: Option<String>,
    /// Nobody is declared dead before this (set when the epoch changed).
    quiet_until: Option<Instant>,
}

impl State {
    /// Takes one read of the live instances; `me` is this worker's own heartbeat, if it beats.
    fn update(&mut self, live: Live, me: Option<&Alive>, now: Instant) {
        if self.epoch.as_ref().is_some_and(|e| *e != live.epoch) {
            // The store lost every heartbeat: who is missing says nothing until they beat again.
            self.missed.clear();
            self.quiet_until = Some(now + AFTER_RESTART);
        }
        self.epoch = Some(live.epoch);
        if me.is_some_and(|m| !live.alive.contains(m)) {
            return; // our own beat is missing: a stale read, judge nobody
        }
        let alive: HashSet<String> = live.alive.into_iter().map(|a| a.instance).collect();
        self.seen.extend(alive.iter().cloned());
        self.missed.retain(|who, _| !alive.contains(who));
        for who in self.seen.iter().filter(|w| !alive.contains(*w)) {
            *self.missed.entry(who.clone()).or_insert(0) += 1;
        }
    }

    fn gone(&self, instance: &str, now: Instant) -> bool {
        if self.quiet_until.is_some_and(|q| now < q) {
            return false;
        }
        self.missed.get(instance).is_some_and(|n| *n >= MISSED_READS)
    }
}

#[derive(Default)]
struct Shared {
    state: RefCell<State>,
    /// Woken after every read.
    read: Notify,
}

/// The live callers, shared by a worker's jobs.
#[derive(Clone, Default)]
pub struct Callers(Rc<Shared>);

/// The heartbeat instance of a reply stream's owner.
fn instance(reply_to: &str) -> &str {
    SUFFIXES
        .iter()
        .find_map(|s| reply_to.strip_suffix(s))
        .unwrap_or(reply_to)
}

impl Callers {
    /// Starts watching `store`'s heartbeats (on the current local task set); `me` is the
    /// worker's own heartbeat (None when it sends none). Stops with the returned handle.
    pub fn watch(store: Store, me: Option<Alive>) -> (Callers, tokio::task::JoinHandle<()>) {
        let callers = Callers::default();
        let shared = callers.0.clone();
        let task = tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // A failed read (Redis away) leaves the last known state: nobody is declared dead.
                if let Ok(live) = store.live().await {
                    shared.state.borrow_mut().update(live, me.as_ref(), Instant::now());
                    shared.read.notify_waiters();
                }
            }
        });
        (callers, task)
    }

    /// Whether the owner of `reply_to` was seen alive and is gone.
    pub fn gone(&self, reply_to: &str) -> bool {
        self.0.state.borrow().gone(instance(reply_to), Instant::now())
    }

    /// Resolves once the owner of `reply_to` is gone (never, while it lives), checked after
    /// every read.
    pub async fn until_gone(&self, reply_to: &str) {
        loop {
            let read = self.0.read.notified();
            if self.gone(reply_to) {
                return;
            }
            read.await;
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

    fn live(epoch: &str, who: &[(&str, &str)]) -> Live {
        Live {
            epoch: epoch.to_owned(),
            alive: who
                .iter()
                .map(|(s, i)| Alive {
                    service: (*s).to_owned(),
                    instance: (*i).to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn reply_streams_map_to_their_owners_heartbeat() {
        assert_eq!(instance("gw-1"), "gw-1");
        assert_eq!(instance("r-7-loop"), "r-7");
        assert_eq!(instance("x-responses"), "x");
    }

    #[test]
    fn a_caller_seen_alive_is_gone_after_two_reads_that_miss_it() {
        let (mut s, now) = (State::default(), Instant::now());
        s.update(live("e", &[("gateway", "gw-1")]), None, now);
        assert!(!s.gone("gw-1", now), "alive");
        s.update(live("e", &[]), None, now);
        assert!(!s.gone("gw-1", now), "missed once");
        s.update(live("e", &[]), None, now);
        assert!(s.gone("gw-1", now), "missed twice in a row");
        assert!(!s.gone("never-seen", now), "unknown callers are not declared dead");
        s.update(live("e", &[("gateway", "gw-1")]), None, now);
        s.update(live("e", &[]), None, now);
        assert!(!s.gone("gw-1", now), "back, then missed once");
    }

    #[test]
    fn a_new_epoch_declares_nobody_dead_until_the_callers_could_beat_again() {
        let (mut s, now) = (State::default(), Instant::now());
        s.update(live("e1", &[("gateway", "gw-1"), ("gateway", "gw-2")]), None, now);
        // Redis restarted empty: every heartbeat gone, a new epoch.
        for _ in 0..5 {
            s.update(live("e2", &[]), None, now);
        }
        assert!(!s.gone("gw-1", now), "lost heartbeats, not a death");
        s.update(live("e2", &[("gateway", "gw-1")]), None, now);
        let later = now + AFTER_RESTART;
        assert!(!s.gone("gw-1", later), "beat again");
        assert!(s.gone("gw-2", later), "never came back: dead after the quiet period");
    }

    #[test]
    fn a_read_without_the_workers_own_beat_judges_nobody() {
        let (mut s, now) = (State::default(), Instant::now());
        let me = Alive {
            service: "worker".into(),
            instance: "default:w1".into(),
        };
        s.update(
            live("e", &[("gateway", "gw-1"), ("worker", "default:w1")]),
            Some(&me),
            now,
        );
        for _ in 0..3 {
            s.update(live("e", &[]), Some(&me), now); // Redis stalled: every beat late
        }
        assert!(!s.gone("gw-1", now));
        s.update(live("e", &[("worker", "default:w1")]), Some(&me), now);
        s.update(live("e", &[("worker", "default:w1")]), Some(&me), now);
        assert!(s.gone("gw-1", now), "missed by two trusted reads");
    }
}
