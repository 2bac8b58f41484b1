//! Netlink message code: request building and pure reply parsers for sock_diag,
//! ctnetlink and nf_tables. Socket I/O lives in the collectors; parsers here take
//! bytes, so `tests/netlink_fuzz.rs` property-tests them on arbitrary and mutated
//! captured replies (typed error, never a panic, a hang or an unbounded allocation).

pub mod ctnetlink;
pub mod nftables;
pub mod sock_diag;
pub mod tcp_info;
