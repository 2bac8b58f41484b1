//! Interfaces: every `/proc/net/dev` counter plus link attributes from sysfs.

use regex::Regex;

use std::sync::Arc;

use super::{CollectContext, CollectError, Collector};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::config::NetdevConfig;
use crate::parse::netdev::{parse_proc_net_dev, parse_speed_bits, parse_u64_attr, OPERSTATES};
use crate::snapshot::{Emitter, LabelValue, LabelValues};

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
    "netsight_network_speed_bits_per_second",
    G,
    "bits",
    "Negotiated link speed; absent when the driver reports none (-1).",
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
    source: "/proc/net/dev, /sys/class/net/<device>/{operstate,carrier,carrier_changes,speed,mtu,tx_queue_len,type,statistics/rx_missed_errors}",
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
}

impl Netdev {
    pub fn new(cfg: &NetdevConfig) -> anyhow::Result<Self> {
        let compile = |r: &Option<String>| r.as_deref().map(Regex::new).transpose();
        Ok(Netdev {
            include: compile(&cfg.include)?,
            exclude: compile(&cfg.exclude)?,
        })
    }

    fn wanted(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(name))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(name))
    }
}

fn read_attr(ctx: &CollectContext, dev: &str, attr: &str) -> Option<Vec<u8>> {
    std::fs::read(ctx.sys_path(&format!("class/net/{dev}/{attr}"))).ok()
}

impl Collector for Netdev {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let path = ctx.proc_path("net/dev");
        let bytes = super::read_file(&path)?;
        let devs = parse_proc_net_dev(&bytes).map_err(|e| CollectError::parse(path, e))?;
        for d in devs.iter().filter(|d| self.wanted(&d.name)) {
            // One shared label set per device rather than a Vec and an Arc per sample.
            let labels: LabelValues = Arc::from([LabelValue::from(d.name.as_str())]);
            let l = || labels.clone();
            for (desc, v) in [
                (&RX_BYTES, d.recv_bytes),
                (&RX_PACKETS, d.recv_packets),
                (&RX_ERRS, d.recv_errs),
                (&RX_DROP, d.recv_drop),
                (&RX_FIFO, d.recv_fifo),
                (&RX_FRAME, d.recv_frame),
                (&RX_COMPRESSED, d.recv_compressed),
                (&RX_MULTICAST, d.recv_multicast),
                (&TX_BYTES, d.sent_bytes),
                (&TX_PACKETS, d.sent_packets),
                (&TX_ERRS, d.sent_errs),
                (&TX_DROP, d.sent_drop),
                (&TX_FIFO, d.sent_fifo),
                (&TX_COLLS, d.sent_colls),
                (&TX_CARRIER, d.sent_carrier),
                (&TX_COMPRESSED, d.sent_compressed),
            ] {
                out.push(desc, l(), v as f64);
            }
            self.sysfs_attributes(ctx, &d.name, out);
        }
        Ok(())
    }
}

impl Netdev {
    /// sysfs attributes are best effort: a device can vanish between the two reads,
    /// and `carrier`/`speed` return EINVAL while the link is down.
    fn sysfs_attributes(&self, ctx: &CollectContext, dev: &str, out: &mut Emitter) {
        let labels: LabelValues = Arc::from([LabelValue::from(dev)]);
        let l = || labels.clone();
        let attr_u64 = |a: &str| read_attr(ctx, dev, a).and_then(|b| parse_u64_attr(&b));
        let operstate = read_attr(ctx, dev, "operstate")
            .and_then(|b| String::from_utf8(b).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        out.push(&UP, l(), if operstate == "up" { 1.0 } else { 0.0 });
        for state in OPERSTATES {
            out.push(
                &OPERSTATE,
                vec![dev.to_string(), state.to_string()],
                (state == operstate) as u8 as f64,
            );
        }
        let ty = attr_u64("type").map(|t| t.to_string()).unwrap_or_default();
        out.push(&INFO, vec![dev.to_string(), ty, operstate], 1.0);
        if let Some(v) = attr_u64("carrier") {
            out.push(&CARRIER, l(), v as f64);
        }
        if let Some(v) = attr_u64("carrier_changes") {
            out.push(&CARRIER_CHANGES, l(), v as f64);
        }
        if let Some(v) = read_attr(ctx, dev, "speed").and_then(|b| parse_speed_bits(&b)) {
            out.push(&SPEED, l(), v);
        }
        if let Some(v) = attr_u64("mtu") {
            out.push(&MTU, l(), v as f64);
        }
        if let Some(v) = attr_u64("tx_queue_len") {
            out.push(&TXQLEN, l(), v as f64);
        }
        if let Some(v) = attr_u64("statistics/rx_missed_errors") {
            out.push(&RX_MISSED, l(), v as f64);
        }
    }
}
