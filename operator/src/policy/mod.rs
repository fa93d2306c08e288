//! CertificatePolicy, the Key Vault certificate policy in-cluster: the spec
//! validated into [`PolicyParams`], when to issue or renew ([`decide`]), the
//! status after an attempt ([`after_attempt`]), and compliance of observed
//! certificates ([`compliance`]). Pure; [`issue`] generates the certificates.

pub mod issue;

use std::net::IpAddr;
use std::time::Duration;

use crate::events::{Event, EventType};
use jiff::Timestamp;
use sha2::Digest as _;

use crate::conditions::{self, Decided, Standing};
use crate::crd::{CertificatePolicySpec, CertificatePolicyStatus, Subject};

use crate::duration;
use crate::facts::CertificateFacts;

pub const READY: &str = "Ready";
pub const ISSUING: &str = "Issuing";
pub const COMPLIANT: &str = "Compliant";
/// On the issued Secret: the spec it was issued for.
pub const POLICY_HASH_ANNOTATION: &str = "certshift.io/policy-hash";
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
pub const DEFAULT_RENEW_PERCENTAGE: u8 = 80;
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa(u32),
}

impl KeyKind {
    /// As certificate facts name it: (algorithm, size).
    pub fn facts_name(self) -> (&'static str, u32) {
        match self {
            KeyKind::EcdsaP256 => ("ECDSA", 256),
            KeyKind::EcdsaP384 => ("ECDSA", 384),
            KeyKind::Ed25519 => ("Ed25519", 256),
            KeyKind::Rsa(bits) => ("RSA", bits),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    PercentageOfLifetime(u8),
    DaysBeforeExpiry(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerKind {
    SelfSigned,
    /// A TLS Secret with the CA certificate and key.
    Ca(String),
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyParams {
    pub subject: Subject,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub uris: Vec<String>,
    pub extended_key_usages: Vec<String>,
    pub key_usages: Vec<String>,
    pub key: KeyKind,
    pub reuse_key: bool,
    pub validity: Duration,
    pub trigger: Trigger,
    pub issuer: IssuerKind,
    pub secret_name: String,
}

/// A spec that cannot be issued: a condition reason and a message naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub reason: &'static str,
    pub message: String,
}

fn reject(reason: &'static str, message: impl Into<String>) -> PolicyError {
    PolicyError {
        reason,
        message: message.into(),
    }
}

pub use crate::crd::{EXTENDED_KEY_USAGES, KEY_USAGES};

/// Validates a spec; every rejection names the field.
pub fn params(spec: &CertificatePolicySpec) -> Result<PolicyParams, PolicyError> {
    if spec.secret_name.trim().is_empty() {
        return Err(reject("InvalidSecretName", "spec.secretName: required"));
    }
    let key = spec.key.clone().unwrap_or_default();
    let algorithm = key.algorithm.as_deref().unwrap_or("ECDSA");
    let kind = match (algorithm.to_ascii_uppercase().as_str(), key.size) {
        ("ECDSA" | "EC", None | Some(256)) => KeyKind::EcdsaP256,
        ("ECDSA" | "EC", Some(384)) => KeyKind::EcdsaP384,
        ("ECDSA" | "EC", Some(size)) => {
            return Err(reject(
                "UnsupportedKeySize",
                format!("spec.key.size: ECDSA supports 256 (P-256) and 384 (P-384), not {size}"),
            ));
        }
        ("RSA", None) => KeyKind::Rsa(2048),
        ("RSA", Some(size @ (2048 | 3072 | 4096))) => KeyKind::Rsa(size),
        ("RSA", Some(size)) if size < 2048 => {
            return Err(reject(
                "KeyTooWeak",
                format!("spec.key.size: RSA {size} is too weak; use 2048, 3072 or 4096"),
            ));
        }
        ("RSA", Some(size)) => {
            return Err(reject(
                "UnsupportedKeySize",
                format!("spec.key.size: RSA supports 2048, 3072 and 4096, not {size}"),
            ));
        }
        ("ED25519", None | Some(256)) => KeyKind::Ed25519,
        ("ED25519", Some(size)) => {
            return Err(reject(
                "UnsupportedKeySize",
                format!("spec.key.size: Ed25519 keys are 256 bits, not {size}"),
            ));
        }
        (_, _) => {
            return Err(reject(
                "UnsupportedKeyAlgorithm",
                format!("spec.key.algorithm: {algorithm:?}; use ECDSA, RSA or Ed25519"),
            ));
        }
    };
    let validity = match &spec.validity {
        Some(text) => duration::parse("spec.validity", text).map_err(|m| reject("InvalidDuration", m))?,
        None => DEFAULT_VALIDITY,
    };
    if validity < Duration::from_secs(10) {
        return Err(reject("InvalidDuration", "spec.validity: at least 10s"));
    }
    let action = spec.lifetime_action.clone().unwrap_or_default();
    let trigger = match (action.renew_at_percentage_lifetime, action.days_before_expiry) {
        (Some(_), Some(_)) => {
            return Err(reject(
                "ConflictingLifetimeActions",
                "spec.lifetimeAction: set renewAtPercentageLifetime or daysBeforeExpiry, not both",
            ));
        }
        (Some(p), None) if !(1..=99).contains(&p) => {
            return Err(reject(
                "InvalidLifetimeAction",
                format!("spec.lifetimeAction.renewAtPercentageLifetime: {p} is not within 1-99"),
            ));
        }
        (Some(p), None) => Trigger::PercentageOfLifetime(p),
        (None, Some(days)) if u64::from(days) * 86_400 >= validity.as_secs() => {
            return Err(reject(
                "InvalidLifetimeAction",
                format!("spec.lifetimeAction.daysBeforeExpiry: {days} days is not shorter than spec.validity"),
            ));
        }
        (None, Some(0)) => {
            return Err(reject(
                "InvalidLifetimeAction",
                "spec.lifetimeAction.daysBeforeExpiry: at least 1",
            ));
        }
        (None, Some(days)) => Trigger::DaysBeforeExpiry(days),
        (None, None) => Trigger::PercentageOfLifetime(DEFAULT_RENEW_PERCENTAGE),
    };
    let issuer = match (&spec.issuer.self_signed, &spec.issuer.ca) {
        (Some(_), None) => IssuerKind::SelfSigned,
        (None, Some(ca)) if !ca.secret_ref.name.is_empty() => IssuerKind::Ca(ca.secret_ref.name.clone()),
        (None, Some(_)) => return Err(reject("InvalidIssuer", "spec.issuer.ca.secretRef.name: required")),
        _ => {
            return Err(reject(
                "InvalidIssuer",
                "spec.issuer: set exactly one of selfSigned and ca",
            ));
        }
    };
    for (index, usage) in spec.extended_key_usages.iter().enumerate() {
        if !EXTENDED_KEY_USAGES.contains(&usage.as_str()) {
            return Err(reject(
                "InvalidKeyUsage",
                format!(
                    "spec.extendedKeyUsages[{index}]: {usage:?}; use one of {}",
                    EXTENDED_KEY_USAGES.join(", ")
                ),
            ));
        }
    }
    for (index, usage) in spec.key_usages.iter().enumerate() {
        if !KEY_USAGES.contains(&usage.as_str()) {
            return Err(reject(
                "InvalidKeyUsage",
                format!(
                    "spec.keyUsages[{index}]: {usage:?}; use one of {}",
                    KEY_USAGES.join(", ")
                ),
            ));
        }
    }
    let ip_addresses = spec
        .ip_addresses
        .iter()
        .enumerate()
        .map(|(index, ip)| {
            ip.parse::<IpAddr>().map_err(|_| {
                reject(
                    "InvalidSubjectAlternativeName",
                    format!("spec.ipAddresses[{index}]: {ip:?} is not an IP address"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let subject = spec.subject.clone().unwrap_or_default();
    let has_name = subject.common_name.as_deref().is_some_and(|cn| !cn.trim().is_empty());
    if !has_name && spec.dns_names.is_empty() && ip_addresses.is_empty() && spec.uris.is_empty() {
        return Err(reject(
            "MissingSubject",
            "spec.subject.commonName or a SAN (dnsNames, ipAddresses, uris) is required",
        ));
    }
    Ok(PolicyParams {
        subject,
        dns_names: spec.dns_names.clone(),
        ip_addresses,
        uris: spec.uris.clone(),
        extended_key_usages: spec.extended_key_usages.clone(),
        key_usages: spec.key_usages.clone(),
        key: kind,
        reuse_key: key.reuse,
        validity,
        trigger,
        issuer,
        secret_name: spec.secret_name.clone(),
    })
}

/// When a certificate valid `not_before..not_after` is due for renewal.
pub fn renewal_time(not_before: Timestamp, not_after: Timestamp, trigger: Trigger) -> Timestamp {
    let at = match trigger {
        Trigger::PercentageOfLifetime(p) => {
            let lifetime = not_after.as_second() - not_before.as_second();
            not_before.as_second() + lifetime * i64::from(p) / 100
        }
        Trigger::DaysBeforeExpiry(days) => not_after.as_second() - i64::from(days) * 86_400,
    };
    Timestamp::from_second(at).unwrap_or(not_after)
}

/// A fingerprint of the spec, kept on the issued Secret: a different one means
/// the spec changed since that issuance.
pub fn spec_hash(spec: &CertificatePolicySpec) -> String {
    let json = serde_json::to_vec(spec).expect("spec serializes");
    sha2::Sha256::digest(&json)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Wait before attempt `attempts + 1` after `attempts` consecutive failures.
pub fn backoff(attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
    (BACKOFF_BASE * factor).min(BACKOFF_MAX)
}

/// The policy's Secret as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    Missing,
    /// Exists and certshift did not create it for this policy.
    OwnedElsewhere,
    /// Ours: the leaf's facts (None if unreadable) and the spec hash it was issued for.
    Issued {
        leaf: Option<Box<CertificateFacts>>,
        spec_hash: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    Initial,
    SpecChanged,
    Renewal,
}

/// The CA Secret's version when it does not exist (no resourceVersion is `-`).
pub const ISSUER_MISSING: &str = "-";

pub struct World<'a> {
    pub generation: Option<i64>,
    pub spec: &'a CertificatePolicySpec,
    pub status: &'a CertificatePolicyStatus,
    pub secret: SecretState,
    pub now: Timestamp,
    /// The CA Secret's (`spec.issuer.ca`) resourceVersion, [`ISSUER_MISSING`]
    /// when it does not exist; `None` for a self-signed policy. A CA Secret that arrived or
    /// changed since the last failed attempt is tried at once, not after the
    /// backoff.
    pub issuer_version: Option<String>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// The spec is invalid or the Secret is someone else's: write this status.
    Refuse(CertificatePolicyStatus, Vec<Event>),
    /// Nothing due: write this status, look again at `requeue`.
    Wait(CertificatePolicyStatus, Option<Duration>),
    /// Issue now (then call [`after_attempt`]).
    Issue(PolicyParams, IssueReason),
}

pub fn decide(world: &World<'_>) -> Plan {
    let now = world.now;
    let status = world.status;
    let refuse = |reason: &str, message: String| {
        let [reconciling, stalled] = Standing::Stalled(reason.to_owned(), message.clone()).conditions();
        let decided = [
            Decided::new(READY, false, reason, message.clone()),
            Decided::new(ISSUING, false, reason, message.clone()),
            reconciling,
            stalled,
        ];
        let next = CertificatePolicyStatus {
            observed_generation: world.generation,
            conditions: conditions::merge(&status.conditions, &decided, world.generation, now),
            ..status.clone()
        };
        let events = transition_events(&status.conditions, &next.conditions);
        Plan::Refuse(next, events)
    };
    let params = match params(world.spec) {
        Ok(params) => params,
        Err(err) => return refuse(err.reason, err.message),
    };
    let (leaf, issued_for) = match &world.secret {
        SecretState::OwnedElsewhere => {
            return refuse(
                "SecretOwnedElsewhere",
                format!(
                    "Secret {:?} exists and was not created by certshift for this policy; it is left untouched",
                    params.secret_name
                ),
            );
        }
        SecretState::Missing => (None, None),
        SecretState::Issued { leaf, spec_hash } => (leaf.as_deref(), spec_hash.as_deref()),
    };
    let reason = match leaf {
        None => Some(IssueReason::Initial),
        Some(_) if issued_for != Some(spec_hash(world.spec).as_str()) => Some(IssueReason::SpecChanged),
        Some(leaf) if now >= renewal_time(leaf.not_before, leaf.not_after, params.trigger) => {
            Some(IssueReason::Renewal)
        }
        Some(_) => None,
    };
    let Some(reason) = reason else {
        let leaf = leaf.expect("issued");
        let next = issued_status(world, leaf, params.trigger, status.revision);
        let renewal = next.renewal_time.unwrap_or(now);
        let wait = Duration::from_secs((renewal.as_second() - now.as_second()).max(1).unsigned_abs());
        return Plan::Wait(next, Some(wait));
    };
    // Back off after failures, counted in status so a restart keeps the pace;
    // unless the CA Secret changed since the last failure.
    let issuer_changed = matches!(
        (&world.issuer_version, &status.last_failure_issuer_version),
        (Some(now), Some(then)) if now != then
    );
    if status.failed_attempts > 0 && !issuer_changed {
        let last = status.last_failure_time.unwrap_or(now);
        let next_attempt =
            last.as_second() + i64::try_from(backoff(status.failed_attempts).as_secs()).unwrap_or(i64::MAX);
        if now.as_second() < next_attempt {
            let wait = Duration::from_secs((next_attempt - now.as_second()).unsigned_abs());
            return Plan::Wait(status.clone(), Some(wait));
        }
    }
    Plan::Issue(params, reason)
}

/// The status after an issuance attempt: the new certificate's facts, or the failure.
pub fn after_attempt(
    world: &World<'_>,
    params: &PolicyParams,
    reason: IssueReason,
    outcome: Result<&CertificateFacts, String>,
) -> (CertificatePolicyStatus, Vec<Event>) {
    let now = world.now;
    let status = world.status;
    let (next, mut events) = match outcome {
        Ok(leaf) => {
            let next = issued_status(world, leaf, params.trigger, status.revision + 1);
            let renewal = next.renewal_time.unwrap_or(now);
            let (event_reason, verb) = match reason {
                IssueReason::Renewal => ("Renewed", "renewed"),
                IssueReason::Initial | IssueReason::SpecChanged => ("Issued", "issued"),
            };
            let event = Event {
                type_: EventType::Normal,
                reason: event_reason.to_owned(),
                message: format!(
                    "{verb} {} into Secret {:?} (revision {}), notAfter={}, renewal at {renewal}",
                    leaf.thumbprint,
                    params.secret_name,
                    status.revision + 1,
                    leaf.not_after
                ),
            };
            (next, vec![event])
        }
        Err(message) => {
            let attempts = status.failed_attempts.saturating_add(1);
            // Retried with backoff: the CA Secret may appear, the signer recover.
            let [reconciling, stalled] =
                Standing::Reconciling("IssuingFailed".to_owned(), message.clone()).conditions();
            let decided = [
                reconciling,
                stalled,
                Decided::new(
                    READY,
                    status.current_thumbprint.is_some() && ready_before(status),
                    "IssuingFailed",
                    message.clone(),
                ),
                Decided::new(
                    ISSUING,
                    true,
                    "IssuingFailed",
                    format!(
                        "attempt {attempts} failed: {message}; next attempt in {}s",
                        backoff(attempts).as_secs()
                    ),
                ),
            ];
            let next = CertificatePolicyStatus {
                observed_generation: world.generation,
                conditions: conditions::merge(&status.conditions, &decided, world.generation, now),
                failed_attempts: attempts,
                last_failure_time: Some(now),
                last_failure_issuer_version: world.issuer_version.clone(),
                ..status.clone()
            };
            (next, Vec::new())
        }
    };
    events.extend(transition_events(&status.conditions, &next.conditions));
    (next, events)
}

/// The status of a policy whose Secret holds `leaf`, issued as `revision`.
fn issued_status(
    world: &World<'_>,
    leaf: &CertificateFacts,
    trigger: Trigger,
    revision: u64,
) -> CertificatePolicyStatus {
    let renewal = renewal_time(leaf.not_before, leaf.not_after, trigger);
    let decided = [
        Decided::new(
            READY,
            true,
            "Issued",
            format!("{} valid until notAfter={}", leaf.thumbprint, leaf.not_after),
        ),
        Decided::new(ISSUING, false, "Idle", format!("renewal at {renewal}")),
    ]
    .into_iter()
    .chain(Standing::Done.conditions())
    .collect::<Vec<_>>();
    CertificatePolicyStatus {
        observed_generation: world.generation,
        conditions: conditions::merge(&world.status.conditions, &decided, world.generation, world.now),
        current_thumbprint: Some(leaf.thumbprint.to_string()),
        not_before: Some(leaf.not_before),
        not_after: Some(leaf.not_after),
        renewal_time: Some(renewal),
        revision,
        failed_attempts: 0,
        last_failure_issuer_version: None,
        last_failure_time: None,
    }
}

fn ready_before(status: &CertificatePolicyStatus) -> bool {
    conditions::is_true(&status.conditions, READY)
}

/// A Warning when issuing starts failing or the policy is refused.
fn transition_events(
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    next: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Vec<Event> {
    conditions::transitions(previous, next)
        .into_iter()
        .filter(|c| c.type_ == READY && c.status == "False")
        .map(|c| Event {
            type_: EventType::Warning,
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

/// `Compliant` for an observed certificate checked against a policy.
pub fn compliance(facts: &CertificateFacts, params: &PolicyParams) -> Decided {
    let fail = |reason: &str, message: String| Decided::new(COMPLIANT, false, reason, message);
    if let Some(cn) = params.subject.common_name.as_deref()
        && facts.common_name.as_deref() != Some(cn)
    {
        return fail(
            "SubjectMismatch",
            format!(
                "subject CN is {:?}, the policy requires {cn:?}",
                facts.common_name.as_deref().unwrap_or("")
            ),
        );
    }
    if let Some(missing) = params
        .dns_names
        .iter()
        .find(|d| !facts.dns_names.iter().any(|f| f.eq_ignore_ascii_case(d)))
    {
        return fail(
            "MissingSubjectAlternativeName",
            format!("DNS name {missing:?} is not among the certificate's SANs"),
        );
    }
    let (algorithm, bits) = params.key.facts_name();
    if facts.key_algorithm != algorithm || facts.key_size < bits {
        return fail(
            "KeyTooWeak",
            format!(
                "key is {} {}, the policy requires {algorithm} {bits}",
                facts.key_algorithm, facts.key_size
            ),
        );
    }
    if let Some(missing) = params
        .extended_key_usages
        .iter()
        .find(|u| !facts.extended_key_usages.contains(u))
    {
        return fail(
            "MissingExtendedKeyUsage",
            format!("extended key usage {missing} is missing"),
        );
    }
    let lifetime = facts.not_after.as_second() - facts.not_before.as_second();
    // A minute of slack for issuers that backdate notBefore.
    if lifetime > i64::try_from(params.validity.as_secs()).unwrap_or(i64::MAX) + 60 {
        return fail(
            "ValidityTooLong",
            format!(
                "valid for {}s, the policy allows {}s",
                lifetime,
                params.validity.as_secs()
            ),
        );
    }
    Decided::new(
        COMPLIANT,
        true,
        "Compliant",
        format!("{} meets the policy", facts.thumbprint),
    )
}

#[cfg(test)]
mod tests;
