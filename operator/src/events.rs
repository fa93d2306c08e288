//! Events as the core decides them: the shell records them on the object
//! (events.k8s.io/v1), so the decisions need no client type.

/// Kubernetes' two event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    /// PascalCase, a condition reason where one applies.
    pub reason: String,
    /// The note: what happened this time, with the figures that make it so.
    pub message: String,
}
