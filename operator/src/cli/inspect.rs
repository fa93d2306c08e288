//! `certshift inspect`: the facts of certificates in a file or Secret manifest,
//! with thumbprints ready to paste into a declaration.

use std::fmt::Write as _;

use super::manifests::Manifests;
use crate::facts::tls_material;
use crate::facts::{CertificateBundle, CertificateFacts, inspect as inspect_bytes};
use crate::outputs::secret_data;

/// The certificates of `bytes`: PEM or DER, or the Secrets of a YAML manifest.
pub fn inspect(source: &str, bytes: &[u8]) -> Result<Vec<(String, CertificateFacts)>, String> {
    let text = std::str::from_utf8(bytes).ok();
    // A manifest has top-level `kind:`/`apiVersion:` lines (or is JSON); PEM never does.
    let is_manifest = text.is_some_and(|t| {
        t.trim_start().starts_with('{')
            || t.lines()
                .any(|l| l.starts_with("kind:") || l.starts_with("apiVersion:"))
    });
    if !is_manifest {
        let all = inspect_bytes(source, bytes).map_err(|err| err.to_string())?;
        return Ok(all.into_iter().map(|facts| (source.to_owned(), facts)).collect());
    }
    let mut manifests = Manifests::default();
    manifests.read(source, text.unwrap_or_default())?;
    if manifests.secrets.is_empty() {
        return Err(format!("{source}: no certificate and no Secret found"));
    }
    let mut out = Vec::new();
    for (origin, secret) in &manifests.secrets {
        let data = secret_data(secret);
        let bundle = CertificateBundle::from_tls(&tls_material(&data)).map_err(|err| format!("{origin}: {err}"))?;
        let label = |field: &str| format!("{origin} {field}");
        out.push((label("tls.crt"), bundle.leaf));
        out.extend(bundle.chain.into_iter().map(|facts| (label("tls.crt"), facts)));
        out.extend(bundle.ca.into_iter().map(|facts| (label("ca.crt"), facts)));
    }
    Ok(out)
}

pub fn render_text(all: &[(String, CertificateFacts)]) -> String {
    let mut out = String::new();
    for (index, (source, facts)) in all.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let list = |items: &[String]| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        let rows = [
            ("Source", source.clone()),
            ("Thumbprint", facts.thumbprint.to_string()),
            ("SHA-256", facts.sha256.to_string()),
            ("Subject", facts.subject.clone()),
            (
                "Common name",
                facts.common_name.clone().unwrap_or_else(|| "-".to_owned()),
            ),
            ("DNS names", list(&facts.dns_names)),
            ("IP addresses", list(&facts.ip_addresses)),
            ("URIs", list(&facts.uris)),
            ("Issuer", facts.issuer.clone()),
            (
                "Issuer thumbprint",
                facts
                    .issuer_thumbprint
                    .as_ref()
                    .map_or_else(|| "unknown (issuer not in the input)".to_owned(), ToString::to_string),
            ),
            ("Serial", facts.serial.clone()),
            ("Not before", facts.not_before.to_string()),
            ("Not after", facts.not_after.to_string()),
            ("Key", format!("{} {}", facts.key_algorithm, facts.key_size)),
            ("Signature", facts.signature_algorithm.clone()),
            (
                "Key usage",
                if facts.key_usages.is_empty() {
                    "- (no keyUsage extension: unrestricted)".to_owned()
                } else {
                    facts.key_usages.join(", ")
                },
            ),
            ("Extended key usage", list(&facts.extended_key_usages)),
            ("CA", facts.is_ca.to_string()),
            ("Self-signed", facts.self_signed.to_string()),
            ("Private key", format!("{:?}", facts.private_key)),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "{:<19} {value}", format!("{name}:"));
        }
    }
    out
}

pub fn render_json(all: &[(String, CertificateFacts)]) -> String {
    let facts: Vec<&CertificateFacts> = all.iter().map(|(_, facts)| facts).collect();
    serde_json::to_string_pretty(&facts).expect("facts serialize") + "\n"
}
