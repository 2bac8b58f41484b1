//! Netlink message code: request building and pure reply parsers for sock_diag and
//! ctnetlink. Socket I/O lives in the collectors; parsers here take bytes.

pub mod ctnetlink;
pub mod nftables;
pub mod sock_diag;
pub mod tcp_info;
