//! Members of a declaration and the revision each has loaded: the one small
//! interface the gates use. Pods report through an annotation; workloads and
//! endpoints plug in here.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::ListParams;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;

use super::{Context, Error, kube_err};
use crate::crd::{Endpoint, Members, ServiceEndpoint, WorkloadReference};
use crate::declaration::MemberReport;
use crate::outputs::{OBSERVED_REVISION_ANNOTATION, REVISION_ANNOTATION};
use crate::planner::Revision;

/// The observed revision of every member. Pods are read from `pods`, the
/// declaration controller's cache of their metadata: a list per reconcile
/// would make the API server read every pod of the namespace from etcd.
pub async fn report(
    ctx: &Context,
    pods: &Store<PartialObjectMeta<Pod>>,
    namespace: &str,
    members: Option<&Members>,
    current: Option<&Revision>,
) -> Result<MemberReport, Error> {
    let mut report = MemberReport::default();
    let Some(members) = members else {
        return Ok(report);
    };
    if let Some(selector) = &members.pods {
        // Until the first list of pods is in, no member is known: wait
        // rather than judge "no members" complete.
        pods.wait_until_ready().await.map_err(|_| Error::CacheStopped("pod"))?;
        report.members.extend(pod_members(
            pods.state().iter().map(|pod| &pod.metadata),
            namespace,
            selector,
        ));
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

/// The pods of `namespace` that `selector` takes, each with the revision it
/// reports in `certshift.io/observed-revision` (pods being deleted are gone).
fn pod_members<'a>(
    pods: impl Iterator<Item = &'a ObjectMeta>,
    namespace: &str,
    selector: &LabelSelector,
) -> Vec<(String, Option<u64>)> {
    let no_labels = BTreeMap::new();
    pods.filter(|pod| pod.namespace.as_deref() == Some(namespace) && pod.deletion_timestamp.is_none())
        .filter(|pod| selects(selector, pod.labels.as_ref().unwrap_or(&no_labels)))
        .map(|pod| {
            let observed = pod
                .annotations
                .as_ref()
                .and_then(|a| a.get(OBSERVED_REVISION_ANNOTATION))
                .and_then(|v| v.trim().parse::<u64>().ok());
            (format!("pod/{}", pod.name.as_deref().unwrap_or_default()), observed)
        })
        .collect()
}

/// Whether `selector` takes an object with `labels`, as the API server
/// decides it. Called for every declaration on every pod event, so it reads
/// the selector in place. A requirement the planner refuses (an unknown
/// operator, values that do not fit it) takes nothing.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let equal = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    equal
        && selector.match_expressions.iter().flatten().all(|requirement| {
            let value = labels.get(&requirement.key);
            let values = requirement.values.as_deref().unwrap_or_default();
            match requirement.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.contains(v)),
                "Exists" => values.is_empty() && value.is_some(),
                "DoesNotExist" => values.is_empty() && value.is_none(),
                _ => false,
            }
        })
}

/// Drops from a cached pod all but what [`pod_members`] and the controller's
/// mapper read: a cluster has many pods, and most of their metadata is
/// someone else's.
pub fn trim_pod(pod: &mut PartialObjectMeta<Pod>) {
    let meta = std::mem::take(&mut pod.metadata);
    let observed = meta
        .annotations
        .and_then(|mut a| a.remove_entry(OBSERVED_REVISION_ANNOTATION))
        .map(|entry| BTreeMap::from([entry]));
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
            let Some(d) = ctx
                .get_opt::<Deployment>(namespace, name, ("GetDeployment", "Deployment"))
                .await?
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
            let Some(set) = ctx
                .get_opt::<StatefulSet>(namespace, name, ("GetStatefulSet", "StatefulSet"))
                .await?
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
            let Some(ds) = ctx
                .get_opt::<DaemonSet>(namespace, name, ("GetDaemonSet", "DaemonSet"))
                .await?
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
    let kind = ("GetWorkload", "Workload");
    let template = match workload.kind.as_str() {
        "Deployment" => ctx
            .get_opt::<Deployment>(namespace, name, kind)
            .await?
            .and_then(|d| d.spec)
            .map(|s| s.template),
        "StatefulSet" => ctx
            .get_opt::<StatefulSet>(namespace, name, kind)
            .await?
            .and_then(|d| d.spec)
            .map(|s| s.template),
        "DaemonSet" => ctx
            .get_opt::<DaemonSet>(namespace, name, kind)
            .await?
            .and_then(|d| d.spec)
            .map(|s| s.template),
        _ => None,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], observed: Option<&str>) -> PartialObjectMeta<Pod> {
        let mut annotations = BTreeMap::from([("kubectl.kubernetes.io/restartedAt".to_owned(), "now".to_owned())]);
        if let Some(observed) = observed {
            annotations.insert(OBSERVED_REVISION_ANNOTATION.to_owned(), observed.to_owned());
        }
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                annotations: Some(annotations),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        }
    }

    #[test]
    fn pod_members_are_the_selected_pods_of_the_namespace_with_their_revision() {
        let mut pods = vec![
            pod("a", "m-1", &[("app", "db")], Some("3")),
            pod("a", "m-2", &[("app", "db")], Some(" 2\n")),
            pod("a", "m-3", &[("app", "db")], Some("two")),
            pod("a", "m-4", &[("app", "db")], None),
            pod("a", "other", &[("app", "web")], Some("3")),
            pod("b", "m-1", &[("app", "db")], Some("3")),
            pod("a", "gone", &[("app", "db")], Some("3")),
        ];
        pods[6].metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        for pod in &mut pods {
            trim_pod(pod);
        }
        assert_eq!(pods[0].metadata.uid, None, "trimmed");
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_owned(), "db".to_owned())])),
            match_expressions: None,
        };
        let members = pod_members(pods.iter().map(|p| &p.metadata), "a", &selector);
        assert_eq!(
            members,
            [
                ("pod/m-1".to_owned(), Some(3)),
                ("pod/m-2".to_owned(), Some(2)),
                ("pod/m-3".to_owned(), None),
                ("pod/m-4".to_owned(), None),
            ]
        );
    }

    #[test]
    fn selectors_take_what_the_api_server_takes() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let requirement = |key: &str, operator: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        };
        let selector = |labels: &[(&str, &str)], expressions: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            match_expressions: Some(expressions),
        };
        let labels: BTreeMap<String, String> = [("app", "db"), ("tier", "back")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cases = [
            (selector(&[], vec![]), true),
            (selector(&[("app", "db")], vec![]), true),
            (selector(&[("app", "web")], vec![]), false),
            (selector(&[("zone", "a")], vec![]), false),
            (selector(&[], vec![requirement("tier", "In", &["back", "mid"])]), true),
            (selector(&[], vec![requirement("tier", "In", &["front"])]), false),
            (selector(&[], vec![requirement("zone", "In", &["a"])]), false),
            (selector(&[], vec![requirement("tier", "NotIn", &["front"])]), true),
            (selector(&[], vec![requirement("tier", "NotIn", &["back"])]), false),
            (selector(&[], vec![requirement("zone", "NotIn", &["a"])]), true),
            (selector(&[], vec![requirement("app", "Exists", &[])]), true),
            (selector(&[], vec![requirement("zone", "Exists", &[])]), false),
            (selector(&[], vec![requirement("zone", "DoesNotExist", &[])]), true),
            (selector(&[], vec![requirement("app", "DoesNotExist", &[])]), false),
            (
                selector(&[("app", "db")], vec![requirement("tier", "In", &["front"])]),
                false,
            ),
        ];
        for (selector, expected) in &cases {
            assert_eq!(selects(selector, &labels), *expected, "{selector:?}");
            // kube's own matcher agrees wherever the selector is valid.
            use kube::core::{Selector, SelectorExt as _};
            let theirs = Selector::try_from(selector.clone()).expect("valid");
            assert_eq!(theirs.matches(&labels), *expected, "kube: {selector:?}");
        }
        // What the planner refuses takes nothing.
        for invalid in [
            requirement("app", "Equals", &["db"]),
            requirement("app", "In", &[]),
            requirement("app", "Exists", &["db"]),
        ] {
            assert!(!selects(&selector(&[], vec![invalid.clone()]), &labels), "{invalid:?}");
        }
    }

    #[test]
    fn a_trimmed_pod_keeps_only_what_members_read() {
        let mut p = pod("a", "m-1", &[("app", "db")], Some("3"));
        p.metadata.owner_references = Some(vec![Default::default()]);
        trim_pod(&mut p);
        let annotations = p.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), [OBSERVED_REVISION_ANNOTATION]);
        assert_eq!(p.metadata.owner_references, None);
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
