//! The declaration's status in users' terms (docs/reference.md, "Conditions and reasons"): conditions, the
//! effective declaration in the Service Fabric shape, and the sentences that
//! describe a revision. Pure, and deterministic: messages carry fixed figures.

use std::time::Duration;

use jiff::Timestamp;

use crate::blocked::{BlockReason, Blocked};
use crate::conditions::{Decided, Standing};
use crate::crd::{
    CertificateCommonNames, CertificateInUse, CertificateThumbprints, ClientCertificateCommonName,
    ClientCertificateThumbprint, CommonNameDeclaration, EffectiveDeclaration, MembersStatus, UpgradeOrigin,
};
use crate::facts::CertificateFacts;
use crate::planner::Desired;
use crate::revision::Revision;
use crate::rules::Accepted;
use crate::thumbprint::{Thumbprint, join_thumbprints};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const SECONDARY_ADDED: &str = "SecondaryAdded";
pub const DECLARATION_SWITCHED: &str = "DeclarationSwitched";
pub const ISSUERS_PINNED: &str = "IssuersPinned";
pub const MEMBERS_CONVERGED: &str = "MembersConverged";
pub const BLOCKED: &str = "Blocked";
pub const EXPIRING_SOON: &str = "ExpiringSoon";
pub const SAN_OVERLAP: &str = "SanOverlap";
/// A Warning: a certificate the revision in force presents, tolerates or
/// declares by thumbprint is revoked by a CRL in force.
pub const REVOKED: &str = "Revoked";

/// Service Fabric's CertificateExpirySafetyMargin.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why the next revision is not published now.
#[derive(Clone, Debug, PartialEq)]
pub enum Hold {
    Blocked(Blocked),
    Paused,
    /// A store block just after creation, within `STORE_SYNC_GRACE` (the message).
    WaitingForStore(String),
    WaitingForMembers,
    /// The health check of the revision in force waits
    /// (`HealthCheckWaiting`), holds the members healthy for
    /// `healthCheckStableDuration` (`Soaking`) or retries
    /// (`HealthCheckRetrying`); looked at again after `left`. The message
    /// names times, not durations left, so a look does not rewrite it.
    Checking {
        reason: &'static str,
        message: String,
        left: Duration,
    },
}

/// One line on a revision: what it changes, what members present and accept.
pub fn describe(revision: &Revision) -> String {
    let change = match revision.change {
        Some(change) => format!("{change:?} revision"),
        None => "revision".to_owned(),
    };
    format!(
        "{change} {}: present {}, accept {}",
        revision.revision,
        revision.presented,
        describe_accepted(&revision.accepted)
    )
}

fn describe_accepted(accepted: &Accepted) -> String {
    let mut parts: Vec<String> = accepted.thumbprints.iter().map(|t| format!("thumbprint {t}")).collect();
    parts.extend(accepted.common_names.iter().map(|rule| {
        if rule.is_pinned() {
            format!("{} from {}", rule.name, join_thumbprints(&rule.issuer_thumbprints))
        } else {
            format!("{} (trust bundle)", rule.name)
        }
    }));
    parts.join(", ")
}

/// Key Vault's link-on-renewal hazard: a certificate whose DNS SANs include
/// all of another's (of a different common name) would redirect it. Pairs are
/// reported once, smaller SAN list first, sorted, so the message is stable.
/// Every certificate `current` relies on that the store or the trust bundle
/// holds, each once with its first role (presented, accepted thumbprint,
/// pinned issuer, client, CA of the presented certificate), sorted by
/// notAfter then thumbprint.
pub fn certificates_in_use(current: Option<&Revision>, store: &crate::planner::Store) -> Vec<CertificateInUse> {
    let Some(current) = current else {
        return Vec::new();
    };
    let mut in_use: Vec<CertificateInUse> = Vec::new();
    let mut add = |role: &str, cert: &CertificateFacts| {
        if !in_use.iter().any(|u| u.thumbprint == cert.thumbprint.as_str()) {
            in_use.push(CertificateInUse {
                role: role.to_owned(),
                thumbprint: cert.thumbprint.to_string(),
                common_name: cert.common_name.clone(),
                not_after: cert.not_after,
            });
        }
    };
    let known = |tp: &Thumbprint| store.find(tp).or_else(|| store.trust.authority(tp));
    let presented = store.find(&current.presented);
    if let Some(presented) = presented {
        add("Presented", presented);
    }
    for tp in &current.accepted.thumbprints {
        if let Some(cert) = known(tp) {
            add("AcceptedThumbprint", cert);
        }
    }
    let pins = current.accepted.common_names.iter().flat_map(|r| &r.issuer_thumbprints);
    let client_pins = current.clients.common_names.iter().flat_map(|c| &c.issuer_thumbprints);
    for tp in pins.chain(client_pins) {
        if let Some(cert) = known(tp) {
            add("PinnedIssuer", cert);
        }
    }
    for client in &current.clients.thumbprints {
        if let Some(cert) = known(&client.thumbprint) {
            add("ClientThumbprint", cert);
        }
    }
    // Last: a CA that is also pinned is named as the pinned issuer.
    for ca in presented
        .iter()
        .flat_map(|p| store.trust.path(p).certificates.into_iter().skip(1))
    {
        add("PresentedChain", ca);
    }
    in_use.sort_by(|a, b| (a.not_after, &a.thumbprint).cmp(&(b.not_after, &b.thumbprint)));
    in_use
}

/// `ExpiringSoon`: each certificate in use that expires within `margin` (or
/// has expired), named with its role and notAfter. The message holds no
/// countdown, so it changes only with what is in use.
pub fn expiring_soon(in_use: &[CertificateInUse], margin: Duration, now: Timestamp) -> Decided {
    let horizon = jiff::SignedDuration::from_secs(secs(margin));
    let expiring: Vec<String> = in_use
        .iter()
        .filter(|u| u.not_after.duration_since(now) < horizon)
        .map(|u| {
            let verb = if u.not_after < now { "expired" } else { "expires" };
            format!(
                "{} {} {verb} at notAfter={}",
                role_text(&u.role),
                u.thumbprint,
                u.not_after
            )
        })
        .collect();
    match (expiring.is_empty(), in_use.first()) {
        (false, _) => Decided::new(EXPIRING_SOON, true, "ExpiringSoon", expiring.join("; ")),
        (true, Some(first)) => Decided::new(
            EXPIRING_SOON,
            false,
            "NotExpiring",
            format!(
                "every certificate in use is valid beyond the margin; the first to expire is {} {} at notAfter={}",
                role_text(&first.role),
                first.thumbprint,
                first.not_after
            ),
        ),
        (true, None) => Decided::new(EXPIRING_SOON, false, "NotExpiring", "no certificate is in use yet"),
    }
}

fn role_text(role: &str) -> &'static str {
    match role {
        "Presented" => "the presented certificate",
        "PresentedChain" => "the presented certificate's CA",
        "AcceptedThumbprint" => "accepted thumbprint",
        "PinnedIssuer" => "pinned issuer",
        "ClientThumbprint" => "client certificate",
        _ => "certificate",
    }
}

/// The `Revoked` condition of the revision in force (`current`): which of
/// the certificates it relies on a CRL in force revokes, and what happens.
pub fn revoked_in_use(current: Option<&Revision>, store: &crate::planner::Store, goal: Option<&Thumbprint>) -> Decided {
    let mut found: Vec<String> = Vec::new();
    for cert in &store.instances {
        let Some(revoked) = store.trust.revoked_on_path(cert) else {
            continue;
        };
        let Some(current) = current else { continue };
        let role = if cert.thumbprint == current.presented {
            match goal {
                Some(goal) if *goal != cert.thumbprint => "presented; members are moved to another certificate",
                _ => "presented, and no other certificate of the store can replace it: add one (see Blocked)",
            }
        } else if current.tolerated.contains(&cert.thumbprint) {
            "tolerated until members no longer present it"
        } else if current.accepted.thumbprints.iter().any(|t| cert.has_thumbprint(t)) {
            "declared by thumbprint; members refuse it"
        } else {
            continue;
        };
        let by = if revoked == cert.thumbprint {
            format!("serial {}", cert.serial)
        } else {
            format!("its CA {revoked}")
        };
        found.push(format!("{} ({by}) is revoked: {role}", cert.thumbprint));
    }
    if found.is_empty() {
        Decided::new(REVOKED, false, "NotRevoked", "no certificate in use is revoked")
    } else {
        Decided::new(REVOKED, true, "CertificateRevoked", found.join("; "))
    }
}

pub fn san_overlap(instances: &[CertificateFacts]) -> Decided {
    use std::collections::BTreeSet;
    let sans =
        |f: &CertificateFacts| -> BTreeSet<String> { f.dns_names.iter().map(|d| d.to_ascii_lowercase()).collect() };
    let cn = |f: &CertificateFacts| f.common_name.clone().unwrap_or_default().to_ascii_lowercase();
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
/// The revision in force as a rollback's destination, in the spec's shape.
pub fn origin_of(revision: &Revision) -> UpgradeOrigin {
    let effective = effective_declaration(revision);
    UpgradeOrigin {
        revision: revision.revision,
        certificate: effective.certificate,
        certificate_common_names: effective.certificate_common_names,
        client_certificate_thumbprints: revision
            .clients
            .thumbprints
            .iter()
            .map(|c| ClientCertificateThumbprint {
                certificate_thumbprint: c.thumbprint.to_string(),
                is_admin: c.is_admin,
            })
            .collect(),
        client_certificate_common_names: revision
            .clients
            .common_names
            .iter()
            .map(|c| ClientCertificateCommonName {
                certificate_common_name: c.name.clone(),
                certificate_issuer_thumbprint: join_thumbprints(&c.issuer_thumbprints),
                is_admin: c.is_admin,
            })
            .collect(),
    }
}

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
        trust_anchors: Some(revision.anchors.iter().map(ToString::to_string).collect()),
    }
}

/// What the conditions are decided from.
pub(super) struct Facts<'a> {
    pub hold: Option<&'a Hold>,
    /// The revision members are told after this reconcile.
    pub current: Option<&'a Revision>,
    /// Nothing left to publish after `current`.
    pub up_to_date: bool,
    pub members: &'a MembersStatus,
    pub desired: Option<&'a Desired>,
    pub goal: Option<&'a Thumbprint>,
    /// Within the grace period after the declaration's creation: what may
    /// clear by itself is still waited for.
    pub fresh: bool,
    /// `current` is published by this reconcile: its health check has not begun.
    pub just_published: bool,
    /// A rollback under way: what the walk is, and why.
    pub rolling_back: Option<&'a crate::crd::RollbackStatus>,
}

/// Every condition the declaration controller owns, from [`Facts`]: Blocked,
/// MembersConverged, Progressing, kstatus's pair, Ready and the milestones.
pub(super) fn conditions(facts: &Facts<'_>) -> Vec<Decided> {
    let members_message = members_message(facts.members);
    let mut out = vec![blocked(facts.hold), members_converged(facts, &members_message)];
    let (progressing, reason, message) = progressing(facts, &members_message);
    out.push(Decided::new(PROGRESSING, progressing, reason.clone(), message.clone()));
    out.extend(readiness(facts, (reason, message), members_message));
    out.extend(milestones(facts));
    out
}

const PAUSED: &str = "spec.upgrade.paused holds the next revision";

fn converged(members: &MembersStatus) -> bool {
    members.converged == members.total
}

fn members_message(members: &MembersStatus) -> String {
    if members.laggards.is_empty() {
        format!("{}/{} members acknowledged", members.converged, members.total)
    } else {
        format!(
            "{}/{} members acknowledged; waiting for {}",
            members.converged,
            members.total,
            members.laggards.join(", ")
        )
    }
}

fn blocked(hold: Option<&Hold>) -> Decided {
    match hold {
        Some(Hold::Blocked(b)) => Decided::new(BLOCKED, true, b.reason.to_string(), b.message.clone()),
        Some(Hold::WaitingForStore(message)) => Decided::new(
            BLOCKED,
            false,
            "WaitingForStore",
            format!("{message}; not a block until the store had time to sync"),
        ),
        Some(Hold::Paused) => Decided::new(
            BLOCKED,
            false,
            "NotBlocked",
            "nothing blocks the declaration; spec.upgrade.paused holds it",
        ),
        _ => Decided::new(BLOCKED, false, "NotBlocked", "nothing holds the declaration"),
    }
}

fn members_converged(facts: &Facts<'_>, message: &str) -> Decided {
    let converged = converged(facts.members);
    let reason = match (facts.current, converged) {
        (None, _) => "NothingPublished",
        (Some(_), true) => "Converged",
        (Some(_), false) => "WaitingForMembers",
    };
    Decided::new(MEMBERS_CONVERGED, converged && facts.current.is_some(), reason, message)
}

/// `Progressing`: its status, reason and message.
fn progressing(facts: &Facts<'_>, members_message: &str) -> (bool, String, String) {
    match (facts.hold, facts.up_to_date) {
        (Some(Hold::Blocked(b)), _) => (false, b.reason.to_string(), b.message.clone()),
        (Some(Hold::Paused), _) => (false, "Paused".to_owned(), PAUSED.to_owned()),
        (Some(Hold::WaitingForStore(message)), _) => (true, "WaitingForStore".to_owned(), message.clone()),
        _ if facts.rolling_back.is_some() => {
            let rollback = facts.rolling_back.expect("matched");
            (
                true,
                "RollingBack".to_owned(),
                format!(
                    "rolling back generation {}'s change since {}: {}",
                    rollback.generation, rollback.started_time, rollback.message
                ),
            )
        }
        (Some(Hold::Checking { reason, message, .. }), _) => (true, (*reason).to_owned(), message.clone()),
        // The last revision, just published: its health is checked next.
        (None, true) if facts.just_published => (
            true,
            "Upgrading".to_owned(),
            "the last revision is published; its members' health is checked next".to_owned(),
        ),
        (_, true) => (
            false,
            "UpToDate".to_owned(),
            "the effective declaration is the desired one".to_owned(),
        ),
        // Just published, or published before: the same wait, the same words,
        // so the look after a publication finds nothing to write.
        (Some(Hold::WaitingForMembers), _) | (None, false) if !converged(facts.members) => {
            (true, "WaitingForMembers".to_owned(), members_message.to_owned())
        }
        (_, false) => (true, "Upgrading".to_owned(), "publishing the next revision".to_owned()),
    }
}

/// kstatus's `Reconciling` and `Stalled`, and `Ready`.
fn readiness(facts: &Facts<'_>, progressing: (String, String), members_message: String) -> Vec<Decided> {
    let Facts {
        hold,
        current,
        up_to_date,
        fresh,
        ..
    } = *facts;
    let blocked = matches!(hold, Some(Hold::Blocked(_)));
    // A store still syncing is no block yet, and no readiness either.
    let waiting_for_store = matches!(hold, Some(Hold::WaitingForStore(_)));
    // The last revision's health check holds readiness too.
    let checking = matches!(hold, Some(Hold::Checking { .. })) || facts.just_published;
    let ready =
        !blocked && !waiting_for_store && !checking && up_to_date && converged(facts.members) && current.is_some();
    let standing = match (hold, ready) {
        (_, true) => Standing::Done,
        (Some(Hold::Blocked(b)), _)
            if !b.reason.needs_a_person() && (fresh || b.reason == BlockReason::CertificateNotYetValid) =>
        {
            Standing::Reconciling(b.reason.to_string(), b.message.clone())
        }
        (Some(Hold::Blocked(b)), _) => Standing::Stalled(b.reason.to_string(), b.message.clone()),
        (Some(Hold::Paused), _) => Standing::Paused(PAUSED.to_owned()),
        (Some(Hold::WaitingForStore(message)), _) => {
            Standing::Reconciling("WaitingForStore".to_owned(), message.clone())
        }
        (Some(Hold::Checking { .. }), _) => Standing::Reconciling(progressing.0, progressing.1),
        (None, false) if facts.just_published => Standing::Reconciling(progressing.0, progressing.1),
        // A rollback says so wherever `kubectl get` and kstatus look, also
        // while its revisions wait for members.
        (_, false) if facts.rolling_back.is_some() => Standing::Reconciling(progressing.0, progressing.1),
        (_, false) if !up_to_date => Standing::Reconciling(progressing.0, progressing.1),
        (_, false) => Standing::Reconciling("WaitingForMembers".to_owned(), members_message),
    };
    let (reason, message) = match &standing {
        Standing::Done => ("Ready".to_owned(), current.map(describe).unwrap_or_default()),
        Standing::Reconciling(reason, message) | Standing::Stalled(reason, message) => {
            (reason.clone(), message.clone())
        }
        Standing::Paused(message) => ("Paused".to_owned(), message.clone()),
    };
    let mut out = standing.conditions().to_vec();
    out.push(Decided::new(READY, ready, reason, message));
    out
}

/// The conversion's milestones, derived from what members have converged on;
/// they apply to declarations by common name.
fn milestones(facts: &Facts<'_>) -> Vec<Decided> {
    let Facts {
        current, desired, goal, ..
    } = *facts;
    let Some(desired) = desired.filter(|d| !d.accepted.common_names.is_empty()) else {
        return Vec::new();
    };
    let converged = converged(facts.members);
    let effective = current.filter(|_| converged).map(|c| &c.accepted);
    let milestone = |type_: &'static str, done: bool, message: String| {
        if done {
            Decided::new(type_, true, type_, message)
        } else {
            Decided::new(type_, false, "Pending", format!("not yet: {message}"))
        }
    };
    let goal_presented = matches!((current, goal), (Some(c), Some(g)) if converged && &c.presented == g);
    let switched = effective.is_some_and(|e| {
        !e.common_names.is_empty() && e.thumbprints.is_empty() == desired.accepted.thumbprints.is_empty()
    });
    let pinned = effective.is_some_and(|e| e.common_names == desired.accepted.common_names);
    vec![
        // Without a goal now (see Blocked), a conversion already switched is past this step.
        milestone(
            SECONDARY_ADDED,
            goal_presented || (goal.is_none() && switched),
            goal.map_or_else(
                || match facts.hold {
                    // Blocked is False while the store syncs: point where the wait is said.
                    Some(Hold::WaitingForStore(_)) => {
                        "no goal certificate while the store syncs (see Progressing)".to_owned()
                    }
                    _ => "no goal certificate can be presented now (see Blocked)".to_owned(),
                },
                |g| format!("members present the goal certificate {g}"),
            ),
        ),
        milestone(
            DECLARATION_SWITCHED,
            switched,
            "members validate by common name as declared".to_owned(),
        ),
        milestone(
            ISSUERS_PINNED,
            pinned,
            "members accept the declared issuers only".to_owned(),
        ),
    ]
}

pub(super) fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
