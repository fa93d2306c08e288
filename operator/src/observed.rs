//! The ObservedCertificate controller's decision, pure: from the source Secret's
//! material and the current status to the new status and the retained
//! instances (with their keys) for the operator-owned `<name>-store` Secret.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::conditions::{self, Decided, Standing};
use crate::crd::{CurrentInstance, ObservedCertificateSpec, ObservedCertificateStatus};
use crate::decision::Requeue;
use crate::duration;
use crate::facts::tls_material;
use crate::facts::{CertificateBundle, CertificateFacts, PrivateKeyState, TlsMaterial};
use crate::thumbprint::Thumbprint;

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const VALID: &str = "Valid";
pub const EXPIRING_SOON: &str = "ExpiringSoon";
pub const DEFAULT_RETAIN: u32 = 3;
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(720 * 3600);
/// Secret types a certificate source may have: TLS, or untyped (`""` is Opaque).
pub const SOURCE_TYPES: [&str; 3] = ["kubernetes.io/tls", "Opaque", ""];

/// What the source Secret held.
pub enum Source<'a> {
    Missing,
    /// Present, with its keys (`tls.crt`, `tls.key`, `ca.crt`) and its `type`.
    Present(&'a BTreeMap<String, Vec<u8>>, &'a str),
}

pub struct World<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a ObservedCertificateSpec,
    pub status: &'a ObservedCertificateStatus,
    pub source: Source<'a>,
    /// The `<name>-store` Secret's data, if it exists.
    pub stored: Option<&'a BTreeMap<String, Vec<u8>>>,
    /// The store Secret exists but was not created by certshift.
    pub store_owned_elsewhere: bool,
    /// The policy named by `spec.policyRef`, or why it cannot be used
    /// (a condition reason and message).
    pub policy: Option<Result<crate::policy::PolicyParams, (&'static str, String)>>,
    /// Thumbprints the declarations using this store present or accept by
    /// thumbprint with their revision in force: retention never drops them.
    pub in_use: &'a std::collections::BTreeSet<String>,
    pub now: Timestamp,
}

/// What to do: data, compared whole in unit tests (the declaration's shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write; `None` when it is the one stored.
    pub status: Option<ObservedCertificateStatus>,
    /// The writes, in order.
    pub effects: Vec<Effect>,
    pub events: Vec<crate::events::Event>,
    /// When to look again without a watch event (expiry margins).
    pub requeue: Requeue,
}

/// A write of the operator-owned `<name>-store` Secret, whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It does not exist (or was never written): create it; an existing one
    /// is never overwritten by a create.
    CreateStore(BTreeMap<String, String>),
    /// It exists and is certshift's: replace its data.
    ReplaceStore(BTreeMap<String, String>),
}

impl Decision {
    /// The store data this decision writes, if any.
    pub fn store(&self) -> Option<&BTreeMap<String, String>> {
        self.effects
            .iter()
            .map(|effect| match effect {
                Effect::CreateStore(data) | Effect::ReplaceStore(data) => data,
            })
            .next()
    }
}

/// `Valid` reasons that say the source Secret cannot be read as a
/// certificate at all (as opposed to a readable certificate that is expired,
/// weak, …, which the planner judges per instance).
pub const UNREADABLE_SOURCE_REASONS: [&str; 8] = [
    "NoCertificate",
    "MalformedPem",
    "UnexpectedPemLabel",
    "MalformedCertificate",
    "TooManyBlocks",
    "UnexpectedSecretType",
    "MissingKey",
    "PrivateKeyUnreadable",
];

/// Why the ObservedCertificate cannot vouch for its source right now (the
/// Secret is gone, foreign, or unreadable): the reason and message of the
/// condition that says so. A declaration holds its stage while this is so.
pub fn unreadable_source(status: &ObservedCertificateStatus) -> Option<(&str, &str)> {
    status
        .conditions
        .iter()
        .find(|c| {
            (c.type_ == SYNCED && c.status == "False")
                || (c.type_ == VALID && c.status == "False" && UNREADABLE_SOURCE_REASONS.contains(&c.reason.as_str()))
        })
        .map(|c| (c.reason.as_str(), c.message.as_str()))
}

/// Keys of one retained instance in the store Secret.
pub fn store_keys(thumbprint: &Thumbprint) -> [String; 3] {
    [
        format!("{thumbprint}.crt"),
        format!("{thumbprint}.key"),
        format!("{thumbprint}.ca.crt"),
    ]
}

/// The material of one stored instance, as kept in the `-store` Secret.
pub fn stored_material<'a>(data: &'a BTreeMap<String, Vec<u8>>, thumbprint: &Thumbprint) -> Option<TlsMaterial<'a>> {
    let [crt, key, ca] = store_keys(thumbprint);
    Some(TlsMaterial {
        tls_crt: data.get(&crt)?,
        tls_key: data.get(&key).map(Vec::as_slice),
        ca_crt: data.get(&ca).map(Vec::as_slice),
    })
}

/// Why a Secret cannot be a certificate source at all, before its bytes are
/// read: its type, or no `tls.crt` key. A `Valid` reason and message.
fn not_a_certificate_source(
    data: &BTreeMap<String, Vec<u8>>,
    secret_type: &str,
    source_name: &str,
) -> Option<(&'static str, String)> {
    if !SOURCE_TYPES.contains(&secret_type) {
        return Some((
            "UnexpectedSecretType",
            format!(
                "Secret {source_name:?} (spec.source.secretRef) has type {secret_type:?}; expected \"kubernetes.io/tls\" or \"Opaque\""
            ),
        ));
    }
    if !data.contains_key("tls.crt") {
        let keys = if data.is_empty() {
            "none".to_owned()
        } else {
            data.keys().cloned().collect::<Vec<_>>().join(", ")
        };
        return Some((
            "MissingKey",
            format!("Secret {source_name:?} (spec.source.secretRef) has no tls.crt key (it has: {keys})"),
        ));
    }
    None
}

/// `Ready` (Synced, Valid, and Compliant when a policy is referenced) and
/// kstatus's pair. A Secret that does not exist yet, or a certificate that
/// does not yet meet its policy (a renewal may be on its way), is still
/// reconciling; a source certshift cannot use, or a Secret it must not touch,
/// needs a person.
fn readiness(decided: &[Decided], has_policy: bool, current: Option<&CurrentInstance>) -> [Decided; 3] {
    let find = |type_: &str| decided.iter().find(|d| d.type_ == type_);
    let synced = find(SYNCED);
    let valid = find(VALID);
    let compliant = find(crate::policy::COMPLIANT);
    let standing = match (synced, valid, compliant) {
        (Some(s), ..) if !s.status && s.reason == "SecretNotFound" => {
            Standing::Reconciling(s.reason.clone(), s.message.clone())
        }
        (Some(s), ..) if !s.status => Standing::Stalled(s.reason.clone(), s.message.clone()),
        (_, Some(v), _) if !v.status => Standing::Stalled(v.reason.clone(), v.message.clone()),
        (_, None, _) => Standing::Reconciling("NotRead".to_owned(), "the source has not been read yet".to_owned()),
        (.., Some(c)) if has_policy && !c.status && c.reason == "InvalidPolicy" => {
            Standing::Stalled(c.reason.clone(), c.message.clone())
        }
        (.., Some(c)) if has_policy && !c.status => Standing::Reconciling(c.reason.clone(), c.message.clone()),
        _ => Standing::Done,
    };
    let ready = match &standing {
        Standing::Done => Decided::new(
            READY,
            true,
            "Ready",
            format!(
                "current instance {}{}",
                valid.map_or("", |v| v.message.as_str()),
                current
                    .and_then(|c| c.not_after)
                    .map_or_else(String::new, |at| format!(", notAfter={at}"))
            ),
        ),
        Standing::Reconciling(reason, message) | Standing::Stalled(reason, message) => {
            Decided::new(READY, false, reason.clone(), message.clone())
        }
        Standing::Paused(message) => Decided::new(READY, false, "Paused", message.clone()),
    };
    let [reconciling, stalled] = standing.conditions();
    [ready, reconciling, stalled]
}

pub fn decide(world: World<'_>) -> Decision {
    let read = read_source(&world);
    let mut decided = read.decided;
    let current = read.current.or_else(|| world.status.current.clone());
    let kept = retain(&world, read.instance, current.as_ref());
    let store = store_data(&world, &kept, read.material.as_ref());
    let stored_now: Option<BTreeMap<String, String>> = world.stored.map(|data| {
        data.iter()
            .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.clone()).ok()?)))
            .collect()
    });
    let write_store = !store.is_empty() && stored_now.as_ref() != Some(&store) && !world.store_owned_elsewhere;
    if world.store_owned_elsewhere {
        decided.retain(|d| d.type_ != SYNCED);
        decided.push(Decided::new(
            SYNCED,
            false,
            "SecretOwnedElsewhere",
            format!(
                "Secret {:?} exists and was not created by certshift; it is left untouched",
                crate::outputs::store_name(world.name)
            ),
        ));
    }
    // Keep conditions this reconcile could not judge (Valid when the source is missing).
    for previous in &world.status.conditions {
        if !decided.iter().any(|d| d.type_ == previous.type_) && previous.type_ == VALID {
            decided.push(Decided::new(
                VALID,
                previous.status == "True",
                previous.reason.clone(),
                previous.message.clone(),
            ));
        }
    }
    let current_facts = current
        .as_ref()
        .and_then(|c| kept.iter().find(|i| i.thumbprint.as_str() == c.thumbprint));
    let (expiring, requeue) = expiry(&world, current_facts);
    decided.push(expiring);
    decided.extend(compliance(&world, current_facts));
    decided.extend(readiness(&decided, world.spec.policy_ref.is_some(), current.as_ref()));
    let status = ObservedCertificateStatus {
        observed_generation: world.generation,
        conditions: conditions::merge(&world.status.conditions, &decided, world.generation, world.now),
        current,
        instance_count: u32::try_from(kept.len()).unwrap_or(u32::MAX),
        last_sync_time: if kept != world.status.instances {
            Some(world.now)
        } else {
            world.status.last_sync_time
        },
        instances: kept,
    };
    let effects = match (write_store, world.stored) {
        (false, _) => Vec::new(),
        (true, Some(_)) => vec![Effect::ReplaceStore(store)],
        (true, None) => vec![Effect::CreateStore(store)],
    };
    Decision {
        status: (status != *world.status).then_some(status),
        effects,
        events: Vec::new(),
        requeue: requeue.map_or(Requeue::AwaitChange, |after| Requeue::After(after.min(MAX_REQUEUE))),
    }
}

/// A decision as the tests read it: the status after it (written or kept),
/// the store it writes, and when it looks again.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Looked {
    pub status: ObservedCertificateStatus,
    pub store: Option<BTreeMap<String, String>>,
    pub requeue: Option<Duration>,
}

#[cfg(test)]
impl Decision {
    pub(crate) fn after(self, before: &ObservedCertificateStatus) -> Looked {
        Looked {
            store: self.store().cloned(),
            requeue: match self.requeue {
                Requeue::After(after) => Some(after),
                Requeue::AwaitChange => None,
            },
            status: self.status.unwrap_or_else(|| before.clone()),
        }
    }
}

/// Watches bring changes; the requeue only flips `ExpiringSoon` and expiry
/// on time, at least this often.
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);

/// What reading the source gave: `Synced` and `Valid`, and the certificate
/// it holds now with its material.
struct Read {
    decided: Vec<Decided>,
    current: Option<CurrentInstance>,
    instance: Option<CertificateFacts>,
    material: Option<(Thumbprint, BTreeMap<String, String>)>,
}

fn read_source(world: &World<'_>) -> Read {
    let mut read = Read {
        decided: Vec::new(),
        current: None,
        instance: None,
        material: None,
    };
    let source_name = &world.spec.source.secret_ref.name;
    let Source::Present(data, secret_type) = &world.source else {
        read.decided.push(Decided::new(
            SYNCED,
            false,
            "SecretNotFound",
            format!("Secret {source_name:?} (spec.source.secretRef) does not exist"),
        ));
        return read;
    };
    read.decided
        .push(Decided::new(SYNCED, true, "Synced", "the source Secret was read"));
    let bundle = match not_a_certificate_source(data, secret_type, source_name) {
        Some(problem) => Err(problem),
        None => CertificateBundle::from_tls(&tls_material(data)).map_err(|err| (err.reason(), err.to_string())),
    };
    match bundle {
        Err((reason, message)) => read.decided.push(Decided::new(VALID, false, reason, message)),
        Ok(bundle) => {
            read.decided.push(validity(&bundle, world.now));
            let leaf = bundle.leaf;
            read.current = Some(CurrentInstance {
                thumbprint: leaf.thumbprint.to_string(),
                short_thumbprint: leaf.thumbprint.short().to_owned(),
                not_after: Some(leaf.not_after),
            });
            read.material = Some((leaf.thumbprint.clone(), material_of(data)));
            read.instance = Some(leaf);
        }
    }
    read
}

/// The instances kept: newest first, up to `retainInstances`; the current
/// instance and those a declaration's revision in force presents or accepts
/// are always kept.
fn retain(
    world: &World<'_>,
    read: Option<CertificateFacts>,
    current: Option<&CurrentInstance>,
) -> Vec<CertificateFacts> {
    let retain = world.spec.retain_instances.unwrap_or(DEFAULT_RETAIN).max(1) as usize;
    let mut instances = world.status.instances.clone();
    if let Some(leaf) = read {
        match instances.iter_mut().find(|i| i.thumbprint == leaf.thumbprint) {
            Some(existing) => *existing = leaf,
            None => instances.push(leaf),
        }
    }
    instances.sort_by(|a, b| {
        b.not_before
            .cmp(&a.not_before)
            .then_with(|| a.thumbprint.cmp(&b.thumbprint))
    });
    let kept_anyway = |i: &CertificateFacts| {
        current.is_some_and(|c| c.thumbprint == i.thumbprint.as_str()) || world.in_use.contains(i.thumbprint.as_str())
    };
    let mut kept: Vec<CertificateFacts> = Vec::new();
    for instance in instances {
        if kept.len() < retain || kept_anyway(&instance) {
            kept.push(instance);
        }
    }
    while kept.len() > retain {
        let Some(drop_at) = kept.iter().rposition(|i| !kept_anyway(i)) else {
            break;
        };
        kept.remove(drop_at);
    }
    kept
}

/// The store Secret: every kept instance's material, from the source when it
/// is the one just read, else as already stored.
fn store_data(
    world: &World<'_>,
    kept: &[CertificateFacts],
    read: Option<&(Thumbprint, BTreeMap<String, String>)>,
) -> BTreeMap<String, String> {
    let mut store = BTreeMap::new();
    for instance in kept {
        let stored = world.stored.map(|data| {
            store_keys(&instance.thumbprint)
                .into_iter()
                .filter_map(|key| Some((key.clone(), String::from_utf8(data.get(&key)?.clone()).ok()?)))
                .collect::<BTreeMap<_, _>>()
        });
        match (read, stored) {
            (Some((thumbprint, material)), _) if *thumbprint == instance.thumbprint => {
                let [crt, key, ca] = store_keys(thumbprint);
                for (name, field) in [(crt, "tls.crt"), (key, "tls.key"), (ca, "ca.crt")] {
                    if let Some(value) = material.get(field) {
                        store.insert(name, value.clone());
                    }
                }
            }
            (_, Some(stored)) => store.extend(stored),
            _ => {}
        }
    }
    store
}

/// `ExpiringSoon` of the current instance, and when it next changes (the
/// margin reached, notAfter passed, notBefore reached).
fn expiry(world: &World<'_>, current: Option<&CertificateFacts>) -> (Decided, Option<Duration>) {
    let Some(facts) = current else {
        return (
            Decided::new(
                EXPIRING_SOON,
                false,
                "NoCertificate",
                "no current instance to judge: no valid certificate has been read from the source (see Synced and Valid)",
            ),
            None,
        );
    };
    let now = world.now.as_second();
    let margin = match world.spec.expiry_warning_margin.as_deref() {
        None => Ok(DEFAULT_MARGIN),
        Some(text) => duration::parse("spec.expiryWarningMargin", text),
    };
    let margin = match margin {
        Ok(margin) => margin,
        Err(message) => return (Decided::new(EXPIRING_SOON, false, "InvalidDuration", message), None),
    };
    let warn_at = facts
        .not_after
        .as_second()
        .saturating_sub(i64::try_from(margin.as_secs()).unwrap_or(i64::MAX));
    let next = [warn_at, facts.not_after.as_second() + 1, facts.not_before.as_second()]
        .into_iter()
        .filter(|t| *t > now)
        .min()
        .map(|t| Duration::from_secs((t - now).unsigned_abs()));
    let decided = if now >= warn_at {
        Decided::new(
            EXPIRING_SOON,
            true,
            "ExpiringSoon",
            format!("the current instance expires at notAfter={}", facts.not_after),
        )
    } else {
        Decided::new(
            EXPIRING_SOON,
            false,
            "NotExpiring",
            format!("notAfter={}", facts.not_after),
        )
    };
    (decided, next)
}

/// `Compliant`, when `spec.policyRef` names a policy.
fn compliance(world: &World<'_>, current: Option<&CertificateFacts>) -> Option<Decided> {
    Some(match (world.policy.as_ref()?, current) {
        (Ok(params), Some(facts)) => crate::policy::compliance(facts, params),
        (Ok(_), None) => Decided::new(
            crate::policy::COMPLIANT,
            false,
            "NoCertificate",
            "no current instance to check against the policy: no valid certificate has been read from the source (see Synced and Valid)",
        ),
        (Err((reason, message)), _) => Decided::new(crate::policy::COMPLIANT, false, *reason, message.clone()),
    })
}

/// The reason of `Ready` and `Stalled` while reconciles fail.
pub const RECONCILE_FAILED: &str = "ReconcileFailed";

/// The status after a reconcile failed on a request to the API server
/// (forbidden by RBAC, the server away), said where users look: `Ready` False
/// and `Stalled` True, reason `ReconcileFailed`, naming the request, with
/// the Warning event to tell it. `None` when the status says so already:
/// a failure retried every few seconds writes and tells it once. The next
/// reconcile that succeeds decides every condition anew.
pub fn failed(
    status: &ObservedCertificateStatus,
    error: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<(ObservedCertificateStatus, crate::events::Event)> {
    let message = format!("reconciling failed and is retried: {error}");
    let mut decided = vec![Decided::new(READY, false, RECONCILE_FAILED, message.clone())];
    decided.extend(Standing::Stalled(RECONCILE_FAILED.to_owned(), message.clone()).conditions());
    let replaced = conditions::merge(&status.conditions, &decided, generation, now);
    let mut next: Vec<_> = status
        .conditions
        .iter()
        .filter(|c| !replaced.iter().any(|r| r.type_ == c.type_))
        .cloned()
        .collect();
    next.extend(replaced);
    next.sort_by(|a, b| a.type_.cmp(&b.type_));
    if next == conditions::sorted(&status.conditions) {
        return None;
    }
    let event = crate::events::Event {
        type_: crate::events::EventType::Warning,
        reason: RECONCILE_FAILED.to_owned(),
        message,
    };
    let status = ObservedCertificateStatus {
        conditions: next,
        ..status.clone()
    };
    Some((status, event))
}

fn material_of(data: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    ["tls.crt", "tls.key", "ca.crt"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), String::from_utf8(data.get(k)?.clone()).ok()?)))
        .collect()
}

fn validity(bundle: &CertificateBundle, now: Timestamp) -> Decided {
    let leaf = &bundle.leaf;
    let key_problem = bundle.key_message.clone().unwrap_or_default();
    match leaf.private_key {
        PrivateKeyState::Mismatch => return Decided::new(VALID, false, "PrivateKeyMismatch", key_problem),
        PrivateKeyState::Unreadable => return Decided::new(VALID, false, "PrivateKeyUnreadable", key_problem),
        _ => {}
    }
    if let Some(defect) = leaf.defect() {
        return Decided::new(VALID, false, defect.reason(), defect.describe(leaf));
    }
    if now > leaf.not_after {
        return Decided::new(
            VALID,
            false,
            "CertificateExpired",
            format!("notAfter={}", leaf.not_after),
        );
    }
    if now < leaf.not_before {
        return Decided::new(
            VALID,
            false,
            "CertificateNotYetValid",
            format!("notBefore={}", leaf.not_before),
        );
    }
    let message = match leaf.private_key {
        PrivateKeyState::Missing => format!(
            "{} (no private key: it can be accepted, not presented)",
            leaf.thumbprint
        ),
        _ => leaf.thumbprint.to_string(),
    };
    Decided::new(VALID, true, "Valid", message)
}

#[cfg(test)]
#[path = "observed_catalogue.rs"]
mod catalogue;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CertificateSource, LocalObjectReference};
    use crate::facts::FactsError;
    use crate::testing::{cert, ts};

    /// Reads one retained instance back from the store Secret's data.
    fn stored_instance(
        data: &BTreeMap<String, Vec<u8>>,
        thumbprint: &Thumbprint,
    ) -> Option<Result<CertificateBundle, FactsError>> {
        stored_material(data, thumbprint).map(|material| CertificateBundle::from_tls(&material))
    }

    fn spec(retain: u32) -> ObservedCertificateSpec {
        ObservedCertificateSpec {
            source: CertificateSource {
                secret_ref: LocalObjectReference { name: "tls".into() },
            },
            retain_instances: Some(retain),
            ..Default::default()
        }
    }

    fn source(issued: &crate::testing::Issued) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("tls.crt".to_owned(), issued.pem.clone().into_bytes()),
            ("tls.key".to_owned(), issued.key_pem().into_bytes()),
        ])
    }

    fn step(
        spec: &ObservedCertificateSpec,
        status: &ObservedCertificateStatus,
        data: Option<&BTreeMap<String, Vec<u8>>>,
        stored: Option<&BTreeMap<String, Vec<u8>>>,
        now: &str,
    ) -> Looked {
        decide(World {
            name: "cluster",
            generation: Some(1),
            spec,
            status,
            source: data.map_or(Source::Missing, |data| Source::Present(data, "kubernetes.io/tls")),
            stored,
            store_owned_elsewhere: false,
            policy: None,
            in_use: &Default::default(),
            now: ts(now),
        })
        .after(status)
    }

    fn condition<'a>(status: &'a ObservedCertificateStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).expect(type_);
        (c.status.as_str(), c.reason.as_str())
    }

    fn as_bytes(store: &BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
        store.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect()
    }

    #[test]
    fn renewals_are_retained_newest_first_with_their_keys() {
        let spec = spec(2);
        let first = cert("c.example")
            .valid("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
            .self_signed();
        let second = cert("c.example")
            .valid("2026-02-01T00:00:00Z", "2027-02-01T00:00:00Z")
            .self_signed();
        let third = cert("c.example")
            .valid("2026-03-01T00:00:00Z", "2027-03-01T00:00:00Z")
            .self_signed();
        let now = "2026-04-01T00:00:00Z";
        let mut status = ObservedCertificateStatus::default();
        let mut stored: Option<BTreeMap<String, Vec<u8>>> = None;
        for issued in [&first, &second, &third] {
            let decision = step(&spec, &status, Some(&source(issued)), stored.as_ref(), now);
            if let Some(store) = &decision.store {
                stored = Some(as_bytes(store));
            }
            status = decision.status;
        }
        assert_eq!(status.instance_count, 2, "retainInstances");
        let bundle = |issued: &crate::testing::Issued| {
            CertificateBundle::from_tls(&TlsMaterial {
                tls_crt: issued.pem.as_bytes(),
                tls_key: None,
                ca_crt: None,
            })
            .unwrap()
            .leaf
        };
        let (newest, older) = (bundle(&third), bundle(&second));
        assert_eq!(status.instances[0].thumbprint, newest.thumbprint);
        assert_eq!(status.instances[1].thumbprint, older.thumbprint);
        assert_eq!(
            status.current.as_ref().unwrap().thumbprint,
            newest.thumbprint.to_string()
        );
        // The store keeps the retained instances' keys, and only theirs.
        let stored = stored.unwrap();
        let restored = stored_instance(&stored, &older.thumbprint).unwrap().unwrap();
        assert_eq!(restored.leaf.private_key, PrivateKeyState::Matches);
        assert!(stored_instance(&stored, &bundle(&first).thumbprint).is_none());
        assert_eq!(condition(&status, VALID), ("True", "Valid"));
        assert_eq!(condition(&status, SYNCED), ("True", "Synced"));
    }

    /// Retention keeps what a declaration's revision in force presents or
    /// accepts, beyond retainInstances, and drops it once no longer in use.
    #[test]
    fn retention_never_drops_an_instance_in_use() {
        let spec = spec(1);
        let issued: Vec<_> = (1..=3)
            .map(|month| {
                cert("c.example")
                    .valid(&format!("2026-0{month}-01T00:00:00Z"), "2027-06-01T00:00:00Z")
                    .self_signed()
            })
            .collect();
        let leaf = |i: usize| {
            CertificateBundle::from_tls(&TlsMaterial {
                tls_crt: issued[i].pem.as_bytes(),
                tls_key: None,
                ca_crt: None,
            })
            .unwrap()
            .leaf
            .thumbprint
        };
        // Members present the first; it is declared by thumbprint.
        let in_use = std::collections::BTreeSet::from([leaf(0).to_string()]);
        let mut status = ObservedCertificateStatus::default();
        let mut stored: Option<BTreeMap<String, Vec<u8>>> = None;
        for renewal in &issued {
            let decision = decide(World {
                name: "cluster",
                generation: Some(1),
                spec: &spec,
                status: &status,
                source: Source::Present(&source(renewal), "kubernetes.io/tls"),
                stored: stored.as_ref(),
                store_owned_elsewhere: false,
                policy: None,
                in_use: &in_use,
                now: ts("2026-04-01T00:00:00Z"),
            })
            .after(&status);
            if let Some(store) = &decision.store {
                stored = Some(as_bytes(store));
            }
            status = decision.status;
        }
        let kept: Vec<Thumbprint> = status.instances.iter().map(|i| i.thumbprint.clone()).collect();
        assert_eq!(
            kept,
            [leaf(2), leaf(0)],
            "the current one, and the one in use beyond retainInstances: 1"
        );
        assert!(
            stored_instance(stored.as_ref().unwrap(), &leaf(0)).is_some(),
            "with its key"
        );
        // No longer in use: dropped at the next look.
        let decision = step(
            &spec,
            &status,
            Some(&source(&issued[2])),
            stored.as_ref(),
            "2026-04-02T00:00:00Z",
        );
        let kept: Vec<Thumbprint> = decision.status.instances.iter().map(|i| i.thumbprint.clone()).collect();
        assert_eq!(kept, [leaf(2)]);
    }

    #[test]
    fn an_unchanged_source_changes_nothing() {
        let spec = spec(3);
        let issued = cert("c.example").self_signed();
        let first = step(
            &spec,
            &ObservedCertificateStatus::default(),
            Some(&source(&issued)),
            None,
            "2026-06-01T00:00:00Z",
        );
        let stored = as_bytes(first.store.as_ref().unwrap());
        let again = step(
            &spec,
            &first.status,
            Some(&source(&issued)),
            Some(&stored),
            "2026-06-02T00:00:00Z",
        );
        assert_eq!(again.status, first.status);
        assert_eq!(again.store, None, "no store write");
    }

    #[test]
    fn a_malformed_source_is_invalid_and_keeps_what_was_seen() {
        let spec = spec(3);
        let issued = cert("c.example").self_signed();
        let good = step(
            &spec,
            &ObservedCertificateStatus::default(),
            Some(&source(&issued)),
            None,
            "2026-06-01T00:00:00Z",
        );
        let garbage = BTreeMap::from([("tls.crt".to_owned(), b"-----BEGIN CERTIFICATE-----\nAA\n".to_vec())]);
        let bad = step(&spec, &good.status, Some(&garbage), None, "2026-06-01T00:01:00Z");
        assert_eq!(condition(&bad.status, VALID), ("False", "MalformedPem"));
        assert_eq!(bad.status.instances, good.status.instances);
        // The same malformed input again: the same status, so no write and no loop.
        let again = step(&spec, &bad.status, Some(&garbage), None, "2026-06-01T00:02:00Z");
        assert_eq!(again.status, bad.status);
    }

    /// `kubectl describe` shows each condition's message: none is blank, not
    /// even before anything was read.
    #[test]
    fn every_condition_says_why_before_anything_was_read() {
        let missing = step(
            &spec(3),
            &ObservedCertificateStatus::default(),
            None,
            None,
            "2026-06-01T00:00:00Z",
        );
        for c in &missing.status.conditions {
            assert!(!c.message.is_empty(), "{} {}: no message", c.type_, c.reason);
        }
    }

    #[test]
    fn a_mismatched_key_and_a_missing_source_are_reasons() {
        let spec = spec(3);
        let a = cert("a.example").self_signed();
        let b = cert("b.example").self_signed();
        let mut mixed = source(&a);
        mixed.insert("tls.key".into(), b.key_pem().into_bytes());
        let decision = step(
            &spec,
            &ObservedCertificateStatus::default(),
            Some(&mixed),
            None,
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(condition(&decision.status, VALID), ("False", "PrivateKeyMismatch"));
        let missing = step(&spec, &decision.status, None, None, "2026-06-01T00:00:00Z");
        assert_eq!(condition(&missing.status, SYNCED), ("False", "SecretNotFound"));
        assert_eq!(
            condition(&missing.status, VALID).1,
            "PrivateKeyMismatch",
            "kept from before"
        );
    }

    #[test]
    fn expiring_soon_flips_at_the_margin_and_requeues_for_it() {
        let spec = spec(3);
        let issued = cert("c.example")
            .valid("2026-01-01T00:00:00Z", "2026-12-31T00:00:00Z")
            .self_signed();
        let early = step(
            &spec,
            &ObservedCertificateStatus::default(),
            Some(&source(&issued)),
            None,
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(condition(&early.status, EXPIRING_SOON).0, "False");
        // 720h before notAfter is 2026-12-01.
        assert_eq!(early.requeue, Some(MAX_REQUEUE), "months away: looked at hourly");
        let close = step(
            &spec,
            &early.status,
            Some(&source(&issued)),
            None,
            "2026-11-30T23:59:00Z",
        );
        assert_eq!(
            close.requeue,
            Some(Duration::from_secs(60)),
            "looked at when the margin is reached"
        );
        assert_eq!(condition(&close.status, EXPIRING_SOON).0, "False");
        let late = step(
            &spec,
            &early.status,
            Some(&source(&issued)),
            None,
            "2026-12-02T00:00:00Z",
        );
        assert_eq!(condition(&late.status, EXPIRING_SOON), ("True", "ExpiringSoon"));
        // A margin that is no duration is said, not replaced by the default.
        let mut bad = spec.clone();
        bad.expiry_warning_margin = Some("a month".into());
        let said = step(&bad, &late.status, Some(&source(&issued)), None, "2026-12-02T00:00:00Z");
        assert_eq!(condition(&said.status, EXPIRING_SOON), ("False", "InvalidDuration"));
        let message = &said
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == EXPIRING_SOON)
            .unwrap()
            .message;
        assert!(message.starts_with("spec.expiryWarningMargin: "), "{message}");
    }

    #[test]
    fn a_failed_reconcile_is_said_in_the_status_once_and_cleared_by_the_next_success() {
        let spec = spec(2);
        let issued = cert("c.example")
            .valid("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
            .self_signed();
        let data = source(&issued);
        let ready = step(&spec, &Default::default(), Some(&data), None, "2026-06-01T00:00:00Z").status;
        assert_eq!(condition(&ready, READY), ("True", "Ready"));

        let forbidden = "Create Secret ns/cluster-store: secrets is forbidden (403)";
        let (failed, event) = failed(&ready, forbidden, Some(1), ts("2026-06-01T00:01:00Z")).expect("a change");
        assert_eq!(condition(&failed, READY), ("False", RECONCILE_FAILED));
        assert_eq!(condition(&failed, conditions::STALLED), ("True", RECONCILE_FAILED));
        assert_eq!(condition(&failed, conditions::RECONCILING), ("False", "Stalled"));
        assert_eq!(
            condition(&failed, SYNCED),
            condition(&ready, SYNCED),
            "what it did not judge is kept"
        );
        assert_eq!(failed.instances, ready.instances);
        assert_eq!(
            (event.type_, event.reason.as_str()),
            (crate::events::EventType::Warning, RECONCILE_FAILED)
        );
        assert!(event.message.ends_with(forbidden), "{}", event.message);
        // Retried and failing the same way: no write, no event.
        assert_eq!(failed_again(&failed, forbidden), None);
        // Failing another way is told.
        assert!(failed_again(&failed, "Get Secret ns/src: connection refused").is_some());
        // The next reconcile that succeeds is Ready again.
        let recovered = step(&spec, &failed, Some(&data), None, "2026-06-01T00:02:00Z").status;
        assert_eq!(condition(&recovered, READY), ("True", "Ready"));
        assert_eq!(condition(&recovered, conditions::STALLED).0, "False");
    }

    fn failed_again(
        status: &ObservedCertificateStatus,
        error: &str,
    ) -> Option<(ObservedCertificateStatus, crate::events::Event)> {
        failed(status, error, Some(1), ts("2026-06-01T00:01:30Z"))
    }
}
