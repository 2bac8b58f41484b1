//! netsight: Linux network observability.
//!
//! Data flows one way: collectors ([`collect`]) → snapshot ([`snapshot`]) →
//! outputs ([`export`]). Parsers ([`parse`], [`netlink`]) are pure functions.

pub mod alloc;
pub mod catalog;
pub mod cli;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod export;
pub mod nab;
pub mod netlink;
pub mod parse;
pub mod rules;
pub mod snapshot;
