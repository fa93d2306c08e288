//! The audit log: only the lease holder ever wrote, each revision published once.

use super::*;

/// Over the whole run (pods killed, the kubelet and kube-apiserver
/// restarted, the Deployment rolled): every write by the operator's
/// ServiceAccount came from the pod (source IP) that had written the leader
/// Lease last — acquired or renewed it — before the write was received.
/// The replicas share the ServiceAccount; the audit log tells them apart by
/// their pod addresses.
pub(crate) fn only_the_lease_holder_ever_wrote(node: &Node) {
    let sa = "system:serviceaccount:certshift-system:certshift";
    let mut events: Vec<(Timestamp, bool, String, String)> = node
        .audit_log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["user"]["username"] == sa
                && ["create", "update", "patch", "delete"].contains(&e["verb"].as_str().unwrap_or_default())
                && e["responseStatus"]["code"].as_u64().is_some_and(|c| c < 300)
        })
        .filter_map(|e| {
            let lease = e["objectRef"]["resource"] == "leases";
            // A lease write counts from when it took effect, any other from
            // when it was received.
            let at = if lease {
                &e["stageTimestamp"]
            } else {
                &e["requestReceivedTimestamp"]
            };
            let what = format!(
                "{} {}/{}/{}",
                e["verb"].as_str()?,
                e["objectRef"]["resource"].as_str()?,
                e["objectRef"]["namespace"].as_str().unwrap_or_default(),
                e["objectRef"]["name"].as_str().unwrap_or_default()
            );
            Some((
                at.as_str()?.parse().ok()?,
                lease,
                e["sourceIPs"][0].as_str()?.to_owned(),
                what,
            ))
        })
        .collect();
    events.sort_by_key(|(at, lease, ..)| (*at, !lease));
    let mut holder: Option<&str> = None;
    let (mut writes, mut holders) = (0, std::collections::BTreeSet::new());
    for (at, lease, ip, what) in &events {
        if *lease {
            holder = Some(ip);
            holders.insert(ip.clone());
        } else {
            writes += 1;
            assert_eq!(
                holder,
                Some(ip.as_str()),
                "{what} at {at} from {ip}, while the lease was last written by {holder:?}"
            );
        }
    }
    assert!(writes > 100 && holders.len() >= 3, "{writes} writes by {holders:?}");
    println!(
        "  node: {writes} writes by the operator, each from the pod holding the lease ({} holders over the run)",
        holders.len()
    );
}

/// A successful write of a declaration's validation ConfigMap, as the
/// audit log has it.
#[derive(Debug)]
pub(crate) struct ValidationWrite {
    pub(crate) user: String,
    /// When it completed (server time).
    pub(crate) at: Timestamp,
}

/// The validation ConfigMap writes of `ns`, asserted to be one per revision
/// up to `revision` (none lost, none repeated, whichever replica led).
pub(crate) fn published_once(node: &Node, ns: &str, revision: u64, when: &str) -> Vec<ValidationWrite> {
    let published = validation_writes(node, ns);
    assert_eq!(
        published.len() as u64,
        revision,
        "{ns} {when}: one write of the validation ConfigMap per revision: {published:?}"
    );
    published
}

/// The validation ConfigMap writes of `ns`, in order: each revision's
/// publication is one (by whichever replica leads), so the k-th is
/// revision k's.
pub(crate) fn validation_writes(node: &Node, ns: &str) -> Vec<ValidationWrite> {
    node.audit_log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| {
            e["objectRef"]["resource"] == "configmaps"
                && e["objectRef"]["namespace"] == ns
                && e["objectRef"]["name"] == format!("{DECLARATION}-validation")
                && e["verb"] == "patch"
                && e["stage"] == "ResponseComplete"
                && e["responseStatus"]["code"].as_u64().is_some_and(|c| c < 300)
        })
        .filter_map(|e| {
            Some(ValidationWrite {
                user: e["user"]["username"].as_str()?.to_owned(),
                at: e["stageTimestamp"].as_str()?.parse().ok()?,
            })
        })
        .collect()
}
