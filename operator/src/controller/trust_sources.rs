//! Which declarations read trust from each ConfigMap and Secret
//! (`spec.trustBundle`, `spec.revocation.crls`).
//!
//! A bundle or CRL event wakes exactly the declarations that name it, by one
//! lookup: the Secret watch sees every Secret of the cluster (a cold start
//! lists them all), and a scan of the declarations per event would grow with
//! the product of the two.

use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::relisted::{Indexed, Relisted};
use crate::crd::{ClusterCertificateDeclaration, ClusterCertificateDeclarationSpec};

/// The kind of object a trust source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

/// A ConfigMap or Secret, in a namespace.
type Source = (SourceKind, String, String);
/// A declaration, in a namespace.
type Declaration = (String, String);

/// The index, fed with the declaration watch's events.
#[derive(Debug, Default)]
pub struct TrustSourceIndex(Relisted<Sources>);

#[derive(Debug, Default)]
struct Sources {
    readers: HashMap<Source, BTreeSet<String>>,
    /// What each declaration names now, to forget it when its spec changes.
    named: HashMap<Declaration, Vec<Source>>,
}

impl Indexed<ClusterCertificateDeclaration> for Sources {
    fn set(&mut self, declaration: &ClusterCertificateDeclaration) {
        self.remove(declaration);
        let namespace = declaration.namespace().unwrap_or_default();
        let name = declaration.name_any();
        let sources: Vec<Source> = sources(&declaration.spec)
            .map(|(kind, source)| (kind, namespace.clone(), source.to_owned()))
            .collect();
        for source in &sources {
            self.readers.entry(source.clone()).or_default().insert(name.clone());
        }
        if !sources.is_empty() {
            self.named.insert((namespace, name), sources);
        }
    }

    fn remove(&mut self, declaration: &ClusterCertificateDeclaration) {
        let key = (declaration.namespace().unwrap_or_default(), declaration.name_any());
        for source in self.named.remove(&key).unwrap_or_default() {
            if let Some(readers) = self.readers.get_mut(&source) {
                readers.remove(&key.1);
                if readers.is_empty() {
                    self.readers.remove(&source);
                }
            }
        }
    }
}

impl TrustSourceIndex {
    pub fn observe(&mut self, event: &Event<ClusterCertificateDeclaration>) {
        self.0.observe(event);
    }

    /// The declarations that read trust from `kind` `namespace/name`.
    pub fn readers(&self, kind: SourceKind, namespace: &str, name: &str) -> Vec<String> {
        self.0
            .live()
            .readers
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .map(|readers| readers.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The ConfigMaps and Secrets a declaration reads trust from: its trust
/// bundle's and its CRLs'.
pub fn sources(spec: &ClusterCertificateDeclarationSpec) -> impl Iterator<Item = (SourceKind, &str)> {
    let bundle = spec.trust_bundle.iter().flat_map(|t| {
        let maps = t
            .config_map_ref
            .iter()
            .map(|r| (SourceKind::ConfigMap, r.name.as_str()));
        maps.chain(t.secret_ref.iter().map(|r| (SourceKind::Secret, r.name.as_str())))
    });
    let crls = spec.revocation.iter().flat_map(|r| &r.crls).flat_map(|c| {
        let maps = c
            .config_map_ref
            .iter()
            .map(|r| (SourceKind::ConfigMap, r.name.as_str()));
        maps.chain(c.secret_ref.iter().map(|r| (SourceKind::Secret, r.name.as_str())))
    });
    bundle.chain(crls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CrlSource, KeySelector, Revocation, TrustBundleSource};

    fn selector(name: &str) -> Option<KeySelector> {
        Some(KeySelector {
            name: name.into(),
            key: None,
        })
    }

    fn declaration(name: &str, bundle_secret: Option<&str>, crl_map: Option<&str>) -> ClusterCertificateDeclaration {
        let mut d = ClusterCertificateDeclaration::new(name, Default::default());
        d.metadata.namespace = Some("ns".into());
        d.spec.trust_bundle = bundle_secret.map(|s| TrustBundleSource {
            secret_ref: selector(s),
            ..Default::default()
        });
        d.spec.revocation = crl_map.map(|m| Revocation {
            crls: vec![CrlSource {
                config_map_ref: selector(m),
                secret_ref: None,
            }],
            distribution_points: None,
        });
        d
    }

    #[test]
    fn maps_a_bundle_or_crl_to_the_declarations_naming_it() {
        let mut index = TrustSourceIndex::default();
        index.observe(&Event::Apply(declaration("a", Some("bundle"), Some("crls"))));
        index.observe(&Event::Apply(declaration("b", Some("bundle"), None)));
        assert_eq!(index.readers(SourceKind::Secret, "ns", "bundle"), ["a", "b"]);
        assert_eq!(index.readers(SourceKind::ConfigMap, "ns", "crls"), ["a"]);
        // A ConfigMap of the Secret's name, or another namespace, is someone else's.
        assert!(index.readers(SourceKind::ConfigMap, "ns", "bundle").is_empty());
        assert!(index.readers(SourceKind::Secret, "other", "bundle").is_empty());
    }

    #[test]
    fn spec_changes_deletions_and_relists_leave_no_entry_behind() {
        let mut index = TrustSourceIndex::default();
        index.observe(&Event::Apply(declaration("a", Some("bundle"), Some("crls"))));
        // a moves its bundle to another Secret: the old one no longer wakes it.
        index.observe(&Event::Apply(declaration("a", Some("bundle-2"), None)));
        assert!(index.readers(SourceKind::Secret, "ns", "bundle").is_empty());
        assert!(index.readers(SourceKind::ConfigMap, "ns", "crls").is_empty());
        assert_eq!(index.readers(SourceKind::Secret, "ns", "bundle-2"), ["a"]);
        index.observe(&Event::Delete(declaration("a", Some("bundle-2"), None)));
        assert!(index.readers(SourceKind::Secret, "ns", "bundle-2").is_empty());
        assert!(index.0.live().readers.is_empty() && index.0.live().named.is_empty());
        // A relist: the old index serves until it is done.
        index.observe(&Event::Apply(declaration("b", Some("bundle"), None)));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(declaration("c", None, Some("crls"))));
        assert_eq!(index.readers(SourceKind::Secret, "ns", "bundle"), ["b"]);
        index.observe(&Event::InitDone);
        assert!(index.readers(SourceKind::Secret, "ns", "bundle").is_empty());
        assert_eq!(index.readers(SourceKind::ConfigMap, "ns", "crls"), ["c"]);
    }
}
