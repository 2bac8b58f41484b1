//! The checks behind the report's warnings and advice, one per socket state that
//! points at a cause (TIME_WAIT exhaustion, CLOSE_WAIT leaks, SYN floods, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::Params;
use crate::cli::analyze::common::{canonical_ip, push_advice, ranked, Advice, Owner, Sock, Warning};
use crate::netlink::sock_diag::state;

/// TIME_WAIT at or above this share of `tcp_max_tw_buckets` is a warning.
const TW_BUCKETS_WARN: f64 = 0.8;
/// TIME_WAIT towards one destination holding this share of the ephemeral range is
/// a warning (connect() to it fails with EADDRNOTAVAIL when it reaches 100 %).
const TW_EPHEMERAL_WARN: f64 = 0.5;
const TW_EPHEMERAL_INFO: f64 = 0.25;

pub(super) fn time_wait(socks: &[Sock], tw: u64, p: &Params, warnings: &mut Vec<Warning>, advice: &mut Vec<Advice>) {
    if tw == 0 {
        return;
    }
    if let Some(max) = p.max_tw_buckets.filter(|m| *m > 0) {
        if tw as f64 >= max as f64 * TW_BUCKETS_WARN {
            warnings.push(Warning::new(
                "warning",
                "time_wait_buckets",
                format!(
                    "{tw} sockets in TIME_WAIT: {:.0}% of net.ipv4.tcp_max_tw_buckets ({max})",
                    tw as f64 / max as f64 * 100.0
                ),
                "beyond the limit the kernel destroys new TIME_WAIT sockets at once (TcpExtTCPTimeWaitOverflow), so \
                 late segments of old connections can be taken for new ones"
                    .into(),
            ));
            let suggested = ((tw * 2).max(max as u64 * 2)).next_power_of_two();
            push_advice(
                advice,
                Advice::new(
                    "net.ipv4.tcp_max_tw_buckets",
                    max,
                    suggested,
                    format!("{tw} TIME_WAIT sockets are near the limit; each costs about 200 bytes of memory"),
                ),
            );
        }
    }
    let Some((lo, hi)) = p.port_range.filter(|(lo, hi)| hi >= lo) else {
        return;
    };
    let range = (hi - lo + 1) as u64;
    // Outgoing connections this host closed first: the local port is ephemeral.
    let mut per_dest: BTreeMap<SocketAddr, u64> = BTreeMap::new();
    for s in socks.iter().filter(|s| s.state == state::TIME_WAIT) {
        let lp = s.local.port() as i64;
        if (lo..=hi).contains(&lp) && s.remote.port() != 0 {
            *per_dest.entry(s.remote).or_insert(0) += 1;
        }
    }
    let Some((dest, n)) = ranked(&per_dest, 1).into_iter().next() else {
        return;
    };
    let share = n as f64 / range as f64;
    if share < TW_EPHEMERAL_INFO {
        return;
    }
    let severity = if share >= TW_EPHEMERAL_WARN { "warning" } else { "info" };
    warnings.push(Warning::new(
        severity,
        "time_wait_ephemeral",
        format!(
            "{n} TIME_WAIT sockets towards {dest} hold {:.0}% of the {range} ephemeral ports \
             (net.ipv4.ip_local_port_range {lo} {hi}); {tw} TIME_WAIT in all",
            share * 100.0
        ),
        format!(
            "this host opens and closes short connections to {dest} faster than TIME_WAIT (60 s) expires; when the \
             ports towards it run out, connect() fails with EADDRNOTAVAIL. Keep connections alive / pool them in \
             the client"
        ),
    ));
    // tcp_tw_reuse=2 (the default since Linux 5.7) already covers loopback.
    let covered = p.tw_reuse == Some(1) || (p.tw_reuse == Some(2) && dest.ip().is_loopback());
    if !covered {
        let ts = if p.timestamps == Some(0) {
            " (also needs net.ipv4.tcp_timestamps=1, currently 0)"
        } else {
            ""
        };
        push_advice(
            advice,
            Advice::new(
                "net.ipv4.tcp_tw_reuse",
                p.tw_reuse.map(|v| v.to_string()).unwrap_or_else(|| "absent".into()),
                1,
                format!("lets new outgoing connections reuse a TIME_WAIT port when TCP timestamps prove it safe{ts}"),
            ),
        );
    }
    if lo > 1024 || hi < 65535 {
        push_advice(
            advice,
            Advice::new(
                "net.ipv4.ip_local_port_range",
                format!("{lo} {hi}"),
                "1024 65535",
                format!("widens the ephemeral range from {range} to 64512 ports per destination"),
            ),
        );
    }
}

/// CLOSE_WAIT sockets from one process at or above this are a warning.
const CLOSE_WAIT_WARN: u64 = 10;

fn owner_list(counts: &BTreeMap<Owner, u64>, limit: usize) -> String {
    let mut v: Vec<(&Owner, u64)> = counts.iter().map(|(o, n)| (o, *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.iter()
        .take(limit)
        .map(|(o, n)| match o {
            Owner::Process { pid, comm } => format!("{comm} (pid {pid}) holds {n}"),
            Owner::Unknown => format!("{n} held by processes netsight cannot inspect"),
            Owner::Kernel => format!("{n} already orphaned"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn close_wait(socks: &[Sock], owners: Option<&[Owner]>, warnings: &mut Vec<Warning>) {
    let idx: Vec<usize> = (0..socks.len())
        .filter(|&i| socks[i].state == state::CLOSE_WAIT)
        .collect();
    if idx.is_empty() {
        return;
    }
    let n = idx.len() as u64;
    let mut ports: BTreeMap<u16, u64> = BTreeMap::new();
    for &i in &idx {
        *ports.entry(socks[i].local.port()).or_insert(0) += 1;
    }
    let ports = ranked(&ports, 3)
        .into_iter()
        .map(|(p, n)| format!("{p} ({n})"))
        .collect::<Vec<_>>()
        .join(", ");
    let (who, worst) = match owners {
        Some(o) => {
            let mut by: BTreeMap<Owner, u64> = BTreeMap::new();
            for &i in &idx {
                *by.entry(o[i].clone()).or_insert(0) += 1;
            }
            let worst = by
                .iter()
                .filter(|(o, _)| matches!(o, Owner::Process { .. }))
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(n);
            (format!("leaking: {}", owner_list(&by, 3)), worst)
        }
        None => ("run with --processes to name the leaking process".to_string(), n),
    };
    let severity = if worst >= CLOSE_WAIT_WARN { "warning" } else { "info" };
    warnings.push(Warning::new(
        severity,
        "close_wait",
        format!("{n} connections in CLOSE_WAIT on local port(s) {ports}"),
        format!(
            "the peer closed these connections but the application never called close() on its end: a descriptor \
             leak or a stuck worker; no kernel setting fixes it ({who})"
        ),
    ));
}

/// Half-open connections on a port at or above this share of its listeners'
/// backlog (the SYN queue limit) are a warning.
const SYN_RECV_BACKLOG_WARN: f64 = 0.5;
const SYN_RECV_MIN: u64 = 16;
/// Distinct sources beyond which half-open connections look like a flood.
const FLOOD_SOURCES: usize = 16;

pub(super) fn syn_recv(socks: &[Sock], p: &Params, warnings: &mut Vec<Warning>, advice: &mut Vec<Advice>) {
    let mut per_port: BTreeMap<u16, (u64, BTreeSet<IpAddr>)> = BTreeMap::new();
    for s in socks.iter().filter(|s| s.state == state::SYN_RECV) {
        let e = per_port.entry(s.local.port()).or_default();
        e.0 += 1;
        e.1.insert(canonical_ip(s.remote.ip()));
    }
    for (port, (n, sources)) in per_port {
        let backlog: u64 = socks
            .iter()
            .filter(|s| s.state == state::LISTEN && s.local.port() == port)
            .map(|s| s.wqueue as u64)
            .sum();
        let full = backlog > 0 && n as f64 >= backlog as f64 * SYN_RECV_BACKLOG_WARN;
        if n < SYN_RECV_MIN && !full {
            continue;
        }
        let severity = if full || n >= 256 { "warning" } else { "info" };
        let flood = sources.len() >= FLOOD_SOURCES;
        let small_backlog = backlog > 0 && backlog < 128;
        let mut cause = if flood {
            format!(
                "half-open connections from {} addresses: a SYN flood (spoofed sources never complete the \
                 handshake) or a surge of clients whose final ACK does not arrive",
                sources.len()
            )
        } else {
            let list = sources
                .iter()
                .take(5)
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "few sources ({list}): their final ACK does not arrive (a firewall or asymmetric routing drops our \
                 SYN-ACK or their ACK)"
            )
        };
        if small_backlog || full {
            let _ = write!(
                cause,
                "; the listener's backlog is {backlog} (net.core.somaxconn {}), which also bounds the SYN queue — \
                 a small backlog overflows under a modest burst",
                p.somaxconn.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
            );
        }
        warnings.push(Warning::new(
            severity,
            "syn_recv",
            format!("{n} half-open connections (SYN_RECV) on port {port} (backlog {backlog})"),
            cause,
        ));
        if p.syncookies == Some(0) {
            push_advice(
                advice,
                Advice::new(
                    "net.ipv4.tcp_syncookies",
                    0,
                    1,
                    "when the SYN queue overflows, SYN cookies keep accepting legitimate clients instead of dropping them",
                ),
            );
        }
        if let Some(m) = p.max_syn_backlog.filter(|m| (*m as u64) < n * 2) {
            push_advice(
                advice,
                Advice::new(
                    "net.ipv4.tcp_max_syn_backlog",
                    m,
                    (n * 2).next_power_of_two().max(1024),
                    format!("{n} half-open connections on port {port} approach the SYN queue limit"),
                ),
            );
        }
        if let Some(m) = p
            .somaxconn
            .filter(|m| *m < 4096 && (full || small_backlog) && backlog as i64 >= *m)
        {
            push_advice(
                advice,
                Advice::new(
                    "net.core.somaxconn",
                    m,
                    4096,
                    format!(
                        "port {port}'s backlog is capped by somaxconn; raise the application's listen() backlog too"
                    ),
                ),
            );
        }
    }
}

const LAST_ACK_WARN: u64 = 10;

pub(super) fn last_ack(socks: &[Sock], p: &Params, warnings: &mut Vec<Warning>, advice: &mut Vec<Advice>) {
    let mut peers: BTreeMap<IpAddr, u64> = BTreeMap::new();
    for s in socks.iter().filter(|s| s.state == state::LAST_ACK) {
        *peers.entry(canonical_ip(s.remote.ip())).or_insert(0) += 1;
    }
    let n: u64 = peers.values().sum();
    if n < LAST_ACK_WARN {
        return;
    }
    let top = ranked(&peers, 3)
        .into_iter()
        .map(|(a, n)| format!("{a} ({n})"))
        .collect::<Vec<_>>()
        .join(", ");
    warnings.push(Warning::new(
        "warning",
        "last_ack",
        format!("{n} connections in LAST_ACK"),
        format!(
            "the peer closed, we closed too, and our FIN is not acknowledged: peers that went away (crash, NAT or \
             firewall state expired) or a firewall dropping the final ACK; the kernel retransmits the FIN until it \
             gives up. Top peers: {top}"
        ),
    ));
    if let Some(r) = p.orphan_retries.filter(|r| *r == 0 || *r > 3) {
        push_advice(
            advice,
            Advice::new(
                "net.ipv4.tcp_orphan_retries",
                r,
                3,
                "closed (orphaned) sockets in LAST_ACK/FIN_WAIT1 give up after 3 FIN retransmissions instead of 8 \
                 (0 means 8)",
            ),
        );
    }
}

const FIN_WAIT2_WARN: u64 = 100;

pub(super) fn fin_wait2(n: u64, p: &Params, warnings: &mut Vec<Warning>, advice: &mut Vec<Advice>) {
    if n < FIN_WAIT2_WARN {
        return;
    }
    warnings.push(Warning::new(
        "info",
        "fin_wait2",
        format!("{n} connections in FIN_WAIT2"),
        "we closed and the peer acknowledged, but the peer has not closed its side yet (it keeps the connection \
         half-open or vanished)"
            .into(),
    ));
    if let Some(t) = p.fin_timeout.filter(|t| *t > 30) {
        push_advice(
            advice,
            Advice::new(
                "net.ipv4.tcp_fin_timeout",
                t,
                30,
                "orphaned FIN_WAIT2 sockets are released after 30 s instead of waiting for an absent peer",
            ),
        );
    }
}

pub(super) fn accept_queues(
    socks: &[Sock],
    owners: Option<&[Owner]>,
    p: &Params,
    warnings: &mut Vec<Warning>,
    advice: &mut Vec<Advice>,
) {
    for (i, s) in socks.iter().enumerate() {
        if s.state != state::LISTEN || s.wqueue == 0 || s.rqueue < s.wqueue {
            continue;
        }
        let who = owners.map(|o| o[i].suffix()).unwrap_or_default();
        warnings.push(Warning::new(
            "warning",
            "accept_queue_full",
            format!("accept queue of {}{who} is full: {}/{}", s.local, s.rqueue, s.wqueue),
            "the application does not accept() connections as fast as they complete; further handshakes are \
             dropped (TcpExtListenOverflows) and clients retry after a second or more"
                .into(),
        ));
        if let Some(m) = p.somaxconn.filter(|m| *m < 4096 && s.wqueue as i64 >= *m) {
            push_advice(
                advice,
                Advice::new(
                    "net.core.somaxconn",
                    m,
                    4096,
                    format!(
                        "the backlog of {} is capped at somaxconn; raise it and the application's listen() backlog",
                        s.local
                    ),
                ),
            );
        }
    }
}
