//! The `certshift` binary on the committed examples: `plan`, `inspect`, `crds`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const NOW: &str = "2026-11-24T00:00:00Z";

fn example(file: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/conversion");
    dir.join(file).to_string_lossy().into_owned()
}

fn certshift(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_certshift"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("certshift runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn plan(files: &[String], extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["plan", "--now", NOW];
    for file in files {
        args.extend(["-f", file.as_str()]);
    }
    args.extend(extra);
    let out = certshift(&args, None);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), json, String::from_utf8(out.stderr).unwrap())
}

fn temp_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("certshift-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The thumbprint of the first certificate `certshift inspect` finds in a file.
fn thumbprint_of(file: &str) -> String {
    let out = certshift(&["inspect", "-o", "json", file], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let facts: Value = serde_json::from_slice(&out.stdout).unwrap();
    facts[0]["thumbprint"].as_str().unwrap().to_owned()
}

fn conversion_inputs() -> Vec<String> {
    vec![example("store.yaml"), example("declaration-common-name.yaml")]
}

#[test]
fn the_conversion_example_plans_the_three_service_fabric_stages() {
    let (code, json, stderr) = plan(&conversion_inputs(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["declaration"], "default/cluster");
    assert_eq!(json["blocked"], Value::Null);
    let revisions = json["revisions"].as_array().unwrap();
    assert_eq!(revisions[0]["revision"], 0);
    assert_eq!(revisions[0]["stage"], Value::Null);
    let mut stages: Vec<&str> = revisions[1..].iter().map(|r| r["stage"].as_str().unwrap()).collect();
    stages.dedup();
    assert_eq!(stages, ["AddSecondary", "SwitchToCommonName", "PinIssuers"]);
    for (index, revision) in revisions.iter().enumerate() {
        assert_eq!(revision["revision"], index as u64);
        let thumbprints: Vec<&str> = revision["accepted"]["thumbprints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let mut sorted = thumbprints.clone();
        sorted.sort();
        assert_eq!(thumbprints, sorted, "accepted.thumbprints sorted");
        assert!(
            thumbprints
                .iter()
                .all(|t| t.len() == 40 && !t.chars().any(|c| c.is_ascii_lowercase()))
        );
    }
    // Starts presenting Old1, ends presenting G, accepting cluster.example from the CA only.
    let old = thumbprint_of(&example("store.yaml")); // its first Secret is Old1's
    let goal = certshift(&["inspect", "-o", "json", &example("store.yaml")], None);
    let facts: Value = serde_json::from_slice(&goal.stdout).unwrap();
    let goal = facts
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["commonName"] == "cluster.example")
        .unwrap();
    let ca = thumbprint_of(&example("ca.yaml"));
    assert_eq!(revisions[0]["presented"], old.as_str());
    let last = revisions.last().unwrap();
    assert_eq!(last["presented"], goal["thumbprint"]);
    assert_eq!(
        last["accepted"],
        serde_json::json!({"thumbprints": [], "commonNames": [{"name": "cluster.example", "issuerThumbprints": [ca]}]})
    );
    // From every revision, a rollback to the declaration in force is possible.
    let rollback: Vec<(u64, bool)> = json["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["revision"].as_u64().unwrap(), r["possible"].as_bool().unwrap()))
        .collect();
    assert_eq!(rollback, (1..=5).map(|r| (r, true)).collect::<Vec<_>>());
}

#[test]
fn text_output_is_a_table_for_reviewers() {
    let out = certshift(
        &[
            "plan",
            "--now",
            NOW,
            "-o",
            "text",
            "-f",
            &conversion_inputs()[0],
            "-f",
            &conversion_inputs()[1],
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("default/cluster: 5 revisions to publish\n"), "{text}");
    assert!(text.contains(" ROLLBACK "), "the rollback column:\n{text}");
    for word in [
        "(in force)",
        "AddSecondary",
        "SwitchToCommonName",
        "PinIssuers",
        "CN cluster.example (anchors B22C612B)",
    ] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
}

#[test]
fn an_unpinned_goal_issuer_blocks_with_exit_3_and_json() {
    let ca = thumbprint_of(&example("ca.yaml"));
    let declaration = std::fs::read_to_string(example("declaration-common-name.yaml")).unwrap();
    let pinned_elsewhere = temp_file("pinned-elsewhere.yaml", &declaration.replace(&ca, &"AB".repeat(20)));
    let (code, json, _) = plan(&[example("store.yaml"), pinned_elsewhere], &[]);
    assert_eq!(code, 3);
    assert_eq!(json["blocked"]["reason"], "IssuerNotPinned");
    assert_eq!(json["revisions"].as_array().unwrap().len(), 1, "only what is in force");
}

#[test]
fn a_missing_store_blocks() {
    let (code, json, _) = plan(&[example("declaration-common-name.yaml")], &[]);
    assert_eq!(code, 3);
    assert_eq!(json["blocked"]["reason"], "StoreNotFound");
    assert!(
        json["blocked"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.store.observedCertificates[0]")
    );
}

#[test]
fn an_invalid_thumbprint_blocks_naming_the_field() {
    let declaration = std::fs::read_to_string(example("declaration-thumbprint.yaml")).unwrap();
    let typo = temp_file("typo.yaml", &declaration.replacen("thumbprint: ", "thumbprint: Z", 1));
    let (code, json, _) = plan(&[example("store.yaml"), typo], &[]);
    assert_eq!(code, 3);
    assert_eq!(json["blocked"]["reason"], "InvalidThumbprint");
    assert!(
        json["blocked"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.certificate.thumbprint: invalid character 'Z'")
    );
}

#[test]
fn without_status_the_desired_state_is_revision_zero() {
    let (code, json, stderr) = plan(&[example("store.yaml"), example("declaration-thumbprint.yaml")], &[]);
    assert_eq!(code, 0, "{stderr}");
    let revisions = json["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 1);
    assert_eq!(revisions[0]["revision"], 0);
}

#[test]
fn invalid_input_exits_1_naming_file_document_and_field() {
    let bad = temp_file(
        "bad.yaml",
        "kind: ConfigMap\nmetadata: {name: unrelated}\n---\napiVersion: certshift.io/v1alpha1\n\
         kind: ClusterCertificateDeclaration\nmetadata: {name: x}\nspec:\n  store:\n    observedCertificates: oops\n",
    );
    let (code, _, stderr) = plan(std::slice::from_ref(&bad), &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{bad}: document 2 (ClusterCertificateDeclaration x): spec.store.observedCertificates: invalid type"
        )),
        "{stderr}"
    );

    let store = std::fs::read_to_string(example("store.yaml")).unwrap();
    let broken = temp_file(
        "broken.yaml",
        &store.replacen(
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\n    ####",
            1,
        ),
    );
    let (code, _, stderr) = plan(&[broken.clone(), example("declaration-common-name.yaml")], &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{broken}: document 1 (Secret default/cluster-old): tls.crt: malformed PEM"
        )),
        "{stderr}"
    );

    let (code, _, stderr) = plan(&[temp_file("empty.yaml", "")], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no ClusterCertificateDeclaration"), "{stderr}");
}

#[test]
fn inspect_prints_facts_ready_to_paste() {
    let out = certshift(&["inspect", &example("store.yaml")], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Common name:        cluster.example"), "{text}");
    assert!(text.contains("Private key:        Matches"), "{text}");
    assert!(text.contains("Extended key usage: serverAuth, clientAuth"), "{text}");

    // PEM from standard input.
    let secret: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(example("ca.yaml")).unwrap()).unwrap();
    let pem = secret["stringData"]["tls.crt"].as_str().unwrap().to_owned();
    let out = certshift(&["inspect", "-o", "json", "-"], Some(&pem));
    assert!(out.status.success());
    let facts: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(facts[0]["isCa"], true);
    assert_eq!(facts[0]["keyUsages"], serde_json::json!(["keyCertSign", "crlSign"]));
    assert_eq!(facts[0]["selfSigned"], true);
    assert_eq!(facts[0]["issuerThumbprint"], facts[0]["thumbprint"]);

    let out = certshift(&["inspect", "-"], Some("not a certificate"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-: certificate 0 is not valid DER X.509"));
}

#[test]
fn crds_prints_the_committed_crds() {
    let out = certshift(&["crds"], None);
    let committed =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/certshift.io.yaml"));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed.unwrap());
}

/// The members example: its declaration is valid, its pods mount both outputs
/// in one projected volume (never subPath), and the agent's Pod comes from the
/// downward API.
#[test]
fn the_members_example_runs_the_agent_as_documented() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/members/members.yaml")).unwrap();
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let declaration = documents
        .iter()
        .find(|d| d["kind"] == "ClusterCertificateDeclaration")
        .expect("a declaration");
    let declaration: certshift::crd::ClusterCertificateDeclaration =
        serde_yaml::from_value(declaration.clone()).unwrap();
    certshift::declaration::spec::parse(&declaration.spec).expect("valid");
    let set = documents
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .expect("a StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    let sources = &pod["volumes"][0]["projected"]["sources"];
    assert_eq!(sources[0]["secret"]["name"], "cluster-presentation");
    assert_eq!(sources[1]["configMap"]["name"], "cluster-validation");
    for container in pod["containers"].as_sequence().unwrap() {
        for mount in container["volumeMounts"].as_sequence().into_iter().flatten() {
            assert!(mount.get("subPath").is_none(), "never subPath: {mount:?}");
        }
    }
    let agent = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "certshift-agent")
        .expect("the agent");
    assert_eq!(agent["args"][0], "agent");
    assert_eq!(agent["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
}

/// Flags that cannot work are refused at start, naming the flag and the
/// problem, not retried forever once running.
#[test]
fn agent_flags_that_cannot_work_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("certshift-cli-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    for (args, said) in [
        (
            vec!["--reload-signal", "HUPP", "--reload-process", "nginx"],
            "--reload-signal \"HUPP\": not one of HUP",
        ),
        (
            vec!["--inbound", "127.0.0.1:8443=127.0.0.1"],
            "\"127.0.0.1\" is not HOST:PORT",
        ),
        (
            vec!["--outbound", "127.0.0.1:9443=peer:0"],
            "\"peer:0\" is not HOST:PORT",
        ),
        (vec!["--inbound", "8443=127.0.0.1:8080"], "LISTEN \"8443\""),
    ] {
        let mut full = vec!["agent", "--dir", dir, "--no-ack", "--metrics-addr", "127.0.0.1:0"];
        full.extend(args.iter().copied());
        let out = certshift(&full, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?} should say {said:?}: {stderr}");
    }
}

/// Debian's bundle of the public roots (what trust-manager's `useDefaultCAs`
/// holds); `make test` installs the ca-certificates package.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn system_roots() -> String {
    std::fs::read_to_string(SYSTEM_ROOTS)
        .unwrap_or_else(|err| panic!("{SYSTEM_ROOTS}: {err}: make test installs Debian's ca-certificates"))
}

#[test]
fn inspect_lists_every_certificate_of_the_system_bundle() {
    let roots = system_roots();
    let out = certshift(&["inspect", "-o", "json", SYSTEM_ROOTS], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let facts: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = facts.as_array().unwrap().len();
    assert_eq!(listed, roots.matches("-----BEGIN CERTIFICATE-----").count());
    assert!(listed > 100, "{listed} certificates: a real bundle");
}

/// A declaration whose trust bundle is the system's public roots plus the
/// cluster CA, as trust-manager writes one: planned, not refused.
#[test]
fn a_trust_bundle_of_the_system_roots_and_the_cluster_ca_is_planned() {
    let ca_secret: k8s_openapi::api::core::v1::Secret =
        serde_yaml::from_str(&std::fs::read_to_string(example("ca.yaml")).unwrap()).unwrap();
    let ca = &ca_secret.string_data.unwrap()["tls.crt"];
    let bundle = format!("{}{ca}", system_roots());
    let indented: String = bundle.lines().map(|l| format!("    {l}\n")).collect();
    let config_map = temp_file(
        "roots.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: roots\n  namespace: default\ndata:\n  ca.crt: |\n{indented}"
        ),
    );
    let declaration = std::fs::read_to_string(example("declaration-common-name.yaml"))
        .unwrap()
        .replace("      name: cluster-trust\n", "      name: roots\n");
    assert!(declaration.contains("name: roots"));
    let declaration = temp_file("with-roots.yaml", &declaration);
    let (code, json, stderr) = plan(&[example("store.yaml"), declaration, config_map], &[]);
    assert_eq!(code, 0, "{stderr}\n{json}");
    assert_eq!(json["blocked"], Value::Null);
    let stages: Vec<&str> = json["revisions"].as_array().unwrap()[1..]
        .iter()
        .map(|r| r["stage"].as_str().unwrap())
        .collect();
    assert!(
        stages.contains(&"SwitchToCommonName") && stages.contains(&"PinIssuers"),
        "the conversion, unpinned through the bundle's CA: {json}"
    );
}

/// `certshift plan` judges CRLs as the operator does: the example CA revokes
/// the goal certificate, and the plan is blocked, naming it.
#[test]
fn a_crl_revoking_the_goal_blocks_the_plan() {
    use rcgen::{CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber};
    let secret = |file: &str, name: &str| -> k8s_openapi::api::core::v1::Secret {
        std::fs::read_to_string(example(file))
            .unwrap()
            .split("\n---\n")
            .filter_map(|doc| serde_yaml::from_str::<k8s_openapi::api::core::v1::Secret>(doc).ok())
            .find(|s| s.metadata.name.as_deref() == Some(name) && s.string_data.is_some())
            .expect(name)
    };
    let ca = secret("ca.yaml", "cluster-ca").string_data.unwrap();
    let goal = secret("store.yaml", "cluster-cn").string_data.unwrap();
    let facts = certshift::facts::inspect("goal", goal["tls.crt"].as_bytes())
        .unwrap()
        .remove(0);
    let serial: Vec<u8> = (0..facts.serial.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&facts.serial[i..i + 2], 16).unwrap())
        .collect();
    let issuer = Issuer::from_ca_cert_pem(&ca["tls.crt"], KeyPair::from_pem(&ca["tls.key"]).unwrap()).unwrap();
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2026, 11, 1),
        next_update: rcgen::date_time_ymd(2026, 12, 31),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: rcgen::date_time_ymd(2026, 11, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .pem()
    .unwrap();
    let indented: String = crl.lines().map(|l| format!("    {l}\n")).collect();
    let crls = temp_file(
        "crls.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: crls\n  namespace: default\ndata:\n  ca.crl: |\n{indented}"
        ),
    );
    let declaration = std::fs::read_to_string(example("declaration-common-name.yaml"))
        .unwrap()
        .replace(
            "  trustBundle:\n",
            "  revocation:\n    crls:\n    - configMapRef: {name: crls}\n  trustBundle:\n",
        );
    let declaration = temp_file("revoked.yaml", &declaration);
    let (code, json, stderr) = plan(&[example("store.yaml"), declaration, crls], &[]);
    assert_eq!(code, 3, "blocked: {stderr}\n{json}");
    assert_eq!(json["blocked"]["reason"], "CertificateRevoked", "{json}");
    let message = json["blocked"]["message"].as_str().unwrap();
    assert!(message.contains(facts.thumbprint.as_str()), "{message}");
}

/// A trust bundle change is planned in stages from the anchors in force
/// (`status.effective.trustAnchors`): the cluster CA in force and the public
/// roots added, a root removed that nothing presented needs, and the
/// cluster CA removed while the presented certificate chains to it (held,
/// exit 3, naming both).
#[test]
fn a_trust_bundle_change_is_planned_in_stages_from_the_anchors_in_force() {
    let ca = thumbprint_of(&example("ca.yaml"));
    let facts: Value =
        serde_json::from_slice(&certshift(&["inspect", "-o", "json", &example("store.yaml")], None).stdout).unwrap();
    let presented = facts
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["commonName"] == "cluster.example")
        .unwrap()["thumbprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let public_root = thumbprint_of(SYSTEM_ROOTS);
    let bundle = |name: &str, pem: &str| {
        let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
        temp_file(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  ca.crt: |\n{indented}"
            ),
        )
    };
    let ca_pem = {
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_yaml::from_str(&std::fs::read_to_string(example("ca.yaml")).unwrap()).unwrap();
        secret.string_data.unwrap()["tls.crt"].clone()
    };
    // Unpinned (through the bundle), in force presenting the CA's certificate.
    let declaration = |bundle_name: &str, in_force: &[&str]| {
        let text = std::fs::read_to_string(example("declaration-common-name.yaml")).unwrap();
        let spec = text.split("# What is in force").next().unwrap();
        let spec = spec
            .replace(
                &format!("certificateIssuerThumbprint: {ca}"),
                "certificateIssuerThumbprint: \"\"",
            )
            .replace("      name: cluster-trust\n", &format!("      name: {bundle_name}\n"));
        let status = format!(
            "status:\n  effective:\n    revision: 4\n    certificateCommonNames:\n      commonNames:\n      - certificateCommonName: cluster.example\n    presented: {presented}\n    trustAnchors: [{}]\n",
            in_force.join(", ")
        );
        temp_file(&format!("bundle-{bundle_name}.yaml"), &format!("{spec}{status}"))
    };
    let summary = |json: &Value| -> Vec<(String, usize, String)> {
        json["revisions"].as_array().unwrap()[1..]
            .iter()
            .map(|r| {
                (
                    r["stage"].as_str().unwrap().to_owned(),
                    r["anchors"].as_array().map_or(0, Vec::len),
                    r["cause"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect()
    };
    let roots = system_roots().matches("-----BEGIN CERTIFICATE-----").count();
    let with_public = bundle("with-public", &format!("{}{ca_pem}", system_roots()));
    let public_only = bundle("public-only", &system_roots());

    // The public roots added: trusted at once, by a revision of their own.
    let (code, json, stderr) = plan(
        &[example("store.yaml"), declaration("with-public", &[&ca]), with_public],
        &[],
    );
    assert_eq!(code, 0, "{stderr}\n{json}");
    assert_eq!(
        summary(&json),
        [("WidenValidation".to_owned(), roots + 1, "TrustBundleChanged".to_owned())]
    );
    // A public root removed: nothing presented needs it, dropped at once.
    let (code, json, stderr) = plan(
        &[
            example("store.yaml"),
            declaration("cluster-trust", &[&ca, &public_root]),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}\n{json}");
    assert_eq!(
        summary(&json),
        [("NarrowValidation".to_owned(), 1, "TrustBundleChanged".to_owned())]
    );
    assert_eq!(json["revisions"][1]["anchors"], serde_json::json!([ca]));
    // The cluster CA removed while what is presented chains to it: held.
    let inputs = [example("store.yaml"), declaration("public-only", &[&ca]), public_only];
    let (code, json, stderr) = plan(&inputs, &[]);
    assert_eq!(code, 3, "{stderr}\n{json}");
    assert_eq!(json["blocked"], Value::Null);
    assert_eq!(json["held"]["reason"], "TrustAnchorInUse", "{json}");
    let message = json["held"]["message"].as_str().unwrap();
    assert!(message.contains(&ca) && message.contains(&presented), "{message}");
    assert_eq!(
        summary(&json),
        [("WidenValidation".to_owned(), roots + 1, "TrustBundleChanged".to_owned())],
        "the public roots are still added"
    );
    let (code, text, _) = {
        let mut args = vec!["plan", "--now", NOW, "-o", "text"];
        for file in &inputs {
            args.extend(["-f", file.as_str()]);
        }
        let out = certshift(&args, None);
        (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), ())
    };
    assert_eq!(code, 3);
    assert!(text.contains("then held: TrustAnchorInUse"), "{text}");
    assert!(text.contains("CAUSE") && text.contains("TrustBundleChanged"), "{text}");
}
