//! `certshift agent` in-process, following volumes written as the kubelet
//! writes them: it loads a revision when both volumes agree on it, proxies
//! by its rules (refusing what they refuse), keeps serving the last good
//! revision when a volume is corrupt, takes a new revision for new
//! handshakes without cutting established connections, and reloads the
//! application. Acknowledgements need an API server: the end-to-end tests
//! have them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certshift::agent::{self, Inbound, Options, Outbound, Reload, Volumes, volume};
use certshift::outputs::RulesJson;
use certshift::rules::{Accepted, Clients, CommonNameRule};
use certshift::thumbprint::Thumbprint;
use certshift::verifier::{Identity, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use certshift_verifier::testing::{Issued as Cert, issue};

fn temp(label: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("certshift-agent-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The validation ConfigMap's files for a revision accepting CN
/// `cluster.example` from `ca` and presenting `presented`.
fn validation(revision: u64, presented: &Cert, ca: &Cert) -> BTreeMap<String, Vec<u8>> {
    let rules = RulesJson {
        revision,
        presented: Some(presented.sha1()),
        accepted: Accepted::new([], [CommonNameRule::new("cluster.example", [ca.sha1()])]),
        clients: Clients::default(),
        anchors: None,
        tolerated: Vec::new(),
    };
    BTreeMap::from([
        ("rules.json".to_owned(), serde_json::to_vec_pretty(&rules).unwrap()),
        ("ca-bundle.crt".to_owned(), ca.pem.clone().into_bytes()),
    ])
}

fn presentation(cert: &Cert, ca: &Cert) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("tls.crt".to_owned(), cert.pem.clone().into_bytes()),
        ("tls.key".to_owned(), cert.key_pem().into_bytes()),
        ("ca.crt".to_owned(), ca.pem.clone().into_bytes()),
    ])
}

/// An application on loopback: answers each line with `app: <line>`.
async fn application() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = tcp.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    let mut reply = b"app: ".to_vec();
                    reply.extend_from_slice(&buffer[..n]);
                    if tcp.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn http(addr: SocketAddr, path: &str) -> String {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = tcp
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out).await;
    out
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client presenting `cert`, accepting servers by the rules pinned to `ca`.
fn client(cert: &Cert, ca: &Cert) -> tokio_rustls::TlsConnector {
    let files = validation(1, cert, ca);
    let verifier = Arc::new(Verifier::from_outputs(|key| files.get(key).cloned()).unwrap());
    let identity = Identity::from_pem(cert.pem.as_bytes(), cert.key_pem().as_bytes()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(verifier.client_config(&identity).unwrap()))
}

/// Connects through the inbound proxy, says `line`, returns the answer and
/// the certificate the proxy presented.
async fn call(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    line: &str,
) -> Result<(String, Thumbprint), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("cluster.example").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let presented = {
        use sha1::Digest as _;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        Thumbprint::from_digest(&sha1::Sha1::digest(leaf.as_ref()))
    };
    tls.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buffer = [0u8; 256];
    let n = tls.read(&mut buffer).await.map_err(|e| e.to_string())?;
    Ok((String::from_utf8_lossy(&buffer[..n]).into_owned(), presented))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_each_revision_both_volumes_agree_on() {
    let ca = issue("Cluster CA", None, true);
    let rogue_ca = issue("Rogue CA", None, true);
    let first = issue("cluster.example", Some(&ca), false);
    let renewal = issue("cluster.example", Some(&ca), false);
    let peer = issue("cluster.example", Some(&ca), false);
    let rogue = issue("cluster.example", Some(&rogue_ca), false);
    let (secret_dir, config_dir) = (temp("secret"), temp("configmap"));
    let app = application().await;
    let (inbound, metrics_addr) = (free_addr(), free_addr());
    let marker = temp("reload").join("reloaded");
    let options = Options {
        volumes: Volumes::Separate {
            presentation: secret_dir.clone(),
            validation: config_dir.clone(),
        },
        inbound: vec![Inbound {
            listen: inbound,
            upstream: app.to_string(),
        }],
        outbound: Vec::new(),
        reload: vec![Reload::Exec(format!(
            "echo $CERTSHIFT_REVISION >> {}",
            marker.display()
        ))],
        pod: None,
        metrics_addr: Some(metrics_addr),
        health_window: agent::DEFAULT_HEALTH_WINDOW,
        connection_drain: agent::DEFAULT_CONNECTION_DRAIN,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(options, None, async move {
        let _ = stopped.await;
    }));
    eventually("the metrics endpoint", || async {
        !http(metrics_addr, "/healthz").await.is_empty()
    })
    .await;
    let readyz = http(metrics_addr, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "nothing loaded yet: {readyz}");
    assert!(
        readyz.contains("not ready: no revision loaded yet: "),
        "says why: {readyz}"
    );

    // Revision 1: the Secret lands first, then the ConfigMap. Until the
    // ConfigMap lands, /readyz says what the agent waits for.
    volume::write_atomically(&secret_dir, &presentation(&first, &ca)).unwrap();
    eventually("/readyz naming the missing half", || async {
        let readyz = http(metrics_addr, "/readyz").await;
        readyz.starts_with("HTTP/1.1 503") && readyz.contains("rules.json")
    })
    .await;
    volume::write_atomically(&config_dir, &validation(1, &first, &ca)).unwrap();
    eventually("revision 1 served", || async {
        http(metrics_addr, "/readyz").await.starts_with("HTTP/1.1 200")
    })
    .await;
    let member = client(&peer, &ca);
    let (answer, presented) = call(&member, inbound, "hello").await.expect("a member is admitted");
    assert_eq!((answer.as_str(), presented), ("app: hello", first.sha1()));
    // The rogue member trusts the cluster's CA, and presents a certificate from its own.
    let refused = call(&client(&rogue, &ca), inbound, "hello").await;
    assert!(
        refused.is_err(),
        "a certificate from an unpinned CA is refused: {refused:?}"
    );
    eventually("the refusal counted", || async {
        http(metrics_addr, "/metrics")
            .await
            .contains("certshift_agent_handshakes_total{direction=\"inbound\",result=\"IssuerNotPinned\"} 1")
    })
    .await;

    // A connection established under revision 1 stays up across revision 2.
    let tcp = TcpStream::connect(inbound).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("cluster.example").unwrap();
    let mut established = member.connect(name, tcp).await.unwrap();

    // A corrupt ConfigMap at revision 2: revision 1 keeps serving.
    let mut corrupt = validation(2, &renewal, &ca);
    corrupt.insert("rules.json".to_owned(), b"{\"revision\": 2, not json".to_vec());
    volume::write_atomically(&config_dir, &corrupt).unwrap();
    eventually("the corrupt volume counted", || async {
        http(metrics_addr, "/metrics")
            .await
            .contains("certshift_agent_load_errors_total{reason=\"InvalidRules\"}")
    })
    .await;
    assert_eq!(call(&member, inbound, "still").await.unwrap().1, first.sha1());

    // Revision 2 presents the renewal: the ConfigMap first, the Secret later.
    volume::write_atomically(&config_dir, &validation(2, &renewal, &ca)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call(&member, inbound, "waiting").await.unwrap().1,
        first.sha1(),
        "the volumes disagree: revision 1 serves on"
    );
    volume::write_atomically(&secret_dir, &presentation(&renewal, &ca)).unwrap();
    eventually("revision 2 served", || async {
        call(&member, inbound, "new")
            .await
            .is_ok_and(|(_, p)| p == renewal.sha1())
    })
    .await;
    established.write_all(b"old").await.unwrap();
    let mut buffer = [0u8; 64];
    let n = established.read(&mut buffer).await.unwrap();
    assert_eq!(&buffer[..n], b"app: old", "the established connection was not cut");
    let reloads = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        reloads.lines().collect::<Vec<_>>(),
        ["1", "2"],
        "one reload per revision"
    );
    let metrics = http(metrics_addr, "/metrics").await;
    assert!(metrics.contains("certshift_agent_revision 2"), "{metrics}");

    // An older revision is kept out.
    volume::write_atomically(&config_dir, &validation(1, &renewal, &ca)).unwrap();
    eventually("the older revision counted", || async {
        http(metrics_addr, "/metrics")
            .await
            .contains("certshift_agent_load_errors_total{reason=\"OlderRevision\"}")
    })
    .await;
    assert_eq!(call(&member, inbound, "x").await.unwrap().1, renewal.sha1());
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
    for dir in [secret_dir, config_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Two agents in one projected-volume layout each: an application dials its
/// outbound proxy in plaintext and reaches the other member's application
/// through mutual TLS by the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_call_each_other_through_their_proxies() {
    let ca = issue("Cluster CA", None, true);
    let (a, b) = (
        issue("cluster.example", Some(&ca), false),
        issue("cluster.example", Some(&ca), false),
    );
    let app_b = application().await;
    let (inbound_b, outbound_a) = (free_addr(), free_addr());
    let start = |cert: &Cert, inbound: Vec<Inbound>, outbound: Vec<Outbound>| {
        let dir = temp("projected");
        let mut files = presentation(cert, &ca);
        files.extend(validation(1, cert, &ca));
        volume::write_atomically(&dir, &files).unwrap();
        let options = Options {
            volumes: Volumes::Projected(dir),
            inbound,
            outbound,
            reload: Vec::new(),
            pod: None,
            metrics_addr: None,
            health_window: agent::DEFAULT_HEALTH_WINDOW,
            connection_drain: agent::DEFAULT_CONNECTION_DRAIN,
        };
        tokio::spawn(agent::run(options, None, std::future::pending()))
    };
    let agent_b = start(
        &b,
        vec![Inbound {
            listen: inbound_b,
            upstream: app_b.to_string(),
        }],
        Vec::new(),
    );
    let agent_a = start(
        &a,
        Vec::new(),
        vec![Outbound {
            listen: outbound_a,
            remote: format!("127.0.0.1:{}", inbound_b.port()),
        }],
    );
    let mut reply = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while reply.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = ping(outbound_a).await;
    }
    assert_eq!(reply.as_deref(), Some("app: ping"));
    agent_a.abort();
    agent_b.abort();
}

async fn ping(addr: SocketAddr) -> Option<String> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    tcp.write_all(b"ping").await.ok()?;
    let mut buffer = [0u8; 64];
    let n = tcp.read(&mut buffer).await.ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// A revision accepting `accepted` by thumbprint (chains built to `ca`),
/// presenting `presented`, with `crls` in force.
fn by_thumbprints(
    revision: u64,
    presented: &Cert,
    accepted: &[&Cert],
    ca: &Cert,
    crls: Option<String>,
) -> BTreeMap<String, Vec<u8>> {
    let rules = RulesJson {
        revision,
        presented: Some(presented.sha1()),
        accepted: Accepted::new(accepted.iter().map(|c| c.sha1()), []),
        clients: Clients::default(),
        anchors: None,
        tolerated: Vec::new(),
    };
    let mut files = BTreeMap::from([
        ("rules.json".to_owned(), serde_json::to_vec_pretty(&rules).unwrap()),
        ("ca-bundle.crt".to_owned(), ca.pem.clone().into_bytes()),
    ]);
    if let Some(crls) = crls {
        files.insert("crls.pem".to_owned(), crls.into_bytes());
    }
    files
}

/// `openssl s_client` holding one connection open through the inbound
/// proxy, presenting `cert`; what the application answers comes back on
/// its standard output.
struct Held {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Held {
    fn open(addr: SocketAddr, cert: &Cert, dir: &std::path::Path, label: &str) -> Self {
        use std::io::BufRead as _;
        let (crt, key) = (dir.join(format!("{label}.crt")), dir.join(format!("{label}.key")));
        std::fs::write(&crt, &cert.pem).unwrap();
        std::fs::write(&key, cert.key_pem()).unwrap();
        let mut child = std::process::Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &addr.to_string()])
            .arg("-cert")
            .arg(&crt)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl (hack/test.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, stdin, lines }
    }

    /// Says `line` on the held connection; what the application echoed (it
    /// answers each chunk it reads with `app: <chunk>`, and the line may
    /// come in two).
    fn say(&mut self, line: &str) -> Option<String> {
        use std::io::Write as _;
        writeln!(self.stdin, "{line}").ok()?;
        self.stdin.flush().ok()?;
        let answer = self.lines.recv_timeout(Duration::from_secs(5)).ok()?;
        answer.starts_with("app: ").then(|| answer.replace("app: ", ""))
    }

    /// Whether s_client has ended: the agent closed the connection.
    fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Established connections are judged again by each revision loaded: those
/// whose peer it refuses — a certificate revoked by a CRL, a thumbprint no
/// longer declared — are closed after the drain and counted; a peer still
/// admitted keeps its connection through the widening, the presentation
/// change and the narrowing. The peers are `openssl s_client` holding one
/// connection each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_connections_of_peers_a_new_revision_refuses_are_closed_after_the_drain() {
    let ca = issue("Cluster CA", None, true);
    let (first, renewal) = (
        issue("cluster.example", Some(&ca), false),
        issue("cluster.example", Some(&ca), false),
    );
    let [kept, dropped, revoked] =
        ["kept", "dropped", "revoked"].map(|n| issue(&format!("{n}.example"), Some(&ca), false));
    let (dir, app) = (temp("drain"), application().await);
    let (inbound, metrics_addr) = (free_addr(), free_addr());
    let write = |files: BTreeMap<String, Vec<u8>>, presented: &Cert| {
        let mut files = files;
        files.extend(presentation(presented, &ca));
        volume::write_atomically(&dir, &files).unwrap();
    };
    let everyone = [&first, &kept, &dropped, &revoked];
    write(by_thumbprints(1, &first, &everyone, &ca, None), &first);
    let options = Options {
        volumes: Volumes::Projected(dir.clone()),
        inbound: vec![Inbound {
            listen: inbound,
            upstream: app.to_string(),
        }],
        outbound: Vec::new(),
        reload: Vec::new(),
        pod: None,
        metrics_addr: Some(metrics_addr),
        health_window: agent::DEFAULT_HEALTH_WINDOW,
        connection_drain: Duration::from_secs(3),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(options, None, async move {
        let _ = stopped.await;
    }));
    eventually("revision 1 served", || async {
        http(metrics_addr, "/readyz").await.starts_with("HTTP/1.1 200")
    })
    .await;
    let keys = temp("drain-keys");
    let mut held: Vec<(&str, Held)> = [("kept", &kept), ("dropped", &dropped), ("revoked", &revoked)]
        .into_iter()
        .map(|(label, cert)| (label, Held::open(inbound, cert, &keys, label)))
        .collect();
    for (label, peer) in &mut held {
        assert_eq!(peer.say(label).as_deref(), Some(*label), "{label} connected");
    }
    let served = |revision: u64| async move {
        http(metrics_addr, "/metrics")
            .await
            .contains(&format!("certshift_agent_revision {revision}\n"))
    };

    // Widen, then present the renewal: everyone is still admitted.
    let widened = [&first, &renewal, &kept, &dropped, &revoked];
    write(by_thumbprints(2, &first, &widened, &ca, None), &first);
    eventually("revision 2", || served(2)).await;
    write(by_thumbprints(3, &renewal, &widened, &ca, None), &renewal);
    eventually("revision 3", || served(3)).await;
    // Past any drain: nobody was closed.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for (label, peer) in &mut held {
        assert_eq!(
            peer.say(label).as_deref(),
            Some(*label),
            "{label} kept through revision 3"
        );
    }

    // Narrow: `dropped` is no longer declared, `revoked` is revoked by its CA.
    let crl = certshift_verifier::testing::crl(&ca, &[&revoked], 7);
    write(
        by_thumbprints(4, &renewal, &[&renewal, &kept, &revoked], &ca, Some(crl)),
        &renewal,
    );
    eventually("revision 4", || served(4)).await;
    // Within the drain, the refused peers' connections still carry what is under way...
    for (label, peer) in held.iter_mut().filter(|(l, _)| *l != "kept") {
        assert_eq!(peer.say("draining").as_deref(), Some("draining"), "{label} drains");
    }
    // ...then they are closed; the admitted peer's is not.
    for (label, peer) in held.iter_mut().filter(|(l, _)| *l != "kept") {
        assert!(
            peer.closed_within(Duration::from_secs(10)),
            "{label}: closed after the drain"
        );
    }
    let (_, kept_peer) = held.iter_mut().find(|(l, _)| *l == "kept").unwrap();
    assert!(
        !kept_peer.closed_within(Duration::from_secs(1)),
        "the admitted peer keeps its connection"
    );
    assert_eq!(kept_peer.say("still").as_deref(), Some("still"));
    let closed = |reason: &str| {
        format!("certshift_agent_connections_closed_total{{direction=\"inbound\",reason=\"{reason}\"}} 1")
    };
    let metrics = http(metrics_addr, "/metrics").await;
    for reason in ["CertificateNotMatched", "CertificateRevoked"] {
        assert!(metrics.contains(&closed(reason)), "{}:\n{metrics}", closed(reason));
    }
    // A revision that refuses a peer, and within the drain one that admits
    // it again (a change reverted at once): its connection stays.
    write(by_thumbprints(5, &renewal, &[&renewal], &ca, None), &renewal);
    eventually("revision 5", || served(5)).await;
    write(by_thumbprints(6, &renewal, &[&renewal, &kept], &ca, None), &renewal);
    eventually("revision 6", || served(6)).await;
    let (_, kept_peer) = held.iter_mut().find(|(l, _)| *l == "kept").unwrap();
    assert!(
        !kept_peer.closed_within(Duration::from_secs(4)),
        "admitted again within the drain: kept"
    );
    assert_eq!(kept_peer.say("again").as_deref(), Some("again"));
    let metrics = http(metrics_addr, "/metrics").await;
    assert!(
        metrics.contains(&closed("CertificateNotMatched")),
        "not counted again:\n{metrics}"
    );
    drop(held);
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
    for d in [dir, keys] {
        let _ = std::fs::remove_dir_all(d);
    }
}
