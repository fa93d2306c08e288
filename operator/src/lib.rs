//! certshift: Service Fabric-style certificate declarations for Kubernetes.
//!
//! The core is pure: no client, no clock, no async. Its certificate half —
//! [`thumbprint`], [`names`], [`facts`], [`trust`], [`rules`] and the
//! [`verifier`] (a revision's rules as rustls verifiers, for members and
//! applications) — is the `certshift-verifier` crate, re-exported here under
//! the same paths. Then [`object_names`] and [`duration`], [`revision`],
//! [`crd`] (the API types), [`planner`], [`outputs`] (what members consume),
//! and the controllers' decisions [`observed`], [`declaration`] and
//! [`policy`]. [`controller`] is the operator's I/O shell, [`agent`] the
//! member side's (`certshift agent`) and [`cli`] the commands; both sit on the
//! core and nothing in the core uses them (`tests/modules.rs` checks that the
//! module graph has no cycles).

pub mod agent;
pub mod blocked;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod decision;
pub mod declaration;
pub mod duration;
pub mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod kstatus;
pub mod object_names;
pub mod observed;
pub mod outputs;
pub mod planner;
pub mod policy;
pub mod revision;

// The certificate core and the verifier live in `certshift-verifier`, which
// applications can depend on without the operator; the paths stay these.
/// A revision's rules as rustls verifiers ([`certshift_verifier`]).
pub use certshift_verifier as verifier;
pub use certshift_verifier::{facts, names, rules, thumbprint, trust};

#[cfg(test)]
pub(crate) use certshift_verifier::testing;
