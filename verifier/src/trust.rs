//! Trust as Service Fabric and PKI define it (docs/trust.md): the anchors a
//! declaration trusts, every CA certificate known for path building, the
//! revocations in force, and the path from a certificate to a root.
//!
//! Anchors come only from `spec.trustBundle` (and, when the declaration opts
//! in, the store's `ca.crt` entries); CA certificates found in chains only
//! help build paths. The planner, the operator, `certshift plan`, the
//! members' verifier and the tests' judge all judge through [`TrustBundle`].

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use crate::facts::{CertificateFacts, CrlFacts, crl_signed_by, issuer_among};
use crate::thumbprint::Thumbprint;

/// Paths longer than this are refused as incomplete (no real PKI is this deep).
pub const MAX_PATH_LENGTH: usize = 8;

/// How a certificate is declared, for the part of validation that depends
/// on its issuers (Service Fabric's validation rules, docs/trust.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issuance<'a> {
    /// Declared by thumbprint: the chain must build (to any root, trusted or
    /// not); "other trust errors are ignored".
    Built,
    /// A common name with pinned issuers: the direct issuer must be one of
    /// them; an untrusted root is then not fatal.
    Pinned(&'a [Thumbprint]),
    /// A common name without pins: the chain must reach an anchor.
    Anchored,
}

/// Why a certificate's issuers do not satisfy its declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// The issuer of `certificate` (named `issuer`) is not among the known
    /// certificates: the path cannot be built.
    Incomplete { certificate: Thumbprint, issuer: String },
    /// The path ends in `root`, a self-signed certificate that is not an anchor.
    UntrustedRoot { root: Thumbprint },
    /// The direct issuer is not pinned (`None`: it is not even known, so
    /// it cannot be one of the pins).
    NotPinned { issuer: Option<Thumbprint> },
    /// `certificate` (the certificate itself or a CA on its path) is revoked
    /// by a CRL of its issuer.
    Revoked { certificate: Thumbprint },
    /// `authority` on the path is expired or not yet valid at the time judged.
    AuthorityNotTimeValid { authority: Thumbprint },
}

/// The end of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathEnd {
    /// The last link is an anchor.
    Anchor(Thumbprint),
    /// The path ends in a self-signed certificate that is not an anchor.
    UntrustedRoot(Thumbprint),
    /// The issuer of the last certificate is unknown.
    Incomplete { issuer: String },
}

/// A certificate's path: itself and its issuers as far as they are known
/// (an anchor known only by thumbprint is not in `certificates`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path<'a> {
    pub certificates: Vec<&'a CertificateFacts>,
    pub end: PathEnd,
}

/// Anchors, the CA certificates known for path building, and revocations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustBundle {
    anchors: BTreeSet<Thumbprint>,
    authorities: BTreeMap<Thumbprint, CertificateFacts>,
    /// `(issuer thumbprint, serial)` of every revoked certificate.
    revoked: BTreeSet<(Thumbprint, String)>,
    /// Revoked certificates accepted all the same (see [`Self::tolerating`]).
    tolerated: BTreeSet<Thumbprint>,
}

impl TrustBundle {
    /// Anchors known by thumbprint only (the pure core's tests).
    pub fn new(anchors: impl IntoIterator<Item = Thumbprint>) -> Self {
        Self {
            anchors: anchors.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Anchors and other CA certificates, issuers already linked.
    pub fn with_authorities(
        anchors: impl IntoIterator<Item = CertificateFacts>,
        others: impl IntoIterator<Item = CertificateFacts>,
    ) -> Self {
        let mut trust = Self::default();
        for anchor in anchors {
            trust.anchors.insert(anchor.thumbprint.clone());
            trust.authorities.insert(anchor.thumbprint.clone(), anchor);
        }
        for other in others {
            trust.authorities.entry(other.thumbprint.clone()).or_insert(other);
        }
        trust
    }

    /// Revokes the certificate of `serial` issued by `issuer`.
    pub fn revoke(&mut self, issuer: Thumbprint, serial: impl Into<String>) {
        self.revoked.insert((issuer, serial.into()));
    }

    pub fn is_anchor(&self, thumbprint: &Thumbprint) -> bool {
        self.anchors.contains(thumbprint)
    }

    /// Same as [`Self::is_anchor`] (the set reads as a set of anchors).
    pub fn contains(&self, thumbprint: &Thumbprint) -> bool {
        self.is_anchor(thumbprint)
    }

    pub fn anchors(&self) -> impl Iterator<Item = &Thumbprint> {
        self.anchors.iter()
    }

    pub fn authority(&self, thumbprint: &Thumbprint) -> Option<&CertificateFacts> {
        self.authorities.get(thumbprint)
    }

    pub fn authorities(&self) -> impl Iterator<Item = &CertificateFacts> {
        self.authorities.values()
    }

    /// The same CA certificates and revocations with `anchors` as the
    /// anchors: a revision's own (a trust bundle changes in stages, so each
    /// revision trusts the anchors it names). An anchor left out stays known
    /// for building paths, as a root nobody trusts.
    pub fn with_anchors<'a>(&self, anchors: impl IntoIterator<Item = &'a Thumbprint>) -> TrustBundle {
        TrustBundle {
            anchors: anchors.into_iter().cloned().collect(),
            ..self.clone()
        }
    }

    /// The same trust, except that the certificates of `thumbprints` are not
    /// held revoked, nor is any CA on their paths when they are judged: the
    /// presented certificate members are moving away from (its own
    /// revocation, or its intermediate's), tolerated by the revisions around
    /// its last presentation so nobody is cut off (the revision's
    /// `tolerated`). Other certificates under a revoked CA stay refused.
    pub fn tolerating(&self, thumbprints: &[Thumbprint]) -> std::borrow::Cow<'_, TrustBundle> {
        if thumbprints.iter().all(|tp| self.tolerated.contains(tp)) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut tolerant = self.clone();
        tolerant.tolerated.extend(thumbprints.iter().cloned());
        std::borrow::Cow::Owned(tolerant)
    }

    pub fn is_revoked(&self, cert: &CertificateFacts) -> bool {
        !self.tolerated.contains(&cert.thumbprint)
            && cert
                .issuer_thumbprint
                .as_ref()
                .is_some_and(|issuer| self.revoked.contains(&(issuer.clone(), cert.serial.clone())))
    }

    /// The certificate on `cert`'s path (itself included) that a CRL in
    /// force revokes, if any.
    pub fn revoked_on_path(&self, cert: &CertificateFacts) -> Option<Thumbprint> {
        if self.tolerated.contains(&cert.thumbprint) {
            return None;
        }
        let path = self.path(cert);
        path.certificates
            .iter()
            .find(|c| self.is_revoked(c))
            .map(|c| c.thumbprint.clone())
    }

    /// The path from `cert` towards a root, following issuer links through
    /// the known CA certificates, stopping at the first anchor.
    pub fn path<'a>(&'a self, cert: &'a CertificateFacts) -> Path<'a> {
        self.path_with(cert, &[])
    }

    /// [`Self::path`], with `extra` CA certificates known for this judgement
    /// only (those a peer sent with its certificate).
    pub fn path_with<'a>(&'a self, cert: &'a CertificateFacts, extra: &'a [CertificateFacts]) -> Path<'a> {
        let mut certificates = vec![cert];
        let mut current = cert;
        loop {
            let Some(issuer) = &current.issuer_thumbprint else {
                return Path {
                    certificates,
                    end: PathEnd::Incomplete {
                        issuer: current.issuer.clone(),
                    },
                };
            };
            if issuer == &current.thumbprint {
                // Self-signed: a root, trusted or not.
                let end = if self.is_anchor(issuer) {
                    PathEnd::Anchor(issuer.clone())
                } else {
                    PathEnd::UntrustedRoot(issuer.clone())
                };
                return Path { certificates, end };
            }
            let known = extra
                .iter()
                .find(|c| &c.thumbprint == issuer && c.may_sign_certificates())
                .or_else(|| self.authorities.get(issuer).filter(|c| c.may_sign_certificates()));
            if self.is_anchor(issuer) {
                certificates.extend(known);
                return Path {
                    certificates,
                    end: PathEnd::Anchor(issuer.clone()),
                };
            }
            match known {
                Some(authority) if certificates.len() < MAX_PATH_LENGTH && !certificates.contains(&authority) => {
                    certificates.push(authority);
                    current = authority;
                }
                _ => {
                    return Path {
                        certificates,
                        end: PathEnd::Incomplete {
                            issuer: current.issuer.clone(),
                        },
                    };
                }
            }
        }
    }

    /// Whether `cert`'s issuers satisfy its declaration (`issuance`), and,
    /// with a clock, whether the CAs that judgement relies on are time-valid.
    /// A revoked certificate on that path fails every declaration.
    pub fn judge(
        &self,
        cert: &CertificateFacts,
        issuance: Issuance<'_>,
        now: Option<Timestamp>,
    ) -> Result<(), ChainError> {
        self.judge_with(cert, &[], issuance, now)
    }

    /// [`Self::judge`] with `extra` CA certificates (see [`Self::path_with`]).
    pub fn judge_with(
        &self,
        cert: &CertificateFacts,
        extra: &[CertificateFacts],
        issuance: Issuance<'_>,
        now: Option<Timestamp>,
    ) -> Result<(), ChainError> {
        let path = self.path_with(cert, extra);
        let relied_on: &[&CertificateFacts] = match (&path.end, issuance) {
            (_, Issuance::Pinned(pins)) => match &cert.issuer_thumbprint {
                // The certificate and its direct issuer (when its facts are known).
                Some(issuer) if pins.contains(issuer) => &path.certificates[..path.certificates.len().min(2)],
                issuer => return Err(ChainError::NotPinned { issuer: issuer.clone() }),
            },
            (PathEnd::Incomplete { issuer }, _) => {
                let last = path.certificates.last().expect("the certificate itself");
                return Err(ChainError::Incomplete {
                    certificate: last.thumbprint.clone(),
                    issuer: issuer.clone(),
                });
            }
            (PathEnd::UntrustedRoot(root), Issuance::Anchored) => {
                return Err(ChainError::UntrustedRoot { root: root.clone() });
            }
            (PathEnd::UntrustedRoot(_) | PathEnd::Anchor(_), _) => &path.certificates,
        };
        // A tolerated certificate's whole path is: see `tolerating`.
        let tolerated = self.tolerated.contains(&cert.thumbprint);
        if !tolerated && let Some(revoked) = relied_on.iter().find(|c| self.is_revoked(c)) {
            return Err(ChainError::Revoked {
                certificate: revoked.thumbprint.clone(),
            });
        }
        if let Some(now) = now
            && let Some(authority) = relied_on.iter().skip(1).find(|c| !c.is_time_valid(now))
        {
            return Err(ChainError::AuthorityNotTimeValid {
                authority: authority.thumbprint.clone(),
            });
        }
        Ok(())
    }
}

/// Gathers certificates (DER) for one judgement and links every issuer by
/// name and signature across all of them, so a leaf in one Secret chains
/// through an intermediate in another to a root in the trust bundle.
#[derive(Clone, Debug, Default)]
pub struct TrustPool {
    revoked: BTreeSet<(Thumbprint, String)>,
    anchors: BTreeSet<Thumbprint>,
    certificates: BTreeMap<Thumbprint, (CertificateFacts, Vec<u8>)>,
    /// Thumbprints by subject name, to find issuer candidates in one lookup.
    by_subject: BTreeMap<String, Vec<Thumbprint>>,
}

impl TrustPool {
    pub fn add_anchor(&mut self, facts: CertificateFacts, der: Vec<u8>) {
        self.anchors.insert(facts.thumbprint.clone());
        self.add(facts, der);
    }

    /// A CA certificate that helps build paths; other certificates cannot
    /// issue and are left out (a CA whose keyUsage lacks keyCertSign too).
    pub fn add_authority(&mut self, facts: CertificateFacts, der: Vec<u8>) {
        if facts.may_sign_certificates() {
            self.add(facts, der);
        }
    }

    fn add(&mut self, facts: CertificateFacts, der: Vec<u8>) {
        if !self.certificates.contains_key(&facts.thumbprint) {
            self.by_subject
                .entry(facts.subject.clone())
                .or_default()
                .push(facts.thumbprint.clone());
            self.certificates.insert(facts.thumbprint.clone(), (facts, der));
        }
    }

    pub fn is_anchor(&self, thumbprint: &Thumbprint) -> bool {
        self.anchors.contains(thumbprint)
    }

    /// Puts a CRL in force: its issuer must be among the pool's certificates
    /// (by name, and its key must verify the CRL's signature). Returns the
    /// issuer's thumbprint, or `None` when no certificate of the pool issued it.
    pub fn add_crl(&mut self, crl: &CrlFacts) -> Option<Thumbprint> {
        let issuer = self
            .by_subject
            .get(&crl.issuer)
            .into_iter()
            .flatten()
            .find(|tp| crl_signed_by(crl, &self.certificates[*tp].1))?
            .clone();
        for serial in &crl.revoked {
            self.revoked.insert((issuer.clone(), serial.clone()));
        }
        Some(issuer)
    }

    /// Every certificate of the pool (anchors and others), DER by thumbprint.
    pub fn der(&self) -> impl Iterator<Item = (&Thumbprint, &[u8])> {
        self.certificates.iter().map(|(tp, (_, der))| (tp, der.as_slice()))
    }

    /// Sets `facts`' issuer when it is not known yet: anchors first, then
    /// other certificates of the issuer's name whose key verifies its signature.
    pub fn link(&self, facts: &mut CertificateFacts, der: &[u8]) {
        self.link_with(facts, der, &[]);
    }

    /// [`Self::link`], among `extra` certificates (a peer's chain) first.
    pub fn link_with(&self, facts: &mut CertificateFacts, der: &[u8], extra: &[(CertificateFacts, Vec<u8>)]) {
        if facts.issuer_thumbprint.is_some() {
            return;
        }
        let sent = extra
            .iter()
            .filter(|(c, _)| c.subject == facts.issuer && c.thumbprint != facts.thumbprint)
            .map(|(c, der)| (c.thumbprint.clone(), der.clone()));
        let known = self
            .by_subject
            .get(&facts.issuer)
            .into_iter()
            .flatten()
            .map(|tp| (tp.clone(), self.certificates[tp].1.clone()));
        let mut candidates: Vec<(Thumbprint, Vec<u8>)> = sent.chain(known).collect();
        candidates.sort_by_key(|(tp, _)| !self.is_anchor(tp));
        facts.issuer_thumbprint = issuer_among(der, facts, &candidates);
    }

    /// The trust bundle: every certificate linked, anchors marked.
    pub fn build(&self) -> TrustBundle {
        let mut anchors = Vec::new();
        let mut others = Vec::new();
        for (thumbprint, (facts, der)) in &self.certificates {
            let mut facts = facts.clone();
            self.link(&mut facts, der);
            if self.is_anchor(thumbprint) {
                anchors.push(facts);
            } else {
                others.push(facts);
            }
        }
        let mut trust = TrustBundle::with_authorities(anchors, others);
        trust.revoked = self.revoked.clone();
        trust
    }
}

#[cfg(test)]
mod tests;
