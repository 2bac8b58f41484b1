//! Prometheus text exposition (format 0.0.4), encoded by the `prometheus` crate from
//! the snapshot's families. A snapshot is encoded at most once, by the first scrape
//! that asks for it ([`crate::daemon::Published::text`]); later scrapes share the text.

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use crate::catalog::MetricKind;
use crate::snapshot::{Family, Snapshot, Value};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn to_proto(f: &Family) -> Option<MetricFamily> {
    if f.samples.is_empty() {
        return None;
    }
    let mut mf = MetricFamily::default();
    mf.set_name(f.desc.name.to_string());
    mf.set_help(f.desc.help.to_string());
    mf.set_field_type(match f.desc.kind {
        MetricKind::Counter => MetricType::COUNTER,
        MetricKind::Gauge => MetricType::GAUGE,
        MetricKind::Histogram => MetricType::HISTOGRAM,
    });
    let metrics = f
        .samples
        .iter()
        .map(|s| {
            let mut m = Metric::default();
            m.set_label(
                f.label_names()
                    .into_iter()
                    .zip(s.labels.iter())
                    // An empty value is the same as no label in Prometheus; runtime
                    // families use it for labels a given rule's groups do not have.
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(n, v)| {
                        let mut lp = LabelPair::default();
                        lp.set_name(n.to_string());
                        lp.set_value(v.to_string());
                        lp
                    })
                    .collect(),
            );
            match (&s.value, f.desc.kind) {
                (Value::Scalar(v), MetricKind::Counter) => {
                    let mut c = Counter::default();
                    c.set_value(*v);
                    m.set_counter(c);
                }
                (Value::Scalar(v), _) => {
                    let mut g = Gauge::default();
                    g.set_value(*v);
                    m.set_gauge(g);
                }
                (Value::Histogram(h), _) => {
                    let mut hp = Histogram::default();
                    hp.set_sample_count(h.count);
                    hp.set_sample_sum(h.sum);
                    hp.set_bucket(
                        h.bounds
                            .iter()
                            .zip(&h.cumulative)
                            .map(|(b, c)| {
                                let mut bk = Bucket::default();
                                bk.set_upper_bound(*b);
                                bk.set_cumulative_count(*c);
                                bk
                            })
                            .collect(),
                    );
                    m.set_histogram(hp);
                }
            }
            m
        })
        .collect();
    mf.set_metric(metrics);
    Some(mf)
}

/// Encodes a snapshot as Prometheus text. Families with the same name from
/// different collectors must not exist; the catalog test enforces that.
pub fn encode(snap: &Snapshot) -> Result<String, prometheus::Error> {
    let families: Vec<MetricFamily> = snap.families.iter().filter_map(to_proto).collect();
    let mut buf = Vec::with_capacity(64 * 1024);
    TextEncoder::new().encode(&families, &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{COLLECTOR_ERRORS, COLLECTOR_UP};
    use crate::snapshot::Emitter;

    #[test]
    fn counters_are_typed_and_label_values_escaped() {
        let mut e = Emitter::new();
        e.push(&COLLECTOR_ERRORS, vec!["a\"b\\c\nd"], 3.0);
        e.push(&COLLECTOR_UP, vec!["x"], 1.0);
        let snap = Snapshot::new(std::time::SystemTime::now(), e.into_families());
        let text = encode(&snap).expect("encode");
        assert!(
            text.contains("# TYPE netsight_collector_errors_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"netsight_collector_errors_total{collector="a\"b\\c\nd"} 3"#),
            "{text}"
        );
        assert!(text.contains("# TYPE netsight_collector_up gauge"));
    }
}
