//! On a real node (`hack/node.sh`: kubelet, containerd, controller-manager,
//! scheduler, kube-proxy): certshift runs as a pod from the chart, with
//! in-cluster configuration under the chart's ServiceAccount, and its
//! members are pods with the `certshift agent` sidecar in front of a real
//! HTTP server (busybox httpd), their revisions delivered by the kubelet
//! into a projected volume. Every member calls the others through its
//! outbound proxy and the members' Service the whole time.
//!
//! The test brings the node up and down itself (`hack/node.sh`); it needs
//! root, and fails when the node cannot start.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use certshift_e2e::manifests::{Declaration, apply, observed_certificate};
use certshift_e2e::{
    apply_rendered, create_namespace, declaration, eventually, install_crds, is_true, observed_revision, pki,
    repo_path, wait_ready,
};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{LogParams, PostParams};
use kube::{Api, Client};

const NAMESPACE: &str = "node-members";
const DECLARATION: &str = "cluster";
const MEMBERS: usize = 3;

/// The node, taken down when the test ends (logs kept under `.node/run/logs`).
struct Node {
    kubeconfig: String,
}

impl Node {
    fn up() -> Self {
        // A node left up by an interrupted run goes first.
        let _ = Command::new(repo_path("hack/node.sh")).arg("down").status();
        let out = Command::new(repo_path("hack/node.sh"))
            .arg("up")
            .output()
            .expect("hack/node.sh");
        assert!(
            out.status.success(),
            "hack/node.sh up failed (the node scenarios need root, and hack/test.sh's set-up): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            kubeconfig: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }

    fn audit_log(&self) -> String {
        let dir = std::path::Path::new(&self.kubeconfig).parent().unwrap();
        std::fs::read_to_string(dir.join("logs/audit.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What a failed run needs: the pods as the API server and the
            // kubelet saw them, their containers' logs kept with the node's.
            let logs = std::path::Path::new(&self.kubeconfig).parent().unwrap().join("logs");
            for args in [
                vec!["get", "pods", "-A", "-o", "wide"],
                vec!["describe", "pods", "-n", NAMESPACE],
                vec!["get", "events", "-A"],
            ] {
                let _ = Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&self.kubeconfig)
                    .args(&args)
                    .status();
            }
            let _ = Command::new("cp")
                .arg("-r")
                .arg("/var/log/pods")
                .arg(logs.join("pods"))
                .status();
            eprintln!("node logs kept in {}", logs.display());
            if std::env::var_os("CERTSHIFT_NODE_KEEP").is_some() {
                eprintln!(
                    "CERTSHIFT_NODE_KEEP: the node is left up; KUBECONFIG={}",
                    self.kubeconfig
                );
                return;
            }
        }
        let _ = Command::new(repo_path("hack/node.sh")).arg("down").status();
    }
}

async fn client(kubeconfig: &str) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).expect("manifest")
}

/// A member: busybox httpd on loopback, the agent in front of it (inbound
/// 8443, outbound 9443 to the members' Service), and a caller that counts
/// calls through the outbound proxy once the first one succeeds.
fn member(name: &str, service_ip: &str) -> Pod {
    yaml(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: member}}
spec:
  serviceAccountName: member
  terminationGracePeriodSeconds: 1
  containers:
  - name: backend
    image: docker.io/local/busybox:1
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www']
  - name: certshift-agent
    image: docker.io/local/certshift:1
    imagePullPolicy: Never
    args: [agent, --dir, /etc/certshift, --inbound, "0.0.0.0:8443=127.0.0.1:8080",
           --outbound, "127.0.0.1:9443={service_ip}:8443", --metrics-addr, "0.0.0.0:9090"]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    ports: [{{containerPort: 8443, name: https}}, {{containerPort: 9090, name: agent-metrics}}]
    readinessProbe:
      httpGet: {{path: /readyz, port: 9090}}
      periodSeconds: 1
    volumeMounts: [{{name: certshift, mountPath: /etc/certshift, readOnly: true}}]
  - name: caller
    image: docker.io/local/busybox:1
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      # (busybox wget's own -T crashes: the timeout comes from timeout(1))
      until timeout 5 wget -q -O /dev/null http://127.0.0.1:9443/; do sleep 0.5; done
      calls=0; failed=0
      while true; do
        if timeout 5 wget -q -O /dev/null http://127.0.0.1:9443/; then calls=$((calls+1)); else failed=$((failed+1)); echo "failed call at $(date)"; fi
        echo "calls=$calls failed=$failed"
        sleep 0.2
      done
  volumes:
  - name: certshift
    projected:
      sources:
      - secret: {{name: {DECLARATION}-presentation}}
      - configMap: {{name: {DECLARATION}-validation}}
"#
    ))
}

/// The caller's last `calls=N failed=M` line.
async fn calls(pods: &Api<Pod>, name: &str) -> Option<(u64, u64)> {
    let params = LogParams {
        container: Some("caller".to_owned()),
        tail_lines: Some(20),
        ..LogParams::default()
    };
    let text = pods.logs(name, &params).await.ok()?;
    let line = text.lines().rev().find(|l| l.starts_with("calls="))?;
    let (calls, failed) = line.trim_start_matches("calls=").split_once(" failed=")?;
    Some((calls.parse().ok()?, failed.parse().ok()?))
}

/// The node's scenarios, one after another on one node and one operator
/// (a node takes about 20 s to start and as long to clean up).
#[test]
fn on_a_real_node() {
    let node = Node::up();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = client(&node.kubeconfig).await;
        install_operator(&admin).await;
        agents_in_member_pods_carry_the_conversion_with_no_failed_call(&node, &admin).await;
        let (deployment, statefulset, daemonset) = tokio::join!(
            workload_rollouts_gate_each_revision(&node, &admin, "Deployment"),
            workload_rollouts_gate_each_revision(&node, &admin, "StatefulSet"),
            workload_rollouts_gate_each_revision(&node, &admin, "DaemonSet"),
        );
        println!(
            "  node: rollouts by the controller-manager gated every revision: {deployment}; {statefulset}; {daemonset}"
        );
        deleting_a_declaration_collects_its_outputs_and_no_user_secret(&admin, "node-deployment").await;
        an_operator_pod_killed_and_a_kubelet_restarted_mid_conversion_lose_and_repeat_nothing(&node, &admin).await;
        a_rolling_replacement_of_the_operator_mid_conversion_completes_with_one_writer(&node, &admin).await;
        kube_apiserver_outages_mid_conversion_lose_and_repeat_nothing(&node, &admin).await;
    });
    only_the_lease_holder_ever_wrote(&node);
    // The egress guard stayed first through everything kube-proxy and the
    // CNI plugins added: no packet from a pod left by another interface.
    let rules = Command::new("iptables")
        .args(["-t", "mangle", "-S", "POSTROUTING"])
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&rules.stdout)
        .lines()
        .find(|l| l.starts_with("-A "))
        .map(str::to_owned);
    assert_eq!(
        first.as_deref(),
        Some("-A POSTROUTING -j CERTSHIFT-NODE-GUARD"),
        "the egress guard is first"
    );
    let counters = Command::new("iptables")
        .args(["-t", "mangle", "-L", "CERTSHIFT-NODE-GUARD", "-n", "-v", "-x"])
        .output()
        .unwrap();
    let dropped: u64 = String::from_utf8_lossy(&counters.stdout)
        .lines()
        .filter(|l| l.contains("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    println!("  node: the egress guard stayed first in mangle POSTROUTING; {dropped} packets dropped by it");
}

/// The operator: the chart as rendered for the node (local image, leader
/// election), running as a pod.
async fn install_operator(admin: &Client) {
    install_crds(admin).await;
    // The chart binds the agent role in the members' namespace.
    for ns in ["certshift-system", NAMESPACE] {
        create_namespace(admin, ns).await;
    }
    let rendered = std::fs::read_to_string(
        std::env::var("CERTSHIFT_CHART_RENDERED")
            .map(|p| std::path::PathBuf::from(p).with_file_name("node.yaml"))
            .unwrap_or_else(|_| repo_path("target/chart/node.yaml")),
    )
    .expect("the chart rendered for the node: hack/chart.sh");
    apply_rendered(admin, &rendered).await;
    operator_available(admin).await;
}

async fn operator_available(admin: &Client) {
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "certshift-system");
    eventually(
        "the operator's Deployment available",
        Duration::from_secs(120),
        || async {
            let d = deployments.get("certshift").await.ok()?;
            let status = d.status?;
            (status.available_replicas? >= 1 && status.unavailable_replicas.unwrap_or(0) == 0).then_some(())
        },
    )
    .await;
}

/// The store (an old self-signed certificate and the goal from a CA) and a
/// declaration by thumbprint of the old one, with `members`.
async fn store_and_declaration(
    admin: &Client,
    ns: &str,
    members: impl FnOnce(Declaration) -> Declaration,
) -> (Declaration, pki::Issued, pki::Issued) {
    let (old_ca, ca) = (pki::ca("old CA"), pki::ca("node CA"));
    let (old, goal) = (
        pki::leaf("old.example", -20, &old_ca),
        pki::leaf("cluster.example", -10, &ca),
    );
    for (name, cert, issuer) in [("cluster-old", &old, &old_ca), ("cluster-cn", &goal, &ca)] {
        apply(admin, ns, &pki::tls_secret(name, cert, issuer)).await;
        apply(admin, ns, &observed_certificate(name, name, None)).await;
    }
    let declared = members(
        Declaration::example("declaration-thumbprint.yaml")
            .by_thumbprint(&old.thumbprint)
            .min_soak("0s"),
    );
    declared.apply(admin, ns).await;
    (declared, goal, ca)
}

async fn agents_in_member_pods_carry_the_conversion_with_no_failed_call(node: &Node, admin: &Client) {
    let started = Instant::now();
    let admin = admin.clone();
    // (The namespace is the operator's install's: the chart binds the agent role there.)
    // The store and the declaration by thumbprint; members select by label.
    let (declared, goal, ca) = store_and_declaration(&admin, NAMESPACE, |d| d.pod_members(&[("app", "member")])).await;
    wait_ready(&admin, NAMESPACE, DECLARATION, Duration::from_secs(60)).await;

    // The members: their ServiceAccount (bound to the chart's agent role), a
    // Service in front of their inbound proxies, and the pods.
    let services: Api<Service> = Api::namespaced(admin.clone(), NAMESPACE);
    apply(
        &admin,
        NAMESPACE,
        &yaml::<k8s_openapi::api::core::v1::ServiceAccount>("metadata: {name: member}"),
    )
    .await;
    let service: Service = yaml(
        "metadata: {name: members}\nspec: {selector: {app: member}, ports: [{name: https, port: 8443, targetPort: 8443}]}",
    );
    let _ = services.create(&PostParams::default(), &service).await;
    let service_ip = services.get("members").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("member-{i}")).collect();
    for name in &names {
        pods.create(&PostParams::default(), &member(name, &service_ip))
            .await
            .unwrap();
    }
    eventually("the members Ready and calling", Duration::from_secs(120), || async {
        for name in &names {
            let pod = pods.get(name).await.ok()?;
            let ready = pod
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !ready || calls(&pods, name).await?.0 == 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let first = declaration(&admin, NAMESPACE, DECLARATION)
        .await
        .status
        .unwrap()
        .upgrade
        .unwrap()
        .revision;
    eventually(
        "the members acknowledge the first revision themselves",
        Duration::from_secs(60),
        || async {
            for name in &names {
                (observed_revision(&pods.get(name).await.ok()?)? >= first).then_some(())?;
            }
            Some(())
        },
    )
    .await;

    // The conversion, carried by kubelet-delivered volumes and the agents.
    let converting = Instant::now();
    declared
        .clone()
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .apply(&admin, NAMESPACE)
        .await;
    let revision = eventually(
        "the conversion Ready, acknowledged by every member",
        Duration::from_secs(240),
        || async {
            let d = declaration(&admin, NAMESPACE, DECLARATION).await;
            let status = d.status.clone()?;
            let revision = status.upgrade.as_ref()?.revision;
            let converted = is_true(&d, "Ready")
                && status.declared_by.as_deref() == Some("CommonName")
                && status.presenting.as_ref()?.thumbprint == goal.thumbprint;
            for name in &names {
                (observed_revision(&pods.get(name).await.ok()?)? == revision).then_some(())?;
            }
            converted.then_some(revision)
        },
    )
    .await;
    let conversion = converting.elapsed();

    // No member call failed; each member made calls throughout.
    let mut total = 0;
    let mut failures = BTreeMap::new();
    for name in &names {
        let (made, failed) = calls(&pods, name).await.expect("the caller's count");
        total += made;
        if failed > 0 {
            failures.insert(name.clone(), failed);
        }
    }
    assert!(failures.is_empty(), "failed calls between members: {failures:?}");

    // Who wrote what: the members acknowledged themselves, the operator ran
    // as the chart's ServiceAccount.
    let audit = node.audit_log();
    let writers = |resource: &str, verb: &str| -> Vec<String> {
        let mut users: Vec<String> = audit
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|e| {
                e["objectRef"]["resource"] == resource
                    && e["objectRef"]["namespace"] == NAMESPACE
                    && e["objectRef"]["subresource"].is_null()
                    && e["verb"] == verb
                    && e["stage"] == "ResponseComplete"
            })
            .filter_map(|e| e["user"]["username"].as_str().map(str::to_owned))
            .collect();
        users.sort();
        users.dedup();
        users
    };
    assert_eq!(
        writers("pods", "patch"),
        vec![format!("system:serviceaccount:{NAMESPACE}:member")],
        "pods (not their status, which the kubelet writes) are patched by the members' agents only"
    );
    assert_eq!(
        writers("configmaps", "patch"),
        vec!["system:serviceaccount:certshift-system:certshift".to_owned()],
        "the validation ConfigMap is written by the operator's pod"
    );
    println!(
        "  node: agents: conversion to revision {revision} in {:.1}s on kubelet-delivered volumes, {total} calls between {MEMBERS} member pods, 0 failed; scenario {:.0}s",
        conversion.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The readiness gate of the workloads' pods: Ready only once the test has
/// seen them up for a second and released them (a readiness gate is how
/// load balancers and other controllers hold pods back), so the test knows
/// when each rollout can have completed.
const RELEASED: &str = "certshift.io/test-released";

/// A workload of `kind` named `members`: busybox pods that sleep.
fn workload(kind: &str) -> serde_json::Value {
    let template = serde_json::json!({
        "metadata": {"labels": {"app": "workload"}},
        "spec": {
            "readinessGates": [{"conditionType": RELEASED}],
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "member", "image": "docker.io/local/busybox:1", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        },
    });
    let mut spec = serde_json::json!({"selector": {"matchLabels": {"app": "workload"}}, "template": template});
    match kind {
        "Deployment" => spec["replicas"] = 2.into(),
        "StatefulSet" => {
            spec["replicas"] = 2.into();
            spec["serviceName"] = "members".into();
            spec["podManagementPolicy"] = "Parallel".into();
        }
        _ => {}
    }
    serde_json::json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "members"}, "spec": spec})
}

/// How many pod templates the workload's controller has rolled out: its
/// ReplicaSets, or its ControllerRevisions.
async fn templates_rolled_out(admin: &Client, ns: &str, kind: &str) -> usize {
    let params = kube::api::ListParams::default().labels("app=workload");
    if kind == "Deployment" {
        let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(admin.clone(), ns);
        sets.list(&params).await.map_or(0, |l| l.items.len())
    } else {
        let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> = Api::namespaced(admin.clone(), ns);
        revisions.list(&params).await.map_or(0, |l| l.items.len())
    }
}

/// Releases the workload pods of `ns` (their readiness gate) a second after
/// their containers are ready, until the task is aborted; records, for each
/// stamped revision, when its last pod was released.
fn release_pods(admin: &Client, ns: &str) -> (tokio::task::JoinHandle<()>, Arc<StdMutex<BTreeMap<u64, Timestamp>>>) {
    let released: Arc<StdMutex<BTreeMap<u64, Timestamp>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let record = released.clone();
    let task = tokio::spawn(async move {
        let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
        loop {
            let listed = pods
                .list(&kube::api::ListParams::default().labels("app=workload"))
                .await;
            for pod in listed.map(|l| l.items).unwrap_or_default() {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let status = pod.status.clone().unwrap_or_default();
                let conditions = status.conditions.unwrap_or_default();
                let holds = |type_: &str| conditions.iter().any(|c| c.type_ == type_ && c.status == "True");
                if holds(RELEASED) || !holds("ContainersReady") || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if seen.entry(name.clone()).or_insert_with(Instant::now).elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let now = Timestamp::now();
                let patch = serde_json::json!({"status": {"conditions": [{
                    "type": RELEASED, "status": "True", "lastTransitionTime": now.to_string(),
                }]}});
                if pods
                    .patch_status(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Strategic(&patch),
                    )
                    .await
                    .is_ok()
                    && let Some(revision) = pod
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(certshift::outputs::REVISION_ANNOTATION))
                        .and_then(|r| r.parse::<u64>().ok())
                {
                    let mut record = record.lock().unwrap();
                    let last = record.entry(revision).or_insert(now);
                    *last = (*last).max(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (task, released)
}

/// A namespace with a workload of `kind` as the declaration's member (its
/// pods released by `release_pods`), the declaration in force by
/// thumbprint, then edited to common name.
async fn start_workload_conversion(admin: &Client, ns: &str, kind: &str) -> WorkloadConversion {
    create_namespace(admin, ns).await;
    let (releaser, released) = release_pods(admin, ns);
    let dynamic = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("apps", "v1", kind));
    let workloads: Api<kube::api::DynamicObject> = Api::namespaced_with(admin.clone(), ns, &dynamic);
    let object: kube::api::DynamicObject = serde_json::from_value(workload(kind)).unwrap();
    workloads.create(&PostParams::default(), &object).await.unwrap();
    let (declared, goal, ca) = store_and_declaration(admin, ns, |d| d.workload(kind, "members")).await;
    wait_ready(admin, ns, DECLARATION, Duration::from_secs(120)).await;
    let converting = Instant::now();
    declared
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .apply(admin, ns)
        .await;
    WorkloadConversion {
        workloads,
        goal,
        converting,
        releaser,
        released,
    }
}

struct WorkloadConversion {
    workloads: Api<kube::api::DynamicObject>,
    goal: pki::Issued,
    /// When the declaration was edited to common name.
    converting: Instant,
    releaser: tokio::task::JoinHandle<()>,
    released: Arc<StdMutex<BTreeMap<u64, Timestamp>>>,
}

/// Waits until the declaration in `ns` has published `revision`.
async fn published(admin: &Client, ns: &str, revision: u64) {
    eventually(
        &format!("{ns}: revision {revision} published"),
        Duration::from_secs(180),
        || async {
            let d = declaration(admin, ns, DECLARATION).await;
            (d.status?.upgrade?.revision >= revision).then_some(())
        },
    )
    .await;
}

/// Waits until the declaration in `ns` is Ready by common name, presenting
/// `goal`; returns its revision.
async fn converted(admin: &Client, ns: &str, goal: &pki::Issued, what: &str) -> u64 {
    eventually(what, Duration::from_secs(300), || async {
        let d = declaration(admin, ns, DECLARATION).await;
        let status = d.status.clone()?;
        (is_true(&d, "Ready")
            && status.declared_by.as_deref() == Some("CommonName")
            && status.presenting.as_ref()?.thumbprint == goal.thumbprint)
            .then_some(status.upgrade?.revision)
    })
    .await
}

/// A declaration whose member is a workload: each revision is stamped on
/// its pod template and gates on the real controller-manager rolling it
/// out. Returns a line for the summary.
async fn workload_rollouts_gate_each_revision(node: &Node, admin: &Client, kind: &str) -> String {
    let ns = format!("node-{}", kind.to_ascii_lowercase());
    let WorkloadConversion {
        workloads,
        goal,
        converting,
        releaser,
        released,
    } = start_workload_conversion(admin, &ns, kind).await;
    let revision = converted(admin, &ns, &goal, &format!("the {kind}'s conversion Ready")).await;
    // Every revision was a rollout the controller-manager made (the
    // template before the first stamp, then one per revision), and the
    // last one is complete.
    let live = workloads.get("members").await.unwrap();
    let stamped = live.data["spec"]["template"]["metadata"]["annotations"][certshift::outputs::REVISION_ANNOTATION]
        .as_str()
        .map(str::to_owned);
    assert_eq!(
        stamped,
        Some(revision.to_string()),
        "{kind}: the template carries the last revision"
    );
    let status = &live.data["status"];
    let complete = match kind {
        "DaemonSet" => {
            status["updatedNumberScheduled"] == status["desiredNumberScheduled"]
                && status["numberReady"] == status["desiredNumberScheduled"]
        }
        _ => status["updatedReplicas"] == 2 && status["readyReplicas"] == 2,
    };
    assert!(complete, "{kind}: the last rollout is complete: {status}");
    let templates = templates_rolled_out(admin, &ns, kind).await;
    assert_eq!(
        templates,
        revision as usize + 1,
        "{kind}: one rollout per revision, after the unstamped template"
    );
    // Each revision was published only after the previous one's rollout
    // could complete: after its last pod was released.
    releaser.abort();
    let released = released.lock().unwrap().clone();
    let published = published_once(node, &ns, revision, kind);
    for r in 1..revision {
        let rolled_out = released.get(&r).unwrap_or_else(|| {
            panic!(
                "{kind}: no pod of revision {r} was ever released, yet {} was published",
                r + 1
            )
        });
        let next = published[r as usize].at;
        assert!(
            next > *rolled_out,
            "{kind}: revision {} published at {next}, before the rollout of {r} could complete ({rolled_out})",
            r + 1
        );
    }
    format!(
        "{kind} {} revisions in {:.1}s",
        revision,
        converting.elapsed().as_secs_f64()
    )
}

/// Outputs are owned by their declaration: the garbage collector removes
/// them with it; the user's Secrets (the store's sources) stay.
async fn deleting_a_declaration_collects_its_outputs_and_no_user_secret(admin: &Client, ns: &str) {
    let declarations: Api<certshift::crd::ClusterCertificateDeclaration> = Api::namespaced(admin.clone(), ns);
    declarations
        .delete(DECLARATION, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), ns);
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), ns);
    eventually("the outputs collected", Duration::from_secs(60), || async {
        let presentation = secrets.get_opt(&format!("{DECLARATION}-presentation")).await.ok()?;
        let validation = maps.get_opt(&format!("{DECLARATION}-validation")).await.ok()?;
        (presentation.is_none() && validation.is_none()).then_some(())
    })
    .await;
    for name in ["cluster-old", "cluster-cn"] {
        assert!(
            secrets.get_opt(name).await.unwrap().is_some(),
            "the user's Secret {name} stays"
        );
    }
    println!(
        "  node: deleting the declaration: its outputs collected by the garbage collector, the user's Secrets kept"
    );
}

/// Mid-conversion the operator's pod is killed and the kubelet restarted:
/// the new pod takes over (leader election) and every revision is
/// published once, none lost and none repeated (audit log).
async fn an_operator_pod_killed_and_a_kubelet_restarted_mid_conversion_lose_and_repeat_nothing(
    node: &Node,
    admin: &Client,
) {
    let ns = "node-restart";
    let WorkloadConversion { goal, releaser, .. } = start_workload_conversion(admin, ns, "Deployment").await;
    published(admin, ns, 3).await;
    let operators: Api<Pod> = Api::namespaced(admin.clone(), "certshift-system");
    let killed: Vec<String> = operators
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    for name in &killed {
        operators
            .delete(
                name,
                &kube::api::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let restarted = Command::new(repo_path("hack/node.sh"))
        .arg("restart-kubelet")
        .status()
        .unwrap();
    assert!(restarted.success(), "hack/node.sh restart-kubelet");
    operator_available(admin).await;
    let revision = converted(admin, ns, &goal, "the conversion Ready after the restarts").await;
    let published = published_once(node, ns, revision, "after the restarts");
    assert!(
        published
            .iter()
            .all(|w| w.user == "system:serviceaccount:certshift-system:certshift"),
        "{published:?}"
    );
    releaser.abort();
    println!(
        "  node: operator pod {killed:?} killed and the kubelet restarted at revision 3: the conversion reached revision {revision}, each published once"
    );
}

/// Mid-conversion kube-apiserver goes away twice for longer than the
/// leader can go without renewing its lease (two thirds of 15 s): the
/// leader gives up and stops, its container is restarted, and after each
/// outage one replica takes the lease and the conversion goes on; every
/// revision is published once and both replicas end Ready.
async fn kube_apiserver_outages_mid_conversion_lose_and_repeat_nothing(node: &Node, admin: &Client) {
    let ns = "node-apiserver";
    let WorkloadConversion { goal, releaser, .. } = start_workload_conversion(admin, ns, "Deployment").await;
    for (revision, outage) in [(2, 15), (4, 20)] {
        published(admin, ns, revision).await;
        let restarted = tokio::process::Command::new(repo_path("hack/node.sh"))
            .args(["restart-apiserver", &outage.to_string()])
            .status()
            .await
            .unwrap();
        assert!(restarted.success(), "hack/node.sh restart-apiserver");
    }
    let revision = converted(admin, ns, &goal, "the conversion Ready after two API server outages").await;
    published_once(node, ns, revision, "across the outages");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "certshift-system");
    eventually("both operator replicas Ready", Duration::from_secs(180), || async {
        let status = deployments.get("certshift").await.ok()?.status?;
        (status.ready_replicas? == 2).then_some(())
    })
    .await;
    releaser.abort();
    println!(
        "  node: kube-apiserver down 15 s at revision 2 and 20 s at revision 4: the conversion reached revision {revision}, each published once; both replicas Ready"
    );
}

/// Over the whole run (pods killed, the kubelet and kube-apiserver
/// restarted, the Deployment rolled): every write by the operator's
/// ServiceAccount came from the pod (source IP) that had written the leader
/// Lease last — acquired or renewed it — before the write was received.
/// The replicas share the ServiceAccount; the audit log tells them apart by
/// their pod addresses.
fn only_the_lease_holder_ever_wrote(node: &Node) {
    let sa = "system:serviceaccount:certshift-system:certshift";
    let mut events: Vec<(Timestamp, bool, String, String)> = node
        .audit_log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["user"]["username"] == sa
                && ["create", "update", "patch", "delete"].contains(&e["verb"].as_str().unwrap_or_default())
                && e["responseStatus"]["code"].as_u64().is_some_and(|c| c < 300)
        })
        .filter_map(|e| {
            let lease = e["objectRef"]["resource"] == "leases";
            // A lease write counts from when it took effect, any other from
            // when it was received.
            let at = if lease {
                &e["stageTimestamp"]
            } else {
                &e["requestReceivedTimestamp"]
            };
            let what = format!(
                "{} {}/{}/{}",
                e["verb"].as_str()?,
                e["objectRef"]["resource"].as_str()?,
                e["objectRef"]["namespace"].as_str().unwrap_or_default(),
                e["objectRef"]["name"].as_str().unwrap_or_default()
            );
            Some((
                at.as_str()?.parse().ok()?,
                lease,
                e["sourceIPs"][0].as_str()?.to_owned(),
                what,
            ))
        })
        .collect();
    events.sort_by_key(|(at, lease, ..)| (*at, !lease));
    let mut holder: Option<&str> = None;
    let (mut writes, mut holders) = (0, std::collections::BTreeSet::new());
    for (at, lease, ip, what) in &events {
        if *lease {
            holder = Some(ip);
            holders.insert(ip.clone());
        } else {
            writes += 1;
            assert_eq!(
                holder,
                Some(ip.as_str()),
                "{what} at {at} from {ip}, while the lease was last written by {holder:?}"
            );
        }
    }
    assert!(writes > 100 && holders.len() >= 3, "{writes} writes by {holders:?}");
    println!(
        "  node: {writes} writes by the operator, each from the pod holding the lease ({} holders over the run)",
        holders.len()
    );
}

/// A successful write of a declaration's validation ConfigMap, as the
/// audit log has it.
#[derive(Debug)]
struct ValidationWrite {
    user: String,
    /// When it completed (server time).
    at: Timestamp,
}

/// The validation ConfigMap writes of `ns`, asserted to be one per revision
/// up to `revision` (none lost, none repeated, whichever replica led).
fn published_once(node: &Node, ns: &str, revision: u64, when: &str) -> Vec<ValidationWrite> {
    let published = validation_writes(node, ns);
    assert_eq!(
        published.len() as u64,
        revision,
        "{ns} {when}: one write of the validation ConfigMap per revision: {published:?}"
    );
    published
}

/// The validation ConfigMap writes of `ns`, in order: each revision's
/// publication is one (by whichever replica leads), so the k-th is
/// revision k's.
fn validation_writes(node: &Node, ns: &str) -> Vec<ValidationWrite> {
    node.audit_log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| {
            e["objectRef"]["resource"] == "configmaps"
                && e["objectRef"]["namespace"] == ns
                && e["objectRef"]["name"] == format!("{DECLARATION}-validation")
                && e["verb"] == "patch"
                && e["stage"] == "ResponseComplete"
                && e["responseStatus"]["code"].as_u64().is_some_and(|c| c < 300)
        })
        .filter_map(|e| {
            Some(ValidationWrite {
                user: e["user"]["username"].as_str()?.to_owned(),
                at: e["stageTimestamp"].as_str()?.parse().ok()?,
            })
        })
        .collect()
}

/// Mid-conversion the operator's Deployment (two replicas, leader
/// election) is rolled as `helm upgrade` or `kubectl rollout restart` rolls
/// it: the rollout completes (a standby is Ready), the leader hands over,
/// and every revision is published once.
async fn a_rolling_replacement_of_the_operator_mid_conversion_completes_with_one_writer(node: &Node, admin: &Client) {
    let ns = "node-upgrade";
    let WorkloadConversion { goal, releaser, .. } = start_workload_conversion(admin, ns, "Deployment").await;
    published(admin, ns, 2).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "certshift-system");
    let restart = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": jiff::Timestamp::now().to_string()
    }}}}});
    let rolled = deployments
        .patch(
            "certshift",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&restart),
        )
        .await
        .unwrap();
    let generation = rolled.metadata.generation.unwrap_or_default();
    let rolling = Instant::now();
    eventually("the operator's rollout complete", Duration::from_secs(180), || async {
        let d = deployments.get("certshift").await.ok()?;
        let status = d.status?;
        (status.observed_generation? >= generation
            && status.updated_replicas? == 2
            && status.available_replicas? == 2
            && status.replicas? == 2)
            .then_some(())
    })
    .await;
    let rollout = rolling.elapsed();
    let revision = converted(admin, ns, &goal, "the conversion Ready after the rollout").await;
    published_once(node, ns, revision, "across the handover");
    releaser.abort();
    println!(
        "  node: the operator's 2 replicas rolled mid-conversion in {:.1}s; the conversion reached revision {revision}, each published once",
        rollout.as_secs_f64()
    );
}
