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
const OCCUPANCY_SHARED: [&str; 3] = ["net/sockstat", "net/sockstat6", "net/snmp"];

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
        let mut read = |path: &std::path::Path, rel: &str, buf: &mut Vec<u8>| {
            let copied = shared.is_some_and(|files| files.take_copy(rel, buf));
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
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg(max_ports: usize, max_processes: usize) -> SocketsConfig {
        SocketsConfig {
            enabled: true,
            max_ports,
            max_processes,
            process_refresh: std::time::Duration::from_secs(30),
            process_refresh_cpu_factor: 150.0,
            process_refresh_lazy: true,
            processes: false,
            rtt_buckets_seconds: vec![0.001, 0.01, 0.1],
        }
    }

    fn sock(state: u8, local_port: u16, info: Option<&[u8]>) -> InetSock<'_> {
        InetSock {
            family: AF_INET,
            state,
            local: IpAddr::V4(Ipv4Addr::LOCALHOST),
            local_port,
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            remote_port: 40000,
            inode: 0,
            uid: 0,
            rqueue: 3,
            wqueue: 128,
            tcp_info: info,
            cong: Some(b"cubic\0"),
        }
    }

    fn info(rtt_us: u32, retrans: u32, sent: u64, received: u64) -> Vec<u8> {
        let mut b = vec![0u8; 232];
        b[0] = state::ESTABLISHED;
        b[68..72].copy_from_slice(&rtt_us.to_ne_bytes());
        b[100..104].copy_from_slice(&retrans.to_ne_bytes());
        b[128..136].copy_from_slice(&received.to_ne_bytes());
        b[200..208].copy_from_slice(&sent.to_ne_bytes());
        b
    }

    fn find<'a>(fams: &'a [crate::snapshot::Family], name: &str) -> &'a crate::snapshot::Family {
        fams.iter()
            .find(|f| f.desc.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn value(fams: &[crate::snapshot::Family], name: &str, labels: &[&str]) -> Option<f64> {
        find(fams, name)
            .samples
            .iter()
            .find(|s| s.labels.iter().map(|l| &**l).eq(labels.iter().copied()))
            .and_then(|s| s.value.as_f64())
    }

    /// Feeds synthetic sockets through the same fold and emit as a live tick.
    fn run(c: &SocketsConfig, socks: &[InetSock<'_>]) -> Vec<crate::snapshot::Family> {
        run_with(Sockets::new(c), socks)
    }

    fn run_with(s: Sockets, socks: &[InetSock<'_>]) -> Vec<crate::snapshot::Family> {
        run_in(s, socks, None)
    }

    /// [`run_with`], with the after-dump attribution under procfs `root` when given.
    fn run_in(mut s: Sockets, socks: &[InetSock<'_>], root: Option<&std::path::Path>) -> Vec<crate::snapshot::Family> {
        s.agg.reset();
        let cx = FoldCtx {
            procs: s.procs.as_ref(),
            bounds: &s.bounds,
        };
        // Listeners first, as the collector dumps them.
        for x in socks.iter().filter(|x| x.state == state::LISTEN) {
            fold_tcp(&mut s.agg, &cx, *x);
        }
        for x in socks.iter().filter(|x| x.state != state::LISTEN) {
            fold_tcp(&mut s.agg, &cx, *x);
        }
        if let Some(root) = root {
            s.attribute_unknown(root);
        }
        let mut out = Emitter::new();
        s.emit(&mut out);
        out.into_families()
    }

    /// The daemon's own connections, opened after the last process scan, are
    /// attributed to it on the tick that sees them, and only a socket of another
    /// process remains unknown (and makes the map due for a rescan).
    #[test]
    fn sockets_own_connections_since_the_scan_are_attributed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (pid, comm) in [("100", "nginx"), ("200", "netsight")] {
            std::fs::create_dir_all(dir.path().join(pid).join("fd")).expect("mkdir");
            std::fs::write(dir.path().join(pid).join("comm"), format!("{comm}\n")).expect("comm");
        }
        std::os::unix::fs::symlink("200", dir.path().join("self")).expect("self");
        let fd = |pid: &str, n: &str, inode: u32| {
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.path().join(pid).join("fd").join(n))
                .expect("link")
        };
        fd("100", "3", 10);
        let mut c = cfg(64, 64);
        c.processes = true;
        let mut s = Sockets::new(&c);
        s.procs.as_mut().expect("procs on").refresh(dir.path());
        // After the scan: netsight's listener and a scrape's connection.
        fd("200", "5", 50);
        fd("200", "6", 51);
        let owned = |state, port, inode| InetSock {
            inode,
            ..sock(state, port, None)
        };
        let socks = [
            owned(state::LISTEN, 9977, 50),
            owned(state::ESTABLISHED, 9977, 51),
            owned(state::ESTABLISHED, 9000, 10),
            owned(state::ESTABLISHED, 9000, 999), // another process's, unseen
        ];
        let f = run_in(s, &socks, Some(dir.path()));
        let v = |p: &str, st: &str| value(&f, "netsight_tcp_process_connections", &[p, st]);
        assert_eq!(v("netsight", "listen"), Some(1.0));
        assert_eq!(v("netsight", "established"), Some(1.0));
        assert_eq!(v("nginx", "established"), Some(1.0));
        assert_eq!(v("unknown", "established"), Some(1.0), "only the unseen one");
        assert_eq!(v("unknown", "listen"), None);
        assert_eq!(
            value(
                &f,
                "netsight_tcp_listen_backlog",
                &["ipv4", "127.0.0.1", "9977", "netsight"]
            ),
            Some(128.0)
        );
    }

    #[test]
    fn sockets_fold_counts_states_ports_and_rtt() {
        let a = info(500, 2, 1000, 10);
        let b = info(20_000, 1, 500, 5);
        let socks = [
            sock(state::LISTEN, 80, None),
            sock(state::ESTABLISHED, 80, Some(&a)),
            sock(state::ESTABLISHED, 80, Some(&b)),
            sock(state::NEW_SYN_RECV, 80, None),
            sock(state::TIME_WAIT, 80, None),
            sock(state::ESTABLISHED, 45000, Some(&a)), // client side: not a listening port
        ];
        let f = run(&cfg(64, 64), &socks);
        assert_eq!(
            value(&f, "netsight_tcp_connections", &["ipv4", "established"]),
            Some(3.0)
        );
        assert_eq!(value(&f, "netsight_tcp_connections", &["ipv4", "syn_recv"]), Some(1.0));
        assert_eq!(value(&f, "netsight_tcp_connections", &["ipv6", "listen"]), Some(0.0));
        assert_eq!(
            value(&f, "netsight_tcp_port_connections", &["80", "established"]),
            Some(2.0)
        );
        assert_eq!(value(&f, "netsight_tcp_port_connections", &["80", "listen"]), Some(1.0));
        assert_eq!(
            value(&f, "netsight_tcp_port_connections", &["80", "syn_recv"]),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "netsight_tcp_port_connections", &["80", "time_wait"]),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "netsight_tcp_port_connections", &["80", "close_wait"]),
            None,
            "zeros omitted"
        );
        assert!(find(&f, "netsight_tcp_port_connections")
            .samples
            .iter()
            .all(|s| &*s.labels[0] == "80"));
        assert_eq!(
            value(&f, "netsight_tcp_port_retransmitted_segments", &["80"]),
            Some(3.0)
        );
        assert_eq!(value(&f, "netsight_tcp_port_sent_bytes", &["80"]), Some(1500.0));
        assert_eq!(value(&f, "netsight_tcp_port_received_bytes", &["80"]), Some(15.0));
        assert_eq!(
            value(&f, "netsight_tcp_listen_queue_length", &["ipv4", "127.0.0.1", "80", ""]),
            Some(3.0)
        );
        assert_eq!(
            value(&f, "netsight_tcp_listen_backlog", &["ipv4", "127.0.0.1", "80", ""]),
            Some(128.0)
        );
        assert_eq!(
            value(&f, "netsight_tcp_congestion_control_connections", &["cubic"]),
            Some(3.0)
        );
        let h = &find(&f, "netsight_tcp_rtt_seconds").samples[0];
        let crate::snapshot::Value::Histogram(h) = &h.value else {
            panic!("histogram")
        };
        assert_eq!(&*h.bounds, &[0.001, 0.01, 0.1]);
        assert_eq!(h.cumulative, vec![1, 1, 2], "0.5 ms ≤ 1 ms; 20 ms ≤ 100 ms");
        assert_eq!(h.count, 2);
        assert!((h.sum - 0.0205).abs() < 1e-12);
    }

    #[test]
    fn sockets_fields_an_old_kernel_lacks_are_not_reported_as_zero() {
        let full = info(500, 2, 1000, 10);
        let old = &full[..168]; // Linux 4.9: no tcpi_bytes_sent
        let f = run(
            &cfg(64, 64),
            &[sock(state::LISTEN, 80, None), sock(state::ESTABLISHED, 80, Some(old))],
        );
        assert_eq!(value(&f, "netsight_tcp_port_received_bytes", &["80"]), Some(10.0));
        assert_eq!(
            value(&f, "netsight_tcp_port_retransmitted_segments", &["80"]),
            Some(2.0)
        );
        assert!(f
            .iter()
            .all(|fam| fam.desc.name != "netsight_tcp_port_sent_bytes" || fam.samples.is_empty()));
        // No connections: zeros are true whatever the kernel.
        let f = run(&cfg(64, 64), &[sock(state::LISTEN, 80, None)]);
        assert_eq!(value(&f, "netsight_tcp_port_sent_bytes", &["80"]), Some(0.0));
    }

    #[test]
    fn sockets_ports_beyond_the_cap_are_summed_into_other() {
        let i = info(100, 0, 1, 1);
        let mut socks = Vec::new();
        // Port p gets p-8000 established connections: 8003 has most, 8001 fewest.
        for p in [8001u16, 8002, 8003] {
            socks.push(sock(state::LISTEN, p, None));
            for _ in 0..(p - 8000) {
                socks.push(sock(state::ESTABLISHED, p, Some(&i)));
            }
        }
        let f = run(&cfg(2, 64), &socks);
        let ports: Vec<&str> = find(&f, "netsight_tcp_rtt_seconds")
            .samples
            .iter()
            .map(|s| &*s.labels[0])
            .collect();
        assert_eq!(ports, ["8002", "8003", "other"], "sorted by port, other last");
        assert_eq!(
            value(&f, "netsight_tcp_port_connections", &["other", "established"]),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "netsight_tcp_port_connections", &["8003", "established"]),
            Some(3.0)
        );
        assert_eq!(
            value(&f, "netsight_tcp_listen_queue_length", &["", "", "other", ""]),
            Some(3.0)
        );
        assert_eq!(
            value(&f, "netsight_tcp_listen_backlog", &["ipv4", "127.0.0.1", "8002", ""]),
            Some(128.0)
        );
        assert_eq!(
            value(&f, "netsight_tcp_listen_backlog", &["ipv4", "127.0.0.1", "8001", ""]),
            None
        );
    }

    #[test]
    fn sockets_processes_are_capped_with_special_rows_kept() {
        // A fake procfs: nginx (2 pids) owns inodes 10, 11; sshd 20; redis 30.
        let dir = tempfile::tempdir().expect("tempdir");
        for (pid, comm, inodes) in [
            ("100", "nginx", &[10u32][..]),
            ("101", "nginx", &[11]),
            ("200", "sshd", &[20]),
            ("300", "redis", &[30]),
        ] {
            let fd = dir.path().join(pid).join("fd");
            std::fs::create_dir_all(&fd).expect("mkdir");
            std::fs::write(dir.path().join(pid).join("comm"), format!("{comm}\n")).expect("comm");
            for (i, ino) in inodes.iter().enumerate() {
                std::os::unix::fs::symlink(format!("socket:[{ino}]"), fd.join(i.to_string())).expect("link");
            }
        }
        let mut c = cfg(64, 2);
        c.processes = true;
        let mut s = Sockets::new(&c);
        s.procs.as_mut().expect("procs on").refresh(dir.path());
        let owned = |state, inode| InetSock {
            inode,
            ..sock(state, 9000, None)
        };
        let socks = [
            owned(state::LISTEN, 10),
            owned(state::ESTABLISHED, 10),
            owned(state::ESTABLISHED, 11),
            owned(state::ESTABLISHED, 20),
            owned(state::CLOSE_WAIT, 20),
            owned(state::ESTABLISHED, 30),
            owned(state::TIME_WAIT, 0),
            owned(state::TIME_WAIT, 0),
            owned(state::ESTABLISHED, 999), // an fd we could not see
        ];
        let f = run_with(s, &socks);
        let v = |p: &str, st: &str| value(&f, "netsight_tcp_process_connections", &[p, st]);
        assert_eq!(v("nginx", "established"), Some(2.0), "summed over both nginx pids");
        assert_eq!(v("nginx", "listen"), Some(1.0));
        assert_eq!(v("sshd", "established"), Some(1.0));
        assert_eq!(v("sshd", "close_wait"), Some(1.0));
        assert_eq!(v("redis", "established"), None, "beyond max_processes = 2");
        assert_eq!(v("other", "established"), Some(1.0));
        assert_eq!(v("", "time_wait"), Some(2.0), "no owner");
        assert_eq!(v("unknown", "established"), Some(1.0));
        let names: Vec<&str> = find(&f, "netsight_tcp_process_connections")
            .samples
            .iter()
            .map(|s| &*s.labels[0])
            .collect();
        assert_eq!(
            names,
            ["", "nginx", "nginx", "other", "sshd", "sshd", "unknown"],
            "sorted"
        );
        assert_eq!(
            value(
                &f,
                "netsight_tcp_listen_backlog",
                &["ipv4", "127.0.0.1", "9000", "nginx"]
            ),
            Some(128.0)
        );
        assert_eq!(value(&f, "netsight_sockets_process_scan_denied", &[]), Some(0.0));
    }

    #[test]
    fn sockets_state_names_follow_ss() {
        assert_eq!(tcp_state_name(normalise_state(state::NEW_SYN_RECV)), "syn_recv");
        assert_eq!(tcp_state_name(state::CLOSE_WAIT), "close_wait");
        assert_eq!(tcp_state_name(normalise_state(200)), "unknown");
        assert_eq!(udp_state_name(state::CLOSE), "unconnected");
        assert_eq!(udp_state_name(state::ESTABLISHED), "established");
    }

    #[test]
    fn sockets_bounds_are_sanitized() {
        assert_eq!(
            sanitize_bounds(&[0.1, f64::NAN, 0.01, -1.0, 0.1, f64::INFINITY]),
            vec![0.01, 0.1]
        );
    }

    #[test]
    fn sockets_not_live_is_unavailable() {
        let mut s = Sockets::new(&cfg(64, 64));
        let ctx = CollectContext::new("/tmp/fixture-proc", "/sys");
        let mut out = Emitter::new();
        assert!(matches!(s.collect(&ctx, &mut out), Err(CollectError::Unavailable(_))));
    }

    /// A live tick in the test's own namespace: a listener with one connection is
    /// seen, attributed to this process, with its backlog.
    #[test]
    fn sockets_live_tick_sees_our_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut c = cfg(100_000, 100_000);
        c.processes = true;
        let mut s = Sockets::new(&c);
        let ctx = CollectContext::new("/proc", "/sys");
        let mut out = Emitter::new();
        s.collect(&ctx, &mut out).expect("collect");
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        let labels = ["ipv4", "127.0.0.1", &port.to_string(), comm.trim_end()].map(str::to_string);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        // The handshake completes in softirq context: allow it a moment.
        let mut f = out.into_families();
        for _ in 0..50 {
            if value(&f, "netsight_tcp_listen_queue_length", &labels) == Some(1.0) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut out = Emitter::new();
            s.collect(&ctx, &mut out).expect("collect");
            f = out.into_families();
        }
        assert_eq!(
            value(&f, "netsight_tcp_listen_queue_length", &labels),
            Some(1.0),
            "one connection to accept"
        );
        assert!(value(&f, "netsight_tcp_listen_backlog", &labels).is_some_and(|v| v > 0.0));
        assert!(value(&f, "netsight_tcp_port_connections", &[labels[2], "established"]).is_some_and(|v| v >= 1.0));
        // A second tick reuses the socket and buffers.
        let mut out = Emitter::new();
        s.collect(&ctx, &mut out).expect("second collect");
        assert!(!out.is_empty());
    }
}
