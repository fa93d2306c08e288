//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus replay
//! test, so the corpus the fuzzer found is checked by every `cargo test`.
//! Each must return without panicking, whatever the bytes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jiff::Timestamp;

use crate::cli::manifests::Manifests;
use crate::crd::{CertificateSource, LocalObjectReference, ObservedCertificateSpec, ObservedCertificateStatus};
use crate::facts::{self, CertificateBundle, TlsMaterial};
use crate::observed::{self, Source};
use crate::thumbprint::{Thumbprint, parse_thumbprint_list};

/// Separates `tls.crt`, `tls.key` and `ca.crt` in a certificate-source input.
pub const SEPARATOR: &[u8] = b"\xFF\x00\xFF";

const NOW: &str = "2026-06-01T00:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("a fixed instant")
}

/// A Secret's `tls.crt`, `tls.key`, `ca.crt` (in that order, split on
/// [`SEPARATOR`]) through facts extraction, `inspect`, and the
/// ObservedCertificate decision, twice: the second look must change nothing,
/// or the controller would write status in a loop.
pub fn certificate_source(data: &[u8]) {
    let mut parts = split(data, SEPARATOR);
    let tls_crt = parts.next().unwrap_or_default();
    let tls_key = parts.next();
    let ca_crt = parts.next();
    let material = TlsMaterial {
        tls_crt,
        tls_key,
        ca_crt,
    };
    if let Ok(bundle) = CertificateBundle::from_tls(&material) {
        assert!(!bundle.chain_der.is_empty());
    }
    let _ = facts::inspect("fuzz", data);
    let _ = facts::parse_bundle("fuzz", data);

    let mut secret: BTreeMap<String, Vec<u8>> = BTreeMap::from([("tls.crt".to_owned(), tls_crt.to_vec())]);
    if let Some(key) = tls_key {
        secret.insert("tls.key".to_owned(), key.to_vec());
    }
    if let Some(ca) = ca_crt {
        secret.insert("ca.crt".to_owned(), ca.to_vec());
    }
    let spec = ObservedCertificateSpec {
        source: CertificateSource {
            secret_ref: LocalObjectReference { name: "tls".into() },
        },
        ..Default::default()
    };
    let look = |status: &ObservedCertificateStatus| {
        observed::decide(observed::World {
            name: "fuzz",
            generation: Some(1),
            spec: &spec,
            status,
            source: Source::Present(&secret, "kubernetes.io/tls"),
            stored: None,
            store_owned_elsewhere: false,
            policy: None,
            in_use: &Default::default(),
            now: now(),
        })
    };
    let first = look(&ObservedCertificateStatus::default())
        .status
        .expect("a first look writes a status");
    let second = look(&first);
    assert_eq!(
        second.status, None,
        "a second look at the same Secret changed the status"
    );
}

/// Thumbprint normalization: a normalized thumbprint parses back to itself,
/// and an error names the field.
pub fn thumbprint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Thumbprint::parse("spec.certificate.thumbprint", text) {
        Ok(tp) => {
            assert!(tp.as_str().len() == 40 || tp.as_str().len() == 64);
            assert_eq!(Thumbprint::parse("again", tp.as_str()).as_ref(), Ok(&tp));
        }
        Err(err) => assert_eq!(err.field(), "spec.certificate.thumbprint"),
    }
    let _ = parse_thumbprint_list(
        "spec.certificateCommonNames.commonNames[0].certificateIssuerThumbprint",
        text,
    );
}

/// `certshift plan` input: the fuzzed YAML documents on top of the conversion
/// example's store, planned as the CLI would.
pub fn plan_input(data: &[u8]) {
    static BASE: OnceLock<Manifests> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let mut manifests = Manifests::default();
        for (file, text) in [
            ("store.yaml", include_str!("../../examples/conversion/store.yaml")),
            ("ca.yaml", include_str!("../../examples/conversion/ca.yaml")),
        ] {
            manifests.read(file, text).expect("the example parses");
        }
        manifests
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut manifests = base.clone();
    if manifests.read("fuzz.yaml", text).is_err() {
        return;
    }
    if let Ok(report) = crate::cli::plan::plan(&manifests, now()) {
        let _ = crate::cli::plan::render_json(&report);
        let _ = crate::cli::plan::render_text(&report);
    }
}

fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(separator.len()).position(|w| w == separator) {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// CRLs as `spec.revocation` and `crls.pem` carry them: parsed, and put in
/// force against a trust bundle read from the first part of the input.
pub fn revocation_list(data: &[u8]) {
    let mut parts = split(data, SEPARATOR);
    let (bundle, crls) = match (parts.next(), parts.next()) {
        (Some(bundle), Some(crls)) => (bundle, crls),
        (Some(crls), None) => (&[][..], crls),
        _ => return,
    };
    let Ok(crls) = facts::parse_crls("fuzz", crls) else {
        return;
    };
    let mut pool = crate::trust::TrustPool::default();
    for (facts, der) in facts::parse_bundle("fuzz", bundle).unwrap_or_default() {
        pool.add_anchor(facts, der);
    }
    for crl in &crls {
        if let Some(issuer) = pool.add_crl(crl) {
            assert!(pool.is_anchor(&issuer), "a CRL's issuer comes from the pool");
        }
    }
    let _ = pool.build();
}
