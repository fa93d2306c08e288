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

/// How often a Warning that still holds is told again (Service Fabric
/// reports an expiring certificate every 8 hours).
pub const REMINDER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

/// When each object's Warnings were last told, to tell a standing one again
/// at most every [`REMINDER_INTERVAL`]. Kept in memory by the shell: a
/// restarted operator tells each standing Warning once more.
#[derive(Debug, Default)]
pub struct Reminders {
    told: std::collections::HashMap<(String, String), std::time::Instant>,
}

impl Reminders {
    /// Notes that `event` was told about `object` at `now`.
    pub fn told(&mut self, object: &str, event: &Event, now: std::time::Instant) {
        self.told.insert((object.to_owned(), event.reason.clone()), now);
    }

    /// The standing Warnings about `object` due to be told again at `now`
    /// (and notes them told).
    pub fn due(&mut self, object: &str, standing: &[Event], now: std::time::Instant) -> Vec<Event> {
        self.told
            .retain(|_, at| now.saturating_duration_since(*at) < REMINDER_INTERVAL * 2);
        let mut due = Vec::new();
        for event in standing {
            let key = (object.to_owned(), event.reason.clone());
            let last = self.told.get(&key).copied();
            if last.is_none_or(|at| now.saturating_duration_since(at) >= REMINDER_INTERVAL) {
                self.told.insert(key, now);
                due.push(event.clone());
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn warning(reason: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            message: format!("{reason} holds"),
        }
    }

    #[test]
    fn a_standing_warning_is_told_again_every_eight_hours_and_no_more() {
        let mut reminders = Reminders::default();
        let start = Instant::now();
        let expiring = [warning("ExpiringSoon")];
        // Told when it began (the condition's transition).
        reminders.told("default/cluster", &expiring[0], start);
        let mut told = 0;
        // A reconcile every 5 minutes for a day.
        for minute in (5..=24 * 60).step_by(5) {
            let now = start + Duration::from_secs(minute * 60);
            told += reminders.due("default/cluster", &expiring, now).len();
        }
        assert_eq!(told, 3, "at 8 h, 16 h and 24 h");
        // Each object and reason on its own.
        let later = start + Duration::from_secs(60);
        assert_eq!(reminders.due("default/other", &expiring, later).len(), 1);
        assert_eq!(reminders.due("default/cluster", &[warning("Revoked")], later).len(), 1);
    }
}
