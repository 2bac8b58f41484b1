//! Per-CPU packet processing from `/proc/net/softnet_stat`.

use super::{CollectContext, CollectError, Collector, KeptFiles};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::parse::softnet::parse_softnet;
use crate::snapshot::{Emitter, IntoLabels, LabelValues};

const C: MetricKind = MetricKind::Counter;
const L: &[&str] = &["cpu"];

pub static PROCESSED: MetricDesc = MetricDesc::new(
    "netsight_softnet_processed_total",
    C,
    "packets",
    "Packets processed by the CPU's backlog/NAPI.",
    L,
    "netsight.softnet.processed",
);
pub static DROPPED: MetricDesc = MetricDesc::new(
    "netsight_softnet_dropped_total",
    C,
    "packets",
    "Packets dropped because the backlog queue was full (net.core.netdev_max_backlog).",
    L,
    "netsight.softnet.dropped",
);
pub static SQUEEZED: MetricDesc = MetricDesc::new(
    "netsight_softnet_times_squeezed_total",
    C,
    "",
    "NET_RX runs that ended with work left (net.core.netdev_budget / netdev_budget_usecs exhausted).",
    L,
    "netsight.softnet.time_squeeze",
);
pub static RPS: MetricDesc = MetricDesc::new(
    "netsight_softnet_received_rps_total",
    C,
    "",
    "Inter-processor interrupts received for RPS.",
    L,
    "netsight.softnet.received_rps",
);
pub static FLOW_LIMIT: MetricDesc = MetricDesc::new(
    "netsight_softnet_flow_limit_count_total",
    C,
    "packets",
    "Packets dropped by the flow limit.",
    L,
    "netsight.softnet.flow_limit",
);
pub static BACKLOG: MetricDesc = MetricDesc::new(
    "netsight_softnet_backlog_length",
    MetricKind::Gauge,
    "packets",
    "Current backlog queue length (kernels ≥ 5.10).",
    L,
    "netsight.softnet.backlog.length",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "softnet",
    source: "/proc/net/softnet_stat",
    capabilities: "none",
    metrics: &[&PROCESSED, &DROPPED, &SQUEEZED, &RPS, &FLOW_LIMIT, &BACKLOG],
    dynamic: &[],
};

#[derive(Default)]
pub struct Softnet {
    files: KeptFiles,
    buf: Vec<u8>,
}

impl Collector for Softnet {
    fn name(&self) -> &'static str {
        "softnet"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let path = ctx.proc_path("net/softnet_stat");
        self.files.read_into(&path, &mut self.buf)?;
        let cpus = parse_softnet(&self.buf).map_err(|e| CollectError::parse(path, e))?;
        for c in cpus {
            let cpu: LabelValues = [c.cpu.to_string()].into_labels();
            let l = || cpu.clone();
            out.push(&PROCESSED, l(), c.processed as f64);
            out.push(&DROPPED, l(), c.dropped as f64);
            out.push(&SQUEEZED, l(), c.time_squeeze as f64);
            if let Some(v) = c.received_rps {
                out.push(&RPS, l(), v as f64);
            }
            if let Some(v) = c.flow_limit_count {
                out.push(&FLOW_LIMIT, l(), v as f64);
            }
            if let Some(v) = c.backlog_len {
                out.push(&BACKLOG, l(), v as f64);
            }
        }
        Ok(())
    }
}
