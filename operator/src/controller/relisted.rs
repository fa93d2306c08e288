//! An index fed by a watch's events, as a reflector keeps its store: rebuilt
//! during a relist and swapped in when the relist completes, so lookups
//! meanwhile see the index of the last complete list.

use kube::runtime::watcher::Event;

/// What an index keeps of each object of the watch.
pub trait Indexed<K> {
    /// `object` is new or changed: index it (forgetting what it was).
    fn set(&mut self, object: &K);
    fn remove(&mut self, object: &K);
}

#[derive(Debug, Default)]
pub struct Relisted<T> {
    live: T,
    relisting: Option<T>,
    /// A first list has completed: before it, the index knows nothing.
    listed: bool,
}

impl<T: Default> Relisted<T> {
    pub fn observe<K>(&mut self, event: &Event<K>)
    where
        T: Indexed<K>,
    {
        match event {
            Event::Init => self.relisting = Some(T::default()),
            Event::InitApply(object) => {
                if let Some(relisting) = &mut self.relisting {
                    relisting.set(object);
                }
            }
            Event::InitDone => {
                if let Some(relisted) = self.relisting.take() {
                    self.live = relisted;
                }
                self.listed = true;
            }
            Event::Apply(object) => self.live.set(object),
            Event::Delete(object) => self.live.remove(object),
        }
    }

    /// The index of the last complete list and the changes since.
    pub fn live(&self) -> &T {
        &self.live
    }

    pub fn listed(&self) -> bool {
        self.listed
    }
}
