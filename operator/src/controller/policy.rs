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
use crate::decision::Requeue;
use crate::facts::CertificateBundle;
use crate::facts::tls_material;
use crate::outputs::secret_data;
use crate::policy::issue::{CaMaterial, issue as issue_certificate};
use crate::policy::{self, CaSecret, POLICY_HASH_ANNOTATION, SecretState};

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

async fn reconcile(policy: Arc<CertificatePolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let span = info_span!("reconcile", controller = CONTROLLER, %namespace, object = %name, generation = policy.metadata.generation);
    let (metrics, started) = (ctx.metrics.clone(), std::time::Instant::now());
    let outcome = async move {
        ctx.metrics.reconciled(CONTROLLER);
        let gathered = gather(&ctx, &policy).await?;
        let world = gathered.world(&policy);
        let mut decision = policy::decide(&world);
        if let Some(request) = decision.issue() {
            decision = issue(&ctx, &policy, &world, request.clone()).await?;
        }
        apply(&ctx, &policy, &decision).await?;
        Ok(match decision.requeue {
            Requeue::After(after) => Action::requeue(after),
            Requeue::AwaitChange => Action::await_change(),
        })
    }
    .instrument(span)
    .await;
    metrics.reconcile_took(CONTROLLER, started.elapsed().as_secs_f64());
    outcome
}

/// Everything one reconcile read (the only reads): the policy's Secret and
/// its CA Secret, each read once.
struct Gathered {
    status: CertificatePolicyStatus,
    secret: SecretState,
    current_key: Option<String>,
    ca: Option<CaSecret>,
}

async fn gather(ctx: &Context, policy: &CertificatePolicy) -> Result<Gathered, Error> {
    let namespace = policy.namespace().unwrap_or_default();
    let secret_name = policy.spec.secret_name.trim();
    let secret: Option<Secret> = if secret_name.is_empty() {
        None
    } else {
        ctx.get_opt(&namespace, secret_name).await?
    };
    let data = secret.as_ref().map(secret_data);
    let text =
        |data: &BTreeMap<String, Vec<u8>>, key: &str| data.get(key).map(|v| String::from_utf8_lossy(v).into_owned());
    let (state, current_key) = match &secret {
        None => (SecretState::Missing, None),
        Some(s) if !owned_by(&s.metadata, policy) => (SecretState::OwnedElsewhere, None),
        Some(s) => {
            let data = data.as_ref().expect("read with the Secret");
            let state = SecretState::Issued {
                leaf: CertificateBundle::from_tls(&tls_material(data))
                    .ok()
                    .map(|b| Box::new(b.leaf)),
                spec_hash: s
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(POLICY_HASH_ANNOTATION))
                    .cloned(),
            };
            (state, text(data, "tls.key"))
        }
    };
    let ca = match &policy.spec.issuer.ca {
        Some(ca) => Some(match ctx.get_opt::<Secret>(&namespace, &ca.secret_ref.name).await? {
            None => CaSecret::Missing,
            Some(secret) => {
                let data = secret_data(&secret);
                CaSecret::Present {
                    version: secret.metadata.resource_version.clone().unwrap_or_default(),
                    certificate: text(&data, "tls.crt"),
                    key: text(&data, "tls.key"),
                }
            }
        }),
        None => None,
    };
    let mut status = policy.status.clone().unwrap_or_default();
    status.conditions = conditions::sorted(&status.conditions);
    Ok(Gathered {
        status,
        secret: state,
        current_key,
        ca,
    })
}

impl Gathered {
    fn world<'a>(&'a self, policy: &'a CertificatePolicy) -> policy::World<'a> {
        policy::World {
            generation: policy.metadata.generation,
            spec: &policy.spec,
            status: &self.status,
            secret: self.secret.clone(),
            current_key: self.current_key.clone(),
            ca: self.ca.clone(),
            now: now(),
        }
    }
}

/// The issuance effect: generates the certificate off the async threads,
/// applies the Secret, and returns the decision on the outcome.
async fn issue(
    ctx: &Context,
    policy: &CertificatePolicy,
    world: &policy::World<'_>,
    request: policy::IssueRequest,
) -> Result<policy::Decision, Error> {
    let outcome = {
        let request = request.clone();
        // Key generation (RSA 4096) is CPU work: off the async threads.
        tokio::task::spawn_blocking(move || {
            let material = request
                .ca
                .as_ref()
                .map(|(certificate, key)| CaMaterial { certificate, key });
            issue_certificate(
                &request.params,
                material.as_ref(),
                request.reuse_key.as_deref(),
                request.at,
            )
        })
        .await
        .unwrap_or_else(|err| Err(format!("issuing panicked: {err}")))
    };
    if let Ok(issued) = &outcome {
        let secret = OwnedSecret {
            name: &request.params.secret_name,
            type_: "kubernetes.io/tls",
            labels: BTreeMap::from([(POLICY_LABEL.to_owned(), policy.name_any())]),
            annotations: BTreeMap::from([(POLICY_HASH_ANNOTATION.to_owned(), policy::spec_hash(&policy.spec))]),
            data: &BTreeMap::from([
                ("tls.crt".to_owned(), issued.tls_crt.clone().into_bytes()),
                ("tls.key".to_owned(), issued.tls_key.clone().into_bytes()),
                ("ca.crt".to_owned(), issued.ca_crt.clone().into_bytes()),
            ]),
        };
        apply_secret(ctx, MANAGER, policy, secret).await?;
        info!(thumbprint = %issued.leaf.thumbprint, reason = ?request.reason, "issued");
    }
    let decision = policy::after_attempt(world, &request, outcome.as_ref().map(|i| &i.leaf).map_err(Clone::clone));
    if let Err(message) = &outcome {
        let attempts = decision.status.as_ref().map_or(0, |s| s.failed_attempts);
        warn!(error = %message, attempts, "issuing failed");
    }
    Ok(decision)
}

/// The status, then the events; nothing decided here.
async fn apply(ctx: &Context, policy: &CertificatePolicy, decision: &policy::Decision) -> Result<(), Error> {
    if let Some(status) = &decision.status {
        apply_status(ctx, MANAGER, policy, status).await?;
    }
    publish_events(ctx, policy, &decision.events, "Issue").await;
    Ok(())
}
