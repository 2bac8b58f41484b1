//! `netsight analyze bandwidth`: per-interface receive/transmit rates and link
//! utilisation (the netdev collector's `/proc/net/dev` parser and sysfs `speed`),
//! and the processes and connections that moved the bytes: two sock_diag dumps
//! (through the sockets collector's [`visit_sockets`]) `--sample` apart, with the
//! per-socket deltas of `tcpi_bytes_acked` (sent) and `tcpi_bytes_received`.
//!
//! A socket is matched between the dumps by its 4-tuple and inode (an inode that
//! became 0 means the application closed it since: still the same connection). A
//! socket seen only in the second dump counts its full bytes; one seen only in the
//! first closed during the sample and its last bytes are not counted.
//!
//! [`visit_sockets`]: crate::collect::sockets::visit_sockets

use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Args;
use procfs_core::net::DeviceStatus;
use serde::Serialize;

use super::common::{
    canonical_ip, dump_sockets, finish, human_bits_per_second, human_bytes, open_diag, percent, render_limitations,
    render_warnings, require_live, section, table, Failure, Limitation, Owner, Owners, Report, Sock, Warning,
    NO_PROCESSES_HINT,
};
use crate::cli::{load_config, CommonArgs};
use crate::collect::sockets::SocketDumps;
use crate::collect::CollectContext;
use crate::netlink::sock_diag::{state, ALL_BUT_LISTEN};
use crate::parse::netdev::{parse_proc_net_dev, parse_speed_bits};

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the sample must be longer than zero: rates need two reads".into());
    }
    Ok(d)
}

#[derive(Args, Debug)]
pub struct BandwidthArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Only this interface (and the connections whose local address is on it).
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// Rank processes by bytes (reads /proc/*/fd; other users' processes need
    /// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH).
    #[arg(long)]
    pub processes: bool,
    /// Time between the two reads.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration, default_value = "5s")]
    pub sample: Duration,
    /// Print JSON (shape in docs/analyze.md).
    #[arg(long)]
    pub json: bool,
    /// Rows in the ranked lists (0: all).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

#[derive(Debug, Serialize)]
pub struct BandwidthReport {
    pub sample_seconds: f64,
    pub interfaces: Vec<InterfaceRow>,
    /// `null` without `--processes`.
    pub processes: Option<Vec<ProcessRow>>,
    pub connections: Vec<ConnectionRow>,
    pub accounted: Accounted,
    /// Connections seen in the first dump only: they closed during the sample and
    /// their last bytes are not counted.
    pub closed_during_sample: u64,
    pub warnings: Vec<Warning>,
    pub limitations: Vec<Limitation>,
}

#[derive(Debug, Serialize)]
pub struct InterfaceRow {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes_per_second: f64,
    pub tx_bytes_per_second: f64,
    pub rx_packets_per_second: f64,
    pub tx_packets_per_second: f64,
    /// From sysfs `speed`; `null` when the driver reports none (loopback, most
    /// virtual devices, a link that is down).
    pub speed_bits_per_second: Option<f64>,
    pub rx_utilization_percent: Option<f64>,
    pub tx_utilization_percent: Option<f64>,
    /// TCP payload (sent + received) of the connections whose local address is on
    /// this interface.
    pub connection_bytes: u64,
    /// `connection_bytes` / (`rx_bytes` + `tx_bytes`).
    pub connection_share_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessRow {
    pub pid: Option<u32>,
    /// The process name, or `(kernel)` for sockets no process holds any more and
    /// `(unknown)` for processes netsight could not inspect.
    pub process: String,
    pub connections: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub total_bytes: u64,
    pub bytes_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRow {
    pub local: String,
    pub remote: String,
    pub state: &'static str,
    /// Interface of the local address, `null` when none matches.
    pub interface: Option<String>,
    pub pid: Option<u32>,
    pub process: Option<String>,
    /// Bytes acknowledged by the peer during the sample (tcpi_bytes_acked delta).
    pub sent_bytes: u64,
    /// Bytes received during the sample (tcpi_bytes_received delta).
    pub received_bytes: u64,
    pub bytes_per_second: f64,
    /// Not in the first dump: opened during the sample, full bytes counted.
    pub new: bool,
}

#[derive(Debug, Serialize)]
pub struct Accounted {
    /// TCP payload of every counted connection on the selected interfaces.
    pub connection_bytes: u64,
    /// rx + tx bytes of the selected interfaces (headers included).
    pub interface_bytes: u64,
    pub share_percent: f64,
}

pub fn run(args: BandwidthArgs) -> anyhow::Result<u8> {
    let cfg = load_config(&args.common)?;
    let ctx = CollectContext::new(&cfg.paths.procfs, &cfg.paths.sysfs);
    let result = collect(&ctx, &args);
    finish("bandwidth", args.json, result)
}

/// Sockets whose tcp_info carries byte counts: not listeners, TIME_WAIT or
/// request sockets.
const DUMP_STATES: u32 =
    ALL_BUT_LISTEN & !(1 << state::TIME_WAIT) & !(1 << state::SYN_RECV) & !(1 << state::NEW_SYN_RECV);

fn read_netdev(ctx: &CollectContext) -> Result<Vec<DeviceStatus>, Failure> {
    let bytes = ctx.read_proc("net/dev").map_err(|e| Failure::Other(e.to_string()))?;
    parse_proc_net_dev(&bytes).map_err(|e| Failure::Other(format!("{}: {e}", ctx.proc_path("net/dev").display())))
}

fn collect(ctx: &CollectContext, args: &BandwidthArgs) -> Result<BandwidthReport, Failure> {
    require_live(ctx, "connection bytes")?;
    let mut limitations = Vec::new();
    let mut diag = open_diag()?;
    let dumps = SocketDumps {
        tcp_states: DUMP_STATES,
        tcp_info: true,
        udp_states: 0,
    };
    let t0 = Instant::now();
    let dev0 = read_netdev(ctx)?;
    let first = dump_sockets(&mut diag, &dumps, &mut limitations)?;
    std::thread::sleep(args.sample.saturating_sub(t0.elapsed()));
    let t1 = Instant::now();
    let dev1 = read_netdev(ctx)?;
    let second = dump_sockets(&mut diag, &dumps, &mut limitations)?;
    let seconds = (t1 - t0).as_secs_f64();
    if let Some(name) = &args.interface {
        if !dev1.iter().any(|d| &d.name == name) {
            let names = dev1.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(Failure::Other(format!("no interface {name:?} (interfaces: {names})")));
        }
    }
    if second
        .iter()
        .any(|s| s.bytes_acked.is_none() || s.bytes_received.is_none())
    {
        limitations.push(Limitation {
            what: "connection_bytes".into(),
            missing_capabilities: vec![],
            message: "this kernel's tcp_info has no tcpi_bytes_acked/tcpi_bytes_received (Linux < 4.1): connection \
                      bytes are not counted"
                .into(),
        });
    }
    // After the second dump, so sockets opened during the sample are attributed.
    let owner_of: Option<Vec<Owner>> = args.processes.then(|| {
        let (owners, limitation) = Owners::scan(ctx).attribute(&second);
        limitations.extend(limitation);
        owners
    });
    let speeds: BTreeMap<String, f64> = dev1
        .iter()
        .filter_map(|d| {
            let b = std::fs::read(ctx.sys_path(&format!("class/net/{}/speed", d.name))).ok()?;
            Some((d.name.clone(), parse_speed_bits(&b)?))
        })
        .collect();
    let input = Input {
        seconds,
        dev0: &dev0,
        dev1: &dev1,
        speeds: &speeds,
        first: &first,
        second: &second,
        owners: owner_of.as_deref(),
        addrs: &interface_addresses(),
        interface: args.interface.as_deref(),
        top: args.top,
    };
    let mut report = analyze(&input);
    report.limitations = limitations;
    Ok(report)
}

/// Everything the pure analysis needs.
pub struct Input<'a> {
    pub seconds: f64,
    pub dev0: &'a [DeviceStatus],
    pub dev1: &'a [DeviceStatus],
    pub speeds: &'a BTreeMap<String, f64>,
    pub first: &'a [Sock],
    pub second: &'a [Sock],
    /// `owners[i]` holds `second[i]`.
    pub owners: Option<&'a [Owner]>,
    /// (interface, address, is loopback).
    pub addrs: &'a [(String, IpAddr, bool)],
    pub interface: Option<&'a str>,
    pub top: usize,
}

/// The interface a local address belongs to; loopback addresses (127/8, ::1)
/// belong to the loopback device.
fn interface_of(ip: IpAddr, addrs: &[(String, IpAddr, bool)]) -> Option<String> {
    let ip = canonical_ip(ip);
    if ip.is_loopback() {
        return addrs
            .iter()
            .find(|a| a.2)
            .map(|a| a.0.clone())
            .or_else(|| Some("lo".into()));
    }
    addrs.iter().find(|a| canonical_ip(a.1) == ip).map(|a| a.0.clone())
}

/// Per-socket (sent, received) during the sample, and whether it is new.
fn socket_deltas(first: &[Sock], second: &[Sock]) -> (Vec<(u64, u64, bool)>, u64) {
    let mut index: HashMap<(SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
    for (i, s) in first.iter().enumerate() {
        index.entry((s.local, s.remote)).or_default().push(i);
    }
    let mut matched = vec![false; first.len()];
    let mut out = Vec::with_capacity(second.len());
    for s in second {
        let sent = s.bytes_acked.unwrap_or(0);
        let recv = s.bytes_received.unwrap_or(0);
        let prev = index.get(&(s.local, s.remote)).and_then(|c| {
            c.iter().copied().find(|&i| {
                let p = &first[i];
                !matched[i]
                    && (p.inode == s.inode || s.inode == 0)
                    && p.bytes_acked.unwrap_or(0) <= sent
                    && p.bytes_received.unwrap_or(0) <= recv
            })
        });
        match prev {
            Some(i) => {
                matched[i] = true;
                let p = &first[i];
                out.push((
                    sent - p.bytes_acked.unwrap_or(0),
                    recv - p.bytes_received.unwrap_or(0),
                    false,
                ));
            }
            None => out.push((sent, recv, true)),
        }
    }
    let closed = matched.iter().filter(|m| !**m).count() as u64;
    (out, closed)
}

pub fn analyze(input: &Input<'_>) -> BandwidthReport {
    let secs = input.seconds.max(1e-9);
    let (deltas, closed) = socket_deltas(input.first, input.second);
    let wanted = |name: &str| input.interface.is_none_or(|w| w == name);

    // Connections.
    let mut conns: Vec<(usize, Option<String>, u64, u64, bool)> = Vec::new();
    for (i, s) in input.second.iter().enumerate() {
        let (sent, recv, new) = deltas[i];
        let iface = interface_of(s.local.ip(), input.addrs);
        if input.interface.is_some() && iface.as_deref() != input.interface {
            continue;
        }
        if sent + recv == 0 {
            continue;
        }
        conns.push((i, iface, sent, recv, new));
    }
    let mut per_iface: BTreeMap<String, u64> = BTreeMap::new();
    for (_, iface, sent, recv, _) in &conns {
        if let Some(n) = iface {
            *per_iface.entry(n.clone()).or_insert(0) += sent + recv;
        }
    }

    // Processes.
    let processes = input.owners.map(|owners| {
        let mut by: BTreeMap<Owner, ProcessRow> = BTreeMap::new();
        for (i, _, sent, recv, _) in &conns {
            let o = &owners[*i];
            let r = by.entry(o.clone()).or_insert_with(|| ProcessRow {
                pid: o.pid(),
                process: o.comm().map(str::to_string).unwrap_or_else(|| o.label()),
                connections: 0,
                sent_bytes: 0,
                received_bytes: 0,
                total_bytes: 0,
                bytes_per_second: 0.0,
            });
            r.connections += 1;
            r.sent_bytes += sent;
            r.received_bytes += recv;
            r.total_bytes += sent + recv;
        }
        let mut rows: Vec<ProcessRow> = by.into_values().collect();
        for r in &mut rows {
            r.bytes_per_second = r.total_bytes as f64 / secs;
        }
        rows.sort_by(|a, b| b.total_bytes.cmp(&a.total_bytes).then(a.pid.cmp(&b.pid)));
        if input.top > 0 {
            rows.truncate(input.top);
        }
        rows
    });

    let mut connections: Vec<ConnectionRow> = conns
        .iter()
        .map(|(i, iface, sent, recv, new)| {
            let s = &input.second[*i];
            let o = input.owners.map(|o| &o[*i]);
            ConnectionRow {
                local: s.local.to_string(),
                remote: s.remote.to_string(),
                state: s.state_name(),
                interface: iface.clone(),
                pid: o.and_then(Owner::pid),
                process: o.and_then(|o| o.comm().map(str::to_string)),
                sent_bytes: *sent,
                received_bytes: *recv,
                bytes_per_second: (sent + recv) as f64 / secs,
                new: *new,
            }
        })
        .collect();
    connections.sort_by(|a, b| {
        (b.sent_bytes + b.received_bytes)
            .cmp(&(a.sent_bytes + a.received_bytes))
            .then_with(|| a.local.cmp(&b.local))
            .then_with(|| a.remote.cmp(&b.remote))
    });
    let connection_bytes: u64 = conns.iter().map(|c| c.2 + c.3).sum();
    if input.top > 0 {
        connections.truncate(input.top);
    }

    // Interfaces.
    let mut interfaces = Vec::new();
    let mut warnings = Vec::new();
    for d in input.dev1.iter().filter(|d| wanted(&d.name)) {
        let Some(p) = input.dev0.iter().find(|p| p.name == d.name) else {
            continue;
        };
        let rx = d.recv_bytes.saturating_sub(p.recv_bytes);
        let tx = d.sent_bytes.saturating_sub(p.sent_bytes);
        let speed = input.speeds.get(&d.name).copied();
        let util = |bytes: u64| speed.map(|sp| ((bytes as f64 * 8.0 / secs) / sp * 1000.0).round() / 10.0);
        let cb = per_iface.get(&d.name).copied().unwrap_or(0);
        let row = InterfaceRow {
            name: d.name.clone(),
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: d.recv_packets.saturating_sub(p.recv_packets),
            tx_packets: d.sent_packets.saturating_sub(p.sent_packets),
            rx_bytes_per_second: rx as f64 / secs,
            tx_bytes_per_second: tx as f64 / secs,
            rx_packets_per_second: d.recv_packets.saturating_sub(p.recv_packets) as f64 / secs,
            tx_packets_per_second: d.sent_packets.saturating_sub(p.sent_packets) as f64 / secs,
            speed_bits_per_second: speed,
            rx_utilization_percent: util(rx),
            tx_utilization_percent: util(tx),
            connection_bytes: cb,
            connection_share_percent: percent(cb as f64, (rx + tx) as f64),
        };
        for (dir, u) in [
            ("receive", row.rx_utilization_percent),
            ("transmit", row.tx_utilization_percent),
        ] {
            if let Some(u) = u.filter(|u| *u >= 80.0) {
                warnings.push(Warning::new(
                    "warning",
                    "link_saturated",
                    format!(
                        "{} {dir} at {u:.0}% of its {} link",
                        d.name,
                        human_bits_per_second(speed.unwrap_or(0.0) / 8.0)
                    ),
                    "near line rate queues build up (latency) and packets drop; the processes below use the most"
                        .into(),
                ));
            }
        }
        interfaces.push(row);
    }
    interfaces.sort_by(|a, b| {
        (b.rx_bytes + b.tx_bytes)
            .cmp(&(a.rx_bytes + a.tx_bytes))
            .then_with(|| a.name.cmp(&b.name))
    });
    let interface_bytes: u64 = interfaces.iter().map(|i| i.rx_bytes + i.tx_bytes).sum();
    let attributed: u64 = interfaces.iter().map(|i| i.connection_bytes).sum();
    let accounted = Accounted {
        connection_bytes: if input.interface.is_some() {
            attributed
        } else {
            connection_bytes
        },
        interface_bytes,
        share_percent: percent(
            if input.interface.is_some() {
                attributed
            } else {
                connection_bytes
            } as f64,
            interface_bytes as f64,
        ),
    };
    BandwidthReport {
        sample_seconds: input.seconds,
        interfaces,
        processes,
        connections,
        accounted,
        closed_during_sample: closed,
        warnings,
        limitations: Vec::new(),
    }
}

/// (interface, address, is loopback) for every address of the namespace.
fn interface_addresses() -> Vec<(String, IpAddr, bool)> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        let lo = ifa.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0;
        // SAFETY: ifa_addr is non-null; sa_family tells which sockaddr it is.
        let fam = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = match fam {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        out.push((name, ip, lo));
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

impl Report for BandwidthReport {
    fn limitations(&self) -> &[Limitation] {
        &self.limitations
    }

    fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Bandwidth over a {:.1} s sample", self.sample_seconds);
        out.push('\n');
        let util = |v: Option<f64>| v.map(|u| format!("{u:.1}%")).unwrap_or_else(|| "-".into());
        out.push_str(&table(
            &[
                "INTERFACE",
                "RX",
                "TX",
                "RX PKT/S",
                "TX PKT/S",
                "SPEED",
                "RX UTIL",
                "TX UTIL",
                "BY CONNECTIONS",
            ],
            self.interfaces
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        human_bits_per_second(i.rx_bytes_per_second),
                        human_bits_per_second(i.tx_bytes_per_second),
                        format!("{:.0}", i.rx_packets_per_second),
                        format!("{:.0}", i.tx_packets_per_second),
                        i.speed_bits_per_second
                            .map(|s| human_bits_per_second(s / 8.0))
                            .unwrap_or_else(|| "-".into()),
                        util(i.rx_utilization_percent),
                        util(i.tx_utilization_percent),
                        format!("{:.1}%", i.connection_share_percent),
                    ]
                })
                .collect(),
            &[1, 2, 3, 4, 5, 6, 7, 8],
        ));
        match &self.processes {
            Some(rows) => {
                section(&mut out, "Top processes (by bytes)");
                if rows.is_empty() {
                    out.push_str("  no TCP traffic during the sample\n");
                } else {
                    out.push_str(&table(
                        &["PROCESS", "PID", "CONNECTIONS", "SENT", "RECEIVED", "RATE"],
                        rows.iter()
                            .map(|r| {
                                vec![
                                    r.process.clone(),
                                    r.pid.map(|p| p.to_string()).unwrap_or_default(),
                                    r.connections.to_string(),
                                    human_bytes(r.sent_bytes as f64),
                                    human_bytes(r.received_bytes as f64),
                                    human_bits_per_second(r.bytes_per_second),
                                ]
                            })
                            .collect(),
                        &[1, 2, 3, 4, 5],
                    ));
                }
            }
            None => {
                section(&mut out, "Processes");
                let _ = writeln!(out, "  {NO_PROCESSES_HINT}");
            }
        }
        section(&mut out, "Top connections (by bytes)");
        if self.connections.is_empty() {
            out.push_str("  no TCP traffic during the sample\n");
        } else {
            out.push_str(&table(
                &["LOCAL", "", "REMOTE", "STATE", "PROCESS", "SENT", "RECEIVED", "RATE"],
                self.connections
                    .iter()
                    .map(|c| {
                        vec![
                            c.local.clone(),
                            "↔".into(),
                            c.remote.clone(),
                            c.state.to_string(),
                            match (&c.process, c.pid) {
                                (Some(n), Some(p)) => format!("{n}/{p}"),
                                _ => String::new(),
                            },
                            human_bytes(c.sent_bytes as f64),
                            human_bytes(c.received_bytes as f64),
                            human_bits_per_second(c.bytes_per_second),
                        ]
                    })
                    .collect(),
                &[5, 6, 7],
            ));
        }
        let _ = writeln!(
            out,
            "\n  TCP connections account for {:.1}% of the bytes the interfaces moved ({} of {}; payload against \
             wire bytes with headers, UDP and other traffic not counted; loopback traffic counts on both ends)",
            self.accounted.share_percent,
            human_bytes(self.accounted.connection_bytes as f64),
            human_bytes(self.accounted.interface_bytes as f64)
        );
        if self.closed_during_sample > 0 {
            let _ = writeln!(
                out,
                "  {} connections closed during the sample; their last bytes are not counted",
                self.closed_during_sample
            );
        }
        render_warnings(&mut out, &self.warnings);
        render_limitations(&mut out, &self.limitations);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::sockets::Protocol;
    use crate::netlink::sock_diag::AF_INET;

    fn conn(local: &str, remote: &str, inode: u32, acked: u64, received: u64) -> Sock {
        Sock {
            protocol: Protocol::Tcp,
            family: AF_INET,
            state: state::ESTABLISHED,
            local: local.parse().expect("local"),
            remote: remote.parse().expect("remote"),
            inode,
            uid: 0,
            rqueue: 0,
            wqueue: 0,
            bytes_acked: Some(acked),
            bytes_received: Some(received),
            total_retrans: None,
            cong: None,
        }
    }

    fn dev(name: &str, rx: u64, tx: u64) -> DeviceStatus {
        DeviceStatus {
            name: name.into(),
            recv_bytes: rx,
            recv_packets: rx / 1000,
            recv_errs: 0,
            recv_drop: 0,
            recv_fifo: 0,
            recv_frame: 0,
            recv_compressed: 0,
            recv_multicast: 0,
            sent_bytes: tx,
            sent_packets: tx / 1000,
            sent_errs: 0,
            sent_drop: 0,
            sent_fifo: 0,
            sent_colls: 0,
            sent_carrier: 0,
            sent_compressed: 0,
        }
    }

    #[test]
    fn deltas_match_by_tuple_and_inode_and_new_sockets_count_fully() {
        let first = [
            conn("127.0.0.1:5000", "127.0.0.1:80", 10, 1000, 50),
            conn("10.0.0.1:6000", "10.0.0.2:443", 11, 500, 500),
            conn("10.0.0.1:7000", "10.0.0.2:443", 12, 9, 9), // closes
        ];
        let second = [
            conn("127.0.0.1:5000", "127.0.0.1:80", 10, 5000, 150),
            conn("10.0.0.1:6000", "10.0.0.2:443", 0, 800, 500), // orphaned since
            conn("10.0.0.1:6001", "10.0.0.2:443", 13, 300, 0),  // new
            conn("127.0.0.1:5000", "127.0.0.1:81", 14, 0, 0),   // idle
        ];
        let (d, closed) = socket_deltas(&first, &second);
        assert_eq!(d, [(4000, 100, false), (300, 0, false), (300, 0, true), (0, 0, true)]);
        assert_eq!(closed, 1);
        // Same tuple, another inode: a new socket.
        let (d, _) = socket_deltas(&first[..1], &[conn("127.0.0.1:5000", "127.0.0.1:80", 99, 7, 0)]);
        assert_eq!(d, [(7, 0, true)]);
    }

    #[test]
    fn processes_and_interfaces_are_ranked_and_accounted() {
        let first = [
            conn("127.0.0.1:5000", "127.0.0.1:80", 10, 0, 0),
            conn("127.0.0.1:80", "127.0.0.1:5000", 11, 0, 0),
        ];
        let second = [
            conn("127.0.0.1:5000", "127.0.0.1:80", 10, 1_000_000, 0),
            conn("127.0.0.1:80", "127.0.0.1:5000", 11, 0, 1_000_000),
            conn("10.0.0.1:6000", "10.0.0.2:443", 12, 100, 100),
        ];
        let owners = [
            Owner::Process {
                pid: 1,
                comm: "sender".into(),
            },
            Owner::Process {
                pid: 2,
                comm: "sink".into(),
            },
            Owner::Process {
                pid: 1,
                comm: "sender".into(),
            },
        ];
        let addrs = [
            ("lo".to_string(), "127.0.0.1".parse().expect("ip"), true),
            ("eth0".to_string(), "10.0.0.1".parse().expect("ip"), false),
        ];
        let dev0 = [dev("eth0", 0, 0), dev("lo", 0, 0)];
        let dev1 = [dev("eth0", 300, 300), dev("lo", 1_050_000, 1_050_000)];
        let mut speeds = BTreeMap::new();
        speeds.insert("eth0".to_string(), 1e9);
        let input = Input {
            seconds: 2.0,
            dev0: &dev0,
            dev1: &dev1,
            speeds: &speeds,
            first: &first,
            second: &second,
            owners: Some(&owners),
            addrs: &addrs,
            interface: None,
            top: 10,
        };
        let r = analyze(&input);
        let p = r.processes.as_ref().expect("processes");
        assert_eq!(
            (p[0].pid, p[0].sent_bytes, p[0].received_bytes, p[0].connections),
            (Some(1), 1_000_100, 100, 2)
        );
        assert_eq!(p[1].process, "sink");
        assert_eq!(r.connections[0].interface.as_deref(), Some("lo"));
        assert_eq!(r.interfaces[0].name, "lo");
        assert_eq!(r.interfaces[0].connection_bytes, 2_000_000);
        assert_eq!(r.interfaces[0].connection_share_percent, 95.2);
        assert_eq!(r.interfaces[0].speed_bits_per_second, None);
        let eth = r.interfaces.iter().find(|i| i.name == "eth0").expect("eth0");
        assert_eq!(eth.tx_utilization_percent, Some(0.0));
        assert_eq!(eth.tx_bytes_per_second, 150.0);
        assert_eq!(r.accounted.connection_bytes, 2_000_200);
        // One interface only: its connections and bytes.
        let r = analyze(&Input {
            interface: Some("eth0"),
            ..input
        });
        assert_eq!(r.interfaces.len(), 1);
        assert_eq!(r.connections.len(), 1);
        assert_eq!((r.accounted.connection_bytes, r.accounted.interface_bytes), (200, 600));
        assert!(r.render_text().contains("sender/1"));
    }
}
