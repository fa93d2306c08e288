//! What members consume (docs/outputs.md): the `<name>-presentation` Secret and the
//! `<name>-validation` ConfigMap, as data. Building and reading them back are
//! both pure, so the operator can resume from its outputs after a restart and
//! the end-to-end judge can read exactly what members read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde::Serialize;

use crate::crd::ClusterCertificateDeclaration;
use crate::facts::CertificateFacts;
use crate::object_names::{derived_name, label_value, owner_annotation};
use crate::revision::{Cause, Change, Revision, Stage};
use crate::rules::Clients;
use crate::thumbprint::Thumbprint;
use crate::trust::{PathEnd, TrustBundle};

pub const REVISION_ANNOTATION: &str = "certshift.io/revision";
pub const THUMBPRINT_ANNOTATION: &str = "certshift.io/thumbprint";
pub const STAGE_ANNOTATION: &str = "certshift.io/stage";
/// On the presentation Secret: ties its `tls.pfx` to the password it was
/// encrypted with (SHA-256 of the password and the file), so a new password
/// makes a new file and an unchanged one keeps the salted file as it is.
pub const PKCS12_DIGEST_ANNOTATION: &str = "certshift.io/pkcs12-digest";
/// `Validation` or `Presentation`: what the revision changes.
pub const CHANGE_ANNOTATION: &str = "certshift.io/change";
/// Why the revision exists, when the declaration did not ask for it.
pub const CAUSE_ANNOTATION: &str = "certshift.io/cause";
/// Written by members (a reload hook or sidecar) on their Pod.
pub const OBSERVED_REVISION_ANNOTATION: &str = "certshift.io/observed-revision";
/// Written by the agent on its Pod: its health verdict ([`ReportedHealth`]
/// as JSON), the Pod condition `certshift.io/Healthy` mirrored into the
/// metadata the operator's pod cache holds.
pub const HEALTH_ANNOTATION: &str = "certshift.io/health";

/// A member's health as its agent reports it in [`HEALTH_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportedHealth {
    /// The revision the verdict is about.
    pub revision: u64,
    pub healthy: bool,
    /// The condition's reason (`Healthy`, `CertificateRejectedByPeers`, …).
    pub reason: String,
    pub message: String,
}
/// On every object the operator creates, with the owner's name.
pub const DECLARATION_LABEL: &str = "certshift.io/declaration";
pub const OBSERVED_CERTIFICATE_LABEL: &str = "certshift.io/observed-certificate";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "certshift";

/// `<declaration>-presentation`, shortened to fit when the name is long
/// ([`crate::object_names`]).
pub fn presentation_name(declaration: &str) -> String {
    derived_name(declaration, "-presentation")
}

pub fn validation_name(declaration: &str) -> String {
    derived_name(declaration, "-validation")
}

pub fn store_name(observed: &str) -> String {
    derived_name(observed, "-store")
}

pub use certshift_verifier::files::RulesJson;

/// A Secret's keys, `stringData` over `data` as the API server merges them.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect();
    for (key, value) in secret.string_data.iter().flatten() {
        data.insert(key.clone(), value.as_bytes().to_vec());
    }
    data
}

/// The certificate and key material of the presented instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentedMaterial {
    /// Leaf and chain, PEM.
    pub tls_crt: String,
    pub tls_key: String,
    /// The issuers (the instance's `ca.crt`, else its chain's CAs), PEM.
    pub ca_crt: String,
}

/// The presentation Secret's extra keys for `formats`: `tls.cer` (DER),
/// `tls.pfx` (PKCS#12, encrypted with `password`), `tls-combined.pem`.
pub fn format_data(
    material: &PresentedMaterial,
    formats: &[crate::crd::OutputFormat],
    password: Option<&str>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use crate::crd::OutputFormat;
    let chain: Vec<Vec<u8>> = pem::parse_many(&material.tls_crt)
        .map_err(|err| format!("tls.crt: {err}"))?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| block.contents().to_vec())
        .collect();
    let leaf = chain.first().ok_or("tls.crt holds no certificate")?;
    let mut data = BTreeMap::new();
    for format in formats {
        match format {
            OutputFormat::Der => {
                data.insert("tls.cer".to_owned(), leaf.clone());
            }
            OutputFormat::CombinedPem => {
                let combined = format!("{}{}", material.tls_key.trim_end().to_owned() + "\n", material.tls_crt);
                data.insert("tls-combined.pem".to_owned(), combined.into_bytes());
            }
            OutputFormat::Pkcs12 => {
                let password = password.ok_or("PKCS12 needs a password")?;
                data.insert("tls.pfx".to_owned(), pkcs12(&material.tls_key, &chain, password)?);
            }
        }
    }
    Ok(data)
}

/// The digest [`PKCS12_DIGEST_ANNOTATION`] carries for a file and its password.
pub fn pkcs12_digest(password: &str, pfx: &[u8]) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(password.as_bytes());
    hash.update([0]);
    hash.update(pfx);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A PKCS#12 file (PBES2/AES-256, HMAC-SHA256) with the key and its chain.
fn pkcs12(key_pem: &str, chain: &[Vec<u8>], password: &str) -> Result<Vec<u8>, String> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    // PKCS#1 and SEC1 keys are re-encoded as PKCS#8, which PKCS#12 carries.
    let key = crate::policy::issue::load_key(key_pem)?;
    let key = PrivateKey::from_der(&key.serialize_der()).map_err(|err| format!("tls.key: {err}"))?;
    let certificates = chain
        .iter()
        .map(|der| Certificate::from_der(der).map_err(|err| format!("tls.crt: {err}")))
        .collect::<Result<Vec<_>, _>>()?;
    let local_key_id = <sha1::Sha1 as sha1::Digest>::digest(&chain[0]).to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        "certshift",
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certificates)),
    );
    store.writer(password).write().map_err(|err| format!("PKCS#12: {err}"))
}

/// Whether an object was created by certshift for the owner with `uid`: it
/// carries our label and an owner reference to it. Anything else is never written.
pub fn is_owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY);
    labelled && !uid.is_empty() && meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// The owner reference certshift puts on what it creates.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn output_meta(
    declaration: &ClusterCertificateDeclaration,
    name: String,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    let owner = declaration.meta().name.as_deref().unwrap_or_default();
    let mut annotations = annotations;
    annotations.extend(owner_annotation(DECLARATION_LABEL, owner));
    ObjectMeta {
        name: Some(name),
        namespace: declaration.meta().namespace.clone(),
        labels: Some(BTreeMap::from([
            (DECLARATION_LABEL.to_owned(), label_value(owner).into_owned()),
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        ])),
        annotations: Some(annotations),
        owner_references: Some(vec![owner_reference(declaration)]),
        ..ObjectMeta::default()
    }
}

/// The `<name>-validation` ConfigMap of `revision`, as certshift applies it.
pub fn validation_config_map(
    declaration: &ClusterCertificateDeclaration,
    revision: &Revision,
    data: BTreeMap<String, String>,
) -> ConfigMap {
    let name = validation_name(declaration.meta().name.as_deref().unwrap_or_default());
    ConfigMap {
        metadata: output_meta(declaration, name, annotations(revision)),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// The `<name>-presentation` Secret presenting `presented`, first presented
/// at revision `since`.
pub fn presentation_secret(
    declaration: &ClusterCertificateDeclaration,
    since: u64,
    presented: &Thumbprint,
    data: BTreeMap<String, Vec<u8>>,
) -> Secret {
    let name = presentation_name(declaration.meta().name.as_deref().unwrap_or_default());
    let annotations = BTreeMap::from([
        (REVISION_ANNOTATION.to_owned(), since.to_string()),
        (THUMBPRINT_ANNOTATION.to_owned(), presented.to_string()),
    ]);
    Secret {
        metadata: output_meta(declaration, name, annotations),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    }
}

/// Annotations of the validation ConfigMap: the revision, what it presents, its stage.
pub fn annotations(revision: &Revision) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (REVISION_ANNOTATION.to_owned(), revision.revision.to_string()),
        (THUMBPRINT_ANNOTATION.to_owned(), revision.presented.to_string()),
    ]);
    if let Some(stage) = revision.stage {
        annotations.insert(STAGE_ANNOTATION.to_owned(), stage.to_string());
    }
    if let Some(change) = revision.change {
        annotations.insert(CHANGE_ANNOTATION.to_owned(), format!("{change:?}"));
    }
    if let Some(cause) = revision.cause {
        annotations.insert(CAUSE_ANNOTATION.to_owned(), cause.to_string());
    }
    annotations
}

pub fn presentation_data(material: &PresentedMaterial) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tls.crt".to_owned(), material.tls_crt.clone()),
        ("tls.key".to_owned(), material.tls_key.clone()),
        ("ca.crt".to_owned(), material.ca_crt.clone()),
    ])
}

/// The certificates a revision publishes for members to judge peers with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionTrust {
    /// `ca-bundle.crt`: the anchors in force and the pinned issuers, PEM. For
    /// consumers that take one CA file (nginx, Envoy): exactly what the
    /// revision trusts, so it narrows at `PinIssuers`.
    pub ca_bundle: String,
    /// `intermediates.crt`: the other CA certificates on the paths of the
    /// store's certificates, PEM, to build paths with (never anchors).
    pub intermediates: String,
    /// `crls.pem`: the CRLs in force, PEM, for members to enforce.
    pub crls: String,
}

/// What `revision` trusts, cut from the store's trust bundle and every CA
/// certificate known (`pem`, by thumbprint).
pub fn revision_trust(
    revision: &Revision,
    trust: &TrustBundle,
    instances: &[CertificateFacts],
    pem: &BTreeMap<Thumbprint, String>,
) -> RevisionTrust {
    // The revision's own anchors: a trust bundle changes in stages.
    let anchors = &revision.anchors;
    let trust = revision.judging_by(trust);
    let pinned = revision
        .accepted
        .common_names
        .iter()
        .flat_map(|r| &r.issuer_thumbprints)
        .chain(revision.clients.common_names.iter().flat_map(|c| &c.issuer_thumbprints));
    let bundled: std::collections::BTreeSet<&Thumbprint> = anchors.iter().chain(pinned).collect();
    let mut on_paths: std::collections::BTreeSet<&Thumbprint> = std::collections::BTreeSet::new();
    for instance in instances {
        let path = trust.path(instance);
        on_paths.extend(path.certificates[1..].iter().map(|c| &c.thumbprint));
        if let PathEnd::Anchor(root) | PathEnd::UntrustedRoot(root) = path.end
            && let Some(known) = trust.authority(&root)
        {
            on_paths.insert(&known.thumbprint);
        }
    }
    let pem_of = |set: &mut dyn Iterator<Item = &&Thumbprint>| -> String {
        set.filter_map(|tp| pem.get(*tp).map(String::as_str)).collect()
    };
    RevisionTrust {
        ca_bundle: pem_of(&mut bundled.iter()),
        intermediates: pem_of(&mut on_paths.iter().filter(|tp| !bundled.contains(*tp))),
        crls: String::new(),
    }
}

/// `rules.json`, `ca-bundle.crt`, `intermediates.crt` and `thumbprints.txt`
/// (the accepted thumbprints and those of the store's certificates the rules
/// accept, for consumers configured by thumbprint).
pub fn validation_data(
    revision: &Revision,
    trust: &RevisionTrust,
    accepted_instances: &[Thumbprint],
) -> BTreeMap<String, String> {
    let rules = RulesJson {
        revision: revision.revision,
        presented: Some(revision.presented.clone()),
        accepted: revision.accepted.clone(),
        clients: revision.clients.clone(),
        anchors: Some(revision.anchors.clone()),
        tolerated: revision.tolerated.clone(),
    };
    let mut thumbprints: Vec<&Thumbprint> = revision.accepted.thumbprints.iter().chain(accepted_instances).collect();
    thumbprints.sort();
    thumbprints.dedup();
    BTreeMap::from([
        (
            "rules.json".to_owned(),
            serde_json::to_string_pretty(&rules).expect("rules serialize") + "\n",
        ),
        ("ca-bundle.crt".to_owned(), trust.ca_bundle.clone()),
        ("intermediates.crt".to_owned(), trust.intermediates.clone()),
        ("crls.pem".to_owned(), trust.crls.clone()),
        (
            "thumbprints.txt".to_owned(),
            thumbprints.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","),
        ),
    ])
}

/// The keys the validation ConfigMap always has; templates may not use them.
pub const VALIDATION_KEYS: [&str; 5] = [
    "rules.json",
    "ca-bundle.crt",
    "intermediates.crt",
    "crls.pem",
    "thumbprints.txt",
];

/// Checks `spec.output.templates`: keys valid and distinct, templates that compile.
pub fn validate_templates(templates: &[crate::crd::ConfigTemplate]) -> Result<(), String> {
    let mut env = minijinja::Environment::new();
    for (index, t) in templates.iter().enumerate() {
        let field = format!("spec.output.templates[{index}]");
        let key_ok = !t.key.is_empty()
            && t.key.len() <= 253
            && t.key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !key_ok {
            return Err(format!(
                "{field}.key: {:?} is not a ConfigMap key (letters, digits, '-', '_', '.')",
                t.key
            ));
        }
        if VALIDATION_KEYS.contains(&t.key.as_str()) || templates[..index].iter().any(|o| o.key == t.key) {
            return Err(format!("{field}.key: {:?} is already used", t.key));
        }
        env.add_template_owned(t.key.clone(), t.template.clone())
            .map_err(|err| format!("{field}.template: {err}"))?;
    }
    Ok(())
}

/// What templates see: the revision they belong to, in consumers' terms.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateContext {
    pub revision: u64,
    pub stage: Option<String>,
    pub presented: PresentedContext,
    /// Accepted thumbprints and those of the store's certificates the rules accept.
    pub accepted_thumbprints: Vec<String>,
    /// The same, comma-separated (Service Fabric and split-merge style).
    pub accepted_thumbprint_list: String,
    pub common_names: Vec<CommonNameContext>,
    pub clients: Clients,
    pub client_thumbprint_list: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresentedContext {
    pub thumbprint: String,
    pub subject: String,
    pub common_name: String,
    pub not_after: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonNameContext {
    pub name: String,
    pub issuer_thumbprints: Vec<String>,
    pub issuer_thumbprint_list: String,
}

impl TemplateContext {
    pub fn new(
        revision: &Revision,
        presented: Option<&crate::facts::CertificateFacts>,
        clients: &Clients,
        accepted_instances: &[Thumbprint],
    ) -> Self {
        let mut accepted: Vec<String> = revision
            .accepted
            .thumbprints
            .iter()
            .chain(accepted_instances)
            .map(ToString::to_string)
            .collect();
        accepted.sort();
        accepted.dedup();
        Self {
            revision: revision.revision,
            stage: revision.stage.map(|s| s.to_string()),
            presented: PresentedContext {
                thumbprint: revision.presented.to_string(),
                subject: presented.map(|f| f.subject.clone()).unwrap_or_default(),
                common_name: presented.and_then(|f| f.common_name.clone()).unwrap_or_default(),
                not_after: presented.map(|f| f.not_after.to_string()).unwrap_or_default(),
            },
            accepted_thumbprint_list: accepted.join(","),
            accepted_thumbprints: accepted,
            common_names: revision
                .accepted
                .common_names
                .iter()
                .map(|rule| CommonNameContext {
                    name: rule.name.clone(),
                    issuer_thumbprints: rule.issuer_thumbprints.iter().map(ToString::to_string).collect(),
                    issuer_thumbprint_list: crate::thumbprint::join_thumbprints(&rule.issuer_thumbprints),
                })
                .collect(),
            client_thumbprint_list: crate::thumbprint::join_thumbprints(
                clients.thumbprints.iter().map(|c| &c.thumbprint),
            ),
            clients: clients.clone(),
        }
    }
}

/// Renders every template for one revision.
pub fn render_templates(
    templates: &[crate::crd::ConfigTemplate],
    context: &TemplateContext,
) -> Result<BTreeMap<String, String>, String> {
    let mut env = minijinja::Environment::new();
    for t in templates {
        env.add_template_owned(t.key.clone(), t.template.clone())
            .map_err(|err| format!("template {:?}: {err}", t.key))?;
    }
    templates
        .iter()
        .map(|t| {
            let rendered = env
                .get_template(&t.key)
                .and_then(|template| template.render(context))
                .map_err(|err| format!("template {:?}: {err}", t.key))?;
            Ok((t.key.clone(), rendered))
        })
        .collect()
}

/// The CA certificates a published validation ConfigMap holds (its
/// `ca-bundle.crt` and `intermediates.crt`), PEM: what members trust now.
pub fn in_force_cas(validation: &ConfigMap) -> String {
    let data = validation.data.as_ref();
    ["ca-bundle.crt", "intermediates.crt"]
        .iter()
        .filter_map(|key| data.and_then(|d| d.get(*key)))
        .map(String::as_str)
        .collect()
}

/// A published revision read back from the validation ConfigMap.
pub fn read_published(
    annotations: &BTreeMap<String, String>,
    data: &BTreeMap<String, String>,
) -> Result<Revision, String> {
    let revision: u64 = annotations
        .get(REVISION_ANNOTATION)
        .ok_or("no certshift.io/revision annotation")?
        .parse()
        .map_err(|_| "certshift.io/revision is not a number")?;
    let presented = Thumbprint::parse(
        THUMBPRINT_ANNOTATION,
        annotations
            .get(THUMBPRINT_ANNOTATION)
            .ok_or("no certshift.io/thumbprint annotation")?,
    )
    .map_err(|err| err.to_string())?;
    let rules: RulesJson = serde_json::from_str(data.get("rules.json").ok_or("no rules.json")?)
        .map_err(|err| format!("rules.json: {err}"))?;
    if rules.revision != revision {
        return Err(format!(
            "rules.json is revision {}, the annotation says {revision}",
            rules.revision
        ));
    }
    if let Some(in_rules) = rules.presented.as_ref().filter(|p| **p != presented) {
        return Err(format!(
            "rules.json presents {in_rules}, the annotation says {presented}"
        ));
    }
    let stage = annotations
        .get(STAGE_ANNOTATION)
        .and_then(|s| serde_json::from_value::<Stage>(serde_json::Value::String(s.clone())).ok());
    let change = annotations
        .get(CHANGE_ANNOTATION)
        .and_then(|s| serde_json::from_value::<Change>(serde_json::Value::String(s.clone())).ok());
    let cause = annotations
        .get(CAUSE_ANNOTATION)
        .and_then(|s| serde_json::from_value::<Cause>(serde_json::Value::String(s.clone())).ok());
    // Normalize through the constructors so comparisons with planned revisions hold.
    let accepted = rules.accepted.normalized();
    Ok(Revision {
        revision,
        stage,
        change,
        presented,
        accepted,
        clients: rules.clients,
        tolerated: rules.tolerated,
        // Written with every revision since anchors were published.
        anchors: rules.anchors.unwrap_or_default(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Accepted, CommonNameRule};
    use crate::testing::tp;

    #[test]
    fn validation_outputs_read_back_as_the_revision() {
        let revision = Revision {
            revision: 4,
            stage: Some(Stage::SwitchToCommonName),
            change: Some(Change::Validation),
            presented: tp("G"),
            accepted: Accepted::new([tp("A"), tp("G")], [CommonNameRule::new("cluster.example", [])]),
            clients: Default::default(),
            tolerated: Vec::new(),
            anchors: Vec::new(),
            cause: None,
        };
        let data = validation_data(&revision, &RevisionTrust::default(), &[tp("G"), tp("Z")]);
        let rules: serde_json::Value = serde_json::from_str(&data["rules.json"]).unwrap();
        assert_eq!(rules["revision"], 4);
        assert_eq!(rules["accepted"]["commonNames"][0]["name"], "cluster.example");
        assert_eq!(
            rules["clients"],
            serde_json::json!({"thumbprints": [], "commonNames": []})
        );
        assert_eq!(data["thumbprints.txt"], format!("{},{},{}", tp("A"), tp("G"), tp("Z")));
        let back = read_published(&annotations(&revision), &data).unwrap();
        assert_eq!(back, revision, "the whole revision reads back");
    }

    #[test]
    fn inconsistent_outputs_are_refused() {
        let revision = Revision {
            revision: 2,
            stage: None,
            change: None,
            presented: tp("G"),
            accepted: Accepted::new([tp("G")], []),
            clients: Default::default(),
            tolerated: Vec::new(),
            anchors: Vec::new(),
            cause: None,
        };
        let data = validation_data(&revision, &RevisionTrust::default(), &[]);
        let mut annotations = annotations(&revision);
        annotations.insert(REVISION_ANNOTATION.into(), "3".into());
        assert!(
            read_published(&annotations, &data)
                .unwrap_err()
                .contains("rules.json is revision 2")
        );
    }
}

#[cfg(test)]
mod consumer_examples {
    use super::*;
    use crate::crd::ClusterCertificateDeclaration;
    use crate::rules::Accepted;
    use crate::rules::CommonNameRule;
    use crate::testing::{facts, tp};

    /// Renders an example's templates for a revision presenting G by name.
    fn render(example: &str) -> BTreeMap<String, String> {
        let declaration: ClusterCertificateDeclaration = serde_yaml::from_str(example).unwrap();
        let ca = tp("CA");
        let revision = Revision {
            revision: 6,
            stage: Some(Stage::PinIssuers),
            change: None,
            presented: tp("G"),
            accepted: Accepted::new([], [CommonNameRule::new("cluster.example", [ca])]),
            clients: Default::default(),
            tolerated: Vec::new(),
            anchors: Vec::new(),
            cause: None,
        };
        let presented = facts("G").cn("cluster.example").issuer("CA").build();
        let clients = crate::declaration::spec::parse(&declaration.spec)
            .unwrap()
            .desired
            .clients;
        let context = TemplateContext::new(&revision, Some(&presented), &clients, &[tp("G")]);
        render_templates(&declaration.spec.output.unwrap().templates, &context).unwrap()
    }

    #[test]
    fn ssis_scale_out_settings() {
        let rendered = render(include_str!("../../examples/consumers/ssis-scale-out.yaml"));
        let master: serde_json::Value = serde_json::from_str(&rendered["MasterSettings.config"]).unwrap();
        assert_eq!(master["SSLCertThumbprint"], tp("G").to_string());
        let worker: serde_json::Value = serde_json::from_str(&rendered["WorkerSettings.config"]).unwrap();
        assert_eq!(worker["MasterHttpsCertThumbprint"], tp("G").to_string());
        assert_eq!(
            worker["WorkerHttpsCertThumbprint"],
            "0011001100110011001100110011001100110011"
        );
        assert_eq!(worker["MasterEndpoint"], "https://cluster.example:8391");
    }

    #[test]
    fn split_merge_service_configuration() {
        let rendered = render(include_str!("../../examples/consumers/split-merge.yaml"));
        let cscfg = &rendered["ServiceConfiguration.cscfg"];
        assert!(cscfg.contains(
            r#"<Setting name="AllowedClientCertificateThumbprints" value="0011001100110011001100110011001100110011,2233223322332233223322332233223322332233" />"#
        ), "{cscfg}");
        assert!(cscfg.contains(&format!(
            r#"<Certificate name="SSL" thumbprint="{}" thumbprintAlgorithm="sha1" />"#,
            tp("G")
        )));
        assert!(cscfg.contains(&format!(r#"<Certificate name="CA" thumbprint="{}""#, tp("CA"))));
    }

    #[test]
    fn machine_learning_server_kestrel() {
        let rendered = render(include_str!("../../examples/consumers/machine-learning-server.yaml"));
        let settings: serde_json::Value = serde_json::from_str(&rendered["appsettings.json"]).unwrap();
        let https = &settings["Kestrel"]["HttpsCertificate"];
        assert_eq!(https["SubjectName"], "CN=cluster.example");
        assert_eq!(https["Thumbprint"], tp("G").to_string());
    }

    #[test]
    fn bad_templates_are_refused_with_their_field() {
        let template = |key: &str, text: &str| crate::crd::ConfigTemplate {
            key: key.into(),
            template: text.into(),
        };
        let err = validate_templates(&[template("a.json", "{{ unclosed")]).unwrap_err();
        assert!(err.starts_with("spec.output.templates[0].template:"), "{err}");
        let err = validate_templates(&[template("rules.json", "x")]).unwrap_err();
        assert!(err.contains("already used"), "{err}");
        let err = validate_templates(&[template("a b", "x")]).unwrap_err();
        assert!(err.starts_with("spec.output.templates[0].key"), "{err}");
        let err = validate_templates(&[template("a", "x"), template("a", "y")]).unwrap_err();
        assert!(err.starts_with("spec.output.templates[1].key"), "{err}");
    }
}

#[cfg(test)]
mod formats {
    use super::*;
    use crate::crd::OutputFormat;
    use crate::testing::{Key, cert};

    fn material(key: Key) -> (PresentedMaterial, crate::testing::Issued) {
        let ca = cert("Issuing CA").ca().self_signed();
        let leaf = cert("cluster.example").key(key).signed_by(&ca);
        let material = PresentedMaterial {
            tls_crt: format!("{}{}", leaf.pem, ca.pem),
            tls_key: leaf.key_pem(),
            ca_crt: ca.pem.clone(),
        };
        (material, leaf)
    }

    #[test]
    fn der_is_the_leaf_certificate() {
        let (material, leaf) = material(Key::EcP256);
        let data = format_data(&material, &[OutputFormat::Der], None).unwrap();
        assert_eq!(data["tls.cer"], leaf.der);
        let facts = crate::facts::inspect("tls.cer", &data["tls.cer"]).unwrap();
        assert_eq!(facts[0].common_name.as_deref(), Some("cluster.example"));
    }

    #[test]
    fn combined_pem_is_key_then_chain() {
        let (material, _) = material(Key::EcP256);
        let data = format_data(&material, &[OutputFormat::CombinedPem], None).unwrap();
        let text = String::from_utf8(data["tls-combined.pem"].clone()).unwrap();
        let labels: Vec<String> = pem::parse_many(&text)
            .unwrap()
            .iter()
            .map(|b| b.tag().to_owned())
            .collect();
        assert_eq!(labels, ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]);
    }

    /// OpenSSL, an independent implementation, opens the file with the password.
    #[test]
    fn pkcs12_opens_with_openssl() {
        for key in [Key::EcP256, Key::Rsa2048] {
            let label = format!("{key:?}");
            let (material, leaf) = material(key);
            let data = format_data(&material, &[OutputFormat::Pkcs12], Some("s3cret")).unwrap();
            let dir = std::env::temp_dir().join(format!("certshift-p12-{}-{label}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let pfx = dir.join("tls.pfx");
            std::fs::write(&pfx, &data["tls.pfx"]).unwrap();
            let out = std::process::Command::new("openssl")
                .args(["pkcs12", "-in"])
                .arg(&pfx)
                .args(["-passin", "pass:s3cret", "-nodes"])
                .output()
                .expect("openssl runs (hack/test.sh installs it)");
            assert!(
                out.status.success(),
                "{label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("PRIVATE KEY-----"), "{label}: no key in {text}");
            let certificates = pem::parse_many(text.as_bytes())
                .unwrap()
                .into_iter()
                .filter(|b| b.tag() == "CERTIFICATE")
                .map(|b| b.contents().to_vec())
                .collect::<Vec<_>>();
            assert_eq!(certificates[0], leaf.der, "{label}: the leaf comes first");
            assert_eq!(certificates.len(), 2, "{label}: leaf and CA");
            let wrong = std::process::Command::new("openssl")
                .args(["pkcs12", "-in"])
                .arg(&pfx)
                .args(["-passin", "pass:wrong", "-nodes"])
                .output()
                .unwrap();
            assert!(!wrong.status.success(), "{label}: a wrong password is refused");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn pkcs12_without_a_password_is_an_error() {
        let (material, _) = material(Key::EcP256);
        assert!(
            format_data(&material, &[OutputFormat::Pkcs12], None)
                .unwrap_err()
                .contains("password")
        );
    }
}
