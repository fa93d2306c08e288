//! The judge: watches every validation ConfigMap the operator publishes in a
//! namespace and checks each adjacent pair of revisions against docs/planner.md,
//! plus numbering (no repeated, skipped or regressed revision).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use certshift::facts::{CertificateBundle, TlsMaterial};
use certshift::outputs::{DECLARATION_LABEL, read_published};
use certshift::planner::Revision;
use certshift::thumbprint::Thumbprint;
use certshift::verifier::Verifier;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

#[derive(Clone, Debug)]
pub struct Observation {
    pub at: Instant,
    pub declaration: String,
    pub revision: Revision,
    /// The revision's validation files, as members load them.
    pub files: Arc<BTreeMap<String, String>>,
}

#[derive(Default)]
struct Record {
    observations: Vec<Observation>,
    violations: Vec<String>,
    /// The chains (leaf first, DER) of every certificate that may be presented.
    chains: BTreeMap<Thumbprint, Vec<Vec<u8>>>,
}

#[derive(Clone)]
pub struct Judge {
    record: Arc<Mutex<Record>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Judge {
    pub fn watch(client: &Client, namespace: &str) -> Self {
        let record = Arc::new(Mutex::new(Record::default()));
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels(DECLARATION_LABEL);
        let shared = record.clone();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
            while let Some(event) = stream.next().await {
                let Ok(map) = event else { continue };
                let annotations = map.metadata.annotations.clone().unwrap_or_default();
                let data = map.data.clone().unwrap_or_default();
                // The label holds a shortened name when the full one is over
                // 63 characters; the annotation of the same key has it whole.
                let declaration = annotations
                    .get(DECLARATION_LABEL)
                    .or_else(|| map.labels().get(DECLARATION_LABEL))
                    .cloned()
                    .unwrap_or_default();
                // Certificates issued during the scenario: learn them from the
                // namespace's Secrets (sources and stores) before judging.
                let unknown = annotations
                    .get(certshift::outputs::THUMBPRINT_ANNOTATION)
                    .is_some_and(|t| {
                        !shared
                            .lock()
                            .expect("judge lock")
                            .chains
                            .keys()
                            .any(|k| k.as_str() == t)
                    });
                if unknown && let Ok(list) = secrets.list(&Default::default()).await {
                    let mut record = shared.lock().expect("judge lock");
                    for secret in list.items {
                        record.learn(&secret);
                    }
                }
                let mut record = shared.lock().expect("judge lock");
                match read_published(&annotations, &data) {
                    Ok(revision) => record.observe(Observation {
                        at: Instant::now(),
                        declaration,
                        revision,
                        files: Arc::new(data),
                    }),
                    Err(err) => record
                        .violations
                        .push(format!("{}: unreadable outputs: {err}", map.name_any())),
                }
            }
        });
        Self {
            record,
            task: Arc::new(task),
        }
    }

    /// Certificates the judge may see presented (a TLS Secret's material).
    pub fn know(&self, tls_crt: &str, ca_crt: Option<&str>) {
        let bundle = CertificateBundle::from_tls(&TlsMaterial {
            tls_crt: tls_crt.as_bytes(),
            tls_key: None,
            ca_crt: ca_crt.map(str::as_bytes),
        })
        .expect("judge: certificate material");
        let mut record = self.record.lock().expect("judge lock");
        record.chains.insert(bundle.leaf.thumbprint, bundle.chain_der);
    }

    pub fn observations(&self) -> Vec<Observation> {
        self.record.lock().expect("judge lock").observations.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.record.lock().expect("judge lock").violations.clone()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Record {
    /// Every certificate a TLS or store Secret holds (`tls.crt`, `<thumbprint>.crt`).
    fn learn(&mut self, secret: &Secret) {
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (key, crt) in &data {
            let Some(stem) = key.strip_suffix(".crt").filter(|s| !s.ends_with(".ca") && *s != "ca") else {
                continue;
            };
            let ca = if stem == "tls" {
                data.get("ca.crt")
            } else {
                data.get(&format!("{stem}.ca.crt"))
            };
            let material = TlsMaterial {
                tls_crt: crt,
                tls_key: None,
                ca_crt: ca.map(Vec::as_slice),
            };
            if let Ok(bundle) = CertificateBundle::from_tls(&material) {
                self.chains.insert(bundle.leaf.thumbprint, bundle.chain_der);
            }
        }
    }

    fn observe(&mut self, observation: Observation) {
        let last = self
            .observations
            .iter()
            .rev()
            .find(|o| o.declaration == observation.declaration)
            .cloned();
        if let Some(last) = &last {
            let (before, after) = (&last.revision, &observation.revision);
            if after.revision == before.revision {
                if after.state() != before.state() {
                    self.violations.push(format!(
                        "{}: revision {} was published twice with different content",
                        observation.declaration, after.revision
                    ));
                }
                return; // the same revision seen again (e.g. the presentation write)
            }
            if after.revision < before.revision {
                self.violations.push(format!(
                    "{}: revision regressed from {} to {}",
                    observation.declaration, before.revision, after.revision
                ));
            } else if after.revision != before.revision + 1 {
                self.violations.push(format!(
                    "{}: revision {} skipped to {}",
                    observation.declaration, before.revision, after.revision
                ));
            }
            if (before.presented != after.presented) && (before.accepted != after.accepted) {
                self.violations.push(format!(
                    "{}: revision {} changes presentation and validation at once",
                    observation.declaration, after.revision
                ));
            }
            // As members judge: each revision's verifier, from its own files.
            let verifier =
                |o: &Observation| Verifier::from_outputs(|key| o.files.get(key).map(|v| v.clone().into_bytes()));
            for (cert, judged) in [(&before.presented, &observation), (&after.presented, last)] {
                let rules_revision = judged.revision.revision;
                let verdict = match (self.chains.get(cert), verifier(judged)) {
                    (_, Err(err)) => Err(format!("revision {rules_revision}'s files do not load: {err}")),
                    (None, _) => Err(format!("presented certificate {cert} is unknown to the judge")),
                    (Some(chain), Ok(verifier)) => {
                        let sent: Vec<_> = chain[1..].iter().map(|der| der.as_slice().into()).collect();
                        verifier.admits_member(&chain[0], &sent).map(|_| ()).map_err(|refusal| {
                            format!("revision {rules_revision} rejects {cert}, presented in the adjacent revision ({refusal})")
                        })
                    }
                };
                if let Err(violation) = verdict {
                    self.violations
                        .push(format!("{}: {violation}", observation.declaration));
                }
            }
        }
        self.observations.push(observation);
    }
}
