//! `netsight analyze listening`: every TCP listener and bound, unconnected UDP
//! socket, from the sockets collector's dumps, with its process, accept queue and
//! backlog; port conflicts (several processes on one port, or several sockets on
//! one address and port, which the kernel only allows with SO_REUSEPORT); and
//! listeners on wildcard addresses that the configuration's
//! `analyze.exposure_allowlist` does not list, flagged as exposure risks.
//!
//! sock_diag does not report SO_REUSEPORT itself: two listening sockets on the
//! same family, address and port can only exist with it (or, for UDP, with
//! SO_REUSEADDR), so that is what the report infers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use clap::Args;
use serde::Serialize;

use super::common::{
    dump_sockets, finish, open_diag, render_limitations, render_warnings, require_live, section, table, Failure,
    Limitation, Owner, Owners, Report, Sock, Warning, NO_PROCESSES_HINT,
};
use crate::cli::{load_config, CommonArgs};
use crate::collect::sockets::{Protocol, SocketDumps};
use crate::collect::CollectContext;
use crate::config::PortRule;
use crate::netlink::sock_diag::state;

#[derive(Args, Debug)]
pub struct ListeningArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Show the process holding each listener (reads /proc/*/fd; other users'
    /// processes need CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH).
    #[arg(long)]
    pub processes: bool,
    /// Print JSON (shape in docs/analyze.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct ListeningReport {
    pub listeners: Vec<ListenerRow>,
    pub conflicts: Vec<Conflict>,
    pub exposure: Vec<Exposure>,
    pub warnings: Vec<Warning>,
    /// `analyze.exposure_allowlist` as configured.
    pub exposure_allowlist: Vec<String>,
    /// Whether processes were looked up (`--processes`).
    pub processes: bool,
    pub limitations: Vec<Limitation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerRow {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    pub address: String,
    pub port: u16,
    pub inode: u32,
    /// `null` without `--processes` or when the owner could not be inspected.
    pub pid: Option<u32>,
    pub process: Option<String>,
    /// TCP: connections waiting for accept(). `null` for UDP.
    pub accept_queue: Option<u32>,
    /// TCP: the accept-queue limit, min(listen() backlog, net.core.somaxconn).
    pub backlog: Option<u32>,
    /// UDP: bytes waiting to be read. `null` for TCP.
    pub receive_queue_bytes: Option<u32>,
    /// Bound to 0.0.0.0 or ::.
    pub wildcard: bool,
    /// Wildcard and not in the allow-list.
    pub exposure_risk: bool,
    /// Wildcard and in the allow-list.
    pub allowlisted: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessRef {
    pub pid: u32,
    pub process: String,
}

#[derive(Debug, Serialize)]
pub struct Conflict {
    pub protocol: &'static str,
    pub port: u16,
    /// Listening sockets on the port.
    pub sockets: usize,
    /// Distinct processes holding them (empty without `--processes`).
    pub processes: Vec<ProcessRef>,
    /// Sockets whose process is not known.
    pub unattributed_sockets: usize,
    /// Several sockets share one family, address and port: SO_REUSEPORT (or, for
    /// UDP, SO_REUSEADDR) is set on them.
    pub reuseport: bool,
    /// `address:port` of every socket.
    pub addresses: Vec<String>,
    /// `warning` (several or unknown processes) or `info` (one process's workers).
    pub severity: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct Exposure {
    pub protocol: &'static str,
    pub address: String,
    pub port: u16,
    pub pid: Option<u32>,
    pub process: Option<String>,
    pub message: String,
}

pub fn run(args: ListeningArgs) -> anyhow::Result<u8> {
    let cfg = load_config(&args.common)?;
    let ctx = CollectContext::new(&cfg.paths.procfs, &cfg.paths.sysfs);
    let allow = cfg.analyze.exposure_allowlist.clone();
    let result = collect(&ctx, &args, &allow);
    finish("listening", args.json, result)
}

fn collect(ctx: &CollectContext, args: &ListeningArgs, allow: &[String]) -> Result<ListeningReport, Failure> {
    require_live(ctx, "sockets")?;
    let rules = allow
        .iter()
        .map(|e| PortRule::parse(e).map_err(|m| Failure::Other(format!("analyze.exposure_allowlist: {m}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut limitations = Vec::new();
    let mut diag = open_diag()?;
    // TCP listeners; UDP unconnected (bound) sockets.
    let dumps = SocketDumps {
        tcp_states: 1 << state::LISTEN,
        tcp_info: false,
        udp_states: 1 << state::CLOSE,
    };
    let socks = dump_sockets(&mut diag, &dumps, &mut limitations)?;
    let owner_of: Option<Vec<Owner>> = args.processes.then(|| {
        let (owners, limitation) = Owners::scan(ctx).attribute(&socks);
        limitations.extend(limitation);
        owners
    });
    let mut report = analyze(&socks, owner_of.as_deref(), &rules);
    report.exposure_allowlist = allow.to_vec();
    report.limitations = limitations;
    Ok(report)
}

/// Accept queue at or above this share of the backlog is a warning.
const QUEUE_WARN: f64 = 0.8;

/// Pure analysis of listening sockets (`owners[i]` owns `socks[i]`).
pub fn analyze(socks: &[Sock], owners: Option<&[Owner]>, allow: &[PortRule]) -> ListeningReport {
    let mut idx: Vec<usize> = (0..socks.len())
        .filter(|&i| match socks[i].protocol {
            Protocol::Tcp => socks[i].state == state::LISTEN,
            Protocol::Udp => socks[i].state == state::CLOSE,
        })
        .collect();
    idx.sort_by_key(|&i| {
        (
            socks[i].protocol_name(),
            socks[i].local.port(),
            socks[i].family,
            socks[i].local.ip(),
        )
    });
    let owner = |i: usize| owners.map(|o| &o[i]);
    let mut listeners = Vec::new();
    let mut exposure = Vec::new();
    let mut warnings = Vec::new();
    for &i in &idx {
        let s = &socks[i];
        let proto = s.protocol_name();
        let wildcard = s.local.ip().is_unspecified();
        let allowlisted = wildcard && allow.iter().any(|r| r.matches(proto, s.local.port()));
        let o = owner(i);
        let pid = o.and_then(Owner::pid);
        let process = o.and_then(|o| o.comm().map(str::to_string));
        let tcp = s.protocol == Protocol::Tcp;
        let row = ListenerRow {
            protocol: proto,
            family: s.family_name(),
            address: s.local.ip().to_string(),
            port: s.local.port(),
            inode: s.inode,
            pid,
            process: process.clone(),
            accept_queue: tcp.then_some(s.rqueue),
            backlog: tcp.then_some(s.wqueue),
            receive_queue_bytes: (!tcp).then_some(s.rqueue),
            wildcard,
            exposure_risk: wildcard && !allowlisted,
            allowlisted,
        };
        if row.exposure_risk {
            let who = o.map(Owner::suffix).unwrap_or_default();
            exposure.push(Exposure {
                protocol: proto,
                address: row.address.clone(),
                port: row.port,
                pid,
                process: process.clone(),
                message: format!(
                    "{proto} {}{who} listens on every address, so it is reachable from every network this host is \
                     on; bind it to the address it serves or add \"{proto}/{}\" to analyze.exposure_allowlist",
                    s.local,
                    s.local.port()
                ),
            });
        }
        if tcp && s.wqueue > 0 && s.rqueue as f64 >= s.wqueue as f64 * QUEUE_WARN {
            let who = o.map(Owner::suffix).unwrap_or_default();
            warnings.push(Warning::new(
                "warning",
                "accept_queue",
                format!(
                    "accept queue of {}{who}: {}/{} connections waiting",
                    s.local, s.rqueue, s.wqueue
                ),
                "the application does not accept() as fast as connections complete; at the backlog the kernel drops \
                 handshakes (TcpExtListenOverflows). Raise the listen() backlog (capped by net.core.somaxconn) or \
                 add workers"
                    .into(),
            ));
        }
        listeners.push(row);
    }
    let conflicts = conflicts(socks, &idx, owners);
    ListeningReport {
        listeners,
        conflicts,
        exposure,
        warnings,
        exposure_allowlist: Vec::new(),
        processes: owners.is_some(),
        limitations: Vec::new(),
    }
}

fn conflicts(socks: &[Sock], idx: &[usize], owners: Option<&[Owner]>) -> Vec<Conflict> {
    let mut by_port: BTreeMap<(&'static str, u16), Vec<usize>> = BTreeMap::new();
    for &i in idx {
        by_port
            .entry((socks[i].protocol_name(), socks[i].local.port()))
            .or_default()
            .push(i);
    }
    let mut out = Vec::new();
    for ((proto, port), members) in by_port {
        if members.len() < 2 {
            continue;
        }
        let mut per_addr: BTreeMap<(u8, std::net::IpAddr), usize> = BTreeMap::new();
        for &i in &members {
            *per_addr.entry((socks[i].family, socks[i].local.ip())).or_insert(0) += 1;
        }
        let reuseport = per_addr.values().any(|&n| n > 1);
        let mut procs: BTreeSet<ProcessRef> = BTreeSet::new();
        let mut unattributed = 0;
        for &i in &members {
            match owners.map(|o| &o[i]) {
                Some(Owner::Process { pid, comm }) => {
                    procs.insert(ProcessRef {
                        pid: *pid,
                        process: comm.clone(),
                    });
                }
                _ => unattributed += 1,
            }
        }
        if procs.len() < 2 && !reuseport {
            continue;
        }
        let addresses: Vec<String> = members.iter().map(|&i| socks[i].local.to_string()).collect();
        let names = procs
            .iter()
            .map(|p| format!("{}/{}", p.process, p.pid))
            .collect::<Vec<_>>()
            .join(", ");
        let opt = if proto == "udp" {
            "SO_REUSEPORT or SO_REUSEADDR"
        } else {
            "SO_REUSEPORT"
        };
        let (severity, message) = if procs.len() >= 2 {
            let how = if reuseport {
                format!("they share one address with {opt}, so the kernel spreads new connections between them")
            } else {
                "each holds different addresses, so which one answers depends on the destination address".to_string()
            };
            (
                "warning",
                format!(
                    "{proto} port {port} is held by {} processes ({names}): {how}",
                    procs.len()
                ),
            )
        } else if owners.is_none() || unattributed > 0 {
            let hint = if owners.is_none() {
                "run with --processes to see whether one process or several hold them"
            } else {
                "some of them belong to processes netsight could not inspect"
            };
            (
                "warning",
                format!(
                    "{proto} port {port}: {} sockets listen on the same address ({opt} is set); {hint}",
                    members.len()
                ),
            )
        } else {
            (
                "info",
                format!(
                    "{proto} port {port}: {} sockets with {opt} in one process ({names}), e.g. one per worker",
                    members.len()
                ),
            )
        };
        out.push(Conflict {
            protocol: proto,
            port,
            sockets: members.len(),
            processes: procs.into_iter().collect(),
            unattributed_sockets: if owners.is_some() { unattributed } else { members.len() },
            reuseport,
            addresses,
            severity,
            message,
        });
    }
    out
}

impl Report for ListeningReport {
    fn limitations(&self) -> &[Limitation] {
        &self.limitations
    }

    fn render_text(&self) -> String {
        let mut out = String::new();
        let tcp = self.listeners.iter().filter(|l| l.protocol == "tcp").count();
        let _ = writeln!(
            out,
            "Listening sockets: {} (TCP {tcp}, UDP {})",
            self.listeners.len(),
            self.listeners.len() - tcp
        );
        if !self.listeners.is_empty() {
            out.push('\n');
            out.push_str(&table(
                &["PROTO", "ADDRESS", "PORT", "PROCESS", "QUEUE", "BACKLOG", "EXPOSURE"],
                self.listeners
                    .iter()
                    .map(|l| {
                        vec![
                            l.protocol.to_string(),
                            l.address.clone(),
                            l.port.to_string(),
                            match (&l.process, l.pid) {
                                (Some(c), Some(p)) => format!("{c}/{p}"),
                                _ if self.processes => "(unknown)".into(),
                                _ => String::new(),
                            },
                            l.accept_queue.map(|q| q.to_string()).unwrap_or_else(|| "-".into()),
                            l.backlog.map(|q| q.to_string()).unwrap_or_else(|| "-".into()),
                            if l.exposure_risk {
                                "RISK: all addresses".into()
                            } else if l.allowlisted {
                                "allow-listed".into()
                            } else {
                                String::new()
                            },
                        ]
                    })
                    .collect(),
                &[2, 4, 5],
            ));
        }
        if !self.processes {
            let _ = writeln!(out, "  {NO_PROCESSES_HINT}");
        }
        if !self.conflicts.is_empty() {
            section(&mut out, "Port conflicts");
            for c in &self.conflicts {
                let tag = if c.severity == "warning" { "WARNING" } else { "info" };
                let _ = writeln!(out, "  {tag}: {}", c.message);
                let _ = writeln!(out, "    sockets: {}", c.addresses.join(" "));
            }
        }
        if !self.exposure.is_empty() {
            section(
                &mut out,
                "Exposure risks (wildcard listeners not in analyze.exposure_allowlist)",
            );
            for e in &self.exposure {
                let _ = writeln!(out, "  {}", e.message);
            }
        }
        render_warnings(&mut out, &self.warnings);
        render_limitations(&mut out, &self.limitations);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::sock_diag::{AF_INET, AF_INET6};

    fn l(proto: Protocol, addr: &str, inode: u32) -> Sock {
        let local: std::net::SocketAddr = addr.parse().expect("addr");
        Sock {
            protocol: proto,
            family: if local.is_ipv6() { AF_INET6 } else { AF_INET },
            state: if proto == Protocol::Tcp {
                state::LISTEN
            } else {
                state::CLOSE
            },
            local,
            remote: if local.is_ipv6() {
                "[::]:0".parse().expect("r")
            } else {
                "0.0.0.0:0".parse().expect("r")
            },
            inode,
            uid: 0,
            rqueue: 0,
            wqueue: 128,
            bytes_acked: None,
            bytes_received: None,
            total_retrans: None,
            cong: None,
        }
    }

    fn p(pid: u32, comm: &str) -> Owner {
        Owner::Process { pid, comm: comm.into() }
    }

    #[test]
    fn reuseport_between_two_processes_is_a_conflict() {
        let socks = [l(Protocol::Tcp, "0.0.0.0:8080", 1), l(Protocol::Tcp, "0.0.0.0:8080", 2)];
        let owners = [p(10, "a"), p(11, "b")];
        let r = analyze(&socks, Some(&owners), &[]);
        assert_eq!(r.conflicts.len(), 1);
        let c = &r.conflicts[0];
        assert!(c.reuseport);
        assert_eq!(c.severity, "warning");
        assert_eq!(c.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [10, 11]);
        assert!(c.message.contains("SO_REUSEPORT"), "{}", c.message);
        // Without process lookup: still found, from the shared address.
        let r = analyze(&socks, None, &[]);
        assert!(r.conflicts[0].reuseport && r.conflicts[0].message.contains("--processes"));
        // One process's workers: informational.
        let r = analyze(&socks, Some(&[p(10, "a"), p(10, "a")]), &[]);
        assert_eq!(r.conflicts[0].severity, "info");
    }

    #[test]
    fn one_process_on_both_families_is_not_a_conflict_but_two_are() {
        let socks = [l(Protocol::Tcp, "0.0.0.0:80", 1), l(Protocol::Tcp, "[::]:80", 2)];
        assert!(analyze(&socks, Some(&[p(1, "nginx"), p(1, "nginx")]), &[])
            .conflicts
            .is_empty());
        assert!(analyze(&socks, None, &[]).conflicts.is_empty());
        let r = analyze(&socks, Some(&[p(1, "nginx"), p(2, "apache2")]), &[]);
        assert_eq!(r.conflicts.len(), 1);
        assert!(!r.conflicts[0].reuseport);
        assert!(
            r.conflicts[0].message.contains("destination address"),
            "{}",
            r.conflicts[0].message
        );
    }

    #[test]
    fn wildcard_listeners_outside_the_allowlist_are_exposed() {
        let socks = [
            l(Protocol::Tcp, "0.0.0.0:22", 1),
            l(Protocol::Tcp, "[::]:8080", 2),
            l(Protocol::Tcp, "127.0.0.1:9000", 3),
            l(Protocol::Udp, "0.0.0.0:53", 4),
        ];
        let allow = [
            PortRule::parse("tcp/22").expect("rule"),
            PortRule::parse("53").expect("rule"),
        ];
        let r = analyze(&socks, None, &allow);
        let risky: Vec<u16> = r.listeners.iter().filter(|l| l.exposure_risk).map(|l| l.port).collect();
        assert_eq!(risky, [8080]);
        assert_eq!(r.exposure.len(), 1);
        assert!(r.exposure[0].message.contains("tcp/8080"));
        assert!(r.listeners.iter().any(|l| l.port == 22 && l.allowlisted));
        let udp = r.listeners.iter().find(|l| l.protocol == "udp").expect("udp");
        assert_eq!((udp.accept_queue, udp.receive_queue_bytes), (None, Some(0)));
        assert!(udp.allowlisted);
        let text = r.render_text();
        assert!(text.contains("RISK") && text.contains("allow-listed"), "{text}");
    }

    #[test]
    fn nearly_full_accept_queue_warns() {
        let mut s = l(Protocol::Tcp, "127.0.0.1:80", 1);
        s.rqueue = 120;
        let r = analyze(&[s], None, &[]);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].message.contains("120/128"));
    }
}
