//! The requests the operator makes per object on its hot paths, counted
//! from the API server's audit log: counts, not timings, so they hold on any
//! machine and fail the moment a read or a write is added to a hot path.
//! The full benchmark (docs/performance.md) measures the times.

use std::collections::BTreeMap;

use certshift::crd::ObservedCertificate;
use certshift_e2e::control_plane::OPERATOR_USER;

use super::*;

/// W1 at this many ObservedCertificates, W4 at as many renewals.
const OBJECTS: usize = 200;

/// The operator's requests on objects of the scenario's namespace by verb
/// and resource (`get secrets`, `patch observedcertificates/status`); the
/// watches' lists and watches are counted apart by the caller.
fn requests(s: &Scenario) -> BTreeMap<String, usize> {
    let mut by_verb = BTreeMap::new();
    for request in s.plane.requests_in(OPERATOR_USER, &s.namespace) {
        let (verb, rest) = request.split_once(' ').unwrap_or_default();
        let mut parts = rest.split('/');
        let resource = parts.next().unwrap_or_default();
        let subresource = parts.nth(1).map(|s| format!("/{s}")).unwrap_or_default();
        *by_verb.entry(format!("{verb} {resource}{subresource}")).or_default() += 1;
    }
    by_verb
}

fn since(after: &BTreeMap<String, usize>, before: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Every ObservedCertificate of the namespace presents `thumbprints[name]`.
async fn all_current(s: &Scenario, thumbprints: &BTreeMap<String, String>) {
    eventually(
        &format!("{} ObservedCertificates current", thumbprints.len()),
        Duration::from_secs(180),
        || async {
            let api: Api<ObservedCertificate> = Api::namespaced(s.admin.clone(), &s.namespace);
            let list = api.list(&Default::default()).await.ok()?;
            let current = list
                .items
                .iter()
                .filter(|o| {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    let now = o
                        .status
                        .as_ref()
                        .and_then(|s| s.current.as_ref())
                        .map(|c| &c.thumbprint);
                    now.is_some() && now == thumbprints.get(&name)
                })
                .count();
            (current == thumbprints.len()).then_some(())
        },
    )
    .await;
}

/// W1 (a cold start over 200 ObservedCertificates) makes exactly 3 requests
/// per ObservedCertificate — read the source, create the store, apply the
/// status — and no LIST beyond its watches' own; W4 (200 renewals) makes 2
/// writes per renewal (the store replaced, the status applied) and the 3
/// reads it makes today (the ObservedCertificate, whose status the cache
/// does not keep; the source; the store). Any request added to either path
/// fails this.
pub async fn requests_per_object_on_the_hot_paths_are_counted(s: Scenario) {
    let ns = s.namespace.clone();
    let ca = pki::ca("hot path CA");
    let mut thumbprints = BTreeMap::new();
    for i in 0..OBJECTS {
        let name = format!("cert-{i}");
        let cert = pki::leaf(&format!("{name}.example"), -10, &ca);
        apply(&s.admin, &ns, &pki::tls_secret(&name, &cert, &ca)).await;
        apply(&s.admin, &ns, &observed_certificate(&name, &name, None)).await;
        thumbprints.insert(name, cert.thumbprint);
    }
    let before = requests(&s);
    let operator = Operator::start(&s.plane, &ns);
    all_current(&s, &thumbprints).await;
    // Settled: nothing more comes of the cold start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w1 = since(&requests(&s), &before);
    let per_object = |key: &str, counted: &BTreeMap<String, usize>| counted.get(key).copied().unwrap_or(0);
    println!("  hot paths: W1 at {OBJECTS}: {w1:?}");
    for (key, expected) in [
        ("get secrets", OBJECTS),
        ("create secrets", OBJECTS),
        ("patch observedcertificates/status", OBJECTS),
    ] {
        assert_eq!(per_object(key, &w1), expected, "W1 {key}: {w1:?}");
    }
    // The watches list once each (and may relist); a LIST per reconcile would be 200.
    let lists: usize = w1.iter().filter(|(k, _)| k.starts_with("list ")).map(|(_, v)| v).sum();
    let watches: usize = w1.iter().filter(|(k, _)| k.starts_with("watch ")).map(|(_, v)| v).sum();
    let per_object_requests = w1.values().sum::<usize>() - lists - watches;
    assert_eq!(
        per_object_requests,
        3 * OBJECTS,
        "3.00 requests per ObservedCertificate: {w1:?}"
    );
    assert!(lists <= 12, "no LIST per reconcile: {w1:?}");

    // W4: every source renewed once.
    let before = requests(&s);
    for i in 0..OBJECTS {
        let name = format!("cert-{i}");
        let cert = pki::leaf(&format!("{name}.example"), -5, &ca);
        apply(&s.admin, &ns, &pki::tls_secret(&name, &cert, &ca)).await;
        thumbprints.insert(name, cert.thumbprint);
    }
    all_current(&s, &thumbprints).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w4 = since(&requests(&s), &before);
    println!("  hot paths: W4, {OBJECTS} renewals: {w4:?}");
    let writes: usize = w4
        .iter()
        .filter(|(k, _)| {
            ["create ", "update ", "patch ", "delete "]
                .iter()
                .any(|v| k.starts_with(v))
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(writes, 2 * OBJECTS, "2.00 writes per renewal: {w4:?}");
    let reads: usize = w4.iter().filter(|(k, _)| k.starts_with("get ")).map(|(_, v)| v).sum();
    assert_eq!(reads, 3 * OBJECTS, "3.00 reads per renewal: {w4:?}");
    assert!(
        !w4.keys().any(|k| k.starts_with("list ")),
        "no LIST on a renewal: {w4:?}"
    );
    operator.stop().await;
}
