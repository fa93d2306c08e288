//! Plays the kubelet's part for members that are `certshift agent`s: keeps a
//! Secret and a ConfigMap volume of one member up to date, in the atomic
//! writer's layout, each after a random delay of its own (the kubelet syncs
//! each volume on its own schedule, so the two halves of a revision arrive
//! separately and in either order).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use certshift::agent::volume::write_atomically;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use rand::Rng as _;

/// Keeps `dir` at the latest content of an object, at most `max_delay` late.
async fn follow<F>(dir: PathBuf, max_delay: Duration, read: F)
where
    F: Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<(String, BTreeMap<String, Vec<u8>>)>> + Send>>
        + Send,
{
    let mut written: Option<String> = None;
    loop {
        if let Some((version, _)) = read().await
            && written.as_ref() != Some(&version)
        {
            let delay = rand::thread_rng().gen_range(Duration::ZERO..=max_delay);
            tokio::time::sleep(delay).await;
            // The latest, not the version seen before the delay: the kubelet
            // writes what the API server has when it syncs.
            if let Some((version, files)) = read().await
                && write_atomically(&dir, &files).is_ok()
            {
                written = Some(version);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The volumes of one member: `<dir>/presentation` and `<dir>/validation`.
pub struct Volumes {
    pub presentation: PathBuf,
    pub validation: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Volumes {
    /// Starts keeping the declaration's outputs in `dir`.
    pub fn start(client: &Client, namespace: &str, declaration: &str, dir: &Path, max_delay: Duration) -> Self {
        let (presentation, validation) = (dir.join("presentation"), dir.join("validation"));
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let (secret_name, map_name) = (
            format!("{declaration}-presentation"),
            format!("{declaration}-validation"),
        );
        let secret_task = tokio::spawn(follow(presentation.clone(), max_delay, move || {
            let (secrets, name) = (secrets.clone(), secret_name.clone());
            Box::pin(async move {
                let secret = secrets.get_opt(&name).await.ok()??;
                let version = secret.metadata.resource_version.clone().unwrap_or_default();
                let files = secret.data?.into_iter().map(|(k, v)| (k, v.0)).collect();
                Some((version, files))
            })
        }));
        let map_task = tokio::spawn(follow(validation.clone(), max_delay, move || {
            let (maps, name) = (maps.clone(), map_name.clone());
            Box::pin(async move {
                let map = maps.get_opt(&name).await.ok()??;
                let version = map.metadata.resource_version.clone().unwrap_or_default();
                let files = map.data?.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                Some((version, files))
            })
        }));
        Self {
            presentation,
            validation,
            tasks: vec![secret_task, map_task],
        }
    }
}

impl Drop for Volumes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
