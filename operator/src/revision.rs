//! A revision: what members are told at one point of a staged upgrade (what
//! to present, what to accept), and the stage and kind of change it belongs
//! to. The planner makes them, the outputs carry them, the CRD status shows them.

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{Accepted, Clients};
use crate::thumbprint::Thumbprint;
use crate::trust::TrustBundle;

/// The stage a revision belongs to. Conversion from thumbprint to common name
/// uses the first three, in order; other changes widen, present, then narrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Stage {
    /// The goal certificate is accepted by thumbprint and then presented.
    AddSecondary,
    /// Common names are accepted, then the thumbprints are dropped.
    SwitchToCommonName,
    /// The common names are narrowed to the pinned issuers.
    PinIssuers,
    /// Validation accepts both the old and the new presented certificate.
    WidenValidation,
    /// Members present the new certificate.
    SwitchPresentation,
    /// Validation drops what is no longer declared.
    NarrowValidation,
    /// No declaration change: a newer acceptable instance is presented.
    Rollover,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a revision changes: never both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Change {
    Validation,
    Presentation,
}

/// Why a revision exists when the declaration did not ask for it: what
/// members trust changed under them, and they are told in a revision of
/// its own (`status.upgrade.plan[].cause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Cause {
    /// `spec.trustBundle` gained or lost anchors (or intermediates).
    TrustBundleChanged,
    /// The CRLs in force changed.
    RevocationChanged,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What members are told at one point: what to present and what to accept.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct State {
    pub presented: Thumbprint,
    pub accepted: Accepted,
}

/// Whether these rules trust anchors at all: some name, of members or
/// clients, is unpinned.
pub fn trusts_anchors(accepted: &Accepted, clients: &Clients) -> bool {
    accepted.common_names.iter().any(|r| !r.is_pinned())
        || clients.common_names.iter().any(|c| c.issuer_thumbprints.is_empty())
}

/// One published (or to be published) state. Revision 0 of a plan is the
/// effective state; the last is the desired one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u64,
    pub stage: Option<Stage>,
    pub change: Option<Change>,
    pub presented: Thumbprint,
    pub accepted: Accepted,
    /// Client allow-lists in force with this revision (validation, like `accepted`).
    #[serde(default, skip_serializing_if = "Clients::is_empty")]
    pub clients: Clients,
    /// Revoked certificates this revision still accepts: the one members are
    /// moving away from, while it or the revision before presents it
    /// (validation, like `accepted`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerated: Vec<Thumbprint>,
    /// The trust anchors this revision trusts (validation): the trust
    /// bundle's, staged (docs/trust.md); empty when no name is unpinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anchors: Vec<Thumbprint>,
    /// Why the revision exists, when the declaration did not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

impl Revision {
    /// Whether the revision trusts anchors at all: some name, of members or
    /// clients, is unpinned. Otherwise the trust bundle's anchors judge nobody.
    pub fn trusts_anchors(&self) -> bool {
        trusts_anchors(&self.accepted, &self.clients)
    }

    /// What the revision judges with: `trust` with the revision's own
    /// anchors, when it trusts anchors at all (a trust bundle changes in stages).
    pub fn judging_by<'a>(&self, trust: &'a TrustBundle) -> Cow<'a, TrustBundle> {
        if self.trusts_anchors() && trust.anchors().ne(self.anchors.iter()) {
            Cow::Owned(trust.with_anchors(&self.anchors))
        } else {
            Cow::Borrowed(trust)
        }
    }

    pub fn state(&self) -> State {
        State {
            presented: self.presented.clone(),
            accepted: self.accepted.clone(),
        }
    }
}
