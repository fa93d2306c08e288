//! Workload members: rollouts by the controller-manager gate each revision; garbage collection.

use super::*;
use crate::audit::published_once;

/// The readiness gate of the workloads' pods: Ready only once the test has
/// seen them up for a second and released them (a readiness gate is how
/// load balancers and other controllers hold pods back), so the test knows
/// when each rollout can have completed.
pub(crate) const RELEASED: &str = "certshift.io/test-released";

/// A workload of `kind` named `members`: busybox pods that sleep.
pub(crate) fn workload(kind: &str) -> serde_json::Value {
    let template = serde_json::json!({
        "metadata": {"labels": {"app": "workload"}},
        "spec": {
            "readinessGates": [{"conditionType": RELEASED}],
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "member", "image": "docker.io/local/busybox:1", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        },
    });
    let mut spec = serde_json::json!({"selector": {"matchLabels": {"app": "workload"}}, "template": template});
    match kind {
        "Deployment" => spec["replicas"] = 2.into(),
        "StatefulSet" => {
            spec["replicas"] = 2.into();
            spec["serviceName"] = "members".into();
            spec["podManagementPolicy"] = "Parallel".into();
        }
        _ => {}
    }
    serde_json::json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "members"}, "spec": spec})
}

/// How many pod templates the workload's controller has rolled out: its
/// ReplicaSets, or its ControllerRevisions.
pub(crate) async fn templates_rolled_out(admin: &Client, ns: &str, kind: &str) -> usize {
    let params = kube::api::ListParams::default().labels("app=workload");
    if kind == "Deployment" {
        let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(admin.clone(), ns);
        sets.list(&params).await.map_or(0, |l| l.items.len())
    } else {
        let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> = Api::namespaced(admin.clone(), ns);
        revisions.list(&params).await.map_or(0, |l| l.items.len())
    }
}

/// Releases the workload pods of `ns` (their readiness gate) a second after
/// their containers are ready, until the task is aborted; records, for each
/// stamped revision, when its last pod was released.
pub(crate) fn release_pods(
    admin: &Client,
    ns: &str,
) -> (tokio::task::JoinHandle<()>, Arc<StdMutex<BTreeMap<u64, Timestamp>>>) {
    let released: Arc<StdMutex<BTreeMap<u64, Timestamp>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let record = released.clone();
    let task = tokio::spawn(async move {
        let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
        loop {
            let listed = pods
                .list(&kube::api::ListParams::default().labels("app=workload"))
                .await;
            for pod in listed.map(|l| l.items).unwrap_or_default() {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let status = pod.status.clone().unwrap_or_default();
                let conditions = status.conditions.unwrap_or_default();
                let holds = |type_: &str| conditions.iter().any(|c| c.type_ == type_ && c.status == "True");
                if holds(RELEASED) || !holds("ContainersReady") || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if seen.entry(name.clone()).or_insert_with(Instant::now).elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let now = Timestamp::now();
                let patch = serde_json::json!({"status": {"conditions": [{
                    "type": RELEASED, "status": "True", "lastTransitionTime": now.to_string(),
                }]}});
                if pods
                    .patch_status(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Strategic(&patch),
                    )
                    .await
                    .is_ok()
                    && let Some(revision) = pod
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(certshift::outputs::REVISION_ANNOTATION))
                        .and_then(|r| r.parse::<u64>().ok())
                {
                    let mut record = record.lock().unwrap();
                    let last = record.entry(revision).or_insert(now);
                    *last = (*last).max(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (task, released)
}

/// A namespace with a workload of `kind` as the declaration's member (its
/// pods released by `release_pods`), the declaration in force by
/// thumbprint, then edited to common name.
pub(crate) async fn start_workload_conversion(admin: &Client, ns: &str, kind: &str) -> WorkloadConversion {
    create_namespace(admin, ns).await;
    let (releaser, released) = release_pods(admin, ns);
    let dynamic = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("apps", "v1", kind));
    let workloads: Api<kube::api::DynamicObject> = Api::namespaced_with(admin.clone(), ns, &dynamic);
    let object: kube::api::DynamicObject = serde_json::from_value(workload(kind)).unwrap();
    workloads.create(&PostParams::default(), &object).await.unwrap();
    let (declared, goal, ca) = store_and_declaration(admin, ns, |d| d.workload(kind, "members")).await;
    wait_ready(admin, ns, DECLARATION, Duration::from_secs(120)).await;
    let converting = Instant::now();
    declared
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .apply(admin, ns)
        .await;
    WorkloadConversion {
        workloads,
        goal,
        converting,
        releaser,
        released,
    }
}

pub(crate) struct WorkloadConversion {
    pub(crate) workloads: Api<kube::api::DynamicObject>,
    pub(crate) goal: pki::Issued,
    /// When the declaration was edited to common name.
    pub(crate) converting: Instant,
    pub(crate) releaser: tokio::task::JoinHandle<()>,
    pub(crate) released: Arc<StdMutex<BTreeMap<u64, Timestamp>>>,
}

/// Waits until the declaration in `ns` has published `revision`.
pub(crate) async fn published(admin: &Client, ns: &str, revision: u64) {
    eventually(
        &format!("{ns}: revision {revision} published"),
        Duration::from_secs(180),
        || async {
            let d = declaration(admin, ns, DECLARATION).await;
            (d.status?.upgrade?.revision >= revision).then_some(())
        },
    )
    .await;
}

/// Waits until the declaration in `ns` is Ready by common name, presenting
/// `goal`; returns its revision.
pub(crate) async fn converted(admin: &Client, ns: &str, goal: &pki::Issued, what: &str) -> u64 {
    eventually(what, Duration::from_secs(300), || async {
        let d = declaration(admin, ns, DECLARATION).await;
        let status = d.status.clone()?;
        (is_true(&d, "Ready")
            && status.declared_by.as_deref() == Some("CommonName")
            && status.presenting.as_ref()?.thumbprint == goal.thumbprint)
            .then_some(status.upgrade?.revision)
    })
    .await
}

/// A declaration whose member is a workload: each revision is stamped on
/// its pod template and gates on the real controller-manager rolling it
/// out. Returns a line for the summary.
pub(crate) async fn workload_rollouts_gate_each_revision(node: &Node, admin: &Client, kind: &str) -> String {
    let ns = format!("node-{}", kind.to_ascii_lowercase());
    let WorkloadConversion {
        workloads,
        goal,
        converting,
        releaser,
        released,
    } = start_workload_conversion(admin, &ns, kind).await;
    let revision = converted(admin, &ns, &goal, &format!("the {kind}'s conversion Ready")).await;
    // Every revision was a rollout the controller-manager made (the
    // template before the first stamp, then one per revision), and the
    // last one is complete.
    let live = workloads.get("members").await.unwrap();
    let stamped = live.data["spec"]["template"]["metadata"]["annotations"][certshift::outputs::REVISION_ANNOTATION]
        .as_str()
        .map(str::to_owned);
    assert_eq!(
        stamped,
        Some(revision.to_string()),
        "{kind}: the template carries the last revision"
    );
    let status = &live.data["status"];
    let complete = match kind {
        "DaemonSet" => {
            status["updatedNumberScheduled"] == status["desiredNumberScheduled"]
                && status["numberReady"] == status["desiredNumberScheduled"]
        }
        _ => status["updatedReplicas"] == 2 && status["readyReplicas"] == 2,
    };
    assert!(complete, "{kind}: the last rollout is complete: {status}");
    let templates = templates_rolled_out(admin, &ns, kind).await;
    assert_eq!(
        templates,
        revision as usize + 1,
        "{kind}: one rollout per revision, after the unstamped template"
    );
    // Each revision was published only after the previous one's rollout
    // could complete: after its last pod was released.
    releaser.abort();
    let released = released.lock().unwrap().clone();
    let published = published_once(node, &ns, revision, kind);
    for r in 1..revision {
        let rolled_out = released.get(&r).unwrap_or_else(|| {
            panic!(
                "{kind}: no pod of revision {r} was ever released, yet {} was published",
                r + 1
            )
        });
        let next = published[r as usize].at;
        assert!(
            next > *rolled_out,
            "{kind}: revision {} published at {next}, before the rollout of {r} could complete ({rolled_out})",
            r + 1
        );
    }
    format!(
        "{kind} {} revisions in {:.1}s",
        revision,
        converting.elapsed().as_secs_f64()
    )
}

/// Outputs are owned by their declaration: the garbage collector removes
/// them with it; the user's Secrets (the store's sources) stay.
pub(crate) async fn deleting_a_declaration_collects_its_outputs_and_no_user_secret(admin: &Client, ns: &str) {
    let declarations: Api<certshift::crd::ClusterCertificateDeclaration> = Api::namespaced(admin.clone(), ns);
    declarations
        .delete(DECLARATION, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), ns);
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), ns);
    eventually("the outputs collected", Duration::from_secs(60), || async {
        let presentation = secrets.get_opt(&format!("{DECLARATION}-presentation")).await.ok()?;
        let validation = maps.get_opt(&format!("{DECLARATION}-validation")).await.ok()?;
        (presentation.is_none() && validation.is_none()).then_some(())
    })
    .await;
    for name in ["cluster-old", "cluster-cn"] {
        assert!(
            secrets.get_opt(name).await.unwrap().is_some(),
            "the user's Secret {name} stays"
        );
    }
    println!(
        "  node: deleting the declaration: its outputs collected by the garbage collector, the user's Secrets kept"
    );
}
