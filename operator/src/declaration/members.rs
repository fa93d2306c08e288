//! Members and the revision each has loaded (docs/operator.md, "Members"), judged from what was
//! read: pod annotations, workload objects, probe results. Pure; the shell
//! reads the objects and probes the endpoints.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::crd::{MembersStatus, WorkloadReference};
use crate::outputs::{HEALTH_ANNOTATION, OBSERVED_REVISION_ANNOTATION, REVISION_ANNOTATION, ReportedHealth};
use crate::revision::Revision;
use crate::thumbprint::Thumbprint;

/// What each member reports: the revision it has loaded, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberReport {
    /// `kind/name` → observed revision, sorted by name.
    pub members: Vec<(String, Option<u64>)>,
}

impl MemberReport {
    pub fn status(&self, revision: u64) -> MembersStatus {
        let laggards: Vec<String> = self
            .members
            .iter()
            .filter(|(_, observed)| observed.is_none_or(|o| o < revision))
            .map(|(name, _)| name.clone())
            .collect();
        let total = u32::try_from(self.members.len()).unwrap_or(u32::MAX);
        let converged = total - u32::try_from(laggards.len()).unwrap_or(total);
        MembersStatus {
            total,
            converged,
            laggards,
            summary: format!("{converged}/{total}"),
        }
    }
}

/// A workload member as read, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    DaemonSet(DaemonSet),
}

impl Workload {
    fn template(&self) -> Option<&PodTemplateSpec> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.template),
            Workload::DaemonSet(d) => d.spec.as_ref().map(|s| &s.template),
        }
    }

    /// The revision stamped on the pod template (rolled out or not).
    pub fn stamped(&self) -> Option<u64> {
        self.template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(REVISION_ANNOTATION))
            .and_then(|r| r.parse().ok())
    }

    /// The revision the workload has rolled out: the stamped one, once the
    /// rollout of that template is complete as its controller reports it
    /// (what `kubectl rollout status` waits for).
    pub fn rolled_out(&self) -> Option<u64> {
        let current = |meta: &ObjectMeta, observed: Option<i64>| observed.is_some_and(|o| Some(o) >= meta.generation);
        let complete = match self {
            Workload::Deployment(d) => {
                let s = d.status.clone().unwrap_or_default();
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                current(&d.metadata, s.observed_generation)
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.available_replicas.unwrap_or(0) == want
                    && s.replicas.unwrap_or(0) == want
            }
            Workload::StatefulSet(set) => {
                let s = set.status.clone().unwrap_or_default();
                let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                current(&set.metadata, s.observed_generation)
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.ready_replicas.unwrap_or(0) == want
                    && s.current_revision.is_some()
                    && s.current_revision == s.update_revision
            }
            Workload::DaemonSet(ds) => {
                let s = ds.status.clone().unwrap_or_default();
                current(&ds.metadata, s.observed_generation)
                    && s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled
                    && s.number_available.unwrap_or(0) == s.desired_number_scheduled
            }
        };
        if complete { self.stamped() } else { None }
    }
}

/// The members as read for one reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberInputs {
    /// Selected pods (`pod/<name>`) and the revision each reports.
    pub pods: Vec<(String, Option<u64>)>,
    /// Each workload named in the spec, and the object if it exists.
    pub workloads: Vec<(WorkloadReference, Option<Workload>)>,
    /// Each endpoint (`endpoint/<label>`) and what it presented, or why the probe failed.
    pub endpoints: Vec<(String, Result<Thumbprint, String>)>,
    /// What the selected pods' agents report of their health (`pod/<name>`),
    /// for the pods that report it.
    pub pod_health: BTreeMap<String, ReportedHealth>,
}

impl MemberInputs {
    /// The revision each member has loaded, with `current` the revision in force.
    pub fn report(&self, current: Option<&Revision>) -> MemberReport {
        let mut members = self.pods.clone();
        for (label, presented) in &self.endpoints {
            // An endpoint has loaded the revision in force when it presents its certificate.
            let observed = match (current, presented) {
                (Some(revision), Ok(thumbprint)) if *thumbprint == revision.presented => Some(revision.revision),
                _ => None,
            };
            members.push((format!("endpoint/{label}"), observed));
        }
        for (reference, workload) in &self.workloads {
            members.push((
                format!("{}/{}", reference.kind.to_ascii_lowercase(), reference.name),
                workload.as_ref().and_then(Workload::rolled_out),
            ));
        }
        members.sort();
        MemberReport { members }
    }
}

/// The pods of `namespace` that `selector` takes (pods being deleted are gone).
fn selected<'a>(
    pods: impl Iterator<Item = &'a ObjectMeta>,
    namespace: &str,
    selector: &LabelSelector,
) -> impl Iterator<Item = (String, &'a ObjectMeta)> {
    pods.filter(move |pod| pod.namespace.as_deref() == Some(namespace) && pod.deletion_timestamp.is_none())
        .filter(|pod| selects(selector, pod.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .map(|pod| (format!("pod/{}", pod.name.as_deref().unwrap_or_default()), pod))
}

fn annotation<'a>(pod: &'a ObjectMeta, key: &str) -> Option<&'a String> {
    pod.annotations.as_ref().and_then(|a| a.get(key))
}

/// The pods of `namespace` that `selector` takes, each with the revision it
/// reports in `certshift.io/observed-revision` (pods being deleted are gone).
pub fn pod_members<'a>(
    pods: impl Iterator<Item = &'a ObjectMeta>,
    namespace: &str,
    selector: &LabelSelector,
) -> Vec<(String, Option<u64>)> {
    selected(pods, namespace, selector)
        .map(|(name, pod)| {
            let observed = annotation(pod, OBSERVED_REVISION_ANNOTATION).and_then(|v| v.trim().parse::<u64>().ok());
            (name, observed)
        })
        .collect()
}

/// What the agents of the pods [`pod_members`] takes report of their
/// health (`certshift.io/health`); an annotation that does not parse is
/// no report.
pub fn pod_health<'a>(
    pods: impl Iterator<Item = &'a ObjectMeta>,
    namespace: &str,
    selector: &LabelSelector,
) -> BTreeMap<String, ReportedHealth> {
    selected(pods, namespace, selector)
        .filter_map(|(name, pod)| Some((name, serde_json::from_str(annotation(pod, HEALTH_ANNOTATION)?).ok()?)))
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

#[cfg(test)]
mod tests;
