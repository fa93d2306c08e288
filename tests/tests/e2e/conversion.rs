//! The conversion from thumbprint to common name, renewals, and specs that must publish nothing.

use std::process::Command;

use super::*;

pub async fn conversion_walks_the_three_stages_and_idles_without_writes(s: Scenario) {
    let ns = &s.namespace;
    let judge = Judge::watch(&s.admin, ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    apply_yaml(&s.admin, ns, &example("declaration-thumbprint.yaml")).await;
    let operator = Operator::start(&s.plane, ns);
    let ready = wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    assert_eq!(ready.status.unwrap().declared_by.as_deref(), Some("Thumbprint"));

    // One kubectl-apply-equivalent edit: thumbprint → common name, CA pinned.
    apply_yaml(&s.admin, ns, &example("declaration-common-name.yaml")).await;
    let mut order: Vec<&str> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let d = declaration(&s.admin, ns, DECLARATION).await;
        for milestone in ["SecondaryAdded", "DeclarationSwitched", "IssuersPinned"] {
            if is_true(&d, milestone) && !order.contains(&milestone) {
                order.push(milestone);
            }
        }
        let status = d.status.clone().unwrap_or_default();
        if is_true(&d, "Ready")
            && status.observed_generation == d.metadata.generation
            && status.declared_by.as_deref() == Some("CommonName")
        {
            break d;
        }
        assert!(Instant::now() < deadline, "the conversion did not finish: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(order, ["SecondaryAdded", "DeclarationSwitched", "IssuersPinned"]);
    let status = done.status.unwrap();
    assert_eq!(status.upgrade.as_ref().map(|u| u.revision), Some(6));
    assert_eq!(
        stages_after_first(&judge),
        [Stage::AddSecondary, Stage::SwitchToCommonName, Stage::PinIssuers]
    );
    assert_eq!(judge.observations().len(), 6, "revisions 1..=6, each seen once");
    assert_judged_clean(&judge);
    let text = status_text(&s).await;
    for line in [
        "Declared by: CommonName",
        "Effective declaration (revision 6):",
        "  Stage:     - (up to date)",
        "  Remaining revisions: none",
        "  Ready                True   Ready",
        "  <- presented",
    ] {
        assert!(
            text.contains(line),
            "status of a ready declaration lacks {line:?}:\n{text}"
        );
    }

    // An unchanged world: touching the objects triggers reconciles, not writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = s.plane.writes(OPERATOR_USER, ns);
    let touch = serde_json::json!({"metadata": {"annotations": {"e2e/touched": "yes"}}});
    let params = PatchParams::default();
    Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
        .patch(DECLARATION, &params, &Patch::Merge(&touch))
        .await
        .expect("touch declaration");
    Api::<certshift::crd::ObservedCertificate>::namespaced(s.admin.clone(), ns)
        .patch("cluster-cn", &params, &Patch::Merge(&touch))
        .await
        .expect("touch ObservedCertificate");
    Api::<Secret>::namespaced(s.admin.clone(), ns)
        .patch("cluster-old", &params, &Patch::Merge(&touch))
        .await
        .expect("touch source Secret");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = s.plane.writes(OPERATOR_USER, ns);
    assert!(!before.is_empty(), "the audit log shows the operator's writes");
    assert_eq!(after[before.len()..], [] as [String; 0], "writes in an unchanged world");
    println!(
        "  conversion: {} operator writes for the whole scenario, 0 after it settled",
        before.len()
    );
    operator.stop().await;
    judge.stop();
}

pub async fn renewals_roll_over_when_pinned_and_are_refused_when_not(s: Scenario) {
    let ns = &s.namespace;
    let judge = Judge::watch(&s.admin, ns);
    let ca = pki::ca("rollover CA");
    let first = pki::leaf("cluster.example", -10, &ca);
    judge.know(&first.pem, Some(&ca.pem));
    apply(&s.admin, ns, &pki::tls_secret("cluster", &first, &ca)).await;
    apply(&s.admin, ns, &observed_certificate("cluster", "cluster", None)).await;
    Declaration::example("declaration-common-name.yaml")
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .store(&["cluster"])
        .apply(&s.admin, ns)
        .await;
    let operator = Operator::start(&s.plane, ns);
    let ready = wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    assert_eq!(ready.status.unwrap().presenting.unwrap().thumbprint, first.thumbprint);

    // A renewal from the pinned CA overwrites the source Secret: touch-free rollover.
    let renewal = pki::leaf("cluster.example", -5, &ca);
    judge.know(&renewal.pem, Some(&ca.pem));
    apply(&s.admin, ns, &pki::tls_secret("cluster", &renewal, &ca)).await;
    eventually("the rollover to the renewal", Duration::from_secs(60), || async {
        let d = declaration(&s.admin, ns, DECLARATION).await;
        let presenting = d.status.as_ref()?.presenting.as_ref()?.thumbprint.clone();
        (presenting == renewal.thumbprint && is_true(&d, "Ready")).then_some(())
    })
    .await;
    wait_event(&s.admin, ns, Some("Normal"), "Rollover").await;
    let last = judge.observations().last().cloned().expect("observed");
    assert_eq!(last.revision.stage, Some(Stage::Rollover));

    // A renewal from a CA that is not pinned is never presented.
    let rogue_ca = pki::ca("unpinned CA");
    let rogue = pki::leaf("cluster.example", -1, &rogue_ca);
    judge.know(&rogue.pem, Some(&rogue_ca.pem));
    apply(&s.admin, ns, &pki::tls_secret("cluster", &rogue, &rogue_ca)).await;
    let blocked = eventually("Blocked/IssuerNotPinned", Duration::from_secs(60), || async {
        let d = declaration(&s.admin, ns, DECLARATION).await;
        let blocked = condition(&d, "Blocked")?;
        (blocked.status == "True" && blocked.reason == "IssuerNotPinned").then_some(d)
    })
    .await;
    assert_eq!(
        blocked.status.unwrap().presenting.unwrap().thumbprint,
        renewal.thumbprint
    );
    let text = status_text(&s).await;
    for line in [
        "  Blocked              True   IssuerNotPinned".to_owned(),
        format!("{} CN=cluster.example", rogue.thumbprint),
        format!(
            "{} CN=cluster.example issuer {} notAfter",
            renewal.thumbprint,
            &ca.thumbprint[..8]
        ),
    ] {
        assert!(
            text.contains(&line),
            "status of a blocked declaration lacks {line:?}:\n{text}"
        );
    }
    let presented_line = text
        .lines()
        .find(|l| l.contains("<- presented"))
        .expect("a presented instance");
    assert!(presented_line.contains(&renewal.thumbprint), "{presented_line}");
    let presentation = Api::<Secret>::namespaced(s.admin.clone(), ns)
        .get("cluster-presentation")
        .await
        .expect("presentation Secret");
    assert_eq!(
        presentation.metadata.annotations.unwrap()[THUMBPRINT_ANNOTATION],
        renewal.thumbprint,
        "the presented certificate is unchanged"
    );
    wait_event(&s.admin, ns, Some("Warning"), "IssuerNotPinned").await;
    assert_judged_clean(&judge);
    operator.stop().await;
    judge.stop();
}

pub async fn invalid_specs_and_foreign_secrets_publish_nothing(s: Scenario) {
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    let old = Declaration::example("declaration-thumbprint.yaml");
    let thumbprint = old.thumbprint();
    let cases = [
        (
            old.clone()
                .named("bad-thumbprint")
                .by_thumbprint(&format!("{}Z", &thumbprint[1..])),
            "InvalidThumbprint",
        ),
        (
            old.clone()
                .named("duplicate-name")
                .by_common_names(&[("cluster.example", ""), ("Cluster.Example", "")]),
            "DuplicateCommonName",
        ),
        (old.clone().named("missing-store").store(&["nowhere"]), "StoreNotFound"),
        (old.clone().named("taken"), "SecretOwnedElsewhere"),
        (
            old.clone().named("bad-template").template("app.json", "{{ unclosed"),
            "InvalidTemplate",
        ),
        (
            old.clone()
                .named("no-password")
                .formats(&[certshift::crd::OutputFormat::Pkcs12], "nowhere"),
            "InvalidOutput",
        ),
    ];
    // Someone else's Secret where `taken` would publish.
    apply(
        &s.admin,
        ns,
        &secret("taken-presentation", None, &[("note", "not certshift's")]),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(s.admin.clone(), ns);
    let foreign_version = secrets
        .get("taken-presentation")
        .await
        .unwrap()
        .metadata
        .resource_version;
    for (declaration, _) in &cases {
        declaration.apply(&s.admin, ns).await;
    }
    let operator = Operator::start(&s.plane, ns);
    for (declared, reason) in &cases {
        let name = declared.name();
        let d = eventually(
            &format!("{name}: Blocked/{reason}"),
            Duration::from_secs(60),
            || async {
                let d = declaration(&s.admin, ns, name).await;
                let blocked = condition(&d, "Blocked")?;
                (blocked.status == "True" && blocked.reason == *reason).then_some(d)
            },
        )
        .await;
        assert!(!is_true(&d, "Ready"), "{name} is not Ready");
        let message = &condition(&d, "Blocked").unwrap().message;
        assert!(!message.is_empty(), "{name}: the reason has a message");
        let maps: Api<ConfigMap> = Api::namespaced(s.admin.clone(), ns);
        assert!(
            maps.get_opt(&format!("{name}-validation")).await.unwrap().is_none(),
            "{name}: nothing published"
        );
        if name != "taken" {
            assert!(
                secrets
                    .get_opt(&format!("{name}-presentation"))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }
    let bad = declaration(&s.admin, ns, "bad-thumbprint").await;
    assert!(
        condition(&bad, "Blocked")
            .unwrap()
            .message
            .starts_with("spec.certificate.thumbprint: invalid character 'Z'"),
        "the message names the field and the character"
    );
    let no_password = declaration(&s.admin, ns, "no-password").await;
    assert_eq!(
        condition(&no_password, "Blocked").unwrap().message,
        format!("spec.output.pkcs12.passwordSecretRef: Secret {ns}/nowhere does not exist"),
    );
    let after = secrets.get("taken-presentation").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, foreign_version,
        "the foreign Secret is untouched"
    );
    // A closed set the API server checks: a dry run in a pipeline refuses it.
    let unknown_kind = old.clone().named("unknown-kind").workload("ReplicaSet", "members");
    let mut value = serde_json::to_value(&unknown_kind.0).unwrap();
    value["apiVersion"] = "certshift.io/v1alpha1".into();
    value["kind"] = "ClusterCertificateDeclaration".into();
    let refused = Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
        .patch(
            "unknown-kind",
            &PatchParams::apply("kubectl").force().dry_run(),
            &Patch::Apply(&value),
        )
        .await
        .expect_err("the API server refuses a workload kind outside the enum");
    // kube-apiserver 1.20 names list fields without their index.
    assert!(
        refused
            .to_string()
            .contains("spec.members.workloads.kind: Unsupported value: \"ReplicaSet\""),
        "the refusal names the field: {refused}"
    );
    operator.stop().await;
}

/// `kubectl apply` (client-side, as most users and GitOps tools run it) of
/// the examples, whose common-name manifest carries a `status:` block for
/// `certshift plan`: converting there and back, the status never keeps what
/// an earlier revision or declaration had (kube-apiserver 1.20 takes the
/// operator's ownership of status fields away when that block is dropped).
pub async fn kubectl_client_side_apply_there_and_back_leaves_no_stale_status(s: Scenario) {
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    let kubeconfig = s.plane.write_kubeconfig();
    let kubectl_apply = |file: &str| {
        use std::io::Write as _;
        let manifest = example(file).replace("namespace: default", &format!("namespace: {ns}"));
        let mut kubectl = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl");
        kubectl.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
        let out = kubectl.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl apply {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kubectl_apply("declaration-thumbprint.yaml");
    let operator = Operator::start(&s.plane, ns);
    wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    for (file, declared_by) in [
        ("declaration-common-name.yaml", "CommonName"),
        ("declaration-thumbprint.yaml", "Thumbprint"),
        ("declaration-common-name.yaml", "CommonName"),
    ] {
        kubectl_apply(file);
        // Every status seen on the way: an acknowledgement is never older
        // than the publication it acknowledges.
        let done = eventually(&format!("{declared_by} in force"), Duration::from_secs(120), || async {
            let d = declaration(&s.admin, ns, DECLARATION).await;
            let status = d.status.clone()?;
            if let Some(u) = &status.upgrade
                && let (Some(published), Some(acknowledged)) = (u.published_time, u.acknowledged_time)
            {
                assert!(
                    acknowledged >= published,
                    "revision {} acknowledged at {acknowledged}, before its publication at {published}",
                    u.revision
                );
            }
            (is_true(&d, "Ready")
                && status.observed_generation == d.metadata.generation
                && status.declared_by.as_deref() == Some(declared_by))
            .then_some(d)
        })
        .await;
        let types: Vec<String> = done.status.unwrap().conditions.into_iter().map(|c| c.type_).collect();
        let milestones = ["SecondaryAdded", "DeclarationSwitched", "IssuersPinned"];
        if declared_by == "Thumbprint" {
            assert!(
                milestones.iter().all(|m| !types.iter().any(|t| t == m)),
                "a declaration by thumbprint has no conversion milestones: {types:?}"
            );
        } else {
            assert!(milestones.iter().all(|m| types.iter().any(|t| t == m)), "{types:?}");
        }
    }
    operator.stop().await;
}
