//! What `analyze connections|tcp|listening|bandwidth` share: reading the kernel
//! through the daemon's own code (sock_diag via [`visit_sockets`], process
//! attribution via [`ProcMap`], the MIB parsers, the `/proc/net/dev` parser,
//! sysctls), capability checks that explain what is missing, tables, and the
//! output/exit-code convention:
//!
//! - `0`: the report was printed (possibly with `limitations`, e.g. partial
//!   process attribution);
//! - `1`: the kernel could not be read (error on stderr; with `--json`, an
//!   `{"error": …}` object on stdout);
//! - `2`: bad command line (clap);
//! - `77` (`EX_NOPERM`): the kernel refused a read the analysis cannot do without.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use comfy_table::{presets::NOTHING, CellAlignment, Table, TableComponent};
use serde::Serialize;

use crate::collect::procmap::{ProcMap, ScanStats};
use crate::collect::sockets::{normalise_state, tcp_state_name, visit_sockets, Protocol, SocketDumps};
use crate::collect::CollectContext;
use crate::netlink::sock_diag::{state, DiagError, DiagSocket, AF_INET6};
use crate::netlink::tcp_info;
use crate::parse::netstat::{parse_mib_table, parse_snmp6, MibGroup};
use crate::parse::sysctl::parse_sysctl_values;

/// `EX_NOPERM` from sysexits.h (the same code `analyze firewall` uses).
pub const EXIT_NO_CAPABILITY: u8 = 77;

/// Why an analysis could not run.
#[derive(Debug)]
pub enum Failure {
    NoCapability(String),
    Other(String),
}

/// Linux capability numbers (linux/capability.h).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;

/// Something the report could not do with the privileges it ran with, and what
/// grants it.
#[derive(Debug, Clone, Serialize)]
pub struct Limitation {
    /// `process_attribution`, `udp_sockets`…
    pub what: String,
    /// Capabilities that grant it (effective set), e.g. `["CAP_SYS_PTRACE"]`.
    pub missing_capabilities: Vec<String>,
    /// One sentence for a person: what is missing, its effect, and the fix.
    pub message: String,
}

/// A problem the report found, with its likely cause.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    /// `warning` or `info`.
    pub severity: &'static str,
    /// Stable identifier, e.g. `time_wait_ephemeral`, `close_wait`.
    pub kind: String,
    pub message: String,
    pub cause: String,
}

impl Warning {
    pub fn new(severity: &'static str, kind: &str, message: String, cause: String) -> Warning {
        Warning {
            severity,
            kind: kind.to_string(),
            message,
            cause,
        }
    }
}

/// A kernel parameter change: `current → suggested`, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    /// sysctl name, e.g. `net.ipv4.tcp_tw_reuse`.
    pub parameter: String,
    pub current: String,
    pub suggested: String,
    pub reason: String,
}

impl Advice {
    pub fn new(parameter: &str, current: impl ToString, suggested: impl ToString, reason: impl Into<String>) -> Advice {
        Advice {
            parameter: parameter.to_string(),
            current: current.to_string(),
            suggested: suggested.to_string(),
            reason: reason.into(),
        }
    }
}

/// Adds `a` unless the same parameter is already advised.
pub fn push_advice(list: &mut Vec<Advice>, a: Advice) {
    if !list.iter().any(|x| x.parameter == a.parameter) {
        list.push(a);
    }
}

/// A report every subcommand prints the same way.
pub trait Report: Serialize {
    fn limitations(&self) -> &[Limitation];
    fn render_text(&self) -> String;
}

/// Prints the report (or the failure) and returns the exit code.
pub fn finish<R: Report>(cmd: &str, json: bool, result: Result<R, Failure>) -> anyhow::Result<u8> {
    let (text, code) = match result {
        Ok(r) => {
            if json {
                // The JSON carries them too; stderr tells a person watching a pipe.
                for l in r.limitations() {
                    eprintln!("netsight analyze {cmd}: {}", l.message);
                }
                (serde_json::to_string_pretty(&r)? + "\n", 0)
            } else {
                (r.render_text(), 0)
            }
        }
        Err(f) => {
            let (kind, message, code) = match f {
                Failure::NoCapability(m) => ("no_capability", m, EXIT_NO_CAPABILITY),
                Failure::Other(m) => ("error", m, 1),
            };
            eprintln!("netsight analyze {cmd}: {message}");
            if !json {
                return Ok(code);
            }
            let v = serde_json::json!({ "error": { "kind": kind, "message": message, "exit_code": code } });
            (serde_json::to_string_pretty(&v)? + "\n", code)
        }
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `… | head` closing the pipe early is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(code),
    }
}

// ---------------------------------------------------------------------------
// Capabilities

/// The effective capability set of this process (`CapEff` in /proc/self/status);
/// `None` when unreadable.
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

pub fn cap_name(cap: u32) -> &'static str {
    match cap {
        CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH",
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        _ => "CAP_?",
    }
}

/// Of `wanted`, the capabilities this process lacks (all of them when the set is
/// unreadable).
pub fn missing_caps(eff: Option<u64>, wanted: &[u32]) -> Vec<String> {
    wanted
        .iter()
        .filter(|&&c| eff.is_none_or(|e| e & (1u64 << c) == 0))
        .map(|&c| cap_name(c).to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Process attribution

/// Who holds a socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// No file refers to it (inode 0): TIME_WAIT, half-open request sockets,
    /// orphans closing in the kernel.
    Kernel,
    /// A process holds it but netsight could not see which.
    Unknown,
    Process {
        pid: u32,
        comm: String,
    },
}

impl Owner {
    pub fn pid(&self) -> Option<u32> {
        match self {
            Owner::Process { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    pub fn comm(&self) -> Option<&str> {
        match self {
            Owner::Process { comm, .. } => Some(comm),
            _ => None,
        }
    }

    /// ` (nginx/1234)`, ` (process unknown)`, or nothing for kernel-held sockets:
    /// appended to an address in messages.
    pub fn suffix(&self) -> String {
        match self {
            Owner::Kernel => String::new(),
            Owner::Unknown => " (process unknown)".into(),
            Owner::Process { pid, comm } => format!(" ({comm}/{pid})"),
        }
    }

    /// `nginx/1234`, `(kernel)`, `(unknown)`.
    pub fn label(&self) -> String {
        match self {
            Owner::Kernel => "(kernel)".into(),
            Owner::Unknown => "(unknown)".into(),
            Owner::Process { pid, comm } => format!("{comm}/{pid}"),
        }
    }
}

/// The socket inode → process map the collector uses, scanned once.
pub struct Owners {
    map: ProcMap,
    stats: ScanStats,
}

impl Owners {
    pub fn scan(ctx: &CollectContext) -> Owners {
        let mut map = ProcMap::new(std::time::Duration::MAX);
        let stats = map.refresh(&ctx.procfs);
        Owners { map, stats }
    }

    pub fn owner(&self, inode: u32) -> Owner {
        if inode == 0 {
            return Owner::Kernel;
        }
        match self.map.pid_of(inode) {
            Some(pid) => match self.map.comm(pid) {
                Some(c) => Owner::Process {
                    pid,
                    comm: c.to_string(),
                },
                None => Owner::Unknown,
            },
            None => Owner::Unknown,
        }
    }

    pub fn stats(&self) -> ScanStats {
        self.stats
    }

    /// The owner of every socket, and what the scan could not see with the
    /// capabilities that would fix it.
    pub fn attribute(&self, socks: &[Sock]) -> (Vec<Owner>, Option<Limitation>) {
        let owners: Vec<Owner> = socks.iter().map(|s| self.owner(s.inode)).collect();
        let unknown = owners.iter().filter(|o| **o == Owner::Unknown).count();
        (owners, attribution_limitation(self.stats, unknown, effective_caps()))
    }
}

/// A limitation when some processes' `/proc/<pid>/fd` could not be read, or when
/// sockets stayed unattributed while the capabilities that grant access are
/// missing (without CAP_SYS_PTRACE the fd directory of a more privileged process
/// may open but its links do not resolve, which the scan cannot tell from a
/// closed fd).
pub fn attribution_limitation(stats: ScanStats, unknown_sockets: usize, eff: Option<u64>) -> Option<Limitation> {
    let missing = missing_caps(eff, &[CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]);
    let message = if stats.denied > 0 && missing.is_empty() {
        format!(
            "process attribution is partial: /proc/<pid>/fd of {} of {} processes could not be read although \
             CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH are effective (an LSM such as Yama ptrace_scope=3, \
             AppArmor or SELinux denies it); their sockets are shown as (unknown)",
            stats.denied, stats.processes
        )
    } else if stats.denied > 0 || (unknown_sockets > 0 && !missing.is_empty()) {
        let what = if stats.denied > 0 {
            format!(
                "/proc/<pid>/fd of {} of {} processes could not be read",
                stats.denied, stats.processes
            )
        } else {
            format!("the /proc/<pid>/fd links of {unknown_sockets} sockets' processes could not be read")
        };
        format!(
            "process attribution is partial: {what}, so their sockets are shown as (unknown). Missing: {}; grant \
             them (run as root with full capabilities, or `setcap cap_sys_ptrace,cap_dac_read_search+ep` on the \
             binary) to attribute every socket",
            missing.join(" and ")
        )
    } else {
        return None;
    };
    Some(Limitation {
        what: "process_attribution".into(),
        missing_capabilities: if missing.is_empty() {
            vec![cap_name(CAP_SYS_PTRACE).into(), cap_name(CAP_DAC_READ_SEARCH).into()]
        } else {
            missing
        },
        message,
    })
}

/// Why a socket can be `(unknown)` even with every capability.
pub const UNKNOWN_CAUSES: &str = "other users' processes without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, processes \
     outside this PID namespace's /proc, or sockets opened after the process scan";

/// The note printed when `--processes` was not given.
pub const NO_PROCESSES_HINT: &str =
    "processes are not shown: add --processes (reads /proc/*/fd; other users' processes need CAP_SYS_PTRACE and \
     CAP_DAC_READ_SEARCH)";

// ---------------------------------------------------------------------------
// Sockets

/// One socket of a dump, owned (the analyzers keep them; the collector does not).
#[derive(Debug, Clone)]
pub struct Sock {
    pub protocol: Protocol,
    pub family: u8,
    /// Normalised TCP state (request sockets are `SYN_RECV`); UDP: `CLOSE`
    /// (unconnected) or `ESTABLISHED` (connected).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u32,
    pub uid: u32,
    /// Listener: accept queue length; otherwise bytes not yet read.
    pub rqueue: u32,
    /// Listener: backlog; otherwise bytes not yet acknowledged.
    pub wqueue: u32,
    /// `tcpi_bytes_acked` (sent and acknowledged), when dumped with tcp_info.
    pub bytes_acked: Option<u64>,
    pub bytes_received: Option<u64>,
    pub total_retrans: Option<u32>,
    pub cong: Option<String>,
}

impl Sock {
    pub fn state_name(&self) -> &'static str {
        match (self.protocol, self.state) {
            (Protocol::Udp, state::CLOSE) => "unconnected",
            (_, s) => tcp_state_name(s),
        }
    }

    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    pub fn family_name(&self) -> &'static str {
        if self.family == AF_INET6 {
            "ipv6"
        } else {
            "ipv4"
        }
    }
}

/// Maps a failed dump to a failure: permission problems get exit code 77.
pub fn diag_failure(what: &str, e: &DiagError) -> Failure {
    let denied = match e {
        DiagError::Kernel { errno } => *errno == libc::EPERM || *errno == libc::EACCES,
        DiagError::Io { source, .. } => source.kind() == std::io::ErrorKind::PermissionDenied,
        _ => false,
    };
    let m = format!("sock_diag {what}: {e}");
    if denied {
        Failure::NoCapability(m)
    } else {
        Failure::Other(m)
    }
}

/// Opens a sock_diag socket.
pub fn open_diag() -> Result<DiagSocket, Failure> {
    DiagSocket::open().map_err(|e| diag_failure("socket", &e))
}

/// Dumps sockets through the collector's [`visit_sockets`]; the UDP handler being
/// absent becomes a limitation, not a failure.
pub fn dump_sockets(
    diag: &mut DiagSocket,
    what: &SocketDumps,
    limitations: &mut Vec<Limitation>,
) -> Result<Vec<Sock>, Failure> {
    let mut out = Vec::new();
    let outcome = visit_sockets(diag, what, |protocol, s| {
        let info = s.tcp_info.map(tcp_info::parse_tcp_info);
        out.push(Sock {
            protocol,
            family: s.family,
            state: normalise_state(s.state),
            local: SocketAddr::new(s.local, s.local_port),
            remote: SocketAddr::new(s.remote, s.remote_port),
            inode: s.inode,
            uid: s.uid,
            rqueue: s.rqueue,
            wqueue: s.wqueue,
            bytes_acked: info.and_then(|i| i.bytes_acked),
            bytes_received: info.and_then(|i| i.bytes_received),
            total_retrans: info.and_then(|i| i.total_retrans),
            cong: s.cong.and_then(tcp_info::congestion_name).map(str::to_string),
        });
    })
    .map_err(|f| diag_failure(f.dump, &f.error))?;
    if let Some(e) = outcome.udp_unsupported {
        if !limitations.iter().any(|l| l.what == "udp_sockets") {
            limitations.push(Limitation {
                what: "udp_sockets".into(),
                missing_capabilities: vec![],
                message: format!("UDP sockets are not shown: {e}"),
            });
        }
    }
    Ok(out)
}

/// Parses a TCP state as `ss` and netsight spell it (`time-wait`, `TIME_WAIT`,
/// `estab`…) into the kernel number.
pub fn parse_state(s: &str) -> Result<u8, String> {
    let n = s.trim().to_ascii_lowercase().replace('-', "_");
    let st = match n.as_str() {
        "established" | "estab" => state::ESTABLISHED,
        "syn_sent" => state::SYN_SENT,
        "syn_recv" | "syn_received" => state::SYN_RECV,
        "fin_wait1" | "fin_wait_1" => state::FIN_WAIT1,
        "fin_wait2" | "fin_wait_2" => state::FIN_WAIT2,
        "time_wait" => state::TIME_WAIT,
        "close" | "closed" | "unconn" => state::CLOSE,
        "close_wait" => state::CLOSE_WAIT,
        "last_ack" => state::LAST_ACK,
        "listen" | "listening" => state::LISTEN,
        "closing" => state::CLOSING,
        _ => {
            return Err(format!(
                "unknown TCP state {s:?} (established, syn-sent, syn-recv, fin-wait-1, fin-wait-2, time-wait, \
                 close, close-wait, last-ack, listen, closing)"
            ))
        }
    };
    Ok(st)
}

/// The address without its IPv4-mapped IPv6 wrapping (`::ffff:10.0.0.1` → `10.0.0.1`).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

// ---------------------------------------------------------------------------
// /proc/net MIBs, sysctls

/// `/proc/net/snmp` + `/proc/net/netstat` (+ `/proc/net/snmp6`), parsed by the
/// netstat collector's parsers.
#[derive(Debug, Clone, Default)]
pub struct Mib {
    pub groups: Vec<MibGroup>,
}

impl Mib {
    pub fn read(ctx: &CollectContext) -> Result<Mib, Failure> {
        let mut groups = Vec::new();
        for rel in ["net/snmp", "net/netstat"] {
            let bytes = ctx.read_proc(rel).map_err(|e| Failure::Other(e.to_string()))?;
            let g = parse_mib_table(&bytes)
                .map_err(|e| Failure::Other(format!("{}: {e}", ctx.proc_path(rel).display())))?;
            groups.extend(g);
        }
        // snmp6 is absent when IPv6 is disabled.
        if let Ok(bytes) = ctx.read_proc("net/snmp6") {
            if let Ok(g) = parse_snmp6(&bytes) {
                groups.extend(g);
            }
        }
        Ok(Mib { groups })
    }

    pub fn get(&self, group: &str, field: &str) -> Option<i64> {
        self.groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.fields.iter())
            .find(|(f, _)| f == field)
            .map(|(_, v)| *v)
    }
}

/// A sysctl as text (`net.ipv4.tcp_rmem` → `4096 131072 6291456`), whitespace
/// collapsed; `None` when absent or unreadable.
pub fn sysctl_text(ctx: &CollectContext, name: &str) -> Option<String> {
    let rel = format!("sys/{}", name.replace('.', "/"));
    let bytes = std::fs::read(ctx.proc_path(&rel)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A numeric sysctl's values (parsed as the sysctl collector parses them).
pub fn sysctl_values(ctx: &CollectContext, name: &str) -> Option<Vec<i64>> {
    let rel = format!("sys/{}", name.replace('.', "/"));
    let bytes = std::fs::read(ctx.proc_path(&rel)).ok()?;
    parse_sysctl_values(&bytes).ok()
}

pub fn sysctl_int(ctx: &CollectContext, name: &str) -> Option<i64> {
    sysctl_values(ctx, name)?.first().copied()
}

/// A sysctl's name and value for a report.
#[derive(Debug, Clone, Serialize)]
pub struct SysctlValue {
    pub name: String,
    /// `null` when the parameter does not exist on this kernel.
    pub value: Option<String>,
    pub meaning: String,
}

/// Socket data comes from netlink, which only the running kernel answers: a
/// `--path.procfs` fixture tree cannot stand in for it.
pub fn require_live(ctx: &CollectContext, what: &str) -> Result<(), Failure> {
    if ctx.is_live() {
        return Ok(());
    }
    Err(Failure::Other(format!(
        "{what} come from netlink sock_diag, which only the live kernel answers (procfs is {})",
        ctx.procfs.display()
    )))
}

// ---------------------------------------------------------------------------
// Text output

/// A borderless, aligned table like `ss`/`ip` print, indented two spaces; `right`
/// lists right-aligned (numeric) columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    table_indented("  ", header, rows, right)
}

/// [`table`] with every line prefixed by `indent`.
pub fn table_indented(indent: &str, header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    for c in [
        TableComponent::LeftBorder,
        TableComponent::LeftBorderIntersections,
        TableComponent::LeftHeaderIntersection,
        TableComponent::HeaderLines,
        TableComponent::TopBorder,
        TableComponent::BottomBorder,
    ] {
        t.remove_style(c);
    }
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in t.to_string().lines() {
        let line = line.trim_end();
        if !line.is_empty() {
            out.push_str(indent);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `## Title` style section heading.
pub fn section(out: &mut String, title: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "{title}");
}

pub fn render_warnings(out: &mut String, warnings: &[Warning]) {
    if warnings.is_empty() {
        return;
    }
    section(out, "Warnings");
    for w in warnings {
        let tag = if w.severity == "warning" { "WARNING" } else { "info" };
        let _ = writeln!(out, "  {tag}: {}", w.message);
        if !w.cause.is_empty() {
            let _ = writeln!(out, "    cause: {}", w.cause);
        }
    }
}

pub fn render_advice(out: &mut String, advice: &[Advice]) {
    if advice.is_empty() {
        return;
    }
    section(out, "Kernel parameters (current → suggested)");
    for a in advice {
        let _ = writeln!(out, "  {}: {} → {}", a.parameter, a.current, a.suggested);
        let _ = writeln!(out, "    {}", a.reason);
    }
}

pub fn render_limitations(out: &mut String, limitations: &[Limitation]) {
    if limitations.is_empty() {
        return;
    }
    section(out, "Limitations");
    for l in limitations {
        let _ = writeln!(out, "  {}", l.message);
    }
}

/// `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `12.0 Mbit/s` from bytes per second.
pub fn human_bits_per_second(bytes_per_second: f64) -> String {
    let bits = bytes_per_second * 8.0;
    let (v, u) = if bits >= 1e9 {
        (bits / 1e9, "Gbit/s")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbit/s")
    } else if bits >= 1e3 {
        (bits / 1e3, "kbit/s")
    } else {
        (bits, "bit/s")
    };
    format!("{v:.1} {u}")
}

pub fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole * 1000.0).round() / 10.0
    } else {
        0.0
    }
}

/// Counts by key, most first (ties by key), at most `top` (0: all).
pub fn ranked<K: Ord + Clone>(counts: &BTreeMap<K, u64>, top: usize) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = counts.iter().map(|(k, n)| (k.clone(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if top > 0 {
        v.truncate(top);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_parses_and_names_missing_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000080000\n";
        let eff = parse_cap_eff(status);
        assert_eq!(eff, Some(1 << CAP_SYS_PTRACE));
        assert_eq!(
            missing_caps(eff, &[CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH]),
            ["CAP_DAC_READ_SEARCH"]
        );
        assert_eq!(missing_caps(None, &[CAP_SYS_PTRACE]), ["CAP_SYS_PTRACE"]);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn attribution_limitation_names_the_capabilities() {
        let stats = ScanStats {
            processes: 10,
            denied: 3,
            ..Default::default()
        };
        let l = attribution_limitation(stats, 0, Some(0)).expect("limited");
        assert_eq!(l.missing_capabilities, ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]);
        assert!(l.message.contains("3 of 10") && l.message.contains("CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"));
        let all = (1u64 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH);
        let l = attribution_limitation(stats, 0, Some(all)).expect("LSM");
        assert!(l.message.contains("LSM"), "{}", l.message);
        assert!(attribution_limitation(ScanStats::default(), 0, Some(0)).is_none());
        // Nothing denied, but sockets unknown and the capabilities missing.
        let l = attribution_limitation(ScanStats::default(), 2, Some(1 << CAP_DAC_READ_SEARCH)).expect("links");
        assert_eq!(l.missing_capabilities, ["CAP_SYS_PTRACE"]);
        assert!(l.message.contains("2 sockets"), "{}", l.message);
        // Unknown with every capability: another PID namespace, not a privilege problem.
        assert!(attribution_limitation(ScanStats::default(), 2, Some(all)).is_none());
    }

    #[test]
    fn states_parse_in_every_spelling() {
        assert_eq!(parse_state("TIME-WAIT"), Ok(state::TIME_WAIT));
        assert_eq!(parse_state("time_wait"), Ok(state::TIME_WAIT));
        assert_eq!(parse_state("estab"), Ok(state::ESTABLISHED));
        assert_eq!(parse_state("fin-wait-2"), Ok(state::FIN_WAIT2));
        assert!(parse_state("bogus").is_err());
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(20.0 * 1024.0 * 1024.0), "20.0 MiB");
        assert_eq!(human_bits_per_second(1.5e6), "12.0 Mbit/s");
        assert_eq!(percent(1.0, 3.0), 33.3);
        assert_eq!(percent(1.0, 0.0), 0.0);
    }

    #[test]
    fn mapped_addresses_are_unwrapped() {
        let ip: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(canonical_ip(ip), "10.0.0.1".parse::<IpAddr>().expect("ip"));
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(canonical_ip(v6), v6);
    }
}
