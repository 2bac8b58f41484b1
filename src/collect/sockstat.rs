//! Socket allocation from `/proc/net/sockstat{,6}` and the TCP memory limits.

use std::collections::HashMap;
use std::sync::Arc;

use super::tick_files::SharedFile;
use super::{CollectContext, CollectError, Collector, KeptFiles, Settings};
use crate::catalog::{CollectorDoc, DynamicFamily, MetricDesc, MetricKind};
use crate::parse::snake_case;
use crate::parse::sockstat::parse_sockstat;
use crate::parse::sysctl::parse_sysctl_values;
use crate::snapshot::{Emitter, IntoLabels, LabelValue, LabelValues};

const G: MetricKind = MetricKind::Gauge;

pub static SOCKETS_USED: MetricDesc = MetricDesc::new(
    "netsight_sockstat_sockets_used",
    G,
    "",
    "Sockets in use, all families (sockstat `sockets: used`).",
    &[],
    "netsight.sockstat.sockets.used",
);
pub static INUSE: MetricDesc = MetricDesc::new(
    "netsight_sockstat_inuse",
    G,
    "",
    "Sockets in use per protocol (sockstat `inuse`).",
    &["protocol"],
    "netsight.sockstat.inuse",
);
pub static TCP_ORPHAN: MetricDesc = MetricDesc::new(
    "netsight_sockstat_tcp_orphans",
    G,
    "",
    "Orphaned TCP sockets (no file handle).",
    &[],
    "netsight.sockstat.tcp.orphans",
);
pub static TCP_TW: MetricDesc = MetricDesc::new(
    "netsight_sockstat_tcp_time_wait",
    G,
    "",
    "TCP sockets in TIME_WAIT.",
    &[],
    "netsight.sockstat.tcp.time_wait",
);
pub static TCP_ALLOC: MetricDesc = MetricDesc::new(
    "netsight_sockstat_tcp_allocated",
    G,
    "",
    "TCP sockets allocated (including not yet or no longer in use).",
    &[],
    "netsight.sockstat.tcp.allocated",
);
pub static MEM: MetricDesc = MetricDesc::new(
    "netsight_sockstat_memory_bytes",
    G,
    "bytes",
    "Memory used by socket buffers per protocol (pages converted to bytes; FRAG is reported in bytes by the kernel).",
    &["protocol"],
    "netsight.sockstat.memory",
);
pub static TCP_MEM_LIMIT: MetricDesc = MetricDesc::new(
    "netsight_sockstat_tcp_mem_limit_bytes",
    G,
    "bytes",
    "net.ipv4.tcp_mem thresholds converted to bytes.",
    &["level"],
    "netsight.sockstat.tcp.mem.limit",
);
pub static UDP_MEM_LIMIT: MetricDesc = MetricDesc::new(
    "netsight_sockstat_udp_mem_limit_bytes",
    G,
    "bytes",
    "net.ipv4.udp_mem thresholds converted to bytes.",
    &["level"],
    "netsight.sockstat.udp.mem.limit",
);
pub static TCP_MAX_ORPHANS: MetricDesc = MetricDesc::new(
    "netsight_sockstat_tcp_max_orphans",
    G,
    "",
    "net.ipv4.tcp_max_orphans.",
    &[],
    "netsight.sockstat.tcp.max_orphans",
);
pub static TCP_MAX_TW: MetricDesc = MetricDesc::new(
    "netsight_sockstat_tcp_max_tw_buckets",
    G,
    "",
    "net.ipv4.tcp_max_tw_buckets.",
    &[],
    "netsight.sockstat.tcp.max_tw_buckets",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "sockstat",
    source: "/proc/net/sockstat, /proc/net/sockstat6, /proc/sys/net/ipv4/{tcp_mem,udp_mem,tcp_max_orphans,tcp_max_tw_buckets}",
    capabilities: "none",
    metrics: &[&SOCKETS_USED, &INUSE, &TCP_ORPHAN, &TCP_TW, &TCP_ALLOC, &MEM, &TCP_MEM_LIMIT, &UDP_MEM_LIMIT, &TCP_MAX_ORPHANS, &TCP_MAX_TW],
    dynamic: &[DynamicFamily {
        pattern: "netsight_sockstat_<protocol>_<field>",
        source: "/proc/net/sockstat{,6}",
        help: "Any field a newer kernel prints that is not listed above, as a gauge.",
        labels: &[],
        otel_pattern: "netsight.sockstat.<protocol>.<field>",
    }],
};

pub fn page_size() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as f64
    } else {
        4096.0
    }
}

#[derive(Default)]
pub struct Sockstat {
    unknown: HashMap<String, Arc<MetricDesc>>,
    files: KeptFiles,
    buf: Vec<u8>,
    /// tcp_mem, udp_mem, tcp_max_orphans, tcp_max_tw_buckets: settings, read every
    /// [`super::SETTINGS_REFRESH`].
    limits: Settings<Limits>,
}

impl Sockstat {
    fn emit_file(&mut self, bytes: &[u8], out: &mut Emitter) -> Result<(), crate::parse::ParseError> {
        let page = page_size();
        for line in parse_sockstat(bytes)? {
            let proto = line.protocol.to_ascii_lowercase();
            for (field, v) in line.fields {
                let v = v as f64;
                match (proto.as_str(), field.as_str()) {
                    ("sockets", "used") => out.push0(&SOCKETS_USED, v),
                    (_, "inuse") => out.push(&INUSE, vec![proto.clone()], v),
                    ("tcp", "orphan") => out.push0(&TCP_ORPHAN, v),
                    ("tcp", "tw") => out.push0(&TCP_TW, v),
                    ("tcp", "alloc") => out.push0(&TCP_ALLOC, v),
                    (_, "mem") => out.push(&MEM, vec![proto.clone()], v * page),
                    (_, "memory") => out.push(&MEM, vec![proto.clone()], v),
                    _ => {
                        let name = format!("netsight_sockstat_{}_{}", snake_case(&proto), snake_case(&field));
                        let desc = self.unknown.entry(name.clone()).or_insert_with(|| {
                            Arc::new(MetricDesc {
                                name: name.into(),
                                kind: G,
                                unit: "",
                                help: format!("sockstat {} {field} (field not in the catalog).", line.protocol).into(),
                                labels: &[],
                                otel_name: format!("netsight.sockstat.{proto}.{field}").into(),
                            })
                        });
                        out.push0(desc.clone(), v);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The limits' samples: descriptor, label values and value.
type Limits = Vec<(&'static MetricDesc, LabelValues, f64)>;

/// The memory and socket limits, read from `/proc/sys` (absent inside a network
/// namespace for the host-wide ones: skipped).
fn read_limits(ctx: &CollectContext, files: &mut KeptFiles, buf: &mut Vec<u8>) -> Limits {
    let page = page_size();
    let mut read = |rel: &str| {
        files.read_attribute_into(&ctx.proc_path(rel), buf).ok()?;
        parse_sysctl_values(buf).ok()
    };
    let mut limits = Limits::new();
    for (rel, desc) in [
        ("sys/net/ipv4/tcp_mem", &TCP_MEM_LIMIT),
        ("sys/net/ipv4/udp_mem", &UDP_MEM_LIMIT),
    ] {
        if let Some(v) = read(rel).filter(|v| v.len() == 3) {
            for (level, x) in ["min", "pressure", "max"].into_iter().zip(v) {
                limits.push((desc, [level].into_labels(), x as f64 * page));
            }
        }
    }
    let none = || Vec::<LabelValue>::new().into_labels();
    if let Some(&v) = read("sys/net/ipv4/tcp_max_orphans").as_deref().and_then(<[i64]>::first) {
        limits.push((&TCP_MAX_ORPHANS, none(), v as f64));
    }
    if let Some(&v) = read("sys/net/ipv4/tcp_max_tw_buckets")
        .as_deref()
        .and_then(<[i64]>::first)
    {
        limits.push((&TCP_MAX_TW, none(), v as f64));
    }
    limits
}

impl Collector for Sockstat {
    fn name(&self) -> &'static str {
        "sockstat"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.collect_into(ctx, &mut buf, out);
        self.buf = buf;
        r
    }
}

impl Sockstat {
    fn collect_into(&mut self, ctx: &CollectContext, buf: &mut Vec<u8>, out: &mut Emitter) -> Result<(), CollectError> {
        let path = ctx.proc_path(SharedFile::Sockstat.rel());
        self.files.read_into(&path, buf)?;
        ctx.tick_files.keep(SharedFile::Sockstat, buf);
        self.emit_file(buf, out).map_err(|e| CollectError::parse(path, e))?;
        // sockstat6 is absent when IPv6 is disabled: that is not an error.
        let path6 = ctx.proc_path(SharedFile::Sockstat6.rel());
        if self.files.read_into(&path6, buf).is_ok() {
            ctx.tick_files.keep(SharedFile::Sockstat6, buf);
            self.emit_file(buf, out).map_err(|e| CollectError::parse(path6, e))?;
        }
        let files = &mut self.files;
        let limits = self
            .limits
            .get(|| Ok::<_, std::convert::Infallible>(read_limits(ctx, files, buf)));
        for (desc, labels, v) in limits.into_iter().flatten() {
            out.push(*desc, labels.clone(), *v);
        }
        Ok(())
    }
}
