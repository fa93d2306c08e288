//! certshift as users deploy it: the process (leader election, health, metrics) and the Helm chart under its RBAC.

use super::*;

pub async fn process_elects_a_leader_and_serves_health_and_metrics(s: Scenario) {
    use certshift::controller::{LeaderElection, Options};
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    apply_yaml(&s.admin, ns, &example("declaration-thumbprint.yaml")).await;
    let options = |identity: &str, addr| Options {
        namespace: Some(ns.clone()),
        leader_election: Some(LeaderElection {
            namespace: ns.clone(),
            name: "certshift-leader".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
        }),
        metrics_addr: Some(addr),
    };
    let (leader_addr, standby_addr) = (free_addr(), free_addr());
    let leader = Operator::start_with(&s.plane, options("replica-a", leader_addr));
    wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(s.admin.clone(), ns)
        .get("certshift-leader")
        .await
        .expect("the leader Lease");
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-a"));

    // A second replica waits for the lease, ready to take over: a rolling
    // update (helm upgrade, Flux, Argo CD) must see it Ready, or it never
    // replaces the leader.
    let standby = Operator::start_with(&s.plane, options("replica-b", standby_addr));
    // Ready once it has seen the lease held by the leader (its first lease
    // request after the metrics port opens), within seconds.
    let (code, _) = eventually("the standby's /readyz 200", Duration::from_secs(10), || async {
        http_get(standby_addr, "/readyz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(code, 200, "a standby replica is ready to take over");
    assert_eq!(http_get(standby_addr, "/healthz").await.map(|r| r.0), Some(200));
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(s.admin.clone(), ns);
    let holder = || async {
        leases
            .get("certshift-leader")
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity)
    };
    assert_eq!(
        holder().await.as_deref(),
        Some("replica-a"),
        "the standby does not write"
    );

    assert_eq!(http_get(leader_addr, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(http_get(leader_addr, "/readyz").await.map(|r| r.0), Some(200));
    let expected = [
        "certshift_reconciles_total{controller=\"declaration\"}".to_owned(),
        "certshift_revisions_published_total 1".to_owned(),
        format!("certshift_certificate_not_after_timestamp_seconds{{namespace=\"{ns}\",name=\"cluster-cn\"}} "),
        // The old name, kept one release.
        format!("certshift_certificate_not_after_seconds{{namespace=\"{ns}\",name=\"cluster-cn\"}} "),
        "certshift_writes_total{kind=\"ConfigMap\"} 1".to_owned(),
        format!("certshift_declaration_ready_status{{namespace=\"{ns}\",name=\"cluster\",condition=\"True\"}} 1"),
        format!("certshift_declaration_stage{{namespace=\"{ns}\",name=\"cluster\",stage=\"UpToDate\"}} 1"),
        format!("certshift_declaration_presented_not_after_timestamp_seconds{{namespace=\"{ns}\",name=\"cluster\"}} "),
        "certshift_reconcile_duration_seconds_count{controller=\"declaration\"} ".to_owned(),
        "certshift_build_info{version=".to_owned(),
    ];
    // The declaration's gauges come from the controller's cache, which the
    // watch brings up to date a moment after the status write.
    let metrics = eventually("/metrics has every series", Duration::from_secs(10), || async {
        let (code, metrics) = http_get(leader_addr, "/metrics").await?;
        (code == 200 && expected.iter().all(|line| metrics.contains(line))).then_some(metrics)
    })
    .await;
    assert!(metrics.contains("# TYPE certshift_reconcile_duration_seconds histogram"));
    // The leader stops (a rolling update): it gives the lease up, and the
    // standby takes over well before the 15 s lease would have expired.
    let renewed = |lease: k8s_openapi::api::coordination::v1::Lease| lease.spec.and_then(|s| s.renew_time);
    let last_renewal = renewed(leases.get("certshift-leader").await.unwrap()).expect("renewTime");
    leader.stop().await;
    eventually("the standby takes over", Duration::from_secs(20), || async {
        (holder().await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let spec = leases.get("certshift-leader").await.unwrap().spec.unwrap();
    let acquired = spec.acquire_time.expect("acquireTime").0;
    // Before the old lease could have expired: it was given up, not left to run out.
    assert!(
        acquired < last_renewal.0 + jiff::SignedDuration::from_secs(15),
        "acquired at {acquired}, the leader last renewed at {}",
        last_renewal.0
    );
    apply_yaml(&s.admin, ns, &example("declaration-common-name.yaml")).await;
    wait_converted(&s.admin, ns, DECLARATION, Duration::from_secs(120)).await;
    standby.stop().await;
}

/// Whether `user` may `verb` `resource` (in `namespace`, or cluster-wide).
async fn can(admin: &Client, user: &str, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> bool {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{CHART_NAMESPACE}"),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviewed = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&Default::default(), &review)
        .await
        .expect("SubjectAccessReview");
    reviewed.status.expect("review status").allowed
}

pub async fn chart_rbac_runs_the_conversion_and_never_deletes_secrets(s: Scenario) {
    use certshift::controller::{LeaderElection, Options};
    let ns = &s.namespace;
    let path = std::env::var("CERTSHIFT_CHART_RENDERED").unwrap_or_else(|_| {
        certshift_e2e::repo_path("target/chart/default.yaml")
            .to_string_lossy()
            .into_owned()
    });
    let rendered = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!("{path}: {err}: hack/test.sh renders the chart with Helm's engine (python3 hack/chart.py target/chart)")
    });
    assert!(
        !rendered
            .lines()
            .any(|l| l.contains("'*'") || l.contains("\"*\"") || l.trim() == "- '*'"),
        "no wildcard in the chart's RBAC"
    );
    create_namespace(&s.admin, CHART_NAMESPACE).await;
    apply_rendered(&s.admin, &rendered).await;

    let sa = CHART_SERVICE_ACCOUNT;
    for (verb, group, resource, namespace, allowed) in [
        ("delete", "", "secrets", Some(ns.as_str()), false),
        ("delete", "", "secrets", None, false),
        ("deletecollection", "", "secrets", Some(ns.as_str()), false),
        ("delete", "", "configmaps", Some(ns.as_str()), false),
        (
            "delete",
            "certshift.io",
            "clustercertificatedeclarations",
            Some(ns.as_str()),
            false,
        ),
        (
            "update",
            "certshift.io",
            "clustercertificatedeclarations",
            Some(ns.as_str()),
            false,
        ),
        ("get", "", "secrets", Some(ns.as_str()), true),
        ("watch", "", "secrets", None, true),
        ("create", "", "secrets", Some(ns.as_str()), true),
        ("patch", "", "secrets", Some(ns.as_str()), true),
        // A renewal replaces the store Secret's data as read.
        ("update", "", "secrets", Some(ns.as_str()), true),
        (
            "patch",
            "certshift.io",
            "clustercertificatedeclarations/status",
            Some(ns.as_str()),
            true,
        ),
        ("create", "events.k8s.io", "events", Some(ns.as_str()), true),
        ("update", "coordination.k8s.io", "leases", Some(CHART_NAMESPACE), true),
        ("update", "coordination.k8s.io", "leases", Some(ns.as_str()), false),
    ] {
        let where_ = namespace.unwrap_or("(cluster)");
        assert_eq!(
            can(&s.admin, sa, verb, group, resource, namespace).await,
            allowed,
            "{sa} {verb} {group}/{resource} in {where_}"
        );
    }

    // The agent's ClusterRole, bound in a member namespace: its own Pod's
    // annotation, nothing more.
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "members-agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "certshift-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "members", "namespace": ns}],
    }))
    .unwrap();
    apply(&s.admin, ns, &binding).await;
    let member = format!("system:serviceaccount:{ns}:members");
    for (verb, resource, namespace, allowed) in [
        ("get", "pods", Some(ns.as_str()), true),
        ("patch", "pods", Some(ns.as_str()), true),
        ("delete", "pods", Some(ns.as_str()), false),
        ("patch", "pods", Some(CHART_NAMESPACE), false),
        ("get", "secrets", Some(ns.as_str()), false),
        ("list", "pods", None, false),
    ] {
        let where_ = namespace.unwrap_or("(cluster)");
        assert_eq!(
            can(&s.admin, &member, verb, "", resource, namespace).await,
            allowed,
            "{member} {verb} {resource} in {where_}"
        );
    }

    // The conversion, as the chart's ServiceAccount, with its leader election.
    let judge = Judge::watch(&s.admin, ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    apply_yaml(&s.admin, ns, &example("declaration-thumbprint.yaml")).await;
    let options = Options {
        // Scoped to the scenario's namespace so scenarios stay apart; the
        // chart's ClusterRole is what authorizes it.
        namespace: Some(ns.clone()),
        leader_election: Some(LeaderElection {
            namespace: CHART_NAMESPACE.into(),
            name: "certshift-leader".into(),
            identity: "chart-replica".into(),
            lease_duration: Duration::from_secs(15),
        }),
        metrics_addr: None,
    };
    let operator = Operator::start_as(&s.plane, CHART_TOKEN, options);
    wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    apply_yaml(&s.admin, ns, &example("declaration-common-name.yaml")).await;
    eventually(
        "the conversion under the chart's RBAC",
        Duration::from_secs(120),
        || async {
            let d = declaration(&s.admin, ns, DECLARATION).await;
            let status = d.status.clone()?;
            (is_true(&d, "Ready") && status.declared_by.as_deref() == Some("CommonName")).then_some(())
        },
    )
    .await;
    assert_eq!(
        stages_after_first(&judge),
        [Stage::AddSecondary, Stage::SwitchToCommonName, Stage::PinIssuers]
    );
    // A renewal in place, as Key Vault writes one: the source Secret gets
    // the new certificate; the store records it and members roll over.
    let ca: Secret = serde_yaml::from_str(&example("ca.yaml")).expect("ca.yaml");
    let ca = ca.string_data.expect("stringData");
    let renewal = certshift_e2e::pki::leaf_from_pem_ca("cluster.example", -1, &ca["tls.crt"], &ca["tls.key"]);
    judge.know(&renewal.pem, Some(&ca["tls.crt"]));
    let renewed = certshift_e2e::manifests::secret(
        "cluster-cn",
        Some("kubernetes.io/tls"),
        &[
            ("tls.crt", &renewal.pem),
            ("tls.key", &renewal.key.serialize_pem()),
            ("ca.crt", &ca["tls.crt"]),
        ],
    );
    apply(&s.admin, ns, &renewed).await;
    eventually(
        "the renewal recorded and presented",
        Duration::from_secs(60),
        || async {
            let d = declaration(&s.admin, ns, DECLARATION).await;
            let presenting = d.status.clone()?.presenting?.thumbprint == renewal.thumbprint;
            (presenting && is_true(&d, "Ready")).then_some(())
        },
    )
    .await;
    assert_judged_clean(&judge);
    let writes = s.plane.writes(sa, ns);
    assert!(!writes.is_empty(), "the audit log shows the ServiceAccount's writes");
    assert!(
        writes.iter().all(|w| !w.starts_with("delete")),
        "no deletes: {writes:?}"
    );
    operator.stop().await;
    judge.stop();
}

/// The RBAC of the limited identity: what the operator needs in one
/// namespace, less `certificatepolicies` and creating Secrets unless `full`.
fn limited_role(full: bool) -> serde_json::Value {
    let read_write = ["get", "list", "watch", "patch", "update"];
    let mut certshift = vec![
        "clustercertificatedeclarations",
        "clustercertificatedeclarations/status",
        "observedcertificates",
        "observedcertificates/status",
    ];
    let mut secrets = read_write.to_vec();
    if full {
        certshift.extend(["certificatepolicies", "certificatepolicies/status"]);
        secrets.push("create");
    }
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "certshift-limited"},
        "rules": [
            {"apiGroups": ["certshift.io"], "resources": certshift, "verbs": read_write},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": secrets},
            {"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": read_write},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": read_write},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        ],
    })
}

/// A reconcile the operator's RBAC forbids (creating the `-store` Secret)
/// is said in the ObservedCertificate's status and one Warning event, not
/// only in logs; a watch it may not make (CertificatePolicies) makes
/// `/readyz` say which and counts as a reconcile error. Granted the missing
/// permissions, both recover without a restart.
pub async fn a_reconcile_or_a_watch_forbidden_by_rbac_is_said_in_the_status_events_and_readyz(s: Scenario) {
    use certshift::crd::ObservedCertificate;
    use certshift_e2e::control_plane::{LIMITED_TOKEN, LIMITED_USER};
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &serde_yaml::to_string(&limited_role(false)).unwrap()).await;
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "certshift-limited"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "certshift-limited"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": LIMITED_USER}],
    });
    apply_yaml(&s.admin, ns, &serde_yaml::to_string(&binding).unwrap()).await;
    let ca = pki::ca("limited CA");
    let leaf = pki::leaf("cluster.example", 0, &ca);
    apply(&s.admin, ns, &pki::tls_secret("cluster-tls", &leaf, &ca)).await;
    apply(&s.admin, ns, &observed_certificate("cluster-tls", "cluster-tls", None)).await;
    let addr = free_addr();
    let options = certshift::controller::Options {
        namespace: Some(ns.clone()),
        metrics_addr: Some(addr),
        ..Default::default()
    };
    let operator = Operator::start_as(&s.plane, LIMITED_TOKEN, options);

    let ocerts: Api<ObservedCertificate> = Api::namespaced(s.admin.clone(), ns);
    let ready = |want: &'static str| {
        let ocerts = ocerts.clone();
        move || {
            let ocerts = ocerts.clone();
            async move {
                let ocert = ocerts.get("cluster-tls").await.ok()?;
                let ready = ocert.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                (ready.reason == want).then_some(ready)
            }
        }
    };
    let failed = eventually(
        "Ready=False ReconcileFailed",
        Duration::from_secs(60),
        ready("ReconcileFailed"),
    )
    .await;
    assert_eq!(failed.status, "False");
    assert!(
        failed.message.contains("Create Secret") && failed.message.contains("forbidden"),
        "{}",
        failed.message
    );
    wait_event(&s.admin, ns, Some("Warning"), "ReconcileFailed").await;
    let (code, body) = eventually("/readyz naming the failing watch", Duration::from_secs(30), || async {
        http_get(addr, "/readyz").await.filter(|(code, _)| *code == 503)
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("watch of CertificatePolicy fails"), "{body}");
    let metrics = http_get(addr, "/metrics").await.expect("/metrics").1;
    assert!(
        metrics.contains("certshift_reconcile_errors_total{controller=\"certificatepolicy\",error=\"Watch\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("certshift_reconcile_errors_total{controller=\"observedcertificate\",error=\"Create\"}"),
        "{metrics}"
    );

    // The missing permissions granted: both recover, with no restart.
    apply_yaml(&s.admin, ns, &serde_yaml::to_string(&limited_role(true)).unwrap()).await;
    eventually("Ready=True", Duration::from_secs(60), ready("Ready")).await;
    eventually("/readyz ok", Duration::from_secs(90), || async {
        http_get(addr, "/readyz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    let told = certshift_e2e::events(&s.admin, ns)
        .await
        .into_iter()
        .filter(|(_, reason, _)| reason == "ReconcileFailed")
        .count();
    assert_eq!(told, 1, "a failure retried the same way is told once");
    operator.stop().await;
}
