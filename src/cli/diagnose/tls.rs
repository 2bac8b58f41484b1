//! TLS handshake check (rustls, ring provider): protocol version, cipher suite,
//! the server certificate's subject, issuer and validity, and whether it verifies
//! against the system trust store (plus `--ca`). The handshake completes even when
//! verification fails so the certificate can still be described; the failure is
//! then the verdict.

use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};
use serde_json::json;

use super::{Layer, Status};

/// A certificate expiring within this many days degrades the verdict.
pub const EXPIRY_WARN_DAYS: f64 = 14.0;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system trust store (Mozilla's roots when it is empty) plus `ca`'s certificates.
pub fn roots(ca: Option<&Path>) -> anyhow::Result<(RootCertStore, String)> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = store.add_parsable_certificates(native.certs);
    let mut source = format!("system store ({added} roots)");
    if added == 0 {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        source = format!("built-in Mozilla roots ({})", store.len());
    }
    if let Some(p) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
            .with_context(|| format!("cannot read CA file {}", p.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad PEM in {}", p.display()))?;
        let (ok, bad) = store.add_parsable_certificates(certs);
        if ok == 0 {
            anyhow::bail!("no usable CA certificate in {} ({bad} rejected)", p.display());
        }
        source.push_str(&format!(" + {} from {}", ok, p.display()));
    }
    Ok((store, source))
}

/// Verifies like the standard verifier but records the outcome and lets the
/// handshake continue.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    outcome: Mutex<Option<Result<(), rustls::Error>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        if let Ok(mut g) = self.outcome.lock() {
            *g = Some(r);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).with_context(|| format!("{host:?} is not a valid TLS server name"))
}

/// A normally verified client connection (for `detect` against https URLs).
pub fn connect_verified(
    host: &str,
    mut sock: TcpStream,
    ca: Option<&Path>,
) -> anyhow::Result<StreamOwned<ClientConnection, TcpStream>> {
    let (store, _) = roots(ca)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    let mut conn = ClientConnection::new(Arc::new(config), server_name(host)?)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .with_context(|| format!("TLS handshake with {host}"))?;
    }
    Ok(StreamOwned::new(conn, sock))
}

fn describe(e: &rustls::Error, cert: Option<&CertInfo>, ca_given: bool) -> (String, String) {
    use CertificateError as C;
    let self_signed = cert.is_some_and(|c| c.self_signed);
    let ca_as_leaf = format!("{e:?}").contains("CaUsedAsEndEntity");
    if ca_as_leaf && ca_given {
        return (
            "the server certificate is a CA certificate (basicConstraints CA:TRUE) used as a server certificate, which verifiers refuse even when it is trusted".into(),
            "issue a server certificate with CA:FALSE signed by a CA, and pass that CA with --ca".into(),
        );
    }
    if self_signed && (ca_as_leaf || matches!(e, rustls::Error::InvalidCertificate(C::UnknownIssuer))) {
        return (
            "certificate not trusted: self-signed certificate (unknown issuer)".into(),
            "replace it with a certificate from a trusted CA, or trust a private CA that signs it (system store or --ca FILE)".into(),
        );
    }
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => (
                "certificate not trusted: unknown issuer (self-signed or signed by a private CA)".into(),
                "install the issuing CA in the system trust store (or pass --ca FILE), or have the server send its full chain".into(),
            ),
            C::Expired | C::ExpiredContext { .. } => (
                "certificate has expired".into(),
                "renew the server certificate (and automate renewal)".into(),
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => (
                "certificate is not valid yet".into(),
                "check the clocks of this host and of the CA that issued the certificate".into(),
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => (
                "certificate does not cover this host name".into(),
                "connect with a name listed in the certificate's subjectAltName, or reissue it with this name".into(),
            ),
            C::Revoked => ("certificate has been revoked".into(), "replace the server certificate".into()),
            other => (
                format!("certificate rejected: {other}"),
                "inspect the chain with `openssl s_client -showcerts`".into(),
            ),
        },
        other => (format!("certificate rejected: {other}"), "inspect the chain with `openssl s_client -showcerts`".into()),
    }
}

/// Handshakes over `sock`; returns the layer and, when it completed, the stream.
pub fn check(
    host: &str,
    mut sock: TcpStream,
    ca: Option<&Path>,
) -> (Layer, Option<StreamOwned<ClientConnection, TcpStream>>) {
    let started = Instant::now();
    let fail = |msg: String, sugg: &str| {
        (
            Layer::new("tls", Status::Fail, Some(started.elapsed()), msg).suggest(sugg),
            None,
        )
    };
    let (store, source) = match roots(ca) {
        Ok(r) => r,
        Err(e) => return fail(format!("{e:#}"), "pass a readable PEM file to --ca"),
    };
    let inner = match WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider()).build() {
        Ok(v) => v,
        Err(e) => {
            return fail(
                format!("no usable trust anchors: {e}"),
                "install ca-certificates or pass --ca FILE",
            )
        }
    };
    let verifier = Arc::new(Recording {
        inner,
        outcome: Mutex::new(None),
    });
    let config = match ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions() {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
        Err(e) => return fail(format!("TLS configuration: {e}"), "report this as a netsight bug"),
    };
    let name = match server_name(host) {
        Ok(n) => n,
        Err(e) => return fail(format!("{e:#}"), "use a valid DNS name or an IP address"),
    };
    let mut conn = match ClientConnection::new(Arc::new(config), name) {
        Ok(c) => c,
        Err(e) => return fail(format!("TLS setup: {e}"), "report this as a netsight bug"),
    };
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            let timed_out = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
            let msg = if timed_out {
                "handshake timed out: the server does not answer the ClientHello".to_string()
            } else {
                format!("handshake failed: {e}")
            };
            return fail(
                msg,
                "check that the port speaks TLS (not plain HTTP) and that the server supports TLS 1.2 or 1.3",
            );
        }
    }
    let took = started.elapsed();
    let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    let version = version.replace("TLSv1_", "TLS 1.");
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| parse_cert(c.as_ref()));
    let outcome = verifier.outcome.lock().ok().and_then(|g| g.clone());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut details = json!({
        "version": version,
        "cipher_suite": suite,
        "trust_store": source,
        "verified": matches!(outcome, Some(Ok(()))),
        "verification_error": outcome.as_ref().and_then(|o| o.as_ref().err()).map(|e| e.to_string()),
    });
    let mut days_left = None;
    let mut cert_text = String::new();
    if let Some(c) = &cert {
        let left = (c.not_after - now) / 86400.0;
        days_left = Some(left);
        details["certificate"] = json!({
            "subject": c.subject,
            "issuer": c.issuer,
            "self_signed": c.self_signed,
            "not_before": rfc3339(c.not_before),
            "not_after": rfc3339(c.not_after),
            "days_left": (left * 10.0).round() / 10.0,
            "dns_names": c.dns_names,
            "ip_addresses": c.ips,
        });
        cert_text = format!(
            "cert CN={} issuer {}{}, expires {} ({:.0} days)",
            c.subject,
            c.issuer,
            if c.self_signed { " (self-signed)" } else { "" },
            rfc3339(c.not_after),
            left
        );
    }
    let layer = match &outcome {
        Some(Err(e)) => {
            let (what, sugg) = describe(e, cert.as_ref(), ca.is_some());
            Layer::new(
                "tls",
                Status::Fail,
                Some(took),
                format!("{version}: {what}; {cert_text}"),
            )
            .suggest(sugg)
        }
        None => Layer::new(
            "tls",
            Status::Fail,
            Some(took),
            "the server sent no certificate".to_string(),
        )
        .suggest("configure a certificate on the server"),
        Some(Ok(())) => match days_left {
            Some(d) if d < EXPIRY_WARN_DAYS => Layer::new(
                "tls",
                Status::Warn,
                Some(took),
                format!("{version} {suite}, certificate valid but expires in {d:.1} days; {cert_text}"),
            )
            .suggest("renew the server certificate before it expires"),
            _ => Layer::new(
                "tls",
                Status::Ok,
                Some(took),
                format!("{version} {suite}, certificate valid; {cert_text}"),
            ),
        },
    };
    let _ = sock.set_read_timeout(sock.read_timeout().ok().flatten().or(Some(Duration::from_secs(5))));
    (layer.details(details), Some(StreamOwned::new(conn, sock)))
}

fn rfc3339(unix: f64) -> String {
    if unix < 0.0 {
        return format!("{unix:.0} (before 1970)");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(unix)).to_string()
}

/// What the report says about a certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub self_signed: bool,
    /// Unix seconds.
    pub not_before: f64,
    pub not_after: f64,
    pub dns_names: Vec<String>,
    pub ips: Vec<String>,
}

/// One DER element: (tag, content, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let l0 = *b.get(1)? as usize;
    let (len, hdr) = if l0 < 0x80 {
        (l0, 2)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let content = b.get(hdr..hdr + len)?;
    Some((tag, content, &b[hdr + len..]))
}

fn name_attr(name: &[u8], oid: &[u8]) -> Option<String> {
    let mut sets = name;
    while let Some((_, set, rest)) = tlv(sets) {
        sets = rest;
        let (_, atv, _) = tlv(set)?;
        let (_, o, after) = tlv(atv)?;
        if o == oid {
            let (_, v, _) = tlv(after)?;
            return Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    None
}

fn describe_name(name: &[u8]) -> String {
    name_attr(name, &[0x55, 0x04, 0x03])
        .or_else(|| name_attr(name, &[0x55, 0x04, 0x0a]))
        .unwrap_or_else(|| "?".into())
}

fn parse_time(tag: u8, v: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(v).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let y: i64 = s.get(0..2)?.parse().ok()?;
            (if y >= 50 { 1900 + y } else { 2000 + y }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8).unwrap_or(0));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + mi * 60 + se) as f64)
}

/// Subject, issuer, validity and subjectAltNames of a DER certificate.
pub fn parse_cert(der: &[u8]) -> Option<CertInfo> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // version
    }
    let (_, _, r) = tlv(rest)?; // serial
    let (_, _, r) = tlv(r)?; // signature algorithm
    let (_, issuer, r) = tlv(r)?;
    let (_, validity, r) = tlv(r)?;
    let (_, subject, r) = tlv(r)?;
    let (_, _, mut r) = tlv(r)?; // public key
    let (t1, v1, after) = tlv(validity)?;
    let (t2, v2, _) = tlv(after)?;
    let mut info = CertInfo {
        subject: describe_name(subject),
        issuer: describe_name(issuer),
        self_signed: subject == issuer,
        not_before: parse_time(t1, v1)?,
        not_after: parse_time(t2, v2)?,
        dns_names: Vec::new(),
        ips: Vec::new(),
    };
    while let Some((tag, content, next)) = tlv(r) {
        r = next;
        if tag != 0xa3 {
            continue;
        }
        let (_, exts, _) = tlv(content)?;
        let mut e = exts;
        while let Some((_, ext, next)) = tlv(e) {
            e = next;
            let (_, oid, mut body) = tlv(ext)?;
            if oid != [0x55, 0x1d, 0x11] {
                continue;
            }
            if let Some((0x01, _, b)) = tlv(body) {
                body = b; // critical flag
            }
            let (_, octets, _) = tlv(body)?;
            let (_, names, _) = tlv(octets)?;
            let mut n = names;
            while let Some((t, v, next)) = tlv(n) {
                n = next;
                match (t, v.len()) {
                    (0x82, _) => info.dns_names.push(String::from_utf8_lossy(v).into_owned()),
                    (0x87, 4) => info.ips.push(IpAddr::from(<[u8; 4]>::try_from(v).ok()?).to_string()),
                    (0x87, 16) => info.ips.push(IpAddr::from(<[u8; 16]>::try_from(v).ok()?).to_string()),
                    _ => {}
                }
            }
        }
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_times_convert() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0.0));
        assert_eq!(parse_time(0x17, b"231114221320Z"), Some(1_700_000_000.0));
        assert_eq!(parse_time(0x18, b"20231114221320Z"), Some(1_700_000_000.0));
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2_524_607_999.0));
    }
}
