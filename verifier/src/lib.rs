//! Service Fabric's certificate rules as rustls verifiers, built from the
//! files of a certshift revision.
//!
//! A member of a cluster that certshift manages reads two volumes: the
//! presentation Secret (`tls.crt`, `tls.key`) and the validation ConfigMap
//! (`rules.json`, `ca-bundle.crt`, `intermediates.crt`, `crls.pem`). A
//! [`Verifier`] built from the ConfigMap's files admits a peer member when the
//! revision's rules accept its certificate (declared thumbprint; or common
//! name with a pinned direct issuer, or a chain to an anchor; time-valid; not
//! revoked) and a client when it is a member or on the revision's client
//! allow-lists. The `certshift agent` sidecar, the operator's probes and Rust
//! applications all use this one implementation.
//!
//! It depends on rustls (with ring), x509-parser, serde, jiff and the
//! digests: no Kubernetes client, no async runtime, no CLI. It re-exports
//! [`rustls`] and [`jiff`] for the configurations and timestamps of its API.
//!
//! ```
//! use std::sync::Arc;
//! use certshift_verifier::{Identity, Verifier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A member's volumes, as the kubelet mounts them: here a CA and a member
//! // certificate made on the spot, and rules that accept the name
//! // `cluster.example` from that CA (pinned by its thumbprint).
//! # let (ca_pem, leaf_pem, key_pem, ca_thumbprint) = fixtures::member();
//! let rules = format!(
//!     r#"{{"revision": 3,
//!         "accepted": {{"thumbprints": [], "commonNames": [
//!             {{"name": "cluster.example", "issuerThumbprints": ["{ca_thumbprint}"]}}]}},
//!         "clients": {{"thumbprints": [], "commonNames": []}}}}"#
//! );
//! let validation = |key: &str| match key {
//!     "rules.json" => Some(rules.clone().into_bytes()),
//!     "ca-bundle.crt" => Some(ca_pem.clone().into_bytes()),
//!     _ => None, // intermediates.crt, crls.pem: none in this revision
//! };
//! // In a pod: `|key| std::fs::read(Path::new("/etc/certshift").join(key)).ok()`.
//! let verifier = Arc::new(Verifier::from_outputs(validation)?);
//! assert_eq!(verifier.revision(), 3);
//!
//! // Serve mutual TLS and dial peers, presenting the revision's certificate.
//! let identity = Identity::from_pem(leaf_pem.as_bytes(), key_pem.as_bytes())?;
//! let server = Arc::new(verifier.server_config(&identity)?);
//! let client = Arc::new(verifier.client_config(&identity)?);
//!
//! // Two members shake hands (in memory here; a TcpStream in real life).
//! let mut dialer = rustls::ClientConnection::new(client, "member-0".try_into()?)?;
//! let mut listener = rustls::ServerConnection::new(server)?;
//! while dialer.is_handshaking() || listener.is_handshaking() {
//!     let mut wire = Vec::new();
//!     dialer.write_tls(&mut wire)?;
//!     listener.read_tls(&mut wire.as_slice())?;
//!     listener.process_new_packets()?;
//!     let mut wire = Vec::new();
//!     listener.write_tls(&mut wire)?;
//!     dialer.read_tls(&mut wire.as_slice())?;
//!     dialer.process_new_packets()?;
//! }
//! assert!(listener.peer_certificates().is_some(), "the member was admitted");
//!
//! // A malformed revision names the file and what is wrong with it.
//! let broken = Verifier::from_outputs(|key| (key == "rules.json").then(|| b"{".to_vec()));
//! assert!(broken.unwrap_err().to_string().starts_with("rules.json: "));
//! # Ok(()) }
//! # mod fixtures {
//! #     pub fn member() -> (String, String, String, String) {
//! #         use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
//! #         use sha1::Digest as _;
//! #         let mut ca = CertificateParams::new(Vec::new()).unwrap();
//! #         ca.distinguished_name.push(DnType::CommonName, "cluster CA");
//! #         ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! #         let ca_key = KeyPair::generate().unwrap();
//! #         let ca_cert = ca.self_signed(&ca_key).unwrap();
//! #         let mut leaf = CertificateParams::new(vec!["cluster.example".to_owned()]).unwrap();
//! #         leaf.distinguished_name.push(DnType::CommonName, "cluster.example");
//! #         let key = KeyPair::generate().unwrap();
//! #         let leaf = leaf.signed_by(&key, &Issuer::from_params(&ca, &ca_key)).unwrap();
//! #         let thumbprint: String = sha1::Sha1::digest(ca_cert.der()).iter().map(|b| format!("{b:02X}")).collect();
//! #         (ca_cert.pem(), leaf.pem(), key.serialize_pem(), thumbprint)
//! #     }
//! # }
//! ```
//!
//! The modules below are the pure core the verifier is made of, shared with
//! the operator: [`thumbprint`] (thumbprints as people type them), [`names`]
//! (DNS name matching), [`facts`] (certificates and CRLs reduced to facts),
//! [`trust`] (paths to anchors, revocation), [`rules`] (Service Fabric
//! validation and presentation) and [`files`] (what a revision publishes).

pub mod facts;
pub mod files;
pub mod names;
pub mod rules;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod thumbprint;
pub mod trust;
mod verifier;

pub use files::RulesJson;
pub use verifier::{Admitted, Error, Identity, Refusal, Verifier};
/// The rustls and jiff this crate is built with: configurations and
/// timestamps are theirs, so an application uses these versions.
pub use {jiff, rustls};
