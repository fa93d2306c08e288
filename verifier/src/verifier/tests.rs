//! The verifier on real certificates, and in real rustls handshakes (in
//! memory: the two ends exchange their TLS records through buffers).

use rustls::{ClientConnection, ServerConnection};

use super::*;
use crate::rules::{ClientCommonName, ClientThumbprint, CommonNameRule};
use crate::testing::{Issued, cert, ts};

fn now() -> Timestamp {
    ts("2026-06-01T00:00:00Z")
}

struct Pki {
    ca: Issued,
    other_ca: Issued,
    member: Issued,
    renewal: Issued,
    rogue: Issued,
    self_signed: Issued,
}

fn pki() -> Pki {
    let ca = cert("Cluster CA").ca().self_signed();
    let other_ca = cert("Other CA").ca().self_signed();
    Pki {
        member: cert("cluster.example").dns("cluster.example").signed_by(&ca),
        renewal: cert("cluster.example").dns("cluster.example").signed_by(&ca),
        rogue: cert("cluster.example").dns("cluster.example").signed_by(&other_ca),
        self_signed: cert("old.example").self_signed(),
        ca,
        other_ca,
    }
}

fn thumbprint(issued: &Issued) -> Thumbprint {
    use sha1::Digest as _;
    Thumbprint::from_digest(&sha1::Sha1::digest(&issued.der))
}

fn verifier(accepted: Accepted, clients: Clients, bundle: &[&Issued]) -> Verifier {
    let rules = RulesJson {
        revision: 7,
        presented: None,
        accepted,
        clients,
        anchors: None,
        tolerated: Vec::new(),
    };
    let pem: String = bundle.iter().map(|c| c.pem.clone()).collect();
    let json = serde_json::to_vec(&rules).unwrap();
    Verifier::from_outputs(|key| match key {
        "rules.json" => Some(json.clone()),
        "ca-bundle.crt" => Some(pem.clone().into_bytes()),
        _ => None,
    })
    .expect("verifier")
}

fn refusal(result: Result<CertificateFacts, Refusal>) -> &'static str {
    result.expect_err("refused").reason
}

#[test]
fn members_are_accepted_by_thumbprint_and_nothing_else() {
    let pki = pki();
    let v = verifier(
        Accepted::new([thumbprint(&pki.self_signed)], []),
        Clients::default(),
        &[],
    );
    assert!(v.check_member(&pki.self_signed.der, &[], now()).is_ok());
    assert_eq!(
        refusal(v.check_member(&pki.member.der, &[], now())),
        "CertificateNotMatched"
    );
}

#[test]
fn a_pinned_common_name_needs_its_direct_issuer_pinned() {
    let pki = pki();
    let pinned = Accepted::new([], [CommonNameRule::new("cluster.example", [thumbprint(&pki.ca)])]);
    // The issuer is found in the bundle, or among the certificates the peer sends.
    let v = verifier(pinned.clone(), Clients::default(), &[&pki.ca]);
    assert!(v.check_member(&pki.member.der, &[], now()).is_ok());
    assert!(
        v.check_member(&pki.renewal.der, &[], now()).is_ok(),
        "a renewal: touch-free"
    );
    let v = verifier(pinned, Clients::default(), &[]);
    let sent = [CertificateDer::from(pki.ca.der.clone())];
    assert!(v.check_member(&pki.member.der, &sent, now()).is_ok());
    let sent = [CertificateDer::from(pki.other_ca.der.clone())];
    assert_eq!(refusal(v.check_member(&pki.rogue.der, &sent, now())), "IssuerNotPinned");
}

#[test]
fn an_unpinned_common_name_needs_a_chain_to_the_bundle() {
    let pki = pki();
    let unpinned = Accepted::new([], [CommonNameRule::new("*.example", [])]);
    let v = verifier(unpinned.clone(), Clients::default(), &[&pki.ca]);
    assert!(
        v.check_member(&pki.member.der, &[], now()).is_ok(),
        "wildcard, CA in the bundle"
    );
    let sent = [CertificateDer::from(pki.other_ca.der.clone())];
    assert_eq!(refusal(v.check_member(&pki.rogue.der, &sent, now())), "UntrustedRoot");
    assert_eq!(
        refusal(v.check_member(&pki.member.der, &[], ts("2030-01-01T00:00:00Z"))),
        "CertificateExpired"
    );
}

#[test]
fn clients_are_members_or_named_in_the_allow_lists() {
    let pki = pki();
    let clients = Clients {
        thumbprints: vec![ClientThumbprint {
            thumbprint: thumbprint(&pki.self_signed),
            is_admin: true,
        }],
        common_names: vec![ClientCommonName {
            name: "cluster.example".into(),
            issuer_thumbprints: vec![thumbprint(&pki.other_ca)],
            is_admin: false,
        }],
    };
    let members = Accepted::new([], [CommonNameRule::new("cluster.example", [thumbprint(&pki.ca)])]);
    let v = verifier(members, clients, &[&pki.ca, &pki.other_ca]);
    assert_eq!(v.check_client(&pki.member.der, &[], now()), Ok(Admitted::Member));
    assert_eq!(
        v.check_client(&pki.self_signed.der, &[], now()),
        Ok(Admitted::Client { is_admin: true })
    );
    assert_eq!(
        v.check_client(&pki.rogue.der, &[], now()),
        Ok(Admitted::Client { is_admin: false })
    );
    assert!(
        v.check_member(&pki.rogue.der, &[], now()).is_err(),
        "a client is no member"
    );
    let stranger = cert("stranger.example").signed_by(&pki.other_ca);
    assert_eq!(
        v.check_client(&stranger.der, &[], now()).unwrap_err().reason,
        "CertificateNotMatched"
    );
}

/// Runs a handshake between a client and a server through buffers; returns
/// each side's error, if any.
fn handshake(client: ClientConfig, server: ServerConfig) -> (Option<rustls::Error>, Option<rustls::Error>) {
    let name = ServerName::try_from("member.invalid").unwrap();
    let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server)).unwrap();
    let (mut client_error, mut server_error) = (None, None);
    for _ in 0..10 {
        let mut buffer = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buffer).unwrap();
        }
        if !buffer.is_empty() {
            server.read_tls(&mut buffer.as_slice()).unwrap();
            if let Err(err) = server.process_new_packets() {
                server_error.get_or_insert(err);
            }
        }
        let mut buffer = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buffer).unwrap();
        }
        if !buffer.is_empty() {
            client.read_tls(&mut buffer.as_slice()).unwrap();
            if let Err(err) = client.process_new_packets() {
                client_error.get_or_insert(err);
            }
        }
        if client_error.is_some() || server_error.is_some() || !(client.is_handshaking() || server.is_handshaking()) {
            break;
        }
    }
    (client_error, server_error)
}

fn identity(issued: &Issued) -> Identity {
    Identity::from_pem(issued.pem.as_bytes(), issued.key_pem().as_bytes()).expect("identity")
}

#[test]
fn members_shake_hands_by_the_rules_and_a_refusal_says_why() {
    // The handshake's clock is the real one: certificates valid today.
    let valid_now = {
        let ca = cert("Cluster CA")
            .ca()
            .valid("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z")
            .self_signed();
        let member = |_| {
            cert("cluster.example")
                .dns("cluster.example")
                .valid("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z")
                .signed_by(&ca)
        };
        (member(0), member(1), ca)
    };
    let (a, b, ca) = valid_now;
    let pinned = Accepted::new([], [CommonNameRule::new("cluster.example", [thumbprint(&ca)])]);
    let rules_now = Arc::new(verifier(pinned, Clients::default(), &[&ca]));
    let (client_error, server_error) = handshake(
        rules_now.client_config(&identity(&a)).unwrap(),
        rules_now.server_config(&identity(&b)).unwrap(),
    );
    assert_eq!((client_error, server_error), (None, None), "two members");
    // A stranger from another CA is refused by the server, with the reason.
    let other = cert("Other CA")
        .ca()
        .valid("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z")
        .self_signed();
    let stranger = cert("cluster.example")
        .dns("cluster.example")
        .valid("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z")
        .signed_by(&other);
    let (_, server_error) = handshake(
        rules_now.client_config(&identity(&stranger)).unwrap(),
        rules_now.server_config(&identity(&b)).unwrap(),
    );
    let server_error = server_error.expect("refused");
    assert_eq!(
        Refusal::from_tls_error(&server_error).map(|r| r.reason),
        Some("IssuerNotPinned")
    );
    // And a client refuses a server the rules do not accept.
    let (client_error, _) = handshake(
        rules_now.client_config(&identity(&a)).unwrap(),
        rules_now.server_config(&identity(&stranger)).unwrap(),
    );
    assert_eq!(
        client_error
            .as_ref()
            .and_then(Refusal::from_tls_error)
            .map(|r| r.reason),
        Some("IssuerNotPinned")
    );
}

#[test]
fn a_key_that_is_not_the_certificate_s_is_refused_naming_tls_key() {
    let pki = pki();
    let verifier = Arc::new(verifier(
        Accepted::new([thumbprint(&pki.member)], []),
        Clients::default(),
        &[],
    ));
    let mismatched = Identity::from_pem(pki.member.pem.as_bytes(), pki.renewal.key_pem().as_bytes()).unwrap();
    for err in [
        verifier.server_config(&mismatched).unwrap_err(),
        verifier.client_config(&mismatched).unwrap_err(),
    ] {
        assert!(matches!(err, Error::Identity { file: "tls.key", .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("tls.key: does not match the certificate of tls.crt"),
            "{err}"
        );
    }
    assert!(verifier.server_config(&identity(&pki.member)).is_ok());
}
