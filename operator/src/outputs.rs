//! What members consume (DESIGN §5): the `<name>-presentation` Secret and the
//! `<name>-validation` ConfigMap, as data. Building and reading them back are
//! both pure, so the operator can resume from its outputs after a restart and
//! the end-to-end judge can read exactly what members read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crd::ClusterCertificateDeclarationSpec;
use crate::planner::{Revision, Stage};
use crate::rules::{Accepted, CommonNameRule};
use crate::thumbprint::{Thumbprint, parse_thumbprint_list};

pub const REVISION_ANNOTATION: &str = "certshift.io/revision";
pub const THUMBPRINT_ANNOTATION: &str = "certshift.io/thumbprint";
pub const STAGE_ANNOTATION: &str = "certshift.io/stage";
/// Written by members (a reload hook or sidecar) on their Pod.
pub const OBSERVED_REVISION_ANNOTATION: &str = "certshift.io/observed-revision";
/// On every object the operator creates, with the owner's name.
pub const DECLARATION_LABEL: &str = "certshift.io/declaration";
pub const OBSERVED_CERTIFICATE_LABEL: &str = "certshift.io/observed-certificate";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "certshift";

pub fn presentation_name(declaration: &str) -> String {
    format!("{declaration}-presentation")
}

pub fn validation_name(declaration: &str) -> String {
    format!("{declaration}-validation")
}

pub fn store_name(observed: &str) -> String {
    format!("{observed}-store")
}

/// `rules.json`: the revision's validation rules and client allow-lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesJson {
    pub revision: u64,
    pub accepted: Accepted,
    pub clients: Clients,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Clients {
    pub thumbprints: Vec<ClientThumbprint>,
    pub common_names: Vec<ClientCommonName>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientThumbprint {
    pub thumbprint: Thumbprint,
    pub is_admin: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCommonName {
    pub name: String,
    pub issuer_thumbprints: Vec<Thumbprint>,
    pub is_admin: bool,
}

/// Client rules of a spec (validated by `desired_from_spec` before use).
pub fn clients(spec: &ClusterCertificateDeclarationSpec) -> Clients {
    let mut thumbprints: Vec<ClientThumbprint> = spec
        .client_certificate_thumbprints
        .iter()
        .filter_map(|c| {
            Some(ClientThumbprint {
                thumbprint: Thumbprint::parse("", &c.certificate_thumbprint).ok()?,
                is_admin: c.is_admin,
            })
        })
        .collect();
    thumbprints.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
    let mut common_names: Vec<ClientCommonName> = spec
        .client_certificate_common_names
        .iter()
        .map(|c| ClientCommonName {
            name: c.certificate_common_name.trim().to_owned(),
            issuer_thumbprints: parse_thumbprint_list("", &c.certificate_issuer_thumbprint).unwrap_or_default(),
            is_admin: c.is_admin,
        })
        .collect();
    common_names.sort_by(|a, b| a.name.cmp(&b.name));
    Clients {
        thumbprints,
        common_names,
    }
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

/// Annotations both outputs carry.
pub fn annotations(revision: &Revision) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (REVISION_ANNOTATION.to_owned(), revision.revision.to_string()),
        (THUMBPRINT_ANNOTATION.to_owned(), revision.presented.to_string()),
    ]);
    if let Some(stage) = revision.stage {
        annotations.insert(STAGE_ANNOTATION.to_owned(), stage.to_string());
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

/// `rules.json`, `ca-bundle.crt` and `thumbprints.txt` (the accepted
/// thumbprints and those of the store's certificates the rules accept, for
/// consumers configured by thumbprint).
pub fn validation_data(
    revision: &Revision,
    clients: &Clients,
    ca_bundle: &str,
    accepted_instances: &[Thumbprint],
) -> BTreeMap<String, String> {
    let rules = RulesJson {
        revision: revision.revision,
        accepted: revision.accepted.clone(),
        clients: clients.clone(),
    };
    let mut thumbprints: Vec<&Thumbprint> = revision.accepted.thumbprints.iter().chain(accepted_instances).collect();
    thumbprints.sort();
    thumbprints.dedup();
    BTreeMap::from([
        (
            "rules.json".to_owned(),
            serde_json::to_string_pretty(&rules).expect("rules serialize") + "\n",
        ),
        ("ca-bundle.crt".to_owned(), ca_bundle.to_owned()),
        (
            "thumbprints.txt".to_owned(),
            thumbprints.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","),
        ),
    ])
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
    let stage = annotations
        .get(STAGE_ANNOTATION)
        .and_then(|s| serde_json::from_value::<Stage>(serde_json::Value::String(s.clone())).ok());
    // Normalize through the constructors so comparisons with planned revisions hold.
    let accepted = Accepted::new(
        rules.accepted.thumbprints,
        rules
            .accepted
            .common_names
            .into_iter()
            .map(|r| CommonNameRule::new(r.name, r.issuer_thumbprints)),
    );
    Ok(Revision {
        revision,
        stage,
        change: None,
        presented,
        accepted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Change;
    use crate::testing::tp;

    #[test]
    fn validation_outputs_read_back_as_the_revision() {
        let revision = Revision {
            revision: 4,
            stage: Some(Stage::SwitchToCommonName),
            change: Some(Change::Validation),
            presented: tp("G"),
            accepted: Accepted::new([tp("A"), tp("G")], [CommonNameRule::new("cluster.example", [])]),
        };
        let data = validation_data(&revision, &Clients::default(), "", &[tp("G"), tp("Z")]);
        let rules: serde_json::Value = serde_json::from_str(&data["rules.json"]).unwrap();
        assert_eq!(rules["revision"], 4);
        assert_eq!(rules["accepted"]["commonNames"][0]["name"], "cluster.example");
        assert_eq!(
            rules["clients"],
            serde_json::json!({"thumbprints": [], "commonNames": []})
        );
        assert_eq!(data["thumbprints.txt"], format!("{},{},{}", tp("A"), tp("G"), tp("Z")));
        let back = read_published(&annotations(&revision), &data).unwrap();
        assert_eq!(back.state(), revision.state());
        assert_eq!(back.stage, Some(Stage::SwitchToCommonName));
    }

    #[test]
    fn inconsistent_outputs_are_refused() {
        let revision = Revision {
            revision: 2,
            stage: None,
            change: None,
            presented: tp("G"),
            accepted: Accepted::new([tp("G")], []),
        };
        let data = validation_data(&revision, &Clients::default(), "", &[]);
        let mut annotations = annotations(&revision);
        annotations.insert(REVISION_ANNOTATION.into(), "3".into());
        assert!(
            read_published(&annotations, &data)
                .unwrap_err()
                .contains("rules.json is revision 2")
        );
    }
}
