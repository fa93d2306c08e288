//! CertificatePolicy: issue into the policy's TLS Secret when it is missing or
//! the spec changed, renew at the lifetime action, back off on failure (the
//! attempt count lives in status), and never touch a Secret certshift did not
//! create.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use super::{
    Context, Error, OwnedSecret, SecretEvents, apply_secret, apply_status, drive, now, owned_by, publish_events,
};
use crate::conditions;
use crate::crd::{CertificatePolicy, CertificatePolicyStatus};
use crate::facts::CertificateBundle;
use crate::facts::tls_material;
use crate::outputs::secret_data;
use crate::policy::issue::{CaMaterial, issue};
use crate::policy::{self, IssuerKind, POLICY_HASH_ANNOTATION, Plan, SecretState};

const MANAGER: &str = "certshift-policy";
const CONTROLLER: &str = "certificatepolicy";
pub const POLICY_LABEL: &str = "certshift.io/policy";

pub(super) async fn controller(
    ctx: Arc<Context>,
    secret_events: SecretEvents,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let policies: Api<CertificatePolicy> = ctx.watched();
    let health = super::Health {
        metrics: ctx.metrics.clone(),
        controller: CONTROLLER,
    };
    let controller = super::lean_controller(policies, super::Trigger::SpecChanges, health);
    let store = controller.store();
    ctx.metrics.follow_policies(controller.store());
    // A policy cares about its own Secret and its CA's.
    let secret_events = secret_events.filter_map(|event| {
        futures::future::ready(match event {
            watcher::Event::Apply(secret) | watcher::Event::InitApply(secret) | watcher::Event::Delete(secret) => {
                Some(Ok(secret))
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        })
    });
    let stream = controller
        .watches_stream(secret_events, move |secret| {
            let (namespace, name) = (secret.namespace(), secret.name_any());
            store
                .state()
                .iter()
                .filter(|p| {
                    let ca = p.spec.issuer.ca.as_ref().map(|ca| ca.secret_ref.name.as_str());
                    p.namespace() == namespace && (p.spec.secret_name == name || ca == Some(name.as_str()))
                })
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx);
    drive(CONTROLLER, stream).await;
}

fn error_policy(_: Arc<CertificatePolicy>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, err.metric_label());
    Action::requeue(Duration::from_secs(15))
}

async fn write_status(
    ctx: &Context,
    policy: &CertificatePolicy,
    before: &CertificatePolicyStatus,
    after: &CertificatePolicyStatus,
) -> Result<(), Error> {
    if policy.status.is_some() && before == after {
        return Ok(());
    }
    apply_status(ctx, MANAGER, policy, after).await.map(drop)
}

async fn reconcile(policy: Arc<CertificatePolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let span = info_span!("reconcile", controller = CONTROLLER, %namespace, object = %name, generation = policy.metadata.generation);
    let (metrics, started) = (ctx.metrics.clone(), std::time::Instant::now());
    let outcome = async move {
        ctx.metrics.reconciled(CONTROLLER);
        let secret_name = policy.spec.secret_name.trim().to_owned();
        let secret = if secret_name.is_empty() {
            None
        } else {
            ctx.get_opt(&namespace, &secret_name).await?
        };
        let data = secret.as_ref().map(secret_data);
        let state = match &secret {
            None => SecretState::Missing,
            Some(s) if !owned_by(&s.metadata, policy.as_ref()) => SecretState::OwnedElsewhere,
            Some(s) => SecretState::Issued {
                leaf: data
                    .as_ref()
                    .and_then(|d| CertificateBundle::from_tls(&tls_material(d)).ok())
                    .map(|b| Box::new(b.leaf)),
                spec_hash: s
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(POLICY_HASH_ANNOTATION))
                    .cloned(),
            },
        };
        let mut status = policy.status.clone().unwrap_or_default();
        status.conditions = conditions::sorted(&status.conditions);
        // The CA Secret, read once: issued with, and its version remembered
        // by a failure, so a CA that arrives or changes since is tried
        // without waiting out the backoff.
        let ca_secret = match &policy.spec.issuer.ca {
            Some(ca) => ctx.get_opt::<Secret>(&namespace, &ca.secret_ref.name).await?,
            None => None,
        };
        let issuer_version = policy.spec.issuer.ca.as_ref().map(|_| {
            ca_secret
                .as_ref()
                .and_then(|secret| secret.metadata.resource_version.clone())
                // Not "": kube-apiserver 1.20's apply stores an empty string as null.
                .unwrap_or_else(|| policy::ISSUER_MISSING.to_owned())
        });
        let world = policy::World {
            generation: policy.metadata.generation,
            spec: &policy.spec,
            status: &status,
            secret: state.clone(),
            now: now(),
            issuer_version,
        };
        match policy::decide(&world) {
            Plan::Refuse(next, events) => {
                write_status(&ctx, &policy, &status, &next).await?;
                publish_events(&ctx, policy.as_ref(), &events, "Issue").await;
                Ok(Action::await_change())
            }
            Plan::Wait(next, requeue) => {
                write_status(&ctx, &policy, &status, &next).await?;
                Ok(requeue.map_or_else(Action::await_change, |after| {
                    Action::requeue(after.min(Duration::from_secs(3600)))
                }))
            }
            Plan::Issue(params, reason) => {
                let ca = match &params.issuer {
                    IssuerKind::SelfSigned => Ok(None),
                    IssuerKind::Ca(ca_name) => match &ca_secret {
                        Some(ca) => {
                            let d = secret_data(ca);
                            let text = |k: &str| d.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
                            match (text("tls.crt"), text("tls.key")) {
                                (Some(crt), Some(key)) => Ok(Some((crt, key))),
                                _ => Err(format!("CA Secret {ca_name:?} lacks tls.crt or tls.key")),
                            }
                        }
                        None => Err(format!("CA Secret {ca_name:?} (spec.issuer.ca.secretRef) not found")),
                    },
                };
                let reuse = match &state {
                    SecretState::Issued { .. } => data
                        .as_ref()
                        .and_then(|d| d.get("tls.key"))
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    _ => None,
                };
                let issued_at = world.now;
                let outcome = match ca {
                    Err(message) => Err(message),
                    Ok(ca) => {
                        let params = params.clone();
                        // Key generation (RSA 4096) is CPU work: off the async threads.
                        tokio::task::spawn_blocking(move || {
                            let material = ca.as_ref().map(|(certificate, key)| CaMaterial { certificate, key });
                            issue(&params, material.as_ref(), reuse.as_deref(), issued_at)
                        })
                        .await
                        .unwrap_or_else(|err| Err(format!("issuing panicked: {err}")))
                    }
                };
                if let Ok(issued) = &outcome {
                    let secret = OwnedSecret {
                        name: &params.secret_name,
                        type_: "kubernetes.io/tls",
                        labels: BTreeMap::from([(POLICY_LABEL.to_owned(), name.clone())]),
                        annotations: BTreeMap::from([(
                            POLICY_HASH_ANNOTATION.to_owned(),
                            policy::spec_hash(&policy.spec),
                        )]),
                        data: &BTreeMap::from([
                            ("tls.crt".to_owned(), issued.tls_crt.clone().into_bytes()),
                            ("tls.key".to_owned(), issued.tls_key.clone().into_bytes()),
                            ("ca.crt".to_owned(), issued.ca_crt.clone().into_bytes()),
                        ]),
                    };
                    apply_secret(&ctx, MANAGER, policy.as_ref(), secret).await?;
                    info!(thumbprint = %issued.leaf.thumbprint, ?reason, "issued");
                }
                let (next, events) = policy::after_attempt(
                    &world,
                    &params,
                    reason,
                    outcome.as_ref().map(|i| &i.leaf).map_err(Clone::clone),
                );
                if let Err(message) = &outcome {
                    warn!(%message, attempts = next.failed_attempts, "issuing failed");
                }
                write_status(&ctx, &policy, &status, &next).await?;
                publish_events(&ctx, policy.as_ref(), &events, "Issue").await;
                let requeue = match (&outcome, next.renewal_time) {
                    (Ok(_), Some(renewal)) => {
                        Duration::from_secs((renewal.as_second() - issued_at.as_second()).max(1).unsigned_abs())
                    }
                    _ => policy::backoff(next.failed_attempts),
                };
                Ok(Action::requeue(requeue.min(Duration::from_secs(3600))))
            }
        }
    }
    .instrument(span)
    .await;
    metrics.reconcile_took(CONTROLLER, started.elapsed().as_secs_f64());
    outcome
}
