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

    /// Records history, runs the rules and publishes the result. A panic in the
    /// rules is contained: the snapshot is published without their outputs and the
    /// next tick runs them again.
    pub fn process(&self, mut snapshot: Snapshot) {
        let outputs = contain_panic("rule evaluation", || {
            let mut hist = lock(&self.history);
            hist.record(&snapshot);
            lock(&self.engine).evaluate(&snapshot, &hist)
        });
        if let Some(outputs) = outputs {
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

    /// Writes learned baselines to the configured state file, if any. A panic while
    /// saving is contained like one in the rules.
    pub fn save_state(&self, cfg: &RulesConfig) {
        let Some(path) = &cfg.state_file else { return };
        contain_panic("saving baseline state", || {
            let engine = self.engine();
            let hist = lock(&self.history);
            match rules::persist::save(path, &engine, &hist) {
                Ok(()) => tracing::debug!(path = %path.display(), "baseline state saved"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot save baseline state"),
            }
        });
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

/// Runs `f`, turning a panic into `None` and an error log.
///
/// The collection thread runs the rules and the state saving itself; before it had
/// a thread of its own a panic there ended one blocking task, and it must not now
/// end collection for good. The mutexes such a panic poisons are recovered by
/// [`lock`]; the rules' state is left as the panic left it and the next tick goes on.
fn contain_panic<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".to_string());
            tracing::error!(panic = %message, "{what} panicked; collection goes on");
            None
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
        .spawn(move || {
            runtime.block_on(run_collection(sched, shared, cfg, stop));
            // A collector still hung past its budget holds a blocking thread that
            // dropping the runtime would wait for; the state is saved, so leave it.
            runtime.shutdown_background();
        })
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
    use crate::collect::{CollectError, Collector};
    use crate::snapshot::Emitter;
    use std::time::{Duration, Instant};

    #[test]
    fn a_contained_panic_becomes_none_and_the_caller_goes_on() {
        assert_eq!(contain_panic("test", || 7), Some(7));
        let r: Option<()> = contain_panic("test", || panic!("rule bug"));
        assert_eq!(r, None);
        // A lock the panic poisoned is still usable afterwards.
        let m = Mutex::new(1);
        let _ = contain_panic("test", || {
            let _g = m.lock();
            panic!("while holding the lock")
        });
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    /// Stands in for a collector stuck in the kernel: its run outlives the test.
    struct Stuck;
    impl Collector for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn collect(&mut self, _: &collect::CollectContext, _: &mut Emitter) -> Result<(), CollectError> {
            std::thread::sleep(Duration::from_secs(20));
            Ok(())
        }
    }

    #[test]
    fn the_collection_thread_stops_promptly_while_a_collector_hangs() {
        let mut cfg = Config::embedded().expect("embedded config");
        cfg.interval = Duration::from_millis(200);
        let sched = Scheduler::new(
            vec![Box::new(Stuck)],
            CollectContext::new("/proc", "/sys"),
            cfg.interval,
            Duration::from_millis(50),
            100.0,
        );
        let shared = Arc::new(Shared::new(4, Engine::new(Default::default())));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let thread = spawn_collection(sched, shared.clone(), cfg, stop_rx).expect("thread starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.latest().snapshot.families.is_empty() {
            assert!(
                Instant::now() < deadline,
                "no snapshot published while a collector hangs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let up = shared
            .latest()
            .snapshot
            .value("netsight_collector_up", &[("collector", "stuck")]);
        assert_eq!(up, Some(0.0), "a collector past its budget is reported down");
        let stopping = Instant::now();
        stop_tx.send(true).expect("the thread is listening");
        thread.join().expect("the collection thread did not panic");
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "stopping waited {:?} for the hung collector",
            stopping.elapsed()
        );
    }

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
