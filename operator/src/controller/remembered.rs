//! Objects a reconcile read or wrote, remembered for the next reconcile until
//! a watch shows the object at another version.
//!
//! A declaration reconcile reads its store (ObservedCertificates and their
//! `-store` Secrets) and its outputs. At scale those reads, not the writes,
//! are most of the API server's work, and the objects seldom change: the
//! outputs are certshift's own. Keeping them whole in a watch cache would hold
//! every Secret of the cluster; here only the objects reconciles asked for
//! are kept, and a metadata watch says when one is out of date.
//!
//! A remembered object is served only while the last version the watch
//! reported is the remembered one (or the watch has reported none since it
//! was remembered). So a read that raced a change, or a write the watch has
//! not shown yet, is read again rather than trusted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt;
use kube::runtime::watcher;

/// What the watch last said of an object.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    /// Nothing since the object was first asked for.
    Nothing,
    Version(String),
    /// Deleted, or missing from a relist that is under way.
    Gone,
}

struct Slot<K> {
    seen: Seen,
    object: Option<Arc<K>>,
}

/// namespace → name → the remembered object (nested, so that a watch event
/// is looked up without allocating: most are of objects never asked for).
pub struct Remembered<K> {
    slots: Mutex<HashMap<String, HashMap<String, Slot<K>>>>,
}

impl<K> Default for Remembered<K> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: kube::Resource> Remembered<K> {
    /// The remembered object, if the watch has shown no other version of it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let mut slots = self.lock();
        let slot = slot(&mut slots, namespace, name);
        let object = slot.object.as_ref()?;
        match &slot.seen {
            Seen::Nothing => Some(object.clone()),
            Seen::Version(version) if object.resource_version().as_ref() == Some(version) => Some(object.clone()),
            _ => None,
        }
    }

    /// Remembers `object` as read or written (managedFields dropped: they
    /// are often larger than the rest). Returns it for the caller's use.
    pub fn put(&self, mut object: K) -> Arc<K> {
        object.managed_fields_mut().clear();
        let object = Arc::new(object);
        let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
        slot(&mut self.lock(), &namespace, &name).object = Some(object.clone());
        object
    }

    /// Takes in one event of the object's watch. Only objects asked for
    /// before are tracked; the rest are of no interest.
    pub fn observe<M: kube::Resource>(&self, event: &watcher::Event<M>) {
        let mut slots = self.lock();
        let mut see = |object: &M, seen: Seen| {
            let meta = object.meta();
            let (namespace, name) = (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref());
            if let Some(slot) = slots
                .get_mut(namespace)
                .and_then(|n| n.get_mut(name.unwrap_or_default()))
            {
                slot.seen = seen;
            }
        };
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                see(object, Seen::Version(object.resource_version().unwrap_or_default()))
            }
            watcher::Event::Delete(object) => see(object, Seen::Gone),
            // A relist does not report deletions: until it shows an object
            // again, nothing remembered of it is served.
            watcher::Event::Init => slots
                .values_mut()
                .flat_map(HashMap::values_mut)
                .for_each(|slot| slot.seen = Seen::Gone),
            watcher::Event::InitDone => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Slot<K>>>> {
        // A slot is replaced whole: a panic elsewhere leaves none half-written.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The slot of `namespace`/`name`, made empty if there is none.
fn slot<'a, K>(
    slots: &'a mut HashMap<String, HashMap<String, Slot<K>>>,
    namespace: &str,
    name: &str,
) -> &'a mut Slot<K> {
    slots
        .entry(namespace.to_owned())
        .or_default()
        .entry(name.to_owned())
        .or_insert(Slot {
            seen: Seen::Nothing,
            object: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn secret(name: &str, version: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                resource_version: Some(version.into()),
                managed_fields: Some(vec![Default::default()]),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    fn version(remembered: &Remembered<Secret>, name: &str) -> Option<String> {
        remembered.get("ns", name).and_then(|s| s.resource_version())
    }

    #[test]
    fn served_until_the_watch_shows_another_version() {
        let remembered = Remembered::default();
        assert_eq!(version(&remembered, "a"), None, "never read");
        remembered.put(secret("a", "10"));
        assert_eq!(version(&remembered, "a").as_deref(), Some("10"), "no event since");
        assert!(remembered.get("ns", "a").unwrap().managed_fields().is_empty());
        remembered.observe(&watcher::Event::Apply(secret("a", "10")));
        assert_eq!(version(&remembered, "a").as_deref(), Some("10"), "the same version");
        remembered.observe(&watcher::Event::Apply(secret("a", "11")));
        assert_eq!(version(&remembered, "a"), None, "changed since");
        remembered.put(secret("a", "11"));
        assert_eq!(version(&remembered, "a").as_deref(), Some("11"));
    }

    #[test]
    fn a_read_that_raced_a_change_or_a_write_not_yet_watched_is_read_again() {
        let remembered = Remembered::default();
        assert_eq!(version(&remembered, "a"), None);
        // The watch shows 11 while a read that returns 10 is in flight.
        remembered.observe(&watcher::Event::Apply(secret("a", "11")));
        remembered.put(secret("a", "10"));
        assert_eq!(version(&remembered, "a"), None);
        // A write returns 12 before the watch shows it.
        remembered.put(secret("a", "12"));
        assert_eq!(version(&remembered, "a"), None);
        remembered.observe(&watcher::Event::Apply(secret("a", "12")));
        assert_eq!(version(&remembered, "a").as_deref(), Some("12"));
    }

    #[test]
    fn deletions_and_relists_forget() {
        let remembered = Remembered::default();
        for name in ["a", "b"] {
            remembered.get("ns", name);
            remembered.put(secret(name, "10"));
        }
        remembered.observe(&watcher::Event::Delete(secret("a", "10")));
        assert_eq!(version(&remembered, "a"), None, "deleted");
        remembered.put(secret("a", "10")); // a read from before the deletion
        assert_eq!(version(&remembered, "a"), None, "still deleted");
        remembered.observe(&watcher::Event::<Secret>::Init);
        assert_eq!(version(&remembered, "b"), None, "relist under way");
        remembered.observe(&watcher::Event::InitApply(secret("b", "10")));
        remembered.observe(&watcher::Event::<Secret>::InitDone);
        assert_eq!(version(&remembered, "b").as_deref(), Some("10"), "relisted");
        assert_eq!(version(&remembered, "a"), None, "absent from the relist");
        // Events of objects never asked for are not kept.
        remembered.observe(&watcher::Event::Apply(secret("c", "1")));
        assert_eq!(remembered.lock()["ns"].len(), 2);
    }
}
