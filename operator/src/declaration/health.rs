//! The health check of a published revision (docs/operator.md, "Monitored
//! upgrades"), Service Fabric's monitored upgrade for certificates: once
//! every member acknowledged revision N, wait `healthCheckWaitDuration`,
//! then the members must be healthy — at most `maxUnhealthyMembers`
//! unhealthy, each agent judging against what failed before N — for
//! `healthCheckStableDuration` before N+1 is published; a failing check is
//! retried for `healthCheckRetryTimeout`, then has failed. Pure: the
//! members' reports and the previous status in, the outcome out.

use std::time::Duration;

use jiff::Timestamp;

use super::members::MemberInputs;
use super::spec::Upgrade;
use super::status::secs;
use crate::crd::{HealthStatus, UnhealthyMember, UpgradeStatus};
use crate::revision::Revision;

/// One member's health under the revision in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberHealth {
    Healthy,
    /// Unhealthy: `reason`, `message` (what its agent says, or the probe).
    Unhealthy {
        reason: String,
        message: String,
    },
    /// Nothing to judge by under this revision yet (a pod that has not
    /// loaded it, or whose agent has not reported on it): holds the check,
    /// whatever `maxUnhealthyMembers` allows.
    NotReported {
        reason: String,
        message: String,
    },
}

impl MemberInputs {
    /// Each member's health under `revision` (`kind/name`, sorted): a pod
    /// by what its agent reports (a pod with no agent reporting health is
    /// judged by its acknowledgement alone); an endpoint by whether it still
    /// presents the revision's certificate; a workload by whether its
    /// rollout is complete.
    pub fn health(&self, revision: &Revision) -> Vec<(String, MemberHealth)> {
        let report = self.report(Some(revision));
        let mut out: Vec<(String, MemberHealth)> = report
            .members
            .iter()
            .map(|(member, observed)| {
                let at_revision = observed.is_some_and(|o| o >= revision.revision);
                let n = revision.revision;
                let health = match self.pod_health.get(member) {
                    _ if !at_revision && member.starts_with("pod/") => MemberHealth::NotReported {
                        reason: "NotAtRevision".to_owned(),
                        message: format!("has not acknowledged revision {n}"),
                    },
                    _ if !at_revision && member.starts_with("endpoint/") => MemberHealth::Unhealthy {
                        reason: "NotAtRevision".to_owned(),
                        message: format!("does not present revision {n}'s certificate"),
                    },
                    _ if !at_revision => MemberHealth::Unhealthy {
                        reason: "RolloutIncomplete".to_owned(),
                        message: format!("its rollout of revision {n} is not complete"),
                    },
                    None => MemberHealth::Healthy,
                    Some(reported) if reported.revision < n => MemberHealth::NotReported {
                        reason: "NotReported".to_owned(),
                        message: format!("has not reported its health under revision {n} yet"),
                    },
                    Some(reported) if reported.healthy => MemberHealth::Healthy,
                    Some(reported) => MemberHealth::Unhealthy {
                        reason: reported.reason.clone(),
                        message: reported.message.clone(),
                    },
                };
                (member.clone(), health)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// What the health check says now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Within `healthCheckWaitDuration` of the acknowledgement.
    Waiting { left: Duration },
    /// Healthy, not yet for `healthCheckStableDuration`.
    Soaking { left: Duration },
    /// Healthy for `healthCheckStableDuration`: the next revision may go.
    Passed,
    /// Unhealthy (or not reported), within `healthCheckRetryTimeout`.
    Retrying { left: Duration, message: String },
    /// Unhealthy past `healthCheckRetryTimeout`.
    Failed { message: String },
}

/// The check's outcome and what `status.upgrade.health` records of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    pub check: Check,
    pub status: HealthStatus,
}

/// Judges the health of `revision`, acknowledged by every member at
/// `acknowledged`, from the members' health and the streaks the previous
/// status recorded.
pub fn judge(
    upgrade: &Upgrade,
    revision: u64,
    acknowledged: Timestamp,
    members: &[(String, MemberHealth)],
    previous: &UpgradeStatus,
    now: Timestamp,
) -> Judged {
    let left = |since: Timestamp, duration: Duration| -> Option<Duration> {
        let end = since.as_second().saturating_add(secs(duration));
        (now.as_second() < end).then(|| Duration::from_secs((end - now.as_second()).unsigned_abs()))
    };
    let entry = |member: &String, reason: &String, message: &String| UnhealthyMember {
        member: member.clone(),
        reason: reason.clone(),
        message: message.clone(),
    };
    let mut reported_unhealthy = 0;
    let unhealthy: Vec<UnhealthyMember> = members
        .iter()
        .filter_map(|(member, health)| match health {
            MemberHealth::Healthy => None,
            MemberHealth::Unhealthy { reason, message } => {
                reported_unhealthy += 1;
                Some(entry(member, reason, message))
            }
            MemberHealth::NotReported { reason, message } => Some(entry(member, reason, message)),
        })
        .collect();
    if let Some(left) = left(acknowledged, upgrade.health_check_wait) {
        return Judged {
            check: Check::Waiting { left },
            status: HealthStatus {
                state: "Waiting".to_owned(),
                ..HealthStatus::default()
            },
        };
    }
    let streaks = previous
        .health
        .as_ref()
        .filter(|_| previous.revision == revision)
        .cloned()
        .unwrap_or_default();
    let allowed = upgrade.max_unhealthy.of(members.len());
    let not_reported = unhealthy.len() - reported_unhealthy;
    if reported_unhealthy <= allowed && not_reported == 0 {
        let since = streaks.healthy_time.unwrap_or(now);
        let (check, state) = match left(since, upgrade.health_check_stable) {
            Some(left) => (Check::Soaking { left }, "Soaking"),
            None => (Check::Passed, "Healthy"),
        };
        return Judged {
            check,
            status: HealthStatus {
                state: state.to_owned(),
                healthy_time: Some(since),
                unhealthy_time: None,
                unhealthy,
            },
        };
    }
    let since = streaks.unhealthy_time.unwrap_or(now);
    let message = failing(revision, members.len(), allowed, upgrade, &unhealthy);
    let (check, state) = match left(since, upgrade.health_check_retry) {
        Some(left) => (Check::Retrying { left, message }, "Retrying"),
        None => (
            Check::Failed {
                message: format!(
                    "{message}; failing since {since} (healthCheckRetryTimeout {}); held at revision {revision} until the members are healthy again",
                    crate::duration::format(upgrade.health_check_retry)
                ),
            },
            "Failed",
        ),
    };
    Judged {
        check,
        status: HealthStatus {
            state: state.to_owned(),
            healthy_time: None,
            unhealthy_time: Some(since),
            unhealthy,
        },
    }
}

/// "revision 3: 2 of 3 members unhealthy (maxUnhealthyMembers 0): pod/m-1:
/// CertificateRejectedByPeers: …; pod/m-2: …"
fn failing(revision: u64, total: usize, allowed: usize, upgrade: &Upgrade, unhealthy: &[UnhealthyMember]) -> String {
    let named: Vec<String> = unhealthy
        .iter()
        .take(3)
        .map(|m| format!("{}: {}: {}", m.member, m.reason, m.message))
        .collect();
    let more = unhealthy.len().saturating_sub(named.len());
    format!(
        "revision {revision}: {} of {total} members unhealthy (maxUnhealthyMembers {}{}): {}{}",
        unhealthy.len(),
        upgrade.max_unhealthy,
        if allowed > 0 {
            format!(", {allowed} allowed")
        } else {
            String::new()
        },
        named.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::spec::MaxUnhealthy;

    fn upgrade() -> Upgrade {
        Upgrade {
            health_check_wait: Duration::from_secs(10),
            health_check_stable: Duration::from_secs(30),
            health_check_retry: Duration::from_secs(60),
            stage_timeout: Duration::from_secs(3600),
            upgrade_timeout: Duration::from_secs(12 * 3600),
            max_unhealthy: MaxUnhealthy::None,
            failure_action: crate::crd::FailureAction::Rollback,
            paused: false,
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn members(states: &[MemberHealth]) -> Vec<(String, MemberHealth)> {
        states
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("pod/m-{i}"), h.clone()))
            .collect()
    }

    fn refused() -> MemberHealth {
        MemberHealth::Unhealthy {
            reason: "CertificateRejectedByPeers".to_owned(),
            message: "revision 3: 14 inbound handshakes refused by 10.88.0.9 with unknown_ca since revision 3"
                .to_owned(),
        }
    }

    /// The previous status after judging `judged` for revision 3.
    fn recorded(judged: &Judged) -> UpgradeStatus {
        UpgradeStatus {
            revision: 3,
            health: Some(judged.status.clone()),
            ..UpgradeStatus::default()
        }
    }

    #[test]
    fn healthy_members_pass_after_the_wait_and_the_stable_duration() {
        let up = upgrade();
        let healthy = members(&[MemberHealth::Healthy, MemberHealth::Healthy]);
        let none = UpgradeStatus::default();
        let judged = judge(&up, 3, at(0), &healthy, &none, at(5));
        assert_eq!(
            judged.check,
            Check::Waiting {
                left: Duration::from_secs(5)
            }
        );
        let judged = judge(&up, 3, at(0), &healthy, &none, at(10));
        assert_eq!(
            judged.check,
            Check::Soaking {
                left: Duration::from_secs(30)
            }
        );
        assert_eq!(judged.status.healthy_time, Some(at(10)));
        let judged = judge(&up, 3, at(0), &healthy, &recorded(&judged), at(39));
        assert_eq!(
            judged.check,
            Check::Soaking {
                left: Duration::from_secs(1)
            }
        );
        let judged = judge(&up, 3, at(0), &healthy, &recorded(&judged), at(40));
        assert_eq!(judged.check, Check::Passed);
        assert_eq!(judged.status.state, "Healthy");
    }

    #[test]
    fn an_unhealthy_member_is_retried_then_fails_naming_the_member_and_the_evidence() {
        let up = upgrade();
        let sick = members(&[MemberHealth::Healthy, refused()]);
        let judged = judge(&up, 3, at(0), &sick, &UpgradeStatus::default(), at(10));
        let Check::Retrying { left, message } = &judged.check else {
            panic!("{judged:?}")
        };
        assert_eq!(*left, Duration::from_secs(60));
        assert_eq!(
            message,
            "revision 3: 1 of 2 members unhealthy (maxUnhealthyMembers 0): pod/m-1: CertificateRejectedByPeers: \
             revision 3: 14 inbound handshakes refused by 10.88.0.9 with unknown_ca since revision 3"
        );
        assert_eq!(judged.status.unhealthy[0].member, "pod/m-1");
        let judged = judge(&up, 3, at(0), &sick, &recorded(&judged), at(70));
        let Check::Failed { message } = &judged.check else {
            panic!("{judged:?}")
        };
        assert!(message.contains("healthCheckRetryTimeout 1m"), "{message}");
        assert!(message.contains("held at revision 3"), "{message}");
        assert_eq!(judged.status.state, "Failed");
    }

    #[test]
    fn a_recovery_starts_a_new_stable_streak_and_a_relapse_a_new_retry() {
        let up = upgrade();
        let sick = members(&[refused()]);
        let healthy = members(&[MemberHealth::Healthy]);
        let failed = judge(&up, 3, at(0), &sick, &UpgradeStatus::default(), at(10));
        let failed = judge(&up, 3, at(0), &sick, &recorded(&failed), at(100));
        assert!(matches!(failed.check, Check::Failed { .. }));
        let recovered = judge(&up, 3, at(0), &healthy, &recorded(&failed), at(110));
        assert_eq!(
            recovered.check,
            Check::Soaking {
                left: Duration::from_secs(30)
            }
        );
        let relapse = judge(&up, 3, at(0), &sick, &recorded(&recovered), at(120));
        assert!(matches!(relapse.check, Check::Retrying { left, .. } if left == Duration::from_secs(60)));
    }

    #[test]
    fn max_unhealthy_members_as_a_count_and_as_a_percentage_rounded_down() {
        let mut up = upgrade();
        up.health_check_stable = Duration::ZERO;
        let four = members(&[
            refused(),
            MemberHealth::Healthy,
            MemberHealth::Healthy,
            MemberHealth::Healthy,
        ]);
        let two_sick = members(&[refused(), refused(), MemberHealth::Healthy, MemberHealth::Healthy]);
        let none = UpgradeStatus::default();
        for (max, sick_passes, two_pass) in [
            (MaxUnhealthy::None, false, false),
            (MaxUnhealthy::Count(1), true, false),
            (MaxUnhealthy::Count(2), true, true),
            (MaxUnhealthy::Percent(25), true, false),
            // 49 % of 4 is 1.96: one member.
            (MaxUnhealthy::Percent(49), true, false),
            (MaxUnhealthy::Percent(50), true, true),
        ] {
            up.max_unhealthy = max;
            let passes = |m: &[(String, MemberHealth)]| judge(&up, 3, at(0), m, &none, at(10)).check == Check::Passed;
            assert_eq!((passes(&four), passes(&two_sick)), (sick_passes, two_pass), "{max}");
        }
    }

    #[test]
    fn a_member_that_has_not_reported_holds_the_check_whatever_the_allowance() {
        let mut up = upgrade();
        up.max_unhealthy = MaxUnhealthy::Count(1);
        let pending = members(&[
            MemberHealth::NotReported {
                reason: "NotReported".to_owned(),
                message: "has not reported its health under revision 3 yet".to_owned(),
            },
            MemberHealth::Healthy,
        ]);
        let judged = judge(&up, 3, at(0), &pending, &UpgradeStatus::default(), at(10));
        let Check::Retrying { message, .. } = &judged.check else {
            panic!("{judged:?}")
        };
        assert!(
            message.contains("pod/m-0: NotReported: has not reported its health under revision 3 yet"),
            "{message}"
        );
    }

    #[test]
    fn streaks_of_an_earlier_revision_do_not_count() {
        let up = upgrade();
        let healthy = members(&[MemberHealth::Healthy]);
        let earlier = UpgradeStatus {
            revision: 2,
            health: Some(HealthStatus {
                state: "Soaking".to_owned(),
                healthy_time: Some(at(-1000)),
                ..HealthStatus::default()
            }),
            ..UpgradeStatus::default()
        };
        let judged = judge(&up, 3, at(0), &healthy, &earlier, at(10));
        assert_eq!(
            judged.check,
            Check::Soaking {
                left: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn each_kind_of_member_is_judged_by_its_own_signal() {
        use crate::outputs::ReportedHealth;
        use crate::thumbprint::Thumbprint;
        let presented = Thumbprint::parse("t", &"AB".repeat(20)).unwrap();
        let revision = Revision {
            revision: 3,
            stage: None,
            change: None,
            presented: presented.clone(),
            accepted: crate::rules::Accepted::default(),
            clients: crate::rules::Clients::default(),
            tolerated: Vec::new(),
            anchors: Vec::new(),
            cause: None,
        };
        let report = |revision, healthy| ReportedHealth {
            revision,
            healthy,
            reason: if healthy { "Healthy" } else { "RejectedPeers" }.to_owned(),
            message: "m".to_owned(),
        };
        let inputs = MemberInputs {
            pods: vec![
                ("pod/no-agent".to_owned(), Some(3)),
                ("pod/healthy".to_owned(), Some(3)),
                ("pod/sick".to_owned(), Some(3)),
                ("pod/stale-report".to_owned(), Some(3)),
                ("pod/behind".to_owned(), Some(2)),
            ],
            endpoints: vec![
                ("a:1".to_owned(), Ok(presented.clone())),
                ("b:1".to_owned(), Err("connection refused".to_owned())),
            ],
            pod_health: [
                ("pod/healthy", report(3, true)),
                ("pod/sick", report(3, false)),
                ("pod/stale-report", report(2, true)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            ..MemberInputs::default()
        };
        let judged: Vec<(String, &str)> = inputs
            .health(&revision)
            .into_iter()
            .map(|(m, h)| {
                let state = match h {
                    MemberHealth::Healthy => "Healthy",
                    MemberHealth::NotReported { reason, .. } => {
                        if reason == "NotAtRevision" {
                            "Behind"
                        } else {
                            "NotReported"
                        }
                    }
                    MemberHealth::Unhealthy { reason, .. } if reason == "NotAtRevision" => "NotAtRevision",
                    MemberHealth::Unhealthy { .. } => "Unhealthy",
                };
                (m, state)
            })
            .collect();
        assert_eq!(
            judged,
            [
                ("endpoint/a:1", "Healthy"),
                ("endpoint/b:1", "NotAtRevision"),
                ("pod/behind", "Behind"),
                ("pod/healthy", "Healthy"),
                ("pod/no-agent", "Healthy"),
                ("pod/sick", "Unhealthy"),
                ("pod/stale-report", "NotReported"),
            ]
            .map(|(m, s)| (m.to_owned(), s))
        );
    }
}
