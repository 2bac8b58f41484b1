//! Every field of the kernel's MIB tables (`/proc/net/snmp`, `/proc/net/netstat`,
//! `/proc/net/snmp6`), unknown future fields included, typed: counters get `_total`,
//! the few gauges (`Tcp CurrEstab`, `RtoMin`…) do not.

use std::collections::HashMap;
use std::sync::Arc;

use super::{CollectContext, CollectError, Collector};
use crate::catalog::{CollectorDoc, DynamicFamily, MetricDesc, MetricKind};
use crate::parse::netstat::{parse_mib_table, parse_snmp6, MibGroup};
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

#[derive(Default)]
pub struct Netstat {
    /// group → field → (descriptor, scale), built once per field. Nested so a
    /// lookup borrows the parsed names instead of cloning the group per field.
    descs: HashMap<String, FxHashMap<String, (Arc<MetricDesc>, f64)>>,
}

impl Netstat {
    fn emit(&mut self, source: &str, groups: Vec<MibGroup>, out: &mut Emitter) {
        for g in groups {
            let group = g.name.as_str();
            if !self.descs.contains_key(group) {
                self.descs.insert(group.to_string(), FxHashMap::default());
            }
            let Some(fields) = self.descs.get_mut(group) else {
                continue;
            };
            for (field, v) in g.fields {
                let (desc, scale) = fields.entry(field).or_insert_with_key(|field| {
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
                        otel_name: format!("netsight.netstat.{}.{}", group.to_ascii_lowercase(), snake_case(field))
                            .into(),
                    };
                    (Arc::new(desc), scale)
                });
                out.push0(desc.clone(), v as f64 * *scale);
            }
        }
    }

    fn read(
        &mut self,
        ctx: &CollectContext,
        rel: &str,
        parse: fn(&[u8]) -> Result<Vec<MibGroup>, ParseError>,
        out: &mut Emitter,
    ) -> Result<(), CollectError> {
        let path = ctx.proc_path(rel);
        let bytes = super::read_file(&path)?;
        let groups = parse(&bytes).map_err(|e| CollectError::parse(path.clone(), e))?;
        self.emit(&format!("/proc/{rel}"), groups, out);
        Ok(())
    }
}

impl Collector for Netstat {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        self.read(ctx, "net/snmp", parse_mib_table, out)?;
        self.read(ctx, "net/netstat", parse_mib_table, out)?;
        // snmp6 is absent when IPv6 is disabled.
        if ctx.proc_path("net/snmp6").exists() {
            self.read(ctx, "net/snmp6", parse_snmp6, out)?;
        }
        Ok(())
    }
}
