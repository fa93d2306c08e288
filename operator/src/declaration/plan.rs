//! Steps 1 and 2 of a decision: the plan and the gates. [`plan`] reads what
//! is published, plans from it to the spec and gates the next revision on
//! the members (paused, upgrade and stage timeouts, acknowledged, the
//! health check of `health`); the shell
//! probes the endpoints with the certificate [`Planned::preflight`] names,
//! and [`gate_on_preflight`] holds the revision when one refused it. The
//! planner runs once per reconcile, here.

use std::time::Duration;

use super::health::{self, Check};
use super::status::{Hold, secs};
use super::{ENDPOINT_PROBE_INTERVAL, MemberReport, StoreContents, World, acknowledged_time, spec};
use crate::blocked::{BlockReason, Blocked};
use crate::crd::{FailureAction, HealthStatus, RollbackStatus, UpgradeStatus};
use crate::duration;
use crate::outputs::{self, PresentedMaterial};
use crate::planner::{self, Effective};
use crate::revision::{Cause, Change, Revision, Stage};
use crate::thumbprint::Thumbprint;

/// What the plan and the gates say: the revision published, the one due
/// now (the candidate), those after it, and what holds the upgrade.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Nothing may be written: an output is someone else's, or cannot be made.
    pub no_writes: bool,
    pub published: Option<Revision>,
    pub candidate: Option<Revision>,
    /// Revisions after the published one (the candidate first, if any).
    pub pending: Vec<Revision>,
    pub hold: Option<Hold>,
    /// What members would present by the desired declaration, for the
    /// milestones, whatever holds the upgrade.
    pub goal: Option<Thumbprint>,
    pub report: MemberReport,
    pub password: Option<String>,
    /// When to look again, if a gate knows (a deadline, a probe interval).
    pub requeue: Option<Duration>,
    /// The published revision's health check, once its members acknowledged it.
    pub health: Option<HealthStatus>,
    /// The rollback of this generation's change, under way or done.
    pub rollback: Option<RollbackStatus>,
    /// The annotation values acted on (`status.upgrade.actedOn`).
    pub acted_on: Vec<String>,
}

/// The certificate to probe every endpoint with before publishing a
/// presentation revision (`docs/operator.md`, members).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preflight {
    pub revision: u64,
    pub presented: Thumbprint,
    pub material: PresentedMaterial,
}

/// Step 1: the plan and the gates of this world.
pub fn plan(world: &World) -> Planned {
    let mut planned = read(world);
    let (None, Ok(spec), Ok(contents)) = (&planned.hold, &world.spec, &world.store) else {
        return planned;
    };
    let previous = previous_upgrade(world);
    planned.acted_on = previous.acted_on.clone();
    // Rolling back, or rolled back: the walk goes to the origin, not the spec.
    planned.rollback = rollback_in_force(world, &spec.desired, &previous, &mut planned.acted_on);
    let target = match (&planned.rollback, &previous.origin) {
        (Some(_), Some(origin)) => match spec::origin_desired(origin, spec.desired.selection) {
            Ok(target) => target,
            Err(blocked) => {
                planned.hold = Some(Hold::Blocked(blocked));
                return planned;
            }
        },
        _ => spec.desired.clone(),
    };
    let plan = planner::plan(
        in_force(world, planned.published.as_ref()).as_ref(),
        &target,
        &contents.store,
        world.now,
    );
    planned.pending = plan.pending().to_vec();
    let held = plan.held;
    if let Some(blocked) = plan.blocked {
        planned.hold = Some(Hold::Blocked(blocked));
        return planned;
    }
    let Some(published) = planned.published.clone() else {
        // Nothing published: the first revision is what is in force (or, for a
        // declaration new to certshift, the desired state), numbered on.
        planned.candidate = Some(Revision {
            revision: previous_upgrade(world).revision + 1,
            stage: None,
            change: None,
            ..plan.revisions[0].clone()
        });
        return planned;
    };
    if planned.pending.is_empty()
        && let Some(revision) = trust_revision(world, contents, &published)
    {
        planned.pending.push(revision);
    }
    if planned.pending.is_empty() {
        walked(world, &spec.upgrade, &published, &previous, held, &mut planned);
    } else {
        gate(world, &spec.upgrade, &published, &mut planned);
    }
    fail(world, &spec.upgrade, &published, &previous, &mut planned);
    planned
}

/// Nothing left to publish: a rollback is done once every member has the
/// origin again; a change, once its last revision passed its health check.
/// Then what the plan holds (`held`: the removal of an anchor still in use).
fn walked(
    world: &World,
    upgrade: &spec::Upgrade,
    published: &Revision,
    previous: &UpgradeStatus,
    held: Option<Blocked>,
    planned: &mut Planned,
) {
    let members = planned.report.status(published.revision);
    let acknowledged = acknowledged_time(previous, published.revision, &members, world.now);
    match planned.rollback.as_mut() {
        Some(rollback) => {
            if acknowledged.is_some() {
                rollback.state = ROLLED_BACK.to_owned();
                planned.hold = Some(Hold::Blocked(rolled_back(rollback, previous)));
            } else {
                // A rollback's last revision is bounded like any other: a
                // member that never loads it is a person's to look at.
                planned.hold = await_members(world, upgrade, published, previous, &members, planned);
            }
        }
        // The last revision's health is checked too, until it passes once:
        // the change is complete when its members are healthy under it.
        None => {
            let passed = previous.revision == published.revision
                && previous.health.as_ref().is_some_and(|h| h.state == "Healthy");
            match acknowledged {
                Some(_) if passed => planned.health = previous.health.clone(),
                Some(acknowledged) => {
                    planned.hold = health_check(world, upgrade, published, acknowledged, planned).err();
                }
                None => planned.hold = await_members(world, upgrade, published, previous, &members, planned),
            }
        }
    }
    // Walked as far as is safe: the removal of an anchor still in use waits.
    if planned.hold.is_none() {
        planned.hold = held.map(Hold::Blocked);
    }
}

/// `status.upgrade.rollback.state` of a rollback under way, and done.
pub const ROLLING_BACK: &str = "RollingBack";
pub const ROLLED_BACK: &str = "RolledBack";
/// Set to a rolled-back generation, it is tried again.
pub const RETRY_ANNOTATION: &str = "certshift.io/retry";

/// The rollback the previous status records, while it holds: while the
/// spec asks for what was rolled back from, until `certshift.io/retry`
/// names the generation (each value acted on once, recorded in `acted_on`).
fn rollback_in_force(
    world: &World,
    desired: &planner::Desired,
    previous: &UpgradeStatus,
    acted_on: &mut Vec<String>,
) -> Option<RollbackStatus> {
    let rollback = previous.rollback.clone()?;
    if rollback.desired != desired_digest(desired) {
        return None;
    }
    let declaration = &world.declaration;
    let generation = declaration.metadata.generation.unwrap_or_default().to_string();
    let retry = declaration
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RETRY_ANNOTATION))
        .map(|v| v.trim().to_owned())
        .filter(|v| v.split('-').next() == Some(generation.as_str()));
    match retry {
        Some(retry) if !acted_on.contains(&format!("retry={retry}")) => {
            acted_on.push(format!("retry={retry}"));
            None
        }
        _ => Some(rollback),
    }
}

/// What identifies the desired declaration a rollback came from: its
/// accepted certificates, presentation and client allow-lists.
pub fn desired_digest(desired: &planner::Desired) -> String {
    use sha2::Digest as _;
    let text = format!(
        "{}|{:?}|{}",
        serde_json::to_string(&desired.accepted).unwrap_or_default(),
        desired.present_by,
        serde_json::to_string(&desired.clients).unwrap_or_default()
    );
    sha2::Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rolled_back(rollback: &RollbackStatus, previous: &UpgradeStatus) -> Blocked {
    let origin = previous.origin.as_ref().map_or(0, |o| o.revision);
    Blocked::new(
        BlockReason::RolledBack,
        format!(
            "rolled back to the declaration of revision {origin} (in force before generation {}'s change): {}; \
             not tried again until the spec asks for something else or the annotation {RETRY_ANNOTATION} \
             is set to {} (or {}-2, -3, … to retry again)",
            rollback.generation, rollback.message, rollback.generation, rollback.generation
        ),
    )
}

/// A failed revision (health check, stage or upgrade timeout) under
/// `failureAction: Rollback` rolls back; under `Manual` it holds, for the
/// annotation `certshift.io/action` to say `rollback` or `resume`.
fn fail(world: &World, upgrade: &spec::Upgrade, published: &Revision, previous: &UpgradeStatus, planned: &mut Planned) {
    let action = Action::of(world);
    // A person asks for a rollback of this generation's change: now, failed
    // or not, once per value of the annotation.
    if let Some((Action::Rollback, value)) = &action {
        let acted = format!("action={value}");
        if planned.rollback.is_none() && !planned.acted_on.contains(&acted) {
            let message = format!(
                "a rollback was asked for ({ACTION_ANNOTATION}) at revision {}",
                published.revision
            );
            roll_back(world, published, previous, planned, "Requested", message);
            if planned.rollback.is_some() {
                planned.acted_on.push(acted);
            }
        }
        return;
    }
    let Some(Hold::Blocked(failure)) = &planned.hold else {
        return;
    };
    let failed = matches!(
        failure.reason,
        BlockReason::HealthCheckFailed | BlockReason::StageTimeout | BlockReason::UpgradeTimeout
    );
    if !failed || planned.rollback.is_some() {
        return;
    }
    if let (Some((Action::Resume, _)), BlockReason::HealthCheckFailed) = (&action, failure.reason) {
        // Resumed: this revision's failed health check is passed over.
        planned.hold = None;
        planned.candidate = planned.pending.first().cloned();
        if let Some(health) = planned.health.as_mut() {
            health.state = "Resumed".to_owned();
        }
        return;
    }
    if upgrade.failure_action == FailureAction::Rollback {
        let (reason, message) = (
            failure.reason.to_string(),
            format!("revision {} failed: {}", published.revision, failure.message),
        );
        roll_back(world, published, previous, planned, &reason, message);
    }
}

/// The annotation a person (or `certshift rollback|resume NAME`) sets.
pub const ACTION_ANNOTATION: &str = "certshift.io/action";

/// What `certshift.io/action` asks: `rollback` (of the current generation's
/// change) or `resume` (past the revision held by a failed health check).
/// `rollback/<generation>` and `resume/<revision>` (what the CLI writes)
/// apply to that generation or revision only; a bare value stands. A
/// rollback is acted on once per value (`rollback/<generation>-2` asks again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Rollback,
    Resume,
}

impl Action {
    /// The action asked for, and the annotation's value.
    fn of(world: &World) -> Option<(Action, String)> {
        let meta = &world.declaration.metadata;
        let value = meta.annotations.as_ref()?.get(ACTION_ANNOTATION)?.trim();
        let (verb, scope) = value.split_once('/').map_or((value, None), |(v, s)| (v, Some(s)));
        let published = world
            .declaration
            .status
            .as_ref()
            .and_then(|s| s.upgrade.as_ref())
            .map(|u| u.revision);
        // `rollback/<generation>` or `rollback/<generation>-<n>` (the n-th ask).
        let applies = |current: Option<String>| {
            scope.is_none_or(|s| Some(s.split('-').next().unwrap_or_default().trim().to_owned()) == current)
        };
        let action = match verb {
            "rollback" if applies(meta.generation.map(|g| g.to_string())) => Action::Rollback,
            "resume" if applies(published.map(|r| r.to_string())) => Action::Resume,
            _ => return None,
        };
        Some((action, value.to_owned()))
    }
}

/// Plans back from `published` to the origin and publishes the first
/// revision back at once (Service Fabric rolls back regardless of health);
/// holds `RollbackImpossible` when no safe walk back exists, and changes
/// nothing when what is in force is the origin already.
fn roll_back(
    world: &World,
    published: &Revision,
    previous: &UpgradeStatus,
    planned: &mut Planned,
    reason: &str,
    message: String,
) {
    let (Some(origin), Ok(contents)) = (&previous.origin, &world.store) else {
        return;
    };
    let selection = world.spec.as_ref().map(|s| s.desired.selection).unwrap_or_default();
    let back = spec::origin_desired(origin, selection).map(|target| {
        planner::plan(
            Some(&Effective::published(published)),
            &target,
            &contents.store,
            world.now,
        )
    });
    let blocked = match &back {
        Err(blocked) => Some(blocked.clone()),
        Ok(plan) => plan.blocked.clone(),
    };
    if let Some(blocked) = blocked {
        planned.hold = Some(Hold::Blocked(Blocked::new(
            BlockReason::RollbackImpossible,
            format!(
                "{message}; rolling back to revision {} is not possible: {}: {}; held at revision {}",
                origin.revision, blocked.reason, blocked.message, published.revision
            ),
        )));
        return;
    }
    let pending = back.map(|plan| plan.pending().to_vec()).unwrap_or_default();
    if pending.is_empty() {
        // What is in force is the origin: nothing to roll back, the failure holds.
        return;
    }
    let desired = world
        .spec
        .as_ref()
        .map(|s| desired_digest(&s.desired))
        .unwrap_or_default();
    planned.rollback = Some(RollbackStatus {
        state: ROLLING_BACK.to_owned(),
        generation: world.declaration.metadata.generation.unwrap_or_default(),
        desired,
        failed_revision: published.revision,
        reason: reason.to_owned(),
        message,
        started_time: world.now,
    });
    planned.hold = None;
    planned.candidate = pending.first().cloned();
    planned.pending = pending;
}

/// What this world says before any planning: the published revision, the
/// members' report, and what blocks everything (the spec, the store, an
/// output that is someone else's, the PKCS#12 password).
fn read(world: &World) -> Planned {
    let foreign = super::foreign_output(world);
    let published = match (&foreign, &world.validation) {
        (None, Some(map)) => outputs::read_published(
            map.metadata.annotations.as_ref().unwrap_or(&Default::default()),
            map.data.as_ref().unwrap_or(&Default::default()),
        )
        .ok(),
        _ => None,
    };
    let password = super::pkcs12_password(world);
    let blocked = (world.spec.as_ref().err().cloned())
        .or_else(|| world.store.as_ref().err().cloned())
        .or_else(|| foreign.clone())
        .or_else(|| password.as_ref().err().cloned());
    let goal = match (&world.spec, &world.store) {
        (Ok(spec), Ok(contents)) => planner::goal(&spec.desired, &contents.store, world.now)
            .ok()
            .map(|g| g.thumbprint.clone()),
        _ => None,
    };
    Planned {
        no_writes: foreign.is_some() || password.is_err(),
        report: world.members.report(published.as_ref()),
        published,
        candidate: None,
        pending: Vec::new(),
        hold: blocked.map(Hold::Blocked),
        goal,
        password: password.ok().flatten(),
        requeue: None,
        health: None,
        rollback: None,
        acted_on: Vec::new(),
    }
}

/// What is in force: the published revision; without one (the ConfigMap is
/// gone or unreadable), what the status last recorded, so that members are
/// walked from there and never skipped past it.
fn in_force(world: &World, published: Option<&Revision>) -> Option<Effective> {
    match published {
        Some(published) => Some(Effective::published(published)),
        None => world
            .declaration
            .status
            .as_ref()
            .and_then(|s| s.effective.as_ref())
            .filter(|e| e.revision > 0)
            .and_then(|e| planner::effective_from_status(e).ok()),
    }
}

pub(super) fn previous_upgrade(world: &World) -> UpgradeStatus {
    let status = world.declaration.status.as_ref();
    status.and_then(|s| s.upgrade.clone()).unwrap_or_default()
}

/// What members judge with changed under the published revision, with
/// nothing else to publish: the CRLs in force, or the CA certificates that
/// build paths (`intermediates.crt`, from the trust bundle and the store).
/// Members get them with a validation revision of their own, never under a
/// revision they have acknowledged. No certificate presented now is revoked
/// (the plan would be moving away from it) and none loses its path (the
/// CAs in force stay known), so it cuts nobody off. Anchors are the
/// planner's: they change in stages.
fn trust_revision(world: &World, contents: &StoreContents, published: &Revision) -> Option<Revision> {
    let data = world.validation.as_ref().and_then(|m| m.data.as_ref());
    let file = |key: &str| data.and_then(|d| d.get(key)).map_or("", String::as_str);
    let intermediates = outputs::revision_trust(
        published,
        &contents.store.trust,
        &contents.store.instances,
        &contents.authorities,
    )
    .intermediates;
    let (cause, widens) = if file("crls.pem") != contents.crls {
        (Cause::RevocationChanged, false)
    } else if file("intermediates.crt") != intermediates {
        let had = file("intermediates.crt");
        (
            Cause::TrustBundleChanged,
            pem_blocks(had).all(|b| intermediates.contains(b)),
        )
    } else {
        return None;
    };
    Some(Revision {
        revision: published.revision + 1,
        stage: Some(if widens {
            Stage::WidenValidation
        } else {
            Stage::NarrowValidation
        }),
        change: Some(Change::Validation),
        cause: Some(cause),
        ..published.clone()
    })
}

/// The certificates of a PEM file, each with its armour.
fn pem_blocks(pem: &str) -> impl Iterator<Item = &str> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .filter(|block| block.contains(END))
        .map(str::trim)
}

/// The gates between the published revision and the next: paused, the
/// whole change within `upgradeTimeout`, every member acknowledged within
/// `stageTimeout`, then the revision's health check.
fn gate(world: &World, upgrade: &spec::Upgrade, published: &Revision, planned: &mut Planned) {
    let now = world.now;
    let previous = previous_upgrade(world);
    let members = planned.report.status(published.revision);
    // A rollback is not stopped by the change's own deadline.
    let started = previous
        .started_time
        .filter(|_| !previous.plan.is_empty() && planned.rollback.is_none());
    let acknowledged = acknowledged_time(&previous, published.revision, &members, now);
    planned.hold = if upgrade.paused {
        Some(Hold::Paused)
    } else if let Some(started) =
        started.filter(|s| now.as_second() > s.as_second().saturating_add(secs(upgrade.upgrade_timeout)))
    {
        Some(Hold::Blocked(Blocked::new(
            BlockReason::UpgradeTimeout,
            format!(
                "the change began at {started} and is not complete within upgradeTimeout ({}); held at revision {}",
                duration::format(upgrade.upgrade_timeout),
                published.revision
            ),
        )))
    } else if let Some(acknowledged) = acknowledged {
        // A rollback's revisions wait for the acknowledgements only: their
        // health is reported, and does not stop it.
        let checked = match planned.rollback {
            Some(_) => Ok(()),
            None => health_check(world, upgrade, published, acknowledged, planned),
        };
        match checked {
            Ok(()) => {
                planned.candidate = planned.pending.first().cloned();
                None
            }
            Err(hold) => Some(hold),
        }
    } else {
        await_members(world, upgrade, published, &previous, &members, planned).or(Some(Hold::WaitingForMembers))
    };
}

/// Members still loading `published`: `StageTimeout` once `stageTimeout`
/// has passed since its publication, else a look again at that deadline.
fn await_members(
    world: &World,
    upgrade: &spec::Upgrade,
    published: &Revision,
    previous: &UpgradeStatus,
    members: &crate::crd::MembersStatus,
    planned: &mut Planned,
) -> Option<Hold> {
    let hold = stage_timeout(world, upgrade, published, previous, members);
    if hold.is_none() {
        let published_at = published_at(previous, published, world.now);
        let deadline = published_at.as_second().saturating_add(secs(upgrade.stage_timeout));
        planned.requeue = Some(Duration::from_secs(
            (deadline - world.now.as_second()).unsigned_abs() + 1,
        ));
    }
    hold
}

fn published_at(previous: &UpgradeStatus, published: &Revision, now: jiff::Timestamp) -> jiff::Timestamp {
    previous
        .published_time
        .filter(|_| previous.revision == published.revision)
        .unwrap_or(now)
}

/// A revision whose members have not all acknowledged it within
/// `stageTimeout` (the last revision of a change too).
fn stage_timeout(
    world: &World,
    upgrade: &spec::Upgrade,
    published: &Revision,
    previous: &UpgradeStatus,
    members: &crate::crd::MembersStatus,
) -> Option<Hold> {
    let published_at = published_at(previous, published, world.now);
    let deadline = published_at.as_second().saturating_add(secs(upgrade.stage_timeout));
    (world.now.as_second() > deadline).then(|| {
        Hold::Blocked(Blocked::new(
            BlockReason::StageTimeout,
            format!(
                "revision {} was published at {published_at} and {} of {} members have not acknowledged it \
                 within stageTimeout ({}){}; held at revision {}",
                published.revision,
                members.total - members.converged,
                members.total,
                duration::format(upgrade.stage_timeout),
                laggards_said(&members.laggards, &world.members.pod_health),
                published.revision
            ),
        ))
    })
}

/// The first members that have not acknowledged, each with what its agent
/// reports when it says why (a reload that fails): `: pod/a (ReloadFailed:
/// …), pod/b and 3 more`.
fn laggards_said(
    laggards: &[String],
    health: &std::collections::BTreeMap<String, crate::outputs::ReportedHealth>,
) -> String {
    const NAMED: usize = 3;
    if laggards.is_empty() {
        return String::new();
    }
    let named: Vec<String> = laggards
        .iter()
        .take(NAMED)
        .map(|member| match health.get(member).filter(|h| !h.healthy) {
            Some(h) => format!("{member} ({}: {})", h.reason, h.message),
            None => member.clone(),
        })
        .collect();
    let more = laggards.len().saturating_sub(NAMED);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(": {}{more}", named.join(", "))
}

/// The health check of the published revision, acknowledged by every
/// member at `acknowledged` (`health::judge`): `Ok` once it passed, else
/// what holds the next revision.
fn health_check(
    world: &World,
    upgrade: &spec::Upgrade,
    published: &Revision,
    acknowledged: jiff::Timestamp,
    planned: &mut Planned,
) -> Result<(), Hold> {
    let members = world.members.health(published);
    let judged = health::judge(
        upgrade,
        published.revision,
        acknowledged,
        &members,
        &previous_upgrade(world),
        world.now,
    );
    planned.health = Some(judged.status);
    let revision = published.revision;
    let now = world.now;
    // Times, not durations left: a look before them writes nothing new.
    let at = |left: Duration| {
        let at = now
            .as_second()
            .saturating_add(i64::try_from(left.as_secs()).unwrap_or(i64::MAX));
        jiff::Timestamp::from_second(at).unwrap_or(now)
    };
    let hold = |reason, message, left| Err(Hold::Checking { reason, message, left });
    match judged.check {
        Check::Passed => Ok(()),
        Check::Waiting { left } => hold(
            "HealthCheckWaiting",
            format!(
                "revision {revision} acknowledged by every member; their health is checked at {} \
                 (healthCheckWaitDuration {})",
                at(left),
                duration::format(upgrade.health_check_wait)
            ),
            left,
        ),
        Check::Soaking { left } => hold(
            "Soaking",
            format!(
                "members healthy under revision {revision}; {} at {} if they stay so (healthCheckStableDuration {})",
                if planned.pending.is_empty() {
                    "the change is complete"
                } else {
                    "the next revision is published"
                },
                at(left),
                duration::format(upgrade.health_check_stable)
            ),
            left,
        ),
        Check::Retrying { left, message } => hold(
            "HealthCheckRetrying",
            format!(
                "{message}; retried until {} (healthCheckRetryTimeout {})",
                at(left),
                duration::format(upgrade.health_check_retry)
            ),
            left,
        ),
        Check::Failed { message } => Err(Hold::Blocked(Blocked::new(BlockReason::HealthCheckFailed, message))),
    }
}

impl Planned {
    /// The certificate the endpoints must accept, as a client, before the
    /// candidate is published: only for a presentation revision, and only
    /// when there are endpoints.
    pub fn preflight(&self, world: &World) -> Option<Preflight> {
        let candidate = self.candidate.as_ref().filter(|c| needs_preflight(world, c))?;
        let material = world.store.as_ref().ok()?.materials.get(&candidate.presented)?.clone();
        Some(Preflight {
            revision: candidate.revision,
            presented: candidate.presented.clone(),
            material,
        })
    }
}

fn needs_preflight(world: &World, candidate: &Revision) -> bool {
    candidate.change == Some(Change::Presentation) && !world.members.endpoints.is_empty()
}

/// Step 2: every endpoint must accept the certificate about to be
/// presented, as a client, before members are told to present it
/// (`world.preflight`, the probes of [`Planned::preflight`]).
pub fn gate_on_preflight(world: &World, planned: &mut Planned) {
    let Some(revision) = planned.candidate.as_ref().filter(|c| needs_preflight(world, c)) else {
        return;
    };
    let material = world
        .store
        .as_ref()
        .is_ok_and(|s| s.materials.contains_key(&revision.presented));
    // No key to probe with: said by the presentation output.
    if !material {
        return;
    }
    let Some(results) = &world.preflight else {
        // Not probed yet: probe, then decide.
        planned.candidate = None;
        planned.requeue = Some(ENDPOINT_PROBE_INTERVAL);
        return;
    };
    // Every endpoint must have been probed and have accepted.
    let refused = world.members.endpoints.iter().find_map(|(label, _)| {
        match results.iter().find(|(probed, _)| probed == label).map(|(_, r)| r) {
            Some(Ok(())) => None,
            Some(Err(err)) => Some(format!(
                "endpoint {label} does not accept {} as a client: {err}",
                revision.presented
            )),
            None => Some(format!(
                "endpoint {label} could not be probed with {}",
                revision.presented
            )),
        }
    });
    if let Some(message) = refused {
        planned.hold = Some(Hold::Blocked(Blocked::new(
            BlockReason::PeerRejectsCertificate,
            message,
        )));
        planned.candidate = None;
    }
}
