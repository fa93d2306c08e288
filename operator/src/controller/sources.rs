//! Which ObservedCertificates name each source Secret, and which version of
//! it each last read.
//!
//! A Secret event maps to its ObservedCertificates by one lookup instead of a
//! scan of the cache: a cold start sees every Secret of the cluster, and a scan
//! per event made the mapping grow with the product of Secrets and
//! ObservedCertificates. And the event of a version an ObservedCertificate
//! has already read wakes no one: at a cold start the Secret list arrives
//! while the first reconciles run, and would run each of them twice.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::crd::ObservedCertificate;

/// The index, fed with the ObservedCertificate watch's events. Keys are
/// hashes of (namespace, Secret name): small, and a collision only costs the
/// caller a check against its cache, which it makes anyway.
#[derive(Debug, Default)]
pub struct SourceIndex {
    live: Sources,
    /// Built during a relist, swapped in when it completes (as a reflector does).
    relisting: Option<Sources>,
}

type Sources = HashMap<u64, Vec<Reader>>;

#[derive(Debug)]
struct Reader {
    /// The ObservedCertificate's name (its namespace is the Secret's).
    name: Box<str>,
    /// Hash of the source's resourceVersion at the last read ([`MISSING`] when
    /// it was not there); `None` until read.
    read: Option<u64>,
}

/// The version recorded when the source was not there.
const MISSING: &str = "";

impl SourceIndex {
    /// Follows the ObservedCertificate watch. An ObservedCertificate whose
    /// source changed keeps its old entry until the next relist: callers check
    /// what the index returns against the cache.
    pub fn observe(&mut self, event: &Event<ObservedCertificate>) {
        match event {
            Event::Init => self.relisting = Some(Sources::default()),
            Event::InitApply(ocert) => {
                let read = self.reader(ocert).and_then(|r| r.read);
                if let Some(sources) = &mut self.relisting {
                    entry(sources, ocert).read = read;
                }
            }
            Event::InitDone => {
                if let Some(sources) = self.relisting.take() {
                    self.live = sources;
                }
            }
            Event::Apply(ocert) => {
                entry(&mut self.live, ocert);
            }
            Event::Delete(ocert) => {
                let key = source_key(ocert);
                if let Some(readers) = self.live.get_mut(&key) {
                    readers.retain(|r| *r.name != *ocert.name_any());
                    if readers.is_empty() {
                        self.live.remove(&key);
                    }
                }
            }
        }
    }

    /// The ObservedCertificates to wake for an event of Secret
    /// `namespace/secret` at `version`: those that name it and have not read
    /// that version. A deletion passes no version and wakes them all.
    pub fn to_wake(&self, namespace: &str, secret: &str, version: Option<&str>) -> Vec<String> {
        let version = version.map(hash);
        self.live
            .get(&key(namespace, secret))
            .into_iter()
            .flatten()
            .filter(|r| version.is_none() || r.read != version)
            .map(|r| r.name.to_string())
            .collect()
    }

    /// Records that `ocert` read its source at `version` (`None`: not there).
    pub fn read(&mut self, ocert: &ObservedCertificate, version: Option<&str>) {
        entry(&mut self.live, ocert).read = Some(hash(version.unwrap_or(MISSING)));
    }

    /// Whether `ocert` has read its source since this index began.
    pub fn has_read(&self, ocert: &ObservedCertificate) -> bool {
        self.reader(ocert).is_some_and(|r| r.read.is_some())
    }

    fn reader(&self, ocert: &ObservedCertificate) -> Option<&Reader> {
        let name = ocert.name_any();
        self.live.get(&source_key(ocert))?.iter().find(|r| *r.name == *name)
    }
}

/// `ocert`'s entry in `sources`, added (not yet read) when missing.
fn entry<'a>(sources: &'a mut Sources, ocert: &ObservedCertificate) -> &'a mut Reader {
    let name = ocert.name_any();
    let readers = sources.entry(source_key(ocert)).or_default();
    match readers.iter().position(|r| *r.name == *name) {
        Some(at) => &mut readers[at],
        None => {
            readers.push(Reader {
                name: name.into(),
                read: None,
            });
            readers.last_mut().expect("just pushed")
        }
    }
}

/// The key of the Secret `ocert` names as its source.
fn source_key(ocert: &ObservedCertificate) -> u64 {
    key(
        &ocert.namespace().unwrap_or_default(),
        &ocert.spec.source.secret_ref.name,
    )
}

fn key(namespace: &str, secret: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (namespace, secret).hash(&mut hasher);
    hasher.finish()
}

fn hash(version: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    version.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CertificateSource, LocalObjectReference, ObservedCertificateSpec};

    fn ocert(name: &str, source: &str) -> ObservedCertificate {
        let mut ocert = ObservedCertificate::new(
            name,
            ObservedCertificateSpec {
                source: CertificateSource {
                    secret_ref: LocalObjectReference { name: source.into() },
                },
                ..Default::default()
            },
        );
        ocert.metadata.namespace = Some("ns".into());
        ocert
    }

    #[test]
    fn maps_a_secret_to_the_observed_certificates_naming_it() {
        let mut index = SourceIndex::default();
        index.observe(&Event::Apply(ocert("a", "tls")));
        index.observe(&Event::Apply(ocert("b", "tls")));
        index.observe(&Event::Apply(ocert("c", "other")));
        let mut woken = index.to_wake("ns", "tls", Some("7"));
        woken.sort();
        assert_eq!(woken, ["a", "b"]);
        assert!(index.to_wake("elsewhere", "tls", Some("7")).is_empty());
        assert!(index.to_wake("ns", "unrelated", Some("7")).is_empty());
    }

    #[test]
    fn a_version_already_read_wakes_no_one_but_a_deletion_wakes_all() {
        let mut index = SourceIndex::default();
        let a = ocert("a", "tls");
        index.observe(&Event::Apply(a.clone()));
        assert!(!index.has_read(&a));
        index.read(&a, Some("7"));
        assert!(index.has_read(&a));
        assert!(index.to_wake("ns", "tls", Some("7")).is_empty());
        assert_eq!(index.to_wake("ns", "tls", Some("8")), ["a"]);
        assert_eq!(index.to_wake("ns", "tls", None), ["a"]);
        // Read while missing: the Secret's creation wakes it.
        index.read(&a, None);
        assert_eq!(index.to_wake("ns", "tls", Some("9")), ["a"]);
    }

    #[test]
    fn deletions_and_relists_leave_no_entry_behind() {
        let mut index = SourceIndex::default();
        let (a, b) = (ocert("a", "tls"), ocert("b", "tls"));
        index.observe(&Event::Apply(a.clone()));
        index.observe(&Event::Apply(b.clone()));
        index.read(&b, Some("7"));
        index.observe(&Event::Delete(a.clone()));
        assert!(index.to_wake("ns", "tls", Some("7")).is_empty());
        // A relist that no longer holds b, and holds a again: the old index
        // serves until it is done; reads survive it.
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(a.clone()));
        assert!(index.to_wake("ns", "tls", Some("8")) == ["b"]);
        index.observe(&Event::InitDone);
        assert_eq!(index.to_wake("ns", "tls", Some("8")), ["a"]);
        index.read(&a, Some("8"));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(a));
        index.observe(&Event::InitDone);
        assert!(index.to_wake("ns", "tls", Some("8")).is_empty());
        assert_eq!(index.live.len(), 1);
    }
}
