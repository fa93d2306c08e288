use super::*;
use crate::testing::{EC_P256_PKCS8, EC_P256_SEC1, Key, RSA_2048_PKCS1, cert, ts};

fn tls<'a>(crt: &'a str, key: Option<&'a str>, ca: Option<&'a str>) -> TlsMaterial<'a> {
    TlsMaterial {
        tls_crt: crt.as_bytes(),
        tls_key: key.map(str::as_bytes),
        ca_crt: ca.map(str::as_bytes),
    }
}

#[test]
fn leaf_facts_from_a_tls_secret_with_chain_and_ca() {
    let root = cert("Root CA").ca().self_signed();
    let intermediate = cert("Issuing CA").signing_ca().signed_by(&root);
    let leaf = cert("cluster.example")
        .dns("cluster.example")
        .dns("*.cluster.example")
        .ip("10.0.0.1".parse().unwrap())
        .server_and_client_auth()
        .valid("2026-03-01T00:00:00Z", "2026-07-01T00:00:00Z")
        .signed_by(&intermediate);
    let chain = format!("{}{}", leaf.pem, intermediate.pem);
    let key = leaf.key_pem();
    let bundle = CertificateBundle::from_tls(&tls(&chain, Some(&key), Some(&root.pem))).unwrap();

    let facts = &bundle.leaf;
    let sha1 = Thumbprint::from_digest(&sha1::Sha1::digest(&leaf.der));
    assert_eq!(facts.thumbprint, sha1);
    assert_eq!(facts.thumbprint.as_str().len(), 40);
    assert_eq!(facts.sha256.as_str().len(), 64);
    assert_eq!(facts.common_name.as_deref(), Some("cluster.example"));
    assert_eq!(facts.subject, "CN=cluster.example");
    assert_eq!(facts.dns_names, ["cluster.example", "*.cluster.example"]);
    assert_eq!(facts.ip_addresses, ["10.0.0.1"]);
    assert_eq!(facts.issuer, "CN=Issuing CA");
    assert_eq!(facts.issuer_thumbprint.as_ref(), Some(&bundle.chain[0].thumbprint));
    assert_eq!(
        bundle.chain[0].issuer_thumbprint.as_ref(),
        Some(&bundle.ca[0].thumbprint)
    );
    assert_eq!(facts.not_before, ts("2026-03-01T00:00:00Z"));
    assert_eq!(facts.not_after, ts("2026-07-01T00:00:00Z"));
    assert_eq!((facts.key_algorithm.as_str(), facts.key_size), ("ECDSA", 256));
    assert_eq!(facts.signature_algorithm, "ecdsaWithSHA256");
    assert_eq!(facts.extended_key_usages, ["serverAuth", "clientAuth"]);
    assert_eq!(facts.key_usages, [] as [String; 0], "no keyUsage extension");
    assert_eq!(bundle.chain[0].key_usages, ["keyCertSign", "crlSign"]);
    assert!(!facts.is_ca && !facts.self_signed);
    assert_eq!(facts.private_key, PrivateKeyState::Matches);
    assert_eq!(bundle.key_message, None);
    assert_eq!(bundle.authorities().count(), 2);
    assert_eq!(bundle.chain_der.len(), 2);
}

#[test]
fn every_key_type_is_sized_and_matched() {
    for (key, algorithm, bits) in [
        (Key::EcP256, "ECDSA", 256),
        (Key::EcP384, "ECDSA", 384),
        (Key::Ed25519, "Ed25519", 256),
        (Key::Rsa2048, "RSA", 2048),
    ] {
        let label = format!("{key:?}");
        let issued = cert("k.example").key(key).self_signed();
        let key_pem = issued.key_pem();
        let bundle = CertificateBundle::from_tls(&tls(&issued.pem, Some(&key_pem), None)).unwrap();
        assert_eq!(
            (bundle.leaf.key_algorithm.as_str(), bundle.leaf.key_size),
            (algorithm, bits),
            "{label}"
        );
        assert_eq!(bundle.leaf.private_key, PrivateKeyState::Matches, "{label}");
        assert!(bundle.leaf.self_signed);
        assert_eq!(bundle.leaf.issuer_thumbprint.as_ref(), Some(&bundle.leaf.thumbprint));
    }
}

#[test]
fn rsa_keys_in_pkcs1_form_match() {
    let issued = cert("rsa.example").key(Key::Rsa2048).self_signed();
    let bundle = CertificateBundle::from_tls(&tls(&issued.pem, Some(RSA_2048_PKCS1), None)).unwrap();
    assert_eq!(bundle.leaf.private_key, PrivateKeyState::Matches);
    assert_eq!(bundle.leaf.signature_algorithm, "sha256WithRSAEncryption");
}

#[test]
fn sec1_ec_keys_match() {
    // An OpenSSL `ecparam -genkey` key: SEC1 with curve parameters and public key.
    let key = rcgen::KeyPair::from_pem(EC_P256_PKCS8).unwrap();
    let issued = cert("ec.example").with_key(key).self_signed();
    let bundle = CertificateBundle::from_tls(&tls(&issued.pem, Some(EC_P256_SEC1), None)).unwrap();
    assert_eq!(bundle.leaf.private_key, PrivateKeyState::Matches);
}

#[test]
fn a_key_of_another_certificate_is_a_mismatch_with_a_reason() {
    let a = cert("a.example").self_signed();
    let b = cert("b.example").self_signed();
    let rsa = cert("r.example").key(Key::Rsa2048).self_signed();
    let b_key = b.key_pem();
    let same_type = CertificateBundle::from_tls(&tls(&a.pem, Some(&b_key), None)).unwrap();
    assert_eq!(same_type.leaf.private_key, PrivateKeyState::Mismatch);
    assert_eq!(
        same_type.key_message.as_deref(),
        Some("tls.key is a different ECDSA P-256 key than the certificate's")
    );
    let rsa_key = rsa.key_pem();
    let other_type = CertificateBundle::from_tls(&tls(&a.pem, Some(&rsa_key), None)).unwrap();
    assert_eq!(other_type.leaf.private_key, PrivateKeyState::Mismatch);
    assert_eq!(
        other_type.key_message.as_deref(),
        Some("tls.key holds an RSA 2048 key; the certificate's key is ECDSA P-256")
    );
}

#[test]
fn unreadable_keys_are_reported_not_fatal() {
    let a = cert("a.example").self_signed();
    for (key, expected) in [
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "malformed PKCS#8",
        ),
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted",
        ),
        ("garbage", "not a PEM or DER private key"),
        (a.pem.as_str(), "no PRIVATE KEY block"),
    ] {
        let bundle = CertificateBundle::from_tls(&tls(&a.pem, Some(key), None)).unwrap();
        assert_eq!(bundle.leaf.private_key, PrivateKeyState::Unreadable, "{expected}");
        let message = bundle.key_message.unwrap();
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn der_input_is_read() {
    let a = cert("a.example").self_signed();
    let bundle = CertificateBundle::from_tls(&TlsMaterial {
        tls_crt: &a.der,
        tls_key: None,
        ca_crt: None,
    })
    .unwrap();
    assert_eq!(bundle.leaf.common_name.as_deref(), Some("a.example"));
    assert_eq!(bundle.leaf.private_key, PrivateKeyState::Missing);
}

#[test]
fn crlf_and_bom_pem_is_read() {
    let a = cert("a.example").self_signed();
    let crlf = format!("\u{FEFF}{}", a.pem.replace('\n', "\r\n"));
    let bundle = CertificateBundle::from_tls(&tls(&crlf, None, None)).unwrap();
    assert_eq!(bundle.leaf.common_name.as_deref(), Some("a.example"));
}

#[test]
fn an_out_of_order_chain_still_resolves_the_issuer() {
    let root = cert("Root CA").ca().self_signed();
    let leaf = cert("leaf.example").signed_by(&root);
    let reversed = format!("{}{}", leaf.pem, root.pem);
    let bundle = CertificateBundle::from_tls(&tls(&reversed, None, None)).unwrap();
    assert_eq!(
        bundle.leaf.issuer_thumbprint.as_ref(),
        Some(&bundle.chain[0].thumbprint)
    );
    // The issuer named but absent: unknown, not guessed.
    let alone = CertificateBundle::from_tls(&tls(&leaf.pem, None, None)).unwrap();
    assert_eq!(alone.leaf.issuer_thumbprint, None);
}

#[test]
fn an_issuer_with_the_right_name_but_another_key_is_not_the_issuer() {
    let root = cert("Root CA").ca().self_signed();
    let impostor = cert("Root CA").ca().self_signed();
    let leaf = cert("leaf.example").signed_by(&root);
    let bundle = CertificateBundle::from_tls(&tls(&leaf.pem, None, Some(&impostor.pem))).unwrap();
    assert_eq!(bundle.leaf.issuer_thumbprint, None);
}

#[test]
fn malformed_material_gives_named_errors() {
    let a = cert("a.example").self_signed();
    let key_pem = a.key_pem();
    let truncated_der = &a.der[..a.der.len() / 2];
    let truncated_message = format!(
        "truncated: it declares {} bytes and has {}",
        a.der.len(),
        truncated_der.len()
    );
    let mut trailing = a.der.clone();
    trailing.extend_from_slice(b"xx");
    // The certificate's base64 without its BEGIN and END lines.
    let bare_base64: String = a.pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(a.pem.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    // Each case: its reason, and words of its message a person can act on
    // (never the parsers' own, such as `NomError(Eof)` or `malformedframing`).
    let cases: Vec<(&[u8], &str, &str)> = vec![
        (b"", "NoCertificate", "no certificate found"),
        (b"   \n", "NoCertificate", "no certificate found"),
        (
            b"garbage that is not a certificate",
            "MalformedCertificate",
            "it is text without a \"-----BEGIN CERTIFICATE-----\" line, so not PEM either",
        ),
        (
            bare_base64.as_bytes(),
            "MalformedCertificate",
            "it is base64 without its \"-----BEGIN CERTIFICATE-----\" and \"-----END CERTIFICATE-----\" lines",
        ),
        (&utf16, "MalformedCertificate", "it is UTF-16 text"),
        (truncated_der, "MalformedCertificate", &truncated_message),
        // Complete by its declared length, but nothing inside.
        (
            b"\x30\x00",
            "MalformedCertificate",
            "malformed DER: an element runs past the end of what contains it",
        ),
        (&trailing, "MalformedCertificate", "2 trailing bytes"),
        (
            key_pem.as_bytes(),
            "UnexpectedPemLabel",
            "\"PRIVATE KEY\", expected \"CERTIFICATE\"",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "MalformedPem",
            "base64",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
            "MalformedPem",
            "1 -----BEGIN …----- line(s) but 0 complete block(s): a block lacks its -----END …----- line, or one of the two is malformed",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "MalformedCertificate",
            "it starts with byte 0x00, not a DER SEQUENCE (0x30)",
        ),
    ];
    for (input, reason, words) in cases {
        let err = CertificateBundle::from_tls(&TlsMaterial {
            tls_crt: input,
            tls_key: None,
            ca_crt: None,
        })
        .unwrap_err();
        assert_eq!(err.reason(), reason, "{input:?}: {err}");
        assert!(err.to_string().starts_with("tls.crt:"), "{err}");
        assert!(err.to_string().contains(words), "{input:?}: {words:?} not in {err}");
        for parsers_words in ["NomError", "Parsing Error", "malformedframing", "nom error"] {
            assert!(!err.to_string().contains(parsers_words), "{input:?}: {err}");
        }
    }
}

#[test]
fn a_bad_ca_crt_is_named() {
    let a = cert("a.example").self_signed();
    let err = CertificateBundle::from_tls(&tls(&a.pem, None, Some("nonsense"))).unwrap_err();
    assert!(err.to_string().starts_with("ca.crt:"), "{err}");
}

#[test]
fn too_many_blocks_are_refused() {
    let a = cert("a.example").self_signed();
    let many = a.pem.repeat(MAX_BLOCKS + 1);
    let err = CertificateBundle::from_tls(&tls(&many, None, None)).unwrap_err();
    assert_eq!(err.reason(), "TooManyBlocks");
}

#[test]
fn inspect_reads_every_certificate_and_a_key_beside_them() {
    let root = cert("Root CA").ca().self_signed();
    let leaf = cert("leaf.example").signed_by(&root);
    let file = format!("{}{}{}", leaf.pem, leaf.key_pem(), root.pem);
    let all = inspect("file.pem", file.as_bytes()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].issuer_thumbprint.as_ref(), Some(&all[1].thumbprint));
    assert_eq!(all[0].private_key, PrivateKeyState::Matches);
    assert!(all[1].is_ca && all[1].self_signed);
    let err = inspect("key.pem", leaf.key_pem().as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "key.pem: no certificate found");
}

#[test]
fn facts_round_trip_through_json() {
    let a = cert("a.example").dns("a.example").self_signed();
    let facts = CertificateBundle::from_tls(&tls(&a.pem, None, None)).unwrap().leaf;
    let json = serde_json::to_string(&facts).unwrap();
    assert!(json.contains("\"notBefore\":\"2026-01-01T00:00:00Z\""), "{json}");
    assert_eq!(serde_json::from_str::<CertificateFacts>(&json).unwrap(), facts);
}

mod robustness {
    use proptest::prelude::*;

    use super::*;

    /// A leaf (DER), its chain (PEM) and its key, made once.
    static SAMPLE: std::sync::LazyLock<(Vec<u8>, String, String)> = std::sync::LazyLock::new(|| {
        let root = cert("Root CA").ca().self_signed();
        let leaf = cert("leaf.example").dns("leaf.example").signed_by(&root);
        (leaf.der.clone(), format!("{}{}", leaf.pem, root.pem), leaf.key_pem())
    });

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes in any field: an error or facts, never a panic.
        #[test]
        fn random_bytes_never_panic(crt in prop::collection::vec(any::<u8>(), 0..600),
                                    key in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = CertificateBundle::from_tls(&TlsMaterial { tls_crt: &crt, tls_key: Some(&key), ca_crt: Some(&crt) });
            let _ = inspect("fuzz", &crt);
        }

        /// Real certificates and keys with bytes flipped, cut or inserted.
        #[test]
        fn mutated_certificates_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            let (der, pem, key) = SAMPLE.clone();
            for original in [der, pem.into_bytes(), key.clone().into_bytes()] {
                let mut mutated = original.clone();
                let i = at.index(mutated.len());
                if cut { mutated.truncate(i) } else { mutated[i] = byte }
                let _ = CertificateBundle::from_tls(&TlsMaterial { tls_crt: &mutated, tls_key: Some(key.as_bytes()), ca_crt: None });
                let _ = CertificateBundle::from_tls(&TlsMaterial { tls_crt: &original, tls_key: Some(&mutated), ca_crt: Some(&mutated) });
            }
        }
    }
}

/// A trust bundle of a real size reads whole (the operating system's roots
/// are about 150; this is twice that), an oversized or mislabelled one is
/// named, and nothing panics.
#[test]
fn trust_bundles_read_at_real_size_and_bad_ones_are_named() {
    let roots: Vec<String> = (0..300)
        .map(|i| cert(&format!("Root {i}")).ca().self_signed().pem)
        .collect();
    let bundle = roots.concat();
    let read = parse_bundle("ca.crt", bundle.as_bytes()).unwrap();
    assert_eq!(read.len(), 300);
    assert!(read.iter().all(|(facts, der)| facts.is_ca && !der.is_empty()));
    // A chain field keeps its small bound.
    assert_eq!(
        CertificateBundle::from_tls(&tls(&bundle, None, None))
            .unwrap_err()
            .reason(),
        "TooManyBlocks"
    );
    // `inspect` (certshift inspect) lists every certificate of a bundle file.
    assert_eq!(inspect("ca-certificates.crt", bundle.as_bytes()).unwrap().len(), 300);

    let too_many = roots[0].repeat(MAX_BUNDLE_CERTIFICATES + 1);
    let err = parse_bundle("ca.crt", too_many.as_bytes()).unwrap_err();
    assert_eq!(err.reason(), "TooManyBlocks");
    assert!(err.to_string().contains(&MAX_BUNDLE_CERTIFICATES.to_string()), "{err}");
    let too_large = " ".repeat(MAX_BUNDLE_BYTES + 1);
    assert_eq!(
        parse_bundle("ca.crt", too_large.as_bytes()).unwrap_err().reason(),
        "TooLarge"
    );
    let key = cert("k.example").self_signed().key_pem();
    let labelled = format!("{}{key}", roots[0]);
    let err = parse_bundle("ca.crt", labelled.as_bytes()).unwrap_err();
    assert_eq!(err.reason(), "UnexpectedPemLabel");
    assert!(err.to_string().contains("PEM block 1"), "{err}");
    for (garbage, reason) in [
        (&b"not a bundle"[..], "MalformedCertificate"),
        (b"", "NoCertificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "MalformedPem"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "MalformedCertificate",
        ),
    ] {
        assert_eq!(
            parse_bundle("ca.crt", garbage).unwrap_err().reason(),
            reason,
            "{garbage:?}"
        );
    }
}
