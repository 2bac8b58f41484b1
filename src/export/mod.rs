//! Outputs. Each reads snapshots; none touches the kernel.

pub mod http;
pub mod json;
pub mod notify;
pub mod otlp;
pub mod prometheus;
pub mod tls;
pub mod webconfig;
