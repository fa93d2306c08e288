//! certshift: Service Fabric-style certificate declarations for Kubernetes.
//!
//! The core is pure: no client, no clock, no async. Its leaves are
//! [`thumbprint`], [`names`] and [`duration`]; then [`facts`] (certificates
//! reduced to facts), [`rules`] (Service Fabric validation and presentation),
//! [`revision`], [`crd`] (the API types), [`planner`], [`outputs`] (what members
//! consume), and the controllers' decisions [`observed`], [`declaration`] and
//! [`policy`], and [`verifier`] (a revision's rules as rustls verifiers, for
//! members and applications). [`controller`] is the operator's I/O shell,
//! [`agent`] the member side's (`certshift agent`) and [`cli`] the commands; both
//! sit on the core and nothing in the core uses them (`tests/modules.rs`
//! checks that the module graph has no cycles).

pub mod agent;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod declaration;
pub mod duration;
pub mod events;
pub mod facts;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod kstatus;
pub mod names;
pub mod object_names;
pub mod observed;
pub mod outputs;
pub mod planner;
pub mod policy;
pub mod revision;
pub mod rules;
pub mod thumbprint;
pub mod trust;
pub mod verifier;

#[cfg(test)]
pub(crate) mod testing;
