//! Service Fabric's validation and presentation rules (7.2 CU4 and later;
//! docs/concepts.md, docs/trust.md).
//!
//! Validation: what a member accepts from a peer. Presentation: which of the
//! store's certificates a member presents. Both are pure functions of facts.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::facts::CertificateFacts;
use crate::names::names_match;
use crate::thumbprint::Thumbprint;
pub use crate::trust::TrustBundle;
use crate::trust::{ChainError, Issuance};

/// One accepted common name. No issuer thumbprints means "unpinned": the
/// certificate must chain to an anchor of the declaration's trust bundle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CommonNameRule {
    pub name: String,
    /// Direct issuer thumbprints, sorted.
    #[serde(default)]
    pub issuer_thumbprints: Vec<Thumbprint>,
}

impl CommonNameRule {
    pub fn new(name: impl Into<String>, issuers: impl IntoIterator<Item = Thumbprint>) -> Self {
        let issuers: BTreeSet<Thumbprint> = issuers.into_iter().collect();
        Self {
            name: name.into(),
            issuer_thumbprints: issuers.into_iter().collect(),
        }
    }

    pub fn is_pinned(&self) -> bool {
        !self.issuer_thumbprints.is_empty()
    }

    /// What the rule asks of a matching certificate's issuers.
    pub fn issuance(&self) -> Issuance<'_> {
        issuance(&self.issuer_thumbprints)
    }

    /// Whether this entry's declared name matches the certificate's subject CN or
    /// one of its DNS SANs (validation matching: case-insensitive, wildcards).
    pub fn matches_name(&self, cert: &CertificateFacts) -> bool {
        cert.common_name
            .iter()
            .chain(&cert.dns_names)
            .any(|name| names_match(&self.name, name))
    }
}

/// The validation rules of a declaration (what members accept).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// Sorted, without duplicates.
    #[serde(default)]
    pub thumbprints: Vec<Thumbprint>,
    /// Sorted by name; at most one entry per name (case-insensitive).
    #[serde(default)]
    pub common_names: Vec<CommonNameRule>,
}

impl Accepted {
    pub fn new(
        thumbprints: impl IntoIterator<Item = Thumbprint>,
        common_names: impl IntoIterator<Item = CommonNameRule>,
    ) -> Self {
        let thumbprints: BTreeSet<Thumbprint> = thumbprints.into_iter().collect();
        let mut common_names: Vec<CommonNameRule> = common_names.into_iter().collect();
        common_names.sort();
        Self {
            thumbprints: thumbprints.into_iter().collect(),
            common_names,
        }
    }

    /// The same rules through [`Accepted::new`] (sorted, issuers sorted),
    /// as read back from a file someone else wrote, so comparisons hold.
    pub fn normalized(self) -> Self {
        let names = self.common_names.into_iter();
        Accepted::new(
            self.thumbprints,
            names.map(|r| CommonNameRule::new(r.name, r.issuer_thumbprints)),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.thumbprints.is_empty() && self.common_names.is_empty()
    }

    /// The entry for `name`, compared as Service Fabric compares declared names.
    pub fn common_name(&self, name: &str) -> Option<&CommonNameRule> {
        self.common_names
            .iter()
            .find(|rule| rule.name.eq_ignore_ascii_case(name))
    }

    /// Validation (docs/trust.md): time-valid, and declared by thumbprint, or by a
    /// common name whose issuer rule holds.
    pub fn check(&self, cert: &CertificateFacts, trust: &TrustBundle, now: Timestamp) -> Result<(), Rejection> {
        self.check_with(cert, trust, &[], now)
    }

    /// [`Self::check`], with CA certificates the peer sent (`extra`).
    pub fn check_with(
        &self,
        cert: &CertificateFacts,
        trust: &TrustBundle,
        extra: &[CertificateFacts],
        now: Timestamp,
    ) -> Result<(), Rejection> {
        if now < cert.not_before {
            return Err(Rejection::NotYetValid);
        }
        if now > cert.not_after {
            return Err(Rejection::Expired);
        }
        self.check_declared(cert, trust, extra, Some(now))
    }

    /// Validation without the clock: whether the rules themselves admit the
    /// certificate. The staging invariant is about rule changes, so it uses this.
    pub fn admits(&self, cert: &CertificateFacts, trust: &TrustBundle) -> bool {
        self.check_rules(cert, trust, &[]).is_ok()
    }

    /// [`Self::admits`] with the reason, and with CA certificates the peer sent.
    pub fn check_rules(
        &self,
        cert: &CertificateFacts,
        trust: &TrustBundle,
        extra: &[CertificateFacts],
    ) -> Result<(), Rejection> {
        self.check_declared(cert, trust, extra, None)
    }

    fn check_declared(
        &self,
        cert: &CertificateFacts,
        trust: &TrustBundle,
        extra: &[CertificateFacts],
        now: Option<Timestamp>,
    ) -> Result<(), Rejection> {
        let mut rejection = Rejection::NotDeclared;
        let mut consider = |found: Rejection| {
            if found.rank() < rejection.rank() {
                rejection = found;
            }
        };
        if self.thumbprints.iter().any(|tp| cert.has_thumbprint(tp)) {
            match trust.judge_with(cert, extra, Issuance::Built, now) {
                Ok(()) => return Ok(()),
                Err(err) => consider(Rejection::of_chain(err, None)),
            }
        }
        for rule in self.common_names.iter().filter(|rule| rule.matches_name(cert)) {
            match trust.judge_with(cert, extra, rule.issuance(), now) {
                Ok(()) => return Ok(()),
                Err(err) => consider(Rejection::of_chain(err, Some(&rule.name))),
            }
        }
        Err(rejection)
    }

    pub fn accepts(&self, cert: &CertificateFacts, trust: &TrustBundle, now: Timestamp) -> bool {
        self.check(cert, trust, now).is_ok()
    }
}

/// What a common name's pins ask of a certificate's issuers.
pub fn issuance(pins: &[Thumbprint]) -> Issuance<'_> {
    if pins.is_empty() {
        Issuance::Anchored
    } else {
        Issuance::Pinned(pins)
    }
}

/// Why validation rejects a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    NotYetValid,
    Expired,
    /// Neither its thumbprint nor any of its names is declared
    /// (Service Fabric's `CertificateNotMatched`).
    NotDeclared,
    /// Its name is declared with pinned issuers, and its direct issuer is not one of them.
    IssuerNotPinned {
        name: String,
        issuer: Option<Thumbprint>,
    },
    /// The issuer of `certificate` (itself or a CA on its path) is not
    /// known, so the path cannot be built.
    ChainIncomplete {
        certificate: Thumbprint,
        issuer: String,
    },
    /// Its name is declared unpinned, and its path ends in `root`, which is
    /// not an anchor of the trust bundle.
    UntrustedRoot {
        name: String,
        root: Thumbprint,
    },
    /// `certificate` (itself or a CA on its path) is revoked.
    Revoked {
        certificate: Thumbprint,
    },
    /// `authority`, a CA on its path, is expired or not yet valid.
    ChainNotTimeValid {
        authority: Thumbprint,
    },
}

impl Rejection {
    fn of_chain(err: ChainError, name: Option<&str>) -> Self {
        let name = name.unwrap_or_default().to_owned();
        match err {
            ChainError::Incomplete { certificate, issuer } => Rejection::ChainIncomplete { certificate, issuer },
            ChainError::UntrustedRoot { root } => Rejection::UntrustedRoot { name, root },
            ChainError::NotPinned { issuer } => Rejection::IssuerNotPinned { name, issuer },
            ChainError::Revoked { certificate } => Rejection::Revoked { certificate },
            ChainError::AuthorityNotTimeValid { authority } => Rejection::ChainNotTimeValid { authority },
        }
    }

    /// Which of several rules' rejections to report: the gravest, then the
    /// one naming the most specific rule.
    fn rank(&self) -> u8 {
        match self {
            Rejection::Revoked { .. } => 0,
            Rejection::NotYetValid | Rejection::Expired => 1,
            Rejection::ChainNotTimeValid { .. } => 2,
            Rejection::IssuerNotPinned { .. } => 3,
            Rejection::UntrustedRoot { .. } => 4,
            Rejection::ChainIncomplete { .. } => 5,
            Rejection::NotDeclared => 6,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::NotYetValid => "CertificateNotYetValid",
            Rejection::Expired => "CertificateExpired",
            Rejection::NotDeclared => "CertificateNotMatched",
            Rejection::IssuerNotPinned { .. } => "IssuerNotPinned",
            Rejection::ChainIncomplete { .. } => "ChainIncomplete",
            Rejection::UntrustedRoot { .. } => "UntrustedRoot",
            Rejection::Revoked { .. } => "CertificateRevoked",
            Rejection::ChainNotTimeValid { .. } => "ChainNotTimeValid",
        }
    }

    pub fn describe(&self, cert: &CertificateFacts) -> String {
        let tp = &cert.thumbprint;
        match self {
            Rejection::NotYetValid => format!("certificate {tp} is not valid before {}", cert.not_before),
            Rejection::Expired => format!("certificate {tp} expired at {}", cert.not_after),
            Rejection::NotDeclared => format!("certificate {tp} matches no declared thumbprint or common name"),
            Rejection::IssuerNotPinned {
                name,
                issuer: Some(issuer),
            } => format!("certificate {tp} for {name:?} is issued by {issuer}, which is not a pinned issuer"),
            Rejection::IssuerNotPinned { name, issuer: None } => format!(
                "certificate {tp} for {name:?} is issued by {:?}, which is not a pinned issuer",
                cert.issuer
            ),
            Rejection::ChainIncomplete { certificate, issuer } if certificate == tp => format!(
                "certificate {tp}: its issuer {issuer:?} is in neither its chain, the store's CAs nor the trust bundle"
            ),
            Rejection::ChainIncomplete { certificate, issuer } => format!(
                "certificate {tp}: the issuer {issuer:?} of CA {certificate} on its path is in neither its chain, the store's CAs nor the trust bundle"
            ),
            Rejection::UntrustedRoot { name, root } => format!(
                "certificate {tp} for {name:?} chains to root {root}, which is not an anchor of the trust bundle (spec.trustBundle)"
            ),
            Rejection::Revoked { certificate } if certificate == tp => {
                format!(
                    "certificate {tp} (serial {}) is revoked by its issuer's CRL",
                    cert.serial
                )
            }
            Rejection::Revoked { certificate } => {
                format!("certificate {tp}: CA {certificate} on its path is revoked by its issuer's CRL")
            }
            Rejection::ChainNotTimeValid { authority } => {
                format!("certificate {tp}: CA {authority} on its path is expired or not yet valid")
            }
        }
    }
}

/// Who may call the cluster as a client, beside its members (Service Fabric
/// `clientCertificateThumbprints` / `clientCertificateCommonNames`): client
/// rules are validation, staged like `accepted`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Clients {
    pub thumbprints: Vec<ClientThumbprint>,
    pub common_names: Vec<ClientCommonName>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientThumbprint {
    pub thumbprint: Thumbprint,
    pub is_admin: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCommonName {
    pub name: String,
    pub issuer_thumbprints: Vec<Thumbprint>,
    pub is_admin: bool,
}

impl Clients {
    pub fn is_empty(&self) -> bool {
        self.thumbprints.is_empty() && self.common_names.is_empty()
    }

    /// Everything either allows (widening: an added client, or more rights).
    pub fn union(&self, other: &Clients) -> Clients {
        let mut thumbprints = self.thumbprints.clone();
        for c in &other.thumbprints {
            match thumbprints.iter_mut().find(|t| t.thumbprint == c.thumbprint) {
                Some(t) => t.is_admin |= c.is_admin,
                None => thumbprints.push(c.clone()),
            }
        }
        thumbprints.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
        let mut common_names = self.common_names.clone();
        for c in &other.common_names {
            match common_names.iter_mut().find(|n| n.name.eq_ignore_ascii_case(&c.name)) {
                Some(n) => {
                    n.is_admin |= c.is_admin;
                    if n.issuer_thumbprints.is_empty() || c.issuer_thumbprints.is_empty() {
                        n.issuer_thumbprints.clear(); // unpinned is the wider
                    } else {
                        n.issuer_thumbprints.extend(c.issuer_thumbprints.iter().cloned());
                        n.issuer_thumbprints.sort();
                        n.issuer_thumbprints.dedup();
                    }
                }
                None => common_names.push(c.clone()),
            }
        }
        common_names.sort_by(|a, b| a.name.cmp(&b.name));
        Clients {
            thumbprints,
            common_names,
        }
    }
}

/// How a member picks among several matching certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SelectionPolicy {
    /// Greatest notBefore (Service Fabric 7.2 CU4 and later); ties: greatest
    /// notAfter, then smallest thumbprint.
    #[default]
    NewestNotBefore,
    /// Greatest notAfter (before 7.2 CU4); ties: greatest notBefore, then
    /// smallest thumbprint.
    LatestNotAfter,
}

/// How a declaration tells members what to present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresentBy<'a> {
    Thumbprints(&'a [Thumbprint]),
    /// Presentation matches the subject CN exactly and case-sensitively (no SANs,
    /// no wildcards), as Service Fabric does.
    CommonNames(Vec<&'a str>),
}

impl PresentBy<'_> {
    pub fn matches(&self, cert: &CertificateFacts) -> bool {
        match self {
            PresentBy::Thumbprints(list) => list.iter().any(|tp| cert.has_thumbprint(tp)),
            PresentBy::CommonNames(names) => cert.common_name.as_deref().is_some_and(|cn| names.contains(&cn)),
        }
    }
}

/// Whether a store instance may be presented at all: time-valid with its key.
pub fn presentable(cert: &CertificateFacts, now: Timestamp) -> bool {
    cert.is_time_valid(now) && cert.private_key.usable() && cert.defect().is_none()
}

/// The presentation rule: among presentable candidates, the policy's winner.
pub fn select<'a>(
    candidates: impl IntoIterator<Item = &'a CertificateFacts>,
    policy: SelectionPolicy,
    now: Timestamp,
) -> Option<&'a CertificateFacts> {
    candidates
        .into_iter()
        .filter(|cert| presentable(cert, now))
        .max_by(|a, b| {
            let primary = match policy {
                SelectionPolicy::NewestNotBefore => (a.not_before, a.not_after).cmp(&(b.not_before, b.not_after)),
                SelectionPolicy::LatestNotAfter => (a.not_after, a.not_before).cmp(&(b.not_after, b.not_before)),
            };
            // Smallest thumbprint wins a full tie: reversed, since max_by keeps the greatest.
            primary.then_with(|| b.thumbprint.cmp(&a.thumbprint))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::PrivateKeyState;
    use crate::testing::{facts, tp, ts};

    fn now() -> Timestamp {
        ts("2026-06-01T00:00:00Z")
    }

    fn trust(labels: &[&str]) -> TrustBundle {
        TrustBundle::new(labels.iter().map(|l| tp(l)))
    }

    #[test]
    fn a_declared_thumbprint_needs_its_chain_to_build_not_a_trusted_root() {
        // Service Fabric ("X.509 certificate-based authentication", validation
        // rules): by thumbprint, "the chain must build and the certificate must
        // be time-valid; other trust errors are ignored".
        let rules = Accepted::new([tp("A")], []);
        let untrusted_root = facts("R").cn("R").ca().self_signed().build();
        let trust = TrustBundle::with_authorities([], [untrusted_root]);
        let cert = facts("A").cn("x").issuer("R").build();
        assert_eq!(rules.check(&cert, &trust, now()), Ok(()));
        let orphan = facts("A").cn("x").unknown_issuer("CN=Gone").build();
        assert_eq!(
            rules.check(&orphan, &trust, now()),
            Err(Rejection::ChainIncomplete {
                certificate: tp("A"),
                issuer: "CN=Gone".into()
            })
        );
        let named_only = facts("A").cn("x").issuer("Unknown").build();
        assert_eq!(
            rules.check(&named_only, &trust, now()).unwrap_err().reason(),
            "ChainIncomplete"
        );
    }

    #[test]
    fn sha256_thumbprints_match_the_sha256_digest() {
        let cert = facts("A").build();
        let rules = Accepted::new([cert.sha256.clone()], []);
        assert!(rules.accepts(&cert, &trust(&[]), now()));
    }

    #[test]
    fn time_invalid_certificates_are_rejected_even_when_declared() {
        let rules = Accepted::new([tp("A")], []);
        let expired = facts("A").valid("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z").build();
        let future = facts("A").valid("2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z").build();
        assert_eq!(rules.check(&expired, &trust(&[]), now()), Err(Rejection::Expired));
        assert_eq!(rules.check(&future, &trust(&[]), now()), Err(Rejection::NotYetValid));
    }

    #[test]
    fn pinned_common_name_needs_a_pinned_direct_issuer() {
        let rules = Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA1")])]);
        let good = facts("G").cn("cluster.example").issuer("CA1").build();
        let other = facts("H").cn("cluster.example").issuer("CA2").build();
        let unknown = facts("U").cn("cluster.example").unknown_issuer("CN=Gone").build();
        assert!(rules.accepts(&good, &trust(&[]), now()));
        assert_eq!(
            rules.check(&other, &trust(&["CA2"]), now()),
            Err(Rejection::IssuerNotPinned {
                name: "cluster.example".into(),
                issuer: Some(tp("CA2"))
            })
        );
        assert_eq!(
            rules.check(&unknown, &trust(&[]), now()).unwrap_err().reason(),
            "IssuerNotPinned"
        );
    }

    #[test]
    fn unpinned_common_name_needs_a_path_to_an_anchor() {
        let rules = Accepted::new([], [CommonNameRule::new("cluster.example", [])]);
        let cert = facts("G").cn("cluster.example").issuer("CA1").build();
        assert!(rules.accepts(&cert, &trust(&["CA1"]), now()));
        let known_root = facts("CA1").cn("CA1").ca().self_signed().build();
        assert_eq!(
            rules.check(&cert, &TrustBundle::with_authorities([], [known_root]), now()),
            Err(Rejection::UntrustedRoot {
                name: "cluster.example".into(),
                root: tp("CA1")
            })
        );
        assert_eq!(
            rules.check(&cert, &trust(&["CA2"]), now()).unwrap_err().reason(),
            "ChainIncomplete"
        );
    }

    #[test]
    fn a_self_signed_certificate_by_common_name_needs_its_own_thumbprint_pinned() {
        let cert = facts("S").cn("test.example").self_signed().build();
        let unpinned = Accepted::new([], [CommonNameRule::new("test.example", [])]);
        let pinned_to_itself = Accepted::new([], [CommonNameRule::new("test.example", [tp("S")])]);
        assert!(!unpinned.accepts(&cert, &trust(&[]), now()));
        assert!(pinned_to_itself.accepts(&cert, &trust(&[]), now()));
    }

    #[test]
    fn validation_matches_names_case_insensitively_and_through_dns_sans() {
        let rules = Accepted::new([], [CommonNameRule::new("Cluster.Example", [tp("CA")])]);
        let by_cn = facts("A").cn("cluster.example").issuer("CA").build();
        let by_san = facts("B")
            .cn("something.else")
            .dns("CLUSTER.example")
            .issuer("CA")
            .build();
        let neither = facts("C").cn("other.example").issuer("CA").build();
        assert!(rules.accepts(&by_cn, &trust(&[]), now()));
        assert!(rules.accepts(&by_san, &trust(&[]), now()));
        assert_eq!(rules.check(&neither, &trust(&[]), now()), Err(Rejection::NotDeclared));
    }

    #[test]
    fn a_declared_name_matches_a_wildcard_san() {
        let rules = Accepted::new([], [CommonNameRule::new("node1.cluster.example", [tp("CA")])]);
        let wildcard = facts("W")
            .cn("cluster.example")
            .dns("*.cluster.example")
            .issuer("CA")
            .build();
        assert!(rules.accepts(&wildcard, &trust(&[]), now()));
    }

    #[test]
    fn presentation_matches_the_subject_cn_exactly() {
        let by_cn = PresentBy::CommonNames(vec!["cluster.example"]);
        assert!(by_cn.matches(&facts("A").cn("cluster.example").build()));
        assert!(!by_cn.matches(&facts("B").cn("Cluster.Example").build()));
        assert!(!by_cn.matches(&facts("C").cn("other").dns("cluster.example").build()));
        let wildcard = PresentBy::CommonNames(vec!["*.cluster.example"]);
        assert!(!wildcard.matches(&facts("D").cn("node.cluster.example").build()));
    }

    #[test]
    fn newest_not_before_wins_by_default() {
        let older_longer = facts("A").valid("2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z").build();
        let newer_shorter = facts("B").valid("2026-03-01T00:00:00Z", "2026-12-01T00:00:00Z").build();
        let store = [older_longer.clone(), newer_shorter.clone()];
        let picked = select(&store, SelectionPolicy::NewestNotBefore, now()).unwrap();
        assert_eq!(picked.thumbprint, newer_shorter.thumbprint);
        let picked = select(&store, SelectionPolicy::LatestNotAfter, now()).unwrap();
        assert_eq!(picked.thumbprint, older_longer.thumbprint);
    }

    #[test]
    fn selection_ties_break_on_the_other_date_then_smallest_thumbprint() {
        let a = facts("A").valid("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z").build();
        let b = facts("B").valid("2026-01-01T00:00:00Z", "2027-06-01T00:00:00Z").build();
        let b_twin = facts("C").valid("2026-01-01T00:00:00Z", "2027-06-01T00:00:00Z").build();
        let store = [a, b.clone(), b_twin.clone()];
        let smallest = b.thumbprint.clone().min(b_twin.thumbprint.clone());
        for policy in [SelectionPolicy::NewestNotBefore, SelectionPolicy::LatestNotAfter] {
            assert_eq!(
                select(&store, policy, now()).unwrap().thumbprint,
                smallest,
                "{policy:?}"
            );
        }
        let early = facts("D").valid("2025-12-01T00:00:00Z", "2027-06-01T00:00:00Z").build();
        let late = facts("E").valid("2026-02-01T00:00:00Z", "2027-06-01T00:00:00Z").build();
        let store = [early, late.clone()];
        assert_eq!(
            select(&store, SelectionPolicy::LatestNotAfter, now())
                .unwrap()
                .thumbprint,
            late.thumbprint
        );
    }

    #[test]
    fn selection_skips_expired_not_yet_valid_and_keyless() {
        let expired = facts("A").valid("2026-05-01T00:00:00Z", "2026-05-31T00:00:00Z").build();
        let future = facts("B").valid("2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z").build();
        let keyless = facts("C").valid("2026-05-15T00:00:00Z", "2027-01-01T00:00:00Z");
        let keyless = keyless.key(PrivateKeyState::Missing).build();
        let mismatch = facts("D").valid("2026-05-16T00:00:00Z", "2027-01-01T00:00:00Z");
        let mismatch = mismatch.key(PrivateKeyState::Mismatch).build();
        let good = facts("E").valid("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z").build();
        let store = [expired, future, keyless, mismatch, good.clone()];
        assert_eq!(
            select(&store, SelectionPolicy::NewestNotBefore, now())
                .unwrap()
                .thumbprint,
            good.thumbprint
        );
        assert!(select(&store[..4], SelectionPolicy::NewestNotBefore, now()).is_none());
    }
}
