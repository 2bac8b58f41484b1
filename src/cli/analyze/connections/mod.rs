//! `netsight analyze connections`: TCP sockets by state, port, process and peer,
//! read through the sockets collector's sock_diag dumps ([`visit_sockets`]) and
//! process map, with warnings that name causes and kernel-parameter advice.
//!
//! Counted as `ss -tan` lists them: listeners, connections, TIME_WAIT and
//! half-open request sockets (as `syn_recv`). JSON shape: `docs/analyze.md`.
//!
//! [`visit_sockets`]: crate::collect::sockets::visit_sockets

mod render;
mod warnings;

use warnings::{accept_queues, close_wait, fin_wait2, last_ack, syn_recv, time_wait};

use std::collections::BTreeMap;
use std::net::IpAddr;

use clap::Args;
use serde::Serialize;

use super::common::{
    canonical_ip, dump_sockets, finish, open_diag, parse_state, percent, ranked, require_live, sysctl_int,
    sysctl_values, Advice, Failure, Limitation, Owner, Owners, Sock, SysctlValue, Warning,
};
use crate::cli::{load_config, CommonArgs};
use crate::collect::sockets::{tcp_state_name, SocketDumps};
use crate::collect::CollectContext;
use crate::netlink::sock_diag::{state, ALL_STATES};

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Only sockets in this TCP state: established, syn-sent, syn-recv, fin-wait-1,
    /// fin-wait-2, time-wait, close, close-wait, last-ack, listen, closing.
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Option<u8>,
    /// Attribute sockets to processes (reads /proc/*/fd; other users' processes
    /// need CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH).
    #[arg(long)]
    pub processes: bool,
    /// Only sockets whose local or remote port is this.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Print JSON (shape in docs/analyze.md).
    #[arg(long)]
    pub json: bool,
    /// Rows in the ranked lists and samples (0: all).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

#[derive(Debug, Serialize)]
pub struct ConnectionsReport {
    pub filters: Filters,
    /// TCP sockets after the filters, listeners included.
    pub total: u64,
    /// Non-zero states, most first.
    pub states: Vec<StateCount>,
    pub local_ports: Vec<PortRow>,
    /// `null` without `--processes`.
    pub processes: Option<Vec<ProcessRow>>,
    /// Sockets no process could be named for (`null` without `--processes`).
    pub unattributed: Option<Unattributed>,
    pub remote_peers: Vec<PeerRow>,
    pub samples: Vec<SampleRow>,
    pub warnings: Vec<Warning>,
    pub advice: Vec<Advice>,
    /// The kernel parameters the warnings and advice quote.
    pub sysctls: Vec<SysctlValue>,
    pub limitations: Vec<Limitation>,
}

#[derive(Debug, Serialize)]
pub struct Filters {
    pub state: Option<&'static str>,
    pub port: Option<u16>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct StateCount {
    pub state: &'static str,
    pub count: u64,
    pub share_percent: f64,
}

#[derive(Debug, Serialize)]
pub struct PortRow {
    pub port: u16,
    /// Sockets with this local port, listeners included.
    pub sockets: u64,
    /// A TCP listener holds the port.
    pub listening: bool,
    pub states: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    /// Every TCP socket the process holds (what `ss -tanp` lists for it).
    pub sockets: u64,
    /// Sockets other than listeners.
    pub connections: u64,
    pub states: BTreeMap<&'static str, u64>,
    /// `address:port` of its listeners.
    pub listeners: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Unattributed {
    /// Held by no file (TIME_WAIT, half-open, orphans): nothing to attribute.
    pub kernel: u64,
    /// Held by a process netsight could not see: see `limitations`, or a process
    /// outside this PID namespace, or a socket opened after the process scan.
    pub unknown: u64,
}

#[derive(Debug, Serialize)]
pub struct PeerRow {
    pub address: String,
    pub connections: u64,
    pub states: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct SampleRow {
    pub local: String,
    pub remote: String,
    pub state: &'static str,
    pub pid: Option<u32>,
    /// Process name; `null` without `--processes` or when none could be named.
    pub process: Option<String>,
}

/// Kernel parameters the analysis compares against.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub max_tw_buckets: Option<i64>,
    pub port_range: Option<(i64, i64)>,
    pub tw_reuse: Option<i64>,
    pub timestamps: Option<i64>,
    pub fin_timeout: Option<i64>,
    pub somaxconn: Option<i64>,
    pub max_syn_backlog: Option<i64>,
    pub syncookies: Option<i64>,
    pub orphan_retries: Option<i64>,
}

impl Params {
    pub fn read(ctx: &CollectContext) -> Params {
        Params {
            max_tw_buckets: sysctl_int(ctx, "net.ipv4.tcp_max_tw_buckets"),
            port_range: sysctl_values(ctx, "net.ipv4.ip_local_port_range")
                .and_then(|v| Some((*v.first()?, *v.get(1)?))),
            tw_reuse: sysctl_int(ctx, "net.ipv4.tcp_tw_reuse"),
            timestamps: sysctl_int(ctx, "net.ipv4.tcp_timestamps"),
            fin_timeout: sysctl_int(ctx, "net.ipv4.tcp_fin_timeout"),
            somaxconn: sysctl_int(ctx, "net.core.somaxconn"),
            max_syn_backlog: sysctl_int(ctx, "net.ipv4.tcp_max_syn_backlog"),
            syncookies: sysctl_int(ctx, "net.ipv4.tcp_syncookies"),
            orphan_retries: sysctl_int(ctx, "net.ipv4.tcp_orphan_retries"),
        }
    }

    fn values(&self) -> Vec<SysctlValue> {
        let v = |name: &str, value: Option<i64>, meaning: &str| SysctlValue {
            name: name.into(),
            value: value.map(|v| v.to_string()),
            meaning: meaning.into(),
        };
        vec![
            v(
                "net.ipv4.tcp_max_tw_buckets",
                self.max_tw_buckets,
                "TIME_WAIT sockets the kernel keeps",
            ),
            SysctlValue {
                name: "net.ipv4.ip_local_port_range".into(),
                value: self.port_range.map(|(a, b)| format!("{a} {b}")),
                meaning: "ephemeral ports for outgoing connections".into(),
            },
            v(
                "net.ipv4.tcp_tw_reuse",
                self.tw_reuse,
                "reuse TIME_WAIT for outgoing: 0 off, 1 on, 2 loopback only",
            ),
            v(
                "net.ipv4.tcp_fin_timeout",
                self.fin_timeout,
                "FIN_WAIT_2 lifetime of orphans (s)",
            ),
            v("net.core.somaxconn", self.somaxconn, "cap on listen() backlogs"),
            v(
                "net.ipv4.tcp_max_syn_backlog",
                self.max_syn_backlog,
                "half-open connections per listener",
            ),
            v(
                "net.ipv4.tcp_syncookies",
                self.syncookies,
                "SYN cookies: 0 off, 1 on overflow, 2 always",
            ),
            v(
                "net.ipv4.tcp_orphan_retries",
                self.orphan_retries,
                "retries for orphaned sockets (0 means 8)",
            ),
        ]
    }
}

pub fn run(args: ConnectionsArgs) -> anyhow::Result<u8> {
    let cfg = load_config(&args.common)?;
    let ctx = CollectContext::new(&cfg.paths.procfs, &cfg.paths.sysfs);
    let result = collect(&ctx, &args);
    finish("connections", args.json, result)
}

fn collect(ctx: &CollectContext, args: &ConnectionsArgs) -> Result<ConnectionsReport, Failure> {
    require_live(ctx, "sockets")?;
    let mut limitations = Vec::new();
    let mut diag = open_diag()?;
    let dumps = SocketDumps {
        tcp_states: ALL_STATES,
        tcp_info: false,
        udp_states: 0,
    };
    let socks = dump_sockets(&mut diag, &dumps, &mut limitations)?;
    let socks: Vec<Sock> = socks
        .into_iter()
        .filter(|s| args.state.is_none_or(|st| s.state == st))
        .filter(|s| args.port.is_none_or(|p| s.local.port() == p || s.remote.port() == p))
        .collect();
    let owner_of: Option<Vec<Owner>> = args.processes.then(|| {
        let (owners, limitation) = Owners::scan(ctx).attribute(&socks);
        limitations.extend(limitation);
        owners
    });
    let mut report = analyze(&socks, owner_of.as_deref(), &Params::read(ctx), args.top);
    report.filters = Filters {
        state: args.state.map(tcp_state_name),
        port: args.port,
    };
    report.limitations = limitations;
    Ok(report)
}

/// Problem states first in the samples.
fn sample_priority(st: u8) -> u8 {
    match st {
        state::CLOSE_WAIT => 0,
        state::SYN_RECV => 1,
        state::LAST_ACK => 2,
        state::FIN_WAIT1 => 3,
        state::FIN_WAIT2 => 4,
        state::CLOSING => 5,
        state::SYN_SENT => 6,
        state::ESTABLISHED => 7,
        state::TIME_WAIT => 8,
        _ => 9,
    }
}

fn inc(m: &mut BTreeMap<&'static str, u64>, k: &'static str) {
    *m.entry(k).or_insert(0) += 1;
}

/// Pure analysis of dumped sockets (`owners[i]` owns `socks[i]`; `None` without
/// `--processes`).
pub fn analyze(socks: &[Sock], owners: Option<&[Owner]>, params: &Params, top: usize) -> ConnectionsReport {
    let total = socks.len() as u64;
    let mut by_state: BTreeMap<u8, u64> = BTreeMap::new();
    for s in socks {
        *by_state.entry(s.state).or_insert(0) += 1;
    }
    let mut states: Vec<StateCount> = by_state
        .iter()
        .map(|(&st, &n)| StateCount {
            state: tcp_state_name(st),
            count: n,
            share_percent: percent(n as f64, total as f64),
        })
        .collect();
    states.sort_by(|a, b| b.count.cmp(&a.count).then(a.state.cmp(b.state)));
    let count = |st: u8| by_state.get(&st).copied().unwrap_or(0);

    // Local ports.
    let mut ports: BTreeMap<u16, (u64, bool, BTreeMap<&'static str, u64>)> = BTreeMap::new();
    for s in socks {
        let e = ports.entry(s.local.port()).or_default();
        e.0 += 1;
        e.1 |= s.state == state::LISTEN;
        inc(&mut e.2, s.state_name());
    }
    let port_counts: BTreeMap<u16, u64> = ports.iter().map(|(p, e)| (*p, e.0)).collect();
    let local_ports = ranked(&port_counts, top)
        .into_iter()
        .map(|(port, n)| {
            let e = &ports[&port];
            PortRow {
                port,
                sockets: n,
                listening: e.1,
                states: e.2.clone(),
            }
        })
        .collect();

    // Processes.
    let (processes, unattributed) = match owners {
        None => (None, None),
        Some(owners) => {
            let mut rows: BTreeMap<u32, ProcessRow> = BTreeMap::new();
            let mut un = Unattributed { kernel: 0, unknown: 0 };
            for (s, o) in socks.iter().zip(owners) {
                match o {
                    Owner::Kernel => un.kernel += 1,
                    Owner::Unknown => un.unknown += 1,
                    Owner::Process { pid, comm } => {
                        let r = rows.entry(*pid).or_insert_with(|| ProcessRow {
                            pid: *pid,
                            comm: comm.clone(),
                            sockets: 0,
                            connections: 0,
                            states: BTreeMap::new(),
                            listeners: Vec::new(),
                        });
                        r.sockets += 1;
                        inc(&mut r.states, s.state_name());
                        if s.state == state::LISTEN {
                            r.listeners.push(s.local.to_string());
                        } else {
                            r.connections += 1;
                        }
                    }
                }
            }
            let mut rows: Vec<ProcessRow> = rows.into_values().collect();
            rows.sort_by(|a, b| {
                b.connections
                    .cmp(&a.connections)
                    .then(b.sockets.cmp(&a.sockets))
                    .then(a.pid.cmp(&b.pid))
            });
            for r in &mut rows {
                r.listeners.sort();
            }
            if top > 0 {
                rows.truncate(top);
            }
            (Some(rows), Some(un))
        }
    };

    // Remote peers.
    let mut peers: BTreeMap<IpAddr, (u64, BTreeMap<&'static str, u64>)> = BTreeMap::new();
    for s in socks
        .iter()
        .filter(|s| s.state != state::LISTEN && !s.remote.ip().is_unspecified())
    {
        let e = peers.entry(canonical_ip(s.remote.ip())).or_default();
        e.0 += 1;
        inc(&mut e.1, s.state_name());
    }
    let peer_counts: BTreeMap<IpAddr, u64> = peers.iter().map(|(a, e)| (*a, e.0)).collect();
    let remote_peers = ranked(&peer_counts, top)
        .into_iter()
        .map(|(a, n)| PeerRow {
            address: a.to_string(),
            connections: n,
            states: peers[&a].1.clone(),
        })
        .collect();

    // Samples.
    let mut idx: Vec<usize> = (0..socks.len()).filter(|&i| socks[i].state != state::LISTEN).collect();
    idx.sort_by_key(|&i| (sample_priority(socks[i].state), socks[i].local, socks[i].remote));
    if top > 0 {
        idx.truncate(top);
    }
    let samples = idx
        .into_iter()
        .map(|i| {
            let o = owners.map(|o| &o[i]);
            SampleRow {
                local: socks[i].local.to_string(),
                remote: socks[i].remote.to_string(),
                state: socks[i].state_name(),
                pid: o.and_then(Owner::pid),
                process: o.and_then(|o| o.comm().map(str::to_string)),
            }
        })
        .collect();

    let mut warnings = Vec::new();
    let mut advice = Vec::new();
    time_wait(socks, count(state::TIME_WAIT), params, &mut warnings, &mut advice);
    close_wait(socks, owners, &mut warnings);
    syn_recv(socks, params, &mut warnings, &mut advice);
    last_ack(socks, params, &mut warnings, &mut advice);
    fin_wait2(count(state::FIN_WAIT2), params, &mut warnings, &mut advice);
    accept_queues(socks, owners, params, &mut warnings, &mut advice);

    ConnectionsReport {
        filters: Filters {
            state: None,
            port: None,
        },
        total,
        states,
        local_ports,
        processes,
        unattributed,
        remote_peers,
        samples,
        warnings,
        advice,
        sysctls: params.values(),
        limitations: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::analyze::common::Report;
    use crate::collect::sockets::Protocol;

    fn sock(st: u8, local: &str, remote: &str, inode: u32) -> Sock {
        Sock {
            protocol: Protocol::Tcp,
            family: crate::netlink::sock_diag::AF_INET,
            state: st,
            local: local.parse().expect("local"),
            remote: remote.parse().expect("remote"),
            inode,
            uid: 0,
            rqueue: 0,
            wqueue: 0,
            bytes_acked: None,
            bytes_received: None,
            total_retrans: None,
            cong: None,
        }
    }

    fn params() -> Params {
        Params {
            max_tw_buckets: Some(100),
            port_range: Some((60000, 60099)),
            tw_reuse: Some(2),
            timestamps: Some(1),
            fin_timeout: Some(60),
            somaxconn: Some(128),
            max_syn_backlog: Some(16),
            syncookies: Some(0),
            orphan_retries: Some(0),
        }
    }

    #[test]
    fn counts_states_ports_processes_and_peers() {
        let mut socks = vec![
            sock(state::LISTEN, "0.0.0.0:80", "0.0.0.0:0", 1),
            sock(state::ESTABLISHED, "10.0.0.1:80", "10.0.0.2:5000", 2),
            sock(state::ESTABLISHED, "10.0.0.1:80", "10.0.0.3:5000", 3),
            sock(state::TIME_WAIT, "10.0.0.1:80", "10.0.0.2:5001", 0),
        ];
        socks[0].wqueue = 128;
        let nginx = Owner::Process {
            pid: 10,
            comm: "nginx".into(),
        };
        let owners = vec![nginx.clone(), nginx.clone(), Owner::Unknown, Owner::Kernel];
        let r = analyze(&socks, Some(&owners), &params(), 10);
        assert_eq!(r.total, 4);
        assert_eq!(
            r.states[0],
            StateCount {
                state: "established",
                count: 2,
                share_percent: 50.0
            }
        );
        assert_eq!(r.local_ports[0].port, 80);
        assert_eq!(r.local_ports[0].sockets, 4);
        assert!(r.local_ports[0].listening);
        let p = &r.processes.as_ref().expect("processes")[0];
        assert_eq!((p.pid, p.sockets, p.connections), (10, 2, 1));
        assert_eq!(p.listeners, ["0.0.0.0:80"]);
        let u = r.unattributed.as_ref().expect("unattributed");
        assert_eq!((u.kernel, u.unknown), (1, 1));
        assert_eq!(r.remote_peers[0].address, "10.0.0.2");
        assert_eq!(r.remote_peers[0].connections, 2);
        assert_eq!(r.samples[0].state, "established");
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let none = analyze(&socks, None, &params(), 10);
        assert!(none.processes.is_none() && none.unattributed.is_none());
    }

    #[test]
    fn time_wait_towards_one_destination_warns_with_advice() {
        let socks: Vec<Sock> = (0..60)
            .map(|i| sock(state::TIME_WAIT, &format!("10.0.0.1:{}", 60000 + i), "10.0.0.9:443", 0))
            .collect();
        let r = analyze(&socks, None, &params(), 10);
        let kinds: Vec<&str> = r.warnings.iter().map(|w| w.kind.as_str()).collect();
        assert!(kinds.contains(&"time_wait_ephemeral"), "{kinds:?}");
        let w = r.warnings.iter().find(|w| w.kind == "time_wait_ephemeral").expect("w");
        assert_eq!(w.severity, "warning");
        assert!(
            w.message.contains("10.0.0.9:443") && w.message.contains("60%"),
            "{}",
            w.message
        );
        let names: Vec<&str> = r.advice.iter().map(|a| a.parameter.as_str()).collect();
        assert!(names.contains(&"net.ipv4.tcp_tw_reuse"));
        assert!(names.contains(&"net.ipv4.ip_local_port_range"));
        let reuse = r
            .advice
            .iter()
            .find(|a| a.parameter == "net.ipv4.tcp_tw_reuse")
            .expect("reuse");
        assert_eq!((reuse.current.as_str(), reuse.suggested.as_str()), ("2", "1"));
        // tw_reuse=2 already covers a loopback destination.
        let lo: Vec<Sock> = (0..60)
            .map(|i| {
                sock(
                    state::TIME_WAIT,
                    &format!("127.0.0.1:{}", 60000 + i),
                    "127.0.0.1:443",
                    0,
                )
            })
            .collect();
        let r2 = analyze(&lo, None, &params(), 10);
        assert!(
            r2.advice.iter().all(|a| a.parameter != "net.ipv4.tcp_tw_reuse"),
            "{:?}",
            r2.advice
        );
        // 60 of 100 buckets is below 80 %: no bucket warning.
        assert!(!kinds.contains(&"time_wait_buckets"));
        let socks: Vec<Sock> = (0..90)
            .map(|i| sock(state::TIME_WAIT, &format!("10.0.0.1:{}", 1000 + i), "10.0.0.9:443", 0))
            .collect();
        let r = analyze(&socks, None, &params(), 10);
        let a = r
            .advice
            .iter()
            .find(|a| a.parameter == "net.ipv4.tcp_max_tw_buckets")
            .expect("buckets");
        assert_eq!((a.current.as_str(), a.suggested.as_str()), ("100", "256"));
    }

    #[test]
    fn close_wait_names_the_leaking_process() {
        let socks: Vec<Sock> = (0..12)
            .map(|i| {
                sock(
                    state::CLOSE_WAIT,
                    "10.0.0.1:8080",
                    &format!("10.0.0.2:{}", 40000 + i),
                    100 + i,
                )
            })
            .collect();
        let mut owners = vec![
            Owner::Process {
                pid: 42,
                comm: "leaky".into()
            };
            11
        ];
        owners.push(Owner::Unknown);
        let r = analyze(&socks, Some(&owners), &params(), 10);
        let w = r.warnings.iter().find(|w| w.kind == "close_wait").expect("close_wait");
        assert_eq!(w.severity, "warning");
        assert!(w.cause.contains("leaky (pid 42) holds 11"), "{}", w.cause);
        assert!(w.message.contains("8080 (12)"), "{}", w.message);
        let r = analyze(&socks, None, &params(), 10);
        let w = r.warnings.iter().find(|w| w.kind == "close_wait").expect("close_wait");
        assert!(w.cause.contains("--processes"));
    }

    #[test]
    fn syn_recv_flood_and_last_ack_warn() {
        let mut socks = vec![sock(state::LISTEN, "0.0.0.0:443", "0.0.0.0:0", 1)];
        socks[0].wqueue = 64;
        for i in 0..40 {
            socks.push(sock(state::SYN_RECV, "10.0.0.1:443", &format!("192.0.2.{i}:1234"), 0));
        }
        for i in 0..10 {
            socks.push(sock(
                state::LAST_ACK,
                "10.0.0.1:443",
                &format!("198.51.100.1:{}", 2000 + i),
                0,
            ));
        }
        let r = analyze(&socks, None, &params(), 10);
        let w = r.warnings.iter().find(|w| w.kind == "syn_recv").expect("syn_recv");
        assert_eq!(w.severity, "warning");
        assert!(
            w.cause.contains("SYN flood") && w.cause.contains("backlog is 64"),
            "{}",
            w.cause
        );
        let p: Vec<&str> = r.advice.iter().map(|a| a.parameter.as_str()).collect();
        assert!(
            p.contains(&"net.ipv4.tcp_syncookies") && p.contains(&"net.ipv4.tcp_max_syn_backlog"),
            "{p:?}"
        );
        let w = r.warnings.iter().find(|w| w.kind == "last_ack").expect("last_ack");
        assert!(w.cause.contains("198.51.100.1 (10)"), "{}", w.cause);
        assert!(p.contains(&"net.ipv4.tcp_orphan_retries"));
        // The samples show problem states first.
        assert_eq!(r.samples[0].state, "syn_recv");
    }

    #[test]
    fn full_accept_queue_warns() {
        let mut l = sock(state::LISTEN, "0.0.0.0:80", "0.0.0.0:0", 1);
        l.rqueue = 128;
        l.wqueue = 128;
        let r = analyze(&[l], None, &params(), 10);
        assert!(r.warnings.iter().any(|w| w.kind == "accept_queue_full"));
        assert!(r
            .advice
            .iter()
            .any(|a| a.parameter == "net.core.somaxconn" && a.suggested == "4096"));
        let text = r.render_text();
        assert!(text.contains("net.core.somaxconn: 128 → 4096"), "{text}");
    }
}
