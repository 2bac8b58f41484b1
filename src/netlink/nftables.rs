//! nf_tables over netlink (`NFNL_SUBSYS_NFTABLES`): request building and pure reply
//! parsers. The socket I/O lives in [`crate::collect::nftables`].
//!
//! A ruleset is read with five dumps (`NFT_MSG_GETTABLE`, `GETCHAIN`, `GETRULE`,
//! `GETSET`, `GETOBJ`, each answered with the matching `NFT_MSG_NEW*` messages and
//! `NLMSG_DONE`), bracketed by two `NFT_MSG_GETGEN` requests: when the generation
//! differs (or a dump carries `NLM_F_DUMP_INTR`) the ruleset changed while it was
//! read and the caller retries.
//!
//! What comes from `netlink-packet-netfilter` 0.4 and what is hand-built:
//! * every request is built with the crate's `NfTablesMessage` types;
//! * tables, chains and the generation are parsed with the crate's typed attributes
//!   (`TableAttribute`, `ChainAttribute`, `GenAttribute`);
//! * sets are parsed here: the crate's `SetAttribute` parser builds an unchecked
//!   `NlaBuffer` for `NFTA_SET_EXPR` and panics (length underflow) on a malformed
//!   one, which fuzzing found (the property tests in `tests/netlink_fuzz.rs` now feed
//!   every parser here arbitrary and mutated captured replies);
//! * rules, stateful objects and set elements are parsed here, by hand: the crate has
//!   no `counter`, `reject`, `match`/`target` (xt) or object types (objects are bare
//!   `DefaultNla`s), and its expression parser formats the whole attribute buffer with
//!   `{:?}` for every attribute it visits (eager error context), which would cost more
//!   CPU than `nft` itself at 10k rules. Rules keep each expression's raw
//!   `NFTA_EXPR_DATA` bytes, which is also what the analyzer compares.

use std::borrow::Cow;
use std::fmt;

use netlink_packet_core::{
    DecodeError, NetlinkHeader, NetlinkMessage, NetlinkPayload, ParseableParametrized, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, GenAttribute, GenMessage, Hook, NfTablesMessage, RuleMessage, SetElementList,
    SetElementMessage, SetMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

use super::ctnetlink::CtnlError;

pub const NFNL_SUBSYS_NFTABLES: u8 = 10;
pub const NFT_MSG_NEWTABLE: u8 = 0;
pub const NFT_MSG_GETTABLE: u8 = 1;
pub const NFT_MSG_NEWCHAIN: u8 = 3;
pub const NFT_MSG_GETCHAIN: u8 = 4;
pub const NFT_MSG_NEWRULE: u8 = 6;
pub const NFT_MSG_GETRULE: u8 = 7;
pub const NFT_MSG_NEWSET: u8 = 9;
pub const NFT_MSG_GETSET: u8 = 10;
pub const NFT_MSG_NEWSETELEM: u8 = 12;
pub const NFT_MSG_GETSETELEM: u8 = 13;
pub const NFT_MSG_NEWGEN: u8 = 15;
pub const NFT_MSG_GETGEN: u8 = 16;
pub const NFT_MSG_NEWOBJ: u8 = 18;
pub const NFT_MSG_GETOBJ: u8 = 19;

/// `NFT_OBJECT_COUNTER`.
pub const NFT_OBJECT_COUNTER: u32 = 1;
/// `NFT_SET_ANONYMOUS`: sets nft creates for `{ … }` literals inside a rule.
pub const NFT_SET_ANONYMOUS: u32 = 0x1;
pub const NFT_SET_MAP: u32 = 0x8;

const NFGENMSG_LEN: usize = 4;
#[cfg(test)]
use super::{NLMSG_DONE, NLMSG_ERROR, NLMSG_OVERRUN};
#[cfg(test)]
use netlink_packet_core::NLM_F_DUMP_INTR;

// Rule attributes (enum nft_rule_attributes).
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
/// libnftnl's rule userdata TLV carrying `comment "…"`.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

// Expression attributes used here.
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;
const NFTA_XT_NAME: u16 = 1;
const NFTA_XT_INFO: u16 = 3;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_PAYLOAD_SREG: u16 = 5;
const NFTA_META_SREG: u16 = 3;
const NFTA_CT_SREG: u16 = 4;

// Object attributes (enum nft_object_attributes).
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_OBJ_HANDLE: u16 = 6;

// Set attributes (enum nft_set_attributes).
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_HANDLE: u16 = 16;
const NFTA_SET_COUNT: u16 = 20;

// Set element attributes.
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

/// `NFPROTO_*` family name as nft prints it.
pub fn family_name(family: u8) -> Cow<'static, str> {
    Cow::Borrowed(match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        n => return Cow::Owned(format!("family{n}")),
    })
}

/// Hook name of a base chain as nft prints it (hook numbers depend on the family).
pub fn hook_name(family: u8, hooknum: u32) -> Cow<'static, str> {
    let name = match (family, hooknum) {
        (5, 0) => "ingress",
        (5, 1) => "egress",
        (3, 0) => "input",
        (3, 1) => "output",
        (3, 2) => "forward",
        (5 | 3, n) => return Cow::Owned(format!("hook{n}")),
        (_, 0) => "prerouting",
        (_, 1) => "input",
        (_, 2) => "forward",
        (_, 3) => "output",
        (_, 4) => "postrouting",
        (_, 5) => "ingress",
        (_, n) => return Cow::Owned(format!("hook{n}")),
    };
    Cow::Borrowed(name)
}

/// Policy of a base chain (`NF_DROP` = 0, `NF_ACCEPT` = 1).
pub fn policy_name(policy: u32) -> Cow<'static, str> {
    match policy {
        0 => Cow::Borrowed("drop"),
        1 => Cow::Borrowed("accept"),
        n => Cow::Owned(format!("verdict{n}")),
    }
}

/// The object kinds read by a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dump {
    Tables,
    Chains,
    Rules,
    Sets,
    Objects,
}

impl Dump {
    pub const ALL: [Dump; 5] = [Dump::Tables, Dump::Chains, Dump::Rules, Dump::Sets, Dump::Objects];

    /// Message type (within the subsystem) of the replies.
    pub fn reply_type(self) -> u8 {
        match self {
            Dump::Tables => NFT_MSG_NEWTABLE,
            Dump::Chains => NFT_MSG_NEWCHAIN,
            Dump::Rules => NFT_MSG_NEWRULE,
            Dump::Sets => NFT_MSG_NEWSET,
            Dump::Objects => NFT_MSG_NEWOBJ,
        }
    }
}

fn nft_type(msg: u8) -> u16 {
    (u16::from(NFNL_SUBSYS_NFTABLES) << 8) | u16::from(msg)
}

fn serialize(family: u8, inner: NfTablesMessage, flags: u16, seq: u32) -> Vec<u8> {
    let nfheader = NetfilterHeader::new(NetfilterProtoFamily::from(family), 0, 0);
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(NetfilterMessage::new(nfheader, inner)),
    );
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Dump request for every object of one kind in every family (`NFPROTO_UNSPEC`).
pub fn dump_request(dump: Dump, seq: u32) -> Vec<u8> {
    let inner = match dump {
        Dump::Tables => NfTablesMessage::GetTable(TableMessage { attributes: Vec::new() }),
        Dump::Chains => NfTablesMessage::GetChain(ChainMessage { attributes: Vec::new() }),
        Dump::Rules => NfTablesMessage::GetRule(RuleMessage { attributes: Vec::new() }),
        Dump::Sets => NfTablesMessage::GetSet(SetMessage { attributes: Vec::new() }),
        Dump::Objects => NfTablesMessage::GetObject(Vec::new()),
    };
    serialize(0, inner, NLM_F_REQUEST | NLM_F_DUMP, seq)
}

/// `NFT_MSG_GETGEN` (not a dump: one `NFT_MSG_NEWGEN` answers it).
pub fn getgen_request(seq: u32) -> Vec<u8> {
    serialize(
        0,
        NfTablesMessage::GetGen(GenMessage { attributes: Vec::new() }),
        NLM_F_REQUEST,
        seq,
    )
}

/// Dump of the elements of one set (used when the kernel does not report
/// `NFTA_SET_COUNT`).
pub fn setelem_request(family: u8, table: &str, set: &str, seq: u32) -> Vec<u8> {
    let inner = NfTablesMessage::GetSetElement(SetElementMessage {
        attributes: vec![
            SetElementList::Table(table.to_string()),
            SetElementList::Set(set.to_string()),
        ],
    });
    serialize(family, inner, NLM_F_REQUEST | NLM_F_DUMP, seq)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: u8,
    pub name: String,
    pub handle: u64,
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseHook {
    pub hooknum: u32,
    pub priority: i32,
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub family: u8,
    pub table: String,
    pub name: String,
    pub handle: u64,
    /// `Some` for base chains.
    pub hook: Option<BaseHook>,
    pub policy: Option<u32>,
    /// `filter`, `nat`, `route` (base chains).
    pub chain_type: Option<String>,
}

impl Chain {
    pub fn hook_label(&self) -> String {
        self.hook
            .as_ref()
            .map(|h| hook_name(self.family, h.hooknum).into_owned())
            .unwrap_or_default()
    }
    pub fn priority_label(&self) -> String {
        self.hook.as_ref().map(|h| h.priority.to_string()).unwrap_or_default()
    }
    pub fn policy_label(&self) -> String {
        match (&self.hook, self.policy) {
            (Some(_), Some(p)) => policy_name(p).into_owned(),
            // A base chain without an explicit policy accepts.
            (Some(_), None) => "accept".to_string(),
            (None, _) => String::new(),
        }
    }
}

/// One expression of a rule: its name and the raw `NFTA_EXPR_DATA` attributes,
/// borrowed from the rule (see [`Rule::exprs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expr<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

/// Where one expression lives in [`Rule`]'s buffer. Rules keep all expression data
/// in one allocation (and well-known names as `&'static str`): at 10k rules the
/// per-expression allocations otherwise dominate the collector's CPU time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExprSlot {
    name: Cow<'static, str>,
    start: usize,
    end: usize,
}

/// Expression names the kernel sends, interned so parsing does not allocate them.
const KNOWN_EXPRS: &[&str] = &[
    "bitwise",
    "byteorder",
    "cmp",
    "connlimit",
    "counter",
    "ct",
    "dup",
    "dynset",
    "exthdr",
    "fib",
    "flow_offload",
    "fwd",
    "hash",
    "immediate",
    "inner",
    "last",
    "limit",
    "log",
    "lookup",
    "masq",
    "match",
    "meta",
    "nat",
    "notrack",
    "numgen",
    "objref",
    "osf",
    "payload",
    "queue",
    "quota",
    "range",
    "redir",
    "reject",
    "rt",
    "secmark",
    "socket",
    "synproxy",
    "target",
    "tproxy",
    "tunnel",
    "xfrm",
];

fn intern(raw: &[u8]) -> Cow<'static, str> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match std::str::from_utf8(&raw[..end]) {
        Ok(n) => match KNOWN_EXPRS.binary_search(&n) {
            Ok(i) => Cow::Borrowed(KNOWN_EXPRS[i]),
            Err(_) => Cow::Owned(n.to_string()),
        },
        Err(_) => Cow::Owned(String::from_utf8_lossy(&raw[..end]).into_owned()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// What a rule does when all its matches hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No verdict: evaluation goes on with the next rule (e.g. a counter-only rule).
    None,
    Accept,
    Drop,
    Reject,
    Queue,
    Continue,
    Return,
    Jump(String),
    Goto(String),
    /// `snat`/`dnat`/`masquerade`/`redirect`: the packet leaves the chain.
    Nat,
    /// An xtables target other than ACCEPT/DROP/REJECT/RETURN (iptables-nft).
    Xt(String),
    /// `NF_STOLEN` / `NF_REPEAT` or a code this version does not know.
    Other(i32),
}

impl Verdict {
    /// True when a matching packet never reaches the next rule of the chain.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Verdict::Accept
                | Verdict::Drop
                | Verdict::Reject
                | Verdict::Queue
                | Verdict::Return
                | Verdict::Goto(_)
                | Verdict::Nat
        )
    }

    fn from_code(code: i32, chain: Option<String>) -> Verdict {
        match code {
            -1 | -2 => Verdict::Continue,
            -3 => Verdict::Jump(chain.unwrap_or_default()),
            -4 => Verdict::Goto(chain.unwrap_or_default()),
            -5 => Verdict::Return,
            c if c >= 0 => match c & 0xff {
                0 => Verdict::Drop,
                1 => Verdict::Accept,
                3 => Verdict::Queue,
                _ => Verdict::Other(c),
            },
            c => Verdict::Other(c),
        }
    }

    fn from_xt_target(name: &str) -> Verdict {
        match name {
            "ACCEPT" => Verdict::Accept,
            "DROP" => Verdict::Drop,
            "REJECT" => Verdict::Reject,
            "RETURN" => Verdict::Return,
            "NFQUEUE" | "QUEUE" => Verdict::Queue,
            "MASQUERADE" | "SNAT" | "DNAT" | "REDIRECT" => Verdict::Nat,
            other => Verdict::Xt(other.to_string()),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::None => f.write_str("none"),
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject => f.write_str("reject"),
            Verdict::Queue => f.write_str("queue"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump:{c}"),
            Verdict::Goto(c) => write!(f, "goto:{c}"),
            Verdict::Nat => f.write_str("nat"),
            Verdict::Xt(t) => write!(f, "xt:{t}"),
            Verdict::Other(c) => write!(f, "verdict{c}"),
        }
    }
}

/// How an expression takes part in matching, for the analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprClass {
    /// Loads packet or metadata into a register (`payload`, `meta`, `ct`…).
    Load,
    /// Decides whether the rule goes on (`cmp`, `lookup`, `range`, an xt `match`).
    Compare,
    /// No effect on matching or on the packet (`counter`, `log`, `objref`…).
    Neutral,
    /// Gives the verdict (`immediate` to the verdict register, `reject`, a target).
    Verdict,
    /// May stop the rule depending on state (`limit`, `quota`, `connlimit`).
    Stateful,
    /// Changes the packet or its metadata (`meta set`, `payload` mangling, `nat`…).
    Effect,
    /// Not known to this version.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    /// The `comment` from the rule's userdata (`NFTNL_UDATA_RULE_COMMENT`).
    pub comment: Option<String>,
    /// Every expression's data, back to back.
    buf: Vec<u8>,
    slots: Vec<ExprSlot>,
}

/// Iterates the attributes of `buf` (`struct nlattr` sequence, 4-byte aligned).
/// Yields an error and stops on a malformed header.
pub struct Attrs<'a> {
    buf: &'a [u8],
    pos: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    /// Type without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
    pub kind: u16,
    pub value: &'a [u8],
}

pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf, pos: 0 }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, String>;
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        if rest.len() < 4 {
            self.pos = self.buf.len();
            return Some(Err(format!("{} trailing attribute bytes", rest.len())));
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            self.pos = self.buf.len();
            return Some(Err(format!(
                "attribute {kind} length {len} out of bounds ({} left)",
                rest.len()
            )));
        }
        self.pos = self.pos.saturating_add((len + 3) & !3).min(self.buf.len());
        Some(Ok(Attr {
            kind,
            value: &rest[4..len],
        }))
    }
}

fn be_u32(v: &[u8]) -> Result<u32, String> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| format!("{} bytes where 4 expected", v.len()))
}

fn be_u64(v: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("{} bytes where 8 expected", v.len()))
}

/// A NUL-terminated (or unterminated) string attribute.
fn cstr(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// First attribute of kind `kind` in `buf`, ignoring malformed tails.
fn find_attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf)
        .map_while(Result::ok)
        .find(|a| a.kind == kind)
        .map(|a| a.value)
}

impl<'a> Expr<'a> {
    fn attr(&self, kind: u16) -> Option<&'a [u8]> {
        find_attr(self.data, kind)
    }

    /// Packets and bytes of a `counter` expression.
    pub fn counter(&self) -> Option<Counter> {
        if self.name != "counter" {
            return None;
        }
        Some(Counter {
            packets: self.attr(NFTA_COUNTER_PACKETS).and_then(|v| be_u64(v).ok())?,
            bytes: self.attr(NFTA_COUNTER_BYTES).and_then(|v| be_u64(v).ok())?,
        })
    }

    /// Name of an xt `match` / `target` expression.
    pub fn xt_name(&self) -> Option<String> {
        if self.name != "match" && self.name != "target" {
            return None;
        }
        self.attr(NFTA_XT_NAME).map(cstr)
    }

    /// The verdict this expression gives, if it gives one.
    pub fn verdict(&self) -> Option<Verdict> {
        match self.name {
            "immediate" => {
                let dreg = self.attr(NFTA_IMMEDIATE_DREG).and_then(|v| be_u32(v).ok())?;
                if dreg != NFT_REG_VERDICT {
                    return None;
                }
                let data = self.attr(NFTA_IMMEDIATE_DATA)?;
                let verdict = find_attr(data, NFTA_DATA_VERDICT)?;
                let code = find_attr(verdict, NFTA_VERDICT_CODE).and_then(|v| be_u32(v).ok())? as i32;
                let chain = find_attr(verdict, NFTA_VERDICT_CHAIN).map(cstr);
                Some(Verdict::from_code(code, chain))
            }
            "reject" => Some(Verdict::Reject),
            "queue" => Some(Verdict::Queue),
            "nat" | "masq" | "redir" => Some(Verdict::Nat),
            "target" => self.xt_name().map(|n| Verdict::from_xt_target(&n)),
            _ => None,
        }
    }

    pub fn class(&self) -> ExprClass {
        let has = |kind| self.attr(kind).is_some();
        match self.name {
            "payload" if has(NFTA_PAYLOAD_SREG) => ExprClass::Effect,
            "meta" if has(NFTA_META_SREG) => ExprClass::Effect,
            "ct" if has(NFTA_CT_SREG) => ExprClass::Effect,
            "lookup" if has(NFTA_LOOKUP_DREG) => ExprClass::Load,
            "immediate" => {
                if self.verdict().is_some() {
                    ExprClass::Verdict
                } else {
                    ExprClass::Load
                }
            }
            "payload" | "meta" | "ct" | "exthdr" | "bitwise" | "byteorder" | "fib" | "rt" | "socket" | "osf"
            | "xfrm" | "hash" | "numgen" | "inner" | "tunnel" => ExprClass::Load,
            "cmp" | "lookup" | "range" | "match" => ExprClass::Compare,
            "counter" | "log" | "objref" | "last" => ExprClass::Neutral,
            "reject" | "queue" => ExprClass::Verdict,
            "target" => match self.verdict() {
                Some(Verdict::Xt(_)) | None => ExprClass::Effect,
                Some(_) => ExprClass::Verdict,
            },
            "limit" | "quota" | "connlimit" => ExprClass::Stateful,
            "nat" | "masq" | "redir" | "notrack" | "dup" | "fwd" | "tproxy" | "synproxy" | "dynset"
            | "flow_offload" | "flowoffload" | "ct_expect" | "secmark" => ExprClass::Effect,
            _ => ExprClass::Unknown,
        }
    }
}

impl Rule {
    /// A rule without expressions (add them with [`Rule::push_expr`]).
    pub fn new(family: u8, table: impl Into<String>, chain: impl Into<String>, handle: u64) -> Rule {
        Rule {
            family,
            table: table.into(),
            chain: chain.into(),
            handle,
            comment: None,
            buf: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// Appends an expression (`name`, raw `NFTA_EXPR_DATA` attributes).
    pub fn push_expr(&mut self, name: &str, data: &[u8]) {
        self.push_slot(intern(name.as_bytes()), data);
    }

    fn push_slot(&mut self, name: Cow<'static, str>, data: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.slots.push(ExprSlot {
            name,
            start,
            end: self.buf.len(),
        });
    }

    /// The expressions, in order.
    pub fn exprs(&self) -> impl DoubleEndedIterator<Item = Expr<'_>> + ExactSizeIterator + '_ {
        self.slots.iter().map(|s| Expr {
            name: &s.name,
            data: &self.buf[s.start..s.end],
        })
    }

    /// The first `counter` expression's values (rules have at most one).
    pub fn counter(&self) -> Option<Counter> {
        self.exprs().find_map(|e| e.counter())
    }

    /// The last verdict-giving expression, or [`Verdict::None`].
    pub fn verdict(&self) -> Verdict {
        self.exprs().rev().find_map(|e| e.verdict()).unwrap_or(Verdict::None)
    }

    /// Names of the xt (`iptables-nft`) matches, in order.
    pub fn xt_matches(&self) -> Vec<String> {
        self.exprs()
            .filter(|e| e.name == "match")
            .filter_map(|e| e.xt_name())
            .collect()
    }

    /// The comment to show: the userdata comment, else the text of an xt `comment`
    /// match (iptables `-m comment`), else `(xt match: a,b)` for rules with opaque xt
    /// matches, else empty.
    pub fn display_comment(&self) -> String {
        if let Some(c) = &self.comment {
            return c.clone();
        }
        for e in self.exprs().filter(|e| e.name == "match") {
            if e.xt_name().as_deref() == Some("comment") {
                if let Some(info) = e.attr(NFTA_XT_INFO) {
                    return cstr(info);
                }
            }
        }
        let names: Vec<String> = self.xt_matches().into_iter().filter(|n| n != "comment").collect();
        if names.is_empty() {
            String::new()
        } else {
            format!("(xt match: {})", names.join(","))
        }
    }

    /// True when some expression is an xtables match or target.
    pub fn has_xt(&self) -> bool {
        self.exprs().any(|e| e.name == "match" || e.name == "target")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub family: u8,
    pub table: String,
    pub name: String,
    pub handle: u64,
    pub flags: u32,
    /// `size` declared for the set (`NFTA_SET_DESC_SIZE`), 0 when none.
    pub size: u32,
    /// Elements: `NFTA_SET_COUNT` when the kernel sends it (Linux ≥ 6.13), otherwise
    /// filled in from an element dump (interval end markers are not counted).
    pub elements: Option<u64>,
}

impl Set {
    pub fn is_anonymous(&self) -> bool {
        self.flags & NFT_SET_ANONYMOUS != 0
    }
}

/// A stateful object (`counter`, `quota`, `limit`…); only counters carry values here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub family: u8,
    pub table: String,
    pub name: String,
    pub handle: u64,
    pub obj_type: u32,
    pub counter: Option<Counter>,
}

/// One parsed message of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Table(Table),
    Chain(Chain),
    Rule(Rule),
    Set(Set),
    Object(Object),
    Generation(u32),
    /// Elements in one `NFT_MSG_NEWSETELEM` message (interval ends not counted).
    SetElements(u64),
}

/// What one received datagram contained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    pub items: Vec<Item>,
    /// `NLMSG_DONE` was seen.
    pub done: bool,
    /// A message carried `NLM_F_DUMP_INTR`: the ruleset changed during the dump.
    pub interrupted: bool,
}

fn malformed(offset: usize, message: impl Into<String>) -> CtnlError {
    CtnlError::Malformed {
        offset,
        message: message.into(),
    }
}

/// Parses the netlink messages in `bytes` of a reply whose messages have type
/// `NFT_MSG_<reply>` (one of the `NFT_MSG_NEW*` constants). Messages after
/// `NLMSG_DONE` are ignored; when `seq` is given every message must carry it.
pub fn parse_reply(bytes: &[u8], reply: u8, seq: Option<u32>) -> Result<Chunk, CtnlError> {
    let mut items = Vec::new();
    let walked = super::walk_messages(bytes, seq, |header, payload| {
        if header.kind != nft_type(reply) {
            return Err(malformed(
                header.offset,
                format!("message type {:#06x}, expected {:#06x}", header.kind, nft_type(reply)),
            ));
        }
        items.push(parse_message(reply, payload).map_err(|m| malformed(header.offset, m))?);
        // GETGEN is answered by one message, without NLMSG_DONE.
        Ok(if reply == NFT_MSG_NEWGEN {
            super::Walk::Done
        } else {
            super::Walk::Continue
        })
    })?;
    Ok(Chunk {
        items,
        done: walked.done,
        interrupted: walked.interrupted,
    })
}

fn decode(e: DecodeError) -> String {
    e.to_string()
}

fn parse_message(reply: u8, payload: &[u8]) -> Result<Item, String> {
    if payload.len() < NFGENMSG_LEN {
        return Err(format!("{} bytes where an nfgenmsg was expected", payload.len()));
    }
    let family = payload[0];
    let body = &payload[NFGENMSG_LEN..];
    match reply {
        NFT_MSG_NEWRULE => parse_rule(family, body).map(Item::Rule),
        NFT_MSG_NEWOBJ => parse_object(family, body).map(Item::Object),
        NFT_MSG_NEWSETELEM => count_set_elements(body).map(Item::SetElements),
        NFT_MSG_NEWSET => parse_set(family, body).map(Item::Set),
        _ => {
            let msg = NetfilterMessage::parse_with_param(payload, nft_type(reply)).map_err(decode)?;
            let NetfilterMessageInner::NfTables(nft) = msg.inner else {
                return Err("not an nf_tables message".into());
            };
            match nft {
                NfTablesMessage::NewTable(t) => Ok(Item::Table(table(family, t.attributes))),
                NfTablesMessage::NewChain(c) => chain(family, c.attributes).map(Item::Chain),
                NfTablesMessage::NewGen(g) => g
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        GenAttribute::Id(id) => Some(Item::Generation(*id)),
                        _ => None,
                    })
                    .ok_or_else(|| "NFT_MSG_NEWGEN without NFTA_GEN_ID".to_string()),
                other => Err(format!("unexpected message {:?}", other.message_type())),
            }
        }
    }
}

fn table(family: u8, attributes: Vec<TableAttribute>) -> Table {
    let mut t = Table {
        family,
        name: String::new(),
        handle: 0,
        flags: 0,
    };
    for a in attributes {
        match a {
            TableAttribute::Name(n) => t.name = n,
            TableAttribute::Handle(h) => t.handle = h,
            TableAttribute::Flags(f) => t.flags = f.bits(),
            _ => {}
        }
    }
    t
}

fn chain(family: u8, attributes: Vec<ChainAttribute>) -> Result<Chain, String> {
    let mut c = Chain {
        family,
        table: String::new(),
        name: String::new(),
        handle: 0,
        hook: None,
        policy: None,
        chain_type: None,
    };
    for a in attributes {
        match a {
            ChainAttribute::Table(t) => c.table = t,
            ChainAttribute::Name(n) => c.name = n,
            ChainAttribute::Handle(h) => c.handle = h,
            ChainAttribute::Policy(p) => c.policy = Some(p),
            ChainAttribute::Type(t) => c.chain_type = Some(t),
            ChainAttribute::Hook(hooks) => {
                let mut h = BaseHook {
                    hooknum: 0,
                    priority: 0,
                    devices: Vec::new(),
                };
                let mut have_num = false;
                for hook in hooks {
                    match hook {
                        Hook::Number(n) => {
                            h.hooknum = u32::from(n);
                            have_num = true;
                        }
                        Hook::Priority(p) => h.priority = p as i32,
                        Hook::NetDeviceName(d) => h.devices.push(d),
                        Hook::NetDevices(devs) => {
                            for d in devs {
                                let mut v = vec![0u8; netlink_packet_core::Nla::value_len(&d)];
                                netlink_packet_core::Nla::emit_value(&d, &mut v);
                                h.devices.push(cstr(&v));
                            }
                        }
                        _ => {}
                    }
                }
                if !have_num {
                    return Err(format!("chain {}: NFTA_CHAIN_HOOK without a hook number", c.name));
                }
                c.hook = Some(h);
            }
            _ => {}
        }
    }
    Ok(c)
}

fn parse_set(family: u8, body: &[u8]) -> Result<Set, String> {
    let mut s = Set {
        family,
        table: String::new(),
        name: String::new(),
        handle: 0,
        flags: 0,
        size: 0,
        elements: None,
    };
    for a in attrs(body) {
        let a = a?;
        match a.kind {
            NFTA_SET_TABLE => s.table = cstr(a.value),
            NFTA_SET_NAME => s.name = cstr(a.value),
            NFTA_SET_FLAGS => s.flags = be_u32(a.value).map_err(|e| format!("NFTA_SET_FLAGS: {e}"))?,
            NFTA_SET_HANDLE => s.handle = be_u64(a.value).map_err(|e| format!("NFTA_SET_HANDLE: {e}"))?,
            NFTA_SET_COUNT => {
                s.elements = Some(u64::from(be_u32(a.value).map_err(|e| format!("NFTA_SET_COUNT: {e}"))?))
            }
            NFTA_SET_DESC => {
                for d in attrs(a.value) {
                    let d = d?;
                    if d.kind == NFTA_SET_DESC_SIZE {
                        s.size = be_u32(d.value).map_err(|e| format!("NFTA_SET_DESC_SIZE: {e}"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

fn parse_rule(family: u8, body: &[u8]) -> Result<Rule, String> {
    let mut rule = Rule::new(family, String::new(), String::new(), 0);
    let mut have_handle = false;
    for a in attrs(body) {
        let a = a?;
        match a.kind {
            NFTA_RULE_TABLE => rule.table = cstr(a.value),
            NFTA_RULE_CHAIN => rule.chain = cstr(a.value),
            NFTA_RULE_HANDLE => {
                rule.handle = be_u64(a.value).map_err(|e| format!("NFTA_RULE_HANDLE: {e}"))?;
                have_handle = true;
            }
            NFTA_RULE_EXPRESSIONS => {
                rule.buf.reserve(a.value.len());
                for elem in attrs(a.value) {
                    let elem = elem?;
                    if elem.kind != NFTA_LIST_ELEM {
                        continue;
                    }
                    let mut name = None;
                    let mut data: &[u8] = &[];
                    for ea in attrs(elem.value) {
                        let ea = ea?;
                        match ea.kind {
                            NFTA_EXPR_NAME => name = Some(intern(ea.value)),
                            NFTA_EXPR_DATA => data = ea.value,
                            _ => {}
                        }
                    }
                    let name = name.ok_or("expression without NFTA_EXPR_NAME")?;
                    // Validate the nested attributes once so later lookups can ignore errors.
                    for d in attrs(data) {
                        d.map_err(|e| format!("expression {name}: {e}"))?;
                    }
                    rule.push_slot(name, data);
                }
            }
            NFTA_RULE_USERDATA => rule.comment = udata_comment(a.value),
            NFTA_RULE_POSITION => {}
            _ => {}
        }
    }
    if !have_handle {
        return Err("rule without NFTA_RULE_HANDLE".into());
    }
    Ok(rule)
}

/// The comment TLV of libnftnl's rule userdata (`type u8, len u8, value`).
fn udata_comment(mut ud: &[u8]) -> Option<String> {
    while ud.len() >= 2 {
        let (ty, len) = (ud[0], usize::from(ud[1]));
        let value = ud.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            return Some(cstr(value));
        }
        ud = &ud[2 + len..];
    }
    None
}

fn parse_object(family: u8, body: &[u8]) -> Result<Object, String> {
    let mut o = Object {
        family,
        table: String::new(),
        name: String::new(),
        handle: 0,
        obj_type: 0,
        counter: None,
    };
    let mut data: &[u8] = &[];
    for a in attrs(body) {
        let a = a?;
        match a.kind {
            NFTA_OBJ_TABLE => o.table = cstr(a.value),
            NFTA_OBJ_NAME => o.name = cstr(a.value),
            NFTA_OBJ_TYPE => o.obj_type = be_u32(a.value).map_err(|e| format!("NFTA_OBJ_TYPE: {e}"))?,
            NFTA_OBJ_HANDLE => o.handle = be_u64(a.value).map_err(|e| format!("NFTA_OBJ_HANDLE: {e}"))?,
            NFTA_OBJ_DATA => data = a.value,
            _ => {}
        }
    }
    if o.obj_type == NFT_OBJECT_COUNTER {
        let mut c = Counter::default();
        for a in attrs(data) {
            let a = a?;
            match a.kind {
                NFTA_COUNTER_BYTES => c.bytes = be_u64(a.value).map_err(|e| format!("counter bytes: {e}"))?,
                NFTA_COUNTER_PACKETS => c.packets = be_u64(a.value).map_err(|e| format!("counter packets: {e}"))?,
                _ => {}
            }
        }
        o.counter = Some(c);
    }
    Ok(o)
}

fn count_set_elements(body: &[u8]) -> Result<u64, String> {
    let mut n = 0;
    for a in attrs(body) {
        let a = a?;
        if a.kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for elem in attrs(a.value) {
            let elem = elem?;
            if elem.kind != NFTA_LIST_ELEM {
                continue;
            }
            let mut end = false;
            for ea in attrs(elem.value) {
                let ea = ea?;
                if ea.kind == NFTA_SET_ELEM_FLAGS {
                    end = be_u32(ea.value).map(|f| f & NFT_SET_ELEM_INTERVAL_END != 0)?;
                }
            }
            if !end {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// A whole ruleset as read from the kernel at one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub generation: u32,
    pub tables: Vec<Table>,
    pub chains: Vec<Chain>,
    /// In dump order: by table, chain, then position in the chain.
    pub rules: Vec<Rule>,
    pub sets: Vec<Set>,
    pub objects: Vec<Object>,
}

impl Ruleset {
    /// Adds the items of one dump chunk.
    pub fn absorb(&mut self, items: Vec<Item>) {
        for item in items {
            match item {
                Item::Table(t) => self.tables.push(t),
                Item::Chain(c) => self.chains.push(c),
                Item::Rule(r) => self.rules.push(r),
                Item::Set(s) => self.sets.push(s),
                Item::Object(o) => self.objects.push(o),
                Item::Generation(g) => self.generation = g,
                Item::SetElements(_) => {}
            }
        }
    }

    /// Rules of one chain, in order.
    pub fn chain_rules<'a>(&'a self, c: &'a Chain) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.family == c.family && r.table == c.table && r.chain == c.name)
    }

    /// Keeps only the tables `keep(family, table)` accepts, with their contents.
    pub fn retain_tables(&mut self, keep: impl Fn(u8, &str) -> bool) {
        self.tables.retain(|t| keep(t.family, &t.name));
        self.chains.retain(|c| keep(c.family, &c.table));
        self.rules.retain(|r| keep(r.family, &r.table));
        self.sets.retain(|s| keep(s.family, &s.table));
        self.objects.retain(|o| keep(o.family, &o.table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &[u8] = include_bytes!("../../tests/fixtures/netlink/nft_tables.bin");
    const CHAINS: &[u8] = include_bytes!("../../tests/fixtures/netlink/nft_chains.bin");
    const RULES: &[u8] = include_bytes!("../../tests/fixtures/netlink/nft_rules.bin");
    const SETS: &[u8] = include_bytes!("../../tests/fixtures/netlink/nft_sets.bin");
    const OBJECTS: &[u8] = include_bytes!("../../tests/fixtures/netlink/nft_objects.bin");
    const GEN: &[u8] = include_bytes!("../../tests/fixtures/netlink/nft_gen.bin");
    /// `nft -j list ruleset` printed right after the fixtures were captured.
    const JSON: &str = include_str!("../../tests/fixtures/netlink/nft_ruleset.json");

    const FIXTURES: &[(&[u8], u8)] = &[
        (TABLES, NFT_MSG_NEWTABLE),
        (CHAINS, NFT_MSG_NEWCHAIN),
        (RULES, NFT_MSG_NEWRULE),
        (SETS, NFT_MSG_NEWSET),
        (OBJECTS, NFT_MSG_NEWOBJ),
        (GEN, NFT_MSG_NEWGEN),
    ];

    fn ruleset() -> Ruleset {
        let mut rs = Ruleset::default();
        for (bytes, reply) in FIXTURES {
            let chunk = parse_reply(bytes, *reply, None).expect("fixture parses");
            assert!(chunk.done, "reply {reply} complete");
            assert!(!chunk.interrupted);
            rs.absorb(chunk.items);
        }
        rs
    }

    fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = (16 + payload.len()) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
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

    fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(kind | 0x8000, &parts.concat())
    }

    fn expr(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
        nested(
            NFTA_LIST_ELEM,
            &[
                nla(NFTA_EXPR_NAME, format!("{name}\0").as_bytes()),
                nested(NFTA_EXPR_DATA, data),
            ],
        )
    }

    fn verdict_expr(code: i32, chain: Option<&str>) -> Vec<u8> {
        let mut v = vec![nla(NFTA_VERDICT_CODE, &(code as u32).to_be_bytes())];
        if let Some(c) = chain {
            v.push(nla(NFTA_VERDICT_CHAIN, format!("{c}\0").as_bytes()));
        }
        expr(
            "immediate",
            &[
                nla(NFTA_IMMEDIATE_DREG, &0u32.to_be_bytes()),
                nested(NFTA_IMMEDIATE_DATA, &[nested(NFTA_DATA_VERDICT, &v)]),
            ],
        )
    }

    fn counter_expr(packets: u64, bytes: u64) -> Vec<u8> {
        expr(
            "counter",
            &[
                nla(NFTA_COUNTER_BYTES, &bytes.to_be_bytes()),
                nla(NFTA_COUNTER_PACKETS, &packets.to_be_bytes()),
            ],
        )
    }

    fn rule_msg(family: u8, handle: u64, exprs: &[Vec<u8>], udata: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![family, 0, 0, 0];
        p.extend(nla(NFTA_RULE_TABLE, b"t\0"));
        p.extend(nla(NFTA_RULE_CHAIN, b"c\0"));
        p.extend(nla(NFTA_RULE_HANDLE, &handle.to_be_bytes()));
        p.extend(nested(NFTA_RULE_EXPRESSIONS, exprs));
        if let Some(u) = udata {
            p.extend(nla(NFTA_RULE_USERDATA, u));
        }
        nlmsg(nft_type(NFT_MSG_NEWRULE), 2, 1, &p)
    }

    fn done(seq: u32) -> Vec<u8> {
        nlmsg(NLMSG_DONE, 2, seq, &0i32.to_ne_bytes())
    }

    fn one_rule(bytes: &[u8]) -> Rule {
        let c = parse_reply(bytes, NFT_MSG_NEWRULE, None).expect("parses");
        match c.items.as_slice() {
            [Item::Rule(r)] => r.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_bytes() {
        let req = dump_request(Dump::Rules, 7);
        crate::netlink::assert_request_header(&req, 20, 0x0a07, NLM_F_REQUEST | NLM_F_DUMP, 7);
        assert_eq!(&req[16..20], &[0, 0, 0, 0]);
        let types: Vec<u16> = Dump::ALL
            .iter()
            .map(|d| u16::from_ne_bytes(dump_request(*d, 1)[4..6].try_into().expect("2")))
            .collect();
        assert_eq!(types, [0x0a01, 0x0a04, 0x0a07, 0x0a0a, 0x0a13]);
        let gen = getgen_request(3);
        assert_eq!(u16::from_ne_bytes(gen[4..6].try_into().expect("2")), 0x0a10);
        assert_eq!(u16::from_ne_bytes(gen[6..8].try_into().expect("2")), NLM_F_REQUEST);
        let se = setelem_request(1, "filter", "blocked4", 9);
        assert_eq!(u16::from_ne_bytes(se[4..6].try_into().expect("2")), 0x0a0d);
        assert_eq!(se[16], 1, "family in nfgenmsg");
        let body: Vec<Attr> = attrs(&se[20..]).map(|a| a.expect("attr")).collect();
        assert_eq!(body.len(), 2);
        assert_eq!((body[0].kind, cstr(body[0].value).as_str()), (1, "filter"));
        assert_eq!((body[1].kind, cstr(body[1].value).as_str()), (2, "blocked4"));
    }

    #[test]
    fn captured_ruleset_matches_nft_json() {
        let rs = ruleset();
        assert!(rs.generation > 0);
        let json: serde_json::Value = serde_json::from_str(JSON).expect("json");
        let items = json["nftables"].as_array().expect("array");
        let s = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        let (mut rules, mut chains, mut tables, mut sets) = (0, 0, 0, 0);
        for item in items {
            if let Some(t) = item.get("table") {
                tables += 1;
                assert!(rs
                    .tables
                    .iter()
                    .any(|x| x.name == s(&t["name"]) && family_name(x.family) == s(&t["family"])));
            }
            if let Some(c) = item.get("chain") {
                chains += 1;
                let got = rs
                    .chains
                    .iter()
                    .find(|x| x.name == s(&c["name"]) && x.table == s(&c["table"]))
                    .expect("chain");
                let want = |k: &str| c.get(k).map(&s).unwrap_or_default();
                assert_eq!(got.hook_label(), want("hook"), "{c}");
                assert_eq!(got.priority_label(), want("prio"), "{c}");
                assert_eq!(got.policy_label(), want("policy"), "{c}");
                if let Some(dev) = c.get("dev") {
                    assert_eq!(got.hook.as_ref().expect("hook").devices, vec![s(dev)]);
                }
            }
            if let Some(r) = item.get("rule") {
                rules += 1;
                let handle = r["handle"].as_u64().expect("handle");
                let got = rs
                    .rules
                    .iter()
                    .find(|x| x.handle == handle && x.table == s(&r["table"]) && x.chain == s(&r["chain"]))
                    .expect("rule");
                let exprs = r["expr"].as_array().expect("expr");
                let counter = exprs.iter().find_map(|e| {
                    let c = e.get("counter")?;
                    Some(Counter {
                        packets: c.get("packets")?.as_u64()?,
                        bytes: c.get("bytes")?.as_u64()?,
                    })
                });
                assert_eq!(got.counter(), counter, "{r}");
                if let Some(c) = r.get("comment") {
                    assert_eq!(got.comment.as_deref(), c.as_str());
                }
                let last = exprs
                    .last()
                    .and_then(|e| e.as_object())
                    .and_then(|o| o.keys().next().cloned());
                let v = got.verdict().to_string();
                match last.as_deref() {
                    Some("jump") | Some("goto") => assert!(v.starts_with(last.as_deref().expect("k"))),
                    Some(k @ ("accept" | "drop" | "reject" | "return" | "continue")) => assert_eq!(v, k),
                    _ => {}
                }
            }
            if let Some(set) = item.get("set").or_else(|| item.get("map")) {
                sets += 1;
                let got = rs.sets.iter().find(|x| x.name == s(&set["name"])).expect("set");
                let n = set["elem"].as_array().map(|a| a.len()).unwrap_or(0) as u64;
                assert_eq!(got.elements, Some(n));
                assert_eq!(
                    u64::from(got.size),
                    set.get("size").and_then(|v| v.as_u64()).unwrap_or(0)
                );
            }
            if let Some(o) = item.get("counter") {
                let got = rs.objects.iter().find(|x| x.name == s(&o["name"])).expect("object");
                assert_eq!(got.counter.map(|c| c.packets), o["packets"].as_u64());
                assert_eq!(got.counter.map(|c| c.bytes), o["bytes"].as_u64());
            }
        }
        assert_eq!(rules, rs.rules.len());
        assert_eq!(chains, rs.chains.len());
        assert_eq!(tables, rs.tables.len());
        assert_eq!(sets, rs.sets.iter().filter(|s| !s.is_anonymous()).count());
        assert!(rules >= 15 && chains >= 8 && tables >= 5, "{rules} {chains} {tables}");
        // Some rule counted real traffic when the fixture was captured.
        assert!(rs.rules.iter().filter_map(Rule::counter).any(|c| c.packets > 0));
    }

    #[test]
    fn verdicts_comments_and_counters_of_hand_built_rules() {
        let comment = [&[0u8, 6][..], b"hello\0"].concat();
        let r = one_rule(&rule_msg(
            1,
            42,
            &[counter_expr(3, 180), verdict_expr(-3, Some("audit"))],
            Some(&comment),
        ));
        assert_eq!(
            (r.family, r.table.as_str(), r.chain.as_str(), r.handle),
            (1, "t", "c", 42)
        );
        assert_eq!(r.counter(), Some(Counter { packets: 3, bytes: 180 }));
        assert_eq!(r.verdict(), Verdict::Jump("audit".into()));
        assert_eq!(r.verdict().to_string(), "jump:audit");
        assert_eq!(r.display_comment(), "hello");
        for (code, want) in [
            (1, "accept"),
            (0, "drop"),
            // NF_DROP_ERR(-EPERM) and NF_QUEUE_NR(5) keep their low byte.
            ((1 << 16), "drop"),
            ((5 << 16) | 3, "queue"),
            (-1, "continue"),
            (-5, "return"),
            (2, "verdict2"),
        ] {
            let r = one_rule(&rule_msg(2, 1, &[verdict_expr(code, None)], None));
            assert_eq!(r.verdict().to_string(), want, "code {code}");
        }
        let r = one_rule(&rule_msg(2, 1, &[verdict_expr(-4, Some("x"))], None));
        assert_eq!(r.verdict(), Verdict::Goto("x".into()));
        assert!(r.verdict().is_terminal());
        let r = one_rule(&rule_msg(2, 1, &[counter_expr(0, 0)], None));
        assert_eq!(r.verdict(), Verdict::None);
        assert!(!r.verdict().is_terminal());
        assert_eq!(
            one_rule(&rule_msg(2, 1, &[expr("reject", &[])], None)).verdict(),
            Verdict::Reject
        );
        assert_eq!(
            one_rule(&rule_msg(2, 1, &[expr("masq", &[])], None))
                .verdict()
                .to_string(),
            "nat"
        );
        // Userdata with another TLV before the comment, and a truncated one.
        let ud = [&[1u8, 4, 0, 0, 0, 1][..], &[0, 3], b"ab\0"].concat();
        assert_eq!(one_rule(&rule_msg(2, 1, &[], Some(&ud))).comment.as_deref(), Some("ab"));
        assert_eq!(one_rule(&rule_msg(2, 1, &[], Some(&[0, 9, b'a']))).comment, None);
    }

    #[test]
    fn xt_matches_and_targets_are_reported_not_fatal() {
        let xt = |kind: &str, name: &str, info: &[u8]| {
            expr(
                kind,
                &[
                    nla(NFTA_XT_NAME, format!("{name}\0").as_bytes()),
                    nla(2, &0u32.to_be_bytes()),
                    nla(NFTA_XT_INFO, info),
                ],
            )
        };
        let mut comment = b"from iptables".to_vec();
        comment.resize(256, 0);
        let r = one_rule(&rule_msg(
            2,
            5,
            &[
                xt("match", "comment", &comment),
                counter_expr(1, 2),
                xt("target", "REJECT", &[0; 4]),
            ],
            None,
        ));
        assert_eq!(r.display_comment(), "from iptables");
        assert_eq!(r.verdict(), Verdict::Reject);
        assert!(r.has_xt());
        let r = one_rule(&rule_msg(
            2,
            6,
            &[
                xt("match", "conntrack", &[1, 2, 3]),
                xt("match", "multiport", &[9]),
                xt("target", "LOG", &[]),
            ],
            None,
        ));
        assert_eq!(r.display_comment(), "(xt match: conntrack,multiport)");
        assert_eq!(r.verdict().to_string(), "xt:LOG");
        let classes: Vec<ExprClass> = r.exprs().map(|e| e.class()).collect();
        assert_eq!(classes[2], ExprClass::Effect);
        assert_eq!(classes[0], ExprClass::Compare);
        // The rule's own comment wins over the xt comment match.
        let r = one_rule(&rule_msg(
            2,
            7,
            &[xt("match", "comment", &comment)],
            Some(&[0, 3, b'o', b'k', 0]),
        ));
        assert_eq!(r.display_comment(), "ok");
    }

    #[test]
    fn objects_and_set_elements() {
        let mut p = vec![1u8, 0, 0, 0];
        p.extend(nla(NFTA_OBJ_TABLE, b"filter\0"));
        p.extend(nla(NFTA_OBJ_NAME, b"hits\0"));
        p.extend(nla(NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes()));
        p.extend(nested(
            NFTA_OBJ_DATA,
            &[
                nla(NFTA_COUNTER_BYTES, &99u64.to_be_bytes()),
                nla(NFTA_COUNTER_PACKETS, &2u64.to_be_bytes()),
            ],
        ));
        p.extend(nla(NFTA_OBJ_HANDLE, &4u64.to_be_bytes()));
        let bytes = [nlmsg(nft_type(NFT_MSG_NEWOBJ), 2, 1, &p), done(1)].concat();
        let c = parse_reply(&bytes, NFT_MSG_NEWOBJ, Some(1)).expect("ok");
        assert!(c.done);
        assert_eq!(
            c.items,
            vec![Item::Object(Object {
                family: 1,
                table: "filter".into(),
                name: "hits".into(),
                handle: 4,
                obj_type: 1,
                counter: Some(Counter { packets: 2, bytes: 99 }),
            })]
        );
        // Two intervals: start, end, start, end → 2 elements; plus one plain key.
        let elem = |flags: Option<u32>| {
            let mut parts = vec![nested(1, &[nla(1, &[10, 0, 0, 0])])];
            if let Some(f) = flags {
                parts.push(nla(NFTA_SET_ELEM_FLAGS, &f.to_be_bytes()));
            }
            nested(NFTA_LIST_ELEM, &parts)
        };
        let mut p = vec![1u8, 0, 0, 0];
        p.extend(nla(1, b"filter\0"));
        p.extend(nla(2, b"s\0"));
        p.extend(nested(
            NFTA_SET_ELEM_LIST_ELEMENTS,
            &[
                elem(None),
                elem(Some(NFT_SET_ELEM_INTERVAL_END)),
                elem(Some(0)),
                elem(Some(1)),
                elem(None),
            ],
        ));
        let c = parse_reply(&nlmsg(nft_type(NFT_MSG_NEWSETELEM), 2, 1, &p), NFT_MSG_NEWSETELEM, None).expect("ok");
        assert_eq!(c.items, vec![Item::SetElements(3)]);
    }

    #[test]
    fn kernel_errors_interrupts_and_wrong_messages() {
        let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
        payload.extend_from_slice(&dump_request(Dump::Rules, 1)[..16]);
        let err = parse_reply(&nlmsg(NLMSG_ERROR, 0, 1, &payload), NFT_MSG_NEWRULE, Some(1)).expect_err("EPERM");
        assert_eq!(err, CtnlError::Kernel { errno: libc::EPERM });
        // An ACK is not an error.
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_reply(&nlmsg(NLMSG_ERROR, 0, 1, &ack), NFT_MSG_NEWRULE, None),
            Ok(Chunk::default())
        );
        // NLM_F_DUMP_INTR is reported.
        let r = rule_msg(2, 1, &[], None);
        let mut intr = r.clone();
        intr[6..8].copy_from_slice(&(2u16 | NLM_F_DUMP_INTR).to_ne_bytes());
        assert!(parse_reply(&intr, NFT_MSG_NEWRULE, None).expect("ok").interrupted);
        assert!(!parse_reply(&r, NFT_MSG_NEWRULE, None).expect("ok").interrupted);
        // Wrong sequence number, wrong message type, unexpected message.
        assert!(parse_reply(&r, NFT_MSG_NEWRULE, Some(2)).is_err());
        assert!(parse_reply(&r, NFT_MSG_NEWCHAIN, None).is_err());
        assert!(parse_reply(&nlmsg(NLMSG_OVERRUN, 0, 1, &[]), NFT_MSG_NEWRULE, None).is_err());
        // A rule without a handle, an expression without a name.
        let mut p = vec![2u8, 0, 0, 0];
        p.extend(nla(NFTA_RULE_TABLE, b"t\0"));
        assert!(parse_reply(&nlmsg(nft_type(NFT_MSG_NEWRULE), 2, 1, &p), NFT_MSG_NEWRULE, None).is_err());
        let nameless = nested(NFTA_LIST_ELEM, &[nested(NFTA_EXPR_DATA, &[])]);
        assert!(parse_reply(&rule_msg(2, 1, &[nameless], None), NFT_MSG_NEWRULE, None).is_err());
        // Messages after NLMSG_DONE are ignored.
        let c = parse_reply(&[done(1), vec![0xff; 7]].concat(), NFT_MSG_NEWRULE, None).expect("ok");
        assert!(c.done && c.items.is_empty());
    }

    #[test]
    fn expression_classes() {
        let load = expr("payload", &[nla(1, &1u32.to_be_bytes())]);
        let set_payload = expr("payload", &[nla(NFTA_PAYLOAD_SREG, &1u32.to_be_bytes())]);
        let map = expr("lookup", &[nla(NFTA_LOOKUP_DREG, &0u32.to_be_bytes())]);
        let r = one_rule(&rule_msg(
            1,
            1,
            &[
                load,
                set_payload,
                expr("cmp", &[]),
                map,
                expr("lookup", &[]),
                expr("limit", &[]),
                expr("frobnicate", &[]),
                counter_expr(0, 0),
            ],
            None,
        ));
        let classes: Vec<ExprClass> = r.exprs().map(|e| e.class()).collect();
        use ExprClass::*;
        assert_eq!(
            classes,
            [Load, Effect, Compare, Load, Compare, Stateful, Unknown, Neutral]
        );
    }

    #[test]
    fn empty_input_is_an_empty_chunk() {
        assert_eq!(parse_reply(&[], NFT_MSG_NEWRULE, None), Ok(Chunk::default()));
    }
}
