//! The ClusterCertificateDeclaration controller's decision, pure: from the
//! [`World`] one reconcile read (the declaration, its store, the outputs as
//! they are, the members, the pre-flight of the candidate revision, `now`) to
//! a [`Decision`]: the status to write (if it changed), the writes to make in
//! order ([`Effect`]), the events, and when to look again.
//!
//! A decision is five named, pure steps: [`plan()`] (the planner and the
//! gates of the members), [`gate_on_preflight`] (the endpoints' answer to
//! the next certificate), the writes, the status and events, the requeue.
//! The shell (`controller/declaration.rs`) gathers, plans once, probes the
//! endpoints with the certificate [`Planned::preflight`] names, calls
//! [`decide_planned`] and applies the effects: validation ConfigMap, then presentation Secret, then workload
//! stamps, then status. The ConfigMap is the record of what is published; a
//! restart between two writes is repaired from it.

pub mod health;
mod members;
pub mod memo;
pub mod plan;
pub mod spec;
mod status;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

pub use members::{MemberInputs, MemberReport, Workload, pod_health, pod_members, selects};
pub use plan::{Planned, Preflight, gate_on_preflight, plan};
pub use spec::{DEFAULT_CRL_REFRESH, DEFAULT_STAGE_TIMEOUT, Spec};
pub use status::{
    BLOCKED, DECLARATION_SWITCHED, EXPIRING_SOON, EXPIRY_MARGIN, Hold, ISSUERS_PINNED, MEMBERS_CONVERGED, PROGRESSING,
    READY, REVOKED, SAN_OVERLAP, SECONDARY_ADDED, certificates_in_use, declared_by, describe, effective_declaration,
    expiring_soon, revoked_in_use, san_overlap,
};
pub use store::StoreContents;

use crate::blocked::{BlockReason, Blocked};
use crate::conditions;
use crate::crd::{
    ClusterCertificateDeclaration, ClusterCertificateDeclarationStatus, MembersStatus, OutputFormat, PlannedRevision,
    PresentingStatus, RollbackStatus, UpgradeOrigin, UpgradeStatus, WorkloadReference,
};
use crate::events::{Event, EventType};
use crate::outputs::secret_data;
use crate::outputs::{self, PKCS12_DIGEST_ANNOTATION, REVISION_ANNOTATION, THUMBPRINT_ANNOTATION, is_owned_by};
use crate::planner;
use crate::revision::{Revision, Stage};
use crate::thumbprint::Thumbprint;
use status::secs;

/// How often a declaration is looked at without a watch event: expiry and
/// the validity of store instances move with the clock.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Endpoint members have no watch: while they lag, probe them this often.
pub const ENDPOINT_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A peer that refused the next certificate may be fixed by its owner.
pub const PEER_RETRY: Duration = Duration::from_secs(30);
/// How long after a declaration's creation a store that has not synced (or
/// does not exist yet) is waited for quietly: created together, as `kubectl
/// apply -f dir/` and GitOps tools do, the ObservedCertificates need a moment
/// to read their Secrets. After it, the block is a Warning.
pub const STORE_SYNC_GRACE: Duration = Duration::from_secs(30);

/// Everything one reconcile read.
#[derive(Clone, Debug)]
pub struct World {
    pub declaration: Arc<ClusterCertificateDeclaration>,
    /// The spec, parsed once ([`spec::parse`]), or why it is invalid.
    pub spec: Result<Spec, Blocked>,
    /// The store ([`store::assemble`] of what was read), or why it cannot be had.
    pub store: Result<StoreContents, Blocked>,
    /// The outputs as they are (anyone's: judged here).
    pub validation: Option<Arc<ConfigMap>>,
    pub presentation: Option<Arc<Secret>>,
    /// `spec.output.pkcs12.passwordSecretRef`'s Secret, read when PKCS12 is asked for.
    pub pkcs12_password: Option<Arc<Secret>>,
    pub members: MemberInputs,
    /// For the candidate of [`Planned::preflight`]: each endpoint, and
    /// whether it accepted the certificate as a client. `None`: not probed.
    pub preflight: Option<Vec<(String, Result<(), String>)>>,
    /// The one clock reading of the reconcile: the store's validity, the
    /// gates and the status's timestamps all use it.
    pub now: Timestamp,
}

/// A write, in the order the shell must make them.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Server-side apply of the validation ConfigMap, whole.
    PublishValidation(ConfigMap),
    /// Server-side apply of the presentation Secret, whole.
    PublishPresentation(Secret),
    /// Stamp `certshift.io/revision` on the workload's pod template.
    StampWorkload { workload: WorkloadReference, revision: u64 },
}

pub use crate::decision::Requeue;

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write; `None` when it is the one stored.
    pub status: Option<ClusterCertificateDeclarationStatus>,
    pub effects: Vec<Effect>,
    pub events: Vec<Event>,
    pub requeue: Requeue,
    /// The revision this decision publishes, if any (logs and metrics).
    pub published: Option<Revision>,
    /// Warnings that still hold (an expiring or revoked certificate in
    /// use): the shell tells them again at a bounded rate
    /// ([`crate::events::Reminders`]).
    pub standing: Vec<Event>,
}

/// The decision on this world: [`decide_planned`] on the plan of [`plan()`].
pub fn decide(world: &World) -> Decision {
    decide_planned(world, plan(world))
}

/// The decision on this world and its plan (step 1, made once by the shell,
/// which probes the endpoints with what the plan names before deciding): the
/// pre-flight gate (2), the writes (3), the status and events (4) and when
/// to look again (5).
pub fn decide_planned(world: &World, mut planned: Planned) -> Decision {
    gate_on_preflight(world, &mut planned);
    let effects = writes(world, &mut planned);
    let progress = settle(world, planned);
    let (status, events, standing) = report(world, &progress);
    let requeue = requeue(world, &progress);
    Decision {
        status,
        effects,
        events,
        requeue,
        published: progress.planned.candidate,
        standing,
    }
}

/// Step 3, the writes: the candidate's outputs, else the published
/// revision's presentation (a restart between two writes, changed formats),
/// and the workload stamps of the revision members are told.
fn writes(world: &World, planned: &mut Planned) -> Vec<Effect> {
    let mut effects = Vec::new();
    let (Ok(store), false) = (&world.store, planned.no_writes) else {
        return effects;
    };
    let declaration = world.declaration.as_ref();
    let password = planned.password.as_deref();
    if let Some(revision) = &planned.candidate {
        let outputs = validation_output(declaration, revision, store).and_then(|validation| {
            let presentation = presentation_output(world, revision, store, password)?;
            Ok((validation, presentation))
        });
        match outputs {
            Ok((validation, presentation)) => {
                effects.push(Effect::PublishValidation(validation));
                effects.extend(presentation.map(Effect::PublishPresentation));
            }
            Err(blocked) => {
                planned.hold = Some(Hold::Blocked(blocked));
                planned.candidate = None;
            }
        }
    }
    if let (None, Some(published)) = (&planned.candidate, &planned.published) {
        match presentation_output(world, published, store, password) {
            Ok(secret) => effects.extend(secret.map(Effect::PublishPresentation)),
            Err(blocked) => planned.hold = Some(Hold::Blocked(blocked)),
        }
    }
    if let Some(current) = planned.candidate.as_ref().or(planned.published.as_ref()) {
        for (reference, workload) in &world.members.workloads {
            if let Some(workload) = workload
                && workload.stamped() != Some(current.revision)
            {
                effects.push(Effect::StampWorkload {
                    workload: reference.clone(),
                    revision: current.revision,
                });
            }
        }
    }
    effects
}

/// Where the upgrade stands once this reconcile's writes are made.
struct Progress {
    /// The plan, its hold settled and `pending` without the candidate.
    planned: Planned,
    /// What follows the published revision: its stage ends unless this is more of it.
    following: Option<Revision>,
    plan_blocked: bool,
    /// The members of the revision they are told after this reconcile.
    members: MembersStatus,
    /// What is left of [`STORE_SYNC_GRACE`].
    grace_left: Option<Duration>,
}

impl Progress {
    /// The revision members are told after this reconcile.
    fn current(&self) -> Option<&Revision> {
        self.planned.candidate.as_ref().or(self.planned.published.as_ref())
    }
}

fn settle(world: &World, mut planned: Planned) -> Progress {
    if planned.candidate.is_none() && planned.hold.is_none() && !planned.pending.is_empty() {
        // Held for a reason of this reconcile's own (the pre-flight).
        planned.hold = Some(Hold::WaitingForMembers);
    }
    let following = planned.candidate.clone().or_else(|| planned.pending.first().cloned());
    let plan_blocked = matches!(planned.hold, Some(Hold::Blocked(_)));
    if planned.candidate.is_some() && !planned.pending.is_empty() {
        planned.pending.remove(0);
    }
    let current = planned.candidate.as_ref().or(planned.published.as_ref());
    let members = planned.report.status(current.map_or(0, |r| r.revision));
    // A store still syncing just after creation is waited for, not a block yet.
    let grace_left = store_grace_left(&world.declaration, world.now);
    if let (Some(Hold::Blocked(blocked)), Some(_)) = (&planned.hold, grace_left)
        && matches!(blocked.reason, BlockReason::StoreNotSynced | BlockReason::StoreNotFound)
    {
        planned.hold = Some(Hold::WaitingForStore(blocked.message.clone()));
    }
    Progress {
        planned,
        following,
        plan_blocked,
        members,
        grace_left,
    }
}

/// The Warnings of a rollback that begins now: the failure, and the rollback.
fn rollback_started(previous: &ClusterCertificateDeclarationStatus, rollback: Option<&RollbackStatus>) -> Vec<Event> {
    let Some(rollback) = rollback.filter(|r| r.state == plan::ROLLING_BACK) else {
        return Vec::new();
    };
    let before = previous.upgrade.as_ref().and_then(|u| u.rollback.as_ref());
    if before.is_some_and(|b| b.started_time == rollback.started_time) {
        return Vec::new();
    }
    let origin = previous
        .upgrade
        .as_ref()
        .and_then(|u| u.origin.as_ref())
        .map_or(0, |o| o.revision);
    vec![
        Event {
            type_: EventType::Warning,
            reason: rollback.reason.clone(),
            message: rollback.message.clone(),
        },
        Event {
            type_: EventType::Warning,
            reason: plan::ROLLING_BACK.to_owned(),
            message: format!(
                "rolling back to the declaration of revision {origin} after revision {} failed ({})",
                rollback.failed_revision, rollback.reason
            ),
        },
    ]
}

/// Step 4: the status (`None` when it is the one stored), the events, and
/// the Warnings that still hold.
fn report(world: &World, progress: &Progress) -> (Option<ClusterCertificateDeclarationStatus>, Vec<Event>, Vec<Event>) {
    let declaration = world.declaration.as_ref();
    let previous = declaration.status.clone().unwrap_or_default();
    let (current, planned) = (progress.current(), &progress.planned);
    let store = world.store.as_ref().ok().map(|s| &s.store);
    // Without a store this reconcile, what was in use is still in use.
    let certificates_in_use = match store {
        Some(store) => certificates_in_use(current, store),
        None => previous.certificates_in_use.clone(),
    };
    let mut decided = status::conditions(&status::Facts {
        hold: planned.hold.as_ref(),
        current,
        up_to_date: planned.pending.is_empty(),
        members: &progress.members,
        desired: world.spec.as_ref().ok().map(|s| &s.desired),
        goal: planned.goal.as_ref(),
        fresh: progress.grace_left.is_some(),
        just_published: planned.candidate.is_some() && !planned.no_writes,
        rolling_back: planned.rollback.as_ref().filter(|r| r.state == plan::ROLLING_BACK),
    });
    if let Some(store) = store {
        decided.push(san_overlap(&store.instances));
        decided.push(revoked_in_use(current, store, planned.goal.as_ref()));
    }
    let margin = world.spec.as_ref().map_or(EXPIRY_MARGIN, |s| s.expiry_warning);
    decided.push(expiring_soon(&certificates_in_use, margin, world.now));
    let previous_conditions = conditions::sorted(&previous.conditions);
    let generation = declaration.metadata.generation;
    let conditions = conditions::merge(&previous_conditions, &decided, generation, world.now);
    let deprecated = world.spec.as_ref().map(|s| s.deprecated.as_slice()).unwrap_or_default();
    let standing = conditions
        .iter()
        .filter(|c| matches!(c.type_.as_str(), EXPIRING_SOON | REVOKED) && c.status == "True")
        .map(|c| Event {
            type_: EventType::Warning,
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .chain(deprecated.iter().map(|message| Event {
            type_: EventType::Warning,
            reason: "DeprecatedField".to_owned(),
            message: message.clone(),
        }))
        .collect();
    let mut events = events(
        world,
        (&previous_conditions, &conditions),
        planned.published.as_ref(),
        &planned.report,
        (progress.following.as_ref(), progress.plan_blocked),
        planned.rollback.is_some(),
    );
    events.extend(rollback_started(&previous, planned.rollback.as_ref()));
    let status = ClusterCertificateDeclarationStatus {
        observed_generation: generation,
        conditions,
        declared_by: current.map(|c| declared_by(&c.accepted).to_owned()),
        effective: current.map(effective_declaration),
        upgrade: upgrade_status(world, progress),
        members: Some(progress.members.clone()),
        presenting: presenting(&previous, current, store),
        certificates_in_use,
    };
    let stored = ClusterCertificateDeclarationStatus {
        conditions: previous_conditions,
        ..previous
    };
    let changed = declaration.status.is_none() || status != stored;
    (changed.then_some(status), events, standing)
}

/// `status.upgrade`: the revision members are told, its stage and the plan.
fn upgrade_status(world: &World, progress: &Progress) -> Option<UpgradeStatus> {
    let current = progress.current()?;
    let (candidate, pending) = (&progress.planned.candidate, &progress.planned.pending);
    let previous = plan::previous_upgrade(world);
    let members = &progress.members;
    let converged = members.converged == members.total;
    let acknowledged_time = match candidate {
        Some(_) => None,
        None => acknowledged_time(&previous, current.revision, members, world.now),
    };
    let mut plan = vec![planned(current, if converged { "Acknowledged" } else { "Published" })];
    plan.extend(pending.iter().map(|r| planned(r, "Pending")));
    let republished = candidate.is_some() || previous.revision != current.revision;
    // A walk held only by an anchor removal that waits for a renewal is as
    // far as it can go: what comes after the renewal is a change of its own
    // (its own `upgradeTimeout`, its own origin).
    let waiting_for_renewal = matches!(
        &progress.planned.hold,
        Some(Hold::Blocked(b)) if b.reason == BlockReason::TrustAnchorInUse
    );
    let complete = pending.is_empty() && converged && (progress.planned.hold.is_none() || waiting_for_renewal);
    let rollback = progress.planned.rollback.clone();
    // A rollback no longer in force (a new generation, a retry): what comes
    // next is a new change.
    let (previous_start, previous_origin) = match (&previous.rollback, &rollback) {
        (Some(_), None) => (None, None),
        _ => (previous.started_time, previous.origin.clone()),
    };
    // The change began with its first revision's publication, and ends
    // complete (`upgradeTimeout` counts between); what was in force before
    // it is its origin, what a rollback returns to.
    let (started_time, origin) = match (complete, previous_start) {
        (true, _) => (None, None),
        (false, Some(started)) => (Some(started), previous_origin),
        (false, None) if republished => (
            Some(world.now),
            progress.planned.published.as_ref().map(status::origin_of),
        ),
        (false, None) => (None, None),
    };
    let origin = origin.or_else(|| rollback.as_ref().and(previous.origin.clone()));
    mark_points_of_no_return(
        world,
        origin.as_ref(),
        std::iter::once(current).chain(pending),
        &mut plan,
    );
    Some(UpgradeStatus {
        stage: if pending.is_empty() && converged {
            None
        } else {
            current.stage
        },
        cause: current.cause,
        revision: current.revision,
        plan: if pending.is_empty() { Vec::new() } else { plan },
        published_time: if republished {
            Some(world.now)
        } else {
            previous.published_time
        },
        acknowledged_time,
        started_time,
        // A revision published now has no health check yet.
        health: progress.planned.health.clone().filter(|_| candidate.is_none()),
        origin,
        rollback,
        acted_on: progress.planned.acted_on.clone(),
    })
}

/// Points of no return: from each revision of the plan, whether the walk
/// back to `origin` (what a rollback returns to) is still possible.
fn mark_points_of_no_return<'a>(
    world: &World,
    origin: Option<&UpgradeOrigin>,
    revisions: impl Iterator<Item = &'a Revision>,
    plan: &mut [PlannedRevision],
) {
    let (Some(origin), Ok(spec), Ok(contents)) = (origin, &world.spec, &world.store) else {
        return;
    };
    let Ok(target) = spec::origin_desired(origin, spec.desired.selection) else {
        return;
    };
    for (entry, revision) in plan.iter_mut().zip(revisions) {
        entry.rollback_possible = Some(planner::walk_back(revision, &target, &contents.store, world.now).is_ok());
    }
}

/// `status.presenting`: the presented certificate's facts, or, without the
/// store this reconcile, what was known of it.
fn presenting(
    previous: &ClusterCertificateDeclarationStatus,
    current: Option<&Revision>,
    store: Option<&planner::Store>,
) -> Option<PresentingStatus> {
    let current = current?;
    let facts = store.and_then(|s| s.find(&current.presented));
    let known = previous
        .presenting
        .as_ref()
        .filter(|p| facts.is_none() && p.thumbprint == current.presented.as_str());
    Some(PresentingStatus {
        thumbprint: current.presented.to_string(),
        short_thumbprint: current.presented.short().to_owned(),
        common_name: facts
            .and_then(|f| f.common_name.clone())
            .or_else(|| known.and_then(|p| p.common_name.clone())),
        not_after: facts.map(|f| f.not_after).or_else(|| known.and_then(|p| p.not_after)),
    })
}

/// Step 5: when to look again.
fn requeue(world: &World, progress: &Progress) -> Requeue {
    let (hold, current) = (&progress.planned.hold, progress.current());
    let requeue = match (hold, progress.planned.requeue) {
        // Nothing in force to keep an eye on (expiry): wait for the edit.
        (Some(Hold::Blocked(blocked)), _) if blocked.reason.needs_spec_change() && current.is_none() => {
            Requeue::AwaitChange
        }
        (Some(Hold::Blocked(blocked)), _) if blocked.reason == BlockReason::PeerRejectsCertificate => {
            Requeue::After(PEER_RETRY)
        }
        (Some(Hold::Checking { left, .. }), _) => Requeue::After(*left + Duration::from_secs(1)),
        (Some(Hold::WaitingForStore(_)), _) => {
            Requeue::After(progress.grace_left.unwrap_or_default() + Duration::from_secs(1))
        }
        (_, Some(after)) => Requeue::After(after),
        // No member gates it: the next revision is due at once.
        _ if progress.planned.candidate.is_some() && progress.planned.report.members.is_empty() => {
            Requeue::After(Duration::from_secs(1))
        }
        _ => Requeue::After(RESYNC),
    };
    let members = &progress.members;
    let endpoints_lag =
        !world.members.endpoints.is_empty() && members.converged < members.total && requeue != Requeue::AwaitChange;
    let requeue = match requeue {
        Requeue::After(after) if endpoints_lag => Requeue::After(after.min(ENDPOINT_PROBE_INTERVAL)),
        other => other,
    };
    // Fetched CRLs are looked at again when they are due.
    let Some(fetch) = world.spec.as_ref().ok().and_then(|s| s.fetch_crls) else {
        return requeue;
    };
    let unavailable = matches!(hold, Some(Hold::Blocked(b)) if b.reason == BlockReason::CrlUnavailable);
    let due = if unavailable {
        CRL_RETRY.min(fetch.refresh_interval)
    } else {
        fetch.refresh_interval
    };
    match requeue {
        Requeue::After(after) => Requeue::After(after.min(due)),
        Requeue::AwaitChange => Requeue::After(due),
    }
}

/// A CRL distribution point that could not be fetched is tried again this soon.
pub const CRL_RETRY: Duration = Duration::from_secs(30);

/// What is left of [`STORE_SYNC_GRACE`] for a declaration created at its
/// `creationTimestamp`; `None` once it has passed.
fn store_grace_left(declaration: &ClusterCertificateDeclaration, now: Timestamp) -> Option<Duration> {
    let created = declaration.metadata.creation_timestamp.as_ref()?.0;
    let left = created.as_second().saturating_add(secs(STORE_SYNC_GRACE)) - now.as_second();
    (left > 0).then(|| Duration::from_secs(left.unsigned_abs()))
}

/// An output that exists and is not the declaration's own: nothing is written.
pub(super) fn foreign_output(world: &World) -> Option<Blocked> {
    let declaration = world.declaration.as_ref();
    let uid = declaration.metadata.uid.as_deref().unwrap_or_default();
    let namespace = declaration.metadata.namespace.as_deref().unwrap_or_default();
    let foreign = |kind: &str, name: &Option<String>| {
        Blocked::new(
            BlockReason::SecretOwnedElsewhere,
            format!(
                "{kind} {namespace}/{} exists and was not created by certshift for this declaration; it is left untouched",
                name.as_deref().unwrap_or_default()
            ),
        )
    };
    let validation = world.validation.as_ref().map(|m| &m.metadata);
    let presentation = world.presentation.as_ref().map(|s| &s.metadata);
    match (validation, presentation) {
        (Some(meta), _) if !is_owned_by(meta, uid) => Some(foreign("ConfigMap", &meta.name)),
        (_, Some(meta)) if !is_owned_by(meta, uid) => Some(foreign("Secret", &meta.name)),
        _ => None,
    }
}

/// The PKCS#12 password, when the spec asks for the PKCS12 format.
pub(super) fn pkcs12_password(world: &World) -> Result<Option<String>, Blocked> {
    let declaration = world.declaration.as_ref();
    let Some(output) = declaration.spec.output.as_ref() else {
        return Ok(None);
    };
    let Some(pkcs12) = output
        .pkcs12
        .as_ref()
        .filter(|_| output.formats.contains(&OutputFormat::Pkcs12))
    else {
        return Ok(None);
    };
    let reference = &pkcs12.password_secret_ref;
    let key = reference.key.clone().unwrap_or_else(|| "password".to_owned());
    let namespace = declaration.metadata.namespace.as_deref().unwrap_or_default();
    let field = "spec.output.pkcs12.passwordSecretRef";
    let Some(secret) = &world.pkcs12_password else {
        return Err(Blocked::new(
            BlockReason::InvalidOutput,
            format!("{field}: Secret {namespace}/{} does not exist", reference.name),
        ));
    };
    match secret_data(secret).remove(&key) {
        Some(value) => Ok(Some(String::from_utf8_lossy(&value).trim_end_matches('\n').to_owned())),
        None => Err(Blocked::new(
            BlockReason::InvalidOutput,
            format!("{field}: Secret {namespace}/{} has no key {key:?}", reference.name),
        )),
    }
}

/// The validation ConfigMap of `revision`, templates rendered.
fn validation_output(
    declaration: &ClusterCertificateDeclaration,
    revision: &Revision,
    store: &StoreContents,
) -> Result<ConfigMap, Blocked> {
    let trust = outputs::RevisionTrust {
        crls: store.crls.clone(),
        ..outputs::revision_trust(revision, &store.store.trust, &store.store.instances, &store.authorities)
    };
    let judged_by = revision.judging_by(&store.store.trust);
    let accepted_instances: Vec<Thumbprint> = store
        .store
        .instances
        .iter()
        .filter(|f| revision.accepted.admits(f, &judged_by))
        .map(|f| f.thumbprint.clone())
        .collect();
    let mut data = outputs::validation_data(revision, &trust, &accepted_instances);
    if let Some(output) = declaration.spec.output.as_ref().filter(|o| !o.templates.is_empty()) {
        let presented = store.store.find(&revision.presented);
        let context = outputs::TemplateContext::new(revision, presented, &revision.clients, &accepted_instances);
        let rendered = outputs::render_templates(&output.templates, &context).map_err(|message| {
            Blocked::new(
                BlockReason::InvalidTemplate,
                format!("spec.output.templates: {message}"),
            )
        })?;
        data.extend(rendered);
    }
    // The API server refuses a larger ConfigMap; say so rather than retry.
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > CONFIG_MAP_LIMIT {
        return Err(Blocked::new(
            BlockReason::InvalidOutput,
            format!(
                "the validation ConfigMap of revision {} would hold {size} bytes (ca-bundle.crt {}, templates included); a ConfigMap holds at most {CONFIG_MAP_LIMIT}",
                revision.revision,
                data.get("ca-bundle.crt").map_or(0, String::len)
            ),
        ));
    }
    Ok(outputs::validation_config_map(declaration, revision, data))
}

/// What kube-apiserver accepts in a ConfigMap's data (1 MiB).
pub const CONFIG_MAP_LIMIT: usize = 1024 * 1024;

/// The presentation Secret for `revision`, when it differs from the one there.
/// It changes only with the presented certificate (or the formats asked
/// for): a validation revision leaves it as it is, and members learn the
/// revision from `rules.json`, whose `presented` names it.
fn presentation_output(
    world: &World,
    revision: &Revision,
    store: &StoreContents,
    password: Option<&str>,
) -> Result<Option<Secret>, Blocked> {
    let declaration = world.declaration.as_ref();
    let existing = world.presentation.as_deref();
    let annotation = |key: &str| {
        existing
            .and_then(|s| s.metadata.annotations.as_ref())
            .and_then(|a| a.get(key))
            .cloned()
    };
    let same_certificate = annotation(THUMBPRINT_ANNOTATION).as_deref() == Some(revision.presented.as_str());
    let Some(material) = store.materials.get(&revision.presented) else {
        if same_certificate {
            return Ok(None);
        }
        return Err(Blocked::new(
            BlockReason::PrivateKeyMissing,
            format!(
                "certificate {} has no key material in the store's Secrets; the presentation Secret cannot be written",
                revision.presented
            ),
        ));
    };
    let existing_data = existing.map(secret_data);
    let mut data: std::collections::BTreeMap<String, Vec<u8>> = outputs::presentation_data(material)
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    if let Some(output) = declaration.spec.output.as_ref().filter(|o| !o.formats.is_empty()) {
        let formats = outputs::format_data(material, &output.formats, password)
            .map_err(|message| Blocked::new(BlockReason::InvalidOutput, format!("spec.output.formats: {message}")))?;
        data.extend(formats);
        // PKCS#12 encryption is salted: keep the file already written for
        // this certificate and this password, so an unchanged world makes no write.
        let same_material = existing_data
            .as_ref()
            .is_some_and(|d| d.get("tls.crt") == data.get("tls.crt") && d.get("tls.key") == data.get("tls.key"));
        let existing_pfx = existing_data.as_ref().and_then(|d| d.get("tls.pfx"));
        if let (true, Some(pfx), Some(password)) =
            (same_material && data.contains_key("tls.pfx"), existing_pfx, password)
            && annotation(PKCS12_DIGEST_ANNOTATION) == Some(outputs::pkcs12_digest(password, pfx))
        {
            data.insert("tls.pfx".to_owned(), pfx.clone());
        }
    }
    let pkcs12_digest = data
        .get("tls.pfx")
        .zip(password)
        .map(|(pfx, password)| outputs::pkcs12_digest(password, pfx));
    // The revision this certificate was first presented at.
    let since = annotation(REVISION_ANNOTATION)
        .filter(|_| same_certificate)
        .and_then(|r| r.parse().ok())
        .unwrap_or(revision.revision);
    let annotated = same_certificate
        && annotation(REVISION_ANNOTATION) == Some(since.to_string())
        && annotation(PKCS12_DIGEST_ANNOTATION) == pkcs12_digest;
    if annotated && existing_data.as_ref() == Some(&data) {
        return Ok(None);
    }
    let mut secret = outputs::presentation_secret(declaration, since, &revision.presented, data);
    if let (Some(digest), Some(annotations)) = (pkcs12_digest, secret.metadata.annotations.as_mut()) {
        annotations.insert(PKCS12_DIGEST_ANNOTATION.to_owned(), digest);
    }
    Ok(Some(secret))
}

/// The events of a decision: a Warning when something needs attention, and
/// one Normal event when members complete a stage (at most one per
/// revision). The last stage is complete, and the declaration in force, when
/// `Ready` turns True — after its health check, not at the acknowledgement —
/// and a rollback's revisions complete no stage (its own events tell it).
fn events(
    world: &World,
    (previous, next): (&[Condition], &[Condition]),
    published: Option<&Revision>,
    report: &MemberReport,
    (following, blocked): (Option<&Revision>, bool),
    rollback: bool,
) -> Vec<Event> {
    // An expiring or revoked certificate newly in the list, or another
    // problem of the same kind (another bad CRL), is told too, though the
    // condition was already True.
    let list_changed = |c: &Condition| {
        matches!(c.type_.as_str(), EXPIRING_SOON | REVOKED | BLOCKED)
            && previous
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status && p.message != c.message)
    };
    let mut changed = conditions::transitions(previous, next);
    changed.extend(next.iter().filter(|c| list_changed(c)));
    let mut events: Vec<Event> = changed
        .into_iter()
        .filter(|c| matches!(c.type_.as_str(), BLOCKED | EXPIRING_SOON | SAN_OVERLAP | REVOKED) && c.status == "True")
        .map(|c| Event {
            type_: EventType::Warning,
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect();
    let previous_upgrade = plan::previous_upgrade(world);
    if let Some(revision) = published.filter(|_| !rollback) {
        let members = report.status(revision.revision);
        let last = following.is_none() && !blocked;
        let ready = |conditions: &[Condition]| conditions.iter().any(|c| c.type_ == READY && c.status == "True");
        if last {
            if ready(next) && !ready(previous) {
                events.push(completed(revision, &members, true));
            }
        } else {
            let acknowledged_before = previous_upgrade.revision == revision.revision
                && previous_upgrade
                    .acknowledged_time
                    .is_some_and(|a| previous_upgrade.published_time.is_none_or(|p| a >= p));
            let stage_ends = following.is_none_or(|next| next.stage != revision.stage);
            if members.converged == members.total && !acknowledged_before && stage_ends {
                events.push(completed(revision, &members, false));
            }
        }
    }
    events
}

/// The event of a stage members completed: reason the milestone it reaches
/// (`Ready` when nothing is left to publish; a renewal's is `Rollover`).
fn completed(revision: &Revision, members: &MembersStatus, last: bool) -> Event {
    let milestone = match revision.stage {
        Some(Stage::AddSecondary) => SECONDARY_ADDED.to_owned(),
        Some(Stage::SwitchToCommonName) => DECLARATION_SWITCHED.to_owned(),
        Some(Stage::PinIssuers) => ISSUERS_PINNED.to_owned(),
        Some(stage) => stage.to_string(),
        None => READY.to_owned(),
    };
    let reason = match revision.stage {
        Some(Stage::Rollover) => "Rollover".to_owned(),
        _ if last => READY.to_owned(),
        _ => milestone.clone(),
    };
    let acknowledged = format!("{}/{} members acknowledged", members.converged, members.total);
    let message = match (revision.stage, last) {
        (Some(stage), true) if reason == READY => format!(
            "{stage} complete, the declaration is in force: {} ({acknowledged})",
            describe(revision)
        ),
        (Some(stage), _) => format!("{stage} complete: {} ({acknowledged})", describe(revision)),
        (None, _) => format!("the declaration is in force: {} ({acknowledged})", describe(revision)),
    };
    Event {
        type_: EventType::Normal,
        reason,
        message,
    }
}

/// When every member had acknowledged `revision`: kept from status once
/// recorded, even while a member that came later catches up (a scaled-up or
/// restarted pod), so the stage is completed, soaked and told once. A time
/// before the revision's publication is an earlier revision's, left in the
/// status by a write that did not clear it (another field manager sharing
/// the field keeps it through an apply that omits it): never this one's.
fn acknowledged_time(
    previous: &UpgradeStatus,
    revision: u64,
    members: &MembersStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    match previous.acknowledged_time {
        Some(time) if previous.revision == revision && previous.published_time.is_none_or(|p| time >= p) => Some(time),
        _ if members.converged == members.total => Some(now),
        _ => None,
    }
}

fn planned(revision: &Revision, state: &str) -> PlannedRevision {
    PlannedRevision {
        revision: revision.revision,
        stage: revision.stage,
        change: revision.change,
        cause: revision.cause,
        presented: revision.presented.to_string(),
        state: state.to_owned(),
        rollback_possible: None,
    }
}

#[cfg(test)]
mod tests;
