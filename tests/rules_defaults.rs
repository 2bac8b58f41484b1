//! The default rule packs (rules/*.yaml): their unit tests pass, every rule has a
//! case that fires and one on ordinary traffic that stays silent, every value a
//! cause's text quotes is one its condition reads, and every kernel counter they
//! name exists on this kernel (names under netsight_netstat_/netsight_sockstat_
//! are generated from the kernel's files, so `rules check` cannot catch a typo).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_yaml::Value;

const BIN: &str = env!("CARGO_BIN_EXE_netsight");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn rule_files() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(format!("{ROOT}/rules"))
        .expect("rules/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).expect("read rule file"),
            )
        })
        .collect();
    v.sort();
    v
}

/// name → rule mapping of every default rule.
fn rules() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (f, text) in rule_files() {
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        for r in doc["rules"].as_sequence().expect("rules:") {
            out.insert(r["name"].as_str().expect("name").to_string(), r.clone());
        }
    }
    out
}

#[test]
fn default_rule_unit_tests_pass() {
    let out = Command::new(BIN)
        .args(["rules", "test", &format!("{ROOT}/tests/rules/defaults.test.yaml")])
        .output()
        .expect("run netsight rules test");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_default_rule_has_a_firing_and_a_silent_case() {
    let text = std::fs::read_to_string(format!("{ROOT}/tests/rules/defaults.test.yaml")).expect("read");
    let doc: Value = serde_yaml::from_str(&text).expect("yaml");
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for case in doc["tests"].as_sequence().expect("tests") {
        let mut per_rule: BTreeMap<String, Vec<bool>> = BTreeMap::new();
        for e in case["expect"].as_sequence().expect("expect") {
            let rule = e["rule"].as_str().expect("rule").to_string();
            per_rule
                .entry(rule)
                .or_default()
                .push(e["firing"].as_bool().expect("firing"));
        }
        for (rule, firing) in per_rule {
            if firing.iter().any(|f| *f) {
                fires.insert(rule);
            } else {
                // A case in which the rule is expected silent throughout.
                silent.insert(rule);
            }
        }
    }
    let names: BTreeSet<String> = rules().into_keys().collect();
    let no_fire: Vec<_> = names.difference(&fires).collect();
    let no_silent: Vec<_> = names.difference(&silent).collect();
    assert!(no_fire.is_empty(), "default rules without a firing case: {no_fire:?}");
    assert!(
        no_silent.is_empty(),
        "default rules without a silent case: {no_silent:?}"
    );
    let unknown: Vec<_> = fires.union(&silent).filter(|r| !names.contains(*r)).collect();
    assert!(unknown.is_empty(), "tests name rules that do not exist: {unknown:?}");
}

fn placeholders<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        if let Some(k) = after[..j].trim().strip_prefix(prefix) {
            out.push(k);
        }
        rest = &after[j + 2..];
    }
    out
}

#[test]
fn cause_texts_quote_only_what_their_condition_reads() {
    let mut problems = Vec::new();
    for (name, r) in rules() {
        let labels: Vec<String> = r["series"]["by"]
            .as_sequence()
            .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let has_by = r["series"]["by"].is_sequence();
        let mut texts = vec![r["annotation"].as_str().unwrap_or("").to_string()];
        for c in r["causes"].as_sequence().into_iter().flatten() {
            let cname = c["name"].as_str().unwrap_or("?");
            let when = c["when"].as_str().unwrap_or("");
            let target = c["rule"].as_str().map(|t| format!("rule {t} value"));
            for field in ["explanation", "recommendation"] {
                let t = c[field].as_str().unwrap_or("");
                texts.push(t.to_string());
                for k in placeholders(t, "evidence.") {
                    if !(when.contains(k) || target.as_deref() == Some(k)) {
                        problems.push(format!(
                            "{name}/{cname}: {field} quotes evidence `{k}`, which its condition does not read"
                        ));
                    }
                }
            }
        }
        if has_by {
            for t in &texts {
                for l in placeholders(t, "labels.") {
                    if !labels.iter().any(|x| x == l) {
                        problems.push(format!("{name}: text uses labels.{l}, not a group label ({labels:?})"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_kernel_counter_the_packs_name_exists_on_this_kernel() {
    let out = Command::new(BIN)
        .args(["collect", "--once"])
        .output()
        .expect("run netsight collect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exposition = String::from_utf8_lossy(&out.stdout);
    let live: BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let re = regex::Regex::new(r"netsight_(?:netstat|sockstat)_[a-z0-9_]+").expect("regex");
    let mut missing = BTreeSet::new();
    for (f, text) in rule_files() {
        for m in re.find_iter(&text) {
            if !live.contains(m.as_str()) {
                missing.insert(format!("{} ({f})", m.as_str()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "counters named by the default packs that this kernel does not have: {missing:?}"
    );
}
