//! `netsight serve`: the daemon.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use super::{load_config, ServeArgs};
use crate::daemon::{scheduler_with, spawn_collection, Shared};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(&args.common)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(i) = args.interval {
        cfg.interval = i;
    }
    if let Some(f) = args.web_config_file {
        cfg.web_config_file = Some(f);
    }
    cfg.validate()?;
    let web = match &cfg.web_config_file {
        Some(p) => Some(Arc::new(crate::export::webconfig::WebConfig::load(p)?)),
        None => None,
    };
    let otlp = crate::export::otlp::Otlp::from_config(&cfg)?;
    let instance = crate::export::notify::default_instance(&cfg.listen);
    let notifier = crate::export::notify::Notifier::from_config(&cfg.notify, cfg.interval, &instance)?;
    let extra = otlp
        .iter()
        .map(|o| o.stats_collector())
        .chain(notifier.iter().map(|n| n.stats_collector()))
        .collect();
    let sched = scheduler_with(&cfg, extra)?;
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        interval = ?cfg.interval,
        collectors = ?sched.collector_names(),
        "netsight serving"
    );
    let rules = crate::rules::load_configured(&cfg.rules).map_err(|errs| {
        anyhow::anyhow!(
            "rules rejected:\n{}",
            errs.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
        )
    })?;
    tracing::info!(rules = rules.rules.len(), "rules loaded");
    let mut engine = crate::rules::Engine::new(rules);
    engine.events = crate::rules::events::EventLog::new(cfg.rules.event_log_size);
    let shared = Arc::new(Shared::new(cfg.history_points, engine));
    shared.restore_state(&cfg.rules);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let collection =
        spawn_collection(sched, shared.clone(), cfg.clone(), stop_rx).context("cannot start the collection thread")?;
    let otlp = otlp.map(|o| o.start(shared.clone())).transpose()?;
    let notifier = notifier.map(|n| n.start(shared.clone()));
    let mut hup = signal(SignalKind::hangup())?;
    let hup_shared = shared.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rules");
            hup_shared
                .reload_requested
                .store(true, std::sync::atomic::Ordering::Release);
        }
    });

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    // The result waits until collection has stopped and saved its state.
    let served = crate::export::http::serve_with(listener, shared, web, shutdown).await;
    let _ = stop_tx.send(true);
    stop_collection(collection).await;
    if let Some(o) = otlp {
        o.shutdown().await;
    }
    if let Some(n) = notifier {
        n.shutdown().await;
    }
    served
}

/// How long shutdown waits for the collection thread's last tick and state save.
const COLLECTION_STOP_GRACE: Duration = Duration::from_secs(10);

/// Waits for the collection thread to end, at most [`COLLECTION_STOP_GRACE`]. The
/// join runs on a detached thread: a blocking task would hold the runtime's
/// shutdown for as long as the join blocks.
async fn stop_collection(collection: std::thread::JoinHandle<()>) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let joiner = std::thread::Builder::new().name("netsight-join".into()).spawn(move || {
        let _ = done_tx.send(collection.join().is_ok());
    });
    if let Err(e) = joiner {
        tracing::warn!(error = %e, "cannot wait for the collection thread; exiting without it");
        return;
    }
    match tokio::time::timeout(COLLECTION_STOP_GRACE, done_rx).await {
        Ok(Ok(true)) => {}
        Ok(_) => tracing::error!("the collection thread panicked"),
        Err(_) => tracing::warn!(
            grace = ?COLLECTION_STOP_GRACE,
            "the collection thread did not stop in time; exiting without its last state save"
        ),
    }
}
