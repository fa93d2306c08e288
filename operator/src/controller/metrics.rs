//! Prometheus text metrics with fixed label sets, and the tiny HTTP server for
//! `/metrics`, `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use kube::ResourceExt as _;
use kube::runtime::reflector::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::crd::{
    CertificatePolicy, CertificatePolicyStatus, ClusterCertificateDeclaration, ClusterCertificateDeclarationStatus,
};

/// Upper bounds of the reconcile duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A Prometheus histogram's state: counts per bucket (not cumulative), sum.
#[derive(Default)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What an ObservedCertificate's reconcile reports (its cache keeps no status).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedGauges {
    pub not_after: Option<Timestamp>,
    /// Its `Ready` condition's status.
    pub ready: Option<String>,
}

#[derive(Default)]
pub struct Metrics {
    ready: AtomicBool,
    /// Watches failing now, by (controller, kind): their last error. `/readyz`
    /// names them until they deliver again.
    failing_watches: Mutex<BTreeMap<(&'static str, String), String>>,
    /// (controller) → count
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
    /// (controller, error label) → count
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// kind → count (kinds the code writes: a fixed set)
    writes: Mutex<BTreeMap<String, u64>>,
    revisions_published: Mutex<u64>,
    rollbacks: Mutex<u64>,
    /// (namespace, ObservedCertificate) → its gauges, as its last reconcile left them
    observed: Mutex<BTreeMap<(String, String), ObservedGauges>>,
    /// controller → reconcile durations
    durations: Mutex<BTreeMap<&'static str, Histogram>>,
    /// The controllers' caches: declarations' and policies' gauges are read
    /// from them at scrape time (what the API server says, nothing kept twice).
    declarations: Mutex<Option<Store<ClusterCertificateDeclaration>>>,
    policies: Mutex<Option<Store<CertificatePolicy>>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock().expect("metrics lock").entry(key).or_default() += 1;
}

impl Metrics {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn reconciled(&self, controller: &'static str) {
        bump(&self.reconciles, controller);
    }

    pub fn failed(&self, controller: &'static str, label: &'static str) {
        bump(&self.errors, (controller, label));
    }

    /// The watch of `kind` behind `controller` failed (its CRD deleted, access
    /// revoked, the API server away): a reconcile error `Watch`, and not
    /// ready until it delivers again.
    pub fn watch_failed(&self, controller: &'static str, kind: &str, error: &str) {
        bump(&self.errors, (controller, "Watch"));
        let mut failing = self.failing_watches.lock().expect("metrics lock");
        failing.insert((controller, kind.to_owned()), error.to_owned());
    }

    /// The watch of `kind` behind `controller` delivered an event.
    pub fn watch_delivered(&self, controller: &'static str, kind: &str) {
        let mut failing = self.failing_watches.lock().expect("metrics lock");
        if !failing.is_empty() {
            failing.remove(&(controller, kind.to_owned()));
        }
    }

    /// Why `/readyz` says not ready, if it does: starting, or failing watches.
    pub fn not_ready(&self) -> Option<String> {
        if !self.ready.load(Ordering::SeqCst) {
            return Some("starting: the controllers are not running yet".to_owned());
        }
        let failing = self.failing_watches.lock().expect("metrics lock");
        let watches: Vec<String> = failing
            .iter()
            .map(|((controller, kind), error)| format!("the {controller} controller's watch of {kind} fails: {error}"))
            .collect();
        (!watches.is_empty()).then(|| watches.join("; "))
    }

    /// One mutating request to the API server, by kind.
    pub fn write(&self, kind: &str) {
        let mut writes = self.writes.lock().expect("metrics lock");
        match writes.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                writes.insert(kind.to_owned(), 1);
            }
        }
    }

    pub fn reconcile_took(&self, controller: &'static str, seconds: f64) {
        let mut durations = self.durations.lock().expect("metrics lock");
        let histogram = durations.entry(controller).or_default();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|le| seconds <= *le) {
            histogram.buckets[bucket] += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    pub fn follow_declarations(&self, store: Store<ClusterCertificateDeclaration>) {
        *self.declarations.lock().expect("metrics lock") = Some(store);
    }

    pub fn follow_policies(&self, store: Store<CertificatePolicy>) {
        *self.policies.lock().expect("metrics lock") = Some(store);
    }

    pub fn published(&self) {
        *self.revisions_published.lock().expect("metrics lock") += 1;
    }

    /// A failed change began to roll back.
    pub fn rollback_started(&self) {
        *self.rollbacks.lock().expect("metrics lock") += 1;
    }

    /// An ObservedCertificate's gauges after its reconcile; `None` once it is gone.
    pub fn observed(&self, namespace: &str, name: &str, gauges: Option<ObservedGauges>) {
        let mut observed = self.observed.lock().expect("metrics lock");
        let key = (namespace.to_owned(), name.to_owned());
        match gauges {
            Some(gauges) => observed.insert(key, gauges),
            None => observed.remove(&key),
        };
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP certshift_reconciles_total Reconciles by controller.");
        let _ = writeln!(out, "# TYPE certshift_reconciles_total counter");
        for (controller, n) in self.reconciles.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "certshift_reconciles_total{{controller=\"{controller}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP certshift_reconcile_errors_total Failed reconciles by controller and error."
        );
        let _ = writeln!(out, "# TYPE certshift_reconcile_errors_total counter");
        for ((controller, error), n) in self.errors.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "certshift_reconcile_errors_total{{controller=\"{controller}\",error=\"{error}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP certshift_writes_total Mutating API requests by kind.");
        let _ = writeln!(out, "# TYPE certshift_writes_total counter");
        for (kind, n) in self.writes.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "certshift_writes_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP certshift_revisions_published_total Revisions published to members."
        );
        let _ = writeln!(out, "# TYPE certshift_revisions_published_total counter");
        let published = *self.revisions_published.lock().expect("metrics lock");
        let _ = writeln!(out, "certshift_revisions_published_total {published}");
        let _ = writeln!(
            out,
            "# HELP certshift_declaration_rollbacks_total Failed changes rolled back (spec.upgrade.failureAction: Rollback)."
        );
        let _ = writeln!(out, "# TYPE certshift_declaration_rollbacks_total counter");
        let rollbacks = *self.rollbacks.lock().expect("metrics lock");
        let _ = writeln!(out, "certshift_declaration_rollbacks_total {rollbacks}");
        let observed = self.observed.lock().expect("metrics lock").clone();
        let expiry: BTreeMap<&(String, String), Timestamp> = observed
            .iter()
            .filter_map(|(key, g)| Some((key, g.not_after?)))
            .collect();
        let _ = writeln!(
            out,
            "# HELP certshift_observed_certificate_ready_status The Ready condition of each ObservedCertificate."
        );
        let _ = writeln!(out, "# TYPE certshift_observed_certificate_ready_status gauge");
        for ((namespace, name), gauges) in &observed {
            condition_series(
                &mut out,
                "certshift_observed_certificate_ready_status",
                &format!("namespace=\"{namespace}\",name=\"{name}\""),
                gauges.ready.as_deref(),
            );
        }
        for (metric, help) in [
            (
                "certshift_certificate_not_after_timestamp_seconds",
                "notAfter of each ObservedCertificate's current instance, as a Unix time.",
            ),
            (
                "certshift_certificate_not_after_seconds",
                "Deprecated, the same as certshift_certificate_not_after_timestamp_seconds (removed in the next release).",
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} gauge");
            for ((namespace, name), at) in &expiry {
                let _ = writeln!(
                    out,
                    "{metric}{{namespace=\"{namespace}\",name=\"{name}\"}} {}",
                    at.as_second()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP certshift_reconcile_duration_seconds How long reconciles took, by controller."
        );
        let _ = writeln!(out, "# TYPE certshift_reconcile_duration_seconds histogram");
        for (controller, histogram) in self.durations.lock().expect("metrics lock").iter() {
            let mut cumulative = 0;
            for (le, n) in DURATION_BUCKETS.iter().zip(histogram.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "certshift_reconcile_duration_seconds_bucket{{controller=\"{controller}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "certshift_reconcile_duration_seconds_bucket{{controller=\"{controller}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "certshift_reconcile_duration_seconds_sum{{controller=\"{controller}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "certshift_reconcile_duration_seconds_count{{controller=\"{controller}\"}} {}",
                histogram.count
            );
        }
        if let Some(store) = self.declarations.lock().expect("metrics lock").as_ref() {
            out.push_str(&declaration_gauges(&store.state()));
        }
        if let Some(store) = self.policies.lock().expect("metrics lock").as_ref() {
            out.push_str(&policy_gauges(&store.state()));
        }
        let _ = writeln!(out, "# HELP certshift_build_info The running certshift's version.");
        let _ = writeln!(out, "# TYPE certshift_build_info gauge");
        let _ = writeln!(
            out,
            "certshift_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// The status of one condition type as cert-manager's `certificate_ready_status`
/// shapes it: one series per possible status, 1 for the one that holds.
fn condition_series(out: &mut String, metric: &str, labels: &str, status: Option<&str>) {
    for candidate in ["True", "False", "Unknown"] {
        let value = u8::from(status.unwrap_or("Unknown") == candidate);
        let _ = writeln!(out, "{metric}{{{labels},condition=\"{candidate}\"}} {value}");
    }
}

fn ready_status(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Option<&str> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// Declarations' gauges, from their status as the API server has it.
/// Label values are names and fixed sets (block reasons, stages).
pub fn declaration_gauges(declarations: &[std::sync::Arc<ClusterCertificateDeclaration>]) -> String {
    let empty = ClusterCertificateDeclarationStatus::default();
    let rows = labelled(declarations, |d| d.status.as_ref(), &empty);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP certshift_declaration_ready_status The Ready condition of each declaration."
    );
    let _ = writeln!(out, "# TYPE certshift_declaration_ready_status gauge");
    for (labels, status) in &rows {
        condition_series(
            &mut out,
            "certshift_declaration_ready_status",
            labels,
            ready_status(&status.conditions),
        );
    }
    let _ = writeln!(
        out,
        "# HELP certshift_declaration_blocked Declarations held by a block, with its reason (1 while blocked)."
    );
    let _ = writeln!(out, "# TYPE certshift_declaration_blocked gauge");
    for (labels, status) in &rows {
        if let Some(blocked) = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Blocked" && c.status == "True")
        {
            let _ = writeln!(
                out,
                "certshift_declaration_blocked{{{labels},reason=\"{}\"}} 1",
                blocked.reason
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP certshift_declaration_paused Declarations held by spec.upgrade.paused with revisions waiting (1)."
    );
    let _ = writeln!(out, "# TYPE certshift_declaration_paused gauge");
    for (labels, status) in &rows {
        if status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "Paused")
        {
            let _ = writeln!(out, "certshift_declaration_paused{{{labels}}} 1");
        }
    }
    let _ = writeln!(
        out,
        "# HELP certshift_declaration_stage The stage of the revision in force (1; UpToDate when the upgrade is done; none before the first publication)."
    );
    let _ = writeln!(out, "# TYPE certshift_declaration_stage gauge");
    for (labels, status) in &rows {
        // Nothing published yet: no stage to tell.
        let Some(upgrade) = &status.upgrade else {
            continue;
        };
        let stage = upgrade.stage.map_or_else(|| "UpToDate".to_owned(), |s| s.to_string());
        let _ = writeln!(out, "certshift_declaration_stage{{{labels},stage=\"{stage}\"}} 1");
    }
    let _ = writeln!(
        out,
        "# HELP certshift_declaration_revision The revision each declaration has published last."
    );
    let _ = writeln!(out, "# TYPE certshift_declaration_revision gauge");
    for (labels, status) in &rows {
        if let Some(upgrade) = &status.upgrade {
            let _ = writeln!(out, "certshift_declaration_revision{{{labels}}} {}", upgrade.revision);
        }
    }
    let _ = writeln!(
        out,
        "# HELP certshift_declaration_unhealthy_members Members unhealthy under the revision in force, by the last health check (status.upgrade.health)."
    );
    let _ = writeln!(out, "# TYPE certshift_declaration_unhealthy_members gauge");
    for (labels, status) in &rows {
        if let Some(health) = status.upgrade.as_ref().and_then(|u| u.health.as_ref()) {
            let _ = writeln!(
                out,
                "certshift_declaration_unhealthy_members{{{labels}}} {}",
                health.unhealthy.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP certshift_declaration_presented_not_after_timestamp_seconds notAfter of the certificate each declaration's members present, as a Unix time."
    );
    let _ = writeln!(
        out,
        "# TYPE certshift_declaration_presented_not_after_timestamp_seconds gauge"
    );
    for (labels, status) in &rows {
        if let Some(at) = status.presenting.as_ref().and_then(|p| p.not_after) {
            let _ = writeln!(
                out,
                "certshift_declaration_presented_not_after_timestamp_seconds{{{labels}}} {}",
                at.as_second()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP certshift_declaration_certificate_not_after_timestamp_seconds notAfter of each certificate the revision in force relies on (role: Presented, PresentedChain, AcceptedThumbprint, PinnedIssuer, ClientThumbprint), as a Unix time."
    );
    let _ = writeln!(
        out,
        "# TYPE certshift_declaration_certificate_not_after_timestamp_seconds gauge"
    );
    for (labels, status) in &rows {
        for in_use in &status.certificates_in_use {
            let _ = writeln!(
                out,
                "certshift_declaration_certificate_not_after_timestamp_seconds{{{labels},role=\"{}\",thumbprint=\"{}\"}} {}",
                in_use.role,
                in_use.thumbprint,
                in_use.not_after.as_second()
            );
        }
    }
    out
}

/// Policies' gauges, from their status as the API server has it.
pub fn policy_gauges(policies: &[std::sync::Arc<CertificatePolicy>]) -> String {
    let empty = CertificatePolicyStatus::default();
    let rows = labelled(policies, |p| p.status.as_ref(), &empty);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP certshift_policy_ready_status The Ready condition of each CertificatePolicy."
    );
    let _ = writeln!(out, "# TYPE certshift_policy_ready_status gauge");
    for (labels, status) in &rows {
        condition_series(
            &mut out,
            "certshift_policy_ready_status",
            labels,
            ready_status(&status.conditions),
        );
    }
    for (metric, help, field) in [
        (
            "certshift_policy_not_after_timestamp_seconds",
            "notAfter of the certificate each CertificatePolicy issued last, as a Unix time.",
            (|s: &CertificatePolicyStatus| s.not_after) as fn(&CertificatePolicyStatus) -> Option<Timestamp>,
        ),
        (
            "certshift_policy_renewal_timestamp_seconds",
            "When each CertificatePolicy renews its certificate, as a Unix time.",
            |s: &CertificatePolicyStatus| s.renewal_time,
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} gauge");
        for (labels, status) in &rows {
            if let Some(at) = field(status) {
                let _ = writeln!(out, "{metric}{{{labels}}} {}", at.as_second());
            }
        }
    }
    out
}

/// Each object's `namespace`/`name` labels with its status (`empty` while
/// it has none), sorted by the labels: read once per scrape, borrowed.
fn labelled<'a, K: kube::Resource, S>(
    objects: &'a [std::sync::Arc<K>],
    status: impl Fn(&'a K) -> Option<&'a S>,
    empty: &'a S,
) -> Vec<(String, &'a S)> {
    let mut rows: Vec<(String, &S)> = objects
        .iter()
        .map(|object| {
            let labels = format!(
                "namespace=\"{}\",name=\"{}\"",
                object.namespace().unwrap_or_default(),
                object.name_any()
            );
            (labels, status(object).unwrap_or(empty))
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Serves until the process ends; one request per connection.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let ready = metrics.clone();
    serve_with(listener, move || metrics.render(), move || ready.not_ready()).await;
}

/// `/metrics` (what `render` says), `/healthz`, and `/readyz`: 200 while
/// `not_ready` says nothing, else 503 with why; one request per connection.
pub async fn serve_with(
    listener: TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    not_ready: impl Fn() -> Option<String> + Send + Sync + 'static,
) {
    let state = Arc::new((render, not_ready));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            let Ok(read) = stream.read(&mut buffer).await else {
                return;
            };
            let request = String::from_utf8_lossy(&buffer[..read]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (render, not_ready) = (&state.0, &state.1);
            let (code, body) = match path {
                "/metrics" => ("200 OK", render()),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" => match not_ready() {
                    None => ("200 OK", "ok\n".to_owned()),
                    Some(why) => ("503 Service Unavailable", format!("not ready: {why}\n")),
                },
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::crd::{ClusterCertificateDeclarationStatus, PresentingStatus, UpgradeStatus};
    use crate::revision::Stage;

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn declaration_gauges_follow_the_status_with_fixed_label_values() {
        let mut blocked = ClusterCertificateDeclaration::new("b", Default::default());
        blocked.metadata.namespace = Some("ns".into());
        blocked.status = Some(ClusterCertificateDeclarationStatus {
            conditions: vec![
                condition("Ready", "False", "StageTimeout"),
                condition("Blocked", "True", "StageTimeout"),
            ],
            upgrade: Some(UpgradeStatus {
                stage: Some(Stage::SwitchToCommonName),
                revision: 4,
                health: Some(crate::crd::HealthStatus {
                    state: "Failed".into(),
                    unhealthy: vec![crate::crd::UnhealthyMember::default(); 2],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut ready = ClusterCertificateDeclaration::new("a", Default::default());
        ready.metadata.namespace = Some("ns".into());
        ready.status = Some(ClusterCertificateDeclarationStatus {
            conditions: vec![
                condition("Ready", "True", "Ready"),
                condition("Blocked", "False", "NotBlocked"),
            ],
            presenting: Some(PresentingStatus {
                not_after: Some("2027-01-01T00:00:00Z".parse().unwrap()),
                ..Default::default()
            }),
            ..Default::default()
        });
        ready.status.as_mut().unwrap().upgrade = Some(UpgradeStatus {
            revision: 2,
            ..Default::default()
        });
        ready.status.as_mut().unwrap().certificates_in_use = vec![crate::crd::CertificateInUse {
            role: "PinnedIssuer".into(),
            thumbprint: "AB".repeat(20),
            common_name: None,
            not_after: "2026-07-01T00:00:00Z".parse().unwrap(),
        }];
        let mut paused = ClusterCertificateDeclaration::new("c", Default::default());
        paused.metadata.namespace = Some("ns".into());
        paused.status = Some(ClusterCertificateDeclarationStatus {
            conditions: vec![condition("Ready", "False", "Paused")],
            ..Default::default()
        });
        let text = declaration_gauges(&[Arc::new(blocked), Arc::new(ready), Arc::new(paused)]);
        for line in [
            r#"certshift_declaration_ready_status{namespace="ns",name="a",condition="True"} 1"#,
            r#"certshift_declaration_ready_status{namespace="ns",name="a",condition="False"} 0"#,
            r#"certshift_declaration_ready_status{namespace="ns",name="b",condition="False"} 1"#,
            r#"certshift_declaration_blocked{namespace="ns",name="b",reason="StageTimeout"} 1"#,
            r#"certshift_declaration_stage{namespace="ns",name="a",stage="UpToDate"} 1"#,
            r#"certshift_declaration_stage{namespace="ns",name="b",stage="SwitchToCommonName"} 1"#,
            r#"certshift_declaration_revision{namespace="ns",name="b"} 4"#,
            r#"certshift_declaration_unhealthy_members{namespace="ns",name="b"} 2"#,
            r#"certshift_declaration_presented_not_after_timestamp_seconds{namespace="ns",name="a"} 1798761600"#,
            r#"certshift_declaration_certificate_not_after_timestamp_seconds{namespace="ns",name="a",role="PinnedIssuer",thumbprint="ABABABABABABABABABABABABABABABABABABABAB"} 1782864000"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains(r#"certshift_declaration_blocked{namespace="ns",name="a""#));
        assert!(
            text.lines()
                .any(|l| l == r#"certshift_declaration_paused{namespace="ns",name="c"} 1"#)
        );
        assert!(!text.contains(r#"certshift_declaration_paused{namespace="ns",name="a""#));
        assert!(
            !text.contains(r#"certshift_declaration_stage{namespace="ns",name="c""#),
            "nothing published, no stage"
        );
        // Sorted by name: a's series come before b's.
        assert!(text.find(r#"name="a""#) < text.find(r#"name="b""#));
    }

    #[test]
    fn reconcile_durations_are_a_cumulative_histogram() {
        let metrics = Metrics::default();
        for seconds in [0.001, 0.02, 0.02, 3.0, 60.0] {
            metrics.reconcile_took("declaration", seconds);
        }
        let text = metrics.render();
        for line in [
            r#"certshift_reconcile_duration_seconds_bucket{controller="declaration",le="0.005"} 1"#,
            r#"certshift_reconcile_duration_seconds_bucket{controller="declaration",le="0.025"} 3"#,
            r#"certshift_reconcile_duration_seconds_bucket{controller="declaration",le="5"} 4"#,
            r#"certshift_reconcile_duration_seconds_bucket{controller="declaration",le="+Inf"} 5"#,
            r#"certshift_reconcile_duration_seconds_count{controller="declaration"} 5"#,
            r#"certshift_build_info{version="0.1.0"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
