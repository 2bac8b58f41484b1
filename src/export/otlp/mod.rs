//! OTLP push: the latest published snapshot, sent to an OpenTelemetry collector over
//! gRPC or HTTP/protobuf with the `opentelemetry` SDK.
//!
//! Kernel counters are cumulative values netsight reads, not increments, so every
//! metric is an *observable* instrument whose callback reads [`Shared::latest`]: the
//! exporter never touches the kernel and never waits for a collection. Instruments are
//! registered as families appear (netstat fields and rule outputs are only known at
//! run time).
//!
//! Names follow the OpenTelemetry semantic conventions where they exist
//! (`system.network.io`, `system.network.packet.count`, `system.network.packet.dropped`,
//! `system.network.errors`, `system.network.connection.count`); everything else uses the
//! catalog's `otel_name` (`netsight.*`) with the Prometheus labels as attributes.
//! Counters are cumulative monotonic sums, gauges are gauges. Histograms
//! (`netsight_tcp_rtt_seconds`) are not exported: the SDK has no observable histogram.
//!
//! An unreachable collector costs bounded retries with exponential backoff between
//! export cycles; nothing is queued (each cycle sends the current cumulative values),
//! failures are counted in `netsight_otlp_export_failures_total`, and collection and
//! scrapes are unaffected.

mod config;
mod exporter;
mod routes;
mod stats;

pub use config::{OtlpConfig, Protocol};
use exporter::*;
use routes::*;
use stats::*;
pub use stats::{Stats, DOC, EXPORTS, EXPORT_FAILURES, LAST_SUCCESS};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::collect::Collector;
use crate::config::Config;
use crate::daemon::Shared;

/// A configured (not yet running) OTLP exporter.
pub struct Otlp {
    cfg: OtlpConfig,
    stats: Arc<Stats>,
}

/// Rebuilds the pipeline (new start time) once cumulative series that vanished
/// (deleted interfaces, replaced rules…) exceed this many: the SDK keeps exporting an
/// observable counter's series with its last value after it stops being observed.
const STALE_SERIES_MAX: usize = 256;
/// …or when any did and the pipeline is at least this old.
const STALE_REBUILD_AGE: Duration = Duration::from_secs(600);

struct Pipeline {
    provider: SdkMeterProvider,
    registry: Registry,
    ever: HashSet<u64>,
    built: Instant,
}

impl Otlp {
    /// `None` when `otlp.enabled` is false.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Otlp>> {
        let o = &cfg.otlp;
        if !o.enabled {
            return Ok(None);
        }
        if let Err(e) = o.validate() {
            bail!(e);
        }
        // Fail at startup on unreadable certificates rather than on every export.
        client_tls(o)?;
        Ok(Some(Otlp {
            cfg: o.clone(),
            stats: Arc::new(Stats::default()),
        }))
    }

    /// The exporter's own metrics, as a collector for the daemon's scheduler.
    pub fn stats_collector(&self) -> Box<dyn Collector> {
        Box::new(StatsCollector(self.stats.clone()))
    }

    fn pipeline(&self, shared: &Arc<Shared>) -> anyhow::Result<Pipeline> {
        let exporter = RetryingExporter {
            inner: build_exporter(&self.cfg)?,
            stats: self.stats.clone(),
            interval: self.cfg.interval,
            timeout: self.cfg.timeout,
            endpoint: self.cfg.endpoint(),
            state: Mutex::new(RetryState::default()),
        };
        let reader = PeriodicReader::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_interval(self.cfg.interval)
            // Retries included; a cycle never holds the reader longer than this.
            .with_timeout(self.cfg.timeout.max(self.cfg.interval) + self.cfg.interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource(&self.cfg))
            .build();
        let scope = InstrumentationScope::builder("netsight")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let meter = provider.meter_with_scope(scope);
        Ok(Pipeline {
            provider,
            registry: Registry {
                meter,
                views: Arc::new(ViewCache {
                    shared: shared.clone(),
                    current: Mutex::new(None),
                }),
                known: HashMap::new(),
                conflicts: HashSet::new(),
                handles: Vec::new(),
            },
            ever: HashSet::new(),
            built: Instant::now(),
        })
    }

    /// Starts exporting; runs until the returned handle is shut down.
    pub fn start(self, shared: Arc<Shared>) -> anyhow::Result<OtlpRunning> {
        let interval = self.cfg.interval;
        let mut sup = Supervisor::new(self, shared)?;
        tracing::info!(
            endpoint = %sup.otlp.cfg.endpoint(),
            protocol = ?sup.otlp.cfg.protocol,
            ?interval,
            "OTLP export enabled"
        );
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            // New families (and vanished counters) are looked for twice per export cycle.
            let mut tick = tokio::time::interval(interval / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                sup.step().await;
            }
            shutdown_provider(sup.pipe.provider).await;
        });
        Ok(OtlpRunning { stop: stop_tx, task })
    }
}

/// Owns the export pipeline: registers instruments as families appear and rebuilds the
/// pipeline when vanished cumulative series pile up.
struct Supervisor {
    otlp: Otlp,
    shared: Arc<Shared>,
    pipe: Pipeline,
    stale_max: usize,
    stale_age: Duration,
}

impl Supervisor {
    fn new(otlp: Otlp, shared: Arc<Shared>) -> anyhow::Result<Supervisor> {
        let pipe = otlp.pipeline(&shared)?;
        Ok(Supervisor {
            otlp,
            shared,
            pipe,
            stale_max: STALE_SERIES_MAX,
            stale_age: STALE_REBUILD_AGE,
        })
    }

    /// One look at the latest snapshot; true when the pipeline was rebuilt.
    async fn step(&mut self) -> bool {
        let added = self.pipe.registry.sync();
        if added > 0 {
            tracing::debug!(
                added,
                total = self.pipe.registry.known.len(),
                "OTLP instruments registered"
            );
        }
        let current = self.pipe.registry.cumulative_series();
        self.pipe.ever.extend(current.iter().copied());
        let stale = self.pipe.ever.len() - current.len();
        if stale == 0 || (stale <= self.stale_max && self.pipe.built.elapsed() < self.stale_age) {
            return false;
        }
        match self.otlp.pipeline(&self.shared) {
            Ok(mut fresh) => {
                tracing::info!(stale, "OTLP: rebuilding the export pipeline to drop vanished series");
                fresh.registry.sync();
                fresh.ever = current;
                let old = std::mem::replace(&mut self.pipe, fresh);
                shutdown_provider(old.provider).await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "OTLP: cannot rebuild the export pipeline");
                false
            }
        }
    }
}

async fn shutdown_provider(p: SdkMeterProvider) {
    // Shutdown exports once more and waits for the reader task: keep it off the async
    // workers and bounded.
    let t = tokio::task::spawn_blocking(move || p.shutdown_with_timeout(Duration::from_secs(5)));
    match tokio::time::timeout(Duration::from_secs(6), t).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::debug!(error = %e, "OTLP provider shutdown"),
        _ => tracing::debug!("OTLP provider shutdown did not finish in time"),
    }
}

pub struct OtlpRunning {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpRunning {
    /// Stops the exporter after a last export attempt (bounded to a few seconds).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(8), self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use crate::snapshot::{Emitter, Snapshot};
    use std::time::SystemTime;

    fn netdev_snapshot(devices: &[&str]) -> Snapshot {
        let rx = catalog::find("netsight_network_receive_bytes_total").expect("catalog");
        let up = catalog::find("netsight_network_up").expect("catalog");
        let mut e = Emitter::new();
        for d in devices {
            e.push(rx, vec![d.to_string()], 100.0);
            e.push(up, vec![d.to_string()], 1.0);
        }
        Snapshot::new(SystemTime::now(), e.into_families())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vanished_counter_series_rebuild_the_pipeline() {
        let mut c = Config::embedded().expect("config");
        c.otlp.enabled = true;
        c.otlp.endpoint = Some("http://127.0.0.1:9".into());
        let otlp = Otlp::from_config(&c).expect("valid").expect("enabled");
        let shared = Arc::new(Shared::new(4, crate::rules::Engine::new(Default::default())));
        shared.publish(netdev_snapshot(&["a", "b"]));
        let mut sup = Supervisor::new(otlp, shared.clone()).expect("pipeline");
        sup.stale_max = 0;
        assert!(!sup.step().await);
        assert_eq!(
            sup.pipe.registry.known.get("system.network.io"),
            Some(&Inst::CounterU64)
        );
        assert_eq!(sup.pipe.registry.known.get("netsight.network.up"), Some(&Inst::Gauge));
        assert_eq!(sup.pipe.ever.len(), 2);
        // Gauges only report what is observed; a vanished counter needs a new pipeline.
        shared.publish(netdev_snapshot(&["a"]));
        assert!(sup.step().await, "b vanished: rebuild");
        assert_eq!(sup.pipe.ever.len(), 1);
        assert!(sup.pipe.registry.known.contains_key("system.network.io"));
        assert!(!sup.step().await);
        shared.publish(netdev_snapshot(&["a", "c"]));
        assert!(!sup.step().await, "new series are not stale");
        shutdown_provider(sup.pipe.provider).await;
    }
}
