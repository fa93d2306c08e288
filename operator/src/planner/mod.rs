//! The staged planner (docs/planner.md): from the effective declaration, the desired
//! one and the store's instances to the ordered revisions that get members from
//! one to the other without any two of them being unable to authenticate.
//!
//! Pure: `now` is a parameter, the store is data, the result is data.

mod spec;

use std::borrow::Cow;

use jiff::Timestamp;

use crate::blocked::{BlockReason, Blocked};
use crate::facts::{CertificateFacts, PrivateKeyState};
pub use crate::revision::{Cause, Change, Revision, Stage, State};
use crate::rules::{Accepted, Clients, CommonNameRule, PresentBy, Rejection, SelectionPolicy, TrustBundle, select};
use crate::thumbprint::Thumbprint;
pub use spec::effective_from_status;
pub(crate) use spec::{accepted_from, common_name};

/// Service Fabric keeps two thumbprint slots (`thumbprint`, `thumbprintSecondary`);
/// every revision fits them, so the effective declaration stays in that shape.
pub const THUMBPRINT_SLOTS: usize = 2;

/// The declaration's desired end state, validated and normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub accepted: Accepted,
    pub present_by: PresentationForm,
    pub selection: SelectionPolicy,
    pub clients: Clients,
}

/// How a declaration names the certificate members present. Service Fabric
/// allows one form per role; with common names declared, they win.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresentationForm {
    Thumbprints(Vec<Thumbprint>),
    CommonNames(Vec<String>),
}

impl PresentationForm {
    /// The form an accepted rule set implies.
    pub fn of(accepted: &Accepted) -> Self {
        if accepted.common_names.is_empty() {
            PresentationForm::Thumbprints(accepted.thumbprints.clone())
        } else {
            PresentationForm::CommonNames(accepted.common_names.iter().map(|r| r.name.clone()).collect())
        }
    }

    fn present_by(&self) -> PresentBy<'_> {
        match self {
            PresentationForm::Thumbprints(list) => PresentBy::Thumbprints(list),
            PresentationForm::CommonNames(names) => PresentBy::CommonNames(names.iter().map(String::as_str).collect()),
        }
    }
}

/// The effective declaration (what is in force), normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    pub revision: u64,
    pub accepted: Accepted,
    /// What members present now; when unknown, the presentation rule's choice.
    pub presented: Option<Thumbprint>,
    /// The client allow-lists in force; when unknown, the desired ones (nothing to stage).
    pub clients: Option<Clients>,
    /// Revoked certificates the revision in force tolerates.
    pub tolerated: Vec<Thumbprint>,
    /// The anchors members trust now; when unknown, the trust bundle's
    /// (nothing to stage).
    pub anchors: Option<Vec<Thumbprint>>,
}

impl Effective {
    /// What is in force once `revision` is published: planning resumes from it.
    pub fn published(revision: &Revision) -> Self {
        Self {
            revision: revision.revision,
            accepted: revision.accepted.clone(),
            presented: Some(revision.presented.clone()),
            clients: Some(revision.clients.clone()),
            tolerated: revision.tolerated.clone(),
            anchors: Some(revision.anchors.clone()),
        }
    }
}

/// The certificates a declaration's store holds, and its trust bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    pub instances: Vec<CertificateFacts>,
    pub trust: TrustBundle,
}

impl Store {
    pub fn find(&self, thumbprint: &Thumbprint) -> Option<&CertificateFacts> {
        self.instances.iter().find(|facts| facts.has_thumbprint(thumbprint))
    }
}

/// A plan: the revisions to walk, or why it is blocked. When blocked,
/// `revisions` holds revision 0 (the effective state) if it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub revisions: Vec<Revision>,
    pub blocked: Option<Blocked>,
    /// What waits once the revisions are walked: the removal of trust
    /// anchors that what members present still needs (`TrustAnchorInUse`).
    pub held: Option<Blocked>,
}

impl Plan {
    fn blocked(revisions: Vec<Revision>, blocked: Blocked) -> Self {
        Self {
            revisions,
            blocked: Some(blocked),
            held: None,
        }
    }

    /// Revisions after the effective one.
    pub fn pending(&self) -> &[Revision] {
        self.revisions.get(1..).unwrap_or_default()
    }
}

/// The declaration `revision` is in force with, as something to walk back
/// to (a rollback's destination).
pub fn desired_of(revision: &Revision, selection: SelectionPolicy) -> Desired {
    Desired {
        present_by: PresentationForm::of(&revision.accepted),
        accepted: revision.accepted.clone(),
        selection,
        clients: revision.clients.clone(),
    }
}

/// Whether a rollback from `revision` to `origin` is still possible: a
/// safe walk back exists; else why not (a point of no return).
pub fn walk_back(revision: &Revision, origin: &Desired, store: &Store, now: Timestamp) -> Result<(), Blocked> {
    match plan(Some(&Effective::published(revision)), origin, store, now).blocked {
        Some(blocked) => Err(blocked),
        None => Ok(()),
    }
}

/// Plans the walk from `effective` (or nothing in force yet) to `desired`.
pub fn plan(effective: Option<&Effective>, desired: &Desired, store: &Store, now: Timestamp) -> Plan {
    let Some(effective) = effective else {
        // Nothing in force: revision 0 is the desired state.
        return match goal(desired, store, now) {
            Ok(goal) => {
                let mut first = Revision {
                    revision: 0,
                    stage: None,
                    change: None,
                    presented: goal.thumbprint.clone(),
                    accepted: desired.accepted.clone(),
                    clients: desired.clients.clone(),
                    tolerated: Vec::new(),
                    anchors: Vec::new(),
                    cause: None,
                };
                if first.trusts_anchors() {
                    first.anchors = store.trust.anchors().cloned().collect();
                }
                Plan {
                    revisions: vec![first],
                    blocked: None,
                    held: None,
                }
            }
            Err(blocked) => Plan::blocked(Vec::new(), blocked),
        };
    };
    // Until a removal from the trust bundle is published, members trust the
    // anchors in force and the bundle's: the walk is planned and checked
    // under both, each revision then under its own.
    let current_clients = effective.clients.clone().unwrap_or_else(|| desired.clients.clone());
    let trusts_anchors = crate::revision::trusts_anchors(&effective.accepted, &current_clients);
    let anchors = Anchors::new(effective, trusts_anchors, &store.trust);
    let walking;
    let store = if anchors.walking == anchors.bundle {
        store
    } else {
        walking = Store {
            instances: store.instances.clone(),
            trust: store.trust.with_anchors(&anchors.walking),
        };
        &walking
    };
    // What is in force is judged by what members trust now (a copy of the
    // trust only when that differs from the walk's).
    let in_force: Cow<'_, TrustBundle> = if trusts_anchors && anchors.in_force != anchors.walking {
        Cow::Owned(store.trust.with_anchors(&anchors.in_force))
    } else {
        Cow::Borrowed(&store.trust)
    };
    let current = match effective_state(effective, desired.selection, store, &in_force, now) {
        Ok(state) => state,
        Err(blocked) => return Plan::blocked(Vec::new(), blocked),
    };
    let mut steps = Steps::new(effective.revision, current.clone());
    steps.revisions[0].clients = current_clients.clone();
    steps.revisions[0].tolerated = effective.tolerated.clone();
    let goal = match goal(desired, store, now) {
        Ok(goal) => goal,
        Err(blocked) => return Plan::blocked(steps.revisions, blocked),
    };
    let presented = store
        .find(&current.presented)
        .expect("effective_state checked the store");
    let target = State {
        presented: goal.thumbprint.clone(),
        accepted: desired.accepted.clone(),
    };
    if current.accepted == target.accepted {
        steps.push(Stage::Rollover, target);
    } else if is_conversion(&current.accepted, &desired.accepted, presented, goal, &store.trust) {
        convert_to_common_name(&mut steps, presented, goal, &target, &store.trust);
    } else {
        widen_present_narrow(&mut steps, presented, goal, &target, &store.trust);
    }
    // Clients decide which revisions trust anchors; tolerance covers every
    // revision around the presentation it protects, the bundle's included.
    let revisions = stage_clients(steps.revisions, &current_clients, &desired.clients);
    let (revisions, held) = stage_bundle(revisions, &anchors, store);
    let revisions = stage_tolerance(revisions, store);
    match check_invariant(&revisions, store) {
        Ok(()) => Plan {
            revisions,
            blocked: None,
            held,
        },
        Err(blocked) => {
            let mut first: Vec<Revision> = revisions.into_iter().take(1).collect();
            first[0].clients = current_clients;
            Plan::blocked(first, blocked)
        }
    }
}

/// The anchor sets a plan walks between.
struct Anchors {
    /// What members trust now (revision 0's).
    in_force: Vec<Thumbprint>,
    /// `spec.trustBundle`'s now: what the last revision trusts.
    bundle: Vec<Thumbprint>,
    /// Both, for every revision between.
    walking: Vec<Thumbprint>,
}

impl Anchors {
    /// `trusts_anchors`: whether the rules in force trust anchors at all.
    fn new(effective: &Effective, trusts_anchors: bool, trust: &TrustBundle) -> Self {
        let bundle: Vec<Thumbprint> = trust.anchors().cloned().collect();
        let mut in_force = if trusts_anchors {
            effective.anchors.clone().unwrap_or_else(|| bundle.clone())
        } else {
            // Members trust no anchor now: nothing to stage away from.
            Vec::new()
        };
        // As sets (a status lists them in any order).
        in_force.sort();
        in_force.dedup();
        let mut walking: Vec<Thumbprint> = in_force.iter().chain(&bundle).cloned().collect();
        walking.sort();
        walking.dedup();
        Self {
            in_force,
            bundle,
            walking,
        }
    }
}

/// A trust bundle change reaches members in stages (docs/trust.md), like
/// a declaration change: anchors added are trusted at once, by a widening
/// revision of their own; anchors removed stay trusted through the walk and
/// are dropped last, by a narrowing revision of their own, once what members
/// present no longer needs them. Until then the removal is held (`held`).
/// Revisions that trust no anchor (every name pinned) carry none.
fn stage_bundle(mut revisions: Vec<Revision>, anchors: &Anchors, store: &Store) -> (Vec<Revision>, Option<Blocked>) {
    let of = |revision: &Revision, set: &[Thumbprint]| {
        if revision.trusts_anchors() {
            set.to_vec()
        } else {
            Vec::new()
        }
    };
    revisions[0].anchors = of(&revisions[0], &anchors.in_force);
    for revision in &mut revisions[1..] {
        revision.anchors = of(revision, &anchors.walking);
    }
    let first = &revisions[0];
    if first.trusts_anchors() && first.anchors != anchors.walking {
        let widen = Revision {
            stage: Some(Stage::WidenValidation),
            change: Some(Change::Validation),
            anchors: anchors.walking.clone(),
            cause: Some(Cause::TrustBundleChanged),
            ..first.clone()
        };
        revisions.insert(1, widen);
    }
    let last = revisions.last().expect("revision 0");
    let mut held = None;
    if last.trusts_anchors() && last.anchors != anchors.bundle {
        let narrow = Revision {
            stage: Some(Stage::NarrowValidation),
            change: Some(Change::Validation),
            anchors: anchors.bundle.clone(),
            cause: Some(Cause::TrustBundleChanged),
            ..last.clone()
        };
        match check_invariant(&[last.clone(), narrow.clone()], store) {
            Ok(()) => revisions.push(narrow),
            Err(_) => held = Some(anchor_in_use(last, anchors, store)),
        }
    }
    (renumber(revisions), held)
}

/// Why the anchors `last` trusts beyond the bundle cannot be dropped yet:
/// the certificate it presents chains to one of them.
fn anchor_in_use(last: &Revision, anchors: &Anchors, store: &Store) -> Blocked {
    let removed: Vec<&str> = last
        .anchors
        .iter()
        .filter(|a| !anchors.bundle.contains(a))
        .map(Thumbprint::as_str)
        .collect();
    let root = store
        .find(&last.presented)
        .map(|presented| store.trust.with_anchors(&last.anchors).path(presented).end);
    let needs = match root {
        Some(crate::trust::PathEnd::Anchor(root)) => format!("chains to {root}"),
        _ => "needs them".to_owned(),
    };
    Blocked::new(
        BlockReason::TrustAnchorInUse,
        format!(
            "spec.trustBundle: the removal of anchor {} is held: certificate {}, which members present, {needs}; \
             put a certificate issued under an anchor the bundle keeps in the store (renew its source Secret; \
             the presentation rule must choose it) and members are moved to it before the anchor is dropped",
            removed.join(", "),
            last.presented,
        ),
    )
}

/// A revoked certificate in use is moved away from without cutting anyone
/// off: revocation is tolerated for it by a validation revision of its own
/// (widen), while it is presented and by the revision that presents the
/// next (present), and dropped by the next validation change or a revision
/// of its own (narrow). Once dropped, members enforce the CRL for it too.
fn stage_tolerance(revisions: Vec<Revision>, store: &Store) -> Vec<Revision> {
    let first = &revisions[0];
    let moving_away = store
        .find(&first.presented)
        .filter(|presented| store.trust.revoked_on_path(presented).is_some())
        .map(|presented| presented.thumbprint.clone());
    let wanted = |index: usize| -> Vec<Thumbprint> {
        match &moving_away {
            Some(revoked) if revisions[index].presented == *revoked || revisions[index - 1].presented == *revoked => {
                vec![revoked.clone()]
            }
            _ => Vec::new(),
        }
    };
    let mut out = vec![first.clone()];
    for (index, revision) in revisions.iter().enumerate().skip(1) {
        let want = wanted(index);
        let mut next = revision.clone();
        let last = out.last().expect("revision 0");
        if next.change == Some(Change::Presentation) && last.tolerated != want {
            // Tolerance is validation: its own revision, before the presentation.
            let stage = if want.len() > last.tolerated.len() {
                Stage::WidenValidation
            } else {
                Stage::NarrowValidation
            };
            out.push(Revision {
                stage: Some(stage),
                change: Some(Change::Validation),
                tolerated: want.clone(),
                ..last.clone()
            });
        }
        next.tolerated = want;
        out.push(next);
    }
    let last = out.last().expect("revision 0");
    if !last.tolerated.is_empty() && moving_away.as_ref().is_none_or(|r| *r != last.presented) {
        out.push(Revision {
            stage: Some(Stage::NarrowValidation),
            change: Some(Change::Validation),
            tolerated: Vec::new(),
            ..last.clone()
        });
    }
    renumber(out)
}

/// Numbers revisions on from revision 0's.
fn renumber(mut revisions: Vec<Revision>) -> Vec<Revision> {
    let base = revisions[0].revision;
    for (offset, revision) in (0u64..).zip(revisions.iter_mut()) {
        revision.revision = base + offset;
    }
    revisions
}

/// Client allow-lists ride along with the members' revisions: additions take
/// effect first (with, or in a revision before, the first change), removals
/// only with the last validation change, after the presentation they protect.
fn stage_clients(mut revisions: Vec<Revision>, current: &Clients, desired: &Clients) -> Vec<Revision> {
    let widened = current.union(desired);
    let last = revisions.len() - 1;
    for (index, revision) in revisions.iter_mut().enumerate() {
        revision.clients = match index {
            0 => current.clone(),
            i if i == last && revision.change == Some(Change::Validation) => desired.clone(),
            _ => widened.clone(),
        };
    }
    // When there is no change yet, or the first one presents, the additions go
    // out in a revision of their own, right after revision 0.
    let first_presents = revisions.get(1).is_none_or(|r| r.change != Some(Change::Validation));
    if widened != *current && first_presents {
        let first = &revisions[0];
        let widen = Revision {
            revision: first.revision + 1,
            stage: Some(Stage::WidenValidation),
            change: Some(Change::Validation),
            presented: first.presented.clone(),
            accepted: first.accepted.clone(),
            clients: widened.clone(),
            tolerated: first.tolerated.clone(),
            anchors: first.anchors.clone(),
            cause: None,
        };
        revisions.insert(1, widen);
    }
    let tail = revisions.last().expect("revision 0");
    if tail.clients != *desired {
        revisions.push(Revision {
            revision: tail.revision + 1,
            stage: Some(Stage::NarrowValidation),
            change: Some(Change::Validation),
            presented: tail.presented.clone(),
            accepted: tail.accepted.clone(),
            clients: desired.clone(),
            tolerated: tail.tolerated.clone(),
            anchors: tail.anchors.clone(),
            cause: None,
        });
    }
    renumber(revisions)
}

/// The effective state, with its presented certificate resolved in the
/// store and judged by what members trust now (`trust`).
fn effective_state(
    effective: &Effective,
    selection: SelectionPolicy,
    store: &Store,
    trust: &TrustBundle,
    now: Timestamp,
) -> Result<State, Blocked> {
    let presented = match &effective.presented {
        Some(thumbprint) => store.find(thumbprint).ok_or_else(|| {
            Blocked::new(
                BlockReason::ThumbprintNotInStore,
                format!("status.effective.presented: certificate {thumbprint} is not in the store"),
            )
        })?,
        None => {
            // The presentation rule, among what the effective rules admit:
            // certshift never had members present anything else.
            let admitted = Store {
                instances: store
                    .instances
                    .iter()
                    .filter(|facts| effective.accepted.admits(facts, trust))
                    .cloned()
                    .collect(),
                trust: trust.clone(),
            };
            let form = PresentationForm::of(&effective.accepted);
            let selected = select_with_reasons(&form, selection, &admitted, now).map_err(|blocked| {
                Blocked::new(blocked.reason, format!("effective declaration: {}", blocked.message))
            })?;
            store.find(&selected.thumbprint).expect("selected from the store")
        }
    };
    // A presented certificate revoked since is what members are moving away
    // from: in force all the same.
    let tolerant = trust.tolerating(std::slice::from_ref(&presented.thumbprint));
    if !effective.accepted.admits(presented, &tolerant) {
        return Err(Blocked::new(
            BlockReason::InvalidEffectiveState,
            format!(
                "status.effective: the presented certificate {} is not accepted by the effective declaration",
                presented.thumbprint
            ),
        ));
    }
    Ok(State {
        presented: presented.thumbprint.clone(),
        accepted: effective.accepted.clone(),
    })
}

/// The certificate the desired declaration's presentation rule selects,
/// refused when the desired validation rules would reject it (the guard
/// Service Fabric lacks).
pub fn goal<'a>(desired: &Desired, store: &'a Store, now: Timestamp) -> Result<&'a CertificateFacts, Blocked> {
    let goal = select_with_reasons(&desired.present_by, desired.selection, store, now)?;
    desired.accepted.check(goal, &store.trust, now).map_err(|rejection| {
        let reason = match rejection {
            Rejection::ChainIncomplete { .. } => BlockReason::ChainIncomplete,
            Rejection::UntrustedRoot { .. } => BlockReason::UntrustedRoot,
            Rejection::Revoked { .. } => BlockReason::CertificateRevoked,
            Rejection::ChainNotTimeValid { .. } => BlockReason::ChainNotTimeValid,
            Rejection::Expired => BlockReason::CertificateExpired,
            Rejection::NotYetValid => BlockReason::CertificateNotYetValid,
            // A certificate selected by a declared name or thumbprint that the
            // same declaration rejects can only fail on its issuer.
            Rejection::IssuerNotPinned { .. } | Rejection::NotDeclared => BlockReason::IssuerNotPinned,
        };
        Blocked::new(reason, format!("{}; it stays unpresented", rejection.describe(goal)))
    })?;
    Ok(goal)
}

/// The presentation rule with a reason when it selects nothing, checked in
/// order: not found, expired (or not yet valid), private key missing.
fn select_with_reasons<'a>(
    form: &PresentationForm,
    selection: SelectionPolicy,
    store: &'a Store,
    now: Timestamp,
) -> Result<&'a CertificateFacts, Blocked> {
    let by = form.present_by();
    let mut candidates: Vec<&CertificateFacts> = store.instances.iter().filter(|facts| by.matches(facts)).collect();
    // Messages list candidates; keep them independent of the store's order.
    candidates.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
    if candidates.is_empty() {
        return Err(match form {
            PresentationForm::Thumbprints(list) => Blocked::new(
                BlockReason::ThumbprintNotInStore,
                format!(
                    "no certificate in the store has thumbprint {}",
                    list.iter().map(Thumbprint::as_str).collect::<Vec<_>>().join(" or ")
                ),
            ),
            PresentationForm::CommonNames(names) => Blocked::new(
                BlockReason::GoalCertificateNotFound,
                format!("no certificate in the store has subject CN {}", quoted(names)),
            ),
        });
    }
    // A defective certificate is never presented, whatever its dates.
    let sound: Vec<&CertificateFacts> = candidates.iter().copied().filter(|c| c.defect().is_none()).collect();
    if sound.is_empty() {
        let first = candidates[0];
        let defect = first.defect().expect("every candidate is defective");
        return Err(Blocked::new(defect.into(), defect.describe(first)));
    }
    // Nor a revoked one.
    let unrevoked: Vec<&CertificateFacts> = sound
        .iter()
        .copied()
        .filter(|c| store.trust.revoked_on_path(c).is_none())
        .collect();
    if unrevoked.is_empty() {
        let first = sound[0];
        let revoked = store.trust.revoked_on_path(first).expect("every candidate is revoked");
        let detail = if revoked == first.thumbprint {
            format!(
                "{} (serial {}) is revoked by its issuer's CRL",
                first.thumbprint, first.serial
            )
        } else {
            format!("{}: CA {revoked} on its path is revoked", first.thumbprint)
        };
        return Err(Blocked::new(
            BlockReason::CertificateRevoked,
            format!(
                "every matching certificate is revoked: {detail}; put another one in the store (renew its source Secret, or add an ObservedCertificate) and members are moved to it"
            ),
        ));
    }
    let candidates = unrevoked;
    let timely: Vec<&CertificateFacts> = candidates.iter().copied().filter(|c| c.is_time_valid(now)).collect();
    if timely.is_empty() {
        let latest = candidates.iter().max_by_key(|c| c.not_after).expect("not empty");
        return Err(if candidates.iter().all(|c| c.not_after < now) {
            Blocked::new(
                BlockReason::CertificateExpired,
                format!(
                    "every matching certificate has expired (latest {} notAfter={})",
                    latest.thumbprint, latest.not_after
                ),
            )
        } else {
            let soonest = candidates
                .iter()
                .filter(|c| c.not_before > now)
                .min_by_key(|c| c.not_before)
                .expect("some are not yet valid");
            Blocked::new(
                BlockReason::CertificateNotYetValid,
                format!(
                    "no matching certificate is valid yet (earliest {} notBefore={})",
                    soonest.thumbprint, soonest.not_before
                ),
            )
        });
    }
    select(timely.iter().copied(), selection, now).ok_or_else(|| {
        let detail = timely
            .iter()
            .map(|c| {
                let state = match c.private_key {
                    PrivateKeyState::Missing => "no private key",
                    PrivateKeyState::Mismatch => "private key does not match",
                    PrivateKeyState::Unreadable => "private key unreadable",
                    PrivateKeyState::Matches => "usable",
                };
                format!("{} ({state})", c.thumbprint)
            })
            .collect::<Vec<_>>()
            .join(", ");
        Blocked::new(
            BlockReason::PrivateKeyMissing,
            format!("no valid matching certificate has a usable private key: {detail}"),
        )
    })
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(" or ")
}

/// The Service Fabric conversion's shape (AddSecondary, SwitchToCommonName,
/// PinIssuers) serves every change to common names only that must carry a
/// certificate by thumbprint: from a declaration by thumbprint, part-way
/// through a conversion, or when the names alone cannot accept both presented
/// certificates. (Every revision of such a plan keeps a thumbprint until the
/// switch, so re-planning from any of them takes this shape again.)
fn is_conversion(
    current: &Accepted,
    desired: &Accepted,
    presented: &CertificateFacts,
    goal: &CertificateFacts,
    trust: &TrustBundle,
) -> bool {
    if !desired.thumbprints.is_empty() || desired.common_names.is_empty() {
        return false;
    }
    if !current.thumbprints.is_empty() {
        return true;
    }
    let by_name = Accepted::new([], merge_common_names(&current.common_names, &desired.common_names));
    presented.thumbprint != goal.thumbprint && (!by_name.admits(presented, trust) || !by_name.admits(goal, trust))
}

/// AddSecondary → SwitchToCommonName → PinIssuers (docs/planner.md).
fn convert_to_common_name(
    steps: &mut Steps,
    presented: &CertificateFacts,
    goal: &CertificateFacts,
    target: &State,
    trust: &TrustBundle,
) {
    let current = steps.last().clone();
    // AddSecondary: accept the goal by thumbprint next to what is presented.
    let with_goal = fit_slots(
        &current.accepted.thumbprints,
        &[&presented.thumbprint, &goal.thumbprint],
    );
    let added = Accepted::new(with_goal.iter().cloned(), current.accepted.common_names.iter().cloned());
    steps.push(Stage::AddSecondary, state(&presented.thumbprint, &added));
    steps.push(Stage::AddSecondary, state(&goal.thumbprint, &added));

    // SwitchToCommonName: the names, unpinned (trusted through the bundle),
    // unless the goal only passes with its pins (a self-signed goal, say).
    let switched: Vec<CommonNameRule> = target
        .accepted
        .common_names
        .iter()
        .map(|rule| {
            let unpinned = CommonNameRule::new(rule.name.clone(), []);
            let goal_rule = rule.matches_name(goal);
            if goal_rule && !Accepted::new([], [unpinned.clone()]).admits(goal, trust) {
                rule.clone()
            } else {
                unpinned
            }
        })
        .collect();
    // Names accepted now that the target drops stay until the last narrowing.
    let mut switched = switched;
    for rule in &added.common_names {
        if !switched.iter().any(|s| s.name.eq_ignore_ascii_case(&rule.name)) {
            switched.push(rule.clone());
        }
    }
    let both = Accepted::new(added.thumbprints.iter().cloned(), switched.iter().cloned());
    steps.push(Stage::SwitchToCommonName, state(&goal.thumbprint, &both));
    steps.push(
        Stage::SwitchToCommonName,
        state(&goal.thumbprint, &Accepted::new([], switched)),
    );

    // PinIssuers: narrow to the desired issuers.
    let unpinned = steps.last().accepted;
    steps.push(narrowing_stage(&unpinned, &target.accepted), target.clone());
}

/// Widen validation to accept both presented certificates, switch
/// presentation, narrow to the desired declaration.
fn widen_present_narrow(
    steps: &mut Steps,
    presented: &CertificateFacts,
    goal: &CertificateFacts,
    target: &State,
    trust: &TrustBundle,
) {
    let current = steps.last().accepted.clone();
    if presented.thumbprint == goal.thumbprint {
        // Presentation stays: one validation revision is safe, as both rule sets
        // accept the presented certificate.
        steps.push(validation_stage(&current, &target.accepted), target.clone());
        return;
    }
    let common_names = merge_common_names(&current.common_names, &target.accepted.common_names);
    let by_name = Accepted::new([], common_names.iter().cloned());
    // Thumbprints carry what the names do not admit, then the desired ones,
    // then the current ones, within the two slots.
    let mut needed: Vec<&Thumbprint> = Vec::new();
    if !by_name.admits(presented, trust) {
        needed.push(&presented.thumbprint);
    }
    if !by_name.admits(goal, trust) {
        needed.push(&goal.thumbprint);
    }
    let preferred: Vec<Thumbprint> = target
        .accepted
        .thumbprints
        .iter()
        .chain(&current.thumbprints)
        .cloned()
        .collect();
    let thumbprints = fit_slots(&preferred, &needed);
    let widened = Accepted::new(thumbprints, common_names);
    steps.push(Stage::WidenValidation, state(&presented.thumbprint, &widened));
    // Presenting under the desired rules themselves is a rollover: that is
    // what re-planning from the widened revision would call it.
    let presenting = if widened == target.accepted {
        Stage::Rollover
    } else {
        Stage::SwitchPresentation
    };
    steps.push(presenting, state(&goal.thumbprint, &widened));
    steps.push(validation_stage(&widened, &target.accepted), target.clone());
}

/// Whether `to` accepts everything `from` does, rule by rule.
fn widens(from: &Accepted, to: &Accepted) -> bool {
    from.thumbprints.iter().all(|t| to.thumbprints.contains(t))
        && from.common_names.iter().all(|rule| {
            to.common_name(&rule.name).is_some_and(|wider| {
                !wider.is_pinned()
                    || (rule.is_pinned()
                        && rule
                            .issuer_thumbprints
                            .iter()
                            .all(|i| wider.issuer_thumbprints.contains(i)))
            })
        })
}

/// The stage of a validation revision, from what it changes: the same change
/// gets the same name whichever revision a plan starts from.
fn validation_stage(from: &Accepted, to: &Accepted) -> Stage {
    if widens(from, to) {
        Stage::WidenValidation
    } else {
        narrowing_stage(from, to)
    }
}

/// Narrowing that only changes which issuers the names pin is PinIssuers,
/// whether it ends a conversion or moves to another PKI; anything else that
/// narrows is NarrowValidation. Both paths name it alike, so re-planning from
/// any revision names the rest of a plan the same way.
fn narrowing_stage(from: &Accepted, to: &Accepted) -> Stage {
    let names = |a: &Accepted| {
        a.common_names
            .iter()
            .map(|r| r.name.to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if from.thumbprints == to.thumbprints && names(from) == names(to) {
        Stage::PinIssuers
    } else {
        Stage::NarrowValidation
    }
}

/// Both sides' names; a name on both sides keeps the union of its pins, or is
/// unpinned if either side is.
fn merge_common_names(current: &[CommonNameRule], desired: &[CommonNameRule]) -> Vec<CommonNameRule> {
    let mut merged: Vec<CommonNameRule> = desired.to_vec();
    for rule in current {
        match merged.iter_mut().find(|m| m.name.eq_ignore_ascii_case(&rule.name)) {
            Some(existing) if existing.is_pinned() && rule.is_pinned() => {
                *existing = CommonNameRule::new(
                    existing.name.clone(),
                    existing
                        .issuer_thumbprints
                        .iter()
                        .chain(&rule.issuer_thumbprints)
                        .cloned(),
                );
            }
            Some(existing) => *existing = CommonNameRule::new(existing.name.clone(), []),
            None => merged.push(rule.clone()),
        }
    }
    merged
}

/// `needed` first, then `preferred` in order, at most [`THUMBPRINT_SLOTS`].
fn fit_slots(preferred: &[Thumbprint], needed: &[&Thumbprint]) -> Vec<Thumbprint> {
    let mut slots: Vec<Thumbprint> = Vec::with_capacity(THUMBPRINT_SLOTS);
    for thumbprint in needed.iter().copied().chain(preferred) {
        if slots.len() < THUMBPRINT_SLOTS && !slots.contains(thumbprint) {
            slots.push(thumbprint.clone());
        }
    }
    slots
}

fn state(presented: &Thumbprint, accepted: &Accepted) -> State {
    State {
        presented: presented.clone(),
        accepted: accepted.clone(),
    }
}

/// Accumulates revisions, skipping those that change nothing.
struct Steps {
    revisions: Vec<Revision>,
}

impl Steps {
    fn new(revision: u64, current: State) -> Self {
        Self {
            revisions: vec![Revision {
                revision,
                stage: None,
                change: None,
                presented: current.presented,
                accepted: current.accepted,
                clients: Default::default(),
                tolerated: Vec::new(),
                anchors: Vec::new(),
                cause: None,
            }],
        }
    }

    fn last(&self) -> State {
        self.revisions.last().expect("revision 0").state()
    }

    fn push(&mut self, stage: Stage, next: State) {
        let last = self.revisions.last().expect("revision 0");
        let change = match (last.presented == next.presented, last.accepted == next.accepted) {
            (true, true) => return,
            (false, true) => Change::Presentation,
            (true, false) => Change::Validation,
            (false, false) => unreachable!("a revision changes validation or presentation, never both"),
        };
        let revision = last.revision + 1;
        self.revisions.push(Revision {
            revision,
            stage: Some(stage),
            change: Some(change),
            presented: next.presented,
            accepted: next.accepted,
            clients: Default::default(),
            tolerated: Vec::new(),
            anchors: Vec::new(),
            cause: None,
        });
    }
}

/// docs/planner.md, for every adjacent pair (members may sit on either):
/// presented(r) is accepted by rules(r+1), and presented(r+1) by rules(r).
/// Acceptance here is the rules' (issuer and name), not the clock's: the
/// invariant is about rule changes, and must hold for an expiring certificate too.
pub fn check_invariant(revisions: &[Revision], store: &Store) -> Result<(), Blocked> {
    // What each revision tolerates; the one in force, its own presented
    // certificate too (it is in force, revoked since or not).
    let tolerated = |index: usize| -> Vec<Thumbprint> {
        let revision = &revisions[index];
        let mut tolerated = revision.tolerated.clone();
        if index == 0 {
            tolerated.push(revision.presented.clone());
        }
        tolerated
    };
    // Each revision judges with its own anchors (a bundle changes in stages).
    let trust: Vec<Cow<'_, TrustBundle>> = revisions.iter().map(|r| r.judging_by(&store.trust)).collect();
    for (index, pair) in revisions.windows(2).enumerate() {
        let (before, after) = (&pair[0], &pair[1]);
        for (cert, rules, judged) in [(&before.presented, after, index + 1), (&after.presented, before, index)] {
            let trust = trust[judged].tolerating(&tolerated(judged));
            let admitted = store
                .find(cert)
                .is_some_and(|facts| rules.accepted.admits(facts, &trust));
            if !admitted {
                return Err(Blocked::new(
                    BlockReason::UnsafePlan,
                    format!(
                        "revision {} would reject {cert}, presented during the adjacent revision",
                        rules.revision
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
