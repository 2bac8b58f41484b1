//! The catalog is the single description of every metric: check its conventions and
//! that the committed docs/metrics.md was generated from it.

use netsight::catalog::{all_collectors, render_markdown, MetricKind};

#[test]
fn docs_metrics_md_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == render_markdown(),
        "docs/metrics.md is stale: run `cargo run -q -- catalog --markdown > docs/metrics.md`"
    );
}

#[test]
fn names_follow_prometheus_conventions_and_are_unique() {
    let mut seen = std::collections::HashSet::new();
    for doc in all_collectors() {
        for m in doc.metrics {
            let n = m.name.as_ref();
            assert!(seen.insert(n.to_string()), "{n} is defined twice");
            assert!(n.starts_with("netsight_"), "{n}: missing prefix");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{n}: not snake_case"
            );
            match m.kind {
                MetricKind::Counter => assert!(n.ends_with("_total"), "{n}: counter without _total"),
                _ => assert!(!n.ends_with("_total"), "{n}: non-counter with _total"),
            }
            if m.unit == "bytes" || m.unit == "seconds" {
                let base = n.trim_end_matches("_total");
                assert!(base.ends_with(m.unit), "{n}: unit {} not in the name", m.unit);
            }
            assert!(!m.help.is_empty(), "{n}: no help");
            assert!(!m.otel_name.is_empty(), "{n}: no OTel name");
        }
    }
}
