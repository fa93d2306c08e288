//! Leader election on a coordination.k8s.io Lease: acquire with optimistic
//! concurrency (resourceVersion), renew at a third of the lease duration, and
//! report loss so the process stops writing at once.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{debug, warn};

#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

enum Attempt {
    Acquired,
    HeldElsewhere(String),
}

impl LeaderElection {
    /// Waits until this process holds the lease (or `stop`), calling
    /// `reached` once the API server has answered (a standby is ready to
    /// take over from then on). The returned future resolves, with a
    /// message, if the lease is lost later: held by another, or not renewed
    /// within two thirds of its duration (renewals are retried every second
    /// until then, so one failed request does not end the process).
    pub async fn acquire(
        &self,
        client: &Client,
        mut stop: watch::Receiver<bool>,
        reached: &(dyn Fn() + Sync),
    ) -> Result<impl Future<Output = String> + use<>, String> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        loop {
            let attempt = self.try_acquire(&api).await;
            if attempt.is_ok() {
                reached();
            }
            match attempt {
                Ok(Attempt::Acquired) => break,
                Ok(Attempt::HeldElsewhere(holder)) => debug!(%holder, "lease held elsewhere"),
                // Another replica created or renewed it first: the usual race, tried again.
                Err(kube::Error::Api(status)) if status.code == 409 => debug!("lease taken by another replica"),
                Err(err) => warn!(error = %err, "leader election"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.lease_duration / 4) => {}
                _ = stop.wait_for(|s| *s) => return Err("stopped before acquiring the lease".to_owned()),
            }
        }
        let election = self.clone();
        Ok(async move {
            let deadline = election.lease_duration * 2 / 3;
            let mut renewed = tokio::time::Instant::now();
            let mut wait = election.lease_duration / 3;
            loop {
                tokio::time::sleep(wait).await;
                match election.try_acquire(&api).await {
                    Ok(Attempt::Acquired) => {
                        renewed = tokio::time::Instant::now();
                        wait = election.lease_duration / 3;
                    }
                    Ok(Attempt::HeldElsewhere(holder)) => return format!("lost the leader lease to {holder}"),
                    Err(err) if renewed.elapsed() >= deadline => {
                        return format!(
                            "could not renew the leader lease for {}s: {err}",
                            renewed.elapsed().as_secs()
                        );
                    }
                    Err(err) => {
                        warn!(error = %err, "renewing the leader lease; retrying");
                        wait = Duration::from_secs(1);
                    }
                }
            }
        })
    }

    /// Gives the lease up (on shutdown), so a standby takes over at once
    /// rather than when it expires.
    pub async fn release(&self, client: &Client) {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let Ok(Some(mut lease)) = api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => debug!("released the leader lease"),
            Err(err) => warn!(error = %err, "releasing the leader lease"),
        }
    }

    async fn try_acquire(&self, api: &Api<Lease>) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let duration = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = api.get_opt(&self.name).await?;
        let mut lease = existing.clone().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_second());
        let expired = renewed + i64::from(spec.lease_duration_seconds.unwrap_or(duration)) < now.as_second();
        if !holder.is_empty() && holder != self.identity && !expired {
            return Ok(Attempt::HeldElsewhere(holder));
        }
        if holder != self.identity {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(MicroTime(now));
        match existing {
            // replace carries the resourceVersion: a concurrent writer makes this fail.
            Some(_) => api.replace(&self.name, &PostParams::default(), &lease).await?,
            None => api.create(&PostParams::default(), &lease).await?,
        };
        Ok(Attempt::Acquired)
    }
}
