//! `certshift status NAME`: a declaration, what is in force, where its upgrade
//! stands, its members, its store and recent events, like `cmctl status`.

use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::crd::{CertificateCommonNames, CertificateThumbprints, ClusterCertificateDeclaration, ObservedCertificate};

/// Everything `status` shows, read once.
pub struct Report {
    pub declaration: ClusterCertificateDeclaration,
    /// Each store entry, and the ObservedCertificate if it exists.
    pub store: Vec<(String, Option<ObservedCertificate>)>,
    /// (time, type, reason, note), oldest first.
    pub events: Vec<(Option<Timestamp>, String, String, String)>,
}

pub async fn gather(client: &Client, namespace: &str, name: &str) -> Result<Report, String> {
    let declarations: Api<ClusterCertificateDeclaration> = Api::namespaced(client.clone(), namespace);
    let declaration = declarations
        .get_opt(name)
        .await
        .map_err(|err| format!("reading ClusterCertificateDeclaration {namespace}/{name}: {err}"))?
        .ok_or_else(|| format!("ClusterCertificateDeclaration {namespace}/{name} not found"))?;
    let observed: Api<ObservedCertificate> = Api::namespaced(client.clone(), namespace);
    let mut store = Vec::new();
    for entry in &declaration.spec.store.observed_certificates {
        let found = observed
            .get_opt(entry)
            .await
            .map_err(|err| format!("reading ObservedCertificate {namespace}/{entry}: {err}"))?;
        store.push((entry.clone(), found));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let selector = format!("regarding.name={name},regarding.kind=ClusterCertificateDeclaration");
    let mut events: Vec<_> = events
        .list(&ListParams::default().fields(&selector))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let time = e
                .deprecated_last_timestamp
                .map(|t| t.0)
                .or(e.event_time.map(|t| t.0))
                .or(e.metadata.creation_timestamp.map(|t| t.0));
            (
                time,
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect();
    events.sort_by_key(|e| e.0);
    Ok(Report {
        declaration,
        store,
        events,
    })
}

fn age(now: Timestamp, then: Timestamp) -> String {
    let seconds = (now.as_second() - then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn declaration_lines(
    out: &mut String,
    certificate: Option<&CertificateThumbprints>,
    common_names: Option<&CertificateCommonNames>,
) {
    match certificate {
        Some(c) => {
            let secondary = c.thumbprint_secondary.as_deref().unwrap_or("-");
            let _ = writeln!(out, "  Thumbprint:           {}", c.thumbprint);
            let _ = writeln!(out, "  Thumbprint secondary: {secondary}");
        }
        None => {
            let _ = writeln!(out, "  Thumbprint:           -");
        }
    }
    let names = common_names.map(|c| c.common_names.as_slice()).unwrap_or_default();
    if names.is_empty() {
        let _ = writeln!(out, "  Common names:         -");
    }
    for name in names {
        let issuers = if name.certificate_issuer_thumbprint.is_empty() {
            "any issuer the trust bundle holds".to_owned()
        } else {
            format!("issuers {}", name.certificate_issuer_thumbprint)
        };
        let _ = writeln!(
            out,
            "  Common name:          {} ({issuers})",
            name.certificate_common_name
        );
    }
}

/// The report as text; `now` for ages and expiry countdowns.
pub fn render(report: &Report, now: Timestamp) -> String {
    let d = &report.declaration;
    let status = d.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Name:        {}", d.name_any());
    let _ = writeln!(out, "Namespace:   {}", d.namespace().unwrap_or_default());
    let _ = writeln!(
        out,
        "Generation:  {} (observed {})",
        d.metadata.generation.unwrap_or(0),
        status
            .observed_generation
            .map_or_else(|| "-".to_owned(), |g| g.to_string())
    );
    let _ = writeln!(out, "Declared by: {}", status.declared_by.as_deref().unwrap_or("-"));
    // What Flux and other kstatus readers make of it.
    let (kstatus, message) = crate::kstatus::of(d);
    let _ = writeln!(out, "kstatus:     {kstatus:?} ({message})");

    let _ = writeln!(out, "\nConditions:");
    for c in &status.conditions {
        let _ = writeln!(out, "  {:<20} {:<6} {:<22} {}", c.type_, c.status, c.reason, c.message);
    }

    let _ = writeln!(out, "\nDesired declaration (spec):");
    declaration_lines(
        &mut out,
        d.spec.certificate.as_ref(),
        d.spec.certificate_common_names.as_ref(),
    );
    match &status.effective {
        Some(effective) => {
            let _ = writeln!(out, "\nEffective declaration (revision {}):", effective.revision);
            declaration_lines(
                &mut out,
                effective.certificate.as_ref(),
                effective.certificate_common_names.as_ref(),
            );
        }
        None => {
            let _ = writeln!(out, "\nEffective declaration: nothing published yet");
        }
    }
    if let Some(p) = &status.presenting {
        let expires = p
            .not_after
            .map_or_else(|| "-".to_owned(), |at| format!("{at} (in {})", age(at, now)));
        let _ = writeln!(
            out,
            "  Presenting:           {} ({}), notAfter {expires}",
            p.thumbprint,
            p.common_name
                .as_deref()
                .map_or_else(|| "no CN".to_owned(), |cn| format!("CN {cn}"))
        );
    }

    let _ = writeln!(out, "\nUpgrade:");
    match &status.upgrade {
        Some(u) => {
            let stage = u.stage.map_or_else(|| "- (up to date)".to_owned(), |s| s.to_string());
            let cause = u.cause.map(|c| format!(" ({c})")).unwrap_or_default();
            let _ = writeln!(out, "  Stage:     {stage}{cause}");
            let _ = writeln!(out, "  Revision:  {}", u.revision);
            if let Some(t) = u.published_time {
                let _ = writeln!(out, "  Published: {t} ({} ago)", age(now, t));
            }
            if let Some(t) = u.acknowledged_time {
                let _ = writeln!(out, "  Acknowledged by all members: {t}");
            }
            if let Some(health) = &u.health {
                let since = match (health.healthy_time, health.unhealthy_time) {
                    (_, Some(t)) => format!(", failing since {t} ({} ago)", age(now, t)),
                    (Some(t), None) => format!(", healthy since {t} ({} ago)", age(now, t)),
                    (None, None) => String::new(),
                };
                let _ = writeln!(out, "  Health check: {}{since}", health.state);
                for member in &health.unhealthy {
                    let _ = writeln!(out, "    {}: {}: {}", member.member, member.reason, member.message);
                }
            }
            let remaining: Vec<_> = u.plan.iter().filter(|r| r.state == "Pending").collect();
            if remaining.is_empty() {
                let _ = writeln!(out, "  Remaining revisions: none");
            } else {
                let _ = writeln!(out, "  Remaining revisions:");
                for r in remaining {
                    let stage = r.stage.map_or_else(|| "-".to_owned(), |s| s.to_string());
                    let change = r.change.map_or_else(|| "-".to_owned(), |c| format!("{c:?}"));
                    let cause = r.cause.map(|c| format!(" ({c})")).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "    {:<4} {:<20} {:<13} presents {}{cause}",
                        r.revision, stage, change, r.presented
                    );
                }
            }
        }
        None => {
            let _ = writeln!(out, "  nothing published yet");
        }
    }

    let _ = writeln!(out, "\nMembers:");
    match &status.members {
        Some(m) if m.total == 0 => {
            let _ = writeln!(out, "  none declared (a revision is complete when published)");
        }
        Some(m) => {
            let _ = writeln!(out, "  Converged: {}", m.summary);
            if !m.laggards.is_empty() {
                let _ = writeln!(out, "  Laggards:  {}", m.laggards.join(", "));
            }
        }
        None => {
            let _ = writeln!(out, "  -");
        }
    }

    let _ = writeln!(out, "\nStore:");
    let presented = status.presenting.as_ref().map(|p| p.thumbprint.clone());
    for (name, observed) in &report.store {
        let Some(observed) = observed else {
            let _ = writeln!(out, "  {name}: ObservedCertificate not found");
            continue;
        };
        let s = observed.status.clone().unwrap_or_default();
        let synced = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Synced")
            .map_or("Unknown".to_owned(), |c| format!("{} ({})", c.status, c.reason));
        let _ = writeln!(out, "  {name}: Synced {synced}, {} instance(s)", s.instance_count);
        for instance in &s.instances {
            let mark = if presented.as_deref() == Some(instance.thumbprint.as_str()) {
                "  <- presented"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} {} issuer {} notAfter {} (in {}){mark}",
                instance.thumbprint,
                instance
                    .common_name
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |cn| format!("CN={cn}")),
                instance.issuer_thumbprint.as_ref().map_or("unknown", |t| t.short()),
                instance.not_after,
                age(instance.not_after, now),
            );
        }
    }

    let _ = writeln!(out, "\nEvents:");
    if report.events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (time, type_, reason, note) in report.events.iter().rev().take(10).rev() {
        let ago = time.map_or_else(|| "-".to_owned(), |t| age(now, t));
        let _ = writeln!(out, "  {ago:>5} {type_:<8} {reason:<20} {note}");
    }
    out
}
