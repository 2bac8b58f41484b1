//! TCP and UDP sockets (IPv4 and IPv6) through netlink `sock_diag`: counts by
//! state, listener accept queues, per-listening-port connection states, RTT and
//! volume, and per-process connection counts. Never reads `/proc/net/tcp`.
//!
//! Every tick runs three dumps on one netlink socket: TCP of both families in one
//! legacy `TCPDIAG_GETSOCK` request (one walk of the TCP hash tables instead of one
//! per family; the kernel dumps listeners first, so the set of listening ports is
//! known before any connection), then UDP (v4, v6). A kernel without the legacy
//! request gets the per-family requests instead: TCP listeners (v4, v6), TCP
//! without listeners (v4, v6). Dumps that provably cannot return a socket are
//! skipped, and where only listeners can exist just the listening hash is dumped
//! (see [`Occupancy`] and [`TcpWalk`]): on an idle host the walk of the
//! established hash is most of the collector's cost, and the kernel pays it for
//! every namespace's sockets whatever this one holds, even when the only socket
//! is the daemon's own `/metrics` listener. Each socket is folded into fixed-size
//! aggregates the moment its netlink message is parsed; nothing per socket is kept
//! or allocated. Label strings are built only for the capped output.
//!
//! Process attribution (`process` label): the comm of the process holding the
//! socket's fd, from [`ProcMap`], rebuilt every `process_refresh`. Values:
//! - `""`: no process owns the socket (inode 0: TIME_WAIT, SYN_RECV request
//!   sockets, orphaned sockets closing in the kernel);
//! - `"unknown"`: an fd owns it but netsight could not see which process (another
//!   user's process without CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH, or a socket
//!   created since the last process scan);
//! - `"other"`: processes beyond `max_processes`.

mod aggregate;
mod dump;
mod emit;
mod occupancy;

use aggregate::*;
use dump::*;
pub use dump::{visit_sockets, DumpFailed, Protocol, SocketDumps, VisitOutcome};
use occupancy::*;
pub use occupancy::{Occupancy, TcpWalk};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::procmap::ProcMap;
use super::tick_files::SharedFile;
use super::{CollectContext, CollectError, Collector, KeptFiles};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::config::SocketsConfig;
use crate::netlink::sock_diag::{
    state, DiagError, DiagSocket, DumpRequest, InetSock, AF_INET, AF_INET6, AF_UNSPEC, ALL_BUT_LISTEN, ALL_STATES,
    IPPROTO_TCP, IPPROTO_UDP, LISTEN_ONLY,
};
use crate::netlink::tcp_info;
use crate::parse::netstat::mib_value;
use crate::parse::sockstat::sockstat_value;
use crate::snapshot::{Emitter, HistogramValue, IntoLabels, LabelValues};

const G: MetricKind = MetricKind::Gauge;

pub static TCP_CONNECTIONS: MetricDesc = MetricDesc::new(
    "netsight_tcp_connections",
    G,
    "",
    "TCP sockets by state, counted as `ss -tan` lists them: listeners, connections, \
     TIME_WAIT and half-open request sockets (reported as syn_recv). \
     `close` is a socket in TCP_CLOSE that is still hashed (ss UNCONN).",
    &["family", "state"],
    "netsight.tcp.connections",
);
pub static UDP_SOCKETS: MetricDesc = MetricDesc::new(
    "netsight_udp_sockets",
    G,
    "",
    "UDP sockets by state: `unconnected` (ss UNCONN: bound, no connect()) or \
     `established` (connect()ed, ss ESTAB).",
    &["family", "state"],
    "netsight.udp.sockets",
);
pub static LISTEN_QUEUE: MetricDesc = MetricDesc::new(
    "netsight_tcp_listen_queue_length",
    G,
    "",
    "Connections completed by the kernel and waiting in the listener's accept queue \
     (ss Recv-Q on LISTEN rows). When it reaches the backlog new connections are \
     dropped (netstat TcpExtListenOverflows). Listeners sharing family, address, port \
     and process (SO_REUSEPORT) are summed; listeners on ports beyond `max_ports` are \
     summed into port=\"other\".",
    &["family", "address", "port", "process"],
    "netsight.tcp.listen.queue.length",
);
pub static LISTEN_BACKLOG: MetricDesc = MetricDesc::new(
    "netsight_tcp_listen_backlog",
    G,
    "",
    "Accept-queue limit of the listener: min(listen() backlog, net.core.somaxconn) \
     (ss Send-Q on LISTEN rows). Summed like netsight_tcp_listen_queue_length.",
    &["family", "address", "port", "process"],
    "netsight.tcp.listen.backlog",
);
pub static PORT_CONNECTIONS: MetricDesc = MetricDesc::new(
    "netsight_tcp_port_connections",
    G,
    "",
    "TCP sockets whose local port is a listening port, by state; the listeners \
     themselves count as `listen`, half-open request sockets as `syn_recv`. Only \
     non-zero states. The `max_ports` ports with the most connections are kept; the \
     rest are summed into port=\"other\".",
    &["port", "state"],
    "netsight.tcp.port.connections",
);
pub static PROCESS_CONNECTIONS: MetricDesc = MetricDesc::new(
    "netsight_tcp_process_connections",
    G,
    "",
    "TCP sockets by owning process (comm, summed over processes sharing it) and state; \
     only non-zero states. process=\"\": no process owns the socket (TIME_WAIT, \
     half-open request sockets, orphans); \"unknown\": the owner could not be \
     inspected (needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for other users) or \
     appeared after the last process scan (`process_refresh`); \"other\": processes \
     beyond `max_processes`.",
    &["process", "state"],
    "netsight.tcp.process.connections",
);
pub static RTT: MetricDesc = MetricDesc::new(
    "netsight_tcp_rtt_seconds",
    MetricKind::Histogram,
    "seconds",
    "Smoothed round-trip time (tcpi_rtt) of the ESTABLISHED connections on each \
     listening port at collection time: a distribution over current connections, \
     rebuilt every tick (count and sum can decrease). Ports capped like \
     netsight_tcp_port_connections.",
    &["port"],
    "netsight.tcp.rtt",
);
pub static PORT_RTT_MEAN: MetricDesc = MetricDesc::new(
    "netsight_tcp_port_rtt_mean_seconds",
    G,
    "seconds",
    "Mean smoothed round-trip time (tcpi_rtt) over the ESTABLISHED connections on \
     each listening port at collection time; absent while the port has none. The \
     per-port series the rule engine baselines (tcp_rtt_spike); the distribution is \
     netsight_tcp_rtt_seconds.",
    &["port"],
    "netsight.tcp.port.rtt.mean",
);
pub static PORT_RETRANS: MetricDesc = MetricDesc::new(
    "netsight_tcp_port_retransmitted_segments",
    G,
    "",
    "Sum of tcpi_total_retrans over the port's current ESTABLISHED connections. A \
     gauge, not a counter: it drops when connections close, so do not rate() it \
     (netsight_netstat_tcp_retrans_segs_total is the host-wide counter).",
    &["port"],
    "netsight.tcp.port.retransmitted_segments",
);
pub static PORT_SENT: MetricDesc = MetricDesc::new(
    "netsight_tcp_port_sent_bytes",
    G,
    "bytes",
    "Sum of tcpi_bytes_sent (Linux ≥ 4.19; includes retransmissions) over the port's \
     current ESTABLISHED connections. A gauge: it drops when connections close.",
    &["port"],
    "netsight.tcp.port.sent",
);
pub static PORT_RECEIVED: MetricDesc = MetricDesc::new(
    "netsight_tcp_port_received_bytes",
    G,
    "bytes",
    "Sum of tcpi_bytes_received (Linux ≥ 4.1) over the port's current ESTABLISHED \
     connections. A gauge: it drops when connections close.",
    &["port"],
    "netsight.tcp.port.received",
);
pub static CONGESTION: MetricDesc = MetricDesc::new(
    "netsight_tcp_congestion_control_connections",
    G,
    "",
    "ESTABLISHED TCP connections by congestion-control algorithm (INET_DIAG_CONG).",
    &["algorithm"],
    "netsight.tcp.congestion_control.connections",
);
pub static SCAN_DENIED: MetricDesc = MetricDesc::new(
    "netsight_sockets_process_scan_denied",
    G,
    "",
    "Processes whose /proc/<pid>/fd the last process scan could not read (EACCES): \
     their sockets are attributed to process=\"unknown\". Zero with CAP_SYS_PTRACE \
     and CAP_DAC_READ_SEARCH.",
    &[],
    "netsight.sockets.process_scan.denied",
);

pub static REFRESH_INTERVAL: MetricDesc = MetricDesc::new(
    "netsight_sockets_process_refresh_interval_seconds",
    G,
    "seconds",
    "Current interval between process scans (socket inode → process map): \
     collectors.sockets.process_refresh, or process_refresh_cpu_factor times the \
     last scan's CPU time when that is longer (hosts with many fds; at most 10 min). \
     Other processes' sockets created since the last scan are process=\"unknown\" \
     (netsight's own are attributed at once).",
    &[],
    "netsight.sockets.process_refresh.interval",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "sockets",
    source: "netlink sock_diag (inet_diag dumps of TCP and UDP, IPv4 and IPv6, with \
             INET_DIAG_INFO/INET_DIAG_CONG; a dump that /proc/net/sockstat{,6} and the \
             Tcp ActiveOpens/InSegs counters of /proc/net/snmp prove empty is skipped), \
             /proc/<pid>/fd and /proc/<pid>/comm for process attribution",
    capabilities: "none for counts, queues, RTT and bytes (sock_diag needs no \
                   privilege); attributing other users' sockets to processes needs \
                   CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, without them only netsight's \
                   own user's processes are attributed (the rest is process=\"unknown\")",
    metrics: &[
        &TCP_CONNECTIONS,
        &UDP_SOCKETS,
        &LISTEN_QUEUE,
        &LISTEN_BACKLOG,
        &PORT_CONNECTIONS,
        &PROCESS_CONNECTIONS,
        &RTT,
        &PORT_RTT_MEAN,
        &PORT_RETRANS,
        &PORT_SENT,
        &PORT_RECEIVED,
        &CONGESTION,
        &SCAN_DENIED,
        &REFRESH_INTERVAL,
    ],
    dynamic: &[],
};

/// Number of kernel state slots (0..=12).
const NSTATES: usize = 13;

/// TCP states in output order, with their label values.
const TCP_STATES: [(u8, &str); 11] = [
    (state::ESTABLISHED, "established"),
    (state::SYN_SENT, "syn_sent"),
    (state::SYN_RECV, "syn_recv"),
    (state::FIN_WAIT1, "fin_wait1"),
    (state::FIN_WAIT2, "fin_wait2"),
    (state::TIME_WAIT, "time_wait"),
    (state::CLOSE, "close"),
    (state::CLOSE_WAIT, "close_wait"),
    (state::LAST_ACK, "last_ack"),
    (state::LISTEN, "listen"),
    (state::CLOSING, "closing"),
];

/// Label value of a (normalised) TCP state.
pub fn tcp_state_name(s: u8) -> &'static str {
    TCP_STATES
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, name)| *name)
        .unwrap_or("unknown")
}

/// `TCP_NEW_SYN_RECV` request sockets are reported as `syn_recv`, as `ss` does;
/// anything out of range lands in slot 0 ("unknown").
#[inline]
pub fn normalise_state(s: u8) -> u8 {
    match s {
        state::NEW_SYN_RECV => state::SYN_RECV,
        s if (s as usize) < NSTATES => s,
        _ => 0,
    }
}

fn udp_state_name(s: u8) -> &'static str {
    match s {
        state::CLOSE => "unconnected",
        state::ESTABLISHED => "established",
        other => tcp_state_name(other),
    }
}

#[inline]
fn family_index(family: u8) -> usize {
    usize::from(family == AF_INET6)
}

const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

/// Owner keys in the per-process aggregation.
const NO_OWNER: u32 = 0;
const UNKNOWN_OWNER: u32 = u32::MAX;

const OTHER: &str = "other";
/// Distinct congestion-control names tracked before the rest is summed as "other".
const MAX_CONG: usize = 16;

pub struct Sockets {
    cfg: SocketsConfig,
    bounds: Arc<[f64]>,
    diag: Option<DiagSocket>,
    procs: Option<ProcMap>,
    agg: Agg,
    udp_unsupported_logged: bool,
    /// What the last TCP dumps proved ([`plan`]).
    tcp_proofs: TcpProofs,
    /// [`OCCUPANCY_FILES`], opened with `diag`, and their read buffers.
    proc: KeptFiles,
    proc_bufs: [Vec<u8>; 3],
    /// The socket's namespace is the process's: the copies the sockstat and
    /// netstat collectors keep of `/proc/net` ([`CollectContext::tick_files`])
    /// describe it too and spare reading the files again.
    same_ns_as_process: bool,
    last_dumps: (TcpWalk, [bool; 2]),
}

/// What [`Sockets::occupancy`] reads: sockstat, sockstat6, snmp of the namespace
/// of the thread that opens the sock_diag socket.
const OCCUPANCY_FILES: [&str; 3] = [
    "thread-self/net/sockstat",
    "thread-self/net/sockstat6",
    "thread-self/net/snmp",
];

/// The same files as the process sees them, under the names the sockstat and
/// netstat collectors keep them by ([`CollectContext::tick_files`]).
const OCCUPANCY_SHARED: [SharedFile; 3] = [SharedFile::Sockstat, SharedFile::Sockstat6, SharedFile::Snmp];

/// Whether this thread is in the network namespace `/proc/net` shows (the thread
/// group leader's). False when it cannot be told.
fn thread_in_process_netns(ctx: &CollectContext) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = |rel: &str| std::fs::metadata(ctx.proc_path(rel)).map(|m| (m.dev(), m.ino())).ok();
    matches!((ns("thread-self/ns/net"), ns("self/ns/net")), (Some(a), Some(b)) if a == b)
}

/// Finite, positive, ascending, without duplicates.
fn sanitize_bounds(raw: &[f64]) -> Vec<f64> {
    let mut b: Vec<f64> = raw.iter().copied().filter(|v| v.is_finite() && *v > 0.0).collect();
    b.sort_by(f64::total_cmp);
    b.dedup();
    b
}

impl Sockets {
    pub fn new(cfg: &SocketsConfig) -> Self {
        let bounds = sanitize_bounds(&cfg.rtt_buckets_seconds);
        if bounds != cfg.rtt_buckets_seconds {
            tracing::warn!(
                configured = ?cfg.rtt_buckets_seconds,
                used = ?bounds,
                "collectors.sockets.rtt_buckets_seconds must be positive, finite and \
                 ascending; using the sorted valid values"
            );
        }
        Sockets {
            cfg: cfg.clone(),
            bounds: bounds.into(),
            diag: None,
            procs: cfg.processes.then(|| {
                ProcMap::new(cfg.process_refresh)
                    .with_cpu_factor(cfg.process_refresh_cpu_factor)
                    .lazy(cfg.process_refresh_lazy)
            }),
            agg: Agg::new(),
            udp_unsupported_logged: false,
            tcp_proofs: TcpProofs::default(),
            proc: KeptFiles::default(),
            proc_bufs: Default::default(),
            same_ns_as_process: false,
            last_dumps: (TcpWalk::Full, [true, true]),
        }
    }

    /// The persistent sock_diag socket, opened on first use or after a failure,
    /// together with the `/proc` files [`Self::occupancy`] reads.
    ///
    /// The counts must describe the namespace the socket dumps: the one it was
    /// opened in. `/proc/net` follows the thread group leader's namespace, so the
    /// files are opened through `/proc/thread-self/net`, by the thread that opens
    /// the socket, at the same moment; a kept-open /proc/net file stays bound to
    /// the namespace it was opened in, so files and socket never disagree.
    fn open_diag(&mut self, ctx: &CollectContext) -> Result<(), CollectError> {
        if self.diag.is_none() {
            self.diag = Some(DiagSocket::open().map_err(|e| e.into_collect("socket"))?);
            self.proc = KeptFiles::default();
            for rel in OCCUPANCY_FILES {
                // An absent file leaves its counts unknown: those dumps always run.
                let _ = self.proc.open(&ctx.proc_path(rel));
            }
            self.same_ns_as_process = thread_in_process_netns(ctx);
        }
        Ok(())
    }

    /// What the small `/proc` counts say before the dumps. `snmp` is read only when
    /// it can make a difference (the TCP walk might be skipped or shortened). Only files opened
    /// with the socket are read ([`Self::open_diag`]).
    fn occupancy(&mut self, ctx: &CollectContext) -> Occupancy {
        let [sockstat, sockstat6, snmp] = &mut self.proc_bufs;
        let [p4, p6, psnmp] = OCCUPANCY_FILES.map(|rel| ctx.proc_path(rel));
        let [s4, s6, ssnmp] = OCCUPANCY_SHARED;
        let shared = self.same_ns_as_process.then_some(&ctx.tick_files);
        let mut read = |path: &std::path::Path, file: SharedFile, buf: &mut Vec<u8>| {
            let copied = shared.is_some_and(|files| files.take_copy(file, buf));
            (copied || (self.proc.is_open(path) && self.proc.read_into(path, buf).is_ok())).then_some(())
        };
        let v4 = read(&p4, s4, sockstat).map(|()| sockstat.as_slice());
        let v6 = read(&p6, s6, sockstat6).map(|()| sockstat6.as_slice());
        let occ = Occupancy::parse(v4, v6, None);
        if !occ.tcp_walk_might_shrink() {
            return occ;
        }
        occ.with_tcp_counters(read(&psnmp, ssnmp, snmp).map(|()| snmp.as_slice()))
    }

    /// After the dumps: the sockets the process map lacked are looked for among
    /// netsight's own ([`ProcMap::attribute_own`]); any still unknown make the
    /// map due for a rescan.
    fn attribute_unknown(&mut self, procfs: &std::path::Path) {
        let Some(m) = &mut self.procs else { return };
        if !self.agg.unknown.is_empty() {
            let inodes: Vec<u32> = self.agg.unknown.iter().map(|&(inode, _)| inode).collect();
            m.attribute_own(procfs, &inodes);
            self.agg.reattribute(m);
        }
        if self.agg.unknown_more || !self.agg.unknown.is_empty() {
            m.note_unattributed();
        }
    }

    /// Which dumps the last tick ran: (TCP, [UDP IPv4, UDP IPv6]). For tests and
    /// the bench.
    pub fn last_dumps(&self) -> (TcpWalk, [bool; 2]) {
        self.last_dumps
    }

    /// Runs the dumps that can return something into `self.agg`.
    fn dump_all(&mut self, occ: &Occupancy) -> Result<(), CollectError> {
        let plan = plan(occ, &self.tcp_proofs);
        let Some(diag) = self.diag.as_mut() else {
            return Err(CollectError::Netlink("sock_diag socket not open".into()));
        };
        let mut fold = Folder {
            agg: &mut self.agg,
            cx: FoldCtx {
                procs: self.procs.as_ref(),
                bounds: &self.bounds,
            },
            listeners: [0, 0],
            others: 0,
        };
        let dumps = |tcp_states, udp_states| SocketDumps {
            tcp_states,
            udp_states,
            ..SocketDumps::ALL
        };
        let mut walk = match plan.tcp {
            TcpPlan::Skip => TcpWalk::Skipped,
            TcpPlan::ListenersFirst => TcpWalk::Listeners,
            TcpPlan::Full => TcpWalk::Full,
        };
        let outcome = match plan.tcp {
            TcpPlan::Skip => visit_sockets_of(diag, &dumps(0, ALL_STATES), plan.udp, |p, s| fold.visit(p, s)),
            TcpPlan::Full => visit_sockets_of(diag, &SocketDumps::ALL, plan.udp, |p, s| fold.visit(p, s)),
            TcpPlan::ListenersFirst => {
                visit_sockets_of(diag, &dumps(LISTEN_ONLY, 0), [false, false], |p, s| fold.visit(p, s)).and_then(|_| {
                    let rest = if occ.tcp_inuse_is_only(fold.listeners) {
                        0
                    } else {
                        walk = TcpWalk::Full;
                        ALL_BUT_LISTEN
                    };
                    visit_sockets_of(diag, &dumps(rest, ALL_STATES), plan.udp, |p, s| fold.visit(p, s))
                })
            }
        };
        self.last_dumps = (walk, plan.udp);
        let found = outcome.is_ok().then_some((fold.listeners, fold.others));
        self.tcp_proofs = self.tcp_proofs.after(occ.tcp_counters, found);
        let outcome = outcome.map_err(DumpFailed::into_collect)?;
        if let Some(e) = outcome.udp_unsupported {
            // No udp_diag: keep the TCP metrics rather than failing the tick.
            if !self.udp_unsupported_logged {
                tracing::warn!(error = %e, "UDP sockets are not reported");
                self.udp_unsupported_logged = true;
            }
        }
        Ok(())
    }
}

impl Collector for Sockets {
    fn name(&self) -> &'static str {
        "sockets"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        if !ctx.is_live() {
            return Err(CollectError::Unavailable(format!(
                "sockets come from netlink sock_diag, which only the live kernel answers \
                 (procfs is {})",
                ctx.procfs.display()
            )));
        }
        if let Some(m) = &mut self.procs {
            m.refresh_if_due(&ctx.procfs);
        }
        self.agg.reset();
        // Opened before the counts are read, so the first tick can already tell
        // which dumps are needed.
        self.open_diag(ctx)?;
        let occ = self.occupancy(ctx);
        if let Err(e) = self.dump_all(&occ) {
            // The socket may still hold the rest of the failed dump: start afresh.
            self.diag = None;
            return Err(e);
        }
        self.attribute_unknown(&ctx.procfs);
        self.emit(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
