//! ClusterCertificateDeclaration: gather (store instances, published outputs,
//! members) → decide (the pure planner and gates) → publish at most one
//! revision → status → events.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::remembered::Remembered;
use super::{
    Context, Error, OwnedSecret, apply_secret, apply_status, drive, kube_err, members, now, owned_by, publish_events,
};
use crate::cli::manifests::secret_data;
use crate::conditions;
use crate::crd::{ClusterCertificateDeclaration, ClusterCertificateDeclarationSpec, ObservedCertificate};
use crate::declaration::{self, World};
use crate::facts::inspect;
use crate::observed::stored_instance;
use crate::outputs::{
    self, DECLARATION_LABEL, MANAGED_BY, MANAGED_BY_LABEL, PresentedMaterial, REVISION_ANNOTATION, presentation_name,
    store_name, validation_name,
};
use crate::planner::{BlockReason, Blocked, Revision, Store};
use crate::rules::TrustBundle;
use crate::thumbprint::Thumbprint;

const MANAGER: &str = "certshift-declaration";

const CONTROLLER: &str = "declaration";

/// `ocert_events`: the ObservedCertificate controller's watch events (its
/// cache's trimmed copies); `secret_events`: the shared Secret watch's.
pub(super) async fn controller(
    ctx: Arc<Context>,
    ocert_events: futures::channel::mpsc::UnboundedReceiver<watcher::Event<ObservedCertificate>>,
    secret_events: super::SecretEvents,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Pods are cached by metadata, trimmed to their labels and acknowledged
    // revision: the mapper matches labels, the reconcile counts members.
    let (declarations, pods): (Api<ClusterCertificateDeclaration>, Api<PartialObjectMeta<Pod>>) =
        (ctx.watched(), ctx.watched());
    let controller = super::lean_controller(declarations, super::Trigger::EveryChange);
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
    let shell = Arc::new(Shell {
        ctx,
        pods: pod_cache,
        ocerts: Remembered::default(),
        secrets: Remembered::default(),
        config_maps: Remembered::default(),
    });
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
    let follow = tokio::spawn(follow_outputs(shell.clone(), secret_events));
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
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, shell);
    drive(CONTROLLER, stream).await;
    follow.abort();
}

/// Feeds the remembered Secrets and validation ConfigMaps from their watches:
/// the shared Secret watch, and a metadata watch of the ConfigMaps certshift
/// manages. That one sees no ConfigMap of someone else's, which is safe:
/// only objects read or written as certshift's are remembered, and one that
/// loses the label leaves the watch as a deletion.
async fn follow_outputs(shell: Arc<Shell>, secret_events: super::SecretEvents) {
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
        futures::future::ready(())
    });
    futures::future::join(config_map_events, secret_events).await;
}

/// Whether the declaration's `spec.members.pods` selector takes a pod with `labels`.
fn selects(declaration: &ClusterCertificateDeclaration, labels: &BTreeMap<String, String>) -> bool {
    let pods = declaration.spec.members.as_ref().and_then(|m| m.pods.as_ref());
    pods.is_some_and(|selector| members::selects(selector, labels))
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
}

/// `name` as remembered, or read from the API server (and remembered).
async fn read<K>(
    ctx: &Context,
    remembered: &Remembered<K>,
    namespace: &str,
    name: &str,
    (action, kind): (&'static str, &'static str),
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
    let object = ctx.get_opt::<K>(namespace, name, (action, kind)).await?;
    Ok(object.map(|o| remembered.put(o)))
}

fn error_policy(_: Arc<ClusterCertificateDeclaration>, err: &Error, shell: Arc<Shell>) -> Action {
    shell.ctx.metrics.failed(CONTROLLER, err.metric_label());
    Action::requeue(Duration::from_secs(15))
}

/// The store's instances with the material to present them, and the trust
/// bundle's certificates as PEM.
struct Gathered {
    store: Store,
    materials: BTreeMap<Thumbprint, PresentedMaterial>,
    authorities: BTreeMap<Thumbprint, String>,
}

fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

async fn gather_store(
    shell: &Shell,
    namespace: &str,
    spec: &ClusterCertificateDeclarationSpec,
) -> Result<Result<Gathered, Blocked>, Error> {
    let ctx = &shell.ctx;
    let mut gathered = Gathered {
        store: Store::default(),
        materials: BTreeMap::new(),
        authorities: BTreeMap::new(),
    };
    for (index, name) in spec.store.observed_certificates.iter().enumerate() {
        let field = format!("spec.store.observedCertificates[{index}]");
        let kind = ("GetObservedCertificate", "ObservedCertificate");
        let Some(ocert) = read(ctx, &shell.ocerts, namespace, name, kind).await? else {
            return Ok(Err(Blocked::new(
                BlockReason::StoreNotFound,
                format!("{field}: ObservedCertificate {namespace}/{name} does not exist"),
            )));
        };
        let status = ocert.status.clone().unwrap_or_default();
        if status.instances.is_empty() {
            return Ok(Err(Blocked::new(
                BlockReason::StoreNotSynced,
                format!("{field}: ObservedCertificate {namespace}/{name} has no instances yet"),
            )));
        }
        if let Some((reason, message)) = crate::observed::unreadable_source(&status) {
            return Ok(Err(Blocked::new(
                BlockReason::StoreNotSynced,
                format!(
                    "{field}: ObservedCertificate {namespace}/{name} cannot read its source ({reason}: {message}); holding the upgrade until it can"
                ),
            )));
        }
        let stored_name = store_name(name);
        let stored = read(ctx, &shell.secrets, namespace, &stored_name, ("GetSecret", "Secret"))
            .await?
            .filter(|s| owned_by(&s.metadata, ocert.as_ref()));
        let data = stored.as_deref().map(secret_data).unwrap_or_default();
        for facts in status.instances {
            match stored_instance(&data, &facts.thumbprint) {
                Some(Ok(bundle)) => {
                    for (thumbprint, der) in &bundle.authorities_der {
                        gathered.authorities.insert(thumbprint.clone(), pem_of(der));
                    }
                    let text = |key: String| data.get(&key).map(|v| String::from_utf8_lossy(v).into_owned());
                    let [crt, key, ca] = crate::observed::store_keys(&facts.thumbprint);
                    if let (Some(tls_crt), Some(tls_key)) = (text(crt), text(key)) {
                        let ca_crt = text(ca)
                            .unwrap_or_else(|| bundle.authorities_der.iter().map(|(_, der)| pem_of(der)).collect());
                        gathered.materials.insert(
                            facts.thumbprint.clone(),
                            PresentedMaterial {
                                tls_crt,
                                tls_key,
                                ca_crt,
                            },
                        );
                    }
                    gathered.store.instances.push(bundle.leaf);
                }
                // Recorded but not stored (or unreadable): known, not presentable.
                _ => gathered.store.instances.push(crate::facts::CertificateFacts {
                    private_key: crate::facts::PrivateKeyState::Missing,
                    ..facts
                }),
            }
        }
    }
    if let Some(source) = &spec.trust_bundle {
        match trust_bundle(ctx, namespace, source).await? {
            Ok(pem) => match trust_bundle_certificates(&pem) {
                Ok(roots) => gathered.authorities.extend(roots),
                Err(err) => return Ok(Err(Blocked::new(BlockReason::StoreNotFound, err))),
            },
            Err(blocked) => return Ok(Err(blocked)),
        }
    }
    gathered.store.instances.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
    gathered.store.instances.dedup_by(|a, b| a.thumbprint == b.thumbprint);
    gathered.store.trust = TrustBundle::new(gathered.authorities.keys().cloned());
    Ok(Ok(gathered))
}

/// The PKCS#12 password from `spec.output.pkcs12.passwordSecretRef`.
async fn pkcs12_password(
    ctx: &Context,
    namespace: &str,
    declaration: &str,
    reference: &crate::crd::KeySelector,
) -> Result<String, Error> {
    let key = reference.key.clone().unwrap_or_else(|| "password".to_owned());
    let secret: Option<Secret> = ctx.get_opt(namespace, &reference.name, ("GetSecret", "Secret")).await?;
    secret
        .as_ref()
        .map(secret_data)
        .and_then(|mut d| d.remove(&key))
        .map(|v| String::from_utf8_lossy(&v).trim_end_matches('\n').to_owned())
        .ok_or_else(|| Error::Render {
            namespace: namespace.to_owned(),
            name: declaration.to_owned(),
            message: format!(
                "spec.output.pkcs12.passwordSecretRef: Secret {:?} has no key {key:?}",
                reference.name
            ),
        })
}

/// The certificates of a trust bundle, each as its own PEM block.
fn trust_bundle_certificates(pem: &str) -> Result<Vec<(Thumbprint, String)>, String> {
    let blocks = pem::parse_many(pem).map_err(|err| format!("spec.trustBundle: malformed PEM: {err}"))?;
    let mut roots = Vec::new();
    for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
        let facts = inspect("spec.trustBundle", block.contents()).map_err(|err| err.to_string())?;
        roots.push((facts[0].thumbprint.clone(), pem_of(block.contents())));
    }
    if roots.is_empty() {
        return Err("spec.trustBundle: no certificate found".to_owned());
    }
    Ok(roots)
}

async fn trust_bundle(
    ctx: &Context,
    namespace: &str,
    source: &crate::crd::TrustBundleSource,
) -> Result<Result<String, Blocked>, Error> {
    let missing = |what: String| {
        Ok(Err(Blocked::new(
            BlockReason::StoreNotFound,
            format!("spec.trustBundle: {what}"),
        )))
    };
    if let Some(r) = &source.config_map_ref {
        let key = r.key.clone().unwrap_or_else(|| "ca.crt".into());
        let map: Option<ConfigMap> = ctx.get_opt(namespace, &r.name, ("GetConfigMap", "ConfigMap")).await?;
        return match map.and_then(|m| m.data.and_then(|mut d| d.remove(&key))) {
            Some(pem) => Ok(Ok(pem)),
            None => missing(format!("ConfigMap {namespace}/{} has no key {key:?}", r.name)),
        };
    }
    if let Some(r) = &source.secret_ref {
        let key = r.key.clone().unwrap_or_else(|| "ca.crt".into());
        let secret: Option<Secret> = ctx.get_opt(namespace, &r.name, ("GetSecret", "Secret")).await?;
        return match secret.and_then(|s| s.data.and_then(|mut d| d.remove(&key))) {
            Some(bytes) => Ok(Ok(String::from_utf8_lossy(&bytes.0).into_owned())),
            None => missing(format!("Secret {namespace}/{} has no key {key:?}", r.name)),
        };
    }
    missing("set configMapRef or secretRef".into())
}

/// The outputs as they are: the published revision (from the validation
/// ConfigMap) and whether either output belongs to someone else.
struct Outputs {
    published: Option<Revision>,
    blocked: Option<Blocked>,
    validation: Option<Arc<ConfigMap>>,
    presentation: Option<Arc<Secret>>,
}

async fn read_outputs(shell: &Shell, declaration: &ClusterCertificateDeclaration) -> Result<Outputs, Error> {
    let namespace = declaration.namespace().unwrap_or_default();
    let name = declaration.name_any();
    let (validation_name, presentation_name) = (validation_name(&name), presentation_name(&name));
    let kind = ("GetConfigMap", "ConfigMap");
    let validation = read(&shell.ctx, &shell.config_maps, &namespace, &validation_name, kind).await?;
    let kind = ("GetSecret", "Secret");
    let presentation = read(&shell.ctx, &shell.secrets, &namespace, &presentation_name, kind).await?;
    let foreign = |kind: &str, object: &str| {
        Some(Blocked::new(
            BlockReason::SecretOwnedElsewhere,
            format!(
                "{kind} {namespace}/{object} exists and was not created by certshift for this declaration; it is left untouched"
            ),
        ))
    };
    let blocked = match (&validation, &presentation) {
        (Some(v), _) if !owned_by(&v.metadata, declaration) => foreign("ConfigMap", &validation_name),
        (_, Some(p)) if !owned_by(&p.metadata, declaration) => foreign("Secret", &presentation_name),
        _ => None,
    };
    let published = match (&blocked, &validation) {
        (None, Some(map)) => {
            let annotations = map.metadata.annotations.clone().unwrap_or_default();
            let data = map.data.clone().unwrap_or_default();
            match outputs::read_published(&annotations, &data) {
                Ok(revision) => Some(revision),
                Err(err) => {
                    warn!(error = %err, "the validation ConfigMap is unreadable; republishing");
                    None
                }
            }
        }
        _ => None,
    };
    Ok(Outputs {
        published,
        blocked,
        validation,
        presentation,
    })
}

/// Writes both outputs for `revision` (validation first: a restart between the
/// two writes then repairs the presentation instead of regressing it). Writes
/// only what differs.
async fn publish(
    shell: &Shell,
    declaration: &ClusterCertificateDeclaration,
    revision: &Revision,
    gathered: &Gathered,
    current: &Outputs,
) -> Result<(), Error> {
    let ctx = &shell.ctx;
    let namespace = declaration.namespace().unwrap_or_default();
    let name = declaration.name_any();
    let Some(material) = gathered.materials.get(&revision.presented) else {
        warn!(presented = %revision.presented, "no stored key material for the presented certificate");
        return Ok(());
    };
    let annotations = outputs::annotations(revision);
    let labels = BTreeMap::from([
        (DECLARATION_LABEL.to_owned(), name.clone()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ]);
    let ca_bundle: String = gathered.authorities.values().map(String::as_str).collect();
    let accepted_instances: Vec<Thumbprint> = gathered
        .store
        .instances
        .iter()
        .filter(|f| revision.accepted.admits(f, &gathered.store.trust))
        .map(|f| f.thumbprint.clone())
        .collect();
    let clients = revision.clients.clone();
    let mut validation_data = outputs::validation_data(revision, &clients, &ca_bundle, &accepted_instances);
    if let Some(output) = declaration.spec.output.as_ref().filter(|o| !o.templates.is_empty()) {
        let presented = gathered.store.find(&revision.presented);
        let context = outputs::TemplateContext::new(revision, presented, &clients, &accepted_instances);
        let rendered = outputs::render_templates(&output.templates, &context).map_err(|message| Error::Render {
            namespace: namespace.clone(),
            name: name.clone(),
            message,
        })?;
        validation_data.extend(rendered);
    }
    let validation_current = current
        .validation
        .as_ref()
        .map(|m| (m.metadata.annotations.clone(), m.data.clone()));
    if validation_current != Some((Some(annotations.clone()), Some(validation_data.clone()))) {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(validation_name(&name)),
                namespace: Some(namespace.clone()),
                labels: Some(labels.clone()),
                annotations: Some(annotations.clone()),
                owner_references: Some(vec![super::owner_reference(declaration)]),
                ..ObjectMeta::default()
            },
            data: Some(validation_data),
            ..ConfigMap::default()
        };
        let mut value = serde_json::to_value(&map).expect("ConfigMap serializes");
        value["apiVersion"] = "v1".into();
        value["kind"] = "ConfigMap".into();
        let written = ctx
            .api::<ConfigMap>(&namespace)
            .patch(
                &validation_name(&name),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(value),
            )
            .await
            .map_err(kube_err(
                "ApplyConfigMap",
                "ConfigMap",
                &namespace,
                &validation_name(&name),
            ))?;
        shell.config_maps.put(written);
        ctx.metrics.write("ConfigMap");
    }
    let mut presentation_data: BTreeMap<String, Vec<u8>> = outputs::presentation_data(material)
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    let current_data: Option<BTreeMap<String, Vec<u8>>> = current.presentation.as_deref().map(secret_data);
    let current_annotations = current
        .presentation
        .as_ref()
        .and_then(|s| s.metadata.annotations.clone());
    if let Some(output) = declaration.spec.output.as_ref().filter(|o| !o.formats.is_empty()) {
        let password = match &output.pkcs12 {
            Some(pkcs12) => Some(pkcs12_password(ctx, &namespace, &name, &pkcs12.password_secret_ref).await?),
            None => None,
        };
        let formats =
            outputs::format_data(material, &output.formats, password.as_deref()).map_err(|message| Error::Render {
                namespace: namespace.clone(),
                name: name.clone(),
                message,
            })?;
        presentation_data.extend(formats);
        // PKCS#12 encryption is salted: keep the file already written for this
        // revision, so an unchanged world makes no write.
        let same_revision = current_annotations.as_ref() == Some(&annotations);
        if let (true, Some(existing)) = (same_revision, current_data.as_ref().and_then(|d| d.get("tls.pfx"))) {
            presentation_data.insert("tls.pfx".to_owned(), existing.clone());
        }
    }
    if current_data.as_ref() != Some(&presentation_data) || current_annotations.as_ref() != Some(&annotations) {
        let secret = OwnedSecret {
            name: &presentation_name(&name),
            type_: "kubernetes.io/tls",
            labels,
            annotations,
            data: &presentation_data,
        };
        shell
            .secrets
            .put(apply_secret(ctx, MANAGER, declaration, secret).await?);
    }
    Ok(())
}

async fn reconcile(declaration: Arc<ClusterCertificateDeclaration>, shell: Arc<Shell>) -> Result<Action, Error> {
    let ctx = shell.ctx.clone();
    let namespace = declaration.namespace().unwrap_or_default();
    let name = declaration.name_any();
    let span = info_span!(
        "reconcile",
        controller = CONTROLLER,
        %namespace,
        %name,
        generation = declaration.metadata.generation,
        stage = tracing::field::Empty
    );
    async move {
        ctx.metrics.reconciled(CONTROLLER);
        let gathered = gather_store(&shell, &namespace, &declaration.spec).await?;
        let outputs = read_outputs(&shell, &declaration).await?;
        let members =
            members::report(&ctx, &shell.pods, &namespace, declaration.spec.members.as_ref(), outputs.published.as_ref()).await?;
        let mut status = declaration.status.clone().unwrap_or_default();
        status.conditions = conditions::sorted(&status.conditions);
        let now = now();
        let decide = |preflight: Option<Blocked>| {
            declaration::decide(World {
                generation: declaration.metadata.generation,
                spec: &declaration.spec,
                status: &status,
                store: gathered.as_ref().map(|g| g.store.clone()).map_err(Clone::clone),
                published: outputs.published.clone(),
                outputs_blocked: outputs.blocked.clone(),
                preflight,
                members: members.clone(),
                now,
            })
        };
        let mut decision = decide(None);
        // Pre-flight: every endpoint must accept the certificate about to be
        // presented, as a client, before members are told to present it.
        if let (Some(revision), Ok(gathered)) = (&decision.publish, &gathered)
            && revision.change == Some(crate::planner::Change::Presentation)
            && let Some(material) = gathered.materials.get(&revision.presented)
        {
            for (_, endpoint) in members::endpoints(&ctx, &namespace, declaration.spec.members.as_ref()).await? {
                if let Err(err) = super::probe::accepts(&endpoint, material).await {
                    let blocked = Blocked::new(
                        BlockReason::PeerRejectsCertificate,
                        format!("endpoint {} does not accept {} as a client: {err}", endpoint.address, revision.presented),
                    );
                    decision = decide(Some(blocked));
                    break;
                }
            }
        }
        if let Ok(gathered) = &gathered {
            // A restart between the two output writes left the presentation
            // behind the validation ConfigMap: finish that write first.
            if let (Some(published), None) = (&outputs.published, &decision.publish) {
                let behind = outputs
                    .presentation
                    .as_ref()
                    .and_then(|s| s.metadata.annotations.as_ref())
                    .and_then(|a| a.get(REVISION_ANNOTATION))
                    != Some(&published.revision.to_string());
                if behind && outputs.blocked.is_none() {
                    info!(revision = published.revision, "completing the presentation of the published revision");
                    publish(&shell, &declaration, published, gathered, &outputs).await?;
                }
            }
            if let Some(revision) = &decision.publish {
                tracing::Span::current().record("stage", tracing::field::debug(revision.stage));
                publish(&shell, &declaration, revision, gathered, &outputs).await?;
                ctx.metrics.published();
                info!(revision = revision.revision, stage = ?revision.stage, change = ?revision.change, presented = %revision.presented, "published");
            }
        }
        // Workload members roll out the revision now in force (stamped once).
        if outputs.blocked.is_none()
            && let Some(current) = decision.publish.as_ref().or(outputs.published.as_ref())
        {
            members::stamp(&ctx, &namespace, declaration.spec.members.as_ref(), current.revision).await?;
        }
        if declaration.status.is_none() || status != decision.status {
            debug!(
                before = %serde_json::to_string(&status).unwrap_or_default(),
                after = %serde_json::to_string(&decision.status).unwrap_or_default(),
                "status changed"
            );
            let kind = ("ClusterCertificateDeclaration", "ClusterCertificateDeclaration/status");
            apply_status(&ctx, MANAGER, declaration.as_ref(), &decision.status, kind).await?;
        } else {
            debug!("unchanged");
        }
        publish_events(&ctx, declaration.as_ref(), &decision.events, "Reconcile").await;
        // Endpoints have no watch: while they lag, probe them again soon.
        let probing = declaration.spec.members.as_ref().is_some_and(|m| !m.endpoints.is_empty())
            && decision.status.members.as_ref().is_some_and(|m| m.converged < m.total);
        let after = decision.requeue.unwrap_or(Duration::from_secs(300));
        Ok(Action::requeue(if probing { after.min(Duration::from_secs(2)) } else { after }))
    }
    .instrument(span)
    .await
}
