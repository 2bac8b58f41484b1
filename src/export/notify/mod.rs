//! Pushes the rule engine's firing/resolved transitions to Grafana (annotations) and
//! to Alertmanager (alerts), for hosts where nothing scrapes netsight or where
//! people want the anomaly regions drawn on every dashboard.
//!
//! Data flows one way: the notifier reads the engine's event log on its own task,
//! turns new and closed events into [`Change`]s, and each sink delivers them from a
//! bounded queue with backoff. A slow or dead endpoint never holds the engine lock
//! longer than a copy of the changed events, and never stalls collection or scrapes.

pub mod alertmanager;
mod client;
pub mod grafana;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::collect::{CollectContext, CollectError, Collector};
use crate::daemon::Shared;
use crate::rules::events::{Event, EventLog};
use crate::snapshot::Emitter;

pub use client::ClientTlsConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub grafana: grafana::GrafanaConfig,
    pub alertmanager: alertmanager::AlertmanagerConfig,
}

impl NotifyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.grafana.enabled {
            client::validate_url("notify.grafana.url", self.grafana.url.as_deref())?;
        }
        if self.alertmanager.enabled {
            client::validate_url("notify.alertmanager.url", self.alertmanager.url.as_deref())?;
        }
        Ok(())
    }

    pub fn any_enabled(&self) -> bool {
        self.grafana.enabled || self.alertmanager.enabled
    }
}

/// One transition of an event, as the sinks see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The event started firing (it may already carry an end when it opened and
    /// closed between two looks at the log).
    Opened(Event),
    /// An event announced as opened has ended.
    Closed(Event),
}

/// Finds what changed in the event log since the last look.
#[derive(Debug, Default)]
pub struct Tracker {
    last_id: u64,
    /// Events announced as firing and not yet closed, as last seen.
    open: BTreeMap<u64, Event>,
}

impl Tracker {
    /// Changes since the last call, oldest first. `now` closes events that left the
    /// log while still open (evicted by newer ones), so no sink keeps them forever.
    pub fn poll(&mut self, log: &EventLog, now: f64) -> Vec<Change> {
        let mut out = Vec::new();
        let mut closed = Vec::new();
        for (id, seen) in &self.open {
            match log.get(*id) {
                Some(e) if e.end.is_some() => closed.push((*id, e.clone())),
                Some(_) => {}
                None => {
                    let mut e = seen.clone();
                    e.end = Some(now);
                    closed.push((*id, e));
                }
            }
        }
        for (id, e) in closed {
            self.open.remove(&id);
            out.push(Change::Closed(e));
        }
        for e in log.opened_after(self.last_id) {
            self.last_id = e.id;
            if e.end.is_none() {
                self.open.insert(e.id, e.clone());
            }
            out.push(Change::Opened(e.clone()));
        }
        out
    }
}

/// What a sink does with one change.
pub enum Outcome {
    Delivered,
    /// Worth retrying later (endpoint down, timeout, 5xx, 429).
    Retry(String),
    /// Will never succeed as sent (4xx): dropped and counted.
    Rejected(String),
}

/// A destination for changes, driven by [`SinkQueue`]. (`impl Future + Send` rather
/// than `async fn` so that each target's loop can be spawned on the runtime.)
pub trait Sink {
    fn target(&self) -> &'static str;
    /// Delivers the changes at the head of `pending`, removing what was delivered or
    /// rejected; returns the first retryable failure.
    fn deliver(
        &mut self,
        pending: &mut VecDeque<Change>,
        stats: &TargetStats,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Called every poll once the queue is empty; for periodic re-sends. An error is
    /// retried with the same backoff as deliveries.
    fn maintain(&mut self, _stats: &TargetStats) -> impl std::future::Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

/// Counters for one target, read by the self-metrics collector.
#[derive(Debug, Default)]
pub struct TargetStats {
    pub sent: AtomicU64,
    pub failures: AtomicU64,
    pub dropped: AtomicU64,
    pub queued: AtomicU64,
}

impl TargetStats {
    pub fn count(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Delivered => self.sent.fetch_add(1, Ordering::Relaxed),
            Outcome::Retry(_) => self.failures.fetch_add(1, Ordering::Relaxed),
            Outcome::Rejected(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A bounded queue in front of a sink, with exponential backoff after failures.
struct SinkQueue<S: Sink> {
    sink: S,
    pending: VecDeque<Change>,
    cap: usize,
    stats: Arc<TargetStats>,
    backoff: Duration,
    retry_at: Option<Instant>,
    logged: Option<String>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Changes kept per target while its endpoint is unreachable; the oldest go first.
const QUEUE_CAP: usize = 10_000;

impl<S: Sink> SinkQueue<S> {
    fn new(sink: S, stats: Arc<TargetStats>) -> Self {
        SinkQueue {
            sink,
            pending: VecDeque::new(),
            cap: QUEUE_CAP,
            stats,
            backoff: Duration::ZERO,
            retry_at: None,
            logged: None,
        }
    }

    fn push(&mut self, changes: Vec<Change>) {
        for c in changes {
            if self.pending.len() >= self.cap {
                // Drop the oldest opening rather than a closing: a lost closing
                // would leave an alert or annotation open forever, a lost opening
                // only turns into a region drawn at its end.
                let victim = self
                    .pending
                    .iter()
                    .position(|c| matches!(c, Change::Opened(_)))
                    .unwrap_or(0);
                self.pending.remove(victim);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            self.pending.push_back(c);
        }
    }

    async fn attempt(&mut self) -> Result<(), String> {
        if !self.pending.is_empty() {
            self.sink.deliver(&mut self.pending, &self.stats).await?;
        }
        self.sink.maintain(&self.stats).await
    }

    async fn step(&mut self, interval: Duration) {
        if self.retry_at.is_none_or(|t| Instant::now() >= t) {
            match self.attempt().await {
                Ok(()) => {
                    if self.logged.take().is_some() {
                        tracing::info!(
                            target_kind = self.sink.target(),
                            "notification endpoint reachable again"
                        );
                    }
                    self.backoff = Duration::ZERO;
                    self.retry_at = None;
                }
                Err(reason) => {
                    self.backoff = (self.backoff * 2).clamp(interval.min(MAX_BACKOFF), MAX_BACKOFF);
                    self.retry_at = Some(Instant::now() + self.backoff);
                    if self.logged.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(
                            target_kind = self.sink.target(),
                            error = %reason,
                            retry_in = ?self.backoff,
                            "notification not delivered; will retry"
                        );
                        self.logged = Some(reason);
                    }
                }
            }
        }
        self.stats.queued.store(self.pending.len() as u64, Ordering::Relaxed);
    }
}

/// `<host name>:<port of listen>`: the `instance` Prometheus gives a target
/// scraped by host name, so pushed and scraped alerts agree when it is scraped so.
pub fn default_instance(listen: &str) -> String {
    let host = super::host_name().unwrap_or_else(|| "localhost".to_string());
    match listen.rsplit_once(':').map(|(_, port)| port).filter(|p| !p.is_empty()) {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The configured sinks and their counters.
pub struct Notifier {
    grafana: Option<(grafana::Grafana, Arc<TargetStats>)>,
    alertmanager: Option<(alertmanager::Alertmanager, Arc<TargetStats>)>,
    interval: Duration,
}

pub struct NotifierRunning {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NotifierRunning {
    /// Stops after one last look at the log, so a resolution at shutdown goes out.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            match tokio::time::timeout(Duration::from_secs(15), t).await {
                Ok(Err(e)) => tracing::error!(error = %e, "notification task failed"),
                Err(_) => tracing::warn!("notification task still busy at shutdown; abandoned"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// One target's loop: its own tracker and queue, so a slow target never delays
/// another.
fn spawn_target<S: Sink + Send + 'static>(
    sink: S,
    stats: Arc<TargetStats>,
    shared: Arc<Shared>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut queue = SinkQueue::new(sink, stats);
        let mut tracker = Tracker::default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.changed() => true,
            };
            let changes = tracker.poll(&shared.engine().events, unix_now());
            queue.push(changes);
            queue.step(interval).await;
            if stopping {
                break;
            }
        }
    })
}

impl Notifier {
    /// `None` when no target is enabled.
    /// `instance`: how this daemon is named in notifications unless configured (the
    /// Prometheus convention: `host:port` of its /metrics endpoint).
    pub fn from_config(cfg: &NotifyConfig, interval: Duration, instance: &str) -> anyhow::Result<Option<Notifier>> {
        if !cfg.any_enabled() {
            return Ok(None);
        }
        let grafana = if cfg.grafana.enabled {
            Some((grafana::Grafana::new(&cfg.grafana, instance)?, Arc::default()))
        } else {
            None
        };
        let alertmanager = if cfg.alertmanager.enabled {
            Some((
                alertmanager::Alertmanager::new(&cfg.alertmanager, instance)?,
                Arc::default(),
            ))
        } else {
            None
        };
        Ok(Some(Notifier {
            grafana,
            alertmanager,
            interval,
        }))
    }

    /// The self-metrics collector to add to the daemon's scheduler.
    pub fn stats_collector(&self) -> Box<dyn Collector> {
        let mut targets = Vec::new();
        if let Some((_, s)) = &self.grafana {
            targets.push(("grafana", s.clone()));
        }
        if let Some((_, s)) = &self.alertmanager {
            targets.push(("alertmanager", s.clone()));
        }
        Box::new(StatsCollector(targets))
    }

    pub fn start(self, shared: Arc<Shared>) -> NotifierRunning {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        if let Some((sink, stats)) = self.grafana {
            tasks.push(spawn_target(
                sink,
                stats,
                shared.clone(),
                self.interval,
                stop_rx.clone(),
            ));
        }
        if let Some((sink, stats)) = self.alertmanager {
            tasks.push(spawn_target(sink, stats, shared, self.interval, stop_rx));
        }
        NotifierRunning { stop, tasks }
    }
}

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;

pub static SENT: MetricDesc = MetricDesc::new(
    "netsight_notify_sent_total",
    C,
    "",
    "Notifications a target accepted: Grafana annotations created or updated, Alertmanager alert batches \
     (re-sends of firing alerts included).",
    &["target"],
    "netsight.notify.sent",
);
pub static FAILURES: MetricDesc = MetricDesc::new(
    "netsight_notify_failures_total",
    C,
    "",
    "Notification attempts that failed (unreachable, timeout, non-2xx status), retries included.",
    &["target"],
    "netsight.notify.failures",
);
pub static DROPPED: MetricDesc = MetricDesc::new(
    "netsight_notify_dropped_total",
    C,
    "",
    "Notifications given up: rejected by the target (4xx) or pushed out of the full queue.",
    &["target"],
    "netsight.notify.dropped",
);
pub static QUEUED: MetricDesc = MetricDesc::new(
    "netsight_notify_queue_length",
    G,
    "",
    "Transitions waiting for delivery to a target.",
    &["target"],
    "netsight.notify.queue.length",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "notify",
    source: "the Grafana annotation / Alertmanager push itself (present only with notify.*.enabled)",
    capabilities: "none",
    metrics: &[&SENT, &FAILURES, &DROPPED, &QUEUED],
    dynamic: &[],
};

struct StatsCollector(Vec<(&'static str, Arc<TargetStats>)>);

impl Collector for StatsCollector {
    fn name(&self) -> &'static str {
        "notify"
    }
    fn collect(&mut self, _ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        for (target, s) in &self.0 {
            let labels = || vec![target.to_string()];
            out.push(&SENT, labels(), s.sent.load(Ordering::Relaxed) as f64);
            out.push(&FAILURES, labels(), s.failures.load(Ordering::Relaxed) as f64);
            out.push(&DROPPED, labels(), s.dropped.load(Ordering::Relaxed) as f64);
            out.push(&QUEUED, labels(), s.queued.load(Ordering::Relaxed) as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rule: &str) -> Event {
        Event {
            id: 0,
            rule: rule.into(),
            severity: "warning".into(),
            layer: "transport".into(),
            labels: BTreeMap::new(),
            start: 100.0,
            end: None,
            value: 1.0,
            baseline: None,
            cause: None,
            text: "t".into(),
        }
    }

    #[test]
    fn tracker_reports_opened_then_closed_once() {
        let mut log = EventLog::new(10);
        let mut t = Tracker::default();
        let id = log.open(event("a"));
        let c = t.poll(&log, 101.0);
        assert!(matches!(&c[..], [Change::Opened(e)] if e.id == id && e.end.is_none()));
        assert!(t.poll(&log, 102.0).is_empty());
        if let Some(e) = log.get_mut(id) {
            e.end = Some(103.0);
        }
        let c = t.poll(&log, 104.0);
        assert!(matches!(&c[..], [Change::Closed(e)] if e.id == id && e.end == Some(103.0)));
        assert!(t.poll(&log, 105.0).is_empty());
    }

    #[test]
    fn default_instance_is_host_and_listen_port() {
        assert!(default_instance("0.0.0.0:9977").ends_with(":9977"));
        assert!(default_instance("[::]:9100").ends_with(":9100"));
    }

    struct Refusing;

    impl Sink for Refusing {
        fn target(&self) -> &'static str {
            "test"
        }
        async fn deliver(&mut self, _p: &mut VecDeque<Change>, _s: &TargetStats) -> Result<(), String> {
            Err("down".into())
        }
    }

    #[test]
    fn a_full_queue_drops_openings_before_closings() {
        let mut q = SinkQueue::new(Refusing, Arc::default());
        q.cap = 3;
        let ev = |id| {
            let mut e = event("a");
            e.id = id;
            e
        };
        q.push(vec![
            Change::Opened(ev(1)),
            Change::Closed(ev(1)),
            Change::Opened(ev(2)),
        ]);
        q.push(vec![Change::Closed(ev(2))]);
        let kinds: Vec<(bool, u64)> = q
            .pending
            .iter()
            .map(|c| match c {
                Change::Opened(e) => (true, e.id),
                Change::Closed(e) => (false, e.id),
            })
            .collect();
        assert_eq!(kinds, vec![(false, 1), (true, 2), (false, 2)]);
        assert_eq!(q.stats.dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn backoff_with_a_long_interval_does_not_panic_and_is_capped() {
        let mut q = SinkQueue::new(Refusing, Arc::default());
        q.push(vec![Change::Opened(event("a"))]);
        q.step(Duration::from_secs(300)).await;
        assert_eq!(q.backoff, MAX_BACKOFF);
        assert_eq!(q.pending.len(), 1, "a failed delivery keeps the change");
    }

    #[test]
    fn tracker_closes_open_events_evicted_from_the_log() {
        let mut log = EventLog::new(1);
        let mut t = Tracker::default();
        log.open(event("a"));
        t.poll(&log, 1.0);
        log.open(event("b"));
        let c = t.poll(&log, 7.0);
        assert!(matches!(&c[0], Change::Closed(e) if e.rule == "a" && e.end == Some(7.0)));
        assert!(matches!(&c[1], Change::Opened(e) if e.rule == "b"));
    }

    #[test]
    fn an_event_opened_and_closed_between_polls_is_one_opened_change_with_its_end() {
        let mut log = EventLog::new(10);
        let mut t = Tracker::default();
        let id = log.open(event("a"));
        if let Some(e) = log.get_mut(id) {
            e.end = Some(101.0);
        }
        let c = t.poll(&log, 102.0);
        assert!(matches!(&c[..], [Change::Opened(e)] if e.end == Some(101.0)));
        assert!(t.poll(&log, 103.0).is_empty());
    }
}
