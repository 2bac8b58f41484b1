//! The rule engine: YAML rules evaluated on every snapshot, learned baselines,
//! anomaly series, root-cause annotations and an event log.

pub mod baseline;
pub mod detector;
pub mod engine;
pub mod events;
pub mod expr;
mod fast;
pub mod load;
pub mod schema;
pub mod template;

pub use engine::Engine;
pub use load::{load, RuleError, RuleSet, RuleSource};
pub mod sources;

use crate::config::RulesConfig;

/// Every configured rule source: the embedded packs (unless disabled) then the files.
pub fn configured_sources(cfg: &RulesConfig) -> Result<Vec<RuleSource>, Vec<RuleError>> {
    let mut out = if cfg.embedded { sources::embedded() } else { Vec::new() };
    out.extend(sources::read(&sources::files(&cfg.paths)).map_err(|e| vec![e])?);
    Ok(out)
}

/// Loads the configured rules.
pub fn load_configured(cfg: &RulesConfig) -> Result<RuleSet, Vec<RuleError>> {
    load(&configured_sources(cfg)?)
}
pub mod changepoint;
pub mod persist;
pub mod seasonal;
pub mod testing;
