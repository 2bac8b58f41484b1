//! `netsight analyze tcp`: the TCP/IP MIB counters (read with the netstat
//! collector's parsers, twice, `--sample` apart) as rates, the retransmission
//! ratio, resets, timeouts and SYN/accept-queue drops; the congestion-control
//! algorithms of current connections (sock_diag `INET_DIAG_CONG`, through the
//! sockets collector's dumps); the TCP sysctls that matter; tuning advice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::common::{
    dump_sockets, finish, open_diag, push_advice, render_advice, render_limitations, render_warnings, section,
    sysctl_text, table, Advice, Failure, Limitation, Mib, Report, SysctlValue, Warning,
};
use crate::cli::{load_config, CommonArgs};
use crate::collect::sockets::SocketDumps;
use crate::collect::CollectContext;
use crate::netlink::sock_diag::state;

#[derive(Args, Debug)]
pub struct TcpArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Every counter of every MIB group, not only the TCP essentials.
    #[arg(long)]
    pub detail: bool,
    /// Read the counters twice, this far apart, for rates (`0s`: since boot only).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5s")]
    pub sample: Duration,
    /// Print JSON (shape in docs/analyze.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct TcpReport {
    /// Measured time between the two reads; `null` with `--sample 0s`.
    pub sample_seconds: Option<f64>,
    pub summary: Summary,
    pub counters: Vec<CounterRow>,
    pub congestion_control: Congestion,
    pub sysctls: Vec<SysctlValue>,
    pub warnings: Vec<Warning>,
    pub advice: Vec<Advice>,
    pub limitations: Vec<Limitation>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// RetransSegs / OutSegs over the sample, percent.
    pub retransmission_ratio_percent: Option<f64>,
    /// The same since boot.
    pub retransmission_ratio_since_boot_percent: Option<f64>,
    /// Key figures (`segments_out`, `retransmitted_segments`, `resets_sent`,
    /// `connections_reset`, `failed_connection_attempts`, `timeouts`,
    /// `listen_overflows`, `listen_drops`, `syn_queue_drops`, `syncookies_sent`).
    pub figures: BTreeMap<&'static str, Figure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// `Group.Field` the figure comes from.
    pub counter: &'static str,
    pub since_boot: Option<i64>,
    pub during_sample: Option<i64>,
    pub per_second: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CounterRow {
    pub group: String,
    pub field: String,
    /// `counter` or `gauge` (gauges have no delta or rate).
    pub kind: &'static str,
    /// Value at the second read.
    pub value: i64,
    pub delta: Option<i64>,
    pub per_second: Option<f64>,
    /// What it counts (essential counters only).
    pub meaning: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Congestion {
    /// net.ipv4.tcp_congestion_control: used by new connections.
    pub default: Option<String>,
    pub available: Vec<String>,
    /// ESTABLISHED connections by algorithm, most first.
    pub in_use: Vec<AlgorithmCount>,
}

#[derive(Debug, Serialize)]
pub struct AlgorithmCount {
    pub algorithm: String,
    pub connections: u64,
}

/// The essential counters: group, field, meaning.
const ESSENTIAL: &[(&str, &str, &str)] = &[
    ("Tcp", "ActiveOpens", "connections this host opened (connect)"),
    ("Tcp", "PassiveOpens", "connections this host accepted"),
    (
        "Tcp",
        "AttemptFails",
        "connection attempts that failed (SYN_SENT/SYN_RECV → CLOSED or LISTEN)",
    ),
    (
        "Tcp",
        "EstabResets",
        "established connections reset (ESTABLISHED/CLOSE_WAIT → CLOSED)",
    ),
    ("Tcp", "CurrEstab", "connections now ESTABLISHED or CLOSE_WAIT"),
    ("Tcp", "InSegs", "segments received"),
    ("Tcp", "OutSegs", "segments sent, excluding retransmissions"),
    ("Tcp", "RetransSegs", "segments retransmitted"),
    ("Tcp", "InErrs", "segments received with errors"),
    ("Tcp", "InCsumErrors", "segments received with a bad checksum"),
    ("Tcp", "OutRsts", "resets sent"),
    ("TcpExt", "TCPTimeouts", "retransmission timeouts (RTO fired)"),
    ("TcpExt", "TCPLostRetransmit", "retransmissions that were lost again"),
    (
        "TcpExt",
        "TCPFastRetrans",
        "fast retransmissions (loss detected by duplicate ACKs/SACK)",
    ),
    ("TcpExt", "TCPSynRetrans", "SYN and SYN-ACK retransmissions"),
    ("TcpExt", "TCPSpuriousRTOs", "timeouts later found unnecessary"),
    (
        "TcpExt",
        "ListenOverflows",
        "handshakes dropped because an accept queue was full",
    ),
    (
        "TcpExt",
        "ListenDrops",
        "SYNs dropped by a listener for any reason (includes ListenOverflows)",
    ),
    (
        "TcpExt",
        "TCPReqQFullDrop",
        "SYNs dropped because the SYN queue was full and cookies were off",
    ),
    (
        "TcpExt",
        "TCPReqQFullDoCookies",
        "SYN cookies sent because the SYN queue was full",
    ),
    ("TcpExt", "SyncookiesSent", "SYN cookies sent"),
    ("TcpExt", "SyncookiesFailed", "invalid SYN cookies received"),
    (
        "TcpExt",
        "TCPAbortOnData",
        "connections reset because data arrived after close or was unread at close",
    ),
    (
        "TcpExt",
        "TCPAbortOnClose",
        "connections reset at close() with unread data",
    ),
    (
        "TcpExt",
        "TCPAbortOnTimeout",
        "connections aborted after too many retransmissions",
    ),
    (
        "TcpExt",
        "TCPAbortOnMemory",
        "connections aborted for lack of memory (tcp_mem)",
    ),
    ("TcpExt", "TCPMemoryPressures", "times TCP entered memory pressure"),
    (
        "TcpExt",
        "TCPBacklogDrop",
        "segments dropped: socket backlog full while the socket was locked",
    ),
    ("TcpExt", "TCPRcvQDrop", "segments dropped: receive buffer full"),
    (
        "TcpExt",
        "PruneCalled",
        "receive queues pruned for lack of buffer space",
    ),
    (
        "TcpExt",
        "TCPOFODrop",
        "out-of-order segments dropped for lack of buffer space",
    ),
    ("TcpExt", "TW", "connections that finished TIME_WAIT"),
    (
        "TcpExt",
        "TCPTimeWaitOverflow",
        "TIME_WAIT sockets not created: tcp_max_tw_buckets reached",
    ),
];

/// Gauges of the MIB tables (the netstat collector exports these without `_total`).
fn is_gauge(group: &str, field: &str) -> bool {
    matches!(
        (group, field),
        ("Tcp", "RtoAlgorithm" | "RtoMin" | "RtoMax" | "MaxConn" | "CurrEstab") | ("Ip", "Forwarding" | "DefaultTTL")
    )
}

/// Sysctls shown, with what they mean.
const SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.tcp_sack", "selective acknowledgements (1: on)"),
    (
        "net.ipv4.tcp_timestamps",
        "timestamps: RTT measurement, PAWS; needed by tcp_tw_reuse (1: on)",
    ),
    ("net.ipv4.tcp_window_scaling", "windows above 64 KiB (1: on)"),
    (
        "net.ipv4.tcp_tw_reuse",
        "reuse TIME_WAIT for outgoing connections (0 off, 1 on, 2 loopback only)",
    ),
    (
        "net.ipv4.tcp_syncookies",
        "SYN cookies (0 off, 1 when the SYN queue overflows, 2 always)",
    ),
    ("net.ipv4.tcp_congestion_control", "default congestion control"),
    (
        "net.ipv4.tcp_available_congestion_control",
        "loaded congestion controls",
    ),
    ("net.core.default_qdisc", "default queueing discipline"),
    ("net.ipv4.tcp_ecn", "ECN (0 off, 1 on, 2 only when the peer asks)"),
    ("net.ipv4.tcp_fastopen", "TCP Fast Open (bit 1 client, bit 2 server)"),
    (
        "net.ipv4.tcp_mtu_probing",
        "path-MTU probing (0 off, 1 after a black hole, 2 always)",
    ),
    (
        "net.ipv4.tcp_slow_start_after_idle",
        "restart from the initial window after idle",
    ),
    ("net.ipv4.tcp_rmem", "receive buffer min default max (bytes)"),
    ("net.ipv4.tcp_wmem", "send buffer min default max (bytes)"),
    ("net.ipv4.tcp_mem", "TCP memory low pressure high (pages)"),
    ("net.core.somaxconn", "cap on listen() backlogs"),
    ("net.ipv4.tcp_max_syn_backlog", "half-open connections per listener"),
    ("net.ipv4.tcp_max_tw_buckets", "TIME_WAIT sockets kept"),
    ("net.ipv4.tcp_fin_timeout", "FIN_WAIT_2 lifetime of orphans (s)"),
    ("net.ipv4.tcp_keepalive_time", "idle time before keepalive probes (s)"),
    (
        "net.ipv4.tcp_retries2",
        "retransmissions before an established connection is dropped",
    ),
    ("net.ipv4.tcp_syn_retries", "SYN retransmissions for connect()"),
];

pub fn run(args: TcpArgs) -> anyhow::Result<u8> {
    let cfg = load_config(&args.common)?;
    let ctx = CollectContext::new(&cfg.paths.procfs, &cfg.paths.sysfs);
    let result = collect(&ctx, &args);
    finish("tcp", args.json, result)
}

fn collect(ctx: &CollectContext, args: &TcpArgs) -> Result<TcpReport, Failure> {
    let mut limitations = Vec::new();
    let sampled = !args.sample.is_zero();
    let (before, after, seconds) = if sampled {
        let t0 = Instant::now();
        let before = Mib::read(ctx)?;
        std::thread::sleep(args.sample.saturating_sub(t0.elapsed()));
        let t1 = Instant::now();
        let after = Mib::read(ctx)?;
        (Some(before), after, Some((t1 - t0).as_secs_f64()))
    } else {
        (None, Mib::read(ctx)?, None)
    };
    let mut in_use: BTreeMap<String, u64> = BTreeMap::new();
    if ctx.is_live() {
        let mut diag = open_diag()?;
        let dumps = SocketDumps {
            tcp_states: 1 << state::ESTABLISHED,
            tcp_info: true,
            udp_states: 0,
        };
        for s in dump_sockets(&mut diag, &dumps, &mut limitations)? {
            if let Some(c) = s.cong {
                *in_use.entry(c).or_insert(0) += 1;
            }
        }
    } else {
        limitations.push(Limitation {
            what: "congestion_control".into(),
            missing_capabilities: vec![],
            message: "congestion control in use is not shown: it comes from netlink sock_diag, which only the live \
                      kernel answers"
                .into(),
        });
    }
    let sysctls: Vec<SysctlValue> = SYSCTLS
        .iter()
        .map(|(n, m)| SysctlValue {
            name: n.to_string(),
            value: sysctl_text(ctx, n),
            meaning: m.to_string(),
        })
        .collect();
    let mut report = analyze(before.as_ref(), &after, seconds, args.detail, &sysctls, in_use);
    report.limitations = limitations;
    Ok(report)
}

fn delta(before: Option<&Mib>, after: &Mib, group: &str, field: &str) -> Option<i64> {
    let b = before?.get(group, field)?;
    let a = after.get(group, field)?;
    // A counter that went back was reset (or wrapped): no honest delta.
    (a >= b).then_some(a - b)
}

/// Pure analysis of two MIB reads (`before` is `None` without a sample).
pub fn analyze(
    before: Option<&Mib>,
    after: &Mib,
    seconds: Option<f64>,
    detail: bool,
    sysctls: &[SysctlValue],
    in_use: BTreeMap<String, u64>,
) -> TcpReport {
    let rate = |d: Option<i64>| match (d, seconds) {
        (Some(d), Some(s)) if s > 0.0 => Some(d as f64 / s),
        _ => None,
    };
    let row = |group: &str, field: &str, value: i64, meaning: Option<&'static str>| {
        let gauge = is_gauge(group, field);
        let d = if gauge {
            None
        } else {
            delta(before, after, group, field)
        };
        CounterRow {
            group: group.to_string(),
            field: field.to_string(),
            kind: if gauge { "gauge" } else { "counter" },
            value,
            delta: d,
            per_second: rate(d),
            meaning,
        }
    };
    let counters: Vec<CounterRow> = if detail {
        let meanings: BTreeMap<(&str, &str), &'static str> = ESSENTIAL.iter().map(|(g, f, m)| ((*g, *f), *m)).collect();
        after
            .groups
            .iter()
            .flat_map(|g| {
                g.fields
                    .iter()
                    .map(|(f, v)| row(&g.name, f, *v, meanings.get(&(g.name.as_str(), f.as_str())).copied()))
            })
            .collect()
    } else {
        ESSENTIAL
            .iter()
            .filter_map(|(g, f, m)| after.get(g, f).map(|v| row(g, f, v, Some(m))))
            .collect()
    };

    let figure = |counter: &'static str| {
        let (g, f) = counter.split_once('.').unwrap_or(("", counter));
        let d = delta(before, after, g, f);
        Figure {
            counter,
            since_boot: after.get(g, f),
            during_sample: d,
            per_second: rate(d),
        }
    };
    let mut figures = BTreeMap::new();
    for (name, counter) in [
        ("segments_out", "Tcp.OutSegs"),
        ("retransmitted_segments", "Tcp.RetransSegs"),
        ("resets_sent", "Tcp.OutRsts"),
        ("connections_reset", "Tcp.EstabResets"),
        ("failed_connection_attempts", "Tcp.AttemptFails"),
        ("timeouts", "TcpExt.TCPTimeouts"),
        ("listen_overflows", "TcpExt.ListenOverflows"),
        ("listen_drops", "TcpExt.ListenDrops"),
        ("syn_queue_drops", "TcpExt.TCPReqQFullDrop"),
        ("syncookies_sent", "TcpExt.SyncookiesSent"),
    ] {
        figures.insert(name, figure(counter));
    }
    let ratio = |re: Option<i64>, out: Option<i64>| match (re, out) {
        (Some(r), Some(o)) if o > 0 => Some((r as f64 / o as f64 * 100.0 * 1000.0).round() / 1000.0),
        _ => None,
    };
    let summary = Summary {
        retransmission_ratio_percent: ratio(
            figures["retransmitted_segments"].during_sample,
            figures["segments_out"].during_sample,
        ),
        retransmission_ratio_since_boot_percent: ratio(
            figures["retransmitted_segments"].since_boot,
            figures["segments_out"].since_boot,
        ),
        figures,
    };

    let sys = |name: &str| sysctls.iter().find(|s| s.name == name).and_then(|s| s.value.clone());
    let mut in_use: Vec<AlgorithmCount> = in_use
        .into_iter()
        .map(|(algorithm, connections)| AlgorithmCount { algorithm, connections })
        .collect();
    in_use.sort_by(|a, b| b.connections.cmp(&a.connections).then(a.algorithm.cmp(&b.algorithm)));
    let congestion = Congestion {
        default: sys("net.ipv4.tcp_congestion_control"),
        available: sys("net.ipv4.tcp_available_congestion_control")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        in_use,
    };

    let mut warnings = Vec::new();
    let mut advice = Vec::new();
    diagnose(
        before,
        after,
        seconds,
        &summary,
        &congestion,
        &sys,
        &mut warnings,
        &mut advice,
    );
    TcpReport {
        sample_seconds: seconds,
        summary,
        counters,
        congestion_control: congestion,
        sysctls: sysctls.to_vec(),
        warnings,
        advice,
        limitations: Vec::new(),
    }
}

/// Retransmission ratio above which the sample is a warning (with enough segments).
const RETRANS_WARN_PERCENT: f64 = 1.0;
const RETRANS_MIN_SEGMENTS: i64 = 1000;

#[allow(clippy::too_many_arguments)]
fn diagnose(
    before: Option<&Mib>,
    after: &Mib,
    seconds: Option<f64>,
    summary: &Summary,
    cong: &Congestion,
    sys: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<Warning>,
    advice: &mut Vec<Advice>,
) {
    let sampled = before.is_some();
    let when = if sampled {
        format!("during the {:.1} s sample", seconds.unwrap_or(0.0))
    } else {
        "since boot".into()
    };
    // The change over the sample, or the total since boot without one.
    let recent = |g: &str, f: &str| {
        if sampled {
            delta(before, after, g, f)
        } else {
            after.get(g, f)
        }
    };
    let int = |name: &str| sys(name).and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok());
    // Settings that are wrong on any modern network.
    for (name, why) in [
        (
            "net.ipv4.tcp_sack",
            "SACK lets a sender retransmit only the segments lost, not everything after the first",
        ),
        (
            "net.ipv4.tcp_window_scaling",
            "without it the receive window stops at 64 KiB, capping throughput at 64 KiB per round trip",
        ),
        (
            "net.ipv4.tcp_timestamps",
            "timestamps give RTT samples, PAWS protection and make tcp_tw_reuse possible",
        ),
    ] {
        if int(name) == Some(0) {
            push_advice(advice, Advice::new(name, 0, 1, why));
        }
    }

    let re = summary.figures["retransmitted_segments"].clone();
    let out = summary.figures["segments_out"].clone();
    let (ratio, segs) = if sampled {
        (summary.retransmission_ratio_percent, out.during_sample.unwrap_or(0))
    } else {
        (
            summary.retransmission_ratio_since_boot_percent,
            out.since_boot.unwrap_or(0),
        )
    };
    if let Some(r) = ratio.filter(|r| *r >= RETRANS_WARN_PERCENT && segs >= RETRANS_MIN_SEGMENTS) {
        let timeouts = recent("TcpExt", "TCPTimeouts").unwrap_or(0);
        let fast = recent("TcpExt", "TCPFastRetrans").unwrap_or(0);
        let kind = if timeouts > fast {
            "mostly timeouts (RTO): tail losses or a path that blackholes packets"
        } else {
            "mostly fast retransmits: random loss or congestion on a path"
        };
        warnings.push(Warning::new(
            if sampled { "warning" } else { "info" },
            "retransmissions",
            format!(
                "retransmission ratio {r:.2}% {when} ({} of {} segments)",
                if sampled { re.during_sample } else { re.since_boot }.unwrap_or(0),
                segs
            ),
            format!("{kind}; {timeouts} timeouts, {fast} fast retransmits"),
        ));
        let default = cong.default.clone().unwrap_or_default();
        if sampled && matches!(default.as_str(), "cubic" | "reno") && cong.available.iter().any(|a| a == "bbr") {
            push_advice(
                advice,
                Advice::new(
                    "net.ipv4.tcp_congestion_control",
                    &default,
                    "bbr",
                    "loss-based algorithms halve their rate at every loss; BBR keeps throughput on lossy or long paths",
                ),
            );
        }
    }
    let overflows = recent("TcpExt", "ListenOverflows").unwrap_or(0);
    let drops = recent("TcpExt", "ListenDrops").unwrap_or(0);
    if overflows > 0 || drops > 0 {
        warnings.push(Warning::new(
            if sampled { "warning" } else { "info" },
            "listen_overflows",
            format!("accept queues overflowed {overflows} times {when} ({drops} SYNs dropped by listeners)"),
            "an application accepts connections more slowly than they complete, or its backlog is too small; \
             `netsight analyze listening` shows each listener's queue and backlog"
                .into(),
        ));
        if let Some(m) = int("net.core.somaxconn").filter(|m| *m < 4096) {
            push_advice(
                advice,
                Advice::new(
                    "net.core.somaxconn",
                    m,
                    4096,
                    "caps every listen() backlog; raise the application's backlog too",
                ),
            );
        }
    }
    let reqq = recent("TcpExt", "TCPReqQFullDrop").unwrap_or(0);
    if reqq > 0 {
        warnings.push(Warning::new(
            if sampled { "warning" } else { "info" },
            "syn_queue_drops",
            format!("{reqq} SYNs dropped {when} because a SYN queue was full"),
            "a SYN flood or a burst of clients larger than the listener's backlog, with SYN cookies off".into(),
        ));
        if int("net.ipv4.tcp_syncookies") == Some(0) {
            push_advice(
                advice,
                Advice::new(
                    "net.ipv4.tcp_syncookies",
                    0,
                    1,
                    "SYN cookies answer clients even when the SYN queue is full",
                ),
            );
        }
        if let Some(m) = int("net.ipv4.tcp_max_syn_backlog") {
            push_advice(
                advice,
                Advice::new(
                    "net.ipv4.tcp_max_syn_backlog",
                    m,
                    (m.max(512) as u64 * 2).next_power_of_two(),
                    "a longer SYN queue absorbs bursts of new connections",
                ),
            );
        }
    }
    let rcv = ["TCPRcvQDrop", "PruneCalled", "TCPBacklogDrop", "TCPOFODrop"]
        .iter()
        .map(|f| recent("TcpExt", f).unwrap_or(0))
        .sum::<i64>();
    if rcv > 0 {
        warnings.push(Warning::new(
            if sampled { "warning" } else { "info" },
            "receive_buffer_drops",
            format!("{rcv} receive-buffer drops/prunes {when} (TCPRcvQDrop, PruneCalled, TCPBacklogDrop, TCPOFODrop)"),
            "applications read slower than data arrives, or receive buffers are too small for the bandwidth-delay \
             product"
                .into(),
        ));
        if let Some(v) = sys("net.ipv4.tcp_rmem") {
            let parts: Vec<i64> = v.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if parts.len() == 3 && parts[2] < 64 << 20 {
                let max = (parts[2] * 2).max(16 << 20);
                push_advice(
                    advice,
                    Advice::new(
                        "net.ipv4.tcp_rmem",
                        &v,
                        format!("{} {} {max}", parts[0], parts[1]),
                        "a larger maximum lets receive-buffer autotuning keep up with fast or long paths",
                    ),
                );
            }
        }
    }
    let mem = recent("TcpExt", "TCPAbortOnMemory").unwrap_or(0) + recent("TcpExt", "TCPMemoryPressures").unwrap_or(0);
    if mem > 0 {
        warnings.push(Warning::new(
            if sampled { "warning" } else { "info" },
            "tcp_memory",
            format!("TCP memory pressure {when}: {mem} pressure episodes or aborts"),
            "all TCP sockets together reached net.ipv4.tcp_mem; buffers shrink and connections may be aborted".into(),
        ));
        if let Some(v) = sys("net.ipv4.tcp_mem") {
            let parts: Vec<i64> = v.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if parts.len() == 3 {
                push_advice(
                    advice,
                    Advice::new(
                        "net.ipv4.tcp_mem",
                        &v,
                        format!("{} {} {}", parts[0] * 2, parts[1] * 2, parts[2] * 2),
                        "more memory (in pages) before TCP enters pressure; check free memory first",
                    ),
                );
            }
        }
    }
    let tw = recent("TcpExt", "TCPTimeWaitOverflow").unwrap_or(0);
    if tw > 0 {
        warnings.push(Warning::new(
            if sampled { "warning" } else { "info" },
            "time_wait_overflow",
            format!("{tw} TIME_WAIT sockets not created {when}: net.ipv4.tcp_max_tw_buckets reached"),
            "connections close faster than TIME_WAIT (60 s) expires; `netsight analyze connections` shows towards \
             whom"
                .into(),
        ));
        if let Some(m) = int("net.ipv4.tcp_max_tw_buckets") {
            push_advice(
                advice,
                Advice::new(
                    "net.ipv4.tcp_max_tw_buckets",
                    m,
                    (m.max(1) as u64 * 2).next_power_of_two(),
                    "room for the TIME_WAIT sockets this host produces",
                ),
            );
        }
    }
    if sampled {
        let rsts = recent("Tcp", "OutRsts").unwrap_or(0);
        let per_s = seconds.filter(|s| *s > 0.0).map(|s| rsts as f64 / s).unwrap_or(0.0);
        if per_s >= 10.0 {
            let on_data = recent("TcpExt", "TCPAbortOnData").unwrap_or(0);
            let on_close = recent("TcpExt", "TCPAbortOnClose").unwrap_or(0);
            warnings.push(Warning::new(
                "info",
                "resets",
                format!("{per_s:.1} resets sent per second ({rsts} {when})"),
                format!(
                    "connections to closed ports (scanners, clients of a stopped service) or aborted connections \
                     ({on_data} aborted on data, {on_close} closed with unread data)"
                ),
            ));
        }
        let timeouts = recent("TcpExt", "TCPTimeouts").unwrap_or(0);
        if timeouts > 0 && !warnings.iter().any(|w| w.kind == "retransmissions") {
            warnings.push(Warning::new(
                "info",
                "timeouts",
                format!("{timeouts} retransmission timeouts {when}"),
                "a segment (or its ACK) was lost with no later traffic to trigger fast retransmit: tail loss, an \
                 unreachable peer, or a black hole"
                    .into(),
            ));
        }
    }
}

impl Report for TcpReport {
    fn limitations(&self) -> &[Limitation] {
        &self.limitations
    }

    fn render_text(&self) -> String {
        let mut out = String::new();
        let f = &self.summary.figures;
        match self.sample_seconds {
            Some(s) => {
                let _ = writeln!(out, "TCP over a {s:.1} s sample");
            }
            None => {
                let _ = writeln!(out, "TCP since boot (no sample: rates need --sample)");
            }
        }
        let pct = |v: Option<f64>| v.map(|v| format!("{v:.2}%")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  retransmission ratio: {} (since boot {})",
            pct(self.summary.retransmission_ratio_percent),
            pct(self.summary.retransmission_ratio_since_boot_percent)
        );
        out.push('\n');
        out.push_str(&table(
            &["FIGURE", "COUNTER", "SAMPLE", "PER SECOND", "SINCE BOOT"],
            f.iter()
                .map(|(name, fig)| {
                    vec![
                        name.replace('_', " "),
                        fig.counter.to_string(),
                        opt(fig.during_sample),
                        rate(fig.per_second),
                        opt(fig.since_boot),
                    ]
                })
                .collect(),
            &[2, 3, 4],
        ));
        section(
            &mut out,
            if self.counters.len() > ESSENTIAL.len() {
                "Counters (all)"
            } else {
                "Counters"
            },
        );
        out.push_str(&table(
            &["COUNTER", "VALUE", "DELTA", "PER SECOND", "MEANING"],
            self.counters
                .iter()
                .map(|c| {
                    vec![
                        format!("{}.{}", c.group, c.field),
                        c.value.to_string(),
                        opt(c.delta),
                        rate(c.per_second),
                        c.meaning.unwrap_or("").to_string(),
                    ]
                })
                .collect(),
            &[1, 2, 3],
        ));
        section(&mut out, "Congestion control");
        let _ = writeln!(
            out,
            "  default {} (available: {})",
            self.congestion_control.default.as_deref().unwrap_or("?"),
            self.congestion_control.available.join(" ")
        );
        if self.congestion_control.in_use.is_empty() {
            let _ = writeln!(out, "  no established connections");
        } else {
            let used = self
                .congestion_control
                .in_use
                .iter()
                .map(|a| format!("{} ({})", a.algorithm, a.connections))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "  in use by established connections: {used}");
        }
        section(&mut out, "Kernel parameters");
        out.push_str(&table(
            &["PARAMETER", "VALUE", "MEANING"],
            self.sysctls
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.value.clone().unwrap_or_else(|| "(absent)".into()),
                        s.meaning.clone(),
                    ]
                })
                .collect(),
            &[],
        ));
        render_warnings(&mut out, &self.warnings);
        render_advice(&mut out, &self.advice);
        render_limitations(&mut out, &self.limitations);
        out
    }
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn rate(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::netstat::MibGroup;

    fn mib(tcp: &[(&str, i64)], ext: &[(&str, i64)]) -> Mib {
        let g = |name: &str, f: &[(&str, i64)]| MibGroup {
            name: name.into(),
            fields: f.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        Mib {
            groups: vec![g("Tcp", tcp), g("TcpExt", ext)],
        }
    }

    fn sysctls(pairs: &[(&str, &str)]) -> Vec<SysctlValue> {
        pairs
            .iter()
            .map(|(n, v)| SysctlValue {
                name: n.to_string(),
                value: Some(v.to_string()),
                meaning: String::new(),
            })
            .collect()
    }

    #[test]
    fn rates_are_deltas_over_the_sample() {
        let b = mib(
            &[
                ("OutSegs", 1000),
                ("RetransSegs", 10),
                ("CurrEstab", 5),
                ("ActiveOpens", 7),
            ],
            &[],
        );
        let a = mib(
            &[
                ("OutSegs", 11000),
                ("RetransSegs", 310),
                ("CurrEstab", 9),
                ("ActiveOpens", 27),
            ],
            &[],
        );
        let r = analyze(Some(&b), &a, Some(2.0), false, &[], BTreeMap::new());
        let opens = r.counters.iter().find(|c| c.field == "ActiveOpens").expect("row");
        assert_eq!((opens.delta, opens.per_second), (Some(20), Some(10.0)));
        let est = r.counters.iter().find(|c| c.field == "CurrEstab").expect("gauge");
        assert_eq!(
            (est.kind, est.delta, est.per_second, est.value),
            ("gauge", None, None, 9)
        );
        assert_eq!(r.summary.retransmission_ratio_percent, Some(3.0));
        assert_eq!(r.summary.figures["segments_out"].per_second, Some(5000.0));
        let w = r
            .warnings
            .iter()
            .find(|w| w.kind == "retransmissions")
            .expect("retrans warning");
        assert_eq!(w.severity, "warning");
        // A counter that went backwards has no delta.
        let a2 = mib(&[("OutSegs", 5)], &[]);
        let r = analyze(Some(&b), &a2, Some(2.0), false, &[], BTreeMap::new());
        assert_eq!(
            r.counters.iter().find(|c| c.field == "OutSegs").and_then(|c| c.delta),
            None
        );
    }

    #[test]
    fn queue_drops_and_bad_settings_give_advice() {
        let b = mib(
            &[("OutSegs", 0)],
            &[("ListenOverflows", 0), ("ListenDrops", 0), ("TCPReqQFullDrop", 0)],
        );
        let a = mib(
            &[("OutSegs", 10)],
            &[("ListenOverflows", 5), ("ListenDrops", 5), ("TCPReqQFullDrop", 3)],
        );
        let s = sysctls(&[
            ("net.core.somaxconn", "128"),
            ("net.ipv4.tcp_syncookies", "0"),
            ("net.ipv4.tcp_max_syn_backlog", "256"),
            ("net.ipv4.tcp_sack", "0"),
        ]);
        let r = analyze(Some(&b), &a, Some(1.0), false, &s, BTreeMap::new());
        let kinds: Vec<&str> = r.warnings.iter().map(|w| w.kind.as_str()).collect();
        assert!(
            kinds.contains(&"listen_overflows") && kinds.contains(&"syn_queue_drops"),
            "{kinds:?}"
        );
        let adv: Vec<(&str, &str, &str)> = r
            .advice
            .iter()
            .map(|a| (a.parameter.as_str(), a.current.as_str(), a.suggested.as_str()))
            .collect();
        assert!(adv.contains(&("net.core.somaxconn", "128", "4096")), "{adv:?}");
        assert!(adv.contains(&("net.ipv4.tcp_syncookies", "0", "1")));
        assert!(adv.contains(&("net.ipv4.tcp_max_syn_backlog", "256", "1024")));
        assert!(adv.contains(&("net.ipv4.tcp_sack", "0", "1")));
    }

    #[test]
    fn detail_lists_every_field_and_congestion_is_ranked() {
        let a = mib(&[("OutSegs", 1), ("Unusual", 2)], &[("SomethingNew", 3)]);
        let mut used = BTreeMap::new();
        used.insert("cubic".to_string(), 1);
        used.insert("bbr".to_string(), 4);
        let s = sysctls(&[
            ("net.ipv4.tcp_congestion_control", "bbr"),
            ("net.ipv4.tcp_available_congestion_control", "reno cubic bbr"),
        ]);
        let r = analyze(None, &a, None, true, &s, used);
        assert_eq!(r.counters.len(), 3);
        assert!(r.counters.iter().all(|c| c.delta.is_none() && c.per_second.is_none()));
        assert_eq!(r.congestion_control.in_use[0].algorithm, "bbr");
        assert_eq!(r.congestion_control.available, ["reno", "cubic", "bbr"]);
        assert!(r.render_text().contains("bbr (4), cubic (1)"));
    }
}
