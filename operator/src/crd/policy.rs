use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// Issues and renews a certificate into a TLS Secret, like a Key Vault
/// certificate policy (subject, SANs, key, EKUs, validity, lifetime action).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "certshift.io",
    version = "v1alpha1",
    kind = "CertificatePolicy",
    namespaced,
    doc = "Issues and renews a certificate into a TLS Secret, like a Key Vault certificate policy (subject, SANs, key, extended key usages, validity, lifetime action).",
    category = "certshift",
    status = "CertificatePolicyStatus",
    shortname = "cpol",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretName"}"#,
    printcolumn = r#"{"name":"Not-After","type":"string","jsonPath":".status.notAfter"}"#,
    printcolumn = r#"{"name":"Renewal","type":"string","jsonPath":".status.renewalTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePolicySpec {
    /// The `kubernetes.io/tls` Secret the certificate is issued into (with `ca.crt`).
    pub secret_name: String,
    /// The subject distinguished name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// DNS subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// IP address subject alternative names (IPv4 or IPv6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// URI subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
    /// `serverAuth`, `clientAuth`, `codeSigning`, `emailProtection`, `timeStamping`, `ocspSigning`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "extended_key_usages_schema")]
    pub extended_key_usages: Vec<String>,
    /// `digitalSignature`, `keyEncipherment`, `keyAgreement`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "key_usages_schema")]
    pub key_usages: Vec<String>,
    /// The private key: algorithm, size, and whether renewals keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyParameters>,
    /// Lifetime of an issued certificate (Go duration). Default `2160h` (90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<String>,
    /// When to renew: one of the two triggers. Default 80 % of the lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_action: Option<LifetimeAction>,
    /// Who signs the certificate: exactly one of `selfSigned` and `ca`.
    pub issuer: IssuerReference,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// The subject common name (CN), without `CN=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Organization (O) attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    /// Organizational unit (OU) attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizational_units: Vec<String>,
    /// Country (C) attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
    /// State or province (ST) attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provinces: Vec<String>,
    /// Locality (L) attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub localities: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyParameters {
    /// `ECDSA` (P-256, P-384), `RSA` (2048, 3072, 4096) or `Ed25519`. Default `ECDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ECDSA", "RSA", "Ed25519"]))]
    pub algorithm: Option<String>,
    /// Curve or modulus size in bits. Default 256 for ECDSA, 2048 for RSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// Keep the private key across renewals (no re-key).
    #[serde(default)]
    pub reuse: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeAction {
    /// Renew when this share of the lifetime (1–99) has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at_percentage_lifetime: Option<u8>,
    /// Renew this many days before notAfter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_before_expiry: Option<u32>,
}

/// The extended key usages a policy can ask for, by their short names.
pub const EXTENDED_KEY_USAGES: [&str; 6] = [
    "serverAuth",
    "clientAuth",
    "codeSigning",
    "emailProtection",
    "timeStamping",
    "ocspSigning",
];
/// The key usages a policy can ask for.
pub const KEY_USAGES: [&str; 7] = [
    "digitalSignature",
    "contentCommitment",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "crlSign",
];

// Strings (not Rust enums) so an object stored before a name was added still
// reads; the schema's enums have the API server refuse unknown names.
fn extended_key_usages_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": "string", "enum": EXTENDED_KEY_USAGES}})
}

fn key_usages_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items": {"type": "string", "enum": KEY_USAGES}})
}

/// Exactly one of `selfSigned` and `ca`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerReference {
    /// The certificate signs itself (`{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signed: Option<SelfSignedIssuer>,
    /// A CA whose certificate and key are in a TLS Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaIssuer>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SelfSignedIssuer {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaIssuer {
    /// A TLS Secret holding the CA certificate and key.
    pub secret_ref: LocalObjectReference,
}

/// The issued certificate, the renewal schedule and the conditions (written by certshift).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Issuing, Reconciling and Stalled.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// SHA-1 thumbprint of the certificate in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_thumbprint: Option<String>,
    /// notBefore of the certificate in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// notAfter of the certificate in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    /// When the certificate will be renewed (`lifetimeAction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Timestamp>,
    /// How many certificates this policy has issued.
    #[serde(default)]
    pub revision: u64,
    /// Consecutive failed issuance attempts (kept across restarts for backoff).
    #[serde(default)]
    pub failed_attempts: u32,
    /// When issuance last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Timestamp>,
    /// The CA Secret's resourceVersion at the last failed attempt (`-` when
    /// it did not exist): a CA Secret that differs now is tried at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_issuer_version: Option<String>,
}
