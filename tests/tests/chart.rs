//! The chart as Helm renders it (hack/chart.sh, run by `make test`, writes
//! target/chart/): the CRDs it templates are `crds/`'s, kept on uninstall
//! unless `crds.keep=false`, and the values users set land where they should.

use std::path::PathBuf;

fn rendered(file: &str) -> Vec<serde_json::Value> {
    let dir = std::env::var("CERTSHIFT_CHART_RENDERED")
        .map(|path| PathBuf::from(path).parent().expect("dir").to_owned())
        .unwrap_or_else(|_| certshift_e2e::repo_path("target/chart"));
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}: hack/chart.sh target/chart renders it (make test does)",
            path.display()
        )
    });
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("YAML"))
        .filter(|value: &serde_json::Value| !value.is_null())
        .collect()
}

fn of_kind<'a>(documents: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

/// Helm's `toYaml` writes `minimum: 0` where crds/ has `0.0`: the same number.
fn numbers_as_floats(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), numbers_as_floats(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn templated_crds_are_the_committed_ones_and_kept_on_uninstall_by_default() {
    let committed: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(
        &std::fs::read_to_string(certshift_e2e::repo_path("crds/certshift.io.yaml")).expect("crds/"),
    )
    .map(|document| serde::Deserialize::deserialize(document).expect("CRD"))
    .collect();
    for (file, kept) in [("single-namespace.yaml", true), ("crds-not-kept.yaml", false)] {
        let documents = rendered(file);
        let crds = of_kind(&documents, "CustomResourceDefinition");
        assert_eq!(crds.len(), committed.len(), "{file}");
        for (crd, committed) in crds.into_iter().zip(&committed) {
            let mut crd = crd.clone();
            let policy = crd["metadata"]
                .as_object_mut()
                .and_then(|m| m.remove("annotations"))
                .map(|a| a["helm.sh/resource-policy"].clone());
            assert_eq!(
                policy,
                kept.then(|| "keep".into()),
                "{file}: {}",
                crd["metadata"]["name"]
            );
            assert!(
                numbers_as_floats(&crd) == numbers_as_floats(committed),
                "{file}: the chart's CRD {} is not crds/'s",
                crd["metadata"]["name"]
            );
        }
    }
    assert!(of_kind(&rendered("default.yaml"), "CustomResourceDefinition").is_empty());
}

#[test]
fn the_usual_values_reach_the_objects() {
    // single-namespace.yaml: fullnameOverride cs, imagePullSecrets, a PDB,
    // ServiceMonitor labels, ServiceAccount annotations (hack/chart.py).
    let documents = rendered("single-namespace.yaml");
    let deployment = of_kind(&documents, "Deployment")[0];
    assert_eq!(deployment["metadata"]["name"], "cs");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"],
        "registry"
    );
    let pdb = of_kind(&documents, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);
    let monitor = of_kind(&documents, "ServiceMonitor")[0];
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    let account = of_kind(&documents, "ServiceAccount")[0];
    assert_eq!(account["metadata"]["annotations"]["example.com/identity"], "certshift");
    assert!(
        of_kind(&rendered("default.yaml"), "PodDisruptionBudget").is_empty(),
        "off by default"
    );
}
