//! Members of a declaration and the revision each has loaded: the one small
//! interface the gates use. Pods report through an annotation; workloads and
//! endpoints plug in here.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;

use super::{Context, Error, kube_err};
use crate::crd::Members;
use crate::declaration::MemberReport;
use crate::outputs::OBSERVED_REVISION_ANNOTATION;

/// The observed revision of every member.
pub async fn report(ctx: &Context, namespace: &str, members: Option<&Members>) -> Result<MemberReport, Error> {
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
    report.members.sort();
    Ok(report)
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
