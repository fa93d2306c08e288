//! TLS probes of endpoint members: which certificate an endpoint presents
//! (acknowledgement of a presentation revision), and whether it accepts a
//! certificate as a client (the pre-flight before a presentation revision).
//! Timeouts, refused connections and TLS errors are outcomes, never panics.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha1::Digest as _;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::crd::Endpoint;
use crate::outputs::PresentedMaterial;
use crate::thumbprint::Thumbprint;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Reads whatever the server presents: the probe checks identity by
/// thumbprint, not by a trust chain.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn config(identity: Option<&PresentedMaterial>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
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

/// Connects, completes the handshake and reads to the end: a server that
/// refuses the client certificate says so with an alert (TLS 1.3 sends it
/// after the client's side of the handshake is done).
async fn handshake(endpoint: &Endpoint, identity: Option<&PresentedMaterial>) -> Result<Thumbprint, String> {
    let connector = TlsConnector::from(Arc::new(config(identity)?));
    let name = server_name(endpoint)?;
    let address = &endpoint.address;
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| format!("{address}: connection timed out"))?
        .map_err(|err| format!("{address}: {err}"))?;
    let mut tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| format!("{address}: TLS handshake timed out"))?
        .map_err(|err| format!("{address}: TLS handshake failed: {err}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| format!("{address}: no certificate presented"))?;
    let thumbprint = Thumbprint::from_digest(&sha1::Sha1::digest(leaf.as_ref()));
    if identity.is_some() {
        let mut rest = Vec::new();
        match tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(format!("{address}: {err}")),
            Err(_) => return Err(format!("{address}: no answer after the handshake")),
        }
    }
    Ok(thumbprint)
}

/// The thumbprint of the certificate `endpoint` presents.
pub async fn presented(endpoint: &Endpoint) -> Result<Thumbprint, String> {
    handshake(endpoint, None).await
}

/// Whether `endpoint` accepts `material` as a client certificate (mutual TLS).
pub async fn accepts(endpoint: &Endpoint, material: &PresentedMaterial) -> Result<(), String> {
    handshake(endpoint, Some(material)).await.map(|_| ())
}
