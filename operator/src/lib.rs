//! certshift: Service Fabric-style certificate declarations for Kubernetes.
//!
//! The core ([`thumbprint`], [`facts`], [`rules`], [`planner`]) is pure: no
//! client, no clock, no async. The binary's subcommands are thin shells over it.

pub mod facts;
pub mod thumbprint;

#[cfg(test)]
pub(crate) mod testing;
