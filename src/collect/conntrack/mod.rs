//! Connection tracking: table size and per-CPU statistics.
//!
//! Table size comes from `/proc/sys/net/netfilter`. Per-CPU statistics (what
//! `conntrack -S` prints) come from ctnetlink so they work on kernels built without
//! `CONFIG_NF_CONNTRACK_PROCFS`; `/proc/net/stat/nf_conntrack` is the fallback when
//! netlink fails (no `CAP_NET_ADMIN`, `nf_conntrack_netlink` unavailable) and the only
//! source when reading a fixture tree.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub use super::netlink_socket::DumpError;
use super::netlink_socket::{next_seq, NetlinkSocket};
use super::{CollectContext, CollectError, Collector, KeptFiles, Settings};
use crate::catalog::{CollectorDoc, DynamicFamily, MetricDesc, MetricKind};
use crate::config::ConntrackConfig;
use crate::netlink::ctnetlink::{
    ct_dump_request, parse_ct_dump, parse_stats_cpu_reply, protocol_name, state_name, stats_cpu_request, CpuStats,
    Flow, StatsDump,
};
use crate::parse::conntrack::{parse_nf_conntrack_stat, proc_stat_name};
use crate::parse::sysctl::parse_sysctl_values;
use crate::snapshot::{Emitter, IntoLabels, LabelValues};

mod breakdown;
pub use breakdown::*;

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;
const L: &[&str] = &["cpu"];

pub static ENTRIES: MetricDesc = MetricDesc::new(
    "netsight_conntrack_entries",
    G,
    "",
    "Entries in the connection tracking table of this network namespace (nf_conntrack_count).",
    &[],
    "netsight.conntrack.entries",
);
pub static LIMIT: MetricDesc = MetricDesc::new("netsight_conntrack_entries_limit", G, "", "Maximum number of entries (nf_conntrack_max); new connections are dropped beyond it once nothing can be early-dropped.", &[], "netsight.conntrack.entries.limit");
pub static BUCKETS: MetricDesc = MetricDesc::new(
    "netsight_conntrack_buckets",
    G,
    "",
    "Size of the conntrack hash table (nf_conntrack_buckets).",
    &[],
    "netsight.conntrack.buckets",
);
pub static STATS_AVAILABLE: MetricDesc = MetricDesc::new("netsight_conntrack_stats_available", G, "", "1 when the per-CPU statistics were read this run (ctnetlink or /proc/net/stat/nf_conntrack), 0 when neither source worked (see the log for why, usually missing CAP_NET_ADMIN on a kernel without CONFIG_NF_CONNTRACK_PROCFS).", &[], "netsight.conntrack.stats.available");

pub static BREAKDOWN_AVAILABLE: MetricDesc = MetricDesc::new("netsight_conntrack_breakdown_available", G, "", "1 when the per-flow breakdown is current: the table was dumped within collectors.conntrack.breakdown_interval (default 30 s; the last dump is repeated in between), or nf_conntrack_count is 0 (an empty table is not dumped once a dump has succeeded); 0 when it was skipped because nf_conntrack_count exceeded collectors.conntrack.breakdown_max_entries, or the dump failed (the reason is logged once).", &[], "netsight.conntrack.breakdown.available");
pub static FLOWS: MetricDesc = MetricDesc::new("netsight_conntrack_flows", G, "", "Conntrack entries by L4 protocol (tcp, udp, icmp, icmpv6, sctp…, as conntrack -L names them), protocol state (TCP, SCTP and DCCP states in conntrack -L's spelling, e.g. ESTABLISHED, TIME_WAIT; empty for stateless protocols) and zone, from a streamed ctnetlink table dump.", &["protocol", "state", "zone"], "netsight.conntrack.flows");
pub static TOP_SOURCE_FLOWS: MetricDesc = MetricDesc::new("netsight_conntrack_top_source_flows", G, "", "Conntrack entries per original-direction source address, for the collectors.conntrack.top_addresses addresses with the most; address=\"other\" sums the rest.", &["address"], "netsight.conntrack.top_source.flows");
pub static TOP_SOURCE_BYTES: MetricDesc = MetricDesc::new("netsight_conntrack_top_source_bytes", G, "bytes", "Bytes (both directions) of the current entries per original-direction source address, top addresses by bytes plus address=\"other\". Only with nf_conntrack_acct enabled; entries created before it was enabled count 0.", &["address"], "netsight.conntrack.top_source.bytes");
pub static TOP_DESTINATION_FLOWS: MetricDesc = MetricDesc::new(
    "netsight_conntrack_top_destination_flows",
    G,
    "",
    "Conntrack entries per original-direction destination address, top addresses plus address=\"other\".",
    &["address"],
    "netsight.conntrack.top_destination.flows",
);
pub static TOP_DESTINATION_BYTES: MetricDesc = MetricDesc::new("netsight_conntrack_top_destination_bytes", G, "bytes", "Bytes (both directions) of the current entries per original-direction destination address, top addresses by bytes plus address=\"other\". Only with nf_conntrack_acct enabled.", &["address"], "netsight.conntrack.top_destination.bytes");

macro_rules! stat {
    ($id:ident, $field:literal, $help:literal) => {
        pub static $id: MetricDesc = MetricDesc::new(
            concat!("netsight_conntrack_stat_", $field, "_total"),
            C,
            "",
            $help,
            L,
            concat!("netsight.conntrack.stat.", $field),
        );
    };
}

stat!(
    FOUND,
    "found",
    "Lookups that found an existing entry (CTA_STATS_FOUND)."
);
stat!(INVALID, "invalid", "Packets that could not be tracked and were marked INVALID: malformed, or not matching the protocol state machine (CTA_STATS_INVALID).");
stat!(INSERT, "insert", "Entries inserted into the table (CTA_STATS_INSERT).");
stat!(INSERT_FAILED, "insert_failed", "Entries that could not be inserted, e.g. because an identical entry was inserted first by another CPU and the clash was not resolvable (CTA_STATS_INSERT_FAILED).");
stat!(DROP, "drop", "Packets dropped because conntrack failed: table full with nothing to early-drop, allocation failure or a failed insertion (CTA_STATS_DROP).");
stat!(
    EARLY_DROP,
    "early_drop",
    "Not-yet-assured entries evicted to make room for new ones while the table was full (CTA_STATS_EARLY_DROP)."
);
stat!(ERROR, "error", "Packets a protocol tracker rejected as erroneous, e.g. ICMP errors matching no connection or bad checksums; procfs calls it icmp_error (CTA_STATS_ERROR).");
stat!(
    SEARCH_RESTART,
    "search_restart",
    "Table lookups restarted because of a concurrent hash-table resize or entry move (CTA_STATS_SEARCH_RESTART)."
);
stat!(CLASH_RESOLVE, "clash_resolve", "Insertion races between CPUs for the same new flow that were resolved without a drop; procfs calls it clashres (CTA_STATS_CLASH_RESOLVE, Linux ≥ 5.10).");
stat!(CHAIN_TOO_LONG, "chain_too_long", "Insertions refused because the hash chain was too long, a protection against hash flooding; procfs calls it chainlength, conntrack -S chaintoolong (CTA_STATS_CHAIN_TOOLONG, Linux ≥ 5.15).");
stat!(EXPECT_NEW, "expect_new", "Connections created from an existing expectation (related flows predicted by a helper such as FTP) (CTA_STATS_EXP_NEW).");
stat!(
    EXPECT_CREATE,
    "expect_create",
    "Expectations created (CTA_STATS_EXP_CREATE)."
);
stat!(
    EXPECT_DELETE,
    "expect_delete",
    "Expectations deleted (CTA_STATS_EXP_DELETE)."
);

/// Static descriptors by field name (the names of [`StatsDump::stat_name`]).
static STATS: &[(&str, &MetricDesc)] = &[
    ("found", &FOUND),
    ("invalid", &INVALID),
    ("insert", &INSERT),
    ("insert_failed", &INSERT_FAILED),
    ("drop", &DROP),
    ("early_drop", &EARLY_DROP),
    ("error", &ERROR),
    ("search_restart", &SEARCH_RESTART),
    ("clash_resolve", &CLASH_RESOLVE),
    ("chain_too_long", &CHAIN_TOO_LONG),
    ("expect_new", &EXPECT_NEW),
    ("expect_create", &EXPECT_CREATE),
    ("expect_delete", &EXPECT_DELETE),
];

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "conntrack",
    source: "/proc/sys/net/netfilter/nf_conntrack_{count,max,buckets}; per-CPU statistics from ctnetlink (IPCTNL_MSG_CT_GET_STATS_CPU and IPCTNL_MSG_EXP_GET_STATS_CPU dumps, what `conntrack -S` shows), falling back to /proc/net/stat/nf_conntrack; the per-flow breakdown from a ctnetlink table dump (IPCTNL_MSG_CT_GET, what `conntrack -L` shows) aggregated message by message, never holding the table, taken every collectors.conntrack.breakdown_interval (30 s; the last one is repeated in between) and never for an empty table. All values are for the network namespace netsight runs in; the kernel's per-CPU counters are 32-bit and wrap",
    capabilities: "none for entries, limit and buckets. The per-CPU statistics need CAP_NET_ADMIN for ctnetlink; without it they are read from /proc/net/stat/nf_conntrack (world-readable, exists only with CONFIG_NF_CONNTRACK_PROCFS). When neither works the `netsight_conntrack_stat_*` metrics are absent, `netsight_conntrack_stats_available` is 0 and the reason is logged once; the collector itself stays up. The per-flow breakdown (`netsight_conntrack_flows`, `netsight_conntrack_top_*`) needs CAP_NET_ADMIN for the ctnetlink table dump (IPCTNL_MSG_CT_GET); without it, or while nf_conntrack_count is above collectors.conntrack.breakdown_max_entries (default 65536), those metrics are absent and `netsight_conntrack_breakdown_available` is 0, logged once. The collector is down (`netsight_collector_up` 0, reason logged) only when nf_conntrack is not loaded",
    metrics: &[
        &ENTRIES, &LIMIT, &BUCKETS, &STATS_AVAILABLE, &FOUND, &INVALID, &INSERT, &INSERT_FAILED,
        &DROP, &EARLY_DROP, &ERROR, &SEARCH_RESTART, &CLASH_RESOLVE, &CHAIN_TOO_LONG,
        &EXPECT_NEW, &EXPECT_CREATE, &EXPECT_DELETE, &BREAKDOWN_AVAILABLE, &FLOWS,
        &TOP_SOURCE_FLOWS, &TOP_SOURCE_BYTES, &TOP_DESTINATION_FLOWS, &TOP_DESTINATION_BYTES,
    ],
    dynamic: &[DynamicFamily {
        pattern: "netsight_conntrack_stat_<field>_total",
        source: "ctnetlink per-CPU statistics attributes or /proc/net/stat/nf_conntrack columns this version does not know",
        help: "Counters a newer kernel adds are kept: from ctnetlink named by attribute number (`attr16`, `expect_attr4`), from procfs by column name in snake_case. The fields the kernel no longer maintains (searched, new, ignore, delete, delete_list) and the procfs `entries` column (same as `netsight_conntrack_entries`) are not exported.",
        labels: L,
        otel_pattern: "netsight.conntrack.stat.<field>",
    }],
};

#[derive(Default)]
pub struct Conntrack {
    dynamic: HashMap<String, Arc<MetricDesc>>,
    /// Last logged problem with the per-CPU statistics, to log each one once.
    logged: Option<String>,
    cfg: ConntrackConfig,
    /// Last logged note about the breakdown (skipped, failed), to log each one once.
    logged_breakdown: Option<String>,
    /// The last dumped breakdown and when it was taken: repeated until it is
    /// `breakdown_interval` old, so the table is not dumped every tick.
    cached: Option<(Instant, BreakdownView)>,
    /// Whether a table dump has succeeded: until one has, an empty table is dumped
    /// anyway, so a missing capability shows as `breakdown_available 0` at once
    /// rather than only when the first entry appears.
    dump_ok: bool,
    /// The per-CPU statistics socket, kept across ticks ([`netlink_rows`]).
    stats_socket: Option<NetlinkSocket>,
    /// nf_conntrack_{count,max,buckets}, kept open ([`KeptFiles`]).
    files: KeptFiles,
    /// nf_conntrack_max and nf_conntrack_buckets, read every [`super::SETTINGS_REFRESH`].
    settings: Settings<(f64, f64)>,
    buf: Vec<u8>,
    /// `{cpu="N"}` label sets by CPU number, kept across ticks.
    cpu_labels: Vec<Option<LabelValues>>,
}

/// One CPU's statistics with exported field names, from either source.
struct Row {
    cpu: u32,
    /// Known names are `'static`: a row allocates no name a tick.
    fields: Vec<(std::borrow::Cow<'static, str>, u64)>,
}

impl Collector for Conntrack {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let entries = match self.sysctl(ctx, "nf_conntrack_count") {
            Err(e) if e.is_not_found() => {
                return Err(CollectError::Unavailable(format!(
                    "nf_conntrack module not loaded ({} missing)",
                    ctx.proc_path("sys/net/netfilter/nf_conntrack_count").display()
                )))
            }
            r => r?,
        };
        out.push0(&ENTRIES, entries);
        let mut settings = std::mem::take(&mut self.settings);
        let limits = settings
            .get(|| {
                Ok::<_, CollectError>((
                    self.sysctl(ctx, "nf_conntrack_max")?,
                    self.sysctl(ctx, "nf_conntrack_buckets")?,
                ))
            })
            .copied();
        self.settings = settings;
        let (limit, buckets) = limits?;
        out.push0(&LIMIT, limit);
        out.push0(&BUCKETS, buckets);

        match self.stats(ctx) {
            Ok((rows, note)) => {
                out.push0(&STATS_AVAILABLE, 1.0);
                self.log_once(note, false);
                self.emit_rows(rows, out);
            }
            Err(problem) => {
                out.push0(&STATS_AVAILABLE, 0.0);
                self.log_once(Some(problem), true);
            }
        }
        if ctx.is_live() && self.cfg.breakdown_max_entries > 0 {
            self.breakdown(ctx, entries as u64, out);
        }
        Ok(())
    }
}

impl Conntrack {
    /// One value of `/proc/sys/net/netfilter/<name>`, from a kept-open file.
    fn sysctl(&mut self, ctx: &CollectContext, name: &str) -> Result<f64, CollectError> {
        let path = ctx.proc_path(&format!("sys/net/netfilter/{name}"));
        self.files.read_attribute_into(&path, &mut self.buf)?;
        let vals = parse_sysctl_values(&self.buf).map_err(|e| CollectError::parse(path, e))?;
        Ok(vals.first().copied().unwrap_or_default() as f64)
    }

    pub fn new(cfg: &ConntrackConfig) -> Conntrack {
        Conntrack {
            cfg: cfg.clone(),
            // The module's files appear when it loads: looked up every tick so
            // the collector comes up on the next tick, not up to 30 s later.
            files: KeptFiles::retrying_absent_after(std::time::Duration::ZERO),
            ..Conntrack::default()
        }
    }

    fn breakdown(&mut self, ctx: &CollectContext, entries: u64, out: &mut Emitter) {
        let max = self.cfg.breakdown_max_entries;
        if entries > max {
            self.cached = None;
            out.push0(&BREAKDOWN_AVAILABLE, 0.0);
            self.log_breakdown(Some(format!(
                "conntrack breakdown skipped: nf_conntrack_count {entries} is above \
                 collectors.conntrack.breakdown_max_entries {max} (raise it to dump the table anyway)"
            )));
            return;
        }
        if entries == 0 && self.dump_ok {
            // An empty table is known without asking: the dump would make the kernel
            // walk every bucket of the global conntrack hash (262,144 on a 24 GiB
            // host, ~5 ms) to find nothing. Dropping the cache makes the first
            // entries dumped at once rather than after a stale empty breakdown.
            self.cached = None;
            out.push0(&BREAKDOWN_AVAILABLE, 1.0);
            self.log_breakdown(None);
            BreakdownView::new(&Breakdown::default(), self.cfg.top_addresses, false).emit(out);
            return;
        }
        if let Some((taken, view)) = &self.cached {
            if taken.elapsed() < self.cfg.breakdown_interval {
                out.push0(&BREAKDOWN_AVAILABLE, 1.0);
                view.emit(out);
                return;
            }
        }
        self.cached = None;
        match dump_breakdown(MAX_TRACKED_ADDRESSES) {
            Ok(b) => {
                self.dump_ok = true;
                out.push0(&BREAKDOWN_AVAILABLE, 1.0);
                self.log_breakdown(None);
                let acct = read_sysctl(ctx, "nf_conntrack_acct").unwrap_or(0.0) > 0.0;
                let view = BreakdownView::new(&b, self.cfg.top_addresses, acct || b.accounted);
                view.emit(out);
                self.cached = Some((Instant::now(), view));
            }
            Err(e) => {
                self.dump_ok = false;
                out.push0(&BREAKDOWN_AVAILABLE, 0.0);
                let hint = if e.is_permission() {
                    " (CAP_NET_ADMIN needed)"
                } else {
                    ""
                };
                self.log_breakdown(Some(format!(
                    "conntrack breakdown unavailable: ctnetlink table dump: {e}{hint}"
                )));
            }
        }
    }

    fn log_breakdown(&mut self, message: Option<String>) {
        if message == self.logged_breakdown {
            return;
        }
        if let Some(m) = &message {
            tracing::warn!(collector = "conntrack", "{m}");
        }
        self.logged_breakdown = message;
    }
}

/// Per-CPU statistics summed over CPUs (field names as in
/// `netsight_conntrack_stat_<field>_total`), from the same sources as the collector.
pub fn stat_totals(ctx: &CollectContext) -> Result<BTreeMap<String, u64>, String> {
    let (rows, _) = Conntrack::default().stats(ctx)?;
    let mut totals = BTreeMap::new();
    for row in rows {
        for (field, v) in row.fields {
            *totals.entry(field.into_owned()).or_insert(0u64) += v;
        }
    }
    Ok(totals)
}

fn read_sysctl(ctx: &CollectContext, name: &str) -> Result<f64, CollectError> {
    let path = ctx.proc_path(&format!("sys/net/netfilter/{name}"));
    let bytes = super::read_file(&path)?;
    let vals = parse_sysctl_values(&bytes).map_err(|e| CollectError::parse(path, e))?;
    Ok(vals.first().copied().unwrap_or_default() as f64)
}

impl Conntrack {
    /// Per-CPU rows plus an optional note worth logging (a fallback was used), or why
    /// no source worked.
    fn stats(&mut self, ctx: &CollectContext) -> Result<(Vec<Row>, Option<String>), String> {
        let rel = "net/stat/nf_conntrack";
        if !ctx.is_live() {
            return read_proc_stats(ctx, rel)
                .map(|rows| (rows, None))
                .map_err(|e| format!("conntrack per-CPU statistics unavailable: {e}"));
        }
        let netlink_err = match netlink_rows(&mut self.stats_socket) {
            Ok((rows, exp_err)) => {
                let note = exp_err.map(|e| format!("conntrack expectation statistics unavailable: ctnetlink: {e}"));
                return Ok((rows, note));
            }
            Err(e) => e,
        };
        let hint = if netlink_err.is_permission() {
            " (CAP_NET_ADMIN needed)"
        } else {
            ""
        };
        match read_proc_stats(ctx, rel) {
            Ok(rows) => Ok((
                rows,
                Some(format!(
                    "conntrack per-CPU statistics via ctnetlink failed: {netlink_err}{hint}; using {}",
                    ctx.proc_path(rel).display()
                )),
            )),
            Err(proc_err) => Err(format!(
                "conntrack per-CPU statistics unavailable: ctnetlink: {netlink_err}{hint}; {proc_err}"
            )),
        }
    }

    fn log_once(&mut self, message: Option<String>, warn: bool) {
        if message == self.logged {
            return;
        }
        if let Some(m) = &message {
            if warn {
                tracing::warn!(collector = "conntrack", "{m}");
            } else {
                tracing::info!(collector = "conntrack", "{m}");
            }
        }
        self.logged = message;
    }

    fn emit_rows(&mut self, rows: Vec<Row>, out: &mut Emitter) {
        for row in rows {
            let cpu = self.cpu_label(row.cpu);
            for (i, (field, v)) in row.fields.iter().enumerate() {
                // A repeated field (never sent by today's kernels) would be a
                // duplicate series. A row has ~15 fields: a scan beats a set.
                if row.fields[..i].iter().any(|(f, _)| f == field) {
                    continue;
                }
                match STATS.iter().find(|(n, _)| *n == field) {
                    Some((_, desc)) => out.push(*desc, &cpu, *v as f64),
                    None => {
                        let desc = self
                            .dynamic
                            .entry(field.to_string())
                            .or_insert_with_key(|f| Arc::new(dynamic_desc(f)));
                        out.push(desc.clone(), &cpu, *v as f64);
                    }
                }
            }
        }
    }

    /// The `{cpu="N"}` label set, made once per CPU.
    fn cpu_label(&mut self, cpu: u32) -> LabelValues {
        let i = cpu as usize;
        if self.cpu_labels.len() <= i {
            self.cpu_labels.resize_with(i + 1, || None);
        }
        self.cpu_labels[i]
            .get_or_insert_with(|| [cpu.to_string()].into_labels())
            .clone()
    }
}

fn dynamic_desc(field: &str) -> MetricDesc {
    MetricDesc {
        name: format!("netsight_conntrack_stat_{field}_total").into(),
        kind: C,
        unit: "",
        help: format!("Conntrack per-CPU statistic {field} (not known to this netsight version).").into(),
        labels: L,
        otel_name: format!("netsight.conntrack.stat.{field}").into(),
    }
}

fn read_proc_stats(ctx: &CollectContext, rel: &str) -> Result<Vec<Row>, String> {
    let path = ctx.proc_path(rel);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cpus = parse_nf_conntrack_stat(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(cpus
        .into_iter()
        .map(|c| Row {
            cpu: c.cpu,
            fields: c
                .fields
                .into_iter()
                .filter_map(|(n, v)| proc_stat_name(&n).map(|n| (n.into(), v)))
                .collect(),
        })
        .collect())
}

/// Conntrack statistics merged with the expectation statistics by CPU. The
/// expectation dump is best effort: its failure is returned beside the rows.
/// Both per-CPU statistics dumps on the collector's kept socket (opened when
/// missing, dropped after any failure so the next tick starts on a clean one):
/// opening a netlink socket per dump was a third of the collector's idle cost,
/// and transient sockets showed in sockstat's `sockets: used`.
fn netlink_rows(kept: &mut Option<NetlinkSocket>) -> Result<(Vec<Row>, Option<DumpError>), DumpError> {
    let sock = match kept {
        Some(s) => s,
        None => kept.insert(NetlinkSocket::open()?),
    };
    let r = netlink_rows_on(sock);
    if !matches!(r, Ok((_, None))) {
        *kept = None;
    }
    r
}

fn netlink_rows_on(sock: &mut NetlinkSocket) -> Result<(Vec<Row>, Option<DumpError>), DumpError> {
    let named = |dump: StatsDump, cpus: Vec<CpuStats>| -> Vec<Row> {
        cpus.into_iter()
            .map(|c| Row {
                cpu: u32::from(c.cpu),
                fields: c
                    .attrs
                    .into_iter()
                    .filter_map(|(a, v)| dump.stat_name(a).map(|n| (n, v)))
                    .collect(),
            })
            .collect()
    };
    let mut rows = named(
        StatsDump::Conntrack,
        dump_stats_cpu_on(sock, StatsDump::Conntrack, None)?,
    );
    match dump_stats_cpu_on(sock, StatsDump::Expect, None) {
        Ok(exp) => {
            for e in named(StatsDump::Expect, exp) {
                match rows.iter_mut().find(|r| r.cpu == e.cpu) {
                    Some(r) => r.fields.extend(e.fields),
                    None => rows.push(e),
                }
            }
            Ok((rows, None))
        }
        Err(e) => Ok((rows, Some(e))),
    }
}

/// Runs one per-CPU statistics dump over a fresh `NETLINK_NETFILTER` socket in the
/// calling thread's network namespace. When `raw` is given, every received datagram
/// is appended to it (used to capture test fixtures).
pub fn dump_stats_cpu(dump: StatsDump, raw: Option<&mut Vec<u8>>) -> Result<Vec<CpuStats>, DumpError> {
    dump_stats_cpu_on(&mut NetlinkSocket::open()?, dump, raw)
}

/// [`dump_stats_cpu`] on a socket the caller keeps. After an `Err` the socket may
/// still hold the rest of the failed dump: drop it.
fn dump_stats_cpu_on(
    sock: &mut NetlinkSocket,
    dump: StatsDump,
    raw: Option<&mut Vec<u8>>,
) -> Result<Vec<CpuStats>, DumpError> {
    let seq = next_seq();
    let mut cpus = Vec::new();
    sock.exchange(&stats_cpu_request(dump, seq), raw, |datagram| {
        let chunk = parse_stats_cpu_reply(datagram, dump, Some(seq))?;
        cpus.extend(chunk.cpus);
        Ok(chunk.done)
    })?;
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use std::path::Path;
    use std::time::SystemTime;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        dir
    }

    fn run(dir: &Path) -> (Result<(), CollectError>, Snapshot) {
        let ctx = CollectContext::new(dir, dir.join("sys"));
        let mut out = Emitter::new();
        let r = Conntrack::default().collect(&ctx, &mut out);
        (r, Snapshot::new(SystemTime::now(), out.into_families()))
    }

    const SYSCTL: &[(&str, &str)] = &[
        ("sys/net/netfilter/nf_conntrack_count", "5\n"),
        ("sys/net/netfilter/nf_conntrack_max", "262144\n"),
        ("sys/net/netfilter/nf_conntrack_buckets", "65536\n"),
    ];

    #[test]
    fn fixture_tree_with_proc_stats() {
        let mut files = SYSCTL.to_vec();
        files.push((
            "net/stat/nf_conntrack",
            "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart  future\n\
             00000005  00000001 0000000a 00000000 00000002 00000000 00000000 00000003 00000004 00000005 00000006 00000007 00000008  00000009 0000000a 0000000b 0000000c  0000000d\n\
             00000005  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000  00000000\n",
        ));
        let dir = tree(&files);
        let (r, snap) = run(dir.path());
        r.expect("collects");
        assert_eq!(snap.value("netsight_conntrack_entries", &[]), Some(5.0));
        assert_eq!(snap.value("netsight_conntrack_entries_limit", &[]), Some(262144.0));
        assert_eq!(snap.value("netsight_conntrack_buckets", &[]), Some(65536.0));
        assert_eq!(snap.value("netsight_conntrack_stats_available", &[]), Some(1.0));
        let cpu0 = |n: &str| snap.value(n, &[("cpu", "0")]);
        assert_eq!(cpu0("netsight_conntrack_stat_clash_resolve_total"), Some(1.0));
        assert_eq!(cpu0("netsight_conntrack_stat_found_total"), Some(10.0));
        assert_eq!(cpu0("netsight_conntrack_stat_invalid_total"), Some(2.0));
        assert_eq!(cpu0("netsight_conntrack_stat_chain_too_long_total"), Some(3.0));
        assert_eq!(cpu0("netsight_conntrack_stat_insert_total"), Some(4.0));
        assert_eq!(cpu0("netsight_conntrack_stat_insert_failed_total"), Some(5.0));
        assert_eq!(cpu0("netsight_conntrack_stat_drop_total"), Some(6.0));
        assert_eq!(cpu0("netsight_conntrack_stat_early_drop_total"), Some(7.0));
        assert_eq!(cpu0("netsight_conntrack_stat_error_total"), Some(8.0));
        assert_eq!(cpu0("netsight_conntrack_stat_expect_new_total"), Some(9.0));
        assert_eq!(cpu0("netsight_conntrack_stat_expect_create_total"), Some(10.0));
        assert_eq!(cpu0("netsight_conntrack_stat_expect_delete_total"), Some(11.0));
        assert_eq!(cpu0("netsight_conntrack_stat_search_restart_total"), Some(12.0));
        assert_eq!(cpu0("netsight_conntrack_stat_future_total"), Some(13.0));
        assert_eq!(
            snap.value("netsight_conntrack_stat_found_total", &[("cpu", "1")]),
            Some(0.0)
        );
        assert!(snap.family("netsight_conntrack_stat_new_total").is_none());
        assert!(snap.family("netsight_conntrack_stat_entries_total").is_none());
        let fam = snap.family("netsight_conntrack_stat_future_total").expect("dynamic");
        assert_eq!(fam.desc.kind, MetricKind::Counter);
    }

    #[test]
    fn fixture_tree_without_proc_stats() {
        let dir = tree(SYSCTL);
        let (r, snap) = run(dir.path());
        r.expect("collects");
        assert_eq!(snap.value("netsight_conntrack_entries", &[]), Some(5.0));
        assert_eq!(snap.value("netsight_conntrack_stats_available", &[]), Some(0.0));
        assert!(snap.family("netsight_conntrack_stat_found_total").is_none());
    }

    #[test]
    fn module_not_loaded_is_unavailable() {
        let dir = tree(&[("net/dev", "")]);
        let (r, _) = run(dir.path());
        match r {
            Err(CollectError::Unavailable(m)) => {
                assert!(m.contains("nf_conntrack module not loaded"), "{m}");
                assert!(m.contains("nf_conntrack_count"), "{m}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn garbage_sysctl_is_a_parse_error() {
        let dir = tree(&[
            ("sys/net/netfilter/nf_conntrack_count", "many\n"),
            ("sys/net/netfilter/nf_conntrack_max", "1\n"),
            ("sys/net/netfilter/nf_conntrack_buckets", "1\n"),
        ]);
        assert!(matches!(run(dir.path()).0, Err(CollectError::Parse { .. })));
    }

    #[test]
    fn doc_lists_every_static_stat() {
        for (field, desc) in STATS {
            assert_eq!(desc.name, format!("netsight_conntrack_stat_{field}_total"));
            assert!(DOC.metrics.iter().any(|m| m.name == desc.name), "{field}");
        }
    }
}
