//! End-to-end scenarios against a real kube-apiserver and etcd. One control
//! plane for the run, one namespace and one in-process operator per scenario;
//! scenarios run concurrently and the control plane is torn down even when one
//! fails. Prints `N passed, M failed` and exits non-zero on any failure.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certshift::crd::ClusterCertificateDeclaration;
use certshift::outputs::{REVISION_ANNOTATION, THUMBPRINT_ANNOTATION};
use certshift::planner::Stage;
use certshift_e2e::control_plane::{ADMIN_TOKEN, CHART_NAMESPACE, CHART_SERVICE_ACCOUNT, CHART_TOKEN, OPERATOR_USER};
use certshift_e2e::judge::Judge;
use certshift_e2e::{
    ControlPlane, Operator, acknowledge, apply_rendered, apply_yaml, condition, create_namespace, declaration,
    eventually, example, free_addr, http_get, install_crds, is_true, member_pod, pki, wait_converted, wait_event,
    wait_ready, with_pod_members,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

const DECLARATION: &str = "cluster";

/// `certshift status` of the scenario's declaration, as the command prints it.
async fn status_text(s: &Scenario) -> String {
    let report = certshift::cli::status::gather(&s.admin, &s.namespace, DECLARATION)
        .await
        .expect("status");
    certshift::cli::status::render(&report, jiff::Timestamp::now())
}

struct Scenario {
    plane: Arc<ControlPlane>,
    admin: Client,
    namespace: String,
}

type Run = fn(Scenario) -> BoxFuture<'static, ()>;

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scenarios: Vec<(&str, Run)> = vec![
        ("conversion_walks_the_three_stages_and_idles_without_writes", |s| {
            conversion(s).boxed()
        }),
        ("members_gate_each_revision_and_min_soak_is_respected", |s| {
            gating(s).boxed()
        }),
        ("renewals_roll_over_when_pinned_and_are_refused_when_not", |s| {
            rollover(s).boxed()
        }),
        ("a_restarted_operator_resumes_without_repeating_or_skipping", |s| {
            restart(s).boxed()
        }),
        ("invalid_specs_and_foreign_secrets_publish_nothing", |s| {
            invalid(s).boxed()
        }),
        ("process_elects_a_leader_and_serves_health_and_metrics", |s| {
            process(s).boxed()
        }),
        ("chart_rbac_runs_the_conversion_and_never_deletes_secrets", |s| {
            chart(s).boxed()
        }),
        ("policy_issues_renews_rolls_over_and_an_unpinned_ca_blocks", |s| {
            policy_rollover(s).boxed()
        }),
        ("policy_failures_back_off_with_bounded_writes", |s| {
            policy_backoff(s).boxed()
        }),
        ("policy_example_enrolls_like_service_fabric", |s| {
            policy_example(s).boxed()
        }),
        ("consumer_templates_render_with_each_revision", |s| templates(s).boxed()),
        ("a_statefulset_rollout_gates_each_revision", |s| workloads(s).boxed()),
        ("tls_members_acknowledge_by_probe_and_a_rejecting_peer_blocks", |s| {
            endpoints(s).boxed()
        }),
        ("deleting_certshift_objects_never_deletes_user_secrets", |s| {
            deletion(s).boxed()
        }),
        ("chaos_restarts_during_the_conversion_and_crd_deletion", |s| {
            chaos(s).boxed()
        }),
    ];
    let scenarios: Vec<_> = scenarios
        .into_iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    println!("running {} end-to-end scenarios", scenarios.len());
    let plane = Arc::new(ControlPlane::start());
    // The operator's logs go beside the control plane's, for failed runs.
    let log = std::fs::File::create(plane.dir().join("operator.log")).expect("operator.log");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_ansi(false)
        .with_writer(Mutex::new(log))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let results: Vec<(&str, Result<(), String>, Duration)> = runtime.block_on(async {
        let admin = plane.client(ADMIN_TOKEN);
        install_crds(&admin).await;
        let mut handles = Vec::new();
        for (index, (name, run)) in scenarios.into_iter().enumerate() {
            let namespace = format!(
                "e2e-{index}-{}",
                &name[..name.find('_').unwrap_or(name.len())].replace('_', "-")
            );
            create_namespace(&admin, &namespace).await;
            let scenario = Scenario {
                plane: plane.clone(),
                admin: admin.clone(),
                namespace,
            };
            handles.push((
                name,
                tokio::spawn(async move {
                    let started = Instant::now();
                    run(scenario).await;
                    started.elapsed()
                }),
            ));
        }
        let mut results = Vec::new();
        for (name, handle) in handles {
            let outcome = handle.await.map_err(|err| {
                if err.is_panic() {
                    let panic = err.into_panic();
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "panicked".to_owned())
                } else {
                    err.to_string()
                }
            });
            let elapsed = *outcome.as_ref().unwrap_or(&Duration::ZERO);
            results.push((name, outcome.map(|_| ()), elapsed));
        }
        results
    });
    drop(runtime);
    let mut failed = 0;
    for (name, outcome, elapsed) in &results {
        match outcome {
            Ok(()) => println!("test {name} ... ok ({:.1}s)", elapsed.as_secs_f64()),
            Err(message) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1}s)\n    {message}", elapsed.as_secs_f64());
            }
        }
    }
    if failed > 0 {
        println!(
            "logs of the failed run (kept): {}; kubeconfig: {}",
            plane.dir().display(),
            plane.write_kubeconfig().display()
        );
        plane.keep();
    }
    println!("\n{} passed, {failed} failed", results.len() - failed);
    drop(plane);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Tells the judge about every certificate of a manifest's TLS Secrets.
fn know_secrets(judge: &Judge, manifest: &str) {
    for document in serde_yaml::Deserializer::from_str(manifest) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(document).expect("YAML");
        if value["kind"].as_str() == Some("Secret") {
            let crt = value["stringData"]["tls.crt"].as_str().expect("tls.crt");
            judge.know(crt, value["stringData"]["ca.crt"].as_str());
        }
    }
}

fn stages_after_first(judge: &Judge) -> Vec<Stage> {
    let mut stages: Vec<Stage> = judge
        .observations()
        .iter()
        .skip(1)
        .filter_map(|o| o.revision.stage)
        .collect();
    stages.dedup();
    stages
}

fn assert_judged_clean(judge: &Judge) {
    let violations = judge.violations();
    assert!(violations.is_empty(), "the judge saw violations: {violations:#?}");
}

async fn conversion(s: Scenario) {
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

async fn gating(s: Scenario) {
    let ns = s.namespace.clone();
    let judge = Judge::watch(&s.admin, &ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&s.admin, &ns, &example("store.yaml")).await;
    for pod in ["member-a", "member-b"] {
        apply_yaml(&s.admin, &ns, &member_pod(pod, "{app: member}")).await;
    }
    let with_members = |file: &str| with_pod_members(&example(file), "3s", "{app: member}");
    apply_yaml(&s.admin, &ns, &with_members("declaration-thumbprint.yaml")).await;

    // The members: each loads the published revision and reports it; b is slower.
    let acks: Arc<Mutex<BTreeMap<(String, u64), Instant>>> = Arc::default();
    let members = {
        let (admin, ns, acks) = (s.admin.clone(), ns.clone(), acks.clone());
        tokio::spawn(async move {
            let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
            let pods: Api<Pod> = Api::namespaced(admin, &ns);
            let mut first_seen: BTreeMap<u64, Instant> = BTreeMap::new();
            loop {
                if let Ok(Some(map)) = maps.get_opt("cluster-validation").await {
                    let revision: u64 = map
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(REVISION_ANNOTATION))
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0);
                    let seen = *first_seen.entry(revision).or_insert_with(Instant::now);
                    for (pod, delay) in [("member-a", Duration::ZERO), ("member-b", Duration::from_millis(1500))] {
                        let key = (pod.to_owned(), revision);
                        if seen.elapsed() < delay || acks.lock().unwrap().contains_key(&key) {
                            continue;
                        }
                        if acknowledge(&pods, pod, &revision.to_string()).await.is_ok() {
                            acks.lock().unwrap().insert(key, Instant::now());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let operator = Operator::start(&s.plane, &ns);
    wait_ready(&s.admin, &ns, DECLARATION, Duration::from_secs(60)).await;
    apply_yaml(&s.admin, &ns, &with_members("declaration-common-name.yaml")).await;
    let upgrading = eventually("a revision waiting for member-b", Duration::from_secs(60), || async {
        let d = declaration(&s.admin, &ns, DECLARATION).await;
        let laggards = d.status.as_ref()?.members.as_ref()?.laggards.clone();
        (laggards == ["pod/member-b"] && is_true(&d, "Progressing")).then_some(())?;
        let text = status_text(&s).await;
        text.contains("Laggards:  pod/member-b").then_some(text)
    })
    .await;
    for line in [
        "Converged: 1/2",
        "Remaining revisions:",
        "PinIssuers",
        "Progressing          True",
    ] {
        assert!(
            upgrading.contains(line),
            "status of an upgrading declaration lacks {line:?}:\n{upgrading}"
        );
    }
    wait_converted(&s.admin, &ns, DECLARATION, Duration::from_secs(180)).await;
    let members_status = declaration(&s.admin, &ns, DECLARATION)
        .await
        .status
        .unwrap()
        .members
        .unwrap();
    assert_eq!((members_status.total, members_status.converged), (2, 2));

    let observations = judge.observations();
    assert_eq!(observations.len(), 6);
    let acks = acks.lock().unwrap().clone();
    for pair in observations.windows(2) {
        let (previous, next) = (&pair[0], &pair[1]);
        let r = previous.revision.revision;
        let acked: Vec<Instant> = ["member-a", "member-b"]
            .iter()
            .map(|pod| {
                *acks
                    .get(&(pod.to_string(), r))
                    .unwrap_or_else(|| panic!("revision {} was published before {pod} acknowledged {r}", r + 1))
            })
            .collect();
        let last_ack = *acked.iter().max().unwrap();
        assert!(
            last_ack < next.at,
            "revision {} published before both members acknowledged {r}",
            r + 1
        );
        // minSoak is 3s; status times are whole seconds, so allow one second.
        let soaked = next.at - last_ack;
        assert!(
            soaked >= Duration::from_secs(2),
            "revision {} soaked only {soaked:?}",
            r + 1
        );
    }
    assert_judged_clean(&judge);
    members.abort();
    operator.stop().await;
    judge.stop();
}

async fn rollover(s: Scenario) {
    let ns = &s.namespace;
    let judge = Judge::watch(&s.admin, ns);
    let ca = pki::ca("rollover CA");
    let first = pki::leaf("cluster.example", -10, &ca);
    judge.know(&first.pem, Some(&ca.pem));
    apply_yaml(&s.admin, ns, &pki::tls_secret("cluster", &first, &ca)).await;
    apply_yaml(&s.admin, ns, &pki::observed("cluster")).await;
    let declaration_yaml = format!(
        "apiVersion: certshift.io/v1alpha1\nkind: ClusterCertificateDeclaration\nmetadata:\n  name: {DECLARATION}\nspec:\n  certificateCommonNames:\n    commonNames:\n    - certificateCommonName: cluster.example\n      certificateIssuerThumbprint: {}\n  store:\n    observedCertificates: [cluster]\n",
        ca.thumbprint
    );
    apply_yaml(&s.admin, ns, &declaration_yaml).await;
    let operator = Operator::start(&s.plane, ns);
    let ready = wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    assert_eq!(ready.status.unwrap().presenting.unwrap().thumbprint, first.thumbprint);

    // A renewal from the pinned CA overwrites the source Secret: touch-free rollover.
    let renewal = pki::leaf("cluster.example", -5, &ca);
    judge.know(&renewal.pem, Some(&ca.pem));
    apply_yaml(&s.admin, ns, &pki::tls_secret("cluster", &renewal, &ca)).await;
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
    apply_yaml(&s.admin, ns, &pki::tls_secret("cluster", &rogue, &rogue_ca)).await;
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

async fn restart(s: Scenario) {
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

async fn invalid(s: Scenario) {
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    let old = example("declaration-thumbprint.yaml");
    let thumbprint = old
        .lines()
        .find_map(|l| l.trim().strip_prefix("thumbprint: "))
        .expect("thumbprint")
        .to_owned();
    let spec = |name: &str, body: &str| {
        format!(
            "apiVersion: certshift.io/v1alpha1\nkind: ClusterCertificateDeclaration\nmetadata:\n  name: {name}\nspec:\n{body}"
        )
    };
    let store = "  store:\n    observedCertificates: [cluster-old, cluster-cn]\n";
    let cases = [
        (
            "bad-thumbprint",
            format!("  certificate:\n    thumbprint: \"{}Z\"\n{store}", &thumbprint[1..]),
            "InvalidThumbprint",
        ),
        (
            "duplicate-name",
            format!(
                "  certificateCommonNames:\n    commonNames:\n    - certificateCommonName: cluster.example\n    - certificateCommonName: Cluster.Example\n{store}"
            ),
            "DuplicateCommonName",
        ),
        (
            "missing-store",
            format!("  certificate:\n    thumbprint: {thumbprint}\n  store:\n    observedCertificates: [nowhere]\n"),
            "StoreNotFound",
        ),
        (
            "taken",
            format!("  certificate:\n    thumbprint: {thumbprint}\n{store}"),
            "SecretOwnedElsewhere",
        ),
        (
            "bad-template",
            format!(
                "  certificate:\n    thumbprint: {thumbprint}\n{store}  output:\n    templates:\n    - key: app.json\n      template: \"{{{{ unclosed\"\n"
            ),
            "InvalidTemplate",
        ),
    ];
    // Someone else's Secret where `taken` would publish.
    apply_yaml(
        &s.admin,
        ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: taken-presentation\nstringData:\n  note: not certshift's\n",
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(s.admin.clone(), ns);
    let foreign_version = secrets
        .get("taken-presentation")
        .await
        .unwrap()
        .metadata
        .resource_version;
    for (name, body, _) in &cases {
        apply_yaml(&s.admin, ns, &spec(name, body)).await;
    }
    let operator = Operator::start(&s.plane, ns);
    for (name, _, reason) in &cases {
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
        if *name != "taken" {
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
    let after = secrets.get("taken-presentation").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, foreign_version,
        "the foreign Secret is untouched"
    );
    operator.stop().await;
}

async fn process(s: Scenario) {
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

    // A second replica waits for the lease and is not ready meanwhile.
    let standby = Operator::start_with(&s.plane, options("replica-b", standby_addr));
    let (code, _) = eventually("the standby's /readyz", Duration::from_secs(10), || {
        http_get(standby_addr, "/readyz")
    })
    .await;
    assert_eq!(code, 503, "a standby replica is not ready");
    assert_eq!(http_get(standby_addr, "/healthz").await.map(|r| r.0), Some(200));

    assert_eq!(http_get(leader_addr, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(http_get(leader_addr, "/readyz").await.map(|r| r.0), Some(200));
    let (code, metrics) = http_get(leader_addr, "/metrics").await.expect("/metrics");
    assert_eq!(code, 200);
    for line in [
        "certshift_reconciles_total{controller=\"declaration\"}".to_owned(),
        "certshift_revisions_published_total 1".to_owned(),
        format!("certshift_certificate_not_after_seconds{{namespace=\"{ns}\",name=\"cluster-cn\"}} "),
        "certshift_writes_total{kind=\"ConfigMap\"} 1".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} missing from /metrics:\n{metrics}");
    }
    standby.stop().await;
    leader.stop().await;
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

async fn chart(s: Scenario) {
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

fn ca_secret(name: &str, ca: &pki::Issued) -> String {
    let indent = |t: &str| t.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&ca.pem),
        indent(&ca.key.serialize_pem())
    )
}

fn policy_yaml(ca_secret: &str, validity: &str, percentage: u8) -> String {
    format!(
        "apiVersion: certshift.io/v1alpha1\nkind: CertificatePolicy\nmetadata:\n  name: cluster\nspec:\n  secretName: cluster-tls\n  subject: {{commonName: cluster.example}}\n  dnsNames: [cluster.example]\n  extendedKeyUsages: [serverAuth, clientAuth]\n  validity: {validity}\n  lifetimeAction: {{renewAtPercentageLifetime: {percentage}}}\n  issuer:\n    ca:\n      secretRef: {{name: {ca_secret}}}\n"
    )
}

async fn policy(s: &Scenario) -> certshift::crd::CertificatePolicy {
    Api::<certshift::crd::CertificatePolicy>::namespaced(s.admin.clone(), &s.namespace)
        .get("cluster")
        .await
        .expect("policy")
}

async fn policy_rollover(s: Scenario) {
    let ns = &s.namespace;
    let judge = Judge::watch(&s.admin, ns);
    let ca = pki::ca("policy CA");
    let rogue = pki::ca("unpinned CA");
    apply_yaml(&s.admin, ns, &ca_secret("cluster-ca", &ca)).await;
    apply_yaml(&s.admin, ns, &ca_secret("other-ca", &rogue)).await;
    apply_yaml(&s.admin, ns, &policy_yaml("cluster-ca", "90s", 50)).await;
    apply_yaml(
        &s.admin,
        ns,
        "apiVersion: certshift.io/v1alpha1\nkind: ObservedCertificate\nmetadata:\n  name: cluster-tls\nspec:\n  source:\n    secretRef: {name: cluster-tls}\n  policyRef: {name: cluster}\n",
    )
    .await;
    let declaration_yaml = format!(
        "apiVersion: certshift.io/v1alpha1\nkind: ClusterCertificateDeclaration\nmetadata:\n  name: {DECLARATION}\nspec:\n  certificateCommonNames:\n    commonNames:\n    - certificateCommonName: cluster.example\n      certificateIssuerThumbprint: {}\n  store:\n    observedCertificates: [cluster-tls]\n",
        ca.thumbprint
    );
    apply_yaml(&s.admin, ns, &declaration_yaml).await;
    let operator = Operator::start(&s.plane, ns);

    let first = wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    let issued = policy(&s).await.status.expect("policy status");
    assert_eq!(issued.revision, 1);
    let first_thumbprint = issued.current_thumbprint.clone().expect("issued");
    assert_eq!(first.status.unwrap().presenting.unwrap().thumbprint, first_thumbprint);
    let renewal_time = issued.renewal_time.expect("renewal time");
    assert_eq!(
        renewal_time.as_second() - issued.not_before.unwrap().as_second(),
        45,
        "renew at 50% of 90s"
    );
    let observed = Api::<certshift::crd::ObservedCertificate>::namespaced(s.admin.clone(), ns)
        .get("cluster-tls")
        .await
        .unwrap();
    let compliant = observed
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Compliant")
        .expect("Compliant");
    assert_eq!(
        (compliant.status.as_str(), compliant.reason.as_str()),
        ("True", "Compliant")
    );

    // Renewal at the lifetime action, rolled over touch-free by the declaration.
    let renewed = eventually("the renewal to be presented", Duration::from_secs(90), || async {
        let p = policy(&s).await.status?;
        let d = declaration(&s.admin, ns, DECLARATION).await;
        let presenting = d.status.as_ref()?.presenting.as_ref()?.thumbprint.clone();
        (p.revision == 2 && p.current_thumbprint.as_deref() == Some(presenting.as_str()) && is_true(&d, "Ready"))
            .then_some(p)
    })
    .await;
    let renewed_at = renewed.not_before.unwrap().as_second();
    assert!(
        (renewal_time.as_second()..=renewal_time.as_second() + 10).contains(&renewed_at),
        "renewed at {renewed_at}, due at {renewal_time}"
    );
    for reason in ["Issued", "Renewed", "Rollover"] {
        wait_event(&s.admin, ns, None, reason).await;
    }

    // The policy moves to a CA that is not pinned: the next certificate is refused.
    // (A second apart, so it is strictly newer: validity has whole seconds, and
    // a tie in notBefore and notAfter goes to the smaller thumbprint.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply_yaml(&s.admin, ns, &policy_yaml("other-ca", "90s", 50)).await;
    let blocked = eventually("Blocked/IssuerNotPinned", Duration::from_secs(15), || async {
        let d = declaration(&s.admin, ns, DECLARATION).await;
        let blocked = condition(&d, "Blocked")?;
        (blocked.status == "True" && blocked.reason == "IssuerNotPinned").then_some(d)
    })
    .await;
    assert_eq!(
        blocked.status.unwrap().presenting.unwrap().thumbprint,
        renewed.current_thumbprint.unwrap(),
        "the renewal from the pinned CA stays presented"
    );
    assert_ne!(
        policy(&s).await.status.unwrap().current_thumbprint,
        Some(first_thumbprint)
    );
    assert_judged_clean(&judge);
    assert!(
        judge.observations().len() >= 2,
        "at least the first and the rollover revision"
    );
    operator.stop().await;
    judge.stop();
}

async fn policy_backoff(s: Scenario) {
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &policy_yaml("missing-ca", "90s", 50)).await;
    let operator = Operator::start(&s.plane, ns);
    tokio::time::sleep(Duration::from_secs(25)).await;
    let status = policy(&s).await.status.expect("status");
    // Attempts at 0s, 5s, 15s (then 35s): three or four in 25s, not one per reconcile.
    assert!(
        (3..=4).contains(&status.failed_attempts),
        "attempts: {}",
        status.failed_attempts
    );
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "IssuingFailed")
    );
    assert!(ready.message.contains("missing-ca"), "{}", ready.message);
    let writes = s.plane.writes(OPERATOR_USER, ns);
    let status_writes = writes
        .iter()
        .filter(|w| w.contains("certificatepolicies/cluster/status"))
        .count();
    assert!(
        status_writes <= status.failed_attempts as usize + 1,
        "status writes {status_writes} for {} attempts: {writes:?}",
        status.failed_attempts
    );
    assert!(
        !writes.iter().any(|w| w.contains("secrets/")),
        "no Secret is created: {writes:?}"
    );
    println!(
        "  backoff: {} attempts, {status_writes} status writes, {} writes in all in 25s",
        status.failed_attempts,
        writes.len()
    );
    operator.stop().await;
}

async fn policy_example(s: Scenario) {
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &example("ca.yaml")).await;
    let policy_example = std::fs::read_to_string(certshift_e2e::repo_path("examples/policy/policy.yaml")).unwrap();
    apply_yaml(&s.admin, ns, &policy_example).await;
    let operator = Operator::start(&s.plane, ns);
    let ready = eventually("the enrolled declaration", Duration::from_secs(60), || async {
        let d = Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
            .get("cluster-issued")
            .await
            .ok()?;
        is_true(&d, "Ready").then_some(d)
    })
    .await;
    let issued = policy(&s).await.status.unwrap();
    assert_eq!(
        ready.status.unwrap().presenting.unwrap().thumbprint,
        issued.current_thumbprint.unwrap()
    );
    let lifetime = issued.not_after.unwrap().as_second() - issued.not_before.unwrap().as_second();
    assert_eq!(lifetime, 2880 * 3600, "4 months (120 days)");
    assert_eq!(
        issued.renewal_time.unwrap().as_second() - issued.not_before.unwrap().as_second(),
        lifetime * 75 / 100
    );
    let observed = Api::<certshift::crd::ObservedCertificate>::namespaced(s.admin.clone(), ns)
        .get("cluster-issued")
        .await
        .unwrap()
        .status
        .unwrap();
    let facts = &observed.instances[0];
    assert_eq!((facts.key_algorithm.as_str(), facts.key_size), ("RSA", 2048));
    assert_eq!(facts.extended_key_usages, ["serverAuth", "clientAuth"]);
    assert!(
        observed
            .conditions
            .iter()
            .any(|c| c.type_ == "Compliant" && c.status == "True")
    );
    operator.stop().await;
}

async fn templates(s: Scenario) {
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    let consumer = std::fs::read_to_string(certshift_e2e::repo_path(
        "examples/consumers/machine-learning-server.yaml",
    ))
    .unwrap();
    apply_yaml(&s.admin, ns, &consumer).await;
    let operator = Operator::start(&s.plane, ns);
    let ready = eventually("the consumer declaration", Duration::from_secs(60), || async {
        let d = Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
            .get("machine-learning-server")
            .await
            .ok()?;
        is_true(&d, "Ready").then_some(d)
    })
    .await;
    let presented = ready.status.unwrap().presenting.unwrap().thumbprint;
    let map = Api::<ConfigMap>::namespaced(s.admin.clone(), ns)
        .get("machine-learning-server-validation")
        .await
        .expect("validation ConfigMap");
    let settings: serde_json::Value = serde_json::from_str(&map.data.unwrap()["appsettings.json"]).expect("JSON");
    assert_eq!(
        settings["Kestrel"]["HttpsCertificate"]["Thumbprint"],
        presented.as_str()
    );
    assert_eq!(
        settings["Kestrel"]["HttpsCertificate"]["SubjectName"],
        "CN=cluster.example"
    );

    // Formats for consumers that are not PEM-native.
    apply_yaml(
        &s.admin,
        ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: pfx-password\nstringData:\n  password: s3cret\n",
    )
    .await;
    let formats = consumer.replace("name: machine-learning-server", "name: hpc-pack").replace(
        "  output:\n",
        "  output:\n    formats: [DER, PKCS12, CombinedPEM]\n    pkcs12:\n      passwordSecretRef: {name: pfx-password}\n",
    );
    apply_yaml(&s.admin, ns, &formats).await;
    eventually("the formats declaration", Duration::from_secs(60), || async {
        let d = Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
            .get("hpc-pack")
            .await
            .ok()?;
        is_true(&d, "Ready").then_some(())
    })
    .await;
    let secret = Api::<Secret>::namespaced(s.admin.clone(), ns)
        .get("hpc-pack-presentation")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    let cer = certshift::facts::inspect("tls.cer", &data["tls.cer"].0).expect("DER parses back");
    assert_eq!(cer[0].thumbprint.as_str(), presented);
    assert!(String::from_utf8_lossy(&data["tls-combined.pem"].0).starts_with("-----BEGIN PRIVATE KEY-----"));
    let pfx = std::env::temp_dir().join(format!("certshift-e2e-{}.pfx", std::process::id()));
    std::fs::write(&pfx, &data["tls.pfx"].0).unwrap();
    let opened = std::process::Command::new("openssl")
        .args(["pkcs12", "-in"])
        .arg(&pfx)
        .args(["-passin", "pass:s3cret", "-nodes", "-nokeys"])
        .output()
        .expect("openssl");
    let _ = std::fs::remove_file(&pfx);
    assert!(opened.status.success(), "{}", String::from_utf8_lossy(&opened.stderr));
    // The salted PKCS#12 file is not rewritten by later reconciles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = s.plane.writes(OPERATOR_USER, ns);
    let touch = serde_json::json!({"metadata": {"annotations": {"e2e/touched": "yes"}}});
    Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
        .patch("hpc-pack", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = s.plane.writes(OPERATOR_USER, ns);
    assert_eq!(after[before.len()..], [] as [String; 0], "writes in an unchanged world");
    operator.stop().await;
}

async fn workloads(s: Scenario) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let ns = s.namespace.clone();
    let judge = Judge::watch(&s.admin, &ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&s.admin, &ns, &example("store.yaml")).await;
    apply_yaml(
        &s.admin,
        &ns,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: members\nspec:\n  replicas: 2\n  serviceName: members\n  selector:\n    matchLabels: {app: members}\n  template:\n    metadata:\n      labels: {app: members}\n    spec:\n      containers:\n      - name: app\n        image: example.invalid/member\n",
    )
    .await;
    let with_workload = |file: &str| {
        example(file).replace(
            "  upgrade:\n    minSoak: 5s\n",
            "  upgrade:\n    minSoak: 1s\n  members:\n    workloads:\n    - {kind: StatefulSet, name: members}\n",
        )
    };
    apply_yaml(&s.admin, &ns, &with_workload("declaration-thumbprint.yaml")).await;

    // The test plays the StatefulSet controller: each stamped template rolls out in about a second.
    let rolled_out: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let controller = {
        let (admin, ns, rolled_out) = (s.admin.clone(), ns.clone(), rolled_out.clone());
        tokio::spawn(async move {
            let sets: Api<StatefulSet> = Api::namespaced(admin, &ns);
            let mut first_seen: BTreeMap<u64, Instant> = BTreeMap::new();
            loop {
                if let Ok(set) = sets.get("members").await {
                    let revision = set
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.metadata.as_ref())
                        .and_then(|m| m.annotations.as_ref())
                        .and_then(|a| a.get(REVISION_ANNOTATION))
                        .and_then(|r| r.parse::<u64>().ok());
                    if let Some(revision) = revision {
                        let seen = *first_seen.entry(revision).or_insert_with(Instant::now);
                        let done = rolled_out.lock().unwrap().contains_key(&revision);
                        if !done && seen.elapsed() > Duration::from_secs(1) {
                            let status = serde_json::json!({"status": {
                                "observedGeneration": set.metadata.generation,
                                "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "currentReplicas": 2,
                                "availableReplicas": 2,
                                "currentRevision": format!("members-{revision}"),
                                "updateRevision": format!("members-{revision}"),
                            }});
                            if sets
                                .patch_status("members", &PatchParams::default(), &Patch::Merge(&status))
                                .await
                                .is_ok()
                            {
                                rolled_out.lock().unwrap().insert(revision, Instant::now());
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let operator = Operator::start(&s.plane, &ns);
    wait_ready(&s.admin, &ns, DECLARATION, Duration::from_secs(60)).await;
    apply_yaml(&s.admin, &ns, &with_workload("declaration-common-name.yaml")).await;
    wait_converted(&s.admin, &ns, DECLARATION, Duration::from_secs(120)).await;
    let members = declaration(&s.admin, &ns, DECLARATION)
        .await
        .status
        .unwrap()
        .members
        .unwrap();
    assert_eq!((members.total, members.converged), (1, 1));
    let observations = judge.observations();
    assert_eq!(observations.len(), 6);
    let rolled_out = rolled_out.lock().unwrap().clone();
    for pair in observations.windows(2) {
        let (previous, next) = (&pair[0], &pair[1]);
        let r = previous.revision.revision;
        let done = rolled_out
            .get(&r)
            .unwrap_or_else(|| panic!("revision {} published before {r} rolled out", r + 1));
        assert!(
            *done < next.at,
            "revision {} published before the rollout of {r} completed",
            r + 1
        );
    }
    assert_judged_clean(&judge);
    controller.abort();
    operator.stop().await;
    judge.stop();
}

async fn endpoints(s: Scenario) {
    use certshift_e2e::member::Member;
    let ns = s.namespace.clone();
    let judge = Judge::watch(&s.admin, &ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&s.admin, &ns, &example("store.yaml")).await;
    let members = [
        Member::start(s.admin.clone(), &ns, "cluster", None).await,
        Member::start(s.admin.clone(), &ns, "cluster", None).await,
    ];
    let rejecting = Member::start(s.admin.clone(), &ns, "guarded", Some("cluster.example")).await;
    // A member found through a Service's EndpointSlice.
    let behind_service = Member::start(s.admin.clone(), &ns, "via-service", None).await;
    let port = behind_service.address.rsplit_once(':').unwrap().1.to_owned();
    apply_yaml(
        &s.admin,
        &ns,
        &format!(
            "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: members-1\n  labels: {{kubernetes.io/service-name: members}}\naddressType: IPv4\nendpoints:\n- addresses: [127.0.0.1]\n  conditions: {{ready: true}}\nports:\n- {{name: https, port: {port}, protocol: TCP}}\n"
        ),
    )
    .await;
    let via_service = example("declaration-thumbprint.yaml").replace("name: cluster\n", "name: via-service\n").replace(
        "  upgrade:\n    minSoak: 5s\n",
        "  upgrade:\n    minSoak: 1s\n  members:\n    endpoints:\n    - service: {name: members, portName: https}\n      serverName: localhost\n",
    );
    apply_yaml(&s.admin, &ns, &via_service).await;
    let with_endpoints = |file: &str, name: &str, addresses: &[&str]| {
        let list: String = addresses.iter().map(|a| format!("    - address: \"{a}\"\n")).collect();
        example(file)
            .replace("name: cluster\n", &format!("name: {name}\n"))
            .replace(
                "  upgrade:\n    minSoak: 5s\n",
                &format!("  upgrade:\n    minSoak: 1s\n  members:\n    endpoints:\n{list}"),
            )
    };
    let addresses = [members[0].address.as_str(), members[1].address.as_str()];
    apply_yaml(
        &s.admin,
        &ns,
        &with_endpoints("declaration-thumbprint.yaml", "cluster", &addresses),
    )
    .await;
    apply_yaml(
        &s.admin,
        &ns,
        &with_endpoints("declaration-thumbprint.yaml", "guarded", &[&rejecting.address]),
    )
    .await;
    let operator = Operator::start(&s.plane, &ns);
    wait_ready(&s.admin, &ns, "cluster", Duration::from_secs(60)).await;
    wait_ready(&s.admin, &ns, "guarded", Duration::from_secs(60)).await;
    let served = wait_ready(&s.admin, &ns, "via-service", Duration::from_secs(60))
        .await
        .status
        .unwrap()
        .members
        .unwrap();
    assert_eq!(
        (served.total, served.converged),
        (1, 1),
        "the Service's one ready address"
    );

    // The conversion, each stage acknowledged by what the endpoints present.
    apply_yaml(
        &s.admin,
        &ns,
        &with_endpoints("declaration-common-name.yaml", "cluster", &addresses),
    )
    .await;
    apply_yaml(
        &s.admin,
        &ns,
        &with_endpoints("declaration-common-name.yaml", "guarded", &[&rejecting.address]),
    )
    .await;
    let done = eventually("the probed conversion", Duration::from_secs(120), || async {
        let d = declaration(&s.admin, &ns, "cluster").await;
        let status = d.status.clone()?;
        (is_true(&d, "Ready") && status.declared_by.as_deref() == Some("CommonName")).then_some(status)
    })
    .await;
    let probed = done.members.unwrap();
    assert_eq!((probed.total, probed.converged), (2, 2));
    let cluster: Vec<_> = judge
        .observations()
        .into_iter()
        .filter(|o| o.declaration == "cluster")
        .collect();
    assert_eq!(cluster.len(), 6);

    // The member that rejects the goal blocks its presentation before anything is presented.
    let blocked = eventually("Blocked/PeerRejectsCertificate", Duration::from_secs(60), || async {
        let d = declaration(&s.admin, &ns, "guarded").await;
        let blocked = condition(&d, "Blocked")?;
        (blocked.status == "True" && blocked.reason == "PeerRejectsCertificate").then_some(blocked.message.clone())
    })
    .await;
    assert!(
        blocked.contains(&rejecting.address),
        "the message names the endpoint: {blocked}"
    );
    assert!(
        blocked.contains("alert") || blocked.contains("handshake"),
        "a TLS refusal: {blocked}"
    );
    println!("  pre-flight: {blocked}");
    let old = example("declaration-thumbprint.yaml")
        .lines()
        .find_map(|l| l.trim().strip_prefix("thumbprint: ").map(str::to_owned))
        .unwrap();
    let presentation = Api::<Secret>::namespaced(s.admin.clone(), &ns)
        .get("guarded-presentation")
        .await
        .unwrap();
    assert_eq!(
        presentation.metadata.annotations.unwrap()[THUMBPRINT_ANNOTATION],
        old,
        "still presenting the old certificate"
    );
    assert_judged_clean(&judge);
    operator.stop().await;
    for member in members {
        member.stop();
    }
    rejecting.stop();
    behind_service.stop();
    judge.stop();
}

async fn deletion(s: Scenario) {
    use certshift::crd::{CertificatePolicy, ObservedCertificate};
    use kube::api::DeleteParams;
    let ns = &s.namespace;
    let ca = pki::ca("deletion CA");
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    apply_yaml(&s.admin, ns, &ca_secret("cluster-ca", &ca)).await;
    apply_yaml(&s.admin, ns, &policy_yaml("cluster-ca", "1h", 50)).await;
    apply_yaml(&s.admin, ns, &example("declaration-common-name.yaml")).await;
    let operator = Operator::start(&s.plane, ns);
    wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    eventually("the policy's certificate", Duration::from_secs(30), || async {
        policy(&s).await.status?.current_thumbprint
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
async fn chaos(_shared: Scenario) {
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
    apply_yaml(&admin, ns, &ca_secret("cluster-ca", &ca)).await;
    apply_yaml(
        &admin,
        ns,
        &policy_yaml("cluster-ca", "1h", 50).replace("secretName: cluster-tls", "secretName: policy-tls"),
    )
    .await;
    let pods = ["member-a", "member-b"];
    for pod in pods {
        apply_yaml(&admin, ns, &member_pod(pod, "{app: member}")).await;
    }
    let with_members = |file: &str| with_pod_members(&example(file), "0s", "{app: member}");
    apply_yaml(&admin, ns, &with_members("declaration-thumbprint.yaml")).await;
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
    apply_yaml(&admin, ns, &with_members("declaration-common-name.yaml")).await;

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
