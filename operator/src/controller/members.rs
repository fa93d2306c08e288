//! Members of a declaration and the revision each has loaded: the one small
//! interface the gates use. Pods report through an annotation; workloads and
//! endpoints plug in here.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use kube::api::ListParams;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use super::{Context, Error, kube_err};
use crate::crd::{Endpoint, Members, ServiceEndpoint, WorkloadReference};
use crate::declaration::MemberReport;
use crate::outputs::{OBSERVED_REVISION_ANNOTATION, REVISION_ANNOTATION};
use crate::planner::Revision;

/// The observed revision of every member.
pub async fn report(
    ctx: &Context,
    namespace: &str,
    members: Option<&Members>,
    current: Option<&Revision>,
) -> Result<MemberReport, Error> {
    let mut report = MemberReport::default();
    let Some(members) = members else {
        return Ok(report);
    };
    if let Some(selector) = &members.pods {
        let pods = ctx.api::<Pod>(namespace);
        let params = ListParams::default().labels(&selector_string(selector));
        let list = pods
            .list_metadata(&params)
            .await
            .map_err(kube_err("ListPods", "Pod", namespace, "-"))?;
        for pod in list.items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let observed = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(OBSERVED_REVISION_ANNOTATION))
                .and_then(|v| v.trim().parse::<u64>().ok());
            report
                .members
                .push((format!("pod/{}", pod.metadata.name.unwrap_or_default()), observed));
        }
    }
    // An endpoint has loaded the revision in force when it presents its certificate.
    for (label, endpoint) in endpoints(ctx, namespace, Some(members)).await? {
        let observed = match (current, super::probe::presented(&endpoint).await) {
            (Some(revision), Ok(thumbprint)) if thumbprint == revision.presented => Some(revision.revision),
            (_, Err(err)) => {
                tracing::debug!(endpoint = %endpoint.address, error = %err, "probe");
                None
            }
            _ => None,
        };
        report.members.push((format!("endpoint/{label}"), observed));
    }
    for workload in &members.workloads {
        let observed = workload_revision(ctx, namespace, workload).await?;
        report.members.push((
            format!("{}/{}", workload.kind.to_ascii_lowercase(), workload.name),
            observed,
        ));
    }
    report.members.sort();
    Ok(report)
}

/// The revision a workload has rolled out: the one stamped on its pod template,
/// once the rollout of that template is complete as the kind defines it.
async fn workload_revision(ctx: &Context, namespace: &str, workload: &WorkloadReference) -> Result<Option<u64>, Error> {
    let stamped = |template: Option<&PodTemplateSpec>| {
        template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .and_then(|r| r.parse::<u64>().ok())
    };
    let current = |generation: Option<i64>, observed: Option<i64>| observed.is_some_and(|o| Some(o) >= generation);
    let name = &workload.name;
    Ok(match workload.kind.as_str() {
        "Deployment" => {
            let Some(d) = ctx.api::<Deployment>(namespace).get_opt(name).await.map_err(kube_err(
                "GetDeployment",
                "Deployment",
                namespace,
                name,
            ))?
            else {
                return Ok(None);
            };
            let s = d.status.unwrap_or_default();
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let done = current(d.metadata.generation, s.observed_generation)
                && s.updated_replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want;
            if done {
                stamped(d.spec.as_ref().map(|s| &s.template))
            } else {
                None
            }
        }
        "StatefulSet" => {
            let Some(set) = ctx.api::<StatefulSet>(namespace).get_opt(name).await.map_err(kube_err(
                "GetStatefulSet",
                "StatefulSet",
                namespace,
                name,
            ))?
            else {
                return Ok(None);
            };
            let s = set.status.clone().unwrap_or_default();
            let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let done = current(set.metadata.generation, s.observed_generation)
                && s.updated_replicas.unwrap_or(0) == want
                && s.ready_replicas.unwrap_or(0) == want
                && s.current_revision.is_some()
                && s.current_revision == s.update_revision;
            if done {
                stamped(set.spec.as_ref().map(|s| &s.template))
            } else {
                None
            }
        }
        "DaemonSet" => {
            let Some(ds) = ctx.api::<DaemonSet>(namespace).get_opt(name).await.map_err(kube_err(
                "GetDaemonSet",
                "DaemonSet",
                namespace,
                name,
            ))?
            else {
                return Ok(None);
            };
            let s = ds.status.clone().unwrap_or_default();
            let done = current(ds.metadata.generation, s.observed_generation)
                && s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled
                && s.number_available.unwrap_or(0) == s.desired_number_scheduled;
            if done {
                stamped(ds.spec.as_ref().map(|s| &s.template))
            } else {
                None
            }
        }
        _ => None,
    })
}

/// Stamps `certshift.io/revision` on each workload's pod template, which
/// starts its rollout (server-side apply of that one field).
pub async fn stamp(ctx: &Context, namespace: &str, members: Option<&Members>, revision: u64) -> Result<(), Error> {
    for workload in members.map(|m| m.workloads.as_slice()).unwrap_or_default() {
        if stamped_revision(ctx, namespace, workload).await? == Some(revision) {
            continue; // already stamped: no write
        }
        let patch = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": workload.kind,
            "metadata": {"name": workload.name},
            "spec": {"template": {"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}}},
        });
        let params = PatchParams::apply(STAMP_MANAGER).force();
        let name = &workload.name;
        let result = match workload.kind.as_str() {
            "Deployment" => ctx
                .api::<Deployment>(namespace)
                .patch(name, &params, &Patch::Apply(&patch))
                .await
                .map(|_| ()),
            "StatefulSet" => ctx
                .api::<StatefulSet>(namespace)
                .patch(name, &params, &Patch::Apply(&patch))
                .await
                .map(|_| ()),
            "DaemonSet" => ctx
                .api::<DaemonSet>(namespace)
                .patch(name, &params, &Patch::Apply(&patch))
                .await
                .map(|_| ()),
            _ => Ok(()),
        };
        result.map_err(kube_err("StampWorkload", "Workload", namespace, name))?;
        ctx.metrics.write("Workload");
    }
    Ok(())
}

/// The revision stamped on a workload's pod template (rolled out or not).
async fn stamped_revision(ctx: &Context, namespace: &str, workload: &WorkloadReference) -> Result<Option<u64>, Error> {
    let name = &workload.name;
    let template = match workload.kind.as_str() {
        "Deployment" => ctx
            .api::<Deployment>(namespace)
            .get_opt(name)
            .await
            .map(|d| d.and_then(|d| d.spec).map(|s| s.template)),
        "StatefulSet" => ctx
            .api::<StatefulSet>(namespace)
            .get_opt(name)
            .await
            .map(|d| d.and_then(|d| d.spec).map(|s| s.template)),
        "DaemonSet" => ctx
            .api::<DaemonSet>(namespace)
            .get_opt(name)
            .await
            .map(|d| d.and_then(|d| d.spec).map(|s| s.template)),
        _ => Ok(None),
    }
    .map_err(kube_err("GetWorkload", "Workload", namespace, name))?;
    Ok(template
        .and_then(|t| t.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(REVISION_ANNOTATION).and_then(|r| r.parse().ok())))
}

/// Only the revision annotation of the pod template is ours.
const STAMP_MANAGER: &str = "certshift-declaration-rollout";

/// The endpoints to probe, each with a label naming it: `address` ones as
/// given, `service` ones resolved to every ready address of the Service's
/// EndpointSlices (discovery.k8s.io/v1, or v1beta1 on servers before 1.21).
pub async fn endpoints(
    ctx: &Context,
    namespace: &str,
    members: Option<&Members>,
) -> Result<Vec<(String, Endpoint)>, Error> {
    let mut out = Vec::new();
    for endpoint in members.map(|m| m.endpoints.as_slice()).unwrap_or_default() {
        let Some(service) = &endpoint.service else {
            out.push((endpoint.address.clone(), endpoint.clone()));
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
                    return Err(kube_err(
                        "ListEndpointSlices",
                        "EndpointSlice",
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
        for address in slice_addresses(&slices, service) {
            out.push((
                format!("{}/{address}", service.name),
                Endpoint {
                    address,
                    server_name: Some(server_name.clone()),
                    service: None,
                },
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

/// A LabelSelector as the `labelSelector` query parameter.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        parts.push(match expression.operator.as_str() {
            "In" => format!("{} in ({values})", expression.key),
            "NotIn" => format!("{} notin ({values})", expression.key),
            "Exists" => expression.key.clone(),
            _ => format!("!{}", expression.key),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

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
