//! `decide` as data in, decision out: every branch of the controller, no client.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::conditions::STALLED;
use crate::crd::{
    CertificateCommonNames, CertificateThumbprints, ClusterCertificateDeclarationSpec, CommonNameDeclaration, Endpoint,
    KeySelector, Members, OutputSpec, Pkcs12Output, UpgradePolicy,
};
use crate::outputs::PresentedMaterial;
use crate::planner::Store;
use crate::revision::{Cause, Change};
use crate::rules::{Accepted, CommonNameRule, TrustBundle};
use crate::testing::{facts, tp, ts};

/// The certificate the shell would probe the endpoints with.
fn preflight(world: &World) -> Option<Preflight> {
    plan(world).preflight(world)
}

fn instances() -> Vec<crate::facts::CertificateFacts> {
    vec![
        facts("Old")
            .cn("old")
            .self_signed()
            .valid("2026-01-01T00:00:00Z", "2027-06-01T00:00:00Z")
            .build(),
        facts("G")
            .cn("cluster.example")
            .issuer("CA")
            .valid("2026-03-01T00:00:00Z", "2027-06-01T00:00:00Z")
            .build(),
    ]
}

/// A store whose instances all have key material (fake PEM: `decide` does
/// not parse it unless extra formats are asked for).
fn contents(instances: Vec<crate::facts::CertificateFacts>) -> StoreContents {
    let materials = instances
        .iter()
        .map(|f| {
            let material = PresentedMaterial {
                tls_crt: format!("crt of {}", f.thumbprint),
                tls_key: format!("key of {}", f.thumbprint),
                ca_crt: String::new(),
            };
            (f.thumbprint.clone(), material)
        })
        .collect();
    StoreContents {
        store: Store {
            instances,
            trust: TrustBundle::new([tp("CA")]),
        },
        materials,
        authorities: BTreeMap::from([(tp("CA"), "CA PEM\n".to_owned())]),
        crls: String::new(),
        distribution_points: Vec::new(),
    }
}

fn by_name_spec(stable: &str) -> ClusterCertificateDeclarationSpec {
    ClusterCertificateDeclarationSpec {
        certificate_common_names: Some(CertificateCommonNames {
            common_names: vec![CommonNameDeclaration {
                certificate_common_name: "cluster.example".into(),
                certificate_issuer_thumbprint: tp("CA").to_string(),
            }],
        }),
        store: crate::crd::CertificateStore {
            observed_certificates: vec!["store".into()],
        },
        upgrade: Some(UpgradePolicy {
            health_check_stable_duration: Some(stable.into()),
            stage_timeout: Some("10m".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn by_thumbprint_spec() -> ClusterCertificateDeclarationSpec {
    ClusterCertificateDeclarationSpec {
        certificate: Some(CertificateThumbprints {
            thumbprint: tp("Old").to_string(),
            thumbprint_secondary: None,
        }),
        certificate_common_names: None,
        ..by_name_spec("0s")
    }
}

fn revision(revision: u64, presented: &str, accepted: Accepted) -> Revision {
    Revision {
        revision,
        stage: None,
        change: None,
        presented: tp(presented),
        accepted,
        clients: Default::default(),
        tolerated: Vec::new(),
        anchors: Vec::new(),
        cause: None,
    }
}

fn thumbprint_rules() -> Accepted {
    Accepted::new([tp("Old")], [])
}

fn pods(observed: &[Option<u64>]) -> Vec<(String, Option<u64>)> {
    observed
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("pod/m{i}"), *o))
        .collect()
}

/// One reconcile's world, and what the shell does with a decision.
struct Case {
    declaration: ClusterCertificateDeclaration,
    store: Result<StoreContents, Blocked>,
    validation: Option<Arc<ConfigMap>>,
    presentation: Option<Arc<Secret>>,
    password: Option<Arc<Secret>>,
    members: MemberInputs,
    preflight: Option<Vec<(String, Result<(), String>)>>,
    now: Timestamp,
}

fn case(spec: ClusterCertificateDeclarationSpec) -> Case {
    Case {
        declaration: ClusterCertificateDeclaration {
            metadata: ObjectMeta {
                name: Some("cluster".into()),
                namespace: Some("default".into()),
                uid: Some("uid-cluster".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        },
        store: Ok(contents(instances())),
        validation: None,
        presentation: None,
        password: None,
        members: MemberInputs::default(),
        preflight: None,
        now: ts("2026-06-01T00:00:00Z"),
    }
}

impl Case {
    fn world(&self) -> World {
        World {
            declaration: Arc::new(self.declaration.clone()),
            spec: spec::parse(&self.declaration.spec),
            store: self.store.clone(),
            validation: self.validation.clone(),
            presentation: self.presentation.clone(),
            pkcs12_password: self.password.clone(),
            members: self.members.clone(),
            preflight: self.preflight.clone(),
            now: self.now,
        }
    }

    fn decide(&self) -> Decision {
        decide(&self.world())
    }

    /// Outputs as certshift would have written them for `published`,
    /// presenting its certificate since that revision.
    fn published(mut self, published: Revision) -> Self {
        let data = outputs::validation_data(&published, &Default::default(), &[]);
        let map = outputs::validation_config_map(&self.declaration, &published, data);
        self.validation = Some(Arc::new(map));
        self.presentation = Some(Arc::new(
            self.secret_presenting(&published.presented, published.revision),
        ));
        self
    }

    fn secret_presenting(&self, presented: &Thumbprint, since: u64) -> Secret {
        let material = &self.store.as_ref().unwrap().materials[presented];
        let data = outputs::presentation_data(material)
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        outputs::presentation_secret(&self.declaration, since, presented, data)
    }

    /// What the shell does: make the writes, store the status.
    fn apply(&mut self, decision: &Decision) {
        for effect in &decision.effects {
            match effect {
                Effect::PublishValidation(map) => self.validation = Some(Arc::new(map.clone())),
                Effect::PublishPresentation(secret) => self.presentation = Some(Arc::new(secret.clone())),
                Effect::StampWorkload { .. } => {}
            }
        }
        if let Some(status) = &decision.status {
            self.declaration.status = Some(status.clone());
        }
    }

    /// The status after `decision`: the one it writes, or the one stored.
    fn status(&self, decision: &Decision) -> ClusterCertificateDeclarationStatus {
        decision
            .status
            .clone()
            .or_else(|| self.declaration.status.clone())
            .expect("a status")
    }
}

fn condition<'a>(status: &'a ClusterCertificateDeclarationStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status.conditions.iter().find(|c| c.type_ == type_).expect(type_);
    (c.status.as_str(), c.reason.as_str())
}

fn condition_message<'a>(status: &'a ClusterCertificateDeclarationStatus, type_: &str) -> &'a str {
    &status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect(type_)
        .message
}

fn written_revisions(decision: &Decision) -> Vec<(&'static str, String)> {
    decision
        .effects
        .iter()
        .map(|effect| match effect {
            Effect::PublishValidation(map) => ("validation", map.annotations()[REVISION_ANNOTATION].clone()),
            Effect::PublishPresentation(secret) => {
                ("presentation", secret.annotations()[THUMBPRINT_ANNOTATION].clone())
            }
            Effect::StampWorkload { workload, revision } => ("stamp", format!("{}={revision}", workload.name)),
        })
        .collect()
}

use kube::ResourceExt as _;

#[test]
fn the_first_publication_is_the_desired_state_as_revision_1() {
    let mut c = case(by_thumbprint_spec());
    let decision = c.decide();
    let published = decision.published.clone().expect("publish");
    assert_eq!((published.revision, &published.presented), (1, &tp("Old")));
    assert_eq!(
        written_revisions(&decision),
        [("validation", "1".to_owned()), ("presentation", tp("Old").to_string())],
        "validation first, then presentation"
    );
    let status = decision.status.clone().expect("a status write");
    assert_eq!(status.declared_by.as_deref(), Some("Thumbprint"));
    // Ready once its health is checked, at the next look (with no member,
    // at once).
    assert_eq!(condition(&status, READY), ("False", "Upgrading"));
    assert!(decision.events.is_empty(), "publishing is no event of its own");
    assert_eq!(
        decision.requeue,
        Requeue::After(Duration::from_secs(1)),
        "no member gates it"
    );
    c.apply(&decision);
    // The next look sees it in force on every member (there are none).
    let next = c.decide();
    assert_eq!(next.events.len(), 1);
    assert_eq!(
        (next.events[0].type_, next.events[0].reason.as_str()),
        (EventType::Normal, "Ready")
    );
    assert!(next.effects.is_empty());
    assert_eq!(condition(&c.status(&next), READY), ("True", "Ready"));
}

#[test]
fn a_spec_change_publishes_the_first_revision_of_the_plan_only() {
    let c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    let decision = c.decide();
    let publish = decision.published.clone().expect("publish");
    assert_eq!(
        (publish.revision, publish.stage, publish.change),
        (2, Some(Stage::AddSecondary), Some(Change::Validation))
    );
    let status = decision.status.expect("status");
    let upgrade = status.upgrade.clone().unwrap();
    assert_eq!(upgrade.revision, 2);
    assert_eq!(
        upgrade.plan.len(),
        5,
        "the published revision and the four still pending"
    );
    assert_eq!(upgrade.plan[1].state, "Pending");
    assert_eq!(condition(&status, PROGRESSING), ("True", "Upgrading"));
    assert_eq!(condition(&status, SECONDARY_ADDED).0, "False");
}

#[test]
fn a_validation_revision_leaves_the_presentation_secret_as_it_is() {
    let c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    let decision = c.decide();
    assert_eq!(decision.published.as_ref().unwrap().change, Some(Change::Validation));
    assert_eq!(written_revisions(&decision), [("validation", "2".to_owned())]);
    let Effect::PublishValidation(map) = &decision.effects[0] else {
        unreachable!()
    };
    let rules: serde_json::Value = serde_json::from_str(&map.data.as_ref().unwrap()["rules.json"]).unwrap();
    assert_eq!(
        rules["presented"],
        tp("Old").to_string(),
        "members read the revision from rules.json"
    );
}

#[test]
fn a_presentation_revision_writes_the_validation_configmap_then_the_secret() {
    let mut r2 = revision(2, "Old", Accepted::new([tp("Old"), tp("G")], []));
    r2.stage = Some(Stage::AddSecondary);
    let mut c = case(by_name_spec("0s")).published(r2);
    c.presentation = Some(Arc::new(c.secret_presenting(&tp("Old"), 1)));
    let decision = c.decide();
    assert_eq!(decision.published.as_ref().unwrap().change, Some(Change::Presentation));
    assert_eq!(
        written_revisions(&decision),
        [("validation", "3".to_owned()), ("presentation", tp("G").to_string())]
    );
    let Effect::PublishPresentation(secret) = &decision.effects[1] else {
        unreachable!()
    };
    assert_eq!(
        secret.annotations()[REVISION_ANNOTATION],
        "3",
        "presented since revision 3"
    );
    assert_eq!(
        secret.data.as_ref().unwrap()["tls.crt"],
        ByteString(format!("crt of {}", tp("G")).into_bytes())
    );
}

#[test]
fn an_interrupted_presentation_write_is_finished_from_the_configmap() {
    // Revision 3 (present G) reached the ConfigMap; the operator stopped
    // before the Secret was written.
    let mut r3 = revision(3, "G", Accepted::new([tp("Old"), tp("G")], []));
    r3.stage = Some(Stage::AddSecondary);
    let mut c = case(by_name_spec("0s")).published(r3);
    c.presentation = Some(Arc::new(c.secret_presenting(&tp("Old"), 1)));
    c.members.pods = pods(&[Some(2)]);
    let decision = c.decide();
    assert_eq!(decision.published, None, "members have not loaded revision 3");
    assert_eq!(written_revisions(&decision), [("presentation", tp("G").to_string())]);
    c.apply(&decision);
    assert!(c.decide().effects.is_empty(), "repaired once");
}

#[test]
fn nothing_is_published_until_every_member_acknowledged() {
    let mut c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(1), Some(0)]);
    let decision = c.decide();
    assert_eq!(decision.published, None);
    assert!(decision.effects.is_empty());
    let status = decision.status.expect("status");
    let report = status.members.clone().unwrap();
    assert_eq!(
        (report.total, report.converged, report.laggards),
        (2, 1, vec!["pod/m1".to_owned()])
    );
    assert_eq!(condition(&status, PROGRESSING), ("True", "WaitingForMembers"));
    assert_eq!(condition(&status, MEMBERS_CONVERGED), ("False", "WaitingForMembers"));
    assert_eq!(
        decision.requeue,
        Requeue::After(Duration::from_secs(601)),
        "until stageTimeout"
    );
    c.members.pods = pods(&[Some(1), Some(1)]);
    assert!(c.decide().published.is_some());
}

#[test]
fn the_look_after_a_publication_finds_nothing_to_write() {
    let mut c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(1)]);
    let publication = c.decide();
    assert_eq!(publication.published.as_ref().map(|r| r.revision), Some(2));
    c.apply(&publication);
    // The member has not loaded revision 2 yet; the outputs read back say
    // what the publication wrote.
    let again = c.decide();
    assert_eq!(
        again.status, None,
        "the status written with the publication still holds"
    );
    assert!(again.effects.is_empty() && again.events.is_empty());
}

#[test]
fn min_soak_counts_from_the_acknowledgement() {
    let mut c = case(by_name_spec("30s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(1)]);
    let first = c.decide();
    assert_eq!(first.published, None, "just acknowledged: soaking");
    let status = c.status(&first);
    assert_eq!(status.upgrade.as_ref().unwrap().acknowledged_time, Some(c.now));
    assert_eq!(condition(&status, PROGRESSING).1, "Soaking");
    assert_eq!(first.requeue, Requeue::After(Duration::from_secs(31)));
    c.apply(&first);
    c.now = ts("2026-06-01T00:00:29Z");
    assert_eq!(c.decide().published, None);
    c.now = ts("2026-06-01T00:00:30Z");
    assert_eq!(c.decide().published.map(|r| r.revision), Some(2));
}

#[test]
fn a_stuck_first_stage_times_out_with_nothing_to_roll_back() {
    let mut c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(0)]);
    let first = c.decide();
    c.apply(&first);
    c.now = ts("2026-06-01T00:10:01Z");
    let decision = c.decide();
    assert_eq!(decision.published, None);
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "StageTimeout"));
    assert_eq!(status.effective.unwrap().revision, 1, "nothing rolled back");
    assert!(
        decision
            .events
            .iter()
            .any(|e| e.type_ == EventType::Warning && e.reason == "StageTimeout")
    );
}

/// The timeout names the members that have not acknowledged, and what
/// their agents say of it (a reload that fails), a few of them.
#[test]
fn a_stage_timeout_names_the_members_and_why_they_have_not_loaded() {
    let mut c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(0), Some(0), Some(1), Some(0), Some(0), Some(0)]);
    c.members.pod_health.insert(
        "pod/m1".to_owned(),
        crate::outputs::ReportedHealth {
            revision: 1,
            healthy: false,
            reason: "ReloadFailed".to_owned(),
            message: "revision 1: \"/etc/reload/reload.sh\" exited with exit status: 1".to_owned(),
        },
    );
    let first = c.decide();
    c.apply(&first);
    c.now = ts("2026-06-01T00:10:01Z");
    let status = c.status(&c.decide());
    let message = condition_message(&status, BLOCKED);
    assert!(
        message.contains(
            "5 of 6 members have not acknowledged it within stageTimeout (10m): pod/m0, \
             pod/m1 (ReloadFailed: revision 1: \"/etc/reload/reload.sh\" exited with exit status: 1), pod/m3 \
             and 2 more; held at revision 1"
        ),
        "{message}"
    );
}

#[test]
fn paused_holds_the_next_revision() {
    let mut spec = by_name_spec("0s");
    spec.upgrade.as_mut().unwrap().paused = true;
    let c = case(spec).published(revision(1, "Old", thumbprint_rules()));
    let decision = c.decide();
    assert_eq!(decision.published, None);
    let status = decision.status.expect("status");
    assert_eq!(condition(&status, PROGRESSING), ("False", "Paused"));
    assert_eq!(condition(&status, READY), ("False", "Paused"));
}

#[test]
fn an_invalid_spec_publishes_nothing_and_waits_for_an_edit() {
    let mut spec = by_thumbprint_spec();
    spec.certificate.as_mut().unwrap().thumbprint = "not hex".into();
    let decision = case(spec).decide();
    assert_eq!((decision.published.as_ref(), decision.effects.len()), (None, 0));
    let status = decision.status.expect("status");
    assert_eq!(condition(&status, BLOCKED), ("True", "InvalidThumbprint"));
    assert_eq!(condition(&status, READY), ("False", "InvalidThumbprint"));
    let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
    assert!(
        ready.message.starts_with("spec.certificate.thumbprint:"),
        "{}",
        ready.message
    );
    assert_eq!(status.effective, None);
    assert_eq!(decision.requeue, Requeue::AwaitChange);
}

#[test]
fn an_unknown_workload_kind_is_invalid_members() {
    let mut spec = by_thumbprint_spec();
    spec.members = Some(Members {
        workloads: vec![WorkloadReference {
            kind: "ReplicaSet".into(),
            name: "m".into(),
        }],
        ..Members::default()
    });
    let decision = case(spec).decide();
    let status = decision.status.expect("status");
    assert_eq!(condition(&status, BLOCKED), ("True", "InvalidMembers"));
    let blocked = status.conditions.iter().find(|c| c.type_ == BLOCKED).unwrap();
    assert!(
        blocked.message.starts_with("spec.members.workloads[0].kind:"),
        "{}",
        blocked.message
    );
    assert!(decision.effects.is_empty());
    assert_eq!(decision.requeue, Requeue::AwaitChange);
}

fn pkcs12_spec() -> ClusterCertificateDeclarationSpec {
    ClusterCertificateDeclarationSpec {
        output: Some(OutputSpec {
            formats: vec![OutputFormat::Pkcs12],
            pkcs12: Some(Pkcs12Output {
                password_secret_ref: KeySelector {
                    name: "pfx".into(),
                    key: None,
                },
            }),
            templates: Vec::new(),
        }),
        ..by_thumbprint_spec()
    }
}

#[test]
fn a_missing_pkcs12_password_is_invalid_output_naming_the_field() {
    let c = case(pkcs12_spec());
    let status = c.status(&c.decide());
    assert_eq!(condition(&status, BLOCKED), ("True", "InvalidOutput"));
    let message = &status.conditions.iter().find(|c| c.type_ == BLOCKED).unwrap().message;
    assert_eq!(
        message,
        "spec.output.pkcs12.passwordSecretRef: Secret default/pfx does not exist"
    );
    let mut c = case(pkcs12_spec());
    c.password = Some(Arc::new(Secret {
        data: Some(BTreeMap::from([("other".to_owned(), ByteString(b"x".to_vec()))])),
        ..Secret::default()
    }));
    let decision = c.decide();
    let status = c.status(&decision);
    let message = &status.conditions.iter().find(|c| c.type_ == BLOCKED).unwrap().message;
    assert!(message.ends_with("has no key \"password\""), "{message}");
    assert!(decision.effects.is_empty(), "nothing published");
    assert_eq!(
        decision.requeue,
        Requeue::After(RESYNC),
        "the Secret can appear without a spec edit"
    );
}

#[test]
fn an_output_that_cannot_be_formatted_is_invalid_output() {
    // The fake material is no PEM: the PKCS12 file cannot be made from it.
    let mut c = case(pkcs12_spec());
    c.password = Some(Arc::new(Secret {
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(b"s3cret\n".to_vec()),
        )])),
        ..Secret::default()
    }));
    let decision = c.decide();
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "InvalidOutput"));
    let message = &status.conditions.iter().find(|c| c.type_ == BLOCKED).unwrap().message;
    assert!(message.starts_with("spec.output.formats:"), "{message}");
    assert!(decision.effects.is_empty() && decision.published.is_none());
}

#[test]
fn a_template_that_fails_to_render_is_invalid_template() {
    let mut spec = by_thumbprint_spec();
    spec.output = Some(OutputSpec {
        templates: vec![crate::crd::ConfigTemplate {
            key: "app.json".into(),
            template: "{{ presented.thumbprint | int }}".into(),
        }],
        ..OutputSpec::default()
    });
    let c = case(spec);
    let decision = c.decide();
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "InvalidTemplate"));
    let message = &status.conditions.iter().find(|c| c.type_ == BLOCKED).unwrap().message;
    assert!(
        message.starts_with("spec.output.templates: template \"app.json\""),
        "{message}"
    );
    assert!(decision.effects.is_empty() && decision.published.is_none());
}

#[test]
fn outputs_someone_else_owns_are_never_written() {
    let mut c = case(by_thumbprint_spec());
    c.validation = Some(Arc::new(ConfigMap {
        metadata: ObjectMeta {
            name: Some("cluster-validation".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }));
    let decision = c.decide();
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "SecretOwnedElsewhere"));
    assert!(decision.effects.is_empty() && decision.published.is_none());
}

#[test]
fn workloads_are_stamped_with_the_revision_in_force_once() {
    let mut spec = by_thumbprint_spec();
    let reference = WorkloadReference {
        kind: "Deployment".into(),
        name: "app".into(),
    };
    spec.members = Some(Members {
        workloads: vec![reference.clone()],
        ..Members::default()
    });
    let deployment = |stamped: u64| {
        let json = serde_json::json!({
            "metadata": {"name": "app", "generation": 1},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": {"certshift.io/revision": stamped.to_string()}}}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
        });
        Workload::Deployment(serde_json::from_value(json).unwrap())
    };
    let mut c = case(spec).published(revision(2, "Old", thumbprint_rules()));
    c.members.workloads = vec![(reference.clone(), Some(deployment(1)))];
    let decision = c.decide();
    assert_eq!(written_revisions(&decision), [("stamp", "app=2".to_owned())]);
    c.members.workloads = vec![(reference.clone(), Some(deployment(2)))];
    assert!(c.decide().effects.is_empty(), "already stamped: no write");
    c.members.workloads = vec![(reference, None)];
    assert!(
        c.decide().effects.is_empty(),
        "a missing workload is a laggard, not a write"
    );
}

fn endpoint_case() -> Case {
    let mut r2 = revision(2, "Old", Accepted::new([tp("Old"), tp("G")], []));
    r2.stage = Some(Stage::AddSecondary);
    let mut spec = by_name_spec("0s");
    spec.members = Some(Members {
        endpoints: vec![Endpoint {
            address: "10.0.0.1:443".into(),
            ..Endpoint::default()
        }],
        ..Members::default()
    });
    let mut c = case(spec).published(r2);
    c.members.endpoints = vec![("10.0.0.1:443".into(), Ok(tp("Old")))];
    c
}

#[test]
fn the_preflight_is_asked_for_a_presentation_revision_with_endpoints_only() {
    let c = endpoint_case();
    let asked = preflight(&c.world()).expect("revision 3 presents G");
    assert_eq!((asked.revision, &asked.presented), (3, &tp("G")));
    assert_eq!(asked.material.tls_crt, format!("crt of {}", tp("G")));
    // A validation revision is not probed.
    let c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    assert_eq!(preflight(&c.world()), None);
    // Without endpoints there is no one to probe.
    let mut c = endpoint_case();
    c.members.endpoints.clear();
    assert_eq!(preflight(&c.world()), None);
}

#[test]
fn a_presentation_revision_is_not_published_without_its_preflight() {
    let c = endpoint_case();
    let decision = c.decide();
    assert_eq!(decision.published, None);
    assert!(decision.effects.is_empty());
    assert_eq!(decision.requeue, Requeue::After(ENDPOINT_PROBE_INTERVAL));
}

#[test]
fn an_endpoint_that_refuses_the_next_certificate_blocks_it() {
    let mut c = endpoint_case();
    c.preflight = Some(vec![("10.0.0.1:443".into(), Err("alert: bad certificate".into()))]);
    let decision = c.decide();
    assert_eq!(decision.published, None);
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "PeerRejectsCertificate"));
    let message = &status.conditions.iter().find(|c| c.type_ == BLOCKED).unwrap().message;
    assert_eq!(
        message,
        &format!(
            "endpoint 10.0.0.1:443 does not accept {} as a client: alert: bad certificate",
            tp("G")
        )
    );
    assert_eq!(decision.requeue, Requeue::After(PEER_RETRY));
    c.preflight = Some(vec![("10.0.0.1:443".into(), Ok(()))]);
    let decision = c.decide();
    assert_eq!(decision.published.map(|r| r.revision), Some(3));
    assert_eq!(
        decision.requeue,
        Requeue::After(ENDPOINT_PROBE_INTERVAL),
        "the endpoint must be probed again until it presents G"
    );
}

#[test]
fn deciding_again_on_an_unchanged_world_changes_nothing() {
    let mut c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(0)]);
    let first = c.decide();
    c.apply(&first);
    c.now = ts("2026-06-01T00:05:00Z");
    let again = c.decide();
    assert_eq!(again.status, None, "no status write");
    assert!(again.events.is_empty(), "no events without transitions");
    assert!(again.effects.is_empty(), "no writes");
}

/// The whole conversion with one member acknowledging each revision: the
/// writes and events per revision the benchmark counts, decided here.
#[test]
fn a_conversion_writes_each_revision_once_and_tells_each_completed_stage_once() {
    let mut c = case(by_thumbprint_spec());
    c.members.pods = pods(&[None]);
    for _ in 0..3 {
        let decision = c.decide();
        c.apply(&decision);
        c.members.pods = pods(&[decision.published.map(|r| r.revision).or(c.members.pods[0].1)]);
    }
    c.apply(&c.decide());
    assert_eq!(condition(c.declaration.status.as_ref().unwrap(), READY).0, "True");

    c.declaration.spec = by_name_spec("0s");
    c.declaration.metadata.generation = Some(3);
    let (mut statuses, mut validations, mut presentations, mut events) = (0, 0, 0, Vec::new());
    let mut stages = Vec::new();
    for _ in 0..20 {
        let decision = c.decide();
        statuses += usize::from(decision.status.is_some());
        for effect in &decision.effects {
            match effect {
                Effect::PublishValidation(_) => validations += 1,
                Effect::PublishPresentation(_) => presentations += 1,
                Effect::StampWorkload { .. } => {}
            }
        }
        events.extend(decision.events.iter().map(|e| e.reason.clone()));
        if let Some(published) = &decision.published {
            stages.push(published.stage);
        }
        c.apply(&decision);
        // The member loads whatever is published, before the next look.
        let published = c
            .validation
            .as_ref()
            .map(|m| m.annotations()[REVISION_ANNOTATION].parse().unwrap());
        c.members.pods = pods(&[published]);
    }
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(condition(&status, READY), ("True", "Ready"));
    assert_eq!(status.declared_by.as_deref(), Some("CommonName"));
    assert_eq!(
        stages,
        [
            Some(Stage::AddSecondary),
            Some(Stage::AddSecondary),
            Some(Stage::SwitchToCommonName),
            Some(Stage::SwitchToCommonName),
            Some(Stage::PinIssuers)
        ]
    );
    assert_eq!(
        (validations, presentations),
        (5, 1),
        "the Secret changes with the certificate only"
    );
    assert_eq!(statuses, 6, "one status per revision, and Ready");
    assert_eq!(events, [SECONDARY_ADDED, DECLARATION_SWITCHED, READY]);
}

#[test]
fn a_renewal_by_common_name_is_a_rollover_told_once() {
    let pinned = Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA")])]);
    let mut c = case(by_name_spec("0s")).published(revision(6, "G", pinned));
    c.members.pods = pods(&[Some(6)]);
    c.apply(&c.decide());
    let mut renewed = instances();
    renewed.push(
        facts("G2")
            .cn("cluster.example")
            .issuer("CA")
            .valid("2026-05-01T00:00:00Z", "2027-09-01T00:00:00Z")
            .build(),
    );
    c.store = Ok(contents(renewed));
    let decision = c.decide();
    let published = decision.published.clone().expect("rollover");
    assert_eq!(
        (published.stage, &published.presented),
        (Some(Stage::Rollover), &tp("G2"))
    );
    assert!(decision.events.is_empty());
    c.apply(&decision);
    c.members.pods = pods(&[Some(7)]);
    let done = c.decide();
    assert_eq!(done.events.len(), 1);
    assert_eq!(done.events[0].reason, "Rollover");
    assert!(
        done.events[0].message.contains(tp("G2").as_str()),
        "{}",
        done.events[0].message
    );
}

#[test]
fn a_settled_conversion_reports_its_milestones() {
    let c = case(by_name_spec("0s")).published(revision(
        6,
        "G",
        Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA")])]),
    ));
    let decision = c.decide();
    assert_eq!(decision.published, None);
    let status = c.status(&decision);
    for milestone in [SECONDARY_ADDED, DECLARATION_SWITCHED, ISSUERS_PINNED, READY] {
        assert_eq!(condition(&status, milestone).0, "True", "{milestone}");
    }
    assert_eq!(status.declared_by.as_deref(), Some("CommonName"));
    let presenting = status.presenting.unwrap();
    assert_eq!(
        (presenting.short_thumbprint.len(), presenting.common_name.as_deref()),
        (8, Some("cluster.example"))
    );
    assert_eq!(decision.requeue, Requeue::After(RESYNC));
}

#[test]
fn the_effective_declaration_keeps_the_service_fabric_shape() {
    let revision = revision(
        3,
        "G",
        Accepted::new([tp("Old"), tp("G")], [CommonNameRule::new("x", [tp("CA")])]),
    );
    let effective = effective_declaration(&revision);
    let certificate = effective.certificate.unwrap();
    assert_eq!(
        certificate.thumbprint,
        tp("G").to_string(),
        "the presented one is primary"
    );
    assert_eq!(certificate.thumbprint_secondary, Some(tp("Old").to_string()));
    let names = effective.certificate_common_names.unwrap().common_names;
    assert_eq!(names[0].certificate_issuer_thumbprint, tp("CA").to_string());
    let parsed = crate::planner::effective_from_status(&effective_declaration(&revision)).unwrap();
    assert_eq!(
        (parsed.accepted, parsed.presented),
        (revision.accepted, Some(revision.presented))
    );
}

#[test]
fn a_spec_change_mid_upgrade_replans_from_what_is_published() {
    // Revision 3 of the conversion is out (both thumbprints accepted, G
    // presented); the owner reverts the spec to the old thumbprint.
    let c = case(by_thumbprint_spec()).published(revision(3, "G", Accepted::new([tp("Old"), tp("G")], [])));
    let decision = c.decide();
    let next = decision.published.clone().expect("the revert is planned");
    assert_eq!(next.revision, 4, "numbering continues");
    assert_eq!((next.change, &next.presented), (Some(Change::Presentation), &tp("Old")));
    let plan = c.status(&decision).upgrade.unwrap().plan;
    assert_eq!(plan.last().map(|p| p.stage), Some(Some(Stage::NarrowValidation)));
}

#[test]
fn san_overlap_names_both_certificates_once() {
    let narrow = facts("A").cn("api.example").dns("api.example").build();
    let wide = facts("B")
        .cn("cluster.example")
        .dns("cluster.example")
        .dns("API.example")
        .build();
    let unrelated = facts("C").cn("other.example").dns("other.example").build();
    let renewal = facts("D").cn("api.example").dns("api.example").build(); // same CN: no hazard
    let decided = san_overlap(&[narrow.clone(), wide.clone(), unrelated.clone(), renewal.clone()]);
    assert!(decided.status);
    assert_eq!(decided.reason, SAN_OVERLAP);
    assert!(decided.message.contains(&format!(
        "the SANs of {} (CN api.example) are all in {}",
        narrow.thumbprint, wide.thumbprint
    )));
    assert!(decided.message.contains(&format!(
        "the SANs of {} (CN api.example) are all in {}",
        renewal.thumbprint, wide.thumbprint
    )));
    assert_eq!(decided.message.matches("are all in").count(), 2);
    assert!(!san_overlap(&[narrow, unrelated, renewal]).status);
}

#[test]
fn a_san_overlap_in_the_store_is_a_warning() {
    let mut c = case(by_thumbprint_spec()).published(revision(1, "Old", thumbprint_rules()));
    let clean = c.status(&c.decide());
    assert_eq!(condition(&clean, SAN_OVERLAP), ("False", "NoOverlap"));
    let mut overlapping = instances();
    overlapping.push(facts("X").cn("x.example").dns("x.example").build());
    overlapping.push(facts("Y").cn("y.example").dns("x.example").dns("y.example").build());
    c.store = Ok(contents(overlapping));
    let decision = c.decide();
    assert_eq!(condition(&c.status(&decision), SAN_OVERLAP), ("True", "SanOverlap"));
    assert!(
        decision
            .events
            .iter()
            .any(|e| e.type_ == EventType::Warning && e.reason == "SanOverlap")
    );
}

/// The Kubernetes cases of the malformed-input catalogue, at the declaration:
/// a source Secret deleted or replaced by something unreadable mid-stage (the
/// store reports `StoreNotSynced`). Each holds the stage: nothing is
/// published, one status, then no further write.
#[test]
fn an_unreadable_store_mid_upgrade_holds_the_stage() {
    for reason in [
        "SecretNotFound",
        "MalformedCertificate",
        "UnexpectedSecretType",
        "MissingKey",
    ] {
        let mut c = case(by_name_spec("0s")).published(revision(2, "Old", Accepted::new([tp("Old"), tp("G")], [])));
        c.store = Err(Blocked::new(
            BlockReason::StoreNotSynced,
            format!("ObservedCertificate store cannot read its source ({reason})"),
        ));
        let first = c.decide();
        assert_eq!(first.published, None, "{reason}: nothing published");
        assert!(first.effects.is_empty(), "{reason}: no writes");
        assert_eq!(condition(&c.status(&first), BLOCKED), ("True", "StoreNotSynced"));
        c.apply(&first);
        c.now = ts("2026-06-01T00:05:00Z");
        let again = c.decide();
        assert_eq!(again.status, None, "{reason}: one status write");
        assert_eq!((again.published, again.events.len()), (None, 0), "{reason}");
    }
}

#[test]
fn a_defective_goal_blocks_with_the_defect() {
    let mut c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    c.store = Ok(contents(vec![
        instances()[0].clone(),
        facts("G")
            .cn("cluster.example")
            .issuer("CA")
            .rsa(1024)
            .valid("2026-03-01T00:00:00Z", "2027-06-01T00:00:00Z")
            .build(),
    ]));
    let decision = c.decide();
    assert_eq!(decision.published, None);
    assert_eq!(condition(&c.status(&decision), BLOCKED), ("True", "KeyTooWeak"));
}

#[test]
fn formats_added_later_without_a_password_block_the_declaration_in_force() {
    let mut c = case(pkcs12_spec()).published(revision(1, "Old", thumbprint_rules()));
    c.declaration.status = Some(c.decide().status.unwrap_or_default());
    let decision = c.decide();
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "InvalidOutput"));
    assert!(decision.effects.is_empty());
    assert_eq!(
        decision.requeue,
        Requeue::After(RESYNC),
        "something is in force: expiry stays watched"
    );
}

#[test]
fn a_presentation_revision_without_key_material_says_so_and_does_not_wait() {
    let mut c = endpoint_case();
    c.store.as_mut().unwrap().materials.remove(&tp("G"));
    assert_eq!(preflight(&c.world()), None, "nothing to probe with");
    let decision = c.decide();
    assert_eq!(condition(&c.status(&decision), BLOCKED), ("True", "PrivateKeyMissing"));
    assert_eq!(decision.published, None);
}

#[test]
fn a_member_that_comes_later_neither_repeats_the_completion_nor_is_skipped() {
    let mut c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(1)]);
    let publication = c.decide();
    c.apply(&publication);
    c.members.pods = pods(&[Some(2)]);
    let completed = c.decide();
    assert_eq!(
        completed.events.len(),
        0,
        "revision 2 completes no stage (AddSecondary goes on)"
    );
    assert_eq!(completed.published.as_ref().map(|r| r.revision), Some(3));
    c.apply(&completed);
    c.members.pods = pods(&[Some(3)]);
    let stage = c.decide();
    assert_eq!(
        stage.events.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
        [SECONDARY_ADDED]
    );
    // Paused after revision 3, so the acknowledgement is what is recorded.
    c.declaration.spec.upgrade.as_mut().unwrap().paused = true;
    let paused = c.decide();
    c.apply(&paused);
    assert!(c.status(&paused).upgrade.unwrap().acknowledged_time.is_some());
    // A new pod starts before it has loaded revision 3.
    c.members.pods = pods(&[Some(3), None]);
    let lagging = c.decide();
    assert!(lagging.events.is_empty(), "no second completion");
    assert!(c.status(&lagging).upgrade.unwrap().acknowledged_time.is_some(), "kept");
    c.apply(&lagging);
    c.declaration.spec.upgrade.as_mut().unwrap().paused = false;
    assert_eq!(c.decide().published, None, "the next revision waits for the new pod");
    c.members.pods = pods(&[Some(3), Some(3)]);
    let caught_up = c.decide();
    assert!(caught_up.events.is_empty());
    assert_eq!(caught_up.published.map(|r| r.revision), Some(4));
}

#[test]
fn a_lost_configmap_republishes_what_is_in_force_not_the_desired_state() {
    // Revision 3 of the conversion is in force; its ConfigMap is deleted.
    let mut r3 = revision(3, "G", Accepted::new([tp("Old"), tp("G")], []));
    r3.stage = Some(Stage::AddSecondary);
    let mut c = case(by_name_spec("0s")).published(r3);
    c.members.pods = pods(&[Some(2)]);
    c.apply(&c.decide());
    c.validation = None;
    let decision = c.decide();
    let republished = decision.published.clone().expect("republished");
    assert_eq!(republished.revision, 4, "numbered on");
    assert_eq!(
        (&republished.presented, &republished.accepted),
        (&tp("G"), &Accepted::new([tp("Old"), tp("G")], [])),
        "what was in force, not the desired declaration by common name"
    );
}

#[test]
fn a_validation_configmap_over_the_api_limit_is_invalid_output() {
    // The pinned issuer's certificate goes into ca-bundle.crt.
    let mut c = case(by_name_spec("0s"));
    let bundle = "x".repeat(CONFIG_MAP_LIMIT);
    c.store.as_mut().unwrap().authorities.insert(tp("CA"), bundle);
    let decision = c.decide();
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "InvalidOutput"));
    assert!(decision.effects.is_empty() && decision.published.is_none());
}

#[test]
fn the_pkcs12_file_follows_its_password_and_its_format() {
    use crate::testing::cert;
    let ca = cert("Issuing CA").ca().self_signed();
    let leaf = cert("old").signed_by(&ca);
    let mut c = case(pkcs12_spec());
    let mut store = contents(instances());
    store.materials.insert(
        tp("Old"),
        PresentedMaterial {
            tls_crt: format!("{}{}", leaf.pem, ca.pem),
            tls_key: leaf.key_pem(),
            ca_crt: ca.pem.clone(),
        },
    );
    c.store = Ok(store);
    let password = |p: &str| {
        Some(Arc::new(Secret {
            data: Some(BTreeMap::from([(
                "password".to_owned(),
                ByteString(p.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }))
    };
    c.password = password("one");
    let first = c.decide();
    c.apply(&first);
    let pfx = |c: &Case| {
        c.presentation
            .as_ref()
            .unwrap()
            .data
            .as_ref()
            .unwrap()
            .get("tls.pfx")
            .cloned()
    };
    let written = pfx(&c).expect("tls.pfx");
    assert!(c.decide().effects.is_empty(), "the salted file is kept");
    c.password = password("two");
    let rotated = c.decide();
    assert_eq!(written_revisions(&rotated), [("presentation", tp("Old").to_string())]);
    c.apply(&rotated);
    assert_ne!(pfx(&c), Some(written), "a new password makes a new file");
    assert!(c.decide().effects.is_empty());
    c.declaration.spec.output.as_mut().unwrap().formats = vec![OutputFormat::Der];
    let without = c.decide();
    c.apply(&without);
    assert_eq!(pfx(&c), None, "PKCS12 no longer asked for");
    assert!(
        c.presentation
            .as_ref()
            .unwrap()
            .data
            .as_ref()
            .unwrap()
            .contains_key("tls.cer")
    );
}

#[test]
fn formats_that_cannot_be_made_for_the_revision_in_force_block_it() {
    // Revision 1 is in force; PKCS12 is then asked for, and the material
    // (fake PEM here) cannot be encoded: the repair of the Secret says so.
    let mut c = case(by_thumbprint_spec()).published(revision(1, "Old", thumbprint_rules()));
    c.apply(&c.decide());
    c.declaration.spec = pkcs12_spec();
    c.password = Some(Arc::new(Secret {
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(b"s3cret".to_vec()),
        )])),
        ..Secret::default()
    }));
    let decision = c.decide();
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "InvalidOutput"));
    let message = &status.conditions.iter().find(|c| c.type_ == BLOCKED).unwrap().message;
    assert!(message.starts_with("spec.output.formats:"), "{message}");
    assert!(decision.effects.is_empty());
}

#[test]
fn a_missing_password_for_the_revision_in_force_is_named_and_keeps_the_milestones() {
    // The conversion is done; then PKCS12 is asked for with no password Secret.
    let pinned = Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA")])]);
    let mut c = case(by_name_spec("0s")).published(revision(6, "G", pinned));
    c.apply(&c.decide());
    c.declaration.spec.output = pkcs12_spec().output;
    let decision = c.decide();
    let status = c.status(&decision);
    let blocked = status.conditions.iter().find(|c| c.type_ == BLOCKED).unwrap();
    assert_eq!(
        blocked.message,
        "spec.output.pkcs12.passwordSecretRef: Secret default/pfx does not exist"
    );
    assert!(decision.effects.is_empty(), "nothing written");
    for milestone in [SECONDARY_ADDED, DECLARATION_SWITCHED, ISSUERS_PINNED] {
        assert_eq!(condition(&status, milestone).0, "True", "{milestone} stays");
    }
}

/// A new spec after a finished upgrade: the first revision of the new
/// upgrade soaks from its own acknowledgement, not the last one's.
#[test]
fn a_new_upgrade_after_ready_soaks_each_revision_from_its_own_acknowledgement() {
    let mut c = case(by_thumbprint_spec()).published(revision(1, "Old", thumbprint_rules()));
    c.declaration.spec.upgrade = Some(UpgradePolicy {
        min_soak: Some("5s".into()),
        stage_timeout: Some("10m".into()),
        ..Default::default()
    });
    c.members.pods = pods(&[Some(1)]);
    let ready = c.decide();
    c.apply(&ready);
    assert!(c.status(&ready).upgrade.unwrap().acknowledged_time.is_some());
    // Long after: the declaration changes to common names.
    c.now = ts("2026-06-01T01:00:00Z");
    c.declaration.spec = ClusterCertificateDeclarationSpec {
        upgrade: c.declaration.spec.upgrade.clone(),
        ..by_name_spec("5s")
    };
    c.declaration.metadata.generation = Some(3);
    let first = c.decide();
    assert_eq!(first.published.as_ref().map(|r| r.revision), Some(2), "soaked long ago");
    assert_eq!(c.status(&first).upgrade.unwrap().acknowledged_time, None);
    c.apply(&first);
    // The member loads revision 2 at once: revision 3 waits out minSoak.
    c.now = ts("2026-06-01T01:00:01Z");
    c.members.pods = pods(&[Some(2)]);
    let acknowledged = c.decide();
    assert_eq!(
        acknowledged.published, None,
        "revision 2 soaks 5s from its acknowledgement"
    );
    assert_eq!(c.status(&acknowledged).upgrade.unwrap().acknowledged_time, Some(c.now));
    c.apply(&acknowledged);
    c.now = ts("2026-06-01T01:00:06Z");
    assert_eq!(c.decide().published.map(|r| r.revision), Some(3));
}

/// An acknowledgement time older than the revision's publication (left by a
/// write that did not clear it) is not this revision's: the soak starts when
/// the members acknowledge it.
#[test]
fn a_stale_acknowledgement_time_does_not_shorten_the_soak() {
    let mut c = case(by_name_spec("5s")).published(revision(2, "Old", thumbprint_rules()));
    c.declaration.status = Some(ClusterCertificateDeclarationStatus {
        upgrade: Some(UpgradeStatus {
            revision: 2,
            published_time: Some(ts("2026-06-01T00:00:00Z")),
            acknowledged_time: Some(ts("2026-05-31T23:59:00Z")),
            ..Default::default()
        }),
        ..Default::default()
    });
    c.now = ts("2026-06-01T00:00:01Z");
    c.members.pods = pods(&[Some(2)]);
    let decision = c.decide();
    assert_eq!(decision.published, None, "revision 2 was acknowledged just now");
    assert_eq!(c.status(&decision).upgrade.unwrap().acknowledged_time, Some(c.now));
}

/// kstatus (Flux, cli-utils) over the status `decide` writes, in each state a
/// declaration can be in: what a GitOps tool waiting on it would report.
#[test]
fn kstatus_reads_each_state_as_flux_should_report_it() {
    use crate::kstatus::Status;
    fn read(c: &Case, decision: &Decision) -> (Status, String) {
        crate::kstatus::of(&ClusterCertificateDeclaration {
            status: Some(c.status(decision)),
            ..c.declaration.clone()
        })
    }
    let settle = |mut c: Case| {
        for _ in 0..5 {
            let decision = c.decide();
            c.apply(&decision);
        }
        c
    };
    let mut rows: Vec<(&str, Case, Status)> = Vec::new();

    // The first reconcile of a new declaration whose members have not loaded revision 1.
    let mut new = case(by_thumbprint_spec());
    new.members.pods = pods(&[None]);
    rows.push(("new object", new, Status::InProgress));
    let mut stale = settle(case(by_thumbprint_spec()));
    stale.declaration.metadata.generation = Some(3);
    rows.push(("stale generation", stale, Status::InProgress));
    let mut mid = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    mid.members.pods = pods(&[Some(1), Some(0)]);
    rows.push(("mid-upgrade", mid, Status::InProgress));
    let mut soaking = case(by_name_spec("30s")).published(revision(1, "Old", thumbprint_rules()));
    soaking.members.pods = pods(&[Some(1)]);
    rows.push(("soaking", soaking, Status::InProgress));
    let mut spec = by_name_spec("0s");
    spec.upgrade.as_mut().unwrap().paused = true;
    // Paused by the spec: held where the user asked, not failing (Argo CD: Suspended).
    rows.push((
        "paused",
        case(spec).published(revision(1, "Old", thumbprint_rules())),
        Status::Current,
    ));
    let mut spec = by_thumbprint_spec();
    spec.certificate.as_mut().unwrap().thumbprint = "not hex".into();
    rows.push(("blocked for a person: invalid spec", case(spec), Status::Failed));
    let mut timeout = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    timeout.members.pods = pods(&[Some(0)]);
    let first = timeout.decide();
    timeout.apply(&first);
    timeout.now = ts("2026-06-01T00:10:01Z");
    rows.push(("blocked for a person: StageTimeout", timeout, Status::Failed));
    let mut syncing = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    syncing.store = Err(Blocked::new(
        BlockReason::StoreNotSynced,
        "ObservedCertificate store has not read its source yet",
    ));
    let mut stuck = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    stuck.store = syncing.store.clone();
    syncing.declaration.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(syncing.now));
    rows.push((
        "transient block: store syncing just after creation",
        syncing,
        Status::InProgress,
    ));
    // Created long ago (no creationTimestamp here): still not synced needs a look.
    rows.push(("store not synced after the grace period", stuck, Status::Failed));
    let mut not_yet = case(by_thumbprint_spec());
    not_yet.store = Err(Blocked::new(
        BlockReason::CertificateNotYetValid,
        "notBefore=2026-07-01T00:00:00Z",
    ));
    rows.push((
        "a certificate not yet valid: time clears it",
        not_yet,
        Status::InProgress,
    ));
    rows.push(("done", settle(case(by_thumbprint_spec())), Status::Current));
    // Monitored upgrades, each state as a walk reaches it (the member
    // refuses the new certificate's handshakes from its presentation on).
    let step_until = |mut c: Case, reached: &dyn Fn(&ClusterCertificateDeclarationStatus) -> bool| {
        for _ in 0..40 {
            walk(&mut c, 1, true);
            if c.declaration.status.as_ref().is_some_and(reached) {
                return c;
            }
        }
        panic!("never reached");
    };
    let health_state = |state: &'static str| {
        move |s: &ClusterCertificateDeclarationStatus| {
            s.upgrade
                .as_ref()
                .and_then(|u| u.health.as_ref())
                .is_some_and(|h| h.state == state)
        }
    };
    let retrying = step_until(
        rollback_case(crate::crd::FailureAction::Manual),
        &health_state("Retrying"),
    );
    rows.push(("health check retrying", retrying, Status::InProgress));
    let mut held = rollback_case(crate::crd::FailureAction::Manual);
    walk(&mut held, 30, true);
    rows.push(("health check failed, held for a person", held, Status::Failed));
    let rolling_back = |s: &ClusterCertificateDeclarationStatus| {
        s.upgrade
            .as_ref()
            .and_then(|u| u.rollback.as_ref())
            .is_some_and(|r| r.state == "RollingBack")
    };
    let mut rolling = step_until(rollback_case(crate::crd::FailureAction::Rollback), &rolling_back);
    // Its member has not loaded the revision back yet.
    let back = rolling
        .declaration
        .status
        .as_ref()
        .unwrap()
        .upgrade
        .as_ref()
        .unwrap()
        .revision;
    rolling.members.pods = pods(&[Some(back - 1)]);
    rows.push(("rolling back", rolling, Status::InProgress));
    let mut rolled = rollback_case(crate::crd::FailureAction::Rollback);
    walk(&mut rolled, 30, true);
    rows.push(("rolled back", rolled, Status::Failed));
    let presenting_new = |s: &ClusterCertificateDeclarationStatus| s.upgrade.as_ref().is_some_and(|u| u.revision >= 3);
    let mut impossible = step_until(rollback_case(crate::crd::FailureAction::Rollback), &presenting_new);
    let mut contents = impossible.store.clone().unwrap();
    contents.store.instances.retain(|f| !f.has_thumbprint(&tp("Old")));
    impossible.store = Ok(contents);
    walk(&mut impossible, 10, true);
    rows.push(("past the point of no return", impossible, Status::Failed));

    for (state, c, expected) in rows {
        // The edit not seen yet: the object as it is before the next reconcile.
        let decision = if state == "stale generation" {
            Decision {
                status: None,
                ..c.decide()
            }
        } else {
            c.decide()
        };
        let (status, message) = read(&c, &decision);
        assert_eq!(status, expected, "{state}: {message}");
        let written = c.status(&decision);
        let ready = written.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_ne!(ready.message, ready.reason, "{state}: Ready says more than its reason");
        if state == "paused" {
            assert_eq!(ready.reason, "Paused");
        }
        if expected == Status::Failed {
            assert_eq!(
                condition(&written, READY).1,
                condition(&written, "Stalled").1,
                "{state}"
            );
        }
    }
}

/// While the store syncs, Blocked is False: a milestone waiting for a goal
/// certificate points to where the wait is said, not to Blocked.
#[test]
fn a_milestone_waiting_for_the_store_points_to_progressing() {
    let mut c = case(by_name_spec("0s"));
    c.declaration.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(c.now));
    c.store = Err(Blocked::new(
        BlockReason::StoreNotSynced,
        "ObservedCertificate cluster-old has not read its source yet",
    ));
    let status = c.status(&c.decide());
    assert_eq!(condition(&status, BLOCKED), ("False", "WaitingForStore"));
    assert_eq!(condition(&status, "Progressing").1, "WaitingForStore");
    let secondary = condition_message(&status, SECONDARY_ADDED);
    assert!(
        secondary.contains("while the store syncs") && secondary.contains("see Progressing"),
        "{secondary}"
    );
}

/// Created together with its store, a declaration waits for the store to
/// sync without a Warning; a store still not synced after the grace period
/// blocks it, with one Warning then.
#[test]
fn a_store_syncing_just_after_creation_is_waited_for_without_a_warning() {
    let mut c = case(by_thumbprint_spec());
    c.declaration.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(c.now));
    c.store = Err(Blocked::new(
        BlockReason::StoreNotSynced,
        "ObservedCertificate cluster-old has not read its source yet",
    ));
    let first = c.decide();
    let status = c.status(&first);
    assert_eq!(condition(&status, BLOCKED), ("False", "WaitingForStore"));
    assert_eq!(condition(&status, "Reconciling"), ("True", "WaitingForStore"));
    assert!(first.events.is_empty(), "{:?}", first.events);
    assert_eq!(
        first.requeue,
        Requeue::After(Duration::from_secs(31)),
        "looks again when the grace ends"
    );
    c.apply(&first);
    c.now = ts("2026-06-01T00:00:30Z");
    let later = c.decide();
    assert_eq!(condition(&c.status(&later), BLOCKED), ("True", "StoreNotSynced"));
    assert_eq!(
        later
            .events
            .iter()
            .map(|e| (e.type_, e.reason.as_str()))
            .collect::<Vec<_>>(),
        [(EventType::Warning, "StoreNotSynced")]
    );
    c.apply(&later);
    assert!(c.decide().events.is_empty(), "told once");
}

/// A CRL revoking the presented certificate: a Warning, and the members are
/// walked to another certificate (tolerate, present, narrow), each revision
/// publishing what it tolerates; the Warning clears once nothing in use is revoked.
#[test]
fn a_revoked_presented_certificate_warns_and_is_rotated_away_from() {
    let pinned = Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA")])]);
    let mut c = case(by_name_spec("0s")).published(revision(6, "G", pinned));
    c.members.pods = pods(&[Some(6)]);
    let mut store = instances();
    store.push(
        facts("G2")
            .cn("cluster.example")
            .issuer("CA")
            .serial("02")
            .valid("2026-02-01T00:00:00Z", "2027-09-01T00:00:00Z")
            .build(),
    );
    let mut contents = contents(store);
    contents.store.trust.revoke(tp("CA"), "01");
    c.store = Ok(contents);
    let mut walked = Vec::new();
    for revision in 7..=9 {
        let decision = c.decide();
        let published = decision
            .published
            .clone()
            .unwrap_or_else(|| panic!("revision {revision}"));
        let status = c.status(&decision);
        walked.push((
            published.stage,
            published.presented.clone(),
            published.tolerated.clone(),
        ));
        let rules = decision.effects.iter().find_map(|e| match e {
            Effect::PublishValidation(map) => map.data.as_ref().map(|d| d["rules.json"].clone()),
            _ => None,
        });
        let rules: serde_json::Value = serde_json::from_str(&rules.expect("validation published")).unwrap();
        let tolerated = rules["tolerated"].as_array().map_or(0, Vec::len);
        assert_eq!(
            tolerated,
            published.tolerated.len(),
            "rules.json of revision {revision}"
        );
        if revision == 7 {
            assert_eq!(condition(&status, REVOKED), ("True", "CertificateRevoked"));
            let warning = decision
                .events
                .iter()
                .find(|e| e.reason == "CertificateRevoked")
                .expect("a Warning event");
            assert!(warning.message.contains(tp("G").as_str()), "{}", warning.message);
        }
        c.apply(&decision);
        c.members.pods = pods(&[Some(revision)]);
    }
    assert_eq!(
        walked,
        [
            (Some(Stage::WidenValidation), tp("G"), vec![tp("G")]),
            (Some(Stage::Rollover), tp("G2"), vec![tp("G")]),
            (Some(Stage::NarrowValidation), tp("G2"), vec![]),
        ]
    );
    let settled = c.decide();
    assert_eq!(settled.published, None);
    assert_eq!(condition(&c.status(&settled), REVOKED), ("False", "NotRevoked"));
}

/// `ExpiringSoon` names every certificate in use that expires within the
/// margin (an accepted secondary, a pinned issuer), each with its role; it
/// is told once, and settles: a later look changes no status.
#[test]
fn expiry_warnings_cover_every_certificate_in_use_and_settle_without_writes() {
    let secondary_expiring = facts("Old")
        .cn("old")
        .self_signed()
        .valid("2026-01-01T00:00:00Z", "2026-06-20T00:00:00Z")
        .build();
    let goal = facts("G")
        .cn("cluster.example")
        .issuer("CA")
        .valid("2026-03-01T00:00:00Z", "2027-06-01T00:00:00Z")
        .build();
    let both = Accepted::new([tp("Old"), tp("G")], []);
    let mut spec = by_thumbprint_spec();
    spec.certificate.as_mut().unwrap().thumbprint_secondary = Some(tp("G").to_string());
    let mut c = case(spec).published(revision(6, "G", both));
    c.members.pods = pods(&[Some(6)]);
    c.store = Ok(contents(vec![secondary_expiring, goal.clone()]));
    let decision = c.decide();
    assert_eq!(decision.published, None, "nothing to publish");
    let status = c.status(&decision);
    let roles: Vec<(&str, &str)> = status
        .certificates_in_use
        .iter()
        .map(|u| (u.role.as_str(), u.thumbprint.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("AcceptedThumbprint", tp("Old").as_str()),
            ("Presented", tp("G").as_str())
        ]
    );
    assert_eq!(condition(&status, EXPIRING_SOON), ("True", "ExpiringSoon"));
    let message = condition_message(&status, EXPIRING_SOON);
    assert_eq!(
        message,
        format!(
            "accepted thumbprint {} expires at notAfter=2026-06-20T00:00:00Z",
            tp("Old")
        )
    );
    assert_eq!(decision.events.iter().filter(|e| e.reason == "ExpiringSoon").count(), 1);
    assert_eq!(decision.standing.len(), 1, "the shell re-tells it at a bounded rate");
    c.apply(&decision);
    // An hour later, and a day later: nothing to write, nothing told anew.
    for hours in [1, 24] {
        c.now = ts("2026-06-01T00:00:00Z") + jiff::SignedDuration::from_hours(hours);
        let later = c.decide();
        assert_eq!(later.status, None, "no status write {hours} h later");
        assert!(later.events.is_empty(), "{:?}", later.events);
    }
    // A margin of one day (spec.expiryWarning): not expiring yet.
    c.declaration.spec.expiry_warning = Some("24h".into());
    let relaxed = c.decide();
    assert_eq!(condition(&c.status(&relaxed), EXPIRING_SOON), ("False", "NotExpiring"));
}

#[test]
fn a_pinned_issuer_that_expires_is_named() {
    let pinned = Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA")])]);
    let mut c = case(by_name_spec("0s")).published(revision(6, "G", pinned));
    c.members.pods = pods(&[Some(6)]);
    let mut store = contents(instances());
    let ca = facts("CA")
        .cn("Cluster CA")
        .ca()
        .self_signed()
        .valid("2025-01-01T00:00:00Z", "2026-06-10T00:00:00Z")
        .build();
    store.store.trust = TrustBundle::with_authorities([], [ca]);
    c.store = Ok(store);
    let status = c.status(&c.decide());
    let message = condition_message(&status, EXPIRING_SOON);
    assert!(
        message.contains(&format!("pinned issuer {} expires at notAfter=2026-06-10", tp("CA"))),
        "{message}"
    );
    let roles: Vec<&str> = status
        .certificates_in_use
        .iter()
        .filter(|u| u.thumbprint == tp("CA").as_str())
        .map(|u| u.role.as_str())
        .collect();
    assert_eq!(
        roles,
        ["PinnedIssuer"],
        "once, though also the presented certificate's CA"
    );
}

/// A CRL that changes while the declaration is Ready reaches the members
/// with a validation revision of its own, once.
#[test]
fn a_changed_crl_reaches_members_with_a_revision_of_its_own() {
    let pinned = Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA")])]);
    let mut c = case(by_name_spec("0s")).published(revision(6, "G", pinned));
    c.members.pods = pods(&[Some(6)]);
    assert_eq!(c.decide().published, None, "settled");
    let mut contents = contents(instances());
    contents.crls = "-----BEGIN X509 CRL-----\nnew\n-----END X509 CRL-----\n".into();
    c.store = Ok(contents);
    let decision = c.decide();
    let published = decision.published.clone().expect("a revision for the CRL");
    assert_eq!(
        (published.revision, published.stage, published.change),
        (7, Some(Stage::NarrowValidation), Some(Change::Validation))
    );
    let crls = decision.effects.iter().find_map(|e| match e {
        Effect::PublishValidation(map) => map.data.as_ref().and_then(|d| d.get("crls.pem").cloned()),
        _ => None,
    });
    assert_eq!(
        crls.as_deref(),
        Some("-----BEGIN X509 CRL-----\nnew\n-----END X509 CRL-----\n")
    );
    c.apply(&decision);
    c.members.pods = pods(&[Some(7)]);
    assert_eq!(c.decide().published, None, "once");
}

/// A CA certificate that builds paths (`intermediates.crt`) added under a
/// Ready declaration reaches members with a widening revision of its own,
/// its cause said, once.
#[test]
fn an_intermediate_added_reaches_members_with_a_revision_of_its_own() {
    let pinned = Accepted::new([], [CommonNameRule::new("cluster.example", [tp("CA")])]);
    let mut c = case(by_name_spec("0s")).published(revision(6, "G", pinned));
    c.members.pods = pods(&[Some(6)]);
    assert_eq!(c.decide().published, None, "settled");
    let mut contents = contents(instances());
    let ca = facts("CA").cn("CA").issuer("Root").ca().build();
    let root = facts("Root").cn("Root").self_signed().ca().build();
    contents.store.trust = TrustBundle::with_authorities([root], [ca]);
    contents.authorities.insert(tp("Root"), "Root PEM\n".to_owned());
    c.store = Ok(contents);
    let decision = c.decide();
    let published = decision.published.clone().expect("a revision for the new CA");
    assert_eq!(
        (published.revision, published.stage, published.cause),
        (7, Some(Stage::WidenValidation), Some(Cause::TrustBundleChanged))
    );
    let intermediates = decision.effects.iter().find_map(|e| match e {
        Effect::PublishValidation(map) => map.data.as_ref().and_then(|d| d.get("intermediates.crt").cloned()),
        _ => None,
    });
    assert_eq!(intermediates.as_deref(), Some("Root PEM\n"));
    c.apply(&decision);
    c.members.pods = pods(&[Some(7)]);
    assert_eq!(c.decide().published, None, "once");
}

/// A trust bundle that drops the root the presented certificate chains to:
/// the removal is held (`Blocked/TrustAnchorInUse`, naming the root and the
/// certificate) and nothing is published; once the store holds a
/// certificate under the root kept, members are moved to it under both
/// roots, and the root is dropped last. Each such revision says its cause.
#[test]
fn a_trust_bundle_removal_waits_for_what_members_present_and_says_why() {
    let unpinned = Accepted::new([], [CommonNameRule::new("cluster.example", [])]);
    let mut spec = by_name_spec("0s");
    spec.certificate_common_names.as_mut().unwrap().common_names[0].certificate_issuer_thumbprint = String::new();
    let in_force = Revision {
        anchors: vec![tp("CA")],
        ..revision(6, "G", unpinned.clone())
    };
    let mut c = case(spec).published(in_force);
    c.members.pods = pods(&[Some(6)]);
    let renewed = facts("H")
        .cn("cluster.example")
        .issuer("CA2")
        .valid("2026-04-01T00:00:00Z", "2027-06-01T00:00:00Z")
        .build();
    let with_bundle = |instances: Vec<crate::facts::CertificateFacts>| {
        let mut contents = contents(instances);
        contents.store.trust = TrustBundle::new([tp("CA2")]);
        contents.authorities.insert(tp("CA2"), "CA2 PEM\n".to_owned());
        contents
    };
    // CA replaced by CA2 while G, under CA, is presented: CA2 is trusted at
    // once, CA's removal is held.
    c.store = Ok(with_bundle(instances()));
    let decision = c.decide();
    let added = decision.published.clone().expect("the addition");
    assert_eq!(
        (added.stage, added.cause, added.anchors.clone()),
        (
            Some(Stage::WidenValidation),
            Some(Cause::TrustBundleChanged),
            vec![tp("CA2"), tp("CA")]
        ),
        "anchors sorted by thumbprint"
    );
    let upgrade = c.status(&decision).upgrade.unwrap();
    assert_eq!(
        (upgrade.revision, upgrade.cause),
        (7, Some(Cause::TrustBundleChanged)),
        "the status says why revision 7 exists"
    );
    c.apply(&decision);
    c.members.pods = pods(&[Some(7)]);
    let decision = c.decide();
    assert_eq!(decision.published, None);
    let status = c.status(&decision);
    assert_eq!(condition(&status, BLOCKED), ("True", "TrustAnchorInUse"));
    let message = condition_message(&status, BLOCKED);
    for named in [tp("CA"), tp("G")] {
        assert!(message.contains(named.as_str()), "{message}");
    }
    assert_eq!(condition(&status, STALLED).0, "True");
    // The walk went as far as it can: the change is over (no deadline runs
    // while the renewal is awaited, however long it takes).
    assert_eq!(status.upgrade.as_ref().unwrap().started_time, None);
    c.apply(&decision);
    c.now = ts("2026-06-02T12:00:00Z");

    // Renewed under CA2 a day and a half later (past the default 12 h
    // upgradeTimeout): presented under both roots, then CA dropped.
    c.store = Ok(with_bundle([instances(), vec![renewed]].concat()));
    let mut walked = Vec::new();
    for _ in 0..4 {
        let decision = c.decide();
        let Some(published) = decision.published.clone() else {
            break;
        };
        let plan = c.status(&decision).upgrade.unwrap().plan;
        let causes: Vec<Option<Cause>> = plan.iter().map(|p| p.cause).collect();
        walked.push((
            published.presented.clone(),
            published.anchors.clone(),
            published.cause,
            causes,
        ));
        c.apply(&decision);
        c.members.pods = pods(&[Some(published.revision)]);
    }
    let (both, only_new) = (vec![tp("CA2"), tp("CA")], vec![tp("CA2")]);
    let summary: Vec<(Thumbprint, Vec<Thumbprint>, Option<Cause>)> =
        walked.iter().map(|(p, a, c, _)| (p.clone(), a.clone(), *c)).collect();
    assert_eq!(
        summary,
        [
            (tp("H"), both, None),
            (tp("H"), only_new, Some(Cause::TrustBundleChanged))
        ]
    );
    // The plan in status names the cause of each revision to come.
    assert_eq!(walked[0].3, [None, Some(Cause::TrustBundleChanged)]);
    let status = c.status(&c.decide());
    assert_eq!(condition(&status, BLOCKED).0, "False");
    assert_eq!(
        status.effective.unwrap().trust_anchors,
        Some(vec![tp("CA2").to_string()])
    );
}

// --- The steps alone ----------------------------------------------------------

#[test]
fn the_plan_step_names_the_candidate_or_the_gate_that_holds_it() {
    let mut c = case(by_name_spec("30s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(0)]);
    let waiting = plan(&c.world());
    assert_eq!(
        (waiting.candidate.as_ref(), &waiting.hold),
        (None, &Some(Hold::WaitingForMembers))
    );
    assert_eq!(waiting.pending.first().map(|r| r.revision), Some(2));
    assert_eq!(
        waiting.requeue,
        Some(Duration::from_secs(601)),
        "until stageTimeout (10m)"
    );

    c.members.pods = pods(&[Some(1)]);
    let soaking = plan(&c.world());
    let Some(Hold::Checking { reason, message, left }) = &soaking.hold else {
        panic!("{:?}", soaking.hold)
    };
    assert_eq!((*reason, *left), ("Soaking", Duration::from_secs(30)));
    assert_eq!(
        message,
        "members healthy under revision 1; the next revision is published at 2026-06-01T00:00:30Z \
         if they stay so (healthCheckStableDuration 30s)"
    );
    c.apply(&c.decide());
    c.now = ts("2026-06-01T00:00:30Z");
    let due = plan(&c.world());
    assert_eq!((due.candidate.map(|r| r.revision), due.hold), (Some(2), None));

    let mut paused = c.declaration.spec.clone();
    paused.upgrade.as_mut().unwrap().paused = true;
    c.declaration.spec = paused;
    assert_eq!(plan(&c.world()).hold, Some(Hold::Paused));
}

#[test]
fn the_plan_step_holds_on_an_invalid_spec_before_planning() {
    let mut spec = by_name_spec("30s");
    spec.upgrade.as_mut().unwrap().stage_timeout = Some("soon".into());
    let planned = plan(&case(spec).world());
    let Some(Hold::Blocked(blocked)) = &planned.hold else {
        panic!("blocked: {:?}", planned.hold)
    };
    assert_eq!(blocked.reason, BlockReason::InvalidDuration);
    assert!(
        blocked.message.starts_with("spec.upgrade.stageTimeout: "),
        "{}",
        blocked.message
    );
    assert!((planned.candidate, planned.pending.is_empty()) == (None, true));
}

#[test]
fn the_preflight_step_holds_the_candidate_until_every_endpoint_accepts_it() {
    let mut c = endpoint_case();
    let planned = plan(&c.world());
    assert_eq!(planned.candidate.as_ref().map(|r| r.revision), Some(3));
    let mut unprobed = planned.clone();
    gate_on_preflight(&c.world(), &mut unprobed);
    assert_eq!(unprobed.candidate, None);
    assert_eq!(unprobed.requeue, Some(ENDPOINT_PROBE_INTERVAL));

    c.preflight = Some(vec![("10.0.0.1:443".into(), Err("unknown_ca".into()))]);
    let mut refused = planned.clone();
    gate_on_preflight(&c.world(), &mut refused);
    assert!(matches!(&refused.hold, Some(Hold::Blocked(b)) if b.reason == BlockReason::PeerRejectsCertificate));
    assert_eq!(refused.candidate, None);

    c.preflight = Some(vec![("10.0.0.1:443".into(), Ok(()))]);
    let mut accepted = planned;
    gate_on_preflight(&c.world(), &mut accepted);
    assert_eq!(accepted.candidate.map(|r| r.revision), Some(3));
}

#[test]
fn the_shell_s_plan_then_decide_is_the_decision_of_decide() {
    let mut c = endpoint_case();
    c.preflight = Some(vec![("10.0.0.1:443".into(), Ok(()))]);
    let world = c.world();
    assert_eq!(decide_planned(&world, plan(&world)), decide(&world));
}

#[test]
fn the_spec_is_parsed_once_into_typed_values_with_defaults() {
    let mut alias = by_name_spec("30s");
    let upgrade = alias.upgrade.as_mut().unwrap();
    (upgrade.min_soak, upgrade.health_check_stable_duration) = (upgrade.health_check_stable_duration.take(), None);
    let parsed = spec::parse(&alias).expect("valid");
    assert_eq!(
        parsed.upgrade,
        spec::Upgrade {
            health_check_wait: Duration::ZERO,
            health_check_stable: Duration::from_secs(30),
            health_check_retry: spec::DEFAULT_HEALTH_CHECK_RETRY,
            stage_timeout: Duration::from_secs(600),
            upgrade_timeout: spec::DEFAULT_UPGRADE_TIMEOUT,
            max_unhealthy: spec::MaxUnhealthy::None,
            failure_action: crate::crd::FailureAction::Rollback,
            paused: false,
        }
    );
    // minSoak is the deprecated alias of healthCheckStableDuration: a Warning says so.
    assert_eq!(parsed.deprecated.len(), 1);
    assert!(
        parsed.deprecated[0].contains("healthCheckStableDuration"),
        "{:?}",
        parsed.deprecated
    );
    assert_eq!(parsed.expiry_warning, EXPIRY_MARGIN);
    assert_eq!(parsed.fetch_crls, None);
    let mut unset = by_name_spec("0s");
    unset.upgrade = None;
    let parsed = spec::parse(&unset).expect("valid");
    assert_eq!(
        (parsed.upgrade.health_check_stable, parsed.upgrade.stage_timeout),
        (Duration::ZERO, DEFAULT_STAGE_TIMEOUT)
    );
    assert!(parsed.deprecated.is_empty());
    // The new names win over the alias, which is then said to be ignored.
    let mut both = by_name_spec("30s");
    let upgrade = both.upgrade.as_mut().unwrap();
    upgrade.min_soak = Some("30s".into());
    upgrade.health_check_stable_duration = Some("1m".into());
    upgrade.health_check_wait_duration = Some("15s".into());
    upgrade.health_check_retry_timeout = Some("5m".into());
    upgrade.upgrade_timeout = Some("2h".into());
    upgrade.max_unhealthy_members = Some(IntOrString::String("25%".into()));
    let parsed = spec::parse(&both).expect("valid");
    assert_eq!(
        (
            parsed.upgrade.health_check_wait,
            parsed.upgrade.health_check_stable,
            parsed.upgrade.health_check_retry,
            parsed.upgrade.upgrade_timeout,
            parsed.upgrade.max_unhealthy,
        ),
        (
            Duration::from_secs(15),
            Duration::from_secs(60),
            Duration::from_secs(300),
            Duration::from_secs(7200),
            spec::MaxUnhealthy::Percent(25)
        )
    );
    assert!(parsed.deprecated[0].contains("ignored"), "{:?}", parsed.deprecated);
}

#[test]
fn every_invalid_spec_value_is_refused_naming_its_field() {
    use crate::crd::{ClientCertificateCommonName, ClientCertificateThumbprint, DistributionPoints, Revocation};
    type Breaks = fn(&mut ClusterCertificateDeclarationSpec);
    let cases: [(Breaks, BlockReason, &str); 8] = [
        (
            |s| s.expiry_warning = Some("a month".into()),
            BlockReason::InvalidDuration,
            "spec.expiryWarning: ",
        ),
        (
            |s| s.upgrade.as_mut().unwrap().health_check_stable_duration = Some("-5s".into()),
            BlockReason::InvalidDuration,
            "spec.upgrade.healthCheckStableDuration: ",
        ),
        (
            |s| s.upgrade.as_mut().unwrap().health_check_retry_timeout = Some("ten minutes".into()),
            BlockReason::InvalidDuration,
            "spec.upgrade.healthCheckRetryTimeout: ",
        ),
        (
            |s| s.upgrade.as_mut().unwrap().max_unhealthy_members = Some(IntOrString::String("120%".into())),
            BlockReason::InvalidDeclaration,
            "spec.upgrade.maxUnhealthyMembers: \"120%\" is not a number of members or a percentage",
        ),
        (
            |s| s.upgrade.as_mut().unwrap().max_unhealthy_members = Some(IntOrString::Int(-1)),
            BlockReason::InvalidDeclaration,
            "spec.upgrade.maxUnhealthyMembers: -1 is negative",
        ),
        (
            |s| {
                s.revocation = Some(Revocation {
                    distribution_points: Some(DistributionPoints {
                        enabled: true,
                        refresh_interval: Some("hourly".into()),
                        stale_policy: None,
                    }),
                    ..Revocation::default()
                })
            },
            BlockReason::InvalidDuration,
            "spec.revocation.distributionPoints.refreshInterval: ",
        ),
        (
            |s| {
                s.client_certificate_thumbprints = vec![ClientCertificateThumbprint {
                    certificate_thumbprint: "not hex".into(),
                    is_admin: false,
                }]
            },
            BlockReason::InvalidThumbprint,
            "spec.clientCertificateThumbprints[0].certificateThumbprint: ",
        ),
        (
            |s| {
                s.client_certificate_common_names = vec![ClientCertificateCommonName {
                    certificate_common_name: "CN=admin".into(),
                    certificate_issuer_thumbprint: String::new(),
                    is_admin: true,
                }]
            },
            BlockReason::InvalidCommonName,
            "spec.clientCertificateCommonNames[0].certificateCommonName: ",
        ),
    ];
    for (break_it, reason, field) in cases {
        let mut spec = by_name_spec("0s");
        break_it(&mut spec);
        let blocked = spec::parse(&spec).expect_err(field);
        assert_eq!(blocked.reason, reason, "{field}");
        assert!(blocked.message.starts_with(field), "{}", blocked.message);
    }
}

/// The last revision's health check holds readiness for its stable duration;
/// once Ready, an unchanged world decides no write, however much later.
#[test]
fn the_last_revision_soaks_before_ready_and_then_idles_without_writes() {
    let mut c = case(by_thumbprint_spec()).published(revision(1, "Old", thumbprint_rules()));
    c.declaration
        .spec
        .upgrade
        .as_mut()
        .unwrap()
        .health_check_stable_duration = Some("5s".into());
    let first = c.decide();
    let status = c.status(&first);
    assert_eq!(condition(&status, READY).1, "Soaking", "{:?}", status.conditions);
    c.apply(&first);
    c.now = ts("2026-06-01T00:00:05Z");
    let ready = c.decide();
    assert_eq!(condition(&c.status(&ready), READY).1, "Ready");
    c.apply(&ready);
    for later in ["2026-06-01T00:00:06Z", "2026-06-01T01:00:00Z"] {
        c.now = ts(later);
        let idle = c.decide();
        assert_eq!(idle.status, None, "at {later}: {:#?}", idle.status);
        assert!(idle.effects.is_empty());
    }
}

/// A conversion with no members: the last revision's publication is not
/// `Ready` (its health check has not begun), and the soak of each revision
/// writes its status once, not on every look.
#[test]
fn the_last_revision_is_ready_only_after_its_health_check_and_a_soak_writes_once() {
    let mut c = case(by_thumbprint_spec()).published(revision(1, "Old", thumbprint_rules()));
    c.declaration
        .spec
        .upgrade
        .as_mut()
        .unwrap()
        .health_check_stable_duration = Some("5s".into());
    let settled = c.decide();
    c.apply(&settled);
    c.now = ts("2026-06-01T00:00:05Z");
    let ready = c.decide();
    c.apply(&ready);
    c.declaration.spec = by_name_spec("5s");
    c.declaration.metadata.generation = Some(3);
    let (mut ready_at_publication, mut writes_while_soaking) = (Vec::new(), 0);
    for step in 0..80 {
        c.now = ts("2026-06-01T00:01:00Z")
            .checked_add(jiff::SignedDuration::from_millis(step * 700))
            .unwrap();
        let decision = c.decide();
        let status = c.status(&decision);
        let ready = condition(&status, READY);
        if decision.published.is_some() && ready.0 == "True" {
            ready_at_publication.push(step);
        }
        if decision.published.is_none() && ready.1 == "Soaking" && decision.status.is_some() {
            writes_while_soaking += 1;
        }
        c.apply(&decision);
    }
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(status.upgrade.as_ref().unwrap().revision, 6, "the conversion finished");
    assert_eq!(condition(&status, READY).1, "Ready");
    assert!(
        ready_at_publication.is_empty(),
        "Ready at a publication: steps {ready_at_publication:?}"
    );
    assert_eq!(
        writes_while_soaking, 5,
        "one write when each of the 5 revisions starts soaking"
    );
}

/// Walks `c` one second per look, its one member acknowledging each
/// revision at once and reporting `unhealthy` under the revisions that
/// present something else than `Old`; returns every revision published.
fn walk(c: &mut Case, looks: usize, unhealthy_under_new: bool) -> Vec<Revision> {
    let mut published = Vec::new();
    for _ in 0..looks {
        let decision = c.decide();
        c.apply(&decision);
        if let Some(revision) = &decision.published {
            published.push(revision.clone());
        }
        let in_force = c
            .declaration
            .status
            .as_ref()
            .and_then(|s| s.upgrade.as_ref())
            .map(|u| u.revision);
        let presenting_new = c
            .declaration
            .status
            .as_ref()
            .and_then(|s| s.presenting.as_ref())
            .is_some_and(|p| p.thumbprint != tp("Old").as_str());
        match in_force {
            Some(revision) => m0_reports(c, revision, revision, !(unhealthy_under_new && presenting_new)),
            None => c.now = c.now.checked_add(jiff::SignedDuration::from_secs(1)).unwrap(),
        }
    }
    published
}

/// m0 has loaded `loaded` and reports its health under `revision`
/// (`CertificateRejectedByPeers` when not healthy); a second passes.
fn m0_reports(c: &mut Case, loaded: u64, revision: u64, healthy: bool) {
    c.members.pods = pods(&[Some(loaded)]);
    c.members.pod_health = BTreeMap::from([(
        "pod/m0".to_owned(),
        crate::outputs::ReportedHealth {
            revision,
            healthy,
            reason: if healthy {
                "Healthy"
            } else {
                "CertificateRejectedByPeers"
            }
            .to_owned(),
            message: format!("revision {revision}: 3 inbound handshakes refused by 10.88.0.9 with unknown_ca"),
        },
    )]);
    c.now = c.now.checked_add(jiff::SignedDuration::from_secs(1)).unwrap();
}

fn rollback_case(failure_action: crate::crd::FailureAction) -> Case {
    let mut c = case(by_name_spec("0s")).published(revision(1, "Old", thumbprint_rules()));
    c.members.pods = pods(&[Some(1)]);
    let upgrade = c.declaration.spec.upgrade.as_mut().unwrap();
    upgrade.health_check_retry_timeout = Some("3s".into());
    upgrade.failure_action = failure_action;
    c
}

#[test]
fn a_failed_health_check_rolls_back_to_the_origin_through_safe_revisions_and_stalls_rolled_back() {
    let mut c = rollback_case(crate::crd::FailureAction::Rollback);
    let published = walk(&mut c, 30, true);
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(
        condition(&status, "Stalled"),
        ("True", "RolledBack"),
        "{:#?}",
        status.conditions
    );
    assert_eq!(condition(&status, READY).0, "False");
    let message = condition_message(&status, "Stalled");
    assert!(
        message.contains("rolled back to the declaration of revision 1"),
        "{message}"
    );
    assert!(message.contains("pod/m0: CertificateRejectedByPeers"), "{message}");
    assert!(
        message.contains(&format!("{} is set to 2", plan::RETRY_ANNOTATION)),
        "{message}"
    );
    // Forward: widen, present G; back: present Old, narrow to Old alone.
    let walked: Vec<(u64, String, usize)> = published
        .iter()
        .map(|r| (r.revision, r.presented.short().to_owned(), r.accepted.thumbprints.len()))
        .collect();
    assert_eq!(
        walked,
        [
            (2, tp("Old").short().to_owned(), 2),
            (3, tp("G").short().to_owned(), 2),
            (4, tp("Old").short().to_owned(), 2),
            (5, tp("Old").short().to_owned(), 1),
        ]
    );
    let all: Vec<Revision> = std::iter::once(revision(1, "Old", thumbprint_rules()))
        .chain(published.iter().cloned())
        .collect();
    crate::planner::check_invariant(&all, &c.store.as_ref().unwrap().store).expect("every step safe");
    let upgrade = status.upgrade.unwrap();
    let rollback = upgrade.rollback.unwrap();
    assert_eq!(
        (
            rollback.state.as_str(),
            rollback.failed_revision,
            rollback.reason.as_str()
        ),
        ("RolledBack", 3, "HealthCheckFailed")
    );
    assert_eq!(status.effective.unwrap().presented.as_deref(), Some(tp("Old").as_str()));
    // The same generation is not tried again.
    assert!(walk(&mut c, 10, false).is_empty(), "nothing more published");
    // certshift.io/retry set to the generation: the change starts over.
    c.declaration.metadata.annotations = Some(BTreeMap::from([(plan::RETRY_ANNOTATION.to_owned(), "2".to_owned())]));
    let again = walk(&mut c, 30, false);
    assert_eq!(again.first().map(|r| r.revision), Some(6));
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(condition(&status, READY), ("True", "Ready"), "{:#?}", status.conditions);
    assert!(status.upgrade.unwrap().rollback.is_none());
}

#[test]
fn a_rollback_emits_the_failure_and_rolling_back_once() {
    let mut c = rollback_case(crate::crd::FailureAction::Rollback);
    let mut reasons = Vec::new();
    let (mut rolling_back, mut seen) = (0, None);
    let mut normal_while_rolling_back = Vec::new();
    for _ in 0..40 {
        let decision = c.decide();
        if reasons.iter().any(|r| r == "RollingBack") {
            normal_while_rolling_back.extend(
                decision
                    .events
                    .iter()
                    .filter(|e| e.type_ == EventType::Normal)
                    .map(|e| e.reason.clone()),
            );
        }
        reasons.extend(
            decision
                .events
                .iter()
                .filter(|e| e.type_ == EventType::Warning)
                .map(|e| e.reason.clone()),
        );
        c.apply(&decision);
        // While it rolls back, every condition kubectl and kstatus read says so.
        let status = c.declaration.status.clone().unwrap();
        let state = status
            .upgrade
            .as_ref()
            .and_then(|u| u.rollback.as_ref())
            .map(|r| r.state.clone());
        if state.as_deref() == Some("RollingBack") {
            rolling_back += 1;
            for type_ in [PROGRESSING, crate::conditions::RECONCILING] {
                assert_eq!(condition(&status, type_), ("True", "RollingBack"), "{type_}");
            }
            assert_eq!(condition(&status, READY), ("False", "RollingBack"));
        }
        let revision = c
            .declaration
            .status
            .as_ref()
            .unwrap()
            .upgrade
            .as_ref()
            .unwrap()
            .revision;
        // m0 loads each revision one look after its publication, so the
        // rollback's revisions are seen waiting for it.
        let loaded = if seen == Some(revision) { revision } else { revision - 1 };
        seen = Some(revision);
        m0_reports(&mut c, loaded, revision, revision != 3);
    }
    assert_eq!(reasons, ["HealthCheckFailed", "RollingBack", "RolledBack"]);
    assert!(rolling_back > 0, "seen while rolling back");
    assert!(
        normal_while_rolling_back.is_empty(),
        "a rollback's revisions complete no stage: {normal_while_rolling_back:?}"
    );
}

/// A rollback's last revision that a member never loads is bounded by
/// `stageTimeout` like any other: it holds for a person, naming the
/// member, and nothing more is tried.
#[test]
fn a_rollback_revision_never_loaded_times_out_and_holds() {
    let mut c = rollback_case(crate::crd::FailureAction::Rollback);
    let mut last_back = None;
    for _ in 0..40 {
        let decision = c.decide();
        c.apply(&decision);
        let upgrade = c.declaration.status.clone().unwrap().upgrade.unwrap();
        if upgrade.rollback.is_some() && upgrade.plan.is_empty() {
            last_back = Some(upgrade.revision);
            break;
        }
        m0_reports(&mut c, upgrade.revision, upgrade.revision, upgrade.revision != 3);
    }
    let last_back = last_back.expect("the rollback's last revision published");
    // m0 never loads it.
    c.now = c.now.checked_add(jiff::SignedDuration::from_secs(601)).unwrap();
    let decision = c.decide();
    assert_eq!(decision.published, None);
    c.apply(&decision);
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(condition(&status, "Stalled"), ("True", "StageTimeout"));
    assert!(condition_message(&status, "Stalled").contains("pod/m0"));
    let upgrade = status.upgrade.unwrap();
    assert_eq!(upgrade.revision, last_back);
    assert_eq!(upgrade.rollback.unwrap().state, "RollingBack", "no second rollback");
}

/// `Ready` ("… complete, the declaration is in force") is told when the
/// last revision's health check has passed and Ready turned True, not when
/// its members acknowledged it: a change can still roll back until then.
#[test]
fn the_ready_event_comes_with_the_ready_condition_after_the_health_check() {
    let mut c = rollback_case(crate::crd::FailureAction::Rollback);
    c.declaration
        .spec
        .upgrade
        .as_mut()
        .unwrap()
        .health_check_stable_duration = Some("5s".into());
    // The first look finds revision 1 (the origin) in force and says so.
    let first = c.decide();
    c.apply(&first);
    let mut told = Vec::new();
    let mut turned_ready = Vec::new();
    for look in 0..80 {
        let was_ready = c
            .declaration
            .status
            .as_ref()
            .is_some_and(|s| condition(s, READY).0 == "True");
        let decision = c.decide();
        if decision
            .events
            .iter()
            .any(|e| e.type_ == EventType::Normal && e.reason == READY)
        {
            told.push(look);
        }
        c.apply(&decision);
        let status = c.declaration.status.clone().unwrap();
        if !was_ready && condition(&status, READY).0 == "True" {
            turned_ready.push(look);
        }
        let revision = status.upgrade.as_ref().unwrap().revision;
        m0_reports(&mut c, revision, revision, true);
    }
    assert_eq!(turned_ready.len(), 1, "Ready once, at the end of the walk");
    assert_eq!(told, turned_ready, "the Ready event with the Ready condition");
}

#[test]
fn failure_action_manual_holds_at_the_failed_revision() {
    let mut c = rollback_case(crate::crd::FailureAction::Manual);
    let published = walk(&mut c, 30, true);
    assert_eq!(
        published.last().map(|r| r.revision),
        Some(3),
        "held at the presentation"
    );
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(condition(&status, "Stalled"), ("True", "HealthCheckFailed"));
    assert!(status.upgrade.unwrap().rollback.is_none());
}

#[test]
fn a_rollback_past_the_point_of_no_return_holds_rollback_impossible() {
    let mut c = rollback_case(crate::crd::FailureAction::Rollback);
    // Walk to the presentation of G, then lose Old from the store.
    let mut published = Vec::new();
    while published.last().is_none_or(|r: &Revision| r.revision < 3) {
        published.extend(walk(&mut c, 1, true));
    }
    let mut contents = c.store.clone().unwrap();
    contents.store.instances.retain(|f| !f.has_thumbprint(&tp("Old")));
    c.store = Ok(contents);
    let later = walk(&mut c, 10, true);
    assert!(
        later.is_empty(),
        "nothing presented that members would reject: {later:?}"
    );
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(
        condition(&status, "Stalled"),
        ("True", "RollbackImpossible"),
        "{:#?}",
        status.conditions
    );
    let message = condition_message(&status, "Stalled");
    assert!(
        message.contains("rolling back to revision 1 is not possible"),
        "{message}"
    );
    let marked: Vec<Option<bool>> = status
        .upgrade
        .unwrap()
        .plan
        .iter()
        .map(|p| p.rollback_possible)
        .collect();
    assert!(
        !marked.is_empty() && marked.iter().all(|m| *m == Some(false)),
        "every revision is past the point of no return: {marked:?}"
    );
}

#[test]
fn under_manual_a_person_resumes_or_rolls_back_the_revision_held() {
    let annotate = |c: &mut Case, value: &str| {
        c.declaration.metadata.annotations =
            Some(BTreeMap::from([(plan::ACTION_ANNOTATION.to_owned(), value.to_owned())]));
    };
    // Resume, scoped to the held revision (3): the walk goes on past it.
    let mut c = rollback_case(crate::crd::FailureAction::Manual);
    assert_eq!(walk(&mut c, 20, true).last().map(|r| r.revision), Some(3));
    annotate(&mut c, "resume/2");
    assert!(
        walk(&mut c, 5, true).is_empty(),
        "a resume of another revision does nothing"
    );
    annotate(&mut c, "resume/3");
    let resumed = walk(&mut c, 3, true);
    assert_eq!(resumed.first().map(|r| r.revision), Some(4), "resumed past revision 3");
    // The next failure holds again: the resume was for revision 3 only.
    walk(&mut c, 20, true);
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(
        condition(&status, "Stalled"),
        ("True", "HealthCheckFailed"),
        "{:#?}",
        status.conditions
    );

    // Rollback, scoped to the generation (2): back to the origin, Requested.
    let mut c = rollback_case(crate::crd::FailureAction::Manual);
    walk(&mut c, 20, true);
    annotate(&mut c, "rollback/1");
    assert!(
        walk(&mut c, 5, true).is_empty(),
        "a rollback of another generation does nothing"
    );
    annotate(&mut c, "rollback/2");
    let back = walk(&mut c, 20, true);
    assert_eq!(back.iter().map(|r| r.revision).collect::<Vec<_>>(), [4, 5]);
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(condition(&status, "Stalled"), ("True", "RolledBack"));
    assert_eq!(status.upgrade.unwrap().rollback.unwrap().reason, "Requested");
}

/// A retry acted on once: a change that fails again after it rolls back
/// again and stays rolled back, whatever the annotation still says; a spec
/// edit that asks for the same thing (pausing, a timeout) does not undo it.
#[test]
fn a_retry_is_acted_on_once_and_an_edit_that_asks_the_same_keeps_the_rollback() {
    let mut c = rollback_case(crate::crd::FailureAction::Rollback);
    walk(&mut c, 30, true);
    c.declaration.metadata.annotations = Some(BTreeMap::from([(plan::RETRY_ANNOTATION.to_owned(), "2".to_owned())]));
    let retried = walk(&mut c, 40, true);
    assert_eq!(
        retried.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [6, 7, 8, 9],
        "forward, fails, back: once"
    );
    assert!(walk(&mut c, 30, true).is_empty(), "and no more");
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(condition(&status, "Stalled"), ("True", "RolledBack"));
    // An edit that asks for the same declaration: still rolled back.
    c.declaration.spec.upgrade.as_mut().unwrap().stage_timeout = Some("20m".into());
    c.declaration.metadata.generation = Some(3);
    assert!(walk(&mut c, 10, true).is_empty());
    let status = c.declaration.status.clone().unwrap();
    assert_eq!(condition(&status, "Stalled"), ("True", "RolledBack"));
    // Retrying again takes a new value.
    c.declaration.metadata.annotations = Some(BTreeMap::from([(plan::RETRY_ANNOTATION.to_owned(), "3-2".to_owned())]));
    assert!(!walk(&mut c, 10, false).is_empty(), "retried");
}
