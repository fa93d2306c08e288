//! The agent's metrics, with fixed label sets: the revision it serves,
//! handshakes by direction and refusal reason, reloads, acknowledgements,
//! what could not be loaded, and open proxied connections.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    /// The revision served; 0 before the first.
    revision: AtomicU64,
    /// (direction, "accepted" | reason) → count
    handshakes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// (kind, result) → count: reloads and acknowledgements.
    outcomes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// reason → count
    load_errors: Mutex<BTreeMap<&'static str, u64>>,
    inbound_open: AtomicI64,
    outbound_open: AtomicI64,
    /// Why nothing is served yet: the last problem with the volumes.
    waiting: Mutex<Option<String>>,
    /// (direction, side, reason) → handshakes failed because of a certificate.
    certificate_failures: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// (direction, reason) → established connections closed because a
    /// newer revision refuses their peer.
    closed: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// The last verdict: its reason and the peers whose failures the
    /// revision introduced (`health`).
    health: Mutex<Option<(&'static str, usize)>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(key)
        .or_default() += 1;
}

/// Counts a proxied connection as open until dropped.
pub struct Open<'a>(&'a AtomicI64);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn is_ready(&self) -> bool {
        self.revision.load(Ordering::Relaxed) > 0
    }

    /// Why `/readyz` says not ready: no revision served yet, and why.
    pub fn not_ready(&self) -> Option<String> {
        if self.is_ready() {
            return None;
        }
        let waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(format!(
            "no revision loaded yet: {}",
            waiting.as_deref().unwrap_or("the volumes have not been read")
        ))
    }

    /// What keeps the agent from loading a revision now (kept for `/readyz`).
    pub fn waiting(&self, why: Option<&str>) {
        *self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = why.map(str::to_owned);
    }

    pub fn loaded(&self, revision: u64) {
        self.revision.store(revision, Ordering::Relaxed);
    }

    pub fn load_error(&self, reason: &'static str) {
        bump(&self.load_errors, reason);
    }

    pub fn reload(&self, ok: bool) {
        bump(&self.outcomes, ("reload", if ok { "success" } else { "failure" }));
    }

    pub fn acknowledged(&self, ok: bool) {
        bump(
            &self.outcomes,
            ("acknowledgement", if ok { "success" } else { "failure" }),
        );
    }

    /// A handshake of a proxy; `refused` carries the reason it failed.
    pub fn handshake(&self, direction: &'static str, refused: Option<&'static str>) {
        bump(&self.handshakes, (direction, refused.unwrap_or("accepted")));
    }

    /// A handshake (or a connection) that failed because of a certificate.
    pub fn certificate_failure(&self, direction: super::health::Direction, failure: super::health::Failure) {
        bump(
            &self.certificate_failures,
            (direction.as_str(), failure.side(), failure.reason()),
        );
    }

    pub fn health(&self, verdict: &super::health::Verdict) {
        *self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((verdict.reason, verdict.unhealthy_peers));
    }

    /// An established connection closed: a newer revision refuses its peer.
    pub fn closed(&self, direction: &'static str, reason: &'static str) {
        bump(&self.closed, (direction, reason));
    }

    pub fn connection(&self, direction: &'static str) -> Open<'_> {
        let gauge = if direction == "inbound" {
            &self.inbound_open
        } else {
            &self.outbound_open
        };
        gauge.fetch_add(1, Ordering::Relaxed);
        Open(gauge)
    }

    pub fn render(&self) -> String {
        let lock = |m: &Mutex<BTreeMap<(&'static str, &'static str), u64>>| {
            m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP certshift_agent_revision The revision the agent serves (0: none yet)."
        );
        let _ = writeln!(out, "# TYPE certshift_agent_revision gauge");
        let _ = writeln!(
            out,
            "certshift_agent_revision {}",
            self.revision.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP certshift_agent_handshakes_total Proxy handshakes by direction and result (accepted, or the refusal reason)."
        );
        let _ = writeln!(out, "# TYPE certshift_agent_handshakes_total counter");
        for ((direction, result), n) in lock(&self.handshakes) {
            let _ = writeln!(
                out,
                "certshift_agent_handshakes_total{{direction=\"{direction}\",result=\"{result}\"}} {n}"
            );
        }
        let outcomes = lock(&self.outcomes);
        for (kind, help) in [
            ("reload", "Reloads of the application, by result."),
            ("acknowledgement", "Acknowledgements written on the Pod, by result."),
        ] {
            let _ = writeln!(out, "# HELP certshift_agent_{kind}s_total {help}");
            let _ = writeln!(out, "# TYPE certshift_agent_{kind}s_total counter");
            for ((_, result), n) in outcomes.iter().filter(|((k, _), _)| *k == kind) {
                let _ = writeln!(out, "certshift_agent_{kind}s_total{{result=\"{result}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP certshift_agent_load_errors_total Problems that kept a revision from being loaded, each counted once, by reason."
        );
        let _ = writeln!(out, "# TYPE certshift_agent_load_errors_total counter");
        let errors = self
            .load_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (reason, n) in errors {
            let _ = writeln!(out, "certshift_agent_load_errors_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP certshift_agent_connections Open proxied connections by direction."
        );
        let _ = writeln!(out, "# TYPE certshift_agent_connections gauge");
        for (direction, gauge) in [("inbound", &self.inbound_open), ("outbound", &self.outbound_open)] {
            let _ = writeln!(
                out,
                "certshift_agent_connections{{direction=\"{direction}\"}} {}",
                gauge.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP certshift_agent_connections_closed_total Established connections closed because a newer revision refuses their peer, by direction and reason."
        );
        let _ = writeln!(out, "# TYPE certshift_agent_connections_closed_total counter");
        for ((direction, reason), n) in lock(&self.closed) {
            let _ = writeln!(
                out,
                "certshift_agent_connections_closed_total{{direction=\"{direction}\",reason=\"{reason}\"}} {n}"
            );
        }
        self.render_health(&mut out);
        out
    }

    fn render_health(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP certshift_agent_certificate_failures_total Handshakes that failed because of a certificate, by direction, by side (rejected_peer: this member refused the peer's; rejected_by_peer: the peer refused this member's) and reason (the verifier's, or the alert received)."
        );
        let _ = writeln!(out, "# TYPE certshift_agent_certificate_failures_total counter");
        let failures = self
            .certificate_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for ((direction, side, reason), n) in failures {
            let _ = writeln!(
                out,
                "certshift_agent_certificate_failures_total{{direction=\"{direction}\",side=\"{side}\",reason=\"{reason}\"}} {n}"
            );
        }
        let health = *self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((reason, unhealthy_peers)) = health else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP certshift_agent_healthy Whether the member is healthy under the revision it has loaded (the Pod condition certshift.io/Healthy), with its reason."
        );
        let _ = writeln!(out, "# TYPE certshift_agent_healthy gauge");
        let healthy = u8::from(reason == "Healthy");
        let _ = writeln!(out, "certshift_agent_healthy{{reason=\"{reason}\"}} {healthy}");
        let _ = writeln!(
            out,
            "# HELP certshift_agent_unhealthy_peers Peers whose handshakes fail now because of a certificate in a way they did not before the revision loaded."
        );
        let _ = writeln!(out, "# TYPE certshift_agent_unhealthy_peers gauge");
        let _ = writeln!(out, "certshift_agent_unhealthy_peers {unhealthy_peers}");
    }
}
