//! TLS plumbing shared by the HTTPS server (`--web.config.file`) and the OTLP client:
//! PEM loading and rustls configurations, always with the ring provider.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme, SupportedProtocolVersion};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM certificate in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no PEM certificate found", path.display());
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("cannot read a PEM private key from {}", path.display()))
}

pub fn load_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .with_context(|| format!("{}: unusable CA certificate", path.display()))?;
    }
    Ok(roots)
}

/// `TLS12` / `TLS13` (Prometheus web-config spelling) to a rustls version.
pub fn parse_version(v: &str) -> anyhow::Result<&'static SupportedProtocolVersion> {
    match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => bail!("{v} is not supported (TLS 1.2 and 1.3 only)"),
        other => bail!("unknown TLS version {other:?} (TLS12 or TLS13)"),
    }
}

/// Versions between `min` and `max` (inclusive), defaults TLS12..TLS13.
pub fn versions(min: Option<&str>, max: Option<&str>) -> anyhow::Result<Vec<&'static SupportedProtocolVersion>> {
    let rank = |v: &SupportedProtocolVersion| {
        if v.version == rustls::ProtocolVersion::TLSv1_3 {
            1
        } else {
            0
        }
    };
    let lo = min.map(parse_version).transpose()?.map(rank).unwrap_or(0);
    let hi = max.map(parse_version).transpose()?.map(rank).unwrap_or(1);
    let out: Vec<_> = [&rustls::version::TLS12, &rustls::version::TLS13]
        .into_iter()
        .filter(|v| (lo..=hi).contains(&rank(v)))
        .collect();
    if out.is_empty() {
        bail!("min_version is above max_version");
    }
    Ok(out)
}

/// How the server treats client certificates (Go's `tls.ClientAuthType` names, as in
/// Prometheus' web-config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl std::str::FromStr for ClientAuth {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // RequireClientCert: exporter-toolkit's older spelling.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => bail!(
                "invalid client_auth_type {other:?} (NoClientCert, RequestClientCert, RequireAnyClientCert, \
                 VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ),
        })
    }
}

pub struct ServerTls<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<&'a Path>,
    pub min_version: Option<&'a str>,
    pub max_version: Option<&'a str>,
}

pub fn server_config(s: &ServerTls<'_>) -> anyhow::Result<rustls::ServerConfig> {
    let provider = provider();
    let versions = versions(s.min_version, s.max_version)?;
    let certs = load_certs(s.cert_file)?;
    let key = load_key(s.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let verifying = matches!(
        s.client_auth,
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
    );
    if verifying && s.client_ca_file.is_none() {
        bail!("client_auth_type {:?} needs client_ca_file", s.client_auth);
    }
    if s.client_ca_file.is_some() && s.client_auth == ClientAuth::NoClientCert {
        bail!("client_ca_file is set but client_auth_type is NoClientCert (Prometheus rejects this too)");
    }
    if !verifying && s.client_ca_file.is_some() {
        tracing::warn!("client_ca_file is ignored: client_auth_type does not verify client certificates");
    }
    let builder = match s.client_auth {
        ClientAuth::NoClientCert => builder.with_no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert {
                mandatory: s.client_auth == ClientAuth::RequireAnyClientCert,
                provider: provider.clone(),
            }))
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let roots = Arc::new(load_roots(s.client_ca_file.unwrap_or(Path::new("")))?);
            let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            if s.client_auth == ClientAuth::VerifyClientCertIfGiven {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .context("certificate and key do not form a usable pair")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Client TLS settings of an outgoing connection, as configured (`otlp.tls`,
/// `notify.*.tls`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// CA bundle that signed the endpoint's certificate (default: the system store).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub insecure_skip_verify: bool,
}

impl ClientTlsConfig {
    pub fn rustls(&self) -> anyhow::Result<rustls::ClientConfig> {
        client_config(&ClientTls {
            ca_file: self.ca_file.as_deref(),
            cert_file: self.cert_file.as_deref(),
            key_file: self.key_file.as_deref(),
            insecure_skip_verify: self.insecure_skip_verify,
        })
    }
}

/// Client TLS for outgoing connections (OTLP). Without `ca_file` the system trust store
/// is used.
pub struct ClientTls<'a> {
    pub ca_file: Option<&'a Path>,
    pub cert_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    pub insecure_skip_verify: bool,
}

pub fn client_config(c: &ClientTls<'_>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = if c.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification { provider }))
    } else {
        let roots = match c.ca_file {
            Some(p) => load_roots(p)?,
            None => {
                let mut roots = RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    bail!("no system CA certificates found; set tls.ca_file");
                }
                roots
            }
        };
        builder.with_root_certificates(roots)
    };
    match (c.cert_file, c.key_file) {
        (Some(cert), Some(key)) => Ok(builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .context("client certificate and key do not form a usable pair")?),
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => bail!("tls.cert_file and tls.key_file go together"),
    }
}

/// `RequestClientCert` / `RequireAnyClientCert`: asks for a certificate and checks the
/// handshake signature, but not who issued it (Go's semantics).
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `insecure_skip_verify`: any server certificate is accepted (signatures still checked).
#[derive(Debug)]
struct NoServerVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges() {
        assert_eq!(versions(None, None).unwrap().len(), 2);
        assert_eq!(versions(Some("TLS13"), None).unwrap().len(), 1);
        assert_eq!(versions(None, Some("TLS12")).unwrap().len(), 1);
        assert!(versions(Some("TLS13"), Some("TLS12")).is_err());
        assert!(versions(Some("TLS10"), None).is_err());
        assert!(versions(Some("tls12"), None).is_err());
    }

    #[test]
    fn client_auth_names() {
        assert_eq!(
            "RequireAndVerifyClientCert".parse::<ClientAuth>().unwrap(),
            ClientAuth::RequireAndVerifyClientCert
        );
        assert_eq!("".parse::<ClientAuth>().unwrap(), ClientAuth::NoClientCert);
        assert!("Require".parse::<ClientAuth>().is_err());
    }
}
