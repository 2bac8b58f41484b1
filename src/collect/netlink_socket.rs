//! The request/dump socket that the netlink collectors share (conntrack's
//! ctnetlink statistics and table dumps, nftables, netdev's rtnetlink dumps),
//! and the notification socket netdev watches link events with.
//! Socket I/O lives here, in `collect/`; the messages it carries are built and
//! parsed by the pure code in `crate::netlink`.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::netlink::ctnetlink::CtnlError;
use crate::netlink::set_recv_timeout;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{op}: {source}")]
    Io { op: &'static str, source: io::Error },
    #[error(transparent)]
    Reply(#[from] CtnlError),
}

impl DumpError {
    pub fn is_permission(&self) -> bool {
        match self {
            DumpError::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            DumpError::Reply(CtnlError::Kernel { errno }) => *errno == libc::EPERM || *errno == libc::EACCES,
            DumpError::Reply(_) => false,
        }
    }

    pub(crate) fn io(op: &'static str, why: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DumpError {
        DumpError::Io {
            op,
            source: io::Error::other(why),
        }
    }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> DumpError {
    move |source| DumpError::Io { op, source }
}

static SEQ: AtomicU32 = AtomicU32::new(1);

/// Next netlink sequence number (shared by every request netsight sends).
pub fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// How long a reply may take before the exchange fails: the kernel answers
/// dumps synchronously, so a silent socket means something is wrong.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bound on datagrams of one reply (a million conntrack entries fit in
/// ~10k): a reply that never ends fails instead of holding the collector.
const MAX_DATAGRAMS: usize = 4_000_000;

/// Room for one datagram: the kernel sends at most a page's worth per dump
/// datagram, or 32 KiB on large-page systems.
const RECV_BUFFER: usize = 64 * 1024;

/// A netlink socket in the calling thread's network namespace for
/// request/reply and request/dump exchanges. Received datagrams are handed to
/// the caller one at a time, so a dump is never held whole; the receive buffer
/// is kept with the socket (a fresh 64 KiB one per dump grew and trimmed the
/// heap every tick).
pub struct NetlinkSocket {
    sock: Socket,
    buf: Vec<u8>,
}

impl NetlinkSocket {
    /// A `NETLINK_NETFILTER` socket (ctnetlink, nf_tables).
    pub fn open() -> Result<NetlinkSocket, DumpError> {
        Self::open_protocol(NETLINK_NETFILTER)
    }

    /// A socket of another netlink protocol (`NETLINK_ROUTE` for link dumps).
    pub fn open_protocol(protocol: isize) -> Result<NetlinkSocket, DumpError> {
        let mut sock = Socket::new(protocol).map_err(io_err("socket"))?;
        sock.bind_auto().map_err(io_err("bind"))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(io_err("connect"))?;
        set_recv_timeout(&sock, RECV_TIMEOUT).map_err(io_err("setsockopt(SO_RCVTIMEO)"))?;
        Ok(NetlinkSocket {
            sock,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Sends `req`, then passes every received datagram to `on_datagram` until it
    /// returns `Ok(true)` (the reply is complete). When `raw` is given, datagrams are
    /// also appended to it (fixture capture). After an `Err` the socket may still
    /// hold the rest of the reply: the caller drops it.
    pub fn exchange(
        &mut self,
        req: &[u8],
        mut raw: Option<&mut Vec<u8>>,
        mut on_datagram: impl FnMut(&[u8]) -> Result<bool, CtnlError>,
    ) -> Result<(), DumpError> {
        let sent = self.sock.send(req, 0).map_err(io_err("send"))?;
        if sent != req.len() {
            return Err(DumpError::io("send", "short write"));
        }
        for _ in 0..MAX_DATAGRAMS {
            self.buf.clear();
            let n = match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(DumpError::Io {
                        op: "recv",
                        source: io::Error::new(io::ErrorKind::TimedOut, "no reply from the kernel"),
                    });
                }
                Err(e) => return Err(DumpError::Io { op: "recv", source: e }),
            };
            if n > self.buf.len() {
                return Err(DumpError::io(
                    "recv",
                    format!("datagram of {n} bytes truncated to {}", self.buf.len()),
                ));
            }
            if let Some(raw) = raw.as_deref_mut() {
                raw.extend_from_slice(&self.buf);
            }
            if on_datagram(&self.buf)? {
                return Ok(());
            }
        }
        Err(DumpError::io("recv", "dump did not end"))
    }
}

/// Datagrams drained per look before giving up and saying "something changed":
/// bounds the work a storm of notifications can cause in one tick.
const MAX_EVENTS_PER_LOOK: usize = 4096;

/// Only whether a notification came matters, not what it says: each is read
/// into this much and the rest discarded (`MSG_TRUNC`).
const EVENT_PEEK: usize = 64;

/// A netlink socket subscribed to multicast groups (in the calling thread's
/// network namespace), read without blocking: it only tells whether anything was
/// announced since the last look, so that a collector can keep what it read
/// until then.
pub struct NetlinkEvents {
    sock: Socket,
    buf: Vec<u8>,
}

impl NetlinkEvents {
    /// Subscribes to `groups` (a bind mask, e.g. `RTMGRP_LINK`) of `protocol`.
    /// Open it before reading the state it announces changes of, so that no
    /// change falls between the read and the subscription.
    pub fn subscribe(protocol: isize, groups: u32) -> Result<NetlinkEvents, DumpError> {
        let mut sock = Socket::new(protocol).map_err(io_err("socket"))?;
        sock.bind(&SocketAddr::new(0, groups)).map_err(io_err("bind"))?;
        sock.set_non_blocking(true).map_err(io_err("fcntl(O_NONBLOCK)"))?;
        Ok(NetlinkEvents {
            sock,
            buf: Vec::with_capacity(EVENT_PEEK),
        })
    }

    /// Drains what arrived since the last call: true when anything did, or when
    /// the kernel dropped notifications because the socket's queue was full
    /// (`ENOBUFS`). Either way the announced state must be read again.
    pub fn any_since_last_look(&mut self) -> Result<bool, DumpError> {
        let mut any = false;
        for _ in 0..MAX_EVENTS_PER_LOOK {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => any = true,
                Err(e) => return Err(DumpError::Io { op: "recv", source: e }),
            }
        }
        Ok(true)
    }
}
