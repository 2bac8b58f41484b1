//! Interfaces: every `/proc/net/dev` counter and the link state, from one
//! rtnetlink `RTM_GETLINK` dump a tick on the live kernel (sysfs only for
//! `speed`), or from `/proc/net/dev` plus sysfs attributes under a captured
//! `--path.procfs` tree, when the dump fails (`source: auto`) or when configured.
//! Both sources give the same series with the same values.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use rustc_hash::FxHashMap;

use super::netlink_socket::{next_seq, DumpError, NetlinkSocket};
use super::{CollectContext, CollectError, Collector, KeptFiles};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::config::{NetdevConfig, NetdevSource};
use crate::netlink::rtnetlink::{getlink_dump_request, parse_getlink_dump, Link, LinkStats};
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
    source: "rtnetlink RTM_GETLINK (IFLA_STATS64, IFLA_OPERSTATE, IFLA_CARRIER, IFLA_CARRIER_CHANGES, IFLA_MTU, IFLA_TXQLEN) and /sys/class/net/<device>/speed; or /proc/net/dev and /sys/class/net/<device>/{operstate,carrier,carrier_changes,speed,mtu,tx_queue_len,type,statistics/rx_missed_errors}",
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

/// A device's sysfs `speed` under the rtnetlink source, re-read only when it can
/// have changed: the device is new or renamed, its operstate or carrier count
/// moved (renegotiation drops the carrier), or [`SPEED_REFRESH`] passed (a bond's
/// speed follows its ports without a carrier change). Reading `speed` runs the
/// driver's ethtool query under the RTNL lock, which a tick should not take for
/// every device of a busy host.
struct SpeedFile {
    name: String,
    files: KeptFiles,
    value: Option<f64>,
    read_at: Instant,
    operstate: Option<u8>,
    carrier_changes: Option<u32>,
    seen: bool,
}

/// Link dumps taken before giving up on one the kernel keeps flagging interrupted.
const DUMP_ATTEMPTS: usize = 3;

/// The longest a cached link speed is reported without re-reading it.
pub const SPEED_REFRESH: Duration = Duration::from_secs(30);

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

/// The counters as `/proc/net/dev` sums them (`dev_seq_printf_stats`), so both
/// sources report the same values.
fn proc_net_dev_counters(s: &LinkStats) -> [u64; 16] {
    let sum = |xs: &[u64]| xs.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    [
        s.rx_bytes,
        s.rx_packets,
        s.rx_errors,
        sum(&[s.rx_dropped, s.rx_missed_errors]),
        s.rx_fifo_errors,
        sum(&[s.rx_length_errors, s.rx_over_errors, s.rx_crc_errors, s.rx_frame_errors]),
        s.rx_compressed,
        s.multicast,
        s.tx_bytes,
        s.tx_packets,
        s.tx_errors,
        s.tx_dropped,
        s.tx_fifo_errors,
        s.collisions,
        sum(&[
            s.tx_carrier_errors,
            s.tx_aborted_errors,
            s.tx_window_errors,
            s.tx_heartbeat_errors,
        ]),
        s.tx_compressed,
    ]
}

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
            fallback_logged: None,
            proc: KeptFiles::default(),
            buf: Vec::new(),
            attr_buf: Vec::new(),
            devs: FxHashMap::default(),
        })
    }

    fn wanted(include: &Option<Regex>, exclude: &Option<Regex>, name: &str) -> bool {
        include.as_ref().is_none_or(|r| r.is_match(name)) && !exclude.as_ref().is_some_and(|r| r.is_match(name))
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

    /// One whole, consistent link dump into `self.links` (nothing is emitted
    /// from a dump that fails half-way, so the procfs fallback does not double a
    /// device). A dump the kernel flags interrupted (links came or went during
    /// it) can repeat or miss a device: it is taken again, a few times at most.
    fn dump_links(&mut self) -> Result<(), DumpError> {
        for _ in 0..DUMP_ATTEMPTS {
            if self.dump_links_once()? {
                continue;
            }
            // Each ifindex once, whatever the kernel sent.
            self.links.sort_by_key(|l| l.index);
            self.links.dedup_by_key(|l| l.index);
            if let Some(l) = self.links.iter().find(|l| l.stats.is_none()) {
                return Err(DumpError::Io {
                    op: "RTM_GETLINK",
                    source: std::io::Error::other(format!("link {} came without IFLA_STATS64", l.name)),
                });
            }
            return Ok(());
        }
        Err(DumpError::Io {
            op: "RTM_GETLINK",
            source: std::io::Error::other(format!("the link list changed during each of {DUMP_ATTEMPTS} dumps")),
        })
    }

    /// One dump; true when the kernel flagged it interrupted.
    fn dump_links_once(&mut self) -> Result<bool, DumpError> {
        let sock = match &mut self.link_socket {
            Some(s) => s,
            None => self
                .link_socket
                .insert(NetlinkSocket::open_protocol(netlink_sys::protocols::NETLINK_ROUTE)?),
        };
        let seq = next_seq();
        let links = &mut self.links;
        links.clear();
        let mut interrupted = false;
        let r = sock.exchange(&getlink_dump_request(seq), None, |datagram| {
            let walked = parse_getlink_dump(datagram, Some(seq), |l| {
                links.push(Link {
                    name: Cow::Owned(l.name.into_owned()),
                    ..l
                })
            })?;
            interrupted |= walked.interrupted;
            Ok(walked.done)
        });
        if r.is_err() {
            // The socket may still hold the rest of the failed dump.
            self.link_socket = None;
        }
        r.map(|()| interrupted)
    }

    fn collect_netlink(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), DumpError> {
        self.dump_links()?;
        let mut buf = std::mem::take(&mut self.attr_buf);
        let Netdev {
            include,
            exclude,
            links,
            speeds,
            ..
        } = self;
        links.sort_by(|a, b| a.name.cmp(&b.name));
        for l in links.iter() {
            if !Self::wanted(include, exclude, &l.name) {
                continue;
            }
            let stats = l.stats.unwrap_or_default();
            let speed = link_speed(speeds, ctx, l, &mut buf);
            emit_device(
                out,
                &Device {
                    name: &l.name,
                    counters: proc_net_dev_counters(&stats),
                    rx_missed: l.stats.map(|s| s.rx_missed_errors),
                    operstate: l
                        .operstate
                        .and_then(|s| OPERSTATES.get(usize::from(s)))
                        .copied()
                        .unwrap_or("unknown"),
                    link_type: Some(u64::from(l.link_type)),
                    // sysfs `carrier` (and so the procfs source) has none while
                    // the device is administratively down.
                    carrier: l.carrier.filter(|_| l.admin_up).map(u64::from),
                    carrier_changes: l.carrier_changes.map(u64::from),
                    speed,
                    mtu: l.mtu.map(u64::from),
                    txqlen: l.txqlen.map(u64::from),
                },
            );
        }
        speeds.retain(|_, s| std::mem::take(&mut s.seen));
        self.attr_buf = buf;
        // Files the procfs source kept open on a fallback tick are not needed now.
        self.devs.clear();
        self.proc = KeptFiles::default();
        Ok(())
    }

    fn collect_procfs(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let path = ctx.proc_path("net/dev");
        self.proc.read_into(&path, &mut self.buf)?;
        let devs = parse_proc_net_dev(&self.buf).map_err(|e| CollectError::parse(path, e))?;
        let mut attr_buf = std::mem::take(&mut self.attr_buf);
        for d in &devs {
            if !Self::wanted(&self.include, &self.exclude, &d.name) {
                continue;
            }
            let counters = [
                d.recv_bytes,
                d.recv_packets,
                d.recv_errs,
                d.recv_drop,
                d.recv_fifo,
                d.recv_frame,
                d.recv_compressed,
                d.recv_multicast,
                d.sent_bytes,
                d.sent_packets,
                d.sent_errs,
                d.sent_drop,
                d.sent_fifo,
                d.sent_colls,
                d.sent_carrier,
                d.sent_compressed,
            ];
            let files = self.dev_files(ctx, &d.name);
            sysfs_device(files, ctx, &d.name, counters, &mut attr_buf, out);
        }
        self.attr_buf = attr_buf;
        // Devices that are gone (or filtered out) release their files.
        self.devs.retain(|_, d| std::mem::take(&mut d.seen));
        // Speed files the netlink source kept are not needed while this one runs.
        self.speeds.clear();
        Ok(())
    }
}

/// The device's sysfs `speed`, read again only when it may have changed
/// ([`SpeedFile`]).
fn link_speed(
    speeds: &mut FxHashMap<u32, SpeedFile>,
    ctx: &CollectContext,
    l: &Link,
    buf: &mut Vec<u8>,
) -> Option<f64> {
    let now = Instant::now();
    let s = speeds.entry(l.index).or_insert_with(|| SpeedFile {
        name: String::new(),
        files: KeptFiles::default(),
        value: None,
        read_at: now,
        operstate: None,
        carrier_changes: None,
        seen: false,
    });
    let renamed = s.name != l.name;
    if renamed {
        s.name = l.name.to_string();
        s.files = KeptFiles::default();
    }
    if renamed
        || s.operstate != l.operstate
        || s.carrier_changes != l.carrier_changes
        || now.duration_since(s.read_at) >= SPEED_REFRESH
    {
        let path = ctx.sys_path(&format!("class/net/{}/speed", l.name));
        s.value = s
            .files
            .read_attribute_into(&path, buf)
            .ok()
            .and_then(|()| parse_speed_bits(buf))
            .map(|bits| bits / 8.0);
        s.read_at = now;
        s.operstate = l.operstate;
        s.carrier_changes = l.carrier_changes;
    }
    s.seen = true;
    s.value
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

/// The procfs source's link attributes, best effort: a device can vanish between
/// the two reads, and `carrier`/`speed` return EINVAL while the link is down.
fn sysfs_device(
    files: &mut DevFiles,
    ctx: &CollectContext,
    dev: &str,
    counters: [u64; 16],
    buf: &mut Vec<u8>,
    out: &mut Emitter,
) {
    let operstate = files
        .read_attr(ctx, dev, "operstate", buf)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    // -1 and EINVAL mean unknown.
    let speed = files
        .read_attr(ctx, dev, "speed", buf)
        .and_then(parse_speed_bits)
        .map(|bits| bits / 8.0);
    let mut attr_u64 = |a: &str| files.read_attr(ctx, dev, a, buf).and_then(parse_u64_attr);
    let device = Device {
        name: dev,
        counters,
        link_type: attr_u64("type"),
        carrier: attr_u64("carrier"),
        carrier_changes: attr_u64("carrier_changes"),
        speed,
        mtu: attr_u64("mtu"),
        txqlen: attr_u64("tx_queue_len"),
        rx_missed: attr_u64("statistics/rx_missed_errors"),
        operstate: &operstate,
    };
    emit_device(out, &device);
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
