//! The custom resources of `certshift.io/v1alpha1`. Field names follow Service
//! Fabric's ARM shape where one exists (`thumbprintSecondary`,
//! `certificateIssuerThumbprint`), Kubernetes conventions elsewhere.

mod declaration;
mod observed;
mod policy;

pub use declaration::*;
pub use observed::*;
pub use policy::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "certshift.io";
pub const VERSION: &str = "v1alpha1";

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    pub name: String,
}

/// A key of a ConfigMap or Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeySelector {
    pub name: String,
    /// Defaults to `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Conditions as a list-map keyed by `type`, so server-side apply merges them
/// per type and each controller owns only its own.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

/// The three CRDs, in the order `certshift crds` prints them.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        without_defaults(CertificatePolicy::crd()),
        without_defaults(ObservedCertificate::crd()),
        without_defaults(ClusterCertificateDeclaration::crd()),
    ]
}

/// Schema defaults (from `#[serde(default)]`) are dropped: the operator
/// applies its defaults itself, and `kubectl get -o yaml` then shows what the
/// user wrote. Null enum members go too (see below).
fn without_defaults(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("default");
                // `nullable: true` already admits null; a null enum member
                // makes kube-apiserver 1.20 reject the whole schema.
                if let Some(serde_json::Value::Array(members)) = map.get_mut("enum") {
                    members.retain(|member| !member.is_null());
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(&crd).expect("CRD serializes");
    strip(&mut json["spec"]["versions"]);
    serde_json::from_value(json).expect("CRD deserializes")
}

/// The multi-document YAML `certshift crds` prints and `crds/` holds.
pub fn yaml() -> String {
    all()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("CRDs serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_match_the_code() {
        let committed = include_str!("../../../crds/certshift.io.yaml");
        assert!(committed == yaml(), "crds/certshift.io.yaml is stale: run `make crds`");
    }

    #[test]
    fn the_chart_templates_the_same_crds() {
        let templated = include_str!("../../../charts/certshift/files/crds.yaml");
        assert!(
            templated == yaml(),
            "charts/certshift/files/crds.yaml is stale: run `make crds`"
        );
    }

    #[test]
    fn crds_are_namespaced_with_status_and_short_names() {
        for (crd, short) in all().iter().zip(["cpol", "ocert", "ccd"]) {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_owned()][..]));
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        }
    }

    #[test]
    fn conditions_are_list_maps_keyed_by_type() {
        for crd in all() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let conditions = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
            assert_eq!(conditions["x-kubernetes-list-type"], "map", "{}", crd.spec.names.kind);
            assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
        }
    }

    #[test]
    fn the_workload_kind_enum_is_the_kinds_the_operator_reads() {
        let crd = ClusterCertificateDeclaration::crd();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let workloads =
            &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["members"]["properties"]["workloads"];
        assert_eq!(
            workloads["items"]["properties"]["kind"]["enum"],
            serde_json::json!(WORKLOAD_KINDS)
        );
    }

    #[test]
    fn declaration_printer_columns_follow_the_design() {
        let crd = ClusterCertificateDeclaration::crd();
        let columns: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.to_uppercase())
            .collect();
        assert_eq!(
            columns,
            [
                "DECLARED-BY",
                "STAGE",
                "PRESENTING",
                "MEMBERS",
                "EXPIRES",
                "READY",
                "AGE"
            ]
        );
    }
}
