//! The thumbprints each ObservedCertificate's declarations have in use:
//! what they present or accept by thumbprint with their revision in force
//! (`status.effective`, `status.certificatesInUse`). Retention keeps them.
//!
//! Fed by the declaration watch, so that an ObservedCertificate's reconcile
//! looks them up instead of listing every declaration of its namespace (one
//! LIST per reconcile: 10,000 of them for a cold start at 10,000).

use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::relisted::{Indexed, Relisted};
use crate::crd::ClusterCertificateDeclaration;

/// An ObservedCertificate, or a declaration, in a namespace.
type Named = (String, String);

/// The index, fed with the declaration watch's events.
#[derive(Debug, Default)]
pub struct InUseIndex(Relisted<Uses>);

#[derive(Debug, Default)]
struct Uses {
    /// By ObservedCertificate: each declaration naming it in its store, and
    /// the thumbprints that declaration has in use.
    by_store: HashMap<Named, HashMap<String, BTreeSet<String>>>,
    /// What each declaration's store names now, to forget it when that changes.
    stores: HashMap<Named, Vec<String>>,
}

impl Indexed<ClusterCertificateDeclaration> for Uses {
    fn set(&mut self, declaration: &ClusterCertificateDeclaration) {
        self.remove(declaration);
        let (namespace, name) = (declaration.namespace().unwrap_or_default(), declaration.name_any());
        let thumbprints = thumbprints_in_use(declaration);
        let store = declaration.spec.store.observed_certificates.clone();
        for ocert in &store {
            self.by_store
                .entry((namespace.clone(), ocert.clone()))
                .or_default()
                .insert(name.clone(), thumbprints.clone());
        }
        if !store.is_empty() {
            self.stores.insert((namespace, name), store);
        }
    }

    fn remove(&mut self, declaration: &ClusterCertificateDeclaration) {
        let key = (declaration.namespace().unwrap_or_default(), declaration.name_any());
        for ocert in self.stores.remove(&key).unwrap_or_default() {
            let named = (key.0.clone(), ocert);
            if let Some(users) = self.by_store.get_mut(&named) {
                users.remove(&key.1);
                if users.is_empty() {
                    self.by_store.remove(&named);
                }
            }
        }
    }
}

impl InUseIndex {
    pub fn observe(&mut self, event: &Event<ClusterCertificateDeclaration>) {
        self.0.observe(event);
    }

    /// The thumbprints in use from ObservedCertificate `namespace/name`;
    /// `None` until the declarations have been listed once.
    pub fn in_use(&self, namespace: &str, name: &str) -> Option<BTreeSet<String>> {
        // Before the first list, nothing is known to be unused.
        if !self.0.listed() {
            return None;
        }
        let users = self.0.live().by_store.get(&(namespace.to_owned(), name.to_owned()));
        Some(users.into_iter().flat_map(|u| u.values().flatten().cloned()).collect())
    }
}

/// The index, shared: the declaration controller feeds it, the
/// ObservedCertificate controller reads it.
#[derive(Debug, Default)]
pub struct SharedInUse {
    index: std::sync::Mutex<InUseIndex>,
    listed: tokio::sync::Notify,
}

/// How long a reconcile waits for the declarations' first list before it
/// fails (and is retried): at a cold start both watches list at once.
const FIRST_LIST: std::time::Duration = std::time::Duration::from_secs(10);

impl SharedInUse {
    pub fn observe(&self, event: &Event<ClusterCertificateDeclaration>) {
        let mut index = self.lock();
        index.observe(event);
        if index.0.listed() {
            self.listed.notify_waiters();
        }
    }

    /// The thumbprints in use from ObservedCertificate `namespace/name`,
    /// once the declarations are listed.
    pub async fn in_use(&self, namespace: &str, name: &str) -> Result<BTreeSet<String>, super::Error> {
        let wait = async {
            loop {
                // Registered before the look, so a list completing between the two wakes it.
                let listed = self.listed.notified();
                if let Some(in_use) = self.lock().in_use(namespace, name) {
                    return in_use;
                }
                listed.await;
            }
        };
        tokio::time::timeout(FIRST_LIST, wait)
            .await
            .map_err(|_| super::Error::NotListed("ClusterCertificateDeclarations"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InUseIndex> {
        // The index holds no invariant a panic elsewhere could break.
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What `declaration` presents or accepts by thumbprint with its revision in
/// force, upper-case.
fn thumbprints_in_use(declaration: &ClusterCertificateDeclaration) -> BTreeSet<String> {
    let mut in_use = BTreeSet::new();
    let Some(status) = declaration.status.as_ref() else {
        return in_use;
    };
    if let Some(effective) = &status.effective {
        in_use.extend(effective.presented.as_ref().map(|t| t.to_ascii_uppercase()));
        if let Some(certificate) = &effective.certificate {
            in_use.insert(certificate.thumbprint.to_ascii_uppercase());
            in_use.extend(
                certificate
                    .thumbprint_secondary
                    .as_ref()
                    .map(|t| t.to_ascii_uppercase()),
            );
        }
    }
    in_use.extend(
        status
            .certificates_in_use
            .iter()
            .filter(|u| matches!(u.role.as_str(), "Presented" | "AcceptedThumbprint"))
            .map(|u| u.thumbprint.to_ascii_uppercase()),
    );
    in_use
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CertificateThumbprints, ClusterCertificateDeclarationStatus, EffectiveDeclaration};

    fn declaration(
        name: &str,
        store: &[&str],
        presented: &str,
        secondary: Option<&str>,
    ) -> ClusterCertificateDeclaration {
        let mut d = ClusterCertificateDeclaration::new(name, Default::default());
        d.metadata.namespace = Some("ns".into());
        d.spec.store.observed_certificates = store.iter().map(|s| s.to_string()).collect();
        d.status = Some(ClusterCertificateDeclarationStatus {
            effective: Some(EffectiveDeclaration {
                presented: Some(presented.into()),
                certificate: Some(CertificateThumbprints {
                    thumbprint: presented.into(),
                    thumbprint_secondary: secondary.map(Into::into),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        d
    }

    fn set(thumbprints: &[&str]) -> Option<BTreeSet<String>> {
        Some(thumbprints.iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn nothing_is_known_unused_before_the_first_list() {
        let mut index = InUseIndex::default();
        index.observe(&Event::Apply(declaration("a", &["store"], "aa", None)));
        assert_eq!(index.in_use("ns", "store"), None);
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(declaration("a", &["store"], "aa", None)));
        assert_eq!(index.in_use("ns", "store"), None);
        index.observe(&Event::InitDone);
        assert_eq!(index.in_use("ns", "store"), set(&["AA"]));
        assert_eq!(index.in_use("ns", "other"), set(&[]));
    }

    #[test]
    fn each_declaration_naming_the_store_adds_what_it_has_in_use_until_it_changes_or_goes() {
        let mut index = InUseIndex::default();
        index.observe(&Event::Init);
        index.observe(&Event::InitDone);
        index.observe(&Event::Apply(declaration("a", &["store", "second"], "AA", Some("bb"))));
        index.observe(&Event::Apply(declaration("b", &["store"], "CC", None)));
        assert_eq!(index.in_use("ns", "store"), set(&["AA", "BB", "CC"]));
        assert_eq!(index.in_use("ns", "second"), set(&["AA", "BB"]));
        assert_eq!(index.in_use("other", "store"), set(&[]));
        // a moves off `second` and presents another certificate.
        index.observe(&Event::Apply(declaration("a", &["store"], "DD", None)));
        assert_eq!(index.in_use("ns", "store"), set(&["CC", "DD"]));
        assert_eq!(index.in_use("ns", "second"), set(&[]));
        index.observe(&Event::Delete(declaration("b", &["store"], "CC", None)));
        assert_eq!(index.in_use("ns", "store"), set(&["DD"]));
        index.observe(&Event::Delete(declaration("a", &["store"], "DD", None)));
        assert!(index.0.live().by_store.is_empty() && index.0.live().stores.is_empty());
    }

    #[test]
    fn a_relist_serves_the_old_index_until_it_is_complete() {
        let mut index = InUseIndex::default();
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(declaration("a", &["store"], "AA", None)));
        index.observe(&Event::InitDone);
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(declaration("b", &["store"], "BB", None)));
        assert_eq!(index.in_use("ns", "store"), set(&["AA"]));
        index.observe(&Event::InitDone);
        assert_eq!(index.in_use("ns", "store"), set(&["BB"]));
    }
}
