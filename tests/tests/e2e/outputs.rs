//! What consumers that are not PEM-native get: templates and formats, with each revision.

use super::*;

pub async fn consumer_templates_and_formats_reach_the_outputs_without_rewrites(s: Scenario) {
    let ns = &s.namespace;
    apply_yaml(&s.admin, ns, &example("store.yaml")).await;
    let consumer = std::fs::read_to_string(certshift_e2e::repo_path(
        "examples/consumers/machine-learning-server.yaml",
    ))
    .unwrap();
    apply_yaml(&s.admin, ns, &consumer).await;
    let operator = Operator::start(&s.plane, ns);
    let ready = eventually("the consumer declaration", Duration::from_secs(60), || async {
        let d = Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
            .get("machine-learning-server")
            .await
            .ok()?;
        is_true(&d, "Ready").then_some(d)
    })
    .await;
    let presented = ready.status.unwrap().presenting.unwrap().thumbprint;
    let map = Api::<ConfigMap>::namespaced(s.admin.clone(), ns)
        .get("machine-learning-server-validation")
        .await
        .expect("validation ConfigMap");
    let settings: serde_json::Value = serde_json::from_str(&map.data.unwrap()["appsettings.json"]).expect("JSON");
    assert_eq!(
        settings["Kestrel"]["HttpsCertificate"]["Thumbprint"],
        presented.as_str()
    );
    assert_eq!(
        settings["Kestrel"]["HttpsCertificate"]["SubjectName"],
        "CN=cluster.example"
    );

    // Formats for consumers that are not PEM-native.
    apply(&s.admin, ns, &secret("pfx-password", None, &[("password", "s3cret")])).await;
    use certshift::crd::OutputFormat;
    Declaration::file("examples/consumers/machine-learning-server.yaml")
        .named("hpc-pack")
        .formats(
            &[OutputFormat::Der, OutputFormat::Pkcs12, OutputFormat::CombinedPem],
            "pfx-password",
        )
        .apply(&s.admin, ns)
        .await;
    // Settled: Ready, and the members' acknowledgement recorded (the
    // reconcile after the publication, which tells the stage completed).
    eventually("the formats declaration", Duration::from_secs(60), || async {
        let d = Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
            .get("hpc-pack")
            .await
            .ok()?;
        let acknowledged = d.status.as_ref()?.upgrade.as_ref()?.acknowledged_time.is_some();
        (is_true(&d, "Ready") && acknowledged).then_some(())
    })
    .await;
    let secret = Api::<Secret>::namespaced(s.admin.clone(), ns)
        .get("hpc-pack-presentation")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    let cer = certshift::facts::inspect("tls.cer", &data["tls.cer"].0).expect("DER parses back");
    assert_eq!(cer[0].thumbprint.as_str(), presented);
    assert!(String::from_utf8_lossy(&data["tls-combined.pem"].0).starts_with("-----BEGIN PRIVATE KEY-----"));
    let pfx = std::env::temp_dir().join(format!("certshift-e2e-{}.pfx", std::process::id()));
    std::fs::write(&pfx, &data["tls.pfx"].0).unwrap();
    let opened = std::process::Command::new("openssl")
        .args(["pkcs12", "-in"])
        .arg(&pfx)
        .args(["-passin", "pass:s3cret", "-nodes", "-nokeys"])
        .output()
        .expect("openssl");
    let _ = std::fs::remove_file(&pfx);
    assert!(opened.status.success(), "{}", String::from_utf8_lossy(&opened.stderr));
    // The salted PKCS#12 file is not rewritten by later reconciles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = s.plane.writes(OPERATOR_USER, ns);
    let touch = serde_json::json!({"metadata": {"annotations": {"e2e/touched": "yes"}}});
    Api::<ClusterCertificateDeclaration>::namespaced(s.admin.clone(), ns)
        .patch("hpc-pack", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = s.plane.writes(OPERATOR_USER, ns);
    assert_eq!(after[before.len()..], [] as [String; 0], "writes in an unchanged world");
    operator.stop().await;
}
