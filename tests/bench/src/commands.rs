//! Redis commands per request: `INFO commandstats` read before and after a scenario (it counts
//! the commands scripts run as well as the scripts themselves), less what the idle
//! deployment sends in as long (heartbeats, blocking reads that time out, backlog and peer
//! reads).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::RedisResult;

/// Calls per command so far.
pub fn snapshot(url: &str) -> RedisResult<BTreeMap<String, u64>> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c)?;
    // Our own reads of the stats are not the deployment's (left out there).
    Ok(llmr_testkit::redis::command_calls(&info))
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0)) as f64))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// What the idle deployment sends per second, per command (over `window`).
pub fn idle_rate(url: &str, window: Duration) -> RedisResult<BTreeMap<String, f64>> {
    let before = snapshot(url)?;
    let started = Instant::now();
    std::thread::sleep(window);
    let after = snapshot(url)?;
    let secs = started.elapsed().as_secs_f64();
    Ok(diff(&after, &before).into_iter().map(|(k, v)| (k, v / secs)).collect())
}

/// Commands per request of a run of `requests` that took `elapsed`, between `before` and
/// `after`, less the idle rate: (total, per command, most first).
pub fn per_request(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    idle: &BTreeMap<String, f64>,
    elapsed: Duration,
    requests: u64,
) -> (f64, Vec<(String, f64)>) {
    let n = requests.max(1) as f64;
    let mut by: Vec<(String, f64)> = diff(after, before)
        .into_iter()
        .map(|(k, v)| {
            let background = idle.get(&k).copied().unwrap_or(0.0) * elapsed.as_secs_f64();
            let v = ((v - background) / n).max(0.0);
            (k, v)
        })
        .filter(|(_, v)| *v >= 0.005)
        .collect();
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    (by.iter().map(|(_, v)| v).sum(), by)
}
