//! From the declaration's spec and status (as users type them) to the planner's
//! normalized [`Desired`] and [`Effective`]: every error names its field.

use super::{BlockReason, Blocked, Desired, Effective, PresentationForm};
use crate::crd::{
    CertificateCommonNames, CertificateThumbprints, ClusterCertificateDeclarationSpec, EffectiveDeclaration,
    WORKLOAD_KINDS,
};
use crate::duration;
use crate::rules::{Accepted, ClientCommonName, ClientThumbprint, Clients, CommonNameRule};
use crate::thumbprint::{Thumbprint, ThumbprintError, parse_thumbprint_list};

fn invalid_thumbprint(err: ThumbprintError) -> Blocked {
    Blocked::new(BlockReason::InvalidThumbprint, err.to_string())
}

/// Checks everything about a spec that does not need the store.
pub fn validate_spec(spec: &ClusterCertificateDeclarationSpec) -> Result<(), Blocked> {
    desired_from_spec(spec).map(|_| ())
}

/// The desired end state of a declaration.
pub fn desired_from_spec(spec: &ClusterCertificateDeclarationSpec) -> Result<Desired, Blocked> {
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
    for (index, client) in spec.client_certificate_thumbprints.iter().enumerate() {
        let field = format!("spec.clientCertificateThumbprints[{index}].certificateThumbprint");
        Thumbprint::parse(&field, &client.certificate_thumbprint).map_err(invalid_thumbprint)?;
    }
    for (index, client) in spec.client_certificate_common_names.iter().enumerate() {
        let field = format!("spec.clientCertificateCommonNames[{index}]");
        common_name(
            &format!("{field}.certificateCommonName"),
            &client.certificate_common_name,
        )?;
        parse_thumbprint_list(
            &format!("{field}.certificateIssuerThumbprint"),
            &client.certificate_issuer_thumbprint,
        )
        .map_err(invalid_thumbprint)?;
    }
    if let Some(output) = &spec.output {
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
    }
    for (index, endpoint) in spec.members.iter().flat_map(|m| m.endpoints.iter()).enumerate() {
        let field = format!("spec.members.endpoints[{index}]");
        match (endpoint.address.is_empty(), &endpoint.service) {
            (false, None)
                if endpoint
                    .address
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) => {}
            (false, None) => {
                return Err(Blocked::new(
                    BlockReason::InvalidMembers,
                    format!("{field}.address: {:?} is not host:port", endpoint.address),
                ));
            }
            (true, Some(service)) if !service.name.is_empty() => {}
            _ => {
                return Err(Blocked::new(
                    BlockReason::InvalidMembers,
                    format!("{field}: set exactly one of address and service"),
                ));
            }
        }
    }
    for (index, workload) in spec.members.iter().flat_map(|m| m.workloads.iter()).enumerate() {
        let field = format!("spec.members.workloads[{index}]");
        if !WORKLOAD_KINDS.contains(&workload.kind.as_str()) {
            return Err(Blocked::new(
                BlockReason::InvalidMembers,
                format!(
                    "{field}.kind: {:?} is not one of {}",
                    workload.kind,
                    WORKLOAD_KINDS.join(", ")
                ),
            ));
        }
        if workload.name.is_empty() {
            return Err(Blocked::new(
                BlockReason::InvalidMembers,
                format!("{field}.name: required"),
            ));
        }
    }
    let expressions = spec.members.iter().filter_map(|m| m.pods.as_ref());
    for (index, requirement) in expressions
        .flat_map(|s| s.match_expressions.iter().flatten())
        .enumerate()
    {
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
            return Err(Blocked::new(
                BlockReason::InvalidMembers,
                format!("{field}.{problem} (got {:?})", requirement.operator),
            ));
        }
    }
    let upgrade = spec.upgrade.clone().unwrap_or_default();
    for (field, value) in [
        ("spec.upgrade.minSoak", &upgrade.min_soak),
        ("spec.upgrade.stageTimeout", &upgrade.stage_timeout),
        ("spec.expiryWarning", &spec.expiry_warning),
        (
            "spec.revocation.distributionPoints.refreshInterval",
            &spec
                .revocation
                .as_ref()
                .and_then(|r| r.distribution_points.as_ref())
                .and_then(|d| d.refresh_interval.clone()),
        ),
    ] {
        if let Some(value) = value {
            duration::parse(field, value).map_err(|message| Blocked::new(BlockReason::InvalidDuration, message))?;
        }
    }
    Ok(Desired {
        clients: clients(spec),
        present_by: PresentationForm::of(&accepted),
        accepted,
        selection: upgrade.selection,
    })
}

/// The effective declaration recorded in status (`status.effective`).
pub fn effective_from_status(effective: &EffectiveDeclaration) -> Result<Effective, Blocked> {
    let accepted = accepted_from(
        "status.effective",
        effective.certificate.as_ref(),
        effective.certificate_common_names.as_ref(),
    )
    .map_err(|blocked| Blocked::new(BlockReason::InvalidEffectiveState, blocked.message))?;
    let presented = effective
        .presented
        .as_deref()
        .map(|raw| Thumbprint::parse("status.effective.presented", raw))
        .transpose()
        .map_err(|err| Blocked::new(BlockReason::InvalidEffectiveState, err.to_string()))?;
    Ok(Effective {
        clients: None,
        revision: effective.revision,
        accepted,
        presented,
        tolerated: Vec::new(),
    })
}

/// The Service Fabric shape (`certificate`, `certificateCommonNames`) as rules.
fn accepted_from(
    prefix: &str,
    certificate: Option<&CertificateThumbprints>,
    common_names: Option<&CertificateCommonNames>,
) -> Result<Accepted, Blocked> {
    let mut thumbprints = Vec::new();
    if let Some(certificate) = certificate {
        let field = format!("{prefix}.certificate.thumbprint");
        thumbprints.push(Thumbprint::parse(&field, &certificate.thumbprint).map_err(invalid_thumbprint)?);
        if let Some(secondary) = certificate
            .thumbprint_secondary
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            let field = format!("{prefix}.certificate.thumbprintSecondary");
            thumbprints.push(Thumbprint::parse(&field, secondary).map_err(invalid_thumbprint)?);
        }
    }
    let mut rules: Vec<(usize, CommonNameRule)> = Vec::new();
    for (index, entry) in common_names.iter().flat_map(|c| c.common_names.iter()).enumerate() {
        let field = format!("{prefix}.certificateCommonNames.commonNames[{index}]");
        let name = common_name(
            &format!("{field}.certificateCommonName"),
            &entry.certificate_common_name,
        )?;
        if let Some((first, _)) = rules.iter().find(|(_, rule)| rule.name.eq_ignore_ascii_case(name)) {
            return Err(Blocked::new(
                BlockReason::DuplicateCommonName,
                format!(
                    "{field}.certificateCommonName: {name:?} is already declared at \
                     {prefix}.certificateCommonNames.commonNames[{first}]; list several issuers in one entry instead"
                ),
            ));
        }
        let issuers = parse_thumbprint_list(
            &format!("{field}.certificateIssuerThumbprint"),
            &entry.certificate_issuer_thumbprint,
        )
        .map_err(invalid_thumbprint)?;
        rules.push((index, CommonNameRule::new(name, issuers)));
    }
    Ok(Accepted::new(thumbprints, rules.into_iter().map(|(_, rule)| rule)))
}

/// A declared common name: the bare name, as Service Fabric wants it.
fn common_name<'a>(field: &str, raw: &'a str) -> Result<&'a str, Blocked> {
    let name = raw.trim();
    let invalid = |why: &str| Blocked::new(BlockReason::InvalidCommonName, format!("{field}: {why}"));
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.get(..3).is_some_and(|prefix| prefix.eq_ignore_ascii_case("CN=")) {
        return Err(invalid(&format!("{name:?} starts with \"CN=\"; declare the bare name")));
    }
    // The invisible marks certificate UIs paste (DESIGN §2) never belong in a name.
    let invisible = |c: char| matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{FEFF}');
    if let Some(bad) = name.chars().find(|&c| c.is_control() || c == ',' || invisible(c)) {
        return Err(invalid(&format!("{name:?} contains {bad:?}")));
    }
    Ok(name)
}

/// Client rules of a spec (validated by `desired_from_spec` before use).
fn clients(spec: &ClusterCertificateDeclarationSpec) -> Clients {
    let mut thumbprints: Vec<ClientThumbprint> = spec
        .client_certificate_thumbprints
        .iter()
        .filter_map(|c| {
            Some(ClientThumbprint {
                thumbprint: Thumbprint::parse("", &c.certificate_thumbprint).ok()?,
                is_admin: c.is_admin,
            })
        })
        .collect();
    thumbprints.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
    let mut common_names: Vec<ClientCommonName> = spec
        .client_certificate_common_names
        .iter()
        .map(|c| ClientCommonName {
            name: c.certificate_common_name.trim().to_owned(),
            issuer_thumbprints: parse_thumbprint_list("", &c.certificate_issuer_thumbprint).unwrap_or_default(),
            is_admin: c.is_admin,
        })
        .collect();
    common_names.sort_by(|a, b| a.name.cmp(&b.name));
    Clients {
        thumbprints,
        common_names,
    }
}
