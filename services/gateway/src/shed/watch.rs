//! The reading loop behind shedding: every 100 ms one backlog read per work stream
//! (`requests` and each pool's two job streams) sets the gauges — unread work, what this
//! gateway admitted since, and each pool's completion rate from its recent samples; every
//! second the router's plan is asked for the models seen, which gives each its pool and the
//! latency of the pool's first target (the capacity prior of the rate).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use llmr_bus::{Backlog, Bus};
use llmr_config::Settings;
use llmr_protocol::{Priority, now_ms, streams};
use llmr_store::{Peers, Store};

use super::estimate::{self, Sample, Window};
use super::{Gauge, Shed};

/// How often the queues are read.
const EVERY: Duration = Duration::from_millis(100);

/// Every how many reads the models' pools and latencies are asked again.
const RESOLVE_EVERY: u64 = 10;

/// Keeps the gauges up to date until dropped.
pub struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reading the queues into `shed` (inside an actix System).
pub fn watch(bus: Bus, store: Store, peers: Peers, settings: &Settings, shed: Arc<Shed>) -> Watch {
    let settings = settings.clone();
    Watch(actix_rt::spawn(async move {
        let mut reader = Reader::new(&settings, shed);
        let mut n = 0u64;
        loop {
            reader.read(&bus).await;
            if n.is_multiple_of(RESOLVE_EVERY) {
                reader.resolve(&settings, &store, &peers).await;
            }
            n += 1;
            tokio::time::sleep(EVERY).await;
        }
    }))
}

/// What is not delivered yet: the lag, or on Redis before 7 what is in the stream and not
/// pending (acked entries are deleted).
fn unread(b: &Backlog) -> u64 {
    b.lag.unwrap_or_else(|| b.length.saturating_sub(b.pending))
}

/// One pool's streams and recent samples.
struct PoolReader {
    name: String,
    gauge: Arc<Gauge>,
    /// `jobs:{pool}` and `jobs:{pool}:batch`.
    streams: [String; 2],
    window: Window,
    /// The mean latency (ms) of the first targets its models are planned on.
    latency_ms: Option<f64>,
}

struct Reader {
    shed: Arc<Shed>,
    pools: Vec<PoolReader>,
    /// One worker's places: the least capacity a pool with any worker has.
    slots: u64,
}

impl Reader {
    fn new(settings: &Settings, shed: Arc<Shed>) -> Reader {
        let pools = shed
            .pools
            .iter()
            .map(|(name, gauge)| PoolReader {
                name: name.clone(),
                gauge: gauge.clone(),
                streams: [Priority::Interactive, Priority::Batch].map(|p| streams::jobs_for(name, p)),
                window: Window::default(),
                latency_ms: None,
            })
            .collect();
        Reader {
            shed,
            pools,
            slots: settings.worker.max_in_flight as u64,
        }
    }

    /// One read of every work stream into the gauges.
    async fn read(&mut self, bus: &Bus) {
        // What was admitted before the read shows in it (as requests or jobs): forgotten after.
        let before: Vec<[u64; 2]> = self
            .pools
            .iter()
            .map(|p| [0, 1].map(|i| p.gauge.admitted[i].load(Ordering::Relaxed)))
            .collect();
        let mut total = 0;
        if let Ok(b) = bus.backlog(streams::REQUESTS, streams::groups::ROUTERS).await {
            let lag = unread(&b);
            self.shed.requests_lag.store(lag, Ordering::Relaxed);
            total += lag;
        }
        for (p, before) in self.pools.iter_mut().zip(before) {
            let mut s = Sample {
                at: Instant::now(),
                read: Some(0),
                lag: 0,
                pending: 0,
            };
            for (i, stream) in p.streams.iter().enumerate() {
                let Ok(b) = bus.backlog(stream, streams::groups::WORKERS).await else {
                    s.read = None;
                    continue;
                };
                let lag = unread(&b);
                p.gauge.lag[i].store(lag, Ordering::Relaxed);
                p.gauge.admitted[i].fetch_sub(before[i], Ordering::Relaxed);
                s.lag += lag;
                s.pending += b.pending;
                s.read = s.read.zip(b.read).map(|(a, b)| a + b);
            }
            total += s.lag;
            p.window.push(s);
            let slots = self.slots.max(p.window.peak_in_flight());
            let rate = estimate::completion_rate(p.window.observed_rate(), slots, p.latency_ms);
            p.gauge.rate_milli.store(estimate::to_milli(rate), Ordering::Relaxed);
        }
        self.shed.queued.store(total, Ordering::Relaxed);
    }

    /// Asks the router's plan for the pool of every model seen, and the latency of its
    /// first target; a model the plan cannot place keeps its pool (or gets `default`).
    async fn resolve(&mut self, settings: &Settings, store: &Store, peers: &Peers) {
        let mut models: Vec<String> = self
            .shed
            .wanted
            .lock()
            .map(|mut w| w.drain().collect())
            .unwrap_or_default();
        let known: HashMap<String, Arc<Gauge>> = self.shed.models.read().map(|m| m.clone()).unwrap_or_default();
        models.extend(
            known
                .keys()
                .filter(|m| !models.contains(m))
                .cloned()
                .collect::<Vec<_>>(),
        );
        if models.is_empty() {
            return;
        }
        let Ok(published) = store.providers().await else {
            return;
        };
        let catalog = Arc::new(llmr_router::Catalog::from_settings(settings));
        catalog.apply(&published);
        let routing = llmr_router::routing::Routing::new(settings, store.clone(), peers.clone(), catalog, None);
        let fallback = self.shed.pools.get("default").cloned();
        let mut map = HashMap::with_capacity(models.len());
        let mut latencies: HashMap<String, Vec<f64>> = HashMap::new();
        for model in models.into_iter().take(super::MAX_MODELS) {
            let planned = routing.preview(&model, now_ms()).await.ok();
            let pool = planned.as_ref().and_then(|p| p.pool.clone());
            let gauge = pool.as_ref().and_then(|p| self.shed.pools.get(p)).cloned();
            if let (Some(pool), Some(l)) = (
                pool,
                planned.and_then(|p| {
                    p.targets
                        .first()
                        .filter(|t| t.skipped.is_none())
                        .and_then(|t| t.latency_ms)
                }),
            ) {
                latencies.entry(pool).or_default().push(l);
            }
            if let Some(g) = gauge
                .or_else(|| known.get(&model).cloned())
                .or_else(|| fallback.clone())
            {
                map.insert(model, g);
            }
        }
        for p in &mut self.pools {
            if let Some(ls) = latencies.get(&p.name).filter(|ls| !ls.is_empty()) {
                p.latency_ms = Some(ls.iter().sum::<f64>() / ls.len() as f64);
            }
        }
        if let Ok(mut m) = self.shed.models.write() {
            *m = map;
        }
    }
}
