//! Why nothing can be published: [`Blocked`], a PascalCase [`BlockReason`]
//! (the condition reason users see) and a message naming the field, object
//! or certificate. The spec, the store, the planner, the outputs and the
//! status all say it, so it belongs to none of them.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::facts::Defect;

/// Why nothing can be published. The reason is a condition reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub reason: BlockReason,
    pub message: String,
}

impl Blocked {
    pub fn new(reason: BlockReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BlockReason {
    GoalCertificateNotFound,
    CertificateExpired,
    CertificateNotYetValid,
    PrivateKeyMissing,
    /// Every matching certificate has a defect peers refuse (facts `Defect`).
    InvalidValidityPeriod,
    CertificateIsCA,
    KeyTooWeak,
    UnsupportedKeySize,
    SubjectAlternativeNameMismatch,
    IssuerNotPinned,
    /// The goal's issuer (or a CA on its path) is in neither its chain, the
    /// store's CAs nor the trust bundle.
    ChainIncomplete,
    /// An unpinned name's goal chains to a root that is not an anchor.
    UntrustedRoot,
    /// The goal, or a CA on its path, is revoked by a CRL in force.
    CertificateRevoked,
    /// A CA on the goal's path is expired or not yet valid.
    ChainNotTimeValid,
    ThumbprintNotInStore,
    InvalidThumbprint,
    InvalidCommonName,
    DuplicateCommonName,
    InvalidDeclaration,
    InvalidDuration,
    /// `spec.output.templates` has a bad key or a template that does not compile.
    InvalidTemplate,
    /// `spec.output` asks for something it does not configure (PKCS12 without a password).
    InvalidOutput,
    /// `spec.members` names an endpoint it cannot probe.
    InvalidMembers,
    InvalidEffectiveState,
    /// `spec.trustBundle` names an object or key that does not exist, or
    /// that does not hold a trust bundle certshift can read.
    InvalidTrustBundle,
    /// `spec.revocation.crls` names an object or key that does not exist, or
    /// that does not hold CRLs certshift can read.
    InvalidRevocationList,
    /// A CRL is not signed by a CA certshift knows of its issuer's name.
    CrlIssuerNotFound,
    /// A CRL is past its nextUpdate: revocation status is unknown until a
    /// fresh one is published.
    CrlExpired,
    /// A CRL distribution point could not be fetched (`stalePolicy: Block`).
    CrlUnavailable,
    StoreNotFound,
    /// An ObservedCertificate of the store has not read its source yet.
    StoreNotSynced,
    /// An output the operator would write exists and was not created by it.
    SecretOwnedElsewhere,
    /// Members did not acknowledge a revision within `spec.upgrade.stageTimeout`.
    StageTimeout,
    /// The change did not complete within `spec.upgrade.upgradeTimeout`.
    UpgradeTimeout,
    /// The members were unhealthy under a revision past
    /// `spec.upgrade.healthCheckRetryTimeout`.
    HealthCheckFailed,
    /// A failed change was rolled back to the declaration before it; the
    /// same generation is not tried again.
    RolledBack,
    /// A change failed and going back is no longer possible (the
    /// certificate to go back to is gone, expired or revoked).
    RollbackImpossible,
    /// An endpoint member refused, as a client, the certificate about to be presented.
    PeerRejectsCertificate,
    /// A trust anchor the trust bundle dropped is still needed by the
    /// certificate members present: its removal waits for a renewal.
    TrustAnchorInUse,
    /// The planner's own check of the invariant failed: a bug, never published.
    UnsafePlan,
}

impl From<Defect> for BlockReason {
    fn from(defect: Defect) -> Self {
        match defect {
            Defect::InvalidValidityPeriod => BlockReason::InvalidValidityPeriod,
            Defect::CertificateIsCA => BlockReason::CertificateIsCA,
            Defect::KeyTooWeak { .. } => BlockReason::KeyTooWeak,
            Defect::UnsupportedKeySize { .. } => BlockReason::UnsupportedKeySize,
            Defect::SubjectAlternativeNameMismatch => BlockReason::SubjectAlternativeNameMismatch,
        }
    }
}

impl BlockReason {
    /// A mistake in the spec itself: nothing but an edit of the spec can
    /// clear it, so the controller waits for one instead of looking again.
    pub fn needs_spec_change(self) -> bool {
        matches!(
            self,
            BlockReason::InvalidThumbprint
                | BlockReason::InvalidCommonName
                | BlockReason::DuplicateCommonName
                | BlockReason::InvalidDeclaration
                | BlockReason::InvalidDuration
                | BlockReason::InvalidTemplate
                | BlockReason::InvalidMembers
        )
    }
}

impl BlockReason {
    /// Only a person can clear it: a spec to edit, a certificate to replace, a
    /// peer to reconfigure, a stuck member to look at (kstatus `Stalled`). The
    /// others may clear by themselves as what the spec names appears or syncs,
    /// e.g. a store created in the same `kubectl apply`; the declaration says
    /// so for a grace period after its creation, then holds them for a person
    /// too (see `declaration::STORE_SYNC_GRACE`), except a certificate not yet
    /// valid, which time alone clears.
    pub fn needs_a_person(self) -> bool {
        !matches!(
            self,
            BlockReason::StoreNotFound
                | BlockReason::StoreNotSynced
                | BlockReason::CrlUnavailable
                | BlockReason::InvalidTrustBundle
                | BlockReason::GoalCertificateNotFound
                | BlockReason::ThumbprintNotInStore
                | BlockReason::CertificateNotYetValid
        )
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
