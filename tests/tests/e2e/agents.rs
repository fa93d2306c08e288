//! Members that are `certshift agent`s: each in front of a real HTTP server
//! (Python's `http.server`), its volumes kept by the test playing the
//! kubelet (atomic-writer layout, random delays per member and per volume),
//! acknowledging on its own Pod. Every member calls every other member
//! through its outbound proxy the whole time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use certshift::agent::{self, Inbound, Options, Outbound, PodRef, Volumes};
use certshift::planner::{Cause, Revision};
use certshift_e2e::pki::Issued;
use certshift_e2e::{kubelet, observed_revision};

use super::*;

const MEMBERS: usize = 3;

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Member {
    name: String,
    inbound: SocketAddr,
    /// To each other member, by index.
    outbound: Vec<(usize, SocketAddr)>,
    _http: Process,
    _volumes: kubelet::Volumes,
    agent: tokio::task::JoinHandle<Result<(), String>>,
}

fn loopback() -> SocketAddr {
    certshift_e2e::free_addr()
}

/// Starts member `index`: its HTTP server, its volumes, its agent.
async fn member(
    s: &Scenario,
    index: usize,
    addresses: &[(SocketAddr, Vec<SocketAddr>)],
    root: &std::path::Path,
    health_window: Duration,
) -> Member {
    let name = format!("member-{index}");
    let dir = root.join(&name);
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site").join("index.html"), format!("{name}\n")).unwrap();
    let upstream = loopback();
    let http = Process(
        Command::new("python3")
            .args(["-m", "http.server", &upstream.port().to_string(), "--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(dir.join("site"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    let volumes = kubelet::Volumes::start(&s.admin, &s.namespace, DECLARATION, &dir, Duration::from_millis(1500));
    let (inbound, outbound_addresses) = &addresses[index];
    let outbound: Vec<(usize, SocketAddr)> = (0..MEMBERS)
        .filter(|other| *other != index)
        .zip(outbound_addresses.iter().copied())
        .collect();
    let options = Options {
        volumes: Volumes::Separate {
            presentation: volumes.presentation.clone(),
            validation: volumes.validation.clone(),
        },
        inbound: vec![Inbound {
            listen: *inbound,
            upstream: upstream.to_string(),
        }],
        outbound: outbound
            .iter()
            .map(|(other, listen)| Outbound {
                listen: *listen,
                remote: addresses[*other].0.to_string(),
            })
            .collect(),
        reload: Vec::new(),
        pod: Some(PodRef {
            namespace: s.namespace.clone(),
            name: name.clone(),
        }),
        metrics_addr: None,
        health_window,
        connection_drain: agent::DEFAULT_CONNECTION_DRAIN,
    };
    let agent = tokio::spawn(agent::run(options, Some(s.admin.clone()), std::future::pending()));
    Member {
        name,
        inbound: *inbound,
        outbound,
        _http: http,
        _volumes: volumes,
        agent,
    }
}

/// The [`MEMBERS`] members, each an agent in front of a web server, with an
/// inbound port and an outbound port to every other member, on loopback.
async fn start_members(s: &Scenario, root: &std::path::Path, health_window: Duration) -> Vec<Member> {
    let addresses: Vec<(SocketAddr, Vec<SocketAddr>)> = (0..MEMBERS)
        .map(|_| (loopback(), (0..MEMBERS - 1).map(|_| loopback()).collect()))
        .collect();
    let mut members = Vec::new();
    for index in 0..MEMBERS {
        members.push(member(s, index, &addresses, root, health_window).await);
    }
    members
}

/// `GET /` through a plaintext proxy port: the HTTP status line.
async fn get(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let call = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(b"GET / HTTP/1.0\r\nHost: member\r\n\r\n").await?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|err| err.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or_default().to_owned();
    if status.contains(" 200 ") {
        Ok(status)
    } else {
        Err(format!("answer {status:?}"))
    }
}

/// Calls every other member from every member through the outbound
/// proxies until stopped; counts the calls and keeps the failures.
struct Calls {
    made: AtomicUsize,
    failed: StdMutex<Vec<String>>,
    stop: AtomicBool,
}

/// Every member calls every other member through its outbound proxies until
/// `stop` is set; the task ends then.
fn call_every_member_all_the_time(members: &[Member]) -> (Arc<Calls>, tokio::task::JoinHandle<()>) {
    let routes: Vec<(String, SocketAddr)> = members
        .iter()
        .flat_map(|m| {
            m.outbound
                .iter()
                .map(move |(other, addr)| (format!("{} -> member-{other}", m.name), *addr))
        })
        .collect();
    let calls = Arc::new(Calls {
        made: AtomicUsize::new(0),
        failed: StdMutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    (calls.clone(), tokio::spawn(call_all_the_time(calls, routes)))
}

/// At least `at_least` calls were made and none failed (printed for the record).
fn assert_every_call_succeeded(calls: &Calls, at_least: usize, scenario: &str, during: &str) {
    let made = calls.made.load(Ordering::Relaxed);
    let failed = calls.failed.lock().unwrap().clone();
    println!(
        "  {scenario}: {made} calls between {MEMBERS} members {during}, {} failed",
        failed.len()
    );
    assert!(made > at_least, "calls were made: {made}");
    assert!(failed.is_empty(), "failed calls: {failed:#?}");
}

async fn call_all_the_time(calls: Arc<Calls>, routes: Vec<(String, SocketAddr)>) {
    while !calls.stop.load(Ordering::Relaxed) {
        let round = routes
            .iter()
            .map(|(route, addr)| async move { (route, get(*addr).await) });
        for (route, result) in futures::future::join_all(round).await {
            calls.made.fetch_add(1, Ordering::Relaxed);
            if let Err(err) = result {
                calls.failed.lock().unwrap().push(format!("{route}: {err}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The SHA-1 thumbprint of what `openssl s_client` sees presented at `addr`.
fn presented_by_openssl(addr: SocketAddr) -> Option<String> {
    let script = format!(
        "openssl s_client -connect {addr} -servername cluster.example </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha1"
    );
    let out = Command::new("sh").arg("-c").arg(script).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fingerprint = text.trim().rsplit('=').next()?.replace(':', "");
    (fingerprint.len() == 40).then_some(fingerprint)
}

/// `curl` with a client certificate through an inbound proxy: the HTTP
/// status it got (`200` when admitted), or how it failed.
fn curl(addr: SocketAddr, cert_pem: &str, key_pem: &str, dir: &std::path::Path, label: &str) -> String {
    let (crt, key) = (dir.join(format!("{label}.crt")), dir.join(format!("{label}.key")));
    std::fs::write(&crt, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let status = Command::new("curl")
        .args(["-sSk", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("--cert")
        .arg(&crt)
        .arg("--key")
        .arg(&key)
        .arg(format!("https://{addr}/"))
        .output()
        .expect("curl (hack/test.sh installs it)");
    format!(
        "{} {}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr).trim()
    )
    .trim()
    .to_owned()
}

/// The end of a scenario with agents: every revision kept the invariant,
/// and the agents, the operator and the judge stop; the volumes go.
async fn wind_down(judge: Judge, members: Vec<Member>, operator: Operator, root: &std::path::Path) {
    assert_judged_clean(&judge);
    for member in members {
        member.agent.abort();
    }
    operator.stop().await;
    judge.stop();
    let _ = std::fs::remove_dir_all(root);
}

async fn observed_revisions(s: &Scenario) -> Vec<Option<u64>> {
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("member-{i}")).collect();
    observed_revisions_of(s, &names.iter().map(String::as_str).collect::<Vec<_>>()).await
}

pub async fn agents_carry_a_conversion_a_rollover_and_a_rotation_with_no_failed_call(s: Scenario) {
    let ns = s.namespace.clone();
    let root = std::env::temp_dir().join(format!("certshift-e2e-agents-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let judge = Judge::watch(&s.admin, &ns);
    // The store: the old certificate (declared by thumbprint) and the goal, by CN from the CA.
    let (old_ca, ca, unpinned_ca) = (pki::ca("old CA"), pki::ca("agents CA"), pki::ca("unpinned CA"));
    let old = pki::leaf("old.cluster.example", -20, &old_ca);
    let goal = pki::leaf("cluster.example", -10, &ca);
    for (name, cert, issuer) in [("cluster-old", &old, &old_ca), ("cluster-cn", &goal, &ca)] {
        store_certificate(&s, Some(&judge), name, cert, issuer).await;
    }
    for i in 0..MEMBERS {
        apply(&s.admin, &ns, &member_pod(&format!("member-{i}"), &[("app", "agents")])).await;
    }
    let by_thumbprint = Declaration::example("declaration-thumbprint.yaml")
        .by_thumbprint(&old.thumbprint)
        .min_soak("1s")
        .pod_members(&[("app", "agents")]);
    by_thumbprint.apply(&s.admin, &ns).await;
    let operator = Operator::start(&s.plane, &ns);

    let members = start_members(&s, &root, agent::DEFAULT_HEALTH_WINDOW).await;
    let ready = wait_ready(&s.admin, &ns, DECLARATION, Duration::from_secs(60)).await;
    let first = ready.status.unwrap().upgrade.unwrap().revision;
    assert_eq!(
        observed_revisions(&s).await,
        vec![Some(first); MEMBERS],
        "the agents themselves acknowledged revision {first}"
    );

    // Every member calls every other member, the whole time from here on.
    let (calls, caller) = call_every_member_all_the_time(&members);
    // What openssl s_client sees member-0 present, sampled along the way.
    let seen: Arc<StdMutex<Vec<String>>> = Arc::default();
    let sampler = {
        let (seen, addr, calls) = (seen.clone(), members[0].inbound, calls.clone());
        tokio::task::spawn_blocking(move || {
            while !calls.stop.load(Ordering::Relaxed) {
                if let Some(thumbprint) = presented_by_openssl(addr) {
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&thumbprint) {
                        seen.push(thumbprint);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };

    // The conversion: thumbprint → common name, the CA pinned.
    by_thumbprint
        .clone()
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .apply(&s.admin, &ns)
        .await;
    let converted = wait_converted(&s.admin, &ns, DECLARATION, Duration::from_secs(180)).await;
    let converted_at = converted.status.unwrap().upgrade.unwrap().revision;
    assert_eq!(
        observed_revisions(&s).await,
        vec![Some(converted_at); MEMBERS],
        "every revision acknowledged by the agents"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [old.thumbprint.clone(), goal.thumbprint.clone()],
        "openssl s_client saw the presented certificate change once, at the presentation revision"
    );
    // After PinIssuers: the inbound proxy admits the goal certificate, and
    // refuses the old one and one from a CA that is not pinned.
    let inbound = members[0].inbound;
    let unpinned = pki::leaf("cluster.example", -1, &unpinned_ca);
    // curl runs on a blocking thread: the proxies it talks to run on this runtime.
    let curl_with = |cert: &Issued, label: &'static str| {
        let (pem, key, root) = (cert.pem.clone(), cert.key.serialize_pem(), root.clone());
        tokio::task::spawn_blocking(move || curl(inbound, &pem, &key, &root, label))
    };
    let admitted = curl_with(&goal, "goal").await.unwrap();
    assert_eq!(admitted, "200", "the goal certificate is admitted");
    let refused = curl_with(&old, "old").await.unwrap();
    assert!(refused.starts_with("000"), "the old certificate is refused: {refused}");
    let refused = curl_with(&unpinned, "unpinned").await.unwrap();
    assert!(
        refused.starts_with("000"),
        "a certificate from an unpinned CA is refused: {refused}"
    );

    // A renewal from the pinned CA: a rollover, presented touch-free.
    let renewal = pki::leaf("cluster.example", -5, &ca);
    judge.know(&renewal.pem, Some(&ca.pem));
    apply(&s.admin, &ns, &pki::tls_secret("cluster-cn", &renewal, &ca)).await;
    eventually(
        "the rollover, acknowledged by every agent",
        Duration::from_secs(120),
        || async {
            let d = declaration(&s.admin, &ns, DECLARATION).await;
            let status = d.status.clone()?;
            let presenting = status.presenting.as_ref()?.thumbprint == renewal.thumbprint;
            let revision = status.upgrade.as_ref()?.revision;
            let acknowledged = observed_revisions(&s).await == vec![Some(revision); MEMBERS];
            (presenting && is_true(&d, "Ready") && acknowledged).then_some(())
        },
    )
    .await;
    // A thumbprint rotation: declared by the renewal's thumbprint, then by
    // a new certificate's (widen, present, narrow).
    let wait_presenting = |thumbprint: String, declared_by: &'static str| {
        let s = &s;
        let ns = ns.clone();
        async move {
            eventually(
                &format!("{declared_by} {thumbprint}, acknowledged"),
                Duration::from_secs(120),
                || async {
                    let d = declaration(&s.admin, &ns, DECLARATION).await;
                    let status = d.status.clone()?;
                    let current = status.observed_generation == d.metadata.generation;
                    let presenting = status.presenting.as_ref()?.thumbprint == thumbprint;
                    let by = status.declared_by.as_deref() == Some(declared_by);
                    let revision = status.upgrade.as_ref()?.revision;
                    let acknowledged = observed_revisions(s).await == vec![Some(revision); MEMBERS];
                    (current && presenting && by && is_true(&d, "Ready") && acknowledged).then_some(())
                },
            )
            .await;
        }
    };
    by_thumbprint
        .clone()
        .by_thumbprint(&renewal.thumbprint)
        .apply(&s.admin, &ns)
        .await;
    wait_presenting(renewal.thumbprint.clone(), "Thumbprint").await;
    let next = pki::leaf("next.cluster.example", -1, &old_ca);
    judge.know(&next.pem, Some(&old_ca.pem));
    apply(&s.admin, &ns, &pki::tls_secret("cluster-old", &next, &old_ca)).await;
    by_thumbprint
        .clone()
        .by_thumbprint(&next.thumbprint)
        .apply(&s.admin, &ns)
        .await;
    wait_presenting(next.thumbprint.clone(), "Thumbprint").await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    calls.stop.store(true, Ordering::Relaxed);
    caller.await.unwrap();
    sampler.await.unwrap();
    assert_every_call_succeeded(
        &calls,
        100,
        "agents",
        "through the conversion, a rollover and a thumbprint rotation",
    );
    wind_down(judge, members, operator, &root).await;
}

/// The revision in a member's validation volume (what it could have loaded).
fn volume_revision(dir: &std::path::Path) -> Option<u64> {
    let files = certshift::agent::volume::read(dir).ok()?;
    let rules: serde_json::Value = serde_json::from_slice(files.get("rules.json")?).ok()?;
    rules["revision"].as_u64()
}

async fn agent_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out).await;
    out
}

pub async fn an_agent_restarted_or_given_a_corrupt_volume_never_acknowledges_what_it_has_not_loaded(s: Scenario) {
    let ns = s.namespace.clone();
    let root = std::env::temp_dir().join(format!("certshift-e2e-resilient-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let judge = Judge::watch(&s.admin, &ns);
    let (old_ca, ca) = (pki::ca("old CA"), pki::ca("resilient CA"));
    let (old, goal) = (
        pki::leaf("old.example", -20, &old_ca),
        pki::leaf("cluster.example", -10, &ca),
    );
    for (name, cert, issuer) in [("cluster-old", &old, &old_ca), ("cluster-cn", &goal, &ca)] {
        store_certificate(&s, Some(&judge), name, cert, issuer).await;
    }
    let names = ["resilient-0", "resilient-1"];
    for name in names {
        apply(&s.admin, &ns, &member_pod(name, &[("app", "resilient")])).await;
    }
    let declared = Declaration::example("declaration-thumbprint.yaml")
        .by_thumbprint(&old.thumbprint)
        .min_soak("0s")
        .pod_members(&[("app", "resilient")]);
    declared.apply(&s.admin, &ns).await;
    let operator = Operator::start(&s.plane, &ns);
    let metrics: Vec<SocketAddr> = names.iter().map(|_| loopback()).collect();
    let start_agent = |index: usize, volumes: &kubelet::Volumes| {
        let options = Options {
            volumes: Volumes::Separate {
                presentation: volumes.presentation.clone(),
                validation: volumes.validation.clone(),
            },
            inbound: Vec::new(),
            outbound: Vec::new(),
            reload: Vec::new(),
            pod: Some(PodRef {
                namespace: ns.clone(),
                name: names[index].to_owned(),
            }),
            metrics_addr: Some(metrics[index]),
            health_window: agent::DEFAULT_HEALTH_WINDOW,
            connection_drain: agent::DEFAULT_CONNECTION_DRAIN,
        };
        tokio::spawn(agent::run(options, Some(s.admin.clone()), std::future::pending()))
    };
    let kubelet = |index: usize| {
        kubelet::Volumes::start(
            &s.admin,
            &ns,
            DECLARATION,
            &root.join(names[index]),
            Duration::from_millis(800),
        )
    };
    let mut volumes = vec![kubelet(0), kubelet(1)];
    let mut agents = vec![start_agent(0, &volumes[0]), start_agent(1, &volumes[1])];
    wait_ready(&s.admin, &ns, DECLARATION, Duration::from_secs(60)).await;

    // A watch on the invariant: a Pod never says more than its volume held.
    let pods: Api<Pod> = Api::namespaced(s.admin.clone(), &ns);
    let dirs: Vec<PathBuf> = volumes.iter().map(|v| v.validation.clone()).collect();
    let watching = Arc::new(AtomicBool::new(true));
    let overreach: Arc<StdMutex<Vec<String>>> = Arc::default();
    let watcher_task = {
        let (pods, watching, overreach) = (pods.clone(), watching.clone(), overreach.clone());
        tokio::spawn(async move {
            // The newest revision each volume has held (a corrupt payload holds none).
            let mut held = [0u64; 2];
            while watching.load(Ordering::Relaxed) {
                for ((name, dir), held) in names.iter().zip(&dirs).zip(&mut held) {
                    // The acknowledgement first, then the volume: volumes only move forward.
                    let Ok(pod) = pods.get(name).await else { continue };
                    let observed = observed_revision(&pod);
                    *held = (*held).max(volume_revision(dir).unwrap_or(0));
                    if observed.is_some_and(|o| o > *held) {
                        overreach
                            .lock()
                            .unwrap()
                            .push(format!("{name}: acknowledged {observed:?}, volume held {held}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The conversion; agent 0 is killed once revision 3 is out, and comes back.
    declared
        .clone()
        .by_common_names(&[("cluster.example", &ca.thumbprint)])
        .apply(&s.admin, &ns)
        .await;
    eventually("revision 3 published", Duration::from_secs(60), || async {
        let d = declaration(&s.admin, &ns, DECLARATION).await;
        (d.status?.upgrade?.revision >= 3).then_some(())
    })
    .await;
    agents[0].abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    agents[0] = start_agent(0, &volumes[0]);
    let converted = wait_converted(&s.admin, &ns, DECLARATION, Duration::from_secs(120)).await;
    let converted_at = converted.status.unwrap().upgrade.unwrap().revision;
    eventually("both acknowledged the conversion", Duration::from_secs(30), || async {
        (observed_revisions_of(&s, &names).await == vec![Some(converted_at); 2]).then_some(())
    })
    .await;

    // Member 1's kubelet stops and its validation volume gets a corrupt payload.
    volumes.remove(1);
    let corrupt = std::collections::BTreeMap::from([(
        "rules.json".to_owned(),
        format!("{{\"revision\": {}, not json", converted_at + 1).into_bytes(),
    )]);
    certshift::agent::volume::write_atomically(&root.join(names[1]).join("validation"), &corrupt).unwrap();
    // A renewal: the next revision, which member 1 cannot load.
    let renewal = pki::leaf("cluster.example", -5, &ca);
    judge.know(&renewal.pem, Some(&ca.pem));
    apply(&s.admin, &ns, &pki::tls_secret("cluster-cn", &renewal, &ca)).await;
    eventually(
        "member 0 acknowledges the rollover",
        Duration::from_secs(60),
        || async {
            let observed = observed_revisions_of(&s, &names).await;
            (observed[0].is_some_and(|r| r > converted_at)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        observed_revisions_of(&s, &names).await[1],
        Some(converted_at),
        "the corrupt volume is never acknowledged"
    );
    let said = agent_metrics(metrics[1]).await;
    assert!(
        said.contains(&format!("certshift_agent_revision {converted_at}")),
        "the last good revision serves: {said}"
    );
    assert!(
        said.contains("certshift_agent_load_errors_total{reason=\"InvalidRules\"}"),
        "{said}"
    );
    // And it says so on its Pod (the agents here may create Events).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(s.admin.clone(), &ns);
    let told: Vec<_> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(names[1])
                && e.reporting_controller.as_deref() == Some("certshift.io/agent")
                && e.reason.as_deref() == Some("InvalidRules")
        })
        .collect();
    assert!(
        told.len() == 1
            && told[0].type_.as_deref() == Some("Warning")
            && told[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains(&format!("serving revision {converted_at}"))),
        "one Warning Event (not one per re-read) on the Pod whose volume is corrupt: {told:#?}"
    );
    let d = declaration(&s.admin, &ns, DECLARATION).await;
    assert!(!is_true(&d, "Ready"), "the rollover waits for member 1");
    // Its kubelet comes back: member 1 catches up, the rollover completes.
    volumes.insert(1, kubelet(1));
    eventually(
        "the rollover, acknowledged by both",
        Duration::from_secs(60),
        || async {
            let d = declaration(&s.admin, &ns, DECLARATION).await;
            let status = d.status.clone()?;
            let revision = status.upgrade.as_ref()?.revision;
            let both = observed_revisions_of(&s, &names).await == vec![Some(revision); 2];
            (is_true(&d, "Ready") && status.presenting?.thumbprint == renewal.thumbprint && both).then_some(())
        },
    )
    .await;
    watching.store(false, Ordering::Relaxed);
    watcher_task.await.unwrap();
    let overreach = overreach.lock().unwrap().clone();
    assert!(overreach.is_empty(), "acknowledged beyond the volume: {overreach:#?}");
    assert_judged_clean(&judge);
    for agent in agents {
        agent.abort();
    }
    operator.stop().await;
    judge.stop();
    let _ = std::fs::remove_dir_all(&root);
}

async fn observed_revisions_of(s: &Scenario, names: &[&str]) -> Vec<Option<u64>> {
    let pods: Api<Pod> = Api::namespaced(s.admin.clone(), &s.namespace);
    let mut out = Vec::new();
    for name in names {
        out.push(observed_revision(&pods.get(name).await.unwrap()));
    }
    out
}

/// The ConfigMap `crls` the revocation scenarios' declarations name.
fn crls(pem: String) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": "crls"}, "data": {"ca.crl": pem}})).unwrap()
}

/// The bed of the revocation scenarios, once the store `cluster-a` and
/// `cluster-b` is applied: the CRLs `crl` in the ConfigMap `crls`, a
/// declaration by common name pinned to `issuers` that names it, the
/// operator and three agent members. Returns once every agent has the first
/// revision, which presents `presented`.
async fn revocation_bed(
    s: &Scenario,
    label: &str,
    issuers: &str,
    crl: String,
    presented: &Issued,
) -> (PathBuf, Operator, Vec<Member>, u64) {
    let ns = s.namespace.clone();
    let root = std::env::temp_dir().join(format!("certshift-e2e-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    apply(&s.admin, &ns, &crls(crl)).await;
    for i in 0..MEMBERS {
        apply(&s.admin, &ns, &member_pod(&format!("member-{i}"), &[("app", "agents")])).await;
    }
    Declaration::example("declaration-common-name.yaml")
        .by_common_names(&[("cluster.example", issuers)])
        .store(&["cluster-a", "cluster-b"])
        .min_soak("1s")
        .pod_members(&[("app", "agents")])
        .revocation("crls")
        .apply(&s.admin, &ns)
        .await;
    let operator = Operator::start(&s.plane, &ns);
    let members = start_members(s, &root, agent::DEFAULT_HEALTH_WINDOW).await;
    let ready = wait_ready(&s.admin, &ns, DECLARATION, Duration::from_secs(60)).await;
    let status = ready.status.unwrap();
    assert_eq!(
        status.presenting.unwrap().thumbprint,
        presented.thumbprint,
        "the newest is presented"
    );
    let first = status.upgrade.unwrap().revision;
    eventually("every agent on the first revision", Duration::from_secs(60), || async {
        (observed_revisions(s).await == vec![Some(first); MEMBERS]).then_some(())
    })
    .await;
    (root, operator, members, first)
}

/// The members moved off the revoked certificate to `to`, acknowledged,
/// Ready and nothing revoked in use; the walk was tolerate, present, narrow.
async fn moved_off(s: &Scenario, judge: &Judge, first: u64, from: &Issued, to: &Issued) {
    eventually(
        "the members moved to the other certificate, acknowledged",
        Duration::from_secs(120),
        || async {
            let d = declaration(&s.admin, &s.namespace, DECLARATION).await;
            let status = d.status.clone()?;
            let presenting = status.presenting.as_ref()?.thumbprint == to.thumbprint;
            let revision = status.upgrade.as_ref()?.revision;
            let settled = status.upgrade.as_ref()?.plan.is_empty();
            let acknowledged = observed_revisions(s).await == vec![Some(revision); MEMBERS];
            let revoked = condition(&d, "Revoked").map(|c| c.status.clone());
            (presenting && settled && acknowledged && is_true(&d, "Ready") && revoked.as_deref() == Some("False"))
                .then_some(())
        },
    )
    .await;
    let walk: Vec<(Option<Stage>, String, usize)> = judge
        .observations()
        .iter()
        .filter(|o| o.revision.revision > first)
        .map(|o| {
            (
                o.revision.stage,
                o.revision.presented.to_string(),
                o.revision.tolerated.len(),
            )
        })
        .collect();
    assert_eq!(
        walk,
        [
            (Some(Stage::WidenValidation), from.thumbprint.clone(), 1),
            (Some(Stage::Rollover), to.thumbprint.clone(), 1),
            (Some(Stage::NarrowValidation), to.thumbprint.clone(), 0),
        ],
        "tolerate, present, narrow"
    );
}

/// A CRL revoking the presented certificate, pushed into the ConfigMap the
/// declaration names while agents call each other: the members are walked to
/// the other certificate (tolerate, present, narrow) with no failed call, a
/// Warning says why, and afterwards the members refuse the revoked one.
pub async fn a_revocation_pushed_while_running_moves_the_members_off_with_no_failed_call(s: Scenario) {
    let ns = s.namespace.clone();
    let judge = Judge::watch(&s.admin, &ns);
    let ca = pki::ca("revocation CA");
    let (older, newer) = (
        pki::leaf("cluster.example", -10, &ca),
        pki::leaf("cluster.example", -5, &ca),
    );
    for (name, cert) in [("cluster-a", &older), ("cluster-b", &newer)] {
        store_certificate(&s, Some(&judge), name, cert, &ca).await;
    }
    let (root, operator, members, first) =
        revocation_bed(&s, "revocation", &ca.thumbprint, pki::crl(&ca, &[]), &newer).await;
    let (calls, caller) = call_every_member_all_the_time(&members);

    // The CA revokes the presented certificate; its CRL lands in the ConfigMap.
    apply(&s.admin, &ns, &crls(pki::crl(&ca, &[&newer]))).await;
    let warning = eventually(
        "a Warning CertificateRevoked event",
        Duration::from_secs(60),
        || async {
            certshift_e2e::events(&s.admin, &ns)
                .await
                .into_iter()
                .find(|(t, r, _)| t == "Warning" && r == "CertificateRevoked")
                .map(|(_, _, message)| message)
        },
    )
    .await;
    assert!(warning.contains(&newer.thumbprint), "{warning}");
    moved_off(&s, &judge, first, &newer, &older).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    calls.stop.store(true, Ordering::Relaxed);
    caller.await.unwrap();
    let last = judge.observations().last().cloned().expect("observed");
    assert!(
        last.files["crls.pem"].contains("BEGIN X509 CRL"),
        "the CRL is published to members"
    );
    // The members enforce it: the revoked certificate is refused, the other admitted.
    let inbound = members[0].inbound;
    let curl_with = |cert: &Issued, label: &'static str| {
        let (pem, key, root) = (cert.pem.clone(), cert.key.serialize_pem(), root.clone());
        tokio::task::spawn_blocking(move || curl(inbound, &pem, &key, &root, label))
    };
    assert_eq!(
        curl_with(&older, "older").await.unwrap(),
        "200",
        "the other certificate is admitted"
    );
    let refused = curl_with(&newer, "revoked").await.unwrap();
    assert!(
        refused.starts_with("000"),
        "the revoked certificate is refused: {refused}"
    );
    // Ready, a CRL revoking one more certificate of the CA: it reaches the
    // members with a revision of its own, and they refuse that one too.
    let other = pki::leaf("cluster.example", -1, &ca);
    assert_eq!(
        curl_with(&other, "other").await.unwrap(),
        "200",
        "admitted by its pinned CA"
    );
    let before = judge.observations().last().expect("observed").revision.revision;
    apply(&s.admin, &ns, &crls(pki::crl(&ca, &[&newer, &other]))).await;
    eventually(
        "the new CRL, acknowledged by every agent",
        Duration::from_secs(60),
        || async {
            let last = judge.observations().last().cloned()?;
            let fresh = last.revision.revision == before + 1 && last.revision.stage == Some(Stage::NarrowValidation);
            let acknowledged = observed_revisions(&s).await == vec![Some(before + 1); MEMBERS];
            (fresh && acknowledged).then_some(())
        },
    )
    .await;
    let refused = curl_with(&other, "other-revoked").await.unwrap();
    assert!(
        refused.starts_with("000"),
        "refused once its CRL is in force: {refused}"
    );
    assert_every_call_succeeded(&calls, 20, "revocation", "while moving off the revoked certificate");
    wind_down(judge, members, operator, &root).await;
}

/// A CRL from the root revoking the intermediate the presented certificate
/// was issued under: the members are walked, with no failed call, to the
/// certificate under the other intermediate — the presented one tolerated
/// (its path too) while it is presented and while the other is presented,
/// then refused; so is every other certificate under the revoked
/// intermediate, while the other intermediate's are admitted.
pub async fn a_revoked_intermediate_moves_the_members_to_another_with_no_failed_call(s: Scenario) {
    let ns = s.namespace.clone();
    let judge = Judge::watch(&s.admin, &ns);
    let root_ca = pki::ca("revocation root");
    let (i1, i2) = (
        pki::intermediate("intermediate 1", &root_ca),
        pki::intermediate("intermediate 2", &root_ca),
    );
    let (older, newer) = (
        pki::leaf("cluster.example", -10, &i2),
        pki::leaf("cluster.example", -5, &i1),
    );
    // Each Secret as issuers hand them out: the chain in tls.crt, the root in ca.crt.
    for (name, cert, via) in [("cluster-a", &older, &i2), ("cluster-b", &newer, &i1)] {
        let chain = format!("{}{}", cert.pem, via.pem);
        judge.know(&chain, Some(&root_ca.pem));
        let key = cert.key.serialize_pem();
        let files = [("tls.crt", chain.as_str()), ("tls.key", &key), ("ca.crt", &root_ca.pem)];
        apply(&s.admin, &ns, &secret(name, Some("kubernetes.io/tls"), &files)).await;
        apply(&s.admin, &ns, &observed_certificate(name, name, None)).await;
    }
    let issuers = format!("{}, {}", i1.thumbprint, i2.thumbprint);
    let (root, operator, members, first) =
        revocation_bed(&s, "intermediate", &issuers, pki::crl(&root_ca, &[]), &newer).await;
    let (calls, caller) = call_every_member_all_the_time(&members);

    apply(&s.admin, &ns, &crls(pki::crl(&root_ca, &[&i1]))).await;
    moved_off(&s, &judge, first, &newer, &older).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    calls.stop.store(true, Ordering::Relaxed);
    caller.await.unwrap();
    let status = declaration(&s.admin, &ns, DECLARATION).await.status.unwrap();
    assert_eq!(status.declared_by.as_deref(), Some("CommonName"));
    // Enforced now: what chains through the revoked intermediate is refused.
    let inbound = members[0].inbound;
    let curl_with = |cert: &Issued, via: &Issued, label: &'static str| {
        let (pem, key, root) = (
            format!("{}{}", cert.pem, via.pem),
            cert.key.serialize_pem(),
            root.clone(),
        );
        tokio::task::spawn_blocking(move || curl(inbound, &pem, &key, &root, label))
    };
    assert_eq!(curl_with(&older, &i2, "older").await.unwrap(), "200");
    let sibling = pki::leaf("cluster.example", -1, &i1);
    for (cert, label) in [(&newer, "revoked-path"), (&sibling, "sibling")] {
        let refused = curl_with(cert, &i1, label).await.unwrap();
        assert!(refused.starts_with("000"), "{label} is refused: {refused}");
    }
    assert_eq!(
        curl_with(&pki::leaf("cluster.example", -1, &i2), &i2, "other-intermediate")
            .await
            .unwrap(),
        "200"
    );
    assert_every_call_succeeded(&calls, 20, "intermediate", "while moving off the revoked intermediate");
    wind_down(judge, members, operator, &root).await;
}

/// The ConfigMap `roots` trust-manager keeps: `ca.crt`, the anchors.
fn roots(cas: &[&Issued]) -> ConfigMap {
    let pem: String = cas.iter().map(|ca| ca.pem.as_str()).collect();
    serde_json::from_value(serde_json::json!({"metadata": {"name": "roots"}, "data": {"ca.crt": pem}})).unwrap()
}

/// `certshift plan` over the namespace's objects as `kubectl get
/// ccd,observedcertificates,cm,secret -o yaml` gives them, `renewed` in
/// place of its Secret: what the operator will publish once it lands.
async fn plan_offline(s: &Scenario, renewed: &Secret) -> certshift::cli::plan::PlanReport {
    use certshift::crd::ObservedCertificate;
    let mut manifests = certshift::cli::manifests::Manifests::default();
    let mut read = |text: String| manifests.read("cluster", &text).expect("the cluster's objects read");
    let ns = &s.namespace;
    let ccds: Api<ClusterCertificateDeclaration> = Api::namespaced(s.admin.clone(), ns);
    read(serde_yaml::to_string(&ccds.get(DECLARATION).await.unwrap()).unwrap());
    let ocerts: Api<ObservedCertificate> = Api::namespaced(s.admin.clone(), ns);
    for o in ocerts.list(&Default::default()).await.unwrap() {
        read(serde_yaml::to_string(&o).unwrap());
    }
    let maps: Api<ConfigMap> = Api::namespaced(s.admin.clone(), ns);
    for m in maps.list(&Default::default()).await.unwrap() {
        read(serde_yaml::to_string(&m).unwrap());
    }
    let secrets: Api<Secret> = Api::namespaced(s.admin.clone(), ns);
    for mut secret in secrets.list(&Default::default()).await.unwrap() {
        if secret.metadata.name == renewed.metadata.name {
            secret = renewed.clone();
            secret.metadata.namespace = Some(ns.clone());
        }
        read(serde_yaml::to_string(&secret).unwrap());
    }
    certshift::cli::plan::plan(&manifests, jiff::Timestamp::now()).expect("valid input")
}

/// A trust bundle rotated as trust-manager does it, under agents calling
/// each other the whole time, the members' name and a client's name both
/// trusted through the bundle: the new root added (trusted at once, by a
/// revision of its own); the old root removed too early, while the
/// presented certificate still chains to it (held, `TrustAnchorInUse`
/// naming both, nothing published, the client under the old root still
/// admitted); the store renewed under the new root (presented under both
/// roots, then the old root dropped last — what `certshift plan` printed
/// for the same objects beforehand). The client under the old root is
/// refused only after that last revision; no member call failed.
pub async fn a_trust_bundle_rotated_as_trust_manager_does_never_cuts_a_member_off(s: Scenario) {
    let ns = s.namespace.clone();
    let root = std::env::temp_dir().join(format!("certshift-e2e-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let judge = Judge::watch(&s.admin, &ns);
    let (r1, r2) = (pki::ca("bundle root 1"), pki::ca("bundle root 2"));
    let old = pki::leaf("cluster.example", -10, &r1);
    store_certificate(&s, Some(&judge), "cluster-a", &old, &r1).await;
    apply(&s.admin, &ns, &roots(&[&r1])).await;
    for i in 0..MEMBERS {
        apply(&s.admin, &ns, &member_pod(&format!("member-{i}"), &[("app", "agents")])).await;
    }
    Declaration::example("declaration-common-name.yaml")
        .by_common_names(&[("cluster.example", "")])
        .store(&["cluster-a"])
        .trust_bundle("roots")
        .clients_by_common_name("client.example")
        .min_soak("1s")
        .pod_members(&[("app", "agents")])
        .apply(&s.admin, &ns)
        .await;
    let operator = Operator::start(&s.plane, &ns);
    let members = start_members(&s, &root, agent::DEFAULT_HEALTH_WINDOW).await;
    let ready = wait_ready(&s.admin, &ns, DECLARATION, Duration::from_secs(60)).await;
    let first = ready.status.unwrap().upgrade.unwrap().revision;
    let acknowledged = |revision: u64| {
        let s = &s;
        async move {
            eventually(
                &format!("every agent on revision {revision}"),
                Duration::from_secs(60),
                || async { (observed_revisions(s).await == vec![Some(revision); MEMBERS]).then_some(()) },
            )
            .await;
        }
    };
    acknowledged(first).await;
    let (calls, caller) = call_every_member_all_the_time(&members);
    let inbound = members[0].inbound;
    let client = |cert: &Issued, label: &'static str| {
        let (pem, key, root) = (cert.pem.clone(), cert.key.serialize_pem(), root.clone());
        tokio::task::spawn_blocking(move || curl(inbound, &pem, &key, &root, label))
    };
    let (old_client, new_client) = (
        pki::leaf("client.example", -5, &r1),
        pki::leaf("client.example", -5, &r2),
    );
    assert_eq!(client(&old_client, "old-client").await.unwrap(), "200");
    assert!(client(&new_client, "new-client").await.unwrap().starts_with("000"));
    let last_published = |judge: &Judge| judge.observations().last().expect("observed").revision.clone();

    // trust-manager adds the new root: trusted at once, by a revision of its own.
    apply(&s.admin, &ns, &roots(&[&r1, &r2])).await;
    let added = eventually("the new root published", Duration::from_secs(60), || async {
        Some(last_published(&judge)).filter(|r| r.revision == first + 1)
    })
    .await;
    assert_eq!(
        (added.stage, added.cause, added.anchors.len()),
        (Some(Stage::WidenValidation), Some(Cause::TrustBundleChanged), 2)
    );
    acknowledged(first + 1).await;
    let upgrade = declaration(&s.admin, &ns, DECLARATION)
        .await
        .status
        .unwrap()
        .upgrade
        .unwrap();
    assert_eq!(
        (upgrade.revision, upgrade.cause),
        (first + 1, Some(Cause::TrustBundleChanged)),
        "status.upgrade says why"
    );
    assert_eq!(client(&new_client, "new-client").await.unwrap(), "200");

    // The old root removed while the presented certificate chains to it: held.
    apply(&s.admin, &ns, &roots(&[&r2])).await;
    let (held, message) = stalled(&s, "TrustAnchorInUse", Duration::from_secs(60)).await;
    for named in [&r1.thumbprint, &old.thumbprint] {
        assert!(message.contains(named.as_str()), "{message}");
    }
    assert!(held.status.unwrap().upgrade.unwrap().plan.is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        last_published(&judge).revision,
        first + 1,
        "nothing published while held"
    );
    assert_eq!(client(&old_client, "old-client").await.unwrap(), "200", "still trusted");

    // The store renewed under the new root: `certshift plan` says what comes.
    let renewed = pki::leaf("cluster.example", -5, &r2);
    judge.know(&renewed.pem, Some(&r2.pem));
    let renewal = pki::tls_secret("cluster-a", &renewed, &r2);
    let offline = plan_offline(&s, &renewal).await;
    assert_eq!(offline.blocked, None, "{offline:?}");
    apply(&s.admin, &ns, &renewal).await;
    let walked = eventually("the walk off the old root", Duration::from_secs(120), || async {
        let d = declaration(&s.admin, &ns, DECLARATION).await;
        let published: Vec<Revision> = judge
            .observations()
            .iter()
            .map(|o| o.revision.clone())
            .filter(|r| r.revision > first + 1)
            .collect();
        let done = published.len() == 2 && is_true(&d, "Ready");
        done.then_some(published)
    })
    .await;
    acknowledged(first + 3).await;
    let shape = |r: &Revision| {
        (
            r.revision,
            r.stage,
            r.change,
            r.presented.clone(),
            r.anchors.clone(),
            r.cause,
        )
    };
    assert_eq!(
        walked.iter().map(shape).collect::<Vec<_>>(),
        offline.revisions[1..].iter().map(shape).collect::<Vec<_>>(),
        "the operator published what certshift plan printed"
    );
    let r2_only = vec![certshift::thumbprint::Thumbprint::parse("r2", &r2.thumbprint).unwrap()];
    assert_eq!(
        walked
            .iter()
            .map(|r| (r.presented.to_string(), r.anchors.len(), r.cause))
            .collect::<Vec<_>>(),
        [
            (renewed.thumbprint.clone(), 2, None),
            (renewed.thumbprint.clone(), 1, Some(Cause::TrustBundleChanged)),
        ]
    );
    assert_eq!(walked[1].anchors, r2_only);
    // Refused only now that the removal revision is in force.
    let refused = client(&old_client, "old-client-after").await.unwrap();
    assert!(
        refused.starts_with("000"),
        "the client under the removed root: {refused}"
    );
    assert_eq!(client(&new_client, "new-client-after").await.unwrap(), "200");

    tokio::time::sleep(Duration::from_secs(2)).await;
    calls.stop.store(true, Ordering::Relaxed);
    caller.await.unwrap();
    assert_every_call_succeeded(&calls, 40, "bundle", "through a trust bundle rotation");
    wind_down(judge, members, operator, &root).await;
}

/// A client certshift does not manage: `curl` calling member-0's inbound
/// proxy every 300 ms with `config` (re-read on each call); counts its
/// outcomes until stopped.
struct Unmanaged {
    config: StdMutex<UnmanagedConfig>,
    ok: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
}

#[derive(Clone)]
struct UnmanagedConfig {
    /// The name it calls (resolved to loopback) and the CAs it trusts.
    host: String,
    cacert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn call_as_unmanaged_client(client: Arc<Unmanaged>, port: u16) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        while !client.stop.load(Ordering::Relaxed) {
            let config = client.config.lock().unwrap().clone();
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg("--resolve")
                .arg(format!("{}:{port}:127.0.0.1", config.host))
                .arg("--cacert")
                .arg(&config.cacert)
                .arg("--cert")
                .arg(&config.cert)
                .arg("--key")
                .arg(&config.key)
                .arg(format!("https://{}:{port}/", config.host))
                .output()
                .expect("curl (hack/test.sh installs it)");
            if String::from_utf8_lossy(&out.stdout) == "200" {
                client.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                client.failed.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

/// The bed of the health scenarios: three agent members calling each other
/// the whole time, a declaration by the old certificate's thumbprint with a
/// short health check (a 3 s wait: the client calls every 300 ms, slower on
/// a loaded machine, and must have called before health is judged), and a
/// client certshift does not manage (`curl`) calling member-0, trusting only
/// the old certificate's CA.
struct HealthBed {
    root: PathBuf,
    judge: Judge,
    old_ca: Issued,
    ca: Issued,
    old: Issued,
    goal: Issued,
    by_thumbprint: Declaration,
    operator: Operator,
    members: Vec<Member>,
    client: Arc<Unmanaged>,
    unmanaged: Option<tokio::task::JoinHandle<()>>,
    calls: Arc<Calls>,
    caller: tokio::task::JoinHandle<()>,
    _stop: StopCallers,
}

/// Stops the callers when dropped, also when a scenario fails: the
/// runtime would otherwise wait for the client's blocking loop forever.
struct StopCallers(Arc<Unmanaged>, Arc<Calls>);

impl Drop for StopCallers {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
        self.1.stop.store(true, Ordering::Relaxed);
    }
}

async fn health_bed(s: &Scenario, label: &str, action: certshift::crd::FailureAction) -> HealthBed {
    let ns = s.namespace.clone();
    let root = std::env::temp_dir().join(format!("certshift-e2e-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let judge = Judge::watch(&s.admin, &ns);
    let (old_ca, ca) = (pki::ca("old CA"), pki::ca(&format!("{label} CA")));
    let old = pki::leaf("old.cluster.example", -20, &old_ca);
    let goal = pki::leaf("cluster.example", -10, &ca);
    for (name, cert, issuer) in [("cluster-old", &old, &old_ca), ("cluster-cn", &goal, &ca)] {
        store_certificate(s, Some(&judge), name, cert, issuer).await;
    }
    for i in 0..MEMBERS {
        apply(&s.admin, &ns, &member_pod(&format!("member-{i}"), &[("app", label)])).await;
    }
    let by_thumbprint = Declaration::example("declaration-thumbprint.yaml")
        .by_thumbprint(&old.thumbprint)
        .health_check("3s", "2s", "3s")
        .failure_action(action)
        .pod_members(&[("app", label)]);
    by_thumbprint.apply(&s.admin, &ns).await;
    let operator = Operator::start(&s.plane, &ns);
    // A window long enough that a client slowed by a loaded machine still
    // counts as failing between its calls.
    let members = start_members(s, &root, Duration::from_secs(20)).await;
    wait_ready(&s.admin, &ns, DECLARATION, Duration::from_secs(60)).await;
    let write = |name: &str, pem: String| {
        let path = root.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let client = Arc::new(Unmanaged {
        config: StdMutex::new(UnmanagedConfig {
            host: "old.cluster.example".to_owned(),
            cacert: write("old-ca.crt", old_ca.pem.clone()),
            cert: write("old.crt", old.pem.clone()),
            key: write("old.key", old.key.serialize_pem()),
        }),
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let unmanaged = call_as_unmanaged_client(client.clone(), members[0].inbound.port());
    let (calls, caller) = call_every_member_all_the_time(&members);
    eventually(
        "the unmanaged client's calls succeed before the change",
        Duration::from_secs(20),
        || async { (client.ok.load(Ordering::Relaxed) >= 3).then_some(()) },
    )
    .await;
    assert_eq!(
        client.failed.load(Ordering::Relaxed),
        0,
        "before the change, nothing fails"
    );
    let _stop = StopCallers(client.clone(), calls.clone());
    HealthBed {
        root,
        judge,
        old_ca,
        ca,
        old,
        goal,
        by_thumbprint,
        operator,
        members,
        client,
        unmanaged: Some(unmanaged),
        calls,
        caller,
        _stop,
    }
}

impl HealthBed {
    /// The declaration by common name from the new CA: the conversion.
    fn converted(&self) -> Declaration {
        self.by_thumbprint
            .clone()
            .by_common_names(&[("cluster.example", &self.ca.thumbprint)])
    }

    /// The client trusts both CAs, calls the new name, presents the new certificate.
    fn fix_client(&self) {
        let write = |name: &str, pem: String| {
            let path = self.root.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        *self.client.config.lock().unwrap() = UnmanagedConfig {
            host: "cluster.example".to_owned(),
            cacert: write("both-cas.crt", format!("{}{}", self.old_ca.pem, self.ca.pem)),
            cert: write("goal.crt", self.goal.pem.clone()),
            key: write("goal.key", self.goal.key.serialize_pem()),
        };
    }

    /// The client is decommissioned: it calls no more.
    async fn stop_client(&mut self) {
        self.client.stop.store(true, Ordering::Relaxed);
        if let Some(unmanaged) = self.unmanaged.take() {
            unmanaged.await.unwrap();
        }
    }

    /// Stops the callers; no member ever failed a call to another, and
    /// every revision, forward and back, kept the invariant.
    async fn finish(mut self, scenario: &str, during: &str) {
        self.stop_client().await;
        self.calls.stop.store(true, Ordering::Relaxed);
        self.caller.await.unwrap();
        assert_every_call_succeeded(&self.calls, 50, scenario, during);
        wind_down(self.judge, self.members, self.operator, &self.root).await;
    }
}

/// What `Stalled` says once it is True with `reason`.
async fn stalled(s: &Scenario, reason: &str, timeout: Duration) -> (ClusterCertificateDeclaration, String) {
    let d = eventually(&format!("Stalled/{reason}"), timeout, || async {
        let d = declaration(&s.admin, &s.namespace, DECLARATION).await;
        let stalled = condition(&d, "Stalled")?;
        (stalled.status == "True" && stalled.reason == reason).then_some(d)
    })
    .await;
    let message = condition(&d, "Stalled").unwrap().message.clone();
    (d, message)
}

/// A client certshift does not manage, trusting only the CA of the
/// certificate presented before the change, calls member-0 the whole time.
/// When the conversion presents the new certificate, member-0's agent sees
/// the client refuse it (`unknown_ca`), reports `certshift.io/Healthy=False`,
/// the revision's health check fails, and the walk holds before narrowing
/// the old certificate away — `Stalled/HealthCheckFailed`, naming the member
/// and the peer (`failureAction: Manual`). Members never fail a call to
/// each other. Once the client trusts the new CA (and presents an accepted
/// certificate), the member is healthy again and the walk goes on to `Ready`.
pub async fn a_client_refusing_the_new_certificate_holds_the_walk_until_it_is_fixed(s: Scenario) {
    let ns = s.namespace.clone();
    let bed = health_bed(&s, "health", certshift::crd::FailureAction::Manual).await;
    bed.converted().apply(&s.admin, &ns).await;
    let (held, stalled) = stalled(&s, "HealthCheckFailed", Duration::from_secs(90)).await;
    assert!(
        stalled.contains("pod/member-0: CertificateRejectedByPeers"),
        "{stalled}"
    );
    assert!(
        stalled.contains("refused by 127.0.0.1 with unknown_ca"),
        "the peer and its alert are named: {stalled}"
    );
    assert!(!is_true(&held, "Ready"));
    let status = held.status.clone().unwrap();
    let upgrade = status.upgrade.clone().unwrap();
    let health = upgrade.health.clone().unwrap();
    assert_eq!(health.state, "Failed");
    assert_eq!(
        health.unhealthy.len(),
        1,
        "only member-0 is called by the client: {health:?}"
    );
    assert_eq!(health.unhealthy[0].member, "pod/member-0");
    assert_eq!(
        status.presenting.as_ref().unwrap().thumbprint,
        bed.goal.thumbprint,
        "held at the presentation"
    );
    assert!(!upgrade.plan.is_empty(), "revisions are still to publish");
    let effective = serde_json::to_string(&status.effective).unwrap();
    assert!(
        effective.contains(&bed.old.thumbprint),
        "the old certificate is still accepted: {effective}"
    );
    // The agent says it on its Pod: the condition and its mirror.
    let pods: Api<Pod> = Api::namespaced(s.admin.clone(), &ns);
    let pod = pods.get("member-0").await.unwrap();
    let healthy = pod
        .status
        .and_then(|st| st.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "certshift.io/Healthy")
        .expect("the condition certshift.io/Healthy on member-0");
    assert_eq!(
        (healthy.status.as_str(), healthy.reason.as_deref()),
        ("False", Some("CertificateRejectedByPeers")),
        "{healthy:?}"
    );
    wait_event(&s.admin, &ns, Some("Warning"), "HealthCheckFailed").await;
    let text = status_text(&s).await;
    for line in [
        "  Health check: Failed, failing since ",
        "    pod/member-0: CertificateRejectedByPeers: revision ",
    ] {
        assert!(text.contains(line), "certshift status lacks {line:?}:\n{text}");
    }
    // Held: a few seconds later, nothing more is published.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = declaration(&s.admin, &ns, DECLARATION).await;
    assert_eq!(
        still.status.unwrap().upgrade.unwrap().revision,
        upgrade.revision,
        "held"
    );

    bed.fix_client();
    let (fixed_at, failed_before_fix) = (
        bed.client.ok.load(Ordering::Relaxed),
        bed.client.failed.load(Ordering::Relaxed),
    );
    let converted = wait_converted(&s.admin, &ns, DECLARATION, Duration::from_secs(120)).await;
    assert!(is_true(&converted, "Ready"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failed) = (
        bed.client.ok.load(Ordering::Relaxed),
        bed.client.failed.load(Ordering::Relaxed),
    );
    println!(
        "  health: the unmanaged client failed {failed_before_fix} calls while it trusted only the old CA; \
         {} calls after its fix",
        ok - fixed_at
    );
    assert!(failed_before_fix > 0, "the client did refuse the new certificate");
    assert!(ok > fixed_at, "the fixed client's calls succeed");
    // The call in flight when the configuration changed may fail; none after.
    assert!(
        failed - failed_before_fix <= 1,
        "the fixed client failed {} calls",
        failed - failed_before_fix
    );
    bed.finish("health", "through the held and the resumed conversion")
        .await;
}

/// The same client, under the default `failureAction: Rollback`: the
/// health check fails at the presentation revision, certshift walks back to
/// the declaration by thumbprint (present the old certificate, narrow), and
/// ends `Stalled/RolledBack` naming the member and the peer; the client's
/// calls succeed again, members never fail a call, every revision forward
/// and back keeps the invariant. The same generation is not tried again;
/// `certshift.io/retry` set to it, the client decommissioned, walks to
/// `Ready`.
pub async fn a_client_refusing_the_new_certificate_rolls_the_change_back(s: Scenario) {
    let ns = s.namespace.clone();
    let mut bed = health_bed(&s, "rollback", certshift::crd::FailureAction::Rollback).await;
    bed.converted().apply(&s.admin, &ns).await;
    let (rolled_back, message) = stalled(&s, "RolledBack", Duration::from_secs(120)).await;
    for said in [
        "rolled back to the declaration of revision 1",
        "pod/member-0: CertificateRejectedByPeers",
        "refused by 127.0.0.1 with unknown_ca",
        "certshift.io/retry is set to 2",
    ] {
        assert!(message.contains(said), "Stalled says {said:?}: {message}");
    }
    assert!(!is_true(&rolled_back, "Ready"));
    let status = rolled_back.status.clone().unwrap();
    assert_eq!(
        status.presenting.as_ref().unwrap().thumbprint,
        bed.old.thumbprint,
        "presenting the old certificate again"
    );
    assert_eq!(status.declared_by.as_deref(), Some("Thumbprint"));
    let upgrade = status.upgrade.clone().unwrap();
    let rollback = upgrade.rollback.clone().unwrap();
    assert_eq!(
        (rollback.state.as_str(), rollback.reason.as_str()),
        ("RolledBack", "HealthCheckFailed")
    );
    assert!(upgrade.plan.is_empty(), "nothing left to publish");
    assert_eq!(
        observed_revisions_of(&s, &["member-0", "member-1", "member-2"]).await,
        vec![Some(upgrade.revision); MEMBERS],
        "every member acknowledged the last revision back"
    );
    for reason in ["HealthCheckFailed", "RollingBack", "RolledBack"] {
        wait_event(&s.admin, &ns, Some("Warning"), reason).await;
    }
    // The client's calls succeed again, with nothing changed on its side.
    let (ok, failed) = (
        bed.client.ok.load(Ordering::Relaxed),
        bed.client.failed.load(Ordering::Relaxed),
    );
    assert!(failed > 0, "the client did refuse the new certificate");
    eventually("the client's calls succeed again", Duration::from_secs(20), || async {
        (bed.client.ok.load(Ordering::Relaxed) >= ok + 5).then_some(())
    })
    .await;
    assert!(
        bed.client.failed.load(Ordering::Relaxed) <= failed + 1,
        "after the rollback the client fails no more calls"
    );
    println!("  rollback: the unmanaged client failed {failed} calls before the rollback, none after");
    // Not tried again: a few seconds later, nothing more is published.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = declaration(&s.admin, &ns, DECLARATION).await;
    assert_eq!(
        still.status.unwrap().upgrade.unwrap().revision,
        upgrade.revision,
        "not tried again"
    );

    // Retried, the client decommissioned: the conversion goes through.
    bed.stop_client().await;
    let generation = still.metadata.generation.unwrap();
    let retry = serde_json::json!({"metadata": {"annotations": {"certshift.io/retry": generation.to_string()}}});
    Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), &ns)
        .patch(DECLARATION, &PatchParams::default(), &Patch::Merge(&retry))
        .await
        .expect("annotate certshift.io/retry");
    let converted = wait_converted(&s.admin, &ns, DECLARATION, Duration::from_secs(120)).await;
    assert!(is_true(&converted, "Ready"));
    assert!(converted.status.unwrap().upgrade.unwrap().rollback.is_none());
    bed.finish("rollback", "through the conversion, its rollback and its retry")
        .await;
}

/// `failureAction: Manual`, driven by a person with the CLI's own code:
/// held at the failed presentation, `certshift rollback` walks back to the
/// declaration by thumbprint (`Stalled/RolledBack`, reason `Requested`);
/// retried, it fails and holds again, and `certshift resume` goes on past
/// the held revision — the client's refusals are then the baseline of the
/// revisions after it, so the change completes while that client, which
/// nobody fixed, keeps failing. Members never fail a call.
pub async fn a_person_rolls_back_or_resumes_a_held_change_with_the_cli(s: Scenario) {
    use certshift::cli::action::{Verb, request};
    let ns = s.namespace.clone();
    let bed = health_bed(&s, "manual", certshift::crd::FailureAction::Manual).await;
    bed.converted().apply(&s.admin, &ns).await;
    let (held, _) = stalled(&s, "HealthCheckFailed", Duration::from_secs(90)).await;
    let set = request(&s.admin, &ns, DECLARATION, Verb::Rollback)
        .await
        .expect("certshift rollback");
    let generation = held.metadata.generation.unwrap();
    assert_eq!(set, format!("certshift.io/action=rollback/{generation}"));
    let (rolled_back, _) = stalled(&s, "RolledBack", Duration::from_secs(90)).await;
    let status = rolled_back.status.unwrap();
    assert_eq!(status.upgrade.unwrap().rollback.unwrap().reason, "Requested");
    assert_eq!(status.presenting.unwrap().thumbprint, bed.old.thumbprint);
    let refused = request(&s.admin, &ns, DECLARATION, Verb::Resume)
        .await
        .expect_err("nothing to resume once rolled back");
    assert!(refused.contains("Stalled with RolledBack"), "{refused}");
    let missing = request(&s.admin, &ns, "nosuch", Verb::Rollback)
        .await
        .expect_err("no such declaration");
    assert_eq!(
        missing,
        format!("ClusterCertificateDeclaration {ns}/nosuch not found (kubectl get ccd -n {ns})")
    );
    // Retried once the client's last refusals are older than the agents'
    // window (20 s): else they would be the retried revision's baseline.
    tokio::time::sleep(Duration::from_secs(22)).await;
    // Retried: it fails at the same revision and holds; resumed, it goes on.
    let retry = serde_json::json!({"metadata": {"annotations": {"certshift.io/retry": generation.to_string()}}});
    Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), &ns)
        .patch(DECLARATION, &PatchParams::default(), &Patch::Merge(&retry))
        .await
        .expect("annotate certshift.io/retry");
    let (held, _) = stalled(&s, "HealthCheckFailed", Duration::from_secs(90)).await;
    let held_at = held.status.unwrap().upgrade.unwrap().revision;
    let set = request(&s.admin, &ns, DECLARATION, Verb::Resume)
        .await
        .expect("certshift resume");
    assert_eq!(set, format!("certshift.io/action=resume/{held_at}"));
    let converted = wait_converted(&s.admin, &ns, DECLARATION, Duration::from_secs(120)).await;
    assert!(is_true(&converted, "Ready"));
    let failing = bed.client.failed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        bed.client.failed.load(Ordering::Relaxed) > failing,
        "the client nobody fixed still fails: resumed, not healed"
    );
    bed.finish(
        "manual",
        "through a held change, its rollback, its retry and its resumption",
    )
    .await;
}
