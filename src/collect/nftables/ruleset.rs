//! Reads the whole nf_tables ruleset at one generation over netlink: the
//! collector and `netsight analyze firewall` share it.

use std::io;

use crate::collect::netlink_socket::{next_seq, DumpError, NetlinkSocket};
use crate::netlink::ctnetlink::CtnlError;
use crate::netlink::nftables::{
    dump_request, getgen_request, parse_reply, setelem_request, Dump, Item, Ruleset, NFT_MSG_NEWGEN, NFT_MSG_NEWSETELEM,
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
pub(super) fn read_ruleset_on(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanations_name_the_capability() {
        let e = DumpError::Reply(CtnlError::Kernel { errno: libc::EPERM });
        assert!(explain(&e).contains("CAP_NET_ADMIN"), "{}", explain(&e));
        let e = DumpError::Reply(CtnlError::Kernel { errno: libc::EINVAL });
        assert!(explain(&e).contains("module nf_tables"), "{}", explain(&e));
    }
}
