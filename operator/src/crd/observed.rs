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
    status = "ObservedCertificateStatus",
    shortname = "ocert",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Current","type":"string","jsonPath":".status.current.shortThumbprint"}"#,
    printcolumn = r#"{"name":"Instances","type":"integer","jsonPath":".status.instanceCount"}"#,
    printcolumn = r#"{"name":"Not-After","type":"string","jsonPath":".status.current.notAfter"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCertificateSpec {
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCertificateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<CurrentInstance>,
    /// Facts of the instances seen, newest first (never key material).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<CertificateFacts>,
    #[serde(default)]
    pub instance_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentInstance {
    pub thumbprint: String,
    pub short_thumbprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
}
