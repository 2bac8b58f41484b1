//! ctnetlink per-CPU statistics (`conntrack -S`): request building and a pure reply
//! parser. The socket I/O lives in [`crate::collect::conntrack`].
//!
//! A dump of `IPCTNL_MSG_CT_GET_STATS_CPU` (subsystem `NFNL_SUBSYS_CTNETLINK`) or
//! `IPCTNL_MSG_EXP_GET_STATS_CPU` (`NFNL_SUBSYS_CTNETLINK_EXP`) returns one message
//! per possible CPU: an `nfgenmsg` whose `res_id` is the CPU number, followed by
//! `CTA_STATS_*` attributes holding big-endian 32-bit counters, and ends with
//! `NLMSG_DONE`.

use std::borrow::Cow;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLA_TYPE_MASK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily, NetfilterSubsystem,
};

pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;
pub const NFNL_SUBSYS_CTNETLINK_EXP: u8 = 2;
pub const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
pub const IPCTNL_MSG_EXP_GET_STATS_CPU: u8 = 3;
const NFNETLINK_V0: u8 = 0;
const NLMSG_HDRLEN: usize = 16;

/// Which per-CPU statistics dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsDump {
    /// Connection tracking table statistics (`enum ctattr_stats_cpu`).
    Conntrack,
    /// Expectation statistics (`enum ctattr_expect_stats`).
    Expect,
}

impl StatsDump {
    pub fn subsys(self) -> u8 {
        match self {
            StatsDump::Conntrack => NFNL_SUBSYS_CTNETLINK,
            StatsDump::Expect => NFNL_SUBSYS_CTNETLINK_EXP,
        }
    }

    pub fn msg_type(self) -> u8 {
        match self {
            StatsDump::Conntrack => IPCTNL_MSG_CT_GET_STATS_CPU,
            StatsDump::Expect => IPCTNL_MSG_EXP_GET_STATS_CPU,
        }
    }

    /// `nlmsg_type` of the request.
    pub fn nlmsg_type(self) -> u16 {
        (u16::from(self.subsys()) << 8) | u16::from(self.msg_type())
    }

    /// Whether a reply message of type `ty` belongs to this dump. The kernel answers
    /// the expectation dump with subsystem `NFNL_SUBSYS_CTNETLINK` instead of
    /// `NFNL_SUBSYS_CTNETLINK_EXP` (`ctnetlink_exp_stat_fill_cpu`); both are accepted.
    pub fn is_reply_type(self, ty: u16) -> bool {
        let quirk = (u16::from(NFNL_SUBSYS_CTNETLINK) << 8) | u16::from(self.msg_type());
        ty == self.nlmsg_type() || (self == StatsDump::Expect && ty == quirk)
    }

    /// The exported field name of attribute `attr`, or `None` for attributes the
    /// kernel no longer maintains. Unknown future attributes get a name from their
    /// number (`attr16`, `expect_attr4`) so they are kept, not dropped.
    pub fn stat_name(self, attr: u16) -> Option<Cow<'static, str>> {
        let known = match (self, attr) {
            (_, 0) => return None,
            // CTA_STATS_SEARCHED, _NEW, _IGNORE, _DELETE, _DELETE_LIST: "no longer used".
            (StatsDump::Conntrack, 1 | 3 | 5 | 6 | 7) => return None,
            (StatsDump::Conntrack, 2) => "found",
            (StatsDump::Conntrack, 4) => "invalid",
            (StatsDump::Conntrack, 8) => "insert",
            (StatsDump::Conntrack, 9) => "insert_failed",
            (StatsDump::Conntrack, 10) => "drop",
            (StatsDump::Conntrack, 11) => "early_drop",
            (StatsDump::Conntrack, 12) => "error",
            (StatsDump::Conntrack, 13) => "search_restart",
            (StatsDump::Conntrack, 14) => "clash_resolve",
            (StatsDump::Conntrack, 15) => "chain_too_long",
            (StatsDump::Expect, 1) => "expect_new",
            (StatsDump::Expect, 2) => "expect_create",
            (StatsDump::Expect, 3) => "expect_delete",
            (StatsDump::Conntrack, n) => return Some(Cow::Owned(format!("attr{n}"))),
            (StatsDump::Expect, n) => return Some(Cow::Owned(format!("expect_attr{n}"))),
        };
        Some(Cow::Borrowed(known))
    }

    fn is_known(self, attr: u16) -> bool {
        matches!(self.stat_name(attr), Some(Cow::Borrowed(_)))
    }
}

/// The dump request for `dump` with sequence number `seq`.
///
/// Built once per kind through netlink-packet-netfilter's message types, then
/// copied with only the sequence number rewritten: building it afresh twice a
/// tick showed in idle-tick profiles (~5 µs each).
pub fn stats_cpu_request(dump: StatsDump, seq: u32) -> Vec<u8> {
    static BUILT: [std::sync::OnceLock<Vec<u8>>; 2] = [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let slot = match dump {
        StatsDump::Conntrack => &BUILT[0],
        StatsDump::Expect => &BUILT[1],
    };
    let mut req = slot.get_or_init(|| build_stats_cpu_request(dump, 0)).clone();
    if let Some(field) = req.get_mut(8..12) {
        field.copy_from_slice(&seq.to_ne_bytes());
    }
    req
}

fn build_stats_cpu_request(dump: StatsDump, seq: u32) -> Vec<u8> {
    let nfheader = NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0);
    let inner = match dump {
        StatsDump::Conntrack => NetfilterMessageInner::Conntrack(ConntrackMessage::Other {
            message_type: dump.msg_type(),
            attributes: Vec::new(),
        }),
        StatsDump::Expect => NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Other(dump.subsys()),
            message_type: dump.msg_type(),
            attributes: Vec::new(),
        },
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
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

/// One CPU's statistics: `(attribute type, value)` in the order the kernel sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuStats {
    pub cpu: u16,
    pub attrs: Vec<(u16, u64)>,
}

/// What one received datagram (or a concatenation of datagrams) contained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpChunk {
    pub cpus: Vec<CpuStats>,
    /// `NLMSG_DONE` was seen: the dump is complete.
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtnlError {
    /// `NLMSG_ERROR` with a negative errno (`EPERM` without `CAP_NET_ADMIN`,
    /// `EOPNOTSUPP` when `nf_conntrack_netlink` is not available…).
    #[error("kernel answered: {}", std::io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    #[error("malformed reply at byte {offset}: {message}")]
    Malformed { offset: usize, message: String },
}

impl CtnlError {
    pub fn malformed(offset: usize, message: impl Into<String>) -> Self {
        CtnlError::Malformed {
            offset,
            message: message.into(),
        }
    }
}

/// Parses the netlink messages in `bytes` (one or more whole messages, as one
/// `recv` returns them) of a reply to [`stats_cpu_request`]. Messages after
/// `NLMSG_DONE` are ignored. When `seq` is given, every message must carry it.
pub fn parse_stats_cpu_reply(bytes: &[u8], dump: StatsDump, seq: Option<u32>) -> Result<DumpChunk, CtnlError> {
    let mut chunk = DumpChunk::default();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(CtnlError::malformed(offset, format!("{} trailing bytes", rest.len())));
        }
        let len = NetlinkBuffer::new_checked(rest)
            .map_err(|e| CtnlError::malformed(offset, e.to_string()))?
            .length() as usize;
        let Some(one) = rest.get(..len) else {
            return Err(CtnlError::malformed(offset, "message longer than buffer"));
        };
        let msg = NetlinkMessage::<NetfilterMessage>::deserialize(one)
            .map_err(|e| CtnlError::malformed(offset, e.to_string()))?;
        if let Some(seq) = seq {
            if msg.header.sequence_number != seq {
                return Err(CtnlError::malformed(
                    offset,
                    format!("sequence number {} instead of {seq}", msg.header.sequence_number),
                ));
            }
        }
        match msg.payload {
            NetlinkPayload::Done(_) => {
                chunk.done = true;
                return Ok(chunk);
            }
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    return Err(CtnlError::Kernel {
                        errno: code.get().saturating_abs(),
                    });
                }
                // A plain acknowledgement: nothing to record.
            }
            NetlinkPayload::Noop => {}
            NetlinkPayload::Overrun(_) => {
                return Err(CtnlError::malformed(offset, "NLMSG_OVERRUN"));
            }
            NetlinkPayload::InnerMessage(nf) => {
                if !dump.is_reply_type(msg.header.message_type) {
                    return Err(CtnlError::malformed(
                        offset,
                        format!(
                            "message type {:#06x}, expected {:#06x}",
                            msg.header.message_type,
                            dump.nlmsg_type()
                        ),
                    ));
                }
                chunk.cpus.push(cpu_stats(nf, dump, offset)?);
            }
            // NetlinkPayload is non-exhaustive.
            _ => {}
        }
        // Messages are padded to 4 bytes; the last one of a buffer may not be.
        offset = offset.saturating_add(len.saturating_add(3) & !3).min(bytes.len());
    }
    Ok(chunk)
}

fn cpu_stats(nf: NetfilterMessage, dump: StatsDump, offset: usize) -> Result<CpuStats, CtnlError> {
    let cpu = nf.header.res_id;
    let nlas = match nf.inner {
        NetfilterMessageInner::Conntrack(ConntrackMessage::Other { attributes, .. }) => attributes,
        NetfilterMessageInner::Other { attributes, .. } => attributes,
        other => {
            return Err(CtnlError::malformed(offset, format!("unexpected payload {other:?}")));
        }
    };
    let mut attrs = Vec::with_capacity(nlas.len());
    for nla in nlas {
        let kind = nla.kind() & NLA_TYPE_MASK;
        let mut value = vec![0u8; nla.value_len()];
        nla.emit_value(&mut value);
        let v = match value.len() {
            4 => <[u8; 4]>::try_from(value.as_slice())
                .map(|b| u64::from(u32::from_be_bytes(b)))
                .ok(),
            8 => <[u8; 8]>::try_from(value.as_slice()).map(u64::from_be_bytes).ok(),
            _ => None,
        };
        match v {
            Some(v) => attrs.push((kind, v)),
            None if dump.is_known(kind) => {
                return Err(CtnlError::malformed(
                    offset,
                    format!("CPU {cpu}: attribute {kind} has {} bytes, expected 4", value.len()),
                ));
            }
            // An unknown attribute that is not a counter: skip it.
            None => {}
        }
    }
    Ok(CpuStats { cpu, attrs })
}

// ---------------------------------------------------------------------------
// Table dump (`conntrack -L`): IPCTNL_MSG_CT_GET with NLM_F_DUMP.
//
// The request is built with the crate's `ConntrackMessage::Get`. Replies are parsed
// here, by hand, into a `Copy` [`Flow`] per entry without allocating: a dump of a
// full table (hundreds of thousands of entries) is streamed through a callback and
// never held, and the crate's typed `ConntrackAttribute` tree allocates per entry
// and per nesting level and does not decode CTA_ZONE or the accounting counters.

pub const IPCTNL_MSG_CT_NEW: u8 = 0;
pub const IPCTNL_MSG_CT_GET: u8 = 1;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_PROTOINFO: u16 = 4;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_DCCP: u16 = 2;
const CTA_PROTOINFO_SCTP: u16 = 3;
/// `CTA_PROTOINFO_{TCP,DCCP,SCTP}_STATE` are all attribute 1 of their nest.
const CTA_PROTOINFO_STATE: u16 = 1;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;

/// Builds the table dump request (every L3 family) with sequence number `seq`.
pub fn ct_dump_request(seq: u32) -> Vec<u8> {
    let nfheader = NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0);
    let inner = NetfilterMessageInner::Conntrack(ConntrackMessage::Get(Vec::new()));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
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

/// What the breakdown needs of one conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// L3 family from the nfgenmsg (`AF_INET` 2, `AF_INET6` 10).
    pub l3: u8,
    /// L4 protocol number of the original tuple.
    pub proto: u8,
    /// Protocol state for TCP, SCTP and DCCP.
    pub state: Option<u8>,
    pub zone: u16,
    /// Original-direction source and destination.
    pub src: Option<std::net::IpAddr>,
    pub dst: Option<std::net::IpAddr>,
    /// Both directions summed; `None` without nf_conntrack_acct.
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

/// `conntrack -L`'s name of an L4 protocol.
pub fn protocol_name(proto: u8) -> Cow<'static, str> {
    Cow::Borrowed(match proto {
        1 => "icmp",
        2 => "igmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        n => return Cow::Owned(n.to_string()),
    })
}

/// `conntrack -L`'s name of a protocol state (upper case, as it prints them); empty
/// for protocols without states.
pub fn state_name(proto: u8, state: Option<u8>) -> Cow<'static, str> {
    let Some(st) = state else { return Cow::Borrowed("") };
    let names: &[&str] = match proto {
        6 => &[
            "NONE",
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
            "SYN_SENT2",
        ],
        132 => &[
            "NONE",
            "CLOSED",
            "COOKIE_WAIT",
            "COOKIE_ECHOED",
            "ESTABLISHED",
            "SHUTDOWN_SENT",
            "SHUTDOWN_RECD",
            "SHUTDOWN_ACK_SENT",
            "HEARTBEAT_SENT",
        ],
        33 => &[
            "NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT", "IGNORE", "INVALID",
        ],
        _ => return Cow::Borrowed(""),
    };
    match names.get(usize::from(st)) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(format!("STATE{st}")),
    }
}

fn ip_from(v: &[u8]) -> Option<std::net::IpAddr> {
    match v.len() {
        4 => <[u8; 4]>::try_from(v).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(v).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn be_num(v: &[u8]) -> Option<u64> {
    match v.len() {
        1 => Some(u64::from(v[0])),
        2 => Some(u64::from(u16::from_be_bytes([v[0], v[1]]))),
        4 => Some(u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))),
        8 => <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes),
        _ => None,
    }
}

fn flow_from(l3: u8, body: &[u8]) -> Result<Flow, String> {
    use super::nftables::attrs;
    let mut f = Flow {
        l3,
        proto: 0,
        state: None,
        zone: 0,
        src: None,
        dst: None,
        packets: None,
        bytes: None,
    };
    let mut have_tuple = false;
    for a in attrs(body) {
        let a = a?;
        match a.kind {
            CTA_TUPLE_ORIG => {
                have_tuple = true;
                for t in attrs(a.value) {
                    let t = t?;
                    match t.kind {
                        CTA_TUPLE_IP => {
                            for ip in attrs(t.value) {
                                let ip = ip?;
                                match ip.kind {
                                    CTA_IP_V4_SRC | CTA_IP_V6_SRC => f.src = ip_from(ip.value),
                                    CTA_IP_V4_DST | CTA_IP_V6_DST => f.dst = ip_from(ip.value),
                                    _ => {}
                                }
                            }
                        }
                        CTA_TUPLE_PROTO => {
                            for p in attrs(t.value) {
                                let p = p?;
                                if p.kind == CTA_PROTO_NUM {
                                    f.proto = *p.value.first().ok_or("empty CTA_PROTO_NUM")?;
                                }
                            }
                        }
                        CTA_TUPLE_ZONE => {
                            f.zone = be_num(t.value).ok_or("bad CTA_TUPLE_ZONE")? as u16;
                        }
                        _ => {}
                    }
                }
            }
            CTA_PROTOINFO => {
                for p in attrs(a.value) {
                    let p = p?;
                    if matches!(p.kind, CTA_PROTOINFO_TCP | CTA_PROTOINFO_DCCP | CTA_PROTOINFO_SCTP) {
                        for st in attrs(p.value) {
                            let st = st?;
                            if st.kind == CTA_PROTOINFO_STATE {
                                f.state = st.value.first().copied();
                            }
                        }
                    }
                }
            }
            CTA_COUNTERS_ORIG | CTA_COUNTERS_REPLY => {
                for c in attrs(a.value) {
                    let c = c?;
                    let v = be_num(c.value);
                    match c.kind {
                        CTA_COUNTERS_PACKETS | CTA_COUNTERS32_PACKETS => {
                            f.packets = Some(f.packets.unwrap_or(0).saturating_add(v.ok_or("bad packet counter")?));
                        }
                        CTA_COUNTERS_BYTES | CTA_COUNTERS32_BYTES => {
                            f.bytes = Some(f.bytes.unwrap_or(0).saturating_add(v.ok_or("bad byte counter")?));
                        }
                        _ => {}
                    }
                }
            }
            CTA_ZONE => f.zone = be_num(a.value).ok_or("bad CTA_ZONE")? as u16,
            _ => {}
        }
    }
    if !have_tuple {
        return Err("entry without CTA_TUPLE_ORIG".into());
    }
    Ok(f)
}

/// Parses the netlink messages in `bytes` (one `recv` of a reply to
/// [`ct_dump_request`]) and calls `on_flow` for every entry. Returns true once
/// `NLMSG_DONE` is seen. When `seq` is given every message must carry it.
pub fn parse_ct_dump(bytes: &[u8], seq: Option<u32>, mut on_flow: impl FnMut(&Flow)) -> Result<bool, CtnlError> {
    let new_type = (u16::from(NFNL_SUBSYS_CTNETLINK) << 8) | u16::from(IPCTNL_MSG_CT_NEW);
    let walked = super::walk_messages(bytes, seq, |header, payload| {
        let offset = header.offset;
        if header.kind != new_type {
            return Err(CtnlError::malformed(
                offset,
                format!("message type {:#06x}, expected {new_type:#06x}", header.kind),
            ));
        }
        if payload.len() < 4 {
            return Err(CtnlError::malformed(offset, "short nfgenmsg"));
        }
        let flow = flow_from(payload[0], &payload[4..]).map_err(|m| CtnlError::malformed(offset, m))?;
        on_flow(&flow);
        Ok(super::Walk::Continue)
    })?;
    Ok(walked.done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/netlink/ct_stats_cpu.bin");
    const EXP_FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/netlink/ct_exp_stats_cpu.bin");
    /// `conntrack -S` printed right after the fixture was captured.
    const EXPECTED: &str = include_str!("../../tests/fixtures/netlink/ct_stats_cpu.txt");

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

    fn nfgen(cpu: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8, 0];
        v.extend_from_slice(&cpu.to_be_bytes());
        for (kind, val) in attrs {
            v.extend_from_slice(&((4 + val.len()) as u16).to_ne_bytes());
            v.extend_from_slice(&kind.to_ne_bytes());
            v.extend_from_slice(val);
            while v.len() % 4 != 0 {
                v.push(0);
            }
        }
        v
    }

    fn done(seq: u32) -> Vec<u8> {
        nlmsg(3, 2, seq, &0i32.to_ne_bytes())
    }

    /// `cpu=0 found=1 …` lines → (cpu, [(name, value)]).
    fn conntrack_s(text: &str) -> Vec<(u16, Vec<(String, u64)>)> {
        text.lines()
            .filter(|l| l.starts_with("cpu="))
            .map(|l| {
                let mut cpu = 0;
                let mut fields = Vec::new();
                for kv in l.split_whitespace() {
                    let (k, v) = kv.split_once('=').expect("key=value");
                    if k == "cpu" {
                        cpu = v.parse().expect("cpu");
                    } else {
                        let k = if k == "chaintoolong" { "chain_too_long" } else { k };
                        fields.push((k.to_string(), v.parse().expect("number")));
                    }
                }
                (cpu, fields)
            })
            .collect()
    }

    #[test]
    fn request_bytes() {
        let req = stats_cpu_request(StatsDump::Conntrack, 7);
        crate::netlink::assert_request_header(&req, 20, 0x0104, NLM_F_REQUEST | NLM_F_DUMP, 7);
        assert_eq!(&req[16..20], &[0, 0, 0, 0]);
        let req = stats_cpu_request(StatsDump::Expect, 1);
        assert_eq!(u16::from_ne_bytes(req[4..6].try_into().expect("2")), 0x0203);
        for (dump, seq) in [
            (StatsDump::Conntrack, 9),
            (StatsDump::Expect, 0x0102_0304),
            (StatsDump::Conntrack, 7),
        ] {
            assert_eq!(
                stats_cpu_request(dump, seq),
                build_stats_cpu_request(dump, seq),
                "{dump:?} {seq}"
            );
        }
    }

    #[test]
    fn captured_kernel_reply_matches_conntrack_s() {
        let chunk = parse_stats_cpu_reply(FIXTURE, StatsDump::Conntrack, None).expect("parses");
        assert!(chunk.done);
        let expected = conntrack_s(EXPECTED);
        assert!(!expected.is_empty());
        assert_eq!(chunk.cpus.len(), expected.len());
        for (cpu, (want_cpu, want)) in chunk.cpus.iter().zip(&expected) {
            assert_eq!(cpu.cpu, *want_cpu);
            let got: Vec<(String, u64)> = cpu
                .attrs
                .iter()
                .filter_map(|(a, v)| StatsDump::Conntrack.stat_name(*a).map(|n| (n.into_owned(), *v)))
                .collect();
            assert_eq!(&got, want, "cpu {want_cpu}");
        }
        // The fixture was captured after inserting entries: not all zeros.
        assert!(chunk.cpus.iter().any(|c| c.attrs.iter().any(|(_, v)| *v > 0)));
    }

    #[test]
    fn captured_expect_reply() {
        let chunk = parse_stats_cpu_reply(EXP_FIXTURE, StatsDump::Expect, None).expect("parses");
        assert!(chunk.done);
        assert!(!chunk.cpus.is_empty());
        for c in &chunk.cpus {
            let names: Vec<_> = c
                .attrs
                .iter()
                .filter_map(|(a, _)| StatsDump::Expect.stat_name(*a))
                .collect();
            assert_eq!(names, ["expect_new", "expect_create", "expect_delete"]);
        }
    }

    #[test]
    fn messages_split_across_datagrams() {
        let ty = StatsDump::Conntrack.nlmsg_type();
        let a = nlmsg(ty, 2, 9, &nfgen(0, &[(2, &5u32.to_be_bytes())]));
        let b = nlmsg(ty, 2, 9, &nfgen(1, &[(2, &6u32.to_be_bytes())]));
        let first = [a, b].concat();
        let c1 = parse_stats_cpu_reply(&first, StatsDump::Conntrack, Some(9)).expect("ok");
        assert!(!c1.done);
        assert_eq!(
            c1.cpus,
            vec![
                CpuStats {
                    cpu: 0,
                    attrs: vec![(2, 5)]
                },
                CpuStats {
                    cpu: 1,
                    attrs: vec![(2, 6)]
                }
            ]
        );
        let c2 = parse_stats_cpu_reply(&done(9), StatsDump::Conntrack, Some(9)).expect("ok");
        assert!(c2.done && c2.cpus.is_empty());
    }

    #[test]
    fn unknown_attributes_are_kept_or_skipped() {
        let ty = StatsDump::Conntrack.nlmsg_type();
        let payload = nfgen(
            3,
            &[
                (8, &1u32.to_be_bytes()),
                (16, &7u32.to_be_bytes()),
                (17, &9u64.to_be_bytes()),
                (18, b"abc"),
                // NLA_F_NET_BYTEORDER set on a known attribute.
                (0x4000 | 9, &2u32.to_be_bytes()),
            ],
        );
        let bytes = [nlmsg(ty, 2, 1, &payload), done(1)].concat();
        let c = parse_stats_cpu_reply(&bytes, StatsDump::Conntrack, None).expect("ok");
        assert_eq!(c.cpus[0].cpu, 3);
        assert_eq!(c.cpus[0].attrs, vec![(8, 1), (16, 7), (17, 9), (9, 2)]);
        assert_eq!(StatsDump::Conntrack.stat_name(16).as_deref(), Some("attr16"));
        assert_eq!(StatsDump::Expect.stat_name(4).as_deref(), Some("expect_attr4"));
        assert_eq!(StatsDump::Conntrack.stat_name(1), None);
        assert_eq!(StatsDump::Conntrack.stat_name(15).as_deref(), Some("chain_too_long"));
    }

    #[test]
    fn known_attribute_with_wrong_size_is_an_error() {
        let ty = StatsDump::Conntrack.nlmsg_type();
        let bytes = nlmsg(ty, 2, 1, &nfgen(0, &[(2, b"ab")]));
        assert!(matches!(
            parse_stats_cpu_reply(&bytes, StatsDump::Conntrack, None),
            Err(CtnlError::Malformed { .. })
        ));
    }

    #[test]
    fn kernel_errors() {
        // NLMSG_ERROR: errno -1 (EPERM) followed by the offending request header.
        let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
        payload.extend_from_slice(&stats_cpu_request(StatsDump::Conntrack, 1)[..16]);
        let bytes = nlmsg(2, 0, 1, &payload);
        let err = parse_stats_cpu_reply(&bytes, StatsDump::Conntrack, Some(1)).expect_err("EPERM");
        assert_eq!(err, CtnlError::Kernel { errno: libc::EPERM });
        assert!(err.to_string().contains("not permitted"), "{err}");
        // An ACK (errno 0) is not an error.
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend_from_slice(&stats_cpu_request(StatsDump::Conntrack, 1)[..16]);
        let c = parse_stats_cpu_reply(&nlmsg(2, 0, 1, &ack), StatsDump::Conntrack, None).expect("ack");
        assert_eq!(c, DumpChunk::default());
    }

    #[test]
    fn wrong_type_or_sequence_is_an_error() {
        let payload = nfgen(0, &[(2, &5u32.to_be_bytes())]);
        let other = nlmsg(StatsDump::Expect.nlmsg_type(), 2, 1, &payload);
        assert!(parse_stats_cpu_reply(&other, StatsDump::Conntrack, None).is_err());
        let ours = nlmsg(StatsDump::Conntrack.nlmsg_type(), 2, 1, &payload);
        assert!(parse_stats_cpu_reply(&ours, StatsDump::Conntrack, Some(2)).is_err());
        assert!(parse_stats_cpu_reply(&nlmsg(4, 0, 1, &[]), StatsDump::Conntrack, None).is_err());
    }

    #[test]
    fn empty_input_is_an_empty_chunk() {
        assert_eq!(
            parse_stats_cpu_reply(&[], StatsDump::Conntrack, None),
            Ok(DumpChunk::default())
        );
        assert!(parse_stats_cpu_reply(&FIXTURE[..10], StatsDump::Conntrack, None).is_err());
    }
}

#[cfg(test)]
mod ct_dump_tests {
    use super::*;

    const DUMP: &[u8] = include_bytes!("../../tests/fixtures/netlink/ct_dump.bin");
    /// `conntrack -L -o extended` printed right after the dump was captured.
    const LISTING: &str = include_str!("../../tests/fixtures/netlink/ct_dump.txt");

    type Key = (u8, String, String, u16, String, String, u64, u64);

    fn key(f: &Flow) -> Key {
        (
            f.l3,
            protocol_name(f.proto).into_owned(),
            state_name(f.proto, f.state).into_owned(),
            f.zone,
            f.src.map(|a| a.to_string()).unwrap_or_default(),
            f.dst.map(|a| a.to_string()).unwrap_or_default(),
            f.packets.unwrap_or(0),
            f.bytes.unwrap_or(0),
        )
    }

    fn listing() -> Vec<Key> {
        let mut out: Vec<Key> = LISTING
            .lines()
            .filter(|l| l.starts_with("ipv"))
            .map(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                let field = |name: &str| t.iter().find_map(|x| x.strip_prefix(name)).unwrap_or("");
                let sum = |name: &str| -> u64 {
                    t.iter()
                        .filter_map(|x| x.strip_prefix(name))
                        .map(|v| v.parse::<u64>().expect("num"))
                        .sum()
                };
                let state = if t[5].contains('=') || t[5].starts_with('[') {
                    ""
                } else {
                    t[5]
                };
                (
                    t[1].parse().expect("l3"),
                    t[2].to_string(),
                    state.to_string(),
                    field("zone=").parse().unwrap_or(0),
                    field("src=").to_string(),
                    field("dst=").to_string(),
                    sum("packets="),
                    sum("bytes="),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn request_bytes() {
        let req = ct_dump_request(5);
        assert_eq!(req.len(), 20);
        assert_eq!(u16::from_ne_bytes(req[4..6].try_into().expect("2")), 0x0101);
        assert_eq!(
            u16::from_ne_bytes(req[6..8].try_into().expect("2")),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().expect("4")), 5);
        assert_eq!(req[16], 0, "AF_UNSPEC: every L3 family");
    }

    #[test]
    fn captured_dump_matches_conntrack_l() {
        let mut got = Vec::new();
        let done = parse_ct_dump(DUMP, None, |f| got.push(key(f))).expect("parses");
        assert!(done);
        got.sort();
        let want = listing();
        assert!(want.len() >= 15, "{}", want.len());
        assert_eq!(got, want);
        assert!(got.iter().any(|k| k.3 == 7), "a zone 7 entry");
        assert!(got.iter().any(|k| k.0 == 10), "an IPv6 entry");
        assert!(got.iter().any(|k| k.7 > 0), "accounted bytes");
    }

    #[test]
    fn names() {
        assert_eq!(protocol_name(6), "tcp");
        assert_eq!(protocol_name(200), "200");
        assert_eq!(state_name(6, Some(3)), "ESTABLISHED");
        assert_eq!(state_name(6, Some(7)), "TIME_WAIT");
        assert_eq!(state_name(6, Some(42)), "STATE42");
        assert_eq!(state_name(17, Some(1)), "");
        assert_eq!(state_name(132, Some(4)), "ESTABLISHED");
        assert_eq!(state_name(6, None), "");
    }

    #[test]
    fn errors_and_wrong_messages() {
        let mut p = (-libc::EPERM).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0; 16]);
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + p.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&p);
        assert_eq!(
            parse_ct_dump(&msg, None, |_| {}),
            Err(CtnlError::Kernel { errno: libc::EPERM })
        );
        // Sequence number check, and a message of another type.
        assert!(parse_ct_dump(DUMP, Some(u32::MAX), |_| {}).is_err());
        let stats = stats_cpu_request(StatsDump::Conntrack, 1);
        assert!(parse_ct_dump(&stats, None, |_| {}).is_err());
    }

    #[test]
    fn empty_input_is_not_done() {
        assert_eq!(parse_ct_dump(&[], None, |_| {}), Ok(false));
    }
}
