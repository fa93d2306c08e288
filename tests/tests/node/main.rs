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

mod agents;
mod audit;
mod health;
mod operator;
mod workloads;

use agents::agents_in_member_pods_carry_the_conversion_with_no_failed_call;
use audit::only_the_lease_holder_ever_wrote;
use health::monitored_upgrades_roll_back_hold_and_resume_with_no_failed_member_call;
use operator::{
    a_rolling_replacement_of_the_operator_mid_conversion_completes_with_one_writer,
    an_operator_pod_killed_and_a_kubelet_restarted_mid_conversion_lose_and_repeat_nothing,
    kube_apiserver_outages_mid_conversion_lose_and_repeat_nothing,
};
use workloads::{deleting_a_declaration_collects_its_outputs_and_no_user_secret, workload_rollouts_gate_each_revision};

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
    MemberPod::new(name, DECLARATION, "member", service_ip).pod()
}

/// A member pod of `declaration`, labelled `app`, calling the members'
/// Service at `service_ip`.
pub(crate) struct MemberPod<'a> {
    name: &'a str,
    declaration: &'a str,
    app: &'a str,
    service_ip: &'a str,
    /// `--health-window` (the agent's default: 60 s).
    health_window: Option<&'a str>,
    /// Reload mode too: the agent (in the image with a shell) runs
    /// `reload.sh` from this ConfigMap after each revision.
    reload: Option<&'a str>,
}

impl<'a> MemberPod<'a> {
    pub(crate) fn new(name: &'a str, declaration: &'a str, app: &'a str, service_ip: &'a str) -> Self {
        Self {
            name,
            declaration,
            app,
            service_ip,
            health_window: None,
            reload: None,
        }
    }

    pub(crate) fn health_window(mut self, window: &'a str) -> Self {
        self.health_window = Some(window);
        self
    }

    pub(crate) fn reload(mut self, config_map: &'a str) -> Self {
        self.reload = Some(config_map);
        self
    }

    pub(crate) fn pod(&self) -> Pod {
        let Self {
            name,
            declaration,
            app,
            service_ip,
            ..
        } = self;
        let mut agent_args = String::new();
        if let Some(window) = self.health_window {
            agent_args.push_str(&format!(", --health-window, \"{window}\""));
        }
        let (image, reload_mount, reload_volume) = match self.reload {
            None => ("certshift", String::new(), String::new()),
            Some(config_map) => {
                agent_args.push_str(", --reload-exec, /etc/reload/reload.sh");
                (
                    "certshift-shell",
                    ", {name: reload, mountPath: /etc/reload, readOnly: true}".to_owned(),
                    // 493: 0755, which a YAML 1.2 parser reads as a string.
                    format!("\n  - {{name: reload, configMap: {{name: {config_map}, defaultMode: 493}}}}"),
                )
            }
        };
        yaml(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  serviceAccountName: member
  terminationGracePeriodSeconds: 1
  containers:
  - name: backend
    image: docker.io/local/busybox:1
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www']
  - name: certshift-agent
    image: docker.io/local/{image}:1
    imagePullPolicy: Never
    args: [agent, --dir, /etc/certshift, --inbound, "0.0.0.0:8443=127.0.0.1:8080",
           --outbound, "127.0.0.1:9443={service_ip}:8443", --metrics-addr, "0.0.0.0:9090"{agent_args}]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    ports: [{{containerPort: 8443, name: https}}, {{containerPort: 9090, name: agent-metrics}}]
    readinessProbe:
      httpGet: {{path: /readyz, port: 9090}}
      periodSeconds: 1
    volumeMounts: [{{name: certshift, mountPath: /etc/certshift, readOnly: true}}{reload_mount}]
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
      - secret: {{name: {declaration}-presentation}}
      - configMap: {{name: {declaration}-validation}}{reload_volume}
"#
        ))
    }
}

/// A client certshift does not manage: Debian's `curl` calling `host` (at
/// `address`) every second with the PEM files of Secret `name` (`ca.crt`,
/// `tls.crt`, `tls.key`), printing `calls=N failed=M` as the members'
/// callers do. `verify: false` is curl's `--insecure`: it takes any server.
pub(crate) fn unmanaged_client(name: &str, host: &str, address: &str, verify: bool) -> Pod {
    let insecure = if verify { "" } else { "--insecure " };
    yaml(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: unmanaged}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: caller
    image: docker.io/local/curl:1
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      calls=0; failed=0
      while true; do
        if curl -sS {insecure}--max-time 5 -o /dev/null --resolve {host}:8443:{address} --cacert /client/ca.crt \
             --cert /client/tls.crt --key /client/tls.key https://{host}:8443/; then
          calls=$((calls+1))
        else
          failed=$((failed+1))
        fi
        echo "calls=$calls failed=$failed"
        sleep 1
      done
    volumeMounts: [{{name: client, mountPath: /client, readOnly: true}}]
  volumes:
  - {{name: client, secret: {{secretName: {name}}}}}
"#
    ))
}

/// Creates a pod that runs as a ServiceAccount created just before it:
/// kube-apiserver 1.20 refuses such a pod until the token controller has
/// made the account's token ("No API token found …, retry after the token
/// is automatically created"), so that refusal is retried, for up to 60 s.
async fn create_pod(pods: &Api<Pod>, pod: &Pod) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => return,
            Err(kube::Error::Api(status))
                if status.message.contains("No API token found") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => panic!("creating pod {:?}: {err}", pod.metadata.name),
        }
    }
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

/// Whether the scenario group `name` runs: all of them, unless
/// `CERTSHIFT_NODE_SCENARIOS` (a comma-separated list of `agents`, `health`,
/// `workloads`, `restarts`) narrows them for a development loop. `make test`
/// never sets it.
fn wanted(name: &str) -> bool {
    std::env::var("CERTSHIFT_NODE_SCENARIOS").map_or(true, |list| list.split(',').any(|n| n.trim() == name))
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
        if wanted("agents") {
            agents_in_member_pods_carry_the_conversion_with_no_failed_call(&node, &admin).await;
        }
        if wanted("health") {
            monitored_upgrades_roll_back_hold_and_resume_with_no_failed_member_call(&admin).await;
        }
        if wanted("workloads") {
            let (deployment, statefulset, daemonset) = tokio::join!(
                workload_rollouts_gate_each_revision(&node, &admin, "Deployment"),
                workload_rollouts_gate_each_revision(&node, &admin, "StatefulSet"),
                workload_rollouts_gate_each_revision(&node, &admin, "DaemonSet"),
            );
            println!(
                "  node: rollouts by the controller-manager gated every revision: {deployment}; {statefulset}; {daemonset}"
            );
            deleting_a_declaration_collects_its_outputs_and_no_user_secret(&admin, "node-deployment").await;
        }
        if wanted("restarts") {
            an_operator_pod_killed_and_a_kubelet_restarted_mid_conversion_lose_and_repeat_nothing(&node, &admin).await;
            a_rolling_replacement_of_the_operator_mid_conversion_completes_with_one_writer(&node, &admin).await;
            kube_apiserver_outages_mid_conversion_lose_and_repeat_nothing(&node, &admin).await;
        }
    });
    // Three lease holders at least: the restarts replace the leader.
    if wanted("restarts") {
        only_the_lease_holder_ever_wrote(&node);
    }
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
pub(crate) async fn install_operator(admin: &Client) {
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

pub(crate) async fn operator_available(admin: &Client) {
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
pub(crate) async fn store_and_declaration(
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
