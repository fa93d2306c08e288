//! From the declaration's status (`status.effective`) to the planner's
//! [`Effective`], and the Service Fabric shape of certificates and common
//! names as rules, shared with the spec's parser (`declaration::spec`):
//! every error names its field.

use super::Effective;
use crate::blocked::{BlockReason, Blocked};
use crate::crd::{CertificateCommonNames, CertificateThumbprints, EffectiveDeclaration};
use crate::rules::{Accepted, CommonNameRule};
use crate::thumbprint::{Thumbprint, ThumbprintError, parse_thumbprint_list};

fn invalid_thumbprint(err: ThumbprintError) -> Blocked {
    Blocked::new(BlockReason::InvalidThumbprint, err.to_string())
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
        anchors: effective
            .trust_anchors
            .as_ref()
            .map(|anchors| {
                anchors
                    .iter()
                    .enumerate()
                    .map(|(index, raw)| Thumbprint::parse(&format!("status.effective.trustAnchors[{index}]"), raw))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|err| Blocked::new(BlockReason::InvalidEffectiveState, err.to_string()))?,
    })
}

/// The Service Fabric shape (`certificate`, `certificateCommonNames`) as rules.
pub(crate) fn accepted_from(
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
pub(crate) fn common_name<'a>(field: &str, raw: &'a str) -> Result<&'a str, Blocked> {
    let name = raw.trim();
    let invalid = |why: &str| Blocked::new(BlockReason::InvalidCommonName, format!("{field}: {why}"));
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.get(..3).is_some_and(|prefix| prefix.eq_ignore_ascii_case("CN=")) {
        return Err(invalid(&format!("{name:?} starts with \"CN=\"; declare the bare name")));
    }
    // The invisible marks certificate UIs paste (docs/cli.md) never belong in a name.
    let invisible = |c: char| matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{FEFF}');
    if let Some(bad) = name.chars().find(|&c| c.is_control() || c == ',' || invisible(c)) {
        return Err(invalid(&format!("{name:?} contains {bad:?}")));
    }
    Ok(name)
}
