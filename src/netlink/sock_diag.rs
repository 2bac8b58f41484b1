//! `NETLINK_SOCK_DIAG` / `inet_diag`: dump requests for TCP and UDP sockets and a
//! streaming, allocation-free reader of the replies.
//!
//! The parse side ([`parse_messages`]) is a pure function over bytes: it walks the
//! netlink messages of one datagram in place and hands every socket to a visitor as
//! a small `Copy` record borrowing the buffer. Nothing is collected, so a dump of
//! 100 000 sockets never holds more than one datagram (≤ 32 KiB, the kernel's dump
//! skb size) in memory. The I/O side ([`DiagSocket`]) sends one request and feeds
//! each received datagram to the parser until `NLMSG_DONE`.
//!
//! Layouts (linux/netlink.h, linux/inet_diag.h), host byte order unless noted:
//!
//! ```text
//! nlmsghdr      u32 len, u16 type, u16 flags, u32 seq, u32 pid          16 bytes
//! inet_diag_msg u8 family, u8 state, u8 timer, u8 retrans               @0
//!               id: be16 sport @4, be16 dport @6, be32 src[4] @8,
//!                   be32 dst[4] @24, u32 if @40, u32 cookie[2] @44
//!               u32 expires @52, rqueue @56, wqueue @60, uid @64, inode @68
//!                                                                       72 bytes
//! rtattr        u16 len, u16 type, payload, padded to 4
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use crate::collect::CollectError;

/// In a [`DumpRequest`]: both families in one walk (legacy request, TCP only).
pub const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_INET6: u8 = libc::AF_INET6 as u8;
pub const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
pub const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The pre-sock_diag TCP request (`struct inet_diag_req`); its replies carry the
/// same `inet_diag_msg` under this message type.
const TCPDIAG_GETSOCK: u16 = 18;
/// `nlmsghdr` + `struct inet_diag_req` (family, src_len, dst_len, ext, sockid
/// (48), states, dbs).
const COMPAT_REQ_LEN: usize = NLMSG_HDRLEN + 4 + 48 + 4 + 4;
/// `sizeof(struct inet_diag_msg)`.
pub const INET_DIAG_MSG_LEN: usize = 72;
const INET_DIAG_INFO: u16 = 2;
const INET_DIAG_CONG: u16 = 4;
/// Strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// TCP states (linux/tcp_states.h).
pub mod state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    /// Request sockets in the established hash; `inet_diag` reports them as
    /// `SYN_RECV`, but a parser must not assume so.
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Every state `ss -a` asks for: bits 0..=12, including `TCP_NEW_SYN_RECV` so
/// request sockets (half-open connections) are dumped too.
pub const ALL_STATES: u32 = (1 << 13) - 1;
pub const LISTEN_ONLY: u32 = 1 << state::LISTEN;
pub const ALL_BUT_LISTEN: u32 = ALL_STATES & !LISTEN_ONLY;

/// One socket of a dump, borrowing the receive buffer. `Copy`, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetSock<'a> {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// Kernel TCP state number (UDP uses `ESTABLISHED` and `CLOSE`).
    pub state: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// Socket inode (0 for time-wait and request sockets, which no file owns).
    /// The kernel truncates it to 32 bits in `inet_diag_msg`.
    pub inode: u32,
    pub uid: u32,
    /// Listeners: current accept-queue length. Others: bytes not yet read.
    pub rqueue: u32,
    /// Listeners: the accept-queue limit (backlog). Others: bytes not yet acked.
    pub wqueue: u32,
    /// Raw `struct tcp_info` (`INET_DIAG_INFO`), length as the kernel sent it.
    pub tcp_info: Option<&'a [u8]>,
    /// Raw congestion-control name (`INET_DIAG_CONG`), NUL-terminated.
    pub cong: Option<&'a [u8]>,
}

/// Whether the parsed bytes ended the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` was seen.
    Done,
}

#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("truncated reply at byte {offset}: {what} needs {need} bytes, {have} present")]
    Truncated {
        offset: usize,
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("malformed reply at byte {offset}: {what}")]
    Malformed { offset: usize, what: &'static str },
    #[error("{}", kernel_error_text(*errno))]
    Kernel { errno: i32 },
    #[error("the kernel dropped part of the dump (NLMSG_OVERRUN)")]
    Overrun,
    #[error("{what}: {source}")]
    Io { what: &'static str, source: io::Error },
}

impl DiagError {
    /// Wraps the error for the collector, naming the dump that failed.
    pub fn into_collect(self, dump: &str) -> CollectError {
        CollectError::Netlink(format!("sock_diag {dump} dump: {self}"))
    }

    /// The kernel has no handler for the family/protocol (module missing).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, DiagError::Kernel { errno } if *errno == libc::ENOENT || *errno == libc::EOPNOTSUPP)
    }
}

fn kernel_error_text(errno: i32) -> String {
    let os = io::Error::from_raw_os_error(errno);
    let hint = match errno {
        libc::EPERM | libc::EACCES => {
            "permission denied: a seccomp filter or LSM policy blocks NETLINK_SOCK_DIAG \
             (the dump itself needs no capability)"
        }
        libc::ENOENT | libc::EOPNOTSUPP => {
            "the kernel has no sock_diag handler for this family/protocol \
             (CONFIG_INET_DIAG / CONFIG_INET_TCP_DIAG / CONFIG_INET_UDP_DIAG missing, or the \
             inet_diag, tcp_diag, udp_diag modules cannot be loaded)"
        }
        libc::EINVAL => "the kernel rejected the inet_diag request",
        _ => "the kernel refused the dump",
    };
    format!("{hint} ({os})")
}

#[inline]
fn ne_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline]
fn ne_u16(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

#[inline]
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses every netlink message in `buf` (one or more whole datagrams) and calls
/// `visit` for each socket. Stops at `NLMSG_DONE`. Never panics on any input.
pub fn parse_messages<'a, F>(buf: &'a [u8], visit: &mut F) -> Result<Progress, DiagError>
where
    F: FnMut(InetSock<'a>),
{
    let mut off = 0usize;
    while off < buf.len() {
        let rest = &buf[off..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(DiagError::Truncated {
                offset: off,
                what: "netlink header",
                need: NLMSG_HDRLEN,
                have: rest.len(),
            });
        }
        let len = ne_u32(rest, 0) as usize;
        let ty = ne_u16(rest, 4);
        if len < NLMSG_HDRLEN {
            return Err(DiagError::Malformed {
                offset: off,
                what: "nlmsg_len below the header size",
            });
        }
        if len > rest.len() {
            return Err(DiagError::Truncated {
                offset: off,
                what: "netlink message",
                need: len,
                have: rest.len(),
            });
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        match ty {
            SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => visit(parse_inet_diag_msg(payload, off + NLMSG_HDRLEN)?),
            NLMSG_DONE => {
                // Since Linux 4.x the DONE payload carries the dump's final status.
                if payload.len() >= 4 {
                    let status = ne_u32(payload, 0) as i32;
                    if status < 0 {
                        return Err(DiagError::Kernel {
                            errno: status.saturating_neg(),
                        });
                    }
                }
                return Ok(Progress::Done);
            }
            NLMSG_ERROR => {
                if payload.len() < 4 {
                    return Err(DiagError::Truncated {
                        offset: off + NLMSG_HDRLEN,
                        what: "nlmsgerr",
                        need: 4,
                        have: payload.len(),
                    });
                }
                let err = ne_u32(payload, 0) as i32;
                if err != 0 {
                    // The kernel sends -errno; a positive value is malformed, but is
                    // still reported as the errno it names, not a negative one.
                    return Err(DiagError::Kernel {
                        errno: err.saturating_abs(),
                    });
                }
                // err == 0 is an acknowledgement: nothing to do.
            }
            NLMSG_OVERRUN => return Err(DiagError::Overrun),
            NLMSG_NOOP => {}
            _ => {} // Unknown control messages are skipped, not fatal.
        }
        off = off.saturating_add(align4(len));
    }
    Ok(Progress::More)
}

/// Decodes one `inet_diag_msg` and its attributes. `base` is its offset in the
/// datagram, for error messages.
pub fn parse_inet_diag_msg(p: &[u8], base: usize) -> Result<InetSock<'_>, DiagError> {
    if p.len() < INET_DIAG_MSG_LEN {
        return Err(DiagError::Truncated {
            offset: base,
            what: "inet_diag_msg",
            need: INET_DIAG_MSG_LEN,
            have: p.len(),
        });
    }
    let family = p[0];
    let (local, remote) = match family {
        AF_INET => (
            IpAddr::V4(Ipv4Addr::new(p[8], p[9], p[10], p[11])),
            IpAddr::V4(Ipv4Addr::new(p[24], p[25], p[26], p[27])),
        ),
        AF_INET6 => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            d.copy_from_slice(&p[24..40]);
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
        }
        _ => {
            return Err(DiagError::Malformed {
                offset: base,
                what: "address family is neither AF_INET nor AF_INET6",
            })
        }
    };
    let mut sock = InetSock {
        family,
        state: p[1],
        local,
        local_port: u16::from_be_bytes([p[4], p[5]]),
        remote,
        remote_port: u16::from_be_bytes([p[6], p[7]]),
        rqueue: ne_u32(p, 56),
        wqueue: ne_u32(p, 60),
        uid: ne_u32(p, 64),
        inode: ne_u32(p, 68),
        tcp_info: None,
        cong: None,
    };
    let mut off = INET_DIAG_MSG_LEN;
    while off < p.len() {
        let rest = &p[off..];
        if rest.len() < 4 {
            return Err(DiagError::Truncated {
                offset: base + off,
                what: "attribute header",
                need: 4,
                have: rest.len(),
            });
        }
        let len = ne_u16(rest, 0) as usize;
        let ty = ne_u16(rest, 2) & NLA_TYPE_MASK;
        if len < 4 {
            return Err(DiagError::Malformed {
                offset: base + off,
                what: "attribute length below 4",
            });
        }
        if len > rest.len() {
            return Err(DiagError::Truncated {
                offset: base + off,
                what: "attribute",
                need: len,
                have: rest.len(),
            });
        }
        let val = &rest[4..len];
        match ty {
            INET_DIAG_INFO => sock.tcp_info = Some(val),
            INET_DIAG_CONG => sock.cong = Some(val),
            _ => {}
        }
        off = off.saturating_add(align4(len));
    }
    Ok(sock)
}

/// What one dump asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpRequest {
    /// `AF_INET`, `AF_INET6`, or `AF_UNSPEC` (TCP only): both families in one
    /// legacy `TCPDIAG_GETSOCK` request, which the kernel answers with a single
    /// walk of the TCP hash tables instead of one walk per family — half the
    /// kernel's cost at idle, where the walk of the empty buckets is all of it.
    pub family: u8,
    pub protocol: u8,
    /// Bit mask of `1 << state`.
    pub states: u32,
    /// Ask for `INET_DIAG_INFO` (tcp_info) and `INET_DIAG_CONG` (TCP only).
    pub tcp_info: bool,
}

impl DumpRequest {
    /// `tcp4`, `udp6`… for messages.
    pub fn describe(&self) -> &'static str {
        match (self.protocol, self.family) {
            (IPPROTO_TCP, AF_INET) => "TCP/IPv4",
            (IPPROTO_TCP, AF_INET6) => "TCP/IPv6",
            (IPPROTO_TCP, AF_UNSPEC) => "TCP/IPv4+IPv6",
            (IPPROTO_UDP, AF_INET) => "UDP/IPv4",
            (IPPROTO_UDP, AF_INET6) => "UDP/IPv6",
            _ => "inet",
        }
    }

    /// The serialized `nlmsghdr` + `inet_diag_req_v2` dump request, or for
    /// `AF_UNSPEC` the legacy `inet_diag_req` one.
    pub fn to_bytes(&self, seq: u32) -> Vec<u8> {
        if self.family == AF_UNSPEC {
            return self.compat_bytes(seq);
        }
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        hdr.sequence_number = seq;
        let extensions = if self.tcp_info && self.protocol == IPPROTO_TCP {
            ExtensionFlags::INFO | ExtensionFlags::CONG
        } else {
            ExtensionFlags::empty()
        };
        let socket_id = if self.family == AF_INET6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        };
        let mut msg = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family: self.family,
                protocol: self.protocol,
                extensions,
                states: StateFlags::from_bits_retain(self.states),
                socket_id,
            })
            .into(),
        );
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }
}

impl DumpRequest {
    /// `TCPDIAG_GETSOCK`: the kernel turns it into an `AF_UNSPEC` request for TCP
    /// (`inet_diag_dump_compat`), i.e. sockets of every family in one dump,
    /// listeners first as in the per-family dumps. No crate models it.
    fn compat_bytes(&self, seq: u32) -> Vec<u8> {
        let ext: u8 = if self.tcp_info {
            (ExtensionFlags::INFO | ExtensionFlags::CONG).bits()
        } else {
            0
        };
        let mut req = Vec::with_capacity(COMPAT_REQ_LEN);
        req.extend_from_slice(&(COMPAT_REQ_LEN as u32).to_ne_bytes());
        req.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        // idiag_family is ignored by the compat path (it dumps AF_UNSPEC).
        req.extend_from_slice(&[AF_INET, 0, 0, ext]);
        req.extend_from_slice(&[0u8; 48]);
        req.extend_from_slice(&self.states.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req
    }
}

/// Size of the one receive buffer. The kernel builds dump datagrams of at most
/// 32 KiB (`SKB_WITH_OVERHEAD(32768)`), so this always holds a whole one.
pub const RECV_BUF_LEN: usize = 64 * 1024;
const SOCKET_RCVBUF: usize = 1024 * 1024;
/// A dump that stalls this long fails instead of blocking the collector forever.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts from one dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub datagrams: u64,
    pub bytes: u64,
}

/// A `NETLINK_SOCK_DIAG` socket with its reusable receive buffer.
///
/// After an error the socket may still hold the rest of the failed dump; callers
/// drop it and open a new one (the collector does).
pub struct DiagSocket {
    socket: Socket,
    buf: Box<[u8]>,
    seq: u32,
    /// Whether the legacy single-walk TCP request is worth trying; cleared once
    /// the kernel refuses it.
    tcp_single_walk: bool,
}

impl DiagSocket {
    pub fn open() -> Result<Self, DiagError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|source| DiagError::Io {
            what: "socket(NETLINK_SOCK_DIAG)",
            source,
        })?;
        socket.bind_auto().map_err(|source| DiagError::Io {
            what: "bind netlink socket",
            source,
        })?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(|source| DiagError::Io {
            what: "connect netlink socket",
            source,
        })?;
        // Best effort: capped by net.core.rmem_max; a dump works with any size.
        let _ = socket.set_rx_buf_sz(SOCKET_RCVBUF as libc::c_int);
        super::set_recv_timeout(&socket, RECV_TIMEOUT).map_err(|source| DiagError::Io {
            what: "setsockopt(SO_RCVTIMEO)",
            source,
        })?;
        Ok(DiagSocket {
            socket,
            buf: vec![0u8; RECV_BUF_LEN].into_boxed_slice(),
            seq: 0,
            tcp_single_walk: true,
        })
    }

    /// Whether TCP should be dumped with one `AF_UNSPEC` request.
    pub fn tcp_single_walk(&self) -> bool {
        self.tcp_single_walk
    }

    /// The kernel refused the legacy request: use per-family requests from now on.
    pub fn disable_tcp_single_walk(&mut self) {
        self.tcp_single_walk = false;
    }

    /// Runs one dump, calling `visit` for every socket as its datagram arrives.
    pub fn dump<F>(&mut self, req: &DumpRequest, mut visit: F) -> Result<DumpStats, DiagError>
    where
        F: FnMut(InetSock<'_>),
    {
        self.dump_raw(req, |datagram| parse_messages(datagram, &mut visit))
    }

    /// Runs one dump, handing each raw datagram to `on_datagram` until it reports
    /// [`Progress::Done`] (fixture capture uses this directly).
    pub fn dump_raw<F>(&mut self, req: &DumpRequest, mut on_datagram: F) -> Result<DumpStats, DiagError>
    where
        F: FnMut(&[u8]) -> Result<Progress, DiagError>,
    {
        self.seq = self.seq.wrapping_add(1);
        let request = req.to_bytes(self.seq);
        self.socket.send(&request, 0).map_err(|source| DiagError::Io {
            what: "send sock_diag request",
            source,
        })?;
        let mut stats = DumpStats::default();
        loop {
            let n = self.recv()?;
            stats.datagrams += 1;
            stats.bytes += n as u64;
            if on_datagram(&self.buf[..n])? == Progress::Done {
                return Ok(stats);
            }
        }
    }

    /// One datagram into the buffer; its length. Retries on EINTR.
    fn recv(&mut self) -> Result<usize, DiagError> {
        loop {
            // SAFETY: the buffer is ours and writable for its whole length.
            let rc = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(DiagError::Io {
                            what: "no reply to the sock_diag dump within 10 s",
                            source: e,
                        })
                    }
                    _ => {
                        return Err(DiagError::Io {
                            what: "recv sock_diag reply",
                            source: e,
                        })
                    }
                }
            }
            let n = rc as usize;
            if n == 0 {
                return Err(DiagError::Malformed {
                    offset: 0,
                    what: "empty datagram (socket closed?)",
                });
            }
            if n > self.buf.len() {
                // MSG_TRUNC returns the real length: the rest of the datagram is lost.
                return Err(DiagError::Truncated {
                    offset: 0,
                    what: "datagram larger than the receive buffer",
                    need: n,
                    have: self.buf.len(),
                });
            }
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP4: &[u8] = include_bytes!("../../tests/fixtures/netlink/tcp4_dump.bin");
    const TCP6: &[u8] = include_bytes!("../../tests/fixtures/netlink/tcp6_dump.bin");
    const UDP4: &[u8] = include_bytes!("../../tests/fixtures/netlink/udp4_dump.bin");
    const UDP6: &[u8] = include_bytes!("../../tests/fixtures/netlink/udp6_dump.bin");
    const TRUNCATED: &[u8] = include_bytes!("../../tests/fixtures/netlink/truncated.bin");
    const GARBAGE: &[u8] = include_bytes!("../../tests/fixtures/netlink/garbage.bin");

    fn collect(bytes: &[u8]) -> (Result<Progress, DiagError>, Vec<InetSock<'_>>) {
        let mut v = Vec::new();
        let r = parse_messages(bytes, &mut |s| v.push(s));
        (r, v)
    }

    fn header(len: u32, ty: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&len.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b
    }

    // The fixtures were captured by `tests/netns_sockets.rs::capture_netlink_fixtures`
    // in a namespace holding: a TCP listener on 127.0.0.1:7001 (backlog 16) with one
    // accepted connection whose client sent 1000 bytes, and a UDP socket on
    // 127.0.0.1:7002; the same over ::1 on 7003 (TCP) and 7004 (UDP).

    #[test]
    fn tcp4_fixture_decodes_listener_and_connection() {
        let (r, socks) = collect(TCP4);
        assert_eq!(r.expect("parses"), Progress::Done);
        assert_eq!(socks.len(), 3, "{socks:#?}");
        let listen: Vec<_> = socks.iter().filter(|s| s.state == state::LISTEN).collect();
        assert_eq!(listen.len(), 1);
        let l = listen[0];
        assert_eq!(l.family, AF_INET);
        assert_eq!(l.local, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(l.local_port, 7001);
        assert_eq!(l.wqueue, 16, "backlog");
        assert_eq!(l.rqueue, 0, "accept queue");
        assert_ne!(l.inode, 0);
        let est: Vec<_> = socks.iter().filter(|s| s.state == state::ESTABLISHED).collect();
        assert_eq!(est.len(), 2);
        let server = est.iter().find(|s| s.local_port == 7001).expect("server side");
        let client = est.iter().find(|s| s.remote_port == 7001).expect("client side");
        assert_eq!(server.remote_port, client.local_port);
        for s in &est {
            let info = crate::netlink::tcp_info::parse_tcp_info(s.tcp_info.expect("tcp_info"));
            assert_eq!(info.state, Some(state::ESTABLISHED));
            assert!(info.rtt_us.is_some_and(|r| r > 0));
            let cong = s.cong.and_then(crate::netlink::tcp_info::congestion_name);
            assert!(cong.is_some_and(|c| !c.is_empty()), "{:?}", s.cong);
        }
        let sent = crate::netlink::tcp_info::parse_tcp_info(client.tcp_info.unwrap_or_default());
        assert_eq!(sent.bytes_sent, Some(1000));
        let got = crate::netlink::tcp_info::parse_tcp_info(server.tcp_info.unwrap_or_default());
        assert_eq!(got.bytes_received, Some(1000));
    }

    #[test]
    fn tcp6_and_udp_fixtures_decode() {
        let (r, socks) = collect(TCP6);
        assert_eq!(r.expect("parses"), Progress::Done);
        assert_eq!(socks.len(), 3);
        assert!(socks
            .iter()
            .all(|s| s.family == AF_INET6 && s.local == IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(
            socks
                .iter()
                .filter(|s| s.state == state::LISTEN && s.local_port == 7003)
                .count(),
            1
        );

        let (r, socks) = collect(UDP4);
        assert_eq!(r.expect("parses"), Progress::Done);
        assert_eq!(socks.len(), 1);
        assert_eq!((socks[0].state, socks[0].local_port), (state::CLOSE, 7002));
        assert_eq!(socks[0].tcp_info, None);

        let (r, socks) = collect(UDP6);
        assert_eq!(r.expect("parses"), Progress::Done);
        assert_eq!(socks.len(), 1);
        assert_eq!((socks[0].family, socks[0].local_port), (AF_INET6, 7004));
    }

    #[test]
    fn truncated_fixture_is_an_error_not_a_panic() {
        let (r, socks) = collect(TRUNCATED);
        assert!(matches!(r, Err(DiagError::Truncated { .. })), "{r:?}");
        // Sockets before the cut were still delivered.
        assert!(!socks.is_empty());
    }

    #[test]
    fn garbage_fixture_is_an_error_not_a_panic() {
        let (r, _) = collect(GARBAGE);
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn every_prefix_and_every_corrupted_byte_is_safe() {
        for fixture in [TCP4, TCP6, UDP4, UDP6] {
            for n in 0..fixture.len() {
                let _ = collect(&fixture[..n]);
            }
            let mut bytes = fixture.to_vec();
            for i in 0..bytes.len() {
                let orig = bytes[i];
                for v in [0u8, 0xff, orig.wrapping_add(1)] {
                    bytes[i] = v;
                    let _ = collect(&bytes);
                }
                bytes[i] = orig;
            }
        }
    }

    #[test]
    fn a_prefix_cut_inside_a_message_reports_truncation() {
        // The first message is whole at its nlmsg_len; cut one byte short.
        let first = ne_u32(TCP4, 0) as usize;
        let (r, socks) = collect(&TCP4[..first - 1]);
        assert!(
            matches!(
                r,
                Err(DiagError::Truncated {
                    what: "netlink message",
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(socks.is_empty());
        // Cut right after it: one socket, no DONE yet.
        let (r, socks) = collect(&TCP4[..align4(first)]);
        assert_eq!(r.expect("whole message"), Progress::More);
        assert_eq!(socks.len(), 1);
    }

    #[test]
    fn nlmsg_error_maps_errno_with_a_clear_message() {
        let mut b = header(36, NLMSG_ERROR);
        b.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
        b.extend_from_slice(&header(72, SOCK_DIAG_BY_FAMILY)); // the echoed request header
        let (r, _) = collect(&b);
        let e = r.expect_err("EPERM");
        assert!(matches!(e, DiagError::Kernel { errno } if errno == libc::EPERM));
        assert!(e.to_string().contains("permission denied"), "{e}");
        assert!(!e.is_unsupported());

        let mut b = header(36, NLMSG_ERROR);
        b.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        b.extend_from_slice(&header(72, SOCK_DIAG_BY_FAMILY));
        let e = collect(&b).0.expect_err("ENOENT");
        assert!(e.is_unsupported());
        let msg = e.into_collect("UDP/IPv6").to_string();
        assert!(msg.contains("UDP/IPv6") && msg.contains("udp_diag"), "{msg}");

        // A zero error is an ACK, not a failure.
        let mut b = header(36, NLMSG_ERROR);
        b.extend_from_slice(&0i32.to_ne_bytes());
        b.extend_from_slice(&header(72, SOCK_DIAG_BY_FAMILY));
        assert_eq!(collect(&b).0.expect("ack"), Progress::More);
        // An error message too short for its errno.
        let b = header(18, NLMSG_ERROR);
        let mut b2 = b.clone();
        b2.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(collect(&b2[..18]).0, Err(DiagError::Truncated { .. })));
    }

    #[test]
    fn done_with_a_negative_status_is_an_error() {
        let mut b = header(20, NLMSG_DONE);
        b.extend_from_slice(&(-libc::EINTR).to_ne_bytes());
        assert!(matches!(collect(&b).0, Err(DiagError::Kernel { errno }) if errno == libc::EINTR));
        let mut b = header(20, NLMSG_DONE);
        b.extend_from_slice(&0i32.to_ne_bytes());
        assert_eq!(collect(&b).0.expect("done"), Progress::Done);
        assert_eq!(collect(&header(16, NLMSG_DONE)).0.expect("bare done"), Progress::Done);
    }

    #[test]
    fn malformed_lengths_are_errors() {
        assert!(matches!(
            collect(&header(8, NLMSG_NOOP)).0,
            Err(DiagError::Malformed { .. })
        ));
        assert!(matches!(
            collect(&header(0, NLMSG_NOOP)).0,
            Err(DiagError::Malformed { .. })
        ));
        assert!(matches!(collect(&[1, 2, 3]).0, Err(DiagError::Truncated { .. })));
        assert!(matches!(collect(&header(16, NLMSG_OVERRUN)).0, Err(DiagError::Overrun)));
        // An inet_diag_msg shorter than 72 bytes.
        let mut b = header(16 + 40, SOCK_DIAG_BY_FAMILY);
        b.extend_from_slice(&[AF_INET; 40]);
        assert!(matches!(
            collect(&b).0,
            Err(DiagError::Truncated {
                what: "inet_diag_msg",
                ..
            })
        ));
        // A bad address family.
        let mut b = header(16 + 72, SOCK_DIAG_BY_FAMILY);
        b.extend_from_slice(&[99; 72]);
        assert!(matches!(collect(&b).0, Err(DiagError::Malformed { .. })));
        // An attribute whose length runs past the message.
        let mut b = header(16 + 72 + 4, SOCK_DIAG_BY_FAMILY);
        let mut m = [0u8; 72];
        m[0] = AF_INET;
        b.extend_from_slice(&m);
        b.extend_from_slice(&200u16.to_ne_bytes());
        b.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        assert!(matches!(
            collect(&b).0,
            Err(DiagError::Truncated { what: "attribute", .. })
        ));
    }

    #[test]
    fn request_bytes_ask_for_every_state_and_tcp_info() {
        let req = DumpRequest {
            family: AF_INET6,
            protocol: IPPROTO_TCP,
            states: ALL_STATES,
            tcp_info: true,
        };
        let b = req.to_bytes(7);
        assert_eq!(b.len(), 16 + 56);
        assert_eq!(ne_u32(&b, 0), 72);
        assert_eq!(ne_u16(&b, 4), SOCK_DIAG_BY_FAMILY);
        assert_eq!(ne_u16(&b, 6), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(ne_u32(&b, 8), 7);
        assert_eq!(b[16], AF_INET6);
        assert_eq!(b[17], IPPROTO_TCP);
        assert_eq!(b[18], (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_CONG - 1)));
        assert_eq!(ne_u32(&b, 20), 0x1fff, "bits 0..=12 incl. NEW_SYN_RECV");
        let udp = DumpRequest {
            family: AF_INET,
            protocol: IPPROTO_UDP,
            states: ALL_STATES,
            tcp_info: true,
        };
        assert_eq!(udp.to_bytes(1)[18], 0, "no TCP extensions for UDP");
    }
}
