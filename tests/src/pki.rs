//! Certificates made for a scenario: CAs, leaves, renewals, as TLS Secrets.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use sha1::Digest as _;

pub struct Issued {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub pem: String,
    pub thumbprint: String,
}

fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

fn issue(params: CertificateParams, issuer: Option<&Issued>) -> Issued {
    issue_with(params, issuer, KeyPair::generate().expect("key"))
}

fn issue_with(params: CertificateParams, issuer: Option<&Issued>, key: KeyPair) -> Issued {
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key)),
        None => params.self_signed(&key),
    }
    .expect("certificate");
    issued(params, key, cert)
}

fn issued(params: CertificateParams, key: KeyPair, cert: rcgen::Certificate) -> Issued {
    Issued {
        thumbprint: sha1::Sha1::digest(cert.der())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect(),
        pem: cert.pem(),
        params,
        key,
    }
}

pub fn ca(name: &str) -> Issued {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = days_from_now(-30);
    params.not_after = days_from_now(3650);
    issue(params, None)
}

/// A CRL of `issuer` revoking `revoked` (none: an empty CRL), PEM, due for
/// renewal in a week.
pub fn crl(issuer: &Issued, revoked: &[&Issued]) -> String {
    use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
    let revoked_certs = revoked
        .iter()
        .map(|cert| {
            let facts = certshift::facts::inspect("crl", cert.pem.as_bytes()).expect("certificate")[0].clone();
            let serial: Vec<u8> = (0..facts.serial.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&facts.serial[i..i + 2], 16).expect("hex serial"))
                .collect();
            RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: days_from_now(0),
                reason_code: None,
                invalidity_date: None,
            }
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: days_from_now(-1),
        next_update: days_from_now(7),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params
        .signed_by(&Issuer::from_params(&issuer.params, &issuer.key))
        .expect("crl")
        .pem()
        .expect("crl pem")
}

/// A leaf for `common_name` from a CA given as PEM (certificate and key),
/// such as the examples' `cluster-ca`, valid from `start_days` for a year.
pub fn leaf_from_pem_ca(common_name: &str, start_days: i64, ca_pem: &str, ca_key_pem: &str) -> Issued {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, KeyPair::from_pem(ca_key_pem).expect("CA key")).expect("CA");
    let params = leaf_params(common_name, start_days, start_days + 365);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("certificate");
    issued(params, key, cert)
}

/// A CA valid until `end_days` from now.
pub fn ca_until(name: &str, end_days: i64) -> Issued {
    let mut ca = ca(name);
    let mut params = ca.params.clone();
    params.not_after = days_from_now(end_days);
    ca = issue_with(params, None, ca.key);
    ca
}

/// A leaf for `common_name` valid from `start_days` to `end_days` (relative to now).
pub fn leaf_until(common_name: &str, start_days: i64, end_days: i64, issuer: &Issued) -> Issued {
    issue(leaf_params(common_name, start_days, end_days), Some(issuer))
}

/// A leaf's parameters: `common_name` as CN and DNS name, valid from
/// `start_days` to `end_days` (relative to now).
fn leaf_params(common_name: &str, start_days: i64, end_days: i64) -> CertificateParams {
    let mut params = CertificateParams::new(vec![common_name.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.not_before = days_from_now(start_days);
    params.not_after = days_from_now(end_days);
    params
}

/// A leaf for `common_name`, valid from `start_days` for a year, naming
/// `uri` as its CRL distribution point.
pub fn leaf_with_crl_distribution_point(common_name: &str, start_days: i64, issuer: &Issued, uri: &str) -> Issued {
    let mut params = leaf_params(common_name, start_days, start_days + 365);
    params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec![uri.to_owned()],
    }];
    issue(params, Some(issuer))
}

/// A leaf for `common_name`, valid from `start_days` (relative to now) for a year.
pub fn leaf(common_name: &str, start_days: i64, issuer: &Issued) -> Issued {
    leaf_until(common_name, start_days, start_days + 365, issuer)
}

/// A serving certificate for loopback (`localhost`, 127.0.0.1, ::1).
pub fn loopback_server(common_name: &str, issuer: &Issued) -> Issued {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names.extend(
        [
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ]
        .map(rcgen::SanType::IpAddress),
    );
    params.not_before = days_from_now(-1);
    params.not_after = days_from_now(365);
    issue(params, Some(issuer))
}

/// A leaf like [`leaf`], with a given key pair (an RSA key, say) when `key` is set.
pub fn leaf_with_key(common_name: &str, start_days: i64, issuer: &Issued, key: Option<KeyPair>) -> Issued {
    let mut params = CertificateParams::new(vec![common_name.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.not_before = days_from_now(start_days);
    params.not_after = days_from_now(start_days + 365);
    issue_with(
        params,
        Some(issuer),
        key.unwrap_or_else(|| KeyPair::generate().expect("key")),
    )
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
