//! `netsight analyze firewall`: the nf_tables ruleset and the conntrack table, read
//! with the daemon's own collector code ([`crate::collect::nftables::read_ruleset`],
//! [`crate::collect::conntrack::dump_breakdown`], [`crate::collect::conntrack::stat_totals`]).
//!
//! Output: aligned tables (like `ss`/`ip`), or `--json` (shape in
//! `docs/analyze-firewall.md`). Exit status 0, or [`EXIT_NO_CAPABILITY`] when
//! CAP_NET_ADMIN is missing, 1 on other errors.

mod conntrack;
mod findings;
mod render;

pub use conntrack::recommendations;
use conntrack::{conntrack_loaded, conntrack_report};
pub use findings::findings;
pub use render::render_text;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::cli::{load_config, CommonArgs};
use crate::collect::conntrack::{stat_totals, DumpError};
use crate::collect::nftables::{explain, read_ruleset, TableFilter};
use crate::collect::CollectContext;
use crate::netlink::nftables::{family_name, Counter, Rule, Ruleset};

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
pub(super) fn increase(before: u64, after: u64) -> u64 {
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
