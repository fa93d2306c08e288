//! The ClusterCertificateDeclaration controller's decision, pure: from what was
//! gathered (spec, status, store, published outputs, members, `now`) to the
//! status to write, the revision to publish (at most one), and the events.

use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::EventType;

use crate::conditions::{self, Decided};
use crate::crd::{
    CertificateCommonNames, CertificateThumbprints, ClusterCertificateDeclarationSpec,
    ClusterCertificateDeclarationStatus, CommonNameDeclaration, EffectiveDeclaration, MembersStatus, PlannedRevision,
    PresentingStatus, UpgradeStatus,
};
use crate::duration;
use crate::planner::{self, BlockReason, Blocked, Desired, Effective, Revision, Store};
use crate::rules::Accepted;
use crate::thumbprint::join_thumbprints;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const SECONDARY_ADDED: &str = "SecondaryAdded";
pub const DECLARATION_SWITCHED: &str = "DeclarationSwitched";
pub const ISSUERS_PINNED: &str = "IssuersPinned";
pub const MEMBERS_CONVERGED: &str = "MembersConverged";
pub const BLOCKED: &str = "Blocked";
pub const EXPIRING_SOON: &str = "ExpiringSoon";
pub const SAN_OVERLAP: &str = "SanOverlap";

/// Service Fabric's CertificateExpirySafetyMargin.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What each member reports: the revision it has loaded, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberReport {
    /// `kind/name` → observed revision, sorted by name.
    pub members: Vec<(String, Option<u64>)>,
}

impl MemberReport {
    pub fn status(&self, revision: u64) -> MembersStatus {
        let laggards: Vec<String> = self
            .members
            .iter()
            .filter(|(_, observed)| observed.is_none_or(|o| o < revision))
            .map(|(name, _)| name.clone())
            .collect();
        let total = u32::try_from(self.members.len()).unwrap_or(u32::MAX);
        let converged = total - u32::try_from(laggards.len()).unwrap_or(total);
        MembersStatus {
            total,
            converged,
            laggards,
            summary: format!("{converged}/{total}"),
        }
    }
}

/// Everything the controller read for one reconcile.
pub struct World<'a> {
    pub generation: Option<i64>,
    pub spec: &'a ClusterCertificateDeclarationSpec,
    pub status: &'a ClusterCertificateDeclarationStatus,
    /// The store, or why it cannot be had (not found, not synced).
    pub store: Result<Store, Blocked>,
    /// The revision the outputs carry, if any were published.
    pub published: Option<Revision>,
    /// A reason nothing may be written (an output owned by someone else).
    pub outputs_blocked: Option<Blocked>,
    /// An endpoint refused the certificate about to be presented (pre-flight).
    pub preflight: Option<Blocked>,
    pub members: MemberReport,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

/// The controller's decision: write `status`; publish `publish` first, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: ClusterCertificateDeclarationStatus,
    pub publish: Option<Revision>,
    pub events: Vec<Event>,
    /// When to look again without a watch event (a soak or timeout ending).
    pub requeue: Option<Duration>,
}

/// Why the next revision is not published now.
enum Hold {
    Blocked(Blocked),
    Paused,
    WaitingForMembers,
    Soaking(Duration),
}

pub fn decide(world: World<'_>) -> Decision {
    let now = world.now;
    let upgrade = world.spec.upgrade.clone().unwrap_or_default();
    let desired = planner::desired_from_spec(world.spec);
    let blocked_early = desired
        .as_ref()
        .err()
        .cloned()
        .or_else(|| world.store.as_ref().err().cloned())
        .or_else(|| world.outputs_blocked.clone())
        .or_else(|| world.preflight.clone());
    let previous_upgrade = world.status.upgrade.clone().unwrap_or_default();

    let mut publish: Option<Revision> = None;
    let mut hold: Option<Hold> = None;
    let mut pending: Vec<Revision> = Vec::new();
    let mut goal: Option<crate::thumbprint::Thumbprint> = None;
    let mut requeue = None;

    if let (None, Ok(desired), Ok(store)) = (&blocked_early, &desired, &world.store) {
        let effective = world.published.as_ref().map(|p| Effective {
            clients: Some(p.clients.clone()),
            revision: p.revision,
            accepted: p.accepted.clone(),
            presented: Some(p.presented.clone()),
        });
        let plan = planner::plan(effective.as_ref(), desired, store, now);
        goal = planner::goal(desired, store, now).ok().map(|g| g.thumbprint.clone());
        match (&world.published, plan.blocked.clone()) {
            (_, Some(blocked)) => hold = Some(Hold::Blocked(blocked)),
            (None, None) => {
                // Nothing published yet: the desired state is the first revision.
                let first = plan.revisions[0].clone();
                publish = Some(Revision {
                    revision: previous_upgrade.revision + 1,
                    ..first
                });
            }
            (Some(published), None) => {
                pending = plan.pending().to_vec();
                if let Some(next) = pending.first() {
                    let members = world.members.status(published.revision);
                    let acknowledged = acknowledged_time(&previous_upgrade, published.revision, &members, now);
                    let min_soak = duration_or(&upgrade.min_soak, Duration::ZERO);
                    let stage_timeout = duration_or(&upgrade.stage_timeout, DEFAULT_STAGE_TIMEOUT);
                    let published_at = previous_upgrade
                        .published_time
                        .filter(|_| previous_upgrade.revision == published.revision)
                        .unwrap_or(now);
                    if upgrade.paused {
                        hold = Some(Hold::Paused);
                    } else if let Some(acknowledged) = acknowledged {
                        let soaked = acknowledged.as_second().saturating_add(secs(min_soak));
                        if now.as_second() >= soaked {
                            publish = Some(next.clone());
                            pending.remove(0);
                        } else {
                            let left = Duration::from_secs((soaked - now.as_second()).unsigned_abs());
                            hold = Some(Hold::Soaking(left));
                        }
                    } else if now.as_second() > published_at.as_second().saturating_add(secs(stage_timeout)) {
                        hold = Some(Hold::Blocked(Blocked::new(
                            BlockReason::StageTimeout,
                            format!(
                                "revision {} was published at {published_at} and {} of {} members have not acknowledged it \
                                 within stageTimeout; nothing is rolled back",
                                published.revision,
                                members.total - members.converged,
                                members.total
                            ),
                        )));
                    } else {
                        hold = Some(Hold::WaitingForMembers);
                        let deadline = published_at.as_second().saturating_add(secs(stage_timeout)) - now.as_second();
                        requeue = Some(Duration::from_secs(deadline.unsigned_abs() + 1));
                    }
                }
            }
        }
    }
    if let Some(blocked) = blocked_early {
        hold = Some(Hold::Blocked(blocked));
    }

    // The state members are told after this reconcile.
    let current = publish.as_ref().or(world.published.as_ref());
    let members = current
        .map(|r| world.members.status(r.revision))
        .unwrap_or_else(|| world.members.status(0));
    let converged = members.converged == members.total;
    let store = world.store.as_ref().ok();

    let upgrade_status = current.map(|current| {
        let same = previous_upgrade.revision == current.revision;
        let acknowledged_time = if publish.is_some() {
            None
        } else {
            acknowledged_time(&previous_upgrade, current.revision, &members, now)
        };
        let mut plan: Vec<PlannedRevision> =
            vec![planned(current, if converged { "Acknowledged" } else { "Published" })];
        plan.extend(pending.iter().map(|r| planned(r, "Pending")));
        UpgradeStatus {
            stage: if pending.is_empty() && converged {
                None
            } else {
                current.stage
            },
            revision: current.revision,
            plan: if pending.is_empty() { Vec::new() } else { plan },
            published_time: if publish.is_some() || !same {
                Some(now)
            } else {
                previous_upgrade.published_time
            },
            acknowledged_time,
        }
    });
    if let Some(Hold::Soaking(left)) = &hold {
        requeue = Some(*left + Duration::from_secs(1));
    }
    if publish.is_some() {
        // Look again at once: with no members, the next revision is due now.
        requeue = Some(Duration::from_secs(1));
    }

    let presenting = current.map(|c| {
        let facts = store.and_then(|s| s.find(&c.presented));
        PresentingStatus {
            thumbprint: c.presented.to_string(),
            short_thumbprint: c.presented.short().to_owned(),
            common_name: facts.and_then(|f| f.common_name.clone()),
            not_after: facts.map(|f| f.not_after),
        }
    });

    let mut decided = conditions_for(
        &hold,
        current,
        pending.is_empty(),
        &members,
        desired.as_ref().ok(),
        goal.as_ref(),
        presenting.as_ref(),
        now,
    );
    if let Some(store) = store {
        decided.push(san_overlap(&store.instances));
    }
    let conditions = conditions::merge(&world.status.conditions, &decided, world.generation, now);

    let mut events: Vec<Event> = Vec::new();
    if let Some(revision) = &publish {
        events.push(Event {
            type_: EventType::Normal,
            reason: revision.stage.map_or_else(|| "Published".to_owned(), |s| s.to_string()),
            message: describe(revision),
        });
    }
    for condition in conditions::transitions(&world.status.conditions, &conditions) {
        let warning =
            matches!(condition.type_.as_str(), BLOCKED | EXPIRING_SOON | SAN_OVERLAP) && condition.status == "True";
        // Only report what changed for the worse, or an upgrade's milestones.
        let milestone = matches!(
            condition.type_.as_str(),
            SECONDARY_ADDED | DECLARATION_SWITCHED | ISSUERS_PINNED | READY
        ) && condition.status == "True";
        if warning || milestone {
            events.push(Event {
                type_: if warning { EventType::Warning } else { EventType::Normal },
                reason: condition.reason.clone(),
                message: condition.message.clone(),
            });
        }
    }

    let status = ClusterCertificateDeclarationStatus {
        observed_generation: world.generation,
        conditions,
        declared_by: current.map(|c| declared_by(&c.accepted).to_owned()),
        effective: current.map(effective_declaration),
        upgrade: upgrade_status,
        members: Some(members),
        presenting,
    };
    Decision {
        status,
        publish,
        events,
        requeue,
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn duration_or(text: &Option<String>, default: Duration) -> Duration {
    text.as_deref()
        .and_then(|t| duration::parse("", t).ok())
        .unwrap_or(default)
}

/// When every member acknowledged `revision`: kept from status once recorded.
fn acknowledged_time(
    previous: &UpgradeStatus,
    revision: u64,
    members: &MembersStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    if members.converged < members.total {
        return None;
    }
    match previous.acknowledged_time {
        Some(time) if previous.revision == revision => Some(time),
        _ => Some(now),
    }
}

fn planned(revision: &Revision, state: &str) -> PlannedRevision {
    PlannedRevision {
        revision: revision.revision,
        stage: revision.stage,
        change: revision.change,
        presented: revision.presented.to_string(),
        state: state.to_owned(),
    }
}

pub fn describe(revision: &Revision) -> String {
    let change = match revision.change {
        Some(change) => format!("{change:?} revision"),
        None => "revision".to_owned(),
    };
    let mut accepted: Vec<String> = revision
        .accepted
        .thumbprints
        .iter()
        .map(|t| format!("thumbprint {t}"))
        .collect();
    accepted.extend(revision.accepted.common_names.iter().map(|rule| {
        if rule.is_pinned() {
            format!("{} from {}", rule.name, join_thumbprints(&rule.issuer_thumbprints))
        } else {
            format!("{} (trust bundle)", rule.name)
        }
    }));
    format!(
        "published {change} {}: present {}, accept {}",
        revision.revision,
        revision.presented,
        accepted.join(", ")
    )
}

/// Key Vault's link-on-renewal hazard: a certificate whose DNS SANs include
/// all of another's (of a different common name) would redirect it. Pairs are
/// reported once, smaller SAN list first, sorted, so the message is stable.
pub fn san_overlap(instances: &[crate::facts::CertificateFacts]) -> Decided {
    use std::collections::BTreeSet;
    let sans = |f: &crate::facts::CertificateFacts| -> BTreeSet<String> {
        f.dns_names.iter().map(|d| d.to_ascii_lowercase()).collect()
    };
    let cn = |f: &crate::facts::CertificateFacts| f.common_name.clone().unwrap_or_default().to_ascii_lowercase();
    let mut pairs: Vec<String> = Vec::new();
    for a in instances {
        for b in instances {
            let (sa, sb) = (sans(a), sans(b));
            let different = cn(a) != cn(b) && a.thumbprint != b.thumbprint;
            // Equal lists are one pair; report it from the smaller thumbprint.
            let ordered = sa.len() < sb.len() || (sa == sb && a.thumbprint < b.thumbprint);
            if different && !sa.is_empty() && sa.is_subset(&sb) && ordered {
                pairs.push(format!(
                    "the SANs of {} (CN {}) are all in {} (CN {})",
                    a.thumbprint,
                    a.common_name.as_deref().unwrap_or("-"),
                    b.thumbprint,
                    b.common_name.as_deref().unwrap_or("-")
                ));
            }
        }
    }
    pairs.sort();
    if pairs.is_empty() {
        Decided::new(
            SAN_OVERLAP,
            false,
            "NoOverlap",
            "no store certificate's SANs contain another's",
        )
    } else {
        Decided::new(
            SAN_OVERLAP,
            true,
            SAN_OVERLAP,
            format!(
                "{}; a link-on-renewal would redirect one to the other",
                pairs.join("; ")
            ),
        )
    }
}

pub fn declared_by(accepted: &Accepted) -> &'static str {
    match (accepted.thumbprints.is_empty(), accepted.common_names.is_empty()) {
        (false, true) => "Thumbprint",
        (true, false) => "CommonName",
        _ => "ThumbprintAndCommonName",
    }
}

/// A revision in the spec's Service Fabric shape (it fits the two slots).
pub fn effective_declaration(revision: &Revision) -> EffectiveDeclaration {
    let mut thumbprints = revision.accepted.thumbprints.iter();
    // The presented thumbprint is the primary when it is declared by thumbprint.
    let primary = revision
        .accepted
        .thumbprints
        .iter()
        .find(|t| **t == revision.presented)
        .or_else(|| thumbprints.next());
    let secondary = revision.accepted.thumbprints.iter().find(|t| Some(*t) != primary);
    EffectiveDeclaration {
        revision: revision.revision,
        certificate: primary.map(|p| CertificateThumbprints {
            thumbprint: p.to_string(),
            thumbprint_secondary: secondary.map(ToString::to_string),
        }),
        certificate_common_names: (!revision.accepted.common_names.is_empty()).then(|| CertificateCommonNames {
            common_names: revision
                .accepted
                .common_names
                .iter()
                .map(|rule| CommonNameDeclaration {
                    certificate_common_name: rule.name.clone(),
                    certificate_issuer_thumbprint: join_thumbprints(&rule.issuer_thumbprints),
                })
                .collect(),
        }),
        presented: Some(revision.presented.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn conditions_for(
    hold: &Option<Hold>,
    current: Option<&Revision>,
    up_to_date: bool,
    members: &MembersStatus,
    desired: Option<&Desired>,
    goal: Option<&crate::thumbprint::Thumbprint>,
    presenting: Option<&PresentingStatus>,
    now: Timestamp,
) -> Vec<Decided> {
    let converged = members.converged == members.total;
    let blocked = match hold {
        Some(Hold::Blocked(blocked)) => Some(blocked),
        _ => None,
    };
    let mut out = Vec::new();
    out.push(match blocked {
        Some(b) => Decided::new(BLOCKED, true, b.reason.to_string(), b.message.clone()),
        None => Decided::new(BLOCKED, false, "NotBlocked", ""),
    });
    let members_message = if members.laggards.is_empty() {
        format!("{}/{} members acknowledged", members.converged, members.total)
    } else {
        format!(
            "{}/{} members acknowledged; waiting for {}",
            members.converged,
            members.total,
            members.laggards.join(", ")
        )
    };
    out.push(Decided::new(
        MEMBERS_CONVERGED,
        converged && current.is_some(),
        if current.is_none() {
            "NothingPublished"
        } else if converged {
            "Converged"
        } else {
            "WaitingForMembers"
        },
        members_message.clone(),
    ));
    let (progressing, reason, message) = match (hold, up_to_date) {
        (Some(Hold::Blocked(b)), _) => (false, b.reason.to_string(), b.message.clone()),
        (Some(Hold::Paused), _) => (
            false,
            "Paused".to_owned(),
            "spec.upgrade.paused holds the next revision".to_owned(),
        ),
        (_, true) => (
            false,
            "UpToDate".to_owned(),
            "the effective declaration is the desired one".to_owned(),
        ),
        (Some(Hold::Soaking(left)), _) => (
            true,
            "Soaking".to_owned(),
            format!("next revision in {}s (minSoak)", left.as_secs()),
        ),
        (Some(Hold::WaitingForMembers), _) => (true, "WaitingForMembers".to_owned(), members_message.clone()),
        (None, false) => (true, "Upgrading".to_owned(), "publishing the next revision".to_owned()),
    };
    out.push(Decided::new(PROGRESSING, progressing, reason, message));
    let ready = blocked.is_none() && up_to_date && converged && current.is_some();
    out.push(Decided::new(
        READY,
        ready,
        if ready {
            "Ready".to_owned()
        } else if let Some(b) = blocked {
            b.reason.to_string()
        } else if !up_to_date {
            "Upgrading".to_owned()
        } else {
            "WaitingForMembers".to_owned()
        },
        if ready {
            current.map(describe).unwrap_or_default()
        } else {
            String::new()
        },
    ));

    // The conversion's milestones, derived from what members have converged on;
    // they apply to declarations by common name.
    if let Some(desired) = desired.filter(|d| !d.accepted.common_names.is_empty()) {
        let effective = current.filter(|_| converged).map(|c| &c.accepted);
        let milestone = |type_: &'static str, done: bool, message: String| {
            if done {
                Decided::new(type_, true, type_, message)
            } else {
                Decided::new(type_, false, "Pending", message)
            }
        };
        let goal_presented = matches!((current, goal), (Some(c), Some(g)) if converged && &c.presented == g);
        out.push(milestone(
            SECONDARY_ADDED,
            goal_presented,
            goal.map_or_else(String::new, |g| format!("members present the goal certificate {g}")),
        ));
        let switched = effective.is_some_and(|e| {
            !e.common_names.is_empty() && e.thumbprints.is_empty() == desired.accepted.thumbprints.is_empty()
        });
        out.push(milestone(
            DECLARATION_SWITCHED,
            switched,
            "members validate by common name as declared".to_owned(),
        ));
        let pinned = effective.is_some_and(|e| e.common_names == desired.accepted.common_names);
        out.push(milestone(
            ISSUERS_PINNED,
            pinned,
            "members accept the declared issuers only".to_owned(),
        ));
    }

    let expiring = presenting
        .and_then(|p| p.not_after)
        .filter(|not_after| not_after.as_second() - now.as_second() < secs(EXPIRY_MARGIN));
    out.push(match expiring {
        Some(not_after) => Decided::new(
            EXPIRING_SOON,
            true,
            "ExpiringSoon",
            format!("the presented certificate expires at notAfter={not_after}"),
        ),
        None => Decided::new(EXPIRING_SOON, false, "NotExpiring", ""),
    });
    out
}

#[cfg(test)]
mod tests;
