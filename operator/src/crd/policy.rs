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
    status = "CertificatePolicyStatus",
    shortname = "cpol",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".spec.secretName"}"#,
    printcolumn = r#"{"name":"Not-After","type":"string","jsonPath":".status.notAfter"}"#,
    printcolumn = r#"{"name":"Renewal","type":"string","jsonPath":".status.renewalTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePolicySpec {
    /// The `kubernetes.io/tls` Secret the certificate is issued into (with `ca.crt`).
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
    /// `serverAuth`, `clientAuth`, `codeSigning`, `emailProtection`, `timeStamping`, `ocspSigning`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extended_key_usages: Vec<String>,
    /// `digitalSignature`, `keyEncipherment`, `keyAgreement`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_usages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyParameters>,
    /// Lifetime of an issued certificate (Go duration). Default `2160h` (90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<String>,
    /// When to renew: one of the two triggers. Default 80 % of the lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_action: Option<LifetimeAction>,
    pub issuer: IssuerReference,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizational_units: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provinces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub localities: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyParameters {
    /// `ECDSA` (P-256, P-384), `RSA` (2048, 3072, 4096) or `Ed25519`. Default `ECDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Exactly one of `selfSigned` and `ca`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signed: Option<SelfSignedIssuer>,
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_thumbprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Timestamp>,
    /// How many certificates this policy has issued.
    #[serde(default)]
    pub revision: u64,
    /// Consecutive failed issuance attempts (kept across restarts for backoff).
    #[serde(default)]
    pub failed_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Timestamp>,
}
