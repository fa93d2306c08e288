//! `certshift-bench`: the operator at scale on the local kube-apiserver, every
//! figure next to a floor measured in the same run (docs/performance.md).
//!
//! W1 cold start over N ObservedCertificates (mixed ECDSA/RSA leaves, chains of
//! 2) plus unrelated Secrets; W2 the same, idle; W4 source renewals at a fixed
//! rate; W3 declarations mid-conversion with members acknowledging. Floors: the
//! write floor (a plain client's server-side-apply status patches, as fast as
//! the server takes them) and the parse floor (facts extraction in a loop).
//!
//! Usage: certshift-bench [--scales 1000,10000,30000] [--unrelated 10000] [--idle 300]
//!        [--declarations 1000] [--renewal-rate 100] [--renewal-seconds 30] [--check]
//!
//! Every target of docs/performance.md is judged at the end; with `--check`
//! (as `make bench` runs it) a missed target exits 1.

use std::alloc::System;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cap::Cap;
use certshift::crd::{
    CertificateSource, ClusterCertificateDeclaration, LocalObjectReference, ObservedCertificate,
    ObservedCertificateSpec, ObservedCertificateStatus,
};
use certshift::facts::{CertificateBundle, TlsMaterial};
use certshift::outputs::{REVISION_ANNOTATION, store_name};
use certshift_e2e::control_plane::{ADMIN_TOKEN, OPERATOR_USER, difference, process_cpu_seconds};
use certshift_e2e::manifests::Declaration;
use certshift_e2e::{
    ControlPlane, Operator, acknowledge_as_published, apply_yaml, create_namespace, example, install_crds, pki,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};

/// Counts live heap bytes, so the operator's memory is measured, not guessed.
#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

const NS: &str = "bench";
const CONCURRENCY: usize = 64;
/// The operator's watches (each lists once, more pages for more objects).
const WATCHES: usize = 12;

struct Args {
    scales: Vec<usize>,
    unrelated: usize,
    idle: Duration,
    declarations: usize,
    renewal_rate: u32,
    renewal_seconds: u64,
    check: bool,
}

fn args() -> Args {
    let mut args = Args {
        scales: vec![1000, 10_000, 30_000],
        unrelated: 10_000,
        idle: Duration::from_secs(300),
        declarations: 1000,
        renewal_rate: 100,
        renewal_seconds: 30,
        check: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(option) = given.next() {
        if option == "--check" {
            args.check = true;
            continue;
        }
        let value = given.next().unwrap_or_else(|| panic!("{option} needs a value"));
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{option}: not a number: {value}"))
        };
        match option.as_str() {
            "--scales" => args.scales = value.split(',').map(|s| s.parse().expect("scale")).collect(),
            "--unrelated" => args.unrelated = number() as usize,
            "--idle" => args.idle = Duration::from_secs(number()),
            "--declarations" => args.declarations = number() as usize,
            "--renewal-rate" => args.renewal_rate = number() as u32,
            "--renewal-seconds" => args.renewal_seconds = number(),
            other => panic!("unknown option {other}"),
        }
    }
    args
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    process_cpu_seconds(std::process::id())
}

fn heap() -> usize {
    HEAP.allocated()
}

/// Live heap once in-flight requests are done: the least of five samples a
/// second apart (transient buffers come and go; what stays is the cache).
async fn settled_heap() -> usize {
    let mut least = usize::MAX;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        least = least.min(heap());
    }
    least
}

fn kib(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

/// One certificate source: a leaf (ECDSA or RSA key) and its CA, as a TLS Secret's data.
struct Source {
    name: String,
    data: BTreeMap<String, ByteString>,
    thumbprint: String,
}

struct Pki {
    cas: Vec<pki::Issued>,
    rsa_key_pem: String,
}

impl Pki {
    fn new() -> Self {
        use rsa::pkcs8::EncodePrivateKey as _;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
        let rsa_key_pem = key.to_pkcs8_pem(Default::default()).expect("PKCS#8").to_string();
        Self {
            cas: vec![pki::ca("bench CA one"), pki::ca("bench CA two")],
            rsa_key_pem,
        }
    }

    /// Leaf `i`: even ones ECDSA P-256, odd ones RSA 2048; chain of 2 in tls.crt.
    fn source(&self, name: &str, i: usize) -> Source {
        let ca = &self.cas[i % 2];
        let key = (i % 2 == 1).then(|| {
            rcgen::KeyPair::from_pem_and_sign_algo(&self.rsa_key_pem, &rcgen::PKCS_RSA_SHA256).expect("RSA key pair")
        });
        let leaf = pki::leaf_with_key(&format!("{name}.bench.example"), -1, ca, key);
        let data = BTreeMap::from([
            (
                "tls.crt".to_owned(),
                ByteString(format!("{}{}", leaf.pem, ca.pem).into_bytes()),
            ),
            ("tls.key".to_owned(), ByteString(leaf.key.serialize_pem().into_bytes())),
            ("ca.crt".to_owned(), ByteString(ca.pem.clone().into_bytes())),
        ]);
        Source {
            name: name.to_owned(),
            data,
            thumbprint: leaf.thumbprint,
        }
    }
}

fn tls_secret(source: &Source) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(source.name.clone()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(source.data.clone()),
        ..Default::default()
    }
}

/// An unrelated Secret of realistic size (about 2 KiB of data).
fn unrelated_secret(i: usize) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("unrelated-{i}")),
            labels: Some(BTreeMap::from([("app".to_owned(), format!("app-{}", i % 50))])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("password".to_owned(), ByteString(format!("{i:032}").into_bytes())),
            ("config.json".to_owned(), ByteString(vec![b'x'; 2000])),
        ])),
        ..Default::default()
    }
}

fn observed(name: &str) -> ObservedCertificate {
    ObservedCertificate::new(
        name,
        ObservedCertificateSpec {
            source: CertificateSource {
                secret_ref: LocalObjectReference { name: name.into() },
            },
            ..Default::default()
        },
    )
}

/// Creates `objects`, generated as they are sent (so a large batch never
/// sits in the heap being measured).
async fn create_all<K>(api: &Api<K>, objects: impl IntoIterator<Item = K>)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    futures::stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move {
                let name = object.meta().name.clone().unwrap_or_default();
                for attempt in 0.. {
                    match api.create(&PostParams::default(), &object).await {
                        Ok(_) => return,
                        Err(kube::Error::Api(status)) if status.code == 409 => return,
                        Err(err) if attempt < 5 => {
                            eprintln!("create {name}: {err}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(err) => panic!("create {name}: {err}"),
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<()>()
        .await;
}

/// Watches `api` until `done` holds for `expected` objects at once; returns
/// when it does. Keeps no objects, only names.
async fn wait_all<K>(api: Api<K>, expected: usize, done: impl Fn(&K) -> bool)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut ok: HashSet<String> = HashSet::new();
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = stream.try_next().await.expect("watch") {
        let (watcher::Event::Apply(object) | watcher::Event::InitApply(object)) = event else {
            continue;
        };
        if done(&object) {
            ok.insert(object.name_any());
        } else {
            ok.remove(&object.name_any());
        }
        if ok.len() >= expected {
            return;
        }
    }
}

fn synced(o: &ObservedCertificate) -> bool {
    o.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Synced" && c.status == "True") && s.current.is_some())
}

/// The write floor: `count` server-side-apply status patches spread over
/// `objects` ObservedCertificates in `namespace`, as fast as the server takes
/// them. Returns patches per second.
async fn write_floor(client: &Client, namespace: &str, objects: usize, count: usize) -> f64 {
    let api: Api<ObservedCertificate> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply("certshift-bench-floor").force();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let (api, params) = (api.clone(), params.clone());
            async move {
                let name = format!("floor-{}", i % objects);
                let status = serde_json::json!({
                    "apiVersion": "certshift.io/v1alpha1", "kind": "ObservedCertificate",
                    "status": {"observedGeneration": 1, "instanceCount": 1, "conditions": [{
                        "type": "Synced", "status": "True", "reason": "Synced",
                        "message": format!("floor patch {i}"), "observedGeneration": 1,
                        "lastTransitionTime": jiff::Timestamp::now().to_string(),
                    }]}
                });
                api.patch_status(&name, &params, &Patch::Apply(&status))
                    .await
                    .unwrap_or_else(|err| panic!("floor patch {name}: {err}"));
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<()>()
        .await;
    count as f64 / started.elapsed().as_secs_f64()
}

/// Operator writes in `namespace` by kind, from the audit log.
fn writes_by_kind(plane: &ControlPlane, namespace: &str) -> BTreeMap<String, usize> {
    plane.writes_by_kind(OPERATOR_USER, namespace)
}

/// Every operator request in `namespace`, reads included, by verb and kind.
fn requests_by_kind(plane: &ControlPlane, namespace: &str) -> BTreeMap<String, usize> {
    plane.requests_by_kind(OPERATOR_USER, namespace)
}

fn total(by_kind: &BTreeMap<String, usize>) -> usize {
    by_kind.values().sum()
}

/// The targets of docs/performance.md, judged as their figures come in.
#[derive(Default)]
struct Targets(Vec<(String, bool)>);

impl Targets {
    fn judge(&mut self, figure: String, met: bool) {
        self.0.push((figure, met));
    }

    /// Prints every target with its verdict; true when all are met.
    fn report(&self) -> bool {
        let missed = self.0.iter().filter(|(_, met)| !met).count();
        println!("\n== targets: {} of {} met", self.0.len() - missed, self.0.len());
        for (figure, met) in &self.0 {
            println!("{} {figure}", if *met { "met   " } else { "MISSED" });
        }
        missed == 0
    }
}

fn main() {
    let args = args();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "certshift-bench: scales {:?}, {} unrelated Secrets",
        args.scales, args.unrelated
    );
    let pki = Pki::new();
    let mut targets = Targets::default();
    let mut steady = Vec::new();
    for (index, &n) in args.scales.iter().enumerate() {
        let plane = ControlPlane::start();
        let at = Scale {
            n,
            first: index == 0,
            last: index + 1 == args.scales.len(),
        };
        steady.push((n, runtime.block_on(scale(&plane, &pki, at, &args, &mut targets))));
    }
    // Per object, without the fixed part: the slope between two scales,
    // each step and the whole range (growth measured, not extrapolated).
    let mut slopes: Vec<_> = steady.windows(2).map(|w| (w[0], w[1])).collect();
    if steady.len() > 2 {
        slopes.push((steady[0], steady[steady.len() - 1]));
    }
    println!();
    for ((small, at_small), (large, at_large)) in slopes {
        let slope = (at_large as f64 - at_small as f64) / (large - small) as f64;
        println!(
            "heap per ObservedCertificate, slope {small} -> {large}: {} (target <= 3 KiB)",
            kib(slope)
        );
        targets.judge(
            format!(
                "heap slope {small} -> {large}: {} per ObservedCertificate (<= 3 KiB)",
                kib(slope)
            ),
            slope <= 3.0 * 1024.0,
        );
    }
    let all_met = targets.report();
    if args.check && !all_met {
        std::process::exit(1);
    }
}

/// Where a scale stands in the run.
#[derive(Clone, Copy)]
struct Scale {
    n: usize,
    /// W3 runs once, at the first scale.
    first: bool,
    /// W2 idles the whole `--idle` at the last scale only; elsewhere at most
    /// 200 s, for the idle connections to close before the heap is read
    /// (hyper's pool closes them 90 s idle, at its next 90 s sweep).
    last: bool,
}

/// Runs every workload at `n`; returns the operator's steady heap in bytes.
async fn scale(plane: &ControlPlane, pki: &Pki, at: Scale, args: &Args, targets: &mut Targets) -> usize {
    let n = at.n;
    println!("\n== {n} ObservedCertificates, {} unrelated Secrets", args.unrelated);
    let admin = plane.client(ADMIN_TOKEN);
    install_crds(&admin).await;
    for namespace in [NS, "floor"] {
        create_namespace(&admin, namespace).await;
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let ocerts: Api<ObservedCertificate> = Api::namespaced(admin.clone(), NS);

    let setup = Instant::now();
    let sources: Vec<Source> = (0..n).map(|i| pki.source(&format!("cert-{i}"), i)).collect();
    create_all(&secrets, sources.iter().map(tls_secret)).await;
    create_all(&secrets, (0..args.unrelated).map(unrelated_secret)).await;
    create_all(&ocerts, sources.iter().map(|s| observed(&s.name))).await;
    let floor_objects = n.min(1000);
    let floor_api: Api<ObservedCertificate> = Api::namespaced(admin.clone(), "floor");
    create_all(&floor_api, (0..floor_objects).map(|i| observed(&format!("floor-{i}")))).await;
    println!("setup: {:.1}s", setup.elapsed().as_secs_f64());

    // Parse floor: the same sources' facts, in a tight loop on one thread.
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    for source in &sources {
        let bytes = |key: &str| source.data.get(key).map(|b| b.0.as_slice());
        CertificateBundle::from_tls(&TlsMaterial {
            tls_crt: bytes("tls.crt").expect("tls.crt"),
            tls_key: bytes("tls.key"),
            ca_crt: bytes("ca.crt"),
        })
        .expect("facts");
    }
    let parse_wall = wall.elapsed().as_secs_f64();
    let parse_cpu = cpu_seconds() - cpu;
    println!(
        "parse floor: {:.3}s for {n} sources ({:.0} µs each)",
        parse_wall,
        parse_wall * 1e6 / n as f64
    );

    // Write floor: as many status patches as the operator will make (one
    // status and one store Secret per ObservedCertificate), up to 20,000: the
    // rate is what is compared, and it holds from a few thousand patches on.
    let floor_rate = write_floor(&admin, "floor", floor_objects, (2 * n).min(20_000)).await;
    // The operator watches every namespace: the floor's objects must not be
    // its work during the workloads.
    floor_api
        .delete_collection(&Default::default(), &Default::default())
        .await
        .expect("delete the floor's ObservedCertificates");
    println!("write floor: {floor_rate:.0} server-side-apply status patches/s ({CONCURRENCY} in flight)");

    // W1: cold start.
    let lists_before = plane.lists(OPERATOR_USER);
    let heap_before = settled_heap().await;
    let (cpu, started) = (cpu_seconds(), Instant::now());
    let operator = Operator::start_with(plane, certshift::controller::Options::default());
    wait_all(ocerts.clone(), n, synced).await;
    let to_synced = started.elapsed().as_secs_f64();
    let w1_cpu = cpu_seconds() - cpu;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let w1 = writes_by_kind(plane, NS);
    let floor_time = total(&w1) as f64 / floor_rate;
    let heap_synced = settled_heap().await.saturating_sub(heap_before);
    println!(
        "W1 all Synced: {to_synced:.1}s; write floor for its {} writes: {floor_time:.1}s; ratio {:.2}x (target <= 1.5x)",
        total(&w1),
        to_synced / floor_time
    );
    println!(
        "W1 writes per ObservedCertificate: {:.2} ({w1:?})",
        total(&w1) as f64 / n as f64
    );
    let w1_requests = requests_by_kind(plane, NS);
    let per_object = total(&w1_requests) as f64 / n as f64;
    let w1_lists = plane.lists(OPERATOR_USER) - lists_before;
    println!(
        "W1 requests per ObservedCertificate, reads included: {per_object:.2} ({w1_requests:?}); {w1_lists} LIST requests (the watches' pages)"
    );
    let ratio = to_synced / floor_time;
    targets.judge(
        format!("W1 at {n}: {ratio:.2}x the write floor (<= 1.5x)"),
        ratio <= 1.5,
    );
    targets.judge(
        format!(
            "W1 at {n}: {:.2} writes per ObservedCertificate (2.00)",
            total(&w1) as f64 / n as f64
        ),
        total(&w1) == 2 * n,
    );
    // A Secret event landing during a first read may read again (the
    // cold-start race of docs/performance.md): up to 10 % more reads.
    targets.judge(
        format!("W1 at {n}: {per_object:.2} requests per ObservedCertificate (3.00; 10 % more reads allowed)"),
        per_object <= 3.1,
    );
    // One list per watch, in pages of 500 (the Secrets' and the
    // ObservedCertificates' lists are most of them), twice over for a relist:
    // a LIST per reconcile would be one per ObservedCertificate.
    let pages = 2 * (WATCHES + (n + args.unrelated).div_ceil(500) + n.div_ceil(500));
    targets.judge(
        format!(
            "W1 at {n}: {w1_lists} LIST requests (the watches' pages, <= {pages}; one per reconcile would be {n} more)"
        ),
        w1_lists <= pages,
    );
    println!(
        "W1 CPU: {:.2}s for {n} certificates = {:.2}s per 10k; parse floor {:.2}s per 10k; ratio {:.1}x",
        w1_cpu,
        w1_cpu * 1e4 / n as f64,
        parse_cpu * 1e4 / n as f64,
        w1_cpu / parse_cpu.max(1e-9)
    );

    // Baseline: a full Secret cache of the same namespace, as a controller
    // that caches Secrets would hold it.
    let count = secrets
        .list_metadata(&Default::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);
    let heap_at = settled_heap().await;
    let (reader, writer) = reflector::store::<Secret>();
    let cache = tokio::spawn(
        reflector(writer, watcher(secrets.clone(), watcher::Config::default()))
            .default_backoff()
            .for_each(|_| async {}),
    );
    reader.wait_until_ready().await.expect("full Secret cache");
    while reader.len() < count {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let full = settled_heap().await.saturating_sub(heap_at) as f64;
    println!(
        "baseline full-Secret cache: {} for {count} Secrets = {} per Secret; certshift holds {:.1}% of it",
        kib(full),
        kib(full / count as f64),
        100.0 * heap_synced as f64 / full
    );
    cache.abort();
    drop(reader);

    // W2: idle. The heap at its end is the steady state (idle connections closed).
    let before = writes_by_kind(plane, NS);
    let cpu = cpu_seconds();
    let idle = if at.last {
        args.idle
    } else {
        args.idle.min(Duration::from_secs(200))
    };
    tokio::time::sleep(idle).await;
    let idle_writes = difference(&writes_by_kind(plane, NS), &before);
    let steady = settled_heap().await.saturating_sub(heap_before);
    println!(
        "W2 idle {}s: {} writes {idle_writes:?}, CPU {:.2}s; heap {} (after the cold start {})",
        idle.as_secs(),
        total(&idle_writes),
        cpu_seconds() - cpu,
        kib(steady as f64),
        kib(heap_synced as f64)
    );
    targets.judge(
        format!(
            "W2 at {n}: {} writes in {}s idle (0)",
            total(&idle_writes),
            idle.as_secs()
        ),
        total(&idle_writes) == 0,
    );
    // Unrelated Secrets: as many again, while running. Created by a client
    // of their own, dropped before the heap is read: its burst's connections
    // (64 in flight) are not the operator's.
    let heap_at = settled_heap().await;
    {
        let creator: Api<Secret> = Api::namespaced(plane.client(ADMIN_TOKEN), NS);
        create_all(&creator, (args.unrelated..2 * args.unrelated).map(unrelated_secret)).await;
    }
    let per_unrelated = (settled_heap().await as f64 - heap_at as f64) / args.unrelated.max(1) as f64;
    println!(
        "heap per ObservedCertificate: at most {} (the whole steady heap / {n}; target <= 3 KiB); per unrelated Secret {} (target ~0)",
        kib(steady as f64 / n as f64),
        kib(per_unrelated)
    );
    targets.judge(
        format!(
            "heap at {n}: {} per unrelated Secret (~0: <= 0.1 KiB)",
            kib(per_unrelated)
        ),
        per_unrelated <= 0.1 * 1024.0,
    );

    // W4: renewals at a fixed rate, where its targets are (1k, 10k); above,
    // skipped to keep the run short.
    if n > 10_000 {
        println!("W4 not run above 10,000 ObservedCertificates");
    } else {
        renewal_targets(n, renewals(plane, &admin, pki, n, args).await, targets);
    }

    let w3 = if at.first && args.declarations > 0 {
        Some(declarations(plane, &admin, args.declarations, floor_rate).await)
    } else {
        None
    };
    operator.stop().await;
    if at.first {
        // With the operator stopped: what each request of a renewal costs
        // the API server (at the first scale only: the run stays short).
        write_costs(plane, &admin, n).await;
    }
    if let Some(w3) = w3 {
        // With the operator stopped: nothing reacts to the floor's writes.
        let floor = same_writes_floor(&admin, &w3).await;
        let ratio = w3.elapsed / floor;
        println!(
            "W3 same-writes floor: {floor:.1}s for its {} writes; ratio {ratio:.2}x",
            total(&w3.writes),
        );
        targets.judge(
            format!("W3 at {}: {ratio:.2}x the same-writes floor (<= 1.25x)", w3.count),
            ratio <= 1.25,
        );
        let per_revision = total(&w3.writes) as f64 / (w3.count * 5) as f64;
        targets.judge(
            format!(
                "W3 at {}: {per_revision:.2} writes per declaration per revision (<= 3.0)",
                w3.count
            ),
            per_revision <= 3.0,
        );
        // What the writes themselves cost against the write floor's patches:
        // the least ratio any operator making these writes could reach.
        println!(
            "W3 its writes alone, made by a plain client: {:.2}x the write floor",
            floor / (total(&w3.writes) as f64 / floor_rate)
        );
    }
    steady
}

/// Server-side applies `object` with `mark` as its revision annotation, so
/// that each apply is a real write.
async fn apply_marked<K>(api: &Api<K>, params: &PatchParams, mut object: K, mark: String) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    object.annotations_mut().insert(REVISION_ANNOTATION.into(), mark);
    let mut value = serde_json::to_value(&object).expect("object serializes");
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    api.patch(&object.name_any(), params, &Patch::Apply(&value))
        .await
        .map(|_| ())
}

/// What W3 measured, for the same-writes floor.
struct Conversions {
    count: usize,
    elapsed: f64,
    writes: BTreeMap<String, usize>,
}

/// The W3 floor of its own writes: a plain client making as many requests of
/// each kind as the operator made in W3, with the payloads it wrote (each
/// declaration's status, validation ConfigMap and presentation Secret as they
/// are at the end), as fast as the server takes them. A declaration status
/// carries about nine conditions, and its patch costs the server several
/// times the write floor's one-condition patch; this floor says how far the
/// operator is from the cost of the writes themselves. Event patches (series
/// counts) are replayed as creates, status updates (a status that drops
/// fields is replaced whole) as status applies. Returns seconds.
async fn same_writes_floor(admin: &Client, w3: &Conversions) -> f64 {
    use k8s_openapi::api::events::v1::Event;
    const W3: &str = "conversion";
    const FIELD_MANAGER: &str = "certshift-bench-floor";
    let declarations: Api<ClusterCertificateDeclaration> = Api::namespaced(admin.clone(), W3);
    let (maps, secrets, events) = (
        Api::<ConfigMap>::namespaced(admin.clone(), W3),
        Api::<Secret>::namespaced(admin.clone(), W3),
        Api::<Event>::namespaced(admin.clone(), W3),
    );
    let name = |i: usize| format!("d-{}", i % w3.count);
    let (mut statuses, mut validation, mut presentation) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..w3.count {
        let d = declarations.get(&name(i)).await.expect("declaration");
        statuses.push(d.status.expect("status"));
        let strip = |mut meta: ObjectMeta| ObjectMeta {
            name: meta.name.take(),
            labels: meta.labels.take(),
            annotations: meta.annotations.take(),
            owner_references: meta.owner_references.take(),
            ..ObjectMeta::default()
        };
        let mut map = maps.get(&format!("d-{i}-validation")).await.expect("validation");
        map.metadata = strip(map.metadata);
        validation.push(map);
        let mut secret = secrets.get(&format!("d-{i}-presentation")).await.expect("presentation");
        secret.metadata = strip(secret.metadata);
        presentation.push(secret);
    }
    let kinds = [
        "patch clustercertificatedeclarations/status",
        "patch configmaps",
        "patch secrets",
        "create events",
    ];
    // Replayed as the kind of the same index.
    let alike = ["update clustercertificatedeclarations/status", "", "", "patch events"];
    let count_of = |kind: &str| w3.writes.get(kind).copied().unwrap_or(0);
    let mut requests: Vec<(usize, usize)> = Vec::new();
    for (k, kind) in kinds.iter().enumerate() {
        let n = count_of(kind) + count_of(alike[k]);
        requests.extend((0..n).map(|i| (k, i)));
    }
    let others: usize = w3
        .writes
        .iter()
        .filter(|(kind, _)| !kinds.contains(&kind.as_str()) && !alike.contains(&kind.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(others, 0, "W3 made writes the floor does not replay: {:?}", w3.writes);
    // Interleaved, as the operator's reconciles interleave them.
    requests.sort_by_key(|&(k, i)| (i, k));
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let started = Instant::now();
    futures::stream::iter(requests)
        .map(|(k, i)| {
            let (params, name) = (params.clone(), name(i));
            let (declarations, maps, secrets, events) =
                (declarations.clone(), maps.clone(), secrets.clone(), events.clone());
            let mark = format!("floor patch {i}");
            let (status, map, secret) = (&statuses, &validation, &presentation);
            async move {
                let result = match k {
                    0 => {
                        let mut status = status[i % w3.count].clone();
                        if let Some(condition) = status.conditions.first_mut() {
                            condition.message = mark;
                        }
                        let patch = serde_json::json!({
                            "apiVersion": "certshift.io/v1alpha1", "kind": "ClusterCertificateDeclaration",
                            "status": status,
                        });
                        declarations.patch_status(&name, &params, &Patch::Apply(&patch)).await.map(|_| ())
                    }
                    1 => apply_marked(&maps, &params, map[i % w3.count].clone(), mark).await,
                    2 => apply_marked(&secrets, &params, secret[i % w3.count].clone(), mark).await,
                    _ => {
                        let event: Event = serde_json::from_value(serde_json::json!({
                            "metadata": {"name": format!("{name}.floor-{i}")},
                            "eventTime": jiff::Timestamp::now().to_string(),
                            "reportingController": "certshift-bench-floor", "reportingInstance": "floor",
                            "action": "Reconcile", "reason": "SwitchToCommonName", "type": "Normal",
                            "note": format!("{mark}: revision published; members validate by common name as declared"),
                            "regarding": {"apiVersion": "certshift.io/v1alpha1", "kind": "ClusterCertificateDeclaration",
                                          "name": name, "namespace": W3},
                        }))
                        .expect("event");
                        events.create(&PostParams::default(), &event).await.map(|_| ())
                    }
                };
                result.unwrap_or_else(|err| panic!("same-writes floor, {}: {err}", kinds[k]));
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<()>()
        .await;
    started.elapsed().as_secs_f64()
}

/// W4's targets: 2.00 writes per renewal; the lag at the two scales the
/// targets name.
fn renewal_targets(n: usize, w4: Renewals, targets: &mut Targets) {
    targets.judge(
        format!(
            "W4 at {n}: {:.2} writes per renewal (2.00; fewer when renewals of one source coalesce)",
            w4.writes_per_renewal
        ),
        w4.writes_per_renewal <= 2.0 && w4.missing == 0,
    );
    let lag_target = match n {
        1000 => Some((0.5, None)),
        10_000 => Some((1.0, Some(2.0))),
        _ => None,
    };
    if let Some((p99, max)) = lag_target {
        targets.judge(
            format!("W4 at {n}: lag p99 {:.2}s (<= {p99}s)", w4.p99),
            w4.p99 <= p99 && w4.missing == 0,
        );
        if let Some(max) = max {
            targets.judge(format!("W4 at {n}: lag max {:.2}s (<= {max}s)", w4.max), w4.max <= max);
        }
    }
}

/// What W4 measured.
struct Renewals {
    p99: f64,
    max: f64,
    missing: usize,
    writes_per_renewal: f64,
}

async fn renewals(plane: &ControlPlane, admin: &Client, pki: &Pki, n: usize, args: &Args) -> Renewals {
    let count = (args.renewal_rate as u64 * args.renewal_seconds) as usize;
    let renewed: Vec<Source> = (0..count)
        .map(|i| pki.source(&format!("cert-{}", i % n), i + 1))
        .collect();
    let expected: Arc<Mutex<HashMap<String, (String, Instant)>>> = Arc::default();
    let lags: Arc<Mutex<Vec<Duration>>> = Arc::default();
    // The renewals start once the measuring watch has listed: a renewal made
    // during its first list would be seen only after it, and the list's
    // cost would be counted as the renewals'.
    let (listed, watching) = tokio::sync::oneshot::channel::<()>();
    let watch = {
        let (api, expected, lags) = (
            Api::<ObservedCertificate>::namespaced(admin.clone(), NS),
            expected.clone(),
            lags.clone(),
        );
        tokio::spawn(async move {
            let mut listed = Some(listed);
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(Ok(event)) = stream.next().await {
                let o = match event {
                    watcher::Event::Apply(o) => o,
                    watcher::Event::InitDone => {
                        if let Some(listed) = listed.take() {
                            let _ = listed.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let current = o
                    .status
                    .as_ref()
                    .and_then(|s| s.current.as_ref())
                    .map(|c| c.thumbprint.clone());
                let mut expected = expected.lock().unwrap();
                if let Some((thumbprint, at)) = expected.get(&o.name_any())
                    && current.as_deref() == Some(thumbprint.as_str())
                {
                    lags.lock().unwrap().push(at.elapsed());
                    expected.remove(&o.name_any());
                }
            }
        })
    };
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    watching.await.expect("the measuring watch lists");
    let before = writes_by_kind(plane, NS);
    let (cpu_before, plane_before) = (cpu_seconds(), plane.cpu_seconds());
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.renewal_rate as f64));
    let started = Instant::now();
    let mut inflight = Vec::new();
    for source in renewed {
        ticker.tick().await;
        let secrets = secrets.clone();
        let expected = expected.clone();
        inflight.push(tokio::spawn(async move {
            let params = PatchParams::apply("certshift-bench-renewal").force();
            let mut secret = tls_secret(&source);
            secret.metadata.name = None;
            let patch = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "data": secret.data});
            expected
                .lock()
                .unwrap()
                .insert(source.name.clone(), (source.thumbprint.clone(), Instant::now()));
            secrets
                .patch(&source.name, &params, &Patch::Apply(&patch))
                .await
                .expect("renewal");
        }));
    }
    let offered = started.elapsed().as_secs_f64();
    for task in inflight {
        task.await.expect("renewal task");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !expected.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Where the time went: CPU per renewal of each process (the bench
    // process runs the operator and the watch that measures the lag).
    let per_renewal = |seconds: f64| seconds * 1e3 / count as f64;
    let (apiserver, etcd) = plane.cpu_seconds();
    println!(
        "W4 CPU per renewal: kube-apiserver {:.2} ms, etcd {:.2} ms, operator + bench {:.2} ms",
        per_renewal(apiserver - plane_before.0),
        per_renewal(etcd - plane_before.1),
        per_renewal(cpu_seconds() - cpu_before)
    );
    read_costs(plane, admin, n).await;
    let writes = difference(&writes_by_kind(plane, NS), &before);
    let mut lags = lags.lock().unwrap().clone();
    lags.sort();
    let pick = |q: f64| {
        lags.get(((lags.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    let missing = expected.lock().unwrap().len();
    let renewals = Renewals {
        p99: pick(0.99).as_secs_f64(),
        max: pick(1.0).as_secs_f64(),
        missing,
        writes_per_renewal: total(&writes) as f64 / count as f64,
    };
    println!(
        "W4 {count} renewals at {:.0}/s: observed {} (missing {missing}); lag p50 {:.2}s p99 {:.2}s max {:.2}s; {:.2} writes per renewal {writes:?}",
        count as f64 / offered,
        lags.len(),
        pick(0.5).as_secs_f64(),
        pick(0.99).as_secs_f64(),
        pick(1.0).as_secs_f64(),
        total(&writes) as f64 / count as f64
    );
    renewals
}

/// The API server's and etcd's CPU per read of each kind a renewal makes,
/// 2,000 of each by a plain client, 64 in flight: what a read taken off the
/// hot path saves. The sources stand for the Secrets (a store Secret is of
/// the same size); the ObservedCertificates are read with their status.
async fn read_costs(plane: &ControlPlane, admin: &Client, n: usize) {
    const READS: usize = 2000;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let ocerts: Api<ObservedCertificate> = Api::namespaced(admin.clone(), NS);
    for kind in ["get secrets", "get observedcertificates"] {
        let before = plane.cpu_seconds();
        let started = Instant::now();
        futures::stream::iter(0..READS)
            .map(|i| {
                let (secrets, ocerts) = (secrets.clone(), ocerts.clone());
                let name = format!("cert-{}", i % n);
                async move {
                    let read = match kind {
                        "get secrets" => secrets.get(&name).await.map(|_| ()),
                        _ => ocerts.get(&name).await.map(|_| ()),
                    };
                    read.unwrap_or_else(|err| panic!("{kind} {name}: {err}"));
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<()>()
            .await;
        print_cost(plane, &format!("read cost, {kind}"), before, started, READS);
    }
}

/// Prints what kube-apiserver and etcd spent per request of `count` made
/// since `before` (their CPU seconds) and `started`, and the rate.
fn print_cost(plane: &ControlPlane, what: &str, before: (f64, f64), started: Instant, count: usize) {
    let wall = started.elapsed().as_secs_f64();
    let after = plane.cpu_seconds();
    println!(
        "{what}: kube-apiserver {:.2} ms, etcd {:.2} ms of CPU each ({:.0}/s)",
        (after.0 - before.0) * 1e3 / count as f64,
        (after.1 - before.1) * 1e3 / count as f64,
        count as f64 / wall
    );
}

/// What each write of a renewal costs kube-apiserver and etcd, 2,000 of each
/// by a plain client, 64 objects in flight, with the operator stopped: the
/// status of an ObservedCertificate as the operator left it, written as a
/// server-side apply (the operator's), a JSON merge patch and an update (at
/// the resourceVersion last written); the same apply once the status is one
/// condition (the write floor's); the store Secret's update (the operator's)
/// and the source's apply (the renewal itself). Each changes the object.
async fn write_costs(plane: &ControlPlane, admin: &Client, n: usize) {
    const WRITES: usize = 2000;
    let ocerts: Api<ObservedCertificate> = Api::namespaced(admin.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let sample = ocerts.get("cert-0").await.expect("cert-0");
    println!(
        "write cost: an ObservedCertificate is {} bytes of JSON, its status {}, its managedFields {}",
        serde_json::to_vec(&sample).map(|b| b.len()).unwrap_or(0),
        serde_json::to_vec(&sample.status).map(|b| b.len()).unwrap_or(0),
        serde_json::to_vec(&sample.metadata.managed_fields)
            .map(|b| b.len())
            .unwrap_or(0),
    );
    let objects = n.min(WRITES);
    let rounds = WRITES / objects;
    let apply = PatchParams::apply("certshift-observed-certificate").force();
    for kind in [
        "status apply",
        "status merge patch",
        "status update",
        "(shrink)",
        "status apply of one condition",
        "store Secret update",
        "source Secret apply",
    ] {
        let before = plane.cpu_seconds();
        let started = Instant::now();
        futures::stream::iter(0..objects)
            .map(|o| {
                let (ocerts, secrets, apply) = (ocerts.clone(), secrets.clone(), apply.clone());
                let name = format!("cert-{o}");
                async move {
                    let failed = |err: kube::Error| -> ! { panic!("{kind} {name}: {err}") };
                    match kind {
                        "store Secret update" => {
                            let store = store_name(&name);
                            let mut secret = secrets.get(&store).await.unwrap_or_else(|e| failed(e));
                            for w in 0..rounds {
                                secret.metadata.managed_fields = None;
                                let data = secret.data.get_or_insert_default();
                                data.insert("probe".into(), ByteString(format!("{w}").into_bytes()));
                                secret = secrets
                                    .replace(&store, &PostParams::default(), &secret)
                                    .await
                                    .unwrap_or_else(|e| failed(e));
                            }
                        }
                        "source Secret apply" => {
                            let secret = secrets.get(&name).await.unwrap_or_else(|e| failed(e));
                            let params = PatchParams::apply("certshift-bench-renewal").force();
                            for w in 0..rounds {
                                let mut data = secret.data.clone().unwrap_or_default();
                                data.insert("probe".into(), ByteString(format!("{w}").into_bytes()));
                                let patch = serde_json::json!({
                                    "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "data": data,
                                });
                                secrets
                                    .patch(&name, &params, &Patch::Apply(&patch))
                                    .await
                                    .unwrap_or_else(|e| failed(e));
                            }
                        }
                        _ => {
                            let mut object = ocerts.get(&name).await.unwrap_or_else(|e| failed(e));
                            let rounds = if kind == "(shrink)" { 1 } else { rounds };
                            for w in 0..rounds {
                                let status = object.status.as_mut().expect("a status");
                                if kind == "(shrink)" {
                                    status.conditions.truncate(1);
                                    *status = ObservedCertificateStatus {
                                        conditions: std::mem::take(&mut status.conditions),
                                        ..Default::default()
                                    };
                                }
                                if let Some(condition) = status.conditions.first_mut() {
                                    condition.message = format!("{kind} cost probe {w}");
                                }
                                let body = serde_json::json!({
                                    "apiVersion": "certshift.io/v1alpha1", "kind": "ObservedCertificate",
                                    "status": status,
                                });
                                let written = match kind {
                                    "status merge patch" => {
                                        ocerts
                                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                                            .await
                                    }
                                    "status update" => {
                                        object.managed_fields_mut().clear();
                                        ocerts.replace_status(&name, &Default::default(), &object).await
                                    }
                                    _ => ocerts.patch_status(&name, &apply, &Patch::Apply(&body)).await,
                                };
                                object = written.unwrap_or_else(|e| failed(e));
                            }
                        }
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<()>()
            .await;
        if kind == "(shrink)" {
            continue;
        }
        print_cost(plane, &format!("write cost, {kind}"), before, started, rounds * objects);
    }
}

/// W3: `count` declarations over one store, each gated by its own member
/// pod, converted from thumbprint to common name at once.
async fn declarations(plane: &ControlPlane, admin: &Client, count: usize, floor_rate: f64) -> Conversions {
    const W3: &str = "conversion";
    println!("\n== W3: {count} declarations mid-conversion, one member pod each");
    create_namespace(admin, W3).await;
    apply_yaml(admin, W3, &example("store.yaml")).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), W3);
    let pod = |i: usize| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("member-{i}"), "labels": {"decl": format!("d-{i}")}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/member"}]}
        }))
        .expect("pod")
    };
    create_all(&pods, (0..count).map(pod)).await;
    let declaration = |file: &str, i: usize| -> ClusterCertificateDeclaration {
        let name = format!("d-{i}");
        let mut d = Declaration::example(file)
            .named(&name)
            .min_soak("0s")
            .pod_members(&[("decl", &name)])
            .0;
        d.metadata.namespace = Some(W3.to_owned());
        d
    };
    // Members: each pod acknowledges its declaration's revisions as they appear.
    let acker = acknowledge_as_published(admin, W3, CONCURRENCY);
    let api: Api<ClusterCertificateDeclaration> = Api::namespaced(admin.clone(), W3);
    let params = PatchParams::apply("certshift-bench").force();
    let apply_all = |file: &'static str| {
        let (api, params) = (api.clone(), params.clone());
        async move {
            futures::stream::iter(0..count)
                .map(|i| {
                    let (api, params) = (api.clone(), params.clone());
                    async move {
                        let d = declaration(file, i);
                        api.patch(&d.name_any(), &params, &Patch::Apply(&d))
                            .await
                            .expect("declaration");
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<()>()
                .await;
        }
    };
    let ready_by = |by: &'static str| {
        wait_all(api.clone(), count, move |d: &ClusterCertificateDeclaration| {
            d.status.as_ref().is_some_and(|s| {
                s.observed_generation == d.metadata.generation
                    && s.declared_by.as_deref() == Some(by)
                    && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
    };
    let started = Instant::now();
    apply_all("declaration-thumbprint.yaml").await;
    ready_by("Thumbprint").await;
    println!(
        "W3 {count} declarations Ready by thumbprint: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (before, requests_before) = (writes_by_kind(plane, W3), requests_by_kind(plane, W3));
    let (cpu, started) = (cpu_seconds(), Instant::now());
    apply_all("declaration-common-name.yaml").await;
    ready_by("CommonName").await;
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = difference(&writes_by_kind(plane, W3), &before);
    let floor_time = total(&writes) as f64 / floor_rate;
    println!(
        "W3 {count} conversions (5 revisions each) Ready: {elapsed:.1}s, CPU {:.1}s; write floor for its {} writes: {floor_time:.1}s; ratio {:.2}x",
        cpu_seconds() - cpu,
        total(&writes),
        elapsed / floor_time
    );
    println!(
        "W3 writes per declaration per revision: {:.2} {writes:?}",
        total(&writes) as f64 / (count * 5) as f64
    );
    let requests = difference(&requests_by_kind(plane, W3), &requests_before);
    println!(
        "W3 requests per declaration per revision, reads included: {:.2} {requests:?}",
        total(&requests) as f64 / (count * 5) as f64
    );
    acker.abort();
    Conversions { count, elapsed, writes }
}
