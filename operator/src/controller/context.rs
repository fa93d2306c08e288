//! What every reconcile shares: the options, the client, the metrics, the clock.

use std::sync::Arc;

use jiff::Timestamp;
use kube::{Api, Client, Resource};

use super::metrics::Metrics;
use super::{Error, LeaderElection, Verb, kube_err};

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
    pub(super) fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// `name` in `namespace`, or `None` if there is none; a failure names
    /// the object.
    pub(super) async fn get_opt<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, Error>
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
    pub(super) fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// Whole seconds: status timestamps are compared after a round trip.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).expect("now is in range")
}
