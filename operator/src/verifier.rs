//! The Service Fabric rules of one revision as rustls verifiers: what a
//! member accepts from a peer member (thumbprint, or common name with pinned
//! issuers or a chain to an anchor, time-valid, not revoked), and which
//! clients it admits (members, and the revision's client allow-lists). Built
//! from what the validation ConfigMap carries (`rules.json`, `ca-bundle.crt`,
//! `intermediates.crt`); the
//! `certshift agent`, the operator's probes and Rust applications use this
//! one implementation.
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! use std::sync::Arc;
//! let dir = std::path::Path::new("/etc/certshift/validation");
//! let verifier = Arc::new(certshift::verifier::Verifier::from_outputs(|key| std::fs::read(dir.join(key)).ok())?);
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

use crate::facts::{CertificateFacts, der_facts, parse_bundle};
use crate::names::names_match;
use crate::outputs::RulesJson;
use crate::rules::{Accepted, Clients, Rejection, issuance};
use crate::thumbprint::Thumbprint;
use crate::trust::{TrustBundle, TrustPool};

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
    /// The same certificates with their DER, to link a peer's chain to them.
    pool: TrustPool,
    provider: Arc<CryptoProvider>,
}

/// The validation ConfigMap's keys the verifier reads, beside `rules.json`:
/// the anchors and pinned issuers, and the other CA certificates of the
/// store's paths (never anchors).
pub const TRUST_FILES: [&str; 2] = ["ca-bundle.crt", "intermediates.crt"];
// `crls.pem` holds the CRLs in force, each signed by a CA of those files.

impl Verifier {
    /// From the validation ConfigMap's files, read through `file` by key:
    /// `rules.json`, and the certificates of [`TRUST_FILES`] (either may be
    /// missing or empty: thumbprints and pinned issuers need no anchor).
    /// The anchors are those `rules.json` names; a `rules.json` that names
    /// none (written before anchors were published) trusts all of `ca-bundle.crt`.
    pub fn from_outputs(file: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, String> {
        let rules_json = file("rules.json").ok_or("rules.json: missing")?;
        let rules: RulesJson = serde_json::from_slice(&rules_json).map_err(|err| format!("rules.json: {err}"))?;
        let mut pool = TrustPool::default();
        for key in TRUST_FILES {
            let Some(bytes) = file(key).filter(|b| !b.iter().all(u8::is_ascii_whitespace)) else {
                continue;
            };
            for (facts, der) in parse_bundle(key, &bytes).map_err(|err| err.to_string())? {
                let anchor = match &rules.anchors {
                    Some(anchors) => anchors.contains(&facts.thumbprint),
                    None => key == TRUST_FILES[0],
                };
                if anchor {
                    pool.add_anchor(facts, der);
                } else {
                    pool.add_authority(facts, der);
                }
            }
        }
        if let Some(bytes) = file("crls.pem").filter(|b| !b.iter().all(u8::is_ascii_whitespace)) {
            // A CRL whose issuer is not among the revision's certificates
            // revokes nothing on a path this verifier can build.
            for crl in crate::facts::parse_crls("crls.pem", &bytes).map_err(|err| err.to_string())? {
                pool.add_crl(&crl);
            }
        }
        Ok(Self::new(rules, pool))
    }

    /// From the rules and the certificates the revision publishes.
    pub fn new(rules: RulesJson, pool: TrustPool) -> Self {
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
            trust: pool.build().tolerating(&rules.tolerated).into_owned(),
            pool,
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

    /// The peer's certificate, its issuer linked among what it sent and the
    /// revision's certificates, and the CA certificates it sent (linked too).
    fn facts(
        &self,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(CertificateFacts, Vec<CertificateFacts>), Refusal> {
        let refusal = |err: crate::facts::FactsError| Refusal {
            reason: err.reason(),
            message: err.to_string(),
        };
        let mut sent = Vec::with_capacity(intermediates.len());
        for (index, der) in intermediates.iter().enumerate() {
            let facts = der_facts(&format!("peer chain certificate {}", index + 1), der).map_err(refusal)?;
            sent.push((facts, der.to_vec()));
        }
        let mut leaf = der_facts("peer certificate", end_entity).map_err(refusal)?;
        self.pool.link_with(&mut leaf, end_entity, &sent);
        let mut linked = Vec::with_capacity(sent.len());
        for (facts, der) in &sent {
            let mut facts = facts.clone();
            self.pool.link_with(&mut facts, der, &sent);
            linked.push(facts);
        }
        Ok((leaf, linked))
    }

    /// Service Fabric validation of a peer member's certificate.
    pub fn check_member(
        &self,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
        now: Timestamp,
    ) -> Result<CertificateFacts, Refusal> {
        let (facts, sent) = self.facts(end_entity, intermediates)?;
        self.accepted
            .check_with(&facts, &self.trust, &sent, now)
            .map_err(|rejection| Refusal::of(&rejection, &facts))?;
        Ok(facts)
    }

    /// Whether the revision's rules admit a member's certificate, the clock
    /// aside (the staging invariant's question: it is about rule changes).
    pub fn admits_member(
        &self,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
    ) -> Result<CertificateFacts, Refusal> {
        let (facts, sent) = self.facts(end_entity, intermediates)?;
        self.accepted
            .check_rules(&facts, &self.trust, &sent)
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
        let (facts, sent) = self.facts(end_entity, intermediates)?;
        let rejection = match self.accepted.check_with(&facts, &self.trust, &sent, now) {
            Ok(()) => return Ok(Admitted::Member),
            Err(rejection) => rejection,
        };
        if facts.is_time_valid(now) {
            let judge = |pins| self.trust.judge_with(&facts, &sent, pins, Some(now)).is_ok();
            let by_thumbprint = self
                .clients
                .thumbprints
                .iter()
                .find(|c| facts.has_thumbprint(&c.thumbprint) && judge(crate::trust::Issuance::Built))
                .map(|c| c.is_admin);
            let by_name = self.clients.common_names.iter().find_map(|c| {
                let named = facts
                    .common_name
                    .iter()
                    .chain(&facts.dns_names)
                    .any(|n| names_match(&c.name, n));
                (named && judge(issuance(&c.issuer_thumbprints))).then_some(c.is_admin)
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
