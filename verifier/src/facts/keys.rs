//! Public-key material, from a certificate's SubjectPublicKeyInfo or from a
//! private key, so that "does this key belong to this certificate" is a plain
//! comparison of public components (what `openssl x509 -noout -modulus` and
//! `X509_check_private_key` compare), for every key size and type.

use super::der::{self, BIT_STRING, CONTEXT_0, CONTEXT_1, INTEGER, OCTET_STRING, OID, SEQUENCE};

const RSA: &str = "1.2.840.113549.1.1.1";
const EC: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const P521: &str = "1.3.132.0.35";

/// The public half of a key pair, normalized for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    Ec {
        curve: String,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
    /// A key type certshift does not interpret, by algorithm OID.
    Other(String),
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki(spki: &[u8]) -> Option<Self> {
        let mut fields = der::Reader::new(der::single(spki, SEQUENCE)?);
        let (algorithm, parameter) = algorithm_identifier(fields.next(SEQUENCE)?)?;
        let key = der::bit_string_bytes(fields.next(BIT_STRING)?)?;
        Some(match algorithm.as_str() {
            RSA => rsa_public_key(key)?,
            EC => PublicKey::Ec {
                curve: parameter?,
                point: key.to_vec(),
            },
            ED25519 => PublicKey::Ed25519(key.to_vec()),
            _ => PublicKey::Other(algorithm),
        })
    }

    /// Algorithm name as users see it in Key Vault and cert-manager.
    pub fn algorithm(&self) -> String {
        match self {
            PublicKey::Rsa { .. } => "RSA".into(),
            PublicKey::Ec { .. } => "ECDSA".into(),
            PublicKey::Ed25519(_) => "Ed25519".into(),
            PublicKey::Other(oid) => oid.clone(),
        }
    }

    /// Key size in bits: the modulus for RSA, the curve for ECDSA.
    pub fn bits(&self) -> u32 {
        match self {
            PublicKey::Rsa { modulus, .. } => {
                let leading = modulus.first().map_or(0, |b| b.leading_zeros());
                u32::try_from(modulus.len() * 8)
                    .unwrap_or(u32::MAX)
                    .saturating_sub(leading)
            }
            PublicKey::Ec { curve, .. } => match curve.as_str() {
                P256 => 256,
                P384 => 384,
                P521 => 521,
                _ => 0,
            },
            PublicKey::Ed25519(_) => 256,
            PublicKey::Other(_) => 0,
        }
    }

    /// "RSA 2048", "ECDSA P-256", "Ed25519": for messages.
    pub fn describe(&self) -> String {
        match self {
            PublicKey::Rsa { .. } => format!("RSA {}", self.bits()),
            PublicKey::Ec { .. } => format!("ECDSA P-{}", self.bits()),
            _ => self.algorithm(),
        }
    }
}

/// Why a private key could not be turned into its public half.
pub type KeyError = String;

/// The public half of a PEM private key block (`PRIVATE KEY`, `RSA PRIVATE KEY`,
/// `EC PRIVATE KEY`).
pub fn public_key_of_private(label: &str, der: &[u8]) -> Result<PublicKey, KeyError> {
    match label {
        "PRIVATE KEY" => pkcs8(der).ok_or_else(|| "malformed PKCS#8 private key".to_owned())?,
        "RSA PRIVATE KEY" => rsa_private_key(der).ok_or_else(|| "malformed PKCS#1 RSA private key".to_owned()),
        "EC PRIVATE KEY" => ec_private_key(der, None).ok_or_else(|| "malformed SEC1 EC private key".to_owned())?,
        "ENCRYPTED PRIVATE KEY" => Err("the private key is encrypted; certshift needs it unencrypted".to_owned()),
        other => Err(format!(
            "unexpected PEM block {other:?} where a private key was expected"
        )),
    }
}

fn algorithm_identifier(value: &[u8]) -> Option<(String, Option<String>)> {
    let mut fields = der::Reader::new(value);
    let algorithm = der::oid_string(fields.next(OID)?)?;
    // Parameters: a curve OID for EC, NULL or absent otherwise.
    let parameter = fields
        .next_any()
        .filter(|tlv| tlv.tag == OID)
        .and_then(|tlv| der::oid_string(tlv.value));
    Some((algorithm, parameter))
}

fn rsa_public_key(key: &[u8]) -> Option<PublicKey> {
    let mut fields = der::Reader::new(der::single(key, SEQUENCE)?);
    let modulus = der::unsigned(fields.next(INTEGER)?).to_vec();
    let exponent = der::unsigned(fields.next(INTEGER)?).to_vec();
    Some(PublicKey::Rsa { modulus, exponent })
}

/// PKCS#1 RSAPrivateKey carries the modulus and public exponent in the clear.
fn rsa_private_key(der: &[u8]) -> Option<PublicKey> {
    let mut fields = der::Reader::new(der::single(der, SEQUENCE)?);
    fields.next(INTEGER)?; // version
    let modulus = der::unsigned(fields.next(INTEGER)?).to_vec();
    let exponent = der::unsigned(fields.next(INTEGER)?).to_vec();
    Some(PublicKey::Rsa { modulus, exponent })
}

/// SEC1 ECPrivateKey: the public point is the optional `[1]` field. OpenSSL,
/// Go and ring always write it; without it we cannot compare without curve
/// arithmetic, so we say so instead of guessing.
fn ec_private_key(der: &[u8], curve_from_pkcs8: Option<String>) -> Option<Result<PublicKey, KeyError>> {
    let mut fields = der::Reader::new(der::single(der, SEQUENCE)?);
    fields.next(INTEGER)?; // version
    fields.next(OCTET_STRING)?; // the private scalar
    let curve = match fields.optional(CONTEXT_0) {
        Some(parameters) => Some(der::oid_string(der::single(parameters, OID)?)?),
        None => curve_from_pkcs8,
    };
    let Some(curve) = curve else {
        return Some(Err("the EC private key does not name its curve".to_owned()));
    };
    let Some(public) = fields.optional(CONTEXT_1) else {
        return Some(Err("the EC private key omits its public key".to_owned()));
    };
    let point = der::bit_string_bytes(der::single(public, BIT_STRING)?)?.to_vec();
    Some(Ok(PublicKey::Ec { curve, point }))
}

fn pkcs8(der: &[u8]) -> Option<Result<PublicKey, KeyError>> {
    let mut fields = der::Reader::new(der::single(der, SEQUENCE)?);
    fields.next(INTEGER)?; // version 0 or 1
    let (algorithm, parameter) = algorithm_identifier(fields.next(SEQUENCE)?)?;
    let private = fields.next(OCTET_STRING)?;
    Some(match algorithm.as_str() {
        RSA => rsa_private_key(private).ok_or_else(|| "malformed RSA key inside PKCS#8".to_owned()),
        EC => ec_private_key(private, parameter)?,
        ED25519 => {
            let seed = der::single(private, OCTET_STRING)?;
            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed).ok()?;
            Ok(PublicKey::Ed25519(
                ring::signature::KeyPair::public_key(&pair).as_ref().to_vec(),
            ))
        }
        other => Err(format!("unsupported private key algorithm {other}")),
    })
}
