//! `certshift plan`: the operator's planner, offline, over manifests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::manifests::Manifests;
use crate::blocked::{BlockReason, Blocked};
use crate::crd::{ClusterCertificateDeclaration, KeySelector, ObservedCertificate, ObservedCertificateSpec};
use crate::declaration::store::{FetchState, ObservedInput, StoreInputs, TrustBundleInput};
use crate::declaration::{self, store};
use crate::observed;
use crate::outputs::{self, secret_data};
use crate::planner::{self, Plan, Revision};
use crate::thumbprint::Thumbprint;

/// Exit codes of `certshift plan`.
pub const EXIT_PLANNED: i32 = 0;
pub const EXIT_INVALID_INPUT: i32 = 1;
pub const EXIT_BLOCKED: i32 = 3;

/// The JSON document `certshift plan -o json` prints (docs/cli.md).
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub declaration: String,
    pub blocked: Option<Blocked>,
    pub revisions: Vec<Revision>,
    /// What waits once the revisions are walked (the removal of a trust
    /// anchor still in use): the declaration is held there, as the operator
    /// holds it (`TrustAnchorInUse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Blocked>,
    /// For each revision after the one in force: whether a rollback from it
    /// to the declaration in force now is still possible (a point of no
    /// return says why not). Empty when nothing is in force.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollback: Vec<RollbackFrom>,
}

/// Whether a rollback from `revision` is possible, and if not, why.
#[derive(Debug, Serialize)]
pub struct RollbackFrom {
    pub revision: u64,
    pub possible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
}

impl PlanReport {
    pub fn exit_code(&self) -> i32 {
        if self.blocked.is_some() || self.held.is_some() {
            EXIT_BLOCKED
        } else {
            EXIT_PLANNED
        }
    }
}

/// Plans the one declaration in `manifests` offline: CRL distribution
/// points are not fetched (`certshift plan` fetches them, through
/// [`plan_inputs`]). `Err` is invalid input.
pub fn plan(manifests: &Manifests, now: Timestamp) -> Result<PlanReport, String> {
    Ok(match gather(manifests, now)? {
        Gathered::Blocked(report) => report,
        Gathered::Inputs(declaration, inputs) => plan_inputs(declaration, &inputs, now, |_| BTreeMap::new()),
    })
}

/// What the operator does with a declaration's inputs on each reconcile:
/// parse the spec, collect the store, fetch the CRLs of its distribution
/// points (`fetch`, called only when there are some), finish the store, plan.
pub fn plan_inputs(
    declaration: &ClusterCertificateDeclaration,
    inputs: &StoreInputs,
    now: Timestamp,
    fetch: impl FnOnce(&[String]) -> BTreeMap<String, FetchState>,
) -> PlanReport {
    let namespace = namespace_of(declaration);
    let report = |plan: Plan| PlanReport {
        declaration: format!(
            "{namespace}/{}",
            declaration.metadata.name.as_deref().unwrap_or_default()
        ),
        blocked: plan.blocked,
        revisions: plan.revisions,
        held: plan.held,
        rollback: Vec::new(),
    };
    let blocked = |blocked: Blocked| {
        report(Plan {
            revisions: Vec::new(),
            blocked: Some(blocked),
            held: None,
        })
    };
    let spec = match declaration::spec::parse(&declaration.spec) {
        Ok(spec) => spec,
        Err(err) => return blocked(err),
    };
    let effective = match declaration.status.as_ref().and_then(|s| s.effective.as_ref()) {
        Some(effective) => match planner::effective_from_status(effective) {
            Ok(effective) => Some(effective),
            Err(err) => return blocked(err),
        },
        None => None,
    };
    let collected = match store::collect(&namespace, &declaration.spec, inputs, &Default::default()) {
        Ok(collected) => collected,
        Err(err) => return blocked(err),
    };
    let with_fetched;
    let inputs = match collected.distribution_points() {
        [] => inputs,
        points => {
            with_fetched = StoreInputs {
                fetched: fetch(points),
                ..inputs.clone()
            };
            &with_fetched
        }
    };
    match collected.finish(&namespace, &declaration.spec, inputs, now) {
        Ok(contents) => {
            let plan = planner::plan(effective.as_ref(), &spec.desired, &contents.store, now);
            let rollback = match (effective.is_some(), plan.revisions.first()) {
                (true, Some(in_force)) => {
                    let origin = planner::desired_of(in_force, spec.desired.selection);
                    plan.pending()
                        .iter()
                        .map(|revision| {
                            let walk = planner::walk_back(revision, &origin, &contents.store, now);
                            RollbackFrom {
                                revision: revision.revision,
                                possible: walk.is_ok(),
                                blocked: walk.err(),
                            }
                        })
                        .collect()
                }
                _ => Vec::new(),
            };
            PlanReport {
                rollback,
                ..report(plan)
            }
        }
        Err(err) => blocked(err),
    }
}

/// The one declaration of the input and what the operator would read for it.
pub enum Gathered<'m> {
    Inputs(&'m ClusterCertificateDeclaration, StoreInputs),
    /// Nothing to plan with: the store named is not in the input.
    Blocked(PlanReport),
}

fn namespace_of(declaration: &ClusterCertificateDeclaration) -> String {
    declaration
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

/// The one declaration of `manifests` and what the operator would read for
/// its store. `Err` is invalid input.
pub fn gather(manifests: &Manifests, now: Timestamp) -> Result<Gathered<'_>, String> {
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
    let namespace = namespace_of(declaration);
    match store_inputs(manifests, declaration, &namespace, now) {
        Ok(Ok(inputs)) => Ok(Gathered::Inputs(declaration, inputs)),
        Ok(Err(blocked)) => Ok(Gathered::Blocked(PlanReport {
            declaration: format!(
                "{namespace}/{}",
                declaration.metadata.name.as_deref().unwrap_or_default()
            ),
            blocked: Some(blocked),
            revisions: Vec::new(),
            held: None,
            rollback: Vec::new(),
        })),
        Err(input) => Err(format!("{origin}: {input}")),
    }
}

/// What the operator reads for the store, from the input: each
/// ObservedCertificate (or a Secret named directly) with its status and
/// `-store` Secret as the ObservedCertificate controller would write them
/// after reading its source (an exported `-store` Secret in the input keeps
/// the instances retained before), and the trust bundle and CRL objects.
/// The outer `Err` is invalid input; the inner one a blocked plan.
fn store_inputs(
    manifests: &Manifests,
    declaration: &ClusterCertificateDeclaration,
    namespace: &str,
    now: Timestamp,
) -> Result<Result<StoreInputs, Blocked>, String> {
    let named = |meta: &ObjectMeta, name: &str| {
        meta.name.as_deref() == Some(name) && meta.namespace.as_deref().unwrap_or("default") == namespace
    };
    let secret = |name: &str| manifests.secrets.iter().find(|(_, s)| named(&s.metadata, name));
    let config_map = |name: &str| manifests.config_maps.iter().find(|(_, m)| named(&m.metadata, name));
    let mut inputs = StoreInputs::default();
    for (index, store_name) in declaration.spec.store.observed_certificates.iter().enumerate() {
        let observed = manifests
            .observed
            .iter()
            .find(|(_, o)| named(&o.metadata, store_name))
            .map(|(_, o)| o.clone());
        // An ObservedCertificate's source Secret, or a Secret named directly.
        let secret_name = observed
            .as_ref()
            .map_or(store_name.clone(), |o| o.spec.source.secret_ref.name.clone());
        let source = secret(&secret_name);
        let recorded = observed
            .as_ref()
            .and_then(|o| o.status.as_ref())
            .is_some_and(|s| !s.instances.is_empty());
        if source.is_none() && !recorded {
            let what = match observed {
                Some(_) => format!("its source Secret {namespace}/{secret_name} is not in the input"),
                None => "no ObservedCertificate or Secret of that name is in the input".to_owned(),
            };
            return Ok(Err(Blocked::new(
                BlockReason::StoreNotFound,
                format!("spec.store.observedCertificates[{index}]: {store_name:?}: {what}"),
            )));
        }
        let exported_store = secret(&outputs::store_name(store_name)).map(|(_, s)| s);
        let input = observe(store_name, observed, source.map(|(_, s)| s), exported_store, now);
        // A source that is no certificate is a mistake in the input.
        let status = input.object.as_ref().and_then(|o| o.status.as_ref());
        if let (Some((origin, _)), Some((_, message))) = (source, status.and_then(observed::unreadable_source)) {
            return Err(format!("{origin}: {message}"));
        }
        inputs.observed.push(input);
    }
    let object =
        |config_map_ref: Option<&KeySelector>, secret_ref: Option<&KeySelector>| match (config_map_ref, secret_ref) {
            (None, Some(r)) => TrustBundleInput::Secret(secret(&r.name).map(|(_, s)| Arc::new(s.clone()))),
            (r, _) => {
                TrustBundleInput::ConfigMap(r.and_then(|r| config_map(&r.name)).map(|(_, m)| Arc::new(m.clone())))
            }
        };
    inputs.trust_bundle = declaration
        .spec
        .trust_bundle
        .as_ref()
        .map(|t| object(t.config_map_ref.as_ref(), t.secret_ref.as_ref()));
    let crls = declaration.spec.revocation.iter().flat_map(|r| &r.crls);
    inputs.crls = crls
        .map(|c| object(c.config_map_ref.as_ref(), c.secret_ref.as_ref()))
        .collect();
    // The published revision's CAs, when its validation ConfigMap is in the
    // input (`kubectl get ccd,cm,secret -o yaml`), as the operator reads them.
    let name = declaration.metadata.name.as_deref().unwrap_or_default();
    if let Some((_, validation)) = config_map(&outputs::validation_name(name)) {
        inputs.in_force = outputs::in_force_cas(validation);
    }
    Ok(Ok(inputs))
}

/// An ObservedCertificate, its status and its `-store` Secret as the
/// ObservedCertificate controller leaves them once it has read `source`.
fn observe(
    name: &str,
    observed: Option<ObservedCertificate>,
    source: Option<&Secret>,
    stored: Option<&Secret>,
    now: Timestamp,
) -> ObservedInput {
    let mut ocert = observed.unwrap_or_else(|| {
        let spec: ObservedCertificateSpec = serde_json::from_value(serde_json::json!({
            "source": {"secretRef": {"name": name}}
        }))
        .expect("an ObservedCertificate spec");
        ObservedCertificate::new(name, spec)
    });
    // Ownership of the `-store` Secret is by uid: manifests often have none.
    ocert.metadata.uid.get_or_insert_with(|| PLAN_UID.to_owned());
    let stored_data = stored.map(secret_data);
    let status = ocert.status.clone().unwrap_or_default();
    let source_data = source.map(secret_data);
    let decision = observed::decide(observed::World {
        name,
        generation: ocert.metadata.generation,
        spec: &ocert.spec,
        status: &status,
        source: match (&source_data, source) {
            (Some(data), Some(secret)) => observed::Source::Present(data, secret.type_.as_deref().unwrap_or_default()),
            _ => observed::Source::Missing,
        },
        stored: stored_data.as_ref(),
        store_owned_elsewhere: false,
        policy: None,
        in_use: &BTreeSet::new(),
        now,
    });
    let data: BTreeMap<String, Vec<u8>> = match decision.store() {
        Some(text) => text.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect(),
        None => stored_data.unwrap_or_default(),
    };
    ocert.status = Some(decision.status.unwrap_or(status));
    let store = Secret {
        metadata: ObjectMeta {
            name: Some(outputs::store_name(name)),
            namespace: ocert.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                outputs::MANAGED_BY_LABEL.to_owned(),
                outputs::MANAGED_BY.to_owned(),
            )])),
            owner_references: Some(vec![outputs::owner_reference(&ocert)]),
            ..ObjectMeta::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    };
    ObservedInput {
        name: name.to_owned(),
        object: Some(Arc::new(ocert)),
        stored: Some(Arc::new(store)),
    }
}

/// The uid `certshift plan` gives an ObservedCertificate of the input that has none.
const PLAN_UID: &str = "certshift-plan";

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
    if let Some(held) = &report.held {
        let _ = writeln!(out, "then held: {held}");
    }
    if report.revisions.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<4} {:<20} {:<13} {:<19} {:<42} {:<9} ACCEPTED",
        "REV", "STAGE", "CHANGE", "CAUSE", "PRESENTED", "ROLLBACK"
    );
    for (index, revision) in report.revisions.iter().enumerate() {
        let stage = match (index, revision.stage) {
            (0, _) => "(in force)".to_owned(),
            (_, Some(stage)) => stage.to_string(),
            (_, None) => "-".to_owned(),
        };
        let change = revision.change.map_or_else(|| "-".to_owned(), |c| format!("{c:?}"));
        let cause = revision.cause.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let anchors: Vec<&str> = revision.anchors.iter().map(Thumbprint::short).collect();
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
                format!("CN {} (anchors {})", rule.name, anchors.join(","))
            }
        }));
        let rollback = match report.rollback.iter().find(|r| r.revision == revision.revision) {
            Some(r) if r.possible => "yes",
            Some(_) => "no",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<4} {:<20} {:<13} {:<19} {:<42} {:<9} {}",
            revision.revision,
            stage,
            change,
            cause,
            revision.presented,
            rollback,
            accepted.join("; ")
        );
    }
    let impossible: Vec<&RollbackFrom> = report.rollback.iter().filter(|r| !r.possible).collect();
    if !impossible.is_empty() {
        let _ = writeln!(
            out,
            "\nPoints of no return (a failure there holds, RollbackImpossible):"
        );
        for r in impossible {
            if let Some(blocked) = &r.blocked {
                let _ = writeln!(out, "  revision {}: {blocked}", r.revision);
            }
        }
    }
    out
}
