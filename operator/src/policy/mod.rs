//! CertificatePolicy, the Key Vault certificate policy in-cluster: the spec
//! validated into [`PolicyParams`], when to issue or renew ([`decide`]: a
//! [`Decision`] whose effect is the issuance), the decision on the attempt's
//! outcome ([`after_attempt`]), and compliance of observed certificates
//! ([`compliance`]). Pure; [`issue`] generates the certificates.

pub mod issue;

use std::net::IpAddr;
use std::time::Duration;

use crate::events::{Event, EventType};
use jiff::Timestamp;
use sha2::Digest as _;

use crate::conditions::{self, Decided, Standing};
use crate::crd::{CertificatePolicySpec, CertificatePolicyStatus, Subject};
use crate::decision::Requeue;

use crate::duration;
use crate::facts::{CertificateFacts, PrivateKeyState};

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

/// Why a policy is not issued: the reason of its `Ready` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyReason {
    InvalidSecretName,
    UnsupportedKeySize,
    KeyTooWeak,
    UnsupportedKeyAlgorithm,
    InvalidDuration,
    ConflictingLifetimeActions,
    InvalidLifetimeAction,
    InvalidIssuer,
    InvalidKeyUsage,
    InvalidSubjectAlternativeName,
    MissingSubject,
    /// The Secret to issue into exists and was not created by certshift.
    SecretOwnedElsewhere,
    /// An attempt failed (the CA Secret missing or incomplete, the signer);
    /// retried with backoff.
    IssuingFailed,
}

impl PolicyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyReason::InvalidSecretName => "InvalidSecretName",
            PolicyReason::UnsupportedKeySize => "UnsupportedKeySize",
            PolicyReason::KeyTooWeak => "KeyTooWeak",
            PolicyReason::UnsupportedKeyAlgorithm => "UnsupportedKeyAlgorithm",
            PolicyReason::InvalidDuration => "InvalidDuration",
            PolicyReason::ConflictingLifetimeActions => "ConflictingLifetimeActions",
            PolicyReason::InvalidLifetimeAction => "InvalidLifetimeAction",
            PolicyReason::InvalidIssuer => "InvalidIssuer",
            PolicyReason::InvalidKeyUsage => "InvalidKeyUsage",
            PolicyReason::InvalidSubjectAlternativeName => "InvalidSubjectAlternativeName",
            PolicyReason::MissingSubject => "MissingSubject",
            PolicyReason::SecretOwnedElsewhere => "SecretOwnedElsewhere",
            PolicyReason::IssuingFailed => "IssuingFailed",
        }
    }
}

impl std::fmt::Display for PolicyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A spec that cannot be issued: a condition reason and a message naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub reason: PolicyReason,
    pub message: String,
}

fn reject(reason: PolicyReason, message: impl Into<String>) -> PolicyError {
    PolicyError {
        reason,
        message: message.into(),
    }
}

pub use crate::crd::{EXTENDED_KEY_USAGES, KEY_USAGES};

/// Validates a spec; every rejection names the field.
pub fn params(spec: &CertificatePolicySpec) -> Result<PolicyParams, PolicyError> {
    if spec.secret_name.trim().is_empty() {
        return Err(reject(PolicyReason::InvalidSecretName, "spec.secretName: required"));
    }
    let key = key_kind(spec)?;
    let validity = match &spec.validity {
        Some(text) => duration::parse("spec.validity", text).map_err(|m| reject(PolicyReason::InvalidDuration, m))?,
        None => DEFAULT_VALIDITY,
    };
    if validity < Duration::from_secs(10) {
        return Err(reject(PolicyReason::InvalidDuration, "spec.validity: at least 10s"));
    }
    let trigger = trigger(spec, validity)?;
    let issuer = issuer(spec)?;
    check_usages(spec)?;
    let ip_addresses = ip_addresses(spec)?;
    let subject = spec.subject.clone().unwrap_or_default();
    let has_name = subject.common_name.as_deref().is_some_and(|cn| !cn.trim().is_empty());
    if !has_name && spec.dns_names.is_empty() && ip_addresses.is_empty() && spec.uris.is_empty() {
        return Err(reject(
            PolicyReason::MissingSubject,
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
        key,
        reuse_key: spec.key.as_ref().is_some_and(|k| k.reuse),
        validity,
        trigger,
        issuer,
        secret_name: spec.secret_name.clone(),
    })
}

/// `spec.key`: the algorithm and size, ECDSA P-256 by default.
fn key_kind(spec: &CertificatePolicySpec) -> Result<KeyKind, PolicyError> {
    let key = spec.key.clone().unwrap_or_default();
    let algorithm = key.algorithm.as_deref().unwrap_or("ECDSA");
    let size = |message: String| Err(reject(PolicyReason::UnsupportedKeySize, message));
    match (algorithm.to_ascii_uppercase().as_str(), key.size) {
        ("ECDSA" | "EC", None | Some(256)) => Ok(KeyKind::EcdsaP256),
        ("ECDSA" | "EC", Some(384)) => Ok(KeyKind::EcdsaP384),
        ("ECDSA" | "EC", Some(bits)) => size(format!(
            "spec.key.size: ECDSA supports 256 (P-256) and 384 (P-384), not {bits}"
        )),
        ("RSA", None) => Ok(KeyKind::Rsa(2048)),
        ("RSA", Some(bits @ (2048 | 3072 | 4096))) => Ok(KeyKind::Rsa(bits)),
        ("RSA", Some(bits)) if bits < 2048 => Err(reject(
            PolicyReason::KeyTooWeak,
            format!("spec.key.size: RSA {bits} is too weak; use 2048, 3072 or 4096"),
        )),
        ("RSA", Some(bits)) => size(format!("spec.key.size: RSA supports 2048, 3072 and 4096, not {bits}")),
        ("ED25519", None | Some(256)) => Ok(KeyKind::Ed25519),
        ("ED25519", Some(bits)) => size(format!("spec.key.size: Ed25519 keys are 256 bits, not {bits}")),
        (_, _) => Err(reject(
            PolicyReason::UnsupportedKeyAlgorithm,
            format!("spec.key.algorithm: {algorithm:?}; use ECDSA, RSA or Ed25519"),
        )),
    }
}

/// `spec.lifetimeAction`: when to renew, 80 % of the lifetime by default.
fn trigger(spec: &CertificatePolicySpec, validity: Duration) -> Result<Trigger, PolicyError> {
    let action = spec.lifetime_action.clone().unwrap_or_default();
    let invalid = |message: String| Err(reject(PolicyReason::InvalidLifetimeAction, message));
    match (action.renew_at_percentage_lifetime, action.days_before_expiry) {
        (Some(_), Some(_)) => Err(reject(
            PolicyReason::ConflictingLifetimeActions,
            "spec.lifetimeAction: set renewAtPercentageLifetime or daysBeforeExpiry, not both",
        )),
        (Some(p), None) if !(1..=99).contains(&p) => invalid(format!(
            "spec.lifetimeAction.renewAtPercentageLifetime: {p} is not within 1-99"
        )),
        (Some(p), None) => Ok(Trigger::PercentageOfLifetime(p)),
        (None, Some(days)) if u64::from(days) * 86_400 >= validity.as_secs() => invalid(format!(
            "spec.lifetimeAction.daysBeforeExpiry: {days} days is not shorter than spec.validity"
        )),
        (None, Some(0)) => invalid("spec.lifetimeAction.daysBeforeExpiry: at least 1".to_owned()),
        (None, Some(days)) => Ok(Trigger::DaysBeforeExpiry(days)),
        (None, None) => Ok(Trigger::PercentageOfLifetime(DEFAULT_RENEW_PERCENTAGE)),
    }
}

/// `spec.issuer`: exactly one of `selfSigned` and `ca`.
fn issuer(spec: &CertificatePolicySpec) -> Result<IssuerKind, PolicyError> {
    match (&spec.issuer.self_signed, &spec.issuer.ca) {
        (Some(_), None) => Ok(IssuerKind::SelfSigned),
        (None, Some(ca)) if !ca.secret_ref.name.is_empty() => Ok(IssuerKind::Ca(ca.secret_ref.name.clone())),
        (None, Some(_)) => Err(reject(
            PolicyReason::InvalidIssuer,
            "spec.issuer.ca.secretRef.name: required",
        )),
        _ => Err(reject(
            PolicyReason::InvalidIssuer,
            "spec.issuer: set exactly one of selfSigned and ca",
        )),
    }
}

/// `spec.extendedKeyUsages` and `spec.keyUsages`: names certshift can issue.
fn check_usages(spec: &CertificatePolicySpec) -> Result<(), PolicyError> {
    let lists = [
        (
            "spec.extendedKeyUsages",
            &spec.extended_key_usages,
            EXTENDED_KEY_USAGES.as_slice(),
        ),
        ("spec.keyUsages", &spec.key_usages, KEY_USAGES.as_slice()),
    ];
    for (field, usages, known) in lists {
        if let Some((index, usage)) = usages.iter().enumerate().find(|(_, u)| !known.contains(&u.as_str())) {
            return Err(reject(
                PolicyReason::InvalidKeyUsage,
                format!("{field}[{index}]: {usage:?}; use one of {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn ip_addresses(spec: &CertificatePolicySpec) -> Result<Vec<IpAddr>, PolicyError> {
    let parse = |(index, ip): (usize, &String)| {
        ip.parse::<IpAddr>().map_err(|_| {
            reject(
                PolicyReason::InvalidSubjectAlternativeName,
                format!("spec.ipAddresses[{index}]: {ip:?} is not an IP address"),
            )
        })
    };
    spec.ip_addresses.iter().enumerate().map(parse).collect()
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

/// The CA Secret `spec.issuer.ca` names, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSecret {
    Missing,
    Present {
        /// Its resourceVersion: a CA that changed since the last failed
        /// attempt is tried at once, not after the backoff.
        version: String,
        certificate: Option<String>,
        key: Option<String>,
    },
}

impl CaSecret {
    fn version(&self) -> String {
        match self {
            // Not "": kube-apiserver 1.20's apply stores an empty string as null.
            CaSecret::Missing => ISSUER_MISSING.to_owned(),
            CaSecret::Present { version, .. } => version.clone(),
        }
    }
}

pub struct World<'a> {
    pub generation: Option<i64>,
    pub spec: &'a CertificatePolicySpec,
    pub status: &'a CertificatePolicyStatus,
    pub secret: SecretState,
    /// The key the policy's Secret holds now, kept by `spec.key.reuse`.
    pub current_key: Option<String>,
    /// The CA Secret, for a policy issued by a CA; `None` when self-signed.
    pub ca: Option<CaSecret>,
    pub now: Timestamp,
}

/// What to do: data, compared whole in unit tests (the declaration's shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write; `None` when it is the one stored.
    pub status: Option<CertificatePolicyStatus>,
    pub effects: Vec<Effect>,
    pub events: Vec<Event>,
    pub requeue: Requeue,
}

/// Work the shell does for a decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Generate the key and certificate (CPU work, randomness) and apply the
    /// Secret; then [`after_attempt`] decides the status from the outcome.
    Issue(IssueRequest),
}

/// One issuance: what, why, with which CA and key, as of when.
#[derive(Clone, Debug, PartialEq)]
pub struct IssueRequest {
    pub params: PolicyParams,
    pub reason: IssueReason,
    /// The CA's certificate and key (PEM); `None` when self-signed.
    pub ca: Option<(String, String)>,
    /// The key to keep (`spec.key.reuse`), when the Secret holds one.
    pub reuse_key: Option<String>,
    pub at: Timestamp,
}

impl Decision {
    /// The issuance this decision asks for, if any.
    pub fn issue(&self) -> Option<&IssueRequest> {
        self.effects.iter().map(|Effect::Issue(request)| request).next()
    }

    /// No work: `status` (written only when it differs from the stored one), the events, the next look.
    fn settled(world: &World<'_>, status: CertificatePolicyStatus, events: Vec<Event>, requeue: Requeue) -> Self {
        Decision {
            status: (*world.status != status).then_some(status),
            effects: Vec::new(),
            events,
            requeue,
        }
    }
}

/// Longest wait between two looks at a policy.
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);

fn after(seconds: i64) -> Requeue {
    Requeue::After(Duration::from_secs(seconds.max(1).unsigned_abs()).min(MAX_REQUEUE))
}

pub fn decide(world: &World<'_>) -> Decision {
    let params = match params(world.spec) {
        Ok(params) => params,
        Err(err) => return refuse(world, err.reason, err.message),
    };
    let (leaf, issued_for) = match &world.secret {
        SecretState::OwnedElsewhere => {
            let message = format!(
                "Secret {:?} exists and was not created by certshift for this policy; it is left untouched",
                params.secret_name
            );
            return refuse(world, PolicyReason::SecretOwnedElsewhere, message);
        }
        SecretState::Missing => (None, None),
        SecretState::Issued { leaf, spec_hash } => (leaf.as_deref(), spec_hash.as_deref()),
    };
    let now = world.now;
    let reason = match leaf {
        None => IssueReason::Initial,
        Some(_) if issued_for != Some(spec_hash(world.spec).as_str()) => IssueReason::SpecChanged,
        Some(leaf) if now >= renewal_time(leaf.not_before, leaf.not_after, params.trigger) => IssueReason::Renewal,
        Some(leaf) => {
            let next = issued_status(world, leaf, params.trigger, world.status.revision);
            let renewal = next.renewal_time.unwrap_or(now);
            return Decision::settled(world, next, Vec::new(), after(renewal.as_second() - now.as_second()));
        }
    };
    if let Some(wait) = backing_off(world) {
        return Decision::settled(world, world.status.clone(), Vec::new(), Requeue::After(wait));
    }
    let mut request = IssueRequest {
        params,
        reason,
        ca: None,
        reuse_key: world
            .current_key
            .clone()
            .filter(|_| matches!(world.secret, SecretState::Issued { .. })),
        at: now,
    };
    if let IssuerKind::Ca(name) = &request.params.issuer {
        match &world.ca {
            Some(CaSecret::Present {
                certificate: Some(certificate),
                key: Some(key),
                ..
            }) => {
                if let Some(unusable) = unusable_ca(name, certificate, key, now) {
                    return after_attempt(world, &request, Err(unusable));
                }
                request.ca = Some((certificate.clone(), key.clone()))
            }
            Some(CaSecret::Present { certificate, .. }) => {
                let lacks = if certificate.is_none() { "tls.crt" } else { "tls.key" };
                return after_attempt(
                    world,
                    &request,
                    Err(format!("CA Secret {name:?} (spec.issuer.ca.secretRef) lacks {lacks}")),
                );
            }
            Some(CaSecret::Missing) | None => {
                let message = format!("CA Secret {name:?} (spec.issuer.ca.secretRef) not found");
                return after_attempt(world, &request, Err(message));
            }
        }
    }
    Decision {
        status: None,
        effects: vec![Effect::Issue(request)],
        events: Vec::new(),
        // The outcome's decision says when to look again.
        requeue: Requeue::AwaitChange,
    }
}

/// Why the CA Secret's certificate and key cannot sign what its members
/// would accept, if they cannot: a certificate signed by one that is not a
/// CA, by a CA whose keyUsage lacks keyCertSign, by a key that is not the
/// CA's, or outside the CA's validity fails verification everywhere it is
/// presented.
fn unusable_ca(name: &str, certificate: &str, key: &str, now: Timestamp) -> Option<String> {
    let at = format!("CA Secret {name:?} (spec.issuer.ca.secretRef)");
    let bundle = match crate::facts::CertificateBundle::from_tls(&crate::facts::TlsMaterial {
        tls_crt: certificate.as_bytes(),
        tls_key: Some(key.as_bytes()),
        ca_crt: None,
    }) {
        Ok(bundle) => bundle,
        Err(err) => return Some(format!("{at}: {err}")),
    };
    let ca = &bundle.leaf;
    if !ca.is_ca {
        return Some(format!(
            "{at}: tls.crt ({}, {}) is not a CA certificate (basicConstraints CA is not true): what it signed would not verify",
            ca.subject, ca.thumbprint
        ));
    }
    // A keyUsage extension without keyCertSign forbids signing certificates
    // (RFC 5280 4.2.1.3): OpenSSL and Go refuse what it signed.
    if !ca.may_sign_certificates() {
        return Some(format!(
            "{at}: tls.crt ({}, {}) has keyUsage {} without keyCertSign: what it signed would not verify",
            ca.subject,
            ca.thumbprint,
            ca.key_usages.join(", ")
        ));
    }
    match ca.private_key {
        PrivateKeyState::Matches => {}
        PrivateKeyState::Mismatch => {
            return Some(format!("{at}: tls.key is not the key of tls.crt ({})", ca.thumbprint));
        }
        // The facts say why (encrypted, malformed, no key block).
        PrivateKeyState::Missing | PrivateKeyState::Unreadable => {
            let why = bundle
                .key_message
                .as_deref()
                .unwrap_or("tls.key cannot be read as a private key");
            return Some(format!("{at}: {why}"));
        }
    }
    if !ca.is_time_valid(now) {
        return Some(format!(
            "{at}: tls.crt ({}) is valid only from {} to {}",
            ca.thumbprint, ca.not_before, ca.not_after
        ));
    }
    None
}

/// The spec is invalid or the Secret is someone else's: held for a person.
fn refuse(world: &World<'_>, reason: PolicyReason, message: String) -> Decision {
    let reason = reason.as_str();
    let [reconciling, stalled] = Standing::Stalled(reason.to_owned(), message.clone()).conditions();
    let decided = [
        Decided::new(READY, false, reason, message.clone()),
        Decided::new(ISSUING, false, reason, message),
        reconciling,
        stalled,
    ];
    let status = world.status;
    let next = CertificatePolicyStatus {
        observed_generation: world.generation,
        conditions: conditions::merge(&status.conditions, &decided, world.generation, world.now),
        ..status.clone()
    };
    let events = transition_events(&status.conditions, &next.conditions);
    Decision::settled(world, next, events, Requeue::AwaitChange)
}

/// How long to wait before the next attempt after failures (counted in
/// status, so a restart keeps the pace); `None` when it is due, or when the
/// CA Secret changed since the last failure.
fn backing_off(world: &World<'_>) -> Option<Duration> {
    let status = world.status;
    let version = world.ca.as_ref().map(CaSecret::version);
    let issuer_changed = matches!(
        (&version, &status.last_failure_issuer_version),
        (Some(now), Some(then)) if now != then
    );
    if status.failed_attempts == 0 || issuer_changed {
        return None;
    }
    let now = world.now.as_second();
    let last = status.last_failure_time.map_or(now, |t| t.as_second());
    let next_attempt = last + i64::try_from(backoff(status.failed_attempts).as_secs()).unwrap_or(i64::MAX);
    (now < next_attempt).then(|| Duration::from_secs((next_attempt - now).unsigned_abs()))
}

/// The decision after an issuance attempt: the new certificate's status,
/// events and renewal, or the failure and its backoff.
pub fn after_attempt(
    world: &World<'_>,
    request: &IssueRequest,
    outcome: Result<&CertificateFacts, String>,
) -> Decision {
    let status = world.status;
    let (next, mut events, requeue) = match outcome {
        Ok(leaf) => {
            let next = issued_status(world, leaf, request.params.trigger, status.revision + 1);
            let renewal = next.renewal_time.unwrap_or(world.now);
            let (event_reason, verb) = match request.reason {
                IssueReason::Renewal => ("Renewed", "renewed"),
                IssueReason::Initial | IssueReason::SpecChanged => ("Issued", "issued"),
            };
            let event = Event {
                type_: EventType::Normal,
                reason: event_reason.to_owned(),
                message: format!(
                    "{verb} {} into Secret {:?} (revision {}), notAfter={}, renewal at {renewal}",
                    leaf.thumbprint,
                    request.params.secret_name,
                    status.revision + 1,
                    leaf.not_after
                ),
            };
            let requeue = after(renewal.as_second() - request.at.as_second());
            (next, vec![event], requeue)
        }
        Err(message) => {
            let next = failed_status(world, &message);
            let requeue = Requeue::After(backoff(next.failed_attempts).min(MAX_REQUEUE));
            (next, Vec::new(), requeue)
        }
    };
    events.extend(transition_events(&status.conditions, &next.conditions));
    Decision {
        status: Some(next),
        effects: Vec::new(),
        events,
        requeue,
    }
}

/// The status after a failed attempt: retried with backoff (the CA Secret
/// may appear, the signer recover); Ready as before while a certificate is
/// still served.
fn failed_status(world: &World<'_>, message: &str) -> CertificatePolicyStatus {
    let status = world.status;
    let attempts = status.failed_attempts.saturating_add(1);
    let failing = PolicyReason::IssuingFailed.as_str();
    let [reconciling, stalled] = Standing::Reconciling(failing.to_owned(), message.to_owned()).conditions();
    let decided = [
        reconciling,
        stalled,
        Decided::new(
            READY,
            status.current_thumbprint.is_some() && ready_before(status),
            failing,
            message,
        ),
        Decided::new(
            ISSUING,
            true,
            failing,
            format!(
                "attempt {attempts} failed: {message}; next attempt in {}s",
                backoff(attempts).as_secs()
            ),
        ),
    ];
    CertificatePolicyStatus {
        observed_generation: world.generation,
        conditions: conditions::merge(&status.conditions, &decided, world.generation, world.now),
        failed_attempts: attempts,
        last_failure_time: Some(world.now),
        last_failure_issuer_version: world.ca.as_ref().map(CaSecret::version),
        ..status.clone()
    }
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
    // No keyUsage extension restricts nothing; one that lacks a usage forbids it.
    let restricted = !facts.key_usages.is_empty();
    if let Some(missing) = params
        .key_usages
        .iter()
        .find(|u| restricted && !facts.key_usages.contains(u))
    {
        return fail(
            "MissingKeyUsage",
            format!(
                "key usage {missing} is missing (it has {})",
                facts.key_usages.join(", ")
            ),
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
