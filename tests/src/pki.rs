//! Certificates made for a scenario: CAs, leaves, renewals, CRLs, as TLS
//! Secrets. Built on the workspace's one test PKI
//! (`certshift_verifier::testing`); what is here only names the shapes the
//! scenarios use, with validity relative to now (the API server, curl and
//! the members judge with the real clock).

use rcgen::KeyPair;

pub use certshift_verifier::testing::Issued;
use certshift_verifier::testing::cert;

/// A CA valid from 30 days ago for ten years.
pub fn ca(name: &str) -> Issued {
    ca_until(name, 3650)
}

/// A CA valid until `end_days` from now.
pub fn ca_until(name: &str, end_days: i64) -> Issued {
    cert(name).signing_ca().valid_days(-30, end_days).self_signed()
}

/// An intermediate CA issued by `root`, valid from 30 days ago for ten years.
pub fn intermediate(name: &str, root: &Issued) -> Issued {
    cert(name).signing_ca().valid_days(-30, 3650).signed_by(root)
}

/// A CRL of `issuer` revoking `revoked` (none: an empty CRL), PEM, due for
/// renewal in a week.
pub fn crl(issuer: &Issued, revoked: &[&Issued]) -> String {
    certshift_verifier::testing::crl(issuer, revoked, 7)
}

/// A leaf for `common_name` from a CA given as PEM (certificate and key),
/// such as the examples' `cluster-ca`, valid from `start_days` for a year.
pub fn leaf_from_pem_ca(common_name: &str, start_days: i64, ca_pem: &str, ca_key_pem: &str) -> Issued {
    cert(common_name)
        .dns(common_name)
        .valid_days(start_days, start_days + 365)
        .signed_by_pem(ca_pem, ca_key_pem)
}

/// A leaf for `common_name` (CN and DNS name) valid from `start_days` to
/// `end_days` (relative to now).
pub fn leaf_until(common_name: &str, start_days: i64, end_days: i64, issuer: &Issued) -> Issued {
    cert(common_name)
        .dns(common_name)
        .valid_days(start_days, end_days)
        .signed_by(issuer)
}

/// A leaf for `common_name`, valid from `start_days` for a year, naming
/// `uri` as its CRL distribution point.
pub fn leaf_with_crl_distribution_point(common_name: &str, start_days: i64, issuer: &Issued, uri: &str) -> Issued {
    cert(common_name)
        .dns(common_name)
        .valid_days(start_days, start_days + 365)
        .crl_distribution_point(uri)
        .signed_by(issuer)
}

/// A leaf for `common_name`, valid from `start_days` (relative to now) for a year.
pub fn leaf(common_name: &str, start_days: i64, issuer: &Issued) -> Issued {
    leaf_until(common_name, start_days, start_days + 365, issuer)
}

/// A serving certificate for loopback (`localhost`, 127.0.0.1, ::1).
pub fn loopback_server(common_name: &str, issuer: &Issued) -> Issued {
    cert(common_name)
        .dns("localhost")
        .ip(std::net::Ipv4Addr::LOCALHOST.into())
        .ip(std::net::Ipv6Addr::LOCALHOST.into())
        .valid_days(-1, 365)
        .signed_by(issuer)
}

/// A leaf like [`leaf`], with a given key pair (an RSA key, say) when `key` is set.
pub fn leaf_with_key(common_name: &str, start_days: i64, issuer: &Issued, key: Option<KeyPair>) -> Issued {
    let builder = cert(common_name)
        .dns(common_name)
        .valid_days(start_days, start_days + 365);
    match key {
        Some(key) => builder.with_key(key),
        None => builder,
    }
    .signed_by(issuer)
}

/// A `kubernetes.io/tls` Secret for `cert`, with `ca` as `ca.crt`.
pub fn tls_secret(name: &str, cert: &Issued, ca: &Issued) -> k8s_openapi::api::core::v1::Secret {
    crate::manifests::secret(
        name,
        Some("kubernetes.io/tls"),
        &[
            ("tls.crt", &cert.pem),
            ("tls.key", &cert.key.serialize_pem()),
            ("ca.crt", &ca.pem),
        ],
    )
}
