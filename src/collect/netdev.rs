//! Interfaces: every `/proc/net/dev` counter plus link attributes from sysfs.

use regex::Regex;

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{CollectContext, CollectError, Collector, KeptFiles};
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
    /// /proc/net/dev, kept open ([`KeptFiles`]).
    proc: KeptFiles,
    buf: Vec<u8>,
    /// Kept across ticks: a fresh 4 KiB buffer per tick cost an allocation, a
    /// memset and, with glibc, a consolidation of the free lists.
    attr_buf: Vec<u8>,
    /// Per device: its sysfs attribute files, kept open, and the inode of its
    /// sysfs directory when they were opened.
    devs: FxHashMap<String, DevFiles>,
}

/// A kept-open sysfs file follows the device, not the name: after `eth0` is
/// renamed and a new `eth0` created, the old descriptors would read the renamed
/// device. The directory `/sys/class/net/<name>` resolves to the device's own
/// sysfs directory, so its inode is checked every tick (one `stat` instead of an
/// open, stat, two reads and a close per attribute) and the files are reopened
/// when it changed.
struct DevFiles {
    dir: Option<u64>,
    files: KeptFiles,
    seen: bool,
}

impl Netdev {
    pub fn new(cfg: &NetdevConfig) -> anyhow::Result<Self> {
        let compile = |r: &Option<String>| r.as_deref().map(Regex::new).transpose();
        Ok(Netdev {
            include: compile(&cfg.include)?,
            exclude: compile(&cfg.exclude)?,
            proc: KeptFiles::default(),
            buf: Vec::new(),
            attr_buf: Vec::new(),
            devs: FxHashMap::default(),
        })
    }

    fn wanted(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(name))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(name))
    }

    /// The attribute files of `dev`, reopened if the name now belongs to another
    /// device.
    fn dev_files(&mut self, ctx: &CollectContext, dev: &str) -> &mut DevFiles {
        use std::os::unix::fs::MetadataExt;
        let dir = std::fs::metadata(ctx.sys_path(&format!("class/net/{dev}")))
            .ok()
            .map(|m| m.ino());
        let d = self.devs.entry(dev.to_string()).or_insert_with(|| DevFiles {
            dir,
            files: KeptFiles::default(),
            seen: false,
        });
        if d.dir != dir || dir.is_none() {
            d.dir = dir;
            d.files = KeptFiles::default();
        }
        d.seen = true;
        d
    }
}

impl DevFiles {
    fn read_attr<'b>(&mut self, ctx: &CollectContext, dev: &str, attr: &str, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
        self.files
            .read_attribute_into(&ctx.sys_path(&format!("class/net/{dev}/{attr}")), buf)
            .ok()
            .map(|()| buf.as_slice())
    }
}

impl Collector for Netdev {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let path = ctx.proc_path("net/dev");
        self.proc.read_into(&path, &mut self.buf)?;
        let devs = parse_proc_net_dev(&self.buf).map_err(|e| CollectError::parse(path, e))?;
        let mut attr_buf = std::mem::take(&mut self.attr_buf);
        for d in &devs {
            if !self.wanted(&d.name) {
                continue;
            }
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
            let files = self.dev_files(ctx, &d.name);
            sysfs_attributes(files, ctx, &d.name, &mut attr_buf, out);
        }
        self.attr_buf = attr_buf;
        // Devices that are gone (or filtered out) release their files.
        self.devs.retain(|_, d| std::mem::take(&mut d.seen));
        Ok(())
    }
}

/// sysfs attributes are best effort: a device can vanish between the two reads,
/// and `carrier`/`speed` return EINVAL while the link is down.
fn sysfs_attributes(files: &mut DevFiles, ctx: &CollectContext, dev: &str, buf: &mut Vec<u8>, out: &mut Emitter) {
    let dev_label = LabelValue::from(dev);
    let labels: LabelValues = Arc::from([dev_label.clone()]);
    let l = || labels.clone();
    let operstate = files
        .read_attr(ctx, dev, "operstate", buf)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    out.push(&UP, l(), if operstate == "up" { 1.0 } else { 0.0 });
    for state in OPERSTATES {
        out.push(
            &OPERSTATE,
            [dev_label.clone(), LabelValue::from(state)],
            (state == operstate) as u8 as f64,
        );
    }
    // Read before the closure below takes `files` (-1 and EINVAL mean unknown).
    let speed = files.read_attr(ctx, dev, "speed", buf).and_then(parse_speed_bits);
    let mut attr_u64 = |a: &str| files.read_attr(ctx, dev, a, buf).and_then(parse_u64_attr);
    let ty = attr_u64("type").map(|t| t.to_string()).unwrap_or_default();
    out.push(&INFO, [dev_label, ty.into(), operstate.into()], 1.0);
    if let Some(v) = attr_u64("carrier") {
        out.push(&CARRIER, l(), v as f64);
    }
    if let Some(v) = attr_u64("carrier_changes") {
        out.push(&CARRIER_CHANGES, l(), v as f64);
    }
    if let Some(v) = speed {
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
