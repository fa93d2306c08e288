//! The files of a revision's validation ConfigMap that the verifier reads:
//! `rules.json` (the rules), and the trust files beside it.

use serde::{Deserialize, Serialize};

use crate::rules::{Accepted, Clients};
use crate::thumbprint::Thumbprint;

/// The validation ConfigMap's keys the verifier reads, beside `rules.json`:
/// the anchors and pinned issuers, and the other CA certificates of the
/// store's paths (never anchors).
pub const TRUST_FILES: [&str; 2] = ["ca-bundle.crt", "intermediates.crt"];
/// The CRLs in force, each signed by a CA of the trust files.
pub const CRLS_FILE: &str = "crls.pem";
pub const RULES_FILE: &str = "rules.json";

/// `rules.json`: the revision's validation rules and client allow-lists,
/// and the certificate members present with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesJson {
    pub revision: u64,
    /// The presented certificate's thumbprint: with it a member holding both
    /// volumes knows which revision it has loaded, though the presentation
    /// Secret is rewritten only when the certificate changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presented: Option<Thumbprint>,
    pub accepted: Accepted,
    pub clients: Clients,
    /// The thumbprints of the certificates of `ca-bundle.crt` that are trust
    /// anchors with this revision (the others are pinned issuers). Empty
    /// when no name is unpinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchors: Option<Vec<Thumbprint>>,
    /// Revoked certificates members still accept with this revision: the one
    /// they are moving away from (the revision's `tolerated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerated: Vec<Thumbprint>,
}
