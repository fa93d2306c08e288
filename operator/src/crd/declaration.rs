use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::KeySelector;
use crate::revision::{Cause, Change, Stage};
use crate::rules::SelectionPolicy;

/// The certificates a clustered service's members present and accept, declared
/// as in a Service Fabric cluster manifest. The spec is the desired end state;
/// certshift walks the members there in staged upgrades.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "certshift.io",
    version = "v1alpha1",
    kind = "ClusterCertificateDeclaration",
    namespaced,
    doc = "A clustered service's certificate declaration, as in a Service Fabric cluster manifest: the certificates its members present and accept, by thumbprint or by common name with pinned issuers. The spec is the desired end state; certshift walks the members there in staged upgrades and reports the declaration in force in status.",
    category = "certshift",
    status = "ClusterCertificateDeclarationStatus",
    shortname = "ccd",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Declared-By","type":"string","jsonPath":".status.declaredBy"}"#,
    printcolumn = r#"{"name":"Stage","type":"string","jsonPath":".status.upgrade.stage"}"#,
    printcolumn = r#"{"name":"Presenting","type":"string","jsonPath":".status.presenting.shortThumbprint"}"#,
    printcolumn = r#"{"name":"Members","type":"string","jsonPath":".status.members.summary"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.presenting.notAfter"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCertificateDeclarationSpec {
    /// Declaration by instance (Service Fabric `certificate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateThumbprints>,
    /// Declaration by class (Service Fabric `certificateCommonNames`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_common_names: Option<CertificateCommonNames>,
    /// Where the members' certificates come from (a node's certificate store).
    #[serde(default)]
    pub store: CertificateStore,
    /// The trust anchors unpinned common names must chain to. CA
    /// certificates in the store's chains only help build paths; they are
    /// anchors only with `includeStoreCAs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<TrustBundleSource>,
    /// Certificate revocation lists in force: a revoked goal is never
    /// presented, a revoked certificate in use is rotated away from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// How long before a certificate in use expires `ExpiringSoon` warns
    /// (Service Fabric's CertificateExpirySafetyMargin): a Go duration, 720h
    /// (30 days) by default. It covers the presented certificate and its
    /// CAs, accepted thumbprints, pinned issuers and client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_warning: Option<String>,
    /// Client certificates accepted by thumbprint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificate_thumbprints: Vec<ClientCertificateThumbprint>,
    /// Client certificates accepted by common name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificate_common_names: Vec<ClientCertificateCommonName>,
    /// Who must acknowledge a revision before the next is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Members>,
    /// How revisions are paced and checked: each revision's health check
    /// (wait, stable duration, retry timeout, unhealthy members allowed),
    /// the stage and whole-change timeouts, what a failure does (rollback
    /// or hold), pause, presentation selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradePolicy>,
    /// Extra outputs for consumers that are not PEM-native.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Extra forms of the presented certificate in the presentation Secret:
    /// `DER` (`tls.cer`, the public certificate, e.g. for an HPC Pack
    /// management-certificate upload), `PKCS12` (`tls.pfx`, key and chain, for
    /// Windows stores and Kestrel; needs `pkcs12.passwordSecretRef`),
    /// `CombinedPEM` (`tls-combined.pem`, key then chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<OutputFormat>,
    /// Settings of the `PKCS12` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs12: Option<Pkcs12Output>,
    /// Consumer configuration rendered into the validation ConfigMap with each
    /// revision (minijinja templates; see docs/outputs.md for the variables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<ConfigTemplate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OutputFormat {
    #[serde(rename = "DER")]
    Der,
    #[serde(rename = "PKCS12")]
    Pkcs12,
    #[serde(rename = "CombinedPEM")]
    CombinedPem,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pkcs12Output {
    /// The Secret key holding the PKCS#12 password (key defaults to `password`).
    pub password_secret_ref: KeySelector,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigTemplate {
    /// The ConfigMap key the rendered text goes to.
    pub key: String,
    /// A minijinja template; see docs/outputs.md for the variables.
    pub template: String,
}

/// Service Fabric `certificate`: a primary and an optional secondary thumbprint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateThumbprints {
    /// SHA-1 (40 hex digits) or SHA-256 (64) thumbprint of the primary certificate; spaces, colons and pasted invisible marks are ignored.
    pub thumbprint: String,
    /// A second certificate members accept and may present (Service Fabric `thumbprintSecondary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint_secondary: Option<String>,
}

/// Service Fabric `certificateCommonNames`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateCommonNames {
    /// The accepted common names, each with its pinned issuers; no two alike.
    #[serde(default)]
    pub common_names: Vec<CommonNameDeclaration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonNameDeclaration {
    /// Subject common name, without `CN=`.
    pub certificate_common_name: String,
    /// Direct issuer thumbprints, comma-separated; omitted means "chains to the trust bundle" (omit it rather than write "": kube-apiserver v1.20 built from Debian's source stores "" as null and refuses it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_issuer_thumbprint: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStore {
    /// Names of ObservedCertificates in this namespace (at least one).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub observed_certificates: Vec<String>,
}

/// Trust anchors: a PEM bundle from a ConfigMap or a Secret (key defaults
/// to `ca.crt`, as trust-manager writes it), and, opted in, the store's `ca.crt`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustBundleSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeySelector>,
    /// Also trust, as anchors, the CA certificates in the `ca.crt` of the
    /// store's Secrets. Off by default: whoever can write a store Secret
    /// could then make any certificate trusted for an unpinned name.
    #[serde(default, rename = "includeStoreCAs", skip_serializing_if = "std::ops::Not::not")]
    pub include_store_cas: bool,
}

/// Where the CRLs in force come from (offline: read from the cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// ConfigMap or Secret keys holding CRLs (PEM `X509 CRL` blocks or one
    /// DER CRL), each issued and signed by a CA certshift knows (the trust
    /// bundle's, or one in the store's chains).
    #[serde(default)]
    pub crls: Vec<CrlSource>,
    /// Also fetch, over HTTP, the CRLs the store's certificates and their
    /// CAs name in their CRL distribution points (opt-in: off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_points: Option<DistributionPoints>,
}

/// Fetching CRLs from the certificates' distribution points.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistributionPoints {
    /// Fetch them (`http://` URIs only, as CRLs are published).
    #[serde(default)]
    pub enabled: bool,
    /// How often each CRL is fetched again: a Go duration, 1h by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// When a CRL cannot be fetched, or is past its nextUpdate: `Block`
    /// (default) holds new revisions until a current CRL is had; `UseLast`
    /// keeps the last CRL fetched in force (none yet: nothing revoked from
    /// that point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_policy: Option<StalePolicy>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailureAction {
    #[default]
    Rollback,
    Manual,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StalePolicy {
    #[default]
    Block,
    UseLast,
}

/// One ConfigMap or Secret key holding CRLs; the key defaults to `ca.crl`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrlSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeySelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateThumbprint {
    /// The client certificate's SHA-1 or SHA-256 thumbprint.
    pub certificate_thumbprint: String,
    /// The client has admin rights (Service Fabric `isAdmin`); published in `rules.json`.
    #[serde(default)]
    pub is_admin: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateCommonName {
    /// The client certificate's subject common name, without `CN=`.
    pub certificate_common_name: String,
    /// Direct issuer thumbprints, comma-separated; omitted means "chains to the trust bundle" (omit it rather than write "": kube-apiserver v1.20 built from Debian's source stores "" as null and refuses it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_issuer_thumbprint: String,
    /// The client has admin rights (Service Fabric `isAdmin`); published in `rules.json`.
    #[serde(default)]
    pub is_admin: bool,
}

/// Members that must acknowledge each revision (any combination; none means
/// a revision is complete as soon as it is published).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    /// Pods that report the revision they loaded in the annotation
    /// `certshift.io/observed-revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<LabelSelector>,
    /// Workloads whose pod template is stamped with each revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadReference>,
    /// TLS endpoints whose presented certificate is probed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
}

/// The workload kinds a declaration can name as members.
pub const WORKLOAD_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReference {
    /// `Deployment`, `StatefulSet` or `DaemonSet` (apps/v1), in this namespace.
    // A string here, so an object stored under an older schema still reads;
    // the schema's enum has the API server refuse other kinds.
    #[schemars(extend("enum" = ["Deployment", "StatefulSet", "DaemonSet"]))]
    pub kind: String,
    /// The workload's name.
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `host:port`; or set `service`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The TLS server name; default the host of `address`, or `<service>.<namespace>.svc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// A Service in this namespace: every ready address of its EndpointSlices is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceEndpoint>,
    /// Ask over HTTP after the handshake. Servers that judge a client
    /// certificate after the handshake (nginx's `ssl_verify_client`, many
    /// HTTP frameworks) answer a refused one with an HTTP error, not a TLS
    /// alert: the pre-flight then sends `GET <path>` and takes 400, 403, 495
    /// and 496 for a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetProbe>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetProbe {
    /// The path to request, e.g. `/healthz`.
    pub path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEndpoint {
    /// The Service's name.
    pub name: String,
    /// The endpoint port by number (as in the EndpointSlices)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// ...or by name; with neither, the slices' only port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePolicy {
    /// Deprecated alias of `healthCheckStableDuration` (used when that is
    /// unset; a Warning event says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_soak: Option<String>,
    /// After every member acknowledged a revision, how long to wait before
    /// judging their health (Go duration, e.g. `30s`; Service Fabric's
    /// HealthCheckWaitDuration). Default `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_wait_duration: Option<String>,
    /// How long the members must stay healthy before the next revision is
    /// published (Service Fabric's HealthCheckStableDuration; supersedes
    /// `minSoak`). Default `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_stable_duration: Option<String>,
    /// How long a failing health check is retried before the revision's
    /// health check has failed (`Stalled/HealthCheckFailed`; Service
    /// Fabric's HealthCheckRetryTimeout). Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_retry_timeout: Option<String>,
    /// How long a revision may wait for its members' acknowledgements before
    /// it is `Stalled/StageTimeout` (Service Fabric's UpgradeDomainTimeout).
    /// Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_timeout: Option<String>,
    /// How long the whole change (from its first revision to the last) may
    /// take before it is `Stalled/UpgradeTimeout` (Service Fabric's
    /// UpgradeTimeout). Default `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_timeout: Option<String>,
    /// How many members may be unhealthy while the change goes on: a number,
    /// or a percentage of the members (rounded down), like a Deployment's
    /// `maxUnavailable` (Service Fabric's MaxPercentUnhealthyNodes). Only
    /// failures a revision introduced count. Default `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unhealthy_members: Option<IntOrString>,
    /// What a failed health check or timeout does: `Rollback` (default)
    /// plans back to the declaration in force before the change and ends
    /// `Stalled/RolledBack`; `Manual` holds (`Stalled/HealthCheckFailed`)
    /// for a person (Service Fabric's FailureAction).
    #[serde(default)]
    pub failure_action: FailureAction,
    /// Hold the next publication.
    #[serde(default)]
    pub paused: bool,
    /// How a member picks among several matching certificates:
    /// `NewestNotBefore` (default; Service Fabric 7.2 CU4 and later) or
    /// `LatestNotAfter` (before 7.2 CU4).
    #[serde(default)]
    pub selection: SelectionPolicy,
}

/// The declaration in force, the upgrade toward the spec, and its conditions (written by certshift).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCertificateDeclarationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, Progressing, Blocked, MembersConverged, the conversion milestones, ExpiringSoon and SanOverlap.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// `Thumbprint`, `CommonName` or `ThumbprintAndCommonName`: how the
    /// effective declaration names the cluster certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Thumbprint", "CommonName", "ThumbprintAndCommonName"]))]
    pub declared_by: Option<String>,
    /// What members are told now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveDeclaration>,
    /// The staged upgrade: stage, last revision, plan and gate times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// How many members acknowledged the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MembersStatus>,
    /// The certificate members present now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presenting: Option<PresentingStatus>,
    /// Every certificate the revision in force relies on that certshift
    /// knows, with its role and notAfter (what `ExpiringSoon` and the
    /// expiry metric watch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates_in_use: Vec<CertificateInUse>,
}

/// A certificate the revision in force relies on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInUse {
    /// Its role: `Presented`, `PresentedChain` (a CA on the presented
    /// certificate's path), `AcceptedThumbprint`, `PinnedIssuer` or `ClientThumbprint`.
    #[schemars(extend("enum" = ["Presented", "PresentedChain", "AcceptedThumbprint", "PinnedIssuer", "ClientThumbprint"]))]
    pub role: String,
    /// SHA-1 thumbprint, 40 upper-case hex digits.
    pub thumbprint: String,
    /// Subject common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// The end of the certificate's validity.
    pub not_after: Timestamp,
}

/// The declaration in force, in the spec's Service Fabric shape, plus the
/// certificate members present under it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveDeclaration {
    /// The revision members are told now (0 before the first).
    #[serde(default)]
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateThumbprints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_common_names: Option<CertificateCommonNames>,
    /// SHA-1 thumbprint of the certificate members present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presented: Option<String>,
    /// SHA-1 thumbprints of the trust anchors members trust now: the trust
    /// bundle's as of the last revision (a bundle changes in stages). Empty
    /// when no name is unpinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchors: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// The stage of the revision published last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Why the revision published last exists, when the declaration did not
    /// ask for it: `TrustBundleChanged` or `RevocationChanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// The revision published last.
    #[serde(default)]
    pub revision: u64,
    /// The revisions still to publish, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedRevision>,
    /// When the change under way published its first revision (`upgradeTimeout` counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_time: Option<Timestamp>,
    /// When the current revision was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_time: Option<Timestamp>,
    /// When every member had acknowledged the current revision (the health check counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_time: Option<Timestamp>,
    /// The health check of the current revision, once its members acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// The declaration in force before the change under way began: what a
    /// rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<UpgradeOrigin>,
    /// A rollback of this generation's change, under way or done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,
    /// The values of `certshift.io/retry` and `certshift.io/action` acted on
    /// already: each is acted on once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acted_on: Vec<String>,
}

/// The declaration in force before a change began, in the spec's shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeOrigin {
    /// The revision that was in force.
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateThumbprints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_common_names: Option<CertificateCommonNames>,
    /// The client allow-list by thumbprint that was in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificate_thumbprints: Vec<ClientCertificateThumbprint>,
    /// The client allow-list by common name that was in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificate_common_names: Vec<ClientCertificateCommonName>,
}

/// A rollback (Service Fabric's FailureAction `Rollback`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// `RollingBack`, then `RolledBack`.
    pub state: String,
    /// The generation whose change is rolled back.
    pub generation: i64,
    /// The desired declaration rolled back from (a digest of its accepted
    /// certificates and client allow-lists): it is not tried again until
    /// the spec asks for something else, or `certshift.io/retry` is set.
    pub desired: String,
    /// The revision whose failure started the rollback.
    pub failed_revision: u64,
    /// Why: `HealthCheckFailed`, `StageTimeout` or `UpgradeTimeout`.
    pub reason: String,
    /// The failure, with the members and the evidence.
    pub message: String,
    /// When the rollback began.
    pub started_time: Timestamp,
}

/// The health check of a revision (Service Fabric's monitored upgrade).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// `Waiting` (healthCheckWaitDuration), `Soaking` (healthy, for
    /// healthCheckStableDuration), `Healthy`, `Retrying` (unhealthy, within
    /// healthCheckRetryTimeout) or `Failed`.
    pub state: String,
    /// Since when the members have been healthy, in this streak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_time: Option<Timestamp>,
    /// Since when the health check has been failing, in this streak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_time: Option<Timestamp>,
    /// The members unhealthy now, and why (what their agents report).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unhealthy: Vec<UnhealthyMember>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnhealthyMember {
    /// `pod/<name>`, `endpoint/<address>`, `deployment/<name>`, …
    pub member: String,
    /// `CertificateRejectedByPeers`, `RejectedPeers`, `ReloadFailed`,
    /// `NotReported` (no health for this revision yet), `NotAtRevision`.
    pub reason: String,
    /// What the member's agent (or the probe) says.
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRevision {
    /// The revision number.
    pub revision: u64,
    /// The stage the revision belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// `Validation` or `Presentation`: what the revision changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// Why the revision exists when the declaration did not change:
    /// `TrustBundleChanged` or `RevocationChanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// SHA-1 thumbprint members present at this revision.
    pub presented: String,
    /// `Published`, `Acknowledged` or `Pending`.
    #[schemars(extend("enum" = ["Published", "Acknowledged", "Pending"]))]
    pub state: String,
    /// Whether a rollback from this revision to the declaration in force
    /// before the change is still possible (false: past the point of no
    /// return, e.g. the old certificate is gone, expired or revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_possible: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembersStatus {
    /// Members that must acknowledge each revision.
    pub total: u32,
    /// Members that acknowledged the current revision.
    pub converged: u32,
    /// Members that have not acknowledged the current revision, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub laggards: Vec<String>,
    /// `converged/total`, for `kubectl get`.
    pub summary: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresentingStatus {
    /// SHA-1 thumbprint, 40 upper-case hex digits.
    pub thumbprint: String,
    /// The first 8 digits of the thumbprint, for `kubectl get`.
    pub short_thumbprint: String,
    /// Subject common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// The end of the certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
}
