//! The sock_diag dumps: which requests a tick sends and the streaming visit of
//! their replies (shared with `analyze`).

use super::*;

/// Protocol of a socket handed to a [`visit_sockets`] visitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Which sockets [`visit_sockets`] dumps: state masks (`1 << state`, 0 = none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketDumps {
    pub tcp_states: u32,
    /// Ask for `INET_DIAG_INFO` (tcp_info) and `INET_DIAG_CONG` on TCP sockets.
    pub tcp_info: bool,
    pub udp_states: u32,
}

impl SocketDumps {
    /// What the collector dumps every tick: every TCP and UDP socket, with tcp_info.
    pub const ALL: SocketDumps = SocketDumps {
        tcp_states: ALL_STATES,
        tcp_info: true,
        udp_states: ALL_STATES,
    };
}

/// A dump the kernel refused or that failed mid-way.
#[derive(Debug)]
pub struct DumpFailed {
    /// `TCP/IPv4`… ([`DumpRequest::describe`]).
    pub dump: &'static str,
    pub error: DiagError,
}

impl DumpFailed {
    pub fn into_collect(self) -> CollectError {
        self.error.into_collect(self.dump)
    }
}

/// How [`visit_sockets`] went, short of failing.
#[derive(Debug, Default)]
pub struct VisitOutcome {
    /// The kernel has no UDP handler (`udp_diag` missing): the TCP sockets were
    /// all visited, the UDP ones were not.
    pub udp_unsupported: Option<DiagError>,
}

/// Runs the collector's dumps on `diag`, calling `visit` for every socket as its
/// netlink message is parsed (nothing is collected): TCP listeners of both families
/// first, so a visitor knows every listening port before it sees connections, then
/// the other TCP states, then UDP (IPv4, IPv6). TCP is one single-walk request
/// for both families where the kernel takes it, four per-family requests otherwise. The daemon's collector
/// and `netsight analyze` both read sockets through here.
///
/// After an `Err` the netlink socket may still hold the rest of the failed dump:
/// drop it and open a new one.
pub fn visit_sockets<F>(diag: &mut DiagSocket, what: &SocketDumps, visit: F) -> Result<VisitOutcome, DumpFailed>
where
    F: FnMut(Protocol, InetSock<'_>),
{
    visit_sockets_of(diag, what, [true, true], visit)
}

/// [`visit_sockets`] with the UDP dump of a family left out where `udp_families`
/// (IPv4, IPv6) is false.
pub(super) fn visit_sockets_of<F>(
    diag: &mut DiagSocket,
    what: &SocketDumps,
    udp_families: [bool; 2],
    mut visit: F,
) -> Result<VisitOutcome, DumpFailed>
where
    F: FnMut(Protocol, InetSock<'_>),
{
    let tcp = |family, states| DumpRequest {
        family,
        protocol: IPPROTO_TCP,
        states,
        tcp_info: what.tcp_info,
    };
    if what.tcp_states != 0 && diag.tcp_single_walk() {
        // One walk of the TCP hash tables for both families (the kernel dumps the
        // listening hash before the others, so listeners still come first).
        let req = tcp(AF_UNSPEC, what.tcp_states);
        let mut seen = 0u64;
        match diag.dump(&req, |s| {
            seen += 1;
            visit(Protocol::Tcp, s)
        }) {
            Ok(_) => return visit_udp(diag, what, udp_families, &mut visit),
            // Refused before any socket was visited (no compat handler in this
            // kernel): the socket is clean, fall back to per-family requests.
            Err(DiagError::Kernel { errno }) if seen == 0 => {
                tracing::debug!(errno, "legacy TCPDIAG_GETSOCK refused; dumping TCP per family");
                diag.disable_tcp_single_walk();
            }
            Err(error) => {
                return Err(DumpFailed {
                    dump: req.describe(),
                    error,
                })
            }
        }
    }
    let listen = what.tcp_states & LISTEN_ONLY;
    let others = what.tcp_states & ALL_BUT_LISTEN;
    let mut reqs = Vec::with_capacity(4);
    if listen != 0 {
        reqs.extend([tcp(AF_INET, listen), tcp(AF_INET6, listen)]);
    }
    if others != 0 {
        reqs.extend([tcp(AF_INET, others), tcp(AF_INET6, others)]);
    }
    for req in reqs {
        diag.dump(&req, |s| visit(Protocol::Tcp, s))
            .map_err(|error| DumpFailed {
                dump: req.describe(),
                error,
            })?;
    }
    visit_udp(diag, what, udp_families, &mut visit)
}

/// The UDP half of [`visit_sockets`]: one dump per family (the kernel has no
/// single-walk request for UDP).
pub(super) fn visit_udp<F>(
    diag: &mut DiagSocket,
    what: &SocketDumps,
    families: [bool; 2],
    visit: &mut F,
) -> Result<VisitOutcome, DumpFailed>
where
    F: FnMut(Protocol, InetSock<'_>),
{
    let mut outcome = VisitOutcome::default();
    if what.udp_states == 0 {
        return Ok(outcome);
    }
    for (family, wanted) in [AF_INET, AF_INET6].into_iter().zip(families) {
        if !wanted {
            continue;
        }
        let req = DumpRequest {
            family,
            protocol: IPPROTO_UDP,
            states: what.udp_states,
            tcp_info: false,
        };
        match diag.dump(&req, |s| visit(Protocol::Udp, s)) {
            Ok(_) => {}
            // The error ended the dump cleanly; the socket stays usable.
            Err(e) if e.is_unsupported() => outcome.udp_unsupported = Some(e),
            Err(error) => {
                return Err(DumpFailed {
                    dump: req.describe(),
                    error,
                })
            }
        }
    }
    Ok(outcome)
}
