//! Every field of the kernel's MIB tables (`/proc/net/snmp`, `/proc/net/netstat`,
//! `/proc/net/snmp6`), unknown future fields included, typed: counters get `_total`,
//! the few gauges (`Tcp CurrEstab`, `RtoMin`…) do not.

use std::collections::HashMap;
use std::sync::Arc;

use super::{CollectContext, CollectError, Collector, KeptFiles};
use crate::catalog::{CollectorDoc, DynamicFamily, MetricDesc, MetricKind};
use crate::parse::netstat::{visit_mib_table, visit_snmp6};
use crate::parse::{snake_case, ParseError};
use crate::snapshot::Emitter;
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
type Descs = HashMap<String, FxHashMap<String, (Arc<MetricDesc>, f64)>>;

#[derive(Default)]
pub struct Netstat {
    descs: Descs,
    files: KeptFiles,
    buf: Vec<u8>,
}

/// Pushes one field, building its descriptor the first time it is seen.
fn emit_field(descs: &mut Descs, source: &str, group: &str, field: &str, v: i64, out: &mut Emitter) {
    if !descs.contains_key(group) {
        descs.insert(group.to_string(), FxHashMap::default());
    }
    let Some(fields) = descs.get_mut(group) else {
        return;
    };
    if !fields.contains_key(field) {
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
        fields.insert(field.to_string(), (Arc::new(desc), scale));
    }
    if let Some((desc, scale)) = fields.get(field) {
        out.push0(desc.clone(), v as f64 * *scale);
    }
}

type Visit = fn(&[u8], &mut dyn FnMut(&str, &str, i64)) -> Result<(), ParseError>;

impl Netstat {
    /// Reads and emits one file; `Ok(false)` when it is absent and `optional`.
    fn read(
        &mut self,
        ctx: &CollectContext,
        rel: &str,
        source: &str,
        visit: Visit,
        optional: bool,
        out: &mut Emitter,
    ) -> Result<(), CollectError> {
        let path = ctx.proc_path(rel);
        match self.files.read_into(&path, &mut self.buf) {
            Ok(()) => {}
            Err(e) if optional && e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
        let descs = &mut self.descs;
        visit(&self.buf, &mut |g, f, v| emit_field(descs, source, g, f, v, out))
            .map_err(|e| CollectError::parse(path, e))
    }
}

impl Collector for Netstat {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let table: Visit = |b, f| visit_mib_table(b, f);
        let snmp6: Visit = |b, f| visit_snmp6(b, f);
        self.read(ctx, "net/snmp", "/proc/net/snmp", table, false, out)?;
        self.read(ctx, "net/netstat", "/proc/net/netstat", table, false, out)?;
        // snmp6 is absent when IPv6 is disabled.
        self.read(ctx, "net/snmp6", "/proc/net/snmp6", snmp6, true, out)
    }
}
