//! Netlink message code: request building and pure reply parsers for sock_diag,
//! ctnetlink, nf_tables and rtnetlink. Socket I/O lives in the collectors; parsers
//! here take bytes, so `tests/netlink_fuzz.rs` property-tests them on arbitrary and
//! mutated captured replies (typed error, never a panic, a hang or an unbounded
//! allocation).

pub mod ctnetlink;
pub mod nftables;
pub mod rtnetlink;
pub mod sock_diag;
pub mod tcp_info;

use ctnetlink::CtnlError;

/// Sets `SO_RCVTIMEO` on a netlink socket, so a dump the kernel never finishes
/// fails instead of holding a collector (the sock_diag socket and
/// `collect::netlink_socket::NetlinkSocket` both use it).
pub(crate) fn set_recv_timeout(sock: &netlink_sys::Socket, timeout: std::time::Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: valid socket fd, pointer and length of a live timeval.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;

/// The parts of a `nlmsghdr` a reply parser looks at.
#[derive(Debug, Clone, Copy)]
pub struct MessageHeader {
    pub kind: u16,
    pub flags: u16,
    /// Byte offset of the message in the datagram (for error messages).
    pub offset: usize,
}

/// What a reply parser makes of one data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    Continue,
    /// The reply is complete (a request answered by one message, without `NLMSG_DONE`).
    Done,
}

/// What one datagram of a reply said about the reply as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Walked {
    /// `NLMSG_DONE` (or the one message of a single-message reply) was seen.
    pub done: bool,
    /// A message carried `NLM_F_DUMP_INTR`: what was dumped changed during the dump
    /// (the kernel may flag only the final `NLMSG_DONE`).
    pub interrupted: bool,
}

const NLM_F_DUMP_INTR: u16 = 0x10;

/// Walks the messages of one received datagram with the framing every netlink
/// family shares: lengths are checked, every message must carry `seq` when given,
/// `NLMSG_ERROR` with a non-zero code becomes [`CtnlError::Kernel`], and the walk
/// ends at `NLMSG_DONE` (messages after it are ignored). Data messages go to
/// `on_message`.
pub fn walk_messages(
    bytes: &[u8],
    seq: Option<u32>,
    mut on_message: impl FnMut(MessageHeader, &[u8]) -> Result<Walk, CtnlError>,
) -> Result<Walked, CtnlError> {
    let mut walked = Walked::default();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Some(head) = rest.get(..NLMSG_HDRLEN) else {
            return Err(CtnlError::malformed(offset, format!("{} trailing bytes", rest.len())));
        };
        let u32_at = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let len = u32_at(0) as usize;
        let header = MessageHeader {
            kind: u16::from_ne_bytes([head[4], head[5]]),
            flags: u16::from_ne_bytes([head[6], head[7]]),
            offset,
        };
        if len < NLMSG_HDRLEN {
            return Err(CtnlError::malformed(offset, format!("message length {len}")));
        }
        let Some(one) = rest.get(..len) else {
            return Err(CtnlError::malformed(offset, "message longer than buffer"));
        };
        let msg_seq = u32_at(8);
        if let Some(seq) = seq.filter(|&s| s != msg_seq) {
            return Err(CtnlError::malformed(
                offset,
                format!("sequence number {msg_seq} instead of {seq}"),
            ));
        }
        walked.interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
        let payload = &one[NLMSG_HDRLEN..];
        match header.kind {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| CtnlError::malformed(offset, "short NLMSG_ERROR"))?;
                if code != 0 {
                    return Err(CtnlError::Kernel {
                        errno: code.saturating_abs(),
                    });
                }
            }
            NLMSG_DONE => {
                walked.done = true;
                return Ok(walked);
            }
            NLMSG_OVERRUN => return Err(CtnlError::malformed(offset, "NLMSG_OVERRUN")),
            _ => {
                if on_message(header, payload)? == Walk::Done {
                    walked.done = true;
                    return Ok(walked);
                }
            }
        }
        offset = offset.saturating_add((len + 3) & !3).min(bytes.len());
    }
    Ok(walked)
}

/// Checks the `nlmsghdr` of a request: total length, type, flags and sequence
/// number (the port id is 0: the kernel fills it in).
#[cfg(test)]
pub(crate) fn assert_request_header(req: &[u8], len: usize, kind: u16, flags: u16, seq: u32) {
    let u16_at = |i: usize| u16::from_ne_bytes([req[i], req[i + 1]]);
    let u32_at = |i: usize| u32::from_ne_bytes([req[i], req[i + 1], req[i + 2], req[i + 3]]);
    assert_eq!(req.len(), len, "request length");
    assert_eq!(u32_at(0) as usize, len, "nlmsg_len");
    assert_eq!(u16_at(4), kind, "nlmsg_type");
    assert_eq!(u16_at(6), flags, "nlmsg_flags");
    assert_eq!(u32_at(8), seq, "nlmsg_seq");
    assert_eq!(u32_at(12), 0, "nlmsg_pid");
}
