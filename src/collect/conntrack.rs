//! Connection tracking: table size and per-CPU statistics.
use super::{CollectContext, CollectError, Collector};
use crate::catalog::CollectorDoc;
use crate::snapshot::Emitter;

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "conntrack",
    source: "ctnetlink, /proc/sys/net/netfilter",
    capabilities: "CAP_NET_ADMIN for per-CPU statistics",
    metrics: &[],
    dynamic: &[],
};

#[derive(Default)]
pub struct Conntrack;

impl Collector for Conntrack {
    fn name(&self) -> &'static str {
        "conntrack"
    }
    fn collect(&mut self, _ctx: &CollectContext, _out: &mut Emitter) -> Result<(), CollectError> {
        Err(CollectError::Unavailable("not implemented yet".into()))
    }
}
