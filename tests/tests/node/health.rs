//! Monitored upgrades on the node: member pods with the agent sidecar
//! report `certshift.io/Healthy`, the operator from the chart judges each
//! revision by it and rolls back (or holds) when a change hurts — with the
//! members calling each other the whole time, and real clients (Debian's
//! `curl` in a pod) that certshift does not manage.

use super::*;

use certshift::cli::action::{Verb, request};
use certshift::crd::{ClusterCertificateDeclaration, FailureAction};
use certshift_e2e::condition;
use certshift_e2e::judge::Judge;
use certshift_e2e::manifests::secret;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Patch, PatchParams};

/// Members per bed: two keep the node's pod count down with four beds at once.
const BED_MEMBERS: usize = 2;

/// One declaration's members on the node: its store (an old certificate
/// from one CA, the goal from another), the declaration by the old one's
/// thumbprint with a short health check, a Service and member pods calling
/// each other through it, and optionally a client nobody manages.
struct Bed {
    name: &'static str,
    admin: Client,
    old_ca: pki::Issued,
    ca: pki::Issued,
    old: pki::Issued,
    goal: pki::Issued,
    declared: Declaration,
    service_ip: String,
    members: Vec<String>,
    client: Option<String>,
}

impl Bed {
    async fn new(admin: &Client, name: &'static str, declared: impl FnOnce(Declaration) -> Declaration) -> Self {
        let old_ca = pki::ca(&format!("{name} old CA"));
        let ca = pki::ca(&format!("{name} CA"));
        let old = pki::leaf("old.example", -20, &old_ca);
        let goal = pki::leaf("cluster.example", -10, &ca);
        let store = [format!("{name}-old"), format!("{name}-cn")];
        for (source, cert, issuer) in [(&store[0], &old, &old_ca), (&store[1], &goal, &ca)] {
            apply(admin, NAMESPACE, &pki::tls_secret(source, cert, issuer)).await;
            apply(admin, NAMESPACE, &observed_certificate(source, source, None)).await;
        }
        let declared = declared(
            Declaration::example("declaration-thumbprint.yaml")
                .named(name)
                .by_thumbprint(&old.thumbprint)
                .store(&[&store[0], &store[1]])
                .health_check("5s", "3s", "5s")
                .pod_members(&[("app", name)]),
        );
        declared.apply(admin, NAMESPACE).await;
        let services: Api<Service> = Api::namespaced(admin.clone(), NAMESPACE);
        let service: Service = yaml(&format!(
            "metadata: {{name: {name}}}\nspec: {{selector: {{app: {name}}}, ports: [{{name: https, port: 8443, targetPort: 8443}}]}}"
        ));
        let _ = services.create(&PostParams::default(), &service).await;
        let service_ip = services.get(name).await.unwrap().spec.unwrap().cluster_ip.unwrap();
        Self {
            name,
            admin: admin.clone(),
            old_ca,
            ca,
            old,
            goal,
            declared,
            service_ip,
            members: (0..BED_MEMBERS).map(|i| format!("{name}-{i}")).collect(),
            client: None,
        }
    }

    /// Starts the members (each pod as `pod` makes it) and waits until the
    /// declaration is Ready, they are Ready and calling, and they have
    /// acknowledged its revision.
    async fn start(&self, pod: impl Fn(MemberPod) -> MemberPod) {
        let pods = self.pods();
        for member in &self.members {
            let spec = pod(MemberPod::new(member, self.name, self.name, &self.service_ip).health_window("20s"));
            create_pod(&pods, &spec.pod()).await;
        }
        let ready = wait_ready(&self.admin, NAMESPACE, self.name, Duration::from_secs(120)).await;
        let first = ready.status.unwrap().upgrade.unwrap().revision;
        eventually(
            &format!("{}: the members Ready, calling, on revision {first}", self.name),
            Duration::from_secs(180),
            || async {
                for name in &self.members {
                    let pod = pods.get(name).await.ok()?;
                    let ready = pod
                        .status
                        .as_ref()?
                        .conditions
                        .as_ref()?
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    let loaded = observed_revision(&pod)? >= first;
                    if !ready || !loaded || calls(&pods, name).await?.0 == 0 {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), NAMESPACE)
    }

    /// A client nobody manages calls the members' Service as `host`,
    /// trusting `ca_pem` and presenting the certificate and key; waits for
    /// its first calls, which succeed.
    async fn client(&mut self, host: &str, ca_pem: &str, (cert_pem, key_pem): (&str, &str)) {
        let name = format!("{}-client", self.name);
        let files = secret(
            &name,
            None,
            &[("ca.crt", ca_pem), ("tls.crt", cert_pem), ("tls.key", key_pem)],
        );
        apply(&self.admin, NAMESPACE, &files).await;
        let pods = self.pods();
        create_pod(&pods, &unmanaged_client(&name, host, &self.service_ip, true)).await;
        let counted = eventually(&format!("{name}: calling"), Duration::from_secs(120), || async {
            calls(&pods, &name).await.filter(|(ok, failed)| ok + failed >= 5)
        })
        .await;
        assert_eq!(counted.1, 0, "{name}: before the change, nothing fails: {counted:?}");
        self.client = Some(name);
    }

    /// The client trusting only the old certificate's CA, presenting it.
    async fn old_client(&mut self) {
        let (ca, cert, key) = (
            self.old_ca.pem.clone(),
            self.old.pem.clone(),
            self.old.key.serialize_pem(),
        );
        self.client("old.example", &ca, (&cert, &key)).await;
    }

    async fn client_calls(&self) -> (u64, u64) {
        let name = self.client.as_ref().expect("a client");
        calls(&self.pods(), name).await.expect("the client's count")
    }

    /// The client's pod address: the peer the agents name.
    async fn client_ip(&self) -> String {
        let name = self.client.as_ref().expect("a client");
        self.pods().get(name).await.unwrap().status.unwrap().pod_ip.unwrap()
    }

    /// The declaration by common name from the new CA: the conversion.
    async fn convert(&self) {
        self.declared
            .clone()
            .by_common_names(&[("cluster.example", &self.ca.thumbprint)])
            .apply(&self.admin, NAMESPACE)
            .await;
    }

    async fn get(&self) -> ClusterCertificateDeclaration {
        declaration(&self.admin, NAMESPACE, self.name).await
    }

    /// The declaration once `Stalled` is True with `reason`, and its message.
    async fn stalled(&self, reason: &str, timeout: Duration) -> (ClusterCertificateDeclaration, String) {
        let d = eventually(&format!("{}: Stalled/{reason}", self.name), timeout, || async {
            let d = self.get().await;
            let stalled = condition(&d, "Stalled")?;
            (stalled.status == "True" && stalled.reason == reason).then_some(d)
        })
        .await;
        let message = condition(&d, "Stalled").unwrap().message.clone();
        (d, message)
    }

    /// No member failed a call to another; returns how many they made.
    async fn member_calls(&self) -> u64 {
        let pods = self.pods();
        let mut total = 0;
        for name in &self.members {
            let (made, failed) = calls(&pods, name).await.expect("the caller's count");
            assert_eq!(failed, 0, "{name} failed calls to the other members");
            total += made;
        }
        total
    }

    async fn retry(&self, generation: i64) {
        let retry = serde_json::json!({"metadata": {"annotations": {"certshift.io/retry": generation.to_string()}}});
        Api::<ClusterCertificateDeclaration>::namespaced(self.admin.clone(), NAMESPACE)
            .patch(self.name, &PatchParams::default(), &Patch::Merge(&retry))
            .await
            .expect("annotate certshift.io/retry");
    }
}

/// The health scenarios, at once, each on its own declaration and members,
/// judged together (every revision of every declaration, forward and back).
pub(crate) async fn monitored_upgrades_roll_back_hold_and_resume_with_no_failed_member_call(admin: &Client) {
    // The members' ServiceAccount (the chart binds the agent role to it),
    // with its token: pods are refused until the token controller made it.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    apply(admin, NAMESPACE, &yaml::<ServiceAccount>("metadata: {name: member}")).await;
    eventually("the members' ServiceAccount token", Duration::from_secs(60), || async {
        accounts
            .get("member")
            .await
            .ok()?
            .secrets
            .filter(|s| !s.is_empty())
            .map(drop)
    })
    .await;
    let judge = Judge::watch(admin, NAMESPACE);
    let (rollback, reload, no_return, manual) = tokio::join!(
        a_client_refusing_the_new_certificate_rolls_the_change_back(admin),
        a_reload_that_fails_rolls_back_after_the_stage_timeout(admin),
        past_the_point_of_no_return_a_failure_holds(admin),
        a_person_rolls_back_and_resumes_with_the_cli(admin),
    );
    let violations = judge.violations();
    assert!(violations.is_empty(), "the judge saw violations: {violations:#?}");
    judge.stop();
    println!("  node: health: {rollback}; {reload}; {no_return}; {manual}");
}

/// `curl` trusting only the old CA calls the members. The conversion
/// presents the new certificate, the agents report
/// `CertificateRejectedByPeers`, the health check fails and certshift rolls
/// back to the declaration by thumbprint: `Stalled/RolledBack` naming the
/// members and the client; the client's calls succeed again.
async fn a_client_refusing_the_new_certificate_rolls_the_change_back(admin: &Client) -> String {
    let mut bed = Bed::new(admin, "rollback", |d| d.failure_action(FailureAction::Rollback)).await;
    bed.start(|pod| pod).await;
    bed.old_client().await;
    let started = Instant::now();
    bed.convert().await;
    let (rolled_back, message) = bed.stalled("RolledBack", Duration::from_secs(300)).await;
    let client_ip = bed.client_ip().await;
    for said in [
        "rolled back to the declaration of revision 1",
        "CertificateRejectedByPeers",
        &format!("refused by {client_ip} with unknown_ca"),
    ] {
        assert!(message.contains(said), "Stalled says {said:?}: {message}");
    }
    let status = rolled_back.status.unwrap();
    assert_eq!(status.presenting.unwrap().thumbprint, bed.old.thumbprint);
    assert_eq!(status.declared_by.as_deref(), Some("Thumbprint"));
    let rollback = status.upgrade.unwrap().rollback.unwrap();
    assert_eq!(
        (rollback.state.as_str(), rollback.reason.as_str()),
        ("RolledBack", "HealthCheckFailed")
    );
    let (ok, failed) = bed.client_calls().await;
    assert!(failed > 0, "the client did refuse the new certificate");
    eventually("the client's calls succeed again", Duration::from_secs(60), || async {
        let (now_ok, _) = bed.client_calls().await;
        (now_ok >= ok + 5).then_some(())
    })
    .await;
    let (_, failed_after) = bed.client_calls().await;
    assert!(
        failed_after <= failed + 1,
        "after the rollback the client fails no more calls"
    );
    let made = bed.member_calls().await;
    format!(
        "rolled back in {:.0}s, the client failed {failed} calls before and none after, {made} member calls 0 failed",
        started.elapsed().as_secs_f64()
    )
}

/// Members in reload mode whose application takes only its old key: the
/// reload of the presentation revision fails on every member, which never
/// acknowledge it; after `stageTimeout` certshift rolls back, and the
/// reloads of the old certificate succeed.
async fn a_reload_that_fails_rolls_back_after_the_stage_timeout(admin: &Client) -> String {
    let bed = Bed::new(admin, "reload", |d| {
        d.failure_action(FailureAction::Rollback).stage_timeout("45s")
    })
    .await;
    // The first line of the old key's base64: the application's "old key".
    let key_pem = bed.old.key.serialize_pem();
    let key_line = key_pem.lines().nth(1).unwrap().to_owned();
    let script = "#!/bin/sh\n\
        # The application takes only the key it was built with.\n\
        grep -q -F -f /etc/reload/key-line /etc/certshift/tls.key && exit 0\n\
        echo \"reload refused: not the key this application takes (revision $CERTSHIFT_REVISION)\" >&2\n\
        exit 1\n";
    let map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "reload-app"},
        "data": {"reload.sh": script, "key-line": key_line},
    }))
    .unwrap();
    apply(admin, NAMESPACE, &map).await;
    bed.start(|pod| pod.reload("reload-app")).await;
    let started = Instant::now();
    bed.convert().await;
    // Before the deadline, the members say why on their Pods.
    let pods = bed.pods();
    eventually(
        "a member's certshift.io/Healthy=False ReloadFailed",
        Duration::from_secs(120),
        || async {
            for name in &bed.members {
                let pod = pods.get(name).await.ok()?;
                let failed = pod.status?.conditions?.into_iter().any(|c| {
                    c.type_ == "certshift.io/Healthy"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("ReloadFailed")
                });
                if failed {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
    let (rolled_back, message) = bed.stalled("RolledBack", Duration::from_secs(300)).await;
    let status = rolled_back.status.unwrap();
    let rollback = status.upgrade.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(rollback.reason, "StageTimeout", "{message}");
    assert!(
        message.contains("pod/reload-0 (ReloadFailed: "),
        "the members and why they have not loaded are named: {message}"
    );
    assert_eq!(status.presenting.unwrap().thumbprint, bed.old.thumbprint);
    let last = status.upgrade.unwrap().revision;
    eventually(
        "every member acknowledges the last revision back",
        Duration::from_secs(60),
        || async {
            for name in &bed.members {
                (observed_revision(&pods.get(name).await.ok()?)? == last).then_some(())?;
            }
            Some(())
        },
    )
    .await;
    let made = bed.member_calls().await;
    format!(
        "reload refused: rolled back after the 45s stage timeout ({:.0}s in all), {made} member calls 0 failed",
        started.elapsed().as_secs_f64()
    )
}

/// The old certificate is revoked mid-conversion (its CA's CRL, in force
/// through `spec.revocation`); then the client trusting only the old CA
/// fails the health check. Going back would present a revoked certificate:
/// `Stalled/RollbackImpossible`, saying why, presenting the new one.
async fn past_the_point_of_no_return_a_failure_holds(admin: &Client) -> String {
    let crls = |pem: String| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "no-return-crls"}, "data": {"ca.crl": pem}}))
            .unwrap()
    };
    let mut bed = Bed::new(admin, "no-return", |d| {
        d.failure_action(FailureAction::Rollback).revocation("no-return-crls")
    })
    .await;
    apply(admin, NAMESPACE, &crls(pki::crl(&bed.old_ca, &[]))).await;
    bed.start(|pod| pod).await;
    bed.old_client().await;
    let first = bed.get().await.status.unwrap().upgrade.unwrap().revision;
    bed.convert().await;
    eventually("the conversion's first revision", Duration::from_secs(120), || async {
        (bed.get().await.status?.upgrade?.revision > first).then_some(())
    })
    .await;
    apply(admin, NAMESPACE, &crls(pki::crl(&bed.old_ca, &[&bed.old]))).await;
    let (held, message) = bed.stalled("RollbackImpossible", Duration::from_secs(300)).await;
    assert!(
        message.contains(&bed.old.thumbprint) || message.contains("revoked"),
        "{message}"
    );
    let status = held.status.unwrap();
    assert_eq!(
        status.presenting.unwrap().thumbprint,
        bed.goal.thumbprint,
        "the revoked certificate is not presented again"
    );
    let made = bed.member_calls().await;
    format!("held RollbackImpossible ({message}), {made} member calls 0 failed")
}

/// `failureAction: Manual`: held at `HealthCheckFailed`; `certshift
/// rollback` walks back; retried, it holds again and `certshift resume`
/// goes on to `Ready` while the client nobody fixed keeps failing.
async fn a_person_rolls_back_and_resumes_with_the_cli(admin: &Client) -> String {
    let mut bed = Bed::new(admin, "manual", |d| d.failure_action(FailureAction::Manual)).await;
    bed.start(|pod| pod).await;
    bed.old_client().await;
    bed.convert().await;
    let (held, message) = bed.stalled("HealthCheckFailed", Duration::from_secs(300)).await;
    assert!(message.contains("CertificateRejectedByPeers"), "{message}");
    let generation = held.metadata.generation.unwrap();
    let set = request(admin, NAMESPACE, bed.name, Verb::Rollback)
        .await
        .expect("certshift rollback");
    assert_eq!(set, format!("certshift.io/action=rollback/{generation}"));
    let (rolled_back, _) = bed.stalled("RolledBack", Duration::from_secs(180)).await;
    let status = rolled_back.status.unwrap();
    assert_eq!(status.upgrade.unwrap().rollback.unwrap().reason, "Requested");
    assert_eq!(status.presenting.unwrap().thumbprint, bed.old.thumbprint);
    // Retried once the client's refusals are older than the agents' window
    // (20 s): else they would be the retried revision's baseline.
    tokio::time::sleep(Duration::from_secs(22)).await;
    bed.retry(generation).await;
    let (held, _) = bed.stalled("HealthCheckFailed", Duration::from_secs(300)).await;
    let held_at = held.status.unwrap().upgrade.unwrap().revision;
    let set = request(admin, NAMESPACE, bed.name, Verb::Resume)
        .await
        .expect("certshift resume");
    assert_eq!(set, format!("certshift.io/action=resume/{held_at}"));
    let converted = eventually("resumed to Ready", Duration::from_secs(300), || async {
        let d = bed.get().await;
        (is_true(&d, "Ready") && d.status.as_ref()?.declared_by.as_deref() == Some("CommonName")).then_some(d)
    })
    .await;
    assert_eq!(
        converted.status.unwrap().presenting.unwrap().thumbprint,
        bed.goal.thumbprint
    );
    let (_, failing) = bed.client_calls().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        bed.client_calls().await.1 > failing,
        "the client nobody fixed still fails: resumed, not healed"
    );
    let made = bed.member_calls().await;
    format!("held, rolled back and resumed by the CLI, {made} member calls 0 failed")
}
