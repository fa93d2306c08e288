//! The test PKI of the whole workspace (unit, integration and end-to-end
//! tests, benchmarks; the `testing` feature): real certificates from rcgen
//! as a chained builder ([`cert`]), with fixed or clock-relative validity,
//! CRLs ([`crl`]), and synthetic facts for the pure rules and planner
//! ([`facts`]).

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
    SignatureAlgorithm,
};

use crate::facts::{CertificateFacts, PrivateKeyState};
use crate::thumbprint::Thumbprint;

/// A fixed RSA 2048 key (ring cannot generate RSA keys), PKCS#8 and PKCS#1.
pub const RSA_2048_PKCS8: &str = include_str!("testdata/rsa2048.pem");
pub const RSA_2048_PKCS1: &str = include_str!("testdata/rsa2048-pkcs1.pem");
/// An OpenSSL EC P-256 key, SEC1 (`EC PRIVATE KEY`) and PKCS#8.
pub const EC_P256_SEC1: &str = include_str!("testdata/ec-p256-sec1.pem");
pub const EC_P256_PKCS8: &str = include_str!("testdata/ec-p256-pkcs8.pem");

pub fn ts(rfc3339: &str) -> Timestamp {
    rfc3339.parse().expect("test timestamp")
}

#[derive(Debug)]
pub enum Key {
    /// A given key pair.
    Fixed(Box<KeyPair>),
    EcP256,
    EcP384,
    Ed25519,
    Rsa2048,
}

impl Key {
    pub fn generate(self) -> KeyPair {
        let alg: &'static SignatureAlgorithm = match self {
            Key::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Key::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Key::Ed25519 => &rcgen::PKCS_ED25519,
            Key::Fixed(pair) => return *pair,
            Key::Rsa2048 => {
                return KeyPair::from_pem_and_sign_algo(RSA_2048_PKCS8, &rcgen::PKCS_RSA_SHA256).expect("rsa key");
            }
        };
        KeyPair::generate_for(alg).expect("key generation")
    }
}

/// A real certificate with its key, built by [`CertBuilder`].
pub struct Issued {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub pem: String,
    pub der: Vec<u8>,
    /// SHA-1, upper-case hex: as people paste it into a declaration.
    pub thumbprint: String,
}

impl Issued {
    fn new(params: CertificateParams, key: KeyPair, cert: &rcgen::Certificate) -> Self {
        use sha1::Digest as _;
        Issued {
            thumbprint: sha1::Sha1::digest(cert.der())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect(),
            pem: cert.pem(),
            der: cert.der().to_vec(),
            params,
            key,
        }
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The thumbprint as certshift compares it.
    pub fn sha1(&self) -> Thumbprint {
        Thumbprint::parse("test", &self.thumbprint).expect("a SHA-1 thumbprint")
    }
}

/// A certificate `name` (CN and DNS name), a day old and valid for thirty
/// days, self-signed or issued by `ca`, a CA itself when `is_ca`.
pub fn issue(name: &str, ca: Option<&Issued>, is_ca: bool) -> Issued {
    let builder = cert(name).dns(name).valid_days(-1, 30);
    let builder = if is_ca { builder.ca() } else { builder };
    match ca {
        Some(ca) => builder.signed_by(ca),
        None => builder.self_signed(),
    }
}

/// A CRL of `issuer` revoking `revoked` (none: an empty CRL), PEM, issued a
/// day ago and due for renewal `next_update_days` from now.
pub fn crl(issuer: &Issued, revoked: &[&Issued], next_update_days: i64) -> String {
    use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams};
    let revoked_certs = revoked
        .iter()
        .map(|cert| RevokedCertParams {
            serial_number: serial_of(cert),
            revocation_time: days_from_now(0),
            reason_code: None,
            invalidity_date: None,
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: days_from_now(-1),
        next_update: days_from_now(next_update_days),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let signer = Issuer::from_params(&issuer.params, &issuer.key);
    params.signed_by(&signer).expect("crl").pem().expect("crl pem")
}

/// The serial number a certificate was issued with.
fn serial_of(cert: &Issued) -> rcgen::SerialNumber {
    let facts = crate::facts::inspect("crl", cert.pem.as_bytes()).expect("certificate")[0].clone();
    let serial: Vec<u8> = (0..facts.serial.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&facts.serial[i..i + 2], 16).expect("hex serial"))
        .collect();
    rcgen::SerialNumber::from_slice(&serial)
}

fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

pub struct CertBuilder {
    params: CertificateParams,
    key: Key,
}

/// `cert("cluster.example")` starts a leaf valid 2026-01-01..2027-01-01.
pub fn cert(common_name: &str) -> CertBuilder {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2027, 1, 1);
    CertBuilder {
        params,
        key: Key::EcP256,
    }
}

impl CertBuilder {
    pub fn ca(mut self) -> Self {
        self.params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        self
    }

    /// A CA that also says so in its key usage (signs certificates and CRLs).
    pub fn signing_ca(mut self) -> Self {
        self.params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        self.ca()
    }

    /// With exactly these keyUsage bits.
    pub fn key_usages(mut self, usages: Vec<rcgen::KeyUsagePurpose>) -> Self {
        self.params.key_usages = usages;
        self
    }

    /// Valid from `start` to `end` days from now (the tests that run against
    /// real clocks: the API server, curl, a TLS stack).
    pub fn valid_days(mut self, start: i64, end: i64) -> Self {
        self.params.not_before = days_from_now(start);
        self.params.not_after = days_from_now(end);
        self
    }

    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    pub fn with_key(self, pair: KeyPair) -> Self {
        self.key(Key::Fixed(Box::new(pair)))
    }

    pub fn dns(mut self, name: &str) -> Self {
        self.params
            .subject_alt_names
            .push(SanType::DnsName(name.try_into().expect("dns name")));
        self
    }

    pub fn serial(&mut self, bytes: &[u8]) {
        self.params.serial_number = Some(rcgen::SerialNumber::from_slice(bytes));
    }

    pub fn ip(mut self, ip: std::net::IpAddr) -> Self {
        self.params.subject_alt_names.push(SanType::IpAddress(ip));
        self
    }

    /// A CRL distribution point (`http://` URI).
    pub fn crl_distribution_point(mut self, uri: &str) -> Self {
        self.params.crl_distribution_points.push(rcgen::CrlDistributionPoint {
            uris: vec![uri.to_owned()],
        });
        self
    }

    pub fn server_and_client_auth(mut self) -> Self {
        self.params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self
    }

    pub fn valid(mut self, from: &str, until: &str) -> Self {
        self.params.not_before = offset(from);
        self.params.not_after = offset(until);
        self
    }

    pub fn self_signed(self) -> Issued {
        let key = self.key.generate();
        let cert = self.params.self_signed(&key).expect("self-signed");
        Issued::new(self.params, key, &cert)
    }

    pub fn signed_by(self, issuer: &Issued) -> Issued {
        let key = self.key.generate();
        let signer = Issuer::from_params(&issuer.params, &issuer.key);
        let cert = self.params.signed_by(&key, &signer).expect("signed");
        Issued::new(self.params, key, &cert)
    }

    /// Signed by a CA given as PEM (its certificate and key), such as one an
    /// example ships.
    pub fn signed_by_pem(self, ca_pem: &str, ca_key_pem: &str) -> Issued {
        let key = self.key.generate();
        let signer = Issuer::from_ca_cert_pem(ca_pem, KeyPair::from_pem(ca_key_pem).expect("CA key")).expect("CA");
        let cert = self.params.signed_by(&key, &signer).expect("signed");
        Issued::new(self.params, key, &cert)
    }
}

fn offset(rfc3339: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(ts(rfc3339).as_second()).expect("offset")
}

/// Synthetic facts for the pure core: `facts("A").cn("x").issuer("CA1")`.
/// The thumbprint is the label repeated to 40 hex digits, so tests read well.
/// Without `issuer`, the certificate is self-signed: its chain builds.
pub fn tp(label: &str) -> Thumbprint {
    let hex: String = label
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect::<String>()
        .chars()
        .cycle()
        .take(40)
        .collect();
    Thumbprint::parse("test", &hex).expect("test thumbprint")
}

pub struct FactsBuilder(CertificateFacts);

pub fn facts(label: &str) -> FactsBuilder {
    FactsBuilder(CertificateFacts {
        thumbprint: tp(label),
        sha256: Thumbprint::parse("test", &tp(label).as_str().repeat(2)[..64]).expect("sha256"),
        subject: String::new(),
        common_name: None,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        uris: Vec::new(),
        issuer: String::new(),
        issuer_thumbprint: Some(tp(label)),
        serial: "01".into(),
        not_before: ts("2026-01-01T00:00:00Z"),
        not_after: ts("2027-01-01T00:00:00Z"),
        key_algorithm: "ECDSA".into(),
        key_size: 256,
        signature_algorithm: "ecdsaWithSHA256".into(),
        extended_key_usages: vec!["serverAuth".into(), "clientAuth".into()],
        key_usages: Vec::new(),
        is_ca: false,
        self_signed: true,
        private_key: PrivateKeyState::Matches,
        crl_distribution_points: Vec::new(),
    })
}

impl FactsBuilder {
    pub fn cn(mut self, name: &str) -> Self {
        self.0.common_name = Some(name.into());
        self.0.subject = format!("CN={name}");
        self
    }

    pub fn dns(mut self, name: &str) -> Self {
        self.0.dns_names.push(name.into());
        self
    }

    pub fn issuer(mut self, label: &str) -> Self {
        self.0.self_signed = false;
        self.0.issuer_thumbprint = Some(tp(label));
        self.0.issuer = format!("CN={label}");
        self
    }

    /// With exactly these keyUsage bits (RFC 5280 names).
    pub fn key_usages(mut self, usages: &[&str]) -> Self {
        self.0.key_usages = usages.iter().map(|u| (*u).to_owned()).collect();
        self
    }

    /// A CA certificate (basicConstraints CA:TRUE).
    pub fn ca(mut self) -> Self {
        self.0.is_ca = true;
        self
    }

    pub fn serial(mut self, serial: &str) -> Self {
        self.0.serial = serial.into();
        self
    }

    pub fn self_signed(mut self) -> Self {
        self.0.self_signed = true;
        self.0.issuer_thumbprint = Some(self.0.thumbprint.clone());
        self
    }

    /// An issuer that is nowhere to be found (not even its thumbprint).
    pub fn unknown_issuer(mut self, name: &str) -> Self {
        self.0.self_signed = false;
        self.0.issuer_thumbprint = None;
        self.0.issuer = name.into();
        self
    }

    pub fn valid(mut self, from: &str, until: &str) -> Self {
        self.0.not_before = ts(from);
        self.0.not_after = ts(until);
        self
    }

    pub fn key(mut self, state: PrivateKeyState) -> Self {
        self.0.private_key = state;
        self
    }

    pub fn rsa(mut self, bits: u32) -> Self {
        self.0.key_algorithm = "RSA".into();
        self.0.key_size = bits;
        self
    }

    pub fn build(self) -> CertificateFacts {
        self.0
    }
}
