//! The I/O shell: watches, gathers the world, calls the pure decisions in
//! [`crate::observed`] and [`crate::declaration`], and applies them with
//! server-side apply (one field manager per controller).

pub mod crl_fetch;
mod declaration;
mod leader;
pub mod members;
pub mod metrics;
mod observed;
pub mod policy;
pub mod probe;
mod remembered;
mod sources;
mod written;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

pub use leader::LeaderElection;
use metrics::Metrics;

use crate::events::{Event, EventType};
use crate::outputs::{MANAGED_BY, MANAGED_BY_LABEL};

/// How `certshift run` runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    pub leader_election: Option<LeaderElection>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Built once, shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub namespace: Option<String>,
    pub metrics: Arc<Metrics>,
    /// `reportingInstance` of the events this process records.
    pub instance: String,
}

impl Context {
    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// `name` in `namespace`, or `None` if there is none; a failure names
    /// the object.
    async fn get_opt<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>(namespace)
            .get_opt(name)
            .await
            .map_err(kube_err::<K>(Verb::Get, namespace, name))
    }

    /// An Api over what `--namespace` lets the operator watch: one namespace, or all.
    fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// Server-side applies `status` to `object`'s status subresource; returns
/// the object as written (managedFields dropped).
///
/// An apply removes only the fields its manager owns. An update of the
/// object by someone else can take that ownership away (kube-apiserver
/// 1.20 drops the status fields of other managers when a client-side
/// `kubectl apply` removes a `status:` block from its manifest), and the
/// fields this status no longer has (an earlier revision's
/// `acknowledgedTime`, a condition that no longer applies) would then stay.
/// So the answer is checked: when the status written is not the one
/// decided, it is replaced whole (one more write, in that case only).
async fn apply_status<K>(ctx: &Context, manager: &str, object: &K, status: &impl serde::Serialize) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let mut written = ctx
        .api::<K>(&namespace)
        .patch_status(&name, &PatchParams::apply(manager).force(), &Patch::Apply(patch))
        .await
        .map_err(kube_err::<K>(Verb::ApplyStatus, &namespace, &name))?;
    ctx.metrics.write(&format!("{}/status", K::kind(&())));
    let decided = serde_json::to_value(status).unwrap_or_default();
    let mut object = serde_json::to_value(&written).unwrap_or_default();
    let (as_written, as_decided) = (
        object.get("status").map(conditions_by_type),
        conditions_by_type(&decided),
    );
    if as_written.as_ref() != Some(&as_decided) {
        let stayed: Vec<&String> = match (&as_written, &as_decided) {
            (Some(serde_json::Value::Object(written)), serde_json::Value::Object(decided)) => {
                written.keys().filter(|k| written.get(*k) != decided.get(*k)).collect()
            }
            _ => Vec::new(),
        };
        warn!(%namespace, %name, ?stayed, "fields this status does not have stayed after the apply; replacing the status");
        object["status"] = decided;
        if let Some(meta) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
        let replacement: K = serde_json::from_value(object)
            .map_err(|err| kube_err::<K>(Verb::ReplaceStatus, &namespace, &name)(kube::Error::SerdeError(err)))?;
        written = ctx
            .api::<K>(&namespace)
            .replace_status(
                &name,
                &PostParams {
                    field_manager: Some(manager.to_owned()),
                    ..PostParams::default()
                },
                &replacement,
            )
            .await
            .map_err(kube_err::<K>(Verb::ReplaceStatus, &namespace, &name))?;
        ctx.metrics.write(&format!("{}/status", K::kind(&())));
    }
    written.managed_fields_mut().clear();
    Ok(written)
}

/// A status with its conditions in type order: a list keyed by type, which
/// an apply merges by key and may return in another order.
fn conditions_by_type(status: &serde_json::Value) -> serde_json::Value {
    let mut status = status.clone();
    if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        conditions.sort_by(|a, b| a["type"].as_str().cmp(&b["type"].as_str()));
    }
    status
}

/// Records the decided events on `object` (failures are logged, not fatal).
/// Each is its own events.k8s.io/v1 Event: decisions emit an event only for
/// an occurrence worth telling (a stage completed, a block), and each note
/// says that occurrence, so nothing is folded into a series.
async fn publish_events<K: Resource<DynamicType = ()>>(ctx: &Context, object: &K, events: &[Event], action: &str) {
    use k8s_openapi::api::events::v1::Event as KubeEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
    let api: Api<KubeEvent> = Api::namespaced(ctx.client.clone(), &namespace);
    for event in events {
        let now = Timestamp::now();
        let kube_event = KubeEvent {
            metadata: ObjectMeta {
                name: Some(crate::object_names::derived_name(
                    &name,
                    &format!(".{:x}", now.as_nanosecond()),
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.to_owned()),
            reason: Some(event.reason.clone()),
            note: Some(event.message.chars().take(1000).collect()),
            type_: Some(match event.type_ {
                EventType::Normal => "Normal".to_owned(),
                EventType::Warning => "Warning".to_owned(),
            }),
            regarding: Some(object.object_ref(&())),
            reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
            reporting_instance: Some(ctx.instance.clone()),
            ..KubeEvent::default()
        };
        match api.create(&PostParams::default(), &kube_event).await {
            Ok(_) => ctx.metrics.write("Event"),
            Err(err) => warn!(error = %err, reason = %event.reason, "could not record an event"),
        }
    }
}

/// `reportingController` of certshift's events.
const REPORTING_CONTROLLER: &str = "certshift.io/operator";

/// What a request to the API server was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Create,
    Replace,
    Apply,
    ApplyStatus,
    ReplaceStatus,
    /// Server-side apply of `certshift.io/revision` on a workload's pod template.
    Stamp,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "Get",
            Verb::List => "List",
            Verb::Create => "Create",
            Verb::Replace => "Replace",
            Verb::Apply => "Apply",
            Verb::ApplyStatus => "ApplyStatus",
            Verb::ReplaceStatus => "ReplaceStatus",
            Verb::Stamp => "Stamp",
        }
    }
}

/// I/O failures; everything a user must fix is a condition instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} {kind} {namespace}/{name}: {source}", verb.as_str())]
    Kube {
        verb: Verb,
        kind: std::borrow::Cow<'static, str>,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The watch behind a cache ended before its first list (shutdown).
    #[error("the {0} cache stopped before its first list")]
    CacheStopped(&'static str),
}

impl Error {
    /// A fixed metric label: the verb of the request that failed.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { verb, .. } => verb.as_str(),
            Error::CacheStopped(_) => "CacheStopped",
        }
    }
}

/// The error of a `verb` request for the `K` named `namespace/name`.
fn kube_err<K: Resource<DynamicType = ()>>(
    verb: Verb,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    move |source| Error::Kube {
        verb,
        kind: K::kind(&()),
        namespace,
        name,
        source: Box::new(source),
    }
}

/// Whole seconds: status timestamps are compared after a round trip.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).expect("now is in range")
}

/// Whether an existing object was created by certshift for `owner`.
fn owned_by<K: Resource<DynamicType = ()>>(meta: &ObjectMeta, owner: &K) -> bool {
    crate::outputs::is_owned_by(meta, owner.meta().uid.as_deref().unwrap_or_default())
}

/// A Secret the operator owns, as it should be.
struct OwnedSecret<'a> {
    name: &'a str,
    type_: &'a str,
    /// Owner names by label key, fitted to label values by `owned_secret`.
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    data: &'a BTreeMap<String, Vec<u8>>,
}

/// The Secret object the operator owns, as it should be.
fn owned_secret<K: Resource<DynamicType = ()>>(owner: &K, secret: OwnedSecret<'_>) -> Secret {
    let OwnedSecret {
        name,
        type_,
        mut labels,
        mut annotations,
        data,
    } = secret;
    // Labels name owners, whose names may be longer than a label value.
    for (key, value) in &mut labels {
        if let Some((key, full)) = crate::object_names::owner_annotation(key, value) {
            *value = crate::object_names::label_value(&full).into_owned();
            annotations.insert(key, full);
        }
    }
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![crate::outputs::owner_reference(owner)]),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(byte_strings(data)),
        ..Secret::default()
    }
}

fn byte_strings(data: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, ByteString> {
    data.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()
}

/// Server-side applies a Secret the operator owns; returns it as written.
async fn apply_secret<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    manager: &str,
    owner: &K,
    secret: OwnedSecret<'_>,
) -> Result<Secret, Error> {
    let (namespace, name) = (owner.namespace().unwrap_or_default(), secret.name.to_owned());
    let mut value = serde_json::to_value(owned_secret(owner, secret)).expect("Secret serializes");
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    let written = ctx
        .api::<Secret>(&namespace)
        .patch(&name, &PatchParams::apply(manager).force(), &Patch::Apply(value))
        .await
        .map_err(kube_err::<Secret>(Verb::Apply, &namespace, &name))?;
    ctx.metrics.write("Secret");
    Ok(written)
}

/// Creates a Secret the operator owns. A create never overwrites: when a
/// Secret of that name is already there, nothing is written and the answer is
/// `Ok(false)`, for the caller to read it and judge whose it is.
async fn create_secret<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    manager: &str,
    owner: &K,
    secret: OwnedSecret<'_>,
) -> Result<bool, Error> {
    let (namespace, name) = (owner.namespace().unwrap_or_default(), secret.name.to_owned());
    match ctx
        .api::<Secret>(&namespace)
        .create(&post_params(manager), &owned_secret(owner, secret))
        .await
    {
        Ok(_) => {
            ctx.metrics.write("Secret");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(kube_err::<Secret>(Verb::Create, &namespace, &name)(err)),
    }
}

/// Create and replace under `manager`, as server-side apply is.
fn post_params(manager: &str) -> PostParams {
    PostParams {
        field_manager: Some(manager.to_owned()),
        ..PostParams::default()
    }
}

/// Replaces the data of a Secret the operator owns, as read in this
/// reconcile: the resourceVersion precondition makes the object judged ours
/// the one overwritten, and keys no longer wanted go with the rest.
async fn replace_secret_data(
    ctx: &Context,
    manager: &str,
    existing: &Secret,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<(), Error> {
    let (namespace, name) = (existing.namespace().unwrap_or_default(), existing.name_any());
    let mut secret = existing.clone();
    secret.metadata.managed_fields = None;
    secret.data = Some(byte_strings(data));
    ctx.api::<Secret>(&namespace)
        .replace(&name, &post_params(manager), &secret)
        .await
        .map_err(kube_err::<Secret>(Verb::Replace, &namespace, &name))?;
    ctx.metrics.write("Secret");
    Ok(())
}

/// Runs both controllers until `shutdown` resolves (or leadership is lost).
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow_like::Result {
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = options.metrics_addr {
        let metrics = metrics.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|err| format!("binding {addr}: {err}"))?;
        info!(%addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(metrics::serve(listener, metrics));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut lost_leadership = None;
    if let Some(election) = &options.leader_election {
        // A standby is ready: it takes over when the leader goes.
        let lease = election
            .acquire(&client, stop_rx.clone(), &|| metrics.set_ready(true))
            .await?;
        info!(identity = %election.identity, "acquired the leader lease");
        lost_leadership = Some(lease);
    }
    metrics.set_ready(true);
    let ctx = Arc::new(Context {
        instance: std::env::var("POD_NAME").unwrap_or_else(|_| "certshift".to_owned()),
        client: client.clone(),
        namespace: options.namespace.clone(),
        metrics: metrics.clone(),
    });
    let stop = {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    let stop = futures::future::FutureExt::shared(Box::pin(stop));
    let (secret_watch, [for_observed, for_policies, for_declarations]) = secret_events(&ctx);
    let secret_watch = tokio::spawn(secret_watch);
    // The declaration controller follows ObservedCertificates through the
    // ObservedCertificate controller's watch, not one of its own.
    let (ocert_events, ocerts_for_declarations) = futures::channel::mpsc::unbounded();
    let observed = observed::controller(ctx.clone(), for_observed, ocert_events, stop.clone());
    let declarations = declaration::controller(ctx.clone(), ocerts_for_declarations, for_declarations, stop.clone());
    let policies = policy::controller(ctx.clone(), for_policies, stop.clone());
    let controllers = futures::future::join3(observed, declarations, policies);
    let outcome = match lost_leadership {
        Some(lost) => tokio::select! {
            _ = controllers => Ok(()),
            message = lost => Err(message),
        },
        None => {
            controllers.await;
            Ok(())
        }
    };
    secret_watch.abort();
    metrics.set_ready(false);
    if let (Some(election), Ok(())) = (&options.leader_election, &outcome) {
        election.release(&client).await;
    }
    info!("controllers stopped");
    outcome
}

/// The events of a metadata-only Secret watch.
type SecretEvents = futures::channel::mpsc::UnboundedReceiver<kube::runtime::watcher::Event<PartialObjectMeta<Secret>>>;

/// One metadata watch of Secrets, shared by the controllers that follow them
/// (a watch each would make the API server list and send every Secret of the
/// cluster once per controller). The future drives the watch; each receiver
/// gets every event. Watch errors are retried with backoff and logged here.
fn secret_events<const N: usize>(ctx: &Context) -> (impl Future<Output = ()> + Send + 'static, [SecretEvents; N]) {
    use kube::runtime::{WatchStreamExt, watcher};
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..N).map(|_| futures::channel::mpsc::unbounded()).unzip();
    let secrets: Api<PartialObjectMeta<Secret>> = ctx.watched();
    let watch = async move {
        // Every receiver reads the name, namespace and resourceVersion only:
        // the rest (managedFields above all) would be cloned for each.
        let events = watcher(secrets, watcher::Config::default())
            .default_backoff()
            .modify(|secret| {
                let meta = std::mem::take(&mut secret.metadata);
                secret.metadata = ObjectMeta {
                    name: meta.name,
                    namespace: meta.namespace,
                    resource_version: meta.resource_version,
                    ..ObjectMeta::default()
                };
            });
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if senders.iter().all(|s| s.is_closed()) {
                        break;
                    }
                    for sender in &senders {
                        let _ = sender.unbounded_send(event.clone());
                    }
                }
                Err(err) => warn!(error = %err, "watching Secrets"),
            }
        }
    };
    let receivers = receivers.try_into().unwrap_or_else(|_| unreachable!("N receivers"));
    (watch, receivers)
}

/// A tiny result alias for the process entry points (errors are messages).
pub mod anyhow_like {
    pub type Result<T = ()> = std::result::Result<T, String>;
}

/// Reconciles in flight per controller (as many requests as the benchmark's
/// write floor keeps in flight). Unbounded, a cold start over thousands of
/// objects opens a connection per request, and each idle TLS connection keeps
/// its buffers: memory would follow the burst, not the objects.
const CONCURRENCY: u16 = 64;

/// A Controller whose cache keeps only what reconciles read: managedFields
/// and kubectl's last-applied annotation are dropped, since they can be larger
/// than the object itself and the cache holds every watched object.
///
/// With `Trigger::SpecChanges`, only a new generation reconciles: the status
/// the controller writes itself does not come back as one more reconcile.
fn lean_controller<K>(api: Api<K>, trigger: Trigger, health: Health) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    lean_controller_with(api, trigger, health, |_| {}, |_| {})
}

/// Where a controller's watch reports whether it delivers (`/readyz`, and
/// `certshift_reconcile_errors_total{error="Watch"}`).
struct Health {
    metrics: Arc<Metrics>,
    controller: &'static str,
}

/// [`lean_controller`], with more to drop from the cached objects (`trim`)
/// and a look at every watch event (`observe`), for an index of the caller's.
fn lean_controller_with<K>(
    api: Api<K>,
    trigger: Trigger,
    health: Health,
    trim: fn(&mut K),
    mut observe: impl FnMut(&kube::runtime::watcher::Event<K>) + Send + 'static,
) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |object: &mut K| {
            object.managed_fields_mut().clear();
            object
                .annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
            trim(object);
        })
        .inspect(move |event| match event {
            Ok(event) => {
                health.metrics.watch_delivered(health.controller, &K::kind(&()));
                observe(event);
            }
            Err(err) => health
                .metrics
                .watch_failed(health.controller, &K::kind(&()), &err.to_string()),
        })
        .reflect(writer)
        .applied_objects();
    let config = kube::runtime::controller::Config::default().concurrency(CONCURRENCY);
    match trigger {
        Trigger::EveryChange => kube::runtime::Controller::for_stream(stream, reader),
        Trigger::SpecChanges => kube::runtime::Controller::for_stream(
            stream.predicate_filter(predicates::generation, Default::default()),
            reader,
        ),
    }
    .with_config(config)
}

/// Which changes of a controller's own objects reconcile them.
#[derive(Clone, Copy)]
enum Trigger {
    EveryChange,
    SpecChanges,
}

/// Drains a controller's stream, logging each outcome.
async fn drive<S, T, E>(name: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    stream
        .for_each(|outcome| async move {
            if let Err(err) = outcome {
                warn!(controller = name, error = %err, "reconcile failed");
            }
        })
        .await;
}
