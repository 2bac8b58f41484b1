//! `netsight analyze firewall`: the nf_tables ruleset and the conntrack table, read
//! with the daemon's own collector code ([`crate::collect::nftables::read_ruleset`],
//! [`crate::collect::conntrack::dump_breakdown`], [`crate::collect::conntrack::stat_totals`]).
//!
//! Output: aligned tables (like `ss`/`ip`), or `--json` (shape in
//! `docs/analyze-firewall.md`). Exit status 0, or [`EXIT_NO_CAPABILITY`] when
//! CAP_NET_ADMIN is missing, 1 on other errors.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::cli::{load_config, CommonArgs};
use crate::collect::conntrack::{dump_breakdown, stat_totals, DumpError, MAX_TRACKED_ADDRESSES};
use crate::collect::nftables::{explain, read_ruleset, TableFilter};
use crate::collect::CollectContext;
use crate::netlink::nftables::{family_name, Counter, ExprClass, Rule, Ruleset, Verdict};
use crate::parse::sysctl::parse_sysctl_values;

/// `EX_NOPERM` from sysexits.h: the analysis needs a capability the process lacks.
pub const EXIT_NO_CAPABILITY: u8 = 77;

#[derive(Args, Debug)]
pub struct FirewallArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Analyze the nf_tables ruleset (default: both rules and conntrack).
    #[arg(long)]
    pub rules: bool,
    /// Analyze the conntrack table (default: both rules and conntrack).
    #[arg(long)]
    pub conntrack: bool,
    /// Print JSON (shape documented in docs/analyze-firewall.md).
    #[arg(long)]
    pub json: bool,
    /// Read twice, this far apart, to rank rules by rate and count conntrack
    /// drops during the interval, e.g. `5s`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub sample: Option<Duration>,
    /// Rows in the ranked rule lists.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub sample_seconds: Option<f64>,
    pub rules: Option<RulesReport>,
    pub conntrack: Option<ConntrackReport>,
}

#[derive(Debug, Serialize)]
pub struct RulesReport {
    pub generation: u32,
    /// The ruleset generation changed during the sample (counters may have reset).
    pub changed_during_sample: bool,
    pub tables: Vec<TableRow>,
    pub chains: Vec<ChainRow>,
    pub rule_count: usize,
    pub rules_with_counter: usize,
    pub top_by_packets: Vec<RuleRow>,
    /// Empty without `--sample`.
    pub top_by_rate: Vec<RuleRow>,
    pub never_matched: Vec<RuleRow>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct TableRow {
    pub family: String,
    pub table: String,
    pub chains: usize,
    pub rules: usize,
}

#[derive(Debug, Serialize)]
pub struct ChainRow {
    pub family: String,
    pub table: String,
    pub chain: String,
    /// Empty for regular chains, as are `priority`, `policy` and `type`.
    pub hook: String,
    pub priority: String,
    pub policy: String,
    #[serde(rename = "type")]
    pub chain_type: String,
    pub rules: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleRow {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    pub comment: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
    /// Over the sample; `null` without `--sample` or for a rule added during it.
    pub packets_per_second: Option<f64>,
    pub bytes_per_second: Option<f64>,
}

/// A rule that can never (or never usefully) match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `shadowed`, `duplicate` or `redundant`.
    pub kind: &'static str,
    pub family: String,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    pub comment: String,
    pub verdict: String,
    /// The earlier rule responsible.
    pub by_handle: u64,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct ConntrackReport {
    pub entries: u64,
    pub max: u64,
    pub usage_percent: f64,
    pub buckets: u64,
    /// `null` when the table was not dumped (see `breakdown_note`).
    pub breakdown: Option<Vec<FlowRow>>,
    pub breakdown_note: Option<String>,
    /// Per-CPU statistics summed over CPUs, since boot (`null` when unreadable).
    pub stats_since_boot: Option<BTreeMap<String, u64>>,
    /// Increase during `--sample`.
    pub stats_during_sample: Option<BTreeMap<String, u64>>,
    pub tcp_timeout_time_wait: Option<u64>,
    pub tcp_timeout_established: Option<u64>,
    pub recommendations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRow {
    pub protocol: String,
    pub state: String,
    pub zone: u16,
    pub entries: u64,
}

/// Why the analysis could not run.
#[derive(Debug)]
pub enum Failure {
    NoCapability(String),
    Other(String),
}

pub fn run(args: FirewallArgs) -> anyhow::Result<u8> {
    let cfg = load_config(&args.common)?;
    let ctx = CollectContext::new(&cfg.paths.procfs, &cfg.paths.sysfs);
    let filter = TableFilter::new(&cfg.collectors.nftables)?;
    let both = !args.rules && !args.conntrack;
    let opts = Options {
        rules: args.rules || both,
        conntrack: args.conntrack || both,
        sample: args.sample,
        top: args.top,
        breakdown_max_entries: cfg.collectors.conntrack.breakdown_max_entries,
    };
    match analyze(&ctx, &filter, &opts) {
        Ok(report) => {
            let text = if args.json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else {
                render_text(&report)
            };
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                // `… | head` closing the pipe early is not an error.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
        Err(Failure::NoCapability(m)) => {
            eprintln!("netsight analyze firewall: {m}");
            Ok(EXIT_NO_CAPABILITY)
        }
        Err(Failure::Other(m)) => {
            eprintln!("netsight analyze firewall: {m}");
            Ok(1)
        }
    }
}

pub struct Options {
    pub rules: bool,
    pub conntrack: bool,
    pub sample: Option<Duration>,
    pub top: usize,
    pub breakdown_max_entries: u64,
}

fn nft_failure(e: DumpError) -> Failure {
    if e.is_permission() {
        Failure::NoCapability(explain(&e))
    } else {
        Failure::Other(explain(&e))
    }
}

/// Reads the kernel (twice, `sample` apart, when sampling) and builds the report.
pub fn analyze(ctx: &CollectContext, filter: &TableFilter, opts: &Options) -> Result<Report, Failure> {
    let read_rules = || -> Result<Ruleset, Failure> {
        let mut rs = read_ruleset().map_err(nft_failure)?;
        filter.apply(&mut rs);
        Ok(rs)
    };
    let mut first_rules = None;
    let mut first_stats = None;
    let started = Instant::now();
    if let Some(d) = opts.sample {
        if opts.rules {
            first_rules = Some(read_rules()?);
        }
        if opts.conntrack && conntrack_loaded(ctx) {
            first_stats = stat_totals(ctx).ok();
        }
        std::thread::sleep(d);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rules = if opts.rules {
        let rs = read_rules()?;
        Some(rules_report(
            &rs,
            first_rules.as_ref(),
            opts.sample.map(|_| elapsed),
            opts.top,
        ))
    } else {
        None
    };
    let conntrack = if opts.conntrack {
        Some(conntrack_report(ctx, first_stats, opts)?)
    } else {
        None
    };
    Ok(Report {
        sample_seconds: opts.sample.map(|_| elapsed),
        rules,
        conntrack,
    })
}

type RuleKey<'a> = (u8, &'a str, &'a str, u64);

fn key(r: &Rule) -> RuleKey<'_> {
    (r.family, &r.table, &r.chain, r.handle)
}

fn row(r: &Rule, c: Counter) -> RuleRow {
    RuleRow {
        family: family_name(r.family).into_owned(),
        table: r.table.clone(),
        chain: r.chain.clone(),
        handle: r.handle,
        comment: r.display_comment(),
        verdict: r.verdict().to_string(),
        packets: c.packets,
        bytes: c.bytes,
        packets_per_second: None,
        bytes_per_second: None,
    }
}

/// Increase of a counter, reset-aware (a decrease means the rule was replaced).
fn increase(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

pub fn rules_report(rs: &Ruleset, before: Option<&Ruleset>, seconds: Option<f64>, top: usize) -> RulesReport {
    let mut per_chain: HashMap<(u8, &str, &str), usize> = HashMap::new();
    for r in &rs.rules {
        *per_chain.entry((r.family, &r.table, &r.chain)).or_default() += 1;
    }
    let tables = rs
        .tables
        .iter()
        .map(|t| TableRow {
            family: family_name(t.family).into_owned(),
            table: t.name.clone(),
            chains: rs
                .chains
                .iter()
                .filter(|c| c.family == t.family && c.table == t.name)
                .count(),
            rules: rs
                .rules
                .iter()
                .filter(|r| r.family == t.family && r.table == t.name)
                .count(),
        })
        .collect();
    let chains = rs
        .chains
        .iter()
        .map(|c| ChainRow {
            family: family_name(c.family).into_owned(),
            table: c.table.clone(),
            chain: c.name.clone(),
            hook: c.hook_label(),
            priority: c.priority_label(),
            policy: c.policy_label(),
            chain_type: c.chain_type.clone().unwrap_or_default(),
            rules: per_chain
                .get(&(c.family, c.table.as_str(), c.name.as_str()))
                .copied()
                .unwrap_or(0),
        })
        .collect();

    let old: HashMap<RuleKey, Counter> = before
        .map(|b| {
            b.rules
                .iter()
                .filter_map(|r| r.counter().map(|c| (key(r), c)))
                .collect()
        })
        .unwrap_or_default();
    let mut rows: Vec<RuleRow> = Vec::new();
    for r in &rs.rules {
        let Some(c) = r.counter() else { continue };
        let mut rr = row(r, c);
        if let (Some(secs), Some(o)) = (seconds, old.get(&key(r))) {
            if secs > 0.0 {
                rr.packets_per_second = Some(increase(o.packets, c.packets) as f64 / secs);
                rr.bytes_per_second = Some(increase(o.bytes, c.bytes) as f64 / secs);
            }
        }
        rows.push(rr);
    }
    let rules_with_counter = rows.len();
    let never_matched: Vec<RuleRow> = rows.iter().filter(|r| r.packets == 0).cloned().collect();
    let mut by_packets: Vec<RuleRow> = rows.iter().filter(|r| r.packets > 0).cloned().collect();
    by_packets.sort_by_key(|r| std::cmp::Reverse(r.packets));
    by_packets.truncate(top);
    let mut by_rate: Vec<RuleRow> = rows
        .iter()
        .filter(|r| r.packets_per_second.is_some_and(|p| p > 0.0))
        .cloned()
        .collect();
    by_rate.sort_by(|a, b| {
        b.packets_per_second
            .partial_cmp(&a.packets_per_second)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    by_rate.truncate(top);
    RulesReport {
        generation: rs.generation,
        changed_during_sample: before.is_some_and(|b| b.generation != rs.generation),
        tables,
        chains,
        rule_count: rs.rules.len(),
        rules_with_counter,
        top_by_packets: by_packets,
        top_by_rate: by_rate,
        never_matched,
        findings: findings(rs),
    }
}

/// What the analysis knows about one rule.
struct Facts<'a> {
    rule: &'a Rule,
    verdict: Verdict,
    /// Expressions without `counter` (whose data holds the changing values).
    canon: Vec<(&'a str, &'a [u8])>,
    /// The rule's match as a set of self-contained predicates (loads followed by a
    /// comparison), when it can be decided; `None` otherwise.
    atoms: Option<Vec<Vec<u8>>>,
    /// No loads, comparisons, stateful or unknown expressions: matches every packet.
    unconditional: bool,
    /// May change the packet (or is not understood): later rules may see packets
    /// earlier rules did not, so containment is not carried past it.
    barrier: bool,
    stateful: bool,
}

fn encode(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(&(data.len() as u32).to_ne_bytes());
    out.extend_from_slice(data);
}

fn facts(rule: &Rule) -> Facts<'_> {
    let mut atoms = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut loads = 0;
    let mut decidable = true;
    let (mut conditional, mut barrier, mut stateful) = (false, false, false);
    for e in rule.exprs() {
        match e.class() {
            ExprClass::Load => {
                encode(&mut cur, e.name, e.data);
                loads += 1;
                conditional = true;
            }
            ExprClass::Compare => {
                conditional = true;
                if e.name == "match" {
                    // xtables matches read the packet themselves.
                    decidable &= cur.is_empty();
                    let mut a = Vec::new();
                    encode(&mut a, e.name, e.data);
                    atoms.push(a);
                } else {
                    decidable &= loads > 0;
                    encode(&mut cur, e.name, e.data);
                    atoms.push(std::mem::take(&mut cur));
                    loads = 0;
                }
            }
            ExprClass::Neutral => {}
            ExprClass::Verdict => decidable &= cur.is_empty(),
            ExprClass::Stateful => {
                stateful = true;
                conditional = true;
                decidable = false;
            }
            ExprClass::Effect => {
                barrier = true;
                decidable = false;
            }
            ExprClass::Unknown => {
                barrier = true;
                conditional = true;
                decidable = false;
            }
        }
    }
    decidable &= cur.is_empty();
    let verdict = rule.verdict();
    atoms.sort();
    atoms.dedup();
    Facts {
        rule,
        unconditional: !conditional && verdict.is_terminal(),
        verdict,
        canon: rule
            .exprs()
            .filter(|e| e.name != "counter")
            .map(|e| (e.name, e.data))
            .collect(),
        atoms: decidable.then_some(atoms),
        barrier,
        stateful,
    }
}

fn is_subset(small: &[Vec<u8>], big: &[Vec<u8>]) -> bool {
    small.iter().all(|a| big.binary_search(a).is_ok())
}

/// Shadowed, duplicate and redundant rules, chain by chain:
/// * `shadowed`: after an unconditional rule with a terminal verdict (accept, drop,
///   reject, queue, return, goto, nat) — it is never evaluated; or every packet it
///   matches already matched an earlier terminal rule with a different verdict;
/// * `duplicate`: the same expressions (counters aside) as an earlier rule;
/// * `redundant`: matches a subset of what an earlier terminal rule with the same
///   verdict matches (the earlier rule's conditions are all among its own).
///
/// Containment is only claimed where decidable: both rules consist of loads and
/// comparisons the analysis knows, and no rule in between may change the packet.
pub fn findings(rs: &Ruleset) -> Vec<Finding> {
    let mut order: Vec<(u8, &str, &str)> = Vec::new();
    let mut chains: HashMap<(u8, &str, &str), Vec<&Rule>> = HashMap::new();
    for r in &rs.rules {
        let k = (r.family, r.table.as_str(), r.chain.as_str());
        chains.entry(k).or_insert_with(|| {
            order.push(k);
            Vec::new()
        });
        chains.get_mut(&k).expect("inserted").push(r);
    }
    let mut out = Vec::new();
    for k in order {
        let rules: Vec<Facts> = chains[&k].iter().map(|r| facts(r)).collect();
        let mut blocker: Option<&Facts> = None;
        let mut seen: HashMap<&[(&str, &[u8])], &Facts> = HashMap::new();
        let mut terminal: Vec<&Facts> = Vec::new();
        for f in &rules {
            let finding = |kind: &'static str, by: &Facts, reason: String| Finding {
                kind,
                family: family_name(f.rule.family).into_owned(),
                table: f.rule.table.clone(),
                chain: f.rule.chain.clone(),
                handle: f.rule.handle,
                comment: f.rule.display_comment(),
                verdict: f.verdict.to_string(),
                by_handle: by.rule.handle,
                reason,
            };
            if let Some(b) = blocker {
                out.push(finding(
                    "shadowed",
                    b,
                    format!(
                        "never evaluated: rule {} before it matches every packet ({})",
                        b.rule.handle, b.verdict
                    ),
                ));
                continue;
            }
            if let Some(e) = seen.get(f.canon.as_slice()) {
                out.push(finding(
                    "duplicate",
                    e,
                    format!("same expressions and verdict as rule {}", e.rule.handle),
                ));
            } else if let Some(atoms) = &f.atoms {
                if let Some(e) = terminal
                    .iter()
                    .find(|e| e.atoms.as_deref().is_some_and(|ea| is_subset(ea, atoms)))
                {
                    if e.verdict == f.verdict {
                        out.push(finding(
                            "redundant",
                            e,
                            format!(
                                "matches a subset of rule {} ({}), which already gives the same verdict",
                                e.rule.handle, e.verdict
                            ),
                        ));
                    } else {
                        out.push(finding(
                            "shadowed",
                            e,
                            format!(
                                "every packet it matches already matched rule {} ({})",
                                e.rule.handle, e.verdict
                            ),
                        ));
                    }
                }
            }
            seen.entry(f.canon.as_slice()).or_insert(f);
            if f.unconditional {
                blocker = Some(f);
            }
            if f.barrier {
                terminal.clear();
            }
            if f.atoms.is_some() && f.verdict.is_terminal() && !f.stateful {
                terminal.push(f);
            }
        }
    }
    out
}

fn conntrack_loaded(ctx: &CollectContext) -> bool {
    ctx.proc_path("sys/net/netfilter/nf_conntrack_count").exists()
}

fn sysctl(ctx: &CollectContext, name: &str) -> Option<u64> {
    let bytes = std::fs::read(ctx.proc_path(&format!("sys/net/netfilter/{name}"))).ok()?;
    parse_sysctl_values(&bytes).ok()?.first().map(|v| *v as u64)
}

fn conntrack_report(
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

fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    super::common::table_indented("", header, rows, right)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An expression for a test rule: name and raw data.
    struct Expr {
        name: &'static str,
        data: Vec<u8>,
    }

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn e(name: &'static str, data: Vec<u8>) -> Expr {
        Expr { name, data }
    }

    fn payload(offset: u32) -> Expr {
        e(
            "payload",
            [nla(1, &1u32.to_be_bytes()), nla(3, &offset.to_be_bytes())].concat(),
        )
    }

    fn cmp(v: u32) -> Expr {
        e("cmp", [nla(1, &1u32.to_be_bytes()), nla(3, &v.to_be_bytes())].concat())
    }

    fn verdict(code: i32) -> Expr {
        let inner = nla(1, &(code as u32).to_be_bytes());
        let verdict = nla(0x8000 | 2, &inner);
        e(
            "immediate",
            [nla(1, &0u32.to_be_bytes()), nla(0x8000 | 2, &verdict)].concat(),
        )
    }

    fn counter(p: u64) -> Expr {
        e(
            "counter",
            [nla(1, &(p * 100).to_be_bytes()), nla(2, &p.to_be_bytes())].concat(),
        )
    }

    fn rule(handle: u64, exprs: Vec<Expr>) -> Rule {
        let mut r = Rule::new(2, "t", "c", handle);
        for e in exprs {
            r.push_expr(e.name, &e.data);
        }
        r
    }

    fn kinds(rules: Vec<Rule>) -> Vec<(&'static str, u64, u64)> {
        let rs = Ruleset {
            rules,
            ..Ruleset::default()
        };
        findings(&rs)
            .into_iter()
            .map(|f| (f.kind, f.handle, f.by_handle))
            .collect()
    }

    const ACCEPT: i32 = 1;
    const DROP: i32 = 0;

    #[test]
    fn clean_chain_has_no_findings() {
        assert!(kinds(vec![
            rule(1, vec![payload(9), cmp(6), verdict(ACCEPT)]),
            rule(2, vec![payload(9), cmp(17), counter(3), verdict(DROP)]),
            rule(3, vec![payload(12), cmp(1), verdict(ACCEPT)]),
            rule(4, vec![counter(0)]),
        ])
        .is_empty());
    }

    #[test]
    fn rules_after_an_unconditional_verdict_are_shadowed() {
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), verdict(ACCEPT)]),
            rule(2, vec![counter(5), verdict(DROP)]),
            rule(3, vec![payload(9), cmp(17), verdict(ACCEPT)]),
            rule(4, vec![counter(0)]),
        ]);
        assert_eq!(k, vec![("shadowed", 3, 2), ("shadowed", 4, 2)]);
        // A counter-only rule (no verdict) does not shadow anything.
        assert!(kinds(vec![
            rule(1, vec![counter(1)]),
            rule(2, vec![payload(9), cmp(6), verdict(DROP)])
        ])
        .is_empty());
    }

    #[test]
    fn duplicates_ignore_counter_values() {
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), counter(10), verdict(ACCEPT)]),
            rule(2, vec![payload(12), cmp(1), verdict(DROP)]),
            rule(3, vec![payload(9), cmp(6), counter(0), verdict(ACCEPT)]),
        ]);
        assert_eq!(k, vec![("duplicate", 3, 1)]);
    }

    #[test]
    fn contained_matches_are_redundant_or_shadowed() {
        // Rule 2 = rule 1's match plus another condition, same verdict: redundant.
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), verdict(DROP)]),
            rule(2, vec![payload(12), cmp(7), payload(9), cmp(6), verdict(DROP)]),
            rule(3, vec![payload(9), cmp(6), payload(16), cmp(8), verdict(ACCEPT)]),
            // Rule 1's condition alone with another verdict: shadowed too.
            rule(4, vec![payload(9), cmp(6), verdict(ACCEPT)]),
        ]);
        assert_eq!(k, vec![("redundant", 2, 1), ("shadowed", 3, 1), ("shadowed", 4, 1)]);
        // The earlier, broader rule must be terminal: after a jump nothing is claimed.
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), counter(1)]),
            rule(2, vec![payload(12), cmp(7), payload(9), cmp(6), verdict(DROP)]),
        ]);
        assert!(k.is_empty(), "{k:?}");
        // A rule that changes the packet in between stops containment.
        let mark = e(
            "meta",
            [nla(1, &3u32.to_be_bytes()), nla(3, &1u32.to_be_bytes())].concat(),
        );
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), verdict(DROP)]),
            rule(2, vec![payload(1), cmp(1), mark]),
            rule(3, vec![payload(12), cmp(7), payload(9), cmp(6), verdict(DROP)]),
        ]);
        assert!(k.is_empty(), "{k:?}");
        // Stateful expressions (limit) make a rule undecidable.
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), e("limit", vec![]), verdict(DROP)]),
            rule(2, vec![payload(12), cmp(7), payload(9), cmp(6), verdict(DROP)]),
        ]);
        assert!(k.is_empty(), "{k:?}");
    }

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
