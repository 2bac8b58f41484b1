//! The OTLP exporter: bounded retries with backoff around the SDK exporter, the
//! hyper HTTP client with TLS, and the resource attributes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::Resource;

use super::config::{OtlpConfig, Protocol};
use super::stats::Stats;

/// Attempts per export cycle (the first plus retries), while they fit in half an interval.
pub(super) const MAX_ATTEMPTS: u32 = 3;
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest pause between export cycles while the collector keeps failing.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(super) struct RetryState {
    /// Consecutive export cycles that failed.
    pub(super) failed_cycles: u32,
    /// Cycles to skip before the next attempt.
    pub(super) skip: u64,
    pub(super) last_error: String,
}

pub(super) struct RetryingExporter<E> {
    pub(super) inner: E,
    pub(super) stats: Arc<Stats>,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) endpoint: String,
    pub(super) state: Mutex<RetryState>,
}

impl<E> RetryingExporter<E> {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, RetryState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Cycles to skip after `failed` consecutive failed cycles: 0, 1, 3, 7… up to
    /// `MAX_BACKOFF`.
    pub(super) fn skip_after(&self, failed: u32) -> u64 {
        let max = (MAX_BACKOFF.as_secs_f64() / self.interval.as_secs_f64())
            .floor()
            .max(1.0) as u64
            - 1;
        let exp = (1u64 << failed.saturating_sub(1).min(20)) - 1;
        exp.min(max)
    }
}

impl<E: PushMetricExporter> PushMetricExporter for RetryingExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        {
            let mut st = self.state();
            if st.skip > 0 {
                st.skip -= 1;
                return Ok(());
            }
        }
        let start = Instant::now();
        let mut delay = FIRST_RETRY;
        let mut attempt = 0;
        let error = loop {
            attempt += 1;
            let err = match tokio::time::timeout(self.timeout, self.inner.export(metrics)).await {
                Ok(Ok(())) => {
                    self.stats.exports.fetch_add(1, Ordering::Relaxed);
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    self.stats.last_success_ms.store(now, Ordering::Relaxed);
                    let mut st = self.state();
                    if st.failed_cycles > 0 {
                        tracing::info!(
                            endpoint = %self.endpoint,
                            failed_cycles = st.failed_cycles,
                            "OTLP export recovered"
                        );
                    }
                    *st = RetryState::default();
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("timed out after {:?}", self.timeout),
            };
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            if attempt >= MAX_ATTEMPTS || start.elapsed() + delay > self.interval / 2 {
                break err;
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        };
        let mut st = self.state();
        st.failed_cycles = st.failed_cycles.saturating_add(1);
        st.skip = self.skip_after(st.failed_cycles);
        if st.failed_cycles == 1 || st.failed_cycles % 10 == 0 || error != st.last_error {
            tracing::warn!(
                endpoint = %self.endpoint,
                failed_cycles = st.failed_cycles,
                next_attempt_in = ?self.interval * (st.skip as u32 + 1),
                %error,
                "OTLP export failed"
            );
        }
        st.last_error = error;
        // Reported as success: the failure is counted and logged here; the SDK would
        // only log it again.
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

// ---------------------------------------------------------------------------------
// Transports

/// The OTLP/HTTP client: hyper over plain TCP or rustls, with the configured timeout.
pub(super) struct HyperClient<Conn> {
    pub(super) client: hyper_util::client::legacy::Client<Conn, Full<Bytes>>,
    pub(super) timeout: Duration,
}

impl<Conn> std::fmt::Debug for HyperClient<Conn> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HyperClient")
    }
}

pub(super) type HttpResult = Result<hyper::Response<Bytes>, opentelemetry_http::HttpError>;

impl<Conn: Connect + Clone + Send + Sync + 'static> opentelemetry_http::HttpClient for HyperClient<Conn> {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: hyper::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = HttpResult> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let work = async {
                let resp = self.client.request(request.map(Full::new)).await?;
                let (parts, body) = resp.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, opentelemetry_http::HttpError>(hyper::Response::from_parts(parts, body))
            };
            match tokio::time::timeout(self.timeout, work).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", self.timeout).into()),
            }
        })
    }
}

pub(super) fn http_connector(timeout: Duration) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.enforce_http(false);
    c.set_nodelay(true);
    c.set_connect_timeout(Some(timeout));
    c
}

pub(super) fn client_tls(cfg: &OtlpConfig) -> anyhow::Result<Option<rustls::ClientConfig>> {
    if !cfg.is_https() {
        return Ok(None);
    }
    cfg.tls.rustls().map(Some).context("otlp.tls")
}

pub(super) fn build_exporter(cfg: &OtlpConfig) -> anyhow::Result<opentelemetry_otlp::MetricExporter> {
    let endpoint = cfg.endpoint();
    let tls = client_tls(cfg)?;
    let exporter = match cfg.protocol {
        Protocol::Grpc => {
            let ep = tonic::transport::Endpoint::from_shared(endpoint.clone())
                .with_context(|| format!("otlp.endpoint {endpoint:?}"))?
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout);
            let channel = match tls {
                Some(tls) => ep.connect_with_connector_lazy(
                    hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(tls)
                        .https_only()
                        .enable_http2()
                        .wrap_connector(http_connector(cfg.timeout)),
                ),
                None => ep.connect_lazy(),
            };
            let mut md = tonic::metadata::MetadataMap::new();
            for (k, v) in &cfg.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .with_context(|| format!("otlp.headers: {k:?}"))?;
                md.insert(key, v.parse().with_context(|| format!("otlp.headers.{k}"))?);
            }
            let mut b = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .with_metadata(md);
            if cfg.gzip {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            b.with_temporality(Temporality::Cumulative).build()?
        }
        Protocol::Http => {
            let mut b = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(cfg.timeout)
                .with_headers(cfg.headers.clone().into_iter().collect());
            b = match tls {
                Some(tls) => {
                    let conn = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(tls)
                        .https_only()
                        .enable_http1()
                        .wrap_connector(http_connector(cfg.timeout));
                    b.with_http_client(HyperClient {
                        client: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(conn),
                        timeout: cfg.timeout,
                    })
                }
                None => b.with_http_client(HyperClient {
                    client: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                        .build(http_connector(cfg.timeout)),
                    timeout: cfg.timeout,
                }),
            };
            if cfg.gzip {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            b.with_temporality(Temporality::Cumulative).build()?
        }
    };
    Ok(exporter)
}

pub(super) fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(super) fn resource(cfg: &OtlpConfig) -> Resource {
    let mut attrs = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Some(h) = crate::export::host_name() {
        attrs.push(KeyValue::new("host.name", h));
    }
    if let Some(id) = read_trimmed("/etc/machine-id").or_else(|| read_trimmed("/var/lib/dbus/machine-id")) {
        attrs.push(KeyValue::new("host.id", id));
    }
    for (k, v) in &cfg.resource {
        attrs.push(KeyValue::new(k.clone(), v.clone()));
    }
    Resource::builder()
        .with_service_name("netsight")
        .with_attributes(attrs)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let e = RetryingExporter {
            inner: (),
            stats: Arc::default(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            endpoint: String::new(),
            state: Mutex::default(),
        };
        let skips: Vec<u64> = (1..=8).map(|n| e.skip_after(n)).collect();
        assert_eq!(skips, vec![0, 1, 3, 7, 15, 29, 29, 29]);
        let slow = RetryingExporter {
            interval: Duration::from_secs(60),
            ..e
        };
        assert_eq!(slow.skip_after(5), 0);
    }
}
