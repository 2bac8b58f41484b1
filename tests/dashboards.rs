//! The Grafana dashboards in dashboards/: valid against Grafana's own dashboard
//! schema, importable anywhere (datasource as a variable), and every panel complete
//! (description, unit, thresholds) and querying metrics netsight really exports.
//!
//! That every query returns data from a real Prometheus scraping netsight is checked
//! by tests/e2e_prometheus.rs.
//!
//! The schema check runs scripts/validate-dashboards/validate.js (node, with the npm
//! packages that scripts/test.sh installs into scripts/validate-dashboards/node_modules);
//! without them the test fails and says how to install them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn dashboards() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("dashboards"))
        .expect("dashboards/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected at least 5 dashboards: {files:?}");
    files
        .into_iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&f).unwrap();
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
            (name, v)
        })
        .collect()
}

/// Panels, rows' nested panels included.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p.clone());
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    out
}

fn validator() -> (PathBuf, PathBuf) {
    let dir = Path::new(ROOT).join("scripts/validate-dashboards");
    let node = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("node")).find(|p| p.is_file()))
        .expect(
            "`node` is not installed: the dashboard schema check needs Debian's `nodejs` (scripts/test.sh installs it)",
        );
    assert!(
        dir.join("node_modules/@grafana/schema").is_dir()
            && dir.join("node_modules/ts-json-schema-generator").is_dir()
            && dir.join("node_modules/ajv").is_dir(),
        "the schema check's npm packages are missing: run `npm ci --prefix scripts/validate-dashboards` \
         (scripts/test.sh does it)"
    );
    (node, dir.join("validate.js"))
}

#[test]
fn dashboards_validate_against_grafanas_schema_and_broken_ones_do_not() {
    let (node, script) = validator();
    let files: Vec<PathBuf> = dashboards()
        .iter()
        .map(|(n, _)| Path::new(ROOT).join("dashboards").join(n))
        .collect();
    // A broken copy of a real dashboard proves the schema is strict.
    let tmp = tempfile::tempdir().unwrap();
    let mut broken = dashboards()[0].1.clone();
    broken["panels"][1]["gridPos"]["w"] = Value::from("twelve");
    broken["refreshh"] = Value::from("30s");
    let broken_path = tmp.path().join("broken.json");
    std::fs::write(&broken_path, serde_json::to_string(&broken).unwrap()).unwrap();

    let out = Command::new(&node)
        .arg(&script)
        .args(&files)
        .arg(&broken_path)
        .output()
        .expect("run validate.js");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "validate.js should fail only the broken copy:\n{text}"
    );
    for f in &files {
        assert!(
            text.contains(&format!("ok   {}", f.display())),
            "{} invalid:\n{text}",
            f.display()
        );
    }
    assert!(text.contains(&format!("FAIL {}", broken_path.display())), "{text}");
    assert!(text.contains("/panels/1/gridPos/w: must be number"), "{text}");
    assert!(text.contains("(refreshh)"), "{text}");
    assert!(text.contains(&format!("{} passed, 1 failed", files.len())), "{text}");
}

#[test]
fn dashboards_are_importable_and_complete() {
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards() {
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "{name}: schemaVersion < 36"
        );
        let uid = d["uid"].as_str().unwrap_or_else(|| panic!("{name}: uid"));
        assert!(uids.insert(uid.to_string()), "{name}: duplicate uid {uid}");
        assert!(d["title"].as_str().unwrap().starts_with("netsight / "), "{name}: title");
        assert!(
            d["tags"].as_array().unwrap().contains(&Value::from("netsight")),
            "{name}: tag"
        );
        assert!(
            d.get("__inputs").is_none() && d.get("id").is_none_or(Value::is_null),
            "{name}: export artefacts"
        );

        // Variables: the datasource is chosen on import/use, never hard-coded.
        let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        let ds = vars
            .get("datasource")
            .unwrap_or_else(|| panic!("{name}: no $datasource"));
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        for v in ["job", "instance"] {
            let var = vars.get(v).unwrap_or_else(|| panic!("{name}: no ${v}"));
            assert_eq!(var["type"], "query", "{name} ${v}");
            assert_eq!(var["datasource"]["uid"], "${datasource}", "{name} ${v}");
        }
        assert_eq!(vars["instance"]["multi"], true, "{name}: $instance multi-value");

        // Anomaly annotations from Prometheus, titled with rule and cause.
        let ann = d["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["expr"].is_string())
            .unwrap_or_else(|| panic!("{name}: no Prometheus annotation"));
        let expr = ann["expr"].as_str().unwrap();
        assert!(
            expr.contains("netsight_anomaly") && expr.contains("== 1") && expr.contains("netsight_root_cause"),
            "{name}: {expr}"
        );
        let title = ann["titleFormat"].as_str().unwrap();
        assert!(
            title.contains("{{rule}}") && title.contains("{{cause}}"),
            "{name}: titleFormat {title}"
        );
        assert_eq!(
            ann["datasource"]["uid"], "${datasource}",
            "{name}: annotation datasource"
        );
        assert_eq!(ann["enable"], true, "{name}");

        // Panels: description, unit, thresholds, datasource variable, layout.
        let mut ids = BTreeSet::new();
        let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            let id = p["id"].as_u64().unwrap_or_else(|| panic!("{name} {title}: id"));
            assert!(ids.insert(id), "{name}: duplicate panel id {id}");
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
            );
            assert!(x + w <= 24 && w > 0 && h > 0, "{name} {title}: gridPos {g}");
            for cx in x..x + w {
                for cy in y..y + h {
                    if let Some(other) = cells.insert((cx, cy), title.clone()) {
                        panic!("{name}: panels {other:?} and {title:?} overlap at ({cx},{cy})");
                    }
                }
            }
            if p["type"] == "row" {
                continue;
            }
            let desc = p["description"].as_str().unwrap_or("");
            assert!(desc.len() > 20, "{name} {title}: no description");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name} {title}: datasource");
            let defaults = &p["fieldConfig"]["defaults"];
            assert!(
                defaults["unit"].as_str().is_some_and(|u| !u.is_empty()),
                "{name} {title}: no unit"
            );
            let steps = defaults["thresholds"]["steps"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} {title}: no thresholds"));
            assert!(
                !steps.is_empty() && steps[0]["value"].is_null(),
                "{name} {title}: thresholds need a base step"
            );
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} {title}: no targets"));
            assert!(!targets.is_empty(), "{name} {title}: no queries");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{name} {title}: target datasource"
                );
                let e = t["expr"].as_str().unwrap_or_else(|| panic!("{name} {title}: no expr"));
                assert!(
                    e.contains("job=\"$job\"") && e.contains("instance=~\"$instance\""),
                    "{name} {title}: query not scoped to $job/$instance: {e}"
                );
                // Rates follow the scrape interval; only increase() uses a fixed window.
                for range in e.split('[').skip(1).filter_map(|r| r.split_once(']')).map(|r| r.0) {
                    assert!(
                        range == "$__rate_interval" || (range == "5m" && e.contains("increase(")),
                        "{name} {title}: range [{range}] in {e}"
                    );
                }
            }
        }
    }
}

/// Metric names a query uses, with histogram suffixes removed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("netsight_") {
        let start = i + pos;
        let prev_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if prev_ok {
            let m = &expr[start..end];
            let m = m.strip_suffix("_bucket").unwrap_or(m);
            out.insert(m.to_string());
        }
        i = end;
    }
    out
}

#[test]
fn every_metric_the_dashboards_query_exists() {
    // The catalog (fixed names) plus what this host really exports (the dynamic
    // netstat and conntrack-statistics names).
    let bin = env!("CARGO_BIN_EXE_netsight");
    let cat = Command::new(bin).arg("catalog").output().expect("netsight catalog");
    assert!(cat.status.success());
    let catalog: Value = serde_json::from_slice(&cat.stdout).unwrap();
    let mut known: BTreeSet<String> = catalog
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metric"]["name"].as_str().unwrap().to_string())
        .collect();
    let collect = Command::new(bin)
        .args(["collect", "--once"])
        .output()
        .expect("netsight collect");
    assert!(collect.status.success(), "{}", String::from_utf8_lossy(&collect.stderr));
    for l in String::from_utf8_lossy(&collect.stdout).lines() {
        if let Some(n) = l.strip_prefix("# TYPE ").and_then(|r| r.split_whitespace().next()) {
            known.insert(n.to_string());
        }
    }
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/metrics.md")).unwrap();
    let mut used = BTreeSet::new();
    for (name, d) in dashboards() {
        let mut exprs: Vec<String> = d["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["expr"].as_str().map(String::from))
            .collect();
        for p in panels(&d) {
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                exprs.push(t["expr"].as_str().unwrap().to_string());
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if let Some(q) = v["query"]["query"].as_str() {
                exprs.push(q.to_string());
            }
        }
        for e in exprs {
            for m in metric_names(&e) {
                assert!(known.contains(&m), "{name}: unknown metric {m} in {e}");
                used.insert(m);
            }
        }
    }
    // The firewall dashboard covers the nftables metrics (documented in docs/metrics.md).
    for m in [
        "netsight_nftables_rule_packets_total",
        "netsight_nftables_rule_bytes_total",
        "netsight_nftables_counter_packets_total",
        "netsight_nftables_set_elements",
        "netsight_nftables_chain_info",
        "netsight_conntrack_entries",
        "netsight_conntrack_flows",
        "netsight_tcp_rtt_seconds",
        "netsight_tcp_listen_queue_length",
        "netsight_baseline",
        "netsight_anomaly_score",
        "netsight_rule_evaluation_duration_seconds",
        "netsight_rule_errors_total",
    ] {
        assert!(used.contains(m), "no dashboard shows {m}");
        assert!(docs.contains(&format!("`{m}`")), "{m} is not in docs/metrics.md");
    }
}

#[test]
fn dashboards_readme_documents_import_and_the_event_log_datasource() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("dashboards/README.md")).expect("dashboards/README.md");
    for needle in [
        "/api/v1/events",
        "Infinity",
        "${datasource}",
        "provisioning",
        "titleFormat",
    ] {
        assert!(
            readme.contains(needle),
            "dashboards/README.md does not mention {needle}"
        );
    }
    for (name, _) in dashboards() {
        assert!(readme.contains(&name), "dashboards/README.md does not list {name}");
    }
}
