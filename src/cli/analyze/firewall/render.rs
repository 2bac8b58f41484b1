//! The text form of the firewall report (aligned tables like `ss`/`ip`).

use super::{Report, RuleRow};

fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    crate::cli::analyze::common::table_indented("", header, rows, right)
}

fn rate(v: Option<f64>) -> String {
    v.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into())
}

fn rule_rows(rows: &[RuleRow], with_rate: bool) -> String {
    let mut header = vec!["FAMILY", "TABLE", "CHAIN", "HANDLE", "VERDICT", "PACKETS", "BYTES"];
    let mut right = vec![3, 5, 6];
    if with_rate {
        header.extend(["PKT/S", "BYTES/S"]);
        right.extend([7, 8]);
    }
    header.push("COMMENT");
    let body = rows
        .iter()
        .map(|r| {
            let mut v = vec![
                r.family.clone(),
                r.table.clone(),
                r.chain.clone(),
                r.handle.to_string(),
                r.verdict.clone(),
                r.packets.to_string(),
                r.bytes.to_string(),
            ];
            if with_rate {
                v.push(rate(r.packets_per_second));
                v.push(rate(r.bytes_per_second));
            }
            v.push(r.comment.clone());
            v
        })
        .collect();
    table(&header, body, &right)
}

pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    if let Some(r) = &report.rules {
        out.push_str(&format!(
            "nf_tables ruleset: generation {}, {} tables, {} chains, {} rules ({} with a counter){}\n\n",
            r.generation,
            r.tables.len(),
            r.chains.len(),
            r.rule_count,
            r.rules_with_counter,
            if r.changed_during_sample {
                "; the ruleset changed during the sample"
            } else {
                ""
            }
        ));
        out.push_str(&table(
            &[
                "FAMILY", "TABLE", "CHAIN", "TYPE", "HOOK", "PRIORITY", "POLICY", "RULES",
            ],
            r.chains
                .iter()
                .map(|c| {
                    vec![
                        c.family.clone(),
                        c.table.clone(),
                        c.chain.clone(),
                        c.chain_type.clone(),
                        c.hook.clone(),
                        c.priority.clone(),
                        c.policy.clone(),
                        c.rules.to_string(),
                    ]
                })
                .collect(),
            &[5, 7],
        ));
        out.push_str("\nTop rules by packets\n");
        if r.top_by_packets.is_empty() {
            out.push_str("  (no rule with a counter has matched)\n");
        } else {
            out.push_str(&rule_rows(&r.top_by_packets, report.sample_seconds.is_some()));
        }
        if let Some(secs) = report.sample_seconds {
            out.push_str(&format!("\nTop rules by rate over {secs:.1}s\n"));
            if r.top_by_rate.is_empty() {
                out.push_str("  (no rule matched during the sample)\n");
            } else {
                out.push_str(&rule_rows(&r.top_by_rate, true));
            }
        }
        out.push_str(&format!(
            "\nRules with a counter that never matched: {}\n",
            r.never_matched.len()
        ));
        if !r.never_matched.is_empty() {
            out.push_str(&rule_rows(&r.never_matched, false));
        }
        out.push_str(&format!(
            "\nShadowed, duplicate or redundant rules: {}\n",
            r.findings.len()
        ));
        if !r.findings.is_empty() {
            out.push_str(&table(
                &["KIND", "FAMILY", "TABLE", "CHAIN", "HANDLE", "BY", "REASON"],
                r.findings
                    .iter()
                    .map(|f| {
                        vec![
                            f.kind.to_string(),
                            f.family.clone(),
                            f.table.clone(),
                            f.chain.clone(),
                            f.handle.to_string(),
                            f.by_handle.to_string(),
                            f.reason.clone(),
                        ]
                    })
                    .collect(),
                &[4, 5],
            ));
        }
    }
    if let Some(c) = &report.conntrack {
        if report.rules.is_some() {
            out.push('\n');
        }
        out.push_str(&format!(
            "conntrack: {} entries of nf_conntrack_max {} ({:.1}%), {} hash buckets\n",
            c.entries, c.max, c.usage_percent, c.buckets
        ));
        match &c.breakdown {
            Some(rows) if rows.is_empty() => out.push_str("breakdown: the table is empty\n"),
            Some(rows) => {
                out.push('\n');
                out.push_str(&table(
                    &["PROTOCOL", "STATE", "ZONE", "ENTRIES"],
                    rows.iter()
                        .map(|f| {
                            vec![
                                f.protocol.clone(),
                                f.state.clone(),
                                f.zone.to_string(),
                                f.entries.to_string(),
                            ]
                        })
                        .collect(),
                    &[2, 3],
                ));
            }
            None => out.push_str(&format!(
                "breakdown: {}\n",
                c.breakdown_note.as_deref().unwrap_or("unavailable")
            )),
        }
        if let Some(s) = &c.stats_since_boot {
            out.push('\n');
            let mut header = vec!["STATISTIC", "SINCE BOOT"];
            if c.stats_during_sample.is_some() {
                header.push("DURING SAMPLE");
            }
            let rows = [
                "insert_failed",
                "drop",
                "early_drop",
                "invalid",
                "error",
                "chain_too_long",
                "clash_resolve",
            ]
            .iter()
            .filter(|k| s.contains_key(**k))
            .map(|k| {
                let mut v = vec![k.to_string(), s[*k].to_string()];
                if let Some(d) = &c.stats_during_sample {
                    v.push(d.get(*k).copied().unwrap_or(0).to_string());
                }
                v
            })
            .collect();
            out.push_str(&table(&header, rows, &[1, 2]));
        }
        out.push_str("\nRecommendations:\n");
        if c.recommendations.is_empty() {
            out.push_str("  none: the table has room and no drops were counted\n");
        }
        for r in &c.recommendations {
            out.push_str(&format!("  - {r}\n"));
        }
    }
    out
}
