//! The rtnetlink source: an `RTM_GETLINK` dump gives every device's counters
//! (`IFLA_STATS64`) and link state; only `speed` comes from sysfs.
//!
//! Link state changes seldom, counters every tick. The collector subscribes to
//! link notifications (`RTNLGRP_LINK`: a device added, removed, renamed, up or
//! down, carrier, MTU…) and, while none arrived since its last link dump, asks
//! only for the counters (`RTM_GETSTATS` with `IFLA_STATS_LINK_64`). The kernel
//! fills those from the driver alone, where a link dump also formats every
//! device's attributes, IPv4/IPv6 configuration and IPv6 statistics: at 301
//! devices the collector's CPU per tick went from 2.9 to 1.3 ms (BENCHMARKS.md,
//! "netdev between link events"). A
//! lost notification (`ENOBUFS`), a device the counters dump names that the last
//! link dump did not (or the reverse), an interrupted dump and [`LINK_RESYNC`]
//! all lead to a link dump again.
//!
//! The kernel announces a carrier change when its link watch runs, which
//! batches non-urgent events (for about a second, longer under load); it sets
//! the operational state at that moment too, so netsight's `operstate` is the
//! kernel's, while the `carrier` flag and `carrier_changes` can show a change
//! that long after `ip link` does. Carrier changes of a device that is
//! administratively down are not announced at all, nor an MTU a driver changes
//! on its own: those show at the next link dump, within [`LINK_RESYNC`].

use std::borrow::Cow;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::{emit_device, Device, Netdev};
use crate::collect::netlink_socket::NetlinkEvents;
use crate::collect::netlink_socket::{next_seq, DumpError, NetlinkSocket};
use crate::collect::{CollectContext, KeptFiles};
use crate::netlink::ctnetlink::CtnlError;
use crate::netlink::rtnetlink::{
    getlink_dump_request, getstats_dump_request, parse_getlink_dump, parse_getstats_dump, Link, LinkStats, RTMGRP_LINK,
};
use crate::parse::netdev::{parse_speed_bits, OPERSTATES};
use crate::snapshot::Emitter;

/// A device's sysfs `speed` under the rtnetlink source, re-read only when it can
/// have changed: the device is new or renamed, its operstate or carrier count
/// moved (renegotiation drops the carrier), or [`SPEED_REFRESH`] passed (a bond's
/// speed follows its ports without a carrier change). Reading `speed` runs the
/// driver's ethtool query under the RTNL lock, which a tick should not take for
/// every device of a busy host.
pub(super) struct SpeedFile {
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

/// The longest link attributes are reported from notifications alone, without
/// a link dump (a safety net: the kernel signals lost notifications).
pub const LINK_RESYNC: Duration = Duration::from_secs(60);

/// The longest a cached link speed is reported without re-reading it.
pub const SPEED_REFRESH: Duration = Duration::from_secs(30);

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

    /// Brings `self.links` up to date: only the counters while no link event
    /// arrived since the last link dump, a whole link dump otherwise.
    fn refresh_links(&mut self) -> Result<(), DumpError> {
        let quiet = self.link_events_quiet();
        let recent = self.links_read_at.is_some_and(|at| at.elapsed() < LINK_RESYNC);
        if quiet && recent && !self.stats_dump_unsupported && self.dump_stats_into_links() {
            return Ok(());
        }
        self.links_read_at = None;
        self.dump_links()?;
        self.links.sort_by(|a, b| a.name.cmp(&b.name));
        self.link_at.clear();
        self.link_at
            .extend(self.links.iter().enumerate().map(|(i, l)| (l.index, i)));
        self.links_read_at = Some(Instant::now());
        self.link_dumps += 1;
        Ok(())
    }

    /// True when the link notifications say nothing changed since the last
    /// look. Subscribes on the first call (which then says false: nothing is
    /// known yet), before the link dump that follows.
    fn link_events_quiet(&mut self) -> bool {
        if self.stats_dump_unsupported {
            return false;
        }
        let Some(events) = &mut self.link_events else {
            self.link_events = NetlinkEvents::subscribe(netlink_sys::protocols::NETLINK_ROUTE, RTMGRP_LINK).ok();
            return false;
        };
        match events.any_since_last_look() {
            Ok(any) => !any,
            Err(_) => {
                self.link_events = None;
                false
            }
        }
    }

    /// Puts fresh counters into the links of the last link dump; false when they
    /// do not cover exactly those links (a link dump is needed) or the dump
    /// failed.
    fn dump_stats_into_links(&mut self) -> bool {
        let Some(sock) = &mut self.link_socket else {
            return false;
        };
        let seq = next_seq();
        let (links, link_at) = (&mut self.links, &self.link_at);
        let (mut matched, mut unknown, mut interrupted) = (0usize, false, false);
        let r = sock.exchange(&getstats_dump_request(seq), None, |datagram| {
            let walked = parse_getstats_dump(datagram, Some(seq), |index, stats| {
                match link_at.get(&index).and_then(|&i| links.get_mut(i)) {
                    Some(l) => {
                        l.stats = Some(stats);
                        matched += 1;
                    }
                    None => unknown = true,
                }
            })?;
            interrupted |= walked.interrupted;
            Ok(walked.done)
        });
        match r {
            Ok(()) => !unknown && !interrupted && matched == self.links.len(),
            Err(DumpError::Reply(CtnlError::Kernel { errno })) => {
                // Before Linux 4.7 (EOPNOTSUPP), or refused by a sandbox: the
                // link dump it falls back to works, so keep to it.
                tracing::debug!(errno, "netdev: RTM_GETSTATS refused; dumping links every tick");
                self.stats_dump_unsupported = true;
                self.link_events = None;
                false
            }
            Err(_) => {
                // The socket may still hold the rest of the failed dump.
                self.link_socket = None;
                false
            }
        }
    }

    pub(super) fn collect_netlink(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), DumpError> {
        self.refresh_links()?;
        let mut buf = std::mem::take(&mut self.attr_buf);
        let Netdev {
            include,
            exclude,
            links,
            speeds,
            ..
        } = self;
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
