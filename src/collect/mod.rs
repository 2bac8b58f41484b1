//! Collectors and the scheduler that runs them on every tick.
//!
//! Each collector lives in its own file and implements [`Collector`]. A collector is
//! a thin adapter: it reads bytes (a `/proc` file, a netlink dump), hands them to a
//! pure parser in [`crate::parse`] or [`crate::netlink`], and emits samples.

pub mod conntrack;
pub mod netdev;
pub mod netstat;
pub mod nftables;
pub mod procmap;
pub mod scheduler;
pub mod sockets;
pub mod sockstat;
pub mod softnet;
pub mod sysctl;

use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::config::Config;
use crate::parse::ParseError;
use crate::snapshot::Emitter;

pub use scheduler::Scheduler;

/// Where a collector reads the kernel from. Roots are configurable so collectors run
/// on captured fixture trees in tests.
#[derive(Debug, Clone)]
pub struct CollectContext {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
}

impl CollectContext {
    pub fn new(procfs: impl Into<PathBuf>, sysfs: impl Into<PathBuf>) -> Self {
        CollectContext {
            procfs: procfs.into(),
            sysfs: sysfs.into(),
        }
    }

    /// True when reading the live kernel (netlink sources are only used then).
    pub fn is_live(&self) -> bool {
        self.procfs == Path::new("/proc")
    }

    pub fn proc_path(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }

    pub fn sys_path(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }

    pub fn read_proc(&self, rel: &str) -> Result<Vec<u8>, CollectError> {
        read_file(&self.proc_path(rel))
    }
}

pub fn read_file(path: &Path) -> Result<Vec<u8>, CollectError> {
    std::fs::read(path).map_err(|source| CollectError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
    #[error("{0}")]
    Unavailable(String),
    #[error("netlink: {0}")]
    Netlink(String),
}

impl CollectError {
    pub fn parse(path: PathBuf, source: ParseError) -> Self {
        CollectError::Parse { path, source }
    }
}

/// One self-contained source of samples.
pub trait Collector: Send + 'static {
    fn name(&self) -> &'static str;
    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError>;
}

/// Builds every collector the configuration enables.
pub fn build_enabled(cfg: &Config) -> anyhow::Result<Vec<Box<dyn Collector>>> {
    let c = &cfg.collectors;
    let mut out: Vec<Box<dyn Collector>> = Vec::new();
    if c.netdev.enabled {
        out.push(Box::new(netdev::Netdev::new(&c.netdev)?));
    }
    if c.sockstat.enabled {
        out.push(Box::new(sockstat::Sockstat::default()));
    }
    if c.netstat.enabled {
        out.push(Box::new(netstat::Netstat::default()));
    }
    if c.softnet.enabled {
        out.push(Box::new(softnet::Softnet));
    }
    if c.conntrack.enabled {
        out.push(Box::new(conntrack::Conntrack::new(&c.conntrack)));
    }
    if c.sockets.enabled {
        out.push(Box::new(sockets::Sockets::new(&c.sockets)));
    }
    if c.sysctl.enabled {
        out.push(Box::new(sysctl::Sysctl::default()));
    }
    if c.nftables.enabled {
        out.push(Box::new(nftables::Nftables::new(&c.nftables)?));
    }
    Ok(out)
}

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;

pub static COLLECTOR_UP: MetricDesc = MetricDesc::new(
    "netsight_collector_up",
    G,
    "",
    "1 when the collector's last run succeeded, 0 when it failed, timed out or is unavailable.",
    &["collector"],
    "netsight.collector.up",
);
pub static COLLECTOR_DURATION: MetricDesc = MetricDesc::new(
    "netsight_collector_duration_seconds",
    G,
    "seconds",
    "Wall time of the collector's last run.",
    &["collector"],
    "netsight.collector.duration",
);
pub static COLLECTOR_CPU: MetricDesc = MetricDesc::new(
    "netsight_collector_cpu_seconds_total",
    C,
    "seconds",
    "CPU time the collector has used since start.",
    &["collector"],
    "netsight.collector.cpu.time",
);
pub static COLLECTOR_ERRORS: MetricDesc = MetricDesc::new(
    "netsight_collector_errors_total",
    C,
    "",
    "Runs of the collector that failed or exceeded their time budget.",
    &["collector"],
    "netsight.collector.errors",
);
pub static COLLECTOR_INTERVAL: MetricDesc = MetricDesc::new(
    "netsight_collector_interval_seconds",
    G,
    "seconds",
    "Current cadence of the collector; above the tick interval when the CPU budget made it slow down.",
    &["collector"],
    "netsight.collector.interval",
);
pub static SNAPSHOT_TIMESTAMP: MetricDesc = MetricDesc::new(
    "netsight_snapshot_timestamp_seconds",
    G,
    "seconds",
    "Unix time at which the snapshot being served was taken.",
    &[],
    "netsight.snapshot.timestamp",
);
pub static SNAPSHOT_SERIES: MetricDesc = MetricDesc::new(
    "netsight_snapshot_series",
    G,
    "",
    "Number of series in the snapshot being served.",
    &[],
    "netsight.snapshot.series",
);
pub static BUILD_INFO: MetricDesc = MetricDesc::new(
    "netsight_build_info",
    G,
    "",
    "Always 1; labels carry the version.",
    &["version"],
    "netsight.build.info",
);

pub static CORE_DOC: CollectorDoc = CollectorDoc {
    collector: "core",
    source: "the scheduler itself",
    capabilities: "none",
    metrics: &[
        &COLLECTOR_UP,
        &COLLECTOR_DURATION,
        &COLLECTOR_CPU,
        &COLLECTOR_ERRORS,
        &COLLECTOR_INTERVAL,
        &SNAPSHOT_TIMESTAMP,
        &SNAPSHOT_SERIES,
        &BUILD_INFO,
    ],
    dynamic: &[],
};
