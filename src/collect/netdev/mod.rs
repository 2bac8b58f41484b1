//! Interfaces: every `/proc/net/dev` counter and the link state, from rtnetlink
//! on the live kernel (an `RTM_GETLINK` dump when a link changed, only the
//! counters with `RTM_GETSTATS` on the ticks between; sysfs only for `speed`),
//! or from `/proc/net/dev` plus sysfs attributes under a captured
//! `--path.procfs` tree, when the dump fails (`source: auto`) or when configured.
//! Both sources give the same series with the same values, except that rtnetlink
//! learns of a carrier change when the kernel announces it (see [`rtnetlink`]):
//! `rtnetlink` and `procfs` below read them, this module filters and emits them.

use std::sync::Arc;

use regex::Regex;
use rustc_hash::FxHashMap;

use super::netlink_socket::{NetlinkEvents, NetlinkSocket};
use super::{CollectContext, CollectError, Collector, KeptFiles};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::config::{NetdevConfig, NetdevSource};
use crate::netlink::rtnetlink::Link;
use crate::parse::netdev::OPERSTATES;
use crate::snapshot::{Emitter, LabelValue, LabelValues};

mod procfs;
mod rtnetlink;

use procfs::DevFiles;
use rtnetlink::SpeedFile;
pub use rtnetlink::SPEED_REFRESH;

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;
const L: &[&str] = &["device"];

macro_rules! counter {
    ($id:ident, $name:literal, $unit:literal, $help:literal, $otel:literal) => {
        pub static $id: MetricDesc = MetricDesc::new($name, C, $unit, $help, L, $otel);
    };
}

counter!(
    RX_BYTES,
    "netsight_network_receive_bytes_total",
    "bytes",
    "Bytes received.",
    "system.network.io"
);
counter!(
    RX_PACKETS,
    "netsight_network_receive_packets_total",
    "packets",
    "Packets received.",
    "system.network.packet.count"
);
counter!(
    RX_ERRS,
    "netsight_network_receive_errors_total",
    "packets",
    "Receive errors (rx_errors).",
    "system.network.errors"
);
counter!(
    RX_DROP,
    "netsight_network_receive_drop_total",
    "packets",
    "Received packets dropped: rx_dropped plus rx_missed_errors, as /proc/net/dev sums them.",
    "system.network.packet.dropped"
);
counter!(
    RX_FIFO,
    "netsight_network_receive_fifo_total",
    "packets",
    "Receive FIFO overruns.",
    "netsight.network.receive.fifo"
);
counter!(
    RX_FRAME,
    "netsight_network_receive_frame_total",
    "packets",
    "Receive frame errors: length, over, CRC and frame errors summed.",
    "netsight.network.receive.frame"
);
counter!(
    RX_COMPRESSED,
    "netsight_network_receive_compressed_total",
    "packets",
    "Compressed packets received.",
    "netsight.network.receive.compressed"
);
counter!(
    RX_MULTICAST,
    "netsight_network_receive_multicast_total",
    "packets",
    "Multicast packets received.",
    "netsight.network.receive.multicast"
);
counter!(
    RX_MISSED,
    "netsight_network_receive_missed_errors_total",
    "packets",
    "Packets the NIC missed for lack of ring-buffer space (sysfs rx_missed_errors).",
    "netsight.network.receive.missed"
);
counter!(
    TX_BYTES,
    "netsight_network_transmit_bytes_total",
    "bytes",
    "Bytes transmitted.",
    "system.network.io"
);
counter!(
    TX_PACKETS,
    "netsight_network_transmit_packets_total",
    "packets",
    "Packets transmitted.",
    "system.network.packet.count"
);
counter!(
    TX_ERRS,
    "netsight_network_transmit_errors_total",
    "packets",
    "Transmit errors.",
    "system.network.errors"
);
counter!(
    TX_DROP,
    "netsight_network_transmit_drop_total",
    "packets",
    "Transmitted packets dropped.",
    "system.network.packet.dropped"
);
counter!(
    TX_FIFO,
    "netsight_network_transmit_fifo_total",
    "packets",
    "Transmit FIFO errors.",
    "netsight.network.transmit.fifo"
);
counter!(
    TX_COLLS,
    "netsight_network_transmit_colls_total",
    "packets",
    "Collisions.",
    "netsight.network.transmit.collisions"
);
counter!(
    TX_CARRIER,
    "netsight_network_transmit_carrier_total",
    "packets",
    "Carrier errors: carrier, aborted, window and heartbeat errors summed.",
    "netsight.network.transmit.carrier"
);
counter!(
    TX_COMPRESSED,
    "netsight_network_transmit_compressed_total",
    "packets",
    "Compressed packets transmitted.",
    "netsight.network.transmit.compressed"
);
counter!(
    CARRIER_CHANGES,
    "netsight_network_carrier_changes_total",
    "",
    "Carrier up/down transitions (link flaps).",
    "netsight.network.carrier.changes"
);

pub static UP: MetricDesc = MetricDesc::new(
    "netsight_network_up",
    G,
    "",
    "1 when operstate is up.",
    L,
    "netsight.network.up",
);
pub static OPERSTATE: MetricDesc = MetricDesc::new(
    "netsight_network_operstate",
    G,
    "",
    "1 for the interface's current RFC 2863 operational state.",
    &["device", "operstate"],
    "netsight.network.operstate",
);
pub static CARRIER: MetricDesc = MetricDesc::new(
    "netsight_network_carrier",
    G,
    "",
    "1 when the link has carrier; absent when the device reports none (administratively down).",
    L,
    "netsight.network.carrier",
);
pub static SPEED: MetricDesc = MetricDesc::new(
    "netsight_network_speed_bytes_per_second",
    G,
    "bytes_per_second",
    "Negotiated link speed in bytes per second (sysfs speed in Mb/s × 125,000); absent when the driver reports none (-1).",
    L,
    "netsight.network.speed",
);
pub static MTU: MetricDesc = MetricDesc::new(
    "netsight_network_mtu_bytes",
    G,
    "bytes",
    "MTU.",
    L,
    "netsight.network.mtu",
);
pub static TXQLEN: MetricDesc = MetricDesc::new(
    "netsight_network_transmit_queue_length",
    G,
    "packets",
    "tx_queue_len.",
    L,
    "netsight.network.transmit.queue.length",
);
pub static INFO: MetricDesc = MetricDesc::new(
    "netsight_network_info",
    G,
    "",
    "Always 1; labels carry the ARPHRD type number and the operstate.",
    &["device", "type", "operstate"],
    "netsight.network.info",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "netdev",
    source: "rtnetlink RTM_GETLINK (IFLA_STATS64, IFLA_OPERSTATE, IFLA_CARRIER, IFLA_CARRIER_CHANGES, IFLA_MTU, IFLA_TXQLEN) when a link changed (RTNLGRP_LINK notifications), RTM_GETSTATS (IFLA_STATS_LINK_64) on the ticks between, and /sys/class/net/<device>/speed; or /proc/net/dev and /sys/class/net/<device>/{operstate,carrier,carrier_changes,speed,mtu,tx_queue_len,type,statistics/rx_missed_errors}",
    capabilities: "none",
    metrics: &[
        &RX_BYTES, &RX_PACKETS, &RX_ERRS, &RX_DROP, &RX_FIFO, &RX_FRAME, &RX_COMPRESSED,
        &RX_MULTICAST, &RX_MISSED, &TX_BYTES, &TX_PACKETS, &TX_ERRS, &TX_DROP, &TX_FIFO,
        &TX_COLLS, &TX_CARRIER, &TX_COMPRESSED, &CARRIER_CHANGES, &UP, &OPERSTATE, &CARRIER,
        &SPEED, &MTU, &TXQLEN, &INFO,
    ],
    dynamic: &[],
};

pub struct Netdev {
    include: Option<Regex>,
    exclude: Option<Regex>,
    source: NetdevSource,
    /// rtnetlink source: the socket (kept across ticks), the last dump, and each
    /// device's sysfs `speed`, which no link dump carries.
    link_socket: Option<NetlinkSocket>,
    links: Vec<Link<'static>>,
    speeds: FxHashMap<u32, SpeedFile>,
    /// Between link events only the counters are dumped ([`rtnetlink`]): the
    /// link notifications, where in `links` each ifindex is, when `links` came
    /// from a whole link dump, and how many of those there were.
    link_events: Option<NetlinkEvents>,
    link_at: FxHashMap<u32, usize>,
    links_read_at: Option<std::time::Instant>,
    link_dumps: u64,
    /// The kernel refused `RTM_GETSTATS` (before Linux 4.7): a link dump each tick.
    stats_dump_unsupported: bool,
    /// The rtnetlink failure already logged (`auto` falls back to procfs then).
    fallback_logged: Option<String>,
    /// procfs source: /proc/net/dev, kept open ([`KeptFiles`]).
    proc: KeptFiles,
    buf: Vec<u8>,
    /// Kept across ticks: a fresh 4 KiB buffer per tick cost an allocation, a
    /// memset and, with glibc, a consolidation of the free lists.
    attr_buf: Vec<u8>,
    /// Per device: its sysfs attribute files, kept open, and the inode of its
    /// sysfs directory when they were opened.
    devs: FxHashMap<String, DevFiles>,
}

/// One device's values, from either source.
struct Device<'a> {
    name: &'a str,
    /// In [`COUNTERS`] order, with `/proc/net/dev`'s sums.
    counters: [u64; 16],
    rx_missed: Option<u64>,
    operstate: &'a str,
    link_type: Option<u64>,
    carrier: Option<u64>,
    carrier_changes: Option<u64>,
    speed: Option<f64>,
    mtu: Option<u64>,
    txqlen: Option<u64>,
}

static COUNTERS: [&MetricDesc; 16] = [
    &RX_BYTES,
    &RX_PACKETS,
    &RX_ERRS,
    &RX_DROP,
    &RX_FIFO,
    &RX_FRAME,
    &RX_COMPRESSED,
    &RX_MULTICAST,
    &TX_BYTES,
    &TX_PACKETS,
    &TX_ERRS,
    &TX_DROP,
    &TX_FIFO,
    &TX_COLLS,
    &TX_CARRIER,
    &TX_COMPRESSED,
];

impl Netdev {
    pub fn new(cfg: &NetdevConfig) -> anyhow::Result<Self> {
        let compile = |r: &Option<String>| r.as_deref().map(Regex::new).transpose();
        Ok(Netdev {
            include: compile(&cfg.include)?,
            exclude: compile(&cfg.exclude)?,
            source: cfg.source,
            link_socket: None,
            links: Vec::new(),
            speeds: FxHashMap::default(),
            link_events: None,
            link_at: FxHashMap::default(),
            links_read_at: None,
            link_dumps: 0,
            stats_dump_unsupported: false,
            fallback_logged: None,
            proc: KeptFiles::default(),
            buf: Vec::new(),
            attr_buf: Vec::new(),
            devs: FxHashMap::default(),
        })
    }

    /// Whole link dumps taken so far on the rtnetlink source; the ticks between
    /// them only dumped counters (for tests and diagnostics).
    pub fn link_dumps(&self) -> u64 {
        self.link_dumps
    }

    fn wanted(include: &Option<Regex>, exclude: &Option<Regex>, name: &str) -> bool {
        include.as_ref().is_none_or(|r| r.is_match(name)) && !exclude.as_ref().is_some_and(|r| r.is_match(name))
    }
}

impl Collector for Netdev {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let netlink = match self.source {
            NetdevSource::Auto => ctx.is_live(),
            NetdevSource::Netlink => true,
            NetdevSource::Procfs => false,
        };
        if netlink {
            match self.collect_netlink(ctx, out) {
                Ok(()) => {
                    self.fallback_logged = None;
                    return Ok(());
                }
                Err(e) if self.source == NetdevSource::Netlink => {
                    return Err(CollectError::Netlink(format!("RTM_GETLINK dump: {e}")));
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.fallback_logged.as_ref() != Some(&why) {
                        tracing::warn!(error = %why, "netdev: rtnetlink link dump failed; reading /proc/net/dev and sysfs instead");
                        self.fallback_logged = Some(why);
                    }
                }
            }
        }
        self.collect_procfs(ctx, out)
    }
}

fn emit_device(out: &mut Emitter, d: &Device) {
    let dev_label = LabelValue::from(d.name);
    // One shared label set per device rather than a Vec and an Arc per sample.
    let labels: LabelValues = Arc::from([dev_label.clone()]);
    let l = || labels.clone();
    for (desc, v) in COUNTERS.iter().zip(d.counters) {
        out.push(*desc, l(), v as f64);
    }
    out.push(&UP, l(), if d.operstate == "up" { 1.0 } else { 0.0 });
    for state in OPERSTATES {
        out.push(
            &OPERSTATE,
            [dev_label.clone(), LabelValue::from(state)],
            (state == d.operstate) as u8 as f64,
        );
    }
    let ty = d.link_type.map(|t| t.to_string()).unwrap_or_default();
    out.push(&INFO, [dev_label, ty.into(), LabelValue::from(d.operstate)], 1.0);
    let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
    for (desc, v) in [
        (&CARRIER, as_f64(d.carrier)),
        (&CARRIER_CHANGES, as_f64(d.carrier_changes)),
        (&SPEED, d.speed),
        (&MTU, as_f64(d.mtu)),
        (&TXQLEN, as_f64(d.txqlen)),
        (&RX_MISSED, as_f64(d.rx_missed)),
    ] {
        if let Some(v) = v {
            out.push(desc, l(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mtu(c: &mut Netdev, ctx: &CollectContext, dev: &str) -> Option<f64> {
        let mut out = Emitter::new();
        c.collect(ctx, &mut out).expect("collect");
        let f = out.into_families();
        f.iter()
            .find(|f| f.desc.name == MTU.name)
            .and_then(|f| f.samples.iter().find(|s| s.labels.first().is_some_and(|l| &**l == dev)))
            .and_then(|s| s.value.as_f64())
    }

    /// Kept-open attribute files follow a device, not its name: after a rename and
    /// a new device under the old name, the name's values are the new device's.
    #[test]
    fn kept_attributes_follow_the_name_across_a_rename() {
        let root = std::env::temp_dir().join(format!("netsight-netdev-{}", std::process::id()));
        let (proc, sys) = (root.join("proc"), root.join("sys"));
        std::fs::create_dir_all(proc.join("net")).expect("mkdir");
        let dev_line = |name: &str| format!("{name}: 1 2 0 0 0 0 0 0 3 4 0 0 0 0 0 0\n");
        let header = "Inter-| Receive | Transmit\n face |bytes packets|bytes packets\n";
        std::fs::write(proc.join("net/dev"), format!("{header}{}", dev_line("eth0"))).expect("write");
        let dir = |name: &str| sys.join("class/net").join(name);
        std::fs::create_dir_all(dir("eth0")).expect("mkdir");
        std::fs::write(dir("eth0").join("mtu"), "1500\n").expect("write");
        let ctx = CollectContext::new(&proc, &sys);
        let mut c = Netdev::new(&NetdevConfig {
            enabled: true,
            include: None,
            exclude: None,
            source: NetdevSource::Auto,
        })
        .expect("netdev");
        assert_eq!(mtu(&mut c, &ctx, "eth0"), Some(1500.0));

        // Renamed to eth1; a new eth0 appears.
        std::fs::rename(dir("eth0"), dir("eth1")).expect("rename");
        std::fs::create_dir_all(dir("eth0")).expect("mkdir");
        std::fs::write(dir("eth0").join("mtu"), "9000\n").expect("write");
        std::fs::write(
            proc.join("net/dev"),
            format!("{header}{}{}", dev_line("eth0"), dev_line("eth1")),
        )
        .expect("write");
        assert_eq!(mtu(&mut c, &ctx, "eth0"), Some(9000.0));
        assert_eq!(mtu(&mut c, &ctx, "eth1"), Some(1500.0));

        // A device that is gone releases its files.
        std::fs::write(proc.join("net/dev"), format!("{header}{}", dev_line("eth1"))).expect("write");
        mtu(&mut c, &ctx, "eth1");
        assert_eq!(c.devs.len(), 1);
        let _ = std::fs::remove_dir_all(&root);
    }
}
