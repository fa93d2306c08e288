//! A member's health under the revision it has loaded (docs/agent.md,
//! "Health"): the handshakes that failed because of a certificate, per peer,
//! judged against what already failed before that revision (Service
//! Fabric's delta rule: what failed before is baseline, not a regression),
//! and failed reloads. Pure: the proxies report each failure, the shell
//! asks for the [`Verdict`] and patches the Pod condition
//! `certshift.io/Healthy` when it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::verifier::Refusal;

/// The Pod condition the agent reports.
pub const CONDITION: &str = "certshift.io/Healthy";

/// How long a failure counts by default (`--health-window`): a peer that
/// stopped failing (fixed, or gone) no longer makes the member unhealthy
/// after it, and what failed within it before a revision was loaded is that
/// revision's baseline.
pub const FAILING_FOR: Duration = Duration::from_secs(60);

/// Peers remembered at most (a scan of the port must not grow the agent).
const PEERS_KEPT: usize = 1024;

/// The peers a message names at most.
const PEERS_NAMED: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// A peer connected to this member (the inbound proxy).
    Inbound,
    /// This member connected to a peer (an outbound proxy).
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// A handshake that failed because of a certificate, by which side refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// This member refused the peer's certificate by its revision's rules
    /// (the verifier's reason: `CertificateNotMatched`, `CertificateRevoked`,
    /// `NoCertificate`, …).
    RejectedPeer(&'static str),
    /// The peer refused this member's certificate: the TLS alert it sent
    /// after this member's Certificate message (`unknown_ca`, …).
    RejectedByPeer(&'static str),
}

impl Failure {
    /// The metric label of the side that refused.
    pub fn side(self) -> &'static str {
        match self {
            Failure::RejectedPeer(_) => "rejected_peer",
            Failure::RejectedByPeer(_) => "rejected_by_peer",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Failure::RejectedPeer(reason) | Failure::RejectedByPeer(reason) => reason,
        }
    }

    /// Never a regression of a revision (it must not hold a change, nor
    /// roll one back): a peer refused because its certificate (or a CA of
    /// it) is revoked — the rules doing what a CRL asks — or because it
    /// presented none (a scanner, a TLS probe), which every revision refuses.
    fn intended(self) -> bool {
        matches!(
            self,
            Failure::RejectedPeer("CertificateRevoked") | Failure::RejectedPeer("NoCertificate")
        )
    }
}

/// What a failed handshake (or a connection that ended in an alert) says
/// about certificates; `None` for everything else (a port scan, a TCP
/// health check, a protocol mismatch, a reset), which is not the
/// certificates' doing.
pub fn classify(err: &rustls::Error) -> Option<Failure> {
    use rustls::AlertDescription as Alert;
    match err {
        rustls::Error::NoCertificatesPresented => Some(Failure::RejectedPeer("NoCertificate")),
        rustls::Error::InvalidCertificate(_) => Some(Failure::RejectedPeer(
            Refusal::from_tls_error(err).map_or("InvalidCertificate", |r| r.reason),
        )),
        // The alerts a TLS stack sends when it refuses the certificate it
        // was shown (RFC 8446 §6.2; OpenSSL, Go and rustls send these). In
        // TLS 1.3 a server refuses a client's certificate after the client
        // finished its handshake: the alert arrives on the first read.
        rustls::Error::AlertReceived(alert) => match alert {
            Alert::BadCertificate => Some("bad_certificate"),
            Alert::UnsupportedCertificate => Some("unsupported_certificate"),
            Alert::CertificateRevoked => Some("certificate_revoked"),
            Alert::CertificateExpired => Some("certificate_expired"),
            Alert::CertificateUnknown => Some("certificate_unknown"),
            Alert::UnknownCA => Some("unknown_ca"),
            Alert::AccessDenied => Some("access_denied"),
            Alert::DecryptError => Some("decrypt_error"),
            Alert::HandshakeFailure => Some("handshake_failure"),
            Alert::CertificateRequired => Some("certificate_required"),
            _ => None,
        }
        .map(Failure::RejectedByPeer),
        _ => None,
    }
}

/// The rustls error an I/O error from a TLS stream carries, classified.
pub fn classify_io(err: &std::io::Error) -> Option<Failure> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(classify)
}

/// One peer failing one way, in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    peer: IpAddr,
    direction: Direction,
    failure: Failure,
}

#[derive(Clone, Debug)]
struct Record {
    /// Failures under the revision loaded now.
    count: u64,
    last: Instant,
    /// The revision under which this peer began failing this way (kept
    /// while it goes on failing across revisions).
    since: u64,
    /// It was failing before the revision loaded now was, or it is a
    /// revoked certificate refused: not a regression.
    baseline: bool,
}

/// The agent's verdict on its member, reported as `certshift.io/Healthy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub revision: u64,
    pub healthy: bool,
    /// `Healthy`, `CertificateRejectedByPeers`, `RejectedPeers` or `ReloadFailed`.
    pub reason: &'static str,
    pub message: String,
    /// Peers (addresses) whose failures this revision introduced and that fail now.
    pub unhealthy_peers: usize,
}

impl Verdict {
    /// What a change of the Pod condition is judged on: the message's
    /// counts change with every failure and are refreshed, not transitions.
    pub fn transition_key(&self) -> (u64, bool, &'static str) {
        (self.revision, self.healthy, self.reason)
    }
}

/// The handshakes and reloads of the revisions this agent has loaded.
#[derive(Clone, Debug)]
pub struct Health {
    /// How long a failure counts ([`FAILING_FOR`] by default).
    window: Duration,
    revision: u64,
    /// Whether a revision before this one was loaded by this agent: under
    /// the first there is nothing to compare with (the agent did not see a
    /// change), so every failure is baseline.
    switched: bool,
    peers: BTreeMap<Key, Record>,
    /// The revision whose reload failed, and why, until one succeeds.
    reload_failed: Option<(u64, String)>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(FAILING_FOR)
    }
}

impl Health {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            revision: 0,
            switched: false,
            peers: BTreeMap::new(),
            reload_failed: None,
        }
    }

    /// A revision was loaded (new handshakes use it from now on): what
    /// failed within the window before it is its baseline.
    pub fn loaded(&mut self, revision: u64, now: Instant) {
        if revision == self.revision {
            return;
        }
        self.switched |= self.revision != 0;
        self.revision = revision;
        let window = self.window;
        self.peers.retain(|_, record| now.duration_since(record.last) < window);
        for record in self.peers.values_mut() {
            record.baseline = true;
            record.count = 0;
        }
    }

    /// A handshake with `peer` failed because of a certificate.
    pub fn failed(&mut self, peer: IpAddr, direction: Direction, failure: Failure, now: Instant) {
        let key = Key {
            peer,
            direction,
            failure,
        };
        if !self.peers.contains_key(&key) && self.peers.len() >= PEERS_KEPT {
            // Forget the peer that failed longest ago.
            if let Some(oldest) = self.peers.iter().min_by_key(|(_, r)| r.last).map(|(k, _)| *k) {
                self.peers.remove(&oldest);
            }
        }
        let record = self.peers.entry(key).or_insert(Record {
            count: 0,
            last: now,
            since: self.revision,
            baseline: !self.switched || failure.intended(),
        });
        record.count += 1;
        record.last = now;
    }

    /// The outcome of reloading the application for `revision`.
    pub fn reloaded(&mut self, revision: u64, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.reload_failed = None,
            Err(err) => self.reload_failed = Some((revision, err)),
        }
    }

    /// The verdict now: unhealthy when the reload of the revision loaded
    /// failed, or when a peer fails now in a way it did not before this
    /// revision.
    pub fn verdict(&self, now: Instant) -> Verdict {
        let revision = self.revision;
        let current = |r: &&Record| now.duration_since(r.last) < self.window && r.count > 0;
        let mut regressions: Vec<(&Key, &Record)> =
            self.peers.iter().filter(|(_, r)| !r.baseline && current(r)).collect();
        regressions.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let baseline = self.peers.values().filter(|r| r.baseline && current(r)).count();
        let unhealthy_peers = regressions.iter().map(|(k, _)| k.peer).collect::<BTreeSet<_>>().len();
        let verdict = |healthy, reason, message: String| Verdict {
            revision,
            healthy,
            reason,
            message,
            unhealthy_peers,
        };
        if let Some((failed, err)) = self.reload_failed.as_ref().filter(|(r, _)| *r == revision) {
            return verdict(
                false,
                "ReloadFailed",
                format!("revision {failed}: reloading the application failed: {err}"),
            );
        }
        let by_peers: Vec<_> = regressions
            .iter()
            .filter(|(k, _)| matches!(k.failure, Failure::RejectedByPeer(_)))
            .collect();
        let (reason, named): (&'static str, Vec<_>) = if !by_peers.is_empty() {
            ("CertificateRejectedByPeers", by_peers)
        } else if !regressions.is_empty() {
            ("RejectedPeers", regressions.iter().collect())
        } else {
            let mut message = format!("revision {revision}: no handshake has failed because of a certificate");
            if baseline > 0 {
                let _ = write!(
                    message,
                    " that did not fail before it ({baseline} peer{} failing as before or revoked, not counted)",
                    plural(baseline)
                );
            }
            return verdict(true, "Healthy", message);
        };
        let mut message = format!("revision {revision}: ");
        for (index, (key, record)) in named.iter().take(PEERS_NAMED).enumerate() {
            if index > 0 {
                message.push_str("; ");
            }
            let _ = write!(message, "{}", describe(key, record));
        }
        if named.len() > PEERS_NAMED {
            let _ = write!(message, "; and {} more", named.len() - PEERS_NAMED);
        }
        if regressions.len() > named.len() {
            let _ = write!(
                message,
                "; {} more peer{} refused by this member",
                regressions.len() - named.len(),
                plural(regressions.len() - named.len())
            );
        }
        if baseline > 0 {
            let _ = write!(message, " ({baseline} failing as before or revoked, not counted)");
        }
        verdict(false, reason, message)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// "14 inbound handshakes refused by 10.88.0.9 with unknown_ca since revision 3"
fn describe(key: &Key, record: &Record) -> String {
    let (count, direction) = (record.count, key.direction.as_str());
    let handshakes = if count == 1 { "handshake" } else { "handshakes" };
    match key.failure {
        Failure::RejectedByPeer(alert) => format!(
            "{count} {direction} {handshakes} refused by {} with {alert} since revision {}",
            key.peer, record.since
        ),
        Failure::RejectedPeer(reason) => format!(
            "{count} {direction} {handshakes} with {} refused ({reason}) since revision {}",
            key.peer, record.since
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 88, 0, last])
    }

    const UNKNOWN_CA: Failure = Failure::RejectedByPeer("unknown_ca");
    const NOT_MATCHED: Failure = Failure::RejectedPeer("CertificateNotMatched");

    /// Revision 1 loaded at `t0`, then revision 2 a second later.
    fn switched(t0: Instant) -> Health {
        let mut health = Health::default();
        health.loaded(1, t0);
        health.loaded(2, t0 + Duration::from_secs(1));
        health
    }

    #[test]
    fn a_peer_refusing_the_new_certificate_makes_the_member_unhealthy_naming_it() {
        let t0 = Instant::now();
        let mut health = switched(t0);
        for _ in 0..14 {
            health.failed(ip(9), Direction::Inbound, UNKNOWN_CA, t0 + Duration::from_secs(2));
        }
        let verdict = health.verdict(t0 + Duration::from_secs(3));
        assert!(!verdict.healthy);
        assert_eq!(verdict.reason, "CertificateRejectedByPeers");
        assert_eq!(
            verdict.message,
            "revision 2: 14 inbound handshakes refused by 10.88.0.9 with unknown_ca since revision 2"
        );
        assert_eq!(verdict.unhealthy_peers, 1);
    }

    #[test]
    fn a_peer_that_failed_the_same_way_before_the_revision_is_baseline() {
        let t0 = Instant::now();
        let mut health = Health::default();
        health.loaded(1, t0);
        health.failed(ip(7), Direction::Inbound, NOT_MATCHED, t0);
        health.loaded(2, t0 + Duration::from_secs(5));
        health.failed(ip(7), Direction::Inbound, NOT_MATCHED, t0 + Duration::from_secs(6));
        let verdict = health.verdict(t0 + Duration::from_secs(7));
        assert!(verdict.healthy, "{verdict:?}");
        assert!(
            verdict.message.contains("1 peer failing as before"),
            "{}",
            verdict.message
        );
        // The same peer failing another way is a regression.
        health.failed(ip(7), Direction::Inbound, UNKNOWN_CA, t0 + Duration::from_secs(8));
        let verdict = health.verdict(t0 + Duration::from_secs(9));
        assert_eq!(verdict.reason, "CertificateRejectedByPeers");
        assert!(
            verdict
                .message
                .contains("(1 failing as before or revoked, not counted)"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_failure_long_before_the_revision_is_not_its_baseline() {
        let t0 = Instant::now();
        let mut health = Health::default();
        health.loaded(1, t0);
        health.failed(ip(7), Direction::Inbound, NOT_MATCHED, t0);
        let later = t0 + FAILING_FOR + Duration::from_secs(1);
        health.loaded(2, later);
        health.failed(ip(7), Direction::Inbound, NOT_MATCHED, later);
        let verdict = health.verdict(later);
        assert_eq!(verdict.reason, "RejectedPeers");
        assert_eq!(
            verdict.message,
            "revision 2: 1 inbound handshake with 10.88.0.7 refused (CertificateNotMatched) since revision 2"
        );
    }

    #[test]
    fn under_the_first_revision_loaded_nothing_is_a_regression() {
        let t0 = Instant::now();
        let mut health = Health::default();
        health.loaded(4, t0);
        health.failed(ip(9), Direction::Outbound, UNKNOWN_CA, t0);
        assert!(health.verdict(t0).healthy);
        // Loading the same revision again (a re-read) is not a switch.
        health.loaded(4, t0);
        health.failed(ip(8), Direction::Outbound, UNKNOWN_CA, t0);
        assert!(health.verdict(t0).healthy);
    }

    #[test]
    fn a_peer_that_stopped_failing_stops_counting_after_the_window() {
        let t0 = Instant::now();
        let mut health = switched(t0);
        health.failed(ip(9), Direction::Outbound, UNKNOWN_CA, t0 + Duration::from_secs(2));
        assert!(!health.verdict(t0 + FAILING_FOR).healthy);
        assert!(health.verdict(t0 + Duration::from_secs(2) + FAILING_FOR).healthy);
    }

    #[test]
    fn a_regression_carries_its_revision_and_becomes_the_next_revisions_baseline() {
        let t0 = Instant::now();
        let mut health = switched(t0);
        health.failed(ip(9), Direction::Inbound, UNKNOWN_CA, t0 + Duration::from_secs(2));
        // Revision 3 (say, the rollback's first) is loaded; the peer still fails.
        health.loaded(3, t0 + Duration::from_secs(3));
        health.failed(ip(9), Direction::Inbound, UNKNOWN_CA, t0 + Duration::from_secs(4));
        let verdict = health.verdict(t0 + Duration::from_secs(4));
        assert!(verdict.healthy, "{verdict:?}");
    }

    #[test]
    fn the_peers_that_refuse_this_member_come_first_and_the_message_is_bounded() {
        let t0 = Instant::now();
        let mut health = switched(t0);
        let at = t0 + Duration::from_secs(2);
        health.failed(ip(1), Direction::Inbound, NOT_MATCHED, at);
        for peer in 10..16 {
            for _ in 0..(peer - 9) {
                health.failed(ip(peer), Direction::Outbound, UNKNOWN_CA, at);
            }
        }
        let verdict = health.verdict(at);
        assert_eq!(verdict.reason, "CertificateRejectedByPeers");
        assert_eq!(verdict.unhealthy_peers, 7);
        assert!(verdict.message.starts_with(
            "revision 2: 6 outbound handshakes refused by 10.88.0.15 with unknown_ca since revision 2; \
             5 outbound handshakes refused by 10.88.0.14"
        ));
        assert!(
            verdict
                .message
                .ends_with("; and 3 more; 1 more peer refused by this member"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn the_baseline_looks_back_as_far_as_the_window() {
        let t0 = Instant::now();
        let mut health = Health::new(Duration::from_secs(300));
        health.loaded(1, t0);
        health.failed(ip(7), Direction::Inbound, NOT_MATCHED, t0);
        // Two minutes later, well within a 5-minute window: baseline.
        let later = t0 + Duration::from_secs(120);
        health.loaded(2, later);
        health.failed(ip(7), Direction::Inbound, NOT_MATCHED, later);
        assert!(health.verdict(later).healthy);
    }

    #[test]
    fn a_peer_that_presents_no_certificate_is_never_a_regression() {
        let t0 = Instant::now();
        let mut health = switched(t0);
        let none = Failure::RejectedPeer("NoCertificate");
        health.failed(ip(9), Direction::Inbound, none, t0 + Duration::from_secs(2));
        assert!(health.verdict(t0 + Duration::from_secs(2)).healthy);
    }

    #[test]
    fn a_peer_refused_for_a_revoked_certificate_is_never_a_regression() {
        let t0 = Instant::now();
        let mut health = switched(t0);
        let revoked = Failure::RejectedPeer("CertificateRevoked");
        health.failed(ip(9), Direction::Inbound, revoked, t0 + Duration::from_secs(2));
        let verdict = health.verdict(t0 + Duration::from_secs(2));
        assert!(verdict.healthy, "{verdict:?}");
        assert!(
            verdict.message.contains("1 peer failing as before"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_failed_reload_is_unhealthy_until_a_reload_succeeds() {
        let t0 = Instant::now();
        let mut health = switched(t0);
        health.reloaded(2, Err("exit status 1: key type not supported".to_owned()));
        let verdict = health.verdict(t0);
        assert_eq!(
            (verdict.healthy, verdict.reason),
            (false, "ReloadFailed"),
            "{verdict:?}"
        );
        assert!(verdict.message.contains("key type not supported"));
        health.reloaded(2, Ok(()));
        assert!(health.verdict(t0).healthy);
        // A failure of an older revision's reload says nothing of this one.
        health.reloaded(1, Err("old".to_owned()));
        assert!(health.verdict(t0).healthy);
    }

    #[test]
    fn a_scan_from_many_addresses_keeps_a_bounded_memory() {
        let t0 = Instant::now();
        let mut health = switched(t0);
        for n in 0..(PEERS_KEPT as u32 + 500) {
            let peer = IpAddr::from((0x0a00_0000u32 + n).to_be_bytes());
            health.failed(
                peer,
                Direction::Inbound,
                NOT_MATCHED,
                t0 + Duration::from_millis(u64::from(n)),
            );
        }
        assert_eq!(health.peers.len(), PEERS_KEPT);
        // The newest are kept.
        let newest = IpAddr::from((0x0a00_0000u32 + PEERS_KEPT as u32 + 499).to_be_bytes());
        assert!(health.peers.keys().any(|k| k.peer == newest));
    }

    #[test]
    fn certificate_alerts_and_refusals_are_classified_and_the_rest_is_not() {
        use rustls::AlertDescription as Alert;
        for (alert, name) in [
            (Alert::UnknownCA, "unknown_ca"),
            (Alert::BadCertificate, "bad_certificate"),
            (Alert::CertificateUnknown, "certificate_unknown"),
            (Alert::DecryptError, "decrypt_error"),
            (Alert::HandshakeFailure, "handshake_failure"),
            (Alert::CertificateRequired, "certificate_required"),
        ] {
            assert_eq!(
                classify(&rustls::Error::AlertReceived(alert)),
                Some(Failure::RejectedByPeer(name))
            );
        }
        for other in [
            rustls::Error::AlertReceived(Alert::ProtocolVersion),
            rustls::Error::AlertReceived(Alert::CloseNotify),
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            rustls::Error::DecryptError,
        ] {
            assert_eq!(classify(&other), None, "{other:?}");
        }
        assert_eq!(
            classify(&rustls::Error::NoCertificatesPresented),
            Some(Failure::RejectedPeer("NoCertificate"))
        );
        assert_eq!(
            classify(&rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)),
            Some(Failure::RejectedPeer("InvalidCertificate"))
        );
    }
}
