use super::*;
use crate::testing::tp;

fn meta(namespace: &str, name: &str, labels: &[(&str, &str)], observed: Option<&str>) -> ObjectMeta {
    let mut annotations = BTreeMap::from([("kubectl.kubernetes.io/restartedAt".to_owned(), "now".to_owned())]);
    if let Some(observed) = observed {
        annotations.insert(OBSERVED_REVISION_ANNOTATION.to_owned(), observed.to_owned());
    }
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

#[test]
fn pod_members_are_the_selected_pods_of_the_namespace_with_their_revision() {
    let mut pods = [
        meta("a", "m-1", &[("app", "db")], Some("3")),
        meta("a", "m-2", &[("app", "db")], Some(" 2\n")),
        meta("a", "m-3", &[("app", "db")], Some("two")),
        meta("a", "m-4", &[("app", "db")], None),
        meta("a", "other", &[("app", "web")], Some("3")),
        meta("b", "m-1", &[("app", "db")], Some("3")),
        meta("a", "gone", &[("app", "db")], Some("3")),
    ];
    pods[6].deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::UNIX_EPOCH,
    ));
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_owned(), "db".to_owned())])),
        match_expressions: None,
    };
    assert_eq!(
        pod_members(pods.iter(), "a", &selector),
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

/// A workload as kube-controller-manager leaves it, from its JSON.
fn workload(json: serde_json::Value) -> Workload {
    match json["kind"].as_str() {
        Some("Deployment") => Workload::Deployment(serde_json::from_value(json).expect("Deployment")),
        Some("StatefulSet") => Workload::StatefulSet(serde_json::from_value(json).expect("StatefulSet")),
        Some("DaemonSet") => Workload::DaemonSet(serde_json::from_value(json).expect("DaemonSet")),
        other => panic!("kind {other:?}"),
    }
}

fn template(revision: u64) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"annotations": {"certshift.io/revision": revision.to_string()}, "labels": {"app": "m"}},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    })
}

#[test]
fn a_deployment_has_rolled_out_when_every_replica_is_updated_and_available() {
    let deployment = |generation: i64, status: serde_json::Value| {
        workload(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "m", "namespace": "a", "generation": generation},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "m"}}, "template": template(4)},
            "status": status,
        }))
    };
    // Mid-rollout: one new pod up, old ones still serving (surge 25 %).
    let rolling = deployment(
        5,
        serde_json::json!({"observedGeneration": 5, "replicas": 4, "updatedReplicas": 1,
            "readyReplicas": 4, "availableReplicas": 3, "unavailableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}),
    );
    // The controller has not seen the new template yet (status of generation 4).
    let unseen = deployment(
        5,
        serde_json::json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3,
            "readyReplicas": 3, "availableReplicas": 3}),
    );
    let done = deployment(
        5,
        serde_json::json!({"observedGeneration": 5, "replicas": 3, "updatedReplicas": 3,
            "readyReplicas": 3, "availableReplicas": 3,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                           {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}),
    );
    assert_eq!(rolling.rolled_out(), None);
    assert_eq!(unseen.rolled_out(), None);
    assert_eq!(done.rolled_out(), Some(4));
    assert_eq!(rolling.stamped(), Some(4), "stamped before it rolls out");
}

#[test]
fn a_statefulset_has_rolled_out_when_the_update_revision_is_current_and_ready() {
    let set = |status: serde_json::Value| {
        workload(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "m", "namespace": "a", "generation": 3},
            "spec": {"replicas": 2, "serviceName": "m", "selector": {"matchLabels": {"app": "m"}}, "template": template(2)},
            "status": status,
        }))
    };
    let rolling = set(
        serde_json::json!({"observedGeneration": 3, "replicas": 2, "readyReplicas": 2,
        "currentReplicas": 1, "updatedReplicas": 1,
        "currentRevision": "m-6d4cf56db6", "updateRevision": "m-7b8f9c6d5", "collisionCount": 0}),
    );
    let done = set(
        serde_json::json!({"observedGeneration": 3, "replicas": 2, "readyReplicas": 2,
        "currentReplicas": 2, "updatedReplicas": 2,
        "currentRevision": "m-7b8f9c6d5", "updateRevision": "m-7b8f9c6d5", "collisionCount": 0}),
    );
    let not_ready = set(
        serde_json::json!({"observedGeneration": 3, "replicas": 2, "readyReplicas": 1,
        "currentReplicas": 2, "updatedReplicas": 2,
        "currentRevision": "m-7b8f9c6d5", "updateRevision": "m-7b8f9c6d5"}),
    );
    assert_eq!(rolling.rolled_out(), None);
    assert_eq!(not_ready.rolled_out(), None);
    assert_eq!(done.rolled_out(), Some(2));
}

#[test]
fn a_daemonset_has_rolled_out_when_every_node_runs_an_updated_available_pod() {
    let daemons = |status: serde_json::Value| {
        workload(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "m", "namespace": "a", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "m"}}, "template": template(7)},
            "status": status,
        }))
    };
    let rolling = daemons(serde_json::json!({"observedGeneration": 2, "currentNumberScheduled": 3,
        "desiredNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3,
        "updatedNumberScheduled": 2, "numberAvailable": 2, "numberUnavailable": 1}));
    let done = daemons(serde_json::json!({"observedGeneration": 2, "currentNumberScheduled": 3,
        "desiredNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3,
        "updatedNumberScheduled": 3, "numberAvailable": 3}));
    let stale = daemons(serde_json::json!({"observedGeneration": 1, "currentNumberScheduled": 3,
        "desiredNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3,
        "updatedNumberScheduled": 3, "numberAvailable": 3}));
    assert_eq!(rolling.rolled_out(), None);
    assert_eq!(stale.rolled_out(), None);
    assert_eq!(done.rolled_out(), Some(7));
}

#[test]
fn the_report_names_every_member_with_what_it_loaded() {
    let revision = Revision {
        revision: 3,
        stage: None,
        change: None,
        presented: tp("G"),
        accepted: Default::default(),
        clients: Default::default(),
        tolerated: Vec::new(),
        anchors: Vec::new(),
        cause: None,
    };
    let inputs = MemberInputs {
        pod_health: Default::default(),
        pods: vec![("pod/b".into(), Some(3)), ("pod/a".into(), Some(2))],
        workloads: vec![(
            WorkloadReference {
                kind: "StatefulSet".into(),
                name: "m".into(),
            },
            None,
        )],
        endpoints: vec![
            ("10.0.0.1:443".into(), Ok(tp("G"))),
            ("10.0.0.2:443".into(), Ok(tp("Old"))),
            ("10.0.0.3:443".into(), Err("connection refused".into())),
        ],
    };
    let report = inputs.report(Some(&revision));
    assert_eq!(
        report.members,
        [
            ("endpoint/10.0.0.1:443".to_owned(), Some(3)),
            ("endpoint/10.0.0.2:443".to_owned(), None),
            ("endpoint/10.0.0.3:443".to_owned(), None),
            ("pod/a".to_owned(), Some(2)),
            ("pod/b".to_owned(), Some(3)),
            ("statefulset/m".to_owned(), None),
        ]
    );
    let status = report.status(3);
    assert_eq!((status.converged, status.total, status.summary.as_str()), (2, 6, "2/6"));
}
