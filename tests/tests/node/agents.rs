//! The members: `certshift agent` sidecars in real pods, calling each other.

use super::*;

use certshift_e2e::manifests::secret;

pub(crate) async fn agents_in_member_pods_carry_the_conversion_with_no_failed_call(node: &Node, admin: &Client) {
    let started = Instant::now();
    let admin = admin.clone();
    // (The namespace is the operator's install's: the chart binds the agent role there.)
    // The store and the declaration by thumbprint; members select by label.
    let (declared, goal, ca) = store_and_declaration(&admin, NAMESPACE, |d| d.pod_members(&[("app", "member")])).await;
    wait_ready(&admin, NAMESPACE, DECLARATION, Duration::from_secs(60)).await;

    // The members: their ServiceAccount (bound to the chart's agent role), a
    // Service in front of their inbound proxies, and the pods.
    let services: Api<Service> = Api::namespaced(admin.clone(), NAMESPACE);
    apply(
        &admin,
        NAMESPACE,
        &yaml::<k8s_openapi::api::core::v1::ServiceAccount>("metadata: {name: member}"),
    )
    .await;
    let service: Service = yaml(
        "metadata: {name: members}\nspec: {selector: {app: member}, ports: [{name: https, port: 8443, targetPort: 8443}]}",
    );
    let _ = services.create(&PostParams::default(), &service).await;
    let service_ip = services.get("members").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("member-{i}")).collect();
    for name in &names {
        create_pod(&pods, &member(name, &service_ip)).await;
    }
    eventually("the members Ready and calling", Duration::from_secs(120), || async {
        for name in &names {
            let pod = pods.get(name).await.ok()?;
            let ready = pod
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !ready || calls(&pods, name).await?.0 == 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let first = declaration(&admin, NAMESPACE, DECLARATION)
        .await
        .status
        .unwrap()
        .upgrade
        .unwrap()
        .revision;
    eventually(
        "the members acknowledge the first revision themselves",
        Duration::from_secs(60),
        || async {
            for name in &names {
                (observed_revision(&pods.get(name).await.ok()?)? >= first).then_some(())?;
            }
            Some(())
        },
    )
    .await;

    // The baseline: a client nobody manages, presenting a certificate from a
    // CA nobody declared (curl, taking any server), is refused by the
    // members from before the change to after it. Its refusals are the
    // same under every revision, so they never fail a health check.
    let stranger = pki::leaf("stranger.example", -1, &pki::ca("nobody's CA"));
    let key = stranger.key.serialize_pem();
    let files = secret(
        "baseline-client",
        None,
        &[("ca.crt", &ca.pem), ("tls.crt", &stranger.pem), ("tls.key", &key)],
    );
    apply(&admin, NAMESPACE, &files).await;
    create_pod(
        &pods,
        &unmanaged_client("baseline-client", "old.example", &service_ip, false),
    )
    .await;
    // Refused by every member before the change: kube-proxy spreads the calls
    // at random, and a member that never saw the stranger before a revision
    // would count it as that revision's regression (the baseline is what
    // failed within the window before). 40 calls miss one of three members
    // with odds of about 3 in 10 million; 10 missed one in a node run.
    eventually(
        "the baseline client refused, before the change",
        Duration::from_secs(180),
        || async {
            calls(&pods, "baseline-client")
                .await
                .filter(|&(ok, failed)| ok == 0 && failed >= 40)
        },
    )
    .await;

    // The conversion, carried by kubelet-delivered volumes and the agents.
    let converting = Instant::now();
    declared
        .clone()
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .apply(&admin, NAMESPACE)
        .await;
    let revision = eventually(
        "the conversion Ready, acknowledged by every member",
        Duration::from_secs(240),
        || async {
            let d = declaration(&admin, NAMESPACE, DECLARATION).await;
            let status = d.status.clone()?;
            let revision = status.upgrade.as_ref()?.revision;
            let converted = is_true(&d, "Ready")
                && status.declared_by.as_deref() == Some("CommonName")
                && status.presenting.as_ref()?.thumbprint == goal.thumbprint;
            for name in &names {
                (observed_revision(&pods.get(name).await.ok()?)? == revision).then_some(())?;
            }
            converted.then_some(revision)
        },
    )
    .await;
    let conversion = converting.elapsed();

    // No member call failed; each member made calls throughout.
    let mut total = 0;
    let mut failures = BTreeMap::new();
    for name in &names {
        let (made, failed) = calls(&pods, name).await.expect("the caller's count");
        total += made;
        if failed > 0 {
            failures.insert(name.clone(), failed);
        }
    }
    assert!(failures.is_empty(), "failed calls between members: {failures:?}");
    let (accepted, refused) = calls(&pods, "baseline-client")
        .await
        .expect("the baseline client's count");
    assert_eq!(accepted, 0, "the stranger is never admitted");
    // Each member saw the stranger's refusals and still counts as healthy.
    for name in &names {
        let pod = pods.get(name).await.unwrap();
        let healthy = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "certshift.io/Healthy")
            .unwrap_or_else(|| panic!("{name}: no certshift.io/Healthy condition"));
        assert_eq!(
            healthy.status, "True",
            "{name}: the baseline is not a regression: {healthy:?}"
        );
    }
    pods.delete("baseline-client", &Default::default()).await.unwrap();

    // Who wrote what: the members acknowledged themselves, the operator ran
    // as the chart's ServiceAccount.
    let audit = node.audit_log();
    let writers = |resource: &str, verb: &str| -> Vec<String> {
        let mut users: Vec<String> = audit
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|e| {
                e["objectRef"]["resource"] == resource
                    && e["objectRef"]["namespace"] == NAMESPACE
                    && e["objectRef"]["subresource"].is_null()
                    && e["verb"] == verb
                    && e["stage"] == "ResponseComplete"
            })
            .filter_map(|e| e["user"]["username"].as_str().map(str::to_owned))
            .collect();
        users.sort();
        users.dedup();
        users
    };
    assert_eq!(
        writers("pods", "patch"),
        vec![format!("system:serviceaccount:{NAMESPACE}:member")],
        "pods (not their status, which the kubelet writes) are patched by the members' agents only"
    );
    assert_eq!(
        writers("configmaps", "patch"),
        vec!["system:serviceaccount:certshift-system:certshift".to_owned()],
        "the validation ConfigMap is written by the operator's pod"
    );
    println!(
        "  node: agents: conversion to revision {revision} in {:.1}s on kubelet-delivered volumes, {total} calls between {MEMBERS} member pods, 0 failed, a stranger refused {refused} times throughout (the baseline); scenario {:.0}s",
        conversion.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
