//! The metric catalog: one description per exported metric.
//!
//! Every exporter (Prometheus text, the generated `docs/metrics.md`, later OTLP)
//! reads names, types, units and help from here, so a metric is described once.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Description of one metric family.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricDesc {
    pub name: Cow<'static, str>,
    pub kind: MetricKind,
    /// Base unit (`bytes`, `seconds`, `packets`…), empty when dimensionless.
    pub unit: &'static str,
    pub help: Cow<'static, str>,
    pub labels: &'static [&'static str],
    /// OpenTelemetry name (semantic conventions where one exists).
    pub otel_name: Cow<'static, str>,
}

impl MetricDesc {
    /// The `'static` descriptor of a metric described at run time (a kernel
    /// field the catalog does not list), made once per name for the life of the
    /// process; a later call with the same name returns the first descriptor.
    ///
    /// `'static` because a shared (`Arc`) descriptor costs two atomic operations
    /// on its own cache line per sample per tick, clone and drop: for netstat's
    /// ~400 fields that was ~4 % of an idle tick. The names come from the
    /// kernel's MIB files, so their number is bounded by the kernel's fields.
    pub fn intern(desc: MetricDesc) -> &'static MetricDesc {
        static INTERNED: std::sync::Mutex<Option<rustc_hash::FxHashMap<String, &'static MetricDesc>>> =
            std::sync::Mutex::new(None);
        let mut map = match INTERNED.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get_or_insert_with(Default::default)
            .entry(desc.name.to_string())
            .or_insert_with(|| Box::leak(Box::new(desc)))
    }

    pub const fn new(
        name: &'static str,
        kind: MetricKind,
        unit: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        otel_name: &'static str,
    ) -> Self {
        MetricDesc {
            name: Cow::Borrowed(name),
            kind,
            unit,
            help: Cow::Borrowed(help),
            labels,
            otel_name: Cow::Borrowed(otel_name),
        }
    }
}

/// A family of metrics whose members are only known at run time (for example every
/// field the running kernel prints in `/proc/net/netstat`).
#[derive(Clone, Debug, Serialize)]
pub struct DynamicFamily {
    pub pattern: &'static str,
    pub source: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub otel_pattern: &'static str,
}

/// What one collector contributes to the catalog.
pub struct CollectorDoc {
    pub collector: &'static str,
    pub source: &'static str,
    pub capabilities: &'static str,
    pub metrics: &'static [&'static MetricDesc],
    pub dynamic: &'static [DynamicFamily],
}

pub fn all_collectors() -> Vec<&'static CollectorDoc> {
    vec![
        &crate::collect::CORE_DOC,
        &crate::collect::netdev::DOC,
        &crate::collect::sockstat::DOC,
        &crate::collect::netstat::DOC,
        &crate::collect::softnet::DOC,
        &crate::collect::conntrack::DOC,
        &crate::collect::sockets::DOC,
        &crate::collect::sysctl::DOC,
        &crate::collect::nftables::DOC,
        &crate::rules::engine::DOC,
        &crate::export::otlp::DOC,
        &crate::export::notify::DOC,
    ]
}

/// Looks a static metric up by its exposition name.
pub fn find(name: &str) -> Option<&'static MetricDesc> {
    all_collectors()
        .into_iter()
        .flat_map(|c| c.metrics.iter().copied())
        .find(|m| m.name == name)
}

/// Renders `docs/metrics.md`. A test compares the committed file with this output.
pub fn render_markdown() -> String {
    let mut out = String::new();
    out.push_str("# netsight metrics\n\n");
    out.push_str("Generated from `src/catalog.rs` by `netsight catalog --markdown`; ");
    out.push_str("a test fails when this file is stale.\n\n");
    for doc in all_collectors() {
        let _ = writeln!(out, "## `{}`\n", doc.collector);
        let _ = writeln!(out, "Source: {}  ", doc.source);
        let _ = writeln!(out, "Privileges: {}\n", doc.capabilities);
        if !doc.metrics.is_empty() {
            out.push_str("| name | type | unit | labels | OTel name | help |\n");
            out.push_str("|---|---|---|---|---|---|\n");
            for m in doc.metrics {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | `{}` | {} |",
                    m.name,
                    m.kind.as_str(),
                    if m.unit.is_empty() { "-" } else { m.unit },
                    m.labels.join(", "),
                    m.otel_name,
                    m.help.replace('|', "\\|"),
                );
            }
            out.push('\n');
        }
        for d in doc.dynamic {
            let _ = writeln!(
                out,
                "- `{}` (labels: {}; OTel `{}`): {} Source: {}.",
                d.pattern,
                if d.labels.is_empty() {
                    "none".to_string()
                } else {
                    d.labels.join(", ")
                },
                d.otel_pattern,
                d.help,
                d.source
            );
        }
        if !doc.dynamic.is_empty() {
            out.push('\n');
        }
    }
    out
}

/// The static catalog as JSON (for `netsight catalog`).
pub fn all_metrics_json() -> serde_json::Value {
    let metrics: Vec<_> = all_collectors()
        .into_iter()
        .flat_map(|c| c.metrics.iter().map(move |m| (c.collector, *m)))
        .map(|(c, m)| serde_json::json!({"collector": c, "metric": m}))
        .collect();
    serde_json::Value::Array(metrics)
}
