//! Names at the API's limits: every object name Kubernetes allows works.

use certshift::crd::{CertificatePolicy, ObservedCertificate};
use certshift::object_names::{MAX_LABEL_VALUE, label_value};
use certshift::outputs::{DECLARATION_LABEL, presentation_name, store_name, validation_name};

use super::*;

/// A valid object name of exactly `len` characters, starting with `what`.
fn long_name(what: &str, len: usize) -> String {
    let mut name: String = format!("{what}-{len}.").chars().cycle().take(len).collect();
    if name.ends_with(['.', '-']) {
        name.pop();
        name.push('x');
    }
    name
}

fn condition_of<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

/// Declarations, ObservedCertificates and CertificatePolicies named with 63
/// (the longest label value), 64 and 253 characters (the longest name) each
/// reach `Ready`: labels that name them are shortened with a hash and the full
/// name is in an annotation; the outputs' names are shortened the same way.
pub async fn names_of_63_64_and_253_characters_reach_ready_for_every_kind(s: Scenario) {
    let ns = &s.namespace;
    let judge = Judge::watch(&s.admin, ns);
    let ca = pki::ca("names CA");
    apply(&s.admin, ns, &ca_secret("names-ca", &ca)).await;
    let operator = Operator::start(&s.plane, ns);
    let lengths = [63, 64, 253];
    for len in lengths {
        let (policy_name, ocert_name) = (long_name("policy", len), long_name("ocert", len));
        let mut issuing = policy(&long_name("secret", len), "names-ca", "24h", 75);
        issuing.metadata.name = Some(policy_name.clone());
        apply(&s.admin, ns, &issuing).await;
        let source = issuing.spec.secret_name.clone();
        apply(
            &s.admin,
            ns,
            &observed_certificate(&ocert_name, &source, Some(&policy_name)),
        )
        .await;
        Declaration::example("declaration-common-name.yaml")
            .named(&long_name("cluster", len))
            .by_common_names(&[("cluster.example", &ca.thumbprint)])
            .store(&[&ocert_name])
            .apply(&s.admin, ns)
            .await;
    }

    let policies: Api<CertificatePolicy> = Api::namespaced(s.admin.clone(), ns);
    let observed: Api<ObservedCertificate> = Api::namespaced(s.admin.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(s.admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(s.admin.clone(), ns);
    for len in lengths {
        let name = long_name("cluster", len);
        let ready = wait_ready(&s.admin, ns, &name, Duration::from_secs(90)).await;
        assert!(ready.status.unwrap().presenting.is_some(), "{len}: presents");

        let policy = policies.get(&long_name("policy", len)).await.expect("policy");
        let conditions = policy.status.map(|s| s.conditions).unwrap_or_default();
        assert_eq!(
            condition_of(&conditions, "Ready"),
            Some("True"),
            "{len}: policy {conditions:?}"
        );
        let ocert_name = long_name("ocert", len);
        let ocert = observed.get(&ocert_name).await.expect("ObservedCertificate");
        let conditions = ocert.status.map(|s| s.conditions).unwrap_or_default();
        assert_eq!(
            condition_of(&conditions, "Ready"),
            Some("True"),
            "{len}: ocert {conditions:?}"
        );
        let store = secrets.get(&store_name(&ocert_name)).await.expect("the store Secret");
        assert!(store.metadata.name.unwrap().len() <= 253);

        // The outputs: their names fit, their label is the name when it fits
        // and a shortened one otherwise, with the full name beside it.
        let validation = config_maps.get(&validation_name(&name)).await.expect("validation");
        secrets.get(&presentation_name(&name)).await.expect("presentation");
        let label = validation.metadata.labels.unwrap_or_default()[DECLARATION_LABEL].clone();
        let annotation = validation
            .metadata
            .annotations
            .unwrap_or_default()
            .get(DECLARATION_LABEL)
            .cloned();
        assert_eq!(label, label_value(&name), "{len}");
        assert!(label.len() <= MAX_LABEL_VALUE);
        match len {
            ..=MAX_LABEL_VALUE => assert_eq!((label.as_str(), annotation), (name.as_str(), None)),
            _ => assert_eq!(annotation.as_deref(), Some(name.as_str()), "{len}: the full name"),
        }
    }
    // Each policy's `Issued` event was recorded (event names are derived too).
    eventually("an Issued event per policy", Duration::from_secs(15), || async {
        let events = certshift_e2e::events(&s.admin, ns).await;
        (events.iter().filter(|(_, reason, _)| reason == "Issued").count() >= lengths.len()).then_some(())
    })
    .await;
    operator.stop().await;
    assert_judged_clean(&judge);
}
