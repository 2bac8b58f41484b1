//! nf_tables: tables, chains, per-rule counters, named counters, sets and the ruleset
//! generation, read over netlink (never by running `nft`).
//!
//! Every run reads the whole ruleset with [`read_ruleset`]: `NFT_MSG_GETGEN`, one dump
//! each of tables, chains, rules, sets and objects, `NFT_MSG_GETGEN` again; when the
//! generation moved in between (or a dump was interrupted) the read is retried so the
//! exported values always come from one generation. The parsers are pure functions
//! in [`crate::netlink::nftables`]; the analyzer (`netsight analyze firewall`) calls
//! the same [`read_ruleset`].
//!
//! Counter resets: a reload (`nft -f`, `nft flush ruleset`, `iptables-restore`)
//! replaces rules and with them their anonymous counters, which restart at zero.
//! `netsight_nftables_ruleset_generation` changes and
//! `netsight_nftables_ruleset_last_change_timestamp_seconds` moves to the collection
//! that first saw the change. The `_total` series then drop: Prometheus' `rate()` /
//! `increase()` treat a decrease as a counter reset, and so does the rule engine's
//! `rate()` (see [`crate::snapshot::Ring::rate`]), so no negative rate is computed.

mod ruleset;

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use regex::Regex;

use super::netlink_socket::NetlinkSocket;
use super::{CollectContext, CollectError, Collector};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::config::NftablesConfig;
use crate::netlink::nftables::{family_name, Counter, Rule, Ruleset};
use crate::snapshot::Emitter;

use self::ruleset::read_ruleset_on;
pub use self::ruleset::{explain, read_ruleset, read_ruleset_capturing, read_ruleset_with, Capture};

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;

const RULE_L: &[&str] = &["family", "table", "chain", "handle", "comment", "verdict"];
const CHAIN_INFO_L: &[&str] = &["family", "table", "chain", "hook", "priority", "policy"];
const CHAIN_L: &[&str] = &["family", "table", "chain"];
const OBJ_L: &[&str] = &["family", "table", "name"];
const SET_L: &[&str] = &["family", "table", "set"];

pub static GENERATION: MetricDesc = MetricDesc::new(
    "netsight_nftables_ruleset_generation",
    G,
    "",
    "Generation of the nf_tables ruleset (NFT_MSG_GETGEN); it changes with every committed ruleset transaction, so a change means rules were added, removed or reloaded.",
    &[],
    "netsight.nftables.ruleset.generation",
);
pub static LAST_CHANGE: MetricDesc = MetricDesc::new(
    "netsight_nftables_ruleset_last_change_timestamp_seconds",
    G,
    "seconds",
    "Unix time of the collection that first saw the current ruleset generation (the first collection after netsight started, or the last reload it observed). A reload resets anonymous rule counters; rates across it are reset-aware.",
    &[],
    "netsight.nftables.ruleset.last_change",
);
pub static CHAIN_INFO: MetricDesc = MetricDesc::new(
    "netsight_nftables_chain_info",
    G,
    "",
    "Always 1, one series per chain. hook, priority and policy are empty for regular (non-base) chains; a base chain without an explicit policy reports accept.",
    CHAIN_INFO_L,
    "netsight.nftables.chain.info",
);
pub static CHAIN_RULES: MetricDesc = MetricDesc::new(
    "netsight_nftables_chain_rules",
    G,
    "",
    "Rules in the chain (with or without a counter).",
    CHAIN_L,
    "netsight.nftables.chain.rules",
);
pub static RULE_PACKETS: MetricDesc = MetricDesc::new(
    "netsight_nftables_rule_packets_total",
    C,
    "packets",
    "Packets counted by the rule's `counter` expression (rules without one are not exported). comment comes from the rule's comment (or an iptables -m comment match; `(xt match: …)` for other opaque xtables matches); verdict is accept, drop, reject, queue, continue, return, jump:<chain>, goto:<chain>, nat, xt:<target> or none. handle=\"other\" sums the rules beyond collectors.nftables.max_rules. Resets to 0 when the rule is replaced by a reload.",
    RULE_L,
    "netsight.nftables.rule.packets",
);
pub static RULE_BYTES: MetricDesc = MetricDesc::new(
    "netsight_nftables_rule_bytes_total",
    C,
    "bytes",
    "Bytes counted by the rule's `counter` expression; labels as netsight_nftables_rule_packets_total.",
    RULE_L,
    "netsight.nftables.rule.bytes",
);
pub static RULES_CAPPED: MetricDesc = MetricDesc::new(
    "netsight_nftables_rule_series_capped",
    G,
    "",
    "Rules with a counter that are summed into the handle=\"other\" series because more than collectors.nftables.max_rules have one. Which rules get their own series is decided when the ruleset generation changes: rules that had one keep it, free slots go to the rules with the most packets.",
    &[],
    "netsight.nftables.rule.series_capped",
);
pub static COUNTER_PACKETS: MetricDesc = MetricDesc::new(
    "netsight_nftables_counter_packets_total",
    C,
    "packets",
    "Packets of a named counter object (`counter NAME { }` in a table).",
    OBJ_L,
    "netsight.nftables.counter.packets",
);
pub static COUNTER_BYTES: MetricDesc = MetricDesc::new(
    "netsight_nftables_counter_bytes_total",
    C,
    "bytes",
    "Bytes of a named counter object.",
    OBJ_L,
    "netsight.nftables.counter.bytes",
);
pub static SET_ELEMENTS: MetricDesc = MetricDesc::new(
    "netsight_nftables_set_elements",
    G,
    "",
    "Elements in a named set or map (anonymous `{ … }` sets of rules are not exported). From NFTA_SET_COUNT where the kernel sends it, else counted from an element dump; an interval counts once.",
    SET_L,
    "netsight.nftables.set.elements",
);
pub static SET_SIZE_LIMIT: MetricDesc = MetricDesc::new(
    "netsight_nftables_set_size_limit",
    G,
    "",
    "Declared maximum size of the set (`size N`); absent when the set has none.",
    SET_L,
    "netsight.nftables.set.size_limit",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "nftables",
    source: "nf_tables over netlink (NFNL_SUBSYS_NFTABLES): NFT_MSG_GETGEN, then dumps of NFT_MSG_GETTABLE, GETCHAIN, GETRULE, GETSET and GETOBJ (GETSETELEM per set on kernels without NFTA_SET_COUNT), retried until one generation is read whole. Rules installed by iptables-nft are included (their xtables matches are opaque; the verdict comes from the xt target name). Only the network namespace netsight runs in. collectors.nftables.include/exclude filter by table name",
    capabilities: "CAP_NET_ADMIN: nfnetlink refuses every nf_tables request, even read-only dumps, without it. Without it, without the nf_tables module, or on a malformed reply the collector is down (`netsight_collector_up{collector=\"nftables\"}` 0) and the reason is logged once",
    metrics: &[
        &GENERATION,
        &LAST_CHANGE,
        &CHAIN_INFO,
        &CHAIN_RULES,
        &RULE_PACKETS,
        &RULE_BYTES,
        &RULES_CAPPED,
        &COUNTER_PACKETS,
        &COUNTER_BYTES,
        &SET_ELEMENTS,
        &SET_SIZE_LIMIT,
    ],
    dynamic: &[],
};

/// Compiled table-name filters.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    include: Option<Regex>,
    exclude: Option<Regex>,
}

impl TableFilter {
    pub fn new(cfg: &NftablesConfig) -> anyhow::Result<TableFilter> {
        let compile = |what: &str, re: &Option<String>| -> anyhow::Result<Option<Regex>> {
            re.as_deref()
                .map(|r| Regex::new(r).map_err(|e| anyhow::anyhow!("collectors.nftables.{what}: {e}")))
                .transpose()
        };
        Ok(TableFilter {
            include: compile("include", &cfg.include)?,
            exclude: compile("exclude", &cfg.exclude)?,
        })
    }

    pub fn keeps(&self, table: &str) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(table))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(table))
    }

    pub fn apply(&self, rs: &mut Ruleset) {
        if self.include.is_some() || self.exclude.is_some() {
            rs.retain_tables(|_, t| self.keeps(t));
        }
    }
}

type RuleKey = (u8, String, String, u64);

fn rule_key(r: &Rule) -> RuleKey {
    (r.family, r.table.clone(), r.chain.clone(), r.handle)
}

pub struct Nftables {
    max_rules: usize,
    filter: TableFilter,
    last_gen: Option<u32>,
    last_change: f64,
    /// Rules that have their own series (only consulted above `max_rules`).
    selected: HashSet<RuleKey>,
    selected_gen: Option<u32>,
    /// Kept across ticks ([`Collector::collect`]).
    socket: Option<NetlinkSocket>,
}

impl Nftables {
    pub fn new(cfg: &NftablesConfig) -> anyhow::Result<Nftables> {
        Ok(Nftables {
            max_rules: cfg.max_rules,
            filter: TableFilter::new(cfg)?,
            last_gen: None,
            last_change: 0.0,
            selected: HashSet::new(),
            selected_gen: None,
            socket: None,
        })
    }

    /// Emits the samples of one ruleset read at unix time `now` (pure; used by
    /// [`Collector::collect`], the tests and the benchmark).
    pub fn emit(&mut self, mut rs: Ruleset, now: f64, out: &mut Emitter) {
        self.filter.apply(&mut rs);
        if self.last_gen != Some(rs.generation) {
            self.last_gen = Some(rs.generation);
            self.last_change = now;
        }
        out.push0(&GENERATION, f64::from(rs.generation));
        out.push0(&LAST_CHANGE, self.last_change);

        let mut per_chain: HashMap<(u8, &str, &str), usize> = HashMap::new();
        for r in &rs.rules {
            *per_chain.entry((r.family, &r.table, &r.chain)).or_default() += 1;
        }
        out.declare(&CHAIN_INFO);
        out.declare(&CHAIN_RULES);
        for c in &rs.chains {
            let fam = family_name(c.family).into_owned();
            out.push(
                &CHAIN_INFO,
                vec![
                    fam.clone(),
                    c.table.clone(),
                    c.name.clone(),
                    c.hook_label(),
                    c.priority_label(),
                    c.policy_label(),
                ],
                1.0,
            );
            let n = per_chain
                .get(&(c.family, c.table.as_str(), c.name.as_str()))
                .copied()
                .unwrap_or(0);
            out.push(&CHAIN_RULES, vec![fam, c.table.clone(), c.name.clone()], n as f64);
        }

        self.emit_rules(&rs, out);

        out.declare(&COUNTER_PACKETS);
        out.declare(&COUNTER_BYTES);
        for o in &rs.objects {
            let Some(c) = o.counter else { continue };
            let labels = vec![family_name(o.family).into_owned(), o.table.clone(), o.name.clone()];
            out.push(&COUNTER_PACKETS, labels.clone(), c.packets as f64);
            out.push(&COUNTER_BYTES, labels, c.bytes as f64);
        }
        out.declare(&SET_ELEMENTS);
        for s in rs.sets.iter().filter(|s| !s.is_anonymous()) {
            let labels = vec![family_name(s.family).into_owned(), s.table.clone(), s.name.clone()];
            if let Some(n) = s.elements {
                out.push(&SET_ELEMENTS, labels.clone(), n as f64);
            }
            if s.size > 0 {
                out.push(&SET_SIZE_LIMIT, labels, f64::from(s.size));
            }
        }
    }

    fn emit_rules(&mut self, rs: &Ruleset, out: &mut Emitter) {
        out.declare(&RULE_PACKETS);
        out.declare(&RULE_BYTES);
        let counted: Vec<(&Rule, Counter)> = rs.rules.iter().filter_map(|r| r.counter().map(|c| (r, c))).collect();
        if self.selected_gen != Some(rs.generation) {
            self.select(rs.generation, &counted);
        }
        let capped = counted.len() > self.max_rules;
        let mut other = Counter::default();
        let mut others = 0usize;
        for (r, c) in &counted {
            if capped && !self.selected.contains(&rule_key(r)) {
                other.packets += c.packets;
                other.bytes += c.bytes;
                others += 1;
                continue;
            }
            let labels = vec![
                family_name(r.family).into_owned(),
                r.table.clone(),
                r.chain.clone(),
                r.handle.to_string(),
                r.display_comment(),
                r.verdict().to_string(),
            ];
            out.push(&RULE_PACKETS, labels.clone(), c.packets as f64);
            out.push(&RULE_BYTES, labels, c.bytes as f64);
        }
        out.push0(&RULES_CAPPED, others as f64);
        if others > 0 {
            let labels = || {
                vec![
                    String::new(),
                    String::new(),
                    String::new(),
                    "other".into(),
                    String::new(),
                    String::new(),
                ]
            };
            out.push(&RULE_PACKETS, labels(), other.packets as f64);
            out.push(&RULE_BYTES, labels(), other.bytes as f64);
        }
    }

    /// Decides which rules get their own series at a new generation: those that had
    /// one and still exist, then the busiest others, up to `max_rules`.
    fn select(&mut self, gen: u32, counted: &[(&Rule, Counter)]) {
        self.selected_gen = Some(gen);
        let keys: Vec<RuleKey> = counted.iter().map(|(r, _)| rule_key(r)).collect();
        if counted.len() <= self.max_rules {
            self.selected = keys.into_iter().collect();
            return;
        }
        let existing: HashSet<&RuleKey> = keys.iter().collect();
        self.selected.retain(|k| existing.contains(k));
        let mut order: Vec<usize> = (0..counted.len()).collect();
        // Stable: ties keep ruleset order.
        order.sort_by(|&a, &b| counted[b].1.packets.cmp(&counted[a].1.packets));
        for i in order {
            if self.selected.len() >= self.max_rules {
                break;
            }
            self.selected.insert(keys[i].clone());
        }
    }
}

/// One collection as the daemon runs it each tick (netlink read of the whole
/// ruleset, then emission with a `max_rules` cap) in the calling thread's network
/// namespace; returns the number of samples. For benchmarks.
pub fn bench_collect(max_rules: usize) -> Result<usize, CollectError> {
    let mut c = Nftables::new(&NftablesConfig {
        max_rules,
        ..NftablesConfig::default()
    })
    .map_err(|e| CollectError::Unavailable(e.to_string()))?;
    let mut out = Emitter::new();
    c.collect(&CollectContext::new("/proc", "/sys"), &mut out)?;
    Ok(out.len())
}

impl Collector for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        if !ctx.is_live() {
            return Err(CollectError::Unavailable(format!(
                "the nf_tables ruleset comes from netlink, which only the live kernel answers (procfs is {})",
                ctx.procfs.display()
            )));
        }
        // The socket is kept across ticks: opening one per tick cost more than the
        // dumps of a small ruleset, and transient sockets showed in sockstat's
        // `sockets: used`. After a failure it is dropped and the next tick opens a
        // clean one.
        let sock = match &mut self.socket {
            Some(s) => s,
            None => self
                .socket
                .insert(NetlinkSocket::open().map_err(|e| CollectError::Unavailable(explain(&e)))?),
        };
        let rs = match read_ruleset_on(sock, None, false) {
            Ok(rs) => rs,
            Err(e) => {
                self.socket = None;
                return Err(CollectError::Unavailable(explain(&e)));
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.emit(rs, now, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
