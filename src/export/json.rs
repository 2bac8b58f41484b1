//! JSON rendering of a snapshot, for `collect --once --format json` and scripts.

use serde_json::{json, Map, Value as Json};

use crate::snapshot::{Snapshot, Value};

pub fn render(snap: &Snapshot) -> Json {
    let ts = snap
        .taken_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let families: Vec<Json> = snap
        .families
        .iter()
        .filter(|f| !f.samples.is_empty())
        .map(|f| {
            let samples: Vec<Json> = f
                .samples
                .iter()
                .map(|s| {
                    let labels: Map<String, Json> = f
                        .label_names()
                        .into_iter()
                        .zip(s.labels.iter())
                        .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
                        .collect();
                    let value = match &s.value {
                        Value::Scalar(v) => json!(v),
                        Value::Histogram(h) => json!({
                            "count": h.count,
                            "sum": h.sum,
                            "buckets": h.bounds.iter().zip(&h.cumulative)
                                .map(|(b, c)| json!([b, c])).collect::<Vec<_>>(),
                        }),
                    };
                    json!({ "labels": labels, "value": value })
                })
                .collect();
            json!({
                "name": f.desc.name,
                "type": f.desc.kind.as_str(),
                "unit": f.desc.unit,
                "help": f.desc.help,
                "samples": samples,
            })
        })
        .collect();
    json!({ "timestamp": ts, "families": families })
}
