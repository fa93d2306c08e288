//! ObservedCertificate: watch ObservedCertificates and the *metadata* of
//! Secrets (no Secret data is cached), read the referenced source Secret,
//! record instances in status and their keys in `<name>-store`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::in_use::SharedInUse;
use super::sources::SourceIndex;
use super::{
    Context, Error, OwnedSecret, SecretEvents, apply_status, create_secret, drive, now, owned_by, publish_events,
    replace_secret_data,
};
use crate::conditions;
use crate::crd::{CertificatePolicy, ObservedCertificate, ObservedCertificateStatus};
use crate::decision::Requeue;
use crate::observed::{self, Effect, Source};
use crate::outputs::secret_data;
use crate::outputs::{OBSERVED_CERTIFICATE_LABEL, store_name};

const MANAGER: &str = "certshift-observed-certificate";
const CONTROLLER: &str = "observedcertificate";

pub(super) async fn controller(
    ctx: Arc<Context>,
    secret_events: SecretEvents,
    ocert_events: futures::channel::mpsc::UnboundedSender<watcher::Event<ObservedCertificate>>,
    in_use: Arc<SharedInUse>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ocerts: Api<ObservedCertificate> = ctx.watched();
    let index = Arc::new(Mutex::new(SourceIndex::default()));
    let health = super::Health {
        metrics: ctx.metrics.clone(),
        controller: CONTROLLER,
    };
    let controller = super::lean_controller_with(ocerts, super::Trigger::SpecChanges, health, trim, {
        let index = index.clone();
        move |event| {
            lock(&index).observe(event);
            // Every event, status changes included, is passed on (trimmed)
            // to the declaration controller.
            let _ = ocert_events.unbounded_send(event.clone());
        }
    });
    let store = controller.store();
    // Secret events wake the ObservedCertificates that name the Secret as
    // source and have not read that version of it. A deletion is passed on
    // without a version, so that it wakes them all.
    let secret_events = secret_events.filter_map(|event| {
        futures::future::ready(match event {
            watcher::Event::Apply(secret) | watcher::Event::InitApply(secret) => Some(Ok(secret)),
            watcher::Event::Delete(mut secret) => {
                secret.metadata.resource_version = None;
                Some(Ok(secret))
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        })
    });
    let mapper_index = index.clone();
    let stream = controller
        .watches_stream(secret_events, move |secret| {
            let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            let woken = lock(&mapper_index).to_wake(&namespace, &name, secret.resource_version().as_deref());
            // The index is keyed by hashes, and keeps a renamed source until the
            // next relist: the cache has the final word.
            woken
                .into_iter()
                .map(|ocert| ObjectRef::new(&ocert).within(&namespace))
                .filter(|reference| {
                    store
                        .get(reference)
                        .is_some_and(|o| o.spec.source.secret_ref.name == name)
                })
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop)
        .run(
            move |ocert, ctx| reconcile(ocert, ctx, index.clone(), in_use.clone()),
            error_policy,
            ctx,
        );
    drive(CONTROLLER, stream).await;
}

/// The cache keeps whether an ObservedCertificate has a status, not the
/// status: instance facts and conditions are most of its size, and a
/// reconcile of one that has a status reads it fresh.
fn trim(ocert: &mut ObservedCertificate) {
    if ocert.status.is_some() {
        ocert.status = Some(ObservedCertificateStatus::default());
    }
}

fn lock(index: &Mutex<SourceIndex>) -> std::sync::MutexGuard<'_, SourceIndex> {
    // The index holds no invariant a panic elsewhere could break.
    index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn error_policy(_: Arc<ObservedCertificate>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, err.metric_label());
    Action::requeue(Duration::from_secs(15))
}

async fn reconcile(
    cached: Arc<ObservedCertificate>,
    ctx: Arc<Context>,
    index: Arc<Mutex<SourceIndex>>,
    in_use: Arc<SharedInUse>,
) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let span = info_span!("reconcile", controller = CONTROLLER, %namespace, object = %name, generation = cached.metadata.generation);
    let (metrics, started) = (ctx.metrics.clone(), std::time::Instant::now());
    let (failure_ctx, failed) = (ctx.clone(), cached.clone());
    let outcome = async move {
        ctx.metrics.reconciled(CONTROLLER);
        let Some(mut world) = gather(&ctx, &index, &in_use, cached, StoreRead::IfRecorded).await? else {
            ctx.metrics.observed(&namespace, &name, None);
            return Ok(Action::await_change());
        };
        let mut decision = world.decide();
        if apply(&ctx, &world, &decision).await? == Applied::StoreExisted {
            // The store is there though no instance was recorded: the status
            // written with it may not have reached the cache yet. Decide once
            // more with both read fresh (the store read, so no create again).
            let Some(fresh) = gather(&ctx, &index, &in_use, world.ocert.clone(), StoreRead::Fresh).await? else {
                return Ok(Action::await_change());
            };
            world = fresh;
            decision = world.decide();
            apply(&ctx, &world, &decision).await?;
        }
        Ok(match decision.requeue {
            Requeue::After(after) => Action::requeue(after),
            Requeue::AwaitChange => Action::await_change(),
        })
    }
    .instrument(span.clone())
    .await;
    if let Err(err) = &outcome {
        report_failure(&failure_ctx, &failed, err).instrument(span).await;
    }
    metrics.reconcile_took(CONTROLLER, started.elapsed().as_secs_f64());
    outcome
}

/// How the `<name>-store` Secret is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreRead {
    /// Only once an instance is recorded: until then certshift has never
    /// written it, and the first sync creates it without reading it first (a
    /// create never overwrites; if a Secret of that name is there, the create
    /// says so and it is read).
    IfRecorded,
    /// Always, with the ObservedCertificate read fresh too.
    Fresh,
}

/// Everything one reconcile read (the only reads).
struct Gathered {
    ocert: Arc<ObservedCertificate>,
    status: ObservedCertificateStatus,
    source: Option<Secret>,
    /// The `-store` Secret as read; `None` inside when it is not there, or
    /// not read (`StoreRead::IfRecorded` with no instance).
    stored: Option<Box<Secret>>,
    policy: Option<Result<crate::policy::PolicyParams, (&'static str, String)>>,
    in_use: std::collections::BTreeSet<String>,
    now: jiff::Timestamp,
}

/// Reads what the decision needs; `None` when the ObservedCertificate is gone.
async fn gather(
    ctx: &Context,
    index: &Mutex<SourceIndex>,
    in_use: &SharedInUse,
    cached: Arc<ObservedCertificate>,
    read: StoreRead,
) -> Result<Option<Gathered>, Error> {
    let (namespace, name) = (cached.namespace().unwrap_or_default(), cached.name_any());
    // The cache keeps no status; and one without a status that this process
    // has reconciled before may not have seen that status yet.
    let fresh = read == StoreRead::Fresh || cached.status.is_some() || lock(index).has_read(&cached);
    let ocert = if fresh {
        match ctx.get_opt::<ObservedCertificate>(&namespace, &name).await? {
            Some(mut fresh) => {
                // Nothing here reads them, and they are most of the object.
                fresh.managed_fields_mut().clear();
                Arc::new(fresh)
            }
            None => return Ok(None),
        }
    } else {
        cached
    };
    let source: Option<Secret> = ctx.get_opt(&namespace, &ocert.spec.source.secret_ref.name).await?;
    lock(index).read(
        &ocert,
        source.as_ref().and_then(|s| s.metadata.resource_version.as_deref()),
    );
    let mut status = ocert.status.clone().unwrap_or_default();
    status.conditions = conditions::sorted(&status.conditions);
    let policy = policy(ctx, &namespace, &ocert).await?;
    let in_use = in_use.in_use(&namespace, &name).await?;
    let stored = if read == StoreRead::Fresh || !status.instances.is_empty() {
        ctx.get_opt::<Secret>(&namespace, &store_name(&name))
            .await?
            .map(Box::new)
    } else {
        None
    };
    Ok(Some(Gathered {
        ocert,
        status,
        source,
        stored,
        policy,
        in_use,
        now: now(),
    }))
}

impl Gathered {
    fn decide(&self) -> observed::Decision {
        let source_data = self.source.as_ref().map(secret_data);
        let source_type = self
            .source
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or_default();
        let stored_data = self.stored.as_deref().map(secret_data);
        let store_owned_elsewhere = self
            .stored
            .as_deref()
            .is_some_and(|s| !owned_by(&s.metadata, self.ocert.as_ref()));
        observed::decide(observed::World {
            name: self.ocert.metadata.name.as_deref().unwrap_or_default(),
            generation: self.ocert.metadata.generation,
            spec: &self.ocert.spec,
            status: &self.status,
            source: match &source_data {
                Some(data) => Source::Present(data, source_type),
                None => Source::Missing,
            },
            stored: stored_data.as_ref().filter(|_| !store_owned_elsewhere),
            store_owned_elsewhere,
            policy: self.policy.clone(),
            in_use: &self.in_use,
            now: self.now,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Done,
    /// A create found a `-store` Secret already there: nothing was written.
    StoreExisted,
}

/// Makes the decision's writes: the store, then the status; nothing decided here.
async fn apply(ctx: &Context, world: &Gathered, decision: &observed::Decision) -> Result<Applied, Error> {
    let ocert = world.ocert.as_ref();
    let name = ocert.name_any();
    let as_bytes = |text: &BTreeMap<String, String>| -> BTreeMap<String, Vec<u8>> {
        text.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect()
    };
    for effect in &decision.effects {
        match (effect, world.stored.as_deref()) {
            (Effect::ReplaceStore(text), Some(existing)) => {
                replace_secret_data(ctx, MANAGER, existing, &as_bytes(text)).await?
            }
            (Effect::CreateStore(text), _) | (Effect::ReplaceStore(text), None) => {
                let secret = OwnedSecret {
                    name: &store_name(&name),
                    type_: "Opaque",
                    labels: BTreeMap::from([(OBSERVED_CERTIFICATE_LABEL.to_owned(), name.clone())]),
                    annotations: BTreeMap::new(),
                    data: &as_bytes(text),
                };
                if !create_secret(ctx, MANAGER, ocert, secret).await? {
                    return Ok(Applied::StoreExisted);
                }
            }
        }
    }
    let status = decision.status.as_ref().unwrap_or(&world.status);
    if !decision.effects.is_empty() {
        info!(instances = status.instance_count, "stored instances");
    }
    let ready = status.conditions.iter().find(|c| c.type_ == observed::READY);
    ctx.metrics.observed(
        &ocert.namespace().unwrap_or_default(),
        &name,
        Some(super::metrics::ObservedGauges {
            not_after: status.current.as_ref().and_then(|c| c.not_after),
            ready: ready.map(|c| c.status.clone()),
        }),
    );
    match &decision.status {
        Some(status) => {
            apply_status(ctx, MANAGER, ocert, status).await?;
            info!(
                current = %status.current.as_ref().map_or("-", |c| c.short_thumbprint.as_str()),
                "status updated"
            );
        }
        None => debug!("unchanged"),
    }
    Ok(Applied::Done)
}

/// A failed reconcile, told where users look and not only in the logs and
/// the error metric: the status ([`observed::failed`]) and a Warning event,
/// once per failure. Best effort: what forbade the reconcile may forbid
/// these too, and the next reconcile tries again.
async fn report_failure(ctx: &Context, cached: &ObservedCertificate, err: &Error) {
    let (namespace, name) = (cached.namespace().unwrap_or_default(), cached.name_any());
    let Ok(Some(ocert)) = ctx.get_opt::<ObservedCertificate>(&namespace, &name).await else {
        return;
    };
    let status = ocert.status.clone().unwrap_or_default();
    let Some((next, event)) = observed::failed(&status, &err.to_string(), ocert.metadata.generation, now()) else {
        return;
    };
    if let Err(write) = apply_status(ctx, MANAGER, &ocert, &next).await {
        warn!(error = %write, "could not say in the status that reconciling failed");
    }
    publish_events(ctx, &ocert, &[event], "Reconcile").await;
}

/// The policy named by `spec.policyRef`, or why it cannot be used.
async fn policy(
    ctx: &Context,
    namespace: &str,
    ocert: &ObservedCertificate,
) -> Result<Option<Result<crate::policy::PolicyParams, (&'static str, String)>>, Error> {
    let Some(reference) = &ocert.spec.policy_ref else {
        return Ok(None);
    };
    let policy: Option<CertificatePolicy> = ctx.get_opt(namespace, &reference.name).await?;
    Ok(Some(match policy {
        None => Err((
            "PolicyNotFound",
            format!(
                "spec.policyRef: CertificatePolicy {namespace}/{} not found",
                reference.name
            ),
        )),
        Some(policy) => crate::policy::params(&policy.spec).map_err(|err| {
            (
                "InvalidPolicy",
                format!("CertificatePolicy {}: {}", reference.name, err.message),
            )
        }),
    }))
}
