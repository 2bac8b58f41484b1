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

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use regex::Regex;

use super::netlink_socket::{next_seq, DumpError, NetlinkSocket};
use super::{CollectContext, CollectError, Collector};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::config::NftablesConfig;
use crate::netlink::ctnetlink::CtnlError;
use crate::netlink::nftables::{
    dump_request, family_name, getgen_request, parse_reply, setelem_request, Counter, Dump, Item, Rule, Ruleset,
    NFT_MSG_NEWGEN, NFT_MSG_NEWSETELEM,
};
use crate::snapshot::Emitter;

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

/// Reads attempted before giving up on a ruleset that changes during every read.
const MAX_ATTEMPTS: usize = 5;

/// Raw replies of one [`read_ruleset_capturing`] call, by request (fixture capture).
#[derive(Debug, Default)]
pub struct Capture {
    pub replies: Vec<(&'static str, Vec<u8>)>,
}

impl Capture {
    fn slot(&mut self, name: &'static str) -> &mut Vec<u8> {
        if let Some(i) = self.replies.iter().position(|(n, _)| *n == name) {
            return &mut self.replies[i].1;
        }
        self.replies.push((name, Vec::new()));
        &mut self.replies.last_mut().expect("just pushed").1
    }
}

/// Reads the whole ruleset of the calling thread's network namespace at one
/// generation. Needs CAP_NET_ADMIN.
pub fn read_ruleset() -> Result<Ruleset, DumpError> {
    read_ruleset_capturing(None)
}

/// [`read_ruleset`], appending every received datagram to `capture`.
pub fn read_ruleset_capturing(capture: Option<&mut Capture>) -> Result<Ruleset, DumpError> {
    read_ruleset_with(capture, false)
}

/// [`read_ruleset_capturing`]; with `count_elements` every named set's elements are
/// counted from an element dump even when the kernel sends `NFTA_SET_COUNT` (the
/// path older kernels take; the tests use it to check both agree).
pub fn read_ruleset_with(capture: Option<&mut Capture>, count_elements: bool) -> Result<Ruleset, DumpError> {
    read_ruleset_on(&mut NetlinkSocket::open()?, capture, count_elements)
}

/// [`read_ruleset_with`] on a socket the caller keeps across reads. After an
/// `Err` the socket may still hold the rest of a failed dump: drop it.
fn read_ruleset_on(
    sock: &mut NetlinkSocket,
    mut capture: Option<&mut Capture>,
    count_elements: bool,
) -> Result<Ruleset, DumpError> {
    for _ in 0..MAX_ATTEMPTS {
        if let Some(c) = capture.as_deref_mut() {
            c.replies.clear();
        }
        let g0 = generation(sock, capture.as_deref_mut().map(|c| c.slot("gen")))?;
        let mut rs = Ruleset {
            generation: g0,
            ..Ruleset::default()
        };
        let mut interrupted = false;
        for dump in Dump::ALL {
            // Chains, rules, sets and objects all live in a table: with none (most
            // hosts without a firewall, every fresh namespace) their four dumps
            // are skipped. A table added meanwhile moves the generation, and the
            // read is retried below.
            if dump != Dump::Tables && rs.tables.is_empty() {
                continue;
            }
            let seq = next_seq();
            let raw = capture.as_deref_mut().map(|c| c.slot(dump_name(dump)));
            sock.exchange(&dump_request(dump, seq), raw, |dg| {
                let chunk = parse_reply(dg, dump.reply_type(), Some(seq))?;
                interrupted |= chunk.interrupted;
                rs.absorb(chunk.items);
                Ok(chunk.done)
            })?;
        }
        for i in 0..rs.sets.len() {
            let s = &rs.sets[i];
            if (s.elements.is_some() && !count_elements) || s.is_anonymous() {
                continue;
            }
            let seq = next_seq();
            let req = setelem_request(s.family, &s.table, &s.name, seq);
            let mut n = 0u64;
            let raw = capture.as_deref_mut().map(|c| c.slot("setelem"));
            sock.exchange(&req, raw, |dg| {
                let chunk = parse_reply(dg, NFT_MSG_NEWSETELEM, Some(seq))?;
                interrupted |= chunk.interrupted;
                for item in chunk.items {
                    if let Item::SetElements(k) = item {
                        n += k;
                    }
                }
                Ok(chunk.done)
            })?;
            rs.sets[i].elements = Some(n);
        }
        let g1 = generation(sock, None)?;
        if g0 == g1 && !interrupted {
            return Ok(rs);
        }
    }
    Err(DumpError::Io {
        op: "nf_tables dump",
        source: io::Error::other(format!(
            "the ruleset changed during each of {MAX_ATTEMPTS} consecutive reads"
        )),
    })
}

fn dump_name(d: Dump) -> &'static str {
    match d {
        Dump::Tables => "tables",
        Dump::Chains => "chains",
        Dump::Rules => "rules",
        Dump::Sets => "sets",
        Dump::Objects => "objects",
    }
}

fn generation(sock: &mut NetlinkSocket, raw: Option<&mut Vec<u8>>) -> Result<u32, DumpError> {
    let seq = next_seq();
    let mut gen = None;
    sock.exchange(&getgen_request(seq), raw, |dg| {
        let chunk = parse_reply(dg, NFT_MSG_NEWGEN, Some(seq))?;
        for item in chunk.items {
            if let Item::Generation(g) = item {
                gen = Some(g);
            }
        }
        Ok(chunk.done)
    })?;
    gen.ok_or_else(|| {
        DumpError::Reply(CtnlError::Malformed {
            offset: 0,
            message: "no NFT_MSG_NEWGEN in the reply".into(),
        })
    })
}

/// A human explanation of a failed nf_tables read, naming the capability when that
/// is the cause.
pub fn explain(e: &DumpError) -> String {
    if e.is_permission() {
        return format!(
            "nf_tables over netlink: {e}: reading the ruleset needs CAP_NET_ADMIN (run as root or grant cap_net_admin)"
        );
    }
    match e {
        DumpError::Reply(CtnlError::Kernel { errno }) if *errno == libc::EINVAL || *errno == libc::EOPNOTSUPP => {
            format!(
                "nf_tables over netlink: {e}: nf_tables is not available in this kernel (module nf_tables not loaded?)"
            )
        }
        DumpError::Io { op: "socket", source } if source.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
            format!("nf_tables over netlink: {e}: nfnetlink is not available in this kernel")
        }
        _ => format!("nf_tables over netlink: {e}"),
    }
}

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
mod tests {
    use super::*;
    use crate::netlink::nftables::{Chain, Set};
    use crate::snapshot::Snapshot;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v
    }

    fn rule(table: &str, handle: u64, packets: Option<u64>) -> Rule {
        let mut r = Rule::new(1, table, "c", handle);
        if let Some(p) = packets {
            r.push_expr(
                "counter",
                &[nla(1, &(p * 10).to_be_bytes()), nla(2, &p.to_be_bytes())].concat(),
            );
        }
        r
    }

    fn ruleset(gen: u32, rules: Vec<Rule>) -> Ruleset {
        let chain = |t: &str| Chain {
            family: 1,
            table: t.into(),
            name: "c".into(),
            handle: 1,
            hook: None,
            policy: None,
            chain_type: None,
        };
        Ruleset {
            generation: gen,
            chains: vec![chain("a"), chain("b")],
            rules,
            sets: vec![Set {
                family: 1,
                table: "a".into(),
                name: "s".into(),
                handle: 1,
                flags: 0,
                size: 0,
                elements: Some(3),
            }],
            ..Ruleset::default()
        }
    }

    fn emit(c: &mut Nftables, rs: Ruleset, now: f64) -> Snapshot {
        let mut out = Emitter::new();
        c.emit(rs, now, &mut out);
        Snapshot::new(SystemTime::now(), out.into_families())
    }

    fn handles(s: &Snapshot) -> Vec<String> {
        let f = s.family("netsight_nftables_rule_packets_total").expect("family");
        f.samples.iter().map(|x| x.labels[3].to_string()).collect()
    }

    fn collector(max_rules: usize, exclude: Option<&str>) -> Nftables {
        Nftables::new(&NftablesConfig {
            enabled: true,
            max_rules,
            include: None,
            exclude: exclude.map(str::to_string),
        })
        .expect("config")
    }

    #[test]
    fn rules_chains_sets_and_generation() {
        let mut c = collector(10, None);
        let s = emit(
            &mut c,
            ruleset(
                7,
                vec![rule("a", 1, Some(5)), rule("a", 2, None), rule("b", 3, Some(0))],
            ),
            100.0,
        );
        assert_eq!(s.value("netsight_nftables_ruleset_generation", &[]), Some(7.0));
        assert_eq!(
            s.value("netsight_nftables_ruleset_last_change_timestamp_seconds", &[]),
            Some(100.0)
        );
        assert_eq!(handles(&s), ["1", "3"], "rules without a counter are not exported");
        assert_eq!(
            s.value("netsight_nftables_rule_bytes_total", &[("handle", "1")]),
            Some(50.0)
        );
        assert_eq!(
            s.value(
                "netsight_nftables_rule_packets_total",
                &[("handle", "1"), ("verdict", "none")]
            ),
            Some(5.0)
        );
        assert_eq!(s.value("netsight_nftables_chain_rules", &[("table", "a")]), Some(2.0));
        assert_eq!(s.value("netsight_nftables_chain_rules", &[("table", "b")]), Some(1.0));
        assert_eq!(
            s.value("netsight_nftables_chain_info", &[("table", "a"), ("hook", "")]),
            Some(1.0)
        );
        assert_eq!(s.value("netsight_nftables_set_elements", &[("set", "s")]), Some(3.0));
        assert!(s.family("netsight_nftables_set_size_limit").is_none());
        assert_eq!(s.value("netsight_nftables_rule_series_capped", &[]), Some(0.0));
        // Same generation later: last change stays; a new generation moves it.
        let s = emit(&mut c, ruleset(7, vec![rule("a", 1, Some(6))]), 200.0);
        assert_eq!(
            s.value("netsight_nftables_ruleset_last_change_timestamp_seconds", &[]),
            Some(100.0)
        );
        let s = emit(&mut c, ruleset(8, vec![rule("a", 1, Some(0))]), 300.0);
        assert_eq!(
            s.value("netsight_nftables_ruleset_last_change_timestamp_seconds", &[]),
            Some(300.0)
        );
    }

    #[test]
    fn cap_keeps_busiest_then_sticks_until_the_generation_changes() {
        let mut c = collector(2, None);
        let rules = |p: [u64; 4]| (0..4).map(|i| rule("a", i as u64 + 1, Some(p[i]))).collect::<Vec<_>>();
        let s = emit(&mut c, ruleset(1, rules([1, 50, 3, 40])), 1.0);
        assert_eq!(handles(&s), ["2", "4", "other"]);
        assert_eq!(
            s.value("netsight_nftables_rule_packets_total", &[("handle", "other")]),
            Some(4.0)
        );
        assert_eq!(s.value("netsight_nftables_rule_series_capped", &[]), Some(2.0));
        // Same generation, rule 1 becomes the busiest: the selection does not churn.
        let s = emit(&mut c, ruleset(1, rules([900, 51, 3, 41])), 2.0);
        assert_eq!(handles(&s), ["2", "4", "other"]);
        assert_eq!(
            s.value("netsight_nftables_rule_packets_total", &[("handle", "other")]),
            Some(903.0)
        );
        // A new generation where rule 4 is gone: 2 keeps its series, the busiest other gets the slot.
        let s = emit(
            &mut c,
            ruleset(
                2,
                vec![rule("a", 1, Some(900)), rule("a", 2, Some(51)), rule("a", 3, Some(3))],
            ),
            3.0,
        );
        assert_eq!(handles(&s), ["1", "2", "other"]);
        // Every packet is in exactly one series.
        let total: f64 = s
            .family("netsight_nftables_rule_packets_total")
            .expect("f")
            .samples
            .iter()
            .filter_map(|x| x.value.as_f64())
            .sum();
        assert_eq!(total, 954.0);
    }

    #[test]
    fn table_filter_drops_excluded_tables() {
        let mut c = collector(10, Some("^b$"));
        let s = emit(
            &mut c,
            ruleset(1, vec![rule("a", 1, Some(1)), rule("b", 2, Some(1))]),
            1.0,
        );
        assert_eq!(handles(&s), ["1"]);
        assert!(s.value("netsight_nftables_chain_info", &[("table", "b")]).is_none());
        let bad = Nftables::new(&NftablesConfig {
            enabled: true,
            max_rules: 1,
            include: Some("(".into()),
            exclude: None,
        });
        assert!(bad.is_err());
    }

    #[test]
    fn fixture_tree_is_unavailable_not_a_panic() {
        let ctx = CollectContext::new("/nonexistent/proc", "/nonexistent/sys");
        let mut out = Emitter::new();
        let r = collector(1, None).collect(&ctx, &mut out);
        assert!(matches!(r, Err(CollectError::Unavailable(m)) if m.contains("netlink")));
    }

    #[test]
    fn explanations_name_the_capability() {
        let e = DumpError::Reply(CtnlError::Kernel { errno: libc::EPERM });
        assert!(explain(&e).contains("CAP_NET_ADMIN"), "{}", explain(&e));
        let e = DumpError::Reply(CtnlError::Kernel { errno: libc::EINVAL });
        assert!(explain(&e).contains("module nf_tables"), "{}", explain(&e));
    }
}
