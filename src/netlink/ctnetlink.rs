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
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLA_TYPE_MASK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
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

/// Builds the dump request for `dump` with sequence number `seq`.
pub fn stats_cpu_request(dump: StatsDump, seq: u32) -> Vec<u8> {
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
    fn malformed(offset: usize, message: impl Into<String>) -> Self {
        CtnlError::Malformed {
            offset,
            message: message.into(),
        }
    }
}

/// Parses the netlink messages in `bytes` (one or more whole messages, as one
/// `recv` returns them) of a reply to [`stats_cpu_request`]. Messages after
/// `NLMSG_DONE` are ignored. When `seq` is given, every message must carry it.
pub fn parse_stats_cpu_reply(
    bytes: &[u8],
    dump: StatsDump,
    seq: Option<u32>,
) -> Result<DumpChunk, CtnlError> {
    let mut chunk = DumpChunk::default();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(CtnlError::malformed(
                offset,
                format!("{} trailing bytes", rest.len()),
            ));
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
                    format!(
                        "sequence number {} instead of {seq}",
                        msg.header.sequence_number
                    ),
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
        offset = offset
            .saturating_add(len.saturating_add(3) & !3)
            .min(bytes.len());
    }
    Ok(chunk)
}

fn cpu_stats(nf: NetfilterMessage, dump: StatsDump, offset: usize) -> Result<CpuStats, CtnlError> {
    let cpu = nf.header.res_id;
    let nlas = match nf.inner {
        NetfilterMessageInner::Conntrack(ConntrackMessage::Other { attributes, .. }) => attributes,
        NetfilterMessageInner::Other { attributes, .. } => attributes,
        other => {
            return Err(CtnlError::malformed(
                offset,
                format!("unexpected payload {other:?}"),
            ));
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
            8 => <[u8; 8]>::try_from(value.as_slice())
                .map(u64::from_be_bytes)
                .ok(),
            _ => None,
        };
        match v {
            Some(v) => attrs.push((kind, v)),
            None if dump.is_known(kind) => {
                return Err(CtnlError::malformed(
                    offset,
                    format!(
                        "CPU {cpu}: attribute {kind} has {} bytes, expected 4",
                        value.len()
                    ),
                ));
            }
            // An unknown attribute that is not a counter: skip it.
            None => {}
        }
    }
    Ok(CpuStats { cpu, attrs })
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
                        let k = if k == "chaintoolong" {
                            "chain_too_long"
                        } else {
                            k
                        };
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
        assert_eq!(req.len(), 20);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().expect("4")), 20);
        assert_eq!(u16::from_ne_bytes(req[4..6].try_into().expect("2")), 0x0104);
        assert_eq!(
            u16::from_ne_bytes(req[6..8].try_into().expect("2")),
            NLM_F_REQUEST | NLM_F_DUMP
        );
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().expect("4")), 7);
        assert_eq!(&req[16..20], &[0, 0, 0, 0]);
        let req = stats_cpu_request(StatsDump::Expect, 1);
        assert_eq!(u16::from_ne_bytes(req[4..6].try_into().expect("2")), 0x0203);
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
                .filter_map(|(a, v)| {
                    StatsDump::Conntrack
                        .stat_name(*a)
                        .map(|n| (n.into_owned(), *v))
                })
                .collect();
            assert_eq!(&got, want, "cpu {want_cpu}");
        }
        // The fixture was captured after inserting entries: not all zeros.
        assert!(chunk
            .cpus
            .iter()
            .any(|c| c.attrs.iter().any(|(_, v)| *v > 0)));
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
        assert_eq!(
            StatsDump::Conntrack.stat_name(16).as_deref(),
            Some("attr16")
        );
        assert_eq!(
            StatsDump::Expect.stat_name(4).as_deref(),
            Some("expect_attr4")
        );
        assert_eq!(StatsDump::Conntrack.stat_name(1), None);
        assert_eq!(
            StatsDump::Conntrack.stat_name(15).as_deref(),
            Some("chain_too_long")
        );
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
        let c =
            parse_stats_cpu_reply(&nlmsg(2, 0, 1, &ack), StatsDump::Conntrack, None).expect("ack");
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
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        assert_eq!(
            parse_stats_cpu_reply(&[], StatsDump::Conntrack, None),
            Ok(DumpChunk::default())
        );
        for i in 1..FIXTURE.len() {
            let r = parse_stats_cpu_reply(&FIXTURE[..i], StatsDump::Conntrack, None);
            // A cut exactly between messages parses (without `done`); anything else fails.
            if let Ok(c) = r {
                assert!(!c.done);
            }
        }
        assert!(parse_stats_cpu_reply(&FIXTURE[..10], StatsDump::Conntrack, None).is_err());
        // Every single-byte corruption, and pseudo-random buffers.
        let mut buf = FIXTURE.to_vec();
        for i in 0..buf.len() {
            for x in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let old = buf[i];
                buf[i] ^= x;
                let _ = parse_stats_cpu_reply(&buf, StatsDump::Conntrack, None);
                buf[i] = old;
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for n in 0..2000 {
            let len = n % 200;
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = parse_stats_cpu_reply(&junk, StatsDump::Conntrack, None);
            // Also behind a valid header so the attribute parser sees the junk.
            let mut msg = nlmsg(StatsDump::Conntrack.nlmsg_type(), 2, 0, &[0, 0, 0, 0]);
            msg.extend_from_slice(&junk);
            let l = msg.len() as u32;
            msg[0..4].copy_from_slice(&l.to_ne_bytes());
            let _ = parse_stats_cpu_reply(&msg, StatsDump::Conntrack, None);
        }
    }
}
