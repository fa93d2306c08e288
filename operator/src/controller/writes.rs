//! The writes every controller makes: status by server-side apply, events,
//! and the Secrets the operator owns (never one it did not create).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use tracing::warn;

use super::{Context, Error, Verb, kube_err};
use crate::events::{Event, EventType};
use crate::outputs::{MANAGED_BY, MANAGED_BY_LABEL};

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
pub(super) async fn apply_status<K>(
    ctx: &Context,
    manager: &str,
    object: &K,
    status: &impl serde::Serialize,
) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
    let decided = serde_json::to_value(status).unwrap_or_default();
    // A status that drops fields the stored one has (an earlier revision's
    // acknowledgedTime, a plan done) is replaced whole at once when it can
    // be: an apply whose ownership was taken away would show the stale
    // field until the check below replaced it.
    let stored = serde_json::to_value(object).unwrap_or_default();
    if stored.get("status").is_some_and(|s| drops_fields(s, &decided)) {
        match replace_status(ctx, manager, object, &decided).await {
            Ok(written) => return Ok(written),
            // Someone wrote since: apply, and check.
            Err(Error::Kube { source, .. }) if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 409) => {}
            Err(err) => return Err(err),
        }
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": decided.clone(),
    });
    let mut written = ctx
        .api::<K>(&namespace)
        .patch_status(&name, &PatchParams::apply(manager).force(), &Patch::Apply(patch))
        .await
        .map_err(kube_err::<K>(Verb::ApplyStatus, &namespace, &name))?;
    ctx.metrics.write(&format!("{}/status", K::kind(&())));
    // Dropped before the check: managedFields are often most of the object.
    written.managed_fields_mut().clear();
    let object = serde_json::to_value(&written).unwrap_or_default();
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
        return replace_status(ctx, manager, &written, &decided).await;
    }
    Ok(written)
}

/// Whether `stored` has a field (at any depth of objects) that `decided` does not.
fn drops_fields(stored: &serde_json::Value, decided: &serde_json::Value) -> bool {
    match (stored, decided) {
        (serde_json::Value::Object(stored), serde_json::Value::Object(decided)) => {
            stored.iter().any(|(key, value)| match decided.get(key) {
                None => !value.is_null(),
                Some(kept) => drops_fields(value, kept),
            })
        }
        _ => false,
    }
}

/// Replaces the status of `object` (as stored, at its resourceVersion) with `decided`.
async fn replace_status<K>(ctx: &Context, manager: &str, object: &K, decided: &serde_json::Value) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
    let mut value = serde_json::to_value(object).unwrap_or_default();
    value["status"] = decided.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    let replacement: K = serde_json::from_value(value)
        .map_err(|err| kube_err::<K>(Verb::ReplaceStatus, &namespace, &name)(kube::Error::SerdeError(err)))?;
    let mut written = ctx
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
    written.managed_fields_mut().clear();
    Ok(written)
}

/// A status with its conditions in type order: a list keyed by type, which
/// an apply merges by key and may return in another order.
pub(super) fn conditions_by_type(status: &serde_json::Value) -> serde_json::Value {
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
pub(super) async fn publish_events<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    events: &[Event],
    action: &str,
) {
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
pub(super) const REPORTING_CONTROLLER: &str = "certshift.io/operator";

/// Whether an existing object was created by certshift for `owner`.
pub(super) fn owned_by<K: Resource<DynamicType = ()>>(meta: &ObjectMeta, owner: &K) -> bool {
    crate::outputs::is_owned_by(meta, owner.meta().uid.as_deref().unwrap_or_default())
}

/// A Secret the operator owns, as it should be.
pub(super) struct OwnedSecret<'a> {
    pub(super) name: &'a str,
    pub(super) type_: &'a str,
    /// Owner names by label key, fitted to label values by `owned_secret`.
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) data: &'a BTreeMap<String, Vec<u8>>,
}

/// The Secret object the operator owns, as it should be.
pub(super) fn owned_secret<K: Resource<DynamicType = ()>>(owner: &K, secret: OwnedSecret<'_>) -> Secret {
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

pub(super) fn byte_strings(data: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, ByteString> {
    data.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()
}

/// Server-side applies a Secret the operator owns; returns it as written.
pub(super) async fn apply_secret<K: Resource<DynamicType = ()>>(
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
pub(super) async fn create_secret<K: Resource<DynamicType = ()>>(
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
pub(super) fn post_params(manager: &str) -> PostParams {
    PostParams {
        field_manager: Some(manager.to_owned()),
        ..PostParams::default()
    }
}

/// Replaces the data of a Secret the operator owns, as read in this
/// reconcile: the resourceVersion precondition makes the object judged ours
/// the one overwritten, and keys no longer wanted go with the rest.
pub(super) async fn replace_secret_data(
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
