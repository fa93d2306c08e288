//! What the tools users drive certshift with make of it, on objects read
//! from the real API server: Argo CD's health checks (run by a real Lua 5.1),
//! kstatus (Flux), `kubectl explain` and `kubectl get certshift`.

use super::*;
use certshift::crd::{CertificatePolicy, ObservedCertificate};
use certshift::kstatus::{self, Status};
use certshift_e2e::{argocd, repo_path};
use kube::api::DynamicObject;

/// One state an object is in, as Argo CD and kstatus must read it.
struct Expect {
    kind: &'static str,
    name: &'static str,
    /// The testdata file it is captured to (`CERTSHIFT_CAPTURE_ARGOCD=1`).
    file: &'static str,
    health: &'static str,
    kstatus: Status,
    /// How Argo CD's message starts (the reason, for the states that share a health).
    message: &'static str,
}

fn api(s: &Scenario, kind: &str) -> Api<DynamicObject> {
    let resource = match kind {
        "ClusterCertificateDeclaration" => kube::api::ApiResource::erase::<ClusterCertificateDeclaration>(&()),
        "ObservedCertificate" => kube::api::ApiResource::erase::<ObservedCertificate>(&()),
        _ => kube::api::ApiResource::erase::<CertificatePolicy>(&()),
    };
    Api::namespaced_with(s.admin.clone(), &s.namespace, &resource)
}

/// Waits until the object reads as `expect` says, to Argo CD's script and to
/// kstatus; with `CERTSHIFT_CAPTURE_ARGOCD=1` it is written to the kind's
/// testdata and `health_test.yaml`, as Argo CD's own checks are kept.
async fn expect(s: &Scenario, expect: Expect) {
    let api = api(s, expect.kind);
    let what = format!("{} {} {}", expect.kind, expect.name, expect.health);
    let (object, message) = eventually(&what, Duration::from_secs(60), || async {
        let object = serde_json::to_value(api.get(expect.name).await.ok()?).ok()?;
        let value = object.clone();
        let kind = expect.kind;
        let (health, message) = tokio::task::spawn_blocking(move || argocd::health(kind, &value))
            .await
            .expect("lua");
        (health == expect.health
            && kstatus::compute(&object).0 == expect.kstatus
            && message.starts_with(expect.message))
        .then_some((object, message))
    })
    .await;
    assert!(!message.is_empty(), "{what}: a message");
    if std::env::var_os("CERTSHIFT_CAPTURE_ARGOCD").is_some() {
        capture(&expect, object, &message);
    }
}

fn capture(expect: &Expect, mut object: serde_json::Value, message: &str) {
    let metadata = object["metadata"].as_object_mut().expect("metadata");
    for noise in ["managedFields", "uid", "resourceVersion", "selfLink"] {
        metadata.remove(noise);
    }
    metadata.insert("namespace".into(), "default".into());
    let dir = argocd::kind_dir(expect.kind);
    let yaml = serde_yaml::to_string(&object).expect("yaml");
    std::fs::write(dir.join("testdata").join(expect.file), yaml).expect("testdata");
    let tests = dir.join("health_test.yaml");
    let mut text = std::fs::read_to_string(&tests).unwrap_or_else(|_| "tests:\n".to_owned());
    let entry = format!(
        "- healthStatus:\n    status: {}\n    message: {}\n  inputPath: testdata/{}\n",
        expect.health,
        serde_json::to_string(message).expect("message"),
        expect.file
    );
    // One entry per file: a new capture replaces the old.
    let marker = format!("  inputPath: testdata/{}\n", expect.file);
    if let Some(at) = text.find(&marker) {
        let start = text[..at].rfind("- healthStatus:").expect("entry");
        text.replace_range(start..at + marker.len(), &entry);
    } else {
        text.push_str(&entry);
    }
    std::fs::write(tests, text).expect("health_test.yaml");
}

/// Every state of each kind, walked on the API server: Progressing while
/// certshift works, Degraded when only a person can help, Suspended when
/// paused, Healthy when done; an edit not seen yet is Progressing.
pub async fn argo_cd_and_kstatus_read_every_state_of_every_kind(s: Scenario) {
    let ns = s.namespace.as_str();
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    apply(
        &s.admin,
        ns,
        &secret(
            "garbage",
            Some("kubernetes.io/tls"),
            &[("tls.crt", "not a certificate"), ("tls.key", "not a key")],
        ),
    )
    .await;
    for (name, source) in [("absent", "absent"), ("garbage", "garbage")] {
        apply(&s.admin, ns, &observed_certificate(name, source, None)).await;
    }
    apply(&s.admin, ns, &member_pod("m0", &[("app", "member")])).await;
    Declaration::example("declaration-thumbprint.yaml")
        .pod_members(&[("app", "member")])
        .apply(&s.admin, ns)
        .await;
    let mut invalid = Declaration::example("declaration-thumbprint.yaml").named("invalid");
    invalid.0.spec.certificate.as_mut().unwrap().thumbprint = "not a thumbprint".into();
    invalid.apply(&s.admin, ns).await;
    apply_yaml(&s.admin, ns, &example("ca.yaml")).await;
    let ca_name = "cluster-ca";
    for (name, secret_name, ca) in [
        ("issued", "issued", ca_name),
        ("no-ca", "no-ca", "absent-ca"),
        ("owned-elsewhere", "cluster-old", ca_name),
    ] {
        let mut p = policy(secret_name, ca, "2160h", 75);
        p.metadata.name = Some(name.to_owned());
        apply(&s.admin, ns, &p).await;
    }
    let operator = Operator::start(&s.plane, ns);
    let ocert = "ObservedCertificate";
    let ccd = "ClusterCertificateDeclaration";
    let cpol = "CertificatePolicy";
    for e in [
        (ocert, "cluster-old", "healthy.yaml", "Healthy", Status::Current),
        (
            ocert,
            "absent",
            "progressing_secret_not_found.yaml",
            "Progressing",
            Status::InProgress,
        ),
        (
            ocert,
            "garbage",
            "degraded_malformed_certificate.yaml",
            "Degraded",
            Status::Failed,
        ),
        (
            ccd,
            DECLARATION,
            "progressing_waiting_for_members.yaml",
            "Progressing",
            Status::InProgress,
        ),
        (
            ccd,
            "invalid",
            "degraded_invalid_thumbprint.yaml",
            "Degraded",
            Status::Failed,
        ),
        (cpol, "issued", "healthy.yaml", "Healthy", Status::Current),
        (
            cpol,
            "no-ca",
            "progressing_issuing_failed.yaml",
            "Progressing",
            Status::InProgress,
        ),
        (
            cpol,
            "owned-elsewhere",
            "degraded_secret_owned_elsewhere.yaml",
            "Degraded",
            Status::Failed,
        ),
    ]
    .map(|(kind, name, file, health, kstatus)| Expect {
        kind,
        name,
        file,
        health,
        kstatus,
        message: "",
    }) {
        expect(&s, e).await;
    }
    let pods: Api<Pod> = Api::namespaced(s.admin.clone(), ns);
    acknowledge(&pods, "m0", "1").await.expect("acknowledge");
    expect(
        &s,
        Expect {
            kind: ccd,
            name: DECLARATION,
            file: "healthy.yaml",
            health: "Healthy",
            message: "revision",
            kstatus: Status::Current,
        },
    )
    .await;

    // Paused before the conversion's first revision: held where the user asked.
    let mut paused = Declaration::example("declaration-common-name.yaml").pod_members(&[("app", "member")]);
    paused.0.spec.upgrade.get_or_insert_default().paused = true;
    paused.apply(&s.admin, ns).await;
    expect(
        &s,
        Expect {
            kind: ccd,
            name: DECLARATION,
            file: "suspended_paused.yaml",
            health: "Suspended",
            message: "Paused",
            kstatus: Status::Current,
        },
    )
    .await;

    // An edit certshift has not seen yet (the operator is stopped).
    operator.stop().await;
    let resumed = Declaration::example("declaration-common-name.yaml").pod_members(&[("app", "member")]);
    resumed.apply(&s.admin, ns).await;
    expect(
        &s,
        Expect {
            kind: ccd,
            name: DECLARATION,
            file: "progressing_stale_generation.yaml",
            health: "Progressing",
            message: "Waiting for certshift to observe generation",
            kstatus: Status::InProgress,
        },
    )
    .await;
    let operator = Operator::start(&s.plane, ns);
    // Revision 2 (AddSecondary's widening) acknowledged: healthCheckStableDuration (5s) holds the next.
    eventually("revision 2 published", Duration::from_secs(60), || async {
        let d = declaration(&s.admin, ns, DECLARATION).await;
        (d.status?.upgrade?.revision == 2).then_some(())
    })
    .await;
    acknowledge(&pods, "m0", "2").await.expect("acknowledge");
    expect(
        &s,
        Expect {
            kind: ccd,
            name: DECLARATION,
            file: "progressing_soaking.yaml",
            health: "Progressing",
            message: "Soaking",
            kstatus: Status::InProgress,
        },
    )
    .await;
    // m0's agent reports that a peer refuses its certificate under revision
    // 2 (what `certshift agent` writes on its Pod): the health check retries...
    let unhealthy = serde_json::json!({"metadata": {"annotations": {"certshift.io/health": serde_json::to_string(
        &certshift::outputs::ReportedHealth {
            revision: 2,
            healthy: false,
            reason: "CertificateRejectedByPeers".into(),
            message: "revision 2: 3 inbound handshakes refused by 10.88.0.9 with unknown_ca since revision 2".into(),
        }
    ).unwrap()}}});
    pods.patch("m0", &PatchParams::default(), &Patch::Merge(&unhealthy))
        .await
        .expect("report m0 unhealthy");
    expect(
        &s,
        Expect {
            kind: ccd,
            name: DECLARATION,
            file: "progressing_health_check_retrying.yaml",
            health: "Progressing",
            message: "HealthCheckRetrying",
            kstatus: Status::InProgress,
        },
    )
    .await;
    // ...until healthCheckRetryTimeout: then only a person can move it on.
    resumed
        .clone()
        .health_check("0s", "5s", "2s")
        .failure_action(certshift::crd::FailureAction::Manual)
        .apply(&s.admin, ns)
        .await;
    expect(
        &s,
        Expect {
            kind: ccd,
            name: DECLARATION,
            file: "degraded_health_check_failed.yaml",
            health: "Degraded",
            message: "HealthCheckFailed",
            kstatus: Status::Failed,
        },
    )
    .await;
    // A person rolls back (what `certshift rollback` sets): the revision back
    // is published and waits for m0, which has not loaded it yet...
    certshift::cli::action::request(&s.admin, ns, DECLARATION, certshift::cli::action::Verb::Rollback)
        .await
        .expect("certshift rollback");
    expect(
        &s,
        Expect {
            kind: ccd,
            name: DECLARATION,
            file: "progressing_rolling_back.yaml",
            health: "Progressing",
            message: "RollingBack",
            kstatus: Status::InProgress,
        },
    )
    .await;
    // ...and once m0 has it, the change is rolled back: the declaration in
    // force is the one before it, and only a person tries it again.
    let back = declaration(&s.admin, ns, DECLARATION)
        .await
        .status
        .unwrap()
        .upgrade
        .unwrap()
        .revision;
    assert!(back > 2, "a revision back was published: {back}");
    acknowledge(&pods, "m0", &back.to_string()).await.expect("acknowledge");
    expect(
        &s,
        Expect {
            kind: ccd,
            name: DECLARATION,
            file: "degraded_rolled_back.yaml",
            health: "Degraded",
            message: "RolledBack",
            kstatus: Status::Failed,
        },
    )
    .await;

    // The missing CA arrives (a GitOps tool applying it later), just after
    // the 4th failed attempt: the policy issues at once, not 40 s later when
    // its backoff would next try.
    let policies: Api<CertificatePolicy> = Api::namespaced(s.admin.clone(), ns);
    let (failures, last_failure) = eventually("no-ca failed 4 times", Duration::from_secs(90), || async {
        let status = policies.get("no-ca").await.ok()?.status?;
        (status.failed_attempts >= 4).then_some((status.failed_attempts, status.last_failure_time?))
    })
    .await;
    apply(&s.admin, ns, &ca_secret("absent-ca", &pki::ca("late CA"))).await;
    let issued = eventually("no-ca issued once its CA exists", Duration::from_secs(90), || async {
        let p = policies.get("no-ca").await.ok()?;
        let ready = p
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")?;
        Some(ready.last_transition_time.0)
    })
    .await;
    let next_attempt = last_failure + certshift::policy::backoff(failures);
    assert!(
        issued < next_attempt,
        "issued at {issued}; after {failures} failures (the last at {last_failure}) the backoff's next attempt was {next_attempt}"
    );
    operator.stop().await;
}

/// `kubectl explain` (the real kubectl, against the API server's published
/// OpenAPI) gives the type and description of every field at every depth of
/// the three kinds, and `kubectl get certshift` lists all three.
pub async fn kubectl_explains_every_field_and_gets_the_certshift_category(s: Scenario) {
    let kubeconfig = s.plane.write_kubeconfig();
    let kubectl = |args: Vec<String>| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let out = tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(&args)
                .output()
                .await
                .expect("kubectl");
            assert!(
                out.status.success(),
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).expect("utf-8")
        }
    };
    let mut explained = 0;
    for crd in certshift::crd::all() {
        let plural = crd.spec.names.plural.clone();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"].clone();
        // Every object in the schema, with the path kubectl explain takes.
        let mut objects = vec![(plural.clone(), schema)];
        while let Some((path, schema)) = objects.pop() {
            let object = if schema["type"] == "array" {
                &schema["items"]
            } else {
                &schema
            };
            let Some(properties) = object["properties"].as_object() else {
                continue;
            };
            let text = kubectl(vec!["explain".into(), path.clone()]).await;
            explained += 1;
            let fields = explained_fields(&text);
            assert!(
                text.contains("DESCRIPTION:") && !description_of(&text).is_empty(),
                "{path}: no description\n{text}"
            );
            for (name, child) in properties {
                let Some((type_, description)) = fields.get(name) else {
                    panic!("kubectl explain {path} does not list {name}:\n{text}");
                };
                assert!(!description.is_empty(), "{path}.{name} has no description:\n{text}");
                assert_eq!(type_, &explain_type(child), "{path}.{name}:\n{text}");
                objects.push((format!("{path}.{name}"), child.clone()));
            }
        }
    }
    assert!(explained >= 30, "{explained} objects explained");

    // Server-side apply (kubectl --server-side, Flux) dropping optional
    // objects: `certificate` in the conversion to common name, then
    // `certificateCommonNames` and `upgrade` on the way back.
    let ns = s.namespace.as_str();
    let manifest = |file: &str, drop_upgrade: bool| {
        let mut text = example(file).replace("namespace: default", &format!("namespace: {ns}"));
        if drop_upgrade {
            text = text.replace("  upgrade:\n    healthCheckStableDuration: 5s\n", "");
        }
        let path = s.plane.dir().join(format!("{ns}-{file}"));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    for (file, drop_upgrade) in [
        ("declaration-thumbprint.yaml", false),
        ("declaration-common-name.yaml", false),
        ("declaration-thumbprint.yaml", true),
    ] {
        let path = manifest(file, drop_upgrade);
        kubectl(vec!["apply".into(), "--server-side".into(), "-f".into(), path]).await;
        let spec = declaration(&s.admin, ns, DECLARATION).await.spec;
        let by_thumbprint = file.contains("thumbprint");
        assert_eq!(
            (
                spec.certificate.is_some(),
                spec.certificate_common_names.is_some(),
                spec.upgrade.is_some()
            ),
            (by_thumbprint, !by_thumbprint, !drop_upgrade),
            "server-side apply of {file}: {spec:?}"
        );
    }

    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    let mut p = policy("issued", "cluster-ca", "2160h", 75);
    p.metadata.name = Some("issued".into());
    apply(&s.admin, ns, &p).await;
    let listed = kubectl(vec![
        "get".into(),
        "certshift".into(),
        "-n".into(),
        ns.to_owned(),
        "-o".into(),
        "name".into(),
    ])
    .await;
    for name in [
        "certificatepolicy.certshift.io/issued",
        "observedcertificate.certshift.io/cluster-old",
        "clustercertificatedeclaration.certshift.io/cluster",
    ] {
        assert!(
            listed.lines().any(|l| l == name),
            "kubectl get certshift lacks {name}:\n{listed}"
        );
    }
}

/// The type kubectl explain prints for a schema.
fn explain_type(schema: &serde_json::Value) -> String {
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", explain_type(&schema["items"])),
        Some("object") if schema["additionalProperties"].is_object() => {
            format!("map[string]{}", explain_type(&schema["additionalProperties"]))
        }
        // An empty object (`selfSigned: {}`) is published as a map of nothing.
        Some("object") if schema["properties"].is_null() => "map[string]".to_owned(),
        Some("object") => "Object".to_owned(),
        Some(other) => other.to_owned(),
        None => String::new(),
    }
}

/// The text under `DESCRIPTION:`.
fn description_of(text: &str) -> String {
    text.split("DESCRIPTION:")
        .nth(1)
        .and_then(|rest| rest.split("FIELDS:").next())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `FIELDS:` entries: name → (type, description), from
/// `   name\t<type>[ -required-]` and the indented lines under it.
fn explained_fields(text: &str) -> BTreeMap<String, (String, String)> {
    let mut fields = BTreeMap::new();
    let Some(listing) = text.split("FIELDS:").nth(1) else {
        return fields;
    };
    let mut current: Option<(String, String, String)> = None;
    for line in listing.lines() {
        let trimmed = line.trim();
        if let Some((name, rest)) = trimmed.split_once('\t')
            && rest.starts_with('<')
        {
            if let Some((name, type_, description)) = current.take() {
                fields.insert(name, (type_, description.trim().to_owned()));
            }
            let type_ = rest.trim_start_matches('<').split('>').next().unwrap_or_default();
            current = Some((name.to_owned(), type_.to_owned(), String::new()));
        } else if let Some((_, _, description)) = current.as_mut() {
            description.push_str(trimmed);
            description.push(' ');
        }
    }
    if let Some((name, type_, description)) = current {
        fields.insert(name, (type_, description.trim().to_owned()));
    }
    fields
}

/// The Python of the virtualenv `hack/chart.sh` installs Helm's engine into.
fn helm_python() -> std::path::PathBuf {
    std::env::var_os("CERTSHIFT_HELM_PYTHON").map_or_else(
        || {
            let cache = std::env::var_os("CERTSHIFT_CACHE").map_or_else(
                || std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/certshift"),
                std::path::PathBuf::from,
            );
            cache.join("helm-venv/bin/python")
        },
        std::path::PathBuf::from,
    )
}

/// Helm itself (its Go engine through helm-python-sdk) installs, upgrades
/// and uninstalls the chart with its CRDs on a control plane of its own (the
/// shared one has the CRDs already): the CRDs carry
/// `helm.sh/resource-policy: keep` and outlive the release, and with them the
/// users' declarations.
pub async fn helm_uninstall_keeps_the_crds_and_the_declarations(_shared: Scenario) {
    let plane = Arc::new(
        tokio::task::spawn_blocking(ControlPlane::start)
            .await
            .expect("control plane"),
    );
    let admin = plane.client(ADMIN_TOKEN);
    let kubeconfig = plane.write_kubeconfig();
    let helm = |args: Vec<&'static str>| {
        let mut command = tokio::process::Command::new(helm_python());
        command
            .arg(repo_path("hack/helm-release.py"))
            .arg(&kubeconfig)
            .args(&args);
        async move {
            let out = command.output().await.unwrap_or_else(|err| {
                panic!(
                    "{}: {err}: hack/chart.sh installs Helm's engine (make test does)",
                    helm_python().display()
                )
            });
            assert!(
                out.status.success(),
                "helm {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    create_namespace(&admin, CHART_NAMESPACE).await;
    helm(vec![
        "install",
        "certshift",
        CHART_NAMESPACE,
        r#"{"crds": {"install": true}}"#,
    ])
    .await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(admin.clone());
    let name = "clustercertificatedeclarations.certshift.io";
    let crd = crds.get(name).await.expect("the release's CRD");
    assert_eq!(
        crd.metadata
            .annotations
            .unwrap_or_default()
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );
    eventually("the CRD established", Duration::from_secs(30), || async {
        let crd = crds.get(name).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ns = "team-a";
    create_namespace(&admin, ns).await;
    Declaration::example("declaration-thumbprint.yaml")
        .apply(&admin, ns)
        .await;
    // An upgrade to two replicas with leader election (Helm's own three-way merge).
    helm(vec![
        "upgrade",
        "certshift",
        CHART_NAMESPACE,
        r#"{"crds": {"install": true}, "replicaCount": 2, "leaderElection": {"enabled": true}}"#,
    ])
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(admin.clone(), CHART_NAMESPACE);
    let deployment = deployments.get("certshift").await.expect("deployment");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(2));
    helm(vec!["uninstall", "certshift", CHART_NAMESPACE]).await;
    eventually("the release's Deployment is gone", Duration::from_secs(30), || async {
        deployments.get_opt("certshift").await.ok()?.is_none().then_some(())
    })
    .await;
    for crd in [
        "clustercertificatedeclarations",
        "observedcertificates",
        "certificatepolicies",
    ] {
        assert!(
            crds.get_opt(&format!("{crd}.certshift.io")).await.unwrap().is_some(),
            "{crd} outlives the release"
        );
    }
    assert!(
        Api::<ClusterCertificateDeclaration>::namespaced(admin.clone(), ns)
            .get_opt(DECLARATION)
            .await
            .unwrap()
            .is_some(),
        "the users' declarations with it"
    );
}
