//! The `serve` example, a Rust member serving mutual TLS with the verifier,
//! called by the real `curl`: a member and an allowed client are admitted
//! (and told how), a certificate from another CA is refused in the handshake,
//! and a new revision in the volume reaches the next handshake.

#[allow(dead_code)]
#[path = "../examples/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::process::Command;

use certshift_verifier::RulesJson;
use certshift_verifier::rules::{Accepted, ClientThumbprint, Clients, CommonNameRule};
use certshift_verifier::testing::{Issued, cert};
use certshift_verifier::thumbprint::Thumbprint;
use jiff::{SignedDuration, Timestamp};

/// Valid from yesterday for a year: the example judges with the real clock.
fn valid(builder: certshift_verifier::testing::CertBuilder) -> certshift_verifier::testing::CertBuilder {
    let now = Timestamp::now();
    let day = SignedDuration::from_hours(24);
    builder.valid(&(now - day).to_string(), &(now + day * 365).to_string())
}

fn thumbprint(issued: &Issued) -> Thumbprint {
    use sha1::Digest as _;
    Thumbprint::from_digest(&sha1::Sha1::digest(&issued.der))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// A revision's volume: the member's certificate and the rules.
fn publish(dir: &Path, revision: u64, member: &Issued, ca: &Issued, clients: Clients) {
    let rules = RulesJson {
        revision,
        presented: Some(thumbprint(member)),
        accepted: Accepted::new([], [CommonNameRule::new("cluster.example", [thumbprint(ca)])]),
        clients,
        anchors: Some(Vec::new()),
        tolerated: Vec::new(),
    };
    write(dir, "tls.crt", &member.pem);
    write(dir, "tls.key", &member.key_pem());
    write(dir, "ca-bundle.crt", &ca.pem);
    write(dir, "rules.json", &serde_json::to_string(&rules).expect("rules.json"));
}

/// `curl` to the member presenting `who`: its exit code and what it printed.
fn curl(dir: &Path, port: u16, who: &str) -> (i32, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(dir.join("peer-ca.pem"))
        .arg("--cert")
        .arg(dir.join(format!("{who}.crt")))
        .arg("--key")
        .arg(dir.join(format!("{who}.key")))
        .args(["--resolve", &format!("cluster.example:{port}:127.0.0.1")])
        .arg(format!("https://cluster.example:{port}/"))
        .output()
        .expect("curl (make test installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn curl_is_admitted_or_refused_by_the_revision_in_the_volume() {
    let dir = std::env::temp_dir().join(format!("certshift-serve-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = valid(cert("Cluster CA").ca()).self_signed();
    let other_ca = valid(cert("Other CA").ca()).self_signed();
    let member = valid(cert("cluster.example").dns("cluster.example").server_and_client_auth()).signed_by(&ca);
    let peer = valid(cert("cluster.example").dns("cluster.example").server_and_client_auth()).signed_by(&ca);
    let admin = valid(cert("admin").server_and_client_auth()).signed_by(&other_ca);
    let rogue = valid(cert("cluster.example").server_and_client_auth()).signed_by(&other_ca);
    write(&dir, "peer-ca.pem", &ca.pem);
    // The admin sends its chain: a thumbprint is admitted when its chain
    // builds (to any root, Service Fabric's rule), and its CA is not in the
    // revision's files.
    let chains = [
        ("peer", &peer, peer.pem.clone()),
        ("admin", &admin, admin.pem.clone() + &other_ca.pem),
        ("rogue", &rogue, rogue.pem.clone() + &other_ca.pem),
    ];
    for (who, issued, chain) in chains {
        write(&dir, &format!("{who}.crt"), &chain);
        write(&dir, &format!("{who}.key"), &issued.key_pem());
    }
    let admins = Clients {
        thumbprints: vec![ClientThumbprint {
            thumbprint: thumbprint(&admin),
            is_admin: true,
        }],
        common_names: Vec::new(),
    };
    publish(&dir, 5, &member, &ca, Clients::default());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = dir.clone();
    std::thread::spawn(move || serve::serve(listener, &served));

    let (code, text) = curl(&dir, port, "peer");
    assert_eq!((code, text.as_str()), (0, "admitted as a member by revision 5\n"));
    // Not a member, not yet on an allow-list: refused in the handshake.
    for who in ["admin", "rogue"] {
        let (code, text) = curl(&dir, port, who);
        assert_ne!(code, 0, "{who} was admitted: {text}");
        assert!(!text.contains("admitted"), "{who}: {text}");
    }

    // The next revision allows the admin by thumbprint: the next handshake has it.
    publish(&dir, 6, &member, &ca, admins);
    let (code, text) = curl(&dir, port, "admin");
    assert_eq!(
        (code, text.as_str()),
        (0, "admitted as a client (admin: true) by revision 6\n")
    );
    let (code, text) = curl(&dir, port, "rogue");
    assert_ne!(code, 0, "rogue was admitted: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}
