//! A mutual-TLS HTTP server whose peers are admitted by a certshift
//! revision's rules: what a Rust member does without the agent sidecar.
//!
//! ```sh
//! cargo run -p certshift-verifier --example serve -- /etc/certshift 0.0.0.0:8443
//! curl --cert client.crt --key client.key --cacert ca.crt https://member:8443/
//! ```
//!
//! DIR is the member's projected volume: the presentation Secret (`tls.crt`,
//! `tls.key`) and the validation ConfigMap (`rules.json`, `ca-bundle.crt`,
//! `intermediates.crt`, `crls.pem`). Each connection is judged by the revision
//! the volume holds when it arrives, so a new revision reaches new handshakes
//! at once. A peer the rules refuse gets a TLS alert; an admitted one gets
//! `200` naming how it was admitted.
//!
//! An example, not the agent: `certshift agent` also refuses to serve a
//! revision whose rules reject its own certificate or that is older than the
//! one it serves, waits until both volumes agree, and acknowledges.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use certshift_verifier::{Admitted, Identity, Refusal, Verifier};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/etc/certshift".to_owned()));
    let listener = TcpListener::bind(args.next().unwrap_or_else(|| "127.0.0.1:8443".to_owned()))?;
    eprintln!("serving {} on https://{}", dir.display(), listener.local_addr()?);
    serve(listener, &dir);
    Ok(())
}

/// The revision in `dir`: its verifier, and a server configuration that
/// presents its certificate and admits peers by its rules.
pub fn load(dir: &Path) -> Result<(Arc<Verifier>, Arc<rustls::ServerConfig>), certshift_verifier::Error> {
    let read = |key: &str| std::fs::read(dir.join(key)).ok();
    let verifier = Arc::new(Verifier::from_outputs(read)?);
    let (tls_crt, tls_key) = (read("tls.crt").unwrap_or_default(), read("tls.key").unwrap_or_default());
    let identity = Identity::from_pem(&tls_crt, &tls_key)?;
    let config = Arc::new(verifier.server_config(&identity)?);
    Ok((verifier, config))
}

/// Serves every connection on its own thread until the listener fails.
pub fn serve(listener: TcpListener, dir: &Path) {
    for stream in listener.incoming().flatten() {
        match load(dir) {
            Ok(revision) => {
                std::thread::spawn(move || {
                    if let Err(err) = answer(revision, stream) {
                        eprintln!("{err}");
                    }
                });
            }
            // A volume mid-update or broken: refuse this connection, keep serving.
            Err(err) => eprintln!("cannot load {}: {err}", dir.display()),
        }
    }
}

fn answer(
    (verifier, config): (Arc<Verifier>, Arc<rustls::ServerConfig>),
    mut tcp: TcpStream,
) -> Result<(), Box<dyn Error>> {
    let mut connection = rustls::ServerConnection::new(config)?;
    while connection.is_handshaking() {
        if let Err(err) = connection.complete_io(&mut tcp) {
            // The peer was sent an alert; say why it was refused.
            let tls = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            return Err(match tls {
                Some(rustls::Error::NoCertificatesPresented) => {
                    "refused a peer: NoCertificate: it presented no certificate (members and clients must)".into()
                }
                Some(tls) => match Refusal::from_tls_error(tls) {
                    Some(refusal) => format!("refused a peer: {refusal}").into(),
                    None => err.into(),
                },
                None => err.into(),
            });
        }
    }
    let chain = connection.peer_certificates().unwrap_or_default().to_vec();
    let admitted = match chain.split_first() {
        Some((leaf, rest)) => verifier.check_client(leaf, rest, jiff::Timestamp::now())?,
        None => return Err("no client certificate".into()),
    };
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
    let mut request = [0u8; 4096];
    let _ = tls.read(&mut request)?;
    let body = match admitted {
        Admitted::Member => format!("admitted as a member by revision {}\n", verifier.revision()),
        Admitted::Client { is_admin } => {
            format!(
                "admitted as a client (admin: {is_admin}) by revision {}\n",
                verifier.revision()
            )
        }
    };
    write!(
        tls,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(())
}
