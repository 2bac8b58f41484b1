//! netsight in the Prometheus ecosystem, for real.
//!
//! * `promtool check rules` / `promtool test rules` on alerts/, `amtool check-config`
//!   and `amtool config routes test` on alerts/alertmanager.example.yml;
//! * alerts/netsight.rules.yml is generated from the rule packs and the metric
//!   catalog (module `alertgen`; `NETSIGHT_REGENERATE=1` rewrites it), and covers
//!   every default rule and cause, each with a runbook in docs/runbooks/;
//! * the end-to-end test: netsight (`serve --interval 1s`), Debian's `prometheus` and
//!   `prometheus-alertmanager` all run inside a fresh network namespace; Prometheus
//!   scrapes netsight every second and evaluates alerts/netsight.rules.yml,
//!   Alertmanager runs alerts/alertmanager.example.yml (timings shortened, receivers
//!   pointed at a webhook this test serves). A real fault — a listener with backlog 1
//!   that never accepts, hammered by clients — makes the kernel count accept-queue
//!   overflows, netsight's `tcp_listen_overflow` rule fires with a root cause, and the
//!   alert must reach the webhook with its labels and cause; when the fault stops the
//!   resolved notification must follow. While the fault is active every PromQL query
//!   of every dashboard panel, annotation and template variable must return data.
//!
//! The tools must be installed (scripts/test.sh does: Debian packages `prometheus`
//! and `prometheus-alertmanager`); a missing tool fails the test loudly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serde_yaml::Value as Yaml;

use common::Netns;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

/// The absolute path of `name` on PATH; panics naming the Debian package otherwise.
fn tool(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: these tests need the Debian package `{package}` \
                 (scripts/test.sh installs it: apt-get install {package})"
            )
        })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn yaml(rel: &str) -> Yaml {
    let p = path(rel);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_yaml::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files_with_ext(dir: &str, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(path(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
        })
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------------ static checks

/// Every alerting rule in alerts/netsight.rules.yml: (alert name, rule as YAML).
fn alert_rules() -> Vec<(String, Yaml)> {
    let doc = yaml("alerts/netsight.rules.yml");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().expect("only alerting rules").to_string();
            out.push((name, r.clone()));
        }
    }
    out
}

/// The default rule packs: rule name → (layer, severity, cause names).
fn default_rules() -> BTreeMap<String, (String, String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for f in files_with_ext("rules", &["yaml"]) {
        let doc: Yaml = serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for r in doc["rules"].as_sequence().expect("rules") {
            let causes = r["causes"]
                .as_sequence()
                .map(|c| c.iter().map(|c| c["name"].as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            out.insert(
                r["name"].as_str().unwrap().to_string(),
                (
                    r["layer"].as_str().unwrap().to_string(),
                    r["severity"].as_str().unwrap().to_string(),
                    causes,
                ),
            );
        }
    }
    assert!(out.len() >= 17, "default packs shrank: {:?}", out.keys());
    out
}

#[test]
fn promtool_checks_the_alert_rules() {
    let promtool = tool("promtool", "prometheus");
    let out = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(path("alerts/netsight.rules.yml")));
    let t = text(&out);
    assert!(out.status.success(), "promtool check rules failed:\n{t}");
    let n = alert_rules().len();
    assert!(
        t.contains(&format!("SUCCESS: {n} rules found")),
        "expected {n} rules:\n{t}"
    );
}

#[test]
fn promtool_unit_tests_of_the_alert_rules_pass_and_can_fail() {
    let promtool = tool("promtool", "prometheus");
    let tests = files_with_ext("alerts/tests", &["yml", "yaml"]);
    assert!(!tests.is_empty(), "no promtool tests in alerts/tests");
    for f in &tests {
        let out = run(Command::new(&promtool).arg("test").arg("rules").arg(f));
        let t = text(&out);
        assert!(
            out.status.success() && t.contains("SUCCESS"),
            "promtool test rules {}:\n{t}",
            f.display()
        );
    }
    // The tests compare exact labels and annotations: a changed expectation must fail.
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(&tests[0]).unwrap();
    let rules = path("alerts/netsight.rules.yml");
    let mutated = original
        .replace("../netsight.rules.yml", rules.to_str().unwrap())
        .replacen("cause: backlog_capped_by_somaxconn", "cause: slow_accept", 1);
    assert_ne!(original, mutated, "mutation did not apply");
    let bad = dir.path().join("mutated.yml");
    std::fs::write(&bad, mutated).unwrap();
    let out = run(Command::new(&promtool).arg("test").arg("rules").arg(&bad));
    assert!(
        !out.status.success(),
        "promtool accepted a wrong expectation:\n{}",
        text(&out)
    );
}

#[test]
fn amtool_checks_the_alertmanager_config_and_its_routes() {
    let amtool = tool("amtool", "prometheus-alertmanager");
    let cfg = path("alerts/alertmanager.example.yml");
    let out = run(Command::new(&amtool).arg("check-config").arg(&cfg));
    let t = text(&out);
    assert!(out.status.success(), "amtool check-config failed:\n{t}");
    assert!(t.contains("SUCCESS") && t.contains("2 inhibit rules"), "{t}");
    let cases: &[(&[&str], &str)] = &[
        (
            &["severity=critical", "layer=transport"],
            "netsight-pager,netsight-hosts",
        ),
        (
            &["severity=critical", "layer=firewall"],
            "netsight-pager,netsight-firewall",
        ),
        (&["severity=warning", "layer=link"], "netsight-network"),
        (&["severity=warning", "layer=network"], "netsight-network"),
        (&["severity=warning", "layer=security"], "netsight-hosts"),
        (&["severity=info", "layer=link"], "netsight-tickets"),
        (
            &[
                "severity=warning",
                "alertname=NetsightCollectorDown",
                "component=netsight",
            ],
            "netsight-ops",
        ),
        (
            &[
                "severity=critical",
                "alertname=NetsightTargetDown",
                "component=netsight",
            ],
            "netsight-pager,netsight-ops",
        ),
        (&["severity=warning", "alertname=SomethingElse"], "netsight-ops"),
    ];
    for (labels, want) in cases {
        let out = run(Command::new(&amtool)
            .args(["config", "routes", "test", "--config.file"])
            .arg(&cfg)
            .arg(format!("--verify.receivers={want}"))
            .args(labels.iter()));
        assert!(
            out.status.success(),
            "{labels:?} should route to {want}:\n{}",
            text(&out)
        );
    }
}

#[test]
fn alert_rules_cover_every_default_rule_with_causes_and_runbooks() {
    let rules = default_rules();
    let alerts = alert_rules();
    for (name, (_, _, causes)) in &rules {
        let selector = format!("rule=\"{name}\"");
        let matching: Vec<&(String, Yaml)> = alerts
            .iter()
            .filter(|(_, a)| a["expr"].as_str().unwrap().contains(&selector))
            .collect();
        assert_eq!(matching.len(), 1, "{name}: want exactly one alert selecting {selector}");
        let (alert, a) = matching[0];
        let expr = a["expr"].as_str().unwrap();
        assert!(
            expr.contains("netsight_anomaly") && expr.contains("netsight_root_cause"),
            "{alert}: must join netsight_anomaly with netsight_root_cause"
        );
        assert!(expr.contains("group_left(cause"), "{alert}: must copy the cause label");
        let desc = a["annotations"]["description"].as_str().unwrap();
        for c in causes {
            assert!(
                desc.contains(&format!("eq $labels.cause \"{c}\"")),
                "{alert}: description has no text for cause {c}"
            );
        }
        let described = desc.matches("eq $labels.cause \"").count();
        assert_eq!(
            described,
            causes.len(),
            "{alert}: describes causes {name} does not have"
        );
        assert_eq!(
            a["annotations"]["runbook_url"].as_str(),
            Some(format!("docs/runbooks/{name}.md").as_str()),
            "{alert}: runbook_url"
        );
        assert!(a["annotations"]["summary"].as_str().is_some(), "{alert}: summary");
        // The runbook explains every cause netsight can attach.
        let rb = std::fs::read_to_string(path(&format!("docs/runbooks/{name}.md")))
            .unwrap_or_else(|e| panic!("runbook for {name}: {e}"));
        for c in causes {
            assert!(
                rb.contains(&format!("`{c}`")),
                "docs/runbooks/{name}.md does not explain cause `{c}`"
            );
        }
    }
    let index = std::fs::read_to_string(path("docs/runbooks/README.md")).unwrap();
    for name in rules.keys() {
        assert!(
            index.contains(&format!("[{name}]({name}.md)")),
            "docs/runbooks/README.md does not list {name}"
        );
    }
    // The generic alert excludes exactly the default rules.
    let generic = alerts
        .iter()
        .find(|(n, _)| n == "NetsightAnomaly")
        .expect("generic NetsightAnomaly alert");
    let expr = generic.1["expr"].as_str().unwrap();
    let start = expr.find("rule!~\"").expect("rule!~ matcher") + 7;
    let listed: BTreeSet<&str> = expr[start..start + expr[start..].find('"').unwrap()]
        .split('|')
        .collect();
    let names: BTreeSet<&str> = rules.keys().map(String::as_str).collect();
    assert_eq!(listed, names, "NetsightAnomaly must exclude exactly the default rules");
    // Every runbook_url points at an existing runbook with the expected sections.
    for (alert, a) in &alerts {
        let url = a["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert}: runbook_url"));
        let rb = std::fs::read_to_string(path(url)).unwrap_or_else(|e| panic!("{alert}: {url}: {e}"));
        if url.ends_with("README.md") {
            continue;
        }
        for section in ["## What it means", "## Confirm", "## Causes", "## Fix"] {
            assert!(rb.contains(section), "{url}: missing section {section:?}");
        }
        assert!(rb.contains("```sh"), "{url}: no shell commands to confirm with");
    }
    // Fleet rules the issue asks for.
    for (name, expr) in [
        ("NetsightCollectorDown", "netsight_collector_up == 0"),
        ("NetsightRulesReloadFailed", "netsight_rules_last_reload_success == 0"),
        ("NetsightTargetDown", "up{"),
    ] {
        let a = alerts
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(a.1["expr"].as_str().unwrap().contains(expr), "{name}");
    }
    let collector = alerts.iter().find(|(n, _)| n == "NetsightCollectorDown").unwrap();
    assert_eq!(collector.1["for"].as_str(), Some("5m"));
}

// ------------------------------------------------------------------ the generator

/// alerts/netsight.rules.yml is generated from the rule packs (rules/*.yaml) and
/// netsight's metric catalog, so it follows every rule, cause and text there. The
/// test `alert_rules_are_generated_from_the_rule_packs` fails when the file is stale;
/// `NETSIGHT_REGENERATE=1 cargo test --test e2e_prometheus generated` rewrites it.
mod alertgen {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use serde_yaml::Value as Yaml;

    pub struct Cause {
        pub name: String,
        pub layer: String,
        pub explanation: String,
        pub recommendation: String,
    }

    pub struct Rule {
        pub name: String,
        pub description: String,
        pub layer: String,
        pub severity: String,
        pub unit: Option<String>,
        /// Group labels: `series.by`, or every label of the series' metric.
        pub group: Vec<String>,
        pub vars: BTreeMap<String, String>,
        pub causes: Vec<Cause>,
    }

    /// Metric name → label names, from `netsight catalog`.
    pub fn catalog(bin: &str) -> BTreeMap<String, Vec<String>> {
        let out = std::process::Command::new(bin)
            .arg("catalog")
            .output()
            .expect("netsight catalog");
        assert!(out.status.success(), "netsight catalog failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("catalog JSON");
        v.as_array()
            .expect("catalog array")
            .iter()
            .map(|m| {
                let labels = m["metric"]["labels"]
                    .as_array()
                    .map(|l| l.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                (m["metric"]["name"].as_str().unwrap().to_string(), labels)
            })
            .collect()
    }

    fn one_line(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    pub fn rules(root: &Path, catalog: &BTreeMap<String, Vec<String>>) -> Vec<Rule> {
        let mut files: Vec<_> = std::fs::read_dir(root.join("rules"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let doc: Yaml = serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            for r in doc["rules"].as_sequence().cloned().unwrap_or_default() {
                let s = |k: &str| r[k].as_str().map(one_line).unwrap_or_default();
                let metric = r["series"]["metric"].as_str().unwrap_or_default();
                let group = match r["series"]["by"].as_sequence() {
                    Some(by) => by.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
                    None => catalog.get(metric).cloned().unwrap_or_default(),
                };
                let vars = r["vars"]
                    .as_mapping()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let causes = r["causes"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| Cause {
                        name: c["name"].as_str().unwrap().to_string(),
                        layer: c["layer"].as_str().unwrap_or("").to_string(),
                        explanation: c["explanation"].as_str().map(one_line).unwrap_or_default(),
                        recommendation: c["recommendation"].as_str().map(one_line).unwrap_or_default(),
                    })
                    .collect();
                out.push(Rule {
                    name: s("name"),
                    description: s("description"),
                    layer: s("layer"),
                    severity: s("severity"),
                    unit: r["unit"].as_str().map(String::from),
                    group,
                    vars,
                    causes,
                });
            }
        }
        out
    }

    pub fn alert_name(rule: &str) -> String {
        let mut s = String::from("Netsight");
        for p in rule.split('_') {
            let mut c = p.chars();
            if let Some(f) = c.next() {
                s.extend(f.to_uppercase());
                s.push_str(c.as_str());
            }
        }
        s
    }

    /// Go template pipeline and suffix that format a value of `unit`.
    fn format(unit: Option<&str>) -> (&'static str, &'static str) {
        match unit {
            Some("ratio") => ("humanizePercentage", ""),
            Some("percent") => (r#"printf "%.1f""#, "%"),
            Some("per_second") => ("humanize", "/s"),
            Some("count") => (r#"printf "%.0f""#, ""),
            Some("bytes") => ("humanize1024", "B"),
            Some("bytes_per_second") => ("humanize1024", "B/s"),
            Some("bits_per_second") => ("humanize", "bit/s"),
            Some("seconds") => ("humanizeDuration", ""),
            _ => ("humanize", ""),
        }
    }

    /// `{{ with printf `SELECTOR` ARGS | query }}…{{ else }}?{{ end }}`
    fn query(selector: &str, args: &[String], (pipe, suffix): (&str, &str)) -> String {
        format!(
            "{{{{ with printf `{selector}` {} | query }}}}{{{{ . | first | value | {pipe} }}}}{suffix}{{{{ else }}}}?{{{{ end }}}}",
            args.join(" ")
        )
    }

    /// `instance=%q,l1=%q…` and its arguments, for `labels`.
    fn matchers(labels: &[String]) -> (String, Vec<String>) {
        let mut sel = String::from("instance=%q");
        let mut args = vec!["$labels.instance".to_string()];
        for l in labels {
            sel.push_str(&format!(",{l}=%q"));
            args.push(format!("$labels.{l}"));
        }
        (sel, args)
    }

    fn rule_value(rule: &Rule, metric: &str, extra: &str) -> String {
        let (m, mut a) = matchers(&rule.group);
        let mut args = vec![format!("{:?}", rule.name)];
        args.append(&mut a);
        query(
            &format!("{metric}{{rule=%q,{m}{extra}}}"),
            &args,
            format(rule.unit.as_deref()),
        )
    }

    fn evidence(
        key: &str,
        rule: &Rule,
        all: &BTreeMap<&str, &Rule>,
        catalog: &BTreeMap<String, Vec<String>>,
    ) -> String {
        let resolve = |k: &str| -> Option<String> {
            if k.starts_with("netsight_") {
                Some(k.to_string())
            } else {
                rule.vars.get(k).cloned()
            }
        };
        let common = |metric: &str| -> Vec<String> {
            let has: BTreeSet<&String> = catalog.get(metric).map(|l| l.iter().collect()).unwrap_or_default();
            rule.group.iter().filter(|l| has.contains(l)).cloned().collect()
        };
        if let Some(other) = key.strip_prefix("rule ").and_then(|k| k.strip_suffix(" value")) {
            let unit = all.get(other).and_then(|r| r.unit.as_deref());
            return query(
                &format!("max(netsight_rule_value{{rule=\"{other}\",instance=%q}})"),
                &["$labels.instance".to_string()],
                format(unit),
            );
        }
        if let Some(inner) = key.strip_prefix("rate(").and_then(|k| k.strip_suffix(')')) {
            if let Some(m) = resolve(inner) {
                let (sel, args) = matchers(&common(&m));
                // The texts carry their own "/s", as netsight prints evidence unitless.
                return query(&format!("sum(rate({m}{{{sel}}}[1m]))"), &args, ("humanize", ""));
            }
            return "?".into();
        }
        match resolve(key) {
            Some(m) => {
                let (sel, args) = matchers(&common(&m));
                let f = if m.ends_with("_bytes") {
                    format(Some("bytes"))
                } else {
                    format(Some("count"))
                };
                query(&format!("sum({m}{{{sel}}})"), &args, f)
            }
            None => "?".into(),
        }
    }

    /// netsight's `{{ … }}` placeholders as Prometheus template expressions.
    fn translate(
        text: &str,
        rule: &Rule,
        all: &BTreeMap<&str, &Rule>,
        catalog: &BTreeMap<String, Vec<String>>,
    ) -> String {
        let re = regex::Regex::new(r"\{\{\s*(.*?)\s*\}\}").unwrap();
        re.replace_all(text, |c: &regex::Captures| {
            let key = &c[1];
            if let Some(l) = key.strip_prefix("labels.") {
                format!("{{{{ $labels.{l} }}}}")
            } else if key == "value" {
                rule_value(rule, "netsight_rule_value", "")
            } else if key == "baseline" {
                rule_value(rule, "netsight_baseline", ",bound=\"expected\"")
            } else if let Some(e) = key.strip_prefix("evidence.") {
                evidence(e, rule, all, catalog)
            } else {
                "?".into()
            }
        })
        .into_owned()
    }

    fn sentence(s: &str) -> String {
        let s = s.trim();
        if s.ends_with(['.', '!', '?']) {
            s.to_string()
        } else {
            format!("{s}.")
        }
    }

    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    fn indent(text: &str, n: usize) -> String {
        let pad = " ".repeat(n);
        text.lines()
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{pad}{l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn join_expr(selector: &str) -> String {
        format!(
            "(netsight_anomaly{selector} == 1)\n  * ignoring(layer, cause, cause_layer) group_left(cause, cause_layer)\n    \
             label_replace(netsight_root_cause{selector}, \"cause_layer\", \"$1\", \"layer\", \"(.*)\")\n\
             or ignoring(cause, cause_layer)\n  \
             label_replace(netsight_anomaly{selector} == 1, \"cause\", \"unidentified\", \"rule\", \".*\")"
        )
    }

    fn rule_alert(rule: &Rule, all: &BTreeMap<&str, &Rule>, catalog: &BTreeMap<String, Vec<String>>) -> String {
        let tr = |t: &str| translate(t, rule, all, catalog);
        let group: Vec<String> = rule
            .group
            .iter()
            .map(|l| format!("{l}={{{{ $labels.{l} }}}}"))
            .collect();
        let at = if group.is_empty() {
            String::new()
        } else {
            format!(" {}", group.join(" "))
        };
        let mut desc = vec![
            format!("{{{{ $labels.instance }}}}{at}: {}", sentence(&rule.description)),
            format!(
                "Rule {} ({} layer, {}), current value {}.",
                rule.name,
                rule.layer,
                rule.severity,
                rule_value(rule, "netsight_rule_value", "")
            ),
        ];
        let mut branches = Vec::new();
        for (i, c) in rule.causes.iter().enumerate() {
            let head = if i == 0 { "{{ if" } else { "{{- else if" };
            branches.push(format!(
                "{head} eq $labels.cause {:?} -}}}}\nRoot cause {} ({} layer): {}\nRecommendation: {}",
                c.name,
                c.name,
                c.layer,
                sentence(&tr(&c.explanation)),
                sentence(&tr(&c.recommendation)),
            ));
        }
        let fallback = "Root cause {{ $labels.cause }}: not one this alert knows; the explanation and evidence are in \
                        netsight's event log.";
        if branches.is_empty() {
            desc.push(fallback.to_string());
        } else {
            branches.push(format!("{{{{- else -}}}}\n{fallback}"));
            branches.push("{{- end }}".to_string());
            desc.push(branches.join("\n"));
        }
        desc.push("Event log: http://{{ $labels.instance }}/api/v1/events".to_string());
        let values: Vec<String> = rule.group.iter().map(|l| format!("{{{{ $labels.{l} }}}}")).collect();
        let on = if values.is_empty() {
            String::new()
        } else {
            format!(" [{}]", values.join(" "))
        };
        let summary = format!(
            "{} on {{{{ $labels.instance }}}}{on} ({{{{ $labels.cause }}}})",
            rule.description
                .split(['(', '.', ':', ';'])
                .next()
                .unwrap()
                .trim()
                .trim_end_matches(',')
        );
        [
            format!("      - alert: {}", alert_name(&rule.name)),
            "        expr: |-".to_string(),
            indent(&join_expr(&format!("{{rule=\"{}\"}}", rule.name)), 10),
            "        labels:".to_string(),
            "          component: netsight".to_string(),
            "        annotations:".to_string(),
            format!("          summary: {}", quote(&summary)),
            "          description: |-".to_string(),
            indent(&desc.join("\n"), 12),
            format!("          runbook_url: docs/runbooks/{}.md", rule.name),
        ]
        .join("\n")
    }

    pub fn render(rules: &[Rule], catalog: &BTreeMap<String, Vec<String>>) -> String {
        let all: BTreeMap<&str, &Rule> = rules.iter().map(|r| (r.name.as_str(), r)).collect();
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let mut out = String::from(HEADER);
        out.push_str("groups:\n  - name: netsight-anomalies\n    rules:\n");
        for r in rules {
            out.push_str(&rule_alert(r, &all, catalog));
            out.push_str("\n\n");
        }
        out.push_str(&GENERIC.replace("DEFAULT_RULES", &names.join("|")));
        out.push('\n');
        out.push_str(FLEET);
        out
    }

    const HEADER: &str = "\
# Prometheus alerting rules for netsight. GENERATED from the rule packs (rules/*.yaml)
# and netsight's metric catalog by tests/e2e_prometheus.rs; do not edit by hand:
#   NETSIGHT_REGENERATE=1 cargo test --test e2e_prometheus generated
# (then NETSIGHT_REGENERATE=1 cargo test --test deploy prometheusrule for the
# Kubernetes PrometheusRule). A test fails while this file is stale.
#
# netsight decides *when* something is anomalous (thresholds, learned baselines,
# for/until hysteresis, keep_firing_for) and *why* (root-cause analysis). These
# alerts forward that decision: one alert per default rule, firing while
# `netsight_anomaly{rule} == 1`, joined with `netsight_root_cause` for the cause
# netsight attached. No `for:` here: netsight already debounced it.
#
# Labels of a rule alert:
#   rule, severity, layer   from netsight_anomaly (layer = the rule's layer)
#   instance, job           from the scrape, plus the rule's group labels
#                           (device, cpu, port, process, ...)
#   cause                   the root cause's name (netsight_root_cause), or
#                           \"unidentified\" when netsight attached none
#   cause_layer             the layer of that cause (netsight_root_cause's `layer`)
#   component=\"netsight\"
#
# The cause's explanation and recommendation *text* are not labels (they contain
# changing numbers and would churn series); netsight serves them in its event log,
# GET http://<instance>/api/v1/events. The descriptions below carry each cause's
# text from rules/*.yaml instead, their {{ value }}/{{ evidence.* }} placeholders
# turned into `query` lookups of the same series on the alert's instance, and link
# to the event log. The NetsightAnomaly alert covers rules outside the default packs.
#
# runbook_url is the runbook's path in this repository (docs/runbooks/<rule>.md);
# prefix it with where you host the docs when you install the file, e.g.
#   sed 's#runbook_url: docs/#runbook_url: https://git.example.com/netsight/-/blob/main/docs/#'
#
# Checked by `promtool check rules`, unit-tested by `promtool test rules
# alerts/tests/*.yml`, and loaded into a real Prometheus that scrapes netsight
# during an injected fault (all in tests/e2e_prometheus.rs).
";

    const GENERIC: &str = r#"      # Rules outside the default packs (your own rules.d files): generic text.
      - alert: NetsightAnomaly
        expr: |-
          (netsight_anomaly{rule!~"DEFAULT_RULES"} == 1)
            * ignoring(layer, cause, cause_layer) group_left(cause, cause_layer)
              label_replace(netsight_root_cause, "cause_layer", "$1", "layer", "(.*)")
          or ignoring(cause, cause_layer)
            label_replace(netsight_anomaly{rule!~"DEFAULT_RULES"} == 1, "cause", "unidentified", "rule", ".*")
        labels:
          component: netsight
        annotations:
          summary: 'netsight rule {{ $labels.rule }} fires on {{ $labels.instance }} ({{ $labels.cause }})'
          description: |-
            {{ $labels.instance }}: netsight rule {{ $labels.rule }} ({{ $labels.layer }} layer, {{ $labels.severity }}) fires; root cause {{ $labels.cause }}{{ with $labels.cause_layer }} ({{ . }} layer){{ end }}.
            The cause's explanation, recommendation and evidence are in netsight's event log: http://{{ $labels.instance }}/api/v1/events
          runbook_url: docs/runbooks/README.md
"#;

    const FLEET: &str = r#"  - name: netsight-fleet
    rules:
      - alert: NetsightTargetDown
        expr: up{job=~"netsight.*"} == 0
        for: 2m
        labels:
          rule: netsight_target_down
          severity: critical
          component: netsight
        annotations:
          summary: 'netsight on {{ $labels.instance }} cannot be scraped'
          description: |-
            Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) for 2 minutes: the daemon is down, or the port is blocked. No netsight anomaly alert can fire for this host meanwhile.
          runbook_url: docs/runbooks/netsight_target_down.md

      - alert: NetsightCollectorDown
        expr: netsight_collector_up == 0
        for: 5m
        labels:
          rule: netsight_collector_down
          severity: warning
          component: netsight
        annotations:
          summary: 'netsight collector {{ $labels.collector }} is down on {{ $labels.instance }}'
          description: |-
            {{ $labels.instance }}: collector {{ $labels.collector }} has been failing, timing out or unavailable for 5 minutes; its metrics and the rules that read them are missing. The reason is in the daemon's log (logged once). Disable a collector that can never work on this host (collectors.{{ $labels.collector }}.enabled: false).
          runbook_url: docs/runbooks/netsight_collector_down.md

      - alert: NetsightRulesReloadFailed
        expr: netsight_rules_last_reload_success == 0
        for: 1m
        labels:
          rule: netsight_rules_reload_failed
          severity: warning
          component: netsight
        annotations:
          summary: 'netsight on {{ $labels.instance }} rejected its rule files'
          description: |-
            {{ $labels.instance }}: the last rule (re)load failed; netsight keeps evaluating the previous good rules ({{ with printf "netsight_rules_loaded{instance=%q}" $labels.instance | query }}{{ . | first | value }}{{ end }} loaded). The log names the file, line and column; `netsight rules check FILE` reproduces it.
          runbook_url: docs/runbooks/netsight_rules_reload_failed.md

      - alert: NetsightRuleErrors
        expr: increase(netsight_rule_errors_total[10m]) > 0
        labels:
          # no static `rule` label here: the series' own `rule` names the failing rule
          severity: warning
          component: netsight
        annotations:
          summary: 'netsight rule {{ $labels.rule }} fails to evaluate on {{ $labels.instance }}'
          description: |-
            {{ $labels.instance }}: rule {{ $labels.rule }} had {{ $value | humanize }} failed evaluations in 10 minutes (expression errors); it cannot fire while it fails.
          runbook_url: docs/runbooks/netsight_rule_errors.md

      - alert: NetsightSnapshotStale
        expr: time() - netsight_snapshot_timestamp_seconds > 60
        for: 2m
        labels:
          rule: netsight_snapshot_stale
          severity: warning
          component: netsight
        annotations:
          summary: 'netsight on {{ $labels.instance }} serves a stale snapshot'
          description: |-
            {{ $labels.instance }}: the snapshot being served is {{ $value | humanizeDuration }} old: collection is stuck or starved (CPU budget, hung collector) while the HTTP server still answers.
          runbook_url: docs/runbooks/netsight_snapshot_stale.md
"#;
}

#[test]
fn alert_rules_are_generated_from_the_rule_packs() {
    let catalog = alertgen::catalog(env!("CARGO_BIN_EXE_netsight"));
    let rules = alertgen::rules(Path::new(ROOT), &catalog);
    let want = alertgen::render(&rules, &catalog);
    let file = path("alerts/netsight.rules.yml");
    if std::env::var_os("NETSIGHT_REGENERATE").is_some() {
        std::fs::write(&file, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&file).unwrap_or_default();
    if have != want {
        let first = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(have.lines().count().min(want.lines().count()));
        panic!(
            "alerts/netsight.rules.yml is stale (the rule packs or the catalog changed; first difference at \
             line {}): regenerate with\n  NETSIGHT_REGENERATE=1 cargo test --test e2e_prometheus generated\n  \
             NETSIGHT_REGENERATE=1 cargo test --test deploy prometheusrule",
            first + 1
        );
    }
}

// ------------------------------------------------------------------ processes

/// A child process, stopped with SIGTERM (then SIGKILL) when dropped. Its output
/// goes to `log`, printed when the test panics.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(name: &'static str, ns: &str, argv: &[&str], log: PathBuf) -> Proc {
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!("---- last lines of {} ({}):", self.name, self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        // `ip netns exec` execs the program: the pid is the program's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ------------------------------------------------------------------ HTTP

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 request (no chunked replies to decode): (status, body).
fn http(addr: &str, method: &str, target: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let t = String::from_utf8_lossy(&buf);
    let (head, body) = t.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn get_json(addr: &str, target: &str) -> Option<Value> {
    match http(addr, "GET", target, None)? {
        (200, b) => serde_json::from_str(&b).ok(),
        _ => None,
    }
}

/// The webhook receiver Alertmanager delivers to: records every POSTed JSON body,
/// with the request path (the receiver name) added as `_path`.
struct Webhook {
    received: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    fn start(addr: &str) -> Webhook {
        let listener = TcpListener::bind(addr).expect("bind webhook");
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Some(v) = Self::handle(s) {
                            r.lock().unwrap().push(v);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Webhook {
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn handle(mut s: TcpStream) -> Option<Value> {
        s.set_nonblocking(false).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = s.shutdown(Shutdown::Both);
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut v: Value = serde_json::from_slice(&buf[head_end..head_end + len]).ok()?;
        v["_path"] = json!(path);
        Some(v)
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// (receiver, status, alert) for every alert delivered so far.
    fn alerts(&self) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for n in self.received() {
            let receiver = n["receiver"].as_str().unwrap_or("").to_string();
            for a in n["alerts"].as_array().cloned().unwrap_or_default() {
                out.push((receiver.clone(), a["status"].as_str().unwrap_or("").to_string(), a));
            }
        }
        out
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------ the fault

/// Accept-queue overflow: a listener with backlog 1 that never accepts, and a
/// client thread that keeps connecting. Once the queue is full every new SYN is
/// dropped and counted in TcpExt ListenOverflows.
struct ListenOverflow {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl ListenOverflow {
    fn start(port: u16) -> ListenOverflow {
        let listener = listen_with_backlog(port, 1);
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut held = Vec::new();
            let mut attempts = 0;
            while !st.load(Ordering::Relaxed) {
                attempts += 1;
                // Completed handshakes fill the queue and are kept; the rest time out.
                if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                    if held.len() < 16 {
                        held.push(c);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(held);
            drop(listener);
            attempts
        });
        ListenOverflow {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
    }
}

impl Drop for ListenOverflow {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP listener on 127.0.0.1:port with an explicit listen() backlog (std uses 128).
fn listen_with_backlog(port: u16, backlog: i32) -> TcpListener {
    // SAFETY: plain socket calls on a descriptor this function owns; it is wrapped in
    // a TcpListener (which closes it) before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let rc = libc::bind(
            listener.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let rc = libc::listen(listener.as_raw_fd(), backlog);
        assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
        listener
    }
}

// ------------------------------------------------------------------ dashboards

/// Grafana variables as the check fills them in: the test's job and instance, every
/// value for multi-value variables (their All value is `.+`), and a 15 s rate window
/// (1 s scrapes) for `$__rate_interval`.
fn substitute(expr: &str) -> String {
    let mut e = expr.to_string();
    for (k, v) in [
        ("$__rate_interval", "15s"),
        ("$job", "netsight"),
        ("$instance", "127.0.0.1:9977"),
        ("$device", ".+"),
        ("$port", ".+"),
        ("$rule", ".+"),
        ("$table", ".+"),
    ] {
        e = e.replace(k, v);
    }
    assert!(!e.contains('$'), "unknown Grafana variable left in {expr:?}");
    e
}

/// Every PromQL query of every dashboard: (where, query, label the result must have).
fn dashboard_queries() -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    let files = files_with_ext("dashboards", &["json"]);
    assert!(files.len() >= 5, "dashboards missing: {files:?}");
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for a in d["annotations"]["list"].as_array().unwrap() {
            if let Some(e) = a["expr"].as_str() {
                out.push((format!("{name} annotation {:?}", a["name"]), e.to_string(), None));
            }
        }
        let mut panels: Vec<Value> = d["panels"].as_array().unwrap().clone();
        while let Some(p) = panels.pop() {
            panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                let e = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} panel {:?}: target without expr", p["title"]));
                out.push((
                    format!("{name} panel {:?} {}", p["title"], t["refId"]),
                    e.to_string(),
                    None,
                ));
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"]["query"].as_str().expect("variable query");
            // label_values(SELECTOR, LABEL) → query SELECTOR, require LABEL.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{name} ${}: not label_values(): {q}", v["name"]));
            let (sel, label) = inner.rsplit_once(',').unwrap();
            out.push((
                format!("{name} variable ${}", v["name"].as_str().unwrap()),
                sel.trim().to_string(),
                Some(label.trim().to_string()),
            ));
        }
    }
    out
}

/// `None` when the query has data: at least one series with a finite value (and the
/// required label); otherwise why not.
fn query_has_data(prom: &str, expr: &str, label: Option<&str>) -> Option<String> {
    let q = substitute(expr);
    let Some(v) = get_json(prom, &format!("/api/v1/query?query={}", urlencode(&q))) else {
        return Some("query failed".into());
    };
    if v["status"] != "success" {
        return Some(format!("error: {}", v["error"]));
    }
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    let ok = result.iter().any(|s| {
        let finite = s["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok())
            .is_some_and(f64::is_finite);
        finite && label.is_none_or(|l| s["metric"][l].as_str().is_some_and(|x| !x.is_empty()))
    });
    (!ok).then(|| {
        format!(
            "no data ({} series, none finite{})",
            result.len(),
            if label.is_some() { " with the label" } else { "" }
        )
    })
}

// ------------------------------------------------------------------ the e2e test

const NETSIGHT: &str = "127.0.0.1:9977";
const PROM: &str = "127.0.0.1:9090";
const AM: &str = "127.0.0.1:9093";
const WEBHOOK: &str = "127.0.0.1:5001";
const FAULT_PORT: u16 = 7000;

const NFT_RULESET: &str = r#"
table inet netsight_e2e {
  counter scrapes { }
  set blocklist { type ipv4_addr; size 16; elements = { 192.0.2.1 } }
  chain input {
    type filter hook input priority filter; policy accept;
    ct state established,related counter accept comment "established"
    ip saddr @blocklist counter drop comment "blocklist"
    tcp dport 9977 counter name scrapes counter accept comment "netsight scrapes"
    counter comment "other new"
  }
}
"#;

/// alerts/alertmanager.example.yml with test timings and every receiver replaced by
/// a webhook to this test (path = receiver name). Routes and inhibitions are kept.
fn alertmanager_config() -> String {
    let mut cfg = yaml("alerts/alertmanager.example.yml");
    fn timings(route: &mut Yaml) {
        if let Some(m) = route.as_mapping_mut() {
            for (k, v) in [
                ("group_wait", "1s"),
                ("group_interval", "2s"),
                ("repeat_interval", "1h"),
            ] {
                if m.contains_key(k) || k == "group_wait" {
                    m.insert(Yaml::from(k), Yaml::from(v));
                }
            }
        }
        if let Some(rs) = route["routes"].as_sequence_mut() {
            for r in rs {
                timings(r);
            }
        }
    }
    timings(&mut cfg["route"]);
    cfg["route"]["group_interval"] = Yaml::from("2s");
    for r in cfg["receivers"].as_sequence_mut().expect("receivers") {
        let name = r["name"].as_str().unwrap().to_string();
        let webhook: Yaml = serde_yaml::from_str(&format!(
            "name: {name}\nwebhook_configs:\n  - url: http://{WEBHOOK}/{name}\n    send_resolved: true\n"
        ))
        .unwrap();
        *r = webhook;
    }
    serde_yaml::to_string(&cfg).unwrap()
}

fn prometheus_config() -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{AM}']\n\
         scrape_configs:\n  - job_name: netsight\n    static_configs:\n      - targets: ['{NETSIGHT}']\n",
        path("alerts/netsight.rules.yml").display()
    )
}

#[test]
fn fault_alerts_through_prometheus_and_alertmanager_and_dashboards_have_data() {
    let prometheus = tool("prometheus", "prometheus");
    let alertmanager = tool("prometheus-alertmanager", "prometheus-alertmanager");
    let nft = tool("nft", "nftables");
    let queries = dashboard_queries();
    let started = Instant::now();

    let ns = Netns::new("e2ep");
    // A veth pair (interfaces with speed and carrier), an nftables ruleset with rule
    // and named counters and a sized set, conntrack accounting, and a known somaxconn
    // (the alert text quotes it).
    ns.ip(&["link", "add", "e2e0", "type", "veth", "peer", "name", "e2e1"]);
    ns.ip(&["addr", "add", "10.213.0.1/30", "dev", "e2e0"]);
    ns.ip(&["addr", "add", "10.213.0.2/30", "dev", "e2e1"]);
    ns.ip(&["link", "set", "e2e0", "up"]);
    ns.ip(&["link", "set", "e2e1", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("ruleset.nft"), NFT_RULESET).unwrap();
    ns.exec_ok(&[nft.to_str().unwrap(), "-f", d.join("ruleset.nft").to_str().unwrap()]);
    ns.exec_ok(&["sysctl", "-qw", "net.core.somaxconn=1024"]);
    ns.exec_ok(&["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"]);
    std::fs::write(d.join("prometheus.yml"), prometheus_config()).unwrap();
    std::fs::write(d.join("alertmanager.yml"), alertmanager_config()).unwrap();

    let name = ns.name.clone();
    ns.enter(move || {
        let p = |s: &str| d.join(s).to_str().unwrap().to_string();
        let webhook = Webhook::start(WEBHOOK);
        let _netsight = Proc::start(
            "netsight",
            &name,
            &[env!("CARGO_BIN_EXE_netsight"), "serve", "--listen", NETSIGHT, "--interval", "1s"],
            d.join("netsight.log"),
        );
        let _am = Proc::start(
            "alertmanager",
            &name,
            &[
                alertmanager.to_str().unwrap(),
                &format!("--config.file={}", p("alertmanager.yml")),
                &format!("--storage.path={}", p("am-data")),
                &format!("--web.listen-address={AM}"),
                "--cluster.listen-address=",
            ],
            d.join("alertmanager.log"),
        );
        let _prom = Proc::start(
            "prometheus",
            &name,
            &[
                prometheus.to_str().unwrap(),
                &format!("--config.file={}", p("prometheus.yml")),
                &format!("--storage.tsdb.path={}", p("tsdb")),
                &format!("--web.listen-address={PROM}"),
            ],
            d.join("prometheus.log"),
        );
        let ready = |addr: &str, path: &str| http(addr, "GET", path, None).is_some_and(|r| r.0 == 200);
        wait_for("netsight /healthz", Duration::from_secs(30), || ready(NETSIGHT, "/healthz").then_some(()));
        wait_for("alertmanager ready", Duration::from_secs(30), || ready(AM, "/-/ready").then_some(()));
        wait_for("prometheus ready", Duration::from_secs(30), || ready(PROM, "/-/ready").then_some(()));

        // Inhibition, straight from the example config: a link-layer alert mutes the
        // transport-layer alerts of its instance, and only those.
        let probes = json!([
            {"labels": {"alertname": "ProbeLink", "layer": "link", "severity": "warning", "instance": "probe-a:9977"}},
            {"labels": {"alertname": "ProbeTransport", "layer": "transport", "severity": "warning", "instance": "probe-a:9977"}},
            {"labels": {"alertname": "ProbeTransport", "layer": "transport", "severity": "warning", "instance": "probe-b:9977"}},
            {"labels": {"alertname": "ProbeLinkInfo", "layer": "link", "severity": "info", "instance": "probe-c:9977"}},
            {"labels": {"alertname": "ProbeTransport", "layer": "transport", "severity": "warning", "instance": "probe-c:9977"}}
        ]);
        let r = http(AM, "POST", "/api/v2/alerts", Some(&probes.to_string())).expect("post probe alerts");
        assert_eq!(r.0, 200, "alertmanager refused the probe alerts: {}", r.1);

        // Prometheus scrapes netsight: the target is up.
        wait_for("the netsight target to be up", Duration::from_secs(30), || {
            let v = get_json(PROM, "/api/v1/targets")?;
            let t = v["data"]["activeTargets"].as_array()?.iter().find(|t| t["labels"]["job"] == "netsight")?.clone();
            (t["health"] == "up" && t["scrapeUrl"] == format!("http://{NETSIGHT}/metrics")).then_some(())
        });
        let up = get_json(PROM, "/api/v1/query?query=up%7Bjob%3D%22netsight%22%7D").unwrap();
        assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
        assert!(
            !webhook.alerts().iter().any(|(_, _, a)| a["labels"]["alertname"] == "NetsightTcpListenOverflow"),
            "alert fired before the fault"
        );

        // The fault.
        let mut fault = ListenOverflow::start(FAULT_PORT);
        let fault_started = Instant::now();
        let firing = wait_for("the firing NetsightTcpListenOverflow notification", Duration::from_secs(90), || {
            webhook
                .alerts()
                .into_iter()
                .find(|(_, s, a)| s == "firing" && a["labels"]["alertname"] == "NetsightTcpListenOverflow")
        });
        eprintln!("firing notification {:?} after the fault started", fault_started.elapsed());
        let a = &firing.2;
        let labels = &a["labels"];
        // The listener has backlog 1 while somaxconn would allow 1024: netsight
        // attributes the overflow to the application's small backlog.
        for (k, v) in [
            ("rule", "tcp_listen_overflow"),
            ("severity", "critical"),
            ("layer", "transport"),
            ("cause", "app_backlog_small"),
            ("cause_layer", "application"),
            ("instance", NETSIGHT),
            ("job", "netsight"),
            ("address", "127.0.0.1"),
            ("port", "7000"),
            ("family", "ipv4"),
        ] {
            assert_eq!(labels[k], v, "label {k} of {a}");
        }
        // The listener appeared after netsight's last process scan (process_refresh),
        // so it may still be "unknown"; attribution itself is tested in tests/deploy.rs.
        let process = labels["process"].as_str().unwrap_or("");
        assert!(!process.is_empty(), "no process label: {a}");
        let desc = a["annotations"]["description"].as_str().unwrap_or("");
        assert!(
            desc.contains(&format!(
                "Root cause app_backlog_small (application layer): {process} listens on port 7000 with a backlog of 1 \
                 (net.core.somaxconn would allow 1024)"
            )) && desc.contains(&format!("Recommendation: raise the listen() backlog of {process}: 1 → 1024")),
            "description: {desc}"
        );
        assert!(!desc.contains('?'), "a value in the description was not found: {desc}");
        assert_eq!(a["annotations"]["runbook_url"], "docs/runbooks/tcp_listen_overflow.md");
        // Routed by severity (pager) and, with continue, by layer (hosts team).
        wait_for("the alert at both the pager and the hosts receiver", Duration::from_secs(30), || {
            let got: BTreeSet<String> = webhook
                .alerts()
                .into_iter()
                .filter(|(_, s, a)| s == "firing" && a["labels"]["alertname"] == "NetsightTcpListenOverflow")
                .map(|(r, _, _)| r)
                .collect();
            (got.contains("netsight-pager") && got.contains("netsight-hosts")).then_some(())
        });

        // netsight's event log has the explanation, in Grafana's annotation shape.
        let events = get_json(NETSIGHT, "/api/v1/events").expect("events");
        let ev = events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["title"] == "tcp_listen_overflow")
            .unwrap_or_else(|| panic!("no tcp_listen_overflow event: {events}"));
        assert!(ev["time"].as_i64().is_some_and(|t| t > 1_600_000_000_000), "{ev}");
        assert!(
            ev["tags"].as_array().unwrap().contains(&json!("cause:app_backlog_small")),
            "{ev}"
        );
        assert!(ev["cause"]["explanation"].as_str().unwrap().contains("backlog of 1"), "{ev}");

        // Every dashboard query has data while the fault is active.
        let mut missing: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            missing.clear();
            for (where_, q, label) in &queries {
                if let Some(why) = query_has_data(PROM, q, label.as_deref()) {
                    missing.push(format!("{where_}: {why}\n    {}", substitute(q).replace('\n', " ")));
                }
            }
            if missing.is_empty() || Instant::now() > deadline {
                break;
            }
            eprintln!("{} dashboard queries without data yet, e.g. {}", missing.len(), missing[0]);
            std::thread::sleep(Duration::from_secs(2));
        }
        assert!(
            missing.is_empty(),
            "{} of {} dashboard queries have no data:\n{}",
            missing.len(),
            queries.len(),
            missing.join("\n")
        );
        eprintln!("all {} dashboard queries have data", queries.len());

        // The inhibition took effect.
        let am_alerts = get_json(AM, "/api/v2/alerts").expect("alertmanager alerts");
        let probe = |instance: &str| {
            am_alerts
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["labels"]["alertname"] == "ProbeTransport" && a["labels"]["instance"] == instance)
                .unwrap_or_else(|| panic!("probe {instance} missing: {am_alerts}"))
                .clone()
        };
        let muted = probe("probe-a:9977");
        assert_eq!(muted["status"]["state"], "suppressed", "{muted}");
        assert!(!muted["status"]["inhibitedBy"].as_array().unwrap().is_empty(), "{muted}");
        for instance in ["probe-b:9977", "probe-c:9977"] {
            // Another instance, or an info-level link alert: not muted.
            let other = probe(instance);
            assert_eq!(other["status"]["state"], "active", "{other}");
        }

        // Stop the fault: the resolved notification follows.
        let overflows = get_json(
            PROM,
            &format!("/api/v1/query?query={}", urlencode("netsight_netstat_tcpext_listen_overflows_total")),
        )
        .expect("overflow counter");
        let n: f64 = overflows["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(n > 0.0, "the kernel counted no ListenOverflows: {overflows}");
        let attempts = fault.stop();
        let stopped = Instant::now();
        eprintln!("fault: {attempts} connection attempts, {n} listen overflows");
        wait_for("the resolved NetsightTcpListenOverflow notification", Duration::from_secs(90), || {
            webhook
                .alerts()
                .into_iter()
                .find(|(_, s, a)| s == "resolved" && a["labels"]["alertname"] == "NetsightTcpListenOverflow")
        });
        eprintln!("resolved notification {:?} after the fault stopped", stopped.elapsed());

        let delivered = webhook.alerts();
        assert!(
            delivered
                .iter()
                .any(|(r, _, a)| r == "netsight-hosts" && a["labels"]["instance"] == "probe-b:9977"),
            "the uninhibited probe was not delivered"
        );
        assert!(
            !delivered
                .iter()
                .any(|(_, _, a)| a["labels"]["alertname"] == "ProbeTransport" && a["labels"]["instance"] == "probe-a:9977"),
            "an inhibited alert was delivered"
        );
    });
    drop(ns);
    eprintln!("end-to-end test took {:?}", started.elapsed());
}
