//! TLS probes of endpoint members: which certificate an endpoint presents
//! (acknowledgement of a presentation revision), and whether it accepts a
//! certificate as a client (the pre-flight before a presentation revision).
//!
//! A peer is judged by the TLS protocol, not by whether it hangs up: a fatal
//! alert — during a TLS 1.2 handshake, or after a TLS 1.3 one, where the
//! server's verdict on the client certificate arrives after the client has
//! finished — means the certificate is refused. A completed handshake
//! followed by data, by silence for a short grace period (servers keep a
//! connection open waiting for a request), by `close_notify` or by a bare
//! end of stream means it is accepted. Timeouts, refused connections and TLS
//! errors are outcomes, never panics.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::crd::Endpoint;
use crate::outputs::PresentedMaterial;
use crate::thumbprint::Thumbprint;

const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TLS 1.2 peer that said nothing after the handshake is given to
/// hang up on the certificate. In TLS 1.2 the server has judged it before its
/// Finished, so the handshake alone is its answer.
pub const GRACE: Duration = Duration::from_millis(750);
/// How often a quiet TLS 1.3 connection is looked at for a session ticket.
const TICK: Duration = Duration::from_millis(50);

/// What a peer did after a handshake in which it was given a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// It sent application data.
    Data,
    /// It closed the connection with `close_notify`.
    CloseNotify,
    /// It closed the connection without `close_notify`.
    Eof,
    /// It sent a TLS 1.3 session ticket: servers send one only once they
    /// have taken the client's Finished, and with it its certificate.
    Ticket,
    /// It kept the connection open, saying nothing: for [`GRACE`] in TLS 1.2,
    /// for the whole timeout in TLS 1.3 (a server that sends no tickets).
    Idle,
    /// It answered the `httpGet` request with this status.
    Http(u16),
}

/// HTTP statuses with which servers that check client certificates after
/// the handshake refuse one (nginx: 400 "The SSL certificate error", 495,
/// 496; others 403).
pub const HTTP_REFUSALS: [u16; 4] = [400, 403, 495, 496];

/// Reads whatever the server presents, and keeps it: the probe checks
/// identity by thumbprint, not by a trust chain, and a server that ends
/// the handshake with an alert has still shown its certificate.
#[derive(Debug)]
struct AnyServer {
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn config(verifier: Arc<AnyServer>, identity: Option<&PresentedMaterial>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(material) => {
            let chain = CertificateDer::pem_slice_iter(material.tls_crt.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| format!("tls.crt: {err}"))?;
            let key =
                PrivateKeyDer::from_pem_slice(material.tls_key.as_bytes()).map_err(|err| format!("tls.key: {err}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|err| err.to_string())
        }
    }
}

fn server_name(endpoint: &Endpoint) -> Result<ServerName<'static>, String> {
    let name = match &endpoint.server_name {
        Some(name) => name.clone(),
        None => endpoint
            .address
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']).to_owned())
            .ok_or_else(|| format!("{}: address is not host:port", endpoint.address))?,
    };
    ServerName::try_from(name.clone()).map_err(|_| format!("{name:?} is not a server name"))
}

fn thumbprint(leaf: &CertificateDer<'_>) -> Thumbprint {
    Thumbprint::from_digest(&sha1::Sha1::digest(leaf.as_ref()))
}

/// The thumbprint of the certificate `endpoint` presents (shown during the
/// handshake, whatever the server then thinks of a client without one).
pub async fn presented(endpoint: &Endpoint) -> Result<Thumbprint, String> {
    let verifier = Arc::new(AnyServer {
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        seen: Mutex::new(None),
    });
    let address = &endpoint.address;
    let outcome = connect(endpoint, config(verifier.clone(), None)?).await;
    let seen = verifier.seen.lock().unwrap_or_else(PoisonError::into_inner).take();
    match (seen, outcome) {
        (Some(leaf), _) => Ok(thumbprint(&leaf)),
        (None, Err(err)) => Err(err),
        (None, Ok(_)) => Err(format!("{address}: no certificate presented")),
    }
}

/// Whether `endpoint` accepts `material` as a client certificate (mutual
/// TLS), and how it showed it; `Err` says how it refused, or why it could
/// not be asked.
pub async fn accepts(endpoint: &Endpoint, material: &PresentedMaterial) -> Result<Accepted, String> {
    let verifier = Arc::new(AnyServer {
        provider: Arc::new(rustls::crypto::ring::default_provider()),
        seen: Mutex::new(None),
    });
    let address = &endpoint.address;
    let mut tls = connect(endpoint, config(verifier, Some(material))?).await?;
    if let Some(http) = &endpoint.http_get {
        return http_status(&mut tls, endpoint, &http.path).await;
    }
    // TLS 1.3 completes the client's handshake before the server has judged
    // its certificate: the refusal is an alert one round trip later, later
    // still from a loaded server. Only a ticket (or data, or a close) says
    // the server got past the certificate; silence says so only after the
    // whole timeout, never after a fixed grace that a slow server outlasts.
    let tls13 = tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    let (quiet, tick) = if tls13 { (TIMEOUT, TICK) } else { (GRACE, GRACE) };
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 512];
    let answer = loop {
        match tokio::time::timeout(tick, tls.read(&mut buffer)).await {
            Err(_) if tls.get_ref().1.tls13_tickets_received() > 0 => break Ok(Accepted::Ticket),
            Err(_) if started.elapsed() >= quiet => break Ok(Accepted::Idle),
            Err(_) => continue,
            Ok(Ok(0)) => break Ok(Accepted::CloseNotify),
            Ok(Ok(_)) => break Ok(Accepted::Data),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(Accepted::Eof),
            Ok(Err(err)) => break Err(format!("{address}: {err}")),
        }
    };
    // A polite goodbye: the server may log the rest.
    let _ = tokio::time::timeout(Duration::from_millis(100), tls.shutdown()).await;
    answer
}

async fn connect(
    endpoint: &Endpoint,
    config: ClientConfig,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let connector = TlsConnector::from(Arc::new(config));
    let name = server_name(endpoint)?;
    let address = &endpoint.address;
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| format!("{address}: connection timed out"))?
        .map_err(|err| format!("{address}: {err}"))?;
    tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| format!("{address}: TLS handshake timed out"))?
        .map_err(|err| format!("{address}: TLS handshake failed: {err}"))
}

/// Sends `GET path` over the established connection and judges the status line.
async fn http_status(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    endpoint: &Endpoint,
    path: &str,
) -> Result<Accepted, String> {
    let address = &endpoint.address;
    let host = endpoint.server_name.clone().unwrap_or_else(|| address.clone());
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: certshift-preflight\r\nConnection: close\r\n\r\n");
    let exchange = async {
        tls.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        let mut buffer = [0u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
            let n = tls.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..n]);
        }
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{address}: no HTTP answer to GET {path}"))?
        .map_err(|err| format!("{address}: {err}"))?;
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{address}: not an HTTP answer to GET {path}: {line:?}"))?;
    if HTTP_REFUSALS.contains(&status) {
        return Err(format!("{address}: refused over HTTP: {line}"));
    }
    Ok(Accepted::Http(status))
}
