use super::issue::{CaMaterial, issue};
use super::*;
use crate::crd::{CaIssuer, IssuerReference, KeyParameters, LifetimeAction, LocalObjectReference, SelfSignedIssuer};
use crate::facts::PrivateKeyState;
use crate::testing::{cert, ts};

fn spec() -> CertificatePolicySpec {
    CertificatePolicySpec {
        secret_name: "cluster-tls".into(),
        subject: Some(Subject {
            common_name: Some("cluster.example".into()),
            organizations: vec!["Example".into()],
            ..Default::default()
        }),
        dns_names: vec!["cluster.example".into()],
        ip_addresses: vec!["10.0.0.1".into()],
        extended_key_usages: vec!["serverAuth".into(), "clientAuth".into()],
        key_usages: vec!["digitalSignature".into()],
        validity: Some("2880h".into()),
        lifetime_action: Some(LifetimeAction {
            renew_at_percentage_lifetime: Some(75),
            days_before_expiry: None,
        }),
        issuer: IssuerReference {
            self_signed: Some(SelfSignedIssuer {}),
            ca: None,
        },
        ..Default::default()
    }
}

/// A policy issued by the CA Secret `ca`.
fn ca_issued() -> CertificatePolicySpec {
    CertificatePolicySpec {
        issuer: IssuerReference {
            self_signed: None,
            ca: Some(CaIssuer {
                secret_ref: LocalObjectReference { name: "ca".into() },
            }),
        },
        ..spec()
    }
}

fn with_key(algorithm: &str, size: Option<u32>) -> CertificatePolicySpec {
    CertificatePolicySpec {
        key: Some(KeyParameters {
            algorithm: Some(algorithm.into()),
            size,
            reuse: false,
        }),
        ..spec()
    }
}

fn rejected(spec: &CertificatePolicySpec) -> (&'static str, String) {
    let err = params(spec).unwrap_err();
    (err.reason.as_str(), err.message)
}

#[test]
fn every_key_type_is_issued_with_the_declared_subject_and_usages() {
    let now = ts("2026-06-01T00:00:00Z");
    for (algorithm, size, expected) in [
        ("ECDSA", None, ("ECDSA", 256)),
        ("ECDSA", Some(384), ("ECDSA", 384)),
        ("Ed25519", None, ("Ed25519", 256)),
        ("RSA", Some(2048), ("RSA", 2048)),
        ("RSA", Some(3072), ("RSA", 3072)),
        ("RSA", Some(4096), ("RSA", 4096)),
    ] {
        let params = params(&with_key(algorithm, size)).unwrap();
        let issued = issue(&params, None, None, now).unwrap();
        let leaf = &issued.leaf;
        assert_eq!(
            (leaf.key_algorithm.as_str(), leaf.key_size),
            expected,
            "{algorithm} {size:?}"
        );
        assert_eq!(leaf.private_key, PrivateKeyState::Matches);
        assert_eq!(leaf.common_name.as_deref(), Some("cluster.example"));
        assert_eq!(leaf.dns_names, ["cluster.example"]);
        assert_eq!(leaf.ip_addresses, ["10.0.0.1"]);
        assert_eq!(leaf.extended_key_usages, ["serverAuth", "clientAuth"]);
        assert_eq!(leaf.key_usages, ["digitalSignature"]);
        assert_eq!(leaf.not_before, now);
        assert_eq!(leaf.not_after, ts("2026-09-29T00:00:00Z"), "2880h later");
        assert!(leaf.self_signed);
        assert!(compliance(leaf, &params).status, "{algorithm} {size:?}");
    }
}

#[test]
fn a_ca_issuer_signs_and_is_the_ca_crt() {
    let ca = cert("Issuing CA").ca().self_signed();
    let spec = ca_issued();
    let params = params(&spec).unwrap();
    let key = ca.key_pem();
    let material = CaMaterial {
        certificate: &ca.pem,
        key: &key,
    };
    let issued = issue(&params, Some(&material), None, ts("2026-06-01T00:00:00Z")).unwrap();
    let ca_facts = crate::facts::inspect("ca", ca.pem.as_bytes()).unwrap().remove(0);
    assert_eq!(issued.leaf.issuer_thumbprint, Some(ca_facts.thumbprint));
    assert_eq!(issued.ca_crt, ca.pem);
    // The authority key identifier names the CA's subject key identifier.
    let key_ids = |pem_text: &str| {
        use x509_parser::extensions::ParsedExtension;
        let der = pem::parse(pem_text).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (mut authority, mut subject) = (None, None);
        for extension in cert.extensions() {
            match extension.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
                }
                ParsedExtension::SubjectKeyIdentifier(id) => subject = Some(id.0.to_vec()),
                _ => {}
            }
        }
        (authority, subject)
    };
    let (ca_subject_key_id, issued_authority_key_id) = (key_ids(&ca.pem).1, key_ids(&issued.tls_crt).0);
    assert!(ca_subject_key_id.is_some(), "the test CA has a subject key identifier");
    assert_eq!(issued_authority_key_id, ca_subject_key_id);
    assert!(
        issue(&params, None, None, ts("2026-06-01T00:00:00Z"))
            .unwrap_err()
            .contains("\"ca\"")
    );
}

#[test]
fn reuse_keeps_the_key_and_rekey_does_not() {
    let now = ts("2026-06-01T00:00:00Z");
    let mut reuse = with_key("ECDSA", Some(256));
    reuse.key.as_mut().unwrap().reuse = true;
    let first = issue(&params(&reuse).unwrap(), None, None, now).unwrap();
    let kept = issue(&params(&reuse).unwrap(), None, Some(&first.tls_key), now).unwrap();
    assert_eq!(kept.tls_key, first.tls_key);
    assert_ne!(kept.leaf.thumbprint, first.leaf.thumbprint, "a new certificate");
    let rekeyed = issue(&params(&spec()).unwrap(), None, Some(&first.tls_key), now).unwrap();
    assert_ne!(rekeyed.tls_key, first.tls_key);
}

#[test]
fn both_lifetime_triggers() {
    let nb = ts("2026-01-01T00:00:00Z");
    let na = ts("2026-05-01T00:00:00Z"); // 120 days
    assert_eq!(
        renewal_time(nb, na, Trigger::PercentageOfLifetime(75)),
        ts("2026-04-01T00:00:00Z")
    );
    assert_eq!(
        renewal_time(nb, na, Trigger::DaysBeforeExpiry(30)),
        ts("2026-04-01T00:00:00Z")
    );
    assert_eq!(
        renewal_time(nb, na, Trigger::DaysBeforeExpiry(10)),
        ts("2026-04-21T00:00:00Z")
    );
    assert_eq!(params(&spec()).unwrap().trigger, Trigger::PercentageOfLifetime(75));
    let mut days = spec();
    days.lifetime_action = Some(LifetimeAction {
        renew_at_percentage_lifetime: None,
        days_before_expiry: Some(30),
    });
    assert_eq!(params(&days).unwrap().trigger, Trigger::DaysBeforeExpiry(30));
    let mut default = spec();
    default.lifetime_action = None;
    default.validity = None;
    let defaulted = params(&default).unwrap();
    assert_eq!(
        (defaulted.trigger, defaulted.validity),
        (Trigger::PercentageOfLifetime(80), DEFAULT_VALIDITY)
    );
}

#[test]
fn every_rejected_combination_names_its_field() {
    let mut both = spec();
    both.lifetime_action = Some(LifetimeAction {
        renew_at_percentage_lifetime: Some(50),
        days_before_expiry: Some(3),
    });
    let mut zero = spec();
    zero.lifetime_action = Some(LifetimeAction {
        renew_at_percentage_lifetime: Some(0),
        days_before_expiry: None,
    });
    let mut hundred = zero.clone();
    hundred.lifetime_action.as_mut().unwrap().renew_at_percentage_lifetime = Some(100);
    let mut days_too_long = spec();
    days_too_long.lifetime_action = Some(LifetimeAction {
        renew_at_percentage_lifetime: None,
        days_before_expiry: Some(120),
    });
    let mut no_issuer = spec();
    no_issuer.issuer = IssuerReference::default();
    let mut two_issuers = spec();
    two_issuers.issuer.ca = Some(CaIssuer {
        secret_ref: LocalObjectReference { name: "ca".into() },
    });
    let mut bad_eku = spec();
    bad_eku.extended_key_usages.push("anyThing".into());
    let mut bad_ip = spec();
    bad_ip.ip_addresses = vec!["10.0.0.300".into()];
    let mut no_subject = spec();
    no_subject.subject = None;
    no_subject.dns_names.clear();
    no_subject.ip_addresses.clear();
    let mut short = spec();
    short.validity = Some("5s".into());
    let mut no_secret = spec();
    no_secret.secret_name = String::new();
    let cases = [
        (both, "ConflictingLifetimeActions", "spec.lifetimeAction"),
        (
            zero,
            "InvalidLifetimeAction",
            "spec.lifetimeAction.renewAtPercentageLifetime: 0",
        ),
        (
            hundred,
            "InvalidLifetimeAction",
            "spec.lifetimeAction.renewAtPercentageLifetime: 100",
        ),
        (
            days_too_long,
            "InvalidLifetimeAction",
            "spec.lifetimeAction.daysBeforeExpiry",
        ),
        (with_key("RSA", Some(1024)), "KeyTooWeak", "spec.key.size: RSA 1024"),
        (with_key("RSA", Some(8192)), "UnsupportedKeySize", "spec.key.size"),
        (with_key("ECDSA", Some(521)), "UnsupportedKeySize", "spec.key.size"),
        (with_key("Ed25519", Some(448)), "UnsupportedKeySize", "spec.key.size"),
        (with_key("DSA", None), "UnsupportedKeyAlgorithm", "spec.key.algorithm"),
        (no_issuer, "InvalidIssuer", "spec.issuer"),
        (two_issuers, "InvalidIssuer", "spec.issuer"),
        (bad_eku, "InvalidKeyUsage", "spec.extendedKeyUsages[2]"),
        (bad_ip, "InvalidSubjectAlternativeName", "spec.ipAddresses[0]"),
        (no_subject, "MissingSubject", "spec.subject.commonName"),
        (short, "InvalidDuration", "spec.validity"),
        (no_secret, "InvalidSecretName", "spec.secretName"),
    ];
    for (spec, reason, field) in cases {
        let (got, message) = rejected(&spec);
        assert_eq!(got, reason, "{message}");
        assert!(message.starts_with(field), "{message} should start with {field}");
    }
}

fn world<'a>(
    spec: &'a CertificatePolicySpec,
    status: &'a CertificatePolicyStatus,
    secret: SecretState,
    now: &str,
) -> World<'a> {
    World {
        generation: Some(1),
        spec,
        status,
        secret,
        current_key: None,
        ca: None,
        now: ts(now),
    }
}

/// A CA's certificate and key, PEM (one for all tests: keys take time).
fn test_ca() -> &'static (String, String) {
    static CA: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let ca = cert("Issuing CA").ca().self_signed();
        let key = ca.key_pem();
        (ca.pem, key)
    })
}

/// A CA Secret at `version` ([`ISSUER_MISSING`]: not there).
fn ca_at(version: &str) -> CaSecret {
    match version {
        ISSUER_MISSING => CaSecret::Missing,
        version => CaSecret::Present {
            version: version.to_owned(),
            certificate: Some(test_ca().0.clone()),
            key: Some(test_ca().1.clone()),
        },
    }
}

/// Nothing to do now but look again later.
fn waits(decision: &Decision) -> bool {
    decision.effects.is_empty() && matches!(decision.requeue, Requeue::After(_))
}

fn issues(decision: &Decision) -> Option<IssueReason> {
    decision.issue().map(|request| request.reason)
}

fn request(spec: &CertificatePolicySpec, reason: IssueReason, at: Timestamp) -> IssueRequest {
    IssueRequest {
        params: params(spec).unwrap(),
        reason,
        ca: None,
        reuse_key: None,
        at,
    }
}

/// A CA Secret created or fixed after the last failed attempt is tried at
/// once; an unchanged one waits out the backoff.
#[test]
fn a_ca_that_arrives_after_a_failure_is_tried_without_waiting_out_the_backoff() {
    let spec = spec();
    // The last attempt failed with no CA Secret.
    let failed = CertificatePolicyStatus {
        failed_attempts: 4,
        last_failure_time: Some(ts("2026-06-01T00:00:00Z")),
        last_failure_issuer_version: Some(ISSUER_MISSING.to_owned()),
        ..Default::default()
    };
    let with = |status: &CertificatePolicyStatus, version: Option<&str>| {
        decide(&World {
            ca: version.map(ca_at),
            ..world(&spec, status, SecretState::Missing, "2026-06-01T00:00:05Z")
        })
    };
    assert!(waits(&with(&failed, None)), "backing off");
    assert!(waits(&with(&failed, Some(ISSUER_MISSING))), "still no CA Secret");
    assert_eq!(
        issues(&with(&failed, Some("4711"))),
        Some(IssueReason::Initial),
        "it arrived"
    );
    // A failure remembers the version it failed with: the same broken CA
    // waits out the backoff.
    let now = ts("2026-06-01T00:00:05Z");
    let after = after_attempt(
        &World {
            ca: Some(ca_at("4711")),
            ..world(&spec, &failed, SecretState::Missing, "2026-06-01T00:00:05Z")
        },
        &request(&spec, IssueReason::Initial, now),
        Err("CA Secret \"ca\" lacks tls.key".into()),
    )
    .status
    .expect("a failure is written");
    assert_eq!(after.last_failure_issuer_version.as_deref(), Some("4711"));
    assert!(waits(&with(&after, Some("4711"))));
}

#[test]
fn issues_when_missing_when_the_spec_changed_and_at_the_renewal_time() {
    let spec = spec();
    let status = CertificatePolicyStatus::default();
    let issued = issue(&params(&spec).unwrap(), None, None, ts("2026-06-01T00:00:00Z")).unwrap();
    let owned = |hash: &str| SecretState::Issued {
        leaf: Some(Box::new(issued.leaf.clone())),
        spec_hash: Some(hash.to_owned()),
    };
    let decide_at = |secret, now| decide(&world(&spec, &status, secret, now));
    assert_eq!(
        issues(&decide_at(SecretState::Missing, "2026-06-01T00:00:00Z")),
        Some(IssueReason::Initial)
    );
    assert_eq!(
        issues(&decide_at(owned("old"), "2026-06-01T00:00:00Z")),
        Some(IssueReason::SpecChanged)
    );
    // 75 % of 120 days is day 90: 2026-08-30; looked at hourly until then.
    let waiting = decide_at(owned(&spec_hash(&spec)), "2026-08-29T00:00:00Z");
    assert_eq!(issues(&waiting), None, "not due yet");
    assert_eq!(waiting.status.unwrap().renewal_time, Some(ts("2026-08-30T00:00:00Z")));
    assert_eq!(waiting.requeue, Requeue::After(MAX_REQUEUE));
    let close = decide_at(owned(&spec_hash(&spec)), "2026-08-29T23:59:00Z");
    assert_eq!(close.requeue, Requeue::After(Duration::from_secs(60)));
    assert_eq!(
        issues(&decide_at(owned(&spec_hash(&spec)), "2026-08-30T00:00:00Z")),
        Some(IssueReason::Renewal)
    );
}

#[test]
fn a_foreign_secret_is_refused() {
    let spec = spec();
    let status = CertificatePolicyStatus::default();
    let decision = decide(&world(
        &spec,
        &status,
        SecretState::OwnedElsewhere,
        "2026-06-01T00:00:00Z",
    ));
    assert_eq!((decision.effects.len(), decision.requeue), (0, Requeue::AwaitChange));
    let (refused, events) = (decision.status.expect("refused"), decision.events);
    let ready = refused.conditions.iter().find(|c| c.type_ == READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SecretOwnedElsewhere")
    );
    assert_eq!(events[0].reason, "SecretOwnedElsewhere");
}

#[test]
fn failures_back_off_exponentially_and_survive_restarts() {
    let spec = spec();
    let mut status = CertificatePolicyStatus::default();
    let mut now = ts("2026-06-01T00:00:00Z");
    let mut attempts_at = Vec::new();
    // Ten simulated minutes of reconciles every second with a failing issuer.
    for _ in 0..600 {
        let w = world(&spec, &status, SecretState::Missing, "2026-06-01T00:00:00Z");
        let w = World { now, ..w };
        if let Some(request) = decide(&w).issue() {
            let next = after_attempt(&w, request, Err("the signer failed".into()))
                .status
                .unwrap();
            attempts_at.push(now.as_second() - ts("2026-06-01T00:00:00Z").as_second());
            status = next; // what a restarted operator reads back
        }
        now = Timestamp::from_second(now.as_second() + 1).unwrap();
    }
    assert_eq!(
        attempts_at,
        [0, 5, 15, 35, 75, 155, 315],
        "5s, 10s, 20s, … between attempts"
    );
    assert_eq!(status.failed_attempts, 7);
    let issuing = status.conditions.iter().find(|c| c.type_ == ISSUING).unwrap();
    assert_eq!(
        (issuing.status.as_str(), issuing.reason.as_str()),
        ("True", "IssuingFailed")
    );
    assert_eq!(backoff(100), Duration::from_secs(600), "capped");
}

#[test]
fn success_counts_a_revision_and_clears_failures() {
    let spec = spec();
    let status = CertificatePolicyStatus {
        failed_attempts: 3,
        revision: 4,
        ..Default::default()
    };
    let w = world(&spec, &status, SecretState::Missing, "2026-06-01T00:00:00Z");
    let params = params(&spec).unwrap();
    let issued = issue(&params, None, None, w.now).unwrap();
    let decision = after_attempt(&w, &request(&spec, IssueReason::Renewal, w.now), Ok(&issued.leaf));
    let (next, events) = (decision.status.unwrap(), decision.events);
    assert_eq!((next.revision, next.failed_attempts), (5, 0));
    assert_eq!(next.current_thumbprint, Some(issued.leaf.thumbprint.to_string()));
    assert_eq!(events[0].reason, "Renewed");
}

#[test]
fn compliance_names_what_is_wrong() {
    let params = params(&spec()).unwrap();
    let good = issue(&params, None, None, ts("2026-06-01T00:00:00Z")).unwrap().leaf;
    let check = |facts: &CertificateFacts| {
        let decided = compliance(facts, &params);
        (decided.status, decided.reason)
    };
    assert_eq!(check(&good), (true, "Compliant".to_owned()));
    let other_cn = CertificateFacts {
        common_name: Some("other.example".into()),
        ..good.clone()
    };
    assert_eq!(check(&other_cn).1, "SubjectMismatch");
    let no_san = CertificateFacts {
        dns_names: vec![],
        ..good.clone()
    };
    assert_eq!(check(&no_san).1, "MissingSubjectAlternativeName");
    let weak = CertificateFacts {
        key_algorithm: "RSA".into(),
        key_size: 1024,
        ..good.clone()
    };
    assert_eq!(check(&weak).1, "KeyTooWeak");
    let server_only = CertificateFacts {
        extended_key_usages: vec!["serverAuth".into()],
        ..good.clone()
    };
    assert_eq!(check(&server_only).1, "MissingExtendedKeyUsage");
    let encipherment_only = CertificateFacts {
        key_usages: vec!["keyEncipherment".into()],
        ..good.clone()
    };
    assert_eq!(check(&encipherment_only).1, "MissingKeyUsage");
    // No keyUsage extension restricts nothing.
    let unrestricted = CertificateFacts {
        key_usages: Vec::new(),
        ..good.clone()
    };
    assert_eq!(check(&unrestricted).1, "Compliant");
    let long = CertificateFacts {
        not_after: ts("2027-06-01T00:00:00Z"),
        ..good
    };
    assert_eq!(check(&long).1, "ValidityTooLong");
}

/// kstatus over the statuses a policy is written with (see `crate::kstatus`):
/// issued is current, a refused spec or a Secret owned elsewhere fails, a
/// failed issuance (retried with backoff) is in progress, an edit not yet
/// seen is in progress.
#[test]
fn kstatus_reads_each_state_as_flux_should_report_it() {
    use crate::kstatus::Status;
    let read = |status: &CertificatePolicyStatus, generation: i64| {
        let mut object = crate::crd::CertificatePolicy::new("p", spec());
        object.metadata.generation = Some(generation);
        object.status = Some(status.clone());
        crate::kstatus::of(&object).0
    };
    let good = spec();
    let empty = CertificatePolicyStatus::default();
    let now = "2026-06-01T00:00:00Z";
    let params = params(&good).unwrap();
    let issued = issue(&params, None, None, ts(now)).unwrap();
    let first = request(&good, IssueReason::Initial, ts(now));
    let done = after_attempt(
        &world(&good, &empty, SecretState::Missing, now),
        &first,
        Ok(&issued.leaf),
    )
    .status
    .unwrap();
    let failed = after_attempt(
        &world(&good, &empty, SecretState::Missing, now),
        &first,
        Err("CA Secret \"ca\" not found".into()),
    )
    .status
    .unwrap();
    let refused = |spec: &CertificatePolicySpec, secret| decide(&world(spec, &empty, secret, now)).status.unwrap();
    let mut invalid = spec();
    invalid.validity = Some("forever".into());
    let rows = [
        ("done", done.clone(), 1, Status::Current),
        ("stale generation", done, 2, Status::InProgress),
        ("issuance failed, retrying", failed, 1, Status::InProgress),
        (
            "invalid spec",
            refused(&invalid, SecretState::Missing),
            1,
            Status::Failed,
        ),
        (
            "Secret owned elsewhere",
            refused(&good, SecretState::OwnedElsewhere),
            1,
            Status::Failed,
        ),
    ];
    for (state, status, generation, expected) in rows {
        assert_eq!(read(&status, generation), expected, "{state}: {:#?}", status.conditions);
    }
}

/// The CA Secret is judged by the decision, not the shell: missing or
/// incomplete is a failed attempt (backoff, `IssuingFailed`) and nothing is
/// issued; a complete one travels with the issuance, as does the key to
/// reuse, which only a Secret the policy issued provides.
#[test]
fn the_ca_secret_and_the_key_to_reuse_are_decided_with_the_issuance() {
    let mut spec = ca_issued();
    spec.key = Some(KeyParameters {
        reuse: true,
        ..Default::default()
    });
    let status = CertificatePolicyStatus::default();
    let at = |ca: Option<CaSecret>, secret: SecretState| {
        decide(&World {
            ca,
            current_key: Some("KEY PEM".into()),
            ..world(&spec, &status, secret, "2026-06-01T00:00:00Z")
        })
    };
    for (ca, message) in [
        (
            Some(CaSecret::Missing),
            "CA Secret \"ca\" (spec.issuer.ca.secretRef) not found",
        ),
        (
            Some(CaSecret::Present {
                version: "7".into(),
                certificate: Some(test_ca().0.clone()),
                key: None,
            }),
            "CA Secret \"ca\" (spec.issuer.ca.secretRef) lacks tls.key",
        ),
    ] {
        let decision = at(ca, SecretState::Missing);
        assert_eq!(decision.issue(), None, "{message}");
        let failed = decision.status.expect("a failure is written");
        assert_eq!(failed.failed_attempts, 1);
        let ready = failed.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("IssuingFailed", message)
        );
        assert_eq!(decision.requeue, Requeue::After(backoff(1)));
    }
    let decision = at(Some(ca_at("8")), SecretState::Missing);
    let request = decision.issue().expect("issued with the CA");
    assert_eq!(request.ca.as_ref(), Some(test_ca()));
    assert_eq!(request.reuse_key, None, "no Secret of the policy's: no key to keep");
    let issued = SecretState::Issued {
        leaf: None,
        spec_hash: None,
    };
    let decision = at(Some(ca_at("8")), issued);
    assert_eq!(decision.issue().unwrap().reuse_key.as_deref(), Some("KEY PEM"));
}

/// A CA Secret whose certificate or key could not sign what members accept
/// is a failed attempt naming the Secret, its field and the fault: nothing
/// is issued (before, a leaf as CA issued certificates that no TLS stack
/// verifies, and the policy said Ready).
#[test]
fn a_ca_that_cannot_sign_what_members_accept_is_refused_by_name() {
    let spec = ca_issued();
    let status = CertificatePolicyStatus::default();
    let leaf = cert("not a CA").server_and_client_auth().self_signed();
    let other_ca = cert("Other CA").ca().self_signed();
    let expired = cert("Expired CA")
        .ca()
        .valid("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
        .self_signed();
    let no_cert_sign = cert("Encipherment CA")
        .ca()
        .key_usages(vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ])
        .self_signed();
    let (ca_pem, _) = test_ca();
    let rows = [
        ("a leaf", leaf.pem.clone(), leaf.key_pem(), "is not a CA certificate"),
        (
            "a CA without keyCertSign",
            no_cert_sign.pem.clone(),
            no_cert_sign.key_pem(),
            "has keyUsage digitalSignature, keyEncipherment without keyCertSign",
        ),
        (
            "another CA's key",
            ca_pem.clone(),
            other_ca.key_pem(),
            "tls.key is not the key of tls.crt",
        ),
        (
            "an encrypted key",
            ca_pem.clone(),
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n".to_owned(),
            "tls.key: the private key is encrypted",
        ),
        ("expired", expired.pem.clone(), expired.key_pem(), "is valid only from"),
        (
            "not PEM",
            "garbage".to_owned(),
            other_ca.key_pem(),
            "CA Secret \"ca\" (spec.issuer.ca.secretRef): ",
        ),
    ];
    for (case, certificate, key, says) in rows {
        let decision = decide(&World {
            ca: Some(CaSecret::Present {
                version: "9".into(),
                certificate: Some(certificate),
                key: Some(key),
            }),
            ..world(&spec, &status, SecretState::Missing, "2026-06-01T00:00:00Z")
        });
        assert_eq!(decision.issue(), None, "{case}: nothing issued");
        let failed = decision.status.expect("a failure is written");
        assert_eq!(failed.failed_attempts, 1, "{case}");
        let ready = failed.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, "IssuingFailed", "{case}");
        assert!(
            ready.message.starts_with("CA Secret \"ca\" (spec.issuer.ca.secretRef)") && ready.message.contains(says),
            "{case}: {}",
            ready.message
        );
    }
    // The CA of the other tests is usable: it travels with the issuance.
    let decision = decide(&World {
        ca: Some(ca_at("9")),
        ..world(&spec, &status, SecretState::Missing, "2026-06-01T00:00:00Z")
    });
    assert!(decision.issue().is_some());
}
