//! Typed manifests for the scenarios: the examples read as the CRD types and
//! changed through builders, and the objects scenarios add, built as the
//! k8s-openapi types. [`apply`] sends any of them as `kubectl apply
//! --server-side` does.

use std::collections::BTreeMap;

use certshift::crd::{
    CaIssuer, CertificateCommonNames, CertificatePolicy, CertificatePolicySpec, CertificateThumbprints,
    ClusterCertificateDeclaration, CommonNameDeclaration, ConfigTemplate, Endpoint, IssuerReference, KeySelector,
    LifetimeAction, LocalObjectReference, Members, ObservedCertificate, OutputFormat, OutputSpec, Pkcs12Output,
    ServiceEndpoint, Subject, UpgradePolicy, WorkloadReference,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;

use crate::repo_path;

/// Server-side applies `object` in `namespace`, as `kubectl apply --server-side`.
pub async fn apply<K>(client: &Client, namespace: &str, object: &K)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut value = serde_json::to_value(object).expect("object serializes");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value["metadata"]["namespace"] = namespace.into();
    // The API server ignores status on apply; kubectl sends none.
    value.as_object_mut().expect("object").remove("status");
    let name = value["metadata"]["name"].as_str().expect("name").to_owned();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&value))
        .await
        .unwrap_or_else(|err| panic!("applying {} {name}: {err}", K::kind(&())));
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A declaration, from an example and changed step by step.
#[derive(Clone, Debug)]
pub struct Declaration(pub ClusterCertificateDeclaration);

impl Declaration {
    /// `examples/conversion/<file>` (what is in force there, `status`, is dropped).
    pub fn example(file: &str) -> Self {
        Self::file(&format!("examples/conversion/{file}"))
    }

    /// Any declaration file of the repository, by its path.
    pub fn file(path: &str) -> Self {
        let text = std::fs::read_to_string(repo_path(path)).unwrap_or_else(|err| panic!("{path}: {err}"));
        let mut declaration: ClusterCertificateDeclaration =
            serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"));
        declaration.status = None;
        declaration.metadata.namespace = None;
        Self(declaration)
    }

    pub fn named(mut self, name: &str) -> Self {
        self.0.metadata.name = Some(name.to_owned());
        self
    }

    pub fn name(&self) -> &str {
        self.0.metadata.name.as_deref().unwrap_or_default()
    }

    /// The thumbprint the declaration names (by thumbprint).
    pub fn thumbprint(&self) -> String {
        self.0
            .spec
            .certificate
            .as_ref()
            .expect("declared by thumbprint")
            .thumbprint
            .clone()
    }

    /// Declared by this thumbprint only.
    pub fn by_thumbprint(mut self, thumbprint: &str) -> Self {
        self.0.spec.certificate = Some(CertificateThumbprints {
            thumbprint: thumbprint.to_owned(),
            thumbprint_secondary: None,
        });
        self.0.spec.certificate_common_names = None;
        self
    }

    /// Declared by these common names (name, comma-separated issuer thumbprints).
    pub fn by_common_names(mut self, names: &[(&str, &str)]) -> Self {
        self.0.spec.certificate = None;
        self.0.spec.certificate_common_names = Some(CertificateCommonNames {
            common_names: names
                .iter()
                .map(|(name, issuers)| CommonNameDeclaration {
                    certificate_common_name: name.to_string(),
                    certificate_issuer_thumbprint: issuers.to_string(),
                })
                .collect(),
        });
        self
    }

    /// A store of the scenario's own: the example's trust bundle (the
    /// example CA, in `store.yaml`) is not there, so it is dropped too.
    pub fn store(mut self, observed: &[&str]) -> Self {
        self.0.spec.store.observed_certificates = observed.iter().map(|s| s.to_string()).collect();
        self.0.spec.trust_bundle = None;
        self
    }

    fn upgrade(&mut self) -> &mut UpgradePolicy {
        self.0.spec.upgrade.get_or_insert_with(UpgradePolicy::default)
    }

    pub fn min_soak(mut self, duration: &str) -> Self {
        self.upgrade().min_soak = Some(duration.to_owned());
        self
    }

    /// `spec.upgrade.failureAction`.
    pub fn failure_action(mut self, action: certshift::crd::FailureAction) -> Self {
        self.upgrade().failure_action = action;
        self
    }

    /// CRLs from the ConfigMap `name` (key `ca.crl`) are in force.
    pub fn revocation(mut self, config_map: &str) -> Self {
        self.0.spec.revocation = Some(certshift::crd::Revocation {
            crls: vec![certshift::crd::CrlSource {
                config_map_ref: Some(certshift::crd::KeySelector {
                    name: config_map.to_owned(),
                    key: None,
                }),
                secret_ref: None,
            }],
            distribution_points: None,
        });
        self
    }

    /// Anchors from the ConfigMap `name` (key `ca.crt`), as trust-manager writes it.
    pub fn trust_bundle(mut self, config_map: &str) -> Self {
        self.0.spec.trust_bundle = Some(certshift::crd::TrustBundleSource {
            config_map_ref: Some(certshift::crd::KeySelector {
                name: config_map.to_owned(),
                key: None,
            }),
            ..Default::default()
        });
        self
    }

    /// Clients admitted by common name, chaining to the trust bundle.
    pub fn clients_by_common_name(mut self, name: &str) -> Self {
        self.0.spec.client_certificate_common_names = vec![certshift::crd::ClientCertificateCommonName {
            certificate_common_name: name.to_owned(),
            certificate_issuer_thumbprint: String::new(),
            is_admin: false,
        }];
        self
    }

    /// `spec.upgrade.stageTimeout`.
    pub fn stage_timeout(mut self, duration: &str) -> Self {
        self.upgrade().stage_timeout = Some(duration.to_owned());
        self
    }

    /// `spec.upgrade`'s health check: wait, stable duration, retry timeout.
    pub fn health_check(mut self, wait: &str, stable: &str, retry: &str) -> Self {
        let upgrade = self.upgrade();
        upgrade.health_check_wait_duration = Some(wait.to_owned());
        upgrade.health_check_stable_duration = Some(stable.to_owned());
        upgrade.health_check_retry_timeout = Some(retry.to_owned());
        self
    }

    fn members(&mut self) -> &mut Members {
        self.0.spec.members.get_or_insert_with(Members::default)
    }

    /// Pods labelled `labels` are members.
    pub fn pod_members(mut self, pairs: &[(&str, &str)]) -> Self {
        self.members().pods = Some(LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        });
        self
    }

    /// A workload (`Deployment`, `StatefulSet`, `DaemonSet`) is a member.
    pub fn workload(mut self, kind: &str, name: &str) -> Self {
        self.members().workloads.push(WorkloadReference {
            kind: kind.to_owned(),
            name: name.to_owned(),
        });
        self
    }

    /// TLS endpoints at these `host:port` addresses are members.
    pub fn endpoints(mut self, addresses: &[&str]) -> Self {
        let endpoints = addresses.iter().map(|address| Endpoint {
            address: address.to_string(),
            ..Endpoint::default()
        });
        self.members().endpoints.extend(endpoints);
        self
    }

    /// Every ready address of a Service's port is a member endpoint.
    pub fn service_endpoints(mut self, service: &str, port_name: &str, server_name: &str) -> Self {
        self.members().endpoints.push(Endpoint {
            server_name: Some(server_name.to_owned()),
            service: Some(ServiceEndpoint {
                name: service.to_owned(),
                port: None,
                port_name: Some(port_name.to_owned()),
            }),
            ..Endpoint::default()
        });
        self
    }

    fn output(&mut self) -> &mut OutputSpec {
        self.0.spec.output.get_or_insert_with(OutputSpec::default)
    }

    pub fn template(mut self, key: &str, template: &str) -> Self {
        self.output().templates.push(ConfigTemplate {
            key: key.to_owned(),
            template: template.to_owned(),
        });
        self
    }

    /// Extra formats; PKCS12 takes its password from the Secret `password_secret`.
    pub fn formats(mut self, formats: &[OutputFormat], password_secret: &str) -> Self {
        let output = self.output();
        output.formats = formats.to_vec();
        output.pkcs12 = Some(Pkcs12Output {
            password_secret_ref: KeySelector {
                name: password_secret.to_owned(),
                key: None,
            },
        });
        self
    }

    pub async fn apply(&self, client: &Client, namespace: &str) {
        apply(client, namespace, &self.0).await;
    }
}

/// A Pod that plays a member: never scheduled (no kubelet).
pub fn member_pod(name: &str, pairs: &[(&str, &str)]) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels(pairs)},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/member"}]},
    }))
    .expect("pod")
}

/// A Secret with `stringData`, as users write one.
pub fn secret(name: &str, type_: Option<&str>, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(name),
        type_: type_.map(str::to_owned),
        string_data: Some(labels(data)),
        ..Secret::default()
    }
}

/// An ObservedCertificate of the Secret `source`.
pub fn observed_certificate(name: &str, source: &str, policy: Option<&str>) -> ObservedCertificate {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"source": {"secretRef": {"name": source}}, "policyRef": policy.map(|p| serde_json::json!({"name": p}))},
    }))
    .expect("ObservedCertificate")
}

/// A `kubernetes.io/tls` Secret holding a CA (its certificate and key), as a
/// CertificatePolicy's `issuer.ca.secretRef` reads it.
pub fn ca_secret(name: &str, ca: &crate::pki::Issued) -> Secret {
    secret(
        name,
        Some("kubernetes.io/tls"),
        &[("tls.crt", &ca.pem), ("tls.key", &ca.key.serialize_pem())],
    )
}

/// The Service Fabric enrollment as a policy: CN and DNS name
/// `cluster.example`, server and client auth, issued by the CA in
/// `ca_secret` into `secret_name`, renewed at `percentage` of `validity`.
pub fn policy(secret_name: &str, ca_secret: &str, validity: &str, percentage: u8) -> CertificatePolicy {
    CertificatePolicy::new(
        "cluster",
        CertificatePolicySpec {
            secret_name: secret_name.to_owned(),
            subject: Some(Subject {
                common_name: Some("cluster.example".to_owned()),
                ..Subject::default()
            }),
            dns_names: vec!["cluster.example".to_owned()],
            extended_key_usages: vec!["serverAuth".to_owned(), "clientAuth".to_owned()],
            validity: Some(validity.to_owned()),
            lifetime_action: Some(LifetimeAction {
                renew_at_percentage_lifetime: Some(percentage),
                days_before_expiry: None,
            }),
            issuer: IssuerReference {
                self_signed: None,
                ca: Some(CaIssuer {
                    secret_ref: LocalObjectReference {
                        name: ca_secret.to_owned(),
                    },
                }),
            },
            ..CertificatePolicySpec::default()
        },
    )
}

/// An EndpointSlice of Service `service` with one ready IPv4 address and a
/// named port (discovery.k8s.io/v1beta1, what kube-apiserver 1.20 serves).
pub async fn apply_endpoint_slice(client: &Client, namespace: &str, service: &str, address: &str, port: (&str, u16)) {
    let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "discovery.k8s.io",
        "v1beta1",
        "EndpointSlice",
    ));
    let name = format!("{service}-1");
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}],
    });
    Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&slice))
        .await
        .unwrap_or_else(|err| panic!("applying EndpointSlice {name}: {err}"));
}
