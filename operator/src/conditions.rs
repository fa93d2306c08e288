//! Kubernetes conditions the way cert-manager keeps them: one entry per type,
//! `lastTransitionTime` moves only when the status flips, so a reconcile of an
//! unchanged world computes exactly the status it read.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as the core decides it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Decided {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// kstatus's conditions (cli-utils `pkg/kstatus/status`), read by Flux, Argo
/// CD's generic checks and `kubectl wait`: `Reconciling` True means "not there
/// yet, still working", `Stalled` True means "not there and only a person can
/// move it on". Every certshift kind carries both.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Where an object stands against its spec, in kstatus's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// What the spec asks is done.
    Done,
    /// On its way; it gets there without anyone's help (`reason`, `message`).
    Reconciling(String, String),
    /// Held until a person changes the spec or what it names (`reason`, `message`).
    Stalled(String, String),
    /// Held by the spec itself (`spec.upgrade.paused`): neither working nor failed.
    Paused(String),
}

impl Standing {
    /// `Reconciling` and `Stalled`; the reason of a False one says why not.
    pub fn conditions(&self) -> [Decided; 2] {
        let not = |reason: &str, message: &str| {
            [
                Decided::new(RECONCILING, false, reason, message),
                Decided::new(STALLED, false, reason, message),
            ]
        };
        match self {
            Standing::Done => not("Done", "the object is as its spec asks"),
            Standing::Paused(message) => not("Paused", message),
            Standing::Reconciling(reason, message) => [
                Decided::new(RECONCILING, true, reason.clone(), message.clone()),
                Decided::new(
                    STALLED,
                    false,
                    "Reconciling",
                    "certshift is still working toward the spec",
                ),
            ],
            Standing::Stalled(reason, message) => [
                Decided::new(
                    RECONCILING,
                    false,
                    "Stalled",
                    "waiting for a change to the spec or to what it names",
                ),
                Decided::new(STALLED, true, reason.clone(), message.clone()),
            ],
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The new condition list: each decided condition, keeping the previous
/// `lastTransitionTime` when its status did not change. Sorted by type.
pub fn merge(previous: &[Condition], decided: &[Decided], generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let mut out: Vec<Condition> = decided
        .iter()
        .map(|d| {
            let status = status_str(d.status);
            let since = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map_or(Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.clone(),
                // The API requires a message; an empty one reads as null.
                message: if d.message.is_empty() {
                    d.reason.clone()
                } else {
                    d.message.clone()
                },
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect();
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Conditions whose status or reason changed: each deserves an event.
pub fn transitions<'a>(previous: &[Condition], next: &'a [Condition]) -> Vec<&'a Condition> {
    next.iter()
        .filter(|c| {
            !previous
                .iter()
                .any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
        })
        .collect()
}

/// Conditions in a canonical order. Server-side apply appends entries new to
/// a list-map after the old ones, so what is read back is compared sorted.
pub fn sorted(conditions: &[Condition]) -> Vec<Condition> {
    let mut sorted = conditions.to_vec();
    sorted.sort_by(|a, b| a.type_.cmp(&b.type_));
    sorted
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ts;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t0 = ts("2026-01-01T00:00:00Z");
        let t1 = ts("2026-01-02T00:00:00Z");
        let first = merge(&[], &[Decided::new("Ready", false, "Pending", "a")], Some(1), t0);
        let same = merge(
            &first,
            &[Decided::new("Ready", false, "StillPending", "b")],
            Some(1),
            t1,
        );
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(transitions(&first, &same).len(), 1, "a new reason is a transition");
        let flipped = merge(&same, &[Decided::new("Ready", true, "Ready", "")], Some(2), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(flipped[0].observed_generation, Some(2));
        let again = merge(&flipped, &[Decided::new("Ready", true, "Ready", "")], Some(2), t1);
        assert_eq!(again, flipped);
        assert!(transitions(&flipped, &again).is_empty());
    }
}
