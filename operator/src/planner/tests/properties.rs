//! Properties of every plan over random stores, effective states and desired
//! declarations (docs/planner.md).

use proptest::prelude::*;

use super::*;
use crate::rules::{ClientThumbprint, Clients};

const NAMES: [&str; 2] = ["a.example", "b.example"];
/// The issuing CAs: CA1 under root R1, CA2 under root R2, CA3 a root itself.
const CAS: [&str; 3] = ["CA1", "CA2", "CA3"];
/// What a trust bundle may hold: the roots, a root that issues, an intermediate.
const ANCHORS: [&str; 4] = ["R1", "R2", "CA3", "CA1"];

/// Every CA is known (the store's chains carry them); `anchors` are trusted.
fn trust(anchors: &[usize]) -> TrustBundle {
    let root = |label: &str| facts(label).cn(label).ca().self_signed().build();
    let cas = [
        root("R1"),
        root("R2"),
        root("CA3"),
        facts("CA1").cn("CA1").ca().issuer("R1").build(),
        facts("CA2").cn("CA2").ca().issuer("R2").build(),
    ];
    let anchored = |ca: &CertificateFacts| anchors.iter().any(|a| tp(ANCHORS[*a]) == ca.thumbprint);
    let (anchors, others): (Vec<_>, Vec<_>) = cas.into_iter().partition(anchored);
    TrustBundle::with_authorities(anchors, others)
}

fn instance(index: usize, (cn, issuer, san, start, days, key): (usize, usize, bool, i64, i64, u8)) -> CertificateFacts {
    let label = format!("I{index}");
    let mut builder = facts(&label).cn(NAMES[cn]);
    if san {
        builder = builder.dns(NAMES[1 - cn]);
    }
    builder = match (CAS.get(issuer), issuer) {
        (Some(ca), _) => builder.issuer(ca),
        (None, 3) => builder.self_signed(),
        // Issued by a CA nobody has: its chain cannot be built.
        (None, _) => builder.unknown_issuer("CN=Elsewhere"),
    };
    let day = |d: i64| {
        Timestamp::from_second(ts("2026-01-01T00:00:00Z").as_second() + d * 86_400)
            .unwrap()
            .to_string()
    };
    let state = match key {
        0 => PrivateKeyState::Missing,
        1 => PrivateKeyState::Mismatch,
        _ => PrivateKeyState::Matches,
    };
    let serial = format!("{:02X}", index + 0x10);
    builder
        .valid(&day(start), &day(start + days))
        .key(state)
        .serial(&serial)
        .build()
}

fn instances() -> impl Strategy<Value = Vec<CertificateFacts>> {
    prop::collection::vec(
        (0..2usize, 0..5usize, any::<bool>(), 0..200i64, 20..400i64, 0..8u8),
        1..7,
    )
    .prop_map(|params| params.into_iter().enumerate().map(|(i, p)| instance(i, p)).collect())
}

/// Up to two thumbprints from the store (or unknown ones) and up to two names.
fn accepted(store_size: usize) -> impl Strategy<Value = Accepted> {
    let thumbprints = prop::collection::vec(0..store_size + 1, 0..=2);
    let names = prop::collection::vec((0..2usize, prop::collection::vec(0..3usize, 0..=2)), 0..=2);
    (thumbprints, names).prop_map(|(thumbprints, names)| {
        let thumbprints = thumbprints.into_iter().map(|i| tp(&format!("I{i}")));
        let mut rules: Vec<CommonNameRule> = Vec::new();
        for (name, pins) in names {
            if rules.iter().all(|r| r.name != NAMES[name]) {
                rules.push(CommonNameRule::new(NAMES[name], pins.into_iter().map(|p| tp(CAS[p]))));
            }
        }
        Accepted::new(thumbprints, rules)
    })
}

#[derive(Debug, Clone)]
struct Case {
    store: Store,
    effective: Effective,
    desired: Desired,
}

/// Client allow-lists drawn from three thumbprints, with admin flags.
fn clients() -> impl Strategy<Value = Clients> {
    prop::collection::vec((0..3usize, any::<bool>()), 0..=3).prop_map(|picks| {
        let mut list: Vec<ClientThumbprint> = Vec::new();
        for (i, admin) in picks {
            if list.iter().all(|c| c.thumbprint != tp(&format!("C{i}"))) {
                list.push(ClientThumbprint {
                    thumbprint: tp(&format!("C{i}")),
                    is_admin: admin,
                });
            }
        }
        list.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
        Clients {
            thumbprints: list,
            common_names: vec![],
        }
    })
}

fn cases() -> impl Strategy<Value = Case> {
    (
        instances(),
        (
            prop::collection::vec(0..ANCHORS.len(), 0..=3),
            prop::collection::vec(prop_oneof![2 => 0..16usize, 1 => Just(14), 3 => Just(15)], 0..=1),
            // The anchors members trust now, against the bundle's (see below).
            (0..12u8, 0..ANCHORS.len(), any::<prop::sample::Index>(), 0..3u8),
        ),
        any::<bool>(),
        any::<prop::sample::Index>(),
        (clients(), clients()),
    )
        .prop_flat_map(|(instances, (trust, revoked, in_force), latest, pick, both_clients)| {
            let size = instances.len();
            (
                Just(instances),
                Just((trust, revoked, in_force)),
                Just(latest),
                Just(pick),
                accepted(size),
                accepted(size),
                Just(both_clients),
            )
        })
        .prop_filter("a desired declaration declares something", |(.., desired, _)| {
            !desired.is_empty()
        })
        .prop_map(
            |(
                instances,
                (trust, revoked, in_force),
                latest,
                pick,
                mut current,
                mut target,
                (current_clients, desired_clients),
            )| {
                let mut store = Store {
                    trust: self::trust(&trust),
                    instances,
                };
                // What members trust now: unknown, the bundle's, or what it
                // was before the bundle changed: an anchor since removed
                // (`other` more), one since added (one fewer), both.
                let (how, other, drop, through_bundle) = in_force;
                // A third of the cases accept a name through the bundle's
                // anchors before and after: where a bundle change matters.
                if through_bundle == 0 {
                    for rules in [&mut current, &mut target] {
                        let names = rules.common_names.iter().filter(|r| r.name != NAMES[0]).cloned();
                        let names: Vec<CommonNameRule> = names.chain([CommonNameRule::new(NAMES[0], [])]).collect();
                        *rules = Accepted::new(rules.thumbprints.clone(), names);
                    }
                }
                let bundle: Vec<Thumbprint> = store.trust.anchors().cloned().collect();
                let mut anchors = bundle.clone();
                if matches!(how, 2 | 3 | 8 | 9) && !anchors.is_empty() {
                    anchors.remove(drop.index(anchors.len()));
                }
                if matches!(how, 4..=9) {
                    anchors.push(tp(ANCHORS[other]));
                }
                if how >= 10 {
                    anchors = vec![tp(ANCHORS[other])];
                }
                anchors.sort();
                anchors.dedup();
                let anchors = (how != 0).then_some(anchors);
                // CRLs in force: some instances revoked by their issuers, or
                // (index 15) the intermediate CA1 by its root: a certificate
                // under it may be in use (tolerated, its path too) and is
                // then walked away from.
                let revoked_presented = revoked.contains(&14);
                let revoked_ca1 = revoked.contains(&15);
                for index in revoked {
                    match store.instances.get(index) {
                        Some(instance) => {
                            if let Some(issuer) = instance.issuer_thumbprint.clone() {
                                store.trust.revoke(issuer, instance.serial.clone());
                            }
                        }
                        None if index == 15 => store.trust.revoke(tp("R1"), "01"),
                        None => {}
                    }
                }
                // Members present something the effective rules admit under
                // the anchors in force (it may have been revoked since),
                // when there is one.
                let trusted = match &anchors {
                    Some(anchors) => store.trust.with_anchors(anchors),
                    None => store.trust.clone(),
                };
                let admitted: Vec<&CertificateFacts> = store
                    .instances
                    .iter()
                    .filter(|f| current.admits(f, &trusted.tolerating(std::slice::from_ref(&f.thumbprint))))
                    .collect();
                // With CA1 revoked, members present a certificate under it when one is admitted.
                let under_ca1 = admitted
                    .iter()
                    .find(|f| revoked_ca1 && f.issuer_thumbprint.as_ref() == Some(&tp("CA1")));
                let presented = under_ca1
                    .or_else(|| (!admitted.is_empty()).then(|| pick.get(&admitted)))
                    .map(|f| f.thumbprint.clone());
                // (index 14) the presented certificate itself, revoked since.
                if let (true, Some(presented)) = (revoked_presented, &presented) {
                    let facts = store.find(presented).expect("presented").clone();
                    if let Some(issuer) = facts.issuer_thumbprint {
                        store.trust.revoke(issuer, facts.serial);
                    }
                }
                let selection = if latest {
                    SelectionPolicy::LatestNotAfter
                } else {
                    SelectionPolicy::NewestNotBefore
                };
                Case {
                    effective: Effective {
                        revision: 3,
                        accepted: current,
                        presented,
                        clients: Some(current_clients),
                        tolerated: Vec::new(),
                        anchors,
                    },
                    desired: Desired {
                        present_by: PresentationForm::of(&target),
                        accepted: target,
                        selection,
                        clients: desired_clients,
                    },
                    store,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn every_plan_keeps_members_able_to_authenticate(case in cases()) {
        let plan = plan(Some(&case.effective), &case.desired, &case.store, now());
        match &plan.blocked {
            None => {
                assert_walkable(&plan, &case.store, &case.desired);
                let first = &plan.revisions[0];
                prop_assert_eq!(&first.accepted, &case.effective.accepted);
                prop_assert_eq!(first.revision, case.effective.revision);
                // Accept, then present, then narrow, whichever shape the plan has.
                let rank = |stage: Stage| match stage {
                    Stage::AddSecondary | Stage::WidenValidation | Stage::Rollover => 0,
                    Stage::SwitchToCommonName | Stage::SwitchPresentation => 1,
                    Stage::PinIssuers | Stage::NarrowValidation => 2,
                };
                let stages: Vec<Stage> = plan.pending().iter().map(|r| r.stage.unwrap()).collect();
                prop_assert!(stages.windows(2).all(|w| rank(w[0]) <= rank(w[1])), "stages out of order: {:?}", stages);
            }
            Some(blocked) => {
                prop_assert_ne!(blocked.reason, BlockReason::UnsafePlan, "{}", blocked.message);
                // Blocked only when the effective state or the goal cannot be had.
                // What members trust now: the anchors in force, when a name is unpinned.
                let unpinned = case.effective.accepted.common_names.iter().any(|r| r.issuer_thumbprints.is_empty());
                let in_force = match &case.effective.anchors {
                    Some(anchors) if unpinned => case.store.trust.with_anchors(anchors),
                    _ => case.store.trust.clone(),
                };
                let effective_fails = effective_state(&case.effective, case.desired.selection, &case.store, &in_force, now()).is_err();
                let goal_fails = goal(&case.desired, &case.store, now()).is_err();
                prop_assert!(effective_fails || goal_fails, "blocked without cause: {}", blocked);
            }
        }
    }

    /// The operator re-plans after every revision: from any revision of a plan,
    /// planning again gives the rest of it, stages included (no revision is
    /// repeated, skipped or renamed after a restart).
    #[test]
    fn replanning_from_any_revision_gives_the_rest_of_the_plan(case in cases()) {
        let plan = plan(Some(&case.effective), &case.desired, &case.store, now());
        if plan.blocked.is_some() {
            return Ok(());
        }
        for (k, revision) in plan.revisions.iter().enumerate().skip(1) {
            let resumed = Effective::published(revision);
            let again = super::plan(Some(&resumed), &case.desired, &case.store, now());
            prop_assert_eq!(&again.blocked, &None);
            prop_assert_eq!(&again.revisions[1..], &plan.revisions[k + 1..], "re-planned from revision {}", revision.revision);
        }
    }

    /// A rollback (`failureAction: Rollback`) plans from the revision in
    /// force back to the declaration in force before the change: from every
    /// revision of every plan, that walk back is safe all the way (each
    /// step against the one before it, the forward revisions included), or
    /// it is refused with the reason that makes it a point of no return —
    /// never an unsafe plan.
    #[test]
    fn from_every_revision_the_walk_back_is_safe_or_refused(case in cases()) {
        let plan = plan(Some(&case.effective), &case.desired, &case.store, now());
        if plan.blocked.is_some() {
            return Ok(());
        }
        let origin = origin(&case);
        for (k, revision) in plan.revisions.iter().enumerate().skip(1) {
            let back = super::plan(Some(&Effective::published(revision)), &origin, &case.store, now());
            match &back.blocked {
                None => {
                    assert_walkable(&back, &case.store, &origin);
                    let mut forward_and_back = plan.revisions[..=k].to_vec();
                    forward_and_back.extend(back.pending().iter().cloned());
                    prop_assert_eq!(check_invariant(&forward_and_back, &case.store), Ok(()));
                }
                Some(blocked) => prop_assert_ne!(blocked.reason, BlockReason::UnsafePlan, "{}", blocked.message),
            }
        }
    }

    #[test]
    fn planning_is_deterministic(case in cases()) {
        let once = plan(Some(&case.effective), &case.desired, &case.store, now());
        let again = plan(Some(&case.effective), &case.desired, &case.store, now());
        prop_assert_eq!(&once, &again);
        let mut reversed = case.store.clone();
        reversed.instances.reverse();
        prop_assert_eq!(&once, &plan(Some(&case.effective), &case.desired, &reversed, now()));
    }
}

/// The declaration in force before the change, as a rollback walks to it.
fn origin(case: &Case) -> Desired {
    Desired {
        present_by: PresentationForm::of(&case.effective.accepted),
        accepted: case.effective.accepted.clone(),
        selection: case.desired.selection,
        clients: case.effective.clients.clone().unwrap_or_default(),
    }
}

/// The rollback property must meet both outcomes: walks back, and points of
/// no return.
#[test]
fn the_generator_reaches_rollbacks_and_points_of_no_return() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = cases();
    let (mut back, mut refused) = (0, 0);
    for _ in 0..4000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let plan = plan(Some(&case.effective), &case.desired, &case.store, now());
        if plan.blocked.is_some() {
            continue;
        }
        for revision in plan.pending() {
            let walk = super::plan(
                Some(&Effective::published(revision)),
                &origin(&case),
                &case.store,
                now(),
            );
            match walk.blocked {
                None if walk.revisions.len() > 1 => back += 1,
                None => {}
                Some(_) => refused += 1,
            }
        }
    }
    println!("from 4000 cases' revisions: {back} walks back, {refused} points of no return");
    assert!(back > 300, "only {back} walks back");
    assert!(refused > 20, "only {refused} points of no return");
}

/// The generator must reach the interesting cases, or the properties say little.
#[test]
fn the_generator_reaches_plans_of_every_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = cases();
    let (mut walked, mut blocked, mut stages) = (0, 0, std::collections::BTreeSet::new());
    let (mut moved_away, mut moved_off_revoked_ca) = (0, 0);
    // Trust bundle changes: anchors added, removed, both (replaced), a removal held.
    let (mut added, mut removed, mut replaced, mut held) = (0, 0, 0, 0);
    let mut reasons: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for _ in 0..4000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let plan = plan(Some(&case.effective), &case.desired, &case.store, now());
        if plan.revisions.iter().any(|r| !r.tolerated.is_empty()) {
            moved_away += 1;
        }
        // Tolerated for a CA on its path (the intermediate CA1, revoked by R1), not itself.
        let under_revoked_ca = plan.revisions.iter().flat_map(|r| &r.tolerated).any(|tolerated| {
            let revoked = case
                .store
                .find(tolerated)
                .and_then(|f| case.store.trust.revoked_on_path(f));
            revoked.is_some_and(|revoked| &revoked != tolerated)
        });
        if under_revoked_ca {
            moved_off_revoked_ca += 1;
        }
        let bundle_stage = |stage: Stage| {
            plan.pending()
                .iter()
                .any(|r| r.cause == Some(Cause::TrustBundleChanged) && r.stage == Some(stage))
        };
        let (adds, removes) = (
            bundle_stage(Stage::WidenValidation),
            bundle_stage(Stage::NarrowValidation),
        );
        added += usize::from(adds);
        removed += usize::from(removes);
        replaced += usize::from(adds && removes);
        held += usize::from(plan.held.is_some());
        if let Some(b) = &plan.blocked {
            *reasons.entry(b.reason.to_string()).or_insert(0) += 1;
            blocked += 1;
        } else if plan.revisions.len() > 1 {
            walked += 1;
            stages.extend(plan.pending().iter().filter_map(|r| r.stage));
        }
    }
    println!(
        "from 4000 cases: {walked} plans walk, {moved_away} move off a revoked certificate, \
         {moved_off_revoked_ca} of them off one under a revoked CA; trust bundle: {added} add anchors, \
         {removed} remove some, {replaced} both, {held} hold a removal"
    );
    for (what, reached) in [
        ("add anchors", added),
        ("remove anchors", removed),
        ("replace anchors", replaced),
        ("hold a removal", held),
    ] {
        assert!(reached > 20, "only {reached} plans {what}");
    }
    // Trust refusals (untrusted roots, orphans, revocations) are blocked
    // cases of their own, so fewer plans walk than before they were generated.
    assert!(walked > 300, "only {walked} multi-revision plans ({blocked} blocked)");
    assert_eq!(stages.len(), 7, "stages reached: {stages:?}");
    assert!(
        moved_away > 20,
        "only {moved_away} plans move away from a revoked certificate"
    );
    assert!(
        moved_off_revoked_ca > 20,
        "only {moved_off_revoked_ca} plans move away from a certificate under a revoked CA"
    );
    for reason in ["UntrustedRoot", "ChainIncomplete", "CertificateRevoked"] {
        let reached = reasons.get(reason).copied().unwrap_or_default();
        assert!(reached > 20, "only {reached} plans blocked with {reason}: {reasons:?}");
    }
}
