//! Reading the manifests `certshift plan` and `certshift inspect` are given:
//! multi-document YAML (or JSON) files as GitOps repositories and
//! `kubectl get -o yaml` hold them, `List`s included.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::crd::{ClusterCertificateDeclaration, ObservedCertificate};

/// Where a document came from, for error messages: `file.yaml: document 2 (Secret default/tls)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based.
    pub document: usize,
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if !self.kind.is_empty() {
            write!(f, " ({} {})", self.kind, self.name)?;
        }
        Ok(())
    }
}

/// The objects of the input that certshift reads; other kinds are ignored, so
/// a whole GitOps directory can be given.
#[derive(Clone, Default)]
pub struct Manifests {
    pub declarations: Vec<(Origin, ClusterCertificateDeclaration)>,
    pub observed: Vec<(Origin, ObservedCertificate)>,
    pub secrets: Vec<(Origin, Secret)>,
    pub config_maps: Vec<(Origin, ConfigMap)>,
}

impl Manifests {
    /// Adds every document of one file.
    pub fn read(&mut self, file: &str, text: &str) -> Result<(), String> {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let mut origin = Origin {
                file: file.to_owned(),
                document: index + 1,
                kind: String::new(),
                name: String::new(),
            };
            let value = serde_yaml::Value::deserialize(document).map_err(|err| format!("{origin}: {err}"))?;
            self.add(&mut origin, value)?;
        }
        Ok(())
    }

    fn add(&mut self, origin: &mut Origin, value: serde_yaml::Value) -> Result<(), String> {
        if value.is_null() {
            return Ok(());
        }
        let kind = value
            .get("kind")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let metadata = value.get("metadata");
        let field = |key: &str| metadata.and_then(|m| m.get(key)).and_then(serde_yaml::Value::as_str);
        origin.name = match (field("namespace"), field("name")) {
            (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
            (None, Some(name)) => name.to_owned(),
            _ => String::new(),
        };
        origin.kind.clone_from(&kind);
        match kind.as_str() {
            "List" => {
                let items = value.get("items").and_then(serde_yaml::Value::as_sequence).cloned();
                for item in items.unwrap_or_default() {
                    self.add(origin, item)?;
                }
            }
            "ClusterCertificateDeclaration" => self.declarations.push((origin.clone(), typed(origin, value)?)),
            "ObservedCertificate" => self.observed.push((origin.clone(), typed(origin, value)?)),
            "Secret" => self.secrets.push((origin.clone(), typed(origin, value)?)),
            "ConfigMap" => self.config_maps.push((origin.clone(), typed(origin, value)?)),
            _ => {}
        }
        Ok(())
    }
}

/// Deserializes with the path of the offending field in the error
/// (`spec.store.observedCertificates: invalid type: …`).
fn typed<T: DeserializeOwned>(origin: &Origin, value: serde_yaml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|err| format!("{origin}: {}: {}", err.path(), err.inner()))
}
