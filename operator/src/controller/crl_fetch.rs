//! CRLs fetched from the certificates' distribution points (`http://`,
//! opt-in with `spec.revocation.distributionPoints`), cached per URI and
//! fetched again after the refresh interval. Judging what was fetched is
//! the pure core's (`declaration::store`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::declaration::store::FetchState;
use crate::facts::MAX_BUNDLE_BYTES;

/// How long one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A failed fetch is tried again this soon (or at the refresh interval, if sooner).
pub use crate::declaration::CRL_RETRY;

#[derive(Debug, Default)]
pub struct CrlCache {
    entries: Mutex<BTreeMap<String, (Instant, FetchState)>>,
}

impl CrlCache {
    /// What is known of each of `uris`, fetching those not fetched within
    /// `refresh`, or within [`CRL_RETRY`] after a failure (a failed fetch
    /// keeps the last CRL and says why).
    pub async fn fetch_due(&self, uris: &[String], refresh: Duration) -> BTreeMap<String, FetchState> {
        let now = Instant::now();
        let due: Vec<String> = {
            let entries = self.entries.lock().expect("crl cache lock");
            uris.iter()
                .filter(|uri| {
                    entries.get(*uri).is_none_or(|(at, state)| {
                        let wait = if state.error.is_some() {
                            refresh.min(CRL_RETRY)
                        } else {
                            refresh
                        };
                        now.saturating_duration_since(*at) >= wait
                    })
                })
                .cloned()
                .collect()
        };
        for uri in due {
            let result = fetch(&uri).await;
            let mut entries = self.entries.lock().expect("crl cache lock");
            let entry = entries.entry(uri).or_insert_with(|| (now, FetchState::default()));
            entry.0 = Instant::now();
            match result {
                Ok(bytes) => {
                    entry.1 = FetchState {
                        last: Some(bytes),
                        error: None,
                    }
                }
                Err(err) => entry.1.error = Some(err),
            }
        }
        let entries = self.entries.lock().expect("crl cache lock");
        uris.iter()
            .filter_map(|uri| entries.get(uri).map(|(_, state)| (uri.clone(), state.clone())))
            .collect()
    }
}

/// `GET` of an `http://` URI (HTTP/1.0: the server closes when done), the
/// body of a 200 response, bounded as a trust bundle is.
pub async fn fetch(uri: &str) -> Result<Vec<u8>, String> {
    let rest = uri
        .strip_prefix("http://")
        .ok_or_else(|| format!("{uri}: only http:// distribution points are fetched"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let address = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|err| format!("connecting to {address}: {err}"))?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: certshift\r\nAccept: */*\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|err| format!("sending the request: {err}"))?;
        let mut response = Vec::new();
        let limit = (MAX_BUNDLE_BYTES + 64 * 1024) as u64;
        (&mut stream)
            .take(limit + 1)
            .read_to_end(&mut response)
            .await
            .map_err(|err| format!("reading the response: {err}"))?;
        if response.len() as u64 > limit {
            return Err(format!("the response is larger than {limit} bytes"));
        }
        Ok(response)
    };
    let response = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no response within {}s", FETCH_TIMEOUT.as_secs()))??;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the response has no header end")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("the server answered {status:?}"));
    }
    Ok(response[split + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server on loopback answering `reply`.
    async fn serve(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(reply).await;
            }
        });
        format!("http://{address}/ca.crl")
    }

    #[tokio::test]
    async fn a_crl_is_fetched_refetched_when_due_and_kept_when_a_refresh_fails() {
        let uri = serve(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nCRL").await;
        assert_eq!(fetch(&uri).await.unwrap(), b"CRL");
        let missing = serve(b"HTTP/1.0 404 Not Found\r\n\r\n").await;
        assert!(fetch(&missing).await.unwrap_err().contains("404"));
        assert!(
            fetch("https://example.invalid/ca.crl")
                .await
                .unwrap_err()
                .contains("only http://")
        );

        let cache = CrlCache::default();
        let got = cache
            .fetch_due(std::slice::from_ref(&uri), Duration::from_secs(3600))
            .await;
        assert_eq!(got[&uri].last.as_deref(), Some(&b"CRL"[..]));
        // The server goes away: not due yet, nothing fetched; due, the last CRL stays.
        let gone = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}/ca.crl", listener.local_addr().unwrap())
        };
        cache
            .entries
            .lock()
            .unwrap()
            .insert(gone.clone(), (Instant::now(), got[&uri].clone()));
        let kept = cache
            .fetch_due(std::slice::from_ref(&gone), Duration::from_secs(3600))
            .await;
        assert_eq!(kept[&gone].error, None, "not due: not fetched");
        let failed = cache.fetch_due(std::slice::from_ref(&gone), Duration::ZERO).await;
        assert_eq!(failed[&gone].last.as_deref(), Some(&b"CRL"[..]), "the last CRL is kept");
        assert!(
            failed[&gone].error.as_deref().unwrap().contains("connecting"),
            "{:?}",
            failed[&gone]
        );
    }
}
