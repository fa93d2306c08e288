//! CertificatePolicy: issuing, renewing and checking certificates, wired into a declaration.

use super::*;

/// The policy as the API server has it now.
pub async fn current_policy(s: &Scenario) -> certshift::crd::CertificatePolicy {
    Api::<certshift::crd::CertificatePolicy>::namespaced(s.admin.clone(), &s.namespace)
        .get("cluster")
        .await
        .expect("policy")
}

pub async fn policy_issues_renews_rolls_over_and_an_unpinned_ca_blocks(s: Scenario) {
    let ns = &s.namespace;
    let judge = Judge::watch(&s.admin, ns);
    let ca = pki::ca("policy CA");
    let rogue = pki::ca("unpinned CA");
    apply(&s.admin, ns, &ca_secret("cluster-ca", &ca)).await;
    apply(&s.admin, ns, &ca_secret("other-ca", &rogue)).await;
    apply(&s.admin, ns, &policy("cluster-tls", "cluster-ca", "90s", 50)).await;
    let observed = observed_certificate("cluster-tls", "cluster-tls", Some("cluster"));
    apply(&s.admin, ns, &observed).await;
    Declaration::example("declaration-common-name.yaml")
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .store(&["cluster-tls"])
        .apply(&s.admin, ns)
        .await;
    let operator = Operator::start(&s.plane, ns);

    let first = wait_ready(&s.admin, ns, DECLARATION, Duration::from_secs(60)).await;
    // The policy writes its status after the Secret it issued, which the
    // declaration may already present.
    let issued = eventually(
        "the policy's status of its first issue",
        Duration::from_secs(30),
        || async { current_policy(&s).await.status.filter(|status| status.revision >= 1) },
    )
    .await;
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
        let p = current_policy(&s).await.status?;
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
    apply(&s.admin, ns, &policy("cluster-tls", "other-ca", "90s", 50)).await;
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
        current_policy(&s).await.status.unwrap().current_thumbprint,
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

pub async fn policy_failures_back_off_with_bounded_writes(s: Scenario) {
    let ns = &s.namespace;
    apply(&s.admin, ns, &policy("cluster-tls", "missing-ca", "90s", 50)).await;
    let operator = Operator::start(&s.plane, ns);
    tokio::time::sleep(Duration::from_secs(25)).await;
    let status = current_policy(&s).await.status.expect("status");
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

pub async fn policy_example_enrolls_like_service_fabric(s: Scenario) {
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
    let issued = current_policy(&s).await.status.unwrap();
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

/// What `openssl verify` says of `certificate` with `ca` as its only trust
/// anchor (`untrusted`: the intermediates offered beside it; `flags` more of
/// its options): its exit status and its output.
fn openssl_verify(ca: &str, untrusted: Option<&str>, certificate: &str, flags: &[&str]) -> (bool, String) {
    // Scenarios run at once in this process: a directory per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("certshift-e2e-verify-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let mut command = std::process::Command::new("openssl");
    command.arg("verify").arg("-CAfile").arg(file("ca.pem", ca));
    if let Some(untrusted) = untrusted {
        command.arg("-untrusted").arg(file("untrusted.pem", untrusted));
    }
    let output = command
        .args(["-purpose", "sslserver"])
        .args(flags)
        .arg(file("certificate.pem", certificate))
        .output()
        .expect("openssl");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// A CA Secret whose certificate may not sign certificates — a CA whose
/// keyUsage lacks keyCertSign, then a leaf with its own key — issues nothing
/// and says why, naming the field: what either signs, no TLS stack verifies
/// (`openssl verify` shows it here). Once the same Secret holds a CA the
/// policy issues without waiting out its backoff, and what it issued verifies
/// with `openssl verify` against that CA.
pub async fn policy_refuses_a_ca_whose_certificates_members_would_reject(s: Scenario) {
    let ns = &s.namespace;
    let ca = pki::ca("policy CA");
    let no_cert_sign = certshift_verifier::testing::cert("encipherment CA")
        .ca()
        .key_usages(vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ])
        .valid_days(-30, 3650)
        .self_signed();
    let not_a_ca = pki::leaf("not a CA", -1, &ca);
    // What either signs, OpenSSL refuses (the leaf offered as the
    // intermediate, its CA trusted); what a CA with keyCertSign signs, in the
    // same place and checked the same way, it accepts.
    let intermediate = pki::intermediate("intermediate CA", &ca);
    for (signer, trusted, untrusted, accepted) in [
        (&no_cert_sign, &no_cert_sign, None, false),
        (&ca, &ca, None, true),
        (&not_a_ca, &ca, Some(not_a_ca.pem.as_str()), false),
        (&intermediate, &ca, Some(intermediate.pem.as_str()), true),
    ] {
        let signed = pki::leaf("member", -1, signer);
        let (verified, said) = openssl_verify(&trusted.pem, untrusted, &signed.pem, &[]);
        assert_eq!(
            verified, accepted,
            "openssl verify of what {} signed: {said}",
            signer.thumbprint
        );
    }
    apply(&s.admin, ns, &ca_secret("cluster-ca", &no_cert_sign)).await;
    apply(&s.admin, ns, &policy("cluster-tls", "cluster-ca", "90s", 50)).await;
    let operator = Operator::start(&s.plane, ns);
    let refusal = |says: &'static str| {
        let s = &s;
        async move {
            eventually(says, Duration::from_secs(30), || async {
                let status = current_policy(s).await.status?;
                let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
                (ready.status == "False" && ready.reason == "IssuingFailed" && ready.message.contains(says))
                    .then(|| ready.message.clone())
            })
            .await
        }
    };
    let refused = refusal("without keyCertSign").await;
    for words in ["\"cluster-ca\"", "spec.issuer.ca.secretRef", &no_cert_sign.thumbprint] {
        assert!(refused.contains(words), "{words:?} not in {refused:?}");
    }
    wait_event(&s.admin, ns, Some("Warning"), "IssuingFailed").await;

    apply(&s.admin, ns, &ca_secret("cluster-ca", &not_a_ca)).await;
    let refused = refusal("is not a CA certificate").await;
    for words in ["\"cluster-ca\"", "spec.issuer.ca.secretRef", &not_a_ca.thumbprint] {
        assert!(refused.contains(words), "{words:?} not in {refused:?}");
    }
    let secrets = Api::<Secret>::namespaced(s.admin.clone(), ns);
    assert!(
        secrets.get_opt("cluster-tls").await.unwrap().is_none(),
        "nothing is issued from either"
    );

    // Three failed attempts: the next is due 20 s after the third. An issue
    // well before then is the CA's change resetting the backoff.
    let failing = eventually("three failed attempts", Duration::from_secs(40), || async {
        current_policy(&s)
            .await
            .status
            .filter(|status| status.failed_attempts >= 3)
    })
    .await;
    let next_due = failing.last_failure_time.unwrap().as_second()
        + certshift::policy::backoff(failing.failed_attempts).as_secs() as i64;
    apply(&s.admin, ns, &ca_secret("cluster-ca", &ca)).await;
    let applied = jiff::Timestamp::now().as_second();
    assert!(
        next_due - applied >= 10,
        "applied at {applied}, next attempt due at {next_due}"
    );
    let before_due = Duration::from_secs((next_due - applied - 2).unsigned_abs());
    let issued = eventually("the issue from the CA", before_due, || async {
        current_policy(&s).await.status.filter(|status| status.revision >= 1)
    })
    .await;
    assert_eq!(issued.failed_attempts, 0);
    let secret = secrets.get("cluster-tls").await.unwrap();
    let tls_crt = String::from_utf8(secret.data.unwrap()["tls.crt"].0.clone()).unwrap();
    // Strictly too (RFC 5280's profile: the authority key identifier among it).
    let (verified, said) = openssl_verify(&ca.pem, None, &tls_crt, &["-x509_strict"]);
    assert!(
        verified,
        "openssl verify -x509_strict of the issued certificate: {said}"
    );
    operator.stop().await;
}
