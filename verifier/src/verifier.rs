//! [`Verifier`]: one revision's rules, judging peers for rustls.

use std::sync::Arc;

use jiff::Timestamp;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::facts::{CertificateFacts, FactsError, der_facts, parse_bundle, parse_crls};
use crate::files::{CRLS_FILE, RULES_FILE, RulesJson, TRUST_FILES};
use crate::names::names_match;
use crate::rules::{Accepted, Clients, Rejection, issuance};
use crate::thumbprint::Thumbprint;
use crate::trust::{Issuance, TrustBundle, TrustPool};

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
    pub fn from_pem(tls_crt: &[u8], tls_key: &[u8]) -> Result<Self, Error> {
        let identity = |file, message: String| Error::Identity { file, message };
        let chain = CertificateDer::pem_slice_iter(tls_crt)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| identity("tls.crt", err.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| identity("tls.crt", "no certificate".to_owned()))?;
        let key = PrivateKeyDer::from_pem_slice(tls_key).map_err(|err| identity("tls.key", err.to_string()))?;
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

/// Why a verifier or an identity could not be built from a revision's files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the revision must have is not there.
    #[error("{file}: missing")]
    Missing { file: &'static str },
    /// `rules.json` is not the rules of a revision.
    #[error("{RULES_FILE}: {source}")]
    Rules {
        #[source]
        source: serde_json::Error,
    },
    /// A certificate or CRL file holds something that is not one (the
    /// error names the file and the block).
    #[error(transparent)]
    Malformed(#[from] FactsError),
    /// `tls.crt` or `tls.key` cannot be read or do not belong together.
    #[error("{file}: {message}")]
    Identity { file: &'static str, message: String },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl Verifier {
    /// From the validation ConfigMap's files, read through `file` by key:
    /// `rules.json`, and the certificates of [`TRUST_FILES`] (either may be
    /// missing or empty: thumbprints and pinned issuers need no anchor).
    /// The anchors are those `rules.json` names; a `rules.json` that names
    /// none (written before anchors were published) trusts all of `ca-bundle.crt`.
    pub fn from_outputs(file: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, Error> {
        let rules_json = file(RULES_FILE).ok_or(Error::Missing { file: RULES_FILE })?;
        let rules: RulesJson = serde_json::from_slice(&rules_json).map_err(|source| Error::Rules { source })?;
        let mut pool = TrustPool::default();
        for key in TRUST_FILES {
            let Some(bytes) = file(key).filter(|b| !b.iter().all(u8::is_ascii_whitespace)) else {
                continue;
            };
            for (facts, der) in parse_bundle(key, &bytes)? {
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
        if let Some(bytes) = file(CRLS_FILE).filter(|b| !b.iter().all(u8::is_ascii_whitespace)) {
            // A CRL whose issuer is not among the revision's certificates
            // revokes nothing on a path this verifier can build.
            for crl in parse_crls(CRLS_FILE, &bytes)? {
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
            accepted: rules.accepted.normalized(),
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
        let refusal = |err: FactsError| Refusal {
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
                .find(|c| facts.has_thumbprint(&c.thumbprint) && judge(Issuance::Built))
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
    pub fn server_config(self: &Arc<Self>, identity: &Identity) -> Result<ServerConfig, Error> {
        ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(self.clone())
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(identity_error)
    }

    /// A client configuration presenting `identity`, accepting a server the
    /// rules accept as a member (names are the rules' business, not the DNS
    /// name dialled).
    pub fn client_config(self: &Arc<Self>, identity: &Identity) -> Result<ClientConfig, Error> {
        ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(identity_error)
    }
}

/// rustls's word that a key and a certificate do not belong together, said
/// of the files they came from.
fn identity_error(err: rustls::Error) -> Error {
    match err {
        rustls::Error::InconsistentKeys(why) => Error::Identity {
            file: "tls.key",
            message: format!("does not match the certificate of tls.crt ({why:?})"),
        },
        other => Error::Tls(other),
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
