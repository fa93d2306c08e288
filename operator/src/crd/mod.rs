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
    /// The object's name.
    pub name: String,
}

/// A key of a ConfigMap or Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeySelector {
    /// The ConfigMap's or Secret's name.
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
        without_defaults(required(
            ClusterCertificateDeclaration::crd(),
            &[(&["spec"], "store"), (&["spec", "store"], "observedCertificates")],
        )),
    ]
}

/// Marks fields required in the schema that the types read with a default
/// (`#[serde(default)]`), so an object stored before they were required
/// still reads, while the API server refuses new ones without them.
fn required(crd: CustomResourceDefinition, fields: &[(&[&str], &str)]) -> CustomResourceDefinition {
    let mut json = serde_json::to_value(&crd).expect("CRD serializes");
    for version in json["spec"]["versions"].as_array_mut().expect("versions") {
        for (path, field) in fields {
            let mut schema = &mut version["schema"]["openAPIV3Schema"];
            for part in *path {
                schema = &mut schema["properties"][*part];
            }
            let required = schema["required"]
                .as_array_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut names: Vec<String> = required
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            names.push((*field).to_owned());
            names.sort();
            names.dedup();
            schema["required"] = serde_json::json!(names);
        }
    }
    serde_json::from_value(json).expect("CRD deserializes")
}

/// The generated schemas, shaped for the API server and its users:
/// - defaults (from `#[serde(default)]`) are dropped: the operator applies
///   its own, and `kubectl get -o yaml` then shows what the user wrote;
/// - nothing is `nullable` (optional fields are omitted, never null): OpenAPI
///   v2 publishes a nullable field untyped, which leaves `kubectl explain`
///   blank below it; null enum members go too (kube-apiserver 1.20 rejects
///   the whole schema for one);
/// - optional objects are atomic (`x-kubernetes-map-type: atomic`): server-side
///   apply that drops a granular object field stores null in its place
///   (kubernetes/kubernetes#103011), which a non-nullable schema refuses, so
///   `kubectl apply --server-side` and Flux could not remove `certificate` in
///   the conversion to common name. An atomic object is owned and removed
///   whole. The roots (`spec`, `status`) stay granular: each controller owns
///   its own conditions.
fn without_defaults(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn shape(schema: &mut serde_json::Value, inside_atomic: bool) {
        let Some(map) = schema.as_object_mut() else {
            return;
        };
        map.remove("default");
        map.remove("nullable");
        if let Some(serde_json::Value::Array(members)) = map.get_mut("enum") {
            members.retain(|member| !member.is_null());
        }
        // A list is replaced whole (or merged per key, for conditions, whose
        // items have no optional objects): nothing inside it is left null.
        if let Some(items) = map.get_mut("items") {
            shape(items, true);
        }
        let required: Vec<String> = map
            .get("required")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        if let Some(serde_json::Value::Object(properties)) = map.get_mut("properties") {
            for (name, child) in properties.iter_mut() {
                let optional_object = child["type"] == "object" && !required.contains(name);
                let atomic = optional_object && !inside_atomic;
                if atomic {
                    child["x-kubernetes-map-type"] = "atomic".into();
                }
                shape(child, inside_atomic || atomic);
            }
        }
    }
    let mut json = serde_json::to_value(&crd).expect("CRD serializes");
    for version in json["spec"]["versions"].as_array_mut().expect("versions") {
        let root = &mut version["schema"]["openAPIV3Schema"];
        for part in ["spec", "status"] {
            shape(&mut root["properties"][part], false);
        }
    }
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

    /// Every property at every depth, as `kind.path.to.field`.
    fn properties(crd: &CustomResourceDefinition) -> Vec<(String, serde_json::Value)> {
        fn walk(path: &str, schema: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
            let object = if schema["type"] == "array" {
                &schema["items"]
            } else {
                schema
            };
            if let Some(properties) = object["properties"].as_object() {
                for (name, child) in properties {
                    let path = format!("{path}.{name}");
                    out.push((path.clone(), child.clone()));
                    walk(&path, child, out);
                }
            }
        }
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut out = Vec::new();
        walk(&crd.spec.names.kind, &schema["openAPIV3Schema"], &mut out);
        out
    }

    #[test]
    fn every_field_has_a_type_and_a_description_and_none_is_nullable() {
        let mut missing = Vec::new();
        for crd in all() {
            let root = &serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"];
            let description = root["description"].as_str().unwrap_or_default();
            if description.is_empty() || description.contains("Auto-generated") {
                missing.push(format!("{}: root description {description:?}", crd.spec.names.kind));
            }
            for (path, schema) in properties(&crd) {
                if schema["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(format!("{path}: no description"));
                }
                if schema["type"].as_str().is_none() && schema["x-kubernetes-int-or-string"].is_null() {
                    missing.push(format!("{path}: no type"));
                }
                if !schema["nullable"].is_null() {
                    missing.push(format!("{path}: nullable"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "{} problems:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }

    /// Server-side apply can remove any optional object (kubernetes#103011):
    /// each is atomic, or inside one, or inside a list.
    #[test]
    fn optional_objects_are_atomic() {
        let atomic: Vec<String> = all()
            .iter()
            .flat_map(properties)
            .filter(|(_, schema)| schema["x-kubernetes-map-type"] == "atomic")
            .map(|(path, _)| path)
            .collect();
        for path in [
            "ClusterCertificateDeclaration.spec.certificate",
            "ClusterCertificateDeclaration.spec.certificateCommonNames",
            "ClusterCertificateDeclaration.spec.trustBundle",
            "ClusterCertificateDeclaration.spec.members",
            "ClusterCertificateDeclaration.spec.upgrade",
            "ClusterCertificateDeclaration.spec.output",
            "ClusterCertificateDeclaration.status.presenting",
            "ObservedCertificate.spec.policyRef",
            "ObservedCertificate.status.current",
            "CertificatePolicy.spec.issuer.ca",
            "CertificatePolicy.spec.issuer.selfSigned",
            "CertificatePolicy.spec.key",
        ] {
            assert!(atomic.iter().any(|p| p == path), "{path} is not atomic: {atomic:?}");
        }
        for path in &atomic {
            let nested = atomic.iter().any(|outer| path.starts_with(&format!("{outer}.")));
            assert!(!nested, "{path} is inside an atomic object already");
        }
        assert!(!atomic.iter().any(|p| p.ends_with(".spec") || p.ends_with(".status")));
    }

    #[test]
    fn closed_sets_are_enums_of_what_the_operator_reads() {
        let enums: std::collections::BTreeMap<String, serde_json::Value> = all()
            .iter()
            .flat_map(properties)
            .filter_map(|(path, schema)| {
                let items = if schema["type"] == "array" {
                    &schema["items"]
                } else {
                    &schema
                };
                (!items["enum"].is_null()).then(|| (path, items["enum"].clone()))
            })
            .collect();
        let json = |values: &[&str]| serde_json::json!(values);
        for (path, expected) in [
            (
                "ClusterCertificateDeclaration.spec.members.workloads.kind",
                json(&WORKLOAD_KINDS),
            ),
            (
                "ClusterCertificateDeclaration.spec.upgrade.selection",
                json(&["NewestNotBefore", "LatestNotAfter"]),
            ),
            (
                "ClusterCertificateDeclaration.spec.output.formats",
                json(&["DER", "PKCS12", "CombinedPEM"]),
            ),
            (
                "CertificatePolicy.spec.extendedKeyUsages",
                json(&crate::policy::EXTENDED_KEY_USAGES),
            ),
            ("CertificatePolicy.spec.keyUsages", json(&crate::policy::KEY_USAGES)),
            (
                "CertificatePolicy.spec.key.algorithm",
                json(&["ECDSA", "RSA", "Ed25519"]),
            ),
        ] {
            assert_eq!(enums.get(path), Some(&expected), "{path}");
        }
    }

    #[test]
    fn every_kind_has_ready_reason_and_message_columns_and_the_certshift_category() {
        for crd in all() {
            let columns = crd.spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap_or_default();
            let column = |name: &str| columns.iter().find(|c| c.name == name).cloned();
            let kind = &crd.spec.names.kind;
            assert!(column("Ready").is_some(), "{kind}");
            assert_eq!(column("Reason").map(|c| c.priority), Some(None), "{kind}");
            assert_eq!(
                column("Message").map(|c| c.priority),
                Some(Some(1)),
                "{kind}: -o wide only"
            );
            assert_eq!(crd.spec.names.categories, Some(vec!["certshift".to_owned()]), "{kind}");
        }
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
                "REASON",
                "MESSAGE",
                "AGE"
            ]
        );
    }
}
