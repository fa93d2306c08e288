//! The status each declaration was last given by this process, until its
//! watch shows it. A reconcile can start before the watch has brought back
//! the status the previous reconcile wrote (it was woken by a pod or an
//! output); deciding on the older status would write it again and repeat its
//! events. Versions, not contents, say what is older: the cached object is
//! taken for stale only when it is at a resourceVersion a write of this
//! process replaced; any other version (the write itself seen, someone
//! else's change) is the one to decide on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::Resource;

/// How many replaced versions are kept per object: more writes than this
/// before the watch catches up only cost a repeated write.
const SUPERSEDED: usize = 4;

struct Written<K> {
    /// Versions this process's writes replaced, oldest first.
    superseded: Vec<String>,
    written: Arc<K>,
}

/// By object uid.
pub struct WrittenStatuses<K> {
    objects: Mutex<HashMap<String, Written<K>>>,
}

impl<K> Default for WrittenStatuses<K> {
    fn default() -> Self {
        Self {
            objects: Mutex::new(HashMap::new()),
        }
    }
}

fn uid<K: Resource>(object: &K) -> String {
    object.meta().uid.clone().unwrap_or_default()
}

fn version<K: Resource>(object: &K) -> String {
    object.meta().resource_version.clone().unwrap_or_default()
}

impl<K: Resource> WrittenStatuses<K> {
    /// The object to decide on: the one last written when the cache is at a
    /// version that write replaced, else the cached one.
    pub fn current(&self, cached: Arc<K>) -> Arc<K> {
        let mut objects = self.objects.lock().unwrap_or_else(PoisonError::into_inner);
        let uid = uid(cached.as_ref());
        match objects.get(&uid) {
            Some(w) if w.superseded.contains(&version(cached.as_ref())) => w.written.clone(),
            Some(_) => {
                // The watch caught up, or someone else wrote: nothing to remember.
                objects.remove(&uid);
                cached
            }
            None => cached,
        }
    }

    /// `decided_on` was replaced by `written` (the API server's answer to the write).
    pub fn wrote(&self, decided_on: &K, written: K) {
        let mut objects = self.objects.lock().unwrap_or_else(PoisonError::into_inner);
        let uid = uid(&written);
        let replaced = version(decided_on);
        // Writes chain while the watch lags: what the previous one replaced stays stale.
        let mut superseded = objects
            .remove(&uid)
            .filter(|w| version(w.written.as_ref()) == replaced)
            .map(|w| w.superseded)
            .unwrap_or_default();
        superseded.push(replaced);
        if superseded.len() > SUPERSEDED {
            superseded.remove(0);
        }
        let written = Arc::new(written);
        objects.insert(uid, Written { superseded, written });
    }

    /// The object is gone.
    pub fn forget(&self, object: &K) {
        let mut objects = self.objects.lock().unwrap_or_else(PoisonError::into_inner);
        objects.remove(&uid(object));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.objects.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn at(version: &str, note: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                uid: Some("uid-1".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            data: Some([("note".to_owned(), note.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn note(object: &ConfigMap) -> &str {
        &object.data.as_ref().unwrap()["note"]
    }

    #[test]
    fn a_lagging_cache_is_replaced_by_the_last_write_until_it_catches_up() {
        let written = WrittenStatuses::<ConfigMap>::default();
        let v1 = Arc::new(at("1", "first"));
        written.wrote(v1.as_ref(), at("2", "second"));
        assert_eq!(note(&written.current(v1.clone())), "second", "the cache still shows 1");
        // A second write while the cache is still at 1.
        let decided_on = written.current(v1.clone());
        written.wrote(&decided_on, at("3", "third"));
        assert_eq!(note(&written.current(v1.clone())), "third");
        assert_eq!(
            note(&written.current(Arc::new(at("2", "second")))),
            "third",
            "2 was replaced too"
        );
        // The watch brings 3: the cache is current and nothing is remembered.
        assert_eq!(note(&written.current(Arc::new(at("3", "third")))), "third");
        assert_eq!(written.len(), 0);
    }

    #[test]
    fn someone_elses_change_wins() {
        let written = WrittenStatuses::<ConfigMap>::default();
        let v1 = Arc::new(at("1", "first"));
        written.wrote(v1.as_ref(), at("2", "ours"));
        let theirs = Arc::new(at("7", "theirs"));
        assert_eq!(note(&written.current(theirs)), "theirs");
        assert_eq!(
            note(&written.current(v1)),
            "first",
            "forgotten once something else was seen"
        );
    }

    #[test]
    fn a_deleted_object_is_forgotten() {
        let written = WrittenStatuses::<ConfigMap>::default();
        let v1 = at("1", "first");
        written.wrote(&v1, at("2", "second"));
        written.forget(&v1);
        assert_eq!(written.len(), 0);
    }
}
