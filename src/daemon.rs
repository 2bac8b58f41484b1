//! The daemon's data path: tick → collect → snapshot → history → published text.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::MissedTickBehavior;

use crate::collect::{self, CollectContext, Scheduler};
use crate::config::Config;
use crate::snapshot::{History, Snapshot};

/// What scrapes read: a snapshot and its pre-encoded exposition.
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub text: Bytes,
}

pub struct Shared {
    latest: RwLock<Arc<Published>>,
    pub history: Mutex<History>,
}

impl Shared {
    pub fn new(history_points: usize) -> Self {
        Shared {
            latest: RwLock::new(Arc::new(Published {
                snapshot: Arc::new(Snapshot::empty()),
                text: Bytes::new(),
            })),
            history: Mutex::new(History::new(history_points)),
        }
    }

    pub fn latest(&self) -> Arc<Published> {
        match self.latest.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn publish(&self, snapshot: Snapshot) {
        let text = match crate::export::prometheus::encode(&snapshot) {
            Ok(t) => Bytes::from(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode snapshot; keeping the previous one");
                return;
            }
        };
        if let Ok(mut h) = self.history.lock() {
            h.record(&snapshot);
        }
        let p = Arc::new(Published { snapshot: Arc::new(snapshot), text });
        match self.latest.write() {
            Ok(mut g) => *g = p,
            Err(poisoned) => *poisoned.into_inner() = p,
        }
    }
}

pub fn scheduler_for(cfg: &Config) -> anyhow::Result<Scheduler> {
    let collectors = collect::build_enabled(cfg)?;
    Ok(Scheduler::new(
        collectors,
        CollectContext::new(&cfg.paths.procfs, &cfg.paths.sysfs),
        cfg.interval,
        cfg.budget.collector_timeout.min(cfg.interval),
        cfg.budget.cpu_percent,
    ))
}

/// Collects every `interval` until `stop` is set.
pub async fn run_collection(
    mut sched: Scheduler,
    shared: Arc<Shared>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let snap = sched.tick().await;
        shared.publish(snap);
    }
}
