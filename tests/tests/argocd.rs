//! Argo CD's own test layout for health checks: each kind's
//! `health_test.yaml` lists testdata (objects captured from the real API
//! server by the e2e scenario `argo_cd_and_kstatus_read_every_state_of_every_kind`,
//! `CERTSHIFT_CAPTURE_ARGOCD=1`) and the health Argo CD must give each;
//! `health.lua` runs in a real Lua 5.1, as Argo CD runs it in gopher-lua.

use certshift_e2e::argocd;

const KINDS: [&str; 3] = [
    "ClusterCertificateDeclaration",
    "ObservedCertificate",
    "CertificatePolicy",
];

#[test]
fn health_checks_give_each_captured_state_its_health() {
    let mut seen = std::collections::BTreeSet::new();
    for kind in KINDS {
        let dir = argocd::kind_dir(kind);
        let tests: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml"))
                .expect("health_test.yaml parses");
        let cases = tests["tests"].as_sequence().expect("tests:");
        assert!(cases.len() >= 3, "{kind}: {} cases", cases.len());
        for case in cases {
            let input = case["inputPath"].as_str().expect("inputPath");
            let object: serde_json::Value =
                serde_yaml::from_str(&std::fs::read_to_string(dir.join(input)).expect("testdata")).expect("yaml");
            assert_eq!(object["kind"], kind, "{input}");
            let (status, message) = argocd::health(kind, &object);
            let expected = &case["healthStatus"];
            assert_eq!(status, expected["status"].as_str().unwrap(), "{kind} {input}");
            assert_eq!(message, expected["message"].as_str().unwrap(), "{kind} {input}");
            seen.insert(status);
        }
    }
    let all: std::collections::BTreeSet<String> = ["Healthy", "Progressing", "Degraded", "Suspended"]
        .map(String::from)
        .into();
    assert_eq!(seen, all, "every health Argo CD can give is covered");
}

/// The script, not the testdata: an object without status (just applied),
/// without conditions, or with an edit not yet observed is Progressing.
#[test]
fn objects_certshift_has_not_reported_on_are_progressing() {
    let cases = [
        serde_json::json!({"kind": "ObservedCertificate", "metadata": {"generation": 1}}),
        serde_json::json!({"kind": "ObservedCertificate", "metadata": {"generation": 1}, "status": {}}),
        serde_json::json!({"kind": "ObservedCertificate", "metadata": {"generation": 2},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "m"}]}}),
    ];
    for object in cases {
        assert_eq!(
            argocd::health("ObservedCertificate", &object).0,
            "Progressing",
            "{object}"
        );
    }
    // Three kinds, one script: Argo CD needs a file per kind.
    let scripts: Vec<String> = KINDS
        .iter()
        .map(|kind| std::fs::read_to_string(argocd::kind_dir(kind).join("health.lua")).expect("health.lua"))
        .collect();
    assert!(scripts.windows(2).all(|w| w[0] == w[1]));
}
