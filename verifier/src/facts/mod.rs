//! Certificate facts (docs/concepts.md): everything certshift knows about a certificate,
//! extracted once from PEM or DER and then used as plain data.

mod der;
mod keys;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::thumbprint::Thumbprint;
pub use keys::PublicKey;

/// Whether the certificate comes with its private key, and whether it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum PrivateKeyState {
    /// No private key was supplied (a public certificate, or a `ca.crt` entry).
    Missing,
    /// A private key was supplied and its public half is the certificate's.
    Matches,
    /// A private key was supplied but belongs to another certificate.
    Mismatch,
    /// A private key was supplied but could not be read (encrypted, malformed,
    /// or of a kind that cannot be compared).
    Unreadable,
}

impl PrivateKeyState {
    pub fn usable(self) -> bool {
        self == PrivateKeyState::Matches
    }
}

/// The facts of one X.509 certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CertificateFacts {
    /// SHA-1 thumbprint, 40 upper-case hex digits (the Service Fabric convention).
    pub thumbprint: Thumbprint,
    /// SHA-256 thumbprint, 64 upper-case hex digits.
    pub sha256: Thumbprint,
    /// Subject distinguished name (RFC 4514).
    pub subject: String,
    /// Subject common name (CN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// DNS subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// IP address subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// URI subject alternative names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
    /// Issuer distinguished name (RFC 4514).
    pub issuer: String,
    /// SHA-1 thumbprint of the direct issuer, when the chain or `ca.crt` holds it
    /// (a self-signed certificate is its own issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_thumbprint: Option<Thumbprint>,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// `RSA`, `ECDSA`, `Ed25519`, or the algorithm OID.
    pub key_algorithm: String,
    /// Key size in bits (RSA modulus, ECDSA curve).
    pub key_size: u32,
    /// The algorithm the issuer signed with, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// `serverAuth`, `clientAuth`, … or the OID of a usage without a short name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extended_key_usages: Vec<String>,
    /// keyUsage bits by their RFC 5280 names (`digitalSignature`,
    /// `contentCommitment`, `keyEncipherment`, `keyCertSign`, `crlSign`, …);
    /// empty when the certificate has no keyUsage extension (no restriction).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_usages: Vec<String>,
    /// Basic constraints say it is a CA.
    pub is_ca: bool,
    /// Issuer and subject are the same and the certificate verifies with its own key.
    pub self_signed: bool,
    /// Whether the private key came with it, and whether it matches.
    pub private_key: PrivateKeyState,
    /// `http://` URIs of its CRL distribution points (where its issuer
    /// publishes the CRL that would revoke it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_distribution_points: Vec<String>,
}

impl CertificateFacts {
    /// Within notBefore..=notAfter at `now`.
    pub fn is_time_valid(&self, now: Timestamp) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether it may issue certificates: a CA whose keyUsage, if it has one,
    /// allows keyCertSign (RFC 5280 4.2.1.3; OpenSSL, Go and webpki refuse
    /// what any other certificate signed).
    pub fn may_sign_certificates(&self) -> bool {
        self.is_ca && (self.key_usages.is_empty() || self.key_usages.iter().any(|u| u == "keyCertSign"))
    }

    /// Why common TLS peers would refuse this certificate as a member's own,
    /// whatever the declaration says; such an instance is never presented.
    pub fn defect(&self) -> Option<Defect> {
        if self.not_after < self.not_before {
            return Some(Defect::InvalidValidityPeriod);
        }
        if self.is_ca {
            return Some(Defect::CertificateIsCA);
        }
        match (self.key_algorithm.as_str(), self.key_size) {
            ("RSA", bits) if bits < MIN_RSA_BITS => return Some(Defect::KeyTooWeak { bits }),
            // ring, and so rustls, verifies RSA signatures up to 8192 bits only.
            ("RSA", bits) if bits > MAX_RSA_BITS => return Some(Defect::UnsupportedKeySize { bits }),
            ("ECDSA", bits) if bits != 256 && bits != 384 => return Some(Defect::UnsupportedKeySize { bits }),
            _ => {}
        }
        // RFC 6125 peers ignore the CN once DNS names are present.
        if let Some(cn) = &self.common_name
            && !self.dns_names.is_empty()
            && !self.dns_names.iter().any(|dns| crate::names::names_match(dns, cn))
        {
            return Some(Defect::SubjectAlternativeNameMismatch);
        }
        None
    }

    /// Whether `thumbprint` (SHA-1 or SHA-256) names this certificate.
    pub fn has_thumbprint(&self, thumbprint: &Thumbprint) -> bool {
        if thumbprint.is_sha256() {
            &self.sha256 == thumbprint
        } else {
            &self.thumbprint == thumbprint
        }
    }
}

/// Why certificate material could not be read. Each names the field it came from
/// (`tls.crt`, `ca.crt`, a file name) and carries a PascalCase reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    #[error("{field}: no certificate found")]
    NoCertificate { field: String },
    #[error("{field}: malformed PEM: {message}")]
    MalformedPem { field: String, message: String },
    #[error("{field}: PEM block {index} is {label:?}, expected {expected:?}")]
    UnexpectedPemLabel {
        field: String,
        index: usize,
        label: String,
        expected: &'static str,
    },
    #[error("{field}: certificate {index} is not valid DER X.509: {message}")]
    MalformedCertificate {
        field: String,
        index: usize,
        message: String,
    },
    #[error("{field}: more than {limit} PEM blocks")]
    TooManyBlocks { field: String, limit: usize },
    #[error("{field}: {size} bytes, more than a trust bundle's {limit}")]
    TooLarge { field: String, size: usize, limit: usize },
    #[error("{field}: CRL {index} is not a valid DER X.509 CRL: {message}")]
    MalformedCrl {
        field: String,
        index: usize,
        message: String,
    },
}

impl FactsError {
    pub fn reason(&self) -> &'static str {
        match self {
            FactsError::NoCertificate { .. } => "NoCertificate",
            FactsError::MalformedPem { .. } => "MalformedPem",
            FactsError::UnexpectedPemLabel { .. } => "UnexpectedPemLabel",
            FactsError::MalformedCertificate { .. } => "MalformedCertificate",
            FactsError::TooManyBlocks { .. } => "TooManyBlocks",
            FactsError::TooLarge { .. } => "TooLarge",
            FactsError::MalformedCrl { .. } => "MalformedCrl",
        }
    }
}

/// RSA moduli below this are refused by current TLS stacks and policies.
pub const MIN_RSA_BITS: u32 = 2048;
/// RSA moduli above this cannot be verified by ring (rustls) peers.
pub const MAX_RSA_BITS: u32 = 8192;

/// A property of a certificate that makes peers refuse it (see [`CertificateFacts::defect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// notAfter is before notBefore: never time-valid.
    InvalidValidityPeriod,
    /// A CA certificate (basicConstraints CA:TRUE) used as an end-entity certificate.
    CertificateIsCA,
    KeyTooWeak {
        bits: u32,
    },
    UnsupportedKeySize {
        bits: u32,
    },
    /// DNS SANs are present and none of them covers the subject CN.
    SubjectAlternativeNameMismatch,
}

impl Defect {
    /// The condition (and blocked) reason.
    pub fn reason(self) -> &'static str {
        match self {
            Defect::InvalidValidityPeriod => "InvalidValidityPeriod",
            Defect::CertificateIsCA => "CertificateIsCA",
            Defect::KeyTooWeak { .. } => "KeyTooWeak",
            Defect::UnsupportedKeySize { .. } => "UnsupportedKeySize",
            Defect::SubjectAlternativeNameMismatch => "SubjectAlternativeNameMismatch",
        }
    }

    pub fn describe(self, facts: &CertificateFacts) -> String {
        let tp = &facts.thumbprint;
        match self {
            Defect::InvalidValidityPeriod => format!(
                "{tp}: notAfter={} is before notBefore={}",
                facts.not_after, facts.not_before
            ),
            Defect::CertificateIsCA => {
                format!(
                    "{tp} is a CA certificate (basicConstraints CA:TRUE); peers refuse it as a member's certificate"
                )
            }
            Defect::KeyTooWeak { bits } => {
                format!(
                    "{tp}: {bits}-bit {} key is below {MIN_RSA_BITS} bits",
                    facts.key_algorithm
                )
            }
            Defect::UnsupportedKeySize { bits } => format!(
                "{tp}: {bits}-bit {} keys are not verified by common TLS peers (RSA up to {MAX_RSA_BITS}, ECDSA P-256/P-384)",
                facts.key_algorithm
            ),
            Defect::SubjectAlternativeNameMismatch => format!(
                "{tp}: subject CN {:?} is not among its DNS names {:?}; peers checking the name refuse it",
                facts.common_name.as_deref().unwrap_or_default(),
                facts.dns_names
            ),
        }
    }
}

/// A bound on blocks per field: a certificate chain is a handful of blocks;
/// thousands mean the Secret is not what it claims to be.
pub const MAX_BLOCKS: usize = 100;

/// A trust bundle's bounds. The operating system's public roots are about 150
/// certificates and 220 KiB (Debian's `ca-certificates.crt`, trust-manager's
/// `useDefaultCAs`); a ConfigMap holds 1 MiB. These leave room for bundles
/// many times that, and still bound the work a malformed one can cause.
pub const MAX_BUNDLE_CERTIFICATES: usize = 5000;
pub const MAX_BUNDLE_BYTES: usize = 8 << 20;

/// One certificate with what is needed to link it to its issuer.
#[derive(Clone, Debug)]
struct Parsed {
    der: Vec<u8>,
    facts: CertificateFacts,
    public_key: Option<PublicKey>,
}

/// The certificates and key of a TLS Secret (`tls.crt`, `tls.key`, `ca.crt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial<'a> {
    pub tls_crt: &'a [u8],
    pub tls_key: Option<&'a [u8]>,
    pub ca_crt: Option<&'a [u8]>,
}

/// The TLS material of a Secret's data.
pub fn tls_material(data: &BTreeMap<String, Vec<u8>>) -> TlsMaterial<'_> {
    TlsMaterial {
        tls_crt: data.get("tls.crt").map_or(&[], Vec::as_slice),
        tls_key: data.get("tls.key").map(Vec::as_slice),
        ca_crt: data.get("ca.crt").map(Vec::as_slice),
    }
}

/// The facts of a TLS Secret: the leaf, the rest of its chain, the `ca.crt` entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateBundle {
    pub leaf: CertificateFacts,
    pub chain: Vec<CertificateFacts>,
    pub ca: Vec<CertificateFacts>,
    /// Why the private key is not usable, when it is not (never key material).
    pub key_message: Option<String>,
    /// DER of the leaf followed by its chain, in the order given.
    pub chain_der: Vec<Vec<u8>>,
    /// DER of the CA certificates of the chain and `ca.crt`, by thumbprint.
    pub authorities_der: Vec<(Thumbprint, Vec<u8>)>,
}

impl CertificateBundle {
    /// Reads a TLS Secret's material. The leaf is the first certificate of
    /// `tls.crt`, as Kubernetes and every TLS server expect.
    pub fn from_tls(material: &TlsMaterial<'_>) -> Result<Self, FactsError> {
        let mut chain = parse_certificates("tls.crt", material.tls_crt)?;
        let mut ca = match material.ca_crt {
            Some(bytes) if !is_blank(bytes) => parse_certificates("ca.crt", bytes)?,
            _ => Vec::new(),
        };
        let issuers: Vec<(Thumbprint, Vec<u8>)> = chain
            .iter()
            .chain(&ca)
            .map(|p| (p.facts.thumbprint.clone(), p.der.clone()))
            .collect();
        for parsed in chain.iter_mut().chain(ca.iter_mut()) {
            parsed.facts.issuer_thumbprint = issuer_among(&parsed.der, &parsed.facts, &issuers);
        }
        let mut leaf = chain.remove(0);
        let key_message = match material.tls_key {
            None => None,
            Some(bytes) if is_blank(bytes) => None,
            Some(bytes) => {
                let (state, message) = match_private_key(bytes, leaf.public_key.as_ref());
                leaf.facts.private_key = state;
                message
            }
        };
        let authorities_der = chain
            .iter()
            .chain(&ca)
            .filter(|p| p.facts.may_sign_certificates())
            .map(|p| (p.facts.thumbprint.clone(), p.der.clone()))
            .collect();
        let chain_der = std::iter::once(leaf.der)
            .chain(chain.iter().map(|p| p.der.clone()))
            .collect();
        Ok(Self {
            leaf: leaf.facts,
            chain: chain.into_iter().map(|p| p.facts).collect(),
            ca: ca.into_iter().map(|p| p.facts).collect(),
            key_message,
            chain_der,
            authorities_der,
        })
    }

    /// The CA certificates this bundle contributes to a trust bundle.
    pub fn authorities(&self) -> impl Iterator<Item = &CertificateFacts> {
        self.chain
            .iter()
            .chain(&self.ca)
            .filter(|facts| facts.may_sign_certificates())
    }
}

/// The facts of one DER certificate (a peer's, as a TLS handshake delivers
/// it). Its issuer is known only when it is self-signed: link it with
/// [`crate::trust::TrustPool::link_with`].
pub fn der_facts(field: &str, der: &[u8]) -> Result<CertificateFacts, FactsError> {
    Ok(parse_der(field, 0, der)?.facts)
}

/// Facts of every certificate in a PEM or DER file, issuers resolved among them,
/// and the private key (if the file holds one) matched against the first.
pub fn inspect(field: &str, bytes: &[u8]) -> Result<Vec<CertificateFacts>, FactsError> {
    let mut parsed = parse_certificates_lenient(field, bytes)?;
    // Candidates by subject name, so a bundle of thousands links in one pass.
    let mut by_subject: BTreeMap<String, Vec<(Thumbprint, Vec<u8>)>> = BTreeMap::new();
    for p in &parsed {
        by_subject
            .entry(p.facts.subject.clone())
            .or_default()
            .push((p.facts.thumbprint.clone(), p.der.clone()));
    }
    for p in &mut parsed {
        let candidates = by_subject.get(&p.facts.issuer).map_or(&[][..], Vec::as_slice);
        p.facts.issuer_thumbprint = issuer_among(&p.der, &p.facts, candidates);
    }
    if has_private_key_block(bytes) {
        let (state, _) = match_private_key(bytes, parsed[0].public_key.as_ref());
        parsed[0].facts.private_key = state;
    }
    Ok(parsed.into_iter().map(|p| p.facts).collect())
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// What is wrong with PEM text, in words a person can act on. (`parse_many`
/// ends at a block it cannot frame rather than failing, so framing faults
/// are found by counting BEGIN lines in `pem_blocks`.)
fn pem_message(err: &pem::PemError) -> String {
    use pem::PemError::*;
    match err {
        MismatchedTags(begin, end) => format!("a block begins {begin:?} and ends {end:?}"),
        MalformedFraming => "a block's framing is broken".to_owned(),
        MissingBeginTag => "a -----BEGIN----- line with no label".to_owned(),
        MissingEndTag => "an -----END----- line with no label".to_owned(),
        MissingData => "a block holds no data".to_owned(),
        InvalidData(err) => format!("a block's base64 is invalid ({err})"),
        InvalidHeader(header) => format!("a block has an invalid header line {header:?}"),
        NotUtf8(_) => "a block is not UTF-8 text".to_owned(),
    }
}

/// What text that holds no PEM block is, when it is not DER either: the
/// usual mistakes named (base64 without its BEGIN and END lines, a file saved
/// as UTF-16); `None` for bytes that are not text.
fn text_without_pem(bytes: &[u8], label: &str) -> Option<String> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Some("it is UTF-16 text: save it as ASCII (PEM) or as DER".to_owned());
    }
    let text = std::str::from_utf8(bytes).ok()?;
    if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return None;
    }
    Some(if text.trim_start().starts_with("MI") {
        format!("it is base64 without its \"-----BEGIN {label}-----\" and \"-----END {label}-----\" lines")
    } else {
        format!("it is text without a \"-----BEGIN {label}-----\" line, so not PEM either")
    })
}

/// The length a DER object's header declares, with the header's own length
/// (definite forms up to four length bytes).
fn declared_length(der: &[u8]) -> Option<usize> {
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return None;
    }
    let bytes = der.get(2..2 + count)?;
    Some(2 + count + bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)))
}

/// What is wrong with a DER certificate or CRL, in words a person can act on
/// (the parser's own words are nom's, e.g. `Parsing Error: NomError(Eof)`).
fn der_message(der: &[u8], err: x509_parser::nom::Err<x509_parser::error::X509Error>) -> String {
    use x509_parser::der_parser::error::BerError;
    use x509_parser::error::X509Error;
    use x509_parser::nom;
    match der.first() {
        None => return "the block is empty".to_owned(),
        Some(0x30) => {}
        Some(&first) => return format!("it starts with byte 0x{first:02x}, not a DER SEQUENCE (0x30)"),
    }
    // Running out of bytes is truncation only when the object declares more
    // than there is; otherwise an element inside overruns its container.
    let ran_out = || match declared_length(der) {
        Some(declared) if declared > der.len() => {
            format!("truncated: it declares {declared} bytes and has {}", der.len())
        }
        _ => "malformed DER: an element runs past the end of what contains it".to_owned(),
    };
    match err {
        nom::Err::Incomplete(_) => ran_out(),
        nom::Err::Error(err) | nom::Err::Failure(err) => match err {
            X509Error::NomError(nom::error::ErrorKind::Eof) | X509Error::Der(BerError::Incomplete(_)) => ran_out(),
            X509Error::Der(err) => format!("malformed DER: {err}"),
            X509Error::NomError(kind) => format!("malformed DER (the parser stopped at {kind:?})"),
            err => err.to_string(),
        },
    }
}

fn pem_blocks(field: &str, bytes: &[u8], limit: usize) -> Result<Vec<pem::Pem>, FactsError> {
    let bytes = strip_bom(bytes);
    let blocks = pem::parse_many(bytes).map_err(|err| FactsError::MalformedPem {
        field: field.to_owned(),
        message: pem_message(&err),
    })?;
    let begins = bytes.windows(11).filter(|w| *w == b"-----BEGIN ").count();
    if begins > blocks.len() {
        return Err(FactsError::MalformedPem {
            field: field.to_owned(),
            message: format!(
                "{begins} -----BEGIN …----- line(s) but {} complete block(s): a block lacks its -----END …----- line, or one of the two is malformed",
                blocks.len()
            ),
        });
    }
    if blocks.len() > limit {
        return Err(FactsError::TooManyBlocks {
            field: field.to_owned(),
            limit,
        });
    }
    Ok(blocks)
}

/// The certificates of a trust bundle (PEM `CERTIFICATE` blocks, as
/// trust-manager and the operating systems write them, or one DER
/// certificate), each with its DER, within the bundle bounds. Issuers are
/// not linked: a bundle's certificates are anchors, not a chain.
pub fn parse_bundle(field: &str, bytes: &[u8]) -> Result<Vec<(CertificateFacts, Vec<u8>)>, FactsError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(FactsError::TooLarge {
            field: field.to_owned(),
            size: bytes.len(),
            limit: MAX_BUNDLE_BYTES,
        });
    }
    let parsed = parse_certificates_within(field, bytes, MAX_BUNDLE_CERTIFICATES)?;
    Ok(parsed.into_iter().map(|p| (p.facts, p.der)).collect())
}

/// One certificate revocation list (RFC 5280), as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlFacts {
    /// The issuer's distinguished name (RFC 4514).
    pub issuer: String,
    pub this_update: Timestamp,
    pub next_update: Option<Timestamp>,
    /// Serial numbers of the revoked certificates, upper-case hex as
    /// [`CertificateFacts::serial`] writes them.
    pub revoked: Vec<String>,
    pub der: Vec<u8>,
}

/// The CRLs of a field: PEM `X509 CRL` blocks, or one DER CRL; bounded as a
/// trust bundle is. Any other PEM block is an error naming its label.
pub fn parse_crls(field: &str, bytes: &[u8]) -> Result<Vec<CrlFacts>, FactsError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(FactsError::TooLarge {
            field: field.to_owned(),
            size: bytes.len(),
            limit: MAX_BUNDLE_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).is_ok_and(|t| !t.contains("-----BEGIN "));
    parse_blocks(field, bytes, "X509 CRL", MAX_BUNDLE_CERTIFICATES, parse_crl).map_err(|err| match err {
        // Text without a PEM block is not a DER CRL gone wrong: say what it lacks.
        FactsError::MalformedCrl { field, .. } if text => FactsError::MalformedPem {
            field,
            message: "no \"-----BEGIN X509 CRL-----\" block, and not a DER CRL".to_owned(),
        },
        err => err,
    })
}

/// The DER objects of a field, each read by `parse`: PEM blocks of `label`
/// only (at most `limit`), or one DER object.
fn parse_blocks<T>(
    field: &str,
    bytes: &[u8],
    label: &'static str,
    limit: usize,
    parse: fn(&str, usize, &[u8]) -> Result<T, FactsError>,
) -> Result<Vec<T>, FactsError> {
    let bytes = strip_bom(bytes);
    if !looks_like_pem(bytes) {
        if is_blank(bytes) {
            return Err(FactsError::NoCertificate {
                field: field.to_owned(),
            });
        }
        // Text that is not PEM is not a DER object gone wrong: say what it is.
        return match parse(field, 0, bytes) {
            Err(FactsError::MalformedCertificate { field, index, message }) => Err(FactsError::MalformedCertificate {
                message: text_without_pem(bytes, label).unwrap_or(message),
                field,
                index,
            }),
            parsed => Ok(vec![parsed?]),
        };
    }
    let blocks = pem_blocks(field, bytes, limit)?;
    if blocks.is_empty() {
        return Err(FactsError::NoCertificate {
            field: field.to_owned(),
        });
    }
    blocks
        .iter()
        .enumerate()
        .map(|(index, block)| {
            if block.tag() != label {
                return Err(FactsError::UnexpectedPemLabel {
                    field: field.to_owned(),
                    index,
                    label: block.tag().to_owned(),
                    expected: label,
                });
            }
            parse(field, index, block.contents())
        })
        .collect()
}

fn parse_crl(field: &str, index: usize, der: &[u8]) -> Result<CrlFacts, FactsError> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let malformed = |message: String| FactsError::MalformedCrl {
        field: field.to_owned(),
        index,
        message,
    };
    let (rest, crl) = CertificateRevocationList::from_der(der).map_err(|err| malformed(der_message(der, err)))?;
    if !rest.is_empty() {
        return Err(malformed(format!("{} trailing bytes after the CRL", rest.len())));
    }
    let next_update = match crl.next_update() {
        Some(time) => Some(timestamp(time.timestamp()).map_err(&malformed)?),
        None => None,
    };
    Ok(CrlFacts {
        issuer: crl.issuer().to_string(),
        this_update: timestamp(crl.last_update().timestamp()).map_err(&malformed)?,
        next_update,
        revoked: crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().iter().map(|b| format!("{b:02X}")).collect())
            .collect(),
        der: der.to_vec(),
    })
}

/// Whether `crl` is signed by the key of `issuer_der` (a certificate).
pub fn crl_signed_by(crl: &CrlFacts, issuer_der: &[u8]) -> bool {
    use x509_parser::revocation_list::CertificateRevocationList;
    let (Ok((_, crl)), Ok((_, issuer))) = (
        CertificateRevocationList::from_der(&crl.der),
        X509Certificate::from_der(issuer_der),
    ) else {
        return false;
    };
    crl.issuer().as_raw() == issuer.subject().as_raw() && crl.verify_signature(issuer.public_key()).is_ok()
}

/// Certificates of a Secret field: PEM `CERTIFICATE` blocks only, or one DER
/// certificate. Any other PEM block is an error (a key pasted into `tls.crt`).
fn parse_certificates(field: &str, bytes: &[u8]) -> Result<Vec<Parsed>, FactsError> {
    parse_certificates_within(field, bytes, MAX_BLOCKS)
}

/// [`parse_certificates`] with at most `limit` PEM blocks.
fn parse_certificates_within(field: &str, bytes: &[u8], limit: usize) -> Result<Vec<Parsed>, FactsError> {
    parse_blocks(field, bytes, "CERTIFICATE", limit, parse_der)
}

/// As [`parse_certificates`], but skipping non-certificate blocks (a file may
/// hold a key next to its certificate).
fn parse_certificates_lenient(field: &str, bytes: &[u8]) -> Result<Vec<Parsed>, FactsError> {
    let bytes = strip_bom(bytes);
    if !looks_like_pem(bytes) {
        return parse_certificates(field, bytes);
    }
    // A file may be a whole trust bundle: the bundle's bound, not a chain's.
    let parsed = pem_blocks(field, bytes, MAX_BUNDLE_CERTIFICATES)?
        .iter()
        .enumerate()
        .filter(|(_, block)| block.tag() == "CERTIFICATE")
        .map(|(index, block)| parse_der(field, index, block.contents()))
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.is_empty() {
        return Err(FactsError::NoCertificate {
            field: field.to_owned(),
        });
    }
    Ok(parsed)
}

fn has_private_key_block(bytes: &[u8]) -> bool {
    looks_like_pem(bytes) && bytes.windows(12).any(|w| w == b"PRIVATE KEY-")
}

fn parse_der(field: &str, index: usize, der: &[u8]) -> Result<Parsed, FactsError> {
    let malformed = |message: String| FactsError::MalformedCertificate {
        field: field.to_owned(),
        index,
        message,
    };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|err| malformed(der_message(der, err)))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    let public_key = PublicKey::from_spki(cert.public_key().raw);
    let not_before = timestamp(cert.validity().not_before.timestamp()).map_err(&malformed)?;
    let not_after = timestamp(cert.validity().not_after.timestamp()).map_err(&malformed)?;

    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::IPAddress(ip) => ip_addresses.extend(ip_address(ip)),
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    let thumbprint = Thumbprint::from_digest(&sha1::Sha1::digest(der));
    let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
    let self_signed = self_issued && cert.verify_signature(None).is_ok();
    let facts = CertificateFacts {
        issuer_thumbprint: self_signed.then(|| thumbprint.clone()),
        thumbprint,
        sha256: Thumbprint::from_digest(&sha2::Sha256::digest(der)),
        subject: cert.subject().to_string(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        dns_names,
        ip_addresses,
        uris,
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial().iter().map(|b| format!("{b:02X}")).collect(),
        not_before,
        not_after,
        key_algorithm: public_key
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), PublicKey::algorithm),
        key_size: public_key.as_ref().map_or(0, PublicKey::bits),
        signature_algorithm: signature_algorithm_name(&cert.signature_algorithm.algorithm.to_id_string()),
        extended_key_usages: extended_key_usages(&cert),
        key_usages: key_usages(&cert),
        is_ca: cert.is_ca(),
        self_signed,
        private_key: PrivateKeyState::Missing,
        crl_distribution_points: crl_distribution_points(&cert),
    };
    Ok(Parsed {
        der: der.to_vec(),
        facts,
        public_key,
    })
}

fn timestamp(seconds: i64) -> Result<Timestamp, String> {
    Timestamp::from_second(seconds).map_err(|err| format!("validity out of range: {err}"))
}

fn ip_address(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

fn crl_distribution_points(cert: &X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, ParsedExtension};
    cert.extensions()
        .iter()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::CRLDistributionPoints(points) => Some(points),
            _ => None,
        })
        .flat_map(|points| points.iter())
        .filter_map(|point| match &point.distribution_point {
            Some(DistributionPointName::FullName(names)) => Some(names),
            _ => None,
        })
        .flatten()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("http://") => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

fn key_usages(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(usage)) = cert.key_usage() else {
        return Vec::new();
    };
    let usage = usage.value;
    [
        (usage.digital_signature(), "digitalSignature"),
        (usage.non_repudiation(), "contentCommitment"),
        (usage.key_encipherment(), "keyEncipherment"),
        (usage.data_encipherment(), "dataEncipherment"),
        (usage.key_agreement(), "keyAgreement"),
        (usage.key_cert_sign(), "keyCertSign"),
        (usage.crl_sign(), "crlSign"),
        (usage.encipher_only(), "encipherOnly"),
        (usage.decipher_only(), "decipherOnly"),
    ]
    .into_iter()
    .filter(|(present, _)| *present)
    .map(|(_, name)| name.to_owned())
    .collect()
}

fn extended_key_usages(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return Vec::new();
    };
    let eku = eku.value;
    let named = [
        (eku.any, "any"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "ocspSigning"),
    ];
    named
        .iter()
        .filter(|(present, _)| *present)
        .map(|(_, name)| (*name).to_owned())
        .chain(eku.other.iter().map(|oid| oid.to_id_string()))
        .collect()
}

fn signature_algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.10045.4.3.2" => "ecdsaWithSHA256",
        "1.2.840.10045.4.3.3" => "ecdsaWithSHA384",
        "1.2.840.10045.4.3.4" => "ecdsaWithSHA512",
        "1.3.101.112" => "ed25519",
        other => return other.to_owned(),
    }
    .to_owned()
}

/// The direct issuer among `candidates`: its subject is the certificate's issuer
/// name and its key verifies the certificate's signature. Order does not matter,
/// so an out-of-order chain still resolves.
pub fn issuer_among(der: &[u8], facts: &CertificateFacts, candidates: &[(Thumbprint, Vec<u8>)]) -> Option<Thumbprint> {
    if facts.self_signed {
        return Some(facts.thumbprint.clone());
    }
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    candidates.iter().find_map(|(thumbprint, issuer_der)| {
        if thumbprint == &facts.thumbprint {
            return None;
        }
        let (_, issuer) = X509Certificate::from_der(issuer_der).ok()?;
        let named = issuer.subject().as_raw() == cert.issuer().as_raw();
        (named && cert.verify_signature(Some(issuer.public_key())).is_ok()).then(|| thumbprint.clone())
    })
}

/// Compares the first private key block of `bytes` with the certificate's key.
fn match_private_key(bytes: &[u8], certificate_key: Option<&PublicKey>) -> (PrivateKeyState, Option<String>) {
    let unreadable = |message: String| (PrivateKeyState::Unreadable, Some(format!("tls.key: {message}")));
    let bytes = strip_bom(bytes);
    let key = if looks_like_pem(bytes) {
        let blocks = match pem::parse_many(bytes) {
            Ok(blocks) => blocks,
            Err(err) => return unreadable(format!("malformed PEM: {}", pem_message(&err))),
        };
        let Some(block) = blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
            return unreadable("no PRIVATE KEY block".to_owned());
        };
        keys::public_key_of_private(block.tag(), block.contents())
    } else {
        // DER: try PKCS#8 first, then the traditional forms.
        ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]
            .iter()
            .find_map(|label| keys::public_key_of_private(label, bytes).ok())
            .ok_or_else(|| "not a PEM or DER private key".to_owned())
    };
    let key = match key {
        Ok(key) => key,
        Err(message) => return unreadable(message),
    };
    match certificate_key {
        Some(cert_key) if *cert_key == key => (PrivateKeyState::Matches, None),
        Some(cert_key) => {
            let detail = if cert_key.algorithm() == key.algorithm() {
                format!("tls.key is a different {} key than the certificate's", key.describe())
            } else {
                format!(
                    "tls.key holds an {} key; the certificate's key is {}",
                    key.describe(),
                    cert_key.describe()
                )
            };
            (PrivateKeyState::Mismatch, Some(detail))
        }
        None => unreadable("the certificate's public key could not be read".to_owned()),
    }
}

#[cfg(test)]
mod tests;
