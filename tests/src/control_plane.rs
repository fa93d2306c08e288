//! A real kube-apiserver v1.20.2 and etcd on free loopback ports, with an audit
//! log, two identities (an admin for the tests, one for the operator), torn
//! down on drop.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;

pub const ADMIN_TOKEN: &str = "certshift-e2e-admin";
pub const OPERATOR_TOKEN: &str = "certshift-e2e-operator";
pub const OPERATOR_USER: &str = "certshift-operator";
/// The chart's ServiceAccount (release `certshift` in `certshift-system`).
pub const CHART_NAMESPACE: &str = "certshift-system";
pub const CHART_SERVICE_ACCOUNT: &str = "system:serviceaccount:certshift-system:certshift";
pub const CHART_TOKEN: &str = "certshift-e2e-chart-service-account";
/// An identity with no permission but what a scenario's RBAC grants it.
pub const LIMITED_TOKEN: &str = "certshift-e2e-limited";
pub const LIMITED_USER: &str = "certshift-limited";

pub struct ControlPlane {
    dir: PathBuf,
    keep: std::sync::atomic::AtomicBool,
    etcd: Child,
    apiserver: std::sync::Mutex<Child>,
    /// How kube-apiserver was started, to start it again.
    apiserver_command: (PathBuf, Vec<String>),
    pub url: String,
    /// The CA of the API server's serving certificate.
    pub ca_pem: String,
}

/// A free loopback port that no other caller in this process was given. Ports
/// are found by binding port 0 and released for the process that will bind
/// them, so concurrent scenarios (and the chaos scenario's second control
/// plane) could otherwise be handed the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if GIVEN.lock().expect("ports lock").insert(port) {
            return port;
        }
    }
}

/// The kube-apiserver binary `hack/kube-apiserver.sh` builds.
pub fn apiserver_binary() -> PathBuf {
    if let Ok(path) = std::env::var("CERTSHIFT_KUBE_APISERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var("CERTSHIFT_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache"))
            .join("certshift")
    });
    cache.join("kubernetes-v1.20.2/kube-apiserver")
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} not found at {}: run hack/kube-apiserver.sh (make test does) to install etcd and build kube-apiserver",
        path.display()
    );
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver; panics (never skips) when they are missing.
    pub fn start() -> Self {
        let apiserver_bin = apiserver_binary();
        let etcd_bin = PathBuf::from(std::env::var("CERTSHIFT_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into()));
        require(&apiserver_bin, "kube-apiserver");
        require(&etcd_bin, "etcd");
        let dir = std::env::temp_dir().join(format!("certshift-e2e-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("control plane dir");

        let (client_port, peer_port, secure_port) = (free_port(), free_port(), free_port());
        let etcd = Command::new(&etcd_bin)
            .args(["--data-dir", &dir.join("etcd").to_string_lossy()])
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client_port}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client_port}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer_port}")])
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "etcd.log"))
            .spawn()
            .expect("etcd starts");

        // The serving certificate comes from a CA of the test bed's own, so
        // clients and kubeconfigs verify the API server instead of skipping it.
        let ca = crate::pki::ca("certshift-e2e-apiserver-ca");
        let serving = crate::pki::loopback_server("kube-apiserver", &ca);
        std::fs::write(dir.join("ca.crt"), &ca.pem).expect("ca.crt");
        std::fs::write(dir.join("apiserver.crt"), &serving.pem).expect("apiserver.crt");
        std::fs::write(dir.join("apiserver.key"), serving.key.serialize_pem()).expect("apiserver.key");

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("service account key");
        std::fs::write(dir.join("sa.key"), key.serialize_pem()).expect("sa.key");
        std::fs::write(dir.join("sa.pub"), key.public_key_pem()).expect("sa.pub");
        std::fs::write(
            dir.join("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},admin,admin,\"system:masters\"\n{OPERATOR_TOKEN},{OPERATOR_USER},{OPERATOR_USER},\"system:masters\"\n\
                 {CHART_TOKEN},{CHART_SERVICE_ACCOUNT},{CHART_SERVICE_ACCOUNT},\"system:serviceaccounts,system:serviceaccounts:{CHART_NAMESPACE}\"\n\
                 {LIMITED_TOKEN},{LIMITED_USER},{LIMITED_USER}\n"
            ),
        )
        .expect("tokens.csv");
        std::fs::write(
            dir.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )
        .expect("audit policy");
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let args: Vec<String> = vec![
            format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={secure_port}"),
            format!("--tls-cert-file={}", path("apiserver.crt")),
            format!("--tls-private-key-file={}", path("apiserver.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", path("sa.pub")),
            format!("--service-account-signing-key-file={}", path("sa.key")),
            format!("--token-auth-file={}", path("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--endpoint-reconciler-type=none".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--audit-policy-file={}", path("audit-policy.yaml")),
            format!("--audit-log-path={}", path("audit.log")),
            // Never rotate: the write counts read the whole log (the default
            // rotates at 100 MB, which the benchmark's workloads exceed).
            "--audit-log-maxsize=1000000".into(),
            "--audit-log-mode=blocking".into(),
        ];
        let apiserver = spawn_apiserver(&apiserver_bin, &args, &dir);
        let plane = Self {
            dir,
            keep: std::sync::atomic::AtomicBool::new(false),
            etcd,
            apiserver: std::sync::Mutex::new(apiserver),
            apiserver_command: (apiserver_bin, args),
            url: format!("https://127.0.0.1:{secure_port}"),
            ca_pem: ca.pem,
        };
        plane.wait_ready();
        plane
    }

    fn wait_ready(&self) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(self.ready());
    }

    /// Waits until kube-apiserver answers `/readyz` (90 s at most).
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let client = self.client(ADMIN_TOKEN);
        loop {
            let request = http::Request::get("/readyz").body(Vec::new()).expect("request");
            if client.request_text(request).await.is_ok_and(|body| body.trim() == "ok") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 90s; see {}",
                self.dir.join("apiserver.log").display()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Kills kube-apiserver (etcd keeps the data), starts it again on the
    /// same port and waits until it is ready: the chaos tests' outage.
    pub async fn restart_apiserver(&self, down_for: Duration) {
        {
            let mut child = self.apiserver.lock().expect("apiserver lock");
            let _ = child.kill();
            let _ = child.wait();
        }
        tokio::time::sleep(down_for).await;
        let (bin, args) = &self.apiserver_command;
        *self.apiserver.lock().expect("apiserver lock") = spawn_apiserver(bin, args, &self.dir);
        self.ready().await;
    }

    /// Where the logs, the audit log and the data live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keep the directory after the run (a scenario failed).
    pub fn keep(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A client with `token`'s identity, verifying the API server by its CA.
    pub fn client(&self, token: &str) -> Client {
        let mut config = kube::Config::new(self.url.parse().expect("url"));
        let ca = pem::parse(&self.ca_pem).expect("CA PEM");
        config.root_cert = Some(vec![ca.into_contents()]);
        config.auth_info.token = Some(token.to_owned().into());
        config.default_namespace = "default".into();
        Client::try_from(config).expect("client")
    }

    /// Mutating requests by `user` in `namespace`, from the audit log.
    pub fn writes(&self, user: &str, namespace: &str) -> Vec<String> {
        self.requests_in(user, namespace)
            .into_iter()
            .filter(|request| {
                ["create ", "update ", "patch ", "delete "]
                    .iter()
                    .any(|verb| request.starts_with(verb))
            })
            .collect()
    }

    /// Every request by `user` on objects in `namespace` (reads included), as
    /// `verb resource/name[/subresource]`, from the audit log.
    pub fn requests_in(&self, user: &str, namespace: &str) -> Vec<String> {
        self.audit_events(user)
            .into_iter()
            .filter(|event| event["objectRef"]["namespace"] == namespace)
            .map(|event| {
                format!(
                    "{} {}/{}{}",
                    event["verb"].as_str().unwrap_or_default(),
                    event["objectRef"]["resource"].as_str().unwrap_or_default(),
                    event["objectRef"]["name"].as_str().unwrap_or_default(),
                    event["objectRef"]["subresource"]
                        .as_str()
                        .map(|s| format!("/{s}"))
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// [`Self::requests_in`], counted by verb and resource (`get secrets`,
    /// `patch observedcertificates/status`).
    pub fn requests_by_kind(&self, user: &str, namespace: &str) -> Counts {
        by_kind(self.requests_in(user, namespace))
    }

    /// [`Self::writes`], counted by verb and resource.
    pub fn writes_by_kind(&self, user: &str, namespace: &str) -> Counts {
        by_kind(self.writes(user, namespace))
    }

    /// CPU seconds (user + system) kube-apiserver and etcd have used so far.
    pub fn cpu_seconds(&self) -> (f64, f64) {
        let apiserver = self
            .apiserver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .id();
        (process_cpu_seconds(apiserver), process_cpu_seconds(self.etcd.id()))
    }

    /// The LIST requests by `user` in every namespace and of cluster-wide
    /// collections (a watch's list has no namespace when it watches all).
    pub fn lists(&self, user: &str) -> usize {
        self.audit_events(user)
            .iter()
            .filter(|event| event["verb"] == "list")
            .count()
    }

    /// Every request by `user` (reads and watches included), from the audit log.
    pub fn requests(&self, user: &str) -> usize {
        self.audit_events(user).len()
    }

    /// The audit log's completed requests by `user`.
    fn audit_events(&self, user: &str) -> Vec<serde_json::Value> {
        let log = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["stage"] == "ResponseComplete" && event["user"]["username"] == user)
            .collect()
    }

    /// A kubeconfig for the admin, for people debugging a failed run.
    pub fn write_kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("kubeconfig");
        let mut file = std::fs::File::create(&path).expect("kubeconfig");
        let _ = write!(
            file,
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\n  name: e2e\nusers:\n- name: admin\n  user: {{token: {ADMIN_TOKEN}}}\ncontexts:\n- context: {{cluster: e2e, user: admin}}\n  name: e2e\ncurrent-context: e2e\n",
            self.url,
            self.dir.join("ca.crt").display()
        );
        path
    }
}

/// Requests counted by verb and resource.
pub type Counts = std::collections::BTreeMap<String, usize>;

fn by_kind(requests: Vec<String>) -> Counts {
    let mut counts = Counts::new();
    for request in requests {
        let (verb, rest) = request.split_once(' ').unwrap_or_default();
        let mut parts = rest.split('/');
        let resource = parts.next().unwrap_or_default();
        let subresource = parts.nth(1).map(|s| format!("/{s}")).unwrap_or_default();
        *counts.entry(format!("{verb} {resource}{subresource}")).or_default() += 1;
    }
    counts
}

/// The counts `after` has beyond `before`.
pub fn difference(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The sum of the counts whose verb and resource start with `prefix`.
pub fn counted(counts: &Counts, prefix: &str) -> usize {
    counts
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`;
/// 0 once it is gone.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn spawn_apiserver(bin: &Path, args: &[String], dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("apiserver.log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("kube-apiserver starts")
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let apiserver = self
            .apiserver
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for child in [apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let keep = self.keep.load(std::sync::atomic::Ordering::SeqCst) || std::thread::panicking();
        if std::env::var_os("CERTSHIFT_KEEP_E2E").is_none() && !keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
