//! The watches: one shared Secret watch, lean controllers whose caches keep
//! only what reconciles read, and their health (`/readyz`).

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::{Api, Resource, ResourceExt};
use tracing::warn;

use super::Context;
use super::metrics::Metrics;

/// The events of a metadata-only Secret watch.
pub(super) type SecretEvents =
    futures::channel::mpsc::UnboundedReceiver<kube::runtime::watcher::Event<PartialObjectMeta<Secret>>>;

/// One metadata watch of Secrets, shared by the controllers that follow them
/// (a watch each would make the API server list and send every Secret of the
/// cluster once per controller). The future drives the watch; each receiver
/// gets every event. Watch errors are retried with backoff and logged here.
pub(super) fn secret_events<const N: usize>(
    ctx: &Context,
) -> (impl Future<Output = ()> + Send + 'static, [SecretEvents; N]) {
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

/// Reconciles in flight per controller (as many requests as the benchmark's
/// write floor keeps in flight). Unbounded, a cold start over thousands of
/// objects opens a connection per request, and each idle TLS connection keeps
/// its buffers: memory would follow the burst, not the objects.
pub(super) const CONCURRENCY: u16 = 64;

/// A Controller whose cache keeps only what reconciles read: managedFields
/// and kubectl's last-applied annotation are dropped, since they can be larger
/// than the object itself and the cache holds every watched object.
///
/// With `Trigger::SpecChanges`, only a new generation reconciles: the status
/// the controller writes itself does not come back as one more reconcile.
pub(super) fn lean_controller<K>(api: Api<K>, trigger: Trigger, health: Health) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    lean_controller_with(api, trigger, health, |_| {}, |_| {})
}

/// Where a controller's watch reports whether it delivers (`/readyz`, and
/// `certshift_reconcile_errors_total{error="Watch"}`).
pub(super) struct Health {
    pub(super) metrics: Arc<Metrics>,
    pub(super) controller: &'static str,
}

/// [`lean_controller`], with more to drop from the cached objects (`trim`)
/// and a look at every watch event (`observe`), for an index of the caller's.
pub(super) fn lean_controller_with<K>(
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
                // `Init` comes before the list is asked for: only what the
                // API server sent says the watch delivers.
                if !matches!(event, watcher::Event::Init) {
                    health.metrics.watch_delivered(health.controller, &K::kind(&()));
                }
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
pub(super) enum Trigger {
    EveryChange,
    SpecChanges,
}

/// Drains a controller's stream, logging each outcome.
pub(super) async fn drive<S, T, E>(name: &'static str, stream: S)
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
