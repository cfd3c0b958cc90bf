//! Which services have a live instance (their heartbeats), read in the background, so that a
//! request for a service nobody runs — a gateway without `responses`, a router without a
//! worker — is refused at once with 503 instead of waiting in a stream until its deadline.
//! The common case costs nothing: the last read is in memory. A service missing from it is
//! looked up again every 200 ms for a short wait (an instance may be starting).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::{Store, StoreError, TaskGuard};

/// How often a missing service is looked up again while waiting for it.
const RETRY: Duration = Duration::from_millis(200);

/// The services seen alive at the last read, kept fresh by a background task.
#[derive(Clone)]
pub struct Peers {
    store: Store,
    seen: Arc<RwLock<Vec<String>>>,
    _task: Arc<TaskGuard>,
}

impl Peers {
    /// Reads the live services every `every` until the last clone is dropped.
    pub fn watch(store: &Store, every: Duration) -> Peers {
        let seen = Arc::new(RwLock::new(Vec::new()));
        let (s, w) = (store.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Ok(now) = services(&s).await
                    && let Ok(mut w) = w.write()
                {
                    *w = now;
                }
            }
        });
        Peers {
            store: store.clone(),
            seen,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        }
    }

    /// Whether `service` has a live instance: at once when the last read saw one, else by
    /// reading again every 200 ms for up to `wait`. A store error is returned as such (the
    /// caller's request would fail on it anyway).
    pub async fn present(&self, service: &str, wait: Duration) -> Result<bool, StoreError> {
        if self.seen.read().is_ok_and(|s| s.iter().any(|x| x == service)) {
            return Ok(true);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = services(&self.store).await?;
            let found = now.iter().any(|x| x == service);
            if let Ok(mut w) = self.seen.write() {
                *w = now;
            }
            if found {
                return Ok(true);
            }
            if tokio::time::Instant::now() + RETRY > deadline {
                return Ok(false);
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// [`Peers::present`] as a request's answer: a 503 naming the service when none runs.
    pub async fn require(&self, service: &str, wait: Duration) -> Result<(), llmr_protocol::ApiError> {
        if self.present(service, wait).await? {
            return Ok(());
        }
        Err(llmr_protocol::ApiError::Unavailable {
            message: format!(
                "No {service} instance is running (none has sent a heartbeat), so this request cannot be served."
            ),
        })
    }
}

async fn services(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> = store.alive().await?.into_iter().map(|a| a.service).collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}
