//! ClusterCertificateDeclaration, the shell: gather the world once (store,
//! outputs, members), probe the endpoints with the candidate certificate if
//! [`declaration::preflight`] names one, [`declaration::decide`] once, and
//! apply the decision in order: validation ConfigMap, presentation Secret,
//! workload stamps, status, events. Nothing is decided here.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::remembered::Remembered;
use super::trust_sources::{SourceKind, TrustSourceIndex};
use super::written::WrittenStatuses;
use super::{Context, Error, Verb, apply_status, drive, kube_err, members, now, publish_events};
use crate::crd::{ClusterCertificateDeclaration, ObservedCertificate, OutputFormat};
use crate::declaration::store::{ObservedInput, StoreInputs, TrustBundleInput};
use crate::declaration::{self, Decision, Effect, MemberInputs, Requeue, World};
use crate::outputs::{MANAGED_BY, MANAGED_BY_LABEL, presentation_name, store_name, validation_name};

const MANAGER: &str = "certshift-declaration";

const CONTROLLER: &str = "declaration";

/// `ocert_events`: the ObservedCertificate controller's watch events (its
/// cache's trimmed copies); `secret_events`: the shared Secret watch's.
pub(super) async fn controller(
    ctx: Arc<Context>,
    ocert_events: futures::channel::mpsc::UnboundedReceiver<watcher::Event<ObservedCertificate>>,
    secret_events: super::SecretEvents,
    in_use: Arc<super::in_use::SharedInUse>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Pods are cached by metadata, trimmed to their labels and acknowledged
    // revision: the mapper matches labels, the reconcile counts members.
    let (declarations, pods): (Api<ClusterCertificateDeclaration>, Api<PartialObjectMeta<Pod>>) =
        (ctx.watched(), ctx.watched());
    // Deleted declarations leave nothing behind in the written statuses.
    let written: Arc<WrittenStatuses<ClusterCertificateDeclaration>> = Arc::default();
    // Which declarations read trust from each ConfigMap and Secret.
    let trust: Arc<Mutex<TrustSourceIndex>> = Arc::default();
    let controller = {
        let (written, trust) = (written.clone(), trust.clone());
        let health = super::Health {
            metrics: ctx.metrics.clone(),
            controller: CONTROLLER,
        };
        super::lean_controller_with(
            declarations,
            super::Trigger::EveryChange,
            health,
            |_| {},
            move |event| {
                trust.lock().unwrap_or_else(PoisonError::into_inner).observe(event);
                in_use.observe(event);
                if let watcher::Event::Delete(declaration) = event {
                    written.forget(declaration);
                }
            },
        )
    };
    ctx.metrics.follow_declarations(controller.store());
    let by_store = controller.store();
    let by_members = controller.store();
    let (pod_cache, pod_writer) = reflector::store();
    let pod_events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .modify(members::trim_pod)
        .reflect(pod_writer)
        .touched_objects();
    let (deployments, statefulsets, daemonsets) = (
        workload_watch::<Deployment>(&ctx),
        workload_watch::<StatefulSet>(&ctx),
        workload_watch::<DaemonSet>(&ctx),
    );
    let by_workload = controller.store();
    // The ConfigMaps and Secrets declarations read trust from
    // (`spec.trustBundle`, `spec.revocation.crls`): a new bundle or CRL is
    // acted on at once. Secrets come from the shared Secret watch, those
    // some declaration names passed on by `follow_outputs`.
    let trust_maps: Api<PartialObjectMeta<ConfigMap>> = ctx.watched();
    let (trust_secret_tx, trust_secret_rx) = futures::channel::mpsc::unbounded();
    let trust_secret_events = futures::StreamExt::map(trust_secret_rx, Ok::<_, watcher::Error>);
    let shell = Arc::new(Shell {
        ctx,
        pods: pod_cache,
        ocerts: Remembered::default(),
        secrets: Remembered::default(),
        config_maps: Remembered::default(),
        trust_maps: Remembered::default(),
        written,
        reminders: Default::default(),
        crls: Default::default(),
        facts: Default::default(),
    });
    // The same watch says when a remembered bundle or CRL ConfigMap is out
    // of date: reconciles read them from memory until then.
    let trust_map_events = {
        let shell = shell.clone();
        futures::StreamExt::filter_map(
            watcher(trust_maps, watcher::Config::default()).default_backoff(),
            move |event| {
                futures::future::ready(match event {
                    Ok(event) => {
                        shell.trust_maps.observe(&event);
                        match event {
                            watcher::Event::Apply(map)
                            | watcher::Event::InitApply(map)
                            | watcher::Event::Delete(map) => Some(Ok(map)),
                            watcher::Event::Init | watcher::Event::InitDone => None,
                        }
                    }
                    Err(err) => Some(Err(err)),
                })
            },
        )
    };
    let ocert_events = {
        let shell = shell.clone();
        futures::StreamExt::filter_map(ocert_events, move |event| {
            shell.ocerts.observe(&event);
            futures::future::ready(match event {
                watcher::Event::Apply(ocert) | watcher::Event::InitApply(ocert) | watcher::Event::Delete(ocert) => {
                    Some(Ok(ocert))
                }
                watcher::Event::Init | watcher::Event::InitDone => None,
            })
        })
    };
    // Secrets and the validation ConfigMaps only say when a remembered one is
    // out of date: they wake no reconcile.
    let follow = tokio::spawn(follow_outputs(
        shell.clone(),
        secret_events,
        (trust.clone(), trust_secret_tx),
    ));
    let stream = controller
        .watches_stream(ocert_events, move |ocert| {
            let (namespace, name) = (ocert.namespace(), ocert.name_any());
            by_store
                .state()
                .iter()
                .filter(|d| d.namespace() == namespace && d.spec.store.observed_certificates.contains(&name))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(pod_events, move |pod| {
            // Only the declarations whose selector takes this pod: with many
            // declarations, one pod's acknowledgement must not wake them all.
            let namespace = pod.namespace();
            by_members
                .state()
                .iter()
                .filter(|d| d.namespace() == namespace && selects(d, pod.labels()))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(deployments, workload_mapper(by_workload.clone(), "Deployment"))
        .watches_stream(statefulsets, workload_mapper(by_workload.clone(), "StatefulSet"))
        .watches_stream(daemonsets, workload_mapper(by_workload, "DaemonSet"))
        .watches_stream(trust_map_events, trust_mapper(trust.clone(), SourceKind::ConfigMap))
        .watches_stream(trust_secret_events, trust_mapper(trust, SourceKind::Secret))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, shell);
    drive(CONTROLLER, stream).await;
    follow.abort();
}

/// The declarations that read trust from a ConfigMap or Secret (by the index).
fn trust_mapper<K: kube::Resource>(
    trust: Arc<Mutex<TrustSourceIndex>>,
    kind: SourceKind,
) -> impl Fn(PartialObjectMeta<K>) -> Vec<ObjectRef<ClusterCertificateDeclaration>> + Send + Sync + 'static {
    move |meta| {
        let namespace = meta.namespace().unwrap_or_default();
        let readers = trust
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .readers(kind, &namespace, &meta.name_any());
        readers
            .into_iter()
            .map(|name| ObjectRef::new(&name).within(&namespace))
            .collect()
    }
}

/// Feeds the remembered Secrets and validation ConfigMaps from their watches:
/// the shared Secret watch, and a metadata watch of the ConfigMaps certshift
/// manages. That one sees no ConfigMap of someone else's, which is safe:
/// only objects read or written as certshift's are remembered, and one that
/// loses the label leaves the watch as a deletion.
async fn follow_outputs(
    shell: Arc<Shell>,
    secret_events: super::SecretEvents,
    (trust, trust_secrets): (
        Arc<Mutex<TrustSourceIndex>>,
        futures::channel::mpsc::UnboundedSender<PartialObjectMeta<Secret>>,
    ),
) {
    use futures::StreamExt as _;
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = shell.ctx.watched();
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    let config_map_events = watcher(config_maps, watcher::Config::default().labels(&managed))
        .default_backoff()
        .for_each(|event| {
            match event {
                Ok(event) => shell.config_maps.observe(&event),
                Err(err) => warn!(error = %err, "watching ConfigMaps"),
            }
            futures::future::ready(())
        });
    let secret_events = secret_events.for_each(|event| {
        shell.secrets.observe(&event);
        // A trust bundle's or CRL's Secret changed: its declarations look again.
        if let watcher::Event::Apply(meta) | watcher::Event::InitApply(meta) | watcher::Event::Delete(meta) = &event {
            let namespace = meta.namespace().unwrap_or_default();
            let named = !trust
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .readers(SourceKind::Secret, &namespace, &meta.name_any())
                .is_empty();
            if named {
                let _ = trust_secrets.unbounded_send(meta.clone());
            }
        }
        futures::future::ready(())
    });
    futures::future::join(config_map_events, secret_events).await;
}

/// Whether the declaration's `spec.members.pods` selector takes a pod with `labels`.
fn selects(declaration: &ClusterCertificateDeclaration, labels: &BTreeMap<String, String>) -> bool {
    let pods = declaration.spec.members.as_ref().and_then(|m| m.pods.as_ref());
    pods.is_some_and(|selector| declaration::selects(selector, labels))
}

/// Metadata events of one workload kind (status changes move resourceVersion).
fn workload_watch<K>(
    ctx: &Context,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = ctx.watched();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
}

/// Declarations in the workload's namespace that list it as a member.
fn workload_mapper<K>(
    store: kube::runtime::reflector::Store<ClusterCertificateDeclaration>,
    kind: &'static str,
) -> impl Fn(PartialObjectMeta<K>) -> Vec<ObjectRef<ClusterCertificateDeclaration>> + Send + Sync + 'static
where
    K: kube::Resource<DynamicType = ()> + Send + 'static,
{
    move |meta| {
        let namespace = meta.metadata.namespace.clone();
        let name = meta.metadata.name.clone().unwrap_or_default();
        store
            .state()
            .iter()
            .filter(|d| {
                d.namespace() == namespace
                    && d.spec
                        .members
                        .as_ref()
                        .is_some_and(|m| m.workloads.iter().any(|w| w.kind == kind && w.name == name))
            })
            .map(|d| ObjectRef::from_obj(d.as_ref()))
            .collect()
    }
}

/// What a reconcile reads through: the API, the pod cache, and the objects
/// reconciles read or wrote before (see [`Remembered`]).
struct Shell {
    ctx: Arc<Context>,
    pods: reflector::Store<PartialObjectMeta<Pod>>,
    ocerts: Remembered<ObservedCertificate>,
    /// The stores' `-store` Secrets and the presentation Secrets.
    secrets: Remembered<Secret>,
    /// The validation ConfigMaps.
    config_maps: Remembered<ConfigMap>,
    /// The ConfigMaps of trust bundles and CRLs, followed by their own watch
    /// (a relist of the outputs' watch would forget them).
    trust_maps: Remembered<ConfigMap>,
    /// The declaration as its last status write left it, until the watch shows it.
    written: Arc<WrittenStatuses<ClusterCertificateDeclaration>>,
    /// When each declaration's standing Warnings were last told.
    reminders: std::sync::Mutex<crate::events::Reminders>,
    /// CRLs fetched from distribution points.
    crls: super::crl_fetch::CrlCache,
    /// The store's and bundles' bytes parsed before, shared by every
    /// declaration (many may share one store).
    facts: declaration::memo::FactsMemo,
}

/// `name` as remembered, or read from the API server (and remembered).
async fn read<K>(
    ctx: &Context,
    remembered: &Remembered<K>,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<K>>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if let Some(object) = remembered.get(namespace, name) {
        return Ok(Some(object));
    }
    let object = ctx.get_opt::<K>(namespace, name).await?;
    Ok(object.map(|o| remembered.put(o)))
}

fn error_policy(_: Arc<ClusterCertificateDeclaration>, err: &Error, shell: Arc<Shell>) -> Action {
    shell.ctx.metrics.failed(CONTROLLER, err.metric_label());
    Action::requeue(Duration::from_secs(15))
}

/// Reads the world of one declaration: the only reads of a reconcile. The
/// endpoints come back too, for the pre-flight probe.
async fn gather(
    shell: &Shell,
    declaration: &Arc<ClusterCertificateDeclaration>,
) -> Result<(World, Vec<(String, Result<crate::crd::Endpoint, String>)>), Error> {
    let ctx = &shell.ctx;
    let namespace = declaration.namespace().unwrap_or_default();
    let name = declaration.name_any();
    let spec = &declaration.spec;
    // One clock reading and one parse of the spec for the whole reconcile.
    let now = now();
    let parsed = declaration::spec::parse(spec);

    let mut inputs = StoreInputs::default();
    for ocert_name in &spec.store.observed_certificates {
        let object = read(ctx, &shell.ocerts, &namespace, ocert_name).await?;
        // The `-store` Secret is read only for an ObservedCertificate that has instances.
        let stored = match object.as_ref().and_then(|o| o.status.as_ref()) {
            Some(status) if !status.instances.is_empty() => {
                read(ctx, &shell.secrets, &namespace, &store_name(ocert_name)).await?
            }
            _ => None,
        };
        inputs.observed.push(ObservedInput {
            name: ocert_name.clone(),
            object,
            stored,
        });
    }
    // Bundles and CRLs are remembered until their watches show a change.
    if let Some(source) = &spec.trust_bundle {
        inputs.trust_bundle = match (&source.config_map_ref, &source.secret_ref) {
            (Some(r), None) => Some(TrustBundleInput::ConfigMap(
                read(ctx, &shell.trust_maps, &namespace, &r.name).await?,
            )),
            (None, Some(r)) => Some(TrustBundleInput::Secret(
                read(ctx, &shell.secrets, &namespace, &r.name).await?,
            )),
            _ => None,
        };
    }
    for source in spec.revocation.iter().flat_map(|r| &r.crls) {
        inputs.crls.push(match (&source.config_map_ref, &source.secret_ref) {
            (Some(r), None) => TrustBundleInput::ConfigMap(read(ctx, &shell.trust_maps, &namespace, &r.name).await?),
            (None, Some(r)) => TrustBundleInput::Secret(read(ctx, &shell.secrets, &namespace, &r.name).await?),
            // Said by the store's assembly: neither or both set.
            _ => TrustBundleInput::ConfigMap(None),
        });
    }
    let validation = read(ctx, &shell.config_maps, &namespace, &validation_name(&name)).await?;
    inputs.in_force = validation
        .as_deref()
        .map(crate::outputs::in_force_cas)
        .unwrap_or_default();
    // The store is assembled once: collected, its CRLs fetched when due, finished.
    let collected = declaration::store::collect(&namespace, spec, &inputs, &shell.facts);
    if let (Ok(collected), Ok(Some(fetch))) = (&collected, parsed.as_ref().map(|s| s.fetch_crls)) {
        inputs.fetched = shell
            .crls
            .fetch_due(collected.distribution_points(), fetch.refresh_interval)
            .await;
    }
    let store = collected.and_then(|c| c.finish(&namespace, spec, &inputs, now));
    let presentation = read(ctx, &shell.secrets, &namespace, &presentation_name(&name)).await?;
    let pkcs12_password = match spec.output.as_ref() {
        Some(output) if output.formats.contains(&OutputFormat::Pkcs12) => match &output.pkcs12 {
            Some(pkcs12) if !pkcs12.password_secret_ref.name.is_empty() => ctx
                .get_opt::<Secret>(&namespace, &pkcs12.password_secret_ref.name)
                .await?
                .map(Arc::new),
            _ => None,
        },
        _ => None,
    };

    let mut members = MemberInputs::default();
    let endpoints = members::endpoints(ctx, &namespace, spec.members.as_ref()).await?;
    if let Some(spec_members) = &spec.members {
        if let Some(selector) = &spec_members.pods {
            // Until the first list of pods is in, no member is known: wait
            // rather than judge "no members" complete.
            shell
                .pods
                .wait_until_ready()
                .await
                .map_err(|_| Error::CacheStopped("pod"))?;
            let pods = shell.pods.state();
            members.pods = declaration::pod_members(pods.iter().map(|p| &p.metadata), &namespace, selector);
            members.pod_health = declaration::pod_health(pods.iter().map(|p| &p.metadata), &namespace, selector);
        }
        for workload in &spec_members.workloads {
            let object = members::read_workload(ctx, &namespace, workload).await?;
            members.workloads.push((workload.clone(), object));
        }
        let probes = endpoints.iter().map(|(label, endpoint)| async move {
            let presented = match endpoint {
                Ok(endpoint) => super::probe::presented(endpoint).await,
                Err(unresolved) => Err(unresolved.clone()),
            };
            if let Err(err) = &presented {
                debug!(endpoint = %label, error = %err, "probe");
            }
            (label.clone(), presented)
        });
        members.endpoints = futures::future::join_all(probes).await;
    }
    let world = World {
        declaration: declaration.clone(),
        spec: parsed,
        store,
        validation,
        presentation,
        pkcs12_password,
        members,
        preflight: None,
        now,
    };
    Ok((world, endpoints))
}

/// Makes the decision's writes, in its order; each written output is
/// remembered for the next reconcile.
async fn apply(shell: &Shell, declaration: &ClusterCertificateDeclaration, decision: &Decision) -> Result<(), Error> {
    let ctx = &shell.ctx;
    let namespace = declaration.namespace().unwrap_or_default();
    let params = PatchParams::apply(MANAGER).force();
    for effect in &decision.effects {
        match effect {
            Effect::PublishValidation(map) => {
                let written = ctx
                    .api::<ConfigMap>(&namespace)
                    .patch(&map.name_any(), &params, &Patch::Apply(typed(map)))
                    .await
                    .map_err(kube_err::<ConfigMap>(Verb::Apply, &namespace, &map.name_any()))?;
                shell.config_maps.put(written);
                ctx.metrics.write("ConfigMap");
            }
            Effect::PublishPresentation(secret) => {
                let written = ctx
                    .api::<Secret>(&namespace)
                    .patch(&secret.name_any(), &params, &Patch::Apply(typed(secret)))
                    .await
                    .map_err(kube_err::<Secret>(Verb::Apply, &namespace, &secret.name_any()))?;
                shell.secrets.put(written);
                ctx.metrics.write("Secret");
            }
            Effect::StampWorkload { workload, revision } => {
                members::stamp(ctx, &namespace, workload, *revision).await?;
            }
        }
    }
    if decision
        .events
        .iter()
        .any(|e| e.reason == declaration::plan::ROLLING_BACK)
    {
        ctx.metrics.rollback_started();
    }
    if let Some(revision) = &decision.published {
        ctx.metrics.published();
        info!(
            revision = revision.revision,
            stage = %revision.stage.map_or("-".to_owned(), |s| s.to_string()),
            change = %revision.change.map_or("-".to_owned(), |c| format!("{c:?}")),
            presented = %revision.presented,
            "published"
        );
    }
    match &decision.status {
        Some(status) => {
            debug!(after = %serde_json::to_string(status).unwrap_or_default(), "status changed");
            let written = apply_status(ctx, MANAGER, declaration, status).await?;
            shell.written.wrote(declaration, written);
        }
        None => debug!("unchanged"),
    }
    for event in decision
        .events
        .iter()
        .filter(|e| e.type_ == crate::events::EventType::Warning)
    {
        warn!(reason = %event.reason, detail = %event.message, "warning");
    }
    publish_events(ctx, declaration, &decision.events, "Reconcile").await;
    // Standing Warnings, told again at a bounded rate (never a status write).
    let key = format!("{namespace}/{}", declaration.name_any());
    let reminders = {
        let mut reminders = shell.reminders.lock().expect("reminders lock");
        let now = std::time::Instant::now();
        for event in &decision.events {
            reminders.told(&key, event, now);
        }
        reminders.due(&key, &decision.standing, now)
    };
    publish_events(ctx, declaration, &reminders, "Remind").await;
    Ok(())
}

/// An object as server-side apply wants it: with its apiVersion and kind.
fn typed<K: Resource<DynamicType = ()> + serde::Serialize>(object: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(object).expect("objects serialize");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

async fn reconcile(declaration: Arc<ClusterCertificateDeclaration>, shell: Arc<Shell>) -> Result<Action, Error> {
    let ctx = shell.ctx.clone();
    let span = info_span!(
        "reconcile",
        controller = CONTROLLER,
        namespace = %declaration.namespace().unwrap_or_default(),
        // Not `name`: JSON logs give the span's own name that key.
        object = %declaration.name_any(),
        generation = declaration.metadata.generation,
        stage = tracing::field::Empty
    );
    let (metrics, started) = (shell.ctx.metrics.clone(), std::time::Instant::now());
    let outcome = async move {
        ctx.metrics.reconciled(CONTROLLER);
        let declaration = shell.written.current(declaration);
        let (mut world, endpoints) = gather(&shell, &declaration).await?;
        // Plan once, probe only the candidate: every endpoint must accept the
        // certificate about to be presented, as a client.
        let planned = declaration::plan(&world);
        if let Some(preflight) = planned.preflight(&world) {
            let probes = endpoints.iter().filter_map(|(label, endpoint)| {
                let endpoint = endpoint.as_ref().ok()?;
                let material = &preflight.material;
                Some(async move {
                    let answer = super::probe::accepts(endpoint, material).await;
                    debug!(endpoint = %label, ?answer, "pre-flight");
                    (label.clone(), answer.map(drop))
                })
            });
            world.preflight = Some(futures::future::join_all(probes).await);
        }
        let decision = declaration::decide_planned(&world, planned);
        if let Some(stage) = decision.published.as_ref().and_then(|r| r.stage) {
            tracing::Span::current().record("stage", tracing::field::display(stage));
        }
        apply(&shell, &declaration, &decision).await?;
        Ok(match decision.requeue {
            Requeue::AwaitChange => Action::await_change(),
            Requeue::After(after) => Action::requeue(after),
        })
    }
    .instrument(span)
    .await;
    metrics.reconcile_took(CONTROLLER, started.elapsed().as_secs_f64());
    outcome
}
