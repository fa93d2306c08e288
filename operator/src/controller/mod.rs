//! The I/O shell: watches, gathers the world, calls the pure decisions in
//! [`crate::observed`] and [`crate::declaration`], and applies them with
//! server-side apply (one field manager per controller).

pub mod crl_fetch;
mod declaration;
mod in_use;
mod leader;
pub mod members;
pub mod metrics;
mod observed;
pub mod policy;
pub mod probe;
mod relisted;
mod remembered;
mod sources;
mod trust_sources;
mod written;

mod context;
mod errors;
mod watches;
mod writes;

use std::future::Future;
use std::sync::Arc;

use kube::Client;
use tracing::info;

pub use leader::LeaderElection;
use metrics::Metrics;

pub use context::{Context, Options, now};
use errors::kube_err;
pub use errors::{Error, Verb};
use watches::{Health, SecretEvents, Trigger, drive, lean_controller, lean_controller_with, secret_events};
use writes::{OwnedSecret, apply_secret, apply_status, create_secret, owned_by, publish_events, replace_secret_data};

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
    // And ObservedCertificates learn what the declarations have in use
    // from the declaration controller's watch.
    let in_use: Arc<in_use::SharedInUse> = Arc::default();
    let observed = observed::controller(ctx.clone(), for_observed, ocert_events, in_use.clone(), stop.clone());
    let declarations = declaration::controller(
        ctx.clone(),
        ocerts_for_declarations,
        for_declarations,
        in_use,
        stop.clone(),
    );
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

/// A tiny result alias for the process entry points (errors are messages).
pub mod anyhow_like {
    pub type Result<T = ()> = std::result::Result<T, String>;
}
