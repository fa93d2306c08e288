use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;
use crate::facts::CertificateFacts;

/// Watches one certificate source and keeps an inventory of the instances it has
/// seen, like the Key Vault VM extension's `observedCertificates`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "certshift.io",
    version = "v1alpha1",
    kind = "ObservedCertificate",
    namespaced,
    doc = "Watches one TLS Secret and keeps an inventory of the certificate instances it has held, like the Key Vault VM extension's observedCertificates; declarations name ObservedCertificates as their store.",
    category = "certshift",
    status = "ObservedCertificateStatus",
    shortname = "ocert",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Current","type":"string","jsonPath":".status.current.shortThumbprint"}"#,
    printcolumn = r#"{"name":"Instances","type":"integer","jsonPath":".status.instanceCount"}"#,
    printcolumn = r#"{"name":"Not-After","type":"string","jsonPath":".status.current.notAfter"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCertificateSpec {
    /// Where the certificate comes from.
    pub source: CertificateSource,
    /// How many instances to keep, newest first. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_instances: Option<u32>,
    /// `ExpiringSoon` when the current instance expires within this margin
    /// (Go duration). Default `720h`, Service Fabric's CertificateExpirySafetyMargin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_warning_margin: Option<String>,
    /// A CertificatePolicy the instances are checked against (`Compliant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<LocalObjectReference>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSource {
    /// A `kubernetes.io/tls` Secret in this namespace (`tls.crt`, `tls.key`, optional `ca.crt`).
    pub secret_ref: LocalObjectReference,
}

/// The source's inventory and its conditions (written by certshift).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCertificateStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Synced, Valid, ExpiringSoon, Compliant (with `policyRef`), Reconciling and Stalled.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The instance the source holds now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<CurrentInstance>,
    /// Facts of the instances seen, newest first (never key material).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<CertificateFacts>,
    /// How many instances `instances` holds.
    #[serde(default)]
    pub instance_count: u32,
    /// When the source was last read with a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentInstance {
    /// SHA-1 thumbprint, 40 upper-case hex digits.
    pub thumbprint: String,
    /// The first 8 digits of the thumbprint, for `kubectl get`.
    pub short_thumbprint: String,
    /// The end of the certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
}
