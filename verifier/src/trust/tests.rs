//! Path building and the issuer rules, as a table over synthetic PKIs, and
//! linking across sources on real certificates.

use super::*;
use crate::facts::{CertificateBundle, TlsMaterial, der_facts};
use crate::testing::{cert, facts, tp, ts};

/// Root R with intermediate I, root R2 with intermediate I2; `anchors`
/// names which of them are anchors, the others are only known.
fn pki(anchors: &[&str]) -> TrustBundle {
    let root = |label: &str| facts(label).cn(label).ca().self_signed().build();
    let cas = [
        root("R"),
        facts("I").cn("I").ca().issuer("R").build(),
        root("R2"),
        facts("I2").cn("I2").ca().issuer("R2").build(),
    ];
    let (anchors, others): (Vec<_>, Vec<_>) = cas
        .into_iter()
        .partition(|ca| anchors.iter().any(|a| tp(a) == ca.thumbprint));
    TrustBundle::with_authorities(anchors, others)
}

/// A member certificate L issued by `issuer`.
fn leaf(issuer: &str) -> CertificateFacts {
    facts("L").cn("cluster.example").issuer(issuer).build()
}

#[test]
fn the_path_follows_issuers_to_the_first_anchor_or_root() {
    let trust = pki(&["R"]);
    let l = leaf("I");
    let path = trust.path(&l);
    let labels: Vec<&Thumbprint> = path.certificates.iter().map(|c| &c.thumbprint).collect();
    assert_eq!(labels, [&tp("L"), &tp("I"), &tp("R")]);
    assert_eq!(path.end, PathEnd::Anchor(tp("R")));
    assert_eq!(trust.path(&leaf("I2")).end, PathEnd::UntrustedRoot(tp("R2")));
    assert_eq!(
        trust.path(&leaf("X")).end,
        PathEnd::Incomplete { issuer: "CN=X".into() }
    );
    // An intermediate that is itself an anchor ends the path there.
    assert_eq!(pki(&["I"]).path(&l).end, PathEnd::Anchor(tp("I")));
}

/// A name, the trust, the certificate, its declaration, the verdict.
type Case<'a> = (
    &'a str,
    TrustBundle,
    CertificateFacts,
    Issuance<'a>,
    Result<(), ChainError>,
);

#[test]
fn each_declaration_asks_its_own_of_the_issuers() {
    let pins = [tp("I")];
    let other_pins = [tp("I2")];
    let incomplete = |certificate: &str, issuer: &str| ChainError::Incomplete {
        certificate: tp(certificate),
        issuer: issuer.to_owned(),
    };
    let cases: Vec<Case<'_>> = vec![
        // Unpinned names need an anchor at the end of the path.
        (
            "unpinned, root anchored",
            pki(&["R"]),
            leaf("I"),
            Issuance::Anchored,
            Ok(()),
        ),
        (
            "unpinned, renewal under a new intermediate of an untrusted root",
            pki(&["R"]),
            leaf("I2"),
            Issuance::Anchored,
            Err(ChainError::UntrustedRoot { root: tp("R2") }),
        ),
        (
            "unpinned, the new intermediate's root in the bundle",
            pki(&["R", "R2"]),
            leaf("I2"),
            Issuance::Anchored,
            Ok(()),
        ),
        (
            "unpinned, the store's CAs known but no anchor",
            pki(&[]),
            leaf("I"),
            Issuance::Anchored,
            Err(ChainError::UntrustedRoot { root: tp("R") }),
        ),
        (
            "unpinned, issuer nowhere",
            pki(&["R"]),
            leaf("X"),
            Issuance::Anchored,
            Err(incomplete("L", "CN=X")),
        ),
        // Pinned names: the direct issuer, whatever the root.
        (
            "pinned, untrusted root",
            pki(&[]),
            leaf("I"),
            Issuance::Pinned(&pins),
            Ok(()),
        ),
        (
            "pinned to another issuer",
            pki(&["R", "R2"]),
            leaf("I"),
            Issuance::Pinned(&other_pins),
            Err(ChainError::NotPinned { issuer: Some(tp("I")) }),
        ),
        (
            "pinned, issuer unknown",
            pki(&[]),
            facts("L").cn("cluster.example").unknown_issuer("CN=X").build(),
            Issuance::Pinned(&pins),
            Err(ChainError::NotPinned { issuer: None }),
        ),
        // Thumbprints: the chain must build, to any root (Service Fabric:
        // "the chain must build ...; other trust errors are ignored").
        (
            "thumbprint, untrusted root",
            pki(&[]),
            leaf("I2"),
            Issuance::Built,
            Ok(()),
        ),
        ("thumbprint, anchored", pki(&["R"]), leaf("I"), Issuance::Built, Ok(())),
        (
            "thumbprint, chain cannot build",
            pki(&["R"]),
            leaf("X"),
            Issuance::Built,
            Err(incomplete("L", "CN=X")),
        ),
        (
            "thumbprint, self-signed",
            pki(&[]),
            facts("S").cn("s").self_signed().build(),
            Issuance::Built,
            Ok(()),
        ),
    ];
    for (case, trust, cert, issuance, expected) in cases {
        assert_eq!(trust.judge(&cert, issuance, None), expected, "{case}");
    }
}

/// An intermediate whose keyUsage lacks keyCertSign issues nothing: a path
/// through it is incomplete, as OpenSSL, Go and webpki judge it; with
/// keyCertSign (or without a keyUsage extension) it is followed.
#[test]
fn an_intermediate_without_key_cert_sign_issues_nothing() {
    let root = facts("R").cn("R").ca().self_signed().build();
    let intermediate = |usages: &[&str]| facts("I").cn("I").ca().issuer("R").key_usages(usages).build();
    let path_end = |usages: &[&str]| {
        TrustBundle::with_authorities([root.clone()], [intermediate(usages)])
            .path(&leaf("I"))
            .end
    };
    assert_eq!(
        path_end(&["digitalSignature", "keyEncipherment"]),
        PathEnd::Incomplete { issuer: "CN=I".into() }
    );
    assert_eq!(path_end(&["keyCertSign", "crlSign"]), PathEnd::Anchor(tp("R")));
    assert_eq!(path_end(&[]), PathEnd::Anchor(tp("R")));
    // Nor does a store's bundle offer it to trust bundles.
    let encipherment = cert("Encipherment CA")
        .ca()
        .key_usages(vec![rcgen::KeyUsagePurpose::KeyEncipherment])
        .self_signed();
    let member = cert("cluster.example").signed_by(&encipherment);
    let bundle = CertificateBundle::from_tls(&TlsMaterial {
        tls_crt: member.pem.as_bytes(),
        tls_key: None,
        ca_crt: Some(encipherment.pem.as_bytes()),
    })
    .unwrap();
    assert_eq!(bundle.authorities().count(), 0);
}

#[test]
fn an_intermediate_whose_issuer_is_missing_leaves_the_chain_incomplete() {
    let orphan = facts("I3").cn("I3").ca().issuer("Gone").build();
    let trust = TrustBundle::with_authorities([], [orphan]);
    assert_eq!(
        trust.judge(&leaf("I3"), Issuance::Built, None),
        Err(ChainError::Incomplete {
            certificate: tp("I3"),
            issuer: "CN=Gone".into(),
        })
    );
}

#[test]
fn a_revoked_certificate_or_authority_fails_every_declaration() {
    let pins = [tp("I")];
    let mut trust = pki(&["R"]);
    trust.revoke(tp("I"), "01");
    let l = leaf("I");
    for issuance in [Issuance::Built, Issuance::Pinned(&pins), Issuance::Anchored] {
        assert_eq!(
            trust.judge(&l, issuance, None),
            Err(ChainError::Revoked { certificate: tp("L") }),
            "{issuance:?}"
        );
    }
    // Another serial of the same issuer is not revoked.
    let sibling = facts("M").cn("cluster.example").issuer("I").serial("02").build();
    assert_eq!(trust.judge(&sibling, Issuance::Anchored, None), Ok(()));
    // The intermediate revoked by its root: everything under it that relies on the root.
    let mut trust = pki(&["R"]);
    trust.revoke(tp("R"), "01");
    assert_eq!(
        trust.judge(&sibling, Issuance::Anchored, None),
        Err(ChainError::Revoked { certificate: tp("I") })
    );
    assert_eq!(
        trust.judge(&sibling, Issuance::Pinned(&pins), None),
        Err(ChainError::Revoked { certificate: tp("I") }),
        "a pinned issuer its root revoked is revoked too"
    );
}

#[test]
fn with_a_clock_every_authority_relied_on_must_be_time_valid() {
    let expired_intermediate = facts("I")
        .cn("I")
        .ca()
        .issuer("R")
        .valid("2025-01-01T00:00:00Z", "2026-03-01T00:00:00Z")
        .build();
    let root = facts("R").cn("R").ca().self_signed().build();
    let trust = TrustBundle::with_authorities([root], [expired_intermediate]);
    let now = ts("2026-06-01T00:00:00Z");
    assert_eq!(
        trust.judge(&leaf("I"), Issuance::Anchored, Some(now)),
        Err(ChainError::AuthorityNotTimeValid { authority: tp("I") })
    );
    // Without a clock (the rules alone, as the invariant asks), it holds.
    assert_eq!(trust.judge(&leaf("I"), Issuance::Anchored, None), Ok(()));
}

#[test]
fn a_loop_of_issuers_ends_incomplete_instead_of_spinning() {
    let a = facts("A").cn("A").ca().issuer("B").build();
    let b = facts("B").cn("B").ca().issuer("A").build();
    let trust = TrustBundle::with_authorities([], [a, b]);
    let l = leaf("A");
    let path = trust.path(&l);
    assert!(matches!(path.end, PathEnd::Incomplete { .. }), "{path:?}");
    assert!(path.certificates.len() <= MAX_PATH_LENGTH);
}

/// Real certificates: the member's Secret holds only its leaf, the
/// intermediate comes from another Secret's chain, the root from the
/// bundle, next to a root of the same name and another key.
#[test]
fn the_pool_links_issuers_across_secrets_and_the_bundle_by_signature() {
    let root = cert("Cluster Root").ca().self_signed();
    let namesake = cert("Cluster Root").ca().self_signed();
    let intermediate = cert("Cluster Intermediate").ca().signed_by(&root);
    let member = cert("cluster.example").dns("cluster.example").signed_by(&intermediate);
    let other = cert("other.example").dns("other.example").signed_by(&intermediate);
    let chained = CertificateBundle::from_tls(&TlsMaterial {
        tls_crt: format!("{}{}", other.pem, intermediate.pem).as_bytes(),
        tls_key: None,
        ca_crt: None,
    })
    .unwrap();
    let mut pool = TrustPool::default();
    for ((_, der), facts) in chained.authorities_der.iter().zip(chained.authorities()) {
        pool.add_authority(facts.clone(), der.clone());
    }
    pool.add_anchor(der_facts("bundle", &namesake.der).unwrap(), namesake.der.clone());
    pool.add_anchor(der_facts("bundle", &root.der).unwrap(), root.der.clone());
    let mut leaf = der_facts("tls.crt", &member.der).unwrap();
    assert_eq!(leaf.issuer_thumbprint, None, "alone, its issuer is unknown");
    pool.link(&mut leaf, &member.der);
    let trust = pool.build();
    let path = trust.path(&leaf);
    let subjects: Vec<&str> = path.certificates.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["CN=cluster.example", "CN=Cluster Intermediate", "CN=Cluster Root"]
    );
    let root_facts = der_facts("root", &root.der).unwrap();
    assert_eq!(
        path.end,
        PathEnd::Anchor(root_facts.thumbprint),
        "the root that signed, not its namesake"
    );
    assert_eq!(trust.judge(&leaf, Issuance::Anchored, None), Ok(()));
}

#[test]
fn a_revision_trusts_its_own_anchors_and_keeps_the_others_as_known_roots() {
    let both = pki(&["R", "R2"]);
    let only_r2 = both.with_anchors([&tp("R2")]);
    assert!(only_r2.is_anchor(&tp("R2")) && !only_r2.is_anchor(&tp("R")));
    // R left the anchors: a name under it is refused, a thumbprint still builds.
    assert_eq!(
        only_r2.judge(&leaf("I"), Issuance::Anchored, None),
        Err(ChainError::UntrustedRoot { root: tp("R") })
    );
    assert_eq!(only_r2.judge(&leaf("I"), Issuance::Built, None), Ok(()));
    assert_eq!(only_r2.judge(&leaf("I2"), Issuance::Anchored, None), Ok(()));
    // An anchor known by thumbprint only is an anchor all the same.
    let by_thumbprint = pki(&[]).with_anchors([&tp("R")]);
    assert_eq!(by_thumbprint.judge(&leaf("I"), Issuance::Anchored, None), Ok(()));
}
