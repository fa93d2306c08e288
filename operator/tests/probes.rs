//! The endpoint probes against servers that behave as real ones do: they keep
//! an accepted connection open waiting for a request, or hang up with or
//! without `close_notify`, or refuse the client certificate in TLS 1.2 or
//! TLS 1.3; and against real third-party servers, `openssl s_server` and
//! nginx (`hack/test.sh` installs both from Debian; these tests fail, never
//! skip, without them).

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certshift::controller::probe::{self, Accepted};
use certshift::crd::{Endpoint, HttpGetProbe};
use certshift::outputs::{PresentedMaterial, RulesJson};
use certshift::rules::{Accepted as Rules, Clients};
use certshift::verifier::{Identity, Verifier};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use certshift_verifier::testing::{Issued as Cert, issue};

struct Pki {
    ca: Cert,
    server: Cert,
    /// Issued by the CA the servers trust.
    good: Cert,
    /// Issued by another CA.
    bad: Cert,
    dir: PathBuf,
}

fn pki() -> Pki {
    let ca = issue("Members CA", None, true);
    let other = issue("Other CA", None, true);
    let server = issue("localhost", Some(&ca), false);
    let good = issue("member.example", Some(&ca), false);
    let bad = issue("member.example", Some(&other), false);
    let dir = std::env::temp_dir().join(format!("certshift-probes-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, text) in [
        ("ca.pem", &ca.pem),
        ("server.pem", &server.pem),
        ("server.key", &server.key_pem()),
    ] {
        std::fs::write(dir.join(name), text).expect("write");
    }
    Pki {
        ca,
        server,
        good,
        bad,
        dir,
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn material(issued: &Cert) -> PresentedMaterial {
    PresentedMaterial {
        tls_crt: issued.pem.clone(),
        tls_key: issued.key_pem(),
        ca_crt: String::new(),
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint {
        address: format!("127.0.0.1:{port}"),
        server_name: Some("localhost".to_owned()),
        ..Endpoint::default()
    }
}

/// What a Rust test server does after a handshake it accepted.
#[derive(Clone, Copy, Debug)]
enum After {
    KeepOpen,
    HangUp,
    CloseNotify,
    Data,
}

/// Takes its time over each client certificate, as a loaded server does,
/// then gives the certshift verifier's verdict.
#[derive(Debug)]
struct Slow {
    verdict_after: Duration,
    rules: Arc<Verifier>,
}

impl rustls::server::danger::ClientCertVerifier for Slow {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Blocks the server's own runtime (see `rust_server`).
        std::thread::sleep(self.verdict_after);
        self.rules.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.rules.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.rules.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::server::danger::ClientCertVerifier::supported_verify_schemes(self.rules.as_ref())
    }
}

/// How a Rust test server is set up beyond its TLS version.
#[derive(Clone, Copy, Debug)]
struct Setup {
    after: After,
    /// TLS 1.3 session tickets sent after a handshake (rustls: 2 by default).
    tickets: usize,
    /// How long it takes over a client certificate.
    verdict_after: Duration,
}

impl From<After> for Setup {
    fn from(after: After) -> Self {
        Setup {
            after,
            tickets: 2,
            verdict_after: Duration::ZERO,
        }
    }
}

/// A rustls server presenting `pki.server`, admitting clients from the
/// members CA (the certshift verifier, pinned to that CA), in one TLS version.
async fn rust_server(pki: &Pki, version: &'static rustls::SupportedProtocolVersion, setup: impl Into<Setup>) -> u16 {
    let Setup {
        after,
        tickets,
        verdict_after,
    } = setup.into();
    let rules = RulesJson {
        revision: 1,
        presented: None,
        accepted: Rules::new(
            [],
            [certshift::rules::CommonNameRule::new("member.example", [pki.ca.sha1()])],
        ),
        clients: Clients::default(),
        anchors: None,
        tolerated: Vec::new(),
    };
    let verifier = Arc::new(
        Verifier::from_outputs(|key| match key {
            "rules.json" => serde_json::to_vec(&rules).ok(),
            "ca-bundle.crt" => Some(pki.ca.pem.clone().into_bytes()),
            _ => None,
        })
        .expect("verifier"),
    );
    let identity = Identity::from_pem(pki.server.pem.as_bytes(), pki.server.key_pem().as_bytes()).expect("identity");
    let slow = Arc::new(Slow {
        verdict_after,
        rules: verifier,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[version])
        .expect("version")
        .with_client_cert_verifier(slow)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .expect("config");
    config.send_tls13_tickets = tickets;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("non-blocking");
    // A runtime of its own, as a server is a process of its own: a slow
    // verdict blocks the server, never the probe's timers.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    match after {
                        After::KeepOpen => tokio::time::sleep(Duration::from_secs(30)).await,
                        After::HangUp => drop(tls.into_inner().0),
                        After::CloseNotify => {
                            let _ = tls.shutdown().await;
                        }
                        After::Data => {
                            let _ = tls.write_all(b"hello\n").await;
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                    }
                });
            }
        });
    });
    port
}

#[tokio::test]
async fn servers_that_accept_are_told_from_servers_that_refuse() {
    let pki = pki();
    let versions: [(&str, &'static rustls::SupportedProtocolVersion, Accepted); 2] = [
        // TLS 1.2: the handshake carried the verdict; silence is acceptance.
        ("TLS 1.2", &rustls::version::TLS12, Accepted::Idle),
        // TLS 1.3: the server's tickets say it took the certificate.
        ("TLS 1.3", &rustls::version::TLS13, Accepted::Ticket),
    ];
    for (label, version, kept_open) in versions {
        for (after, expected) in [
            (After::KeepOpen, kept_open),
            (After::HangUp, Accepted::Eof),
            (After::CloseNotify, Accepted::CloseNotify),
            (After::Data, Accepted::Data),
        ] {
            let port = rust_server(&pki, version, after).await;
            let answer = probe::accepts(&endpoint(port), &material(&pki.good)).await;
            assert_eq!(answer, Ok(expected), "{label}, {after:?}");
            let presented = probe::presented(&endpoint(port)).await;
            assert_eq!(presented, Ok(pki.server.sha1()), "{label}, {after:?}");
            let refused = probe::accepts(&endpoint(port), &material(&pki.bad)).await;
            let err = refused.expect_err("a certificate from another CA is refused");
            assert!(err.contains("alert"), "{label}, {after:?}: {err}");
        }
    }
}

/// A loaded server's TLS 1.3 refusal comes well after the client finished:
/// read as silence, it would present a certificate the member rejects.
#[tokio::test]
async fn a_slow_tls13_refusal_is_a_refusal_and_silence_without_tickets_is_waited_out() {
    let pki = pki();
    let slow = Setup {
        verdict_after: Duration::from_millis(1500),
        ..After::KeepOpen.into()
    };
    let port = rust_server(&pki, &rustls::version::TLS13, slow).await;
    let refused = probe::accepts(&endpoint(port), &material(&pki.bad)).await;
    let err = refused.expect_err("refused after 1.5 s");
    assert!(err.contains("alert"), "{err}");
    assert_eq!(
        probe::accepts(&endpoint(port), &material(&pki.good)).await,
        Ok(Accepted::Ticket),
        "accepted after 1.5 s"
    );
    // A server that sends no tickets and keeps the connection open: accepted
    // only once the timeout has passed without an alert.
    let ticketless = Setup {
        tickets: 0,
        ..After::KeepOpen.into()
    };
    let port = rust_server(&pki, &rustls::version::TLS13, ticketless).await;
    let started = Instant::now();
    assert_eq!(
        probe::accepts(&endpoint(port), &material(&pki.good)).await,
        Ok(Accepted::Idle)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "silence is acceptance only after the timeout: {:?}",
        started.elapsed()
    );
    let refused = probe::accepts(&endpoint(port), &material(&pki.bad)).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn nothing_listening_and_no_tls_are_errors_not_acceptances() {
    let pki = pki();
    let closed = probe::accepts(&endpoint(free_port()), &material(&pki.good)).await;
    assert!(closed.is_err(), "{closed:?}");
    // A plain TCP server that answers no TLS at all.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
        }
    });
    let plain = probe::accepts(&endpoint(port), &material(&pki.good)).await;
    assert!(plain.is_err(), "{plain:?}");
}

/// A process killed when dropped.
struct Server(Child);

impl Drop for Server {
    /// SIGTERM, so nginx's master stops its workers (SIGKILL left them
    /// running, orphaned); SIGKILL only if it has not exited after 5 s.
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn program(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed: hack/test.sh installs it from Debian (openssl, nginx-light)");
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn openssl_s_server_requiring_a_client_certificate() {
    let pki = pki();
    for version in ["-tls1_2", "-tls1_3"] {
        let port = free_port();
        let server = Server(
            Command::new(program("openssl"))
                .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
                .arg("-cert")
                .arg(pki.dir.join("server.pem"))
                .arg("-key")
                .arg(pki.dir.join("server.key"))
                .arg("-CAfile")
                .arg(pki.dir.join("ca.pem"))
                .args(["-Verify", "2", "-verify_return_error", version])
                // Its stdin stays open: s_server keeps each connection open.
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("openssl s_server"),
        );
        wait_listening(port).await;
        let answer = probe::accepts(&endpoint(port), &material(&pki.good)).await;
        // OpenSSL sends two tickets after a TLS 1.3 handshake by default.
        let kept_open = if version == "-tls1_3" {
            Accepted::Ticket
        } else {
            Accepted::Idle
        };
        assert_eq!(answer, Ok(kept_open), "{version}: accepted, the connection kept open");
        assert_eq!(
            probe::presented(&endpoint(port)).await,
            Ok(pki.server.sha1()),
            "{version}"
        );
        let refused = probe::accepts(&endpoint(port), &material(&pki.bad)).await;
        let err = refused.expect_err("refused");
        assert!(err.contains("alert"), "{version}: {err}");
        drop(server);
    }
}

#[tokio::test]
async fn nginx_with_ssl_verify_client_refuses_over_http() {
    let pki = pki();
    let port = free_port();
    let dir = &pki.dir;
    let config = format!(
        "daemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\nevents {{}}\nhttp {{\n  access_log {dir}/access.log;\n  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {dir}/server.pem; ssl_certificate_key {dir}/server.key;\n    ssl_client_certificate {dir}/ca.pem; ssl_verify_client on;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let server = Server(
        Command::new(program("nginx"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx"),
    );
    wait_listening(port).await;
    assert_eq!(probe::presented(&endpoint(port)).await, Ok(pki.server.sha1()));
    // nginx completes the handshake whatever the client certificate, and
    // says what it thinks of it at the HTTP level: without `httpGet`, the
    // pre-flight cannot tell (the reason `httpGet` exists).
    let silent = probe::accepts(&endpoint(port), &material(&pki.bad)).await;
    assert_eq!(silent, Ok(Accepted::Idle));
    let over_http = Endpoint {
        http_get: Some(HttpGetProbe { path: "/".to_owned() }),
        ..endpoint(port)
    };
    assert_eq!(
        probe::accepts(&over_http, &material(&pki.good)).await,
        Ok(Accepted::Http(200))
    );
    let refused = probe::accepts(&over_http, &material(&pki.bad)).await;
    let err = refused.expect_err("refused over HTTP");
    assert!(err.contains("400"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
