//! The agent's inbound proxy against a direct rustls server, measured in the
//! same run on the same certificates, rules and client:
//!
//! - handshakes per second: clients that each connect, complete mutual TLS,
//!   make one request and hang up, as fast as they can, for a few seconds,
//!   rounds alternating between the servers (target: the proxy ≥ 0.9×);
//! - request latency: sequential requests on one established connection,
//!   p50 and p99 (target: the proxy's p50 ≤ 1.2×);
//! - reloads under load: 100 revisions written to the agent's volume as the
//!   kubelet writes them, alternating the presented certificate, while
//!   clients keep connecting and long-lived connections keep calling
//!   (target: no failed handshake, no dropped connection);
//! - heap per idle connection: the clients live in a child process, so the
//!   counting allocator of this process sees only the servers' side; the
//!   proxy's share is the agent plus a plaintext application less that
//!   application alone.
//!
//! The application is a loopback echo of fixed-size requests; the direct
//! server is that echo behind rustls with the revision's own server
//! configuration (`Verifier::server_config`), i.e. what an application
//! that speaks the rules itself would run. A bare proxy (the same
//! configuration, a connection to the echo per client, tokio's
//! `copy_bidirectional`) is measured beside them: what being a proxy costs
//! at the least, so that the agent's own cost is the rest.
//!
//! `cargo bench -p certshift --bench agent`; `-- --check` exits 1 when a
//! target is missed (docs/performance.md has the figures).

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cap::Cap;
use certshift::agent::{self, Inbound, Options, Volumes, volume};
use certshift::outputs::RulesJson;
use certshift::rules::{Accepted, Clients, CommonNameRule};
use certshift::verifier::{Identity, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Issue 27's targets against the direct server.
const HANDSHAKE_TARGET: f64 = 0.9;
const LATENCY_TARGET: f64 = 1.2;
/// Heap per idle proxied connection against the direct server's.
const HEAP_TARGET: f64 = 1.5;
/// A request and its answer (an HTTP request line and headers' worth).
const REQUEST: usize = 256;
const CLIENTS: usize = 4;
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(2);
const REQUESTS: usize = 5_000;
const RELOADS: u64 = 100;
const LONG_LIVED: usize = 8;
const IDLE: usize = 500;

use certshift_verifier::testing::{Issued as Cert, issue};

/// A revision's files in one projected volume: CN `cluster.example` from `ca`.
fn revision(number: u64, presented: &Cert, ca: &Cert) -> BTreeMap<String, Vec<u8>> {
    let rules = RulesJson {
        revision: number,
        presented: Some(presented.sha1()),
        accepted: Accepted::new([], [CommonNameRule::new("cluster.example", [ca.sha1()])]),
        clients: Clients::default(),
        anchors: None,
        tolerated: Vec::new(),
    };
    BTreeMap::from([
        ("rules.json".to_owned(), serde_json::to_vec(&rules).unwrap()),
        ("ca-bundle.crt".to_owned(), ca.pem.clone().into_bytes()),
        ("tls.crt".to_owned(), presented.pem.clone().into_bytes()),
        ("tls.key".to_owned(), presented.key_pem().into_bytes()),
    ])
}

fn verifier(files: &BTreeMap<String, Vec<u8>>) -> Arc<Verifier> {
    Arc::new(Verifier::from_outputs(|key| files.get(key).cloned()).unwrap())
}

fn identity(files: &BTreeMap<String, Vec<u8>>) -> Identity {
    Identity::from_pem(&files["tls.crt"], &files["tls.key"]).unwrap()
}

/// Answers every `REQUEST` bytes with as many.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let mut buffer = [0u8; REQUEST];
    while stream.read_exact(&mut buffer).await.is_ok() {
        if stream.write_all(&buffer).await.is_err() {
            return;
        }
    }
}

async fn plaintext_application() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(echo(tcp));
        }
    });
    addr
}

/// Accepts mutual TLS with `config` on a loopback port and hands each
/// connection to `serve`.
async fn tls_server<F, Fut>(config: Arc<rustls::ServerConfig>, serve: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (acceptor, serve) = (TlsAcceptor::from(config), Arc::new(serve));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, serve) = (acceptor.clone(), serve.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls).await;
                }
            });
        }
    });
    addr
}

/// The application terminating mutual TLS itself, by the same rules.
async fn direct_server(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    tls_server(config, echo).await
}

/// The least any TLS-terminating proxy in front of the application does:
/// the direct server's configuration, a connection to the application per
/// client, and tokio's `copy_bidirectional` (no rules, revisions or
/// metrics). What the agent costs beyond it is the agent's own.
async fn bare_proxy(config: Arc<rustls::ServerConfig>, upstream: SocketAddr) -> SocketAddr {
    tls_server(config, move |mut tls| async move {
        let Ok(mut app) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = app.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut app).await;
    })
    .await
}

struct Agent {
    dir: PathBuf,
    inbound: SocketAddr,
    metrics: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start_agent(files: &BTreeMap<String, Vec<u8>>, upstream: SocketAddr) -> Agent {
    let dir = std::env::temp_dir().join(format!("certshift-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    volume::write_atomically(&dir, files).unwrap();
    let (inbound, metrics) = (free_addr(), free_addr());
    let options = Options {
        volumes: Volumes::Projected(dir.clone()),
        inbound: vec![Inbound {
            listen: inbound,
            upstream: upstream.to_string(),
        }],
        outbound: Vec::new(),
        reload: Vec::new(),
        pod: None,
        metrics_addr: Some(metrics),
        health_window: agent::DEFAULT_HEALTH_WINDOW,
        connection_drain: agent::DEFAULT_CONNECTION_DRAIN,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(agent::run(options, None, async move {
        let _ = stopped.await;
    }));
    let agent = Agent {
        dir,
        inbound,
        metrics,
        stop,
    };
    agent.wait_for_revision(1).await;
    agent
}

impl Agent {
    async fn served_revision(&self) -> Option<u64> {
        let mut tcp = TcpStream::connect(self.metrics).await.ok()?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("certshift_agent_revision "))
            .and_then(|n| n.trim().parse().ok())
    }

    async fn wait_for_revision(&self, revision: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.served_revision().await != Some(revision) {
            assert!(Instant::now() < deadline, "the agent never served revision {revision}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn connector(files: &BTreeMap<String, Vec<u8>>) -> TlsConnector {
    TlsConnector::from(Arc::new(verifier(files).client_config(&identity(files)).unwrap()))
}

type Client = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<Client> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("cluster.example").unwrap();
    connector.connect(name, tcp).await
}

async fn request(tls: &mut Client) -> std::io::Result<()> {
    let mut buffer = [b'x'; REQUEST];
    tls.write_all(&buffer).await?;
    tls.read_exact(&mut buffer).await?;
    Ok(())
}

/// Handshakes (each with one request) per second for `ROUND`.
async fn handshakes_per_second(connector: &TlsConnector, addr: SocketAddr) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (connector, done, stop) = (connector.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut tls = connect(&connector, addr).await.expect("handshake");
                    request(&mut tls).await.expect("request");
                    let _ = tls.shutdown().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Sequential requests on one connection to each server, in rounds that
/// alternate between them (so all see the same machine): each one's
/// (p50, p99).
async fn latencies<const N: usize>(connector: &TlsConnector, servers: [SocketAddr; N]) -> [(Duration, Duration); N] {
    let mut connections = Vec::new();
    for server in servers {
        connections.push(connect(connector, server).await.expect("handshake"));
    }
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(REQUESTS));
    for tls in &mut connections {
        for _ in 0..100 {
            request(tls).await.expect("request");
        }
    }
    for _ in 0..ROUNDS * 2 {
        for (tls, samples) in connections.iter_mut().zip(&mut samples) {
            for _ in 0..REQUESTS / (ROUNDS * 2) {
                let started = Instant::now();
                request(tls).await.expect("request");
                samples.push(started.elapsed());
            }
        }
    }
    samples.map(|mut samples| {
        samples.sort();
        (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[derive(Default)]
struct LoadTally {
    calls: AtomicU64,
    handshakes: AtomicU64,
    failed: AtomicU64,
}

/// Writes `RELOADS` revisions alternating `a` and `b` as the presented
/// certificate while clients connect and long-lived connections call;
/// returns (calls, handshakes, failures, long-lived connections alive).
async fn reloads_under_load(
    agent: &Agent,
    connector: &TlsConnector,
    a: &Cert,
    b: &Cert,
    ca: &Cert,
) -> (u64, u64, u64, usize) {
    let tally = Arc::new(LoadTally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..LONG_LIVED {
        let mut tls = connect(connector, agent.inbound).await.expect("handshake");
        let (tally, stop) = (tally.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if request(&mut tls).await.is_err() {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                tally.calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            true
        }));
    }
    for _ in 0..2 {
        let (connector, tally, stop, addr) = (connector.clone(), tally.clone(), stop.clone(), agent.inbound);
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match connect(&connector, addr).await {
                    Ok(mut tls) => {
                        tally.handshakes.fetch_add(1, Ordering::Relaxed);
                        if request(&mut tls).await.is_ok() {
                            tally.calls.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = tls.shutdown().await;
                    }
                    Err(_) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            true
        }));
    }
    for n in 2..RELOADS + 2 {
        let presented = if n % 2 == 0 { b } else { a };
        volume::write_atomically(&agent.dir, &revision(n, presented, ca)).unwrap();
        agent.wait_for_revision(n).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut alive = 0;
    for (index, worker) in workers.into_iter().enumerate() {
        if worker.await.unwrap() && index < LONG_LIVED {
            alive += 1;
        }
    }
    (
        tally.calls.load(Ordering::Relaxed),
        tally.handshakes.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        alive,
    )
}

/// Heap this process holds per connection while a child process keeps
/// `IDLE` of them open and idle (each after one request).
fn heap_per_idle_connection(client_dir: &Path, addr: SocketAddr, tls: bool) -> f64 {
    let before = settled_heap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--hold")
        .arg(client_dir)
        .arg(addr.to_string())
        .arg(if tls { "tls" } else { "plain" })
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "the client process could not open its connections"
    );
    let held = settled_heap().saturating_sub(before);
    drop(child.stdin.take());
    child.wait().unwrap();
    held as f64 / IDLE as f64
}

/// The heap once it stops moving (connections of an earlier measurement
/// closed, tasks of this one parked): two readings 200 ms apart within 4 KiB.
fn settled_heap() -> usize {
    let mut last = ALLOCATOR.allocated();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = ALLOCATOR.allocated();
        if now.abs_diff(last) < 4096 {
            return now;
        }
        last = now;
    }
    last
}

/// The child process: opens `IDLE` connections, makes one request on each,
/// says `ready` and holds them until its stdin closes.
fn hold(dir: &Path, addr: SocketAddr, tls: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut files = BTreeMap::new();
        for name in ["rules.json", "ca-bundle.crt", "tls.crt", "tls.key"] {
            files.insert(name.to_owned(), std::fs::read(dir.join(name)).unwrap());
        }
        let connector = connector(&files);
        let mut plain = Vec::new();
        let mut secure = Vec::new();
        for _ in 0..IDLE {
            if tls {
                let mut stream = connect(&connector, addr).await.expect("handshake");
                request(&mut stream).await.expect("request");
                secure.push(stream);
            } else {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let mut buffer = [b'x'; REQUEST];
                stream.write_all(&buffer).await.unwrap();
                stream.read_exact(&mut buffer).await.unwrap();
                plain.push(stream);
            }
        }
        println!("ready");
        std::io::stdout().flush().unwrap();
        // Idle connections need no polling: block until the parent is done.
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--hold") {
        hold(
            Path::new(&args[at + 1]),
            args[at + 2].parse().unwrap(),
            args[at + 3] == "tls",
        );
        return;
    }
    let check = args.iter().any(|a| a == "--check");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let met = runtime.block_on(run());
    if check && !met {
        eprintln!("agent benchmark: a target was missed");
        std::process::exit(1);
    }
}

async fn run() -> bool {
    let ca = issue("Cluster CA", None, true);
    let (a, b, peer) = (
        issue("cluster.example", Some(&ca), false),
        issue("cluster.example", Some(&ca), false),
        issue("cluster.example", Some(&ca), false),
    );
    let first = revision(1, &a, &ca);
    let app = plaintext_application().await;
    let agent = start_agent(&first, app).await;
    let server_config = Arc::new(verifier(&first).server_config(&identity(&first)).unwrap());
    let direct = direct_server(server_config.clone()).await;
    let bare = bare_proxy(server_config, app).await;
    let client_files = revision(1, &peer, &ca);
    let client = connector(&client_files);

    let (mut direct_rates, mut bare_rates, mut proxy_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        direct_rates.push(handshakes_per_second(&client, direct).await);
        bare_rates.push(handshakes_per_second(&client, bare).await);
        proxy_rates.push(handshakes_per_second(&client, agent.inbound).await);
    }
    let (direct_rate, bare_rate, proxy_rate) = (median(direct_rates), median(bare_rates), median(proxy_rates));
    let handshake_ratio = proxy_rate / direct_rate;
    println!(
        "handshakes/s ({CLIENTS} clients, median of {ROUNDS} x {}s): direct {direct_rate:.0}, proxy {proxy_rate:.0}: {handshake_ratio:.2}x (target >= {HANDSHAKE_TARGET}x); bare proxy {bare_rate:.0} ({:.2}x the direct server; the agent {:.2}x the bare proxy)",
        ROUND.as_secs(),
        bare_rate / direct_rate,
        proxy_rate / bare_rate,
    );

    let [(direct_p50, direct_p99), (bare_p50, bare_p99), (proxy_p50, proxy_p99)] =
        latencies(&client, [direct, bare, agent.inbound]).await;
    let latency_ratio = proxy_p50.as_secs_f64() / direct_p50.as_secs_f64();
    println!(
        "request latency ({REQUESTS} x {REQUEST} B on one connection each, in {} alternating rounds): direct p50 {direct_p50:?} p99 {direct_p99:?}, proxy p50 {proxy_p50:?} p99 {proxy_p99:?}: p50 {latency_ratio:.2}x (target <= {LATENCY_TARGET}x); bare proxy p50 {bare_p50:?} p99 {bare_p99:?} ({:.2}x the direct server; the agent {:.2}x the bare proxy)",
        ROUNDS * 2,
        bare_p50.as_secs_f64() / direct_p50.as_secs_f64(),
        proxy_p50.as_secs_f64() / bare_p50.as_secs_f64(),
    );

    let started = Instant::now();
    let (calls, handshakes, failed, alive) = reloads_under_load(&agent, &client, &a, &b, &ca).await;
    println!(
        "{RELOADS} reloads under load in {:.1}s: {calls} calls, {handshakes} new handshakes, {failed} failed, {alive}/{LONG_LIVED} long-lived connections kept (target: 0 failed, all kept)",
        started.elapsed().as_secs_f64()
    );

    let client_dir = agent.dir.with_extension("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    for (name, bytes) in &client_files {
        std::fs::write(client_dir.join(name), bytes).unwrap();
    }
    let direct_heap = heap_per_idle_connection(&client_dir, direct, true);
    let proxied_heap = heap_per_idle_connection(&client_dir, agent.inbound, true);
    let app_heap = heap_per_idle_connection(&client_dir, app, false);
    let agent_heap = proxied_heap - app_heap;
    let heap_ratio = agent_heap / direct_heap;
    println!(
        "heap per idle connection ({IDLE} held): direct rustls server {:.1} KiB; agent {:.1} KiB (agent and application {:.1} KiB, application alone {:.1} KiB): {heap_ratio:.2}x (target <= {HEAP_TARGET}x)",
        direct_heap / 1024.0,
        agent_heap / 1024.0,
        proxied_heap / 1024.0,
        app_heap / 1024.0,
    );
    let _ = agent.stop.send(());
    let _ = std::fs::remove_dir_all(&agent.dir);
    let _ = std::fs::remove_dir_all(&client_dir);
    handshake_ratio >= HANDSHAKE_TARGET
        && latency_ratio <= LATENCY_TARGET
        && heap_ratio <= HEAP_TARGET
        && failed == 0
        && alive == LONG_LIVED
}
