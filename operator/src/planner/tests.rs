use super::*;
use crate::crd::{
    CertificateCommonNames, CertificateStore, CertificateThumbprints, ClientCertificateThumbprint,
    ClusterCertificateDeclarationSpec, CommonNameDeclaration, UpgradePolicy,
};
use crate::rules::{ClientThumbprint, Clients};
use crate::testing::{facts, tp, ts};

const CN: &str = "cluster.example";

fn now() -> Timestamp {
    ts("2026-06-01T00:00:00Z")
}

/// The conversion cast: CA1 issues the goal G for cluster.example; Old1 and
/// Old2 are older self-signed thumbprint certificates.
fn goal_cert() -> CertificateFacts {
    facts("G")
        .cn(CN)
        .issuer("CA1")
        .valid("2026-03-01T00:00:00Z", "2026-12-01T00:00:00Z")
        .build()
}

fn old(label: &str, not_before: &str) -> CertificateFacts {
    facts(label)
        .cn("old.example")
        .self_signed()
        .valid(not_before, "2027-01-01T00:00:00Z")
        .build()
}

fn store(instances: Vec<CertificateFacts>) -> Store {
    Store {
        instances,
        trust: TrustBundle::new([tp("CA1")]),
    }
}

fn by_thumbprint(labels: &[&str]) -> Accepted {
    Accepted::new(labels.iter().map(|l| tp(l)), [])
}

fn by_name(name: &str, issuers: &[&str]) -> Accepted {
    Accepted::new([], [CommonNameRule::new(name, issuers.iter().map(|l| tp(l)))])
}

fn desired(accepted: Accepted) -> Desired {
    Desired {
        present_by: PresentationForm::of(&accepted),
        accepted,
        selection: SelectionPolicy::NewestNotBefore,
        clients: Clients::default(),
    }
}

fn effective(accepted: Accepted) -> Effective {
    Effective {
        revision: 7,
        accepted,
        presented: None,
        clients: None,
        tolerated: Vec::new(),
        anchors: None,
    }
}

fn stages(plan: &Plan) -> Vec<(Stage, Change)> {
    plan.pending()
        .iter()
        .map(|r| (r.stage.unwrap(), r.change.unwrap()))
        .collect()
}

/// The checks every successful plan must pass, written independently of the
/// planner's own check.
fn assert_walkable(plan: &Plan, store: &Store, desired: &Desired) {
    assert_eq!(plan.blocked, None);
    // Members on a revision accept what its rules admit, revocations in
    // force except those it tolerates (the one in force: its own presented too).
    // Each by its own anchors when some name is unpinned (a bundle changes in stages).
    let first = &plan.revisions[0];
    let trust_of = |r: &Revision| {
        let mut tolerated = r.tolerated.clone();
        if r.revision == first.revision {
            tolerated.push(first.presented.clone());
        }
        let unpinned = r.accepted.common_names.iter().any(|n| n.issuer_thumbprints.is_empty())
            || r.clients.common_names.iter().any(|c| c.issuer_thumbprints.is_empty());
        let own = match unpinned {
            true => store.trust.with_anchors(&r.anchors),
            false => store.trust.clone(),
        };
        own.tolerating(&tolerated).into_owned()
    };
    let bundle: Vec<Thumbprint> = store.trust.anchors().cloned().collect();
    for pair in plan.revisions.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let find = |t: &Thumbprint| store.instances.iter().find(|f| &f.thumbprint == t).unwrap();
        assert!(
            b.accepted.admits(find(&a.presented), &trust_of(b)),
            "r{} rejects r{}'s",
            b.revision,
            a.revision
        );
        assert!(
            a.accepted.admits(find(&b.presented), &trust_of(a)),
            "r{} rejects r{}'s",
            a.revision,
            b.revision
        );
        assert_eq!(b.revision, a.revision + 1);
        let validation =
            a.accepted != b.accepted || a.clients != b.clients || a.tolerated != b.tolerated || a.anchors != b.anchors;
        // Every anchor trusted on the way is one in force or the bundle's.
        assert!(
            b.anchors
                .iter()
                .all(|t| first.anchors.contains(t) || bundle.contains(t)),
            "r{} trusts {:?}",
            b.revision,
            b.anchors
        );
        assert!(
            (a.presented != b.presented) != validation,
            "r{} must change one thing",
            b.revision
        );
        // Only the certificate members move away from is ever tolerated, and
        // no new revision presents a revoked certificate.
        assert!(
            b.tolerated.iter().all(|t| *t == first.presented),
            "r{} tolerates {:?}",
            b.revision,
            b.tolerated
        );
        assert!(
            store.trust.revoked_on_path(find(&b.presented)).is_none() || b.presented == first.presented,
            "r{} presents a revoked certificate",
            b.revision
        );
        assert!(b.accepted.thumbprints.len() <= THUMBPRINT_SLOTS);
    }
    let last = plan.revisions.last().unwrap();
    assert_eq!(last.accepted, desired.accepted);
    assert_eq!(last.clients, desired.clients);
    // The walk ends trusting the bundle's anchors, unless their removal is held.
    let unpinned = last.anchors.iter().any(|t| !bundle.contains(t));
    match &plan.held {
        None => assert!(!unpinned, "r{} still trusts {:?}", last.revision, last.anchors),
        Some(held) => {
            assert_eq!(held.reason, BlockReason::TrustAnchorInUse);
            assert!(unpinned, "held with nothing to remove: {}", held.message);
        }
    }
    // What it ends presenting, judged as its members judge it.
    let ended = Store {
        trust: trust_of(last),
        instances: store.instances.clone(),
    };
    let store = &ended;
    // A client is removed only after the last presentation change.
    let last_presentation = plan
        .revisions
        .iter()
        .rposition(|r| r.change == Some(Change::Presentation));
    for (i, pair) in plan.revisions.windows(2).enumerate() {
        let removed = pair[0].clients.union(&pair[1].clients) != pair[1].clients;
        if removed && let Some(p) = last_presentation {
            assert!(
                i + 1 > p,
                "a client removed in r{} before the presentation in r{}",
                pair[1].revision,
                plan.revisions[p].revision
            );
        }
    }
    assert_eq!(
        Some(&last.presented),
        goal(desired, store, now()).ok().map(|g| &g.thumbprint)
    );
}

fn convert(current: Accepted, instances: Vec<CertificateFacts>) -> (Plan, Store, Desired) {
    let store = store(instances);
    let target = desired(by_name(CN, &["CA1"]));
    let plan = plan(Some(&effective(current)), &target, &store, now());
    (plan, store, target)
}

const CONVERSION_TAIL: [(Stage, Change); 3] = [
    (Stage::SwitchToCommonName, Change::Validation),
    (Stage::SwitchToCommonName, Change::Validation),
    (Stage::PinIssuers, Change::Validation),
];

// --- Service Fabric: valid starting states for the conversion ---------------

#[test]
fn conversion_from_goal_alone_skips_add_secondary() {
    let (plan, store, target) = convert(by_thumbprint(&["G"]), vec![goal_cert()]);
    assert_walkable(&plan, &store, &target);
    assert_eq!(stages(&plan), CONVERSION_TAIL);
    let [r0, r1, r2, r3] = &plan.revisions[..] else {
        panic!("{plan:?}")
    };
    assert_eq!(r0.revision, 7);
    assert_eq!(r1.accepted, Accepted::new([tp("G")], [CommonNameRule::new(CN, [])]));
    assert_eq!(r2.accepted, by_name(CN, &[]));
    assert_eq!(r3.accepted, by_name(CN, &["CA1"]));
    assert!(plan.revisions.iter().all(|r| r.presented == tp("G")));
}

#[test]
fn conversion_from_goal_with_an_older_secondary_skips_add_secondary() {
    let (plan, store, target) = convert(
        by_thumbprint(&["G", "Old1"]),
        vec![goal_cert(), old("Old1", "2026-01-01T00:00:00Z")],
    );
    assert_walkable(&plan, &store, &target);
    assert_eq!(stages(&plan), CONVERSION_TAIL);
}

#[test]
fn conversion_from_an_older_primary_with_goal_as_secondary_skips_add_secondary() {
    // `thumbprint: Old1, thumbprintSecondary: G` is the same set: G is newer, so presented.
    let (plan, store, target) = convert(
        by_thumbprint(&["Old1", "G"]),
        vec![old("Old1", "2026-01-01T00:00:00Z"), goal_cert()],
    );
    assert_walkable(&plan, &store, &target);
    assert_eq!(plan.revisions[0].presented, tp("G"));
    assert_eq!(stages(&plan), CONVERSION_TAIL);
}

// --- Service Fabric: remediation table ---------------------------------------

#[test]
fn remediation_old_primary_alone_goal_newer_adds_goal_as_secondary() {
    // SF upgrade 1: TP=Old1, Sec=G; then the conversion.
    let (plan, store, target) = convert(
        by_thumbprint(&["Old1"]),
        vec![old("Old1", "2026-01-01T00:00:00Z"), goal_cert()],
    );
    assert_walkable(&plan, &store, &target);
    let r1 = &plan.revisions[1];
    assert_eq!(
        (r1.stage, r1.change),
        (Some(Stage::AddSecondary), Some(Change::Validation))
    );
    assert_eq!(
        (&r1.accepted, &r1.presented),
        (&by_thumbprint(&["Old1", "G"]), &tp("Old1"))
    );
    let r2 = &plan.revisions[2];
    assert_eq!(
        (r2.stage, r2.change, &r2.presented),
        (Some(Stage::AddSecondary), Some(Change::Presentation), &tp("G"))
    );
    assert_eq!(stages(&plan)[2..], CONVERSION_TAIL);
}

#[test]
fn remediation_old_primary_alone_old_newer_still_presents_goal_before_switching() {
    // SF: TP=G, Sec=Old1, then TP=G alone, which changes presentation and
    // validation at once. certshift presents G explicitly while both are accepted.
    let (plan, store, target) = convert(
        by_thumbprint(&["Old1"]),
        vec![old("Old1", "2026-04-01T00:00:00Z"), goal_cert()],
    );
    assert_walkable(&plan, &store, &target);
    assert_eq!(plan.revisions[0].presented, tp("Old1"));
    assert_eq!(
        stages(&plan),
        [
            (Stage::AddSecondary, Change::Validation),
            (Stage::AddSecondary, Change::Presentation),
            CONVERSION_TAIL[0],
            CONVERSION_TAIL[1],
            CONVERSION_TAIL[2],
        ]
    );
    assert_eq!(plan.revisions[1].accepted, by_thumbprint(&["G", "Old1"]));
}

#[test]
fn remediation_goal_as_secondary_but_old_primary_newer_presents_goal() {
    for current in [by_thumbprint(&["Old1", "G"]), by_thumbprint(&["G", "Old1"])] {
        let (plan, store, target) = convert(current, vec![old("Old1", "2026-04-01T00:00:00Z"), goal_cert()]);
        assert_walkable(&plan, &store, &target);
        assert_eq!(plan.revisions[0].presented, tp("Old1"));
        assert_eq!(stages(&plan)[0], (Stage::AddSecondary, Change::Presentation));
        assert_eq!(stages(&plan)[1..], CONVERSION_TAIL);
    }
}

#[test]
fn remediation_two_old_certificates_drops_one_to_make_room_for_the_goal() {
    let instances = vec![
        old("Old1", "2026-01-01T00:00:00Z"),
        old("Old2", "2026-02-01T00:00:00Z"),
        goal_cert(),
    ];
    let (plan, store, target) = convert(by_thumbprint(&["Old1", "Old2"]), instances);
    assert_walkable(&plan, &store, &target);
    // Old2 is newer, so presented; Old1 gives up its slot in the same validation revision.
    assert_eq!(plan.revisions[0].presented, tp("Old2"));
    let r1 = &plan.revisions[1];
    assert_eq!(
        (r1.stage, &r1.accepted, &r1.presented),
        (Some(Stage::AddSecondary), &by_thumbprint(&["Old2", "G"]), &tp("Old2"))
    );
    assert_eq!(plan.revisions[2].presented, tp("G"));
    assert_eq!(stages(&plan)[2..], CONVERSION_TAIL);
}

#[test]
fn conversion_to_unpinned_names_has_no_pin_stage() {
    let store = store(vec![old("Old1", "2026-01-01T00:00:00Z"), goal_cert()]);
    let target = desired(by_name(CN, &[]));
    let plan = plan(Some(&effective(by_thumbprint(&["Old1"]))), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert!(!stages(&plan).iter().any(|(s, _)| *s == Stage::PinIssuers));
}

#[test]
fn conversion_of_a_self_signed_goal_pins_it_when_switching() {
    // Unpinned, a self-signed goal would not be accepted; pinned to itself it is.
    let goal = facts("S")
        .cn(CN)
        .self_signed()
        .valid("2026-03-01T00:00:00Z", "2026-12-01T00:00:00Z")
        .build();
    let store = store(vec![old("Old1", "2026-01-01T00:00:00Z"), goal]);
    let target = desired(by_name(CN, &["S"]));
    let plan = plan(Some(&effective(by_thumbprint(&["Old1"]))), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert!(!stages(&plan).iter().any(|(s, _)| *s == Stage::PinIssuers));
}

#[test]
fn pin_issuers_blocks_when_goal_issuer_not_pinned() {
    let (plan, _, _) = convert(
        by_thumbprint(&["Old1"]),
        vec![old("Old1", "2026-01-01T00:00:00Z"), goal_cert().with_issuer("CA9")],
    );
    let blocked = plan.blocked.as_ref().expect("blocked");
    assert_eq!(blocked.reason, BlockReason::IssuerNotPinned);
    assert!(blocked.message.contains("not a pinned issuer"), "{}", blocked.message);
    // Nothing is published: the plan holds only what is in force.
    assert_eq!(plan.revisions.len(), 1);
    assert_eq!(plan.revisions[0].presented, tp("Old1"));
}

// --- Other changes: widen → present → narrow ---------------------------------

#[test]
fn thumbprint_rotation_widens_presents_then_narrows() {
    let b = facts("B")
        .cn("x")
        .self_signed()
        .valid("2026-04-01T00:00:00Z", "2027-04-01T00:00:00Z")
        .build();
    let store = store(vec![old("A", "2026-01-01T00:00:00Z"), b]);
    let target = desired(by_thumbprint(&["B"]));
    let plan = plan(Some(&effective(by_thumbprint(&["A"]))), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert_eq!(
        stages(&plan),
        [
            (Stage::WidenValidation, Change::Validation),
            (Stage::SwitchPresentation, Change::Presentation),
            (Stage::NarrowValidation, Change::Validation),
        ]
    );
    assert_eq!(plan.revisions[1].accepted, by_thumbprint(&["A", "B"]));
}

#[test]
fn rotation_works_with_either_selection_policy() {
    // B starts later but ends sooner: LatestNotAfter keeps A as the goal.
    let a = old("A", "2026-01-01T00:00:00Z");
    let b = facts("B")
        .cn("x")
        .self_signed()
        .valid("2026-04-01T00:00:00Z", "2026-10-01T00:00:00Z")
        .build();
    let store = store(vec![a, b]);
    let mut target = desired(by_thumbprint(&["A", "B"]));
    let newest = plan(Some(&effective(by_thumbprint(&["A"]))), &target, &store, now());
    assert_eq!(newest.revisions.last().unwrap().presented, tp("B"));
    target.selection = SelectionPolicy::LatestNotAfter;
    let latest = plan(Some(&effective(by_thumbprint(&["A"]))), &target, &store, now());
    assert_walkable(&latest, &store, &target);
    assert_eq!(stages(&latest), [(Stage::WidenValidation, Change::Validation)]);
    assert_eq!(latest.revisions.last().unwrap().presented, tp("A"));
}

#[test]
fn removing_an_unpresented_secondary_is_one_narrowing_revision() {
    let store = store(vec![old("A", "2026-02-01T00:00:00Z"), old("B", "2026-01-01T00:00:00Z")]);
    let target = desired(by_thumbprint(&["A"]));
    let plan = plan(Some(&effective(by_thumbprint(&["A", "B"]))), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert_eq!(stages(&plan), [(Stage::NarrowValidation, Change::Validation)]);
}

#[test]
fn removing_the_presented_secondary_switches_presentation_first() {
    let store = store(vec![old("A", "2026-01-01T00:00:00Z"), old("B", "2026-02-01T00:00:00Z")]);
    let target = desired(by_thumbprint(&["A"]));
    let plan = plan(Some(&effective(by_thumbprint(&["A", "B"]))), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert_eq!(
        stages(&plan),
        [
            (Stage::SwitchPresentation, Change::Presentation),
            (Stage::NarrowValidation, Change::Validation)
        ]
    );
}

#[test]
fn rotating_both_slots_never_exceeds_two_thumbprints() {
    let instances = ["A", "S", "B", "C"]
        .iter()
        .zip(["2026-01-01", "2026-01-02", "2026-03-01", "2026-02-01"])
        .map(|(l, d)| old(l, &format!("{d}T00:00:00Z")))
        .collect();
    let store = store(instances);
    let target = desired(by_thumbprint(&["B", "C"]));
    let plan = plan(Some(&effective(by_thumbprint(&["A", "S"]))), &target, &store, now());
    assert_walkable(&plan, &store, &target);
}

#[test]
fn common_name_back_to_thumbprint() {
    let b = facts("B")
        .cn("other")
        .self_signed()
        .valid("2026-04-01T00:00:00Z", "2027-04-01T00:00:00Z")
        .build();
    let store = store(vec![goal_cert(), b]);
    let target = desired(by_thumbprint(&["B"]));
    let current = Effective {
        presented: Some(tp("G")),
        ..effective(by_name(CN, &["CA1"]))
    };
    let plan = plan(Some(&current), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert_eq!(
        plan.revisions[1].accepted,
        Accepted::new([tp("B")], [CommonNameRule::new(CN, [tp("CA1")])])
    );
    assert_eq!(stages(&plan).len(), 3);
}

#[test]
fn changing_issuers_widens_to_both_pins_first() {
    let h = facts("H")
        .cn(CN)
        .issuer("CA2")
        .valid("2026-04-01T00:00:00Z", "2027-04-01T00:00:00Z")
        .build();
    let store = store(vec![goal_cert(), h]);
    let target = desired(by_name(CN, &["CA2"]));
    let plan = plan(Some(&effective(by_name(CN, &["CA1"]))), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert_eq!(plan.revisions[1].accepted, by_name(CN, &["CA1", "CA2"]));
    assert_eq!(plan.revisions[2].presented, tp("H"));
}

#[test]
fn adding_an_issuer_without_a_newer_certificate_is_one_widening_revision() {
    let store = store(vec![goal_cert()]);
    let target = desired(by_name(CN, &["CA1", "CA2"]));
    let plan = plan(Some(&effective(by_name(CN, &["CA1"]))), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert_eq!(stages(&plan), [(Stage::WidenValidation, Change::Validation)]);
}

// --- Rollover in common-name mode --------------------------------------------

#[test]
fn a_renewal_from_a_pinned_issuer_rolls_over_in_one_presentation_revision() {
    let renewal = facts("G2")
        .cn(CN)
        .issuer("CA1")
        .valid("2026-05-01T00:00:00Z", "2027-05-01T00:00:00Z")
        .build();
    let store = store(vec![goal_cert(), renewal]);
    let target = desired(by_name(CN, &["CA1"]));
    let current = Effective {
        presented: Some(tp("G")),
        ..effective(by_name(CN, &["CA1"]))
    };
    let plan = plan(Some(&current), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert_eq!(stages(&plan), [(Stage::Rollover, Change::Presentation)]);
    assert_eq!(plan.revisions[1].presented, tp("G2"));
}

#[test]
fn a_renewal_from_an_unpinned_issuer_is_refused_and_the_old_stays_presented() {
    let renewal = facts("G3")
        .cn(CN)
        .issuer("CA9")
        .valid("2026-05-01T00:00:00Z", "2027-05-01T00:00:00Z")
        .build();
    let store = store(vec![goal_cert(), renewal]);
    let target = desired(by_name(CN, &["CA1"]));
    let current = Effective {
        presented: Some(tp("G")),
        ..effective(by_name(CN, &["CA1"]))
    };
    let plan = plan(Some(&current), &target, &store, now());
    assert_eq!(
        plan.blocked.as_ref().map(|b| b.reason),
        Some(BlockReason::IssuerNotPinned)
    );
    assert_eq!(plan.revisions.len(), 1);
    assert_eq!(plan.revisions[0].presented, tp("G"));
}

#[test]
fn an_unchanged_world_plans_nothing() {
    let store = store(vec![goal_cert()]);
    let target = desired(by_name(CN, &["CA1"]));
    let plan = plan(Some(&effective(by_name(CN, &["CA1"]))), &target, &store, now());
    assert_eq!(plan.blocked, None);
    assert_eq!(plan.revisions.len(), 1);
}

#[test]
fn without_an_effective_state_revision_zero_is_the_desired_one() {
    let store = store(vec![goal_cert()]);
    let target = desired(by_name(CN, &["CA1"]));
    let plan = plan(None, &target, &store, now());
    assert_eq!(plan.blocked, None);
    assert_eq!(plan.revisions.len(), 1);
    assert_eq!(
        (plan.revisions[0].revision, &plan.revisions[0].presented),
        (0, &tp("G"))
    );
}

// --- Blocked reasons ---------------------------------------------------------

fn blocked_reason(instances: Vec<CertificateFacts>, target: Accepted) -> (BlockReason, String) {
    let store = store(instances);
    let plan = plan(None, &desired(target), &store, now());
    let blocked = plan.blocked.expect("blocked");
    (blocked.reason, blocked.message)
}

#[test]
fn goal_not_found() {
    let (reason, message) = blocked_reason(vec![goal_cert()], by_name("missing.example", &["CA1"]));
    assert_eq!(reason, BlockReason::GoalCertificateNotFound);
    assert_eq!(
        message,
        "no certificate in the store has subject CN \"missing.example\""
    );
}

#[test]
fn presentation_by_name_is_case_sensitive_so_the_goal_is_not_found() {
    let (reason, _) = blocked_reason(vec![goal_cert()], by_name("Cluster.Example", &["CA1"]));
    assert_eq!(reason, BlockReason::GoalCertificateNotFound);
}

#[test]
fn goal_expired() {
    let expired = goal_cert().with_validity("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
    let (reason, message) = blocked_reason(vec![expired], by_name(CN, &["CA1"]));
    assert_eq!(reason, BlockReason::CertificateExpired);
    assert!(message.contains("notAfter=2026-01-01T00:00:00Z"), "{message}");
}

#[test]
fn goal_not_yet_valid() {
    let future = goal_cert().with_validity("2026-09-01T00:00:00Z", "2027-01-01T00:00:00Z");
    let (reason, _) = blocked_reason(vec![future], by_name(CN, &["CA1"]));
    assert_eq!(reason, BlockReason::CertificateNotYetValid);
}

#[test]
fn goal_private_key_missing_is_checked_after_expiry() {
    let keyless = goal_cert().with_key(PrivateKeyState::Missing);
    let expired_with_key = facts("E")
        .cn(CN)
        .issuer("CA1")
        .valid("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
        .build();
    let (reason, message) = blocked_reason(vec![keyless, expired_with_key], by_name(CN, &["CA1"]));
    assert_eq!(reason, BlockReason::PrivateKeyMissing);
    assert!(message.contains("(no private key)"), "{message}");
}

#[test]
fn issuer_not_pinned_is_checked_last() {
    let (reason, _) = blocked_reason(vec![goal_cert()], by_name(CN, &["CA2"]));
    assert_eq!(reason, BlockReason::IssuerNotPinned);
}

#[test]
fn thumbprint_not_in_store() {
    let (reason, message) = blocked_reason(vec![goal_cert()], by_thumbprint(&["Z"]));
    assert_eq!(reason, BlockReason::ThumbprintNotInStore);
    assert!(message.contains(tp("Z").as_str()));
    let store = store(vec![goal_cert()]);
    let current = Effective {
        presented: Some(tp("Q")),
        ..effective(by_thumbprint(&["Q"]))
    };
    let plan = plan(Some(&current), &desired(by_name(CN, &["CA1"])), &store, now());
    assert_eq!(plan.blocked.unwrap().reason, BlockReason::ThumbprintNotInStore);
}

#[test]
fn an_effective_state_presenting_what_it_rejects_is_refused() {
    let store = store(vec![goal_cert(), old("Old1", "2026-01-01T00:00:00Z")]);
    let current = Effective {
        presented: Some(tp("Old1")),
        ..effective(by_thumbprint(&["G"]))
    };
    let plan = plan(Some(&current), &desired(by_name(CN, &["CA1"])), &store, now());
    assert_eq!(plan.blocked.unwrap().reason, BlockReason::InvalidEffectiveState);
}

// --- Spec validation ----------------------------------------------------------

/// The spec's parser (`declaration::spec`), as far as the planner's input goes.
fn desired_from_spec(spec: &ClusterCertificateDeclarationSpec) -> Result<Desired, Blocked> {
    crate::declaration::spec::parse(spec).map(|s| s.desired)
}

fn spec() -> ClusterCertificateDeclarationSpec {
    ClusterCertificateDeclarationSpec {
        certificate_common_names: Some(CertificateCommonNames {
            common_names: vec![CommonNameDeclaration {
                certificate_common_name: CN.into(),
                certificate_issuer_thumbprint: format!("{}, {}", tp("CA1").as_str().to_lowercase(), tp("CA2")),
            }],
        }),
        store: CertificateStore {
            observed_certificates: vec!["cluster".into()],
        },
        ..Default::default()
    }
}

fn spec_error(spec: &ClusterCertificateDeclarationSpec) -> (BlockReason, String) {
    let err = desired_from_spec(spec).unwrap_err();
    (err.reason, err.message)
}

#[test]
fn a_valid_spec_normalizes_issuers() {
    let desired = desired_from_spec(&spec()).unwrap();
    assert_eq!(desired.accepted, by_name(CN, &["CA1", "CA2"]));
    assert_eq!(desired.present_by, PresentationForm::CommonNames(vec![CN.into()]));
}

#[test]
fn spec_thumbprint_errors_name_the_field() {
    let mut bad = spec();
    bad.certificate = Some(CertificateThumbprints {
        thumbprint: tp("A").to_string(),
        thumbprint_secondary: Some("12:34".into()),
    });
    let (reason, message) = spec_error(&bad);
    assert_eq!(reason, BlockReason::InvalidThumbprint);
    assert!(
        message.starts_with("spec.certificate.thumbprintSecondary: 4 hex digits"),
        "{message}"
    );

    let mut bad = spec();
    bad.certificate_common_names.as_mut().unwrap().common_names[0].certificate_issuer_thumbprint = "xyz".into();
    let (reason, message) = spec_error(&bad);
    assert_eq!(reason, BlockReason::InvalidThumbprint);
    assert!(
        message.starts_with(
            "spec.certificateCommonNames.commonNames[0].certificateIssuerThumbprint[0]: invalid character 'x'"
        ),
        "{message}"
    );

    let mut bad = spec();
    bad.client_certificate_thumbprints = vec![ClientCertificateThumbprint {
        certificate_thumbprint: "nope".into(),
        is_admin: true,
    }];
    assert!(
        spec_error(&bad)
            .1
            .starts_with("spec.clientCertificateThumbprints[0].certificateThumbprint")
    );
}

#[test]
fn duplicate_common_names_are_refused_case_insensitively() {
    let mut bad = spec();
    bad.certificate_common_names
        .as_mut()
        .unwrap()
        .common_names
        .push(CommonNameDeclaration {
            certificate_common_name: "Cluster.Example".into(),
            certificate_issuer_thumbprint: String::new(),
        });
    let (reason, message) = spec_error(&bad);
    assert_eq!(reason, BlockReason::DuplicateCommonName);
    assert!(
        message.contains("commonNames[1]") && message.contains("commonNames[0]"),
        "{message}"
    );
}

#[test]
fn a_cn_prefix_is_refused() {
    let mut bad = spec();
    bad.certificate_common_names.as_mut().unwrap().common_names[0].certificate_common_name =
        "CN=cluster.example".into();
    let (reason, message) = spec_error(&bad);
    assert_eq!(reason, BlockReason::InvalidCommonName);
    assert!(message.contains("starts with \"CN=\""), "{message}");
}

/// Found by the `plan_input` fuzz target: a multi-byte character across the
/// third byte made the `CN=` check slice inside it and panic.
#[test]
fn multi_byte_names_and_pasted_marks_are_refused_not_panicked_on() {
    for (name, shown) in [
        ("c\\\u{202D} x", "'\\u{202d}'"),
        ("\u{200E}cluster.example", "'\\u{200e}'"),
    ] {
        let mut bad = spec();
        bad.certificate_common_names.as_mut().unwrap().common_names[0].certificate_common_name = name.into();
        let (reason, message) = spec_error(&bad);
        assert_eq!(reason, BlockReason::InvalidCommonName, "{name:?}");
        assert!(message.contains(shown), "{message}");
    }
    let mut fine = spec();
    fine.certificate_common_names.as_mut().unwrap().common_names[0].certificate_common_name = "ĉluster.example".into();
    assert!(desired_from_spec(&fine).is_ok());
}

#[test]
fn an_empty_store_or_declaration_is_refused() {
    let mut bad = spec();
    bad.store.observed_certificates.clear();
    assert_eq!(spec_error(&bad).0, BlockReason::InvalidDeclaration);
    let empty = ClusterCertificateDeclarationSpec {
        store: spec().store,
        ..Default::default()
    };
    assert_eq!(spec_error(&empty).0, BlockReason::InvalidDeclaration);
}

#[test]
fn bad_durations_are_refused() {
    let mut bad = spec();
    bad.upgrade = Some(UpgradePolicy {
        min_soak: Some("5 minutes".into()),
        ..Default::default()
    });
    let (reason, message) = spec_error(&bad);
    assert_eq!(reason, BlockReason::InvalidDuration);
    assert!(message.starts_with("spec.upgrade.minSoak"), "{message}");
}

#[test]
fn bad_pod_selectors_are_refused() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    let with = |operator: &str, values: Option<Vec<String>>| {
        let mut spec = spec();
        let fine = LabelSelectorRequirement {
            key: "app".into(),
            operator: "Exists".into(),
            values: None,
        };
        let requirement = LabelSelectorRequirement {
            key: "tier".into(),
            operator: operator.into(),
            values,
        };
        spec.members = Some(crate::crd::Members {
            pods: Some(LabelSelector {
                match_expressions: Some(vec![fine, requirement]),
                match_labels: None,
            }),
            ..Default::default()
        });
        desired_from_spec(&spec).map(|_| ())
    };
    let some = || Some(vec!["db".to_owned()]);
    for (operator, values, problem) in [
        ("Equals", some(), "operator: must be In, NotIn, Exists or DoesNotExist"),
        ("In", None, "values: required"),
        ("NotIn", Some(vec![]), "values: required"),
        ("Exists", some(), "values: must be empty"),
    ] {
        let blocked = with(operator, values).expect_err(operator);
        assert_eq!(blocked.reason, BlockReason::InvalidMembers);
        let field = format!("spec.members.pods.matchExpressions[1].{problem}");
        assert!(blocked.message.starts_with(&field), "{operator}: {}", blocked.message);
    }
    for (operator, values) in [
        ("In", some()),
        ("NotIn", some()),
        ("Exists", None),
        ("DoesNotExist", Some(vec![])),
    ] {
        assert_eq!(with(operator, values), Ok(()), "{operator}");
    }
}

trait Tweak {
    fn with_issuer(self, label: &str) -> Self;
    fn with_validity(self, from: &str, until: &str) -> Self;
    fn with_key(self, state: PrivateKeyState) -> Self;
}

impl Tweak for CertificateFacts {
    fn with_issuer(mut self, label: &str) -> Self {
        self.issuer_thumbprint = Some(tp(label));
        self
    }

    fn with_validity(mut self, from: &str, until: &str) -> Self {
        self.not_before = ts(from);
        self.not_after = ts(until);
        self
    }

    fn with_key(mut self, state: PrivateKeyState) -> Self {
        self.private_key = state;
        self
    }
}

mod properties;

#[test]
fn client_additions_go_first_and_removals_after_the_presentation() {
    let b = facts("B")
        .cn("x")
        .self_signed()
        .valid("2026-04-01T00:00:00Z", "2027-04-01T00:00:00Z")
        .build();
    let store = store(vec![old("A", "2026-01-01T00:00:00Z"), b]);
    let client = |label: &str| ClientThumbprint {
        thumbprint: tp(label),
        is_admin: false,
    };
    let mut target = desired(by_thumbprint(&["B"]));
    target.clients = Clients {
        thumbprints: vec![client("C2")],
        common_names: vec![],
    };
    let current = Effective {
        clients: Some(Clients {
            thumbprints: vec![client("C1")],
            common_names: vec![],
        }),
        ..effective(by_thumbprint(&["A"]))
    };
    let plan = plan(Some(&current), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    let mut both = vec![client("C1"), client("C2")];
    both.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
    let both = Clients {
        thumbprints: both,
        common_names: vec![],
    };
    let clients: Vec<&Clients> = plan.revisions.iter().map(|r| &r.clients).collect();
    assert_eq!(clients[1], &both, "the addition rides with the widening");
    assert_eq!(clients[2], &both, "both accepted while presentation switches");
    assert_eq!(clients[3], &target.clients, "the removal goes with the narrowing");

    // Clients alone: widen, then narrow.
    let same = Effective {
        clients: Some(Clients {
            thumbprints: vec![client("C1")],
            common_names: vec![],
        }),
        presented: Some(tp("B")),
        ..effective(by_thumbprint(&["B"]))
    };
    let plan = super::plan(Some(&same), &target, &store, now());
    assert_walkable(&plan, &store, &target);
    assert_eq!(
        stages(&plan),
        [
            (Stage::WidenValidation, Change::Validation),
            (Stage::NarrowValidation, Change::Validation)
        ]
    );
}

/// A presented certificate revoked in force is rotated away from: its
/// revocation is tolerated by a revision of its own, while it is presented
/// and by the one presenting the next, then enforced; the invariant holds at
/// every step (checked by `plan` itself, and again here).
#[test]
fn a_revoked_presented_certificate_is_planned_away_widen_present_narrow() {
    let presented = facts("P")
        .cn("cluster.example")
        .issuer("CA1")
        .valid("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
        .build();
    let renewal = facts("G")
        .cn("cluster.example")
        .issuer("CA1")
        .serial("02")
        .valid("2026-02-01T00:00:00Z", "2027-02-01T00:00:00Z")
        .build();
    let mut store = store(vec![presented.clone(), renewal]);
    // Before the CRL, the newer instance would simply roll over; present P to start.
    let rules = by_name("cluster.example", &["CA1"]);
    let mut effective = effective(rules.clone());
    effective.presented = Some(tp("P"));
    store.trust.revoke(tp("CA1"), presented.serial.clone());
    let plan = plan(Some(&effective), &desired(rules.clone()), &store, now());
    assert_eq!(plan.blocked, None);
    let steps: Vec<(Option<Stage>, &Thumbprint, &[Thumbprint])> = plan
        .revisions
        .iter()
        .map(|r| (r.stage, &r.presented, r.tolerated.as_slice()))
        .collect();
    let tolerated = [tp("P")];
    assert_eq!(
        steps,
        [
            (None, &tp("P"), &[][..]),
            (Some(Stage::WidenValidation), &tp("P"), &tolerated[..]),
            (Some(Stage::Rollover), &tp("G"), &tolerated[..]),
            (Some(Stage::NarrowValidation), &tp("G"), &[][..]),
        ]
    );
    assert_eq!(check_invariant(&plan.revisions, &store), Ok(()));
    // Without tolerance the same walk would cut members presenting P off.
    let mut untolerated = plan.revisions.clone();
    untolerated.iter_mut().for_each(|r| r.tolerated.clear());
    assert_eq!(
        check_invariant(&untolerated, &store).unwrap_err().reason,
        BlockReason::UnsafePlan
    );
    // Re-planned from any revision, the rest is the same.
    for (k, revision) in plan.revisions.iter().enumerate().skip(1) {
        let resumed = Effective::published(revision);
        let again = super::plan(Some(&resumed), &desired(rules.clone()), &store, now());
        assert_eq!(&again.revisions[1..], &plan.revisions[k + 1..], "from revision {k}");
    }
}

/// The certificate in use, A, chains through an intermediate I1 to the root
/// R1; a CRL revokes a CA on its path. With a replacement in the store, the
/// walk away is the revoked leaf's: tolerate A (its path too) while it is
/// presented and while the replacement is presented, then narrow; never a
/// new presentation under the revoked CA, and never `InvalidEffectiveState`.
/// Without one, `CertificateRevoked` names the CA and what to put in the store.
#[test]
fn a_revoked_ca_on_the_path_in_use_is_walked_away_from_or_blocks_naming_it() {
    struct Case {
        name: &'static str,
        /// The CA the CRL revokes, and who signs the CRL.
        revoked: (&'static str, &'static str),
        /// The declaration in force and desired, by name pinned to these issuers, or by thumbprint.
        pinned: Option<&'static [&'static str]>,
    }
    let cases = [
        Case {
            name: "a revoked intermediate in use, by thumbprint",
            revoked: ("I1", "R1"),
            pinned: None,
        },
        Case {
            name: "a revoked root in the bundle, by thumbprint",
            revoked: ("R1", "R1"),
            pinned: None,
        },
        Case {
            name: "a revoked intermediate that is the pinned issuer",
            revoked: ("I1", "R1"),
            pinned: Some(&["I1", "R2"]),
        },
    ];
    let root = |label: &str| {
        facts(label)
            .cn(&format!("Root {label}"))
            .issuer(label)
            .serial(label)
            .ca()
            .build()
    };
    let i1 = facts("I1").cn("Intermediate 1").issuer("R1").serial("11").ca().build();
    let in_use = facts("A")
        .cn(CN)
        .issuer("I1")
        .valid("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
        .build();
    // The replacement chains to another root.
    let replacement = facts("B")
        .cn(CN)
        .issuer("R2")
        .serial("21")
        .valid("2026-02-01T00:00:00Z", "2027-02-01T00:00:00Z")
        .build();
    for case in cases {
        let trust = || {
            let mut trust = TrustBundle::with_authorities([root("R1"), root("R2")], [i1.clone()]);
            let serial = if case.revoked.0 == "I1" { "11" } else { "R1" };
            trust.revoke(tp(case.revoked.1), serial);
            trust
        };
        let rules = |labels: &[&str]| match case.pinned {
            Some(issuers) => by_name(CN, issuers),
            None => by_thumbprint(labels),
        };
        let in_force = Effective {
            presented: Some(tp("A")),
            ..effective(rules(&["A"]))
        };
        // With a replacement: the three-revision walk.
        let store = Store {
            instances: vec![in_use.clone(), replacement.clone()],
            trust: trust(),
        };
        let target = desired(rules(&["B"]));
        let plan = plan(Some(&in_force), &target, &store, now());
        assert_eq!(plan.blocked, None, "{}", case.name);
        let steps: Vec<(Option<Change>, &str, Vec<&str>)> = plan
            .revisions
            .iter()
            .skip(1)
            .map(|r| {
                let tolerated = r.tolerated.iter().map(|t| t.short()).collect();
                (r.change, r.presented.short(), tolerated)
            })
            .collect();
        let (a, b) = (tp("A"), tp("B"));
        assert_eq!(
            steps,
            [
                (Some(Change::Validation), a.short(), vec![a.short()]),
                (Some(Change::Presentation), b.short(), vec![a.short()]),
                (Some(Change::Validation), b.short(), vec![]),
            ],
            "{}",
            case.name
        );
        assert_eq!(check_invariant(&plan.revisions, &store), Ok(()), "{}", case.name);
        // Tolerating A is not tolerating the revoked CA: nothing else under it passes.
        let sibling = facts("S").cn(CN).issuer("I1").serial("12").build();
        let tolerant = store.trust.tolerating(&[tp("A")]);
        assert!(tolerant.revoked_on_path(&in_use).is_none(), "{}", case.name);
        assert!(tolerant.revoked_on_path(&sibling).is_some(), "{}", case.name);

        // Without one: blocked, naming the revoked CA, not InvalidEffectiveState.
        let alone = Store {
            instances: vec![in_use.clone()],
            trust: trust(),
        };
        let blocked = plan_blocked(&in_force, &desired(rules(&["A"])), &alone);
        assert_eq!(
            blocked.reason,
            BlockReason::CertificateRevoked,
            "{}: {}",
            case.name,
            blocked.message
        );
        assert!(
            blocked.message.contains(tp(case.revoked.0).as_str()),
            "{}: names the CA: {}",
            case.name,
            blocked.message
        );
        assert!(
            blocked.message.contains("put another one in the store"),
            "{}",
            blocked.message
        );
    }
}

fn plan_blocked(in_force: &Effective, target: &Desired, store: &Store) -> Blocked {
    super::plan(Some(in_force), target, store, now())
        .blocked
        .expect("blocked")
}

#[test]
fn a_revoked_goal_is_never_presented() {
    let only = facts("G").cn("cluster.example").issuer("CA1").build();
    let mut store = store(vec![only.clone()]);
    store.trust.revoke(tp("CA1"), only.serial.clone());
    let blocked = goal(&desired(by_name("cluster.example", &["CA1"])), &store, now()).unwrap_err();
    assert_eq!(blocked.reason, BlockReason::CertificateRevoked);
    assert!(blocked.message.contains(tp("G").as_str()), "{}", blocked.message);
}

/// A trust bundle rotated as trust-manager does it (docs/trust.md): the new
/// root added, the store renewed under it, the old root removed, each step
/// from what members trust now (revision 0's anchors) to the bundle's. The
/// addition is a widening revision of its own; the removal is a narrowing
/// one, last, and only once what is presented no longer chains to it.
#[test]
fn a_trust_bundle_changes_in_stages_and_never_drops_an_anchor_in_use() {
    let root = |label: &str| facts(label).cn(&format!("Root {label}")).self_signed().ca().build();
    let under = |label: &str, root: &str, not_before: &str| {
        facts(label)
            .cn(CN)
            .issuer(root)
            .valid(not_before, "2027-01-01T00:00:00Z")
            .build()
    };
    let (a, b) = (
        under("A", "R1", "2026-01-01T00:00:00Z"),
        under("B", "R2", "2026-02-01T00:00:00Z"),
    );
    let store = |bundle: &[&str], instances: &[&CertificateFacts]| {
        let (anchors, known): (Vec<_>, Vec<_>) = [root("R1"), root("R2")]
            .into_iter()
            .partition(|r| bundle.iter().any(|l| tp(l) == r.thumbprint));
        Store {
            instances: instances.iter().map(|c| (*c).clone()).collect(),
            trust: TrustBundle::with_authorities(anchors, known),
        }
    };
    let in_force = |anchors: &[&str], presented: &str, accepted: Accepted| Effective {
        presented: Some(tp(presented)),
        anchors: Some(anchors.iter().map(|l| tp(l)).collect()),
        ..effective(accepted)
    };
    let labels = |anchors: &[Thumbprint]| anchors.iter().map(|t| t.short().to_owned()).collect::<Vec<_>>();
    let (r1, r2) = (tp("R1").short().to_owned(), tp("R2").short().to_owned());
    type Step = (Stage, Change, &'static str, Vec<String>, Option<Cause>);
    struct Case {
        name: &'static str,
        effective: Effective,
        bundle: &'static [&'static str],
        instances: Vec<CertificateFacts>,
        accepted: Accepted,
        steps: Vec<Step>,
        held: bool,
    }
    let unpinned = || by_name(CN, &[]);
    let cases = [
        Case {
            name: "a root added: trusted at once, in a revision of its own",
            effective: in_force(&["R1"], "A", unpinned()),
            bundle: &["R1", "R2"],
            instances: vec![a.clone()],
            accepted: unpinned(),
            steps: vec![(
                Stage::WidenValidation,
                Change::Validation,
                "A",
                vec![r1.clone(), r2.clone()],
                Some(Cause::TrustBundleChanged),
            )],
            held: false,
        },
        Case {
            name: "the store renewed under the new root: a rollover under both",
            effective: in_force(&["R1", "R2"], "A", unpinned()),
            bundle: &["R1", "R2"],
            instances: vec![a.clone(), b.clone()],
            accepted: unpinned(),
            steps: vec![(
                Stage::Rollover,
                Change::Presentation,
                "B",
                vec![r1.clone(), r2.clone()],
                None,
            )],
            held: false,
        },
        Case {
            name: "the old root removed once nothing presented chains to it",
            effective: in_force(&["R1", "R2"], "B", unpinned()),
            bundle: &["R2"],
            instances: vec![a.clone(), b.clone()],
            accepted: unpinned(),
            steps: vec![(
                Stage::NarrowValidation,
                Change::Validation,
                "B",
                vec![r2.clone()],
                Some(Cause::TrustBundleChanged),
            )],
            held: false,
        },
        Case {
            name: "the old root removed before the renewal: held, nothing published",
            effective: in_force(&["R1", "R2"], "A", unpinned()),
            bundle: &["R2"],
            instances: vec![a.clone()],
            accepted: unpinned(),
            steps: vec![],
            held: true,
        },
        Case {
            name: "roots replaced and the store renewed in one go: widen, present, narrow",
            effective: in_force(&["R1"], "A", unpinned()),
            bundle: &["R2"],
            instances: vec![a.clone(), b.clone()],
            accepted: unpinned(),
            steps: vec![
                (
                    Stage::WidenValidation,
                    Change::Validation,
                    "A",
                    vec![r1.clone(), r2.clone()],
                    Some(Cause::TrustBundleChanged),
                ),
                (
                    Stage::Rollover,
                    Change::Presentation,
                    "B",
                    vec![r1.clone(), r2.clone()],
                    None,
                ),
                (
                    Stage::NarrowValidation,
                    Change::Validation,
                    "B",
                    vec![r2.clone()],
                    Some(Cause::TrustBundleChanged),
                ),
            ],
            held: false,
        },
        Case {
            name: "pinned issuers trust no anchor: a bundle change publishes nothing",
            effective: in_force(&[], "A", by_name(CN, &["R1"])),
            bundle: &["R2"],
            instances: vec![a.clone()],
            accepted: by_name(CN, &["R1"]),
            steps: vec![],
            held: false,
        },
        Case {
            name: "by thumbprint: a bundle change publishes nothing",
            effective: in_force(&[], "A", by_thumbprint(&["A"])),
            bundle: &["R2"],
            instances: vec![a.clone()],
            accepted: by_thumbprint(&["A"]),
            steps: vec![],
            held: false,
        },
    ];
    for case in cases {
        let instances: Vec<&CertificateFacts> = case.instances.iter().collect();
        let store = store(case.bundle, &instances);
        let plan = plan(Some(&case.effective), &desired(case.accepted.clone()), &store, now());
        assert_eq!(plan.blocked, None, "{}", case.name);
        let steps: Vec<Step> = plan
            .pending()
            .iter()
            .map(|r| {
                let presented = if r.presented == tp("A") { "A" } else { "B" };
                (
                    r.stage.unwrap(),
                    r.change.unwrap(),
                    presented,
                    labels(&r.anchors),
                    r.cause,
                )
            })
            .collect();
        assert_eq!(steps, case.steps, "{}", case.name);
        // Each revision judged by its own anchors, against the bundle of now.
        assert_eq!(check_invariant(&plan.revisions, &store), Ok(()), "{}", case.name);
        match (&plan.held, case.held) {
            (None, false) => {}
            (Some(held), true) => {
                assert_eq!(held.reason, BlockReason::TrustAnchorInUse, "{}", case.name);
                for named in [tp("R1"), tp("A")] {
                    assert!(held.message.contains(named.as_str()), "{}: {}", case.name, held.message);
                }
            }
            (held, _) => panic!("{}: held {held:?}", case.name),
        }
    }
    // Dropping the old root while A is presented is what the invariant refuses.
    let walked = plan(
        Some(&in_force(&["R1", "R2"], "A", unpinned())),
        &desired(unpinned()),
        &store(&["R2"], &[&a]),
        now(),
    );
    let mut dropped = walked.revisions[0].clone();
    dropped.revision += 1;
    dropped.anchors = vec![tp("R2")];
    let unsafe_step = [walked.revisions[0].clone(), dropped];
    assert_eq!(
        check_invariant(&unsafe_step, &store(&["R2"], &[&a])).map_err(|b| b.reason),
        Err(BlockReason::UnsafePlan)
    );
}
