//! What the agent makes of the two volumes (pure): a revision to load, a
//! reason to wait (the volumes arrive separately, in either order), or why
//! what is there cannot be loaded (said, never acknowledged; the last good
//! revision keeps serving).

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use rustls::{ClientConfig, ServerConfig};

use crate::facts::{CertificateBundle, PrivateKeyState, TlsMaterial};
use crate::outputs::RulesJson;
use crate::thumbprint::Thumbprint;
use crate::verifier::{Identity, Verifier};

/// The files of the presentation Secret and the validation ConfigMap as
/// read (one map for both when they are projected into one volume).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub presentation: BTreeMap<String, Vec<u8>>,
    pub validation: BTreeMap<String, Vec<u8>>,
}

/// A revision, ready to serve.
#[derive(Debug)]
pub struct Loaded {
    pub revision: u64,
    pub presented: Thumbprint,
    pub verifier: Arc<Verifier>,
    pub identity: Identity,
    /// Presents the revision's certificate and admits members and allowed clients.
    pub server: Arc<ServerConfig>,
    /// Presents the revision's certificate and accepts servers that are members.
    pub client: Arc<ClientConfig>,
}

#[derive(Debug)]
pub enum Outcome {
    Load(Box<Loaded>),
    /// Nothing to do yet: a volume is missing a file, or the two volumes
    /// are not at the same revision.
    Waiting(String),
    /// The revision loaded already.
    Same,
    /// An older revision than the one loaded: kept out.
    Older {
        revision: u64,
        loaded: u64,
    },
    /// What is there cannot be served.
    Invalid {
        reason: &'static str,
        message: String,
    },
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Outcome {
    Outcome::Invalid {
        reason,
        message: message.into(),
    }
}

/// Judges the volumes against the revision loaded, at `now`.
pub fn judge(snapshot: &Snapshot, loaded: Option<u64>, now: Timestamp) -> Outcome {
    let file = |map: &BTreeMap<String, Vec<u8>>, key: &str| map.get(key).cloned();
    let Some(rules_json) = file(&snapshot.validation, "rules.json") else {
        return Outcome::Waiting("the validation volume has no rules.json yet".to_owned());
    };
    let (Some(tls_crt), Some(tls_key)) = (
        file(&snapshot.presentation, "tls.crt"),
        file(&snapshot.presentation, "tls.key"),
    ) else {
        return Outcome::Waiting("the presentation volume has no tls.crt and tls.key yet".to_owned());
    };
    let rules: RulesJson = match serde_json::from_slice(&rules_json) {
        Ok(rules) => rules,
        Err(err) => return invalid("InvalidRules", format!("rules.json: {err}")),
    };
    match loaded {
        Some(loaded) if rules.revision < loaded => {
            return Outcome::Older {
                revision: rules.revision,
                loaded,
            };
        }
        Some(loaded) if rules.revision == loaded => return Outcome::Same,
        _ => {}
    }
    let bundle = match CertificateBundle::from_tls(&TlsMaterial {
        tls_crt: &tls_crt,
        tls_key: Some(&tls_key),
        ca_crt: None,
    }) {
        Ok(bundle) => bundle,
        Err(err) => return invalid(err.reason(), err.to_string()),
    };
    let leaf = &bundle.leaf;
    if let Some(presented) = &rules.presented
        && *presented != leaf.thumbprint
    {
        return Outcome::Waiting(format!(
            "revision {} presents {presented}; the presentation volume holds {}",
            rules.revision, leaf.thumbprint
        ));
    }
    if leaf.private_key != PrivateKeyState::Matches {
        let why = bundle
            .key_message
            .clone()
            .unwrap_or_else(|| "tls.key does not match tls.crt".to_owned());
        return invalid("PrivateKeyMismatch", why);
    }
    let verifier = match Verifier::from_outputs(|key| file(&snapshot.validation, key)) {
        Ok(verifier) => Arc::new(verifier),
        Err(err) => return invalid("InvalidTrustBundle", err.to_string()),
    };
    // Never present a certificate the revision's own rules refuse.
    let chain: Vec<rustls::pki_types::CertificateDer<'_>> =
        bundle.chain_der[1..].iter().map(|der| der.as_slice().into()).collect();
    if let Err(refusal) = verifier.check_member(&bundle.chain_der[0], &chain, now) {
        return invalid(
            "PresentedNotAccepted",
            format!(
                "revision {}: the presented certificate {} is refused by the revision's rules ({refusal})",
                rules.revision, leaf.thumbprint
            ),
        );
    }
    let identity = match Identity::from_pem(&tls_crt, &tls_key) {
        Ok(identity) => identity,
        Err(err) => return invalid("InvalidCertificate", err.to_string()),
    };
    let configs = verifier
        .server_config(&identity)
        .and_then(|server| Ok((server, verifier.client_config(&identity)?)));
    let (server, client) = match configs {
        Ok(configs) => configs,
        Err(err) => return invalid("InvalidCertificate", err.to_string()),
    };
    Outcome::Load(Box::new(Loaded {
        revision: rules.revision,
        presented: leaf.thumbprint.clone(),
        verifier,
        identity,
        server: Arc::new(server),
        client: Arc::new(client),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Accepted, Clients, CommonNameRule};
    use crate::testing::{Issued, cert};

    fn now() -> Timestamp {
        crate::testing::ts("2026-06-01T00:00:00Z")
    }

    fn thumbprint(issued: &Issued) -> Thumbprint {
        use sha1::Digest as _;
        Thumbprint::from_digest(&sha1::Sha1::digest(&issued.der))
    }

    struct Pki {
        ca: Issued,
        a: Issued,
        b: Issued,
    }

    fn pki() -> Pki {
        let ca = cert("Cluster CA").ca().self_signed();
        Pki {
            a: cert("cluster.example").dns("cluster.example").signed_by(&ca),
            b: cert("cluster.example").dns("cluster.example").signed_by(&ca),
            ca,
        }
    }

    fn snapshot(pki: &Pki, revision: u64, presenting: &Issued, presented: &Issued) -> Snapshot {
        let rules = RulesJson {
            revision,
            presented: Some(thumbprint(presented)),
            accepted: Accepted::new([], [CommonNameRule::new("cluster.example", [thumbprint(&pki.ca)])]),
            clients: Clients::default(),
            anchors: None,
            tolerated: Vec::new(),
        };
        Snapshot {
            presentation: BTreeMap::from([
                ("tls.crt".to_owned(), presenting.pem.clone().into_bytes()),
                ("tls.key".to_owned(), presenting.key_pem().into_bytes()),
            ]),
            validation: BTreeMap::from([
                ("rules.json".to_owned(), serde_json::to_vec(&rules).unwrap()),
                ("ca-bundle.crt".to_owned(), pki.ca.pem.clone().into_bytes()),
            ]),
        }
    }

    #[test]
    fn a_revision_loads_when_both_volumes_agree_on_it() {
        let pki = pki();
        match judge(&snapshot(&pki, 3, &pki.a, &pki.a), None, now()) {
            Outcome::Load(loaded) => {
                assert_eq!((loaded.revision, &loaded.presented), (3, &thumbprint(&pki.a)));
            }
            other => panic!("{other:?}"),
        }
        // The ConfigMap is at a revision presenting b; the Secret still holds a.
        assert!(matches!(
            judge(&snapshot(&pki, 4, &pki.a, &pki.b), Some(3), now()),
            Outcome::Waiting(_)
        ));
        assert!(matches!(
            judge(&snapshot(&pki, 3, &pki.a, &pki.a), Some(3), now()),
            Outcome::Same
        ));
        assert!(matches!(
            judge(&snapshot(&pki, 2, &pki.a, &pki.a), Some(3), now()),
            Outcome::Older { revision: 2, loaded: 3 }
        ));
    }

    #[test]
    fn what_cannot_be_served_says_why() {
        let pki = pki();
        let mut wrong_key = snapshot(&pki, 3, &pki.a, &pki.a);
        wrong_key
            .presentation
            .insert("tls.key".to_owned(), pki.b.key_pem().into_bytes());
        assert!(matches!(
            judge(&wrong_key, None, now()),
            Outcome::Invalid {
                reason: "PrivateKeyMismatch",
                ..
            }
        ));
        let mut garbage = snapshot(&pki, 3, &pki.a, &pki.a);
        garbage
            .validation
            .insert("rules.json".to_owned(), b"{not json".to_vec());
        assert!(matches!(
            judge(&garbage, None, now()),
            Outcome::Invalid {
                reason: "InvalidRules",
                ..
            }
        ));
        let stranger = cert("other.example").self_signed();
        assert!(matches!(
            judge(&snapshot(&pki, 3, &stranger, &stranger), None, now()),
            Outcome::Invalid {
                reason: "PresentedNotAccepted",
                ..
            }
        ));
        let mut partial = snapshot(&pki, 3, &pki.a, &pki.a);
        partial.presentation.remove("tls.key");
        assert!(matches!(judge(&partial, None, now()), Outcome::Waiting(_)));
    }
}
