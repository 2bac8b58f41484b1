//! Snapshot families to OpenTelemetry instruments: semantic-convention names and
//! units, attributes, and the registry of instruments created so far.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use opentelemetry::metrics::{AsyncInstrument, Meter};
use opentelemetry::KeyValue;

use crate::catalog::MetricKind;
use crate::daemon::{Published, Shared};
use crate::snapshot::{Family, Sample, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Inst {
    CounterU64,
    CounterF64,
    Gauge,
    UpDown,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Attrs {
    /// Prometheus labels as attributes (empty values dropped, as Prometheus does).
    Labels,
    /// netdev counters: `device` → `network.interface.name`, plus the direction.
    NetIo { direction: &'static str },
    /// Socket counts by state: `system.network.connection.count`.
    Connection { transport: &'static str },
}

#[derive(Clone, Debug)]
pub(super) struct Route {
    pub(super) name: Cow<'static, str>,
    pub(super) inst: Inst,
    pub(super) unit: Cow<'static, str>,
    pub(super) description: Cow<'static, str>,
    pub(super) attrs: Attrs,
}

pub(super) fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    n.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
}

pub(super) fn unit_of(prom_name: &str, unit: &str) -> Cow<'static, str> {
    Cow::Borrowed(match unit {
        "" => "",
        "bytes" => "By",
        "bytes_per_second" => "By/s",
        "seconds" => "s",
        "packets" => "{packet}",
        "bits" if prom_name.ends_with("_per_second") => "bit/s",
        "bits" => "bit",
        other => return Cow::Owned(other.to_string()),
    })
}

/// How a family is exported; `None` for families OTLP cannot carry (histograms).
pub(super) fn route(fam: &Family) -> Option<Route> {
    let d = &fam.desc;
    let name: &str = &d.name;
    if d.kind == MetricKind::Histogram {
        return None;
    }
    if let Some(rest) = name
        .strip_prefix("netsight_network_")
        .and_then(|r| r.strip_suffix("_total"))
    {
        if let Some((dir, what)) = rest.split_once('_') {
            let direction = match dir {
                "receive" => Some("receive"),
                "transmit" => Some("transmit"),
                _ => None,
            };
            let semconv = match what {
                "bytes" => Some(("system.network.io", "By", "Bytes received and transmitted.")),
                "packets" => Some((
                    "system.network.packet.count",
                    "{packet}",
                    "Packets received and transmitted.",
                )),
                "errors" => Some(("system.network.errors", "{error}", "Receive and transmit errors.")),
                "drop" => Some((
                    "system.network.packet.dropped",
                    "{packet}",
                    "Packets dropped on receive (rx_dropped plus rx_missed_errors) and transmit.",
                )),
                _ => None,
            };
            if let (Some(direction), Some((otel, unit, help))) = (direction, semconv) {
                return Some(Route {
                    name: Cow::Borrowed(otel),
                    inst: Inst::CounterU64,
                    unit: Cow::Borrowed(unit),
                    description: Cow::Borrowed(help),
                    attrs: Attrs::NetIo { direction },
                });
            }
        }
    }
    let transport = match name {
        "netsight_tcp_connections" => Some("tcp"),
        "netsight_udp_sockets" => Some("udp"),
        _ => None,
    };
    if let Some(transport) = transport {
        return Some(Route {
            name: Cow::Borrowed("system.network.connection.count"),
            inst: Inst::UpDown,
            unit: Cow::Borrowed("{connection}"),
            description: Cow::Borrowed("TCP and UDP sockets by state (what ss lists)."),
            attrs: Attrs::Connection { transport },
        });
    }
    let otel = if valid_name(&d.otel_name) {
        d.otel_name.clone()
    } else {
        let base = name.strip_prefix("netsight_").unwrap_or(name);
        let base = base.strip_suffix("_total").unwrap_or(base);
        Cow::Owned(format!("netsight.{}", base.replace('_', ".")))
    };
    let inst = match d.kind {
        MetricKind::Counter if d.unit == "seconds" => Inst::CounterF64,
        MetricKind::Counter => Inst::CounterU64,
        _ => Inst::Gauge,
    };
    Some(Route {
        name: otel,
        inst,
        unit: unit_of(name, d.unit),
        description: d.help.clone(),
        attrs: Attrs::Labels,
    })
}

/// Semantic-convention spelling of netsight's TCP/UDP state labels.
pub(super) fn connection_state(s: &str) -> &str {
    match s {
        "fin_wait1" => "fin_wait_1",
        "fin_wait2" => "fin_wait_2",
        // UDP sockets without a peer: the kernel's TCP_CLOSE (ss UNCONN).
        "unconnected" => "close",
        other => other,
    }
}

pub(super) fn attributes(fam: &Family, sample: &Sample, attrs: &Attrs) -> Vec<KeyValue> {
    let names = fam.label_names();
    let mut out = Vec::with_capacity(names.len() + 1);
    for (k, v) in names.into_iter().zip(sample.labels.iter()) {
        if v.is_empty() {
            continue;
        }
        let key = match (attrs, k) {
            (Attrs::NetIo { .. }, "device") => "network.interface.name",
            (Attrs::Connection { .. }, "family") => "network.type",
            (Attrs::Connection { .. }, "state") => {
                out.push(KeyValue::new(
                    "network.connection.state",
                    connection_state(v).to_string(),
                ));
                continue;
            }
            (_, k) => k,
        };
        out.push(KeyValue::new(key.to_string(), v.clone()));
    }
    match attrs {
        Attrs::NetIo { direction } => out.push(KeyValue::new("network.io.direction", *direction)),
        Attrs::Connection { transport } => out.push(KeyValue::new("network.transport", *transport)),
        Attrs::Labels => {}
    }
    out
}

/// The latest snapshot, indexed by exported name (built once per published snapshot).
pub(super) struct View {
    pub(super) published: Arc<Published>,
    pub(super) by_name: HashMap<Cow<'static, str>, Vec<(usize, Route)>>,
}

impl View {
    pub(super) fn build(published: Arc<Published>) -> View {
        let mut by_name: HashMap<Cow<'static, str>, Vec<(usize, Route)>> = HashMap::new();
        for (i, fam) in published.snapshot.families.iter().enumerate() {
            if let Some(r) = route(fam) {
                by_name.entry(r.name.clone()).or_default().push((i, r));
            }
        }
        View { published, by_name }
    }

    /// Calls `f(value, attributes)` for every sample exported under `name` as `inst`.
    pub(super) fn each(&self, name: &str, inst: Inst, mut f: impl FnMut(f64, &[KeyValue])) {
        let Some(list) = self.by_name.get(name) else { return };
        for (i, r) in list {
            if r.inst != inst {
                continue;
            }
            let fam = &self.published.snapshot.families[*i];
            for s in &fam.samples {
                if let Value::Scalar(v) = s.value {
                    if v.is_finite() {
                        f(v, &attributes(fam, s, &r.attrs));
                    }
                }
            }
        }
    }
}

pub(super) struct ViewCache {
    pub(super) shared: Arc<Shared>,
    pub(super) current: Mutex<Option<Arc<View>>>,
}

impl ViewCache {
    pub(super) fn get(&self) -> Arc<View> {
        let latest = self.shared.latest();
        let mut cur = match self.current.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(v) = cur.as_ref() {
            if Arc::ptr_eq(&v.published, &latest) {
                return v.clone();
            }
        }
        let v = Arc::new(View::build(latest));
        *cur = Some(v.clone());
        v
    }
}

/// Registers one observable instrument per exported name as names appear.
pub(super) struct Registry {
    pub(super) meter: Meter,
    pub(super) views: Arc<ViewCache>,
    pub(super) known: HashMap<String, Inst>,
    pub(super) conflicts: HashSet<String>,
    /// Handles are kept so that the instruments live as long as the provider.
    pub(super) handles: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Registry {
    /// Registers the names of the latest snapshot not seen before; returns how many.
    pub(super) fn sync(&mut self) -> usize {
        let view = self.views.get();
        let mut added = 0;
        for (name, list) in &view.by_name {
            let Some((_, first)) = list.first() else { continue };
            match self.known.get(name.as_ref()) {
                Some(inst) => {
                    if list.iter().any(|(_, r)| r.inst != *inst) && self.conflicts.insert(name.to_string()) {
                        tracing::warn!(metric = %name, "families of different types share this OTLP name; exporting only the first type");
                    }
                    continue;
                }
                None => {
                    self.register(first);
                    self.known.insert(name.to_string(), first.inst);
                    added += 1;
                }
            }
        }
        added
    }

    pub(super) fn register(&mut self, r: &Route) {
        let name: Cow<'static, str> = Cow::Owned(r.name.to_string());
        let key = r.name.to_string();
        let views = self.views.clone();
        let inst = r.inst;
        let m = &self.meter;
        let (desc, unit) = (r.description.clone(), r.unit.clone());
        let h: Box<dyn std::any::Any + Send + Sync> = match inst {
            Inst::CounterU64 => Box::new(
                m.u64_observable_counter(name)
                    .with_description(desc)
                    .with_unit(unit)
                    .with_callback(move |o: &dyn AsyncInstrument<u64>| {
                        views.get().each(&key, inst, |v, a| o.observe(v.max(0.0) as u64, a))
                    })
                    .build(),
            ),
            Inst::CounterF64 => Box::new(
                m.f64_observable_counter(name)
                    .with_description(desc)
                    .with_unit(unit)
                    .with_callback(move |o: &dyn AsyncInstrument<f64>| {
                        views.get().each(&key, inst, |v, a| o.observe(v.max(0.0), a))
                    })
                    .build(),
            ),
            Inst::Gauge => Box::new(
                m.f64_observable_gauge(name)
                    .with_description(desc)
                    .with_unit(unit)
                    .with_callback(move |o: &dyn AsyncInstrument<f64>| {
                        views.get().each(&key, inst, |v, a| o.observe(v, a))
                    })
                    .build(),
            ),
            Inst::UpDown => Box::new(
                m.i64_observable_up_down_counter(name)
                    .with_description(desc)
                    .with_unit(unit)
                    .with_callback(move |o: &dyn AsyncInstrument<i64>| {
                        views.get().each(&key, inst, |v, a| o.observe(v as i64, a))
                    })
                    .build(),
            ),
        };
        self.handles.push(h);
    }

    /// Identities of the cumulative (counter and up-down) series in the latest snapshot.
    pub(super) fn cumulative_series(&self) -> HashSet<u64> {
        let view = self.views.get();
        let mut out = HashSet::new();
        for (name, list) in &view.by_name {
            for (i, r) in list {
                if r.inst == Inst::Gauge || self.known.get(name.as_ref()) != Some(&r.inst) {
                    continue;
                }
                let fam = &view.published.snapshot.families[*i];
                for s in &fam.samples {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    name.hash(&mut h);
                    for kv in attributes(fam, s, &r.attrs) {
                        kv.key.as_str().hash(&mut h);
                        kv.value.as_str().hash(&mut h);
                    }
                    out.insert(h.finish());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use crate::snapshot::IntoLabels;

    fn family(name: &str) -> Family {
        let desc = catalog::find(name).unwrap_or_else(|| panic!("{name} in catalog"));
        Family::new(desc)
    }

    #[test]
    fn semantic_convention_routes() {
        let r = route(&family("netsight_network_receive_bytes_total")).unwrap();
        assert_eq!(r.name, "system.network.io");
        assert_eq!(r.unit, "By");
        assert_eq!(r.attrs, Attrs::NetIo { direction: "receive" });
        let r = route(&family("netsight_network_transmit_drop_total")).unwrap();
        assert_eq!(r.name, "system.network.packet.dropped");
        assert_eq!(r.attrs, Attrs::NetIo { direction: "transmit" });
        let r = route(&family("netsight_network_receive_errors_total")).unwrap();
        assert_eq!((r.name.as_ref(), r.unit.as_ref()), ("system.network.errors", "{error}"));
        let r = route(&family("netsight_network_receive_fifo_total")).unwrap();
        assert_eq!(r.name, "netsight.network.receive.fifo");
        assert_eq!(r.inst, Inst::CounterU64);
        let r = route(&family("netsight_udp_sockets")).unwrap();
        assert_eq!(r.name, "system.network.connection.count");
        assert_eq!(r.inst, Inst::UpDown);
        let r = route(&family("netsight_collector_cpu_seconds_total")).unwrap();
        assert_eq!((r.inst, r.unit.as_ref()), (Inst::CounterF64, "s"));
        let r = route(&family("netsight_network_speed_bytes_per_second")).unwrap();
        assert_eq!((r.inst, r.unit.as_ref()), (Inst::Gauge, "By/s"));
        assert!(route(&family("netsight_tcp_rtt_seconds")).is_none());
        assert_eq!(route(&family("netsight_anomaly")).unwrap().name, "netsight.anomaly");
        assert_eq!(
            route(&family("netsight_root_cause")).unwrap().name,
            "netsight.root_cause"
        );
    }

    #[test]
    fn every_catalog_name_is_a_valid_instrument_name() {
        for doc in catalog::all_collectors() {
            for m in doc.metrics {
                let f = Family::new(*m);
                if let Some(r) = route(&f) {
                    assert!(valid_name(&r.name), "{} → {}", m.name, r.name);
                }
            }
        }
    }

    #[test]
    fn connection_attributes() {
        let mut f = family("netsight_tcp_connections");
        f.samples.push(Sample {
            labels: ["ipv6", "fin_wait2"].into_labels(),
            value: Value::Scalar(3.0),
        });
        let r = route(&f).unwrap();
        let a = attributes(&f, &f.samples[0], &r.attrs);
        let kv: Vec<(String, String)> = a.iter().map(|k| (k.key.to_string(), k.value.to_string())).collect();
        assert!(kv.contains(&("network.type".into(), "ipv6".into())), "{kv:?}");
        assert!(kv.contains(&("network.connection.state".into(), "fin_wait_2".into())));
        assert!(kv.contains(&("network.transport".into(), "tcp".into())));
    }
}
