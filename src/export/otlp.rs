//! OTLP push: the latest published snapshot, sent to an OpenTelemetry collector over
//! gRPC or HTTP/protobuf with the `opentelemetry` SDK.
//!
//! Kernel counters are cumulative values netsight reads, not increments, so every
//! metric is an *observable* instrument whose callback reads [`Shared::latest`]: the
//! exporter never touches the kernel and never waits for a collection. Instruments are
//! registered as families appear (netstat fields and rule outputs are only known at
//! run time).
//!
//! Names follow the OpenTelemetry semantic conventions where they exist
//! (`system.network.io`, `system.network.packet.count`, `system.network.packet.dropped`,
//! `system.network.errors`, `system.network.connection.count`); everything else uses the
//! catalog's `otel_name` (`netsight.*`) with the Prometheus labels as attributes.
//! Counters are cumulative monotonic sums, gauges are gauges. Histograms
//! (`netsight_tcp_rtt_seconds`) are not exported: the SDK has no observable histogram.
//!
//! An unreachable collector costs bounded retries with exponential backoff between
//! export cycles; nothing is queued (each cycle sends the current cumulative values),
//! failures are counted in `netsight_otlp_export_failures_total`, and collection and
//! scrapes are unaffected.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use opentelemetry::metrics::{AsyncInstrument, Meter, MeterProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::Resource;
use serde::Deserialize;

use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::collect::{CollectContext, CollectError, Collector};
use crate::config::Config;
use crate::daemon::{Published, Shared};
use crate::export::tls::ClientTlsConfig;
use crate::snapshot::{Emitter, Family, Sample, Value};

// ---------------------------------------------------------------------------------
// Configuration

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

/// The `otlp:` section of the daemon configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    pub enabled: bool,
    /// `http(s)://host:port`; `null`: `http://localhost:4317` (grpc) or
    /// `http://localhost:4318` (http). For http, `/v1/metrics` is appended when the
    /// URL has no path.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    /// Sent with every export (gRPC metadata or HTTP headers), e.g. an API key.
    pub headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "crate::config::duration")]
    pub interval: Duration,
    /// Per export attempt.
    #[serde(deserialize_with = "crate::config::duration")]
    pub timeout: Duration,
    pub gzip: bool,
    pub tls: ClientTlsConfig,
    /// Extra resource attributes (override the detected ones).
    pub resource: BTreeMap<String, String>,
}

impl OtlpConfig {
    pub fn endpoint(&self) -> String {
        let default = match self.protocol {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::Http => "http://localhost:4318",
        };
        let base = self.endpoint.as_deref().filter(|e| !e.is_empty()).unwrap_or(default);
        if self.protocol == Protocol::Http {
            if let Ok(uri) = base.parse::<hyper::Uri>() {
                if matches!(uri.path(), "" | "/") {
                    return format!("{}/v1/metrics", base.trim_end_matches('/'));
                }
            }
        }
        base.to_string()
    }

    fn is_https(&self) -> bool {
        self.endpoint().starts_with("https://")
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let ep = self.endpoint();
        let uri: hyper::Uri = ep.parse().map_err(|e| format!("otlp.endpoint {ep:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "otlp.endpoint {ep:?}: expected http://host:port or https://host:port"
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err(format!("otlp.interval {:?} is below the 1s minimum", self.interval));
        }
        if self.timeout.is_zero() {
            return Err("otlp.timeout must be > 0".into());
        }
        let t = &self.tls;
        let tls_set = t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some() || t.insecure_skip_verify;
        if tls_set && !self.is_https() {
            return Err("otlp.tls is set but otlp.endpoint is not https://".into());
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err("otlp.tls.cert_file and otlp.tls.key_file go together".into());
        }
        for (k, v) in &self.headers {
            hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("otlp.headers: {k:?}: {e}"))?;
            hyper::header::HeaderValue::from_str(v).map_err(|e| format!("otlp.headers.{k}: {e}"))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Self-metrics

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;

pub static EXPORT_FAILURES: MetricDesc = MetricDesc::new(
    "netsight_otlp_export_failures_total",
    C,
    "",
    "OTLP export attempts that failed (collector unreachable, timeout, gRPC error or non-2xx HTTP status), \
     retries included. Cycles skipped while backing off are not attempts.",
    &[],
    "netsight.otlp.export.failures",
);
pub static EXPORTS: MetricDesc = MetricDesc::new(
    "netsight_otlp_exports_total",
    C,
    "",
    "OTLP exports the collector accepted.",
    &[],
    "netsight.otlp.exports",
);
pub static LAST_SUCCESS: MetricDesc = MetricDesc::new(
    "netsight_otlp_last_success_timestamp_seconds",
    G,
    "seconds",
    "Unix time of the last OTLP export the collector accepted (0: none yet).",
    &[],
    "netsight.otlp.last_success.timestamp",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "otlp",
    source: "the OTLP exporter itself (present only with otlp.enabled)",
    capabilities: "none",
    metrics: &[&EXPORT_FAILURES, &EXPORTS, &LAST_SUCCESS],
    dynamic: &[],
};

#[derive(Debug, Default)]
pub struct Stats {
    pub failures: AtomicU64,
    pub exports: AtomicU64,
    /// Unix milliseconds.
    pub last_success_ms: AtomicU64,
}

/// Puts [`Stats`] into every snapshot (so they reach `/metrics` and OTLP alike).
struct StatsCollector(Arc<Stats>);

impl Collector for StatsCollector {
    fn name(&self) -> &'static str {
        "otlp"
    }
    fn collect(&mut self, _ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        out.push0(&EXPORT_FAILURES, self.0.failures.load(Ordering::Relaxed) as f64);
        out.push0(&EXPORTS, self.0.exports.load(Ordering::Relaxed) as f64);
        out.push0(
            &LAST_SUCCESS,
            self.0.last_success_ms.load(Ordering::Relaxed) as f64 / 1e3,
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Snapshot families → OpenTelemetry instruments

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Inst {
    CounterU64,
    CounterF64,
    Gauge,
    UpDown,
}

#[derive(Clone, Debug, PartialEq)]
enum Attrs {
    /// Prometheus labels as attributes (empty values dropped, as Prometheus does).
    Labels,
    /// netdev counters: `device` → `network.interface.name`, plus the direction.
    NetIo { direction: &'static str },
    /// Socket counts by state: `system.network.connection.count`.
    Connection { transport: &'static str },
}

#[derive(Clone, Debug)]
struct Route {
    name: Cow<'static, str>,
    inst: Inst,
    unit: Cow<'static, str>,
    description: Cow<'static, str>,
    attrs: Attrs,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    n.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
}

fn unit_of(prom_name: &str, unit: &str) -> Cow<'static, str> {
    Cow::Borrowed(match unit {
        "" => "",
        "bytes" => "By",
        "seconds" => "s",
        "packets" => "{packet}",
        "bits" if prom_name.ends_with("_per_second") => "bit/s",
        "bits" => "bit",
        other => return Cow::Owned(other.to_string()),
    })
}

/// How a family is exported; `None` for families OTLP cannot carry (histograms).
fn route(fam: &Family) -> Option<Route> {
    let d = &fam.desc;
    let name: &str = &d.name;
    if d.kind == MetricKind::Histogram {
        return None;
    }
    if let Some(rest) = name
        .strip_prefix("netsight_network_")
        .and_then(|r| r.strip_suffix("_total"))
    {
        if let Some((dir, what)) = rest.split_once('_') {
            let direction = match dir {
                "receive" => Some("receive"),
                "transmit" => Some("transmit"),
                _ => None,
            };
            let semconv = match what {
                "bytes" => Some(("system.network.io", "By", "Bytes received and transmitted.")),
                "packets" => Some((
                    "system.network.packet.count",
                    "{packet}",
                    "Packets received and transmitted.",
                )),
                "errors" => Some(("system.network.errors", "{error}", "Receive and transmit errors.")),
                "drop" => Some((
                    "system.network.packet.dropped",
                    "{packet}",
                    "Packets dropped on receive (rx_dropped plus rx_missed_errors) and transmit.",
                )),
                _ => None,
            };
            if let (Some(direction), Some((otel, unit, help))) = (direction, semconv) {
                return Some(Route {
                    name: Cow::Borrowed(otel),
                    inst: Inst::CounterU64,
                    unit: Cow::Borrowed(unit),
                    description: Cow::Borrowed(help),
                    attrs: Attrs::NetIo { direction },
                });
            }
        }
    }
    let transport = match name {
        "netsight_tcp_connections" => Some("tcp"),
        "netsight_udp_sockets" => Some("udp"),
        _ => None,
    };
    if let Some(transport) = transport {
        return Some(Route {
            name: Cow::Borrowed("system.network.connection.count"),
            inst: Inst::UpDown,
            unit: Cow::Borrowed("{connection}"),
            description: Cow::Borrowed("TCP and UDP sockets by state (what ss lists)."),
            attrs: Attrs::Connection { transport },
        });
    }
    let otel = if valid_name(&d.otel_name) {
        d.otel_name.clone()
    } else {
        let base = name.strip_prefix("netsight_").unwrap_or(name);
        let base = base.strip_suffix("_total").unwrap_or(base);
        Cow::Owned(format!("netsight.{}", base.replace('_', ".")))
    };
    let inst = match d.kind {
        MetricKind::Counter if d.unit == "seconds" => Inst::CounterF64,
        MetricKind::Counter => Inst::CounterU64,
        _ => Inst::Gauge,
    };
    Some(Route {
        name: otel,
        inst,
        unit: unit_of(name, d.unit),
        description: d.help.clone(),
        attrs: Attrs::Labels,
    })
}

/// Semantic-convention spelling of netsight's TCP/UDP state labels.
fn connection_state(s: &str) -> &str {
    match s {
        "fin_wait1" => "fin_wait_1",
        "fin_wait2" => "fin_wait_2",
        // UDP sockets without a peer: the kernel's TCP_CLOSE (ss UNCONN).
        "unconnected" => "close",
        other => other,
    }
}

fn attributes(fam: &Family, sample: &Sample, attrs: &Attrs) -> Vec<KeyValue> {
    let names = fam.label_names();
    let mut out = Vec::with_capacity(names.len() + 1);
    for (k, v) in names.into_iter().zip(sample.labels.iter()) {
        if v.is_empty() {
            continue;
        }
        let key = match (attrs, k) {
            (Attrs::NetIo { .. }, "device") => "network.interface.name",
            (Attrs::Connection { .. }, "family") => "network.type",
            (Attrs::Connection { .. }, "state") => {
                out.push(KeyValue::new(
                    "network.connection.state",
                    connection_state(v).to_string(),
                ));
                continue;
            }
            (_, k) => k,
        };
        out.push(KeyValue::new(key.to_string(), v.clone()));
    }
    match attrs {
        Attrs::NetIo { direction } => out.push(KeyValue::new("network.io.direction", *direction)),
        Attrs::Connection { transport } => out.push(KeyValue::new("network.transport", *transport)),
        Attrs::Labels => {}
    }
    out
}

/// The latest snapshot, indexed by exported name (built once per published snapshot).
struct View {
    published: Arc<Published>,
    by_name: HashMap<Cow<'static, str>, Vec<(usize, Route)>>,
}

impl View {
    fn build(published: Arc<Published>) -> View {
        let mut by_name: HashMap<Cow<'static, str>, Vec<(usize, Route)>> = HashMap::new();
        for (i, fam) in published.snapshot.families.iter().enumerate() {
            if let Some(r) = route(fam) {
                by_name.entry(r.name.clone()).or_default().push((i, r));
            }
        }
        View { published, by_name }
    }

    /// Calls `f(value, attributes)` for every sample exported under `name` as `inst`.
    fn each(&self, name: &str, inst: Inst, mut f: impl FnMut(f64, &[KeyValue])) {
        let Some(list) = self.by_name.get(name) else { return };
        for (i, r) in list {
            if r.inst != inst {
                continue;
            }
            let fam = &self.published.snapshot.families[*i];
            for s in &fam.samples {
                if let Value::Scalar(v) = s.value {
                    if v.is_finite() {
                        f(v, &attributes(fam, s, &r.attrs));
                    }
                }
            }
        }
    }
}

struct ViewCache {
    shared: Arc<Shared>,
    current: Mutex<Option<Arc<View>>>,
}

impl ViewCache {
    fn get(&self) -> Arc<View> {
        let latest = self.shared.latest();
        let mut cur = match self.current.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(v) = cur.as_ref() {
            if Arc::ptr_eq(&v.published, &latest) {
                return v.clone();
            }
        }
        let v = Arc::new(View::build(latest));
        *cur = Some(v.clone());
        v
    }
}

/// Registers one observable instrument per exported name as names appear.
struct Registry {
    meter: Meter,
    views: Arc<ViewCache>,
    known: HashMap<String, Inst>,
    conflicts: HashSet<String>,
    /// Handles are kept so that the instruments live as long as the provider.
    handles: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Registry {
    /// Registers the names of the latest snapshot not seen before; returns how many.
    fn sync(&mut self) -> usize {
        let view = self.views.get();
        let mut added = 0;
        for (name, list) in &view.by_name {
            let Some((_, first)) = list.first() else { continue };
            match self.known.get(name.as_ref()) {
                Some(inst) => {
                    if list.iter().any(|(_, r)| r.inst != *inst) && self.conflicts.insert(name.to_string()) {
                        tracing::warn!(metric = %name, "families of different types share this OTLP name; exporting only the first type");
                    }
                    continue;
                }
                None => {
                    self.register(first);
                    self.known.insert(name.to_string(), first.inst);
                    added += 1;
                }
            }
        }
        added
    }

    fn register(&mut self, r: &Route) {
        let name: Cow<'static, str> = Cow::Owned(r.name.to_string());
        let key = r.name.to_string();
        let views = self.views.clone();
        let inst = r.inst;
        let m = &self.meter;
        let (desc, unit) = (r.description.clone(), r.unit.clone());
        let h: Box<dyn std::any::Any + Send + Sync> = match inst {
            Inst::CounterU64 => Box::new(
                m.u64_observable_counter(name)
                    .with_description(desc)
                    .with_unit(unit)
                    .with_callback(move |o: &dyn AsyncInstrument<u64>| {
                        views.get().each(&key, inst, |v, a| o.observe(v.max(0.0) as u64, a))
                    })
                    .build(),
            ),
            Inst::CounterF64 => Box::new(
                m.f64_observable_counter(name)
                    .with_description(desc)
                    .with_unit(unit)
                    .with_callback(move |o: &dyn AsyncInstrument<f64>| {
                        views.get().each(&key, inst, |v, a| o.observe(v.max(0.0), a))
                    })
                    .build(),
            ),
            Inst::Gauge => Box::new(
                m.f64_observable_gauge(name)
                    .with_description(desc)
                    .with_unit(unit)
                    .with_callback(move |o: &dyn AsyncInstrument<f64>| {
                        views.get().each(&key, inst, |v, a| o.observe(v, a))
                    })
                    .build(),
            ),
            Inst::UpDown => Box::new(
                m.i64_observable_up_down_counter(name)
                    .with_description(desc)
                    .with_unit(unit)
                    .with_callback(move |o: &dyn AsyncInstrument<i64>| {
                        views.get().each(&key, inst, |v, a| o.observe(v as i64, a))
                    })
                    .build(),
            ),
        };
        self.handles.push(h);
    }

    /// Identities of the cumulative (counter and up-down) series in the latest snapshot.
    fn cumulative_series(&self) -> HashSet<u64> {
        let view = self.views.get();
        let mut out = HashSet::new();
        for (name, list) in &view.by_name {
            for (i, r) in list {
                if r.inst == Inst::Gauge || self.known.get(name.as_ref()) != Some(&r.inst) {
                    continue;
                }
                let fam = &view.published.snapshot.families[*i];
                for s in &fam.samples {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    name.hash(&mut h);
                    for kv in attributes(fam, s, &r.attrs) {
                        kv.key.as_str().hash(&mut h);
                        kv.value.as_str().hash(&mut h);
                    }
                    out.insert(h.finish());
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// Export with bounded retries and backoff

/// Attempts per export cycle (the first plus retries), while they fit in half an interval.
const MAX_ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest pause between export cycles while the collector keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct RetryState {
    /// Consecutive export cycles that failed.
    failed_cycles: u32,
    /// Cycles to skip before the next attempt.
    skip: u64,
    last_error: String,
}

struct RetryingExporter<E> {
    inner: E,
    stats: Arc<Stats>,
    interval: Duration,
    timeout: Duration,
    endpoint: String,
    state: Mutex<RetryState>,
}

impl<E> RetryingExporter<E> {
    fn state(&self) -> std::sync::MutexGuard<'_, RetryState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Cycles to skip after `failed` consecutive failed cycles: 0, 1, 3, 7… up to
    /// `MAX_BACKOFF`.
    fn skip_after(&self, failed: u32) -> u64 {
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
struct HyperClient<Conn> {
    client: hyper_util::client::legacy::Client<Conn, Full<Bytes>>,
    timeout: Duration,
}

impl<Conn> std::fmt::Debug for HyperClient<Conn> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HyperClient")
    }
}

type HttpResult = Result<hyper::Response<Bytes>, opentelemetry_http::HttpError>;

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

fn http_connector(timeout: Duration) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.enforce_http(false);
    c.set_nodelay(true);
    c.set_connect_timeout(Some(timeout));
    c
}

fn client_tls(cfg: &OtlpConfig) -> anyhow::Result<Option<rustls::ClientConfig>> {
    if !cfg.is_https() {
        return Ok(None);
    }
    cfg.tls.rustls().map(Some).context("otlp.tls")
}

fn build_exporter(cfg: &OtlpConfig) -> anyhow::Result<opentelemetry_otlp::MetricExporter> {
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

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn resource(cfg: &OtlpConfig) -> Resource {
    let mut attrs = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Some(h) = super::host_name() {
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

// ---------------------------------------------------------------------------------
// Lifecycle

/// A configured (not yet running) OTLP exporter.
pub struct Otlp {
    cfg: OtlpConfig,
    stats: Arc<Stats>,
}

/// Rebuilds the pipeline (new start time) once cumulative series that vanished
/// (deleted interfaces, replaced rules…) exceed this many: the SDK keeps exporting an
/// observable counter's series with its last value after it stops being observed.
const STALE_SERIES_MAX: usize = 256;
/// …or when any did and the pipeline is at least this old.
const STALE_REBUILD_AGE: Duration = Duration::from_secs(600);

struct Pipeline {
    provider: SdkMeterProvider,
    registry: Registry,
    ever: HashSet<u64>,
    built: Instant,
}

impl Otlp {
    /// `None` when `otlp.enabled` is false.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Otlp>> {
        let o = &cfg.otlp;
        if !o.enabled {
            return Ok(None);
        }
        if let Err(e) = o.validate() {
            bail!(e);
        }
        // Fail at startup on unreadable certificates rather than on every export.
        client_tls(o)?;
        Ok(Some(Otlp {
            cfg: o.clone(),
            stats: Arc::new(Stats::default()),
        }))
    }

    /// The exporter's own metrics, as a collector for the daemon's scheduler.
    pub fn stats_collector(&self) -> Box<dyn Collector> {
        Box::new(StatsCollector(self.stats.clone()))
    }

    fn pipeline(&self, shared: &Arc<Shared>) -> anyhow::Result<Pipeline> {
        let exporter = RetryingExporter {
            inner: build_exporter(&self.cfg)?,
            stats: self.stats.clone(),
            interval: self.cfg.interval,
            timeout: self.cfg.timeout,
            endpoint: self.cfg.endpoint(),
            state: Mutex::new(RetryState::default()),
        };
        let reader = PeriodicReader::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_interval(self.cfg.interval)
            // Retries included; a cycle never holds the reader longer than this.
            .with_timeout(self.cfg.timeout.max(self.cfg.interval) + self.cfg.interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource(&self.cfg))
            .build();
        let scope = InstrumentationScope::builder("netsight")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let meter = provider.meter_with_scope(scope);
        Ok(Pipeline {
            provider,
            registry: Registry {
                meter,
                views: Arc::new(ViewCache {
                    shared: shared.clone(),
                    current: Mutex::new(None),
                }),
                known: HashMap::new(),
                conflicts: HashSet::new(),
                handles: Vec::new(),
            },
            ever: HashSet::new(),
            built: Instant::now(),
        })
    }

    /// Starts exporting; runs until the returned handle is shut down.
    pub fn start(self, shared: Arc<Shared>) -> anyhow::Result<OtlpRunning> {
        let interval = self.cfg.interval;
        let mut sup = Supervisor::new(self, shared)?;
        tracing::info!(
            endpoint = %sup.otlp.cfg.endpoint(),
            protocol = ?sup.otlp.cfg.protocol,
            ?interval,
            "OTLP export enabled"
        );
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            // New families (and vanished counters) are looked for twice per export cycle.
            let mut tick = tokio::time::interval(interval / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                sup.step().await;
            }
            shutdown_provider(sup.pipe.provider).await;
        });
        Ok(OtlpRunning { stop: stop_tx, task })
    }
}

/// Owns the export pipeline: registers instruments as families appear and rebuilds the
/// pipeline when vanished cumulative series pile up.
struct Supervisor {
    otlp: Otlp,
    shared: Arc<Shared>,
    pipe: Pipeline,
    stale_max: usize,
    stale_age: Duration,
}

impl Supervisor {
    fn new(otlp: Otlp, shared: Arc<Shared>) -> anyhow::Result<Supervisor> {
        let pipe = otlp.pipeline(&shared)?;
        Ok(Supervisor {
            otlp,
            shared,
            pipe,
            stale_max: STALE_SERIES_MAX,
            stale_age: STALE_REBUILD_AGE,
        })
    }

    /// One look at the latest snapshot; true when the pipeline was rebuilt.
    async fn step(&mut self) -> bool {
        let added = self.pipe.registry.sync();
        if added > 0 {
            tracing::debug!(
                added,
                total = self.pipe.registry.known.len(),
                "OTLP instruments registered"
            );
        }
        let current = self.pipe.registry.cumulative_series();
        self.pipe.ever.extend(current.iter().copied());
        let stale = self.pipe.ever.len() - current.len();
        if stale == 0 || (stale <= self.stale_max && self.pipe.built.elapsed() < self.stale_age) {
            return false;
        }
        match self.otlp.pipeline(&self.shared) {
            Ok(mut fresh) => {
                tracing::info!(stale, "OTLP: rebuilding the export pipeline to drop vanished series");
                fresh.registry.sync();
                fresh.ever = current;
                let old = std::mem::replace(&mut self.pipe, fresh);
                shutdown_provider(old.provider).await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "OTLP: cannot rebuild the export pipeline");
                false
            }
        }
    }
}

async fn shutdown_provider(p: SdkMeterProvider) {
    // Shutdown exports once more and waits for the reader task: keep it off the async
    // workers and bounded.
    let t = tokio::task::spawn_blocking(move || p.shutdown_with_timeout(Duration::from_secs(5)));
    match tokio::time::timeout(Duration::from_secs(6), t).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::debug!(error = %e, "OTLP provider shutdown"),
        _ => tracing::debug!("OTLP provider shutdown did not finish in time"),
    }
}

pub struct OtlpRunning {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpRunning {
    /// Stops the exporter after a last export attempt (bounded to a few seconds).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(8), self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use crate::snapshot::{IntoLabels, Snapshot};

    fn cfg(yaml: &str) -> OtlpConfig {
        let c = Config::from_yaml_over_defaults("t.yaml", yaml).expect("config");
        c.otlp
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let c = cfg("{}");
        assert!(!c.enabled);
        assert_eq!(c.endpoint(), "http://localhost:4317");
        let h = cfg("otlp: {enabled: true, protocol: http}");
        assert_eq!(h.endpoint(), "http://localhost:4318/v1/metrics");
        let h = cfg("otlp: {enabled: true, protocol: http, endpoint: 'http://c:1/x/v1/metrics'}");
        assert_eq!(h.endpoint(), "http://c:1/x/v1/metrics");
    }

    #[test]
    fn bad_settings_are_rejected() {
        for bad in [
            "otlp: {enabled: true, endpoint: 'ftp://x:1'}",
            "otlp: {enabled: true, interval: 100ms}",
            "otlp: {enabled: true, protocol: carrier-pigeon}",
            "otlp: {enabled: true, tls: {ca_file: /x}}",
            "otlp: {enabled: true, endpoint: 'https://x:1', tls: {cert_file: /x}}",
            "otlp: {enabled: true, headers: {'bad header': x}}",
        ] {
            assert!(Config::from_yaml_over_defaults("t.yaml", bad).is_err(), "{bad}");
        }
    }

    fn family(name: &str) -> Family {
        let desc = catalog::find(name).unwrap_or_else(|| panic!("{name} in catalog"));
        Family {
            desc: desc.into(),
            samples: Vec::new(),
            dynamic_labels: None,
        }
    }

    #[test]
    fn semantic_convention_routes() {
        let r = route(&family("netsight_network_receive_bytes_total")).unwrap();
        assert_eq!(r.name, "system.network.io");
        assert_eq!(r.unit, "By");
        assert_eq!(r.attrs, Attrs::NetIo { direction: "receive" });
        let r = route(&family("netsight_network_transmit_drop_total")).unwrap();
        assert_eq!(r.name, "system.network.packet.dropped");
        assert_eq!(r.attrs, Attrs::NetIo { direction: "transmit" });
        let r = route(&family("netsight_network_receive_errors_total")).unwrap();
        assert_eq!((r.name.as_ref(), r.unit.as_ref()), ("system.network.errors", "{error}"));
        let r = route(&family("netsight_network_receive_fifo_total")).unwrap();
        assert_eq!(r.name, "netsight.network.receive.fifo");
        assert_eq!(r.inst, Inst::CounterU64);
        let r = route(&family("netsight_udp_sockets")).unwrap();
        assert_eq!(r.name, "system.network.connection.count");
        assert_eq!(r.inst, Inst::UpDown);
        let r = route(&family("netsight_collector_cpu_seconds_total")).unwrap();
        assert_eq!((r.inst, r.unit.as_ref()), (Inst::CounterF64, "s"));
        let r = route(&family("netsight_network_speed_bits_per_second")).unwrap();
        assert_eq!((r.inst, r.unit.as_ref()), (Inst::Gauge, "bit/s"));
        assert!(route(&family("netsight_tcp_rtt_seconds")).is_none());
        assert_eq!(route(&family("netsight_anomaly")).unwrap().name, "netsight.anomaly");
        assert_eq!(
            route(&family("netsight_root_cause")).unwrap().name,
            "netsight.root_cause"
        );
    }

    #[test]
    fn every_catalog_name_is_a_valid_instrument_name() {
        for doc in catalog::all_collectors() {
            for m in doc.metrics {
                let f = Family {
                    desc: (*m).into(),
                    samples: Vec::new(),
                    dynamic_labels: None,
                };
                if let Some(r) = route(&f) {
                    assert!(valid_name(&r.name), "{} → {}", m.name, r.name);
                }
            }
        }
    }

    #[test]
    fn connection_attributes() {
        let mut f = family("netsight_tcp_connections");
        f.samples.push(Sample {
            labels: ["ipv6", "fin_wait2"].into_labels(),
            value: Value::Scalar(3.0),
        });
        let r = route(&f).unwrap();
        let a = attributes(&f, &f.samples[0], &r.attrs);
        let kv: Vec<(String, String)> = a.iter().map(|k| (k.key.to_string(), k.value.to_string())).collect();
        assert!(kv.contains(&("network.type".into(), "ipv6".into())), "{kv:?}");
        assert!(kv.contains(&("network.connection.state".into(), "fin_wait_2".into())));
        assert!(kv.contains(&("network.transport".into(), "tcp".into())));
    }

    fn netdev_snapshot(devices: &[&str]) -> Snapshot {
        let rx = catalog::find("netsight_network_receive_bytes_total").expect("catalog");
        let up = catalog::find("netsight_network_up").expect("catalog");
        let mut e = Emitter::new();
        for d in devices {
            e.push(rx, vec![d.to_string()], 100.0);
            e.push(up, vec![d.to_string()], 1.0);
        }
        Snapshot::new(SystemTime::now(), e.into_families())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vanished_counter_series_rebuild_the_pipeline() {
        let mut c = Config::embedded().expect("config");
        c.otlp.enabled = true;
        c.otlp.endpoint = Some("http://127.0.0.1:9".into());
        let otlp = Otlp::from_config(&c).expect("valid").expect("enabled");
        let shared = Arc::new(Shared::new(4, crate::rules::Engine::new(Default::default())));
        shared.publish(netdev_snapshot(&["a", "b"]));
        let mut sup = Supervisor::new(otlp, shared.clone()).expect("pipeline");
        sup.stale_max = 0;
        assert!(!sup.step().await);
        assert_eq!(
            sup.pipe.registry.known.get("system.network.io"),
            Some(&Inst::CounterU64)
        );
        assert_eq!(sup.pipe.registry.known.get("netsight.network.up"), Some(&Inst::Gauge));
        assert_eq!(sup.pipe.ever.len(), 2);
        // Gauges only report what is observed; a vanished counter needs a new pipeline.
        shared.publish(netdev_snapshot(&["a"]));
        assert!(sup.step().await, "b vanished: rebuild");
        assert_eq!(sup.pipe.ever.len(), 1);
        assert!(sup.pipe.registry.known.contains_key("system.network.io"));
        assert!(!sup.step().await);
        shared.publish(netdev_snapshot(&["a", "c"]));
        assert!(!sup.step().await, "new series are not stale");
        shutdown_provider(sup.pipe.provider).await;
    }

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
