//! certshift: Service Fabric-style certificate declarations for Kubernetes.
//!
//! The core ([`thumbprint`], [`facts`], [`rules`], [`planner`]) is pure: no
//! client, no clock, no async. The binary's subcommands are thin shells over it.

pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod declaration;
pub mod duration;
pub mod facts;
#[doc(hidden)]
pub mod fuzzing;
pub mod observed;
pub mod outputs;
pub mod planner;
pub mod policy;
pub mod rules;
pub mod thumbprint;

#[cfg(test)]
pub(crate) mod testing;
