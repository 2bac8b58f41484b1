//! `netsight collect --once`: one snapshot to stdout.

use std::io::Write;

use super::{load_config, CollectArgs, Format};
use crate::daemon::scheduler_for;

pub async fn run(args: CollectArgs) -> anyhow::Result<()> {
    let cfg = load_config(&args.common)?;
    let mut sched = scheduler_for(&cfg)?;
    let snap = sched.tick().await;
    let text = match args.format {
        Format::Prometheus => crate::export::prometheus::encode(&snap)?,
        Format::Json => serde_json::to_string_pretty(&crate::export::json::render(&snap))? + "\n",
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
