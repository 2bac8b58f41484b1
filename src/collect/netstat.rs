//! Every field of the kernel's MIB tables (`/proc/net/snmp`, `/proc/net/netstat`,
//! `/proc/net/snmp6`), unknown future fields included, typed: counters get `_total`,
//! the few gauges (`Tcp CurrEstab`, `RtoMin`…) do not.

use std::path::PathBuf;

use super::tick_files::SharedFile;
use super::{CollectContext, CollectError, Collector, KeptFiles};
use crate::catalog::{CollectorDoc, DynamicFamily, MetricDesc, MetricKind};
use crate::parse::netstat::{visit_mib_rows, visit_snmp6};
use crate::parse::snake_case;
use crate::snapshot::{name_key, Emitter};
use rustc_hash::FxHashMap;

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "netstat",
    source: "/proc/net/snmp, /proc/net/netstat, /proc/net/snmp6",
    capabilities: "none",
    metrics: &[],
    dynamic: &[
        DynamicFamily {
            pattern: "netsight_netstat_<group>_<field>_total",
            source: "/proc/net/snmp (Ip, Icmp, IcmpMsg, Tcp, Udp, UdpLite), /proc/net/netstat (TcpExt, IpExt, MPTcpExt, any other), /proc/net/snmp6 (Ip6, Icmp6, Udp6, UdpLite6)",
            help: "Every counter the kernel prints, one metric per field: group lower-cased (`tcpext`), field in snake_case (`ListenOverflows` → `listen_overflows`). Example: `netsight_netstat_tcp_retrans_segs_total`, `netsight_netstat_tcpext_listen_overflows_total`.",
            labels: &[],
            otel_pattern: "netsight.netstat.<group>.<field>",
        },
        DynamicFamily {
            pattern: "netsight_netstat_<group>_<field>",
            source: "/proc/net/snmp",
            help: "Gauges: `tcp_curr_estab`, `tcp_max_conn` (-1 = no limit), `tcp_rto_algorithm`, `tcp_rto_min_seconds`, `tcp_rto_max_seconds` (converted from ms), `ip_forwarding` (1 forwarding, 2 not), `ip_default_ttl`.",
            labels: &[],
            otel_pattern: "netsight.netstat.<group>.<field>",
        },
    ],
};

/// How a field is exported: gauge or counter, and a unit conversion.
fn field_kind(group: &str, field: &str) -> (MetricKind, &'static str, f64) {
    match (group, field) {
        ("Tcp", "RtoMin") | ("Tcp", "RtoMax") => (MetricKind::Gauge, "_seconds", 1e-3),
        ("Tcp", "RtoAlgorithm") | ("Tcp", "MaxConn") | ("Tcp", "CurrEstab") => (MetricKind::Gauge, "", 1.0),
        ("Ip", "Forwarding") | ("Ip", "DefaultTTL") => (MetricKind::Gauge, "", 1.0),
        _ => (MetricKind::Counter, "_total", 1.0),
    }
}

fn field_name(group: &str, field: &str) -> String {
    let g = group.to_ascii_lowercase();
    let f = match (group, field) {
        ("Ip", "DefaultTTL") => "default_ttl".to_string(),
        _ => snake_case(field),
    };
    format!("netsight_netstat_{g}_{f}")
}

/// group → field → (descriptor, scale), built once per field. Nested so a
/// lookup borrows the parsed names instead of cloning the group per field.
type Descs = FxHashMap<String, FxHashMap<String, Field>>;

/// A field's descriptor and unit conversion.
#[derive(Clone)]
struct Field {
    desc: &'static MetricDesc,
    /// [`name_key`] of the descriptor's name ([`Emitter::push0_keyed`]).
    key: u64,
    scale: f64,
}

/// snmp6's fields (one per line) in the order the kernel printed them last tick. The order
/// only changes with the kernel (or a module adding a table), so a tick checks
/// each field against its predecessor at the same position (two short string
/// compares) instead of hashing its names into [`Descs`].
///
/// The names are kept back to back in one string: a tick compares them in order,
/// through memory read sequentially. As ~200 small strings allocated one by one
/// they were cold after an idle interval, and their cache misses were most of
/// the comparisons' cost.
#[derive(Default)]
struct Layout {
    /// Each field's group then name, back to back.
    names: String,
    /// Per field: where its group ends and where its name ends in `names`, and
    /// its descriptor. A field starts where its predecessor ends.
    fields: Vec<(usize, usize, Field)>,
}

impl Layout {
    /// The field at position `i`, looked up (and the layout mended from `i` on)
    /// when the file changed there.
    fn field(&mut self, i: usize, descs: &mut Descs, source: &str, group: &str, field: &str) -> Field {
        let start = i
            .checked_sub(1)
            .and_then(|p| self.fields.get(p))
            .map_or(0, |(_, end, _)| *end);
        if let Some((group_end, end, known)) = self.fields.get(i) {
            if self.names.get(start..*group_end) == Some(group) && self.names.get(*group_end..*end) == Some(field) {
                return known.clone();
            }
        }
        let known = describe(descs, source, group, field);
        self.truncate(i);
        self.names.push_str(group);
        let group_end = self.names.len();
        self.names.push_str(field);
        self.fields.push((group_end, self.names.len(), known.clone()));
        known
    }

    /// Keeps the first `n` fields.
    fn truncate(&mut self, n: usize) {
        self.fields.truncate(n);
        let end = n
            .checked_sub(1)
            .and_then(|p| self.fields.get(p))
            .map_or(0, |(_, end, _)| *end);
        self.names.truncate(end);
    }
}

/// A table file's rows as printed last tick: group, header line (the field
/// names) and each field's descriptor. A row whose header line is unchanged has
/// the same fields in the same order, so one comparison of the line replaces a
/// comparison per field.
#[derive(Default)]
struct Rows(Vec<(Box<str>, Box<str>, Vec<Field>)>);

impl Rows {
    /// The fields of row `i`, described afresh (and the rows after it dropped)
    /// when the file changed there.
    fn fields(&mut self, i: usize, descs: &mut Descs, source: &str, group: &str, header: &str) -> &[Field] {
        let same = self.0.get(i).is_some_and(|(g, h, _)| **g == *group && **h == *header);
        if !same {
            self.0.truncate(i);
            let fields = header
                .split_ascii_whitespace()
                .map(|f| describe(descs, source, group, f))
                .collect();
            self.0.push((group.into(), header.into(), fields));
        }
        self.0.get(i).map_or(&[], |(_, _, f)| f.as_slice())
    }
}

#[derive(Default)]
pub struct Netstat {
    descs: Descs,
    /// snmp, netstat.
    tables: [Rows; 2],
    /// snmp6, one field per line.
    snmp6: Layout,
    files: KeptFiles,
    buf: Vec<u8>,
    /// Families made last run: room for as many is reserved up front.
    last_count: usize,
}

/// A field's descriptor, built the first time the field is seen.
fn describe(descs: &mut Descs, source: &str, group: &str, field: &str) -> Field {
    if let Some(known) = descs.get(group).and_then(|fields| fields.get(field)) {
        return known.clone();
    }
    let (kind, suffix, scale) = field_kind(group, field);
    let name = format!("{}{suffix}", field_name(group, field));
    let unit = if suffix == "_seconds" {
        "seconds"
    } else if field.ends_with("Octets") {
        "bytes"
    } else {
        ""
    };
    let desc = MetricDesc {
        name: name.into(),
        kind,
        unit,
        help: format!("{group} {field} from {source}.").into(),
        labels: &[],
        otel_name: format!("netsight.netstat.{}.{}", group.to_ascii_lowercase(), snake_case(field)).into(),
    };
    let known = Field {
        key: name_key(&desc.name),
        desc: MetricDesc::intern(desc),
        scale,
    };
    descs
        .entry(group.to_string())
        .or_default()
        .insert(field.to_string(), known.clone());
    known
}

impl Netstat {
    /// Reads `rel` into the buffer; `Ok(None)` when it is absent and `optional`.
    fn read_file(&mut self, ctx: &CollectContext, rel: &str, optional: bool) -> Result<Option<PathBuf>, CollectError> {
        let path = ctx.proc_path(rel);
        match self.files.read_into(&path, &mut self.buf) {
            Ok(()) => Ok(Some(path)),
            Err(e) if optional && e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads and emits `/proc/net/snmp` (`which` 0) or `/proc/net/netstat` (1).
    fn read_table(&mut self, ctx: &CollectContext, which: usize, out: &mut Emitter) -> Result<(), CollectError> {
        let (rel, source, shared) = [
            (SharedFile::Snmp.rel(), "/proc/net/snmp", Some(SharedFile::Snmp)),
            ("net/netstat", "/proc/net/netstat", None),
        ][which];
        let Some(path) = self.read_file(ctx, rel, false)? else {
            return Ok(());
        };
        if let Some(file) = shared {
            ctx.tick_files.keep(file, &self.buf);
        }
        let (descs, rows) = (&mut self.descs, &mut self.tables[which]);
        let mut i = 0;
        let visited = visit_mib_rows(&self.buf, |group, header, values| {
            for (field, v) in rows.fields(i, descs, source, group, header).iter().zip(values) {
                out.push0_keyed(field.desc, field.key, *v as f64 * field.scale);
            }
            i += 1;
        });
        rows.0.truncate(i);
        visited.map_err(|e| CollectError::parse(path, e))
    }

    /// Reads and emits `/proc/net/snmp6`, absent when IPv6 is disabled.
    fn read_snmp6(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(path) = self.read_file(ctx, "net/snmp6", true)? else {
            return Ok(());
        };
        let (descs, layout) = (&mut self.descs, &mut self.snmp6);
        let mut i = 0;
        let visited = visit_snmp6(&self.buf, |g, f, v| {
            let field = layout.field(i, descs, "/proc/net/snmp6", g, f);
            i += 1;
            out.push0_keyed(field.desc, field.key, v as f64 * field.scale);
        });
        layout.truncate(i);
        visited.map_err(|e| CollectError::parse(path, e))
    }
}

impl Collector for Netstat {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let before = out.family_count();
        out.reserve_families(self.last_count);
        self.read_table(ctx, 0, out)?;
        self.read_table(ctx, 1, out)?;
        self.read_snmp6(ctx, out)?;
        self.last_count = out.family_count() - before;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut Netstat, tree: &str) -> Vec<(String, String, Vec<Option<f64>>)> {
        let root = format!("{}/tests/fixtures/proc/{tree}", env!("CARGO_MANIFEST_DIR"));
        let ctx = CollectContext::new(&root, "/sys");
        let mut out = Emitter::new();
        c.collect(&ctx, &mut out).expect("collect");
        out.into_families()
            .into_iter()
            .map(|f| {
                let values = f.samples.iter().map(|s| s.value.as_f64()).collect();
                (f.desc.name.to_string(), f.desc.help.to_string(), values)
            })
            .collect()
    }

    /// A collector that remembers last tick's field order reports exactly what a
    /// fresh one reports when the files change under it (a kernel with more
    /// fields, and back).
    #[test]
    fn a_changed_field_layout_reads_like_a_fresh_start() {
        let mut kept = Netstat::default();
        for tree in ["host1", "future-kernel", "host1", "host1", "future-kernel"] {
            let fresh = run(&mut Netstat::default(), tree);
            assert!(fresh.len() > 100, "{tree}: {} families", fresh.len());
            assert_eq!(run(&mut kept, tree), fresh, "{tree}");
        }
    }
}
