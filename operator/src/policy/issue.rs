//! Issuing a certificate for a policy: the key (new, or the one in use with
//! `key.reuse`), the certificate (self-signed, or signed by a CA Secret's key).

use jiff::Timestamp;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};

use super::{IssuerKind, KeyKind, PolicyParams};
use crate::facts::{CertificateBundle, CertificateFacts, TlsMaterial};

/// The CA of a `ca` issuer: its certificate and key, PEM.
pub struct CaMaterial<'a> {
    pub certificate: &'a str,
    pub key: &'a str,
}

/// What goes into the policy's Secret.
pub struct Issued {
    pub tls_crt: String,
    pub tls_key: String,
    pub ca_crt: String,
    pub leaf: CertificateFacts,
}

/// Never prints the key.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("leaf", &self.leaf.thumbprint)
            .field("tls_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Generates a key of `kind` (RSA through the `rsa` crate: ring cannot).
pub fn generate_key(kind: KeyKind) -> Result<KeyPair, String> {
    let algorithm = match kind {
        KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        KeyKind::Rsa(bits) => {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            let bits = usize::try_from(bits).map_err(|_| "key size".to_owned())?;
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits)
                .map_err(|err| format!("generating an RSA {bits} key: {err}"))?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|err| err.to_string())?;
            return KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(|err| err.to_string());
        }
    };
    KeyPair::generate_for(algorithm).map_err(|err| err.to_string())
}

/// Reads a PEM private key (PKCS#8; RSA, ECDSA or Ed25519).
pub fn load_key(pem: &str) -> Result<KeyPair, String> {
    KeyPair::from_pem(pem)
        .or_else(|_| KeyPair::from_pem_and_sign_algo(pem, &rcgen::PKCS_RSA_SHA256))
        .map_err(|err| format!("reading the private key: {err}"))
}

fn eku(name: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match name {
        "serverAuth" => ExtendedKeyUsagePurpose::ServerAuth,
        "clientAuth" => ExtendedKeyUsagePurpose::ClientAuth,
        "codeSigning" => ExtendedKeyUsagePurpose::CodeSigning,
        "emailProtection" => ExtendedKeyUsagePurpose::EmailProtection,
        "timeStamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "ocspSigning" => ExtendedKeyUsagePurpose::OcspSigning,
        _ => return None,
    })
}

fn key_usage(name: &str) -> Option<KeyUsagePurpose> {
    Some(match name {
        "digitalSignature" => KeyUsagePurpose::DigitalSignature,
        "contentCommitment" => KeyUsagePurpose::ContentCommitment,
        "keyEncipherment" => KeyUsagePurpose::KeyEncipherment,
        "dataEncipherment" => KeyUsagePurpose::DataEncipherment,
        "keyAgreement" => KeyUsagePurpose::KeyAgreement,
        "keyCertSign" => KeyUsagePurpose::KeyCertSign,
        "crlSign" => KeyUsagePurpose::CrlSign,
        _ => return None,
    })
}

fn offset(at: Timestamp) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(at.as_second()).map_err(|err| err.to_string())
}

fn certificate_params(params: &PolicyParams, now: Timestamp) -> Result<CertificateParams, String> {
    let mut cert = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let subject = &params.subject;
    if let Some(cn) = subject.common_name.as_deref().filter(|cn| !cn.trim().is_empty()) {
        dn.push(DnType::CommonName, cn);
    }
    for (values, kind) in [
        (&subject.organizations, DnType::OrganizationName),
        (&subject.organizational_units, DnType::OrganizationalUnitName),
        (&subject.countries, DnType::CountryName),
        (&subject.provinces, DnType::StateOrProvinceName),
        (&subject.localities, DnType::LocalityName),
    ] {
        for value in values {
            dn.push(kind.clone(), value.as_str());
        }
    }
    cert.distinguished_name = dn;
    for name in &params.dns_names {
        cert.subject_alt_names.push(SanType::DnsName(
            name.as_str().try_into().map_err(|_| format!("DNS name {name:?}"))?,
        ));
    }
    cert.subject_alt_names
        .extend(params.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    for uri in &params.uris {
        cert.subject_alt_names.push(SanType::URI(
            uri.as_str().try_into().map_err(|_| format!("URI {uri:?}"))?,
        ));
    }
    cert.extended_key_usages = params.extended_key_usages.iter().filter_map(|u| eku(u)).collect();
    cert.key_usages = params.key_usages.iter().filter_map(|u| key_usage(u)).collect();
    // RFC 5280 asks it of every certificate a CA issues; strict verifiers
    // (OpenSSL's -x509_strict, Python 3.13's default context) refuse a
    // certificate without it.
    cert.use_authority_key_identifier_extension = true;
    let validity = i64::try_from(params.validity.as_secs()).map_err(|_| "validity out of range")?;
    cert.not_before = offset(now)?;
    cert.not_after = offset(Timestamp::from_second(now.as_second() + validity).map_err(|err| err.to_string())?)?;
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial).map_err(|_| "random serial")?;
    serial[0] &= 0x7F;
    cert.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(cert)
}

/// Issues a certificate for `params` at `now`, with `reuse` (the key in use)
/// when the policy keeps its key and that key is of the declared kind.
pub fn issue(
    params: &PolicyParams,
    ca: Option<&CaMaterial<'_>>,
    reuse: Option<&str>,
    now: Timestamp,
) -> Result<Issued, String> {
    let key = match reuse {
        Some(pem) if params.reuse_key => load_key(pem)?,
        _ => generate_key(params.key)?,
    };
    let cert_params = certificate_params(params, now)?;
    let (certificate, ca_crt) = match (&params.issuer, ca) {
        (IssuerKind::SelfSigned, _) => {
            let certificate = cert_params.self_signed(&key).map_err(|err| err.to_string())?;
            let pem = certificate.pem();
            (pem.clone(), pem)
        }
        (IssuerKind::Ca(name), Some(ca)) => {
            let ca_key = load_key(ca.key).map_err(|err| format!("CA Secret {name:?}: {err}"))?;
            let issuer = Issuer::from_ca_cert_pem(ca.certificate, ca_key)
                .map_err(|err| format!("CA Secret {name:?}: tls.crt: {err}"))?;
            let certificate = cert_params.signed_by(&key, &issuer).map_err(|err| err.to_string())?;
            (certificate.pem(), ca.certificate.to_owned())
        }
        (IssuerKind::Ca(name), None) => return Err(format!("CA Secret {name:?} is not available")),
    };
    let tls_key = key.serialize_pem();
    let bundle = CertificateBundle::from_tls(&TlsMaterial {
        tls_crt: certificate.as_bytes(),
        tls_key: Some(tls_key.as_bytes()),
        ca_crt: Some(ca_crt.as_bytes()),
    })
    .map_err(|err| format!("the issued certificate does not read back: {err}"))?;
    Ok(Issued {
        tls_crt: certificate,
        tls_key,
        ca_crt,
        leaf: bundle.leaf,
    })
}
