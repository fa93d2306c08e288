//! `certshift plan`: the operator's planner, offline, over manifests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use super::manifests::{Manifests, Origin};
use crate::blocked::{BlockReason, Blocked};
use crate::crd::ClusterCertificateDeclaration;
use crate::declaration::store::{TrustBundleInput, put_crls_in_force};
use crate::facts::tls_material;
use crate::facts::{CertificateBundle, CertificateFacts};
use crate::outputs::secret_data;
use crate::planner::{self, Plan, Revision, Store};
use crate::thumbprint::Thumbprint;
use crate::trust::TrustPool;
use std::sync::Arc;

/// Exit codes of `certshift plan`.
pub const EXIT_PLANNED: i32 = 0;
pub const EXIT_INVALID_INPUT: i32 = 1;
pub const EXIT_BLOCKED: i32 = 3;

/// The JSON document `certshift plan -o json` prints (DESIGN §8).
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub declaration: String,
    pub blocked: Option<Blocked>,
    pub revisions: Vec<Revision>,
}

impl PlanReport {
    pub fn exit_code(&self) -> i32 {
        if self.blocked.is_some() {
            EXIT_BLOCKED
        } else {
            EXIT_PLANNED
        }
    }
}

/// Plans the one declaration in `manifests`. `Err` is invalid input.
pub fn plan(manifests: &Manifests, now: Timestamp) -> Result<PlanReport, String> {
    let (origin, declaration) = match manifests.declarations.as_slice() {
        [one] => one,
        [] => return Err("no ClusterCertificateDeclaration in the input".to_owned()),
        [_, second, ..] => {
            return Err(format!(
                "{}: a second ClusterCertificateDeclaration; plan one at a time",
                second.0
            ));
        }
    };
    let namespace = declaration
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = declaration.metadata.name.clone().unwrap_or_default();
    let report = |plan: Plan| PlanReport {
        declaration: format!("{namespace}/{name}"),
        blocked: plan.blocked,
        revisions: plan.revisions,
    };
    let blocked = |blocked: Blocked| {
        report(Plan {
            revisions: Vec::new(),
            blocked: Some(blocked),
        })
    };

    let desired = match crate::declaration::spec::parse(&declaration.spec).map(|s| s.desired) {
        Ok(desired) => desired,
        Err(err) => return Ok(blocked(err)),
    };
    let effective = match declaration.status.as_ref().and_then(|s| s.effective.as_ref()) {
        Some(effective) => match planner::effective_from_status(effective) {
            Ok(effective) => Some(effective),
            Err(err) => return Ok(blocked(err)),
        },
        None => None,
    };
    let store = match gather_store(manifests, declaration, &namespace, now) {
        Ok(Ok(store)) => store,
        Ok(Err(err)) => return Ok(blocked(err)),
        Err(input) => return Err(format!("{origin}: {input}")),
    };
    Ok(report(planner::plan(effective.as_ref(), &desired, &store, now)))
}

/// The store a declaration names, from the ObservedCertificates and Secrets of
/// the input. The outer `Err` is invalid input; the inner one a blocked plan.
fn gather_store(
    manifests: &Manifests,
    declaration: &ClusterCertificateDeclaration,
    namespace: &str,
    now: Timestamp,
) -> Result<Result<Store, Blocked>, String> {
    let in_namespace = |ns: &Option<String>| ns.as_deref().unwrap_or("default") == namespace;
    let secret = |name: &str| {
        manifests
            .secrets
            .iter()
            .find(|(_, s)| s.metadata.name.as_deref() == Some(name) && in_namespace(&s.metadata.namespace))
    };
    let mut instances: BTreeMap<Thumbprint, CertificateFacts> = BTreeMap::new();
    let mut leaf_der: BTreeMap<Thumbprint, Vec<u8>> = BTreeMap::new();
    let mut pool = TrustPool::default();
    let include_store_cas = declaration
        .spec
        .trust_bundle
        .as_ref()
        .is_some_and(|t| t.include_store_cas);
    for (index, store_name) in declaration.spec.store.observed_certificates.iter().enumerate() {
        let observed = manifests.observed.iter().find(|(_, o)| {
            o.metadata.name.as_deref() == Some(store_name.as_str()) && in_namespace(&o.metadata.namespace)
        });
        // An ObservedCertificate's source Secret, or a Secret named directly.
        let secret_name = observed.map_or(store_name.as_str(), |(_, o)| o.spec.source.secret_ref.name.as_str());
        let source = secret(secret_name);
        let recorded = observed
            .and_then(|(_, o)| o.status.as_ref())
            .map(|s| s.instances.clone());
        if source.is_none() && recorded.as_ref().is_none_or(Vec::is_empty) {
            let what = match observed {
                Some(_) => format!("its source Secret {namespace}/{secret_name} is not in the input"),
                None => "no ObservedCertificate or Secret of that name is in the input".to_owned(),
            };
            return Ok(Err(Blocked::new(
                BlockReason::StoreNotFound,
                format!("spec.store.observedCertificates[{index}]: {store_name:?}: {what}"),
            )));
        }
        for facts in recorded.into_iter().flatten() {
            instances.entry(facts.thumbprint.clone()).or_insert(facts);
        }
        if let Some((origin, secret)) = source {
            let data = secret_data(secret);
            let bundle = CertificateBundle::from_tls(&tls_material(&data)).map_err(|err| format!("{origin}: {err}"))?;
            for ((_, der), facts) in bundle.authorities_der.iter().zip(bundle.authorities()) {
                if include_store_cas && bundle.ca.contains(facts) {
                    pool.add_anchor(facts.clone(), der.clone());
                } else {
                    pool.add_authority(facts.clone(), der.clone());
                }
            }
            leaf_der.insert(bundle.leaf.thumbprint.clone(), bundle.chain_der[0].clone());
            instances.insert(bundle.leaf.thumbprint.clone(), bundle.leaf);
        }
    }
    if let Some(source) = &declaration.spec.trust_bundle {
        match trust_bundle_roots(manifests, source, namespace) {
            Ok(roots) => roots.into_iter().for_each(|(facts, der)| pool.add_anchor(facts, der)),
            Err(err) => return Ok(Err(err)),
        }
    }
    for (thumbprint, facts) in &mut instances {
        if let Some(der) = leaf_der.get(thumbprint) {
            pool.link(facts, der);
        }
    }
    // The CRLs in force, judged as the operator judges them.
    let named = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, name: &str| {
        meta.name.as_deref() == Some(name) && meta.namespace.as_deref().unwrap_or("default") == namespace
    };
    let crl_inputs: Vec<TrustBundleInput> = declaration
        .spec
        .revocation
        .iter()
        .flat_map(|r| &r.crls)
        .map(|source| match (&source.config_map_ref, &source.secret_ref) {
            (None, Some(r)) => TrustBundleInput::Secret(
                manifests
                    .secrets
                    .iter()
                    .find(|(_, s)| named(&s.metadata, &r.name))
                    .map(|(_, s)| Arc::new(s.clone())),
            ),
            (r, _) => TrustBundleInput::ConfigMap(r.as_ref().and_then(|r| {
                manifests
                    .config_maps
                    .iter()
                    .find(|(_, m)| named(&m.metadata, &r.name))
                    .map(|(_, m)| Arc::new(m.clone()))
            })),
        })
        .collect();
    if let Err(blocked) = put_crls_in_force(&mut pool, namespace, &declaration.spec, &crl_inputs, now) {
        return Ok(Err(blocked));
    }
    Ok(Ok(Store {
        instances: instances.into_values().collect(),
        trust: pool.build(),
    }))
}

/// The certificates of `spec.trustBundle` (a ConfigMap or Secret key, default `ca.crt`).
fn trust_bundle_roots(
    manifests: &Manifests,
    source: &crate::crd::TrustBundleSource,
    namespace: &str,
) -> Result<Vec<(CertificateFacts, Vec<u8>)>, Blocked> {
    let not_found = |what: String| Blocked::new(BlockReason::InvalidTrustBundle, format!("spec.trustBundle: {what}"));
    let matches = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, name: &str| {
        meta.name.as_deref() == Some(name) && meta.namespace.as_deref().unwrap_or("default") == namespace
    };
    let (origin, key, bytes): (&Origin, String, Option<Vec<u8>>) = if let Some(r) = &source.config_map_ref {
        let key = r.key.clone().unwrap_or_else(|| "ca.crt".to_owned());
        let (origin, map) = manifests
            .config_maps
            .iter()
            .find(|(_, m)| matches(&m.metadata, &r.name))
            .ok_or_else(|| not_found(format!("ConfigMap {namespace}/{} is not in the input", r.name)))?;
        let bytes = map
            .data
            .as_ref()
            .and_then(|d| d.get(&key))
            .map(|v| v.as_bytes().to_vec())
            .or_else(|| map.binary_data.as_ref().and_then(|d| d.get(&key)).map(|v| v.0.clone()));
        (origin, key, bytes)
    } else if let Some(r) = &source.secret_ref {
        let key = r.key.clone().unwrap_or_else(|| "ca.crt".to_owned());
        let (origin, secret) = manifests
            .secrets
            .iter()
            .find(|(_, s)| matches(&s.metadata, &r.name))
            .ok_or_else(|| not_found(format!("Secret {namespace}/{} is not in the input", r.name)))?;
        (origin, key.clone(), secret_data(secret).remove(&key))
    } else if source.include_store_cas {
        return Ok(Vec::new());
    } else {
        return Err(not_found(
            "set configMapRef or secretRef (or includeStoreCAs)".to_owned(),
        ));
    };
    let bytes = bytes.ok_or_else(|| not_found(format!("{origin} has no key {key:?}")))?;
    crate::facts::parse_bundle(&key, &bytes).map_err(|err| not_found(format!("{origin}: {err}")))
}

pub fn render_json(report: &PlanReport) -> String {
    serde_json::to_string_pretty(report).expect("plan serializes") + "\n"
}

/// A table for people reviewing a GitOps change.
pub fn render_text(report: &PlanReport) -> String {
    let mut out = String::new();
    let pending = report.revisions.len().saturating_sub(1);
    let _ = match (&report.blocked, pending) {
        (Some(blocked), _) => writeln!(out, "{}: blocked: {blocked}", report.declaration),
        (None, 0) => writeln!(out, "{}: nothing to publish", report.declaration),
        (None, n) => writeln!(
            out,
            "{}: {n} revision{} to publish",
            report.declaration,
            if n == 1 { "" } else { "s" }
        ),
    };
    if report.revisions.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<4} {:<20} {:<13} {:<41} ACCEPTED",
        "REV", "STAGE", "CHANGE", "PRESENTED"
    );
    for (index, revision) in report.revisions.iter().enumerate() {
        let stage = match (index, revision.stage) {
            (0, _) => "(in force)".to_owned(),
            (_, Some(stage)) => stage.to_string(),
            (_, None) => "-".to_owned(),
        };
        let change = revision.change.map_or_else(|| "-".to_owned(), |c| format!("{c:?}"));
        let mut accepted: Vec<String> = revision
            .accepted
            .thumbprints
            .iter()
            .map(|t| format!("TP {t}"))
            .collect();
        accepted.extend(revision.accepted.common_names.iter().map(|rule| {
            if rule.is_pinned() {
                let issuers: Vec<&str> = rule.issuer_thumbprints.iter().map(Thumbprint::short).collect();
                format!("CN {} (issuers {})", rule.name, issuers.join(","))
            } else {
                format!("CN {} (trust bundle)", rule.name)
            }
        }));
        let _ = writeln!(
            out,
            "{:<4} {:<20} {:<13} {:<41} {}",
            revision.revision,
            stage,
            change,
            revision.presented,
            accepted.join("; ")
        );
    }
    out
}
