//! `certshift agent`: the member side, what the Service Fabric runtime is on
//! each node. A sidecar that follows the presentation Secret and validation
//! ConfigMap volumes, loads a revision when both agree on it (`load`), then
//! serves it — proxying with mutual TLS by the revision's rules, and/or
//! reloading the application — and only then acknowledges it on its own Pod
//! (`certshift.io/observed-revision`, server-side apply). What cannot be
//! loaded is said (logs, metrics) and never acknowledged; the last good
//! revision keeps serving. New handshakes use a new revision at once;
//! established connections are not cut. Under the revision it has loaded
//! it watches its handshakes and reloads and reports its member's health on
//! its Pod (`certshift.io/Healthy`, `health`).

pub mod health;
pub mod load;
mod metrics;
pub mod volume;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rustix::process::Signal;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, info, warn};

use crate::outputs::{HEALTH_ANNOTATION, OBSERVED_REVISION_ANNOTATION, ReportedHealth};
use crate::verifier::Refusal;
use health::{Direction, Health, Verdict};
use load::{Loaded, Outcome, Snapshot};
pub use metrics::Metrics;

/// The field manager of the acknowledgements.
pub const MANAGER: &str = "certshift-agent";
/// The field manager of the health condition and its annotation.
pub const HEALTH_MANAGER: &str = "certshift-agent-health";
/// How often the volumes are read again without a filesystem event.
pub const RESYNC: Duration = Duration::from_secs(2);
/// How long the two volumes may disagree before it is logged.
const WAITING_TOLD_AFTER: Duration = Duration::from_secs(30);
/// How often the health verdict is looked at without a new failure (a
/// failure ages out of it with time).
const HEALTH_TICK: Duration = Duration::from_secs(5);
/// While unhealthy, the condition's message (its counts and peers) is
/// refreshed at most this often; transitions are written at once.
const HEALTH_MESSAGE_REFRESH: Duration = Duration::from_secs(30);

/// Where the revisions come from.
#[derive(Clone, Debug)]
pub enum Volumes {
    /// One `projected` volume holding both (recommended: the kubelet writes
    /// both halves of a revision together).
    Projected(PathBuf),
    Separate {
        presentation: PathBuf,
        validation: PathBuf,
    },
}

impl Volumes {
    fn dirs(&self) -> Vec<&PathBuf> {
        match self {
            Volumes::Projected(dir) => vec![dir],
            Volumes::Separate {
                presentation,
                validation,
            } => vec![presentation, validation],
        }
    }

    fn read(&self) -> std::io::Result<Snapshot> {
        Ok(match self {
            Volumes::Projected(dir) => {
                let files = volume::read(dir)?;
                Snapshot {
                    presentation: files.clone(),
                    validation: files,
                }
            }
            Volumes::Separate {
                presentation,
                validation,
            } => Snapshot {
                presentation: volume::read(presentation)?,
                validation: volume::read(validation)?,
            },
        })
    }
}

/// `--inbound LISTEN=UPSTREAM`: terminate mutual TLS, forward in plaintext.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub listen: SocketAddr,
    pub upstream: String,
}

/// `--outbound LISTEN=REMOTE`: accept plaintext, dial REMOTE with mutual TLS.
#[derive(Clone, Debug)]
pub struct Outbound {
    pub listen: SocketAddr,
    pub remote: String,
}

/// How the application learns of a new revision, in reload mode.
#[derive(Clone, Debug)]
pub enum Reload {
    /// Run a command (`sh -c`); a non-zero exit is a failed reload.
    Exec(String),
    /// Send a signal (`HUP`, `USR1`, …) to the processes named so (a
    /// shared process namespace).
    Signal { signal: String, process: String },
}

/// The pod the agent acknowledges on.
#[derive(Clone, Debug)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub volumes: Volumes,
    pub inbound: Vec<Inbound>,
    pub outbound: Vec<Outbound>,
    pub reload: Vec<Reload>,
    /// `None`: no acknowledgement (a member judged some other way).
    pub pod: Option<PodRef>,
    pub metrics_addr: Option<SocketAddr>,
    /// How long a failed handshake counts against the member's health
    /// (`--health-window`).
    pub health_window: Duration,
    /// How long a connection whose peer a newer revision refuses is left
    /// open before it is closed (`--connection-drain`).
    pub connection_drain: Duration,
}

/// `--health-window` when unset.
pub const DEFAULT_HEALTH_WINDOW: Duration = health::FAILING_FOR;

/// How long a connection whose peer a newer revision refuses may finish
/// what it is doing before the agent closes it (`--connection-drain`).
pub const DEFAULT_CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// The revision being served, shared by the proxies; its changes reach the
/// established connections, which re-judge their peers by it.
struct Serving {
    current: tokio::sync::watch::Sender<Option<Arc<Loaded>>>,
    drain: Duration,
}

impl Serving {
    fn new(drain: Duration) -> Self {
        Self {
            current: tokio::sync::watch::Sender::new(None),
            drain,
        }
    }

    fn get(&self) -> Option<Arc<Loaded>> {
        self.current.borrow().clone()
    }

    fn set(&self, loaded: Arc<Loaded>) {
        self.current.send_replace(Some(loaded));
    }

    /// The revisions loaded from now on.
    fn follow(&self) -> tokio::sync::watch::Receiver<Option<Arc<Loaded>>> {
        self.current.subscribe()
    }
}

/// Resolves once a revision loaded after the connection began refuses its
/// peer — a certificate revoked, its CA gone from the bundle, its
/// thumbprint dropped, or expired: judged as a new handshake would be — and
/// the drain has passed with no newer revision admitting it again; pending
/// for as long as the revisions admit the peer (a widening, a presentation
/// change). Says why, for the metric and the log.
async fn refused_by_a_later_revision(
    mut revisions: tokio::sync::watch::Receiver<Option<Arc<Loaded>>>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    direction: Direction,
    drain: Duration,
) -> &'static str {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return std::future::pending().await;
    };
    let judge = |loaded: &Loaded| -> Result<(), &'static str> {
        let now = Timestamp::now();
        match direction {
            Direction::Inbound => loaded.verifier.check_client(end_entity, intermediates, now).map(drop),
            Direction::Outbound => loaded.verifier.check_member(end_entity, intermediates, now).map(drop),
        }
        .map_err(|refusal| refusal.reason)
    };
    // Refused since this instant, for this reason.
    let mut refused: Option<(tokio::time::Instant, &'static str)> = None;
    loop {
        let changed = match refused {
            None => revisions.changed().await,
            Some((since, reason)) => tokio::select! {
                changed = revisions.changed() => changed,
                () = tokio::time::sleep_until(since + drain) => return reason,
            },
        };
        if changed.is_err() {
            return std::future::pending().await;
        }
        let Some(loaded) = revisions.borrow_and_update().clone() else {
            continue;
        };
        refused = match (judge(&loaded), refused) {
            (Ok(()), _) => None,
            // Still refused: the drain counts from the first refusal.
            (Err(reason), Some((since, _))) => Some((since, reason)),
            (Err(reason), None) => Some((tokio::time::Instant::now(), reason)),
        };
    }
}

/// The peer's certificate chain, as the handshake delivered it.
fn peer_chain(
    certificates: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    certificates
        .unwrap_or_default()
        .iter()
        .map(|der| der.clone().into_owned())
        .collect()
}

/// The member's health, fed by the proxies and the reloads, read by
/// [`report_health`]. Accepted handshakes never take its lock.
struct Monitor {
    health: Mutex<Health>,
    changed: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

impl Monitor {
    fn new(metrics: Arc<Metrics>, window: Duration) -> Self {
        Self {
            metrics,
            health: Mutex::new(Health::new(window)),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What a failed handshake or connection says, if it is a certificate's doing.
    fn judge(&self, peer: SocketAddr, direction: Direction, err: &std::io::Error) {
        let Some(failure) = health::classify_io(err) else {
            return;
        };
        self.metrics.certificate_failure(direction, failure);
        self.health().failed(peer.ip(), direction, failure, Instant::now());
        self.changed.notify_one();
    }

    fn loaded(&self, revision: u64) {
        self.health().loaded(revision, Instant::now());
        self.changed.notify_one();
    }

    fn reloaded(&self, revision: u64, outcome: Result<(), String>) {
        self.health().reloaded(revision, outcome);
        self.changed.notify_one();
    }
}

/// Runs until `shutdown` resolves. `client` (for acknowledgements) may be
/// `None` when `options.pod` is.
pub async fn run(
    options: Options,
    client: Option<Client>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let serving = Arc::new(Serving::new(options.connection_drain));
    let monitor = Arc::new(Monitor::new(metrics.clone(), options.health_window));
    // Dropped with `run` (its end, or the caller dropping it): the
    // listeners and loops stop with it, freeing their ports.
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = options.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|err| format!("binding {addr}: {err}"))?;
        info!(%addr, "serving /metrics, /healthz and /readyz");
        let metrics = metrics.clone();
        tasks.spawn(async move {
            let ready = metrics.clone();
            crate::controller::metrics::serve_with(listener, move || metrics.render(), move || ready.not_ready()).await;
        });
    }
    for inbound in &options.inbound {
        let listener = TcpListener::bind(inbound.listen)
            .await
            .map_err(|err| format!("--inbound {}: {err}", inbound.listen))?;
        info!(listen = %inbound.listen, upstream = %inbound.upstream, "inbound proxy");
        tasks.spawn(serve_inbound(
            listener,
            inbound.upstream.clone(),
            serving.clone(),
            monitor.clone(),
        ));
    }
    for outbound in &options.outbound {
        let listener = TcpListener::bind(outbound.listen)
            .await
            .map_err(|err| format!("--outbound {}: {err}", outbound.listen))?;
        info!(listen = %outbound.listen, remote = %outbound.remote, "outbound proxy");
        tasks.spawn(serve_outbound(
            listener,
            outbound.remote.clone(),
            serving.clone(),
            monitor.clone(),
        ));
    }
    let (acknowledge, acknowledged) = tokio::sync::watch::channel(0u64);
    let (warn_on_pod, warnings) = tokio::sync::mpsc::unbounded_channel();
    let on_pod = options.pod.clone().zip(client);
    tasks.spawn(report_health(on_pod.clone(), monitor.clone()));
    if let Some((pod, client)) = on_pod {
        tasks.spawn(acknowledge_loop(
            client.clone(),
            pod.clone(),
            acknowledged,
            metrics.clone(),
        ));
        tasks.spawn(record_warnings(client, pod, warnings));
    }
    let follow = follow(options, serving, monitor, acknowledge, warn_on_pod);
    tokio::select! {
        outcome = follow => outcome?,
        () = shutdown => info!("shutting down"),
    }
    tasks.abort_all();
    Ok(())
}

/// The problem last told, so a volume re-read every few seconds does not
/// repeat it; a wait told once more when it lasts.
#[derive(Default)]
struct Told {
    message: Option<String>,
    since: Option<std::time::Instant>,
    waiting_told: bool,
}

impl Told {
    fn is_new(&mut self, message: &str) -> bool {
        if self.message.as_deref() == Some(message) {
            return false;
        }
        *self = Told {
            message: Some(message.to_owned()),
            since: Some(std::time::Instant::now()),
            waiting_told: false,
        };
        true
    }

    fn waiting_too_long(&mut self) -> bool {
        let due = !self.waiting_told && self.since.is_some_and(|s| s.elapsed() >= WAITING_TOLD_AFTER);
        self.waiting_told |= due;
        due
    }
}

/// Follows the volumes: loads each new revision, reloads, acknowledges.
async fn follow(
    options: Options,
    serving: Arc<Serving>,
    monitor: Arc<Monitor>,
    acknowledge: tokio::sync::watch::Sender<u64>,
    warn_on_pod: tokio::sync::mpsc::UnboundedSender<Warning>,
) -> Result<(), String> {
    let inotify = inotify::Inotify::init().map_err(|err| format!("inotify: {err}"))?;
    let mask = inotify::WatchMask::CREATE
        | inotify::WatchMask::MOVED_TO
        | inotify::WatchMask::MODIFY
        | inotify::WatchMask::DELETE
        | inotify::WatchMask::CLOSE_WRITE
        | inotify::WatchMask::ATTRIB;
    for dir in options.volumes.dirs() {
        // A volume not mounted yet is read again on the next resync.
        if let Err(err) = inotify.watches().add(dir, mask) {
            warn!(dir = %dir.display(), error = %err, "cannot watch the volume; reading it every {}s", RESYNC.as_secs());
        }
    }
    let metrics = monitor.metrics.clone();
    let mut buffer = vec![0u8; 4096];
    let mut events = inotify
        .into_event_stream(&mut buffer)
        .map_err(|err| format!("inotify: {err}"))?;
    let mut resync = tokio::time::interval(RESYNC);
    let mut told = Told::default();
    // A revision loaded whose reload failed: tried again on every look.
    let mut pending_reload: Option<Arc<Loaded>> = None;
    // A failed reload is told once per revision (it is retried on every look).
    let mut last_reload_failure: Option<u64> = None;
    loop {
        let snapshot = options.volumes.read();
        let loaded = serving.get().map(|l| l.revision);
        let outcome = match snapshot {
            Ok(snapshot) => load::judge(&snapshot, loaded, Timestamp::now()),
            Err(err) => Outcome::Waiting(format!("reading the volumes: {err}")),
        };
        let serving_now = loaded.map_or("none".to_owned(), |r| r.to_string());
        let problem = match outcome {
            Outcome::Load(new) => {
                let new: Arc<Loaded> = Arc::from(new);
                info!(revision = new.revision, presented = %new.presented, "loaded");
                // Proxies take the new revision for their next handshakes.
                serving.set(new.clone());
                metrics.loaded(new.revision);
                monitor.loaded(new.revision);
                pending_reload = Some(new);
                None
            }
            Outcome::Invalid { reason, message } => Some((Some(reason), format!("{reason}: {message}"))),
            Outcome::Older { revision, loaded } => Some((
                Some("OlderRevision"),
                format!("OlderRevision: revision {revision} is older than revision {loaded}, which is served"),
            )),
            Outcome::Waiting(why) => Some((None, why)),
            Outcome::Same => None,
        };
        metrics.waiting(problem.as_ref().map(|(_, message)| message.as_str()));
        // Each problem is logged, counted and told once, not on every re-read.
        match problem {
            Some((reason, message)) if told.is_new(&message) => {
                if let Some(reason) = reason {
                    metrics.load_error(reason);
                    warn!("{message}; serving revision {serving_now}");
                    let _ = warn_on_pod.send(Warning {
                        reason,
                        message: format!("{message}; serving revision {serving_now}, not acknowledged"),
                    });
                } else {
                    debug!("{message}");
                }
            }
            Some((None, message)) if told.waiting_too_long() => {
                // The halves normally agree within a kubelet sync.
                info!(
                    "{message} for {}s; serving revision {serving_now}",
                    WAITING_TOLD_AFTER.as_secs()
                );
            }
            Some(_) => {}
            None => told = Told::default(),
        }
        if let Some(loaded) = pending_reload.clone() {
            match reload_all(&options.reload, loaded.revision).await {
                Ok(()) => {
                    if !options.reload.is_empty() {
                        metrics.reload(true);
                        monitor.reloaded(loaded.revision, Ok(()));
                    }
                    pending_reload = None;
                    // Never more than what is loaded (and reloaded).
                    acknowledge.send_replace(loaded.revision);
                }
                Err(err) => {
                    metrics.reload(false);
                    monitor.reloaded(loaded.revision, Err(err.clone()));
                    warn!(revision = loaded.revision, error = %err, "reload failed; not acknowledged");
                    if last_reload_failure != Some(loaded.revision) {
                        last_reload_failure = Some(loaded.revision);
                        let _ = warn_on_pod.send(Warning {
                            reason: "ReloadFailed",
                            message: format!(
                                "reloading the application for revision {}: {err}; not acknowledged, retried",
                                loaded.revision
                            ),
                        });
                    }
                }
            }
        }
        tokio::select! {
            _ = events.next() => {
                // Let a burst of events (one payload swap) settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = resync.tick() => {}
        }
    }
}

async fn reload_all(reloads: &[Reload], revision: u64) -> Result<(), String> {
    for reload in reloads {
        match reload {
            Reload::Exec(command) => {
                let status = tokio::time::timeout(
                    Duration::from_secs(60),
                    tokio::process::Command::new("sh")
                        .arg("-c")
                        .arg(command)
                        .env("CERTSHIFT_REVISION", revision.to_string())
                        .status(),
                )
                .await
                .map_err(|_| format!("{command:?} did not finish within 60s"))?
                .map_err(|err| format!("{command:?}: {err}"))?;
                if !status.success() {
                    return Err(format!("{command:?} exited with {status}"));
                }
            }
            Reload::Signal { signal, process } => {
                let pids = processes_named(process);
                if pids.is_empty() {
                    return Err(format!("no process named {process:?} to send SIG{signal} to"));
                }
                let number = signal_number(signal).ok_or_else(|| format!("SIG{signal}: not a reload signal"))?;
                for pid in pids {
                    send_signal(pid, number).map_err(|err| format!("SIG{signal} to {process} ({pid}): {err}"))?;
                }
            }
        }
    }
    Ok(())
}

/// The signals `--reload-signal` takes, by name without `SIG`.
pub const RELOAD_SIGNALS: [(&str, Signal); 9] = [
    ("HUP", Signal::HUP),
    ("INT", Signal::INT),
    ("QUIT", Signal::QUIT),
    ("USR1", Signal::USR1),
    ("USR2", Signal::USR2),
    ("TERM", Signal::TERM),
    ("WINCH", Signal::WINCH),
    ("ALRM", Signal::ALARM),
    ("CONT", Signal::CONT),
];

fn signal_number(name: &str) -> Option<Signal> {
    RELOAD_SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, signal)| *signal)
}

/// kill(2), not kill(1): the agent's image (distroless) has no programs
/// but certshift.
fn send_signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
}

/// Processes whose name (`/proc/<pid>/comm`) is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == name))
        .collect()
}

/// Sets `certshift.io/observed-revision` on the agent's Pod to the newest
/// revision loaded, retrying with backoff while the API server is away.
async fn acknowledge_loop(
    client: Client,
    pod: PodRef,
    mut revision: tokio::sync::watch::Receiver<u64>,
    metrics: Arc<Metrics>,
) {
    let pods: Api<Pod> = Api::namespaced(client, &pod.namespace);
    let params = PatchParams::apply(MANAGER).force();
    let mut acknowledged = 0;
    let mut backoff = Duration::from_millis(500);
    loop {
        let target = *revision.borrow_and_update();
        if target > acknowledged {
            let patch = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod.name, "annotations": {OBSERVED_REVISION_ANNOTATION: target.to_string()}},
            });
            match pods.patch(&pod.name, &params, &Patch::Apply(&patch)).await {
                Ok(_) => {
                    info!(revision = target, "acknowledged");
                    metrics.acknowledged(true);
                    acknowledged = target;
                    backoff = Duration::from_millis(500);
                }
                Err(err) => {
                    metrics.acknowledged(false);
                    warn!(revision = target, error = %err, "acknowledging; retrying in {}ms", backoff.as_millis());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        if revision.changed().await.is_err() {
            return;
        }
    }
}

/// What the agent cannot serve, told on its Pod as a Warning Event.
#[derive(Debug)]
struct Warning {
    reason: &'static str,
    message: String,
}

/// `reportingController` of the agents' events.
const REPORTING_CONTROLLER: &str = "certshift.io/agent";

/// Records each warning as an events.k8s.io/v1 Event on the agent's Pod.
/// Events are optional (the chart grants `create events` only with
/// `agent.rbac.events`): when the API server forbids them, the agent says
/// so once and goes on with logs and metrics.
async fn record_warnings(client: Client, pod: PodRef, mut warnings: tokio::sync::mpsc::UnboundedReceiver<Warning>) {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    let events: Api<Event> = Api::namespaced(client, &pod.namespace);
    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| pod.name.clone());
    while let Some(warning) = warnings.recv().await {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(crate::object_names::derived_name(
                    &pod.name,
                    &format!(".{:x}", now.as_nanosecond()),
                )),
                namespace: Some(pod.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Load".to_owned()),
            reason: Some(warning.reason.to_owned()),
            note: Some(warning.message.chars().take(1000).collect()),
            type_: Some("Warning".to_owned()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                namespace: Some(pod.namespace.clone()),
                name: Some(pod.name.clone()),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
            reporting_instance: Some(instance.clone()),
            ..Event::default()
        };
        match events.create(&kube::api::PostParams::default(), &event).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => {
                info!("not allowed to record Events (agent.rbac.events); warnings go to logs and metrics only");
                return;
            }
            Err(err) => debug!(error = %err, reason = warning.reason, "could not record an event"),
        }
    }
}

/// The reason a handshake failed, for the metrics (a fixed set).
fn refusal_reason(err: &std::io::Error) -> &'static str {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or("HandshakeFailed", |tls| match tls {
            rustls::Error::AlertReceived(_) => "AlertReceived",
            rustls::Error::NoCertificatesPresented => "NoCertificate",
            other => Refusal::from_tls_error(other).map_or("HandshakeFailed", |r| r.reason),
        })
}

async fn serve_inbound(listener: TcpListener, upstream: String, serving: Arc<Serving>, monitor: Arc<Monitor>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        // Until a revision is loaded there is nothing to present.
        let revisions = serving.follow();
        let Some(loaded) = serving.get() else { continue };
        // A proxy forwards what it gets at once: Nagle's algorithm against
        // delayed ACKs would hold each small write for up to 40 ms.
        let _ = tcp.set_nodelay(true);
        let (upstream, monitor, drain) = (upstream.clone(), monitor.clone(), serving.drain);
        tokio::spawn(async move {
            let metrics = &monitor.metrics;
            let mut tls = match TlsAcceptor::from(loaded.server.clone()).accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    let reason = refusal_reason(&err);
                    metrics.handshake("inbound", Some(reason));
                    monitor.judge(peer, Direction::Inbound, &err);
                    debug!(%peer, %reason, error = %err, "inbound handshake refused");
                    return;
                }
            };
            metrics.handshake("inbound", None);
            let Ok(mut app) = TcpStream::connect(&upstream).await else {
                warn!(%upstream, "the application does not answer");
                return;
            };
            let _ = app.set_nodelay(true);
            let chain = peer_chain(tls.get_ref().1.peer_certificates());
            let connection = Connection {
                peer,
                direction: Direction::Inbound,
                chain,
                revisions,
                drain,
            };
            relay(&mut app, &mut tls, connection, &monitor).await;
        });
    }
}

async fn serve_outbound(listener: TcpListener, remote: String, serving: Arc<Serving>, monitor: Arc<Monitor>) {
    let host = remote
        .rsplit_once(':')
        .map_or(remote.as_str(), |(host, _)| host)
        .trim_matches(['[', ']'])
        .to_owned();
    let Ok(name) = ServerName::try_from(host.clone()) else {
        warn!(%remote, "not a host:port");
        return;
    };
    loop {
        let Ok((mut app, _)) = listener.accept().await else {
            continue;
        };
        let revisions = serving.follow();
        let Some(loaded) = serving.get() else { continue };
        let _ = app.set_nodelay(true);
        let (remote, name, monitor, drain) = (remote.clone(), name.clone(), monitor.clone(), serving.drain);
        tokio::spawn(async move {
            let metrics = &monitor.metrics;
            let Ok(tcp) = TcpStream::connect(&remote).await else {
                debug!(%remote, "the peer does not answer");
                return;
            };
            let _ = tcp.set_nodelay(true);
            let Ok(peer) = tcp.peer_addr() else { return };
            let mut tls = match TlsConnector::from(loaded.client.clone()).connect(name, tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    let reason = refusal_reason(&err);
                    metrics.handshake("outbound", Some(reason));
                    monitor.judge(peer, Direction::Outbound, &err);
                    debug!(%remote, %reason, error = %err, "outbound handshake refused");
                    return;
                }
            };
            metrics.handshake("outbound", None);
            let chain = peer_chain(tls.get_ref().1.peer_certificates());
            let connection = Connection {
                peer,
                direction: Direction::Outbound,
                chain,
                revisions,
                drain,
            };
            relay(&mut app, &mut tls, connection, &monitor).await;
        });
    }
}

/// An established proxied connection: its peer, as the handshake showed it,
/// and the revisions it is judged by from now on.
struct Connection {
    peer: SocketAddr,
    direction: Direction,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    revisions: tokio::sync::watch::Receiver<Option<Arc<Loaded>>>,
    drain: Duration,
}

/// Carries bytes between the application and the peer until either ends the
/// connection — a failure counted against the member's health (in TLS 1.3 a
/// server refuses this member's certificate after the handshake: its alert
/// ends the connection here) — or a revision loaded since refuses the peer.
async fn relay(
    app: &mut TcpStream,
    tls: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    connection: Connection,
    monitor: &Monitor,
) {
    let Connection {
        peer,
        direction,
        chain,
        revisions,
        drain,
    } = connection;
    let _open = monitor.metrics.connection(direction.as_str());
    let copied = carry_both(app, tls);
    tokio::select! {
        copied = copied => {
            if let Err(err) = copied {
                monitor.judge(peer, direction, &err);
            }
        }
        reason = refused_by_a_later_revision(revisions, chain, direction, drain) => {
            monitor.metrics.closed(direction.as_str(), reason);
            info!(%peer, direction = direction.as_str(), %reason, "closed a connection: the revision in force refuses its peer");
        }
    }
}

/// What a direction of a proxied connection reads into while it waits: the
/// buffer an idle connection holds (`copy_bidirectional` holds 8 KiB each
/// way, most of an idle proxied connection's heap).
const IDLE_BUFFER: usize = 512;
/// What it carries a burst with (a read that filled [`IDLE_BUFFER`]): taken
/// while data keeps coming, dropped when the direction waits again.
const BURST_BUFFER: usize = 16 * 1024;

/// One direction of a proxied connection: `copy_bidirectional`'s buffer,
/// small while idle.
struct Carry {
    idle: [u8; IDLE_BUFFER],
    burst: Option<Box<[u8]>>,
    /// The bytes read and not yet written: `buffer[pos..cap]`.
    pos: usize,
    cap: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
}

impl Carry {
    fn new() -> Self {
        Self {
            idle: [0; IDLE_BUFFER],
            burst: None,
            pos: 0,
            cap: 0,
            read_done: false,
            need_flush: false,
            done: false,
        }
    }

    fn buffer(&mut self) -> &mut [u8] {
        match &mut self.burst {
            Some(burst) => burst,
            None => &mut self.idle,
        }
    }

    /// Carries from `from` to `to` as far as both are ready; `Ready` once
    /// `from` has ended and `to` is shut down for writing.
    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        mut from: std::pin::Pin<&mut (impl tokio::io::AsyncRead + ?Sized)>,
        mut to: std::pin::Pin<&mut (impl tokio::io::AsyncWrite + ?Sized)>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.pos == self.cap && !self.read_done {
                let mut read = tokio::io::ReadBuf::new(self.buffer());
                match from.as_mut().poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            // A read that fills the small buffer starts a burst.
                            if self.burst.is_none() && n == IDLE_BUFFER {
                                let mut burst = vec![0u8; BURST_BUFFER].into_boxed_slice();
                                burst[..n].copy_from_slice(&self.idle[..n]);
                                self.burst = Some(burst);
                            }
                            (self.pos, self.cap) = (0, n);
                        }
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => {
                        // Waiting with nothing buffered: the burst is over.
                        self.burst = None;
                        if self.need_flush {
                            std::task::ready!(to.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let (pos, cap) = (self.pos, self.cap);
                let written = std::task::ready!(to.as_mut().poll_write(cx, &self.buffer()[pos..cap]))?;
                if written == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.pos += written;
                self.need_flush = true;
            }
            if self.read_done {
                std::task::ready!(to.as_mut().poll_flush(cx))?;
                std::task::ready!(to.as_mut().poll_shutdown(cx))?;
                self.done = true;
            }
        }
    }
}

/// Carries bytes both ways between `a` and `b` until both directions have
/// ended, as `tokio::io::copy_bidirectional` does, holding
/// [`IDLE_BUFFER`] bytes a direction while idle.
async fn carry_both<A, B>(a: &mut A, b: &mut B) -> std::io::Result<()>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use std::pin::Pin;
    use std::task::Poll;
    let (mut a_to_b, mut b_to_a) = (Carry::new(), Carry::new());
    std::future::poll_fn(|cx| {
        let forth = a_to_b.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (forth, back) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// What the Pod condition says now, to write it only when it changes.
struct Reported {
    key: (u64, bool, &'static str),
    message: String,
    /// When the condition's status last flipped.
    transition: Timestamp,
    at: Instant,
}

/// Reports the health verdict: in the metrics and logs, and on the Pod as
/// the condition `certshift.io/Healthy` (a strategic-merge patch of
/// pods/status keyed by the condition's type, so the kubelet's conditions
/// are untouched) and the annotation `certshift.io/health`, written on
/// transitions and, while unhealthy, refreshed at most every
/// [`HEALTH_MESSAGE_REFRESH`].
async fn report_health(on_pod: Option<(PodRef, Client)>, monitor: Arc<Monitor>) {
    let mut reported: Option<Reported> = None;
    // Cleared when the API server forbids pods/status (a Role from before
    // the condition): the annotation still carries the verdict.
    let mut condition_allowed = true;
    loop {
        tokio::select! {
            () = monitor.changed.notified() => {
                // A burst of failures is one look.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            () = tokio::time::sleep(HEALTH_TICK) => {}
        }
        let verdict = monitor.health().verdict(Instant::now());
        if verdict.revision == 0 {
            continue;
        }
        monitor.metrics.health(&verdict);
        let due = reported.as_ref().is_none_or(|r| {
            r.key != verdict.transition_key()
                || (!verdict.healthy && r.message != verdict.message && r.at.elapsed() >= HEALTH_MESSAGE_REFRESH)
        });
        if !due {
            continue;
        }
        if reported.as_ref().is_none_or(|r| r.key != verdict.transition_key()) {
            if verdict.healthy {
                info!(
                    revision = verdict.revision,
                    reason = verdict.reason,
                    "{}",
                    verdict.message
                );
            } else {
                warn!(
                    revision = verdict.revision,
                    reason = verdict.reason,
                    "{}",
                    verdict.message
                );
            }
        }
        let transition = match &reported {
            Some(r) if r.key.1 == verdict.healthy => r.transition,
            _ => Timestamp::now(),
        };
        if let Some((pod, client)) = &on_pod
            && let Err(err) = patch_health(client, pod, &verdict, transition, &mut condition_allowed).await
        {
            // Tried again on the next look.
            warn!(error = %err, "reporting {}", health::CONDITION);
            continue;
        }
        reported = Some(Reported {
            key: verdict.transition_key(),
            message: verdict.message,
            transition,
            at: Instant::now(),
        });
    }
}

async fn patch_health(
    client: &Client,
    pod: &PodRef,
    verdict: &Verdict,
    transition: Timestamp,
    condition_allowed: &mut bool,
) -> kube::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    // The annotation first: it is what the operator's metadata-only pod
    // cache sees. A merge patch under a field manager of its own, so the
    // acknowledgement's server-side apply never removes it.
    let reported = ReportedHealth {
        revision: verdict.revision,
        healthy: verdict.healthy,
        reason: verdict.reason.to_owned(),
        message: verdict.message.clone(),
    };
    let annotation = serde_json::json!({"metadata": {"annotations": {
        HEALTH_ANNOTATION: serde_json::to_string(&reported).unwrap_or_default(),
    }}});
    let params = PatchParams {
        field_manager: Some(HEALTH_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    pods.patch(&pod.name, &params, &Patch::Merge(&annotation)).await?;
    let patch = serde_json::json!({
        "status": {"conditions": [{
            "type": health::CONDITION,
            "status": if verdict.healthy { "True" } else { "False" },
            "reason": verdict.reason,
            "message": verdict.message,
            "lastTransitionTime": transition.to_string(),
            "lastProbeTime": Timestamp::now().to_string(),
        }]},
    });
    if !*condition_allowed {
        return Ok(());
    }
    match pods.patch_status(&pod.name, &params, &Patch::Strategic(&patch)).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            warn!(
                "not allowed to patch pods/status: the condition {} is not written, the annotation {HEALTH_ANNOTATION} is",
                health::CONDITION
            );
            *condition_allowed = false;
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxied connection carries every byte in order both ways, small
    /// writes and bursts alike (the burst buffer taken and dropped on the
    /// way), and passes each end of stream on as a shutdown.
    #[tokio::test]
    async fn a_connection_carries_small_writes_and_bursts_byte_for_byte_both_ways() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut app, mut app_side) = tokio::io::duplex(64 * 1024);
        let (mut peer_side, mut peer) = tokio::io::duplex(64 * 1024);
        let bytes = |len: u32, seed: u32| -> Vec<u8> { (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect() };
        let (up, down) = (bytes(3_000_000, 1), bytes(1_500_000, 3));
        // One end writes a few small pieces, bulk, a small tail, then ends;
        // and reads all the other way.
        async fn talk(end: &mut tokio::io::DuplexStream, sent: Vec<u8>) -> Vec<u8> {
            let (mut reader, mut writer) = tokio::io::split(end);
            let write = async {
                for chunk in sent[..100].chunks(7) {
                    writer.write_all(chunk).await.unwrap();
                    tokio::task::yield_now().await;
                }
                writer.write_all(&sent[100..sent.len() - 100]).await.unwrap();
                writer.write_all(&sent[sent.len() - 100..]).await.unwrap();
                writer.shutdown().await.unwrap();
            };
            let read = async {
                let mut received = Vec::new();
                reader.read_to_end(&mut received).await.unwrap();
                received
            };
            tokio::join!(write, read).1
        }
        let (carried, app_received, peer_received) = tokio::join!(
            carry_both(&mut app_side, &mut peer_side),
            talk(&mut app, up.clone()),
            talk(&mut peer, down.clone()),
        );
        carried.unwrap();
        assert!(peer_received == up, "app to peer arrives as sent");
        assert!(app_received == down, "peer to app arrives as sent");
    }

    /// The signal reaches every process of the name, with no program run
    /// (the image has none); a name nobody has is a failed reload.
    #[tokio::test]
    async fn a_reload_signal_reaches_the_named_process() {
        let dir = std::env::temp_dir().join(format!("certshift-signal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A shell under a name of its own, so no other process gets the signal.
        let name = format!("csreload{}", std::process::id() % 10_000);
        let program = dir.join(&name);
        std::fs::copy("/bin/sh", &program).unwrap();
        let marker = dir.join("reloaded");
        // SIGHUP at its default first: a shell cannot trap a signal ignored
        // when it started, and a test run under `nohup` hands that down.
        let mut app = std::process::Command::new("env")
            .arg("--default-signal=HUP")
            .arg(&program)
            .arg("-c")
            .arg(format!(
                "trap 'echo reloaded > {}; exit 0' HUP; while :; do sleep 0.05; done",
                marker.display()
            ))
            .spawn()
            .unwrap();
        // Until the shell has set its trap.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let signal = Reload::Signal {
            signal: "HUP".to_owned(),
            process: name.clone(),
        };
        reload_all(std::slice::from_ref(&signal), 2).await.expect("signalled");
        // Fails rather than hangs when the signal does not end it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = app.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = app.kill();
                panic!("the application did not take the signal within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "the application took the signal: {status}");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "reloaded\n");
        let gone = reload_all(&[signal], 3).await.expect_err("no process left");
        assert!(gone.contains(&name), "{gone}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
