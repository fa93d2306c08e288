//! A declaration's spec, parsed and validated once per reconcile: from what
//! users type to a typed [`Spec`] whose every value is valid, or a
//! [`Blocked`] naming the field and the problem. Nothing downstream parses
//! the spec again or falls back to a default for a value it cannot read.

use std::time::Duration;

use super::EXPIRY_MARGIN;
use crate::blocked::{BlockReason, Blocked};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{
    ClientCertificateCommonName, ClientCertificateThumbprint, ClusterCertificateDeclarationSpec, FailureAction,
    Members, OutputSpec, StalePolicy, UpgradeOrigin, UpgradePolicy, WORKLOAD_KINDS,
};
use crate::duration;
use crate::planner::{Desired, PresentationForm, accepted_from, common_name};
use crate::rules::SelectionPolicy;
use crate::rules::{ClientCommonName, ClientThumbprint, Clients};
use crate::thumbprint::{Thumbprint, ThumbprintError, parse_thumbprint_list};

/// `spec.upgrade.stageTimeout` when unset.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(3600);
/// `spec.upgrade.healthCheckRetryTimeout` when unset.
pub const DEFAULT_HEALTH_CHECK_RETRY: Duration = Duration::from_secs(600);
/// `spec.upgrade.upgradeTimeout` when unset.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// `spec.revocation.distributionPoints.refreshInterval` when unset.
pub const DEFAULT_CRL_REFRESH: Duration = Duration::from_secs(3600);

/// A valid spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// What the planner walks to: accepted certificates, the presentation
    /// form, the selection rule and the client allow-lists.
    pub desired: Desired,
    pub upgrade: Upgrade,
    /// Certificates in use within this of their notAfter are `ExpiringSoon`.
    pub expiry_warning: Duration,
    /// CRLs fetched from distribution points, when enabled.
    pub fetch_crls: Option<FetchCrls>,
    /// Deprecated fields in use, each with what replaces it (a Warning).
    pub deprecated: Vec<String>,
}

/// `spec.upgrade`, with its defaults: Service Fabric's monitoring policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upgrade {
    pub health_check_wait: Duration,
    /// `healthCheckStableDuration` (or its alias `minSoak`).
    pub health_check_stable: Duration,
    pub health_check_retry: Duration,
    pub stage_timeout: Duration,
    pub upgrade_timeout: Duration,
    pub max_unhealthy: MaxUnhealthy,
    pub failure_action: FailureAction,
    pub paused: bool,
}

/// `spec.upgrade.maxUnhealthyMembers`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxUnhealthy {
    #[default]
    None,
    Count(u32),
    /// Of the members, rounded down.
    Percent(u32),
}

impl MaxUnhealthy {
    /// How many of `total` members may be unhealthy.
    pub fn of(self, total: usize) -> usize {
        match self {
            MaxUnhealthy::None => 0,
            MaxUnhealthy::Count(n) => n as usize,
            MaxUnhealthy::Percent(p) => total * p as usize / 100,
        }
    }
}

impl std::fmt::Display for MaxUnhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxUnhealthy::None => write!(f, "0"),
            MaxUnhealthy::Count(n) => write!(f, "{n}"),
            MaxUnhealthy::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `spec.revocation.distributionPoints`, enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchCrls {
    pub refresh_interval: Duration,
    pub stale_policy: StalePolicy,
}

/// Parses and checks everything about a spec that does not need the store.
pub fn parse(spec: &ClusterCertificateDeclarationSpec) -> Result<Spec, Blocked> {
    let accepted = accepted_from(
        "spec",
        spec.certificate.as_ref(),
        spec.certificate_common_names.as_ref(),
    )?;
    if accepted.is_empty() {
        return Err(Blocked::new(
            BlockReason::InvalidDeclaration,
            "spec: declare certificate.thumbprint or certificateCommonNames.commonNames",
        ));
    }
    if spec.store.observed_certificates.is_empty() {
        return Err(Blocked::new(
            BlockReason::InvalidDeclaration,
            "spec.store.observedCertificates: name at least one ObservedCertificate",
        ));
    }
    let clients = clients(
        "spec",
        &spec.client_certificate_thumbprints,
        &spec.client_certificate_common_names,
    )?;
    if let Some(output) = &spec.output {
        check_output(output)?;
    }
    if let Some(members) = &spec.members {
        check_members(members)?;
    }
    let (upgrade, deprecated) = upgrade(spec.upgrade.clone().unwrap_or_default())?;
    let expiry_warning = duration_field("spec.expiryWarning", spec.expiry_warning.as_ref(), EXPIRY_MARGIN)?;
    let points = spec.revocation.as_ref().and_then(|r| r.distribution_points.as_ref());
    let refresh_interval = duration_field(
        "spec.revocation.distributionPoints.refreshInterval",
        points.and_then(|d| d.refresh_interval.as_ref()),
        DEFAULT_CRL_REFRESH,
    )?;
    Ok(Spec {
        desired: Desired {
            clients,
            present_by: PresentationForm::of(&accepted),
            accepted,
            selection: spec.upgrade.as_ref().map(|u| u.selection).unwrap_or_default(),
        },
        upgrade,
        expiry_warning,
        fetch_crls: points.filter(|d| d.enabled).map(|d| FetchCrls {
            refresh_interval,
            stale_policy: d.stale_policy.unwrap_or_default(),
        }),
        deprecated,
    })
}

/// `spec.upgrade`, each duration checked where it is written.
fn upgrade(upgrade: UpgradePolicy) -> Result<(Upgrade, Vec<String>), Blocked> {
    let field =
        |name: &str, value: Option<&String>, default| duration_field(&format!("spec.upgrade.{name}"), value, default);
    let mut deprecated = Vec::new();
    let stable = match (&upgrade.health_check_stable_duration, &upgrade.min_soak) {
        (Some(stable), _) => field("healthCheckStableDuration", Some(stable), Duration::ZERO)?,
        (None, Some(min_soak)) => {
            deprecated.push(
                "spec.upgrade.minSoak is deprecated: set spec.upgrade.healthCheckStableDuration instead \
                 (it is used as its value until then)"
                    .to_owned(),
            );
            field("minSoak", Some(min_soak), Duration::ZERO)?
        }
        (None, None) => Duration::ZERO,
    };
    if upgrade.health_check_stable_duration.is_some() && upgrade.min_soak.is_some() {
        deprecated.push(
            "spec.upgrade.minSoak is deprecated and ignored: spec.upgrade.healthCheckStableDuration is set".to_owned(),
        );
    }
    let parsed = Upgrade {
        health_check_wait: field(
            "healthCheckWaitDuration",
            upgrade.health_check_wait_duration.as_ref(),
            Duration::ZERO,
        )?,
        health_check_stable: stable,
        health_check_retry: field(
            "healthCheckRetryTimeout",
            upgrade.health_check_retry_timeout.as_ref(),
            DEFAULT_HEALTH_CHECK_RETRY,
        )?,
        stage_timeout: field("stageTimeout", upgrade.stage_timeout.as_ref(), DEFAULT_STAGE_TIMEOUT)?,
        upgrade_timeout: field(
            "upgradeTimeout",
            upgrade.upgrade_timeout.as_ref(),
            DEFAULT_UPGRADE_TIMEOUT,
        )?,
        max_unhealthy: max_unhealthy(upgrade.max_unhealthy_members.as_ref())?,
        failure_action: upgrade.failure_action,
        paused: upgrade.paused,
    };
    Ok((parsed, deprecated))
}

fn max_unhealthy(value: Option<&IntOrString>) -> Result<MaxUnhealthy, Blocked> {
    let invalid = |problem: String| {
        Blocked::new(
            BlockReason::InvalidDeclaration,
            format!("spec.upgrade.maxUnhealthyMembers: {problem}"),
        )
    };
    match value {
        None => Ok(MaxUnhealthy::None),
        Some(IntOrString::Int(n)) => u32::try_from(*n)
            .map(MaxUnhealthy::Count)
            .map_err(|_| invalid(format!("{n} is negative; give a number of members or a percentage"))),
        Some(IntOrString::String(text)) => text
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<u32>().ok())
            .filter(|p| *p <= 100)
            .map(MaxUnhealthy::Percent)
            .ok_or_else(|| {
                invalid(format!(
                    "{text:?} is not a number of members or a percentage from 0% to 100%"
                ))
            }),
    }
}

fn duration_field(field: &str, value: Option<&String>, default: Duration) -> Result<Duration, Blocked> {
    match value {
        Some(text) => {
            duration::parse(field, text).map_err(|message| Blocked::new(BlockReason::InvalidDuration, message))
        }
        None => Ok(default),
    }
}

fn invalid_thumbprint(err: ThumbprintError) -> Blocked {
    Blocked::new(BlockReason::InvalidThumbprint, err.to_string())
}

/// The client allow-lists, sorted, each entry checked where it is written
/// (`prefix`: `spec`, or `status.upgrade.origin`).
fn clients(
    prefix: &str,
    by_thumbprint: &[ClientCertificateThumbprint],
    by_name: &[ClientCertificateCommonName],
) -> Result<Clients, Blocked> {
    let mut thumbprints = Vec::new();
    for (index, client) in by_thumbprint.iter().enumerate() {
        let field = format!("{prefix}.clientCertificateThumbprints[{index}].certificateThumbprint");
        thumbprints.push(ClientThumbprint {
            thumbprint: Thumbprint::parse(&field, &client.certificate_thumbprint).map_err(invalid_thumbprint)?,
            is_admin: client.is_admin,
        });
    }
    let mut common_names = Vec::new();
    for (index, client) in by_name.iter().enumerate() {
        let field = format!("{prefix}.clientCertificateCommonNames[{index}]");
        let name = common_name(
            &format!("{field}.certificateCommonName"),
            &client.certificate_common_name,
        )?;
        let issuers = parse_thumbprint_list(
            &format!("{field}.certificateIssuerThumbprint"),
            &client.certificate_issuer_thumbprint,
        )
        .map_err(invalid_thumbprint)?;
        common_names.push(ClientCommonName {
            name: name.to_owned(),
            issuer_thumbprints: issuers,
            is_admin: client.is_admin,
        });
    }
    thumbprints.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
    common_names.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Clients {
        thumbprints,
        common_names,
    })
}

/// What a rollback walks to: the declaration in force before the change
/// began, as `status.upgrade.origin` recorded it, presented by the same rule.
pub fn origin_desired(origin: &UpgradeOrigin, selection: SelectionPolicy) -> Result<Desired, Blocked> {
    let prefix = "status.upgrade.origin";
    let invalid = |blocked: Blocked| Blocked::new(BlockReason::InvalidEffectiveState, blocked.message);
    let accepted = accepted_from(
        prefix,
        origin.certificate.as_ref(),
        origin.certificate_common_names.as_ref(),
    )
    .map_err(invalid)?;
    let clients = clients(
        prefix,
        &origin.client_certificate_thumbprints,
        &origin.client_certificate_common_names,
    )
    .map_err(invalid)?;
    Ok(Desired {
        present_by: PresentationForm::of(&accepted),
        accepted,
        selection,
        clients,
    })
}

fn check_output(output: &OutputSpec) -> Result<(), Blocked> {
    crate::outputs::validate_templates(&output.templates)
        .map_err(|message| Blocked::new(BlockReason::InvalidTemplate, message))?;
    let wants_pkcs12 = output.formats.contains(&crate::crd::OutputFormat::Pkcs12);
    if wants_pkcs12
        && output
            .pkcs12
            .as_ref()
            .is_none_or(|p| p.password_secret_ref.name.is_empty())
    {
        return Err(Blocked::new(
            BlockReason::InvalidOutput,
            "spec.output.pkcs12.passwordSecretRef: required for the PKCS12 format",
        ));
    }
    Ok(())
}

fn invalid_members(message: String) -> Blocked {
    Blocked::new(BlockReason::InvalidMembers, message)
}

fn check_members(members: &Members) -> Result<(), Blocked> {
    for (index, endpoint) in members.endpoints.iter().enumerate() {
        let field = format!("spec.members.endpoints[{index}]");
        let has_port = |address: &str| address.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        match (endpoint.address.is_empty(), &endpoint.service) {
            (false, None) if has_port(&endpoint.address) => {}
            (false, None) => {
                return Err(invalid_members(format!(
                    "{field}.address: {:?} is not host:port",
                    endpoint.address
                )));
            }
            (true, Some(service)) if !service.name.is_empty() => {}
            _ => {
                return Err(invalid_members(format!(
                    "{field}: set exactly one of address and service"
                )));
            }
        }
    }
    for (index, workload) in members.workloads.iter().enumerate() {
        let field = format!("spec.members.workloads[{index}]");
        if !WORKLOAD_KINDS.contains(&workload.kind.as_str()) {
            return Err(invalid_members(format!(
                "{field}.kind: {:?} is not one of {}",
                workload.kind,
                WORKLOAD_KINDS.join(", ")
            )));
        }
        if workload.name.is_empty() {
            return Err(invalid_members(format!("{field}.name: required")));
        }
    }
    let expressions = members.pods.iter().flat_map(|s| s.match_expressions.iter().flatten());
    for (index, requirement) in expressions.enumerate() {
        let field = format!("spec.members.pods.matchExpressions[{index}]");
        let values = requirement.values.as_ref().is_some_and(|v| !v.is_empty());
        let problem = match (requirement.operator.as_str(), values) {
            ("In" | "NotIn", false) => Some("values: required when the operator is In or NotIn"),
            ("Exists" | "DoesNotExist", true) => {
                Some("values: must be empty when the operator is Exists or DoesNotExist")
            }
            ("In" | "NotIn" | "Exists" | "DoesNotExist", _) => None,
            _ => Some("operator: must be In, NotIn, Exists or DoesNotExist"),
        };
        if let Some(problem) = problem {
            return Err(invalid_members(format!(
                "{field}.{problem} (got {:?})",
                requirement.operator
            )));
        }
    }
    Ok(())
}
