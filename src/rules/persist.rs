//! Baseline persistence across restarts, so a restart does not relearn a week of
//! behaviour. The file is a one-line header (`netsight-state <version> <crc32> <len>`)
//! followed by JSON; it is written to a temporary file, synced and renamed into place
//! so a crash never leaves a torn file. A corrupt, foreign or other-version file is
//! ignored with a warning.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::engine::GroupState;
use super::Engine;
use crate::snapshot::{History, SavedSeries};

const MAGIC: &str = "netsight-state";
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    saved_at: f64,
    engine: BTreeMap<String, (String, Vec<GroupState>)>,
    history: Vec<SavedSeries>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a netsight state file")]
    Foreign,
    #[error("state file version {0}, this netsight reads version {VERSION}")]
    Version(u32),
    #[error("checksum mismatch (file damaged)")]
    Checksum,
    #[error("unreadable state: {0}")]
    Parse(String),
}

pub fn save(path: &Path, engine: &Engine, hist: &History) -> Result<(), PersistError> {
    let keep = engine.rules().referenced_metrics();
    let payload = Payload {
        saved_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        engine: engine.export_state(),
        history: hist.export(|name| keep.contains(name)),
    };
    let body = serde_json::to_vec(&payload).map_err(|e| PersistError::Parse(e.to_string()))?;
    let header = format!("{MAGIC} {VERSION} {:08x} {}\n", crc32fast::hash(&body), body.len());
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(header.as_bytes())?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn read(path: &Path) -> Result<Payload, PersistError> {
    let bytes = std::fs::read(path)?;
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or(PersistError::Foreign)?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| PersistError::Foreign)?;
    let mut parts = header.split(' ');
    if parts.next() != Some(MAGIC) {
        return Err(PersistError::Foreign);
    }
    let version: u32 = parts.next().and_then(|v| v.parse().ok()).ok_or(PersistError::Foreign)?;
    if version != VERSION {
        return Err(PersistError::Version(version));
    }
    let crc = parts
        .next()
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or(PersistError::Foreign)?;
    let len: usize = parts.next().and_then(|l| l.parse().ok()).ok_or(PersistError::Foreign)?;
    let body = &bytes[nl + 1..];
    if body.len() != len || crc32fast::hash(body) != crc {
        return Err(PersistError::Checksum);
    }
    serde_json::from_slice(body).map_err(|e| PersistError::Parse(e.to_string()))
}

/// Restores engine state and history; returns the number of groups restored.
pub fn restore(path: &Path, engine: &mut Engine, hist: &mut History) -> Result<usize, PersistError> {
    let p = read(path)?;
    hist.import(p.history);
    Ok(engine.import_state(p.engine))
}

/// Serde for floats that may be NaN or infinite (JSON has no such numbers): written
/// as `null`, read back as NaN.
pub mod float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_some(v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}
