//! Trust bundles as users supply them: the operating system's public roots
//! plus the cluster CA (what trust-manager's `useDefaultCAs` writes), and one
//! that cannot be read.

use super::*;

/// Debian's bundle of the public roots; `make test` installs ca-certificates.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A ConfigMap `roots` with the system's roots and the example CA in `ca.crt`.
fn roots_config_map(extra: &str) -> ConfigMap {
    let system = std::fs::read_to_string(SYSTEM_ROOTS)
        .unwrap_or_else(|err| panic!("{SYSTEM_ROOTS}: {err}: make test installs Debian's ca-certificates"));
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "roots"},
        "data": {"ca.crt": format!("{system}{extra}")},
    }))
    .expect("ConfigMap")
}

/// The example CA's certificate (`tls.crt` of `examples/conversion/ca.yaml`).
fn example_ca() -> String {
    let secret: Secret = serde_yaml::from_str(&example("ca.yaml")).expect("ca.yaml");
    secret.string_data.expect("stringData")["tls.crt"].clone()
}

/// The conversion with `spec.trustBundle` naming a real-size bundle (144
/// public roots and the cluster CA) completes; a bundle that cannot be read
/// blocks with `InvalidTrustBundle`, naming the object and key, and
/// publishes nothing.
pub async fn a_trust_bundle_of_the_system_roots_and_the_cluster_ca_carries_the_conversion(s: Scenario) {
    let ns = s.namespace.as_str();
    let judge = Judge::watch(&s.admin, ns);
    for secret in ["cluster-old", "cluster-cn"] {
        let store: Vec<Secret> = example("store.yaml")
            .split("\n---\n")
            .filter_map(|doc| serde_yaml::from_str::<Secret>(doc).ok())
            .filter(|s| s.metadata.name.as_deref() == Some(secret) && s.string_data.is_some())
            .collect();
        let data = store[0].string_data.clone().unwrap();
        judge.know(&data["tls.crt"], data.get("ca.crt").map(String::as_str));
    }
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    apply(&s.admin, ns, &roots_config_map(&example_ca())).await;
    Declaration::example("declaration-thumbprint.yaml")
        .apply(&s.admin, ns)
        .await;
    let operator = Operator::start(&s.plane, ns);
    wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    let mut by_name = Declaration::example("declaration-common-name.yaml");
    by_name.0.spec.trust_bundle = Some(certshift::crd::TrustBundleSource {
        config_map_ref: Some(certshift::crd::KeySelector {
            name: "roots".into(),
            key: None,
        }),
        secret_ref: None,
        include_store_cas: false,
    });
    by_name.apply(&s.admin, ns).await;
    let converted = wait_converted(&s.admin, ns, DECLARATION, Duration::from_secs(120)).await;
    assert!(is_true(&converted, "IssuersPinned"));
    // Each revision's ca-bundle.crt holds what it trusts: the whole bundle
    // while the name is unpinned, the pinned CA alone after PinIssuers.
    let certificates = |files: &BTreeMap<String, String>| files["ca-bundle.crt"].matches("BEGIN CERTIFICATE").count();
    let system = std::fs::read_to_string(SYSTEM_ROOTS)
        .unwrap()
        .matches("BEGIN CERTIFICATE")
        .count();
    let observed = judge.observations();
    let unpinned = observed
        .iter()
        .find(|o| o.revision.accepted.common_names.iter().any(|r| !r.is_pinned()))
        .expect("the conversion's unpinned SwitchToCommonName revision");
    assert_eq!(
        certificates(&unpinned.files),
        system + 1,
        "the system roots and the cluster CA"
    );
    let pinned = observed.last().expect("observed");
    assert_eq!(pinned.revision.stage, Some(Stage::PinIssuers));
    assert_eq!(
        pinned.files["ca-bundle.crt"].trim(),
        example_ca().trim(),
        "the pinned CA alone"
    );
    let rules: serde_json::Value = serde_json::from_str(&pinned.files["rules.json"]).unwrap();
    assert_eq!(
        rules["anchors"],
        serde_json::json!([]),
        "no name relies on an anchor any more"
    );
    assert_eq!(judge.violations(), Vec::<String>::new());
    judge.stop();

    let mut broken = Declaration::example("declaration-thumbprint.yaml").named("broken-bundle");
    broken.0.spec.trust_bundle = Some(certshift::crd::TrustBundleSource {
        config_map_ref: Some(certshift::crd::KeySelector {
            name: "roots".into(),
            key: Some("missing.crt".into()),
        }),
        secret_ref: None,
        include_store_cas: false,
    });
    broken.apply(&s.admin, ns).await;
    let blocked = eventually(
        "broken-bundle Blocked/InvalidTrustBundle",
        Duration::from_secs(60),
        || async {
            let d = declaration(&s.admin, ns, "broken-bundle").await;
            let c = condition(&d, "Blocked")?;
            (c.status == "True" && c.reason == "InvalidTrustBundle").then_some(c.message.clone())
        },
    )
    .await;
    assert!(
        blocked.contains("ConfigMap") && blocked.contains("roots") && blocked.contains("missing.crt"),
        "{blocked}"
    );
    let maps: Api<ConfigMap> = Api::namespaced(s.admin.clone(), ns);
    assert!(
        maps.get_opt("broken-bundle-validation").await.unwrap().is_none(),
        "nothing published"
    );
    operator.stop().await;
}

/// `ExpiringSoon` names an accepted secondary and a pinned issuer that expire
/// within the margin, each once, with its role; the condition is told by one
/// Warning event each, and then the operator settles: touching the objects
/// makes no status write and no new event.
pub async fn expiry_warnings_for_an_accepted_secondary_and_a_pinned_issuer_settle_without_writes(s: Scenario) {
    let ns = s.namespace.as_str();
    let expiring_ca = pki::ca_until("expiring CA", 10);
    let goal = pki::leaf_until("cluster.example", -5, 9, &expiring_ca);
    let other_ca = pki::ca("long-lived CA");
    let secondary = pki::leaf_until("old.cluster.example", -60, 5, &other_ca);
    for (name, cert, ca) in [("cluster-a", &goal, &expiring_ca), ("cluster-b", &secondary, &other_ca)] {
        store_certificate(&s, None, name, cert, ca).await;
    }
    let mut by_thumbprint = Declaration::example("declaration-thumbprint.yaml")
        .by_thumbprint(&goal.thumbprint)
        .store(&["cluster-a", "cluster-b"]);
    by_thumbprint.0.spec.certificate.as_mut().unwrap().thumbprint_secondary = Some(secondary.thumbprint.clone());
    by_thumbprint.apply(&s.admin, ns).await;
    Declaration::example("declaration-common-name.yaml")
        .named("pinned")
        .by_common_names(&[("cluster.example", &expiring_ca.thumbprint)])
        .store(&["cluster-a"])
        .apply(&s.admin, ns)
        .await;
    let operator = Operator::start(&s.plane, ns);
    let admin = &s.admin;
    let expiring = |name: &'static str| async move {
        eventually(&format!("{name} ExpiringSoon"), Duration::from_secs(60), || async {
            let d = declaration(admin, ns, name).await;
            let message = condition(&d, "ExpiringSoon")
                .filter(|c| c.status == "True")?
                .message
                .clone();
            is_true(&d, "Ready").then_some((message, d))
        })
        .await
    };
    let (message, by_thumbprint) = expiring(DECLARATION).await;
    assert!(
        message.contains(&format!("accepted thumbprint {} expires at", secondary.thumbprint)),
        "{message}"
    );
    assert!(
        message.contains(&format!("the presented certificate {} expires at", goal.thumbprint)),
        "{message}"
    );
    let roles: Vec<(String, String)> = by_thumbprint
        .status
        .unwrap()
        .certificates_in_use
        .into_iter()
        .map(|u| (u.role, u.thumbprint))
        .collect();
    assert!(
        roles.contains(&("AcceptedThumbprint".into(), secondary.thumbprint.clone())),
        "{roles:?}"
    );
    let (message, _) = expiring("pinned").await;
    assert!(
        message.contains(&format!("pinned issuer {} expires at", expiring_ca.thumbprint)),
        "{message}"
    );
    wait_event(&s.admin, ns, Some("Warning"), "ExpiringSoon").await;
    let told = |events: &[(String, String, String)]| events.iter().filter(|(_, r, _)| r == "ExpiringSoon").count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (writes_before, events_before) = (
        s.plane.writes(OPERATOR_USER, ns),
        told(&certshift_e2e::events(&s.admin, ns).await),
    );
    assert_eq!(events_before, 2, "one Warning per declaration");
    let touch = serde_json::json!({"metadata": {"annotations": {"e2e/touched": "yes"}}});
    for name in [DECLARATION, "pinned"] {
        Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .expect("touch declaration");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes_after = s.plane.writes(OPERATOR_USER, ns);
    assert_eq!(
        writes_after[writes_before.len()..],
        [] as [String; 0],
        "writes once settled"
    );
    assert_eq!(
        told(&certshift_e2e::events(&s.admin, ns).await),
        events_before,
        "no Warning told again"
    );
    operator.stop().await;
}

/// CRL distribution points, opted in: the operator fetches the CRL the
/// certificates name from a real HTTP server (Python's, on loopback); when
/// the CA publishes one revoking the presented certificate, the members are
/// moved off it (tolerate, present, narrow) and the CRL reaches them.
pub async fn crls_fetched_from_distribution_points_move_the_members_off(s: Scenario) {
    let ns = s.namespace.as_str();
    let judge = Judge::watch(&s.admin, ns);
    let dir = std::env::temp_dir().join(format!("certshift-e2e-cdp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("http://127.0.0.1:{port}/ca.crl");
    let ca = pki::ca("distribution point CA");
    std::fs::write(dir.join("ca.crl"), pki::crl(&ca, &[])).unwrap();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let older = pki::leaf_with_crl_distribution_point("cluster.example", -10, &ca, &uri);
    let newer = pki::leaf_with_crl_distribution_point("cluster.example", -5, &ca, &uri);
    for (name, cert) in [("cluster-a", &older), ("cluster-b", &newer)] {
        store_certificate(&s, Some(&judge), name, cert, &ca).await;
    }
    let mut declared = Declaration::example("declaration-common-name.yaml")
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .store(&["cluster-a", "cluster-b"]);
    declared.0.spec.revocation = Some(certshift::crd::Revocation {
        crls: Vec::new(),
        distribution_points: Some(certshift::crd::DistributionPoints {
            enabled: true,
            refresh_interval: Some("2s".into()),
            stale_policy: None,
        }),
    });
    declared.apply(&s.admin, ns).await;
    let operator = Operator::start(&s.plane, ns);
    let ready = wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    assert_eq!(ready.status.unwrap().presenting.unwrap().thumbprint, newer.thumbprint);

    // The CA publishes a CRL revoking the presented certificate.
    std::fs::write(dir.join("ca.crl"), pki::crl(&ca, &[&newer])).unwrap();
    eventually(
        "the members moved off the revoked certificate",
        Duration::from_secs(60),
        || async {
            let d = declaration(&s.admin, ns, DECLARATION).await;
            let status = d.status.clone()?;
            let moved = status.presenting.as_ref()?.thumbprint == older.thumbprint;
            let settled = status.upgrade.as_ref()?.plan.is_empty();
            (moved && settled && is_true(&d, "Ready")).then_some(())
        },
    )
    .await;
    let stages: Vec<(Option<Stage>, usize)> = judge
        .observations()
        .iter()
        .skip(1)
        .map(|o| (o.revision.stage, o.revision.tolerated.len()))
        .collect();
    assert_eq!(
        stages,
        [
            (Some(Stage::WidenValidation), 1),
            (Some(Stage::Rollover), 1),
            (Some(Stage::NarrowValidation), 0)
        ]
    );
    let last = judge.observations().last().cloned().expect("observed");
    assert!(
        last.files["crls.pem"].contains("BEGIN X509 CRL"),
        "the fetched CRL reaches the members"
    );
    assert_judged_clean(&judge);
    let _ = server.kill();
    let _ = server.wait();
    operator.stop().await;
    judge.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CRL held in a Secret (`spec.revocation.crls[].secretRef`) is watched as
/// a ConfigMap is: revoking the presented certificate while the declaration
/// is Ready publishes the first revision of the walk away within seconds,
/// where the periodic look (every 5 minutes) would take minutes.
pub async fn a_crl_in_a_secret_changed_while_ready_is_acted_on_at_once(s: Scenario) {
    let ns = s.namespace.as_str();
    let judge = Judge::watch(&s.admin, ns);
    let ca = pki::ca("secret CRL CA");
    let (older, newer) = (
        pki::leaf("cluster.example", -10, &ca),
        pki::leaf("cluster.example", -5, &ca),
    );
    for (name, cert) in [("cluster-a", &older), ("cluster-b", &newer)] {
        store_certificate(&s, Some(&judge), name, cert, &ca).await;
    }
    let crls = |pem: String| secret("crls", None, &[("ca.crl", &pem)]);
    apply(&s.admin, ns, &crls(pki::crl(&ca, &[]))).await;
    let mut declared = Declaration::example("declaration-common-name.yaml")
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .store(&["cluster-a", "cluster-b"]);
    declared.0.spec.revocation = Some(certshift::crd::Revocation {
        crls: vec![certshift::crd::CrlSource {
            config_map_ref: None,
            secret_ref: Some(certshift::crd::KeySelector {
                name: "crls".into(),
                key: None,
            }),
        }],
        distribution_points: None,
    });
    declared.apply(&s.admin, ns).await;
    let operator = Operator::start(&s.plane, ns);
    let ready = wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    let status = ready.status.unwrap();
    assert_eq!(status.presenting.unwrap().thumbprint, newer.thumbprint);
    let before = status.upgrade.unwrap().revision;
    // Settled: the operator's first looks are over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revoked_at = Instant::now();
    apply(&s.admin, ns, &crls(pki::crl(&ca, &[&newer]))).await;
    // The first revision of the walk away (the periodic look would take up to 5 minutes).
    eventually("a revision for the new CRL", Duration::from_secs(15), || async {
        let d = declaration(&s.admin, ns, DECLARATION).await;
        (d.status?.upgrade?.revision > before).then_some(())
    })
    .await;
    let reacted = revoked_at.elapsed();
    // Then the walk, paced by the example's healthCheckStableDuration (5 s a revision).
    eventually(
        "the revoked certificate no longer presented",
        Duration::from_secs(60),
        || async {
            let d = declaration(&s.admin, ns, DECLARATION).await;
            let moved = d.status.as_ref()?.presenting.as_ref()?.thumbprint == older.thumbprint;
            (is_true(&d, "Ready") && moved).then_some(())
        },
    )
    .await;
    println!(
        "  trust: a CRL changed in a Secret published a revision in {:.1}s, moved off in {:.1}s",
        reacted.as_secs_f64(),
        revoked_at.elapsed().as_secs_f64()
    );
    assert_judged_clean(&judge);
    judge.stop();
    operator.stop().await;
}
