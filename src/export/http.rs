//! HTTP endpoints (hyper 1): `/metrics`, `/healthz`, `/`. Handlers only read the
//! last published snapshot, so scrapes cost a pointer copy and a write.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::daemon::Shared;
use crate::export::webconfig::WebConfig;

const INDEX: &str = "<!doctype html><html><head><title>netsight</title></head><body>\
<h1>netsight</h1><ul>\
<li><a href=\"/metrics\">/metrics</a>: Prometheus exposition of the latest snapshot</li>\
<li><a href=\"/healthz\">/healthz</a>: liveness and snapshot age</li>\
<li><a href=\"/api/v1/events\">/api/v1/events?from=&amp;to=</a>: anomaly events (Grafana annotation shape)</li>\
</ul></body></html>\n";

fn response(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

pub fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => match shared.latest().text() {
            Some(text) => response(StatusCode::OK, crate::export::prometheus::CONTENT_TYPE, text),
            None => response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "the snapshot cannot be encoded; see the daemon log\n",
            ),
        },
        "/healthz" => {
            let p = shared.latest();
            if p.snapshot.families.is_empty() {
                response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no snapshot yet\n")
            } else {
                let age = p.snapshot.taken_at.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
                response(StatusCode::OK, "text/plain", format!("ok, snapshot age {age:.1}s\n"))
            }
        }
        "/api/v1/events" => {
            let (from, to) = time_range(req.uri().query().unwrap_or(""));
            let events = shared.engine().events.range(from, to);
            let body: Vec<serde_json::Value> = events.iter().map(crate::rules::events::to_annotation).collect();
            match serde_json::to_vec(&body) {
                Ok(b) => response(StatusCode::OK, "application/json", b),
                Err(e) => response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            }
        }
        "/" => response(StatusCode::OK, "text/html; charset=utf-8", INDEX),
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `from`/`to` query parameters in unix seconds or milliseconds (Grafana sends ms).
fn time_range(query: &str) -> (f64, f64) {
    let mut from = 0.0;
    let mut to = f64::MAX;
    for pair in query.split('&') {
        let Some((k, v)) = pair.split_once('=') else { continue };
        let Ok(x) = v.parse::<f64>() else { continue };
        let secs = if x > 1e11 { x / 1000.0 } else { x };
        match k {
            "from" => from = secs,
            "to" => to = secs,
            _ => {}
        }
    }
    (from, to)
}

/// Serves until `shutdown` resolves, then lets open connections finish (up to 5 s).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_with(listener, shared, None, shutdown).await
}

/// A client that has not finished the TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`serve`] with a web configuration (`--web.config.file`): TLS on every accepted
/// connection when configured, basic auth checked before routing.
pub async fn serve_with(
    listener: TcpListener,
    shared: Arc<Shared>,
    web: Option<Arc<WebConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer): (_, SocketAddr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let shared = shared.clone();
                let svc_web = web.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    let web = svc_web.clone();
                    async move {
                        let Some(web) = web else { return Ok::<_, Infallible>(route(&shared, &req)) };
                        if let Some(denied) = web.authorize(&req).await {
                            return Ok(denied);
                        }
                        let mut r = route(&shared, &req);
                        web.decorate(&mut r);
                        Ok(r)
                    }
                });
                let watcher = graceful.watcher();
                let tls = web.as_ref().and_then(|w| w.tls.clone());
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    let result = match tls {
                        None => watcher.watch(http.serve_connection(TokioIo::new(stream), svc)).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => watcher.watch(http.serve_connection(TokioIo::new(tls), svc)).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            }
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {
            tracing::warn!("connections still open after 5s; closing");
        }
    }
    Ok(())
}
