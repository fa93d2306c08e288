//! Prometheus text metrics with fixed label sets, and the tiny HTTP server for
//! `/metrics`, `/healthz` and `/readyz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Metrics {
    ready: AtomicBool,
    /// (controller) → count
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
    /// (controller, error label) → count
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// kind → count (kinds the code writes: a fixed set)
    writes: Mutex<BTreeMap<String, u64>>,
    revisions_published: Mutex<u64>,
    /// (namespace, ObservedCertificate) → notAfter of its current instance
    expiry: Mutex<BTreeMap<(String, String), Timestamp>>,
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

    pub fn published(&self) {
        *self.revisions_published.lock().expect("metrics lock") += 1;
    }

    pub fn expiry(&self, namespace: &str, name: &str, not_after: Option<Timestamp>) {
        let mut expiry = self.expiry.lock().expect("metrics lock");
        let key = (namespace.to_owned(), name.to_owned());
        match not_after {
            Some(at) => expiry.insert(key, at),
            None => expiry.remove(&key),
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
            "# HELP certshift_certificate_not_after_seconds notAfter of each ObservedCertificate's current instance."
        );
        let _ = writeln!(out, "# TYPE certshift_certificate_not_after_seconds gauge");
        for ((namespace, name), at) in self.expiry.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "certshift_certificate_not_after_seconds{{namespace=\"{namespace}\",name=\"{name}\"}} {}",
                at.as_second()
            );
        }
        out
    }
}

/// Serves until the process ends; one request per connection.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let ready = metrics.clone();
    serve_with(
        listener,
        move || metrics.render(),
        move || ready.ready.load(Ordering::SeqCst),
    )
    .await;
}

/// `/metrics` (what `render` says), `/healthz`, and `/readyz` (200 while
/// `ready` says so, else 503), one request per connection.
pub async fn serve_with(
    listener: TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    ready: impl Fn() -> bool + Send + Sync + 'static,
) {
    let state = Arc::new((render, ready));
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
            let (render, ready) = (&state.0, &state.1);
            let (code, body) = match path {
                "/metrics" => ("200 OK", render()),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" if ready() => ("200 OK", "ok\n".to_owned()),
                "/readyz" => ("503 Service Unavailable", "not ready\n".to_owned()),
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
