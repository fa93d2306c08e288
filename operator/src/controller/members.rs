//! Reading members for the declaration controller: the pod cache's trim,
//! workload objects, and endpoints resolved from EndpointSlices. What they
//! mean is decided in [`crate::declaration`] (`MemberInputs::report`,
//! `Workload::rolled_out`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;

use super::{Context, Error, Verb, kube_err};
use crate::crd::{Endpoint, Members, ServiceEndpoint, WorkloadReference};
use crate::declaration::Workload;
use crate::outputs::{HEALTH_ANNOTATION, OBSERVED_REVISION_ANNOTATION, REVISION_ANNOTATION};

/// Drops from a cached pod all but what `pod_members` and the controller's
/// mapper read: a cluster has many pods, and most of their metadata is
/// someone else's.
pub fn trim_pod(pod: &mut PartialObjectMeta<Pod>) {
    let meta = std::mem::take(&mut pod.metadata);
    let observed: BTreeMap<String, String> = meta
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key == OBSERVED_REVISION_ANNOTATION || key == HEALTH_ANNOTATION)
        .collect();
    let observed = (!observed.is_empty()).then_some(observed);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        labels: meta.labels,
        annotations: observed,
        deletion_timestamp: meta.deletion_timestamp,
        resource_version: meta.resource_version,
        ..ObjectMeta::default()
    };
}

/// The workload a declaration names, if it exists. Kinds other than the
/// three are refused by the CRD and the planner (`InvalidMembers`) before
/// anything is read.
pub async fn read_workload(
    ctx: &Context,
    namespace: &str,
    workload: &WorkloadReference,
) -> Result<Option<Workload>, Error> {
    let name = &workload.name;
    Ok(match workload.kind.as_str() {
        "Deployment" => ctx.get_opt(namespace, name).await?.map(Workload::Deployment),
        "StatefulSet" => ctx.get_opt(namespace, name).await?.map(Workload::StatefulSet),
        "DaemonSet" => ctx.get_opt(namespace, name).await?.map(Workload::DaemonSet),
        _ => None,
    })
}

/// Only the revision annotation of the pod template is ours.
const STAMP_MANAGER: &str = "certshift-declaration-rollout";

/// Stamps `certshift.io/revision` on a workload's pod template, which
/// starts its rollout (server-side apply of that one field).
pub async fn stamp(ctx: &Context, namespace: &str, workload: &WorkloadReference, revision: u64) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": workload.kind,
        "metadata": {"name": workload.name},
        "spec": {"template": {"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}}},
    });
    let (params, name) = (PatchParams::apply(STAMP_MANAGER).force(), &workload.name);
    let patch = Patch::Apply(&patch);
    match workload.kind.as_str() {
        "Deployment" => {
            let api: Api<Deployment> = ctx.api(namespace);
            api.patch(name, &params, &patch).await.map(drop)
        }
        "StatefulSet" => {
            let api: Api<StatefulSet> = ctx.api(namespace);
            api.patch(name, &params, &patch).await.map(drop)
        }
        "DaemonSet" => {
            let api: Api<DaemonSet> = ctx.api(namespace);
            api.patch(name, &params, &patch).await.map(drop)
        }
        // decide stamps only workloads it was given, and only these kinds are read.
        _ => return Ok(()),
    }
    .map_err(|err| Error::Kube {
        verb: Verb::Stamp,
        kind: workload.kind.clone().into(),
        namespace: namespace.to_owned(),
        name: name.clone(),
        source: Box::new(err),
    })?;
    ctx.metrics.write("Workload");
    Ok(())
}

/// The endpoints to probe, each with a label naming it: `address` ones as
/// given, `service` ones resolved to every ready address of the Service's
/// EndpointSlices (discovery.k8s.io/v1, or v1beta1 on servers before 1.21).
/// A Service with no ready address for the port is a member that has loaded
/// nothing (a typo must not remove the gate): its entry says why.
pub async fn endpoints(
    ctx: &Context,
    namespace: &str,
    members: Option<&Members>,
) -> Result<Vec<(String, Result<Endpoint, String>)>, Error> {
    let mut out = Vec::new();
    for endpoint in members.map(|m| m.endpoints.as_slice()).unwrap_or_default() {
        let Some(service) = &endpoint.service else {
            out.push((endpoint.address.clone(), Ok(endpoint.clone())));
            continue;
        };
        let selector = format!("kubernetes.io/service-name={}", service.name);
        let mut slices = Vec::new();
        for version in ["v1", "v1beta1"] {
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("discovery.k8s.io", version, "EndpointSlice"));
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
            match api.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => {
                    slices = list.items.into_iter().map(|o| o.data).collect();
                    break;
                }
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(err) => {
                    return Err(kube_err::<k8s_openapi::api::discovery::v1::EndpointSlice>(
                        Verb::List,
                        namespace,
                        &service.name,
                    )(err));
                }
            }
        }
        let server_name = endpoint
            .server_name
            .clone()
            .unwrap_or_else(|| format!("{}.{namespace}.svc", service.name));
        let addresses = slice_addresses(&slices, service);
        if addresses.is_empty() {
            let port = match (&service.port_name, service.port) {
                (Some(name), _) => format!("port {name:?}"),
                (None, Some(number)) => format!("port {number}"),
                (None, None) => "its only port".to_owned(),
            };
            out.push((
                format!("{}/-", service.name),
                Err(format!(
                    "Service {namespace}/{} has no ready address for {port}",
                    service.name
                )),
            ));
        }
        for address in addresses {
            out.push((
                format!("{}/{address}", service.name),
                Ok(Endpoint {
                    address,
                    server_name: Some(server_name.clone()),
                    service: None,
                    http_get: endpoint.http_get.clone(),
                }),
            ));
        }
    }
    Ok(out)
}

/// `host:port` of every ready endpoint of the slices, for the Service's port.
pub fn slice_addresses(slices: &[serde_json::Value], service: &ServiceEndpoint) -> Vec<String> {
    let mut out = Vec::new();
    for slice in slices {
        let ports = slice["ports"].as_array().cloned().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| match (&service.port_name, service.port) {
                (Some(name), _) => p["name"].as_str() == Some(name.as_str()),
                (None, Some(number)) => p["port"].as_u64() == Some(u64::from(number)),
                (None, None) => ports.len() == 1,
            })
            .and_then(|p| p["port"].as_u64());
        let Some(port) = port else { continue };
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            if endpoint["conditions"]["ready"].as_bool() == Some(false) {
                continue;
            }
            for address in endpoint["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
            {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.to_owned()
                };
                out.push(format!("{host}:{port}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmed_pod_keeps_only_what_members_read() {
        let mut p = PartialObjectMeta::<Pod> {
            metadata: ObjectMeta {
                name: Some("m-1".into()),
                namespace: Some("a".into()),
                labels: Some(BTreeMap::from([("app".to_owned(), "db".to_owned())])),
                annotations: Some(BTreeMap::from([
                    (OBSERVED_REVISION_ANNOTATION.to_owned(), "3".to_owned()),
                    ("kubectl.kubernetes.io/restartedAt".to_owned(), "now".to_owned()),
                ])),
                uid: Some("uid-1".into()),
                owner_references: Some(vec![Default::default()]),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        };
        trim_pod(&mut p);
        let annotations = p.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), [OBSERVED_REVISION_ANNOTATION]);
        assert_eq!((p.metadata.owner_references, p.metadata.uid), (None, None));
        assert_eq!(p.metadata.labels.unwrap_or_default().len(), 1);
    }

    #[test]
    fn ready_slice_addresses_for_the_port() {
        let slices = vec![serde_json::json!({
            "ports": [{"name": "https", "port": 8443}, {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["fd00::1"]},
            ],
        })];
        let by_name = ServiceEndpoint {
            name: "m".into(),
            port: None,
            port_name: Some("https".into()),
        };
        assert_eq!(
            slice_addresses(&slices, &by_name),
            ["10.0.0.1:8443", "10.0.0.2:8443", "[fd00::1]:8443"]
        );
        let by_number = ServiceEndpoint {
            name: "m".into(),
            port: Some(9090),
            port_name: None,
        };
        assert_eq!(slice_addresses(&slices, &by_number).len(), 3);
        let ambiguous = ServiceEndpoint {
            name: "m".into(),
            port: None,
            port_name: None,
        };
        assert!(slice_addresses(&slices, &ambiguous).is_empty(), "two ports: name one");
    }
}
