//! Members of a declaration and the revision each has loaded: the one small
//! interface the gates use. Pods report through an annotation; workloads and
//! endpoints plug in here.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::api::{Patch, PatchParams};

use super::{Context, Error, kube_err};
use crate::crd::{Members, WorkloadReference};
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
    for endpoint in &members.endpoints {
        let observed = match (current, super::probe::presented(endpoint).await) {
            (Some(revision), Ok(thumbprint)) if thumbprint == revision.presented => Some(revision.revision),
            (_, Err(err)) => {
                tracing::debug!(endpoint = %endpoint.address, error = %err, "probe");
                None
            }
            _ => None,
        };
        report
            .members
            .push((format!("endpoint/{}", endpoint.address), observed));
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
