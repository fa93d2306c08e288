//! What the agent's and the probes' tests and the agent benchmark share: certificates made with
//! rcgen, a day old and valid for thirty days, self-signed or issued by a CA
//! made the same way. (The benchmark includes this file by path.)

use certshift::thumbprint::Thumbprint;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct Cert {
    pub pem: String,
    pub key: String,
    pub thumbprint: Thumbprint,
    params: CertificateParams,
    pair: KeyPair,
}

pub fn issue(name: &str, ca: Option<&Cert>, is_ca: bool) -> Cert {
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    if is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let pair = KeyPair::generate().expect("key");
    let cert = match ca {
        Some(ca) => params.signed_by(&pair, &Issuer::from_params(&ca.params, &ca.pair)),
        None => params.self_signed(&pair),
    }
    .expect("certificate");
    use sha1::Digest as _;
    Cert {
        pem: cert.pem(),
        key: pair.serialize_pem(),
        thumbprint: Thumbprint::from_digest(&sha1::Sha1::digest(cert.der())),
        params,
        pair,
    }
}
