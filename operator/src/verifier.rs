//! The Service Fabric rules of one revision as rustls verifiers: what a
//! member accepts from a peer member (thumbprint, or common name with pinned
//! issuers or a chain to the trust bundle, time-valid), and which clients it
//! admits (members, and the revision's client allow-lists). Built from what
//! the validation ConfigMap carries (`rules.json`, `ca-bundle.crt`); the
//! `certshift agent`, the operator's probes and Rust applications use this
//! one implementation.
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! use std::sync::Arc;
//! let rules = std::fs::read("/etc/certshift/validation/rules.json").map_err(|e| e.to_string())?;
//! let bundle = std::fs::read("/etc/certshift/validation/ca-bundle.crt").map_err(|e| e.to_string())?;
//! let verifier = Arc::new(certshift::verifier::Verifier::from_outputs(&rules, &bundle)?);
//! let chain = std::fs::read("/etc/certshift/presentation/tls.crt").map_err(|e| e.to_string())?;
//! let key = std::fs::read("/etc/certshift/presentation/tls.key").map_err(|e| e.to_string())?;
//! let identity = certshift::verifier::Identity::from_pem(&chain, &key)?;
//! // A server that admits members and allowed clients, and a client that
//! // dials members, both presenting the revision's certificate.
//! let server = verifier.server_config(&identity)?;
//! let client = verifier.client_config(&identity)?;
//! # let _ = (server, client); Ok(()) }
//! ```

use std::sync::Arc;

use jiff::Timestamp;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::facts::{CertificateFacts, peer_facts};
use crate::names::names_match;
use crate::outputs::RulesJson;
use crate::rules::{Accepted, Clients, Rejection, TrustBundle};
use crate::thumbprint::Thumbprint;

/// Why a peer was refused, as the TLS error carries it (downcast
/// `rustls::CertificateError::Other` to read it back).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// A PascalCase reason (`CertificateNotMatched`, `IssuerNotPinned`, …).
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn of(rejection: &Rejection, facts: &CertificateFacts) -> Self {
        Self {
            reason: rejection.reason(),
            message: rejection.describe(facts),
        }
    }

    /// The refusal a rustls error carries, if it is one of ours.
    pub fn from_tls_error(err: &rustls::Error) -> Option<&Refusal> {
        match err {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.downcast_ref(),
            _ => None,
        }
    }

    fn into_tls_error(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(self))))
    }
}

/// How a client was admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A member of the cluster (the validation rules accept it).
    Member,
    /// In the client allow-lists, with or without administrative rights.
    Client { is_admin: bool },
}

/// The certificate and key a member presents.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub thumbprint: Thumbprint,
}

impl Identity {
    /// From `tls.crt` (leaf first, then its chain) and `tls.key`, PEM.
    pub fn from_pem(tls_crt: &[u8], tls_key: &[u8]) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(tls_crt)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("tls.crt: {err}"))?;
        let leaf = chain.first().ok_or("tls.crt: no certificate")?;
        let key = PrivateKeyDer::from_pem_slice(tls_key).map_err(|err| format!("tls.key: {err}"))?;
        use sha1::Digest as _;
        let thumbprint = Thumbprint::from_digest(&sha1::Sha1::digest(leaf.as_ref()));
        Ok(Self { chain, key, thumbprint })
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            thumbprint: self.thumbprint.clone(),
        }
    }
}

/// One revision's rules, ready to judge peers.
#[derive(Debug)]
pub struct Verifier {
    revision: u64,
    presented: Option<Thumbprint>,
    accepted: Accepted,
    clients: Clients,
    trust: TrustBundle,
    /// The bundle's certificates, to find a peer's direct issuer.
    issuers: Vec<(Thumbprint, Vec<u8>)>,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    /// From `rules.json` and `ca-bundle.crt` as the validation ConfigMap
    /// carries them (an empty bundle is allowed: thumbprints and pinned
    /// issuers need none).
    pub fn from_outputs(rules_json: &[u8], ca_bundle: &[u8]) -> Result<Self, String> {
        let rules: RulesJson = serde_json::from_slice(rules_json).map_err(|err| format!("rules.json: {err}"))?;
        let mut issuers = Vec::new();
        for (index, der) in CertificateDer::pem_slice_iter(ca_bundle).enumerate() {
            let der = der.map_err(|err| format!("ca-bundle.crt: certificate {index}: {err}"))?;
            use sha1::Digest as _;
            issuers.push((Thumbprint::from_digest(&sha1::Sha1::digest(der.as_ref())), der.to_vec()));
        }
        Ok(Self::new(rules, issuers))
    }

    /// From the rules and the bundle's certificates (DER, by thumbprint).
    pub fn new(rules: RulesJson, issuers: Vec<(Thumbprint, Vec<u8>)>) -> Self {
        Self {
            revision: rules.revision,
            presented: rules.presented,
            accepted: Accepted::new(
                rules.accepted.thumbprints,
                rules
                    .accepted
                    .common_names
                    .into_iter()
                    .map(|r| crate::rules::CommonNameRule::new(r.name, r.issuer_thumbprints)),
            ),
            clients: rules.clients,
            trust: TrustBundle::new(issuers.iter().map(|(t, _)| t.clone())),
            issuers,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The thumbprint members present with this revision (`rules.json` `presented`).
    pub fn presented(&self) -> Option<&Thumbprint> {
        self.presented.as_ref()
    }

    fn facts(&self, end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> Result<CertificateFacts, Refusal> {
        let sent: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
        peer_facts(end_entity, &sent, &self.issuers).map_err(|err| Refusal {
            reason: err.reason(),
            message: err.to_string(),
        })
    }

    /// Service Fabric validation of a peer member's certificate.
    pub fn check_member(
        &self,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
        now: Timestamp,
    ) -> Result<CertificateFacts, Refusal> {
        let facts = self.facts(end_entity, intermediates)?;
        self.accepted
            .check(&facts, &self.trust, now)
            .map_err(|rejection| Refusal::of(&rejection, &facts))?;
        Ok(facts)
    }

    /// A client: a member, or a certificate the client allow-lists name (by
    /// thumbprint; or by common name with its issuer pinned, or chaining to
    /// the trust bundle when none is pinned).
    pub fn check_client(
        &self,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
        now: Timestamp,
    ) -> Result<Admitted, Refusal> {
        let facts = self.facts(end_entity, intermediates)?;
        let rejection = match self.accepted.check(&facts, &self.trust, now) {
            Ok(()) => return Ok(Admitted::Member),
            Err(rejection) => rejection,
        };
        if facts.is_time_valid(now) {
            let by_thumbprint = self
                .clients
                .thumbprints
                .iter()
                .find(|c| facts.has_thumbprint(&c.thumbprint))
                .map(|c| c.is_admin);
            let by_name = self.clients.common_names.iter().find_map(|c| {
                let named = facts
                    .common_name
                    .iter()
                    .chain(&facts.dns_names)
                    .any(|n| names_match(&c.name, n));
                let issuer = facts.issuer_thumbprint.as_ref();
                let issued = if c.issuer_thumbprints.is_empty() {
                    issuer.is_some_and(|i| self.trust.contains(i))
                } else {
                    issuer.is_some_and(|i| c.issuer_thumbprints.contains(i))
                };
                (named && issued).then_some(c.is_admin)
            });
            if let Some(is_admin) = by_thumbprint.or(by_name) {
                return Ok(Admitted::Client { is_admin });
            }
        }
        Err(Refusal::of(&rejection, &facts))
    }

    /// A server configuration presenting `identity`, requiring a client
    /// certificate the rules admit.
    pub fn server_config(self: &Arc<Self>, identity: &Identity) -> Result<ServerConfig, String> {
        ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_client_cert_verifier(self.clone())
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|err| format!("tls.crt/tls.key: {err}"))
    }

    /// A client configuration presenting `identity`, accepting a server the
    /// rules accept as a member (names are the rules' business, not the DNS
    /// name dialled).
    pub fn client_config(self: &Arc<Self>, identity: &Identity) -> Result<ClientConfig, String> {
        ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|err| format!("tls.crt/tls.key: {err}"))
    }
}

fn timestamp(now: UnixTime) -> Timestamp {
    Timestamp::from_second(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)).unwrap_or(Timestamp::MAX)
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_member(end_entity, intermediates, timestamp(now))
            .map(|_| ServerCertVerified::assertion())
            .map_err(Refusal::into_tls_error)
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

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_client(end_entity, intermediates, timestamp(now))
            .map(|_| ClientCertVerified::assertion())
            .map_err(Refusal::into_tls_error)
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

#[cfg(test)]
mod tests;
