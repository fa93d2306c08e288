//! A member as a real TLS server on loopback: it loads the presentation Secret
//! and validation ConfigMap of a declaration (polling, as a reload hook would),
//! presents that certificate, and requires client certificates that the loaded
//! `rules.json` accepts. Like ordinary servers, it keeps an accepted
//! connection open waiting for a request. One can be told to reject a common
//! name.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use certshift::facts::{CertificateFacts, inspect};
use certshift::outputs::{REVISION_ANNOTATION, THUMBPRINT_ANNOTATION, read_published};
use certshift::planner::Revision;
use certshift::rules::TrustBundle;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Verifies client certificates against the loaded rules.
#[derive(Debug)]
struct Rules {
    revision: Revision,
    trust: TrustBundle,
    ca_bundle: String,
    reject_common_name: Option<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Rules {
    fn facts(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<CertificateFacts> {
        let mut pem: String = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec())))
            .collect();
        pem.push_str(&self.ca_bundle);
        inspect("client", pem.as_bytes()).ok()?.into_iter().next()
    }
}

impl ClientCertVerifier for Rules {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let refuse = || rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure);
        let facts = self.facts(end_entity, intermediates).ok_or_else(refuse)?;
        if self.reject_common_name.is_some() && facts.common_name == self.reject_common_name {
            return Err(refuse());
        }
        let now = jiff::Timestamp::now();
        self.revision
            .accepted
            .check(&facts, &self.trust, now)
            .map_err(|_| refuse())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
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
    let ca_bundle = data.get("ca-bundle.crt").cloned().unwrap_or_default();
    let trust = TrustBundle::new(
        inspect("ca-bundle", ca_bundle.as_bytes())
            .map(|all| all.into_iter().map(|f| f.thumbprint))
            .into_iter()
            .flatten(),
    );
    let secret_data = secret.data?;
    let chain = CertificateDer::pem_slice_iter(&secret_data.get("tls.crt")?.0)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(&secret_data.get("tls.key")?.0).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Rules {
        revision,
        trust,
        ca_bundle,
        reject_common_name,
        provider: provider.clone(),
    });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .ok()?;
    Some((revision_label, Arc::new(config)))
}
