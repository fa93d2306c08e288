//! End-to-end scenarios against a real kube-apiserver and etcd. One control
//! plane for the run, one namespace and one in-process operator per scenario;
//! scenarios run concurrently and the control plane is torn down even when one
//! fails. Prints `N passed, M failed` and exits non-zero on any failure.
//!
//! Each module holds the scenarios of one capability, each scenario a
//! function named after the behaviour it proves; `tests/README.md` says
//! where a new one goes. `cargo test -p certshift-e2e --test e2e -- WORDS`
//! runs the scenarios whose names contain WORDS.

mod agents;
mod chaos;
mod conversion;
mod deploy;
mod gitops;
mod members;
mod names;
mod outputs;
mod policy;
mod scale;
mod trust;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certshift::crd::ClusterCertificateDeclaration;
use certshift::outputs::{REVISION_ANNOTATION, THUMBPRINT_ANNOTATION};
use certshift::planner::Stage;
use certshift_e2e::control_plane::{ADMIN_TOKEN, CHART_NAMESPACE, CHART_SERVICE_ACCOUNT, CHART_TOKEN, OPERATOR_USER};
use certshift_e2e::judge::Judge;
use certshift_e2e::manifests::{
    Declaration, apply, apply_endpoint_slice, ca_secret, member_pod, observed_certificate, policy, secret,
};
use certshift_e2e::{
    ControlPlane, Operator, acknowledge, apply_rendered, apply_yaml, condition, create_namespace, declaration,
    eventually, example, free_addr, http_get, install_crds, is_true, pki, wait_converted, wait_event, wait_ready,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

const DECLARATION: &str = "cluster";

/// `certshift status` of the scenario's declaration, as the command prints it.
async fn status_text(s: &Scenario) -> String {
    let report = certshift::cli::status::gather(&s.admin, &s.namespace, DECLARATION)
        .await
        .expect("status");
    certshift::cli::status::render(&report, jiff::Timestamp::now())
}

struct Scenario {
    plane: Arc<ControlPlane>,
    admin: Client,
    namespace: String,
}

type Run = fn(Scenario) -> BoxFuture<'static, ()>;

/// The scenarios, each registered by its function: its name is the scenario's.
macro_rules! scenarios {
    ($($module:ident::$name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|s| $module::$name(s).boxed()) as Run)),*]
    };
}

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scenarios: Vec<(&str, Run)> = scenarios![
        conversion::conversion_walks_the_three_stages_and_idles_without_writes,
        conversion::renewals_roll_over_when_pinned_and_are_refused_when_not,
        conversion::invalid_specs_and_foreign_secrets_publish_nothing,
        conversion::kubectl_client_side_apply_there_and_back_leaves_no_stale_status,
        outputs::consumer_templates_and_formats_reach_the_outputs_without_rewrites,
        members::members_gate_each_revision_and_min_soak_is_respected,
        members::tls_members_acknowledge_by_probe_and_a_rejecting_peer_blocks,
        agents::agents_carry_a_conversion_a_rollover_and_a_rotation_with_no_failed_call,
        agents::an_agent_restarted_or_given_a_corrupt_volume_never_acknowledges_what_it_has_not_loaded,
        agents::a_revocation_pushed_while_running_moves_the_members_off_with_no_failed_call,
        agents::a_revoked_intermediate_moves_the_members_to_another_with_no_failed_call,
        agents::a_trust_bundle_rotated_as_trust_manager_does_never_cuts_a_member_off,
        agents::a_client_refusing_the_new_certificate_holds_the_walk_until_it_is_fixed,
        agents::a_client_refusing_the_new_certificate_rolls_the_change_back,
        agents::a_person_rolls_back_or_resumes_a_held_change_with_the_cli,
        policy::policy_issues_renews_rolls_over_and_an_unpinned_ca_blocks,
        policy::policy_failures_back_off_with_bounded_writes,
        policy::policy_example_enrolls_like_service_fabric,
        policy::policy_refuses_a_ca_whose_certificates_members_would_reject,
        deploy::process_elects_a_leader_and_serves_health_and_metrics,
        deploy::chart_rbac_runs_the_conversion_and_never_deletes_secrets,
        deploy::a_reconcile_or_a_watch_forbidden_by_rbac_is_said_in_the_status_events_and_readyz,
        chaos::a_restarted_operator_resumes_without_repeating_or_skipping,
        chaos::deleting_certshift_objects_never_deletes_user_secrets,
        chaos::chaos_restarts_during_the_conversion_and_crd_deletion,
        gitops::argo_cd_and_kstatus_read_every_state_of_every_kind,
        gitops::kubectl_explains_every_field_and_gets_the_certshift_category,
        gitops::helm_uninstall_keeps_the_crds_and_the_declarations,
        trust::a_trust_bundle_of_the_system_roots_and_the_cluster_ca_carries_the_conversion,
        trust::expiry_warnings_for_an_accepted_secondary_and_a_pinned_issuer_settle_without_writes,
        trust::crls_fetched_from_distribution_points_move_the_members_off,
        trust::a_crl_in_a_secret_changed_while_ready_is_acted_on_at_once,
        names::names_of_63_64_and_253_characters_reach_ready_for_every_kind,
        scale::requests_per_object_on_the_hot_paths_are_counted,
        scale::writes_and_reads_per_revision_of_many_conversions_are_counted,
    ];
    let scenarios: Vec<_> = scenarios
        .into_iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    println!("running {} end-to-end scenarios", scenarios.len());
    let plane = Arc::new(ControlPlane::start());
    // The operator's logs go beside the control plane's, for failed runs.
    let log = std::fs::File::create(plane.dir().join("operator.log")).expect("operator.log");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_ansi(false)
        .with_writer(Mutex::new(log))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let results: Vec<(&str, Result<(), String>, Duration)> = runtime.block_on(async {
        let admin = plane.client(ADMIN_TOKEN);
        install_crds(&admin).await;
        let mut handles = Vec::new();
        for (index, (name, run)) in scenarios.into_iter().enumerate() {
            let namespace = format!(
                "e2e-{index}-{}",
                &name[..name.find('_').unwrap_or(name.len())].replace('_', "-")
            );
            create_namespace(&admin, &namespace).await;
            let scenario = Scenario {
                plane: plane.clone(),
                admin: admin.clone(),
                namespace,
            };
            handles.push((
                name,
                tokio::spawn(async move {
                    let started = Instant::now();
                    run(scenario).await;
                    started.elapsed()
                }),
            ));
        }
        let mut results = Vec::new();
        for (name, handle) in handles {
            let outcome = handle.await.map_err(|err| {
                if err.is_panic() {
                    let panic = err.into_panic();
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "panicked".to_owned())
                } else {
                    err.to_string()
                }
            });
            let elapsed = *outcome.as_ref().unwrap_or(&Duration::ZERO);
            results.push((name, outcome.map(|_| ()), elapsed));
        }
        results
    });
    drop(runtime);
    let mut failed = 0;
    for (name, outcome, elapsed) in &results {
        match outcome {
            Ok(()) => println!("test {name} ... ok ({:.1}s)", elapsed.as_secs_f64()),
            Err(message) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1}s)\n    {message}", elapsed.as_secs_f64());
            }
        }
    }
    if failed > 0 {
        println!(
            "logs of the failed run (kept): {}; kubeconfig: {}",
            plane.dir().display(),
            plane.write_kubeconfig().display()
        );
        plane.keep();
    }
    println!("\n{} passed, {failed} failed", results.len() - failed);
    drop(plane);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Tells the judge about every certificate of a manifest's TLS Secrets.
/// A store source: the TLS Secret `name` with `cert` (and its issuer's
/// certificate as `ca.crt`), watched by an ObservedCertificate of the same
/// name; the judge, when there is one, learns the certificate.
async fn store_certificate(
    s: &Scenario,
    judge: Option<&Judge>,
    name: &str,
    cert: &certshift_e2e::pki::Issued,
    issuer: &certshift_e2e::pki::Issued,
) {
    if let Some(judge) = judge {
        judge.know(&cert.pem, Some(&issuer.pem));
    }
    apply(&s.admin, &s.namespace, &pki::tls_secret(name, cert, issuer)).await;
    apply(&s.admin, &s.namespace, &observed_certificate(name, name, None)).await;
}

fn know_secrets(judge: &Judge, manifest: &str) {
    for document in serde_yaml::Deserializer::from_str(manifest) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(document).expect("YAML");
        if value["kind"].as_str() == Some("Secret") {
            let crt = value["stringData"]["tls.crt"].as_str().expect("tls.crt");
            judge.know(crt, value["stringData"]["ca.crt"].as_str());
        }
    }
}

fn stages_after_first(judge: &Judge) -> Vec<Stage> {
    let mut stages: Vec<Stage> = judge
        .observations()
        .iter()
        .skip(1)
        .filter_map(|o| o.revision.stage)
        .collect();
    stages.dedup();
    stages
}

fn assert_judged_clean(judge: &Judge) {
    let violations = judge.violations();
    assert!(violations.is_empty(), "the judge saw violations: {violations:#?}");
}
