//! Restarts, crashes and deletions: nothing repeated, skipped or lost, no user Secret touched.

use super::*;

pub async fn a_restarted_operator_resumes_without_repeating_or_skipping(s: Scenario) {
    let ns = &s.namespace;
    let judge = Judge::watch(&s.admin, ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    apply_yaml(&s.admin, ns, &example("declaration-thumbprint.yaml")).await;
    let operator = Operator::start(&s.plane, ns);
    wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    apply_yaml(&s.admin, ns, &example("declaration-common-name.yaml")).await;
    eventually("revision 3 (mid-conversion)", Duration::from_secs(60), || async {
        (judge.observations().last()?.revision.revision >= 3).then_some(())
    })
    .await;
    operator.kill().await;
    let killed_at = judge.observations().last().unwrap().revision.revision;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let operator = Operator::start(&s.plane, ns);
    wait_converted(&s.admin, ns, DECLARATION, Duration::from_secs(120)).await;
    let revisions: Vec<u64> = judge.observations().iter().map(|o| o.revision.revision).collect();
    assert_eq!(revisions, [1, 2, 3, 4, 5, 6], "killed at revision {killed_at}");
    assert_judged_clean(&judge);
    operator.stop().await;
    judge.stop();
}

pub async fn deleting_certshift_objects_never_deletes_user_secrets(s: Scenario) {
    use certshift::crd::{CertificatePolicy, ObservedCertificate};
    use kube::api::DeleteParams;
    let ns = &s.namespace;
    let ca = pki::ca("deletion CA");
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    apply(&s.admin, ns, &ca_secret("cluster-ca", &ca)).await;
    apply(&s.admin, ns, &policy("cluster-tls", "cluster-ca", "1h", 50)).await;
    apply_yaml(&s.admin, ns, &example("declaration-common-name.yaml")).await;
    let operator = Operator::start(&s.plane, ns);
    wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    eventually("the policy's certificate", Duration::from_secs(30), || async {
        super::policy::current_policy(&s).await.status?.current_thumbprint
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(s.admin.clone(), ns);
    let user_secrets = ["cluster-old", "cluster-cn", "cluster-ca"];
    let mut versions = Vec::new();
    for name in user_secrets {
        versions.push(secrets.get(name).await.unwrap().metadata.resource_version);
    }
    // Delete every certshift object while the operator runs, then let it react.
    let params = DeleteParams::default();
    Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
        .delete(DECLARATION, &params)
        .await
        .unwrap();
    for name in ["cluster-old", "cluster-cn"] {
        Api::<ObservedCertificate>::namespaced(s.admin.clone(), ns)
            .delete(name, &params)
            .await
            .unwrap();
    }
    Api::<CertificatePolicy>::namespaced(s.admin.clone(), ns)
        .delete("cluster", &params)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, version) in user_secrets.iter().zip(versions) {
        let secret = secrets
            .get(name)
            .await
            .unwrap_or_else(|err| panic!("{name} was deleted: {err}"));
        assert_eq!(secret.metadata.resource_version, version, "{name} was rewritten");
    }
    let writes = s.plane.writes(OPERATOR_USER, ns);
    assert!(
        !writes.iter().any(|w| w.starts_with("delete")),
        "the operator deleted something: {writes:?}"
    );
    let overwritten: Vec<&String> = writes
        .iter()
        .filter(|w| user_secrets.iter().any(|u| w.ends_with(&format!("secrets/{u}"))))
        .collect();
    assert!(
        overwritten.is_empty(),
        "the operator wrote user Secrets: {overwritten:?}"
    );
    operator.stop().await;
}

/// What the chaos scenario disrupts at one point of the conversion.
#[derive(Clone, Copy, Debug)]
enum Disruption {
    ApiServer,
    OperatorCrash,
    OperatorRestart,
}

/// Its own control plane, since it restarts kube-apiserver: the conversion,
/// gated by two pods, with kube-apiserver restarted 10 times and the operator
/// 10 times (crashed or stopped) at four points of each revision; then the
/// CRDs are deleted under the running operator.
pub async fn chaos_restarts_during_the_conversion_and_crd_deletion(_shared: Scenario) {
    let plane = Arc::new(
        tokio::task::spawn_blocking(ControlPlane::start)
            .await
            .expect("chaos control plane"),
    );
    let result = std::panic::AssertUnwindSafe(chaos_on(&plane)).catch_unwind().await;
    if let Err(panic) = result {
        println!("  chaos: logs kept in {}", plane.dir().display());
        plane.keep();
        std::panic::resume_unwind(panic);
    }
}

async fn chaos_on(plane: &Arc<ControlPlane>) {
    let admin = plane.client(ADMIN_TOKEN);
    install_crds(&admin).await;
    let ns = "chaos";
    create_namespace(&admin, ns).await;
    let judge = Judge::watch(&admin, ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&admin, ns, &example("store.yaml")).await;
    let ca = pki::ca("chaos CA");
    apply(&admin, ns, &ca_secret("cluster-ca", &ca)).await;
    apply(&admin, ns, &policy("policy-tls", "cluster-ca", "1h", 50)).await;
    let pods = ["member-a", "member-b"];
    for pod in pods {
        apply(&admin, ns, &member_pod(pod, &[("app", "member")])).await;
    }
    let with_members = |file: &str| {
        Declaration::example(file)
            .min_soak("0s")
            .pod_members(&[("app", "member")])
    };
    with_members("declaration-thumbprint.yaml").apply(&admin, ns).await;
    let options = || certshift::controller::Options {
        namespace: Some(ns.to_owned()),
        ..Default::default()
    };
    let mut operator = Some(Operator::start_with(plane, options()));
    let member_pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let ack = |pod: &'static str, revision: u64| {
        let member_pods = member_pods.clone();
        async move {
            // Retried: kube-apiserver may be down at that moment.
            eventually(
                &format!("{pod} acknowledges {revision}"),
                Duration::from_secs(60),
                || async { acknowledge(&member_pods, pod, &revision.to_string()).await.ok() },
            )
            .await;
        }
    };
    let published = || async {
        eventually("the published revision", Duration::from_secs(120), || async {
            let map = Api::<ConfigMap>::namespaced(admin.clone(), ns)
                .get_opt("cluster-validation")
                .await
                .ok()??;
            map.metadata.annotations?.get(REVISION_ANNOTATION)?.parse::<u64>().ok()
        })
        .await
    };
    for pod in pods {
        ack(pod, 1).await;
    }
    wait_ready(&admin, ns, DECLARATION, Duration::from_secs(60)).await;
    with_members("declaration-common-name.yaml").apply(&admin, ns).await;

    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut disrupt = async |what: Disruption, operator: &mut Option<Operator>| {
        match what {
            Disruption::ApiServer => plane.restart_apiserver(Duration::from_millis(500)).await,
            Disruption::OperatorCrash => {
                operator.take().expect("running").kill().await;
                *operator = Some(Operator::start_with(plane, options()));
            }
            Disruption::OperatorRestart => {
                operator.take().expect("running").stop().await;
                *operator = Some(Operator::start_with(plane, options()));
            }
        }
        *counts
            .entry(if matches!(what, Disruption::ApiServer) {
                "kube-apiserver"
            } else {
                "operator"
            })
            .or_default() += 1;
    };
    // Four points per revision: just published; one member acknowledged; as
    // the last member acknowledges; right after (racing the next publication).
    let mut last = 1;
    while last < 6 {
        let revision = eventually("the next revision", Duration::from_secs(180), || async {
            let r = published().await;
            (r > last).then_some(r)
        })
        .await;
        assert_eq!(revision, last + 1, "a revision was skipped");
        // Crash first on odd revisions, stop first on even ones.
        let (first, second) = if revision % 2 == 1 {
            (Disruption::OperatorCrash, Disruption::OperatorRestart)
        } else {
            (Disruption::OperatorRestart, Disruption::OperatorCrash)
        };
        disrupt(Disruption::ApiServer, &mut operator).await;
        ack("member-a", revision).await;
        disrupt(first, &mut operator).await;
        disrupt(Disruption::ApiServer, &mut operator).await;
        ack("member-b", revision).await;
        disrupt(second, &mut operator).await;
        last = revision;
    }
    wait_converted(&admin, ns, DECLARATION, Duration::from_secs(120)).await;
    assert_eq!(
        counts,
        BTreeMap::from([("kube-apiserver", 10), ("operator", 10)]),
        "disruptions"
    );
    let revisions: Vec<u64> = judge.observations().iter().map(|o| o.revision.revision).collect();
    assert_eq!(revisions, [1, 2, 3, 4, 5, 6], "each revision once, in order");
    assert_judged_clean(&judge);
    println!("  chaos: conversion Ready through 10 kube-apiserver and 10 operator restarts, judge clean");
    judge.stop();

    // Deleting the CRDs (and so every certshift object) under the running
    // operator leaves every Secret it did not create as it was.
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::DeleteParams;
    eventually("the policy's certificate", Duration::from_secs(60), || async {
        Api::<Secret>::namespaced(admin.clone(), ns)
            .get_opt("policy-tls")
            .await
            .ok()?
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let user_secrets = ["cluster-old", "cluster-cn", "cluster-ca"];
    let mut versions = Vec::new();
    for name in user_secrets {
        versions.push(secrets.get(name).await.unwrap().metadata.resource_version);
    }
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in [
        "clustercertificatedeclarations.certshift.io",
        "observedcertificates.certshift.io",
        "certificatepolicies.certshift.io",
    ] {
        crds.delete(crd, &DeleteParams::default()).await.expect("delete CRD");
    }
    eventually("the CRDs are gone", Duration::from_secs(60), || async {
        let list = crds.list(&Default::default()).await.ok()?;
        (!list.items.iter().any(|c| c.spec.group == "certshift.io")).then_some(())
    })
    .await;
    let before = plane.writes(OPERATOR_USER, ns).len();
    let requests_before = plane.requests(OPERATOR_USER);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Watches of the vanished kinds back off; a hot loop would show thousands.
    let requests = plane.requests(OPERATOR_USER) - requests_before;
    assert!(
        requests < 200,
        "{requests} requests in 10 s after the CRDs were deleted"
    );
    for (name, version) in user_secrets.iter().zip(versions) {
        let secret = secrets
            .get(name)
            .await
            .unwrap_or_else(|err| panic!("{name} was deleted: {err}"));
        assert_eq!(secret.metadata.resource_version, version, "{name} was rewritten");
    }
    let writes = plane.writes(OPERATOR_USER, ns);
    assert!(
        !writes.iter().any(|w| w.starts_with("delete")),
        "the operator deleted something: {writes:?}"
    );
    assert_eq!(
        writes[before..],
        [] as [String; 0],
        "writes after the CRDs were deleted"
    );
    println!(
        "  chaos: CRDs deleted; user Secrets unchanged, no delete and no write by the operator, {requests} requests in the next 10 s"
    );
    operator.take().expect("running").stop().await;
}
