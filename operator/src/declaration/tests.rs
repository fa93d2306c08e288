use super::*;
use crate::crd::{CertificateThumbprints, CommonNameDeclaration, UpgradePolicy};
use crate::planner::{Change, Stage};
use crate::rules::{CommonNameRule, TrustBundle};
use crate::testing::{facts, tp, ts};

fn store() -> Store {
    Store {
        instances: vec![
            facts("Old")
                .cn("old")
                .self_signed()
                .valid("2026-01-01T00:00:00Z", "2027-06-01T00:00:00Z")
                .build(),
            facts("G")
                .cn("cluster.example")
                .issuer("CA")
                .valid("2026-03-01T00:00:00Z", "2027-06-01T00:00:00Z")
                .build(),
        ],
        trust: TrustBundle::new([tp("CA")]),
    }
}

fn by_name_spec(min_soak: &str) -> ClusterCertificateDeclarationSpec {
    ClusterCertificateDeclarationSpec {
        certificate_common_names: Some(CertificateCommonNames {
            common_names: vec![CommonNameDeclaration {
                certificate_common_name: "cluster.example".into(),
                certificate_issuer_thumbprint: tp("CA").to_string(),
            }],
        }),
        store: crate::crd::CertificateStore {
            observed_certificates: vec!["store".into()],
        },
        upgrade: Some(UpgradePolicy {
            min_soak: Some(min_soak.into()),
            stage_timeout: Some("10m".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn by_thumbprint_spec() -> ClusterCertificateDeclarationSpec {
    ClusterCertificateDeclarationSpec {
        certificate: Some(CertificateThumbprints {
            thumbprint: tp("Old").to_string(),
            thumbprint_secondary: None,
        }),
        certificate_common_names: None,
        ..by_name_spec("0s")
    }
}

fn published(revision: u64, presented: &str, accepted: Accepted) -> Revision {
    Revision {
        revision,
        stage: None,
        change: None,
        presented: tp(presented),
        accepted,
        clients: Default::default(),
    }
}

fn thumbprint_rules() -> Accepted {
    Accepted::new([tp("Old")], [])
}

fn members(observed: &[Option<u64>]) -> MemberReport {
    MemberReport {
        members: observed
            .iter()
            .enumerate()
            .map(|(i, o)| (format!("pod/m{i}"), *o))
            .collect(),
    }
}

struct Case {
    spec: ClusterCertificateDeclarationSpec,
    status: ClusterCertificateDeclarationStatus,
    published: Option<Revision>,
    members: MemberReport,
    /// Why the store cannot be gathered, if it cannot.
    store_blocked: Option<Blocked>,
    now: Timestamp,
}

impl Case {
    fn decide(&self) -> Decision {
        decide(World {
            generation: Some(2),
            spec: &self.spec,
            status: &self.status,
            store: self.store_blocked.clone().map_or_else(|| Ok(store()), Err),
            published: self.published.clone(),
            outputs_blocked: None,
            preflight: None,
            members: self.members.clone(),
            now: self.now,
        })
    }
}

fn case(spec: ClusterCertificateDeclarationSpec) -> Case {
    Case {
        spec,
        status: ClusterCertificateDeclarationStatus::default(),
        published: None,
        members: MemberReport::default(),
        store_blocked: None,
        now: ts("2026-06-01T00:00:00Z"),
    }
}

fn condition<'a>(status: &'a ClusterCertificateDeclarationStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status.conditions.iter().find(|c| c.type_ == type_).expect(type_);
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn the_first_publication_is_the_desired_state_as_revision_1() {
    let decision = case(by_thumbprint_spec()).decide();
    let publish = decision.publish.expect("publish");
    assert_eq!((publish.revision, &publish.presented), (1, &tp("Old")));
    assert_eq!(decision.status.declared_by.as_deref(), Some("Thumbprint"));
    assert_eq!(condition(&decision.status, READY), ("True", "Ready"));
    assert_eq!(decision.events[0].reason, "Published");
}

#[test]
fn a_spec_change_publishes_the_first_revision_of_the_plan_only() {
    let mut c = case(by_name_spec("0s"));
    c.published = Some(published(1, "Old", thumbprint_rules()));
    let decision = c.decide();
    let publish = decision.publish.expect("publish");
    assert_eq!(
        (publish.revision, publish.stage, publish.change),
        (2, Some(Stage::AddSecondary), Some(Change::Validation))
    );
    let upgrade = decision.status.upgrade.clone().unwrap();
    assert_eq!(upgrade.revision, 2);
    assert_eq!(
        upgrade.plan.len(),
        5,
        "the published revision and the four still pending"
    );
    assert_eq!(upgrade.plan[1].state, "Pending");
    assert_eq!(condition(&decision.status, PROGRESSING), ("True", "Upgrading"));
    assert_eq!(condition(&decision.status, SECONDARY_ADDED).0, "False");
}

#[test]
fn nothing_is_published_until_every_member_acknowledged() {
    let mut c = case(by_name_spec("0s"));
    c.published = Some(published(1, "Old", thumbprint_rules()));
    c.members = members(&[Some(1), Some(0)]);
    let decision = c.decide();
    assert_eq!(decision.publish, None);
    let report = decision.status.members.clone().unwrap();
    assert_eq!(
        (report.total, report.converged, report.laggards),
        (2, 1, vec!["pod/m1".to_owned()])
    );
    assert_eq!(condition(&decision.status, PROGRESSING), ("True", "WaitingForMembers"));
    assert_eq!(
        condition(&decision.status, MEMBERS_CONVERGED),
        ("False", "WaitingForMembers")
    );
    c.members = members(&[Some(1), Some(1)]);
    assert!(c.decide().publish.is_some());
}

#[test]
fn min_soak_counts_from_the_acknowledgement() {
    let mut c = case(by_name_spec("30s"));
    c.published = Some(published(1, "Old", thumbprint_rules()));
    c.members = members(&[Some(1)]);
    let first = c.decide();
    assert_eq!(first.publish, None, "just acknowledged: soaking");
    let acknowledged = first.status.upgrade.as_ref().unwrap().acknowledged_time.unwrap();
    assert_eq!(acknowledged, c.now);
    assert_eq!(condition(&first.status, PROGRESSING).1, "Soaking");
    assert_eq!(first.requeue, Some(std::time::Duration::from_secs(31)));
    c.status = first.status;
    c.now = ts("2026-06-01T00:00:29Z");
    assert_eq!(c.decide().publish, None);
    c.now = ts("2026-06-01T00:00:30Z");
    assert_eq!(c.decide().publish.map(|r| r.revision), Some(2));
}

#[test]
fn a_stuck_stage_times_out_without_rolling_back() {
    let mut c = case(by_name_spec("0s"));
    c.published = Some(published(1, "Old", thumbprint_rules()));
    c.members = members(&[Some(0)]);
    c.status = c.decide().status;
    c.now = ts("2026-06-01T00:10:01Z");
    let decision = c.decide();
    assert_eq!(decision.publish, None);
    assert_eq!(condition(&decision.status, BLOCKED), ("True", "StageTimeout"));
    assert_eq!(decision.status.effective.unwrap().revision, 1, "nothing rolled back");
    assert!(
        decision
            .events
            .iter()
            .any(|e| e.type_ == EventType::Warning && e.reason == "StageTimeout")
    );
}

#[test]
fn paused_holds_the_next_revision() {
    let mut spec = by_name_spec("0s");
    spec.upgrade.as_mut().unwrap().paused = true;
    let mut c = case(spec);
    c.published = Some(published(1, "Old", thumbprint_rules()));
    let decision = c.decide();
    assert_eq!(decision.publish, None);
    assert_eq!(condition(&decision.status, PROGRESSING), ("False", "Paused"));
}

#[test]
fn an_invalid_spec_publishes_nothing_and_says_why() {
    let mut spec = by_thumbprint_spec();
    spec.certificate.as_mut().unwrap().thumbprint = "not hex".into();
    let decision = case(spec).decide();
    assert_eq!(decision.publish, None);
    assert_eq!(condition(&decision.status, BLOCKED), ("True", "InvalidThumbprint"));
    assert_eq!(condition(&decision.status, READY), ("False", "InvalidThumbprint"));
    assert_eq!(decision.status.effective, None);
}

#[test]
fn deciding_again_on_an_unchanged_world_changes_nothing() {
    let mut c = case(by_name_spec("0s"));
    c.published = Some(published(1, "Old", thumbprint_rules()));
    c.members = members(&[Some(0)]);
    let first = c.decide();
    c.status = first.status.clone();
    c.now = ts("2026-06-01T00:05:00Z");
    let again = c.decide();
    assert_eq!(again.status, first.status, "no status write");
    assert!(again.events.is_empty(), "no events without transitions");
}

#[test]
fn a_settled_conversion_reports_its_milestones() {
    let mut c = case(by_name_spec("0s"));
    c.published = Some(published(
        6,
        "G",
        Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA")])]),
    ));
    let decision = c.decide();
    assert_eq!(decision.publish, None);
    for milestone in [SECONDARY_ADDED, DECLARATION_SWITCHED, ISSUERS_PINNED, READY] {
        assert_eq!(condition(&decision.status, milestone).0, "True", "{milestone}");
    }
    assert_eq!(decision.status.declared_by.as_deref(), Some("CommonName"));
    let presenting = decision.status.presenting.unwrap();
    assert_eq!(
        (presenting.short_thumbprint.len(), presenting.common_name.as_deref()),
        (8, Some("cluster.example"))
    );
}

#[test]
fn the_effective_declaration_keeps_the_service_fabric_shape() {
    let revision = published(
        3,
        "G",
        Accepted::new([tp("Old"), tp("G")], [CommonNameRule::new("x", [tp("CA")])]),
    );
    let effective = effective_declaration(&revision);
    let certificate = effective.certificate.unwrap();
    assert_eq!(
        certificate.thumbprint,
        tp("G").to_string(),
        "the presented one is primary"
    );
    assert_eq!(certificate.thumbprint_secondary, Some(tp("Old").to_string()));
    let names = effective.certificate_common_names.unwrap().common_names;
    assert_eq!(names[0].certificate_issuer_thumbprint, tp("CA").to_string());
    let parsed = crate::planner::effective_from_status(&effective_declaration(&revision)).unwrap();
    assert_eq!(
        (parsed.accepted, parsed.presented),
        (revision.accepted, Some(revision.presented))
    );
}

#[test]
fn a_spec_change_mid_upgrade_replans_from_what_is_published() {
    // Revision 3 of the conversion is out (both thumbprints accepted, G
    // presented); the owner reverts the spec to the old thumbprint.
    let mut c = case(by_thumbprint_spec());
    c.published = Some(published(3, "G", Accepted::new([tp("Old"), tp("G")], [])));
    let decision = c.decide();
    let next = decision.publish.expect("the revert is planned");
    assert_eq!(next.revision, 4, "numbering continues");
    assert_eq!((next.change, &next.presented), (Some(Change::Presentation), &tp("Old")));
    let plan = decision.status.upgrade.unwrap().plan;
    assert_eq!(plan.last().map(|p| p.stage), Some(Some(Stage::NarrowValidation)));
}

#[test]
fn san_overlap_names_both_certificates_once() {
    let narrow = facts("A").cn("api.example").dns("api.example").build();
    let wide = facts("B")
        .cn("cluster.example")
        .dns("cluster.example")
        .dns("API.example")
        .build();
    let unrelated = facts("C").cn("other.example").dns("other.example").build();
    let renewal = facts("D").cn("api.example").dns("api.example").build(); // same CN: no hazard
    let decided = san_overlap(&[narrow.clone(), wide.clone(), unrelated.clone(), renewal.clone()]);
    assert!(decided.status);
    assert_eq!(decided.reason, SAN_OVERLAP);
    assert!(decided.message.contains(&format!(
        "the SANs of {} (CN api.example) are all in {}",
        narrow.thumbprint, wide.thumbprint
    )));
    assert!(decided.message.contains(&format!(
        "the SANs of {} (CN api.example) are all in {}",
        renewal.thumbprint, wide.thumbprint
    )));
    assert_eq!(decided.message.matches("are all in").count(), 2);
    assert!(!san_overlap(&[narrow, unrelated, renewal]).status);
}

#[test]
fn a_san_overlap_in_the_store_is_a_warning() {
    let mut c = case(by_thumbprint_spec());
    c.published = Some(published(1, "Old", thumbprint_rules()));
    let mut overlapping = store();
    overlapping
        .instances
        .push(facts("X").cn("x.example").dns("x.example").build());
    overlapping
        .instances
        .push(facts("Y").cn("y.example").dns("x.example").dns("y.example").build());
    let decision = decide(World {
        generation: Some(2),
        spec: &c.spec,
        status: &c.status,
        store: Ok(overlapping),
        published: c.published.clone(),
        outputs_blocked: None,
        preflight: None,
        members: MemberReport::default(),
        now: c.now,
    });
    assert_eq!(condition(&decision.status, SAN_OVERLAP), ("True", "SanOverlap"));
    assert!(
        decision
            .events
            .iter()
            .any(|e| e.type_ == EventType::Warning && e.reason == "SanOverlap")
    );
    assert_eq!(condition(&c.decide().status, SAN_OVERLAP), ("False", "NoOverlap"));
}

/// The Kubernetes cases of the malformed-input catalogue, at the declaration:
/// a source Secret deleted or replaced by something unreadable mid-stage (the
/// gather reports `StoreNotSynced`), and a defective goal certificate. Each
/// holds the stage: nothing is published, one status, then no further write.
#[test]
fn an_unreadable_or_defective_store_mid_upgrade_holds_the_stage() {
    let holds = |c: &mut Case, reason: &str| {
        let first = c.decide();
        assert_eq!(first.publish, None, "{reason}: nothing published");
        assert_eq!(condition(&first.status, BLOCKED), ("True", reason));
        c.status = first.status.clone();
        c.now = ts("2026-06-01T00:05:00Z");
        let again = c.decide();
        assert_eq!(again.status, first.status, "{reason}: one status write");
        assert_eq!((again.publish, again.events.len()), (None, 0), "{reason}");
    };
    for reason in [
        "SecretNotFound",
        "MalformedCertificate",
        "UnexpectedSecretType",
        "MissingKey",
    ] {
        let mut c = case(by_name_spec("0s"));
        c.published = Some(published(2, "Old", Accepted::new([tp("Old"), tp("G")], [])));
        c.store_blocked = Some(Blocked::new(
            BlockReason::StoreNotSynced,
            format!("ObservedCertificate store cannot read its source ({reason})"),
        ));
        holds(&mut c, "StoreNotSynced");
    }
}

#[test]
fn a_defective_goal_blocks_with_the_defect() {
    let mut c = case(by_name_spec("0s"));
    c.published = Some(published(1, "Old", thumbprint_rules()));
    let decision = decide(World {
        generation: Some(2),
        spec: &c.spec,
        status: &c.status,
        store: Ok(Store {
            instances: vec![
                store().instances[0].clone(),
                facts("G")
                    .cn("cluster.example")
                    .issuer("CA")
                    .rsa(1024)
                    .valid("2026-03-01T00:00:00Z", "2027-06-01T00:00:00Z")
                    .build(),
            ],
            trust: TrustBundle::new([tp("CA")]),
        }),
        published: c.published.clone(),
        outputs_blocked: None,
        preflight: None,
        members: MemberReport::default(),
        now: c.now,
    });
    assert_eq!(decision.publish, None);
    assert_eq!(condition(&decision.status, BLOCKED), ("True", "KeyTooWeak"));
}
