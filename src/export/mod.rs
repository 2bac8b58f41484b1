//! Outputs. Each reads snapshots; none touches the kernel.

pub mod http;
pub mod json;
pub mod notify;
pub mod otlp;
pub mod prometheus;
pub mod tls;
pub mod webconfig;

/// This host's name as the kernel knows it (`host.name`, the default `instance`).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
