//! How kstatus — the library Flux, `kpt` and cli-utils use to wait for
//! applied objects — reads an object with no rules of its own, i.e. any
//! custom resource: kubernetes-sigs/cli-utils `pkg/kstatus/status/generic.go`
//! (`checkGenericProperties`, `checkGeneration`) and `status.go` (`Compute`:
//! Current when the generic checks decide nothing). Written down here so the
//! tests can hold certshift's conditions to it and `certshift status` can say
//! what a GitOps tool sees.

use serde_json::Value;

/// kstatus's verdict. `Unknown` and `NotFound` are left out: they come from
/// reading errors, never from an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Failed,
    Current,
    Terminating,
}

/// kstatus's verdict on a typed object, as the API server would return it.
pub fn of(object: &impl serde::Serialize) -> (Status, String) {
    compute(&serde_json::to_value(object).unwrap_or_default())
}

/// kstatus's verdict on `object` (the JSON the API server returns), with its message.
pub fn compute(object: &Value) -> (Status, String) {
    if object["metadata"]["deletionTimestamp"]
        .as_str()
        .is_some_and(|t| !t.is_empty())
    {
        return (Status::Terminating, "Resource scheduled for deletion".to_owned());
    }
    // Only checked when both are there: an object without
    // status.observedGeneration passes this step.
    if let (Some(generation), Some(observed)) = (
        object["metadata"]["generation"].as_i64(),
        object["status"]["observedGeneration"].as_i64(),
    ) && generation != observed
    {
        let kind = object["kind"].as_str().unwrap_or_default();
        return (
            Status::InProgress,
            format!("{kind} generation is {generation}, but latest observed generation is {observed}"),
        );
    }
    // The first True of the two, in the order the conditions are listed.
    for condition in object["status"]["conditions"].as_array().into_iter().flatten() {
        let message = condition["message"].as_str().unwrap_or_default().to_owned();
        match (condition["type"].as_str(), condition["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return (Status::InProgress, message),
            (Some("Stalled"), Some("True")) => return (Status::Failed, message),
            _ => {}
        }
    }
    (Status::Current, "Resource is current".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generic_rules_in_upstream_order() {
        let with = |generation: i64, observed: Option<i64>, conditions: Value| {
            let mut object =
                json!({"kind": "K", "metadata": {"generation": generation}, "status": {"conditions": conditions}});
            if let Some(observed) = observed {
                object["status"]["observedGeneration"] = json!(observed);
            }
            object
        };
        let reconciling = json!([{"type": "Reconciling", "status": "True", "message": "m"}]);
        let stalled = json!([{"type": "Stalled", "status": "True", "message": "s"}]);
        let both = json!([{"type": "Stalled", "status": "True", "message": "s"}, {"type": "Reconciling", "status": "True", "message": "m"}]);
        for (object, expected) in [
            (json!({}), Status::Current),
            (with(2, Some(1), json!([])), Status::InProgress),
            (with(2, Some(1), stalled.clone()), Status::InProgress),
            (with(2, None, stalled.clone()), Status::Failed),
            (with(2, Some(2), reconciling), Status::InProgress),
            (with(2, Some(2), stalled), Status::Failed),
            (with(2, Some(2), both), Status::Failed),
            (
                with(1, Some(1), json!([{"type": "Ready", "status": "False"}])),
                Status::Current,
            ),
            (
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
                Status::Terminating,
            ),
        ] {
            assert_eq!(compute(&object).0, expected, "{object}");
        }
    }
}
