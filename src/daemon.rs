//! The daemon's data path: tick → collect → snapshot → history → rules → published
//! text. One task owns the loop; HTTP handlers only read what it publishes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::time::MissedTickBehavior;

use crate::collect::{self, CollectContext, Scheduler};
use crate::config::{Config, RulesConfig};
use crate::rules::{self, Engine};
use crate::snapshot::{History, Snapshot};

/// What scrapes read: a snapshot and its exposition, encoded by the first scrape that
/// asks for it and shared by every later one. Encoding on publish cost every tick
/// ~0.6 ms of CPU whether anyone scraped or not; now a daemon scraped every 15 s at a
/// 5 s tick encodes a third as often, and 200 concurrent scrapes still encode once.
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    text: std::sync::OnceLock<Option<Bytes>>,
}

impl Published {
    fn new(snapshot: Snapshot) -> Self {
        Published {
            snapshot: Arc::new(snapshot),
            text: std::sync::OnceLock::new(),
        }
    }

    /// The Prometheus text exposition of the snapshot; `None` if it cannot be
    /// encoded (logged once per snapshot).
    pub fn text(&self) -> Option<Bytes> {
        self.text
            .get_or_init(|| match crate::export::prometheus::encode(&self.snapshot) {
                Ok(t) => Some(Bytes::from(t)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode snapshot");
                    None
                }
            })
            .clone()
    }
}

pub struct Shared {
    latest: RwLock<Arc<Published>>,
    pub history: Mutex<History>,
    pub engine: Mutex<Engine>,
    /// Set by SIGHUP; the collection loop reloads rules before its next evaluation.
    pub reload_requested: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Shared {
    pub fn new(history_points: usize, engine: Engine) -> Self {
        let mut history = History::new(history_points);
        history.record_only(Some(engine.rules().referenced_metrics()));
        Shared {
            latest: RwLock::new(Arc::new(Published::new(Snapshot::empty()))),
            history: Mutex::new(history),
            engine: Mutex::new(engine),
            reload_requested: AtomicBool::new(false),
        }
    }

    pub fn latest(&self) -> Arc<Published> {
        match self.latest.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    /// Records history, runs the rules and publishes the result.
    pub fn process(&self, mut snapshot: Snapshot) {
        {
            let mut hist = lock(&self.history);
            hist.record(&snapshot);
            let outputs = lock(&self.engine).evaluate(&snapshot, &hist);
            snapshot.extend(outputs);
        }
        self.publish(snapshot);
    }

    pub fn publish(&self, snapshot: Snapshot) {
        let p = Arc::new(Published::new(snapshot));
        match self.latest.write() {
            Ok(mut g) => *g = p,
            Err(poisoned) => *poisoned.into_inner() = p,
        }
    }

    /// Writes learned baselines to the configured state file, if any.
    pub fn save_state(&self, cfg: &RulesConfig) {
        let Some(path) = &cfg.state_file else { return };
        let engine = self.engine();
        let hist = lock(&self.history);
        match rules::persist::save(path, &engine, &hist) {
            Ok(()) => tracing::debug!(path = %path.display(), "baseline state saved"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot save baseline state"),
        }
    }

    /// Restores learned baselines saved by an earlier run; a missing file is normal,
    /// a damaged or foreign one is ignored with a warning.
    pub fn restore_state(&self, cfg: &RulesConfig) {
        let Some(path) = &cfg.state_file else { return };
        if !path.exists() {
            return;
        }
        let mut engine = self.engine();
        let mut hist = lock(&self.history);
        match rules::persist::restore(path, &mut engine, &mut hist) {
            Ok(n) => tracing::info!(path = %path.display(), groups = n, "baseline state restored"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring baseline state file"),
        }
    }

    /// Reloads the rules; a broken set is reported and the running rules stay.
    pub fn reload_rules(&self, cfg: &RulesConfig) -> bool {
        match rules::load_configured(cfg) {
            Ok(set) => {
                tracing::info!(rules = set.rules.len(), "rules reloaded");
                lock(&self.history).record_only(Some(set.referenced_metrics()));
                self.engine().replace(set);
                true
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "rule file rejected; keeping the previous rules");
                }
                self.engine().reload_failed();
                false
            }
        }
    }
}

pub fn scheduler_for(cfg: &Config) -> anyhow::Result<Scheduler> {
    scheduler_with(cfg, Vec::new())
}

/// The configured collectors plus `extra` ones (the exporters' self-metrics).
pub fn scheduler_with(cfg: &Config, extra: Vec<Box<dyn collect::Collector>>) -> anyhow::Result<Scheduler> {
    let mut collectors = collect::build_enabled(cfg)?;
    collectors.extend(extra);
    Ok(Scheduler::new(
        collectors,
        CollectContext::new(&cfg.paths.procfs, &cfg.paths.sysfs),
        cfg.interval,
        cfg.budget.collector_timeout.min(cfg.interval),
        cfg.budget.cpu_percent,
    ))
}

/// Runs the collection loop on a thread of its own until `stop` is set.
///
/// The loop has its own single-threaded runtime rather than sharing the HTTP
/// workers: on the shared runtime an idle tick woke an async worker for the
/// timer, a blocking thread for the collectors, a worker again, a blocking
/// thread for the rules and a worker again (about ten context switches a tick,
/// rotating over the blocking pool's threads, each cold). Here the tick wakes
/// this thread and the one blocking thread the collectors share; the rules run
/// on this thread, which nothing else needs, and scrapes never wait for it.
pub fn spawn_collection(
    sched: Scheduler,
    shared: Arc<Shared>,
    cfg: Config,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .thread_name("netsight-collect")
        .max_blocking_threads(16)
        .build()?;
    std::thread::Builder::new()
        .name("netsight-collect".into())
        .spawn(move || runtime.block_on(run_collection(sched, shared, cfg, stop)))
}

/// Collects every `interval` until `stop` is set, reloading rules on request or
/// when a configured rule file changes. Runs on a dedicated thread
/// ([`spawn_collection`]): it blocks that thread while the rules evaluate.
async fn run_collection(
    mut sched: Scheduler,
    shared: Arc<Shared>,
    cfg: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut fingerprint = rules::sources::fingerprint(&cfg.rules.paths);
    let save_every = (SAVE_PERIOD.as_secs_f64() / cfg.interval.as_secs_f64()).ceil().max(1.0) as u64;
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        ticks += 1;
        if ticks % save_every == 0 {
            shared.save_state(&cfg.rules);
        }
        let current = rules::sources::fingerprint(&cfg.rules.paths);
        if shared.reload_requested.swap(false, Ordering::AcqRel) || current != fingerprint {
            fingerprint = current;
            shared.reload_rules(&cfg.rules);
        }
        let snap = sched.tick().await;
        shared.process(snap);
    }
    shared.save_state(&cfg.rules);
}

/// How often learned state is written while running (and always at shutdown).
const SAVE_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_encoded_once_and_shared_by_every_scrape() {
        let shared = Shared::new(4, Engine::new(Default::default()));
        let mut e = crate::snapshot::Emitter::new();
        e.push(&collect::COLLECTOR_UP, ["netdev"], 1.0);
        shared.publish(Snapshot::new(std::time::SystemTime::now(), e.into_families()));
        let p = shared.latest();
        let (a, b) = (p.text().expect("encodes"), p.text().expect("encodes"));
        assert_eq!(a.as_ptr(), b.as_ptr(), "the second scrape reuses the first one's text");
        let text = std::str::from_utf8(&a).expect("utf-8");
        assert!(text.contains("netsight_collector_up{collector=\"netdev\"} 1"), "{text}");
    }
}
