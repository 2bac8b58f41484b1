//! TCP and UDP sockets through netlink sock_diag.
use super::{CollectContext, CollectError, Collector};
use crate::catalog::CollectorDoc;
use crate::config::SocketsConfig;
use crate::snapshot::Emitter;

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "sockets",
    source: "netlink sock_diag, /proc/*/fd",
    capabilities: "none for counts; CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for process attribution",
    metrics: &[],
    dynamic: &[],
};

pub struct Sockets {
    _cfg: SocketsConfig,
}

impl Sockets {
    pub fn new(cfg: &SocketsConfig) -> Self {
        Sockets { _cfg: cfg.clone() }
    }
}

impl Collector for Sockets {
    fn name(&self) -> &'static str {
        "sockets"
    }
    fn collect(&mut self, _ctx: &CollectContext, _out: &mut Emitter) -> Result<(), CollectError> {
        Err(CollectError::Unavailable("not implemented yet".into()))
    }
}
