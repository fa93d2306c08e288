//! The agent's health signal against real TLS stacks: `openssl s_client`
//! and `openssl s_server` (TLS 1.2 and 1.3) refuse the agent's certificate
//! with real alerts, or present certificates the agent refuses, and the
//! agent counts each by side and reason; what is not a certificate's doing
//! (a TCP probe, plaintext) is not counted. Once a second revision is
//! loaded, those failures make the member unhealthy, naming the peer.
//! The Pod condition needs an API server: the end-to-end tests have it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certshift::agent::{self, Inbound, Options, Outbound, Volumes, volume};
use certshift::outputs::RulesJson;
use certshift::rules::{Accepted, Clients, CommonNameRule};
use certshift_verifier::testing::{Issued as Cert, issue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn temp(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("certshift-health-{label}-{}", std::process::id()));
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

/// Revision `revision`: present `cert`, accept CN `cluster.example` from `ca`.
fn files(revision: u64, cert: &Cert, ca: &Cert) -> BTreeMap<String, Vec<u8>> {
    let rules = RulesJson {
        revision,
        presented: Some(cert.sha1()),
        accepted: Accepted::new([], [CommonNameRule::new("cluster.example", [ca.sha1()])]),
        clients: Clients::default(),
        anchors: None,
        tolerated: Vec::new(),
    };
    BTreeMap::from([
        ("rules.json".to_owned(), serde_json::to_vec_pretty(&rules).unwrap()),
        ("ca-bundle.crt".to_owned(), ca.pem.clone().into_bytes()),
        ("tls.crt".to_owned(), cert.pem.clone().into_bytes()),
        ("tls.key".to_owned(), cert.key_pem().into_bytes()),
        ("ca.crt".to_owned(), ca.pem.clone().into_bytes()),
    ])
}

/// Writes a certificate and its key as PEM files for openssl.
fn pem_files(dir: &Path, name: &str, cert: &Cert) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&crt, &cert.pem).unwrap();
    std::fs::write(&key, cert.key_pem()).unwrap();
    (crt, key)
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

/// The value of one series in the agent's metrics, 0 when absent.
async fn metric(addr: SocketAddr, series: &str) -> u64 {
    let body = http(addr, "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_client` connecting to `addr` with `args`, its input closed:
/// it handshakes (or fails to) and leaves.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "cluster.example",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client (the test command installs openssl)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `openssl s_server` on a free port, requiring a client certificate
/// verified against `ca_file`; verification failures are fatal.
fn s_server(cert: &(PathBuf, PathBuf), ca_file: &Path, version: &str) -> (SocketAddr, Process) {
    let addr = free_addr();
    let child = Command::new("openssl")
        .args(["s_server", "-accept", &addr.port().to_string(), "-naccept", "1000"])
        .arg("-cert")
        .arg(&cert.0)
        .arg("-key")
        .arg(&cert.1)
        .arg("-CAfile")
        .arg(ca_file)
        .args(["-Verify", "1", "-verify_return_error", version, "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    (addr, Process(child))
}

/// Dials `remote` through a new outbound proxy of the agent's and says hello;
/// returns when the connection ends.
async fn call_out(listen: SocketAddr) {
    let Ok(mut tcp) = TcpStream::connect(listen).await else {
        return;
    };
    let _ = tcp.write_all(b"hello\n").await;
    let mut buffer = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buffer)).await;
}

const FAILURES: &str = "certshift_agent_certificate_failures_total";

/// Waits until `series` reaches `want`; says what was counted if it does not.
async fn counted_to(metrics_addr: SocketAddr, series: &str, want: u64, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(metrics_addr, series).await != want {
        if Instant::now() > deadline {
            let body = http(metrics_addr, "/metrics").await;
            let counted: Vec<&str> = body.lines().filter(|l| l.starts_with(FAILURES)).collect();
            panic!("{series} is not {want} ({version}); counted:\n{}", counted.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_refusal_of_a_real_tls_stack_is_counted_by_side_and_makes_the_member_unhealthy() {
    let ca = issue("Cluster CA", None, true);
    let other_ca = issue("Other CA", None, true);
    let member = issue("cluster.example", Some(&ca), false);
    let peer = issue("cluster.example", Some(&ca), false);
    let stranger = issue("cluster.example", Some(&other_ca), false);
    let dir = temp("pki");
    let (ca_file, other_ca_file) = (dir.join("ca.crt"), dir.join("other-ca.crt"));
    std::fs::write(&ca_file, &ca.pem).unwrap();
    std::fs::write(&other_ca_file, &other_ca.pem).unwrap();
    let peer_files = pem_files(&dir, "peer", &peer);
    let stranger_files = pem_files(&dir, "stranger", &stranger);

    // Servers for the outbound cases, one per TLS version and case: one that
    // refuses the agent's certificate (trusts only the other CA), one whose
    // certificate the agent refuses.
    let mut servers = Vec::new();
    let mut outbound = Vec::new();
    for version in ["-tls1_2", "-tls1_3"] {
        for (cert, trusted) in [(&peer_files, &other_ca_file), (&stranger_files, &ca_file)] {
            let (addr, process) = s_server(cert, trusted, version);
            servers.push(process);
            outbound.push(Outbound {
                listen: free_addr(),
                remote: addr.to_string(),
            });
        }
    }
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = app.local_addr().unwrap();
    let (inbound, metrics_addr) = (free_addr(), free_addr());
    let projected = temp("projected");
    volume::write_atomically(&projected, &files(1, &member, &ca)).unwrap();
    let options = Options {
        volumes: Volumes::Projected(projected.clone()),
        inbound: vec![Inbound {
            listen: inbound,
            upstream: upstream.to_string(),
        }],
        outbound: outbound.clone(),
        reload: Vec::new(),
        pod: None,
        metrics_addr: Some(metrics_addr),
        health_window: agent::DEFAULT_HEALTH_WINDOW,
        connection_drain: agent::DEFAULT_CONNECTION_DRAIN,
    };
    let agent = tokio::spawn(agent::run(options, None, std::future::pending()));
    eventually("revision 1 served", || async {
        http(metrics_addr, "/readyz").await.starts_with("HTTP/1.1 200")
    })
    .await;
    // Revision 2 (the same certificate): failures from now on are this
    // revision's, against the baseline of revision 1 (nothing failed).
    volume::write_atomically(&projected, &files(2, &member, &ca)).unwrap();
    eventually("revision 2 served", || async {
        metric(metrics_addr, "certshift_agent_revision").await == 2
    })
    .await;

    // Not a certificate's doing: a TCP probe, and plaintext HTTP.
    drop(TcpStream::connect(inbound).await.unwrap());
    let _ = http(inbound, "/").await;

    let (ca_arg, other_ca_arg) = (ca_file.to_str().unwrap(), other_ca_file.to_str().unwrap());
    let (peer_crt, peer_key) = (peer_files.0.to_str().unwrap(), peer_files.1.to_str().unwrap());
    let (stranger_crt, stranger_key) = (stranger_files.0.to_str().unwrap(), stranger_files.1.to_str().unwrap());
    for (index, version) in ["-tls1_2", "-tls1_3"].into_iter().enumerate() {
        // Inbound: a client that trusts only the other CA refuses the
        // agent's certificate.
        let out = s_client(
            inbound,
            &[
                version,
                "-CAfile",
                other_ca_arg,
                "-verify_return_error",
                "-cert",
                peer_crt,
                "-key",
                peer_key,
            ],
        );
        assert!(out.contains("verify error"), "s_client {version} refused: {out}");
        let series = format!("{FAILURES}{{direction=\"inbound\",side=\"rejected_by_peer\",reason=\"unknown_ca\"}}");
        let want = index as u64 + 1;
        counted_to(metrics_addr, &series, want, version).await;
        // Inbound: a client whose certificate the agent's rules refuse.
        s_client(
            inbound,
            &[version, "-CAfile", ca_arg, "-cert", stranger_crt, "-key", stranger_key],
        );
        let series = format!("{FAILURES}{{direction=\"inbound\",side=\"rejected_peer\",reason=\"IssuerNotPinned\"}}");
        counted_to(metrics_addr, &series, want, version).await;
        // Outbound: a server that refuses the agent's certificate (in TLS
        // 1.3 after the handshake, with its first record).
        call_out(outbound[2 * index].listen).await;
        let series = format!("{FAILURES}{{direction=\"outbound\",side=\"rejected_by_peer\",reason=\"unknown_ca\"}}");
        counted_to(metrics_addr, &series, want, version).await;
        // Outbound: a server whose certificate the agent's rules refuse.
        call_out(outbound[2 * index + 1].listen).await;
        let series = format!("{FAILURES}{{direction=\"outbound\",side=\"rejected_peer\",reason=\"IssuerNotPinned\"}}");
        counted_to(metrics_addr, &series, want, version).await;
    }
    let body = http(metrics_addr, "/metrics").await;
    let counted: u64 = body
        .lines()
        .filter(|l| l.starts_with(FAILURES))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 8, "only the eight refusals are counted:\n{body}");
    eventually(
        "the member unhealthy, a peer refusing its certificate first",
        || async {
            metric(
                metrics_addr,
                "certshift_agent_healthy{reason=\"CertificateRejectedByPeers\"}",
            )
            .await
                == 0
                && http(metrics_addr, "/metrics")
                    .await
                    .contains("certshift_agent_healthy{reason=\"CertificateRejectedByPeers\"} 0")
        },
    )
    .await;
    // Every refusal came from 127.0.0.1.
    assert_eq!(metric(metrics_addr, "certshift_agent_unhealthy_peers").await, 1);
    agent.abort();
    drop(servers);
}
