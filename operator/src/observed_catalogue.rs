//! The malformed-input catalogue for certificate sources: each case gives its
//! specific reason, never panics, and deciding twice on the same input yields
//! the same status (so the controller writes once, then waits for a change).

use std::collections::BTreeMap;

use super::*;
use crate::crd::{CertificateSource, LocalObjectReference};
use crate::testing::{Key, cert, ts};

const NOW: &str = "2026-06-01T00:00:00Z";

fn spec() -> ObservedCertificateSpec {
    ObservedCertificateSpec {
        source: CertificateSource {
            secret_ref: LocalObjectReference { name: "tls".into() },
        },
        ..Default::default()
    }
}

fn decide_on(data: &BTreeMap<String, Vec<u8>>, status: &ObservedCertificateStatus) -> Decision {
    decide(World {
        name: "cluster",
        generation: Some(1),
        spec: &spec(),
        status,
        source: Source::Present(data),
        stored: None,
        store_owned_elsewhere: false,
        policy: None,
        now: ts(NOW),
    })
}

fn secret(crt: Vec<u8>, key: Option<Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::from([("tls.crt".to_owned(), crt)]);
    if let Some(key) = key {
        data.insert("tls.key".to_owned(), key);
    }
    data
}

/// (name, tls.crt, tls.key, the expected `Valid` reason)
type Case = (&'static str, Vec<u8>, Option<Vec<u8>>, &'static str);

fn valid_reason(status: &ObservedCertificateStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == VALID)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[test]
fn every_malformed_source_has_its_reason_and_settles() {
    let good = cert("c.example").self_signed();
    let other = cert("o.example").self_signed();
    let rsa = cert("r.example").key(Key::Rsa2048).self_signed();
    let expired = cert("c.example")
        .valid("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
        .self_signed();
    let future = cert("c.example")
        .valid("2026-09-01T00:00:00Z", "2027-01-01T00:00:00Z")
        .self_signed();
    let pem = good.pem.clone();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut trailing = good.der.clone();
    trailing.extend_from_slice(&[0, 0]);
    let cases: Vec<Case> = vec![
        ("empty tls.crt", vec![], None, "NoCertificate"),
        ("whitespace tls.crt", b" \n\t\n".to_vec(), None, "NoCertificate"),
        (
            "missing END marker",
            pem.replace("-----END CERTIFICATE-----", "").into_bytes(),
            None,
            "MalformedPem",
        ),
        (
            "missing BEGIN marker",
            pem.replace("-----BEGIN CERTIFICATE-----", "").into_bytes(),
            None,
            "MalformedCertificate",
        ),
        ("bare base64", body.clone().into_bytes(), None, "MalformedCertificate"),
        (
            "truncated base64",
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                &body[..body.len() / 2]
            )
            .into_bytes(),
            None,
            "MalformedCertificate",
        ),
        (
            "non-base64 characters",
            pem.replacen('M', "*", 1).into_bytes(),
            None,
            "MalformedPem",
        ),
        (
            "private key in tls.crt",
            good.key_pem().into_bytes(),
            None,
            "UnexpectedPemLabel",
        ),
        (
            "certificate request label",
            pem.replace("CERTIFICATE", "CERTIFICATE REQUEST").into_bytes(),
            None,
            "UnexpectedPemLabel",
        ),
        ("1000 blocks", pem.repeat(1000).into_bytes(), None, "TooManyBlocks"),
        ("1 MiB of garbage", vec![b'x'; 1 << 20], None, "MalformedCertificate"),
        (
            "random DER",
            vec![0x30, 0x03, 0x02, 0x01, 0x05],
            None,
            "MalformedCertificate",
        ),
        (
            "truncated DER",
            good.der[..good.der.len() - 10].to_vec(),
            None,
            "MalformedCertificate",
        ),
        (
            "DER length overflow",
            vec![0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF, 0x00],
            None,
            "MalformedCertificate",
        ),
        ("DER with trailing bytes", trailing, None, "MalformedCertificate"),
        ("empty SEQUENCE", vec![0x30, 0x00], None, "MalformedCertificate"),
        (
            "expired",
            expired.pem.clone().into_bytes(),
            Some(expired.key_pem().into_bytes()),
            "CertificateExpired",
        ),
        (
            "not yet valid",
            future.pem.clone().into_bytes(),
            Some(future.key_pem().into_bytes()),
            "CertificateNotYetValid",
        ),
        (
            "key of another certificate",
            pem.clone().into_bytes(),
            Some(other.key_pem().into_bytes()),
            "PrivateKeyMismatch",
        ),
        (
            "key of another type",
            pem.clone().into_bytes(),
            Some(rsa.key_pem().into_bytes()),
            "PrivateKeyMismatch",
        ),
        (
            "garbage key",
            pem.clone().into_bytes(),
            Some(b"not a key".to_vec()),
            "PrivateKeyUnreadable",
        ),
        (
            "encrypted key",
            pem.clone().into_bytes(),
            Some(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n".to_vec()),
            "PrivateKeyUnreadable",
        ),
        (
            "CRLF and BOM are fine",
            format!("\u{FEFF}{}", pem.replace('\n', "\r\n")).into_bytes(),
            Some(good.key_pem().into_bytes()),
            "Valid",
        ),
    ];
    let mut seen = Vec::new();
    for (name, crt, key, reason) in cases {
        let data = secret(crt, key);
        let first = decide_on(&data, &ObservedCertificateStatus::default());
        assert_eq!(valid_reason(&first.status), reason, "{name}");
        let again = decide_on(&data, &first.status);
        assert_eq!(again.status, first.status, "{name}: a second look changes nothing");
        seen.push(name);
    }
    assert!(seen.len() >= 23);
}
