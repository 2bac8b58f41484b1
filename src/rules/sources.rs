//! Where rules come from: the packs embedded at build time and the configured paths.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::load::RuleSource;

/// The default rule packs, compiled into the binary.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("rules/link.yaml", include_str!("../../rules/link.yaml")),
    ("rules/network.yaml", include_str!("../../rules/network.yaml")),
    ("rules/transport.yaml", include_str!("../../rules/transport.yaml")),
    ("rules/firewall.yaml", include_str!("../../rules/firewall.yaml")),
    ("rules/security.yaml", include_str!("../../rules/security.yaml")),
];

pub fn embedded() -> Vec<RuleSource> {
    EMBEDDED
        .iter()
        .map(|(n, t)| RuleSource {
            name: format!("<embedded>/{n}"),
            text: t.to_string(),
        })
        .collect()
}

/// Every rule file under `paths` (files as given; directories: their *.yaml/*.yml),
/// sorted for a stable order.
pub fn files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                    .collect();
                v.sort();
                out.extend(v);
            }
        } else {
            out.push(p.clone());
        }
    }
    out
}

pub fn read(files: &[PathBuf]) -> Result<Vec<RuleSource>, super::load::RuleError> {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|text| RuleSource {
                    name: f.display().to_string(),
                    text,
                })
                .map_err(|e| super::load::RuleError {
                    file: f.display().to_string(),
                    line: 0,
                    column: 0,
                    message: e.to_string(),
                })
        })
        .collect()
}

/// A fingerprint of the configured files (names and modification times) so the daemon
/// notices edits by polling once per tick: cheap, and it works on every filesystem
/// (inotify misses changes on some network and overlay mounts).
pub fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    files(paths)
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let m = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map(|m| m.len()).unwrap_or(0);
            (f, m, len)
        })
        .collect()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
