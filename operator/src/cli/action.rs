//! `certshift rollback NAME` and `certshift resume NAME`: they only set the
//! annotation `certshift.io/action` on the declaration, scoped to what is
//! held now (`rollback/<generation>`, `resume/<revision>`), so that it never
//! applies to a later change; the operator does the rest
//! (docs/operator.md, "Monitored upgrades").

use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use crate::crd::ClusterCertificateDeclaration;
use crate::declaration::plan::ACTION_ANNOTATION;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Rollback,
    Resume,
}

/// The annotation value for `verb` on `declaration` as it is now, or why
/// there is nothing to do.
pub fn value(verb: Verb, declaration: &ClusterCertificateDeclaration) -> Result<String, String> {
    let status = declaration.status.clone().unwrap_or_default();
    let upgrade = status.upgrade.unwrap_or_default();
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True")
        .map(|c| c.reason.as_str());
    match verb {
        Verb::Rollback => {
            if upgrade.rollback.is_some() {
                return Err("already rolling back or rolled back (status.upgrade.rollback)".to_owned());
            }
            if upgrade.origin.is_none() {
                return Err("no change is under way: there is nothing to roll back".to_owned());
            }
            // Each value is acted on once: a second ask in the same generation is `-2`, …
            let generation = declaration.metadata.generation.unwrap_or_default();
            let asked = |value: &String| upgrade.acted_on.contains(&format!("action={value}"));
            let value = std::iter::once(format!("rollback/{generation}"))
                .chain((2..).map(|n| format!("rollback/{generation}-{n}")))
                .find(|v| !asked(v))
                .expect("an unused value");
            Ok(value)
        }
        Verb::Resume => match stalled {
            Some("HealthCheckFailed") => Ok(format!("resume/{}", upgrade.revision)),
            Some(other) => Err(format!(
                "nothing to resume: the declaration is Stalled with {other}; resume goes on past a failed health \
                 check held by failureAction Manual (Stalled/HealthCheckFailed) only"
            )),
            None => Err(
                "nothing to resume: the declaration is not held (Stalled is not True); resume goes on past a \
                 failed health check held by failureAction Manual (Stalled/HealthCheckFailed) only"
                    .to_owned(),
            ),
        },
    }
}

/// Sets `certshift.io/action` on the declaration; returns what was set.
pub async fn request(client: &Client, namespace: &str, name: &str, verb: Verb) -> Result<String, String> {
    let api: Api<ClusterCertificateDeclaration> = Api::namespaced(client.clone(), namespace);
    let declaration = api.get(name).await.map_err(|err| match err {
        kube::Error::Api(status) if status.code == 404 => {
            format!("ClusterCertificateDeclaration {namespace}/{name} not found (kubectl get ccd -n {namespace})")
        }
        kube::Error::Api(status) => format!("ClusterCertificateDeclaration {namespace}/{name}: {}", status.message),
        err => format!("ClusterCertificateDeclaration {namespace}/{name}: {err}"),
    })?;
    let value = value(verb, &declaration).map_err(|why| format!("{namespace}/{name}: {why}"))?;
    let patch = serde_json::json!({"metadata": {"annotations": {ACTION_ANNOTATION: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|err| format!("annotating {namespace}/{name}: {err}"))?;
    Ok(format!("{ACTION_ANNOTATION}={value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClusterCertificateDeclarationStatus, RollbackStatus, UpgradeOrigin, UpgradeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn declaration(stalled: Option<&str>, upgrade: UpgradeStatus) -> ClusterCertificateDeclaration {
        let mut d = ClusterCertificateDeclaration::new("cluster", Default::default());
        d.metadata.generation = Some(4);
        d.status = Some(ClusterCertificateDeclarationStatus {
            conditions: stalled
                .map(|reason| Condition {
                    type_: "Stalled".into(),
                    status: "True".into(),
                    reason: reason.into(),
                    message: String::new(),
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                })
                .into_iter()
                .collect(),
            upgrade: Some(upgrade),
            ..Default::default()
        });
        d
    }

    #[test]
    fn each_action_is_scoped_to_what_is_held_now_or_refused_saying_why() {
        let changing = UpgradeStatus {
            revision: 7,
            origin: Some(UpgradeOrigin::default()),
            ..Default::default()
        };
        let held = declaration(Some("HealthCheckFailed"), changing.clone());
        assert_eq!(value(Verb::Rollback, &held), Ok("rollback/4".to_owned()));
        assert_eq!(value(Verb::Resume, &held), Ok("resume/7".to_owned()));
        let idle = declaration(None, UpgradeStatus::default());
        assert!(
            value(Verb::Rollback, &idle)
                .unwrap_err()
                .contains("nothing to roll back")
        );
        let asked_before = declaration(
            Some("HealthCheckFailed"),
            UpgradeStatus {
                acted_on: vec!["action=rollback/4".into()],
                ..changing.clone()
            },
        );
        assert_eq!(value(Verb::Rollback, &asked_before), Ok("rollback/4-2".to_owned()));
        assert!(value(Verb::Resume, &idle).unwrap_err().contains("nothing to resume"));
        let rolled_back = declaration(
            Some("RolledBack"),
            UpgradeStatus {
                rollback: Some(RollbackStatus::default()),
                ..changing
            },
        );
        assert!(value(Verb::Rollback, &rolled_back).unwrap_err().contains("already"));
        assert!(value(Verb::Resume, &rolled_back).unwrap_err().contains("RolledBack"));
    }
}
