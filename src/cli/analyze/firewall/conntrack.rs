//! The conntrack half of the report: table fill, per-CPU statistics, the flow
//! breakdown, and recommendations that quote the current values.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{increase, ConntrackReport, Failure, FlowRow, Options};
use crate::collect::conntrack::{dump_breakdown, stat_totals, MAX_TRACKED_ADDRESSES};
use crate::collect::CollectContext;
use crate::parse::sysctl::parse_sysctl_values;

pub(super) fn conntrack_loaded(ctx: &CollectContext) -> bool {
    ctx.proc_path("sys/net/netfilter/nf_conntrack_count").exists()
}

fn sysctl(ctx: &CollectContext, name: &str) -> Option<u64> {
    let bytes = std::fs::read(ctx.proc_path(&format!("sys/net/netfilter/{name}"))).ok()?;
    parse_sysctl_values(&bytes).ok()?.first().map(|v| *v as u64)
}

pub(super) fn conntrack_report(
    ctx: &CollectContext,
    first: Option<BTreeMap<String, u64>>,
    opts: &Options,
) -> Result<ConntrackReport, Failure> {
    if !conntrack_loaded(ctx) {
        return Err(Failure::Other(format!(
            "conntrack: nf_conntrack is not loaded ({} missing)",
            ctx.proc_path("sys/net/netfilter/nf_conntrack_count").display()
        )));
    }
    let entries = sysctl(ctx, "nf_conntrack_count").unwrap_or(0);
    let max = sysctl(ctx, "nf_conntrack_max").unwrap_or(0);
    let buckets = sysctl(ctx, "nf_conntrack_buckets").unwrap_or(0);
    let (breakdown, breakdown_note) = if !ctx.is_live() {
        (None, Some("the table is only dumped from the live kernel".to_string()))
    } else if entries > opts.breakdown_max_entries {
        (
            None,
            Some(format!(
                "not dumped: {entries} entries is above collectors.conntrack.breakdown_max_entries {} (raise it with --config to dump anyway)",
                opts.breakdown_max_entries
            )),
        )
    } else {
        match dump_breakdown(MAX_TRACKED_ADDRESSES) {
            Ok(b) => (
                Some(
                    b.by_protocol_state()
                        .into_iter()
                        .map(|(protocol, state, zone, entries)| FlowRow {
                            protocol,
                            state,
                            zone,
                            entries,
                        })
                        .collect::<Vec<_>>(),
                ),
                None,
            ),
            Err(e) if e.is_permission() => {
                return Err(Failure::NoCapability(format!(
                    "conntrack table dump over ctnetlink: {e}: needs CAP_NET_ADMIN (run as root or grant cap_net_admin)"
                )))
            }
            Err(e) => (None, Some(format!("ctnetlink table dump failed: {e}"))),
        }
    };
    let since_boot = stat_totals(ctx).ok();
    let during = match (&first, &since_boot) {
        (Some(a), Some(b)) => Some(
            b.iter()
                .map(|(k, v)| (k.clone(), increase(a.get(k).copied().unwrap_or(0), *v)))
                .collect(),
        ),
        _ => None,
    };
    let mut report = ConntrackReport {
        entries,
        max,
        usage_percent: if max > 0 {
            entries as f64 * 100.0 / max as f64
        } else {
            0.0
        },
        buckets,
        breakdown,
        breakdown_note,
        stats_since_boot: since_boot,
        stats_during_sample: during,
        tcp_timeout_time_wait: sysctl(ctx, "nf_conntrack_tcp_timeout_time_wait"),
        tcp_timeout_established: sysctl(ctx, "nf_conntrack_tcp_timeout_established"),
        recommendations: Vec::new(),
    };
    report.recommendations = recommendations(&report, opts.sample);
    Ok(report)
}

/// Usage above which the table is called nearly full.
const FULL_PERCENT: f64 = 80.0;
/// Share of TIME_WAIT entries above which shortening their timeout is suggested.
const TIME_WAIT_SHARE: f64 = 0.25;

/// Concrete advice, quoting the current values.
pub fn recommendations(r: &ConntrackReport, sample: Option<Duration>) -> Vec<String> {
    let mut out = Vec::new();
    let stat = |name: &str| -> (u64, Option<u64>) {
        (
            r.stats_since_boot
                .as_ref()
                .and_then(|s| s.get(name))
                .copied()
                .unwrap_or(0),
            r.stats_during_sample
                .as_ref()
                .map(|s| s.get(name).copied().unwrap_or(0)),
        )
    };
    let counted = |name: &str| -> String {
        match (sample, stat(name)) {
            (Some(d), (total, Some(during))) => format!(
                "{name} {total} since boot ({during} during the {})",
                humantime::format_duration(d)
            ),
            (_, (total, _)) => format!("{name} {total} since boot"),
        }
    };
    let suggested_max = (r.max.max(1) * 2).max(r.entries * 2);
    if r.usage_percent >= FULL_PERCENT {
        out.push(format!(
            "the table is {:.0}% full ({} of nf_conntrack_max {}): raise net.netfilter.nf_conntrack_max (e.g. to {suggested_max}) and the hash table with it (/sys/module/nf_conntrack/parameters/hashsize, now {} buckets, to about the new maximum)",
            r.usage_percent, r.entries, r.max, r.buckets
        ));
    }
    let (drop, drop_during) = stat("drop");
    let (early, early_during) = stat("early_drop");
    let active = |total: u64, during: Option<u64>| during.map_or(total > 0, |d| d > 0);
    if active(drop, drop_during) || active(early, early_during) {
        out.push(format!(
            "new connections were refused or evicted for lack of room ({}, {}): raise net.netfilter.nf_conntrack_max (now {}, e.g. to {suggested_max}) and hashsize (now {})",
            counted("drop"),
            counted("early_drop"),
            r.max,
            r.buckets
        ));
    }
    let (failed, failed_during) = stat("insert_failed");
    if active(failed, failed_during) {
        out.push(format!(
            "{}: entries lost insertion races (typically parallel UDP flows such as DNS queries sent at once) or hit long hash chains; a larger hashsize (now {} buckets for nf_conntrack_max {}) shortens the chains",
            counted("insert_failed"),
            r.buckets,
            r.max
        ));
    }
    if r.buckets > 0 && r.max > r.buckets.saturating_mul(4) {
        out.push(format!(
            "nf_conntrack_max {} is more than 4× the {} hash buckets: at full table the average chain holds over 8 entries; raise hashsize toward nf_conntrack_max",
            r.max, r.buckets
        ));
    }
    if let Some(rows) = &r.breakdown {
        let total: u64 = rows.iter().map(|f| f.entries).sum();
        let tw: u64 = rows
            .iter()
            .filter(|f| f.protocol == "tcp" && f.state == "TIME_WAIT")
            .map(|f| f.entries)
            .sum();
        let busy = r.usage_percent >= 50.0 || total >= 10_000;
        if total > 0 && busy && tw as f64 >= TIME_WAIT_SHARE * total as f64 {
            out.push(format!(
                "{tw} of {total} entries ({:.0}%) are TCP TIME_WAIT: shorten net.netfilter.nf_conntrack_tcp_timeout_time_wait (now {} s, e.g. to 30)",
                tw as f64 * 100.0 / total as f64,
                r.tcp_timeout_time_wait.map_or("unknown".to_string(), |v| v.to_string())
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn recommendations_quote_current_values() {
        let mut r = ConntrackReport {
            entries: 900,
            max: 1000,
            usage_percent: 90.0,
            buckets: 200,
            breakdown: Some(vec![
                FlowRow {
                    protocol: "tcp".into(),
                    state: "TIME_WAIT".into(),
                    zone: 0,
                    entries: 600,
                },
                FlowRow {
                    protocol: "udp".into(),
                    state: String::new(),
                    zone: 0,
                    entries: 300,
                },
            ]),
            breakdown_note: None,
            stats_since_boot: Some(BTreeMap::from([
                ("drop".to_string(), 4),
                ("early_drop".to_string(), 9),
                ("insert_failed".to_string(), 2),
            ])),
            stats_during_sample: Some(BTreeMap::from([("drop".to_string(), 1), ("early_drop".to_string(), 0)])),
            tcp_timeout_time_wait: Some(120),
            tcp_timeout_established: Some(432000),
            recommendations: Vec::new(),
        };
        let recs = recommendations(&r, Some(Duration::from_secs(5)));
        let all = recs.join("\n");
        assert!(all.contains("90% full (900 of nf_conntrack_max 1000)"), "{all}");
        assert!(all.contains("hashsize, now 200 buckets"), "{all}");
        assert!(all.contains("drop 4 since boot (1 during the 5s)"), "{all}");
        assert!(all.contains("nf_conntrack_tcp_timeout_time_wait (now 120 s"), "{all}");
        assert!(all.contains("more than 4× the 200 hash buckets"), "{all}");
        // During the sample nothing failed to insert: no insert_failed advice.
        assert!(!all.contains("insert_failed"), "{all}");
        r.usage_percent = 1.0;
        r.entries = 10;
        r.buckets = 1000;
        r.stats_since_boot = Some(BTreeMap::new());
        r.stats_during_sample = None;
        assert!(recommendations(&r, None).is_empty());
    }
}
