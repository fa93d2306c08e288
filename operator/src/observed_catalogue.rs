//! The malformed-input catalogue for certificate sources: each case gives its
//! specific reason, never panics, and deciding twice on the same input yields
//! the same status (so the controller writes once, then waits for a change).

use std::collections::BTreeMap;

use super::*;
use crate::crd::{CertificateSource, LocalObjectReference};
use crate::testing::{Key, cert, ts};

const NOW: &str = "2026-06-01T00:00:00Z";
/// When the certificates made with openssl (testdata) are time-valid.
const LATER: &str = "2028-06-01T00:00:00Z";
const TLS: &str = "kubernetes.io/tls";
const RSA_512: &str = include_str!("testdata/rsa512-self-signed.pem");
const V1: &str = include_str!("testdata/v1-self-signed.pem");
const RSA_16384: &str = include_str!("testdata/rsa16384-self-signed.pem");

fn spec() -> ObservedCertificateSpec {
    ObservedCertificateSpec {
        source: CertificateSource {
            secret_ref: LocalObjectReference { name: "tls".into() },
        },
        ..Default::default()
    }
}

fn look(source: Source<'_>, status: &ObservedCertificateStatus, now: &str) -> Looked {
    decide(World {
        name: "cluster",
        generation: Some(1),
        spec: &spec(),
        status,
        source,
        stored: None,
        store_owned_elsewhere: false,
        policy: None,
        in_use: &Default::default(),
        now: ts(now),
    })
    .after(status)
}

fn decide_on(data: &BTreeMap<String, Vec<u8>>, status: &ObservedCertificateStatus) -> Looked {
    look(Source::Present(data, TLS), status, NOW)
}

fn secret(crt: Vec<u8>, key: Option<Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::from([("tls.crt".to_owned(), crt)]);
    if let Some(key) = key {
        data.insert("tls.key".to_owned(), key);
    }
    data
}

/// One named input: the source Secret's keys and type, when it is looked at,
/// and the `Valid` reason it must get.
struct Case {
    name: &'static str,
    data: BTreeMap<String, Vec<u8>>,
    secret_type: &'static str,
    now: &'static str,
    reason: &'static str,
}

fn case(name: &'static str, crt: impl Into<Vec<u8>>, key: Option<String>, reason: &'static str) -> Case {
    Case {
        name,
        data: secret(crt.into(), key.map(String::into_bytes)),
        secret_type: TLS,
        now: NOW,
        reason,
    }
}

impl Case {
    fn at(mut self, now: &'static str) -> Self {
        self.now = now;
        self
    }

    fn with(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }
}

/// The first PEM block of `label` in a testdata file.
fn block(pem_text: &str, label: &str) -> String {
    pem::parse_many(pem_text)
        .expect("testdata")
        .into_iter()
        .find(|p| p.tag().ends_with(label))
        .map(|p| pem::encode(&p))
        .expect(label)
}

fn valid_reason(status: &ObservedCertificateStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == VALID)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn cases() -> Vec<Case> {
    let good = cert("c.example").self_signed();
    let other = cert("o.example").self_signed();
    let rsa = cert("r.example").key(Key::Rsa2048).self_signed();
    let ed = cert("e.example").key(Key::Ed25519).self_signed();
    let expired = cert("c.example")
        .valid("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
        .self_signed();
    let future = cert("c.example")
        .valid("2026-09-01T00:00:00Z", "2027-01-01T00:00:00Z")
        .self_signed();
    let inverted = cert("c.example")
        .valid("2026-09-01T00:00:00Z", "2026-03-01T00:00:00Z")
        .self_signed();
    let ca_leaf = cert("c.example").ca().self_signed();
    let san_mismatch = cert("c.example").dns("other.example").self_signed();
    let root = cert("Root").ca().self_signed();
    let intermediate = cert("Intermediate").ca().signed_by(&root);
    let chained = cert("c.example").dns("c.example").signed_by(&intermediate);
    let stranger_ca = cert("Stranger").ca().self_signed();
    let unknown_issuer = cert("c.example").signed_by(&stranger_ca);
    let serial = |bytes: &[u8]| {
        let mut builder = cert("c.example");
        builder.serial(bytes);
        builder.self_signed()
    };
    let zero_serial = serial(&[0]);
    let long_serial = serial(&[0x7F; 20]);
    let high_bit_serial = serial(&[0x80, 1]);

    let pem = good.pem.clone();
    let key = || Some(good.key_pem());
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut trailing = good.der.clone();
    trailing.extend_from_slice(&[0, 0]);
    let mut overlong = good.der.clone();
    overlong[1] = 0x84; // a length that claims 4 bytes of length and more content than exists
    let v1 = block(V1, "CERTIFICATE");
    let big_rsa = block(RSA_16384, "CERTIFICATE");

    vec![
        // PEM
        case("empty tls.crt", "", None, "NoCertificate"),
        case("whitespace tls.crt", " \n\t\n", None, "NoCertificate"),
        case(
            "missing END marker",
            pem.replace("-----END CERTIFICATE-----", ""),
            None,
            "MalformedPem",
        ),
        case(
            "missing BEGIN marker",
            pem.replace("-----BEGIN CERTIFICATE-----", ""),
            None,
            "MalformedCertificate",
        ),
        case("bare base64", body.clone(), None, "MalformedCertificate"),
        case(
            "truncated base64",
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                &body[..body.len() / 2]
            ),
            None,
            "MalformedCertificate",
        ),
        case("non-base64 characters", pem.replacen('M', "*", 1), None, "MalformedPem"),
        case("private key in tls.crt", good.key_pem(), None, "UnexpectedPemLabel"),
        case(
            "certificate request label",
            pem.replace("CERTIFICATE", "CERTIFICATE REQUEST"),
            None,
            "UnexpectedPemLabel",
        ),
        case(
            "trusted certificate label",
            pem.replace("CERTIFICATE", "TRUSTED CERTIFICATE"),
            None,
            "UnexpectedPemLabel",
        ),
        case("1000 blocks", pem.repeat(1000), None, "TooManyBlocks"),
        case("1 MiB of garbage", vec![b'x'; 1 << 20], None, "MalformedCertificate"),
        case(
            "1 MiB of text around one certificate",
            format!("{}\n{pem}", "# explanatory text\n".repeat((1 << 20) / 19)),
            key(),
            "Valid",
        ),
        case("CRLF line ends", pem.replace('\n', "\r\n"), key(), "Valid"),
        case("byte order mark", format!("\u{FEFF}{pem}"), key(), "Valid"),
        case(
            "CRLF and BOM together",
            format!("\u{FEFF}{}", pem.replace('\n', "\r\n")),
            key(),
            "Valid",
        ),
        case("malformed ca.crt", pem.clone(), key(), "MalformedCertificate").with("ca.crt", "not a certificate"),
        // DER
        case(
            "random DER",
            vec![0x30, 0x03, 0x02, 0x01, 0x05],
            None,
            "MalformedCertificate",
        ),
        case(
            "truncated DER",
            good.der[..good.der.len() - 10].to_vec(),
            None,
            "MalformedCertificate",
        ),
        case(
            "DER length overflow",
            vec![0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF, 0x00],
            None,
            "MalformedCertificate",
        ),
        case("DER length beyond the data", overlong, None, "MalformedCertificate"),
        case("DER with trailing bytes", trailing, None, "MalformedCertificate"),
        case("empty SEQUENCE", vec![0x30, 0x00], None, "MalformedCertificate"),
        case("DER certificate", good.der.clone(), key(), "Valid"),
        case("X.509 v1 certificate", v1, Some(block(V1, "PRIVATE KEY")), "Valid").at(LATER),
        case(
            "serial number zero",
            zero_serial.pem.clone(),
            Some(zero_serial.key_pem()),
            "Valid",
        ),
        case(
            "20-byte serial number",
            long_serial.pem.clone(),
            Some(long_serial.key_pem()),
            "Valid",
        ),
        case(
            "serial number with the high bit set",
            high_bit_serial.pem.clone(),
            Some(high_bit_serial.key_pem()),
            "Valid",
        ),
        // Semantics
        case(
            "expired",
            expired.pem.clone(),
            Some(expired.key_pem()),
            "CertificateExpired",
        ),
        case(
            "not yet valid",
            future.pem.clone(),
            Some(future.key_pem()),
            "CertificateNotYetValid",
        ),
        case(
            "notAfter before notBefore",
            inverted.pem.clone(),
            Some(inverted.key_pem()),
            "InvalidValidityPeriod",
        ),
        case(
            "key of another certificate",
            pem.clone(),
            Some(other.key_pem()),
            "PrivateKeyMismatch",
        ),
        case(
            "RSA key for an ECDSA certificate",
            pem.clone(),
            Some(rsa.key_pem()),
            "PrivateKeyMismatch",
        ),
        case(
            "Ed25519 key for an ECDSA certificate",
            pem.clone(),
            Some(ed.key_pem()),
            "PrivateKeyMismatch",
        ),
        case(
            "RSA 512 key for an RSA 2048 certificate",
            rsa.pem.clone(),
            Some(block(RSA_512, "PRIVATE KEY")),
            "PrivateKeyMismatch",
        ),
        case(
            "garbage key",
            pem.clone(),
            Some("not a key".into()),
            "PrivateKeyUnreadable",
        ),
        case(
            "encrypted key",
            pem.clone(),
            Some("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n".into()),
            "PrivateKeyUnreadable",
        ),
        case(
            "out-of-order chain",
            format!("{}{}{}", chained.pem, root.pem, intermediate.pem),
            Some(chained.key_pem()),
            "Valid",
        ),
        case(
            "unknown issuer",
            unknown_issuer.pem.clone(),
            Some(unknown_issuer.key_pem()),
            "Valid",
        ),
        case(
            "CA certificate as the leaf",
            ca_leaf.pem.clone(),
            Some(ca_leaf.key_pem()),
            "CertificateIsCA",
        ),
        case(
            "subject CN not among the DNS names",
            san_mismatch.pem.clone(),
            Some(san_mismatch.key_pem()),
            "SubjectAlternativeNameMismatch",
        ),
        case(
            "RSA 512",
            block(RSA_512, "CERTIFICATE"),
            Some(block(RSA_512, "PRIVATE KEY")),
            "KeyTooWeak",
        )
        .at(LATER),
        case(
            "RSA 16384",
            big_rsa,
            Some(block(RSA_16384, "PRIVATE KEY")),
            "UnsupportedKeySize",
        )
        .at(LATER),
        // Kubernetes
        Case {
            secret_type: "kubernetes.io/dockerconfigjson",
            ..case("wrong Secret type", pem.clone(), key(), "UnexpectedSecretType")
        },
        Case {
            secret_type: "Opaque",
            ..case("Opaque Secret", pem.clone(), key(), "Valid")
        },
        Case {
            data: BTreeMap::from([("cert.pem".to_owned(), pem.clone().into_bytes())]),
            ..case("no tls.crt key", "", None, "MissingKey")
        },
        Case {
            data: BTreeMap::new(),
            ..case("no keys at all", "", None, "MissingKey")
        },
    ]
}

#[test]
fn every_catalogued_source_has_its_reason_and_settles() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for c in &cases {
        let source = || Source::Present(&c.data, c.secret_type);
        let first = look(source(), &ObservedCertificateStatus::default(), c.now);
        assert_eq!(valid_reason(&first.status), c.reason, "{}", c.name);
        let again = look(source(), &first.status, c.now);
        assert_eq!(again.status, first.status, "{}: a second look changes nothing", c.name);
        // Either the source cannot be read (declarations hold their stage), or
        // the certificate was read and the planner judges it per instance.
        match unreadable_source(&first.status) {
            Some((reason, _)) => assert_eq!(reason, c.reason, "{}", c.name),
            None => assert!(first.status.current.is_some(), "{}: read", c.name),
        }
    }
}

#[test]
fn a_chain_in_any_order_resolves_the_issuer() {
    let root = cert("Root").ca().self_signed();
    let intermediate = cert("Intermediate").ca().signed_by(&root);
    let leaf = cert("c.example").signed_by(&intermediate);
    let data = secret(
        format!("{}{}{}", leaf.pem, root.pem, intermediate.pem).into_bytes(),
        Some(leaf.key_pem().into_bytes()),
    );
    let decision = decide_on(&data, &ObservedCertificateStatus::default());
    let instance = &decision.status.instances[0];
    let intermediate_tp = crate::facts::inspect("ca", intermediate.pem.as_bytes()).unwrap()[0]
        .thumbprint
        .clone();
    assert_eq!(instance.issuer_thumbprint.as_ref(), Some(&intermediate_tp));
}

/// The source replaced by garbage, then deleted, mid-upgrade: the current
/// instance and its history stay, each change is one status, and the
/// ObservedCertificate says the source cannot be read (declarations hold).
#[test]
fn a_source_replaced_then_deleted_keeps_history_and_holds() {
    let good = cert("c.example").self_signed();
    let data = secret(good.pem.clone().into_bytes(), Some(good.key_pem().into_bytes()));
    let settled = decide_on(&data, &ObservedCertificateStatus::default());
    assert!(unreadable_source(&settled.status).is_none());

    let garbage = secret(b"garbage".to_vec(), None);
    let replaced = decide_on(&garbage, &settled.status);
    assert_eq!(replaced.status.current, settled.status.current);
    assert_eq!(replaced.status.instances, settled.status.instances);
    assert_eq!(replaced.store, None, "nothing to store");
    assert_eq!(
        unreadable_source(&replaced.status).map(|r| r.0),
        Some("MalformedCertificate")
    );
    assert_eq!(decide_on(&garbage, &replaced.status).status, replaced.status);

    let deleted = look(Source::Missing, &replaced.status, NOW);
    assert_eq!(deleted.status.current, settled.status.current);
    assert_eq!(deleted.status.instances, settled.status.instances);
    assert_eq!(unreadable_source(&deleted.status).map(|r| r.0), Some("SecretNotFound"));
    assert_eq!(look(Source::Missing, &deleted.status, NOW).status, deleted.status);

    let restored = decide_on(&data, &deleted.status);
    assert!(unreadable_source(&restored.status).is_none());
}

/// kstatus over the status `decide` writes (see `crate::kstatus`): a Secret
/// not there yet is in progress, one certshift cannot use fails, a usable one
/// is current and `Ready`; a policy that does not exist yet is in progress,
/// an invalid one fails; an edit not yet seen is in progress.
#[test]
fn kstatus_reads_each_state_as_flux_should_report_it() {
    use crate::kstatus::Status;
    let good = cert("c.example").self_signed();
    let good = secret(good.pem.clone().into_bytes(), Some(good.key_pem().into_bytes()));
    let garbage = secret(b"not a certificate".to_vec(), None);
    let read = |status: &ObservedCertificateStatus, generation: i64| {
        let mut object = crate::crd::ObservedCertificate::new("o", spec());
        object.metadata.generation = Some(generation);
        object.status = Some(status.clone());
        crate::kstatus::of(&object).0
    };
    let with_policy = |source: Source<'_>, policy| {
        decide(World {
            name: "cluster",
            generation: Some(1),
            spec: &ObservedCertificateSpec {
                policy_ref: Some(LocalObjectReference { name: "p".into() }),
                ..spec()
            },
            status: &ObservedCertificateStatus::default(),
            source,
            stored: None,
            store_owned_elsewhere: false,
            policy: Some(policy),
            in_use: &Default::default(),
            now: ts(NOW),
        })
        .after(&ObservedCertificateStatus::default())
        .status
    };
    let empty = ObservedCertificateStatus::default();
    let current = decide_on(&good, &empty).status;
    let rows = [
        (
            "secret not there yet",
            look(Source::Missing, &empty, NOW).status,
            1,
            Status::InProgress,
        ),
        ("unusable source", decide_on(&garbage, &empty).status, 1, Status::Failed),
        ("done", current.clone(), 1, Status::Current),
        ("stale generation", current.clone(), 2, Status::InProgress),
        (
            "policy not there yet",
            with_policy(Source::Present(&good, TLS), Err(("PolicyNotFound", "not found".into()))),
            1,
            Status::InProgress,
        ),
        (
            "invalid policy",
            with_policy(
                Source::Present(&good, TLS),
                Err(("InvalidPolicy", "spec.validity".into())),
            ),
            1,
            Status::Failed,
        ),
    ];
    for (state, status, generation, expected) in rows {
        assert_eq!(read(&status, generation), expected, "{state}: {:#?}", status.conditions);
        let ready = status.conditions.iter().find(|c| c.type_ == READY).expect("Ready");
        assert_eq!(
            ready.status == "True",
            state == "done" || state == "stale generation",
            "{state}"
        );
        assert_ne!(ready.message, ready.reason, "{state}: Ready says more than its reason");
    }
}
