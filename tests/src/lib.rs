//! The end-to-end harness: a real control plane, the CRDs from `crds/`, a
//! namespace per scenario, the operator in-process, and a judge that checks
//! every published revision.

pub mod argocd;
pub mod control_plane;
pub mod judge;
pub mod kubelet;
pub mod manifests;
pub mod member;
pub mod pki;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use certshift::crd::{ClusterCertificateDeclaration, ObservedCertificate};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};

pub use control_plane::ControlPlane;

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// Applies `crds/certshift.io.yaml` as users do and waits until established.
pub async fn install_crds(client: &Client) {
    let text = std::fs::read_to_string(repo_path("crds/certshift.io.yaml")).expect("crds/");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("CRD"))
        .collect();
    for crd in crds {
        let name = crd.metadata.name.clone().expect("name");
        api.patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|err| panic!("applying CRD {name}: {err}"));
        eventually(&format!("CRD {name} established"), Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        })
        .await;
    }
    // Discovery of new CRDs takes a moment even after Established.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

pub async fn create_namespace(client: &Client, name: &str) {
    let namespace = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
}

fn api_resource(kind: &str) -> ApiResource {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service, core::v1::ServiceAccount, rbac::v1 as rbac};
    match kind {
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "StatefulSet" => ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&()),
        // kube-apiserver 1.20 serves EndpointSlices as v1beta1.
        "EndpointSlice" => ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "discovery.k8s.io",
            "v1beta1",
            "EndpointSlice",
        )),
        "Role" => ApiResource::erase::<rbac::Role>(&()),
        "RoleBinding" => ApiResource::erase::<rbac::RoleBinding>(&()),
        "ClusterRole" => ApiResource::erase::<rbac::ClusterRole>(&()),
        "ClusterRoleBinding" => ApiResource::erase::<rbac::ClusterRoleBinding>(&()),
        "Secret" => ApiResource::erase::<Secret>(&()),
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "Pod" => ApiResource::erase::<Pod>(&()),
        "ObservedCertificate" => ApiResource::erase::<ObservedCertificate>(&()),
        "CertificatePolicy" => ApiResource::erase::<certshift::crd::CertificatePolicy>(&()),
        "ClusterCertificateDeclaration" => ApiResource::erase::<ClusterCertificateDeclaration>(&()),
        other => panic!("the harness does not apply {other}"),
    }
}

/// `kubectl apply --server-side -n NAMESPACE` of every document (their own
/// namespaces are replaced).
pub async fn apply_yaml(client: &Client, namespace: &str, text: &str) {
    apply_documents(client, text, Some(namespace)).await;
}

/// `kubectl apply --server-side` of rendered manifests, in their own namespaces.
pub async fn apply_rendered(client: &Client, text: &str) {
    apply_documents(client, text, None).await;
}

async fn apply_documents(client: &Client, text: &str, force_namespace: Option<&str>) {
    let documents: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(text)
        .map(|document| serde::Deserialize::deserialize(document).expect("YAML"))
        .filter(|value: &serde_json::Value| !value.is_null())
        .collect();
    for mut value in documents {
        // The API server ignores status on apply; drop it as kubectl would show.
        value.as_object_mut().expect("object").remove("status");
        let kind = value["kind"].as_str().expect("kind").to_owned();
        let name = value["metadata"]["name"].as_str().expect("name").to_owned();
        let resource = api_resource(&kind);
        let api: Api<DynamicObject> = if matches!(kind.as_str(), "ClusterRole" | "ClusterRoleBinding") {
            Api::all_with(client.clone(), &resource)
        } else {
            let namespace = force_namespace
                .or(value["metadata"]["namespace"].as_str())
                .unwrap_or("default")
                .to_owned();
            value["metadata"]["namespace"] = namespace.clone().into();
            Api::namespaced_with(client.clone(), &namespace, &resource)
        };
        api.patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&value))
            .await
            .unwrap_or_else(|err| panic!("applying {kind} {name}: {err}"));
    }
}

/// Reads an example file with its namespace replaced.
pub fn example(file: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("examples/conversion/{file}"))).expect("example")
}

/// Polls `check` until it returns `Some`, or panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn declaration(client: &Client, namespace: &str, name: &str) -> ClusterCertificateDeclaration {
    Api::<ClusterCertificateDeclaration>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|err| panic!("reading declaration {namespace}/{name}: {err}"))
}

pub fn condition<'a>(
    declaration: &'a ClusterCertificateDeclaration,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    declaration
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn is_true(declaration: &ClusterCertificateDeclaration, type_: &str) -> bool {
    condition(declaration, type_).is_some_and(|c| c.status == "True")
}

/// Waits until the declaration is Ready for its current generation.
pub async fn wait_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> ClusterCertificateDeclaration {
    eventually(&format!("{namespace}/{name} Ready"), timeout, || async {
        let d = declaration(client, namespace, name).await;
        let current = d.status.as_ref()?.observed_generation == d.metadata.generation;
        (current && is_true(&d, "Ready")).then_some(d)
    })
    .await
}

/// Waits until the declaration is Ready and declared by common name: the end
/// of the Service Fabric conversion.
pub async fn wait_converted(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> ClusterCertificateDeclaration {
    eventually(
        &format!("{namespace}/{name} converted to common name"),
        timeout,
        || async {
            let d = declaration(client, namespace, name).await;
            let by_name = d.status.as_ref()?.declared_by.as_deref() == Some("CommonName");
            (is_true(&d, "Ready") && by_name).then_some(d)
        },
    )
    .await
}

/// The operator, in-process, watching one namespace with its own identity.
pub struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Operator {
    pub fn start(plane: &ControlPlane, namespace: &str) -> Self {
        let options = certshift::controller::Options {
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        };
        Self::start_with(plane, options)
    }

    pub fn start_with(plane: &ControlPlane, options: certshift::controller::Options) -> Self {
        Self::start_as(plane, control_plane::OPERATOR_TOKEN, options)
    }

    /// With another identity: the chart's ServiceAccount, say.
    pub fn start_as(plane: &ControlPlane, token: &str, options: certshift::controller::Options) -> Self {
        let client = plane.client(token);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(certshift::controller::run(client, options, async move {
            let _ = stopped.await;
        }));
        Self { stop: Some(stop), task }
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
    }

    /// Dies mid-flight, as a crashed process would.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Every event the operator recorded in `namespace`, as (type, reason, note).
pub async fn events(client: &Client, namespace: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let mut events: Vec<_> = api
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            (
                e.metadata.creation_timestamp.map(|t| t.0),
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect();
    events.sort_by_key(|e| e.0);
    events.into_iter().map(|(_, t, r, n)| (t, r, n)).collect()
}

/// Waits for an event of `reason` (and `type_`, when given) in `namespace`.
/// The operator records events after the status it decided with them, so a
/// test that has seen the status waits for the events.
pub async fn wait_event(client: &Client, namespace: &str, type_: Option<&str>, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let recorded = events(client, namespace).await;
        if recorded
            .iter()
            .any(|(t, r, _)| r == reason && type_.is_none_or(|type_| t == type_))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no {reason} event in {recorded:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kinds whose `Resource` impl the harness uses generically.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

/// A plain HTTP GET on loopback: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

pub fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], control_plane::free_port()))
}

/// A member pod reports the revision it loaded, as a workload's sidecar would.
/// The revision a pod says it has loaded (`certshift.io/observed-revision`).
pub fn observed_revision(pod: &Pod) -> Option<u64> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(certshift::outputs::OBSERVED_REVISION_ANNOTATION)?
        .parse()
        .ok()
}

pub async fn acknowledge(pods: &Api<Pod>, pod: &str, revision: &str) -> kube::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {
        certshift::outputs::OBSERVED_REVISION_ANNOTATION: revision
    }}});
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// Members as the scale workloads have them: declaration `d-N`'s pod
/// `member-N` acknowledges each revision as its validation ConfigMap
/// appears, `concurrency` at a time, until the task is aborted.
pub fn acknowledge_as_published(client: &Client, namespace: &str, concurrency: usize) -> tokio::task::JoinHandle<()> {
    use certshift::outputs::{DECLARATION_LABEL, REVISION_ANNOTATION};
    use futures::StreamExt as _;
    use kube::ResourceExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    let (maps, pods) = (
        Api::<ConfigMap>::namespaced(client.clone(), namespace),
        Api::<Pod>::namespaced(client.clone(), namespace),
    );
    tokio::spawn(async move {
        let config = watcher::Config::default().labels(DECLARATION_LABEL);
        let stream = watcher(maps, config).default_backoff().applied_objects();
        stream
            .for_each_concurrent(concurrency, |map| {
                let pods = pods.clone();
                async move {
                    let Ok(map) = map else { return };
                    let decl = map.labels().get(DECLARATION_LABEL).cloned().unwrap_or_default();
                    let revision = map.annotations().get(REVISION_ANNOTATION).cloned().unwrap_or_default();
                    let name = format!("member-{}", decl.trim_start_matches("d-"));
                    let _ = acknowledge(&pods, &name, &revision).await;
                }
            })
            .await;
    })
}
