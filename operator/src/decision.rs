//! What every controller's decision has in common: when to look again.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Only a change of what is watched can change the decision (a spec
    /// mistake: the user must edit the spec).
    AwaitChange,
    After(Duration),
}
