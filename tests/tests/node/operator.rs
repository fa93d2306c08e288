//! The operator as a pod: killed, its kubelet and kube-apiserver restarted, rolled; nothing lost or repeated.

use super::*;
use crate::audit::published_once;
use crate::workloads::{WorkloadConversion, converted, published, start_workload_conversion};

/// Mid-conversion the operator's pod is killed and the kubelet restarted:
/// the new pod takes over (leader election) and every revision is
/// published once, none lost and none repeated (audit log).
pub(crate) async fn an_operator_pod_killed_and_a_kubelet_restarted_mid_conversion_lose_and_repeat_nothing(
    node: &Node,
    admin: &Client,
) {
    let ns = "node-restart";
    let WorkloadConversion { goal, releaser, .. } = start_workload_conversion(admin, ns, "Deployment").await;
    published(admin, ns, 3).await;
    let operators: Api<Pod> = Api::namespaced(admin.clone(), "certshift-system");
    let killed: Vec<String> = operators
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    for name in &killed {
        operators
            .delete(
                name,
                &kube::api::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let restarted = Command::new(repo_path("hack/node.sh"))
        .arg("restart-kubelet")
        .status()
        .unwrap();
    assert!(restarted.success(), "hack/node.sh restart-kubelet");
    operator_available(admin).await;
    let revision = converted(admin, ns, &goal, "the conversion Ready after the restarts").await;
    let published = published_once(node, ns, revision, "after the restarts");
    assert!(
        published
            .iter()
            .all(|w| w.user == "system:serviceaccount:certshift-system:certshift"),
        "{published:?}"
    );
    releaser.abort();
    println!(
        "  node: operator pod {killed:?} killed and the kubelet restarted at revision 3: the conversion reached revision {revision}, each published once"
    );
}

/// Mid-conversion kube-apiserver goes away twice for longer than the
/// leader can go without renewing its lease (two thirds of 15 s): the
/// leader gives up and stops, its container is restarted, and after each
/// outage one replica takes the lease and the conversion goes on; every
/// revision is published once and both replicas end Ready.
pub(crate) async fn kube_apiserver_outages_mid_conversion_lose_and_repeat_nothing(node: &Node, admin: &Client) {
    let ns = "node-apiserver";
    let WorkloadConversion { goal, releaser, .. } = start_workload_conversion(admin, ns, "Deployment").await;
    for (revision, outage) in [(2, 15), (4, 20)] {
        published(admin, ns, revision).await;
        let restarted = tokio::process::Command::new(repo_path("hack/node.sh"))
            .args(["restart-apiserver", &outage.to_string()])
            .status()
            .await
            .unwrap();
        assert!(restarted.success(), "hack/node.sh restart-apiserver");
    }
    let revision = converted(admin, ns, &goal, "the conversion Ready after two API server outages").await;
    published_once(node, ns, revision, "across the outages");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "certshift-system");
    eventually("both operator replicas Ready", Duration::from_secs(180), || async {
        let status = deployments.get("certshift").await.ok()?.status?;
        (status.ready_replicas? == 2).then_some(())
    })
    .await;
    releaser.abort();
    println!(
        "  node: kube-apiserver down 15 s at revision 2 and 20 s at revision 4: the conversion reached revision {revision}, each published once; both replicas Ready"
    );
}

/// Mid-conversion the operator's Deployment (two replicas, leader
/// election) is rolled as `helm upgrade` or `kubectl rollout restart` rolls
/// it: the rollout completes (a standby is Ready), the leader hands over,
/// and every revision is published once.
pub(crate) async fn a_rolling_replacement_of_the_operator_mid_conversion_completes_with_one_writer(
    node: &Node,
    admin: &Client,
) {
    let ns = "node-upgrade";
    let WorkloadConversion { goal, releaser, .. } = start_workload_conversion(admin, ns, "Deployment").await;
    published(admin, ns, 2).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "certshift-system");
    let restart = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": jiff::Timestamp::now().to_string()
    }}}}});
    let rolled = deployments
        .patch(
            "certshift",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&restart),
        )
        .await
        .unwrap();
    let generation = rolled.metadata.generation.unwrap_or_default();
    let rolling = Instant::now();
    eventually("the operator's rollout complete", Duration::from_secs(180), || async {
        let d = deployments.get("certshift").await.ok()?;
        let status = d.status?;
        (status.observed_generation? >= generation
            && status.updated_replicas? == 2
            && status.available_replicas? == 2
            && status.replicas? == 2)
            .then_some(())
    })
    .await;
    let rollout = rolling.elapsed();
    let revision = converted(admin, ns, &goal, "the conversion Ready after the rollout").await;
    published_once(node, ns, revision, "across the handover");
    releaser.abort();
    println!(
        "  node: the operator's 2 replicas rolled mid-conversion in {:.1}s; the conversion reached revision {revision}, each published once",
        rollout.as_secs_f64()
    );
}
