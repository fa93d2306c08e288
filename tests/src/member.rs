//! A member as a real TLS server on loopback: it loads the presentation Secret
//! and validation ConfigMap of a declaration (polling, as a reload hook would),
//! presents that certificate, and requires client certificates that the loaded
//! `rules.json` accepts (by `certshift::verifier`, as members do). Like ordinary servers, it keeps an accepted
//! connection open waiting for a request. One can be told to reject a common
//! name.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use certshift::facts::inspect;
use certshift::outputs::{REVISION_ANNOTATION, THUMBPRINT_ANNOTATION, read_published};
use certshift::verifier::{Identity, Verifier};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Admits clients by the loaded revision (certshift's own verifier), and
/// refuses one common name on top when told to (a member that rejects).
#[derive(Debug)]
struct Rules {
    verifier: Arc<Verifier>,
    reject_common_name: Option<String>,
}

impl ClientCertVerifier for Rules {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(name) = &self.reject_common_name {
            let facts = inspect("client", end_entity.as_ref())
                .ok()
                .and_then(|f| f.into_iter().next());
            if facts.is_some_and(|f| f.common_name.as_ref() == Some(name)) {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        self.verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ClientCertVerifier::supported_verify_schemes(self.verifier.as_ref())
    }
}

/// The revision a member has loaded, and its TLS configuration.
type Loaded = (String, Arc<ServerConfig>);

pub struct Member {
    pub address: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Member {
    /// Serves on a free loopback port, loading `declaration`'s outputs.
    pub async fn start(client: Client, namespace: &str, declaration: &str, reject_common_name: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let current: Arc<RwLock<Option<Loaded>>> = Arc::default();
        let loader = {
            let (current, namespace, declaration) = (current.clone(), namespace.to_owned(), declaration.to_owned());
            let reject = reject_common_name.map(str::to_owned);
            tokio::spawn(async move {
                let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
                let secrets: Api<Secret> = Api::namespaced(client, &namespace);
                loop {
                    if let Some(loaded) = load(&maps, &secrets, &declaration, reject.clone()).await {
                        let changed =
                            current.read().unwrap().as_ref().map(|(r, _)| r.clone()) != Some(loaded.0.clone());
                        if changed {
                            *current.write().unwrap() = Some(loaded);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            })
        };
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let config = current.read().unwrap().as_ref().map(|(_, c)| c.clone());
                let Some(config) = config else { continue };
                tokio::spawn(async move {
                    // As ordinary servers do: keep the connection open,
                    // waiting for a request, until the client leaves.
                    if let Ok(mut tls) = TlsAcceptor::from(config).accept(tcp).await {
                        let mut request = Vec::new();
                        let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut request)).await;
                    }
                });
            }
        });
        Self {
            address,
            tasks: vec![loader, server],
        }
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// The outputs of one revision, when both are at the same revision.
async fn load(
    maps: &Api<ConfigMap>,
    secrets: &Api<Secret>,
    declaration: &str,
    reject_common_name: Option<String>,
) -> Option<Loaded> {
    let map = maps.get_opt(&format!("{declaration}-validation")).await.ok()??;
    let secret = secrets.get_opt(&format!("{declaration}-presentation")).await.ok()??;
    let annotations = map.metadata.annotations.clone().unwrap_or_default();
    let revision_label = annotations.get(REVISION_ANNOTATION)?.clone();
    let data = map.data.clone().unwrap_or_default();
    let revision = read_published(&annotations, &data).ok()?;
    // The Secret changes only with the certificate: it belongs to this
    // revision when it presents what `rules.json` says is presented.
    if secret.metadata.annotations.as_ref()?.get(THUMBPRINT_ANNOTATION) != Some(&revision.presented.to_string()) {
        return None; // the presentation write has not landed yet
    }
    let verifier = Arc::new(Verifier::from_outputs(|key| data.get(key).map(|v| v.clone().into_bytes())).ok()?);
    let secret_data = secret.data?;
    let identity = Identity::from_pem(&secret_data.get("tls.crt")?.0, &secret_data.get("tls.key")?.0).ok()?;
    let rules = Arc::new(Rules {
        verifier,
        reject_common_name,
    });
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_client_cert_verifier(rules)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .ok()?;
    Some((revision_label, Arc::new(config)))
}
