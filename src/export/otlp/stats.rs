//! The exporter's own health series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::collect::{CollectContext, CollectError, Collector};
use crate::snapshot::Emitter;

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;

pub static EXPORT_FAILURES: MetricDesc = MetricDesc::new(
    "netsight_otlp_export_failures_total",
    C,
    "",
    "OTLP export attempts that failed (collector unreachable, timeout, gRPC error or non-2xx HTTP status), \
     retries included. Cycles skipped while backing off are not attempts.",
    &[],
    "netsight.otlp.export.failures",
);
pub static EXPORTS: MetricDesc = MetricDesc::new(
    "netsight_otlp_exports_total",
    C,
    "",
    "OTLP exports the collector accepted.",
    &[],
    "netsight.otlp.exports",
);
pub static LAST_SUCCESS: MetricDesc = MetricDesc::new(
    "netsight_otlp_last_success_timestamp_seconds",
    G,
    "seconds",
    "Unix time of the last OTLP export the collector accepted (0: none yet).",
    &[],
    "netsight.otlp.last_success.timestamp",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "otlp",
    source: "the OTLP exporter itself (present only with otlp.enabled)",
    capabilities: "none",
    metrics: &[&EXPORT_FAILURES, &EXPORTS, &LAST_SUCCESS],
    dynamic: &[],
};

#[derive(Debug, Default)]
pub struct Stats {
    pub failures: AtomicU64,
    pub exports: AtomicU64,
    /// Unix milliseconds.
    pub last_success_ms: AtomicU64,
}

/// Puts [`Stats`] into every snapshot (so they reach `/metrics` and OTLP alike).
pub(super) struct StatsCollector(pub(super) Arc<Stats>);

impl Collector for StatsCollector {
    fn name(&self) -> &'static str {
        "otlp"
    }
    fn collect(&mut self, _ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        out.push0(&EXPORT_FAILURES, self.0.failures.load(Ordering::Relaxed) as f64);
        out.push0(&EXPORTS, self.0.exports.load(Ordering::Relaxed) as f64);
        out.push0(
            &LAST_SUCCESS,
            self.0.last_success_ms.load(Ordering::Relaxed) as f64 / 1e3,
        );
        Ok(())
    }
}
